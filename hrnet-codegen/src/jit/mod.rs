//! The cranelift JIT engine (`hrnetc run/bench --engine jit`): renders a [`Plan`] straight to
//! machine code at load time, no rustc involved.
//!
//! [`JitModel::compile`] walks the plan's steps and generates, as cranelift IR, one function per
//! distinct kernel shape (`gen`: direct convolutions with f32x4 FMA, register blocking and
//! the fused epilogue, the exchange units' adds, copies, halo zeroing and the NCHW
//! conversions), compiles them with the host's ISA flags (FMA enabled when the CPU has it:
//! without it every `fma` would be a library call) and keeps one resolved call per step. The
//! plan's decisions are kept as they are: activation layout, arena offsets, step order, fused
//! epilogues, in-place updates, and — for a plan made for [`Target::jit`] — each
//! convolution's algorithm (direct, or Winograd F(4×4, 3×3) / F(2×2, 3×3), `wino`) and its
//! packed offset. The JIT renders the plan's [`Packing::JitBlocks`] layout (`pack`): one
//! contiguous run of weights per 16-channel output block.
//!
//! [`Target::jit`]: crate::target::Target::jit
//!
//! [`JitModel::run`] checks the caller's buffers, then executes the calls: each generated
//! function handles one task (a channel block, an output block × a range of rows, or a group
//! of Winograd tiles × a range of output blocks) and the tasks of a step are spread over the
//! scratch's thread pool. Nothing is allocated per run;
//! the only Rust on the hot path is this dispatch loop.

mod engine;
mod gen;
mod pack;
mod wino;

pub use engine::{JitEngine, JitEngineError};

use crate::plan::{Addend, ConvLayer, Plan, PlanValue, Step};
use crate::target::Packing;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use gen::{ConvKernel, Kernel, KernelFn, Target};
use hrnet_ir::ir::Shape;
use hrnet_runtime::kernels::{ActShape, Algo};
use hrnet_runtime::model::{ConvParams, RunError, Scratch};
use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Aim for at least this many tasks per convolution (both cores busy, dynamic balance).
const TASKS_PER_CONV: usize = 16;

/// Why a plan could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// This host cannot run the JIT (no cranelift back end for it).
    #[error("the JIT does not support this host: {0}")]
    Host(String),
    /// The plan is inconsistent (a compiler bug upstream of the JIT).
    #[error("internal error: invalid plan: {0}")]
    Plan(String),
    /// Cranelift rejected the generated code (a bug in the JIT; the verifier's message when
    /// it is on).
    #[error("internal error: cranelift: {0}")]
    Codegen(String),
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum JitRunError {
    /// Input, output or scratch of the wrong size.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The weights were not packed by this model's [`JitModel::pack`].
    #[error("the packed weights have {actual} floats, this model needs {expected} (pack them with JitModel::pack)")]
    Weights {
        /// Floats needed.
        expected: usize,
        /// Floats given.
        actual: usize,
    },
}

/// How to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitOptions {
    /// Run cranelift's IR verifier on every function (a bug detector; costs compile time).
    pub verify: bool,
}

impl Default for JitOptions {
    /// The verifier on in debug builds (and so in tests), off in release builds.
    fn default() -> Self {
        JitOptions {
            verify: cfg!(debug_assertions),
        }
    }
}

/// What compiling produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitStats {
    /// Distinct generated functions.
    pub functions: usize,
    /// Bytes of machine code.
    pub code_bytes: usize,
    /// Kernel calls per run (plan steps, plus halo zeroing before fresh conv outputs).
    pub calls: usize,
    /// Whether `fma` is a native instruction on this host (otherwise `fmul` + `fadd`).
    pub fma: bool,
    /// Wall time of [`JitModel::compile`].
    pub compile_time: Duration,
}

/// Where a kernel argument points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ptr {
    /// Unused (0).
    Null,
    /// Arena, at this float offset.
    Arena(usize),
    /// The packed weights, at this float offset.
    Weights(usize),
    /// The caller's NCHW input.
    Input,
    /// The caller's NCHW output number `i`.
    Output(usize),
}

/// How a call's work is split into tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tasks {
    /// One task per channel block.
    Blocks(usize),
    /// `blocks × chunks` tasks: output block `t / chunks`, rows `rows · (t % chunks)..` (at most
    /// `rows` of them, clipped to `h`).
    Rows {
        blocks: usize,
        chunks: usize,
        rows: usize,
        h: usize,
    },
    /// `groups × ob_chunks` Winograd tasks (tile-row group `t / ob_chunks`, output-block
    /// chunk `t % ob_chunks`), each with its thread's scratch.
    Tiles { groups: usize, ob_chunks: usize },
}

