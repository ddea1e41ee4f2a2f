//! Window functions (`HannWindow`, `HammingWindow`, `BlackmanWindow`): constants generated at
//! import time from their (constant) size, computed in f64 as onnx's reference computes them;
//! `ai.onnx.ml.Binarizer` (`x > threshold` in x's type); and `DFT` as constant-matrix products.

use super::{generated_len, invalid, one, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::tensor;
use std::f64::consts::PI;
use tessera_ir::ops::elementwise::CompareOp;
use tessera_ir::tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.insert("HannWindow", |imp, cx| window(imp, cx, &[0.5, -0.5]));
    // 25/46 and 21/46, the exact Hamming coefficients the ONNX spec states.
    r.insert("HammingWindow", |imp, cx| window(imp, cx, &[25.0 / 46.0, -21.0 / 46.0]));
    r.insert("BlackmanWindow", |imp, cx| window(imp, cx, &[0.42, -0.5, 0.08]));
    r.insert("ai.onnx.ml.Binarizer", binarizer);
    r.insert("DFT", dft);
}

/// `w[n] = Σ_k a_k cos(2πkn / N)` with `N = size` (periodic) or `size - 1` (symmetric).
fn window(imp: &mut Importer, cx: &NodeCx, coeffs: &[f64]) -> BuildResult<Vec<Slot>> {
    let size = match imp.const_ints(cx, 0, "size")? {
        Some(v) if v.len() == 1 => v[0],
        Some(v) => return invalid(format!("the window size must be a scalar, got {} values", v.len())),
        None => return invalid("missing required input 0 (size)"),
    };
    let Ok(size_u) = u64::try_from(size) else { return invalid(format!("window size {size} is negative")) };
    let n = generated_len(size_u, "the window")?;
    let dtype = tensor::dtype_of(cx.attrs.int("output_datatype", 1)? as i32)
        .map_err(|e| super::BuildError::Unsupported(e.message))?;
    let periodic = cx.attrs.int("periodic", 1)? != 0;
    let denominator = if periodic { size as f64 } else { size as f64 - 1.0 };
    let values = (0..n)
        .map(|i| {
            coeffs
                .iter()
                .enumerate()
                .fold(0.0, |acc, (k, a)| acc + a * (2.0 * PI * k as f64 * i as f64 / denominator).cos())
        })
        .collect();
    one(imp.constant(Tensor::from_f64(dtype, vec![n], values)))
}

fn binarizer(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let dtype = imp.ty(x).dtype;
    let threshold = cx.attrs.float("threshold", 0.0)?;
    let t = imp.full_like(x, threshold)?;
    let above = imp.compare(CompareOp::Gt, x, t)?;
    one(imp.cast(above, dtype)?)
}

