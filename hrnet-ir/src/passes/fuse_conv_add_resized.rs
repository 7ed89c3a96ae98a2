//! Fuse a convolution into the nearest-upsampling add that is its only consumer.
//!
//! ```text
//! add_resized(acc, conv(x), nearest ×f) [relu]  ⇒  conv(x, residual = acc, upsample = f) [+relu]
//! ```
//!
//! This is the `j > i` path of an exchange unit (1×1 conv at low resolution, BatchNorm,
//! nearest ×2^k, add): the conv's epilogue writes each result into the 2^k × 2^k pixels it
//! covers, added to the accumulator, so the low-resolution result is never stored. The conv
//! node takes the add's shape and place in the graph (its name stays: it is the weight key).
//! Precondition: run after `fold_conv_bn` and `fuse_upsample_add` (which make the pattern)
//! and after `fuse_epilogue` (which puts a following ReLU into the add). Deliberately not
//! done: bilinear adds (the compiled engines have no such epilogue), a conv with a residual,
//! ReLU or upsampling of its own, or a conv whose result is also read elsewhere.

use crate::ir::{Graph, Op, Resize};

/// Runs the pass; returns whether it changed the graph.
pub fn fuse_conv_add_resized(g: &mut Graph) -> bool {
    let mut changed = false;
    let adds: Vec<_> =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::AddResized { .. }))
            .collect();
    for add in adds {
        let Op::AddResized {
            resize: Resize::Nearest { factor },
            relu,
        } = g.node(add).op
        else {
            continue;
        };
        let [acc, conv] = g.operands(add)[..] else {
            continue;
        };
        let fusable = matches!(&g.node(conv).op,
            Op::Conv(c) if !c.residual && !c.relu && c.upsample == 1)
            && g.users(conv).len() == 1
            && factor > 1;
        if !fusable {
            continue;
        }
        let x = g.operands(conv)[0];
        let shape = g.node(add).shape;
        let node = g.node_mut(conv);
        node.shape = shape;
        if let Op::Conv(c) = &mut node.op {
            c.residual = true;
            c.upsample = factor;
            c.relu = relu;
        }
        g.set_operands(conv, &[x, acc]);
        g.replace_uses(add, conv);
        g.g.remove_node(add);
        changed = true;
    }
    changed
}
