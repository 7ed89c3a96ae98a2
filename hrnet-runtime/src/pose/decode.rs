//! Heatmaps → keypoints in image pixels, as the official `get_final_preds` with its flip test.
//!
//! - Flip test: `H = (H + shift_right_1px(flip_back(model(flip_w(x))))) / 2`, where `flip_back`
//!   mirrors each map along the width and swaps left/right joints, and the one-pixel shift moves
//!   every column one to the right (column 0 keeps its own value), compensating the half-pixel
//!   asymmetry of the flipped crop ([`flip_average`], computed in `f64`).
//! - `get_max_preds`: per joint, the first maximum of the row-major map; a maximum ≤ 0 puts the
//!   joint at heatmap (0, 0).
//! - Quarter offset: with `px = ⌊x + ½⌋`, `py = ⌊y + ½⌋`, if `1 < px < w−1` and `1 < py < h−1`,
//!   `x += ¼·sign(H[py][px+1] − H[py][px−1])`, `y += ¼·sign(H[py+1][px] − H[py−1][px])`.
//! - Back to the image: `X = cx + (x − w/2)·200·sx / w`, `Y = cy + (y − h/2)·200·sx / w`.
//!
//! Formulas and precisions are those of `refgen/pose_post.py`, whose outputs the tests reproduce.

use super::transform::{CenterScale, PIXEL_STD};
use super::PoseError;

/// One decoded joint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoint {
    /// Column in image pixels.
    pub x: f64,
    /// Row in image pixels.
    pub y: f64,
    /// The heatmap maximum (the official "maxval" score).
    pub score: f64,
}

/// Shape of a stack of heatmaps: `joints × height × width`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeatmapShape {
    /// Number of joints (maps).
    pub joints: usize,
    /// Map height.
    pub height: usize,
    /// Map width.
    pub width: usize,
}

impl HeatmapShape {
    /// Number of values, `joints × height × width` (saturating instead of overflowing: such a
    /// shape never passes the size checks).
    pub fn len(&self) -> usize {
        self.joints
            .saturating_mul(self.height)
            .saturating_mul(self.width)
    }

    /// Whether the shape holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, what: &'static str, got: usize) -> Result<(), PoseError> {
        let fits = self
            .joints
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(self.width));
        if self.height == 0 || self.width == 0 || fits.is_none() {
            return Err(PoseError::InvalidHeatmapSize {
                width: self.width,
                height: self.height,
            });
        }
        if got != self.len() {
            return Err(PoseError::BufferSize {
                what,
                expected: self.len(),
                got,
            });
        }
        Ok(())
    }
}

/// The flip-test average: `out = (plain + shift_right_1px(flip_back(flipped, pairs))) / 2`, with
/// `flipped` the heatmaps of the width-mirrored input. `pairs` lists left/right joint pairs (each
/// swapped both ways); an empty list swaps nothing.
///
/// Errors: slices not of `shape.len()` values, a pair out of range.
pub fn flip_average(
    plain: &[f32],
    flipped: &[f32],
    shape: HeatmapShape,
    pairs: &[(usize, usize)],
    out: &mut [f64],
) -> Result<(), PoseError> {
    shape.check("heatmaps", plain.len())?;
    shape.check("flipped heatmaps", flipped.len())?;
    shape.check("flip average", out.len())?;
    if let Some(&(a, b)) = pairs
        .iter()
        .find(|&&(a, b)| a >= shape.joints || b >= shape.joints)
    {
        return Err(PoseError::FlipPair {
            a,
            b,
            joints: shape.joints,
        });
    }
    let (h, w) = (shape.height, shape.width);
    for j in 0..shape.joints {
        // The map that lands on joint j after flip_back.
        let src = pairs
            .iter()
            .find_map(|&(a, b)| {
                if a == j {
                    Some(b)
                } else if b == j {
                    Some(a)
                } else {
                    None
                }
            })
            .unwrap_or(j);
        for y in 0..h {
            let row = (j * h + y) * w;
            let frow = &flipped[(src * h + y) * w..][..w];
            for x in 0..w {
                // flip_back puts frow[w-1-x'] at x'; the shift reads x' = x-1 (x' = 0 for x = 0).
                let xs = x.saturating_sub(1);
                let f = f64::from(frow[w - 1 - xs]);
                out[row + x] = (f64::from(plain[row + x]) + f) * 0.5;
            }
        }
    }
    Ok(())
}

