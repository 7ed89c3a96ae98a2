//! The official classification pipeline around an HRNetV2p classifier (HRNet-Image-Classification).
//!
//! Its evaluation (`tools/valid.py`) feeds each image through torchvision's
//! `Compose([Resize(int(224 / 0.875)), CenterCrop(224), ToTensor(), Normalize(mean, std)])` on
//! a PIL RGB image; this module reproduces it to the byte (the resize) and to the float
//! (normalization), and turns logits into the top classes:
//!
//! ```text
//! RGB image ─► resize_shorter (PIL bilinear, antialiased) ─► center_crop ─► normalize_rgb
//!   ─► model (1×3×224×224) ─► logits ─► top_k (softmax probabilities, labels)
//! ```
//!
//! ```no_run
//! use hrnet_runtime::cls::{self, Labels};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = hrnet_runtime::pose::load_rgb("cat.jpg".as_ref())?;
//! let mut input = vec![0.0f32; 3 * 224 * 224];
//! cls::preprocess(&image, 224, &mut input)?;
//! let logits = vec![0.0f32; 1000]; // run the network on `input` here
//! let labels = Labels::load("imagenet_classes.txt".as_ref())?;
//! for p in cls::top_k(&logits, 5) {
//!     println!("{:5.1}%  {}", 100.0 * p.probability, labels.name(p.class).unwrap_or("?"));
//! }
//! # Ok(())
//! # }
//! ```

pub mod resize;

use std::path::{Path, PathBuf};

use image::RgbImage;

pub use resize::resize_bilinear_pil;

use crate::pose::normalize_rgb;

/// Everything that can go wrong in the classification pipeline. None of it panics.
#[derive(Debug, thiserror::Error)]
pub enum ClsError {
    /// An image with no pixel.
    #[error("the image is empty (0 pixels)")]
    EmptyImage,
    /// A zero crop size, or a resize larger than the pipeline handles.
    #[error("invalid size {0}: must be between 1 and 65535")]
    InvalidSize(usize),
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
    /// A label file that cannot be read.
    #[error("label file {path}: {source}")]
    Labels {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The largest size any step here accepts (PIL's coordinates are C ints; images beyond this are
/// not photographs).
const MAX_SIZE: usize = 65_535;

/// torchvision's `Resize(size)` with an int: the shorter side becomes `size`, the longer one
/// `int(size · long / short)` (truncated), PIL bilinear ([`resize_bilinear_pil`]); an image
/// already of that size is returned unchanged.
///
/// Errors: an empty image, a size of 0 or above 65535 (either side).
pub fn resize_shorter(image: &RgbImage, size: usize) -> Result<RgbImage, ClsError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(ClsError::EmptyImage);
    }
    if size == 0 || size > MAX_SIZE {
        return Err(ClsError::InvalidSize(size));
    }
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python's `int(size * long / short)`: an exact integer product, a correctly rounded
    // division in f64, truncation.
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if new_long > MAX_SIZE {
        return Err(ClsError::InvalidSize(new_long));
    }
    let (nw, nh) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    Ok(resize_bilinear_pil(image, nw, nh))
}

/// Python's `round` (half to even) of a non-negative `x / 2`, as torchvision's crop offset
/// `int(round((image - crop) / 2.0))`.
fn half_round_even(x: usize) -> usize {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// torchvision's `CenterCrop(size)`: a `size × size` crop at offset
/// `round((side − size) / 2)` (half to even); an image smaller than the crop is first padded
/// with black, `(size − side) // 2` before and the rest after, as torchvision does.
///
/// Errors: an empty image, a size of 0 or above 65535.
pub fn center_crop(image: &RgbImage, size: usize) -> Result<RgbImage, ClsError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(ClsError::EmptyImage);
    }
    if size == 0 || size > MAX_SIZE {
        return Err(ClsError::InvalidSize(size));
    }
    // Offsets into the (virtually) padded image, then from the padded image to the source.
    let (pad_l, pad_t) = (size.saturating_sub(w) / 2, size.saturating_sub(h) / 2);
    let (pw, ph) = (w.max(size), h.max(size));
    let (left, top) = (half_round_even(pw - size), half_round_even(ph - size));
    let mut out = RgbImage::new(size as u32, size as u32);
    for y in 0..size {
        for x in 0..size {
            let (sx, sy) = ((left + x).checked_sub(pad_l), (top + y).checked_sub(pad_t));
            if let (Some(sx), Some(sy)) = (sx, sy) {
                if sx < w && sy < h {
                    out.put_pixel(x as u32, y as u32, *image.get_pixel(sx as u32, sy as u32));
                }
            }
        }
    }
    Ok(out)
}