/// `DFT` (opsets 17 and 20) as matrix products with constant cosine and sine matrices, in f64
/// (onnx's reference transforms in complex128 and rounds the result to the input's type). Like
/// the reference, `onesided` keeps the first `n/2 + 1` outputs of the full transform, inverse
/// included, and `dft_length` truncates or zero-pads the signal.
fn dft(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let xty = imp.ty(x);
    let Some(shape) = xty.static_shape() else { return super::unsupported("DFT over symbolic dimensions") };
    let rank = shape.len();
    let channels = shape.last().copied().unwrap_or(0);
    if rank < 2 || !(channels == 1 || channels == 2) || !xty.dtype.is_float() {
        return invalid(format!("DFT input must be float [..., signal, 1 or 2], got {xty}"));
    }
    let axis = if cx.opset >= 20 {
        match imp.const_ints(cx, 2, "axis")? {
            Some(v) if v.len() == 1 => v[0],
            Some(_) => return invalid("DFT axis must be a scalar"),
            None => -2,
        }
    } else {
        cx.attrs.int("axis", 1)?
    };
    let axis = super::axis_of(axis, rank)?;
    if axis == rank - 1 {
        return invalid("the DFT axis cannot be the last (real/imaginary) dimension");
    }
    let signal = shape[axis] as usize;
    let length = match imp.const_ints(cx, 1, "dft_length")? {
        Some(v) if v.len() == 1 && v[0] >= 1 => v[0] as usize,
        Some(v) => return invalid(format!("dft_length must be a positive scalar, got {v:?}")),
        None => signal,
    };
    let inverse = cx.attrs.int("inverse", 0)? != 0;
    let onesided = cx.attrs.int("onesided", 0)? != 0;
    // An inverse onesided DFT is irfft (onnx 1.23): the input is the first half of a Hermitian
    // spectrum, of `length / 2 + 1` bins (`length` defaults to `2 * (bins - 1)`), and the
    // output is real, [..., length, 1].
    let irfft = inverse && onesided;
    let length = match (irfft, imp.const_ints(cx, 1, "dft_length")?) {
        (true, None) => 2 * signal.saturating_sub(1).max(1),
        _ => length,
    };
    let outputs = if irfft {
        length
    } else if onesided {
        length / 2 + 1
    } else {
        length
    };
    let used = if irfft { signal.min(length / 2 + 1) } else { signal.min(length) };
    generated_len((used * outputs) as u64, "the DFT matrix")?;
    // Real and imaginary parts, each with the signal axis last: [..., used].
    let st = |v: u64| tessera_ir::types::Dim::Static(v);
    let mut perm: Vec<i64> = (0..rank as i64 - 1).filter(|&d| d != axis as i64).collect();
    perm.push(axis as i64);
    let part = |imp: &mut Importer, c: u64| -> BuildResult<tessera_ir::graph::ValueId> {
        let mut starts = vec![0i64; rank];
        let mut ends: Vec<i64> = shape.iter().map(|&n| n as i64).collect();
        starts[rank - 1] = c as i64;
        ends[rank - 1] = c as i64 + 1;
        ends[axis] = used as i64;
        let p = imp.add(tessera_ir::ops::Op::Slice { starts, ends, steps: vec![1; rank] }, &[x])?;
        let mut dims: Vec<_> = imp.ty(p).dims;
        dims.pop();
        let p = imp.reshape(p, dims)?;
        let p = imp.add(tessera_ir::ops::Op::Transpose { perm: perm.clone() }, &[p])?;
        imp.cast(p, tessera_ir::dtype::DType::F64)
    };
    let re = part(imp, 0)?;
    let im = if channels == 2 { Some(part(imp, 1)?) } else { None };
    // W[n, k] = exp(∓2πi kn / length), scaled by 1/length for the inverse.
    let sign = if inverse { 1.0 } else { -1.0 };
    let scale = if inverse { 1.0 / length as f64 } else { 1.0 };
    let angle = |n: usize, k: usize| 2.0 * PI * ((k * n) % length) as f64 / length as f64;
    // irfft counts each bin but DC and Nyquist twice (once for its mirror image).
    let weight = |n: usize| if !irfft || n == 0 || 2 * n == length { 1.0 } else { 2.0 };
    let cos: Vec<f64> =
        (0..used).flat_map(|n| (0..outputs).map(move |k| weight(n) * scale * angle(n, k).cos())).collect();
    let sin: Vec<f64> =
        (0..used).flat_map(|n| (0..outputs).map(move |k| weight(n) * sign * scale * angle(n, k).sin())).collect();
    let f64_dtype = tessera_ir::dtype::DType::F64;
    let wc = imp.constant(Tensor::from_f64(f64_dtype, vec![used, outputs], cos));
    let ws = imp.constant(Tensor::from_f64(f64_dtype, vec![used, outputs], sin));
    let mm = |imp: &mut Importer, a, w| super::matmul::matmul_numpy(imp, a, w);
    // (re + i im)(c + i s) = (re c - im s) + i (re s + im c)
    let (mut y_re, mut y_im) = (mm(imp, re, wc)?, mm(imp, re, ws)?);
    if let Some(im) = im {
        let (a, b) = (mm(imp, im, ws)?, mm(imp, im, wc)?);
        y_re = imp.binary(tessera_ir::ops::elementwise::BinaryOp::Sub, y_re, a)?;
        y_im = imp.binary(tessera_ir::ops::elementwise::BinaryOp::Add, y_im, b)?;
    }
    // Back to the input's layout with [re, im] as the last dimension.
    let mut inverse_perm = vec![0i64; rank - 1];
    for (i, &p) in perm.iter().enumerate() {
        inverse_perm[p as usize] = i as i64;
    }
    let mut out_dims: Vec<_> = shape[..rank - 1].iter().map(|&n| st(n)).collect();
    out_dims[axis] = st(outputs as u64);
    out_dims.push(st(1));
    let restore = |imp: &mut Importer, y| -> BuildResult<tessera_ir::graph::ValueId> {
        let y = imp.add(tessera_ir::ops::Op::Transpose { perm: inverse_perm.clone() }, &[y])?;
        imp.reshape(y, out_dims.clone())
    };
    if irfft {
        // Re((re + i im)(c + i s)) = re c - im s, already in y_re.
        let y = restore(imp, y_re)?;
        return one(imp.cast(y, xty.dtype)?);
    }
    let (y_re, y_im) = (restore(imp, y_re)?, restore(imp, y_im)?);
    let y = imp.add(tessera_ir::ops::Op::Concat { axis: rank as i64 - 1 }, &[y_re, y_im])?;
    one(imp.cast(y, xty.dtype)?)
}
