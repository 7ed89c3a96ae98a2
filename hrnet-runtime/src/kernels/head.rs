//! The heads of the classification and OCR networks, in the blocked layout.
//!
//! - Classification (HRNetV2p): [`global_avg_pool`] (blocked tensor → `[C]`) and [`linear`]
//!   (the `classifier`, `y = W·x + b` with `W` `[out][in]` row-major).
//! - OCR (HRNet-OCR's `SpatialGather_Module` and `ObjectAttentionBlock2D`):
//!   [`softmax_spatial_gather`] turns the auxiliary logits (`K` channels) into `K` object-region
//!   features, `context[k][c] = Σ_p softmax_p(aux[k])[p] · feature[c][p]`, written as a blocked
//!   `C × K × 1` tensor, so that `f_object` and `f_down` (1×1 convs) run on it with the ordinary
//!   convolution; [`object_attention`] lets every pixel attend to the `K` regions:
//!   `sim = softmax_k(KEY^-½ · query[p] · key[k])`, `context[p] = Σ_k sim[k] · value[k]`, written
//!   back as a blocked `KEY × H × W` tensor for `f_up`. The concatenation `[context, features]`
//!   that follows is a [`super::Concat`].
//!
//! Softmaxes subtract the maximum first and multiply by the reciprocal of the sum (as PyTorch's
//! CPU softmax); `exp` is a polynomial ([`exp_f32`], within 2 ulp) whose lanes vectorize. Every
//! sum runs in a fixed order that does not depend on how the work is split, so results are
//! identical at any thread count. `global_avg_pool`, `linear` and the softmaxes use no fused
//! multiply-add and are identical on every instruction set too; the two matrix products use FMA
//! (AVX-512 and AVX2 agree, the portable path rounds twice).
//!
//! Kernels allocate nothing: the OCR kernels take a `scratch` slice of at least
//! [`spatial_gather_scratch_len`] / [`object_attention_scratch_len`] floats.

use super::layout::{zero_halo, ActShape, BLOCK};
use super::simd::{Vf, P};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::{Ctx, Isa};

/// `e^x` in f32 for `x ≤ 88`: Cody–Waite range reduction and Cephes' `expf` polynomial; 0 below
/// `-87.3` (no subnormal results). Within 2 ulp of the exact value; plain multiplications and
/// additions only, so loops over it vectorize and give the same bits on every instruction set.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let xc = x.clamp(-87.33, 88.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let v = y * scale;
    if x < -87.33 {
        0.0
    } else {
        v
    }
}

/// Raw pointer shared by the tasks of one call.
#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: every kernel below hands each task a disjoint part of the buffer to write.
unsafe impl Sync for Ptr {}
// SAFETY: as above.
unsafe impl Send for Ptr {}

/// The sums over every pixel of channel block `cb` of `x`, in row-major pixel order (what
/// both pools divide by `h · w`).
#[inline(always)]
fn block_sums(shape: ActShape, x: &[f32], cb: usize) -> [f32; BLOCK] {
    let mut acc = [0.0f32; BLOCK];
    for y in 0..shape.h {
        let row = &x[shape.pixel(cb, y, 0)..][..shape.w * BLOCK];
        for px in row.chunks_exact(BLOCK) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += v;
            }
        }
    }
    acc
}

/// Global average pooling: `out[c]` = mean of channel `c` of `x` over its `h × w` pixels
/// (summed in row-major pixel order in f32, then divided by `h · w`). Allocates nothing.
///
/// # Panics
/// If `x.len() != shape.len()` or `out.len() != shape.c`, or the tensor has no pixel.
pub fn global_avg_pool(ctx: &Ctx, shape: ActShape, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), shape.len(), "global_avg_pool: input length");
    assert_eq!(out.len(), shape.c, "global_avg_pool: output length");
    assert!(shape.h > 0 && shape.w > 0, "global_avg_pool: no pixel");
    let n = (shape.h * shape.w) as f32;
    let o = Ptr(out.as_mut_ptr());
    let o = &o;
    ctx.pool().run(shape.blocks(), &|cb, _| {
        let acc = block_sums(shape, x, cb);
        let lanes = BLOCK.min(shape.c - cb * BLOCK);
        for (l, a) in acc[..lanes].iter().enumerate() {
            // SAFETY: channel `cb · 16 + l < c` is inside `out`; task `cb` alone writes it.
            unsafe { *o.0.add(cb * BLOCK + l) = a / n };
        }
    });
}

