//! Pillow's `Image.resize(size, Image.BILINEAR)` for 8-bit RGB images, byte for byte.
//!
//! What torchvision's `Resize` runs on a PIL image (Pillow's `libImaging/Resample.c`): a
//! separable convolution with the triangle filter stretched by the downscaling factor (so
//! downscaling averages, i.e. antialiases; upscaling is plain bilinear), one axis after the
//! other, each pass rounded to 8 bits. Per output coordinate `xx` of an axis of `in → out`
//! samples: `scale = in / out`, `fs = max(scale, 1)`, `support = fs`,
//! `center = (xx + 0.5)·scale`, taps `xmin = trunc(center − support + 0.5)` (≥ 0) to
//! `trunc(center + support + 0.5)` (≤ in), weights `tri((x − center + 0.5) / fs)` normalized
//! to sum 1, then rounded half away from zero to fixed point with 22 fractional bits. A pixel is
//! `clamp((2^21 + Σ byte·weight) >> 22, 0, 255)` in 32-bit integers. An axis whose size does
//! not change is not resampled.
//!
//! Pass order: Pillow 13 (`ImagingResampleInner`) runs the vertical pass first when the height
//! shrinks by more than twice as many pixels as the width (`ih − h > 0 && ih − h > 2·(iw − w)`),
//! the horizontal pass first otherwise; this module does the same. Earlier Pillow releases
//! always ran the horizontal pass first; since the image between the passes is rounded to 8
//! bits, they differ from Pillow 13 by one level on some pixels in the vertical-first cases.

use image::RgbImage;

/// Fractional bits of the fixed-point weights (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// Fixed-point filter taps of one axis.
struct Coeffs {
    /// Taps per output sample (some trailing ones zero).
    ksize: usize,
    /// Per output sample: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `[out][ksize]` weights.
    weights: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0.0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero; the clamps make the sign irrelevant.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, k) in k[..xmax].iter_mut().enumerate() {
            *k = triangle(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *k;
        }
        for (x, &kx) in k[..xmax].iter().enumerate() {
            let kx = if ww != 0.0 { kx / ww } else { kx };
            let f = kx * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if kx < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples rows `rows` of `src` horizontally to `out_w` pixels.
fn horizontal(src: &RgbImage, rows: std::ops::Range<usize>, out_w: usize) -> RgbImage {
    let c = coeffs(src.width() as usize, out_w);
    let in_w = src.width() as usize;
    let raw = src.as_raw();
    let mut out = RgbImage::new(out_w as u32, rows.len() as u32);
    let dst = &mut *out;
    for (oy, y) in rows.enumerate() {
        let row = &raw[y * in_w * 3..][..in_w * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..][..n];
            let mut s = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &w) in k.iter().enumerate() {
                let px = &row[(xmin + x) * 3..][..3];
                for ch in 0..3 {
                    s[ch] += i32::from(px[ch]) * w;
                }
            }
            for ch in 0..3 {
                dst[(oy * out_w + xx) * 3 + ch] = clip8(s[ch]);
            }
        }
    }
    out
}

/// Resamples `src` vertically to `out_h` rows; `first` is the source row that `src`'s row 0
/// stands for (the horizontal pass only makes the rows the vertical one reads).
fn vertical(src: &RgbImage, in_h: usize, first: usize, out_h: usize) -> RgbImage {
    let c = coeffs(in_h, out_h);
    let w = src.width() as usize;
    let raw = src.as_raw();
    let mut out = RgbImage::new(w as u32, out_h as u32);
    let dst = &mut *out;
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..][..n];
        for xx in 0..w {
            let mut s = [1i32 << (PRECISION_BITS - 1); 3];
            for (y, &wt) in k.iter().enumerate() {
                let px = &raw[((ymin + y - first) * w + xx) * 3..][..3];
                for ch in 0..3 {
                    s[ch] += i32::from(px[ch]) * wt;
                }
            }
            for ch in 0..3 {
                dst[(yy * w + xx) * 3 + ch] = clip8(s[ch]);
            }
        }
    }
    out
}

/// `Image.resize((width, height), Image.BILINEAR)` of an RGB image, as Pillow computes it.
/// A zero `width` or `height`, or an empty `src`, gives an empty image.
pub fn resize_bilinear_pil(src: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width as u32, height as u32);
    }
    let need_h = width != in_w;
    let need_v = height != in_h;
    let shrink_h = in_h as i64 - height as i64;
    let vertical_first = shrink_h > 0 && shrink_h > 2 * (in_w as i64 - width as i64);
    match (need_h, need_v) {
        (false, false) => src.clone(),
        (true, false) => horizontal(src, 0..in_h, width),
        (false, true) => vertical(src, in_h, 0, height),
        (true, true) if vertical_first => {
            horizontal(&vertical(src, in_h, 0, height), 0..height, width)
        }
        (true, true) => {
            // Only the source rows the vertical pass reads.
            let c = coeffs(in_h, height);
            let first = c.bounds[0].0;
            let (l, n) = c.bounds[height - 1];
            vertical(&horizontal(src, first..l + n, width), in_h, first, height)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(256, 100), (7, 358), (97, 40), (5, 1)] {
            let c = coeffs(i, o);
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i32 = c.weights[xx * c.ksize..][..n].iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i32,
                    "{i}->{o} at {xx}"
                );
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let src = RgbImage::from_pixel(13, 7, image::Rgb([9, 200, 255]));
        for (w, h) in [(5, 3), (40, 21), (13, 2)] {
            let out = resize_bilinear_pil(&src, w, h);
            assert!(out.pixels().all(|p| p.0 == [9, 200, 255]), "{w}x{h}");
        }
    }
}
