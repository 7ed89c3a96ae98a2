//! hrnet-runtime: everything a compiled HRNet model links against.
//!
//! - [`weights`]: checkpoint readers (safetensors, `.pth` zip and legacy, training checkpoints)
//!   with a pickle reader that never executes anything, and strict binding against a tensor list.
//! - [`model`]: loading, folding and packing a compiled model's parameters; per-caller scratch.
//! - [`npy`]: `.npy` input and output.
//! - [`kernels`]: convolution kernels, activation layouts and the thread pool.
//! - [`cls`]: the official classification pipeline (PIL-exact resize, center crop, top-K).
//! - [`seg`]: the segmentation pipeline (normalization, logits → class map, drawing).
//! - [`pose`]: the official top-down pose pipeline around the network (crop, normalize, decode).
//!
//! **This crate never depends on hrnet-ir, quote or cranelift.**
#![deny(missing_docs)]

#[cfg(feature = "image")]
pub mod cls;
pub mod fsio;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod pose;
#[cfg(feature = "image")]
pub mod seg;
pub mod weights;
