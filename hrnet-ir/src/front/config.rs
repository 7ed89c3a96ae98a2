//! The official experiment YAML, mirrored one-to-one with serde.
//!
//! Only the keys the network's structure depends on are read; everything else (`DATASET`
//! except `NUM_CLASSES`, `TRAIN`, `LOSS`, `PRETRAINED_LAYERS`, the `NUM_RANCHES` typo, …) is
//! accepted and ignored, as the official code ignores it. Integers are read as `i64` so that a
//! negative or absurd value reaches [`super::resolve`], which reports it with its key path
//! and line, instead of failing here with serde's generic message.
#![allow(non_snake_case, missing_docs)]

use serde::Deserialize;

/// The whole experiment file.
#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    pub MODEL: Option<Model>,
    pub DATASET: Option<Dataset>,
    pub TEST: Option<Test>,
}

/// `MODEL`.
#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub NAME: Option<String>,
    pub NUM_JOINTS: Option<i64>,
    pub NUM_CLASSES: Option<i64>,
    /// `[width, height]`.
    pub IMAGE_SIZE: Option<Vec<i64>>,
    /// `[width, height]`.
    pub HEATMAP_SIZE: Option<Vec<i64>>,
    pub ALIGN_CORNERS: Option<bool>,
    pub EXTRA: Option<Extra>,
    pub OCR: Option<Ocr>,
}

/// `MODEL.OCR` (HRNet-OCR).
#[derive(Debug, Clone, Deserialize)]
pub struct Ocr {
    pub MID_CHANNELS: Option<i64>,
    pub KEY_CHANNELS: Option<i64>,
}

/// `MODEL.EXTRA`.
#[derive(Debug, Clone, Deserialize)]
pub struct Extra {
    pub FINAL_CONV_KERNEL: Option<i64>,
    pub STAGE1: Option<Stage>,
    pub STAGE2: Option<Stage>,
    pub STAGE3: Option<Stage>,
    pub STAGE4: Option<Stage>,
}

/// `MODEL.EXTRA.STAGEn`.
#[derive(Debug, Clone, Deserialize)]
pub struct Stage {
    pub NUM_MODULES: Option<i64>,
    pub NUM_BRANCHES: Option<i64>,
    pub BLOCK: Option<String>,
    pub NUM_BLOCKS: Option<Vec<i64>>,
    pub NUM_CHANNELS: Option<Vec<i64>>,
    pub FUSE_METHOD: Option<String>,
}

/// `DATASET` (segmentation configs keep `NUM_CLASSES` here).
#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    pub NUM_CLASSES: Option<i64>,
}

/// `TEST` (segmentation configs keep the evaluation `IMAGE_SIZE` here).
#[derive(Debug, Clone, Deserialize)]
pub struct Test {
    pub IMAGE_SIZE: Option<Vec<i64>>,
}
