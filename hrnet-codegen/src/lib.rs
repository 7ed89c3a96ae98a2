//! hrnet-codegen: back ends (Rust emitter, cranelift JIT), the build.rs API and `hrnetc`.
#![deny(missing_docs)]

pub mod aot;
pub mod build_api;
pub mod driver;
pub mod emit;
pub mod engine;
pub mod exec;
#[cfg(feature = "jit")]
pub mod jit;
pub mod plan;
pub mod profile;
pub mod target;
