//! Elementwise ONNX ops: arithmetic, comparisons and logic (with implicit broadcasting made
//! explicit), unary math, activations (native tsr ops or decompositions), `Where`, `Clip`,
//! `Cast`/`CastLike`, and the pass-through ops `Identity` and inference-mode `Dropout`.

use super::{invalid, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::tensor;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::symbolic::DimExpr;

pub(super) fn register(r: &mut Registry) {
    r.insert("Add", |imp, cx| binary(imp, cx, BinaryOp::Add));
    r.insert("Sub", |imp, cx| binary(imp, cx, BinaryOp::Sub));
    r.insert("Mul", |imp, cx| binary(imp, cx, BinaryOp::Mul));
    r.insert("Div", |imp, cx| binary(imp, cx, BinaryOp::Div));
    r.insert("Pow", pow);
    r.insert("Mod", modulo);
    r.insert("And", |imp, cx| binary(imp, cx, BinaryOp::And));
    r.insert("Or", |imp, cx| binary(imp, cx, BinaryOp::Or));
    r.insert("Xor", |imp, cx| compare(imp, cx, CompareOp::Ne));
    r.insert("BitwiseAnd", |imp, cx| binary(imp, cx, BinaryOp::BitAnd));
    r.insert("BitwiseOr", |imp, cx| binary(imp, cx, BinaryOp::BitOr));
    r.insert("BitwiseXor", |imp, cx| binary(imp, cx, BinaryOp::BitXor));
    r.insert("BitShift", bit_shift);
    r.insert("Max", |imp, cx| variadic(imp, cx, BinaryOp::Max));
    r.insert("Min", |imp, cx| variadic(imp, cx, BinaryOp::Min));
    r.insert("Sum", |imp, cx| variadic(imp, cx, BinaryOp::Add));
    r.insert("Mean", mean);
    r.insert("Equal", |imp, cx| compare(imp, cx, CompareOp::Eq));
    r.insert("Less", |imp, cx| compare(imp, cx, CompareOp::Lt));
    r.insert("LessOrEqual", |imp, cx| compare(imp, cx, CompareOp::Le));
    r.insert("Greater", |imp, cx| compare(imp, cx, CompareOp::Gt));
    r.insert("GreaterOrEqual", |imp, cx| compare(imp, cx, CompareOp::Ge));
    // Every tsr unary op that names an ONNX op in its table row.
    for op in UnaryOp::ALL.iter().filter_map(|u| u.onnx_name()) {
        r.insert(op, native_unary);
    }
    r.insert("Tan", tan);
    r.insert("Sinh", |imp, cx| hyperbolic(imp, cx, Hyperbolic::Sinh));
    r.insert("Cosh", |imp, cx| hyperbolic(imp, cx, Hyperbolic::Cosh));
    r.insert("Asinh", |imp, cx| hyperbolic(imp, cx, Hyperbolic::Asinh));
    r.insert("Acosh", |imp, cx| hyperbolic(imp, cx, Hyperbolic::Acosh));
    r.insert("Atanh", |imp, cx| hyperbolic(imp, cx, Hyperbolic::Atanh));
    r.insert("Gelu", gelu);
    r.insert("Sign", sign);
    r.insert("IsNaN", is_nan);
    r.insert("IsInf", is_inf);
    r.insert("LeakyRelu", leaky_relu);
    r.insert("PRelu", prelu);
    r.insert("Elu", elu);
    r.insert("Selu", selu);
    r.insert("Celu", celu);
    r.insert("ThresholdedRelu", thresholded_relu);
    r.insert("HardSigmoid", hard_sigmoid);
    r.insert("HardSwish", hard_swish);
    r.insert("Softplus", softplus);
    r.insert("Mish", mish);
    r.insert("Swish", swish);
    r.insert("SwiGLU", swiglu);
    r.insert("Shrink", shrink);
    r.insert("Where", where_);
    r.insert("Clip", clip);
    r.insert("Cast", cast);
    r.insert("CastLike", cast_like);
    r.insert("Identity", identity);
    r.insert("Dropout", dropout);
}

/// `BitShift` with `direction` `LEFT` or `RIGHT` (on unsigned integers).
fn bit_shift(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    match cx.attrs.string("direction", "")?.as_str() {
        "LEFT" => binary(imp, cx, BinaryOp::ShiftLeft),
        "RIGHT" => binary(imp, cx, BinaryOp::ShiftRight),
        other => super::invalid(format!("BitShift direction must be LEFT or RIGHT, got '{other}'")),
    }
}

fn binary(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> BuildResult<Vec<Slot>> {
    if let Some(operands) = imp.shape_operands(cx, 0..2)? {
        let elems = shape_elementwise(&operands, |a, b| shape_binary(op, a, b))?;
        return Ok(vec![imp.shape_slot(elems, operands.iter().all(|(_, scalar)| *scalar))]);
    }
    let (a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    one(imp.binary(op, a, b)?)
}

/// Shape values broadcast against each other: equal lengths, or one of length 1.
fn shape_elementwise(
    operands: &[(Vec<DimExpr>, bool)],
    f: impl Fn(&DimExpr, &DimExpr) -> BuildResult<DimExpr>,
) -> BuildResult<Vec<DimExpr>> {
    let [(a, _), (b, _)] = operands else { return invalid("expected two operands") };
    let n = a.len().max(b.len());
    if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
        return invalid(format!("shape values of lengths {} and {} do not broadcast", a.len(), b.len()));
    }
    (0..n).map(|i| f(&a[i.min(a.len() - 1)], &b[i.min(b.len() - 1)])).collect()
}

/// `a op b` for every assignment of the symbols to sizes `>= 1`, when that is one answer.
fn decide_comparison(op: CompareOp, a: &DimExpr, b: &DimExpr) -> Option<bool> {
    match op {
        CompareOp::Eq => a.decide_equal(b),
        CompareOp::Ne => a.decide_equal(b).map(|equal| !equal),
        CompareOp::Lt => a.decide_less(b),
        CompareOp::Gt => b.decide_less(a),
        CompareOp::Le => b.decide_less(a).map(|greater| !greater),
        CompareOp::Ge => a.decide_less(b).map(|less| !less),
    }
}

/// Integer arithmetic on dimension expressions, as exporters apply it to `Shape` results:
/// division by a positive constant floors (dimensions are non-negative, so this is also ONNX's
/// truncating integer division); `Min`/`Max` only where the order is the same for every size.
fn shape_binary(op: BinaryOp, a: &DimExpr, b: &DimExpr) -> BuildResult<DimExpr> {
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| super::BuildError::Invalid(e.to_string());
    let undecided = || unsupported(format!("{op:?} of the dimensions {a} and {b}, whose order depends on their sizes"));
    match op {
        BinaryOp::Add => a.add(b).map_err(symbolic),
        BinaryOp::Sub => a.sub(b).map_err(symbolic),
        BinaryOp::Mul => a.mul(b).map_err(symbolic),
        BinaryOp::Div => match b.as_const() {
            Some(d) if d > 0 => a.floordiv(d).map_err(symbolic),
            _ => match a.div_exact(b) {
                Some(q) => Ok(q),
                None => unsupported(format!("dividing the dimension {a} by {b}")),
            },
        },
        // The order is decided as comparisons are: where it is the same for every size >= 1.
        BinaryOp::Min | BinaryOp::Max => match (a == b, a.decide_less(b)) {
            (true, _) => Ok(a.clone()),
            (false, Some(a_smaller)) => Ok(if a_smaller == (op == BinaryOp::Min) { a.clone() } else { b.clone() }),
            (false, None) => undecided(),
        },
        other => unsupported(format!("{other:?} on shape values")),
    }
}

fn compare(imp: &mut Importer, cx: &NodeCx, op: CompareOp) -> BuildResult<Vec<Slot>> {
    if let Some(operands) = imp.shape_operands(cx, 0..2)? {
        // Comparisons of shape values are decided at import time, where they hold for every
        // size: the documented assumption is that each symbol is at least 1, so
        // `Equal(seq, -1)` is false and `Less(0, seq)` true. What depends on the sizes is
        // computed at run time from the bound sizes, never guessed; an `If` on it is a run-time
        // conditional whose branches must then hold for every size (see control.rs).
        let undecided =
            shape_elementwise(&operands, |a, b| Ok(DimExpr::constant(decide_comparison(op, a, b).is_none() as i64)))?;
        if undecided.iter().any(|e| e.as_const() == Some(1)) {
            let [(a, a_scalar), (b, b_scalar)] = operands.as_slice() else {
                return invalid("expected two operands");
            };
            let show = |elems: &[DimExpr], scalar: bool| match elems {
                [e] if scalar => e.to_string(),
                _ => crate::onnx::import::show_sym(elems),
            };
            let text = format!("{op:?} of {} and {}", show(a, *a_scalar), show(b, *b_scalar));
            return one(imp.size_comparison(op, (a, *a_scalar), (b, *b_scalar), text)?);
        }
        let elems = shape_elementwise(&operands, |a, b| match decide_comparison(op, a, b) {
            Some(holds) => Ok(DimExpr::constant(holds as i64)),
            None => invalid(format!("{op:?} of the dimensions {a} and {b} was decided, then not")),
        })?;
        let bits: Vec<i64> = elems.iter().filter_map(DimExpr::as_const).collect();
        let shape = if operands.iter().all(|(_, scalar)| *scalar) { vec![] } else { vec![bits.len()] };
        return one(imp.constant(tessera_ir::tensor::Tensor::from_i64(DType::Bool, shape, bits)));
    }
    let (a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    one(imp.compare(op, a, b)?)
}

/// A node whose op type names a tsr unary op ([`UnaryOp::onnx_name`]).
fn native_unary(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let op_type = cx.proto.op_type();
    let Some(op) = UnaryOp::from_onnx_name(op_type) else {
        return invalid(format!("'{op_type}' is not a tsr unary op"));
    };
    let x = imp.value(cx, 0)?;
    one(imp.unary(op, x)?)
}

/// The variadic ops fold left, broadcasting as they go (ONNX broadcasts all inputs together,
/// which gives the same result).
fn variadic(imp: &mut Importer, cx: &NodeCx, op: BinaryOp) -> BuildResult<Vec<Slot>> {
    if cx.num_inputs() == 2 {
        return binary(imp, cx, op);
    }
    let mut acc = imp.value(cx, 0)?;
    for i in 1..cx.num_inputs() {
        let x = imp.value(cx, i)?;
        acc = imp.binary(op, acc, x)?;
    }
    one(acc)
}

fn mean(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let sum = variadic(imp, cx, BinaryOp::Add)?;
    let Some(Slot::Value(sum)) = sum.first().cloned() else { return invalid("Mean needs inputs") };
    one(imp.binary_scalar(BinaryOp::Div, sum, cx.num_inputs() as f64)?)
}

/// `Pow` lets the exponent have another type; tsr's `pow` is float-only, so integer bases are
/// computed in f64 and cast back (exact for the integer results f64 can hold).
fn pow(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, y) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let dtype = imp.ty(x).dtype;
    if dtype.is_float() {
        let y = imp.cast(y, dtype)?;
        return one(imp.binary(BinaryOp::Pow, x, y)?);
    }
    if dtype == DType::Bool {
        return invalid("Pow is not defined on booleans");
    }
    let (xf, yf) = (imp.cast(x, DType::F64)?, imp.cast(y, DType::F64)?);
    let p = imp.binary(BinaryOp::Pow, xf, yf)?;
    one(imp.cast(p, dtype)?)
}

/// `Mod` on integers: with `fmod = 0` the remainder takes the divisor's sign (Python `%`), with
/// `fmod = 1` the dividend's (C `%`). Built from truncating division.
fn modulo(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let fmod = cx.attrs.int("fmod", 0)?;
    if !(0..=1).contains(&fmod) {
        return invalid(format!("fmod = {fmod} (must be 0 or 1)"));
    }
    // A size modulo a window (Swin's `(window - width % window) % window` pad) stays a size
    // expression, so what reads it (a pad, a reshape) still imports symbolically.
    if let Some(operands) = imp.shape_operands(cx, 0..2)? {
        let elems = shape_elementwise(&operands, |a, b| shape_modulo(imp, a, b, fmod == 1))?;
        return Ok(vec![imp.shape_slot(elems, operands.iter().all(|(_, scalar)| *scalar))]);
    }
    let (a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let dtype = imp.ty(a).dtype;
    if dtype.is_float() {
        return one(float_mod(imp, a, b, fmod == 0)?);
    }
    if !dtype.is_int() {
        return invalid(format!("Mod on {dtype}"));
    }
    let q = imp.binary(BinaryOp::Div, a, b)?;
    let qb = imp.binary(BinaryOp::Mul, q, b)?;
    let r = imp.binary(BinaryOp::Sub, a, qb)?;
    if fmod == 1 {
        return one(r);
    }
    // Python semantics: when r != 0 and sign(r) != sign(b), r + b.
    let zero = imp.scalar(dtype, 0.0);
    let r_nonzero = imp.compare(CompareOp::Ne, r, zero)?;
    let r_neg = imp.compare(CompareOp::Lt, r, zero)?;
    let b_neg = imp.compare(CompareOp::Lt, b, zero)?;
    let signs_differ = imp.compare(CompareOp::Ne, r_neg, b_neg)?;
    let fix = imp.binary(BinaryOp::And, r_nonzero, signs_differ)?;
    let rb = imp.binary(BinaryOp::Add, r, b)?;
    one(imp.select(fix, rb, r)?)
}

/// `a mod b` of shape values for a positive constant `b`: Python's sign (of the divisor) is the
/// expression's `mod`; C's (`fmod`, the sign of `a`) is the same where `a` is never negative.
/// A constant `a >= 0` modulo a size `b` (Swin's roll shifts by `1 mod height`) is `a` where
/// `b > a`, and Python's `-k mod b` is `b - k` where `b >= k`: known from the symbols' bounds, or
/// assumed and checked at run time where every non-empty `b` is that large
/// ([`Importer::require_at_least`]).
fn shape_modulo(imp: &Importer, a: &DimExpr, b: &DimExpr, c_sign: bool) -> BuildResult<DimExpr> {
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| super::BuildError::Invalid(e.to_string());
    match (a.as_const(), b.as_const()) {
        (_, Some(d)) if d > 0 && (!c_sign || a.lower_bound().is_some_and(|least| least >= 0)) => {
            a.modulo(d).map_err(symbolic)
        }
        (Some(n), None) if (0..i64::MAX).contains(&n) => {
            imp.require_at_least(b, n + 1, || format!("the dimension {a} modulo {b}"))?;
            Ok(a.clone())
        }
        // Python's `-k mod b` is `b - k` where `b >= k` (Swin's reverse roll shifts by `-1 mod
        // height`).
        (Some(n), None) if n < 0 && n > i64::MIN && !c_sign => {
            imp.require_at_least(b, -n, || format!("the dimension {a} modulo {b}"))?;
            b.add(a).map_err(symbolic)
        }
        _ => unsupported(format!("the dimension {a} modulo {b}")),
    }
}

/// Float `Mod`: `a - trunc(a / b) * b` (C `fmod`, the sign of `a`) or, with `floor_division`
/// (ONNX `fmod = 0`, opset 28 on floats; NumPy `mod`), that remainder plus `b` when it is
/// non-zero and its sign differs from `b`'s (the sign of `b`). Special cases as the spec lists
/// them: an infinite `a` or a zero `b` gives NaN (the arithmetic does), and an infinite `b`
/// with a finite `a` gives `a` when their signs agree or `a` is 0, else `b` for floor division
/// (`a` for fmod).
fn float_mod(imp: &mut Importer, a: ValueId, b: ValueId, floor_division: bool) -> BuildResult<ValueId> {
    let operands = imp.broadcast_all(&[a, b])?;
    let (a, b) = (operands[0], operands[1]);
    let q = imp.binary(BinaryOp::Div, a, b)?;
    let (up, down) = (imp.unary(UnaryOp::Ceil, q)?, imp.unary(UnaryOp::Floor, q)?);
    let zero = imp.full_like(a, 0.0)?;
    let q_negative = imp.compare(CompareOp::Lt, q, zero)?;
    let truncated = imp.select(q_negative, up, down)?;
    let tb = imp.binary(BinaryOp::Mul, truncated, b)?;
    let mut r = imp.binary(BinaryOp::Sub, a, tb)?;
    let a_negative = imp.compare(CompareOp::Lt, a, zero)?;
    let b_negative = imp.compare(CompareOp::Lt, b, zero)?;
    let signs_differ = imp.compare(CompareOp::Ne, a_negative, b_negative)?;
    let a_is_zero = imp.compare(CompareOp::Eq, a, zero)?;
    if floor_division {
        let r_nonzero = imp.compare(CompareOp::Ne, r, zero)?;
        let r_negative = imp.compare(CompareOp::Lt, r, zero)?;
        let r_differs = imp.compare(CompareOp::Ne, r_negative, b_negative)?;
        let fix = imp.binary(BinaryOp::And, r_nonzero, r_differs)?;
        let rb = imp.binary(BinaryOp::Add, r, b)?;
        r = imp.select(fix, rb, r)?;
    }
    // b = +-inf, a finite: a / b is (-)0 and 0 * inf is NaN; the spec's value instead.
    let inf = imp.full_like(a, f64::INFINITY)?;
    let (abs_a, abs_b) = (imp.unary(UnaryOp::Abs, a)?, imp.unary(UnaryOp::Abs, b)?);
    let b_infinite = imp.compare(CompareOp::Eq, abs_b, inf)?;
    let a_finite = imp.compare(CompareOp::Lt, abs_a, inf)?;
    let infinite_case = imp.binary(BinaryOp::And, b_infinite, a_finite)?;
    let at_infinity = if floor_division {
        let keep_a = imp.unary(UnaryOp::Not, signs_differ)?;
        let keep_a = imp.binary(BinaryOp::Or, keep_a, a_is_zero)?;
        imp.select(keep_a, a, b)?
    } else {
        a
    };
    imp.select(infinite_case, at_infinity, r)
}

fn float_input(imp: &mut Importer, cx: &NodeCx, i: usize) -> BuildResult<ValueId> {
    let x = imp.value(cx, i)?;
    let dtype = imp.ty(x).dtype;
    if !dtype.is_float() {
        return invalid(format!("needs a float input, got {dtype}"));
    }
    Ok(x)
}

fn tan(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let s = imp.unary(UnaryOp::Sin, x)?;
    let c = imp.unary(UnaryOp::Cos, x)?;
    one(imp.binary(BinaryOp::Div, s, c)?)
}

#[derive(Clone, Copy)]
enum Hyperbolic {
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
}

/// The hyperbolic functions from `exp` and `log`: `sinh = (e^x - e^-x) / 2`,
/// `asinh = log(x + sqrt(x^2 + 1))`, `atanh = log((1 + x) / (1 - x)) / 2`, ...
fn hyperbolic(imp: &mut Importer, cx: &NodeCx, f: Hyperbolic) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let y = match f {
        Hyperbolic::Sinh | Hyperbolic::Cosh => {
            let e = imp.unary(UnaryOp::Exp, x)?;
            let nx = imp.unary(UnaryOp::Neg, x)?;
            let en = imp.unary(UnaryOp::Exp, nx)?;
            let op = if matches!(f, Hyperbolic::Sinh) { BinaryOp::Sub } else { BinaryOp::Add };
            let s = imp.binary(op, e, en)?;
            imp.binary_scalar(BinaryOp::Mul, s, 0.5)?
        }
        Hyperbolic::Asinh | Hyperbolic::Acosh => {
            let sq = imp.binary(BinaryOp::Mul, x, x)?;
            let shift = if matches!(f, Hyperbolic::Asinh) { 1.0 } else { -1.0 };
            let inner = imp.binary_scalar(BinaryOp::Add, sq, shift)?;
            let root = imp.unary(UnaryOp::Sqrt, inner)?;
            let s = imp.binary(BinaryOp::Add, x, root)?;
            imp.unary(UnaryOp::Log, s)?
        }
        Hyperbolic::Atanh => {
            let one_plus = imp.binary_scalar(BinaryOp::Add, x, 1.0)?;
            let nx = imp.unary(UnaryOp::Neg, x)?;
            let one_minus = imp.binary_scalar(BinaryOp::Add, nx, 1.0)?;
            let q = imp.binary(BinaryOp::Div, one_plus, one_minus)?;
            let l = imp.unary(UnaryOp::Log, q)?;
            imp.binary_scalar(BinaryOp::Mul, l, 0.5)?
        }
    };
    one(y)
}

fn gelu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    match cx.attrs.string("approximate", "none")?.as_str() {
        "none" => one(imp.unary(UnaryOp::Gelu, x)?),
        "tanh" => one(imp.unary(UnaryOp::GeluTanh, x)?),
        other => invalid(format!("unknown approximate = '{other}'")),
    }
}

fn sign(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let dtype = imp.ty(x).dtype;
    let zero = imp.scalar(dtype, 0.0);
    let pos = imp.compare(CompareOp::Gt, x, zero)?;
    let neg = imp.compare(CompareOp::Lt, x, zero)?;
    let (p1, m1) = (imp.scalar(dtype, 1.0), imp.scalar(dtype, -1.0));
    let inner = imp.select(neg, m1, zero)?;
    one(imp.select(pos, p1, inner)?)
}

fn is_nan(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    one(imp.compare(CompareOp::Ne, x, x)?)
}

fn is_inf(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let (pos, neg) = (cx.attrs.int("detect_positive", 1)?, cx.attrs.int("detect_negative", 1)?);
    let dtype = imp.ty(x).dtype;
    let inf = imp.scalar(dtype, f64::INFINITY);
    let ninf = imp.scalar(dtype, f64::NEG_INFINITY);
    let is_pos = imp.compare(CompareOp::Eq, x, inf)?;
    let is_neg = imp.compare(CompareOp::Eq, x, ninf)?;
    match (pos != 0, neg != 0) {
        (true, true) => one(imp.binary(BinaryOp::Or, is_pos, is_neg)?),
        (true, false) => one(is_pos),
        (false, true) => one(is_neg),
        (false, false) => {
            let no = imp.compare(CompareOp::Ne, x, x)?;
            let f = imp.compare(CompareOp::Eq, x, x)?;
            one(imp.binary(BinaryOp::And, no, f)?)
        }
    }
}

/// `where(x < 0, alpha * x, x)`.
fn leaky_relu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let alpha = cx.attrs.float("alpha", 0.01)?;
    let zero = imp.scalar(imp.ty(x).dtype, 0.0);
    let neg = imp.compare(CompareOp::Lt, x, zero)?;
    let ax = imp.binary_scalar(BinaryOp::Mul, x, alpha)?;
    one(imp.select(neg, ax, x)?)
}

