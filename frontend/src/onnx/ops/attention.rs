//! Transformer blocks that ONNX has as single ops (opset 23+): `Attention` (scaled dot-product
//! attention with masks, causal masking, KV cache, grouped-query heads, softcap) and
//! `RotaryEmbedding`, both decomposed into matmuls, softmax and elementwise tsr ops.

use super::{invalid, unsupported, BuildError, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::tensor;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("Attention", attention);
    r.insert("RotaryEmbedding", rotary_embedding);
}

fn static_dim(d: &Dim, what: &str) -> BuildResult<u64> {
    d.as_static().ok_or_else(|| BuildError::Unsupported(format!("a symbolic {what} ({d})")))
}

/// `[B, S, H * D]` -> `[B, H, S, D]`.
fn split_heads(imp: &mut Importer, x: ValueId, heads: i64) -> BuildResult<ValueId> {
    let dims = imp.ty(x).dims;
    let hidden = static_dim(&dims[2], "hidden size")?;
    if heads < 1 || hidden % heads as u64 != 0 {
        return invalid(format!("{heads} heads do not divide hidden size {hidden}"));
    }
    let h = heads as u64;
    let r = imp.reshape(x, vec![dims[0].clone(), dims[1].clone(), Dim::Static(h), Dim::Static(hidden / h)])?;
    imp.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[r])
}

/// The additive float bias of an attention mask: bool masks give 0 (attend) or -inf.
fn mask_bias(imp: &mut Importer, mask: ValueId, dtype: DType, kv_len: u64) -> BuildResult<ValueId> {
    let mty = imp.ty(mask);
    let last = mty.rank().checked_sub(1).ok_or_else(|| BuildError::Invalid("attn_mask must have rank >= 1".into()))?;
    let have = static_dim(&mty.dims[last], "mask length")?;
    let mut mask = mask;
    if have < kv_len {
        // A mask shorter than the keys is padded with "do not attend".
        let mut pads = vec![0i64; 2 * mty.rank()];
        pads[mty.rank() + last] = (kv_len - have) as i64;
        let fill = if mty.dtype == DType::Bool { 0.0 } else { f64::NEG_INFINITY };
        mask = super::shape::slicing::pad_constant(imp, mask, &pads, fill)?;
    }
    if mty.dtype == DType::Bool {
        let zero = imp.scalar(dtype, 0.0);
        let ninf = imp.scalar(dtype, f64::NEG_INFINITY);
        return imp.select(mask, zero, ninf);
    }
    imp.cast(mask, dtype)
}

