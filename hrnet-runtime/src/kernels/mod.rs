//! Convolution kernels, activation layouts and the thread pool.
//!
//! Generated model code calls these layer by layer from a static plan. Everything here is sized
//! once at load time and allocates nothing per call:
//!
//! - [`layout`]: the blocked activation layout `[ceil(C/16)][H+2][W+2][16]` with a zero halo
//!   ([`ActShape`], [`act_len`], NCHW conversions).
//! - [`ConvSpec`]: one convolution (shapes, kernel, stride, padding, [`Algo`]); its
//!   [`ConvSpec::packed_len`] / [`ConvSpec::pack`] turn OIHW weights + bias into the kernel's
//!   packed form once, and [`conv()`] runs it with a fused [`Epilogue`] (bias, residual or
//!   in-place accumulation, nearest upsampling ×2^k into a high-resolution tensor, ReLU).
//! - [`eltwise`]: standalone adds for what cannot be fused.
//! - [`head`]: the classification head (global average pool, linear) and OCR's spatial gather
//!   and object attention.
//! - [`resize`]: bilinear resizing (the segmentation networks' exchange units and head), fused
//!   with the add, and the part-padded channel layout of concatenations ([`Concat`]).
//! - [`Ctx`]: the thread [`pool::Pool`] plus the instruction set ([`Isa`]) the kernels use.
//! - [`peak`]: the measured FMA peak of a core for an [`Isa`] ([`fma_peak_gflops`]), against
//!   which benchmarks and profiles state each kernel's share.
//!
//! Algorithms: a register-blocked direct convolution (any k×k, stride, padding ≤ 1; 1×1 convs
//! included) whose microkernel keeps `NB` output blocks × `NP` output pixels in registers and
//! broadcasts one input channel at a time; and Winograd F(2×2,3×3) / F(4×4,3×3) for 3×3
//! stride-1 convs, fused per group of tiles (input transform → 16 or 36 small GEMMs with the same
//! microkernel → output transform + epilogue) in per-thread scratch memory; on small maps the
//! Winograd weights are transformed during the call from the compact 3×3 packing (`*Otf`),
//! which moves 1.8–4× fewer weight bytes. The compiler's planner picks the algorithm per
//! shape ([`ConvSpec::with_algo`]); [`ConvSpec::new`] is direct.
//!
//! Instruction sets: AVX-512F, AVX2+FMA and a portable fallback, chosen once at run time by
//! [`Isa::active`] (overridable with `HRNET_ISA=avx512|avx2|portable`) or explicitly with
//! [`Ctx::with_isa`]. The portable path uses the AVX-512 register blocking, so that generic
//! code is exercised on machines without AVX-512.
//!
//! Reduced precision ([`bf16`], [`bf16_conv`]): bf16 conversion and a bit-exact emulation of
//! `VDPBF16PS` / `TDPBF16PS`; a direct conv with bf16 weights and inputs, f32 accumulation and
//! the same f32 epilogues ([`conv_bf16`]), on AVX512-BF16 or a portable path equal to it bit
//! for bit, the hardware path self-checked at first use ([`SelfCheck`]).
//!
//! How generated code uses it (all shapes are constants; buffers are allocated once):
//! ```
//! use hrnet_runtime::kernels::{act_len, conv, ConvSpec, Ctx, Epilogue};
//! // A Basic block's second conv: 3×3, 32 → 32 channels at 64×48, + residual, ReLU.
//! const CONV2: ConvSpec = ConvSpec::new(32, 32, 64, 48, 3, 1, 1);
//! const ACT: usize = act_len(32, 64, 48);
//! let ctx = Ctx::new(2);
//! // At load time: pack OIHW weights (BatchNorm folded) and bias.
//! let (weight, bias) = (vec![0.01f32; 32 * 32 * 9], vec![0.0f32; 32]);
//! let mut packed = vec![0.0; CONV2.packed_len()];
//! CONV2.pack(&weight, Some(&bias), &mut packed);
//! let mut scratch = vec![0.0; CONV2.scratch_len(ctx.threads())];
//! // Per frame: activations live in a planned arena, in the blocked layout.
//! let (x, mid, mut y) = (vec![0.0f32; ACT], vec![0.0f32; ACT], vec![0.0f32; ACT]);
//! conv(&ctx, &CONV2, &mid, &packed, &mut y, Epilogue::residual(&x, true), &mut scratch);
//! ```

pub mod bf16;
pub mod bf16_conv;
pub mod conv;
pub mod eltwise;
pub mod head;
pub mod layout;
pub mod peak;
pub mod pool;
pub mod resize;
mod simd;
mod winograd;

pub use bf16_conv::{
    bf16_packed_len, bf16_scratch_len, conv_bf16, pack_bf16, packed_bytes, Bf16Isa, Precision,
    SelfCheck,
};
pub use conv::{conv, Addend, Algo, ConvSpec, Epilogue, SpecError};
pub use layout::{
    act_len, from_nchw, to_nchw, zero_halo, ActShape, ShapeError, BLOCK, HALO, MAX_FLOATS,
};
pub use peak::fma_peak_gflops;
pub use pool::Pool;
pub use resize::{add_resized_bilinear, resize_bilinear, Concat};
pub use winograd::{G2 as WINOGRAD_G2, G4 as WINOGRAD_G4, TILE_GROUP as WINOGRAD_TILE_GROUP};

use std::sync::OnceLock;

/// Instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F + FMA (one `zmm` per channel block).
    Avx512,
    /// AVX2 + FMA (two `ymm` per channel block).
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Isa {
    /// All instruction sets, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Whether this CPU can run `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// Parses `avx512`, `avx2` or `portable`.
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" | "avx512bf16" => Some(Isa::Avx512),
            "avx2" => Some(Isa::Avx2),
            "portable" | "scalar" => Some(Isa::Portable),
            _ => None,
        }
    }

    /// The process-wide choice, computed once: `HRNET_ISA` if set to an available instruction
    /// set, else [`Isa::detect`]. An unknown or unavailable `HRNET_ISA` falls back to the best
    /// available one below the request.
    pub fn active() -> Isa {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let best = Isa::detect();
            match std::env::var("HRNET_ISA")
                .ok()
                .as_deref()
                .and_then(Isa::parse)
            {
                Some(req) => Isa::ALL
                    .into_iter()
                    .skip_while(|i| *i != req)
                    .find(|i| i.is_available())
                    .unwrap_or(best),
                None => best,
            }
        })
    }
}

/// What every kernel call needs besides its tensors: the thread pool and the instruction set.
#[derive(Debug)]
pub struct Ctx {
    pool: Pool,
    isa: Isa,
}

impl Ctx {
    /// `threads` threads (the caller included) with [`Isa::active`].
    pub fn new(threads: usize) -> Ctx {
        Ctx {
            pool: Pool::new(threads),
            isa: Isa::active(),
        }
    }

    /// `threads` threads with an explicit instruction set.
    ///
    /// # Panics
    /// If this CPU cannot run `isa`.
    pub fn with_isa(threads: usize, isa: Isa) -> Ctx {
        assert!(
            isa.is_available(),
            "instruction set {isa:?} is not available on this CPU"
        );
        Ctx {
            pool: Pool::new(threads),
            isa,
        }
    }

    /// Number of threads (the caller included).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The thread pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
