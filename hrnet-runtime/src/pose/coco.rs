//! COCO files in and out, and the official selection of results: rescoring and OKS-NMS.
//!
//! What deep-high-resolution-net.pytorch does around the network when it tests on COCO with
//! person detections (`lib/dataset/coco.py` `_load_coco_person_detection_results`, `evaluate`,
//! `_write_coco_keypoint_results`; `lib/nms/nms.py` `oks_iou`, `oks_nms`):
//!
//! ```text
//! detections.json ─► read_detections ─► person_boxes (category 1, score ≥ TEST.IMAGE_THRE)
//!   ─► network per box ─► PersonPrediction (keypoints, box score, center/scale)
//!   ─► select_results: per image, rescore (box score × mean confidence > TEST.IN_VIS_THRE)
//!                      then oks_nms (TEST.OKS_THRE) ─► write_results ─► results.json
//! ```
//!
//! Precisions are the official ones: keypoints and their confidences are `f32` (the official
//! `all_preds` array), the box score is the detection file's `f64`, rescoring runs in `f64`
//! (NumPy 1.x promotes the `f32` confidences when they meet Python numbers; the official
//! `json.dump` of the score only works because it is a `float64`), and the NMS area is the `f32`
//! product of the crop size `scale × 200`.

//! ```no_run
//! use std::path::Path;
//! use hrnet_runtime::pose::coco::{self, ImageFiles, PersonPrediction, Thresholds};
//! use hrnet_runtime::pose::{self, BoxXywh, HeatmapModel, PoseEstimator};
//!
//! fn run(model: impl HeatmapModel, images: &Path) -> Result<(), Box<dyn std::error::Error>> {
//!     let thresholds = Thresholds::default();
//!     let dets = coco::read_detections("dets.json".as_ref())?;
//!     let files = ImageFiles::from_annotations("person_keypoints_val2017.json".as_ref())?;
//!     let mut estimator = PoseEstimator::new(model)?;
//!     let mut people = Vec::new();
//!     for (image_id, boxes) in coco::group_by_image(&coco::person_boxes(&dets, &thresholds)) {
//!         let image = pose::load_rgb(&files.path(images, image_id))?;
//!         let xywh: Vec<BoxXywh> = boxes.iter().map(|d| d.bbox()).collect();
//!         for (det, person) in boxes.iter().zip(estimator.estimate(&image, &xywh, true)?) {
//!             people.push(PersonPrediction::new(image_id, det.score, &person));
//!         }
//!     }
//!     coco::write_results("results.json".as_ref(), &coco::select_results(&people, &thresholds))?;
//!     let stats = pose::coco_eval::evaluate_files(
//!         "person_keypoints_val2017.json".as_ref(),
//!         "results.json".as_ref(),
//!     )?;
//!     print!("{}", stats.summary_text());
//!     Ok(())
//! }
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::coco_eval::numpy_sum;
use super::transform::{BoxXywh, CenterScale, PIXEL_STD};

/// COCO's per-joint OKS constants σ (the COCO API's `kpt_oks_sigmas`, also the official NMS's):
/// nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
pub const COCO_SIGMAS: [f64; 17] = [
    0.26 / 10.0,
    0.25 / 10.0,
    0.25 / 10.0,
    0.35 / 10.0,
    0.35 / 10.0,
    0.79 / 10.0,
    0.79 / 10.0,
    0.72 / 10.0,
    0.72 / 10.0,
    0.62 / 10.0,
    0.62 / 10.0,
    1.07 / 10.0,
    1.07 / 10.0,
    0.87 / 10.0,
    0.87 / 10.0,
    0.89 / 10.0,
    0.89 / 10.0,
];

/// The COCO category id of a person.
pub const PERSON_CATEGORY: u64 = 1;

/// The official test thresholds (`lib/config/default.py`, `TEST.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// `TEST.IMAGE_THRE`: detections scoring below it are skipped (0.0).
    pub image: f64,
    /// `TEST.IN_VIS_THRE`: keypoint confidences above it count in the rescoring (0.2).
    pub in_vis: f64,
    /// `TEST.OKS_THRE`: OKS-NMS drops a person whose OKS with a better one exceeds it (0.9).
    pub oks: f64,
}

