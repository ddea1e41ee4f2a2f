//! Dense tensor values: constant literals in the IR and the values the reference semantics
//! compute on. `f32` tensors hold their elements as `f32`, and `f16`/`bf16` tensors as their
//! 16-bit patterns (a model's weights take their own size, not two or four times it); floats of
//! every other width are held as `f64` already rounded to their dtype; integers and booleans as
//! `i64` already wrapped to theirs. The storage follows from the dtype alone (see [`Buffer`]),
//! so two equal tensors have equal storage. Readers widen to `f64` at use ([`Tensor::floats`],
//! [`Tensor::get_f64`]).

use crate::dtype::DType;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// A tensor's elements. Which variant a tensor uses is fixed by its dtype ([`Buffer::kind_of`]):
/// `F32` for [`DType::F32`], `F16` and `BF16` for their dtypes, `Float` for every other float
/// dtype, `Int` for integers and booleans.
/// Constructors ([`Tensor::from_f64`], [`Tensor::from_i64`], [`Tensor::zeros`]) keep it so, and the
/// verifier checks it. Readers that compute in `f64` (the reference semantics) read through
/// [`Tensor::floats`], which borrows `Float` storage and widens `F32` storage exactly.
///
/// `F32` elements are shared (`Arc`): a model's weights are f32 constants, and passes copy
/// graphs (specialization to `--dim` sizes, rollback copies); sharing makes those copies cost
/// nothing per weight. Writers that change elements in place go through `Arc::make_mut`.
/// `F16` and `BF16` are shared the same way (a half-precision model's weights, imported in
/// their 2-byte width, not widened).
#[derive(Debug, Clone, PartialEq)]
pub enum Buffer {
    Float(Vec<f64>),
    F32(Arc<Vec<f32>>),
    F16(Arc<Vec<half::f16>>),
    BF16(Arc<Vec<half::bf16>>),
    Int(Vec<i64>),
}

/// Which [`Buffer`] variant a dtype's elements live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    Float,
    F32,
    F16,
    BF16,
    Int,
}

impl Buffer {
    /// The variant `dtype`'s elements are stored in.
    pub fn kind_of(dtype: DType) -> BufferKind {
        match dtype {
            DType::F32 => BufferKind::F32,
            DType::F16 => BufferKind::F16,
            DType::BF16 => BufferKind::BF16,
            d if d.is_float() => BufferKind::Float,
            _ => BufferKind::Int,
        }
    }

    /// The variant this buffer is.
    pub fn kind(&self) -> BufferKind {
        match self {
            Buffer::Float(_) => BufferKind::Float,
            Buffer::F32(_) => BufferKind::F32,
            Buffer::F16(_) => BufferKind::F16,
            Buffer::BF16(_) => BufferKind::BF16,
            Buffer::Int(_) => BufferKind::Int,
        }
    }
}

/// `x` rounded to f16 as [`DType::round_float`] rounds it (correctly, from any f64; the rounded
/// value is exact in the format, so half's own conversion of it only copies the bits).
fn to_f16(x: f64) -> half::f16 {
    half::f16::from_f64(DType::F16.round_float(x))
}

/// `x` rounded to bf16, as [`to_f16`] rounds to f16.
fn to_bf16(x: f64) -> half::bf16 {
    half::bf16::from_f64(DType::BF16.round_float(x))
}

/// The JSON form predates `F32` and half storage and is kept: `{"float": [...]}` for every float
/// dtype (f32, f16 and bf16 values widened, exactly), `{"int": [...]}` otherwise. Reading it
/// back gives `Float` storage; [`Tensor`]'s deserializer narrows it to the dtype's storage.
impl Serialize for Buffer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Buffer::Float(v) => serializer.serialize_newtype_variant("Buffer", 0, "float", &json_floats::Floats(v)),
            Buffer::F32(v) => {
                serializer.serialize_newtype_variant("Buffer", 0, "float", &json_floats::Floats(v.as_slice()))
            }
            Buffer::F16(v) => {
                serializer.serialize_newtype_variant("Buffer", 0, "float", &json_floats::Floats(v.as_slice()))
            }
            Buffer::BF16(v) => {
                serializer.serialize_newtype_variant("Buffer", 0, "float", &json_floats::Floats(v.as_slice()))
            }
            Buffer::Int(v) => serializer.serialize_newtype_variant("Buffer", 1, "int", v),
        }
    }
}