/// One resolved call.
#[derive(Debug, Clone)]
enum Call {
    /// A generated function over its tasks.
    Jit {
        kernel: usize,
        args: [Ptr; 4],
        tasks: Tasks,
    },
    /// A head step run with hrnet-runtime's kernels (bilinear resizes, pooling, OCR's
    /// softmaxes: memory-bound, a few per network), as `exec` runs it.
    Native(Step),
}

/// A plan compiled to machine code. Create it once with [`JitModel::compile`], pack weights
/// with [`JitModel::pack`], make a [`Scratch`] per calling thread with [`JitModel::scratch`],
/// then [`JitModel::run`] as often as needed.
pub struct JitModel {
    /// Owns the executable memory `fns` point into (freed on drop).
    module: Option<JITModule>,
    fns: Vec<KernelFn>,
    calls: Vec<Call>,
    input: Shape,
    outputs: Vec<Shape>,
    arena_len: usize,
    /// Winograd and head scratch floats per thread.
    scratch_per_thread: usize,
    /// The plan's values (where the native head steps find their buffers).
    values: Vec<PlanValue>,
    /// Every conv, for binding.
    convs: Vec<ConvLayer>,
    jit_convs: Vec<pack::JitConv>,
    packed_len: usize,
    stats: JitStats,
}

// SAFETY: after `finalize_definitions` the module's code memory is immutable and only read
// (executed) through `fns`; the module itself is never used again except to free it in `drop`,
// which needs `&mut self` (so no other thread is running its code). The generated functions
// keep no state and touch only the buffers passed to them.
unsafe impl Send for JitModel {}
// SAFETY: as above: `&JitModel` gives access to immutable code and data only.
unsafe impl Sync for JitModel {}

impl std::fmt::Debug for JitModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitModel")
            .field("calls", &self.calls.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the function pointers into this memory live in `self.fns`, which is being
            // dropped; `&mut self` means no call is running.
            unsafe { m.free_memory() };
        }
    }
}

/// Incremental builder of the call list and the kernel set.
struct Compiler {
    kernels: Vec<Kernel>,
    ids: HashMap<Kernel, usize>,
    calls: Vec<Call>,
}

impl Compiler {
    fn kernel(&mut self, k: Kernel) -> usize {
        let n = self.kernels.len();
        *self.ids.entry(k).or_insert_with(|| {
            self.kernels.push(k);
            n
        })
    }

    fn call(&mut self, k: Kernel, args: [Ptr; 4], tasks: Tasks) {
        let kernel = self.kernel(k);
        self.calls.push(Call::Jit {
            kernel,
            args,
            tasks,
        });
    }
}

fn plan_err(i: usize, what: &str) -> JitError {
    JitError::Plan(format!("step {i}: {what}"))
}

fn act(s: Shape) -> ActShape {
    ActShape::new(s.c, s.h, s.w)
}

impl JitModel {
    /// Compiles `plan` with the default [`JitOptions`].
    pub fn compile(plan: &Plan) -> Result<JitModel, JitError> {
        JitModel::compile_with(plan, JitOptions::default())
    }

