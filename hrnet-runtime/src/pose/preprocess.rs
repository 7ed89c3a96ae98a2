//! Box → network input: the 8-bit crop and the normalized `1×3×H×W` tensor.
//!
//! As the official validation pipeline: RGB image, [`CenterScale::from_box`], the transform of
//! [`get_affine_transform`], the fixed-point bilinear warp with a zero border
//! ([`warp_affine_linear`]), then torchvision's `ToTensor` (`/255`) and `Normalize` with the
//! ImageNet mean and std, all in `f32`.

#[cfg(feature = "image")]
use super::transform::{get_affine_transform, Affine2x3, BoxXywh, CenterScale};
#[cfg(feature = "image")]
use super::warp::{warp_affine_linear, ImageU8};
use super::PoseError;

/// ImageNet channel means (RGB) of the official normalization.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet channel standard deviations (RGB) of the official normalization.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Crops the person in `bbox` out of an RGB image into `crop` (`height × width × 3` bytes, RGB),
/// exactly as `cv2.warpAffine` in the official pipeline, and returns the center/scale and the
/// image → crop transform used.
///
/// Errors: invalid box, empty image, zero size, `crop` of the wrong length.
#[cfg(feature = "image")]
pub fn crop_person(
    image: &image::RgbImage,
    bbox: BoxXywh,
    width: usize,
    height: usize,
    crop: &mut [u8],
) -> Result<(CenterScale, Affine2x3), PoseError> {
    let cs = CenterScale::from_box(bbox, width, height)?;
    let trans = get_affine_transform(&cs, width, height)?;
    warp_affine_linear(ImageU8::from_rgb(image), &trans, crop, width, height)?;
    Ok((cs, trans))
}

/// `ToTensor` + `Normalize`: interleaved RGB bytes (`height × width × 3`) → planar `3 × height ×
/// width` values `(v / 255 − mean[c]) / std[c]` in `f32`.
///
/// Errors: `crop` or `tensor` not of `3 × width × height` values.
pub fn normalize_rgb(
    crop: &[u8],
    width: usize,
    height: usize,
    tensor: &mut [f32],
) -> Result<(), PoseError> {
    let Some(plane) = width
        .checked_mul(height)
        .filter(|p| p.checked_mul(3).is_some())
    else {
        return Err(PoseError::InvalidInputSize { width, height });
    };
    if crop.len() != 3 * plane {
        return Err(PoseError::BufferSize {
            what: "crop",
            expected: 3 * plane,
            got: crop.len(),
        });
    }
    if tensor.len() != 3 * plane {
        return Err(PoseError::BufferSize {
            what: "input tensor",
            expected: 3 * plane,
            got: tensor.len(),
        });
    }
    for (c, dst) in tensor.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        for (d, px) in dst.iter_mut().zip(crop.chunks_exact(3)) {
            *d = (f32::from(px[c]) / 255.0 - mean) / std;
        }
    }
    Ok(())
}

/// Crop and normalize in one step: `crop` receives the 8-bit crop, `tensor` the `1×3×H×W` input.
/// Returns the center/scale to decode the heatmaps with.
///
/// Errors: as [`crop_person`] and [`normalize_rgb`].
#[cfg(feature = "image")]
pub fn preprocess(
    image: &image::RgbImage,
    bbox: BoxXywh,
    width: usize,
    height: usize,
    crop: &mut [u8],
    tensor: &mut [f32],
) -> Result<CenterScale, PoseError> {
    let (cs, _) = crop_person(image, bbox, width, height, crop)?;
    normalize_rgb(crop, width, height, tensor)?;
    Ok(cs)
}

/// Mirrors a planar `channels × height × width` tensor along the width into `out` (the official
/// flip test's `np.flip(input, 3)`).
///
/// Errors: slices of different lengths or not a multiple of `width`.
pub fn flip_width(input: &[f32], width: usize, out: &mut [f32]) -> Result<(), PoseError> {
    if width == 0 || !input.len().is_multiple_of(width) || out.len() != input.len() {
        return Err(PoseError::BufferSize {
            what: "flipped tensor",
            expected: input.len(),
            got: out.len(),
        });
    }
    for (src, dst) in input.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_planar_and_uses_imagenet_stats() {
        let crop = [0u8, 128, 255, 255, 0, 128];
        let mut t = [0.0f32; 6];
        normalize_rgb(&crop, 2, 1, &mut t).unwrap();
        assert!((t[0] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((t[1] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((t[2] - (128.0 / 255.0 - 0.456) / 0.224).abs() < 1e-6);
        assert!((t[5] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-6);
        assert!(normalize_rgb(&crop, 3, 1, &mut t).is_err());
    }

    #[test]
    fn flip_width_reverses_rows() {
        let mut out = [0.0f32; 6];
        flip_width(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, &mut out).unwrap();
        assert_eq!(out, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        assert!(flip_width(&[1.0, 2.0], 3, &mut [0.0; 2]).is_err());
    }
}
