//! Limits on what a config may ask for, checked before anything big is built.
//!
//! Two kinds:
//! - the YAML text itself ([`prescan`]): its size and how deeply it nests, checked before
//!   serde_yaml reads it (a few hundred kilobytes of nested `[[[…]]]` otherwise cost it tens of
//!   seconds);
//! - the resolved network ([`check_network`]): the parameters a checkpoint must hold and an
//!   upper bound of the activation memory, the head included, so that `graph`, `compile` and
//!   `bench` (which makes random weights for every parameter) refuse a network nobody could run
//!   before allocating anything for it.
//!
//! [`Footprint`] counts parameters exactly as lowering creates them for the pose head and
//! the backbone; the classification and segmentation heads are estimated from their official
//! shape.

use super::resolve::{BlockKind, Network, StageSpec, Task, MAX_ACTIVATION};
use super::spans::{Pos, Spans};
use super::ConfigError;

/// Largest config file accepted, in bytes (official configs are about 3 KB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Deepest nesting of YAML collections accepted (official configs nest 5 deep).
pub const MAX_NESTING: usize = 64;
/// Most parameters (stored floats: conv weights and biases, BatchNorm's four vectors) a
/// network may have: 4 GiB of f32. The largest official network, HRNet-W64 for
/// classification, has 128 M.
pub const MAX_PARAMETERS: u64 = 1 << 30;
/// Most activation memory a network may need, in floats (4 GiB of f32), as bounded by
/// [`Footprint::arena`].
pub const MAX_ARENA: u64 = 1 << 30;

/// Checks the size and nesting depth of a config's text.
///
/// Depth counts block mappings (by indentation), block sequence items (`- `) and flow
/// collections (`[`, `{`) outside quotes and comments; block scalars (`|`, `>`) are skipped.
/// The error names the innermost key and the position where the limit is crossed.
pub fn prescan(src: &str) -> Result<(), ConfigError> {
    if src.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError {
            path: String::new(),
            pos: None,
            message: format!(
                "the file has {} bytes: the limit is {MAX_CONFIG_BYTES} (an experiment config has a few thousand)",
                src.len()
            ),
        });
    }
    // Open block keys: (indentation, key).
    let mut keys: Vec<(usize, &str)> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    // Indentation of the key line that opened a block scalar being skipped.
    let mut scalar_at: Option<usize> = None;
    for (lineno, line) in src.lines().enumerate() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        let indent = line.len() - trimmed.len();
        if let Some(at) = scalar_at {
            if trimmed.is_empty() || indent > at {
                continue;
            }
            scalar_at = None;
        }
        let mut dashes = 0;
        let mut col = indent;
        if quote.is_none() && flow == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            while keys.last().is_some_and(|&(i, _)| i >= indent) {
                keys.pop();
            }
            // `- - key: v`: each dash opens a sequence.
            let mut rest = trimmed;
            while let Some(r) = rest
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                dashes += 1;
                let r = r.trim_start_matches(' ');
                col += rest.len() - r.len();
                rest = r;
            }
            let (key, value) = match rest
                .find(": ")
                .or_else(|| strip_comment(rest).strip_suffix(':').map(str::len))
            {
                Some(k) if !rest.starts_with(['[', '{', '"', '\'']) => {
                    (rest[..k].trim(), &rest[k + 1..])
                }
                _ => ("", rest),
            };
            keys.push((indent, key));
            let value = strip_comment(value).trim_start();
            if let Some(ind) = value.strip_prefix(['|', '>']) {
                if ind
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
                {
                    scalar_at = Some(indent);
                }
            }
        }
        let base = keys.len() + dashes;
        let too_deep = |depth: usize, at: usize| {
            ConfigError {
            path: keys
                .iter()
                .map(|&(_, k)| k)
                .filter(|k| !k.is_empty())
                .collect::<Vec<_>>()
                .join("."),
            pos: Some(Pos {
                line: lineno + 1,
                col: at + 1,
            }),
            message: format!(
                "the YAML nests {depth} levels deep here: the limit is {MAX_NESTING} (an experiment config needs about 5)"
            ),
        }
        };
        if base + flow > MAX_NESTING {
            return Err(too_deep(base + flow, col));
        }
        // A quote opens a quoted scalar only where a scalar starts; `prev` is the previous
        // character, `last` the previous one that is not white space (`:` at a line's start).
        let (mut prev, mut last) = (' ', ':');
        // Where a single-quoted scalar closed: `''` right there is an escaped quote.
        let mut closed_at = None;
        for (i, c) in line.char_indices().skip_while(|&(i, _)| i < col) {
            match (quote, c) {
                (Some('\''), '\'') => {
                    quote = None;
                    closed_at = Some(i + 1);
                }
                (None, '\'') if closed_at == Some(i) => quote = Some(c),
                (Some('"'), '"') if prev != '\\' => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') if matches!(last, ':' | '-' | '[' | '{' | ',' | '?') => {
                    quote = Some(c)
                }
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if base + flow > MAX_NESTING {
                        return Err(too_deep(base + flow, i));
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            // A backslash escapes only the next character.
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            if !c.is_whitespace() {
                last = c;
            }
        }
    }
    Ok(())
}

/// Drops a `# comment` outside quotes from a line's remainder.
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if prev == ' ' || prev == '\t' => return s[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    s.trim_end()
}

/// What a network needs in memory: parameters and activations, with the key paths of the
/// parts that need the most (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Floats a checkpoint holds for the network: conv weights and biases, and BatchNorm's
    /// weight, bias, running mean and running variance.
    pub parameters: u64,
    /// The part with the most parameters: its count and key path (`MODEL.EXTRA.STAGE4`,
    /// `MODEL.NUM_JOINTS`, …).
    pub heaviest: (u64, String),
    /// An upper bound, in floats, of the activations alive at once (the input, every branch's
    /// tensors before and after the current module, the largest block's intermediates, or
    /// the head's), over the whole network.
    pub arena: u64,
    /// Where the bound peaks: key path of that part.
    pub arena_at: String,
    /// The head's largest single activation, in floats, and its key path.
    pub head_activation: (u64, String),
}

