//! The bf16 direct convolution: bf16 weights and inputs, f32 accumulation, f32 epilogues.
//!
//! Activations stay f32 in the blocked layout between layers (see [`super::layout`]); each
//! call first converts its input to bf16 pairs (round to nearest even, as `VCVTNE2PS2BF16`)
//! into `scratch`, laid out `[ceil(cin/16)][h + 2][w + 2][8 pairs]` (halo included, padding
//! channels written as zeros), then runs a register-blocked microkernel like the f32 direct
//! kernel's: `NB` output blocks × `NP` output pixels of f32 accumulators, one broadcast bf16
//! pair of input channels times one vector of 16 weight pairs per `VDPBF16PS`. The epilogue
//! (bias, residual or accumulation, nearest upsampling, ReLU) is the f32 kernels' own.
//!
//! Packed weights ([`pack_bf16`], [`bf16_packed_len`] words of an `f32` buffer, so they live
//! in the same weight buffer as f32 convs): the bias as `ceil(cout/16)·16` f32, then, per
//! output-channel group of `nb` blocks (the f32 kernels' groups),
//! `[icb][tap][8 pairs][nb][16 output channels]` words, each holding the bf16 pair of input
//! channels `(2p, 2p + 1)` (see [`super::bf16`]) as raw bits. **These words are bit
//! containers, never f32 values: copy them, never compute with them.**
//!
//! Every output lane is `acc = 0; for icb, for tap (ky, kx), for pair p: acc = VDPBF16PS(acc,
//! weight pair, input pair)`, then `+ bias`, `+ addend`, ReLU in f32. The AVX512-BF16 path
//! and the portable path ([`Bf16Isa`]) compute exactly this, so they agree bit for bit; the
//! portable path emulates the instruction with [`super::bf16::dpbf16_lane`]. Before the
//! AVX512-BF16 path serves its first call in a process it is run on a small fixed problem
//! and compared bit for bit with the portable path ([`SelfCheck`]); on a mismatch the process
//! uses the portable path and prints one warning.
//!
//! Speed (`kernel_bench --bf16`, one Zen 4 core, cold weights): 130–200 GFLOP/s, 0.54× the
//! time of the f32 direct kernel over W32's convs, but 0.92× the f32 engine's, whose 3×3
//! stride-1 convs use Winograd F(4×4) (effective 190–230 GFLOP/s); taking the faster of the
//! two per conv gives 0.82×. A bf16 Winograd (f32 transforms, bf16 products) is not offered
//! yet, nor an AMX (`TDPBF16PS`) path; the latter's emulation is [`super::bf16::tdpbf16`].

use super::bf16::{dpbf16_lane, f32_to_bf16, has_avx512bf16};
use super::conv::{group, n_groups, strips, ConvSpec, Epilogue, Out, Strip, TASKS_PER_CONV};
use super::layout::{ActShape, BLOCK, HALO};
#[cfg(target_arch = "x86_64")]
use super::simd::Z;
use super::simd::{Vf, P};
use super::{Ctx, Isa};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// bf16 pairs per channel block.
const PAIRS: usize = BLOCK / 2;

/// Numeric precision of a convolution's weights and inner products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 weights and arithmetic ([`super::conv()`]).
    F32,
    /// bf16 weights and inputs, f32 accumulation and epilogue ([`conv_bf16`]).
    Bf16,
}

/// Bytes of packed weights (bias included) of `spec` at `precision`: the f32 form for the
/// spec's algorithm, or the bf16 direct form.
pub const fn packed_bytes(spec: &ConvSpec, precision: Precision) -> usize {
    4 * match precision {
        Precision::F32 => spec.packed_len(),
        Precision::Bf16 => bf16_packed_len(spec),
    }
}

/// Length in f32 words of the bf16 packed weights and bias of `spec` (any algorithm field:
/// the bf16 kernel is always direct).
pub const fn bf16_packed_len(spec: &ConvSpec) -> usize {
    let ocb = spec.cout.div_ceil(BLOCK);
    let icb = spec.cin.div_ceil(BLOCK);
    ocb * BLOCK + ocb * BLOCK * icb * spec.k * spec.k * PAIRS
}

