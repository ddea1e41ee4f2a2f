//! Elementwise ops: unary math and activations, binary arithmetic, comparisons, `where`, `cast`.
//!
//! Binary ops take operands of one type; broadcasting is the explicit `tsr.broadcast` op, so
//! every elementwise op maps one index space to itself (which fusion and sharding rely on).
//!
//! Reference semantics: floats in `f64` rounded to the dtype (`gelu` is the exact erf form,
//! `gelu_tanh` the tanh approximation, `erf` from `libm`); integers in `i64`, wrapped, with
//! integer division truncating toward zero; `max`/`min` propagate NaN.

use super::gradient::{Differentiability, GradContext, GradError, GradResult};
use super::{expect_arity, floats, ints, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::tensor::{Buffer, Tensor};
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

/// What the backward pass of a unary op reads besides the incoming gradient, so the memory
/// model (`passes::cost::profile`) knows which activation stays alive until backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardKeeps {
    /// The gradient alone (`neg`), or no gradient at all (`not`).
    Nothing,
    /// The operand `x` (`log: g/x`).
    Operand,
    /// The result `y` (`exp: g*y`).
    Result,
}

/// A [`named_enum!`] whose rows also say which ONNX op the importer maps onto the variant and
/// what its backward pass keeps, so that one row describes a unary op to every consumer that
/// does not need code of its own (the shape rule, semantics and gradient are the `match`es
/// below; codegen's scalar code is an arm in `codegen::emit::pointwise`).
macro_rules! unary_table {
    ($(#[$meta:meta])* $name:ident {
        $($variant:ident = $text:literal, onnx: $onnx:expr, keeps: $keeps:ident;)*
    }) => {
        named_enum!($(#[$meta])* $name { $($variant = $text),* });

        impl $name {
            /// The ONNX op type imported as this op (default domain, no attributes); `None`
            /// when ONNX has none or its attributes need a builder of their own.
            pub fn onnx_name(self) -> Option<&'static str> {
                match self { $($name::$variant => $onnx),* }
            }

            /// The op an ONNX op type is imported as, by [`Self::onnx_name`].
            pub fn from_onnx_name(op_type: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|op| op.onnx_name() == Some(op_type))
            }

            /// Which value the memory model keeps alive for the gradient rule ([`Self::grad`]);
            /// `rsqrt` reads both and is counted by its result.
            pub fn backward_keeps(self) -> BackwardKeeps {
                match self { $($name::$variant => BackwardKeeps::$keeps),* }
            }
        }
    };
}

unary_table!(
    /// One input, one output of the same type. A row is the mnemonic, the ONNX op imported as
    /// it, and the value its gradient reads.
    UnaryOp {
        Neg = "neg", onnx: Some("Neg"), keeps: Nothing;
        Abs = "abs", onnx: Some("Abs"), keeps: Operand;
        Acos = "acos", onnx: Some("Acos"), keeps: Operand;
        Asin = "asin", onnx: Some("Asin"), keeps: Operand;
        Atan = "atan", onnx: Some("Atan"), keeps: Operand;
        Ceil = "ceil", onnx: Some("Ceil"), keeps: Nothing;
        Exp = "exp", onnx: Some("Exp"), keeps: Result;
        Floor = "floor", onnx: Some("Floor"), keeps: Nothing;
        Log = "log", onnx: Some("Log"), keeps: Operand;
        Sqrt = "sqrt", onnx: Some("Sqrt"), keeps: Result;
        Rsqrt = "rsqrt", onnx: None, keeps: Result;
        Reciprocal = "reciprocal", onnx: Some("Reciprocal"), keeps: Result;
        Tanh = "tanh", onnx: Some("Tanh"), keeps: Result;
        Sigmoid = "sigmoid", onnx: Some("Sigmoid"), keeps: Result;
        Relu = "relu", onnx: Some("Relu"), keeps: Operand;
        // Halves round to even, as ONNX `Round` (and NumPy) specify.
        Round = "round", onnx: Some("Round"), keeps: Nothing;
        // ONNX `Gelu` has an `approximate` attribute that picks `gelu` or `gelu_tanh`.
        Gelu = "gelu", onnx: None, keeps: Operand;
        GeluTanh = "gelu_tanh", onnx: None, keeps: Operand;
        Silu = "silu", onnx: None, keeps: Operand;
        Erf = "erf", onnx: Some("Erf"), keeps: Operand;
        Sin = "sin", onnx: Some("Sin"), keeps: Operand;
        Cos = "cos", onnx: Some("Cos"), keeps: Operand;
        Softsign = "softsign", onnx: Some("Softsign"), keeps: Operand;
        Not = "not", onnx: Some("Not"), keeps: Nothing;
        // Two's complement bitwise complement of an integer (ONNX `BitwiseNot`).
        BitNot = "bitwise_not", onnx: Some("BitwiseNot"), keeps: Nothing;
    }
);

named_enum!(
    /// Two inputs of one type, one output of that type.
    BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul", Div = "div", Pow = "pow", Max = "max",
        Min = "min", And = "and", Or = "or",
        // Bitwise ops on integers' two's complement bits; shifts move the dtype's bit pattern
        // (logical right shift) and give 0 once the amount reaches the width (ONNX `BitShift`).
        BitAnd = "bitwise_and", BitOr = "bitwise_or", BitXor = "bitwise_xor",
        ShiftLeft = "shift_left", ShiftRight = "shift_right",
    }
);

