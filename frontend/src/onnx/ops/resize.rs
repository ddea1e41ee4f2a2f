//! `Resize`: separable interpolation (nearest, linear, cubic, with antialiasing) as one gather
//! per filter tap and axis, with tap weights computed at import time. The coordinate mapping,
//! neighbour choice and coefficients follow ONNX's reference implementation, so results match
//! it up to the rounding of the intermediate per-axis results.

use super::{axis_of, generated_len, invalid, one, unsupported, BuildError, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot, SymInt};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("Resize", resize);
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// Everything that decides one output coordinate's taps.
struct Config {
    mode: Mode,
    nearest_mode: String,
    transform: String,
    cubic_a: f64,
    antialias: bool,
    exclude_outside: bool,
}

/// One axis of the resize: per output position, the source indices and weights of each tap and
/// whether the position is extrapolated (tf_crop_and_resize outside the input).
struct AxisPlan {
    indices: Vec<Vec<i64>>,
    weights: Vec<Vec<f64>>,
    extrapolated: Vec<bool>,
}

fn nearest_coeffs(ratio: f64, mode: &str) -> BuildResult<Vec<f64>> {
    let b = |x: bool| x as i64 as f64;
    if ratio.fract() == 0.0 {
        return Ok(vec![0.0, 1.0]);
    }
    Ok(match mode {
        "round_prefer_floor" => vec![b(ratio <= 0.5), b(ratio > 0.5)],
        "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
        "floor" => vec![1.0, 0.0],
        "ceil" => vec![0.0, 1.0],
        other => return invalid(format!("unknown nearest_mode '{other}'")),
    })
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
        ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a) * ((1.0 - r) + 1.0) - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let coeff = |x: f64| {
        let x = x.abs();
        let (x2, x3) = (x * x, x * x * x);
        if x <= 1.0 {
            (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
        } else if x < 2.0 {
            a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let start = (-2.0 / scale).floor() as i64 + 1;
    let end = 2 - start;
    let c: Vec<f64> = (start..end).map(|i| coeff(scale * (i as f64 - r))).collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let footprint = 2 - 2 * start;
    let c: Vec<f64> =
        (start..start + footprint).map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0)).collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

/// The `n` integers nearest to `x` in `[lo, hi)`, ties to the smaller, ascending.
fn neighbours(x: f64, n: usize, lo: i64, hi: i64) -> Vec<i64> {
    let mut all: Vec<i64> = (lo..hi).collect();
    all.sort_by(|a, b| {
        let (da, db) = ((x - *a as f64).abs(), (x - *b as f64).abs());
        da.total_cmp(&db).then(a.cmp(b))
    });
    all.truncate(n);
    all.sort_unstable();
    all
}

fn plan_axis(cfg: &Config, n_in: u64, n_out: u64, scale: f64, roi: (f64, f64)) -> BuildResult<AxisPlan> {
    generated_len(n_out.saturating_mul(n_in), "Resize's tap table")?;
    let input_width = n_in as f64;
    let output_width = scale * input_width;
    let mut plan = AxisPlan { indices: vec![], weights: vec![], extrapolated: vec![] };
    for x in 0..n_out {
        let xf = x as f64;
        let x_ori = match cfg.transform.as_str() {
            "align_corners" if output_width == 1.0 => 0.0,
            "align_corners" => xf * (input_width - 1.0) / (output_width - 1.0),
            "asymmetric" => xf / scale,
            "tf_crop_and_resize" => {
                let base = if output_width == 1.0 {
                    (roi.1 - roi.0) * (input_width - 1.0) / 2.0
                } else {
                    xf * (roi.1 - roi.0) * (input_width - 1.0) / (output_width - 1.0)
                };
                base + roi.0 * (input_width - 1.0)
            }
            "pytorch_half_pixel" if output_width == 1.0 => -0.5,
            "pytorch_half_pixel" | "half_pixel" => (xf + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adjustment = n_out as f64 / output_width;
                let offset = input_width / 2.0 * (1.0 - adjustment);
                offset + (xf + 0.5) / scale - 0.5
            }
            other => return invalid(format!("unknown coordinate_transformation_mode '{other}'")),
        };
        let extrapolated = cfg.transform == "tf_crop_and_resize" && (x_ori < 0.0 || x_ori > input_width - 1.0);
        let ratio = if x_ori.fract() == 0.0 { 1.0 } else { x_ori - x_ori.floor() };
        let mut coeffs = match cfg.mode {
            Mode::Nearest => nearest_coeffs(ratio, &cfg.nearest_mode)?,
            Mode::Linear if cfg.antialias => linear_coeffs_antialias(ratio, scale),
            Mode::Linear => vec![1.0 - ratio, ratio],
            Mode::Cubic if cfg.antialias => cubic_coeffs_antialias(ratio, scale, cfg.cubic_a),
            Mode::Cubic => cubic_coeffs(ratio, cfg.cubic_a),
        };
        // The reference pads the data by ceil(n / 2) in edge mode and picks the n nearest.
        let n = coeffs.len();
        let pad = n.div_ceil(2) as i64;
        let idx = neighbours(x_ori, n, -pad, n_in as i64 + pad);
        if cfg.exclude_outside {
            for (c, &i) in coeffs.iter_mut().zip(&idx) {
                if i < 0 || i >= n_in as i64 {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            coeffs.iter_mut().for_each(|c| *c /= sum);
        }
        let clamped: Vec<i64> = idx.iter().map(|&i| i.clamp(0, n_in as i64 - 1)).collect();
        plan.indices.push(clamped);
        plan.weights.push(coeffs);
        plan.extrapolated.push(extrapolated);
    }
    Ok(plan)
}

/// Applies one axis's plan: a gather per tap, weighted and summed (nearest: the one tap with
/// weight 1, unweighted, so integers and non-finite values pass through exactly).
fn apply_axis(
    imp: &mut Importer,
    x: ValueId,
    axis: usize,
    plan: &AxisPlan,
    extrapolation: f64,
) -> BuildResult<ValueId> {
    let ty = imp.ty(x);
    let n_out = plan.indices.len();
    let taps = plan.indices.first().map_or(0, Vec::len);
    let one_hot = plan
        .weights
        .iter()
        .all(|w| w.iter().all(|&c| c == 0.0 || c == 1.0) && w.iter().filter(|&&c| c == 1.0).count() == 1);
    let mut weight_shape = vec![1usize; ty.rank()];
    weight_shape[axis] = n_out;
    let mut y = if one_hot {
        let picks: Vec<i64> = plan
            .indices
            .iter()
            .zip(&plan.weights)
            .map(|(i, w)| i[w.iter().position(|&c| c == 1.0).unwrap_or(0)])
            .collect();
        let idx = imp.constant(Tensor::from_i64(DType::I64, vec![n_out], picks));
        imp.add(Op::Gather { axis: axis as i64 }, &[x, idx])?
    } else {
        if !ty.dtype.is_float() {
            return unsupported(format!("linear or cubic resizing of {}", ty.dtype));
        }
        let mut acc: Option<ValueId> = None;
        for t in 0..taps {
            let idx =
                imp.constant(Tensor::from_i64(DType::I64, vec![n_out], plan.indices.iter().map(|i| i[t]).collect()));
            let g = imp.add(Op::Gather { axis: axis as i64 }, &[x, idx])?;
            let w = imp.constant(Tensor::from_f64(
                ty.dtype,
                weight_shape.clone(),
                plan.weights.iter().map(|w| w[t]).collect(),
            ));
            let term = imp.binary(BinaryOp::Mul, g, w)?;
            acc = Some(match acc {
                Some(a) => imp.binary(BinaryOp::Add, a, term)?,
                None => term,
            });
        }
        acc.ok_or_else(|| BuildError::Invalid("no interpolation taps".into()))?
    };
    if plan.extrapolated.iter().any(|&e| e) {
        let mask = imp.constant(Tensor::from_i64(
            DType::Bool,
            weight_shape,
            plan.extrapolated.iter().map(|&e| e as i64).collect(),
        ));
        let value = imp.scalar(ty.dtype, extrapolation);
        y = imp.select(mask, value, y)?;
    }
    Ok(y)
}

/// `Resize` over symbolic dimensions, by constant `scales`: an axis scaled by 1 stays, and an
/// integer upscale `k` in nearest mode with the `asymmetric` transform and `floor` rounding
/// (output `i` reads input `floor(i / k)`) repeats each element `k` times, `n -> k * n`, as a
/// reshape, broadcast and reshape. Other modes need the extents, so they are unsupported here.
fn resize_symbolic(
    imp: &mut Importer,
    cx: &NodeCx,
    x: ValueId,
    cfg: &Config,
    axes: &[usize],
) -> BuildResult<Vec<Slot>> {
    let ty = imp.ty(x);
    let unsupported_here = |what: &str| unsupported(format!("resizing symbolic {ty} {what}"));
    if imp.const_ints(cx, 3, "sizes")?.is_some_and(|s| !s.is_empty()) {
        return unsupported_here("to constant sizes");
    }
    let scales = imp.const_input(cx, 2, "scales")?.filter(|t| !t.is_empty()).map(|t| t.to_f64_vec());
    let Some(scales) = scales else { return invalid("exactly one of scales and sizes must be given") };
    if scales.len() != axes.len() {
        return invalid(format!("scales {scales:?} for {} axes", axes.len()));
    }
    let mut y = x;
    for (&axis, &scale) in axes.iter().zip(&scales) {
        if scale == 1.0 && cfg.transform != "tf_crop_and_resize" {
            continue;
        }
        let repeat = cfg.mode == Mode::Nearest
            && cfg.transform == "asymmetric"
            && cfg.nearest_mode == "floor"
            && scale.fract() == 0.0
            && (1.0..=65536.0).contains(&scale);
        if !repeat {
            return unsupported_here(&format!(
                "by {scale} ({} mode, {} transform): only integer nearest upscales with the asymmetric transform \
                 and floor rounding",
                cfg.nearest_mode, cfg.transform
            ));
        }
        let k = scale as u64;
        let dims = imp.ty(y).dims;
        let mut split = dims.clone();
        split.insert(axis + 1, Dim::Static(1));
        let column = imp.reshape(y, split.clone())?;
        split[axis + 1] = Dim::Static(k);
        let repeated = imp.broadcast(column, &split)?;
        let mut merged = dims;
        let extent = merged[axis].to_expr().and_then(|n| n.scale(k as i64)).and_then(Dim::from_expr);
        merged[axis] = extent.map_err(|e| BuildError::Invalid(e.to_string()))?;
        y = imp.reshape(repeated, merged)?;
    }
    one(y)
}

/// `Resize` of static extents to `sizes` that are dimension expressions (ViT interpolating its
/// position-embedding grid to `floordiv(height, 16)` patches): each axis whose size is symbolic
/// computes its taps and weights at run time, from `iota` over the output positions and the
/// bound size, with the formulas [`plan_axis`] applies at import (source coordinate by the
/// transform, the taps nearest it clamped to the edge, linear or cubic weights of the
/// fraction); constant sizes take [`plan_axis`] itself. Innermost axis first, as there. The
/// run-time path covers the `linear` and `cubic` modes with the `half_pixel`,
/// `pytorch_half_pixel`, `align_corners` and `asymmetric` transforms, without antialiasing or
/// `exclude_outside`; other combinations are refused.
fn resize_to_symbolic_sizes(
    imp: &mut Importer,
    x: ValueId,
    cfg: &Config,
    axes: &[usize],
    sizes: &[SymInt],
    extrapolation: f64,
) -> BuildResult<ValueId> {
    let ty = imp.ty(x);
    if sizes.len() != axes.len() {
        return invalid(format!("{} sizes for {} axes", sizes.len(), axes.len()));
    }
    let mut y = x;
    for i in (0..axes.len()).rev() {
        let axis = axes[i];
        let n_in = ty.dims[axis].as_static().ok_or_else(|| BuildError::Unsupported(format!("resizing {ty}")))?;
        match sizes[i].as_const() {
            Some(n) if n == n_in as i64 && cfg.transform != "tf_crop_and_resize" => continue,
            Some(n) if n >= 0 => {
                let plan = plan_axis(cfg, n_in, n as u64, n as f64 / n_in as f64, (0.0, 1.0))?;
                y = apply_axis(imp, y, axis, &plan, extrapolation)?;
            }
            Some(n) => return invalid(format!("size {n}")),
            None => y = resize_axis_at_run_time(imp, y, axis, n_in, &sizes[i], cfg)?,
        }
    }
    Ok(y)
}

/// One axis of [`resize_to_symbolic_sizes`] with the symbolic output extent `n_out`.
fn resize_axis_at_run_time(
    imp: &mut Importer,
    x: ValueId,
    axis: usize,
    n_in: u64,
    n_out: &SymInt,
    cfg: &Config,
) -> BuildResult<ValueId> {
    let ty = imp.ty(x);
    let refuse = |why: String| unsupported(format!("resizing {ty} to the symbolic extent {n_out} {why}"));
    if cfg.antialias || cfg.exclude_outside {
        return refuse("with antialiasing or exclude_outside".into());
    }
    if !ty.dtype.is_float() {
        return refuse(format!("for {}", ty.dtype));
    }
    let taps: Vec<i64> = match cfg.mode {
        Mode::Linear => vec![0, 1],
        Mode::Cubic => vec![-1, 0, 1, 2],
        Mode::Nearest => return refuse("in nearest mode".into()),
    };
    let f = DType::F32;
    let out_dim = super::shape::dims_of(std::slice::from_ref(n_out))?;
    let zero = imp.scalar(f, 0.0);
    let positions = imp.broadcast(zero, &out_dim)?;
    let o = imp.add(Op::Iota { axis: 0 }, &[positions])?;
    let extent = imp.dim_values(std::slice::from_ref(n_out), true)?;
    let out_f = imp.cast(extent, f)?;
    let in_f = n_in as f64;
    // The source coordinate of each output position, as plan_axis computes it.
    let half_pixel = |imp: &mut Importer| -> BuildResult<ValueId> {
        let centre = imp.binary_scalar(BinaryOp::Add, o, 0.5)?;
        let stretched = imp.binary_scalar(BinaryOp::Mul, centre, in_f)?;
        let source = imp.binary(BinaryOp::Div, stretched, out_f)?;
        imp.binary_scalar(BinaryOp::Sub, source, 0.5)
    };
    let is_one = |imp: &mut Importer| -> BuildResult<ValueId> {
        let one = imp.scalar(f, 1.0);
        imp.compare(CompareOp::Eq, out_f, one)
    };
    let x_ori = match cfg.transform.as_str() {
        "half_pixel" => half_pixel(imp)?,
        "pytorch_half_pixel" => {
            let source = half_pixel(imp)?;
            let single = is_one(imp)?;
            let edge = imp.scalar(f, -0.5);
            imp.select(single, edge, source)?
        }
        "align_corners" => {
            let stretched = imp.binary_scalar(BinaryOp::Mul, o, in_f - 1.0)?;
            let span = imp.binary_scalar(BinaryOp::Sub, out_f, 1.0)?;
            let source = imp.binary(BinaryOp::Div, stretched, span)?;
            let single = is_one(imp)?;
            let origin = imp.scalar(f, 0.0);
            imp.select(single, origin, source)?
        }
        "asymmetric" => {
            let stretched = imp.binary_scalar(BinaryOp::Mul, o, in_f)?;
            imp.binary(BinaryOp::Div, stretched, out_f)?
        }
        other => return refuse(format!("with the {other} transform")),
    };
    let base = imp.unary(UnaryOp::Floor, x_ori)?;
    let r = imp.binary(BinaryOp::Sub, x_ori, base)?;
    let base = imp.cast(base, DType::I64)?;
    let a = cfg.cubic_a;
    // Weights of the taps at base + t, as in linear interpolation and cubic_coeffs.
    let weight = |imp: &mut Importer, t: i64| -> BuildResult<ValueId> {
        let one_minus_r = |imp: &mut Importer| -> BuildResult<ValueId> {
            let negated = imp.binary_scalar(BinaryOp::Mul, r, -1.0)?;
            imp.binary_scalar(BinaryOp::Add, negated, 1.0)
        };
        // ((a * s - 5a) * s + 8a) * s - 4a for the far taps, at distance s in 1..2.
        let far = |imp: &mut Importer, s: ValueId| -> BuildResult<ValueId> {
            let mut v = imp.binary_scalar(BinaryOp::Mul, s, a)?;
            v = imp.binary_scalar(BinaryOp::Sub, v, 5.0 * a)?;
            v = imp.binary(BinaryOp::Mul, v, s)?;
            v = imp.binary_scalar(BinaryOp::Add, v, 8.0 * a)?;
            v = imp.binary(BinaryOp::Mul, v, s)?;
            imp.binary_scalar(BinaryOp::Sub, v, 4.0 * a)
        };
        // ((a + 2) * s - (a + 3)) * s * s + 1 for the near taps, at distance s in 0..1.
        let near = |imp: &mut Importer, s: ValueId| -> BuildResult<ValueId> {
            let mut v = imp.binary_scalar(BinaryOp::Mul, s, a + 2.0)?;
            v = imp.binary_scalar(BinaryOp::Sub, v, a + 3.0)?;
            v = imp.binary(BinaryOp::Mul, v, s)?;
            v = imp.binary(BinaryOp::Mul, v, s)?;
            imp.binary_scalar(BinaryOp::Add, v, 1.0)
        };
        match (&cfg.mode, t) {
            (Mode::Linear, 0) => one_minus_r(imp),
            (Mode::Linear, _) => Ok(r),
            (_, -1) => {
                let s = imp.binary_scalar(BinaryOp::Add, r, 1.0)?;
                far(imp, s)
            }
            (_, 0) => near(imp, r),
            (_, 1) => {
                let s = one_minus_r(imp)?;
                near(imp, s)
            }
            _ => {
                let s = one_minus_r(imp)?;
                let s = imp.binary_scalar(BinaryOp::Add, s, 1.0)?;
                far(imp, s)
            }
        }
    };
    let mut weight_dims = vec![Dim::Static(1); ty.rank()];
    weight_dims[axis] = out_dim[0].clone();
    let (low, high) = (
        imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0])),
        imp.constant(Tensor::from_i64(DType::I64, vec![], vec![n_in as i64 - 1])),
    );
    let mut acc: Option<ValueId> = None;
    for &t in &taps {
        let shift = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![t]));
        let mut tap = imp.binary(BinaryOp::Add, base, shift)?;
        tap = imp.binary(BinaryOp::Max, tap, low)?;
        tap = imp.binary(BinaryOp::Min, tap, high)?;
        let picked = imp.add(Op::Gather { axis: axis as i64 }, &[x, tap])?;
        let w = weight(imp, t)?;
        let w = imp.cast(w, ty.dtype)?;
        let w = imp.reshape(w, weight_dims.clone())?;
        let term = imp.binary(BinaryOp::Mul, picked, w)?;
        acc = Some(match acc {
            Some(sum) => imp.binary(BinaryOp::Add, sum, term)?,
            None => term,
        });
    }
    acc.ok_or_else(|| BuildError::Invalid("no interpolation taps".into()))
}

