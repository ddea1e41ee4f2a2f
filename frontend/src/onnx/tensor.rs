//! ONNX element types and `TensorProto` payloads: inline typed fields, `raw_data`, and external
//! data files (resolved relative to the model's directory), read with `pread` into each constant.

use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::TensorProto;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::tensor::{Buffer, Tensor};

/// Why a tensor payload could not be decoded; the caller adds the tensor's name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PayloadError {
    pub message: String,
    /// The payload may be valid ONNX that tessera cannot represent (an element type it lacks).
    pub unsupported: bool,
}

impl PayloadError {
    fn invalid(message: impl Into<String>) -> PayloadError {
        PayloadError { message: message.into(), unsupported: false }
    }
}

/// The ONNX spelling of an element type code, for messages.
pub(crate) fn onnx_type_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_lowercase(),
        Err(_) => format!("unknown element type {code}"),
    }
}

/// The ONNX element types and the tsr dtype of each.
const ELEMENT_TYPES: [(DataType, DType); 22] = [
    (DataType::Float, DType::F32),
    (DataType::Double, DType::F64),
    (DataType::Float16, DType::F16),
    (DataType::Bfloat16, DType::BF16),
    (DataType::Float8e4m3fn, DType::F8E4M3),
    (DataType::Float8e5m2, DType::F8E5M2),
    (DataType::Float8e4m3fnuz, DType::F8E4M3Fnuz),
    (DataType::Float8e5m2fnuz, DType::F8E5M2Fnuz),
    (DataType::Float4e2m1, DType::F4E2M1),
    (DataType::Int64, DType::I64),
    (DataType::Int32, DType::I32),
    (DataType::Int16, DType::I16),
    (DataType::Int8, DType::I8),
    (DataType::Int4, DType::I4),
    (DataType::Int2, DType::I2),
    (DataType::Uint64, DType::U64),
    (DataType::Uint32, DType::U32),
    (DataType::Uint16, DType::U16),
    (DataType::Uint8, DType::U8),
    (DataType::Uint4, DType::U4),
    (DataType::Uint2, DType::U2),
    (DataType::Bool, DType::Bool),
];

/// The tsr dtype of an ONNX element type code. Types tsr lacks (strings, complex numbers,
/// FLOAT8E8M0) are unsupported.
pub(crate) fn dtype_of(code: i32) -> Result<DType, PayloadError> {
    let onnx = match DataType::try_from(code) {
        Ok(DataType::Undefined) | Err(_) => {
            return Err(PayloadError::invalid(format!("element type {code} is not an ONNX data type")))
        }
        Ok(t) => t,
    };
    if onnx == DataType::String {
        return Err(PayloadError {
            message: "string tensors are not supported: tessera computes on numeric tensors only".into(),
            unsupported: true,
        });
    }
    ELEMENT_TYPES.iter().find(|(o, _)| *o == onnx).map(|&(_, d)| d).ok_or_else(|| PayloadError {
        message: format!("element type {} is not supported by tessera", onnx_type_name(code)),
        unsupported: true,
    })
}

/// The ONNX element type code of a tsr dtype.
pub(crate) fn onnx_code_of(dtype: DType) -> i32 {
    let t = ELEMENT_TYPES.iter().find(|(_, d)| *d == dtype).map_or(DataType::Undefined, |&(o, _)| o);
    t as i32
}

/// The model file a [`ModelProto`](super::proto::ModelProto) was decoded from: the open file,
/// and the memory map its `bytes` fields slice. A `raw_data` payload that lies inside the map is
/// read from the file at the same offset ([`read_payload`]) instead of through the map, so its
/// pages never become resident as mapped memory beside the constant built from them.
pub(crate) struct ModelFile {
    path: PathBuf,
    file: File,
    map: Bytes,
}

impl ModelFile {
    pub fn new(path: &Path, file: File, map: Bytes) -> ModelFile {
        ModelFile { path: path.to_path_buf(), file, map }
    }

