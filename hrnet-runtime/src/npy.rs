//! Reading and writing `.npy` files (float32, float64 converted).
//!
//! [`read_f32`] accepts C-order little-endian `<f4` and `<f8` arrays (f64 is converted to f32),
//! format versions 1.0, 2.0 and 3.0. Fortran order, big-endian data, other dtypes, malformed
//! headers and data that is shorter or longer than the shape says are errors, and so are shapes
//! over [`MAX_DIMS`] dimensions or [`MAX_ELEMENTS`] elements, before anything is allocated for
//! the data.
//!
//! [`write_f32`] writes version 1.0 `<f4` atomically: to a temporary file in the same directory,
//! flushed, then renamed over the destination.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the `.npy` magic string.
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    NotNpy,
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("unsupported .npy format version {0}.{1}")]
    UnsupportedVersion(u8, u8),
    /// The header dict is malformed.
    #[error("bad .npy header: {0}")]
    BadHeader(String),
    /// A dtype other than little-endian float32 or float64.
    #[error("unsupported .npy dtype '{0}': only little-endian float32 ('<f4') and float64 ('<f8') are supported")]
    UnsupportedDtype(String),
    /// The array is stored in Fortran (column-major) order.
    #[error("Fortran-order .npy arrays are not supported; save a C-contiguous array")]
    FortranOrder,
    /// The data is shorter or longer than the shape needs.
    #[error(".npy data has {found} bytes, shape {shape:?} needs {expected}")]
    DataSize {
        /// The declared shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: u128,
        /// Bytes present.
        found: usize,
    },
    /// The shape has more elements than [`MAX_ELEMENTS`].
    #[error(
        ".npy shape {shape:?} has {} elements: the limit is {} (1 GiB of f32)",
        count_text(*.elements),
        MAX_ELEMENTS
    )]
    TooLarge {
        /// The declared shape.
        shape: Vec<usize>,
        /// Its number of elements.
        elements: u128,
    },
    /// `write_f32` was given data whose length does not match the shape.
    #[error("shape {shape:?} has {expected} elements but {found} values were given")]
    ShapeMismatch {
        /// The shape.
        shape: Vec<usize>,
        /// Elements the shape has.
        expected: u128,
        /// Values given.
        found: usize,
    },
}

/// Most elements a `.npy` file may hold: 2^28, 1 GiB of f32 (the largest activation a network
/// may have).
pub const MAX_ELEMENTS: u128 = 1 << 28;
/// Most dimensions a `.npy` shape may have (NumPy's own limit is 64; networks take 4).
pub const MAX_DIMS: usize = 32;
/// Longest header accepted, in bytes (NumPy itself reads at most 10000 by default).
pub const MAX_HEADER_LEN: usize = 1 << 16;

/// An element count for messages (`u128::MAX` stands for "overflows").
fn count_text(n: u128) -> String {
    if n == u128::MAX {
        "more than 2^128".into()
    } else {
        n.to_string()
    }
}

/// Reads a C-order `<f4` or `<f8` `.npy` file as f32 values and its shape.
///
/// The header is read and checked first (format, [`MAX_DIMS`], [`MAX_ELEMENTS`], and that the
/// file's length is exactly what the shape needs); only then is the data read, straight into
/// the values.
pub fn read_f32(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let path = path.as_ref();
    let io = |source| NpyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut reader = std::io::BufReader::new(file);
    let (header, header_len) = read_header(&mut reader).map_err(|e| match e {
        HeaderError::Npy(e) => e,
        HeaderError::Io(e) => io(e),
    })?;
    let (count, itemsize) = check_header(&header)?;
    let data_len = file_len.saturating_sub(header_len as u64);
    if u128::from(data_len) != count * itemsize {
        return Err(NpyError::DataSize {
            shape: header.shape,
            expected: count * itemsize,
            found: usize::try_from(data_len).unwrap_or(usize::MAX),
        });
    }
    // `count` ≤ MAX_ELEMENTS, so this allocation is bounded; the file has exactly the bytes.
    let mut values = Vec::with_capacity(count as usize);
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = data_len as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        reader.read_exact(&mut chunk[..n]).map_err(io)?;
        convert(&chunk[..n], itemsize, &mut values);
        left -= n;
    }
    if values.len() as u128 != count {
        // The file changed while it was read.
        return Err(NpyError::DataSize {
            shape: header.shape,
            expected: count * itemsize,
            found: values.len() * itemsize as usize,
        });
    }
    Ok((header.shape, values))
}