impl Default for Thresholds {
    /// The official defaults: 0.0, 0.2, 0.9.
    fn default() -> Self {
        Thresholds {
            image: 0.0,
            in_vis: 0.2,
            oks: 0.9,
        }
    }
}

/// What can go wrong reading or writing COCO files. None of it panics.
#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not JSON of the expected form (serde_json names the line and column).
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A path that is not a readable regular file of acceptable size.
    #[error(transparent)]
    File(#[from] crate::fsio::FsError),
    /// A well-formed file with a value that makes no sense.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which entry and what is wrong with it.
        what: String,
    },
}

/// Most bytes a COCO JSON input may have (the official val2017 keypoint annotations have
/// about 240 MB; train2017's about 1 GB).
pub const MAX_JSON_BYTES: u64 = 2 << 30;

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CocoError> {
    let limit = crate::fsio::Limit {
        max: MAX_JSON_BYTES,
        what: "a COCO JSON file",
    };
    let file = crate::fsio::open_regular(path, limit)?;
    // `take`: a file that grows after the size check is still read only up to the limit.
    let reader = std::io::Read::take(file, MAX_JSON_BYTES + 1);
    serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|source| CocoError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// One entry of a COCO detection-results file (`[{"image_id", "category_id", "bbox", "score"}]`,
/// e.g. the official `COCO_val2017_detections_AP_H_56_person.json`). Other keys are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Detection {
    /// The image.
    pub image_id: u64,
    /// The category (1 is a person).
    pub category_id: u64,
    /// `[x, y, width, height]` in image pixels.
    pub bbox: [f64; 4],
    /// The detector's confidence.
    pub score: f64,
}

impl Detection {
    /// The box.
    pub fn bbox(&self) -> BoxXywh {
        let [x, y, w, h] = self.bbox;
        BoxXywh::new(x, y, w, h)
    }
}

/// Reads a COCO detection-results file.
///
/// Errors: the file cannot be read, is not a JSON array of detections, or has a non-finite
/// coordinate or score (named by its index).
pub fn read_detections(path: &Path) -> Result<Vec<Detection>, CocoError> {
    let dets: Vec<Detection> = read_json(path)?;
    for (i, d) in dets.iter().enumerate() {
        if !(d.bbox.iter().all(|v| v.is_finite()) && d.score.is_finite()) {
            return Err(CocoError::Invalid {
                path: path.to_path_buf(),
                what: format!(
                    "detection {i}: bbox {:?} and score {} must be finite",
                    d.bbox, d.score
                ),
            });
        }
    }
    Ok(dets)
}

/// The detections the official test runs the network on, in file order: people (category 1)
/// scoring at least `thresholds.image`.
pub fn person_boxes(detections: &[Detection], thresholds: &Thresholds) -> Vec<Detection> {
    detections
        .iter()
        .filter(|d| d.category_id == PERSON_CATEGORY && d.score >= thresholds.image)
        .cloned()
        .collect()
}

/// Detections grouped by image, images in order of first appearance, detections in file order
/// within each: load each image once, then run its boxes. [`select_results`] groups the same way,
/// so processing in this order gives the official results.
pub fn group_by_image(detections: &[Detection]) -> Vec<(u64, Vec<Detection>)> {
    let mut groups: Vec<(u64, Vec<Detection>)> = Vec::new();
    let mut slot: BTreeMap<u64, usize> = BTreeMap::new();
    for d in detections {
        let s = *slot.entry(d.image_id).or_insert_with(|| {
            groups.push((d.image_id, Vec::new()));
            groups.len() - 1
        });
        groups[s].1.push(d.clone());
    }
    groups
}

#[derive(Deserialize)]
struct ImagesOnly {
    #[serde(default)]
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: u64,
    file_name: String,
}

/// Where the images of a data set are: `DIR/<file_name>` from an annotation file's `images`
/// list, or the COCO convention `DIR/<image_id:012>.jpg`.
#[derive(Clone, Debug, Default)]
pub struct ImageFiles {
    names: BTreeMap<u64, String>,
}

impl ImageFiles {
    /// The COCO naming convention only.
    pub fn by_convention() -> Self {
        ImageFiles::default()
    }

