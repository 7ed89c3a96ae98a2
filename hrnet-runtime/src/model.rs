//! What a compiled model needs at load and run time, whatever engine compiled it: strict
//! binding of its parameters, BatchNorm folding and weight packing (once, at load), and the
//! per-caller working memory ([`Scratch`]) that makes inference allocation-free.

use crate::kernels::{Concat, ConvSpec, Ctx, Isa};
use crate::weights::{self, BindError, BindOptions, Checkpoint, TensorSpec, WeightError};
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

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

/// Working memory for running many inputs at once ([`run_batch`]): a [`Scratch`] whose pool
/// runs one input on all its threads, and one single-thread [`Scratch`] per pool thread, so
/// that whole inputs run side by side. Make it once; [`run_batch`] then allocates nothing.
#[derive(Debug)]
pub struct BatchScratch {
    /// The batch-1 path's scratch (intra-conv splitting over all threads); its pool also hands
    /// whole inputs to threads.
    wide: Scratch,
    /// Per pool thread (index = the pool's thread index), a one-thread context. Thread 0 (the
    /// caller) owns no arena or tiles: it borrows `wide`'s for the length of a batch.
    per_thread: Vec<Mutex<Scratch>>,
}

impl BatchScratch {
    /// Working memory for a model with the given arena and per-thread scratch sizes, on
    /// `threads` threads (0 is taken as 1) and [`Isa::active`](crate::kernels::Isa::active).
    pub fn new(arena_len: usize, scratch_per_thread: usize, threads: usize) -> BatchScratch {
        let wide = Scratch::new(arena_len, scratch_per_thread, threads);
        BatchScratch::around(wide, arena_len, scratch_per_thread, Isa::active())
    }

    /// As [`BatchScratch::new`], with an explicit instruction set.
    ///
    /// # Panics
    /// If this CPU cannot run `isa`.
    pub fn with_isa(
        arena_len: usize,
        scratch_per_thread: usize,
        threads: usize,
        isa: Isa,
    ) -> BatchScratch {
        let threads = threads.max(1);
        let wide = Scratch {
            arena: vec![0.0; arena_len],
            tiles: vec![0.0; scratch_per_thread * threads],
            ctx: Ctx::with_isa(threads, isa),
        };
        BatchScratch::around(wide, arena_len, scratch_per_thread, isa)
    }

    /// A batch scratch around `scratch` (made for a model with these arena and per-thread
    /// scratch sizes), which becomes its batch-1 scratch: adds one arena per extra thread.
    pub fn from_scratch(
        scratch: Scratch,
        arena_len: usize,
        scratch_per_thread: usize,
    ) -> BatchScratch {
        let isa = scratch.ctx.isa();
        BatchScratch::around(scratch, arena_len, scratch_per_thread, isa)
    }

    fn around(wide: Scratch, arena_len: usize, tiles: usize, isa: Isa) -> BatchScratch {
        let per_thread = (0..wide.ctx.threads())
            .map(|t| {
                let (arena, tiles) = match t {
                    0 => (Vec::new(), Vec::new()),
                    _ => (vec![0.0; arena_len], vec![0.0; tiles]),
                };
                Mutex::new(Scratch {
                    arena,
                    tiles,
                    ctx: Ctx::with_isa(1, isa),
                })
            })
            .collect();
        BatchScratch { wide, per_thread }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.wide.ctx.threads()
    }

    /// The scratch of the batch-1 path (all threads on one input), for a model's `run`.
    pub fn single(&mut self) -> &mut Scratch {
        &mut self.wide
    }
}

