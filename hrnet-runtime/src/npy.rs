//! Reading and writing `.npy` files (float32, float64 converted).
