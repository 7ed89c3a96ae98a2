//! Arbitrary bytes as the `data.pkl` of a `.pth` zip: `weights::load_bytes` reads the pickle
//! (with `weights::pickle::parse`, on exactly these bytes), then runs state_dict selection and
//! tensor materialization on whatever it builds. The zip around it is always well formed, so
//! every input reaches the pickle reader; a separate direct `parse` call would only repeat it.
#![no_main]

use std::io::{Cursor, Write};

use hrnet_runtime::weights;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    // A storage '0' of 4 floats, for pickles that reference it.
    let archive = w
        .start_file("archive/data.pkl", opts)
        .and_then(|()| Ok(w.write_all(data)?))
        .and_then(|()| w.start_file("archive/data/0", opts))
        .and_then(|()| Ok(w.write_all(&[0u8; 16])?))
        .and_then(|()| w.finish());
    match archive {
        Ok(cursor) => {
            let _ = weights::load_bytes(&cursor.into_inner());
        }
        // Writing to memory cannot fail; if the zip writer ever does, read the pickle directly.
        Err(_) => {
            let _ = weights::pickle::parse(data);
        }
    }
});
