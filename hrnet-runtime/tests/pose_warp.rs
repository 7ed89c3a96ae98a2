//! Preprocessing against OpenCV: center/scale, the affine matrix and the 8-bit crop must equal the
//! official pipeline's (`tests/data/pose/make_reference.py`, OpenCV 4.10) bit for bit, and the
//! normalized tensor must equal normalizing that crop within 1e-6.

use std::path::{Path, PathBuf};

use hrnet_runtime::pose::{
    crop_person, get_affine_transform, normalize_rgb, preprocess, warp_affine_linear, Affine2x3,
    BoxXywh, CenterScale, ImageU8, PoseError,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pose")
}

fn load(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

struct Case {
    name: String,
    image: image::RgbImage,
    bbox: BoxXywh,
    width: usize,
    height: usize,
    center: [f32; 2],
    scale: [f32; 2],
    trans: [f64; 6],
    crop: image::RgbImage,
}

fn cases() -> Vec<Case> {
    let dir = data_dir();
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let cases: Vec<Case> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let b = c["box"].as_array().unwrap();
            let bits: Vec<u64> = c["trans_bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                image: load(&dir.join(c["image"].as_str().unwrap())),
                bbox: BoxXywh::new(f(&b[0]), f(&b[1]), f(&b[2]), f(&b[3])),
                width: c["width"].as_u64().unwrap() as usize,
                height: c["height"].as_u64().unwrap() as usize,
                center: [f(&c["center"][0]) as f32, f(&c["center"][1]) as f32],
                scale: [f(&c["scale"][0]) as f32, f(&c["scale"][1]) as f32],
                trans: std::array::from_fn(|i| f64::from_bits(bits[i])),
                crop: load(&dir.join(c["crop"].as_str().unwrap())),
            }
        })
        .collect();
    assert_eq!(cases.len(), 48, "reference.json should hold 48 cases");
    cases
}

#[test]
fn center_scale_and_transform_equal_opencv_bit_for_bit() {
    for c in cases() {
        let cs = CenterScale::from_box(c.bbox, c.width, c.height).unwrap();
        assert_eq!(
            cs,
            CenterScale {
                center: c.center,
                scale: c.scale
            },
            "{}",
            c.name
        );
        let t = get_affine_transform(&cs, c.width, c.height).unwrap();
        let got: Vec<u64> = t.0.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u64> = c.trans.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{}: {:?} vs {:?}", c.name, t.0, c.trans);
    }
}

#[test]
fn crop_equals_cv2_warp_affine_bit_for_bit() {
    let mut report = Vec::new();
    for c in cases() {
        assert_eq!(
            (c.crop.width() as usize, c.crop.height() as usize),
            (c.width, c.height)
        );
        // Warp with OpenCV's own matrix, and through the whole box → crop path.
        let mut from_matrix = vec![0u8; c.width * c.height * 3];
        warp_affine_linear(
            ImageU8::from_rgb(&c.image),
            &Affine2x3(c.trans),
            &mut from_matrix,
            c.width,
            c.height,
        )
        .unwrap();
        let mut from_box = vec![0u8; c.width * c.height * 3];
        let (cs, t) = crop_person(&c.image, c.bbox, c.width, c.height, &mut from_box).unwrap();
        assert_eq!(cs.center, c.center);
        assert_eq!(t.0, c.trans);
        for (what, got) in [("matrix", &from_matrix), ("box", &from_box)] {
            let diff: Vec<usize> = got
                .iter()
                .zip(c.crop.as_raw())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect();
            if let Some(&i) = diff.first() {
                let px = i / 3;
                report.push(format!(
                    "{} ({what}): {} bytes differ, first at x={} y={} c={}: {} vs cv2 {}",
                    c.name,
                    diff.len(),
                    px % c.width,
                    px / c.width,
                    i % 3,
                    got[i],
                    c.crop.as_raw()[i]
                ));
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn normalized_tensor_equals_normalizing_the_cv2_crop() {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    for c in cases() {
        let plane = c.width * c.height;
        let mut crop = vec![0u8; 3 * plane];
        let mut tensor = vec![0f32; 3 * plane];
        let cs = preprocess(&c.image, c.bbox, c.width, c.height, &mut crop, &mut tensor).unwrap();
        assert_eq!(cs.scale, c.scale);
        let mut worst = 0f64;
        for ch in 0..3 {
            for (i, px) in c.crop.pixels().enumerate() {
                let want = (f64::from(px.0[ch]) / 255.0 - MEAN[ch]) / STD[ch];
                worst = worst.max((f64::from(tensor[ch * plane + i]) - want).abs());
            }
        }
        assert!(worst <= 1e-6, "{}: max |diff| {worst}", c.name);
        // The free function on the reference crop gives the same tensor.
        let mut again = vec![0f32; 3 * plane];
        normalize_rgb(c.crop.as_raw(), c.width, c.height, &mut again).unwrap();
        assert_eq!(again, tensor, "{}", c.name);
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let img = image::RgbImage::new(8, 8);
    let mut crop = vec![0u8; 4 * 4 * 3];
    let mut tensor = vec![0f32; 4 * 4 * 3];
    for b in [
        BoxXywh::new(0.0, 0.0, 0.0, 4.0),
        BoxXywh::new(0.0, 0.0, 4.0, -1.0),
        BoxXywh::new(f64::INFINITY, 0.0, 4.0, 4.0),
        BoxXywh::new(0.0, f64::NAN, 4.0, 4.0),
    ] {
        let e = preprocess(&img, b, 4, 4, &mut crop, &mut tensor).unwrap_err();
        assert!(matches!(e, PoseError::InvalidBox { .. }), "{e}");
    }
    let ok = BoxXywh::new(1.0, 1.0, 4.0, 4.0);
    let e = preprocess(
        &image::RgbImage::new(0, 0),
        ok,
        4,
        4,
        &mut crop,
        &mut tensor,
    )
    .unwrap_err();
    assert!(matches!(e, PoseError::EmptyImage), "{e}");
    let e = preprocess(&img, ok, 4, 4, &mut crop[..10], &mut tensor).unwrap_err();
    assert!(matches!(e, PoseError::BufferSize { .. }), "{e}");
    let e = preprocess(&img, ok, 4, 4, &mut crop, &mut tensor[..3]).unwrap_err();
    assert!(matches!(e, PoseError::BufferSize { .. }), "{e}");
    let e = preprocess(&img, ok, 0, 4, &mut crop, &mut tensor).unwrap_err();
    assert!(matches!(e, PoseError::InvalidInputSize { .. }), "{e}");
    // A box far outside the image gives an all-zero crop.
    crop.fill(7);
    preprocess(
        &img,
        BoxXywh::new(-1000.0, 500.0, 10.0, 10.0),
        4,
        4,
        &mut crop,
        &mut tensor,
    )
    .unwrap();
    assert!(crop.iter().all(|&v| v == 0));
    // A box too small for f32 at its position collapses the three points: an error, as in OpenCV.
    let e = preprocess(
        &img,
        BoxXywh::new(-1e6, 5e5, 1e-3, 1e-3),
        4,
        4,
        &mut crop,
        &mut tensor,
    )
    .unwrap_err();
    assert!(matches!(e, PoseError::DegenerateTransform { .. }), "{e}");
}
