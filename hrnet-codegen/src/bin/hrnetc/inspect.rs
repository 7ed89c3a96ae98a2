//! `hrnetc inspect W [--config CONFIG]`: a checkpoint's tensors, and with a config whether
//! it fits. Tensor names come from the file: they are printed escaped.

use crate::loaded::read_checkpoint;
use crate::printable;
use anyhow::Result;
use hrnet_codegen::driver;
use hrnet_runtime::weights::BindOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    weights: PathBuf,
    /// Check it against this config.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let ckpt = read_checkpoint(&a.weights)?;
    let training = if ckpt.from_training_checkpoint() {
        ", unwrapped from a training checkpoint"
    } else {
        ""
    };
    println!(
        "{}: {}{training}, {} tensors",
        a.weights.display(),
        ckpt.format(),
        ckpt.len()
    );
    for (name, t) in ckpt.iter() {
        let name = printable(name, false);
        println!("  {name:<60} {:<5} {:?}", t.dtype.to_string(), t.shape);
    }
    let Some(config) = a.config else {
        return Ok(ExitCode::SUCCESS);
    };
    let (_, g) = driver::load_config(&config)?;
    let specs = driver::runtime_specs(&g);
    match ckpt.bind(&specs, BindOptions::default()) {
        Ok(_) => {
            println!(
                "{} fits {}: all {} tensors present with the right shapes",
                a.weights.display(),
                config.display(),
                specs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "{} does not fit {}:\n{}",
                a.weights.display(),
                config.display(),
                printable(&e.to_string(), true)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
