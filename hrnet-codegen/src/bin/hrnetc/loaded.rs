//! What the verbs share: a config read once ([`Loaded`]), inputs read through
//! `hrnet_runtime::fsio`, the argument parsers with limits, and the checks every JSON number
//! passes.

use anyhow::{bail, Context, Result};
use hrnet_codegen::build_api::{self, CompileError};
use hrnet_codegen::driver;
use hrnet_codegen::engine::{self, Engine, EngineInput, EngineKind, MakeError, MAX_THREADS};
use hrnet_codegen::plan::{self, Plan};
use hrnet_codegen::target::Target;
use hrnet_ir::front::resolve::MAX_ACTIVATION;
use hrnet_ir::{passes, Graph, Network};
use hrnet_runtime::fsio::{self, Limit};
use hrnet_runtime::weights::{self, BindOptions};
use std::path::{Path, PathBuf};

/// A config read, lowered, optimized and planned: once per command.
pub struct Loaded {
    /// The config file.
    pub config: PathBuf,
    /// The resolved network.
    pub network: Network,
    /// The graph as lowered (the reference interpreter runs it).
    pub graph: Graph,
    /// The graph after every pass (the compiled engines plan it).
    pub optimized: Graph,
}

impl Loaded {
    /// Reads `config` (once), lowers it and runs every pass on a copy.
    pub fn load(config: &Path) -> Result<Loaded> {
        Loaded::load_at(config, None)
    }

    /// [`Loaded::load`] at the input size `size` (height, width) instead of the config's,
    /// when given (`--size H W`).
    pub fn load_at(config: &Path, size: Option<(usize, usize)>) -> Result<Loaded> {
        let (network, graph) = driver::load_config_at(config, size)?;
        Loaded::new(config, network, graph)
    }

    /// The same network re-specialized to the input size (height, width) `(h, w)`: lowered
    /// and optimized anew unless it already has that size.
    pub fn resized(self, h: usize, w: usize) -> Result<Loaded> {
        if self.network.input_hw == (h, w) {
            return Ok(self);
        }
        let (network, graph) = driver::specialize(&self.config, &self.network, h, w)?;
        Loaded::new(&self.config, network, graph)
    }

    fn new(config: &Path, network: Network, graph: Graph) -> Result<Loaded> {
        let mut optimized = graph.clone();
        let all: Vec<&'static passes::Pass> = passes::PASSES.iter().collect();
        driver::optimize(&mut optimized, &all, false, |_, _| {})?;
        Ok(Loaded {
            config: config.into(),
            network,
            graph,
            optimized,
        })
    }

    /// The plan for hrnet-runtime's kernels (the generated Rust, `exec`, the profile), or the
    /// error that says why the compiled engines cannot run this network (the reference engine
    /// still can).
    pub fn plan(&self) -> Result<Plan> {
        self.plan_for(&Target::runtime())
    }

    /// The plan for `target`.
    pub fn plan_for(&self, target: &Target) -> Result<Plan> {
        plan::plan(&self.optimized, target).map_err(|e| {
            anyhow::Error::new(CompileError::from(e))
                .context(format!("compiling {}", self.config.display()))
        })
    }

    /// What generated code says it was made from.
    pub fn source(&self) -> String {
        build_api::source_name(&self.config)
    }

    /// `W does not fit CONFIG`, the context of every binding error.
    pub fn does_not_fit(&self, weights: &Path) -> String {
        format!(
            "{} does not fit {}",
            weights.display(),
            self.config.display()
        )
    }

    /// The shape of the network's output `index` (0: the first), NCHW.
    pub fn output_shape(&self, index: usize) -> Result<[usize; 4]> {
        let outputs = self.graph.outputs();
        let Some(&id) = outputs.get(index) else {
            bail!(
                "{} has {} output(s): there is no output {index}",
                self.config.display(),
                outputs.len()
            );
        };
        let s = self.graph.node(id).shape;
        Ok([1, s.c, s.h, s.w])
    }

    /// Builds engine `kind` making output `output` with `ckpt` (read from `weights`); an AOT
    /// build says on stderr what it is doing and how long it took.
    pub fn engine(
        &self,
        kind: EngineKind,
        ckpt: &weights::Checkpoint,
        weights: &Path,
        opts: BindOptions,
        threads: usize,
        output: usize,
    ) -> Result<Box<dyn Engine>> {
        let source = self.source();
        let plan = match kind {
            EngineKind::Reference => None,
            EngineKind::Aot => Some(self.plan()?),
            #[cfg(feature = "jit")]
            EngineKind::Jit => Some(self.plan_for(&Target::jit())?),
        };
        let input = EngineInput {
            graph: &self.graph,
            plan: plan.as_ref(),
            source: &source,
            ckpt,
            weights,
            opts,
            threads,
            output,
        };
        engine::make(kind, input, &mut report_build).map_err(|e| match e {
            MakeError::Bind(b) => anyhow::Error::new(b).context(self.does_not_fit(weights)),
            e => e.into(),
        })
    }
}

