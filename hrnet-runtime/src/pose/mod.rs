//! The official top-down pose pipeline: box to crop, normalization, heatmap decoding.
//!
//! A pose network maps a person crop to heatmaps; people want keypoints in the image. This module
//! is the official pipeline around the network (deep-high-resolution-net.pytorch's validation
//! path), reproduced to the bit where it can be:
//!
//! ```text
//! box ─► CenterScale::from_box ─► get_affine_transform ─► warp_affine_linear ─► normalize_rgb
//!    (pad to aspect, ×1.25, /200)   (3 points, OpenCV LU)   (OpenCV fixed point)  (ImageNet, CHW)
//!  ─► model ─► [flip test: flip_width, model, flip_average] ─► decode_heatmaps ─► keypoints
//! ```
//!
//! [`PoseEstimator`] runs all of it for any engine implementing [`HeatmapModel`] (the reference
//! interpreter, a generated model, the JIT), with buffers allocated once; every step is also a
//! free function. [`draw_keypoints`] renders the result, [`load_rgb`] and [`save_png`] do the I/O.
//!
//! ```no_run
//! use hrnet_runtime::pose::{self, BoxXywh, HeatmapModel, ModelError, PoseEstimator};
//!
//! /// Any engine: wrap it so the pipeline can call it.
//! struct MyEngine;
//! impl HeatmapModel for MyEngine {
//!     fn input_size(&self) -> (usize, usize) { (192, 256) } // IMAGE_SIZE, [width, height]
//!     fn num_joints(&self) -> usize { 17 }                  // COCO
//!     fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
//!         heatmaps.fill(0.0); // run the network here: 1×3×256×192 in, 1×17×64×48 out
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), pose::PoseError> {
//! let mut image = pose::load_rgb("person.jpg".as_ref())?;
//! let mut estimator = PoseEstimator::new(MyEngine)?;
//! let people = estimator.estimate(&image, &[BoxXywh::new(100.0, 50.0, 120.0, 300.0)], true)?;
//! let style = pose::DrawStyle::for_image(&image);
//! for person in &people {
//!     pose::draw_keypoints(&mut image, &person.keypoints, estimator.dataset(), &style);
//! }
//! pose::save_png(&image, "person_pose.png".as_ref())?;
//! # Ok(())
//! # }
//! ```
//!
//! - [`transform`]: boxes, center/scale, the affine transform.
//! - [`warp`]: the bit-exact `cv2.warpAffine` for 8-bit images.
//! - [`mod@preprocess`]: crop + normalization.
//! - [`decode`]: flip test and heatmap decoding.
//! - [`skeleton`]: COCO and MPII layouts (flip pairs, skeletons).
//! - [`draw`]: rendering and image files.
//! - [`progress`]: a progress line (images, people/s, ETA) for runs over many images.
//! - [`jpeg`] (feature `jpeg`): JPEG decoding identical to OpenCV's (libjpeg-turbo's C code).
//! - [`coco`], [`coco_eval`] (feature `coco`): COCO detections in, keypoint results out with the
//!   official rescoring and OKS-NMS, and the COCO keypoint evaluation (pycocotools' numbers).

#[cfg(feature = "coco")]
pub mod coco;
#[cfg(feature = "coco")]
pub mod coco_eval;
pub mod decode;
#[cfg(feature = "image")]
pub mod draw;
#[cfg(feature = "jpeg")]
pub mod jpeg;
pub mod preprocess;
pub mod progress;
pub mod skeleton;
pub mod transform;
pub mod warp;

#[cfg(feature = "image")]
use std::path::PathBuf;

pub use decode::{decode_heatmaps, flip_average, HeatmapShape, Keypoint};
#[cfg(feature = "image")]
pub use draw::{
    decode_rgb, draw_keypoints, image_bytes, load_rgb, save_png, DrawStyle, MAX_IMAGE_BYTES,
    MAX_IMAGE_SIDE,
};
#[cfg(feature = "image")]
pub use preprocess::{crop_person, preprocess};
pub use preprocess::{flip_width, normalize_rgb};
pub use skeleton::Dataset;
pub use transform::{get_affine_transform, Affine2x3, BoxXywh, CenterScale};
pub use warp::{warp_affine_linear, ImageU8};

/// The error a [`HeatmapModel`] reports.
pub type ModelError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in the pose pipeline. None of it panics.
#[derive(Debug, thiserror::Error)]
pub enum PoseError {
    /// A box with a non-finite coordinate, a non-positive width or height, or a size whose
    /// crop scale overflows.
    #[error(
        "invalid person box x={} y={} w={} h={}: {problem}",
        transform::readable(*x),
        transform::readable(*y),
        transform::readable(*w),
        transform::readable(*h)
    )]
    InvalidBox {
        /// What is wrong, naming the field (`the width is not > 0`).
        problem: &'static str,
        /// Left edge.
        x: f64,
        /// Top edge.
        y: f64,
        /// Width.
        w: f64,
        /// Height.
        h: f64,
    },
    /// A zero network input (or crop) size.
    #[error("invalid network input size {width}x{height}")]
    InvalidInputSize {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// A zero heatmap size.
    #[error("invalid heatmap size {width}x{height}")]
    InvalidHeatmapSize {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// A model that predicts no joint.
    #[error("the model predicts no joint")]
    NoJoints,
    /// An image with no pixel.
    #[error("the image is empty (0 pixels)")]
    EmptyImage,
    /// An image larger than OpenCV's 16-bit coordinates allow.
    #[error("image {width}x{height} is too large: at most 32767 pixels per side")]
    ImageTooLarge {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// An image with a channel count the warp does not handle.
    #[error("images with {0} channels are not supported (1 to 4)")]
    Channels(usize),
    /// A buffer of the wrong length.
    #[error("{what} has {got} values, expected {expected}")]
    BufferSize {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A center/scale whose three-point system is singular (zero or non-finite scale).
    #[error("degenerate crop transform for center {center:?}, scale {scale:?}")]
    DegenerateTransform {
        /// Center.
        center: [f32; 2],
        /// Scale.
        scale: [f32; 2],
    },
    /// A flip pair naming a joint the heatmaps do not have.
    #[error("flip pair ({a}, {b}) is out of range for {joints} joints")]
    FlipPair {
        /// First joint.
        a: usize,
        /// Second joint.
        b: usize,
        /// Number of joints.
        joints: usize,
    },
    /// Flip test asked for a keypoint layout without known left/right pairs.
    #[error(
        "flip test needs left/right joint pairs, known only for COCO (17 joints) and MPII (16); \
         this model has {num_joints} joints"
    )]
    FlipUnsupported {
        /// Number of joints.
        num_joints: usize,
    },
    /// The model's joint count differs from the chosen dataset's.
    #[error("the model predicts {model} joints but the dataset layout has {dataset}")]
    JointMismatch {
        /// Joints of the model.
        model: usize,
        /// Joints of the dataset.
        dataset: usize,
    },
    /// The model failed.
    #[error("the pose model failed: {0}")]
    Model(#[source] ModelError),
    /// An image file whose header declares an image over [`draw::MAX_IMAGE_SIDE`] or
    /// [`draw::MAX_IMAGE_BYTES`]; nothing was decoded.
    #[error("image file {path}: the image {size}{what}")]
    #[cfg(feature = "image")]
    ImageFileTooLarge {
        /// The file.
        path: PathBuf,
        /// `WxH ` when known.
        size: String,
        /// What is over which limit.
        what: String,
    },
    /// An image file that cannot be read, decoded or written.
    #[cfg(feature = "image")]
    #[error("image file {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the `image` crate said.
        #[source]
        source: image::ImageError,
    },
}

/// A pose network as the pipeline sees it: one `1×3×H×W` normalized RGB crop in, `1×J×h×w`
/// heatmaps out. Implement it for any engine.
pub trait HeatmapModel {
    /// Network input `(width, height)` (the config's `IMAGE_SIZE`).
    fn input_size(&self) -> (usize, usize);

    /// Number of joints `J` (the config's `NUM_JOINTS`).
    fn num_joints(&self) -> usize;

    /// Heatmap `(width, height)`; HRNet's is a quarter of the input size.
    fn heatmap_size(&self) -> (usize, usize) {
        let (w, h) = self.input_size();
        (w / 4, h / 4)
    }

    /// Runs the network: `input` holds `3·H·W` values, `heatmaps` receives `J·h·w`.
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError>;

    /// Runs the network on `n` crops at once: `inputs` holds `n` inputs of `3·H·W` values one
    /// after the other, `heatmaps` receives their `n` heatmaps of `J·h·w`, in the same order,
    /// each what [`HeatmapModel::run`] makes of its crop. The default runs them one by one;
    /// an engine that runs a batch faster (several people side by side) overrides it.
    ///
    /// Errors: buffers that do not hold the same whole number (≥ 1) of inputs and heatmaps,
    /// a model failure.
    fn run_batch(&mut self, inputs: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        let (w, h) = self.input_size();
        let (hw, hh) = self.heatmap_size();
        let x_len = w.saturating_mul(h).saturating_mul(3);
        let y_len = hw.saturating_mul(hh).saturating_mul(self.num_joints());
        let n = batch_len(inputs.len(), heatmaps.len(), x_len, y_len)?;
        let (x_len, y_len) = (inputs.len() / n, heatmaps.len() / n);
        for (x, y) in inputs
            .chunks_exact(x_len)
            .zip(heatmaps.chunks_exact_mut(y_len))
        {
            self.run(x, y)?;
        }
        Ok(())
    }
}

/// Most crops [`run_in_batches`] hands to the network at once.
pub const MAX_BATCH: usize = 64;

/// The number of crops in `inputs` floats of input and `heatmaps` floats of heatmaps, `x_len`
/// and `y_len` a crop: an error unless both hold the same whole number, at least one.
fn batch_len(
    inputs: usize,
    heatmaps: usize,
    x_len: usize,
    y_len: usize,
) -> Result<usize, ModelError> {
    if x_len == 0 || y_len == 0 || inputs == 0 || !inputs.is_multiple_of(x_len) {
        return Err(format!(
            "a batch of crops has {inputs} values, not a whole number (at least 1) of {x_len}-value inputs"
        )
        .into());
    }
    let n = inputs / x_len;
    if n.checked_mul(y_len) != Some(heatmaps) {
        return Err(format!(
            "a batch of {n} crops needs {n} × {y_len} heatmap values, the buffer has {heatmaps}"
        )
        .into());
    }
    Ok(n)
}

/// Cuts `inputs` (crops of `x_len` values, one after the other) and `heatmaps` (of `y_len`)
/// into batches of at most [`MAX_BATCH`] crops and hands each to `run` as slices, without
/// allocating: what a [`HeatmapModel::run_batch`] built on a `run_batch(&[&[f32]], &mut
/// [&mut [f32]])` (a generated model's) does.
///
/// Errors: buffers that do not hold the same whole number (≥ 1) of crops; `run`'s error.
pub fn run_in_batches<E>(
    inputs: &[f32],
    heatmaps: &mut [f32],
    x_len: usize,
    y_len: usize,
    mut run: impl FnMut(&[&[f32]], &mut [&mut [f32]]) -> Result<(), E>,
) -> Result<(), ModelError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    batch_len(inputs.len(), heatmaps.len(), x_len, y_len)?;
    let xs_all = inputs.chunks(MAX_BATCH * x_len);
    let ys_all = heatmaps.chunks_mut(MAX_BATCH * y_len);
    for (xs_flat, ys_flat) in xs_all.zip(ys_all) {
        let mut xs: [&[f32]; MAX_BATCH] = [&[]; MAX_BATCH];
        let mut ys: [&mut [f32]; MAX_BATCH] = std::array::from_fn(|_| Default::default());
        let mut n = 0;
        for ((x, y), (xs, ys)) in xs_flat
            .chunks_exact(x_len)
            .zip(ys_flat.chunks_exact_mut(y_len))
            .zip(xs.iter_mut().zip(ys.iter_mut()))
        {
            (*xs, *ys) = (x, y);
            n += 1;
        }
        run(&xs[..n], &mut ys[..n]).map_err(|e| Box::new(e) as ModelError)?;
    }
    Ok(())
}