/// Length in f32 words of the scratch memory [`conv_bf16`] needs (the input as bf16 pairs;
/// the same for any number of threads).
pub const fn bf16_scratch_len(spec: &ConvSpec) -> usize {
    spec.in_shape().len() / 2
}

/// Packs OIHW weights (`cout · cin · k · k` floats, BatchNorm already folded, in f32 or
/// better rounded once to f32) rounded to bf16 (nearest even) and an optional f32 bias into
/// `packed` ([`bf16_packed_len`] words; layout in the module doc). Done once at load time.
///
/// # Panics
/// If a length does not match.
pub fn pack_bf16(spec: &ConvSpec, weight: &[f32], bias: Option<&[f32]>, packed: &mut [f32]) {
    let (cin, cout, taps) = (spec.cin, spec.cout, spec.k * spec.k);
    assert_eq!(weight.len(), cout * cin * taps, "pack_bf16: weight length");
    assert_eq!(
        packed.len(),
        bf16_packed_len(spec),
        "pack_bf16: packed length"
    );
    let (icb, ocb) = (cin.div_ceil(BLOCK), cout.div_ceil(BLOCK));
    packed.fill(0.0);
    if let Some(b) = bias {
        assert_eq!(b.len(), cout, "pack_bf16: bias length");
        packed[..cout].copy_from_slice(b);
    }
    let body = &mut packed[ocb * BLOCK..];
    let w = |oc: usize, ic: usize, t: usize| -> u32 {
        if oc < cout && ic < cin {
            u32::from(f32_to_bf16(weight[(oc * cin + ic) * taps + t]))
        } else {
            0
        }
    };
    for g in 0..n_groups(ocb) {
        let (sb, nb) = group(ocb, g);
        let base = icb * taps * PAIRS * BLOCK * sb;
        for ib in 0..icb {
            for t in 0..taps {
                for p in 0..PAIRS {
                    let ic = ib * BLOCK + 2 * p;
                    for b in 0..nb {
                        for l in 0..BLOCK {
                            let oc = (sb + b) * BLOCK + l;
                            let idx = base + (((ib * taps + t) * PAIRS + p) * nb + b) * BLOCK + l;
                            body[idx] = f32::from_bits(w(oc, ic, t) | w(oc, ic + 1, t) << 16);
                        }
                    }
                }
            }
        }
    }
}

/// The kernel a bf16 convolution runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bf16Isa {
    /// AVX-512F + AVX512-BF16 (`VDPBF16PS`).
    Avx512Bf16,
    /// Plain Rust emulating `VDPBF16PS` bit for bit (any CPU).
    Portable,
}

impl Bf16Isa {
    /// All bf16 kernels, best first.
    pub const ALL: [Bf16Isa; 2] = [Bf16Isa::Avx512Bf16, Bf16Isa::Portable];

    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Isa::Avx512Bf16 => has_avx512bf16(),
            Bf16Isa::Portable => true,
        }
    }

    /// The best bf16 kernel this CPU has (before the self-check).
    pub fn detect() -> Bf16Isa {
        Bf16Isa::ALL
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Bf16Isa::Portable)
    }

    /// Parses an `HRNET_ISA` value: `avx512bf16` (also `avx512`, `avx512f`) or `portable`
    /// (also `avx2`, `scalar`: instruction sets without bf16 arithmetic).
    pub fn parse(s: &str) -> Option<Bf16Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512bf16" | "avx512" | "avx512f" => Some(Bf16Isa::Avx512Bf16),
            "portable" | "scalar" | "avx2" => Some(Bf16Isa::Portable),
            _ => None,
        }
    }

    /// The kernel requested for this process: `HRNET_ISA` if it names an available one (else
    /// the best available below the request), else [`Bf16Isa::detect`]. Not yet
    /// self-checked: see [`Bf16Isa::active`].
    pub fn requested() -> Bf16Isa {
        let best = Bf16Isa::detect();
        match std::env::var("HRNET_ISA")
            .ok()
            .as_deref()
            .and_then(Bf16Isa::parse)
        {
            Some(req) => Bf16Isa::ALL
                .into_iter()
                .skip_while(|i| *i != req)
                .find(|i| i.is_available())
                .unwrap_or(best),
            None => best,
        }
    }

    /// [`Bf16Isa::requested`] after the process's self-check ([`SelfCheck::resolve`]): the
    /// kernel [`conv_bf16`] will really use. Call it at load time so that the self-check
    /// (which allocates) does not happen during the first inference.
    pub fn active() -> Bf16Isa {
        SelfCheck::process().resolve(Bf16Isa::requested())
    }
}

