//! Tensor types with static and named symbolic dimensions, printed as MLIR builtin tensor types.
//!
//! A symbolic dimension prints as `?` and its name goes into the tensor's encoding attribute,
//! which MLIR accepts as an opaque array: `tensor<?x?x768xf32, ["batch", "seq"]>`.
//!
//! # Invariant
//!
//! - **Symbolic dimensions are names.** Two symbolic dimensions are equal exactly when their names
//!   are. `?` in MLIR text plus the names in the tensor encoding (`tensor<?x8xf32, ["batch"]>`).

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Static(u64),
    Symbolic(String),
}

impl Dim {
    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    }

    pub fn sym(name: &str) -> Dim {
        Dim::Symbolic(name.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, dims: Vec<Dim>) -> TensorType {
        TensorType { dtype, dims }
    }

    pub fn of_static(dtype: DType, shape: &[u64]) -> TensorType {
        TensorType { dtype, dims: shape.iter().map(|&n| Dim::Static(n)).collect() }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType { dtype, dims: self.dims.clone() }
    }

    /// The shape when every dimension is static.
    pub fn static_shape(&self) -> Option<Vec<u64>> {
        self.dims.iter().map(Dim::as_static).collect()
    }

    /// Number of elements when the shape is static.
    pub fn num_elements(&self) -> Option<u64> {
        self.static_shape().map(|s| s.iter().product())
    }

    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.dims.iter().filter_map(|d| match d {
            Dim::Symbolic(s) => Some(s.as_str()),
            Dim::Static(_) => None,
        })
    }

    /// Replaces symbolic dimensions bound in `bindings`; unbound ones stay symbolic.
    pub fn substitute(&self, bindings: &HashMap<String, u64>) -> TensorType {
        let dims = self
            .dims
            .iter()
            .map(|d| match d {
                Dim::Symbolic(s) => bindings.get(s).map_or_else(|| d.clone(), |&n| Dim::Static(n)),
                Dim::Static(_) => d.clone(),
            })
            .collect();
        TensorType { dtype: self.dtype, dims }
    }
}

impl fmt::Display for TensorType {
    /// The MLIR spelling, e.g. `tensor<?x768xf32, ["batch"]>` or `tensor<f32>` for a scalar.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.dims {
            match d {
                Dim::Static(n) => write!(f, "{n}x")?,
                Dim::Symbolic(_) => f.write_str("?x")?,
            }
        }
        f.write_str(self.dtype.mlir_name())?;
        let names: Vec<&str> = self.symbols().collect();
        if !names.is_empty() {
            f.write_str(", [")?;
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "\"{n}\"")?;
            }
            f.write_str("]")?;
        }
        f.write_str(">")
    }
}

/// Normalizes a possibly negative axis against `rank`; `None` when out of range.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}
