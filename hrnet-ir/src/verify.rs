//! The IR verifier. It runs after every pass in tests and debug builds; a failure is always a
//! bug in the compiler, never the user's fault, and names the pass and the node.
//!
//! Invariants checked:
//! 1. The graph is acyclic.
//! 2. Every node has exactly `op.arity()` operands, in slots `0..arity`, each slot once.
//! 3. Every node's shape follows its op's shape rule (see [`Op`]), and a conv's
//!    `in_channels` equals its operand's channel count.
//! 4. There is exactly one `Input` (`3×H×W`); `Output` indices are `0..n` without gaps, and
//!    nothing consumes an `Output`.
//! 5. Every value other than an `Output` is consumed by some node (no dead values).
//! 6. Parameter nodes have non-empty names, and no two tensors share a checkpoint key.
//! 7. Nothing is resized but by `Resize`/`AddResized`, whose factors match the shapes.
//! 8. Head ops follow their shape rules: `concat` joins two or more values of one spatial
//!    size; `linear` reads exactly `in_features` values; `spatial_gather` reads logits and
//!    features of one spatial size; `object_attention` reads a query and key of one width and
//!    key and value over the same regions.

use crate::ir::{Graph, NodeId, Op, Resize, Shape};
use std::collections::BTreeSet;
use std::fmt;