/// `Attention` (opsets 23-25) as onnx 1.23's reference computes it:
///
/// - scores `(Q * sqrt(scale)) @ (K * sqrt(scale))^T`, then `softcap * tanh(scores / softcap)`
///   (before any mask, so masked positions stay `-inf`);
/// - one additive bias, the sum of: `attn_mask` (a bool mask as 0 / -inf, padded to the key
///   length with "do not attend"), the causal mask, the sliding window (`left_window_size`,
///   `right_window_size`, -1 = unbounded) and the key padding of `nonpad_kv_seqlen`. Causal and
///   window masks are aligned bottom-right: query `i` sits at position `i + offset`, where the
///   offset is the past length (internal KV cache) or `nonpad_kv_seqlen[b] - q_len` (external
///   cache, per batch);
/// - softmax in `softmax_precision`, and a query row whose bias is `-inf` everywhere (no key it
///   may attend) gives probabilities 0, so its output is 0 rather than NaN;
/// - the probabilities cast back to T and multiplied by V.
///
/// `qk_matmul_output_mode` exposes, as the reference does: 0 and 1 the (softcapped) scores,
/// 2 the scores plus bias, 3 the probabilities.
fn attention(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (mut q, mut k, mut v) = (imp.value(cx, 0)?, imp.value(cx, 1)?, imp.value(cx, 2)?);
    let mask = imp.opt_value(cx, 3)?;
    let (past_k, past_v) = (imp.opt_value(cx, 4)?, imp.opt_value(cx, 5)?);
    let nonpad = imp.opt_value(cx, 6)?;
    let a = &cx.attrs;
    let is_causal = a.int("is_causal", 0)? != 0;
    let mode = a.int("qk_matmul_output_mode", 0)?;
    let softcap = a.float("softcap", 0.0)?;
    let left_window = a.int("left_window_size", -1)?;
    let right_window = a.int("right_window_size", -1)?;
    if left_window < -1 || right_window < -1 {
        return invalid(format!("window sizes must be -1 or non-negative, got {left_window} and {right_window}"));
    }
    if past_k.is_some() != past_v.is_some() {
        return invalid("past_key and past_value must be given together");
    }
    if nonpad.is_some() && past_k.is_some() {
        return invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value");
    }
    if !(0..=3).contains(&mode) {
        return unsupported(format!("qk_matmul_output_mode = {mode}"));
    }
    let rank = imp.ty(q).rank();
    let dtype = imp.ty(q).dtype;
    if !dtype.is_float() || imp.ty(k).rank() != rank || imp.ty(v).rank() != rank || !(rank == 3 || rank == 4) {
        return invalid(format!("Q, K, V must be float tensors of rank 3 or 4, got {}", imp.ty(q)));
    }
    if rank == 3 {
        let (Some(qh), Some(kvh)) = (a.opt_int("q_num_heads")?, a.opt_int("kv_num_heads")?) else {
            return invalid("3-D inputs need q_num_heads and kv_num_heads");
        };
        q = split_heads(imp, q, qh)?;
        k = split_heads(imp, k, kvh)?;
        v = split_heads(imp, v, kvh)?;
    }
    let head = static_dim(&imp.ty(q).dims[3], "head size")?;
    let scale = a.opt_float("scale")?.unwrap_or(1.0 / (head as f64).sqrt());
    // The scale is split over Q and K (sqrt on each, rounded to T), as the reference does, for
    // the same rounding.
    let root = scale.sqrt();
    if let Some(pk) = past_k {
        k = imp.add(Op::Concat { axis: 2 }, &[pk, k])?;
    }
    if let Some(pv) = past_v {
        v = imp.add(Op::Concat { axis: 2 }, &[pv, v])?;
    }
    let (present_k, present_v) = (k, v);
    let q_len = static_dim(&imp.ty(q).dims[2], "query length")?;
    let kv_len = static_dim(&imp.ty(k).dims[2], "key length")?;
    let past_len = match past_k {
        Some(pk) => Some(static_dim(&imp.ty(pk).dims[2], "past length")?),
        None => None,
    };
    let masking = Masking { mask, nonpad, past_len, is_causal, left_window, right_window };
    let bias = attention_bias(imp, &masking, dtype, imp.ty(q).dims[0].clone(), q_len, kv_len)?;
    // Grouped-query attention: each KV head serves q_heads / kv_heads query heads, in order.
    let q_heads = static_dim(&imp.ty(q).dims[1], "head count")?;
    let kv_heads = static_dim(&imp.ty(k).dims[1], "head count")?;
    let (mut kk, mut vv) = (k, v);
    if q_heads != kv_heads {
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return invalid(format!("{q_heads} query heads cannot share {kv_heads} key/value heads"));
        }
        kk = repeat_heads(imp, k, q_heads / kv_heads)?;
        vv = repeat_heads(imp, v, q_heads / kv_heads)?;
    }
    let qs = imp.binary_scalar(BinaryOp::Mul, q, root)?;
    let ks = imp.binary_scalar(BinaryOp::Mul, kk, root)?;
    let kt = imp.add(Op::Transpose { perm: vec![0, 1, 3, 2] }, &[ks])?;
    let mut scores = imp.add(Op::MatMul, &[qs, kt])?;
    if softcap > 0.0 {
        let d = imp.binary_scalar(BinaryOp::Div, scores, softcap)?;
        let t = imp.unary(UnaryOp::Tanh, d)?;
        scores = imp.binary_scalar(BinaryOp::Mul, t, softcap)?;
    }
    let capped = scores;
    if let Some(b) = bias {
        scores = imp.binary(BinaryOp::Add, scores, b)?;
    }
    let with_bias = scores;
    let precision = match a.opt_int("softmax_precision")? {
        Some(code) => tensor::dtype_of(code as i32).map_err(|e| BuildError::Unsupported(e.message))?,
        None => dtype,
    };
    let scores = imp.cast(scores, precision)?;
    let mut probs = imp.add(Op::Softmax { axis: -1 }, &[scores])?;
    if let Some(b) = bias {
        // Rows with no attendable key (decided on the bias, not on possibly-NaN scores) give 0.
        let row_max = imp.add(Op::Reduce { kind: ReduceKind::Max, axes: vec![-1], keepdims: true }, &[b])?;
        let ninf = imp.scalar(dtype, f64::NEG_INFINITY);
        let all_masked = imp.compare(CompareOp::Eq, row_max, ninf)?;
        let zero = imp.scalar(precision, 0.0);
        probs = imp.select(all_masked, zero, probs)?;
    }
    let probs = imp.cast(probs, dtype)?;
    let mut y = imp.add(Op::MatMul, &[probs, vv])?;
    if rank == 3 {
        let t = imp.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[y])?;
        let dims = imp.ty(t).dims;
        let width = static_dim(&dims[2], "head count")? * static_dim(&dims[3], "head size")?;
        y = imp.reshape(t, vec![dims[0].clone(), dims[1].clone(), Dim::Static(width)])?;
    }
    let qk_out = match mode {
        0 | 1 => capped,
        2 => with_bias,
        _ => probs,
    };
    Ok(vec![Slot::Value(y), Slot::Value(present_k), Slot::Value(present_v), Slot::Value(qk_out)])
}

