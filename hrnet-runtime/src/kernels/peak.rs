//! The machine's measured FMA peak per core, the yardstick kernels are judged against.
//!
//! [`fma_peak_gflops`] times a loop of independent fused multiply-adds written with the same
//! 16-lane vector type the kernels use for an [`Isa`] (`zmm` with AVX-512, pairs of `ymm` with
//! AVX2, plain arrays in the portable path). It keeps enough accumulators in flight to cover the
//! FMA latency on every FMA pipe (4-cycle latency × 2 pipes needs 8 register chains; the loop
//! keeps 12 registers' worth — 12 `zmm`, 6 pairs of `ymm`, 3 arrays of 4 `xmm` — without
//! spilling), so the result is the throughput bound of the pipes: e.g. about 215 GFLOP/s with `zmm` on a Sapphire Rapids core (two 512-bit FMA ports)
//! and about 115 on Zen 4, whose 512-bit FMAs run as two 256-bit halves.
//!
//! The figure is the best of several short timings, so a busy machine lowers it little.

use super::simd::{Vf, P};
#[cfg(target_arch = "x86_64")]
use super::simd::{Y, Z};
use super::Isa;
use std::time::{Duration, Instant};

/// FMAs per loop iteration per chain (a small unroll, so loop overhead is negligible).
const UNROLL: usize = 4;

/// Vector registers the accumulators of the peak loop occupy.
const REGS: usize = 12;

/// `iters` iterations of `N × UNROLL` 16-lane FMAs in `N` independent chains; returns a value
/// that depends on all of them (so none can be removed).
#[inline(always)]
unsafe fn fma_loop<V: Vf, const N: usize>(iters: usize, seed: f32) -> f32 {
    // SAFETY: register arithmetic; the ISA of `V` is available (caller's contract). The final
    // store goes to a local array of 16 floats. (Without fast-math LLVM keeps every FMA of the
    // chains; `a` and `b` are opaque, so nothing is folded.)
    unsafe {
        let a = V::splat(1.0 - seed * 1e-7);
        let b = V::splat(seed * 1e-7);
        let mut acc = [V::splat(seed); N];
        for _ in 0..iters {
            for _ in 0..UNROLL {
                for c in acc.iter_mut() {
                    *c = V::fma(*c, a, b);
                }
            }
        }
        let mut s = acc[0];
        for &c in &acc[1..] {
            s = V::add(s, c);
        }
        let mut out = [0.0f32; 16];
        V::store(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn fma_loop_avx512(iters: usize, seed: f32) -> f32 {
    // SAFETY: AVX-512F is enabled here and available (caller's contract).
    unsafe { fma_loop::<Z, REGS>(iters, seed) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: usize, seed: f32) -> f32 {
    // SAFETY: AVX2 and FMA are enabled here and available (caller's contract).
    unsafe { fma_loop::<Y, { REGS / 2 }>(iters, seed) }
}

fn fma_loop_portable(iters: usize, seed: f32) -> f32 {
    // SAFETY: plain Rust.
    unsafe { fma_loop::<P, { REGS / 4 }>(iters, seed) }
}

/// 16-lane FMAs per iteration of the peak loop of `isa`.
const fn fmas_per_iter(isa: Isa) -> usize {
    UNROLL
        * match isa {
            Isa::Avx512 => REGS,
            Isa::Avx2 => REGS / 2,
            Isa::Portable => REGS / 4,
        }
}

/// Runs the peak loop for `iters` iterations with `isa`; returns its result.
///
/// # Panics
/// If this CPU cannot run `isa`.
fn run(isa: Isa, iters: usize) -> f32 {
    assert!(isa.is_available(), "{isa:?} is not available on this CPU");
    let seed = std::hint::black_box(0.5);
    match isa {
        // SAFETY: checked available above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { fma_loop_avx512(iters, seed) },
        // SAFETY: checked available above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { fma_loop_avx2(iters, seed) },
        _ => fma_loop_portable(iters, seed),
    }
}

/// Floating-point operations of `iters` iterations of `isa`'s peak loop (an FMA counts 2 per
/// lane).
const fn loop_flops(isa: Isa, iters: usize) -> f64 {
    (iters * fmas_per_iter(isa) * 16 * 2) as f64
}

/// Measured single-core FMA peak of `isa` in GFLOP/s: the fastest of `reps` timings of about
/// `each` (the thread may be preempted during some of them; the fastest one was not).
///
/// # Panics
/// If this CPU cannot run `isa`.
pub fn fma_peak_gflops_with(isa: Isa, each: Duration, reps: usize) -> f64 {
    // Calibrate the iteration count so one timing takes about `each`.
    let mut iters = 1000;
    loop {
        let t = Instant::now();
        std::hint::black_box(run(isa, iters));
        let e = t.elapsed();
        if e >= each / 4 || iters >= 1 << 30 {
            let scale = each.as_secs_f64() / e.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as usize).clamp(1, 1 << 30);
            break;
        }
        iters *= 4;
    }
    let best = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run(isa, iters));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    loop_flops(isa, iters) / best.max(1e-12) * 1e-9
}

/// [`fma_peak_gflops_with`] with 30 timings of 2 ms (about 60 ms in all).
pub fn fma_peak_gflops(isa: Isa) -> f64 {
    fma_peak_gflops_with(isa, Duration::from_millis(2), 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_computes_the_chain_it_claims() {
        // acc ← acc·a + b with a = 1 − s·1e-7, b = s·1e-7 keeps acc = s when it starts at 1
        // (a fixed point); starting at s = 0.5 it moves towards 1 by a tiny step per FMA.
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let chains = fmas_per_iter(isa) / UNROLL;
            let r = run(isa, 10);
            assert!(
                (r - chains as f32 * 16.0 * 0.5).abs() < 1e-2,
                "{isa:?}: {r}"
            );
        }
    }

    #[test]
    fn peak_is_positive_and_best_isa_is_not_slower_than_portable() {
        let each = Duration::from_micros(500);
        let portable = fma_peak_gflops_with(Isa::Portable, each, 5);
        assert!(portable.is_finite() && portable > 0.1, "{portable}");
        let best = Isa::detect();
        if best != Isa::Portable {
            let p = fma_peak_gflops_with(best, each, 5);
            // Vector FMAs beat the portable path's baseline-SSE mul+add by far; a factor of
            // 1.2 leaves room for a machine busy during one of the two measurements.
            assert!(p > 1.2 * portable, "{best:?} {p} vs portable {portable}");
        }
    }
}
