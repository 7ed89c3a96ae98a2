//! Helpers shared by the head-kernel and pipeline tests: random data, layout conversions, the
//! "same bits on every run" check and the reference data of `tests/data/heads`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hrnet_runtime::kernels::{from_nchw, to_nchw, ActShape, Isa, BLOCK};

/// Deterministic uniform(-1, 1) numbers.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// `n` numbers in (-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// The instruction sets this CPU runs.
pub fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// Blocked copy of an NCHW tensor (zero halo and padding).
pub fn blocked(shape: ActShape, nchw: &[f32]) -> Vec<f32> {
    let mut b = vec![0.0; shape.len()];
    from_nchw(shape, nchw, &mut b);
    b
}

/// Blocked copy with NaN in the padding channels (kernels must ignore them).
pub fn blocked_poisoned(shape: ActShape, nchw: &[f32]) -> Vec<f32> {
    let mut b = blocked(shape, nchw);
    for ch in shape.c()..shape.blocks() * BLOCK {
        for y in 0..shape.h() {
            for x in 0..shape.w() {
                b[shape.index(ch, y, x)] = f32::NAN;
            }
        }
    }
    b
}

/// The NCHW interior of a blocked tensor.
pub fn nchw(shape: ActShape, b: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0; shape.c() * shape.h() * shape.w()];
    to_nchw(shape, b, &mut v);
    v
}

/// Remembers the first output of a series of runs and checks every later one has its bits.
#[derive(Default)]
pub struct SameBits(Option<Vec<f32>>);
impl SameBits {
    pub fn check(&mut self, out: Vec<f32>, what: &str) {
        match &self.0 {
            None => self.0 = Some(out),
            Some(f) => assert!(
                f.len() == out.len() && f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: bits differ from the first run"
            ),
        }
    }
}

/// The textbook definition in f64: `src = (dst + 0.5)·in/out − 0.5` clamped at 0
/// (`dst·(in−1)/(out−1)` with align_corners), linear between the two neighbours. PyTorch (and
/// the kernel) compute `src` in f32: at 128 outputs its error reaches ~4e-6 of a sample step,
/// hence the 1e-5 tolerances of the tests that use it.
pub fn ref_axis(dst: usize, input: usize, output: usize, align: bool) -> (usize, usize, f64) {
    let src = if align {
        if output > 1 {
            dst as f64 * (input - 1) as f64 / (output - 1) as f64
        } else {
            0.0
        }
    } else {
        ((dst as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0)
    };
    let i0 = (src.floor() as usize).min(input - 1);
    let i1 = (i0 + 1).min(input - 1);
    (i0, i1, (src - i0 as f64).clamp(0.0, 1.0))
}

/// `tests/data` of the workspace.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// `tests/data/heads/reference.json`.
pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(data_dir().join("heads/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON pair of sizes.
pub fn pair(v: &serde_json::Value) -> (usize, usize) {
    (
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

/// An RGB image file.
pub fn load(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// A reference case's source image: a pose test photo, optionally cropped to `box` (left, top,
/// right, bottom) as PIL's `Image.crop`.
pub fn case_image(case: &serde_json::Value) -> image::RgbImage {
    let img = load(
        &data_dir()
            .join("pose")
            .join(case["image"].as_str().unwrap()),
    );
    match case["box"].as_array() {
        None => img,
        Some(b) => {
            let b: Vec<u32> = b.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            image::imageops::crop_imm(&img, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image()
        }
    }
}