/// What masks one attention score: the inputs and attributes that make up the additive bias.
#[derive(Clone, Copy)]
struct Masking {
    mask: Option<ValueId>,
    nonpad: Option<ValueId>,
    /// The internal KV cache's length (`past_key`'s sequence length), when there is one.
    past_len: Option<u64>,
    is_causal: bool,
    left_window: i64,
    right_window: i64,
}

/// The additive bias of the scores (`None` when nothing masks them): `attn_mask` plus the
/// causal, sliding-window and key-padding masks, each 0 (attend) or -inf, the causal and window
/// ones aligned bottom-right by the cache offset (see [`attention`]).
fn attention_bias(
    imp: &mut Importer,
    masking: &Masking,
    dtype: DType,
    batch: Dim,
    q_len: u64,
    kv_len: u64,
) -> BuildResult<Option<ValueId>> {
    let Masking { mask, nonpad, past_len, is_causal, left_window, right_window } = *masking;
    // Where query 0 sits among the keys: a scalar, or `[B, 1, 1, 1]` per batch.
    let offset = match (past_len, nonpad) {
        (Some(past), _) => imp.constant(Tensor::from_i64(DType::I64, vec![], vec![past as i64])),
        (None, Some(lens)) => {
            let lens = imp.cast(lens, DType::I64)?;
            let lens = imp.reshape(lens, vec![batch.clone(), Dim::Static(1), Dim::Static(1), Dim::Static(1)])?;
            imp.binary_scalar(BinaryOp::Sub, lens, q_len as f64)?
        }
        (None, None) => imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0])),
    };
    let mut bias = match mask {
        Some(m) => Some(mask_bias(imp, m, dtype, kv_len)?),
        None => None,
    };
    let mut add_bias = |imp: &mut Importer, part: ValueId| -> BuildResult<()> {
        bias = Some(match bias {
            Some(b) => imp.binary(BinaryOp::Add, b, part)?,
            None => part,
        });
        Ok(())
    };
    if is_causal || left_window >= 0 || right_window >= 0 {
        // distance = (i + offset) - j for query i and key j.
        let i = super::iota(imp, 2, 0, q_len)?;
        let j = super::iota(imp, 2, 1, kv_len)?;
        let position = imp.binary(BinaryOp::Add, i, offset)?;
        let distance = imp.binary(BinaryOp::Sub, position, j)?;
        let zero = imp.full_like(distance, 0.0)?;
        let mut allowed: Option<ValueId> = None;
        let mut conditions = Vec::new();
        if is_causal {
            conditions.push(imp.compare(CompareOp::Ge, distance, zero)?);
        }
        if left_window >= 0 {
            let bound = imp.full_like(distance, left_window as f64)?;
            conditions.push(imp.compare(CompareOp::Le, distance, bound)?);
        }
        if right_window >= 0 {
            let bound = imp.full_like(distance, -right_window as f64)?;
            conditions.push(imp.compare(CompareOp::Ge, distance, bound)?);
        }
        for c in conditions {
            allowed = Some(match allowed {
                Some(a) => imp.binary(BinaryOp::And, a, c)?,
                None => c,
            });
        }
        if let Some(allowed) = allowed {
            let zero = imp.scalar(dtype, 0.0);
            let ninf = imp.scalar(dtype, f64::NEG_INFINITY);
            let part = imp.select(allowed, zero, ninf)?;
            add_bias(imp, part)?;
        }
    }
    if let Some(lens) = nonpad {
        // Keys at or beyond each batch's length are padding: bias -inf.
        let lens = imp.cast(lens, DType::I64)?;
        let lens = imp.reshape(lens, vec![batch, Dim::Static(1), Dim::Static(1), Dim::Static(1)])?;
        let iota = super::iota(imp, 4, 3, kv_len)?;
        let keep = imp.compare(CompareOp::Lt, iota, lens)?;
        let zero = imp.scalar(dtype, 0.0);
        let ninf = imp.scalar(dtype, f64::NEG_INFINITY);
        let pad = imp.select(keep, zero, ninf)?;
        add_bias(imp, pad)?;
    }
    Ok(bias)
}

/// `[B, H, S, D]` -> `[B, H * r, S, D]` with each head repeated `r` times in place.
fn repeat_heads(imp: &mut Importer, x: ValueId, r: u64) -> BuildResult<ValueId> {
    let dims = imp.ty(x).dims;
    let h = static_dim(&dims[1], "head count")?;
    let mut five = dims.clone();
    five.insert(2, Dim::Static(1));
    let x5 = imp.reshape(x, five.clone())?;
    five[2] = Dim::Static(r);
    let spread = imp.broadcast(x5, &five)?;
    let mut out = dims;
    out[1] = Dim::Static(h * r);
    imp.reshape(spread, out)
}

