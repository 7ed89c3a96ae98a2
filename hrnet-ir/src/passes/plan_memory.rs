//! Plan activation memory: one arena, a static offset for every value.
//!
//! Liveness over the deterministic schedule ([`Graph::schedule`]): a value lives from the step
//! that produces it to the last step that reads it. Values are placed first-fit, in schedule
//! order, into the lowest free gap of the arena that is free for their whole life; a value
//! never shares bytes with its own operands (no in-place updates). The network input and the
//! values that outputs read live in the caller's buffers, not in the arena.
//!
//! ```text
//! %3 = conv %2 : 64x64x48        ⇒   %3 … [arena +0, 786432 B]
//! ```
//!
//! This is an analysis that annotates the graph ([`Graph::memory`]); it changes no node.
//! The byte size of a value depends on the layout the back end uses, so
//! [`plan_memory_with`] takes it as a function; the pass itself plans plain NCHW f32.

use crate::ir::{Graph, NodeId, Op, Shape};
use std::collections::BTreeMap;

/// Arena offsets are multiples of this many bytes (a cache line, and an AVX-512 vector).
pub const ALIGN: usize = 64;

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// The caller's input buffer number `k`.
    Input(usize),
    /// The caller's output buffer number `k`.
    Output(usize),
    /// `bytes` bytes at `offset` in the arena.
    Arena {
        /// Byte offset, a multiple of [`ALIGN`].
        offset: usize,
        /// Size in bytes.
        bytes: usize,
    },
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Execution order the plan is valid for.
    pub schedule: Vec<NodeId>,
    /// Every node's buffer.
    pub buffers: BTreeMap<NodeId, Buffer>,
    /// Arena size in bytes.
    pub arena_bytes: usize,
    /// What the arena values would take with a buffer each.
    pub total_bytes: usize,
}

impl MemoryPlan {
    /// `(first step, last step)` of every node's value in [`MemoryPlan::schedule`].
    pub fn live_ranges(&self, g: &Graph) -> Option<BTreeMap<NodeId, (usize, usize)>> {
        let step: BTreeMap<NodeId, usize> = self
            .schedule
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i))
            .collect();
        if step.len() != g.g.node_count() {
            return None;
        }
        let mut ranges = BTreeMap::new();
        for (&n, &def) in &step {
            let mut last = def;
            for (user, _) in g.users(n) {
                let s = *step.get(&user)?;
                if s <= def {
                    return None;
                }
                last = last.max(s);
            }
            ranges.insert(n, (def, last));
        }
        Some(ranges)
    }
}

/// Runs the pass with the NCHW f32 layout; returns `false` (it changes no node).
pub fn plan_memory(g: &mut Graph) -> bool {
    g.memory = plan_memory_with(g, &|s: Shape| s.len() * 4);
    false
}

/// Plans memory with `bytes(shape)` giving each value's size. `None` if the graph is cyclic.
pub fn plan_memory_with(g: &Graph, bytes: &dyn Fn(Shape) -> usize) -> Option<MemoryPlan> {
    let schedule = g.schedule()?;
    let mut plan = MemoryPlan {
        schedule,
        buffers: BTreeMap::new(),
        arena_bytes: 0,
        total_bytes: 0,
    };
    let ranges = plan.live_ranges(g)?;

    // External buffers: inputs, outputs and the values outputs read.
    for &n in &plan.schedule {
        match g.node(n).op {
            Op::Input => {
                plan.buffers.insert(n, Buffer::Input(0));
            }
            Op::Output { index } => {
                plan.buffers.insert(n, Buffer::Output(index));
                let src = g.operands(n)[0];
                plan.buffers.insert(src, Buffer::Output(index));
            }
            _ => {}
        }
    }

    // Live arena blocks: (offset, bytes, last step).
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    for (step, &n) in plan.schedule.iter().enumerate() {
        if plan.buffers.contains_key(&n) {
            continue;
        }
        live.retain(|&(_, _, last)| last >= step);
        let size = bytes(g.node(n).shape).div_ceil(ALIGN) * ALIGN;
        live.sort_unstable();
        let mut offset = 0;
        for &(o, b, _) in &live {
            if o >= offset + size {
                break;
            }
            offset = offset.max(o + b);
        }
        live.push((offset, size, ranges[&n].1));
        plan.buffers.insert(
            n,
            Buffer::Arena {
                offset,
                bytes: size,
            },
        );
        plan.arena_bytes = plan.arena_bytes.max(offset + size);
        plan.total_bytes += size;
    }
    Some(plan)
}