impl<M: HeatmapModel + ?Sized> HeatmapModel for &mut M {
    fn input_size(&self) -> (usize, usize) {
        (**self).input_size()
    }
    fn num_joints(&self) -> usize {
        (**self).num_joints()
    }
    fn heatmap_size(&self) -> (usize, usize) {
        (**self).heatmap_size()
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        (**self).run(input, heatmaps)
    }
    fn run_batch(&mut self, inputs: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        (**self).run_batch(inputs, heatmaps)
    }
}

impl<M: HeatmapModel + ?Sized> HeatmapModel for Box<M> {
    fn input_size(&self) -> (usize, usize) {
        (**self).input_size()
    }
    fn num_joints(&self) -> usize {
        (**self).num_joints()
    }
    fn heatmap_size(&self) -> (usize, usize) {
        (**self).heatmap_size()
    }
    fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        (**self).run(input, heatmaps)
    }
    fn run_batch(&mut self, inputs: &[f32], heatmaps: &mut [f32]) -> Result<(), ModelError> {
        (**self).run_batch(inputs, heatmaps)
    }
}

/// One person's result.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonKeypoints {
    /// The box it came from.
    pub bbox: BoxXywh,
    /// The crop's center and scale.
    pub center_scale: CenterScale,
    /// One keypoint per joint, in image pixels.
    pub keypoints: Vec<Keypoint>,
}