/// `where(x < 0, slope * x, x)` with `slope` broadcast to `x` (unidirectionally).
fn prelu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let slope = imp.value(cx, 1)?;
    let zero = imp.scalar(imp.ty(x).dtype, 0.0);
    let neg = imp.compare(CompareOp::Lt, x, zero)?;
    let sx = imp.binary(BinaryOp::Mul, x, slope)?;
    one(imp.select(neg, sx, x)?)
}

/// The type in which an op defined by one formula (Elu, Selu, Celu) evaluates its steps: f32 for
/// the narrow floats (f16, bf16, f8), whose result is the formula's value rounded once to T; a
/// rounding after each step would differ by an ulp or more (`exp(x)` rounded to bf16 before
/// `- 1` loses the low bits that `expm1` keeps, as onnx's reference and ml_dtypes compute it).
fn formula_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2 => DType::F32,
        wide => wide,
    }
}

/// Reads input 0 as a float and widens it to [`formula_dtype`]; returns it with the input's type.
fn formula_input(imp: &mut Importer, cx: &NodeCx) -> BuildResult<(ValueId, DType)> {
    let x = float_input(imp, cx, 0)?;
    let dtype = imp.ty(x).dtype;
    Ok((imp.cast(x, formula_dtype(dtype))?, dtype))
}

