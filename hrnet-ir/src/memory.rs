//! The memory planner: first-fit placement of values over their live ranges in one arena
//! ([`first_fit`]), which the compiled engines' plan uses for its blocked buffers, and the
//! NCHW f32 arena of a graph ([`plan_memory`]) that `hrnetc graph --stats` reports.
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
//! This is an analysis: its result is returned, never stored in the graph, so it cannot go
//! stale when a pass changes the graph. The byte size of a value depends on the layout the
//! back end uses, so [`plan_memory`] takes it as a function.

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

/// First-fit placement. `blocks[i] = (first step, last step, size)` of a value live over
/// steps `first..=last`; sizes are already rounded to the caller's alignment. Values are
/// placed in order of `(first step, index)`, each at the lowest offset where it overlaps no
/// value live at the same time. Returns every block's offset and the arena length.
pub fn first_fit(blocks: &[(usize, usize, usize)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| (blocks[i].0, i));
    let mut offsets = vec![0usize; blocks.len()];
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, size, last step)
    let mut arena = 0;
    for i in order {
        let (first, last, size) = blocks[i];
        live.retain(|&(_, _, l)| l >= first);
        live.sort_unstable();
        let mut offset = 0;
        for &(o, n, _) in &live {
            if o >= offset + size {
                break;
            }
            offset = offset.max(o + n);
        }
        live.push((offset, size, last));
        offsets[i] = offset;
        arena = arena.max(offset + size);
    }
    (offsets, arena)
}

/// Plans memory with `bytes(shape)` giving each value's size. `None` if the graph is cyclic.
pub fn plan_memory(g: &Graph, bytes: &dyn Fn(Shape) -> usize) -> Option<MemoryPlan> {
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

    let arena: Vec<NodeId> = plan
        .schedule
        .iter()
        .copied()
        .filter(|n| !plan.buffers.contains_key(n))
        .collect();
    let blocks: Vec<(usize, usize, usize)> = arena
        .iter()
        .map(|n| {
            let (first, last) = ranges[n];
            let size = bytes(g.node(*n).shape).div_ceil(ALIGN) * ALIGN;
            (first, last, size)
        })
        .collect();
    let (offsets, arena_bytes) = first_fit(&blocks);
    for ((&n, &(_, _, bytes)), offset) in arena.iter().zip(&blocks).zip(offsets) {
        plan.buffers.insert(n, Buffer::Arena { offset, bytes });
        plan.total_bytes += bytes;
    }
    plan.arena_bytes = arena_bytes;
    Some(plan)
}

impl MemoryPlan {
    /// Checks the plan against `g`: it covers every value, in a valid schedule, and no two
    /// values live at the same time share arena bytes.
    pub fn check(&self, g: &Graph) -> Result<(), String> {
        let live = self
            .live_ranges(g)
            .ok_or_else(|| "the schedule does not match the graph".to_string())?;
        let mut arena: BTreeMap<NodeId, (usize, usize, usize, usize)> = BTreeMap::new();
        for id in g.g.node_indices() {
            match self.buffers.get(&id) {
                None => return Err(format!("node {} has no buffer", id.index())),
                Some(Buffer::Arena { offset, bytes }) => {
                    if offset + bytes > self.arena_bytes {
                        return Err(format!("node {} ends past the arena", id.index()));
                    }
                    let (def, last) = live[&id];
                    arena.insert(id, (*offset, *bytes, def, last));
                }
                Some(_) => {}
            }
        }
        let v: Vec<_> = arena.into_iter().collect();
        for (i, (a, (ao, ab, ad, al))) in v.iter().enumerate() {
            for (b, (bo, bb, bd, bl)) in &v[i + 1..] {
                let overlap_time = ad <= bl && bd <= al;
                let overlap_bytes = ao < &(bo + bb) && bo < &(ao + ab);
                if overlap_time && overlap_bytes {
                    return Err(format!(
                        "nodes {} and {} are live together and share bytes",
                        a.index(),
                        b.index()
                    ));
                }
            }
        }
        Ok(())
    }
}