named_enum!(
    /// Two inputs of one type, a boolean output of their shape.
    CompareOp { Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge" }
);

impl UnaryOp {
    /// The integer-only bitwise ops (code generators leave them to the interpreter).
    pub fn is_bitwise(self) -> bool {
        self == UnaryOp::BitNot
    }

    /// Which element types the op is defined on.
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => dtype != DType::Bool,
            UnaryOp::Not => dtype == DType::Bool,
            UnaryOp::BitNot => dtype.is_int(),
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
            _ if self.is_bitwise() => dtype.is_int(),
            _ => dtype != DType::Bool,
        }
    }

    /// The integer-only bitwise ops and shifts (code generators leave them to the interpreter).
    pub fn is_bitwise(self) -> bool {
        matches!(
            self,
            BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight
        )
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

/// FLOPs of an elementwise op (`where` and `cast` included): 1 per result element.
/// Transcendentals (`exp`, `tanh`, `gelu`, ...) count 1 too: their real cost depends on the
/// hardware, and a cost model weighs them separately.
pub fn flops(out_elements: u128) -> u128 {
    out_elements
}

// ---------------------------------------------------------------------------------------------
// Reference semantics

impl UnaryOp {
    /// The op on one float, in `f64` (the caller rounds to the dtype).
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Reciprocal => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            // `x < 0` is false for NaN, so NaN passes through as in PyTorch.
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            UnaryOp::GeluTanh => {
                // sqrt(2 / pi), the constant of the tanh approximation (Hendrycks & Gimpel).
                const K: f64 = 0.797_884_560_802_865_4;
                0.5 * x * (1.0 + (K * (x + 0.044715 * x * x * x)).tanh())
            }
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Erf => libm::erf(x),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Acos => x.acos(),
            UnaryOp::Asin => x.asin(),
            UnaryOp::Atan => x.atan(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Round => x.round_ties_even(),
            UnaryOp::Softsign => x / (1.0 + x.abs()),
            UnaryOp::Not => (x == 0.0) as i64 as f64,
            // Not defined on floats (the shape rule refuses it).
            UnaryOp::BitNot => f64::NAN,
        }
    }

    /// The op on one integer or boolean; `None` where it is defined on floats only.
    pub fn apply_i64(self, x: i64) -> Option<i64> {
        match self {
            UnaryOp::Neg => Some(x.wrapping_neg()),
            UnaryOp::Abs => Some(x.wrapping_abs()),
            UnaryOp::Relu => Some(x.max(0)),
            UnaryOp::Not => Some((x == 0) as i64),
            // The caller wraps to the dtype: for unsigned types that keeps the low bits of !x.
            UnaryOp::BitNot => Some(!x),
            _ => None,
        }
    }
}

/// The logistic function, written so that `exp` never overflows.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `max` that propagates NaN (like `torch.maximum` and ONNX Max), unlike `f64::max`.
pub(crate) fn max_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `min` that propagates NaN.
pub(crate) fn min_f64(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

impl BinaryOp {
    /// The op on two floats, in `f64`. `and`/`or` treat non-zero as true.
    pub fn apply_f64(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Max => max_f64(a, b),
            BinaryOp::Min => min_f64(a, b),
            BinaryOp::And => (a != 0.0 && b != 0.0) as i64 as f64,
            BinaryOp::Or => (a != 0.0 || b != 0.0) as i64 as f64,
            // Not defined on floats (the shape rule refuses them).
            BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
                f64::NAN
            }
        }
    }

    /// The op on two integers, wrapping in `i64` (the caller wraps to the dtype, which gives
    /// the dtype's two's complement result). Division truncates toward zero, as in C and ONNX.
    pub fn apply_i64(self, a: i64, b: i64) -> Result<i64, String> {
        Ok(match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div if b == 0 => return Err("integer division by zero".into()),
            BinaryOp::Div => a.wrapping_div(b),
            BinaryOp::Pow => return Err("'pow' is not defined on integers".into()),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::And => (a != 0 && b != 0) as i64,
            BinaryOp::Or => (a != 0 || b != 0) as i64,
            BinaryOp::BitAnd => a & b,
            BinaryOp::BitOr => a | b,
            BinaryOp::BitXor => a ^ b,
            BinaryOp::ShiftLeft | BinaryOp::ShiftRight => self.apply_shift(DType::I64, a, b),
        })
    }

    /// A shift of `a` (of `dtype`) by `b` as onnx's reference shifts: right shifts are
    /// arithmetic on signed types and logical on unsigned ones; an amount outside
    /// `0..width` shifts every bit out (0, or -1 for a negative signed value shifted right).
    /// The caller wraps the result to the dtype.
    pub fn apply_shift(self, dtype: DType, a: i64, b: i64) -> i64 {
        let width = dtype.bits() as i64;
        let negative = !dtype.is_unsigned() && a < 0;
        if !(0..width).contains(&b) {
            return if self == BinaryOp::ShiftRight && negative { -1 } else { 0 };
        }
        match self {
            BinaryOp::ShiftLeft => a.wrapping_shl(b as u32),
            _ if dtype == DType::U64 => ((a as u64) >> b) as i64,
            // Stored values of the narrower unsigned types are non-negative, so `>>` is
            // logical for them and arithmetic for signed types.
            _ => a >> b,
        }
    }
}

impl CompareOp {
    /// IEEE comparison: every comparison with NaN is false except `ne`.
    pub fn apply_f64(self, a: f64, b: f64) -> bool {
        self.apply(a, b)
    }

