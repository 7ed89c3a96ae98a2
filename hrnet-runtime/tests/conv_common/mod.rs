//! Helpers shared by the convolution kernel tests (`kernels_conv`, `kernels_bf16`): a
//! deterministic generator, the naive f64 convolution, the epilogue cases and the halo check.

use hrnet_runtime::kernels::{from_nchw, to_nchw, ActShape, ConvSpec, Epilogue};

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
    let mut y = vec![0.0f64; s.cout() * ho * wo];
    for oc in 0..s.cout() {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = f64::from(b[oc]);
                for ic in 0..s.cin() {
                    for ky in 0..s.k() {
                        for kx in 0..s.k() {
                            let iy = (oy * s.stride() + ky) as isize - s.pad() as isize;
                            let ix = (ox * s.stride() + kx) as isize - s.pad() as isize;
                            if iy < 0
                                || ix < 0
                                || iy >= s.h_in() as isize
                                || ix >= s.w_in() as isize
                            {
                                continue;
                            }
                            let xv = x[(ic * s.h_in() + iy as usize) * s.w_in() + ix as usize];
                            let wv = w[((oc * s.cin() + ic) * s.k() + ky) * s.k() + kx];
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

impl Epi {
    /// The upsampling factor (log2).
    pub fn up(self) -> u32 {
        match self {
            Epi::UpAccumulate(u) | Epi::UpResidual(u) => u,
            _ => 0,
        }
    }

    /// The kernel epilogue, with `base` (blocked layout) as residual where there is one.
    pub fn epilogue(self, base: &[f32], relu: bool) -> Epilogue<'_> {
        match self {
            Epi::Plain => Epilogue::plain(relu),
            Epi::Residual => Epilogue::residual(base, relu),
            Epi::Accumulate => Epilogue::accumulate(relu),
            Epi::UpAccumulate(u) => Epilogue::upsample_accumulate(u, relu),
            Epi::UpResidual(u) => Epilogue::upsample_residual(base, u, relu),
        }
    }

    /// The output buffer before the call: `base` where the conv accumulates into it, else
    /// NaN everywhere a fresh output must overwrite (halo included).
    pub fn initial_out(self, base: &[f32]) -> Vec<f32> {
        match self {
            Epi::Accumulate | Epi::UpAccumulate(_) => base.to_vec(),
            _ => vec![f32::NAN; base.len()],
        }
    }
}

/// `out` (blocked layout) as NCHW, after asserting that its halo and padding channels are
/// zero; `what` names the case in the failure message.
pub fn nchw_checked(shape: ActShape, out: &[f32], what: &str) -> Vec<f32> {
    let mut got = vec![0.0; shape.c() * shape.h() * shape.w()];
    to_nchw(shape, out, &mut got);
    let mut clean = vec![0.0; shape.len()];
    from_nchw(shape, &got, &mut clean);
    assert!(
        out.iter()
            .zip(&clean)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: halo or padding not zero"
    );
    got
}
