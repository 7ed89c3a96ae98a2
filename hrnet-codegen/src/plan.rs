//! The low-level plan: the optimized IR lowered to a list of kernel calls with shapes,
//! buffers, epilogues and packed-weight offsets.
//!
//! Every decision the compiled engines share is made here, once, for a [`Target`]: the
//! activation layout (hrnet-runtime's blocked `[C/16][H+2][W+2][16]`), the algorithm of each
//! convolution (Winograd with its tile size, or direct: [`Target::conv_algo`]), the weight
//! packing ([`Target::packing`]) and every packed offset, whether a step updates a buffer in
//! place, and the arena offset of every value. The Rust emitter, `exec` and the JIT only
//! *render* a [`Plan`]; none of them decides anything.
//!
//! In-place rules: a convolution's residual, and the accumulator of an exchange unit's
//! upsample-add, is updated in place when this step is its last reader and it does not share
//! storage with the convolution's input; otherwise the step writes a fresh buffer. Fusions
//! are the IR passes' (the exchange unit's `j > i` path arrives as one conv with
//! `upsample > 1`, see `fuse_conv_add_resized`); the plan maps one IR node to its steps.

use crate::target::{Kernels, Packing, Target};
use hrnet_ir::ir::{FoldedBn, Graph, NodeId, Op, Resize, Shape};
use hrnet_runtime::kernels::head::{object_attention_scratch_len, spatial_gather_scratch_len};
use hrnet_runtime::kernels::{ActShape, Algo, Concat, ConvSpec};
use std::collections::HashMap;

/// Index of a [`PlanValue`].
pub type ValueId = usize;

/// One activation tensor in the blocked layout. Values written in place share the storage
/// (and offset) of the value they update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanValue {
    /// Shape (the layout adds channel padding and a halo).
    pub shape: ActShape,
    /// Offset in the arena, in floats (a multiple of 16).
    pub offset: usize,
    /// Storage group: values with the same storage are one buffer updated in place.
    pub storage: usize,
    /// Offset inside the storage, in floats: non-zero for a part of a concatenation buffer
    /// (see [`hrnet_runtime::kernels::Concat`]), which lives inside the buffer's storage.
    pub sub: usize,
}

impl PlanValue {
    /// Length in floats.
    pub fn len(&self) -> usize {
        self.shape.len()
    }

    /// Whether the value is empty (never, in a valid plan).
    pub fn is_empty(&self) -> bool {
        self.shape.len() == 0
    }
}

/// The parameters of one convolution and where its packed form lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLayer {
    /// Official weight-key prefix (`stage2.0.branches.0.0.conv1`).
    pub key: String,
    /// Identifier-friendly name from the IR's place (`stage2_m0_b0_block0_conv1`).
    pub label: String,
    /// Whether the checkpoint has `<key>.bias`.
    pub bias: bool,
    /// The folded BatchNorm.
    pub bn: Option<FoldedBn>,
    /// Shapes and algorithm (the target's choice).
    pub spec: ConvSpec,
    /// Offset of the packed weights in the model's weight buffer, in floats.
    pub packed_offset: usize,
    /// The layer is an `nn.Linear` (a classifier, weight `[out, in]`) run as a 1×1
    /// convolution on a 1×1 map.
    pub linear: bool,
    /// The conv reads a part-padded concatenation buffer (`spec.cin()` is the buffer's
    /// channels; the loader spreads the checkpoint's logical channels over them).
    pub concat: Option<Concat>,
}

/// What a convolution adds before its ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addend {
    /// Nothing.
    None,
    /// This value (same shape as the output), read out of place.
    Value(ValueId),
    /// The output buffer's previous content (the step updates a buffer in place).
    InPlace,
}

