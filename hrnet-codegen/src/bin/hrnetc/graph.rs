//! `hrnetc graph CONFIG [--passes none|all|NAME,..] [--format text|dot]`: the IR, raw or
//! after passes. Works for every head, including those the compiled engines cannot run yet.

use anyhow::{bail, Result};
use clap::ValueEnum;
use hrnet_codegen::driver;
use hrnet_ir::passes;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Dot,
}

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// `none`, `all`, or a comma-separated list of pass names.
    #[arg(long, default_value = "all")]
    passes: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also print the graph after this pass (repeatable).
    #[arg(long = "print-after", value_name = "NAME")]
    print_after: Vec<String>,
    /// Print conv count, MACs, parameters and arena bytes instead of the graph.
    #[arg(long)]
    stats: bool,
    /// Print how long each pass took (to stderr).
    #[arg(long = "time-passes")]
    time_passes: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let list = passes::parse_list(&a.passes).map_err(anyhow::Error::msg)?;
    for name in &a.print_after {
        if passes::by_name(name).is_none() {
            bail!("--print-after {name}: no such pass");
        }
    }
    let (_, mut g) = driver::load_config(&a.config)?;
    let render = |g: &hrnet_ir::Graph| match a.format {
        Format::Text => hrnet_ir::print::to_text(g),
        Format::Dot => hrnet_ir::print::to_dot(g),
    };
    let timings = driver::optimize(&mut g, &list, false, |name, g| {
        if a.print_after.iter().any(|p| p == name) {
            println!("; after {name}");
            print!("{}", render(g));
        }
    })?;
    if a.time_passes {
        for t in &timings {
            let note = if t.changed { "" } else { " (no change)" };
            eprintln!("{:>10.3} ms  {}{note}", t.time.as_secs_f64() * 1e3, t.name);
        }
    }
    if a.stats {
        println!("{}", hrnet_ir::stats::stats(&g));
    } else {
        print!("{}", render(&g));
    }
    Ok(ExitCode::SUCCESS)
}
