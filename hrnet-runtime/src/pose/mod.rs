//! The official top-down pose pipeline: box to crop, normalization, heatmap decoding.
