//! JPEG decoding identical to OpenCV's: the same pixels `cv2.imread(path, cv2.IMREAD_COLOR |
//! cv2.IMREAD_IGNORE_ORIENTATION)` returns (in RGB order), as the official pipeline reads images.
//!
//! OpenCV decodes JPEG with libjpeg-turbo: integer IDCT (`JDCT_ISLOW`), fancy (triangle-filter)
//! chroma upsampling, its fixed-point YCbCr → RGB. Pure-Rust decoders differ from it in a few
//! percent of the bytes by 1–6 levels (measured: zune-jpeg 0.5, which the `image` crate uses,
//! and jpeg-decoder 0.3), so this module decodes with libjpeg-turbo's own C code as mozjpeg ships
//! it (the `mozjpeg` crate builds it with `cc`; its SIMD, which needs nasm, stays off, and
//! libjpeg-turbo's SIMD paths are bit-exact with its C paths). `tests/jpeg.rs` checks equality
//! with OpenCV 4.10 on baseline 4:2:0, 4:2:2, 4:4:0, 4:4:4, 4:1:1, progressive, grayscale,
//! restart-marker and EXIF files.
//!
//! - EXIF orientation is ignored, as the official `IMREAD_IGNORE_ORIENTATION` does (a plain
//!   `cv2.imread` would rotate).
//! - Grayscale files are replicated into the three channels (as OpenCV does).
//! - CMYK/YCCK files are refused with an error (OpenCV converts them with its own formula).
//! - The header is read first; images over [`MAX_SIDE`] pixels per side or [`MAX_PIXELS`] in all
//!   are refused before anything is decoded.
//! - libjpeg reports a corrupt file by unwinding out of its error handler (the `mozjpeg` crate's
//!   way of leaving C); the unwind is caught here and becomes a [`JpegError`] without a panic
//!   message. Programs built with `panic = "abort"` abort on such a file instead.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Largest width or height: the warp's limit (OpenCV's 16-bit coordinates).
pub const MAX_SIDE: usize = 32767;

/// Largest number of pixels (768 MiB of RGB).
pub const MAX_PIXELS: usize = 1 << 28;

/// Why a JPEG could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// Dimensions over [`MAX_SIDE`] or [`MAX_PIXELS`], found in the header.
    #[error("JPEG of {width}x{height} pixels is too large (at most {MAX_SIDE} per side and {MAX_PIXELS} pixels)")]
    TooLarge {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// A colour space that is not grayscale, YCbCr or RGB.
    #[error("JPEG colour space {0} is not supported (grayscale, YCbCr and RGB are)")]
    ColorSpace(String),
    /// What libjpeg said about a corrupt or truncated file.
    #[error("{0}")]
    Corrupt(String),
}

/// Whether `data` starts like a JPEG file (SOI followed by a marker).
pub fn is_jpeg(data: &[u8]) -> bool {
    data.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a JPEG file's bytes to 8-bit RGB, pixel for pixel as OpenCV 4.10 does.
///
/// Errors: [`JpegError`]; never panics.
pub fn decode_rgb(data: &[u8]) -> Result<image::RgbImage, JpegError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| decode_unguarded(data)));
    match outcome {
        Ok(result) => result,
        Err(payload) => Err(JpegError::Corrupt(unwind_message(payload))),
    }
}

fn unwind_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(msg) => *msg,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(msg) => (*msg).to_string(),
            Err(_) => "libjpeg failed".to_string(),
        },
    }
}

fn decode_unguarded(data: &[u8]) -> Result<image::RgbImage, JpegError> {
    use mozjpeg::ColorSpace;
    let corrupt = |e: std::io::Error| JpegError::Corrupt(e.to_string());
    let header = mozjpeg::Decompress::new_mem(data).map_err(corrupt)?;
    let (width, height) = header.size();
    check_size(width, height)?;
    match header.color_space() {
        ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => {}
        other => return Err(JpegError::ColorSpace(format!("{other:?}"))),
    }
    let mut started = header.rgb().map_err(corrupt)?;
    let (w, h) = (started.width(), started.height());
    check_size(w, h)?;
    let mut pixels = vec![0u8; w * h * 3];
    started.read_scanlines_into(&mut pixels).map_err(corrupt)?;
    started.finish().map_err(corrupt)?;
    image::RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| JpegError::Corrupt("decoded size mismatch".into()))
}

fn check_size(width: usize, height: usize) -> Result<(), JpegError> {
    if width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS {
        return Err(JpegError::TooLarge { width, height });
    }
    Ok(())
}

/// Reads `path` and decodes it here when it is a JPEG (by its first bytes, not its name);
/// `Ok(None)` for any other file, which the caller decodes otherwise.
///
/// Errors: the file cannot be read, or is a JPEG that cannot be decoded.
pub fn load_if_jpeg(path: &Path) -> Result<Option<image::RgbImage>, super::PoseError> {
    let image_error = |source| super::PoseError::Image {
        path: path.to_path_buf(),
        source,
    };
    let io_error = |e| image_error(image::ImageError::IoError(e));
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut data = Vec::new();
    (&mut file)
        .take(3)
        .read_to_end(&mut data)
        .map_err(io_error)?;
    if !is_jpeg(&data) {
        return Ok(None);
    }
    // At most the bytes an image may take in memory: a JPEG file is smaller than its pixels.
    (&mut file)
        .take(super::MAX_IMAGE_BYTES)
        .read_to_end(&mut data)
        .map_err(io_error)?;
    decode_rgb(&data)
        .map(Some)
        .map_err(|e| as_pose_error(path, e))
}

/// A JPEG decoding error as the pose pipeline reports image errors (naming the file).
pub(crate) fn as_pose_error(path: &Path, e: JpegError) -> super::PoseError {
    let hint = image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg);
    super::PoseError::Image {
        path: path.to_path_buf(),
        source: image::ImageError::Decoding(image::error::DecodingError::new(hint, e)),
    }
}
