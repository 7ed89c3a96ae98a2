//! The segmentation pipeline around an HRNetV2 / HRNet-OCR network (HRNet-Semantic-Segmentation).
//!
//! The official evaluation feeds the whole image at its own size and resizes the logits (at a
//! quarter of the input size) back to it:
//!
//! ```text
//! RGB image ─► normalize_image (/255, mean, std; numpy's arithmetic) ─► model (1×3×H×W)
//!   ─► logits K×h×w ─► resize_argmax (F.interpolate bilinear + argmax) ─► class map H×W (u8)
//!   ─► save_class_map (PNG) · draw (palette blended over the photo)
//! ```
//!
//! `align_corners` is the config's `MODEL.ALIGN_CORNERS`: False for `seg_hrnet` (pytorch-v1.1
//! branch), True for `seg_hrnet_ocr` (its branch's default). For HRNet-OCR the logits are the
//! OCR head's (`TEST.OUTPUT_INDEX`), not the auxiliary head's.
//!
//! ```no_run
//! use hrnet_runtime::seg;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut image = hrnet_runtime::pose::load_rgb("street.png".as_ref())?;
//! let (w, h) = (image.width() as usize, image.height() as usize);
//! let mut input = vec![0.0f32; 3 * h * w];
//! seg::normalize_image(&image, &mut input)?;
//! let logits = vec![0.0f32; 19 * (h / 4) * (w / 4)]; // run the network on `input` here
//! let map = seg::class_map(&logits, 19, (h / 4, w / 4), (h, w), false)?;
//! seg::save_class_map(&map, "street_classes.png".as_ref())?;
//! seg::draw(&mut image, &map, &seg::palette(19), 0.5)?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

use crate::kernels::resize::{ratio, taps, Taps};

/// Everything that can go wrong in the segmentation pipeline. None of it panics.
#[derive(Debug, thiserror::Error)]
pub enum SegError {
    /// An image or logit map with no pixel.
    #[error("the image is empty (0 pixels)")]
    EmptyImage,
    /// A buffer of the wrong length.
    #[error("{what} has {got} values, expected {expected}")]
    BufferSize {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// More classes than an 8-bit class map holds, or none.
    #[error("{0} classes: an 8-bit class map holds 1 to 256")]
    Classes(usize),
    /// A class map whose size differs from the image's.
    #[error("class map is {map_w}x{map_h} but the image is {image_w}x{image_h}")]
    SizeMismatch {
        /// Class map width.
        map_w: u32,
        /// Class map height.
        map_h: u32,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// An image file that cannot be written.
    #[error("image file {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the `image` crate said.
        #[source]
        source: image::ImageError,
    },
}

/// The 19 Cityscapes training classes' colours, in train-id order (road, sidewalk, building,
/// wall, fence, pole, traffic light, traffic sign, vegetation, terrain, sky, person, rider, car,
/// truck, bus, train, motorcycle, bicycle), as in cityscapesScripts' `labels.py`.
pub const CITYSCAPES_PALETTE: [[u8; 3]; 19] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
];

/// A palette of `classes` colours: Cityscapes' for 19 classes, otherwise the PASCAL VOC bit
/// pattern that HRNet-Semantic-Segmentation's `get_palette` uses for the other datasets.
pub fn palette(classes: usize) -> Vec<[u8; 3]> {
    if classes == CITYSCAPES_PALETTE.len() {
        return CITYSCAPES_PALETTE.to_vec();
    }
    (0..classes)
        .map(|j| {
            let mut c = [0u8; 3];
            let mut lab = j;
            let mut i = 0;
            while lab > 0 {
                for (ch, v) in c.iter_mut().enumerate() {
                    *v |= (((lab >> ch) & 1) << (7 - i)) as u8;
                }
                i += 1;
                lab >>= 3;
            }
            c
        })
        .collect()
}

/// The dataset's mean (RGB) as numpy holds it: the Python literals, in f64.
const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// The dataset's standard deviation (RGB), in f64.
const STD: [f64; 3] = [0.229, 0.224, 0.225];

/// HRNet-Semantic-Segmentation's `input_transform` on an RGB image: `image / 255.0` in f32,
/// then `-= mean` and `/= std` (numpy computes those two in f64 and stores f32), into `tensor`
/// (`3 × H × W`, planar RGB).
///
/// Errors: an empty image, `tensor` of the wrong length.
pub fn normalize_image(image: &RgbImage, tensor: &mut [f32]) -> Result<(), SegError> {
    let plane = image.width() as usize * image.height() as usize;
    if plane == 0 {
        return Err(SegError::EmptyImage);
    }
    if tensor.len() != 3 * plane {
        return Err(SegError::BufferSize {
            what: "input tensor",
            expected: 3 * plane,
            got: tensor.len(),
        });
    }
    for (c, dst) in tensor.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (MEAN[c], STD[c]);
        for (d, px) in dst.iter_mut().zip(image.as_raw().chunks_exact(3)) {
            let v = f32::from(px[c]) / 255.0;
            let v = (f64::from(v) - mean) as f32;
            *d = (f64::from(v) / std) as f32;
        }
    }
    Ok(())
}

