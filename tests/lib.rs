//! Shared helpers for the workspace-level tests (fixture paths, tolerances).