/// `where(x < 0, alpha * (exp(x) - 1), x)`, evaluated in [`formula_dtype`].
fn elu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, dtype) = formula_input(imp, cx)?;
    let alpha = cx.attrs.float("alpha", 1.0)?;
    let zero = imp.scalar(imp.ty(x).dtype, 0.0);
    let neg = imp.compare(CompareOp::Lt, x, zero)?;
    let e = imp.unary(UnaryOp::Exp, x)?;
    let em1 = imp.binary_scalar(BinaryOp::Sub, e, 1.0)?;
    let a = imp.binary_scalar(BinaryOp::Mul, em1, alpha)?;
    let y = imp.select(neg, a, x)?;
    one(imp.cast(y, dtype)?)
}

/// `gamma * where(x <= 0, alpha * exp(x) - alpha, x)`, evaluated in [`formula_dtype`].
fn selu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, dtype) = formula_input(imp, cx)?;
    let alpha = cx.attrs.float("alpha", 1.673_263_192_176_818_8)?;
    let gamma = cx.attrs.float("gamma", 1.050_701_022_148_132_3)?;
    let zero = imp.scalar(imp.ty(x).dtype, 0.0);
    let le = imp.compare(CompareOp::Le, x, zero)?;
    let e = imp.unary(UnaryOp::Exp, x)?;
    let ae = imp.binary_scalar(BinaryOp::Mul, e, alpha)?;
    let neg_part = imp.binary_scalar(BinaryOp::Sub, ae, alpha)?;
    let inner = imp.select(le, neg_part, x)?;
    let y = imp.binary_scalar(BinaryOp::Mul, inner, gamma)?;
    one(imp.cast(y, dtype)?)
}