    pub fn apply_i64(self, a: i64, b: i64) -> bool {
        self.apply(a, b)
    }

    fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
        }
    }
}

pub fn eval_unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    let shape = x.shape.clone();
    match &x.data {
        Buffer::Float(v) => Ok(Tensor::from_f64(x.dtype, shape, v.iter().map(|&a| op.apply_f64(a)).collect())),
        Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) => {
            Ok(Tensor::from_f64(x.dtype, shape, x.to_f64_vec().into_iter().map(|a| op.apply_f64(a)).collect()))
        }
        Buffer::Int(v) => {
            let values = v
                .iter()
                .map(|&a| op.apply_i64(a))
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| format!("'{}' is not defined on {}", op.mnemonic(), x.dtype))?;
            Ok(Tensor::from_i64(x.dtype, shape, values))
        }
    }
}

pub fn eval_binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let shape = a.shape.clone();
    match (&a.data, &b.data) {
        _ if a.has_float_storage() && b.has_float_storage() => {
            let (x, y) = (floats(a)?, floats(b)?);
            let values = x.iter().zip(y.iter()).map(|(&p, &q)| op.apply_f64(p, q)).collect();
            Ok(Tensor::from_f64(a.dtype, shape, values))
        }
        (Buffer::Int(x), Buffer::Int(y)) if matches!(op, BinaryOp::ShiftLeft | BinaryOp::ShiftRight) => {
            let values = x.iter().zip(y).map(|(&p, &q)| op.apply_shift(a.dtype, p, q)).collect();
            Ok(Tensor::from_i64(a.dtype, shape, values))
        }
        (Buffer::Int(x), Buffer::Int(y)) if a.dtype == DType::U64 => {
            let values = x.iter().zip(y).map(|(&p, &q)| apply_u64(op, p, q)).collect::<Result<_, _>>()?;
            Ok(Tensor::from_i64(a.dtype, shape, values))
        }
        (Buffer::Int(x), Buffer::Int(y)) => {
            let values = x.iter().zip(y).map(|(&p, &q)| op.apply_i64(p, q)).collect::<Result<_, _>>()?;
            Ok(Tensor::from_i64(a.dtype, shape, values))
        }
        _ => Err(format!("operands {} and {} have different storage", a.dtype, b.dtype)),
    }
}

/// `op` on two u64 held as two's complement `i64`: addition, subtraction and multiplication
/// wrap alike; division and ordering must read the bits as unsigned.
fn apply_u64(op: BinaryOp, a: i64, b: i64) -> Result<i64, String> {
    let (ua, ub) = (a as u64, b as u64);
    Ok(match op {
        BinaryOp::Div if ub == 0 => return Err("integer division by zero".into()),
        BinaryOp::Div => (ua / ub) as i64,
        BinaryOp::Max => ua.max(ub) as i64,
        BinaryOp::Min => ua.min(ub) as i64,
        _ => op.apply_i64(a, b)?,
    })
}

pub fn eval_compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let values: Vec<i64> = match (&a.data, &b.data) {
        _ if a.has_float_storage() && b.has_float_storage() => {
            let (x, y) = (floats(a)?, floats(b)?);
            x.iter().zip(y.iter()).map(|(&p, &q)| op.apply_f64(p, q) as i64).collect()
        }
        // u64 held as two's complement i64 orders like i64 once the top bit is flipped.
        (Buffer::Int(x), Buffer::Int(y)) if a.dtype == DType::U64 => {
            x.iter().zip(y).map(|(&p, &q)| op.apply_i64(p ^ i64::MIN, q ^ i64::MIN) as i64).collect()
        }
        (Buffer::Int(x), Buffer::Int(y)) => x.iter().zip(y).map(|(&p, &q)| op.apply_i64(p, q) as i64).collect(),
        _ => return Err(format!("operands {} and {} have different storage", a.dtype, b.dtype)),
    };
    Ok(Tensor::from_i64(DType::Bool, a.shape.clone(), values))
}

/// `where(cond, a, b)`; the operands have one shape (the shape rule checked it).
pub fn eval_where(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let c = ints(cond)?;
    let data = match (&a.data, &b.data) {
        (Buffer::Float(x), Buffer::Float(y)) => {
            Buffer::Float(c.iter().zip(x.iter().zip(y)).map(|(&k, (&p, &q))| if k != 0 { p } else { q }).collect())
        }
        (Buffer::F32(x), Buffer::F32(y)) => {
            let picked = c.iter().zip(x.iter().zip(y.iter())).map(|(&k, (&p, &q))| if k != 0 { p } else { q });
            Buffer::F32(std::sync::Arc::new(picked.collect()))
        }
        (Buffer::F16(x), Buffer::F16(y)) => {
            let picked = c.iter().zip(x.iter().zip(y.iter())).map(|(&k, (&p, &q))| if k != 0 { p } else { q });
            Buffer::F16(std::sync::Arc::new(picked.collect()))
        }
        (Buffer::BF16(x), Buffer::BF16(y)) => {
            let picked = c.iter().zip(x.iter().zip(y.iter())).map(|(&k, (&p, &q))| if k != 0 { p } else { q });
            Buffer::BF16(std::sync::Arc::new(picked.collect()))
        }
        (Buffer::Int(x), Buffer::Int(y)) => {
            Buffer::Int(c.iter().zip(x.iter().zip(y)).map(|(&k, (&p, &q))| if k != 0 { p } else { q }).collect())
        }
        _ => return Err(format!("branches {} and {} have different storage", a.dtype, b.dtype)),
    };
    Ok(Tensor { dtype: a.dtype, shape: a.shape.clone(), data })
}

