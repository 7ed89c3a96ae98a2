//! Cross-field validation: the YAML mirror → a [`Network`] with every channel count known.
//!
//! Every rule the official model code relies on implicitly is checked here explicitly, with
//! the key path and line of the offending value. Limits keep any config from making the
//! compiler (or a run) allocate absurd amounts of memory; the whole network's parameters and
//! activations are bounded in [`super::limits`].

use super::config::{Experiment, Stage};
use super::spans::Spans;
use super::ConfigError;

/// Largest channel count accepted for one branch (the official family tops out at 512).
pub const MAX_CHANNELS: usize = 4096;
/// Largest number of blocks in one branch of one module.
pub const MAX_BLOCKS: usize = 64;
/// Largest number of modules in one stage.
pub const MAX_MODULES: usize = 64;
/// Largest number of branches in one stage.
pub const MAX_BRANCHES: usize = 6;
/// Largest image side, in pixels.
pub const MAX_IMAGE_SIDE: usize = 8192;
/// Smallest side of an input size given apart from the config ([`Network::with_input_size`]):
/// the 1/32 branch of a four-branch network needs one pixel.
pub const MIN_INPUT_SIDE: usize = 32;
/// Largest number of elements of any one activation (1 GiB of f32).
pub const MAX_ACTIVATION: usize = 1 << 28;
/// Largest number of residual blocks in stages 2–4 together.
pub const MAX_TOTAL_BLOCKS: usize = 4096;
/// Largest number of classes or joints.
pub const MAX_OUTPUTS: usize = 100_000;

/// What the network is for; decides the head and the exchange unit's resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Top-down pose (`pose_hrnet`): heatmaps from branch 0 through `final_layer`.
    Pose {
        /// `MODEL.NUM_JOINTS`.
        num_joints: usize,
        /// `MODEL.EXTRA.FINAL_CONV_KERNEL` (1 or 3).
        final_kernel: usize,
    },
    /// ImageNet classification (`cls_hrnet`, HRNetV2p): `incre_modules`, `downsamp_modules`,
    /// `final_layer` to 2048 channels, global average pool, `classifier`.
    Classification {
        /// `MODEL.NUM_CLASSES` (default 1000).
        num_classes: usize,
    },
    /// Semantic segmentation (`seg_hrnet`, HRNetV2; `seg_hrnet_ocr`, HRNet-OCR): all branches
    /// resized to branch 0 and concatenated, then `last_layer` (or the OCR head).
    Segmentation {
        /// `DATASET.NUM_CLASSES`.
        num_classes: usize,
        /// `MODEL.EXTRA.FINAL_CONV_KERNEL` (1 or 3) of `last_layer` / `aux_head`.
        final_kernel: usize,
        /// `align_corners` of every bilinear resize: `MODEL.ALIGN_CORNERS`, by default false
        /// for `seg_hrnet` and true for `seg_hrnet_ocr` (the defaults of their branches of
        /// the official code).
        align_corners: bool,
        /// The OCR head (`seg_hrnet_ocr`).
        ocr: Option<OcrSpec>,
    },
}

/// Widths of the OCR head (`MODEL.OCR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcrSpec {
    /// `MID_CHANNELS` (default 512): `conv3x3_ocr`'s output, the object region width.
    pub mid_channels: usize,
    /// `KEY_CHANNELS` (default 256): query/key/value width of the object attention.
    pub key_channels: usize,
}

impl Task {
    /// A short name: `pose`, `classification`, `segmentation`.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Pose { .. } => "pose",
            Task::Classification { .. } => "classification",
            Task::Segmentation { ocr: None, .. } => "segmentation",
            Task::Segmentation { ocr: Some(_), .. } => "segmentation (OCR)",
        }
    }
}

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// 3×3, BN, ReLU, 3×3, BN, +x, ReLU; expansion 1.
    Basic,
    /// 1×1, BN, ReLU, 3×3, BN, ReLU, 1×1 (×4), BN, +x, ReLU; expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per plane.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One stage: `NUM_MODULES` modules of `NUM_BRANCHES` parallel branches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    /// `NUM_MODULES`.
    pub modules: usize,
    /// `BLOCK`.
    pub block: BlockKind,
    /// `NUM_BLOCKS`, one per branch.
    pub blocks: Vec<usize>,
    /// `NUM_CHANNELS` (planes), one per branch.
    pub planes: Vec<usize>,
}

