//! Fuse a resize into the add that consumes it, so the resized tensor is never materialized.
//!
//! `add(a, resize(b))  ⇒  add_resized(a, b)` (and `add(resize(b), a)` the same way: float
//! addition is commutative, so swapping the operands changes no bit).
//!
//! This is the exchange unit's `j > i` path: a 1×1 conv at low resolution, upsampled ×2^(j−i)
//! and summed into branch `i`. Precondition: the resize has no other consumer. Deliberately
//! not done: fusing a resize whose result is also read elsewhere, or one whose other operand
//! is itself a resize.

use crate::ir::{Graph, Op};

/// Runs the pass; returns whether it changed the graph.
pub fn fuse_upsample_add(g: &mut Graph) -> bool {
    let mut changed = false;
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
        let is_resize = |n| matches!(g.node(n).op, Op::Resize(_)) && g.users(n).len() == 1;
        let (acc, up) = match (is_resize(a), is_resize(b)) {
            (false, true) => (a, b),
            (true, false) => (b, a),
            _ => continue,
        };
        let Op::Resize(resize) = g.node(up).op else {
            continue;
        };
        let [low] = g.operands(up)[..] else { continue };
        g.node_mut(add).op = Op::AddResized { resize, relu };
        g.set_operands(add, &[acc, low]);
        g.g.remove_node(up);
        changed = true;
    }
    changed
}