/// `max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`, evaluated in [`formula_dtype`].
fn celu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, dtype) = formula_input(imp, cx)?;
    let alpha = cx.attrs.float("alpha", 1.0)?;
    let xa = imp.binary_scalar(BinaryOp::Div, x, alpha)?;
    let e = imp.unary(UnaryOp::Exp, xa)?;
    let em1 = imp.binary_scalar(BinaryOp::Sub, e, 1.0)?;
    let a = imp.binary_scalar(BinaryOp::Mul, em1, alpha)?;
    let neg = imp.binary_scalar(BinaryOp::Min, a, 0.0)?;
    let pos = imp.binary_scalar(BinaryOp::Max, x, 0.0)?;
    let y = imp.binary(BinaryOp::Add, pos, neg)?;
    one(imp.cast(y, dtype)?)
}

/// `where(x > alpha, x, 0)`.
fn thresholded_relu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let alpha = cx.attrs.float("alpha", 1.0)?;
    let dtype = imp.ty(x).dtype;
    let a = imp.scalar(dtype, alpha);
    let gt = imp.compare(CompareOp::Gt, x, a)?;
    let zero = imp.scalar(dtype, 0.0);
    one(imp.select(gt, x, zero)?)
}

/// `max(0, min(1, alpha * x + beta))`.
fn hard_sigmoid_of(imp: &mut Importer, x: ValueId, alpha: f64, beta: f64) -> BuildResult<ValueId> {
    let ax = imp.binary_scalar(BinaryOp::Mul, x, alpha)?;
    let axb = imp.binary_scalar(BinaryOp::Add, ax, beta)?;
    let lo = imp.binary_scalar(BinaryOp::Min, axb, 1.0)?;
    imp.binary_scalar(BinaryOp::Max, lo, 0.0)
}

