//! Lowering: a validated [`Network`] → the raw IR [`Graph`], one node per official module.
//!
//! The graph mirrors the official PyTorch forward pass exactly — conv, BatchNorm and ReLU are
//! separate nodes, every exchange-unit path is spelled out, nodes are created in execution
//! order — and each parameter node carries its official state_dict prefix. Rules that differ
//! between the official repositories are decided here:
//! a transition that changes an existing branch's width reads that branch; a new branch is a
//! chain of stride-2 links from the lowest-resolution branch; the pose network's last module
//! computes output 0 only; segmentation resizes bilinearly in its exchange units.

use crate::front::{BlockKind, Network, StageSpec, Task};
use crate::ir::{BatchNorm, Conv, Graph, Node, NodeId, Op, Place, Resize, Shape};

/// BatchNorm ε of every official HRNet.
pub const BN_EPS: f32 = 1e-5;

/// Builds the raw IR of `net`. For tasks whose head is not supported yet, the graph ends
/// with one output per final branch (the backbone's features).
pub fn lower(net: &Network) -> Graph {
    let mut l = Lowerer {
        g: Graph::new(net.name.clone()),
    };
    let (h, w) = net.input_hw;
    let x = l.g.add(
        Node {
            op: Op::Input,
            shape: Shape { c: 3, h, w },
            name: "input".into(),
            place: Place::Stem,
        },
        &[],
    );

    // Stem: two 3×3 stride-2 convs to 64 channels.
    let x = l.conv_bn(x, "conv1", "bn1", 64, 3, 2, true, Place::Stem);
    let x = l.conv_bn(x, "conv2", "bn2", 64, 3, 2, true, Place::Stem);

    // layer1.
    let spec = &net.layer1;
    let mut x = x;
    for b in 0..spec.blocks[0] {
        x = l.block(
            x,
            &format!("layer1.{b}"),
            spec.block,
            spec.planes[0],
            Place::Layer1 { block: b },
        );
    }
    let mut ys = vec![x];

    let last_stage = net.stages.len() + 1;
    for (si, stage) in net.stages.iter().enumerate() {
        let s = si + 2;
        ys = l.transition(&ys, stage, s);
        for m in 0..stage.modules {
            let single_output =
                matches!(net.task, Task::Pose { .. }) && s == last_stage && m + 1 == stage.modules;
            ys = l.module(&ys, stage, s, m, !single_output, net.bilinear_exchange);
        }
    }

    match net.task {
        Task::Pose {
            num_joints,
            final_kernel,
        } => {
            let pad = if final_kernel == 3 { 1 } else { 0 };
            let y = l.conv(
                ys[0],
                "final_layer",
                num_joints,
                final_kernel,
                1,
                pad,
                true,
                Place::Head,
            );
            l.output(y, 0);
        }
        Task::Classification { .. } | Task::Segmentation { .. } => {
            for (i, &y) in ys.iter().enumerate() {
                l.output(y, i);
            }
        }
    }
    l.g
}

struct Lowerer {
    g: Graph,
}

impl Lowerer {
    fn shape(&self, id: NodeId) -> Shape {
        self.g.node(id).shape
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: NodeId,
        name: &str,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        place: Place,
    ) -> NodeId {
        let s = self.shape(x);
        let out = |n: usize| (n + 2 * padding - kernel) / stride + 1;
        let op = Op::Conv(Conv {
            in_channels: s.c,
            out_channels,
            kernel,
            stride,
            padding,
            bias,
            bn: None,
            residual: false,
            upsample: 1,
            relu: false,
        });
        let shape = Shape {
            c: out_channels,
            h: out(s.h),
            w: out(s.w),
        };
        self.g.add(
            Node {
                op,
                shape,
                name: name.into(),
                place,
            },
            &[x],
        )
    }

    fn unary(&mut self, x: NodeId, op: Op, name: String, place: Place) -> NodeId {
        let shape = self.shape(x);
        self.g.add(
            Node {
                op,
                shape,
                name,
                place,
            },
            &[x],
        )
    }

