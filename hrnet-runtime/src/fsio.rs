//! Opening input files safely: only regular files, never blocking, within a size limit.
//!
//! Every path a user hands in (a config, a checkpoint, an `.npy` input, an image) goes through
//! [`open_regular`] or [`read_regular`]. Reading `/dev/zero` would otherwise go on until memory
//! runs out, and opening a FIFO would block forever. The checks:
//! 1. `stat` the path (following symlinks): anything but a regular file is refused by kind;
//! 2. open it with `O_NONBLOCK`, so a FIFO swapped in after the check cannot block the open;
//! 3. `fstat` the open file and check again (kind and size), so what is read is what was
//!    checked;
//! 4. [`read_regular`] reads at most `max_bytes + 1` bytes, so a file that grows while it is
//!    read is still refused.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The file could not be inspected, opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path names a directory, a device, a FIFO or a socket.
    #[error("{path} is not a regular file (it is a {kind})")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is: `directory`, `FIFO`, `character device`, …
        kind: &'static str,
    },
    /// The file is larger than this kind of input may be.
    #[error("{path} has {size} bytes, more than the {max} bytes {what} may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; it may still be growing).
        size: u64,
        /// The limit.
        max: u64,
        /// What the file was read as, e.g. `a config`.
        what: &'static str,
    },
}

/// A limit on an input's size, with the name of what is being read for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Most bytes accepted.
    pub max: u64,
    /// What the file is read as, e.g. `a config` (used in [`FsError::TooLarge`]).
    pub what: &'static str,
}

impl Limit {
    /// No size limit (checkpoints: large, and memory-mapped rather than read).
    pub const NONE: Limit = Limit {
        max: u64::MAX,
        what: "an input",
    };
}

/// What a file type is called in messages.
fn kind_name(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

fn check(path: &Path, meta: &std::fs::Metadata, limit: Limit) -> Result<(), FsError> {
    if !meta.is_file() {
        return Err(FsError::NotRegular {
            path: path.into(),
            kind: kind_name(meta.file_type()),
        });
    }
    if meta.len() > limit.max {
        return Err(FsError::TooLarge {
            path: path.into(),
            size: meta.len(),
            max: limit.max,
            what: limit.what,
        });
    }
    Ok(())
}

/// Opens `path` for reading if it is a regular file of at most `limit.max` bytes.
///
/// Symlinks are followed (a link to a regular file is fine); the file is opened without
/// blocking and checked again after opening, so a FIFO or device swapped in between the checks
/// is refused too.
pub fn open_regular(path: &Path, limit: Limit) -> Result<File, FsError> {
    let io = |source| FsError::Io {
        path: path.into(),
        source,
    };
    check(path, &std::fs::metadata(path).map_err(io)?, limit)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    check(path, &file.metadata().map_err(io)?, limit)?;
    Ok(file)
}

/// Reads the whole of `path` if it is a regular file of at most `limit.max` bytes.
pub fn read_regular(path: &Path, limit: Limit) -> Result<Vec<u8>, FsError> {
    let file = open_regular(path, limit)?;
    let expected = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    file.take(limit.max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FsError::Io {
            path: path.into(),
            source,
        })?;
    if bytes.len() as u64 > limit.max {
        return Err(FsError::TooLarge {
            path: path.into(),
            size: bytes.len() as u64,
            max: limit.max,
            what: limit.what,
        });
    }
    Ok(bytes)
}

/// A regular file's bytes, memory-mapped (an empty file maps to an empty slice).
#[derive(Debug)]
pub struct Mapped(Option<memmap2::Mmap>);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Memory-maps `path` read-only if it is a regular file of at most `limit.max` bytes (see
/// [`open_regular`]): for checkpoints, which are too large to copy in first.
pub fn map_regular(path: &Path, limit: Limit) -> Result<Mapped, FsError> {
    let file = open_regular(path, limit)?;
    let io = |source| FsError::Io {
        path: path.into(),
        source,
    };
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(Mapped(None));
    }
    // SAFETY: the map is read-only. As with every memory-mapped reader, another process
    // truncating or rewriting the file while it is mapped is outside what this function can
    // guard against; callers bounds-check every read against the map's length, so a file that
    // was malformed when mapped is still only an error.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Mapped(Some(map)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    const SMALL: Limit = Limit {
        max: 8,
        what: "a test input",
    };

    #[test]
    fn reads_regular_files_and_links_to_them() {
        let d = dir();
        let f = d.path().join("a");
        std::fs::write(&f, b"12345678").unwrap();
        assert_eq!(read_regular(&f, SMALL).unwrap(), b"12345678");
        #[cfg(unix)]
        {
            let l = d.path().join("link");
            std::os::unix::fs::symlink(&f, &l).unwrap();
            assert_eq!(read_regular(&l, SMALL).unwrap(), b"12345678");
        }
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(map_regular(&empty, Limit::NONE).unwrap().is_empty());
        assert_eq!(&*map_regular(&f, Limit::NONE).unwrap(), b"12345678");
    }

    #[test]
    fn refuses_large_files_directories_and_devices() {
        let d = dir();
        let f = d.path().join("big");
        std::fs::write(&f, b"123456789").unwrap();
        let e = read_regular(&f, SMALL).unwrap_err().to_string();
        assert!(
            e.contains("has 9 bytes, more than the 8 bytes a test input may have"),
            "{e}"
        );
        let e = read_regular(d.path(), SMALL).unwrap_err().to_string();
        assert!(
            e.contains("is not a regular file (it is a directory)"),
            "{e}"
        );
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero"), Limit::NONE)
                .unwrap_err()
                .to_string();
            assert!(e.contains("(it is a character device)"), "{e}");
        }
    }

    /// A FIFO is refused at once: neither the check nor the open waits for a writer.
    #[cfg(unix)]
    #[test]
    fn refuses_a_fifo_without_blocking() {
        let d = dir();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = map_regular(&fifo, Limit::NONE).unwrap_err().to_string();
        assert!(e.contains("(it is a FIFO)"), "{e}");
    }
}
