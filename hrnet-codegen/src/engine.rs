//! The engines behind `hrnetc run` and `hrnetc bench`, behind one small trait, and [`make`],
//! which builds the one a command asks for.

use crate::aot;
use crate::build_api::CompileError;
use crate::plan::Plan;
use hrnet_ir::interp;
use hrnet_ir::Graph;
use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Most threads an engine may use. Each thread spins while the network runs and gets its own
/// scratch; HRNet's largest layers have a few hundred independent tasks, so more threads than
/// this only cost memory and context switches.
pub const MAX_THREADS: usize = 256;

/// Which engine runs a network.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum EngineKind {
    /// Cranelift JIT: compiled in-process at load time.
    #[cfg(feature = "jit")]
    Jit,
    /// The generated Rust, built by cargo in a cache directory.
    Aot,
    /// The reference interpreter (slow, obviously correct).
    Reference,
}

impl EngineKind {
    /// The default engine: the JIT when it is built in, else the AOT engine.
    #[cfg(feature = "jit")]
    pub const DEFAULT: EngineKind = EngineKind::Jit;
    /// The default engine: the JIT when it is built in, else the AOT engine.
    #[cfg(not(feature = "jit"))]
    pub const DEFAULT: EngineKind = EngineKind::Aot;

    /// The name on the command line and in `hrnetc bench`'s JSON.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "jit")]
            EngineKind::Jit => "jit",
            EngineKind::Aot => "aot",
            EngineKind::Reference => "reference",
        }
    }

    /// Untimed runs before a benchmark's timed ones (the reference interpreter has nothing to
    /// warm up and is slow).
    pub fn warmup_runs(self) -> usize {
        match self {
            EngineKind::Reference => 0,
            _ => 2,
        }
    }
}

/// Median and fastest of a benchmark's timed runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median, in milliseconds.
    pub median_ms: f64,
    /// Fastest, in milliseconds.
    pub min_ms: f64,
}

/// A network ready to run: weights bound, code compiled. It makes one of the network's
/// outputs, chosen when it is made ([`EngineInput::output`]).
pub trait Engine {
    /// Runs on `input` (NCHW, the network's input shape) into `output` (the shape of the
    /// output the engine makes).
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError>;

    /// Runs on every input of a batch: `outputs[i]` receives what [`Engine::run`] makes of
    /// `inputs[i]`. The default runs them one by one; an engine that runs whole inputs side by
    /// side on its threads overrides it.
    fn run_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), EngineError> {
        run_one_by_one(self, inputs, outputs)
    }

    /// Times `runs` runs on `input` after `warmup` untimed ones.
    fn bench(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        for _ in 0..warmup {
            self.run(input, output)?;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            self.run(input, output)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(Timing {
            median_ms: times[times.len() / 2],
            min_ms: times[0],
        })
    }

    /// Times `runs` calls of [`Engine::run_batch`] on `inputs` after `warmup` untimed ones.
    fn bench_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        for _ in 0..warmup {
            self.run_batch(inputs, outputs)?;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            self.run_batch(inputs, outputs)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(Timing {
            median_ms: times[times.len() / 2],
            min_ms: times[0],
        })
    }
}

impl EngineError {
    /// The error of input `index` of a batch ([`RunError::in_batch`]).
    ///
    /// [`RunError::in_batch`]: hrnet_runtime::model::RunError::in_batch
    pub fn in_batch(self, index: usize) -> EngineError {
        match self {
            EngineError::Run(e) => EngineError::Run(e.in_batch(index)),
            e => e,
        }
    }
}

/// A batch run one input after the other with [`Engine::run`] (the default
/// [`Engine::run_batch`], and what an engine that overrides it falls back to): the batch's
/// lengths are checked first, and an error names the input's index.
pub fn run_one_by_one<E: Engine + ?Sized>(
    engine: &mut E,
    inputs: &[&[f32]],
    outputs: &mut [&mut [f32]],
) -> Result<(), EngineError> {
    check_batch(inputs, outputs)?;
    for (i, (x, y)) in inputs.iter().zip(outputs.iter_mut()).enumerate() {
        engine.run(x, y).map_err(|e| e.in_batch(i))?;
    }
    Ok(())
}