/// Floats of a conv's weight (and bias).
fn conv(cin: u64, cout: u64, k: u64, bias: bool) -> u64 {
    cout * cin * k * k + if bias { cout } else { 0 }
}

/// Floats of a BatchNorm: weight, bias, running mean, running variance.
fn bn(c: u64) -> u64 {
    4 * c
}

/// Output side of a 3×3 stride-2 conv with padding 1.
fn half(n: u64) -> u64 {
    n.div_ceil(2)
}

/// One residual block from `in_c` channels: its parameters, output channels and the floats
/// its intermediates need besides its input (per pixel).
fn block(in_c: u64, kind: BlockKind, planes: u64) -> (u64, u64, u64) {
    let out = planes * kind.expansion() as u64;
    let mut p = match kind {
        BlockKind::Basic => {
            conv(in_c, planes, 3, false) + bn(planes) + conv(planes, planes, 3, false) + bn(planes)
        }
        BlockKind::Bottleneck => {
            conv(in_c, planes, 1, false)
                + bn(planes)
                + conv(planes, planes, 3, false)
                + bn(planes)
                + conv(planes, out, 1, false)
                + bn(out)
        }
    };
    if in_c != out {
        p += conv(in_c, out, 1, false) + bn(out);
    }
    (p, out, 2 * planes + 2 * out)
}

