//! Normalizing ops: `tsr.softmax`, `tsr.layer_norm`, `tsr.rms_norm`.
//!
//! Layer and RMS norm normalize over the dimensions from `axis` to the end (ONNX's convention);
//! their scale (and bias) have exactly those trailing dimensions.
//!
//! Reference semantics, all in `f64` and rounded once: softmax subtracts the maximum before
//! `exp` (numerically stable); layer norm uses the population variance,
//! `(x - mean) / sqrt(var + eps) * scale + bias`; RMS norm is `x / sqrt(mean(x^2) + eps) * scale`.

use super::elementwise::UnaryOp;
use super::gradient::{GradContext, GradError, GradResult};
use super::reduce::ReduceKind;
use super::{expect_arity, floats, product, ShapeResult};
use crate::graph::ValueId;
use crate::sharding::ShardingRule;
use crate::tensor::Tensor;
use crate::types::{normalize_axis, Dim, TensorType};

pub fn infer_softmax(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    check_float_axis(x, axis)?;
    Ok(vec![x.clone()])
}

/// `layer_norm(x, scale, bias)` when `with_bias`, `rms_norm(x, scale)` otherwise.
pub fn infer_norm(inputs: &[&TensorType], axis: i64, with_bias: bool) -> ShapeResult {
    expect_arity(inputs, if with_bias { 3 } else { 2 })?;
    let x = inputs[0];
    let axis = check_float_axis(x, axis)?;
    let normalized = TensorType::new(x.dtype, x.dims[axis..].to_vec());
    for (param, name) in inputs[1..].iter().zip(["scale", "bias"]) {
        if **param != normalized {
            return Err(format!("{name} must have type {normalized}, got {param}"));
        }
    }
    Ok(vec![x.clone()])
}

/// FLOPs of `softmax`: 5 per element (max, subtract, exp, sum, divide).
pub fn flops_softmax(out_elements: u128) -> u128 {
    out_elements.saturating_mul(5)
}

/// FLOPs of `layer_norm` and `rms_norm`: 8 per element.
pub fn flops_norm(out_elements: u128) -> u128 {
    out_elements.saturating_mul(8)
}

fn check_float_axis(x: &TensorType, axis: i64) -> Result<usize, String> {
    if !x.dtype.is_float() {
        return Err(format!("input must be a float tensor, got {x}"));
    }
    normalize_axis(axis, x.rank()).ok_or_else(|| format!("axis {axis} is out of range for {x}"))
}

fn axis_of(x: &Tensor, axis: i64) -> Result<usize, String> {
    normalize_axis(axis, x.shape.len()).ok_or_else(|| format!("axis {axis} is out of range for shape {:?}", x.shape))
}

/// Softmax along `axis`: `exp(x - max(x)) / sum(exp(x - max(x)))`.
///
/// In f16, bf16 and the f8 types each step is rounded to the element type, as ONNX defines
/// Softmax-13 (a function body of Sub, Exp, ReduceSum and Div, each an op in T; onnx's reference
/// and its `_expanded` node tests compute it so) and as a model in that type computes it: the
/// exact quotient rounded once differs from that by an ulp in a few values (2 of 192 in
/// test_attention_4d_causal_fp16). In f32 and f64 the steps stay exact and the result is rounded
/// once, far inside every tolerance. Compiled kernels compute in f32 and round once.
///
/// The ReduceSum step is the exact sum rounded once to the element type, never a running sum in
/// it: the body leaves the accumulation open, onnxruntime's CUDA provider accumulates f16 and
/// bf16 in f32, and a bf16 running sum (what NumPy's `sum` does on ml_dtypes' bfloat16, unlike
/// its own float16 sum) loses a median 31% of a row's mass at 4,096 keys. onnx's bf16 Attention
/// node tests carry that running sum, so tests/conformance/onnx-node-excluded.txt lists them.
pub fn eval_softmax(x: &Tensor, axis: i64) -> Result<Tensor, String> {
    let v = floats(x)?;
    let ax = axis_of(x, axis)?;
    let step = |r: f64| if x.dtype.size_bytes() < 4 { x.dtype.round_float(r) } else { r };
    let (outer, n, inner) = (product(&x.shape[..ax]), x.shape[ax], product(&x.shape[ax + 1..]));
    let mut out = vec![0.0; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let max = (0..n).map(|j| v[at(j)]).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for j in 0..n {
                let e = step(step(v[at(j)] - max).exp());
                out[at(j)] = e;
                sum += e;
            }
            let sum = step(sum);
            for j in 0..n {
                out[at(j)] /= sum;
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype, x.shape.clone(), out))
}

