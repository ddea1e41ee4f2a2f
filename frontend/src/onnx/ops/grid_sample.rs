//! Image geometry: `Col2Im` (one scatter-add with indices from the static geometry),
//! `AffineGrid` and `GridSample` (2-D and 3-D; `nearest`, `linear`/`bilinear`, `cubic`/`bicubic`; `zeros`,
//! `border` and `reflection` padding) composed from elementwise arithmetic and one flat
//! `tsr.gather` per interpolation tap, following onnx's reference: coordinates are
//! denormalized, moved inside the border (clamped or reflected) when they fall outside it, and
//! each tap is fetched with the padding rule (0 outside for `zeros`, clamped or reflected index
//! otherwise) and weighted by linear or Keys cubic (a = -0.75) coefficients.

use super::{invalid, iota, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("GridSample", grid_sample);
    r.insert("AffineGrid", affine_grid);
    r.insert("Col2Im", col2im);
}

#[derive(Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// Builds f64 arithmetic on values of one shape.
struct Calc<'a> {
    imp: &'a mut Importer,
}

impl Calc<'_> {
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.imp.binary(op, a, b)
    }
    fn k(&mut self, op: BinaryOp, a: ValueId, x: f64) -> BuildResult<ValueId> {
        self.imp.binary_scalar(op, a, x)
    }
    fn un(&mut self, op: UnaryOp, a: ValueId) -> BuildResult<ValueId> {
        self.imp.unary(op, a)
    }
    fn cmp_k(&mut self, op: CompareOp, a: ValueId, x: f64) -> BuildResult<ValueId> {
        let t = self.imp.full_like(a, x)?;
        self.imp.compare(op, a, t)
    }
    fn clamp(&mut self, a: ValueId, lo: f64, hi: f64) -> BuildResult<ValueId> {
        let a = self.k(BinaryOp::Max, a, lo)?;
        self.k(BinaryOp::Min, a, hi)
    }
    /// onnx's `_gs_reflect`: folds `v` back into `[lo, hi]` by repeated reflection at the
    /// nearer border (identity inside).
    fn reflect(&mut self, v: ValueId, lo: f64, hi: f64) -> BuildResult<ValueId> {
        let range = hi - lo;
        let fold = |c: &mut Self, dx: ValueId, from_lo: bool| -> BuildResult<ValueId> {
            let q = c.k(BinaryOp::Div, dx, range)?;
            let n = c.un(UnaryOp::Floor, q)?;
            let nr = c.k(BinaryOp::Mul, n, range)?;
            let r = c.bin(BinaryOp::Sub, dx, nr)?;
            let half = c.k(BinaryOp::Mul, n, 0.5)?;
            let half_floor = c.un(UnaryOp::Floor, half)?;
            let even = c.imp.compare(CompareOp::Eq, half, half_floor)?;
            let near = if from_lo { c.k(BinaryOp::Add, r, lo)? } else { c.k(BinaryOp::Mul, r, -1.0)? };
            let near = if from_lo { near } else { c.k(BinaryOp::Add, near, hi)? };
            let far = if from_lo { c.k(BinaryOp::Mul, r, -1.0)? } else { c.k(BinaryOp::Add, r, lo)? };
            let far = if from_lo { c.k(BinaryOp::Add, far, hi)? } else { far };
            c.imp.select(even, near, far)
        };
        let below_dx = {
            let neg = self.k(BinaryOp::Mul, v, -1.0)?;
            self.k(BinaryOp::Add, neg, lo)?
        };
        let below = fold(self, below_dx, true)?;
        let above_dx = self.k(BinaryOp::Sub, v, hi)?;
        let above = fold(self, above_dx, false)?;
        let is_below = self.cmp_k(CompareOp::Lt, v, lo)?;
        let is_above = self.cmp_k(CompareOp::Gt, v, hi)?;
        let v = self.imp.select(is_above, above, v)?;
        self.imp.select(is_below, below, v)
    }
}

