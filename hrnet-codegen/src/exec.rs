//! Executes a [`Plan`] directly with hrnet-runtime's kernels, step by step.
//!
//! This is what the generated Rust does, without generating it: the emitter writes exactly
//! these calls with the offsets as constants. It serves tests (the plan and the kernels
//! against the reference engine, in one process) and `hrnetc bench --profile`, which times
//! each step (see [`crate::profile`]).

use crate::plan::{Addend, Plan, PlanValue, Step};
use crate::target::Packing;
use hrnet_runtime::kernels::{self, eltwise, head, Ctx, Epilogue};
use hrnet_runtime::model::{split2, split3, split4, RunError, Scratch};

/// Runs `plan` with `packed` weights on `input` (NCHW) into `outputs` (NCHW, one per plan
/// output), using `scratch` (made with [`Plan::scratch`]). Allocates nothing.
///
/// # Panics
/// If `plan` was not made for [`crate::target::Target::runtime`] (a caller's bug).
pub fn execute(
    plan: &Plan,
    packed: &[f32],
    input: &[f32],
    outputs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), RunError> {
    execute_observed(plan, packed, input, outputs, scratch, |_| {})
}

/// [`execute`], calling `after_step(i)` when step `i` of `plan.steps` has finished (kernel
/// calls return only when every thread is done). The observer is a generic parameter, so
/// [`execute`]'s empty one costs nothing.
pub fn execute_observed(
    plan: &Plan,
    packed: &[f32],
    input: &[f32],
    outputs: &mut [&mut [f32]],
    scratch: &mut Scratch,
    mut after_step: impl FnMut(usize),
) -> Result<(), RunError> {
    assert_eq!(
        plan.packing(),
        Packing::RuntimeGroups,
        "exec runs plans made for Target::runtime()"
    );
    crate::plan::check_buffers(
        plan.input,
        &plan.outputs,
        plan.arena_len,
        plan.scratch_per_thread,
        input,
        outputs,
        scratch,
    )?;
    let Scratch { arena, tiles, ctx } = scratch;
    let r = |v: usize| plan.values[v].offset..plan.values[v].offset + plan.values[v].len();
    for (i, step) in plan.steps.iter().enumerate() {
        match *step {
            Step::Input { dst } => {
                kernels::from_nchw(plan.values[dst].shape, input, &mut arena[r(dst)])
            }
            Step::Conv {
                layer,
                src,
                dst,
                add,
                upsample_log2,
                relu,
                ..
            } => {
                let l = &plan.convs[layer];
                let w = &packed[l.packed_offset..l.packed_offset + l.spec.packed_len()];
                match add {
                    Addend::None | Addend::InPlace => {
                        let (x, y) = split2(arena, r(src), r(dst));
                        let epi = if add == Addend::None {
                            Epilogue::plain(relu)
                        } else {
                            Epilogue::upsample_accumulate(upsample_log2, relu)
                        };
                        kernels::conv(ctx, &l.spec, x, w, y, epi, tiles);
                    }
                    Addend::Value(res) => {
                        let (x, base, y) = split3(arena, r(src), r(res), r(dst));
                        kernels::conv(
                            ctx,
                            &l.spec,
                            x,
                            w,
                            y,
                            Epilogue::upsample_residual(base, upsample_log2, relu),
                            tiles,
                        );
                    }
                }
            }
            Step::Add { a, b, dst, relu } => {
                let (x, y, out) = split3(arena, r(a), r(b), r(dst));
                eltwise::add(ctx, plan.values[dst].shape, x, y, out, relu);
            }
            Step::AddUpsampled {
                low,
                dst,
                log2,
                relu,
                ..
            } => {
                let (lo, acc) = split2(arena, r(low), r(dst));
                eltwise::add_upsampled(ctx, plan.values[dst].shape, acc, lo, log2, relu);
            }
            Step::AddResized { .. }
            | Step::Resize { .. }
            | Step::GlobalAvgPool { .. }
            | Step::SpatialGather { .. }
            | Step::ObjectAttention { .. } => head_step(&plan.values, step, arena, tiles, ctx),
            Step::Copy { src, dst } => {
                let (x, y) = split2(arena, r(src), r(dst));
                y.copy_from_slice(x);
            }
            Step::Output { src, index } => {
                if let Some(out) = outputs.get_mut(index) {
                    kernels::to_nchw(plan.values[src].shape, &arena[r(src)], out);
                }
            }
        }
        after_step(i);
    }
    Ok(())
}

/// Runs one of the head steps (bilinear resizes, global average pool, OCR's gather and
/// attention) with hrnet-runtime's kernels: how `exec` and the JIT (which generates code for
/// the convolutions and element-wise steps only) both run them. `tiles` is the whole thread
/// scratch. Other steps are not head steps and do nothing here.
///
/// # Panics
/// If a value lies outside `arena` or the buffers overlap (a plan bug; `Plan::check` rules
/// both out).
pub(crate) fn head_step(
    values: &[PlanValue],
    step: &Step,
    arena: &mut [f32],
    tiles: &mut [f32],
    ctx: &Ctx,
) {
    let r = |v: usize| values[v].offset..values[v].offset + values[v].len();
    let shape = |v: usize| values[v].shape;
    match *step {
        Step::AddResized {
            low,
            dst,
            align_corners,
            relu,
            ..
        } => {
            let (lo, acc) = split2(arena, r(low), r(dst));
            kernels::add_resized_bilinear(
                ctx,
                shape(low),
                lo,
                shape(dst),
                acc,
                align_corners,
                relu,
            );
        }
        Step::Resize {
            src,
            dst,
            align_corners,
        } => {
            let (x, y) = split2(arena, r(src), r(dst));
            kernels::resize_bilinear(ctx, shape(src), x, shape(dst), y, align_corners);
        }
        Step::GlobalAvgPool { src, dst } => {
            let (x, y) = split2(arena, r(src), r(dst));
            head::global_avg_pool_blocked(ctx, shape(src), x, y);
        }
        Step::SpatialGather { logits, feats, dst } => {
            let (l, f, y) = split3(arena, r(logits), r(feats), r(dst));
            head::softmax_spatial_gather(ctx, shape(logits), l, shape(feats), f, y, tiles);
        }
        Step::ObjectAttention {
            query,
            key,
            value,
            dst,
        } => {
            let (q, k, v, y) = split4(arena, r(query), r(key), r(value), r(dst));
            let regions = shape(key).h();
            head::object_attention(ctx, shape(query), q, regions, k, v, y, tiles);
        }
        Step::Input { .. }
        | Step::Conv { .. }
        | Step::Add { .. }
        | Step::AddUpsampled { .. }
        | Step::Copy { .. }
        | Step::Output { .. } => {}
    }
}