/// What the verifier found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierError {
    /// The node at fault, with its name, when the problem is local.
    pub node: Option<(NodeId, String)>,
    /// What invariant failed.
    pub message: String,
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some((id, name)) => write!(f, "node {} ({name}): {}", id.index(), self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for VerifierError {}

/// Checks every invariant listed in the module documentation.
pub fn verify(g: &Graph) -> Result<(), VerifierError> {
    let at = |id: NodeId, message: String| VerifierError {
        node: Some((id, g.node(id).name.clone())),
        message,
    };
    let schedule = g.schedule().ok_or_else(|| VerifierError {
        node: None,
        message: "the graph has a cycle".into(),
    })?;

    let mut inputs = 0;
    let mut output_indices = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for &id in &schedule {
        let node = g.node(id);
        // 2. operands and slots.
        let mut slots: Vec<u8> =
            g.g.edges_directed(id, petgraph::Direction::Incoming)
                .map(|e| e.weight().0)
                .collect();
        slots.sort_unstable();
        let expected: Vec<u8> = (0..node.op.arity() as u8).collect();
        if slots != expected {
            return Err(at(
                id,
                format!(
                    "{} takes operand slots {expected:?}, has {slots:?}",
                    node.op.mnemonic()
                ),
            ));
        }
        let ops = g.operands(id);
        let operand = |k: usize| g.node(ops[k]).shape;
        // 3. shapes.
        let want: Shape = match &node.op {
            Op::Input => {
                inputs += 1;
                if node.shape.c != 3 {
                    return Err(at(
                        id,
                        format!("input must have 3 channels, has {}", node.shape.c),
                    ));
                }
                node.shape
            }
            Op::Conv(c) => {
                let x = operand(0);
                if c.in_channels != x.c {
                    return Err(at(
                        id,
                        format!(
                            "conv expects {} input channels, operand has {}",
                            c.in_channels, x.c
                        ),
                    ));
                }
                if c.kernel == 0
                    || c.stride == 0
                    || x.h + 2 * c.padding < c.kernel
                    || x.w + 2 * c.padding < c.kernel
                {
                    return Err(at(
                        id,
                        format!(
                            "conv window {}x{} s{} p{} does not fit {x}",
                            c.kernel, c.kernel, c.stride, c.padding
                        ),
                    ));
                }
                if c.upsample == 0 {
                    return Err(at(id, "conv upsampling factor 0".into()));
                }
                let o = |n: usize| ((n + 2 * c.padding - c.kernel) / c.stride + 1) * c.upsample;
                let s = Shape {
                    c: c.out_channels,
                    h: o(x.h),
                    w: o(x.w),
                };
                if c.residual && operand(1) != s {
                    return Err(at(
                        id,
                        format!("residual operand is {}, conv output is {s}", operand(1)),
                    ));
                }
                s
            }
            Op::BatchNorm(_) | Op::Relu | Op::Output { .. } => operand(0),
            Op::Add { .. } => {
                if operand(0) != operand(1) {
                    return Err(at(id, format!("add of {} and {}", operand(0), operand(1))));
                }
                operand(0)
            }
            Op::Resize(r) => resized(operand(0), *r, node.shape).map_err(|m| at(id, m))?,
            Op::Concat { inputs } => {
                if *inputs < 2 {
                    return Err(at(id, format!("concat of {inputs} value(s)")));
                }
                let first = operand(0);
                let mut c = 0;
                for k in 0..*inputs {
                    let o = operand(k);
                    if (o.h, o.w) != (first.h, first.w) {
                        return Err(at(id, format!("concat of {first} and {o}")));
                    }
                    c += o.c;
                }
                Shape { c, ..first }
            }
            Op::GlobalAvgPool => Shape {
                c: operand(0).c,
                h: 1,
                w: 1,
            },
            Op::Linear {
                in_features,
                out_features,
            } => {
                if operand(0).len() != *in_features {
                    return Err(at(
                        id,
                        format!("linear of {in_features} features reads {}", operand(0)),
                    ));
                }
                Shape {
                    c: *out_features,
                    h: 1,
                    w: 1,
                }
            }
            Op::SpatialGather => {
                let (l, f) = (operand(0), operand(1));
                if (l.h, l.w) != (f.h, f.w) {
                    return Err(at(
                        id,
                        format!("spatial gather of logits {l} and features {f}"),
                    ));
                }
                Shape {
                    c: f.c,
                    h: l.c,
                    w: 1,
                }
            }
            Op::ObjectAttention => {
                let (q, k, v) = (operand(0), operand(1), operand(2));
                if q.c != k.c || (k.h, k.w) != (v.h, v.w) {
                    return Err(at(
                        id,
                        format!("object attention of query {q}, key {k}, value {v}"),
                    ));
                }
                Shape { c: v.c, ..q }
            }
            Op::AddResized { resize, .. } => {
                let a = operand(0);
                let b = resized(operand(1), *resize, a).map_err(|m| at(id, m))?;
                if a != b {
                    return Err(at(
                        id,
                        format!("{} resized is {b}, the accumulator is {a}", operand(1)),
                    ));
                }
                a
            }
        };
        if want != node.shape {
            return Err(at(
                id,
                format!(
                    "shape is {}, the {} rule gives {want}",
                    node.shape,
                    node.op.mnemonic()
                ),
            ));
        }
        // 4. outputs; 5. no dead values.
        let users = g.users(id);
        if let Op::Output { index } = node.op {
            if !users.is_empty() {
                return Err(at(id, "an output is consumed by another node".into()));
            }
            if !output_indices.insert(index) {
                return Err(at(id, format!("two outputs have index {index}")));
            }
        } else if users.is_empty() {
            return Err(at(id, "its value is never used".into()));
        }
        // 6. parameter names.
        let params = node.params();
        if !params.is_empty() && node.name.is_empty() {
            return Err(at(id, "a node with parameters has no name".into()));
        }
        for p in params {
            if !keys.insert(p.name.clone()) {
                return Err(at(id, format!("checkpoint key {} is used twice", p.name)));
            }
        }
    }
    if inputs != 1 {
        return Err(VerifierError {
            node: None,
            message: format!("expected one input, found {inputs}"),
        });
    }
    if output_indices.is_empty() || output_indices.iter().copied().ne(0..output_indices.len()) {
        return Err(VerifierError {
            node: None,
            message: format!("output indices {output_indices:?} are not 0..n"),
        });
    }
    Ok(())
}

/// Shape rule of a resize of `x` to (for bilinear) `target`'s spatial size.
fn resized(x: Shape, r: Resize, target: Shape) -> Result<Shape, String> {
    match r {
        Resize::Nearest { factor } if factor >= 2 => Ok(Shape {
            c: x.c,
            h: x.h * factor,
            w: x.w * factor,
        }),
        Resize::Nearest { factor } => Err(format!("nearest resize by {factor}")),
        Resize::Bilinear { .. } => Ok(Shape {
            c: x.c,
            h: target.h,
            w: target.w,
        }),
    }
}
