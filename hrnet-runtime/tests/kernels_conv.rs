//! Every convolution algorithm, epilogue and instruction set against a naive NCHW reference
//! accumulated in f64, at 1 and 2 threads; plus layout conversions and element-wise kernels.

use hrnet_runtime::kernels::{
    act_len, conv, eltwise, from_nchw, to_nchw, ActShape, Algo, ConvSpec, Ctx, Epilogue, Isa,
};

mod conv_common;
use conv_common::{nchw_checked, ref_conv, Epi, Rng, ALL_EPIS};

fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// Runs `spec` with `epi` (and ReLU on/off) on every ISA at 1 and 2 threads; returns the worst
/// error relative to max |expected|.
fn check(spec: ConvSpec, epis: &[Epi], seed: u64) -> f64 {
    let mut rng = Rng(seed);
    let x = rng.vec(spec.cin() * spec.h_in() * spec.w_in());
    let w = rng.vec(spec.cout() * spec.cin() * spec.k() * spec.k());
    let b = rng.vec(spec.cout());
    let ins = spec.in_shape();
    let mut xb = vec![f32::NAN; ins.len()];
    from_nchw(ins, &x, &mut xb);
    let mut packed = vec![0.0; spec.packed_len()];
    spec.pack(&w, Some(&b), &mut packed);
    let y = ref_conv(&spec, &x, &w, &b);
    let (c, ho, wo) = (spec.cout(), spec.h_out(), spec.w_out());
    let mut worst = 0.0f64;
    for &e in epis {
        let u = e.up();
        let hs = ActShape::new(c, ho << u, wo << u);
        let base = rng.vec(c * hs.h() * hs.w());
        let mut base_b = vec![0.0; hs.len()];
        from_nchw(hs, &base, &mut base_b);
        for relu in [false, true] {
            let expected: Vec<f64> = (0..c * hs.h() * hs.w())
                .map(|i| {
                    let (ch, yy, xx) = (i / (hs.h() * hs.w()), i / hs.w() % hs.h(), i % hs.w());
                    let v = y[(ch * ho + (yy >> u)) * wo + (xx >> u)];
                    let v = match e {
                        Epi::Plain => v,
                        _ => v + f64::from(base[i]),
                    };
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                })
                .collect();
            let scale = expected
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()))
                .max(1e-30);
            for isa in isas() {
                for threads in [1, 2] {
                    let ctx = Ctx::with_isa(threads, isa);
                    let mut scratch = vec![f32::NAN; spec.scratch_len(threads)];
                    let mut out = e.initial_out(&base_b);
                    let epi = e.epilogue(&base_b, relu);
                    conv(&ctx, &spec, &xb, &packed, &mut out, epi, &mut scratch);
                    let got = nchw_checked(hs, &out, &format!("{spec:?} {e:?} {isa:?}"));
                    let err = got
                        .iter()
                        .zip(&expected)
                        .fold(0.0f64, |m, (g, x)| m.max((f64::from(*g) - x).abs()))
                        / scale;
                    assert!(
                        err.is_finite(),
                        "{spec:?} {e:?} relu={relu} {isa:?} t={threads}: NaN"
                    );
                    worst = worst.max(err);
                }
            }
        }
    }
    worst
}

const DIRECT_TOL: f64 = 1e-5;

#[test]
fn direct_1x1_all_epilogues() {
    for (i, &(cin, cout, h, w)) in [
        (3, 8, 4, 8),
        (17, 18, 4, 5),
        (30, 44, 4, 12),
        (64, 72, 2, 4),
        (72, 17, 4, 3),
    ]
    .iter()
    .enumerate()
    {
        let s = ConvSpec::new(cin, cout, h, w, 1, 1, 0);
        let err = check(s, &ALL_EPIS, i as u64 + 1);
        assert!(err < DIRECT_TOL, "1x1 {cin}->{cout} {h}x{w}: {err:e}");
        eprintln!("direct 1x1 {cin}->{cout} {h}x{w}: relative error {err:e}");
    }
}

#[test]
fn direct_3x3_s2() {
    for (i, &(cin, cout, h, w)) in [
        (8, 17, 9, 7),
        (44, 30, 7, 10),
        (18, 64, 8, 6),
        (64, 72, 5, 5),
    ]
    .iter()
    .enumerate()
    {
        let s = ConvSpec::new(cin, cout, h, w, 3, 2, 1);
        let err = check(
            s,
            &[Epi::Plain, Epi::Accumulate, Epi::Residual],
            10 + i as u64,
        );
        assert!(err < DIRECT_TOL, "3x3 s2 {cin}->{cout} {h}x{w}: {err:e}");
        eprintln!("direct 3x3 s2 {cin}->{cout} {h}x{w}: relative error {err:e}");
    }
}

