//! The COCO keypoint evaluation: pycocotools' `COCOeval(gt, dt, 'keypoints')` with
//! `evaluate`, `accumulate` and `summarize`, reproduced step by step so that every statistic
//! agrees to rounding (the tests check 1e-6 against pycocotools on generated cases,
//! `tests/data/coco/make_eval_cases.py`).
//!
//! The rules, as pycocotools has them:
//! - Parameters: OKS thresholds `linspace(.5, .95, 10)`, recall points `linspace(0, 1, 101)`,
//!   at most 20 results per image and category, areas all / medium `[32², 96²]` / large
//!   `[96², 1e10]`, the COCO sigmas ([`COCO_SIGMAS`]), categories evaluated separately.
//! - Ground truth is ignored when it is a crowd or has `num_keypoints == 0`, or (per area range)
//!   when its `area` is outside the range; ignored ground truth is matched last.
//! - OKS of result `d` against ground truth `g`: `mean exp(−(dx² + dy²) / (2σ)² / (area + ε) / 2)`
//!   over `g`'s labelled joints (`v > 0`); without labelled joints, `dx`/`dy` are the distances
//!   outside `g`'s box grown by its size on every side, over all joints.
//! - Results (sorted by score with a stable sort, the first 20) are matched greedily to the
//!   unmatched ground truth of highest OKS ≥ threshold (crowds may match many times; an equal
//!   OKS later in the order wins); unmatched results outside the area range are ignored.
//! - A result's area is its keypoints' bounding box (or, when the first result of the file has a
//!   non-empty `bbox`, `bbox` width × height for all); a result on an image that is not in the
//!   ground truth is an error (pycocotools asserts), one of an unknown category is dropped.
//! - Precision is made monotone from the right and sampled at the recall points; AP and AR are
//!   means over everything not −1 (−1 when nothing is defined), with NumPy's pairwise summation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::coco::{read_json, CocoError, KeypointResult, COCO_SIGMAS};

const T: usize = 10;
const R: usize = 101;
const MAX_DETS: usize = 20;
/// `areaRng`: all, medium, large.
const AREA_RANGES: [(f64, f64); 3] = [(0.0, 1e10), (1024.0, 9216.0), (9216.0, 1e10)];
const AREA_LABELS: [&str; 3] = ["all", "medium", "large"];
const JOINTS: usize = COCO_SIGMAS.len();

/// `np.linspace(start, stop, num)`: `i · (stop − start)/(num − 1) + start`, the last exactly `stop`.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    std::array::from_fn(|i| {
        if i == N - 1 {
            stop
        } else {
            i as f64 * step + start
        }
    })
}

