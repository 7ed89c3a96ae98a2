//! `hrnetc compile CONFIG -o model.rs [--size H W] [--weights W [--embed-weights]]`.

use crate::loaded::{read_checkpoint, size_arg, Loaded};
use anyhow::{Context, Result};
use hrnet_codegen::build_api;
use hrnet_runtime::weights::BindOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// The Rust file to write (atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Specialize to inputs of H x W pixels instead of the config's size (a segmentation
    /// network runs at any size of at least 32 pixels a side; pose and classification sides
    /// must divide by 32).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    size: Option<Vec<usize>>,
    /// Check this checkpoint against the network now (and embed it with --embed-weights).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Embed the weights: writes `<output stem>.weights.safetensors` next to the output
    /// and adds `Model::embedded()`.
    #[arg(long, requires = "weights")]
    embed_weights: bool,
    /// Accept checkpoint tensors the network does not use.
    #[arg(long)]
    ignore_extra: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let loaded = Loaded::load_at(&a.config, size_arg(a.size.as_deref())?)?;
    let plan = loaded.plan()?;
    let opts = BindOptions {
        ignore_extra: a.ignore_extra,
    };
    let embedded = match &a.weights {
        Some(w) => {
            let ckpt = read_checkpoint(w)?;
            let fits = || loaded.does_not_fit(w);
            if a.embed_weights {
                Some(build_api::embedded_weights(&plan, &ckpt, opts).with_context(fits)?)
            } else {
                plan.pack_weights(&ckpt, opts).with_context(fits)?;
                None
            }
        }
        None => None,
    };
    build_api::write_compiled(&plan, &loaded.source(), &a.output, embedded.as_deref())?;
    eprintln!(
        "wrote {} in {:.0} ms",
        a.output.display(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
