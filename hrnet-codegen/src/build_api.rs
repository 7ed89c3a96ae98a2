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
//! rename), and the generated source and its embedded weights together or not at all, so an
//! interrupted or failed compile never leaves a truncated `model.rs`.

use crate::driver::{self, DriverError};
use crate::emit::{self, EmitError, EmitOptions};
use crate::plan::{self, Plan, PlanError};
use crate::target::Target;
use hrnet_runtime::fsio::{self, FsError, Limit};
use hrnet_runtime::weights::{self, BindError, BindOptions, WeightError};
use std::path::{Path, PathBuf};

/// Anything that can stop a compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Reading or validating the config.
    #[error(transparent)]
    Config(#[from] DriverError),
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
    /// A checkpoint that is not a regular file.
    #[error(transparent)]
    Read(Box<FsError>),
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
    plan_config_at(config, None, target)
}

/// [`plan_config`] at the input size `size` (height, width) instead of the config's, when
/// given (see [`Builder::size`]).
pub fn plan_config_at(
    config: &Path,
    size: Option<(usize, usize)>,
    target: &Target,
) -> Result<(hrnet_ir::Network, Plan), CompileError> {
    let (net, g) = driver::load_optimized_at(config, size)?;
    let p = plan::plan(&g, target)?;
    Ok((net, p))
}

/// Compiles `config` to Rust source. With `embed`, the weights file name (relative to the
/// generated file) that [`write_embedded_weights`] wrote.
pub fn compile_to_string(config: &Path, embed: Option<&str>) -> Result<String, CompileError> {
    let (_, p) = plan_config(config, &Target::runtime())?;
    emit_plan(&p, &source_name(config), embed)
}

/// What the generated code's header says it was made from: the config's file name.
pub fn source_name(config: &Path) -> String {
    config.file_name().map_or_else(
        || config.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Renders `plan` to Rust source; `embed` as in [`compile_to_string`].
pub fn emit_plan(plan: &Plan, source: &str, embed: Option<&str>) -> Result<String, CompileError> {
    let opts = EmitOptions {
        source: source.into(),
        embed_weights: embed.map(str::to_string),
    };
    Ok(emit::emit(plan, &opts)?)
}

/// Binds `weights` strictly against `plan` and writes exactly the tensors it needs (f32) as
/// safetensors at `out`, for `include_bytes!`.
pub fn write_embedded_weights(
    plan: &Plan,
    weights: &Path,
    opts: BindOptions,
    out: &Path,
) -> Result<(), CompileError> {
    let ckpt = read_checkpoint(weights)?;
    let data = embedded_weights(plan, &ckpt, opts).map_err(|error| CompileError::Bind {
        path: weights.into(),
        error,
    })?;
    write_atomic(out, &data)
}

/// Reads a checkpoint (a regular file, memory-mapped).
pub fn read_checkpoint(weights: &Path) -> Result<weights::Checkpoint, CompileError> {
    let weight_err = |error| CompileError::Weights {
        path: weights.into(),
        error: Box::new(error),
    };
    let map =
        fsio::map_regular(weights, Limit::NONE).map_err(|e| CompileError::Read(Box::new(e)))?;
    weights::load_bytes(&map).map_err(weight_err)
}

/// The safetensors bytes of exactly the tensors `plan` needs (f32), bound strictly from
/// `ckpt`: what `Model::embedded()` includes.
pub fn embedded_weights(
    plan: &Plan,
    ckpt: &weights::Checkpoint,
    opts: BindOptions,
) -> Result<Vec<u8>, BindError> {
    let specs = hrnet_runtime::model::tensor_specs(&plan.conv_params());
    let bound = ckpt.bind(&specs, opts)?;
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
    Ok(safetensors::serialize(views, None).expect("serializing in memory cannot fail"))
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CompileError> {
    write_all_atomic(&[(path, data)])
}

/// Writes every `(path, data)` atomically, and none unless all can be: each goes to a new
/// temporary file (random name, created exclusively, never through a symlink) in its
/// destination's directory first; only when all are complete are they renamed into place.
/// A destination that exists and is not a regular file (a device, a FIFO, a directory) is
/// refused rather than replaced.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), CompileError> {
    let mut staged = Vec::with_capacity(files.len());
    for &(path, data) in files {
        let err = |error| CompileError::Write {
            path: path.into(),
            error,
        };
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(err(std::io::Error::other(
                    "it exists and is not a regular file; refusing to replace it",
                )));
            }
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            // The usual mode of a new file (the umask applies), not the 0600 of a temporary.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder.tempfile_in(dir).map_err(|e| {
            // Say which directory failed, not the random name of the file that was not made.
            let why = e.raw_os_error().map_or_else(
                || std::io::Error::from(e.kind()),
                std::io::Error::from_raw_os_error,
            );
            err(std::io::Error::new(
                e.kind(),
                format!("cannot create a file in {}: {why}", dir.display()),
            ))
        })?;
        std::io::Write::write_all(&mut tmp, data).map_err(err)?;
        staged.push((path, tmp));
    }
    for (path, tmp) in staged {
        tmp.persist(path).map_err(|e| CompileError::Write {
            path: path.into(),
            error: e.error,
        })?;
    }
    Ok(())
}