    /// The `images` list (`id` → `file_name`) of a COCO annotation file, e.g.
    /// `person_keypoints_val2017.json` (the annotations themselves are skipped).
    ///
    /// Errors: unreadable or malformed file, a file name with a path separator or `..`.
    pub fn from_annotations(path: &Path) -> Result<Self, CocoError> {
        let file: ImagesOnly = read_json(path)?;
        let mut names = BTreeMap::new();
        for img in file.images {
            let plain = Path::new(&img.file_name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || img.file_name.contains(['/', '\\']) {
                return Err(CocoError::Invalid {
                    path: path.to_path_buf(),
                    what: format!(
                        "image {}: file_name {:?} is not a plain file name",
                        img.id, img.file_name
                    ),
                });
            }
            names.insert(img.id, img.file_name);
        }
        Ok(ImageFiles { names })
    }

    /// Number of images named by the annotation file (0 for the convention).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no image is named (the convention is used for all).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The file of `image_id` under `dir`: the annotation file's name when it has one, otherwise
    /// `<image_id:012>.jpg`.
    pub fn path(&self, dir: &Path, image_id: u64) -> PathBuf {
        match self.names.get(&image_id) {
            Some(name) => dir.join(name),
            None => dir.join(format!("{image_id:012}.jpg")),
        }
    }
}

/// One person as the network saw it: the input of [`select_results`].
#[derive(Clone, Debug, PartialEq)]
pub struct PersonPrediction {
    /// The image.
    pub image_id: u64,
    /// The detection's score.
    pub box_score: f64,
    /// The crop's center and scale.
    pub center_scale: CenterScale,
    /// Per joint `[x, y, confidence]` in image pixels (the heatmap maximum as confidence).
    pub keypoints: Vec<[f32; 3]>,
}

impl PersonPrediction {
    /// From a pipeline result ([`super::PersonKeypoints`]), rounding to `f32` as the official
    /// `all_preds` array does.
    pub fn new(image_id: u64, box_score: f64, person: &super::PersonKeypoints) -> Self {
        PersonPrediction {
            image_id,
            box_score,
            center_scale: person.center_scale,
            keypoints: person
                .keypoints
                .iter()
                .map(|k| [k.x as f32, k.y as f32, k.score as f32])
                .collect(),
        }
    }

    /// The official NMS area: `prod(scale × 200)` in `f32` (the padded crop, margin included).
    pub fn area(&self) -> f32 {
        let [sx, sy] = self.center_scale.scale;
        (sx * PIXEL_STD as f32) * (sy * PIXEL_STD as f32)
    }
}

/// One entry of a COCO keypoint-results file, as the official `_write_coco_keypoint_results`
/// writes it (keys in its sorted order; `center`/`scale` are the official extras) and as the COCO
/// API reads it (`bbox`, when present, makes the COCO API take the area from it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeypointResult {
    /// The category (1).
    pub category_id: u64,
    /// The crop center.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<[f64; 2]>,
    /// The image.
    pub image_id: u64,
    /// `[x, y, v] × joints`: `v` is the keypoint's confidence.
    pub keypoints: Vec<f64>,
    /// The crop scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<[f64; 2]>,
    /// The rescored confidence.
    pub score: f64,
    /// A box, `[x, y, w, h]` (hrnet never writes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<Vec<f64>>,
}

/// The official rescoring: `box_score × mean(confidences > in_vis_thre)`, 0 when no joint is
/// confident enough, in `f64`.
pub fn rescore(keypoints: &[[f32; 3]], box_score: f64, in_vis_thre: f64) -> f64 {
    let mut sum = 0.0f64;
    let mut valid = 0usize;
    for k in keypoints {
        let s = f64::from(k[2]);
        if s > in_vis_thre {
            sum += s;
            valid += 1;
        }
    }
    if valid != 0 {
        sum /= valid as f64;
    }
    sum * box_score
}

