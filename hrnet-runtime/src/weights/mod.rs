//! Checkpoint readers and strict binding of named tensors.
