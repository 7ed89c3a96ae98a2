//! Arbitrary text through the front end and lowering (`hrnet_ir::build`: pre-scan, serde_yaml,
//! resolve with its limits, lowering, the verifier). Any error is fine; a panic, a hang or a
//! huge allocation is a bug. Seeded with the official configs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        if let Err(hrnet_ir::BuildError::Internal(e)) = hrnet_ir::build(src) {
            panic!("a config made the compiler break its own invariants: {e}");
        }
    }
});
