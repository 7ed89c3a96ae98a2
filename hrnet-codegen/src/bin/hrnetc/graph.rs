//! `hrnetc graph CONFIG [--size H W] [--passes none|all|NAME,..] [--format text|dot] [--stats] [--plan]`:
//! the IR, raw or after passes (every head, including those the compiled engines cannot run
//! yet), its statistics, or the plan the compiled engines render (`--plan`: steps, algorithms,
//! epilogues, arena and packed-weight offsets).

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use hrnet_codegen::build_api::CompileError;
use hrnet_codegen::driver;
use hrnet_codegen::plan;
use hrnet_codegen::target::Target;
use hrnet_ir::passes;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Dot,
}

/// Which kernels a printed plan is for.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanTarget {
    /// hrnet-runtime's kernels: the generated Rust (`compile`, `--engine aot`).
    Runtime,
    /// The cranelift JIT's kernels (`--engine jit`).
    Jit,
}

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// Lower for inputs of H x W pixels instead of the config's size (a segmentation
    /// network runs at any size of at least 32 pixels a side; pose and classification sides
    /// must divide by 32).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    size: Option<Vec<usize>>,
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
    /// Print the plan of the optimized graph instead (what the generated Rust runs; with
    /// `--plan jit`, what the JIT runs).
    #[arg(long, value_name = "TARGET", num_args = 0..=1, default_missing_value = "runtime")]
    plan: Option<PlanTarget>,
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
    if a.plan.is_some() && (a.passes != "all" || a.stats) {
        bail!("--plan prints the plan of the fully optimized graph: it takes neither --passes nor --stats");
    }
    let (_, mut g) =
        driver::load_config_at(&a.config, crate::loaded::size_arg(a.size.as_deref())?)?;
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
    if let Some(target) = a.plan {
        let target = match target {
            PlanTarget::Runtime => Target::runtime(),
            PlanTarget::Jit => Target::jit(),
        };
        let plan = plan::plan(&g, &target)
            .map_err(CompileError::from)
            .with_context(|| format!("planning {}", a.config.display()))?;
        print!("{plan}");
    } else if a.stats {
        println!("{}", hrnet_ir::stats::stats(&g));
    } else {
        print!("{}", render(&g));
    }
    Ok(ExitCode::SUCCESS)
}
