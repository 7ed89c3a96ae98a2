//! Shared helpers for the workspace-level tests: where the test data is.

use std::path::PathBuf;

/// `tests/data` of this repository.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Weights that are a pure function of each tensor's name, shape and `seed`, for networks whose
/// checkpoints are too large to keep here. `data/synthetic/make_reference.py` computes the same
/// values bit for bit and runs PyTorch on them; its header documents the rules. Per tensor, a
/// SplitMix64 stream seeded with FNV-1a-64(name) XOR seed gives `u` in [0, 1).
pub fn synthetic_weights(
    specs: &[hrnet_ir::TensorSpec],
    seed: u64,
) -> std::collections::HashMap<String, Vec<f32>> {
    specs
        .iter()
        .map(|t| (t.name.clone(), synthetic_tensor(&t.name, &t.shape, seed)))
        .collect()
}

fn synthetic_tensor(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut s = fnv ^ seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product();
    let rule: Box<dyn Fn(f64) -> f64> = if name.ends_with("running_var") {
        Box::new(|u| 0.5 + u)
    } else if name.ends_with("running_mean") || name.ends_with(".bias") {
        Box::new(|u| (u - 0.5) * 0.2)
    } else if shape.len() >= 2 {
        let bound = (3.0 / fan_in as f64).sqrt();
        Box::new(move |u| (2.0 * u - 1.0) * bound)
    } else if name.ends_with(".bn2.weight") || name.ends_with(".bn3.weight") {
        Box::new(|u| (0.5 + u) * 0.25)
    } else {
        Box::new(|u| 0.5 + u)
    };
    (0..n).map(|_| rule(next()) as f32).collect()
}
