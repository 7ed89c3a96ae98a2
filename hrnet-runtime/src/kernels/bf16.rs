//! bfloat16 numerics: conversion and a bit-exact emulation of the x86 bf16 dot-product
//! instructions, which the reduced-precision kernels ([`super::bf16_conv`]) and their
//! portable twins are built on.
//!
//! A bf16 value is the upper half of an f32 (1 sign, 8 exponent, 7 mantissa bits), stored
//! as `u16`; a *pair* is a `u32` holding element 0 in bits 15..0 and element 1 in bits 31..16
//! (the order of the dword elements of `VDPBF16PS` and `TDPBF16PS`).
//!
//! Semantics emulated here (Intel SDM, `VDPBF16PS` and `TDPBF16PS`; checked against the
//! hardware instruction by the tests of this module where the CPU has it):
//! - **Conversion** f32 → bf16 ([`f32_to_bf16`]) as `VCVTNEPS2BF16`: round to nearest even,
//!   denormal inputs become a zero of the same sign, NaN stays NaN (truncated, made quiet by
//!   setting mantissa bit 6), no exceptions, MXCSR ignored.
//! - **`VDPBF16PS`** ([`dpbf16`], one lane [`dpbf16_lane`]): per f32 lane
//!   `acc += a.hi · b.hi; acc += a.lo · b.lo`, each step one fused multiply-add (the bf16
//!   product is exact, the sum is rounded once) with round-to-nearest-even, denormal inputs
//!   (the bf16 elements and the accumulator) read as zero and denormal results written as
//!   zero — *tininess after rounding*, as x86 detects underflow — regardless of MXCSR. NaN
//!   results follow the SDM's priority table: a NaN of `a.lo`, else `b.lo`, else `a.hi`, else
//!   `b.hi`, else the accumulator, made quiet; an invalid operation (`∞ · 0`, `∞ − ∞`) without
//!   NaN operands yields the default NaN `0xFFC0_0000`.
//! - **`TDPBF16PS`** ([`tdpbf16`]): for each output element, two f32 partial sums starting
//!   at zero — one over the even (`lo`) and one over the odd (`hi`) bf16 elements of the K
//!   pairs of one instruction, each step an FMA as above — then `dest + (even + odd)`, each
//!   addition rounded (DAZ/FTZ, RNE). This is the order of the SDM's pseudo-code (its
//!   `temp1` of `colsb / 2` elements "prior to horizontal" add); it is *not* the order of
//!   `VDPBF16PS`, so an AMX engine and an AVX512-BF16 engine give different (each
//!   reproducible) results. Not checked on hardware here (no AMX on the development CPU).

/// bf16 bits → f32 (exact; denormals kept).
#[inline(always)]
pub const fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 → bf16 bits as `VCVTNEPS2BF16` (see the module doc): round to nearest even, denormals
/// to signed zero, NaN made quiet.
#[inline(always)]
pub const fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let exp = u & 0x7f80_0000;
    if exp == 0 {
        // Zero or denormal: a zero of the same sign.
        return ((u >> 16) & 0x8000) as u16;
    }
    if exp == 0x7f80_0000 {
        if u & 0x007f_ffff != 0 {
            return ((u >> 16) | 0x0040) as u16;
        }
        return (u >> 16) as u16;
    }
    // Round to nearest even by integer addition; a carry into the exponent is correct
    // (including overflow to infinity).
    let lsb = (u >> 16) & 1;
    ((u + 0x7fff + lsb) >> 16) as u16
}

/// Two f32 values → one bf16 pair (`lo` in bits 15..0, `hi` in bits 31..16).
#[inline(always)]
pub const fn pair(lo: f32, hi: f32) -> u32 {
    f32_to_bf16(lo) as u32 | (f32_to_bf16(hi) as u32) << 16
}

/// The default NaN x86 produces for an invalid operation.
const DEFAULT_NAN: u32 = 0xffc0_0000;

/// An f32 read with DAZ: denormals become a zero of the same sign.
#[inline(always)]
fn daz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// The bf16 element as an f32 read with DAZ.
#[inline(always)]
fn bf16_daz(b: u16) -> f32 {
    daz(bf16_to_f32(b))
}

/// `x` made quiet (mantissa bit 22 set).
#[inline(always)]
fn quiet(x: f32) -> f32 {
    f32::from_bits(x.to_bits() | 0x0040_0000)
}

