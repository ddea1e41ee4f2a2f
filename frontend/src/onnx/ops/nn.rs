//! Convolution and pooling: `Conv`, `MaxPool`, `AveragePool`, `GlobalAveragePool`,
//! `GlobalMaxPool`, `LpPool` over 2-D images (1-D ones through a unit height; 3-D pools as two
//! 2-D pools), with ONNX's `auto_pad`, `ceil_mode` and `count_include_pad` mapped onto tsr's
//! explicit padding.

use super::{invalid, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("Conv", conv);
    r.insert("ConvInteger", conv_integer);
    r.insert("QLinearConv", qlinear_conv);
    r.insert("ConvTranspose", conv_transpose);
    r.insert("MaxPool", |imp, cx| pool(imp, cx, PoolKind::Max));
    r.insert("AveragePool", |imp, cx| pool(imp, cx, PoolKind::Avg));
    r.insert("GlobalAveragePool", |imp, cx| global_pool(imp, cx, ReduceKind::Mean));
    r.insert("GlobalMaxPool", |imp, cx| global_pool(imp, cx, ReduceKind::Max));
    r.insert("LpPool", lp_pool);
}

/// Window attributes resolved to one value per spatial dimension.
struct Geometry {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Begin pads then end pads, as ONNX orders them.
    pads: Vec<i64>,
}

/// Reads `strides`, `dilations`, `pads` and `auto_pad` for `spatial` input extents (`None`:
/// symbolic, which `auto_pad = SAME_*` cannot pad for).
fn geometry(cx: &NodeCx, kernel: Vec<i64>, spatial: &[Option<i64>]) -> BuildResult<Geometry> {
    let n = kernel.len();
    // Every window attribute below is read per spatial dimension, so the kernel must have one
    // extent for each (an empty `kernel_shape` once indexed past the end).
    if n != spatial.len() {
        return invalid(format!("kernel_shape has {n} entries for {} spatial dimensions", spatial.len()));
    }
    let list = |name: &str, default: i64| -> BuildResult<Vec<i64>> {
        let v = cx.attrs.opt_ints(name)?.unwrap_or_else(|| vec![default; n]);
        if v.len() != n {
            return invalid(format!("attribute '{name}' has {} entries for {n} spatial dimensions", v.len()));
        }
        Ok(v)
    };
    let strides = list("strides", 1)?;
    let dilations = list("dilations", 1)?;
    let mut pads = cx.attrs.opt_ints("pads")?.unwrap_or_else(|| vec![0; 2 * n]);
    if pads.len() != 2 * n {
        return invalid(format!("attribute 'pads' has {} entries for {n} spatial dimensions", pads.len()));
    }
    // Bounds that keep the window arithmetic below (and tsr's shape rule) far from overflow.
    const LIMIT: i64 = 1 << 31;
    let positive = |v: &[i64]| v.iter().all(|&x| (1..=LIMIT).contains(&x));
    if !positive(&kernel) || !positive(&strides) || !positive(&dilations) {
        return invalid("kernel extents, strides and dilations must be in 1..=2^31");
    }
    if !pads.iter().all(|&p| (0..=LIMIT).contains(&p)) {
        return invalid("pads must be in 0..=2^31");
    }
    match cx.attrs.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" => {}
        "VALID" => pads = vec![0; 2 * n],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            for d in 0..n {
                if strides[d] < 1 {
                    return invalid("strides must be positive");
                }
                let Some(extent) = spatial[d] else {
                    return unsupported(format!("auto_pad = {mode} over a symbolic spatial dimension"));
                };
                let out = (extent + strides[d] - 1) / strides[d];
                let span = (kernel[d] - 1) * dilations[d] + 1;
                let total = ((out - 1) * strides[d] + span - extent).max(0);
                let small = total / 2;
                let (begin, end) = if mode == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                pads[d] = begin;
                pads[d + n] = end;
            }
        }
        other => return invalid(format!("unknown auto_pad = '{other}'")),
    }
    Ok(Geometry { kernel, strides, dilations, pads })
}

impl Geometry {
    /// The 2-D tsr window; a 1-D geometry gets a unit height in front.
    fn window(&self) -> Window {
        if self.kernel.len() == 1 {
            Window {
                strides: [1, self.strides[0]],
                pads: [0, self.pads[0], 0, self.pads[1]],
                dilations: [1, self.dilations[0]],
            }
        } else {
            Window {
                strides: [self.strides[0], self.strides[1]],
                pads: [self.pads[0], self.pads[1], self.pads[2], self.pads[3]],
                dilations: [self.dilations[0], self.dilations[1]],
            }
        }
    }

