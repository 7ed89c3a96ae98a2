//! Arbitrary bytes through the `.npy` reader (corpus seeded with small `.npy` files).
#![no_main]

use hrnet_runtime::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = npy::parse_f32(data);
});
