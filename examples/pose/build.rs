//! Compiles the network at build time, as any user of hrnet would.
//!
//! The config defaults to the shipped HRNet-W32 256x192 COCO pose config; set
//! `HRNET_CONFIG=path/to/config.yaml` to compile another one.

use hrnet_codegen::build_api::Builder;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HRNET_CONFIG");
    let config = match std::env::var_os("HRNET_CONFIG") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/configs/pose/w32_256x192_adam_lr1e-3.yaml"),
    };
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("model.rs");
    if let Err(e) = Builder::new(&config).out_file(out).compile() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