impl StageSpec {
    /// Number of branches.
    pub fn branches(&self) -> usize {
        self.planes.len()
    }

    /// Channels each branch carries out of the stage (planes × expansion).
    pub fn out_channels(&self) -> Vec<usize> {
        self.planes
            .iter()
            .map(|p| p * self.block.expansion())
            .collect()
    }
}

/// A validated network description: everything lowering needs, nothing it must check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `MODEL.NAME`.
    pub name: String,
    /// Head and semantics.
    pub task: Task,
    /// Input height and width in pixels (YAML gives `[width, height]`).
    pub input_hw: (usize, usize),
    /// layer1: from `STAGE1`, or the pose default (4 Bottlenecks of 64 planes).
    pub layer1: StageSpec,
    /// Stages 2, 3 and 4.
    pub stages: Vec<StageSpec>,
    /// Whether the exchange units upsample bilinearly to the exact size (segmentation) or
    /// with nearest ×2^k (pose, classification).
    pub bilinear_exchange: bool,
}

/// Checks `exp` and computes the network description.
pub fn resolve(exp: &Experiment, spans: &Spans) -> Result<Network, ConfigError> {
    let err = |path: &str, message: String| ConfigError {
        path: path.to_string(),
        pos: spans.find(path),
        message,
    };
    let model = exp
        .MODEL
        .as_ref()
        .ok_or_else(|| err("MODEL", "missing the MODEL section".into()))?;
    let name = model.NAME.clone().ok_or_else(|| {
        err(
            "MODEL.NAME",
            "missing: expected pose_hrnet, cls_hrnet or seg_hrnet".into(),
        )
    })?;
    let extra = model.EXTRA.as_ref().ok_or_else(|| {
        err(
            "MODEL.EXTRA",
            "missing the EXTRA section (the stages)".into(),
        )
    })?;

    let count = |path: &str, v: Option<i64>, max: usize| -> Result<usize, ConfigError> {
        let v = v.ok_or_else(|| err(path, "missing".into()))?;
        if v <= 0 {
            return Err(err(path, format!("must be positive, found {v}")));
        }
        if v as u64 > max as u64 {
            return Err(err(path, format!("{v} is larger than the limit of {max}")));
        }
        Ok(v as usize)
    };

    let final_kernel = || {
        match extra.FINAL_CONV_KERNEL {
        None => Ok(1),
        Some(k @ (1 | 3)) => Ok(k as usize),
        Some(k) => Err(err(
            "MODEL.EXTRA.FINAL_CONV_KERNEL",
            format!("must be 1 or 3 (the official code pads only those to keep the output size), found {k}"),
        )),
    }
    };
    let task = match name.as_str() {
        "pose_hrnet" => {
            let num_joints = count("MODEL.NUM_JOINTS", model.NUM_JOINTS, MAX_OUTPUTS)?;
            Task::Pose {
                num_joints,
                final_kernel: final_kernel()?,
            }
        }
        "cls_hrnet" => {
            let num_classes = match model.NUM_CLASSES {
                None => 1000,
                v => count("MODEL.NUM_CLASSES", v, MAX_OUTPUTS)?,
            };
            Task::Classification { num_classes }
        }
        "seg_hrnet" | "seg_hrnet_ocr" => {
            let v = exp.DATASET.as_ref().and_then(|d| d.NUM_CLASSES);
            let num_classes = count("DATASET.NUM_CLASSES", v, MAX_OUTPUTS)?;
            let is_ocr = name == "seg_hrnet_ocr";
            let ocr = if is_ocr {
                let o = model.OCR.as_ref();
                let width = |key: &str, v: Option<i64>, default: usize| match v {
                    None => Ok(default),
                    v => count(&format!("MODEL.OCR.{key}"), v, MAX_CHANNELS),
                };
                Some(OcrSpec {
                    mid_channels: width("MID_CHANNELS", o.and_then(|o| o.MID_CHANNELS), 512)?,
                    key_channels: width("KEY_CHANNELS", o.and_then(|o| o.KEY_CHANNELS), 256)?,
                })
            } else {
                None
            };
            Task::Segmentation {
                num_classes,
                final_kernel: final_kernel()?,
                align_corners: model.ALIGN_CORNERS.unwrap_or(is_ocr),
                ocr,
            }
        }
        other => {
            let hint = if other.contains("higher") {
                " (HigherHRNet's bottom-up head is not supported)"
            } else {
                ""
            };
            return Err(err(
                "MODEL.NAME",
                format!("unsupported model `{other}`{hint}: expected pose_hrnet, cls_hrnet, seg_hrnet or seg_hrnet_ocr"),
            ));
        }
    };

    let stage = |idx: usize,
                 s: Option<&Stage>,
                 required: bool|
     -> Result<Option<StageSpec>, ConfigError> {
        let base = format!("MODEL.EXTRA.STAGE{idx}");
        let Some(s) = s else {
            return if required {
                Err(err(
                    &base,
                    format!("missing STAGE{idx}: HRNet needs STAGE2, STAGE3 and STAGE4"),
                ))
            } else {
                Ok(None)
            };
        };
        let p = |k: &str| format!("{base}.{k}");
        let modules = count(&p("NUM_MODULES"), s.NUM_MODULES, MAX_MODULES)?;
        // layer1 is one branch: the official code never reads STAGE1.NUM_BRANCHES (some
        // official configs misspell it NUM_RANCHES).
        let branches = if idx == 1 {
            1
        } else {
            count(&p("NUM_BRANCHES"), s.NUM_BRANCHES, MAX_BRANCHES)?
        };
        let block = match s.BLOCK.as_deref() {
            Some("BASIC") => BlockKind::Basic,
            Some("BOTTLENECK") => BlockKind::Bottleneck,
            Some(b) => {
                return Err(err(
                    &p("BLOCK"),
                    format!("unknown block `{b}`: expected BASIC or BOTTLENECK"),
                ))
            }
            None => {
                return Err(err(
                    &p("BLOCK"),
                    "missing: expected BASIC or BOTTLENECK".into(),
                ))
            }
        };
        match s.FUSE_METHOD.as_deref() {
            None | Some("SUM") => {}
            Some(f) => {
                return Err(err(
                    &p("FUSE_METHOD"),
                    format!("unsupported fuse method `{f}`: the official code implements only SUM"),
                ))
            }
        }
        let list =
            |key: &str, v: &Option<Vec<i64>>, max: usize| -> Result<Vec<usize>, ConfigError> {
                let path = p(key);
                let v = v.as_ref().ok_or_else(|| err(&path, "missing".into()))?;
                if v.len() != branches {
                    let why = if idx == 1 {
                        "STAGE1 (layer1) is a single branch: expected one entry".to_string()
                    } else {
                        format!("NUM_BRANCHES is {branches}: expected one per branch")
                    };
                    return Err(err(&path, format!("has {} entries but {why}", v.len())));
                }
                v.iter()
                    .enumerate()
                    .map(|(i, &x)| count(&format!("{path}[{i}]"), Some(x), max))
                    .collect()
            };
        let blocks = list("NUM_BLOCKS", &s.NUM_BLOCKS, MAX_BLOCKS)?;
        let planes = list("NUM_CHANNELS", &s.NUM_CHANNELS, MAX_CHANNELS)?;
        Ok(Some(StageSpec {
            modules,
            block,
            blocks,
            planes,
        }))
    };

    let layer1 = match stage(1, extra.STAGE1.as_ref(), false)? {
        Some(s) => {
            if s.modules != 1 {
                return Err(err(
                    "MODEL.EXTRA.STAGE1.NUM_MODULES",
                    format!(
                        "layer1 is a single sequence of blocks: NUM_MODULES must be 1, found {}",
                        s.modules
                    ),
                ));
            }
            s
        }
        None => StageSpec {
            modules: 1,
            block: BlockKind::Bottleneck,
            blocks: vec![4],
            planes: vec![64],
        },
    };
    let mut stages = Vec::new();
    for (idx, s) in [(2, &extra.STAGE2), (3, &extra.STAGE3), (4, &extra.STAGE4)] {
        let spec = stage(idx, s.as_ref(), true)?.expect("required stage is present");
        let prev = stages.last().map_or(1, StageSpec::branches);
        if spec.branches() < prev {
            return Err(err(
                &format!("MODEL.EXTRA.STAGE{idx}.NUM_BRANCHES"),
                format!(
                    "STAGE{idx} has {} branches, fewer than the {prev} of the stage before it",
                    spec.branches()
                ),
            ));
        }
        stages.push(spec);
    }
    if let Task::Classification { .. } = task {
        let branches = stages.last().map_or(1, StageSpec::branches);
        if branches != CLS_HEAD_BRANCHES {
            return Err(err(
                "MODEL.EXTRA.STAGE4.NUM_BRANCHES",
                format!("the classification head takes {CLS_HEAD_BRANCHES} branches (its incre_modules widths are fixed at 32, 64, 128, 256 planes), STAGE4 has {branches}"),
            ));
        }
    }

    // Input size: MODEL.IMAGE_SIZE, or for segmentation the evaluation size TEST.IMAGE_SIZE.
    let (size_path, size) = match (
        &model.IMAGE_SIZE,
        exp.TEST.as_ref().and_then(|t| t.IMAGE_SIZE.as_ref()),
    ) {
        (Some(s), _) => ("MODEL.IMAGE_SIZE", s),
        (None, Some(s)) if matches!(task, Task::Segmentation { .. }) => ("TEST.IMAGE_SIZE", s),
        _ => {
            return Err(err(
                "MODEL.IMAGE_SIZE",
                "missing: expected [width, height]".into(),
            ))
        }
    };
    if size.len() != 2 {
        return Err(err(
            size_path,
            format!("expected [width, height], found {} values", size.len()),
        ));
    }
    let w = count(&format!("{size_path}[0]"), Some(size[0]), MAX_IMAGE_SIDE)?;
    let h = count(&format!("{size_path}[1]"), Some(size[1]), MAX_IMAGE_SIDE)?;
    let bilinear_exchange = matches!(task, Task::Segmentation { .. });
    let total_blocks: usize = stages
        .iter()
        .map(|s| s.modules * s.blocks.iter().sum::<usize>())
        .sum();
    if total_blocks > MAX_TOTAL_BLOCKS {
        return Err(err(
            "MODEL.EXTRA",
            format!("the stages hold {total_blocks} residual blocks in all: the limit is {MAX_TOTAL_BLOCKS}"),
        ));
    }

    let net = Network {
        name,
        task,
        input_hw: (h, w),
        layer1,
        stages,
        bilinear_exchange,
    };
    net.check_input_size().map_err(|m| err(size_path, m))?;
    if let (Task::Pose { .. }, Some(hm)) = (&net.task, &model.HEATMAP_SIZE) {
        let expect = [w / 4, h / 4];
        if hm.len() != 2 || hm[0] != expect[0] as i64 || hm[1] != expect[1] as i64 {
            return Err(err(
                "MODEL.HEATMAP_SIZE",
                format!("{hm:?} does not match the network, which makes heatmaps of IMAGE_SIZE/4 = {expect:?} [width, height]"),
            ));
        }
    }

    super::limits::check_network(&net, spans)?;
    Ok(net)
}