/// Keys cubic convolution weights (a = -0.75) of the four taps around a point `t` in [0, 1)
/// past the first of the middle two.
fn cubic_weights(c: &mut Calc, t: ValueId) -> BuildResult<[ValueId; 4]> {
    const A: f64 = -0.75;
    // w(d) for |d| <= 1: (A+2)|d|^3 - (A+3)|d|^2 + 1; for 1 < |d| < 2: A|d|^3 - 5A|d|^2 + 8A|d| - 4A.
    let near = |c: &mut Calc, d: ValueId| -> BuildResult<ValueId> {
        let p = c.k(BinaryOp::Mul, d, A + 2.0)?;
        let p = c.k(BinaryOp::Sub, p, A + 3.0)?;
        let p = c.bin(BinaryOp::Mul, p, d)?;
        let p = c.bin(BinaryOp::Mul, p, d)?;
        c.k(BinaryOp::Add, p, 1.0)
    };
    let far = |c: &mut Calc, d: ValueId| -> BuildResult<ValueId> {
        let p = c.k(BinaryOp::Mul, d, A)?;
        let p = c.k(BinaryOp::Sub, p, 5.0 * A)?;
        let p = c.bin(BinaryOp::Mul, p, d)?;
        let p = c.k(BinaryOp::Add, p, 8.0 * A)?;
        let p = c.bin(BinaryOp::Mul, p, d)?;
        c.k(BinaryOp::Sub, p, 4.0 * A)
    };
    let t1 = c.k(BinaryOp::Add, t, 1.0)?;
    let one_minus = {
        let n = c.k(BinaryOp::Mul, t, -1.0)?;
        c.k(BinaryOp::Add, n, 1.0)?
    };
    let two_minus = c.k(BinaryOp::Add, one_minus, 1.0)?;
    Ok([far(c, t1)?, near(c, t)?, near(c, one_minus)?, far(c, two_minus)?])
}

