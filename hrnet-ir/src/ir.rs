//! The IR: a petgraph `StableGraph` of [`Node`]s, each holding one [`Op`].
//!
//! Values are batch-1 NCHW tensors; every node produces exactly one value whose [`Shape`] it
//! stores. Operand order lives on the edges ([`Operand`]), never in petgraph's edge order.
//! Every node also records its official weight-key prefix ([`Node::name`], e.g.
//! `stage3.0.fuse_layers.2.0.1`) and its [`Place`] in the network, so printers, the weight
//! binder and the code generators can all name things the way the checkpoint does.

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::fmt;

/// Identifies a node (and the value it produces).
pub type NodeId = NodeIndex<u32>;

/// Shape of a batch-1 NCHW value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether the value has no elements (never true for a verified graph).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Operand slot of an edge: edge `a → b` with `Operand(k)` means `a` is operand `k` of `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operand(pub u8);

/// How a value is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Nearest neighbour by an integer factor (`nn.Upsample(scale_factor=f, mode='nearest')`).
    Nearest {
        /// Scale factor, a power of two in HRNet.
        factor: usize,
    },
    /// Bilinear to the node's exact shape (`F.interpolate(mode='bilinear')`).
    Bilinear {
        /// PyTorch's `align_corners`: with `true` the corner pixels of input and output are
        /// aligned (source = dst·(in−1)/(out−1)); with `false` pixel centres are
        /// (source = (dst+½)·in/out − ½, clamped at 0).
        align_corners: bool,
    },
}

/// A convolution, with whatever passes have fused into it.
///
/// Computes `out = relu?(up(conv(x; W) [+ b] [folded BN]) [+ residual])`, `up` nearest
/// upsampling by [`Conv::upsample`]. The optional pieces are applied in that order; a folded
/// BatchNorm scales the convolution *and* its bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes, both sides).
    pub padding: usize,
    /// Whether the checkpoint has `<name>.bias` (only head convs do).
    pub bias: bool,
    /// The BatchNorm folded in by `fold_conv_bn`.
    pub bn: Option<FoldedBn>,
    /// Operand 1 is added after the (folded) convolution (`fuse_epilogue`).
    pub residual: bool,
    /// Nearest upsampling factor of the (folded) convolution's result before the residual
    /// is added (`fuse_conv_add_resized`); 1 for none.
    pub upsample: usize,
    /// ReLU at the end (`fuse_epilogue`).
    pub relu: bool,
}

/// A BatchNorm folded into a convolution: what the weight loader needs to do the arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedBn {
    /// Weight-key prefix of its parameters (e.g. `layer1.0.bn1`).
    pub prefix: String,
    /// The BatchNorm's ε.
    pub eps: f32,
}

impl Eq for FoldedBn {}

/// BatchNorm in inference mode: `(x − μ) / √(σ² + ε) · γ + β`, per channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    /// ε (1e-5 everywhere in HRNet).
    pub eps: f32,
}

impl Eq for BatchNorm {}