/// Branches the classification head is written for (`head_channels = [32, 64, 128, 256]`).
pub const CLS_HEAD_BRANCHES: usize = 4;

impl Network {
    /// The same network at another input size (height, width): what a segmentation network
    /// needs to run on an image of any size. Each side needs at least [`MIN_INPUT_SIDE`]
    /// pixels; beyond that the size is checked as the config's would be (pose and
    /// classification sides must divide by 32) and the whole network's memory against
    /// [`super::limits::check_network`]. An error has no key path, since the size did not
    /// come from the file.
    pub fn with_input_size(&self, h: usize, w: usize) -> Result<Network, ConfigError> {
        let err = |message: String| ConfigError {
            path: String::new(),
            pos: None,
            message: format!("input size {w}x{h} (width x height): {message}"),
        };
        if h < MIN_INPUT_SIDE || w < MIN_INPUT_SIDE {
            return Err(err(format!(
                "each side needs at least {MIN_INPUT_SIDE} pixels"
            )));
        }
        let net = Network {
            input_hw: (h, w),
            ..self.clone()
        };
        net.check_input_size().map_err(err)?;
        super::limits::check_network(&net, &Spans::default()).map_err(|e| err(e.to_string()))?;
        Ok(net)
    }

    /// Checks `input_hw` against the exchange units' resize rule and the activation limit.
    fn check_input_size(&self) -> Result<(), String> {
        let (h, w) = self.input_hw;
        if h == 0 || w == 0 || h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
            return Err(format!(
                "{w}x{h}: each side must be between 1 and {MAX_IMAGE_SIDE} pixels"
            ));
        }
        let branches = self.stages.last().map_or(1, StageSpec::branches);
        let multiple = 4usize << (branches - 1);
        if !self.bilinear_exchange && (w % multiple != 0 || h % multiple != 0) {
            return Err(format!(
                "{w}x{h} (width x height) is not a multiple of {multiple}: with {branches} branches the nearest \
                 x2^k upsampling of the exchange units only lines up when both sides divide by 4*2^{}",
                branches - 1
            ));
        }
        if self.bilinear_exchange && (w < multiple || h < multiple) {
            return Err(format!("{w}x{h} is too small for {branches} branches: each side needs at least {multiple} pixels"));
        }