/// The whole top-down pipeline around a [`HeatmapModel`], with every buffer allocated once: after
/// construction, [`PoseEstimator::estimate_into`] allocates nothing (given an output vector that
/// has held as many people before).
#[cfg(feature = "image")]
pub struct PoseEstimator<M> {
    model: M,
    dataset: Dataset,
    input_w: usize,
    input_h: usize,
    shape: HeatmapShape,
    crop: Vec<u8>,
    input: Vec<f32>,
    input_flipped: Vec<f32>,
    heatmaps: Vec<f32>,
    heatmaps_flipped: Vec<f32>,
    average: Vec<f64>,
    /// [`PoseEstimator::estimate_batch_into`]'s crops and heatmaps (the flipped ones after
    /// the plain ones); they only grow.
    batch_inputs: Vec<f32>,
    batch_heatmaps: Vec<f32>,
}

#[cfg(feature = "image")]
impl<M> std::fmt::Debug for PoseEstimator<M> {
    /// Shows the configuration, not the model (engines need not implement `Debug`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoseEstimator")
            .field("dataset", &self.dataset)
            .field("input_size", &(self.input_w, self.input_h))
            .field("heatmaps", &self.shape)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "image")]
impl<M: HeatmapModel> PoseEstimator<M> {
    /// An estimator whose keypoint layout follows the joint count ([`Dataset::from_num_joints`]).
    ///
    /// Errors: zero input or heatmap size, no joint.
    pub fn new(model: M) -> Result<Self, PoseError> {
        let dataset = Dataset::from_num_joints(model.num_joints());
        Self::with_dataset(model, dataset)
    }

