//! What a compiled model needs at load and run time, whatever engine compiled it: strict
//! binding of its parameters, BatchNorm folding and weight packing (once, at load), and the
//! per-caller working memory ([`Scratch`]) that makes inference allocation-free.

use crate::kernels::{Concat, ConvSpec, Ctx};
use crate::weights::{self, BindError, BindOptions, Checkpoint, TensorSpec, WeightError};
use std::ops::Range;
use std::path::Path;

/// A BatchNorm folded into a convolution at load time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldedBn<'a> {
    /// Key prefix of its parameters: `<prefix>.weight`, `.bias`, `.running_mean`,
    /// `.running_var`.
    pub prefix: &'a str,
    /// ε, as the network's BatchNorm node has it.
    pub eps: f32,
}

impl Eq for FoldedBn<'_> {}

impl<'a> FoldedBn<'a> {
    /// Both fields (for tables in generated code).
    pub const fn new(prefix: &'a str, eps: f32) -> Self {
        FoldedBn { prefix, eps }
    }
}

/// One convolution's parameters as the compiled model knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams<'a> {
    /// Official key prefix: the weight is `<key>.weight`, the bias `<key>.bias`.
    pub key: &'a str,
    /// Whether the checkpoint has `<key>.bias`.
    pub bias: bool,
    /// The BatchNorm folded into this conv.
    pub bn: Option<FoldedBn<'a>>,
    /// Shapes and algorithm (decides the packed form).
    pub spec: ConvSpec,
    /// Where the packed weights start in the model's weight buffer, in floats.
    pub packed_offset: usize,
    /// The checkpoint stores the weight as an `nn.Linear`'s `[out, in]` (a classifier run as
    /// a 1×1 convolution on a 1×1 map), not `[out, in, k, k]`.
    pub linear: bool,
    /// The conv reads a part-padded concatenation buffer: the checkpoint's weight has the
    /// logical input channels ([`Concat::logical_channels`]) and is spread to the buffer's
    /// ([`Concat::remap_input_channels`], `spec.cin() == concat.channels()`) before packing.
    pub concat: Option<Concat>,
}

impl<'a> ConvParams<'a> {
    /// All fields, in declaration order (for tables in generated code).
    pub const fn new(
        key: &'a str,
        bias: bool,
        bn: Option<FoldedBn<'a>>,
        spec: ConvSpec,
        packed_offset: usize,
    ) -> Self {
        ConvParams {
            key,
            bias,
            bn,
            spec,
            packed_offset,
            linear: false,
            concat: None,
        }
    }

    /// All fields (for tables in generated code: a head conv reading a concatenation, or a
    /// classifier).
    pub const fn full(
        key: &'a str,
        bias: bool,
        bn: Option<FoldedBn<'a>>,
        spec: ConvSpec,
        packed_offset: usize,
        linear: bool,
        concat: Option<Concat>,
    ) -> Self {
        ConvParams {
            key,
            bias,
            bn,
            spec,
            packed_offset,
            linear,
            concat,
        }
    }

    /// The same conv whose checkpoint weight is an `nn.Linear`'s `[out, in]`.
    pub const fn linear(self) -> Self {
        ConvParams {
            linear: true,
            ..self
        }
    }

    /// The same conv reading the concatenation buffer `concat`.
    pub const fn reading(self, concat: Concat) -> Self {
        ConvParams {
            concat: Some(concat),
            ..self
        }
    }

    /// Input channels of the checkpoint's weight (the logical ones of a concatenation).
    pub fn logical_cin(&self) -> usize {
        self.concat.map_or(self.spec.cin, |c| c.logical_channels())
    }

    /// This conv's slice of the packed weight buffer.
    ///
    /// # Panics
    /// If `packed` is shorter than the model's packed length.
    pub fn packed<'w>(&self, packed: &'w [f32]) -> &'w [f32] {
        &packed[self.packed_offset..self.packed_offset + self.spec.packed_len()]
    }
}

