//! Kernels as cranelift IR: one function per distinct [`Kernel`] (shape and epilogue known at
//! compile time, so every loop bound, stride and offset is a constant).
//!
//! Every generated function has the same signature, seven pointer-sized integers
//! `(a, b, c, d, e, f, g)`, and handles one *task* (a channel block, or an output block × a
//! range of rows) so that `run` can spread a step over the thread pool:
//!
//! | kernel        | a       | b        | c       | d        | e      | f    | g    |
//! |---------------|---------|----------|---------|----------|--------|------|------|
//! | `Conv`        | input   | weights  | output  | addend   | block  | row0 | row1 |
//! | `Wino`        | input   | weights  | output  | addend   | tiles  | tmp  | obs  |
//! | `Add`         | a       | b        | output  |          | block  |      |      |
//! | `AddUp`       | acc     | low      |         |          | block  |      |      |
//! | `Copy`        | source  |          | output  |          | block  |      |      |
//! | `ZeroHalo`    |         |          | output  |          | block  |      |      |
//! | `Input`       | NCHW    |          | output  |          | block  |      |      |
//! | `Output`      | source  |          | NCHW    |          | block  |      |      |
//!
//! Tensors are in hrnet-runtime's blocked layout `[C/16][H+2][W+2][16]`; a 16-channel block
//! is four f32x4 vectors. The direct convolution is register-blocked for 16 xmm registers
//! ([`Emit::micro`]): [`PIXELS`] output pixels × 4 vectors of accumulators, one broadcast
//! input value at a time, weights read as FMA memory operands; the 16 input channels of a
//! block are unrolled, the kernel's columns too, its rows and the input blocks are loops. The
//! epilogue (bias, addend, nearest upsampling ×2^u, ReLU) is fused into the stores. The same
//! microkernel does the Winograd GEMMs ([`super::wino`]).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use hrnet_runtime::kernels::{ActShape, BLOCK, HALO};

/// Output pixels per microkernel strip (× 4 vectors of accumulators).
pub(crate) const PIXELS: usize = 3;

/// Number of parameters of every generated function.
pub(crate) const N_PARAMS: usize = 7;

/// The signature of every generated function on the host.
pub(crate) type KernelFn = unsafe extern "C" fn(usize, usize, usize, usize, usize, usize, usize);

/// One distinct generated function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// Direct convolution of output block `e`, conv-resolution rows `f..g`, with the fused
    /// epilogue `out = relu?(addend? + up(conv + bias))`.
    Conv(ConvKernel),
    /// Winograd F(m×m, 3×3) (`m` second) convolution of tile-row group `e` and
    /// output-block chunk `g` with per-thread scratch `f`, same epilogue (see
    /// [`super::wino`]).
    Wino(ConvKernel, usize),
    /// `out = relu?(a + b)` over one whole block (halo included: zero + zero stays zero).
    Add {
        /// Shape of all three tensors.
        shape: ActShape,
        /// ReLU last.
        relu: bool,
    },
    /// `acc = relu?(acc + up(low))` on one block's interior.
    AddUp {
        /// Shape of the accumulator.
        shape: ActShape,
        /// log2 of the upsampling factor.
        log2: u32,
        /// ReLU last.
        relu: bool,
    },
    /// `out = src` over one whole block.
    Copy {
        /// Shape of both tensors.
        shape: ActShape,
    },
    /// Zeros the halo of one block.
    ZeroHalo {
        /// Shape of the tensor.
        shape: ActShape,
    },
    /// NCHW → one block (halo and padding channels zero).
    Input {
        /// Shape of the blocked tensor.
        shape: ActShape,
    },
    /// One block → NCHW.
    Output {
        /// Shape of the blocked tensor.
        shape: ActShape,
    },
}

/// Everything that decides a convolution kernel's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConvKernel {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height.
    pub h_in: usize,
    /// Input width.
    pub w_in: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding (≤ 1).
    pub pad: usize,
    /// Whether an addend tensor (possibly the output itself) is read.
    pub add: bool,
    /// log2 of the nearest upsampling of the result.
    pub up: u32,
    /// ReLU last.
    pub relu: bool,
}

