//! The golden corpus: every config under `data/configs/` and every fixture's `config.yaml`
//! (`data/*/`) yields snapshots of its raw IR, its optimized IR, its DOT, its plan and its
//! generated Rust. Adding a config means adding a
//! file. The verifier runs after every pass.

use hrnet_ir::passes::{self, PASSES};
use hrnet_ir::print::{to_dot, to_text};

fn check(path: &std::path::Path) {
    let src = std::fs::read_to_string(path).unwrap();
    let (_, mut g) = hrnet_ir::build(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    insta::assert_snapshot!("raw", to_text(&g));
    let all: Vec<_> = PASSES.iter().collect();
    passes::run(&mut g, &all, true, |_, _| {}).unwrap();
    insta::assert_snapshot!("optimized", to_text(&g));
    insta::assert_snapshot!("dot", to_dot(&g));
    // The plan and the generated Rust (pose, classification, segmentation and OCR alike).
    let target = hrnet_codegen::target::Target::runtime();
    let (_, plan) = hrnet_codegen::build_api::plan_config(path, &target)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    insta::assert_snapshot!("plan", plan.to_string());
    let code = hrnet_codegen::build_api::compile_to_string(path, None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    insta::assert_snapshot!("rust", code);
}

#[test]
fn official_configs() {
    insta::glob!("data/configs", "**/*.yaml", check);
}

#[test]
fn fixture_configs() {
    insta::glob!("data", "*/config.yaml", check);
}