/// NumPy's pairwise summation of a contiguous `float64` array (what `np.sum` and `np.mean`
/// compute): eight interleaved partial sums for blocks up to 128 values, halves above.
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r: [f64; 8] = std::array::from_fn(|j| a[j]);
        let whole = n - n % 8;
        for block in a[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[whole..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// A ground-truth annotation, as the COCO keypoint files have it (other keys are ignored).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct GtAnnotation {
    /// Annotation id.
    pub id: u64,
    /// The image.
    pub image_id: u64,
    /// The category.
    pub category_id: u64,
    /// `[x, y, v] × 17`; `v > 0` marks a labelled joint.
    pub keypoints: Vec<f64>,
    /// Number of labelled joints; 0 makes the annotation ignored.
    pub num_keypoints: u64,
    /// Segmentation area: the OKS scale and the area-range test.
    pub area: f64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Crowd regions are ignored and may match several results.
    pub iscrowd: u8,
}

impl GtAnnotation {
    /// 17 finite `[x, y, v]` triples, a finite area and box.
    fn check(&self) -> Result<(), String> {
        let finite = self.keypoints.iter().all(|v| v.is_finite())
            && self.area.is_finite()
            && self.bbox.iter().all(|v| v.is_finite());
        if self.keypoints.len() != 3 * JOINTS || !finite {
            return Err(format!(
                "annotation {}: keypoints has {} values, expected {} finite ones \
                 (and a finite area and bbox)",
                self.id,
                self.keypoints.len(),
                3 * JOINTS
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
struct GtFile {
    #[serde(default)]
    images: Vec<IdOnly>,
    #[serde(default)]
    annotations: Vec<GtAnnotation>,
    #[serde(default)]
    categories: Vec<IdOnly>,
}

/// A COCO keypoint ground truth: image ids, category ids and annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    /// Image ids, sorted, unique.
    pub images: Vec<u64>,
    /// Category ids, sorted, unique.
    pub categories: Vec<u64>,
    /// Annotations in file order.
    pub annotations: Vec<GtAnnotation>,
}

impl GroundTruth {
    /// Reads a COCO annotation file (`images`, `annotations`, `categories`).
    ///
    /// Errors: unreadable or malformed file, an annotation without 17 `[x, y, v]` keypoints or
    /// with a non-finite number.
    pub fn read(path: &Path) -> Result<GroundTruth, CocoError> {
        let file: GtFile = read_json(path)?;
        let mut images: Vec<u64> = file.images.iter().map(|i| i.id).collect();
        images.sort_unstable();
        images.dedup();
        let mut categories: Vec<u64> = file.categories.iter().map(|c| c.id).collect();
        categories.sort_unstable();
        categories.dedup();
        for a in &file.annotations {
            a.check().map_err(|what| CocoError::Invalid {
                path: path.to_path_buf(),
                what,
            })?;
        }
        Ok(GroundTruth {
            images,
            categories,
            annotations: file.annotations,
        })
    }
}

/// The ten COCO keypoint statistics, serialized as an object with pycocotools' names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// AP at OKS .50:.05:.95, all areas.
    #[serde(rename = "AP")]
    pub ap: f64,
    /// AP at OKS .50.
    #[serde(rename = "AP50")]
    pub ap50: f64,
    /// AP at OKS .75.
    #[serde(rename = "AP75")]
    pub ap75: f64,
    /// AP, medium people.
    #[serde(rename = "APm")]
    pub ap_medium: f64,
    /// AP, large people.
    #[serde(rename = "APl")]
    pub ap_large: f64,
    /// AR at OKS .50:.05:.95, all areas.
    #[serde(rename = "AR")]
    pub ar: f64,
    /// AR at OKS .50.
    #[serde(rename = "AR50")]
    pub ar50: f64,
    /// AR at OKS .75.
    #[serde(rename = "AR75")]
    pub ar75: f64,
    /// AR, medium people.
    #[serde(rename = "ARm")]
    pub ar_medium: f64,
    /// AR, large people.
    #[serde(rename = "ARl")]
    pub ar_large: f64,
}

/// Which statistic: AP or AR, one OKS threshold or all, an area range.
struct Summary {
    precision: bool,
    threshold: Option<usize>,
    area: usize,
}

const SUMMARIES: [Summary; 10] = {
    const fn s(precision: bool, threshold: Option<usize>, area: usize) -> Summary {
        Summary {
            precision,
            threshold,
            area,
        }
    }
    [
        s(true, None, 0),
        s(true, Some(0), 0),
        s(true, Some(5), 0),
        s(true, None, 1),
        s(true, None, 2),
        s(false, None, 0),
        s(false, Some(0), 0),
        s(false, Some(5), 0),
        s(false, None, 1),
        s(false, None, 2),
    ]
};

impl Stats {
    /// The statistics in pycocotools' order (`COCOeval.stats`).
    pub fn to_array(&self) -> [f64; 10] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_medium,
            self.ap_large,
            self.ar,
            self.ar50,
            self.ar75,
            self.ar_medium,
            self.ar_large,
        ]
    }

    fn from_array(v: [f64; 10]) -> Stats {
        let [ap, ap50, ap75, ap_medium, ap_large, ar, ar50, ar75, ar_medium, ar_large] = v;
        Stats {
            ap,
            ap50,
            ap75,
            ap_medium,
            ap_large,
            ar,
            ar50,
            ar75,
            ar_medium,
            ar_large,
        }
    }

    /// The statistics as a JSON object with the ten names (`hrnetc eval --json`).
    pub fn to_json(&self) -> String {
        // Serializing plain numbers into a string cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The ten lines `COCOeval.summarize()` prints for keypoints, each ending in a newline.
    pub fn summary_text(&self) -> String {
        let thresholds = linspace::<T>(0.5, 0.95);
        let mut out = String::new();
        for (s, value) in SUMMARIES.iter().zip(self.to_array()) {
            let (title, kind) = if s.precision {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            let iou = match s.threshold {
                None => format!("{:.2}:{:.2}", thresholds[0], thresholds[T - 1]),
                Some(t) => format!("{:.2}", thresholds[t]),
            };
            out += &format!(
                " {title:<18} {kind} @[ IoU={iou:<9} | area={:>6} | maxDets={MAX_DETS:>3} ] = {value:.3}\n",
                AREA_LABELS[s.area]
            );
        }
        out
    }
}

/// A result as the evaluation sees it.
struct Dt<'a> {
    score: f64,
    area: f64,
    keypoints: &'a [f64],
}

/// `evaluateImg`'s answer for one image, category and area range.
struct EvalImg {
    scores: Vec<f64>,
    /// `T × D`: id of the matched ground truth, 0 when unmatched (pycocotools' `dtMatches`).
    matches: Vec<u64>,
    /// `T × D`.
    dt_ignore: Vec<bool>,
    gt_ignore: Vec<bool>,
}

/// Evaluates keypoint results against a ground truth, as `COCOeval(gt, gt.loadRes(results),
/// 'keypoints')` with `evaluate()`, `accumulate()` and `summarize()`.
///
/// Errors: a result on an image the ground truth does not have, or whose keypoints are not 17
/// `[x, y, v]` triples, or without a `bbox` when the first result has one (as in pycocotools,
/// which fails on these); an annotation without 17 finite keypoints.
pub fn evaluate(gt: &GroundTruth, results: &[KeypointResult]) -> Result<Stats, EvalError> {
    for a in &gt.annotations {
        a.check().map_err(EvalError::GroundTruth)?;
    }
    let index = |ids: &[u64]| -> BTreeMap<u64, usize> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect()
    };
    let (cat_index, img_index) = (index(&gt.categories), index(&gt.images));
    let dts = prepare_results(&img_index, results)?;
    let (nk, ni) = (cat_index.len(), img_index.len());
    // Per (category, image): ground truth and results in file order.
    let mut gts: Vec<Vec<&GtAnnotation>> = vec![Vec::new(); nk * ni];
    let mut dtss: Vec<Vec<Dt>> = (0..nk * ni).map(|_| Vec::new()).collect();
    for a in &gt.annotations {
        if let (Some(&k), Some(&i)) = (cat_index.get(&a.category_id), img_index.get(&a.image_id)) {
            gts[k * ni + i].push(a);
        }
    }
    for (d, r) in dts.into_iter().zip(results) {
        if let (Some(&k), Some(&i)) = (cat_index.get(&r.category_id), img_index.get(&r.image_id)) {
            dtss[k * ni + i].push(d);
        }
    }
    let mut precision = vec![-1.0; T * R * nk * AREA_RANGES.len()];
    let mut recall = vec![-1.0; T * nk * AREA_RANGES.len()];
    let mut evals: Vec<Option<EvalImg>> = Vec::with_capacity(ni);
    for k in 0..nk {
        let per_image: Vec<(Vec<&GtAnnotation>, Vec<Dt>, Vec<f64>)> = (0..ni)
            .map(|i| {
                let g = std::mem::take(&mut gts[k * ni + i]);
                let mut d = std::mem::take(&mut dtss[k * ni + i]);
                d.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
                d.truncate(MAX_DETS);
                let ious = compute_oks(&g, &d);
                (g, d, ious)
            })
            .collect();
        for (a, &range) in AREA_RANGES.iter().enumerate() {
            evals.clear();
            evals.extend(
                per_image
                    .iter()
                    .map(|(g, d, ious)| evaluate_img(g, d, ious, range)),
            );
            let base = k * AREA_RANGES.len() + a;
            accumulate(&evals, &mut precision, &mut recall, base, nk);
        }
    }
    Ok(summarize(&precision, &recall, nk))
}

/// Reads both files and evaluates: `hrnetc eval` in one call.
///
/// Errors: as [`GroundTruth::read`], [`super::coco::read_results`] and [`evaluate`].
pub fn evaluate_files(gt: &Path, results: &Path) -> Result<Stats, EvalError> {
    let gt = GroundTruth::read(gt)?;
    let results = super::coco::read_results(results)?;
    evaluate(&gt, &results)
}

/// What can go wrong evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file problem.
    #[error(transparent)]
    File(#[from] CocoError),
    /// An annotation the evaluation cannot use.
    #[error("ground truth {0}")]
    GroundTruth(String),
    /// A result that pycocotools refuses.
    #[error("result {index} (image {image_id}): {what}")]
    Result {
        /// Position in the results.
        index: usize,
        /// Its image.
        image_id: u64,
        /// What is wrong.
        what: String,
    },
}

/// `loadRes`: ids and areas of the results.
fn prepare_results<'a>(
    images: &BTreeMap<u64, usize>,
    results: &'a [KeypointResult],
) -> Result<Vec<Dt<'a>>, EvalError> {
    let use_bbox = results
        .first()
        .is_some_and(|r| r.bbox.as_ref().is_some_and(|b| !b.is_empty()));
    let mut out = Vec::with_capacity(results.len());
    for (index, r) in results.iter().enumerate() {
        let err = |what: String| EvalError::Result {
            index,
            image_id: r.image_id,
            what,
        };
        if !images.contains_key(&r.image_id) {
            return Err(err("the ground truth has no such image".into()));
        }
        if r.keypoints.len() != 3 * JOINTS {
            return Err(err(format!(
                "keypoints has {} values, expected {}",
                r.keypoints.len(),
                3 * JOINTS
            )));
        }
        let area = if use_bbox {
            match r.bbox.as_deref() {
                Some([_, _, w, h, ..]) => w * h,
                _ => {
                    return Err(err(
                        "no [x, y, w, h] bbox, but the first result has one".into()
                    ))
                }
            }
        } else {
            let xs = r.keypoints.iter().step_by(3);
            let ys = r.keypoints.iter().skip(1).step_by(3);
            let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
            let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
            (x1 - x0) * (y1 - y0)
        };
        out.push(Dt {
            score: r.score,
            area,
            keypoints: &r.keypoints,
        });
    }
    Ok(out)
}