    /// The file offset of `slice` when it lies inside the map (a `raw_data` field decoded from
    /// it); `None` for bytes from anywhere else.
    fn offset_of(&self, slice: &[u8]) -> Option<u64> {
        let start = self.map.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        let inside = at >= start && at.checked_add(slice.len())? <= start + self.map.len();
        inside.then(|| (at - start) as u64)
    }
}

/// Where an import reads payloads from: external data files (opened once per file, read with
/// `pread` at each tensor's offset) and, when known, the model's own file.
#[derive(Default)]
pub(crate) struct ExternalData {
    /// Directory that `location` entries are relative to: the model file's directory.
    base_dir: Option<PathBuf>,
    /// Open external data files and their lengths.
    files: HashMap<PathBuf, (File, u64)>,
    model_file: Option<ModelFile>,
}

impl ExternalData {
    pub fn new(base_dir: Option<&Path>) -> ExternalData {
        ExternalData { base_dir: base_dir.map(Path::to_path_buf), files: HashMap::new(), model_file: None }
    }

    /// Reads `raw_data` payloads from `model_file` (see [`ModelFile`]).
    pub fn with_model_file(mut self, model_file: Option<ModelFile>) -> ExternalData {
        self.model_file = model_file;
        self
    }

    pub fn base_dir(&self) -> Option<&Path> {
        self.base_dir.as_deref()
    }

    /// The file holding `location`'s bytes `[offset, offset + length)` (to the end of the file
    /// without a length), checked to lie inside it: the open file, its path, the offset and the
    /// length of the range.
    fn range(
        &mut self,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(&File, &Path, u64, u64), PayloadError> {
        let base = self.base_dir.as_ref().ok_or_else(|| {
            PayloadError::invalid(format!("external data '{location}' needs the model's directory, which is unknown"))
        })?;
        // ONNX requires a relative path inside the model directory; refusing anything else keeps a
        // model from reading arbitrary files.
        let rel = Path::new(location);
        let escapes =
            rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) || location.is_empty();
        if escapes {
            return Err(PayloadError::invalid(format!(
                "external data location '{location}' must be a relative path inside the model directory"
            )));
        }
        let path = confined_regular_file(base, rel, location)?;
        if !self.files.contains_key(&path) {
            let cannot_open = |e: std::io::Error| {
                PayloadError::invalid(format!("cannot open external data file {}: {e}", path.display()))
            };
            let file = File::open(&path).map_err(cannot_open)?;
            let len = file.metadata().map_err(cannot_open)?.len();
            self.files.insert(path.clone(), (file, len));
        }
        let Some((path, (file, file_len))) = self.files.get_key_value(&path) else {
            return Err(PayloadError::invalid(format!("external data file {} is not open", path.display())));
        };
        let end = match length {
            Some(n) => offset.checked_add(n),
            None => Some(*file_len),
        };
        match end {
            Some(end) if offset <= end && end <= *file_len => Ok((file, path.as_path(), offset, end - offset)),
            _ => Err(PayloadError::invalid(format!(
                "external data range offset {offset}, length {} exceeds {} ({file_len} bytes)",
                length.map_or("(rest of file)".to_string(), |n| n.to_string()),
                path.display()
            ))),
        }
    }
}

