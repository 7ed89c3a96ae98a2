//! `hrnetc bench CONFIG [--size H W] [--weights W] [--engine E] [--threads N] [--runs R] [--profile]
//! [--batch B]`: one JSON line, `{"engine":…,"threads":…,"median_ms":…,"min_ms":…,"runs":…}`;
//! with `--batch`, the times are of a batch of B inputs (`run_batch`: with the JIT and AOT
//! engines, whole inputs side by side on the threads) and the line adds `"batch"` and `"images_per_s"`.

use crate::loaded::{finite, parse_threads, read_checkpoint, round, size_arg, Loaded};
use anyhow::{bail, Context, Result};
use hrnet_codegen::engine::{Engine, EngineKind};
use hrnet_codegen::{aot, driver, profile};
use hrnet_runtime::weights::{self, BindOptions};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Most timed runs (the runs are kept to take their median).
const MAX_RUNS: usize = 1_000_000;

/// Largest `--batch`.
const MAX_BATCH: usize = 1024;

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// Time inputs of H x W pixels instead of the config's size (a segmentation
    /// network runs at any size of at least 32 pixels a side; pose and classification sides
    /// must divide by 32).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    size: Option<Vec<usize>>,
    /// The checkpoint (default: seeded random weights).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Engine [default: jit; aot with --profile].
    #[arg(long, value_enum)]
    engine: Option<EngineKind>,
    /// Threads the kernels use (1 to 256).
    #[arg(long, default_value = "1", value_parser = parse_threads)]
    threads: usize,
    /// Timed runs (after two warm-up runs).
    #[arg(long, default_value = "20", value_parser = parse_runs)]
    runs: usize,
    /// Time every kernel call of the AOT engine's plan; adds time and GFLOP/s per layer
    /// kind to the JSON line and prints a table (kinds, then the slowest steps) to stderr.
    #[arg(long)]
    profile: bool,
    /// Accept checkpoint tensors the network does not use.
    #[arg(long)]
    ignore_extra: bool,
    /// Time batches of B inputs (`run_batch`; the JIT and AOT engines run whole inputs side
    /// by side on their threads) and report images per second.
    #[arg(long, value_name = "B", value_parser = parse_batch)]
    batch: Option<usize>,
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(n),
        _ => Err(format!("give a batch size from 1 to {MAX_BATCH}")),
    }
}

fn parse_runs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_RUNS).contains(&n) => Ok(n),
        _ => Err(format!("give a whole number of runs from 1 to {MAX_RUNS}")),
    }
}

/// The JSON line.
#[derive(Serialize)]
struct BenchLine {
    engine: &'static str,
    threads: usize,
    median_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_ms: Option<f64>,
    runs: usize,
    /// With `--batch`: inputs per timed run, and inputs per second at the median.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<KindJson>>,
    /// With `--profile`: the instruction set the kernels ran with and its measured FMA peak
    /// on one core, GFLOP/s (what `peak_pct` divides by, times the threads).
    #[serde(skip_serializing_if = "Option::is_none")]
    isa: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_gflops: Option<f64>,
}