    fn kernel2(&self) -> [i64; 2] {
        if self.kernel.len() == 1 {
            [1, self.kernel[0]]
        } else {
            [self.kernel[0], self.kernel[1]]
        }
    }
}

/// The spatial extents of an `[N, C, spatial...]` value with 1 or 2 spatial dimensions, `None`
/// for a symbolic one (tsr's window rule computes over it).
fn spatial_extents(imp: &Importer, x: ValueId, what: &str) -> BuildResult<Vec<Option<i64>>> {
    let ty = imp.ty(x);
    if ty.rank() < 3 {
        return invalid(format!("{what} must be [N, C, spatial...], got {ty}"));
    }
    if ty.rank() > 4 {
        return unsupported(format!("{}-D {what}s (tessera has 1-D and 2-D)", ty.rank() - 2));
    }
    Ok(ty.dims[2..].iter().map(|d| d.as_static().map(|n| n as i64)).collect())
}

/// `[N, C, L]` -> `[N, C, 1, L]`, so 1-D windows run as 2-D ones.
fn to_2d(imp: &mut Importer, x: ValueId) -> BuildResult<ValueId> {
    let mut dims = imp.ty(x).dims;
    if dims.len() == 3 {
        dims.insert(2, Dim::Static(1));
    }
    imp.reshape(x, dims)
}

/// Undoes [`to_2d`] on a result when the input was 1-D.
fn from_2d(imp: &mut Importer, y: ValueId, one_d: bool) -> BuildResult<ValueId> {
    if !one_d {
        return Ok(y);
    }
    let mut dims = imp.ty(y).dims;
    dims.remove(2);
    imp.reshape(y, dims)
}

fn conv(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, w) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let mut y = conv_values(imp, cx, x, w)?;
    if let Some(b) = imp.opt_value(cx, 2)? {
        y = add_channel_bias(imp, y, b)?;
    }
    one(y)
}

/// `y + b` for a `[M]` bias over `[N, M, spatial...]`.
fn add_channel_bias(imp: &mut Importer, y: ValueId, b: ValueId) -> BuildResult<ValueId> {
    // B is [M]; as [M, 1, ...] it broadcasts over the spatial dimensions.
    let mut dims = imp.ty(b).dims;
    dims.extend(std::iter::repeat_n(Dim::Static(1), imp.ty(y).rank().saturating_sub(2)));
    let b = imp.reshape(b, dims)?;
    imp.binary(BinaryOp::Add, y, b)
}

/// `w - zero_point` in i32 (f64 for the convolution), the zero point a scalar or one per
/// output channel.
fn centered_weight(imp: &mut Importer, w: ValueId, zp: Option<ValueId>) -> BuildResult<ValueId> {
    let w = imp.cast(w, DType::I32)?;
    let w = match zp {
        Some(z) => {
            let zty = imp.ty(z);
            let rank = imp.ty(w).rank();
            let mut dims = vec![Dim::Static(1); rank];
            if zty.rank() == 1 && zty.dims[0] != Dim::Static(1) {
                dims[0] = zty.dims[0].clone();
            }
            let z = imp.reshape(z, dims)?;
            let z = imp.cast(z, DType::I32)?;
            imp.binary(BinaryOp::Sub, w, z)?
        }
        None => w,
    };
    imp.cast(w, DType::F64)
}

/// `x - zero_point` (a scalar) in f64.
fn centered_input(imp: &mut Importer, x: ValueId, zp: Option<ValueId>) -> BuildResult<ValueId> {
    let x = imp.cast(x, DType::I32)?;
    let x = match zp {
        Some(z) => {
            let rank = imp.ty(x).rank();
            let z = imp.reshape(z, vec![Dim::Static(1); rank])?;
            let z = imp.cast(z, DType::I32)?;
            imp.binary(BinaryOp::Sub, x, z)?
        }
        None => x,
    };
    imp.cast(x, DType::F64)
}

/// `ConvInteger`: the convolution of the centered operands, exact in f64, as int32.
fn conv_integer(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, w) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let (x_zp, w_zp) = (imp.opt_value(cx, 2)?, imp.opt_value(cx, 3)?);
    let x = centered_input(imp, x, x_zp)?;
    let w = centered_weight(imp, w, w_zp)?;
    let y = conv_values(imp, cx, x, w)?;
    one(imp.cast(y, DType::I32)?)
}

