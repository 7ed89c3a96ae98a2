//! Pass tests: small hand-built graphs through one `check()` helper, the verifier's
//! negative cases, and raw-versus-optimized differential runs of the interpreter.

use hrnet_ir::interp;
use hrnet_ir::ir::{BatchNorm, Conv, Graph, Node, NodeId, Op, Place, Resize, Shape};
use hrnet_ir::passes::{self, PASSES};
use hrnet_ir::print::to_text;
use hrnet_ir::verify::verify;
use std::collections::HashMap;

// ---- building blocks -----------------------------------------------------------------

fn node(op: Op, shape: Shape, name: &str) -> Node {
    Node {
        op,
        shape,
        name: name.into(),
        place: Place::Stem,
    }
}

fn sh(c: usize, h: usize, w: usize) -> Shape {
    Shape { c, h, w }
}

fn conv_op(cin: usize, cout: usize, k: usize, s: usize) -> Op {
    Op::Conv(Conv {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        padding: k / 2,
        bias: false,
        bn: None,
        residual: false,
        upsample: 1,
        relu: false,
    })
}

fn bn_op() -> Op {
    Op::BatchNorm(BatchNorm { eps: 1e-5 })
}

/// Runs `pass` on `g`, verifies, and compares the printed graph with `expected`
/// (ignoring the header line).
fn check(mut g: Graph, pass: &str, expect_changed: bool, expected: &str) {
    verify(&g).expect("test graph is valid");
    let p = passes::by_name(pass).unwrap();
    let changed = (p.run)(&mut g);
    verify(&g).unwrap_or_else(|e| panic!("after {pass}: {e}"));
    assert_eq!(changed, expect_changed, "{pass} changed");
    let text = to_text(&g);
    let body: Vec<&str> = text.lines().skip(1).collect();
    let want: Vec<&str> = expected.trim().lines().map(str::trim).collect();
    assert_eq!(body, want, "\n{}", body.join("\n"));
}

/// input → conv → bn → relu → output, plus whatever `extra` adds.
fn conv_bn_relu() -> (Graph, NodeId) {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let c = g.add(node(conv_op(3, 4, 3, 1), sh(4, 8, 8), "c"), &[x]);
    let b = g.add(node(bn_op(), sh(4, 8, 8), "b"), &[c]);
    let r = g.add(node(Op::Relu, sh(4, 8, 8), "r"), &[b]);
    (g, r)
}

// ---- per-pass tests ----------------------------------------------------------------------

#[test]
fn fold_conv_bn_folds() {
    let (mut g, r) = conv_bn_relu();
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[r]);
    check(
        g,
        "fold_conv_bn",
        true,
        "
        %0 = input : 3x8x8  # input @stem
        %1 = conv 3x3 s1 p1 3->4 bn(b) (%0) : 4x8x8  # c @stem
        %2 = relu (%1) : 4x8x8  # r @stem
        %3 = output 0 (%2) : 4x8x8  # out @stem
        ",
    );
}

#[test]
fn fold_conv_bn_leaves_a_conv_read_elsewhere() {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let c = g.add(node(conv_op(3, 4, 3, 1), sh(4, 8, 8), "c"), &[x]);
    let b = g.add(node(bn_op(), sh(4, 8, 8), "b"), &[c]);
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "o0"), &[b]);
    g.add(node(Op::Output { index: 1 }, sh(4, 8, 8), "o1"), &[c]);
    check(
        g,
        "fold_conv_bn",
        false,
        "
        %0 = input : 3x8x8  # input @stem
        %1 = conv 3x3 s1 p1 3->4 (%0) : 4x8x8  # c @stem
        %2 = batch_norm eps=1e-5 (%1) : 4x8x8  # b @stem
        %3 = output 0 (%2) : 4x8x8  # o0 @stem
        %4 = output 1 (%1) : 4x8x8  # o1 @stem
        ",
    );
}