/// One step `acc + x · y` as the bf16 dot-product instructions compute it: one rounding
/// (RNE), the result flushed to zero if tiny after rounding. `x` and `y` are bf16 values and
/// `acc` an f32, all already read with DAZ. NaN priority: `x`, then `y`, then `acc`.
#[inline(always)]
pub(crate) fn fma_step(acc: f32, x: f32, y: f32) -> f32 {
    // Fast path: the product of two bf16 values has at most 16 significant bits, so it is
    // exact in f32 unless it leaves the normal range; then `acc + p` rounded by IEEE f32
    // addition is the fused result, and it needs no flush when it is normal and finite.
    let p = x * y;
    let s = acc + p;
    if (p.is_normal() || x == 0.0 || y == 0.0)
        && s.is_finite()
        && (s == 0.0 || s.abs() > f32::MIN_POSITIVE)
    {
        return s;
    }
    fma_step_slow(acc, x, y)
}

/// [`fma_step`] for the rare cases: NaN, infinities, products outside the normal range,
/// results near the underflow threshold.
#[cold]
#[inline(never)]
fn fma_step_slow(acc: f32, x: f32, y: f32) -> f32 {
    for v in [x, y, acc] {
        if v.is_nan() {
            return quiet(v);
        }
    }
    let invalid_mul = (x.is_infinite() && y == 0.0) || (y.is_infinite() && x == 0.0);
    let p_inf = x.is_infinite() || y.is_infinite();
    if invalid_mul {
        return f32::from_bits(DEFAULT_NAN);
    }
    if p_inf {
        // An infinite product (exact: the other factor is not zero) plus the accumulator.
        let s = acc + x * y;
        return if s.is_nan() {
            f32::from_bits(DEFAULT_NAN)
        } else {
            s
        };
    }
    if acc.is_infinite() {
        // A finite product, even one beyond the f32 range, leaves an infinity unchanged.
        return acc;
    }
    // All finite. The product is exact in f64 (16 significant bits, exponent within f64's
    // range); the f64 sum of two values of at most 24 significant bits rounded again to 24
    // bits is the correctly rounded sum (53 ≥ 2·24 + 2), so only the final rounding to f32
    // with an unbounded exponent and the flush remain.
    let s = f64::from(acc) + f64::from(x) * f64::from(y);
    if s == 0.0 {
        // An exact zero: its sign follows IEEE addition, as f64 computes it.
        return s as f32;
    }
    let min_normal = f64::from(f32::MIN_POSITIVE);
    if s.abs() >= min_normal {
        // Normal range (or overflow to ±∞, also RNE): `as` rounds to nearest even.
        return s as f32;
    }
    // Below the normal range: round to 24 bits as if the exponent were unbounded (scale
    // into the normal range, exactly), then flush what is still tiny.
    let scaled = (s * 2f64.powi(64)) as f32;
    if f64::from(scaled.abs()) >= min_normal * 2f64.powi(64) {
        f32::MIN_POSITIVE.copysign(scaled)
    } else {
        0.0f32.copysign(scaled)
    }
}

/// One f32 lane of `VDPBF16PS`: `acc` plus the dot product of the bf16 pairs `a` and `b`
/// (high elements first, see the module doc).
#[inline(always)]
pub fn dpbf16_lane(acc: f32, a: u32, b: u32) -> f32 {
    let hi = fma_step(
        daz(acc),
        bf16_daz((a >> 16) as u16),
        bf16_daz((b >> 16) as u16),
    );
    fma_step(hi, bf16_daz(a as u16), bf16_daz(b as u16))
}

/// `VDPBF16PS` on 16 lanes (one `zmm`): `acc[i] += a[i] · b[i]` as bf16 pairs.
pub fn dpbf16(acc: [f32; 16], a: [u32; 16], b: [u32; 16]) -> [f32; 16] {
    std::array::from_fn(|i| dpbf16_lane(acc[i], a[i], b[i]))
}

