//! `hrnetc`: the HRNet compiler's command line. The interface is stable (see DESIGN.md):
//! other tools depend on it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hrnet_codegen::build_api::{self, CompileError};
use hrnet_codegen::driver;
use hrnet_codegen::engine::{self, Engine};
use hrnet_codegen::target::Target;
use hrnet_ir::passes;
use hrnet_runtime::pose::{self, BoxXywh, Dataset, PoseEstimator};
use hrnet_runtime::weights::{self, BindOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "hrnetc",
    version,
    about = "Compile official HRNet configs into fast, specialized Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum EngineKind {
    /// Cranelift JIT: compiled in-process at load time.
    #[cfg(feature = "jit")]
    Jit,
    /// The generated Rust, built by cargo in a cache directory.
    Aot,
    /// The reference interpreter (slow, obviously correct).
    Reference,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "jit")]
            EngineKind::Jit => "jit",
            EngineKind::Aot => "aot",
            EngineKind::Reference => "reference",
        }
    }
}

#[cfg(feature = "jit")]
const DEFAULT_ENGINE: &str = "jit";
#[cfg(not(feature = "jit"))]
const DEFAULT_ENGINE: &str = "aot";

#[derive(Subcommand)]
enum Command {
    /// Compile a config to specialized Rust.
    Compile {
        /// The official experiment YAML.
        config: PathBuf,
        /// The Rust file to write (atomically).
        #[arg(short, long)]
        output: PathBuf,
        /// Check this checkpoint against the network now (and embed it with --embed-weights).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Embed the weights: writes `<output stem>.weights.safetensors` next to the output
        /// and adds `Model::embedded()`.
        #[arg(long, requires = "weights")]
        embed_weights: bool,
        /// Accept checkpoint tensors the network does not use.
        #[arg(long)]
        ignore_extra: bool,
    },
    /// Print the IR of a config, raw or after passes.
    Graph {
        /// The official experiment YAML.
        config: PathBuf,
        /// `none`, `all`, or a comma-separated list of pass names.
        #[arg(long, default_value = "all")]
        passes: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
        /// Also print the graph after this pass (repeatable).
        #[arg(long = "print-after", value_name = "NAME")]
        print_after: Vec<String>,
        /// Print conv count, MACs, parameters and arena bytes instead of the graph.
        #[arg(long)]
        stats: bool,
        /// Print how long each pass took (to stderr).
        #[arg(long = "time-passes")]
        time_passes: bool,
    },
    /// Run a network on an .npy tensor, or on an image for keypoints.
    Run {
        /// The official experiment YAML.
        config: PathBuf,
        /// The checkpoint (safetensors, .pth zip or legacy, training checkpoint).
        #[arg(long)]
        weights: PathBuf,
        /// Input tensor: float32 or float64 .npy of shape (1, 3, H, W).
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        input: Option<PathBuf>,
        /// Input image (JPEG or PNG) for pose estimation.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Person box `x,y,w,h` in image pixels (repeatable; default: the whole image).
        #[arg(long = "box", value_name = "X,Y,W,H", requires = "image")]
        boxes: Vec<String>,
        /// Flip test: average with the heatmaps of the mirrored crop.
        #[arg(long, requires = "image")]
        flip: bool,
        /// Draw the skeletons over the image into this PNG.
        #[arg(long, requires = "image")]
        draw: Option<PathBuf>,
        /// Output: .npy heatmaps (with --input) or .json keypoints (with --image).
        #[arg(long)]
        output: PathBuf,
        /// Engine.
        #[arg(long, value_enum, default_value = DEFAULT_ENGINE)]
        engine: EngineKind,
        /// Threads the kernels use.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Accept checkpoint tensors the network does not use.
        #[arg(long)]
        ignore_extra: bool,
    },
    /// Time a network; prints one JSON line.
    Bench {
        /// The official experiment YAML.
        config: PathBuf,
        /// The checkpoint (default: seeded random weights).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Engine [default: jit; aot with --profile].
        #[arg(long, value_enum)]
        engine: Option<EngineKind>,
        /// Threads the kernels use.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs (after two warm-up runs).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Time every kernel call of the AOT engine's plan; adds time and GFLOP/s per layer
        /// kind to the JSON line and prints a table (kinds, then the slowest steps) to stderr.
        #[arg(long)]
        profile: bool,
        /// Accept checkpoint tensors the network does not use.
        #[arg(long)]
        ignore_extra: bool,
    },
    /// List a checkpoint's tensors; with a config, what is missing, extra or mis-shaped.
    Inspect {
        /// The checkpoint.
        weights: PathBuf,
        /// Check it against this config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message before it
/// already contains (many library errors print their source themselves).
fn render_error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Compile {
            config,
            output,
            weights,
            embed_weights,
            ignore_extra,
        } => {
            let opts = BindOptions { ignore_extra };
            let start = Instant::now();
            match (&weights, embed_weights) {
                (Some(w), true) => build_api::compile_file(&config, &output, Some((w, opts)))?,
                (Some(w), false) => {
                    let (_, p) = build_api::plan_config(&config, &Target::runtime())?;
                    let ckpt = load_weights(w)?;
                    p.pack_weights(&ckpt, opts).with_context(|| {
                        format!("{} does not fit {}", w.display(), config.display())
                    })?;
                    build_api::compile_file(&config, &output, None)?;
                }
                (None, _) => build_api::compile_file(&config, &output, None)?,
            }
            eprintln!(
                "wrote {} in {:.0} ms",
                output.display(),
                start.elapsed().as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            config,
            passes: spec,
            format,
            print_after,
            stats,
            time_passes,
        } => {
            graph(&config, &spec, format, &print_after, stats, time_passes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            weights,
            input,
            image,
            boxes,
            flip,
            draw,
            output,
            engine,
            threads,
            ignore_extra,
        } => {
            let opts = BindOptions { ignore_extra };
            let ckpt = load_weights(&weights)?;
            let (net, mut eng) = make_engine(&config, &ckpt, &weights, opts, engine, threads)?;
            let (h, w) = net.input_hw;
            match (input, image) {
                (Some(input), _) => {
                    let (shape, x) = hrnet_runtime::npy::read_f32(&input)
                        .with_context(|| format!("reading {}", input.display()))?;
                    let expected = [1, 3, h, w];
                    if shape != expected {
                        bail!(
                            "{}: input has shape {shape:?}, the network takes {expected:?} (NCHW)",
                            input.display()
                        );
                    }
                    let (_, g) = driver::load_config(&config)?;
                    let o = g.node(g.outputs()[0]).shape;
                    let mut y = vec![0f32; o.len()];
                    eng.run(&x, &mut y)?;
                    hrnet_runtime::npy::write_f32(&output, &[1, o.c, o.h, o.w], &y)
                        .with_context(|| format!("writing {}", output.display()))?;
                    eprintln!(
                        "{} engine: wrote {} (1x{}x{}x{})",
                        engine.name(),
                        output.display(),
                        o.c,
                        o.h,
                        o.w
                    );
                }
                (None, Some(image)) => {
                    let hrnet_ir::front::Task::Pose { num_joints, .. } = net.task else {
                        bail!(
                            "--image needs a pose network; {} is a {} network",
                            config.display(),
                            net.task.kind()
                        );
                    };
                    pose_image(
                        eng,
                        (w, h),
                        num_joints,
                        &image,
                        &boxes,
                        flip,
                        &output,
                        draw.as_deref(),
                    )?;
                }
                (None, None) => bail!("give --input X.npy or --image IMG"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            config,
            weights,
            engine,
            threads,
            runs,
            profile,
            ignore_extra,
        } => {
            let engine = match (engine, profile) {
                (None, false) => EngineKind::from_str(DEFAULT_ENGINE, false)
                    .map_err(anyhow::Error::msg)?,
                (None | Some(EngineKind::Aot), true) => EngineKind::Aot,
                (Some(e), true) => bail!(
                    "--profile times the AOT engine's kernel calls; it does not apply to --engine {}",
                    e.name()
                ),
                (Some(e), false) => e,
            };
            bench(
                &config,
                weights.as_deref(),
                engine,
                threads,
                runs,
                profile,
                BindOptions { ignore_extra },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { weights, config } => inspect(&weights, config.as_deref()),
    }
}

fn load_weights(path: &Path) -> Result<weights::Checkpoint> {
    weights::load(path).with_context(|| format!("reading checkpoint {}", path.display()))
}

/// Builds the engine `kind` for `config` with `ckpt` (read from `weights_path`).
fn make_engine(
    config: &Path,
    ckpt: &weights::Checkpoint,
    weights_path: &Path,
    opts: BindOptions,
    kind: EngineKind,
    threads: usize,
) -> Result<(hrnet_ir::Network, Box<dyn Engine>)> {
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let fits = || {
        format!(
            "{} does not fit {}",
            weights_path.display(),
            config.display()
        )
    };
    match kind {
        EngineKind::Reference => {
            let (net, g) = driver::load_config(config)?;
            if !net.task.head_supported() {
                return Err(CompileError::Head {
                    path: config.into(),
                    task: net.task.kind(),
                }
                .into());
            }
            let e = engine::Reference::new(g, ckpt, opts).with_context(fits)?;
            Ok((net, Box::new(e)))
        }
        EngineKind::Aot => {
            let (net, p) = build_api::plan_config(config, &Target::runtime())?;
            // Check the weights here, where the error message is best.
            p.pack_weights(ckpt, opts).with_context(fits)?;
            if opts.ignore_extra {
                bail!("--ignore-extra is not supported with --engine aot yet: the built model loads strictly");
            }
            let source = config
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let e = engine::Aot::new(&p, &source, weights_path, threads)?;
            Ok((net, Box::new(e)))
        }
        #[cfg(feature = "jit")]
        EngineKind::Jit => {
            let (net, p) = build_api::plan_config(config, &Target::jit())?;
            let e =
                hrnet_codegen::jit::JitEngine::new(&p, ckpt, opts, threads).with_context(fits)?;
            Ok((net, Box::new(e)))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pose_image(
    eng: Box<dyn Engine>,
    input_size: (usize, usize),
    joints: usize,
    image: &Path,
    boxes: &[String],
    flip: bool,
    output: &Path,
    draw: Option<&Path>,
) -> Result<()> {
    let img = pose::load_rgb(image)?;
    let boxes: Vec<BoxXywh> = if boxes.is_empty() {
        vec![BoxXywh::whole_image(img.width(), img.height())]
    } else {
        boxes.iter().map(|b| parse_box(b)).collect::<Result<_>>()?
    };
    let adapter = engine::PoseAdapter {
        engine: eng,
        input_size,
        joints,
    };
    let mut est = PoseEstimator::new(adapter)?;
    let people = est.estimate(&img, &boxes, flip)?;
    let dataset = est.dataset();
    let json = people_json(&people, dataset);
    build_api::write_atomic(output, json.as_bytes())?;
    eprintln!(
        "wrote {}: {} {} with {} keypoints each",
        output.display(),
        people.len(),
        if people.len() == 1 {
            "person"
        } else {
            "people"
        },
        joints
    );
    if let Some(path) = draw {
        let mut canvas = img.clone();
        let style = pose::DrawStyle::for_image(&canvas);
        for p in &people {
            pose::draw_keypoints(&mut canvas, &p.keypoints, dataset, &style);
        }
        pose::save_png(&canvas, path)?;
        eprintln!("drew the skeletons into {}", path.display());
    }
    Ok(())
}

fn parse_box(s: &str) -> Result<BoxXywh> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--box {s}: expected four numbers x,y,w,h"))?;
    let [x, y, w, h] = v[..] else {
        bail!(
            "--box {s}: expected four numbers x,y,w,h, found {}",
            v.len()
        )
    };
    if w <= 0.0 || h <= 0.0 || !v.iter().all(|c| c.is_finite()) {
        bail!("--box {s}: width and height must be positive and finite");
    }
    Ok(BoxXywh::new(x, y, w, h))
}

/// `{"dataset": …, "people": [{"box": [x,y,w,h], "keypoints": [[x,y,score], …], "score": …}]}`
fn people_json(people: &[pose::PersonKeypoints], dataset: Dataset) -> String {
    let mut s = format!("{{\"dataset\": \"{dataset:?}\", \"people\": [");
    for (i, p) in people.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let b = &p.bbox;
        let mean =
            p.keypoints.iter().map(|k| k.score).sum::<f64>() / p.keypoints.len().max(1) as f64;
        s.push_str(&format!(
            "{{\"box\": [{}, {}, {}, {}], \"score\": {mean}, \"keypoints\": [",
            b.x, b.y, b.w, b.h
        ));
        for (j, k) in p.keypoints.iter().enumerate() {
            if j > 0 {
                s.push_str(", ");
            }
            s.push_str(&format!("[{}, {}, {}]", k.x, k.y, k.score));
        }
        s.push_str("]}");
    }
    s.push_str("]}\n");
    s
}

fn bench(
    config: &Path,
    weights_path: Option<&Path>,
    kind: EngineKind,
    threads: usize,
    runs: usize,
    profile: bool,
    opts: BindOptions,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    // Without a checkpoint, seeded random weights stand in (written once to the cache).
    let random_path;
    let weights_path = match weights_path {
        Some(p) => p,
        None => {
            let (_, g) = driver::load_config(config)?;
            let specs = driver::runtime_specs(&g);
            let bytes = driver::random_checkpoint(&specs, 1);
            let dir = hrnet_codegen::aot::cache_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("random-weights");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            random_path = dir.join(format!("{:016x}.safetensors", fnv(&bytes)));
            if !random_path.exists() {
                build_api::write_atomic(&random_path, &bytes)?;
            }
            &random_path
        }
    };
    let ckpt = load_weights(weights_path)?;
    let (median, min) = match kind {
        EngineKind::Aot => {
            let (_, p) = build_api::plan_config(config, &Target::runtime())?;
            let packed = p.pack_weights(&ckpt, opts).with_context(|| {
                format!(
                    "{} does not fit {}",
                    weights_path.display(),
                    config.display()
                )
            })?;
            if profile {
                let prof = hrnet_codegen::profile::profile(&p, &packed, threads, runs)?;
                eprint!("{}", prof.to_table(&p, 12));
                let median = prof.total.as_secs_f64() * 1e3;
                println!(
                    "{{\"engine\":\"aot\",\"threads\":{threads},\"median_ms\":{median:.3},\"runs\":{runs},{}}}",
                    prof.to_json_field()
                );
                return Ok(());
            }
            let source = config
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            engine::Aot::new(&p, &source, weights_path, threads)?.bench(runs)?
        }
        _ => {
            let (net, mut eng) = make_engine(config, &ckpt, weights_path, opts, kind, threads)?;
            let (h, w) = net.input_hw;
            let x = hrnet_codegen::aot::bench_input(3 * h * w);
            let (_, g) = driver::load_config(config)?;
            let mut y = vec![0f32; g.node(g.outputs()[0]).shape.len()];
            let warmup = if kind == EngineKind::Reference { 0 } else { 2 };
            for _ in 0..warmup {
                eng.run(&x, &mut y)?;
            }
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t = Instant::now();
                eng.run(&x, &mut y)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            (times[times.len() / 2], times[0])
        }
    };
    println!(
        "{{\"engine\":\"{}\",\"threads\":{threads},\"median_ms\":{median:.3},\"min_ms\":{min:.3},\"runs\":{runs}}}",
        kind.name()
    );
    Ok(())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn graph(
    config: &Path,
    spec: &str,
    format: GraphFormat,
    print_after: &[String],
    stats: bool,
    time: bool,
) -> Result<()> {
    let list = passes::parse_list(spec).map_err(anyhow::Error::msg)?;
    for name in print_after {
        if passes::by_name(name).is_none() {
            bail!("--print-after {name}: no such pass");
        }
    }
    let (_, mut g) = driver::load_config(config)?;
    let render = |g: &hrnet_ir::Graph| match format {
        GraphFormat::Text => hrnet_ir::print::to_text(g),
        GraphFormat::Dot => hrnet_ir::print::to_dot(g),
    };
    let timings = driver::optimize(&mut g, &list, false, |name, g| {
        if print_after.iter().any(|p| p == name) {
            println!("; after {name}");
            print!("{}", render(g));
        }
    })?;
    if time {
        for t in &timings {
            let note = if t.changed { "" } else { " (no change)" };
            eprintln!("{:>10.3} ms  {}{note}", t.time.as_secs_f64() * 1e3, t.name);
        }
    }
    if stats {
        println!("{}", hrnet_ir::stats::stats(&g));
    } else {
        print!("{}", render(&g));
    }
    Ok(())
}

fn inspect(path: &Path, config: Option<&Path>) -> Result<ExitCode> {
    let ckpt = load_weights(path)?;
    let training = if ckpt.from_training_checkpoint() {
        ", unwrapped from a training checkpoint"
    } else {
        ""
    };
    println!(
        "{}: {}{training}, {} tensors",
        path.display(),
        ckpt.format(),
        ckpt.len()
    );
    for (name, t) in ckpt.iter() {
        println!("  {name:<60} {:<5} {:?}", t.dtype.to_string(), t.shape);
    }
    let Some(config) = config else {
        return Ok(ExitCode::SUCCESS);
    };
    let (_, g) = driver::load_config(config)?;
    let specs = driver::runtime_specs(&g);
    match ckpt.bind(&specs, BindOptions::default()) {
        Ok(_) => {
            println!(
                "{} fits {}: all {} tensors present with the right shapes",
                path.display(),
                config.display(),
                specs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{} does not fit {}:\n{e}", path.display(), config.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
