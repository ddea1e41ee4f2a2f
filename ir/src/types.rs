//! Tensor types with static and symbolic dimensions, printed as MLIR builtin tensor types.
//!
//! A symbolic dimension is a [`DimExpr`] over named symbols (`batch`, `seq * 2`,
//! `floordiv(h + 1, 2)`). It prints as `?` and its expression goes into the tensor's encoding
//! attribute, which MLIR accepts as an opaque array of strings:
//! `tensor<?x?x768xf32, ["batch", "2 * seq"]>`.
//!
//! # Invariants
//!
//! - **Symbolic dimensions are canonical expressions.** Two symbolic dimensions are equal exactly
//!   when their canonical expressions are (see [`crate::symbolic`]); a lone symbol is its name,
//!   so text written when dimensions were bare names reads the same.
//! - **A constant is static.** `Dim::Symbolic` never holds a constant expression: constructors
//!   ([`Dim::from_expr`]) and binding ([`Dim::bind`]) fold it to `Dim::Static`, and refuse a
//!   negative one.

use crate::dtype::DType;
use crate::symbolic::{DimExpr, SymbolicError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Static(u64),
    Symbolic(DimExpr),
}

impl Dim {
    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    }

    pub fn sym(name: &str) -> Dim {
        Dim::Symbolic(DimExpr::symbol(name))
    }

    /// The dimension of value `expr`: static when it is a constant (a negative one is an error).
    pub fn from_expr(expr: DimExpr) -> Result<Dim, SymbolicError> {
        match expr.as_const() {
            Some(n) if n >= 0 => Ok(Dim::Static(n as u64)),
            Some(n) => Err(SymbolicError::Negative { expr: expr.to_string(), value: n }),
            None => Ok(Dim::Symbolic(expr)),
        }
    }

    /// The dimension as an expression (a static one as a constant).
    pub fn to_expr(&self) -> Result<DimExpr, SymbolicError> {
        match self {
            Dim::Static(n) => {
                i64::try_from(*n).map(DimExpr::constant).map_err(|_| SymbolicError::Overflow(n.to_string()))
            }
            Dim::Symbolic(e) => Ok(e.clone()),
        }
    }

    /// The dimension with the symbols in `bindings` replaced by their sizes; unbound ones stay.
    pub fn bind(&self, bindings: &HashMap<String, u64>) -> Result<Dim, SymbolicError> {
        match self {
            Dim::Static(_) => Ok(self.clone()),
            Dim::Symbolic(e) => {
                for name in e.symbols() {
                    if let Some(&n) = bindings.get(name) {
                        if i64::try_from(n).is_err() {
                            return Err(SymbolicError::Overflow(format!("the size {n} of '{name}'")));
                        }
                    }
                }
                let bound = e.substitute_with(&|s| bindings.get(s).map(|&n| DimExpr::constant(n as i64)))?;
                Dim::from_expr(bound)
            }
        }
    }

    /// Adds the names of this dimension's symbols to `out`.
    pub fn collect_symbols<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        if let Dim::Symbolic(e) = self {
            e.collect_symbols(out);
        }
    }
}

