//! [`JitEngine`]: a [`JitModel`] with its packed weights and working memory behind the
//! [`Engine`] trait of `hrnetc run/bench --engine jit`.

use super::{JitError, JitModel, JitRunError};
use crate::engine::{Engine, EngineError};
use crate::plan::Plan;
use hrnet_runtime::model::{BatchScratch, RunError, Scratch};
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
    scratch: Work,
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
        let scratch = Work::One(model.scratch(threads));
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
        let scratch = match &mut self.scratch {
            Work::One(s) => s,
            Work::Batch(b) => b.single(),
        };
        let ran = match &mut self.before[..] {
            [] => self.model.run(&self.packed, input, &mut [output], scratch),
            [first] => self.model.run(
                &self.packed,
                input,
                &mut [first.as_mut_slice(), output],
                scratch,
            ),
            _ => unreachable!("with_output allows outputs 0 and 1"),
        };
        Ok(ran.map_err(run_error)?)
    }

    fn run_batch(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), EngineError> {
        if !self.before.is_empty() {
            // Output 1 needs a buffer for output 0 per input: one by one.
            return crate::engine::run_one_by_one(self, inputs, outputs);
        }
        let m = &self.model;
        if let Work::One(one) = &mut self.scratch {
            if inputs.len() < 2 || one.ctx.threads() < 2 {
                return crate::engine::run_one_by_one(self, inputs, outputs);
            }
            // The first batch that can run side by side: one arena per extra thread, kept.
            let one = std::mem::replace(one, Scratch::new(0, 0, 1));
            self.scratch = Work::Batch(BatchScratch::from_scratch(
                one,
                m.arena_len,
                m.scratch_per_thread,
            ));
        }
        let Work::Batch(scratch) = &mut self.scratch else {
            unreachable!("made above")
        };
        let nchw = |s: hrnet_ir::Shape| [1, s.c, s.h, s.w];
        let packed = &self.packed[..];
        Ok(hrnet_runtime::model::run_batch(
            nchw(m.input_shape()),
            nchw(m.output_shapes()[0]),
            m.arena_len,
            m.scratch_per_thread,
            inputs,
            outputs,
            scratch,
            |x, y, s| m.run(packed, x, &mut [y], s).map_err(run_error),
        )?)
    }
}

/// The batch-1 scratch until a batch runs side by side, then one arena per thread.
#[derive(Debug)]
enum Work {
    One(Scratch),
    Batch(BatchScratch),
}

fn run_error(e: JitRunError) -> RunError {
    match e {
        JitRunError::Run(e) => e,
        // `new` packed the weights for this model; kept total all the same.
        JitRunError::Weights { expected, actual } => RunError::Scratch { expected, actual },
    }
}