impl ConvKernel {
    pub(crate) fn h_out(&self) -> usize {
        (self.h_in + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(crate) fn w_out(&self) -> usize {
        (self.w_in + 2 * self.pad - self.k) / self.stride + 1
    }
    fn in_shape(&self) -> ActShape {
        ActShape::new(self.cin, self.h_in, self.w_in)
    }
    /// Shape of the (upsampled) output tensor.
    pub(crate) fn out_shape(&self) -> ActShape {
        ActShape::new(self.cout, self.h_out() << self.up, self.w_out() << self.up)
    }
}

/// The signature of every generated function.
pub(crate) fn signature(mut sig: Signature, ptr: types::Type) -> Signature {
    for _ in 0..N_PARAMS {
        sig.params.push(AbiParam::new(ptr));
    }
    sig
}

/// Code generation options fixed per ISA.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Pointer type.
    pub ptr: types::Type,
    /// Fused multiply-add is a native instruction (otherwise `fmul` + `fadd`).
    pub fma: bool,
}

pub(super) const F4: types::Type = types::F32X4;
/// Bytes per f32.
pub(super) const FS: i64 = 4;
/// Bytes per 16-channel pixel.
pub(super) const PX: i64 = BLOCK as i64 * FS;

pub(super) fn flags() -> MemFlagsData {
    // Every address is computed from shapes `run` checked: no access traps. Buffers are not
    // necessarily 16-byte aligned (unaligned vector loads and stores).
    MemFlagsData::new().with_notrap()
}

/// Emission helpers over a [`FunctionBuilder`].
pub(crate) struct Emit<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub t: Target,
    zero: Option<Value>,
}

impl<'a, 'b> Emit<'a, 'b> {
    pub(crate) fn new(b: &'a mut FunctionBuilder<'b>, t: Target) -> Self {
        Emit { b, t, zero: None }
    }

