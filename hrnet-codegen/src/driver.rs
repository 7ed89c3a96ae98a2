//! Shared front half of every command and of the build.rs API: read a config file, parse,
//! lower, run passes.

use hrnet_ir::passes::{self, Pass, PassTiming};
use hrnet_ir::{BuildError, Graph, Network};
use std::path::{Path, PathBuf};

/// A config file that could not be turned into a graph.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not UTF-8.
    #[error("{path}: not a text file (invalid UTF-8)")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The config is invalid.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: BuildError,
    },
    /// A pass broke the graph (a compiler bug).
    #[error(transparent)]
    Pass(#[from] passes::PassError),
}

/// Reads and lowers `path`.
pub fn load_config(path: &Path) -> Result<(Network, Graph), DriverError> {
    let bytes = std::fs::read(path).map_err(|source| DriverError::Read {
        path: path.into(),
        source,
    })?;
    let src = String::from_utf8(bytes).map_err(|_| DriverError::NotText { path: path.into() })?;
    hrnet_ir::build(&src).map_err(|source| DriverError::Config {
        path: path.into(),
        source,
    })
}

/// Runs `passes` over `g`, verifying after each when `verify` (always in debug builds).
pub fn optimize(
    g: &mut Graph,
    passes: &[&'static Pass],
    verify: bool,
    after: impl FnMut(&str, &Graph),
) -> Result<Vec<PassTiming>, DriverError> {
    Ok(passes::run(
        g,
        passes,
        verify || passes::VERIFY_BY_DEFAULT,
        after,
    )?)
}

/// Reads, lowers and runs the default pipeline (`--passes all`).
pub fn load_optimized(path: &Path) -> Result<(Network, Graph), DriverError> {
    let (net, mut g) = load_config(path)?;
    let all: Vec<&'static Pass> = passes::PASSES.iter().collect();
    optimize(&mut g, &all, false, |_, _| {})?;
    Ok((net, g))
}

/// The IR's tensor list in the runtime's terms.
pub fn runtime_specs(g: &Graph) -> Vec<hrnet_runtime::weights::TensorSpec> {
    g.tensor_specs()
        .into_iter()
        .map(|t| hrnet_runtime::weights::TensorSpec::new(t.name, t.shape))
        .collect()
}

/// Binds `ckpt` strictly against the tensors `g` needs and returns them by name, for the
/// reference interpreter.
pub fn reference_weights(
    ckpt: &hrnet_runtime::weights::Checkpoint,
    g: &Graph,
    opts: hrnet_runtime::weights::BindOptions,
) -> Result<std::collections::HashMap<String, Vec<f32>>, hrnet_runtime::weights::BindError> {
    let specs = runtime_specs(g);
    let bound = ckpt.bind(&specs, opts)?;
    Ok(specs
        .into_iter()
        .map(|s| s.name)
        .zip(bound.into_vec())
        .collect())
}