    /// An estimator with an explicit keypoint layout.
    ///
    /// Errors: as [`PoseEstimator::new`], and a layout whose joint count differs from the model's.
    pub fn with_dataset(model: M, dataset: Dataset) -> Result<Self, PoseError> {
        let (input_w, input_h) = model.input_size();
        let (hm_w, hm_h) = model.heatmap_size();
        let joints = model.num_joints();
        if input_w == 0 || input_h == 0 {
            return Err(PoseError::InvalidInputSize {
                width: input_w,
                height: input_h,
            });
        }
        if hm_w == 0 || hm_h == 0 {
            return Err(PoseError::InvalidHeatmapSize {
                width: hm_w,
                height: hm_h,
            });
        }
        if joints == 0 {
            return Err(PoseError::NoJoints);
        }
        if dataset.num_joints() != joints {
            return Err(PoseError::JointMismatch {
                model: joints,
                dataset: dataset.num_joints(),
            });
        }
        let shape = HeatmapShape {
            joints,
            height: hm_h,
            width: hm_w,
        };
        let plane = input_w
            .checked_mul(input_h)
            .filter(|p| p.checked_mul(3).is_some())
            .ok_or(PoseError::InvalidInputSize {
                width: input_w,
                height: input_h,
            })?;
        if hm_w
            .checked_mul(hm_h)
            .and_then(|n| n.checked_mul(joints))
            .is_none()
        {
            return Err(PoseError::InvalidHeatmapSize {
                width: hm_w,
                height: hm_h,
            });
        }
        Ok(PoseEstimator {
            model,
            dataset,
            input_w,
            input_h,
            shape,
            crop: vec![0; 3 * plane],
            input: vec![0.0; 3 * plane],
            input_flipped: vec![0.0; 3 * plane],
            heatmaps: vec![0.0; shape.len()],
            heatmaps_flipped: vec![0.0; shape.len()],
            average: vec![0.0; shape.len()],
            batch_inputs: Vec::new(),
            batch_heatmaps: Vec::new(),
        })
    }

    /// The keypoint layout.
    pub fn dataset(&self) -> Dataset {
        self.dataset
    }