/// `F.interpolate(logits, (out_h, out_w), mode='bilinear', align_corners).argmax(1)`: `logits`
/// is `classes × h × w` (planar), `out` receives `out_h × out_w` class indices. Interpolation
/// is PyTorch's f32 arithmetic ([`crate::kernels::resize`]); ties go to the lower class, as
/// `torch.argmax`. Allocates two rows.
///
/// Errors: no pixel, a zero or more than 256 classes, a buffer of the wrong length.
pub fn resize_argmax(
    logits: &[f32],
    classes: usize,
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
    align_corners: bool,
    out: &mut [u8],
) -> Result<(), SegError> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(SegError::EmptyImage);
    }
    if classes == 0 || classes > 256 {
        return Err(SegError::Classes(classes));
    }
    let expected = classes.saturating_mul(h.saturating_mul(w));
    if logits.len() != expected {
        return Err(SegError::BufferSize {
            what: "logits",
            expected,
            got: logits.len(),
        });
    }
    if out.len() != out_h.saturating_mul(out_w) {
        return Err(SegError::BufferSize {
            what: "class map",
            expected: out_h.saturating_mul(out_w),
            got: out.len(),
        });
    }
    let rx = ratio(w, out_w, align_corners);
    let xt: Vec<Taps> = (0..out_w).map(|x| taps(x, w, rx, align_corners)).collect();
    let ry = ratio(h, out_h, align_corners);
    let mut best = vec![0.0f32; out_w];
    for (y, row) in out.chunks_exact_mut(out_w).enumerate() {
        let ty = taps(y, h, ry, align_corners);
        for k in 0..classes {
            let r0 = &logits[(k * h + ty.i0) * w..][..w];
            let r1 = &logits[(k * h + ty.i1) * w..][..w];
            for ((b, c), t) in best.iter_mut().zip(row.iter_mut()).zip(&xt) {
                let top = r0[t.i0] * t.l0 + r0[t.i1] * t.l1;
                let bot = r1[t.i0] * t.l0 + r1[t.i1] * t.l1;
                let v = top * ty.l0 + bot * ty.l1;
                if k == 0 || v > *b {
                    *b = v;
                    *c = k as u8;
                }
            }
        }
    }
    Ok(())
}

/// [`resize_argmax`] into a new 8-bit class map (`out_w × out_h`).
///
/// Errors: as [`resize_argmax`].
pub fn class_map(
    logits: &[f32],
    classes: usize,
    hw: (usize, usize),
    (out_h, out_w): (usize, usize),
    align_corners: bool,
) -> Result<GrayImage, SegError> {
    let (Ok(w32), Ok(h32)) = (u32::try_from(out_w), u32::try_from(out_h)) else {
        return Err(SegError::EmptyImage);
    };
    let mut map = GrayImage::new(w32, h32);
    resize_argmax(logits, classes, hw, (out_h, out_w), align_corners, &mut map)?;
    Ok(map)
}

/// Writes a class map as an 8-bit greyscale PNG (pixel value = class index).
///
/// Errors: [`SegError::Image`] naming the file.
pub fn save_class_map(map: &GrayImage, path: &Path) -> Result<(), SegError> {
    map.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| SegError::Image {
            path: path.to_path_buf(),
            source,
        })
}

/// Blends each pixel's class colour over `image`: `round((1 − alpha)·pixel + alpha·colour)`
/// (`alpha` clamped to [0, 1]); classes past the end of `palette` leave the pixel unchanged.
///
/// Errors: a class map of another size than the image.
pub fn draw(
    image: &mut RgbImage,
    map: &GrayImage,
    palette: &[[u8; 3]],
    alpha: f32,
) -> Result<(), SegError> {
    if map.dimensions() != image.dimensions() {
        return Err(SegError::SizeMismatch {
            map_w: map.width(),
            map_h: map.height(),
            image_w: image.width(),
            image_h: image.height(),
        });
    }
    let a = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    for (px, class) in image.pixels_mut().zip(map.pixels()) {
        if let Some(colour) = palette.get(usize::from(class.0[0])) {
            for (v, &c) in px.0.iter_mut().zip(colour) {
                *v = (f32::from(*v) * (1.0 - a) + f32::from(c) * a).round() as u8;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palettes() {
        assert_eq!(palette(19)[0], [128, 64, 128]);
        assert_eq!(palette(19)[18], [119, 11, 32]);
        // VOC: background black, aeroplane dark red, bicycle dark green, …
        let voc = palette(21);
        assert_eq!(
            &voc[..4],
            &[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
        );
        assert_eq!(voc[20], [0, 64, 128]);
    }

    #[test]
    fn draw_blends_and_checks_size() {
        let mut img = RgbImage::from_pixel(2, 1, image::Rgb([100, 100, 100]));
        let map = GrayImage::from_raw(2, 1, vec![0, 200]).unwrap();
        draw(&mut img, &map, &CITYSCAPES_PALETTE, 0.5).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [114, 82, 114]);
        assert_eq!(img.get_pixel(1, 0).0, [100, 100, 100]);
        let e = draw(&mut img, &GrayImage::new(3, 1), &CITYSCAPES_PALETTE, 0.5).unwrap_err();
        assert!(e.to_string().contains("3x1"), "{e}");
    }

    #[test]
    fn argmax_errors_name_the_problem() {
        let mut out = [0u8; 4];
        let e = resize_argmax(&[0.0; 5], 2, (1, 2), (2, 2), false, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("logits has 5 values, expected 4"),
            "{e}"
        );
        assert!(matches!(
            resize_argmax(&[], 0, (1, 1), (2, 2), false, &mut out),
            Err(SegError::Classes(0))
        ));
        assert!(resize_argmax(&[0.0; 4], 2, (1, 2), (2, 2), false, &mut out[..3]).is_err());
    }
}
