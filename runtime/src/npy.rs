//! NumPy `.npy` files: reading format versions 1.0, 2.0 and 3.0 and writing 1.0, after the
//! format specification (numpy.lib.format).
//!
//! Supported element types are `f8`, `f4`, `f2`, `i8`, `i4`, `i1` and `b1` in either byte order;
//! Fortran-order arrays are transposed to row-major on reading. bf16 and the fp8 formats have
//! no NumPy dtype, so they are written as `f4` (float32, which holds every such value exactly)
//! and [`conform_to`] turns a float32 array back into a declared bf16/fp8 input. No other
//! conversion happens silently.

use crate::executor::Feed;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] tessera_ir::files::FileError),
    #[error("{}: not a regular file (a device, FIFO or directory has no declared size to check)", path.display())]
    NotAFile { path: PathBuf },
    #[error(transparent)]
    Budget(#[from] tessera_ir::budget::BudgetError),
    #[error("not a .npy file: bad magic (expected \\x93NUMPY)")]
    BadMagic,
    #[error("unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("malformed .npy header: {0}")]
    MalformedHeader(String),
    #[error("unsupported dtype '{0}' (supported: f8, f4, f2, i8, i4, i2, i1, u8, u4, u2, u1, b1)")]
    UnsupportedDtype(String),
    #[error("truncated {what}: expected {expected} bytes, got {got}")]
    Truncated { what: &'static str, expected: usize, got: usize },
    #[error("{0} unexpected bytes after the array data")]
    TrailingBytes(usize),
    #[error("the array is {given} but the input is declared {declared} (only f32 arrays convert, to bf16 and the 8- and 4-bit floats, and i1/u1 ones to the 4- and 2-bit integers in range)")]
    DtypeMismatch { declared: DType, given: DType },
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    read_npy_bytes(&read_checked(path)?)
}

/// Reads a `.npy` file for a program input declared `declared`. When the file's data is already
/// the artifact storage of `declared` (a little-endian, row-major `f4` array for an f32 input,
/// `i8` for an i64 one), the bytes are kept as they are ([`Feed::Stored`]): an executor copies
/// them into its arena with no detour through f64. Anything else is read with [`read_npy`] and
/// [`conform_to`].
pub fn read_npy_feed(path: &Path, declared: DType) -> Result<Feed, NpyError> {
    let bytes = read_checked(path)?;
    let array = parse(&bytes)?;
    let stored = matches!((array.dtype, declared), (DType::F32, DType::F32) | (DType::I64, DType::I64));
    if stored && array.order == ByteOrder::Little && !array.fortran_order {
        let (dtype, shape, start) = (array.dtype, array.shape, array.data_start);
        return Ok(Feed::Stored { dtype, shape, data: bytes, start });
    }
    conform_to(read_npy_bytes(&bytes)?, declared).map(Feed::Tensor)
}

/// A parsed `.npy` file: its element type and layout, and where its data starts.
struct Array {
    dtype: DType,
    order: ByteOrder,
    fortran_order: bool,
    shape: Vec<usize>,
    data_start: usize,
}

/// Parses the bytes of a `.npy` file.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let array = parse(bytes)?;
    let t = decode(array.dtype, array.order, &bytes[array.data_start..], array.shape);
    Ok(if array.fortran_order { fortran_to_c(&t) } else { t })
}

