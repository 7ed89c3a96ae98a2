//! Printers: a stable text form (snapshots, `hrnetc graph`) and Graphviz DOT (for people).
//!
//! The text form lists nodes in schedule order, renumbered densely (`%0`, `%1`, …), one line
//! per node: `%k = op attrs (operands) : CxHxW  # name @place [buffer]`. The same graph
//! always prints the same bytes.

use crate::ir::{Graph, NodeId, Op, Place, Resize};
use std::collections::HashMap;
use std::fmt::Write;

fn numbering(g: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = g.schedule().unwrap_or_else(|| g.g.node_indices().collect());
    let num = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    (order, num)
}

/// The op with its attributes, e.g. `conv 3x3 s2 p1 3->64 bn(bn1) relu`.
pub fn op_text(op: &Op) -> String {
    match op {
        Op::Conv(c) => {
            let mut s = format!(
                "conv {k}x{k} s{} p{} {}->{}",
                c.stride,
                c.padding,
                c.in_channels,
                c.out_channels,
                k = c.kernel
            );
            if c.bias {
                s.push_str(" bias");
            }
            if let Some(bn) = &c.bn {
                let _ = write!(s, " bn({})", bn.prefix);
            }
            if c.upsample > 1 {
                let _ = write!(s, " nearest x{}", c.upsample);
            }
            if c.residual {
                s.push_str(" +residual");
            }
            if c.relu {
                s.push_str(" relu");
            }
            s
        }
        Op::BatchNorm(b) => format!("batch_norm eps={:e}", b.eps),
        Op::Add { relu } => format!("add{}", if *relu { " relu" } else { "" }),
        Op::Resize(r) => format!("resize {}", resize_text(r)),
        Op::AddResized { resize, relu } => {
            format!(
                "add_resized {}{}",
                resize_text(resize),
                if *relu { " relu" } else { "" }
            )
        }
        Op::Output { index } => format!("output {index}"),
        Op::Linear {
            in_features,
            out_features,
        } => format!("linear {in_features}->{out_features}"),
        Op::Input
        | Op::Relu
        | Op::Concat { .. }
        | Op::GlobalAvgPool
        | Op::SpatialGather
        | Op::ObjectAttention => op.mnemonic().to_string(),
    }
}

fn resize_text(r: &Resize) -> String {
    match r {
        Resize::Nearest { factor } => format!("nearest x{factor}"),
        Resize::Bilinear {
            align_corners: false,
        } => "bilinear".into(),
        Resize::Bilinear {
            align_corners: true,
        } => "bilinear align_corners".into(),
    }
}

/// The stable text form.
pub fn to_text(g: &Graph) -> String {
    let (order, num) = numbering(g);
    let mut out = String::new();
    let _ = writeln!(out, "; {} — {} nodes", g.name, order.len());
    for &n in &order {
        let node = g.node(n);
        let operands: Vec<String> = g
            .operands(n)
            .iter()
            .map(|o| format!("%{}", num[o]))
            .collect();
        let args = if operands.is_empty() {
            String::new()
        } else {
            format!(" ({})", operands.join(", "))
        };
        let _ = write!(
            out,
            "%{} = {}{} : {}  # {} @{}",
            num[&n],
            op_text(&node.op),
            args,
            node.shape,
            node.name,
            node.place
        );
        out.push('\n');
    }
    out
}

/// The section a node is drawn in.
fn cluster(p: &Place) -> (String, String) {
    match *p {
        Place::Stem => ("stem".into(), "stem".into()),
        Place::Layer1 { .. } => ("layer1".into(), "layer1".into()),
        Place::Transition { stage, .. } => (
            format!("transition{}", stage - 1),
            format!("transition{}", stage - 1),
        ),
        Place::Block { stage, module, .. } | Place::Fuse { stage, module, .. } => (
            format!("stage{stage}_{module}"),
            format!("stage{stage}.{module}"),
        ),
        Place::Head => ("head".into(), "head".into()),
    }
}

/// Graphviz DOT: one box per node, clustered by stem, layer1, transition, module and head.
pub fn to_dot(g: &Graph) -> String {
    let (order, num) = numbering(g);
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", g.name);
    let _ = writeln!(
        out,
        "  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    let mut clusters: Vec<(String, String, Vec<NodeId>)> = Vec::new();
    for &n in &order {
        let (id, label) = cluster(&g.node(n).place);
        match clusters.iter_mut().find(|c| c.0 == id) {
            Some(c) => c.2.push(n),
            None => clusters.push((id, label, vec![n])),
        }
    }
    for (id, label, nodes) in &clusters {
        let _ = writeln!(out, "  subgraph cluster_{id} {{\n    label=\"{label}\";");
        for n in nodes {
            let node = g.node(*n);
            let _ = writeln!(
                out,
                "    n{} [label=\"{}\\n{}\\n{}\"];",
                num[n],
                op_text(&node.op).replace('"', "'"),
                node.shape,
                node.name
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for &n in &order {
        for (k, src) in g.operands(n).iter().enumerate() {
            if k == 0 {
                let _ = writeln!(out, "  n{} -> n{};", num[src], num[&n]);
            } else {
                let _ = writeln!(
                    out,
                    "  n{} -> n{} [label=\"{k}\", style=dashed];",
                    num[src], num[&n]
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
