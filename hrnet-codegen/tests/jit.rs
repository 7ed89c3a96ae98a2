//! The cranelift JIT against PyTorch (every fixture), against the plan executed with
//! hrnet-runtime's kernels and against the reference interpreter (every shipped pose config,
//! seeded random weights, reduced input size), at 1 and 2 threads, with cranelift's verifier
//! on. Tolerance everywhere: max |out − expected| ≤ 1e-4 · max |expected|.

#![cfg(feature = "jit")]

use hrnet_codegen::jit::{JitModel, JitOptions, JitRunError};
use hrnet_codegen::target::Target;
use hrnet_codegen::{driver, exec, plan};
use hrnet_ir::interp;
use hrnet_runtime::model::{self, RunError};
use hrnet_runtime::npy;
use hrnet_runtime::weights::{self, BindOptions, Checkpoint, DType, Format, Tensor, TensorData};
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;
/// The verifier on.
const VERIFY: JitOptions = JitOptions { verify: true };
/// The JIT's target with every conv direct (covers the direct kernel on 3×3 stride-1 shapes).
const DIRECT: Target = Target::jit().with_winograd(false);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.yaml").exists() && p.join("expected.npy").exists())
        // The compiled engines run pose networks for now (the heads are not planned yet).
        .filter(|p| {
            std::fs::read_to_string(p.join("config.yaml")).is_ok_and(|c| c.contains("pose_hrnet"))
        })
        .collect();
    v.sort();
    assert!(v.len() >= 2, "fixtures missing");
    v
}

/// Asserts `got` is within tolerance of `expected`; returns the relative error.
fn close(what: &str, got: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let max = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max > 0.0, "{what}: expected output is all zeros");
    let diff = got
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff.is_finite() && diff <= TOLERANCE * max,
        "{what}: max diff {diff} > {TOLERANCE} x {max}"
    );
    diff / max
}

#[test]
fn every_fixture_matches_pytorch_at_1_and_2_threads() {
    for (dir, target) in fixtures()
        .into_iter()
        .flat_map(|d| [(d.clone(), Target::jit()), (d, DIRECT)])
    {
        let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
        let p = plan::plan(&opt, &target).unwrap();
        let jit = JitModel::compile_with(&p, VERIFY).unwrap();
        let stats = jit.compile_stats();
        assert!(stats.functions > 0 && stats.functions < stats.calls);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(stats.fma, std::arch::is_x86_feature_detected!("fma"));
        let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let (_, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
        let ckpt = weights::load(dir.join("weights.safetensors")).unwrap();
        let packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
        for threads in [1, 2] {
            let mut scratch = jit.scratch(threads);
            let mut out = vec![f32::NAN; p.outputs[0].len()];
            // Twice: the second run starts from a dirty arena.
            for run in 0..2 {
                jit.run(&packed, &input, &mut [&mut out], &mut scratch)
                    .unwrap();
                let what = format!("{} {target:?} {threads}t run {run}", dir.display());
                let rel = close(&what, &out, &expected);
                eprintln!("{what}: {rel:.2e}");
            }
        }
    }
}

/// A deterministic generator (xorshift64*), uniform in `[lo, hi)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Seeded random weights for every tensor the plan binds: weights scaled by fan-in, BatchNorm
/// statistics around identity with a positive variance.
fn random_checkpoint(p: &plan::Plan, seed: u64) -> Checkpoint {
    let mut rng = Rng(seed | 1);
    let tensors = model::tensor_specs(&p.conv_params())
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let data: Vec<f32> = if s.name.ends_with("running_var") {
                (0..n).map(|_| rng.next(0.5, 1.5)).collect()
            } else if s.shape.len() == 4 {
                let a = (3.0 / (s.shape[1] * s.shape[2] * s.shape[3]) as f32).sqrt();
                (0..n).map(|_| rng.next(-a, a)).collect()
            } else if s.name.ends_with("bn1.weight")
                || s.name.ends_with("bn2.weight")
                || s.name.ends_with("bn3.weight")
                || (s.name.ends_with(".weight") && !s.name.contains("conv"))
            {
                (0..n).map(|_| rng.next(0.5, 1.5)).collect()
            } else {
                (0..n).map(|_| rng.next(-0.2, 0.2)).collect()
            };
            let t = Tensor {
                shape: s.shape,
                dtype: DType::F32,
                data: TensorData::F32(data),
            };
            (s.name, t)
        })
        .collect();
    Checkpoint::new(Format::Safetensors, false, tensors).unwrap()
}