fn grid_sample(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let grid = imp.value(cx, 1)?;
    let (xty, gty) = (imp.ty(x), imp.ty(grid));
    let (Some(xs), Some(gs)) = (xty.static_shape(), gty.static_shape()) else {
        return unsupported("GridSample over symbolic dimensions");
    };
    let r = xs.len().saturating_sub(2);
    if !(r == 2 || r == 3) || gs.len() != r + 2 || gs[0] != xs[0] || gs[r + 1] != r as u64 || !xty.dtype.is_float() {
        return invalid(format!(
            "GridSample needs X [N, C, spatial...] (2 or 3 spatial) and grid [N, out..., {r}], got {xty} and {gty}"
        ));
    }
    let mode = cx.attrs.string("mode", if cx.opset >= 20 { "linear" } else { "bilinear" })?;
    let taps_per_dim: i64 = match mode.as_str() {
        "nearest" => 1,
        "linear" | "bilinear" => 2,
        "cubic" | "bicubic" => 4,
        other => return invalid(format!("GridSample mode '{other}' is not nearest, linear or cubic")),
    };
    let padding = match cx.attrs.string("padding_mode", "zeros")?.as_str() {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => return invalid(format!("GridSample padding_mode '{other}' is not zeros, border or reflection")),
    };
    let align = cx.attrs.int("align_corners", 0)? != 0;
    let (n, ch) = (xs[0], xs[1]);
    let sizes: Vec<u64> = xs[2..].to_vec();
    let out: Vec<u64> = gs[1..=r].to_vec();
    let count: u64 = n * ch * out.iter().product::<u64>() * (taps_per_dim as u64).pow(r as u32);
    super::generated_len(count, "GridSample's gathers")?;
    let st = |v: u64| Dim::Static(v);
    let point_dims: Vec<Dim> = std::iter::once(n).chain(out.iter().copied()).map(st).collect();
    let grid64 = imp.cast(grid, DType::F64)?;
    let mut c = Calc { imp };
    let coords = grid_coordinates(&mut c, grid64, &gs, &sizes, &point_dims, align, mode == "nearest", padding)?;
    let taps = tap_indices_and_weights(&mut c, &coords, taps_per_dim)?;
    // Flat offsets of each (n, c) plane: [N, C, 1...] broadcast over the outputs.
    let plane = sizes.iter().product::<u64>();
    let out_dims: Vec<Dim> = [n, ch].into_iter().chain(out.iter().copied()).map(st).collect();
    let bn = iota(c.imp, r + 2, 0, n)?;
    let bn = c.k(BinaryOp::Mul, bn, (ch * plane) as f64)?;
    let bc = iota(c.imp, r + 2, 1, ch)?;
    let bc = c.k(BinaryOp::Mul, bc, plane as f64)?;
    let bn = c.imp.broadcast(bn, &out_dims)?;
    let bc = c.imp.broadcast(bc, &out_dims)?;
    let plane_base = c.bin(BinaryOp::Add, bn, bc)?;
    let flat_x = c.imp.reshape(x, vec![st(n * ch * plane)])?;
    let x_dtype = xty.dtype;
    let mut per_point: Vec<Dim> = vec![st(n), st(1)];
    per_point.extend(out.iter().copied().map(st));
    let spread = |c: &mut Calc, v: ValueId| -> BuildResult<ValueId> {
        let v = c.imp.reshape(v, per_point.clone())?;
        c.imp.broadcast(v, &out_dims)
    };
    let mut total: Option<ValueId> = None;
    let combos = (taps_per_dim as usize).pow(r as u32);
    for combo in 0..combos {
        let mut linear: Option<ValueId> = None;
        let mut weight: Option<ValueId> = None;
        let mut valid: Option<ValueId> = None;
        let mut rest = combo;
        for (i, &(_, size, lo, hi)) in coords.iter().enumerate() {
            let (idx, w) = taps[i][rest % taps_per_dim as usize];
            rest /= taps_per_dim as usize;
            // The padding rule for a tap index (an integer in f64).
            let fetched = match padding {
                Padding::Zeros => {
                    let ge = c.cmp_k(CompareOp::Ge, idx, 0.0)?;
                    let lt = c.cmp_k(CompareOp::Lt, idx, size)?;
                    let inside = c.imp.binary(BinaryOp::And, ge, lt)?;
                    valid = Some(match valid {
                        Some(v) => c.imp.binary(BinaryOp::And, v, inside)?,
                        None => inside,
                    });
                    c.clamp(idx, 0.0, size - 1.0)?
                }
                Padding::Border => c.clamp(idx, 0.0, size - 1.0)?,
                Padding::Reflection => {
                    let folded = c.reflect(idx, lo, hi)?;
                    // int() truncates toward zero; keep it inside for safety.
                    let trunc = {
                        let f = c.un(UnaryOp::Floor, folded)?;
                        let cl = c.un(UnaryOp::Ceil, folded)?;
                        let neg = c.cmp_k(CompareOp::Lt, folded, 0.0)?;
                        c.imp.select(neg, cl, f)?
                    };
                    c.clamp(trunc, 0.0, size - 1.0)?
                }
            };
            let stride: u64 = sizes[i + 1..].iter().product();
            let part = c.k(BinaryOp::Mul, fetched, stride as f64)?;
            linear = Some(match linear {
                Some(l) => c.bin(BinaryOp::Add, l, part)?,
                None => part,
            });
            if let Some(w) = w {
                weight = Some(match weight {
                    Some(acc) => c.bin(BinaryOp::Mul, acc, w)?,
                    None => w,
                });
            }
        }
        let Some(linear) = linear else { return invalid("GridSample without spatial dimensions") };
        let linear = c.imp.cast(linear, DType::I64)?;
        let linear = spread(&mut c, linear)?;
        let index = c.bin(BinaryOp::Add, plane_base, linear)?;
        let pixel = c.imp.add(Op::Gather { axis: 0 }, &[flat_x, index])?;
        let mut term = c.imp.cast(pixel, DType::F64)?;
        if let Some(valid) = valid {
            let valid = c.imp.cast(valid, DType::F64)?;
            let valid = spread(&mut c, valid)?;
            term = c.bin(BinaryOp::Mul, term, valid)?;
        }
        if let Some(w) = weight {
            let w = spread(&mut c, w)?;
            term = c.bin(BinaryOp::Mul, term, w)?;
        }
        total = Some(match total {
            Some(t) => c.bin(BinaryOp::Add, t, term)?,
            None => term,
        });
    }
    let Some(total) = total else { return invalid("GridSample without taps") };
    one(c.imp.cast(total, x_dtype)?)
}