    /// Network input `(width, height)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.input_w, self.input_h)
    }

    /// Shape of the heatmaps.
    pub fn heatmap_shape(&self) -> HeatmapShape {
        self.shape
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Gives the model back.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The 8-bit RGB crop (`H×W×3`) of the last person processed.
    pub fn last_crop(&self) -> &[u8] {
        &self.crop
    }

    /// The heatmaps of the last person processed (`J×h×w`, without flip averaging).
    pub fn last_heatmaps(&self) -> &[f32] {
        &self.heatmaps
    }

    /// Keypoints of every person box in `image`; `flip` enables the flip test (two network runs
    /// per person, about +2 AP on COCO).
    ///
    /// Errors: see [`PoseEstimator::estimate_into`].
    pub fn estimate(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        flip: bool,
    ) -> Result<Vec<PersonKeypoints>, PoseError> {
        let mut out = Vec::with_capacity(boxes.len());
        self.estimate_into(image, boxes, flip, &mut out)?;
        Ok(out)
    }

    /// As [`PoseEstimator::estimate`], writing one entry per box into `out` and reusing the
    /// entries (and their keypoint vectors) already there.
    ///
    /// Errors: flip asked for a layout without flip pairs, an invalid box, an empty image, a
    /// model failure. On error `out` holds the people done so far.
    pub fn estimate_into(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        flip: bool,
        out: &mut Vec<PersonKeypoints>,
    ) -> Result<(), PoseError> {
        let pairs = match (flip, self.dataset.flip_pairs()) {
            (false, _) => None,
            (true, Some(pairs)) => Some(pairs),
            (true, None) => {
                return Err(PoseError::FlipUnsupported {
                    num_joints: self.shape.joints,
                })
            }
        };
        out.truncate(boxes.len());
        for (done, &bbox) in boxes.iter().enumerate() {
            let cs = preprocess(
                image,
                bbox,
                self.input_w,
                self.input_h,
                &mut self.crop,
                &mut self.input,
            );
            let cs = match cs {
                Ok(cs) => cs,
                Err(e) => {
                    out.truncate(done);
                    return Err(e);
                }
            };
            if done == out.len() {
                out.push(PersonKeypoints {
                    bbox,
                    center_scale: cs,
                    keypoints: Vec::with_capacity(self.shape.joints),
                });
            }
            let person = &mut out[done];
            person.bbox = bbox;
            person.center_scale = cs;
            let result = self.run_and_decode(&cs, pairs, &mut person.keypoints);
            if let Err(e) = result {
                out.truncate(done);
                return Err(e);
            }
        }
        Ok(())
    }

    /// As [`PoseEstimator::estimate_batch_into`], into a new vector.
    ///
    /// Errors: see [`PoseEstimator::estimate_batch_into`].
    pub fn estimate_batch(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        flip: bool,
    ) -> Result<Vec<PersonKeypoints>, PoseError> {
        let mut out = Vec::with_capacity(boxes.len());
        self.estimate_batch_into(image, boxes, flip, &mut out)?;
        Ok(out)
    }

    /// As [`PoseEstimator::estimate_into`] (the same keypoints, bit for bit), with all the
    /// boxes run as one batch ([`HeatmapModel::run_batch`]): every box is cropped, the crops
    /// (and with `flip`, their mirror images) run together, then every person is decoded, by
    /// batches of at most [`MAX_BATCH`] crops. An engine that runs a batch side by side gets
    /// all its threads busy with several people.
    /// Allocates nothing once it has seen as many boxes (and `out` has held as many people).
    ///
    /// Errors: as [`PoseEstimator::estimate_into`]; on error `out` is empty.
    pub fn estimate_batch_into(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        flip: bool,
        out: &mut Vec<PersonKeypoints>,
    ) -> Result<(), PoseError> {
        let result = self.batch_into(image, boxes, flip, out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn batch_into(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        flip: bool,
        out: &mut Vec<PersonKeypoints>,
    ) -> Result<(), PoseError> {
        let pairs = self.flip_pairs(flip)?;
        out.truncate(boxes.len());
        // At most MAX_BATCH crops at once: the buffers stay bounded however crowded the image.
        let per_batch = if flip { MAX_BATCH / 2 } else { MAX_BATCH };
        for (c, chunk) in boxes.chunks(per_batch).enumerate() {
            self.chunk_into(image, chunk, pairs, out, c * per_batch)?;
        }
        Ok(())
    }

    /// The people of `boxes` into `out[first..]` (which holds at least `first` people).
    fn chunk_into(
        &mut self,
        image: &image::RgbImage,
        boxes: &[BoxXywh],
        pairs: Option<&[(usize, usize)]>,
        out: &mut Vec<PersonKeypoints>,
        first: usize,
    ) -> Result<(), PoseError> {
        let flip = pairs.is_some();
        let n = boxes.len();
        let (x_len, y_len) = (self.input.len(), self.shape.len());
        let runs = if flip { 2 * n } else { n };
        let (xs_len, ys_len) = match (runs.checked_mul(x_len), runs.checked_mul(y_len)) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                return Err(PoseError::BufferSize {
                    what: "batch of crops",
                    expected: usize::MAX,
                    got: runs,
                })
            }
        };
        if self.batch_inputs.len() < xs_len {
            self.batch_inputs.resize(xs_len, 0.0);
        }
        if self.batch_heatmaps.len() < ys_len {
            self.batch_heatmaps.resize(ys_len, 0.0);
        }
        let (plain, flipped) = self.batch_inputs[..xs_len].split_at_mut(n * x_len);
        for (i, &bbox) in boxes.iter().enumerate() {
            let x = &mut plain[i * x_len..(i + 1) * x_len];
            let cs = preprocess(image, bbox, self.input_w, self.input_h, &mut self.crop, x)?;
            if flip {
                flip_width(x, self.input_w, &mut flipped[i * x_len..(i + 1) * x_len])?;
            }
            if first + i == out.len() {
                out.push(PersonKeypoints {
                    bbox,
                    center_scale: cs,
                    keypoints: Vec::with_capacity(self.shape.joints),
                });
            }
            out[first + i].bbox = bbox;
            out[first + i].center_scale = cs;
        }
        self.model
            .run_batch(
                &self.batch_inputs[..xs_len],
                &mut self.batch_heatmaps[..ys_len],
            )
            .map_err(PoseError::Model)?;
        let (plain, flipped) = self.batch_heatmaps[..ys_len].split_at(n * y_len);
        for (i, person) in out[first..first + n].iter_mut().enumerate() {
            let hm = &plain[i * y_len..(i + 1) * y_len];
            match pairs {
                None => {
                    decode_heatmaps(hm, self.shape, &person.center_scale, &mut person.keypoints)?
                }
                Some(pairs) => {
                    let hm_flipped = &flipped[i * y_len..(i + 1) * y_len];
                    flip_average(hm, hm_flipped, self.shape, pairs, &mut self.average)?;
                    decode_heatmaps(
                        &self.average,
                        self.shape,
                        &person.center_scale,
                        &mut person.keypoints,
                    )?;
                }
            }
        }
        // As after `estimate_into`: the last person's input and heatmaps.
        self.input
            .copy_from_slice(&self.batch_inputs[(n - 1) * x_len..n * x_len]);
        self.heatmaps
            .copy_from_slice(&plain[(n - 1) * y_len..n * y_len]);
        Ok(())
    }

    /// The flip pairs the flip test needs, if `flip`.
    fn flip_pairs(&self, flip: bool) -> Result<Option<&'static [(usize, usize)]>, PoseError> {
        match (flip, self.dataset.flip_pairs()) {
            (false, _) => Ok(None),
            (true, Some(pairs)) => Ok(Some(pairs)),
            (true, None) => Err(PoseError::FlipUnsupported {
                num_joints: self.shape.joints,
            }),
        }
    }

    fn run_and_decode(
        &mut self,
        cs: &CenterScale,
        pairs: Option<&[(usize, usize)]>,
        keypoints: &mut Vec<Keypoint>,
    ) -> Result<(), PoseError> {
        self.model
            .run(&self.input, &mut self.heatmaps)
            .map_err(PoseError::Model)?;
        match pairs {
            None => decode_heatmaps(&self.heatmaps, self.shape, cs, keypoints),
            Some(pairs) => {
                flip_width(&self.input, self.input_w, &mut self.input_flipped)?;
                self.model
                    .run(&self.input_flipped, &mut self.heatmaps_flipped)
                    .map_err(PoseError::Model)?;
                flip_average(
                    &self.heatmaps,
                    &self.heatmaps_flipped,
                    self.shape,
                    pairs,
                    &mut self.average,
                )?;
                decode_heatmaps(&self.average, self.shape, cs, keypoints)
            }
        }
    }
}
