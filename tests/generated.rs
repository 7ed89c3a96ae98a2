//! Generated code, compiled by `build.rs` through the build.rs API and `include!`d here,
//! against PyTorch's fixtures: parity from every weight format, zero heap allocations per
//! run, one model shared by two threads, embedded weights, and clear errors for wrong sizes;
//! batches (`run_batch`) equal to batch-1 runs bit for bit.

use hrnet_runtime::kernels::{Ctx, Isa};
use hrnet_runtime::npy;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
/// Also count on the thread pools' workers (threads named `hrnet-worker-*`), which run the
/// inputs of a batch; set only around the calls measured.
static COUNTING_WORKERS: AtomicBool = AtomicBool::new(false);

/// Held by every test of this file: a pool's worker threads may allocate as they start, and
/// the batch test counts the allocations of every pool worker, so no other test may make a
/// pool meanwhile.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn counted_thread() -> bool {
    COUNTING.with(|c| c.get())
        || (COUNTING_WORKERS.load(Ordering::SeqCst)
            && std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("hrnet-worker-")))
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted_thread() {
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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

/// Returns once every worker of `pool` has run a task: a new thread allocates as it starts
/// (its thread-local destructor list), which must not fall into a counted window.
fn wait_for_workers(pool: &hrnet_runtime::kernels::Pool) {
    let ran: Vec<AtomicBool> = (0..pool.threads())
        .map(|_| AtomicBool::new(false))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ran[1..].iter().all(|r| r.load(Ordering::SeqCst)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a pool worker never ran"
        );
        pool.run(64, &|_, thread| {
            ran[thread].store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_micros(50));
        });
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `run_batch` of 1, 3 and 5 different inputs (the fixture's and perturbed copies) at 1 and 2
/// threads equals separate `run` calls bit for bit (which are the same at 1 and 2 threads:
/// the kernels' tasks do not depend on the thread count), and allocates nothing.
macro_rules! batch_equals_runs {
    ($m:ident, $model:expr, $input:expr) => {{
        let (model, input): (&$m::Model, &[f32]) = (&$model, &$input);
        let inputs: Vec<Vec<f32>> = (0..5)
            .map(|k| {
                input
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v + 0.05 * k as f32 * ((i * 7 + k) as f32).sin())
                    .collect()
            })
            .collect();
        let n_out: usize = $m::OUTPUT_SHAPE.iter().product();
        let mut reference = vec![vec![0f32; n_out]; inputs.len()];
        for threads in [1, 2] {
            let mut scratch = model.scratch(threads);
            for (k, (x, r)) in inputs.iter().zip(&mut reference).enumerate() {
                let mut y = vec![f32::NAN; n_out];
                model.run(x, &mut y, &mut scratch).unwrap();
                if threads == 1 {
                    *r = y;
                } else {
                    let what = stringify!($m);
                    assert!(same_bits(&y, r), "{what}: run of input {k}: 2 threads != 1");
                }
            }
        }
        assert!(
            !same_bits(&reference[0], &reference[1]),
            "the inputs differ"
        );
        for threads in [1, 2] {
            let mut scratch = model.batch_scratch(threads);
            wait_for_workers(scratch.single().ctx.pool());
            for n in [1, 3, 5] {
                let xs: Vec<&[f32]> = inputs[..n].iter().map(|x| &x[..]).collect();
                let mut outs = vec![vec![f32::NAN; n_out]; n];
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
                model.run_batch(&xs, &mut ys, &mut scratch).unwrap();
                // Zero heap allocations on any thread, the pool's workers included.
                COUNTING.with(|c| c.set(true));
                COUNTING_WORKERS.store(true, Ordering::SeqCst);
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                model.run_batch(&xs, &mut ys, &mut scratch).unwrap();
                let after = ALLOCATIONS.load(Ordering::SeqCst);
                COUNTING_WORKERS.store(false, Ordering::SeqCst);
                COUNTING.with(|c| c.set(false));
                let what = stringify!($m);
                assert_eq!(after, before, "{what} {threads}t batch of {n} allocated");
                drop(ys);
                for (k, (y, r)) in outs.iter().zip(&reference).enumerate() {
                    assert!(
                        same_bits(y, r),
                        "{what} {threads}t batch of {n}: output {k} differs from run"
                    );
                }
            }
        }
    }};
}

#[test]
fn run_batch_equals_runs_bit_for_bit() {
    let _serial = serial();
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    batch_equals_runs!(tiny_pose, model, input);
    let dir = fixture("w8_pose_256x192");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = w8_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    batch_equals_runs!(w8_pose, model, input);
    let dir = fixture("tiny_seg");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_seg::Model::load(dir.join("weights.safetensors")).unwrap();
    batch_equals_runs!(tiny_seg, model, input);
    // OCR: the first output.
    let dir = fixture("tiny_ocr");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_ocr::Model::load(dir.join("weights.safetensors")).unwrap();
    batch_equals_runs!(tiny_ocr, model, input);
}

#[test]
fn pose_session_runs_a_batch_of_crops_as_runs() {
    let _serial = serial();
    use hrnet_runtime::pose::HeatmapModel;
    let dir = fixture("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let n_out: usize = tiny_pose::OUTPUT_SHAPE.iter().product();
    let n = 4;
    let inputs: Vec<f32> = (0..n)
        .flat_map(|k| input.iter().map(move |v| v * (1.0 + 0.1 * k as f32)))
        .collect();
    let mut session = model.session(2);
    let mut batch = vec![f32::NAN; n * n_out];
    session.run_batch(&inputs, &mut batch).unwrap();
    for (x, y) in inputs.chunks(input.len()).zip(batch.chunks(n_out)) {
        let mut one = vec![f32::NAN; n_out];
        session.run(x, &mut one).unwrap();
        assert!(same_bits(&one, y));
    }
    // Buffers holding different numbers of crops are an error.
    let e = session.run_batch(&inputs, &mut batch[..n_out]).unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
}

#[test]
fn wrong_batches_are_errors_naming_the_index() {
    let _serial = serial();
    use hrnet_runtime::model::RunError;
    let dir = fixture("tiny_pose");
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let mut scratch = model.batch_scratch(2);
    let (m, n): (usize, usize) = (
        tiny_pose::INPUT_SHAPE.iter().product(),
        tiny_pose::OUTPUT_SHAPE.iter().product(),
    );
    let x = vec![0f32; m];
    let (mut y0, mut y1) = (vec![0f32; n], vec![0f32; n]);
    let e = model.run_batch(&[], &mut [], &mut scratch).unwrap_err();
    assert_eq!(e, RunError::EmptyBatch);
    let e = model
        .run_batch(&[&x, &x], &mut [&mut y0], &mut scratch)
        .unwrap_err();
    assert!(e.to_string().contains("2 inputs but 1 outputs"), "{e}");
    let e = model
        .run_batch(&[&x, &x[..10]], &mut [&mut y0, &mut y1], &mut scratch)
        .unwrap_err();
    assert!(
        e.to_string().contains("input 1") && e.to_string().contains("[1, 3, 96, 64]"),
        "{e}"
    );
    let e = model
        .run_batch(&[&x, &x], &mut [&mut y0[..3], &mut y1], &mut scratch)
        .unwrap_err();
    assert!(
        e.to_string().contains("output 0") && e.to_string().contains(" 3 "),
        "{e}"
    );
    // A batch scratch of another model.
    let other =
        w8_pose::Model::load(fixture("w8_pose_256x192").join("weights.safetensors")).unwrap();
    let mut wrong = other.batch_scratch(2);
    let e = model
        .run_batch(&[&x, &x], &mut [&mut y0, &mut y1], &mut wrong)
        .unwrap_err();
    assert!(matches!(e, RunError::Scratch { .. }), "{e}");
}
