//! `--engine aot`: emit the Rust source, build it with cargo in a cache directory (as a
//! build.rs would), and run the binary.
//!
//! The cache lives in `$HRNET_CACHE_DIR`, else `$XDG_CACHE_HOME/hrnet`, else
//! `$HOME/.cache/hrnet`. What it holds is executed, so it is trusted only when it is private:
//! the directory is created with mode 0700 and refused unless the current user owns it and
//! neither its group nor others may write to it.
//!
//! Each generated model gets a directory named by its key, a SHA-256 over everything that
//! determines the binary: the generated source, the driver around it, the manifest, the
//! contents of every hrnet-runtime source file, the workspace `Cargo.lock` the build is locked
//! to, `rustc -vV`, and the environment and cargo configuration that change flags. All models
//! share one cargo target directory, so hrnet-runtime is compiled once. A build is reused only
//! when the stored `model.rs` equals the fresh source byte for byte and the binary's SHA-256
//! is the one recorded when it was built; anything else is rebuilt. A lock file per key keeps
//! two `hrnetc` processes from writing the same model's files at once. The nested build runs
//! with `--locked` against a `Cargo.lock` made from the workspace's by keeping exactly the
//! packages hrnet-runtime needs (the versions this checkout was tested with).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why the AOT engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    /// No cache directory could be determined, created or written.
    #[error("cannot use the cache directory {path}: {error}")]
    Cache {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The cache directory could be written by someone else: what it holds cannot be trusted.
    #[error("refusing the cache directory {path}: it {problem}")]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The hrnet-runtime sources the generated crate depends on are not where hrnetc was
    /// built from.
    #[error("cannot find the hrnet-runtime sources at {0}: set HRNET_RUNTIME_PATH to a checkout's hrnet-runtime directory")]
    Runtime(PathBuf),
    /// The checkout has no `Cargo.lock` to lock the build to.
    #[error("cannot read {path} (the lock file the generated crate is built with): {error}")]
    Lockfile {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// cargo or rustc could not be started.
    #[error("cannot run {tool}: {error}")]
    Tool {
        /// `cargo` or `rustc`.
        tool: String,
        /// Why.
        error: std::io::Error,
    },
    /// The generated crate did not build.
    #[error("building the generated model failed (log: {log})")]
    Build {
        /// Where cargo's output was saved.
        log: PathBuf,
    },
    /// The model binary failed; its message follows.
    #[error("{0}")]
    Run(String),
}

/// What [`build`] tells its caller about a build (a first build takes a minute or two).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// cargo is starting on the crate in this directory.
    Building {
        /// The generated crate.
        dir: &'a Path,
    },
    /// cargo finished.
    Built {
        /// The generated crate.
        dir: &'a Path,
        /// How long it took.
        elapsed: Duration,
    },
}

/// The fixed input every `hrnetc bench` engine times (`n` floats). The AOT driver
/// (`MAIN_RS`, compiled into the generated crate) writes the same expression out.
pub fn bench_input(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// Where generated models are built (not yet checked; see [`private_cache_dir`]).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HRNET_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("hrnet"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("hrnet"))
}

/// The cache directory, created (mode 0700) if missing, and checked to be private: owned by
/// the current user and writable by nobody else.
pub fn private_cache_dir() -> Result<PathBuf, AotError> {
    let root = cache_dir().ok_or_else(|| AotError::Cache {
        path: PathBuf::from("$HOME/.cache/hrnet"),
        error: std::io::Error::other("neither HRNET_CACHE_DIR, XDG_CACHE_HOME nor HOME is set"),
    })?;
    private_dir(&root)?;
    Ok(root)
}

