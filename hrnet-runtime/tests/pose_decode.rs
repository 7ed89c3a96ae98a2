//! Decoding against `refgen/pose_post.py`: every fixture's `keypoints.json` (plain and flip test)
//! is reproduced from the fixture heatmaps within 1e-3 px, and the estimator runs the same path
//! around a model.

use std::path::{Path, PathBuf};

use hrnet_runtime::pose::{
    decode_heatmaps, flip_average, BoxXywh, CenterScale, Dataset, HeatmapModel, HeatmapShape,
    Keypoint, ModelError, PersonKeypoints, PoseError, PoseEstimator,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name)
}

/// A `<f4` C-order `.npy`: (shape, values).
fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let dims = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = dims
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

struct Fixture {
    shape: HeatmapShape,
    plain: Vec<f32>,
    flipped: Vec<f32>,
    json: serde_json::Value,
    bbox: BoxXywh,
    input_size: (usize, usize),
}

fn load_fixture(name: &str, input_size: (usize, usize)) -> Fixture {
    let dir = fixture(name);
    let (s, plain) = read_npy_f32(&dir.join("expected.npy"));
    let (s2, flipped) = read_npy_f32(&dir.join("expected_flip.npy"));
    assert_eq!(s, s2);
    assert_eq!(s[0], 1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("keypoints.json")).unwrap())
            .unwrap();
    let b: Vec<f64> = json["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    Fixture {
        shape: HeatmapShape {
            joints: s[1],
            height: s[2],
            width: s[3],
        },
        plain,
        flipped,
        bbox: BoxXywh::new(b[0], b[1], b[2], b[3]),
        json,
        input_size,
    }
}

const FIXTURES: [(&str, (usize, usize)); 2] =
    [("tiny_pose", (64, 96)), ("w8_pose_256x192", (192, 256))];

fn check(name: &str, which: &str, got: &[Keypoint], want: &serde_json::Value) {
    let kps = want["keypoints"].as_array().unwrap();
    let scores = want["scores"].as_array().unwrap();
    assert_eq!(got.len(), kps.len(), "{name} {which}");
    for (j, k) in got.iter().enumerate() {
        let (x, y) = (kps[j][0].as_f64().unwrap(), kps[j][1].as_f64().unwrap());
        let s = scores[j].as_f64().unwrap();
        assert!(
            (k.x - x).abs() <= 1e-3 && (k.y - y).abs() <= 1e-3,
            "{name} {which} joint {j}: ({}, {}) vs pose_post.py ({x}, {y})",
            k.x,
            k.y
        );
        assert!(
            (k.score - s).abs() <= 1e-6 * s.abs().max(1.0),
            "{name} {which} joint {j}: score {} vs {s}",
            k.score
        );
    }
}

#[test]
fn decoding_reproduces_pose_post_py_plain_and_flip() {
    for (name, input) in FIXTURES {
        let f = load_fixture(name, input);
        let cs = CenterScale::from_box(f.bbox, f.input_size.0, f.input_size.1).unwrap();
        let (c, s) = (&f.json["center"], &f.json["scale"]);
        assert_eq!(f64::from(cs.center[0]), c[0].as_f64().unwrap(), "{name}");
        assert_eq!(f64::from(cs.scale[0]), s[0].as_f64().unwrap(), "{name}");
        let mut kps = Vec::new();
        decode_heatmaps(&f.plain, f.shape, &cs, &mut kps).unwrap();
        check(name, "plain", &kps, &f.json["plain"]);
        // pose_post.py swaps COCO pairs for 17 joints and nothing otherwise.
        let pairs = Dataset::from_num_joints(f.shape.joints)
            .flip_pairs()
            .unwrap_or(&[]);
        let mut avg = vec![0f64; f.shape.len()];
        flip_average(&f.plain, &f.flipped, f.shape, pairs, &mut avg).unwrap();
        decode_heatmaps(&avg, f.shape, &cs, &mut kps).unwrap();
        check(name, "flip", &kps, &f.json["flip"]);
    }
}

