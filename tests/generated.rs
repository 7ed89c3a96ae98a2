//! Generated code, compiled by `build.rs` through the build.rs API and `include!`d here,
//! against PyTorch's fixtures: parity from every weight format, zero heap allocations per
//! run, one model shared by two threads, embedded weights, and clear errors for wrong sizes.

use hrnet_runtime::kernels::{Ctx, Isa};
use hrnet_runtime::npy;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[allow(dead_code)]
mod tiny_pose {
    include!(concat!(env!("OUT_DIR"), "/tiny_pose.rs"));
}
#[allow(dead_code)]
mod w8_pose {
    include!(concat!(env!("OUT_DIR"), "/w8_pose_256x192.rs"));
}
#[allow(dead_code)]
mod tiny_seg {
    include!(concat!(env!("OUT_DIR"), "/tiny_seg.rs"));
}
#[allow(dead_code)]
mod tiny_ocr {
    include!(concat!(env!("OUT_DIR"), "/tiny_ocr.rs"));
}
#[allow(dead_code)]
mod tiny_cls {
    include!(concat!(env!("OUT_DIR"), "/tiny_cls.rs"));
}
#[allow(dead_code)]
mod tiny_embedded {
    include!(concat!(env!("OUT_DIR"), "/tiny_pose_embedded.rs"));
}

/// Counts heap allocations made by the current thread while `COUNTING` is on.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn fixture(name: &str) -> std::path::PathBuf {
    hrnet_tests::data_dir().join(name)
}

fn assert_close(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}");
    let max = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * max, "{what}: max diff {diff} > 1e-4 x {max}");
}