/// `computeOks`: `D × G` OKS, row-major; empty when either side is.
fn compute_oks(gts: &[&GtAnnotation], dts: &[Dt]) -> Vec<f64> {
    if gts.is_empty() || dts.is_empty() {
        return Vec::new();
    }
    let mut ious = vec![0.0; dts.len() * gts.len()];
    let mut e = [0.0f64; JOINTS];
    for (j, g) in gts.iter().enumerate() {
        let kg = &g.keypoints;
        let labelled = (0..JOINTS).filter(|&n| kg[3 * n + 2] > 0.0).count();
        let [bx, by, bw, bh] = g.bbox;
        let (x0, x1, y0, y1) = (bx - bw, bx + bw * 2.0, by - bh, by + bh * 2.0);
        for (i, d) in dts.iter().enumerate() {
            let kd = d.keypoints;
            let mut n = 0;
            for (joint, sigma) in COCO_SIGMAS.iter().enumerate() {
                let (xd, yd) = (kd[3 * joint], kd[3 * joint + 1]);
                let (dx, dy) = if labelled > 0 {
                    if kg[3 * joint + 2] <= 0.0 {
                        continue;
                    }
                    (xd - kg[3 * joint], yd - kg[3 * joint + 1])
                } else {
                    (
                        0f64.max(x0 - xd) + 0f64.max(xd - x1),
                        0f64.max(y0 - yd) + 0f64.max(yd - y1),
                    )
                };
                let var = (sigma * 2.0) * (sigma * 2.0);
                e[n] = (-((dx * dx + dy * dy) / var / (g.area + f64::EPSILON) / 2.0)).exp();
                n += 1;
            }
            ious[i * gts.len() + j] = numpy_sum(&e[..n]) / n as f64;
        }
    }
    ious
}

