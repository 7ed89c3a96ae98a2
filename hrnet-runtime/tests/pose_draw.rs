//! Rendering and image I/O: keypoints decoded from a synthetic heatmap drawn over the astronaut
//! photograph, written as PNG and read back; JPEG and PNG reading; unreadable files are errors.

use std::path::{Path, PathBuf};

use hrnet_runtime::pose::{
    decode_heatmaps, draw_keypoints, load_rgb, save_png, BoxXywh, CenterScale, Dataset, DrawStyle,
    HeatmapShape, PoseError,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/pose")
        .join(name)
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pose_draw");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where the joints of the astronaut photograph are (256×256 image, COCO order), by eye; the lower
/// body is outside the picture and gets faint peaks.
const JOINTS: [(f64, f64, f32); 17] = [
    (112.0, 62.0, 1.0),   // nose
    (123.0, 50.0, 1.0),   // left eye
    (101.0, 50.0, 1.0),   // right eye
    (140.0, 56.0, 1.0),   // left ear
    (82.0, 56.0, 1.0),    // right ear
    (168.0, 140.0, 1.0),  // left shoulder
    (48.0, 140.0, 1.0),   // right shoulder
    (183.0, 205.0, 1.0),  // left elbow
    (30.0, 210.0, 1.0),   // right elbow
    (160.0, 245.0, 1.0),  // left wrist
    (78.0, 243.0, 1.0),   // right wrist
    (140.0, 250.0, 0.05), // left hip
    (75.0, 250.0, 0.05),  // right hip
    (140.0, 252.0, 0.05), // left knee
    (75.0, 252.0, 0.05),  // right knee
    (140.0, 254.0, 0.05), // left ankle
    (75.0, 254.0, 0.05),  // right ankle
];

#[test]
fn skeleton_over_the_astronaut() {
    let image = load_rgb(&data("astronaut.png")).unwrap();
    assert_eq!(image.dimensions(), (256, 256));
    // A 192×256 network's 48×64 heatmaps, Gaussian peaks (σ = 2) where the joints are.
    let shape = HeatmapShape {
        joints: 17,
        height: 64,
        width: 48,
    };
    let cs = CenterScale::from_box(BoxXywh::new(0.0, 10.0, 230.0, 246.0), 192, 256).unwrap();
    let px_per_cell = 200.0 * f64::from(cs.scale[0]) / 48.0;
    let mut hm = vec![0f32; shape.len()];
    for (j, &(x, y, peak)) in JOINTS.iter().enumerate() {
        let hx = (x - f64::from(cs.center[0])) / px_per_cell + 24.0;
        let hy = (y - f64::from(cs.center[1])) / px_per_cell + 32.0;
        for r in 0..64 {
            for c in 0..48 {
                let d2 = (c as f64 - hx).powi(2) + (r as f64 - hy).powi(2);
                hm[(j * 64 + r) * 48 + c] = peak * (-d2 / 8.0).exp() as f32;
            }
        }
    }
    let mut kps = Vec::new();
    decode_heatmaps(&hm, shape, &cs, &mut kps).unwrap();
    for (k, &(x, y, _)) in kps.iter().zip(&JOINTS) {
        // Decoding is exact to a heatmap cell (≈ 6 image pixels here).
        assert!(
            (k.x - x).abs() <= px_per_cell && (k.y - y).abs() <= px_per_cell,
            "{k:?} vs ({x}, {y})"
        );
    }

    let mut canvas = image.clone();
    let style = DrawStyle {
        min_score: 0.3,
        ..DrawStyle::for_image(&canvas)
    };
    assert!(style.thickness >= 2.0);
    draw_keypoints(&mut canvas, &kps, Dataset::Coco, &style);
    let path = out_dir().join("astronaut_pose.png");
    save_png(&canvas, &path).unwrap();
    let back = load_rgb(&path).unwrap();
    assert_eq!(back, canvas, "PNG round trip");

    // The shoulder line is drawn midway, joints are dots, the faint hips are not drawn, and a
    // pixel far from the skeleton is untouched.
    let mid = (
        ((kps[5].x + kps[6].x) / 2.0) as u32,
        ((kps[5].y + kps[6].y) / 2.0) as u32,
    );
    assert_ne!(back.get_pixel(mid.0, mid.1), image.get_pixel(mid.0, mid.1));
    assert_eq!(
        back.get_pixel(kps[0].x as u32, kps[0].y as u32).0,
        [255, 0, 0]
    );
    let hip = (kps[11].x as u32, kps[11].y.min(255.0) as u32);
    assert_eq!(back.get_pixel(hip.0, hip.1), image.get_pixel(hip.0, hip.1));
    assert_eq!(back.get_pixel(230, 20), image.get_pixel(230, 20));
    let changed = back
        .pixels()
        .zip(image.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 1000 && changed < 256 * 256 / 4,
        "{changed} pixels drawn"
    );
}

#[test]
fn mpii_and_unknown_layouts_draw() {
    let mut img = image::RgbImage::new(160, 64);
    let kps: Vec<_> = (0..16)
        .map(|j| hrnet_runtime::pose::Keypoint {
            x: 8.0 * j as f64,
            y: 32.0,
            score: 1.0,
        })
        .collect();
    let style = DrawStyle {
        thickness: 2.0,
        min_score: 0.0,
    };
    draw_keypoints(&mut img, &kps, Dataset::Mpii, &style);
    // Edge (0, 1) lies on y = 32 between x = 0 and 8.
    assert_ne!(img.get_pixel(4, 32).0, [0, 0, 0]);
    let mut plain = image::RgbImage::new(160, 64);
    draw_keypoints(
        &mut plain,
        &kps[..5],
        Dataset::Other { num_joints: 5 },
        &style,
    );
    // Dots only: between two dots nothing is drawn.
    assert_eq!(plain.get_pixel(4, 32).0, [0, 0, 0]);
    assert_eq!(plain.get_pixel(8, 32).0, [255, 0, 0]);
}

#[test]
fn jpeg_and_png_read_and_bad_files_are_clear_errors() {
    let dir = out_dir();
    let img = load_rgb(&data("synth_gradient.png")).unwrap();
    assert_eq!(img.dimensions(), (97, 61));
    let jpg = dir.join("gradient.jpg");
    img.save_with_format(&jpg, image::ImageFormat::Jpeg)
        .unwrap();
    let back = load_rgb(&jpg).unwrap();
    assert_eq!(back.dimensions(), (97, 61));
    // Lossy, but close.
    let err: f64 = back
        .as_raw()
        .iter()
        .zip(img.as_raw())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
        .sum::<f64>()
        / img.as_raw().len() as f64;
    assert!(err < 20.0, "mean JPEG error {err}");
    // A JPEG with a misleading extension is still read (format sniffed from the content).
    let disguised = dir.join("gradient_jpeg.png");
    std::fs::copy(&jpg, &disguised).unwrap();
    assert_eq!(load_rgb(&disguised).unwrap(), back);

    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    let e = load_rgb(&garbage).unwrap_err();
    assert!(matches!(e, PoseError::Image { .. }), "{e}");
    assert!(e.to_string().contains("garbage.png"), "{e}");
    let truncated = dir.join("truncated.png");
    let bytes = std::fs::read(data("astronaut.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_rgb(&truncated), Err(PoseError::Image { .. })));
    let e = load_rgb(&dir.join("does_not_exist.jpg")).unwrap_err();
    assert!(e.to_string().contains("does_not_exist.jpg"), "{e}");
    let e = save_png(&img, &dir.join("no_such_dir/x.png")).unwrap_err();
    assert!(matches!(e, PoseError::Image { .. }), "{e}");
}

/// A PNG of `width × height` pixels of colour type `color` (0 grey, 2 RGB) at 8 bits whose
/// pixel data is never valid: only its header can be read.
fn png_header_only(width: u32, height: u32, color: u8) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", b"\x78\x9c\x03\x00");
    chunk(b"IEND", b"");
    out
}

#[test]
fn huge_images_are_refused_from_their_header() {
    let dir = out_dir();
    // 20000x20000 grey: 400 MB decoded, 1.2 GB as RGB, 1.2 GB more for a drawing copy.
    let grey = dir.join("huge_grey.png");
    std::fs::write(&grey, png_header_only(20000, 20000, 0)).unwrap();
    let e = load_rgb(&grey).unwrap_err();
    assert!(matches!(e, PoseError::ImageFileTooLarge { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("huge_grey.png"), "{text}");
    assert!(text.contains("20000x20000"), "{text}");
    assert!(text.contains("2800000000 bytes"), "{text}");
    assert!(text.contains("the limit is 1073741824"), "{text}");
    // Over the side limit, however small.
    let wide = dir.join("wide.png");
    std::fs::write(&wide, png_header_only(40000, 1, 2)).unwrap();
    let e = load_rgb(&wide).unwrap_err();
    assert!(
        e.to_string().contains("40000x1") && e.to_string().contains("32767"),
        "{e}"
    );
    // Just under the byte limit passes the check (and then fails on the bad pixel data).
    assert!(hrnet_runtime::pose::image_bytes(10000, 10000, image::ColorType::Rgb8) < 1 << 30);
    let ok_size = dir.join("big_rgb.png");
    std::fs::write(&ok_size, png_header_only(10000, 10000, 2)).unwrap();
    assert!(matches!(load_rgb(&ok_size), Err(PoseError::Image { .. })));
}