/// Creates `dir` (and missing parents) with mode 0700 and checks that it is private.
fn private_dir(dir: &Path) -> Result<(), AotError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| AotError::Cache {
        path: dir.into(),
        error,
    })?;
    let meta = std::fs::metadata(dir).map_err(|error| AotError::Cache {
        path: dir.into(),
        error,
    })?;
    let refuse = |problem: String| AotError::Unsafe {
        path: dir.into(),
        problem,
    };
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(refuse(format!(
                "is owned by user {}, not by the current user ({me})",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "its group and by others",
                (true, false) => "its group",
                _ => "others",
            };
            return Err(refuse(format!(
                "is writable by {who} (mode {mode:o}), and the AOT engine executes what it finds there: `chmod 700 {}`",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// A temporary file in the private cache directory holding `bytes`, removed when dropped: a
/// checkpoint for the AOT binary to load when there is none on disk (`hrnetc bench` without
/// `--weights`).
pub fn temp_weights(bytes: &[u8]) -> Result<tempfile::NamedTempFile, AotError> {
    let root = private_cache_dir()?;
    let err = |error| AotError::Cache {
        path: root.clone(),
        error,
    };
    let mut file = tempfile::Builder::new()
        .prefix("random-weights-")
        .suffix(".safetensors")
        .tempfile_in(&root)
        .map_err(err)?;
    std::io::Write::write_all(&mut file, bytes).map_err(err)?;
    Ok(file)
}

fn runtime_path() -> Result<PathBuf, AotError> {
    let p = match std::env::var_os("HRNET_RUNTIME_PATH") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("hrnet-runtime"),
    };
    let p = p.canonicalize().map_err(|_| AotError::Runtime(p.clone()))?;
    if p.join("Cargo.toml").exists() {
        Ok(p)
    } else {
        Err(AotError::Runtime(p))
    }
}

/// Feeds the crate at `dir` into `h`: the relative path, length and contents of its manifest
/// and of every file under `src/`, in sorted order.
fn hash_sources(dir: &Path, h: &mut Sha256) -> Result<(), AotError> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if std::fs::metadata(path)?.is_dir() {
            for e in std::fs::read_dir(path)? {
                walk(&e?.path(), out)?;
            }
        } else {
            out.push(path.to_path_buf());
        }
        Ok(())
    }
    let err = |error| AotError::Cache {
        path: dir.into(),
        error,
    };
    let mut files = vec![dir.join("Cargo.toml")];
    walk(&dir.join("src"), &mut files).map_err(err)?;
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|error| AotError::Cache {
            path: f.clone(),
            error,
        })?;
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        part(h, rel.to_string_lossy().as_bytes());
        part(h, &bytes);
    }
    Ok(())
}

/// Adds one length-prefixed part to a key, so that no two sequences of parts collide.
fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rustc -vV`: the compiler's version, commit and host target.
fn rustc_version() -> Result<Vec<u8>, AotError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|error| AotError::Tool {
            tool: rustc.to_string_lossy().into_owned(),
            error,
        })?;
    Ok(out.stdout)
}

/// The environment variables and cargo configuration files that can change how cargo builds
/// the crate (flags, profile, target, wrappers).
fn build_environment(h: &mut Sha256) {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "RUSTC" | "RUSTC_WRAPPER" | "HRNET_ISA"
            ) || k.starts_with("CARGO_PROFILE_")
                || k.starts_with("CARGO_BUILD_")
                || (k.starts_with("CARGO_TARGET_") && k != "CARGO_TARGET_DIR")
        })
        .collect();
    vars.sort();
    for (k, v) in vars {
        part(h, k.as_bytes());
        part(h, v.as_bytes());
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = home {
        for name in ["config.toml", "config"] {
            if let Ok(bytes) = std::fs::read(home.join(name)) {
                part(h, name.as_bytes());
                part(h, &bytes);
            }
        }
    }
}

/// The manifest of the generated crate.
fn manifest(key: &str, runtime: &Path) -> String {
    format!(
        "[package]\nname = \"hrnet-aot-{key}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nhrnet-runtime = {{ path = {:?} }}\n\n[profile.release]\npanic = \"abort\"\n\n[workspace]\n",
        runtime.to_string_lossy()
    )
}

/// The driver compiled around a generated model. `run WEIGHTS THREADS INPUT OUTPUT` maps an
/// .npy of one input `[1, C, H, W]` or a batch `[N, C, H, W]` to an .npy of as many outputs
/// (a batch through `Model::run_batch`: whole inputs side by side on the threads); `bench
/// WEIGHTS THREADS RUNS WARMUP [BATCH]` times the model (on BATCH copies of the input, one
/// `run_batch` call per timed run) and prints the median and fastest run in milliseconds.
const MAIN_RS: &str = r#"// Driver for a model generated by hrnetc (--engine aot).
mod model {
    include!("model.rs");
}

