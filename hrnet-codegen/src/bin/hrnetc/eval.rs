//! `hrnetc eval --annotations GT.json --results RESULTS.json [--json STATS.json]`: the ten
//! COCO keypoint statistics of a results file, printed as pycocotools' `summarize()` prints
//! them; `--json` also writes them (atomically) as an object with the keys `AP`, `AP50`, …,
//! `ARl`.

use anyhow::{Context, Result};
use hrnet_codegen::build_api;
use hrnet_runtime::pose::coco_eval;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// COCO keypoint ground truth (e.g. `person_keypoints_val2017.json`).
    #[arg(long)]
    annotations: PathBuf,
    /// Keypoint results in the COCO results format (what `hrnetc run --detections` writes).
    #[arg(long)]
    results: PathBuf,
    /// Also write the ten statistics to this file as a JSON object.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let stats = coco_eval::evaluate_files(&a.annotations, &a.results)
        .with_context(|| format!("evaluating {}", a.results.display()))?;
    if let Some(path) = &a.json {
        build_api::write_atomic(path, stats.to_json().as_bytes())?;
    }
    print!("{}", stats.summary_text());
    Ok(ExitCode::SUCCESS)
}
