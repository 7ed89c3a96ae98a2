//! Times every HRNet-W32 pose 256×192 conv shape (or, `--net cls`, the direct convs of
//! HRNet-W18-C at 224×224) at 1 and 2 threads and estimates the whole-network conv time (each
//! shape weighted by how often it occurs).
//!
//! `cargo run --release -p hrnet-runtime --example kernel_bench [-- --quick] [--hot] [--shape NAME]`
//! (`HRNET_ISA=avx2|portable` to time the other instruction sets).
//!
//! It first measures each instruction set's FMA peak on one core (`kernels::peak`); the `%pk`
//! columns are a kernel's GFLOP/s as a share of the active set's peak × threads. For Winograd
//! the GFLOP/s count the direct algorithm's work, so their share can exceed 100%.
//!
//! `-- --bf16`: the bf16 direct conv against f32 (default algorithm and direct) instead, the
//! three timed in turns within each round (see [`bf16_table`]).

use hrnet_runtime::kernels::{
    bf16_packed_len, bf16_scratch_len, conv, conv_bf16, fma_peak_gflops, pack_bf16, Algo, Bf16Isa,
    ConvSpec, Ctx, Epilogue, Isa, Pool,
};
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

/// The convs of HRNet-W18-C's classification head at 224×224 (`--net cls`), plus the
/// backbone shapes where the direct algorithm runs (stem, layer 1, transitions).
fn cls_w18() -> Vec<Shape> {
    vec![
        s("stem2 64>64 3x3s2 112x112", 1, (64, 64, 112, 112, 3, 2), 0),
        s("l1 64>256 1x1 56x56", 5, (64, 256, 56, 56, 1, 1), 0),
        s("l1 256>64 1x1 56x56", 3, (256, 64, 56, 56, 1, 1), 0),
        s("t1 256>36 3x3s2 56x56", 1, (256, 36, 56, 56, 3, 2), 0),
        s("incre0 18>128 1x1 56x56", 1, (18, 128, 56, 56, 1, 1), 0),
        s("incre3 144>1024 1x1 7x7", 1, (144, 1024, 7, 7, 1, 1), 0),
        s("down0 128>256 3x3s2 56x56", 1, (128, 256, 56, 56, 3, 2), 0),
        s("down1 256>512 3x3s2 28x28", 1, (256, 512, 28, 28, 3, 2), 0),
        s(
            "down2 512>1024 3x3s2 14x14",
            1,
            (512, 1024, 14, 14, 3, 2),
            0,
        ),
        s("final 1024>2048 1x1 7x7", 1, (1024, 2048, 7, 7, 1, 1), 0),
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
    let mut p = Prepared::new(*spec, up, None, ctx.threads());
    time_it(|| p.call(ctx), budget, reps)
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
    let net = args
        .iter()
        .position(|a| a == "--net")
        .map_or("w32", |i| args[i + 1].as_str());
    let shapes = match net {
        "cls" => cls_w18(),
        _ => w32(),
    };
    if args.iter().any(|a| a == "--bf16") {
        bf16_table(&shapes, only.as_deref(), budget, reps);
        return;
    }
    let n_convs: usize = shapes.iter().map(|s| s.count).sum();
    let macs: usize = shapes.iter().map(|s| s.count * s.spec.macs()).sum();
    let isa = Isa::active();
    println!(
        "{net}: {n_convs} convs, {:.3} GMACs; ISA {isa:?}; weights {}",
        macs as f64 * 1e-9,
        if hot_weights() {
            "hot (one copy)"
        } else {
            "cold (a new copy each call)"
        }
    );

    let mut peak = f64::NAN;
    for i in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        let p = fma_peak_gflops(i);
        if i == isa {
            peak = p;
        }
        println!("FMA peak, {i:?}, one core: {p:.1} GFLOP/s");
    }
    let pct = |gflops: f64, threads: usize| 100.0 * gflops / (peak * threads as f64);

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
    // [threads][1x1, 3x3 s2] direct convs: (flops x count, caller CPU time x count)
    let mut classes = [[(0.0f64, 0.0f64); 2]; 2];
    for threads in [1usize, 2] {
        let ctx = Ctx::new(threads);
        println!("\n== {threads} thread(s); times per call in us (caller CPU time, median) ==");
        println!(
            "{:<28} {:>5} {:>8} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>5} {:>8} {:>8}",
            "shape",
            "count",
            "direct",
            "GF/s",
            "%pk",
            "F2",
            "F4",
            "F2otf",
            "F4otf",
            "algo",
            "GF/s",
            "%pk",
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
            let class = match (sh.spec.k(), sh.spec.stride()) {
                (1, _) => Some(0),
                (3, 2) => Some(1),
                _ => None,
            };
            if let Some(c) = class {
                let e = &mut classes[threads - 1][c];
                e.0 += flops * sh.count as f64;
                e.1 += d.0 * sh.count as f64;
            }
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
                "{:<28} {:>5} {:>8} {:>6.1} {:>5.0} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6.1} {:>5.0} {:>8} {:>8.3}",
                sh.name,
                sh.count,
                us(d.0),
                flops / d.0 * 1e-9,
                pct(flops / d.0 * 1e-9, threads),
                us(f2.0),
                us(f4.0),
                us(f2o.0),
                us(f4o.0),
                name,
                flops / chosen.0 * 1e-9,
                pct(flops / chosen.0 * 1e-9, threads),
                us(chosen.1),
                chosen.0 * sh.count as f64 * 1e3
            );
        }
    }
    println!();
    for (t, goal) in [(1usize, 115.0), (2, 55.0)] {
        println!(
            "estimated {net} conv time, {t} thread(s), fastest algorithm per shape: {:.1} ms (caller CPU time, median; min {:.1} ms; wall {:.1} ms); goal {goal} ms; {:.0} effective GFLOP/s",
            totals[t - 1][0] * 1e3,
            totals[t - 1][2] * 1e3,
            totals[t - 1][1] * 1e3,
            2.0 * macs as f64 / totals[t - 1][0] * 1e-9
        );
        for (c, name) in ["1x1", "3x3 s2"].into_iter().enumerate() {
            let (f, t_s) = classes[t - 1][c];
            if t_s > 0.0 {
                let g = f / t_s * 1e-9;
                println!(
                    "  direct {name} convs (count-weighted), {t} thread(s): {g:.1} GFLOP/s, {:.0}% of the {isa:?} peak",
                    pct(g, t)
                );
            }
        }
    }
}

