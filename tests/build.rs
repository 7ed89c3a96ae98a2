//! Compiles every fixture's config to Rust with hrnet-codegen's build.rs API, as a user's
//! build script would; `generated.rs` `include!`s the results and tests them.

use hrnet_codegen::build_api::Builder;
use hrnet_runtime::weights::BindOptions;
use std::path::PathBuf;

fn main() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for fixture in ["tiny_pose", "w8_pose_256x192", "tiny_seg", "tiny_ocr"] {
        let config = data.join(fixture).join("config.yaml");
        if let Err(e) = Builder::new(&config)
            .out_file(out.join(format!("{fixture}.rs")))
            .compile()
        {
            panic!("compiling {}: {e}", config.display());
        }
    }
    // Classification: the synthetic reference's config (its weights are recomputed by the test).
    let cls = data.join("synthetic/tiny_cls/config.yaml");
    if let Err(e) = Builder::new(&cls)
        .out_file(out.join("tiny_cls.rs"))
        .compile()
    {
        panic!("compiling {}: {e}", cls.display());
    }
    let tiny = data.join("tiny_pose");
    let built = Builder::new(tiny.join("config.yaml"))
        .embed_weights(tiny.join("weights_legacy_cuda.pth"), BindOptions::default())
        .out_file(out.join("tiny_pose_embedded.rs"))
        .compile();
    if let Err(e) = built {
        panic!("compiling tiny_pose with embedded weights: {e}");
    }
}
