//! The COCO keypoint evaluation against pycocotools: every case of `tests/data/coco/eval`
//! (`make_eval_cases.py`: crowds, unlabelled ground truth, images without ground truth or
//! results, more than 20 results per image, area ranges and their edges, tied scores, two
//! categories, only ignored ground truth, results with boxes) must give pycocotools' ten
//! statistics within 1e-6 and print its summary text exactly.
#![cfg(feature = "coco")]

use std::path::{Path, PathBuf};

use hrnet_runtime::pose::coco::{read_results, KeypointResult};
use hrnet_runtime::pose::coco_eval::{evaluate, evaluate_files, EvalError, GroundTruth, Stats};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/coco/eval")
}

#[test]
fn every_case_agrees_with_pycocotools() {
    let dir = data_dir();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 10);
    let mut worst = 0.0f64;
    for (name, want) in cases {
        let stats = evaluate_files(
            &dir.join(format!("{name}.gt.json")),
            &dir.join(format!("{name}.results.json")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_stats: Vec<f64> = want["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (i, (got, want)) in stats.to_array().iter().zip(&want_stats).enumerate() {
            let diff = (got - want).abs();
            worst = worst.max(diff);
            assert!(
                diff <= 1e-6,
                "{name}: statistic {i} is {got}, pycocotools {want}"
            );
        }
        assert_eq!(
            stats.summary_text(),
            want["summary"].as_str().unwrap(),
            "{name}"
        );
    }
    eprintln!("largest difference from pycocotools: {worst:e}");
}

#[test]
fn stats_serialize_with_the_ten_names() {
    let dir = data_dir();
    let stats =
        evaluate_files(&dir.join("basic.gt.json"), &dir.join("basic.results.json")).unwrap();
    let json: serde_json::Value = serde_json::to_value(stats).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut names = [
        "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
    ];
    names.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, names);
    assert_eq!(json["AP"].as_f64(), Some(stats.ap));
    let back: Stats = serde_json::from_value(json).unwrap();
    assert_eq!(back, stats);
}

fn basic() -> (GroundTruth, Vec<KeypointResult>) {
    let dir = data_dir();
    let gt = GroundTruth::read(&dir.join("basic.gt.json")).unwrap();
    let results = read_results(&dir.join("basic.results.json")).unwrap();
    (gt, results)
}

#[test]
fn image_and_category_lists_need_not_be_sorted() {
    let (mut gt, results) = basic();
    let want = evaluate(&gt, &results).unwrap();
    gt.images.reverse();
    gt.images.push(gt.images[0]);
    assert_eq!(evaluate(&gt, &results).unwrap(), want);
}

#[test]
fn perfect_results_score_one() {
    let (gt, _) = basic();
    let results: Vec<KeypointResult> = gt
        .annotations
        .iter()
        .map(|a| KeypointResult {
            category_id: a.category_id,
            center: None,
            image_id: a.image_id,
            keypoints: a.keypoints.clone(),
            scale: None,
            score: 1.0,
            bbox: None,
        })
        .collect();
    let stats = evaluate(&gt, &results).unwrap();
    assert_eq!(stats.ap, 1.0);
    assert_eq!(stats.ar, 1.0);
}

#[test]
fn results_pycocotools_refuses_are_errors() {
    let (gt, mut results) = basic();
    results[3].image_id = 999_999;
    let err = evaluate(&gt, &results).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::Result {
                index: 3,
                image_id: 999_999,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no such image"), "{err}");
    let (gt, mut results) = basic();
    results[2].keypoints.pop();
    let err = evaluate(&gt, &results).unwrap_err().to_string();
    assert!(
        err.contains("keypoints has 50 values, expected 51"),
        "{err}"
    );
}

#[test]
fn malformed_files_name_the_file_and_place() {
    let dir = std::env::temp_dir().join(format!("hrnet-coco-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gt = dir.join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images":[{"id":1}],"annotations":[{"id":1,"image_id":1,"category_id":1,
        "keypoints":[1,2,2],"num_keypoints":1,"area":10,"bbox":[0,0,1,1],"iscrowd":0}]}"#,
    )
    .unwrap();
    let err = GroundTruth::read(&gt).unwrap_err().to_string();
    assert!(
        err.contains("gt.json") && err.contains("annotation 1: keypoints has 3 values"),
        "{err}"
    );
    std::fs::write(&gt, r#"{"images":[{"id":1}],"annotations":[{"id":1}]}"#).unwrap();
    let err = GroundTruth::read(&gt).unwrap_err().to_string();
    assert!(
        err.contains("missing field") && err.contains("line 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
