//! Convolution and pooling over NCHW images: `tsr.conv2d`, `tsr.max_pool2d`, `tsr.avg_pool2d`.
//!
//! Padding is `[top, left, bottom, right]` (ONNX order). Average pooling divides by the number
//! of non-padding elements in the window (ONNX `count_include_pad = 0`).
//!
//! Reference semantics: direct loops in `f64`, rounded once. Max pooling pads with -inf, so a
//! window lying wholly in the padding gives -inf; average pooling of such a window is NaN
//! (zero elements).

use super::elementwise::named_enum;
use super::gradient::{GradContext, GradError, GradResult};
use super::{expect_arity, floats, num_elements, operand_shape, FlopResult, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::ShardingRule;
use crate::symbolic::DimExpr;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

named_enum!(PoolKind { Max = "max_pool2d", Avg = "avg_pool2d" });

/// Window geometry shared by convolution and pooling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub strides: [i64; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [i64; 4],
    pub dilations: [i64; 2],
}

impl Window {
    pub fn check(&self) -> Result<(), String> {
        if self.strides.iter().chain(&self.dilations).any(|&v| v < 1) {
            return Err("strides and dilations must be positive".into());
        }
        if self.pads.iter().any(|&p| p < 0) {
            return Err("pads must be non-negative".into());
        }
        Ok(())
    }

    /// Output extent of spatial dimension `d` (0 = height, 1 = width) for input extent `n` and
    /// kernel extent `k`.
    pub fn output_extent(&self, d: usize, n: i64, k: i64) -> Result<i64, String> {
        // Checked, because attributes are arbitrary i64s from the text form.
        let padded = n.checked_add(self.pads[d]).and_then(|v| v.checked_add(self.pads[d + 2]));
        let span = k.checked_sub(1).and_then(|v| v.checked_mul(self.dilations[d])).and_then(|v| v.checked_add(1));
        let (Some(padded), Some(span)) = (padded, span) else {
            return Err("padding or dilation is too large".into());
        };
        if padded < span {
            return Err(format!("window of extent {span} does not fit the padded input extent {padded}"));
        }
        Ok((padded - span) / self.strides[d] + 1)
    }

    /// [`Window::output_extent`] over a possibly symbolic input extent: for a symbolic `n`,
    /// `floordiv(n + pads - span, stride) + 1` (the window is assumed to fit, as it must at run
    /// time).
    pub fn output_dim(&self, d: usize, n: &Dim, k: i64) -> Result<Dim, String> {
        match n {
            Dim::Static(n) => {
                let n = i64::try_from(*n).map_err(|_| format!("extent {n} is too large"))?;
                Ok(Dim::Static(self.output_extent(d, n, k)? as u64))
            }
            Dim::Symbolic(e) => {
                let span =
                    k.checked_sub(1).and_then(|v| v.checked_mul(self.dilations[d])).and_then(|v| v.checked_add(1));
                let shift = span.and_then(|s| self.pads[d].checked_add(self.pads[d + 2])?.checked_sub(s));
                let shift = shift.ok_or("padding or dilation is too large")?;
                let out = e
                    .add(&DimExpr::constant(shift))
                    .and_then(|v| v.floordiv(self.strides[d]))
                    .and_then(|v| v.add(&DimExpr::constant(1)))
                    .map_err(|err| err.to_string())?;
                Dim::from_expr(out).map_err(|err| err.to_string())
            }
        }
    }
}

fn spatial(x: &TensorType, what: &str) -> Result<[i64; 2], String> {
    let [h, w] = spatial_dims(x, what)?;
    let h = h.as_static().ok_or_else(|| format!("{what} height must be static in {x}"))?;
    let w = w.as_static().ok_or_else(|| format!("{what} width must be static in {x}"))?;
    Ok([h as i64, w as i64])
}

fn spatial_dims<'a>(x: &'a TensorType, what: &str) -> Result<[&'a Dim; 2], String> {
    if x.rank() != 4 {
        return Err(format!("{what} must be NCHW (rank 4), got {x}"));
    }
    Ok([&x.dims[2], &x.dims[3]])
}

