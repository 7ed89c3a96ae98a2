//! Drop computations that no output reads.
//!
//! `x → f → (nobody)  ⇒  x` — removes every node from which no `Output` is reachable, then
//! repeats until nothing changes (removing a node can orphan its operands).
//!
//! Lowering already builds only what the official model computes (the last pose module has
//! exchange output 0 only), so on a fresh graph this finds nothing; it matters once a user
//! or a pass drops outputs. Deliberately not done: removing an `Input`, even an unused one
//! (the network's signature does not change).

use crate::ir::{Graph, Op};

/// Runs the pass; returns whether it changed the graph.
pub fn dce(g: &mut Graph) -> bool {
    let mut changed = false;
    loop {
        let dead: Vec<_> =
            g.g.node_indices()
                .filter(|&n| {
                    !matches!(g.node(n).op, Op::Output { .. } | Op::Input) && g.users(n).is_empty()
                })
                .collect();
        if dead.is_empty() {
            return changed;
        }
        for n in dead {
            g.g.remove_node(n);
        }
        changed = true;
    }
}