/// Per spatial dimension (in X's order): the sampling coordinate of every output point after
/// denormalizing (`align_corners`), rounding (`nearest`) and the border rule, with the
/// dimension's size and the coordinate range `[lo, hi]` that counts as inside.
#[allow(clippy::too_many_arguments)]
fn grid_coordinates(
    c: &mut Calc,
    grid64: ValueId,
    gs: &[u64],
    sizes: &[u64],
    point_dims: &[Dim],
    align: bool,
    nearest: bool,
    padding: Padding,
) -> BuildResult<Vec<(ValueId, f64, f64, f64)>> {
    let r = sizes.len();
    let mut coords = Vec::with_capacity(r);
    for (i, &size) in sizes.iter().enumerate() {
        let component = r - 1 - i; // grid's last axis is (x, y[, z]): W first
        let mut starts = vec![0i64; r + 2];
        let mut ends: Vec<i64> = gs.iter().map(|&v| v as i64).collect();
        starts[r + 1] = component as i64;
        ends[r + 1] = component as i64 + 1;
        let g = c.imp.add(Op::Slice { starts, ends, steps: vec![1; r + 2] }, &[grid64])?;
        let g = c.imp.reshape(g, point_dims.to_vec())?;
        let size = size as f64;
        let g1 = c.k(BinaryOp::Add, g, 1.0)?;
        let mut v = if align {
            let h = c.k(BinaryOp::Mul, g1, 0.5)?;
            c.k(BinaryOp::Mul, h, size - 1.0)?
        } else {
            let s = c.k(BinaryOp::Mul, g1, size)?;
            let s = c.k(BinaryOp::Sub, s, 1.0)?;
            c.k(BinaryOp::Mul, s, 0.5)?
        };
        if nearest {
            v = c.un(UnaryOp::Round, v)?;
        }
        let (lo, hi) = if align { (0.0, size - 1.0) } else { (-0.5, size - 0.5) };
        v = match padding {
            Padding::Zeros => v,
            Padding::Border => {
                let clamped = c.clamp(v, 0.0, size - 1.0)?;
                let below = c.cmp_k(CompareOp::Lt, v, lo)?;
                let above = c.cmp_k(CompareOp::Gt, v, hi)?;
                let outside = c.imp.binary(BinaryOp::Or, below, above)?;
                c.imp.select(outside, clamped, v)?
            }
            Padding::Reflection => c.reflect(v, lo, hi)?,
        };
        coords.push((v, size, lo, hi));
    }
    Ok(coords)
}

/// Per spatial dimension: the taps' indices (integers in f64) and their interpolation weights
/// (`None` for nearest sampling).
#[allow(clippy::type_complexity)]
fn tap_indices_and_weights(
    c: &mut Calc,
    coords: &[(ValueId, f64, f64, f64)],
    taps_per_dim: i64,
) -> BuildResult<Vec<Vec<(ValueId, Option<ValueId>)>>> {
    let mut taps: Vec<Vec<(ValueId, Option<ValueId>)>> = Vec::with_capacity(coords.len());
    for &(v, _, _, _) in coords {
        let mut dim_taps = Vec::new();
        if taps_per_dim == 1 {
            dim_taps.push((v, None));
        } else {
            let base = c.un(UnaryOp::Floor, v)?;
            let t = c.bin(BinaryOp::Sub, v, base)?;
            let weights: Vec<ValueId> = if taps_per_dim == 2 {
                let n_t = c.k(BinaryOp::Mul, t, -1.0)?;
                vec![c.k(BinaryOp::Add, n_t, 1.0)?, t]
            } else {
                cubic_weights(c, t)?.to_vec()
            };
            let first = if taps_per_dim == 2 { 0.0 } else { -1.0 };
            for (j, w) in weights.into_iter().enumerate() {
                let idx = c.k(BinaryOp::Add, base, first + j as f64)?;
                dim_taps.push((idx, Some(w)));
            }
        }
        taps.push(dim_taps);
    }
    Ok(taps)
}

