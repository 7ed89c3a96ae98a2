//! Bilinear resizing in the blocked layout, and the channel layout of concatenations.
//!
//! The segmentation networks (HRNet-Semantic-Segmentation) resize with
//! `F.interpolate(x, size, mode='bilinear', align_corners)` wherever the pose network upsamples
//! ×2^k with nearest neighbours: in the exchange units (a lower branch, after its 1×1 conv + BN,
//! resized to the exact size of the higher branch and added to its sum) and in the head (branches
//! 1–3 resized to branch 0's size and concatenated). Sizes need not be multiples of 2
//! (72×104 → 18×26, 9×13, 5×7, 3×4).
//!
//! - [`add_resized_bilinear`]: `acc = relu?(acc + resize(src))`, the exchange unit's j > i path
//!   fused with its add (touches the interior of `acc` only).
//! - [`resize_bilinear`]: `dst = resize(src)` into a fresh tensor (halo and padding channels
//!   written as zeros), e.g. straight into one part of a concatenation buffer.
//! - [`Concat`]: where each input of a channel concatenation lives in the buffer.
//!
//! Arithmetic is PyTorch's CPU kernel (`upsample_bilinear2d`, `compute_source_index_and_lambda`):
//! per axis the ratio is `in / out` in f32 (`(in − 1) / (out − 1)` with `align_corners`, 0 for an
//! output of 1), the source coordinate `ratio · (dst + 0.5) − 0.5` clamped at 0 (`ratio · dst`
//! with `align_corners`), index `i0 = min(⌊src⌋, in − 1)`, `i1 = i0 + (i0 < in − 1)`,
//! `λ1 = clamp(src − i0, 0, 1)`, `λ0 = 1 − λ1`; the value is
//! `(x00·λx0 + x01·λx1)·λy0 + (x10·λx0 + x11·λx1)·λy1`. Only multiplications and additions
//! (no fused multiply-add), so every instruction set and thread count gives the same bits.
//!
//! # Concatenation buffers are part-padded
//! In the blocked layout each tensor is padded to a multiple of 16 channels. A concatenation
//! buffer here keeps that per part: **every part starts at a channel-block boundary**, so a
//! part is a contiguous run of whole blocks, and that run *is* a tensor of the part's own shape
//! in the blocked layout ([`Concat::part_range`]). Any kernel writing a fresh output — a resize,
//! a convolution, an exchange unit's last add — can therefore write a concatenation input in
//! place, with no channel-offset variant and no copy. The price is the zero channels between
//! parts (none when every part but the last is a multiple of 16, e.g. W48: 48, 96, 192, 384;
//! W18's head reads 304 buffer channels for 270 logical ones): the convolution that reads the
//! buffer sees [`Concat::channels`] input channels, and its weights are remapped with
//! [`Concat::remap_input_channels`] (zeros for the gaps) before packing. The gaps hold zeros
//! because kernels that write a fresh output write zero padding channels; the zero weights make
//! the result independent of them as long as they are finite.

use super::layout::{zero_halo, ActShape, BLOCK};
use super::simd::{Vf, P};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::{Ctx, Isa};

/// Output pixels per row whose source indices and weights are computed once and then used for
/// every channel block.
const CHUNK: usize = 64;

/// Row tasks per call (at least; fewer if the output has fewer rows).
const TASKS: usize = 16;

/// One output coordinate along an axis: the two source indices and their weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Taps {
    /// First source index.
    pub i0: usize,
    /// Second source index (`i0` or `i0 + 1`).
    pub i1: usize,
    /// Weight of `i0`.
    pub l0: f32,
    /// Weight of `i1`.
    pub l1: f32,
}

/// The f32 ratio PyTorch uses along an axis of `input` → `output` samples.
pub fn ratio(input: usize, output: usize, align_corners: bool) -> f32 {
    if align_corners {
        if output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            0.0
        }
    } else {
        input as f32 / output as f32
    }
}

