//! JIT against the plan executed with hrnet-runtime's kernels (what the AOT engine calls), side
//! by side in one process: compile time, then median latency at 1 and 2 threads.
//!
//! `cargo run --release -p hrnet-codegen --example jit_bench -- [CONFIG.yaml] [RUNS]`
//! (default: W32 256×192, 20 runs), with seeded random weights.

use hrnet_codegen::jit::JitModel;
use hrnet_codegen::target::Target;
use hrnet_codegen::{driver, exec, plan};
use hrnet_runtime::model;
use hrnet_runtime::weights::{BindOptions, Checkpoint, DType, Format, Tensor, TensorData};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/configs/pose/w32_256x192_adam_lr1e-3.yaml")
    });
    let runs: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let (_, g) = driver::load_optimized(&config)?;
    let p = plan::plan(&g, &Target::runtime())?;

    let t = Instant::now();
    let jit = JitModel::compile(&plan::plan(&g, &Target::jit())?)?;
    let compile = t.elapsed();
    let s = jit.compile_stats();
    println!(
        "jit compile: {:.1} ms ({} functions, {} KiB of code, {} calls, fma {})",
        compile.as_secs_f64() * 1e3,
        s.functions,
        s.code_bytes / 1024,
        s.calls,
        s.fma
    );

    // Seeded random weights, positive variances.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |lo: f32, hi: f32| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
    };
    let tensors = model::tensor_specs(&p.conv_params())
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let (lo, hi) = if s.name.ends_with("running_var") {
                (0.5, 1.5)
            } else {
                (-0.1, 0.1)
            };
            let data = (0..n).map(|_| rnd(lo, hi)).collect();
            let t = Tensor {
                shape: s.shape,
                dtype: DType::F32,
                data: TensorData::F32(data),
            };
            (s.name, t)
        })
        .collect();
    let ckpt = Checkpoint::new(Format::Safetensors, false, tensors)?;
    let packed = jit.pack(&ckpt, BindOptions::default())?;
    let rt_packed = p.pack_weights(&ckpt, BindOptions::default())?;
    let input: Vec<f32> = (0..p.input.len()).map(|_| rnd(-1.0, 1.0)).collect();
    let mut out_jit = vec![0f32; p.outputs[0].len()];
    let mut out_exec = vec![0f32; p.outputs[0].len()];

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    for threads in [1, 2] {
        let mut sj = jit.scratch(threads);
        let mut se = p.scratch(threads);
        let (mut tj, mut te) = (Vec::new(), Vec::new());
        for i in 0..runs + 2 {
            let t = Instant::now();
            jit.run(&packed, &input, &mut [&mut out_jit], &mut sj)?;
            let a = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            exec::execute(&p, &rt_packed, &input, &mut [&mut out_exec], &mut se)?;
            let b = t.elapsed().as_secs_f64() * 1e3;
            if i >= 2 {
                tj.push(a);
                te.push(b);
            }
        }
        let max = out_exec.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = out_jit
            .iter()
            .zip(&out_exec)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let ((mj, nj), (me, ne)) = (median(tj), median(te));
        println!(
            "{threads} thread(s), {runs} runs: jit median {mj:.1} ms (min {nj:.1}), exec median {me:.1} ms (min {ne:.1}), ratio {:.2}; max diff {:.1e} of {max:.2e}",
            mj / me,
            diff / max
        );
    }
    Ok(())
}