#[test]
fn fuse_upsample_add_takes_either_operand() {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let lo = g.add(node(conv_op(3, 3, 3, 2), sh(3, 4, 4), "lo"), &[x]);
    let up = g.add(
        node(Op::Resize(Resize::Nearest { factor: 2 }), sh(3, 8, 8), "up"),
        &[lo],
    );
    // The resize is operand 0: the pass swaps it to operand 1 (addition commutes exactly).
    let a = g.add(node(Op::Add { relu: false }, sh(3, 8, 8), "add"), &[up, x]);
    g.add(node(Op::Output { index: 0 }, sh(3, 8, 8), "out"), &[a]);
    check(
        g,
        "fuse_upsample_add",
        true,
        "
        %0 = input : 3x8x8  # input @stem
        %1 = conv 3x3 s2 p1 3->3 (%0) : 3x4x4  # lo @stem
        %2 = add_resized nearest x2 (%0, %1) : 3x8x8  # add @stem
        %3 = output 0 (%2) : 3x8x8  # out @stem
        ",
    );
}

#[test]
fn fuse_epilogue_residual_then_relu() {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let c1 = g.add(node(conv_op(3, 3, 3, 1), sh(3, 8, 8), "c1"), &[x]);
    let r1 = g.add(node(Op::Relu, sh(3, 8, 8), "r1"), &[c1]);
    let c2 = g.add(node(conv_op(3, 3, 3, 1), sh(3, 8, 8), "c2"), &[r1]);
    let a = g.add(node(Op::Add { relu: false }, sh(3, 8, 8), "add"), &[c2, x]);
    let r2 = g.add(node(Op::Relu, sh(3, 8, 8), "r2"), &[a]);
    g.add(node(Op::Output { index: 0 }, sh(3, 8, 8), "out"), &[r2]);
    check(
        g,
        "fuse_epilogue",
        true,
        "
        %0 = input : 3x8x8  # input @stem
        %1 = conv 3x3 s1 p1 3->3 relu (%0) : 3x8x8  # c1 @stem
        %2 = conv 3x3 s1 p1 3->3 +residual relu (%1, %0) : 3x8x8  # c2 @stem
        %3 = output 0 (%2) : 3x8x8  # out @stem
        ",
    );
}

#[test]
fn fuse_epilogue_keeps_a_conv_read_twice() {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let c = g.add(node(conv_op(3, 3, 3, 1), sh(3, 8, 8), "c"), &[x]);
    let a = g.add(node(Op::Add { relu: false }, sh(3, 8, 8), "add"), &[c, x]);
    g.add(node(Op::Output { index: 0 }, sh(3, 8, 8), "o0"), &[a]);
    g.add(node(Op::Output { index: 1 }, sh(3, 8, 8), "o1"), &[c]);
    check(
        g,
        "fuse_epilogue",
        false,
        "
        %0 = input : 3x8x8  # input @stem
        %1 = conv 3x3 s1 p1 3->3 (%0) : 3x8x8  # c @stem
        %2 = add (%1, %0) : 3x8x8  # add @stem
        %3 = output 0 (%2) : 3x8x8  # o0 @stem
        %4 = output 1 (%1) : 3x8x8  # o1 @stem
        ",
    );
}

#[test]
fn dce_removes_chains_nobody_reads() {
    let mut g = Graph::new("t");
    let x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    let c = g.add(node(conv_op(3, 3, 3, 1), sh(3, 8, 8), "c"), &[x]);
    g.add(node(Op::Output { index: 0 }, sh(3, 8, 8), "out"), &[c]);
    // A chain of two nodes whose result nobody reads (the verifier would reject it, so
    // the check below runs the pass directly).
    let d1 = g.add(node(conv_op(3, 3, 3, 1), sh(3, 8, 8), "dead1"), &[x]);
    g.add(node(Op::Relu, sh(3, 8, 8), "dead2"), &[d1]);
    assert!(verify(&g).is_err());
    assert!(passes::dce::dce(&mut g));
    verify(&g).unwrap();
    assert_eq!(g.g.node_count(), 3);
    assert!(!passes::dce::dce(&mut g));
}