/// The official `oks_iou` without `in_vis_thre` (as `evaluate` calls it): OKS of person `d`
/// against person `g`, every joint counted, with the mean of both areas as the scale:
/// `mean_j exp(−(dx² + dy²) / (2σ_j)² / ((a_g + a_d)/2 + ε) / 2)`. Squares are taken in `f32`
/// as the official `float32` keypoint arrays do, the rest in `f64`.
///
/// Both people must have [`COCO_SIGMAS`]`.len()` joints (fewer are compared as far as both go).
pub fn oks_iou(g: &[[f32; 3]], d: &[[f32; 3]], area_g: f64, area_d: f64) -> f64 {
    let scale = (area_g + area_d) / 2.0 + f64::EPSILON;
    let mut terms = [0.0f64; COCO_SIGMAS.len()];
    let n = g.len().min(d.len()).min(terms.len());
    for (j, t) in terms.iter_mut().enumerate().take(n) {
        let dx = d[j][0] - g[j][0];
        let dy = d[j][1] - g[j][1];
        let sq = f64::from(dx * dx + dy * dy);
        let var = (COCO_SIGMAS[j] * 2.0) * (COCO_SIGMAS[j] * 2.0);
        *t = (-(sq / var / scale / 2.0)).exp();
    }
    if n == 0 {
        return 0.0;
    }
    numpy_sum(&terms[..n]) / n as f64
}

/// The official greedy `oks_nms`: repeatedly keep the best-scoring person and drop the rest whose
/// OKS with it exceeds `thresh`. Returns the kept indices, best first.
///
/// Ties in score keep the later entry first, as the official `scores.argsort()[::-1]` does for
/// the few people of an image (NumPy's quicksort is an insertion sort below 17 elements).
pub fn oks_nms(people: &[PersonPrediction], scores: &[f64], thresh: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..people.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(Ordering::Equal));
    order.reverse();
    let areas: Vec<f64> = people.iter().map(|p| f64::from(p.area())).collect();
    let mut keep = Vec::new();
    while let Some((&i, rest)) = order.split_first() {
        keep.push(i);
        order = rest
            .iter()
            .copied()
            .filter(|&j| {
                oks_iou(
                    &people[i].keypoints,
                    &people[j].keypoints,
                    areas[i],
                    areas[j],
                ) <= thresh
            })
            .collect();
    }
    keep
}

/// The official `evaluate` up to the results file: groups people by image (in order of first
/// appearance), rescores them, runs OKS-NMS per image and returns the kept people as COCO
/// keypoint results (per image best first).
pub fn select_results(people: &[PersonPrediction], thresholds: &Thresholds) -> Vec<KeypointResult> {
    let mut by_image: Vec<(u64, Vec<usize>)> = Vec::new();
    let mut slot: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, p) in people.iter().enumerate() {
        let s = *slot.entry(p.image_id).or_insert_with(|| {
            by_image.push((p.image_id, Vec::new()));
            by_image.len() - 1
        });
        by_image[s].1.push(i);
    }
    let mut out = Vec::with_capacity(people.len());
    for (_, members) in by_image {
        let group: Vec<PersonPrediction> = members.iter().map(|&i| people[i].clone()).collect();
        let scores: Vec<f64> = group
            .iter()
            .map(|p| rescore(&p.keypoints, p.box_score, thresholds.in_vis))
            .collect();
        for k in oks_nms(&group, &scores, thresholds.oks) {
            out.push(to_result(&group[k], scores[k]));
        }
    }
    out
}

fn to_result(p: &PersonPrediction, score: f64) -> KeypointResult {
    let cs = &p.center_scale;
    KeypointResult {
        category_id: PERSON_CATEGORY,
        center: Some(cs.center.map(f64::from)),
        image_id: p.image_id,
        keypoints: p.keypoints.iter().flat_map(|k| k.map(f64::from)).collect(),
        scale: Some(cs.scale.map(f64::from)),
        score,
        bbox: None,
    }
}

