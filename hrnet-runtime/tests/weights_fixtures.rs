//! The PyTorch-produced fixture checkpoints load in every format, agree bit for bit, and bind
//! strictly.

use std::path::PathBuf;

use hrnet_runtime::weights::{
    self, BindOptions, BindProblem, Checkpoint, DType, Format, TensorData, TensorSpec,
};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

fn load(rel: &str) -> Checkpoint {
    match weights::load(data(rel)) {
        Ok(c) => c,
        Err(e) => panic!("{rel}: {e}"),
    }
}

/// Bit patterns, so that NaN and -0.0 compare exactly.
fn bits(c: &Checkpoint) -> Vec<(String, Vec<usize>, DType, Vec<u64>)> {
    c.iter()
        .map(|(name, t)| {
            let b = match &t.data {
                TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            };
            (name.to_owned(), t.shape.clone(), t.dtype, b)
        })
        .collect()
}

fn sorted(
    mut v: Vec<(String, Vec<usize>, DType, Vec<u64>)>,
) -> Vec<(String, Vec<usize>, DType, Vec<u64>)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn every_tiny_pose_format_gives_identical_tensors() {
    let st = load("tiny_pose/weights.safetensors");
    assert_eq!(st.format(), Format::Safetensors);
    assert!(!st.from_training_checkpoint());
    assert_eq!(st.len(), 380, "meta.json says 380 tensors");
    let params: usize = st
        .iter()
        .filter(|(_, t)| t.dtype == DType::F32)
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(params, 372_397, "meta.json counts 372397 float values");
    let conv1 = st.get("conv1.weight").expect("conv1.weight");
    assert_eq!(conv1.shape, [64, 3, 3, 3]);
    let nbt = st
        .get("bn1.num_batches_tracked")
        .expect("bn1.num_batches_tracked");
    assert_eq!((nbt.dtype, nbt.shape.as_slice()), (DType::I64, &[][..]));

    let reference = sorted(bits(&st));
    for (file, format, training) in [
        ("tiny_pose/weights.pth", Format::TorchZip, false),
        (
            "tiny_pose/weights_legacy_cuda.pth",
            Format::TorchLegacy,
            false,
        ),
        ("tiny_pose/weights_checkpoint.pth", Format::TorchZip, true),
    ] {
        let c = load(file);
        assert_eq!(c.format(), format, "{file}");
        assert_eq!(c.from_training_checkpoint(), training, "{file}");
        assert_eq!(sorted(bits(&c)), reference, "{file}");
    }
}

#[test]
fn pth_keeps_state_dict_order() {
    let zip = load("tiny_pose/weights.pth");
    let legacy = load("tiny_pose/weights_legacy_cuda.pth");
    let ckpt = load("tiny_pose/weights_checkpoint.pth");
    let names: Vec<&str> = zip.names().collect();
    assert_eq!(names.first(), Some(&"conv1.weight"));
    assert_eq!(names.last(), Some(&"final_layer.bias"));
    assert!(legacy.names().eq(names.iter().copied()));
    assert!(
        ckpt.names().eq(names.iter().copied()),
        "module. prefix stripped"
    );
}

#[test]
fn w8_safetensors_loads() {
    let c = load("w8_pose_256x192/weights.safetensors");
    assert!(c.len() > 380);
    let head = c.get("final_layer.weight").expect("final_layer.weight");
    assert_eq!(head.shape[0], 17, "COCO has 17 joints");
    assert!(c
        .iter()
        .all(|(_, t)| t.numel() == t.shape.iter().product::<usize>()));
}

/// The specs a model would ask for: every float tensor of the checkpoint, with its shape.
fn specs_of(c: &Checkpoint) -> Vec<TensorSpec> {
    c.iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t)| TensorSpec::new(n, t.shape.clone()))
        .collect()
}

#[test]
fn binding_exact_specs_returns_values_in_spec_order() {
    let c = load("tiny_pose/weights.pth");
    let mut specs = specs_of(&c);
    specs.reverse();
    let bound = c
        .bind(&specs, BindOptions::default())
        .expect("exact specs bind");
    assert_eq!(bound.len(), specs.len());
    for (spec, values) in specs.iter().zip(bound.iter()) {
        assert_eq!(Some(values), c.get(&spec.name).and_then(|t| t.as_f32()));
    }
}

#[test]
fn binding_reports_every_problem_at_once() {
    let c = load("tiny_pose/weights.safetensors");
    let mut specs = specs_of(&c);
    // A missing tensor, a mis-shaped one, a missing optional counter, an integer where a float
    // is expected, and (by dropping final_layer.bias) an unexpected one.
    specs.push(TensorSpec::new("stage9.weight", [3, 3]));
    let fuse = specs
        .iter_mut()
        .find(|s| s.name == "stage2.0.fuse_layers.0.1.0.weight")
        .expect("fixture has a fuse layer");
    let real_shape = fuse.shape.clone();
    fuse.shape[1] += 16;
    let wrong_shape = fuse.shape.clone();
    specs.push(TensorSpec::new("extra_bn.num_batches_tracked", []));
    specs.push(TensorSpec::new("bn1.num_batches_tracked", []));
    specs.retain(|s| s.name != "final_layer.bias");

    let err = c
        .bind(&specs, BindOptions::default())
        .expect_err("must fail");
    let expected = vec![
        BindProblem::Shape {
            name: "stage2.0.fuse_layers.0.1.0.weight".into(),
            expected: wrong_shape.clone(),
            found: real_shape.clone(),
        },
        BindProblem::Missing {
            name: "stage9.weight".into(),
            expected: vec![3, 3],
        },
        BindProblem::NotFloat {
            name: "bn1.num_batches_tracked".into(),
            dtype: DType::I64,
        },
        BindProblem::Unexpected {
            name: "final_layer.bias".into(),
            shape: vec![5],
        },
    ];
    assert_eq!(err.problems, expected);
    let text = err.to_string();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains(&format!(
        "tensor 'stage2.0.fuse_layers.0.1.0.weight': expected shape {wrong_shape:?}, checkpoint has {real_shape:?}"
    )));
    assert!(text.contains("missing tensor 'stage9.weight' (expected shape [3, 3])"));
    assert!(text.contains("unexpected tensor 'final_layer.bias'"));
    assert!(text.contains(
        "'bn1.num_batches_tracked': expected a floating-point tensor, checkpoint has i64"
    ));
    assert!(
        !text.contains("extra_bn"),
        "optional counters are never missing: {text}"
    );
}

#[test]
fn ignore_extra_and_optional_counters() {
    let c = load("tiny_pose/weights_checkpoint.pth");
    let mut specs = specs_of(&c);
    specs.retain(|s| !s.name.starts_with("final_layer"));
    let strict = c
        .bind(&specs, BindOptions::default())
        .expect_err("extras are errors");
    assert_eq!(strict.problems.len(), 2, "{strict}");
    assert!(strict.problems.iter().all(
        |p| matches!(p, BindProblem::Unexpected { name, .. } if name.starts_with("final_layer"))
    ));
    let lenient = c
        .bind(&specs, BindOptions { ignore_extra: true })
        .expect("ignore_extra accepts extras");
    assert_eq!(lenient.len(), specs.len());

    // A spec for a counter the checkpoint lacks is satisfied (with no values).
    specs.push(TensorSpec::new("nowhere.num_batches_tracked", []));
    let bound = c
        .bind(&specs, BindOptions { ignore_extra: true })
        .expect("optional counter");
    assert_eq!(bound.get(specs.len() - 1), Some(&[][..]));
}