/// `QLinearConv` as onnx's reference computes it: the int32 convolution of the centered
/// operands (plus the int32 bias), times `x_scale * w_scale / y_scale` (`w_scale` per output
/// channel or one), plus the output zero point, clipped to the output type and rounded.
fn qlinear_conv(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let (x_scale, x_zp) = (imp.value(cx, 1)?, imp.opt_value(cx, 2)?);
    let w = imp.value(cx, 3)?;
    let (w_scale, w_zp) = (imp.value(cx, 4)?, imp.opt_value(cx, 5)?);
    let (y_scale, y_zp) = (imp.value(cx, 6)?, imp.opt_value(cx, 7)?);
    let out = match y_zp {
        Some(z) => imp.ty(z).dtype,
        None => imp.ty(x).dtype,
    };
    let xc = centered_input(imp, x, x_zp)?;
    let wc = centered_weight(imp, w, w_zp)?;
    let mut y = conv_values(imp, cx, xc, wc)?;
    if let Some(b) = imp.opt_value(cx, 8)? {
        let b = imp.cast(b, DType::F64)?;
        y = add_channel_bias(imp, y, b)?;
    }
    let rank = imp.ty(y).rank();
    let ones = vec![Dim::Static(1); rank];
    let xs = imp.reshape(x_scale, ones.clone())?;
    let ys = imp.reshape(y_scale, ones.clone())?;
    let wty = imp.ty(w_scale);
    let mut w_dims = ones.clone();
    if wty.rank() == 1 && wty.dims[0] != Dim::Static(1) {
        w_dims[1] = wty.dims[0].clone();
    }
    let ws = imp.reshape(w_scale, w_dims)?;
    // x_scale * w_scale / y_scale in the scales' type, then the f64 product.
    let xw = imp.binary(BinaryOp::Mul, xs, ws)?;
    let factor = imp.binary(BinaryOp::Div, xw, ys)?;
    let factor = imp.cast(factor, DType::F64)?;
    let dims = imp.ty(y).dims;
    let factor = imp.broadcast(factor, &dims)?;
    let mut r = imp.binary(BinaryOp::Mul, y, factor)?;
    if let Some(z) = y_zp {
        let z = imp.reshape(z, ones)?;
        let z = imp.cast(z, DType::F64)?;
        let z = imp.broadcast(z, &dims)?;
        r = imp.binary(BinaryOp::Add, r, z)?;
    }
    if let Some((lo, hi)) = out.int_range() {
        r = imp.binary_scalar(BinaryOp::Max, r, lo as f64)?;
        r = imp.binary_scalar(BinaryOp::Min, r, hi as f64)?;
    }
    let r = imp.unary(tessera_ir::ops::elementwise::UnaryOp::Round, r)?;
    one(imp.cast(r, out)?)
}

/// The convolution of `x` by `w` with the node's window attributes (no bias).
fn conv_values(imp: &mut Importer, cx: &NodeCx, x: ValueId, w: ValueId) -> BuildResult<ValueId> {
    let spatial = spatial_extents(imp, x, "input")?;
    let wty = imp.ty(w);
    if wty.rank() != spatial.len() + 2 {
        return invalid(format!("weight {wty} does not match the input's {} spatial dimensions", spatial.len()));
    }
    let kernel = match cx.attrs.opt_ints("kernel_shape")? {
        Some(k) => k,
        None => wty.dims[2..]
            .iter()
            .map(|d| d.as_static().map(|n| n as i64))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| super::BuildError::Unsupported(format!("symbolic kernel extents in {wty}")))?,
    };
    let g = geometry(cx, kernel, &spatial)?;
    let groups = cx.attrs.int("group", 1)?;
    let channels = imp.ty(x).dims[1].as_static().unwrap_or(u64::MAX);
    if groups < 1 || groups as u64 > channels {
        return invalid(format!("group = {groups} for {} input channels", imp.ty(x).dims[1]));
    }
    let one_d = spatial.len() == 1;
    let (x2, w2) = (to_2d(imp, x)?, to_2d(imp, w)?);
    let y = imp.add(Op::Conv2d { window: g.window(), groups }, &[x2, w2])?;
    from_2d(imp, y, one_d)
}

