//! Lowering: a validated [`Network`] → the raw IR [`Graph`], one node per official module.
//!
//! The graph mirrors the official PyTorch forward pass exactly — conv, BatchNorm and ReLU are
//! separate nodes, every exchange-unit path is spelled out, nodes are created in execution
//! order — and each parameter node carries its official state_dict prefix. Rules that differ
//! between the official repositories are decided here:
//! a transition that changes an existing branch's width reads that branch; a new branch is a
//! chain of stride-2 links from the lowest-resolution branch; the pose network's last module
//! computes output 0 only; segmentation resizes bilinearly in its exchange units and head.
//!
//! Heads ([`Task`]): pose `final_layer`; classification `incre_modules`, `downsamp_modules`,
//! `final_layer`, average pool and `classifier`; segmentation `last_layer`; OCR `aux_head`,
//! `conv3x3_ocr`, the spatial gather and `ocr_distri_head`, with the OCR logits as output 0
//! and the auxiliary logits as output 1.

use crate::front::resolve::{CLS_FINAL_CHANNELS, CLS_INCRE_PLANES};
use crate::front::{BlockKind, ConfigError, Network, OcrSpec, StageSpec, Task};
use crate::ir::{BatchNorm, Conv, Graph, Node, NodeId, Op, Place, Resize, Shape};

/// BatchNorm ε of every official HRNet.
pub const BN_EPS: f32 = 1e-5;

/// Builds the raw IR of `net` at the input size (height, width) `(h, w)` instead of the
/// config's: segmentation networks run at any size of at least 32 pixels a side. The size
/// is checked as [`Network::with_input_size`] checks it.
pub fn lower_at(net: &Network, h: usize, w: usize) -> Result<Graph, ConfigError> {
    Ok(lower(&net.with_input_size(h, w)?))
}

