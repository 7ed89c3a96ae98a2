//! Winograd F(m×m, 3×3), m = 4 or 2, as cranelift IR, for 3×3 stride-1 padding-1
//! convolutions whose output height and width are multiples of `m` (so every tile is whole and
//! its (m+2)×(m+2) input patch lies inside the haloed input). F(4×4) needs 4× fewer
//! multiplications than direct convolution, F(2×2) 2.25×. Which convs use which (if any) is
//! the plan's decision (`Target::conv_algo`).
//!
//! One task is a group of [`Split::rows`] rows of tiles and a range of [`Split::obs`] output
//! blocks, in per-thread scratch (groups are large enough that the transformed weights,
//! streamed once per task, serve at least ~24 tiles; small maps are split over output blocks
//! instead, redoing the cheap input transform):
//! 1. input transform `V = Bᵀ d B` of every patch of the group, into `[ξ][icb][tile][16]`;
//! 2. per output block: for each of the α² positions ξ (α = m + 2), the GEMM
//!    `M_ξ[tile][oc] = Σ_ic V_ξ[tile][ic] · U_ξ[ic][oc]` with the direct kernel's microkernel
//!    (tiles in place of pixels), into `[ξ][tile][16]`; then the output transform
//!    `Y = Aᵀ M A` and the fused epilogue.
//!
//! Packed weights (after the bias): `U = G g Gᵀ` computed in f64 (see [`super::pack`]), laid
//! out `[ob][ξ][icb][16 ic][16 oc]`. Matrices: F(2×2) with points 0, ±1, ∞ (Lavin & Gray);
//! F(4×4) with 0, 1, −1, 1/2, −2, ∞, about half the rounding error of Lavin & Gray's 0, ±1,
//! ±2, ∞ (Barabasz et al. 2020; ±1/2 alone would not help, it mirrors ±2).

use super::gen::{block_base, ConvKernel, Emit, F4, FS, PIXELS, PX};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use hrnet_runtime::kernels::{ActShape, BLOCK};

/// Tiles a task should cover at least, so that its weights serve enough of them.
const MIN_TILES: usize = 24;
/// Tasks a conv should have at least (both cores busy). Splitting further over output blocks
/// redoes the input transform per task, which costs as much as the GEMMs on small maps with
/// many channels (measured on W32: 8 → 2 took 1-thread latency from 217 to 188 ms).
const MIN_TASKS: usize = 2;

/// How a Winograd conv is cut into tasks: `groups × ob_chunks`, task `t` covering tile rows
/// `rows · (t / ob_chunks)..` and output blocks `obs · (t % ob_chunks)..` (both clipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Tile rows per task.
    pub rows: usize,
    /// Tasks along tile rows.
    pub groups: usize,
    /// Output blocks per task.
    pub obs: usize,
    /// Tasks along output blocks.
    pub ob_chunks: usize,
    /// Tile slots per task in scratch (rounded up to whole strips).
    pub slots: usize,
}

/// The task split of `c` with F(`m`×`m`).
pub(crate) fn split(c: &ConvKernel, m: usize) -> Split {
    let (ty, tx) = (c.h_out() / m, c.w_out() / m);
    let ocb = c.cout.div_ceil(BLOCK);
    let rows = MIN_TILES.div_ceil(tx).clamp(1, ty);
    let groups = ty.div_ceil(rows);
    let ob_chunks = MIN_TASKS.div_ceil(groups).clamp(1, ocb);
    let obs = ocb.div_ceil(ob_chunks);
    Split {
        rows,
        groups,
        obs,
        ob_chunks: ocb.div_ceil(obs),
        slots: (rows * tx).div_ceil(PIXELS) * PIXELS,
    }
}

/// Scratch floats one thread needs for `c` with F(`m`×`m`): `V` then `M`.
pub(crate) fn scratch_per_thread(c: &ConvKernel, m: usize) -> usize {
    (m + 2) * (m + 2) * split(c, m).slots * BLOCK * (c.cin.div_ceil(BLOCK) + 1)
}

/// One dimension of `Bᵀ d B` for F(2×2): `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]`.
fn bt2(e: &mut Emit<'_, '_>, d: &[Value]) -> Vec<Value> {
    let s = &mut e.b;
    vec![
        s.ins().fsub(d[0], d[2]),
        s.ins().fadd(d[1], d[2]),
        s.ins().fsub(d[2], d[1]),
        s.ins().fsub(d[1], d[3]),
    ]
}