/// Parses the header at the start of `bytes` (the data may be absent) and returns the array's
/// description with the number of data bytes the header announces.
fn parse_head(bytes: &[u8]) -> Result<(Array, usize), NpyError> {
    if !bytes.starts_with(MAGIC) {
        // A prefix of the magic is a cut-off file rather than a different format.
        return Err(if MAGIC.starts_with(bytes) && !bytes.is_empty() {
            NpyError::Truncated { what: "header", expected: MAGIC.len() + 4, got: bytes.len() }
        } else {
            NpyError::BadMagic
        });
    }
    let version = bytes.get(6..8).ok_or(NpyError::Truncated { what: "header", expected: 10, got: bytes.len() })?;
    let (major, minor) = (version[0], version[1]);
    // Version 1.0 has a 2-byte header length; 2.0 and 3.0 (UTF-8 header) a 4-byte one.
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let start = 8 + len_bytes;
    let len_field =
        bytes.get(8..start).ok_or(NpyError::Truncated { what: "header", expected: start, got: bytes.len() })?;
    let header_len = len_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | b as usize);
    let end = start + header_len;
    let header_bytes =
        bytes.get(start..end).ok_or(NpyError::Truncated { what: "header", expected: end, got: bytes.len() })?;
    let header: String = if major == 3 {
        std::str::from_utf8(header_bytes).map_err(|e| NpyError::MalformedHeader(format!("not UTF-8: {e}")))?.to_string()
    } else {
        // Versions 1.0 and 2.0 are latin-1, whose bytes are the first 256 code points.
        header_bytes.iter().map(|&b| b as char).collect()
    };
    let header = parse_header(&header)?;
    let (dtype, order) = parse_descr(&header.descr)?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| NpyError::MalformedHeader(format!("shape {:?} has too many elements", header.shape)))?;
    let item = dtype.size_bytes();
    let expected = count
        .checked_mul(item)
        .ok_or_else(|| NpyError::MalformedHeader(format!("shape {:?} has too many bytes", header.shape)))?;
    let array = Array { dtype, order, fortran_order: header.fortran_order, shape: header.shape, data_start: end };
    Ok((array, expected))
}

/// Checks the header of a `.npy` file and that exactly the data it announces follows.
fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
    let (array, expected) = parse_head(bytes)?;
    check_data_length(bytes.len().saturating_sub(array.data_start), expected)?;
    Ok(array)
}

fn check_data_length(got: usize, expected: usize) -> Result<(), NpyError> {
    if got < expected {
        return Err(NpyError::Truncated { what: "data", expected, got });
    }
    if got > expected {
        return Err(NpyError::TrailingBytes(got - expected));
    }
    Ok(())
}

/// The most header bytes read before the declared size is checked (NumPy writes 64-byte aligned
/// headers of a few hundred bytes; a megabyte is already absurd).
const MAX_HEAD_BYTES: u64 = 1 << 20;

/// The bytes of the `.npy` file at `path`, read only after its header was checked against the
/// file: a regular file (not `/dev/zero`, a FIFO or a directory) whose length is exactly what
/// its header announces, and whose array fits the memory budget ([`tessera_ir::budget`]).
pub fn read_checked(path: &Path) -> Result<Vec<u8>, NpyError> {
    let io_error = |source| NpyError::Io { path: path.to_path_buf(), source };
    let mut file = fs::File::open(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(NpyError::NotAFile { path: path.to_path_buf() });
    }
    let mut head = Vec::new();
    (&mut file).take(MAX_HEAD_BYTES.min(meta.len())).read_to_end(&mut head).map_err(io_error)?;
    let (array, expected) = parse_head(&head)?;
    let data_len = usize::try_from(meta.len()).unwrap_or(usize::MAX).saturating_sub(array.data_start);
    check_data_length(data_len, expected)?;
    let elements: u128 = array.shape.iter().map(|&d| d as u128).product();
    tessera_ir::budget::check(
        &format!("the array in {}", path.display()),
        elements,
        tessera_ir::budget::IR_ELEMENT_BYTES,
    )?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(head.len() + data_len).map_err(|_| {
        io_error(std::io::Error::new(std::io::ErrorKind::OutOfMemory, "cannot allocate the file's bytes"))
    })?;
    bytes.extend_from_slice(&head);
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// Writes `t` as a `.npy` file atomically (through [`tessera_ir::files::write_atomic`]), so a
/// failure leaves no partial file and a symlink or special file at `path` is refused.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    Ok(tessera_ir::files::write_atomic(path, &write_npy_bytes(t))?)
}

/// The bytes of `t` as a version 1.0 `.npy` file (2.0 when the header would not fit, as
/// NumPy does), little-endian, C order. bf16 and fp8 tensors are written as `f4`. `t` must be
/// well formed (one stored element per index of its shape), as every tensor tessera makes is.
pub fn write_npy_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = npy_header(t.dtype, &t.shape, t.len() * 8);
    write_npy_data(t, &mut out);
    out
}