/// One conv's buffers, ready to be called repeatedly. In the network every conv has its own
/// weights (W32: ~114 MB, more than the L3), so by default each call reads a different copy
/// of the weights, cycling through > 64 MB (`--hot`: one copy, cache-resident, optimistic).
struct Prepared {
    spec: ConvSpec,
    bf16: Option<Bf16Isa>,
    up: u32,
    x: Vec<f32>,
    packed: Vec<Vec<f32>>,
    out: Vec<f32>,
    scratch: Vec<f32>,
    next: usize,
}

impl Prepared {
    fn new(spec: ConvSpec, up: u32, bf16: Option<Bf16Isa>, threads: usize) -> Prepared {
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
        let (packed, scratch) = match bf16 {
            Some(_) => {
                let mut p = vec![0.0; bf16_packed_len(&spec)];
                pack_bf16(&spec, &w, None, &mut p);
                (p, vec![0.0; bf16_scratch_len(&spec)])
            }
            None => {
                let mut p = vec![0.0; spec.packed_len()];
                spec.pack(&w, None, &mut p);
                (p, vec![0.0; spec.scratch_len(threads)])
            }
        };
        let copies = if hot_weights() {
            1
        } else {
            (64 << 20) / (4 * packed.len()) + 1
        };
        Prepared {
            spec,
            bf16,
            up,
            x: xb,
            packed: (0..copies).map(|_| packed.clone()).collect(),
            out: vec![0.0; hr.len()],
            scratch,
            next: 0,
        }
    }