/// Builds the raw IR of `net`.
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
    let exchange = match net.task {
        Task::Segmentation { align_corners, .. } => Resize::Bilinear { align_corners },
        Task::Pose { .. } | Task::Classification { .. } => Resize::Nearest { factor: 2 },
    };
    for (si, stage) in net.stages.iter().enumerate() {
        let s = si + 2;
        ys = l.transition(&ys, stage, s);
        for m in 0..stage.modules {
            let single_output =
                matches!(net.task, Task::Pose { .. }) && s == last_stage && m + 1 == stage.modules;
            ys = l.module(&ys, stage, s, m, !single_output, exchange);
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
        Task::Classification { num_classes } => {
            let y = l.classification_head(&ys, num_classes);
            l.output(y, 0);
        }
        Task::Segmentation {
            num_classes,
            final_kernel,
            align_corners,
            ocr,
        } => {
            let feats = l.concat_branches(&ys, align_corners);
            match ocr {
                None => {
                    let y = l.seg_last_layer(feats, "last_layer", num_classes, final_kernel);
                    l.output(y, 0);
                }
                Some(o) => {
                    let (y, aux) = l.ocr_head(feats, o, num_classes, final_kernel);
                    l.output(y, 0);
                    l.output(aux, 1);
                }
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

    fn batch_norm(&mut self, x: NodeId, name: String, place: Place) -> NodeId {
        self.unary(x, Op::BatchNorm(BatchNorm { eps: BN_EPS }), name, place)
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
        let y = self.batch_norm(y, bn.into(), place);
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

    /// The classification head (HRNetV2p): `y = incre[0](x0)`, then
    /// `y = incre[i+1](x(i+1)) + downsamp[i](y)`; `final_layer` (1×1 to 2048, bias, BN,
    /// ReLU); global average pool; `classifier`. The `incre_modules` are one Bottleneck each
    /// (planes 32, 64, 128, 256); `downsamp_modules` are 3×3 stride-2 convs with bias, BN
    /// and ReLU (no ReLU after the sum).
    fn classification_head(&mut self, ys: &[NodeId], num_classes: usize) -> NodeId {
        let place = Place::Head;
        let mut acc: Option<NodeId> = None;
        for (i, &x) in ys.iter().enumerate() {
            let incre = self.block(
                x,
                &format!("incre_modules.{i}.0"),
                BlockKind::Bottleneck,
                CLS_INCRE_PLANES[i],
                place,
            );
            acc = Some(match acc {
                None => incre,
                Some(y) => {
                    let d = format!("downsamp_modules.{}", i - 1);
                    let oc = self.shape(incre).c;
                    let down = self.conv_bias_bn_relu(y, &d, oc, 3, 2, place);
                    self.add(incre, down, format!("head.sum{i}"), place)
                }
            });
        }
        let y = acc.expect("the classification head has four branches");
        let y = self.conv_bias_bn_relu(y, "final_layer", CLS_FINAL_CHANNELS, 1, 1, place);
        let s = self.shape(y);
        let pooled = self.g.add(
            Node {
                op: Op::GlobalAvgPool,
                shape: Shape { c: s.c, h: 1, w: 1 },
                name: "head.pool".into(),
                place,
            },
            &[y],
        );
        self.g.add(
            Node {
                op: Op::Linear {
                    in_features: s.c,
                    out_features: num_classes,
                },
                shape: Shape {
                    c: num_classes,
                    h: 1,
                    w: 1,
                },
                name: "classifier".into(),
                place,
            },
            &[pooled],
        )
    }

    /// `<prefix>.0` conv (bias, padding k/2) → `<prefix>.1` BatchNorm → ReLU: the
    /// `Sequential(conv, BN, ReLU)` of the heads.
    fn conv_bias_bn_relu(
        &mut self,
        x: NodeId,
        prefix: &str,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        place: Place,
    ) -> NodeId {
        let y = self.conv(
            x,
            &format!("{prefix}.0"),
            out_channels,
            kernel,
            stride,
            kernel / 2,
            true,
            place,
        );
        let y = self.batch_norm(y, format!("{prefix}.1"), place);
        self.unary(y, Op::Relu, format!("{prefix}.2"), place)
    }

    /// Branches 1… resized bilinearly to branch 0's size and concatenated after it
    /// (HRNetV2's representation head, `15·C` channels for widths C, 2C, 4C, 8C).
    fn concat_branches(&mut self, ys: &[NodeId], align_corners: bool) -> NodeId {
        if ys.len() == 1 {
            return ys[0];
        }
        let place = Place::Head;
        let target = self.shape(ys[0]);
        let mut parts = vec![ys[0]];
        for (b, &y) in ys.iter().enumerate().skip(1) {
            let shape = Shape {
                c: self.shape(y).c,
                h: target.h,
                w: target.w,
            };
            parts.push(self.g.add(
                Node {
                    op: Op::Resize(Resize::Bilinear { align_corners }),
                    shape,
                    name: format!("head.resize{b}"),
                    place,
                },
                &[y],
            ));
        }
        self.concat(&parts, "head.concat".into())
    }

    fn concat(&mut self, parts: &[NodeId], name: String) -> NodeId {
        let s = self.shape(parts[0]);
        let c = parts.iter().map(|&p| self.shape(p).c).sum();
        self.g.add(
            Node {
                op: Op::Concat {
                    inputs: parts.len(),
                },
                shape: Shape { c, h: s.h, w: s.w },
                name,
                place: Place::Head,
            },
            parts,
        )
    }

    /// `last_layer` (and OCR's `aux_head`): 1×1 conv with bias, BN, ReLU, then a conv of
    /// `final_kernel` with bias to the class logits.
    fn seg_last_layer(
        &mut self,
        x: NodeId,
        prefix: &str,
        num_classes: usize,
        final_kernel: usize,
    ) -> NodeId {
        let c = self.shape(x).c;
        let y = self.conv_bias_bn_relu(x, prefix, c, 1, 1, Place::Head);
        self.conv(
            y,
            &format!("{prefix}.3"),
            num_classes,
            final_kernel,
            1,
            final_kernel / 2,
            true,
            Place::Head,
        )
    }

    /// `[1×1 conv without bias, BNReLU]` repeated `depth` times (`f_pixel`, `f_object`: 2;
    /// `f_down`, `f_up`, `conv_bn_dropout`: 1). The BatchNorm of `BNReLU` is `<prefix>.<2k+1>.0`.
    fn conv_bnrelu(
        &mut self,
        x: NodeId,
        prefix: &str,
        out_channels: usize,
        depth: usize,
    ) -> NodeId {
        let mut y = x;
        for k in 0..depth {
            y = self.conv_bn(
                y,
                &format!("{prefix}.{}", 2 * k),
                &format!("{prefix}.{}.0", 2 * k + 1),
                out_channels,
                1,
                1,
                true,
                Place::Head,
            );
        }
        y
    }

    /// The OCR head on the concatenated features; returns (OCR logits, auxiliary logits).
    fn ocr_head(
        &mut self,
        feats: NodeId,
        o: OcrSpec,
        num_classes: usize,
        final_kernel: usize,
    ) -> (NodeId, NodeId) {
        let place = Place::Head;
        let aux = self.seg_last_layer(feats, "aux_head", num_classes, final_kernel);
        let feats = self.conv_bias_bn_relu(feats, "conv3x3_ocr", o.mid_channels, 3, 1, place);
        let s = self.shape(feats);
        let context = self.g.add(
            Node {
                op: Op::SpatialGather,
                shape: Shape {
                    c: s.c,
                    h: num_classes,
                    w: 1,
                },
                name: "ocr_gather_head".into(),
                place,
            },
            &[aux, feats],
        );
        let ocb = "ocr_distri_head.object_context_block";
        let query = self.conv_bnrelu(feats, &format!("{ocb}.f_pixel"), o.key_channels, 2);
        let key = self.conv_bnrelu(context, &format!("{ocb}.f_object"), o.key_channels, 2);
        let value = self.conv_bnrelu(context, &format!("{ocb}.f_down"), o.key_channels, 1);
        let attended = self.g.add(
            Node {
                op: Op::ObjectAttention,
                shape: Shape {
                    c: o.key_channels,
                    h: s.h,
                    w: s.w,
                },
                name: ocb.into(),
                place,
            },
            &[query, key, value],
        );
        let up = self.conv_bnrelu(attended, &format!("{ocb}.f_up"), o.mid_channels, 1);
        let cat = self.concat(&[up, feats], "ocr_distri_head.concat".into());
        let y = self.conv_bnrelu(cat, "ocr_distri_head.conv_bn_dropout", o.mid_channels, 1);
        let y = self.conv(y, "cls_head", num_classes, 1, 1, 0, true, place);
        (y, aux)
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
        exchange: Resize,
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
                    let (resize, name) = match exchange {
                        Resize::Bilinear { .. } => (exchange, format!("{f}.resize")),
                        Resize::Nearest { .. } => (
                            Resize::Nearest {
                                factor: 1 << (j - i),
                            },
                            format!("{f}.2"),
                        ),
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