/// One `TDPBF16PS` instruction on row-major tiles: `c` is `m × n` f32 (`c[i·n + j]`), `a` is
/// `m × k` pairs and `b` is `k × n` pairs (the "VNNI" layout: `b[p·n + j]` holds the
/// elements `2p` and `2p + 1` of column `j`). `k ≤ 16` and `n ≤ 16` for a real instruction
/// (tiles of at most 64 bytes per row); the emulation accepts any size, with the order of
/// one instruction (see the module doc).
///
/// # Panics
/// If a slice length does not match `m`, `n`, `k`.
pub fn tdpbf16(c: &mut [f32], a: &[u32], b: &[u32], m: usize, n: usize, k: usize) {
    assert_eq!(c.len(), m * n, "tdpbf16: c");
    assert_eq!(a.len(), m * k, "tdpbf16: a");
    assert_eq!(b.len(), k * n, "tdpbf16: b");
    for i in 0..m {
        for j in 0..n {
            let (mut even, mut odd) = (0.0f32, 0.0f32);
            for p in 0..k {
                let (x, y) = (a[i * k + p], b[p * n + j]);
                even = fma_step(even, bf16_daz(x as u16), bf16_daz(y as u16));
                odd = fma_step(odd, bf16_daz((x >> 16) as u16), bf16_daz((y >> 16) as u16));
            }
            let sum = fma_step(even, odd, 1.0);
            c[i * n + j] = fma_step(daz(c[i * n + j]), sum, 1.0);
        }
    }
}

/// The hardware `VDPBF16PS` (zmm form) on this CPU, if it has AVX512-BF16.
#[cfg(target_arch = "x86_64")]
pub fn dpbf16_hw(acc: [f32; 16], a: [u32; 16], b: [u32; 16]) -> Option<[f32; 16]> {
    #[target_feature(enable = "avx512bf16,avx512f")]
    unsafe fn run(acc: [f32; 16], a: [u32; 16], b: [u32; 16]) -> [f32; 16] {
        use std::arch::x86_64::*;
        // SAFETY: the arrays are 64 bytes each; AVX512-BF16 is enabled here and was checked
        // by the caller.
        unsafe {
            let r = _mm512_dpbf16_ps(
                _mm512_loadu_ps(acc.as_ptr()),
                std::mem::transmute::<[u32; 16], __m512bh>(a),
                std::mem::transmute::<[u32; 16], __m512bh>(b),
            );
            std::mem::transmute::<__m512, [f32; 16]>(r)
        }
    }
    if !has_avx512bf16() {
        return None;
    }
    // SAFETY: the feature was checked just above.
    Some(unsafe { run(acc, a, b) })
}

/// The hardware `VCVTNE2PS2BF16` (zmm form) on this CPU, if it has AVX512-BF16: 32 f32 →
/// 32 bf16.
#[cfg(target_arch = "x86_64")]
pub fn cvt_hw(x: [f32; 32]) -> Option<[u16; 32]> {
    #[target_feature(enable = "avx512bf16,avx512f")]
    unsafe fn run(x: [f32; 32]) -> [u16; 32] {
        use std::arch::x86_64::*;
        // SAFETY: `x` holds 32 floats; AVX512-BF16 is enabled here and was checked by the
        // caller. The intrinsic puts its second operand in the low half.
        unsafe {
            let r = _mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(x.as_ptr().add(16)),
                _mm512_loadu_ps(x.as_ptr()),
            );
            std::mem::transmute::<__m512bh, [u16; 32]>(r)
        }
    }
    if !has_avx512bf16() {
        return None;
    }
    // SAFETY: the feature was checked just above.
    Some(unsafe { run(x) })
}

