//! The segmentation pipeline against PyTorch and numpy (`tests/data/heads/make_reference.py`):
//! logits resized with `F.interpolate` and `argmax`ed (equal except where two classes tie within
//! rounding), HRNet-Semantic-Segmentation's `input_transform`, the class-map PNG.

mod common;

use std::path::Path;

use common::{case_image, data_dir, pair, ref_axis, reference};
use hrnet_runtime::seg::{class_map, normalize_image, resize_argmax, save_class_map};

/// Bilinear value of class `k` at output pixel `(y, x)` in f64 (the textbook formula).
fn ref_value(
    l: &[f32],
    k: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align: bool,
    y: usize,
    x: usize,
) -> f64 {
    let (y0, y1, ly) = ref_axis(y, h, oh, align);
    let (x0, x1, lx) = ref_axis(x, w, ow, align);
    let at = |yy: usize, xx: usize| f64::from(l[(k * h + yy) * w + xx]);
    (at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx) * (1.0 - ly)
        + (at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx) * ly
}

#[test]
fn argmax_of_resized_logits_matches_pytorch() {
    let json = reference();
    let cases = json["argmax"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let k = case["classes"].as_u64().unwrap() as usize;
        let (hw, out) = (pair(&case["input"]), pair(&case["output"]));
        let align = case["align_corners"].as_bool().unwrap();
        let dir = data_dir().join("heads/argmax");
        let (_, logits) =
            hrnet_runtime::npy::read_f32(dir.join(format!("{name}_logits.npy"))).unwrap();
        let (shape, want) =
            hrnet_runtime::npy::read_f32(dir.join(format!("{name}_classes.npy"))).unwrap();
        assert_eq!(shape, [1, out.0, out.1]);
        let map = class_map(&logits, k, hw, out, align).unwrap();
        assert_eq!(map.dimensions(), (out.1 as u32, out.0 as u32));
        let mut differ = 0;
        for (i, (&got, &want)) in map.as_raw().iter().zip(&want).enumerate() {
            let (y, x) = (i / out.1, i % out.1);
            let (got, want) = (usize::from(got), want as usize);
            if got != want {
                // Only where the two classes tie up to f32 rounding.
                let a = ref_value(&logits, got, hw, out, align, y, x);
                let b = ref_value(&logits, want, hw, out, align, y, x);
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{name} ({y}, {x}): {got} vs {want}, {a} vs {b}"
                );
                differ += 1;
            }
        }
        assert!(differ <= 2, "{name}: {differ} near-ties differ");
    }
}

#[test]
fn normalization_matches_numpy() {
    let json = reference();
    for case in json["segmentation"].as_array().unwrap() {
        let img = case_image(case);
        let mut t = vec![0.0f32; 3 * img.width() as usize * img.height() as usize];
        normalize_image(&img, &mut t).unwrap();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, [3, img.height() as usize, img.width() as usize]);
        for s in case["samples"].as_array().unwrap() {
            let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap());
            // serde_json parses decimals to within an ulp of f64: compare as f32.
            assert_eq!(t[i], v as f32, "{}: [{i}]", case["image"]);
        }
        let sum: f64 = t.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - case["sum"].as_f64().unwrap()).abs() <= 1e-9 * t.len() as f64);
    }
}

#[test]
fn class_map_png_round_trips() {
    // Two classes, a vertical edge: the map must survive PNG encoding unchanged.
    let logits: Vec<f32> = [0.0f32, 1.0, 1.0, 0.0].to_vec();
    let map = class_map(&logits, 2, (1, 2), (3, 8), false).unwrap();
    assert_eq!(map.get_pixel(0, 0).0, [1]);
    assert_eq!(map.get_pixel(7, 2).0, [0]);
    let path = std::env::temp_dir().join(format!("hrnet_seg_map_{}.png", std::process::id()));
    save_class_map(&map, &path).unwrap();
    let back = image::open(&path).unwrap().to_luma8();
    std::fs::remove_file(&path).ok();
    assert_eq!(back, map);
    let mut out = vec![0u8; 3];
    assert!(resize_argmax(&logits, 2, (1, 2), (3, 8), false, &mut out).is_err());
    let e = save_class_map(&map, Path::new("/nonexistent/dir/map.png")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/dir/map.png"), "{e}");
}