/// A batch has at least one input and one output per input.
fn check_batch(inputs: &[&[f32]], outputs: &[&mut [f32]]) -> Result<(), EngineError> {
    use hrnet_runtime::model::RunError;
    if inputs.is_empty() {
        return Err(RunError::EmptyBatch.into());
    }
    if inputs.len() != outputs.len() {
        return Err(RunError::BatchLength {
            inputs: inputs.len(),
            outputs: outputs.len(),
        }
        .into());
    }
    Ok(())
}

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The reference interpreter refused.
    #[error(transparent)]
    Reference(#[from] interp::InterpError),
    /// Wrong buffer sizes.
    #[error(transparent)]
    Run(#[from] hrnet_runtime::model::RunError),
    /// The AOT binary failed.
    #[error(transparent)]
    Aot(#[from] aot::AotError),
    /// Temporary files for the AOT binary.
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
    /// Reading the AOT binary's output.
    #[error(transparent)]
    Npy(#[from] hrnet_runtime::npy::NpyError),
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        (**self).run(input, output)
    }
    fn bench(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        (**self).bench(input, output, warmup, runs)
    }
}

/// Why [`make`] could not build an engine.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// The checkpoint does not hold exactly the tensors the network needs.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Emitting or building the generated Rust (`aot`).
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Compiling the plan with cranelift (`jit`).
    #[cfg(feature = "jit")]
    #[error(transparent)]
    Jit(crate::jit::JitError),
    /// The AOT engine's binary loads its checkpoint strictly.
    #[error("accepting extra checkpoint tensors is not supported by the AOT engine yet: the built model loads strictly")]
    IgnoreExtraAot,
    /// A compiled engine asked for without a plan.
    #[error("the {0} engine needs a plan of the network")]
    NoPlan(&'static str),
    /// A thread count of 0 or above [`MAX_THREADS`].
    #[error("{0} threads: an engine runs on 1 to {MAX_THREADS} threads")]
    Threads(usize),
    /// An output index past the network's outputs.
    #[error("the network has {outputs} output(s): there is no output {index}")]
    NoOutput {
        /// The index asked for.
        index: usize,
        /// Outputs the network has.
        outputs: usize,
    },
}

/// What [`make`] builds an engine from.
#[derive(Debug, Clone, Copy)]
pub struct EngineInput<'a> {
    /// The network as lowered (the reference interpreter runs it).
    pub graph: &'a Graph,
    /// Its plan (the compiled engines render it; the reference engine needs none).
    pub plan: Option<&'a Plan>,
    /// Where the config came from, for the generated code's header.
    pub source: &'a str,
    /// The checkpoint.
    pub ckpt: &'a Checkpoint,
    /// The file it was read from (the AOT binary reads it itself).
    pub weights: &'a Path,
    /// How strictly to bind it.
    pub opts: BindOptions,
    /// Threads the kernels use, 1 to [`MAX_THREADS`].
    pub threads: usize,
    /// Which of the graph's outputs the engine makes (0: the first; HRNet-OCR's auxiliary
    /// logits are output 1).
    pub output: usize,
}

/// Builds the engine `kind`; `progress` hears about a (slow) AOT build.
pub fn make(
    kind: EngineKind,
    input: EngineInput<'_>,
    progress: &mut dyn FnMut(aot::Progress<'_>),
) -> Result<Box<dyn Engine>, MakeError> {
    let EngineInput {
        graph,
        plan,
        source,
        ckpt,
        weights,
        opts,
        threads,
        output,
    } = input;
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(MakeError::Threads(threads));
    }
    let outputs = graph.outputs().len();
    if output >= outputs {
        return Err(MakeError::NoOutput {
            index: output,
            outputs,
        });
    }
    let planned = || plan.ok_or(MakeError::NoPlan(kind.name()));
    Ok(match kind {
        EngineKind::Reference => Box::new(Reference {
            output,
            ..Reference::new(graph.clone(), ckpt, opts)?
        }),
        EngineKind::Aot => {
            let plan = planned()?;
            // Check the weights here, where the error message is best.
            plan.pack_weights(ckpt, opts)?;
            if opts.ignore_extra {
                return Err(MakeError::IgnoreExtraAot);
            }
            Box::new(Aot::with_output(
                plan, source, weights, threads, output, progress,
            )?)
        }
        #[cfg(feature = "jit")]
        EngineKind::Jit => Box::new(
            crate::jit::JitEngine::with_output(planned()?, ckpt, opts, threads, output).map_err(
                |e| match e {
                    crate::jit::JitEngineError::Bind(b) => MakeError::Bind(b),
                    crate::jit::JitEngineError::Compile(c) => MakeError::Jit(c),
                },
            )?,
        ),
    })
}

/// The reference interpreter over the raw IR.
#[derive(Debug)]
pub struct Reference {
    graph: Graph,
    weights: HashMap<String, Vec<f32>>,
    /// The output [`Engine::run`] writes.
    output: usize,
}

impl Reference {
    /// Binds `ckpt` strictly against `graph`; runs make its first output.
    pub fn new(
        graph: Graph,
        ckpt: &Checkpoint,
        opts: BindOptions,
    ) -> Result<Reference, hrnet_runtime::weights::BindError> {
        let weights = crate::driver::reference_weights(ckpt, &graph, opts)?;
        Ok(Reference {
            graph,
            weights,
            output: 0,
        })
    }
}

impl Engine for Reference {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let mut outs = interp::run(&self.graph, &self.weights, input)?;
        let (index, count) = (self.output, outs.len());
        if index >= count {
            return Err(interp::InterpError::Internal(format!(
                "the graph made {count} output(s), not output {index}"
            ))
            .into());
        }
        let out = outs.swap_remove(index);
        if out.len() != output.len() {
            let expected = self
                .graph
                .outputs()
                .get(index)
                .map_or([1, out.len(), 1, 1], |&id| {
                    let s = self.graph.node(id).shape;
                    [1, s.c, s.h, s.w]
                });
            return Err(hrnet_runtime::model::RunError::Output {
                expected,
                actual: output.len(),
            }
            .into());
        }
        output.copy_from_slice(&out);
        Ok(())
    }
}