/// The build.rs front door.
#[derive(Debug, Clone)]
pub struct Builder {
    config: PathBuf,
    out: Option<PathBuf>,
    weights: Option<(PathBuf, BindOptions)>,
    size: Option<(usize, usize)>,
}

impl Builder {
    /// Compiles the config at `config`.
    pub fn new(config: impl Into<PathBuf>) -> Builder {
        Builder {
            config: config.into(),
            out: None,
            weights: None,
            size: None,
        }
    }

    /// Compiles the network for inputs of `height × width` pixels instead of the config's
    /// size: a segmentation network runs at any size of at least 32 pixels a side (pose and
    /// classification sides must divide by 32). The size is checked when [`Builder::compile`]
    /// runs (with the network's memory limits), as an error, never a panic.
    pub fn size(mut self, height: usize, width: usize) -> Builder {
        self.size = Some((height, width));
        self
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
        compile_file_at(
            &self.config,
            self.size,
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
    compile_file_at(config, None, out, weights)
}

/// [`compile_file`] at the input size `size` (height, width), when given.
pub fn compile_file_at(
    config: &Path,
    size: Option<(usize, usize)>,
    out: &Path,
    weights: Option<(&Path, BindOptions)>,
) -> Result<(), CompileError> {
    let (_, p) = plan_config_at(config, size, &Target::runtime())?;
    let embed = match weights {
        Some((w, opts)) => {
            let ckpt = read_checkpoint(w)?;
            let data = embedded_weights(&p, &ckpt, opts).map_err(|error| CompileError::Bind {
                path: w.into(),
                error,
            })?;
            Some(data)
        }
        None => None,
    };
    write_compiled(&p, &source_name(config), out, embed.as_deref())
}

/// The name of the embedded weights file written beside `out`.
pub fn embedded_weights_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.weights.safetensors"))
}

/// Emits `plan` and writes it to `out`, with `embedded` weights (from [`embedded_weights`])
/// beside it ([`embedded_weights_path`]); both files or neither.
pub fn write_compiled(
    plan: &Plan,
    source: &str,
    out: &Path,
    embedded: Option<&[u8]>,
) -> Result<(), CompileError> {
    let weights_path = embedded_weights_path(out);
    let name = weights_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let code = emit_plan(plan, source, embedded.and(name.as_deref()))?;
    match embedded {
        Some(data) => write_all_atomic(&[(weights_path.as_path(), data), (out, code.as_bytes())]),
        None => write_atomic(out, code.as_bytes()),
    }
}