/// One kernel call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Copy the caller's NCHW input into `dst`.
    Input {
        /// Destination.
        dst: ValueId,
    },
    /// `dst = relu?(addend + up(conv(src)))`.
    Conv {
        /// Index into [`Plan::convs`].
        layer: usize,
        /// Input.
        src: ValueId,
        /// Output (for [`Addend::InPlace`], a value sharing storage with the accumulator).
        dst: ValueId,
        /// What is added.
        add: Addend,
        /// The value updated in place, for [`Addend::InPlace`].
        acc: Option<ValueId>,
        /// Nearest upsampling of the conv result by 2^k before the add.
        upsample_log2: u32,
        /// ReLU last.
        relu: bool,
    },
    /// `dst = relu?(a + b)`.
    Add {
        /// First operand.
        a: ValueId,
        /// Second operand.
        b: ValueId,
        /// Output.
        dst: ValueId,
        /// ReLU last.
        relu: bool,
    },
    /// `dst = relu?(acc + up(low))` in place: `dst` shares storage with `acc`.
    AddUpsampled {
        /// Accumulator, updated in place.
        acc: ValueId,
        /// Low-resolution operand.
        low: ValueId,
        /// The updated accumulator.
        dst: ValueId,
        /// log2 of the nearest upsampling factor.
        log2: u32,
        /// ReLU last.
        relu: bool,
    },
    /// `acc = relu?(acc + bilinear(low))` in place (the segmentation exchange unit):
    /// `dst` shares storage with `acc`.
    AddResized {
        /// Accumulator, updated in place.
        acc: ValueId,
        /// Lower-resolution operand, resized to `acc`'s size.
        low: ValueId,
        /// The updated accumulator.
        dst: ValueId,
        /// PyTorch's `align_corners`.
        align_corners: bool,
        /// ReLU last.
        relu: bool,
    },
    /// `dst = bilinear(src)` to `dst`'s size (halo and padding written as zeros).
    Resize {
        /// Source.
        src: ValueId,
        /// Destination (often a part of a concatenation buffer).
        dst: ValueId,
        /// PyTorch's `align_corners`.
        align_corners: bool,
    },
    /// `dst` (blocked `C × 1 × 1`) = the mean of every channel of `src`.
    GlobalAvgPool {
        /// Source.
        src: ValueId,
        /// Destination.
        dst: ValueId,
    },
    /// OCR's spatial gather: `dst` (`C × K × 1`) from `logits` (`K × H × W`) and `feats`
    /// (`C × H × W`); uses the thread scratch.
    SpatialGather {
        /// The auxiliary logits.
        logits: ValueId,
        /// The pixel features.
        feats: ValueId,
        /// Object-region features.
        dst: ValueId,
    },
    /// OCR's object attention: `dst` (`D × H × W`) from `query` (`D × H × W`), `key` and
    /// `value` (`D × K × 1`); uses the thread scratch.
    ObjectAttention {
        /// `f_pixel`'s output.
        query: ValueId,
        /// `f_object`'s output.
        key: ValueId,
        /// `f_down`'s output.
        value: ValueId,
        /// The attended context.
        dst: ValueId,
    },
    /// `dst = src`, so that a value still read later can be updated in place.
    Copy {
        /// Source.
        src: ValueId,
        /// Destination.
        dst: ValueId,
    },
    /// Copy `src` into the caller's NCHW output `index`.
    Output {
        /// Source.
        src: ValueId,
        /// Output number.
        index: usize,
    },
}

/// A whole network as kernel calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `MODEL.NAME`.
    pub name: String,
    /// What the plan was made for.
    pub target: Target,
    /// Input shape (NCHW, batch 1).
    pub input: Shape,
    /// Output shapes (NCHW, batch 1).
    pub outputs: Vec<Shape>,
    /// All activation values.
    pub values: Vec<PlanValue>,
    /// Kernel calls in order.
    pub steps: Vec<Step>,
    /// Convolution parameters in step order.
    pub convs: Vec<ConvLayer>,
    /// Arena length in floats.
    pub arena_len: usize,
    /// Scratch floats each thread needs (Winograd tiles; OCR's softmax buffers, which a
    /// step takes from the whole scratch of every thread).
    pub scratch_per_thread: usize,
    /// Scratch floats per thread the head steps ([`Step::SpatialGather`],
    /// [`Step::ObjectAttention`]) need, included in `scratch_per_thread`; each such step takes
    /// the scratch of every thread as one slice.
    pub head_scratch: usize,
    /// Total packed-weight floats.
    pub packed_len: usize,
    /// For each step: where in the network it belongs and what IR node it computes.
    pub notes: Vec<StepNote>,
}

/// Provenance of a step, for comments and function names in generated code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepNote {
    /// Section of the network: `stem`, `layer1`, `transition2`, `stage3_m0`, `head`.
    pub group: String,
    /// The IR node it computes, as the IR printer shows it.
    pub text: String,
}

/// Why a graph cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The graph uses something the compiled engines do not implement yet.
    #[error("{0}")]
    Unsupported(String),
    /// The graph was not optimized (an unfused BatchNorm, ReLU or resize): a compiler bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Offsets are multiples of this many floats (64 bytes).
const ALIGN_FLOATS: usize = 16;

/// Builds the plan of an optimized graph (after `--passes all`) for `target`.
pub fn plan(g: &Graph, target: &Target) -> Result<Plan, PlanError> {
    let order = g
        .schedule()
        .ok_or_else(|| PlanError::Internal("the graph has a cycle".into()))?;
    let mut b = Builder {
        g,
        target: *target,
        values: Vec::new(),
        steps: Vec::new(),
        notes: Vec::new(),
        convs: Vec::new(),
        of: HashMap::new(),
        at: HashMap::new(),
        created: Vec::new(),
        concat_of: HashMap::new(),
        head_scratch: 0,
    };
    let input = g.node(g.inputs()[0]).shape;
    let mut outputs = Vec::new();

    for (i, &n) in order.iter().enumerate() {
        b.at.insert(n, i);
    }

    for (step, &n) in order.iter().enumerate() {
        b.visit(n, step, &mut outputs)?;
        let node = g.node(n);
        let text = format!(
            "{}: {} : {}",
            node.name,
            hrnet_ir::print::op_text(&node.op),
            node.shape
        );
        while b.notes.len() < b.steps.len() {
            b.notes.push(StepNote {
                group: group_of(&node.place),
                text: text.clone(),
            });
        }
    }
    outputs.sort_by_key(|o| o.0);
    finish(b, input, outputs)
}

/// Name of the section a place belongs to.
fn group_of(p: &hrnet_ir::ir::Place) -> String {
    use hrnet_ir::ir::Place;
    match *p {
        Place::Stem => "stem".into(),
        Place::Layer1 { .. } => "layer1".into(),
        Place::Transition { stage, .. } => format!("transition{}", stage - 1),
        Place::Block { stage, module, .. } | Place::Fuse { stage, module, .. } => {
            format!("stage{stage}_m{module}")
        }
        Place::Head => "head".into(),
    }
}