#[test]
fn tiny_pose_from_every_weight_format_and_thread_count() {
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let (shape, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
    assert_eq!(shape, tiny_pose::OUTPUT_SHAPE);
    for file in [
        "weights.safetensors",
        "weights.pth",
        "weights_legacy_cuda.pth",
        "weights_checkpoint.pth",
    ] {
        let model = tiny_pose::Model::load(dir.join(file)).unwrap();
        for threads in [1, 2] {
            let mut scratch = model.scratch(threads);
            let mut out = vec![0f32; expected.len()];
            model.run(&input, &mut out, &mut scratch).unwrap();
            assert_close(&format!("{file} {threads}t"), &out, &expected);
        }
    }
}

#[test]
fn tiny_seg_from_every_checkpoint_form() {
    let dir = fixture("tiny_seg");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let (shape, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
    assert_eq!(shape, tiny_seg::OUTPUT_SHAPE);
    // A bare state_dict in both containers, and the training wrapper's (`model.` + `loss.*`).
    for file in [
        "weights.safetensors",
        "weights.pth",
        "weights_fullmodel.pth",
    ] {
        let model = tiny_seg::Model::load(dir.join(file)).unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            for threads in [1, 2] {
                let mut scratch = model.scratch(threads);
                scratch.ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![f32::NAN; expected.len()];
                model.run(&input, &mut out, &mut scratch).unwrap();
                assert_close(&format!("{file} {isa:?} {threads}t"), &out, &expected);
            }
        }
    }
}

#[test]
fn tiny_ocr_both_outputs() {
    let dir = fixture("tiny_ocr");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let (shape, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
    let (aux_shape, expected_aux) = npy::read_f32(dir.join("expected_aux.npy")).unwrap();
    assert_eq!([shape, aux_shape], tiny_ocr::OUTPUT_SHAPES);
    let model = tiny_ocr::Model::load(dir.join("weights.safetensors")).unwrap();
    for threads in [1, 2] {
        let mut scratch = model.scratch(threads);
        let mut out = vec![f32::NAN; expected.len()];
        let mut aux = vec![f32::NAN; expected_aux.len()];
        model
            .run_outputs(&input, &mut [&mut out, &mut aux], &mut scratch)
            .unwrap();
        assert_close(&format!("ocr {threads}t"), &out, &expected);
        assert_close(&format!("ocr aux {threads}t"), &aux, &expected_aux);
        // `run` writes the first output alone, the same bits.
        let mut only = vec![f32::NAN; expected.len()];
        model.run(&input, &mut only, &mut scratch).unwrap();
        assert!(only
            .iter()
            .zip(&out)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // Zero heap allocations per run, with two outputs.
        COUNTING.with(|c| c.set(true));
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        model
            .run_outputs(&input, &mut [&mut out, &mut aux], &mut scratch)
            .unwrap();
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTING.with(|c| c.set(false));
        assert_eq!(after, before, "ocr {threads}t allocated");
    }
    // A wrong-sized auxiliary output is an error naming both sizes, not a panic.
    let mut scratch = model.scratch(1);
    let mut out = vec![0f32; expected.len()];
    let mut aux = vec![0f32; expected_aux.len() - 1];
    let err = model
        .run_outputs(&input, &mut [&mut out, &mut aux], &mut scratch)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&(expected_aux.len() - 1).to_string()), "{err}");
}

#[test]
fn tiny_cls_with_recomputed_weights() {
    use hrnet_runtime::weights::{BindOptions, Checkpoint, DType, Format, Tensor, TensorData};
    let dir = hrnet_tests::data_dir().join("synthetic/tiny_cls");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let (_, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
    let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
    let seed: u64 = meta
        .split("\"seed\":")
        .nth(1)
        .and_then(|r| r.trim_start().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .expect("meta.json has a seed");
    let specs: Vec<hrnet_ir::TensorSpec> = tiny_cls::Model::tensors()
        .into_iter()
        .map(|t| hrnet_ir::TensorSpec {
            name: t.name,
            shape: t.shape,
        })
        .collect();
    let mut w = hrnet_tests::synthetic_weights(&specs, seed);
    let tensors = specs
        .iter()
        .map(|t| {
            let data = TensorData::F32(w.remove(&t.name).unwrap());
            let shape = t.shape.clone();
            let dtype = DType::F32;
            (t.name.clone(), Tensor { shape, dtype, data })
        })
        .collect();
    let ckpt = Checkpoint::new(Format::Safetensors, false, tensors).unwrap();
    let model = tiny_cls::Model::from_checkpoint(&ckpt, BindOptions::default()).unwrap();
    assert_eq!(
        tiny_cls::OUTPUT_SHAPE.iter().product::<usize>(),
        expected.len()
    );
    for threads in [1, 2] {
        let mut scratch = model.scratch(threads);
        let mut out = vec![f32::NAN; expected.len()];
        model.run(&input, &mut out, &mut scratch).unwrap();
        assert_close(&format!("cls {threads}t"), &out, &expected);
    }
}

#[test]
fn w8_pose_full_depth() {
    let dir = fixture("w8_pose_256x192");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let (_, expected) = npy::read_f32(dir.join("expected.npy")).unwrap();
    let model = w8_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    // Every instruction set this CPU has (the kernels pick the best one at run time; the
    // generated code must be right on each, the portable fallback included).
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        for threads in [1, 2] {
            let mut scratch = model.scratch(threads);
            scratch.ctx = Ctx::with_isa(threads, isa);
            let mut out = vec![0f32; expected.len()];
            model.run(&input, &mut out, &mut scratch).unwrap();
            assert_close(&format!("w8 {isa:?} {threads}t"), &out, &expected);
        }
    }
}

#[test]
fn zero_heap_allocations_per_run_after_the_first() {
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    for threads in [1, 2] {
        let mut scratch = model.scratch(threads);
        let mut out = vec![0f32; tiny_pose::OUTPUT_SHAPE.iter().product()];
        model.run(&input, &mut out, &mut scratch).unwrap();
        // The counter must see allocations at all (or it proves nothing).
        COUNTING.with(|c| c.set(true));
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        drop(std::hint::black_box(vec![1u8; 16]));
        assert_eq!(
            ALLOCATIONS.load(Ordering::SeqCst),
            before + 1,
            "counting allocator is live"
        );
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..3 {
            model.run(&input, &mut out, &mut scratch).unwrap();
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTING.with(|c| c.set(false));
        assert_eq!(
            after - before,
            0,
            "{threads} threads: heap allocations during run"
        );
    }
}

#[test]
fn one_model_two_threads_identical_results() {
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let run = |m: &tiny_pose::Model| {
        let mut scratch = m.scratch(1);
        let mut out = vec![0f32; tiny_pose::OUTPUT_SHAPE.iter().product()];
        for _ in 0..5 {
            m.run(&input, &mut out, &mut scratch).unwrap();
        }
        out
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&model));
        let b = s.spawn(|| run(&model));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, b);
    assert_eq!(a, run(&model));
}

#[test]
fn embedded_weights_equal_loaded_weights() {
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let embedded = tiny_embedded::Model::embedded().unwrap();
    let loaded = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let n: usize = tiny_pose::OUTPUT_SHAPE.iter().product();
    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
    embedded
        .run(&input, &mut a, &mut embedded.scratch(1))
        .unwrap();
    loaded.run(&input, &mut b, &mut loaded.scratch(1)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn wrong_sizes_and_wrong_checkpoints_are_errors() {
    let dir = fixture("tiny_pose");
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let mut scratch = model.scratch(1);
    let n: usize = tiny_pose::OUTPUT_SHAPE.iter().product();
    let e = model
        .run(&[0.0; 10], &mut vec![0f32; n], &mut scratch)
        .unwrap_err();
    assert!(e.to_string().contains("[1, 3, 96, 64]"), "{e}");
    let m: usize = tiny_pose::INPUT_SHAPE.iter().product();
    let e = model
        .run(&vec![0f32; m], &mut [0.0; 3], &mut scratch)
        .unwrap_err();
    assert!(e.to_string().contains("output"), "{e}");
    // A checkpoint of another network: every mismatch named.
    let e =
        tiny_pose::Model::load(fixture("w8_pose_256x192").join("weights.safetensors")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("layer1.0.conv1.weight") && text.contains("[16, 64, 1, 1]"),
        "{text}"
    );
}