/// [`write_npy_bytes`] for a [`Feed`]: stored f32, i64 and boolean data already are the
/// `.npy` encoding of their dtype (`<f4`, `<i8`, `|b1`), so they are copied as they are.
pub fn write_npy_feed_bytes(feed: &Feed) -> Result<Vec<u8>, String> {
    match feed {
        Feed::Stored { dtype: dtype @ (DType::F32 | DType::I64 | DType::Bool), shape, data, start } => {
            let data = data.get(*start..).ok_or("array data out of range")?;
            let mut out = npy_header(*dtype, shape, data.len());
            out.extend_from_slice(data);
            Ok(out)
        }
        Feed::Tensor(t) => Ok(write_npy_bytes(t)),
        stored => Ok(write_npy_bytes(&stored.to_tensor()?)),
    }
}

/// The magic, version, and padded header of a `.npy` file, with room for `data_bytes` more.
fn npy_header(dtype: DType, shape: &[usize], data_bytes: usize) -> Vec<u8> {
    let descr = npy_descr(dtype);
    let shape = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // The header ends in a newline and is padded with spaces so the data starts on a multiple
    // of 64 bytes; past 65535 bytes its length needs version 2.0's 4-byte field.
    let padded_len = |prefix: usize| (prefix + header.len() + 1).div_ceil(64) * 64 - prefix;
    let prefix = if padded_len(10) <= u16::MAX as usize { 10 } else { 12 };
    let header_len = padded_len(prefix);
    header.push_str(&" ".repeat(header_len - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(prefix + header_len + data_bytes);
    out.extend_from_slice(MAGIC);
    if prefix == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out
}

/// The `.npy` type of a dtype: NumPy's own where it has one; bf16 and the 8- and 4-bit floats
/// are written as `f4`, the 4- and 2-bit integers one per byte as `i1`/`u1`.
fn npy_descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "<f8",
        DType::F32
        | DType::BF16
        | DType::F8E4M3
        | DType::F8E5M2
        | DType::F8E4M3Fnuz
        | DType::F8E5M2Fnuz
        | DType::F4E2M1 => "<f4",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 | DType::I4 | DType::I2 => "|i1",
        DType::U64 => "<u8",
        DType::U32 => "<u4",
        DType::U16 => "<u2",
        DType::U8 | DType::U4 | DType::U2 => "|u1",
        DType::Bool => "|b1",
    }
}

/// Appends `t`'s elements in the encoding [`npy_header`] announces for its dtype.
fn write_npy_data(t: &Tensor, out: &mut Vec<u8>) {
    for i in 0..t.len() {
        match npy_descr(t.dtype) {
            "<f8" => out.extend_from_slice(&t.get_f64(i).to_le_bytes()),
            "<f4" => out.extend_from_slice(&(t.get_f64(i) as f32).to_le_bytes()),
            "<f2" => out.extend_from_slice(&half::f16::from_f64(t.get_f64(i)).to_bits().to_le_bytes()),
            "|b1" => out.push((t.get_i64(i) != 0) as u8),
            // Integers: the low bytes of the two's complement value, as wide as the descr says.
            descr => {
                let width = descr[2..].parse::<usize>().unwrap_or(8);
                out.extend_from_slice(&t.get_i64(i).to_le_bytes()[..width]);
            }
        }
    }
}

