//! The reference interpreter: the executable definition of the network.
//!
//! Plain loops over NCHW values, one IR node at a time, written to be obviously correct
//! rather than fast. It runs the raw IR and any optimized IR: a conv with a folded BatchNorm
//! applies the BatchNorm to the convolution's output exactly as the separate node would
//! (weights are never rewritten here), so raw and optimized graphs are two independent
//! routes to the same numbers. Convolutions accumulate in f64.

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

/// Nearest ×f, or bilinear with `align_corners=False` (PyTorch's source-index rule).
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
        Resize::Bilinear => {
            let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
                let scale = inp as f32 / out as f32;
                (0..out)
                    .map(|o| {
                        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
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