/// The generated Rust, built by cargo and run as a separate process.
#[derive(Debug)]
pub struct Aot {
    exe: PathBuf,
    weights: PathBuf,
    threads: usize,
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    /// The output index the binary is asked for (networks with several outputs only).
    output: Option<String>,
    /// A fresh private directory for the binary's input and output files.
    work: tempfile::TempDir,
}

/// A new private directory (mode 0700, a random name created exclusively) under `parent` for
/// the AOT binary's files: nothing another user planted there earlier is ever used.
fn work_dir_in(parent: &Path) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("hrnet-aot-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir_in(parent)
}

impl Aot {
    /// Emits, builds (or reuses) the binary for `plan`; it will load `weights` itself.
    /// `progress` hears when a build starts and ends (not on a cache hit).
    pub fn new(
        plan: &Plan,
        source: &str,
        weights: &Path,
        threads: usize,
        progress: &mut dyn FnMut(aot::Progress<'_>),
    ) -> Result<Aot, CompileError> {
        Aot::with_output(plan, source, weights, threads, 0, progress)
    }

    /// [`Aot::new`] making output `output` of the plan's (HRNet-OCR's auxiliary logits are
    /// output 1).
    ///
    /// # Panics
    /// If the plan has no output `output` (checked by [`make`]).
    pub fn with_output(
        plan: &Plan,
        source: &str,
        weights: &Path,
        threads: usize,
        output: usize,
        progress: &mut dyn FnMut(aot::Progress<'_>),
    ) -> Result<Aot, CompileError> {
        let code = crate::emit::emit(
            plan,
            &crate::emit::EmitOptions {
                source: source.into(),
                embed_weights: None,
            },
        )?;
        let built = aot::build(&code, plan.outputs.len(), progress)?;
        let work = work_dir_in(&std::env::temp_dir()).map_err(|error| CompileError::Write {
            path: std::env::temp_dir(),
            error,
        })?;
        let (i, o) = (plan.input, plan.outputs[output]);
        Ok(Aot {
            exe: built.exe,
            weights: weights.into(),
            threads,
            output: (plan.outputs.len() > 1).then(|| output.to_string()),
            input_shape: [1, i.c, i.h, i.w],
            output_shape: [1, o.c, o.h, o.w],
            work,
        })
    }

    /// The built executable.
    pub fn exe(&self) -> &Path {
        &self.exe
    }
}

impl Aot {
    /// Runs the binary once on every input (one input file of shape `[N, C, H, W]`; with
    /// several, the binary runs them side by side on its threads) into `outputs`. The lengths
    /// are checked first; an error names the input's index when `batch` is set.
    fn run_files(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        batch: bool,
    ) -> Result<(), EngineError> {
        use hrnet_runtime::model::RunError;
        let at = |e: EngineError, i: usize| if batch { e.in_batch(i) } else { e };
        let per_input: usize = self.input_shape.iter().product();
        let per_output: usize = self.output_shape.iter().product();
        for (i, (x, y)) in inputs.iter().zip(outputs.iter()).enumerate() {
            if x.len() != per_input {
                let e = RunError::Input {
                    expected: self.input_shape,
                    actual: x.len(),
                };
                return Err(at(e.into(), i));
            }
            if y.len() != per_output {
                let e = RunError::Output {
                    expected: self.output_shape,
                    actual: y.len(),
                };
                return Err(at(e.into(), i));
            }
        }
        let (xf, yf) = (
            self.work.path().join("input.npy"),
            self.work.path().join("output.npy"),
        );
        let mut shape = self.input_shape;
        shape[0] = inputs.len();
        hrnet_runtime::npy::write_f32(&xf, &shape, &inputs.concat())?;
        let threads = self.threads.to_string();
        let mut args = vec![
            "run".as_ref(),
            self.weights.as_os_str(),
            threads.as_ref(),
            xf.as_os_str(),
            yf.as_os_str(),
        ];
        args.extend(self.output.as_deref().map(std::ffi::OsStr::new));
        aot::invoke(&self.exe, &args)?;
        let (_, out) = hrnet_runtime::npy::read_f32(&yf)?;
        if out.len() != per_output * outputs.len() {
            return Err(aot::AotError::Run(format!(
                "the binary wrote {} values for {} output(s) of {per_output}",
                out.len(),
                outputs.len()
            ))
            .into());
        }
        for (y, o) in outputs.iter_mut().zip(out.chunks(per_output)) {
            y.copy_from_slice(o);
        }
        Ok(())
    }

    /// Times the model in its own process on `batch` copies of [`aot::bench_input`] (which
    /// the binary makes itself).
    fn bench_in_process(
        &mut self,
        batch: usize,
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        let (threads, runs, warmup, batch) = (
            self.threads.to_string(),
            runs.to_string(),
            warmup.to_string(),
            batch.to_string(),
        );
        let out = aot::invoke(
            &self.exe,
            &[
                "bench".as_ref(),
                self.weights.as_os_str(),
                threads.as_ref(),
                runs.as_ref(),
                warmup.as_ref(),
                batch.as_ref(),
            ],
        )?;
        let mut it = out.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(median_ms)), Some(Ok(min_ms))) => Ok(Timing { median_ms, min_ms }),
            _ => Err(aot::AotError::Run(format!("unexpected benchmark output: {out}")).into()),
        }
    }
}