/// The self-check of the hardware bf16 kernels: before a hardware kernel serves its first
/// call, it runs two small fixed convolutions (odd channel counts, several register blockings,
/// every epilogue part), and its output must equal the portable path's bit for bit.
/// Otherwise the portable path is used instead and one warning is printed.
#[derive(Debug)]
pub struct SelfCheck {
    avx512bf16: OnceLock<bool>,
    inject_fault: bool,
    warnings: AtomicUsize,
}

impl Default for SelfCheck {
    fn default() -> Self {
        SelfCheck::new()
    }
}

impl SelfCheck {
    /// A check not run yet.
    pub const fn new() -> SelfCheck {
        SelfCheck {
            avx512bf16: OnceLock::new(),
            inject_fault: false,
            warnings: AtomicUsize::new(0),
        }
    }

    /// Test hook: a check whose hardware results are corrupted (one bit of one output)
    /// before the comparison, so that it fails wherever the hardware kernel exists.
    pub const fn with_injected_fault() -> SelfCheck {
        SelfCheck {
            avx512bf16: OnceLock::new(),
            inject_fault: true,
            warnings: AtomicUsize::new(0),
        }
    }

    /// The process-wide check [`conv_bf16`] uses.
    pub fn process() -> &'static SelfCheck {
        static PROCESS: SelfCheck = SelfCheck::new();
        &PROCESS
    }

    /// The kernel to run for `requested`: itself if it is portable, or a hardware kernel that
    /// is available and passed the check (run once, at the first call), else
    /// [`Bf16Isa::Portable`].
    pub fn resolve(&self, requested: Bf16Isa) -> Bf16Isa {
        match requested {
            Bf16Isa::Portable => Bf16Isa::Portable,
            Bf16Isa::Avx512Bf16 => {
                let ok = requested.is_available()
                    && *self.avx512bf16.get_or_init(|| self.run(requested));
                if ok {
                    requested
                } else {
                    Bf16Isa::Portable
                }
            }
        }
    }

    /// Number of warnings printed (0 or 1 per hardware kernel).
    pub fn warnings(&self) -> usize {
        self.warnings.load(Ordering::Relaxed)
    }

    fn run(&self, isa: Bf16Isa) -> bool {
        match self_check(isa, self.inject_fault) {
            Ok(()) => true,
            Err(what) => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "hrnet: warning: the {isa:?} bf16 kernel disagrees with its emulation on \
                     the self-check ({what}); using the portable bf16 kernel (same results, \
                     slower)"
                );
                false
            }
        }
    }
}