    pub(super) fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(self.t.ptr, v)
    }

    /// `base + off` (bytes).
    pub(super) fn offset(&mut self, base: Value, off: i64) -> Value {
        if off == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, off)
        }
    }

    /// `base + idx · scale` (bytes).
    pub(super) fn index(&mut self, base: Value, idx: Value, scale: i64) -> Value {
        let s = self.b.ins().imul_imm_s(idx, scale);
        self.b.ins().iadd(base, s)
    }

    pub(super) fn load4(&mut self, base: Value, off: i64) -> Value {
        self.b.ins().load(F4, flags(), base, off as i32)
    }

    pub(super) fn store4(&mut self, v: Value, base: Value, off: i64) {
        self.b.ins().store(flags(), v, base, off as i32);
    }

    /// The f32x4 zero (defined once, in the entry block).
    pub(super) fn zero(&mut self) -> Value {
        self.zero.expect("zero vector defined in the entry block")
    }

    fn define_zero(&mut self) {
        let z = self.b.ins().f32const(0.0);
        self.zero = Some(self.b.ins().splat(F4, z));
    }

    /// `max(v, 0)` as a compare and a mask (two instructions on x86).
    pub(super) fn relu(&mut self, v: Value) -> Value {
        let z = self.zero();
        let m = self.b.ins().fcmp(FloatCC::GreaterThan, v, z);
        let m = self.b.ins().bitcast(
            F4,
            MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
            m,
        );
        self.b.ins().band(v, m)
    }

    /// `a · b + c` (one instruction with FMA, else `fmul` + `fadd`).
    pub(super) fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.t.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// Stores the conv result `s` (bias added) of one conv-resolution pixel through the
    /// epilogue of `c`: at `o + off` (and its `2^up × 2^up` replicas, rows `hr_rs` bytes
    /// apart), adding the addend at `r + off` first and applying ReLU last.
    pub(super) fn put(
        &mut self,
        c: &ConvKernel,
        hr_rs: i64,
        s: Value,
        o: Value,
        r: Option<Value>,
        off: i64,
    ) {
        let f = 1i64 << c.up;
        for dy in 0..f {
            for dx in 0..f {
                let off = off + dy * hr_rs + dx * PX;
                let mut v = s;
                if let Some(rp) = r {
                    let x = self.load4(rp, off);
                    v = self.b.ins().fadd(x, v);
                }
                if c.relu {
                    v = self.relu(v);
                }
                self.store4(v, o, off);
            }
        }
    }

    /// The microkernel: `acc[p][v] += a[p][i] · w[i][v]` for `np` pixels `p` (at `a + a_off +
    /// p · a_px`, 16 channels each, of which the first `nic` are used), 4 vectors `v` of
    /// output channels (weights at `w + w_off`, 16 floats per input channel).
    ///
    /// With [`PIXELS`] = 3 that is 12 accumulators, i.e. 12 independent FMA chains (enough to
    /// hide the FMA latency at two per cycle), plus one broadcast input value and one
    /// temporary: 14 of the 16 xmm registers. Each weight vector is read by its
    /// FMA as a memory operand (an L1 hit). x86's `vfmadd132ps` overwrites a register
    /// multiplicand, here the broadcast, so cranelift copies it before each use but the last
    /// (a register move, which the CPU eliminates at rename).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn micro(
        &mut self,
        accs: &[Variable],
        np: usize,
        a: Value,
        a_off: i64,
        a_px: i64,
        w: Value,
        w_off: i64,
        nic: usize,
    ) {
        for i in 0..nic {
            let wi = w_off + (i * BLOCK) as i64 * FS;
            for pi in 0..np {
                let off = a_off + pi as i64 * a_px + i as i64 * FS;
                let s = self.b.ins().load(types::F32, flags(), a, off as i32);
                let bc = self.b.ins().splat(F4, s);
                for v in 0..4 {
                    let wv = self.load4(w, wi + v as i64 * 16);
                    let acc = accs[pi * 4 + v];
                    let x = self.b.use_var(acc);
                    let n = self.fma(bc, wv, x);
                    self.b.def_var(acc, n);
                }
            }
        }
    }

    /// `for i in lo..hi { body(i) }` with `i` a pointer-sized integer.
    pub(super) fn for_range(&mut self, lo: Value, hi: Value, body: impl FnOnce(&mut Self, Value)) {
        let var = self.b.declare_var(self.t.ptr);
        self.b.def_var(var, lo);
        let head = self.b.create_block();
        let body_blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(var);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(c, body_blk, &[], exit, &[]);
        self.b.switch_to_block(body_blk);
        body(self, i);
        let i = self.b.use_var(var);
        let n = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, n);
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(exit);
    }

    /// `for i in 0..n` with a constant bound; nothing when `n == 0`.
    pub(super) fn for_n(&mut self, n: usize, body: impl FnOnce(&mut Self, Value)) {
        if n == 0 {
            return;
        }
        let lo = self.iconst(0);
        let hi = self.iconst(n as i64);
        self.for_range(lo, hi, body);
    }
}

/// Emits the body of `kernel` into `b` (whose entry block has the [`N_PARAMS`] parameters).
pub(crate) fn emit(b: &mut FunctionBuilder<'_>, t: Target, kernel: &Kernel) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p: Vec<Value> = b.block_params(entry).to_vec();
    let mut e = Emit::new(b, t);
    e.define_zero();
    match *kernel {
        Kernel::Conv(c) => conv(&mut e, &c, &p),
        Kernel::Wino(c, m) => super::wino::conv(&mut e, &c, m, &p),
        Kernel::Add { shape, relu } => add(&mut e, shape, relu, &p),
        Kernel::AddUp { shape, log2, relu } => add_up(&mut e, shape, log2, relu, &p),
        Kernel::Copy { shape } => copy(&mut e, shape, &p),
        Kernel::ZeroHalo { shape } => zero_halo(&mut e, shape, &p),
        Kernel::Input { shape } => input(&mut e, shape, &p),
        Kernel::Output { shape } => output(&mut e, shape, &p),
    }
    e.b.ins().return_(&[]);
    e.b.seal_all_blocks();
}

/// Start of block `p[4]` of a tensor of `shape` at `base`.
pub(super) fn block_base(e: &mut Emit<'_, '_>, base: Value, blk: Value, shape: ActShape) -> Value {
    e.index(base, blk, shape.block_stride() as i64 * FS)
}