    fn call(&mut self, ctx: &Ctx) {
        self.next = (self.next + 1) % self.packed.len();
        let epi = if self.up > 0 {
            Epilogue::upsample_accumulate(self.up, false)
        } else {
            Epilogue::plain(true)
        };
        let packed = &self.packed[self.next];
        match self.bf16 {
            Some(isa) => conv_bf16(
                ctx,
                isa,
                &self.spec,
                &self.x,
                packed,
                &mut self.out,
                epi,
                &mut self.scratch,
            ),
            None => conv(
                ctx,
                &self.spec,
                &self.x,
                packed,
                &mut self.out,
                epi,
                &mut self.scratch,
            ),
        }
    }
}

/// `--bf16`: per W32 shape, the bf16 direct conv ([`Bf16Isa::active`]) against f32 with the
/// default algorithm and f32 direct. Each of `reps` rounds times the three in turn (a batch
/// of ~`budget` each, caller CPU time), so load changes on a shared machine hit all three
/// alike; per-call times are medians over the rounds. Prints the per-shape ratios and the
/// count-weighted whole-network conv time of each.
fn bf16_table(shapes: &[Shape], only: Option<&str>, budget: Duration, reps: usize) {
    let isa = Bf16Isa::active();
    println!(
        "HRNet-W32 pose 256x192, bf16 kernel {isa:?} vs f32 ({:?}); weights {}",
        hrnet_runtime::kernels::Isa::active(),
        if hot_weights() { "hot" } else { "cold" }
    );
    for threads in [1usize, 2] {
        let ctx = Ctx::new(threads);
        println!("\n== {threads} thread(s); us per call (median of {reps} interleaved rounds) ==");
        println!(
            "{:<28} {:>5} {:>6} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6} {:>8} {:>8}",
            "shape",
            "count",
            "algo",
            "f32",
            "GF/s",
            "f32 dir",
            "GF/s",
            "bf16",
            "GF/s",
            "bf16/f32",
            "bf16/dir"
        );
        let mut totals = [0.0f64; 3];
        for sh in shapes {
            if only.is_some_and(|o| !sh.name.contains(o)) {
                continue;
            }
            let mut variants = [
                Prepared::new(sh.spec, sh.up, None, threads),
                Prepared::new(sh.spec.with_algo(Algo::Direct), sh.up, None, threads),
                Prepared::new(sh.spec, sh.up, Some(isa), threads),
            ];
            let mut times = [vec![], vec![], vec![]];
            for _ in 0..reps {
                for (v, t) in variants.iter_mut().zip(times.iter_mut()) {
                    t.push(time_it(|| v.call(&ctx), budget, 1).0);
                }
            }
            let med = times.map(|mut t| median(&mut t));
            let flops = 2.0 * sh.spec.macs() as f64;
            for (tot, m) in totals.iter_mut().zip(med) {
                *tot += m * sh.count as f64;
            }
            println!(
                "{:<28} {:>5} {:>6} {:>9.1} {:>6.1} {:>9.1} {:>6.1} {:>9.1} {:>6.1} {:>8.2} {:>8.2}",
                sh.name,
                sh.count,
                format!("{:?}", sh.spec.algo()).replace("Winograd", "F"),
                med[0] * 1e6,
                flops / med[0] * 1e-9,
                med[1] * 1e6,
                flops / med[1] * 1e-9,
                med[2] * 1e6,
                flops / med[2] * 1e-9,
                med[2] / med[0],
                med[2] / med[1]
            );
        }
        println!(
            "W32 conv time, {threads} thread(s): f32 default algorithms {:.1} ms, f32 direct {:.1} ms, \
             bf16 direct {:.1} ms; bf16 / f32 default = {:.2}, bf16 / f32 direct = {:.2}",
            totals[0] * 1e3,
            totals[1] * 1e3,
            totals[2] * 1e3,
            totals[2] / totals[0],
            totals[2] / totals[1]
        );
    }
}