/// Runs a model on every input of a batch: `run(inputs[i], outputs[i], scratch)` for every
/// `i`, where `run` is the model's batch-1 run and `input`/`output` its NCHW shapes.
///
/// With one input or one thread, the inputs run one after the other, each conv split over all
/// threads. Otherwise whole inputs run side by side: the next input goes to the next free
/// thread of the pool, which runs it with its own arena and tiles and a one-thread context (no
/// fork-join between the convs of an input). The results are those of batch-1 runs bit for
/// bit: the kernels cut their work into tasks that do not depend on the thread count.
///
/// Errors (nothing runs then): no input, `inputs.len() != outputs.len()`, an input or output
/// of the wrong length (naming its index), a scratch made for another model. Allocates
/// nothing.
#[allow(clippy::too_many_arguments)]
pub fn run_batch<F>(
    input: [usize; 4],
    output: [usize; 4],
    arena_len: usize,
    tiles_per_thread: usize,
    inputs: &[&[f32]],
    outputs: &mut [&mut [f32]],
    scratch: &mut BatchScratch,
    run: F,
) -> Result<(), RunError>
where
    F: Fn(&[f32], &mut [f32], &mut Scratch) -> Result<(), RunError> + Sync,
{
    if inputs.is_empty() {
        return Err(RunError::EmptyBatch);
    }
    if inputs.len() != outputs.len() {
        return Err(RunError::BatchLength {
            inputs: inputs.len(),
            outputs: outputs.len(),
        });
    }
    let (x_len, y_len): (usize, usize) = (input.iter().product(), output.iter().product());
    for (index, x) in inputs.iter().enumerate() {
        if x.len() != x_len {
            return Err(RunError::BatchInput {
                index,
                expected: input,
                actual: x.len(),
            });
        }
    }
    for (index, y) in outputs.iter().enumerate() {
        if y.len() != y_len {
            return Err(RunError::BatchOutput {
                index,
                expected: output,
                actual: y.len(),
            });
        }
    }
    let BatchScratch { wide, per_thread } = scratch;
    check_buffers(input, [], arena_len, tiles_per_thread, inputs[0], [], wide)?;
    for s in per_thread.iter_mut().skip(1) {
        let s = s.get_mut().unwrap_or_else(PoisonError::into_inner);
        check_buffers(input, [], arena_len, tiles_per_thread, inputs[0], [], s)?;
    }
    let threads = wide.ctx.threads();
    if inputs.len() == 1 || threads == 1 {
        for (i, (x, y)) in inputs.iter().zip(outputs.iter_mut()).enumerate() {
            run(x, y, wide).map_err(|e| e.in_batch(i))?;
        }
        return Ok(());
    }
    let Scratch { arena, tiles, ctx } = wide;
    // Thread 0 is the caller: it runs its inputs in `wide`'s arena and tiles, lent for the
    // batch and given back on the way out (a panic included).
    let lent = Lend::new(arena, tiles, &per_thread[0]);
    // Each task takes its output out of `outputs` (leaving an empty slice) and puts it back:
    // the lock is held only for that, never while the network runs.
    let outputs = Mutex::new(outputs);
    let failed: Mutex<Option<(usize, RunError)>> = Mutex::new(None);
    ctx.pool().run(inputs.len(), &|i, thread| {
        let y = std::mem::take(&mut lock(&outputs)[i]);
        // Uncontended: the pool never runs two tasks at once with the same `thread`.
        let result = run(inputs[i], y, &mut lock(&per_thread[thread]));
        lock(&outputs)[i] = y;
        if let Err(e) = result {
            let mut f = lock(&failed);
            if f.as_ref().is_none_or(|(j, _)| i < *j) {
                *f = Some((i, e.in_batch(i)));
            }
        }
    });
    drop(lent);
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `wide`'s arena and tiles, moved into thread 0's scratch while it lives.
struct Lend<'a> {
    arena: &'a mut Vec<f32>,
    tiles: &'a mut Vec<f32>,
    to: &'a Mutex<Scratch>,
}

impl<'a> Lend<'a> {
    fn new(arena: &'a mut Vec<f32>, tiles: &'a mut Vec<f32>, to: &'a Mutex<Scratch>) -> Self {
        let mut lend = Lend { arena, tiles, to };
        lend.swap();
        lend
    }

    fn swap(&mut self) {
        let mut s = lock(self.to);
        std::mem::swap(self.arena, &mut s.arena);
        std::mem::swap(self.tiles, &mut s.tiles);
    }
}