/// `base/rel` with every symlink resolved, refused unless it stays inside `base` (also resolved)
/// and is a regular file: a lexically clean `location` can still leave the model directory
/// through a symlink (`etc -> /etc`), or name a FIFO or device that never ends.
fn confined_regular_file(base: &Path, rel: &Path, location: &str) -> Result<PathBuf, PayloadError> {
    let cannot = |what: &Path, e: std::io::Error| {
        PayloadError::invalid(format!("cannot open external data file {}: {e}", what.display()))
    };
    let base = base.canonicalize().map_err(|e| cannot(base, e))?;
    let joined = base.join(rel);
    let resolved = joined.canonicalize().map_err(|e| cannot(&joined, e))?;
    if !resolved.starts_with(&base) {
        return Err(PayloadError::invalid(format!(
            "external data location '{location}' resolves through a symlink to {}, outside the model directory {}",
            resolved.display(),
            base.display()
        )));
    }
    let metadata = std::fs::metadata(&resolved).map_err(|e| cannot(&resolved, e))?;
    if !metadata.is_file() {
        return Err(PayloadError::invalid(format!(
            "external data location '{location}' is not a regular file ({})",
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// The largest dimension tessera accepts (2^40). Limits like this one keep the shape arithmetic
/// of a hostile or corrupted model far from integer overflow.
pub(crate) const MAX_DIM: i64 = 1 << 40;
/// The largest element count of one tensor type (2^62).
pub(crate) const MAX_ELEMENTS: u64 = 1 << 62;

/// The shape of a TensorProto, checked: non-negative dims whose product fits in memory.
fn shape_of(t: &TensorProto) -> Result<(Vec<usize>, usize), PayloadError> {
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        if d > MAX_DIM {
            return Err(PayloadError::invalid(format!("dimension {d} is larger than tessera's limit of {MAX_DIM}")));
        }
        let n = usize::try_from(d).map_err(|_| PayloadError::invalid(format!("negative dimension {d}")))?;
        count = count
            .checked_mul(n)
            .ok_or_else(|| PayloadError::invalid(format!("shape {:?} has too many elements", t.dims)))?;
        shape.push(n);
    }
    Ok((shape, count))
}

/// The tsr type a tensor declares (its `data_type` and `dims`), without reading its payload.
pub(crate) fn declared_type(t: &TensorProto) -> Result<tessera_ir::types::TensorType, PayloadError> {
    let dtype = dtype_of(t.data_type())?;
    let (shape, _) = shape_of(t)?;
    let dims = shape.into_iter().map(|n| tessera_ir::types::Dim::Static(n as u64)).collect();
    Ok(tessera_ir::types::TensorType::new(dtype, dims))
}

/// Decodes a tensor payload into a tsr tensor.
pub(crate) fn decode(t: &TensorProto, external: &mut ExternalData) -> Result<Tensor, PayloadError> {
    let dtype = dtype_of(t.data_type())?;
    let (shape, count) = shape_of(t)?;
    if t.segment.is_some() {
        return Err(PayloadError { message: "segmented tensors are not supported".into(), unsupported: true });
    }
    if t.data_location() == DataLocation::External {
        let (location, offset, length) = external_entries(t)?;
        let (file, path, offset, length) = external.range(&location, offset, length)?;
        return read_payload(dtype, shape, count, FileRange { file, path, offset, length });
    }
    if let Some(raw) = &t.raw_data {
        if let Some(model) = &external.model_file {
            if let Some(offset) = model.offset_of(raw) {
                let range = FileRange { file: &model.file, path: &model.path, offset, length: raw.len() as u64 };
                return read_payload(dtype, shape, count, range);
            }
        }
        return from_raw(dtype, shape, count, raw);
    }
    from_typed_fields(t, dtype, shape, count)
}

/// An external payload's `location`, `offset` and (when given) `length` entries.
fn external_entries(t: &TensorProto) -> Result<(String, u64, Option<u64>), PayloadError> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &t.external_data {
        let value = entry.value();
        let parse = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| PayloadError::invalid(format!("external data {what} '{value}' is not a number")))
        };
        match entry.key() {
            "location" => location = Some(value.to_string()),
            "offset" => offset = parse("offset")?,
            "length" => length = Some(parse("length")?),
            _ => {} // checksum and future keys do not change the bytes.
        }
    }
    let location = location.ok_or_else(|| PayloadError::invalid("external data has no 'location'"))?;
    Ok((location, offset, length))
}

/// The little-endian bit pattern of element `index` of a payload held as `raw_data` or in an
/// external file, read alone: a few of these tell two large tensors apart without decoding
/// either (a `pread` or one mapped page each). `None` when the element cannot be read this way
/// (inline typed fields, 4- and 2-bit elements, an index past the end, a payload whose length
/// does not match its shape or that cannot be read); [`decode`] then says what is wrong.
pub(crate) fn raw_element(t: &TensorProto, index: usize, external: &mut ExternalData) -> Option<u64> {
    let dtype = dtype_of(t.data_type()).ok()?;
    let (_, count) = shape_of(t).ok()?;
    let width = dtype.bits() / 8;
    if dtype.bits() % 8 != 0 || index >= count || t.segment.is_some() {
        return None;
    }
    let payload_length = dtype.packed_bytes(count)? as u64;
    let mut bytes = [0u8; 8];
    let element = &mut bytes[..width];
    let at = (index * width) as u64;
    if t.data_location() == DataLocation::External {
        let (location, offset, length) = external_entries(t).ok()?;
        let (file, _, offset, length) = external.range(&location, offset, length).ok()?;
        if length != payload_length {
            return None;
        }
        file.read_exact_at(element, offset + at).ok()?;
    } else {
        let raw = t.raw_data.as_ref()?;
        if raw.len() as u64 != payload_length {
            return None;
        }
        element.copy_from_slice(raw.get(at as usize..at as usize + width)?);
    }
    Some(u64::from_le_bytes(bytes))
}

/// A payload's place in a file.
struct FileRange<'a> {
    file: &'a File,
    path: &'a Path,
    offset: u64,
    length: u64,
}