impl Builder<'_> {
    /// Emits the steps of IR node `n`, which executes at schedule position `step`.
    fn visit(
        &mut self,
        n: NodeId,
        step: usize,
        outputs: &mut Vec<(usize, Shape)>,
    ) -> Result<(), PlanError> {
        let b = self;
        let g = b.g;
        let node = g.node(n);
        let ops = g.operands(n);
        match &node.op {
            Op::Input => {
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::Input { dst });
            }
            Op::Conv(c) => {
                let src = b.value(ops[0])?;
                let layer = b.layer(n, c)?;
                if !c.upsample.is_power_of_two() {
                    return Err(PlanError::Internal(format!(
                        "conv `{}` upsamples by {}, not a power of two",
                        node.name, c.upsample
                    )));
                }
                let upsample_log2 = c.upsample.trailing_zeros();
                let (dst, add, acc) = if !c.residual {
                    (b.fresh(n, node.shape), Addend::None, None)
                } else {
                    let r = b.value(ops[1])?;
                    if b.last_read(ops[1], step) && b.values[r].storage != b.values[src].storage {
                        (b.alias(n, r), Addend::InPlace, Some(r))
                    } else {
                        (b.fresh(n, node.shape), Addend::Value(r), None)
                    }
                };
                b.steps.push(Step::Conv {
                    layer,
                    src,
                    dst,
                    add,
                    acc,
                    upsample_log2,
                    relu: c.relu,
                });
            }
            Op::AddResized { resize, relu } => {
                let acc = b.value(ops[0])?;
                let acc_dies = b.last_read(ops[0], step);
                let low = b.value(ops[1])?;
                if b.values[low].shape.c() != b.values[acc].shape.c() {
                    return Err(PlanError::Internal(format!(
                        "add_resized `{}`: operands have different channels",
                        node.name
                    )));
                }
                if let Resize::Nearest { factor } = *resize {
                    if !factor.is_power_of_two() {
                        return Err(PlanError::Internal(format!(
                            "nearest factor {factor} is not a power of two"
                        )));
                    }
                }
                let acc = if acc_dies {
                    acc
                } else {
                    let copy = b.fresh_anon(b.values[acc].shape);
                    b.steps.push(Step::Copy {
                        src: acc,
                        dst: copy,
                    });
                    copy
                };
                let dst = b.alias(n, acc);
                b.steps.push(match *resize {
                    Resize::Nearest { factor } => Step::AddUpsampled {
                        acc,
                        low,
                        dst,
                        log2: factor.trailing_zeros(),
                        relu: *relu,
                    },
                    Resize::Bilinear { align_corners } => Step::AddResized {
                        acc,
                        low,
                        dst,
                        align_corners,
                        relu: *relu,
                    },
                });
            }
            Op::Resize(Resize::Bilinear { align_corners }) => {
                let src = b.value(ops[0])?;
                if b.values[src].shape.c() != node.shape.c {
                    return Err(PlanError::Internal(format!(
                        "resize `{}` changes the channel count",
                        node.name
                    )));
                }
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::Resize {
                    src,
                    dst,
                    align_corners: *align_corners,
                });
            }
            Op::Concat { .. } => b.concat(n, step)?,
            Op::GlobalAvgPool => {
                let src = b.value(ops[0])?;
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::GlobalAvgPool { src, dst });
            }
            Op::Linear {
                in_features,
                out_features,
            } => {
                let src = b.value(ops[0])?;
                if b.values[src].shape != ActShape::new(*in_features, 1, 1) {
                    return Err(PlanError::Internal(format!(
                        "linear `{}` reads a value that is not {in_features}x1x1",
                        node.name
                    )));
                }
                let layer = b.linear(n, *in_features, *out_features)?;
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::Conv {
                    layer,
                    src,
                    dst,
                    add: Addend::None,
                    acc: None,
                    upsample_log2: 0,
                    relu: false,
                });
            }
            Op::SpatialGather => {
                let (logits, feats) = (b.value(ops[0])?, b.value(ops[1])?);
                let (ls, fs) = (b.values[logits].shape, b.values[feats].shape);
                if ls.h() != fs.h() || ls.w() != fs.w() || ls.h() * ls.w() == 0 {
                    return Err(PlanError::Internal(format!(
                        "spatial_gather `{}`: logits {}x{} and features {}x{}",
                        node.name,
                        ls.h(),
                        ls.w(),
                        fs.h(),
                        fs.w()
                    )));
                }
                b.head_scratch =
                    b.head_scratch
                        .max(spatial_gather_scratch_len(ls.c(), ls.h(), ls.w(), 1));
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::SpatialGather { logits, feats, dst });
            }
            Op::ObjectAttention => {
                let (query, key, value) = (b.value(ops[0])?, b.value(ops[1])?, b.value(ops[2])?);
                let (qs, ks, vs) = (
                    b.values[query].shape,
                    b.values[key].shape,
                    b.values[value].shape,
                );
                if ks != vs || ks.c() != qs.c() || ks.w() != 1 || ks.h() == 0 {
                    return Err(PlanError::Unsupported(format!(
                        "object_attention `{}`: query {}, key {} and value {} channels must agree (KEY_CHANNELS)",
                        node.name,
                        qs.c(),
                        ks.c(),
                        vs.c()
                    )));
                }
                b.head_scratch =
                    b.head_scratch
                        .max(object_attention_scratch_len(qs.c(), ks.h(), 1));
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::ObjectAttention {
                    query,
                    key,
                    value,
                    dst,
                });
            }
            Op::Add { relu } => {
                let (a, bb) = (b.value(ops[0])?, b.value(ops[1])?);
                let dst = b.fresh(n, node.shape);
                b.steps.push(Step::Add {
                    a,
                    b: bb,
                    dst,
                    relu: *relu,
                });
            }
            Op::Output { index } => {
                let src = b.value(ops[0])?;
                outputs.push((*index, node.shape));
                b.steps.push(Step::Output { src, index: *index });
            }
            Op::BatchNorm(_) | Op::Relu | Op::Resize(Resize::Nearest { .. }) => {
                return Err(PlanError::Internal(format!(
                    "{} `{}` was not fused: plan only graphs that went through all passes",
                    node.op.mnemonic(),
                    node.name
                )));
            }
        }
        Ok(())
    }
}

