//! Compiling a config to Rust from a build script (or from `hrnetc compile`).
//!
//! ```text
//! // build.rs
//! fn main() {
//!     hrnet_codegen::build_api::Builder::new("w32_256x192.yaml").compile().unwrap();
//! }
//! // src/main.rs
//! include!(concat!(env!("OUT_DIR"), "/w32_256x192.rs"));
//! ```
//!
//! Output files are written atomically (a temporary file in the same directory, then a
//! rename), so an interrupted or failed compile never leaves a truncated `model.rs`.

use crate::driver::{self, DriverError};
use crate::emit::{self, EmitError, EmitOptions};
use crate::plan::{self, Plan, PlanError};
use crate::target::Target;
use hrnet_runtime::weights::{self, BindError, BindOptions, WeightError};
use std::path::{Path, PathBuf};

/// Anything that can stop a compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Reading or validating the config.
    #[error(transparent)]
    Config(#[from] DriverError),
    /// The network's head is not supported by the compiled engines yet.
    #[error("{path}: {task} networks are not supported by `compile` yet: only the backbone lowers (see `hrnetc graph`); the {task} head comes in a later release")]
    Head {
        /// The config.
        path: PathBuf,
        /// `classification`, `segmentation`.
        task: &'static str,
    },
    /// Planning.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Emitting.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The weights to embed could not be read.
    #[error("{path}: {error}")]
    Weights {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        error: Box<WeightError>,
    },
    /// The weights to embed do not fit the network.
    #[error("{path}: {error}")]
    Bind {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong.
        error: BindError,
    },
    /// Building generated code with cargo (`--engine aot`).
    #[error(transparent)]
    Aot(#[from] crate::aot::AotError),
    /// Writing the output.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Reads `config`, runs every pass and plans it for `target`: what every compiled engine
/// starts from.
pub fn plan_config(
    config: &Path,
    target: &Target,
) -> Result<(hrnet_ir::Network, Plan), CompileError> {
    let (net, g) = driver::load_optimized(config)?;
    if !net.task.head_supported() {
        return Err(CompileError::Head {
            path: config.into(),
            task: net.task.kind(),
        });
    }
    let p = plan::plan(&g, target)?;
    Ok((net, p))
}

/// Compiles `config` to Rust source. With `embed`, the weights file name (relative to the
/// generated file) that [`write_embedded_weights`] wrote.
pub fn compile_to_string(config: &Path, embed: Option<&str>) -> Result<String, CompileError> {
    let (_, p) = plan_config(config, &Target::runtime())?;
    let source = config.file_name().map_or_else(
        || config.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let opts = EmitOptions {
        source,
        embed_weights: embed.map(str::to_string),
    };
    Ok(emit::emit(&p, &opts)?)
}

/// Binds `weights` strictly against `plan` and writes exactly the tensors it needs (f32) as
/// safetensors at `out`, for `include_bytes!`.
pub fn write_embedded_weights(
    plan: &Plan,
    weights: &Path,
    opts: BindOptions,
    out: &Path,
) -> Result<(), CompileError> {
    let ckpt = weights::load(weights).map_err(|error| CompileError::Weights {
        path: weights.into(),
        error: Box::new(error),
    })?;
    let specs = hrnet_runtime::model::tensor_specs(&plan.conv_params());
    let bound = ckpt
        .bind(&specs, opts)
        .map_err(|error| CompileError::Bind {
            path: weights.into(),
            error,
        })?;
    let bytes: Vec<Vec<u8>> = bound
        .iter()
        .map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = specs
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.shape.clone(), b)
                    .expect("length matches the bound shape");
            (s.name.clone(), view)
        })
        .collect();
    let data = safetensors::serialize(views, None).map_err(|e| CompileError::Write {
        path: out.into(),
        error: std::io::Error::other(e.to_string()),
    })?;
    write_atomic(out, &data)
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CompileError> {
    let err = |error| CompileError::Write {
        path: path.into(),
        error,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The build.rs front door.
#[derive(Debug, Clone)]
pub struct Builder {
    config: PathBuf,
    out: Option<PathBuf>,
    weights: Option<(PathBuf, BindOptions)>,
}

impl Builder {
    /// Compiles the config at `config`.
    pub fn new(config: impl Into<PathBuf>) -> Builder {
        Builder {
            config: config.into(),
            out: None,
            weights: None,
        }
    }

    /// Writes to `path` instead of `$OUT_DIR/<config stem>.rs`.
    pub fn out_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.out = Some(path.into());
        self
    }

    /// Embeds the weights of `checkpoint` into the generated code (`Model::embedded()`).
    pub fn embed_weights(mut self, checkpoint: impl Into<PathBuf>, opts: BindOptions) -> Builder {
        self.weights = Some((checkpoint.into(), opts));
        self
    }

    /// Compiles, writes the file(s), prints `cargo:rerun-if-changed` lines, and returns
    /// the path of the generated Rust file.
    pub fn compile(&self) -> Result<PathBuf, CompileError> {
        let out = match &self.out {
            Some(p) => p.clone(),
            None => {
                let dir = std::env::var_os("OUT_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                let stem = self
                    .config
                    .file_stem()
                    .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
                dir.join(format!("{}.rs", stem.replace(['-', '.'], "_")))
            }
        };
        println!("cargo:rerun-if-changed={}", self.config.display());
        compile_file(
            &self.config,
            &out,
            self.weights.as_ref().map(|(p, o)| (p.as_path(), *o)),
        )?;
        if let Some((w, _)) = &self.weights {
            println!("cargo:rerun-if-changed={}", w.display());
        }
        Ok(out)
    }
}

/// `hrnetc compile`: writes the generated source to `out`, and with `weights` the embedded
/// weights file next to it (`<out stem>.weights.safetensors`).
pub fn compile_file(
    config: &Path,
    out: &Path,
    weights: Option<(&Path, BindOptions)>,
) -> Result<(), CompileError> {
    let (_, p) = plan_config(config, &Target::runtime())?;
    let embed = match weights {
        Some((w, opts)) => {
            let stem = out
                .file_stem()
                .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
            let name = format!("{stem}.weights.safetensors");
            write_embedded_weights(&p, w, opts, &out.with_file_name(&name))?;
            Some(name)
        }
        None => None,
    };
    let source = config.file_name().map_or_else(
        || config.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let code = emit::emit(
        &p,
        &EmitOptions {
            source,
            embed_weights: embed,
        },
    )?;
    write_atomic(out, code.as_bytes())
}
