//! The front end: official experiment YAML → a validated [`Network`] description.
//!
//! Three steps, as in naga's WGSL front end: [`config`] mirrors the YAML one-to-one (serde),
//! [`resolve`] checks the cross-field rules and computes per-branch channels, and
//! [`crate::lower`] builds the graph. No petgraph type appears before lowering. [`limits`]
//! bounds the text before serde_yaml reads it and the resolved network's memory.

pub mod config;
pub mod limits;
pub mod resolve;
pub mod spans;

pub use resolve::{BlockKind, Network, OcrSpec, StageSpec, Task};

use spans::Pos;
use std::fmt;

/// A problem in the user's config: the YAML key path, its position, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `MODEL.EXTRA.STAGE3.NUM_CHANNELS[1]`; empty for whole-file problems.
    pub path: String,
    /// Where in the file, when known.
    pub pos: Option<Pos>,
    /// What is wrong, phrased so a person can act on it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.pos) {
            (false, Some(p)) => write!(
                f,
                "{} (line {}, column {}): {}",
                self.path, p.line, p.col, self.message
            ),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(p)) => write!(f, "line {}, column {}: {}", p.line, p.col, self.message),
            (true, None) => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates an experiment file's text.
pub fn parse(src: &str) -> Result<Network, ConfigError> {
    limits::prescan(src)?;
    let spans = spans::Spans::index(src);
    let meaningful = src.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---" && t != "..."
    });
    if !meaningful {
        return Err(ConfigError {
            path: String::new(),
            pos: None,
            message: "the file is empty: expected an HRNet experiment config with a MODEL section"
                .into(),
        });
    }
    let exp: config::Experiment = serde_yaml::from_str(src).map_err(|e| from_serde(&e))?;
    resolve::resolve(&exp, &spans)
}

/// Turns serde_yaml's `PATH: message at line L column C` into a [`ConfigError`].
fn from_serde(e: &serde_yaml::Error) -> ConfigError {
    let pos = e.location().map(|l| Pos {
        line: l.line(),
        col: l.column(),
    });
    let mut text = e.to_string();
    if let Some(cut) = text.rfind(" at line ") {
        text.truncate(cut);
    }
    // serde_yaml prefixes errors inside the document with the key path (`MODEL.EXTRA: …`).
    let (path, message) = match text.split_once(": ") {
        Some((p, m))
            if !p.contains(' ') && p.chars().next().is_some_and(|c| c.is_ascii_uppercase()) =>
        {
            (p.to_string(), m.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    let message = match message.split_once("expected struct ") {
        Some((head, _)) => format!("{head}expected a mapping of keys"),
        None => message,
    };
    let message = if path.is_empty() && !message.starts_with("invalid") && e.location().is_some() {
        format!("YAML syntax error: {message}")
    } else {
        message
    };
    ConfigError { path, pos, message }
}
