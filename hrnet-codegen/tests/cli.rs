//! `hrnetc` as a user runs it: exit codes, messages on stderr, and files written or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn hrnetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrnetc"))
        .args(args)
        .env(
            "HRNET_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("hrnet-cache"),
        )
        .output()
        .expect("hrnetc starts")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Fails with one `error:` message on stderr, exit status 1, and no panic.
fn fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn graph_stats_match_the_official_counts() {
    let out = hrnetc(&[
        "graph",
        s(&data().join("configs/pose/w32_256x192_adam_lr1e-3.yaml")),
        "--stats",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("MACs         7645003776 (7.645e9)"), "{text}");
    assert!(text.contains("parameters   28536113"), "{text}");
    let out = hrnetc(&[
        "graph",
        s(&data().join("configs/pose/w48_256x192_adam_lr1e-3.yaml")),
        "--stats",
        "--passes",
        "none",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("(15.692e9)") && text.contains("parameters   63595745"),
        "{text}"
    );
    // The heads: HRNetV2-W48 segmentation, HRNet-W18-C, HRNet-OCR W48.
    for (cfg, params) in [
        (
            "configs/seg/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
            65_859_379,
        ),
        ("configs/cls/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", 21_299_004),
        (
            "configs/seg_ocr_branch/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
            70_372_678,
        ),
    ] {
        let out = hrnetc(&["graph", s(&data().join(cfg)), "--stats"]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{cfg}");
        assert!(text.contains(&format!("parameters   {params}\n")), "{cfg}: {text}");
    }
}

#[test]
fn graph_formats_and_pass_selection() {
    let cfg = data().join("tiny_pose/config.yaml");
    let dot = hrnetc(&[
        "graph",
        s(&cfg),
        "--format",
        "dot",
        "--passes",
        "fold_conv_bn",
    ]);
    assert!(dot.status.success());
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));
    let after = hrnetc(&[
        "graph",
        s(&cfg),
        "--passes",
        "all",
        "--print-after",
        "fold_conv_bn",
        "--time-passes",
    ]);
    assert!(after.status.success());
    assert!(String::from_utf8_lossy(&after.stdout).contains("; after fold_conv_bn"));
    assert!(String::from_utf8_lossy(&after.stderr).contains("plan_memory"));
    fails(
        &hrnetc(&["graph", s(&cfg), "--passes", "fold,dce"]),
        "unknown pass `fold`",
    );
}

#[test]
fn bad_configs_name_the_key_and_line() {
    let bad = tmp("bad.yaml");
    let src = std::fs::read_to_string(data().join("tiny_pose/config.yaml")).unwrap();
    std::fs::write(&bad, src.replace("BLOCK: BASIC", "BLOCK: BASICK")).unwrap();
    fails(
        &hrnetc(&["graph", s(&bad)]),
        "MODEL.EXTRA.STAGE2.BLOCK (line 21, column 7)",
    );
    std::fs::write(&bad, "").unwrap();
    fails(
        &hrnetc(&["compile", s(&bad), "-o", s(&tmp("never.rs"))]),
        "empty",
    );
    assert!(!tmp("never.rs").exists());
    fails(
        &hrnetc(&["graph", "/nonexistent.yaml"]),
        "cannot read /nonexistent.yaml",
    );
    let cls = data().join("configs/cls/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml");
    fails(
        &hrnetc(&["compile", s(&cls), "-o", s(&tmp("cls.rs"))]),
        "not supported by the compiled engines yet",
    );
}

#[test]
fn compile_writes_deterministic_code_and_checks_weights() {
    let cfg = data().join("tiny_pose/config.yaml");
    let (a, b) = (tmp("a.rs"), tmp("b.rs"));
    assert!(hrnetc(&["compile", s(&cfg), "-o", s(&a)]).status.success());
    assert!(hrnetc(&[
        "compile",
        s(&cfg),
        "-o",
        s(&b),
        "--weights",
        s(&data().join("tiny_pose/weights.pth"))
    ])
    .status
    .success());
    let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ta, tb, "byte-identical re-runs");
    assert!(String::from_utf8_lossy(&ta).starts_with("// @generated by hrnetc"));
    // Weights of another network: the error names a tensor and both shapes; nothing written.
    let c = tmp("c.rs");
    let out = hrnetc(&[
        "compile",
        s(&cfg),
        "-o",
        s(&c),
        "--weights",
        s(&data().join("w8_pose_256x192/weights.safetensors")),
    ]);
    fails(&out, "tensor 'layer1.0.conv1.weight': expected shape [16, 64, 1, 1], checkpoint has [64, 64, 1, 1]");
    assert!(!c.exists());
}

#[test]
fn run_rejects_wrong_inputs_and_checkpoints() {
    let dir = data().join("tiny_pose");
    let cfg = dir.join("config.yaml");
    let w = dir.join("weights.safetensors");
    let out = tmp("out.npy");
    // An input of the wrong shape: both shapes named.
    let r = hrnetc(&[
        "run",
        s(&cfg),
        "--weights",
        s(&w),
        "--input",
        s(&dir.join("expected.npy")),
        "--output",
        s(&out),
        "--engine",
        "reference",
    ]);
    fails(
        &r,
        "input has shape [1, 5, 24, 16], the network takes [1, 3, 96, 64]",
    );
    // A file that is not a checkpoint.
    let r = hrnetc(&[
        "run",
        s(&cfg),
        "--weights",
        s(&cfg),
        "--input",
        s(&dir.join("input.npy")),
        "--output",
        s(&out),
        "--engine",
        "reference",
    ]);
    fails(&r, "config.yaml");
    // A truncated checkpoint.
    let bytes = std::fs::read(dir.join("weights_legacy_cuda.pth")).unwrap();
    let cut = tmp("truncated.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = hrnetc(&[
        "run",
        s(&cfg),
        "--weights",
        s(&cut),
        "--input",
        s(&dir.join("input.npy")),
        "--output",
        s(&out),
        "--engine",
        "reference",
    ]);
    fails(&r, "truncated.pth");
}