/// The payload at `range` decoded as [`from_raw`] decodes bytes. Float32, float16 and bfloat16
/// elements (a model's weights) are read with one `pread` straight into the constant's storage,
/// in their own width: the bytes are copied once, from the page cache, and no mapped page or
/// staging buffer stays resident. Other element types go through a byte buffer and [`from_raw`].
fn read_payload(dtype: DType, shape: Vec<usize>, count: usize, range: FileRange) -> Result<Tensor, PayloadError> {
    check_payload_length(dtype, &shape, count, range.length)?;
    let read = |buf: &mut [u8]| {
        range.file.read_exact_at(buf, range.offset).map_err(|e| {
            PayloadError::invalid(format!(
                "cannot read {} bytes at offset {} of {}: {e}",
                range.length,
                range.offset,
                range.path.display()
            ))
        })
    };
    // Zeroed allocations of these sizes come from fresh pages, so zeroing costs nothing; the
    // read then writes each page once.
    if cfg!(target_endian = "little") {
        match dtype {
            DType::F32 => {
                let mut values = vec![0f32; count];
                read(element_bytes_mut(&mut values))?;
                return Ok(Tensor::from_f32(shape, values));
            }
            DType::F16 => {
                let mut values = vec![half::f16::ZERO; count];
                read(element_bytes_mut(&mut values))?;
                return Ok(Tensor::from_f16(shape, values));
            }
            DType::BF16 => {
                let mut values = vec![half::bf16::ZERO; count];
                read(element_bytes_mut(&mut values))?;
                return Ok(Tensor::from_bf16(shape, values));
            }
            _ => {}
        }
    }
    let mut bytes = vec![0u8; range.length as usize];
    read(&mut bytes)?;
    from_raw(dtype, shape, count, &bytes)
}

/// Element types whose every bit pattern is a valid value and that have no padding: a file's
/// bytes may be read straight into a slice of them.
trait AnyBitPattern: Copy {}
impl AnyBitPattern for f32 {}
impl AnyBitPattern for half::f16 {}
impl AnyBitPattern for half::bf16 {}

