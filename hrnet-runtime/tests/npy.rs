//! `.npy` reading and writing: the NumPy-written fixtures, round trips, f64 conversion, and
//! every refused variant.

use std::path::PathBuf;

use hrnet_runtime::npy::{self, NpyError};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hrnet_npy_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A `.npy` file with a custom header dict and raw data (version 1.0).
fn npy_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_owned();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn reads_the_numpy_fixtures() {
    let (shape, data) = npy::read_f32(fixture("tiny_pose/input.npy")).expect("input.npy");
    assert_eq!(shape, [1, 3, 96, 64]);
    assert_eq!(data.len(), 3 * 96 * 64);
    let (shape, data) = npy::read_f32(fixture("tiny_pose/expected.npy")).expect("expected.npy");
    assert_eq!(shape, [1, 5, 24, 16]);
    // meta.json: output_absmax 26.42791175842285.
    let absmax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(absmax, 26.427_912);
}

#[test]
fn write_then_read_round_trips_bit_for_bit() {
    let dir = scratch("roundtrip");
    let path = dir.join("out.npy");
    let data: Vec<f32> = (0..24)
        .map(|i| f32::from_bits(0x3f80_0000 ^ (i * 0x0101_0101)))
        .chain([f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE / 2.0])
        .collect();
    npy::write_f32(&path, &[2, 2, 7], &data).expect("write");
    let (shape, back) = npy::read_f32(&path).expect("read");
    assert_eq!(shape, [2, 2, 7]);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&data));

    // Overwriting is atomic: the old file is replaced, no temporary file is left behind.
    npy::write_f32(&path, &[3], &[1.0, 2.0, 3.0]).expect("overwrite");
    assert_eq!(npy::read_f32(&path).expect("read").1, [1.0, 2.0, 3.0]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["out.npy"]);

    // The header NumPy would write.
    let bytes = std::fs::read(&path).expect("bytes");
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header = std::str::from_utf8(&bytes[10..bytes.len() - 12]).expect("ascii");
    assert_eq!(
        header.trim_end(),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn write_refuses_mismatched_shapes_and_bad_paths() {
    let dir = scratch("bad");
    let e = npy::write_f32(dir.join("x.npy"), &[2, 3], &[0.0; 5]).expect_err("5 != 6");
    assert!(
        matches!(
            e,
            NpyError::ShapeMismatch {
                expected: 6,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(!dir.join("x.npy").exists());
    let e = npy::write_f32(dir.join("missing/x.npy"), &[1], &[0.0]).expect_err("no dir");
    assert!(matches!(e, NpyError::Io { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn f64_is_converted() {
    let data: Vec<u8> = [1.5f64, -2.25, 1e-300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bytes = npy_with(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
        &data,
    );
    let (shape, values) = npy::parse_f32(&bytes).expect("f8");
    assert_eq!(shape, [3]);
    assert_eq!(values, [1.5, -2.25, 0.0]);
}

#[test]
fn refused_variants_are_clear_errors() {
    let four = [0u8; 16];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", &four),
            "Fortran",
        ),
        (
            npy_with("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", &four),
            "'>f4'",
        ),
        (
            npy_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", &four),
            "'<i8'",
        ),
        (
            npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", &four),
            "needs 20",
        ),
        (
            npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &four),
            "needs 12",
        ),
        (
            npy_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296, 4294967296, 4294967296), }",
                &four,
            ),
            "more than 2^128 elements: the limit is 268435456",
        ),
        (
            npy_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 16385), }",
                &four,
            ),
            "has 268451840 elements: the limit is 268435456",
        ),
        (
            npy_with(
                &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", "1, ".repeat(33)),
                &four,
            ),
            "33 dimensions: at most 32",
        ),
        (b"\x93NUMPY\x02\x00\x00\x00\x00\x40{".to_vec(), "claims 1073741824 bytes"),
        (npy_with("{'descr': '<f4', 'shape': (4,), }", &four), "fortran_order"),
        (npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': [4], }", &four), "shape"),
        (b"\x93NUMPY\x04\x00".to_vec(), "version 4.0"),
        (b"\x93NUMPY\x01\x00\xff\x00{".to_vec(), "ends inside the header"),
        (b"\x93NUM".to_vec(), "not a .npy"),
        (b"PK\x03\x04".to_vec(), "not a .npy"),
    ];
    for (bytes, needle) in cases {
        let e = npy::parse_f32(&bytes).expect_err(needle);
        assert!(e.to_string().contains(needle), "{needle:?} not in {e}");
    }
    // Every truncation of a valid file is an error.
    let good = std::fs::read(fixture("tiny_pose/expected.npy")).expect("fixture");
    for cut in (0..200).chain((200..good.len()).step_by(97)) {
        assert!(npy::parse_f32(&good[..cut]).is_err(), "cut at {cut}");
    }
    let e = npy::read_f32(fixture("tiny_pose/does_not_exist.npy")).expect_err("missing");
    assert!(e.to_string().contains("does_not_exist.npy"), "{e}");
}

#[test]
fn files_are_checked_before_their_data_is_read() {
    let dir = scratch("limits");
    // A header that claims 2^28 floats (1 GiB) over 16 bytes of data: refused from the
    // file's length, before anything is allocated for the data.
    let path = dir.join("short.npy");
    std::fs::write(
        &path,
        npy_with(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 16384), }",
            &[0u8; 16],
        ),
    )
    .unwrap();
    let e = npy::read_f32(&path).expect_err("short");
    assert!(
        matches!(
            &e,
            NpyError::DataSize {
                expected: 1073741824,
                found: 16,
                ..
            }
        ),
        "{e}"
    );
    // Over the element limit.
    std::fs::write(
        &path,
        npy_with(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 268435457), }",
            &[0u8; 16],
        ),
    )
    .unwrap();
    let e = npy::read_f32(&path).expect_err("huge");
    assert!(
        matches!(
            &e,
            NpyError::TooLarge {
                elements: 268435457,
                ..
            }
        ),
        "{e}"
    );
    // Longer than the shape says.
    let mut long = npy_with(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[0u8; 8],
    );
    long.push(0);
    std::fs::write(&path, long).unwrap();
    let e = npy::read_f32(&path).expect_err("long");
    assert!(
        matches!(
            &e,
            NpyError::DataSize {
                expected: 8,
                found: 9,
                ..
            }
        ),
        "{e}"
    );
    // A valid file still round-trips through the streaming reader.
    npy::write_f32(&path, &[3, 1], &[1.0, 2.0, 3.0]).unwrap();
    assert_eq!(
        npy::read_f32(&path).unwrap(),
        (vec![3, 1], vec![1.0, 2.0, 3.0])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