/// Learns symbol sizes from the concrete `shape` given for each declared type (`(what, type,
/// shape)`, `what` naming the input in messages), adding them to `bindings`, whose entries are
/// kept. A dimension that is one symbol binds it; one of the form `a * s + b` solves for `s`
/// once the others are known; rounds repeat until nothing new is learned. Then every dimension
/// whose symbols are all bound must evaluate to its size: a mismatch names the input, the
/// dimension and both sizes. Ranks are the caller's to check.
pub fn bind_from_shapes(
    given: &[(&str, &TensorType, &[usize])],
    bindings: &mut HashMap<String, u64>,
) -> Result<(), String> {
    let observations: Vec<(&str, usize, &DimExpr, u64)> = given
        .iter()
        .flat_map(|(what, ty, shape)| {
            ty.dims.iter().zip(shape.iter()).enumerate().filter_map(move |(axis, (d, &n))| match d {
                Dim::Symbolic(e) => Some((*what, axis, e, n as u64)),
                Dim::Static(_) => None,
            })
        })
        .collect();
    let mut learned = true;
    while learned {
        learned = false;
        for &(what, axis, expr, size) in &observations {
            let Dim::Symbolic(rest) = Dim::Symbolic(expr.clone()).bind(bindings).map_err(|e| e.to_string())? else {
                continue;
            };
            let target = i64::try_from(size).map_err(|_| format!("dimension {axis} of {what} is too large"))?;
            match rest.solve_linear(target) {
                Some((name, Some(v))) if v >= 0 => {
                    bindings.insert(name, v as u64);
                    learned = true;
                }
                Some((name, _)) => {
                    return Err(format!("dimension {axis} of {what} is {expr}, which no size of '{name}' makes {size}"))
                }
                None => {}
            }
        }
    }
    for &(what, axis, expr, size) in &observations {
        if let Dim::Static(n) = Dim::Symbolic(expr.clone()).bind(bindings).map_err(|e| e.to_string())? {
            if n != size {
                let known: Vec<String> =
                    expr.symbols().into_iter().filter_map(|s| bindings.get(s).map(|v| format!("{s} = {v}"))).collect();
                return Err(format!(
                    "dimension {axis} of {what} is {expr} = {n} (with {}), but the tensor given has {size}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The number of elements of `dims` as an expression.
pub fn dims_product(dims: &[Dim]) -> Result<DimExpr, SymbolicError> {
    dims.iter().try_fold(DimExpr::constant(1), |acc, d| acc.mul(&d.to_expr()?))
}

/// [`Dim::bind`] over a list of dimensions.
pub fn bind_dims(dims: &[Dim], bindings: &HashMap<String, u64>) -> Result<Vec<Dim>, SymbolicError> {
    dims.iter().map(|d| d.bind(bindings)).collect()
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Symbolic(e) => write!(f, "{e}"),
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

    /// The names of the symbols in the dimensions, sorted, each once.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        let mut names = BTreeSet::new();
        for d in &self.dims {
            d.collect_symbols(&mut names);
        }
        names.into_iter()
    }

    /// Replaces the symbols bound in `bindings` by their sizes and evaluates the dimensions;
    /// unbound symbols stay. Overflow and a negative dimension are errors.
    pub fn substitute(&self, bindings: &HashMap<String, u64>) -> Result<TensorType, SymbolicError> {
        Ok(TensorType { dtype: self.dtype, dims: bind_dims(&self.dims, bindings)? })
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
        let exprs: Vec<&DimExpr> = self
            .dims
            .iter()
            .filter_map(|d| match d {
                Dim::Symbolic(e) => Some(e),
                Dim::Static(_) => None,
            })
            .collect();
        if !exprs.is_empty() {
            f.write_str(", [")?;
            for (i, e) in exprs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "\"{e}\"")?;
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

#[cfg(test)]
mod tests {
    use super::{bind_from_shapes, Dim, TensorType};
    use crate::dtype::DType;
    use crate::symbolic::DimExpr;
    use std::collections::HashMap;

    fn dim(text: &str) -> Dim {
        Dim::from_expr(DimExpr::parse(text).expect("an expression")).expect("a dimension")
    }

    #[test]
    fn inputs_bind_symbols_through_expressions() {
        // `tokens` is [batch, seq + 1]; `mask` is [seq]: seq comes from the mask, then checks.
        let tokens = TensorType::new(DType::I64, vec![dim("batch"), dim("seq + 1")]);
        let mask = TensorType::new(DType::F32, vec![dim("2 * seq")]);
        let mut bindings = HashMap::new();
        bind_from_shapes(&[("input 'tokens'", &tokens, &[3, 9]), ("input 'mask'", &mask, &[16])], &mut bindings)
            .expect("consistent sizes bind");
        assert_eq!(bindings, HashMap::from([("batch".to_string(), 3), ("seq".to_string(), 8)]));

        let mut bindings = HashMap::new();
        let err =
            bind_from_shapes(&[("input 'tokens'", &tokens, &[3, 9]), ("input 'mask'", &mask, &[14])], &mut bindings)
                .expect_err("14 is not 2 * 8");
        assert!(err.starts_with("dimension 0 of input 'mask' is 2 * seq"), "{err}");

        let mut bindings = HashMap::new();
        let err = bind_from_shapes(&[("input 'mask'", &mask, &[7])], &mut bindings).expect_err("7 is odd");
        assert_eq!(err, "dimension 0 of input 'mask' is 2 * seq, which no size of 'seq' makes 7");

        // A dimension that only a window expression gives is checked once its symbols are known.
        let pooled = TensorType::new(DType::F32, vec![dim("floordiv(h + 1, 2)")]);
        let image = TensorType::new(DType::F32, vec![dim("h")]);
        let mut bindings = HashMap::new();
        let err =
            bind_from_shapes(&[("input 'pooled'", &pooled, &[4]), ("input 'image'", &image, &[9])], &mut bindings)
                .expect_err("floordiv(10, 2) is 5");
        assert_eq!(
            err,
            "dimension 0 of input 'pooled' is floordiv(h + 1, 2) = 5 (with h = 9), but the tensor given has 4"
        );
    }

    #[test]
    fn binding_evaluates_and_refuses_negative_or_overflowing_sizes() {
        let ty = TensorType::new(DType::F32, vec![dim("seq - 4"), dim("seq * seq")]);
        let bound = ty.substitute(&HashMap::from([("seq".to_string(), 6)])).expect("binds");
        assert_eq!(bound.static_shape(), Some(vec![2, 36]));
        assert!(ty.substitute(&HashMap::from([("seq".to_string(), 3)])).is_err());
        assert!(ty.substitute(&HashMap::from([("seq".to_string(), 1 << 40)])).is_err());
        assert!(ty.substitute(&HashMap::from([("seq".to_string(), u64::MAX)])).is_err());
        assert_eq!(ty.to_string(), r#"tensor<?x?xf32, ["seq - 4", "seq * seq"]>"#);
        assert_eq!(ty.symbols().collect::<Vec<_>>(), vec!["seq"]);
    }
}
