//! What a plan is made for, and the planner's answers for it.
//!
//! [`crate::plan::plan`] takes a [`Target`] and asks it, per convolution, which algorithm
//! (and so which Winograd tile) runs it and how its weights are packed. The answers are
//! recorded in the [`crate::plan::Plan`] (`ConvLayer::spec`'s algorithm, `packed_offset`,
//! [`crate::plan::Plan::packing`]); the emitter, `exec` and the JIT only read them. This file
//! and `plan.rs` are the only places these decisions are made.
//!
//! A plan does not depend on the instruction set or the thread count: hrnet-runtime's kernels
//! pick AVX-512, AVX2 or portable code at run time, the JIT compiles for its host, and both
//! split every call over however many threads the caller's `Scratch` has. Batch 1 and f32 are
//! the only layout the kernels have.

use hrnet_runtime::kernels::{Algo, ConvSpec, WINOGRAD_TILE_GROUP};

/// Which kernels render the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// hrnet-runtime's kernels: the generated Rust (AOT) and `exec`.
    Runtime,
    /// The cranelift JIT's generated kernels.
    Jit,
}

/// How packed weights are laid out (see hrnet-runtime's `kernels::conv` and the JIT's `pack`
/// module for the exact orders). Both put the bias first and have the same length for the
/// same algorithm ([`ConvSpec::packed_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Packing {
    /// hrnet-runtime's: output channels in groups of up to 4 blocks,
    /// `[group][icb][tap][16 ic][nb][16 oc]` (Winograd: per position ξ).
    RuntimeGroups,
    /// The JIT's: one contiguous run per 16-channel output block,
    /// `[ob][icb][tap][16 ic][16 oc]` (Winograd: `[ob][ξ][icb][16 ic][16 oc]`).
    JitBlocks,
}

/// What a plan is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The kernels that render the plan.
    pub kernels: Kernels,
    /// Whether Winograd may be chosen (otherwise every convolution is direct).
    pub winograd: bool,
}

/// F(4×4) in the JIT needs at least this many 4×4 tiles (below, F(2×2) wastes less on tile
/// padding). Measured on W32: 16×12 maps (12 tiles) gain 30%.
const JIT_MIN_TILES4: usize = 12;

impl Target {
    /// hrnet-runtime's kernels (generated Rust and `exec`), Winograd on.
    pub const fn runtime() -> Target {
        Target {
            kernels: Kernels::Runtime,
            winograd: true,
        }
    }

    /// The JIT's kernels, Winograd on.
    pub const fn jit() -> Target {
        Target {
            kernels: Kernels::Jit,
            winograd: true,
        }
    }

    /// The same target with Winograd allowed or not.
    pub const fn with_winograd(mut self, winograd: bool) -> Target {
        self.winograd = winograd;
        self
    }

    /// The weight layout of this target's kernels.
    pub const fn packing(&self) -> Packing {
        match self.kernels {
            Kernels::Runtime => Packing::RuntimeGroups,
            Kernels::Jit => Packing::JitBlocks,
        }
    }

    /// The algorithm (and so the Winograd tile size) for a convolution of shape `s`.
    pub fn conv_algo(&self, s: &ConvSpec) -> Algo {
        if !self.winograd || !s.is_winograd_shape() {
            return Algo::Direct;
        }
        match self.kernels {
            Kernels::Runtime => runtime_algo(s),
            Kernels::Jit => jit_algo(s),
        }
    }
}

/// hrnet-runtime, chosen by measurement (its `examples/kernel_bench.rs`, weights read from
/// memory as in a whole network), for a 3×3 stride-1 padding-1 conv:
/// - F(4×4) when clipped edge tiles waste less than 15% of its work, else F(2×2);
/// - weights transformed on the fly (`*Otf`) when the map has at most 24 tiles, i.e. one
///   or two tile groups: there each transformed weight serves few tiles, so reading 9
///   instead of 16 or 36 floats per weight pair from memory wins over transforming them.
fn runtime_algo(s: &ConvSpec) -> Algo {
    let (h, w) = (s.h_in(), s.w_in());
    let padded4 = h.div_ceil(4) * 4 * w.div_ceil(4) * 4;
    let m = if h * w * 100 >= padded4 * 85 { 4 } else { 2 };
    let tiles = h.div_ceil(m) * w.div_ceil(m);
    match (m, tiles <= 2 * WINOGRAD_TILE_GROUP) {
        (4, false) => Algo::Winograd4,
        (4, true) => Algo::Winograd4Otf,
        (_, false) => Algo::Winograd2,
        (_, true) => Algo::Winograd2Otf,
    }
}

/// The JIT handles whole tiles only: F(4×4) when the output divides into at least
/// [`JIT_MIN_TILES4`] 4×4 tiles, else F(2×2) when it divides into 2×2 tiles, else direct.
fn jit_algo(s: &ConvSpec) -> Algo {
    let (h, w) = (s.h_out(), s.w_out());
    if h.is_multiple_of(4) && w.is_multiple_of(4) && (h / 4) * (w / 4) >= JIT_MIN_TILES4 {
        Algo::Winograd4
    } else if h.is_multiple_of(2) && w.is_multiple_of(2) {
        Algo::Winograd2
    } else {
        Algo::Direct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_per_target() {
        let s = |h, w| ConvSpec::new(32, 32, h, w, 3, 1, 1);
        let rt = Target::runtime();
        assert_eq!(rt.conv_algo(&s(64, 48)), Algo::Winograd4);
        assert_eq!(rt.conv_algo(&s(8, 6)), Algo::Winograd2Otf);
        assert_eq!(rt.conv_algo(&s(16, 12)), Algo::Winograd4Otf);
        assert_eq!(rt.conv_algo(&s(9, 7)), Algo::Winograd2Otf);
        let jit = Target::jit();
        assert_eq!(jit.conv_algo(&s(64, 48)), Algo::Winograd4);
        assert_eq!(jit.conv_algo(&s(8, 6)), Algo::Winograd2);
        assert_eq!(jit.conv_algo(&s(9, 7)), Algo::Direct);
        for t in [rt, jit] {
            assert_eq!(t.with_winograd(false).conv_algo(&s(64, 48)), Algo::Direct);
            let strided = ConvSpec::new(32, 32, 64, 48, 3, 2, 1);
            assert_eq!(t.conv_algo(&strided), Algo::Direct);
        }
    }
}
