//! Line and column of YAML key paths, for error messages.
//!
//! serde_yaml reports positions for its own errors but gives values no spans, so this module
//! indexes the source text itself. It understands what experiment files are made of — block
//! mappings, block sequences (`- 4`) and one-line flow sequences (`[192, 256]`) — and maps
//! paths such as `MODEL.EXTRA.STAGE3.NUM_CHANNELS[1]` to 1-based `(line, column)`. Anything it
//! does not understand is skipped; a lookup that misses falls back to the nearest ancestor,
//! so a position is a help, never a requirement.

use std::collections::HashMap;

/// A 1-based position in the YAML source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// Key path → position, built once per file.
#[derive(Debug, Default)]
pub struct Spans {
    map: HashMap<String, Pos>,
}

struct Frame {
    indent: usize,
    path: String,
    next_index: usize,
}

impl Spans {
    /// Indexes `src`.
    pub fn index(src: &str) -> Spans {
        let mut map = HashMap::new();
        // Stack of open mapping keys; the bottom frame is the document root.
        let mut stack: Vec<Frame> = Vec::new();
        for (lineno, raw) in src.lines().enumerate() {
            let line = strip_comment(raw);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with("---") || trimmed.starts_with("...") {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(item) = trimmed
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                // A block sequence item belongs to the innermost key at a smaller indent, or
                // at the same indent (YAML allows `KEY:\n- 1` without extra indentation).
                while stack.last().is_some_and(|f| f.indent > indent) {
                    stack.pop();
                }
                if let Some(parent) = stack.last_mut() {
                    let path = format!("{}[{}]", parent.path, parent.next_index);
                    parent.next_index += 1;
                    let col = indent + 1 + (item.len() - item.trim_start().len()) + 1;
                    map.entry(path).or_insert(Pos {
                        line: lineno + 1,
                        col,
                    });
                }
                continue;
            }
            let Some((key, value, value_col)) = split_key(trimmed) else {
                continue;
            };
            while stack.last().is_some_and(|f| f.indent >= indent) {
                stack.pop();
            }
            let path = match stack.last() {
                Some(parent) => format!("{}.{}", parent.path, key),
                None => key.to_string(),
            };
            map.entry(path.clone()).or_insert(Pos {
                line: lineno + 1,
                col: indent + 1,
            });
            if value.starts_with('[') {
                index_flow_seq(&mut map, &path, value, lineno + 1, indent + value_col + 1);
            }
            stack.push(Frame {
                indent,
                path,
                next_index: 0,
            });
        }
        Spans { map }
    }

    /// Position of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Drops a trailing `# comment` that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (prev == ' ' || prev == '\t' || i == 0) => {
                return line[..i].trim_end();
            }
            _ => {}
        }
        prev = c;
    }
    line.trim_end()
}

/// `KEY: value` → (key, value, byte offset of value in `s`).
fn split_key(s: &str) -> Option<(&str, &str, usize)> {
    let colon = s
        .find(": ")
        .or_else(|| s.strip_suffix(':').map(|k| k.len()))?;
    let key = s[..colon].trim().trim_matches(|c| c == '\'' || c == '"');
    if key.is_empty() || key.contains(['[', '{', ',']) {
        return None;
    }
    let rest = &s[(colon + 1).min(s.len())..];
    let value = rest.trim_start();
    let value_col = s.len() - value.len();
    Some((key, value, value_col))
}

fn index_flow_seq(
    map: &mut HashMap<String, Pos>,
    path: &str,
    value: &str,
    line: usize,
    col0: usize,
) {
    let Some(close) = value.find(']') else { return };
    let mut offset = 1;
    for (i, item) in value[1..close].split(',').enumerate() {
        let lead = item.len() - item.trim_start().len();
        map.entry(format!("{path}[{i}]")).or_insert(Pos {
            line,
            col: col0 + offset + lead,
        });
        offset += item.len() + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
GPUS: (0,1,2,3)   # comment
MODEL:
  NAME: pose_hrnet
  IMAGE_SIZE: [192, 256]
  EXTRA:
    STAGE2:
      NUM_CHANNELS:
      - 32
      - 64
    STAGE3:
      NUM_BLOCKS:
        - 4
  HEATMAP_SIZE:
  - 48
";

    #[test]
    fn finds_keys_items_and_flow_items() {
        let s = Spans::index(SRC);
        let at = |p: &str| s.find(p).map(|p| (p.line, p.col));
        assert_eq!(at("GPUS"), Some((1, 1)));
        assert_eq!(at("MODEL.NAME"), Some((3, 3)));
        assert_eq!(at("MODEL.IMAGE_SIZE[1]"), Some((4, 21)));
        assert_eq!(at("MODEL.EXTRA.STAGE2.NUM_CHANNELS[1]"), Some((9, 9)));
        assert_eq!(at("MODEL.EXTRA.STAGE3.NUM_BLOCKS[0]"), Some((12, 11)));
        assert_eq!(at("MODEL.HEATMAP_SIZE[0]"), Some((14, 5)));
        // Unknown leaves fall back to their parent.
        assert_eq!(at("MODEL.EXTRA.STAGE4"), Some((5, 3)));
        assert_eq!(at("NOPE"), None);
    }
}