fn conv(e: &mut Emit<'_, '_>, c: &ConvKernel, p: &[Value]) {
    let (inp, w, out, res, ob, r0, r1) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    let ins = c.in_shape();
    let hr = c.out_shape();
    let ocb = c.cout.div_ceil(BLOCK);
    let n_icb = c.cin.div_ceil(BLOCK);
    let last_ic = c.cin - (n_icb - 1) * BLOCK;
    let full_icb = if last_ic == BLOCK { n_icb } else { n_icb - 1 };
    let taps = c.k * c.k;
    let w_ob = (n_icb * taps * BLOCK * BLOCK) as i64 * FS;

    let bias_p = e.index(w, ob, PX);
    let bias: Vec<Value> = (0..4).map(|v| e.load4(bias_p, v * 16)).collect();
    let wbody = e.offset(w, (ocb * BLOCK) as i64 * FS);
    let wob = e.index(wbody, ob, w_ob);
    let out_blk = block_base(e, out, ob, hr);
    let res_blk = if c.add {
        Some(block_base(e, res, ob, hr))
    } else {
        None
    };
    let in_rs = ins.row_stride() as i64 * FS;
    let hr_rs = hr.row_stride() as i64 * FS;
    let w_out = c.w_out();

    e.for_range(r0, r1, |e, oy| {
        // Input row of tap (0, 0) for this output row, at output column 0.
        let iy = e.b.ins().imul_imm_s(oy, c.stride as i64);
        let in_row = e.index(inp, iy, in_rs);
        let in_row = e.offset(
            in_row,
            (HALO - c.pad) as i64 * in_rs + (HALO - c.pad) as i64 * PX,
        );
        // Output row (upsampled) at interior column 0.
        let yh = e.b.ins().ishl_imm_u(oy, i64::from(c.up));
        let o_row = e.index(out_blk, yh, hr_rs);
        let o_row = e.offset(o_row, hr_rs + PX);
        let r_row = res_blk.map(|r| {
            let r = e.index(r, yh, hr_rs);
            e.offset(r, hr_rs + PX)
        });
        let strips = w_out / PIXELS;
        let rem = w_out % PIXELS;
        let geo = Rows {
            c,
            in_row,
            o_row,
            r_row,
            wob,
            bias: &bias,
            full_icb,
            last_ic,
            in_bs: ins.block_stride() as i64 * FS,
            in_rs,
            hr_rs,
        };
        e.for_n(strips, |e, s| {
            let x0 = e.b.ins().imul_imm_s(s, PIXELS as i64);
            strip(e, &geo, PIXELS, x0);
        });
        if rem > 0 {
            let x0 = e.iconst((strips * PIXELS) as i64);
            strip(e, &geo, rem, x0);
        }
    });
}

/// Per-row pointers and constants of a conv kernel.
struct Rows<'c> {
    c: &'c ConvKernel,
    in_row: Value,
    o_row: Value,
    r_row: Option<Value>,
    wob: Value,
    bias: &'c [Value],
    full_icb: usize,
    last_ic: usize,
    in_bs: i64,
    in_rs: i64,
    hr_rs: i64,
}

/// `np` output pixels starting at conv column `x0`: accumulate, then the epilogue.
fn strip(e: &mut Emit<'_, '_>, g: &Rows<'_>, np: usize, x0: Value) {
    let c = g.c;
    let taps = c.k * c.k;
    let accs: Vec<Variable> = (0..np * 4)
        .map(|_| {
            let v = e.b.declare_var(F4);
            let z = e.zero();
            e.b.def_var(v, z);
            v
        })
        .collect();
    let xin = e.index(g.in_row, x0, c.stride as i64 * PX);
    let w_ib = (taps * BLOCK * BLOCK) as i64 * FS;
    e.for_n(g.full_icb, |e, ib| {
        let ip = e.index(xin, ib, g.in_bs);
        let wp = e.index(g.wob, ib, w_ib);
        taps_body(e, g, &accs, np, ip, wp, BLOCK);
    });
    if g.last_ic < BLOCK {
        let ip = e.offset(xin, g.full_icb as i64 * g.in_bs);
        let wp = e.offset(g.wob, g.full_icb as i64 * w_ib);
        taps_body(e, g, &accs, np, ip, wp, g.last_ic);
    }
    // Epilogue.
    let f = 1i64 << c.up;
    let ox = e.b.ins().imul_imm_s(x0, f * PX);
    let o_px = e.b.ins().iadd(g.o_row, ox);
    let r_px = g.r_row.map(|r| e.b.ins().iadd(r, ox));
    for pi in 0..np {
        for v in 0..4 {
            let a = e.b.use_var(accs[pi * 4 + v]);
            let s = e.b.ins().fadd(a, g.bias[v]);
            let off = pi as i64 * f * PX + v as i64 * 16;
            e.put(c, g.hr_rs, s, o_px, r_px, off);
        }
    }
}