fn hard_sigmoid(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let (alpha, beta) = (cx.attrs.float("alpha", 0.2)?, cx.attrs.float("beta", 0.5)?);
    one(hard_sigmoid_of(imp, x, alpha, beta)?)
}

/// `x * hard_sigmoid(x)` with alpha = 1/6, beta = 0.5.
fn hard_swish(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let h = hard_sigmoid_of(imp, x, 1.0 / 6.0, 0.5)?;
    one(imp.binary(BinaryOp::Mul, x, h)?)
}

/// `log(exp(x) + 1)`.
fn softplus_of(imp: &mut Importer, x: ValueId) -> BuildResult<ValueId> {
    let e = imp.unary(UnaryOp::Exp, x)?;
    let e1 = imp.binary_scalar(BinaryOp::Add, e, 1.0)?;
    imp.unary(UnaryOp::Log, e1)
}

fn softplus(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    one(softplus_of(imp, x)?)
}

/// `x * tanh(softplus(x))`.
fn mish(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let sp = softplus_of(imp, x)?;
    let t = imp.unary(UnaryOp::Tanh, sp)?;
    one(imp.binary(BinaryOp::Mul, x, t)?)
}

/// `x * sigmoid(alpha * x)`; alpha = 1 is tsr's `silu`.
fn swish(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_input(imp, cx, 0)?;
    let alpha = cx.attrs.float("alpha", 1.0)?;
    if alpha == 1.0 {
        return one(imp.unary(UnaryOp::Silu, x)?);
    }
    let ax = imp.binary_scalar(BinaryOp::Mul, x, alpha)?;
    let s = imp.unary(UnaryOp::Sigmoid, ax)?;
    one(imp.binary(BinaryOp::Mul, x, s)?)
}

