//! The bf16 convolution against a scalar reference built on the emulated `VDPBF16PS`
//! (bit for bit, every bf16 kernel this CPU has, 1 and 2 threads, every epilogue, the conv
//! shapes of HRNet with padded channel blocks), its error against f64, the sizes the planner
//! uses, and the self-check's fallback.

use hrnet_runtime::kernels::bf16::{dpbf16_lane, pair};
use hrnet_runtime::kernels::{
    bf16_packed_len, bf16_scratch_len, conv_bf16, from_nchw, pack_bf16, packed_bytes, ActShape,
    Bf16Isa, ConvSpec, Ctx, Precision, SelfCheck, BLOCK,
};

mod conv_common;
use conv_common::{nchw_checked, ref_conv, Epi, Rng, ALL_EPIS};

/// The bf16 conv's defining order, NCHW, scalar: per output, for each input block, tap and
/// pair of channels (up to the last real pair), one emulated `VDPBF16PS` lane; then the bias.
fn ref_bf16(s: &ConvSpec, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (ho, wo) = (s.h_out(), s.w_out());
    let icb = s.cin().div_ceil(BLOCK);
    let xv = |ic: usize, iy: isize, ix: isize| {
        if ic >= s.cin() || iy < 0 || ix < 0 || iy >= s.h_in() as isize || ix >= s.w_in() as isize {
            0.0
        } else {
            x[(ic * s.h_in() + iy as usize) * s.w_in() + ix as usize]
        }
    };
    let mut y = vec![0.0f32; s.cout() * ho * wo];
    for oc in 0..s.cout() {
        let wv = |ic: usize, t: usize| {
            if ic >= s.cin() {
                0.0
            } else {
                w[(oc * s.cin() + ic) * s.k() * s.k() + t]
            }
        };
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0.0f32;
                for ib in 0..icb {
                    let real = (s.cin() - ib * BLOCK).min(BLOCK);
                    for ky in 0..s.k() {
                        for kx in 0..s.k() {
                            let iy = (oy * s.stride() + ky) as isize - s.pad() as isize;
                            let ix = (ox * s.stride() + kx) as isize - s.pad() as isize;
                            for p in 0..real.div_ceil(2) {
                                let ic = ib * BLOCK + 2 * p;
                                let t = ky * s.k() + kx;
                                acc = dpbf16_lane(
                                    acc,
                                    pair(wv(ic, t), wv(ic + 1, t)),
                                    pair(xv(ic, iy, ix), xv(ic + 1, iy, ix)),
                                );
                            }
                        }
                    }
                }
                y[(oc * ho + oy) * wo + ox] = acc + b[oc];
            }
        }
    }
    y
}

fn kernels() -> Vec<Bf16Isa> {
    Bf16Isa::ALL
        .into_iter()
        .filter(|i| i.is_available())
        .collect()
}

/// Runs `spec` with every epilogue in `epis` (ReLU on and off) on every bf16 kernel at 1 and
/// 2 threads and asserts the output equals the reference bit for bit (halo and padding
/// channels zero). Returns the largest error of the plain output against f64, relative to
/// max |expected|.
fn check(spec: ConvSpec, epis: &[Epi], seed: u64) -> f64 {
    let mut rng = Rng(seed);
    let x = rng.vec(spec.cin() * spec.h_in() * spec.w_in());
    let w: Vec<f32> = rng
        .vec(spec.cout() * spec.cin() * spec.k() * spec.k())
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = rng.vec(spec.cout());
    let ins = spec.in_shape();
    // Padding channels of the input hold garbage: the kernel must not read them.
    let mut xb = vec![f32::NAN; ins.len()];
    from_nchw(ins, &x, &mut xb);
    for cb in 0..ins.blocks() {
        for c in 0..BLOCK {
            if cb * BLOCK + c >= spec.cin() {
                for yy in 0..ins.h() {
                    for xx in 0..ins.w() {
                        xb[ins.pixel(cb, yy, xx) + c] = f32::NAN;
                    }
                }
            }
        }
    }
    let mut packed = vec![f32::NAN; bf16_packed_len(&spec)];
    pack_bf16(&spec, &w, Some(&b), &mut packed);
    let y = ref_bf16(&spec, &x, &w, &b);
    let (c, ho, wo) = (spec.cout(), spec.h_out(), spec.w_out());
    for &e in epis {
        let u = e.up();
        let hs = ActShape::new(c, ho << u, wo << u);
        let base = rng.vec(c * hs.h() * hs.w());
        let mut base_b = vec![0.0; hs.len()];
        from_nchw(hs, &base, &mut base_b);
        for relu in [false, true] {
            let expected: Vec<f32> = (0..c * hs.h() * hs.w())
                .map(|i| {
                    let (ch, yy, xx) = (i / (hs.h() * hs.w()), i / hs.w() % hs.h(), i % hs.w());
                    let v = y[(ch * ho + (yy >> u)) * wo + (xx >> u)];
                    let v = match e {
                        Epi::Plain => v,
                        _ => base[i] + v,
                    };
                    // ReLU as `max(v, 0)` returning the second operand unless `v > 0`
                    // (`VMAXPS`): NaN and -0 become +0.
                    if relu && v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
                        0.0
                    } else {
                        v
                    }
                })
                .collect();
            for isa in kernels() {
                for threads in [1, 2] {
                    let ctx = Ctx::new(threads);
                    let mut scratch = vec![f32::NAN; bf16_scratch_len(&spec)];
                    let mut out = e.initial_out(&base_b);
                    let epi = e.epilogue(&base_b, relu);
                    conv_bf16(&ctx, isa, &spec, &xb, &packed, &mut out, epi, &mut scratch);
                    let got = nchw_checked(hs, &out, &format!("{spec:?} {e:?} {isa:?}"));
                    if let Some(i) =
                        (0..got.len()).find(|&i| got[i].to_bits() != expected[i].to_bits())
                    {
                        panic!(
                            "{spec:?} {e:?} relu={relu} {isa:?} t={threads}: element {i}: {} \
                             ({:#010x}), reference {} ({:#010x})",
                            got[i],
                            got[i].to_bits(),
                            expected[i],
                            expected[i].to_bits()
                        );
                    }
                }
            }
        }
    }
    let exact = ref_conv(&spec, &x, &w, &b);
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    y.iter()
        .zip(&exact)
        .fold(0.0f64, |m, (g, x)| m.max((f64::from(*g) - x).abs()))
        / scale
}

