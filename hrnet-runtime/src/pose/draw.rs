//! Drawing keypoints and the skeleton over an image, and reading and writing images.
//!
//! Plain rasterization into an [`image::RgbImage`], no extra crates: each skeleton edge is a
//! capsule (all pixels within `thickness / 2` of the segment), each joint a filled disc. Joints
//! below the score threshold, and edges touching them, are skipped.

use std::path::Path;

use super::decode::Keypoint;
use super::skeleton::Dataset;
use super::PoseError;

/// Edge colours, cycled over the skeleton's edges.
const PALETTE: [[u8; 3]; 6] = [
    [255, 128, 0],
    [51, 153, 255],
    [0, 255, 0],
    [255, 51, 255],
    [255, 255, 0],
    [0, 255, 255],
];

/// Joint colour.
const JOINT: [u8; 3] = [255, 0, 0];

/// How to draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrawStyle {
    /// Line thickness in pixels; joint discs get twice this diameter.
    pub thickness: f64,
    /// Joints whose score is below this are not drawn (nor their edges).
    pub min_score: f64,
}

impl DrawStyle {
    /// A style scaled to the image: thickness ≈ 1/100 of the smaller side (at least 2 px), and a
    /// score threshold of 0 (the official visualizer draws everything with a positive maximum).
    pub fn for_image(img: &image::RgbImage) -> DrawStyle {
        let side = img.width().min(img.height()) as f64;
        DrawStyle {
            thickness: (side / 100.0).max(2.0),
            min_score: 0.0,
        }
    }
}

/// Draws one person's keypoints and the `dataset`'s skeleton onto `img`. Keypoints outside the
/// image are clipped; a keypoint list shorter than the skeleton needs draws what it can.
pub fn draw_keypoints(
    img: &mut image::RgbImage,
    keypoints: &[Keypoint],
    dataset: Dataset,
    style: &DrawStyle,
) {
    let visible = |k: &Keypoint| k.score >= style.min_score && k.x.is_finite() && k.y.is_finite();
    for (i, &(a, b)) in dataset.skeleton().iter().enumerate() {
        if let (Some(ka), Some(kb)) = (keypoints.get(a), keypoints.get(b)) {
            if visible(ka) && visible(kb) {
                capsule(
                    img,
                    (ka.x, ka.y),
                    (kb.x, kb.y),
                    style.thickness / 2.0,
                    PALETTE[i % PALETTE.len()],
                );
            }
        }
    }
    for k in keypoints.iter().filter(|k| visible(k)) {
        capsule(img, (k.x, k.y), (k.x, k.y), style.thickness, JOINT);
    }
}