// ---------------------------------------------------------------------------------------------
// Gradient rules. `g` is the adjoint of the result; every rule is exact where the op is smooth.

impl UnaryOp {
    /// Whether the op is differentiable (`not` works on booleans only).
    pub fn differentiability(self) -> Differentiability {
        match self {
            UnaryOp::Not | UnaryOp::BitNot | UnaryOp::Ceil | UnaryOp::Floor | UnaryOp::Round => {
                Differentiability::PiecewiseConstant
            }
            _ => Differentiability::Differentiable,
        }
    }

    /// `dx = g * f'(x)`, with `f'` written through `x` or the result `y`: `exp: g*y`,
    /// `log: g/x`, `sqrt: g/(2y)`, `rsqrt: -g*y/(2x)`, `reciprocal: -g*y*y`, `tanh: g*(1-y^2)`,
    /// `sigmoid: g*y*(1-y)`, `relu`/`abs`: the sign (0 at 0, PyTorch's subgradient), `gelu:
    /// g*(Phi(x) + x*phi(x))`, `gelu_tanh` and `silu` by the chain rule, `erf: g*2/sqrt(pi)*exp(-x^2)`,
    /// `sin: g*cos`, `cos: -g*sin`, `softsign: g/(1+|x|)^2`, `acos: -g/sqrt(1-x^2)`,
    /// `asin: g/sqrt(1-x^2)`, `atan: g/(1+x^2)`. `ceil`, `floor` and `round` are piecewise
    /// constant (derivative 0 wherever it exists): no adjoint flows through them.
    pub fn grad(self, cx: &mut GradContext, x: ValueId, y: ValueId, g: ValueId) -> Result<ValueId, GradError> {
        use std::f64::consts::PI;
        let sign_mask = |cx: &mut GradContext, x: ValueId| -> Result<(ValueId, ValueId), GradError> {
            let zero = cx.splat_like(x, 0.0)?;
            Ok((cx.compare(CompareOp::Gt, x, zero)?, cx.compare(CompareOp::Lt, x, zero)?))
        };
        match self {
            UnaryOp::Neg => cx.neg(g),
            UnaryOp::Abs => {
                let (pos, neg) = sign_mask(cx, x)?;
                let zero = cx.splat_like(g, 0.0)?;
                let minus = cx.neg(g)?;
                let inner = cx.select(neg, minus, zero)?;
                cx.select(pos, g, inner)
            }
            UnaryOp::Relu => {
                let (pos, _) = sign_mask(cx, x)?;
                let zero = cx.splat_like(g, 0.0)?;
                cx.select(pos, g, zero)
            }
            UnaryOp::Exp => cx.mul(g, y),
            UnaryOp::Log => cx.div(g, x),
            UnaryOp::Sqrt => {
                let twice = cx.scale(y, 2.0)?;
                cx.div(g, twice)
            }
            UnaryOp::Rsqrt => {
                let gy = cx.mul(g, y)?;
                let q = cx.div(gy, x)?;
                cx.scale(q, -0.5)
            }
            UnaryOp::Reciprocal => {
                let yy = cx.mul(y, y)?;
                let gyy = cx.mul(g, yy)?;
                cx.neg(gyy)
            }
            UnaryOp::Tanh => {
                let yy = cx.mul(y, y)?;
                let one = cx.splat_like(y, 1.0)?;
                let d = cx.sub(one, yy)?;
                cx.mul(g, d)
            }
            UnaryOp::Sigmoid => {
                let one = cx.splat_like(y, 1.0)?;
                let rest = cx.sub(one, y)?;
                let d = cx.mul(y, rest)?;
                cx.mul(g, d)
            }
            UnaryOp::Gelu => {
                let d = gelu_derivative(cx, x)?;
                cx.mul(g, d)
            }
            UnaryOp::GeluTanh => {
                let d = gelu_tanh_derivative(cx, x)?;
                cx.mul(g, d)
            }
            UnaryOp::Silu => {
                // d/dx x s(x) = s (1 + x (1 - s)).
                let s = cx.unary(UnaryOp::Sigmoid, x)?;
                let one = cx.splat_like(x, 1.0)?;
                let rest = cx.sub(one, s)?;
                let xr = cx.mul(x, rest)?;
                let inner = cx.add2(one, xr)?;
                let d = cx.mul(s, inner)?;
                cx.mul(g, d)
            }
            UnaryOp::Erf => {
                let xx = cx.mul(x, x)?;
                let e = cx.neg(xx)?;
                let e = cx.unary(UnaryOp::Exp, e)?;
                let d = cx.scale(e, 2.0 / PI.sqrt())?;
                cx.mul(g, d)
            }
            UnaryOp::Sin => {
                let c = cx.unary(UnaryOp::Cos, x)?;
                cx.mul(g, c)
            }
            UnaryOp::Cos => {
                let s = cx.unary(UnaryOp::Sin, x)?;
                let gs = cx.mul(g, s)?;
                cx.neg(gs)
            }
            UnaryOp::Softsign => {
                let a = cx.unary(UnaryOp::Abs, x)?;
                let one = cx.splat_like(x, 1.0)?;
                let d = cx.add2(one, a)?;
                let dd = cx.mul(d, d)?;
                cx.div(g, dd)
            }
            UnaryOp::Acos | UnaryOp::Asin => {
                let xx = cx.mul(x, x)?;
                let one = cx.splat_like(x, 1.0)?;
                let d = cx.sub(one, xx)?;
                let root = cx.unary(UnaryOp::Sqrt, d)?;
                let q = cx.div(g, root)?;
                if self == UnaryOp::Acos {
                    cx.neg(q)
                } else {
                    Ok(q)
                }
            }
            UnaryOp::Atan => {
                let xx = cx.mul(x, x)?;
                let one = cx.splat_like(x, 1.0)?;
                let d = cx.add2(one, xx)?;
                cx.div(g, d)
            }
            UnaryOp::Ceil | UnaryOp::Floor | UnaryOp::Round => Err(GradError::NotDifferentiable {
                op: self.mnemonic(),
                operand: 0,
                reason: "it is piecewise constant (no adjoint flows through it)".into(),
            }),
            UnaryOp::Not => {
                Err(GradError::NotDifferentiable { op: "not", operand: 0, reason: "it works on booleans".into() })
            }
            UnaryOp::BitNot => Err(GradError::NotDifferentiable {
                op: "bitwise_not",
                operand: 0,
                reason: "it works on integers".into(),
            }),
        }
    }
}