/// One layer kind of `--profile`.
#[derive(Serialize)]
struct KindJson {
    kind: String,
    steps: usize,
    ms: f64,
    gmac: f64,
    gflops: f64,
    /// Share of the measured FMA peak × threads, in percent (0 for steps without MACs).
    peak_pct: f64,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let kind = match (a.engine, a.profile) {
        (None, false) => EngineKind::DEFAULT,
        (None | Some(EngineKind::Aot), true) => EngineKind::Aot,
        (Some(e), true) => bail!(
            "--profile times the AOT engine's kernel calls; it does not apply to --engine {}",
            e.name()
        ),
        (Some(e), false) => e,
    };
    if a.batch.is_some() && a.profile {
        bail!("--profile times one input at a time; it does not apply with --batch");
    }
    let loaded = Loaded::load_at(&a.config, size_arg(a.size.as_deref())?)?;
    let opts = BindOptions {
        ignore_extra: a.ignore_extra,
    };
    // Without a checkpoint, seeded random weights stand in; the AOT binary reads them from a
    // temporary file in the private cache directory.
    let mut random_file = None;
    let (ckpt, weights_path) = match &a.weights {
        Some(p) => (read_checkpoint(p)?, p.clone()),
        None => {
            let bytes = driver::random_checkpoint(&driver::runtime_specs(&loaded.graph), 1);
            let ckpt = weights::load_bytes(&bytes).context("loading the random weights")?;
            if kind == EngineKind::Aot && !a.profile {
                let file = aot::temp_weights(&bytes)?;
                let path = file.path().to_path_buf();
                random_file = Some(file);
                (ckpt, path)
            } else {
                (ckpt, PathBuf::from("random weights"))
            }
        }
    };
    let ms = |name: &str, v: f64| finite(v, || name.to_string()).map(|v| round(v, 3));
    let line = if a.profile {
        let plan = loaded.plan()?;
        let packed = plan
            .pack_weights(&ckpt, opts)
            .with_context(|| loaded.does_not_fit(&weights_path))?;
        let prof = profile::profile(&plan, &packed, a.threads, a.runs)?;
        eprint!("{}", prof.to_table(&plan, 12));
        let rows = prof
            .by_kind()
            .into_iter()
            .map(|r| {
                let kind = r.kind.to_string();
                let what = |field: &str| format!("profile of {kind}: {field}");
                Ok(KindJson {
                    ms: round(finite(r.time.as_secs_f64() * 1e3, || what("ms"))?, 4),
                    gmac: round(r.macs as f64 / 1e9, 4),
                    gflops: round(
                        finite(profile::gflops(r.macs, r.time), || what("gflops"))?,
                        2,
                    ),
                    peak_pct: round(
                        finite(prof.peak_pct(r.macs, r.time), || what("peak_pct"))?,
                        1,
                    ),
                    steps: r.steps,
                    kind,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        BenchLine {
            engine: kind.name(),
            threads: a.threads,
            median_ms: ms("median_ms", prof.total.as_secs_f64() * 1e3)?,
            min_ms: None,
            runs: a.runs,
            batch: None,
            images_per_s: None,
            profile: Some(rows),
            isa: Some(format!("{:?}", prof.isa)),
            peak_gflops: Some(round(finite(prof.peak_gflops, || "peak_gflops".into())?, 2)),
        }
    } else {
        let mut eng = loaded.engine(kind, &ckpt, &weights_path, opts, a.threads, 0)?;
        let (h, w) = loaded.network.input_hw;
        let x = aot::bench_input(3 * h * w);
        let mut y = vec![0f32; loaded.output_shape(0)?.iter().product()];
        let (t, batch) = match a.batch {
            None => (eng.bench(&x, &mut y, kind.warmup_runs(), a.runs)?, None),
            Some(n) => {
                let xs: Vec<&[f32]> = vec![&x[..]; n];
                let mut outs = vec![y.clone(); n];
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
                let t = eng.bench_batch(&xs, &mut ys, kind.warmup_runs(), a.runs)?;
                let per_s = n as f64 / (t.median_ms / 1e3);
                (
                    t,
                    Some((n, round(finite(per_s, || "images_per_s".into())?, 2))),
                )
            }
        };
        BenchLine {
            engine: kind.name(),
            threads: a.threads,
            median_ms: ms("median_ms", t.median_ms)?,
            min_ms: Some(ms("min_ms", t.min_ms)?),
            runs: a.runs,
            batch: batch.map(|b| b.0),
            images_per_s: batch.map(|b| b.1),
            profile: None,
            isa: None,
            peak_gflops: None,
        }
    };
    println!("{}", serde_json::to_string(&line)?);
    drop(random_file);
    Ok(ExitCode::SUCCESS)
}