    /// Compiles `plan` to machine code for this host.
    pub fn compile_with(plan: &Plan, opts: JitOptions) -> Result<JitModel, JitError> {
        let t0 = Instant::now();
        plan.check().map_err(JitError::Plan)?;
        if plan.packing() != Packing::JitBlocks {
            return Err(JitError::Plan(format!(
                "planned for {:?} kernels: the JIT renders plans made for Target::jit()",
                plan.target.kernels
            )));
        }
        let jit_convs = plan
            .convs
            .iter()
            .map(|c| {
                let winograd = match c.spec.algo() {
                    Algo::Direct => None,
                    Algo::Winograd2 => Some(2),
                    Algo::Winograd4 => Some(4),
                    a => {
                        return Err(JitError::Plan(format!(
                            "conv `{}`: the JIT has no {a:?} kernel",
                            c.key
                        )))
                    }
                };
                Ok(pack::JitConv {
                    spec: c.spec,
                    offset: c.packed_offset,
                    winograd,
                })
            })
            .collect::<Result<Vec<_>, JitError>>()?;
        let packed_len = plan.packed_len;
        let mut scratch_per_thread = plan.head_scratch;
        let mut c = Compiler {
            kernels: Vec::new(),
            ids: HashMap::new(),
            calls: Vec::new(),
        };
        let v = |id: usize| &plan.values[id];
        let a = |id: usize| Ptr::Arena(plan.values[id].offset);
        for (i, step) in plan.steps.iter().enumerate() {
            match *step {
                Step::Input { dst } => {
                    let shape = v(dst).shape;
                    if shape != act(plan.input) {
                        return Err(plan_err(i, "input value does not have the input's shape"));
                    }
                    c.call(
                        Kernel::Input { shape },
                        [Ptr::Input, Ptr::Null, a(dst), Ptr::Null],
                        Tasks::Blocks(shape.blocks()),
                    );
                }
                Step::Conv {
                    layer,
                    src,
                    dst,
                    add,
                    upsample_log2,
                    relu,
                    ..
                } => {
                    let l = plan
                        .convs
                        .get(layer)
                        .ok_or_else(|| plan_err(i, "no such conv layer"))?;
                    let s = l.spec;
                    let ck = ConvKernel {
                        cin: s.cin(),
                        cout: s.cout(),
                        h_in: s.h_in(),
                        w_in: s.w_in(),
                        k: s.k(),
                        stride: s.stride(),
                        pad: s.pad(),
                        add: add != Addend::None,
                        up: upsample_log2,
                        relu,
                    };
                    let out = ck.out_shape();
                    let res = match add {
                        Addend::None => Ptr::Null,
                        Addend::InPlace => a(dst),
                        Addend::Value(r) => {
                            if v(r).shape != out {
                                return Err(plan_err(i, "addend shape"));
                            }
                            a(r)
                        }
                    };
                    if add != Addend::InPlace {
                        c.call(
                            Kernel::ZeroHalo { shape: out },
                            [Ptr::Null, Ptr::Null, a(dst), Ptr::Null],
                            Tasks::Blocks(out.blocks()),
                        );
                    }
                    let h = ck.h_out();
                    let args = [a(src), Ptr::Weights(l.packed_offset), a(dst), res];
                    if let Some(m) = jit_convs[layer].winograd {
                        scratch_per_thread =
                            scratch_per_thread.max(wino::scratch_per_thread(&ck, m));
                        let sp = wino::split(&ck, m);
                        let tasks = Tasks::Tiles {
                            groups: sp.groups,
                            ob_chunks: sp.ob_chunks,
                        };
                        c.call(Kernel::Wino(ck, m), args, tasks);
                    } else {
                        let blocks = out.blocks();
                        let chunks = TASKS_PER_CONV.div_ceil(blocks).clamp(1, h);
                        let rows = h.div_ceil(chunks);
                        let chunks = h.div_ceil(rows);
                        let tasks = Tasks::Rows {
                            blocks,
                            chunks,
                            rows,
                            h,
                        };
                        c.call(Kernel::Conv(ck), args, tasks);
                    }
                }
                Step::Add {
                    a: x,
                    b: y,
                    dst,
                    relu,
                } => {
                    let shape = v(dst).shape;
                    if v(x).shape != shape || v(y).shape != shape {
                        return Err(plan_err(i, "add operand shapes"));
                    }
                    c.call(
                        Kernel::Add { shape, relu },
                        [a(x), a(y), a(dst), Ptr::Null],
                        Tasks::Blocks(shape.blocks()),
                    );
                }
                Step::AddUpsampled {
                    low,
                    dst,
                    log2,
                    relu,
                    ..
                } => {
                    let shape = v(dst).shape;
                    let f = 1usize.checked_shl(log2).unwrap_or(0);
                    if f == 0
                        || log2 >= 16
                        || shape.h() % f != 0
                        || shape.w() % f != 0
                        || v(low).shape != ActShape::new(shape.c(), shape.h() / f, shape.w() / f)
                    {
                        return Err(plan_err(i, "upsampled add shapes"));
                    }
                    c.call(
                        Kernel::AddUp { shape, log2, relu },
                        [a(dst), a(low), Ptr::Null, Ptr::Null],
                        Tasks::Blocks(shape.blocks()),
                    );
                }
                Step::Copy { src, dst } => {
                    let shape = v(dst).shape;
                    if v(src).shape != shape {
                        return Err(plan_err(i, "copy shapes"));
                    }
                    c.call(
                        Kernel::Copy { shape },
                        [a(src), Ptr::Null, a(dst), Ptr::Null],
                        Tasks::Blocks(shape.blocks()),
                    );
                }
                Step::AddResized { .. }
                | Step::Resize { .. }
                | Step::GlobalAvgPool { .. }
                | Step::SpatialGather { .. }
                | Step::ObjectAttention { .. } => c.calls.push(Call::Native(step.clone())),
                Step::Output { src, index } => {
                    let shape = v(src).shape;
                    match plan.outputs.get(index) {
                        Some(&o) if act(o) == shape => {}
                        _ => return Err(plan_err(i, "output shape")),
                    }
                    c.call(
                        Kernel::Output { shape },
                        [a(src), Ptr::Null, Ptr::Output(index), Ptr::Null],
                        Tasks::Blocks(shape.blocks()),
                    );
                }
            }
        }

        let (module, fns, code_bytes, fma) = codegen(&c.kernels, opts)?;
        let stats = JitStats {
            functions: fns.len(),
            code_bytes,
            calls: c.calls.len(),
            fma,
            compile_time: t0.elapsed(),
        };
        Ok(JitModel {
            module: Some(module),
            fns,
            calls: c.calls,
            input: plan.input,
            outputs: plan.outputs.clone(),
            arena_len: plan.arena_len,
            scratch_per_thread,
            values: plan.values.clone(),
            convs: plan.convs.clone(),
            jit_convs,
            packed_len,
            stats,
        })
    }

