//! `torch.save` containers: the zip archive (PyTorch ≥ 1.6) and the legacy stream.
//!
//! Both hold a pickle whose tensors are `_rebuild_tensor_v2` calls on storages named by
//! persistent ids; they differ only in where the storage bytes live. This module finds the
//! state_dict inside the pickle (unwrapping training checkpoints), locates each storage's
//! bytes, checks every size and view against them, and copies the tensors out.

use std::collections::HashMap;
#[cfg(feature = "pth")]
use std::io::{Cursor, Read};

use super::pickle::{self, StorageRef, TensorRef, Value};
use super::{
    charge_decoded, check_rank, decode, decode_elements, decoded_budget, Checkpoint, DType, Format,
    Tensor, WeightError, MAX_RANK,
};

/// The legacy magic number 0x1950a86a20f9469cfc6c, little-endian, as LONG1 pickles it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The only legacy protocol version PyTorch ever wrote.
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

#[cfg(feature = "pth")]
fn zip_err(e: impl std::fmt::Display) -> WeightError {
    WeightError::Zip(e.to_string())
}

fn malformed(msg: impl Into<String>) -> WeightError {
    WeightError::Malformed(msg.into())
}

fn parse_pickle(bytes: &[u8], context: &str) -> Result<pickle::Parsed, WeightError> {
    pickle::parse(bytes).map_err(|source| WeightError::Pickle {
        context: context.to_owned(),
        source,
    })
}

/// Reads a `torch.save` zip archive.
#[cfg(feature = "pth")]
pub(super) fn load_zip(bytes: &[u8]) -> Result<Checkpoint, WeightError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
    if archive.has_duplicate_names() {
        // The reader keeps one entry per name; which one a reader picks differs.
        let name = duplicate_name(bytes, archive.central_directory_start())
            .unwrap_or_else(|| "?".to_owned());
        return Err(zip_err(format!(
            "entry '{name}' appears twice in the central directory"
        )));
    }
    let mut pickles = Vec::new();
    for name in archive.file_names() {
        let name = name.map_err(zip_err)?;
        let is_data_pkl = match name.strip_suffix("data.pkl") {
            Some("") => true,
            Some(dir) => dir.ends_with('/') && dir.matches('/').count() == 1,
            None => false,
        };
        if is_data_pkl {
            pickles.push(name.into_owned());
        }
    }
    let pkl_name = match pickles.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(zip_err(
                "no '<dir>/data.pkl' entry: not a torch.save archive",
            ))
        }
        _ => return Err(zip_err(format!("several data.pkl entries: {pickles:?}"))),
    };
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_owned();

    if archive
        .index_for_name(&format!("{prefix}byteorder"))
        .is_some()
    {
        let order = read_entry(&mut archive, &format!("{prefix}byteorder"), bytes)?;
        if order != b"little" {
            return Err(malformed(format!(
                "byte order '{}' is not supported (only little-endian)",
                String::from_utf8_lossy(&order)
            )));
        }
    }

    let pkl = read_entry(&mut archive, &pkl_name, bytes)?;
    let root = parse_pickle(&pkl, &pkl_name)?.value;
    drop(pkl);
    let selected = select_state_dict(root)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    // Entries may overlap in a crafted archive; distinct storages can never add up to more
    // than the archive itself.
    let mut storage_bytes = 0usize;
    for (_, t) in &selected.tensors {
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{prefix}data/{}", t.storage.key);
            if archive.index_for_name(&entry).is_none() {
                return Err(zip_err(format!(
                    "storage '{}' has no entry '{entry}'",
                    t.storage.key
                )));
            }
            let data = read_entry(&mut archive, &entry, bytes)?;
            storage_bytes = storage_bytes.saturating_add(data.len());
            if storage_bytes > bytes.len() {
                return Err(zip_err(format!(
                    "storages add up to more than the {}-byte archive (overlapping entries)",
                    bytes.len()
                )));
            }
            storages.insert(t.storage.key.clone(), data);
        }
    }
    let views: HashMap<&str, &[u8]> = storages
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    materialize(Format::TorchZip, selected, &views, bytes.len())
}

