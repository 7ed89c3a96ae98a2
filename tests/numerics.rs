//! Differential numerics: every engine against what PyTorch computed, on every fixture and
//! every weight file it ships. Tolerance: max |out − expected| ≤ 1e-4 · max |expected|.
//!
//! Engines: the reference interpreter on the raw IR and on the optimized IR, and the plan
//! executed with hrnet-runtime's kernels (what generated code calls) at 1 and 2 threads and
//! on every instruction set this CPU has.

use hrnet_codegen::{driver, exec, plan};
use hrnet_ir::interp;
use hrnet_runtime::kernels::{Ctx, Isa};
use hrnet_runtime::npy;
use hrnet_runtime::weights::{self, BindOptions};
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

#[test]
fn reference_engine_raw_and_optimized_from_every_weight_format() {
    for dir in fixtures() {
        let (_, raw) = driver::load_config(&dir.join("config.yaml")).unwrap();
        let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
        let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let (_, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
        for wf in weight_files(&dir) {
            let ckpt = weights::load(&wf).unwrap();
            let w = driver::reference_weights(&ckpt, &raw, BindOptions::default()).unwrap();
            for (name, g) in [("raw", &raw), ("optimized", &opt)] {
                let out = interp::run(g, &w, &input).unwrap();
                let rel = close(&format!("{} {name}", wf.display()), &out[0], &expected);
                eprintln!("{}: reference/{name}: {rel:.2e}", wf.display());
            }
        }
    }
}

#[test]
fn plan_with_runtime_kernels_every_isa_and_thread_count() {
    for dir in fixtures() {
        let (_, opt) = driver::load_optimized(&dir.join("config.yaml")).unwrap();
        let p = plan::plan(&opt, &hrnet_codegen::target::Target::runtime()).unwrap();
        p.check().unwrap();
        let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
        let (_, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
        let ckpt = weights::load(dir.join("weights.safetensors")).unwrap();
        let packed = p.pack_weights(&ckpt, BindOptions::default()).unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            for threads in [1, 2] {
                let mut scratch = p.scratch(threads);
                scratch.ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![0f32; p.outputs[0].len()];
                // Twice: the second run starts from a dirty arena.
                for _ in 0..2 {
                    exec::execute(&p, &packed, &input, &mut [&mut out], &mut scratch).unwrap();
                    let rel = close(
                        &format!("{} {isa:?} {threads}t", dir.display()),
                        &out,
                        &expected,
                    );
                    eprintln!(
                        "{}: plan {isa:?} {threads} threads: {rel:.2e}",
                        dir.display()
                    );
                }
            }
        }
    }
}
