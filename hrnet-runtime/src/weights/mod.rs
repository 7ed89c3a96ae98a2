//! Checkpoint readers and strict binding of named tensors.
//!
//! [`load`] reads a checkpoint file into a [`Checkpoint`] (an ordered map from the official
//! state_dict names to [`Tensor`]s), detecting the format from the content, not the extension:
//!
//! - **safetensors**, memory-mapped; the `safetensors` crate validates the header.
//! - **`.pth` zip** (`torch.save` since 1.6): `<dir>/data.pkl` plus one stored entry per storage,
//!   `<dir>/data/<key>`.
//! - **`.pth` legacy** (before 1.6, e.g. the 2019 model zoo): magic number, protocol and
//!   system-info pickles, the main pickle, a pickle listing storage keys, then the raw storages.
//!
//! Training checkpoints (`{'epoch': …, 'state_dict': {'module.' + name: …}, …}`) are unwrapped:
//! see [`Checkpoint::from_training_checkpoint`]. A segmentation training wrapper's state
//! (`model.` + name, plus `loss.*`) loses the prefix and the `loss.*` tensors: see
//! [`Checkpoint::dropped_loss_tensors`]. Pickles are read by [`pickle`], which never
//! executes anything and refuses every global a tensor state_dict does not need.
//!
//! A checkpoint is untrusted input: a truncated or lying file is an error, never a panic, an
//! out-of-bounds read or an allocation out of proportion to the file's size.
//!
//! [`Checkpoint::bind`] then checks the checkpoint against the tensors a model needs and reports
//! every missing, mis-shaped and unexpected tensor at once.

mod bind;
pub mod pickle;
mod safetensors_file;
mod torch;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use bind::{BindError, BindOptions, BindProblem, BoundWeights, TensorSpec};
pub use pickle::PickleError;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float (converted to f32 on load).
    F64,
    /// IEEE half precision (converted to f32 on load).
    F16,
    /// bfloat16 (converted to f32 on load).
    BF16,
    /// 64-bit signed integer (e.g. `num_batches_tracked`).
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// 16-bit unsigned integer.
    U16,
    /// 32-bit unsigned integer.
    U32,
    /// Boolean, one byte per element.
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether values of this type load as f32.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::Bool => "bool",
        };
        f.write_str(s)
    }
}

/// The values of a loaded tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Floating-point values of any stored precision, converted to f32.
    F32(Vec<f32>),
    /// Integer and boolean values, widened to i64.
    I64(Vec<i64>),
}

/// A named tensor from a checkpoint, in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape, outermost dimension first (empty for a scalar).
    pub shape: Vec<usize>,
    /// The type it was stored as.
    pub dtype: DType,
    /// The values (`shape.iter().product()` of them).
    pub data: TensorData,
}

impl Tensor {
    /// The f32 values, if this is a floating-point tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
}

/// The container format a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.safetensors` file.
    Safetensors,
    /// A `torch.save` zip archive (PyTorch ≥ 1.6).
    TorchZip,
    /// A legacy `torch.save` stream (PyTorch < 1.6).
    TorchLegacy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::TorchZip => ".pth (zip)",
            Format::TorchLegacy => ".pth (legacy)",
        })
    }
}

