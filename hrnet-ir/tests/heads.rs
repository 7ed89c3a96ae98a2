//! The classification, segmentation and OCR heads: official parameter counts, graph shapes,
//! defaults, and the size override.

use hrnet_ir::front::Task;
use hrnet_ir::ir::{Op, Resize, Shape};
use hrnet_ir::{lower, stats};

fn config(rel: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/data/configs/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const SEG_W48: &str = "seg/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml";
const OCR_W48: &str =
    "seg_ocr_branch/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml";
const CLS_W18: &str = "cls/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml";

#[test]
fn official_parameter_counts() {
    for (rel, params) in [
        (SEG_W48, 65_859_379),
        (CLS_W18, 21_299_004),
        (OCR_W48, 70_372_678),
    ] {
        let (_, g) = hrnet_ir::build(&config(rel)).unwrap();
        assert_eq!(stats::stats(&g).params, params, "{rel}");
    }
}

#[test]
fn head_shapes_and_defaults() {
    let (net, g) = hrnet_ir::build(&config(SEG_W48)).unwrap();
    assert!(matches!(
        net.task,
        Task::Segmentation {
            num_classes: 19,
            align_corners: false,
            ocr: None,
            ..
        }
    ));
    let out = g.node(g.outputs()[0]).shape;
    assert_eq!(
        out,
        Shape {
            c: 19,
            h: 256,
            w: 512
        },
        "1/4 of TEST.IMAGE_SIZE 2048x1024"
    );
    let concat =
        g.g.node_indices()
            .find(|&n| matches!(g.node(n).op, Op::Concat { .. }))
            .unwrap();
    assert_eq!(g.node(concat).shape.c, 720, "15·48 channels");

    let (net, g) = hrnet_ir::build(&config(OCR_W48)).unwrap();
    let Task::Segmentation {
        align_corners, ocr, ..
    } = net.task
    else {
        panic!("{:?}", net.task)
    };
    assert!(align_corners, "HRNet-OCR's default");
    let ocr = ocr.unwrap();
    assert_eq!((ocr.mid_channels, ocr.key_channels), (512, 256));
    let outs = g.outputs();
    assert_eq!(outs.len(), 2, "OCR logits and aux logits");
    for o in outs {
        assert_eq!(
            g.node(o).shape,
            Shape {
                c: 19,
                h: 256,
                w: 512
            }
        );
    }
    let resizes: Vec<_> =
        g.g.node_indices()
            .filter_map(|n| match g.node(n).op {
                Op::Resize(r) | Op::AddResized { resize: r, .. } => Some(r),
                _ => None,
            })
            .collect();
    assert!(!resizes.is_empty());
    assert!(resizes.iter().all(|r| *r
        == Resize::Bilinear {
            align_corners: true
        }));

    // MODEL.ALIGN_CORNERS wins over the default.
    let src = config(OCR_W48).replace("  NUM_OUTPUTS: 2\n", "  ALIGN_CORNERS: false\n");
    let (net, _) = hrnet_ir::build(&src).unwrap();
    assert!(matches!(
        net.task,
        Task::Segmentation {
            align_corners: false,
            ..
        }
    ));

    let (_, g) = hrnet_ir::build(&config(CLS_W18)).unwrap();
    let out = g.outputs()[0];
    assert_eq!(
        g.node(out).shape,
        Shape {
            c: 1000,
            h: 1,
            w: 1
        }
    );
    let specs = g.tensor_specs();
    let last = &specs[specs.len() - 2..];
    assert_eq!(last[0].name, "classifier.weight");
    assert_eq!(last[0].shape, [1000, 2048]);
    assert!(specs
        .iter()
        .any(|t| t.name == "downsamp_modules.2.0.bias" && t.shape == [1024]));
    assert!(
        specs
            .iter()
            .any(|t| t.name == "incre_modules.3.0.downsample.0.weight"
                && t.shape == [1024, 144, 1, 1])
    );
}

#[test]
fn segmentation_lowers_at_any_size_and_rounds_up() {
    let (net, _) = hrnet_ir::build(&config(SEG_W48)).unwrap();
    let g = lower::lower_at(&net, 72, 104).unwrap();
    hrnet_ir::verify::verify(&g).unwrap();
    assert_eq!(
        g.node(g.inputs()[0]).shape,
        Shape {
            c: 3,
            h: 72,
            w: 104
        }
    );
    assert_eq!(
        g.node(g.outputs()[0]).shape,
        Shape {
            c: 19,
            h: 18,
            w: 26
        }
    );
    // Branch sizes 18x26, 9x13, 5x7, 3x4: the resizes of the head read them.
    let mut sizes: Vec<(usize, usize)> =
        g.g.node_indices()
            .filter(|&n| g.node(n).name.starts_with("head.resize"))
            .map(|n| {
                let s = g.node(g.operands(n)[0]).shape;
                (s.h, s.w)
            })
            .collect();
    sizes.sort();
    assert_eq!(sizes, [(3, 4), (5, 7), (9, 13)]);

    let e = lower::lower_at(&net, 31, 200).unwrap_err();
    assert!(e.to_string().contains("at least 32 pixels"), "{e}");
    let (pose, _) = hrnet_ir::build(&config("pose/w32_256x192_adam_lr1e-3.yaml")).unwrap();
    let e = lower::lower_at(&pose, 250, 192).unwrap_err();
    assert!(e.to_string().contains("not a multiple of 32"), "{e}");
    assert!(lower::lower_at(&pose, 384, 288).is_ok());
}

#[test]
fn classification_needs_four_branches() {
    let src = config(CLS_W18);
    let start = src.find("    STAGE4:").unwrap();
    let three = format!(
        "{}    STAGE4:\n      NUM_MODULES: 1\n      NUM_BRANCHES: 3\n      BLOCK: BASIC\n      NUM_BLOCKS: [1, 1, 1]\n      NUM_CHANNELS: [18, 36, 72]\n      FUSE_METHOD: SUM\n",
        &src[..start]
    );
    let e = hrnet_ir::build(&three).unwrap_err().to_string();
    assert!(
        e.contains("MODEL.EXTRA.STAGE4.NUM_BRANCHES") && e.contains("4 branches"),
        "{e}"
    );
}

#[test]
fn stage1_num_branches_is_never_read() {
    // The official configs misspell it (NUM_RANCHES); any value is ignored, as there.
    let src = config(SEG_W48);
    assert!(src.contains("NUM_RANCHES: 1"));
    let (_, a) = hrnet_ir::build(&src).unwrap();
    let (_, b) = hrnet_ir::build(&src.replace("NUM_RANCHES: 1", "NUM_BRANCHES: 3")).unwrap();
    assert_eq!(hrnet_ir::print::to_text(&a), hrnet_ir::print::to_text(&b));
}