use hrnet_runtime::npy;
use std::time::Instant;

fn fail(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(1)
}

/// The number of inputs in an input file of `shape`: `[N, C, H, W]`, `C, H, W` the network's.
fn batch_of(path: &str, shape: &[usize]) -> usize {
    match shape {
        [n, rest @ ..] if *n >= 1 && rest == &model::INPUT_SHAPE[1..] => *n,
        _ => fail(format!(
            "{path}: input has shape {shape:?}, the network takes {:?} (or a batch, [N, {}, {}, {}])",
            model::INPUT_SHAPE,
            model::INPUT_SHAPE[1],
            model::INPUT_SHAPE[2],
            model::INPUT_SHAPE[3]
        )),
    }
}

/// `shape` with the batch dimension set to `n`.
fn batched(mut shape: [usize; 4], n: usize) -> [usize; 4] {
    shape[0] = n;
    shape
}

/// Median and fastest of `runs` timed calls of `f` after `warmup` untimed ones.
fn timed(runs: usize, warmup: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, weights, threads, rest @ ..] = &args[..] else { fail("usage: MODE WEIGHTS THREADS ...".into()) };
    let threads: usize = threads.parse().unwrap_or_else(|_| fail(format!("bad thread count {threads}")));
    let m = model::Model::load(weights).unwrap_or_else(|e| fail(format!("{weights}: {e}")));
    let per_input: usize = model::INPUT_SHAPE.iter().product();
    let per_output: usize = model::OUTPUT_SHAPE.iter().product();
    match (mode.as_str(), rest) {
        ("run", [input, out]) => {
            let (shape, x) = npy::read_f32(input).unwrap_or_else(|e| fail(format!("{input}: {e}")));
            let n = batch_of(input, &shape);
            let mut y = vec![0f32; n * per_output];
            if n == 1 {
                m.run(&x, &mut y, &mut m.scratch(threads))
            } else {
                let xs: Vec<&[f32]> = x.chunks(per_input).collect();
                let mut ys: Vec<&mut [f32]> = y.chunks_mut(per_output).collect();
                m.run_batch(&xs, &mut ys, &mut m.batch_scratch(threads))
            }
            .unwrap_or_else(|e| fail(e.to_string()));
            npy::write_f32(out, &batched(model::OUTPUT_SHAPE, n), &y).unwrap_or_else(|e| fail(format!("{out}: {e}")));
        }
        ("bench", [runs, warmup, batch @ ..]) => {
            let runs: usize = runs.parse().unwrap_or_else(|_| fail(format!("bad run count {runs}")));
            let warmup: usize = warmup.parse().unwrap_or_else(|_| fail(format!("bad warm-up count {warmup}")));
            let batch: usize = match batch {
                [] => 1,
                [b] => b.parse().ok().filter(|&b| b >= 1).unwrap_or_else(|| fail(format!("bad batch size {b}"))),
                _ => fail("usage: bench WEIGHTS THREADS RUNS WARMUP [BATCH]".into()),
            };
            let x: Vec<f32> = (0..per_input).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
            let (median, min) = if batch == 1 {
                let mut scratch = m.scratch(threads);
                let mut y = vec![0f32; per_output];
                timed(runs, warmup, || m.run(&x, &mut y, &mut scratch).unwrap_or_else(|e| fail(e.to_string())))
            } else {
                let mut scratch = m.batch_scratch(threads);
                let xs: Vec<&[f32]> = vec![&x[..]; batch];
                let mut y = vec![0f32; batch * per_output];
                let mut ys: Vec<&mut [f32]> = y.chunks_mut(per_output).collect();
                timed(runs, warmup, || m.run_batch(&xs, &mut ys, &mut scratch).unwrap_or_else(|e| fail(e.to_string())))
            };
            println!("{median} {min}");
        }
        _ => fail("usage: run WEIGHTS THREADS INPUT OUTPUT | bench WEIGHTS THREADS RUNS WARMUP [BATCH]".into()),
    }
}
"#;

