//! Criterion benchmarks of HRNet-W32 pose 256×192 (the shipped official config), seeded random
//! weights, through the plan executor (the AOT engine's exact kernel calls):
//!
//! - `network/threads=N`: one whole forward pass;
//! - `conv/…`: every distinct convolution of the network (shape, algorithm, epilogue), once
//!   each, 1 thread, its own packed weights. Throughput is in FLOP (2 × direct MACs), so
//!   criterion's `elem/s` reads as FLOP/s.
//!
//! `cargo bench -p hrnet-codegen --bench w32 [-- FILTER]`. `HRNET_ISA=avx2|portable` times
//! the other instruction sets. For a per-layer-kind breakdown of one pass, use
//! `hrnetc bench --profile`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hrnet_codegen::plan::{Addend, Plan, Step};
use hrnet_codegen::{build_api, driver, exec};
use hrnet_runtime::kernels::{conv, Ctx, Epilogue};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const W32: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/configs/pose/w32_256x192_adam_lr1e-3.yaml"
);

/// The W32 plan and its packed random weights.
fn w32() -> (Plan, Vec<f32>) {
    let path = Path::new(W32);
    let (_, plan) = build_api::plan_config(path, &hrnet_codegen::target::Target::runtime())
        .expect("W32 config plans");
    let (_, g) = driver::load_config(path).expect("W32 config loads");
    let bytes = driver::random_checkpoint(&driver::runtime_specs(&g), 1);
    let ckpt = hrnet_runtime::weights::load_bytes(&bytes).expect("random checkpoint loads");
    let packed = plan
        .pack_weights(&ckpt, Default::default())
        .expect("random checkpoint fits");
    (plan, packed)
}

fn network(c: &mut Criterion, plan: &Plan, packed: &[f32]) {
    let input = hrnet_codegen::aot::bench_input(plan.input.len());
    let mut out = vec![0f32; plan.outputs[0].len()];
    let macs: usize = plan.convs.iter().map(|l| l.spec.macs()).sum();
    let mut group = c.benchmark_group("network");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(2 * macs as u64));
    for threads in [1, 2] {
        let mut scratch = plan.scratch(threads);
        group.bench_function(format!("threads={threads}"), |b| {
            b.iter(|| {
                exec::execute(plan, packed, &input, &mut [&mut out], &mut scratch)
                    .expect("buffers fit the plan")
            })
        });
    }
    group.finish();
}

fn convs(c: &mut Criterion, plan: &Plan, packed: &[f32]) {
    let ctx = Ctx::new(1);
    let mut group = c.benchmark_group("conv");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut seen = Vec::new();
    for step in &plan.steps {
        let Step::Conv {
            layer,
            add,
            upsample_log2: up,
            relu,
            ..
        } = *step
        else {
            continue;
        };
        let l = &plan.convs[layer];
        let residual = add != Addend::None;
        if seen.contains(&(l.spec, up, residual)) {
            continue;
        }
        seen.push((l.spec, up, residual));
        let s = l.spec;
        let name = format!(
            "{k}x{k}s{st} {ci}->{co} @{h}x{w} {algo:?}{epi}",
            k = s.k(),
            st = s.stride(),
            ci = s.cin(),
            co = s.cout(),
            h = s.h_in(),
            w = s.w_in(),
            algo = s.algo(),
            epi = match (residual, up) {
                (false, _) => String::new(),
                (true, 0) => " +res".into(),
                (true, u) => format!(" +up{}", 1 << u),
            }
        );
        let x = vec![0.5f32; s.in_shape().len()];
        let w = &packed[l.packed_offset..l.packed_offset + s.packed_len()];
        let os = s.out_shape();
        let hr = hrnet_runtime::kernels::ActShape::new(os.c(), os.h() << up, os.w() << up);
        let base = vec![0.25f32; hr.len()];
        let mut y = vec![0f32; hr.len()];
        let mut tiles = vec![0f32; s.scratch_len(ctx.threads())];
        group.throughput(Throughput::Elements(2 * s.macs() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let epi = if residual {
                    Epilogue::upsample_residual(&base, up, relu)
                } else {
                    Epilogue::plain(relu)
                };
                conv(&ctx, &s, black_box(&x), w, &mut y, epi, &mut tiles)
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let (plan, packed) = w32();
    network(c, &plan, &packed);
    convs(c, &plan, &packed);
}

criterion_group!(w32_benches, benches);
criterion_main!(w32_benches);