impl Engine for Aot {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        self.run_files(&[input], &mut [output], false)
    }

    /// One process for the whole batch: the binary runs whole inputs side by side on its
    /// threads (`Model::run_batch`).
    fn run_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), EngineError> {
        check_batch(inputs, outputs)?;
        self.run_files(inputs, outputs, true)
    }

    /// Times the model in its own process, on [`aot::bench_input`] (which the binary makes
    /// itself); any other input is timed through [`Engine::run`], a process per run.
    fn bench(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        if input != aot::bench_input(input.len()).as_slice() {
            let mut this = AotRuns(self);
            return this.bench(input, output, warmup, runs);
        }
        self.bench_in_process(1, warmup, runs)
    }

    /// As [`Aot::bench`], for a batch: in the binary's process when every input is
    /// [`aot::bench_input`], else a process per timed `run_batch`.
    fn bench_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        warmup: usize,
        runs: usize,
    ) -> Result<Timing, EngineError> {
        check_batch(inputs, outputs)?;
        let fixed = aot::bench_input(inputs[0].len());
        if inputs.iter().any(|x| *x != fixed.as_slice()) {
            let mut this = AotRuns(self);
            return this.bench_batch(inputs, outputs, warmup, runs);
        }
        self.bench_in_process(inputs.len(), warmup, runs)
    }
}