/// Decodes `shape.joints` heatmaps (`f32` model output or an `f64` flip average) into keypoints in
/// image pixels for the crop described by `cs`, writing `shape.joints` entries into `out` (cleared
/// first; no allocation once `out` has the capacity).
///
/// Errors: `heatmaps` not of `shape.len()` values, a zero-sized map.
pub fn decode_heatmaps<T: Copy + Into<f64>>(
    heatmaps: &[T],
    shape: HeatmapShape,
    cs: &CenterScale,
    out: &mut Vec<Keypoint>,
) -> Result<(), PoseError> {
    shape.check("heatmaps", heatmaps.len())?;
    out.clear();
    let (h, w) = (shape.height, shape.width);
    let scale = PIXEL_STD * f64::from(cs.scale[0]) / w as f64;
    let (cx, cy) = (f64::from(cs.center[0]), f64::from(cs.center[1]));
    for map in heatmaps.chunks_exact(h * w) {
        let at = |x: usize, y: usize| -> f64 { map[y * w + x].into() };
        // First maximum wins, as numpy's argmax.
        let mut best = 0usize;
        let mut maxval: f64 = map[0].into();
        for (i, &v) in map.iter().enumerate().skip(1) {
            let v: f64 = v.into();
            if v > maxval {
                maxval = v;
                best = i;
            }
        }
        let (mut x, mut y) = if maxval > 0.0 {
            ((best % w) as f64, (best / w) as f64)
        } else {
            (0.0, 0.0)
        };
        let px = (x + 0.5).floor() as usize;
        let py = (y + 0.5).floor() as usize;
        if 1 < px && px + 1 < w && 1 < py && py + 1 < h {
            x += 0.25 * sign(at(px + 1, py) - at(px - 1, py));
            y += 0.25 * sign(at(px, py + 1) - at(px, py - 1));
        }
        out.push(Keypoint {
            x: cx + (x - w as f64 / 2.0) * scale,
            y: cy + (y - h as f64 / 2.0) * scale,
            score: maxval,
        });
    }
    Ok(())
}

/// `np.sign`: −1, 0 or 1 (NaN stays NaN).
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: CenterScale = CenterScale {
        center: [100.0, 100.0],
        scale: [1.0, 1.0],
    };

    #[test]
    fn argmax_first_wins_and_quarter_offset() {
        let shape = HeatmapShape {
            joints: 2,
            height: 8,
            width: 8,
        };
        let mut hm = vec![0.0f32; shape.len()];
        // Joint 0: peak at (4, 3), right neighbour higher than left, upper higher than lower.
        hm[3 * 8 + 4] = 1.0;
        hm[3 * 8 + 5] = 0.5;
        hm[2 * 8 + 4] = 0.25;
        // Joint 1: two equal maxima, the first in row-major order wins; at the border: no offset.
        hm[64 + 8 + 1] = 2.0;
        hm[64 + 6 * 8 + 6] = 2.0;
        let mut out = Vec::new();
        decode_heatmaps(&hm, shape, &CS, &mut out).unwrap();
        // 200 px over 8 heatmap px: 25 px per heatmap px; (x - 4) * 25 + 100.
        assert_eq!(
            out[0],
            Keypoint {
                x: 100.0 + 0.25 * 25.0,
                y: 100.0 - 1.25 * 25.0,
                score: 1.0
            }
        );
        assert_eq!(
            out[1],
            Keypoint {
                x: 100.0 - 3.0 * 25.0,
                y: 100.0 - 3.0 * 25.0,
                score: 2.0
            }
        );
    }

    #[test]
    fn nonpositive_maximum_goes_to_origin() {
        let shape = HeatmapShape {
            joints: 1,
            height: 4,
            width: 4,
        };
        let hm = vec![-1.0f32; 16];
        let mut out = Vec::new();
        decode_heatmaps(&hm, shape, &CS, &mut out).unwrap();
        assert_eq!((out[0].x, out[0].y, out[0].score), (0.0, 0.0, -1.0));
        assert!(decode_heatmaps(&hm[..15], shape, &CS, &mut out).is_err());
    }

    #[test]
    fn flip_average_mirrors_swaps_and_shifts() {
        let shape = HeatmapShape {
            joints: 2,
            height: 1,
            width: 4,
        };
        let plain = [0.0f32; 8];
        let flipped = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
        let mut out = [0.0f64; 8];
        flip_average(&plain, &flipped, shape, &[(0, 1)], &mut out).unwrap();
        // Joint 0 takes joint 1's map mirrored [40, 30, 20, 10], shifted right [40, 40, 30, 20].
        assert_eq!(out, [20.0, 20.0, 15.0, 10.0, 2.0, 2.0, 1.5, 1.0]);
        assert!(flip_average(&plain, &flipped, shape, &[(0, 2)], &mut out).is_err());
    }
}