impl Footprint {
    /// Counts `net` as lowering builds it.
    pub fn of(net: &Network) -> Footprint {
        let mut f = Footprint {
            parameters: 0,
            heaviest: (0, String::new()),
            arena: 0,
            arena_at: String::new(),
            head_activation: (0, String::new()),
        };
        let part = |f: &mut Footprint, params: u64, live: u64, path: &str| {
            f.parameters = f.parameters.saturating_add(params);
            if params > f.heaviest.0 {
                f.heaviest = (params, path.to_string());
            }
            if live > f.arena {
                f.arena = live;
                f.arena_at = path.to_string();
            }
        };
        let (h, w) = (net.input_hw.0 as u64, net.input_hw.1 as u64);
        let input = 3 * h * w;
        // Side lengths of branch b: the stem's two stride-2 convs, then b more.
        let area = |b: usize| {
            let (mut y, mut x) = (half(half(h)), half(half(w)));
            for _ in 0..b {
                (y, x) = (half(y), half(x));
            }
            y * x
        };

        let stem = conv(3, 64, 3, false) + bn(64) + conv(64, 64, 3, false) + bn(64);
        part(
            &mut f,
            stem,
            input + 64 * half(h) * half(w) + 64 * area(0),
            "MODEL.EXTRA",
        );

        let l1 = &net.layer1;
        let (mut c, mut params, mut extra) = (64u64, 0u64, 0u64);
        for _ in 0..l1.blocks[0] {
            let (p, out, e) = block(c, l1.block, l1.planes[0] as u64);
            params += p;
            extra = extra.max(e + c);
            c = out;
        }
        let l1_path = "MODEL.EXTRA.STAGE1";
        part(&mut f, params, input + area(0) * (64 + extra), l1_path);

        let mut chans = vec![c];
        let last_stage = net.stages.len() + 1;
        for (si, st) in net.stages.iter().enumerate() {
            let s = si + 2;
            let path = format!("MODEL.EXTRA.STAGE{s}");
            let (params, out, extra) = stage(&chans, st, s == last_stage, &net.task);
            let branches: u64 = out.iter().enumerate().map(|(b, &c)| c * area(b)).sum();
            let live = input
                + 2 * branches
                + extra
                    .iter()
                    .enumerate()
                    .map(|(b, &e)| e * area(b))
                    .max()
                    .unwrap_or(0);
            part(&mut f, params, live, &path);
            chans = out;
        }

        let features: u64 = chans.iter().enumerate().map(|(b, &c)| c * area(b)).sum();
        let (path, params, largest, live) = match net.task {
            Task::Pose {
                num_joints,
                final_kernel,
            } => {
                let j = num_joints as u64;
                let out = j * area(0);
                (
                    "MODEL.NUM_JOINTS",
                    conv(chans[0], j, final_kernel as u64, true),
                    out,
                    input + chans[0] * area(0) + out,
                )
            }
            // The official head: a Bottleneck of 32·2^b planes per branch, stride-2 3×3 convs
            // (with bias) + BN merging them downwards, a 1×1 conv (with bias) + BN to 2048, an
            // average pool and a linear layer.
            Task::Classification { num_classes, .. } => {
                let mut p = 0;
                let mut widest = 0;
                let mut prev: Option<u64> = None;
                for (b, &c) in chans.iter().enumerate() {
                    let (bp, out, e) = block(c, BlockKind::Bottleneck, 32 << b);
                    p += bp;
                    widest = widest.max((e + c) * area(b));
                    if let Some(pc) = prev {
                        p += conv(pc, out, 3, true) + bn(out);
                    }
                    prev = Some(out);
                }
                let last = prev.unwrap_or(0);
                let n = num_classes as u64;
                p += conv(last, 2048, 1, true) + bn(2048) + 2048 * n + n;
                let top = 2048 * area(chans.len() - 1);
                ("MODEL.NUM_CLASSES", p, top, input + features + widest + top)
            }
            // The official head: every branch resized to branch 0 and concatenated, a 1×1 conv
            // (with bias) + BN + ReLU, a conv (with bias) to the classes. OCR adds its aux head
            // (the same shape), a 3×3 conv to MID, the object-context block (f_pixel, f_object:
            // two 1×1 convs MID→KEY→KEY; f_down MID→KEY; f_up KEY→MID; each with BN) and
            // conv_bn_dropout 2·MID→MID + BN, then cls_head MID→classes.
            Task::Segmentation {
                num_classes,
                final_kernel,
                ocr,
                ..
            } => {
                let all: u64 = chans.iter().sum();
                let n = num_classes as u64;
                let k = final_kernel as u64;
                let last_layer = conv(all, all, 1, true) + bn(all) + conv(all, n, k, true);
                let cat = all * area(0);
                let out = n * area(0);
                // The resized parts, the concatenation and the 1×1 conv's output can all be
                // alive together.
                let base = input + features + 3 * cat + out;
                match ocr {
                    None => ("DATASET.NUM_CLASSES", last_layer, cat.max(out), base),
                    Some(o) => {
                        let (mid, key) = (o.mid_channels as u64, o.key_channels as u64);
                        let p = last_layer
                            + conv(all, mid, 3, true)
                            + bn(mid)
                            + 2 * (conv(mid, key, 1, false)
                                + bn(key)
                                + conv(key, key, 1, false)
                                + bn(key))
                            + conv(mid, key, 1, false)
                            + bn(key)
                            + conv(key, mid, 1, false)
                            + bn(mid)
                            + conv(2 * mid, mid, 1, false)
                            + bn(mid)
                            + conv(mid, n, 1, true);
                        // Features, context and their concatenation at MID and 2·MID, the
                        // query/key/attention maps at KEY, both logits.
                        let extra = area(0) * (4 * mid + 3 * key + 2 * n);
                        let largest = cat.max(2 * mid * area(0));
                        ("DATASET.NUM_CLASSES", p, largest, base + extra)
                    }
                }
            }
        };
        part(&mut f, params, live, path);
        f.head_activation = (largest, path.to_string());
        f
    }
}