/// `evaluateImg` for one image, category and area range; `dts` sorted and truncated.
fn evaluate_img(
    gts: &[&GtAnnotation],
    dts: &[Dt],
    ious: &[f64],
    (lo, hi): (f64, f64),
) -> Option<EvalImg> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let outside = |area: f64| area < lo || area > hi;
    let ignored: Vec<bool> = gts
        .iter()
        .map(|g| g.iscrowd != 0 || g.num_keypoints == 0 || outside(g.area))
        .collect();
    // Ignored ground truth last (stable).
    let mut order: Vec<usize> = (0..gts.len()).collect();
    order.sort_by_key(|&g| ignored[g]);
    let gt_ignore: Vec<bool> = order.iter().map(|&g| ignored[g]).collect();
    let (nd, ng) = (dts.len(), gts.len());
    let mut matches = vec![0u64; T * nd];
    let mut dt_ignore = vec![false; T * nd];
    if !ious.is_empty() {
        let mut gt_matched = vec![false; ng];
        for (t, thr) in linspace::<T>(0.5, 0.95).into_iter().enumerate() {
            gt_matched.fill(false);
            for di in 0..dts.len() {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (gi, &g) in order.iter().enumerate() {
                    if gt_matched[gi] && gts[g].iscrowd == 0 {
                        continue;
                    }
                    if m.is_some_and(|m| !gt_ignore[m]) && gt_ignore[gi] {
                        break;
                    }
                    let iou = ious[di * ng + g];
                    if iou < best {
                        continue;
                    }
                    best = iou;
                    m = Some(gi);
                }
                if let Some(m) = m {
                    dt_ignore[t * nd + di] = gt_ignore[m];
                    matches[t * nd + di] = gts[order[m]].id;
                    gt_matched[m] = true; // pycocotools stores the result's id, always > 0
                }
            }
        }
    }
    for t in 0..T {
        for (di, d) in dts.iter().enumerate() {
            let k = t * nd + di;
            dt_ignore[k] |= matches[k] == 0 && outside(d.area);
        }
    }
    Some(EvalImg {
        scores: dts.iter().map(|d| d.score).collect(),
        matches,
        dt_ignore,
        gt_ignore,
    })
}