    /// Binds `ckpt` strictly (unless `opts` says otherwise), folds BatchNorm (in f64) and
    /// packs the weights in the layout the generated kernels read.
    pub fn pack(&self, ckpt: &Checkpoint, opts: BindOptions) -> Result<Vec<f32>, BindError> {
        let params: Vec<ConvParams<'_>> = self.convs.iter().map(ConvLayer::params).collect();
        pack::pack(ckpt, &params, &self.jit_convs, self.packed_len, opts)
    }

    /// Working memory for running with `threads` threads (the caller included).
    pub fn scratch(&self, threads: usize) -> Scratch {
        Scratch::new(self.arena_len, self.scratch_per_thread, threads)
    }

    /// Working memory for [`hrnet_runtime::model::run_batch`] of this model on `threads`
    /// threads (one arena per thread).
    pub fn batch_scratch(&self, threads: usize) -> hrnet_runtime::model::BatchScratch {
        hrnet_runtime::model::BatchScratch::new(self.arena_len, self.scratch_per_thread, threads)
    }

    /// Input shape (NCHW, batch 1).
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Output shapes (NCHW, batch 1).
    pub fn output_shapes(&self) -> &[Shape] {
        &self.outputs
    }

    /// What compiling produced and how long it took.
    pub fn compile_stats(&self) -> JitStats {
        self.stats
    }

    /// Runs the model on `input` (NCHW) into `outputs` (NCHW, one slice per output; extra
    /// outputs the plan does not make are left alone, missing ones are not written) with
    /// weights from [`JitModel::pack`]. Allocates nothing.
    pub fn run(
        &self,
        packed: &[f32],
        input: &[f32],
        outputs: &mut [&mut [f32]],
        scratch: &mut Scratch,
    ) -> Result<(), JitRunError> {
        crate::plan::check_buffers(
            self.input,
            &self.outputs,
            self.arena_len,
            self.scratch_per_thread,
            input,
            outputs,
            scratch,
        )?;
        if packed.len() != self.packed_len {
            return Err(JitRunError::Weights {
                expected: self.packed_len,
                actual: packed.len(),
            });
        }
        let weights = packed.as_ptr() as usize;
        let inp = input.as_ptr() as usize;
        let per_thread = self.scratch_per_thread * 4;
        let Scratch {
            arena: arena_buf,
            tiles: tiles_buf,
            ctx,
        } = scratch;
        for call in &self.calls {
            let (kernel, call_args, tasks) = match call {
                Call::Jit {
                    kernel,
                    args,
                    tasks,
                } => (*kernel, *args, *tasks),
                Call::Native(step) => {
                    crate::exec::head_step(&self.values, step, arena_buf, tiles_buf, ctx);
                    continue;
                }
            };
            let arena = arena_buf.as_mut_ptr() as usize;
            let tiles = tiles_buf.as_mut_ptr() as usize;
            let pool = ctx.pool();
            let mut args = [0usize; 4];
            let mut skip = false;
            for (slot, p) in args.iter_mut().zip(call_args) {
                *slot = match p {
                    Ptr::Null => 0,
                    Ptr::Arena(o) => arena + o * 4,
                    Ptr::Weights(o) => weights + o * 4,
                    Ptr::Input => inp,
                    Ptr::Output(k) => match outputs.get_mut(k) {
                        Some(o) => o.as_mut_ptr() as usize,
                        None => {
                            skip = true;
                            0
                        }
                    },
                };
            }
            if skip {
                continue;
            }
            let f = self.fns[kernel];
            let [a, b, c, d] = args;
            match tasks {
                Tasks::Blocks(n) => pool.run(n, &|t, _| {
                    // SAFETY: `compile` checked every step's shapes against the plan (whose
                    // own check puts every value inside the arena), and the lengths of input,
                    // outputs, arena and weights were checked above; each task writes only its
                    // own channel block.
                    unsafe { f(a, b, c, d, t, 0, 0) }
                }),
                Tasks::Rows {
                    blocks,
                    chunks,
                    rows,
                    h,
                } => pool.run(blocks * chunks, &|t, _| {
                    let (ob, r0) = (t / chunks, (t % chunks) * rows);
                    // SAFETY: as above; each task writes only rows `r0..r1` of block `ob`.
                    unsafe { f(a, b, c, d, ob, r0, (r0 + rows).min(h)) }
                }),
                Tasks::Tiles { groups, ob_chunks } => pool.run(groups * ob_chunks, &|t, thread| {
                    let scr = tiles + thread * per_thread;
                    // SAFETY: as above; each task writes only its tile rows of its output
                    // blocks, and the scratch of the thread running it (`thread <
                    // threads`, the scratch length was checked above).
                    unsafe { f(a, b, c, d, t / ob_chunks, scr, t % ob_chunks) }
                }),
            }
        }
        Ok(())
    }
}

