//! Speed of the segmentation / OCR head kernels on HRNet-W48 shapes at a 512×1024 input
//! (branch 0 at 128×256): bandwidth of the bilinear resizes, GFLOP/s of the OCR kernels.
//! With one thread the caller's CPU time is measured (so a busy machine does not inflate it),
//! with two the wall-clock time. A benchmark, never a test. `cargo run --release -p hrnet-runtime --example head_kernels`.

use std::time::Instant;

use hrnet_runtime::kernels::head::{
    object_attention, object_attention_scratch_len, softmax_spatial_gather,
    spatial_gather_scratch_len,
};
use hrnet_runtime::kernels::{add_resized_bilinear, resize_bilinear, ActShape, Ctx};

/// CPU time of the calling thread in seconds (Linux `/proc/thread-self/schedstat`), if known.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// Median seconds of `runs` calls after one warm-up: wall-clock time, or with `cpu` the calling
/// thread's CPU time (what one thread costs on a machine that other processes share).
fn median(runs: usize, cpu: bool, mut f: impl FnMut()) -> f64 {
    let s = Instant::now();
    f();
    // Samples of at least ~20 ms (the CPU-time counter advances in scheduler ticks).
    let reps = (0.02 / s.elapsed().as_secs_f64()).ceil().clamp(1.0, 1000.0) as usize;
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let (s, c) = (Instant::now(), thread_cpu());
            for _ in 0..reps {
                f();
            }
            let t = match (cpu, c, thread_cpu()) {
                (true, Some(a), Some(b)) => b - a,
                _ => s.elapsed().as_secs_f64(),
            };
            t / reps as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn filled(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn main() {
    let runs = 21;
    println!("isa {:?}", Ctx::new(1).isa());
    // One thread: the caller's CPU time; two threads: wall-clock time.
    for threads in [1, 2] {
        let ctx = Ctx::new(threads);
        let cpu = threads == 1;
        // Exchange unit: 48 ch at 128×256 += resize(48 ch at 64×128), and from 16×32 (j − i = 3).
        for (sh, sw) in [(64, 128), (16, 32)] {
            let (ss, ds) = (ActShape::new(48, sh, sw), ActShape::new(48, 128, 256));
            let (src, mut acc) = (filled(ss.len()), filled(ds.len()));
            let t = median(runs, cpu, || {
                add_resized_bilinear(&ctx, ss, &src, ds, &mut acc, false, true)
            });
            let bytes = (2 * ds.len() + ss.len()) * 4;
            println!(
                "threads {threads}  add_resized_bilinear 48x128x256 <- 48x{sh}x{sw}: {:7.3} ms  {:5.1} GB/s",
                t * 1e3,
                bytes as f64 / t / 1e9
            );
        }
        // Head: branch 3 (384 ch at 16×32) resized into its part of the concatenation.
        let (ss, ds) = (ActShape::new(384, 16, 32), ActShape::new(384, 128, 256));
        let (src, mut dst) = (filled(ss.len()), vec![0.0; ds.len()]);
        let t = median(runs, cpu, || {
            resize_bilinear(&ctx, ss, &src, ds, &mut dst, false)
        });
        println!(
            "threads {threads}  resize_bilinear 384x16x32 -> 384x128x256: {:7.3} ms  {:5.1} GB/s (written)",
            t * 1e3,
            (ds.len() * 4) as f64 / t / 1e9
        );
        // OCR: 19 classes, MID 512, KEY 256 at 128×256.
        let (k, mid, key, h, w) = (19, 512, 256, 128, 256);
        let (ls, fs) = (ActShape::new(k, h, w), ActShape::new(mid, h, w));
        let (logits, feats) = (filled(ls.len()), filled(fs.len()));
        let mut ctxo = vec![0.0; ActShape::new(mid, k, 1).len()];
        let mut scratch = vec![0.0; spatial_gather_scratch_len(k, h, w, threads)];
        let t = median(runs, cpu, || {
            softmax_spatial_gather(&ctx, ls, &logits, fs, &feats, &mut ctxo, &mut scratch)
        });
        let flops = 2.0 * (k * mid * h * w) as f64;
        println!(
            "threads {threads}  softmax_spatial_gather K{k} C{mid} {h}x{w}: {:7.3} ms  {:5.1} GFLOP/s",
            t * 1e3,
            flops / t / 1e9
        );
        let qs = ActShape::new(key, h, w);
        let rs = ActShape::new(key, k, 1);
        let (q, kk, v) = (filled(qs.len()), filled(rs.len()), filled(rs.len()));
        let mut out = vec![0.0; qs.len()];
        let mut scratch = vec![0.0; object_attention_scratch_len(key, k, threads)];
        let t = median(runs, cpu, || {
            object_attention(&ctx, qs, &q, k, &kk, &v, &mut out, &mut scratch)
        });
        let flops = 4.0 * (key * k * h * w) as f64;
        println!(
            "threads {threads}  object_attention KEY{key} K{k} {h}x{w}: {:7.3} ms  {:5.1} GFLOP/s",
            t * 1e3,
            flops / t / 1e9
        );
    }
}
