//! Differential numerics: every engine against what PyTorch computed, on every fixture and
//! every weight file it ships. Tolerance: max |out − expected| ≤ 1e-4 · max |expected|.
//!
//! Engines: the reference interpreter on the raw IR and on the optimized IR, the plan
//! executed with hrnet-runtime's kernels (what generated code calls) at 1 and 2 threads and
//! on every instruction set this CPU has, and the JIT — on pose, classification,
//! segmentation and OCR networks, every output (OCR's auxiliary logits too). The generated
//! Rust itself is tested in `generated.rs`.
//!
//! `data/synthetic/` holds references for networks whose checkpoints are too large to keep
//! (the classification head alone has 10 M parameters): their weights are recomputed from
//! each tensor's name ([`hrnet_tests::synthetic_weights`]), and the networks are lowered at
//! the size of their `input.npy` ([`hrnet_ir::lower::lower_at`]).

use hrnet_codegen::jit::JitModel;
use hrnet_codegen::target::Target;
use hrnet_codegen::{driver, exec, plan};
use hrnet_ir::interp;
use hrnet_ir::passes::{self, PASSES};
use hrnet_runtime::kernels::{Ctx, Isa};
use hrnet_runtime::npy;
use hrnet_runtime::weights::{self, BindOptions, Checkpoint, DType, Format, Tensor, TensorData};
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(hrnet_tests::data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.yaml").exists() && p.join("expected.npy").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 2, "fixtures missing");
    v
}

