//! The recurrent library call of CPU programs: `tsr.lstm`, `tsr.gru` and `tsr.rnn` over a
//! whole sequence. Per direction, one GEMM projects every time step's input at once
//! (`[S * N, I] @ W^T`); each step then projects the batch's hidden state (`[N, H] @ R^T`, for a
//! GRU without `linear_before_reset` in two GEMMs around the reset gate) and applies the
//! per-unit functions of `tessera_ir::ops::recurrent::Cell`, the ones the reference semantics
//! use, so the two differ only in how the projections are summed (f32 here, f64 there).
//!
//! Storage: the float operands and results are f32; `sequence_lens` is an integer buffer
//! (i64 storage). Anything else is a malformed artifact and is refused with an error, as are
//! shapes that do not fit each other and sequence lengths outside `0..=S`.

use super::library::{f32s, f32s_mut, gemm_f32, In, Out, PARALLEL_GEMM_MIN_MACS};
use tessera_ir::artifact::{decode, Storage};
use tessera_ir::ops::recurrent::{step_counts, Cell, RecurrentKind};

/// `c = a @ b^T` for row-major `a: [m, k]` and `b: [n, k]`.
fn gemm_bt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let parallelism =
        if m * n * k >= PARALLEL_GEMM_MIN_MACS { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    gemm_f32((m, n, k), a, b, (k, 1), c, parallelism);
}

fn shape_of(x: &In) -> Vec<usize> {
    x.desc.shape.iter().map(|&n| n as usize).collect()
}

/// Checks that buffer `x` (`what`) holds f32 values of shape `want`.
fn expect<'a>(x: &'a In, want: &[usize], what: &str) -> Result<&'a [f32], String> {
    if x.desc.storage != Storage::F32 || shape_of(x) != want {
        return Err(format!("recurrent {what} must be f32 {want:?}, got {:?} {:?}", x.desc.storage, x.desc.shape));
    }
    f32s(x.bytes)
}