/// [`global_avg_pool`] into a blocked `C × 1 × 1` tensor (`ActShape::new(c, 1, 1)`, halo and
/// padding channels zero), so that the classifier can run as a 1×1 convolution on it. The
/// means are the same bits as [`global_avg_pool`]'s. Allocates nothing.
///
/// # Panics
/// If `x.len() != shape.len()`, `out.len() != ActShape::new(shape.c, 1, 1).len()`, or the
/// tensor has no pixel.
pub fn global_avg_pool_blocked(ctx: &Ctx, shape: ActShape, x: &[f32], out: &mut [f32]) {
    let os = ActShape::new(shape.c, 1, 1);
    assert_eq!(
        x.len(),
        shape.len(),
        "global_avg_pool_blocked: input length"
    );
    assert_eq!(
        out.len(),
        os.len(),
        "global_avg_pool_blocked: output length"
    );
    assert!(
        shape.h > 0 && shape.w > 0,
        "global_avg_pool_blocked: no pixel"
    );
    zero_halo(os, out);
    let n = (shape.h * shape.w) as f32;
    let o = Ptr(out.as_mut_ptr());
    let o = &o;
    ctx.pool().run(shape.blocks(), &|cb, _| {
        let acc = block_sums(shape, x, cb);
        let lanes = BLOCK.min(shape.c - cb * BLOCK);
        let at = os.pixel(cb, 0, 0);
        for (l, a) in acc.iter().enumerate() {
            let v = if l < lanes { a / n } else { 0.0 };
            // SAFETY: `at + l` is block `cb`'s one pixel, inside `out` (checked length);
            // task `cb` alone writes it.
            unsafe { *o.0.add(at + l) = v };
        }
    });
}

/// Outputs per [`linear`] task.
const LINEAR_ROWS: usize = 16;

/// `Σ a[i]·b[i]` over 16 interleaved partial sums, then a fixed pairwise reduction.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; BLOCK];
    let (ac, bc) = (a.chunks_exact(BLOCK), b.chunks_exact(BLOCK));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..BLOCK {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[l] += x * y;
    }
    let mut w = BLOCK;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