/// Makes a loaded array fit an input declared `declared`: the same dtype passes, and a float32
/// array becomes bf16 or fp8 (rounding to nearest even), the documented stand-in for dtypes
/// NumPy lacks. Anything else is an error rather than a silent conversion.
pub fn conform_to(t: Tensor, declared: DType) -> Result<Tensor, NpyError> {
    match (t.dtype, declared) {
        (given, declared) if given == declared => Ok(t),
        (DType::F32, d) if d.is_float() && npy_descr(d) == "<f4" => Ok(t.cast(declared)),
        // The 4- and 2-bit integers travel one per byte; values out of their range are refused.
        (DType::I8, DType::I4 | DType::I2) | (DType::U8, DType::U4 | DType::U2) => {
            let (lo, hi) = declared.int_range().unwrap_or((0, 0));
            if t.to_i64_vec().iter().all(|v| (lo..=hi).contains(v)) {
                Ok(t.cast(declared))
            } else {
                Err(NpyError::DtypeMismatch { declared, given: t.dtype })
            }
        }
        (given, declared) => Err(NpyError::DtypeMismatch { declared, given }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteOrder {
    Little,
    Big,
}

#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// `descr` is a byte order (`<`, `>`, `|` or `=`) and a type code with its size.
fn parse_descr(descr: &str) -> Result<(DType, ByteOrder), NpyError> {
    let native = if cfg!(target_endian = "big") { ByteOrder::Big } else { ByteOrder::Little };
    let (order, code) = match descr.chars().next() {
        Some('<') => (ByteOrder::Little, &descr[1..]),
        Some('>') => (ByteOrder::Big, &descr[1..]),
        Some('|') | Some('=') => (native, &descr[1..]),
        _ => (native, descr),
    };
    let dtype = match code {
        "f8" => DType::F64,
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u8" => DType::U64,
        "u4" => DType::U32,
        "u2" => DType::U16,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => return Err(NpyError::UnsupportedDtype(descr.to_string())),
    };
    Ok((dtype, order))
}

/// Decodes `data` (exactly one item per element) into a tensor.
fn decode(dtype: DType, order: ByteOrder, data: &[u8], shape: Vec<usize>) -> Tensor {
    fn chunks<const N: usize>(data: &[u8], order: ByteOrder) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N).map(move |c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            if order == ByteOrder::Big {
                b.reverse();
            }
            b
        })
    }
    match dtype {
        DType::F64 => Tensor::from_f64(dtype, shape, chunks::<8>(data, order).map(f64::from_le_bytes).collect()),
        DType::F32 => {
            Tensor::from_f64(dtype, shape, chunks::<4>(data, order).map(|b| f32::from_le_bytes(b) as f64).collect())
        }
        DType::F16 => {
            let values = chunks::<2>(data, order).map(|b| half::f16::from_bits(u16::from_le_bytes(b)).to_f64());
            Tensor::from_f64(dtype, shape, values.collect())
        }
        DType::I64 => Tensor::from_i64(dtype, shape, chunks::<8>(data, order).map(i64::from_le_bytes).collect()),
        DType::I32 => {
            Tensor::from_i64(dtype, shape, chunks::<4>(data, order).map(|b| i32::from_le_bytes(b) as i64).collect())
        }
        DType::I16 => {
            Tensor::from_i64(dtype, shape, chunks::<2>(data, order).map(|b| i16::from_le_bytes(b) as i64).collect())
        }
        DType::U64 => Tensor::from_i64(dtype, shape, chunks::<8>(data, order).map(i64::from_le_bytes).collect()),
        DType::U32 => {
            Tensor::from_i64(dtype, shape, chunks::<4>(data, order).map(|b| u32::from_le_bytes(b) as i64).collect())
        }
        DType::U16 => {
            Tensor::from_i64(dtype, shape, chunks::<2>(data, order).map(|b| u16::from_le_bytes(b) as i64).collect())
        }
        DType::I8 => Tensor::from_i64(dtype, shape, data.iter().map(|&b| b as i8 as i64).collect()),
        DType::U8 => Tensor::from_i64(dtype, shape, data.iter().map(|&b| b as i64).collect()),
        DType::Bool => Tensor::from_i64(dtype, shape, data.iter().map(|&b| (b != 0) as i64).collect()),
        // parse_descr never yields these (NumPy has no such types).
        DType::BF16
        | DType::F8E4M3
        | DType::F8E5M2
        | DType::F8E4M3Fnuz
        | DType::F8E5M2Fnuz
        | DType::F4E2M1
        | DType::I4
        | DType::I2
        | DType::U4
        | DType::U2 => Tensor::zeros(dtype, shape),
    }
}

/// Reorders a tensor whose data was read in Fortran (column-major) order into row-major.
fn fortran_to_c(t: &Tensor) -> Tensor {
    // Fortran order is the row-major order of the reversed shape, so element `idx` sits at
    // `Σ idx[d] * fstride[d]` with `fstride[0] = 1`.
    let mut fstrides = Vec::with_capacity(t.shape.len());
    let mut s = 1;
    for &n in &t.shape {
        fstrides.push(s);
        s *= n;
    }
    let shape = t.shape.clone();
    t.gather_elements(shape.clone(), |mut i| {
        let mut at = 0;
        for d in (0..shape.len()).rev() {
            at += (i % shape[d]) * fstrides[d];
            i /= shape[d];
        }
        at
    })
}