/// Runs the op on the step's buffers (operands and results as in `tessera_ir::ops::recurrent`).
pub fn recurrent(kind: RecurrentKind, cell: &Cell, ins: &[In], outs: &mut [Out]) -> Result<(), String> {
    cell.check(kind)?;
    let required = kind.required_operands();
    if (ins.len() != required && ins.len() != required + 1) || outs.len() != kind.num_results() {
        return Err(format!(
            "{} takes {required} or {} operands and gives {} results",
            kind.mnemonic(),
            required + 1,
            kind.num_results()
        ));
    }
    let xs = shape_of(&ins[0]);
    let [seq, batch, input] = <[usize; 3]>::try_from(xs.as_slice()).map_err(|_| "recurrent input must be rank 3")?;
    let hd = usize::try_from(cell.hidden_size).map_err(|_| "recurrent hidden_size out of range")?;
    let (gh, dirs) = (kind.gates() * hd, cell.direction.num_directions());
    let x = expect(&ins[0], &xs, "input")?;
    let w = expect(&ins[1], &[dirs, gh, input], "w")?;
    let r = expect(&ins[2], &[dirs, gh, hd], "r")?;
    let b = expect(&ins[3], &[dirs, 2 * gh], "b")?;
    let h0 = expect(&ins[4], &[dirs, batch, hd], "initial_h")?;
    let (c0, p) = match kind {
        RecurrentKind::Lstm => {
            (expect(&ins[5], &[dirs, batch, hd], "initial_c")?, expect(&ins[6], &[dirs, 3 * hd], "p")?)
        }
        _ => (&[][..], &[][..]),
    };
    let lens = match ins.get(required) {
        Some(l) => {
            let t = decode(l.bytes, l.desc.storage, l.desc.storage.compute_dtype(), &shape_of(l))
                .filter(|t| t.dtype.is_int() && t.shape == [batch])
                .ok_or("recurrent sequence_lens must be integers of shape [batch]")?;
            step_counts(Some(&t), seq, batch)?
        }
        None => vec![seq; batch],
    };
    let mut y = vec![0.0f32; seq * dirs * batch * hd];
    let mut y_h = h0.to_vec();
    let mut y_c = c0.to_vec();
    let max_len = lens.iter().copied().max().unwrap_or(0);
    let mut projected = vec![0.0f32; seq * batch * gh];
    let mut rec = vec![0.0f32; batch * gh];
    let mut candidate_rec = vec![0.0f32; batch * hd];
    let mut reset_h = vec![0.0f32; batch * hd];
    let mut gates = vec![(0.0f64, 0.0f64); batch * hd];
    for d in 0..dirs {
        let (w, r, b) = (&w[d * gh * input..][..gh * input], &r[d * gh * hd..][..gh * hd], &b[d * 2 * gh..][..2 * gh]);
        let (wb, rb) = b.split_at(gh);
        gemm_bt(seq * batch, gh, input, x, w, &mut projected);
        for row in projected.chunks_mut(gh.max(1)) {
            row.iter_mut().zip(wb).for_each(|(v, bias)| *v += bias);
        }
        let state = |n: usize| (d * batch + n) * hd;
        let reverse = cell.direction.is_reverse(d);
        for step in 0..max_len {
            let h_all = &y_h[d * batch * hd..][..batch * hd];
            let split_reset = kind == RecurrentKind::Gru && !cell.linear_before_reset;
            // The recurrent projection of every gate (for a GRU with the reset gate applied
            // first, of z and r only: the candidate's comes after the reset gate).
            let rec_rows = if split_reset { 2 * hd } else { gh };
            gemm_bt(batch, rec_rows, hd, h_all, &r[..rec_rows * hd], &mut rec[..batch * rec_rows]);
            let time = |n: usize| if reverse { lens[n] - 1 - step } else { step };
            let active = |n: usize| step < lens[n];
            let pre = |n: usize, k: usize| projected[(time(n) * batch + n) * gh + k] as f64;
            let rec_of = |rec: &[f32], n: usize, k: usize| (rec[n * rec_rows + k] + rb[k]) as f64;
            match kind {
                RecurrentKind::Lstm => {
                    for n in (0..batch).filter(|&n| active(n)) {
                        for j in 0..hd {
                            let gate = |q: usize| pre(n, q * hd + j) + rec_of(&rec, n, q * hd + j);
                            let peephole = [p[d * 3 * hd + j], p[(d * 3 + 1) * hd + j], p[(d * 3 + 2) * hd + j]];
                            let (h, c) = cell.lstm_unit(
                                d,
                                [gate(0), gate(1), gate(2), gate(3)],
                                peephole.map(f64::from),
                                y_c[state(n) + j] as f64,
                            );
                            y_h[state(n) + j] = h as f32;
                            y_c[state(n) + j] = c as f32;
                        }
                    }
                }
                RecurrentKind::Gru => {
                    for n in (0..batch).filter(|&n| active(n)) {
                        for j in 0..hd {
                            let (z, reset) = cell.gru_gates(
                                d,
                                pre(n, j) + rec_of(&rec, n, j),
                                pre(n, hd + j) + rec_of(&rec, n, hd + j),
                            );
                            gates[n * hd + j] = (z, reset);
                            reset_h[n * hd + j] = (reset * y_h[state(n) + j] as f64) as f32;
                        }
                    }
                    if split_reset {
                        gemm_bt(batch, hd, hd, &reset_h, &r[2 * hd * hd..][..hd * hd], &mut candidate_rec);
                    }
                    for n in (0..batch).filter(|&n| active(n)) {
                        for j in 0..hd {
                            let (z, reset) = gates[n * hd + j];
                            let recurrent = if split_reset {
                                (candidate_rec[n * hd + j] + rb[2 * hd + j]) as f64
                            } else {
                                reset * rec_of(&rec, n, 2 * hd + j)
                            };
                            let h_prev = y_h[state(n) + j] as f64;
                            let candidate = cell.gru_candidate(d, pre(n, 2 * hd + j) + recurrent);
                            y_h[state(n) + j] = ((1.0 - z) * candidate + z * h_prev) as f32;
                        }
                    }
                }
                RecurrentKind::Rnn => {
                    for n in (0..batch).filter(|&n| active(n)) {
                        for j in 0..hd {
                            y_h[state(n) + j] = cell.rnn_unit(d, pre(n, j) + rec_of(&rec, n, j)) as f32;
                        }
                    }
                }
            }
            for n in (0..batch).filter(|&n| active(n)) {
                let at = ((time(n) * dirs + d) * batch + n) * hd;
                y[at..at + hd].copy_from_slice(&y_h[state(n)..state(n) + hd]);
            }
        }
    }
    let mut results = vec![y, y_h];
    if kind == RecurrentKind::Lstm {
        results.push(y_c);
    }
    for (out, values) in outs.iter_mut().zip(&results) {
        if out.desc.storage != Storage::F32 {
            return Err("recurrent results must be f32".into());
        }
        let dst = f32s_mut(out.bytes)?;
        if dst.len() != values.len() {
            return Err(format!("recurrent result buffer holds {} values, not {}", dst.len(), values.len()));
        }
        dst.copy_from_slice(values);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::test_buffers::{bytes, desc, values};
    use tessera_ir::artifact::BufferDesc;
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::recurrent::{Activation, ActivationKind, Direction};
    use tessera_ir::ops::Op;
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;

    fn bytes_mut(values: &mut [f32]) -> &mut [u8] {
        // SAFETY: any 4 bytes are an f32; the slice covers exactly the values, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), 4 * values.len()) }
    }

    /// Runs the library call and the reference semantics on the same seeded operands and
    /// compares every result element within `tol` (relative, floored at 1). Operands after `x`
    /// are scaled by `weight_scale`.
    fn check(
        kind: RecurrentKind,
        cell: &Cell,
        [seq, batch, input]: [usize; 3],
        lens: Option<&[i64]>,
        weight_scale: f32,
        tol: f64,
    ) {
        let (h, d) = (cell.hidden_size as usize, cell.direction.num_directions());
        let gh = kind.gates() * h;
        let mut shapes =
            vec![vec![seq, batch, input], vec![d, gh, input], vec![d, gh, h], vec![d, 2 * gh], vec![d, batch, h]];
        if kind == RecurrentKind::Lstm {
            shapes.extend([vec![d, batch, h], vec![d, 3 * h]]);
        }
        let data: Vec<Vec<f32>> = shapes
            .iter()
            .zip(1..)
            .map(|(s, seed)| {
                let scale = if seed == 1 { 1.0 } else { weight_scale };
                values(s.iter().product(), seed).into_iter().map(|v| v * scale).collect()
            })
            .collect();
        let mut tensors: Vec<Tensor> = shapes
            .iter()
            .zip(&data)
            .map(|(s, v)| Tensor::from_f64(DType::F32, s.clone(), v.iter().map(|&x| f64::from(x)).collect()))
            .collect();
        if let Some(lens) = lens {
            tensors.push(Tensor::from_i64(DType::I64, vec![batch], lens.to_vec()));
        }
        let op = Op::Recurrent { kind, cell: cell.clone() };
        let types: Vec<TensorType> = tensors.iter().map(Tensor::tensor_type).collect();
        let results = op.infer(&types.iter().collect::<Vec<_>>()).expect("well typed");
        let want = op.eval(&tensors.iter().collect::<Vec<_>>(), &results).expect("reference");

        let descs: Vec<BufferDesc> = shapes.iter().map(|s| desc(s)).collect();
        let lens_desc = BufferDesc { storage: Storage::I64, ..desc(&[batch]) };
        let lens_bytes: Vec<u8> = lens.unwrap_or_default().iter().flat_map(|n| n.to_le_bytes()).collect();
        let mut ins: Vec<In> = descs.iter().zip(&data).map(|(desc, v)| In { desc, bytes: bytes(v) }).collect();
        if lens.is_some() {
            ins.push(In { desc: &lens_desc, bytes: &lens_bytes });
        }
        let out_descs: Vec<BufferDesc> = want.iter().map(|t| desc(&t.shape)).collect();
        let mut got: Vec<Vec<f32>> = want.iter().map(|t| vec![f32::NAN; t.len()]).collect();
        let mut outs: Vec<Out> =
            out_descs.iter().zip(got.iter_mut()).map(|(desc, v)| Out { desc, bytes: bytes_mut(v) }).collect();
        recurrent(kind, cell, &ins, &mut outs).expect("library call");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            for (j, (a, b)) in g.iter().zip(w.to_f64_vec()).enumerate() {
                let close = (f64::from(*a) - b).abs() <= tol * b.abs().max(1.0);
                assert!(close, "{kind:?} {cell:?} lens {lens:?}: result {i} element {j}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_kind_direction_and_option_matches_the_interpreter() {
        let lens: [Option<&[i64]>; 2] = [None, Some(&[3, 0, 1])];
        for kind in RecurrentKind::ALL.iter().copied() {
            for direction in [Direction::Forward, Direction::Reverse, Direction::Bidirectional] {
                for lens in lens {
                    let mut cell = Cell::new(kind, 4, direction);
                    check(kind, &cell, [3, 3, 5], lens, 1.0, 1e-5);
                    cell.clip = Some(0.3);
                    cell.input_forget = kind == RecurrentKind::Lstm;
                    cell.linear_before_reset = kind == RecurrentKind::Gru;
                    for (i, a) in cell.activations.iter_mut().enumerate() {
                        let kinds = [ActivationKind::HardSigmoid, ActivationKind::Softsign, ActivationKind::Elu];
                        *a = Activation { kind: kinds[i % 3], alpha: 0.4, beta: 0.6 };
                    }
                    check(kind, &cell, [3, 3, 5], lens, 1.0, 1e-5);
                }
            }
        }
    }

    /// An input projection large enough to run on rayon's pool. The weights are scaled down as
    /// a trained layer's are (with weights in [-1, 1] over 128 inputs and 64 units the
    /// recurrence amplifies f32 rounding past 1e-4 within 64 steps).
    #[test]
    fn a_threaded_input_projection_matches_the_interpreter() {
        let cell = Cell::new(RecurrentKind::Gru, 64, Direction::Forward);
        check(RecurrentKind::Gru, &cell, [64, 8, 128], None, 0.1, 1e-5);
    }

    #[test]
    fn malformed_calls_are_refused() {
        let cell = Cell::new(RecurrentKind::Rnn, 1, Direction::Forward);
        let x = values(2, 1);
        let dx = desc(&[2, 1, 1]);
        let ins = vec![In { desc: &dx, bytes: bytes(&x) }];
        let err = recurrent(RecurrentKind::Rnn, &cell, &ins, &mut []).expect_err("arity");
        assert_eq!(err, "rnn takes 5 or 6 operands and gives 2 results");
    }
}
