//! Bilinear resizing in the blocked layout against a naive NCHW reference in f64 and against
//! PyTorch's `F.interpolate` (`tests/data/heads/make_reference.py`); identical bits on every
//! instruction set and thread count; halo and padding conventions; the part-padded
//! concatenation feeding a 1×1 convolution.

mod common;

use common::{
    blocked, blocked_poisoned, data_dir, isas, nchw, pair, ref_axis, reference, Rng, SameBits,
};
use hrnet_runtime::kernels::resize::{ratio, taps};
use hrnet_runtime::kernels::{
    add_resized_bilinear, conv, resize_bilinear, ActShape, Concat, ConvSpec, Ctx, Epilogue, BLOCK,
};

fn ref_resize(
    x: &[f32],
    c: usize,
    (hi, wi): (usize, usize),
    (ho, wo): (usize, usize),
    align: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; c * ho * wo];
    for ch in 0..c {
        for oy in 0..ho {
            let (y0, y1, ly) = ref_axis(oy, hi, ho, align);
            for ox in 0..wo {
                let (x0, x1, lx) = ref_axis(ox, wi, wo, align);
                let at = |yy: usize, xx: usize| f64::from(x[(ch * hi + yy) * wi + xx]);
                let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bot = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                y[(ch * ho + oy) * wo + ox] = top * (1.0 - ly) + bot * ly;
            }
        }
    }
    y
}

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
}

const SIZES: [((usize, usize), (usize, usize)); 8] = [
    ((9, 13), (18, 26)),
    ((5, 7), (18, 26)),
    ((3, 4), (18, 26)),
    ((64, 48), (128, 96)),
    ((18, 26), (7, 5)),
    ((4, 6), (4, 6)),
    ((1, 1), (3, 70)),
    ((6, 9), (1, 1)),
];

#[test]
fn resize_matches_f64_reference_on_every_isa_and_thread_count() {
    let mut rng = Rng(1);
    for c in [3, 20, 48] {
        for (src_hw, dst_hw) in SIZES {
            for align in [false, true] {
                let ss = ActShape::new(c, src_hw.0, src_hw.1);
                let ds = ActShape::new(c, dst_hw.0, dst_hw.1);
                let x = rng.vec(c * src_hw.0 * src_hw.1, 1.0);
                let want = ref_resize(&x, c, src_hw, dst_hw, align);
                let src = blocked_poisoned(ss, &x);
                let mut first = SameBits::default();
                for isa in isas() {
                    for threads in [1, 2, 3] {
                        let ctx = Ctx::with_isa(threads, isa);
                        let mut dst = vec![f32::NAN; ds.len()];
                        resize_bilinear(&ctx, ss, &src, ds, &mut dst, align);
                        // Halo and padding channels are zeros, the interior is the resize.
                        let interior = nchw(ds, &dst);
                        assert!(
                            dst.iter()
                                .zip(&blocked(ds, &interior))
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "halo/padding not zero: c={c} {src_hw:?}->{dst_hw:?}"
                        );
                        let err = max_err(&interior, &want);
                        assert!(
                            err < 1e-5,
                            "c={c} {src_hw:?}->{dst_hw:?} align={align} {isa:?}: {err}"
                        );
                        first.check(dst, &format!("{isa:?} at {threads} threads"));
                    }
                }
            }
        }
    }
}