/// The bytes of `values`, for reading little-endian payloads into them.
fn element_bytes_mut<T: AnyBitPattern>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: the byte slice covers exactly the memory of `values` (size_of_val bytes from its
    // start), u8 has alignment 1, and every bit pattern is a valid `T` (the trait's contract:
    // f32, and half's f16/bf16, which are transparent u16s), so whatever is written through the
    // bytes leaves valid elements; `values` stays mutably borrowed for the lifetime.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// Refuses a payload of `length` bytes that does not hold exactly `count` elements of `dtype`.
fn check_payload_length(dtype: DType, shape: &[usize], count: usize, length: u64) -> Result<(), PayloadError> {
    let needed = dtype.packed_bytes(count);
    if needed.map(|n| n as u64) != Some(length) {
        return Err(PayloadError::invalid(format!(
            "holds {length} bytes, but shape {shape:?} of {dtype} needs {}",
            needed.unwrap_or(usize::MAX)
        )));
    }
    Ok(())
}

/// Little-endian packed elements, as `raw_data` and external files hold them (4- and 2-bit
/// types packed into bytes, the first element in the lowest bits).
pub(crate) fn from_raw(dtype: DType, shape: Vec<usize>, count: usize, bytes: &[u8]) -> Result<Tensor, PayloadError> {
    check_payload_length(dtype, &shape, count, bytes.len() as u64)?;
    // Each decoder below yields values exactly representable in `dtype` (floats widened from
    // their own bit patterns, integers from their own width), which is what `Tensor` holds, so
    // the tensor is built directly rather than through `Tensor::from_f64`/`from_i64`: their
    // rounding pass over already-rounded values, and a per-element call through a function
    // pointer, were a third of importing a 100 MB model (BENCHMARKS.md).
    let floats = |values: Vec<f64>| Tensor { dtype, shape: shape.clone(), data: Buffer::Float(values) };
    let ints = |values: Vec<i64>| Tensor { dtype, shape: shape.clone(), data: Buffer::Int(values) };
    fn le(c: &[u8]) -> [u8; 8] {
        let mut b = [0u8; 8];
        let n = c.len().min(8);
        b[..n].copy_from_slice(&c[..n]);
        b
    }
    // `chunks_exact(size)` yields slices of exactly `size` bytes, so the indexing below holds.
    Ok(match dtype {
        // f32 keeps its own width (tsr's `F32` storage): the bytes are copied, not widened.
        DType::F32 => Tensor::from_f32(shape.clone(), each(bytes, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        DType::F64 => floats(each(bytes, 8, |c| f64::from_le_bytes(le(c)))),
        // f16 and bf16 keep their 2-byte width too (tsr's `F16`/`BF16` storage).
        DType::F16 => Tensor::from_f16(shape.clone(), each(bytes, 2, |c| half::f16::from_le_bytes([c[0], c[1]]))),
        DType::BF16 => Tensor::from_bf16(shape.clone(), each(bytes, 2, |c| half::bf16::from_le_bytes([c[0], c[1]]))),
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz => {
            let table = small_float_table(dtype);
            floats(each(bytes, 1, |c| table[usize::from(c[0])]))
        }
        DType::F4E2M1 => {
            let table = small_float_table(dtype);
            floats(unpack(bytes, 4, count).into_iter().map(|b| table[usize::from(b)]).collect())
        }
        DType::I64 | DType::U64 => ints(each(bytes, 8, |c| i64::from_le_bytes(le(c)))),
        DType::I32 => ints(each(bytes, 4, |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)),
        DType::U32 => ints(each(bytes, 4, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)),
        DType::I16 => ints(each(bytes, 2, |c| i16::from_le_bytes([c[0], c[1]]) as i64)),
        DType::U16 => ints(each(bytes, 2, |c| u16::from_le_bytes([c[0], c[1]]) as i64)),
        DType::I8 => ints(each(bytes, 1, |c| c[0] as i8 as i64)),
        DType::U8 => ints(each(bytes, 1, |c| c[0] as i64)),
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            ints(unpack(bytes, dtype.bits(), count).into_iter().map(|b| dtype.wrap_int(i64::from(b))).collect())
        }
        // Any nonzero byte is true, as `Tensor`'s wrapping to bool would make it.
        DType::Bool => ints(each(bytes, 1, |c| (c[0] != 0) as i64)),
    })
}

/// The values of the 256 (or 16) bit patterns of a small float dtype.
fn small_float_table(dtype: DType) -> Vec<f64> {
    (0..1u64 << dtype.bits()).map(|b| dtype.float_from_bits(b).unwrap_or(0.0)).collect()
}

/// The first `count` `bits`-wide fields of `bytes`, lowest bits first (ONNX's packing of 4- and
/// 2-bit types).
fn unpack(bytes: &[u8], bits: usize, count: usize) -> Vec<u8> {
    let per_byte = 8 / bits;
    let mask = (1u16 << bits) as u8 - 1;
    (0..count).map(|i| (bytes[i / per_byte] >> ((i % per_byte) * bits)) & mask).collect()
}

/// Packs `fields` (each below `1 << bits`) `8 / bits` to a byte, lowest bits first.
fn pack(fields: impl Iterator<Item = u8>, bits: usize) -> Vec<u8> {
    let per_byte = 8 / bits;
    let mut out = Vec::new();
    for (i, f) in fields.enumerate() {
        if i % per_byte == 0 {
            out.push(0);
        }
        if let Some(last) = out.last_mut() {
            *last |= f << ((i % per_byte) * bits);
        }
    }
    out
}

/// `f` over each `size`-byte element of `bytes`; generic so every element type gets its own
/// inlined (for f32, vectorized) loop.
fn each<T>(bytes: &[u8], size: usize, f: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(size).map(f).collect()
}

/// The typed repeated fields (`float_data`, `int32_data`, ...), per the ONNX storage rules:
/// 16-bit and 8-bit floats, bools and small integers travel as bit patterns in `int32_data`
/// (4- and 2-bit types packed into each entry's low byte), uint32 and uint64 in `uint64_data`.
fn from_typed_fields(t: &TensorProto, dtype: DType, shape: Vec<usize>, count: usize) -> Result<Tensor, PayloadError> {
    let check = |len: usize, field: &str, needed: usize| {
        if len == needed {
            Ok(())
        } else {
            Err(PayloadError::invalid(format!("{field} holds {len} elements, but shape {shape:?} needs {needed}")))
        }
    };
    let bits16 = |v: i32| v as u16;
    Ok(match dtype {
        DType::F32 => {
            check(t.float_data.len(), "float_data", count)?;
            Tensor::from_f32(shape, t.float_data.clone())
        }
        DType::F64 => {
            check(t.double_data.len(), "double_data", count)?;
            Tensor::from_f64(dtype, shape, t.double_data.clone())
        }
        DType::I64 => {
            check(t.int64_data.len(), "int64_data", count)?;
            Tensor::from_i64(dtype, shape, t.int64_data.clone())
        }
        DType::U32 | DType::U64 => {
            check(t.uint64_data.len(), "uint64_data", count)?;
            Tensor::from_i64(dtype, shape, t.uint64_data.iter().map(|&x| x as i64).collect())
        }
        DType::I32 | DType::I16 | DType::I8 | DType::U16 | DType::U8 | DType::Bool => {
            check(t.int32_data.len(), "int32_data", count)?;
            Tensor::from_i64(dtype, shape, t.int32_data.iter().map(|&x| x as i64).collect())
        }
        DType::I4 | DType::U4 | DType::I2 | DType::U2 | DType::F4E2M1 => {
            let needed = dtype.packed_bytes(count).unwrap_or(usize::MAX);
            check(t.int32_data.len(), "int32_data", needed)?;
            let bytes: Vec<u8> = t.int32_data.iter().map(|&x| x as u8).collect();
            return from_raw(dtype, shape, count, &bytes);
        }
        DType::F16 => {
            check(t.int32_data.len(), "int32_data", count)?;
            Tensor::from_f16(shape, t.int32_data.iter().map(|&x| half::f16::from_bits(bits16(x))).collect())
        }
        DType::BF16 => {
            check(t.int32_data.len(), "int32_data", count)?;
            Tensor::from_bf16(shape, t.int32_data.iter().map(|&x| half::bf16::from_bits(bits16(x))).collect())
        }
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz => {
            check(t.int32_data.len(), "int32_data", count)?;
            let bytes: Vec<u8> = t.int32_data.iter().map(|&x| x as u8).collect();
            return from_raw(dtype, shape, count, &bytes);
        }
    })
}

/// Encodes a tsr tensor as a TensorProto with `raw_data` (for tests and tools that write models);
/// 4- and 2-bit types are packed as ONNX packs them.
pub fn encode(name: &str, t: &Tensor) -> TensorProto {
    let mut raw = Vec::with_capacity(t.len() * t.dtype.size_bytes());
    let bits = t.dtype.bits();
    if bits < 8 {
        let mask = (1u16 << bits) as u8 - 1;
        let field = |i: usize| match t.dtype.float_to_bits(t.get_f64(i)) {
            Some(b) => b as u8 & mask,
            None => t.get_i64(i) as u8 & mask,
        };
        raw = pack((0..t.len()).map(field), bits);
    } else {
        for i in 0..t.len() {
            match t.dtype {
                d if d.is_float() => {
                    let b = d.float_to_bits(t.get_f64(i)).unwrap_or(0);
                    raw.extend_from_slice(&b.to_le_bytes()[..d.size_bytes()]);
                }
                d => raw.extend_from_slice(&t.get_i64(i).to_le_bytes()[..d.size_bytes()]),
            }
        }
    }
    TensorProto {
        dims: t.shape.iter().map(|&n| n as i64).collect(),
        data_type: Some(onnx_code_of(t.dtype)),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float8_decoding_matches_the_format_tables() {
        let e4m3 = small_float_table(DType::F8E4M3);
        let e5m2 = small_float_table(DType::F8E5M2);
        assert_eq!(e4m3[0x7e], 448.0);
        assert!(e4m3[0x7f].is_nan());
        assert_eq!(e4m3[0x01], 2f64.powi(-9));
        assert_eq!(e4m3[0x38], 1.0);
        assert_eq!(e5m2[0x3c], 1.0);
        assert_eq!(e5m2[0x7c], f64::INFINITY);
    }

    #[test]
    fn raw_payload_must_match_the_shape() {
        let err = from_raw(DType::F32, vec![2, 2], 4, &[0u8; 12]).unwrap_err();
        assert_eq!(err.message, "holds 12 bytes, but shape [2, 2] of f32 needs 16");
        let t = from_raw(DType::I32, vec![2], 2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(t.to_i64_vec(), [1, -1]);
    }

    #[test]
    fn raw_payloads_decode_to_what_the_rounding_constructors_make() {
        // The direct construction in `from_raw` must agree with `Tensor::from_f64`/`from_i64` on
        // extreme values: the largest f32, a subnormal, negative zero, and wrapped integers.
        let f: Vec<f32> = vec![f32::MAX, f32::from_bits(1), -0.0, -1.5];
        let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = from_raw(DType::F32, vec![4], 4, &bytes).unwrap();
        let wide: Vec<f64> = f.iter().map(|&x| x as f64).collect();
        assert_eq!(t, Tensor::from_f64(DType::F32, vec![4], wide.clone()));
        assert!(t.get_f64(2).is_sign_negative());
        let h = from_raw(DType::F16, vec![2], 2, &[0x01, 0x00, 0xff, 0x7b]).unwrap();
        assert_eq!(h.to_f64_vec(), [2f64.powi(-24), 65504.0]);
        let i = from_raw(DType::I8, vec![2], 2, &[0x80, 0x7f]).unwrap();
        assert_eq!(i, Tensor::from_i64(DType::I8, vec![2], vec![-128, 127]));
        let b = from_raw(DType::Bool, vec![3], 3, &[0, 7, 1]).unwrap();
        assert_eq!(b, Tensor::from_i64(DType::Bool, vec![3], vec![0, 1, 1]));
    }

    #[test]
    fn a_raw_element_is_the_decoded_element_read_alone() {
        let values = [1.5f64, -0.0, 3.25, f64::from(f32::MAX), -7.0, 0.125];
        let mut external = ExternalData::new(None);
        for dtype in [DType::F32, DType::BF16, DType::F64] {
            let t = encode("w", &Tensor::from_f64(dtype, vec![2, 3], values.to_vec()));
            let decoded = decode(&t, &mut external).unwrap();
            for i in 0..6 {
                let bits = raw_element(&t, i, &mut external);
                let want = dtype.float_to_bits(decoded.get_f64(i));
                assert_eq!(bits, want, "{dtype} element {i}");
            }
            assert_eq!(raw_element(&t, 6, &mut external), None, "{dtype}: past the end");
        }
        // External data: the element at its place in the file, after the tensor's offset.
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = [9.0f32, 8.0, 7.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.path().join("w.bin"), [vec![0xAA; 4], payload].concat()).unwrap();
        let entry = |k: &str, v: &str| super::super::proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let mut file = TensorProto {
            dims: vec![3],
            data_type: Some(onnx_code_of(DType::F32)),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", "w.bin"), entry("offset", "4"), entry("length", "12")],
            ..TensorProto::default()
        };
        let mut external = ExternalData::new(Some(dir.path()));
        assert_eq!(raw_element(&file, 2, &mut external), Some(u64::from(7.0f32.to_bits())));
        file.external_data[2] = entry("length", "8");
        assert_eq!(raw_element(&file, 0, &mut external), None, "a payload shorter than its shape");
        // Inline typed fields and packed 4-bit elements are not read this way.
        let typed = TensorProto {
            dims: vec![2],
            data_type: Some(onnx_code_of(DType::F32)),
            float_data: vec![1.0, 2.0],
            ..TensorProto::default()
        };
        assert_eq!(raw_element(&typed, 0, &mut external), None);
        let packed = encode("q", &Tensor::from_i64(DType::I4, vec![2], vec![1, -2]));
        assert_eq!(raw_element(&packed, 0, &mut external), None);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for dtype in DType::ALL {
            let values = if dtype.is_unsigned() { vec![1.0, 2.0, 0.0] } else { vec![1.0, -2.0, 0.5] };
            let t = Tensor::from_f64(dtype, vec![3], values);
            let back = decode(&encode("t", &t), &mut ExternalData::default()).unwrap();
            assert_eq!(back, t, "{dtype}");
        }
    }

    proptest::proptest! {
        /// Packed 4- and 2-bit payloads (and every other dtype) decode to the values encoded.
        #[test]
        fn packed_payloads_round_trip_through_bytes(values in proptest::collection::vec(proptest::num::i64::ANY, 0..9)) {
            for dtype in DType::ALL {
                let n = values.len();
                let t = if dtype.is_float() {
                    let xs = values.iter().map(|&v| (v % 1000) as f64 / 8.0).collect();
                    Tensor::from_f64(dtype, vec![n], xs)
                } else {
                    Tensor::from_i64(dtype, vec![n], values.clone())
                };
                let proto = encode("t", &t);
                proptest::prop_assert_eq!(proto.raw_data.as_ref().map(|b| b.len()), dtype.packed_bytes(n));
                let back = decode(&proto, &mut ExternalData::default());
                proptest::prop_assert!(back.as_ref().is_ok_and(|b| b.to_f64_vec().iter().zip(t.to_f64_vec()).all(|(x, y)| *x == y || (x.is_nan() && y.is_nan()))), "{} does not round trip: {:?}", dtype, back);
            }
        }
    }

    #[test]
    fn int4_packs_two_to_a_byte_low_nibble_first() {
        let t = Tensor::from_i64(DType::I4, vec![3], vec![-8, 7, -1]);
        let proto = encode("t", &t);
        assert_eq!(proto.raw_data.as_deref(), Some(&[0x78u8, 0x0f][..]));
        let u2 = from_raw(DType::U2, vec![5], 5, &[0b11_10_01_00, 0b01]).unwrap();
        assert_eq!(u2.to_i64_vec(), [0, 1, 2, 3, 1]);
    }
}
