//! Keypoint layouts: joint names, left/right flip pairs and skeleton edges of COCO and MPII.
//!
//! Flip pairs are the official ones (`lib/dataset/coco.py`, `lib/dataset/mpii.py`); the COCO
//! skeleton is the dataset's own (`person_keypoints` annotation, converted to 0-based indices),
//! the MPII one connects the 16 joints along the limbs.

/// Which keypoint layout a model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    /// COCO, 17 joints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
    Coco,
    /// MPII, 16 joints (ankles, knees, hips, pelvis, thorax, neck, head top, wrists, elbows,
    /// shoulders).
    Mpii,
    /// Any other layout: no flip pairs (flip test is refused) and no skeleton (only dots drawn).
    Other {
        /// Number of joints.
        num_joints: usize,
    },
}

/// COCO joint names, in heatmap order.
pub const COCO_JOINTS: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// MPII joint names, in heatmap order.
pub const MPII_JOINTS: [&str; 16] = [
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
];

/// COCO left/right pairs swapped by the flip test.
pub const COCO_FLIP_PAIRS: [(usize, usize); 8] = [
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
];

/// MPII left/right pairs swapped by the flip test.
pub const MPII_FLIP_PAIRS: [(usize, usize); 6] =
    [(0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)];

/// COCO skeleton edges (0-based joint indices).
pub const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// MPII skeleton edges (0-based joint indices).
pub const MPII_SKELETON: [(usize, usize); 15] = [
    (0, 1),
    (1, 2),
    (2, 6),
    (6, 3),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (8, 9),
    (10, 11),
    (11, 12),
    (12, 7),
    (7, 13),
    (13, 14),
    (14, 15),
];

impl Dataset {
    /// The layout a model with `num_joints` heatmaps is taken to predict: COCO for 17, MPII for 16,
    /// [`Dataset::Other`] otherwise.
    pub fn from_num_joints(num_joints: usize) -> Dataset {
        match num_joints {
            17 => Dataset::Coco,
            16 => Dataset::Mpii,
            n => Dataset::Other { num_joints: n },
        }
    }

    /// Number of joints.
    pub fn num_joints(&self) -> usize {
        match self {
            Dataset::Coco => 17,
            Dataset::Mpii => 16,
            Dataset::Other { num_joints } => *num_joints,
        }
    }

    /// Left/right pairs for the flip test; `None` when the layout has none (flip is then refused).
    pub fn flip_pairs(&self) -> Option<&'static [(usize, usize)]> {
        match self {
            Dataset::Coco => Some(&COCO_FLIP_PAIRS),
            Dataset::Mpii => Some(&MPII_FLIP_PAIRS),
            Dataset::Other { .. } => None,
        }
    }

    /// Skeleton edges to draw (empty for [`Dataset::Other`]).
    pub fn skeleton(&self) -> &'static [(usize, usize)] {
        match self {
            Dataset::Coco => &COCO_SKELETON,
            Dataset::Mpii => &MPII_SKELETON,
            Dataset::Other { .. } => &[],
        }
    }

    /// Joint names (empty for [`Dataset::Other`]).
    pub fn joint_names(&self) -> &'static [&'static str] {
        match self {
            Dataset::Coco => &COCO_JOINTS,
            Dataset::Mpii => &MPII_JOINTS,
            Dataset::Other { .. } => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_edges_are_in_range_and_pairs_are_left_right() {
        for d in [Dataset::Coco, Dataset::Mpii] {
            let n = d.num_joints();
            assert_eq!(d.joint_names().len(), n);
            for &(a, b) in d.flip_pairs().unwrap().iter().chain(d.skeleton()) {
                assert!(a < n && b < n && a != b);
            }
            for &(a, b) in d.flip_pairs().unwrap() {
                let (na, nb) = (d.joint_names()[a], d.joint_names()[b]);
                let swapped = na
                    .replace("left", "L")
                    .replace("right", "left")
                    .replace('L', "right");
                let swapped_mpii = na
                    .replace("l_", "L_")
                    .replace("r_", "l_")
                    .replace("L_", "r_");
                assert!(nb == swapped || nb == swapped_mpii, "{na} / {nb}");
            }
        }
        assert_eq!(
            Dataset::from_num_joints(5),
            Dataset::Other { num_joints: 5 }
        );
        assert!(Dataset::from_num_joints(5).flip_pairs().is_none());
    }
}
