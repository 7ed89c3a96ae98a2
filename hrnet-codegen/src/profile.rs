//! Where the time goes: every step of a [`Plan`] timed on its own (`hrnetc bench --profile`).
//!
//! The plan executor makes exactly the kernel calls the generated Rust makes, so this is the
//! AOT engine's profile, step by step. A step's time is its median over the timed runs; the
//! whole run's median is reported beside their sum, so the cost of the timers themselves
//! (two clock reads a step) stays visible.
//!
//! GFLOP/s counts 2 × the direct convolution's multiply-adds, whatever the algorithm:
//! a Winograd layer's figure is what a direct kernel would need to match it, and can exceed
//! the machine's FMA peak. That peak is measured before the runs (an FMA loop with the
//! instruction set the kernels use, [`hrnet_runtime::kernels::peak`]), and every conv row shows
//! its share of it (peak of one core × threads).

use crate::exec;
use crate::plan::{Addend, Plan, Step};
use hrnet_runtime::kernels::{fma_peak_gflops, Algo, Ctx, Isa};
use hrnet_runtime::model::RunError;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// What kind of work a step is; steps of one kind share a row of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepKind {
    /// A convolution by shape class and algorithm.
    Conv {
        /// Kernel size.
        k: usize,
        /// Stride.
        stride: usize,
        /// Algorithm.
        algo: Algo,
    },
    /// Elementwise add (Basic/Bottleneck residual not fused into its convolution).
    Add,
    /// In-place `acc += upsample(low)` of an exchange unit.
    AddUpsampled,
    /// In-place `acc += bilinear(low)` of a segmentation exchange unit.
    AddResized,
    /// Bilinear resize (the segmentation head).
    Resize,
    /// Global average pooling (the classification head).
    Pool,
    /// OCR's spatial gather and object attention.
    Ocr,
    /// A copy that lets a value still read later be updated in place, or into a
    /// concatenation.
    Copy,
    /// NCHW input into the blocked layout, or a blocked output back to NCHW.
    Layout,
}

impl StepKind {
    /// The kind of `step`.
    pub fn of(plan: &Plan, step: &Step) -> StepKind {
        match *step {
            Step::Conv { layer, .. } => {
                let s = &plan.convs[layer].spec;
                StepKind::Conv {
                    k: s.k(),
                    stride: s.stride(),
                    algo: s.algo(),
                }
            }
            Step::Add { .. } => StepKind::Add,
            Step::AddUpsampled { .. } => StepKind::AddUpsampled,
            Step::AddResized { .. } => StepKind::AddResized,
            Step::Resize { .. } => StepKind::Resize,
            Step::GlobalAvgPool { .. } => StepKind::Pool,
            Step::SpatialGather { .. } | Step::ObjectAttention { .. } => StepKind::Ocr,
            Step::Copy { .. } => StepKind::Copy,
            Step::Input { .. } | Step::Output { .. } => StepKind::Layout,
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StepKind::Conv { k, stride, algo } => {
                let algo = match algo {
                    Algo::Direct => "direct",
                    Algo::Winograd2 => "winograd F(2,3)",
                    Algo::Winograd4 => "winograd F(4,3)",
                    Algo::Winograd2Otf => "winograd F(2,3) otf",
                    Algo::Winograd4Otf => "winograd F(4,3) otf",
                };
                write!(f, "conv {k}x{k} s{stride} {algo}")
            }
            StepKind::Add => f.write_str("add"),
            StepKind::AddUpsampled => f.write_str("add upsampled"),
            StepKind::AddResized => f.write_str("add resized (bilinear)"),
            StepKind::Resize => f.write_str("resize (bilinear)"),
            StepKind::Pool => f.write_str("global average pool"),
            StepKind::Ocr => f.write_str("ocr gather/attention"),
            StepKind::Copy => f.write_str("copy"),
            StepKind::Layout => f.write_str("layout in/out"),
        }
    }
}

/// One step's timing.
#[derive(Debug, Clone)]
pub struct StepTime {
    /// Index into [`Plan::steps`].
    pub index: usize,
    /// Its kind.
    pub kind: StepKind,
    /// Direct-convolution multiply-adds (0 for other steps).
    pub macs: u64,
    /// Median time over the timed runs.
    pub time: Duration,
}

/// One row of [`Profile::by_kind`].
#[derive(Debug, Clone)]
pub struct KindRow {
    /// The kind.
    pub kind: StepKind,
    /// Steps of this kind in one run.
    pub steps: usize,
    /// Their multiply-adds.
    pub macs: u64,
    /// Sum of their median times.
    pub time: Duration,
}

