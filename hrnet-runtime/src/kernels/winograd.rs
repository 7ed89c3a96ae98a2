//! Winograd F(2×2,3×3) and F(4×4,3×3) for 3×3 stride-1 padding-1 convolutions.
//!
//! The output is cut into `m × m` tiles (`m` = 2 or 4; edge tiles are clipped), each reading an
//! `α × α` input patch (`α = m + 2`) straight from the haloed input. A task takes a group of
//! up to [`TILE_GROUP`] tiles and, in per-thread scratch memory,
//! 1. transforms the patches, `V = Bᵀ d B`, into `[α²][icb][tiles][16]`;
//! 2. for each output channel group and each of the α² positions ξ, multiplies
//!    `M_ξ[tiles][oc] = Σ_ic V_ξ[tiles][ic] · U_ξ[ic][oc]` with the direct kernel's microkernel
//!    (tiles play the role of pixels), into `[α²][4][tiles][16]`;
//! 3. transforms back, `Y = Aᵀ M A`, and stores through the epilogue.
//!
//! Small maps with many channels are also split over output channel groups (each such task
//! redoes the cheap input transform) so both cores get work.
//!
//! Packed weights (after the bias): `U = G g Gᵀ` computed in f64, laid out
//! `[ξ][group][icb][16 ic][nb][16 oc]` (one 1×1-conv-like matrix per ξ).
//!
//! The `*Otf` algorithms keep the direct kernel's 3×3 packing (9 instead of α² floats per
//! weight pair, so 1.8× / 4× less memory traffic) and transform the weights in f32 during the
//! call, one K chunk at a time into per-thread scratch; the GEMM then accumulates over chunks.
//! That pays on small maps with many channels, where each transformed weight serves few tiles
//! and the weights must come from DRAM (in a whole network they are not cache-resident).
//!
//! Matrices: F(2×2) with points 0, ±1, ∞ (Lavin & Gray); F(4×4) with 0, 1, −1, 1/2, −2, ∞,
//! about half the rounding error of Lavin & Gray's 0, ±1, ±2, ∞ (Barabasz et al., "Error
//! analysis and improving the accuracy of Winograd convolution for deep neural networks",
//! 2020). ±1/2 alone would not help: it mirrors ±2 (x → 1/x reverses the transforms).

use super::conv::{group, microkernel, n_groups, pack_grouped, strips, Algo, ConvSpec, Out, Strip};
use super::layout::{ActShape, BLOCK};
use super::simd::{Vf, P};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::{Ctx, Isa};

/// Tiles per task.
pub const TILE_GROUP: usize = 12;

/// Scratch floats one thread needs for `spec` with F(`m`×`m`): transformed inputs
/// `[α²][icb][TILE_GROUP][16]`, GEMM results `[α²][4][TILE_GROUP][16]`, and with weights
/// transformed on the fly, one K chunk of them, `[kc·16][α²][4][16]`.
pub(crate) const fn scratch_per_thread(spec: &ConvSpec, m: usize, otf: bool) -> usize {
    let aa = (m + 2) * (m + 2);
    let tiles = aa * TILE_GROUP * BLOCK * (spec.cin.div_ceil(BLOCK) + 4);
    if otf {
        tiles + aa * otf_chunk(spec, m) * BLOCK * 4 * BLOCK
    } else {
        tiles
    }
}

/// Input blocks per K chunk when weights are transformed on the fly: about 256 KB of
/// transformed weights per chunk (for a group of 4 output blocks).
pub(crate) const fn otf_chunk(spec: &ConvSpec, m: usize) -> usize {
    let aa = (m + 2) * (m + 2);
    let kc = 65536 / (aa * BLOCK * 4 * BLOCK);
    let icb = spec.cin.div_ceil(BLOCK);
    if kc < 1 {
        1
    } else if kc > icb {
        icb
    } else {
        kc
    }
}