/// `d/dx gelu(x) = Phi(x) + x phi(x)`, as graph nodes (a helper of [`UnaryOp::grad`]).
fn gelu_derivative(cx: &mut GradContext, x: ValueId) -> Result<ValueId, GradError> {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};
    // Phi(x) = (1 + erf(x / sqrt 2)) / 2, phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    let scaled = cx.scale(x, FRAC_1_SQRT_2)?;
    let erf = cx.unary(UnaryOp::Erf, scaled)?;
    let one = cx.splat_like(x, 1.0)?;
    let cdf = cx.add2(one, erf)?;
    let cdf = cx.scale(cdf, 0.5)?;
    let xx = cx.mul(x, x)?;
    let e = cx.scale(xx, -0.5)?;
    let e = cx.unary(UnaryOp::Exp, e)?;
    let pdf = cx.scale(e, 1.0 / (2.0 * PI).sqrt())?;
    let xpdf = cx.mul(x, pdf)?;
    cx.add2(cdf, xpdf)
}

/// `d/dx gelu_tanh(x)`, as graph nodes (a helper of [`UnaryOp::grad`]).
fn gelu_tanh_derivative(cx: &mut GradContext, x: ValueId) -> Result<ValueId, GradError> {
    // y = x (1 + t) / 2 with t = tanh(u), u = K (x + c x^3):
    // dy/dx = (1 + t) / 2 + x (1 - t^2) K (1 + 3 c x^2) / 2.
    const K: f64 = 0.797_884_560_802_865_4;
    const C: f64 = 0.044715;
    let xx = cx.mul(x, x)?;
    let xxx = cx.mul(xx, x)?;
    let cubic = cx.scale(xxx, C)?;
    let inner = cx.add2(x, cubic)?;
    let u = cx.scale(inner, K)?;
    let t = cx.unary(UnaryOp::Tanh, u)?;
    let one = cx.splat_like(x, 1.0)?;
    let one_plus_t = cx.add2(one, t)?;
    let first = cx.scale(one_plus_t, 0.5)?;
    let tt = cx.mul(t, t)?;
    let sech2 = cx.sub(one, tt)?;
    let three_c_xx = cx.scale(xx, 3.0 * C)?;
    let du = cx.add2(one, three_c_xx)?;
    let du = cx.scale(du, 0.5 * K)?;
    let second = cx.mul(sech2, du)?;
    let second = cx.mul(x, second)?;
    cx.add2(first, second)
}

impl BinaryOp {
    pub fn differentiability(self) -> Differentiability {
        match self {
            BinaryOp::And | BinaryOp::Or => Differentiability::PiecewiseConstant,
            b if b.is_bitwise() => Differentiability::PiecewiseConstant,
            _ => Differentiability::Differentiable,
        }
    }

    /// `(da, db)` for the wanted operands: `add: (g, g)`, `sub: (g, -g)`, `mul: (g*b, g*a)`,
    /// `div: (g/b, -g*a/b^2)`, `pow: (g*b*a^(b-1), g*y*ln a)`; `max`/`min` route `g` to the
    /// operand chosen (`a` on ties).
    pub fn grad(
        self,
        cx: &mut GradContext,
        (a, b, y, g): (ValueId, ValueId, ValueId, ValueId),
        wanted: &[bool],
    ) -> GradResult {
        let want = |i: usize| wanted.get(i).copied().unwrap_or(false);
        let (da, db) = match self {
            BinaryOp::Add => (Some(g), Some(g)),
            BinaryOp::Sub => (Some(g), if want(1) { Some(cx.neg(g)?) } else { None }),
            BinaryOp::Mul => {
                let da = if want(0) { Some(cx.mul(g, b)?) } else { None };
                let db = if want(1) { Some(cx.mul(g, a)?) } else { None };
                (da, db)
            }
            BinaryOp::Div => {
                let da = if want(0) { Some(cx.div(g, b)?) } else { None };
                let db = if want(1) {
                    // -g * y / b, since y = a / b.
                    let gy = cx.mul(g, y)?;
                    let q = cx.div(gy, b)?;
                    Some(cx.neg(q)?)
                } else {
                    None
                };
                (da, db)
            }
            BinaryOp::Pow => {
                let da = if want(0) {
                    let one = cx.splat_like(b, 1.0)?;
                    let bm1 = cx.sub(b, one)?;
                    let p = cx.binary(BinaryOp::Pow, a, bm1)?;
                    let bp = cx.mul(b, p)?;
                    Some(cx.mul(g, bp)?)
                } else {
                    None
                };
                let db = if want(1) {
                    let ln = cx.unary(UnaryOp::Log, a)?;
                    let yl = cx.mul(y, ln)?;
                    Some(cx.mul(g, yl)?)
                } else {
                    None
                };
                (da, db)
            }
            BinaryOp::Max | BinaryOp::Min => {
                let cmp = if self == BinaryOp::Max { CompareOp::Ge } else { CompareOp::Le };
                let chose_a = cx.compare(cmp, a, b)?;
                let zero = cx.splat_like(g, 0.0)?;
                let da = if want(0) { Some(cx.select(chose_a, g, zero)?) } else { None };
                let db = if want(1) { Some(cx.select(chose_a, zero, g)?) } else { None };
                (da, db)
            }
            BinaryOp::And | BinaryOp::Or => {
                return Err(GradError::NotDifferentiable {
                    op: self.mnemonic(),
                    operand: 0,
                    reason: "it works on booleans".into(),
                })
            }
            BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
                return Err(GradError::NotDifferentiable {
                    op: self.mnemonic(),
                    operand: 0,
                    reason: "it works on integers".into(),
                })
            }
        };
        Ok(vec![da, db])
    }
}