/// The named tensors of a checkpoint, in the order the file lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    format: Format,
    from_training_checkpoint: bool,
    dropped_loss_tensors: usize,
    tensors: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Builds a checkpoint from named tensors; a name given twice is an error.
    pub fn new(
        format: Format,
        from_training_checkpoint: bool,
        tensors: Vec<(String, Tensor)>,
    ) -> Result<Checkpoint, WeightError> {
        let mut index = HashMap::with_capacity(tensors.len());
        for (i, (name, _)) in tensors.iter().enumerate() {
            if index.insert(name.clone(), i).is_some() {
                return Err(WeightError::DuplicateName(name.clone()));
            }
        }
        Ok(Checkpoint {
            format,
            from_training_checkpoint,
            dropped_loss_tensors: 0,
            tensors,
            index,
        })
    }

    /// The container format the checkpoint was read from.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the tensors came from the `state_dict` entry of a training checkpoint (a dict
    /// with `epoch`, `optimizer`, … beside it) rather than from a bare state_dict.
    pub fn from_training_checkpoint(&self) -> bool {
        self.from_training_checkpoint
    }

    /// How many `loss.*` tensors of a segmentation training wrapper (`FullModel`: every
    /// model key prefixed `model.`) were dropped while reading; they are not the network's.
    pub fn dropped_loss_tensors(&self) -> usize {
        self.dropped_loss_tensors
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor with this name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .map(|(_, t)| t)
    }

    /// Names and tensors in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }
}

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The content is none of the supported formats.
    #[error("unrecognized weights format: expected safetensors, a .pth zip archive or a legacy .pth file")]
    UnknownFormat,
    /// The safetensors header is invalid or does not match the file.
    #[error("invalid safetensors file: {0}")]
    Safetensors(String),
    /// A format this build of hrnet-runtime leaves out (a Cargo feature is off).
    #[error("{format} checkpoints need hrnet-runtime's `{feature}` feature, which this build does not have")]
    Disabled {
        /// The format.
        format: Format,
        /// The Cargo feature that reads it.
        feature: &'static str,
    },
    /// The zip container of a `.pth` file is invalid.
    #[error("invalid .pth zip archive: {0}")]
    Zip(String),
    /// A zip entry is compressed; `torch.save` stores entries uncompressed.
    #[error("zip entry '{entry}' is compressed ({method}); only stored (uncompressed) entries are supported, as torch.save writes them")]
    Compressed {
        /// The entry name.
        entry: String,
        /// The compression method.
        method: String,
    },
    /// A pickle inside the file could not be read (or names a refused global).
    #[error("{context}: {source}")]
    Pickle {
        /// Which pickle: an entry name or a part of a legacy file.
        context: String,
        /// What went wrong.
        source: PickleError,
    },
    /// A storage's data does not have the size its persistent id declares.
    #[error(
        "storage '{key}': expected {expected} bytes ({numel} × {dtype}), the file has {found}"
    )]
    StorageSize {
        /// The storage key.
        key: String,
        /// Declared number of elements.
        numel: usize,
        /// Element type.
        dtype: DType,
        /// Bytes the declaration needs.
        expected: u128,
        /// Bytes present.
        found: u128,
    },
    /// A tensor views elements outside its storage.
    #[error("tensor '{name}': view (offset {offset}, shape {shape:?}, stride {stride:?}) reaches past the end of storage '{key}' ({numel} elements)")]
    ViewOutOfBounds {
        /// The tensor name.
        name: String,
        /// The storage key.
        key: String,
        /// Offset in elements.
        offset: usize,
        /// The view's shape.
        shape: Vec<usize>,
        /// The view's strides.
        stride: Vec<usize>,
        /// Elements in the storage.
        numel: usize,
    },
    /// A tensor type this crate does not load.
    #[error("tensor '{name}': unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The tensor name.
        name: String,
        /// The type as the file names it.
        dtype: String,
    },
    /// Two entries end up with the same tensor name (possibly after prefix stripping).
    #[error("tensor name '{0}' appears twice")]
    DuplicateName(String),
    /// The tensors would need far more memory than the file's size justifies.
    #[error(
        "tensors would take {bytes} bytes once decoded, more than a {file_len}-byte file justifies (at most 4 bytes per byte of file)"
    )]
    TooLarge {
        /// Decoded bytes of the tensors so far.
        bytes: u128,
        /// Size of the file.
        file_len: usize,
    },
    /// A tensor with more dimensions than a network parameter has.
    #[error("tensor '{name}': {rank} dimensions{}; at most {max} are supported", if *.squeezed { " other than 1" } else { "" })]
    TooManyDims {
        /// The tensor name.
        name: String,
        /// Its number of dimensions (of size other than 1 when `squeezed`).
        rank: usize,
        /// Whether `rank` counts only the dimensions of size other than 1.
        squeezed: bool,
        /// The limit.
        max: usize,
    },
    /// One storage is viewed as two different element types (or sizes).
    #[error("storage '{key}' is declared as {first} and as {second}")]
    StorageConflict {
        /// The storage key.
        key: String,
        /// The first declaration (`<n> × <dtype>`).
        first: String,
        /// A later, different one.
        second: String,
    },
    /// Any other structural problem, described in words.
    #[error("invalid checkpoint: {0}")]
    Malformed(String),
}

