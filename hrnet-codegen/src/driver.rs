//! Shared front half of every command and of the build.rs API: read a config file, parse,
//! lower, run passes.

use hrnet_ir::passes::{self, Pass, PassTiming};
use hrnet_ir::{BuildError, Graph, Network};
use hrnet_runtime::fsio::{self, FsError, Limit};
use std::path::{Path, PathBuf};

/// A config file that could not be turned into a graph.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The file could not be read, is not a regular file or is too large.
    #[error(transparent)]
    Read(#[from] FsError),
    /// The file is not UTF-8.
    #[error("{path}: not a text file (invalid UTF-8)")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The config is invalid.
    #[error("{path}: {error}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: BuildError,
    },
    /// A pass broke the graph (a compiler bug).
    #[error(transparent)]
    Pass(#[from] passes::PassError),
}

/// Largest config file read, in bytes: an official experiment config has a few thousand.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads and lowers `path` (a regular file of at most [`MAX_CONFIG_BYTES`]).
pub fn load_config(path: &Path) -> Result<(Network, Graph), DriverError> {
    load_config_at(path, None)
}

/// [`load_config`] at the input size `size` (height, width) instead of the config's, when
/// given (`--size`, [`crate::build_api::Builder::size`]): at least 32 pixels a side, checked
/// as [`Network::with_input_size`] checks it.
pub fn load_config_at(
    path: &Path,
    size: Option<(usize, usize)>,
) -> Result<(Network, Graph), DriverError> {
    let limit = Limit {
        max: MAX_CONFIG_BYTES,
        what: "a config",
    };
    let bytes = fsio::read_regular(path, limit)?;
    let src = String::from_utf8(bytes).map_err(|_| DriverError::NotText { path: path.into() })?;
    hrnet_ir::build_at(&src, size).map_err(|error| DriverError::Config {
        path: path.into(),
        error,
    })
}

/// `net` (read from `path`) re-specialized to the input size (height, width) `(h, w)` and
/// lowered: what a segmentation network runs on an image of its own size.
pub fn specialize(
    path: &Path,
    net: &Network,
    h: usize,
    w: usize,
) -> Result<(Network, Graph), DriverError> {
    let config_err = |error: BuildError| DriverError::Config {
        path: path.into(),
        error,
    };
    let net = net
        .with_input_size(h, w)
        .map_err(|e| config_err(e.into()))?;
    let g = hrnet_ir::lower_verified(&net).map_err(config_err)?;
    Ok((net, g))
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
    load_optimized_at(path, None)
}

/// [`load_optimized`] at the input size `size` (height, width), as [`load_config_at`].
pub fn load_optimized_at(
    path: &Path,
    size: Option<(usize, usize)>,
) -> Result<(Network, Graph), DriverError> {
    let (net, mut g) = load_config_at(path, size)?;
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

/// Seeded random weights shaped like a trained network's (Kaiming-scaled convs, BatchNorm
/// statistics near 0 and 1), as a safetensors file's bytes: for benchmarks without a
/// checkpoint and for tests.
pub fn random_checkpoint(specs: &[hrnet_runtime::weights::TensorSpec], seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let fan_in: usize = t.shape.iter().skip(1).product::<usize>().max(1);
            (0..n)
                .map(|_| {
                    let u = next();
                    if t.name.ends_with("running_var") {
                        0.5 + u
                    } else if t.shape.len() == 4 {
                        (u - 0.5) * (6.0 / fan_in as f32).sqrt() * 2.0
                    } else if t.name.ends_with(".weight") {
                        0.5 + u
                    } else {
                        (u - 0.5) * 0.2
                    }
                })
                .flat_map(f32::to_le_bytes)
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = specs
        .iter()
        .zip(&data)
        .map(|(t, d)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), d)
                    .expect("length matches shape");
            (t.name.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).expect("serializing in memory cannot fail")
}