/// The official evaluation transform: [`resize_shorter`] to `int(crop / 0.875)`,
/// [`center_crop`] to `crop`, then `ToTensor` + `Normalize` (ImageNet mean and std) into
/// `tensor` (`3 × crop × crop`, planar RGB, f32).
///
/// Errors: as [`resize_shorter`] and [`center_crop`]; `tensor` of the wrong length.
pub fn preprocess(image: &RgbImage, crop: usize, tensor: &mut [f32]) -> Result<(), ClsError> {
    if crop == 0 || crop > MAX_SIZE {
        return Err(ClsError::InvalidSize(crop));
    }
    if tensor.len() != 3 * crop * crop {
        return Err(ClsError::BufferSize {
            what: "input tensor",
            expected: 3 * crop * crop,
            got: tensor.len(),
        });
    }
    let resized = resize_shorter(image, (crop as f64 / 0.875) as usize)?;
    let cropped = center_crop(&resized, crop)?;
    normalize_rgb(cropped.as_raw(), crop, crop, tensor).map_err(|_| ClsError::BufferSize {
        what: "input tensor",
        expected: 3 * crop * crop,
        got: tensor.len(),
    })
}

/// One of the top classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// The network's logit.
    pub logit: f32,
    /// Softmax probability over all classes.
    pub probability: f32,
}

/// The `k` classes with the largest logits, best first (ties: lower index first), with softmax
/// probabilities (computed in f64, maximum subtracted). Non-finite logits are never chosen
/// before finite ones; fewer than `k` classes give them all.
pub fn top_k(logits: &[f32], k: usize) -> Vec<Prediction> {
    let finite = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(finite(v))));
    let sum: f64 = logits
        .iter()
        .map(|&v| (f64::from(finite(v)) - m).exp())
        .sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| {
        finite(logits[b])
            .total_cmp(&finite(logits[a]))
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(k)
        .map(|class| Prediction {
            class,
            logit: logits[class],
            probability: if m.is_finite() {
                ((f64::from(finite(logits[class])) - m).exp() / sum) as f32
            } else {
                0.0
            },
        })
        .collect()
}

/// Class names, one per line of a text file (line `i` names class `i`; surrounding whitespace
/// trimmed, a trailing empty line ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<String>);

impl Labels {
    /// Labels from text.
    pub fn parse(text: &str) -> Labels {
        Labels(text.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Labels from a file.
    ///
    /// Errors: [`ClsError::Labels`] naming the file.
    pub fn load(path: &Path) -> Result<Labels, ClsError> {
        std::fs::read_to_string(path)
            .map(|t| Labels::parse(&t))
            .map_err(|source| ClsError::Labels {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The name of `class`, if the file has that many lines.
    pub fn name(&self, class: usize) -> Option<&str> {
        self.0.get(class).map(String::as_str)
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there is no name.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(
            (0..8).map(half_round_even).collect::<Vec<_>>(),
            [0, 0, 1, 2, 2, 2, 3, 4]
        );
    }

    #[test]
    fn small_images_are_padded_then_cropped() {
        let img = RgbImage::from_pixel(3, 5, image::Rgb([7, 8, 9]));
        let c = center_crop(&img, 6).unwrap();
        // Width 3 → pad 1 left, 2 right; height 5 → pad 0 top, 1 bottom, then offset 0.
        let row: Vec<u8> = (0..6).map(|x| c.get_pixel(x, 0).0[0]).collect();
        assert_eq!(row, [0, 7, 7, 7, 0, 0]);
        assert_eq!(c.get_pixel(1, 4).0, [7, 8, 9]);
        assert_eq!(c.get_pixel(1, 5).0, [0, 0, 0]);
        assert!(matches!(
            center_crop(&img, 0),
            Err(ClsError::InvalidSize(0))
        ));
    }

    #[test]
    fn top_k_sorts_and_normalizes() {
        let p = top_k(&[1.0, 3.0, f32::NAN, 3.0, -2.0], 3);
        assert_eq!(p.iter().map(|p| p.class).collect::<Vec<_>>(), [1, 3, 0]);
        let e = [
            1.0f64.exp(),
            3.0f64.exp(),
            0.0,
            3.0f64.exp(),
            (-2.0f64).exp(),
        ];
        let s: f64 = e.iter().sum();
        assert!((f64::from(p[0].probability) - e[1] / s).abs() < 1e-7);
        assert!((f64::from(p[2].probability) - e[0] / s).abs() < 1e-7);
        assert_eq!(top_k(&[0.5], 5).len(), 1);
        assert!(top_k(&[], 5).is_empty());
    }

    #[test]
    fn labels_one_per_line() {
        let l = Labels::parse("tench\r\ngoldfish\n great white shark \n");
        assert_eq!(l.len(), 3);
        assert_eq!(l.name(2), Some("great white shark"));
        assert_eq!(l.name(3), None);
        let e = Labels::load("/nonexistent/labels.txt".as_ref()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/labels.txt"));
    }
}
