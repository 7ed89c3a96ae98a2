//! Graph-to-graph passes and the pass manager.
//!
//! One pass, one file, one free function `fn(&mut Graph) -> bool` returning whether it
//! changed anything. **Passes talk to each other only through the IR.** The manager runs
//! them by name, verifies the graph after each one (in tests and debug builds, or when
//! asked), and can time them.

pub mod dce;
pub mod fold_conv_bn;
pub mod fuse_conv_add_resized;
pub mod fuse_epilogue;
pub mod fuse_upsample_add;

use crate::ir::Graph;
use crate::verify::{verify, VerifierError};
use std::time::{Duration, Instant};

/// A named pass.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// Name used by `--passes` and `--print-after`.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The pass itself.
    pub run: fn(&mut Graph) -> bool,
}

/// Every pass, in the order of the default pipeline (`--passes all`).
pub const PASSES: &[Pass] = &[
    Pass {
        name: "fold_conv_bn",
        summary: "fold BatchNorm into the preceding conv",
        run: fold_conv_bn::fold_conv_bn,
    },
    Pass {
        name: "fuse_upsample_add",
        summary: "fuse an upsample into the add that consumes it",
        run: fuse_upsample_add::fuse_upsample_add,
    },
    Pass {
        name: "fuse_epilogue",
        summary: "fuse ReLU and residual adds into the producing conv or add",
        run: fuse_epilogue::fuse_epilogue,
    },
    Pass {
        name: "fuse_conv_add_resized",
        summary: "fuse a conv into the nearest-upsampling add that consumes it",
        run: fuse_conv_add_resized::fuse_conv_add_resized,
    },
    Pass {
        name: "dce",
        summary: "drop computations no output reads",
        run: dce::dce,
    },
];

/// Looks a pass up by name.
pub fn by_name(name: &str) -> Option<&'static Pass> {
    PASSES.iter().find(|p| p.name == name)
}

/// Resolves a `--passes` argument: `none`, `all`, or a comma-separated list of names.
pub fn parse_list(spec: &str) -> Result<Vec<&'static Pass>, String> {
    match spec.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(PASSES.iter().collect()),
        list => list
            .split(',')
            .map(|n| {
                by_name(n.trim()).ok_or_else(|| {
                    let names: Vec<_> = PASSES.iter().map(|p| p.name).collect();
                    format!(
                        "unknown pass `{}`: expected none, all, or some of {}",
                        n.trim(),
                        names.join(", ")
                    )
                })
            })
            .collect(),
    }
}

/// A pass left the graph broken: always a compiler bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error: the IR is invalid after pass `{pass}`: {error} (this is a bug in hrnet, please report it)")]
pub struct PassError {
    /// The pass that ran last (`lower` for the lowering itself).
    pub pass: String,
    /// What the verifier found.
    pub error: VerifierError,
}

/// How long one pass took and whether it changed the graph.
#[derive(Debug, Clone)]
pub struct PassTiming {
    /// Pass name.
    pub name: &'static str,
    /// Wall time.
    pub time: Duration,
    /// Whether it changed anything.
    pub changed: bool,
}

/// Runs `passes` in order. With `verify_each`, verifies after each pass; `after` is called
/// with each pass's name and the graph it left.
pub fn run(
    g: &mut Graph,
    passes: &[&Pass],
    verify_each: bool,
    mut after: impl FnMut(&str, &Graph),
) -> Result<Vec<PassTiming>, PassError> {
    let mut timings = Vec::with_capacity(passes.len());
    for pass in passes {
        let start = Instant::now();
        let changed = (pass.run)(g);
        timings.push(PassTiming {
            name: pass.name,
            time: start.elapsed(),
            changed,
        });
        if verify_each {
            verify(g).map_err(|error| PassError {
                pass: pass.name.into(),
                error,
            })?;
        }
        after(pass.name, g);
    }
    Ok(timings)
}

/// Whether the verifier runs after every pass by default (debug builds and tests).
pub const VERIFY_BY_DEFAULT: bool = cfg!(debug_assertions);