/// All taps of one input block (`nic` channels of it) into the accumulators.
fn taps_body(
    e: &mut Emit<'_, '_>,
    g: &Rows<'_>,
    accs: &[Variable],
    np: usize,
    ip: Value,
    wp: Value,
    nic: usize,
) {
    let c = g.c;
    let tap = |e: &mut Emit<'_, '_>, ipk: Value, wpk: Value, kx: usize| {
        let a_off = kx as i64 * PX;
        let w_off = (kx * BLOCK * BLOCK) as i64 * FS;
        let a_px = c.stride as i64 * PX;
        e.micro(accs, np, ipk, a_off, a_px, wpk, w_off, nic);
    };
    if c.k == 1 {
        tap(e, ip, wp, 0);
    } else {
        let w_row = (c.k * BLOCK * BLOCK) as i64 * FS;
        e.for_n(c.k, |e, ky| {
            let ipk = e.index(ip, ky, g.in_rs);
            let wpk = e.index(wp, ky, w_row);
            for kx in 0..c.k {
                tap(e, ipk, wpk, kx);
            }
        });
    }
}

fn add(e: &mut Emit<'_, '_>, shape: ActShape, relu: bool, p: &[Value]) {
    let (a, b, out, blk) = (p[0], p[1], p[2], p[4]);
    let a = block_base(e, a, blk, shape);
    let b = block_base(e, b, blk, shape);
    let out = block_base(e, out, blk, shape);
    // One pixel (4 vectors) per iteration.
    e.for_n(shape.block_stride() / BLOCK, |e, i| {
        let o = e.b.ins().imul_imm_s(i, PX);
        let (pa, pb, po) = (
            e.b.ins().iadd(a, o),
            e.b.ins().iadd(b, o),
            e.b.ins().iadd(out, o),
        );
        for v in 0..4 {
            let x = e.load4(pa, v * 16);
            let y = e.load4(pb, v * 16);
            let mut s = e.b.ins().fadd(x, y);
            if relu {
                s = e.relu(s);
            }
            e.store4(s, po, v * 16);
        }
    });
}

fn copy(e: &mut Emit<'_, '_>, shape: ActShape, p: &[Value]) {
    let (src, out, blk) = (p[0], p[2], p[4]);
    let src = block_base(e, src, blk, shape);
    let out = block_base(e, out, blk, shape);
    e.for_n(shape.block_stride() / BLOCK, |e, i| {
        let o = e.b.ins().imul_imm_s(i, PX);
        let (ps, po) = (e.b.ins().iadd(src, o), e.b.ins().iadd(out, o));
        for v in 0..4 {
            let x = e.load4(ps, v * 16);
            e.store4(x, po, v * 16);
        }
    });
}

fn add_up(e: &mut Emit<'_, '_>, shape: ActShape, log2: u32, relu: bool, p: &[Value]) {
    let (acc, low, blk) = (p[0], p[1], p[4]);
    let f = 1usize << log2;
    let ls = ActShape::new(shape.c(), shape.h() >> log2, shape.w() >> log2);
    let acc = block_base(e, acc, blk, shape);
    let low = block_base(e, low, blk, ls);
    let (rs, lrs) = (shape.row_stride() as i64 * FS, ls.row_stride() as i64 * FS);
    e.for_n(shape.h(), |e, y| {
        let arow = e.index(acc, y, rs);
        let arow = e.offset(arow, rs + PX);
        let ly = e.b.ins().ushr_imm_u(y, i64::from(log2));
        let lrow = e.index(low, ly, lrs);
        let lrow = e.offset(lrow, lrs + PX);
        e.for_n(ls.w(), |e, lx| {
            let lp = e.index(lrow, lx, PX);
            let ap = e.index(arow, lx, f as i64 * PX);
            let l: Vec<Value> = (0..4).map(|v| e.load4(lp, v * 16)).collect();
            for dx in 0..f as i64 {
                for (v, &lv) in l.iter().enumerate() {
                    let off = dx * PX + v as i64 * 16;
                    let x = e.load4(ap, off);
                    let mut s = e.b.ins().fadd(x, lv);
                    if relu {
                        s = e.relu(s);
                    }
                    e.store4(s, ap, off);
                }
            }
        });
    });
}

