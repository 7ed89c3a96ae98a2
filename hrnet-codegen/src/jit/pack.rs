//! The JIT's weight format: strict binding, BatchNorm folding (in f64, exactly as
//! hrnet-runtime's loader does) and packing into the layout the generated kernels read.
//!
//! Per convolution, at a 16-float-aligned offset: the bias padded to whole output blocks
//! (`ocb · 16` floats), then for each output block `ob`, zero-padded,
//! - direct: `[icb][tap][16 input channels][16 output channels]`;
//! - Winograd F(m×m, 3×3), m = 2 or 4 (see [`super::wino`]): `[ξ][icb][16 ic][16 oc]` of
//!   `U = G g Gᵀ` (ξ over the (m+2)² positions), computed in f64.
//!
//! One output block's weights are contiguous, so a kernel call for block `ob` streams one run
//! of memory and loads each row of 16 output channels as four f32x4 vectors.

use hrnet_runtime::kernels::{ConvSpec, BLOCK, WINOGRAD_G2, WINOGRAD_G4};
use hrnet_runtime::model::ConvParams;
use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint};

/// How the JIT runs one convolution: the plan's decisions, as the kernels read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JitConv {
    /// Shapes.
    pub spec: ConvSpec,
    /// Where its packed weights start (the plan's `packed_offset`).
    pub offset: usize,
    /// Winograd F(m×m, 3×3) with this `m` instead of direct (the plan's algorithm).
    pub winograd: Option<usize>,
}

/// Weight floats per (output block, input block): taps (or ξ) × 16 × 16.
fn per_block_pair(c: &JitConv) -> usize {
    let positions = match c.winograd {
        Some(m) => (m + 2) * (m + 2),
        None => c.spec.k() * c.spec.k(),
    };
    positions * BLOCK * BLOCK
}

/// Writes OIHW `weight` (folded) and `bias` into `out` (exactly `ConvSpec::packed_len`
/// floats, which is the same for both layouts).
fn pack_one(c: &JitConv, weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let s = &c.spec;
    let (cin, cout, taps) = (s.cin(), s.cout(), s.k() * s.k());
    let ocb = cout.div_ceil(BLOCK);
    let icb = cin.div_ceil(BLOCK);
    out.fill(0.0);
    out[..cout].copy_from_slice(bias);
    let body = &mut out[ocb * BLOCK..];
    let per_ob = icb * per_block_pair(c);
    if let Some(m) = c.winograd {
        // [ob][ξ][icb][16 ic][16 oc] of U = G g Gᵀ.
        let g: &[[f64; 3]] = if m == 2 { &WINOGRAD_G2 } else { &WINOGRAD_G4 };
        let a = g.len();
        for oc in 0..cout {
            let (ob, l) = (oc / BLOCK, oc % BLOCK);
            for ic in 0..cin {
                let k = &weight[(oc * cin + ic) * 9..][..9];
                let mut t = [[0.0f64; 3]; 6];
                for (r, tr) in t.iter_mut().take(a).enumerate() {
                    for (col, tc) in tr.iter_mut().enumerate() {
                        *tc = (0..3).map(|i| g[r][i] * f64::from(k[i * 3 + col])).sum();
                    }
                }
                for (r, tr) in t.iter().take(a).enumerate() {
                    for (col, gc) in g.iter().enumerate() {
                        let u: f64 = (0..3).map(|i| tr[i] * gc[i]).sum();
                        let xi = r * a + col;
                        let idx = ob * per_ob
                            + ((xi * icb + ic / BLOCK) * BLOCK + ic % BLOCK) * BLOCK
                            + l;
                        body[idx] = u as f32;
                    }
                }
            }
        }
        return;
    }
    for oc in 0..cout {
        let (ob, l) = (oc / BLOCK, oc % BLOCK);
        for ic in 0..cin {
            let (ib, i) = (ic / BLOCK, ic % BLOCK);
            for t in 0..taps {
                let idx = ob * per_ob + ((ib * taps + t) * BLOCK + i) * BLOCK + l;
                body[idx] = weight[(oc * cin + ic) * taps + t];
            }
        }
    }
}

/// Binds `ckpt` strictly against `convs` (their specs' shapes), folds BatchNorm and packs
/// every conv at its planned offset into one buffer of `total` floats.
pub(crate) fn pack(
    ckpt: &Checkpoint,
    convs: &[ConvParams<'_>],
    jit: &[JitConv],
    total: usize,
    opts: BindOptions,
) -> Result<Vec<f32>, BindError> {
    let mut packed = vec![0f32; total];
    hrnet_runtime::model::fold_each(ckpt, convs, opts, |i, w, b| {
        let j = &jit[i];
        pack_one(
            j,
            w,
            b,
            &mut packed[j.offset..j.offset + j.spec.packed_len()],
        );
    })?;
    Ok(packed)
}