/// Slice the last axis as `[start:end:step]`.
fn last_axis(imp: &mut Importer, x: ValueId, start: i64, end: i64, step: i64) -> BuildResult<ValueId> {
    let r = imp.ty(x).rank();
    let (mut s, mut e, mut st) = (vec![0; r], vec![i64::MAX; r], vec![1; r]);
    (s[r - 1], e[r - 1], st[r - 1]) = (start, end, step);
    imp.add(Op::Slice { starts: s, ends: e, steps: st }, &[x])
}

/// Rotates pairs of the first `rotary_embedding_dim` features by the cached angles:
/// `(x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)`, pairs split in halves or interleaved.
fn rotary_embedding(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let (mut cos, mut sin) = (imp.value(cx, 1)?, imp.value(cx, 2)?);
    let positions = imp.opt_value(cx, 3)?;
    let interleaved = cx.attrs.int("interleaved", 0)? != 0;
    let xty = imp.ty(x);
    let original = xty.dims.clone();
    // Work in [B, S, H, D].
    let x4 = match xty.rank() {
        4 => imp.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[x])?,
        3 => {
            let heads = cx.attrs.int("num_heads", 0)?;
            let hidden = static_dim(&xty.dims[2], "hidden size")?;
            if heads < 1 || hidden % heads as u64 != 0 {
                return invalid(format!("num_heads = {heads} does not divide hidden size {hidden}"));
            }
            let dims = vec![
                xty.dims[0].clone(),
                xty.dims[1].clone(),
                Dim::Static(heads as u64),
                Dim::Static(hidden / heads as u64),
            ];
            imp.reshape(x, dims)?
        }
        _ => return invalid(format!("input must have rank 3 or 4, got {xty}")),
    };
    let head = static_dim(&imp.ty(x4).dims[3], "head size")? as i64;
    let rdim = match cx.attrs.int("rotary_embedding_dim", 0)? {
        0 => head,
        d if d > 0 && d <= head && d % 2 == 0 => d,
        d => return invalid(format!("rotary_embedding_dim = {d} for head size {head}")),
    };
    if let Some(p) = positions {
        cos = imp.add(Op::Gather { axis: 0 }, &[cos, p])?;
        sin = imp.add(Op::Gather { axis: 0 }, &[sin, p])?;
    }
    // [B, S, rdim / 2] -> [B, S, 1, rdim / 2], shared by the heads.
    let unsqueeze = |imp: &mut Importer, t: ValueId| {
        let mut d = imp.ty(t).dims;
        if d.len() != 3 {
            return invalid(format!("cos/sin caches must be [batch, seq, rotary_dim / 2], got {}", imp.ty(t)));
        }
        d.insert(2, Dim::Static(1));
        imp.reshape(t, d)
    };
    let cos = unsqueeze(imp, cos)?;
    let sin = unsqueeze(imp, sin)?;
    let rot = last_axis(imp, x4, 0, rdim, 1)?;
    let (x1, x2) = if interleaved {
        (last_axis(imp, rot, 0, i64::MAX, 2)?, last_axis(imp, rot, 1, i64::MAX, 2)?)
    } else {
        (last_axis(imp, rot, 0, rdim / 2, 1)?, last_axis(imp, rot, rdim / 2, i64::MAX, 1)?)
    };
    let c1 = imp.binary(BinaryOp::Mul, cos, x1)?;
    let s2 = imp.binary(BinaryOp::Mul, sin, x2)?;
    let real = imp.binary(BinaryOp::Sub, c1, s2)?;
    let s1 = imp.binary(BinaryOp::Mul, sin, x1)?;
    let c2 = imp.binary(BinaryOp::Mul, cos, x2)?;
    let imag = imp.binary(BinaryOp::Add, s1, c2)?;
    let rotated = if interleaved {
        let mut d = imp.ty(real).dims;
        d.push(Dim::Static(1));
        let re = imp.reshape(real, d.clone())?;
        let im = imp.reshape(imag, d)?;
        let pairs = imp.add(Op::Concat { axis: -1 }, &[re, im])?;
        let dims = imp.ty(rot).dims;
        imp.reshape(pairs, dims)?
    } else {
        imp.add(Op::Concat { axis: -1 }, &[real, imag])?
    };
    let out = if rdim < head {
        let rest = last_axis(imp, x4, rdim, i64::MAX, 1)?;
        imp.add(Op::Concat { axis: -1 }, &[rotated, rest])?
    } else {
        rotated
    };
    let y = if xty.rank() == 4 {
        imp.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[out])?
    } else {
        imp.reshape(out, original)?
    };
    Ok(vec![Slot::Value(y)])
}