/// Runs the fixed problems with `isa` and with the portable path; the first differing
/// output, if any. `inject_fault` flips the lowest bit of one output of `isa` first.
fn self_check(isa: Bf16Isa, inject_fault: bool) -> Result<(), String> {
    let ctx = Ctx::with_isa(1, Isa::Portable);
    // (spec, upsample log2, residual): 37 → 40 3×3 (one group of 3 blocks, 8 + 1 pixel
    // strips), 20 → 80 1×1 ×2 upsampled (groups of 3 and 2 blocks), 18 → 17 3×3 stride 2.
    let problems = [
        (ConvSpec::new(37, 40, 5, 9, 3, 1, 1), 0, true),
        (ConvSpec::new(20, 80, 3, 17, 1, 1, 0), 1, false),
        (ConvSpec::new(18, 17, 7, 6, 3, 2, 1), 0, false),
    ];
    for (n, (spec, u, residual)) in problems.into_iter().enumerate() {
        let spec = spec.with_algo(super::Algo::Direct);
        let mut seed = 0x9e37_79b9u32 ^ n as u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Mantissas with low bits set (rounding ties and near-ties), exponents ±8.
            f32::from_bits((seed & 0x807f_ffff) | ((119 + (seed >> 24) % 16) << 23))
        };
        let ins = spec.in_shape();
        let os = spec.out_shape();
        let hr = ActShape::new(os.c, os.h << u, os.w << u);
        let input: Vec<f32> = (0..ins.len()).map(|_| next()).collect();
        let mut input = input;
        super::zero_halo(ins, &mut input);
        let weight: Vec<f32> = (0..spec.cout * spec.cin * spec.k * spec.k)
            .map(|_| next())
            .collect();
        let bias: Vec<f32> = (0..spec.cout).map(|_| next()).collect();
        let addend: Vec<f32> = (0..hr.len()).map(|_| next()).collect();
        let mut packed = vec![0.0; bf16_packed_len(&spec)];
        pack_bf16(&spec, &weight, Some(&bias), &mut packed);
        let mut scratch = vec![0.0; bf16_scratch_len(&spec)];
        let mut outs = [Bf16Isa::Portable, isa].map(|kernel| {
            let mut out = addend.clone();
            let epi = match (residual, u) {
                (true, _) => Epilogue::residual(&addend, true),
                (false, 0) => Epilogue::plain(false),
                (false, u) => Epilogue::upsample_accumulate(u, true),
            };
            run(
                &ctx,
                kernel,
                &spec,
                &input,
                &packed,
                &mut out,
                epi,
                &mut scratch,
            );
            out
        });
        if inject_fault {
            let i = hr.pixel(0, 0, 0);
            outs[1][i] = f32::from_bits(outs[1][i].to_bits() ^ 1);
        }
        let [want, got] = &outs;
        if let Some(i) = (0..want.len()).find(|&i| want[i].to_bits() != got[i].to_bits()) {
            return Err(format!(
                "{spec:?}, output word {i}: {:#010x}, expected {:#010x}",
                got[i].to_bits(),
                want[i].to_bits()
            ));
        }
    }
    Ok(())
}

/// Runs the bf16 convolution `spec` on `input` (f32, blocked layout, [`ConvSpec::in_shape`])
/// with `packed` weights ([`pack_bf16`]) into `out` (f32, blocked, [`ConvSpec::out_shape`]
/// scaled by `2^epi.upsample_log2`) with the fused f32 epilogue, on `isa` as resolved by
/// [`SelfCheck::process`] (an unavailable or failing hardware kernel runs the portable path,
/// with the same results). `scratch` holds at least [`bf16_scratch_len`] words. `spec.algo`
/// is ignored (always direct).
///
/// Splits the work over `ctx`'s pool like the f32 direct kernel; allocates nothing (after the
/// self-check, see [`Bf16Isa::active`]).
///
/// # Panics
/// If a buffer length does not match the spec.
#[allow(clippy::too_many_arguments)]
pub fn conv_bf16(
    ctx: &Ctx,
    isa: Bf16Isa,
    spec: &ConvSpec,
    input: &[f32],
    packed: &[f32],
    out: &mut [f32],
    epi: Epilogue<'_>,
    scratch: &mut [f32],
) {
    let isa = SelfCheck::process().resolve(isa);
    run(ctx, isa, spec, input, packed, out, epi, scratch);
}

