//! `hrnetc run CONFIG --weights W --output OUT [--engine E] [--threads N]` and one of
//! - `--input X.npy [--aux]`: the network's output as .npy (a segmentation network is
//!   specialized to the tensor's H×W; `--aux`: HRNet-OCR's auxiliary logits);
//! - `--image IMG`: pose `[--box x,y,w,h].. [--flip] [--draw out.png]` → keypoint JSON;
//!   classification `[--top K] [--labels FILE]` → top-K JSON; segmentation (the network
//!   specialized to the image's H×W) `[--draw out.png]` → 8-bit PNG of class indices;
//! - `--images DIR --detections DETS.json [--annotations GT.json] [--flip]` (pose) → COCO
//!   keypoint results.
//!
//! Every output is computed first and written atomically at the end, all or none.

use crate::loaded::{
    finite, parse_threads, read_checkpoint, read_image, read_input, read_sized_input, readable,
    Loaded,
};
use anyhow::{bail, Context, Result};
use hrnet_codegen::build_api;
use hrnet_codegen::engine::{Engine, EngineKind, PoseAdapter};
use hrnet_ir::front::resolve::MIN_INPUT_SIDE;
use hrnet_ir::front::Task;
use hrnet_runtime::cls::{self, Labels};
use hrnet_runtime::fsio::{self, Limit};
use hrnet_runtime::pose::{self, coco, BoxXywh, Dataset, PoseEstimator};
use hrnet_runtime::seg;
use hrnet_runtime::weights::{BindOptions, Checkpoint};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Classes listed by a classification `--image` run without `--top`.
const DEFAULT_TOP: usize = 5;
/// Opacity of the class colours `--draw` blends over a segmented photo.
const SEG_DRAW_ALPHA: f32 = 0.5;
/// Largest labels file read, in bytes (ImageNet's 1000 names take about 20 KB).
const MAX_LABELS_BYTES: u64 = 16 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// The checkpoint (safetensors, .pth zip or legacy, training checkpoint).
    #[arg(long)]
    weights: PathBuf,
    /// Input tensor: float32 or float64 .npy of shape (1, 3, H, W): the config's input size,
    /// or any H x W of at least 32 pixels a side for a segmentation network.
    #[arg(
        long,
        conflicts_with_all = ["image", "detections"],
        required_unless_present_any = ["image", "detections"]
    )]
    input: Option<PathBuf>,
    /// Input image (JPEG or PNG): keypoints (pose), the top classes (classification) or a
    /// class map at the image's own size (segmentation).
    #[arg(long, conflicts_with = "detections")]
    image: Option<PathBuf>,
    /// Person detections in the COCO detection-results format (`[{"image_id", "category_id",
    /// "bbox", "score"}]`): estimate every person box of every image in `--images`, and write
    /// COCO keypoint results (official rescoring and OKS-NMS) to `--output`.
    #[arg(long, requires = "images")]
    detections: Option<PathBuf>,
    /// Directory of the images named by `--detections` (`<image_id:012>.jpg`, or the file
    /// names of `--annotations`).
    #[arg(long, requires = "detections")]
    images: Option<PathBuf>,
    /// COCO annotations whose `images` list maps image ids to file names.
    #[arg(long, requires = "detections")]
    annotations: Option<PathBuf>,
    /// Person box `x,y,w,h` in image pixels (repeatable; default: the whole image). x and y
    /// may be negative (a box reaching past the image's left or top edge).
    #[arg(
        long = "box",
        value_name = "X,Y,W,H",
        requires = "image",
        allow_hyphen_values = true
    )]
    boxes: Vec<String>,
    /// Flip test (pose): average with the heatmaps of the mirrored crop.
    #[arg(long)]
    flip: bool,
    /// Draw the skeletons (pose) or the class colours (segmentation) over the image into
    /// this PNG.
    #[arg(long, requires = "image")]
    draw: Option<PathBuf>,
    /// Classification: how many of the most likely classes to write [default: 5; at most
    /// the number of classes].
    #[arg(long, value_name = "K", requires = "image")]
    top: Option<usize>,
    /// Classification: class names, one per line (line i names class i), as many lines as
    /// the network has classes.
    #[arg(long, value_name = "FILE", requires = "image")]
    labels: Option<PathBuf>,
    /// HRNet-OCR with --input: write the auxiliary logits (the graph's output 1) instead of
    /// the OCR logits.
    #[arg(long)]
    aux: bool,
    /// Output: .npy (with --input); with --image, .json keypoints (pose) or top classes
    /// (classification), or a .png of class indices (segmentation).
    #[arg(long)]
    output: PathBuf,
    /// Engine.
    #[arg(long, value_enum, default_value_t = EngineKind::DEFAULT)]
    engine: EngineKind,
    /// Threads the kernels use (1 to 256).
    #[arg(long, default_value = "1", value_parser = parse_threads)]
    threads: usize,
    /// Accept checkpoint tensors the network does not use.
    #[arg(long)]
    ignore_extra: bool,
}