fn finish(b: Builder<'_>, input: Shape, outputs: Vec<(usize, Shape)>) -> Result<Plan, PlanError> {
    let (arena_len, offsets) = allocate(&b.values, &b.steps);
    let mut values = b.values;
    for v in &mut values {
        v.offset = offsets[v.storage] + v.sub;
    }
    let scratch_per_thread = b
        .convs
        .iter()
        .map(|c| c.spec.scratch_len(1))
        .max()
        .unwrap_or(0)
        .max(b.head_scratch);
    let packed_len = b
        .convs
        .last()
        .map_or(0, |c| c.packed_offset + c.spec.packed_len());
    Ok(Plan {
        name: b.g.name.clone(),
        target: b.target,
        input,
        outputs: outputs.into_iter().map(|o| o.1).collect(),
        values,
        steps: b.steps,
        convs: b.convs,
        arena_len,
        scratch_per_thread,
        head_scratch: b.head_scratch,
        packed_len,
        notes: b.notes,
    })
}

struct Builder<'g> {
    g: &'g Graph,
    target: Target,
    values: Vec<PlanValue>,
    steps: Vec<Step>,
    notes: Vec<StepNote>,
    convs: Vec<ConvLayer>,
    /// The plan value holding each IR node's result.
    of: HashMap<NodeId, ValueId>,
    /// The position in the IR schedule at which each node executes.
    at: HashMap<NodeId, usize>,
    /// For each value: the number of steps planned when it was made (its first step).
    created: Vec<usize>,
    /// The concatenation buffers, by value (their storages are never merged into another).
    concat_of: HashMap<ValueId, Concat>,
    /// Scratch floats per thread the head steps need.
    head_scratch: usize,
}

