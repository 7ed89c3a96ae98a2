//! `.safetensors` files, read with the `safetensors` crate, which validates the header: its
//! length, that offsets are contiguous and in bounds, and that they cover the file exactly.

use safetensors::{Dtype, SafeTensors};

use super::{
    charge_decoded, check_rank, decode, decoded_budget, Checkpoint, DType, Format, Tensor,
    WeightError,
};

/// Reads a whole safetensors file; tensors come in the order of their data in the file.
pub(super) fn load(bytes: &[u8]) -> Result<Checkpoint, WeightError> {
    let (header_len, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| WeightError::Safetensors(e.to_string()))?;
    let data = 8usize
        .checked_add(header_len)
        .and_then(|start| bytes.get(start..))
        .ok_or_else(|| WeightError::Safetensors("header runs past the end of the file".into()))?;
    let mut tensors = Vec::new();
    let mut budget = decoded_budget(bytes.len());
    for name in metadata.offset_keys() {
        let info = metadata
            .info(&name)
            .ok_or_else(|| WeightError::Safetensors(format!("tensor '{name}' has no entry")))?;
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::I16 => DType::I16,
            Dtype::I8 => DType::I8,
            Dtype::U8 => DType::U8,
            Dtype::U16 => DType::U16,
            Dtype::U32 => DType::U32,
            Dtype::BOOL => DType::Bool,
            other => {
                return Err(WeightError::UnsupportedDType {
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        let raw = data.get(start..end).ok_or_else(|| {
            WeightError::Safetensors(format!("tensor '{name}' lies outside the data"))
        })?;
        check_rank(&name, &info.shape)?;
        let count = (raw.len() / dtype.size()) as u128;
        charge_decoded(&mut budget, Some(count), dtype, bytes.len())?;
        let tensor = Tensor {
            shape: info.shape.clone(),
            dtype,
            data: decode(dtype, raw),
        };
        tensors.push((name, tensor));
    }
    Checkpoint::new(Format::Safetensors, false, tensors)
}
