//! hrnet-codegen: back ends (Rust emitter, cranelift JIT), the build.rs API and `hrnetc`.
#![deny(missing_docs)]

pub mod driver;
pub mod exec;
pub mod plan;
