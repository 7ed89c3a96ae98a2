//! Arbitrary bytes as a pickle: read directly, then as the `data.pkl` of a `.pth` zip (which
//! also runs state_dict selection and tensor materialization on whatever it builds).
#![no_main]

use std::io::{Cursor, Write};

use hrnet_runtime::weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weights::pickle::parse(data);
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    if w.start_file("archive/data.pkl", opts).is_ok() && w.write_all(data).is_ok() {
        // A storage '0' of 4 floats, for pickles that reference it.
        if w.start_file("archive/data/0", opts).is_ok() && w.write_all(&[0u8; 16]).is_ok() {
            if let Ok(cursor) = w.finish() {
                let _ = weights::load_bytes(&cursor.into_inner());
            }
        }
    }
});
