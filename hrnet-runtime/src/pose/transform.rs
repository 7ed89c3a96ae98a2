//! Box → center and scale → the 2×3 affine transform of the official top-down pipeline.
//!
//! The arithmetic follows deep-high-resolution-net.pytorch step by step, including its precisions:
//! `JointsDataset._xywh2cs` keeps center and scale as `float32`; `get_affine_transform` builds three
//! `float32` point pairs (numpy `float32`/`float64` mixing reproduced) and hands them to
//! `cv2.getAffineTransform`, which solves a 6×6 system by OpenCV's LU decomposition with partial
//! pivoting in `f64`. [`get_affine_transform`] repeats that elimination operation by operation, so
//! the matrix equals OpenCV's bit for bit (checked against committed OpenCV output), which matters
//! because the 8-bit warp rounds it to 1/1024 and 1/32 pixel.

use super::PoseError;

/// The pixel standard of the official code: a scale of 1.0 means 200 pixels.
pub const PIXEL_STD: f64 = 200.0;

/// The margin the official pipeline adds around every box (scale × 1.25).
pub const BOX_MARGIN: f32 = 1.25;

/// A person box in image pixels: top-left corner, width and height (COCO's `bbox` convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxXywh {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width, must be > 0.
    pub w: f64,
    /// Height, must be > 0.
    pub h: f64,
}

impl BoxXywh {
    /// What makes the box unusable, naming the field: a non-finite coordinate or a width or
    /// height that is not > 0.
    pub fn problem(&self) -> Option<&'static str> {
        if !self.x.is_finite() {
            Some("x is not finite")
        } else if !self.y.is_finite() {
            Some("y is not finite")
        } else if !self.w.is_finite() {
            Some("the width is not finite")
        } else if !self.h.is_finite() {
            Some("the height is not finite")
        } else if self.w <= 0.0 {
            Some("the width is not > 0")
        } else if self.h <= 0.0 {
            Some("the height is not > 0")
        } else {
            None
        }
    }

    /// A box from its top-left corner and size.
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        BoxXywh { x, y, w, h }
    }

    /// The whole image as one box, for pictures of a single person without a detector.
    pub fn whole_image(width: u32, height: u32) -> Self {
        BoxXywh {
            x: 0.0,
            y: 0.0,
            w: f64::from(width),
            h: f64::from(height),
        }
    }

    /// A box from two corners `(x1, y1)` (top-left) and `(x2, y2)` (bottom-right).
    pub fn from_corners(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        BoxXywh {
            x: x1,
            y: y1,
            w: x2 - x1,
            h: y2 - y1,
        }
    }
}

/// The official center/scale form of a box: the crop covers `scale × 200` pixels around `center`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CenterScale {
    /// Box center `(x, y)` in image pixels.
    pub center: [f32; 2],
    /// `(width, height) / 200` of the padded box, margin included.
    pub scale: [f32; 2],
}

impl CenterScale {
    /// `JointsDataset._xywh2cs`: center of the box; the box padded to the network's aspect ratio
    /// `input_w / input_h` (widened or heightened, never cropped); scale = size / 200 × 1.25.
    /// Center and scale are rounded to `f32` as the official code stores them.
    ///
    /// Errors: a box with a non-finite coordinate or a non-positive size, or a zero input size.
    pub fn from_box(b: BoxXywh, input_w: usize, input_h: usize) -> Result<Self, PoseError> {
        if let Some(problem) = b.problem() {
            return Err(PoseError::InvalidBox {
                problem,
                x: b.x,
                y: b.y,
                w: b.w,
                h: b.h,
            });
        }
        if input_w == 0 || input_h == 0 {
            return Err(PoseError::InvalidInputSize {
                width: input_w,
                height: input_h,
            });
        }
        let aspect = input_w as f64 / input_h as f64;
        let center = [(b.x + b.w * 0.5) as f32, (b.y + b.h * 0.5) as f32];
        let (mut w, mut h) = (b.w, b.h);
        if w > aspect * h {
            h = w / aspect;
        } else if w < aspect * h {
            w = h * aspect;
        }
        let scale = [
            (w / PIXEL_STD) as f32 * BOX_MARGIN,
            (h / PIXEL_STD) as f32 * BOX_MARGIN,
        ];
        if !(scale[0].is_finite() && scale[1].is_finite() && scale[0] > 0.0 && scale[1] > 0.0) {
            return Err(PoseError::InvalidBox {
                problem: "its crop scale is not a positive finite f32 (the box is too large or too small)",
                x: b.x,
                y: b.y,
                w: b.w,
                h: b.h,
            });
        }
        Ok(CenterScale { center, scale })
    }
}