impl Builder<'_> {
    fn fresh_anon(&mut self, shape: ActShape) -> ValueId {
        let id = self.values.len();
        self.values.push(PlanValue {
            shape,
            offset: 0,
            storage: id,
            sub: 0,
        });
        self.created.push(self.steps.len());
        id
    }

    fn fresh(&mut self, n: NodeId, s: Shape) -> ValueId {
        let id = self.fresh_anon(ActShape::new(s.c, s.h, s.w));
        self.of.insert(n, id);
        id
    }

    /// A value of `shape` at `sub` floats into `base`'s storage (a part of a concatenation).
    fn view(&mut self, base: ValueId, sub: usize, shape: ActShape) -> ValueId {
        let id = self.values.len();
        self.values.push(PlanValue {
            shape,
            offset: 0,
            storage: self.values[base].storage,
            sub: self.values[base].sub + sub,
        });
        self.created.push(self.steps.len());
        id
    }

    /// Plans IR node `n`, a channel concatenation executing at schedule position `step`:
    /// one part-padded buffer ([`Concat`]) whose parts are written in place by the steps that
    /// make them when that is safe (the part's storage starts no earlier than the first
    /// operand and the concatenation is its last reader: its storage then moves into the
    /// buffer), and copied into it otherwise (e.g. branch 0, whose storage has lived since
    /// the stem).
    fn concat(&mut self, n: NodeId, step: usize) -> Result<(), PlanError> {
        let g = self.g;
        let node = g.node(n);
        let ops = g.operands(n);
        let vals = ops
            .iter()
            .map(|&o| self.value(o))
            .collect::<Result<Vec<_>, _>>()?;
        let (h, w) = (node.shape.h, node.shape.w);
        let mut parts = Vec::with_capacity(vals.len());
        for &v in &vals {
            let s = self.values[v].shape;
            if s.h() != h || s.w() != w || self.concat_of.contains_key(&v) {
                return Err(PlanError::Internal(format!(
                    "concat `{}`: an operand of another size, or a concatenation",
                    node.name
                )));
            }
            parts.push(s.c());
        }
        if parts.is_empty() || parts.len() > hrnet_runtime::kernels::resize::MAX_PARTS {
            return Err(PlanError::Unsupported(format!(
                "concat `{}` of {} inputs: 1 to {} are supported",
                node.name,
                parts.len(),
                hrnet_runtime::kernels::resize::MAX_PARTS
            )));
        }
        let cat = Concat::new(&parts);
        let buf = self.fresh_anon(cat.shape(h, w));
        self.of.insert(n, buf);
        self.concat_of.insert(buf, cat);
        let first = vals.iter().map(|&v| self.created[v]).min().unwrap_or(0);
        for (i, (&o, &v)) in ops.iter().zip(&vals).enumerate() {
            let start = cat.part_range(i, h, w).start;
            let st = self.values[v].storage;
            let shared = vals
                .iter()
                .filter(|&&u| self.values[u].storage == st)
                .count()
                > 1;
            let own = self.values.iter().all(|x| x.storage != st || x.sub == 0);
            let buffer_storage = self.concat_of.keys().any(|&c| self.values[c].storage == st);
            if self.last_read(o, step)
                && self.created[st] >= first
                && !shared
                && own
                && !buffer_storage
            {
                let to = self.values[buf].storage;
                for x in &mut self.values {
                    if x.storage == st {
                        x.storage = to;
                        x.sub = start;
                    }
                }
            } else {
                let part = self.view(buf, start, self.values[v].shape);
                self.steps.push(Step::Copy { src: v, dst: part });
            }
        }
        Ok(())
    }

    /// The conv layer of `nn.Linear` node `n`: a 1×1 convolution on a 1×1 map.
    fn linear(&mut self, n: NodeId, cin: usize, cout: usize) -> Result<usize, PlanError> {
        let node = self.g.node(n);
        let spec = ConvSpec::try_new(cin, cout, 1, 1, 1, 1, 0)
            .map_err(|e| PlanError::Unsupported(format!("linear `{}`: {e}", node.name)))?;
        let spec = spec.with_algo(self.target.conv_algo(&spec));
        self.push_layer(ConvLayer {
            key: node.name.clone(),
            label: node.name.replace(['.', '-'], "_"),
            bias: true,
            bn: None,
            spec,
            packed_offset: 0,
            linear: true,
            concat: None,
        })
    }

    /// Appends `l` at the next aligned packed offset; its index.
    fn push_layer(&mut self, mut l: ConvLayer) -> Result<usize, PlanError> {
        let end = self
            .convs
            .last()
            .map_or(0, |l| l.packed_offset + l.spec.packed_len());
        l.packed_offset = end.div_ceil(ALIGN_FLOATS) * ALIGN_FLOATS;
        self.convs.push(l);
        Ok(self.convs.len() - 1)
    }

    /// A new value for `n` sharing `base`'s storage (an in-place update).
    fn alias(&mut self, n: NodeId, base: ValueId) -> ValueId {
        let id = self.values.len();
        let v = PlanValue {
            storage: self.values[base].storage,
            ..self.values[base].clone()
        };
        self.values.push(v);
        self.created.push(self.steps.len());
        self.of.insert(n, id);
        id
    }

    fn value(&self, n: NodeId) -> Result<ValueId, PlanError> {
        self.of.get(&n).copied().ok_or_else(|| {
            PlanError::Internal(format!(
                "`{}` is read before it is computed",
                self.g.node(n).name
            ))
        })
    }

    /// Whether the step executing at IR position `step` is the last to read `n`'s value.
    fn last_read(&self, n: NodeId, step: usize) -> bool {
        self.g
            .users(n)
            .iter()
            .all(|(u, _)| self.at.get(u).is_some_and(|&p| p <= step))
    }

    fn layer(&mut self, n: NodeId, c: &hrnet_ir::ir::Conv) -> Result<usize, PlanError> {
        let node = self.g.node(n);
        let x = self.g.node(self.g.operands(n)[0]).shape;
        if c.padding > hrnet_runtime::kernels::HALO {
            return Err(PlanError::Unsupported(format!(
                "conv `{}` pads by {}: at most 1 is supported",
                node.name, c.padding
            )));
        }
        // A conv reading a concatenation reads its part-padded buffer's channels.
        let concat = self
            .concat_of
            .get(&self.value(self.g.operands(n)[0])?)
            .copied();
        if concat.is_some() && c.residual {
            return Err(PlanError::Unsupported(format!(
                "conv `{}` reads a concatenation and adds a residual",
                node.name
            )));
        }
        let cin = concat.map_or(c.in_channels, |cat| cat.channels());
        let spec = ConvSpec::try_new(cin, c.out_channels, x.h, x.w, c.kernel, c.stride, c.padding)
            .map_err(|e| PlanError::Unsupported(format!("conv `{}`: {e}", node.name)))?;
        let spec = spec.with_algo(self.target.conv_algo(&spec));
        let suffix = node
            .name
            .rsplit('.')
            .next()
            .unwrap_or("conv")
            .replace(['.', '-'], "_");
        let label = match node.place {
            hrnet_ir::ir::Place::Stem | hrnet_ir::ir::Place::Head => node.name.replace('.', "_"),
            p => format!("{p}_{suffix}"),
        };
        self.push_layer(ConvLayer {
            key: node.name.clone(),
            label,
            bias: c.bias,
            bn: c.bn.clone(),
            spec,
            packed_offset: 0,
            linear: false,
            concat,
        })
    }
}