/// The serialized form of [`Buffer`]: what the derive wrote before `F32` storage existed.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum BufferRepr {
    Float(#[serde(deserialize_with = "json_floats::deserialize")] Vec<f64>),
    Int(Vec<i64>),
}

impl<'de> Deserialize<'de> for Buffer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Buffer, D::Error> {
        Ok(match BufferRepr::deserialize(deserializer)? {
            BufferRepr::Float(v) => Buffer::Float(v),
            BufferRepr::Int(v) => Buffer::Int(v),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "TensorRepr")]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Buffer,
}

/// A [`Tensor`] as read, before its storage is brought to the kind its dtype fixes.
#[derive(Deserialize)]
struct TensorRepr {
    dtype: DType,
    shape: Vec<usize>,
    data: Buffer,
}

impl From<TensorRepr> for Tensor {
    fn from(t: TensorRepr) -> Tensor {
        let data = match t.data {
            // Values from JSON are rounded to f32 as `from_f64` would round them.
            Buffer::Float(v) if t.dtype == DType::F32 => {
                Buffer::F32(Arc::new(v.into_iter().map(|x| x as f32).collect()))
            }
            Buffer::Float(v) if t.dtype == DType::F16 => Buffer::F16(Arc::new(v.into_iter().map(to_f16).collect())),
            Buffer::Float(v) if t.dtype == DType::BF16 => Buffer::BF16(Arc::new(v.into_iter().map(to_bf16).collect())),
            data => data,
        };
        Tensor { dtype: t.dtype, shape: t.shape, data }
    }
}