/// Parses the bytes of a `.npy` file; see [`read_f32`].
pub fn parse_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let mut reader = bytes;
    let (header, header_len) = read_header(&mut reader).map_err(|e| match e {
        HeaderError::Npy(e) => e,
        HeaderError::Io(_) => NpyError::BadHeader("file ends inside the header".into()),
    })?;
    let data = bytes.get(header_len..).unwrap_or_default();
    let (count, itemsize) = check_header(&header)?;
    if count * itemsize != data.len() as u128 {
        return Err(NpyError::DataSize {
            shape: header.shape,
            expected: count * itemsize,
            found: data.len(),
        });
    }
    let mut values = Vec::with_capacity(count as usize);
    convert(data, itemsize, &mut values);
    Ok((header.shape, values))
}

/// Appends the little-endian `<f4` or `<f8` (by `itemsize`) values of `data` as f32.
fn convert(data: &[u8], itemsize: u128, out: &mut Vec<f32>) {
    if itemsize == 4 {
        out.extend(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))),
        );
    } else {
        out.extend(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
        );
    }
}

enum HeaderError {
    Npy(NpyError),
    Io(std::io::Error),
}

impl From<NpyError> for HeaderError {
    fn from(e: NpyError) -> Self {
        HeaderError::Npy(e)
    }
}

/// Reads the magic string, version, header length and header (at most [`MAX_HEADER_LEN`]
/// bytes) and returns the parsed header and the offset of the data.
fn read_header(r: &mut impl Read) -> Result<(Header, usize), HeaderError> {
    let truncated = || NpyError::BadHeader("file ends inside the header".into());
    let mut start = [0u8; 8];
    if let Err(e) = r.read_exact(&mut start) {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => NpyError::NotNpy.into(),
            _ => HeaderError::Io(e),
        });
    }
    if &start[..6] != MAGIC {
        return Err(NpyError::NotNpy.into());
    }
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => HeaderError::Npy(truncated()),
        _ => HeaderError::Io(e),
    };
    let (major, minor) = (start[6], start[7]);
    let (header_len, prefix) = match (major, minor) {
        (1, 0) => {
            let mut len = [0u8; 2];
            r.read_exact(&mut len).map_err(eof)?;
            (usize::from(u16::from_le_bytes(len)), 10)
        }
        (2 | 3, 0) => {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).map_err(eof)?;
            (
                usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX),
                12,
            )
        }
        _ => return Err(NpyError::UnsupportedVersion(major, minor).into()),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(NpyError::BadHeader(format!(
            "the header claims {header_len} bytes: at most {MAX_HEADER_LEN} are accepted"
        ))
        .into());
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).map_err(eof)?;
    let header = std::str::from_utf8(&header)
        .map_err(|_| NpyError::BadHeader("header is not UTF-8 text".into()))?;
    Ok((parse_header(header)?, prefix + header_len))
}

/// Checks the dtype, order, rank and size of a header; returns the element count and size.
fn check_header(header: &Header) -> Result<(u128, u128), NpyError> {
    let itemsize: u128 = match header.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => return Err(NpyError::UnsupportedDtype(other.to_owned())),
    };
    if header.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    if header.shape.len() > MAX_DIMS {
        return Err(NpyError::BadHeader(format!(
            "shape has {} dimensions: at most {MAX_DIMS} are supported",
            header.shape.len()
        )));
    }
    let count = header
        .shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    match count {
        Some(c) if c <= MAX_ELEMENTS => Ok((c, itemsize)),
        _ => Err(NpyError::TooLarge {
            shape: header.shape.clone(),
            elements: count.unwrap_or(u128::MAX),
        }),
    }
}

