//! Helpers shared by the kernel tests: a deterministic generator, the naive f64 convolution
//! and the epilogue cases.

use hrnet_runtime::kernels::ConvSpec;

/// Deterministic uniform(-1, 1) numbers.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Naive conv, NCHW, f64 accumulation, with bias.
pub fn ref_conv(s: &ConvSpec, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
    let (ho, wo) = (s.h_out(), s.w_out());
    let mut y = vec![0.0f64; s.cout * ho * wo];
    for oc in 0..s.cout {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = f64::from(b[oc]);
                for ic in 0..s.cin {
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h_in as isize || ix >= s.w_in as isize {
                                continue;
                            }
                            let xv = x[(ic * s.h_in + iy as usize) * s.w_in + ix as usize];
                            let wv = w[((oc * s.cin + ic) * s.k + ky) * s.k + kx];
                            acc += f64::from(xv) * f64::from(wv);
                        }
                    }
                }
                y[(oc * ho + oy) * wo + ox] = acc;
            }
        }
    }
    y
}

/// The epilogues a test runs a conv with (`u32`: upsampling factor, log2).
#[derive(Clone, Copy, Debug)]
pub enum Epi {
    Plain,
    Residual,
    Accumulate,
    UpAccumulate(u32),
    UpResidual(u32),
}

/// Every epilogue kind, with upsampling ×2, ×4 and ×8.
pub const ALL_EPIS: [Epi; 6] = [
    Epi::Plain,
    Epi::Residual,
    Epi::Accumulate,
    Epi::UpAccumulate(1),
    Epi::UpAccumulate(2),
    Epi::UpResidual(3),
];
