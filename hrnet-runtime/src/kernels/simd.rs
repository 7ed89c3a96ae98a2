//! One 16-lane f32 vector type per instruction set, behind one trait.
//!
//! A [`Vf`] value is always one channel block (16 channels): a `zmm` register with AVX-512, a
//! pair of `ymm` registers with AVX2, a plain array in the portable fallback. Kernels are written
//! once, generic over `Vf`, marked `#[inline(always)]`, and instantiated inside one
//! `#[target_feature]` entry point per instruction set (see [`super::Isa`]), so the intrinsics
//! inline into code compiled for that instruction set.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of 16 f32 lanes.
///
/// # Safety
/// Every method is `unsafe`: pointers must be valid for 16 floats (one float for
/// [`Vf::bcast`]), and the implementation's instruction set must be available on the CPU
/// (guaranteed by the dispatch in [`super::Isa`], which only selects available sets).
pub(crate) trait Vf: Copy {
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// Loads 16 floats (no alignment required).
    unsafe fn load(p: *const f32) -> Self;
    /// Stores 16 floats (no alignment required).
    unsafe fn store(p: *mut f32, v: Self);
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// All lanes `*p`.
    unsafe fn bcast(p: *const f32) -> Self;
    /// `a * b + c`.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `a + b`.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a - b`.
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// `a * b`.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// `max(a, 0)`.
    unsafe fn relu(a: Self) -> Self;
}

/// AVX-512F: one `zmm` register.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Z(__m512);

#[cfg(target_arch = "x86_64")]
impl Vf for Z {
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 16 floats and AVX-512F is available (trait contract).
        unsafe { Z(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: `p` is valid for 16 floats and AVX-512F is available (trait contract).
        unsafe { _mm512_storeu_ps(p, v.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> Self {
        // SAFETY: `p` is valid for one float and AVX-512F is available (trait contract).
        unsafe { Z(_mm512_set1_ps(*p)) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_fmadd_ps(a.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_add_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_sub_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_mul_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        // SAFETY: AVX-512F is available (trait contract).
        unsafe { Z(_mm512_max_ps(a.0, _mm512_setzero_ps())) }
    }
}

/// AVX2 + FMA: two `ymm` registers (channels 0..8 and 8..16).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Y(__m256, __m256);

#[cfg(target_arch = "x86_64")]
impl Vf for Y {
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe { Y(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 16 floats and AVX is available (trait contract).
        unsafe { Y(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: `p` is valid for 16 floats and AVX is available (trait contract).
        unsafe {
            _mm256_storeu_ps(p, v.0);
            _mm256_storeu_ps(p.add(8), v.1);
        }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe {
            let v = _mm256_set1_ps(x);
            Y(v, v)
        }
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> Self {
        // SAFETY: `p` is valid for one float and AVX is available (trait contract).
        unsafe {
            let v = _mm256_broadcast_ss(&*p);
            Y(v, v)
        }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: FMA is available (trait contract).
        unsafe {
            Y(
                _mm256_fmadd_ps(a.0, b.0, c.0),
                _mm256_fmadd_ps(a.1, b.1, c.1),
            )
        }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe { Y(_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe { Y(_mm256_sub_ps(a.0, b.0), _mm256_sub_ps(a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe { Y(_mm256_mul_ps(a.0, b.0), _mm256_mul_ps(a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        // SAFETY: AVX is available (trait contract).
        unsafe {
            let z = _mm256_setzero_ps();
            Y(_mm256_max_ps(a.0, z), _mm256_max_ps(a.1, z))
        }
    }
}

/// Portable fallback: a plain array (LLVM vectorizes it with whatever the target baseline has).
#[derive(Clone, Copy)]
pub(crate) struct P([f32; 16]);

impl P {
    #[inline(always)]
    fn map2(a: Self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        P(std::array::from_fn(|i| f(a.0[i], b.0[i])))
    }
}

impl Vf for P {
    #[inline(always)]
    unsafe fn zero() -> Self {
        P([0.0; 16])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 16 floats (trait contract); `[f32; 16]` has align 4.
        unsafe { P(p.cast::<[f32; 16]>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: `p` is valid for 16 floats (trait contract).
        unsafe { p.cast::<[f32; 16]>().write_unaligned(v.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        P([x; 16])
    }
    #[inline(always)]
    unsafe fn bcast(p: *const f32) -> Self {
        // SAFETY: `p` is valid for one float (trait contract).
        unsafe { P([*p; 16]) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        P(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        P::map2(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        P::map2(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        P::map2(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        P::map2(a, a, |x, _| x.max(0.0))
    }
}