/// The AOT engine timed run by run through [`Engine::run`] (the trait's default `bench`).
struct AotRuns<'a>(&'a mut Aot);

impl Engine for AotRuns<'_> {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        self.0.run(input, output)
    }
    fn run_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), EngineError> {
        self.0.run_batch(inputs, outputs)
    }
}

/// Adapts any engine to the pose pipeline.
pub struct PoseAdapter<E> {
    /// The engine.
    pub engine: E,
    /// Input `(width, height)`.
    pub input_size: (usize, usize),
    /// Joints.
    pub joints: usize,
}

impl<E: Engine> hrnet_runtime::pose::HeatmapModel for PoseAdapter<E> {
    fn input_size(&self) -> (usize, usize) {
        self.input_size
    }
    fn num_joints(&self) -> usize {
        self.joints
    }
    fn run(
        &mut self,
        input: &[f32],
        heatmaps: &mut [f32],
    ) -> Result<(), hrnet_runtime::pose::ModelError> {
        Ok(self.engine.run(input, heatmaps)?)
    }
    fn run_batch(
        &mut self,
        inputs: &[f32],
        heatmaps: &mut [f32],
    ) -> Result<(), hrnet_runtime::pose::ModelError> {
        let (w, h) = self.input_size();
        let (hw, hh) = self.heatmap_size();
        let x_len = w.saturating_mul(h).saturating_mul(3);
        let y_len = hw.saturating_mul(hh).saturating_mul(self.joints);
        let engine = &mut self.engine;
        hrnet_runtime::pose::run_in_batches(inputs, heatmaps, x_len, y_len, |xs, ys| {
            engine.run_batch(xs, ys)
        })
    }
}

impl<E> std::fmt::Debug for PoseAdapter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseAdapter")
            .field("input_size", &self.input_size)
            .field("joints", &self.joints)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AOT engine's files go into a new directory of its own: a directory or symlink
    /// planted under the name an earlier version used (`hrnet-aot-<pid>`) is not followed.
    #[cfg(unix)]
    #[test]
    fn work_dir_never_follows_a_planted_symlink() {
        let parent = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        let planted = parent
            .path()
            .join(format!("hrnet-aot-{}", std::process::id()));
        std::os::unix::fs::symlink(victim.path(), &planted).unwrap();
        let work = work_dir_in(parent.path()).unwrap();
        assert_ne!(work.path(), planted);
        let meta = std::fs::symlink_metadata(work.path()).unwrap();
        assert!(meta.is_dir() && !meta.file_type().is_symlink());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        hrnet_runtime::npy::write_f32(work.path().join("input.npy"), &[1], &[1.0]).unwrap();
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    }
}