/// A 2×3 affine transform `[a, b, c, d, e, f]`: `x' = a·x + b·y + c`, `y' = d·x + e·y + f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine2x3(pub [f64; 6]);

impl Affine2x3 {
    /// Applies the transform to a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5])
    }

    /// The inverse transform, computed as `cv::warpAffine` does it (determinant, then each entry);
    /// a singular matrix gives the zero matrix, as in OpenCV.
    pub fn inverse(&self) -> Affine2x3 {
        let mut m = self.0;
        let mut d = m[0] * m[4] - m[1] * m[3];
        d = if d != 0.0 { 1.0 / d } else { 0.0 };
        let a11 = m[4] * d;
        let a22 = m[0] * d;
        m[0] = a11;
        m[1] *= -d;
        m[3] *= -d;
        m[4] = a22;
        let b1 = -m[0] * m[2] - m[1] * m[5];
        let b2 = -m[3] * m[2] - m[4] * m[5];
        m[2] = b1;
        m[5] = b2;
        Affine2x3(m)
    }
}

/// The official `get_affine_transform(center, scale, rot=0, output_size=(width, height))`: the
/// transform from image pixels to crop pixels that maps the center to the crop center and
/// `scale[0] × 200` image pixels onto `width` crop pixels (the scale's height is not used: the box
/// was padded to the crop's aspect ratio). Bit-identical to OpenCV's `getAffineTransform` result.
///
/// Errors: a zero output size, or a degenerate scale (the 6×6 system is singular).
pub fn get_affine_transform(
    cs: &CenterScale,
    width: usize,
    height: usize,
) -> Result<Affine2x3, PoseError> {
    if width == 0 || height == 0 {
        return Err(PoseError::InvalidInputSize { width, height });
    }
    let src_w: f32 = cs.scale[0] * 200.0;
    // get_dir([0, src_w * -0.5], 0) in float64: (0, -src_w/2).
    let src_dir = [0.0f64, f64::from(src_w * -0.5)];
    let src0 = cs.center;
    let src1 = [
        (f64::from(cs.center[0]) + src_dir[0]) as f32,
        (f64::from(cs.center[1]) + src_dir[1]) as f32,
    ];
    let src2 = third_point(src0, src1);
    let (dw, dh) = (width as f64, height as f64);
    let dst0 = [(dw * 0.5) as f32, (dh * 0.5) as f32];
    let dst1 = [
        (dw * 0.5) as f32,
        (dh * 0.5 + f64::from((dw * -0.5) as f32)) as f32,
    ];
    let dst2 = third_point(dst0, dst1);
    affine_from_points([src0, src1, src2], [dst0, dst1, dst2]).ok_or(
        PoseError::DegenerateTransform {
            center: cs.center,
            scale: cs.scale,
        },
    )
}

/// `get_3rd_point` in `float32`: `b + rot90(a - b)`.
fn third_point(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    let d = [a[0] - b[0], a[1] - b[1]];
    [b[0] - d[1], b[1] + d[0]]
}