/// Fills every pixel whose center is within `r` of the segment `p`–`q`.
fn capsule(img: &mut image::RgbImage, p: (f64, f64), q: (f64, f64), r: f64, colour: [u8; 3]) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let x0 = (p.0.min(q.0) - r).floor().max(0.0);
    let x1 = (p.0.max(q.0) + r).ceil().min(w - 1.0);
    let y0 = (p.1.min(q.1) - r).floor().max(0.0);
    let y1 = (p.1.max(q.1) + r).ceil().min(h - 1.0);
    if !(x0 <= x1 && y0 <= y1) {
        return;
    }
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let len2 = dx * dx + dy * dy;
    for y in y0 as u32..=y1 as u32 {
        for x in x0 as u32..=x1 as u32 {
            let (px, py) = (f64::from(x), f64::from(y));
            let t = if len2 > 0.0 {
                (((px - p.0) * dx + (py - p.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (p.0 + t * dx - px, p.1 + t * dy - py);
            if ex * ex + ey * ey <= r * r {
                img.put_pixel(x, y, image::Rgb(colour));
            }
        }
    }
}

/// Largest image side [`load_rgb`] accepts: the warp's limit (OpenCV's 16-bit coordinates).
pub const MAX_IMAGE_SIDE: u32 = 32767;

/// Most memory [`load_rgb`] lets an image take, in bytes: the decoded pixels, their RGB
/// conversion and one more RGB copy (a canvas to draw on) together. 1 GiB: a 100-megapixel
/// photo fits.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Bytes loading a `width × height` image decoded as `color` takes by [`MAX_IMAGE_BYTES`]'
/// count: the decoded pixels, the RGB conversion (none when it decodes as RGB already), and
/// one RGB copy.
pub fn image_bytes(width: u32, height: u32, color: image::ColorType) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let decoded = pixels * u64::from(color.bytes_per_pixel());
    let rgb = pixels * 3;
    let conversion = if color == image::ColorType::Rgb8 {
        0
    } else {
        rgb
    };
    decoded + conversion + rgb
}

/// Reads a JPEG or PNG file as 8-bit RGB. With the `jpeg` feature (default), JPEG files give
/// exactly OpenCV's pixels ([`super::jpeg`]); other formats go through the `image` crate.
///
/// The size in the file's header is checked against [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_BYTES`] before any pixel is decoded: a small file can declare a huge image.
///
/// Errors: [`PoseError::Image`] naming the file when it cannot be opened or decoded,
/// [`PoseError::ImageFileTooLarge`] when it declares a size over the limits.
pub fn load_rgb(path: &Path) -> Result<image::RgbImage, PoseError> {
    #[cfg(feature = "jpeg")]
    if let Some(img) = super::jpeg::load_if_jpeg(path)? {
        return Ok(img);
    }
    let io_err = |e| PoseError::Image {
        path: path.to_path_buf(),
        source: image::ImageError::IoError(e),
    };
    read_rgb(image::ImageReader::open(path).map_err(io_err)?, path)
}

/// [`load_rgb`] for a file's bytes already in memory (errors name the path `<memory>`).
pub fn decode_rgb(bytes: &[u8]) -> Result<image::RgbImage, PoseError> {
    #[cfg(feature = "jpeg")]
    if super::jpeg::is_jpeg(bytes) {
        return super::jpeg::decode_rgb(bytes)
            .map_err(|e| super::jpeg::as_pose_error(Path::new("<memory>"), e));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    read_rgb(reader, Path::new("<memory>"))
}

fn read_rgb<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    path: &Path,
) -> Result<image::RgbImage, PoseError> {
    let image_err = |source| PoseError::Image {
        path: path.to_path_buf(),
        source,
    };
    let io_err = |e| image_err(image::ImageError::IoError(e));
    let mut reader = reader.with_guessed_format().map_err(io_err)?;
    // Reads the header only; the limits are checked below, with the size in the message.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(image_err)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let color = image::ImageDecoder::color_type(&decoder);
    if width == 0 || height == 0 {
        return Err(PoseError::EmptyImage);
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(too_large(
            path,
            (width, height),
            format!("is larger than {MAX_IMAGE_SIDE} pixels on a side"),
        ));
    }
    let bytes = image_bytes(width, height, color);
    if bytes > MAX_IMAGE_BYTES {
        return Err(too_large(
            path,
            (width, height),
            format!(
                "({color:?}) needs {bytes} bytes to load as RGB (pixels, RGB conversion and a copy): the limit is {MAX_IMAGE_BYTES}"
            ),
        ));
    }
    // The decoder's own allocations stay within the same budget.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    image::ImageDecoder::set_limits(&mut decoder, limits).map_err(image_err)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(image_err)?;
    Ok(img.into_rgb8())
}

fn too_large(path: &Path, (w, h): (u32, u32), what: String) -> PoseError {
    PoseError::ImageFileTooLarge {
        path: path.to_path_buf(),
        size: format!("{w}x{h} "),
        what,
    }
}

/// Writes an RGB image as PNG.
///
/// Errors: [`PoseError::Image`] naming the file.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<(), PoseError> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| PoseError::Image {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_and_dots_inside_and_clips_outside() {
        let mut img = image::RgbImage::new(40, 40);
        let kp = |x, y| Keypoint { x, y, score: 1.0 };
        let mut pts = vec![
            Keypoint {
                x: -100.0,
                y: -100.0,
                score: 0.0
            };
            17
        ];
        pts[5] = kp(5.0, 20.0);
        pts[6] = kp(35.0, 20.0);
        let style = DrawStyle {
            thickness: 3.0,
            min_score: 0.5,
        };
        draw_keypoints(&mut img, &pts, Dataset::Coco, &style);
        // The shoulder line (5, 6) crosses the middle; dots at both ends.
        assert_eq!(img.get_pixel(20, 20).0, PALETTE[7 % PALETTE.len()]);
        assert_eq!(img.get_pixel(5, 20).0, JOINT);
        assert_eq!(img.get_pixel(20, 30).0, [0, 0, 0]);
        // A low score hides the joint and its edges.
        let mut img2 = image::RgbImage::new(40, 40);
        pts[6].score = 0.1;
        draw_keypoints(&mut img2, &pts, Dataset::Coco, &style);
        assert_eq!(img2.get_pixel(20, 20).0, [0, 0, 0]);
        assert_eq!(img2.get_pixel(5, 20).0, JOINT);
    }
}