/// Layer norm over the dimensions `axis..` of `x`.
pub fn eval_layer_norm(x: &Tensor, scale: &Tensor, bias: &Tensor, axis: i64, epsilon: f64) -> Result<Tensor, String> {
    let (v, g, b) = (floats(x)?, floats(scale)?, floats(bias)?);
    let (v, g, b) = (&*v, &*g, &*b);
    let ax = axis_of(x, axis)?;
    let n = product(&x.shape[ax..]);
    check_param_len(g, n, "scale")?;
    check_param_len(b, n, "bias")?;
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks_exact(n.max(1)).take(product(&x.shape[..ax])) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + epsilon).sqrt();
        out.extend(row.iter().zip(g.iter().zip(b)).map(|(a, (s, c))| (a - mean) * inv * s + c));
    }
    Ok(Tensor::from_f64(x.dtype, x.shape.clone(), out))
}

/// RMS norm over the dimensions `axis..` of `x`.
pub fn eval_rms_norm(x: &Tensor, scale: &Tensor, axis: i64, epsilon: f64) -> Result<Tensor, String> {
    let (v, g) = (floats(x)?, floats(scale)?);
    let (v, g) = (&*v, &*g);
    let ax = axis_of(x, axis)?;
    let n = product(&x.shape[ax..]);
    check_param_len(g, n, "scale")?;
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks_exact(n.max(1)).take(product(&x.shape[..ax])) {
        let mean_square = row.iter().map(|a| a * a).sum::<f64>() / n as f64;
        let inv = 1.0 / (mean_square + epsilon).sqrt();
        out.extend(row.iter().zip(g).map(|(a, s)| a * inv * s));
    }
    Ok(Tensor::from_f64(x.dtype, x.shape.clone(), out))
}