/// Places every storage over its live range in step order with the one memory planner,
/// [`hrnet_ir::memory::first_fit`]: returns the arena length and each storage's offset.
fn allocate(values: &[PlanValue], steps: &[Step]) -> (usize, Vec<usize>) {
    let storages = values.iter().map(|v| v.storage).max().map_or(0, |m| m + 1);
    let mut first = vec![usize::MAX; storages];
    let mut last = vec![0usize; storages];
    let mut len = vec![0usize; storages];
    for v in values {
        let end = v.sub + v.len();
        len[v.storage] = len[v.storage].max(end.div_ceil(ALIGN_FLOATS) * ALIGN_FLOATS);
    }
    for (i, s) in steps.iter().enumerate() {
        for v in step_values(s) {
            let st = values[v].storage;
            first[st] = first[st].min(i);
            last[st] = last[st].max(i);
        }
    }
    let used: Vec<usize> = (0..storages).filter(|&s| first[s] != usize::MAX).collect();
    let blocks: Vec<_> = used.iter().map(|&s| (first[s], last[s], len[s])).collect();
    let (placed, arena) = hrnet_ir::memory::first_fit(&blocks);
    let mut offsets = vec![0usize; storages];
    for (&s, o) in used.iter().zip(placed) {
        offsets[s] = o;
    }
    (arena, offsets)
}

/// Every value a step reads or writes.
pub fn step_values(s: &Step) -> Vec<ValueId> {
    match *s {
        Step::Input { dst } => vec![dst],
        Step::Conv {
            src, dst, add, acc, ..
        } => {
            let mut v = vec![src, dst];
            if let Addend::Value(r) = add {
                v.push(r);
            }
            v.extend(acc);
            v
        }
        Step::Add { a, b, dst, .. } => vec![a, b, dst],
        Step::AddUpsampled { acc, low, dst, .. } | Step::AddResized { acc, low, dst, .. } => {
            vec![acc, low, dst]
        }
        Step::Resize { src, dst, .. } | Step::GlobalAvgPool { src, dst } => vec![src, dst],
        Step::SpatialGather { logits, feats, dst } => vec![logits, feats, dst],
        Step::ObjectAttention {
            query,
            key,
            value,
            dst,
        } => vec![query, key, value, dst],
        Step::Copy { src, dst } => vec![src, dst],
        Step::Output { src, .. } => vec![src],
    }
}

impl Plan {
    /// The weight layout of the plan's target.
    pub fn packing(&self) -> Packing {
        self.target.packing()
    }

