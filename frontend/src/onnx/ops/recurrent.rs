//! Recurrent layers: `LSTM`, `GRU` and `RNN` onto `tsr.lstm`, `tsr.gru` and `tsr.rnn`.
//!
//! The tsr ops are time major (ONNX `layout = 0`) and take every optional input but
//! `sequence_lens`; this builder writes the zeros ONNX defaults to (`B`, `initial_h`,
//! `initial_c`, `P`), resolves `activations` with their `activation_alpha`/`activation_beta`
//! lists (entry i parameterises function i, onnxruntime's reading), and
//! transposes inputs and outputs around the op for `layout = 1` (batch major).

use super::{invalid, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::recurrent::{Activation, ActivationKind, Cell, Direction, RecurrentKind};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("LSTM", |imp, cx| recurrent(imp, cx, RecurrentKind::Lstm));
    r.insert("GRU", |imp, cx| recurrent(imp, cx, RecurrentKind::Gru));
    r.insert("RNN", |imp, cx| recurrent(imp, cx, RecurrentKind::Rnn));
}

/// The `activations` attribute resolved against its defaults and parameter lists.
fn activations(cx: &NodeCx, kind: RecurrentKind, directions: usize) -> BuildResult<Vec<Activation>> {
    let names: Vec<ActivationKind> = match cx.attrs.opt_strings("activations")? {
        None => (0..directions).flat_map(|_| kind.default_activations().iter().copied()).collect(),
        Some(names) => names
            .iter()
            .map(|name| match ActivationKind::from_onnx(name) {
                Some(k) => Ok(k),
                None => unsupported(format!("activation function '{name}'")),
            })
            .collect::<BuildResult<_>>()?,
    };
    let wanted = kind.activations_per_direction() * directions;
    if names.len() != wanted {
        return invalid(format!(
            "{} needs {wanted} activations for {directions} direction(s), got {}",
            kind.onnx_name(),
            names.len()
        ));
    }
    // Entry i of each list belongs to function i (onnxruntime's reading; it reads past the end
    // of a shorter list, tessera takes the function's default there).
    let alphas = cx.attrs.opt_floats("activation_alpha")?.unwrap_or_default();
    let betas = cx.attrs.opt_floats("activation_beta")?.unwrap_or_default();
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let (default_alpha, default_beta) = k.default_params();
            let alpha = if k.uses_alpha() { alphas.get(i).copied().unwrap_or(default_alpha) } else { default_alpha };
            let beta = if k.uses_beta() { betas.get(i).copied().unwrap_or(default_beta) } else { default_beta };
            Activation { kind: k, alpha, beta }
        })
        .collect())
}

/// A zero constant of static `shape` in `like`'s dtype.
fn zeros(imp: &mut Importer, like: ValueId, shape: Vec<usize>) -> ValueId {
    let dtype = imp.ty(like).dtype;
    imp.constant(Tensor::zeros(dtype, shape))
}

fn recurrent(imp: &mut Importer, cx: &NodeCx, kind: RecurrentKind) -> BuildResult<Vec<Slot>> {
    let name = kind.onnx_name();
    let direction_name = cx.attrs.string("direction", "forward")?;
    let Some(direction) = Direction::from_name(&direction_name) else {
        return invalid(format!("{name} direction '{direction_name}' is not forward, reverse or bidirectional"));
    };
    let directions = direction.num_directions();
    let layout = cx.attrs.int("layout", 0)?;
    if layout != 0 && layout != 1 {
        return invalid(format!("{name} layout must be 0 or 1, got {layout}"));
    }
    let mut x = imp.value(cx, 0)?;
    let w = imp.value(cx, 1)?;
    let r = imp.value(cx, 2)?;
    let r_ty = imp.ty(r);
    // hidden_size is optional in ONNX: R is [D, G * H, H].
    let hidden = match cx.attrs.opt_int("hidden_size")? {
        Some(h) => h,
        None => match r_ty.dims.get(2).and_then(Dim::as_static) {
            Some(h) => h as i64,
            None => return invalid(format!("{name} has no hidden_size and R {r_ty} has no static hidden dimension")),
        },
    };
    let h = usize::try_from(hidden).ok().filter(|&h| h > 0 && h < 1 << 24);
    let Some(h) = h else { return invalid(format!("{name} hidden_size {hidden} is out of range")) };
    let mut cell = Cell::new(kind, hidden, direction);
    cell.activations = activations(cx, kind, directions)?;
    cell.clip = cx.attrs.opt_float("clip")?;
    cell.input_forget = cx.attrs.int("input_forget", 0)? != 0;
    cell.linear_before_reset = cx.attrs.int("linear_before_reset", 0)? != 0;
    if cell.input_forget && kind != RecurrentKind::Lstm || cell.linear_before_reset && kind != RecurrentKind::Gru {
        return invalid(format!("{name} has an attribute of another recurrent op"));
    }
    cell.check(kind)?;
    // Batch-major inputs: X [N, S, I] and states [N, D, H] become time major.
    let swap = Op::Transpose { perm: vec![1, 0, 2] };
    if layout == 1 {
        x = imp.add(swap.clone(), &[x])?;
    }
    let x_ty = imp.ty(x);
    if x_ty.rank() != 3 {
        return invalid(format!("{name} input X must have rank 3, got {x_ty}"));
    }
    let g = kind.gates();
    let b = match imp.opt_value(cx, 3)? {
        Some(b) => b,
        None => zeros(imp, x, vec![directions, 2 * g * h]),
    };
    // A given state's batch is X's batch: where they are two symbols they become one.
    let state = |imp: &mut Importer, i: usize| -> BuildResult<ValueId> {
        let given = match imp.opt_value(cx, i)? {
            Some(v) if layout == 1 => Some(imp.add(swap.clone(), &[v])?),
            other => other,
        };
        match given {
            Some(v) => {
                if let Some(state_batch) = imp.ty(v).dims.get(1) {
                    let x_batch = imp.ty(x).dims[1].clone();
                    imp.unify_dims(&x_batch, state_batch)?;
                }
                Ok(v)
            }
            None => {
                let zero = zeros(imp, x, vec![]);
                let batch = imp.ty(x).dims[1].clone();
                imp.broadcast(zero, &[Dim::Static(directions as u64), batch, Dim::Static(h as u64)])
            }
        }
    };
    let initial_h = state(imp, 5)?;
    let mut operands = vec![x, w, r, b, initial_h];
    if kind == RecurrentKind::Lstm {
        let initial_c = state(imp, 6)?;
        let p = match imp.opt_value(cx, 7)? {
            Some(p) => p,
            None => zeros(imp, x, vec![directions, 3 * h]),
        };
        operands.extend([initial_c, p]);
    } else if cx.input_name(6).is_some() || cx.input_name(7).is_some() {
        return invalid(format!("{name} takes at most 6 inputs"));
    }
    if let Some(lens) = imp.opt_value(cx, 4)? {
        operands.push(lens);
    }
    let mut outs = imp.add_n(Op::Recurrent { kind, cell }, &operands)?;
    if layout == 1 {
        // Y [S, D, N, H] -> [N, S, D, H]; states [D, N, H] -> [N, D, H].
        outs[0] = imp.add(Op::Transpose { perm: vec![2, 0, 1, 3] }, &[outs[0]])?;
        for out in outs.iter_mut().skip(1) {
            *out = imp.add(swap.clone(), &[*out])?;
        }
    }
    Ok(outs.into_iter().map(Slot::Value).collect())
}
