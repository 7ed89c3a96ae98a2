//! Rescoring and OKS-NMS against the official code: `tests/data/coco/make_nms_cases.py` ran the
//! official `oks_nms` (deep-high-resolution-net.pytorch `lib/nms/nms.py`, NumPy 1.26) after the
//! official rescoring on five images: near-duplicate and distinct people, confidences at the 0.2
//! threshold, people without a confident joint (score 0), exact ties between duplicates (the
//! later one wins, as `argsort()[::-1]`). `select_results` must keep the same people in the same
//! order with bit-identical scores.
#![cfg(feature = "coco")]

use std::path::Path;

use hrnet_runtime::pose::coco::{select_results, PersonPrediction, Thresholds};
use hrnet_runtime::pose::CenterScale;

#[test]
fn selection_equals_the_official_rescoring_and_oks_nms() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/coco/nms/cases.json");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let people: Vec<PersonPrediction> = cases["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let kp: Vec<f32> = p["keypoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| f(v) as f32)
                .collect();
            let scale = p["scale"].as_array().unwrap();
            PersonPrediction {
                image_id: p["image_id"].as_u64().unwrap(),
                box_score: f(&p["box_score"]),
                center_scale: CenterScale {
                    center: [0.0, 0.0],
                    scale: [f(&scale[0]) as f32, f(&scale[1]) as f32],
                },
                keypoints: kp.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            }
        })
        .collect();
    let mut want = Vec::new();
    let mut suppressed = 0;
    for image in cases["images"].as_array().unwrap() {
        let id = image["image_id"].as_u64().unwrap();
        let members: Vec<&PersonPrediction> = people.iter().filter(|p| p.image_id == id).collect();
        let bits = image["score_bits"].as_array().unwrap();
        let keep = image["keep"].as_array().unwrap();
        suppressed += members.len() - keep.len();
        for k in keep {
            let k = k.as_u64().unwrap() as usize;
            want.push((id, members[k].keypoints[0][0], bits[k].as_u64().unwrap()));
        }
    }
    assert!(suppressed >= 5, "the cases must exercise the NMS");
    let got: Vec<(u64, f32, u64)> = select_results(&people, &Thresholds::default())
        .iter()
        .map(|r| (r.image_id, r.keypoints[0] as f32, r.score.to_bits()))
        .collect();
    assert_eq!(got, want);
}
