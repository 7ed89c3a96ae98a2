//! Winograd F(2×2, 3×3) as cranelift IR, for 3×3 stride-1 padding-1 convolutions whose
//! output height and width are even (so every 2×2 tile is whole and its 4×4 input patch lies
//! inside the haloed input).
//!
//! One task is a group of [`Split::rows`] rows of tiles (two output rows each) and a range of
//! [`Split::obs`] output blocks, in per-thread scratch (groups are large enough that the
//! transformed weights, streamed once per task, serve at least ~24 tiles; small maps are split
//! over output blocks instead, redoing the cheap input transform):
//! 1. input transform `V = Bᵀ d B` of every patch of the group, into `[ξ][icb][tile][16]`;
//! 2. per output block: for each of the 16 positions ξ, the GEMM
//!    `M_ξ[tile][oc] = Σ_ic V_ξ[tile][ic] · U_ξ[ic][oc]` with the direct kernel's register
//!    blocking (tiles in place of pixels), into `[ξ][tile][16]`; then the output transform
//!    `Y = Aᵀ M A` and the fused epilogue.
//!
//! Packed weights (after the bias): `U = G g Gᵀ` computed in f64 (see [`super::pack`]), laid
//! out `[ob][ξ][icb][16 ic][16 oc]`.

use super::gen::{block_base, ConvKernel, Emit, F4, FS, PIXELS, PX};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use hrnet_runtime::kernels::{ActShape, ConvSpec, BLOCK};

/// Transform positions (4 × 4).
pub(crate) const XI: usize = 16;

/// Whether the JIT runs `s` with Winograd.
pub(crate) fn applies(s: &ConvSpec) -> bool {
    s.is_winograd_shape() && s.h_out().is_multiple_of(2) && s.w_out().is_multiple_of(2)
}

/// Tiles a task should cover at least, so that its weights serve enough of them.
const MIN_TILES: usize = 24;
/// Tasks a conv should have at least (both cores busy, some dynamic balance).
const MIN_TASKS: usize = 8;

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

/// The task split of `c`.
pub(crate) fn split(c: &ConvKernel) -> Split {
    let (ty, tx) = (c.h_out() / 2, c.w_out() / 2);
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

/// Scratch floats one thread needs for `c`: `V` then `M`.
pub(crate) fn scratch_per_thread(c: &ConvKernel) -> usize {
    XI * split(c).slots * BLOCK * (c.cin.div_ceil(BLOCK) + 1)
}

/// `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]` (one dimension of `Bᵀ d B`).
fn bt(e: &mut Emit<'_, '_>, d: [Value; 4]) -> [Value; 4] {
    let s = &mut e.b;
    [
        s.ins().fsub(d[0], d[2]),
        s.ins().fadd(d[1], d[2]),
        s.ins().fsub(d[2], d[1]),
        s.ins().fsub(d[1], d[3]),
    ]
}

/// `[m0 + m1 + m2, m1 − m2 − m3]` (one dimension of `Aᵀ M A`).
fn at(e: &mut Emit<'_, '_>, m: [Value; 4]) -> [Value; 2] {
    let s = &mut e.b;
    let a = s.ins().fadd(m[0], m[1]);
    let a = s.ins().fadd(a, m[2]);
    let b = s.ins().fsub(m[1], m[2]);
    let b = s.ins().fsub(b, m[3]);
    [a, b]
}

/// The kernel: parameters `(input, weights, output, addend, tile group, scratch, ob chunk)`.
pub(crate) fn conv(e: &mut Emit<'_, '_>, c: &ConvKernel, p: &[Value]) {
    let (inp, w, out, res, grp, scr, chunk) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let sp = split(c);
    let ins = ActShape::new(c.cin, c.h_in, c.w_in);
    let hr = c.out_shape();
    let ocb = c.cout.div_ceil(BLOCK);
    let n_icb = c.cin.div_ceil(BLOCK);
    let last_ic = c.cin - (n_icb - 1) * BLOCK;
    let full_icb = if last_ic == BLOCK { n_icb } else { n_icb - 1 };
    let (n_ty, tx_n) = (c.h_out() / 2, c.w_out() / 2);
    let (in_rs, in_bs) = (ins.row_stride() as i64 * FS, ins.block_stride() as i64 * FS);
    let hr_rs = hr.row_stride() as i64 * FS;
    // V[ξ][icb][slot][16] and M[ξ][slot][16], in bytes.
    let v_ib = sp.slots as i64 * PX;
    let v_xi = n_icb as i64 * v_ib;
    let m_base = e.offset(scr, XI as i64 * v_xi);
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

    // 1. Input transform. Output rows 2ty, 2ty+1 read haloed input rows 2ty..2ty+3.
    e.for_n(n_icb, |e, ib| {
        let blk = e.index(inp, ib, in_bs);
        let vb = e.index(scr, ib, v_ib);
        e.for_range(ty0, ty1, |e, ty| {
            let row = e.index(blk, ty, 2 * in_rs);
            let rel = e.b.ins().isub(ty, ty0);
            let vrow = e.index(vb, rel, tx_n as i64 * PX);
            e.for_n(tx_n, |e, tx| {
                let pp = e.index(row, tx, 2 * PX);
                let vp = e.index(vrow, tx, PX);
                for v in 0..4i64 {
                    let mut d = Vec::with_capacity(16);
                    for r in 0..4i64 {
                        for col in 0..4i64 {
                            d.push(e.load4(pp, r * in_rs + col * PX + v * 16));
                        }
                    }
                    // Along each row, then along each column of the result.
                    let t: [[Value; 4]; 4] = std::array::from_fn(|r| {
                        bt(e, [d[4 * r], d[4 * r + 1], d[4 * r + 2], d[4 * r + 3]])
                    });
                    for col in 0..4usize {
                        let u = bt(e, t.map(|row| row[col]));
                        for (r, &x) in u.iter().enumerate() {
                            let xi = (r * 4 + col) as i64;
                            e.store4(x, vp, xi * v_xi + v * 16);
                        }
                    }
                }
            });
        });
    });

    // 2. Per output block: 16 GEMMs, output transform, epilogue.
    let w_ob = (XI * n_icb * BLOCK * BLOCK) as i64 * FS;
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
        e.for_n(XI, |e, xi| {
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
            // Row 2ty (upsampled) at interior column 0.
            let yh = e.b.ins().imul_imm_s(ty, 2 * f * hr_rs);
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
                let ox = e.b.ins().imul_imm_s(tx, 2 * f * PX);
                let o = e.b.ins().iadd(o_row, ox);
                let r = r_row.map(|r| e.b.ins().iadd(r, ox));
                for (v, &bias_v) in bias.iter().enumerate() {
                    let m: Vec<Value> = (0..XI)
                        .map(|xi| e.load4(mp, xi as i64 * m_xi + v as i64 * 16))
                        .collect();
                    // Aᵀ along each column, then along each row of the result.
                    let cols: [[Value; 2]; 4] = std::array::from_fn(|col| {
                        at(e, [m[col], m[4 + col], m[8 + col], m[12 + col]])
                    });
                    for dy in 0..2usize {
                        let y = at(e, cols.map(|cv| cv[dy]));
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
