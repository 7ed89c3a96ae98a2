//! Every kind of bad config gives one clear message naming the YAML key path and its line
//! and column. Each test checks the path and position exactly and snapshots the rendering.

use hrnet_ir::front::parse;

/// The tiny fixture config, a known-good starting point.
fn base() -> String {
    std::fs::read_to_string(hrnet_tests::data_dir().join("tiny_pose/config.yaml")).unwrap()
}

/// Applies `from → to` (which must occur in the base config) and returns the error.
fn error_after(from: &str, to: &str) -> hrnet_ir::ConfigError {
    let src = base();
    assert!(
        src.contains(from),
        "test setup: `{from}` not in the base config"
    );
    parse(&src.replacen(from, to, 1)).expect_err("the config should be rejected")
}

fn check(e: &hrnet_ir::ConfigError, path: &str, line: usize) {
    assert_eq!(e.path, path, "{e}");
    assert_eq!(e.pos.map(|p| p.line), Some(line), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

#[test]
fn base_config_is_valid() {
    parse(&base()).unwrap();
}

#[test]
fn num_blocks_length_differs_from_num_branches() {
    let e = error_after("NUM_BLOCKS: [1, 1, 1]", "NUM_BLOCKS: [1, 1]");
    check(&e, "MODEL.EXTRA.STAGE3.NUM_BLOCKS", 29);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn num_channels_length_differs_from_num_branches() {
    let e = error_after(
        "NUM_CHANNELS: [8, 16, 32, 64]",
        "NUM_CHANNELS: [8, 16, 32, 64, 128]",
    );
    check(&e, "MODEL.EXTRA.STAGE4.NUM_CHANNELS", 37);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn unknown_block() {
    let e = error_after("BLOCK: BOTTLENECK", "BLOCK: BOTTLENEK");
    check(&e, "MODEL.EXTRA.STAGE1.BLOCK", 14);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn fuse_method_other_than_sum() {
    let e = error_after(
        "      FUSE_METHOD: SUM\n    STAGE3",
        "      FUSE_METHOD: CAT\n    STAGE3",
    );
    check(&e, "MODEL.EXTRA.STAGE2.FUSE_METHOD", 24);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn zero_channels() {
    let e = error_after("NUM_CHANNELS: [8, 16, 32]", "NUM_CHANNELS: [8, 0, 32]");
    check(&e, "MODEL.EXTRA.STAGE3.NUM_CHANNELS[1]", 30);
    assert_eq!(e.pos.unwrap().col, 25);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn negative_blocks() {
    let e = error_after("NUM_BLOCKS: [1, 1]", "NUM_BLOCKS: [1, -2]");
    check(&e, "MODEL.EXTRA.STAGE2.NUM_BLOCKS[1]", 22);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn absurd_channels() {
    let e = error_after(
        "NUM_CHANNELS: [8, 16, 32, 64]",
        "NUM_CHANNELS: [8, 16, 32, 1000000]",
    );
    check(&e, "MODEL.EXTRA.STAGE4.NUM_CHANNELS[3]", 37);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn absurd_modules() {
    let e = error_after("NUM_MODULES: 2", "NUM_MODULES: 99999999999");
    check(&e, "MODEL.EXTRA.STAGE4.NUM_MODULES", 33);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn absurd_image_size() {
    let e = error_after("IMAGE_SIZE: [64, 96]", "IMAGE_SIZE: [8192, 8192]");
    check(&e, "MODEL.IMAGE_SIZE", 7);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn missing_stage() {
    let src = base();
    let start = src.find("    STAGE3:").unwrap();
    let end = src.find("    STAGE4:").unwrap();
    let e = parse(&format!("{}{}", &src[..start], &src[end..])).unwrap_err();
    check(&e, "MODEL.EXTRA.STAGE3", 9);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn image_size_not_a_multiple_of_32() {
    let e = error_after("IMAGE_SIZE: [64, 96]", "IMAGE_SIZE: [64, 100]");
    check(&e, "MODEL.IMAGE_SIZE", 7);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn yaml_syntax_error() {
    let e = error_after("NAME: pose_hrnet", "NAME: 'pose_hrnet");
    assert!(e.to_string().contains("YAML syntax error"), "{e}");
    assert!(e.pos.is_some(), "{e}");
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn wrong_type() {
    let e = error_after("NUM_MODULES: 2", "NUM_MODULES: two");
    check(&e, "MODEL.EXTRA.STAGE4.NUM_MODULES", 33);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn empty_file() {
    for src in ["", "\n\n", "# only a comment\n", "---\n"] {
        let e = parse(src).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
    insta::assert_snapshot!(parse("").unwrap_err().to_string());
}

#[test]
fn not_a_mapping() {
    let e = parse("- 1\n- 2\n").unwrap_err();
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn unsupported_model_name() {
    let e = error_after("NAME: pose_hrnet", "NAME: pose_higher_hrnet");
    check(&e, "MODEL.NAME", 5);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn missing_model() {
    let e = parse("DATASET:\n  NUM_CLASSES: 3\n").unwrap_err();
    assert_eq!(e.path, "MODEL");
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn heatmap_size_mismatch() {
    let e = error_after("HEATMAP_SIZE: [16, 24]", "HEATMAP_SIZE: [16, 32]");
    check(&e, "MODEL.HEATMAP_SIZE", 8);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn final_conv_kernel() {
    let e = error_after("FINAL_CONV_KERNEL: 1", "FINAL_CONV_KERNEL: 5");
    check(&e, "MODEL.EXTRA.FINAL_CONV_KERNEL", 10);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn fewer_branches_than_before() {
    let e = error_after(
        "NUM_BRANCHES: 4\n      BLOCK: BASIC\n      NUM_BLOCKS: [1, 1, 1, 1]\n      NUM_CHANNELS: [8, 16, 32, 64]",
        "NUM_BRANCHES: 2\n      BLOCK: BASIC\n      NUM_BLOCKS: [1, 1]\n      NUM_CHANNELS: [8, 16]",
    );
    check(&e, "MODEL.EXTRA.STAGE4.NUM_BRANCHES", 34);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn ignored_keys_are_accepted() {
    let src = base().replace(
        "EXTRA:\n",
        "EXTRA:\n    PRETRAINED_LAYERS: ['*']\n    WITH_HEAD: true\n    STEM_INPLANES: 64\n",
    ) + "TRAIN:\n  LR: 0.001\nGPUS: (0,1,2,3)\n";
    parse(&src).unwrap();
}

#[test]
fn deeply_nested_yaml_is_refused_before_parsing() {
    // 200 KB of brackets kept serde_yaml busy for over 20 s; the pre-scan refuses it at once.
    let e = error_after(
        "NUM_CHANNELS: [8, 16, 32, 64]",
        &format!(
            "NUM_CHANNELS: {}8{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    check(&e, "MODEL.EXTRA.STAGE4.NUM_CHANNELS", 37);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let src = base() + &format!("# {}\n", "x".repeat(1 << 20));
    let e = parse(&src).unwrap_err();
    assert_eq!((e.path.as_str(), e.pos), ("", None), "{e}");
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn head_activation_over_the_limit() {
    // 100000 heatmaps of 512x512: 105 GB, which passed before the head was counted.
    let src = base()
        .replace("NUM_JOINTS: 5", "NUM_JOINTS: 100000")
        .replace("IMAGE_SIZE: [64, 96]", "IMAGE_SIZE: [2048, 2048]")
        .replace("HEATMAP_SIZE: [16, 24]", "HEATMAP_SIZE: [512, 512]");
    let e = parse(&src).unwrap_err();
    check(&e, "MODEL.NUM_JOINTS", 6);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn too_many_parameters() {
    // 4096 channels in 64 modules: 1.3e12 parameters, within every per-key limit.
    let src = base().replace("NUM_MODULES: 2", "NUM_MODULES: 64").replace(
        "NUM_CHANNELS: [8, 16, 32, 64]",
        "NUM_CHANNELS: [4096, 4096, 4096, 4096]",
    );
    let e = parse(&src).unwrap_err();
    check(&e, "MODEL.EXTRA.STAGE4", 32);
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn activations_alive_at_once_over_the_limit() {
    // Every single activation is under its limit, and so are the parameters, but a module's
    // branches and a block's intermediates at 1000 channels and 512x512 together are not.
    let src = base()
        .replace("IMAGE_SIZE: [64, 96]", "IMAGE_SIZE: [2048, 2048]")
        .replace("HEATMAP_SIZE: [16, 24]", "HEATMAP_SIZE: [512, 512]")
        .replace(
            "NUM_CHANNELS: [8, 16, 32, 64]",
            "NUM_CHANNELS: [1000, 16, 32, 64]",
        );
    let e = parse(&src).unwrap_err();
    check(&e, "MODEL.EXTRA.STAGE4", 32);
    insta::assert_snapshot!(e.to_string());
}