/// `AffineGrid`: `theta [N, r, r+1]` applied to the homogeneous coordinates `(x, y[, z], 1)` of
/// every output point (the normalized pixel centers, or corners with `align_corners`), in f64
/// as onnx's reference computes it, giving the `[N, size..., r]` grid `GridSample` reads.
fn affine_grid(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let theta = imp.value(cx, 0)?;
    let size = match imp.const_ints(cx, 1, "size")? {
        Some(v) => v,
        None => return invalid("missing required input 1 (size)"),
    };
    let tty = imp.ty(theta);
    let r = size.len().saturating_sub(2);
    let Some(ts) = tty.static_shape() else { return unsupported("AffineGrid over a symbolic theta") };
    if !(r == 2 || r == 3) || ts.len() != 3 || ts[1] != r as u64 || ts[2] != r as u64 + 1 || size.iter().any(|&s| s < 1)
    {
        return invalid(format!(
            "AffineGrid needs theta [N, r, r + 1] and size [N, C, r extents] (r = 2 or 3), got {tty} and {size:?}"
        ));
    }
    let align = cx.attrs.int("align_corners", 0)? != 0;
    let extents: Vec<usize> = size[2..].iter().map(|&s| s as usize).collect();
    let points = super::generated_len(extents.iter().map(|&e| e as u64).product(), "AffineGrid's grid")?;
    // Normalized coordinate of index i along an extent of n.
    let coord = |i: usize, n: usize| {
        if align {
            -1.0 + i as f64 * 2.0 / (n as f64 - 1.0)
        } else {
            let step = 2.0 / n as f64;
            -1.0 + step / 2.0 + i as f64 * step
        }
    };
    // base[j, p]: row j is x, y[, z] (the extents reversed), then 1.
    let mut base = vec![0.0; (r + 1) * points];
    for p in 0..points {
        let mut rest = p;
        let mut index = vec![0; r];
        for d in (0..r).rev() {
            index[d] = rest % extents[d];
            rest /= extents[d];
        }
        for j in 0..r {
            let d = r - 1 - j;
            base[j * points + p] = coord(index[d], extents[d]);
        }
        base[r * points + p] = 1.0;
    }
    let base = imp.constant(tessera_ir::tensor::Tensor::from_f64(DType::F64, vec![r + 1, points], base));
    let theta64 = imp.cast(theta, DType::F64)?;
    let n = ts[0];
    let base = imp.reshape(base, vec![Dim::Static(1), Dim::Static(r as u64 + 1), Dim::Static(points as u64)])?;
    let base = imp.broadcast(base, &[Dim::Static(n), Dim::Static(r as u64 + 1), Dim::Static(points as u64)])?;
    let grid = imp.add(Op::MatMul, &[theta64, base])?;
    let grid = imp.add(Op::Transpose { perm: vec![0, 2, 1] }, &[grid])?;
    let mut dims = vec![Dim::Static(n)];
    dims.extend(extents.iter().map(|&e| Dim::Static(e as u64)));
    dims.push(Dim::Static(r as u64));
    let grid = imp.reshape(grid, dims)?;
    one(imp.cast(grid, tty.dtype)?)
}