/// Reads a checkpoint file (safetensors, `.pth` zip or legacy `.pth`), detecting the format from
/// its content. The file is memory-mapped; tensors are copied out as f32 (or i64).
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint, WeightError> {
    let path = path.as_ref();
    let io = |source| WeightError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return load_bytes(&[]);
    }
    // SAFETY: the map is read-only and dropped before returning. As with every memory-mapped
    // reader, another process truncating or rewriting the file while it is mapped is outside
    // what this function can guard against; all reads are bounds-checked against the map's
    // length, so a file that was malformed when mapped is still only an error.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    load_bytes(&map)
}

#[cfg(feature = "pth")]
use torch::load_zip;

/// Without the `pth` feature a zip archive is refused by name.
#[cfg(not(feature = "pth"))]
fn load_zip(_: &[u8]) -> Result<Checkpoint, WeightError> {
    Err(WeightError::Disabled {
        format: Format::TorchZip,
        feature: "pth",
    })
}

/// Reads a checkpoint from bytes; see [`load`].
pub fn load_bytes(bytes: &[u8]) -> Result<Checkpoint, WeightError> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        load_zip(bytes)
    } else if bytes.first() == Some(&0x80) {
        // A pickle stream: a legacy file starts with the magic-number pickle. The check of the
        // magic number itself (any protocol) happens in the reader.
        torch::load_legacy(bytes)
    } else if bytes.len() >= 9 && bytes.get(8) == Some(&b'{') {
        safetensors_file::load(bytes)
    } else {
        Err(WeightError::UnknownFormat)
    }
}

/// Converts little-endian raw elements of `dtype` to loaded values (a trailing partial element,
/// which callers rule out beforehand, is ignored).
fn decode(dtype: DType, raw: &[u8]) -> TensorData {
    let n = raw.len() / dtype.size();
    decode_elements(dtype, n, raw.chunks_exact(dtype.size()))
}

/// Converts `count` raw elements of `dtype` (each a slice of `dtype.size()` little-endian
/// bytes) to loaded values, in one allocation.
fn decode_elements<'a>(
    dtype: DType,
    count: usize,
    elements: impl Iterator<Item = &'a [u8]>,
) -> TensorData {
    fn each<'a, const N: usize, T>(
        count: usize,
        elements: impl Iterator<Item = &'a [u8]>,
        f: impl Fn([u8; N]) -> T,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(count);
        out.extend(elements.map(|c| f(c.try_into().unwrap_or([0; N]))));
        out
    }
    let e = elements;
    match dtype {
        DType::F32 => TensorData::F32(each(count, e, f32::from_le_bytes)),
        DType::F64 => TensorData::F32(each(count, e, |b| f64::from_le_bytes(b) as f32)),
        DType::F16 => TensorData::F32(each(count, e, |b| f16_to_f32(u16::from_le_bytes(b)))),
        DType::BF16 => TensorData::F32(each(count, e, |b| bf16_to_f32(u16::from_le_bytes(b)))),
        DType::I64 => TensorData::I64(each(count, e, i64::from_le_bytes)),
        DType::I32 => TensorData::I64(each(count, e, |b| i32::from_le_bytes(b).into())),
        DType::U32 => TensorData::I64(each(count, e, |b| u32::from_le_bytes(b).into())),
        DType::I16 => TensorData::I64(each(count, e, |b| i16::from_le_bytes(b).into())),
        DType::U16 => TensorData::I64(each(count, e, |b| u16::from_le_bytes(b).into())),
        DType::I8 => TensorData::I64(each(count, e, |b: [u8; 1]| i8::from_le_bytes(b).into())),
        DType::U8 | DType::Bool => TensorData::I64(each(count, e, |b: [u8; 1]| b[0].into())),
    }
}