impl Tensor {
    /// A float tensor; values are rounded to `dtype`. For an integer `dtype` they are converted
    /// as [`DType::int_from_f64`] says (truncated, then wrapped).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        if dtype == DType::F32 {
            let data = values.into_iter().map(|x| x as f32).collect();
            Tensor { dtype, shape, data: Buffer::F32(Arc::new(data)) }
        } else if dtype == DType::F16 {
            Tensor { dtype, shape, data: Buffer::F16(Arc::new(values.into_iter().map(to_f16).collect())) }
        } else if dtype == DType::BF16 {
            Tensor { dtype, shape, data: Buffer::BF16(Arc::new(values.into_iter().map(to_bf16).collect())) }
        } else if dtype.is_float() {
            let data = values.into_iter().map(|x| dtype.round_float(x)).collect();
            Tensor { dtype, shape, data: Buffer::Float(data) }
        } else {
            let data = values.into_iter().map(|x| dtype.int_from_f64(x)).collect();
            Tensor { dtype, shape, data: Buffer::Int(data) }
        }
    }

    /// An integer or boolean tensor; values are wrapped to `dtype`. For a float `dtype` they
    /// are converted and rounded.
    pub fn from_i64(dtype: DType, shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        if dtype.is_float() {
            Tensor::from_f64(dtype, shape, values.into_iter().map(|x| x as f64).collect())
        } else {
            let data = values.into_iter().map(|x| dtype.wrap_int(x)).collect();
            Tensor { dtype, shape, data: Buffer::Int(data) }
        }
    }

    pub fn scalar(dtype: DType, value: f64) -> Tensor {
        Tensor::from_f64(dtype, vec![], vec![value])
    }

    /// An `f32` tensor from its elements, stored as they are.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Tensor { dtype: DType::F32, shape, data: Buffer::F32(Arc::new(values)) }
    }

    /// An `f16` tensor from its elements, stored as they are (2 bytes each).
    pub fn from_f16(shape: Vec<usize>, values: Vec<half::f16>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Tensor { dtype: DType::F16, shape, data: Buffer::F16(Arc::new(values)) }
    }

    /// A `bf16` tensor from its elements, stored as they are (2 bytes each).
    pub fn from_bf16(shape: Vec<usize>, values: Vec<half::bf16>) -> Tensor {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        Tensor { dtype: DType::BF16, shape, data: Buffer::BF16(Arc::new(values)) }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        if dtype == DType::F32 {
            Tensor { dtype, shape, data: Buffer::F32(Arc::new(vec![0.0; n])) }
        } else if dtype == DType::F16 {
            Tensor { dtype, shape, data: Buffer::F16(Arc::new(vec![half::f16::ZERO; n])) }
        } else if dtype == DType::BF16 {
            Tensor { dtype, shape, data: Buffer::BF16(Arc::new(vec![half::bf16::ZERO; n])) }
        } else if dtype.is_float() {
            Tensor { dtype, shape, data: Buffer::Float(vec![0.0; n]) }
        } else {
            Tensor { dtype, shape, data: Buffer::Int(vec![0; n]) }
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Buffer::Float(v) => v.len(),
            Buffer::F32(v) => v.len(),
            Buffer::F16(v) => v.len(),
            Buffer::BF16(v) => v.len(),
            Buffer::Int(v) => v.len(),
        }
    }

    /// Whether the elements are floats (of any width), as the dtype says they should be.
    pub fn has_float_storage(&self) -> bool {
        !matches!(self.data, Buffer::Int(_))
    }

    /// The float elements as `f64`: borrowed from `Float` storage, widened (exactly) from `F32`,
    /// `F16` and `BF16` storage; `None` for integer storage.
    pub fn floats(&self) -> Option<Cow<'_, [f64]>> {
        match &self.data {
            Buffer::Float(v) => Some(Cow::Borrowed(v)),
            Buffer::F32(v) => Some(Cow::Owned(v.iter().map(|&x| f64::from(x)).collect())),
            Buffer::F16(v) => Some(Cow::Owned(v.iter().map(|&x| f64::from(x)).collect())),
            Buffer::BF16(v) => Some(Cow::Owned(v.iter().map(|&x| f64::from(x)).collect())),
            Buffer::Int(_) => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The static type of this value.
    pub fn tensor_type(&self) -> TensorType {
        let shape: Vec<u64> = self.shape.iter().map(|&n| n as u64).collect();
        TensorType::of_static(self.dtype, &shape)
    }

    /// Element `i` (row-major) as `f64`, whatever the storage.
    pub fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            Buffer::Float(v) => v[i],
            Buffer::F32(v) => f64::from(v[i]),
            Buffer::F16(v) => f64::from(v[i]),
            Buffer::BF16(v) => f64::from(v[i]),
            Buffer::Int(v) => self.dtype.int_to_f64(v[i]),
        }
    }

    /// Element `i` (row-major) as `i64`; floats are truncated toward zero.
    pub fn get_i64(&self, i: usize) -> i64 {
        match &self.data {
            Buffer::Float(v) => v[i] as i64,
            Buffer::F32(v) => v[i] as i64,
            Buffer::F16(v) => f64::from(v[i]) as i64,
            Buffer::BF16(v) => f64::from(v[i]) as i64,
            Buffer::Int(v) => v[i],
        }
    }

    /// All elements as `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Buffer::Float(v) => v.clone(),
            Buffer::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Buffer::F16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Buffer::BF16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Buffer::Int(v) => v.iter().map(|&x| self.dtype.int_to_f64(x)).collect(),
        }
    }

    /// All elements as `i64` (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Buffer::Float(v) => v.iter().map(|&x| x as i64).collect(),
            Buffer::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Buffer::F16(v) => v.iter().map(|&x| f64::from(x) as i64).collect(),
            Buffer::BF16(v) => v.iter().map(|&x| f64::from(x) as i64).collect(),
            Buffer::Int(v) => v.clone(),
        }
    }

    /// Converts to another dtype with the usual cast semantics: float→int truncates toward
    /// zero, anything→bool is `!= 0`, int→float rounds.
    pub fn cast(&self, dtype: DType) -> Tensor {
        match &self.data {
            // Shares the elements: specialization casts every weight to its compute dtype.
            Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) if dtype == self.dtype => self.clone(),
            Buffer::Float(_) | Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) if dtype == DType::Bool => {
                Tensor::from_i64(
                    dtype,
                    self.shape.clone(),
                    self.to_f64_vec().iter().map(|&x| (x != 0.0) as i64).collect(),
                )
            }
            Buffer::Float(_) | Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) => {
                Tensor::from_f64(dtype, self.shape.clone(), self.to_f64_vec())
            }
            Buffer::Int(_) if dtype.is_float() => Tensor::from_f64(dtype, self.shape.clone(), self.to_f64_vec()),
            Buffer::Int(v) => Tensor::from_i64(dtype, self.shape.clone(), v.clone()),
        }
    }

    /// Returns the same data under a new shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len());
        Tensor { dtype: self.dtype, shape, data: self.data.clone() }
    }

    /// Builds a tensor of `dtype` and `shape` whose element `i` is `self[f(i)]`, keeping the
    /// storage kind; the workhorse of every data-movement op.
    pub fn gather_elements(&self, shape: Vec<usize>, index_of: impl Fn(usize) -> usize) -> Tensor {
        let n: usize = shape.iter().product();
        let data = match &self.data {
            Buffer::Float(v) => Buffer::Float((0..n).map(|i| v[index_of(i)]).collect()),
            Buffer::F32(v) => Buffer::F32(Arc::new((0..n).map(|i| v[index_of(i)]).collect())),
            Buffer::F16(v) => Buffer::F16(Arc::new((0..n).map(|i| v[index_of(i)]).collect())),
            Buffer::BF16(v) => Buffer::BF16(Arc::new((0..n).map(|i| v[index_of(i)]).collect())),
            Buffer::Int(v) => Buffer::Int((0..n).map(|i| v[index_of(i)]).collect()),
        };
        Tensor { dtype: self.dtype, shape, data }
    }
}