/// `Col2Im`: sums the columns `[N, C * prod(block), L]` back into an image `[N, C, image...]`
/// with one flat `tsr.scatter` (add) whose indices are computed here from the static geometry;
/// column entries that fall into the padding go to one extra slot that is sliced off.
fn col2im(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let (Some(image), Some(block)) = (imp.const_ints(cx, 1, "image_shape")?, imp.const_ints(cx, 2, "block_shape")?)
    else {
        return invalid("Col2Im needs image_shape and block_shape");
    };
    let xty = imp.ty(x);
    let Some(xs) = xty.static_shape() else { return unsupported("Col2Im over symbolic dimensions") };
    let r = image.len();
    if xs.len() != 3 || block.len() != r || r == 0 || image.iter().chain(&block).any(|&v| v < 1) {
        return invalid(format!("Col2Im needs input [N, C*K, L] and matching image/block shapes, got {xty}"));
    }
    let read = |name: &str, default: i64, len: usize| -> BuildResult<Vec<i64>> {
        Ok(cx.attrs.opt_ints(name)?.unwrap_or_else(|| vec![default; len]))
    };
    let (dil, pads, strides) = (read("dilations", 1, r)?, read("pads", 0, 2 * r)?, read("strides", 1, r)?);
    if dil.len() != r || pads.len() != 2 * r || strides.len() != r || dil.iter().chain(&strides).any(|&v| v < 1) {
        return invalid("Col2Im dilations, pads and strides must match the image rank");
    }
    let kernel: i64 = block.iter().product();
    let blocks: Vec<i64> =
        (0..r).map(|d| (image[d] + pads[d] + pads[r + d] - (dil[d] * (block[d] - 1) + 1)) / strides[d] + 1).collect();
    let l: i64 = blocks.iter().product();
    let (n, ck, len) = (xs[0] as i64, xs[1] as i64, xs[2] as i64);
    if kernel == 0 || ck % kernel != 0 || len != l || blocks.iter().any(|&b| b < 1) {
        return invalid(format!("Col2Im input {xty} does not match {l} blocks of {kernel} elements"));
    }
    let ch = ck / kernel;
    let pixels: i64 = image.iter().product();
    let total = (n * ch * pixels) as u64;
    super::generated_len(total + 1 + (n * ck * len) as u64, "Col2Im's scatter")?;
    let unravel = |mut i: i64, dims: &[i64]| {
        let mut out = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            out[d] = i % dims[d];
            i /= dims[d];
        }
        out
    };
    let mut indices = Vec::with_capacity((n * ck * len) as usize);
    for b in 0..n {
        for row in 0..ck {
            let (c, k) = (row / kernel, row % kernel);
            let kpos = unravel(k, &block);
            for col in 0..len {
                let bpos = unravel(col, &blocks);
                let mut flat = 0;
                let mut inside = true;
                for d in 0..r {
                    let p = bpos[d] * strides[d] - pads[d] + kpos[d] * dil[d];
                    inside &= (0..image[d]).contains(&p);
                    flat = flat * image[d] + p;
                }
                indices.push(if inside { (b * ch + c) * pixels + flat } else { total as i64 });
            }
        }
    }
    let count = indices.len();
    let idx = imp.constant(tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![count], indices));
    let updates = imp.reshape(x, vec![Dim::Static(count as u64)])?;
    let zeros = imp.constant(tessera_ir::tensor::Tensor::zeros(xty.dtype, vec![total as usize + 1]));
    let summed = imp.add(
        Op::Scatter { axis: 0, reduction: tessera_ir::ops::indexing::ScatterReduction::Add },
        &[zeros, idx, updates],
    )?;
    let kept = imp.add(Op::Slice { starts: vec![0], ends: vec![total as i64], steps: vec![1] }, &[summed])?;
    let mut dims = vec![Dim::Static(n as u64), Dim::Static(ch as u64)];
    dims.extend(image.iter().map(|&v| Dim::Static(v as u64)));
    one(imp.reshape(kept, dims)?)
}