/// [`conv_bf16`] on `isa` as given (which must be available).
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Ctx,
    isa: Bf16Isa,
    spec: &ConvSpec,
    input: &[f32],
    packed: &[f32],
    out: &mut [f32],
    epi: Epilogue<'_>,
    scratch: &mut [f32],
) {
    let spec = &spec.with_algo(super::Algo::Direct);
    spec.validate();
    assert!(isa.is_available(), "conv_bf16: {isa:?} is not available");
    let ins = spec.in_shape();
    assert_eq!(input.len(), ins.len(), "conv_bf16: input length");
    assert_eq!(
        packed.len(),
        bf16_packed_len(spec),
        "conv_bf16: packed weights length"
    );
    assert!(
        scratch.len() >= bf16_scratch_len(spec),
        "conv_bf16: scratch length"
    );
    let sink = Out::new(spec, out, epi, packed);
    let ocb = spec.out_shape().blocks();
    let n_icb = ins.blocks();
    let last_ic = spec.cin - (n_icb - 1) * BLOCK;
    let xb = scratch.as_mut_ptr().cast::<u32>();

    // 1. The input as bf16 pairs.
    let conv_job = Convert {
        src: input.as_ptr(),
        dst: xb,
        pixels: (ins.h + 2 * HALO) * (ins.w + 2 * HALO),
        n_icb,
        last_ic,
        chunks: TASKS_PER_CONV.div_ceil(n_icb),
    };
    ctx.pool().run(n_icb * conv_job.chunks, &|t, _| match isa {
        // SAFETY: the feature is available (checked above); `scratch` holds the whole
        // converted input and tasks write disjoint pixel ranges.
        #[cfg(target_arch = "x86_64")]
        Bf16Isa::Avx512Bf16 => unsafe { convert_avx512bf16(&conv_job, t) },
        // SAFETY: as above.
        _ => unsafe { convert_task(&conv_job, t) },
    });

    // 2. The convolution.
    let k = spec.k;
    let mut taps = [0usize; 81];
    let row_words = (ins.w + 2 * HALO) * PAIRS;
    for ky in 0..k {
        for kx in 0..k {
            taps[ky * k + kx] = ky * row_words + kx * PAIRS;
        }
    }
    let h_out = spec.h_out();
    let ng = n_groups(ocb);
    let chunks = TASKS_PER_CONV.div_ceil(ng).clamp(1, h_out);
    let rows_per_task = h_out.div_ceil(chunks);
    let j = Job {
        inp: xb,
        row_words,
        block_words: (ins.h + 2 * HALO) * row_words,
        w: packed[ocb * BLOCK..].as_ptr().cast::<u32>(),
        out: sink,
        stride: spec.stride,
        pad: spec.pad,
        h_out,
        w_out: spec.w_out(),
        taps,
        n_taps: k * k,
        n_icb,
        last_pairs: last_ic.div_ceil(2),
        ocb,
        w_block: n_icb * k * k * PAIRS * BLOCK,
        rows_per_task,
        row_chunks: h_out.div_ceil(rows_per_task),
    };
    ctx.pool().run(ng * j.row_chunks, &|t, _| match isa {
        // SAFETY: the feature is available (checked above); the buffers were checked.
        #[cfg(target_arch = "x86_64")]
        Bf16Isa::Avx512Bf16 => unsafe { task_avx512bf16(&j, t) },
        _ => task_portable(&j, t),
    });
}

/// The input conversion: task `t` converts a range of pixels of one channel block.
struct Convert {
    src: *const f32,
    dst: *mut u32,
    /// Pixels per channel block, halo included.
    pixels: usize,
    n_icb: usize,
    /// Real channels of the last block.
    last_ic: usize,
    /// Tasks per channel block.
    chunks: usize,
}

// SAFETY: tasks read the input and write disjoint pixel ranges of the converted copy.
unsafe impl Sync for Convert {}

impl Convert {
    /// `(block, first pixel, end pixel, real channels)` of task `t`.
    fn range(&self, t: usize) -> (usize, usize, usize, usize) {
        let (cb, c) = (t / self.chunks, t % self.chunks);
        let per = self.pixels.div_ceil(self.chunks).next_multiple_of(2);
        let p0 = (c * per).min(self.pixels);
        let p1 = (p0 + per).min(self.pixels);
        let nic = if cb + 1 == self.n_icb {
            self.last_ic
        } else {
            BLOCK
        };
        (cb, p0, p1, nic)
    }
}

