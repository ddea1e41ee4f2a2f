//! Elementwise ops: unary math and activations, binary arithmetic, comparisons, `where`, `cast`.
//!
//! Binary ops take operands of one type; broadcasting is the explicit `tsr.broadcast` op, so
//! every elementwise op maps one index space to itself (which fusion and sharding rely on).

use super::{expect_arity, ShapeResult};
use crate::dtype::DType;
use crate::types::TensorType;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The op's mnemonic after `tsr.`.
            pub fn mnemonic(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn from_mnemonic(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}
pub(crate) use named_enum;

named_enum!(
    /// One input, one output of the same type.
    UnaryOp {
        Neg = "neg", Abs = "abs", Exp = "exp", Log = "log", Sqrt = "sqrt", Rsqrt = "rsqrt",
        Reciprocal = "reciprocal", Tanh = "tanh", Sigmoid = "sigmoid", Relu = "relu",
        Gelu = "gelu", GeluTanh = "gelu_tanh", Silu = "silu", Erf = "erf", Sin = "sin",
        Cos = "cos", Not = "not",
    }
);

named_enum!(
    /// Two inputs of one type, one output of that type.
    BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul", Div = "div", Pow = "pow", Max = "max",
        Min = "min", And = "and", Or = "or",
    }
);

named_enum!(
    /// Two inputs of one type, a boolean output of their shape.
    CompareOp { Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge" }
);

impl UnaryOp {
    /// Which element types the op is defined on.
    fn accepts(self, dtype: DType) -> bool {
        match self {
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => dtype != DType::Bool,
            UnaryOp::Not => dtype == DType::Bool,
            _ => dtype.is_float(),
        }
    }

    pub fn infer(self, inputs: &[&TensorType]) -> ShapeResult {
        expect_arity(inputs, 1)?;
        let x = inputs[0];
        if !self.accepts(x.dtype) {
            return Err(format!("'{}' is not defined on {}", self.mnemonic(), x.dtype));
        }
        Ok(vec![x.clone()])
    }
}

impl BinaryOp {
    fn accepts(self, dtype: DType) -> bool {
        match self {
            BinaryOp::And | BinaryOp::Or => dtype == DType::Bool,
            BinaryOp::Pow => dtype.is_float(),
            _ => dtype != DType::Bool,
        }
    }

    pub fn infer(self, inputs: &[&TensorType]) -> ShapeResult {
        expect_arity(inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            return Err(format!(
                "operands must have the same type (broadcast explicitly with tsr.broadcast), got {a} and {b}"
            ));
        }
        if !self.accepts(a.dtype) {
            return Err(format!("'{}' is not defined on {}", self.mnemonic(), a.dtype));
        }
        Ok(vec![a.clone()])
    }
}

impl CompareOp {
    pub fn infer(self, inputs: &[&TensorType]) -> ShapeResult {
        expect_arity(inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            return Err(format!("operands must have the same type, got {a} and {b}"));
        }
        Ok(vec![a.with_dtype(DType::Bool)])
    }
}

/// `where(cond, a, b)`: `a` where `cond` holds, else `b`.
pub fn infer_where(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 3)?;
    let (cond, a, b) = (inputs[0], inputs[1], inputs[2]);
    if cond.dtype != DType::Bool {
        return Err(format!("condition must be i1, got {}", cond.dtype));
    }
    if a != b {
        return Err(format!("branches must have the same type, got {a} and {b}"));
    }
    if cond.dims != a.dims {
        return Err(format!("condition shape {cond} differs from branch shape {a}"));
    }
    Ok(vec![a.clone()])
}

/// `cast` to the result type's dtype; the target dtype is carried by the result type.
pub fn infer_cast(inputs: &[&TensorType], to: DType) -> ShapeResult {
    expect_arity(inputs, 1)?;
    Ok(vec![inputs[0].with_dtype(to)])
}