    /// conv (no bias, padding k/2) → BatchNorm → optional ReLU.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: NodeId,
        conv: &str,
        bn: &str,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        relu: bool,
        place: Place,
    ) -> NodeId {
        let y = self.conv(
            x,
            conv,
            out_channels,
            kernel,
            stride,
            kernel / 2,
            false,
            place,
        );
        let y = self.unary(
            y,
            Op::BatchNorm(BatchNorm { eps: BN_EPS }),
            bn.into(),
            place,
        );
        if relu {
            self.unary(y, Op::Relu, format!("{bn}.relu"), place)
        } else {
            y
        }
    }

    fn add(&mut self, a: NodeId, b: NodeId, name: String, place: Place) -> NodeId {
        let shape = self.shape(a);
        self.g.add(
            Node {
                op: Op::Add { relu: false },
                shape,
                name,
                place,
            },
            &[a, b],
        )
    }

    fn output(&mut self, x: NodeId, index: usize) {
        let shape = self.shape(x);
        self.g.add(
            Node {
                op: Op::Output { index },
                shape,
                name: format!("output{index}"),
                place: Place::Head,
            },
            &[x],
        );
    }

    /// One residual block named `prefix` (`layer1.0`, `stage2.0.branches.1.3`), with a
    /// 1×1 conv + BN shortcut when the channel count changes.
    fn block(
        &mut self,
        x: NodeId,
        prefix: &str,
        kind: BlockKind,
        planes: usize,
        place: Place,
    ) -> NodeId {
        let p = |s: &str| format!("{prefix}.{s}");
        let in_c = self.shape(x).c;
        let out_c = planes * kind.expansion();
        let y = match kind {
            BlockKind::Basic => {
                let y = self.conv_bn(x, &p("conv1"), &p("bn1"), planes, 3, 1, true, place);
                self.conv_bn(y, &p("conv2"), &p("bn2"), planes, 3, 1, false, place)
            }
            BlockKind::Bottleneck => {
                let y = self.conv_bn(x, &p("conv1"), &p("bn1"), planes, 1, 1, true, place);
                let y = self.conv_bn(y, &p("conv2"), &p("bn2"), planes, 3, 1, true, place);
                self.conv_bn(y, &p("conv3"), &p("bn3"), out_c, 1, 1, false, place)
            }
        };
        let shortcut = if in_c != out_c {
            self.conv_bn(
                x,
                &p("downsample.0"),
                &p("downsample.1"),
                out_c,
                1,
                1,
                false,
                place,
            )
        } else {
            x
        };
        let sum = self.add(y, shortcut, p("add"), place);
        self.unary(sum, Op::Relu, p("relu"), place)
    }

    /// The transition into stage `s`: existing branches whose width changes get a 3×3 conv;
    /// new branches are chains of 3×3 stride-2 links from the last (lowest-resolution) branch.
    fn transition(&mut self, ys: &[NodeId], stage: &StageSpec, s: usize) -> Vec<NodeId> {
        let cur = stage.out_channels();
        let pre = ys.len();
        let mut out = Vec::with_capacity(cur.len());
        for (i, &c) in cur.iter().enumerate() {
            let place = Place::Transition {
                stage: s,
                branch: i,
            };
            let t = format!("transition{}.{i}", s - 1);
            if i < pre {
                if self.shape(ys[i]).c != c {
                    out.push(self.conv_bn(
                        ys[i],
                        &format!("{t}.0"),
                        &format!("{t}.1"),
                        c,
                        3,
                        1,
                        true,
                        place,
                    ));
                } else {
                    out.push(ys[i]);
                }
            } else {
                let mut x = ys[pre - 1];
                let links = i + 1 - pre;
                let in_c = self.shape(x).c;
                for k in 0..links {
                    let oc = if k + 1 == links { c } else { in_c };
                    x = self.conv_bn(
                        x,
                        &format!("{t}.{k}.0"),
                        &format!("{t}.{k}.1"),
                        oc,
                        3,
                        2,
                        true,
                        place,
                    );
                }
                out.push(x);
            }
        }
        out
    }

    /// One HighResolutionModule: the branches, then the exchange unit (all outputs, or
    /// output 0 only when `multi_scale_output` is false).
    fn module(
        &mut self,
        xs: &[NodeId],
        stage: &StageSpec,
        s: usize,
        m: usize,
        multi_scale_output: bool,
        bilinear: bool,
    ) -> Vec<NodeId> {
        let nb = stage.branches();
        let mut xs = xs.to_vec();
        for (b, x) in xs.iter_mut().enumerate() {
            for k in 0..stage.blocks[b] {
                let place = Place::Block {
                    stage: s,
                    module: m,
                    branch: b,
                    block: k,
                };
                *x = self.block(
                    *x,
                    &format!("stage{s}.{m}.branches.{b}.{k}"),
                    stage.block,
                    stage.planes[b],
                    place,
                );
            }
        }
        if nb == 1 {
            // The official module returns its single branch without an exchange unit.
            return xs;
        }
        let outputs = if multi_scale_output { nb } else { 1 };
        let mut fused = Vec::with_capacity(outputs);
        for i in 0..outputs {
            let mut acc: Option<NodeId> = None;
            for (j, &xj) in xs.iter().enumerate() {
                let place = Place::Fuse {
                    stage: s,
                    module: m,
                    to: i,
                    from: j,
                };
                let f = format!("stage{s}.{m}.fuse_layers.{i}.{j}");
                let term = if j == i {
                    xj
                } else if j > i {
                    let ci = self.shape(xs[i]).c;
                    let y = self.conv_bn(
                        xj,
                        &format!("{f}.0"),
                        &format!("{f}.1"),
                        ci,
                        1,
                        1,
                        false,
                        place,
                    );
                    let target = self.shape(xs[i]);
                    let (resize, name) = if bilinear {
                        (Resize::Bilinear, format!("{f}.resize"))
                    } else {
                        (
                            Resize::Nearest {
                                factor: 1 << (j - i),
                            },
                            format!("{f}.2"),
                        )
                    };
                    let shape = Shape {
                        c: ci,
                        h: target.h,
                        w: target.w,
                    };
                    self.g.add(
                        Node {
                            op: Op::Resize(resize),
                            shape,
                            name,
                            place,
                        },
                        &[y],
                    )
                } else {
                    let links = i - j;
                    let (cj, ci) = (self.shape(xj).c, self.shape(xs[i]).c);
                    let mut y = xj;
                    for k in 0..links {
                        let last = k + 1 == links;
                        let oc = if last { ci } else { cj };
                        y = self.conv_bn(
                            y,
                            &format!("{f}.{k}.0"),
                            &format!("{f}.{k}.1"),
                            oc,
                            3,
                            2,
                            !last,
                            place,
                        );
                    }
                    y
                };
                acc = Some(match acc {
                    None => term,
                    Some(a) => self.add(a, term, format!("stage{s}.{m}.fuse.{i}.sum{j}"), place),
                });
            }
            let place = Place::Fuse {
                stage: s,
                module: m,
                to: i,
                from: i,
            };
            let sum = acc.expect("a module with two or more branches has terms");
            fused.push(self.unary(sum, Op::Relu, format!("stage{s}.{m}.fuse.{i}.relu"), place));
        }
        fused
    }
}
