//! After a warm-up frame, [`PoseEstimator::estimate_into`] allocates nothing, flip test included:
//! a counting global allocator watches the whole pipeline (crop, normalization, two model runs,
//! flip average, decoding).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hrnet_runtime::pose::{BoxXywh, HeatmapModel, ModelError, PoseEstimator};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A model that writes a peak per joint where the crop is brightest in a few rows (so its output
/// depends on the input), without allocating.
struct Peaky;

impl HeatmapModel for Peaky {
    fn input_size(&self) -> (usize, usize) {
        (192, 256)
    }
    fn num_joints(&self) -> usize {
        17
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        heatmaps.fill(0.0);
        for (j, map) in heatmaps.chunks_exact_mut(48 * 64).enumerate() {
            let row = &input[(j * 15) * 192..][..192];
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            map[(j * 3) * 48 + best / 4] = 1.0 + j as f32;
        }
        Ok(())
    }
}

#[test]
fn estimate_into_allocates_nothing_after_warm_up() {
    let image = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
    });
    let boxes = [
        BoxXywh::new(10.0, 20.0, 100.0, 200.0),
        BoxXywh::new(-30.0, 100.0, 200.0, 150.0),
    ];
    let mut est = PoseEstimator::new(Peaky).unwrap();
    let mut out = Vec::new();
    est.estimate_into(&image, &boxes, true, &mut out).unwrap();
    let warm = out.clone();

    ALLOCATIONS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let r1 = est.estimate_into(&image, &boxes, true, &mut out);
    let r2 = est.estimate_into(&image, &boxes, false, &mut out);
    let r3 = est.estimate_into(&image, &boxes, true, &mut out);
    ARMED.store(false, Ordering::SeqCst);
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations per frame"
    );
    assert_eq!(out, warm, "same frame, same result");
    assert_eq!(out.len(), 2);
    assert!(out[0].keypoints.iter().all(|k| k.score > 0.0));

    // Control: the counter does see an allocation.
    ARMED.store(true, Ordering::SeqCst);
    let b = std::hint::black_box(Box::new([0u8; 64]));
    ARMED.store(false, Ordering::SeqCst);
    drop(b);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 1);
}