/// `accumulate` for one category and area range (`base = k · A + a`): precision at the recall
/// points and the final recall per OKS threshold.
fn accumulate(
    evals: &[Option<EvalImg>],
    precision: &mut [f64],
    recall: &mut [f64],
    base: usize,
    nk: usize,
) {
    let evals: Vec<&EvalImg> = evals.iter().flatten().collect();
    if evals.is_empty() {
        return;
    }
    // (image, position) of every result, by score, stable.
    let mut all: Vec<(usize, usize)> = evals
        .iter()
        .enumerate()
        .flat_map(|(e, ev)| (0..ev.scores.len().min(MAX_DETS)).map(move |d| (e, d)))
        .collect();
    all.sort_by(|&(ea, da), &(eb, db)| {
        let (a, b) = (evals[ea].scores[da], evals[eb].scores[db]);
        b.partial_cmp(&a).unwrap_or(Ordering::Equal)
    });
    let npig = evals
        .iter()
        .map(|e| e.gt_ignore.iter().filter(|&&i| !i).count())
        .sum::<usize>();
    if npig == 0 {
        return;
    }
    let rec_thrs = linspace::<R>(0.0, 1.0);
    let nd = all.len();
    let (mut rc, mut pr) = (Vec::with_capacity(nd), Vec::with_capacity(nd));
    let na = AREA_RANGES.len();
    for t in 0..T {
        rc.clear();
        pr.clear();
        let (mut tp, mut fp) = (0usize, 0usize);
        for &(e, d) in &all {
            let ev = evals[e];
            let k = t * ev.scores.len() + d;
            if !ev.dt_ignore[k] {
                if ev.matches[k] != 0 {
                    tp += 1;
                } else {
                    fp += 1;
                }
            }
            let (tpf, fpf) = (tp as f64, fp as f64);
            rc.push(tpf / npig as f64);
            pr.push(tpf / (fpf + tpf + f64::EPSILON));
        }
        recall[t * nk * na + base] = rc.last().copied().unwrap_or(0.0);
        for i in (1..nd).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        for (r, thr) in rec_thrs.iter().enumerate() {
            let pi = rc.partition_point(|&x| x < *thr);
            precision[(t * R + r) * nk * na + base] = if pi < nd { pr[pi] } else { 0.0 };
        }
    }
}

