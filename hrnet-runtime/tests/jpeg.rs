//! JPEG decoding against OpenCV: every file of `tests/data/jpeg` (`make_jpegs.py`: baseline
//! 4:2:0, 4:2:2, 4:4:0, 4:4:4, 4:1:1, low quality, progressive, restart markers, grayscale, 3×2,
//! EXIF orientation 6) must decode to exactly the pixels of `cv2.imread(path, cv2.IMREAD_COLOR |
//! cv2.IMREAD_IGNORE_ORIENTATION)` in OpenCV 4.10 (libjpeg-turbo 3.0.3), stored beside it as PNG.
#![cfg(feature = "jpeg")]

use std::path::{Path, PathBuf};

use hrnet_runtime::pose::jpeg::{decode_rgb, is_jpeg, JpegError};
use hrnet_runtime::pose::{load_rgb, PoseError};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/jpeg")
}

fn reference(jpg: &Path) -> image::RgbImage {
    let png = jpg.with_extension("png");
    image::open(&png)
        .unwrap_or_else(|e| panic!("{}: {e}", png.display()))
        .to_rgb8()
}

fn jpegs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_file_decodes_to_opencvs_pixels() {
    let files = jpegs();
    assert!(files.len() >= 11, "{files:?}");
    for jpg in files {
        let want = reference(&jpg);
        let data = std::fs::read(&jpg).unwrap();
        assert!(is_jpeg(&data));
        let got = decode_rgb(&data).unwrap_or_else(|e| panic!("{}: {e}", jpg.display()));
        assert_eq!(got.dimensions(), want.dimensions(), "{}", jpg.display());
        let differ = got
            .pixels()
            .zip(want.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differ,
            0,
            "{}: {differ} pixels differ from OpenCV",
            jpg.display()
        );
        // The pipeline's loader takes the same path.
        assert_eq!(load_rgb(&jpg).unwrap(), got, "{}", jpg.display());
    }
}

#[test]
fn exif_orientation_is_ignored_as_the_official_imread_flags_say() {
    let jpg = data_dir().join("exif_rot90.jpg");
    let got = load_rgb(&jpg).unwrap();
    let applied = image::open(data_dir().join("exif_rot90_applied.png")).unwrap();
    assert_eq!(got.dimensions(), (61, 45));
    assert_eq!(applied.width(), 45, "plain cv2.imread rotates");
}

#[test]
fn sizes_are_refused_from_the_header_before_decoding() {
    let mut data = std::fs::read(data_dir().join("baseline_420.jpg")).unwrap();
    let sof = data.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // SOF0: length (2), precision (1), height (2), width (2).
    data[sof + 5..sof + 9].copy_from_slice(&[0x9C, 0x40, 0x9C, 0x40]);
    match decode_rgb(&data) {
        Err(JpegError::TooLarge {
            width: 40000,
            height: 40000,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let data = std::fs::read(data_dir().join("baseline_444.jpg")).unwrap();
    // A header cut short.
    let err = decode_rgb(&data[..40]).unwrap_err();
    assert!(matches!(err, JpegError::Corrupt(_)), "{err}");
    // Cut inside the entropy-coded data: libjpeg (like OpenCV) warns, pads and returns an image.
    let cut = decode_rgb(&data[..data.len() - 200]).unwrap();
    assert_eq!(cut.dimensions(), (64, 48));
    // Garbage after the start-of-image marker.
    let mut garbage = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02];
    garbage.extend(std::iter::repeat_n(0x17u8, 64));
    let err = decode_rgb(&garbage).unwrap_err();
    assert!(matches!(err, JpegError::Corrupt(_)), "{err}");
    // A frame header with zero components: libjpeg's fatal error, caught and reported.
    let mut bogus = data.clone();
    let sof = bogus.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bogus[sof + 9] = 0;
    let err = decode_rgb(&bogus).unwrap_err().to_string();
    assert!(err.starts_with("libjpeg fatal error: "), "{err}");
    // Through the loader: the file is named.
    let dir = std::env::temp_dir().join(format!("hrnet-jpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.png"); // a JPEG by content, whatever the name says
    std::fs::write(&path, &garbage).unwrap();
    let err = load_rgb(&path).unwrap_err();
    assert!(matches!(err, PoseError::Image { .. }), "{err}");
    assert!(err.to_string().contains("broken.png"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_jpeg_files_still_load_through_the_image_crate() {
    let png = data_dir().join("tiny_3x2.png");
    assert_eq!(load_rgb(&png).unwrap().dimensions(), (3, 2));
}