#[test]
fn decoding_checks_sizes() {
    let f = load_fixture("tiny_pose", (64, 96));
    let cs = CenterScale::from_box(f.bbox, 64, 96).unwrap();
    let mut kps = Vec::new();
    let e = decode_heatmaps(&f.plain[1..], f.shape, &cs, &mut kps).unwrap_err();
    assert!(matches!(e, PoseError::BufferSize { .. }), "{e}");
    let zero = HeatmapShape {
        joints: 5,
        height: 0,
        width: 16,
    };
    assert!(matches!(
        decode_heatmaps(&[0f32; 0], zero, &cs, &mut kps),
        Err(PoseError::InvalidHeatmapSize { .. })
    ));
    let mut avg = vec![0f64; f.shape.len()];
    assert!(flip_average(&f.plain, &f.flipped[1..], f.shape, &[], &mut avg).is_err());
    assert!(matches!(
        flip_average(&f.plain, &f.flipped, f.shape, &[(0, 5)], &mut avg),
        Err(PoseError::FlipPair {
            a: 0,
            b: 5,
            joints: 5
        })
    ));
}

/// A stand-in engine that returns the fixture heatmaps: `expected.npy`, or, when `flip_test` is on,
/// `expected.npy` and `expected_flip.npy` alternately, after checking that each second input is the
/// first mirrored along the width (what the official flip test feeds the network).
struct FixtureModel {
    input_size: (usize, usize),
    shape: HeatmapShape,
    plain: Vec<f32>,
    flipped: Vec<f32>,
    last_input: Vec<f32>,
    flip_test: bool,
    expect_flipped: bool,
    calls: usize,
}

impl FixtureModel {
    fn new(f: &Fixture) -> Self {
        FixtureModel {
            input_size: f.input_size,
            shape: f.shape,
            plain: f.plain.clone(),
            flipped: f.flipped.clone(),
            last_input: Vec::new(),
            flip_test: false,
            expect_flipped: false,
            calls: 0,
        }
    }
}

impl HeatmapModel for FixtureModel {
    fn input_size(&self) -> (usize, usize) {
        self.input_size
    }
    fn num_joints(&self) -> usize {
        self.shape.joints
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        self.calls += 1;
        let (w, h) = self.input_size;
        if input.len() != 3 * w * h || heatmaps.len() != self.shape.len() {
            return Err(format!("bad buffer sizes {} {}", input.len(), heatmaps.len()).into());
        }
        if self.expect_flipped {
            for (a, b) in input.chunks_exact(w).zip(self.last_input.chunks_exact(w)) {
                if !a.iter().eq(b.iter().rev()) {
                    return Err("second input is not the first one mirrored".into());
                }
            }
            heatmaps.copy_from_slice(&self.flipped);
        } else {
            self.last_input.clear();
            self.last_input.extend_from_slice(input);
            heatmaps.copy_from_slice(&self.plain);
        }
        self.expect_flipped = self.flip_test && !self.expect_flipped;
        Ok(())
    }
}

fn astronaut() -> image::RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pose/astronaut.png");
    image::open(p).unwrap().to_rgb8()
}