/// `summarize` for keypoints: the mean of the defined (> −1) values of each selection.
fn summarize(precision: &[f64], recall: &[f64], nk: usize) -> Stats {
    let na = AREA_RANGES.len();
    let mut stats = [0.0; 10];
    let mut picked = Vec::new();
    for (stat, s) in stats.iter_mut().zip(&SUMMARIES) {
        picked.clear();
        let ts = match s.threshold {
            Some(t) => t..t + 1,
            None => 0..T,
        };
        for t in ts {
            if s.precision {
                for r in 0..R {
                    for k in 0..nk {
                        picked.push(precision[(t * R + r) * nk * na + k * na + s.area]);
                    }
                }
            } else {
                for k in 0..nk {
                    picked.push(recall[t * nk * na + k * na + s.area]);
                }
            }
        }
        picked.retain(|&v| v > -1.0);
        *stat = if picked.is_empty() {
            -1.0
        } else {
            numpy_sum(&picked) / picked.len() as f64
        };
    }
    Stats::from_array(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_orders_additions_as_numpy() {
        // Sums that depend on the order, with the values NumPy 2.4 gives.
        let mut v = vec![1.0; 20];
        v[0] = 1e16;
        assert_eq!(v.iter().fold(0.0, |s, &x| s + x), 1e16);
        assert_eq!(numpy_sum(&v), 1e16 + 16.0);
        let mut v = vec![0.1; 300];
        v[5] = 1e10;
        assert_eq!(numpy_sum(&v), 10000000029.900003);
        assert_eq!(numpy_sum(&[0.5; 300]), 150.0);
        assert_eq!(numpy_sum(&[]), 0.0);
    }

    #[test]
    fn thresholds_are_numpy_linspace() {
        let t = linspace::<10>(0.5, 0.95);
        assert_eq!((t[0], t[5], t[9]), (0.5, 0.75, 0.95));
        let r = linspace::<101>(0.0, 1.0);
        assert_eq!((r[1], r[100]), (0.01, 1.0));
    }

    #[test]
    fn summary_lines_have_pycocotools_layout() {
        let stats = Stats::from_array([0.0625, 1.0, -1.0, 0.5, 0.25, 0.1, 0.2, 0.3, 0.4, 0.5]);
        let text = stats.summary_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ] = 0.062"
        );
        assert_eq!(
            lines[2],
            " Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets= 20 ] = -1.000"
        );
        assert_eq!(
            lines[8],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ] = 0.400"
        );
        let json = serde_json::to_string(&stats).unwrap();
        assert!(
            json.starts_with(r#"{"AP":0.0625,"AP50":1.0,"AP75":-1.0,"APm":0.5"#),
            "{json}"
        );
    }
}
