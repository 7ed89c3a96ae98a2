//! `cv2.warpAffine(src, M, (w, h), flags=INTER_LINEAR)` on 8-bit images, bit-exact.
//!
//! OpenCV (up to 4.10, the versions the official pipeline ran with) warps 8-bit images in fixed
//! point, and this module repeats that arithmetic:
//!
//! 1. `M` (source → destination) is inverted in `f64` ([`Affine2x3::inverse`]).
//! 2. Source coordinates are kept with `AB_BITS = 10` fractional bits: per row
//!    `X0 = round(( M1·y + M2) · 1024) + 16` and per column `adelta[x] = round(M0·x · 1024)`
//!    (`round` = `cvRound`, ties to even); then `X = (X0 + adelta[x]) >> 5` has `INTER_BITS = 5`
//!    fractional bits, i.e. the position is quantized to 1/32 pixel (the `+ 16` makes it round).
//!    The integer part is saturated to `i16`, the 5+5 fractional bits index the weight table.
//! 3. Bilinear weights are `INTER_REMAP_COEF_BITS = 15`-bit integers, `(32−fx)(32−fy)·32` etc.,
//!    summing to 32768 — except at `fx = fy = 0`, where OpenCV's table holds `[32767, 0, 0, 1]`
//!    (32768 saturates to `i16` and the correction lands on the last tap); the result is the same.
//! 4. `dst = clamp((Σ wᵢ·pᵢ + 2¹⁴) >> 15, 0, 255)`.
//! 5. `BORDER_CONSTANT` with value 0: a pixel whose 2×2 neighbourhood lies entirely outside the
//!    image is 0; one partly outside reads 0 for the missing neighbours and still goes through 4.
//!
//! OpenCV 4.11 and later replaced this kernel with a floating-point one (differences of up to
//! several intensity levels on upscaled noise); this module reproduces the fixed-point one.

use super::transform::Affine2x3;
use super::PoseError;

const AB_BITS: u32 = 10;
const AB_SCALE: f64 = (1 << AB_BITS) as f64;
const INTER_BITS: u32 = 5;
const INTER_TAB_SIZE: i32 = 1 << INTER_BITS;
const INTER_REMAP_COEF_BITS: u32 = 15;
const ROUND_DELTA: i32 = (1 << AB_BITS) / INTER_TAB_SIZE / 2;

/// A borrowed interleaved 8-bit image: `height` rows of `width × channels` bytes, no padding.
#[derive(Clone, Copy, Debug)]
pub struct ImageU8<'a> {
    /// Pixel data, row-major, channels interleaved.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel (1 to 4).
    pub channels: usize,
}

impl<'a> ImageU8<'a> {
    /// Wraps an [`image::RgbImage`].
    #[cfg(feature = "image")]
    pub fn from_rgb(img: &'a image::RgbImage) -> Self {
        ImageU8 {
            data: img.as_raw(),
            width: img.width() as usize,
            height: img.height() as usize,
            channels: 3,
        }
    }

    fn check(&self) -> Result<(), PoseError> {
        if self.width == 0 || self.height == 0 {
            return Err(PoseError::EmptyImage);
        }
        // OpenCV keeps coordinates in i32 and i16: larger images are out of its (and our) domain.
        if self.width > i16::MAX as usize || self.height > i16::MAX as usize {
            return Err(PoseError::ImageTooLarge {
                width: self.width,
                height: self.height,
            });
        }
        if !(1..=4).contains(&self.channels) {
            return Err(PoseError::Channels(self.channels));
        }
        let need = self.width * self.height * self.channels;
        if self.data.len() != need {
            return Err(PoseError::BufferSize {
                what: "source image",
                expected: need,
                got: self.data.len(),
            });
        }
        Ok(())
    }
}

/// `cvRound` on `f64` (`cvtsd2si`): ties to even; out of range or NaN gives `i32::MIN`.
fn cv_round(v: f64) -> i32 {
    let r = v.round_ties_even();
    if (-2147483648.0..=2147483647.0).contains(&r) {
        r as i32
    } else {
        i32::MIN
    }
}

fn sat_i16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// The four 15-bit weights `[top-left, top-right, bottom-left, bottom-right]` for the fractional
/// position `(fx, fy)` in 1/32 pixel, exactly as in OpenCV's `BilinearTab_i`.
fn weights(fx: i32, fy: i32) -> [i32; 4] {
    if fx == 0 && fy == 0 {
        return [32767, 0, 0, 1];
    }
    let s = 1 << (INTER_REMAP_COEF_BITS - 2 * INTER_BITS);
    [
        (INTER_TAB_SIZE - fx) * (INTER_TAB_SIZE - fy) * s,
        fx * (INTER_TAB_SIZE - fy) * s,
        (INTER_TAB_SIZE - fx) * fy * s,
        fx * fy * s,
    ]
}