/// A timed plan.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Threads the kernels used.
    pub threads: usize,
    /// Timed runs.
    pub runs: usize,
    /// Instruction set the kernels used.
    pub isa: Isa,
    /// Its measured FMA peak on one core, GFLOP/s.
    pub peak_gflops: f64,
    /// Median of whole runs (timers included).
    pub total: Duration,
    /// Every step, in plan order.
    pub steps: Vec<StepTime>,
}

/// GFLOP/s of `macs` multiply-adds in `t` (0 when `t` is zero).
pub fn gflops(macs: u64, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        2.0 * macs as f64 / t.as_secs_f64() / 1e9
    }
}

fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1e3
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `plan` with `packed` weights on a fixed input: two warm-up runs, then `runs` timed
/// runs with a clock read after every step.
pub fn profile(
    plan: &Plan,
    packed: &[f32],
    threads: usize,
    runs: usize,
) -> Result<Profile, RunError> {
    let runs = runs.max(1);
    let input = crate::aot::bench_input(plan.input.len());
    let mut outs: Vec<Vec<f32>> = plan.outputs.iter().map(|s| vec![0f32; s.len()]).collect();
    let mut scratch = plan.scratch(threads);
    scratch.ctx = Ctx::new(threads);
    let isa = scratch.ctx.isa();
    let peak_gflops = fma_peak_gflops(isa);
    let n = plan.steps.len();
    // per_step[i * runs + r]: step i in run r.
    let mut per_step = vec![Duration::ZERO; n * runs];
    let mut totals = Vec::with_capacity(runs);
    for run in 0..runs + 2 {
        let mut outputs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let start = Instant::now();
        let mut last = start;
        exec::execute_observed(plan, packed, &input, &mut outputs, &mut scratch, |i| {
            let now = Instant::now();
            if run >= 2 {
                per_step[i * runs + run - 2] = now - last;
            }
            last = now;
        })?;
        if run >= 2 {
            totals.push(start.elapsed());
        }
    }
    let steps = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepTime {
            index: i,
            kind: StepKind::of(plan, step),
            macs: match *step {
                Step::Conv { layer, .. } => plan.convs[layer].spec.macs() as u64,
                _ => 0,
            },
            time: median(&mut per_step[i * runs..(i + 1) * runs]),
        })
        .collect();
    Ok(Profile {
        threads,
        runs,
        isa,
        peak_gflops,
        total: median(&mut totals),
        steps,
    })
}

impl Profile {
    /// Time, steps and multiply-adds per kind, slowest first.
    pub fn by_kind(&self) -> Vec<KindRow> {
        let mut rows: Vec<KindRow> = Vec::new();
        for s in &self.steps {
            match rows.iter_mut().find(|r| r.kind == s.kind) {
                Some(r) => {
                    r.steps += 1;
                    r.macs += s.macs;
                    r.time += s.time;
                }
                None => rows.push(KindRow {
                    kind: s.kind,
                    steps: 1,
                    macs: s.macs,
                    time: s.time,
                }),
            }
        }
        rows.sort_by(|a, b| b.time.cmp(&a.time).then(a.kind.cmp(&b.kind)));
        rows
    }

    /// Sum of the step medians.
    pub fn step_sum(&self) -> Duration {
        self.steps.iter().map(|s| s.time).sum()
    }

    /// Share of the measured peak (one core × threads) in percent that `macs` in `t` reach.
    pub fn peak_pct(&self, macs: u64, t: Duration) -> f64 {
        100.0 * gflops(macs, t) / (self.peak_gflops * self.threads as f64)
    }

    fn peak_cell(&self, macs: u64, t: Duration) -> String {
        if macs == 0 {
            "-".into()
        } else {
            format!("{:.0}", self.peak_pct(macs, t))
        }
    }