        // No value may exceed MAX_ACTIVATION elements: the compiler allocates no activations,
        // but a run would, and nothing useful needs more.
        let side = |n: usize, b: usize| (n.div_ceil(4) >> b).max(1);
        let mut largest = (64 * h.div_ceil(2) * w.div_ceil(2), "the stem".to_string());
        let mut consider = |n: usize, what: &dyn Fn() -> String| {
            if n > largest.0 {
                largest = (n, what());
            }
        };
        for (si, st) in std::iter::once(&self.layer1)
            .chain(&self.stages)
            .enumerate()
        {
            for (b, c) in st.out_channels().into_iter().enumerate() {
                let n = c.max(st.planes[b]) * side(h, b) * side(w, b);
                consider(n, &|| format!("stage {} branch {b}", si + 1));
            }
        }
        let last = self
            .stages
            .last()
            .map_or_else(Vec::new, StageSpec::out_channels);
        match &self.task {
            Task::Pose { .. } => {}
            Task::Classification { .. } => {
                for b in 0..last.len() {
                    let n = (CLS_INCRE_PLANES[b.min(3)] * 4) * side(h, b) * side(w, b);
                    consider(n, &|| format!("the classification head (branch {b})"));
                }
                let b = last.len() - 1;
                consider(CLS_FINAL_CHANNELS * side(h, b) * side(w, b), &|| {
                    "the classification head's final_layer".into()
                });
            }
            Task::Segmentation { ocr, .. } => {
                let c: usize = last.iter().sum();
                let c = ocr.map_or(c, |o| c.max(2 * o.mid_channels));
                consider(c * side(h, 0) * side(w, 0), &|| {
                    "the segmentation head".into()
                });
            }
        }
        if largest.0 > MAX_ACTIVATION {
            return Err(format!(
                "{w}x{h} makes a {} MiB activation in {}: the limit is {} MiB",
                (largest.0 * 4) >> 20,
                largest.1,
                (MAX_ACTIVATION * 4) >> 20
            ));
        }
        Ok(())
    }
}

/// Bottleneck planes of the classification head's `incre_modules`, branch by branch.
pub const CLS_INCRE_PLANES: [usize; 4] = [32, 64, 128, 256];
/// Output channels of the classification head's `final_layer`.
pub const CLS_FINAL_CHANNELS: usize = 2048;
