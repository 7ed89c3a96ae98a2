//! Arbitrary bytes through the image loader: header checks, then PNG/JPEG decoding to RGB
//! (corpus seeded with small PNG and JPEG files).
#![no_main]

use hrnet_runtime::pose;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pose::decode_rgb(data);
});