/// bf16 rounds inputs and weights to 8 significant bits: errors of a few 1e-3 of the
/// largest output, far above f32's 1e-6 and far below OpenVINO bf16's 0.25 on W32.
const BF16_TOL: f64 = 1e-2;

fn check_all(shapes: &[(usize, usize, usize, usize)], k: usize, stride: usize, epis: &[Epi]) {
    for (i, &(cin, cout, h, w)) in shapes.iter().enumerate() {
        let pad = k / 2;
        let s = ConvSpec::new(cin, cout, h, w, k, stride, pad);
        let err = check(s, epis, 100 * k as u64 + i as u64);
        eprintln!("bf16 {k}x{k}s{stride} {cin}->{cout} {h}x{w}: relative error {err:e}");
        assert!(err < BF16_TOL, "{s:?}: error {err:e}");
        assert!(
            err > 1e-5,
            "{s:?}: error {err:e} too small for bf16 rounding"
        );
    }
}

#[test]
fn bf16_1x1_all_epilogues() {
    check_all(
        &[
            (3, 8, 4, 8),
            (18, 36, 5, 4),
            (36, 18, 3, 7),
            (72, 17, 4, 3),
            (64, 80, 2, 5),
        ],
        1,
        1,
        &ALL_EPIS,
    );
}

#[test]
fn bf16_3x3_stride1() {
    check_all(
        &[
            (18, 18, 9, 7),
            (36, 36, 6, 5),
            (32, 64, 5, 17),
            (72, 72, 3, 3),
        ],
        3,
        1,
        &[Epi::Plain, Epi::Residual, Epi::Accumulate],
    );
}

#[test]
fn bf16_3x3_stride2() {
    check_all(
        &[
            (3, 64, 12, 10),
            (18, 36, 9, 7),
            (36, 72, 6, 6),
            (64, 17, 5, 5),
        ],
        3,
        2,
        &[Epi::Plain, Epi::Accumulate, Epi::Residual],
    );
}

#[test]
fn packed_sizes() {
    let s =
        ConvSpec::new(32, 32, 64, 48, 3, 1, 1).with_algo(hrnet_runtime::kernels::Algo::Winograd4);
    // f32 with Winograd F(4×4) (36 transformed taps) and direct, and bf16 (direct: 9 taps of
    // 2-byte weights).
    assert_eq!(packed_bytes(&s, Precision::F32), 4 * (32 + 36 * 32 * 32));
    assert_eq!(
        packed_bytes(
            &s.with_algo(hrnet_runtime::kernels::Algo::Direct),
            Precision::F32
        ),
        4 * (32 + 9 * 32 * 32)
    );
    assert_eq!(packed_bytes(&s, Precision::Bf16), 4 * 32 + 2 * 9 * 32 * 32);
    // Odd widths pad both channel counts to whole blocks of 16.
    let s = ConvSpec::new(18, 36, 8, 8, 1, 1, 0);
    assert_eq!(bf16_packed_len(&s), 48 + 48 * 32 / 2);
    assert_eq!(bf16_scratch_len(&s), s.in_shape().len() / 2);
}

#[test]
fn isa_names() {
    assert_eq!(Bf16Isa::parse("AVX512BF16"), Some(Bf16Isa::Avx512Bf16));
    assert_eq!(Bf16Isa::parse("avx2"), Some(Bf16Isa::Portable));
    assert_eq!(Bf16Isa::parse("portable"), Some(Bf16Isa::Portable));
    assert_eq!(Bf16Isa::parse("sse"), None);
    // The f32 kernels read the same variable: a bf16 name selects AVX-512 there.
    assert_eq!(
        hrnet_runtime::kernels::Isa::parse("avx512bf16"),
        Some(hrnet_runtime::kernels::Isa::Avx512)
    );
    assert!(Bf16Isa::Portable.is_available());
    assert!(Bf16Isa::detect().is_available());
}

#[test]
fn self_check_passes_and_falls_back_on_mismatch() {
    let hw = Bf16Isa::Avx512Bf16;
    // The real check: the hardware kernel passes where it exists.
    let ok = SelfCheck::new();
    let want = if hw.is_available() {
        hw
    } else {
        Bf16Isa::Portable
    };
    assert_eq!(ok.resolve(hw), want);
    assert_eq!(ok.warnings(), 0);
    assert_eq!(ok.resolve(Bf16Isa::Portable), Bf16Isa::Portable);
    // A forced mismatch: the portable kernel is used and one warning printed, however
    // often the kernel is asked for.
    let bad = SelfCheck::with_injected_fault();
    for _ in 0..3 {
        assert_eq!(bad.resolve(hw), Bf16Isa::Portable);
    }
    assert_eq!(bad.warnings(), usize::from(hw.is_available()));
}
