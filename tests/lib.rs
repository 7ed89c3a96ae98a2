//! Shared helpers for the workspace-level tests: where the test data is.

use std::path::PathBuf;

/// `tests/data` of this repository.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}
