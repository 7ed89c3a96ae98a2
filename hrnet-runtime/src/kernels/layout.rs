//! The blocked activation layout every kernel reads and writes.
//!
//! A tensor of `c` channels and `h × w` pixels (batch 1) is stored as
//! `[ceil(c / 16)][h + 2][w + 2][16]` f32: channels are grouped in blocks of [`BLOCK`] = 16
//! (one AVX-512 register), the last block zero-padded, and every block carries a one-pixel zero
//! border (the *halo*, [`HALO`]) so 3×3 kernels with padding 1 read their zero padding from
//! memory instead of testing bounds.
//!
//! Element `(ch, y, x)` (interior coordinates, `0 ≤ y < h`) lives at
//! `((ch / 16 · (h + 2) + y + 1) · (w + 2) + x + 1) · 16 + ch % 16`, see [`ActShape::index`].
//!
//! Invariants the kernels keep, so a memory planner may reuse buffers freely:
//! - a kernel that writes a *fresh* output (not accumulating into it) also writes its halo
//!   with zeros, and its padding channels come out as zeros;
//! - a kernel that accumulates into an existing tensor touches its interior only;
//! - kernels never rely on the padding channels of their *inputs* being zero (they skip them),
//!   but they do rely on the halo of 3×3 inputs being zero.

/// Channels per block: the lane count of one AVX-512 register.
pub const BLOCK: usize = 16;
/// Width of the zero border around every channel block, in pixels.
pub const HALO: usize = 1;

/// The most floats a buffer may have: a slice of `f32` holds at most `isize::MAX` bytes.
pub const MAX_FLOATS: usize = isize::MAX as usize / 4;

/// Shape of one activation tensor (batch 1) in the blocked layout.
///
/// The fields are private: [`ActShape::new`] / [`ActShape::try_new`] refuse shapes whose
/// length in this layout exceeds [`MAX_FLOATS`], so [`ActShape::len`] and every index below
/// it are computed without overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActShape {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

/// A tensor shape whose blocked length exceeds [`MAX_FLOATS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("activation {c}x{h}x{w} is too large for the blocked layout")]
pub struct ShapeError {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl ActShape {
    /// A `c × h × w` tensor.
    ///
    /// # Panics
    /// If [`ActShape::try_new`] refuses it; in a `const` item that is a compile error.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        match ActShape::try_new(c, h, w) {
            Ok(s) => s,
            Err(_) => panic!("ActShape: tensor too large for the blocked layout"),
        }
    }
    /// A `c × h × w` tensor, unless its blocked length `ceil(c/16)·(h+2)·(w+2)·16` (computed
    /// with overflow checks) exceeds [`MAX_FLOATS`].
    pub const fn try_new(c: usize, h: usize, w: usize) -> Result<Self, ShapeError> {
        let err = ShapeError { c, h, w };
        let (Some(h2), Some(w2)) = (h.checked_add(2 * HALO), w.checked_add(2 * HALO)) else {
            return Err(err);
        };
        let Some(row) = w2.checked_mul(BLOCK) else {
            return Err(err);
        };
        let Some(block) = h2.checked_mul(row) else {
            return Err(err);
        };
        match c.div_ceil(BLOCK).checked_mul(block) {
            Some(len) if len <= MAX_FLOATS && block <= MAX_FLOATS => Ok(ActShape { c, h, w }),
            _ => Err(err),
        }
    }
    /// Channels (not padded).
    pub const fn c(&self) -> usize {
        self.c
    }
    /// Height in pixels (without halo).
    pub const fn h(&self) -> usize {
        self.h
    }
    /// Width in pixels (without halo).
    pub const fn w(&self) -> usize {
        self.w
    }
    /// Number of channel blocks, `ceil(c / 16)`.
    pub const fn blocks(&self) -> usize {
        self.c.div_ceil(BLOCK)
    }
    /// Floats between two consecutive rows (`(w + 2) · 16`).
    pub const fn row_stride(&self) -> usize {
        (self.w + 2 * HALO) * BLOCK
    }
    /// Floats between two consecutive channel blocks (`(h + 2) · (w + 2) · 16`).
    pub const fn block_stride(&self) -> usize {
        (self.h + 2 * HALO) * self.row_stride()
    }
    /// Total number of floats of the tensor in this layout, halo and padding included.
    pub const fn len(&self) -> usize {
        self.blocks() * self.block_stride()
    }
    /// True if the tensor has no elements.
    pub const fn is_empty(&self) -> bool {
        self.c == 0 || self.h == 0 || self.w == 0
    }
    /// Index of the first channel of block `cb` at interior pixel `(y, x)`.
    pub const fn pixel(&self, cb: usize, y: usize, x: usize) -> usize {
        cb * self.block_stride() + (y + HALO) * self.row_stride() + (x + HALO) * BLOCK
    }
    /// Index of element `(ch, y, x)` (interior coordinates).
    pub const fn index(&self, ch: usize, y: usize, x: usize) -> usize {
        self.pixel(ch / BLOCK, y, x) + ch % BLOCK
    }
}

/// Number of floats of a `c × h × w` tensor in the blocked layout (see the module doc).
pub const fn act_len(c: usize, h: usize, w: usize) -> usize {
    ActShape::new(c, h, w).len()
}

/// Writes zeros into the halo of every channel block of `buf` (the interior is untouched).
///
/// # Panics
/// If `buf.len() != shape.len()`.
pub fn zero_halo(shape: ActShape, buf: &mut [f32]) {
    assert_eq!(buf.len(), shape.len(), "zero_halo: buffer length");
    let rs = shape.row_stride();
    for blk in buf.chunks_exact_mut(shape.block_stride()) {
        blk[..rs].fill(0.0);
        let last = (shape.h + 1) * rs;
        blk[last..last + rs].fill(0.0);
        for y in 1..=shape.h {
            let row = &mut blk[y * rs..(y + 1) * rs];
            row[..BLOCK].fill(0.0);
            row[rs - BLOCK..].fill(0.0);
        }
    }
}

/// Converts a plain NCHW (batch 1) tensor `src` (`c · h · w` floats) into the blocked layout
/// `dst` (`shape.len()` floats), writing halo and padding channels as zeros.
///
/// # Panics
/// If a buffer length does not match `shape`.
pub fn from_nchw(shape: ActShape, src: &[f32], dst: &mut [f32]) {
    let (c, h, w) = (shape.c, shape.h, shape.w);
    assert_eq!(src.len(), c * h * w, "from_nchw: source length");
    assert_eq!(dst.len(), shape.len(), "from_nchw: destination length");
    dst.fill(0.0);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                dst[shape.index(ch, y, x)] = src[(ch * h + y) * w + x];
            }
        }
    }
}

/// Converts the blocked tensor `src` back to plain NCHW (batch 1) `dst` (`c · h · w` floats).
///
/// # Panics
/// If a buffer length does not match `shape`.
pub fn to_nchw(shape: ActShape, src: &[f32], dst: &mut [f32]) {
    let (c, h, w) = (shape.c, shape.h, shape.w);
    assert_eq!(src.len(), shape.len(), "to_nchw: source length");
    assert_eq!(dst.len(), c * h * w, "to_nchw: destination length");
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                dst[(ch * h + y) * w + x] = src[shape.index(ch, y, x)];
            }
        }
    }
}