/// One dimension of `Aᵀ M A` for F(2×2): `[m0 + m1 + m2, m1 − m2 − m3]`.
fn at2(e: &mut Emit<'_, '_>, m: &[Value]) -> Vec<Value> {
    let s = &mut e.b;
    let a = s.ins().fadd(m[0], m[1]);
    let a = s.ins().fadd(a, m[2]);
    let b = s.ins().fsub(m[1], m[2]);
    let b = s.ins().fsub(b, m[3]);
    vec![a, b]
}

/// `k · x + y` with a splat constant `k`.
fn kfma(e: &mut Emit<'_, '_>, k: f32, x: Value, y: Value) -> Value {
    let c = e.b.ins().f32const(k);
    let c = e.b.ins().splat(F4, c);
    e.fma(c, x, y)
}

/// One dimension of `Bᵀ d B` for F(4×4) (rows of `Bᵀ`: `[1, −3/2, −2, 3/2, 1, 0]`,
/// `[0, −2, 1, 5, 2, 0]`, `[0, 2, −5, 1, 2, 0]`, `[0, −2, −1, 2, 1, 0]`, `[0, −1, 2, 1, −2, 0]`,
/// `[0, 1, −3/2, −2, 3/2, 1]`).
fn bt4(e: &mut Emit<'_, '_>, d: &[Value]) -> Vec<Value> {
    let add = |e: &mut Emit<'_, '_>, a, b| e.b.ins().fadd(a, b);
    let sub = |e: &mut Emit<'_, '_>, a, b| e.b.ins().fsub(a, b);
    let a = sub(e, d[4], d[2]);
    let b = sub(e, d[3], d[1]);
    let s04 = add(e, d[0], d[4]);
    let t0 = kfma(e, -2.0, d[2], s04);
    let r0 = kfma(e, 1.5, b, t0);
    let t1 = kfma(e, 5.0, d[3], d[2]);
    let d41 = sub(e, d[4], d[1]);
    let r1 = kfma(e, 2.0, d41, t1);
    let t2 = kfma(e, -5.0, d[2], d[3]);
    let s14 = add(e, d[1], d[4]);
    let r2 = kfma(e, 2.0, s14, t2);
    let r3 = kfma(e, 2.0, b, a);
    let r4 = kfma(e, -2.0, a, b);
    let s15 = add(e, d[1], d[5]);
    let t5 = kfma(e, -2.0, d[3], s15);
    let r5 = kfma(e, 1.5, a, t5);
    vec![r0, r1, r2, r3, r4, r5]
}

/// One dimension of `Aᵀ M A` for F(4×4) (rows of `Aᵀ`: `[1, 1, 1, 8, 1, 0]`,
/// `[0, 1, −1, 4, −2, 0]`, `[0, 1, 1, 2, 4, 0]`, `[0, 1, −1, 1, −8, 1]`).
fn at4(e: &mut Emit<'_, '_>, m: &[Value]) -> Vec<Value> {
    let s12 = e.b.ins().fadd(m[1], m[2]);
    let d12 = e.b.ins().fsub(m[1], m[2]);
    let t0 = e.b.ins().fadd(m[0], s12);
    let t0 = e.b.ins().fadd(t0, m[4]);
    let r0 = kfma(e, 8.0, m[3], t0);
    let t1 = kfma(e, -2.0, m[4], d12);
    let r1 = kfma(e, 4.0, m[3], t1);
    let t2 = kfma(e, 4.0, m[4], s12);
    let r2 = kfma(e, 2.0, m[3], t2);
    let t3 = e.b.ins().fadd(d12, m[3]);
    let t3 = e.b.ins().fadd(t3, m[5]);
    let r3 = kfma(e, -8.0, m[4], t3);
    vec![r0, r1, r2, r3]
}

