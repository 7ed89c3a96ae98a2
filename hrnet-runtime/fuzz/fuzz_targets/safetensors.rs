//! Arbitrary bytes through the public checkpoint loader (corpus seeded with safetensors files).
#![no_main]

use hrnet_runtime::weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weights::load_bytes(data);
});