#[inline(always)]
fn linear_rows(x: &[f32], weight: &[f32], bias: &[f32], out: Ptr, t: usize) {
    let n_in = x.len();
    let end = ((t + 1) * LINEAR_ROWS).min(bias.len());
    for o in t * LINEAR_ROWS..end {
        let v = dot(&weight[o * n_in..][..n_in], x) + bias[o];
        // SAFETY: `o < bias.len() == out.len()`; task `t` alone writes rows of its range.
        unsafe { *out.0.add(o) = v };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn linear_rows_avx512(x: &[f32], weight: &[f32], bias: &[f32], out: Ptr, t: usize) {
    linear_rows(x, weight, bias, out, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn linear_rows_avx2(x: &[f32], weight: &[f32], bias: &[f32], out: Ptr, t: usize) {
    linear_rows(x, weight, bias, out, t)
}

/// The classifier: `out[o] = Σ_i weight[o][i] · x[i] + bias[o]` (`weight` row-major
/// `[out][in]`, as PyTorch's `nn.Linear`). Memory-bound; split over the pool by rows.
///
/// # Panics
/// If `weight.len() != out.len() · x.len()` or `bias.len() != out.len()`.
pub fn linear(ctx: &Ctx, x: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    assert_eq!(weight.len(), out.len() * x.len(), "linear: weight length");
    assert_eq!(bias.len(), out.len(), "linear: bias length");
    let o = Ptr(out.as_mut_ptr());
    let isa = ctx.isa();
    ctx.pool()
        .run(out.len().div_ceil(LINEAR_ROWS), &|t, _| match isa {
            // SAFETY: `ctx` only holds available instruction sets.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { linear_rows_avx512(x, weight, bias, o, t) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { linear_rows_avx2(x, weight, bias, o, t) },
            _ => linear_rows(x, weight, bias, o, t),
        });
}

/// `k` rounded up to whole blocks.
const fn kpad(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

/// Channel blocks per task of the gather's matrix product (and its register tile's width).
const GATHER_NC: usize = 4;
/// Classes per register tile of the gather's matrix product.
const GATHER_NK: usize = 4;
/// Pixels per chunk of the gather (the features of a chunk stay in cache while every class
/// group passes over them).
const GATHER_CHUNK: usize = 128;

/// Floats of scratch [`softmax_spatial_gather`] needs for `k` classes at `h × w` pixels with
/// `threads` threads: the softmax weights `[h·w][k↑16]`, the per-class maximum and reciprocal
/// sum, and per thread the partial sums of one channel group.
pub const fn spatial_gather_scratch_len(k: usize, h: usize, w: usize, threads: usize) -> usize {
    let kp = kpad(k);
    h * w * kp + 2 * kp + threads * kp * GATHER_NC * BLOCK
}

struct Gather {
    logits: *const f32,
    ls: ActShape,
    feats: *const f32,
    fs: ActShape,
    out: *mut f32,
    os: ActShape,
    /// `[h·w][kp]` softmax weights.
    wts: *mut f32,
    /// `[kp]` maxima, then `[kp]` reciprocal sums.
    stats: *mut f32,
    /// Per thread `[kp][GATHER_NC][16]` partial sums.
    part: *mut f32,
    kp: usize,
}
// SAFETY: tasks of each phase write disjoint parts (one class block, one row, one channel
// group and their thread's partial sums) and read what earlier phases finished.
unsafe impl Sync for Gather {}

/// Phase 1 (task = class block): maximum and reciprocal sum of exponentials per class.
///
/// # Safety
/// Buffers as checked by [`softmax_spatial_gather`]; task `kb` alone writes its stats.
#[inline(always)]
unsafe fn gather_stats(g: &Gather, kb: usize) {
    let ls = g.ls;
    let mut m = [f32::NEG_INFINITY; BLOCK];
    for y in 0..ls.h {
        // SAFETY: row `y` of block `kb` is inside `logits`.
        let row =
            unsafe { std::slice::from_raw_parts(g.logits.add(ls.pixel(kb, y, 0)), ls.w * BLOCK) };
        for px in row.chunks_exact(BLOCK) {
            for l in 0..BLOCK {
                m[l] = m[l].max(px[l]);
            }
        }
    }
    let mut s = [0.0f64; BLOCK];
    let mut e = [0.0f32; BLOCK];
    for y in 0..ls.h {
        // SAFETY: as above.
        let row =
            unsafe { std::slice::from_raw_parts(g.logits.add(ls.pixel(kb, y, 0)), ls.w * BLOCK) };
        for px in row.chunks_exact(BLOCK) {
            for l in 0..BLOCK {
                e[l] = exp_f32(px[l] - m[l]);
            }
            for l in 0..BLOCK {
                s[l] += f64::from(e[l]);
            }
        }
    }
    for l in 0..BLOCK {
        // SAFETY: `kb · 16 + l < kp`: this task's entries of `stats`.
        unsafe {
            *g.stats.add(kb * BLOCK + l) = m[l];
            *g.stats.add(g.kp + kb * BLOCK + l) = (1.0 / s[l]) as f32;
        }
    }
}

/// Phase 2 (task = row): softmax weights of the row's pixels, `[p][kp]`, zero for padding classes.
///
/// # Safety
/// Buffers as checked by [`softmax_spatial_gather`]; phase 1 has finished.
#[inline(always)]
unsafe fn gather_weights(g: &Gather, y: usize) {
    let ls = g.ls;
    let k = ls.c;
    let mut e = [0.0f32; BLOCK];
    for x in 0..ls.w {
        for kb in 0..ls.blocks() {
            // SAFETY: pixel `(y, x)` of block `kb` is inside `logits`; the weights of pixel
            // `y·w + x` belong to this task's row; `stats` was written by phase 1.
            unsafe {
                let px = std::slice::from_raw_parts(g.logits.add(ls.pixel(kb, y, x)), BLOCK);
                let m = std::slice::from_raw_parts(g.stats.add(kb * BLOCK), BLOCK);
                let inv = std::slice::from_raw_parts(g.stats.add(g.kp + kb * BLOCK), BLOCK);
                let dst = std::slice::from_raw_parts_mut(
                    g.wts.add((y * ls.w + x) * g.kp + kb * BLOCK),
                    BLOCK,
                );
                for l in 0..BLOCK {
                    e[l] = exp_f32(px[l] - m[l]) * inv[l];
                }
                for l in 0..BLOCK {
                    dst[l] = if kb * BLOCK + l < k { e[l] } else { 0.0 };
                }
            }
        }
    }
}

/// Phase 3 tile: `acc[k][c] += Σ_p w[p][k] · f[c][p]` for `NK` classes from `k0` and `NC` channel
/// blocks from `cb0`, over pixels `x0..x0+n` of row `y`, partial sums in `part`.
///
/// # Safety
/// Buffers as checked by [`softmax_spatial_gather`]; `part` holds `kp · GATHER_NC · 16` floats.
#[inline(always)]
unsafe fn gather_tile<V: Vf, const NK: usize, const NC: usize>(
    g: &Gather,
    part: *mut f32,
    k0: usize,
    cb0: usize,
    y: usize,
    x0: usize,
    n: usize,
) {
    // SAFETY: every index is inside its buffer (caller's contract).
    unsafe {
        let mut acc = [[V::zero(); NC]; NK];
        for (i, a) in acc.iter_mut().enumerate() {
            for (j, a) in a.iter_mut().enumerate() {
                *a = V::load(part.add(((k0 + i) * GATHER_NC + j) * BLOCK));
            }
        }
        let fs = g.fs;
        let f0 = g.feats.add(fs.pixel(cb0, y, x0));
        let w0 = g.wts.add((y * fs.w + x0) * g.kp + k0);
        for p in 0..n {
            let mut f = [V::zero(); NC];
            for (j, f) in f.iter_mut().enumerate() {
                *f = V::load(f0.add(j * fs.block_stride() + p * BLOCK));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let wv = V::bcast(w0.add(p * g.kp + i));
                for j in 0..NC {
                    a[j] = V::fma(wv, f[j], a[j]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, a) in a.iter().enumerate() {
                V::store(part.add(((k0 + i) * GATHER_NC + j) * BLOCK), *a);
            }
        }
    }
}

/// Phase 3 (task = channel group): the matrix product for `NC` channel blocks from `cb0`.
///
/// # Safety
/// Buffers as checked by [`softmax_spatial_gather`]; phase 2 has finished; `thread` is the
/// executing thread (its partial sums are private).
#[inline(always)]
unsafe fn gather_product<V: Vf, const NC: usize>(g: &Gather, cb0: usize, thread: usize) {
    // SAFETY: thread `thread`'s partial sums are inside the scratch and private to it.
    let part = unsafe { g.part.add(thread * g.kp * GATHER_NC * BLOCK) };
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts_mut(part, g.kp * GATHER_NC * BLOCK) }.fill(0.0);
    let fs = g.fs;
    // Classes past the last group of GATHER_NK have zero weights: skip them.
    let k_end = g.ls.c.div_ceil(GATHER_NK) * GATHER_NK;
    for y in 0..fs.h {
        for x0 in (0..fs.w).step_by(GATHER_CHUNK) {
            let n = GATHER_CHUNK.min(fs.w - x0);
            for k0 in (0..k_end).step_by(GATHER_NK) {
                // SAFETY: `k0 + GATHER_NK ≤ k_end ≤ kp` (16 is a multiple of GATHER_NK),
                // `cb0 + NC ≤` feature blocks, pixels in row `y`.
                unsafe { gather_tile::<V, GATHER_NK, NC>(g, part, k0, cb0, y, x0, n) };
            }
        }
    }
    let (os, k) = (g.os, g.ls.c);
    let pad = fs.c % BLOCK;
    for kk in 0..k {
        for j in 0..NC {
            let cb = cb0 + j;
            // SAFETY: output pixel `(kk, 0)` of block `cb` is inside `out`; this task alone
            // writes its channel blocks.
            unsafe {
                let d = g.out.add(os.pixel(cb, kk, 0));
                std::ptr::copy_nonoverlapping(part.add((kk * GATHER_NC + j) * BLOCK), d, BLOCK);
                if pad != 0 && cb + 1 == fs.blocks() {
                    std::slice::from_raw_parts_mut(d.add(pad), BLOCK - pad).fill(0.0);
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn gather_group<V: Vf>(g: &Gather, t: usize, thread: usize) {
    let cb0 = t * GATHER_NC;
    // SAFETY: forwarded contract; `cb0 + nc ≤` feature blocks.
    unsafe {
        match (g.fs.blocks() - cb0).min(GATHER_NC) {
            1 => gather_product::<V, 1>(g, cb0, thread),
            2 => gather_product::<V, 2>(g, cb0, thread),
            3 => gather_product::<V, 3>(g, cb0, thread),
            _ => gather_product::<V, GATHER_NC>(g, cb0, thread),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gather_group_avx512(g: &Gather, t: usize, thread: usize) {
    // SAFETY: forwarded contract; AVX-512F and FMA are enabled here.
    unsafe { gather_group::<Z>(g, t, thread) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_group_avx2(g: &Gather, t: usize, thread: usize) {
    // SAFETY: forwarded contract; AVX2 and FMA are enabled here.
    unsafe { gather_group::<Y>(g, t, thread) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_stats_avx2(g: &Gather, kb: usize) {
    // SAFETY: forwarded contract; AVX2 is enabled here (the exp lanes vectorize).
    unsafe { gather_stats(g, kb) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_weights_avx2(g: &Gather, y: usize) {
    // SAFETY: forwarded contract; AVX2 is enabled here (the exp lanes vectorize).
    unsafe { gather_weights(g, y) }
}

/// OCR's spatial gather: `out` (blocked, `C × K × 1`, `out_shape = ActShape::new(C, K, 1)`)
/// receives `out[c][k] = Σ_p softmax_p(logits[k])[p] · feats[c][p]`, the softmax taken over all
/// `H·W` pixels of each of the `K` channels of `logits` (`logits_shape = K × H × W`,
/// `feats_shape = C × H × W`). Writes all of `out` (zero halo and padding channels).
/// `scratch` holds at least [`spatial_gather_scratch_len`]`(K, H, W, ctx.threads())` floats.
///
/// # Panics
/// If the shapes disagree, a buffer length does not match, or there is no pixel.
pub fn softmax_spatial_gather(
    ctx: &Ctx,
    logits_shape: ActShape,
    logits: &[f32],
    feats_shape: ActShape,
    feats: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let (ls, fs) = (logits_shape, feats_shape);
    let os = ActShape::new(fs.c, ls.c, 1);
    assert!(
        ls.h == fs.h && ls.w == fs.w,
        "softmax_spatial_gather: pixel counts differ"
    );
    assert!(
        ls.h > 0 && ls.w > 0 && ls.c > 0 && fs.c > 0,
        "softmax_spatial_gather: empty"
    );
    assert_eq!(
        logits.len(),
        ls.len(),
        "softmax_spatial_gather: logits length"
    );
    assert_eq!(
        feats.len(),
        fs.len(),
        "softmax_spatial_gather: features length"
    );
    assert_eq!(out.len(), os.len(), "softmax_spatial_gather: output length");
    let kp = kpad(ls.c);
    assert!(
        scratch.len() >= spatial_gather_scratch_len(ls.c, ls.h, ls.w, ctx.threads()),
        "softmax_spatial_gather: scratch length"
    );
    zero_halo(os, out);
    let s = scratch.as_mut_ptr();
    let g = Gather {
        logits: logits.as_ptr(),
        ls,
        feats: feats.as_ptr(),
        fs,
        out: out.as_mut_ptr(),
        os,
        wts: s,
        // SAFETY: offsets inside `scratch` (length checked above).
        stats: unsafe { s.add(ls.h * ls.w * kp) },
        // SAFETY: as above.
        part: unsafe { s.add(ls.h * ls.w * kp + 2 * kp) },
        kp,
    };
    let isa = ctx.isa();
    // Each phase's tasks write their own part; the softmax phases use the same arithmetic on
    // every instruction set (only the vector width differs; AVX-512 implies AVX2).
    ctx.pool().run(ls.blocks(), &|kb, _| match isa {
        // SAFETY: `ctx` only holds available instruction sets; buffers checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { gather_stats_avx2(&g, kb) },
        // SAFETY: as above.
        _ => unsafe { gather_stats(&g, kb) },
    });
    ctx.pool().run(ls.h, &|y, _| match isa {
        // SAFETY: `ctx` only holds available instruction sets.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { gather_weights_avx2(&g, y) },
        // SAFETY: as above.
        _ => unsafe { gather_weights(&g, y) },
    });
    ctx.pool()
        .run(fs.blocks().div_ceil(GATHER_NC), &|t, th| match isa {
            // SAFETY: `ctx` only holds available instruction sets.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { gather_group_avx512(&g, t, th) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { gather_group_avx2(&g, t, th) },
            // SAFETY: as above.
            _ => unsafe { gather_group::<P>(&g, t, th) },
        });
}

/// Pixels per register tile of [`object_attention`].
const ATT_NP: usize = 6;

/// Floats of scratch [`object_attention`] needs for `key_ch` key channels and `k` regions with
/// `threads` threads: the transposed keys `[key_ch][k↑16]` and per thread the similarities of
/// one pixel tile.
pub const fn object_attention_scratch_len(key_ch: usize, k: usize, threads: usize) -> usize {
    let kp = kpad(k);
    key_ch * kp + threads * ATT_NP * kp
}

struct Attention {
    query: *const f32,
    qs: ActShape,
    /// `[key_ch][kp]`, zero past `k`.
    key_t: *const f32,
    value: *const f32,
    vs: ActShape,
    out: *mut f32,
    /// Per thread `[ATT_NP][kp]`.
    sim: *mut f32,
    k: usize,
    kp: usize,
    scale: f32,
}
// SAFETY: tasks write disjoint rows of `out` and their thread's own `sim`.
unsafe impl Sync for Attention {}

/// Similarities of `NP` pixels from `(y, x0)`: `sim[p][kk] = query[p] · key[kk]` (all `kp`).
///
/// # Safety
/// Buffers as checked by [`object_attention`]; `sim` holds `ATT_NP · kp` floats.
#[inline(always)]
unsafe fn att_scores<V: Vf, const NP: usize>(a: &Attention, sim: *mut f32, y: usize, x0: usize) {
    let qs = a.qs;
    for kv in 0..a.kp / BLOCK {
        // SAFETY: indices inside the buffers (caller's contract).
        unsafe {
            let mut acc = [V::zero(); NP];
            for cb in 0..qs.blocks() {
                let q = a.query.add(qs.pixel(cb, y, x0));
                let lanes = BLOCK.min(qs.c - cb * BLOCK);
                for l in 0..lanes {
                    let kt = V::load(a.key_t.add((cb * BLOCK + l) * a.kp + kv * BLOCK));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = V::fma(V::bcast(q.add(p * BLOCK + l)), kt, *acc);
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                V::store(sim.add(p * a.kp + kv * BLOCK), *acc);
            }
        }
    }
}

/// Softmax over the `k` regions of each of `np` pixels' similarities, in place (scaled by
/// `scale` first; zero past `k`). Works on whole 16-lane chunks (the padding masked to −∞) so
/// the loops vectorize; the sum runs over the lanes of a chunk in a fixed tree order.
#[inline(always)]
fn att_softmax(sim: &mut [f32], k: usize, kp: usize, scale: f32) {
    for s in sim.chunks_exact_mut(kp) {
        let mut m = [f32::NEG_INFINITY; BLOCK];
        for (ci, c) in s.chunks_exact_mut(BLOCK).enumerate() {
            for (l, v) in c.iter_mut().enumerate() {
                *v = if ci * BLOCK + l < k {
                    *v * scale
                } else {
                    f32::NEG_INFINITY
                };
                m[l] = m[l].max(*v);
            }
        }
        let m = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = [0.0f32; BLOCK];
        for c in s.chunks_exact_mut(BLOCK) {
            for (l, v) in c.iter_mut().enumerate() {
                *v = exp_f32(*v - m);
                sum[l] += *v;
            }
        }
        let mut w = BLOCK;
        while w > 1 {
            w /= 2;
            for l in 0..w {
                sum[l] += sum[l + w];
            }
        }
        let inv = 1.0 / sum[0];
        for v in s.iter_mut() {
            *v *= inv;
        }
    }
}

/// `out[p] = Σ_kk sim[p][kk] · value[kk]` for `NP` pixels from `(y, x0)`, every channel block.
///
/// # Safety
/// Buffers as checked by [`object_attention`].
#[inline(always)]
unsafe fn att_values<V: Vf, const NP: usize>(a: &Attention, sim: *const f32, y: usize, x0: usize) {
    let (qs, vs) = (a.qs, a.vs);
    let pad = qs.c % BLOCK;
    for cb in 0..qs.blocks() {
        // SAFETY: indices inside the buffers (caller's contract); this task owns row `y`.
        unsafe {
            let mut acc = [V::zero(); NP];
            for kk in 0..a.k {
                let v = V::load(a.value.add(vs.pixel(cb, kk, 0)));
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = V::fma(V::bcast(sim.add(p * a.kp + kk)), v, *acc);
                }
            }
            let d = a.out.add(qs.pixel(cb, y, x0));
            for (p, acc) in acc.iter().enumerate() {
                V::store(d.add(p * BLOCK), *acc);
                if pad != 0 && cb + 1 == qs.blocks() {
                    std::slice::from_raw_parts_mut(d.add(p * BLOCK + pad), BLOCK - pad).fill(0.0);
                }
            }
        }
    }
}

/// One output row of [`object_attention`].
///
/// # Safety
/// Buffers as checked by [`object_attention`]; `thread` is the executing thread.
#[inline(always)]
unsafe fn att_row<V: Vf>(a: &Attention, y: usize, thread: usize) {
    // SAFETY: this thread's similarity buffer, inside the scratch.
    let sim = unsafe { a.sim.add(thread * ATT_NP * a.kp) };
    let w = a.qs.w;
    let mut x0 = 0;
    while x0 < w {
        let np = if w - x0 >= ATT_NP { ATT_NP } else { 1 };
        // SAFETY: pixels `x0..x0 + np` are in row `y`; `sim` holds `ATT_NP · kp` floats.
        unsafe {
            if np == ATT_NP {
                att_scores::<V, ATT_NP>(a, sim, y, x0);
            } else {
                att_scores::<V, 1>(a, sim, y, x0);
            }
            att_softmax(
                std::slice::from_raw_parts_mut(sim, np * a.kp),
                a.k,
                a.kp,
                a.scale,
            );
            if np == ATT_NP {
                att_values::<V, ATT_NP>(a, sim, y, x0);
            } else {
                att_values::<V, 1>(a, sim, y, x0);
            }
        }
        x0 += np;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn att_row_avx512(a: &Attention, y: usize, thread: usize) {
    // SAFETY: forwarded contract; AVX-512F and FMA are enabled here.
    unsafe { att_row::<Z>(a, y, thread) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn att_row_avx2(a: &Attention, y: usize, thread: usize) {
    // SAFETY: forwarded contract; AVX2 and FMA are enabled here.
    unsafe { att_row::<Y>(a, y, thread) }
}

/// OCR's object attention: for every pixel `p` of `query` (blocked, `query_shape = KEY × H × W`,
/// `f_pixel`'s output), `sim[k] = softmax_k(KEY^-½ · Σ_c query[c][p] · key[c][k])` over the `K`
/// regions of `key` (blocked `KEY × K × 1`, `f_object`'s output), and
/// `out[c][p] = Σ_k sim[k] · value[c][k]` (`value`: blocked `KEY × K × 1`, `f_down`'s output).
/// `out` has `query_shape` and is written whole (zero halo and padding channels). `scratch`
/// holds at least [`object_attention_scratch_len`]`(KEY, K, ctx.threads())` floats.
///
/// # Panics
/// If the shapes disagree or a buffer length does not match.
#[allow(clippy::too_many_arguments)]
pub fn object_attention(
    ctx: &Ctx,
    query_shape: ActShape,
    query: &[f32],
    regions: usize,
    key: &[f32],
    value: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let qs = query_shape;
    let vs = ActShape::new(qs.c, regions, 1);
    assert!(regions > 0 && qs.c > 0, "object_attention: empty");
    assert_eq!(query.len(), qs.len(), "object_attention: query length");
    assert_eq!(key.len(), vs.len(), "object_attention: key length");
    assert_eq!(value.len(), vs.len(), "object_attention: value length");
    assert_eq!(out.len(), qs.len(), "object_attention: output length");
    assert!(
        scratch.len() >= object_attention_scratch_len(qs.c, regions, ctx.threads()),
        "object_attention: scratch length"
    );
    zero_halo(qs, out);
    let kp = kpad(regions);
    let (key_t, sim) = scratch.split_at_mut(qs.c * kp);
    for c in 0..qs.c {
        let row = &mut key_t[c * kp..][..kp];
        for (kk, v) in row.iter_mut().enumerate() {
            *v = if kk < regions {
                key[vs.index(c, kk, 0)]
            } else {
                0.0
            };
        }
    }
    let a = Attention {
        query: query.as_ptr(),
        qs,
        key_t: key_t.as_ptr(),
        value: value.as_ptr(),
        vs,
        out: out.as_mut_ptr(),
        sim: sim.as_mut_ptr(),
        k: regions,
        kp,
        scale: (qs.c as f64).powf(-0.5) as f32,
    };
    let isa = ctx.isa();
    ctx.pool().run(qs.h, &|y, th| match isa {
        // SAFETY: `ctx` only holds available instruction sets; buffers checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { att_row_avx512(&a, y, th) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { att_row_avx2(&a, y, th) },
        // SAFETY: as above.
        _ => unsafe { att_row::<P>(&a, y, th) },
    });
}