fn pool(imp: &mut Importer, cx: &NodeCx, kind: PoolKind) -> BuildResult<Vec<Slot>> {
    if cx.wants_output(1) {
        return unsupported("the Indices output of MaxPool");
    }
    let x = imp.value(cx, 0)?;
    let dtype = imp.ty(x).dtype;
    if !dtype.is_float() {
        // Max pooling of integers runs in f64, exact for every integer below 2^53.
        if kind != PoolKind::Max || dtype == DType::Bool {
            return unsupported(format!("pooling {dtype} values"));
        }
        let wide = imp.cast(x, DType::F64)?;
        let y = pool_values(imp, cx, kind, wide)?;
        return one(imp.cast(y, dtype)?);
    }
    one(pool_values(imp, cx, kind, x)?)
}

/// The pooling of `pool` on a float value `x`.
fn pool_values(imp: &mut Importer, cx: &NodeCx, kind: PoolKind, x: ValueId) -> BuildResult<ValueId> {
    let three_d = imp.ty(x).rank() == 5;
    let spatial = if three_d { static_spatial(imp, x)? } else { spatial_extents(imp, x, "input")? };
    let kernel = cx
        .attrs
        .opt_ints("kernel_shape")?
        .ok_or_else(|| super::BuildError::Invalid("missing required attribute 'kernel_shape'".into()))?;
    if kernel.len() != spatial.len() {
        return invalid(format!("kernel_shape {kernel:?} does not match {} spatial dimensions", spatial.len()));
    }
    let mut g = geometry(cx, kernel, &spatial)?;
    let n = spatial.len();
    let count_include_pad = kind == PoolKind::Avg && cx.attrs.int("count_include_pad", 0)? != 0;
    let ceil_mode = cx.attrs.int("ceil_mode", 0)? != 0;
    let mut x = x;
    if count_include_pad && g.pads.iter().any(|&p| p > 0) {
        if ceil_mode {
            return unsupported("count_include_pad together with ceil_mode");
        }
        // Zero-padding the input explicitly makes the padding count as elements.
        let mut all_pads = vec![0i64; 2 * (n + 2)];
        for d in 0..n {
            all_pads[2 + d] = g.pads[d];
            all_pads[(n + 2) + 2 + d] = g.pads[n + d];
        }
        x = super::shape::slicing::pad_constant(imp, x, &all_pads, 0.0)?;
        g.pads = vec![0; 2 * n];
    }
    let spatial = if three_d { static_spatial(imp, x)? } else { spatial_extents(imp, x, "input")? };
    if ceil_mode {
        extend_for_ceil_mode(&mut g, &spatial)?;
    }
    if three_d {
        return pool_3d(imp, kind, x, &g);
    }
    let one_d = n == 1;
    let x2 = to_2d(imp, x)?;
    let y = imp.add(Op::Pool2d { kind, kernel: g.kernel2(), window: g.window() }, &[x2])?;
    from_2d(imp, y, one_d)
}

/// `ceil_mode`: grows the end pads so the output size rounds up, keeping the last window
/// starting inside the input or its begin padding.
fn extend_for_ceil_mode(g: &mut Geometry, spatial: &[Option<i64>]) -> BuildResult<()> {
    let n = spatial.len();
    {
        for (d, &extent) in spatial.iter().enumerate() {
            let Some(extent) = extent else {
                return unsupported("ceil_mode over a symbolic spatial dimension");
            };
            let span = (g.kernel[d] - 1) * g.dilations[d] + 1;
            let padded = extent + g.pads[d] + g.pads[n + d];
            if padded < span || g.strides[d] < 1 {
                continue; // the shape rule reports it
            }
            let mut out = (padded - span + g.strides[d] - 1) / g.strides[d] + 1;
            // The last window must start inside the input or its begin padding.
            if (out - 1) * g.strides[d] >= extent + g.pads[d] {
                out -= 1;
            }
            let extra = (out - 1) * g.strides[d] + span - padded;
            if extra > 0 {
                g.pads[n + d] += extra;
            }
        }
    }
    Ok(())
}

/// The (D, H, W) extents of a `[N, C, D, H, W]` value, which 3-D pooling needs static.
fn static_spatial(imp: &Importer, x: ValueId) -> BuildResult<Vec<Option<i64>>> {
    match imp.ty(x).static_shape() {
        Some(shape) => Ok(shape[2..].iter().map(|&e| Some(e as i64)).collect()),
        None => unsupported("3-D pooling over symbolic dimensions"),
    }
}