#[test]
fn plan_memory_reuses_dead_buffers() {
    let mut g = Graph::new("t");
    let mut x = g.add(node(Op::Input, sh(3, 8, 8), "input"), &[]);
    for i in 0..6 {
        let cin = if i == 0 { 3 } else { 4 };
        x = g.add(
            node(conv_op(cin, 4, 3, 1), sh(4, 8, 8), &format!("c{i}")),
            &[x],
        );
    }
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[x]);
    let plan = hrnet_ir::memory::plan_memory(&g, &|s| s.len() * 4).unwrap();
    plan.check(&g).unwrap();
    // Five arena values (the last conv writes the output buffer), two alive at a time.
    assert_eq!(plan.total_bytes, 5 * 1024);
    assert_eq!(plan.arena_bytes, 2 * 1024);
}

// ---- verifier negative cases ---------------------------------------------------------------

#[test]
fn verifier_names_the_node_with_a_wrong_shape() {
    let (mut g, r) = conv_bn_relu();
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[r]);
    let c = g.g.node_indices().find(|&n| g.node(n).name == "c").unwrap();
    g.node_mut(c).shape = sh(4, 7, 8);
    let e = verify(&g).unwrap_err();
    assert_eq!(e.node.as_ref().map(|n| n.1.as_str()), Some("c"), "{e}");
    assert!(e.to_string().contains("4x7x8"), "{e}");
}

#[test]
fn verifier_rejects_missing_operand_and_duplicate_keys() {
    let (mut g, r) = conv_bn_relu();
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[r]);
    let b = g.g.node_indices().find(|&n| g.node(n).name == "b").unwrap();
    let c = g.operands(b)[0];
    g.set_operands(b, &[c, c]);
    let e = verify(&g).unwrap_err();
    assert!(
        e.to_string().contains("operand slots [0], has [0, 1]"),
        "{e}"
    );
    assert_eq!(e.node.map(|n| n.1), Some("b".to_string()));

    let (mut g, r) = conv_bn_relu();
    let c2 = g.add(node(conv_op(4, 4, 3, 1), sh(4, 8, 8), "c"), &[r]);
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[c2]);
    assert!(verify(&g).unwrap_err().to_string().contains("used twice"));
}

#[test]
fn pass_manager_reports_the_pass_that_broke_the_graph() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/tiny_pose/config.yaml"
    ))
    .unwrap();
    let (_, mut g) = hrnet_ir::build(&src).unwrap();
    let breaker = passes::Pass {
        name: "breaker",
        summary: "test",
        run: |g| {
            let n = g.g.node_indices().nth(3).unwrap();
            g.node_mut(n).shape.c += 1;
            true
        },
    };
    let e = passes::run(&mut g, &[&breaker], true, |_, _| {}).unwrap_err();
    assert_eq!(e.pass, "breaker");
    assert!(e.to_string().contains("bug in hrnet"), "{e}");
}

// ---- differential: raw IR versus optimized IR --------------------------------------------

/// Deterministic pseudo-random weights shaped like a trained network's.
fn random_weights(g: &Graph, seed: u64) -> HashMap<String, Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    g.tensor_specs()
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let fan_in: usize = t.shape.iter().skip(1).product::<usize>().max(1);
            let v = (0..n)
                .map(|_| {
                    let u = next();
                    if t.name.ends_with("running_var") {
                        0.5 + u
                    } else if t.shape.len() == 4 {
                        (u - 0.5) * (12.0 / fan_in as f32).sqrt()
                    } else {
                        (u - 0.5) * 0.4
                            + if t.name.ends_with(".weight") {
                                1.0
                            } else {
                                0.0
                            }
                    }
                })
                .collect();
            (t.name, v)
        })
        .collect()
}