    /// Checks the plan's own invariants: every conv's algorithm is one its target's kernels
    /// have, its packed weights lie inside [`Plan::packed_len`] at an aligned offset after
    /// the previous conv's, every step's buffers have the shapes its kernel needs, and no
    /// step writes a buffer it also reads out of place. Used by tests and the JIT.
    pub fn check(&self) -> Result<(), String> {
        let mut end = 0;
        for (i, c) in self.convs.iter().enumerate() {
            let otf = matches!(c.spec.algo(), Algo::Winograd2Otf | Algo::Winograd4Otf);
            if otf && self.target.kernels != Kernels::Runtime {
                return Err(format!("conv {i}: {:?} is a runtime kernel", c.spec.algo()));
            }
            if c.packed_offset % ALIGN_FLOATS != 0 || c.packed_offset < end {
                return Err(format!("conv {i}: packed offset {}", c.packed_offset));
            }
            end = c.packed_offset + c.spec.packed_len();
            if end > self.packed_len {
                return Err(format!("conv {i}: packed weights end past packed_len"));
            }
            if c.concat.is_some_and(|cat| cat.channels() != c.spec.cin()) {
                return Err(format!(
                    "conv {i}: input channels differ from its concatenation"
                ));
            }
            if c.linear && (c.spec.k() != 1 || c.spec.h_in() != 1 || c.spec.w_in() != 1) {
                return Err(format!("conv {i}: a linear layer that is not 1x1 on 1x1"));
            }
            let runtime = self.target.kernels == Kernels::Runtime;
            if runtime && c.spec.scratch_len(1) > self.scratch_per_thread {
                return Err(format!("conv {i}: scratch_per_thread too small"));
            }
        }
        let range =
            |v: ValueId| self.values[v].offset..self.values[v].offset + self.values[v].len();
        let disjoint = |a: ValueId, b: ValueId| {
            let (x, y) = (range(a), range(b));
            x.end <= y.start || y.end <= x.start
        };
        for (i, s) in self.steps.iter().enumerate() {
            for v in step_values(s) {
                if range(v).end > self.arena_len {
                    return Err(format!("step {i}: value {v} ends past the arena"));
                }
            }
            match *s {
                Step::Conv {
                    layer,
                    src,
                    dst,
                    add,
                    acc,
                    upsample_log2,
                    ..
                } => {
                    let spec = &self.convs[layer].spec;
                    let o = spec.out_shape();
                    let up = |n: usize| n.checked_mul(1usize.checked_shl(upsample_log2)?);
                    let want = match (up(o.h()), up(o.w())) {
                        (Some(h), Some(w)) => ActShape::try_new(o.c(), h, w).ok(),
                        _ => None,
                    };
                    if self.values[src].shape != spec.in_shape()
                        || Some(self.values[dst].shape) != want
                    {
                        return Err(format!("step {i}: conv shapes do not match its spec"));
                    }
                    if !disjoint(src, dst) {
                        return Err(format!("step {i}: conv writes its own input"));
                    }
                    match add {
                        Addend::Value(r) if !disjoint(r, dst) => {
                            return Err(format!("step {i}: residual overlaps output"))
                        }
                        Addend::InPlace if acc.map(range) != Some(range(dst)) => {
                            return Err(format!("step {i}: in-place update of another buffer"))
                        }
                        _ => {}
                    }
                }
                Step::Add { a, b, dst, .. } if !disjoint(a, dst) || !disjoint(b, dst) => {
                    return Err(format!("step {i}: add overlaps its output"))
                }
                Step::AddUpsampled { acc, low, dst, .. }
                    if range(acc) != range(dst) || !disjoint(low, dst) =>
                {
                    return Err(format!("step {i}: bad in-place add"))
                }
                Step::AddResized { acc, low, dst, .. }
                    if range(acc) != range(dst)
                        || !disjoint(low, dst)
                        || self.values[low].shape.c() != self.values[dst].shape.c() =>
                {
                    return Err(format!("step {i}: bad in-place resized add"))
                }
                Step::Resize { src, dst, .. }
                    if !disjoint(src, dst)
                        || self.values[src].shape.c() != self.values[dst].shape.c()
                        || (self.values[src].shape.h() * self.values[src].shape.w() == 0
                            && self.values[dst].shape.h() * self.values[dst].shape.w() > 0) =>
                {
                    return Err(format!("step {i}: bad resize"))
                }
                Step::GlobalAvgPool { src, dst }
                    if !disjoint(src, dst)
                        || self.values[dst].shape
                            != ActShape::new(self.values[src].shape.c(), 1, 1)
                        || self.values[src].shape.h() * self.values[src].shape.w() == 0 =>
                {
                    return Err(format!("step {i}: bad global average pool"))
                }
                Step::SpatialGather { logits, feats, dst } => {
                    let (ls, fs) = (self.values[logits].shape, self.values[feats].shape);
                    if ls.h() != fs.h()
                        || ls.w() != fs.w()
                        || ls.h() * ls.w() == 0
                        || self.values[dst].shape != ActShape::new(fs.c(), ls.c(), 1)
                        || !disjoint(logits, dst)
                        || !disjoint(feats, dst)
                        || spatial_gather_scratch_len(ls.c(), ls.h(), ls.w(), 1) > self.head_scratch
                    {
                        return Err(format!("step {i}: bad spatial gather"));
                    }
                }
                Step::ObjectAttention {
                    query,
                    key,
                    value,
                    dst,
                } => {
                    let (qs, ks) = (self.values[query].shape, self.values[key].shape);
                    if ks != self.values[value].shape
                        || ks.c() != qs.c()
                        || ks.w() != 1
                        || ks.h() == 0
                        || self.values[dst].shape != qs
                        || [query, key, value].iter().any(|&v| !disjoint(v, dst))
                        || object_attention_scratch_len(qs.c(), ks.h(), 1) > self.head_scratch
                    {
                        return Err(format!("step {i}: bad object attention"));
                    }
                }
                Step::Copy { src, dst }
                    if !disjoint(src, dst) || self.values[src].shape != self.values[dst].shape =>
                {
                    return Err(format!("step {i}: copy overlaps or changes shape"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks a run's buffers against what a plan was made for (see
/// [`hrnet_runtime::model::check_buffers`], which the generated code calls too). Every
/// engine that renders a plan calls this before running it.
pub fn check_buffers(
    input: Shape,
    outputs: &[Shape],
    arena_len: usize,
    tiles_per_thread: usize,
    x: &[f32],
    ys: &[&mut [f32]],
    scratch: &hrnet_runtime::model::Scratch,
) -> Result<(), hrnet_runtime::model::RunError> {
    let nchw = |s: &Shape| [1, s.c, s.h, s.w];
    hrnet_runtime::model::check_buffers(
        nchw(&input),
        outputs.iter().map(nchw),
        arena_len,
        tiles_per_thread,
        x,
        ys.iter().map(|y| y.len()),
        scratch,
    )
}

impl ConvLayer {
    /// The parameters hrnet-runtime's loader binds, folds and packs for this conv.
    pub fn params(&self) -> hrnet_runtime::model::ConvParams<'_> {
        hrnet_runtime::model::ConvParams {
            key: &self.key,
            bias: self.bias,
            bn: self
                .bn
                .as_ref()
                .map(|b| hrnet_runtime::model::FoldedBn::new(&b.prefix, b.eps)),
            spec: self.spec,
            packed_offset: self.packed_offset,
            linear: self.linear,
            concat: self.concat,
        }
    }
}

impl Plan {
    /// Working memory for running this plan with `threads` threads.
    pub fn scratch(&self, threads: usize) -> hrnet_runtime::model::Scratch {
        hrnet_runtime::model::Scratch::new(self.arena_len, self.scratch_per_thread, threads)
    }

    /// The parameter list hrnet-runtime's loader binds and packs.
    pub fn conv_params(&self) -> Vec<hrnet_runtime::model::ConvParams<'_>> {
        self.convs.iter().map(ConvLayer::params).collect()
    }

    /// Binds, folds and packs `ckpt` for this plan's convolutions (see
    /// [`hrnet_runtime::model::pack_weights`]): the weight buffer `exec::execute` and the
    /// generated code take.
    pub fn pack_weights(
        &self,
        ckpt: &hrnet_runtime::weights::Checkpoint,
        opts: hrnet_runtime::weights::BindOptions,
    ) -> Result<Vec<f32>, hrnet_runtime::weights::BindError> {
        hrnet_runtime::model::pack_weights(ckpt, &self.conv_params(), self.packed_len, opts)
    }
}

/// The plan as text, for people and snapshots (`hrnetc graph --plan`): the target, the sizes,
/// every convolution with its algorithm, folded BatchNorm and packed range, every value with
/// its arena range, and every step with its section, kernel, operands and epilogue.
///
/// ```text
/// c3    layer1.0.conv2: 3x3 s1 p1 16->16 on 24x16, Winograd4Otf, bn(layer1.0.bn2 eps=1e-5), packed 47248+2320
/// v5    64x24x16 at 0+29952 (storage 2)
/// 5     layer1       conv c4 v4 + v2 in place -> v5 relu
/// 12    stage2_m0    conv c11 v11 up x2 + v9 -> v12 relu
/// ```
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = |s: ActShape| format!("{}x{}x{}", s.c(), s.h(), s.w());
        writeln!(
            f,
            "plan {} for {:?} kernels, {:?} packing",
            self.name,
            self.target.kernels,
            self.packing()
        )?;
        let outs: Vec<String> = self.outputs.iter().map(|o| o.to_string()).collect();
        writeln!(f, "input {} -> outputs {}", self.input, outs.join(", "))?;
        writeln!(
            f,
            "arena {} floats, scratch {} floats per thread, packed weights {} floats",
            self.arena_len, self.scratch_per_thread, self.packed_len
        )?;
        writeln!(f, "\nconvs:")?;
        for (i, c) in self.convs.iter().enumerate() {
            let s = &c.spec;
            write!(
                f,
                "c{i:<4} {}: {k}x{k} s{} p{} {}->{} on {}x{}, {:?}",
                c.key,
                s.stride(),
                s.pad(),
                s.cin(),
                s.cout(),
                s.h_in(),
                s.w_in(),
                s.algo(),
                k = s.k()
            )?;
            if c.bias {
                write!(f, ", bias")?;
            }
            if let Some(bn) = &c.bn {
                write!(f, ", bn({} eps={:e})", bn.prefix, bn.eps)?;
            }
            if c.linear {
                write!(f, ", linear")?;
            }
            if let Some(cat) = &c.concat {
                write!(f, ", reads concat {:?}", cat.parts())?;
            }
            writeln!(f, ", packed {}+{}", c.packed_offset, s.packed_len())?;
        }
        writeln!(f, "\nvalues:")?;
        for (i, v) in self.values.iter().enumerate() {
            write!(
                f,
                "v{i:<4} {} at {}+{} (storage {}",
                shape(v.shape),
                v.offset,
                v.len(),
                v.storage
            )?;
            if v.sub > 0 {
                write!(f, " +{}", v.sub)?;
            }
            writeln!(f, ")")?;
        }
        writeln!(f, "\nsteps:")?;
        let relu = |r: bool| if r { " relu" } else { "" };
        for (i, s) in self.steps.iter().enumerate() {
            let group = self.notes.get(i).map_or("", |n| n.group.as_str());
            write!(f, "{i:<5} {group:<12} ")?;
            match *s {
                Step::Input { dst } => writeln!(f, "input -> v{dst}")?,
                Step::Conv {
                    layer,
                    src,
                    dst,
                    add,
                    acc,
                    upsample_log2,
                    relu: r,
                } => {
                    write!(f, "conv c{layer} v{src}")?;
                    if upsample_log2 > 0 {
                        write!(f, " up x{}", 1u64 << upsample_log2)?;
                    }
                    match (add, acc) {
                        (Addend::None, _) => {}
                        (Addend::Value(v), _) => write!(f, " + v{v}")?,
                        (Addend::InPlace, Some(a)) => write!(f, " + v{a} in place")?,
                        (Addend::InPlace, None) => write!(f, " + (in place)")?,
                    }
                    writeln!(f, " -> v{dst}{}", relu(r))?
                }
                Step::Add { a, b, dst, relu: r } => {
                    writeln!(f, "add v{a} + v{b} -> v{dst}{}", relu(r))?
                }
                Step::AddUpsampled {
                    acc,
                    low,
                    dst,
                    log2,
                    relu: r,
                } => writeln!(
                    f,
                    "add_upsampled v{acc} + up x{}(v{low}) in place -> v{dst}{}",
                    1u64 << log2,
                    relu(r)
                )?,
                Step::AddResized {
                    acc,
                    low,
                    dst,
                    align_corners,
                    relu: r,
                } => writeln!(
                    f,
                    "add_resized v{acc} + bilinear{}(v{low}) in place -> v{dst}{}",
                    if align_corners { " align_corners" } else { "" },
                    relu(r)
                )?,
                Step::Resize {
                    src,
                    dst,
                    align_corners,
                } => writeln!(
                    f,
                    "resize bilinear{} v{src} -> v{dst}",
                    if align_corners { " align_corners" } else { "" }
                )?,
                Step::GlobalAvgPool { src, dst } => {
                    writeln!(f, "global_avg_pool v{src} -> v{dst}")?
                }
                Step::SpatialGather { logits, feats, dst } => {
                    writeln!(f, "spatial_gather v{logits}, v{feats} -> v{dst}")?
                }
                Step::ObjectAttention {
                    query,
                    key,
                    value,
                    dst,
                } => writeln!(f, "object_attention v{query}, v{key}, v{value} -> v{dst}")?,
                Step::Copy { src, dst } => writeln!(f, "copy v{src} -> v{dst}")?,
                Step::Output { src, index } => writeln!(f, "output {index} <- v{src}")?,
            }
        }
        Ok(())
    }
}