impl Drop for Lend<'_> {
    fn drop(&mut self) {
        self.swap();
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
    /// A batch without inputs.
    #[error("the batch has no input")]
    EmptyBatch,
    /// A batch with a different number of inputs and outputs.
    #[error("the batch has {inputs} inputs but {outputs} outputs")]
    BatchLength {
        /// Inputs given.
        inputs: usize,
        /// Outputs given.
        outputs: usize,
    },
    /// An input of a batch has the wrong length.
    #[error("input {index} of the batch has {actual} elements, the network takes {expected:?} = {} elements", expected.iter().product::<usize>())]
    BatchInput {
        /// Its index in the batch.
        index: usize,
        /// NCHW shape the network takes.
        expected: [usize; 4],
        /// Elements given.
        actual: usize,
    },
    /// An output of a batch has the wrong length.
    #[error("output {index} of the batch has room for {actual} elements, the network makes {expected:?} = {} elements", expected.iter().product::<usize>())]
    BatchOutput {
        /// Its index in the batch.
        index: usize,
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

impl RunError {
    /// The error of input `index` of a batch: a wrong input or output length names the index.
    pub fn in_batch(self, index: usize) -> RunError {
        match self {
            RunError::Input { expected, actual } => RunError::BatchInput {
                index,
                expected,
                actual,
            },
            RunError::Output { expected, actual } => RunError::BatchOutput {
                index,
                expected,
                actual,
            },
            e => e,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{self, act_len, ActShape, Algo, Epilogue};

    const C: usize = 32;
    const H: usize = 20;
    const W: usize = 12;
    const SHAPE: [usize; 4] = [1, C, H, W];
    const ACT: usize = act_len(C, H, W);
    const WINO: ConvSpec = ConvSpec::new(C, C, H, W, 3, 1, 1).with_algo(Algo::Winograd4);
    const DIRECT: ConvSpec = ConvSpec::new(C, C, H, W, 3, 1, 1);

    /// A two-conv network (Winograd, small map: split over channel groups with 2 threads;
    /// then direct) at the arena's offsets `[0, ACT)`, `[ACT, 2 ACT)`.
    struct Tiny {
        packed: Vec<f32>,
    }

    impl Tiny {
        fn new() -> Tiny {
            let n = C * C * 9;
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 900.0)
                .collect();
            let b: Vec<f32> = (0..C).map(|i| i as f32 / 64.0 - 0.2).collect();
            let mut packed = vec![0.0; WINO.packed_len() + DIRECT.packed_len()];
            let (p0, p1) = packed.split_at_mut(WINO.packed_len());
            WINO.pack(&w, Some(&b), p0);
            DIRECT.pack(&w, Some(&b), p1);
            Tiny { packed }
        }

        fn tiles() -> usize {
            WINO.scratch_len(1).max(DIRECT.scratch_len(1))
        }

        fn run(&self, x: &[f32], y: &mut [f32], s: &mut Scratch) -> Result<(), RunError> {
            check_buffers(SHAPE, [SHAPE], 2 * ACT, Self::tiles(), x, [y.len()], s)?;
            let shape = ActShape::new(C, H, W);
            let Scratch { arena, tiles, ctx } = s;
            let (a, b) = arena.split_at_mut(ACT);
            let (p0, p1) = self.packed.split_at(WINO.packed_len());
            kernels::from_nchw(shape, x, a);
            kernels::conv(ctx, &WINO, a, p0, b, Epilogue::plain(true), tiles);
            kernels::conv(ctx, &DIRECT, b, p1, a, Epilogue::plain(false), tiles);
            kernels::to_nchw(shape, a, y);
            Ok(())
        }

        fn batch(
            &self,
            xs: &[&[f32]],
            ys: &mut [&mut [f32]],
            s: &mut BatchScratch,
        ) -> Result<(), RunError> {
            run_batch(
                SHAPE,
                SHAPE,
                2 * ACT,
                Self::tiles(),
                xs,
                ys,
                s,
                |x, y, s| self.run(x, y, s),
            )
        }
    }

    fn input(k: usize) -> Vec<f32> {
        (0..C * H * W)
            .map(|i| (((i * 7 + k * 13) % 29) as f32 - 14.0) / 10.0)
            .collect()
    }

    #[test]
    fn a_batch_equals_batch_1_runs_bit_for_bit() {
        let tiny = Tiny::new();
        let inputs: Vec<Vec<f32>> = (0..5).map(input).collect();
        let n_out = C * H * W;
        // Batch-1 references, at 1 and 2 threads: the same bits.
        let mut reference = vec![vec![0.0f32; n_out]; inputs.len()];
        for threads in [1, 2] {
            let mut s = Scratch::new(2 * ACT, Tiny::tiles(), threads);
            for (x, r) in inputs.iter().zip(&mut reference) {
                let mut y = vec![0.0; n_out];
                tiny.run(x, &mut y, &mut s).unwrap();
                if threads == 1 {
                    *r = y;
                } else {
                    assert!(y
                        .iter()
                        .zip(r.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
        assert!(reference[0] != reference[1]);
        for threads in [1, 2, 3] {
            let mut s = BatchScratch::new(2 * ACT, Tiny::tiles(), threads);
            for n in [1, 2, 3, 5] {
                let xs: Vec<&[f32]> = inputs[..n].iter().map(|x| &x[..]).collect();
                let mut outs = vec![vec![f32::NAN; n_out]; n];
                let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
                tiny.batch(&xs, &mut ys, &mut s).unwrap();
                for (i, (y, r)) in outs.iter().zip(&reference).enumerate() {
                    assert!(
                        y.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{threads} threads, batch of {n}: input {i} differs"
                    );
                }
            }
            // The batch-1 scratch is intact after batches.
            let mut y = vec![0.0; n_out];
            tiny.run(&inputs[4], &mut y, s.single()).unwrap();
            assert_eq!(y, reference[4]);
        }
    }

    #[test]
    fn bad_batches_are_errors_naming_the_index() {
        let tiny = Tiny::new();
        let mut s = BatchScratch::new(2 * ACT, Tiny::tiles(), 2);
        let x = input(0);
        let short = vec![0.0; 7];
        let mut y0 = vec![0.0; C * H * W];
        let mut y1 = vec![0.0; C * H * W];
        let mut bad = vec![0.0; 5];
        let r = tiny.batch(&[], &mut [], &mut s);
        assert_eq!(r, Err(RunError::EmptyBatch));
        let r = tiny.batch(&[&x, &x], &mut [&mut y0], &mut s);
        assert_eq!(
            r,
            Err(RunError::BatchLength {
                inputs: 2,
                outputs: 1
            })
        );
        let r = tiny.batch(&[&x, &short], &mut [&mut y0, &mut y1], &mut s);
        let e = r.unwrap_err();
        assert_eq!(
            e,
            RunError::BatchInput {
                index: 1,
                expected: SHAPE,
                actual: 7
            }
        );
        assert!(
            e.to_string()
                .contains("input 1 of the batch has 7 elements"),
            "{e}"
        );
        let r = tiny.batch(&[&x, &x], &mut [&mut y0, &mut bad], &mut s);
        assert_eq!(
            r,
            Err(RunError::BatchOutput {
                index: 1,
                expected: SHAPE,
                actual: 5
            })
        );
        // A failing run: the error of the first failing input, naming it, at 1 and 2 threads.
        let marked: Vec<Vec<f32>> = (0..5)
            .map(|k| {
                let mut x = input(k);
                x[0] = k as f32;
                x
            })
            .collect();
        let xs: Vec<&[f32]> = marked.iter().map(|x| &x[..]).collect();
        for threads in [1, 2] {
            let mut s = BatchScratch::new(2 * ACT, Tiny::tiles(), threads);
            let mut outs = vec![vec![0f32; C * H * W]; 5];
            let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
            let r = run_batch(
                SHAPE,
                SHAPE,
                2 * ACT,
                Tiny::tiles(),
                &xs,
                &mut ys,
                &mut s,
                |x, y, s| match x[0] as usize {
                    k if k >= 2 => Err(RunError::Input {
                        expected: SHAPE,
                        actual: k,
                    }),
                    _ => tiny.run(x, y, s),
                },
            );
            let want = RunError::BatchInput {
                index: 2,
                expected: SHAPE,
                actual: 2,
            };
            assert_eq!(r, Err(want), "{threads} threads");
            // Every output slice is back in place.
            assert!(ys.iter().all(|y| y.len() == C * H * W));
        }
        // A scratch made for another model.
        let mut other = BatchScratch::new(ACT, Tiny::tiles(), 2);
        let r = tiny.batch(&[&x, &x], &mut [&mut y0, &mut y1], &mut other);
        assert!(matches!(r, Err(RunError::Scratch { .. })), "{r:?}");
    }
}