/// Reads one stored entry completely (the zip reader checks its CRC).
#[cfg(feature = "pth")]
fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, WeightError> {
    let file_len = bytes.len();
    let index = archive
        .index_for_name(name)
        .ok_or_else(|| zip_err(format!("missing entry '{name}'")))?;
    {
        let raw = archive.by_index_raw(index).map_err(zip_err)?;
        if raw.compression() != zip::CompressionMethod::Stored {
            return Err(WeightError::Compressed {
                entry: name.to_owned(),
                method: raw.compression().to_string(),
            });
        }
        if raw.encrypted() {
            return Err(zip_err(format!("entry '{name}' is encrypted")));
        }
        check_data_descriptor(
            bytes,
            name,
            raw.header_start(),
            raw.data_start(),
            (raw.crc32(), raw.compressed_size(), raw.size()),
        )?;
    }
    // The local header must agree with the central directory (name, method, sizes, CRC):
    // readers that walk local headers would otherwise see another file.
    let options = zip::read::ZipReadOptions::new().enforce_header_consistency(true);
    let mut file = archive
        .by_index_with_options(index, options)
        .map_err(|e| zip_err(format!("entry '{name}': {e}")))?;
    let size = file.size();
    if size > file_len as u64 {
        return Err(zip_err(format!(
            "entry '{name}' claims {size} bytes in a {file_len}-byte file"
        )));
    }
    // `size` is bounded by the file length, so this allocation is too.
    let mut buf = Vec::with_capacity(size as usize);
    (&mut file)
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| zip_err(format!("entry '{name}': {e}")))?;
    if buf.len() as u64 != size {
        return Err(zip_err(format!(
            "entry '{name}' is truncated: {} of {size} bytes",
            buf.len()
        )));
    }
    // Reading to the end makes the reader verify the CRC.
    let mut rest = [0u8; 1];
    match file.read(&mut rest) {
        Ok(0) => Ok(buf),
        Ok(_) => Err(zip_err(format!("entry '{name}' is longer than it claims"))),
        Err(e) => Err(zip_err(format!("entry '{name}': {e}"))),
    }
}