fn zero_halo(e: &mut Emit<'_, '_>, shape: ActShape, p: &[Value]) {
    let (out, blk) = (p[2], p[4]);
    let out = block_base(e, out, blk, shape);
    let rs = shape.row_stride() as i64 * FS;
    let last = (shape.h() + 1) as i64 * rs;
    e.for_n(shape.w() + 2, |e, x| {
        let px = e.index(out, x, PX);
        let z = e.zero();
        for v in 0..4 {
            e.store4(z, px, v * 16);
            e.store4(z, px, last + v * 16);
        }
    });
    e.for_n(shape.h(), |e, y| {
        let row = e.index(out, y, rs);
        let z = e.zero();
        for v in 0..4 {
            e.store4(z, row, rs + v * 16);
            e.store4(z, row, 2 * rs - PX + v * 16);
        }
    });
}

/// Channels of block `blk` that exist: `min(16, c − 16·blk)`.
fn block_channels(e: &mut Emit<'_, '_>, blk: Value, c: usize) -> Value {
    let first = e.b.ins().imul_imm_s(blk, BLOCK as i64);
    let cc = e.iconst(c as i64);
    let left = e.b.ins().isub(cc, first);
    let sixteen = e.iconst(BLOCK as i64);
    e.b.ins().smin(left, sixteen)
}

fn input(e: &mut Emit<'_, '_>, shape: ActShape, p: &[Value]) {
    let (src, dst, blk) = (p[0], p[2], p[4]);
    let out = block_base(e, dst, blk, shape);
    e.for_n(shape.block_stride() / BLOCK, |e, i| {
        let po = e.index(out, i, PX);
        let z = e.zero();
        for v in 0..4 {
            e.store4(z, po, v * 16);
        }
    });
    let nc = block_channels(e, blk, shape.c());
    let plane = (shape.h() * shape.w()) as i64 * FS;
    let first = e.b.ins().imul_imm_s(blk, BLOCK as i64);
    let src_blk = e.index(src, first, plane);
    let rs = shape.row_stride() as i64 * FS;
    let zero = e.iconst(0);
    e.for_range(zero, nc, |e, ch| {
        let sp = e.index(src_blk, ch, plane);
        let dp = e.index(out, ch, FS);
        e.for_n(shape.h(), |e, y| {
            let srow = e.index(sp, y, shape.w() as i64 * FS);
            let drow = e.index(dp, y, rs);
            let drow = e.offset(drow, rs + PX);
            e.for_n(shape.w(), |e, x| {
                let s = e.index(srow, x, FS);
                let d = e.index(drow, x, PX);
                let v = e.b.ins().load(types::F32, flags(), s, 0);
                e.b.ins().store(flags(), v, d, 0);
            });
        });
    });
}

fn output(e: &mut Emit<'_, '_>, shape: ActShape, p: &[Value]) {
    let (src, dst, blk) = (p[0], p[2], p[4]);
    let sb = block_base(e, src, blk, shape);
    let nc = block_channels(e, blk, shape.c());
    let plane = (shape.h() * shape.w()) as i64 * FS;
    let first = e.b.ins().imul_imm_s(blk, BLOCK as i64);
    let dst_blk = e.index(dst, first, plane);
    let rs = shape.row_stride() as i64 * FS;
    let zero = e.iconst(0);
    e.for_range(zero, nc, |e, ch| {
        let dp = e.index(dst_blk, ch, plane);
        let sp = e.index(sb, ch, FS);
        e.for_n(shape.h(), |e, y| {
            let drow = e.index(dp, y, shape.w() as i64 * FS);
            let srow = e.index(sp, y, rs);
            let srow = e.offset(srow, rs + PX);
            e.for_n(shape.w(), |e, x| {
                let s = e.index(srow, x, PX);
                let d = e.index(drow, x, FS);
                let v = e.b.ins().load(types::F32, flags(), s, 0);
                e.b.ins().store(flags(), v, d, 0);
            });
        });
    });
}