/// Writes keypoint results as a JSON array, one result per line.
///
/// Errors: the file cannot be written (or a non-finite value, which JSON cannot hold).
pub fn write_results(path: &Path, results: &[KeypointResult]) -> Result<(), CocoError> {
    let io = |source| CocoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = results_json(results).map_err(|e| CocoError::Invalid {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    fs::write(path, bytes).map_err(io)
}

/// Why keypoint results cannot be written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ResultsJsonError {
    /// A result with a NaN or infinite value (its index), which JSON cannot hold.
    #[error("result {0} has a non-finite value")]
    NonFinite(usize),
    /// serde_json refused a value.
    #[error("result cannot be written as JSON: {0}")]
    Json(std::io::Error),
}

/// Keypoint results as the bytes [`write_results`] writes (for callers that write files
/// their own way, e.g. atomically).
pub fn results_json(results: &[KeypointResult]) -> Result<Vec<u8>, ResultsJsonError> {
    let mut bytes = Vec::new();
    write_results_to(&mut bytes, results).map_err(|e| match e {
        WriteError::NonFinite(i) => ResultsJsonError::NonFinite(i),
        WriteError::Io(e) => ResultsJsonError::Json(e),
    })?;
    Ok(bytes)
}

enum WriteError {
    Io(std::io::Error),
    NonFinite(usize),
}

fn write_results_to(w: &mut impl Write, results: &[KeypointResult]) -> Result<(), WriteError> {
    w.write_all(b"[").map_err(WriteError::Io)?;
    for (i, r) in results.iter().enumerate() {
        let finite = r.score.is_finite()
            && r.keypoints.iter().all(|v| v.is_finite())
            && r.center.is_none_or(|c| c.iter().all(|v| v.is_finite()))
            && r.scale.is_none_or(|s| s.iter().all(|v| v.is_finite()));
        if !finite {
            return Err(WriteError::NonFinite(i));
        }
        w.write_all(if i == 0 { b"\n" } else { b",\n" })
            .map_err(WriteError::Io)?;
        serde_json::to_writer(&mut *w, r).map_err(|e| WriteError::Io(std::io::Error::other(e)))?;
    }
    w.write_all(b"\n]\n").map_err(WriteError::Io)
}

/// Reads a COCO keypoint-results file.
///
/// Errors: unreadable file, not a JSON array of results, a non-finite value.
pub fn read_results(path: &Path) -> Result<Vec<KeypointResult>, CocoError> {
    let results: Vec<KeypointResult> = read_json(path)?;
    for (i, r) in results.iter().enumerate() {
        if !(r.score.is_finite() && r.keypoints.iter().all(|v| v.is_finite())) {
            return Err(CocoError::Invalid {
                path: path.to_path_buf(),
                what: format!("result {i}: keypoints and score must be finite"),
            });
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(image_id: u64, score: f64, offset: f32, conf: f32) -> PersonPrediction {
        PersonPrediction {
            image_id,
            box_score: score,
            center_scale: CenterScale {
                center: [50.0, 50.0],
                scale: [0.5, 0.5],
            },
            keypoints: (0..17)
                .map(|j| [10.0 + 3.0 * j as f32 + offset, 20.0 + 2.0 * j as f32, conf])
                .collect(),
        }
    }

    #[test]
    fn rescoring_averages_confident_joints_only() {
        let mut kp = vec![[0.0f32, 0.0, 0.1]; 17];
        assert_eq!(rescore(&kp, 0.9, 0.2), 0.0);
        kp[0][2] = 0.5;
        kp[1][2] = 0.25;
        kp[2][2] = 0.1999; // not above the threshold
        let expected = (0.5f64 + 0.25) / 2.0 * 0.9;
        assert_eq!(rescore(&kp, 0.9, 0.2), expected);
        // 0.2 in f32 is 0.2000000030: above 0.2 in f64, as in the official NumPy 1.x comparison.
        kp[2][2] = 0.2;
        let expected = (0.5f64 + 0.25 + f64::from(0.2f32)) / 3.0 * 0.9;
        assert_eq!(rescore(&kp, 0.9, 0.2), expected);
    }

    #[test]
    fn oks_of_identical_people_is_one_and_falls_with_distance() {
        let a = person(1, 1.0, 0.0, 1.0);
        let far = person(1, 1.0, 200.0, 1.0);
        let area = f64::from(a.area());
        assert!((oks_iou(&a.keypoints, &a.keypoints, area, area) - 1.0).abs() < 1e-15);
        assert!(oks_iou(&a.keypoints, &far.keypoints, area, area) < 0.01);
        assert_eq!(a.area(), 10000.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_people_per_image() {
        let people = vec![
            person(7, 0.5, 0.0, 0.9),
            person(7, 0.9, 0.5, 0.9), // same person, better box: kept, drops the first
            person(7, 0.8, 60.0, 0.9), // someone else
            person(3, 0.4, 0.0, 0.9), // another image: untouched
        ];
        let results = select_results(&people, &Thresholds::default());
        let got: Vec<(u64, f64)> = results.iter().map(|r| (r.image_id, r.score)).collect();
        let s = |b: f64| f64::from(0.9f32) * b;
        assert_eq!(got, vec![(7, s(0.9)), (7, s(0.8)), (3, s(0.4))]);
        assert_eq!(results[0].keypoints.len(), 51);
        assert_eq!(results[0].keypoints[0], 10.5);
        // Ties: the later entry first, as NumPy's argsort()[::-1] on a few elements.
        let scores = [0.5, 0.5, 0.5];
        let apart = [
            person(1, 1.0, 0.0, 1.0),
            person(1, 1.0, 100.0, 1.0),
            person(1, 1.0, 200.0, 1.0),
        ];
        assert_eq!(oks_nms(&apart, &scores, 0.9), vec![2, 1, 0]);
    }

    #[test]
    fn results_round_trip_through_the_file_format() {
        let r = to_result(&person(5, 0.5, 0.0, 0.75), 0.25);
        let mut buf = Vec::new();
        assert!(write_results_to(&mut buf, &[r.clone(), r.clone()]).is_ok());
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("[\n{\"category_id\":1,\"center\":[50.0,50.0],\"image_id\":5,"));
        let back: Vec<KeypointResult> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![r.clone(), r]);
        let mut bad = to_result(&person(5, 0.5, 0.0, 0.75), f64::NAN);
        assert!(matches!(
            write_results_to(&mut Vec::new(), &[bad.clone()]),
            Err(WriteError::NonFinite(0))
        ));
        bad.score = 0.0;
        assert!(write_results_to(&mut Vec::new(), &[bad]).is_ok());
    }

    #[test]
    fn image_files_by_annotation_or_convention() {
        let files = ImageFiles::by_convention();
        assert_eq!(
            files.path(Path::new("d"), 397133),
            Path::new("d/000000397133.jpg")
        );
        let dir = std::env::temp_dir().join(format!("hrnet-coco-images-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ann = dir.join("ann.json");
        fs::write(
            &ann,
            r#"{"images":[{"id":3,"file_name":"a.png","width":1}],"annotations":[]}"#,
        )
        .unwrap();
        let files = ImageFiles::from_annotations(&ann).unwrap();
        assert_eq!(files.path(Path::new("d"), 3), Path::new("d/a.png"));
        assert_eq!(
            files.path(Path::new("d"), 4),
            Path::new("d/000000000004.jpg")
        );
        fs::write(&ann, r#"{"images":[{"id":3,"file_name":"../etc/passwd"}]}"#).unwrap();
        let err = ImageFiles::from_annotations(&ann).unwrap_err().to_string();
        assert!(err.contains("not a plain file name"), "{err}");
        fs::write(&ann, r#"{"images":[{"id":"x","file_name":"a.jpg"}]}"#).unwrap();
        let err = ImageFiles::from_annotations(&ann).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn detections_are_filtered_as_the_official_loader() {
        let dir = std::env::temp_dir().join(format!("hrnet-coco-dets-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dets.json");
        fs::write(
            &path,
            r#"[{"image_id":1,"category_id":1,"bbox":[1,2,3,4],"score":0.5},
                {"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.9},
                {"image_id":2,"category_id":1,"bbox":[0,0,9,9],"score":-0.1}]"#,
        )
        .unwrap();
        let dets = read_detections(&path).unwrap();
        assert_eq!(dets.len(), 3);
        let people = person_boxes(&dets, &Thresholds::default());
        assert_eq!(people, vec![dets[0].clone()]);
        let groups = group_by_image(&[dets[2].clone(), dets[0].clone(), dets[1].clone()]);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].0, groups[1].0), (2, 1));
        assert_eq!(groups[1].1, vec![dets[0].clone(), dets[1].clone()]);
        assert_eq!(people[0].bbox(), BoxXywh::new(1.0, 2.0, 3.0, 4.0));
        fs::write(
            &path,
            r#"[{"image_id":1,"category_id":1,"bbox":[1,2,3],"score":0.5}]"#,
        )
        .unwrap();
        let err = read_detections(&path).unwrap_err().to_string();
        assert!(err.contains("dets.json") && err.contains("line 1"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