/// The host's ISA with the JIT's settings, and whether it has native FMA.
fn host_isa(opts: JitOptions) -> Result<(cranelift_codegen::isa::OwnedTargetIsa, bool), JitError> {
    let host = |e: &dyn std::fmt::Display| JitError::Host(e.to_string());
    let mut fb = settings::builder();
    // No e-graph optimization: the kernels are emitted already simplified and in the order
    // they should run. With `speed`, cranelift floats every pure instruction (the FMAs) to
    // its last use and leaves the loads in place, so all loads of an unrolled loop body come
    // first and spill (measured: 5× slower kernels).
    fb.set("opt_level", "none").map_err(|e| host(&e))?;
    fb.set(
        "enable_verifier",
        if opts.verify { "true" } else { "false" },
    )
    .map_err(|e| host(&e))?;
    let ib = cranelift_native::builder().map_err(|e| host(&e))?;
    let isa = ib.finish(settings::Flags::new(fb)).map_err(|e| host(&e))?;
    // x86-64 needs the `has_fma` flag (set by `cranelift_native` when the CPU has FMA);
    // aarch64's SIMD always has it.
    let fma = if cfg!(target_arch = "x86_64") {
        isa.isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
    } else {
        cfg!(target_arch = "aarch64")
    };
    Ok((isa, fma))
}

/// Compiles every kernel; returns the module, their entry points, the code size and FMA.
fn codegen(
    kernels: &[Kernel],
    opts: JitOptions,
) -> Result<(JITModule, Vec<KernelFn>, usize, bool), JitError> {
    let (isa, fma) = host_isa(opts)?;
    let target = Target {
        ptr: isa.pointer_type(),
        fma,
    };
    let frontend = isa.frontend_config();
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let sig = gen::signature(module.make_signature(), target.ptr);
    let cg = |e: &dyn std::fmt::Display| JitError::Codegen(e.to_string());
    let mut ctx = Context::new();
    let mut fctx = FunctionBuilderContext::new();
    let mut ids: Vec<FuncId> = Vec::with_capacity(kernels.len());
    let mut code_bytes = 0;
    for (n, k) in kernels.iter().enumerate() {
        let id = module
            .declare_function(&format!("hrnet_k{n}"), Linkage::Local, &sig)
            .map_err(|e| cg(&e))?;
        ctx.func.signature = sig.clone();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            gen::emit(&mut b, target, k);
            b.finalize(frontend);
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| JitError::Codegen(format!("{k:?}: {e:?}")))?;
        code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    module.finalize_definitions().map_err(|e| cg(&e))?;
    let fns = ids
        .into_iter()
        .map(|id| {
            let p = module.get_finalized_function(id);
            // SAFETY: `p` is the entry of a function compiled with `sig`: seven pointer-sized
            // integer parameters, no result, the host's default calling convention, which is
            // `extern "C"`'s.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    Ok((module, fns, code_bytes, fma))
}