/// `cv::getAffineTransform`: the 6×6 system `A · m = b` solved by LU with partial pivoting, in the
/// order of OpenCV's `hal::LUImpl` (eliminate with `alpha = a[j][i] · (−1/a[i][i])`, then back
/// substitution dividing by the pivot), so rounding is the same. `None` when the system is
/// singular (a pivot below `100 · f64::EPSILON`, as OpenCV's test).
fn affine_from_points(src: [[f32; 2]; 3], dst: [[f32; 2]; 3]) -> Option<Affine2x3> {
    const N: usize = 6;
    let mut a = [[0.0f64; N]; N];
    let mut b = [0.0f64; N];
    for i in 0..3 {
        let (x, y) = (f64::from(src[i][0]), f64::from(src[i][1]));
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0];
        b[2 * i] = f64::from(dst[i][0]);
        b[2 * i + 1] = f64::from(dst[i][1]);
    }
    let eps = f64::EPSILON * 100.0;
    for i in 0..N {
        let mut k = i;
        for j in i + 1..N {
            if a[j][i].abs() > a[k][i].abs() {
                k = j;
            }
        }
        if a[k][i].abs() < eps || a[k][i].is_nan() {
            return None;
        }
        if k != i {
            a.swap(i, k);
            b.swap(i, k);
        }
        let d = -1.0 / a[i][i];
        for j in i + 1..N {
            let (upper, lower) = a.split_at_mut(j);
            let (pivot_row, row) = (&upper[i], &mut lower[0]);
            let alpha = row[i] * d;
            for (v, p) in row[i + 1..].iter_mut().zip(&pivot_row[i + 1..]) {
                *v += alpha * p;
            }
            b[j] += alpha * b[i];
        }
    }
    for i in (0..N).rev() {
        let mut s = b[i];
        for k in i + 1..N {
            s -= a[i][k] * b[k];
        }
        b[i] = s / a[i][i];
    }
    Some(Affine2x3(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_scale_pads_to_aspect() {
        // 192×256 network: aspect 0.75; a 30×40 box is already 0.75.
        let cs = CenterScale::from_box(BoxXywh::new(10.0, 20.0, 30.0, 40.0), 192, 256).unwrap();
        assert_eq!(cs.center, [25.0, 40.0]);
        assert_eq!(cs.scale, [0.1875, 0.25]);
        // A wide box is heightened.
        let cs = CenterScale::from_box(BoxXywh::new(0.0, 0.0, 300.0, 100.0), 192, 256).unwrap();
        assert_eq!(cs.scale, [1.875, 2.5]);
        assert!(CenterScale::from_box(BoxXywh::new(0.0, 0.0, 0.0, 10.0), 192, 256).is_err());
        assert!(CenterScale::from_box(BoxXywh::new(f64::NAN, 0.0, 1.0, 10.0), 192, 256).is_err());
        assert!(CenterScale::from_box(BoxXywh::new(0.0, 0.0, 1.0, 10.0), 0, 256).is_err());
        assert_eq!(
            BoxXywh::from_corners(1.0, 2.0, 4.0, 8.0),
            BoxXywh::new(1.0, 2.0, 3.0, 6.0)
        );
        assert_eq!(
            BoxXywh::whole_image(640, 480),
            BoxXywh::new(0.0, 0.0, 640.0, 480.0)
        );
    }

    #[test]
    fn transform_maps_center_to_crop_center() {
        let cs = CenterScale {
            center: [100.0, 50.0],
            scale: [1.0, 4.0 / 3.0],
        };
        let t = get_affine_transform(&cs, 192, 256).unwrap();
        let (x, y) = t.apply(100.0, 50.0);
        assert!(
            (x - 96.0).abs() < 1e-9 && (y - 128.0).abs() < 1e-9,
            "{x} {y}"
        );
        // 200 image px → 192 crop px.
        assert!((t.0[0] - 0.96).abs() < 1e-12 && t.0[1].abs() < 1e-12);
        let inv = t.inverse();
        let (x, y) = inv.apply(96.0, 128.0);
        assert!((x - 100.0).abs() < 1e-9 && (y - 50.0).abs() < 1e-9);
    }
}

/// `v` for a message: plain decimals for ordinary magnitudes, scientific notation for very
/// large or small ones (`1e300`, not 301 digits).
pub fn readable(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e6).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod box_message_tests {
    use super::*;

    #[test]
    fn invalid_boxes_name_the_field_and_print_readably() {
        let e = CenterScale::from_box(BoxXywh::new(1e300, 2.0, 0.0, 5.0), 192, 256).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("x=1e300 y=2 w=0 h=5"), "{m}");
        assert!(m.contains("the width is not > 0"), "{m}");
        let e = CenterScale::from_box(BoxXywh::new(f64::NAN, 2.0, 3.0, 5.0), 192, 256).unwrap_err();
        assert!(e.to_string().ends_with("x is not finite"), "{e}");
        let e = CenterScale::from_box(BoxXywh::new(0.0, 0.0, 1e300, 5.0), 192, 256).unwrap_err();
        assert!(e.to_string().contains("crop scale"), "{e}");
    }
}
