//! The classification and OCR head kernels against naive NCHW references in f64: global average
//! pooling, the linear classifier, OCR's spatial gather and object attention; identical bits at
//! every thread count (and, without FMA, on every instruction set); halo and padding conventions.

mod common;

use common::{blocked_poisoned as blocked, isas, Rng, SameBits};
use hrnet_runtime::kernels::head::{
    exp_f32, global_avg_pool, global_avg_pool_blocked, linear, object_attention,
    object_attention_scratch_len, softmax_spatial_gather, spatial_gather_scratch_len,
};
use hrnet_runtime::kernels::{conv, from_nchw, to_nchw, ActShape, Concat, ConvSpec, Ctx, Epilogue};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The NCHW interior of a blocked output, after checking its halo and padding are zeros.
fn interior(shape: ActShape, b: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0; shape.c() * shape.h() * shape.w()];
    to_nchw(shape, b, &mut v);
    let mut clean = vec![0.0; shape.len()];
    from_nchw(shape, &v, &mut clean);
    assert!(
        clean.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "halo or padding channels not zero"
    );
    v
}

fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn exp_is_within_two_ulp() {
    let mut worst = 0.0f64;
    let mut x = -87.3f32;
    while x < 88.0 {
        let want = f64::from(x).exp();
        let got = f64::from(exp_f32(x));
        worst = worst.max((got - want).abs() / want);
        x += 0.000_731;
    }
    assert!(
        worst < 2.0 * f64::from(f32::EPSILON),
        "relative error {worst}"
    );
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(-100.0), 0.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
}

#[test]
fn global_avg_pool_matches_reference() {
    let mut rng = Rng(11);
    for (c, h, w) in [(20, 7, 7), (2048, 7, 7), (5, 3, 11)] {
        let s = ActShape::new(c, h, w);
        let x = rng.vec(c * h * w, 3.0);
        let want: Vec<f64> = (0..c)
            .map(|ch| {
                x[ch * h * w..][..h * w]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>()
                    / (h * w) as f64
            })
            .collect();
        let xb = blocked(s, &x);
        let mut first = SameBits::default();
        for isa in isas() {
            for threads in [1, 2, 3] {
                let ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![f32::NAN; c];
                global_avg_pool(&ctx, s, &xb, &mut out);
                assert!(max_rel_err(&out, &want) < 1e-6, "{c}x{h}x{w}");
                // The blocked form (what the compiled engines run before the classifier)
                // holds the same bits, with a zero halo and zero padding channels.
                let os = ActShape::new(c, 1, 1);
                let mut ob = vec![f32::NAN; os.len()];
                global_avg_pool_blocked(&ctx, s, &xb, &mut ob);
                let got = interior(os, &ob);
                assert!(
                    got.iter()
                        .zip(&out)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "blocked pool differs from the flat one"
                );
                first.check(out, &format!("{isa:?} {threads} threads"));
            }
        }
    }
}

#[test]
fn linear_matches_reference_everywhere_bit_for_bit() {
    let mut rng = Rng(12);
    for (n_in, n_out) in [(2048, 37), (70, 5), (16, 1000)] {
        let x = rng.vec(n_in, 2.0);
        let wt = rng.vec(n_in * n_out, 0.05);
        let b = rng.vec(n_out, 0.1);
        let want: Vec<f64> = (0..n_out)
            .map(|o| {
                f64::from(b[o])
                    + (0..n_in)
                        .map(|i| f64::from(wt[o * n_in + i]) * f64::from(x[i]))
                        .sum::<f64>()
            })
            .collect();
        let mut first = SameBits::default();
        for isa in isas() {
            for threads in [1, 2, 3] {
                let ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![f32::NAN; n_out];
                linear(&ctx, &x, &wt, &b, &mut out);
                assert!(max_rel_err(&out, &want) < 1e-5, "{n_in}->{n_out}");
                first.check(out, &format!("{isa:?} {threads} threads"));
            }
        }
    }
}