#[test]
fn inspect_lists_and_checks() {
    let dir = data().join("tiny_pose");
    let ok = hrnetc(&[
        "inspect",
        s(&dir.join("weights_checkpoint.pth")),
        "--config",
        s(&dir.join("config.yaml")),
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("unwrapped from a training checkpoint") && text.contains("fits"),
        "{text}"
    );
    let bad = hrnetc(&[
        "inspect",
        s(&dir.join("weights.pth")),
        "--config",
        s(&data().join("w8_pose_256x192/config.yaml")),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("does not fit"));
}

#[test]
fn reference_engine_end_to_end_with_keypoints() {
    let dir = data().join("tiny_pose");
    let out = tmp("tiny.npy");
    let r = hrnetc(&[
        "run",
        s(&dir.join("config.yaml")),
        "--weights",
        s(&dir.join("weights.pth")),
        "--input",
        s(&dir.join("input.npy")),
        "--output",
        s(&out),
        "--engine",
        "reference",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (shape, y) = hrnet_runtime::npy::read_f32(&out).unwrap();
    let (_, e) = hrnet_runtime::npy::read_f32(dir.join("expected.npy")).unwrap();
    assert_eq!(shape, [1, 5, 24, 16]);
    let max = e.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(y.iter().zip(&e).all(|(a, b)| (a - b).abs() <= 1e-4 * max));

    let json = tmp("people.json");
    let png = tmp("people.png");
    let r = hrnetc(&[
        "run",
        s(&dir.join("config.yaml")),
        "--weights",
        s(&dir.join("weights.pth")),
        "--engine",
        "reference",
        "--image",
        s(&data().join("pose/astronaut.png")),
        "--box",
        "40,20,150,200",
        "--box",
        "0,0,100,100",
        "--output",
        s(&json),
        "--draw",
        s(&png),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(text.matches("\"keypoints\"").count(), 2, "{text}");
    assert!(png.exists());
    fails(
        &hrnetc(&[
            "run",
            s(&dir.join("config.yaml")),
            "--weights",
            s(&dir.join("weights.pth")),
            "--engine",
            "reference",
            "--image",
            s(&data().join("pose/astronaut.png")),
            "--box",
            "1,2,3",
            "--output",
            s(&json),
        ]),
        "expected four numbers",
    );
}

/// Every engine through the command line, as a user runs it: the JIT (the default), the
/// AOT engine (emit, build with cargo in the cache, run), and `bench`'s JSON line.
#[test]
fn jit_and_aot_engines_end_to_end() {
    let dir = data().join("tiny_pose");
    let (_, e) = hrnet_runtime::npy::read_f32(dir.join("expected.npy")).unwrap();
    let max = e.iter().fold(0f32, |m, v| m.max(v.abs()));
    for engine in ["jit", "aot"] {
        let out = tmp(&format!("tiny-{engine}.npy"));
        let r = hrnetc(&[
            "run",
            s(&dir.join("config.yaml")),
            "--weights",
            s(&dir.join("weights_legacy_cuda.pth")),
            "--input",
            s(&dir.join("input.npy")),
            "--output",
            s(&out),
            "--engine",
            engine,
            "--threads",
            "2",
        ]);
        assert!(
            r.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let (_, y) = hrnet_runtime::npy::read_f32(&out).unwrap();
        let diff = y
            .iter()
            .zip(&e)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-4 * max, "{engine}: {diff}");
        let b = hrnetc(&[
            "bench",
            s(&dir.join("config.yaml")),
            "--engine",
            engine,
            "--runs",
            "3",
        ]);
        let line = String::from_utf8_lossy(&b.stdout);
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        assert!(
            line.starts_with(&format!(
                "{{\"engine\":\"{engine}\",\"threads\":1,\"median_ms\":"
            )),
            "{line}"
        );
        assert!(line.trim_end().ends_with("\"runs\":3}"), "{line}");
    }
    // The default engine is the JIT.
    let out = tmp("tiny-default.npy");
    let r = hrnetc(&[
        "run",
        s(&dir.join("config.yaml")),
        "--weights",
        s(&dir.join("weights.pth")),
        "--input",
        s(&dir.join("input.npy")),
        "--output",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// `bench --profile`: the JSON line gains a per-kind profile, a table goes to stderr, and it
/// refuses engines whose kernel calls it cannot time.
#[test]
fn bench_profile_reports_every_layer_kind() {
    let config = data().join("tiny_pose/config.yaml");
    let b = hrnetc(&[
        "bench",
        s(&config),
        "--profile",
        "--runs",
        "2",
        "--threads",
        "2",
    ]);
    let (line, table) = (
        String::from_utf8_lossy(&b.stdout),
        String::from_utf8_lossy(&b.stderr),
    );
    assert!(b.status.success(), "{table}");
    assert!(
        line.starts_with("{\"engine\":\"aot\",\"threads\":2,\"median_ms\":"),
        "{line}"
    );
    assert!(line.contains(",\"profile\":[{\"kind\":\"conv "), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        table.contains("GFLOP/s") && table.contains("layout in/out"),
        "{table}"
    );
    fails(
        &hrnetc(&["bench", s(&config), "--profile", "--engine", "reference"]),
        "--profile times the AOT engine's kernel calls",
    );
}