/// The kernel for F(`m`×`m`): parameters `(input, weights, output, addend, tile group,
/// scratch, ob chunk)`.
pub(crate) fn conv(e: &mut Emit<'_, '_>, c: &ConvKernel, m: usize, p: &[Value]) {
    let (inp, w, out, res, grp, scr, chunk) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let sp = split(c, m);
    let a = m + 2;
    let xi_n = a * a;
    let bt: fn(&mut Emit<'_, '_>, &[Value]) -> Vec<Value> = if m == 2 { bt2 } else { bt4 };
    let at: fn(&mut Emit<'_, '_>, &[Value]) -> Vec<Value> = if m == 2 { at2 } else { at4 };
    let mi = m as i64;
    let ins = ActShape::new(c.cin, c.h_in, c.w_in);
    let hr = c.out_shape();
    let ocb = c.cout.div_ceil(BLOCK);
    let n_icb = c.cin.div_ceil(BLOCK);
    let last_ic = c.cin - (n_icb - 1) * BLOCK;
    let full_icb = if last_ic == BLOCK { n_icb } else { n_icb - 1 };
    let (n_ty, tx_n) = (c.h_out() / m, c.w_out() / m);
    let (in_rs, in_bs) = (ins.row_stride() as i64 * FS, ins.block_stride() as i64 * FS);
    let hr_rs = hr.row_stride() as i64 * FS;
    // V[ξ][icb][slot][16] and M[ξ][slot][16], in bytes.
    let v_ib = sp.slots as i64 * PX;
    let v_xi = n_icb as i64 * v_ib;
    let m_base = e.offset(scr, xi_n as i64 * v_xi);
    let m_xi = sp.slots as i64 * PX;

    // This task's tile rows `ty0..ty1` and output blocks `ob0..ob1`.
    let ty0 = e.b.ins().imul_imm_s(grp, sp.rows as i64);
    let ty1 = e.b.ins().iadd_imm_s(ty0, sp.rows as i64);
    let n_ty_v = e.iconst(n_ty as i64);
    let ty1 = e.b.ins().smin(ty1, n_ty_v);
    let ob0 = e.b.ins().imul_imm_s(chunk, sp.obs as i64);
    let ob1 = e.b.ins().iadd_imm_s(ob0, sp.obs as i64);
    let ocb_v = e.iconst(ocb as i64);
    let ob1 = e.b.ins().smin(ob1, ocb_v);
    // Tiles of the task, rounded up to whole strips (a padding slot is computed, never stored).
    let nrows = e.b.ins().isub(ty1, ty0);
    let ntiles = e.b.ins().imul_imm_s(nrows, tx_n as i64);
    let nstrips = e.b.ins().iadd_imm_s(ntiles, PIXELS as i64 - 1);
    let nstrips = e.b.ins().udiv_imm_u(nstrips, PIXELS as i64);

    // 1. Input transform. Output rows m·ty.. read haloed input rows m·ty..m·ty + α.
    e.for_n(n_icb, |e, ib| {
        let blk = e.index(inp, ib, in_bs);
        let vb = e.index(scr, ib, v_ib);
        e.for_range(ty0, ty1, |e, ty| {
            let row = e.index(blk, ty, mi * in_rs);
            let rel = e.b.ins().isub(ty, ty0);
            let vrow = e.index(vb, rel, tx_n as i64 * PX);
            e.for_n(tx_n, |e, tx| {
                let pp = e.index(row, tx, mi * PX);
                let vp = e.index(vrow, tx, PX);
                for v in 0..4i64 {
                    // Along each row as it is loaded, then along each column.
                    let t: Vec<Vec<Value>> = (0..a)
                        .map(|r| {
                            let d: Vec<Value> = (0..a)
                                .map(|col| {
                                    let off = r as i64 * in_rs + col as i64 * PX + v * 16;
                                    e.load4(pp, off)
                                })
                                .collect();
                            bt(e, &d)
                        })
                        .collect();
                    for col in 0..a {
                        let column: Vec<Value> = t.iter().map(|row| row[col]).collect();
                        let u = bt(e, &column);
                        for (r, &x) in u.iter().enumerate() {
                            let xi = (r * a + col) as i64;
                            e.store4(x, vp, xi * v_xi + v * 16);
                        }
                    }
                }
            });
        });
    });

    // 2. Per output block: 16 GEMMs, output transform, epilogue.
    let w_ob = (xi_n * n_icb * BLOCK * BLOCK) as i64 * FS;
    let w_xi = (n_icb * BLOCK * BLOCK) as i64 * FS;
    let wbody = e.offset(w, (ocb * BLOCK) as i64 * FS);
    let f = 1i64 << c.up;
    let g = Gemm {
        v_ib,
        full_icb,
        last_ic,
    };
    e.for_range(ob0, ob1, |e, ob| {
        let wob = e.index(wbody, ob, w_ob);
        e.for_n(xi_n, |e, xi| {
            let wx = e.index(wob, xi, w_xi);
            let vx = e.index(scr, xi, v_xi);
            let mx = e.index(m_base, xi, m_xi);
            let zero = e.iconst(0);
            e.for_range(zero, nstrips, |e, s| {
                let t0 = e.b.ins().imul_imm_s(s, PIXELS as i64 * PX);
                let a = e.b.ins().iadd(vx, t0);
                let m = e.b.ins().iadd(mx, t0);
                gemm(e, &g, PIXELS, a, wx, m);
            });
        });
        // Output transform and epilogue.
        let bias_p = e.index(w, ob, PX);
        let bias: Vec<Value> = (0..4).map(|v| e.load4(bias_p, v * 16)).collect();
        let out_blk = block_base(e, out, ob, hr);
        let res_blk = if c.add {
            Some(block_base(e, res, ob, hr))
        } else {
            None
        };
        e.for_range(ty0, ty1, |e, ty| {
            // Row m·ty (upsampled) at interior column 0.
            let yh = e.b.ins().imul_imm_s(ty, mi * f * hr_rs);
            let o_row = e.b.ins().iadd(out_blk, yh);
            let o_row = e.offset(o_row, hr_rs + PX);
            let r_row = res_blk.map(|r| {
                let r = e.b.ins().iadd(r, yh);
                e.offset(r, hr_rs + PX)
            });
            let rel = e.b.ins().isub(ty, ty0);
            let mrow = e.index(m_base, rel, tx_n as i64 * PX);
            e.for_n(tx_n, |e, tx| {
                let mp = e.index(mrow, tx, PX);
                let ox = e.b.ins().imul_imm_s(tx, mi * f * PX);
                let o = e.b.ins().iadd(o_row, ox);
                let r = r_row.map(|r| e.b.ins().iadd(r, ox));
                for (v, &bias_v) in bias.iter().enumerate() {
                    // Aᵀ along each column as it is loaded, then along each row.
                    let cols: Vec<Vec<Value>> = (0..a)
                        .map(|col| {
                            let mv: Vec<Value> = (0..a)
                                .map(|row| {
                                    let xi = (row * a + col) as i64;
                                    e.load4(mp, xi * m_xi + v as i64 * 16)
                                })
                                .collect();
                            at(e, &mv)
                        })
                        .collect();
                    for dy in 0..m {
                        let rowv: Vec<Value> = cols.iter().map(|cv| cv[dy]).collect();
                        let y = at(e, &rowv);
                        for (dx, &yv) in y.iter().enumerate() {
                            let s = e.b.ins().fadd(yv, bias_v);
                            let off = dy as i64 * f * hr_rs + dx as i64 * f * PX + v as i64 * 16;
                            e.put(c, hr_rs, s, o, r, off);
                        }
                    }
                }
            });
        });
    });
}