fn raw_vs_optimized(src: &str) {
    let (_, raw) = hrnet_ir::build(src).unwrap();
    let mut opt = raw.clone();
    let all: Vec<_> = PASSES.iter().collect();
    passes::run(&mut opt, &all, true, |_, _| {}).unwrap();
    assert_eq!(raw.tensor_specs().len(), opt.tensor_specs().len());
    let w = random_weights(&raw, 0x9e3779b97f4a7c15);
    let input_shape = raw.node(raw.inputs()[0]).shape;
    let mut s = 1u32;
    let input: Vec<f32> = (0..input_shape.len())
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect();
    let a = interp::run(&raw, &w, &input).unwrap();
    let b = interp::run(&opt, &w, &input).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(max > 0.0 && diff <= 1e-5 * max, "diff {diff} max {max}");
    }
}

const TINY_SEG: &str = "
DATASET:
  NUM_CLASSES: 3
MODEL:
  NAME: seg_hrnet
  IMAGE_SIZE: [36, 30]
  EXTRA:
    STAGE1: {NUM_MODULES: 1, NUM_BRANCHES: 1, BLOCK: BOTTLENECK, NUM_BLOCKS: [1], NUM_CHANNELS: [8], FUSE_METHOD: SUM}
    STAGE2: {NUM_MODULES: 1, NUM_BRANCHES: 2, BLOCK: BASIC, NUM_BLOCKS: [1, 1], NUM_CHANNELS: [4, 8], FUSE_METHOD: SUM}
    STAGE3: {NUM_MODULES: 1, NUM_BRANCHES: 3, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [4, 8, 16], FUSE_METHOD: SUM}
    STAGE4: {NUM_MODULES: 1, NUM_BRANCHES: 3, BLOCK: BOTTLENECK, NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [4, 8, 16], FUSE_METHOD: SUM}
";

#[test]
fn optimized_equals_raw_on_the_tiny_pose_network() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/tiny_pose/config.yaml"
    ))
    .unwrap();
    raw_vs_optimized(&src);
}

#[test]
fn optimized_equals_raw_with_bilinear_exchange_and_bottleneck_branches() {
    // Odd sizes (36x30 → 9x8, 5x4, 3x2), bilinear resizes, Bottleneck branches whose first
    // block gets a shortcut conv, and a stage-4 transition that widens existing branches.
    raw_vs_optimized(TINY_SEG);
}

#[test]
fn a_folded_batchnorm_keeps_its_own_epsilon() {
    // ε = 0.5 instead of HRNet's 1e-5: folding must carry it to the conv, and the interpreter
    // must use the folded conv's ε (not a constant) for the optimized graph to match.
    let (mut g, r) = conv_bn_relu();
    for n in g.g.node_indices().collect::<Vec<_>>() {
        if let Op::BatchNorm(b) = &mut g.node_mut(n).op {
            b.eps = 0.5;
        }
    }
    g.add(node(Op::Output { index: 0 }, sh(4, 8, 8), "out"), &[r]);
    let raw = g.clone();
    let all: Vec<_> = PASSES.iter().collect();
    passes::run(&mut g, &all, true, |_, _| {}).unwrap();
    let folded: Vec<_> =
        g.g.node_weights()
            .filter_map(|n| match &n.op {
                Op::Conv(c) => c.bn.clone(),
                _ => None,
            })
            .collect();
    assert_eq!(
        folded,
        [hrnet_ir::ir::FoldedBn {
            prefix: "b".into(),
            eps: 0.5
        }]
    );
    let mut w = random_weights(&raw, 7);
    // Variances near zero make ε matter.
    w.insert("b.running_var".into(), vec![0.01; 4]);
    let input: Vec<f32> = (0..3 * 8 * 8).map(|i| (i % 7) as f32 - 3.0).collect();
    let a = interp::run(&raw, &w, &input).unwrap();
    let b = interp::run(&g, &w, &input).unwrap();
    let diff = a[0]
        .iter()
        .zip(&b[0])
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff <= 1e-5, "folded ε ignored: max diff {diff}");
}