#[test]
fn estimator_reproduces_keypoints_json_with_and_without_flip() {
    let f = load_fixture("w8_pose_256x192", (192, 256));
    let image = astronaut();
    let mut est = PoseEstimator::new(FixtureModel::new(&f)).unwrap();
    assert_eq!(est.dataset(), Dataset::Coco);
    est.model_mut().flip_test = true;
    assert_eq!(est.heatmap_shape(), f.shape);
    let flipped = est.estimate(&image, &[f.bbox], true).unwrap();
    assert_eq!(est.model().calls, 2);
    check(
        "w8 estimator",
        "flip",
        &flipped[0].keypoints,
        &f.json["flip"],
    );
    // Plain, twice the same box, into the same output vector (entries are reused).
    let mut out: Vec<PersonKeypoints> = flipped;
    est.model_mut().flip_test = false;
    est.estimate_into(&image, &[f.bbox, f.bbox], false, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    for p in &out {
        assert_eq!(p.bbox, f.bbox);
        check("w8 estimator", "plain", &p.keypoints, &f.json["plain"]);
    }
    // The crop the estimator fed the model is the box's crop of the image.
    assert_eq!(est.last_crop().len(), 192 * 256 * 3);
    assert!(est.last_crop().iter().any(|&v| v != 0));
    assert_eq!(est.last_heatmaps(), &f.plain[..]);
    // Fewer boxes shrink the output.
    est.estimate_into(&image, &[], false, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn estimator_refuses_flip_without_pairs_and_reports_errors() {
    let f = load_fixture("tiny_pose", (64, 96));
    let image = astronaut();
    let mut est = PoseEstimator::new(FixtureModel::new(&f)).unwrap();
    assert_eq!(est.dataset(), Dataset::Other { num_joints: 5 });
    let e = est.estimate(&image, &[f.bbox], true).unwrap_err();
    assert!(
        matches!(e, PoseError::FlipUnsupported { num_joints: 5 }),
        "{e}"
    );
    assert!(e.to_string().contains("COCO"), "{e}");
    assert_eq!(est.model().calls, 0);
    let plain = est.estimate(&image, &[f.bbox], false).unwrap();
    check(
        "tiny estimator",
        "plain",
        &plain[0].keypoints,
        &f.json["plain"],
    );

    // A bad box is an error naming it; people before it are kept.
    let mut out = Vec::new();
    let bad = BoxXywh::new(0.0, 0.0, -3.0, 4.0);
    let e = est
        .estimate_into(&image, &[f.bbox, bad], false, &mut out)
        .unwrap_err();
    assert!(matches!(e, PoseError::InvalidBox { .. }), "{e}");
    assert_eq!(out.len(), 1);
    // An empty image.
    let e = est
        .estimate(&image::RgbImage::new(0, 0), &[f.bbox], false)
        .unwrap_err();
    assert!(matches!(e, PoseError::EmptyImage), "{e}");
    // A model failure comes back as PoseError::Model with the model's message.
    let mut est = PoseEstimator::new(FixtureModel::new(&f)).unwrap();
    est.model_mut().expect_flipped = true;
    est.model_mut().last_input = vec![0.0; 3 * 64 * 96];
    let e = est.estimate(&image, &[f.bbox], false).unwrap_err();
    assert!(
        matches!(e, PoseError::Model(_)) && e.to_string().contains("mirrored"),
        "{e}"
    );
    // A layout whose joint count differs from the model's.
    let e = PoseEstimator::with_dataset(FixtureModel::new(&f), Dataset::Coco).unwrap_err();
    assert!(
        matches!(
            e,
            PoseError::JointMismatch {
                model: 5,
                dataset: 17
            }
        ),
        "{e}"
    );
}

#[test]
fn estimator_validates_model_shapes() {
    struct Odd((usize, usize), usize);
    impl HeatmapModel for Odd {
        fn input_size(&self) -> (usize, usize) {
            self.0
        }
        fn num_joints(&self) -> usize {
            self.1
        }
        fn run(&mut self, _: &[f32], _: &mut [f32]) -> Result<(), ModelError> {
            Ok(())
        }
    }
    assert!(matches!(
        PoseEstimator::new(Odd((0, 256), 17)),
        Err(PoseError::InvalidInputSize { .. })
    ));
    assert!(matches!(
        PoseEstimator::new(Odd((3, 256), 17)),
        Err(PoseError::InvalidHeatmapSize { .. })
    ));
    assert!(matches!(
        PoseEstimator::new(Odd((192, 256), 0)),
        Err(PoseError::NoJoints)
    ));
    let est = PoseEstimator::new(Odd((192, 256), 16)).unwrap();
    assert_eq!(est.dataset(), Dataset::Mpii);
    assert_eq!(
        est.heatmap_shape(),
        HeatmapShape {
            joints: 16,
            height: 64,
            width: 48
        }
    );
}

/// A model whose heatmaps are a function of its input: joint `j` is the 4×4 average of input
/// channel `j % 3`, times `j + 1`, so crops and their mirror images give different heatmaps.
/// Counts its single and batched runs.
#[derive(Default)]
struct Pooling {
    runs: usize,
    batches: Vec<usize>,
    batched: bool,
}

impl HeatmapModel for Pooling {
    fn input_size(&self) -> (usize, usize) {
        (48, 64)
    }
    fn num_joints(&self) -> usize {
        17
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        self.runs += 1;
        let (w, h) = (48, 64);
        for (j, plane) in heatmaps.chunks_exact_mut(12 * 16).enumerate() {
            let c = &input[(j % 3) * w * h..(j % 3 + 1) * w * h];
            for (k, v) in plane.iter_mut().enumerate() {
                let (y, x) = (k / 12, k % 12);
                let mut s = 0.0;
                for dy in 0..4 {
                    for dx in 0..4 {
                        s += c[(4 * y + dy) * w + 4 * x + dx];
                    }
                }
                *v = s * (j + 1) as f32 / 16.0;
            }
        }
        Ok(())
    }
    fn run_batch(&mut self, inputs: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        if !self.batched {
            return Err("not batched".into());
        }
        self.batches.push(inputs.len() / (3 * 48 * 64));
        hrnet_runtime::pose::run_in_batches(
            inputs,
            heatmaps,
            3 * 48 * 64,
            17 * 12 * 16,
            |xs, ys| -> Result<(), PoseError> {
                for (x, y) in xs.iter().zip(ys.iter_mut()) {
                    self.run(x, y).map_err(PoseError::Model)?;
                }
                Ok(())
            },
        )
    }
}

/// The default `run_batch` of a model that only has `run`.
struct Unbatched(Pooling);

impl HeatmapModel for Unbatched {
    fn input_size(&self) -> (usize, usize) {
        self.0.input_size()
    }
    fn num_joints(&self) -> usize {
        17
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        self.0.run(input, heatmaps)
    }
}

#[test]
fn a_batch_of_boxes_gives_the_keypoints_of_box_by_box_runs() {
    let image = astronaut();
    let boxes: Vec<BoxXywh> = (0..5)
        .map(|i| BoxXywh::new(40.0 + 30.0 * i as f64, 20.0 + 11.0 * i as f64, 150.0, 260.0))
        .collect();
    for flip in [false, true] {
        let mut one = PoseEstimator::new(Pooling::default()).unwrap();
        let expected = one.estimate(&image, &boxes, flip).unwrap();
        assert_ne!(expected[0].keypoints, expected[1].keypoints);
        let mut batch = PoseEstimator::new(Pooling {
            batched: true,
            ..Pooling::default()
        })
        .unwrap();
        let mut out = Vec::new();
        batch
            .estimate_batch_into(&image, &boxes, flip, &mut out)
            .unwrap();
        assert_eq!(out, expected, "flip {flip}");
        // One batch, the flipped crops included.
        let runs = if flip { 10 } else { 5 };
        assert_eq!(batch.model().batches, [runs]);
        assert_eq!(batch.model().runs, runs);
        assert_eq!(batch.last_heatmaps(), one.last_heatmaps());
        assert_eq!(batch.last_crop(), one.last_crop());
        // Fewer boxes, reusing `out`; no box: no run.
        batch
            .estimate_batch_into(&image, &boxes[..2], flip, &mut out)
            .unwrap();
        assert_eq!(out, expected[..2]);
        batch
            .estimate_batch_into(&image, &[], flip, &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(batch.model().batches.len(), 2);
        // A crowd: batches of at most MAX_BATCH crops.
        let crowd: Vec<BoxXywh> = (0..40)
            .map(|i| BoxXywh::new(10.0 + 7.0 * i as f64, 15.0 + 3.0 * i as f64, 90.0, 140.0))
            .collect();
        let expected_crowd = one.estimate(&image, &crowd, flip).unwrap();
        batch.model_mut().batches.clear();
        let got = batch.estimate_batch(&image, &crowd, flip).unwrap();
        assert_eq!(got, expected_crowd, "crowd, flip {flip}");
        let sizes: &[usize] = if flip { &[64, 16] } else { &[40] };
        assert_eq!(batch.model().batches, sizes);
        assert_eq!(batch.last_heatmaps(), one.last_heatmaps());
        // The default run_batch (one by one) gives the same.
        let mut unbatched = PoseEstimator::new(Unbatched(Pooling::default())).unwrap();
        assert_eq!(
            unbatched.estimate_batch(&image, &boxes, flip).unwrap(),
            expected
        );
        assert_eq!(unbatched.model().0.runs, runs);
    }
}

#[test]
fn batch_errors_are_reported() {
    let image = astronaut();
    let good = BoxXywh::new(40.0, 20.0, 150.0, 260.0);
    let bad = BoxXywh::new(0.0, 0.0, -3.0, 4.0);
    let mut est = PoseEstimator::new(Pooling {
        batched: true,
        ..Pooling::default()
    })
    .unwrap();
    let mut out = Vec::new();
    let e = est
        .estimate_batch_into(&image, &[good, bad], true, &mut out)
        .unwrap_err();
    assert!(matches!(e, PoseError::InvalidBox { .. }), "{e}");
    assert!(out.is_empty());
    assert!(est.model().batches.is_empty());
    // A model failure.
    est.model_mut().batched = false;
    let e = est.estimate_batch(&image, &[good], false).unwrap_err();
    assert!(
        matches!(e, PoseError::Model(_)) && e.to_string().contains("not batched"),
        "{e}"
    );
    // The default run_batch checks the buffers.
    let mut m = Unbatched(Pooling::default());
    let mut hm = vec![0.0; 17 * 12 * 16];
    for (x, y) in [(0, 1), (3 * 48 * 64 + 1, 1), (2 * 3 * 48 * 64, 1)] {
        let e = m
            .run_batch(&vec![0.0; x], &mut hm[..y * 17 * 12 * 16])
            .unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
    }
    assert_eq!(m.0.runs, 0);
}