/// Warps `src` by `m` (source → destination pixel coordinates, as passed to `cv2.warpAffine`)
/// into `dst`, a `dst_width × dst_height` image with `src.channels` channels, with bilinear
/// interpolation and a zero border — the same bytes as OpenCV's fixed-point 8-bit kernel.
///
/// Errors: an empty or inconsistent source, a `dst` of the wrong length, a zero destination size.
pub fn warp_affine_linear(
    src: ImageU8<'_>,
    m: &Affine2x3,
    dst: &mut [u8],
    dst_width: usize,
    dst_height: usize,
) -> Result<(), PoseError> {
    src.check()?;
    let cn = src.channels;
    let need = match dst_width
        .checked_mul(dst_height)
        .and_then(|n| n.checked_mul(cn))
    {
        Some(n) if n > 0 && dst_width <= i32::MAX as usize && dst_height <= i32::MAX as usize => n,
        _ => {
            return Err(PoseError::InvalidInputSize {
                width: dst_width,
                height: dst_height,
            })
        }
    };
    if dst.len() != need {
        return Err(PoseError::BufferSize {
            what: "crop",
            expected: need,
            got: dst.len(),
        });
    }
    let inv = m.inverse().0;
    let (sw, sh) = (src.width as i32, src.height as i32);
    let sstep = src.width * cn;
    // OpenCV's `width1`/`height1`: pixels with sx < width1 and sy < height1 have all four taps inside.
    let (width1, height1) = ((sw - 1).max(0) as u32, (sh - 1).max(0) as u32);
    for (y, row) in dst.chunks_exact_mut(dst_width * cn).enumerate() {
        let yf = y as f64;
        let x0 = cv_round((inv[1] * yf + inv[2]) * AB_SCALE).wrapping_add(ROUND_DELTA);
        let y0 = cv_round((inv[4] * yf + inv[5]) * AB_SCALE).wrapping_add(ROUND_DELTA);
        for (x, out) in row.chunks_exact_mut(cn).enumerate() {
            let xf = x as f64;
            let adelta = cv_round(inv[0] * xf * AB_SCALE);
            let bdelta = cv_round(inv[3] * xf * AB_SCALE);
            let xx = x0.wrapping_add(adelta) >> (AB_BITS - INTER_BITS);
            let yy = y0.wrapping_add(bdelta) >> (AB_BITS - INTER_BITS);
            let sx = sat_i16(xx >> INTER_BITS);
            let sy = sat_i16(yy >> INTER_BITS);
            let w = weights(xx & (INTER_TAB_SIZE - 1), yy & (INTER_TAB_SIZE - 1));
            if (sx as u32) < width1 && (sy as u32) < height1 {
                let p = sy as usize * sstep + sx as usize * cn;
                for (k, o) in out.iter_mut().enumerate() {
                    let v = i32::from(src.data[p + k]) * w[0]
                        + i32::from(src.data[p + cn + k]) * w[1]
                        + i32::from(src.data[p + sstep + k]) * w[2]
                        + i32::from(src.data[p + sstep + cn + k]) * w[3];
                    *o = cast_u8(v);
                }
            } else if sx >= sw || sx + 1 < 0 || sy >= sh || sy + 1 < 0 {
                out.fill(0);
            } else {
                let inside = |px: i32, py: i32| px >= 0 && px < sw && py >= 0 && py < sh;
                let taps = [(sx, sy), (sx + 1, sy), (sx, sy + 1), (sx + 1, sy + 1)];
                for (k, o) in out.iter_mut().enumerate() {
                    let mut v = 0i32;
                    for (&(px, py), &wt) in taps.iter().zip(&w) {
                        if inside(px, py) {
                            v += i32::from(src.data[py as usize * sstep + px as usize * cn + k])
                                * wt;
                        }
                    }
                    *o = cast_u8(v);
                }
            }
        }
    }
    Ok(())
}

/// `FixedPtCast<int, uchar, 15>`: round the 15-bit fixed-point sum and saturate to `u8`.
fn cast_u8(v: i32) -> u8 {
    ((v + (1 << (INTER_REMAP_COEF_BITS - 1))) >> INTER_REMAP_COEF_BITS).clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_copies_and_shift_interpolates() {
        let data: Vec<u8> = (0..4 * 3).map(|v| (v * 20) as u8).collect();
        let src = ImageU8 {
            data: &data,
            width: 4,
            height: 3,
            channels: 1,
        };
        let mut dst = vec![0u8; 12];
        warp_affine_linear(
            src,
            &Affine2x3([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            &mut dst,
            4,
            3,
        )
        .unwrap();
        assert_eq!(dst, data);
        // Shift by half a pixel to the left: the last column reads half the border.
        warp_affine_linear(
            src,
            &Affine2x3([1.0, 0.0, -0.5, 0.0, 1.0, 0.0]),
            &mut dst,
            4,
            3,
        )
        .unwrap();
        assert_eq!(&dst[..4], &[10, 30, 50, 30]);
    }

    #[test]
    fn bad_buffers_are_errors() {
        let data = [0u8; 6];
        let src = ImageU8 {
            data: &data,
            width: 2,
            height: 1,
            channels: 3,
        };
        let id = Affine2x3([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert!(warp_affine_linear(src, &id, &mut [0u8; 5], 2, 1).is_err());
        assert!(warp_affine_linear(src, &id, &mut [], 0, 1).is_err());
        let empty = ImageU8 {
            data: &[],
            width: 0,
            height: 0,
            channels: 3,
        };
        assert!(matches!(
            warp_affine_linear(empty, &id, &mut [0u8; 6], 2, 1),
            Err(PoseError::EmptyImage)
        ));
        let short = ImageU8 {
            data: &data[..5],
            width: 2,
            height: 1,
            channels: 3,
        };
        assert!(warp_affine_linear(short, &id, &mut [0u8; 6], 2, 1).is_err());
    }
}