/// Portable conversion (`VCVTNE2PS2BF16` semantics, channels ≥ `nic` written as zeros).
///
/// # Safety
/// `t` is a task of `j`, whose pointers address the whole input and converted buffers.
unsafe fn convert_task(j: &Convert, t: usize) {
    let (cb, p0, p1, nic) = j.range(t);
    for p in p0..p1 {
        let px = cb * j.pixels + p;
        // SAFETY: `px` is a pixel of the tensor (caller's contract).
        unsafe {
            let src = j.src.add(px * BLOCK);
            let dst = j.dst.add(px * PAIRS);
            for i in 0..PAIRS {
                let x = |c: usize| if c < nic { *src.add(c) } else { 0.0 };
                *dst.add(i) =
                    u32::from(f32_to_bf16(x(2 * i))) | u32::from(f32_to_bf16(x(2 * i + 1))) << 16;
            }
        }
    }
}

/// AVX512-BF16 conversion: two pixels per `VCVTNE2PS2BF16`.
///
/// # Safety
/// As [`convert_task`]; AVX512-BF16 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_avx512bf16(j: &Convert, t: usize) {
    let (cb, p0, p1, nic) = j.range(t);
    let mask: __mmask16 = if nic == BLOCK { 0xffff } else { (1 << nic) - 1 };
    // SAFETY: every pixel addressed is in `p0..p1` of block `cb` (caller's contract).
    unsafe {
        let src = j.src.add(cb * j.pixels * BLOCK);
        let dst = j.dst.add(cb * j.pixels * PAIRS);
        let mut p = p0;
        while p + 2 <= p1 {
            let lo = _mm512_maskz_loadu_ps(mask, src.add(p * BLOCK));
            let hi = _mm512_maskz_loadu_ps(mask, src.add((p + 1) * BLOCK));
            let r = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dst.add(p * PAIRS).cast(),
                std::mem::transmute::<__m512bh, __m512i>(r),
            );
            p += 2;
        }
        if p < p1 {
            let lo = _mm512_maskz_loadu_ps(mask, src.add(p * BLOCK));
            let r = _mm512_cvtne2ps_pbh(_mm512_setzero_ps(), lo);
            let r = std::mem::transmute::<__m512bh, __m512i>(r);
            _mm256_storeu_si256(dst.add(p * PAIRS).cast(), _mm512_castsi512_si256(r));
        }
    }
}

/// 16 bf16 pairs (one per output channel) and the f32 accumulator they feed.
///
/// # Safety
/// Pointers are valid for 16 words (one for [`Dp::bcast`]); the implementation's instruction
/// set is available.
trait Dp: Copy {
    type Acc: Copy;
    unsafe fn zero() -> Self::Acc;
    unsafe fn load(p: *const u32) -> Self;
    unsafe fn bcast(p: *const u32) -> Self;
    /// `VDPBF16PS acc, w, x`.
    unsafe fn dp(acc: Self::Acc, w: Self, x: Self) -> Self::Acc;
    unsafe fn store(p: *mut f32, acc: Self::Acc);
}

/// AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Zb(__m512i);

