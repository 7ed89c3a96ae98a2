//! Standalone element-wise kernels for what cannot be fused into a convolution's epilogue.
//!
//! All tensors are in the blocked layout ([`super::layout`]). Work is split over the pool by
//! channel block; these are memory-bound and written as plain loops LLVM vectorizes.

use super::layout::{zero_halo, ActShape, BLOCK};
use super::Ctx;

/// Raw output pointer shared by the tasks of one call.
struct SyncPtr(*mut f32);
// SAFETY: each task writes only the channel block equal to its task index (disjoint ranges).
unsafe impl Sync for SyncPtr {}

/// Runs `f(block_index, out_block)` for every channel block of `out`, in parallel.
fn per_block(ctx: &Ctx, shape: ActShape, out: &mut [f32], f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    assert_eq!(out.len(), shape.len(), "eltwise: output length");
    let bs = shape.block_stride();
    let p = SyncPtr(out.as_mut_ptr());
    let p = &p;
    ctx.pool().run(shape.blocks(), &|b, _| {
        // SAFETY: block `b` is `bs` floats at `b · bs`, inside `out`, and no other task touches
        // it while this one runs (one task per block).
        let blk = unsafe { std::slice::from_raw_parts_mut(p.0.add(b * bs), bs) };
        f(b, blk);
    });
}

/// `out = relu?(a + b)`, all of `shape` (halo written as zeros).
///
/// # Panics
/// If a length does not match `shape`.
pub fn add(ctx: &Ctx, shape: ActShape, a: &[f32], b: &[f32], out: &mut [f32], relu: bool) {
    assert_eq!(a.len(), shape.len(), "add: a length");
    assert_eq!(b.len(), shape.len(), "add: b length");
    let bs = shape.block_stride();
    per_block(ctx, shape, out, &|blk, o| {
        let a = &a[blk * bs..][..bs];
        let b = &b[blk * bs..][..bs];
        if relu {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = (x + y).max(0.0);
            }
        } else {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
        }
    });
    zero_halo(shape, out);
}

/// `acc = relu?(acc + up(low))` where `up` is nearest upsampling ×2^`log2`: `acc` has shape
/// `shape`, `low` has `shape.h >> log2 × shape.w >> log2` pixels. Only the interior of `acc`
/// is touched.
///
/// # Panics
/// If `shape.h` or `shape.w` is not a multiple of `2^log2`, or a length does not match.
pub fn add_upsampled(
    ctx: &Ctx,
    shape: ActShape,
    acc: &mut [f32],
    low: &[f32],
    log2: u32,
    relu: bool,
) {
    let f = 1usize << log2;
    assert!(
        shape.h.is_multiple_of(f) && shape.w.is_multiple_of(f),
        "add_upsampled: size not divisible"
    );
    let ls = ActShape::new(shape.c, shape.h / f, shape.w / f);
    assert_eq!(low.len(), ls.len(), "add_upsampled: low-resolution length");
    let lbs = ls.block_stride();
    per_block(ctx, shape, acc, &|blk, o| {
        let l = &low[blk * lbs..][..lbs];
        for y in 0..shape.h {
            for x in 0..shape.w {
                let d = shape.pixel(0, y, x);
                let s = ls.pixel(0, y >> log2, x >> log2);
                let (o, s) = (&mut o[d..d + BLOCK], &l[s..s + BLOCK]);
                for (o, &s) in o.iter_mut().zip(s) {
                    let v = *o + s;
                    *o = if relu { v.max(0.0) } else { v };
                }
            }
        }
    });
}

/// `x = max(x, 0)` on the interior and padding (the halo stays zero).
///
/// # Panics
/// If `x.len() != shape.len()`.
pub fn relu(ctx: &Ctx, shape: ActShape, x: &mut [f32]) {
    per_block(ctx, shape, x, &|_, o| {
        for v in o {
            *v = v.max(0.0);
        }
    });
}