/// `conv2d(x: [N, C, H, W], w: [O, C / groups, KH, KW]) -> [N, O, OH, OW]`.
pub fn infer_conv2d(inputs: &[&TensorType], window: &Window, groups: i64) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    window.check()?;
    let [h, wd] = spatial_dims(x, "input")?;
    let [kh, kw] = spatial(w, "weight")?;
    if x.dtype != w.dtype || !x.dtype.is_float() {
        return Err(format!("input {x} and weight {w} must share a float element type"));
    }
    let c = x.dims[1].as_static().ok_or_else(|| format!("channel dimension of {x} must be static"))? as i64;
    let o = w.dims[0].as_static().ok_or_else(|| format!("output channels of {w} must be static"))? as i64;
    let c_per_group = w.dims[1].as_static().unwrap_or(0) as i64;
    if groups < 1 || c % groups != 0 || o % groups != 0 || c_per_group.checked_mul(groups) != Some(c) {
        return Err(format!("groups = {groups} does not fit {c} input and {o} output channels of weight {w}"));
    }
    let oh = window.output_dim(0, h, kh)?;
    let ow = window.output_dim(1, wd, kw)?;
    let dims = vec![x.dims[0].clone(), Dim::Static(o as u64), oh, ow];
    Ok(vec![TensorType::new(x.dtype, dims)])
}

/// `max_pool2d` / `avg_pool2d` with a `kernel` window: `[N, C, H, W] -> [N, C, OH, OW]`.
pub fn infer_pool2d(inputs: &[&TensorType], kernel: [i64; 2], window: &Window) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    window.check()?;
    if kernel.iter().any(|&k| k < 1) {
        return Err("kernel extents must be positive".into());
    }
    if !x.dtype.is_float() {
        return Err(format!("pooling needs a float input, got {x}"));
    }
    let [h, w] = spatial_dims(x, "input")?;
    let oh = window.output_dim(0, h, kernel[0])?;
    let ow = window.output_dim(1, w, kernel[1])?;
    let dims = vec![x.dims[0].clone(), x.dims[1].clone(), oh, ow];
    Ok(vec![TensorType::new(x.dtype, dims)])
}

/// FLOPs of `conv2d`: `2 * N * O * OH * OW * (C / groups) * KH * KW`; with the weight
/// `[O, C / groups, KH, KW]`, each output element is `C / groups * KH * KW` multiply-adds.
pub fn flops_conv2d(inputs: &[&[u64]], out_elements: u128) -> FlopResult {
    let w = operand_shape(inputs, 1)?;
    let o = *w.first().ok_or("conv2d weight has rank 0")?;
    let per_output = num_elements(w).checked_div(o as u128).unwrap_or(0);
    Ok(out_elements.saturating_mul(per_output).saturating_mul(2))
}

/// FLOPs of pooling: 1 per window element per output element.
pub fn flops_pool2d(out_elements: u128, kernel: [i64; 2]) -> u128 {
    out_elements.saturating_mul(kernel[0].max(0) as u128).saturating_mul(kernel[1].max(0) as u128)
}

fn nchw(shape: &[usize], what: &str) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(shape).map_err(|_| format!("{what} must be rank 4, got {shape:?}"))
}

/// The input coordinate that output coordinate `o` and kernel tap `k` read along spatial
/// dimension `d`, if it is inside the (unpadded) input of extent `n`.
fn tap(window: &Window, d: usize, o: usize, k: usize, n: usize) -> Option<usize> {
    let at = o as i64 * window.strides[d] - window.pads[d] + k as i64 * window.dilations[d];
    usize::try_from(at).ok().filter(|&i| i < n)
}

