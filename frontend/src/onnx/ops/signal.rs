//! Window functions (`HannWindow`, `HammingWindow`, `BlackmanWindow`): constants generated at
//! import time from their (constant) size, computed in f64 as onnx's reference computes them;
//! and `ai.onnx.ml.Binarizer` (`x > threshold` in x's type).

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
