//! hrnet-ir: the HRNet front end, IR, passes, printers and reference interpreter.
//!
//! Pipeline: [`front::parse`] (YAML → [`front::Network`]) → [`lower::lower`] (→ raw
//! [`ir::Graph`]) → [`passes`] (fold, fuse) → printers ([`print`]) and the reference
//! interpreter ([`interp`]); [`memory`] plans arenas (an analysis: its result is returned). **hrnet-ir knows nothing about code generation.**
#![deny(missing_docs)]

pub mod front;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod memory;
pub mod passes;
pub mod print;
pub mod stats;
pub mod verify;

pub use front::{ConfigError, Network};
pub use ir::{Graph, Node, NodeId, Op, Shape, TensorSpec};

/// Anything that can go wrong turning a config into a graph.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config is wrong: the user's to fix.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The compiler is wrong: a verifier failure after lowering or a pass.
    #[error(transparent)]
    Internal(#[from] passes::PassError),
}

/// Parses `src`, lowers it and verifies the raw graph.
pub fn build(src: &str) -> Result<(Network, Graph), BuildError> {
    build_at(src, None)
}

/// [`build`] at the input size `size` (height, width) instead of the config's, when given:
/// checked as [`Network::with_input_size`] checks it.
pub fn build_at(src: &str, size: Option<(usize, usize)>) -> Result<(Network, Graph), BuildError> {
    let mut net = front::parse(src)?;
    if let Some((h, w)) = size {
        net = net.with_input_size(h, w)?;
    }
    let g = lower_verified(&net)?;
    Ok((net, g))
}

/// Lowers `net` and verifies the raw graph.
pub fn lower_verified(net: &Network) -> Result<Graph, BuildError> {
    let g = lower::lower(net);
    verify::verify(&g).map_err(|error| passes::PassError {
        pass: "lower".into(),
        error,
    })?;
    Ok(g)
}