/// The `run` arm of [`MAIN_RS`] for a network with several outputs (HRNet-OCR): `run WEIGHTS
/// THREADS INPUT OUTPUT INDEX` writes output `INDEX` of every input.
const RUN_MULTI: &str = r#"        ("run", [input, out, index]) => {
            let index: usize = index
                .parse()
                .ok()
                .filter(|&i| i < model::OUTPUT_SHAPES.len())
                .unwrap_or_else(|| fail(format!("bad output index {index}")));
            let (shape, x) = npy::read_f32(input).unwrap_or_else(|e| fail(format!("{input}: {e}")));
            let n = batch_of(input, &shape);
            let mut scratch = m.scratch(threads);
            let mut outs: Vec<Vec<f32>> =
                model::OUTPUT_SHAPES.iter().map(|s| vec![0f32; s.iter().product()]).collect();
            let mut y = Vec::with_capacity(n * outs[index].len());
            for (i, x) in x.chunks(per_input).enumerate() {
                let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                m.run_outputs(x, &mut refs, &mut scratch).unwrap_or_else(|e| fail(format!("input {i}: {e}")));
                y.extend_from_slice(&outs[index]);
            }
            npy::write_f32(out, &batched(model::OUTPUT_SHAPES[index], n), &y)
                .unwrap_or_else(|e| fail(format!("{out}: {e}")));
        }
"#;

/// The driver's source for a network with `outputs` outputs.
fn main_rs(outputs: usize) -> String {
    const SINGLE: &str = r#"        ("run", [input, out]) => {
            let (shape, x) = npy::read_f32(input).unwrap_or_else(|e| fail(format!("{input}: {e}")));
            let n = batch_of(input, &shape);
            let mut y = vec![0f32; n * per_output];
            if n == 1 {
                m.run(&x, &mut y, &mut m.scratch(threads))
            } else {
                let xs: Vec<&[f32]> = x.chunks(per_input).collect();
                let mut ys: Vec<&mut [f32]> = y.chunks_mut(per_output).collect();
                m.run_batch(&xs, &mut ys, &mut m.batch_scratch(threads))
            }
            .unwrap_or_else(|e| fail(e.to_string()));
            npy::write_f32(out, &batched(model::OUTPUT_SHAPE, n), &y).unwrap_or_else(|e| fail(format!("{out}: {e}")));
        }
"#;
    assert!(
        MAIN_RS.contains(SINGLE),
        "the single-output run arm of MAIN_RS"
    );
    if outputs > 1 {
        MAIN_RS.replace(SINGLE, RUN_MULTI)
    } else {
        MAIN_RS.to_string()
    }
}

/// A built model binary.
#[derive(Debug, Clone)]
pub struct Built {
    /// The executable.
    pub exe: PathBuf,
    /// Whether this call built it (false: reused from the cache).
    pub fresh: bool,
}

/// The SHA-256 of a file, or `None` when it cannot be read.
fn file_sha256(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex(&Sha256::digest(&bytes)))
}