/// OCR's SpatialGather in f64: softmax of each class over all pixels, weighted feature sums.
fn ref_gather(logits: &[f64], feats: &[f64], k: usize, c: usize, hw: usize) -> Vec<f64> {
    let mut out = vec![0.0; c * k];
    for kk in 0..k {
        let l = &logits[kk * hw..][..hw];
        let m = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f64> = l.iter().map(|&v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for ch in 0..c {
            let f = &feats[ch * hw..][..hw];
            out[ch * k + kk] = e.iter().zip(f).map(|(e, &f)| e / s * f).sum();
        }
    }
    out
}

#[test]
fn spatial_gather_matches_reference_at_every_thread_count() {
    let mut rng = Rng(13);
    // (K, C, H, W): padding in both, widths past one 128-pixel chunk, C past one channel group.
    for (k, c, h, w) in [
        (5, 20, 9, 13),
        (19, 80, 6, 130),
        (1, 16, 1, 1),
        (33, 7, 4, 5),
    ] {
        let (ls, fs) = (ActShape::new(k, h, w), ActShape::new(c, h, w));
        let os = ActShape::new(c, k, 1);
        let logits = rng.vec(k * h * w, 6.0);
        let feats = rng.vec(c * h * w, 2.0);
        let want = ref_gather(&f64s(&logits), &f64s(&feats), k, c, h * w);
        let (lb, fb) = (blocked(ls, &logits), blocked(fs, &feats));
        for isa in isas() {
            let mut first = SameBits::default();
            for threads in [1, 2, 3] {
                let ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![f32::NAN; os.len()];
                let mut scratch = vec![f32::NAN; spatial_gather_scratch_len(k, h, w, threads)];
                softmax_spatial_gather(&ctx, ls, &lb, fs, &fb, &mut out, &mut scratch);
                let got = interior(os, &out);
                // The kernel writes [c][k]; the reference too.
                let err = max_rel_err(&got, &want);
                assert!(err < 1e-5, "K={k} C={c} {h}x{w} {isa:?}: {err}");
                first.check(out, &format!("{isa:?} {threads} threads differ"));
            }
        }
    }
}

/// OCR's object attention in f64.
fn ref_attention(q: &[f64], key: &[f64], val: &[f64], c: usize, k: usize, hw: usize) -> Vec<f64> {
    let scale = (c as f64).powf(-0.5);
    let mut out = vec![0.0; c * hw];
    for p in 0..hw {
        let s: Vec<f64> = (0..k)
            .map(|kk| {
                scale
                    * (0..c)
                        .map(|ch| q[ch * hw + p] * key[ch * k + kk])
                        .sum::<f64>()
            })
            .collect();
        let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for ch in 0..c {
            out[ch * hw + p] = (0..k).map(|kk| e[kk] / sum * val[ch * k + kk]).sum();
        }
    }
    out
}

#[test]
fn object_attention_matches_reference_at_every_thread_count() {
    let mut rng = Rng(14);
    // (KEY, K, H, W): widths with a tail after the 6-pixel tiles, K past one block.
    for (c, k, h, w) in [(16, 5, 3, 13), (20, 19, 4, 7), (40, 33, 2, 6), (3, 1, 1, 1)] {
        let qs = ActShape::new(c, h, w);
        let rs = ActShape::new(c, k, 1);
        let q = rng.vec(c * h * w, 3.0);
        let key = rng.vec(c * k, 3.0);
        let val = rng.vec(c * k, 1.0);
        let want = ref_attention(&f64s(&q), &f64s(&key), &f64s(&val), c, k, h * w);
        let (qb, kb, vb) = (blocked(qs, &q), blocked(rs, &key), blocked(rs, &val));
        for isa in isas() {
            let mut first = SameBits::default();
            for threads in [1, 2, 3] {
                let ctx = Ctx::with_isa(threads, isa);
                let mut out = vec![f32::NAN; qs.len()];
                let mut scratch = vec![f32::NAN; object_attention_scratch_len(c, k, threads)];
                object_attention(&ctx, qs, &qb, k, &kb, &vb, &mut out, &mut scratch);
                let err = max_rel_err(&interior(qs, &out), &want);
                assert!(err < 1e-5, "KEY={c} K={k} {h}x{w} {isa:?}: {err}");
                first.check(out, &format!("{isa:?} {threads} threads differ"));
            }
        }
    }
}

/// A 1×1 convolution with bias and optional ReLU in f64, NCHW (`hw` pixels).
fn ref_conv1x1(
    x: &[f64],
    cin: usize,
    cout: usize,
    hw: usize,
    w: &[f32],
    b: &[f32],
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; cout * hw];
    for o in 0..cout {
        for p in 0..hw {
            let mut acc = f64::from(b[o]);
            for i in 0..cin {
                acc += f64::from(w[o * cin + i]) * x[i * hw + p];
            }
            y[o * hw + p] = if relu { acc.max(0.0) } else { acc };
        }
    }
    y
}