/// Lowers `path` at `hw` input pixels and runs every pass, verifying after each.
fn optimized_at(path: &Path, hw: (usize, usize)) -> hrnet_ir::Graph {
    let net = hrnet_ir::front::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    optimized(net, hw)
}

/// Lowers `net` at `hw` input pixels and runs every pass, verifying after each.
fn optimized(mut net: hrnet_ir::Network, hw: (usize, usize)) -> hrnet_ir::Graph {
    net.input_hw = hw;
    let mut g = hrnet_ir::lower::lower(&net);
    let all: Vec<_> = hrnet_ir::passes::PASSES.iter().collect();
    hrnet_ir::passes::run(&mut g, &all, true, |_, _| {}).unwrap();
    g
}

#[test]
fn every_pose_config_matches_the_runtime_kernels_with_random_weights() {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(data_dir().join("configs/pose"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 7, "pose configs missing");
    for (n, path) in configs.iter().enumerate() {
        let g = optimized_at(path, (64, 64));
        let p = plan::plan(&g, &Target::runtime()).unwrap();
        let pj = plan::plan(&g, &Target::jit()).unwrap();
        let jit = JitModel::compile_with(&pj, VERIFY).unwrap();
        let ckpt = random_checkpoint(&p, 0x9e37_79b9 + n as u64);
        let packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
        let rt_packed = p.pack_weights(&ckpt, BindOptions::default()).unwrap();
        let mut rng = Rng(n as u64 + 7);
        let input: Vec<f32> = (0..p.input.len()).map(|_| rng.next(-2.0, 2.0)).collect();
        let mut expected = vec![0f32; p.outputs[0].len()];
        let mut ex_scratch = p.scratch(1);
        exec::execute(
            &p,
            &rt_packed,
            &input,
            &mut [&mut expected],
            &mut ex_scratch,
        )
        .unwrap();
        for threads in [1, 2] {
            let mut scratch = jit.scratch(threads);
            let mut out = vec![f32::NAN; p.outputs[0].len()];
            jit.run(&packed, &input, &mut [&mut out], &mut scratch)
                .unwrap();
            let rel = close(&format!("{} {threads}t", path.display()), &out, &expected);
            eprintln!(
                "{}: jit vs plan {threads} threads: {rel:.2e}",
                path.display()
            );
        }
        // The reference interpreter on the smallest network (it is naive and slow).
        if n == 0 {
            let w = driver::reference_weights(&ckpt, &g, BindOptions::default()).unwrap();
            let reference = interp::run(&g, &w, &input).unwrap();
            let mut out = vec![0f32; p.outputs[0].len()];
            jit.run(&packed, &input, &mut [&mut out], &mut jit.scratch(1))
                .unwrap();
            let rel = close(
                &format!("{} reference", path.display()),
                &out,
                &reference[0],
            );
            eprintln!("{}: jit vs reference: {rel:.2e}", path.display());
        }
    }
}

/// At 128×96 input, branches 0 and 1 (32×24, 16×12) run Winograd F(4×4), branches 2 and 3
/// (8×6, 4×3) F(2×2) and direct.
#[test]
fn winograd_4x4_matches_the_runtime_kernels_with_random_weights() {
    let path = data_dir().join("configs/pose/w32_256x192_adam_lr1e-3.yaml");
    let g = optimized_at(&path, (128, 96));
    let p = plan::plan(&g, &Target::runtime()).unwrap();
    let pj = plan::plan(&g, &Target::jit()).unwrap();
    let ckpt = random_checkpoint(&p, 42);
    let rt_packed = p.pack_weights(&ckpt, BindOptions::default()).unwrap();
    let mut rng = Rng(3);
    let input: Vec<f32> = (0..p.input.len()).map(|_| rng.next(-2.0, 2.0)).collect();
    let mut expected = vec![0f32; p.outputs[0].len()];
    exec::execute(
        &p,
        &rt_packed,
        &input,
        &mut [&mut expected],
        &mut p.scratch(1),
    )
    .unwrap();
    let jit = JitModel::compile_with(&pj, VERIFY).unwrap();
    let packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
    for threads in [1, 2] {
        let mut out = vec![f32::NAN; p.outputs[0].len()];
        jit.run(&packed, &input, &mut [&mut out], &mut jit.scratch(threads))
            .unwrap();
        let rel = close(&format!("F(4x4) {threads}t"), &out, &expected);
        eprintln!("w32 at 128x96: jit vs plan {threads} threads: {rel:.2e}");
    }
}

#[test]
fn bad_buffers_are_errors() {
    let dir = data_dir().join("tiny_pose");
    let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
    let p = plan::plan(&opt, &Target::jit()).unwrap();
    let jit = JitModel::compile_with(&p, VERIFY).unwrap();
    let ckpt = weights::load(dir.join("weights.safetensors")).unwrap();
    let packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
    let input = vec![0f32; p.input.len()];
    let mut out = vec![0f32; p.outputs[0].len()];
    let mut scratch = jit.scratch(1);

    let r = jit.run(&packed, &input[1..], &mut [&mut out], &mut scratch);
    assert!(
        matches!(r, Err(JitRunError::Run(RunError::Input { .. }))),
        "{r:?}"
    );
    let mut short = vec![0f32; out.len() - 1];
    let r = jit.run(&packed, &input, &mut [&mut short], &mut scratch);
    assert!(
        matches!(r, Err(JitRunError::Run(RunError::Output { .. }))),
        "{r:?}"
    );
    let r = jit.run(&packed[1..], &input, &mut [&mut out], &mut scratch);
    assert!(matches!(r, Err(JitRunError::Weights { .. })), "{r:?}");
    let mut wrong = jit.scratch(1);
    wrong.arena.push(0.0);
    let r = jit.run(&packed, &input, &mut [&mut out], &mut wrong);
    assert!(
        matches!(r, Err(JitRunError::Run(RunError::Scratch { .. }))),
        "{r:?}"
    );

    // Strict binding: a checkpoint missing a tensor is an error naming it.
    let missing: Vec<(String, Tensor)> = ckpt
        .iter()
        .filter(|(n, _)| *n != "final_layer.bias")
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let missing = Checkpoint::new(Format::Safetensors, false, missing).unwrap();
    let e = jit.pack(&missing, BindOptions::default()).unwrap_err();
    assert!(e.to_string().contains("final_layer.bias"), "{e}");
}

/// Widths of the wider HRNet family that are not multiples of 16 (C = 18 and 44: channel
/// blocks padded with zeros at every level), in a full-depth pose network at a 96×64 input:
/// the reference interpreter, the runtime kernels (what the AOT code calls) and the JIT agree.
#[test]
fn family_widths_agree_on_every_engine() {
    let w32 = std::fs::read_to_string(data_dir().join("configs/pose/w32_256x192_adam_lr1e-3.yaml"))
        .unwrap();
    for (n, c) in [18usize, 44].into_iter().enumerate() {
        let yaml = w32
            .replace("      - 256\n", &format!("      - {}\n", 8 * c))
            .replace("      - 128\n", &format!("      - {}\n", 4 * c))
            .replace("      - 64\n", &format!("      - {}\n", 2 * c))
            .replace("      - 32\n", &format!("      - {c}\n"));
        let net = hrnet_ir::front::parse(&yaml).unwrap();
        assert_eq!(
            net.stages[2].planes,
            [c, 2 * c, 4 * c, 8 * c],
            "width {c} applied"
        );
        let g = optimized(net, (96, 64));
        let p = plan::plan(&g, &Target::runtime()).unwrap();
        let pj = plan::plan(&g, &Target::jit()).unwrap();
        let ckpt = random_checkpoint(&p, 0x51ed + n as u64);
        let mut rng = Rng(n as u64 + 11);
        let input: Vec<f32> = (0..p.input.len()).map(|_| rng.next(-2.0, 2.0)).collect();
        let w = driver::reference_weights(&ckpt, &g, BindOptions::default()).unwrap();
        let reference = interp::run(&g, &w, &input).unwrap();

        let packed = p.pack_weights(&ckpt, BindOptions::default()).unwrap();
        let jit = JitModel::compile_with(&pj, VERIFY).unwrap();
        let jit_packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
        for threads in [1, 2] {
            let mut out = vec![f32::NAN; p.outputs[0].len()];
            exec::execute(
                &p,
                &packed,
                &input,
                &mut [&mut out],
                &mut p.scratch(threads),
            )
            .unwrap();
            let rel = close(&format!("W{c} plan {threads}t"), &out, &reference[0]);
            eprintln!("W{c}: plan vs reference {threads} threads: {rel:.2e}");
            let mut out = vec![f32::NAN; p.outputs[0].len()];
            jit.run(
                &jit_packed,
                &input,
                &mut [&mut out],
                &mut jit.scratch(threads),
            )
            .unwrap();
            let rel = close(&format!("W{c} jit {threads}t"), &out, &reference[0]);
            eprintln!("W{c}: jit vs reference {threads} threads: {rel:.2e}");
        }
    }
}

/// The compiled engines render the plan's decisions instead of making their own: with every
/// conv of a plan switched to direct and a 16-float gap put before each conv's packed
/// weights, the generated Rust, the plan executor (the AOT engine's exact calls) and the JIT
/// all use the new algorithm and offsets, and still agree with the reference interpreter.
#[test]
fn a_changed_plan_decision_is_followed_by_every_engine() {
    use hrnet_runtime::kernels::Algo;
    let (_, g) = driver::load_optimized(&data_dir().join("tiny_pose/config.yaml")).unwrap();
    for target in [Target::runtime(), Target::jit()] {
        let mut p = plan::plan(&g, &target).unwrap();
        assert!(
            p.convs.iter().any(|c| c.spec.algo() != Algo::Direct),
            "{target:?}: the planner chose Winograd somewhere"
        );
        let mut at = 0;
        for c in &mut p.convs {
            c.spec = c.spec.with_algo(Algo::Direct);
            c.packed_offset = at + 16;
            at = (c.packed_offset + c.spec.packed_len()).div_ceil(16) * 16;
        }
        p.packed_len = at;
        p.scratch_per_thread = 0;
        p.check().unwrap();

        let ckpt = random_checkpoint(&p, 5);
        let mut rng = Rng(9);
        let input: Vec<f32> = (0..p.input.len()).map(|_| rng.next(-2.0, 2.0)).collect();
        let w = driver::reference_weights(&ckpt, &g, BindOptions::default()).unwrap();
        let reference = interp::run(&g, &w, &input).unwrap();
        let mut out = vec![f32::NAN; p.outputs[0].len()];
        let packed = match target.kernels {
            hrnet_codegen::target::Kernels::Runtime => {
                let src = hrnet_codegen::emit::emit(&p, &Default::default()).unwrap();
                assert!(src.contains(".with_algo(Algo::Direct)"));
                assert!(
                    !src.contains("Algo::Winograd"),
                    "generated code kept Winograd"
                );
                assert!(src.contains(&format!("const PACKED_LEN: usize = {at};")));
                let first = &p.convs[0];
                assert!(src.contains(&format!("\"{}\", ", first.key)));
                let packed = p.pack_weights(&ckpt, BindOptions::default()).unwrap();
                exec::execute(&p, &packed, &input, &mut [&mut out], &mut p.scratch(2)).unwrap();
                packed
            }
            hrnet_codegen::target::Kernels::Jit => {
                let jit = JitModel::compile_with(&p, VERIFY).unwrap();
                let packed = jit.pack(&ckpt, BindOptions::default()).unwrap();
                jit.run(&packed, &input, &mut [&mut out], &mut jit.scratch(2))
                    .unwrap();
                packed
            }
        };
        assert_eq!(packed.len(), at, "{target:?}: packed length");
        for c in &p.convs {
            let gap = &packed[c.packed_offset - 16..c.packed_offset];
            assert!(
                gap.iter().all(|&v| v == 0.0),
                "{target:?}: weights in a gap"
            );
        }
        close(&format!("{target:?} all direct"), &out, &reference[0]);
    }
}

#[test]
fn the_jit_refuses_a_plan_for_other_kernels() {
    let (_, g) = driver::load_optimized(&data_dir().join("tiny_pose/config.yaml")).unwrap();
    let p = plan::plan(&g, &Target::runtime()).unwrap();
    let e = JitModel::compile_with(&p, VERIFY).unwrap_err();
    assert!(e.to_string().contains("Target::jit()"), "{e}");
    let p = plan::plan(&g, &Target::jit()).unwrap();
    let e = hrnet_codegen::emit::emit(&p, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("Target::runtime()"), "{e}");
}

/// The JIT engine's `run_batch`: whole inputs side by side at 2 threads, the same bits as
/// `run`; errors for bad batches.
#[test]
fn the_jit_engine_runs_a_batch_as_runs() {
    use hrnet_codegen::engine::Engine;
    use hrnet_codegen::jit::JitEngine;
    let dir = data_dir().join("tiny_pose");
    let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
    let p = plan::plan(&opt, &Target::jit()).unwrap();
    let ckpt = weights::load(dir.join("weights.safetensors")).unwrap();
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3)
        .map(|k| input.iter().map(|v| v * (1.0 + 0.2 * k as f32)).collect())
        .collect();
    let n_out = p.outputs[0].len();
    let mut one = JitEngine::new(&p, &ckpt, BindOptions::default(), 1).unwrap();
    let expected: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            let mut y = vec![f32::NAN; n_out];
            one.run(x, &mut y).unwrap();
            y
        })
        .collect();
    for threads in [1, 2] {
        let mut e = JitEngine::new(&p, &ckpt, BindOptions::default(), threads).unwrap();
        for n in [1, 3] {
            let xs: Vec<&[f32]> = inputs[..n].iter().map(|x| &x[..]).collect();
            let mut outs = vec![vec![f32::NAN; n_out]; n];
            let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
            e.run_batch(&xs, &mut ys).unwrap();
            for (k, (y, r)) in outs.iter().zip(&expected).enumerate() {
                let same = y.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{threads}t batch of {n}: output {k}");
            }
        }
        // After a batch, `run` still works.
        let mut y = vec![f32::NAN; n_out];
        e.run(&inputs[2], &mut y).unwrap();
        assert_eq!(y, expected[2]);
        let r = e.run_batch(&[], &mut []);
        assert!(r.unwrap_err().to_string().contains("no input"));
        let mut y1 = vec![0f32; n_out];
        let r = e.run_batch(&[&input, &input[1..]], &mut [&mut y, &mut y1]);
        assert!(r.unwrap_err().to_string().contains("input 1"), "{threads}t");
    }
}