pub fn main(a: Args) -> Result<ExitCode> {
    let loaded = Loaded::load(&a.config)?;
    // Check everything the user typed before the (possibly slow) engine is built.
    check_options(&a, &loaded.network.task)?;
    let boxes: Vec<BoxXywh> = a
        .boxes
        .iter()
        .map(|b| parse_box(b))
        .collect::<Result<_>>()?;
    let ckpt = read_checkpoint(&a.weights)?;
    let opts = BindOptions {
        ignore_extra: a.ignore_extra,
    };
    match (&a.input, &a.image) {
        (Some(input), _) => run_tensor(loaded, input, &ckpt, opts, &a)?,
        (None, Some(image)) => match loaded.network.task.clone() {
            Task::Pose { num_joints, .. } => {
                let (h, w) = loaded.network.input_hw;
                let img = read_image(image)?;
                let eng = loaded.engine(a.engine, &ckpt, &a.weights, opts, a.threads, 0)?;
                pose_image(eng, (w, h), num_joints, &img, boxes, &a)?;
            }
            Task::Classification { num_classes } => {
                classify_image(&loaded, num_classes, image, &ckpt, opts, &a)?;
            }
            Task::Segmentation {
                num_classes,
                align_corners,
                ..
            } => {
                segment_image(loaded, num_classes, align_corners, image, &ckpt, opts, &a)?;
            }
        },
        (None, None) => {
            let Some(detections) = &a.detections else {
                bail!("give --input X.npy, --image IMG or --detections DETS.json");
            };
            let Task::Pose { num_joints, .. } = loaded.network.task else {
                bail!(
                    "--detections needs a pose network; {} is a {} network",
                    a.config.display(),
                    loaded.network.task.kind()
                );
            };
            if num_joints != coco::COCO_SIGMAS.len() {
                bail!(
                    "--detections writes COCO keypoint results and needs a COCO network of {} \
                     joints; {} has {num_joints}",
                    coco::COCO_SIGMAS.len(),
                    a.config.display()
                );
            }
            let (h, w) = loaded.network.input_hw;
            let eng = loaded.engine(a.engine, &ckpt, &a.weights, opts, a.threads, 0)?;
            let adapter = PoseAdapter {
                engine: eng,
                input_size: (w, h),
                joints: num_joints,
            };
            let images = a
                .images
                .as_deref()
                .context("--detections needs --images DIR")?;
            crate::coco_run::run(
                adapter,
                detections,
                images,
                a.annotations.as_deref(),
                a.flip,
                &a.output,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses options that do not apply to the network's task, naming the option and the task.
fn check_options(a: &Args, task: &Task) -> Result<()> {
    let not_for = |option: &str, applies: &str| {
        anyhow::anyhow!(
            "{option} applies to {applies}; {} is a {} network",
            a.config.display(),
            task.kind()
        )
    };
    let pose = matches!(task, Task::Pose { .. });
    let cls = matches!(task, Task::Classification { .. });
    let ocr = matches!(task, Task::Segmentation { ocr: Some(_), .. });
    if !pose && !a.boxes.is_empty() {
        return Err(not_for("--box", "pose networks"));
    }
    if !pose && a.flip {
        return Err(not_for("--flip", "pose networks (the flip test)"));
    }
    if !cls && a.top.is_some() {
        return Err(not_for("--top", "classification networks"));
    }
    if !cls && a.labels.is_some() {
        return Err(not_for("--labels", "classification networks"));
    }
    if cls && a.draw.is_some() {
        return Err(not_for(
            "--draw",
            "pose and segmentation networks (a classification network writes its top classes to --output)",
        ));
    }
    if a.aux {
        if !ocr {
            return Err(not_for(
                "--aux",
                "HRNet-OCR networks (seg_hrnet_ocr), whose auxiliary logits it writes",
            ));
        }
        if a.input.is_none() {
            bail!(
                "--aux writes the auxiliary logits to an .npy with --input X.npy; with --image \
                 the class map comes from the OCR logits"
            );
        }
    }
    if a.top == Some(0) {
        bail!("--top 0: give the number of classes to list, at least 1");
    }
    Ok(())
}

/// `--input X.npy --output Y.npy`: the network's output (the auxiliary logits with `--aux`)
/// on the tensor; a segmentation network is specialized to the tensor's H×W first.
fn run_tensor(
    loaded: Loaded,
    input: &Path,
    ckpt: &Checkpoint,
    opts: BindOptions,
    a: &Args,
) -> Result<()> {
    let output = usize::from(a.aux);
    let (loaded, x) = if matches!(loaded.network.task, Task::Segmentation { .. }) {
        let (shape, x) = read_sized_input(input)?;
        let [1, 3, h, w] = shape[..] else {
            bail!(
                "{}: input has shape {shape:?}, a segmentation network takes [1, 3, H, W] (NCHW)",
                input.display()
            );
        };
        let loaded = loaded.resized(h, w).with_context(|| {
            format!(
                "{} is {w}x{h} (width x height): cannot run {} at that size",
                input.display(),
                a.config.display()
            )
        })?;
        (loaded, x)
    } else {
        let (h, w) = loaded.network.input_hw;
        let x = read_input(input, [1, 3, h, w])?;
        (loaded, x)
    };
    let mut eng = loaded.engine(a.engine, ckpt, &a.weights, opts, a.threads, output)?;
    let shape = loaded.output_shape(output)?;
    let mut y = vec![0f32; shape.iter().product()];
    eng.run(&x, &mut y)?;
    let bytes = hrnet_runtime::npy::to_bytes(&shape, &y)?;
    build_api::write_atomic(&a.output, &bytes)?;
    eprintln!(
        "{} engine: wrote {}{} ({}x{}x{}x{})",
        a.engine.name(),
        a.output.display(),
        if a.aux { ", the auxiliary logits" } else { "" },
        shape[0],
        shape[1],
        shape[2],
        shape[3]
    );
    Ok(())
}

/// The top-K JSON document: `{"predictions": [{"class", "logit", "probability", "label"}]}`.
#[derive(Serialize)]
struct TopJson {
    predictions: Vec<PredictionJson>,
}

#[derive(Serialize)]
struct PredictionJson {
    class: usize,
    logit: f32,
    /// Softmax over all classes.
    probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

/// Classification of an image, as the official evaluation preprocesses it: the shorter side
/// resized to int(crop / 0.875) (Pillow bilinear), the center crop, ImageNet normalization;
/// the top `--top` classes into the JSON output.
fn classify_image(
    loaded: &Loaded,
    num_classes: usize,
    image: &Path,
    ckpt: &Checkpoint,
    opts: BindOptions,
    a: &Args,
) -> Result<()> {
    let (h, w) = loaded.network.input_hw;
    if h != w {
        bail!(
            "{}: the classification preprocessing center-crops a square, but the network takes \
             {w}x{h} (width x height, MODEL.IMAGE_SIZE)",
            a.config.display()
        );
    }
    let k = a.top.unwrap_or(DEFAULT_TOP).min(num_classes);
    let labels = match &a.labels {
        Some(path) => Some(read_labels(path, num_classes, &a.config)?),
        None => None,
    };
    let img = read_image(image)?;
    let mut x = vec![0f32; 3 * h * w];
    cls::preprocess(&img, h, &mut x)
        .with_context(|| format!("preprocessing {}", image.display()))?;
    let mut eng = loaded.engine(a.engine, ckpt, &a.weights, opts, a.threads, 0)?;
    let mut logits = vec![0f32; loaded.output_shape(0)?.iter().product()];
    eng.run(&x, &mut logits)?;
    for (class, &v) in logits.iter().enumerate() {
        finite(f64::from(v), || format!("the logit of class {class}"))?;
    }
    let predictions: Vec<PredictionJson> = cls::top_k(&logits, k)
        .into_iter()
        .map(|p| PredictionJson {
            class: p.class,
            logit: p.logit,
            probability: p.probability,
            label: labels
                .as_ref()
                .and_then(|l| l.name(p.class))
                .map(str::to_string),
        })
        .collect();
    let mut json = serde_json::to_vec(&TopJson { predictions })?;
    json.push(b'\n');
    build_api::write_atomic(&a.output, &json)?;
    let best = cls::top_k(&logits, 1);
    let named = |c: usize| match labels.as_ref().and_then(|l| l.name(c)) {
        Some(name) => format!("class {c} ({})", crate::printable(name, false)),
        None => format!("class {c}"),
    };
    eprintln!(
        "wrote {}: the top {k} of {num_classes} classes; the most likely is {} ({:.1}%)",
        a.output.display(),
        best.first().map_or_else(String::new, |p| named(p.class)),
        best.first().map_or(0.0, |p| 100.0 * p.probability)
    );
    Ok(())
}

/// Reads a labels file: UTF-8 text, one class name per line, exactly one line per class.
fn read_labels(path: &Path, classes: usize, config: &Path) -> Result<Labels> {
    let limit = Limit {
        max: MAX_LABELS_BYTES,
        what: "a labels file",
    };
    let bytes = fsio::read_regular(path, limit)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a text file (invalid UTF-8)", path.display()))?;
    let labels = Labels::parse(&text);
    if labels.len() != classes {
        bail!(
            "{} has {} line(s), but {} has {classes} classes: a labels file names one class per line",
            path.display(),
            labels.len(),
            config.display()
        );
    }
    Ok(labels)
}

/// Segmentation of an image at its own size: the network specialized to the image's H×W,
/// the image normalized, the logits resized bilinearly to the image (the network's
/// `align_corners`) and their argmax written as an 8-bit PNG of class indices; with
/// `--draw`, the palette blended over the photo too. Both files or neither.
fn segment_image(
    loaded: Loaded,
    num_classes: usize,
    align_corners: bool,
    image: &Path,
    ckpt: &Checkpoint,
    opts: BindOptions,
    a: &Args,
) -> Result<()> {
    if num_classes > 256 {
        bail!(
            "{} has {num_classes} classes: the --output PNG (8-bit class indices) holds at most 256",
            a.config.display()
        );
    }
    let img = read_image(image)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if h < MIN_INPUT_SIDE || w < MIN_INPUT_SIDE {
        bail!(
            "{} is {w}x{h} pixels (width x height): a segmentation network needs at least \
             {MIN_INPUT_SIDE} pixels a side",
            image.display()
        );
    }
    let loaded = loaded.resized(h, w).with_context(|| {
        format!(
            "{} is {w}x{h} (width x height): cannot run {} at that size",
            image.display(),
            a.config.display()
        )
    })?;
    let mut x = vec![0f32; 3 * h * w];
    seg::normalize_image(&img, &mut x)
        .with_context(|| format!("normalizing {}", image.display()))?;
    let mut eng = loaded.engine(a.engine, ckpt, &a.weights, opts, a.threads, 0)?;
    let shape = loaded.output_shape(0)?;
    let mut logits = vec![0f32; shape.iter().product()];
    eng.run(&x, &mut logits)?;
    let (lh, lw) = (shape[2], shape[3]);
    for (i, &v) in logits.iter().enumerate() {
        finite(f64::from(v), || {
            let (class, rest) = (i / (lh * lw), i % (lh * lw));
            format!(
                "the logit of class {class} at ({}, {}) of the {lw}x{lh} logits",
                rest % lw,
                rest / lw
            )
        })?;
    }
    let map = seg::class_map(&logits, shape[1], (lh, lw), (h, w), align_corners)?;
    let labels_png = encode_png(
        image::DynamicImage::ImageLuma8(map.clone()),
        "the class map",
    )?;
    let drawing = match &a.draw {
        Some(_) => {
            let mut canvas = img;
            seg::draw(
                &mut canvas,
                &map,
                &seg::palette(num_classes),
                SEG_DRAW_ALPHA,
            )?;
            Some(encode_png(
                image::DynamicImage::ImageRgb8(canvas),
                "the drawing",
            )?)
        }
        None => None,
    };
    let mut files: Vec<(&Path, &[u8])> = vec![(&a.output, &labels_png)];
    if let (Some(path), Some(png)) = (&a.draw, &drawing) {
        files.push((path, png));
    }
    build_api::write_all_atomic(&files)?;
    eprintln!(
        "wrote {}: a {w}x{h} class map of {num_classes} classes",
        a.output.display()
    );
    if let Some(path) = &a.draw {
        eprintln!("drew the classes over the image into {}", path.display());
    }
    Ok(())
}

/// `img` as PNG bytes.
fn encode_png(img: image::DynamicImage, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("encoding {what} as PNG"))?;
    Ok(bytes)
}

/// Keypoints of the people in `boxes` (default: the whole image) into the JSON output, and
/// with `--draw` the skeletons into a PNG; both files or neither.
fn pose_image(
    engine: Box<dyn Engine>,
    input_size: (usize, usize),
    joints: usize,
    img: &image::RgbImage,
    mut boxes: Vec<BoxXywh>,
    a: &Args,
) -> Result<()> {
    if boxes.is_empty() {
        boxes.push(BoxXywh::whole_image(img.width(), img.height()));
    }
    let adapter = PoseAdapter {
        engine,
        input_size,
        joints,
    };
    let mut est = PoseEstimator::new(adapter)?;
    let people = est.estimate(img, &boxes, a.flip)?;
    let dataset = est.dataset();
    let mut json = serde_json::to_vec(&people_json(&people, dataset)?)?;
    json.push(b'\n');
    let png = match &a.draw {
        Some(_) => {
            let mut canvas = img.clone();
            let style = pose::DrawStyle::for_image(&canvas);
            for p in &people {
                pose::draw_keypoints(&mut canvas, &p.keypoints, dataset, &style);
            }
            Some(encode_png(
                image::DynamicImage::ImageRgb8(canvas),
                "the drawing",
            )?)
        }
        None => None,
    };
    let mut files: Vec<(&Path, &[u8])> = vec![(&a.output, &json)];
    if let (Some(path), Some(png)) = (&a.draw, &png) {
        files.push((path, png));
    }
    build_api::write_all_atomic(&files)?;
    eprintln!(
        "wrote {}: {} {} with {} keypoints each",
        a.output.display(),
        people.len(),
        if people.len() == 1 {
            "person"
        } else {
            "people"
        },
        joints
    );
    if let Some(path) = &a.draw {
        eprintln!("drew the skeletons into {}", path.display());
    }
    Ok(())
}

/// Largest box coordinate or size accepted, in pixels (images have at most 32767 a side).
const MAX_BOX: f64 = 1e6;

/// `x,y,w,h`: x and y within ±[`MAX_BOX`], w and h positive and at most [`MAX_BOX`].
fn parse_box(s: &str) -> Result<BoxXywh> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [x, y, w, h] = parts[..] else {
        bail!(
            "--box {s}: expected four numbers x,y,w,h, found {}",
            parts.len()
        )
    };
    let mut v = [0f64; 4];
    for ((slot, text), name) in v.iter_mut().zip([x, y, w, h]).zip(["x", "y", "w", "h"]) {
        let n: f64 = text
            .parse()
            .map_err(|_| anyhow::anyhow!("--box {s}: {name} = `{text}` is not a number"))?;
        let ok = match name {
            "x" | "y" => n.is_finite() && n.abs() <= MAX_BOX,
            _ => n > 0.0 && n <= MAX_BOX,
        };
        if !ok {
            let rule = match name {
                "x" | "y" => "must lie within ±1e6 pixels",
                _ => "must be positive and at most 1e6 pixels",
            };
            bail!("--box {s}: {name} = {} {rule}", readable(n));
        }
        *slot = n;
    }
    Ok(BoxXywh::new(v[0], v[1], v[2], v[3]))
}

/// The output document: `{"dataset": "coco", "joints": 17, "people": [{"box": [x,y,w,h],
/// "score": …, "keypoints": [[x,y,score], …]}, …]}`.
#[derive(Serialize)]
struct PeopleJson {
    /// `coco`, `mpii` or `other` (no known joint names or skeleton).
    dataset: &'static str,
    joints: usize,
    people: Vec<PersonJson>,
}

#[derive(Serialize)]
struct PersonJson {
    #[serde(rename = "box")]
    bbox: [f64; 4],
    score: f64,
    keypoints: Vec<[f64; 3]>,
}

/// The JSON document of `people`; a non-finite coordinate or score is an error naming it.
fn people_json(people: &[pose::PersonKeypoints], dataset: Dataset) -> Result<PeopleJson> {
    let names = dataset.joint_names();
    let people = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let keypoints = p
                .keypoints
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    let joint = names.get(j).map_or_else(String::new, |n| format!(" ({n})"));
                    let what = |field: &str| format!("person {i}, keypoint {j}{joint}: {field}");
                    Ok([
                        finite(k.x, || what("x"))?,
                        finite(k.y, || what("y"))?,
                        finite(k.score, || what("score"))?,
                    ])
                })
                .collect::<Result<Vec<_>>>()?;
            let mean = keypoints.iter().map(|k| k[2]).sum::<f64>() / keypoints.len().max(1) as f64;
            let b = &p.bbox;
            Ok(PersonJson {
                bbox: [b.x, b.y, b.w, b.h],
                score: mean,
                keypoints,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PeopleJson {
        dataset: match dataset {
            Dataset::Coco => "coco",
            Dataset::Mpii => "mpii",
            Dataset::Other { .. } => "other",
        },
        joints: dataset.num_joints(),
        people,
    })
}