/// Writes `data` with `shape` as a version 1.0 `<f4` `.npy` file, atomically.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = to_bytes(shape, data)?;
    let io = |source| NpyError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("not a file path")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file may not exist.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// The bytes of a version 1.0 `<f4` `.npy` file holding `data` with `shape`.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, NpyError> {
    let count = shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    if count != Some(data.len() as u128) {
        return Err(NpyError::ShapeMismatch {
            shape: shape.to_vec(),
            expected: count.unwrap_or(u128::MAX),
            found: data.len(),
        });
    }
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad with spaces so that magic + version + length + header is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| NpyError::BadHeader("shape too long for a version 1.0 header".into()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// The three keys of a `.npy` header.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the header: a Python dict literal with exactly the keys `descr` (a string),
/// `fortran_order` (a bool) and `shape` (a tuple of ints).
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let bad = |msg: &str| NpyError::BadHeader(format!("{msg} in {:?}", text.trim_end()));
    let mut p = Lexer { rest: text.trim() };
    p.expect('{').ok_or_else(|| bad("expected '{'"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if p.eat('}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("expected a quoted key"))?;
        p.expect(':').ok_or_else(|| bad("expected ':'"))?;
        match key {
            "descr" => descr = Some(p.string().ok_or_else(|| bad("descr is not a string"))?),
            "fortran_order" => {
                fortran = Some(
                    p.boolean()
                        .ok_or_else(|| bad("fortran_order is not a bool"))?,
                )
            }
            "shape" => {
                shape = Some(
                    p.tuple()
                        .ok_or_else(|| bad("shape is not a tuple of ints"))?,
                )
            }
            _ => return Err(bad(&format!("unexpected key '{key}'"))),
        }
        if !p.eat(',') {
            p.expect('}').ok_or_else(|| bad("expected ',' or '}'"))?;
            break;
        }
    }
    if !p.rest.is_empty() {
        return Err(bad("text after the dict"));
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("no 'descr'"))?.to_owned(),
        fortran_order: fortran.ok_or_else(|| bad("no 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("no 'shape'"))?,
    })
}

/// A tiny tokenizer over the header text.
struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn string(&mut self) -> Option<&'a str> {
        self.rest = self.rest.trim_start();
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|&q| q == '\'' || q == '"')?;
        let body = self.rest.get(1..)?;
        let end = body.find(quote)?;
        let s = body.get(..end)?;
        self.rest = body.get(end + 1..)?;
        Some(s)
    }

    fn boolean(&mut self) -> Option<bool> {
        self.rest = self.rest.trim_start();
        if let Some(r) = self.rest.strip_prefix("True") {
            self.rest = r;
            Some(true)
        } else if let Some(r) = self.rest.strip_prefix("False") {
            self.rest = r;
            Some(false)
        } else {
            None
        }
    }

    fn tuple(&mut self) -> Option<Vec<usize>> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Some(dims);
            }
            self.rest = self.rest.trim_start();
            let digits = self
                .rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(self.rest.len());
            let (num, r) = self.rest.split_at_checked(digits)?;
            // Python 2 wrote long dims as `3L`.
            self.rest = r.strip_prefix('L').unwrap_or(r);
            dims.push(num.parse().ok()?);
            if !self.eat(',') {
                self.expect(')')?;
                return Some(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 2), }   \n")
            .unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran_order, h.shape),
            ("<f4", false, vec![1, 3, 2])
        );
        let h = parse_header("{'shape': (5,), 'descr': \"<f8\", 'fortran_order': True}").unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran_order, h.shape),
            ("<f8", true, vec![5])
        );
        assert_eq!(
            parse_header("{'descr':'<f4','fortran_order':False,'shape':()}")
                .unwrap()
                .shape,
            Vec::<usize>::new()
        );
        for bad in [
            "",
            "{",
            "{'descr': '<f4'}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1 3)}",
            "{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,)}",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} extra",
        ] {
            assert!(
                matches!(parse_header(bad), Err(NpyError::BadHeader(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_is_aligned() {
        for shape in [vec![], vec![3], vec![1, 3, 96, 64]] {
            let n = shape.iter().product();
            let bytes = to_bytes(&shape, &vec![0.5; n]).unwrap();
            let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            assert_eq!(parse_f32(&bytes).unwrap(), (shape, vec![0.5; n]));
        }
    }
}