/// The first name the central directory at `start` lists twice.
#[cfg(feature = "pth")]
fn duplicate_name(bytes: &[u8], start: u64) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let mut pos = usize::try_from(start).ok()?;
    while bytes.get(pos..pos + 4)? == b"PK\x01\x02" {
        let u16_at = |o: usize| -> Option<usize> {
            let b = bytes.get(pos + o..pos + o + 2)?;
            Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        let (n, extra, comment) = (u16_at(28)?, u16_at(30)?, u16_at(32)?);
        let name = bytes.get(pos + 46..pos + 46 + n)?;
        if !seen.insert(name) {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        pos += 46 + n + extra + comment;
    }
    None
}

/// An entry written with a data descriptor (flag bit 3: the local header's sizes are zero
/// and the real ones follow the data, as `torch.save` writes) must have a descriptor that
/// agrees with the central directory's `(crc, compressed size, size)`.
#[cfg(feature = "pth")]
fn check_data_descriptor(
    bytes: &[u8],
    name: &str,
    header_start: u64,
    data_start: Option<u64>,
    central: (u32, u64, u64),
) -> Result<(), WeightError> {
    let at = |o: u64, n: usize| {
        usize::try_from(o)
            .ok()
            .and_then(|o| bytes.get(o..o.checked_add(n)?))
    };
    let bad = |what: String| zip_err(format!("entry '{name}': {what}"));
    let flags = at(header_start + 6, 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("local header past the end of the file".into()))?;
    if flags & 0x8 == 0 {
        return Ok(());
    }
    let (crc, csize, size) = central;
    let mut p = data_start
        .and_then(|d| d.checked_add(csize))
        .ok_or_else(|| bad("data descriptor past the end of the file".into()))?;
    if at(p, 4) == Some(b"PK\x07\x08") {
        p += 4;
    }
    let u32_at = |o| at(o, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o| at(o, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let found_crc = u32_at(p);
    // Sizes are 4 bytes each, or 8 in a zip64 archive.
    let narrow = u32_at(p + 4)
        .zip(u32_at(p + 8))
        .map(|(c, s)| (u64::from(c), u64::from(s)));
    let wide = u64_at(p + 4).zip(u64_at(p + 12));
    if found_crc == Some(crc) && (narrow == Some((csize, size)) || wide == Some((csize, size))) {
        return Ok(());
    }
    Err(bad(format!(
        "the data descriptor (crc {found_crc:08x?}, sizes {narrow:?}) disagrees with the central directory (crc {crc:08x}, {csize} bytes stored, {size} bytes)"
    )))
}

/// Reads a legacy (pre-1.6) `torch.save` stream.
pub(super) fn load_legacy(bytes: &[u8]) -> Result<Checkpoint, WeightError> {
    let mut pos = 0usize;
    let mut next = |context: &str| -> Result<Value, WeightError> {
        let rest = bytes.get(pos..).unwrap_or_default();
        let parsed = parse_pickle(rest, context)?;
        pos += parsed.len;
        Ok(parsed.value)
    };
    match next("legacy .pth magic number")? {
        Value::BigInt(b) if b == LEGACY_MAGIC => {}
        _ => {
            return Err(malformed(
                "a pickle stream without the legacy .pth magic number (not a torch.save file)",
            ))
        }
    }
    match next("legacy .pth protocol version")? {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        other => {
            return Err(malformed(format!(
                "legacy .pth protocol version {other:?} is not supported (expected 1001)"
            )))
        }
    }
    if let Value::Dict(info) = next("legacy .pth system info")? {
        for (k, v) in &info {
            if k.as_str() == Some("little_endian") && *v == Value::Bool(false) {
                return Err(malformed("big-endian legacy .pth files are not supported"));
            }
        }
    }
    let root = next("legacy .pth main pickle")?;
    let keys = match next("legacy .pth storage key list")? {
        Value::List(keys) => keys,
        other => {
            return Err(malformed(format!(
                "storage key list is a {}",
                other.type_name()
            )))
        }
    };

    // Every storage the pickle mentions, so that the raw section can be walked.
    let mut declared: HashMap<String, StorageRef> = HashMap::new();
    collect_storages(&root, &mut declared);

    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in &keys {
        let Value::Str(key) = key else {
            return Err(malformed("a storage key is not a string"));
        };
        let storage = declared
            .get(key)
            .ok_or_else(|| malformed(format!("storage '{key}' is listed but never used")))?;
        let count_bytes = bytes
            .get(pos..pos.saturating_add(8))
            .ok_or_else(|| malformed(format!("file ends before storage '{key}'")))?;
        let count = u64::from_le_bytes(count_bytes.try_into().unwrap_or([0; 8]));
        pos += 8;
        let elem = storage.dtype.size();
        let expected = storage.numel as u128 * elem as u128;
        let found = u128::from(count) * elem as u128;
        if count != storage.numel as u64 {
            return Err(WeightError::StorageSize {
                key: key.clone(),
                numel: storage.numel,
                dtype: storage.dtype,
                expected,
                found,
            });
        }
        let end = (pos as u128) + expected;
        let data = usize::try_from(end)
            .ok()
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| WeightError::StorageSize {
                key: key.clone(),
                numel: storage.numel,
                dtype: storage.dtype,
                expected,
                found: bytes.len().saturating_sub(pos) as u128,
            })?;
        pos += data.len();
        if storages.insert(key.as_str(), data).is_some() {
            return Err(malformed(format!("storage '{key}' is listed twice")));
        }
    }
    let selected = select_state_dict(root)?;
    materialize(Format::TorchLegacy, selected, &storages, bytes.len())
}

/// Records every storage reachable from `v` (values nest at most `pickle::MAX_DEPTH` deep).
fn collect_storages(v: &Value, out: &mut HashMap<String, StorageRef>) {
    match v {
        Value::Storage(s) => {
            out.entry(s.key.clone()).or_insert_with(|| (**s).clone());
        }
        Value::Tensor(t) => {
            out.entry(t.storage.key.clone())
                .or_insert_with(|| t.storage.clone());
        }
        Value::Tuple(items) | Value::List(items) => {
            for i in items {
                collect_storages(i, out);
            }
        }
        Value::Dict(entries) => {
            for (k, v) in entries {
                collect_storages(k, out);
                collect_storages(v, out);
            }
        }
        _ => {}
    }
}

/// The tensors of a state_dict, named, before their data is read.
#[derive(Debug)]
struct Selected {
    tensors: Vec<(String, TensorRef)>,
    from_training_checkpoint: bool,
    /// `loss.*` tensors of a segmentation `FullModel` that were left out.
    dropped_loss: usize,
}

/// Finds the state_dict in an unpickled object and names its tensors.
///
/// - A dict with a `state_dict` entry is a training checkpoint: that entry is used, and the
///   rest (epoch, optimizer state, …) is ignored.
/// - Non-tensor entries of the state_dict are ignored.
/// - A `module.` prefix (DataParallel) is removed from every name that has it; then, if most
///   names start with `model.` (the segmentation repo's `FullModel`), that prefix is removed
///   from those names and the wrapper's `loss.*` tensors (e.g. the criterion's class
///   weights) are dropped and counted; any other name without the prefix is kept as it is
///   (and binding reports it).
fn select_state_dict(root: Value) -> Result<Selected, WeightError> {
    let Value::Dict(mut entries) = root else {
        return Err(malformed(format!(
            "the pickled object is a {}, not a dict of tensors",
            root.type_name()
        )));
    };
    let mut from_training_checkpoint = false;
    if let Some(i) = entries
        .iter()
        .rposition(|(k, _)| k.as_str() == Some("state_dict"))
    {
        match entries.swap_remove(i).1 {
            Value::Dict(inner) => {
                entries = inner;
                from_training_checkpoint = true;
            }
            other => {
                return Err(malformed(format!(
                    "the 'state_dict' entry is a {}, not a dict",
                    other.type_name()
                )))
            }
        }
    }

    // Python dict semantics: a repeated key keeps its first position and its last value.
    let mut tensors: Vec<(String, TensorRef)> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for (k, v) in entries {
        let Value::Tensor(t) = v else { continue };
        let t = *t;
        let Value::Str(name) = k else {
            return Err(malformed(format!(
                "a tensor has a {} key, not a name",
                k.type_name()
            )));
        };
        match position.get(&name) {
            Some(&i) => {
                if let Some(slot) = tensors.get_mut(i) {
                    slot.1 = t;
                }
            }
            None => {
                position.insert(name.clone(), tensors.len());
                tensors.push((name, t));
            }
        }
    }

    for (name, _) in &mut tensors {
        if let Some(rest) = name.strip_prefix("module.") {
            *name = rest.to_owned();
        }
    }
    let with_model = tensors
        .iter()
        .filter(|(n, _)| n.starts_with("model."))
        .count();
    let mut dropped_loss = 0;
    if with_model * 2 > tensors.len() {
        let before = tensors.len();
        tensors.retain(|(name, _)| !name.starts_with("loss."));
        dropped_loss = before - tensors.len();
        for (name, _) in &mut tensors {
            if let Some(rest) = name.strip_prefix("model.") {
                *name = rest.to_owned();
            }
        }
    }
    Ok(Selected {
        tensors,
        from_training_checkpoint,
        dropped_loss,
    })
}

/// Copies each tensor out of its storage, checking sizes and views.
fn materialize(
    format: Format,
    selected: Selected,
    storages: &HashMap<&str, &[u8]>,
    file_len: usize,
) -> Result<Checkpoint, WeightError> {
    let mut budget = decoded_budget(file_len);
    // Each storage must be declared alike by every tensor that views it.
    let mut declared: HashMap<&str, (DType, usize)> = HashMap::new();
    for (_, t) in &selected.tensors {
        let s = &t.storage;
        let (dtype, numel) = *declared.entry(&s.key).or_insert((s.dtype, s.numel));
        if (dtype, numel) != (s.dtype, s.numel) {
            return Err(WeightError::StorageConflict {
                key: s.key.clone(),
                first: format!("{numel} × {dtype}"),
                second: format!("{} × {}", s.numel, s.dtype),
            });
        }
    }
    let mut out = Vec::with_capacity(selected.tensors.len());
    for (name, t) in selected.tensors {
        let raw = storages
            .get(t.storage.key.as_str())
            .copied()
            .ok_or_else(|| malformed(format!("storage '{}' has no data", t.storage.key)))?;
        let tensor = gather(&name, &t, raw, &mut budget, file_len)?;
        out.push((name, tensor));
    }
    let mut ckpt = Checkpoint::new(format, selected.from_training_checkpoint, out)?;
    ckpt.dropped_loss_tensors = selected.dropped_loss;
    Ok(ckpt)
}

/// Reads the view `t` of the storage bytes `raw`, charging the decoded size to `budget`.
fn gather(
    name: &str,
    t: &TensorRef,
    raw: &[u8],
    budget: &mut u128,
    file_len: usize,
) -> Result<Tensor, WeightError> {
    let s = &t.storage;
    let elem = s.dtype.size();
    let expected = s.numel as u128 * elem as u128;
    if raw.len() as u128 != expected {
        return Err(WeightError::StorageSize {
            key: s.key.clone(),
            numel: s.numel,
            dtype: s.dtype,
            expected,
            found: raw.len() as u128,
        });
    }
    check_rank(name, &t.size)?;
    // Dimensions of size 1 read one element whatever their stride: leave them out.
    let dims: Vec<(usize, usize)> = t
        .size
        .iter()
        .zip(&t.stride)
        .map(|(&d, &st)| (d, st))
        .filter(|&(d, _)| d != 1)
        .collect();
    let out_of_bounds = || WeightError::ViewOutOfBounds {
        name: name.to_owned(),
        key: s.key.clone(),
        offset: t.offset,
        shape: t.size.clone(),
        stride: t.stride.clone(),
        numel: s.numel,
    };
    let count = dims
        .iter()
        .try_fold(1u128, |acc, &(d, _)| acc.checked_mul(d as u128));
    let count = charge_decoded(budget, count, s.dtype, file_len)?;

    let data = if count == 0 {
        if t.offset > s.numel {
            return Err(out_of_bounds());
        }
        decode(s.dtype, &[])
    } else {
        // The last element the view touches must lie inside the storage.
        let mut last = t.offset as u128;
        for &(d, st) in &dims {
            // d ≥ 1 here (count > 0); saturation only makes an absurd view fail the check.
            last = last.saturating_add((d as u128 - 1).saturating_mul(st as u128));
        }
        if last >= s.numel as u128 {
            return Err(out_of_bounds());
        }
        // Every offset below is ≤ `last` < numel, so none overflows, and every read is in
        // bounds: `raw` has numel × elem bytes.
        if is_contiguous(&t.size, &t.stride) {
            let start = t.offset * elem;
            let bytes = raw
                .get(start..start + count * elem)
                .ok_or_else(out_of_bounds)?;
            decode(s.dtype, bytes)
        } else {
            let offsets = Strided::new(t.offset, &dims);
            let elements = offsets.map(|at| raw.get(at * elem..(at + 1) * elem).unwrap_or(&[]));
            decode_elements(s.dtype, count, elements.take(count))
        }
    };
    Ok(Tensor {
        shape: t.size.clone(),
        dtype: s.dtype,
        data,
    })
}

/// The storage offsets of a strided view's elements in C order, in O(1) per element: a
/// running offset moved by one stride per step (and back by a whole dimension on carry).
struct Strided<'a> {
    dims: &'a [(usize, usize)],
    index: [usize; MAX_RANK],
    at: usize,
    done: bool,
}

impl<'a> Strided<'a> {
    /// `dims` (size, stride) with every size ≥ 1 and at most [`MAX_RANK`] of them; the caller
    /// has checked that the last offset fits.
    fn new(offset: usize, dims: &'a [(usize, usize)]) -> Strided<'a> {
        Strided {
            dims,
            index: [0; MAX_RANK],
            at: offset,
            done: dims.len() > MAX_RANK || dims.iter().any(|&(d, _)| d == 0),
        }
    }
}

impl Iterator for Strided<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.done {
            return None;
        }
        let here = self.at;
        self.done = true;
        for (i, &(d, st)) in self.dims.iter().enumerate().rev() {
            self.index[i] += 1;
            if self.index[i] < d {
                self.at += st;
                self.done = false;
                break;
            }
            self.index[i] = 0;
            self.at -= (d - 1) * st;
        }
        Some(here)
    }
}

