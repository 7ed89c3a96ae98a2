//! Convolutions: the [`ConvSpec`] description, weight packing, the direct kernel and the entry
//! point [`conv`] shared with the Winograd kernel.
//!
//! Packed weights start with the bias padded to whole channel blocks (`ceil(cout/16)·16`
//! floats). Output channel blocks are processed in *groups* of up to 4 blocks (see
//! `group`); the direct kernel's weights follow as, for each group of `nb` blocks,
//! `[icb][tap][16 input channels][nb][16 output channels]`, zero-padded. The Winograd layout is
//! in the (private) `winograd` module.

use super::layout::{zero_halo, ActShape, BLOCK};
use super::simd::{Vf, P};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::{winograd, Ctx, Isa};

/// Algorithm of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algo {
    /// Register-blocked direct convolution (any kernel size, stride, padding ≤ 1).
    Direct,
    /// Winograd F(2×2, 3×3) (3×3, stride 1, padding 1 only).
    Winograd2,
    /// Winograd F(4×4, 3×3) (3×3, stride 1, padding 1 only).
    Winograd4,
    /// Winograd F(2×2, 3×3) with the weights packed as for [`Algo::Direct`] and transformed
    /// during each call (less memory traffic; for small maps with many channels).
    Winograd2Otf,
    /// Winograd F(4×4, 3×3), weights transformed during each call.
    Winograd4Otf,
}

/// One convolution layer: shapes and algorithm, all known when the model is compiled.
///
/// The fields are private: every `ConvSpec` comes from [`ConvSpec::new`] /
/// [`ConvSpec::try_new`], which refuse shapes the kernels do not support and shapes whose
/// buffer lengths (input, output, packed weights, scratch) would not fit a slice, so the
/// length checks of [`conv`] cannot be fooled by wrapped arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) h_in: usize,
    pub(crate) w_in: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) algo: Algo,
}

/// Why a [`ConvSpec`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Zero input or output channels.
    #[error("zero channels")]
    ZeroChannels,
    /// Zero input height or width.
    #[error("empty input")]
    EmptyInput,
    /// Kernel size 0 or above 9, or stride 0.
    #[error("kernel size must be 1..=9 and stride at least 1")]
    KernelOrStride,
    /// Padding above [`super::HALO`].
    #[error("padding > 1 is not supported")]
    Padding,
    /// The kernel does not fit the padded input.
    #[error("kernel larger than the padded input")]
    KernelTooLarge,
    /// Winograd for a conv that is not 3×3, stride 1, padding 1.
    #[error("Winograd needs a 3x3 stride-1 padding-1 conv")]
    NotWinograd,
    /// A buffer of this conv (input, output, packed weights or scratch) would not fit in
    /// memory: its length overflows.
    #[error("tensor too large")]
    TooLarge,
}

impl SpecError {
    /// The message, usable in `const` panics.
    pub const fn message(self) -> &'static str {
        match self {
            SpecError::ZeroChannels => "ConvSpec: zero channels",
            SpecError::EmptyInput => "ConvSpec: empty input",
            SpecError::KernelOrStride => "ConvSpec: kernel or stride",
            SpecError::Padding => "ConvSpec: padding > 1 is not supported",
            SpecError::KernelTooLarge => "ConvSpec: kernel larger than the padded input",
            SpecError::NotWinograd => "ConvSpec: Winograd needs a 3x3 stride-1 padding-1 conv",
            SpecError::TooLarge => "ConvSpec: tensor too large",
        }
    }
}

/// `a · b`, or `None` past [`super::layout::MAX_FLOATS`].
const fn mul(a: Option<usize>, b: usize) -> Option<usize> {
    match a {
        Some(a) => match a.checked_mul(b) {
            Some(p) if p <= super::layout::MAX_FLOATS => Some(p),
            _ => None,
        },
        None => None,
    }
}

/// `a + b`, or `None` past [`super::layout::MAX_FLOATS`].
const fn add(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => match a.checked_add(b) {
            Some(p) if p <= super::layout::MAX_FLOATS => Some(p),
            _ => None,
        },
        _ => None,
    }
}

