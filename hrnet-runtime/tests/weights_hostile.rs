//! Hostile checkpoints, crafted here byte by byte: every one must be a clean error (never a
//! panic, an over-read or a huge allocation), and pickles that name `os.system` must be refused
//! by name without anything running.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::path::PathBuf;

use hrnet_runtime::weights::{
    self, pickle::PickleErrorKind, BindOptions, BindProblem, Checkpoint, DType, Format, Tensor,
    TensorData, TensorSpec, WeightError,
};

// ---------------------------------------------------------------------------------------------
// Peak memory of the current thread, while tracking

struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-locals may be gone while a thread exits.
        if TRACK.try_with(Cell::get).unwrap_or(false) {
            let held = HELD.with(|h| h.get()) + layout.size() as isize;
            HELD.with(|h| h.set(held));
            PEAK.with(|p| p.set(p.get().max(held)));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if TRACK.try_with(Cell::get).unwrap_or(false) {
            HELD.with(|h| h.set(h.get() - layout.size() as isize));
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns its result and the most heap memory the thread held meanwhile.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Builders

/// A protocol-2 pickle, written opcode by opcode.
#[derive(Clone)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Pickle {
        Pickle(vec![0x80, 2])
    }
    fn raw(mut self, bytes: &[u8]) -> Pickle {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(self, s: &str) -> Pickle {
        let len = (s.len() as u32).to_le_bytes();
        self.raw(b"X").raw(&len).raw(s.as_bytes())
    }
    /// BININT below 2^31, LONG1 above (as Python's pickler does).
    fn int(self, v: u32) -> Pickle {
        if v < 0x8000_0000 {
            self.raw(b"J").raw(&v.to_le_bytes())
        } else {
            self.raw(b"\x8a\x05").raw(&v.to_le_bytes()).raw(b"\x00")
        }
    }
    fn global(self, module: &str, name: &str) -> Pickle {
        self.raw(b"c")
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }
    fn ints(self, values: &[u32]) -> Pickle {
        let mut p = self.raw(b"(");
        for &v in values {
            p = p.int(v);
        }
        p.raw(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride,
    /// False, OrderedDict())`.
    fn tensor(self, key: &str, numel: u32, offset: u32, size: &[u32], stride: &[u32]) -> Pickle {
        self.typed_tensor("FloatStorage", key, numel, offset, size, stride)
    }
    /// [`Pickle::tensor`] with another storage class.
    fn typed_tensor(
        self,
        storage: &str,
        key: &str,
        numel: u32,
        offset: u32,
        size: &[u32],
        stride: &[u32],
    ) -> Pickle {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .raw(b"((")
            .str("storage")
            .global("torch", storage)
            .str(key)
            .str("cpu")
            .int(numel)
            .raw(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .raw(b"\x89")
            .global("collections", "OrderedDict")
            .raw(b")R")
            .raw(b"tR")
    }
    fn done(self) -> Vec<u8> {
        self.raw(b".").0
    }
}

/// A float tensor in a state_dict: (name, storage key, storage numel, offset, size, stride).
type TensorEntry<'a> = (&'a str, &'a str, u32, u32, &'a [u32], &'a [u32]);

/// A state_dict pickle `{name: tensor}`.
fn state_dict(tensors: &[TensorEntry]) -> Vec<u8> {
    let mut p = Pickle::new().raw(b"}(");
    for &(name, key, numel, offset, size, stride) in tensors {
        p = p.str(name).tensor(key, numel, offset, size, stride);
    }
    p.raw(b"u").done()
}

fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A zip with stored entries.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start_file");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

/// A `torch.save` zip: `archive/data.pkl`, `archive/byteorder` and `archive/data/<key>`.
fn torch_zip(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
    ];
    for (name, (_, data)) in names.iter().zip(storages) {
        entries.push((name, data));
    }
    zip(&entries)
}

const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
const PROTOCOL: &[u8] = b"\x80\x02M\xe9\x03.";

fn sys_info() -> Vec<u8> {
    Pickle::new()
        .raw(b"}(")
        .str("protocol_version")
        .raw(b"M\xe9\x03")
        .str("little_endian")
        .raw(b"\x88")
        .raw(b"u")
        .done()
}

/// A legacy `.pth` stream; storages as (key, element count written, bytes).
fn legacy(main: &[u8], storages: &[(&str, u64, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(PROTOCOL);
    out.extend_from_slice(&sys_info());
    out.extend_from_slice(main);
    let mut keys = Pickle::new().raw(b"](");
    for (k, _, _) in storages {
        keys = keys.str(k);
    }
    out.extend_from_slice(&keys.raw(b"e").done());
    for (_, count, data) in storages {
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn err_of(bytes: &[u8]) -> WeightError {
    match weights::load_bytes(bytes) {
        Ok(c) => panic!("expected an error, loaded {} tensors", c.len()),
        Err(e) => e,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/tiny_pose")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(c: &Checkpoint, name: &str) -> Vec<f32> {
    match c.get(name).map(|t| &t.data) {
        Some(TensorData::F32(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The builders make valid files (so that the failures below fail for the stated reason).

#[test]
fn crafted_files_load() {
    let pkl = state_dict(&[
        ("w", "0", 6, 0, &[2, 3], &[3, 1]),
        ("t", "0", 6, 0, &[3, 2], &[1, 3]),
        ("b", "1", 2, 1, &[1], &[1]),
    ]);
    let s0 = floats((0..6).map(|i| i as f32));
    let s1 = floats([7.0, 8.0]);
    let z = torch_zip(&pkl, &[("0", &s0), ("1", &s1)]);
    let l = legacy(&pkl, &[("0", 6, &s0), ("1", 2, &s1)]);
    for bytes in [z, l] {
        let c = weights::load_bytes(&bytes).expect("crafted file loads");
        assert_eq!(c.names().collect::<Vec<_>>(), ["w", "t", "b"]);
        assert_eq!(f32s(&c, "w"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(f32s(&c, "t"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(c.get("t").map(|t| t.shape.clone()), Some(vec![3, 2]));
        assert_eq!(f32s(&c, "b"), [8.0]);
    }
}

#[test]
fn storage_types_parameters_and_training_wrappers() {
    // {'epoch': 3, 'perf': 0.5, 'state_dict': {'module.h': f16, 'module.b': bf16,
    //  'module.d': f64 (a Parameter), 'module.n': i64 scalar}, 'optimizer': {...}}
    let pkl = Pickle::new()
        .raw(b"}(")
        .str("epoch")
        .int(3)
        .str("perf")
        .raw(b"G?\xe0\x00\x00\x00\x00\x00\x00")
        .str("state_dict")
        .raw(b"}(")
        .str("module.h")
        .typed_tensor("HalfStorage", "h", 2, 0, &[2], &[1])
        .str("module.b")
        .typed_tensor("BFloat16Storage", "b", 1, 0, &[1], &[1])
        .str("module.d")
        .global("torch._utils", "_rebuild_parameter")
        .raw(b"(")
        .typed_tensor("DoubleStorage", "d", 1, 0, &[], &[])
        .raw(b"\x88")
        .global("collections", "OrderedDict")
        .raw(b")RtR")
        .str("module.n")
        .typed_tensor("LongStorage", "n", 1, 0, &[], &[])
        .raw(b"u")
        .str("optimizer")
        .raw(b"}(")
        .str("lr")
        .raw(b"G?\xb9\x99\x99\x99\x99\x99\x9a")
        .raw(b"u")
        .raw(b"u")
        .done();
    let h: Vec<u8> = [0x3c00u16, 0xc000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b = 0x3fc0u16.to_le_bytes();
    let d = 0.25f64.to_le_bytes();
    let n = 42i64.to_le_bytes();
    let z = torch_zip(&pkl, &[("h", &h), ("b", &b), ("d", &d), ("n", &n)]);
    let l = legacy(
        &pkl,
        &[("h", 2, &h), ("b", 1, &b), ("d", 1, &d), ("n", 1, &n)],
    );
    for bytes in [z, l] {
        let c = weights::load_bytes(&bytes).expect("loads");
        assert!(c.from_training_checkpoint());
        assert_eq!(c.names().collect::<Vec<_>>(), ["h", "b", "d", "n"]);
        assert_eq!(f32s(&c, "h"), [1.0, -2.0]);
        assert_eq!(f32s(&c, "b"), [1.5]);
        assert_eq!(f32s(&c, "d"), [0.25]);
        let nt = c.get("n").expect("n");
        assert_eq!(
            (nt.shape.as_slice(), &nt.data),
            (&[][..], &TensorData::I64(vec![42]))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation

/// Cut points: every byte of the first 300 and last 300, and 300 spread over the middle.
fn cuts(len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = (0..len.min(300)).collect();
    c.extend((1..300).map(|i| i * len / 300));
    c.extend(len.saturating_sub(300)..len);
    c.sort_unstable();
    c.dedup();
    c
}

#[test]
fn truncated_fixtures_are_errors() {
    for name in [
        "weights.safetensors",
        "weights.pth",
        "weights_legacy_cuda.pth",
        "weights_checkpoint.pth",
    ] {
        let bytes = fixture(name);
        assert!(weights::load_bytes(&bytes).is_ok(), "{name} loads whole");
        for cut in cuts(bytes.len()) {
            assert!(
                weights::load_bytes(&bytes[..cut]).is_err(),
                "{name} cut at {cut} of {} loaded",
                bytes.len()
            );
        }
    }
}

#[test]
fn every_prefix_of_a_pickle_is_an_error() {
    let pkl = state_dict(&[("w", "0", 2, 0, &[2], &[1]), ("v", "0", 2, 1, &[1], &[1])]);
    let s0 = floats([1.0, 2.0]);
    for cut in 0..pkl.len() {
        let z = torch_zip(&pkl[..cut], &[("0", &s0)]);
        assert!(weights::load_bytes(&z).is_err(), "zip pickle cut at {cut}");
    }
    let whole = legacy(&pkl, &[("0", 2, &s0)]);
    assert!(weights::load_bytes(&whole).is_ok());
    for cut in 0..whole.len() {
        assert!(
            weights::load_bytes(&whole[..cut]).is_err(),
            "legacy cut at {cut}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Lying sizes

#[test]
fn safetensors_headers_that_lie() {
    let good = fixture("weights.safetensors");
    let n = u64::from_le_bytes(good[..8].try_into().expect("8 bytes"));
    for lie in [
        n + 1,
        n - 1,
        n + 4096,
        good.len() as u64,
        good.len() as u64 - 7,
        u64::MAX,
        1 << 40,
    ] {
        let mut bad = good.clone();
        bad[..8].copy_from_slice(&lie.to_le_bytes());
        let e = err_of(&bad);
        assert!(
            matches!(e, WeightError::Safetensors(_) | WeightError::UnknownFormat),
            "length {lie}: {e}"
        );
    }
    // Offsets past the data, overlapping, and a shape that does not match its byte range.
    for header in [
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,8]}}"#,
    ] {
        let mut bad = (header.len() as u64).to_le_bytes().to_vec();
        bad.extend_from_slice(header.as_bytes());
        bad.extend_from_slice(&[0; 8]);
        let e = err_of(&bad);
        assert!(matches!(e, WeightError::Safetensors(_)), "{header}: {e}");
    }
    // A float type this crate does not load is named.
    let header = r#"{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#;
    let mut bad = (header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(header.as_bytes());
    bad.extend_from_slice(&[0; 8]);
    let e = err_of(&bad);
    assert!(
        e.to_string().contains("'a'") && e.to_string().contains("F8_E4M3"),
        "{e}"
    );
}

#[test]
fn zip_storage_of_the_wrong_size() {
    let pkl = state_dict(&[("w", "0", 4, 0, &[4], &[1])]);
    let short = floats([1.0, 2.0]);
    let e = err_of(&torch_zip(&pkl, &[("0", &short)]));
    assert!(
        matches!(
            e,
            WeightError::StorageSize {
                expected: 16,
                found: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("storage '0'"), "{e}");
    let long = floats([1.0; 5]);
    let e = err_of(&torch_zip(&pkl, &[("0", &long)]));
    assert!(
        matches!(e, WeightError::StorageSize { found: 20, .. }),
        "{e}"
    );
    // A storage entry that does not exist.
    let e = err_of(&torch_zip(&pkl, &[("1", &short)]));
    assert!(e.to_string().contains("archive/data/0"), "{e}");
}

#[test]
fn views_past_the_storage_end() {
    let s = floats([0.0; 6]);
    let views: [(u32, &[u32], &[u32]); 5] = [
        (1, &[6], &[1]),
        (6, &[1], &[1]),
        (0, &[2, 3], &[4, 1]),
        (0, &[3, 2], &[1, 4]),
        (5, &[2], &[0xffff_ffff]),
    ];
    for (offset, size, stride) in views {
        let pkl = state_dict(&[("w", "0", 6, offset, size, stride)]);
        for bytes in [torch_zip(&pkl, &[("0", &s)]), legacy(&pkl, &[("0", 6, &s)])] {
            let e = err_of(&bytes);
            assert!(
                matches!(e, WeightError::ViewOutOfBounds { ref name, .. } if name == "w"),
                "offset {offset} size {size:?} stride {stride:?}: {e}"
            );
        }
    }
}

#[test]
fn huge_declared_lengths() {
    let s = floats([1.0, 2.0]);
    // Strings, bytes, big ints and frames claiming far more than the file holds.
    for op in [
        &b"X\xff\xff\xff\xff"[..],
        b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x8e\x00\x00\x00\x00\x00\x00\x00\x40",
        b"B\xff\xff\xff\x7f",
        b"\x8b\xff\xff\xff\x7f",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x96\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let pkl = Pickle::new().raw(op).raw(b"abc").done();
        let e = err_of(&torch_zip(&pkl, &[]));
        assert!(
            matches!(&e, WeightError::Pickle { source, .. } if source.kind == PickleErrorKind::Truncated),
            "{op:?}: {e}"
        );
    }
    // A storage declaring 2^31 elements with 8 bytes of data, in both containers.
    let pkl = state_dict(&[("w", "0", 0x8000_0000, 0, &[2], &[1])]);
    let e = err_of(&torch_zip(&pkl, &[("0", &s)]));
    assert!(matches!(e, WeightError::StorageSize { .. }), "{e}");
    let e = err_of(&legacy(&pkl, &[("0", 0x8000_0000, &s)]));
    assert!(matches!(e, WeightError::StorageSize { .. }), "{e}");
    // A legacy element count of 2^64 - 1.
    let pkl = state_dict(&[("w", "0", 2, 0, &[2], &[1])]);
    let e = err_of(&legacy(&pkl, &[("0", u64::MAX, &s)]));
    assert!(matches!(e, WeightError::StorageSize { .. }), "{e}");
    // A broadcast view of 2^64 elements of a 2-element storage.
    let pkl = state_dict(&[("w", "0", 2, 0, &[0xffff_ffff, 0xffff_ffff], &[0, 0])]);
    let e = err_of(&torch_zip(&pkl, &[("0", &s)]));
    assert!(matches!(e, WeightError::TooLarge { .. }), "{e}");
    // A memo bomb: one string copied a million times.
    let mut p = Pickle::new().str(&"x".repeat(4096)).raw(b"q\x00(");
    for _ in 0..1_000_000 {
        p = p.raw(b"h\x00");
    }
    let e = err_of(&torch_zip(&p.raw(b"l").done(), &[]));
    assert!(
        matches!(&e, WeightError::Pickle { source, .. } if source.kind == PickleErrorKind::TooLarge),
        "{e}"
    );
}

#[test]
fn deep_nesting() {
    let depth = 100_000;
    let lists = Pickle::new()
        .raw(&b"]".repeat(depth))
        .raw(&b"a".repeat(depth - 1))
        .done();
    let tuples = Pickle::new()
        .raw(&b"(".repeat(depth))
        .raw(b")")
        .raw(&b"t".repeat(depth))
        .done();
    let dicts = Pickle::new()
        .raw(&b"}K\x01".repeat(depth))
        .raw(b"}")
        .raw(&b"s".repeat(depth))
        .done();
    for pkl in [lists, tuples, dicts] {
        for bytes in [torch_zip(&pkl, &[]), legacy(&pkl, &[])] {
            let e = err_of(&bytes);
            assert!(
                matches!(&e, WeightError::Pickle { source, .. } if source.kind == PickleErrorKind::TooDeep),
                "{e}"
            );
        }
    }
}

#[test]
fn compressed_entries_are_refused() {
    let pkl = state_dict(&[]);
    let mut z = zip(&[("archive/data.pkl", &pkl)]);
    // Mark the entry as deflated in its local header (offset 8) and its central directory
    // record (offset 10).
    let local = find(&z, b"PK\x03\x04");
    z[local + 8] = 8;
    let central = find(&z, b"PK\x01\x02");
    z[central + 10] = 8;
    let e = err_of(&z);
    assert!(
        matches!(e, WeightError::Compressed { ref entry, .. } if entry == "archive/data.pkl"),
        "{e}"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("signature present")
}

#[test]
fn not_a_checkpoint() {
    // A pickle stream without the magic number, a zip without data.pkl, and a bare list.
    let e = err_of(&Pickle::new().int(3).done());
    assert!(e.to_string().contains("magic number"), "{e}");
    let e = err_of(&zip(&[("archive/other.txt", b"hi")]));
    assert!(e.to_string().contains("data.pkl"), "{e}");
    let e = err_of(&torch_zip(&Pickle::new().raw(b"]").done(), &[]));
    assert!(e.to_string().contains("list"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Code execution attempts

/// A pickle that, unpickled by Python, would run `touch <marker>`.
fn payloads(marker: &str) -> Vec<(&'static str, Vec<u8>)> {
    let cmd = format!("touch {marker}");
    let global = Pickle::new()
        .global("posix", "system")
        .str(&cmd)
        .raw(b"\x85R")
        .done();
    let os_global = Pickle::new()
        .global("os", "system")
        .str(&cmd)
        .raw(b"\x85R")
        .done();
    let mut stack_global = vec![0x80, 4, 0x8c, 5];
    stack_global.extend_from_slice(b"posix");
    stack_global.extend_from_slice(&[0x8c, 6]);
    stack_global.extend_from_slice(b"system\x93");
    stack_global.extend_from_slice(&Pickle(Vec::new()).str(&cmd).raw(b"\x85R.").0);
    // Hidden in a training checkpoint, after a valid state_dict.
    let hidden = Pickle::new()
        .raw(b"}(")
        .str("state_dict")
        .raw(b"}")
        .str("epoch")
        .global("posix", "system")
        .str(&cmd)
        .raw(b"\x85R")
        .raw(b"u")
        .done();
    // As the callable of a tensor rebuild's hooks argument.
    let in_tensor = Pickle::new()
        .raw(b"}(")
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .raw(b"((")
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(1)
        .raw(b"tQ")
        .int(0)
        .ints(&[1])
        .ints(&[1])
        .raw(b"\x89")
        .global("os", "system")
        .str(&cmd)
        .raw(b"\x85R")
        .raw(b"tR")
        .raw(b"u")
        .done();
    vec![
        ("posix.system", global),
        ("os.system", os_global),
        ("posix.system", stack_global),
        ("posix.system", hidden),
        ("os.system", in_tensor),
    ]
}

#[test]
fn system_calls_are_refused_and_never_run() {
    let marker = std::env::temp_dir().join(format!("hrnet_pwned_{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let marker_str = marker.to_str().expect("utf-8 temp dir");
    let storage = floats([1.0]);
    for (i, (global, pkl)) in payloads(marker_str).into_iter().enumerate() {
        let containers = [
            ("zip", torch_zip(&pkl, &[("0", &storage)])),
            ("legacy", legacy(&pkl, &[("0", 1, &storage)])),
            // In the legacy system-info pickle instead of the main one.
            ("legacy sys info", {
                let mut out = MAGIC.to_vec();
                out.extend_from_slice(PROTOCOL);
                out.extend_from_slice(&pkl);
                out.extend_from_slice(&state_dict(&[]));
                out.extend_from_slice(&Pickle::new().raw(b"]").done());
                out
            }),
        ];
        for (what, bytes) in containers {
            let e = err_of(&bytes);
            let text = e.to_string();
            assert!(
                text.contains(&format!("refusing pickle global {global}")),
                "payload {i} in {what}: {text}"
            );
            assert!(
                matches!(&e, WeightError::Pickle { source, .. }
                    if matches!(&source.kind, PickleErrorKind::RefusedGlobal { .. })),
                "payload {i} in {what}: {e:?}"
            );
            assert!(!marker.exists(), "payload {i} in {what} ran a command");
        }
    }
    // Written to disk and loaded through the path API too.
    let dir = std::env::temp_dir().join(format!("hrnet_hostile_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("evil.pth");
    std::fs::write(&file, torch_zip(&payloads(marker_str)[0].1, &[])).expect("write");
    let e = weights::load(&file).expect_err("refused");
    assert!(
        e.to_string()
            .contains("refusing pickle global posix.system"),
        "{e}"
    );
    assert!(!marker.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Time and memory out of proportion to the file

#[test]
fn many_dimensions_are_refused_by_name() {
    let s = floats([1.0, 2.0]);
    // 100,000 dimensions of size 1 (a 1 MB pickle): the gather used to be quadratic.
    let ones = vec![1u32; 100_000];
    let mut size = ones.clone();
    size.push(2);
    let pkl = state_dict(&[("w", "0", 2, 0, &size, &size)]);
    let e = err_of(&torch_zip(&pkl, &[("0", &s)]));
    assert!(
        matches!(&e, WeightError::TooManyDims { name, rank: 100_001, squeezed: false, .. } if name == "w"),
        "{e}"
    );
    assert!(e.to_string().contains("'w'"), "{e}");
    // Nine dimensions other than 1.
    let nine = [2u32; 9];
    let stride = [0u32; 9];
    let pkl = state_dict(&[("w9", "0", 2, 0, &nine, &stride)]);
    let e = err_of(&legacy(&pkl, &[("0", 2, &s)]));
    assert!(
        matches!(&e, WeightError::TooManyDims { name, rank: 9, squeezed: true, max: 8 } if name == "w9"),
        "{e}"
    );
    // 60 dimensions of size 1 with odd strides around a transposed 2x3: loads, correctly.
    let mut size = vec![1u32; 30];
    size.extend([3, 2]);
    size.extend([1u32; 30]);
    let mut stride = vec![7u32; 30];
    stride.extend([1, 3]);
    stride.extend([5u32; 30]);
    let pkl = state_dict(&[("t", "0", 6, 0, &size, &stride)]);
    let s6 = floats((0..6).map(|i| i as f32));
    let c = weights::load_bytes(&torch_zip(&pkl, &[("0", &s6)])).expect("loads");
    assert_eq!(f32s(&c, "t"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(c.get("t").map(|t| t.shape.len()), Some(62));
}

#[test]
fn views_cannot_decode_much_more_than_the_file() {
    // One 4 MB storage viewed by 16 tensors (tied weights and stride-0 broadcasts): 64 MB
    // decoded from a 4 MB file. The reader stops at 4 bytes decoded per byte of file.
    let n = 1u32 << 20;
    let data = floats((0..n).map(|i| i as f32));
    let mut tensors: Vec<(String, [u32; 2], [u32; 2])> = Vec::new();
    for i in 0..16 {
        let (size, stride) = if i % 2 == 0 {
            ([1024, 1024], [1024, 1])
        } else {
            ([1024, 1024], [0, 1])
        };
        tensors.push((format!("w{i}"), size, stride));
    }
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .map(|(name, size, stride)| (name.as_str(), "0", n, 0, &size[..], &stride[..]))
        .collect();
    let pkl = state_dict(&entries);
    let file = torch_zip(&pkl, &[("0", &data)]);
    let (e, peak) = peak_of(|| err_of(&file));
    assert!(
        matches!(e, WeightError::TooLarge { file_len, .. } if file_len == file.len()),
        "{e}"
    );
    assert!(
        peak < 6 * file.len(),
        "held {peak} bytes reading a {}-byte file",
        file.len()
    );
    // Four of them fit.
    let pkl = state_dict(&entries[..4]);
    let c = weights::load_bytes(&torch_zip(&pkl, &[("0", &data)])).expect("4 views load");
    assert_eq!(f32s(&c, "w1")[1024..1027], [0.0, 1.0, 2.0]);
}

#[test]
fn a_memo_bomb_stops_early() {
    // A 4 KiB string, memoized and fetched 1.25 million times: a 2.5 MB pickle whose copies
    // would take 5 GB. The reader must stop having held a small multiple of its size.
    let mut p = Pickle::new().str(&"x".repeat(4096)).raw(b"q\x00(");
    p = p.raw(&b"h\x00".repeat(1_250_000));
    let file = torch_zip(&p.raw(b"l").done(), &[]);
    let (e, peak) = peak_of(|| err_of(&file));
    assert!(
        matches!(&e, WeightError::Pickle { source, .. } if source.kind == PickleErrorKind::TooLarge),
        "{e}"
    );
    assert!(
        peak < 12 * file.len(),
        "held {peak} bytes reading a {}-byte pickle",
        file.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Accepted while wrong

/// Offset of the `n`-th occurrence of `needle`.
fn find_nth(hay: &[u8], needle: &[u8], n: usize) -> usize {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .nth(n)
        .expect("signature present")
        .0
}

#[test]
fn duplicate_zip_entries_are_refused_by_name() {
    let pkl = state_dict(&[("w", "0", 1, 0, &[1], &[1])]);
    let (a, b) = (floats([1.0]), floats([2.0]));
    let mut z = torch_zip(&pkl, &[("0", &a), ("1", &b)]);
    // Rename entry `archive/data/1` to `archive/data/0`, in its local header and the central
    // directory: two different storages under one name.
    for sig in [&b"PK\x03\x04"[..], b"PK\x01\x02"] {
        let at = find_nth(&z, sig, 3);
        let name_at = at + if sig == b"PK\x03\x04" { 30 } else { 46 };
        assert_eq!(&z[name_at..name_at + 14], b"archive/data/1");
        z[name_at + 13] = b'0';
    }
    let e = err_of(&z);
    assert!(
        matches!(&e, WeightError::Zip(m) if m.contains("'archive/data/0' appears twice")),
        "{e}"
    );
}

#[test]
fn local_headers_must_match_the_central_directory() {
    let pkl = state_dict(&[("w", "0", 1, 0, &[1], &[1])]);
    let s = floats([1.0]);
    let z = torch_zip(&pkl, &[("0", &s)]);
    let storage = find_nth(&z, b"PK\x03\x04", 2);
    assert_eq!(&z[storage + 30..storage + 44], b"archive/data/0");
    // (what, offset in the local header, new byte)
    for (what, offset, byte) in [
        ("name", 30 + 13, b'9'),
        ("compression", 8, 8),
        ("compressed size", 18, 9),
        ("size", 22, 9),
        ("crc", 14, 0),
    ] {
        let mut bad = z.clone();
        bad[storage + offset] = byte;
        let e = err_of(&bad);
        assert!(
            matches!(&e, WeightError::Zip(m) if m.contains("entry 'archive/data/0'")),
            "{what}: {e}"
        );
    }
}

#[test]
fn data_descriptors_must_match_the_central_directory() {
    // torch.save writes data descriptors (the local sizes are zero, the real ones follow the
    // data); one that disagrees with the central directory is refused by entry name.
    let good = fixture("weights.pth");
    let mut archive = zip::ZipArchive::new(Cursor::new(&good[..])).expect("zip");
    let (name, end) = {
        let f = archive.by_name("weights/data.pkl").expect("data.pkl");
        (
            f.name().expect("UTF-8 name").to_string(),
            f.data_start().expect("data start") + f.compressed_size(),
        )
    };
    let mut bad = good.clone();
    let at = end as usize
        + if bad[end as usize..].starts_with(b"PK\x07\x08") {
            4
        } else {
            0
        };
    bad[at + 4] ^= 1; // the compressed size
    let e = err_of(&bad);
    assert!(
        matches!(&e, WeightError::Zip(m) if m.contains(&format!("entry '{name}'")) && m.contains("descriptor")),
        "{e}"
    );
}

#[test]
fn one_storage_as_two_types_is_refused_by_name() {
    let pkl = Pickle::new()
        .raw(b"}(")
        .str("a")
        .typed_tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .str("b")
        .typed_tensor("IntStorage", "0", 2, 0, &[2], &[1])
        .raw(b"u")
        .done();
    let s = floats([1.0, 2.0]);
    for bytes in [torch_zip(&pkl, &[("0", &s)]), legacy(&pkl, &[("0", 2, &s)])] {
        let e = err_of(&bytes);
        assert!(
            matches!(&e, WeightError::StorageConflict { key, .. } if key == "0"),
            "{e}"
        );
        assert!(e.to_string().contains("2 × f32 and as 2 × i32"), "{e}");
    }
}

#[test]
fn non_finite_weights_and_negative_variances_are_refused_by_name() {
    let t = |v: Vec<f32>| Tensor {
        shape: vec![v.len()],
        dtype: DType::F32,
        data: TensorData::F32(v),
    };
    let ckpt = Checkpoint::new(
        Format::Safetensors,
        false,
        vec![
            ("conv.weight".into(), t(vec![1.0, f32::NAN, f32::INFINITY])),
            ("bn.running_var".into(), t(vec![1.0, -0.5, 2.0])),
            ("bn.running_mean".into(), t(vec![-1.0, -0.5, 2.0])),
            ("bn.weight".into(), t(vec![1.0, 1.0, f32::NEG_INFINITY])),
        ],
    )
    .expect("names are distinct");
    let specs: Vec<TensorSpec> = [
        "conv.weight",
        "bn.running_var",
        "bn.running_mean",
        "bn.weight",
    ]
    .iter()
    .map(|n| TensorSpec::new(*n, [3]))
    .collect();
    let e = ckpt.bind(&specs, BindOptions::default()).unwrap_err();
    assert_eq!(
        e.problems,
        [
            BindProblem::NonFinite {
                name: "conv.weight".into(),
                count: 2,
                index: 1,
                value: "NaN".into()
            },
            BindProblem::NegativeVariance {
                name: "bn.running_var".into(),
                index: 1,
                value: "-0.5".into()
            },
            BindProblem::NonFinite {
                name: "bn.weight".into(),
                count: 1,
                index: 2,
                value: "-inf".into()
            },
        ]
    );
    let text = e.to_string();
    assert!(
        text.contains("tensor 'conv.weight': 2 values are not finite"),
        "{text}"
    );
    assert!(
        text.contains("tensor 'bn.running_var': running variance -0.5 of channel 1 is negative"),
        "{text}"
    );
}