/// 3-D pooling as two 2-D pools: first over (H, W) with the depth folded into the channels,
/// then over D with (H, W) flattened into one axis. The max over a box is the max over its
/// depth of the maxima over its planes; the average is too, because a box's valid elements (the
/// padding never counts: `count_include_pad` pads explicitly before) are the product of the
/// valid depths and the valid plane positions, so every plane of one window has the same count.
fn pool_3d(imp: &mut Importer, kind: PoolKind, x: ValueId, g: &Geometry) -> BuildResult<ValueId> {
    let Some(shape) = imp.ty(x).static_shape() else {
        return unsupported("3-D pooling over symbolic dimensions");
    };
    let [n, c, d, h, w] = [0, 1, 2, 3, 4].map(|i| shape[i]);
    let st = |v: u64| Dim::Static(v);
    let planes = imp.reshape(x, vec![st(n), st(c * d), st(h), st(w)])?;
    let window = Window {
        strides: [g.strides[1], g.strides[2]],
        pads: [g.pads[1], g.pads[2], g.pads[4], g.pads[5]],
        dilations: [g.dilations[1], g.dilations[2]],
    };
    let hw = imp.add(Op::Pool2d { kind, kernel: [g.kernel[1], g.kernel[2]], window }, &[planes])?;
    let Some(hw_shape) = imp.ty(hw).static_shape() else { return invalid("pooled planes lost their shape") };
    let (h2, w2) = (hw_shape[2], hw_shape[3]);
    let columns = imp.reshape(hw, vec![st(n), st(c), st(d), st(h2 * w2)])?;
    let window =
        Window { strides: [g.strides[0], 1], pads: [g.pads[0], 0, g.pads[3], 0], dilations: [g.dilations[0], 1] };
    let y = imp.add(Op::Pool2d { kind, kernel: [g.kernel[0], 1], window }, &[columns])?;
    let Some(y_shape) = imp.ty(y).static_shape() else { return invalid("pooled depth lost its shape") };
    imp.reshape(y, vec![st(n), st(c), st(y_shape[2]), st(h2), st(w2)])
}

fn global_pool(imp: &mut Importer, cx: &NodeCx, kind: ReduceKind) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let rank = imp.ty(x).rank();
    if rank < 3 {
        return invalid(format!("input must be [N, C, spatial...], got {}", imp.ty(x)));
    }
    let axes = (2..rank as i64).collect();
    one(imp.add(Op::Reduce { kind, axes, keepdims: true }, &[x])?)
}

/// `(sum over the window of |x|^p)^(1/p)`: the padding is made explicit (zeros), then an average
/// pool without padding times the window size gives the sum.
fn lp_pool(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    if !imp.ty(x).dtype.is_float() {
        return invalid(format!("LpPool needs a float input, got {}", imp.ty(x)));
    }
    if cx.attrs.int("ceil_mode", 0)? != 0 {
        return unsupported("LpPool with ceil_mode");
    }
    let three_d = imp.ty(x).rank() == 5;
    let spatial = if three_d { static_spatial(imp, x)? } else { spatial_extents(imp, x, "input")? };
    let n = spatial.len();
    let kernel = cx
        .attrs
        .opt_ints("kernel_shape")?
        .ok_or_else(|| super::BuildError::Invalid("missing required attribute 'kernel_shape'".into()))?;
    if kernel.len() != n {
        return invalid(format!("kernel_shape {kernel:?} does not match {n} spatial dimensions"));
    }
    let mut g = geometry(cx, kernel, &spatial)?;
    let p = cx.attrs.int("p", 2)?;
    if p < 1 {
        return invalid(format!("p = {p}"));
    }
    let abs = imp.unary(tessera_ir::ops::elementwise::UnaryOp::Abs, x)?;
    let powered = if p == 1 { abs } else { imp.binary_scalar(BinaryOp::Pow, abs, p as f64)? };
    let mut all_pads = vec![0i64; 2 * (n + 2)];
    for d in 0..n {
        all_pads[2 + d] = g.pads[d];
        all_pads[(n + 2) + 2 + d] = g.pads[n + d];
    }
    let padded = super::shape::slicing::pad_constant(imp, powered, &all_pads, 0.0)?;
    g.pads = vec![0; 2 * n];
    let avg = if three_d {
        pool_3d(imp, PoolKind::Avg, padded, &g)?
    } else {
        let x2 = to_2d(imp, padded)?;
        let avg = imp.add(Op::Pool2d { kind: PoolKind::Avg, kernel: g.kernel2(), window: g.window() }, &[x2])?;
        from_2d(imp, avg, n == 1)?
    };
    let window: i64 = g.kernel.iter().product();
    let sum = imp.binary_scalar(BinaryOp::Mul, avg, window as f64)?;
    one(if p == 1 { sum } else { imp.binary_scalar(BinaryOp::Pow, sum, 1.0 / p as f64)? })
}