#[test]
fn add_resized_accumulates_into_interior_with_relu() {
    let mut rng = Rng(2);
    for c in [5, 16, 40] {
        for (src_hw, dst_hw) in SIZES {
            for (align, relu) in [(false, false), (false, true), (true, true)] {
                let ss = ActShape::new(c, src_hw.0, src_hw.1);
                let ds = ActShape::new(c, dst_hw.0, dst_hw.1);
                let x = rng.vec(c * src_hw.0 * src_hw.1, 1.0);
                let a = rng.vec(c * dst_hw.0 * dst_hw.1, 1.0);
                let r = ref_resize(&x, c, src_hw, dst_hw, align);
                let want: Vec<f64> = a
                    .iter()
                    .zip(&r)
                    .map(|(&a, &r)| {
                        let v = f64::from(a) + r;
                        if relu {
                            v.max(0.0)
                        } else {
                            v
                        }
                    })
                    .collect();
                let src = blocked_poisoned(ss, &x);
                let acc0 = blocked(ds, &a);
                let mut first = SameBits::default();
                for isa in isas() {
                    for threads in [1, 2] {
                        let ctx = Ctx::with_isa(threads, isa);
                        // A halo of 7s must stay 7s: only the interior is touched.
                        let mut acc = acc0.clone();
                        let interior_mask = blocked(ds, &vec![1.0; c * dst_hw.0 * dst_hw.1]);
                        for (v, m) in acc.iter_mut().zip(&interior_mask) {
                            if *m == 0.0 && *v == 0.0 {
                                *v = 7.0;
                            }
                        }
                        add_resized_bilinear(&ctx, ss, &src, ds, &mut acc, align, relu);
                        let err = max_err(&nchw(ds, &acc), &want);
                        assert!(err < 1e-5, "c={c} {src_hw:?}->{dst_hw:?} {isa:?}: {err}");
                        for (i, (v, m)) in acc.iter().zip(&interior_mask).enumerate() {
                            let ch = i % BLOCK + (i / ds.block_stride()) * BLOCK;
                            let halo_px = {
                                let p = (i % ds.block_stride()) / BLOCK;
                                let (y, x) = (p / (ds.w() + 2), p % (ds.w() + 2));
                                y == 0 || x == 0 || y == ds.h() + 1 || x == ds.w() + 1
                            };
                            if halo_px {
                                assert_eq!(*v, 7.0, "halo written");
                            } else if ch >= c {
                                assert_eq!(*v, 0.0, "padding channel {ch} not zero");
                            } else {
                                assert_eq!(*m, 1.0);
                            }
                        }
                        first.check(acc, &format!("{isa:?} at {threads} threads"));
                    }
                }
            }
        }
    }
}

#[test]
fn taps_follow_pytorch_index_rules() {
    // align_corners=False: 2 → 4 samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25.
    let r = ratio(2, 4, false);
    let t: Vec<_> = (0..4).map(|d| taps(d, 2, r, false)).collect();
    assert_eq!((t[0].i0, t[0].i1, t[0].l1), (0, 1, 0.0));
    assert_eq!((t[1].i0, t[1].i1, t[1].l1), (0, 1, 0.25));
    assert_eq!((t[2].i0, t[2].i1, t[2].l1), (0, 1, 0.75));
    // Past the last sample: both taps on it.
    assert_eq!((t[3].i0, t[3].i1, t[3].l0), (1, 1, 0.75));
    // align_corners=True: the corners map onto each other; an output of 1 takes sample 0.
    let r = ratio(5, 3, true);
    assert_eq!(taps(2, 5, r, true).i0, 4);
    assert_eq!(taps(1, 5, r, true), taps(1, 5, 2.0, true));
    assert_eq!(ratio(5, 1, true), 0.0);
}

#[test]
fn resize_matches_pytorch_interpolate() {
    let json = reference();
    let cases = json["bilinear"].as_array().unwrap();
    assert!(cases.len() >= 18);
    let ctx = Ctx::new(2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let c = case["channels"].as_u64().unwrap() as usize;
        let (hi, wi) = pair(&case["input"]);
        let (ho, wo) = pair(&case["output"]);
        let align = case["align_corners"].as_bool().unwrap();
        let dir = data_dir().join("heads/bilinear");
        let (_, x) = hrnet_runtime::npy::read_f32(dir.join(format!("{name}_in.npy"))).unwrap();
        let (shape, y) = hrnet_runtime::npy::read_f32(dir.join(format!("{name}_out.npy"))).unwrap();
        assert_eq!(shape, [1, c, ho, wo], "{name}");
        let (ss, ds) = (ActShape::new(c, hi, wi), ActShape::new(c, ho, wo));
        let src = blocked(ss, &x);
        let mut dst = vec![0.0; ds.len()];
        resize_bilinear(&ctx, ss, &src, ds, &mut dst, align);
        let got = nchw(ds, &dst);
        let err = got
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err <= 1e-6, "{name}: max |ours - torch| = {err}");
    }
}

