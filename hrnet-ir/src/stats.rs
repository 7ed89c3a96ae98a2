//! Network statistics: conv count, multiply-accumulates, parameters, arena size.
//!
//! The parameter count is the official one (`sum(p.numel() for p in model.parameters())`):
//! HRNetV2-W48 segmentation 65,859,379; HRNet-W18-C classification 21,299,004; HRNet-OCR
//! W48 70,372,678 (tested).

use crate::ir::{Graph, Op};
use crate::memory::plan_memory;
use std::fmt;

/// What `hrnetc graph --stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Convolutions.
    pub convs: usize,
    /// Multiply-accumulates of all convolutions, linear layers and OCR matrix products.
    pub macs: u64,
    /// Learned parameters: conv and linear weights and biases, BatchNorm γ and β (running
    /// statistics and `num_batches_tracked` are buffers, not parameters).
    pub params: u64,
    /// Activation arena in bytes (NCHW f32), and without reuse.
    pub arena_bytes: usize,
    /// Sum of all arena values' sizes.
    pub total_bytes: usize,
}

/// Computes the statistics of `g` (any stage of the pipeline gives the same counts).
pub fn stats(g: &Graph) -> Stats {
    let mut s = Stats {
        convs: 0,
        macs: 0,
        params: 0,
        arena_bytes: 0,
        total_bytes: 0,
    };
    for n in g.g.node_indices() {
        let node = g.node(n);
        match &node.op {
            Op::Conv(c) => {
                s.convs += 1;
                let conv_len = node.shape.len() / (c.upsample * c.upsample);
                s.macs += (conv_len * c.in_channels * c.kernel * c.kernel) as u64;
                s.params += (c.out_channels * c.in_channels * c.kernel * c.kernel) as u64;
                if c.bias {
                    s.params += c.out_channels as u64;
                }
                if c.bn.is_some() {
                    s.params += 2 * c.out_channels as u64;
                }
            }
            Op::BatchNorm(_) => s.params += 2 * node.shape.c as u64,
            Op::Linear {
                in_features,
                out_features,
            } => {
                s.macs += (in_features * out_features) as u64;
                s.params += ((in_features + 1) * out_features) as u64;
            }
            Op::SpatialGather => {
                // feats (C×P) times the softmax weights (K×P).
                let logits = g.node(g.operands(n)[0]).shape;
                s.macs += (node.shape.len() * logits.h * logits.w) as u64;
            }
            Op::ObjectAttention => {
                // query·key (P×D×K) and weights·value (P×K×E).
                let ops = g.operands(n);
                let (q, k) = (g.node(ops[0]).shape, g.node(ops[1]).shape);
                let regions = (k.h * k.w) as u64;
                s.macs += (q.h * q.w) as u64 * regions * (q.c + node.shape.c) as u64;
            }
            Op::Input
            | Op::Relu
            | Op::Add { .. }
            | Op::Resize(_)
            | Op::AddResized { .. }
            | Op::Concat { .. }
            | Op::GlobalAvgPool
            | Op::Output { .. } => {}
        }
    }
    if let Some(p) = plan_memory(g, &|sh| sh.len() * 4) {
        s.arena_bytes = p.arena_bytes;
        s.total_bytes = p.total_bytes;
    }
    s
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "convs        {}", self.convs)?;
        writeln!(
            f,
            "MACs         {} ({:.3}e9)",
            self.macs,
            self.macs as f64 / 1e9
        )?;
        writeln!(f, "parameters   {}", self.params)?;
        write!(
            f,
            "arena bytes  {} ({:.1} MiB; {:.1} MiB without reuse)",
            self.arena_bytes,
            self.arena_bytes as f64 / (1 << 20) as f64,
            self.total_bytes as f64 / (1 << 20) as f64
        )
    }
}
