//! `hrnetc run CONFIG --weights W --images DIR --detections DETS.json [--annotations GT.json]
//! [--flip] --output results.json`: the official COCO test with person detections.
//!
//! Detections of category 1 scoring at least `TEST.IMAGE_THRE` are kept; each image is read
//! once (JPEG decoded as libjpeg-turbo/OpenCV decodes it) and all its boxes are estimated as
//! one batch (with the JIT, several people run side by side on the threads);
//! the people are rescored and OKS-NMS'd per image as the official `evaluate` does, and the
//! COCO keypoint results are written atomically at the end. A progress line goes to stderr.

use crate::loaded::read_image;
use anyhow::{Context, Result};
use hrnet_codegen::build_api;
use hrnet_runtime::pose::coco::{self, ImageFiles, PersonPrediction, Thresholds};
use hrnet_runtime::pose::progress::Progress;
use hrnet_runtime::pose::{BoxXywh, HeatmapModel, PersonKeypoints, PoseEstimator};
use std::path::Path;

pub fn run(
    model: impl HeatmapModel,
    detections: &Path,
    images: &Path,
    annotations: Option<&Path>,
    flip: bool,
    output: &Path,
) -> Result<()> {
    let thresholds = Thresholds::default();
    let dets = coco::read_detections(detections)?;
    let files = match annotations {
        Some(path) => ImageFiles::from_annotations(path)?,
        None => ImageFiles::by_convention(),
    };
    // A box without area has no crop: skipped (and counted) rather than failing the run.
    let (kept, degenerate): (Vec<_>, Vec<_>) = coco::person_boxes(&dets, &thresholds)
        .into_iter()
        .partition(|d| d.bbox[2] > 0.0 && d.bbox[3] > 0.0);
    if !degenerate.is_empty() {
        eprintln!(
            "skipping {} detections with a zero or negative width or height",
            degenerate.len()
        );
    }
    let per_image = coco::group_by_image(&kept);
    let mut estimator = PoseEstimator::new(model)?;
    let mut progress = Progress::new(per_image.len());
    let mut people = Vec::new();
    let mut found: Vec<PersonKeypoints> = Vec::new();
    let mut boxes: Vec<BoxXywh> = Vec::new();
    for (image_id, dets) in &per_image {
        let path = files.path(images, *image_id);
        let image =
            read_image(&path).with_context(|| format!("image {image_id} of the detections"))?;
        boxes.clear();
        boxes.extend(dets.iter().map(|d| d.bbox()));
        estimator
            .estimate_batch_into(&image, &boxes, flip, &mut found)
            .with_context(|| format!("image {image_id} ({})", path.display()))?;
        for (det, person) in dets.iter().zip(&found) {
            people.push(PersonPrediction::new(*image_id, det.score, person));
        }
        progress.advance(1, dets.len());
    }
    progress.finish();
    let results = coco::select_results(&people, &thresholds);
    let bytes = coco::results_json(&results)?;
    build_api::write_atomic(output, &bytes)?;
    eprintln!(
        "wrote {}: {} results from {} boxes in {} images",
        output.display(),
        results.len(),
        people.len(),
        per_image.len()
    );
    Ok(())
}