/// Inserts `s - 1` zeros between neighbours along `axis` (a static extent `n` becomes
/// `(n - 1) * s + 1`), the input side of a strided transposed convolution.
fn dilate_axis(imp: &mut Importer, x: ValueId, axis: usize, s: i64) -> BuildResult<ValueId> {
    if s == 1 {
        return Ok(x);
    }
    let dims = imp.ty(x).dims;
    if dims[axis] == Dim::Static(0) {
        return Ok(x);
    }
    let mut split = dims.clone();
    split.insert(axis + 1, Dim::Static(1));
    let x1 = imp.reshape(x, split.clone())?;
    split[axis + 1] = Dim::Static(s as u64 - 1);
    let zero = imp.scalar(imp.ty(x).dtype, 0.0);
    let zeros = imp.broadcast(zero, &split)?;
    let spread = imp.add(Op::Concat { axis: axis as i64 + 1 }, &[x1, zeros])?;
    let mut merged = dims;
    let spread_extent = merged[axis].to_expr().and_then(|n| n.scale(s)).and_then(Dim::from_expr);
    merged[axis] = spread_extent.map_err(|e| super::BuildError::Invalid(e.to_string()))?;
    let flat = imp.reshape(spread, merged)?;
    let rank = imp.ty(flat).rank();
    let (mut st, mut en) = (vec![0; rank], vec![i64::MAX; rank]);
    // Drop the s - 1 zeros after the last element: n * s - (s - 1) remain.
    en[axis] = 1 - s;
    st[axis] = 0;
    imp.add(Op::Slice { starts: st, ends: en, steps: vec![1; rank] }, &[flat])
}

