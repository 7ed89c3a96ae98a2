//! Times every HRNet-W32 pose 256×192 conv shape at 1 and 2 threads and estimates the
//! whole-network conv time (each shape weighted by how often it occurs among W32's 293 convs).
//!
//! `cargo run --release -p hrnet-runtime --example kernel_bench [-- --quick] [--hot] [--shape NAME]`
//! (`HRNET_ISA=avx2|portable` to time the other instruction sets).

use hrnet_runtime::kernels::{conv, Algo, ConvSpec, Ctx, Epilogue, Pool};
use std::time::{Duration, Instant};

/// One W32 conv shape: name, count in the network, spec, upsample factor (log2) of its epilogue.
struct Shape {
    name: &'static str,
    count: usize,
    spec: ConvSpec,
    up: u32,
}

const fn s(
    name: &'static str,
    count: usize,
    (cin, cout, h, w, k, stride): (usize, usize, usize, usize, usize, usize),
    up: u32,
) -> Shape {
    let pad = if k == 3 { 1 } else { 0 };
    Shape {
        name,
        count,
        spec: ConvSpec::new(cin, cout, h, w, k, stride, pad),
        up,
    }
}

/// W32 pose 256×192: input sizes are the conv's *input* H×W.
fn w32() -> Vec<Shape> {
    vec![
        s("stem1 3>64 3x3s2 256x192", 1, (3, 64, 256, 192, 3, 2), 0),
        s("stem2 64>64 3x3s2 128x96", 1, (64, 64, 128, 96, 3, 2), 0),
        s("l1 64>64 1x1 64x48", 1, (64, 64, 64, 48, 1, 1), 0),
        s("l1 256>64 1x1 64x48", 3, (256, 64, 64, 48, 1, 1), 0),
        s("l1 64>64 3x3 64x48", 4, (64, 64, 64, 48, 3, 1), 0),
        s("l1 64>256 1x1 64x48", 5, (64, 256, 64, 48, 1, 1), 0),
        s("t1 256>32 3x3 64x48", 1, (256, 32, 64, 48, 3, 1), 0),
        s("t1 256>64 3x3s2 64x48", 1, (256, 64, 64, 48, 3, 2), 0),
        s("basic 32 3x3 64x48", 64, (32, 32, 64, 48, 3, 1), 0),
        s("basic 64 3x3 32x24", 64, (64, 64, 32, 24, 3, 1), 0),
        s("basic 128 3x3 16x12", 56, (128, 128, 16, 12, 3, 1), 0),
        s("basic 256 3x3 8x6", 24, (256, 256, 8, 6, 3, 1), 0),
        s("down 32>64 3x3s2 64x48", 7, (32, 64, 64, 48, 3, 2), 0),
        s("down 32>32 3x3s2 64x48", 8, (32, 32, 64, 48, 3, 2), 0),
        s("down 32>128 3x3s2 32x24", 6, (32, 128, 32, 24, 3, 2), 0),
        s("down 64>128 3x3s2 32x24", 7, (64, 128, 32, 24, 3, 2), 0),
        s("down 128>256 3x3s2 16x12", 3, (128, 256, 16, 12, 3, 2), 0),
        s("down 32>32 3x3s2 32x24", 2, (32, 32, 32, 24, 3, 2), 0),
        s("down 32>256 3x3s2 16x12", 2, (32, 256, 16, 12, 3, 2), 0),
        s("down 64>64 3x3s2 32x24", 2, (64, 64, 32, 24, 3, 2), 0),
        s("down 64>256 3x3s2 16x12", 2, (64, 256, 16, 12, 3, 2), 0),
        s("up 64>32 1x1 32x24 x2", 8, (64, 32, 32, 24, 1, 1), 1),
        s("up 128>32 1x1 16x12 x4", 7, (128, 32, 16, 12, 1, 1), 2),
        s("up 128>64 1x1 16x12 x2", 6, (128, 64, 16, 12, 1, 1), 1),
        s("up 256>32 1x1 8x6 x8", 3, (256, 32, 8, 6, 1, 1), 3),
        s("up 256>64 1x1 8x6 x4", 2, (256, 64, 8, 6, 1, 1), 2),
        s("up 256>128 1x1 8x6 x2", 2, (256, 128, 8, 6, 1, 1), 1),
        s("final 32>17 1x1 64x48", 1, (32, 17, 64, 48, 1, 1), 0),
    ]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// CPU time of the calling thread, in seconds (Linux `CLOCK_THREAD_CPUTIME_ID`): unlike wall
/// time it does not grow while the thread is preempted, which matters on a shared machine.
fn thread_cpu() -> f64 {
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; clock 3 is CLOCK_THREAD_CPUTIME_ID on Linux.
    let rc = unsafe { clock_gettime(3, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Per-call time in seconds: the median over `reps` batches of ~`budget` of the calling
/// thread's CPU time (see [`thread_cpu`]; with 2 threads the caller spins while it waits, so
/// this is the wall time minus the caller's preemption), the median wall time, and the minimum
/// CPU time (least disturbed by other processes sharing the caches).
fn time_it(mut f: impl FnMut(), budget: Duration, reps: usize) -> (f64, f64, f64) {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let iters = ((budget.as_secs_f64() / one) as usize).clamp(1, 100_000);
    let (mut cpu, mut wall): (Vec<f64>, Vec<f64>) = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let c = thread_cpu();
            for _ in 0..iters {
                f();
            }
            let c = thread_cpu() - c;
            (c / iters as f64, t.elapsed().as_secs_f64() / iters as f64)
        })
        .unzip();
    let min = cpu.iter().cloned().fold(f64::INFINITY, f64::min);
    (median(&mut cpu), median(&mut wall), min)
}

/// `--hot`: reuse one copy of the weights (cache-resident, optimistic).
fn hot_weights() -> bool {
    std::env::args().any(|a| a == "--hot")
}

fn bench_conv(
    ctx: &Ctx,
    spec: &ConvSpec,
    up: u32,
    budget: Duration,
    reps: usize,
) -> (f64, f64, f64) {
    let ins = spec.in_shape();
    let os = spec.out_shape();
    let hr = hrnet_runtime::kernels::ActShape::new(os.c(), os.h() << up, os.w() << up);
    let mut seed = 1u32;
    let mut rnd = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..spec.cin() * ins.h() * ins.w()).map(|_| rnd()).collect();
    let w: Vec<f32> = (0..spec.cout() * spec.cin() * spec.k() * spec.k())
        .map(|_| rnd() * 0.1)
        .collect();
    let mut xb = vec![0.0; ins.len()];
    hrnet_runtime::kernels::from_nchw(ins, &x, &mut xb);
    let mut packed = vec![0.0; spec.packed_len()];
    spec.pack(&w, None, &mut packed);
    // In the network every conv has its own weights (W32: ~114 MB, more than the L3), so by
    // default each call reads a different copy of the weights, cycling through > 64 MB.
    let copies = if hot_weights() {
        1
    } else {
        (64 << 20) / (4 * packed.len()) + 1
    };
    let packed: Vec<Vec<f32>> = (0..copies).map(|_| packed.clone()).collect();
    let mut out = vec![0.0; hr.len()];
    let mut scratch = vec![0.0; spec.scratch_len(ctx.threads())];
    let epi = if up > 0 {
        Epilogue::upsample_accumulate(up, false)
    } else {
        Epilogue::plain(true)
    };
    let mut i = 0;
    time_it(
        || {
            i = (i + 1) % copies;
            conv(ctx, spec, &xb, &packed[i], &mut out, epi, &mut scratch)
        },
        budget,
        reps,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--shape")
        .map(|i| args[i + 1].clone());
    let (budget, reps) = if quick {
        (Duration::from_millis(20), 3)
    } else {
        (Duration::from_millis(60), 7)
    };
    let shapes = w32();
    let n_convs: usize = shapes.iter().map(|s| s.count).sum();
    let macs: usize = shapes.iter().map(|s| s.count * s.spec.macs()).sum();
    let isa = hrnet_runtime::kernels::Isa::active();
    println!(
        "HRNet-W32 pose 256x192: {n_convs} convs, {:.3} GMACs; ISA {isa:?}; weights {}",
        macs as f64 * 1e-9,
        if hot_weights() {
            "hot (one copy)"
        } else {
            "cold (a new copy each call)"
        }
    );

    // Pool fork-join overhead: `threads` tasks of ~5 us of arithmetic each, against the same
    // work done inline.
    fn work(n: u64) -> u64 {
        let mut x = 1u64;
        for i in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        x
    }
    let n = {
        let t = Instant::now();
        std::hint::black_box(work(std::hint::black_box(1_000_000)));
        (5e-6 / t.elapsed().as_secs_f64() * 1e6) as u64
    };
    let inline = time_it(
        || _ = std::hint::black_box(work(std::hint::black_box(n))),
        Duration::from_millis(20),
        9,
    )
    .1;
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        let t = time_it(
            || {
                pool.run(threads, &|_, _| {
                    _ = std::hint::black_box(work(std::hint::black_box(n)))
                })
            },
            Duration::from_millis(20),
            9,
        )
        .1;
        println!(
            "pool.run({threads} tasks of {:.2} us) on {threads} thread(s): {:.2} us per call, fork-join overhead {:.2} us",
            inline * 1e6,
            t * 1e6,
            (t - inline) * 1e6
        );
    }

    // [threads][cpu-time based, wall-time based, min cpu-time based]
    let mut totals = [[0.0f64; 3]; 2];
    for threads in [1usize, 2] {
        let ctx = Ctx::new(threads);
        println!("\n== {threads} thread(s); times per call in us (caller CPU time, median) ==");
        println!(
            "{:<28} {:>5} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8}",
            "shape",
            "count",
            "direct",
            "GF/s",
            "F2",
            "F4",
            "F2otf",
            "F4otf",
            "algo",
            "GF/s",
            "wall",
            "x count ms"
        );
        for sh in &shapes {
            if only.as_deref().is_some_and(|o| !sh.name.contains(o)) {
                continue;
            }
            let flops = 2.0 * sh.spec.macs() as f64;
            let nan = (f64::NAN, f64::NAN, f64::NAN);
            let d = bench_conv(&ctx, &sh.spec.with_algo(Algo::Direct), sh.up, budget, reps);
            let wino = |algo| {
                if sh.spec.is_winograd_shape() {
                    bench_conv(&ctx, &sh.spec.with_algo(algo), sh.up, budget, reps)
                } else {
                    nan
                }
            };
            let (f2, f4) = (wino(Algo::Winograd2), wino(Algo::Winograd4));
            let (f2o, f4o) = (wino(Algo::Winograd2Otf), wino(Algo::Winograd4Otf));
            // The fastest algorithm measured for this shape (the planner's choice is made
            // from tables like this one).
            let (name, chosen) = [
                ("direct", d),
                ("F2", f2),
                ("F4", f4),
                ("F2otf", f2o),
                ("F4otf", f4o),
            ]
            .into_iter()
            .filter(|(_, t)| t.0.is_finite())
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .expect("the direct algorithm always runs");
            totals[threads - 1][0] += chosen.0 * sh.count as f64;
            totals[threads - 1][1] += chosen.1 * sh.count as f64;
            totals[threads - 1][2] += chosen.2 * sh.count as f64;
            let us = |t: f64| {
                if t.is_finite() {
                    format!("{:.1}", t * 1e6)
                } else {
                    "-".into()
                }
            };
            println!(
                "{:<28} {:>5} {:>8} {:>6.1} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6.1} {:>8} {:>8.3}",
                sh.name,
                sh.count,
                us(d.0),
                flops / d.0 * 1e-9,
                us(f2.0),
                us(f4.0),
                us(f2o.0),
                us(f4o.0),
                name,
                flops / chosen.0 * 1e-9,
                us(chosen.1),
                chosen.0 * sh.count as f64 * 1e3
            );
        }
    }
    println!();
    for (t, goal) in [(1usize, 115.0), (2, 55.0)] {
        println!(
            "estimated W32 conv time, {t} thread(s), fastest algorithm per shape: {:.1} ms (caller CPU time, median; min {:.1} ms; wall {:.1} ms); goal {goal} ms; {:.0} effective GFLOP/s",
            totals[t - 1][0] * 1e3,
            totals[t - 1][2] * 1e3,
            totals[t - 1][1] * 1e3,
            2.0 * macs as f64 / totals[t - 1][0] * 1e-9
        );
    }
}
