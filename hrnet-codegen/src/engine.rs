//! The engines behind `hrnetc run` and `hrnetc bench`, behind one small trait.

use crate::aot;
use crate::plan::Plan;
use hrnet_ir::interp;
use hrnet_ir::Graph;
use hrnet_runtime::weights::{BindOptions, Checkpoint};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A network ready to run: weights bound, code compiled.
pub trait Engine {
    /// Runs on `input` (NCHW, the network's input shape) into `output` (its output shape).
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError>;
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
}

/// The reference interpreter over the raw IR.
#[derive(Debug)]
pub struct Reference {
    graph: Graph,
    weights: HashMap<String, Vec<f32>>,
}

impl Reference {
    /// Binds `ckpt` strictly against `graph`.
    pub fn new(
        graph: Graph,
        ckpt: &Checkpoint,
        opts: BindOptions,
    ) -> Result<Reference, hrnet_runtime::weights::BindError> {
        let weights = crate::driver::reference_weights(ckpt, &graph, opts)?;
        Ok(Reference { graph, weights })
    }
}

impl Engine for Reference {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let outs = interp::run(&self.graph, &self.weights, input)?;
        let out = &outs[0];
        if out.len() != output.len() {
            let s = self.graph.node(self.graph.outputs()[0]).shape;
            return Err(hrnet_runtime::model::RunError::Output {
                expected: [1, s.c, s.h, s.w],
                actual: output.len(),
            }
            .into());
        }
        output.copy_from_slice(out);
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
    tmp: PathBuf,
}

impl Aot {
    /// Emits, builds (or reuses) the binary for `plan`; it will load `weights` itself.
    pub fn new(
        plan: &Plan,
        source: &str,
        weights: &Path,
        threads: usize,
    ) -> Result<Aot, crate::build_api::CompileError> {
        let code = crate::emit::emit(
            plan,
            &crate::emit::EmitOptions {
                source: source.into(),
                embed_weights: None,
            },
        )?;
        let built = aot::build(&code)?;
        let i = plan.input;
        let tmp = std::env::temp_dir().join(format!("hrnet-aot-{}", std::process::id()));
        let o = plan.outputs[0];
        Ok(Aot {
            exe: built.exe,
            weights: weights.into(),
            threads,
            input_shape: [1, i.c, i.h, i.w],
            output_shape: [1, o.c, o.h, o.w],
            tmp,
        })
    }

    /// The built executable.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Times the model in its own process: `(median_ms, min_ms)` over `runs` runs.
    pub fn bench(&self, runs: usize) -> Result<(f64, f64), aot::AotError> {
        let threads = self.threads.to_string();
        let runs = runs.to_string();
        let out = aot::invoke(
            &self.exe,
            &[
                "bench".as_ref(),
                self.weights.as_os_str(),
                threads.as_ref(),
                runs.as_ref(),
            ],
        )?;
        let mut it = out.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(median)), Some(Ok(min))) => Ok((median, min)),
            _ => Err(aot::AotError::Run(format!(
                "unexpected benchmark output: {out}"
            ))),
        }
    }
}

impl Engine for Aot {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let n: usize = self.input_shape.iter().product();
        if input.len() != n {
            return Err(hrnet_runtime::model::RunError::Input {
                expected: self.input_shape,
                actual: input.len(),
            }
            .into());
        }
        std::fs::create_dir_all(&self.tmp)?;
        let (x, y) = (self.tmp.join("input.npy"), self.tmp.join("output.npy"));
        hrnet_runtime::npy::write_f32(&x, &self.input_shape, input)?;
        let threads = self.threads.to_string();
        aot::invoke(
            &self.exe,
            &[
                "run".as_ref(),
                self.weights.as_os_str(),
                threads.as_ref(),
                x.as_os_str(),
                y.as_os_str(),
            ],
        )?;
        let (_, out) = hrnet_runtime::npy::read_f32(&y)?;
        if out.len() != output.len() {
            return Err(hrnet_runtime::model::RunError::Output {
                expected: self.output_shape,
                actual: output.len(),
            }
            .into());
        }
        output.copy_from_slice(&out);
        Ok(())
    }
}

impl Drop for Aot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
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
}

impl<E> std::fmt::Debug for PoseAdapter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseAdapter")
            .field("input_size", &self.input_size)
            .field("joints", &self.joints)
            .finish()
    }
}
