//! Fold a BatchNorm into the convolution that produces its operand.
//!
//! `conv(W[, b]) → bn(γ, β, μ, σ²)  ⇒  conv(W·γ/√(σ²+ε), (b − μ)·γ/√(σ²+ε) + β)`
//!
//! The IR holds no weights: the conv records the BatchNorm's key prefix and ε in [`Conv::bn`] and
//! whoever loads weights does the arithmetic once, at load time, so the checkpoint keys stay
//! the official ones. Precondition: the conv has no fused epilogue yet and the BatchNorm is
//! its only consumer. Deliberately not done: folding into a conv with other consumers (it
//! would change their value) or a BatchNorm that follows anything but a conv.
//!
//! [`Conv::bn`]: crate::ir::Conv::bn

use crate::ir::{FoldedBn, Graph, Op};

/// Runs the pass; returns whether it changed the graph.
pub fn fold_conv_bn(g: &mut Graph) -> bool {
    let mut changed = false;
    let bns: Vec<_> =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::BatchNorm(_)))
            .collect();
    for bn in bns {
        let [conv] = g.operands(bn)[..] else { continue };
        let foldable = matches!(&g.node(conv).op, Op::Conv(c) if c.bn.is_none() && !c.residual && !c.relu)
            && g.users(conv).len() == 1;
        if !foldable {
            continue;
        }
        let Op::BatchNorm(b) = g.node(bn).op else {
            continue;
        };
        let folded = FoldedBn {
            prefix: g.node(bn).name.clone(),
            eps: b.eps,
        };
        if let Op::Conv(c) = &mut g.node_mut(conv).op {
            c.bn = Some(folded);
        }
        g.replace_uses(bn, conv);
        g.g.remove_node(bn);
        changed = true;
    }
    changed
}