/// Source taps of output coordinate `dst` along an axis of `input` samples (`input ≥ 1`), with
/// the `ratio` of [`ratio`]; PyTorch's `compute_source_index_and_lambda`.
#[inline(always)]
pub fn taps(dst: usize, input: usize, ratio: f32, align_corners: bool) -> Taps {
    let src = if align_corners {
        ratio * dst as f32
    } else {
        (ratio * (dst as f32 + 0.5) - 0.5).max(0.0)
    };
    // `src ≥ 0`, so the truncating cast is the floor.
    let i0 = (src as usize).min(input - 1);
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    let i1 = i0 + usize::from(i0 < input - 1);
    Taps {
        i0,
        i1,
        l0: 1.0 - l1,
        l1,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Write,
    Add,
    AddRelu,
}

struct Job {
    src: *const f32,
    ss: ActShape,
    dst: *mut f32,
    ds: ActShape,
    align: bool,
    mode: Mode,
    rows_per_task: usize,
}

// SAFETY: tasks read `src` only and write disjoint row ranges of `dst` (one task per range).
unsafe impl Sync for Job {}

/// Resizes the rows of task `t` for every channel block.
///
/// # Safety
/// The buffers match `ss` / `ds` (checked by the callers), the instruction set of `V` is
/// available, and no other task writes rows of the same range.
#[inline(always)]
unsafe fn rows<V: Vf>(j: &Job, t: usize) {
    let (ss, ds) = (j.ss, j.ds);
    let (ry, rx) = (ratio(ss.h, ds.h, j.align), ratio(ss.w, ds.w, j.align));
    let y_end = ((t + 1) * j.rows_per_task).min(ds.h);
    let pad = ds.c % BLOCK;
    let mut tab = [(0usize, 0usize, 0.0f32, 0.0f32); CHUNK];
    for y in t * j.rows_per_task..y_end {
        let ty = taps(y, ss.h, ry, j.align);
        // SAFETY: the instruction set of `V` is available (caller's contract).
        let (ly0, ly1) = unsafe { (V::splat(ty.l0), V::splat(ty.l1)) };
        for x0 in (0..ds.w).step_by(CHUNK) {
            let n = CHUNK.min(ds.w - x0);
            for (i, e) in tab[..n].iter_mut().enumerate() {
                let tx = taps(x0 + i, ss.w, rx, j.align);
                *e = (tx.i0 * BLOCK, tx.i1 * BLOCK, tx.l0, tx.l1);
            }
            for cb in 0..ds.blocks() {
                // SAFETY: rows `ty.i0`, `ty.i1` < ss.h and columns < ss.w are interior pixels
                // of block `cb` of `src`; `(cb, y, x0 + i)` for `i < n` is inside `dst`.
                unsafe {
                    let r0 = j.src.add(ss.pixel(cb, ty.i0, 0));
                    let r1 = j.src.add(ss.pixel(cb, ty.i1, 0));
                    let d = j.dst.add(ds.pixel(cb, y, x0));
                    for (i, &(o0, o1, a, b)) in tab[..n].iter().enumerate() {
                        let (a, b) = (V::splat(a), V::splat(b));
                        let top = V::add(
                            V::mul(V::load(r0.add(o0)), a),
                            V::mul(V::load(r0.add(o1)), b),
                        );
                        let bot = V::add(
                            V::mul(V::load(r1.add(o0)), a),
                            V::mul(V::load(r1.add(o1)), b),
                        );
                        let mut v = V::add(V::mul(top, ly0), V::mul(bot, ly1));
                        let p = d.add(i * BLOCK);
                        match j.mode {
                            Mode::Write => {}
                            Mode::Add => v = V::add(V::load(p), v),
                            Mode::AddRelu => v = V::relu(V::add(V::load(p), v)),
                        }
                        V::store(p, v);
                    }
                    if pad != 0 && cb + 1 == ds.blocks() {
                        // Padding channels come out as zeros, whatever the source held there.
                        for i in 0..n {
                            std::slice::from_raw_parts_mut(d.add(i * BLOCK + pad), BLOCK - pad)
                                .fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(j: &Job, t: usize) {
    // SAFETY: forwarded contract of `rows`; AVX-512F is enabled here.
    unsafe { rows::<Z>(j, t) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(j: &Job, t: usize) {
    // SAFETY: forwarded contract of `rows`; AVX2 is enabled here.
    unsafe { rows::<Y>(j, t) }
}

fn run(ctx: &Ctx, j: Job) {
    let tasks = j.ds.h.div_ceil(j.rows_per_task);
    let isa = ctx.isa();
    ctx.pool().run(tasks, &|t, _| match isa {
        // SAFETY: `ctx` only holds available instruction sets; the callers checked the buffers.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_avx512(&j, t) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { rows_avx2(&j, t) },
        // SAFETY: as above.
        _ => unsafe { rows::<P>(&j, t) },
    });
}

fn job(
    what: &str,
    src_shape: ActShape,
    src: &[f32],
    dst_shape: ActShape,
    dst: &mut [f32],
    align_corners: bool,
    mode: Mode,
) -> Job {
    assert_eq!(src_shape.c, dst_shape.c, "{what}: channel counts differ");
    assert_eq!(src.len(), src_shape.len(), "{what}: source length");
    assert_eq!(dst.len(), dst_shape.len(), "{what}: destination length");
    assert!(
        dst_shape.is_empty() || (src_shape.h > 0 && src_shape.w > 0),
        "{what}: empty source"
    );
    Job {
        src: src.as_ptr(),
        ss: src_shape,
        dst: dst.as_mut_ptr(),
        ds: dst_shape,
        align: align_corners,
        mode,
        rows_per_task: dst_shape.h.div_ceil(TASKS).max(1),
    }
}

/// `dst = resize(src)`: bilinear resizing of `src` (`src_shape`) to `dst_shape`'s size, as
/// `F.interpolate(mode='bilinear', align_corners)`. Writes all of `dst`: the halo and the
/// padding channels as zeros. Allocates nothing.
///
/// # Panics
/// If the channel counts differ, a buffer length does not match its shape, or `src` has no
/// pixel while `dst` has some.
pub fn resize_bilinear(
    ctx: &Ctx,
    src_shape: ActShape,
    src: &[f32],
    dst_shape: ActShape,
    dst: &mut [f32],
    align_corners: bool,
) {
    let j = job(
        "resize_bilinear",
        src_shape,
        src,
        dst_shape,
        dst,
        align_corners,
        Mode::Write,
    );
    zero_halo(dst_shape, dst);
    if !dst_shape.is_empty() {
        run(ctx, j);
    }
}

/// `acc = relu?(acc + resize(src))`: the exchange unit's j > i path (after its 1×1 conv + BN at
/// the low resolution) resized bilinearly to `acc`'s size and added to the sum, with the unit's
/// ReLU when `relu` (the last addend). Only the interior of `acc` is touched; its padding
/// channels come out as zeros. Allocates nothing.
///
/// # Panics
/// As [`resize_bilinear`].
pub fn add_resized_bilinear(
    ctx: &Ctx,
    src_shape: ActShape,
    src: &[f32],
    dst_shape: ActShape,
    acc: &mut [f32],
    align_corners: bool,
    relu: bool,
) {
    let mode = if relu { Mode::AddRelu } else { Mode::Add };
    let j = job(
        "add_resized_bilinear",
        src_shape,
        src,
        dst_shape,
        acc,
        align_corners,
        mode,
    );
    if !dst_shape.is_empty() {
        run(ctx, j);
    }
}

/// Most inputs a [`Concat`] holds (the segmentation head has 4, OCR 2).
pub const MAX_PARTS: usize = 8;

/// The part-padded channel layout of a concatenation buffer (see the module doc): part `i`
/// (`parts[i]` channels) starts at buffer channel [`Concat::part_offset`]`(i)`, a multiple of 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Concat {
    n: usize,
    parts: [usize; MAX_PARTS],
}

impl Concat {
    /// The layout of `parts` concatenated in order.
    ///
    /// # Panics
    /// If there are no parts or more than [`MAX_PARTS`] (at compile time in a `const`).
    pub const fn new(parts: &[usize]) -> Concat {
        assert!(
            !parts.is_empty() && parts.len() <= MAX_PARTS,
            "Concat: 1 to MAX_PARTS parts"
        );
        let mut p = [0; MAX_PARTS];
        let mut i = 0;
        while i < parts.len() {
            p[i] = parts[i];
            i += 1;
        }
        Concat {
            n: parts.len(),
            parts: p,
        }
    }

    /// Channel counts of the parts.
    pub fn parts(&self) -> &[usize] {
        &self.parts[..self.n]
    }

    /// Logical channels: the sum of the parts (what the official model's `torch.cat` has).
    pub const fn logical_channels(&self) -> usize {
        let mut s = 0;
        let mut i = 0;
        while i < self.n {
            s += self.parts[i];
            i += 1;
        }
        s
    }

    /// First buffer channel of part `i` (a multiple of 16).
    pub const fn part_offset(&self, i: usize) -> usize {
        let mut s = 0;
        let mut k = 0;
        while k < i {
            s += self.parts[k].div_ceil(BLOCK) * BLOCK;
            k += 1;
        }
        s
    }

    /// Channels of the buffer: every part but the last padded to 16 (the last one's padding is
    /// the buffer's own). The convolution reading the buffer has this many input channels.
    pub const fn channels(&self) -> usize {
        self.part_offset(self.n - 1) + self.parts[self.n - 1]
    }

    /// The buffer's shape at `h × w` pixels.
    pub const fn shape(&self, h: usize, w: usize) -> ActShape {
        ActShape::new(self.channels(), h, w)
    }

    /// Range of floats of the buffer (shape [`Concat::shape`]`(h, w)`) holding part `i`: a
    /// tensor of shape `ActShape::new(parts[i], h, w)` in the blocked layout.
    pub const fn part_range(&self, i: usize, h: usize, w: usize) -> std::ops::Range<usize> {
        let bs = self.shape(h, w).block_stride();
        let start = self.part_offset(i) / BLOCK * bs;
        start..start + self.parts[i].div_ceil(BLOCK) * bs
    }

    /// Buffer channel of logical channel `ch` (`ch < logical_channels()`), for weight packers.
    ///
    /// # Panics
    /// If `ch` is out of range.
    pub const fn buffer_channel(&self, ch: usize) -> usize {
        let mut rest = ch;
        let mut i = 0;
        while i < self.n {
            if rest < self.parts[i] {
                return self.part_offset(i) + rest;
            }
            rest -= self.parts[i];
            i += 1;
        }
        panic!("Concat::buffer_channel: channel out of range")
    }

    /// Spreads the weights of a convolution over the logical concatenation (`[cout][cin][k2]`,
    /// `cin = logical_channels()`, `k2` taps per channel pair) to the buffer's channels
    /// (`[cout][channels()][k2]`, zeros for the gaps between parts), ready for
    /// [`super::ConvSpec::pack`] with `cin = channels()`.
    ///
    /// # Panics
    /// If a length does not match.
    pub fn remap_input_channels(&self, weights: &[f32], cout: usize, k2: usize, out: &mut [f32]) {
        let (cl, cb) = (self.logical_channels(), self.channels());
        assert_eq!(
            weights.len(),
            cout * cl * k2,
            "remap_input_channels: weights"
        );
        assert_eq!(out.len(), cout * cb * k2, "remap_input_channels: output");
        out.fill(0.0);
        for o in 0..cout {
            for c in 0..cl {
                let b = self.buffer_channel(c);
                out[(o * cb + b) * k2..][..k2].copy_from_slice(&weights[(o * cl + c) * k2..][..k2]);
            }
        }
    }
}
