//! Fuse ReLUs and residual adds into the epilogue of the node that produces their operand.
//!
//! ```text
//! conv(x) → relu                 ⇒  conv(x) +relu
//! add(a, b) → relu               ⇒  add(a, b) +relu          (also add_resized)
//! add(conv(x), r) [→ relu]       ⇒  conv(x, residual = r) [+relu]
//! ```
//!
//! The third rule is the residual add of a block and the `j < i` paths of an exchange unit:
//! the sum is formed in the conv's output registers instead of in a separate pass over
//! memory. Either operand of the add may be the conv (float addition is commutative);
//! operand 0 is preferred. Precondition: run after `fold_conv_bn` (a BatchNorm between the
//! conv and the add blocks the rule), and the fused-into node has no other consumer.
//! Deliberately not done: fusing into a conv whose output is also read elsewhere, or an add
//! whose both operands are convs into both.

use crate::ir::{Graph, NodeId, Op};

/// Runs the pass; returns whether it changed the graph.
pub fn fuse_epilogue(g: &mut Graph) -> bool {
    let mut changed = false;
    // Residual adds first, so that a following ReLU then lands in the conv.
    let adds: Vec<_> =
        g.g.node_indices()
            .filter(|&n| matches!(g.node(n).op, Op::Add { .. }))
            .collect();
    for add in adds {
        let Op::Add { relu } = g.node(add).op else {
            continue;
        };
        let [a, b] = g.operands(add)[..] else {
            continue;
        };
        let fusable = |n: NodeId| {
            matches!(&g.node(n).op, Op::Conv(c) if !c.residual && !c.relu) && g.users(n).len() == 1
        };
        let (conv, other) = if fusable(a) {
            (a, b)
        } else if fusable(b) {
            (b, a)
        } else {
            continue;
        };
        let x = g.operands(conv)[0];
        if let Op::Conv(c) = &mut g.node_mut(conv).op {
            c.residual = true;
            c.relu = relu;
        }
        g.set_operands(conv, &[x, other]);
        g.replace_uses(add, conv);
        g.g.remove_node(add);
        changed = true;
    }
    let relus: Vec<_> =
        g.g.node_indices()
            .filter(|&n| g.node(n).op == Op::Relu)
            .collect();
    for relu in relus {
        let [x] = g.operands(relu)[..] else { continue };
        if g.users(x).len() != 1 {
            continue;
        }
        let fused = match &mut g.node_mut(x).op {
            Op::Conv(c) if !c.relu => {
                c.relu = true;
                true
            }
            Op::Add { relu } | Op::AddResized { relu, .. } if !*relu => {
                *relu = true;
                true
            }
            _ => false,
        };
        if fused {
            g.replace_uses(relu, x);
            g.g.remove_node(relu);
            changed = true;
        }
    }
    changed
}