/// The closed set of operations. Each variant documents its operands and shape rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The network input. No operands; shape `3×H×W`.
    Input,
    /// Convolution. Operands: `[x]`, or `[x, residual]` when [`Conv::residual`]. Shape:
    /// `out_channels × u·(⌊(h + 2p − k)/s⌋+1) × u·(⌊(w + 2p − k)/s⌋+1)` with `u` =
    /// [`Conv::upsample`]; a residual has that shape too.
    Conv(Conv),
    /// BatchNorm. Operands `[x]`; shape of `x`.
    BatchNorm(BatchNorm),
    /// `max(x, 0)`. Operands `[x]`; shape of `x`.
    Relu,
    /// `a + b`, then ReLU if `relu`. Operands `[a, b]` of equal shape; shape of `a`.
    Add {
        /// ReLU fused in (`fuse_epilogue`).
        relu: bool,
    },
    /// Resize. Operands `[x]`. Nearest: `c × h·f × w·f`; bilinear: the node's stored shape.
    Resize(Resize),
    /// `a + resize(b)`, then ReLU if `relu`; the resized tensor is never materialized
    /// (`fuse_upsample_add`). Operands `[a, b]`; shape of `a`, which is what `b` resizes to.
    AddResized {
        /// How `b` is resized to `a`'s shape.
        resize: Resize,
        /// ReLU fused in.
        relu: bool,
    },
    /// Channel concatenation (`torch.cat(dim=1)`). Operands `[x0, …, x(n−1)]`, `n = inputs`,
    /// all of one height and width; shape `Σcᵢ × h × w`.
    Concat {
        /// Number of operands (at least 2).
        inputs: usize,
    },
    /// Mean over all pixels of each channel. Operands `[x]`; shape `c × 1 × 1`.
    GlobalAvgPool,
    /// Fully connected layer `y = W·x + b` on a `c × 1 × 1` value read as a vector of
    /// `in_features = c` (`nn.Linear`; keys `<name>.weight` `[out, in]`, `<name>.bias`).
    /// Operands `[x]`; shape `out_features × 1 × 1`.
    Linear {
        /// Input features (the operand's element count).
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// OCR's spatial gather (`SpatialGather_Module`, scale 1): each of the `K` class maps of
    /// `logits` is turned into weights by a softmax over all `H·W` pixels, and the object
    /// region representation of class `k` is the weighted sum of `feats`' pixels:
    /// `out[c][k] = Σₚ softmaxₚ(logits[k])[p] · feats[c][p]`.
    /// Operands `[logits K×H×W, feats C×H×W]`; shape `C × K × 1` (the official `n×C×K×1`).
    SpatialGather,
    /// OCR's object attention (`_ObjectAttentionBlock` without its 1×1 convs): every pixel's
    /// query attends over the `K` object regions,
    /// `sim[p][k] = softmaxₖ(D^−½ · Σ_d query[d][p] · key[d][k])`,
    /// `out[e][p] = Σₖ sim[p][k] · value[e][k]`.
    /// Operands `[query D×H×W, key D×K×1, value E×K×1]`; shape `E × H × W`.
    ObjectAttention,
    /// Network output number `index`. Operands `[x]`; shape of `x`. Nothing consumes it.
    Output {
        /// Position among the network's outputs.
        index: usize,
    },
}

impl Op {
    /// Number of operands this op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input => 0,
            Op::Conv(c) => 1 + usize::from(c.residual),
            Op::BatchNorm(_)
            | Op::Relu
            | Op::Resize(_)
            | Op::GlobalAvgPool
            | Op::Linear { .. }
            | Op::Output { .. } => 1,
            Op::Add { .. } | Op::AddResized { .. } | Op::SpatialGather => 2,
            Op::ObjectAttention => 3,
            Op::Concat { inputs } => *inputs,
        }
    }

    /// Short mnemonic used by the printers.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv(_) => "conv",
            Op::BatchNorm(_) => "batch_norm",
            Op::Relu => "relu",
            Op::Add { .. } => "add",
            Op::Resize(_) => "resize",
            Op::AddResized { .. } => "add_resized",
            Op::Concat { .. } => "concat",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Linear { .. } => "linear",
            Op::SpatialGather => "spatial_gather",
            Op::ObjectAttention => "object_attention",
            Op::Output { .. } => "output",
        }
    }
}

/// Which part of HRNet a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// Input and the two stride-2 stem convs.
    Stem,
    /// layer1, block `block`.
    Layer1 {
        /// Block index.
        block: usize,
    },
    /// The transition into stage `stage`, producing branch `branch`.
    Transition {
        /// Stage the transition feeds (2, 3 or 4).
        stage: usize,
        /// Branch it produces.
        branch: usize,
    },
    /// A residual block inside a branch of a module.
    Block {
        /// Stage (2, 3, 4).
        stage: usize,
        /// Module within the stage.
        module: usize,
        /// Branch within the module.
        branch: usize,
        /// Block within the branch.
        block: usize,
    },
    /// The exchange unit of a module: the path from branch `from` into output `to`, or the
    /// sum itself when `from == to`.
    Fuse {
        /// Stage (2, 3, 4).
        stage: usize,
        /// Module within the stage.
        module: usize,
        /// Output branch `i`.
        to: usize,
        /// Input branch `j`.
        from: usize,
    },
    /// The task head (pose `final_layer`; classification `incre_modules` … `classifier`;
    /// segmentation `last_layer`; the OCR head) and outputs.
    Head,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Stem => write!(f, "stem"),
            Place::Layer1 { block } => write!(f, "layer1_b{block}"),
            Place::Transition { stage, branch } => write!(f, "transition{}_{branch}", stage - 1),
            Place::Block {
                stage,
                module,
                branch,
                block,
            } => write!(f, "stage{stage}_m{module}_b{branch}_block{block}"),
            Place::Fuse {
                stage,
                module,
                to,
                from,
            } => write!(f, "stage{stage}_m{module}_fuse_{to}_{from}"),
            Place::Head => write!(f, "head"),
        }
    }
}