/// SwiGLU (opset 28): `Swish_alpha(a) * b`, with `a` and `b` of one shape (no broadcasting).
fn swiglu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (a, b) = (float_input(imp, cx, 0)?, float_input(imp, cx, 1)?);
    if imp.ty(a) != imp.ty(b) {
        return invalid(format!("A and B must have one type, got {} and {}", imp.ty(a), imp.ty(b)));
    }
    let alpha = cx.attrs.float("alpha", 1.0)?;
    let gate = if alpha == 1.0 {
        imp.unary(UnaryOp::Silu, a)?
    } else {
        let scaled = imp.binary_scalar(BinaryOp::Mul, a, alpha)?;
        let s = imp.unary(UnaryOp::Sigmoid, scaled)?;
        imp.binary(BinaryOp::Mul, a, s)?
    };
    one(imp.binary(BinaryOp::Mul, gate, b)?)
}

/// `x < -lambd ? x + bias : x > lambd ? x - bias : 0`.
fn shrink(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let (bias, lambd) = (cx.attrs.float("bias", 0.0)?, cx.attrs.float("lambd", 0.5)?);
    let dtype = imp.ty(x).dtype;
    let (lo, hi) = (imp.scalar(dtype, -lambd), imp.scalar(dtype, lambd));
    let below = imp.compare(CompareOp::Lt, x, lo)?;
    let above = imp.compare(CompareOp::Gt, x, hi)?;
    let plus = imp.binary_scalar(BinaryOp::Add, x, bias)?;
    let minus = imp.binary_scalar(BinaryOp::Sub, x, bias)?;
    let zero = imp.scalar(dtype, 0.0);
    let inner = imp.select(above, minus, zero)?;
    one(imp.select(below, plus, inner)?)
}

