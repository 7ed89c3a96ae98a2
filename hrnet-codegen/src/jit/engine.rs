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
        })
    }

    /// The compiled model.
    pub fn model(&self) -> &JitModel {
        &self.model
    }
}

impl Engine for JitEngine {
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        match self
            .model
            .run(&self.packed, input, &mut [output], &mut self.scratch)
        {
            Ok(()) => Ok(()),
            Err(JitRunError::Run(e)) => Err(e.into()),
            // `new` packed the weights for this model; kept total all the same.
            Err(JitRunError::Weights { expected, actual }) => {
                Err(RunError::Scratch { expected, actual }.into())
            }
        }
    }
}