/// IEEE 754 half precision to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: shift the mantissa up until its leading bit is the implicit one.
            let shift = man.leading_zeros() - 21;
            let man = (man << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (man << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 to f32 (exact: bfloat16 is the top half of an f32).
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Most dimensions of size other than 1 a tensor may have (network parameters have 4).
pub const MAX_RANK: usize = 8;
/// Most dimensions a tensor may have, those of size 1 included.
pub const MAX_DIMS: usize = 64;

/// Checks a tensor's shape against [`MAX_DIMS`] and [`MAX_RANK`] (before anything is read for
/// it: a strided gather costs time per dimension and element).
fn check_rank(name: &str, shape: &[usize]) -> Result<(), WeightError> {
    let too_many = |rank, squeezed, max| WeightError::TooManyDims {
        name: name.to_owned(),
        rank,
        squeezed,
        max,
    };
    if shape.len() > MAX_DIMS {
        return Err(too_many(shape.len(), false, MAX_DIMS));
    }
    let rank = shape.iter().filter(|&&d| d != 1).count();
    if rank > MAX_RANK {
        return Err(too_many(rank, true, MAX_RANK));
    }
    Ok(())
}

/// Bytes the decoded tensors of a file may take in all: four per byte of file (f16 doubles
/// when decoded, and tied weights can make several tensors view the same storage) plus 1 MiB
/// for tiny files. Checked before each tensor is allocated, so a small file cannot make the
/// reader allocate much more than its size.
fn decoded_budget(file_len: usize) -> u128 {
    (file_len as u128) * 4 + (1 << 20)
}

/// Bytes one element of `dtype` takes once decoded (f32 for floats, i64 otherwise).
fn decoded_size(dtype: DType) -> u128 {
    if dtype.is_float() {
        4
    } else {
        8
    }
}

/// Charges `count` decoded elements of `dtype` to `budget`, or says the file is too small
/// for them.
fn charge_decoded(
    budget: &mut u128,
    count: Option<u128>,
    dtype: DType,
    file_len: usize,
) -> Result<usize, WeightError> {
    let bytes = count.and_then(|c| c.checked_mul(decoded_size(dtype)));
    match bytes {
        Some(b) if b <= *budget => {
            *budget -= b;
            // ≤ the budget, a few times the file length: fits in usize.
            Ok(count.unwrap_or(0) as usize)
        }
        _ => Err(WeightError::TooLarge {
            bytes: bytes.unwrap_or(u128::MAX),
            file_len,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn decode_all_types() {
        let d = decode(DType::F64, &1.5f64.to_le_bytes());
        assert_eq!(d, TensorData::F32(vec![1.5]));
        let d = decode(DType::I64, &(-3i64).to_le_bytes());
        assert_eq!(d, TensorData::I64(vec![-3]));
        let d = decode(DType::U8, &[255, 1]);
        assert_eq!(d, TensorData::I64(vec![255, 1]));
        let d = decode(DType::I8, &[255]);
        assert_eq!(d, TensorData::I64(vec![-1]));
        let d = decode(DType::Bool, &[0, 1]);
        assert_eq!(d, TensorData::I64(vec![0, 1]));
        let d = decode(DType::F32, &[0, 0, 0x80, 0x3f, 0xff]);
        assert_eq!(
            d,
            TensorData::F32(vec![1.0]),
            "a trailing partial element is ignored"
        );
    }

    #[test]
    fn sniffing() {
        assert!(matches!(load_bytes(b""), Err(WeightError::UnknownFormat)));
        assert!(matches!(
            load_bytes(b"hello world"),
            Err(WeightError::UnknownFormat)
        ));
        assert!(matches!(
            load_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}"),
            Ok(c) if c.is_empty() && c.format() == Format::Safetensors
        ));
    }
}
