//! The classification pipeline against Pillow and torchvision (`tests/data/heads/make_reference.py`):
//! `Image.resize(..., BILINEAR)` byte for byte on up-, down- and mixed scaling at odd sizes, and
//! `Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize])` within 1e-6.

mod common;

use common::{case_image as source, data_dir, load, reference};
use hrnet_runtime::cls::{preprocess, resize_bilinear_pil, resize_shorter};

#[test]
fn resize_equals_pillow_byte_for_byte() {
    let json = reference();
    let cases = json["resize"].as_array().unwrap();
    assert!(cases.len() >= 16);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let size = case["size"].as_array().unwrap();
        let (w, h) = (
            size[0].as_u64().unwrap() as usize,
            size[1].as_u64().unwrap() as usize,
        );
        let want = load(&data_dir().join(format!("heads/resize/{name}.png")));
        let got = resize_bilinear_pil(&source(case), w, h);
        assert_eq!(got.dimensions(), want.dimensions(), "{name}");
        let diff = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from Pillow");
    }
}

#[test]
fn tensor_equals_torchvision() {
    let json = reference();
    let cases = json["classification"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let crop = case["crop"].as_u64().unwrap() as usize;
        let mut t = vec![0.0f32; 3 * crop * crop];
        preprocess(&source(case), crop, &mut t).unwrap();
        let shape: Vec<u64> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(shape, [3, crop as u64, crop as u64]);
        for s in case["samples"].as_array().unwrap() {
            let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap());
            assert!(
                (f64::from(t[i]) - v).abs() <= 1e-6,
                "{}: [{i}] {} vs {v}",
                case["image"],
                t[i]
            );
        }
        let sum: f64 = t.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = t.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let n = t.len() as f64;
        assert!(
            (sum - case["sum"].as_f64().unwrap()).abs() <= 1e-6 * n,
            "{}: sum",
            case["image"]
        );
        assert!(
            (sum_sq - case["sum_sq"].as_f64().unwrap()).abs() <= 1e-5 * n,
            "{}: sum of squares",
            case["image"]
        );
    }
}

#[test]
fn shorter_side_rule_and_errors() {
    let img = image::RgbImage::new(97, 61);
    assert_eq!(resize_shorter(&img, 256).unwrap().dimensions(), (407, 256));
    let tall = image::RgbImage::new(5, 7);
    assert_eq!(resize_shorter(&tall, 256).unwrap().dimensions(), (256, 358));
    assert!(resize_shorter(&image::RgbImage::new(0, 3), 256).is_err());
    assert!(resize_shorter(&img, 0).is_err());
    let mut t = vec![0.0; 5];
    let e = preprocess(&img, 224, &mut t).unwrap_err();
    assert!(e.to_string().contains("expected 150528"), "{e}");
}