#[test]
fn concat_parts_are_block_aligned_tensors() {
    // W18's segmentation head: 18 + 36 + 72 + 144 logical channels.
    const CAT: Concat = Concat::new(&[18, 36, 72, 144]);
    assert_eq!(CAT.logical_channels(), 270);
    assert_eq!(CAT.channels(), 32 + 48 + 80 + 144);
    assert_eq!(
        (0..4).map(|i| CAT.part_offset(i)).collect::<Vec<_>>(),
        [0, 32, 80, 160]
    );
    assert_eq!(CAT.buffer_channel(17), 17);
    assert_eq!(CAT.buffer_channel(18), 32);
    assert_eq!(CAT.buffer_channel(54), 80);
    assert_eq!(CAT.buffer_channel(269), 303);
    let s = CAT.shape(5, 7);
    assert_eq!(CAT.part_range(0, 5, 7), 0..2 * s.block_stride());
    assert_eq!(CAT.part_range(3, 5, 7).end, s.len());
    // W48's parts are whole blocks: the layout is dense.
    let w48 = Concat::new(&[48, 96, 192, 384]);
    assert_eq!(w48.channels(), w48.logical_channels());
    assert!((0..720).all(|c| w48.buffer_channel(c) == c));
}

#[test]
fn resized_branches_into_concat_then_1x1_conv_match_reference() {
    // A small segmentation head: four branches of 5, 10, 20, 40 channels at 9×13, 5×7, 3×4,
    // 2×2, resized to 9×13 straight into their parts, then a 1×1 conv 75 → 6 (+bias).
    let mut rng = Rng(3);
    let chans = [5, 10, 20, 40];
    let sizes = [(9, 13), (5, 7), (3, 4), (2, 2)];
    let (h, w) = sizes[0];
    let cat = Concat::new(&chans);
    let xs: Vec<Vec<f32>> = (0..4)
        .map(|i| rng.vec(chans[i] * sizes[i].0 * sizes[i].1, 1.0))
        .collect();
    let cout = 6;
    let weight = rng.vec(cout * cat.logical_channels(), 1.0);
    let bias = rng.vec(cout, 1.0);
    // Reference: resize in f64, concatenate, 1×1 conv.
    let mut logical: Vec<f64> = Vec::new();
    for i in 0..4 {
        let x: Vec<f32> = xs[i].clone();
        logical.extend(ref_resize(&x, chans[i], sizes[i], (h, w), true));
    }
    let cl = cat.logical_channels();
    let mut want = vec![0.0f64; cout * h * w];
    for o in 0..cout {
        for p in 0..h * w {
            let mut acc = f64::from(bias[o]);
            for c in 0..cl {
                acc += f64::from(weight[o * cl + c]) * logical[c * h * w + p];
            }
            want[o * h * w + p] = acc;
        }
    }
    for isa in isas() {
        let ctx = Ctx::with_isa(2, isa);
        let mut buf = vec![f32::NAN; cat.shape(h, w).len()];
        for i in 0..4 {
            let ss = ActShape::new(chans[i], sizes[i].0, sizes[i].1);
            let src = blocked(ss, &xs[i]);
            let part = &mut buf[cat.part_range(i, h, w)];
            resize_bilinear(&ctx, ss, &src, ActShape::new(chans[i], h, w), part, true);
        }
        let spec = ConvSpec::new(cat.channels(), cout, h, w, 1, 1, 0);
        let mut wbuf = vec![0.0; cout * cat.channels()];
        cat.remap_input_channels(&weight, cout, 1, &mut wbuf);
        let mut packed = vec![0.0; spec.packed_len()];
        spec.pack(&wbuf, Some(&bias), &mut packed);
        let os = spec.out_shape();
        let mut out = vec![0.0; os.len()];
        let mut scratch = vec![0.0; spec.scratch_len(ctx.threads())];
        conv(
            &ctx,
            &spec,
            &buf,
            &packed,
            &mut out,
            Epilogue::plain(false),
            &mut scratch,
        );
        let err = max_err(&nchw(os, &out), &want);
        assert!(err < 1e-4, "{isa:?}: {err}");
    }
}
