//! Convolution kernels, activation layouts and the thread pool.
