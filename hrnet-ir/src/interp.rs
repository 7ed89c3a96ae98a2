//! The reference interpreter: the executable definition of the network.
//!
//! Plain loops over NCHW values, one IR node at a time, written to be obviously correct
//! rather than fast. It runs the raw IR and any optimized IR: a conv with a folded BatchNorm
//! applies the BatchNorm to the convolution's output exactly as the separate node would
//! (weights are never rewritten here), so raw and optimized graphs are two independent
//! routes to the same numbers. Convolutions, linear layers, means, softmaxes and the OCR
//! matrix products accumulate in f64.

use crate::ir::{Graph, NodeId, Op, Resize, Shape};
use std::collections::HashMap;

/// Checkpoint tensors by official name, flattened row-major.
pub trait Weights {
    /// The tensor `name`, if present.
    fn tensor(&self, name: &str) -> Option<&[f32]>;
}

impl Weights for HashMap<String, Vec<f32>> {
    fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(Vec::as_slice)
    }
}

impl Weights for std::collections::BTreeMap<String, Vec<f32>> {
    fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(Vec::as_slice)
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// A tensor the graph needs is not in the weights.
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    /// A tensor has the wrong number of elements.
    #[error("tensor '{name}' has {actual} elements, expected {expected}")]
    TensorLength {
        /// Key.
        name: String,
        /// Elements the graph needs.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The input has the wrong number of elements.
    #[error("input has {actual} elements, the network takes 1x{expected} = {} elements", expected.len())]
    InputLength {
        /// The network's input shape.
        expected: Shape,
        /// Elements given.
        actual: usize,
    },
    /// The graph is not runnable (a cycle or a malformed node): a compiler bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs `g` on `input` (NCHW, batch 1) and returns its outputs in output order.
pub fn run(g: &Graph, weights: &dyn Weights, input: &[f32]) -> Result<Vec<Vec<f32>>, InterpError> {
    // Check every tensor up front so that a bad checkpoint fails before any work.
    for spec in g.tensor_specs() {
        let t = weights
            .tensor(&spec.name)
            .ok_or_else(|| InterpError::MissingTensor(spec.name.clone()))?;
        let expected: usize = spec.shape.iter().product();
        if t.len() != expected {
            return Err(InterpError::TensorLength {
                name: spec.name,
                expected,
                actual: t.len(),
            });
        }
    }
    let order = g
        .schedule()
        .ok_or_else(|| InterpError::Internal("the graph has a cycle".into()))?;
    let mut remaining: HashMap<NodeId, usize> =
        order.iter().map(|&n| (n, g.users(n).len())).collect();
    let mut values: HashMap<NodeId, Vec<f32>> = HashMap::new();
    let mut outputs: Vec<(usize, Vec<f32>)> = Vec::new();
    let w = |name: String| {
        weights
            .tensor(&name)
            .ok_or(InterpError::MissingTensor(name))
    };

    for &n in &order {
        let node = g.node(n);
        let ops = g.operands(n);
        let arg = |k: usize| -> Result<&Vec<f32>, InterpError> {
            ops.get(k).and_then(|o| values.get(o)).ok_or_else(|| {
                InterpError::Internal(format!("operand {k} of {} is not computed", node.name))
            })
        };
        let shape_of = |k: usize| g.node(ops[k]).shape;
        let out = match &node.op {
            Op::Input => {
                if input.len() != node.shape.len() {
                    return Err(InterpError::InputLength {
                        expected: node.shape,
                        actual: input.len(),
                    });
                }
                input.to_vec()
            }
            Op::Conv(c) => {
                let cs = Shape {
                    h: node.shape.h / c.upsample,
                    w: node.shape.w / c.upsample,
                    ..node.shape
                };
                let mut y = conv(
                    arg(0)?,
                    shape_of(0),
                    cs,
                    c,
                    w(format!("{}.weight", node.name))?,
                );
                if c.bias {
                    let b = w(format!("{}.bias", node.name))?;
                    per_channel(&mut y, cs, |ch, v| v + b[ch]);
                }
                if let Some(bn) = &c.bn {
                    batch_norm(&mut y, cs, &bn.prefix, bn.eps, &w)?;
                }
                if c.upsample > 1 {
                    let nearest = Resize::Nearest { factor: c.upsample };
                    y = resize(&y, cs, node.shape, nearest);
                }
                if c.residual {
                    add_into(&mut y, arg(1)?);
                }
                if c.relu {
                    relu(&mut y);
                }
                y
            }
            Op::BatchNorm(b) => {
                let mut y = arg(0)?.clone();
                batch_norm(&mut y, node.shape, &node.name, b.eps, &w)?;
                y
            }
            Op::Relu => {
                let mut y = arg(0)?.clone();
                relu(&mut y);
                y
            }
            Op::Add { relu: r } => {
                let mut y = arg(0)?.clone();
                add_into(&mut y, arg(1)?);
                if *r {
                    relu(&mut y);
                }
                y
            }
            Op::Resize(r) => resize(arg(0)?, shape_of(0), node.shape, *r),
            Op::AddResized {
                resize: r,
                relu: rl,
            } => {
                let mut y = arg(0)?.clone();
                add_into(&mut y, &resize(arg(1)?, shape_of(1), node.shape, *r));
                if *rl {
                    relu(&mut y);
                }
                y
            }
            Op::Concat { inputs } => {
                let mut y = Vec::with_capacity(node.shape.len());
                for k in 0..*inputs {
                    y.extend_from_slice(arg(k)?);
                }
                y
            }
            Op::GlobalAvgPool => {
                let s = shape_of(0);
                let plane = s.h * s.w;
                arg(0)?
                    .chunks_exact(plane)
                    .map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
                    .collect()
            }
            Op::Linear { in_features, .. } => {
                let weight = w(format!("{}.weight", node.name))?;
                let bias = w(format!("{}.bias", node.name))?;
                let x = arg(0)?;
                weight
                    .chunks_exact(*in_features)
                    .zip(bias)
                    .map(|(row, &b)| (dot(row, x) + f64::from(b)) as f32)
                    .collect()
            }
            Op::SpatialGather => spatial_gather(arg(0)?, arg(1)?, shape_of(0), shape_of(1)),
            Op::ObjectAttention => object_attention(
                arg(0)?,
                arg(1)?,
                arg(2)?,
                shape_of(0),
                shape_of(1),
                shape_of(2),
            ),
            Op::Output { index } => {
                outputs.push((*index, arg(0)?.clone()));
                Vec::new()
            }
        };
        for o in &ops {
            if let Some(r) = remaining.get_mut(o) {
                *r -= 1;
                if *r == 0 {
                    values.remove(o);
                }
            }
        }
        values.insert(n, out);
    }
    outputs.sort_by_key(|(i, _)| *i);
    Ok(outputs.into_iter().map(|(_, v)| v).collect())
}

/// Direct convolution, f64 accumulation, zero padding.
fn conv(x: &[f32], xs: Shape, ys: Shape, c: &crate::ir::Conv, weight: &[f32]) -> Vec<f32> {
    let (k, s, p) = (c.kernel, c.stride, c.padding as isize);
    let mut y = vec![0f32; ys.len()];
    let mut acc = vec![0f64; ys.h * ys.w];
    for oc in 0..ys.c {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for ic in 0..xs.c {
            let plane = &x[ic * xs.h * xs.w..(ic + 1) * xs.h * xs.w];
            for ky in 0..k {
                for kx in 0..k {
                    let wv = f64::from(weight[((oc * xs.c + ic) * k + ky) * k + kx]);
                    for oy in 0..ys.h {
                        let iy = (oy * s + ky) as isize - p;
                        if iy < 0 || iy >= xs.h as isize {
                            continue;
                        }
                        let row = &plane[iy as usize * xs.w..(iy as usize + 1) * xs.w];
                        let arow = &mut acc[oy * ys.w..(oy + 1) * ys.w];
                        for (ox, a) in arow.iter_mut().enumerate() {
                            let ix = (ox * s + kx) as isize - p;
                            if ix >= 0 && ix < xs.w as isize {
                                *a += wv * f64::from(row[ix as usize]);
                            }
                        }
                    }
                }
            }
        }
        for (dst, a) in y[oc * ys.h * ys.w..(oc + 1) * ys.h * ys.w]
            .iter_mut()
            .zip(&acc)
        {
            *dst = *a as f32;
        }
    }
    y
}

fn per_channel(y: &mut [f32], s: Shape, f: impl Fn(usize, f32) -> f32) {
    for (i, v) in y.iter_mut().enumerate() {
        *v = f(i / (s.h * s.w), *v);
    }
}

/// `(x − μ) / √(σ² + ε) · γ + β`, as PyTorch evaluates it.
fn batch_norm<'w>(
    y: &mut [f32],
    s: Shape,
    prefix: &str,
    eps: f32,
    w: &dyn Fn(String) -> Result<&'w [f32], InterpError>,
) -> Result<(), InterpError> {
    let gamma = w(format!("{prefix}.weight"))?;
    let beta = w(format!("{prefix}.bias"))?;
    let mean = w(format!("{prefix}.running_mean"))?;
    let var = w(format!("{prefix}.running_var"))?;
    per_channel(y, s, |c, v| {
        (v - mean[c]) / (var[c] + eps).sqrt() * gamma[c] + beta[c]
    });
    Ok(())
}

fn relu(y: &mut [f32]) {
    y.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn add_into(y: &mut [f32], x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// `Σ a[i]·b[i]` in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| f64::from(p) * f64::from(q))
        .sum()
}

/// `softmax(scale · v)` in f64, with the maximum subtracted first.
fn softmax(v: &mut [f64], scale: f64) {
    let max = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(scale * x));
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (scale * *x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// OCR's spatial gather: `out[c][k] = Σₚ softmaxₚ(logits[k])[p] · feats[c][p]`, as `C×K×1`.
fn spatial_gather(logits: &[f32], feats: &[f32], ls: Shape, fs: Shape) -> Vec<f32> {
    let pixels = ls.h * ls.w;
    let mut y = vec![0f32; fs.c * ls.c];
    let mut weights = vec![0f64; pixels];
    for (k, l) in logits.chunks_exact(pixels).enumerate() {
        weights
            .iter_mut()
            .zip(l)
            .for_each(|(p, &v)| *p = f64::from(v));
        softmax(&mut weights, 1.0);
        for (c, f) in feats.chunks_exact(pixels).enumerate() {
            let v: f64 = weights.iter().zip(f).map(|(&p, &x)| p * f64::from(x)).sum();
            y[c * ls.c + k] = v as f32;
        }
    }
    y
}

/// OCR's object attention: per pixel, a softmax over the `K` regions of the scaled
/// query·key products weights the values.
fn object_attention(
    query: &[f32],
    key: &[f32],
    value: &[f32],
    qs: Shape,
    ks: Shape,
    vs: Shape,
) -> Vec<f32> {
    let (pixels, regions) = (qs.h * qs.w, ks.h * ks.w);
    let scale = (qs.c as f64).powf(-0.5);
    let mut y = vec![0f32; vs.c * pixels];
    let mut sim = vec![0f64; regions];
    for p in 0..pixels {
        for (k, s) in sim.iter_mut().enumerate() {
            *s = (0..qs.c)
                .map(|d| f64::from(query[d * pixels + p]) * f64::from(key[d * regions + k]))
                .sum();
        }
        softmax(&mut sim, scale);
        for e in 0..vs.c {
            let v: f64 = sim
                .iter()
                .zip(&value[e * regions..(e + 1) * regions])
                .map(|(&s, &x)| s * f64::from(x))
                .sum();
            y[e * pixels + p] = v as f32;
        }
    }
    y
}

/// Nearest ×f, or bilinear with either `align_corners` rule (PyTorch's source indices).
fn resize(x: &[f32], xs: Shape, ys: Shape, r: Resize) -> Vec<f32> {
    let mut y = vec![0f32; ys.len()];
    match r {
        Resize::Nearest { factor } => {
            for c in 0..ys.c {
                for oy in 0..ys.h {
                    for ox in 0..ys.w {
                        y[(c * ys.h + oy) * ys.w + ox] =
                            x[(c * xs.h + oy / factor) * xs.w + ox / factor];
                    }
                }
            }
        }
        Resize::Bilinear { align_corners } => {
            let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
                let scale = match (align_corners, out > 1) {
                    (true, true) => (inp - 1) as f32 / (out - 1) as f32,
                    (true, false) => 0.0,
                    (false, _) => inp as f32 / out as f32,
                };
                (0..out)
                    .map(|o| {
                        let src = if align_corners {
                            scale * o as f32
                        } else {
                            (scale * (o as f32 + 0.5) - 0.5).max(0.0)
                        };
                        let i0 = (src as usize).min(inp - 1);
                        let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                        (i0, i1, src - i0 as f32)
                    })
                    .collect()
            };
            let (ty, tx) = (taps(ys.h, xs.h), taps(ys.w, xs.w));
            for c in 0..ys.c {
                let p = &x[c * xs.h * xs.w..];
                for (oy, &(y0, y1, ly)) in ty.iter().enumerate() {
                    for (ox, &(x0, x1, lx)) in tx.iter().enumerate() {
                        let v = (1.0 - ly)
                            * ((1.0 - lx) * p[y0 * xs.w + x0] + lx * p[y0 * xs.w + x1])
                            + ly * ((1.0 - lx) * p[y1 * xs.w + x0] + lx * p[y1 * xs.w + x1]);
                        y[(c * ys.h + oy) * ys.w + ox] = v;
                    }
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    #[test]
    fn bilinear_both_corner_rules() {
        // 1×2 → 1×4. align_corners: sources 0, 1/3, 2/3, 1. Pixel centres: scale 1/2,
        // sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (the last clamps to the edge).
        let x = [0.0, 3.0];
        let r = |align_corners| {
            resize(
                &x,
                sh(1, 1, 2),
                sh(1, 1, 4),
                Resize::Bilinear { align_corners },
            )
        };
        assert_eq!(r(true), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(r(false), [0.0, 0.75, 2.25, 3.0]);
        // To a single pixel, align_corners reads the first one.
        let one = resize(
            &x,
            sh(1, 1, 2),
            sh(1, 1, 1),
            Resize::Bilinear {
                align_corners: true,
            },
        );
        assert_eq!(one, [0.0]);
    }

    #[test]
    fn spatial_gather_weights_pixels_by_their_softmax() {
        // K = 2 classes over 2 pixels; C = 2 feature channels.
        let logits = [0.0, 2f32.ln(), 5.0, 5.0]; // class 0: weights 1/3, 2/3; class 1: 1/2, 1/2
        let feats = [3.0, 6.0, 1.0, -1.0];
        let y = spatial_gather(&logits, &feats, sh(2, 1, 2), sh(2, 1, 2));
        // C×K×1: [c0k0, c0k1, c1k0, c1k1]
        let want = [5.0, 4.5, -1.0 / 3.0, 0.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn object_attention_softmax_over_regions() {
        // D = 4 (scale 1/2), K = 2 regions, E = 1, one pixel.
        let query = [1.0, 1.0, 0.0, 0.0];
        let key = [2f32.ln(), 0.0, 2f32.ln(), 0.0, 0.0, 0.0, 0.0, 0.0]; // D×K
        let value = [3.0, 6.0];
        // q·k = (2 ln 2, 0), × 1/2 = (ln 2, 0): weights 2/3, 1/3 → 3·2/3 + 6/3 = 4.
        let y = object_attention(&query, &key, &value, sh(4, 1, 1), sh(4, 2, 1), sh(1, 2, 1));
        assert!((y[0] - 4.0).abs() < 1e-6, "{y:?}");
    }
}
