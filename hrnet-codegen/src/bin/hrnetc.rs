//! `hrnetc`: the HRNet compiler's command line. See DESIGN.md for the stable interface.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hrnet_codegen::driver;
use hrnet_ir::passes;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hrnetc",
    version,
    about = "Compile official HRNet configs into fast Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Subcommand)]
enum Command {
    /// Print the IR of a config, raw or after passes.
    Graph {
        /// The official experiment YAML.
        config: PathBuf,
        /// `none`, `all`, or a comma-separated list of pass names.
        #[arg(long, default_value = "all")]
        passes: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
        /// Also print the graph after this pass (repeatable).
        #[arg(long = "print-after", value_name = "NAME")]
        print_after: Vec<String>,
        /// Print conv count, MACs, parameters and arena bytes instead of the graph.
        #[arg(long)]
        stats: bool,
        /// Print how long each pass took (to stderr).
        #[arg(long = "time-passes")]
        time_passes: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Graph {
            config,
            passes: spec,
            format,
            print_after,
            stats,
            time_passes,
        } => {
            let list = passes::parse_list(&spec).map_err(anyhow::Error::msg)?;
            for name in &print_after {
                if passes::by_name(name).is_none() {
                    bail!("--print-after {name}: no such pass");
                }
            }
            let (_, mut g) = driver::load_config(&config)?;
            let render = |g: &hrnet_ir::Graph| match format {
                GraphFormat::Text => hrnet_ir::print::to_text(g),
                GraphFormat::Dot => hrnet_ir::print::to_dot(g),
            };
            let timings = driver::optimize(&mut g, &list, false, |name, g| {
                if print_after.iter().any(|p| p == name) {
                    println!("; after {name}");
                    print!("{}", render(g));
                }
            })
            .context("running passes")?;
            if time_passes {
                for t in &timings {
                    eprintln!(
                        "{:>10.3} ms  {}{}",
                        t.time.as_secs_f64() * 1e3,
                        t.name,
                        if t.changed { "" } else { " (no change)" }
                    );
                }
            }
            if stats {
                println!("{}", hrnet_ir::stats::stats(&g));
            } else {
                print!("{}", render(&g));
            }
            Ok(())
        }
    }
}