impl ConvSpec {
    /// A direct convolution (choose another algorithm with [`ConvSpec::with_algo`]).
    ///
    /// # Panics
    /// If [`ConvSpec::try_new`] refuses the shape; in a `const` item that is a compile error.
    pub const fn new(
        cin: usize,
        cout: usize,
        h_in: usize,
        w_in: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> ConvSpec {
        match ConvSpec::try_new(cin, cout, h_in, w_in, k, stride, pad) {
            Ok(s) => s,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// A direct convolution, if the kernels support it: non-zero sizes, kernel ≤ 9×9 and not
    /// larger than the padded input, padding ≤ [`super::HALO`], and every buffer length
    /// (input, output, packed weights, scratch, for any algorithm) within
    /// [`super::layout::MAX_FLOATS`].
    pub const fn try_new(
        cin: usize,
        cout: usize,
        h_in: usize,
        w_in: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ConvSpec, SpecError> {
        if cin == 0 || cout == 0 {
            return Err(SpecError::ZeroChannels);
        }
        if h_in == 0 || w_in == 0 {
            return Err(SpecError::EmptyInput);
        }
        if k == 0 || k > 9 || stride == 0 {
            return Err(SpecError::KernelOrStride);
        }
        if pad > super::HALO {
            return Err(SpecError::Padding);
        }
        // Sizes are bounded before anything is added or multiplied.
        // (the output is at most 2 pixels larger than the input: pad ≤ 1, k ≥ 1).
        if ActShape::try_new(cin, h_in, w_in).is_err()
            || ActShape::try_new(cout, h_in + 2, w_in + 2).is_err()
        {
            return Err(SpecError::TooLarge);
        }
        if h_in + 2 * pad < k || w_in + 2 * pad < k {
            return Err(SpecError::KernelTooLarge);
        }
        let s = ConvSpec {
            cin,
            cout,
            h_in,
            w_in,
            k,
            stride,
            pad,
            algo: Algo::Direct,
        };
        // The largest packed form (36 Winograd positions or k² ≤ 81 taps), the largest
        // scratch (F(4×4) on the fly), and the direct MAC count all fit.
        let per_tap = mul(
            mul(Some(cin.div_ceil(BLOCK)), BLOCK * BLOCK),
            cout.div_ceil(BLOCK),
        );
        let packed = add(mul(per_tap, 81), Some(cout.div_ceil(BLOCK) * BLOCK));
        let scratch = add(
            mul(
                Some(36 * winograd::TILE_GROUP * BLOCK),
                cin.div_ceil(BLOCK) + 4,
            ),
            Some(36 * 64 * 4 * BLOCK * BLOCK), // `winograd::otf_chunk` ≤ 64 input blocks
        );
        let macs = mul(mul(mul(Some(cin), cout), k * k), h_in * w_in);
        if packed.is_none() || scratch.is_none() || macs.is_none() {
            return Err(SpecError::TooLarge);
        }
        Ok(s)
    }

    /// Panics unless the spec is one the kernels support (see [`ConvSpec::try_new`]);
    /// [`conv`] calls it. Every constructor checks this already.
    pub const fn validate(&self) {
        if let Err(e) = ConvSpec::try_new(
            self.cin,
            self.cout,
            self.h_in,
            self.w_in,
            self.k,
            self.stride,
            self.pad,
        ) {
            panic!("{}", e.message())
        }
        if !matches!(self.algo, Algo::Direct) && !self.is_winograd_shape() {
            panic!("{}", SpecError::NotWinograd.message())
        }
    }

    /// The same convolution with another algorithm.
    ///
    /// # Panics
    /// If `algo` is Winograd and the conv is not 3×3, stride 1, padding 1 (see
    /// [`ConvSpec::try_with_algo`]).
    pub const fn with_algo(self, algo: Algo) -> ConvSpec {
        match self.try_with_algo(algo) {
            Ok(s) => s,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// The same convolution with another algorithm, unless `algo` is Winograd and the conv
    /// is not 3×3, stride 1, padding 1.
    pub const fn try_with_algo(mut self, algo: Algo) -> Result<ConvSpec, SpecError> {
        if !matches!(algo, Algo::Direct) && !self.is_winograd_shape() {
            return Err(SpecError::NotWinograd);
        }
        self.algo = algo;
        Ok(self)
    }

    /// Whether Winograd applies (3×3, stride 1, padding 1).
    pub const fn is_winograd_shape(&self) -> bool {
        self.k == 3 && self.stride == 1 && self.pad == 1
    }

    /// Input channels.
    pub const fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub const fn cout(&self) -> usize {
        self.cout
    }

    /// Input height.
    pub const fn h_in(&self) -> usize {
        self.h_in
    }

    /// Input width.
    pub const fn w_in(&self) -> usize {
        self.w_in
    }

    /// Kernel size (square).
    pub const fn k(&self) -> usize {
        self.k
    }

    /// Stride.
    pub const fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding on every side (at most [`super::HALO`] = 1).
    pub const fn pad(&self) -> usize {
        self.pad
    }

    /// Algorithm.
    pub const fn algo(&self) -> Algo {
        self.algo
    }

    /// Output height.
    pub const fn h_out(&self) -> usize {
        (self.h_in + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output width.
    pub const fn w_out(&self) -> usize {
        (self.w_in + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Shape of the input tensor.
    pub const fn in_shape(&self) -> ActShape {
        ActShape::new(self.cin, self.h_in, self.w_in)
    }

    /// Shape of the output tensor (before any upsampling epilogue).
    pub const fn out_shape(&self) -> ActShape {
        ActShape::new(self.cout, self.h_out(), self.w_out())
    }

    /// Multiply-accumulates of the direct algorithm (the conventional count).
    pub const fn macs(&self) -> usize {
        self.cin * self.cout * self.k * self.k * self.h_out() * self.w_out()
    }

    /// Length in floats of the packed weights and bias.
    pub const fn packed_len(&self) -> usize {
        let ocb = self.cout.div_ceil(BLOCK);
        let icb = self.cin.div_ceil(BLOCK);
        let per_tap = icb * BLOCK * ocb * BLOCK;
        ocb * BLOCK
            + match self.algo {
                Algo::Direct | Algo::Winograd2Otf | Algo::Winograd4Otf => self.k * self.k * per_tap,
                Algo::Winograd2 => 16 * per_tap,
                Algo::Winograd4 => 36 * per_tap,
            }
    }

    /// Length in floats of the scratch memory [`conv`] needs with `threads` threads (0 for
    /// direct convolutions).
    pub const fn scratch_len(&self, threads: usize) -> usize {
        match self.algo {
            Algo::Direct => 0,
            Algo::Winograd2 => winograd::scratch_per_thread(self, 2, false) * threads,
            Algo::Winograd4 => winograd::scratch_per_thread(self, 4, false) * threads,
            Algo::Winograd2Otf => winograd::scratch_per_thread(self, 2, true) * threads,
            Algo::Winograd4Otf => winograd::scratch_per_thread(self, 4, true) * threads,
        }
    }

    /// Packs OIHW weights (`cout · cin · k · k` floats, BatchNorm already folded) and an
    /// optional bias (`cout` floats; zeros if `None`) into `packed` (exactly
    /// [`ConvSpec::packed_len`] floats). Done once at load time; Winograd weights are
    /// transformed in f64.
    ///
    /// # Panics
    /// If a length does not match.
    pub fn pack(&self, weight: &[f32], bias: Option<&[f32]>, packed: &mut [f32]) {
        let (cin, cout, k) = (self.cin, self.cout, self.k);
        assert_eq!(weight.len(), cout * cin * k * k, "pack: weight length");
        assert_eq!(packed.len(), self.packed_len(), "pack: packed length");
        let ocb = cout.div_ceil(BLOCK);
        packed.fill(0.0);
        if let Some(b) = bias {
            assert_eq!(b.len(), cout, "pack: bias length");
            packed[..cout].copy_from_slice(b);
        }
        let body = &mut packed[ocb * BLOCK..];
        match self.algo {
            Algo::Direct | Algo::Winograd2Otf | Algo::Winograd4Otf => {
                let taps = k * k;
                pack_grouped(cin, cout, taps, body, |oc, ic, t| {
                    weight[(oc * cin + ic) * taps + t]
                })
            }
            Algo::Winograd2 => winograd::pack(cin, cout, 2, weight, body),
            Algo::Winograd4 => winograd::pack(cin, cout, 4, weight, body),
        }
    }
}

/// Writes `[group][icb][tap][16][nb][16]` (see the module doc) from `w(oc, ic, tap)`.
pub(crate) fn pack_grouped(
    cin: usize,
    cout: usize,
    taps: usize,
    out: &mut [f32],
    w: impl Fn(usize, usize, usize) -> f32,
) {
    let icb = cin.div_ceil(BLOCK);
    let ocb = cout.div_ceil(BLOCK);
    for g in 0..n_groups(ocb) {
        let (sb, nb) = group(ocb, g);
        let base = icb * taps * BLOCK * BLOCK * sb;
        for ib in 0..icb {
            for t in 0..taps {
                for i in 0..BLOCK {
                    let ic = ib * BLOCK + i;
                    if ic >= cin {
                        continue;
                    }
                    for b in 0..nb {
                        for l in 0..BLOCK {
                            let oc = (sb + b) * BLOCK + l;
                            if oc < cout {
                                let idx =
                                    base + (((ib * taps + t) * BLOCK + i) * nb + b) * BLOCK + l;
                                out[idx] = w(oc, ic, t);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Number of output-channel groups for `ocb` blocks: `ceil(ocb / 4)`.
pub(crate) const fn n_groups(ocb: usize) -> usize {
    ocb.div_ceil(4)
}

/// Group `g` of `ocb` output blocks: `(first block, number of blocks)`, sizes as even as
/// possible (larger first), at most 4.
pub(crate) const fn group(ocb: usize, g: usize) -> (usize, usize) {
    let ng = n_groups(ocb);
    let base = ocb / ng;
    let extra = ocb % ng;
    let start = g * base + if g < extra { g } else { extra };
    (start, base + if g < extra { 1 } else { 0 })
}

/// What is added to the convolution result before the optional ReLU.
#[derive(Clone, Copy, Debug)]
pub enum Addend<'a> {
    /// Nothing: the output is written fresh.
    None,
    /// A tensor of the output's shape (after upsampling): `out = conv + tensor` (out of place).
    Tensor(&'a [f32]),
    /// The output's previous content: `out += conv` (in place).
    Output,
}

/// The fused epilogue of a convolution. With `s = conv(x) + bias` (at the conv's resolution):
/// `out[c][y][x] = relu?( addend[c][y][x] + s[c][y >> u][x >> u] )` where `u = upsample_log2`
/// and `out` has `2^u` times the conv's height and width.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// What to add.
    pub add: Addend<'a>,
    /// Apply ReLU last.
    pub relu: bool,
    /// Nearest upsampling factor (log2) from the conv's output to `out`.
    pub upsample_log2: u32,
}

impl<'a> Epilogue<'a> {
    /// `out = relu?(conv + bias)`.
    pub const fn plain(relu: bool) -> Self {
        Epilogue {
            add: Addend::None,
            relu,
            upsample_log2: 0,
        }
    }
    /// `out = relu?(conv + bias + residual)` (Basic-block second conv, first exchange summand).
    pub const fn residual(residual: &'a [f32], relu: bool) -> Self {
        Epilogue {
            add: Addend::Tensor(residual),
            relu,
            upsample_log2: 0,
        }
    }
    /// `out = relu?(out + conv + bias)` (a later exchange summand at the same resolution).
    pub const fn accumulate(relu: bool) -> Self {
        Epilogue {
            add: Addend::Output,
            relu,
            upsample_log2: 0,
        }
    }
    /// `out = relu?(out + up(conv + bias))`, `up` nearest ×2^`log2`: the exchange unit's
    /// 1×1 low-resolution path added into a high-resolution accumulator.
    pub const fn upsample_accumulate(log2: u32, relu: bool) -> Self {
        Epilogue {
            add: Addend::Output,
            relu,
            upsample_log2: log2,
        }
    }
    /// `out = relu?(base + up(conv + bias))` out of place.
    pub const fn upsample_residual(base: &'a [f32], log2: u32, relu: bool) -> Self {
        Epilogue {
            add: Addend::Tensor(base),
            relu,
            upsample_log2: log2,
        }
    }
}

/// Runs the convolution `spec` on `input` (blocked layout, [`ConvSpec::in_shape`]) with
/// `packed` weights into `out` (blocked layout, [`ConvSpec::out_shape`] scaled by
/// `2^epi.upsample_log2`), with the fused epilogue. `scratch` must hold at least
/// [`ConvSpec::scratch_len`]`(ctx.threads())` floats (it may be empty for direct convs).
///
/// Splits the work over `ctx`'s pool by output rows / tile groups and output channel groups;
/// allocates nothing.
///
/// # Panics
/// If a buffer length does not match the spec.
pub fn conv(
    ctx: &Ctx,
    spec: &ConvSpec,
    input: &[f32],
    packed: &[f32],
    out: &mut [f32],
    epi: Epilogue<'_>,
    scratch: &mut [f32],
) {
    spec.validate();
    assert_eq!(input.len(), spec.in_shape().len(), "conv: input length");
    assert_eq!(
        packed.len(),
        spec.packed_len(),
        "conv: packed weights length"
    );
    assert!(
        scratch.len() >= spec.scratch_len(ctx.threads()),
        "conv: scratch length"
    );
    let sink = Out::new(spec, out, epi, packed);
    let ocb = spec.out_shape().blocks();
    let weights = packed[ocb * BLOCK..].as_ptr();
    match spec.algo {
        Algo::Direct => direct(ctx, spec, input.as_ptr(), weights, sink),
        _ => winograd::run(
            ctx,
            spec,
            input.as_ptr(),
            weights,
            sink,
            scratch.as_mut_ptr(),
        ),
    }
}

/// Where and how results are stored (the epilogue, lowered to raw pointers).
#[derive(Clone, Copy)]
pub(crate) struct Out {
    /// Output tensor (high resolution if `up > 0`).
    pub ptr: *mut f32,
    /// Shape of `ptr`'s tensor.
    pub shape: ActShape,
    /// Addend tensor (same shape as `ptr`'s), possibly `ptr` itself; used if `add`.
    pub res: *const f32,
    pub add: bool,
    pub relu: bool,
    pub up: u32,
    /// Bias, `ocb · 16` floats.
    pub bias: *const f32,
}

impl Out {
    /// The epilogue `epi` of `spec` writing into `out`, with the bias at the start of
    /// `packed` (`ocb · 16` floats). Checks the lengths of `out` and of the addend and writes
    /// the halo of a fresh output with zeros.
    ///
    /// # Panics
    /// If a buffer length does not match the spec.
    pub(crate) fn new(spec: &ConvSpec, out: &mut [f32], epi: Epilogue<'_>, packed: &[f32]) -> Out {
        let os = spec.out_shape();
        let u = epi.upsample_log2;
        assert!(u < 16, "conv: upsample factor");
        let hr = match (os.h().checked_mul(1 << u), os.w().checked_mul(1 << u)) {
            (Some(h), Some(w)) => ActShape::try_new(os.c(), h, w).ok(),
            _ => None,
        }
        .expect("conv: upsampled output too large");
        assert_eq!(out.len(), hr.len(), "conv: output length");
        assert!(
            packed.len() >= os.blocks() * BLOCK,
            "conv: packed bias length"
        );
        if let Addend::Tensor(r) = epi.add {
            assert_eq!(r.len(), hr.len(), "conv: addend length");
        }
        if !matches!(epi.add, Addend::Output) {
            zero_halo(hr, out);
        }
        let ptr = out.as_mut_ptr();
        let res = match epi.add {
            Addend::None => std::ptr::null(),
            Addend::Tensor(r) => r.as_ptr(),
            Addend::Output => ptr as *const f32,
        };
        Out {
            ptr,
            shape: hr,
            res,
            add: !matches!(epi.add, Addend::None),
            relu: epi.relu,
            up: u,
            bias: packed.as_ptr(),
        }
    }

    /// Stores the conv result `v` (bias not yet added) of output block `ob` at conv-resolution
    /// pixel `(y, x)`.
    ///
    /// # Safety
    /// `(ob, y, x)` is inside the conv's output and no other thread writes the same pixels.
    #[inline(always)]
    pub(crate) unsafe fn put<V: Vf>(&self, ob: usize, y: usize, x: usize, v: V) {
        // SAFETY: the caller guarantees the pixel is in bounds; `conv` checked every buffer's
        // length against the shapes, so every index below is inside its buffer.
        unsafe {
            let v = V::add(v, V::load(self.bias.add(ob * BLOCK)));
            if self.up == 0 {
                let o = self.shape.pixel(ob, y, x);
                let mut r = v;
                if self.add {
                    r = V::add(V::load(self.res.add(o)), r);
                }
                if self.relu {
                    r = V::relu(r);
                }
                V::store(self.ptr.add(o), r);
            } else {
                let f = 1usize << self.up;
                for dy in 0..f {
                    let o = self.shape.pixel(ob, (y << self.up) + dy, x << self.up);
                    for dx in 0..f {
                        let o = o + dx * BLOCK;
                        let mut r = v;
                        if self.add {
                            r = V::add(V::load(self.res.add(o)), r);
                        }
                        if self.relu {
                            r = V::relu(r);
                        }
                        V::store(self.ptr.add(o), r);
                    }
                }
            }
        }
    }
}

/// The microkernel: `NP` output pixels × `NB` output blocks accumulated in registers.
///
/// `inp` points at the input of the first pixel (all tap offsets relative to it), consecutive
/// pixels are `pix` floats apart, input channel blocks `icb_stride` apart; the last block has
/// `last_ic` real channels. `w` points at the weights of the first of the `NB` blocks for
/// `(icb 0, tap 0, ic 0)`; consecutive input channels are `w_row` floats apart and the `16`
/// rows of a tap are contiguous (`[icb][tap][16][.. w_row ..]`).
///
/// Callers pass `pix` as a constant where they can (`16 · stride` for a stride known at
/// compile time, 16 for the Winograd GEMM): inlined, every broadcast then addresses its pixel
/// with an immediate offset from one base register, instead of one register per pixel (with
/// 12–16 pixels those registers spill). Full input blocks run a 16-step loop with a constant
/// trip count, which LLVM unrolls.
///
/// # Safety
/// All pointers and strides address valid memory for every access described above.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn microkernel<V: Vf, const NB: usize, const NP: usize>(
    inp: *const f32,
    pix: usize,
    taps: &[usize],
    n_icb: usize,
    icb_stride: usize,
    last_ic: usize,
    w: *const f32,
    w_row: usize,
) -> [[V; NB]; NP] {
    // SAFETY: the caller guarantees every address formed here is valid (see the doc).
    unsafe {
        let mut acc = [[V::zero(); NB]; NP];
        let mut wp = w;
        for ib in 0..n_icb {
            let nic = if ib + 1 == n_icb { last_ic } else { BLOCK };
            let base = inp.add(ib * icb_stride);
            for &t in taps {
                let ip = base.add(t);
                if nic == BLOCK {
                    for ic in 0..BLOCK {
                        fma_step(&mut acc, ip.add(ic), pix, wp.add(ic * w_row));
                    }
                } else {
                    for ic in 0..nic {
                        fma_step(&mut acc, ip.add(ic), pix, wp.add(ic * w_row));
                    }
                }
                wp = wp.add(BLOCK * w_row);
            }
        }
        acc
    }
}

/// [`microkernel`] for `NP` pixels at any offsets `offs` (floats from `inp`) instead of
/// `pix` apart: a strip that wraps from the end of one output row to the start of the next.
/// The sums are accumulated in the same order as by [`microkernel`], so every output has the
/// same bits whichever of the two computes it.
///
/// # Safety
/// As [`microkernel`], with `inp + offs[p]` in place of `inp + p · pix`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn microkernel_at<V: Vf, const NB: usize, const NP: usize>(
    inp: *const f32,
    offs: &[usize; NP],
    taps: &[usize],
    n_icb: usize,
    icb_stride: usize,
    last_ic: usize,
    w: *const f32,
    w_row: usize,
) -> [[V; NB]; NP] {
    // SAFETY: the caller guarantees every address formed here is valid (see the doc).
    unsafe {
        let mut acc = [[V::zero(); NB]; NP];
        let mut wp = w;
        for ib in 0..n_icb {
            let nic = if ib + 1 == n_icb { last_ic } else { BLOCK };
            let base = inp.add(ib * icb_stride);
            for &t in taps {
                let ip = base.add(t);
                if nic == BLOCK {
                    for ic in 0..BLOCK {
                        fma_step_at(&mut acc, ip.add(ic), offs, wp.add(ic * w_row));
                    }
                } else {
                    for ic in 0..nic {
                        fma_step_at(&mut acc, ip.add(ic), offs, wp.add(ic * w_row));
                    }
                }
                wp = wp.add(BLOCK * w_row);
            }
        }
        acc
    }
}

/// One input channel of [`microkernel`]: loads the `NB` weight vectors at `w`, then for each
/// pixel broadcasts its input (`x`, `x + pix`, …) and does its `NB` FMAs right away, so only
/// one broadcast is live at a time (`NB·NP + NB + 1` registers).
///
/// # Safety
/// `w` is valid for `NB · 16` floats, `x + p · pix` for every `p < NP`.
#[inline(always)]
unsafe fn fma_step<V: Vf, const NB: usize, const NP: usize>(
    acc: &mut [[V; NB]; NP],
    x: *const f32,
    pix: usize,
    w: *const f32,
) {
    // SAFETY: caller's contract.
    unsafe {
        let mut wv = [V::zero(); NB];
        for (b, wb) in wv.iter_mut().enumerate() {
            *wb = V::load(w.add(b * BLOCK));
        }
        for (p, ap) in acc.iter_mut().enumerate() {
            let xv = V::bcast(x.add(p * pix));
            for b in 0..NB {
                ap[b] = V::fma(xv, wv[b], ap[b]);
            }
        }
    }
}

/// [`fma_step`] for pixels at offsets `offs` from `x`.
///
/// # Safety
/// `w` is valid for `NB · 16` floats, `x + offs[p]` for every `p < NP`.
#[inline(always)]
unsafe fn fma_step_at<V: Vf, const NB: usize, const NP: usize>(
    acc: &mut [[V; NB]; NP],
    x: *const f32,
    offs: &[usize; NP],
    w: *const f32,
) {
    // SAFETY: caller's contract.
    unsafe {
        let mut wv = [V::zero(); NB];
        for (b, wb) in wv.iter_mut().enumerate() {
            *wb = V::load(w.add(b * BLOCK));
        }
        for (ap, &o) in acc.iter_mut().zip(offs) {
            let xv = V::bcast(x.add(o));
            for b in 0..NB {
                ap[b] = V::fma(xv, wv[b], ap[b]);
            }
        }
    }
}

/// A strip of `N` consecutive output pixels (or tiles) handled by one microkernel call.
pub(crate) trait Strip {
    /// Computes and stores the strip starting at `x0`, for the `NB` blocks starting at group
    /// block `sub`.
    ///
    /// # Safety
    /// `x0 + N` is within the row and `sub + NB` within the group.
    unsafe fn strip<V: Vf, const NB: usize, const N: usize>(&self, x0: usize, sub: usize);
}

/// Covers `n` pixels with strips of `NP`, then 8, 4, 2, 1.
///
/// # Safety
/// As [`Strip::strip`] for every strip.
#[inline(always)]
pub(crate) unsafe fn strips<S: Strip, V: Vf, const NB: usize, const NP: usize>(
    s: &S,
    n: usize,
    sub: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { strips_from::<S, V, NB, NP>(s, 0, n, sub) }
}

/// Covers pixels `x0..n` with strips of `NP`, then 8, 4, 2, 1.
///
/// # Safety
/// As [`Strip::strip`] for every strip.
#[inline(always)]
unsafe fn strips_from<S: Strip, V: Vf, const NB: usize, const NP: usize>(
    s: &S,
    x0: usize,
    n: usize,
    sub: usize,
) {
    // SAFETY: every strip stays within `x0..n` (caller's contract).
    unsafe {
        let mut x = x0;
        while x + NP <= n {
            s.strip::<V, NB, NP>(x, sub);
            x += NP;
        }
        while NP > 8 && x + 8 <= n {
            s.strip::<V, NB, 8>(x, sub);
            x += 8;
        }
        while NP > 4 && x + 4 <= n {
            s.strip::<V, NB, 4>(x, sub);
            x += 4;
        }
        while NP > 2 && x + 2 <= n {
            s.strip::<V, NB, 2>(x, sub);
            x += 2;
        }
        while x < n {
            s.strip::<V, NB, 1>(x, sub);
            x += 1;
        }
    }
}

/// Target number of tasks a direct conv is split into.
pub(crate) const TASKS_PER_CONV: usize = 8;

/// Everything a direct-conv task needs, as raw pointers.
struct DirectJob {
    inp: *const f32,
    ins: ActShape,
    w: *const f32,
    out: Out,
    stride: usize,
    pad: usize,
    h_out: usize,
    w_out: usize,
    taps: [usize; 81],
    n_taps: usize,
    n_icb: usize,
    last_ic: usize,
    ocb: usize,
    /// Floats per group block of weights (`n_icb · taps · 16 · 16`).
    w_block: usize,
    /// Output rows per task and tasks per channel group.
    rows_per_task: usize,
    row_chunks: usize,
    /// Rows outer, groups inner: for a large input (many input blocks, each a separate
    /// memory stream, more than the hardware prefetchers follow) read by many groups, each
    /// input row is fetched from memory once instead of once per group.
    rows_outer: bool,
}

// SAFETY: tasks only read `inp`/`w`/bias and write disjoint parts of `out` (a range of output
// rows of one channel group each), so sharing the job between pool threads is race-free.
unsafe impl Sync for DirectJob {}

/// One row strip context of a direct task; `S` is the stride when known at compile time (1
/// or 2, every HRNet conv), 0 otherwise (then `j.stride`).
struct DirectRow<'a, const S: usize> {
    j: &'a DirectJob,
    oy: usize,
    sb: usize,
    nbg: usize,
    /// Input at output pixel (oy, 0), tap (0, 0).
    ip: *const f32,
    /// Weights of the group.
    wg: *const f32,
}

impl<const S: usize> Strip for DirectRow<'_, S> {
    #[inline(always)]
    unsafe fn strip<V: Vf, const NB: usize, const N: usize>(&self, x0: usize, sub: usize) {
        let j = self.j;
        let pix = if S == 0 { j.stride } else { S } * BLOCK;
        // SAFETY: `x0 + N <= w_out`, so every input pixel read is inside the haloed input
        // (padding ≤ halo), and the weights of blocks `sub..sub + NB` are inside the group.
        unsafe {
            let acc = microkernel::<V, NB, N>(
                self.ip.add(x0 * pix),
                pix,
                &j.taps[..j.n_taps],
                j.n_icb,
                j.ins.block_stride(),
                j.last_ic,
                self.wg.add(sub * BLOCK),
                self.nbg * BLOCK,
            );
            for (p, ap) in acc.iter().enumerate() {
                for (b, &v) in ap.iter().enumerate() {
                    j.out.put(self.sb + sub + b, self.oy, x0 + p, v);
                }
            }
        }
    }
}

/// One direct task: output rows `r0..r1` (chunk `t % row_chunks`) of channel group
/// `t / row_chunks`, with `NB` blocks per microkernel call (`NB` divides the group size).
/// The rows are the inner loop, so the weights of `NB` blocks stay in L2 across them.
/// `S`: the stride if it is a compile-time constant, else 0 (see [`DirectRow`]).
#[inline(always)]
unsafe fn direct_task<V: Vf, const NB: usize, const NP: usize, const S: usize>(
    j: &DirectJob,
    t: usize,
) {
    let g = t / j.row_chunks;
    let chunk = t % j.row_chunks;
    let r0 = chunk * j.rows_per_task;
    let r1 = (r0 + j.rows_per_task).min(j.h_out);
    // SAFETY: forwarded contract.
    unsafe { direct_rows::<V, NB, NP, S>(j, g, r0, r1) }
}

/// Output rows `r0..r1` of channel group `g` (see [`direct_task`]).
#[inline(always)]
unsafe fn direct_rows<V: Vf, const NB: usize, const NP: usize, const S: usize>(
    j: &DirectJob,
    g: usize,
    r0: usize,
    r1: usize,
) {
    let (sb, nbg) = group(j.ocb, g);
    let col = super::HALO - j.pad;
    let wo = j.w_out;
    let stride = if S == 0 { j.stride } else { S };
    // Input at output pixel (oy, 0), tap (0, 0).
    let row_at = |oy: usize| {
        let row = oy * stride + super::HALO - j.pad;
        // SAFETY: `row`/`col` are inside the haloed input (padding ≤ halo).
        unsafe { j.inp.add(row * j.ins.row_stride() + col * BLOCK) }
    };
    let row_ctx = |oy: usize| DirectRow::<S> {
        j,
        oy,
        sb,
        nbg,
        ip: row_at(oy),
        // SAFETY: the group's weights start at `w_block · sb`, inside the packed buffer
        // checked by `conv`.
        wg: unsafe { j.w.add(j.w_block * sb) },
    };
    let mut sub = 0;
    while sub < nbg {
        // The rows' pixels one after the other in strips of `NP`; a strip that would cross
        // the end of a row wraps to the next one (`microkernel_at`), so narrow outputs (7, 14
        // or 28 pixels) need no short strips but at the very end.
        let (mut q, end) = (r0 * wo, r1 * wo);
        while q + NP <= end {
            let (oy, ox) = (q / wo, q % wo);
            // SAFETY: pixels `q..q + NP` are inside the conv's output; see `DirectRow`.
            unsafe {
                if ox + NP <= wo {
                    row_ctx(oy).strip::<V, NB, NP>(ox, sub);
                } else {
                    let base = row_at(oy);
                    let mut offs = [0usize; NP];
                    for (p, o) in offs.iter_mut().enumerate() {
                        let (dy, x) = ((ox + p) / wo, (ox + p) % wo);
                        *o = row_at(oy + dy).offset_from(base) as usize + x * stride * BLOCK;
                    }
                    let acc = microkernel_at::<V, NB, NP>(
                        base,
                        &offs,
                        &j.taps[..j.n_taps],
                        j.n_icb,
                        j.ins.block_stride(),
                        j.last_ic,
                        j.w.add(j.w_block * sb + sub * BLOCK),
                        nbg * BLOCK,
                    );
                    for (p, ap) in acc.iter().enumerate() {
                        let (dy, x) = ((ox + p) / wo, (ox + p) % wo);
                        for (b, &v) in ap.iter().enumerate() {
                            j.out.put(sb + sub + b, oy + dy, x, v);
                        }
                    }
                }
            }
            q += NP;
        }
        // Fewer than `NP` pixels left: short strips, row by row.
        while q < end {
            let (oy, ox) = (q / wo, q % wo);
            // SAFETY: pixels `ox..wo` of row `oy < r1` are inside the conv's output.
            unsafe { strips_from::<_, V, NB, NP>(&row_ctx(oy), ox, wo, sub) };
            q += wo - ox;
        }
        sub += NB;
    }
}

/// `direct_task::<V, NB, NP, S>` with `S` the stride when it is 1 or 2 (compile-time pixel
/// offsets), else 0.
macro_rules! by_stride {
    ($j:expr, $t:expr, $v:ty, $nb:literal, $np:literal) => {
        match $j.stride {
            1 => direct_task::<$v, $nb, $np, 1>($j, $t),
            2 => direct_task::<$v, $nb, $np, 2>($j, $t),
            _ => direct_task::<$v, $nb, $np, 0>($j, $t),
        }
    };
}

/// `direct_rows::<V, NB, NP, S>` over output rows `r0..r1` of group `g`, `S` as in
/// [`by_stride`].
macro_rules! rows_by_stride {
    ($j:expr, $g:expr, $r0:expr, $r1:expr, $v:ty, $nb:literal, $np:literal) => {
        match $j.stride {
            1 => direct_rows::<$v, $nb, $np, 1>($j, $g, $r0, $r1),
            2 => direct_rows::<$v, $nb, $np, 2>($j, $g, $r0, $r1),
            _ => direct_rows::<$v, $nb, $np, 0>($j, $g, $r0, $r1),
        }
    };
}

/// Rows-outer order (see [`DirectJob::rows_outer`]): task `t` is output rows
/// `t · rows_per_task..` of every group, row by row, each row through all groups, so one
/// input row is read from memory once and from cache by the other groups.
macro_rules! rows_outer_task {
    ($j:expr, $t:expr, |$g:ident, $oy:ident, $nbg:ident| $body:expr) => {{
        let r0 = $t * $j.rows_per_task;
        let r1 = (r0 + $j.rows_per_task).min($j.h_out);
        for $oy in r0..r1 {
            for $g in 0..n_groups($j.ocb) {
                let (_, $nbg) = group($j.ocb, $g);
                $body
            }
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn direct_task_avx512(j: &DirectJob, t: usize) {
    if j.rows_outer {
        // SAFETY: forwarded contract of `direct_rows`; AVX-512F is enabled here.
        unsafe {
            rows_outer_task!(j, t, |g, oy, nbg| match nbg {
                1 => rows_by_stride!(j, g, oy, oy + 1, Z, 1, 16),
                2 => rows_by_stride!(j, g, oy, oy + 1, Z, 2, 12),
                3 => rows_by_stride!(j, g, oy, oy + 1, Z, 3, 8),
                _ => rows_by_stride!(j, g, oy, oy + 1, Z, 4, 6),
            })
        }
        return;
    }
    let (_, nbg) = group(j.ocb, t / j.row_chunks);
    // SAFETY: forwarded contract of `direct_task`; AVX-512F is enabled here.
    unsafe {
        match nbg {
            1 => by_stride!(j, t, Z, 1, 16),
            2 => by_stride!(j, t, Z, 2, 12),
            3 => by_stride!(j, t, Z, 3, 8),
            _ => by_stride!(j, t, Z, 4, 6),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_task_avx2(j: &DirectJob, t: usize) {
    if j.rows_outer {
        // SAFETY: forwarded contract of `direct_rows`; AVX2 and FMA are enabled here.
        unsafe {
            rows_outer_task!(j, t, |g, oy, _nbg| rows_by_stride!(
                j,
                g,
                oy,
                oy + 1,
                Y,
                1,
                6
            ))
        }
        return;
    }
    // SAFETY: forwarded contract of `direct_task`; AVX2 and FMA are enabled here.
    unsafe { by_stride!(j, t, Y, 1, 6) }
}

/// Same register blocking as AVX-512 (so this generic code is tested on any machine).
fn direct_task_portable(j: &DirectJob, t: usize) {
    if j.rows_outer {
        // SAFETY: forwarded contract of `direct_rows` (checked by `conv`).
        unsafe {
            rows_outer_task!(j, t, |g, oy, nbg| match nbg {
                1 => rows_by_stride!(j, g, oy, oy + 1, P, 1, 16),
                2 => rows_by_stride!(j, g, oy, oy + 1, P, 2, 12),
                3 => rows_by_stride!(j, g, oy, oy + 1, P, 3, 8),
                _ => rows_by_stride!(j, g, oy, oy + 1, P, 4, 6),
            })
        }
        return;
    }
    let (_, nbg) = group(j.ocb, t / j.row_chunks);
    // SAFETY: forwarded contract of `direct_task` (checked by `conv`).
    unsafe {
        match nbg {
            1 => by_stride!(j, t, P, 1, 16),
            2 => by_stride!(j, t, P, 2, 12),
            3 => by_stride!(j, t, P, 3, 8),
            _ => by_stride!(j, t, P, 4, 6),
        }
    }
}

/// Whether a direct conv runs rows outer (see [`DirectJob::rows_outer`]): at least 16 input
/// blocks (streams), at least 4 output groups re-reading them, and an input too large for L2
/// (over 2 MiB). The loop order changes no arithmetic: every output is the same sum.
fn rows_outer(j: &DirectJob) -> bool {
    j.n_icb >= 16 && n_groups(j.ocb) >= 4 && j.ins.len() * 4 > (2 << 20)
}

fn direct(ctx: &Ctx, spec: &ConvSpec, inp: *const f32, w: *const f32, out: Out) {
    let ins = spec.in_shape();
    let k = spec.k;
    let mut taps = [0usize; 81];
    for ky in 0..k {
        for kx in 0..k {
            taps[ky * k + kx] = ky * ins.row_stride() + kx * BLOCK;
        }
    }
    let n_icb = ins.blocks();
    let j = DirectJob {
        inp,
        ins,
        w,
        out,
        stride: spec.stride,
        pad: spec.pad,
        h_out: spec.h_out(),
        w_out: spec.w_out(),
        taps,
        n_taps: k * k,
        n_icb,
        last_ic: spec.cin - (n_icb - 1) * BLOCK,
        ocb: spec.out_shape().blocks(),
        w_block: n_icb * k * k * BLOCK * BLOCK,
        rows_per_task: 0,
        row_chunks: 0,
        rows_outer: false,
    };
    // At least ~8 tasks per conv (both cores busy, dynamic balance), as few rows per task
    // as that allows... but no more tasks than needed: each task streams its group's weights.
    let (h_out, ng) = (j.h_out, n_groups(j.ocb));
    let mut j = j;
    let n_tasks = if rows_outer(&j) {
        j.rows_outer = true;
        j.rows_per_task = h_out.div_ceil(TASKS_PER_CONV * 4).max(1);
        j.row_chunks = h_out.div_ceil(j.rows_per_task);
        j.row_chunks
    } else {
        let chunks = TASKS_PER_CONV.div_ceil(ng).clamp(1, h_out);
        j.rows_per_task = h_out.div_ceil(chunks);
        j.row_chunks = h_out.div_ceil(j.rows_per_task);
        ng * j.row_chunks
    };
    let isa = ctx.isa();
    ctx.pool().run(n_tasks, &|t, _| match isa {
        // SAFETY: `ctx` only holds available instruction sets; `conv` checked the buffers.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { direct_task_avx512(&j, t) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { direct_task_avx2(&j, t) },
        _ => direct_task_portable(&j, t),
    });
}