#[cfg(target_arch = "x86_64")]
impl Dp for Zb {
    type Acc = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self {
        // SAFETY: `p` is valid for 16 words (trait contract).
        unsafe { Zb(_mm512_loadu_si512(p.cast())) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const u32) -> Self {
        // SAFETY: `p` is valid for one word (trait contract).
        unsafe { Zb(_mm512_set1_epi32(*p as i32)) }
    }
    #[inline(always)]
    unsafe fn dp(acc: __m512, w: Self, x: Self) -> __m512 {
        // SAFETY: AVX512-BF16 is available (trait contract); the casts only reinterpret.
        unsafe {
            _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512i, __m512bh>(w.0),
                std::mem::transmute::<__m512i, __m512bh>(x.0),
            )
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, acc: __m512) {
        // SAFETY: `p` is valid for 16 floats (trait contract).
        unsafe { _mm512_storeu_ps(p, acc) }
    }
}

/// Portable: the emulation, lane by lane.
#[derive(Clone, Copy)]
struct Pb([u32; 16]);

impl Dp for Pb {
    type Acc = [f32; 16];
    #[inline(always)]
    unsafe fn zero() -> [f32; 16] {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self {
        // SAFETY: `p` is valid for 16 words (trait contract).
        unsafe { Pb(p.cast::<[u32; 16]>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const u32) -> Self {
        // SAFETY: `p` is valid for one word (trait contract).
        unsafe { Pb([*p; 16]) }
    }
    #[inline(always)]
    unsafe fn dp(acc: [f32; 16], w: Self, x: Self) -> [f32; 16] {
        std::array::from_fn(|i| dpbf16_lane(acc[i], w.0[i], x.0[i]))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, acc: [f32; 16]) {
        // SAFETY: `p` is valid for 16 floats (trait contract).
        unsafe { p.cast::<[f32; 16]>().write_unaligned(acc) }
    }
}

/// Everything a conv task needs, as raw pointers (word units for the bf16 buffers).
struct Job {
    /// The converted input.
    inp: *const u32,
    row_words: usize,
    block_words: usize,
    w: *const u32,
    out: Out,
    stride: usize,
    pad: usize,
    h_out: usize,
    w_out: usize,
    taps: [usize; 81],
    n_taps: usize,
    n_icb: usize,
    /// Pairs of the last input channel block holding real channels.
    last_pairs: usize,
    ocb: usize,
    /// Words per group block of weights (`n_icb · taps · 8 · 16`).
    w_block: usize,
    rows_per_task: usize,
    row_chunks: usize,
}

// SAFETY: tasks only read the converted input, weights and bias and write disjoint parts of
// the output (a range of output rows of one channel group each).
unsafe impl Sync for Job {}

/// The microkernel: `NP` output pixels × `NB` output blocks of f32 accumulators over every
/// input channel pair and tap, in the order of the module doc.
///
/// # Safety
/// `inp` is the converted input at the first pixel's tap (0, 0), pixels `pix` words apart;
/// `w` the weights of the first of the `NB` blocks at (icb 0, tap 0, pair 0), pair rows
/// `w_row` words apart; all addresses formed are inside their buffers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn microkernel<D: Dp, const NB: usize, const NP: usize>(
    inp: *const u32,
    pix: usize,
    taps: &[usize],
    n_icb: usize,
    icb_stride: usize,
    last_pairs: usize,
    w: *const u32,
    w_row: usize,
) -> [[D::Acc; NB]; NP] {
    // SAFETY: the caller guarantees every address formed here is valid (see the doc).
    unsafe {
        let mut acc = [[D::zero(); NB]; NP];
        let mut wp = w;
        for ib in 0..n_icb {
            let np = if ib + 1 == n_icb { last_pairs } else { PAIRS };
            let base = inp.add(ib * icb_stride);
            for &t in taps {
                let ip = base.add(t);
                let mut wq = wp;
                for pr in 0..np {
                    let mut wv = [D::load(wq); NB];
                    for (b, wb) in wv.iter_mut().enumerate().skip(1) {
                        *wb = D::load(wq.add(b * BLOCK));
                    }
                    for (p, ap) in acc.iter_mut().enumerate() {
                        let x = D::bcast(ip.add(p * pix + pr));
                        for b in 0..NB {
                            ap[b] = D::dp(ap[b], wv[b], x);
                        }
                    }
                    wq = wq.add(w_row);
                }
                wp = wp.add(PAIRS * w_row);
            }
        }
        acc
    }
}

/// One output row of one channel group.
struct Row<'a, D> {
    j: &'a Job,
    oy: usize,
    sb: usize,
    nbg: usize,
    /// Converted input at output pixel (oy, 0), tap (0, 0).
    ip: *const u32,
    /// Weights of the group.
    wg: *const u32,
    dp: PhantomData<D>,
}

impl<D: Dp> Strip for Row<'_, D> {
    #[inline(always)]
    unsafe fn strip<V: Vf, const NB: usize, const N: usize>(&self, x0: usize, sub: usize) {
        let j = self.j;
        let pix = j.stride * PAIRS;
        // SAFETY: `x0 + N <= w_out`, so every input pixel read is inside the haloed input
        // (padding ≤ halo), and the weights of blocks `sub..sub + NB` are inside the group.
        unsafe {
            let acc = microkernel::<D, NB, N>(
                self.ip.add(x0 * pix),
                pix,
                &j.taps[..j.n_taps],
                j.n_icb,
                j.block_words,
                j.last_pairs,
                self.wg.add(sub * BLOCK),
                self.nbg * BLOCK,
            );
            let mut lanes = [0.0f32; BLOCK];
            for (p, ap) in acc.iter().enumerate() {
                for (b, &v) in ap.iter().enumerate() {
                    D::store(lanes.as_mut_ptr(), v);
                    j.out
                        .put(self.sb + sub + b, self.oy, x0 + p, V::load(lanes.as_ptr()));
                }
            }
        }
    }
}

/// One task: output rows of chunk `t % row_chunks` of channel group `t / row_chunks`, `NB`
/// blocks per microkernel call (`NB` divides the group size); `V` is the f32 vector type of
/// the epilogue.
///
/// # Safety
/// `t` is a task of `j`, whose buffers were checked by [`run`]; `D`'s and `V`'s instruction
/// sets are available.
#[inline(always)]
unsafe fn task<D: Dp, V: Vf, const NB: usize, const NP: usize>(j: &Job, t: usize) {
    let g = t / j.row_chunks;
    let chunk = t % j.row_chunks;
    let r0 = chunk * j.rows_per_task;
    let r1 = (r0 + j.rows_per_task).min(j.h_out);
    let (sb, nbg) = group(j.ocb, g);
    let col = HALO - j.pad;
    let mut sub = 0;
    while sub < nbg {
        for oy in r0..r1 {
            let row = oy * j.stride + HALO - j.pad;
            // SAFETY: `row`/`col` are inside the haloed input; the group's weights start at
            // `w_block · sb`, inside the packed buffer checked by `run`.
            unsafe {
                let r = Row::<D> {
                    j,
                    oy,
                    sb,
                    nbg,
                    ip: j.inp.add(row * j.row_words + col * PAIRS),
                    wg: j.w.add(j.w_block * sb),
                    dp: PhantomData,
                };
                strips::<_, V, NB, NP>(&r, j.w_out, sub);
            }
        }
        sub += NB;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,fma")]
unsafe fn task_avx512bf16(j: &Job, t: usize) {
    let (_, nbg) = group(j.ocb, t / j.row_chunks);
    // SAFETY: forwarded contract of `task`; AVX-512F and AVX512-BF16 are enabled here.
    unsafe {
        match nbg {
            1 => task::<Zb, Z, 1, 16>(j, t),
            2 => task::<Zb, Z, 2, 12>(j, t),
            3 => task::<Zb, Z, 3, 8>(j, t),
            _ => task::<Zb, Z, 4, 6>(j, t),
        }
    }
}

/// The same blocking as AVX512-BF16; the order of operations of every output lane is the
/// same whatever the blocking.
fn task_portable(j: &Job, t: usize) {
    let (_, nbg) = group(j.ocb, t / j.row_chunks);
    // SAFETY: forwarded contract of `task` (checked by `run`).
    unsafe {
        match nbg {
            1 => task::<Pb, P, 1, 16>(j, t),
            2 => task::<Pb, P, 2, 12>(j, t),
            3 => task::<Pb, P, 3, 8>(j, t),
            _ => task::<Pb, P, 4, 6>(j, t),
        }
    }
}