fn resize(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let r = ty.rank();
    let a = &cx.attrs;
    let mode = match a.string("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" => Mode::Linear,
        "cubic" => Mode::Cubic,
        other => return invalid(format!("unknown mode '{other}'")),
    };
    let cfg = Config {
        mode,
        nearest_mode: a.string("nearest_mode", "round_prefer_floor")?,
        transform: a.string("coordinate_transformation_mode", "half_pixel")?,
        cubic_a: a.float("cubic_coeff_a", -0.75)?,
        antialias: a.int("antialias", 0)? != 0,
        exclude_outside: a.int("exclude_outside", 0)? != 0,
    };
    let extrapolation = a.float("extrapolation_value", 0.0)?;
    let axes: Vec<usize> = match a.opt_ints("axes")? {
        Some(ax) => ax.iter().map(|&v| axis_of(v, r)).collect::<BuildResult<_>>()?,
        None => (0..r).collect(),
    };
    if axes.iter().any(|&d| ty.dims[d].as_static().is_none()) {
        return resize_symbolic(imp, cx, x, &cfg, &axes);
    }
    if let Some(Slot::Shape { elems, .. }) = imp.slot(cx, 3)? {
        return one(resize_to_symbolic_sizes(imp, x, &cfg, &axes, &elems, extrapolation)?);
    }
    let in_dims: Vec<u64> = axes.iter().filter_map(|&d| ty.dims[d].as_static()).collect();
    let roi = match imp.const_input(cx, 1, "roi")? {
        Some(t) if !t.is_empty() => {
            let v = t.to_f64_vec();
            if v.len() != 2 * axes.len() {
                return invalid(format!("roi has {} values for {} axes", v.len(), axes.len()));
            }
            Some(v)
        }
        _ => None,
    };
    let scales = imp.const_input(cx, 2, "scales")?.filter(|t| !t.is_empty()).map(|t| t.to_f64_vec());
    let sizes = imp.const_ints(cx, 3, "sizes")?.filter(|s| !s.is_empty());
    let (scale_factors, out_sizes): (Vec<f64>, Vec<u64>) = match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != axes.len() || s.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
                return invalid(format!("scales {s:?} for {} axes", axes.len()));
            }
            let outs = s.iter().zip(&in_dims).map(|(&f, &n)| (f * n as f64) as u64).collect();
            (s, outs)
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() || sz.iter().any(|&v| v < 0) {
                return invalid(format!("sizes {sz:?} for {} axes", axes.len()));
            }
            let mut factors: Vec<f64> = sz.iter().zip(&in_dims).map(|(&o, &n)| o as f64 / n as f64).collect();
            let mut outs: Vec<u64> = sz.iter().map(|&v| v as u64).collect();
            let policy = a.string("keep_aspect_ratio_policy", "stretch")?;
            if policy != "stretch" {
                let pick = match policy.as_str() {
                    "not_larger" => factors.iter().copied().fold(f64::INFINITY, f64::min),
                    "not_smaller" => factors.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    other => return invalid(format!("unknown keep_aspect_ratio_policy '{other}'")),
                };
                factors = vec![pick; axes.len()];
                outs = in_dims.iter().map(|&n| (pick * n as f64 + 0.5) as u64).collect();
            }
            (factors, outs)
        }
        _ => return invalid("exactly one of scales and sizes must be given"),
    };
    // Innermost axis first, as the reference nests its 1-D interpolations.
    let mut y = x;
    for i in (0..axes.len()).rev() {
        let roi_i = roi.as_ref().map_or((0.0, 1.0), |v| (v[i], v[axes.len() + i]));
        let identity = scale_factors[i] == 1.0 && out_sizes[i] == in_dims[i] && cfg.transform != "tf_crop_and_resize";
        if identity {
            continue;
        }
        let plan = plan_axis(&cfg, in_dims[i], out_sizes[i], scale_factors[i], roi_i)?;
        y = apply_axis(imp, y, axes[i], &plan, extrapolation)?;
    }
    one(y)
}