fn check_param_len(p: &[f64], n: usize, name: &str) -> Result<(), String> {
    if p.len() != n {
        return Err(format!("{name} has {} elements, the normalized dimensions {n}", p.len()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gradient rules

/// `y = softmax(x)`: `dx = y * (g - sum(g * y))`, the sum along `axis`.
pub fn grad_softmax(cx: &mut GradContext, y: ValueId, g: ValueId, axis: i64) -> Result<ValueId, GradError> {
    let t = cx.ty(y);
    let ax = normalize_axis(axis, t.rank()).ok_or_else(|| cx.unsupported(format!("axis {axis} out of range")))?;
    let gy = cx.mul(g, y)?;
    let s = cx.reduce(ReduceKind::Sum, gy, &[ax], true)?;
    let s = cx.broadcast(s, &t.dims)?;
    let ys = cx.mul(y, s)?;
    cx.sub(gy, ys)
}

/// Mean over `axes` kept as size-1 dimensions, broadcast back to `x`'s shape.
fn mean_back(cx: &mut GradContext, x: ValueId, axes: &[usize]) -> Result<ValueId, GradError> {
    let dims = cx.ty(x).dims;
    let m = cx.reduce(ReduceKind::Mean, x, axes, true)?;
    cx.broadcast(m, &dims)
}

/// The dimensions of a norm's input `x` and the normalized ones among them (`axis..`): where
/// both norms' gradients start.
fn norm_dims(cx: &GradContext, x: ValueId, axis: i64) -> Result<(Vec<Dim>, Vec<usize>), GradError> {
    let dims = cx.ty(x).dims;
    let rank = dims.len();
    let ax = normalize_axis(axis, rank).ok_or_else(|| cx.unsupported(format!("axis {axis} out of range")))?;
    Ok((dims, (ax..rank).collect()))
}

/// `1 / sqrt(v + epsilon)`, the reciprocal deviation both norms multiply by.
fn rsqrt_plus(cx: &mut GradContext, v: ValueId, epsilon: f64) -> Result<ValueId, GradError> {
    let eps = cx.splat_like(v, epsilon)?;
    let v_eps = cx.add2(v, eps)?;
    cx.unary(UnaryOp::Rsqrt, v_eps)
}

/// `g * scale`, the scale broadcast to `dims`: the adjoint of the normalized value.
fn times_scale(cx: &mut GradContext, g: ValueId, scale: ValueId, dims: &[Dim]) -> Result<ValueId, GradError> {
    let scale_b = cx.broadcast(scale, dims)?;
    cx.mul(g, scale_b)
}

/// The scale's gradient `sum(g * normalized)` over the dimensions the scale is broadcast along.
fn scale_grad(cx: &mut GradContext, g: ValueId, normalized: ValueId, scale: ValueId) -> Result<ValueId, GradError> {
    let g_normalized = cx.mul(g, normalized)?;
    cx.sum_to(g_normalized, &cx.ty(scale))
}

/// Layer norm over `axis..` with `xhat = (x - mean) * rstd`, `rstd = 1 / sqrt(var + eps)` and
/// `gs = g * scale`: `dx = rstd * (gs - mean(gs) - xhat * mean(gs * xhat))`,
/// `dscale = sum(g * xhat)`, `dbias = sum(g)` over the leading dimensions.
pub fn grad_layer_norm(
    cx: &mut GradContext,
    (x, scale, bias, g): (ValueId, ValueId, ValueId, ValueId),
    axis: i64,
    epsilon: f64,
    wanted: &[bool],
) -> GradResult {
    let (dims, axes) = norm_dims(cx, x, axis)?;
    let mean = mean_back(cx, x, &axes)?;
    let centered = cx.sub(x, mean)?;
    let squares = cx.mul(centered, centered)?;
    let var = mean_back(cx, squares, &axes)?;
    let rstd = rsqrt_plus(cx, var, epsilon)?;
    let xhat = cx.mul(centered, rstd)?;
    let dx = if wanted[0] {
        let gs = times_scale(cx, g, scale, &dims)?;
        let mean_gs = mean_back(cx, gs, &axes)?;
        let gsx = cx.mul(gs, xhat)?;
        let mean_gsx = mean_back(cx, gsx, &axes)?;
        let proj = cx.mul(xhat, mean_gsx)?;
        let inner = cx.sub(gs, mean_gs)?;
        let inner = cx.sub(inner, proj)?;
        Some(cx.mul(rstd, inner)?)
    } else {
        None
    };
    let dscale = if wanted[1] { Some(scale_grad(cx, g, xhat, scale)?) } else { None };
    let dbias = if wanted[2] { Some(cx.sum_to(g, &cx.ty(bias))?) } else { None };
    Ok(vec![dx, dscale, dbias])
}

/// RMS norm over `axis..` with `r = 1 / sqrt(mean(x^2) + eps)` and `gs = g * scale`:
/// `dx = r * gs - x * r^3 * mean(gs * x)`, `dscale = sum(g * x * r)`.
pub fn grad_rms_norm(
    cx: &mut GradContext,
    (x, scale, g): (ValueId, ValueId, ValueId),
    axis: i64,
    epsilon: f64,
    wanted: &[bool],
) -> GradResult {
    let (dims, axes) = norm_dims(cx, x, axis)?;
    let squares = cx.mul(x, x)?;
    let ms = mean_back(cx, squares, &axes)?;
    let r = rsqrt_plus(cx, ms, epsilon)?;
    let dx = if wanted[0] {
        let gs = times_scale(cx, g, scale, &dims)?;
        let rgs = cx.mul(r, gs)?;
        let gsx = cx.mul(gs, x)?;
        let mean_gsx = mean_back(cx, gsx, &axes)?;
        let rr = cx.mul(r, r)?;
        let rrr = cx.mul(rr, r)?;
        let k = cx.mul(rrr, mean_gsx)?;
        let xk = cx.mul(x, k)?;
        Some(cx.sub(rgs, xk)?)
    } else {
        None
    };
    let dscale = if wanted[1] {
        let xr = cx.mul(x, r)?;
        Some(scale_grad(cx, g, xr, scale)?)
    } else {
        None
    };
    Ok(vec![dx, dscale])
}

/// Sharding rule of `softmax` (`with_params` false) and the norms: every dimension before
/// `axis` is parallel; the normalized dimensions and the scale/bias stay whole.
pub fn sharding_rule(operands: &[&TensorType], out: &TensorType, axis: usize) -> ShardingRule {
    let mut rule = ShardingRule::replicated(operands, std::slice::from_ref(out));
    for d in 0..axis.min(out.rank()) {
        let f = rule.factor(&out.dims[d]);
        rule.operands[0][d] = Some(f);
        rule.results[0][d] = Some(f);
    }
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, f32s, f64s};
    use super::super::Op;
    use crate::dtype::DType;

    #[test]
    fn softmax_is_normalized_and_stable() {
        let expected = [0.09003057317038046, 0.24472847105479767, 0.6652409557748219];
        let x = f64s(&[3], &[1.0, 2.0, 3.0]);
        assert_close(&eval1(&Op::Softmax { axis: 0 }, &[&x]), DType::F64, &[3], &expected, 1e-15);
        // exp(1000) overflows; subtracting the maximum first does not.
        let big = f64s(&[3], &[1000.0, 1001.0, 1002.0]);
        assert_close(&eval1(&Op::Softmax { axis: -1 }, &[&big]), DType::F64, &[3], &expected, 1e-15);
        // Along axis 0 of a [3, 2] matrix: each column separately.
        let cols = f32s(&[3, 2], &[1.0, 5.0, 2.0, 5.0, 3.0, 5.0]);
        let third = 1.0 / 3.0;
        let want = [expected[0], third, expected[1], third, expected[2], third];
        assert_close(&eval1(&Op::Softmax { axis: 0 }, &[&cols]), DType::F32, &[3, 2], &want, 1e-7);
    }

    #[test]
    fn softmax_in_f16_rounds_each_step_of_the_onnx_function_body() {
        let x = crate::tensor::Tensor::from_f64(
            DType::F16,
            vec![4],
            vec![2.55078125, 1.080078125, 0.1600341796875, 0.07000732421875],
        );
        // x - max, exp and the sum each rounded to f16, then the quotient; the exact quotient
        // rounded once would be [0.7119140625, 0.16357421875, 0.065185546875, 0.0595703125].
        let steps = [0.71142578125, 0.1634521484375, 0.06512451171875, 0.059539794921875];
        assert_close(&eval1(&Op::Softmax { axis: 0 }, &[&x]), DType::F16, &[4], &steps, 0.0);
    }

    #[test]
    fn layer_norm_uses_population_variance_then_scale_and_bias() {
        // Rows [1, 2, 3, 4] (mean 2.5, variance 1.25) and [2, 2, 2, 2] (variance 0).
        let x = f64s(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0]);
        let scale = f64s(&[4], &[1.0, 2.0, 1.0, 2.0]);
        let bias = f64s(&[4], &[0.0, 0.0, 1.0, 1.0]);
        let op = Op::LayerNorm { axis: -1, epsilon: 1e-5 };
        let expected = [
            -1.3416354199689269,
            -0.447211806656309 * 2.0,
            0.447211806656309 + 1.0,
            1.3416354199689269 * 2.0 + 1.0,
            0.0,
            0.0,
            1.0,
            1.0,
        ];
        assert_close(&eval1(&op, &[&x, &scale, &bias]), DType::F64, &[2, 4], &expected, 1e-15);
        // Normalizing over two trailing dimensions treats them as one row.
        let x3 = f64s(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let ones = f64s(&[2, 2], &[1.0; 4]);
        let zeros = f64s(&[2, 2], &[0.0; 4]);
        let op = Op::LayerNorm { axis: 1, epsilon: 0.0 };
        let want = [-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738];
        assert_close(&eval1(&op, &[&x3, &ones, &zeros]), DType::F64, &[1, 2, 2], &want, 1e-15);
    }

    #[test]
    fn rms_norm_divides_by_the_root_mean_square() {
        let x = f64s(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let scale = f64s(&[4], &[1.0, 1.0, 1.0, 2.0]);
        let op = Op::RmsNorm { axis: 1, epsilon: 1e-6 };
        let expected = [0.3651483473268884, 0.7302966946537768, 1.0954450419806652, 1.4605933893075536 * 2.0];
        assert_close(&eval1(&op, &[&x, &scale]), DType::F64, &[1, 4], &expected, 1e-15);
    }
}