/// `where(c, a, b)`: `da = where(c, g, 0)`, `db = where(c, 0, g)`; the condition has none.
pub fn grad_where(cx: &mut GradContext, cond: ValueId, g: ValueId, wanted: &[bool]) -> GradResult {
    let zero = cx.splat_like(g, 0.0)?;
    let da = if wanted[1] { Some(cx.select(cond, g, zero)?) } else { None };
    let db = if wanted[2] { Some(cx.select(cond, zero, g)?) } else { None };
    Ok(vec![None, da, db])
}

/// `cast` between float types: the adjoint is cast back to the operand's dtype (this is how
/// f32 master weights receive the gradients of a bf16 computation).
pub fn grad_cast(cx: &mut GradContext, x: ValueId, g: ValueId) -> Result<ValueId, GradError> {
    let to = cx.ty(x).dtype;
    if cx.ty(g).dtype == to {
        return Ok(g);
    }
    cx.add(super::Op::Cast { to }, &[g])
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, eval_err, f32s, f64s, i64s};
    use super::super::Op;
    use super::{BinaryOp, CompareOp, UnaryOp};
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    fn unary(u: UnaryOp, x: &Tensor) -> Tensor {
        eval1(&Op::Unary(u), &[x])
    }

    fn binary(b: BinaryOp, x: &Tensor, y: &Tensor) -> Tensor {
        eval1(&Op::Binary(b), &[x, y])
    }

    fn ints_of(dtype: DType, values: &[i64]) -> Tensor {
        Tensor::from_i64(dtype, vec![values.len()], values.to_vec())
    }

    #[test]
    fn activations_match_their_closed_forms() {
        let one = f64s(&[2], &[1.0, -1.0]);
        assert_close(&unary(UnaryOp::Gelu, &one), DType::F64, &[2], &[0.8413447460685429, -0.15865525393145707], 1e-15);
        assert_close(
            &unary(UnaryOp::GeluTanh, &one),
            DType::F64,
            &[2],
            &[0.8411919906082768, -0.15880800939172324],
            1e-15,
        );
        assert_close(&unary(UnaryOp::Silu, &one), DType::F64, &[2], &[0.7310585786300049, -0.2689414213699951], 1e-15);
        let x = f64s(&[3], &[-2.0, 0.0, 800.0]);
        // A large argument must not overflow `exp` into NaN.
        assert_close(&unary(UnaryOp::Sigmoid, &x), DType::F64, &[3], &[0.11920292202211755, 0.5, 1.0], 1e-15);
        let x = f64s(&[3], &[-1.5, f64::NAN, 2.0]);
        assert_close(&unary(UnaryOp::Relu, &x), DType::F64, &[3], &[0.0, f64::NAN, 2.0], 0.0);
        // x / (1 + |x|): -3/4, 0/1, 1/2, 0.5/1.5, and NaN stays NaN.
        let x = f64s(&[5], &[-3.0, 0.0, 1.0, 0.5, f64::NAN]);
        let expected = [-0.75, 0.0, 0.5, 1.0 / 3.0, f64::NAN];
        assert_close(&unary(UnaryOp::Softsign, &x), DType::F64, &[5], &expected, 1e-16);
    }

    #[test]
    fn erf_is_precise_across_its_range() {
        let x = f64s(&[5], &[0.5, -2.0, 3.0, 1e-10, 0.0]);
        let expected = [0.5204998778130465, -0.9953222650189527, 0.9999779095030014, 1.1283791670955126e-10, 0.0];
        assert_close(&unary(UnaryOp::Erf, &x), DType::F64, &[5], &expected, 1e-16);
    }

    #[test]
    fn float_math_rounds_the_f64_result_to_the_dtype() {
        let x = f32s(&[4], &[1.0, 4.0, 0.5, -3.0]);
        assert_close(&unary(UnaryOp::Exp, &f32s(&[1], &[1.0])), DType::F32, &[1], &[2.7182817459106445], 0.0);
        assert_close(&unary(UnaryOp::Sqrt, &x), DType::F32, &[4], &[1.0, 2.0, 0.7071067690849304, f64::NAN], 0.0);
        assert_close(&unary(UnaryOp::Rsqrt, &x), DType::F32, &[4], &[1.0, 0.5, 1.4142135381698608, f64::NAN], 0.0);
        assert_close(&unary(UnaryOp::Reciprocal, &x), DType::F32, &[4], &[1.0, 0.25, 2.0, -0.3333333432674408], 0.0);
        assert_close(
            &unary(UnaryOp::Log, &x),
            DType::F32,
            &[4],
            &[0.0, 1.3862943649291992, -0.6931471824645996, f64::NAN],
            0.0,
        );
        assert_close(
            &unary(UnaryOp::Tanh, &x),
            DType::F32,
            &[4],
            &[0.7615941762924194, 0.9993293285369873, 0.46211716532707214, -0.9950547814369202],
            0.0,
        );
        assert_close(&unary(UnaryOp::Neg, &x), DType::F32, &[4], &[-1.0, -4.0, -0.5, 3.0], 0.0);
        assert_close(&unary(UnaryOp::Abs, &x), DType::F32, &[4], &[1.0, 4.0, 0.5, 3.0], 0.0);
        let angles = f64s(&[2], &[0.0, std::f64::consts::FRAC_PI_2]);
        assert_close(&unary(UnaryOp::Sin, &angles), DType::F64, &[2], &[0.0, 1.0], 1e-16);
        assert_close(&unary(UnaryOp::Cos, &angles), DType::F64, &[2], &[1.0, 6.123233995736766e-17], 1e-16);
        // acos/asin/atan of 0, 1/2, 1 and -1: pi/2, pi/3, 0, pi; 0, pi/6, pi/2, -pi/2; 0, atan(1/2), pi/4, -pi/4.
        use std::f64::consts::{FRAC_PI_2, FRAC_PI_3, FRAC_PI_4, FRAC_PI_6, PI};
        let x = f64s(&[4], &[0.0, 0.5, 1.0, -1.0]);
        assert_close(&unary(UnaryOp::Acos, &x), DType::F64, &[4], &[FRAC_PI_2, FRAC_PI_3, 0.0, PI], 1e-15);
        assert_close(&unary(UnaryOp::Asin, &x), DType::F64, &[4], &[0.0, FRAC_PI_6, FRAC_PI_2, -FRAC_PI_2], 1e-15);
        let atan_half = 0.4636476090008061;
        assert_close(&unary(UnaryOp::Atan, &x), DType::F64, &[4], &[0.0, atan_half, FRAC_PI_4, -FRAC_PI_4], 1e-15);
        // Outside [-1, 1] acos and asin are NaN.
        let outside = f64s(&[1], &[1.5]);
        assert_close(&unary(UnaryOp::Acos, &outside), DType::F64, &[1], &[f64::NAN], 0.0);
        // Round takes halves to even; ceil/floor go up/down, -0.5 rounds to -0.
        let x = f64s(&[6], &[0.5, 1.5, 2.5, -0.5, -1.7, 2.2]);
        assert_close(&unary(UnaryOp::Round, &x), DType::F64, &[6], &[0.0, 2.0, 2.0, -0.0, -2.0, 2.0], 0.0);
        assert_close(&unary(UnaryOp::Ceil, &x), DType::F64, &[6], &[1.0, 2.0, 3.0, -0.0, -1.0, 3.0], 0.0);
        assert_close(&unary(UnaryOp::Floor, &x), DType::F64, &[6], &[0.0, 1.0, 2.0, -1.0, -2.0, 2.0], 0.0);
    }

    #[test]
    fn bf16_results_round_half_to_even() {
        let a = Tensor::from_f64(DType::BF16, vec![2], vec![1.0, 1.0]);
        let b = Tensor::from_f64(DType::BF16, vec![2], vec![1.0 / 256.0, 3.0 / 256.0]);
        // 1 + 2^-8 and 1 + 3 * 2^-8 lie halfway between bf16 neighbours (spacing 2^-7).
        assert_close(&binary(BinaryOp::Add, &a, &b), DType::BF16, &[2], &[1.0, 1.015625], 0.0);
    }

    #[test]
    fn float_binary_ops_and_nan_propagation() {
        let a = f32s(&[3], &[2.0, -1.0, f64::NAN]);
        let b = f32s(&[3], &[3.0, 4.0, 1.0]);
        assert_close(&binary(BinaryOp::Sub, &a, &b), DType::F32, &[3], &[-1.0, -5.0, f64::NAN], 0.0);
        assert_close(&binary(BinaryOp::Mul, &a, &b), DType::F32, &[3], &[6.0, -4.0, f64::NAN], 0.0);
        assert_close(&binary(BinaryOp::Div, &a, &b), DType::F32, &[3], &[0.6666666865348816, -0.25, f64::NAN], 0.0);
        assert_close(&binary(BinaryOp::Pow, &a, &b), DType::F32, &[3], &[8.0, 1.0, f64::NAN], 0.0);
        assert_close(&binary(BinaryOp::Max, &a, &b), DType::F32, &[3], &[3.0, 4.0, f64::NAN], 0.0);
        assert_close(&binary(BinaryOp::Min, &a, &b), DType::F32, &[3], &[2.0, -1.0, f64::NAN], 0.0);
        let zero = f32s(&[3], &[0.0, 0.0, 0.0]);
        assert_close(&binary(BinaryOp::Div, &b, &zero), DType::F32, &[3], &[f64::INFINITY; 3], 0.0);
    }

    #[test]
    fn integer_division_truncates_toward_zero_and_rejects_zero() {
        let a = ints_of(DType::I32, &[7, -7, 7, -7]);
        let b = ints_of(DType::I32, &[2, 2, -2, -2]);
        assert_eq!(binary(BinaryOp::Div, &a, &b).to_i64_vec(), [3, -3, -3, 3]);
        let zero = ints_of(DType::I32, &[1, 0, 1, 1]);
        assert_eq!(eval_err(&Op::Binary(BinaryOp::Div), &[&a, &zero]), "integer division by zero");
        // The one overflowing quotient wraps instead of trapping.
        let min = i64s(&[1], &[i64::MIN]);
        assert_eq!(binary(BinaryOp::Div, &min, &i64s(&[1], &[-1])).to_i64_vec(), [i64::MIN]);
    }

    #[test]
    fn integer_arithmetic_wraps_to_the_dtype() {
        let a = ints_of(DType::I8, &[100, -128, 127]);
        let b = ints_of(DType::I8, &[100, 1, 2]);
        assert_eq!(binary(BinaryOp::Add, &a, &b).to_i64_vec(), [-56, -127, -127]);
        assert_eq!(binary(BinaryOp::Sub, &a, &b).to_i64_vec(), [0, 127, 125]);
        assert_eq!(binary(BinaryOp::Mul, &a, &b).to_i64_vec(), [16, -128, -2]);
        assert_eq!(binary(BinaryOp::Max, &a, &b).to_i64_vec(), [100, 1, 127]);
        assert_eq!(binary(BinaryOp::Min, &a, &b).to_i64_vec(), [100, -128, 2]);
        assert_eq!(unary(UnaryOp::Neg, &a).to_i64_vec(), [-100, -128, -127]);
        assert_eq!(unary(UnaryOp::Abs, &a).to_i64_vec(), [100, -128, 127]);
        assert_eq!(unary(UnaryOp::Relu, &ints_of(DType::I32, &[-3, 4])).to_i64_vec(), [0, 4]);
        let big = ints_of(DType::I32, &[i32::MAX as i64]);
        assert_eq!(binary(BinaryOp::Add, &big, &ints_of(DType::I32, &[1])).to_i64_vec(), [i32::MIN as i64]);
    }

    #[test]
    fn boolean_logic() {
        let a = ints_of(DType::Bool, &[0, 0, 1, 1]);
        let b = ints_of(DType::Bool, &[0, 1, 0, 1]);
        assert_eq!(binary(BinaryOp::And, &a, &b).to_i64_vec(), [0, 0, 0, 1]);
        assert_eq!(binary(BinaryOp::Or, &a, &b).to_i64_vec(), [0, 1, 1, 1]);
        let not = unary(UnaryOp::Not, &a);
        assert_eq!((not.dtype, not.to_i64_vec()), (DType::Bool, vec![1, 1, 0, 0]));
    }

    #[test]
    fn comparisons_give_bool_and_nan_compares_unequal() {
        let a = f32s(&[3], &[1.0, 2.0, f64::NAN]);
        let b = f32s(&[3], &[2.0, 2.0, f64::NAN]);
        let expect = |c: CompareOp, want: [i64; 3]| {
            let t = eval1(&Op::Compare(c), &[&a, &b]);
            assert_eq!((t.dtype, t.to_i64_vec()), (DType::Bool, want.to_vec()), "{}", c.mnemonic());
        };
        expect(CompareOp::Eq, [0, 1, 0]);
        expect(CompareOp::Ne, [1, 0, 1]);
        expect(CompareOp::Lt, [1, 0, 0]);
        expect(CompareOp::Le, [1, 1, 0]);
        expect(CompareOp::Gt, [0, 0, 0]);
        expect(CompareOp::Ge, [0, 1, 0]);
        let i = eval1(&Op::Compare(CompareOp::Gt), &[&i64s(&[2], &[5, -5]), &i64s(&[2], &[3, 3])]);
        assert_eq!(i.to_i64_vec(), [1, 0]);
    }

    #[test]
    fn where_selects_per_element() {
        let cond = ints_of(DType::Bool, &[1, 0, 1]);
        let a = f32s(&[3], &[1.0, 2.0, 3.0]);
        let b = f32s(&[3], &[-1.0, -2.0, -3.0]);
        assert_close(&eval1(&Op::Where, &[&cond, &a, &b]), DType::F32, &[3], &[1.0, -2.0, 3.0], 0.0);
        let ia = i64s(&[3], &[1, 2, 3]);
        let ib = i64s(&[3], &[7, 8, 9]);
        assert_eq!(eval1(&Op::Where, &[&cond, &ia, &ib]).to_i64_vec(), [1, 8, 3]);
    }

    #[test]
    fn cast_truncates_wraps_and_rounds() {
        let x = f32s(&[4], &[-1.7, 2.9, 300.0, 0.0]);
        assert_eq!(eval1(&Op::Cast { to: DType::I32 }, &[&x]).to_i64_vec(), [-1, 2, 300, 0]);
        assert_eq!(eval1(&Op::Cast { to: DType::I8 }, &[&x]).to_i64_vec(), [-1, 2, 44, 0]);
        assert_eq!(eval1(&Op::Cast { to: DType::Bool }, &[&x]).to_i64_vec(), [1, 1, 1, 0]);
        let i = i64s(&[2], &[257, -3]);
        assert_close(&eval1(&Op::Cast { to: DType::BF16 }, &[&i]), DType::BF16, &[2], &[256.0, -3.0], 0.0);
    }
}