/// One stage from branches of `chans` channels: its parameters (transition, modules), its
/// output channels, and per branch the floats per pixel its blocks or exchange units need
/// besides the module's inputs and outputs.
fn stage(chans: &[u64], st: &StageSpec, last: bool, task: &Task) -> (u64, Vec<u64>, Vec<u64>) {
    let cur: Vec<u64> = st.out_channels().into_iter().map(|c| c as u64).collect();
    let pre = chans.len();
    let mut p = 0;
    // Transition.
    for (i, &c) in cur.iter().enumerate() {
        if i < pre {
            if chans[i] != c {
                p += conv(chans[i], c, 3, false) + bn(c);
            }
        } else {
            let from = chans[pre - 1];
            let links = (i + 1 - pre) as u64;
            p += (links - 1) * (conv(from, from, 3, false) + bn(from))
                + conv(from, c, 3, false)
                + bn(c);
        }
    }
    let nb = cur.len();
    let mut extra = vec![0u64; nb];
    for m in 0..st.modules {
        let mut xs = cur.clone();
        for (b, x) in xs.iter_mut().enumerate() {
            for _ in 0..st.blocks[b] {
                let (bp, out, e) = block(*x, st.block, st.planes[b] as u64);
                p += bp;
                extra[b] = extra[b].max(e);
                *x = out;
            }
        }
        if nb == 1 {
            continue;
        }
        let single = matches!(task, Task::Pose { .. }) && last && m + 1 == st.modules;
        let outputs = if single { 1 } else { nb };
        for i in 0..outputs {
            for j in 0..nb {
                let (ci, cj) = (xs[i], xs[j]);
                if j > i {
                    p += conv(cj, ci, 1, false) + bn(ci);
                    // The 1×1 conv's output at branch j, the resized one at branch i.
                    extra[j] = extra[j].max(ci);
                    extra[i] = extra[i].max(2 * ci);
                } else if j < i {
                    let links = (i - j) as u64;
                    p += (links - 1) * (conv(cj, cj, 3, false) + bn(cj))
                        + conv(cj, ci, 3, false)
                        + bn(ci);
                    extra[j] = extra[j].max(cj);
                }
            }
        }
    }
    (p, cur, extra)
}

/// Checks `net` against [`MAX_ACTIVATION`] (the head's activations), [`MAX_PARAMETERS`] and
/// [`MAX_ARENA`].
pub fn check_network(net: &Network, spans: &Spans) -> Result<(), ConfigError> {
    let f = Footprint::of(net);
    let err = |path: &str, message: String| ConfigError {
        path: path.to_string(),
        pos: spans.find(path),
        message,
    };
    let mib = |floats: u64| (floats * 4) >> 20;
    let (h, w) = net.input_hw;
    let (largest, path) = &f.head_activation;
    if *largest > MAX_ACTIVATION as u64 {
        return Err(err(
            path,
            format!(
                "with a {w}x{h} input the {} head makes a {} MiB activation: the limit is {} MiB",
                net.task.kind(),
                mib(*largest),
                mib(MAX_ACTIVATION as u64)
            ),
        ));
    }
    if f.parameters > MAX_PARAMETERS {
        let (n, path) = &f.heaviest;
        return Err(err(
            path,
            format!(
                "the network has {} parameters ({} MiB of f32), {n} of them here: the limit is {MAX_PARAMETERS} ({} MiB)",
                f.parameters,
                mib(f.parameters),
                mib(MAX_PARAMETERS)
            ),
        ));
    }
    if f.arena > MAX_ARENA {
        return Err(err(
            &f.arena_at,
            format!(
                "with a {w}x{h} input the activations alive at once here need up to {} MiB: the limit is {} MiB",
                mib(f.arena),
                mib(MAX_ARENA)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(src: &str) -> ConfigError {
        prescan(src).expect_err("too deep")
    }

    #[test]
    fn official_shapes_pass() {
        let src = "MODEL:\n  EXTRA:\n    STAGE2:\n      NUM_CHANNELS: [32, 64]   # c\n      BLOCK: |\n        text\n            more\n    STAGE3:\n      NUM_BLOCKS:\n      - 4\n      - - 5\n";
        prescan(src).unwrap();
    }

    #[test]
    fn flow_nesting_is_limited() {
        let src = format!("MODEL:\n  X: {}1{}\n", "[".repeat(100), "]".repeat(100));
        let e = depth_error(&src);
        assert_eq!(e.path, "MODEL.X");
        // MODEL, X and 63 brackets are 65 levels: the 63rd bracket, column 6 + 62.
        assert_eq!(e.pos, Some(Pos { line: 2, col: 68 }));
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "MODEL:\n  X: '{}' # {}\n  Y: \"{}\\\"\"\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        prescan(&quoted).unwrap();
    }

    #[test]
    fn block_nesting_is_limited() {
        let src: String = (0..70)
            .map(|d| format!("{}K{d}:\n", " ".repeat(d)))
            .collect();
        let e = depth_error(&src);
        assert_eq!(e.pos.map(|p| p.line), Some(65));
        assert!(e.path.starts_with("K0.K1.K2."), "{}", e.path);
        let dashes = format!("A:\n{}x\n", "- ".repeat(80));
        assert_eq!(depth_error(&dashes).pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn size_is_limited() {
        let src = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
        let e = prescan(&src).unwrap_err();
        assert!(e.message.contains("the limit is 1048576"), "{}", e.message);
    }
}
