//! hrnet-example-pose: HRNet compiled into this binary by `build.rs`.
//!
//! ```text
//! hrnet-example-pose --weights W.pth --input in.npy --output out.npy [--threads N]
//! hrnet-example-pose --weights W.pth --images DIR [--flip] [--threads N]   # JSON lines on stdout
//! hrnet-example-pose --bench [--weights W.pth] [--threads N] [--runs R]   # random weights without --weights
//! ```

mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use hrnet_runtime::pose::{self, BoxXywh, PoseEstimator};
use hrnet_runtime::weights::{Checkpoint, Format, Tensor, TensorData};
use hrnet_runtime::{npy, weights};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Default)]
struct Args {
    weights: Option<PathBuf>,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    images: Option<PathBuf>,
    flip: bool,
    bench: bool,
    threads: usize,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 1,
        runs: 20,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--weights" => a.weights = Some(value()?.into()),
            "--input" => a.input = Some(value()?.into()),
            "--output" => a.output = Some(value()?.into()),
            "--images" => a.images = Some(value()?.into()),
            "--threads" => {
                a.threads = value()?
                    .parse()
                    .map_err(|_| "--threads: expected a number")?
            }
            "--runs" => a.runs = value()?.parse().map_err(|_| "--runs: expected a number")?,
            "--flip" => a.flip = true,
            "--bench" => a.bench = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.threads == 0 || a.runs == 0 {
        return Err("--threads and --runs must be at least 1".into());
    }
    Ok(a)
}

const USAGE: &str =
    "usage: hrnet-example-pose --weights W --input in.npy --output out.npy [--threads N]
       hrnet-example-pose --weights W --images DIR [--flip] [--threads N]
       hrnet-example-pose --bench [--weights W] [--threads N] [--runs R]";

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let m = match &a.weights {
        Some(w) => model::Model::load(w).map_err(|e| format!("{}: {e}", w.display()))?,
        None if a.bench => model::Model::from_checkpoint(&random_weights(), Default::default())
            .map_err(|e| e.to_string())?,
        None => return Err(format!("--weights is required\n{USAGE}")),
    };
    if a.bench {
        return bench(&m, a.threads, a.runs);
    }
    if let Some(dir) = &a.images {
        return images(&m, dir, a.flip, a.threads);
    }
    let (Some(input), Some(output)) = (&a.input, &a.output) else {
        return Err(format!(
            "give --input and --output, --images, or --bench\n{USAGE}"
        ));
    };
    let (shape, x) = npy::read_f32(input).map_err(|e| format!("{}: {e}", input.display()))?;
    if shape != model::INPUT_SHAPE {
        return Err(format!(
            "{}: shape {shape:?}, the network takes {:?}",
            input.display(),
            model::INPUT_SHAPE
        ));
    }
    let mut y = vec![0f32; model::OUTPUT_SHAPE.iter().product()];
    let mut scratch = m.scratch(a.threads);
    m.run(&x, &mut y, &mut scratch).map_err(|e| e.to_string())?;
    npy::write_f32(output, &model::OUTPUT_SHAPE, &y)
        .map_err(|e| format!("{}: {e}", output.display()))
}

fn bench(m: &model::Model, threads: usize, runs: usize) -> Result<(), String> {
    let x = vec![0.5f32; model::INPUT_SHAPE.iter().product()];
    let mut y = vec![0f32; model::OUTPUT_SHAPE.iter().product()];
    let mut scratch = m.scratch(threads);
    for _ in 0..2 {
        m.run(&x, &mut y, &mut scratch).map_err(|e| e.to_string())?;
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let r = m.run(&x, &mut y, &mut scratch);
            (t.elapsed().as_secs_f64() * 1e3, r)
        })
        .map(|(ms, r)| r.map(|()| ms).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"engine\":\"aot\",\"threads\":{threads},\"median_ms\":{:.3},\"min_ms\":{:.3},\"runs\":{runs}}}",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}

/// Every image in `dir` (JPEG, PNG), whole image as the box: one JSON line each.
fn images(m: &model::Model, dir: &Path, flip: bool, threads: usize) -> Result<(), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| {
                matches!(
                    x.to_ascii_lowercase().to_str(),
                    Some("jpg" | "jpeg" | "png")
                )
            })
        })
        .collect();
    files.sort();
    let mut est = PoseEstimator::new(m.session(threads)).map_err(|e| e.to_string())?;
    for f in files {
        let img = pose::load_rgb(&f).map_err(|e| e.to_string())?;
        let boxes = [BoxXywh::whole_image(img.width(), img.height())];
        let people = est
            .estimate(&img, &boxes, flip)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let kps: Vec<String> = people[0]
            .keypoints
            .iter()
            .map(|k| format!("[{:.2},{:.2},{:.4}]", k.x, k.y, k.score))
            .collect();
        println!(
            "{{\"image\":{:?},\"keypoints\":[{}]}}",
            f.display().to_string(),
            kps.join(",")
        );
    }
    Ok(())
}

/// Seeded random weights with the network's exact tensor list (for `--bench` without a
/// checkpoint).
fn random_weights() -> Checkpoint {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let tensors = model::Model::tensors()
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let var = t.name.ends_with("running_var");
            let scale = if t.shape.len() == 4 {
                (2.0 / t.shape[1..].iter().product::<usize>() as f32).sqrt()
            } else {
                0.1
            };
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    if var {
                        0.5 + next()
                    } else {
                        (next() - 0.5) * scale
                    }
                })
                .collect();
            (
                t.name,
                Tensor {
                    shape: t.shape,
                    dtype: weights::DType::F32,
                    data: TensorData::F32(data),
                },
            )
        })
        .collect();
    Checkpoint::new(Format::Safetensors, false, tensors).expect("tensor names are unique")
}