fn where_(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    // A constant condition choosing between shape values picks expressions at import time.
    if let Some(operands) = imp.shape_operands(cx, 1..3)? {
        // A run-time condition selects at run time, with the shape values as tensors.
        let condition = imp.const_input(cx, 0, "condition").ok().flatten();
        if let Some(c) = condition.filter(|c| c.shape.len() <= 1) {
            let picks = c.to_i64_vec();
            let (a, b) = (&operands[0].0, &operands[1].0);
            let n = picks.len().max(a.len()).max(b.len());
            let fits = |len: usize| len == n || len == 1;
            if !(fits(picks.len()) && fits(a.len()) && fits(b.len())) {
                return invalid("Where operands do not broadcast");
            }
            let elems = (0..n)
                .map(|i| {
                    let pick = picks[i.min(picks.len() - 1)] != 0;
                    if pick {
                        a[i.min(a.len() - 1)].clone()
                    } else {
                        b[i.min(b.len() - 1)].clone()
                    }
                })
                .collect();
            let scalar = c.shape.is_empty() && operands.iter().all(|(_, s)| *s);
            return Ok(vec![imp.shape_slot(elems, scalar)]);
        }
    }
    let (c, a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?, imp.value(cx, 2)?);
    one(imp.select(c, a, b)?)
}

