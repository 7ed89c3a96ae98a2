//! `hrnetc run CONFIG --weights W (--input X.npy | --image IMG [--box x,y,w,h].. [--flip]
//! [--draw out.png] | --images DIR --detections DETS.json [--annotations GT.json] [--flip])
//! --output OUT [--engine E] [--threads N]`.
//!
//! Every output is computed first and written atomically at the end, all or none.

use crate::loaded::{
    finite, parse_threads, read_checkpoint, read_image, read_input, readable, Loaded,
};
use anyhow::{bail, Context, Result};
use hrnet_codegen::build_api;
use hrnet_codegen::engine::{Engine, EngineKind, PoseAdapter};
use hrnet_ir::front::Task;
use hrnet_runtime::pose::{self, coco, BoxXywh, Dataset, PoseEstimator};
use hrnet_runtime::weights::BindOptions;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The official experiment YAML.
    config: PathBuf,
    /// The checkpoint (safetensors, .pth zip or legacy, training checkpoint).
    #[arg(long)]
    weights: PathBuf,
    /// Input tensor: float32 or float64 .npy of shape (1, 3, H, W).
    #[arg(
        long,
        conflicts_with_all = ["image", "detections"],
        required_unless_present_any = ["image", "detections"]
    )]
    input: Option<PathBuf>,
    /// Input image (JPEG or PNG) for pose estimation.
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
    /// Flip test: average with the heatmaps of the mirrored crop.
    #[arg(long)]
    flip: bool,
    /// Draw the skeletons over the image into this PNG.
    #[arg(long, requires = "image")]
    draw: Option<PathBuf>,
    /// Output: .npy heatmaps (with --input) or .json keypoints (with --image).
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
    let (h, w) = loaded.network.input_hw;
    // Check everything the user typed before the (possibly slow) engine is built.
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
        (Some(input), _) => {
            let x = read_input(input, [1, 3, h, w])?;
            let mut eng = loaded.engine(a.engine, &ckpt, &a.weights, opts, a.threads)?;
            let shape = loaded.output_shape();
            let mut y = vec![0f32; shape.iter().product()];
            eng.run(&x, &mut y)?;
            let bytes = hrnet_runtime::npy::to_bytes(&shape, &y)?;
            build_api::write_atomic(&a.output, &bytes)?;
            eprintln!(
                "{} engine: wrote {} ({}x{}x{}x{})",
                a.engine.name(),
                a.output.display(),
                shape[0],
                shape[1],
                shape[2],
                shape[3]
            );
        }
        (None, Some(image)) => {
            let Task::Pose { num_joints, .. } = loaded.network.task else {
                bail!(
                    "--image needs a pose network; {} is a {} network",
                    a.config.display(),
                    loaded.network.task.kind()
                );
            };
            let img = read_image(image)?;
            let eng = loaded.engine(a.engine, &ckpt, &a.weights, opts, a.threads)?;
            pose_image(eng, (w, h), num_joints, &img, boxes, &a)?;
        }
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
            let eng = loaded.engine(a.engine, &ckpt, &a.weights, opts, a.threads)?;
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
            let mut bytes = Vec::new();
            canvas
                .write_to(
                    &mut std::io::Cursor::new(&mut bytes),
                    image::ImageFormat::Png,
                )
                .context("encoding the drawing as PNG")?;
            Some(bytes)
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