/// Parses the header, a Python dict literal such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = DictParser { chars: text.chars().collect(), pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect('{')?;
    loop {
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        let key_at = p.pos;
        let key = p.string()?;
        if !matches!(key.as_str(), "descr" | "fortran_order" | "shape") {
            p.pos = key_at;
            return Err(p.error(&format!("unexpected key '{key}'")));
        }
        p.expect(':')?;
        let value = p.value()?;
        let duplicate = match (key.as_str(), value) {
            ("descr", PyValue::Str(s)) => descr.replace(s).is_some(),
            ("fortran_order", PyValue::Bool(b)) => fortran_order.replace(b).is_some(),
            ("shape", PyValue::Tuple(t)) => shape.replace(t).is_some(),
            ("descr", PyValue::List) => {
                return Err(NpyError::UnsupportedDtype("structured dtype (a list of fields)".into()))
            }
            _ => return Err(p.error(&format!("'{key}' has the wrong kind of value"))),
        };
        if duplicate {
            return Err(p.error(&format!("key '{key}' appears twice")));
        }
        p.skip_ws();
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(p.error("text after the closing brace"));
    }
    let missing = |k: &str| NpyError::MalformedHeader(format!("missing key '{k}'"));
    Ok(Header {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    List,
}

/// A recursive-descent parser for the small subset of Python literals a `.npy` header uses.
struct DictParser {
    chars: Vec<char>,
    pos: usize,
}

impl DictParser {
    fn error(&self, message: &str) -> NpyError {
        NpyError::MalformedHeader(format!("{message} at column {}", self.pos + 1))
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.chars.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{c}'")))
        }
    }

    fn string(&mut self) -> Result<String, NpyError> {
        self.skip_ws();
        let quote = match self.chars.get(self.pos) {
            Some(&q) if q == '\'' || q == '"' => q,
            _ => return Err(self.error("expected a string")),
        };
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(&c) if c == quote => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    let escaped = *self.chars.get(self.pos + 1).ok_or_else(|| self.error("unterminated string"))?;
                    s.push(escaped);
                    self.pos += 2;
                }
                Some(&c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn value(&mut self) -> Result<PyValue, NpyError> {
        self.skip_ws();
        match self.chars.get(self.pos) {
            Some('\'') | Some('"') => Ok(PyValue::Str(self.string()?)),
            Some('(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(')') {
                        return Ok(PyValue::Tuple(dims));
                    }
                    let at = self.pos;
                    let word = self.word();
                    // Python 2 wrote long integers with an `L` suffix, e.g. `(3L,)`.
                    let digits = word.strip_suffix('L').unwrap_or(&word);
                    let n = digits.parse::<usize>().map_err(|_| {
                        self.pos = at;
                        self.error("expected a non-negative integer in the shape")
                    })?;
                    dims.push(n);
                    if !self.eat(',') {
                        self.expect(')')?;
                        return Ok(PyValue::Tuple(dims));
                    }
                }
            }
            Some('[') => Ok(PyValue::List),
            _ => match self.word().as_str() {
                "True" => Ok(PyValue::Bool(true)),
                "False" => Ok(PyValue::Bool(false)),
                _ => Err(self.error("expected a string, True, False or a tuple")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::encode;

    /// Stored bytes (what an executor's arena holds) are written to the same file as the
    /// tensor they encode, and a file of the input's storage reads back as those bytes.
    #[test]
    fn stored_feeds_round_trip_through_npy_bytes() {
        let cases = [
            Tensor::from_f64(DType::F32, vec![2, 3], vec![0.5, -1.25, 3.0, 1e-3, -0.0, 7.5]),
            Tensor::from_i64(DType::I64, vec![4], vec![1, -2, 3, i64::MAX]),
            Tensor::from_i64(DType::Bool, vec![3], vec![1, 0, 1]),
        ];
        let dir = std::env::temp_dir().join(format!("tessera-npy-feed-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        for t in cases {
            let stored = Feed::Stored { dtype: t.dtype, shape: t.shape.clone(), data: encode(&t), start: 0 };
            let bytes = write_npy_feed_bytes(&stored).expect("write");
            assert_eq!(bytes, write_npy_bytes(&t), "{}", t.dtype);
            let path = dir.join(format!("{}.npy", t.dtype));
            fs::write(&path, &bytes).expect("write file");
            let read = read_npy_feed(&path, t.dtype).expect("read");
            let kept = matches!(read, Feed::Stored { .. });
            assert_eq!(kept, t.dtype != DType::Bool, "{}: stored {kept}", t.dtype);
            assert_eq!(read.to_tensor().expect("tensor"), t, "{}", t.dtype);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