/// Tells the user about an AOT build (a first build takes a minute or two).
pub fn report_build(p: hrnet_codegen::aot::Progress<'_>) {
    match p {
        hrnet_codegen::aot::Progress::Building { dir } => eprintln!(
            "building the generated model with cargo in {} (a first build takes a minute or two)",
            dir.display()
        ),
        hrnet_codegen::aot::Progress::Built { elapsed, .. } => eprintln!(
            "built the generated model in {:.1} s",
            elapsed.as_secs_f64()
        ),
    }
}

/// Reads a checkpoint: a regular file of any size, memory-mapped.
pub fn read_checkpoint(path: &Path) -> Result<weights::Checkpoint> {
    let ckpt = build_api::read_checkpoint(path)?;
    if ckpt.dropped_loss_tensors() > 0 {
        eprintln!(
            "{}: a segmentation training wrapper: dropped its {} loss.* tensor(s), kept the model.* ones",
            path.display(),
            ckpt.dropped_loss_tensors()
        );
    }
    Ok(ckpt)
}

/// Reads the network's input tensor: a regular `.npy` file no larger than float64 data of the
/// network's input shape needs (plus room for the header), of exactly that shape.
pub fn read_input(path: &Path, expected: [usize; 4]) -> Result<Vec<f32>> {
    let n: usize = expected.iter().product();
    let limit = Limit {
        max: (n as u64).saturating_mul(8).saturating_add(1 << 20),
        what: "an input .npy for this network",
    };
    let bytes = fsio::read_regular(path, limit)?;
    let (shape, x) = hrnet_runtime::npy::parse_f32(&bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if shape != expected {
        bail!(
            "{}: input has shape {shape:?}, the network takes {expected:?} (NCHW)",
            path.display()
        );
    }
    Ok(x)
}

/// Largest input .npy of a network whose input size follows its input (segmentation): the
/// float64 data of the largest input any network can take (its stem makes 64 channels at
/// half the input's resolution, at most `MAX_ACTIVATION` values), plus room for the header.
pub const MAX_SIZED_INPUT_BYTES: u64 = (3 * MAX_ACTIVATION as u64 / 16) * 8 + (1 << 20);

/// Reads an input tensor of any shape (checked by the caller) from a regular `.npy` file of
/// at most [`MAX_SIZED_INPUT_BYTES`].
pub fn read_sized_input(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let limit = Limit {
        max: MAX_SIZED_INPUT_BYTES,
        what: "an input .npy",
    };
    let bytes = fsio::read_regular(path, limit)?;
    hrnet_runtime::npy::parse_f32(&bytes).with_context(|| format!("reading {}", path.display()))
}

/// Largest image file read, in bytes (the decoded image is bounded separately, from its
/// header, by `hrnet_runtime::pose::MAX_IMAGE_BYTES` and `MAX_IMAGE_SIDE`).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Reads a JPEG or PNG file (a regular file of at most [`MAX_IMAGE_FILE_BYTES`]) as 8-bit RGB:
/// JPEG decoded as libjpeg-turbo (OpenCV) decodes it, the size checked from the header before
/// any pixel is decoded.
pub fn read_image(path: &Path) -> Result<image::RgbImage> {
    let limit = Limit {
        max: MAX_IMAGE_FILE_BYTES,
        what: "an image",
    };
    let bytes = fsio::read_regular(path, limit)?;
    hrnet_runtime::pose::decode_rgb(&bytes)
        .with_context(|| format!("image file {}", path.display()))
}

/// `--size H W` as `(height, width)`.
pub fn size_arg(size: Option<&[usize]>) -> Result<Option<(usize, usize)>> {
    match size {
        None => Ok(None),
        Some(&[h, w]) => Ok(Some((h, w))),
        Some(v) => bail!(
            "--size takes two numbers, height and width; found {}",
            v.len()
        ),
    }
}

/// `--threads`: 1 to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("expected a whole number of threads from 1 to {MAX_THREADS}"))?;
    if !(1..=MAX_THREADS).contains(&n) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Err(format!(
            "{n} threads: give 1 to {MAX_THREADS} (this machine has {cores} hardware threads)"
        ));
    }
    Ok(n)
}

/// `v` if it is finite; otherwise an error naming `what` (nothing non-finite reaches JSON).
pub fn finite(v: f64, what: impl FnOnce() -> String) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        bail!(
            "{} is {v}: the network produced a value that is not a finite number (check the weights); nothing was written",
            what()
        )
    }
}

/// `v` rounded to `digits` decimals, for JSON people read.
pub fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Numbers in messages: `1e300`, not 301 digits.
pub use hrnet_runtime::pose::transform::readable;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_readably() {
        assert_eq!(readable(-60.0), "-60");
        assert_eq!(readable(0.25), "0.25");
        assert_eq!(readable(1e300), "1e300");
        assert_eq!(readable(-2.5e-300), "-2.5e-300");
        assert_eq!(readable(f64::INFINITY), "inf");
    }

    #[test]
    fn thread_counts_are_bounded() {
        assert_eq!(parse_threads("2"), Ok(2));
        assert!(parse_threads("0").unwrap_err().contains("give 1 to 256"));
        assert!(parse_threads("100000")
            .unwrap_err()
            .contains("100000 threads"));
        assert!(parse_threads("-1").is_err());
    }
}