/// Every checkpoint tensor the convolutions need, in order.
pub fn tensor_specs(convs: &[ConvParams<'_>]) -> Vec<TensorSpec> {
    let mut v = Vec::new();
    for c in convs {
        let s = &c.spec;
        let cin = c.logical_cin();
        let shape = if c.linear {
            vec![s.cout, cin]
        } else {
            vec![s.cout, cin, s.k, s.k]
        };
        v.push(TensorSpec::new(format!("{}.weight", c.key), shape));
        if c.bias {
            v.push(TensorSpec::new(format!("{}.bias", c.key), [s.cout]));
        }
        if let Some(bn) = c.bn {
            for t in ["weight", "bias", "running_mean", "running_var"] {
                v.push(TensorSpec::new(format!("{}.{t}", bn.prefix), [s.cout]));
            }
        }
    }
    v
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The checkpoint file is unreadable or malformed.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The checkpoint does not hold exactly the tensors the model needs.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Binds `ckpt` strictly against `convs`, folds each BatchNorm into its conv (in f64), and
/// hands every conv's index, folded OIHW weights and bias (`cout` floats) to `each`, in order.
/// Every engine's packer is built on this, so all fold the same way.
pub fn fold_each(
    ckpt: &Checkpoint,
    convs: &[ConvParams<'_>],
    opts: BindOptions,
    mut each: impl FnMut(usize, &[f32], &[f32]),
) -> Result<(), BindError> {
    let specs = tensor_specs(convs);
    let bound = ckpt.bind(&specs, opts)?;
    let mut tensors = bound.iter();
    let mut w_folded = Vec::new();
    let mut b_folded = Vec::new();
    let mut w_spread = Vec::new();
    for (i, c) in convs.iter().enumerate() {
        let s = &c.spec;
        let mut next = || tensors.next().expect("bind returns one tensor per spec");
        let w = next();
        let bias = if c.bias { Some(next()) } else { None };
        let per_out = c.logical_cin() * s.k * s.k;
        w_folded.clear();
        b_folded.clear();
        match c.bn {
            Some(bn) => {
                let (gamma, beta, mean, var) = (next(), next(), next(), next());
                let eps = f64::from(bn.eps);
                for o in 0..s.cout {
                    let scale = f64::from(gamma[o]) / (f64::from(var[o]) + eps).sqrt();
                    w_folded.extend(
                        w[o * per_out..(o + 1) * per_out]
                            .iter()
                            .map(|&x| (f64::from(x) * scale) as f32),
                    );
                    let b0 = bias.map_or(0.0, |b| f64::from(b[o]));
                    b_folded.push(((b0 - f64::from(mean[o])) * scale + f64::from(beta[o])) as f32);
                }
            }
            None => {
                w_folded.extend_from_slice(w);
                match bias {
                    Some(b) => b_folded.extend_from_slice(b),
                    None => b_folded.resize(s.cout, 0.0),
                }
            }
        }
        match c.concat {
            Some(cat) => {
                w_spread.clear();
                w_spread.resize(s.cout * s.cin * s.k * s.k, 0.0);
                cat.remap_input_channels(&w_folded, s.cout, s.k * s.k, &mut w_spread);
                each(i, &w_spread, &b_folded);
            }
            None => each(i, &w_folded, &b_folded),
        }
    }
    Ok(())
}

/// Binds, folds (see [`fold_each`]) and packs every conv for hrnet-runtime's kernels into one
/// buffer of `packed_len` floats.
pub fn pack_weights(
    ckpt: &Checkpoint,
    convs: &[ConvParams<'_>],
    packed_len: usize,
    opts: BindOptions,
) -> Result<Vec<f32>, BindError> {
    let mut packed = vec![0f32; packed_len];
    fold_each(ckpt, convs, opts, |i, w, b| {
        let c = &convs[i];
        c.spec.pack(
            w,
            Some(b),
            &mut packed[c.packed_offset..c.packed_offset + c.spec.packed_len()],
        );
    })?;
    Ok(packed)
}

/// Loads the checkpoint at `path` (any supported format) and packs it, see [`pack_weights`].
pub fn load_packed(
    path: &Path,
    convs: &[ConvParams<'_>],
    packed_len: usize,
    opts: BindOptions,
) -> Result<Vec<f32>, LoadError> {
    let ckpt = weights::load(path)?;
    Ok(pack_weights(&ckpt, convs, packed_len, opts)?)
}

/// A caller's working memory for one model: the activation arena, per-thread scratch and
/// the thread pool. Create one per calling thread, once; `run` then allocates nothing.
#[derive(Debug)]
pub struct Scratch {
    /// Activations, at the plan's static offsets.
    pub arena: Vec<f32>,
    /// Winograd tiles, `threads ×` the per-thread need.
    pub tiles: Vec<f32>,
    /// Thread pool and instruction set.
    pub ctx: Ctx,
}

impl Scratch {
    /// Working memory for a model with the given arena and per-thread scratch sizes.
    pub fn new(arena_len: usize, scratch_per_thread: usize, threads: usize) -> Scratch {
        let ctx = Ctx::new(threads.max(1));
        Scratch {
            arena: vec![0.0; arena_len],
            tiles: vec![0.0; scratch_per_thread * ctx.threads()],
            ctx,
        }
    }
}

/// A run was called with buffers of the wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The input slice has the wrong length.
    #[error("input has {actual} elements, the network takes {expected:?} = {} elements", expected.iter().product::<usize>())]
    Input {
        /// NCHW shape the network takes.
        expected: [usize; 4],
        /// Elements given.
        actual: usize,
    },
    /// The output slice has the wrong length.
    #[error("output has room for {actual} elements, the network makes {expected:?} = {} elements", expected.iter().product::<usize>())]
    Output {
        /// NCHW shape the network makes.
        expected: [usize; 4],
        /// Elements given.
        actual: usize,
    },
    /// The scratch was made for another model.
    #[error("the scratch was made for another model (arena of {actual} floats, this model needs {expected})")]
    Scratch {
        /// Floats needed.
        expected: usize,
        /// Floats present.
        actual: usize,
    },
}

/// Checks a run's buffers against what a model was compiled for: the input (`x`) and every
/// output (lengths `ys`, paired with `outputs` in order) have the network's NCHW sizes, and
/// the scratch has the model's arena and enough Winograd scratch for its thread count. Every
/// engine calls this before running (generated code, the plan executor, the JIT).
pub fn check_buffers(
    input: [usize; 4],
    outputs: impl IntoIterator<Item = [usize; 4]>,
    arena_len: usize,
    tiles_per_thread: usize,
    x: &[f32],
    ys: impl IntoIterator<Item = usize>,
    scratch: &Scratch,
) -> Result<(), RunError> {
    if x.len() != input.iter().product::<usize>() {
        return Err(RunError::Input {
            expected: input,
            actual: x.len(),
        });
    }
    for (actual, expected) in ys.into_iter().zip(outputs) {
        if actual != expected.iter().product::<usize>() {
            return Err(RunError::Output { expected, actual });
        }
    }
    if scratch.arena.len() != arena_len {
        return Err(RunError::Scratch {
            expected: arena_len,
            actual: scratch.arena.len(),
        });
    }
    let tiles = tiles_per_thread * scratch.ctx.threads();
    if scratch.tiles.len() < tiles {
        return Err(RunError::Scratch {
            expected: tiles,
            actual: scratch.tiles.len(),
        });
    }
    Ok(())
}

/// Splits `arena` into a shared view of `src` and a mutable view of `dst`.
///
/// # Panics
/// If the ranges overlap or leave the arena (a plan bug).
pub fn split2(arena: &mut [f32], src: Range<usize>, dst: Range<usize>) -> (&[f32], &mut [f32]) {
    assert!(
        src.end <= arena.len()
            && dst.end <= arena.len()
            && src.start <= src.end
            && dst.start <= dst.end
    );
    assert!(
        src.end <= dst.start || dst.end <= src.start,
        "split2: overlapping ranges"
    );
    let p = arena.as_mut_ptr();
    // SAFETY: both ranges lie inside `arena` and do not overlap, so one shared and one
    // mutable borrow of them cannot alias; both live no longer than the borrow of `arena`.
    unsafe {
        (
            std::slice::from_raw_parts(p.add(src.start), src.len()),
            std::slice::from_raw_parts_mut(p.add(dst.start), dst.len()),
        )
    }
}

/// Splits `arena` into shared views of `a` and `b` (which may overlap each other) and a
/// mutable view of `dst`.
///
/// # Panics
/// If `dst` overlaps `a` or `b`, or a range leaves the arena (a plan bug).
pub fn split3(
    arena: &mut [f32],
    a: Range<usize>,
    b: Range<usize>,
    dst: Range<usize>,
) -> (&[f32], &[f32], &mut [f32]) {
    for r in [&a, &b, &dst] {
        assert!(r.start <= r.end && r.end <= arena.len());
    }
    for r in [&a, &b] {
        assert!(
            r.end <= dst.start || dst.end <= r.start,
            "split3: overlapping ranges"
        );
    }
    let p = arena.as_mut_ptr();
    // SAFETY: all ranges lie inside `arena`; `dst` overlaps neither shared view, so the one
    // mutable borrow aliases nothing; all live no longer than the borrow of `arena`.
    unsafe {
        (
            std::slice::from_raw_parts(p.add(a.start), a.len()),
            std::slice::from_raw_parts(p.add(b.start), b.len()),
            std::slice::from_raw_parts_mut(p.add(dst.start), dst.len()),
        )
    }
}

/// Splits `arena` into shared views of `a`, `b` and `c` (which may overlap each other) and a
/// mutable view of `dst`.
///
/// # Panics
/// If `dst` overlaps `a`, `b` or `c`, or a range leaves the arena (a plan bug).
pub fn split4(
    arena: &mut [f32],
    a: Range<usize>,
    b: Range<usize>,
    c: Range<usize>,
    dst: Range<usize>,
) -> (&[f32], &[f32], &[f32], &mut [f32]) {
    for r in [&a, &b, &c, &dst] {
        assert!(r.start <= r.end && r.end <= arena.len());
    }
    for r in [&a, &b, &c] {
        assert!(
            r.end <= dst.start || dst.end <= r.start,
            "split4: overlapping ranges"
        );
    }
    let p = arena.as_mut_ptr();
    // SAFETY: all ranges lie inside `arena`; `dst` overlaps no shared view, so the one
    // mutable borrow aliases nothing; all live no longer than the borrow of `arena`.
    unsafe {
        (
            std::slice::from_raw_parts(p.add(a.start), a.len()),
            std::slice::from_raw_parts(p.add(b.start), b.len()),
            std::slice::from_raw_parts(p.add(c.start), c.len()),
            std::slice::from_raw_parts_mut(p.add(dst.start), dst.len()),
        )
    }
}