/// Whether a view with these sizes and strides is dense and in C order (dimensions of size 1
/// may have any stride).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &st) in size.iter().zip(stride).rev() {
        if d != 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{DType, TensorData};

    fn view(offset: usize, size: &[usize], stride: &[usize], numel: usize) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                dtype: DType::F32,
                key: "0".to_owned(),
                location: "cpu".to_owned(),
                numel,
            },
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
        }
    }

    fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[64, 1, 1, 1], &[1, 1, 1, 1]));
        assert!(is_contiguous(&[], &[]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(!is_contiguous(&[2, 3], &[0, 1]));
    }

    #[test]
    fn gathers_strided_views() {
        let raw = floats((0..6).map(|i| i as f32));
        let mut budget = 1000;
        // The transpose of a 2×3 matrix.
        let t = gather("t", &view(0, &[3, 2], &[1, 3], 6), &raw, &mut budget, 100).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
        // A broadcast row with stride 0, at an offset.
        let t = gather("t", &view(4, &[2, 2], &[0, 1], 6), &raw, &mut budget, 100).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![4.0, 5.0, 4.0, 5.0]));
        // Contiguous with an offset.
        let t = gather("t", &view(1, &[5], &[1], 6), &raw, &mut budget, 100).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        // Empty tensors read nothing.
        let t = gather("t", &view(6, &[0, 3], &[3, 1], 6), &raw, &mut budget, 100).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![]));
    }

    #[test]
    fn refuses_views_past_the_storage() {
        let raw = floats((0..6).map(|i| i as f32));
        let mut budget = 1000;
        for (offset, size, stride) in [
            (1, vec![6], vec![1]),
            (0, vec![3, 2], vec![1, 4]),
            (7, vec![0], vec![1]),
            (usize::MAX, vec![1], vec![1]),
            (0, vec![2], vec![usize::MAX]),
        ] {
            let r = gather(
                "w",
                &view(offset, &size, &stride, 6),
                &raw,
                &mut budget,
                100,
            );
            assert!(
                matches!(r, Err(WeightError::ViewOutOfBounds { ref name, .. }) if name == "w"),
                "offset {offset} size {size:?} stride {stride:?}: {r:?}"
            );
        }
    }

    #[test]
    fn refuses_huge_views_and_wrong_storage_sizes() {
        let raw = floats([1.0]);
        let mut budget = 1000;
        let r = gather(
            "w",
            &view(0, &[1 << 40, 1 << 40], &[0, 0], 1),
            &raw,
            &mut budget,
            100,
        );
        assert!(matches!(r, Err(WeightError::TooLarge { .. })), "{r:?}");
        let r = gather(
            "w",
            &view(0, &[usize::MAX, 4], &[0, 0], 1),
            &raw,
            &mut budget,
            100,
        );
        assert!(matches!(r, Err(WeightError::TooLarge { .. })), "{r:?}");
        let r = gather("w", &view(0, &[2], &[1], 2), &raw, &mut budget, 100);
        assert!(matches!(r, Err(WeightError::StorageSize { .. })), "{r:?}");
    }

    #[test]
    fn state_dict_selection_and_prefixes() {
        let t = Value::Tensor(Box::new(view(0, &[1], &[1], 1)));
        let s = |x: &str| Value::Str(x.to_owned());
        let inner = Value::Dict(vec![
            (s("module.model.a"), t.clone()),
            (s("module.model.b"), t.clone()),
            (s("module.loss.w"), t.clone()),
            (
                s("module.model.a"),
                Value::Tensor(Box::new(view(0, &[2], &[1], 2))),
            ),
        ]);
        let root = Value::Dict(vec![
            (s("epoch"), Value::Int(3)),
            (s("state_dict"), inner),
            (s("optimizer"), Value::Dict(vec![(s("x"), t.clone())])),
        ]);
        let sel = select_state_dict(root).unwrap();
        assert!(sel.from_training_checkpoint);
        let names: Vec<_> = sel.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b"],
            "the FullModel's loss.* tensors are dropped"
        );
        assert_eq!(sel.dropped_loss, 1);
        assert_eq!(sel.tensors[0].1.size, vec![2], "the last duplicate wins");

        let root = Value::Dict(vec![(s("model.a"), t.clone()), (s("loss.w"), t.clone())]);
        let names: Vec<_> = select_state_dict(root)
            .unwrap()
            .tensors
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["model.a", "loss.w"], "no majority: keep names");
        let root = Value::Dict(vec![(s("loss.w"), t.clone())]);
        assert_eq!(select_state_dict(root).unwrap().dropped_loss, 0);

        let r = select_state_dict(Value::List(vec![]));
        assert!(matches!(r, Err(WeightError::Malformed(_))));
    }
}