/// `min(max(x, lo), hi)`, bounds from inputs (opset >= 11) and optional.
fn clip(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let mut x = imp.value(cx, 0)?;
    if let Some(lo) = imp.opt_value(cx, 1)? {
        x = imp.binary(BinaryOp::Max, x, lo)?;
    }
    if let Some(hi) = imp.opt_value(cx, 2)? {
        x = imp.binary(BinaryOp::Min, x, hi)?;
    }
    one(x)
}

fn cast(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let to_code = cx.attrs.req_int("to")?;
    let to = tensor::dtype_of(to_code as i32).map_err(|e| {
        if e.unsupported {
            super::BuildError::Unsupported(e.message)
        } else {
            super::BuildError::Invalid(e.message)
        }
    })?;
    let saturate = cx.attrs.int("saturate", 1)? != 0;
    // Shape values stay shapes through integer casts (exporters cast Shape results to int64).
    if let Some(Slot::Shape { elems, scalar }) = imp.slot(cx, 0)? {
        if to.is_int() {
            return Ok(vec![Slot::Shape { elems, scalar }]);
        }
    }
    let x = imp.value(cx, 0)?;
    one(cast_to(imp, x, to, saturate)?)
}

/// Cast with ONNX's float8 saturation: out-of-range values and infinities become the largest
/// finite value of the format (NaN stays NaN).
pub(crate) fn cast_to(imp: &mut Importer, x: ValueId, to: DType, saturate: bool) -> BuildResult<ValueId> {
    let from = imp.ty(x).dtype;
    let limit = match (to, to.max_finite()) {
        (DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz, Some(max)) => max,
        _ => return imp.cast(x, to),
    };
    if !saturate || !from.is_float() {
        return imp.cast(x, to);
    }
    let lo = imp.binary_scalar(BinaryOp::Max, x, -limit)?;
    let clipped = imp.binary_scalar(BinaryOp::Min, lo, limit)?;
    imp.cast(clipped, to)
}

fn cast_like(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let like = imp.value(cx, 1)?;
    let to = imp.ty(like).dtype;
    let saturate = cx.attrs.int("saturate", 1)? != 0;
    one(cast_to(imp, x, to, saturate)?)
}

fn identity(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    match imp.slot(cx, 0)? {
        Some(s) => Ok(vec![s]),
        None => invalid("missing required input 0"),
    }
}

/// Inference-mode Dropout is the identity; its mask output is all true.
fn dropout(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    if let Some(training) = imp.const_input(cx, 2, "training_mode")? {
        if training.to_i64_vec().iter().any(|&t| t != 0) {
            return unsupported("training-mode Dropout (random masks)");
        }
    }
    let mut outs = vec![Slot::Value(x)];
    if cx.wants_output(1) {
        let ty = imp.ty(x);
        let t = imp.scalar(DType::Bool, 1.0);
        outs.push(Slot::Value(imp.broadcast(t, &ty.dims)?));
    }
    Ok(outs)
}
