//! Strict binding: checking a checkpoint against the tensors a model needs.
//!
//! Every problem is collected before reporting, so one run shows all missing, mis-shaped and
//! unexpected tensors, and every bound tensor holding NaN or infinity, or a negative BatchNorm
//! running variance (each would make every output silently wrong). `*.num_batches_tracked` (a BatchNorm training counter) is optional and
//! never counts as unexpected.

use std::collections::HashSet;
use std::fmt;

use super::Checkpoint;

/// A tensor a model needs: its official state_dict name and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorSpec {
    /// The state_dict name, e.g. `stage2.0.fuse_layers.0.1.0.weight`.
    pub name: String,
    /// The expected shape.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A spec from a name and a shape.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.into(),
        }
    }
}

/// How strict [`Checkpoint::bind`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Accept checkpoint tensors that no spec asks for (by default they are an error).
    pub ignore_extra: bool,
}

/// The f32 values of the bound tensors, in spec order.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundWeights {
    tensors: Vec<Vec<f32>>,
}

impl BoundWeights {
    /// Number of tensors (the number of specs).
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The values of the `i`-th spec's tensor.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        self.tensors.get(i).map(Vec::as_slice)
    }

    /// The values of every tensor, in spec order.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.tensors.iter().map(Vec::as_slice)
    }

    /// The values of every tensor, in spec order, by value.
    pub fn into_vec(self) -> Vec<Vec<f32>> {
        self.tensors
    }
}

/// One mismatch between a checkpoint and the specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindProblem {
    /// The model needs a tensor the checkpoint lacks.
    Missing {
        /// The tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// The checkpoint's tensor has another shape.
    Shape {
        /// The tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// The checkpoint's tensor is not floating point.
    NotFloat {
        /// The tensor name.
        name: String,
        /// Its stored type.
        dtype: super::DType,
    },
    /// The checkpoint's tensor holds NaN or infinity, which would silently poison every
    /// output.
    NonFinite {
        /// The tensor name.
        name: String,
        /// How many values are not finite.
        count: usize,
        /// Index (in C order) of the first.
        index: usize,
        /// The first such value (`NaN`, `inf` or `-inf`).
        value: String,
    },
    /// A BatchNorm `running_var` with a negative value: a variance never is, and folding it
    /// takes its square root.
    NegativeVariance {
        /// The tensor name.
        name: String,
        /// The channel.
        index: usize,
        /// The value, as printed.
        value: String,
    },
    /// The checkpoint has a tensor the model does not use.
    Unexpected {
        /// The tensor name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

impl fmt::Display for BindProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindProblem::Missing { name, expected } => {
                write!(f, "missing tensor '{name}' (expected shape {expected:?})")
            }
            BindProblem::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor '{name}': expected shape {expected:?}, checkpoint has {found:?}"
            ),
            BindProblem::NotFloat { name, dtype } => write!(
                f,
                "tensor '{name}': expected a floating-point tensor, checkpoint has {dtype}"
            ),
            BindProblem::NonFinite {
                name,
                count,
                index,
                value,
            } => write!(
                f,
                "tensor '{name}': {count} value{} not finite (the first, at index {index}, is {value}); weights must be finite numbers",
                if *count == 1 { " is" } else { "s are" }
            ),
            BindProblem::NegativeVariance { name, index, value } => write!(
                f,
                "tensor '{name}': running variance {value} of channel {index} is negative"
            ),
            BindProblem::Unexpected { name, shape } => write!(
                f,
                "unexpected tensor '{name}' (shape {shape:?}) is not used by the model"
            ),
        }
    }
}

/// Every mismatch between a checkpoint and the specs; displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BindError {
    /// The problems, in spec order, then unexpected tensors in checkpoint order.
    pub problems: Vec<BindProblem>,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "checkpoint does not match the model ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// What is wrong with the values of the tensor `name`, if anything: a value that is not
/// finite, or a negative BatchNorm running variance.
fn check_values(name: &str, values: &[f32]) -> Option<BindProblem> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Some(BindProblem::NonFinite {
            name: name.to_owned(),
            count: values.iter().filter(|v| !v.is_finite()).count(),
            index,
            value: values[index].to_string(),
        });
    }
    let is_variance = name == "running_var" || name.ends_with(".running_var");
    let index = values
        .iter()
        .position(|&v| v < 0.0)
        .filter(|_| is_variance)?;
    Some(BindProblem::NegativeVariance {
        name: name.to_owned(),
        index,
        value: values[index].to_string(),
    })
}

fn is_optional(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}

impl Checkpoint {
    /// Checks the checkpoint against `specs` and returns their f32 values in spec order.
    ///
    /// Each spec must name a floating-point tensor of exactly its shape with finite values
    /// (and no negative value in a `*.running_var`), except that a missing
    /// `*.num_batches_tracked` is fine; checkpoint tensors no spec names are an error unless
    /// `opts.ignore_extra`, and `*.num_batches_tracked` is never one. All problems are
    /// reported together.
    pub fn bind(&self, specs: &[TensorSpec], opts: BindOptions) -> Result<BoundWeights, BindError> {
        let mut problems = Vec::new();
        let mut tensors = Vec::with_capacity(specs.len());
        for spec in specs {
            let Some(t) = self.get(&spec.name) else {
                if is_optional(&spec.name) {
                    tensors.push(Vec::new());
                } else {
                    problems.push(BindProblem::Missing {
                        name: spec.name.clone(),
                        expected: spec.shape.clone(),
                    });
                }
                continue;
            };
            if t.shape != spec.shape {
                problems.push(BindProblem::Shape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: t.shape.clone(),
                });
                continue;
            }
            match t.as_f32() {
                Some(values) => {
                    problems.extend(check_values(&spec.name, values));
                    tensors.push(values.to_vec());
                }
                None => problems.push(BindProblem::NotFloat {
                    name: spec.name.clone(),
                    dtype: t.dtype,
                }),
            }
        }
        if !opts.ignore_extra {
            let wanted: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            for (name, t) in self.iter() {
                if !wanted.contains(name) && !is_optional(name) {
                    problems.push(BindProblem::Unexpected {
                        name: name.to_owned(),
                        shape: t.shape.clone(),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(BoundWeights { tensors })
        } else {
            Err(BindError { problems })
        }
    }
}