fn weight_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("weights") && (n.ends_with(".pth") || n.ends_with(".safetensors"))
        })
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// Asserts `got` is within tolerance of `expected`; returns the relative error.
fn close(what: &str, got: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let max = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
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

/// What PyTorch computed: `expected.npy` (output 0) and, for OCR, `expected_aux.npy`
/// (output 1, the auxiliary head).
fn expected_outputs(dir: &Path) -> Vec<Vec<f32>> {
    let mut v = vec![npy::read_f32(dir.join("expected.npy")).unwrap().1];
    if dir.join("expected_aux.npy").exists() {
        v.push(npy::read_f32(dir.join("expected_aux.npy")).unwrap().1);
    }
    v
}

/// Compares every expected output; returns the largest relative error.
fn close_all(what: &str, got: &[Vec<f32>], expected: &[Vec<f32>]) -> f32 {
    assert!(got.len() >= expected.len(), "{what}: {} outputs", got.len());
    expected
        .iter()
        .enumerate()
        .map(|(k, e)| close(&format!("{what} output {k}"), &got[k], e))
        .fold(0f32, f32::max)
}

#[test]
fn reference_engine_raw_and_optimized_from_every_weight_format() {
    for dir in fixtures() {
        let (_, raw) = driver::load_config(&dir.join("config.yaml")).unwrap();
        let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
        let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let expected = expected_outputs(&dir);
        for wf in weight_files(&dir) {
            let ckpt = weights::load(&wf).unwrap();
            // The segmentation training wrapper's form: `model.` + name, plus `loss.*`.
            let wrapper = wf.ends_with("weights_fullmodel.pth");
            assert_eq!(ckpt.dropped_loss_tensors(), usize::from(wrapper), "{wf:?}");
            let w = driver::reference_weights(&ckpt, &raw, BindOptions::default()).unwrap();
            for (name, g) in [("raw", &raw), ("optimized", &opt)] {
                let out = interp::run(g, &w, &input).unwrap();
                let rel = close_all(&format!("{} {name}", wf.display()), &out, &expected);
                eprintln!("{}: reference/{name}: {rel:.2e}", wf.display());
            }
        }
    }
}

/// The `"seed": N` of a synthetic reference's meta.json.
fn seed(dir: &Path) -> u64 {
    let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    let rest = &meta[meta.find("\"seed\":").expect("meta.json has a seed") + 7..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn reference_engine_on_synthetic_weights_at_the_input_size() {
    for dir in synthetic_dirs() {
        let src = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        let net = hrnet_ir::front::parse(&src).unwrap();
        let (shape, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let raw = hrnet_ir::lower::lower_at(&net, shape[2], shape[3]).unwrap();
        let mut opt = raw.clone();
        let all: Vec<_> = PASSES.iter().collect();
        passes::run(&mut opt, &all, true, |_, _| {}).unwrap();
        let w = hrnet_tests::synthetic_weights(&raw.tensor_specs(), seed(&dir));
        let expected = expected_outputs(&dir);
        for (name, g) in [("raw", &raw), ("optimized", &opt)] {
            let out = interp::run(g, &w, &input).unwrap();
            let rel = close_all(&format!("{} {name}", dir.display()), &out, &expected);
            eprintln!("{}: reference/{name}: {rel:.2e}", dir.display());
        }
    }
}

/// A network to run on the compiled engines: its optimized graph, checkpoints, input and what
/// PyTorch computed.
struct Case {
    name: String,
    graph: hrnet_ir::Graph,
    checkpoints: Vec<(String, Checkpoint)>,
    input: Vec<f32>,
    expected: Vec<Vec<f32>>,
}

/// Every fixture (from every weight file it ships) and every synthetic reference (at the size
/// of its input, with its recomputed weights).
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for dir in fixtures() {
        let (_, graph) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
        let checkpoints = weight_files(&dir)
            .into_iter()
            .map(|f| (f.display().to_string(), weights::load(&f).unwrap()))
            .collect();
        v.push(Case {
            name: dir.display().to_string(),
            graph,
            checkpoints,
            input: npy::read_f32(dir.join("input.npy")).unwrap().1,
            expected: expected_outputs(&dir),
        });
    }
    for dir in synthetic_dirs() {
        let src = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        let net = hrnet_ir::front::parse(&src).unwrap();
        let (shape, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let raw = hrnet_ir::lower::lower_at(&net, shape[2], shape[3]).unwrap();
        let specs = raw.tensor_specs();
        let mut w = hrnet_tests::synthetic_weights(&specs, seed(&dir));
        let tensors = specs
            .iter()
            .map(|t| {
                let data = w.remove(&t.name).unwrap();
                let tensor = Tensor {
                    shape: t.shape.clone(),
                    dtype: DType::F32,
                    data: TensorData::F32(data),
                };
                (t.name.clone(), tensor)
            })
            .collect();
        let ckpt = Checkpoint::new(Format::Safetensors, false, tensors).unwrap();
        let mut graph = raw;
        let all: Vec<_> = PASSES.iter().collect();
        passes::run(&mut graph, &all, true, |_, _| {}).unwrap();
        v.push(Case {
            name: dir.display().to_string(),
            graph,
            checkpoints: vec![("synthetic".into(), ckpt)],
            input,
            expected: expected_outputs(&dir),
        });
    }
    v
}

fn synthetic_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(hrnet_tests::data_dir().join("synthetic"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.yaml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "synthetic references missing");
    dirs
}

#[test]
fn plan_with_runtime_kernels_every_network_isa_and_thread_count() {
    for case in cases() {
        let p = plan::plan(&case.graph, &Target::runtime()).unwrap();
        p.check().unwrap();
        for (wname, ckpt) in &case.checkpoints {
            let packed = p.pack_weights(ckpt, BindOptions::default()).unwrap();
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                for threads in [1, 2] {
                    let mut scratch = p.scratch(threads);
                    scratch.ctx = Ctx::with_isa(threads, isa);
                    let mut outs: Vec<Vec<f32>> =
                        p.outputs.iter().map(|o| vec![f32::NAN; o.len()]).collect();
                    // Twice: the second run starts from a dirty arena.
                    for _ in 0..2 {
                        let mut refs: Vec<&mut [f32]> =
                            outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                        exec::execute(&p, &packed, &case.input, &mut refs, &mut scratch).unwrap();
                        let what = format!("{} {wname} {isa:?} {threads}t", case.name);
                        let rel = close_all(&what, &outs, &case.expected);
                        eprintln!("{what}: plan {rel:.2e}");
                    }
                }
            }
        }
    }
}

#[test]
fn jit_on_every_network_and_output() {
    for case in cases() {
        let p = plan::plan(&case.graph, &Target::jit()).unwrap();
        let jit = JitModel::compile(&p).unwrap();
        let (wname, ckpt) = &case.checkpoints[0];
        let packed = jit.pack(ckpt, BindOptions::default()).unwrap();
        for threads in [1, 2] {
            let mut scratch = jit.scratch(threads);
            let mut outs: Vec<Vec<f32>> =
                p.outputs.iter().map(|o| vec![f32::NAN; o.len()]).collect();
            for _ in 0..2 {
                let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                jit.run(&packed, &case.input, &mut refs, &mut scratch)
                    .unwrap();
                let what = format!("{} {wname} jit {threads}t", case.name);
                let rel = close_all(&what, &outs, &case.expected);
                eprintln!("{what}: {rel:.2e}");
            }
        }
    }
}