/// Constants of one ξ's GEMM.
struct Gemm {
    /// Bytes between input blocks of `V`.
    v_ib: i64,
    full_icb: usize,
    last_ic: usize,
}

/// `np` tiles from `a` (`V_ξ`, tiles 64 bytes apart) times `w` (`U_ξ` of one output block)
/// into `m` (`M_ξ`).
fn gemm(e: &mut Emit<'_, '_>, g: &Gemm, np: usize, a: Value, w: Value, m: Value) {
    let accs: Vec<Variable> = (0..np * 4)
        .map(|_| {
            let v = e.b.declare_var(F4);
            let z = e.zero();
            e.b.def_var(v, z);
            v
        })
        .collect();
    let w_ib = (BLOCK * BLOCK) as i64 * FS;
    let body = |e: &mut Emit<'_, '_>, ap: Value, wp: Value, nic: usize| {
        e.micro(&accs, np, ap, 0, PX, wp, 0, nic);
    };
    e.for_n(g.full_icb, |e, ib| {
        let ap = e.index(a, ib, g.v_ib);
        let wp = e.index(w, ib, w_ib);
        body(e, ap, wp, BLOCK);
    });
    if g.last_ic < BLOCK {
        let ap = e.offset(a, g.full_icb as i64 * g.v_ib);
        let wp = e.offset(w, g.full_icb as i64 * w_ib);
        body(e, ap, wp, g.last_ic);
    }
    for pi in 0..np {
        for v in 0..4 {
            let x = e.b.use_var(accs[pi * 4 + v]);
            e.store4(x, m, pi as i64 * PX + v as i64 * 16);
        }
    }
}