/// Whether this CPU has AVX-512F and AVX512-BF16.
pub fn has_avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AMX-BF16 (`TDPBF16PS`) with tile support (CPUID leaf 7) and the OS
/// enabled the tile state (XCR0 bits 17 and 18). On Linux a process must still ask for the
/// tile data state before its first tile instruction: [`request_amx_permission`].
pub fn has_amx_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is read only if it exists.
        #[allow(unused_unsafe)]
        let (l1, l7) = unsafe {
            if __cpuid(0).eax < 7 {
                return false;
            }
            (__cpuid(1), __cpuid_count(7, 0))
        };
        let (amx_bf16, amx_tile, osxsave) = (1 << 22, 1 << 24, 1 << 27);
        if l7.edx & amx_bf16 == 0 || l7.edx & amx_tile == 0 || l1.ecx & osxsave == 0 {
            return false;
        }
        let (lo, _hi): (u32, u32);
        // SAFETY: XGETBV with ECX = 0 is valid when CPUID reports OSXSAVE (checked above).
        unsafe {
            std::arch::asm!(
                "xgetbv",
                in("ecx") 0u32,
                out("eax") lo,
                out("edx") _hi,
                options(nomem, nostack, preserves_flags)
            );
        }
        let tiles = 0b11 << 17;
        lo & tiles == tiles
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Linux: asks the kernel for permission to use the AMX tile data state in this process
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), required once before the first
/// tile instruction. `Err(errno)` where AMX is absent or the kernel refuses.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn request_amx_permission() -> Result<(), i64> {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with integer arguments; it reads and writes no user memory.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    if ret == 0 {
        Ok(())
    } else {
        Err(-ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic 64-bit generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 16
        }
    }

    /// bf16 values that exercise the edges: zeros, denormals, the smallest and largest
    /// normals, infinities, quiet and signalling NaNs, ones.
    const EDGE_BF16: [u16; 16] = [
        0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x8080, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc0,
        0xff81, 0x7f81, 0x3f80, 0xbf80, 0x3f81,
    ];
    /// f32 accumulators at the edges.
    const EDGE_F32: [u32; 14] = [
        0x0000_0000,
        0x8000_0000,
        0x0000_0001,
        0x807f_ffff,
        0x0080_0000,
        0x8080_0000,
        0x0080_0001,
        0x7f7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffc1_2345,
        0x3f80_0000,
    ];

    /// A random bf16 whose exponent is often near the edges of the range.
    fn rand_bf16(r: &mut Rng) -> u16 {
        let v = r.next();
        let sign = (v & 1) as u16;
        let exp = match (v >> 1) % 8 {
            0 => 0,
            1 => 255,
            2 => 1 + (v >> 8) % 4,
            3 => 250 + (v >> 8) % 5,
            4 => 60 + (v >> 8) % 8, // products near the f32 underflow threshold
            _ => 110 + (v >> 8) % 36,
        } as u16;
        let mant = ((v >> 20) & 0x7f) as u16;
        sign << 15 | exp << 7 | mant
    }

    fn rand_f32(r: &mut Rng) -> u32 {
        let v = r.next();
        let sign = (v & 1) as u32;
        let exp = match (v >> 1) % 8 {
            0 => 0,
            1 => 255,
            2 => 1 + (v >> 8) % 4,
            3 => 250 + (v >> 8) % 5,
            _ => 110 + (v >> 8) % 36,
        } as u32;
        sign << 31 | exp << 23 | ((v >> 20) as u32 & 0x7f_ffff)
    }

    fn bits(x: [f32; 16]) -> [u32; 16] {
        x.map(f32::to_bits)
    }

    #[test]
    fn conversion_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3·2^-8 is a tie between 1 + 2^-7 (odd) and 1 + 2^-6: to even (up).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(-f32::MAX), 0xff80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_0001)), 0x0000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x807f_ffff)), 0x8000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::from_bits(0xffff_ffff)), 0xffff);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn conversion_matches_hardware() {
        let Some(_) = cvt_hw([0.0; 32]) else {
            eprintln!("no AVX512-BF16 on this CPU: conversion checked against the spec only");
            return;
        };
        let mut r = Rng(7);
        let mut checked = 0;
        // Every exponent and sign with random mantissas, plus ties and the edges.
        let mut xs: Vec<u32> = (0..1u32 << 9)
            .flat_map(|se| {
                let m = r.next() as u32 & 0x7f_ffff;
                [
                    se << 23 | m,
                    se << 23 | 0x8000,
                    se << 23 | 0x1_8000,
                    se << 23 | 0x7f_ffff,
                ]
            })
            .collect();
        xs.extend(EDGE_F32);
        xs.extend((0..100_000).map(|_| rand_f32(&mut r)));
        for chunk in xs.chunks(32) {
            let mut x = [0.0f32; 32];
            for (d, s) in x.iter_mut().zip(chunk) {
                *d = f32::from_bits(*s);
            }
            let hw = cvt_hw(x).unwrap();
            for i in 0..32 {
                assert_eq!(hw[i], f32_to_bf16(x[i]), "convert {:#010x}", x[i].to_bits());
                checked += 1;
            }
        }
        assert!(checked > 100_000);
    }

    /// The emulation against `VDPBF16PS` on this CPU: every edge value in every position,
    /// then random values concentrated near the edges of the range, then cancellations and
    /// rounding ties.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dpbf16_matches_hardware() {
        if dpbf16_hw([0.0; 16], [0; 16], [0; 16]).is_none() {
            eprintln!("no AVX512-BF16 on this CPU: the emulation is checked against the spec only");
            return;
        }
        let mut cases: Vec<(u32, u32, u32)> = Vec::new();
        for &acc in &EDGE_F32 {
            for &a in &EDGE_BF16 {
                for &b in &EDGE_BF16 {
                    for &o in &[0x3f80u16, 0x0000, 0x7fc1] {
                        // Edge values in the high and in the low element.
                        cases.push((
                            acc,
                            u32::from(a) << 16 | u32::from(o),
                            u32::from(b) << 16 | 0x3f80,
                        ));
                        cases.push((
                            acc,
                            u32::from(o) << 16 | u32::from(a),
                            0x3f80 << 16 | u32::from(b),
                        ));
                        cases.push((
                            acc,
                            u32::from(a) << 16 | u32::from(a),
                            u32::from(b) << 16 | u32::from(b),
                        ));
                    }
                }
            }
        }
        let mut r = Rng(11);
        for _ in 0..400_000 {
            let a = u32::from(rand_bf16(&mut r)) | u32::from(rand_bf16(&mut r)) << 16;
            let b = u32::from(rand_bf16(&mut r)) | u32::from(rand_bf16(&mut r)) << 16;
            cases.push((rand_f32(&mut r), a, b));
        }
        for _ in 0..100_000 {
            // Cancellation: acc ≈ -(a.hi·b.hi + a.lo·b.lo), and ties of the final rounding
            // (acc with low bits that make the sum land half-way).
            let (x, y) = (
                rand_bf16(&mut r) & 0x7fff | 0x3c00,
                rand_bf16(&mut r) & 0x7fff | 0x3c00,
            );
            let prod = bf16_to_f32(x) * bf16_to_f32(y);
            let acc = (-prod).to_bits() ^ (r.next() as u32 & 0xff);
            let a = u32::from(x) << 16 | u32::from(x ^ 0x8000);
            let b = u32::from(y) << 16 | u32::from(y ^ (r.next() as u16 & 0x7f));
            cases.push((acc, a, b));
            let big = 0x4b00_0000 | (r.next() as u32 & 0x7f_ffff); // 2^23..2^24: ulp 1
            cases.push((big, 0x3f00_3f00, 0x3f80_3f80)); // + 0.5 + 0.5
            cases.push((big, 0x3f00_0000, 0x3f80_0000)); // + 0.5: a tie
        }
        // Results just below the smallest normal: flushed or not depending on whether they
        // round up to it with an unbounded exponent (x86 detects tininess after rounding).
        for acc in [
            0x0080_0000u32,
            0x0080_0001,
            0x0080_0003,
            0x8080_0000,
            0x8080_0002,
        ] {
            for ex in 40u32..64 {
                for d in 0..5 {
                    let ey = 101 + d - ex;
                    let m = r.next() as u32;
                    let x = ex << 7 | (m & 0x7f);
                    let y = ey << 7 | (m >> 8 & 0x7f) | (!acc >> 16 & 0x8000);
                    cases.push((acc, x << 16 | x, y << 16));
                    cases.push((acc, x, y));
                }
            }
        }
        cases.push((0x0080_0000, 0x1980, 0x9a40));
        cases.push((0x0080_0000, 0x1980, 0x9a00));
        let mut mismatches = Vec::new();
        for chunk in cases.chunks(16) {
            let mut acc = [0.0f32; 16];
            let (mut a, mut b) = ([0u32; 16], [0u32; 16]);
            for (i, &(c, x, y)) in chunk.iter().enumerate() {
                acc[i] = f32::from_bits(c);
                a[i] = x;
                b[i] = y;
            }
            let hw = bits(dpbf16_hw(acc, a, b).unwrap());
            let emu = bits(dpbf16(acc, a, b));
            for i in 0..chunk.len() {
                if hw[i] != emu[i] && mismatches.len() < 20 {
                    mismatches.push(format!(
                        "acc {:#010x} a {:#010x} b {:#010x}: hardware {:#010x}, emulation {:#010x}",
                        acc[i].to_bits(),
                        a[i],
                        b[i],
                        hw[i],
                        emu[i]
                    ));
                }
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn dpbf16_order_and_flush() {
        // The high pair is added first: (2^24 + 1) + 1 rounds twice, 2^24 + 2 once.
        let big = 16_777_216.0f32; // 2^24
        let one = 0x3f80u32;
        // hi: big + 1 → tie → big (even); lo: big + 1 → big.
        assert_eq!(dpbf16_lane(big, one << 16 | one, one << 16 | one), big);
        // hi: big + 2 (exact); lo: + 1 → tie between 2^24+2 and 2^24+4 → 2^24+4 (even).
        let two = 0x4000u32;
        assert_eq!(
            dpbf16_lane(big, two << 16 | one, one << 16 | one),
            big + 4.0
        );
        // Swapping the pairs' elements changes the order and the result.
        assert_eq!(
            dpbf16_lane(big, one << 16 | two, one << 16 | one),
            big + 2.0
        );
        // A tiny result is flushed to a zero of its sign; a denormal accumulator reads as 0.
        let tiny = 0x0080u32; // 2^-126
        let half = 0x3f00u32;
        assert_eq!(dpbf16_lane(0.0, tiny, half).to_bits(), 0);
        assert_eq!(dpbf16_lane(0.0, tiny | 0x8000, half).to_bits(), 0x8000_0000);
        assert_eq!(dpbf16_lane(f32::from_bits(1), 0, 0).to_bits(), 0);
        // Tininess after rounding: 2^-126 - 1.5·2^-151 rounds (24 bits, unbounded exponent)
        // to 2^-126 - 2^-150, tiny: flushed; 2^-126 - 2^-151 ties to 2^-126: kept.
        let min = f32::MIN_POSITIVE;
        assert_eq!(dpbf16_lane(min, 0x1980, 0x9a40).to_bits(), 0);
        assert_eq!(dpbf16_lane(min, 0x1980, 0x9a00), min);
        // Denormal bf16 inputs read as zero.
        assert_eq!(dpbf16_lane(0.0, 0x0001, 0x7f00).to_bits(), 0);
        // ∞ · 0 is invalid: the default NaN.
        assert_eq!(dpbf16_lane(1.0, 0x7f80, 0).to_bits(), DEFAULT_NAN);
    }

    #[test]
    fn tdpbf16_order() {
        // K = 1: even sum 1, odd sum 1, then 2^24 + 2 (exact), where VDPBF16PS adds the
        // two products one by one into 2^24 and rounds both ties down to 2^24.
        let big = 16_777_216.0f32;
        let ones = 0x3f80_3f80u32;
        let mut c = [big];
        tdpbf16(&mut c, &[ones], &[ones], 1, 1, 1);
        assert_eq!(c[0], big + 2.0);
        assert_eq!(dpbf16_lane(big, ones, ones), big);
        // A 2×3 tile with K = 3 against plain arithmetic (small integers: exact).
        let a: Vec<u32> = (0..6).map(|i| pair(i as f32, -(i as f32) * 0.5)).collect();
        let b: Vec<u32> = (0..9).map(|i| pair(1.0 + i as f32, 2.0)).collect();
        let mut t = vec![0.25f32; 6];
        tdpbf16(&mut t, &a, &b, 2, 3, 3);
        for i in 0..2 {
            for j in 0..3 {
                let want: f32 = 0.25
                    + (0..3)
                        .map(|p| {
                            let x = (i * 3 + p) as f32;
                            x * (1.0 + (p * 3 + j) as f32) - x
                        })
                        .sum::<f32>();
                assert_eq!(t[i * 3 + j], want, "({i}, {j})");
            }
        }
    }

    /// Detection agrees with the kernel's view of the CPU (`/proc/cpuinfo`), and the Linux
    /// permission request succeeds exactly where AMX exists.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn amx_detection() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        assert_eq!(has_amx_bf16(), has("amx_bf16") && has("amx_tile"));
        assert_eq!(has_avx512bf16(), has("avx512_bf16") && has("avx512f"));
        assert_eq!(request_amx_permission().is_ok(), has_amx_bf16());
    }
}