/// Inputs of at least 16 channel blocks and over 2 MiB read by at least 4 output groups run
/// rows outer (each input row fetched once for every group): the same sums in another loop
/// order, at every thread count (rows split across tasks) and instruction set.
#[test]
fn direct_rows_outer_order() {
    for (i, &(cin, cout, h, w, k, stride)) in [
        (256, 216, 48, 48, 1, 1),
        (272, 208, 48, 46, 3, 2),
        (260, 250, 47, 45, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let s = ConvSpec::new(cin, cout, h, w, k, stride, k / 2);
        let err = check(s, &[Epi::Plain, Epi::Residual], 30 + i as u64);
        assert!(
            err < DIRECT_TOL,
            "{k}x{k} s{stride} {cin}->{cout} {h}x{w}: {err:e}"
        );
        eprintln!("direct rows outer {k}x{k} s{stride} {cin}->{cout} {h}x{w}: {err:e}");
    }
}

#[test]
fn direct_3x3_s1() {
    for (i, &(cin, cout, h, w)) in [(18, 18, 7, 5), (30, 44, 6, 9), (72, 64, 3, 4)]
        .iter()
        .enumerate()
    {
        let s = ConvSpec::new(cin, cout, h, w, 3, 1, 1).with_algo(Algo::Direct);
        let err = check(
            s,
            &[Epi::Plain, Epi::Residual, Epi::Accumulate],
            20 + i as u64,
        );
        assert!(err < DIRECT_TOL, "3x3 s1 {cin}->{cout} {h}x{w}: {err:e}");
        eprintln!("direct 3x3 s1 {cin}->{cout} {h}x{w}: relative error {err:e}");
    }
}

#[test]
fn direct_generic_kernels() {
    // The stem's first conv (3 input channels), the final layer (1x1 with bias, 17 outputs, or
    // 3x3 pad 1), and other kernel sizes / strides / paddings. Strides 1 and 2 run microkernels
    // with compile-time pixel offsets, others the runtime-stride one (the last four specs, with
    // 1 to 4 output blocks per group and full and partial input blocks).
    let specs = [
        ConvSpec::new(3, 64, 11, 9, 3, 2, 1),
        ConvSpec::new(3, 18, 8, 6, 3, 2, 1),
        ConvSpec::new(32, 17, 6, 5, 1, 1, 0),
        ConvSpec::new(18, 17, 5, 6, 3, 1, 1).with_algo(Algo::Direct),
        ConvSpec::new(8, 8, 9, 9, 5, 1, 1),
        ConvSpec::new(17, 30, 8, 7, 2, 2, 0),
        ConvSpec::new(3, 8, 7, 7, 3, 1, 0),
        ConvSpec::new(44, 8, 9, 6, 1, 2, 0),
        ConvSpec::new(40, 64, 13, 29, 3, 3, 1),
        ConvSpec::new(16, 200, 7, 31, 1, 3, 0),
        ConvSpec::new(20, 16, 8, 40, 3, 3, 0),
        ConvSpec::new(24, 20, 9, 50, 1, 3, 0),
    ];
    for (i, s) in specs.into_iter().enumerate() {
        let err = check(s, &[Epi::Plain, Epi::Residual], 30 + i as u64);
        assert!(err < DIRECT_TOL, "{s:?}: {err:e}");
        eprintln!(
            "direct {}x{} s{} p{} {}->{}: relative error {err:e}",
            s.k(),
            s.k(),
            s.stride(),
            s.pad(),
            s.cin(),
            s.cout()
        );
    }
}

/// Reached on this machine: F(2×2) ≤ ~5e-7, F(4×4) ≤ ~2e-6 of max |expected| over these shapes
/// (direct ≤ ~3e-7).
#[test]
fn winograd_f2_and_f4() {
    let shapes = [
        (18, 30, 7, 9),
        (44, 17, 8, 6),
        (64, 72, 5, 11),
        (3, 8, 4, 4),
        (30, 44, 13, 10),
        (8, 8, 1, 3),
    ];
    for (algo, tol) in [
        (Algo::Winograd2, 2e-6),
        (Algo::Winograd4, 1e-5),
        (Algo::Winograd2Otf, 2e-6),
        (Algo::Winograd4Otf, 1e-5),
    ] {
        let mut worst = 0.0f64;
        for (i, &(cin, cout, h, w)) in shapes.iter().enumerate() {
            let s = ConvSpec::new(cin, cout, h, w, 3, 1, 1).with_algo(algo);
            let err = check(
                s,
                &[Epi::Plain, Epi::Residual, Epi::Accumulate],
                40 + i as u64,
            );
            assert!(err < tol, "{algo:?} {cin}->{cout} {h}x{w}: {err:e}");
            worst = worst.max(err);
        }
        eprintln!("{algo:?}: worst relative error {worst:e}");
    }
}

#[test]
fn winograd_many_tile_groups_and_channel_groups() {
    // Enough tiles for several tile groups, enough output blocks for several channel groups.
    let s = ConvSpec::new(40, 130, 17, 23, 3, 1, 1).with_algo(Algo::Winograd4);
    let err = check(s, &[Epi::Residual], 50);
    assert!(err < 1e-5, "{err:e}");
    let s = ConvSpec::new(20, 80, 12, 14, 3, 1, 1).with_algo(Algo::Winograd2);
    let err = check(s, &[Epi::Plain], 51);
    assert!(err < 2e-6, "{err:e}");
    // Several K chunks (F(2×2) on the fly takes 4 input blocks per chunk, F(4×4) one).
    let s = ConvSpec::new(72, 40, 9, 7, 3, 1, 1).with_algo(Algo::Winograd2Otf);
    let err = check(s, &[Epi::Residual], 52);
    assert!(err < 2e-6, "{err:e}");
    let s = ConvSpec::new(40, 130, 7, 6, 3, 1, 1).with_algo(Algo::Winograd4Otf);
    let err = check(s, &[Epi::Accumulate], 53);
    assert!(err < 1e-5, "{err:e}");
}

#[test]
fn isas_agree() {
    let mut rng = Rng(99);
    for spec in [
        ConvSpec::new(44, 30, 12, 10, 3, 1, 1).with_algo(Algo::Winograd4),
        ConvSpec::new(44, 30, 12, 10, 3, 2, 1),
        ConvSpec::new(72, 44, 6, 6, 1, 1, 0),
    ] {
        let ins = spec.in_shape();
        let x = rng.vec(spec.cin() * ins.h() * ins.w());
        let w = rng.vec(spec.cout() * spec.cin() * 9);
        let mut xb = vec![0.0; ins.len()];
        from_nchw(ins, &x, &mut xb);
        let mut packed = vec![0.0; spec.packed_len()];
        spec.pack(
            &w[..spec.cout() * spec.cin() * spec.k() * spec.k()],
            None,
            &mut packed,
        );
        let outs: Vec<Vec<f32>> = isas()
            .into_iter()
            .map(|isa| {
                let ctx = Ctx::with_isa(2, isa);
                let mut out = vec![0.0; spec.out_shape().len()];
                let mut scratch = vec![0.0; spec.scratch_len(2)];
                conv(
                    &ctx,
                    &spec,
                    &xb,
                    &packed,
                    &mut out,
                    Epilogue::plain(false),
                    &mut scratch,
                );
                out
            })
            .collect();
        let scale = outs[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for o in &outs[1..] {
            let d = o
                .iter()
                .zip(&outs[0])
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                d <= 1e-5 * scale,
                "{spec:?}: ISAs differ by {d:e} (scale {scale})"
            );
        }
    }
}

#[test]
fn layout_round_trip_and_len() {
    let s = ActShape::new(17, 3, 5);
    assert_eq!(act_len(17, 3, 5), 2 * 5 * 7 * 16);
    assert_eq!(s.len(), act_len(17, 3, 5));
    let x: Vec<f32> = (0..17 * 15).map(|i| i as f32 + 1.0).collect();
    let mut b = vec![f32::NAN; s.len()];
    from_nchw(s, &x, &mut b);
    assert_eq!(b.iter().filter(|v| **v != 0.0).count(), x.len());
    assert_eq!(b[s.index(16, 2, 4)], x[(16 * 3 + 2) * 5 + 4]);
    let mut back = vec![0.0; x.len()];
    to_nchw(s, &b, &mut back);
    assert_eq!(back, x);
}

#[test]
fn eltwise_add_and_add_upsampled() {
    let mut rng = Rng(7);
    for isa in isas() {
        for threads in [1, 2] {
            let ctx = Ctx::with_isa(threads, isa);
            let s = ActShape::new(18, 8, 12);
            let (a, b) = (rng.vec(18 * 96), rng.vec(18 * 96));
            let (mut ab, mut bb) = (vec![0.0; s.len()], vec![0.0; s.len()]);
            from_nchw(s, &a, &mut ab);
            from_nchw(s, &b, &mut bb);
            let mut out = vec![f32::NAN; s.len()];
            eltwise::add(&ctx, s, &ab, &bb, &mut out, true);
            let mut got = vec![0.0; a.len()];
            to_nchw(s, &out, &mut got);
            for i in 0..a.len() {
                assert_eq!(got[i], (a[i] + b[i]).max(0.0));
            }
            let ls = ActShape::new(18, 2, 3);
            let low = rng.vec(18 * 6);
            let mut lb = vec![0.0; ls.len()];
            from_nchw(ls, &low, &mut lb);
            eltwise::add_upsampled(&ctx, s, &mut ab, &lb, 2, false);
            to_nchw(s, &ab, &mut got);
            for c in 0..18 {
                for y in 0..8 {
                    for x in 0..12 {
                        let i = (c * 8 + y) * 12 + x;
                        assert_eq!(got[i], a[i] + low[(c * 2 + y / 4) * 3 + x / 4]);
                    }
                }
            }
            eltwise::relu(&ctx, s, &mut ab);
            assert!(ab.iter().all(|v| *v >= 0.0));
        }
    }
}

#[test]
fn isa_selection() {
    assert!(Isa::Portable.is_available());
    assert_eq!(Isa::parse("AVX2"), Some(Isa::Avx2));
    assert_eq!(Isa::parse("avx512"), Some(Isa::Avx512));
    assert_eq!(Isa::parse("portable"), Some(Isa::Portable));
    assert_eq!(Isa::parse("sse"), None);
    assert!(Isa::active().is_available());
    if let Some(req) = std::env::var("HRNET_ISA")
        .ok()
        .as_deref()
        .and_then(Isa::parse)
    {
        if req.is_available() {
            assert_eq!(Isa::active(), req);
        }
    }
}

#[test]
fn invalid_specs_are_refused() {
    use hrnet_runtime::kernels::SpecError;
    assert_eq!(
        ConvSpec::try_new(8, 8, 4, 4, 3, 1, 2),
        Err(SpecError::Padding)
    );
    assert_eq!(
        ConvSpec::try_new(8, 8, 4, 4, 1, 1, 0).and_then(|s| s.try_with_algo(Algo::Winograd4)),
        Err(SpecError::NotWinograd)
    );
    assert_eq!(
        ConvSpec::try_new(0, 8, 4, 4, 1, 1, 0),
        Err(SpecError::ZeroChannels)
    );
    assert_eq!(
        ConvSpec::try_new(8, 8, 1, 1, 5, 1, 1),
        Err(SpecError::KernelTooLarge)
    );
    // The panicking constructors say why.
    let r = std::panic::catch_unwind(|| ConvSpec::new(8, 8, 4, 4, 3, 1, 2));
    let msg = r.unwrap_err();
    assert_eq!(
        msg.downcast_ref::<String>().map(String::as_str),
        Some("ConvSpec: padding > 1 is not supported")
    );
}

#[test]
fn huge_widths_are_refused_instead_of_wrapping() {
    use hrnet_runtime::kernels::{ActShape, SpecError, MAX_FLOATS};
    // Lengths that wrap around usize (and would pass every length assert with tiny buffers)
    // or exceed what a slice can hold.
    for w in [
        usize::MAX,
        usize::MAX / 16,
        usize::MAX / 18 + 1,
        MAX_FLOATS / 16,
    ] {
        assert!(ActShape::try_new(16, 1, w).is_err(), "ActShape width {w}");
        assert_eq!(
            ConvSpec::try_new(16, 16, 1, w, 1, 1, 0),
            Err(SpecError::TooLarge),
            "ConvSpec width {w}"
        );
    }
    // Channels times a modest map that overflows only in the packed weights or MAC count.
    assert_eq!(
        ConvSpec::try_new(1 << 31, 1 << 31, 1, 1, 1, 1, 0),
        Err(SpecError::TooLarge)
    );
    assert!(ActShape::try_new(usize::MAX, 1, 1).is_err());
    // The largest accepted shapes have exact lengths.
    let s = ActShape::try_new(16, 1, MAX_FLOATS / 16 / 3 - 2).unwrap();
    assert!(s.len() <= MAX_FLOATS);
    let r = std::panic::catch_unwind(|| ActShape::new(16, 1, usize::MAX - 1));
    assert!(r.is_err());
}
