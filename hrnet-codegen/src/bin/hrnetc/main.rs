//! `hrnetc`: the HRNet compiler's command line. The interface is stable (see DESIGN.md):
//! other tools depend on it.
//!
//! One module per verb (`compile`, `graph`, `run`, `bench`, `inspect`, `eval`), each with its
//! arguments and its `main`; [`loaded`] reads a config once per command into what every verb
//! that runs or compiles a network shares, and reads every other input through
//! `hrnet_runtime::fsio` (regular files only, size-capped).

mod bench;
mod coco_run;
mod compile;
mod eval;
mod graph;
mod inspect;
mod loaded;
mod run;

use clap::{Parser, Subcommand};
use std::borrow::Cow;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hrnetc",
    version,
    about = "Compile official HRNet configs into fast, specialized Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a config to specialized Rust.
    Compile(compile::Args),
    /// Print the IR of a config, raw or after passes.
    Graph(graph::Args),
    /// Run a network on an .npy tensor, or on an image: keypoints, top classes or a class map.
    Run(run::Args),
    /// Time a network; prints one JSON line.
    Bench(bench::Args),
    /// List a checkpoint's tensors; with a config, what is missing, extra or mis-shaped.
    Inspect(inspect::Args),
    /// The ten COCO keypoint statistics of a results file (as pycocotools prints them).
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Compile(a) => compile::main(a),
        Command::Graph(a) => graph::main(a),
        Command::Run(a) => run::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Inspect(a) => inspect::main(a),
        Command::Eval(a) => eval::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", printable(&render_error(&e), true));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message before it
/// already contains (many library errors print their source themselves).
fn render_error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

/// `s` safe to print on a terminal: control characters (escape sequences) and bidirectional
/// overrides become `\u{…}` escapes and `\` becomes `\\`; with `keep_newlines`, line breaks
/// and tabs stay as they are.
fn printable(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let bad = |c: char| {
        c == '\\'
            || (c.is_control() && !(keep_newlines && matches!(c, '\n' | '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_terminal_controls() {
        assert_eq!(
            printable("layer1.0.conv1.weight", true),
            "layer1.0.conv1.weight"
        );
        assert_eq!(printable("a\u{1b}[2Jb", true), "a\\u{1b}[2Jb");
        assert_eq!(printable("a\\u{1b}", true), "a\\\\u{1b}");
        assert_eq!(printable("x\ny", true), "x\ny");
        assert_eq!(printable("x\ny", false), "x\\u{a}y");
        assert_eq!(printable("\u{202e}gpj", false), "\\u{202e}gpj");
    }
}
