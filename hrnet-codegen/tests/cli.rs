//! `hrnetc` as a user runs it: exit codes, messages on stderr, and files written or not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hrnet-cache")
}

fn hrnetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrnetc"))
        .args(args)
        .env("HRNET_CACHE_DIR", cache())
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

/// Refused as a user error: non-zero exit, exactly one `error:` line naming the problem, no
/// panic. (Argument-parser errors exit with 2, the others with 1.)
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(needle), "expected `{needle}` in: {err}");
}

/// `hrnetc run` of the tiny pose network on the astronaut picture with the reference engine,
/// `weights` and `extra` arguments.
fn pose_run(weights: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/tiny_pose/config.yaml"
        ),
        "--weights",
        s(weights),
        "--engine",
        "reference",
        "--image",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/pose/astronaut.png"
        ),
    ];
    args.extend_from_slice(extra);
    hrnetc(&args)
}

/// A name no earlier test run used (generated code names its config, so this is a new AOT
/// cache key).
fn unique(stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{stem}-{}-{nanos}", std::process::id())
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
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
    assert!(String::from_utf8_lossy(&after.stderr).contains("fuse_conv_add_resized"));
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
    // The classification head compiles: its classifier is a 1x1 conv reading `[out, in]`.
    let cls = data().join("configs/cls/cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml");
    let out = hrnetc(&["compile", s(&cls), "-o", s(&tmp("cls.rs"))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = std::fs::read_to_string(tmp("cls.rs")).unwrap();
    assert!(
        code.contains("ConvParams::full(\"classifier\""),
        "no classifier row"
    );
    assert!(code.contains("head::global_avg_pool_blocked("));
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
    // The kinds come slowest first, an order that a busy machine can change (a preempted
    // layout step once came first): check the set, not the order.
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let kinds: Vec<&str> = v["profile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for kind in ["conv 3x3 s2 direct", "conv 1x1 s1 direct", "layout in/out"] {
        assert!(kinds.contains(&kind), "{kind}: {line}");
    }
    assert!(v["peak_gflops"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        table.contains("GFLOP/s") && table.contains("%pk") && table.contains("layout in/out"),
        "{table}"
    );
    fails(
        &hrnetc(&["bench", s(&config), "--profile", "--engine", "reference"]),
        "--profile times the AOT engine's kernel calls",
    );
}

#[test]
fn bench_batch_reports_images_per_second() {
    let config = data().join("tiny_pose/config.yaml");
    let b = hrnetc(&[
        "bench",
        s(&config),
        "--batch",
        "3",
        "--threads",
        "2",
        "--runs",
        "2",
    ]);
    let line = String::from_utf8_lossy(&b.stdout);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(
        line.starts_with("{\"engine\":\"jit\",\"threads\":2,\"median_ms\":"),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["batch"], 3);
    let per_s = v["images_per_s"].as_f64().unwrap();
    let median = v["median_ms"].as_f64().unwrap();
    assert!(
        (per_s - 3e3 / median).abs() <= 0.01 * per_s + 0.01,
        "{line}"
    );
    refused(
        &hrnetc(&["bench", s(&config), "--batch", "0"]),
        "batch size from 1 to 1024",
    );
    let b = hrnetc(&[
        "bench",
        s(&config),
        "--batch",
        "2",
        "--engine",
        "aot",
        "--runs",
        "2",
    ]);
    let line = String::from_utf8_lossy(&b.stdout);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (v["engine"].as_str(), v["batch"].as_u64()),
        (Some("aot"), Some(2))
    );
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{line}");
    fails(
        &hrnetc(&["bench", s(&config), "--batch", "2", "--profile"]),
        "does not apply with --batch",
    );
}

/// `--threads` and `--runs` are bounded: 0 and huge counts are refused up front (100000
/// threads used to panic while spawning).
#[test]
fn thread_and_run_counts_are_bounded() {
    let dir = data().join("tiny_pose");
    let (cfg, w, x) = (
        dir.join("config.yaml"),
        dir.join("weights.pth"),
        dir.join("input.npy"),
    );
    let out = tmp("threads.npy");
    for (n, needle) in [
        ("100000", "100000 threads: give 1 to 256"),
        ("0", "0 threads"),
    ] {
        let r = hrnetc(&[
            "run",
            s(&cfg),
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--output",
            s(&out),
            "--threads",
            n,
        ]);
        refused(&r, needle);
    }
    refused(
        &hrnetc(&["bench", s(&cfg), "--threads", "257"]),
        "give 1 to 256",
    );
    refused(
        &hrnetc(&["bench", s(&cfg), "--runs", "0"]),
        "runs from 1 to",
    );
    refused(
        &hrnetc(&["bench", s(&cfg), "--runs", "99999999999999"]),
        "runs from 1 to",
    );
}

/// `--box` takes negative coordinates; a bad box names the field and prints the number
/// readably.
#[test]
fn boxes_take_negative_coordinates_and_name_the_bad_field() {
    let weights = data().join("tiny_pose/weights.pth");
    let json = tmp("boxes.json");
    let run = |b: &str| pose_run(&weights, &["--box", b, "--output", s(&json)]);
    let r = run("-60,-40,200,300");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        doc["people"][0]["box"],
        serde_json::json!([-60.0, -40.0, 200.0, 300.0])
    );
    // A proper value, not Rust's debug text.
    assert_eq!(doc["dataset"], "other");
    assert_eq!(doc["joints"], 5);
    refused(&run("1e300,0,10,10"), "x = 1e300 must lie within");
    refused(&run("0,inf,10,10"), "y = inf must lie within");
    refused(&run("0,0,-5,10"), "w = -5 must be positive");
    refused(&run("0,0,10,0"), "h = 0 must be positive");
    refused(&run("0,0,abc,10"), "w = `abc` is not a number");
    refused(&run("0,0,10"), "expected four numbers x,y,w,h, found 3");
    let err = String::from_utf8_lossy(&run("0,0,1e300,10").stderr).into_owned();
    assert!(
        err.contains("w = 1e300") && !err.contains("0000000000"),
        "{err}"
    );
}

/// A checkpoint like `weights.safetensors` with `edit` applied to each tensor's name and, for
/// f32 tensors, its data.
fn edited_checkpoint(name: &str, edit: impl Fn(&str, &mut Vec<f32>) -> String) -> PathBuf {
    let bytes = std::fs::read(data().join("tiny_pose/weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let mut v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let renamed = edit(&n, &mut v);
            let data = if t.dtype() == safetensors::Dtype::F32 {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            } else {
                t.data().to_vec()
            };
            (renamed, t.dtype(), t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dtype, shape, d)| {
            let v = safetensors::tensor::TensorView::new(*dtype, shape.clone(), d).unwrap();
            (n.clone(), v)
        })
        .collect();
    let path = tmp(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// NaN weights are refused when the checkpoint is bound, naming the tensor; finite weights
/// whose products overflow make non-finite heatmaps, and then the keypoint JSON is refused,
/// naming the value, instead of holding a bare `NaN` (which is not JSON).
#[test]
fn non_finite_outputs_never_reach_the_json() {
    let nan = edited_checkpoint("nan.safetensors", |n, v| {
        if n == "final_layer.bias" {
            v.fill(f32::NAN);
        }
        n.to_string()
    });
    let json = tmp("nan.json");
    let _ = std::fs::remove_file(&json);
    let r = pose_run(&nan, &["--output", s(&json)]);
    refused(&r, "checkpoint does not match the model");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("tensor 'final_layer.bias': 5 values are not finite"),
        "{err}"
    );
    assert!(!json.exists());

    let huge = edited_checkpoint("overflow.safetensors", |n, v| {
        if n == "final_layer.weight" {
            for (i, x) in v.iter_mut().enumerate() {
                *x = if i % 2 == 0 { 3e38 } else { -3e38 };
            }
        }
        n.to_string()
    });
    let r = pose_run(&huge, &["--output", s(&json)]);
    let err = String::from_utf8_lossy(&r.stderr);
    refused(&r, "person 0, keypoint");
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert!(!json.exists());
}

/// Tensor names come from the file: `inspect` escapes control characters (a terminal would
/// otherwise obey the escape sequences).
#[test]
fn inspect_escapes_tensor_names() {
    let evil = edited_checkpoint("evil.safetensors", |n, _| {
        if n == "final_layer.bias" {
            "final\u{1b}[2J\u{7}.bias".to_string()
        } else {
            n.to_string()
        }
    });
    let out = hrnetc(&["inspect", s(&evil)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("final\\u{1b}[2J\\u{7}.bias"), "{text}");
}

/// Outputs are written atomically and only when everything succeeded: a `--draw` into a
/// missing directory writes no JSON either, and an output that is not a regular file (here a
/// FIFO) is refused, not replaced.
#[test]
fn outputs_are_all_or_nothing() {
    let weights = data().join("tiny_pose/weights.pth");
    let json = tmp("partial.json");
    let _ = std::fs::remove_file(&json);
    let args = |output: &Path, draw: &Path| {
        pose_run(&weights, &["--output", s(output), "--draw", s(draw)])
    };
    let missing = tmp("no-such-dir").join("people.png");
    refused(&args(&json, &missing), "no-such-dir");
    assert!(
        !json.exists(),
        "the JSON was written although the PNG failed"
    );
    #[cfg(unix)]
    {
        let fifo = tmp("out.fifo");
        mkfifo(&fifo);
        refused(&args(&fifo, &tmp("ok.png")), "not a regular file");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(!tmp("ok.png").exists());
    }
    // Nothing is left behind in the destination directory.
    let leftovers: Vec<_> = std::fs::read_dir(tmp(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every input must be a regular file: devices and FIFOs are refused at once (they used to
/// read until memory ran out, or block forever), and a config has a size limit.
#[cfg(unix)]
#[test]
fn inputs_must_be_regular_files() {
    let dir = data().join("tiny_pose");
    let (cfg, w) = (dir.join("config.yaml"), dir.join("weights.pth"));
    let out = tmp("regular.npy");
    refused(
        &hrnetc(&["graph", "/dev/zero"]),
        "/dev/zero is not a regular file (it is a character device)",
    );
    refused(
        &hrnetc(&[
            "run",
            s(&cfg),
            "--weights",
            s(&w),
            "--input",
            "/dev/zero",
            "--output",
            s(&out),
        ]),
        "/dev/zero is not a regular file",
    );
    refused(
        &hrnetc(&[
            "run",
            s(&cfg),
            "--weights",
            s(&w),
            "--engine",
            "reference",
            "--image",
            "/dev/zero",
            "--output",
            s(&tmp("regular.json")),
        ]),
        "/dev/zero is not a regular file",
    );
    let big = tmp("big.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    std::fs::write(&big, text).unwrap();
    refused(
        &hrnetc(&["graph", s(&big)]),
        "more than the 1048576 bytes a config may have",
    );
    // A FIFO as the checkpoint: refused without waiting for a writer.
    let fifo = tmp("weights.fifo");
    mkfifo(&fifo);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hrnetc"))
        .args(["inspect", s(&fifo)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("hrnetc blocked on a FIFO given as --weights");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    refused(&child.wait_with_output().unwrap(), "(it is a FIFO)");
}

/// A cache directory others can write to is refused before anything in it is used.
#[cfg(unix)]
#[test]
fn aot_refuses_a_shared_cache_directory() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tmp("shared-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
    let r = aot_command(&data().join("tiny_pose/config.yaml"), &tmp("shared.npy"))
        .env("HRNET_CACHE_DIR", &shared)
        .output()
        .unwrap();
    refused(&r, &format!("refusing the cache directory {}", s(&shared)));
    refused(&r, "is writable by its group (mode 775)");
    assert!(!shared.join("aot").exists());
}

/// `hrnetc run --engine aot` of the tiny network with `config` (a copy of its config),
/// writing `out`.
fn aot_command(config: &Path, out: &Path) -> Command {
    let dir = data().join("tiny_pose");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hrnetc"));
    c.arg("run")
        .arg(config)
        .arg("--weights")
        .arg(dir.join("weights.pth"))
        .arg("--input")
        .arg(dir.join("input.npy"))
        .arg("--output")
        .arg(out)
        .args(["--engine", "aot"])
        .env("HRNET_CACHE_DIR", cache());
    c
}

/// Runs [`aot_command`] and checks its output; returns its stderr.
fn run_aot(config: &Path, out: &Path) -> String {
    let dir = data().join("tiny_pose");
    let r = aot_command(config, out).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{err}");
    let (_, y) = hrnet_runtime::npy::read_f32(out).unwrap();
    let (_, e) = hrnet_runtime::npy::read_f32(dir.join("expected.npy")).unwrap();
    let max = e.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(y.iter().zip(&e).all(|(a, b)| (a - b).abs() <= 1e-4 * max));
    err
}

/// A copy of the tiny config under a name no earlier run used: a new AOT cache key.
fn fresh_config(stem: &str) -> PathBuf {
    let path = tmp(&format!("{}.yaml", unique(stem)));
    std::fs::copy(data().join("tiny_pose/config.yaml"), &path).unwrap();
    path
}

/// The cached binary is checked before it runs: one replaced after the build (the stamp
/// left as it was) is rebuilt, never executed. The build says what it does and how long it
/// took; a cache hit says nothing.
#[cfg(unix)]
#[test]
fn aot_never_runs_a_planted_binary() {
    let config = fresh_config("planted");
    let out = tmp(&format!("{}.npy", unique("planted")));
    let err = run_aot(&config, &out);
    assert!(
        err.contains("building the generated model with cargo")
            && err.contains("built the generated model in"),
        "{err}"
    );
    let err = run_aot(&config, &out);
    assert!(
        !err.contains("building"),
        "a cache hit builds nothing: {err}"
    );
    // Find this model's cache entry and plant a binary in place of the one built.
    let name = config.file_name().unwrap().to_str().unwrap();
    let key = std::fs::read_dir(cache().join("aot"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("src/model.rs")).is_ok_and(|m| m.contains(name))
        })
        .expect("the model's cache entry")
        .file_name();
    let exe = cache()
        .join("aot/target/release")
        .join(format!("hrnet-aot-{}", key.to_str().unwrap()));
    assert!(exe.exists(), "{}", exe.display());
    let marker = tmp(&format!("{}.ran", unique("planted")));
    std::fs::write(&exe, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", s(&marker))).unwrap();
    let err = run_aot(&config, &out);
    assert!(!marker.exists(), "the planted binary was executed");
    assert!(err.contains("building the generated model"), "{err}");
}

/// Two processes building the same new model at once both succeed (one builds, the other
/// waits for its lock and reuses the build).
#[test]
fn aot_concurrent_builds_of_one_model_both_succeed() {
    let config = fresh_config("concurrent");
    let outs = [
        tmp(&format!("{}.npy", unique("c1"))),
        tmp(&format!("{}.npy", unique("c2"))),
    ];
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            aot_command(&config, out)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let r = c.wait_with_output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let (_, a) = hrnet_runtime::npy::read_f32(&outs[0]).unwrap();
    let (_, b) = hrnet_runtime::npy::read_f32(&outs[1]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn eval_prints_and_writes_the_coco_statistics() {
    let dir = data().join("coco/eval");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let want = &expected["crowd"];
    let stats_json = tmp("eval_stats.json");
    let _ = std::fs::remove_file(&stats_json);
    let out = hrnetc(&[
        "eval",
        "--annotations",
        s(&dir.join("crowd.gt.json")),
        "--results",
        s(&dir.join("crowd.results.json")),
        "--json",
        s(&stats_json),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Printed exactly as pycocotools' summarize() prints.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        want["summary"].as_str().unwrap()
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).unwrap()).unwrap();
    let keys = [
        "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
    ];
    assert_eq!(written.as_object().unwrap().len(), keys.len());
    for (key, want) in keys.iter().zip(want["stats"].as_array().unwrap()) {
        let got = written[key].as_f64().unwrap_or_else(|| panic!("{key}"));
        assert!(
            (got - want.as_f64().unwrap()).abs() <= 1e-6,
            "{key}: {got} vs {want}"
        );
    }

    // A results file that is not a regular file, or not COCO results, is one clear error.
    let out = hrnetc(&[
        "eval",
        "--annotations",
        s(&dir.join("crowd.gt.json")),
        "--results",
        "/dev/zero",
    ]);
    refused(&out, "not a regular file");
    let out = hrnetc(&[
        "eval",
        "--annotations",
        s(&dir.join("crowd.gt.json")),
        "--results",
        s(&dir.join("crowd.gt.json")),
    ]);
    refused(&out, "crowd.gt.json");
}

/// `run --detections`: every person box of every image, official rescoring and OKS-NMS, COCO
/// keypoint results that `eval` reads; the keypoints equal a single-image run of the same box.
#[test]
fn detections_in_coco_results_out() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coco_run");
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let jpegs = data().join("jpeg");
    std::fs::copy(
        jpegs.join("baseline_420.jpg"),
        images.join("000000000001.jpg"),
    )
    .unwrap();
    std::fs::copy(
        jpegs.join("baseline_444.jpg"),
        images.join("000000000002.jpg"),
    )
    .unwrap();
    let dets = dir.join("dets.json");
    std::fs::write(
        &dets,
        r#"[{"image_id": 1, "category_id": 1, "bbox": [10.0, 5.0, 40.0, 60.0], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [50.0, 10.0, 30.0, 50.0], "score": 0.8},
            {"image_id": 1, "category_id": 2, "bbox": [0.0, 0.0, 20.0, 20.0], "score": 0.99},
            {"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 0.0, 30.0], "score": 0.7},
            {"image_id": 2, "category_id": 1, "bbox": [-4.0, 2.0, 50.0, 40.0], "score": 0.6}]"#,
    )
    .unwrap();
    let w8 = data().join("w8_pose_256x192");
    let results = dir.join("results.json");
    let out = hrnetc(&[
        "run",
        s(&w8.join("config.yaml")),
        "--weights",
        s(&w8.join("weights.safetensors")),
        "--engine",
        "jit",
        "--images",
        s(&images),
        "--detections",
        s(&dets),
        "--output",
        s(&results),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("skipping 1 detections"), "{err}");
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let got = got.as_array().unwrap();
    // Category 2 and the zero-width box are skipped; OKS-NMS may merge the two of image 1.
    assert!((2..=3).contains(&got.len()), "{got:?}");
    for r in got {
        assert_eq!(r["category_id"], 1);
        assert_eq!(r["keypoints"].as_array().unwrap().len(), 17 * 3);
        assert!(r["score"].as_f64().unwrap().is_finite());
    }
    // Image 2's one person: the same keypoints as `run --image --box` of that box.
    let single = dir.join("single.json");
    let out = hrnetc(&[
        "run",
        s(&w8.join("config.yaml")),
        "--weights",
        s(&w8.join("weights.safetensors")),
        "--engine",
        "jit",
        "--image",
        s(&images.join("000000000002.jpg")),
        "--box",
        "-4,2,50,40",
        "--output",
        s(&single),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&single).unwrap()).unwrap();
    let person = got.iter().find(|r| r["image_id"] == 2).unwrap();
    let flat = person["keypoints"].as_array().unwrap();
    let want = single["people"][0]["keypoints"].as_array().unwrap();
    assert_eq!(want.len(), 17);
    for (j, k) in want.iter().enumerate() {
        for c in 0..2 {
            let (a, b) = (flat[3 * j + c].as_f64().unwrap(), k[c].as_f64().unwrap());
            assert!((a - b).abs() < 1e-3, "joint {j}: {a} vs {b}");
        }
    }

    // The boxes of an image run as one batch, flipped crops included: with 2 threads, whole
    // crops side by side; the results are the same bytes as with 1 thread.
    let flipped = |threads: &str| {
        let path = dir.join(format!("flip_{threads}.json"));
        let out = hrnetc(&[
            "run",
            s(&w8.join("config.yaml")),
            "--weights",
            s(&w8.join("weights.safetensors")),
            "--engine",
            "jit",
            "--threads",
            threads,
            "--flip",
            "--images",
            s(&images),
            "--detections",
            s(&dets),
            "--output",
            s(&path),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&path).unwrap()
    };
    let (one, two) = (flipped("1"), flipped("2"));
    assert_eq!(one, two, "results at 1 and 2 threads differ");
    assert_ne!(
        one,
        std::fs::read(&results).unwrap(),
        "the flip test changed nothing"
    );

    // `eval` reads the results (ground truth: the two images, one person each).
    let gt = dir.join("gt.json");
    let kp: Vec<String> = (0..17)
        .map(|j| format!("{}, {}, 2", 20 + j, 10 + 2 * j))
        .collect();
    std::fs::write(
        &gt,
        format!(
            r#"{{"images": [{{"id": 1}}, {{"id": 2}}], "categories": [{{"id": 1}}],
                "annotations": [
                  {{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2400.0,
                    "bbox": [10, 5, 40, 60], "num_keypoints": 17, "keypoints": [{kp}]}},
                  {{"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 2000.0,
                    "bbox": [0, 2, 46, 40], "num_keypoints": 17, "keypoints": [{kp}]}}]}}"#,
            kp = kp.join(", ")
        ),
    )
    .unwrap();
    let out = hrnetc(&["eval", "--annotations", s(&gt), "--results", s(&results)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);

    // A network that is not a 17-joint COCO one is refused before any work.
    let out = hrnetc(&[
        "run",
        s(&data().join("tiny_pose/config.yaml")),
        "--weights",
        s(&data().join("tiny_pose/weights.safetensors")),
        "--images",
        s(&images),
        "--detections",
        s(&dets),
        "--output",
        s(&dir.join("never.json")),
    ]);
    refused(&out, "needs a COCO network of 17");
    assert!(!dir.join("never.json").exists());
}

/// `graph --plan` prints the plan the compiled engines render, for either kernel set, and
/// refuses networks they cannot run yet with the planner's reason.
#[test]
fn graph_prints_the_plan() {
    let pose = data().join("tiny_pose/config.yaml");
    let out = hrnetc(&["graph", s(&pose), "--plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Exactly what the golden plan snapshot holds (insta's header stripped).
    let snap = std::fs::read_to_string(
        data().join("../snapshots/golden__plan@tiny_pose__config.yaml.snap"),
    )
    .unwrap();
    let body = snap.splitn(3, "---\n").nth(2).unwrap();
    assert_eq!(text.trim_end(), body.trim_end());
    let jit = hrnetc(&["graph", s(&pose), "--plan", "jit"]);
    let jit_text = String::from_utf8_lossy(&jit.stdout);
    assert!(jit.status.success());
    assert!(
        jit_text.starts_with("plan pose_hrnet for Jit kernels"),
        "{jit_text}"
    );
    refused(
        &hrnetc(&["graph", s(&pose), "--plan", "--passes", "none"]),
        "--plan prints the plan of the fully optimized graph",
    );
    // A segmentation plan: bilinear exchange units, the head's resizes written straight into
    // the concatenation buffer, and the conv that reads it.
    let seg = hrnetc(&["graph", s(&data().join("tiny_seg/config.yaml")), "--plan"]);
    let seg_text = String::from_utf8_lossy(&seg.stdout);
    assert!(seg.status.success());
    for want in ["add_resized v", "resize bilinear", "reads concat ["] {
        assert!(seg_text.contains(want), "{want} missing:\n{seg_text}");
    }
}

/// A deterministic RGB test picture (gradients and a texture), saved as PNG at `name`.
fn test_picture(name: &str, w: u32, h: u32) -> (PathBuf, image::RgbImage) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = |c: u32| {
            let mut z = (x * 7919 + y * 104_729 + c * 15_485_863) ^ 0x9e37_79b9;
            z = (z ^ (z >> 16)).wrapping_mul(0x045d_9f3b);
            z = (z ^ (z >> 16)).wrapping_mul(0x045d_9f3b);
            (z ^ (z >> 16)) as u8
        };
        image::Rgb([v(0), v(1), v(2)])
    });
    let path = tmp(name);
    img.save(&path).unwrap();
    (path, img)
}

/// How many classes a class map shows.
fn distinct_classes(map: &image::GrayImage) -> usize {
    let mut seen = [false; 256];
    for p in map.pixels() {
        seen[usize::from(p.0[0])] = true;
    }
    seen.iter().filter(|&&s| s).count()
}

/// Runs `hrnetc run CONFIG --weights W --engine reference ARGS..`.
fn run_reference(config: &Path, weights: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "run",
        s(config),
        "--weights",
        s(weights),
        "--engine",
        "reference",
    ];
    all.extend_from_slice(args);
    hrnetc(&all)
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The reference engine's output on `x` (shape `shape`) through `--input`.
fn reference_output(
    config: &Path,
    weights: &Path,
    name: &str,
    shape: &[usize],
    x: &[f32],
    extra: &[&str],
) -> (Vec<usize>, Vec<f32>) {
    let (input, output) = (
        tmp(&format!("{name}-in.npy")),
        tmp(&format!("{name}-out.npy")),
    );
    hrnet_runtime::npy::write_f32(&input, shape, x).unwrap();
    let mut args = vec!["--input", s(&input), "--output", s(&output)];
    args.extend_from_slice(extra);
    succeeded(&run_reference(config, weights, &args));
    hrnet_runtime::npy::read_f32(&output).unwrap()
}

/// Seeded random weights for `config` as a safetensors file (the classification head alone
/// has 10 M parameters: too large to keep in tests/data).
fn random_weights(config: &Path, name: &str) -> PathBuf {
    let (_, g) = hrnet_codegen::driver::load_config(config).unwrap();
    let bytes =
        hrnet_codegen::driver::random_checkpoint(&hrnet_codegen::driver::runtime_specs(&g), 3);
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `run --image` on a classification network: the official preprocessing (shorter side to
/// int(64 / 0.875) = 73, center crop 64, ImageNet normalization), then the top K as JSON,
/// equal to the top K of the engine's logits on the same preprocessed tensor; labels by
/// line; K clamped to the class count; the probabilities a softmax over all classes.
#[test]
fn classification_top_k_of_an_image() {
    let cfg = data().join("synthetic/tiny_cls/config.yaml");
    let weights = random_weights(&cfg, "tiny_cls.safetensors");
    let (picture, img) = test_picture("cls.png", 90, 70);
    let mut x = vec![0f32; 3 * 64 * 64];
    hrnet_runtime::cls::preprocess(&img, 64, &mut x).unwrap();
    let (shape, logits) = reference_output(&cfg, &weights, "cls", &[1, 3, 64, 64], &x, &[]);
    assert_eq!(shape, [1, 10, 1, 1]);
    let want = hrnet_runtime::cls::top_k(&logits, 5);

    let labels = tmp("cls-labels.txt");
    let names: Vec<String> = (0..10).map(|i| format!("thing {i}")).collect();
    std::fs::write(&labels, names.join("\n") + "\n").unwrap();
    let json = tmp("top.json");
    let read = |path: &Path| -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        doc["predictions"].as_array().unwrap().clone()
    };
    let r = run_reference(
        &cfg,
        &weights,
        &[
            "--image",
            s(&picture),
            "--output",
            s(&json),
            "--labels",
            s(&labels),
        ],
    );
    succeeded(&r);
    let got = read(&json);
    assert_eq!(got.len(), 5, "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["class"].as_u64(), Some(w.class as u64), "{got:?}");
        assert_eq!(g["logit"].as_f64().map(|v| v as f32), Some(w.logit));
        assert_eq!(
            g["probability"].as_f64().map(|v| v as f32),
            Some(w.probability)
        );
        assert_eq!(g["label"], format!("thing {}", w.class));
    }
    // K past the class count lists every class once; the probabilities sum to 1.
    succeeded(&run_reference(
        &cfg,
        &weights,
        &["--image", s(&picture), "--output", s(&json), "--top", "50"],
    ));
    let all = read(&json);
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|p| p.get("label").is_none()));
    let sum: f64 = all.iter().map(|p| p["probability"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    let mut classes: Vec<u64> = all.iter().map(|p| p["class"].as_u64().unwrap()).collect();
    classes.sort();
    assert_eq!(classes, (0..10).collect::<Vec<u64>>());

    // Errors: nothing is written.
    let never = tmp("never-top.json");
    let _ = std::fs::remove_file(&never);
    let run = |extra: &[&str]| {
        let mut args = vec!["--image", s(&picture), "--output", s(&never)];
        args.extend_from_slice(extra);
        run_reference(&cfg, &weights, &args)
    };
    refused(&run(&["--top", "0"]), "--top 0");
    let nine = tmp("nine-labels.txt");
    std::fs::write(&nine, names[..9].join("\n")).unwrap();
    refused(
        &run(&["--labels", s(&nine)]),
        "nine-labels.txt has 9 line(s), but",
    );
    let err = String::from_utf8_lossy(&run(&["--labels", s(&nine)]).stderr).into_owned();
    assert!(err.contains("has 10 classes"), "{err}");
    std::fs::write(&nine, b"ok\n\xff\xfe\n").unwrap();
    refused(&run(&["--labels", s(&nine)]), "not a text file");
    refused(
        &run(&["--draw", s(&tmp("never.png"))]),
        "--draw applies to pose and segmentation networks",
    );
    refused(&run(&["--aux"]), "--aux applies to HRNet-OCR networks");
    assert!(!never.exists());
}

/// `run --image` on a segmentation network at the image's own size, also when no side is a
/// multiple of 32 (72x104, the config's size, and 50x70, a re-specialized network): the PNG
/// of class indices is the argmax of the engine's logits (on the normalized image, through
/// `--input` at the same size) resized bilinearly to the image, and `--draw` blends the
/// palette over the photo.
#[test]
fn segmentation_class_map_at_the_image_size() {
    let dir = data().join("tiny_seg");
    let (cfg, weights) = (dir.join("config.yaml"), dir.join("weights.safetensors"));
    for (h, w) in [(72usize, 104usize), (50, 70)] {
        let name = format!("seg-{w}x{h}");
        let (picture, img) = test_picture(&format!("{name}.png"), w as u32, h as u32);
        let mut x = vec![0f32; 3 * h * w];
        hrnet_runtime::seg::normalize_image(&img, &mut x).unwrap();
        let (shape, logits) = reference_output(&cfg, &weights, &name, &[1, 3, h, w], &x, &[]);
        assert_eq!(shape, [1, 5, h.div_ceil(4), w.div_ceil(4)]);
        let want =
            hrnet_runtime::seg::class_map(&logits, 5, (shape[2], shape[3]), (h, w), false).unwrap();
        let other =
            hrnet_runtime::seg::class_map(&logits, 5, (shape[2], shape[3]), (h, w), true).unwrap();
        assert!(distinct_classes(&want) > 1, "a one-class map tests little");
        assert_ne!(want, other, "align_corners should matter here");

        let (labels, overlay) = (
            tmp(&format!("{name}-labels.png")),
            tmp(&format!("{name}-overlay.png")),
        );
        succeeded(&run_reference(
            &cfg,
            &weights,
            &[
                "--image",
                s(&picture),
                "--output",
                s(&labels),
                "--draw",
                s(&overlay),
            ],
        ));
        let got = image::open(&labels).unwrap();
        assert_eq!(got.color(), image::ColorType::L8);
        assert_eq!(got.to_luma8(), want, "{name}");
        let mut drawn = img.clone();
        hrnet_runtime::seg::draw(&mut drawn, &want, &hrnet_runtime::seg::palette(5), 0.5).unwrap();
        assert_eq!(image::open(&overlay).unwrap().to_rgb8(), drawn, "{name}");
    }

    // Too small an image or tensor: a clear error, nothing written.
    let never = tmp("never-labels.png");
    let _ = std::fs::remove_file(&never);
    let (small, _) = test_picture("seg-small.png", 40, 20);
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--image", s(&small), "--output", s(&never)],
        ),
        "seg-small.png is 40x20 pixels (width x height): a segmentation network needs at least 32 pixels a side",
    );
    let tensor = tmp("seg-small.npy");
    hrnet_runtime::npy::write_f32(&tensor, &[1, 3, 20, 40], &vec![0.0; 3 * 20 * 40]).unwrap();
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--input", s(&tensor), "--output", s(&never)],
        ),
        "each side needs at least 32 pixels",
    );
    hrnet_runtime::npy::write_f32(&tensor, &[3, 40, 40], &vec![0.0; 3 * 40 * 40]).unwrap();
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--input", s(&tensor), "--output", s(&never)],
        ),
        "a segmentation network takes [1, 3, H, W]",
    );
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--input", s(&tensor), "--output", s(&never), "--aux"],
        ),
        "--aux applies to HRNet-OCR networks",
    );
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--image", s(&small), "--output", s(&never), "--top", "3"],
        ),
        "--top applies to classification networks",
    );
    assert!(!never.exists());
}

/// HRNet-OCR: `--aux` writes the auxiliary logits (PyTorch's, within 1e-4 of the largest),
/// without it the OCR logits; an image's class map comes from the OCR logits, resized with
/// the network's align_corners (True).
#[test]
fn ocr_aux_logits_and_class_map() {
    let dir = data().join("tiny_ocr");
    let (cfg, weights) = (dir.join("config.yaml"), dir.join("weights.safetensors"));
    // Every engine: the compiled ones make the auxiliary output too.
    for (engine, flag, expected) in [
        ("reference", true, "expected_aux.npy"),
        ("reference", false, "expected.npy"),
        ("jit", true, "expected_aux.npy"),
        ("jit", false, "expected.npy"),
        ("aot", true, "expected_aux.npy"),
        ("aot", false, "expected.npy"),
    ] {
        let out = tmp(&format!("ocr-{engine}-{flag}.npy"));
        let mut args = vec![
            "--engine",
            engine,
            "--input",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/tiny_ocr/input.npy"
            ),
            "--output",
            s(&out),
        ];
        if flag {
            args.push("--aux");
        }
        let mut all = vec!["run", s(&cfg), "--weights", s(&weights)];
        all.extend_from_slice(&args);
        succeeded(&hrnetc(&all));
        let (shape, y) = hrnet_runtime::npy::read_f32(&out).unwrap();
        let (eshape, e) = hrnet_runtime::npy::read_f32(dir.join(expected)).unwrap();
        assert_eq!(shape, eshape);
        let max = e.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = y
            .iter()
            .zip(&e)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * max,
            "{engine} {expected}: {diff} (max {max})"
        );
    }

    // A crop of the fixture's input as a photo: pixels of the statistics the random
    // weights make several classes of.
    let (h, w) = (52usize, 84usize);
    let (_, input) = hrnet_runtime::npy::read_f32(dir.join("input.npy")).unwrap();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = |c: usize| {
            let z = input[(c * 64 + y as usize) * 96 + x as usize];
            ((z * std[c] + mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8
        };
        image::Rgb([v(0), v(1), v(2)])
    });
    let picture = tmp("ocr.png");
    img.save(&picture).unwrap();
    let mut x = vec![0f32; 3 * h * w];
    hrnet_runtime::seg::normalize_image(&img, &mut x).unwrap();
    let (shape, logits) = reference_output(&cfg, &weights, "ocr", &[1, 3, h, w], &x, &[]);
    let want =
        hrnet_runtime::seg::class_map(&logits, 5, (shape[2], shape[3]), (h, w), true).unwrap();
    let other =
        hrnet_runtime::seg::class_map(&logits, 5, (shape[2], shape[3]), (h, w), false).unwrap();
    assert!(distinct_classes(&want) > 1, "a one-class map tests little");
    assert_ne!(want, other, "align_corners should matter here");
    let labels = tmp("ocr-labels.png");
    succeeded(&run_reference(
        &cfg,
        &weights,
        &["--image", s(&picture), "--output", s(&labels)],
    ));
    assert_eq!(image::open(&labels).unwrap().to_luma8(), want);
    refused(
        &run_reference(
            &cfg,
            &weights,
            &["--image", s(&picture), "--output", s(&labels), "--aux"],
        ),
        "--aux writes the auxiliary logits to an .npy with --input",
    );
}

/// `--size H W` re-specializes `compile`, `graph` and `bench` (and `Builder::size` the
/// build.rs API); a size below 32 pixels or past the memory limits is a clear error.
#[test]
fn size_specializes_compile_graph_and_bench() {
    let pose = data().join("tiny_pose/config.yaml");
    let seg = data().join("tiny_seg/config.yaml");
    let out = tmp("sized.rs");
    succeeded(&hrnetc(&[
        "compile",
        s(&pose),
        "--size",
        "128",
        "96",
        "-o",
        s(&out),
    ]));
    let code = std::fs::read_to_string(&out).unwrap();
    assert!(
        code.contains("pub const INPUT_SHAPE: [usize; 4] = [1, 3, 128, 96];"),
        "{}",
        &code[..code.len().min(3000)]
    );
    let built = tmp("sized-builder.rs");
    hrnet_codegen::build_api::Builder::new(&pose)
        .size(128, 96)
        .out_file(&built)
        .compile()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&built).unwrap(), code);
    let e = hrnet_codegen::build_api::Builder::new(&pose)
        .size(0, 96)
        .out_file(tmp("never-builder.rs"))
        .compile()
        .unwrap_err();
    assert!(e.to_string().contains("at least 32 pixels"), "{e}");

    let g = hrnetc(&["graph", s(&seg), "--size", "50", "70"]);
    succeeded(&g);
    let text = String::from_utf8_lossy(&g.stdout);
    assert!(
        text.contains("3x50x70"),
        "{}",
        &text[..text.len().min(2000)]
    );
    let b = hrnetc(&[
        "bench",
        s(&seg),
        "--size",
        "40",
        "56",
        "--engine",
        "reference",
        "--runs",
        "1",
    ]);
    succeeded(&b);
    assert!(String::from_utf8_lossy(&b.stdout).starts_with("{\"engine\":\"reference\""));

    let never = tmp("never-sized.rs");
    for verb in [
        &["compile", s(&seg), "-o", s(&never)][..],
        &["graph", s(&seg)],
        &["bench", s(&seg), "--engine", "reference"],
    ] {
        let mut args = verb.to_vec();
        args.extend_from_slice(&["--size", "0", "70"]);
        refused(
            &hrnetc(&args),
            "input size 70x0 (width x height): each side needs at least 32 pixels",
        );
    }
    refused(
        &hrnetc(&["compile", s(&pose), "--size", "100", "96", "-o", s(&never)]),
        "not a multiple of 32",
    );
    refused(
        &hrnetc(&["graph", s(&seg), "--size", "8000", "8000"]),
        "the limit is",
    );
    assert!(!never.exists());
}