/// A packed 1×1 conv layer of the kernels: spec, packed weights and bias.
struct Conv1x1 {
    spec: ConvSpec,
    packed: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Conv1x1 {
    fn new(rng: &mut Rng, cin: usize, cout: usize, h: usize, w: usize) -> Conv1x1 {
        let spec = ConvSpec::new(cin, cout, h, w, 1, 1, 0);
        let (wt, b) = (
            rng.vec(cout * cin, (3.0 / cin as f32).sqrt()),
            rng.vec(cout, 0.1),
        );
        let mut packed = vec![0.0; spec.packed_len()];
        spec.pack(&wt, Some(&b), &mut packed);
        Conv1x1 {
            spec,
            packed,
            w: wt,
            b,
        }
    }
    fn run(&self, ctx: &Ctx, x: &[f32], out: &mut [f32]) {
        conv(
            ctx,
            &self.spec,
            x,
            &self.packed,
            out,
            Epilogue::plain(true),
            &mut [],
        );
    }
    fn reference(&self, x: &[f64]) -> Vec<f64> {
        let s = &self.spec;
        ref_conv1x1(
            x,
            s.cin(),
            s.cout(),
            s.h_in() * s.w_in(),
            &self.w,
            &self.b,
            true,
        )
    }
}

#[test]
fn ocr_head_chains_through_convolutions_and_concat() {
    // HRNet-OCR's head after conv3x3_ocr, at toy widths (K 5, MID 20, KEY 12, 6×9 pixels): the
    // gathered regions (MID × K × 1) feed f_object / f_down as ordinary 1×1 convs, the attention
    // output feeds f_up, which writes straight into part 0 of the [context, features]
    // concatenation; conv_bn_dropout reads it with remapped weights. BN is folded (bias + ReLU).
    let (k, mid, key, h, w) = (5, 20, 12, 6, 9);
    let hw = h * w;
    let mut rng = Rng(15);
    let aux = rng.vec(k * hw, 4.0);
    let feats = rng.vec(mid * hw, 1.0);
    let f_pixel = Conv1x1::new(&mut rng, mid, key, h, w);
    let f_object = Conv1x1::new(&mut rng, mid, key, k, 1);
    let f_down = Conv1x1::new(&mut rng, mid, key, k, 1);
    let f_up = Conv1x1::new(&mut rng, key, mid, h, w);
    let cat = Concat::new(&[mid, mid]);
    let fuse = Conv1x1::new(&mut rng, cat.logical_channels(), mid, h, w);

    // f64 reference, as the official forward pass.
    let regions = ref_gather(&f64s(&aux), &f64s(&feats), k, mid, hw); // [mid][k]
    let q = f_pixel.reference(&f64s(&feats));
    let (kr, vr) = (f_object.reference(&regions), f_down.reference(&regions));
    let att = ref_attention(&q, &kr, &vr, key, k, hw);
    let mut both = f_up.reference(&att);
    both.extend(f64s(&feats));
    let want = fuse.reference(&both);

    for isa in isas() {
        let ctx = Ctx::with_isa(2, isa);
        let (ls, fs) = (ActShape::new(k, h, w), ActShape::new(mid, h, w));
        let (rs, ks, qs) = (
            ActShape::new(mid, k, 1),
            ActShape::new(key, k, 1),
            ActShape::new(key, h, w),
        );
        let mut buf = vec![f32::NAN; cat.shape(h, w).len()];
        // conv3x3_ocr would write the features straight into part 1.
        buf[cat.part_range(1, h, w)].copy_from_slice(&blocked(fs, &feats));
        let fb = buf[cat.part_range(1, h, w)].to_vec();
        let mut reg = vec![0.0; rs.len()];
        let mut scratch = vec![0.0; spatial_gather_scratch_len(k, h, w, 2)];
        softmax_spatial_gather(
            &ctx,
            ls,
            &blocked(ls, &aux),
            fs,
            &fb,
            &mut reg,
            &mut scratch,
        );
        let (mut kb, mut vb, mut qb) = (
            vec![0.0; ks.len()],
            vec![0.0; ks.len()],
            vec![0.0; qs.len()],
        );
        f_object.run(&ctx, &reg, &mut kb);
        f_down.run(&ctx, &reg, &mut vb);
        f_pixel.run(&ctx, &fb, &mut qb);
        let mut ab = vec![0.0; qs.len()];
        let mut scratch = vec![0.0; object_attention_scratch_len(key, k, 2)];
        object_attention(&ctx, qs, &qb, k, &kb, &vb, &mut ab, &mut scratch);
        f_up.run(&ctx, &ab, &mut buf[cat.part_range(0, h, w)]);
        let spec = ConvSpec::new(cat.channels(), mid, h, w, 1, 1, 0);
        let mut wbuf = vec![0.0; mid * cat.channels()];
        cat.remap_input_channels(&fuse.w, mid, 1, &mut wbuf);
        let mut packed = vec![0.0; spec.packed_len()];
        spec.pack(&wbuf, Some(&fuse.b), &mut packed);
        let mut out = vec![0.0; fs.len()];
        conv(
            &ctx,
            &spec,
            &buf,
            &packed,
            &mut out,
            Epilogue::plain(true),
            &mut [],
        );
        let err = max_rel_err(&interior(fs, &out), &want);
        assert!(err < 1e-5, "{isa:?}: {err}");
    }
}