    /// A table for people: one row per kind, then the `top` slowest steps with their shapes.
    pub fn to_table(&self, plan: &Plan, top: usize) -> String {
        let sum = self.step_sum();
        let share = |t: Duration| 100.0 * t.as_secs_f64() / sum.as_secs_f64().max(1e-12);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} thread(s), median of {} runs: {:.2} ms (sum of step medians {:.2} ms)",
            plan.name,
            self.threads,
            self.runs,
            ms(self.total),
            ms(sum)
        );
        let _ = writeln!(
            s,
            "FMA peak ({:?}, measured): {:.1} GFLOP/s per core; %pk = GFLOP/s / (peak x {} thread(s)), \
             Winograd counted as direct work",
            self.isa, self.peak_gflops, self.threads
        );
        let _ = writeln!(
            s,
            "\n{:<32} {:>5} {:>9} {:>6} {:>8} {:>8} {:>5}",
            "kind", "steps", "ms", "%", "GMAC", "GFLOP/s", "%pk"
        );
        for r in self.by_kind() {
            let _ = writeln!(
                s,
                "{:<32} {:>5} {:>9.3} {:>6.1} {:>8.3} {:>8} {:>5}",
                r.kind.to_string(),
                r.steps,
                ms(r.time),
                share(r.time),
                r.macs as f64 / 1e9,
                gflops_cell(r.macs, r.time),
                self.peak_cell(r.macs, r.time),
            );
        }
        let mut slow: Vec<&StepTime> = self.steps.iter().collect();
        slow.sort_by(|a, b| b.time.cmp(&a.time).then(a.index.cmp(&b.index)));
        let _ = writeln!(
            s,
            "\n{:<5} {:<32} {:<26} {:>8} {:>8} {:>5}  layer",
            "step", "kind", "shape", "ms", "GFLOP/s", "%pk"
        );
        for t in slow.into_iter().take(top) {
            let (shape, layer) = describe(plan, &plan.steps[t.index]);
            let _ = writeln!(
                s,
                "{:<5} {:<32} {:<26} {:>8.3} {:>8} {:>5}  {layer}",
                t.index,
                t.kind.to_string(),
                shape,
                ms(t.time),
                gflops_cell(t.macs, t.time),
                self.peak_cell(t.macs, t.time),
            );
        }
        s
    }
}

fn gflops_cell(macs: u64, t: Duration) -> String {
    if macs == 0 {
        "-".into()
    } else {
        format!("{:.1}", gflops(macs, t))
    }
}

/// Shape and layer name of a step, for the slowest-steps list.
fn describe(plan: &Plan, step: &Step) -> (String, String) {
    let shape = |v: usize| {
        let s = plan.values[v].shape;
        format!("{}x{}x{}", s.c(), s.h(), s.w())
    };
    match *step {
        Step::Conv {
            layer,
            add,
            upsample_log2,
            ..
        } => {
            let l = &plan.convs[layer];
            let s = &l.spec;
            let mut shape = format!("{}->{} @ {}x{}", s.cin(), s.cout(), s.h_in(), s.w_in());
            if add != Addend::None {
                shape.push_str(if upsample_log2 > 0 { " +up" } else { " +res" });
            }
            (shape, l.label.clone())
        }
        Step::Add { dst, .. }
        | Step::AddUpsampled { dst, .. }
        | Step::AddResized { dst, .. }
        | Step::Resize { dst, .. }
        | Step::GlobalAvgPool { dst, .. }
        | Step::SpatialGather { dst, .. }
        | Step::ObjectAttention { dst, .. }
        | Step::Copy { dst, .. } => (shape(dst), String::new()),
        Step::Input { dst } => (shape(dst), "input".into()),
        Step::Output { src, index } => (shape(src), format!("output {index}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver;

    const TINY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/tiny_pose/config.yaml"
    );

    #[test]
    fn every_step_is_timed_and_kinds_add_up() {
        let (_, p) = crate::build_api::plan_config(
            std::path::Path::new(TINY),
            &crate::target::Target::runtime(),
        )
        .unwrap();
        let (_, g) = driver::load_config(std::path::Path::new(TINY)).unwrap();
        let bytes = driver::random_checkpoint(&driver::runtime_specs(&g), 3);
        let ckpt = hrnet_runtime::weights::load_bytes(&bytes).unwrap();
        let packed = p.pack_weights(&ckpt, Default::default()).unwrap();
        let prof = profile(&p, &packed, 1, 3).unwrap();
        assert_eq!(prof.steps.len(), p.steps.len());
        let rows = prof.by_kind();
        assert_eq!(rows.iter().map(|r| r.steps).sum::<usize>(), p.steps.len());
        let macs: u64 = p.convs.iter().map(|c| c.spec.macs() as u64).sum();
        assert_eq!(rows.iter().map(|r| r.macs).sum::<u64>(), macs);
        assert_eq!(
            rows.iter().map(|r| r.time).sum::<Duration>(),
            prof.step_sum()
        );
        assert!(rows.windows(2).all(|w| w[0].time >= w[1].time));
        let table = prof.to_table(&p, 5);
        assert!(table.contains("layout in/out"), "{table}");
        assert!(
            table.contains("FMA peak") && table.contains("%pk"),
            "{table}"
        );
        assert!(prof.peak_gflops.is_finite() && prof.peak_gflops > 0.0);
        // A conv kind's share of the peak is its GFLOP/s over the peak (one thread here).
        let conv = rows.iter().find(|r| r.macs > 0).unwrap();
        let want = 100.0 * gflops(conv.macs, conv.time) / prof.peak_gflops;
        assert!((prof.peak_pct(conv.macs, conv.time) - want).abs() < 1e-9);
    }
}