/// `G` of F(2×2, 3×3), points 0, ±1, ∞ (4×3). Every engine's weight transform uses this one.
pub const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
/// `G` of F(4×4, 3×3), points 0, 1, −1, 1/2, −2, ∞ (6×3), with the scaling that keeps `Bᵀ`
/// cheap folded in. Every engine's weight transform uses this one.
pub const G4: [[f64; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [-2.0 / 15.0, -1.0 / 15.0, -1.0 / 30.0],
    [-1.0 / 30.0, 1.0 / 15.0, -2.0 / 15.0],
    [0.0, 0.0, 1.0],
];

/// Packs OIHW 3×3 weights into `[ξ][group][icb][16][nb][16]` (see the module doc).
pub(crate) fn pack(cin: usize, cout: usize, m: usize, weight: &[f32], out: &mut [f32]) {
    let a = m + 2;
    let g: &[[f64; 3]] = if m == 2 { &G2 } else { &G4 };
    // U[oc][ic][ξ] in f64.
    let mut u = vec![0.0f64; cout * cin * a * a];
    for oc in 0..cout {
        for ic in 0..cin {
            let k = &weight[(oc * cin + ic) * 9..][..9];
            // t = G k (a×3), then U = t Gᵀ (a×a).
            let mut t = vec![[0.0f64; 3]; a];
            for (r, tr) in t.iter_mut().enumerate() {
                for (c, tc) in tr.iter_mut().enumerate() {
                    *tc = (0..3).map(|i| g[r][i] * f64::from(k[i * 3 + c])).sum();
                }
            }
            let dst = &mut u[(oc * cin + ic) * a * a..][..a * a];
            for r in 0..a {
                for c in 0..a {
                    dst[r * a + c] = (0..3).map(|i| t[r][i] * g[c][i]).sum();
                }
            }
        }
    }
    let per_xi = cin.div_ceil(BLOCK) * BLOCK * cout.div_ceil(BLOCK) * BLOCK;
    for (xi, chunk) in out.chunks_exact_mut(per_xi).enumerate() {
        pack_grouped(cin, cout, 1, chunk, |oc, ic, _| {
            u[(oc * cin + ic) * a * a + xi] as f32
        });
    }
}

/// 1-D F(4×4) input transform `Bᵀ d` (rows of `Bᵀ`: `[1, −3/2, −2, 3/2, 1, 0]`,
/// `[0, −2, 1, 5, 2, 0]`, `[0, 2, −5, 1, 2, 0]`, `[0, −2, −1, 2, 1, 0]`, `[0, −1, 2, 1, −2, 0]`,
/// `[0, 1, −3/2, −2, 3/2, 1]`).
#[inline(always)]
unsafe fn bt4<V: Vf>(d: [V; 6]) -> [V; 6] {
    // SAFETY: register arithmetic only (the ISA is available per the `Vf` contract).
    unsafe {
        let c2 = V::splat(2.0);
        let m2 = V::splat(-2.0);
        let h3 = V::splat(1.5);
        let a = V::sub(d[4], d[2]);
        let b = V::sub(d[3], d[1]);
        [
            V::fma(h3, b, V::fma(m2, d[2], V::add(d[0], d[4]))),
            V::fma(c2, V::sub(d[4], d[1]), V::fma(V::splat(5.0), d[3], d[2])),
            V::fma(c2, V::add(d[1], d[4]), V::fma(V::splat(-5.0), d[2], d[3])),
            V::fma(c2, b, a),
            V::fma(m2, a, b),
            V::fma(h3, a, V::fma(m2, d[3], V::add(d[1], d[5]))),
        ]
    }
}

/// 1-D F(4×4) output transform `Aᵀ m` (rows of `Aᵀ`: `[1, 1, 1, 8, 1, 0]`,
/// `[0, 1, −1, 4, −2, 0]`, `[0, 1, 1, 2, 4, 0]`, `[0, 1, −1, 1, −8, 1]`).
#[inline(always)]
unsafe fn at4<V: Vf>(m: [V; 6]) -> [V; 4] {
    // SAFETY: register arithmetic only.
    unsafe {
        let s12 = V::add(m[1], m[2]);
        let d12 = V::sub(m[1], m[2]);
        [
            V::fma(V::splat(8.0), m[3], V::add(V::add(m[0], s12), m[4])),
            V::fma(V::splat(4.0), m[3], V::fma(V::splat(-2.0), m[4], d12)),
            V::fma(V::splat(2.0), m[3], V::fma(V::splat(4.0), m[4], s12)),
            V::fma(V::splat(-8.0), m[4], V::add(V::add(d12, m[3]), m[5])),
        ]
    }
}

/// 1-D F(2×2) input transform.
#[inline(always)]
unsafe fn bt2<V: Vf>(d: [V; 4]) -> [V; 4] {
    // SAFETY: register arithmetic only.
    unsafe {
        [
            V::sub(d[0], d[2]),
            V::add(d[1], d[2]),
            V::sub(d[2], d[1]),
            V::sub(d[1], d[3]),
        ]
    }
}

/// 1-D F(2×2) output transform.
#[inline(always)]
unsafe fn at2<V: Vf>(m: [V; 4]) -> [V; 2] {
    // SAFETY: register arithmetic only.
    unsafe {
        [
            V::add(V::add(m[0], m[1]), m[2]),
            V::sub(V::sub(m[1], m[2]), m[3]),
        ]
    }
}

/// `Bᵀ d B` in place on a row-major `α × α` patch (first α² entries of `d`).
#[inline(always)]
unsafe fn input_tx<V: Vf, const M: usize>(d: &mut [V; 36]) {
    // SAFETY: register arithmetic only.
    unsafe {
        if M == 4 {
            for c in 0..6 {
                let t = bt4([d[c], d[6 + c], d[12 + c], d[18 + c], d[24 + c], d[30 + c]]);
                for (r, v) in t.into_iter().enumerate() {
                    d[r * 6 + c] = v;
                }
            }
            for r in 0..6 {
                let row = &mut d[r * 6..r * 6 + 6];
                let t = bt4([row[0], row[1], row[2], row[3], row[4], row[5]]);
                row.copy_from_slice(&t);
            }
        } else {
            for c in 0..4 {
                let t = bt2([d[c], d[4 + c], d[8 + c], d[12 + c]]);
                for (r, v) in t.into_iter().enumerate() {
                    d[r * 4 + c] = v;
                }
            }
            for r in 0..4 {
                let row = &mut d[r * 4..r * 4 + 4];
                let t = bt2([row[0], row[1], row[2], row[3]]);
                row.copy_from_slice(&t);
            }
        }
    }
}

/// `Aᵀ m A`: `M × M` outputs (row-major, stride `M`) from an `α × α` patch.
#[inline(always)]
unsafe fn output_tx<V: Vf, const M: usize>(m: &[V; 36]) -> [V; 16] {
    // SAFETY: register arithmetic only.
    unsafe {
        let mut y = [V::zero(); 16];
        if M == 4 {
            let mut t = [V::zero(); 24]; // 4 × 6
            for c in 0..6 {
                let r = at4([m[c], m[6 + c], m[12 + c], m[18 + c], m[24 + c], m[30 + c]]);
                for (i, v) in r.into_iter().enumerate() {
                    t[i * 6 + c] = v;
                }
            }
            for i in 0..4 {
                let r = at4([
                    t[i * 6],
                    t[i * 6 + 1],
                    t[i * 6 + 2],
                    t[i * 6 + 3],
                    t[i * 6 + 4],
                    t[i * 6 + 5],
                ]);
                y[i * 4..i * 4 + 4].copy_from_slice(&r);
            }
        } else {
            let mut t = [V::zero(); 8]; // 2 × 4
            for c in 0..4 {
                let r = at2([m[c], m[4 + c], m[8 + c], m[12 + c]]);
                t[c] = r[0];
                t[4 + c] = r[1];
            }
            for i in 0..2 {
                let r = at2([t[i * 4], t[i * 4 + 1], t[i * 4 + 2], t[i * 4 + 3]]);
                y[i * 2] = r[0];
                y[i * 2 + 1] = r[1];
            }
        }
        y
    }
}

/// Everything a Winograd task needs, as raw pointers.
struct WinoJob {
    inp: *const f32,
    ins: ActShape,
    u: *const f32,
    out: Out,
    tiles_x: usize,
    n_tiles: usize,
    /// Tasks per tile group (1, or the number of channel groups).
    split: usize,
    n_icb: usize,
    last_ic: usize,
    ocb: usize,
    scratch: *mut f32,
    scratch_per_thread: usize,
    /// Weights are plain 3×3 (direct packing) and transformed per call, `kc` input blocks at a
    /// time.
    otf: bool,
    kc: usize,
}

// SAFETY: tasks read `inp`/`u`, write disjoint tiles × channel groups of `out`, and use the
// scratch slice of the thread running them (the pool never runs two tasks at once on a thread).
unsafe impl Sync for WinoJob {}

/// The GEMM of one ξ over the tiles of a task, for one channel group.
struct Gemm {
    /// Transformed input of this ξ and K chunk: `[icb][TILE_GROUP][16]`.
    v: *const f32,
    /// Weights of this ξ and group: `[ic][nbg][16]`, rows `w_row` floats apart.
    w: *const f32,
    w_row: usize,
    /// Destination of this ξ: `[4][TILE_GROUP][16]`.
    m: *mut f32,
    /// Input blocks of this K chunk, real channels in its last block.
    n_icb: usize,
    last_ic: usize,
    /// Add to `m` instead of overwriting it (K chunks after the first).
    accumulate: bool,
}

impl Strip for Gemm {
    #[inline(always)]
    unsafe fn strip<V: Vf, const NB: usize, const N: usize>(&self, x0: usize, sub: usize) {
        // SAFETY: `x0 + N` ≤ the task's tile count ≤ TILE_GROUP and `sub + NB ≤ nbg ≤ 4`, so
        // all reads and writes stay inside this thread's scratch and the packed weights.
        unsafe {
            let acc = microkernel::<V, NB, N>(
                self.v.add(x0 * BLOCK),
                BLOCK,
                &[0],
                self.n_icb,
                TILE_GROUP * BLOCK,
                self.last_ic,
                self.w.add(sub * BLOCK),
                self.w_row,
            );
            for (p, ap) in acc.iter().enumerate() {
                for (b, &v) in ap.iter().enumerate() {
                    let m = self.m.add(((sub + b) * TILE_GROUP + x0 + p) * BLOCK);
                    let v = if self.accumulate {
                        V::add(V::load(m), v)
                    } else {
                        v
                    };
                    V::store(m, v);
                }
            }
        }
    }
}

/// Input transform of the tiles `t0..t0 + nt` into `vs`.
#[inline(always)]
unsafe fn wino_input<V: Vf, const M: usize>(j: &WinoJob, t0: usize, nt: usize, vs: *mut f32) {
    let a = M + 2;
    let (hp, wp) = (j.ins.h + 2, j.ins.w + 2);
    let rs = j.ins.row_stride();
    // SAFETY: patch reads are bounds-checked against the haloed input (clipped edge tiles read
    // zeros); writes go to `[α²][icb][TILE_GROUP][16]` inside this thread's scratch.
    unsafe {
        for i in 0..nt {
            let tile = t0 + i;
            let y0 = (tile / j.tiles_x) * M;
            let x0 = (tile % j.tiles_x) * M;
            let full = y0 + a <= hp && x0 + a <= wp;
            for ib in 0..j.n_icb {
                let base = j.inp.add(ib * j.ins.block_stride() + y0 * rs + x0 * BLOCK);
                let mut d = [V::zero(); 36];
                for r in 0..a {
                    for c in 0..a {
                        if full || (y0 + r < hp && x0 + c < wp) {
                            d[r * a + c] = V::load(base.add(r * rs + c * BLOCK));
                        }
                    }
                }
                input_tx::<V, M>(&mut d);
                for (xi, &v) in d.iter().take(a * a).enumerate() {
                    V::store(vs.add(((xi * j.n_icb + ib) * TILE_GROUP + i) * BLOCK), v);
                }
            }
        }
    }
}

/// 1-D `G g` for F(4×4) (6 outputs from 3 taps; rows of `G` in [`G4`]).
#[inline(always)]
unsafe fn g4<V: Vf>(g: [V; 3]) -> [V; 6] {
    // SAFETY: register arithmetic only.
    unsafe {
        let s02 = V::add(g[0], g[2]);
        let b = V::mul(V::splat(1.0 / 15.0), g[1]);
        let nb = V::mul(V::splat(-1.0 / 15.0), g[1]);
        let (k2, k1) = (V::splat(-2.0 / 15.0), V::splat(-1.0 / 30.0));
        [
            g[0],
            V::mul(V::splat(1.0 / 6.0), V::add(s02, g[1])),
            V::mul(V::splat(-1.0 / 6.0), V::sub(s02, g[1])),
            V::fma(k2, g[0], V::fma(k1, g[2], nb)),
            V::fma(k1, g[0], V::fma(k2, g[2], b)),
            g[2],
        ]
    }
}

/// 1-D `G g` for F(2×2) (4 outputs from 3 taps).
#[inline(always)]
unsafe fn g2<V: Vf>(g: [V; 3]) -> [V; 4] {
    // SAFETY: register arithmetic only.
    unsafe {
        let h = V::splat(0.5);
        let s02 = V::add(g[0], g[2]);
        [
            g[0],
            V::mul(h, V::add(s02, g[1])),
            V::mul(h, V::sub(s02, g[1])),
            g[2],
        ]
    }
}

/// `G g Gᵀ` of a 3×3 kernel (taps row-major): α² values, row-major.
#[inline(always)]
unsafe fn weight_tx<V: Vf, const M: usize>(g: &[V; 9]) -> [V; 36] {
    // SAFETY: register arithmetic only.
    unsafe {
        let mut u = [V::zero(); 36];
        if M == 4 {
            let mut t = [V::zero(); 18]; // 6 × 3
            for c in 0..3 {
                for (r, v) in g4([g[c], g[3 + c], g[6 + c]]).into_iter().enumerate() {
                    t[r * 3 + c] = v;
                }
            }
            for r in 0..6 {
                let row = g4([t[r * 3], t[r * 3 + 1], t[r * 3 + 2]]);
                u[r * 6..r * 6 + 6].copy_from_slice(&row);
            }
        } else {
            let mut t = [V::zero(); 12]; // 4 × 3
            for c in 0..3 {
                for (r, v) in g2([g[c], g[3 + c], g[6 + c]]).into_iter().enumerate() {
                    t[r * 3 + c] = v;
                }
            }
            for r in 0..4 {
                let row = g2([t[r * 3], t[r * 3 + 1], t[r * 3 + 2]]);
                u[r * 4..r * 4 + 4].copy_from_slice(&row);
            }
        }
        u
    }
}

/// The α² GEMMs of channel group `g` for the tiles `t0..t0 + nt` into `ms`, with weights
/// either pre-transformed (`j.otf == false`) or transformed here, `j.kc` input blocks at a time,
/// into `us`.
#[inline(always)]
unsafe fn wino_gemm<V: Vf, const M: usize, const NB: usize, const NP: usize>(
    j: &WinoJob,
    g: usize,
    nt: usize,
    vs: *const f32,
    ms: *mut f32,
    us: *mut f32,
) {
    let aa = (M + 2) * (M + 2);
    let (sb, nbg) = group(j.ocb, g);
    let kc = if j.otf { j.kc } else { j.n_icb };
    // SAFETY: all offsets stay inside the packed weights (`[ξ][group][icb][16][nb][16]`, or the
    // direct `[group][icb][9][16][nb][16]` when on the fly) and this thread's scratch.
    unsafe {
        let mut c0 = 0;
        while c0 < j.n_icb {
            let kcn = kc.min(j.n_icb - c0);
            // (weights, floats between ξ, floats between input channels)
            let (w, per_xi, w_row) = if j.otf {
                // Transform the chunk's weights into `us`: `[kcn·16][ξ][nbg][16]`, so that
                // the α² results of one 3×3 kernel are stored contiguously (ξ-major, they
                // would land on α² different pages).
                let wg = j.u.add(j.n_icb * 9 * BLOCK * BLOCK * sb);
                for ib in 0..kcn {
                    for i in 0..BLOCK {
                        let dst = us.add((ib * BLOCK + i) * aa * nbg * BLOCK);
                        for b in 0..nbg {
                            let mut k = [V::zero(); 9];
                            for (tap, kv) in k.iter_mut().enumerate() {
                                let row = ((c0 + ib) * 9 + tap) * BLOCK + i;
                                *kv = V::load(wg.add((row * nbg + b) * BLOCK));
                            }
                            let u = weight_tx::<V, M>(&k);
                            for (xi, &v) in u.iter().take(aa).enumerate() {
                                V::store(dst.add((xi * nbg + b) * BLOCK), v);
                            }
                        }
                    }
                }
                (us as *const f32, nbg * BLOCK, aa * nbg * BLOCK)
            } else {
                let per_xi = j.n_icb * BLOCK * j.ocb * BLOCK;
                (j.u.add(j.n_icb * BLOCK * BLOCK * sb), per_xi, nbg * BLOCK)
            };
            for xi in 0..aa {
                let gm = Gemm {
                    v: vs.add((xi * j.n_icb + c0) * TILE_GROUP * BLOCK),
                    w: w.add(xi * per_xi),
                    w_row,
                    m: ms.add(xi * 4 * TILE_GROUP * BLOCK),
                    n_icb: kcn,
                    last_ic: if c0 + kcn == j.n_icb {
                        j.last_ic
                    } else {
                        BLOCK
                    },
                    accumulate: c0 > 0,
                };
                let mut sub = 0;
                while sub < nbg {
                    strips::<_, V, NB, NP>(&gm, nt, sub);
                    sub += NB;
                }
            }
            c0 += kcn;
        }
    }
}

/// Output transform and epilogue of channel group `g` for the tiles `t0..t0 + nt`.
#[inline(always)]
unsafe fn wino_output<V: Vf, const M: usize>(
    j: &WinoJob,
    g: usize,
    t0: usize,
    nt: usize,
    ms: *const f32,
) {
    let a = M + 2;
    let (sb, nbg) = group(j.ocb, g);
    let (h, w) = (j.ins.h, j.ins.w);
    // A local copy, so LLVM can keep its fields in registers across the stores.
    let out = j.out;
    // SAFETY: reads stay in this thread's scratch; output pixels are clipped to the map and
    // belong to this task.
    unsafe {
        for i in 0..nt {
            let tile = t0 + i;
            let oy = (tile / j.tiles_x) * M;
            let ox = (tile % j.tiles_x) * M;
            for b in 0..nbg {
                let mut mv = [V::zero(); 36];
                for (xi, v) in mv.iter_mut().take(a * a).enumerate() {
                    *v = V::load(ms.add(((xi * 4 + b) * TILE_GROUP + i) * BLOCK));
                }
                let y = output_tx::<V, M>(&mv);
                let (rows, cols) = (M.min(h - oy), M.min(w - ox));
                if out.up == 0 {
                    // Same arithmetic as `Out::put`, with addresses and flags hoisted.
                    let bias = V::load(out.bias.add((sb + b) * BLOCK));
                    let base = out.shape.pixel(sb + b, oy, ox);
                    let rs = out.shape.row_stride();
                    for r in 0..rows {
                        for c in 0..cols {
                            let o = base + r * rs + c * BLOCK;
                            let mut v = V::add(y[r * M + c], bias);
                            if out.add {
                                v = V::add(V::load(out.res.add(o)), v);
                            }
                            if out.relu {
                                v = V::relu(v);
                            }
                            V::store(out.ptr.add(o), v);
                        }
                    }
                } else {
                    for r in 0..rows {
                        for c in 0..cols {
                            out.put(sb + b, oy + r, ox + c, y[r * M + c]);
                        }
                    }
                }
            }
        }
    }
}

/// GEMMs and output transform of channel group `g` for the tiles `t0..t0 + nt`.
#[inline(always)]
unsafe fn wino_group<V: Vf, const M: usize, const NB: usize, const NP: usize>(
    j: &WinoJob,
    g: usize,
    t0: usize,
    nt: usize,
    scratch: (*mut f32, *mut f32, *mut f32),
) {
    let (vs, ms, us) = scratch;
    // SAFETY: forwarded contracts (see `wino_gemm` and `wino_output`).
    unsafe {
        wino_gemm::<V, M, NB, NP>(j, g, nt, vs, ms, us);
        wino_output::<V, M>(j, g, t0, nt, ms);
    }
}

/// Tile range and channel groups of task `t`.
fn task_range(j: &WinoJob, t: usize) -> (usize, usize, usize, usize) {
    let tg = t / j.split;
    let t0 = tg * TILE_GROUP;
    let nt = TILE_GROUP.min(j.n_tiles - t0);
    let (g0, g1) = if j.split == 1 {
        (0, n_groups(j.ocb))
    } else {
        (t % j.split, t % j.split + 1)
    };
    (t0, nt, g0, g1)
}

/// Scratch pointers `(vs, ms, us)` of `thread` (see [`scratch_per_thread`]).
///
/// # Safety
/// `thread` < pool size and the scratch holds `scratch_per_thread` floats per thread.
#[inline(always)]
unsafe fn scratch_of<const M: usize>(j: &WinoJob, thread: usize) -> (*mut f32, *mut f32, *mut f32) {
    let aa = (M + 2) * (M + 2);
    // SAFETY: caller's contract; `ms` follows `vs` and `us` follows `ms` inside the slice.
    unsafe {
        let vs = j.scratch.add(thread * j.scratch_per_thread);
        let ms = vs.add(aa * j.n_icb * TILE_GROUP * BLOCK);
        (vs, ms, ms.add(aa * 4 * TILE_GROUP * BLOCK))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn wino_task_avx512<const M: usize>(j: &WinoJob, t: usize, thread: usize) {
    let (t0, nt, g0, g1) = task_range(j, t);
    // SAFETY: `thread` < pool size and the scratch size was checked by `conv`; the rest is the
    // callees' contract, established by `run`.
    unsafe {
        let sc = scratch_of::<M>(j, thread);
        wino_input::<Z, M>(j, t0, nt, sc.0);
        for g in g0..g1 {
            match group(j.ocb, g).1 {
                1 => wino_group::<Z, M, 1, 16>(j, g, t0, nt, sc),
                2 => wino_group::<Z, M, 2, 12>(j, g, t0, nt, sc),
                3 => wino_group::<Z, M, 3, 8>(j, g, t0, nt, sc),
                _ => wino_group::<Z, M, 4, 6>(j, g, t0, nt, sc),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wino_task_avx2<const M: usize>(j: &WinoJob, t: usize, thread: usize) {
    let (t0, nt, g0, g1) = task_range(j, t);
    // SAFETY: as in `wino_task_avx512`.
    unsafe {
        let sc = scratch_of::<M>(j, thread);
        wino_input::<Y, M>(j, t0, nt, sc.0);
        for g in g0..g1 {
            wino_group::<Y, M, 1, 6>(j, g, t0, nt, sc);
        }
    }
}

fn wino_task_portable<const M: usize>(j: &WinoJob, t: usize, thread: usize) {
    let (t0, nt, g0, g1) = task_range(j, t);
    // SAFETY: as in `wino_task_avx512`.
    unsafe {
        let sc = scratch_of::<M>(j, thread);
        wino_input::<P, M>(j, t0, nt, sc.0);
        for g in g0..g1 {
            // Same register blocking as AVX-512 (so this generic code is tested anywhere).
            match group(j.ocb, g).1 {
                1 => wino_group::<P, M, 1, 16>(j, g, t0, nt, sc),
                2 => wino_group::<P, M, 2, 12>(j, g, t0, nt, sc),
                3 => wino_group::<P, M, 3, 8>(j, g, t0, nt, sc),
                _ => wino_group::<P, M, 4, 6>(j, g, t0, nt, sc),
            }
        }
    }
}

/// Runs a Winograd conv (buffers already checked by [`super::conv`]).
pub(crate) fn run(
    ctx: &Ctx,
    spec: &ConvSpec,
    inp: *const f32,
    u: *const f32,
    out: Out,
    scratch: *mut f32,
) {
    let (m, otf) = match spec.algo {
        Algo::Winograd2 => (2, false),
        Algo::Winograd2Otf => (2, true),
        Algo::Winograd4Otf => (4, true),
        _ => (4, false),
    };
    let ins = spec.in_shape();
    let tiles_x = ins.w.div_ceil(m);
    let n_tiles = ins.h.div_ceil(m) * tiles_x;
    let n_icb = ins.blocks();
    let ocb = spec.out_shape().blocks();
    let n_tg = n_tiles.div_ceil(TILE_GROUP);
    let threads = ctx.threads();
    let split = if threads > 1 && n_tg < 4 * threads {
        n_groups(ocb)
    } else {
        1
    };
    let j = WinoJob {
        inp,
        ins,
        u,
        out,
        tiles_x,
        n_tiles,
        split,
        n_icb,
        last_ic: spec.cin - (n_icb - 1) * BLOCK,
        ocb,
        scratch,
        scratch_per_thread: scratch_per_thread(spec, m, otf),
        otf,
        kc: otf_chunk(spec, m),
    };
    let isa = ctx.isa();
    ctx.pool().run(n_tg * split, &|t, thread| match (isa, m) {
        // SAFETY: `ctx` only holds available instruction sets; `conv` checked the buffers.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 2) => unsafe { wino_task_avx512::<2>(&j, t, thread) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, _) => unsafe { wino_task_avx512::<4>(&j, t, thread) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 2) => unsafe { wino_task_avx2::<2>(&j, t, thread) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, _) => unsafe { wino_task_avx2::<4>(&j, t, thread) },
        (_, 2) => wino_task_portable::<2>(&j, t, thread),
        _ => wino_task_portable::<4>(&j, t, thread),
    });
}