/// The transposed convolution as a convolution: the input dilated by the stride and padded by
/// `dilation * (k - 1) - pad` (plus `output_padding` at the end), the kernel flipped and its
/// channel axes swapped per group.
fn conv_transpose(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (x, w) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let spatial = spatial_extents(imp, x, "input")?;
    let n = spatial.len();
    let wty = imp.ty(w);
    if wty.rank() != n + 2 {
        return invalid(format!("weight {wty} does not match the input's {n} spatial dimensions"));
    }
    let wdims = wty.static_shape().ok_or_else(|| super::BuildError::Unsupported(format!("a symbolic weight {wty}")))?;
    let kernel = cx.attrs.opt_ints("kernel_shape")?.unwrap_or_else(|| wdims[2..].iter().map(|&d| d as i64).collect());
    let groups = cx.attrs.int("group", 1)?;
    let (c_in, m_per_group) = (wdims[0] as i64, wdims[1] as i64);
    if groups < 1 || c_in % groups != 0 {
        return invalid(format!("group = {groups} does not divide {c_in} input channels"));
    }
    let auto_pad = cx.attrs.string("auto_pad", "NOTSET")?;
    // Geometry without auto_pad; the transposed padding rules differ from Conv's.
    let g = {
        let mut plain = geometry(cx, kernel.clone(), &spatial)?;
        if auto_pad != "NOTSET" {
            plain.pads = vec![0; 2 * n];
        }
        plain
    };
    let output_padding = cx.attrs.opt_ints("output_padding")?.unwrap_or_else(|| vec![0; n]);
    if output_padding.len() != n {
        return invalid(format!("output_padding has {} entries for {n} spatial dimensions", output_padding.len()));
    }
    let output_shape = cx.attrs.opt_ints("output_shape")?;
    let mut pads = g.pads.clone();
    for d in 0..n {
        if output_shape.is_none() && !matches!(auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER") {
            continue;
        }
        let Some(extent) = spatial[d] else {
            return unsupported("output_shape or auto_pad over a symbolic spatial dimension");
        };
        // Attributes are the model's: every size is computed with checked arithmetic.
        let full = (|| {
            let reach = (kernel[d] - 1).checked_mul(g.dilations[d])?;
            g.strides[d].checked_mul(extent - 1)?.checked_add(output_padding[d])?.checked_add(reach)?.checked_add(1)
        })();
        let Some(full) = full else {
            return invalid(format!("ConvTranspose: the output extent of spatial dimension {d} overflows"));
        };
        let overflow = || invalid(format!("ConvTranspose: the padding of spatial dimension {d} overflows"));
        let wanted = match (&output_shape, auto_pad.as_str()) {
            (Some(shape), _) => Some(*(shape.len() + d).checked_sub(n).and_then(|i| shape.get(i)).unwrap_or(&full)),
            (None, "SAME_UPPER" | "SAME_LOWER") => match extent.checked_mul(g.strides[d]) {
                Some(out) => Some(out),
                None => return overflow(),
            },
            _ => None,
        };
        if let Some(out) = wanted {
            let Some(total) = full.checked_sub(out) else { return overflow() };
            // Floor division, as ONNX's reference: a negative total (an output larger than the
            // transposed convolution makes) puts the extra element at the end.
            let (small, big) = (total.div_euclid(2), total - total.div_euclid(2));
            (pads[d], pads[n + d]) = if auto_pad == "SAME_UPPER" { (small, big) } else { (big, small) };
        }
    }
    // Input side: dilate by the stride, then pad (or crop) to what a stride-1 conv needs.
    let mut xx = x;
    for d in 0..n {
        xx = dilate_axis(imp, xx, 2 + d, g.strides[d])?;
    }
    let mut all_pads = vec![0i64; 2 * (n + 2)];
    for d in 0..n {
        let crops = (|| {
            let reach = g.dilations[d].checked_mul(kernel[d] - 1)?;
            Some((reach.checked_sub(pads[d])?, reach.checked_sub(pads[n + d])?.checked_add(output_padding[d])?))
        })();
        let Some((before, after)) = crops else {
            return invalid(format!("ConvTranspose: the padding of spatial dimension {d} overflows"));
        };
        (all_pads[2 + d], all_pads[(n + 2) + 2 + d]) = (before, after);
    }
    xx = super::shape::slicing::pad_constant(imp, xx, &all_pads, 0.0)?;
    // Kernel side: [C, M/g, k...] -> [g, C/g, M/g, k...] -> [g, M/g, C/g, k...] -> [M, C/g, k...],
    // flipped along every spatial axis.
    let cg = (c_in / groups) as u64;
    let gu = groups as u64;
    let mut grouped = vec![Dim::Static(gu), Dim::Static(cg), Dim::Static(m_per_group as u64)];
    grouped.extend(wdims[2..].iter().map(|&d| Dim::Static(d)));
    let wg = imp.reshape(w, grouped)?;
    let mut perm: Vec<i64> = vec![0, 2, 1];
    perm.extend(3..(n as i64 + 3));
    let wt = imp.add(Op::Transpose { perm }, &[wg])?;
    let mut flat = vec![Dim::Static(gu * m_per_group as u64), Dim::Static(cg)];
    flat.extend(wdims[2..].iter().map(|&d| Dim::Static(d)));
    let mut wf = imp.reshape(wt, flat)?;
    let rank = n + 2;
    let (mut st, en, mut step) = (vec![0i64; rank], vec![i64::MAX; rank], vec![1i64; rank]);
    for d in 2..rank {
        st[d] = -1;
        step[d] = -1;
    }
    let mut en = en;
    for e in en.iter_mut().skip(2) {
        *e = i64::MIN;
    }
    wf = imp.add(Op::Slice { starts: st, ends: en, steps: step }, &[wf])?;
    let conv_geometry =
        Geometry { kernel: kernel.clone(), strides: vec![1; n], dilations: g.dilations.clone(), pads: vec![0; 2 * n] };
    let one_d = n == 1;
    let (x2, w2) = (to_2d(imp, xx)?, to_2d(imp, wf)?);
    let y = imp.add(Op::Conv2d { window: conv_geometry.window(), groups }, &[x2, w2])?;
    let mut y = from_2d(imp, y, one_d)?;
    if let Some(b) = imp.opt_value(cx, 2)? {
        let mut dims = imp.ty(b).dims;
        dims.extend(std::iter::repeat_n(Dim::Static(1), n));
        let b = imp.reshape(b, dims)?;
        y = imp.binary(BinaryOp::Add, y, b)?;
    }
    one(y)
}
