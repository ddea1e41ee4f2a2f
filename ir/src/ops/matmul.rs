//! `tsr.matmul`: (batched) matrix multiplication `[..., m, k] x [..., k, n] -> [..., m, n]`.
//!
//! Leading batch dimensions broadcast as in NumPy (a dimension of 1 stretches), so a weight
//! `[k, n]` multiplies activations `[batch, seq, k]` without a reshape.
//!
//! Reference semantics: float products are summed in `f64` in order of `k` and rounded once;
//! integer products wrap.

use super::gradient::{GradContext, GradError, GradResult};
use super::{
    broadcast_coeffs, broadcast_dims, expect_arity, operand_shape, product, strided_index, FlopResult, ShapeResult,
};
use crate::graph::ValueId;
use crate::sharding::{PartialKind, ShardingRule};
use crate::tensor::{Buffer, Tensor};
use crate::types::TensorType;

pub fn infer(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    if a.rank() < 2 || b.rank() < 2 {
        return Err(format!("operands must have rank >= 2, got {a} and {b}"));
    }
    if a.dtype != b.dtype {
        return Err(format!("operand element types differ: {} and {}", a.dtype, b.dtype));
    }
    if !a.dtype.is_float() && !a.dtype.is_int() {
        return Err(format!("matmul is not defined on {}", a.dtype));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let k_a = &a.dims[ra - 1];
    let k_b = &b.dims[rb - 2];
    if k_a != k_b {
        return Err(format!("contracting dimensions differ: {k_a} (of {a}) vs {k_b} (of {b})"));
    }
    let mut dims = broadcast_dims(&a.dims[..ra - 2], &b.dims[..rb - 2])
        .ok_or_else(|| format!("batch dimensions of {a} and {b} do not broadcast"))?;
    dims.push(a.dims[ra - 2].clone());
    dims.push(b.dims[rb - 1].clone());
    Ok(vec![TensorType::new(a.dtype, dims)])
}

/// FLOPs: `2 * M * N * K * batch` with the broadcast batch, that is two per result element
/// and contracted index.
pub fn flops(inputs: &[&[u64]], out_elements: u128) -> FlopResult {
    let k = *operand_shape(inputs, 0)?.last().ok_or("matmul operand has rank 0")?;
    Ok(out_elements.saturating_mul(k as u128).saturating_mul(2))
}

/// `n_batch` row-major `[m, k] x [k, n]` products; `offsets(bi)` gives the start of batch `bi`'s
/// matrices in `x` and `y`, and `fma(acc, l, r)` accumulates one product.
fn batched_gemm<T: Copy + Default>(
    x: &[T],
    y: &[T],
    n_batch: usize,
    (m, k, n): (usize, usize, usize),
    offsets: impl Fn(usize) -> (usize, usize),
    fma: impl Fn(&mut T, T, T),
) -> Vec<T> {
    let mut acc = vec![T::default(); n_batch * m * n];
    for bi in 0..n_batch {
        let (ao, bo) = offsets(bi);
        for i in 0..m {
            let row = &mut acc[(bi * m + i) * n..(bi * m + i + 1) * n];
            for p in 0..k {
                let lhs = x[ao + i * k + p];
                let rhs = &y[bo + p * n..bo + (p + 1) * n];
                for (r, &v) in row.iter_mut().zip(rhs) {
                    fma(r, lhs, v);
                }
            }
        }
    }
    acc
}

/// `a @ b` giving `out` (`[..batch, m, n]`, from the shape rule).
pub fn eval(a: &Tensor, b: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let (ra, rb, ro) = (a.shape.len(), b.shape.len(), out.len());
    if ra < 2 || rb < 2 || ro < 2 {
        return Err(format!("operands must have rank >= 2, got {:?} and {:?}", a.shape, b.shape));
    }
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = &out[..ro - 2];
    // Each operand's batch index, in matrices, for every output batch index.
    let a_coeffs = broadcast_coeffs(&a.shape[..ra - 2], batch);
    let b_coeffs = broadcast_coeffs(&b.shape[..rb - 2], batch);
    let n_batch = product(batch);
    let offsets =
        |bi: usize| (strided_index(bi, batch, &a_coeffs, 0) * m * k, strided_index(bi, batch, &b_coeffs, 0) * k * n);
    // One loop nest for both storages: f64 accumulates exactly as written, integers wrap.
    match (&a.data, &b.data) {
        _ if a.has_float_storage() && b.has_float_storage() => {
            let (x, y) = (super::floats(a)?, super::floats(b)?);
            let acc = batched_gemm(&x, &y, n_batch, (m, k, n), offsets, |r: &mut f64, l, v| *r += l * v);
            Ok(Tensor::from_f64(a.dtype, out.to_vec(), acc))
        }
        (Buffer::Int(x), Buffer::Int(y)) => {
            let acc = batched_gemm(x, y, n_batch, (m, k, n), offsets, |r: &mut i64, l, v| {
                *r = r.wrapping_add(l.wrapping_mul(v))
            });
            Ok(Tensor::from_i64(a.dtype, out.to_vec(), acc))
        }
        _ => Err(format!("operands {} and {} have different storage", a.dtype, b.dtype)),
    }
}

/// `y = a @ b`: `da = g @ b^T` and `db = a^T @ g` (transposing the last two dimensions), each
/// summed over the batch dimensions its operand was broadcast along.
pub fn grad(cx: &mut GradContext, a: ValueId, b: ValueId, g: ValueId, wanted: &[bool]) -> GradResult {
    let swap_last = |cx: &mut GradContext, x: ValueId| -> Result<ValueId, GradError> {
        let r = cx.ty(x).rank() as i64;
        let mut perm: Vec<i64> = (0..r).collect();
        perm.swap((r - 2) as usize, (r - 1) as usize);
        cx.add(super::Op::Transpose { perm }, &[x])
    };
    let da = if wanted[0] {
        let bt = swap_last(cx, b)?;
        let full = cx.add(super::Op::MatMul, &[g, bt])?;
        Some(cx.sum_to(full, &cx.ty(a))?)
    } else {
        None
    };
    let db = if wanted[1] {
        let at = swap_last(cx, a)?;
        let full = cx.add(super::Op::MatMul, &[at, g])?;
        Some(cx.sum_to(full, &cx.ty(b))?)
    } else {
        None
    };
    Ok(vec![da, db])
}

/// Sharding rule: batch dimensions (broadcast ones stay whole in the operand of extent 1), `m`
/// and `n` are parallel; `k` is a sum reduction, so splitting it (row-parallel weights) leaves
/// partial sums.
pub fn sharding_rule(a: &TensorType, b: &TensorType, out: &TensorType) -> ShardingRule {
    let mut rule = ShardingRule {
        operands: vec![vec![None; a.rank()], vec![None; b.rank()]],
        results: vec![vec![None; out.rank()]],
        factor_sizes: vec![],
        reduction: Some(PartialKind::Sum),
    };
    let (ra, rb, ro) = (a.rank(), b.rank(), out.rank());
    for d in 0..ro - 2 {
        let f = rule.factor(&out.dims[d]);
        rule.results[0][d] = Some(f);
        // Operands align at the end of the batch dimensions; an extent-1 dimension broadcasts.
        for (i, t) in [a, b].into_iter().enumerate() {
            let batch = t.rank() - 2;
            if let Some(od) = (d + batch).checked_sub(ro - 2) {
                if t.dims[od] == out.dims[d] {
                    rule.operands[i][od] = Some(f);
                }
            }
        }
    }
    let m = rule.factor(&out.dims[ro - 2]);
    let n = rule.factor(&out.dims[ro - 1]);
    let k = rule.factor(&a.dims[ra - 1]);
    rule.results[0][ro - 2] = Some(m);
    rule.results[0][ro - 1] = Some(n);
    rule.operands[0][ra - 2] = Some(m);
    rule.operands[0][ra - 1] = Some(k);
    rule.operands[1][rb - 2] = Some(k);
    rule.operands[1][rb - 1] = Some(n);
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, f32s};
    use super::super::Op;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    #[test]
    fn two_by_three_times_three_by_two() {
        let a = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32s(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_close(&eval1(&Op::MatMul, &[&a, &b]), DType::F32, &[2, 2], &[58.0, 64.0, 139.0, 154.0], 0.0);
    }

    #[test]
    fn batch_dimensions_broadcast_like_numpy() {
        // a: [2, 1, 2, 2] holds I and 2I; b: [3, 2, 2] holds three matrices; out[i, j] = (i + 1) b[j].
        let a = f32s(&[2, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0]);
        let b_values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let b = f32s(&[3, 2, 2], &b_values);
        let expected: Vec<f64> = b_values.iter().copied().chain(b_values.iter().map(|v| 2.0 * v)).collect();
        assert_close(&eval1(&Op::MatMul, &[&a, &b]), DType::F32, &[2, 3, 2, 2], &expected, 0.0);
        // A rank-2 weight multiplies every batch of a rank-3 activation.
        let x = f32s(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = f32s(&[2, 1], &[10.0, 1.0]);
        assert_close(&eval1(&Op::MatMul, &[&x, &w]), DType::F32, &[2, 1, 1], &[12.0, 34.0], 0.0);
    }

    #[test]
    fn integer_matmul_wraps() {
        let a = Tensor::from_i64(DType::I8, vec![1, 2], vec![100, 100]);
        let b = Tensor::from_i64(DType::I8, vec![2, 2], vec![1, 2, 1, -1]);
        assert_eq!(eval1(&Op::MatMul, &[&a, &b]).to_i64_vec(), [-56, 100]);
    }
}