/// Builds (or reuses) the binary for generated `source` of a network with `outputs` outputs;
/// `progress` hears about a build.
pub fn build(
    source: &str,
    outputs: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Built, AotError> {
    let main_rs = main_rs(outputs);
    let root = private_cache_dir()?;
    let aot = root.join("aot");
    private_dir(&aot)?;
    let runtime = runtime_path()?;
    let lock_path = runtime
        .parent()
        .map_or_else(|| PathBuf::from("Cargo.lock"), |p| p.join("Cargo.lock"));
    let workspace_lock = std::fs::read(&lock_path).map_err(|error| AotError::Lockfile {
        path: lock_path.clone(),
        error,
    })?;

    let mut h = Sha256::new();
    part(&mut h, b"hrnet-aot key v2");
    part(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
    part(&mut h, source.as_bytes());
    part(&mut h, main_rs.as_bytes());
    part(&mut h, manifest("", &runtime).as_bytes());
    hash_sources(&runtime, &mut h)?;
    part(&mut h, &workspace_lock);
    part(&mut h, &rustc_version()?);
    build_environment(&mut h);
    let key = hex(&h.finalize());

    let dir = aot.join(&key);
    private_dir(&dir.join("src"))?;
    let target = aot.join("target");
    let exe = target.join("release").join(format!("hrnet-aot-{key}"));
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AotError::Cache { path, error }
    };

    // One process at a time per key: the lock is released when `lock` is dropped.
    let lock_file = dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(cache_err(&lock_file))?;
    lock.lock().map_err(cache_err(&lock_file))?;

    let model = dir.join("src").join("model.rs");
    let stamp = dir.join("built");
    let reusable = std::fs::read(&model).is_ok_and(|m| m == source.as_bytes())
        && std::fs::read_to_string(&stamp)
            .is_ok_and(|s| Some(s.trim_end()) == file_sha256(&exe).as_deref());
    if reusable {
        return Ok(Built { exe, fresh: false });
    }

    // Stale or tampered with: rewrite everything (a newer model.rs makes cargo rebuild the
    // crate even if something replaced its outputs) and drop the old binary and stamp.
    let _ = std::fs::remove_file(&stamp);
    let _ = std::fs::remove_file(&exe);
    let manifest_path = dir.join("Cargo.toml");
    std::fs::write(&manifest_path, manifest(&key, &runtime)).map_err(cache_err(&manifest_path))?;
    let main = dir.join("src").join("main.rs");
    std::fs::write(&main, &main_rs).map_err(cache_err(&main))?;
    std::fs::write(&model, source).map_err(cache_err(&model))?;
    let lockfile = dir.join("Cargo.lock");
    std::fs::write(&lockfile, &workspace_lock).map_err(cache_err(&lockfile))?;

    let log = dir.join("build.log");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run_cargo = |args: &[&str]| {
        Command::new(&cargo)
            .args(args)
            .arg("--manifest-path")
            .arg(&manifest_path)
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| AotError::Tool {
                tool: cargo.to_string_lossy().into_owned(),
                error,
            })
    };
    let mut text = Vec::new();
    progress(Progress::Building { dir: &dir });
    let start = Instant::now();
    // Keep exactly the workspace lock's packages that the generated crate needs, at the
    // workspace's versions (nothing is resolved anew), then build against that, locked.
    let pruned = run_cargo(&["update", "--workspace", "--offline", "--quiet"])?;
    text.extend_from_slice(&pruned.stderr);
    let built = if pruned.status.success() {
        let out = run_cargo(&["build", "--release", "--locked", "--quiet"])?;
        text.extend_from_slice(&out.stdout);
        text.extend_from_slice(&out.stderr);
        out.status.success()
    } else {
        false
    };
    std::fs::write(&log, &text).map_err(cache_err(&log))?;
    let Some(sha) = built.then(|| file_sha256(&exe)).flatten() else {
        return Err(AotError::Build { log });
    };
    progress(Progress::Built {
        dir: &dir,
        elapsed: start.elapsed(),
    });
    std::fs::write(&stamp, format!("{sha}\n")).map_err(cache_err(&stamp))?;
    Ok(Built { exe, fresh: true })
}

/// Runs the built binary with `args`, returning its standard output.
pub fn invoke(exe: &Path, args: &[&std::ffi::OsStr]) -> Result<String, AotError> {
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| AotError::Tool {
            tool: exe.display().to_string(),
            error,
        })?;
    if !out.status.success() {
        return Err(AotError::Run(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(dir: &Path) -> String {
        let mut h = Sha256::new();
        hash_sources(dir, &mut h).unwrap();
        hex(&h.finalize())
    }

    #[test]
    fn key_follows_every_source_edit() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let src = dir.join("src").join("kernels");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(dir.join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(src.join("conv.rs"), "fn a() {}").unwrap();
        let before = key_of(dir);
        assert_eq!(before, key_of(dir), "stable when nothing changed");
        std::fs::write(src.join("conv.rs"), "fn b() {}").unwrap();
        let edited = key_of(dir);
        assert_ne!(before, edited, "same size, other contents");
        std::fs::write(src.join("new.rs"), "").unwrap();
        assert_ne!(edited, key_of(dir), "a file was added");
    }

    #[cfg(unix)]
    #[test]
    fn private_dirs_are_created_0700_and_shared_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a").join("b");
        private_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for (mode, who) in [
            (0o770, "its group (mode 770)"),
            (0o707, "others (mode 707)"),
            (0o777, "its group and by others"),
        ] {
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = private_dir(&fresh).unwrap_err().to_string();
            assert!(
                e.contains("refusing the cache directory") && e.contains(who),
                "{e}"
            );
        }
    }
}