/// `conv2d(x: [N, C, H, W], w: [O, C / groups, KH, KW])` giving `out = [N, O, OH, OW]`.
pub fn eval_conv2d(x: &Tensor, w: &Tensor, window: &Window, groups: i64, out: &[usize]) -> Result<Tensor, String> {
    let (xv, wv) = (floats(x)?, floats(w)?);
    let (xv, wv) = (&*xv, &*wv);
    let [n, c, h, wd] = nchw(&x.shape, "input")?;
    let [o, c_per_group, kh, kw] = nchw(&w.shape, "weight")?;
    let [_, _, oh, ow] = nchw(out, "result")?;
    let groups = usize::try_from(groups).ok().filter(|&g| g > 0 && o % g == 0 && c_per_group * g == c);
    let groups = groups.ok_or_else(|| format!("groups do not fit {c} input and {o} output channels"))?;
    let o_per_group = o / groups;
    let mut result = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let group = oc / o_per_group;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = 0.0;
                    for ci in 0..c_per_group {
                        let ic = group * c_per_group + ci;
                        for ky in 0..kh {
                            let Some(iy) = tap(window, 0, y, ky, h) else { continue };
                            for kx in 0..kw {
                                let Some(ix) = tap(window, 1, xo, kx, wd) else { continue };
                                acc += xv[((b * c + ic) * h + iy) * wd + ix]
                                    * wv[((oc * c_per_group + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    result[((b * o + oc) * oh + y) * ow + xo] = acc;
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype, out.to_vec(), result))
}

/// Max or average pooling with a `kernel` window, giving `out = [N, C, OH, OW]`.
pub fn eval_pool2d(
    x: &Tensor,
    kind: PoolKind,
    kernel: [i64; 2],
    window: &Window,
    out: &[usize],
) -> Result<Tensor, String> {
    let xv = floats(x)?;
    let xv = &*xv;
    let [n, c, h, wd] = nchw(&x.shape, "input")?;
    let [_, _, oh, ow] = nchw(out, "result")?;
    let [kh, kw] = kernel.map(|k| usize::try_from(k).unwrap_or(0));
    let mut result = Vec::with_capacity(n * c * oh * ow);
    if xv.len() != n * c * h * wd {
        return Err(format!("input holds {} elements for shape {:?}", xv.len(), x.shape));
    }
    for p in 0..n * c {
        let plane = &xv[p * h * wd..(p + 1) * h * wd];
        for y in 0..oh {
            for xo in 0..ow {
                let taps = (0..kh).filter_map(|ky| tap(window, 0, y, ky, h)).flat_map(|iy| {
                    (0..kw).filter_map(move |kx| tap(window, 1, xo, kx, wd)).map(move |ix| plane[iy * wd + ix])
                });
                result.push(match kind {
                    PoolKind::Max => taps.fold(f64::NEG_INFINITY, super::elementwise::max_f64),
                    PoolKind::Avg => {
                        let (sum, count) = taps.fold((0.0, 0usize), |(s, k), v| (s + v, k + 1));
                        sum / count as f64
                    }
                });
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype, out.to_vec(), result))
}

// ---------------------------------------------------------------------------------------------
// Gradient rules

/// Where every window tap of a convolution or pooling reads `x [N, C, H, W]`: for each
/// `(n, group, output position, (channel in group, kh, kw))` the row-major index into `x`, or
/// `sink` (one past the end) for taps in the padding. Laid out `[N, groups, OH * OW, taps]`.
fn tap_indices(x: [usize; 4], groups: usize, kernel: [usize; 2], window: &Window, out: [usize; 2]) -> Vec<i64> {
    let [n, c, h, w] = x;
    let cg = c / groups;
    let sink = (n * c * h * w) as i64;
    let mut idx = Vec::with_capacity(n * groups * out[0] * out[1] * cg * kernel[0] * kernel[1]);
    for ni in 0..n {
        for gi in 0..groups {
            for oh in 0..out[0] {
                for ow in 0..out[1] {
                    for ci in 0..cg {
                        for kh in 0..kernel[0] {
                            for kw in 0..kernel[1] {
                                let hi =
                                    (oh as i64) * window.strides[0] - window.pads[0] + kh as i64 * window.dilations[0];
                                let wi =
                                    (ow as i64) * window.strides[1] - window.pads[1] + kw as i64 * window.dilations[1];
                                let inside = (0..h as i64).contains(&hi) && (0..w as i64).contains(&wi);
                                let channel = (gi * cg + ci) as i64;
                                idx.push(if inside {
                                    ((ni as i64 * c as i64 + channel) * h as i64 + hi) * w as i64 + wi
                                } else {
                                    sink
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    idx
}

/// The static `[N, C, H, W]` of `t` and the `[OH, OW]` of `out`.
fn image_shapes(cx: &GradContext, t: &TensorType, out: &TensorType) -> Result<([usize; 4], [usize; 2]), GradError> {
    let s = cx.static_shape(t)?;
    let o = cx.static_shape(out)?;
    match (s.as_slice(), o.as_slice()) {
        (&[n, c, h, w], &[_, _, oh, ow]) => Ok(([n, c, h, w], [oh, ow])),
        _ => Err(cx.unsupported(format!("expected NCHW images, got {t} and {out}"))),
    }
}

/// Every window tap of `x` as a `[N, groups, L, taps]` tensor (im2col through `gather` on `x`
/// flattened, with one extra element `fill` that padding taps read).
fn gather_taps(
    cx: &mut GradContext,
    x: ValueId,
    idx: &[i64],
    layout: [usize; 4],
    fill: f64,
) -> Result<ValueId, GradError> {
    let t = cx.ty(x);
    let total = cx.static_count(&t, &(0..t.rank()).collect::<Vec<_>>())?;
    let flat = cx.reshape(x, &[Dim::Static(total)])?;
    let pad = cx.splat(t.dtype, &[Dim::Static(1)], fill)?;
    let extended = cx.add(super::Op::Concat { axis: 0 }, &[flat, pad])?;
    let index = cx.add(super::Op::Constant(Tensor::from_i64(DType::I64, layout.to_vec(), idx.to_vec())), &[])?;
    cx.add(super::Op::Gather { axis: 0 }, &[extended, index])
}

/// The adjoint of [`gather_taps`]: tap adjoints `dp` scatter-added back into `x`'s shape (the
/// padding taps land on the extra element, which is dropped).
fn scatter_taps(cx: &mut GradContext, dp: ValueId, idx: &[i64], x: &TensorType) -> Result<ValueId, GradError> {
    let total = cx.static_count(x, &(0..x.rank()).collect::<Vec<_>>())?;
    let flat_dp = cx.reshape(dp, &[Dim::Static(idx.len() as u64)])?;
    let index = cx.add(super::Op::Constant(Tensor::from_i64(DType::I64, vec![idx.len()], idx.to_vec())), &[])?;
    let zeros = cx.zeros(&TensorType::of_static(x.dtype, &[total + 1]))?;
    let sum = cx.add(
        super::Op::Scatter { axis: 0, reduction: super::indexing::ScatterReduction::Add },
        &[zeros, index, flat_dp],
    )?;
    let inside = cx.add(super::Op::Slice { starts: vec![0], ends: vec![total as i64], steps: vec![1] }, &[sum])?;
    cx.reshape(inside, &x.dims)
}

/// Convolution as im2col: with the taps `P [N, G, L, K]` of `x` (`L = OH * OW`,
/// `K = C / G * KH * KW`), `g` as `[N, G, O / G, L]` and `w` as `[G, O / G, K]`:
/// `dw = sum_n g @ P` and `dP = g^T @ w`, scatter-added back into `x` (a transposed convolution).
pub fn grad_conv2d(
    cx: &mut GradContext,
    (x, w, g): (ValueId, ValueId, ValueId),
    window: &Window,
    groups: i64,
    wanted: &[bool],
) -> GradResult {
    let (xt, wt, gt) = (cx.ty(x), cx.ty(w), cx.ty(g));
    let (shape, out) = image_shapes(cx, &xt, &gt)?;
    let ws = cx.static_shape(&wt)?;
    let [o, cg, kh, kw] = ws[..] else { return Err(cx.unsupported(format!("weight must be OIHW, got {wt}"))) };
    let groups = usize::try_from(groups).map_err(|_| cx.unsupported("groups must be positive"))?;
    let (n, l, k) = (shape[0], out[0] * out[1], cg * kh * kw);
    let idx = tap_indices(shape, groups, [kh, kw], window, out);
    let dims = |v: &[usize]| v.iter().map(|&d| Dim::Static(d as u64)).collect::<Vec<_>>();
    let g_r = cx.reshape(g, &dims(&[n, groups, o / groups, l]))?;
    let dw = if wanted[1] {
        let taps = gather_taps(cx, x, &idx, [n, groups, l, k], 0.0)?;
        let per_image = cx.add(super::Op::MatMul, &[g_r, taps])?;
        let summed = cx.reduce(super::reduce::ReduceKind::Sum, per_image, &[0], false)?;
        Some(cx.reshape(summed, &wt.dims)?)
    } else {
        None
    };
    let dx = if wanted[0] {
        let w_r = cx.reshape(w, &dims(&[groups, o / groups, k]))?;
        let g_t = cx.add(super::Op::Transpose { perm: vec![0, 1, 3, 2] }, &[g_r])?;
        let dp = cx.add(super::Op::MatMul, &[g_t, w_r])?;
        Some(scatter_taps(cx, dp, &idx, &xt)?)
    } else {
        None
    };
    Ok(vec![dx, dw])
}

/// Pooling through the window taps `P [N, C, L, KH * KW]` of `x`: max pooling routes `g` to
/// the taps equal to the maximum (shared equally among ties; padding reads -inf), average
/// pooling gives every non-padding tap `g / count` of its window.
pub fn grad_pool2d(
    cx: &mut GradContext,
    (x, y, g): (ValueId, ValueId, ValueId),
    kind: PoolKind,
    kernel: [i64; 2],
    window: &Window,
) -> Result<ValueId, GradError> {
    let (xt, gt) = (cx.ty(x), cx.ty(g));
    let (shape, out) = image_shapes(cx, &xt, &gt)?;
    let kernel = [kernel[0].max(0) as usize, kernel[1].max(0) as usize];
    let (n, c, l, kk) = (shape[0], shape[1], out[0] * out[1], kernel[0] * kernel[1]);
    let idx = tap_indices(shape, c, kernel, window, out);
    let dims = |v: &[usize]| v.iter().map(|&d| Dim::Static(d as u64)).collect::<Vec<_>>();
    let taps_dims = dims(&[n, c, l, kk]);
    let g_r = cx.reshape(g, &dims(&[n, c, l, 1]))?;
    let g_b = cx.broadcast(g_r, &taps_dims)?;
    let dp = match kind {
        PoolKind::Max => {
            let taps = gather_taps(cx, x, &idx, [n, c, l, kk], f64::NEG_INFINITY)?;
            let y_r = cx.reshape(y, &dims(&[n, c, l, 1]))?;
            let y_b = cx.broadcast(y_r, &taps_dims)?;
            let hit = cx.compare(super::elementwise::CompareOp::Eq, taps, y_b)?;
            let mask = cx.add(super::Op::Cast { to: xt.dtype }, &[hit])?;
            let count = cx.reduce(super::reduce::ReduceKind::Sum, mask, &[3], true)?;
            let count = cx.broadcast(count, &taps_dims)?;
            let share = cx.div(mask, count)?;
            cx.mul(g_b, share)?
        }
        PoolKind::Avg => {
            let sink = (n * c * shape[2] * shape[3]) as i64;
            // Non-padding taps per output position (the same for every image and channel).
            let counts: Vec<f64> =
                (0..l).map(|p| idx[p * kk..(p + 1) * kk].iter().filter(|&&i| i != sink).count() as f64).collect();
            let counts = cx.add(super::Op::Constant(Tensor::from_f64(xt.dtype, vec![l, 1], counts)), &[])?;
            let counts = cx.broadcast(counts, &taps_dims)?;
            cx.div(g_b, counts)?
        }
    };
    scatter_taps(cx, dp, &idx, &xt)
}

/// Sharding rule of `conv2d` (`[N, C, H, W] * [O, C/g, KH, KW]`): the batch is parallel; with one
/// group the output channels are parallel and the input channels a sum reduction. Spatial
/// dimensions stay whole (halo exchange is not implemented). Pooling: batch and channels parallel.
pub fn sharding_rule(operands: &[&TensorType], out: &TensorType, conv_groups: Option<i64>) -> ShardingRule {
    let mut rule = ShardingRule::replicated(operands, std::slice::from_ref(out));
    if out.rank() != 4 || operands.iter().any(|t| t.rank() != 4) {
        return rule;
    }
    let n = rule.factor(&out.dims[0]);
    rule.operands[0][0] = Some(n);
    rule.results[0][0] = Some(n);
    match conv_groups {
        None => {
            let c = rule.factor(&out.dims[1]);
            rule.operands[0][1] = Some(c);
            rule.results[0][1] = Some(c);
        }
        Some(1) if operands.len() == 2 => {
            let o = rule.factor(&out.dims[1]);
            rule.operands[1][0] = Some(o);
            rule.results[0][1] = Some(o);
            let c = rule.factor(&operands[0].dims[1]);
            rule.operands[0][1] = Some(c);
            rule.operands[1][1] = Some(c);
            rule.reduction = Some(crate::sharding::PartialKind::Sum);
        }
        Some(_) => {}
    }
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, f32s};
    use super::super::Op;
    use super::{PoolKind, Window};
    use crate::dtype::DType;

    fn window(strides: [i64; 2], pads: [i64; 4], dilations: [i64; 2]) -> Window {
        Window { strides, pads, dilations }
    }

    /// The 3x3 image 1..9 as [1, 1, 3, 3].
    fn image() -> crate::tensor::Tensor {
        f32s(&[1, 1, 3, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }

    #[test]
    fn conv2d_plain_padded_strided_and_dilated() {
        let ones = f32s(&[1, 1, 2, 2], &[1.0; 4]);
        let conv = |w: Window| Op::Conv2d { window: w, groups: 1 };
        let plain = eval1(&conv(window([1, 1], [0; 4], [1, 1])), &[&image(), &ones]);
        assert_close(&plain, DType::F32, &[1, 1, 2, 2], &[12.0, 16.0, 24.0, 28.0], 0.0);
        // Pads [top, left, bottom, right] = 1, stride 2: windows at rows/cols {-1, 0} and {1, 2}.
        let padded = eval1(&conv(window([2, 2], [1, 1, 1, 1], [1, 1])), &[&image(), &ones]);
        assert_close(&padded, DType::F32, &[1, 1, 2, 2], &[1.0, 5.0, 11.0, 28.0], 0.0);
        // Only the bottom and right padding: the window at row/col 2 sees one real row/col.
        let asymmetric = eval1(&conv(window([2, 2], [0, 0, 1, 1], [1, 1])), &[&image(), &ones]);
        assert_close(&asymmetric, DType::F32, &[1, 1, 2, 2], &[12.0, 9.0, 15.0, 9.0], 0.0);
        // Dilation 2 spreads the 2x2 kernel over the corners.
        let dilated = eval1(&conv(window([1, 1], [0; 4], [2, 2])), &[&image(), &ones]);
        assert_close(&dilated, DType::F32, &[1, 1, 1, 1], &[20.0], 0.0);
    }

    #[test]
    fn conv2d_sums_input_channels_and_respects_groups() {
        let x = f32s(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let w = f32s(&[1, 2, 1, 1], &[1.0, 10.0]);
        let op = Op::Conv2d { window: window([1, 1], [0; 4], [1, 1]), groups: 1 };
        assert_close(&eval1(&op, &[&x, &w]), DType::F32, &[1, 1, 2, 2], &[51.0, 62.0, 73.0, 84.0], 0.0);
        // Two groups: output channel g sees only input channel g.
        let w = f32s(&[2, 1, 1, 1], &[2.0, 3.0]);
        let op = Op::Conv2d { window: window([1, 1], [0; 4], [1, 1]), groups: 2 };
        let expected = [2.0, 4.0, 6.0, 8.0, 15.0, 18.0, 21.0, 24.0];
        assert_close(&eval1(&op, &[&x, &w]), DType::F32, &[1, 2, 2, 2], &expected, 0.0);
    }

    #[test]
    fn pools_ignore_padding() {
        let pool = |kind, w| Op::Pool2d { kind, kernel: [2, 2], window: w };
        let max = eval1(&pool(PoolKind::Max, window([1, 1], [0; 4], [1, 1])), &[&image()]);
        assert_close(&max, DType::F32, &[1, 1, 2, 2], &[5.0, 6.0, 8.0, 9.0], 0.0);
        let padded = window([2, 2], [1, 1, 1, 1], [1, 1]);
        let max = eval1(&pool(PoolKind::Max, padded.clone()), &[&image()]);
        assert_close(&max, DType::F32, &[1, 1, 2, 2], &[1.0, 3.0, 7.0, 9.0], 0.0);
        // Average over the real elements only: 1/1, (2+3)/2, (4+7)/2, (5+6+8+9)/4.
        let avg = eval1(&pool(PoolKind::Avg, padded), &[&image()]);
        assert_close(&avg, DType::F32, &[1, 1, 2, 2], &[1.0, 2.5, 5.5, 7.0], 0.0);
        // An empty image with padding: every window lies in the padding.
        let nothing = f32s(&[1, 1, 0, 1], &[]);
        let all_pad = window([1, 1], [1, 0, 1, 0], [1, 1]);
        let max = eval1(&Op::Pool2d { kind: PoolKind::Max, kernel: [1, 1], window: all_pad.clone() }, &[&nothing]);
        assert_close(&max, DType::F32, &[1, 1, 2, 1], &[f64::NEG_INFINITY; 2], 0.0);
        let avg = eval1(&Op::Pool2d { kind: PoolKind::Avg, kernel: [1, 1], window: all_pad }, &[&nothing]);
        assert_close(&avg, DType::F32, &[1, 1, 2, 1], &[f64::NAN; 2], 0.0);
        let negative = f32s(&[1, 1, 1, 2], &[-3.0, -1.0]);
        let max = eval1(&pool(PoolKind::Max, window([1, 1], [1, 0, 0, 0], [1, 1])), &[&negative]);
        assert_close(&max, DType::F32, &[1, 1, 1, 1], &[-1.0], 0.0);
    }

    #[test]
    fn huge_window_attributes_are_an_error_not_an_overflow() {
        use crate::types::TensorType;
        let x = TensorType::of_static(DType::F32, &[1, 2, 4, 4]);
        let w = TensorType::of_static(DType::F32, &[2, 1, 2, 2]);
        let pads = Op::Conv2d { window: window([1, 1], [i64::MAX, 0, 1, 0], [1, 1]), groups: 2 };
        assert_eq!(pads.infer(&[&x, &w]).expect_err("pads"), "padding or dilation is too large");
        let dilation =
            Op::Pool2d { kind: PoolKind::Max, kernel: [3, 3], window: window([1, 1], [0; 4], [i64::MAX, 1]) };
        assert_eq!(dilation.infer(&[&x]).expect_err("dilation"), "padding or dilation is too large");
        let groups = Op::Conv2d { window: window([1, 1], [0; 4], [1, 1]), groups: i64::MAX };
        assert!(groups.infer(&[&x, &w]).expect_err("groups").starts_with("groups = "));
    }
}
