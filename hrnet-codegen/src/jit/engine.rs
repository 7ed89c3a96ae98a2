//! [`JitEngine`]: a [`JitModel`] with its packed weights and working memory behind the
//! [`Engine`] trait of `hrnetc run/bench --engine jit`.

use super::{JitError, JitModel, JitRunError};
use crate::engine::{Engine, EngineError};
use crate::plan::Plan;
use hrnet_runtime::model::{RunError, Scratch};
use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint};

/// Why a [`JitEngine`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JitEngineError {
    /// Compiling failed.
    #[error(transparent)]
    Compile(#[from] JitError),
    /// The checkpoint does not hold exactly the tensors the network needs.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A compiled plan, its weights and one caller's scratch.
#[derive(Debug)]
pub struct JitEngine {
    model: JitModel,
    packed: Vec<f32>,
    scratch: Scratch,
    /// The output [`Engine::run`] writes.
    output: usize,
    /// Buffers for the outputs before it (made once).
    before: Vec<Vec<f32>>,
}

impl JitEngine {
    /// Compiles `plan`, binds and packs `ckpt` and makes scratch for `threads` threads.
    pub fn new(
        plan: &Plan,
        ckpt: &Checkpoint,
        opts: BindOptions,
        threads: usize,
    ) -> Result<JitEngine, JitEngineError> {
        let model = JitModel::compile(plan)?;
        let packed = model.pack(ckpt, opts)?;
        let scratch = model.scratch(threads);
        Ok(JitEngine {
            model,
            packed,
            scratch,
            output: 0,
            before: Vec::new(),
        })
    }

    /// [`JitEngine::new`] writing output `output` of the plan's (HRNet-OCR's auxiliary logits
    /// are output 1; at most 2 outputs).
    ///
    /// # Panics
    /// If the plan has no output `output` or `output > 1`.
    pub fn with_output(
        plan: &Plan,
        ckpt: &Checkpoint,
        opts: BindOptions,
        threads: usize,
        output: usize,
    ) -> Result<JitEngine, JitEngineError> {
        assert!(
            output < plan.outputs.len() && output <= 1,
            "no output {output}"
        );
        let mut e = JitEngine::new(plan, ckpt, opts, threads)?;
        e.output = output;
        e.before = plan.outputs[..output]
            .iter()
            .map(|s| vec![0f32; s.len()])
            .collect();
        Ok(e)
    }

    /// The compiled model.
    pub fn model(&self) -> &JitModel {
        &self.model
    }
}

impl Engine for JitEngine {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let ran = match &mut self.before[..] {
            [] => self
                .model
                .run(&self.packed, input, &mut [output], &mut self.scratch),
            [first] => self.model.run(
                &self.packed,
                input,
                &mut [first.as_mut_slice(), output],
                &mut self.scratch,
            ),
            _ => unreachable!("with_output allows outputs 0 and 1"),
        };
        match ran {
            Ok(()) => Ok(()),
            Err(JitRunError::Run(e)) => Err(e.into()),
            // `new` packed the weights for this model; kept total all the same.
            Err(JitRunError::Weights { expected, actual }) => {
                Err(RunError::Scratch { expected, actual }.into())
            }
        }
    }
}