/// One IR node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Shape of the value it produces.
    pub shape: Shape,
    /// Official weight-key prefix for nodes with parameters (`layer1.0.conv1`); a descriptive
    /// label otherwise (`stage2.0.fuse.0`). Parameter nodes' names are unique.
    pub name: String,
    /// Where in the network it sits.
    pub place: Place,
}

/// A named parameter tensor the network needs from the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Official state_dict key.
    pub name: String,
    /// Shape (OIHW for conv weights).
    pub shape: Vec<usize>,
}

impl Node {
    /// The checkpoint tensors this node reads, in a fixed order.
    pub fn params(&self) -> Vec<TensorSpec> {
        let spec = |suffix: &str, shape: Vec<usize>| TensorSpec {
            name: format!("{}.{suffix}", self.name),
            shape,
        };
        match &self.op {
            Op::Conv(c) => {
                let mut v = vec![spec(
                    "weight",
                    vec![c.out_channels, c.in_channels, c.kernel, c.kernel],
                )];
                if c.bias {
                    v.push(spec("bias", vec![c.out_channels]));
                }
                if let Some(bn) = &c.bn {
                    v.extend(bn_params(&bn.prefix, c.out_channels));
                }
                v
            }
            Op::BatchNorm(_) => bn_params(&self.name, self.shape.c),
            Op::Linear {
                in_features,
                out_features,
            } => vec![
                spec("weight", vec![*out_features, *in_features]),
                spec("bias", vec![*out_features]),
            ],
            _ => Vec::new(),
        }
    }
}

fn bn_params(prefix: &str, c: usize) -> Vec<TensorSpec> {
    ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .map(|s| TensorSpec {
            name: format!("{prefix}.{s}"),
            shape: vec![c],
        })
        .collect()
}

/// A whole network.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Nodes and operand edges.
    pub g: StableGraph<Node, Operand, petgraph::Directed, u32>,
    /// `MODEL.NAME` of the config it came from.
    pub name: String,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            g: StableGraph::default(),
            name: name.into(),
        }
    }

    /// Adds a node with its operands in order.
    pub fn add(&mut self, node: Node, operands: &[NodeId]) -> NodeId {
        let id = self.g.add_node(node);
        for (k, &src) in operands.iter().enumerate() {
            self.g.add_edge(src, id, Operand(k as u8));
        }
        id
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    /// Operands of `id`, in operand order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<(Operand, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// Consumers of `id` with the operand slot they read it in, sorted by node index.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, Operand)> {
        let mut v: Vec<(NodeId, Operand)> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        v.sort();
        v
    }

    /// Replaces every use of `old` by `new`, keeping operand slots.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        for (user, slot) in self.users(old) {
            if let Some(e) = self.g.find_edge(old, user) {
                self.g.remove_edge(e);
            }
            self.g.add_edge(new, user, slot);
        }
    }

    /// Sets the operands of `id` (replacing all its incoming edges).
    pub fn set_operands(&mut self, id: NodeId, operands: &[NodeId]) {
        let incoming: Vec<_> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in incoming {
            self.g.remove_edge(e);
        }
        for (k, &src) in operands.iter().enumerate() {
            self.g.add_edge(src, id, Operand(k as u8));
        }
    }

    /// Node ids in a deterministic topological order: among ready nodes, the lowest index
    /// first. Lowering creates nodes in execution order, so this is the order of the
    /// official forward pass. Returns `None` if the graph has a cycle.
    pub fn schedule(&self) -> Option<Vec<NodeId>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indegree: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for id in self.g.node_indices() {
            let d = self.g.edges_directed(id, Direction::Incoming).count();
            if d == 0 {
                ready.push(Reverse(id));
            }
            indegree.insert(id, d);
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target())?;
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        (order.len() == self.g.node_count()).then_some(order)
    }

    /// Input nodes, by node index.
    pub fn inputs(&self) -> Vec<NodeId> {
        self.g
            .node_indices()
            .filter(|&n| self.g[n].op == Op::Input)
            .collect()
    }

    /// Output nodes, ordered by their output index.
    pub fn outputs(&self) -> Vec<NodeId> {
        let mut v: Vec<(usize, NodeId)> = self
            .g
            .node_indices()
            .filter_map(|n| match self.g[n].op {
                Op::Output { index } => Some((index, n)),
                _ => None,
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// Every checkpoint tensor the network needs, in schedule order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let order = self
            .schedule()
            .unwrap_or_else(|| self.g.node_indices().collect());
        order.into_iter().flat_map(|n| self.g[n].params()).collect()
    }
}