/// JSON has no NaN or infinities; they travel as the strings `"NaN"`, `"inf"` and `"-inf"`
/// (NaN payloads are not kept, as in every JSON float encoding), finite values as numbers.
mod json_floats {
    use serde::de::{Deserializer, Error};
    use serde::ser::{SerializeSeq, Serializer};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Element {
        Number(f64),
        Text(String),
    }

    /// Floats of either width, written as f64 (an f32 widens exactly, so the text is the same
    /// as for the f64 the tensor held before it kept f32 storage).
    pub struct Floats<'a, T>(pub &'a [T]);

    impl<T: Copy + Into<f64>> serde::Serialize for Floats<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serialize(self.0.iter().map(|&x| x.into()), serializer)
        }
    }

    fn serialize<S: Serializer>(values: impl ExactSizeIterator<Item = f64>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for v in values {
            match v {
                v if v.is_nan() => seq.serialize_element("NaN")?,
                f64::INFINITY => seq.serialize_element("inf")?,
                f64::NEG_INFINITY => seq.serialize_element("-inf")?,
                v => seq.serialize_element(&v)?,
            }
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Element>::deserialize(deserializer)?
            .into_iter()
            .map(|e| match e {
                Element::Number(v) => Ok(v),
                Element::Text(t) => match t.as_str() {
                    "NaN" => Ok(f64::NAN),
                    "inf" => Ok(f64::INFINITY),
                    "-inf" => Ok(f64::NEG_INFINITY),
                    other => Err(D::Error::custom(format!(
                        "expected a number, \"NaN\", \"inf\" or \"-inf\", got \"{other}\""
                    ))),
                },
            })
            .collect()
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Multi-index of the row-major linear index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored bit patterns of a 2-byte float tensor (`None` for any other storage).
    fn half_bits(t: &Tensor) -> Option<Vec<u16>> {
        match &t.data {
            Buffer::F16(v) => Some(v.iter().map(|x| x.to_bits()).collect()),
            Buffer::BF16(v) => Some(v.iter().map(|x| x.to_bits()).collect()),
            _ => None,
        }
    }

    /// f16 and bf16 constants keep their 2-byte bit patterns: stored as they are, widened exactly
    /// at use, unchanged by the rounding constructor, and printed and parsed back (short list
    /// form, long hex form, JSON) to the same bits.
    #[test]
    fn half_precision_tensors_keep_their_exact_bits() {
        // f16: smallest subnormal, largest subnormal, largest finite, -0, 1/3 rounded, -inf, NaN.
        let f16_bits: Vec<u16> = vec![0x0001, 0x03ff, 0x7bff, 0x8000, 0x3555, 0xfc00, 0x7e00];
        // bf16: smallest subnormal, 1, largest finite, -0, 1/3 rounded, -inf, NaN.
        let bf16_bits: Vec<u16> = vec![0x0001, 0x3f80, 0x7f7f, 0x8000, 0x3eab, 0xff80, 0x7fc0];
        let f16 = Tensor::from_f16(vec![7], f16_bits.iter().map(|&b| half::f16::from_bits(b)).collect());
        let bf16 = Tensor::from_bf16(vec![7], bf16_bits.iter().map(|&b| half::bf16::from_bits(b)).collect());
        assert_eq!(half_bits(&f16).as_deref(), Some(&f16_bits[..]));
        assert_eq!(f16.data.kind(), Buffer::kind_of(DType::F16));
        assert_eq!(bf16.data.kind(), Buffer::kind_of(DType::BF16));

        // Widened exactly at use.
        assert_eq!(f16.get_f64(0), 2f64.powi(-24));
        assert_eq!(f16.get_f64(1), 1023.0 * 2f64.powi(-24));
        assert_eq!(f16.get_f64(2), 65504.0);
        assert!(f16.get_f64(3) == 0.0 && f16.get_f64(3).is_sign_negative());
        assert_eq!(f16.get_f64(4), 1365.0 / 4096.0);
        assert_eq!(f16.get_f64(5), f64::NEG_INFINITY);
        assert!(f16.get_f64(6).is_nan());
        assert_eq!(bf16.get_f64(0), 2f64.powi(-133));
        assert_eq!(bf16.get_f64(1), 1.0);
        assert_eq!(bf16.get_f64(2), (2.0 - 2f64.powi(-7)) * 2f64.powi(127));
        assert_eq!(bf16.get_f64(4), 171.0 / 512.0);

        for (t, bits) in [(&f16, &f16_bits), (&bf16, &bf16_bits)] {
            // Rounding the widened values to the dtype again gives the same bits.
            let rounded = Tensor::from_f64(t.dtype, t.shape.clone(), t.to_f64_vec());
            assert_eq!(half_bits(&rounded).as_ref(), Some(bits), "{}", t.dtype);
            // Casting to its own dtype shares the elements; to f32 widens exactly.
            match (&t.cast(t.dtype).data, &t.data) {
                (Buffer::F16(a), Buffer::F16(b)) => assert!(Arc::ptr_eq(a, b)),
                (Buffer::BF16(a), Buffer::BF16(b)) => assert!(Arc::ptr_eq(a, b)),
                (a, b) => panic!("cast to its own dtype changed storage: {a:?} from {b:?}"),
            }
            let widened = t.cast(DType::F32).to_f64_vec();
            let exact = t.to_f64_vec();
            assert!(widened.iter().zip(&exact).all(|(w, e)| w.to_bits() == e.to_bits() || (w.is_nan() && e.is_nan())));

            // The text form: the short list literal and the long hex literal read back bit-exact.
            let literal = crate::mlir::print::dense_literal(t);
            let (parsed, _) = crate::mlir::parse::parse_dense_at(&literal, "dense".len()).expect("the literal parses");
            assert_eq!(half_bits(&parsed).as_ref(), Some(bits), "{literal}");
            let repeated: Vec<u16> = bits.iter().copied().cycle().take(7 * 200).collect();
            let long = Tensor::from_f64(
                t.dtype,
                vec![repeated.len()],
                (0..repeated.len()).map(|i| t.get_f64(i % 7)).collect(),
            );
            let literal = crate::mlir::print::dense_literal(&long);
            assert!(literal.starts_with("dense<\"0x"), "a long constant prints as hex data");
            let (parsed, _) =
                crate::mlir::parse::parse_dense_at(&literal, "dense".len()).expect("the hex literal parses");
            assert_eq!(half_bits(&parsed), Some(repeated));

            // JSON (plans and graph views): widened, then narrowed back by the dtype.
            let json = serde_json::to_string(t).expect("serializes");
            let back: Tensor = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(half_bits(&back).as_ref(), Some(bits), "{json}");
        }
    }
}
