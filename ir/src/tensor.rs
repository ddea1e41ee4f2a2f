//! Dense tensor values: constant literals in the IR and the values the reference semantics
//! compute on. `f32` tensors hold their elements as `f32` (a float32 model's weights take their
//! own size, not twice it); floats of every other width are held as `f64` already rounded to
//! their dtype; integers and booleans as `i64` already wrapped to theirs. The storage follows
//! from the dtype alone (see [`Buffer`]), so two equal tensors have equal storage.

use crate::dtype::DType;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// A tensor's elements. Which variant a tensor uses is fixed by its dtype: `F32` for
/// [`DType::F32`], `Float` for every other float dtype, `Int` for integers and booleans.
/// Constructors ([`Tensor::from_f64`], [`Tensor::from_i64`], [`Tensor::zeros`]) keep it so, and the
/// verifier checks it. Readers that compute in `f64` (the reference semantics) read through
/// [`Tensor::floats`], which borrows `Float` storage and widens `F32` storage exactly.
///
/// `F32` elements are shared (`Arc`): a model's weights are f32 constants, and passes copy
/// graphs (specialization to `--dim` sizes, rollback copies); sharing makes those copies cost
/// nothing per weight. Writers that change elements in place go through `Arc::make_mut`.
#[derive(Debug, Clone, PartialEq)]
pub enum Buffer {
    Float(Vec<f64>),
    F32(Arc<Vec<f32>>),
    Int(Vec<i64>),
}

/// The JSON form predates `F32` storage and is kept: `{"float": [...]}` for every float dtype
/// (f32 values widened, exactly), `{"int": [...]}` otherwise. Reading it back gives `Float`
/// storage; [`Tensor`]'s deserializer narrows it to `F32` where the dtype says so.
impl Serialize for Buffer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Buffer::Float(v) => serializer.serialize_newtype_variant("Buffer", 0, "float", &json_floats::Floats(v)),
            Buffer::F32(v) => {
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

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        if dtype == DType::F32 {
            Tensor { dtype, shape, data: Buffer::F32(Arc::new(vec![0.0; n])) }
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
            Buffer::Int(v) => v.len(),
        }
    }

    /// Whether the elements are floats (of any width), as the dtype says they should be.
    pub fn has_float_storage(&self) -> bool {
        matches!(self.data, Buffer::Float(_) | Buffer::F32(_))
    }

    /// The float elements as `f64`: borrowed from `Float` storage, widened (exactly) from `F32`
    /// storage; `None` for integer storage.
    pub fn floats(&self) -> Option<Cow<'_, [f64]>> {
        match &self.data {
            Buffer::Float(v) => Some(Cow::Borrowed(v)),
            Buffer::F32(v) => Some(Cow::Owned(v.iter().map(|&x| f64::from(x)).collect())),
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
            Buffer::Int(v) => self.dtype.int_to_f64(v[i]),
        }
    }

    /// Element `i` (row-major) as `i64`; floats are truncated toward zero.
    pub fn get_i64(&self, i: usize) -> i64 {
        match &self.data {
            Buffer::Float(v) => v[i] as i64,
            Buffer::F32(v) => v[i] as i64,
            Buffer::Int(v) => v[i],
        }
    }

    /// All elements as `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Buffer::Float(v) => v.clone(),
            Buffer::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Buffer::Int(v) => v.iter().map(|&x| self.dtype.int_to_f64(x)).collect(),
        }
    }

    /// All elements as `i64` (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Buffer::Float(v) => v.iter().map(|&x| x as i64).collect(),
            Buffer::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Buffer::Int(v) => v.clone(),
        }
    }

    /// Converts to another dtype with the usual cast semantics: float→int truncates toward
    /// zero, anything→bool is `!= 0`, int→float rounds.
    pub fn cast(&self, dtype: DType) -> Tensor {
        match &self.data {
            // Shares the elements: specialization casts every weight to its compute dtype.
            Buffer::F32(v) if dtype == DType::F32 => {
                Tensor { dtype, shape: self.shape.clone(), data: Buffer::F32(Arc::clone(v)) }
            }
            Buffer::Float(_) | Buffer::F32(_) if dtype == DType::Bool => Tensor::from_i64(
                dtype,
                self.shape.clone(),
                self.to_f64_vec().iter().map(|&x| (x != 0.0) as i64).collect(),
            ),
            Buffer::Float(_) | Buffer::F32(_) => Tensor::from_f64(dtype, self.shape.clone(), self.to_f64_vec()),
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
