//! Loops: ONNX `Loop` and `Scan` as `tsr.loop`.
//!
//! Both become one `tsr.loop` whose carried values are, in order: the iteration counter (i64
//! scalar, from 0), the trip limit (i64 scalar: `Loop`'s `M`, `i64::MAX` without one, or the
//! scanned length), the condition (i1 scalar), the loop-carried (state) values, one accumulator
//! per scan output, then the enclosing values the body reads (carried unchanged: regions are
//! isolated from above). The `cond` region is `cond && counter < limit`; the body region runs
//! the ONNX body, steps the counter and writes each scan output into its accumulator.
//!
//! Scan outputs are accumulators of their final shape `[trips, ...]`, allocated before the loop
//! and written one row per trip (`where(iota == counter, row, acc)`), rather than a growing
//! concatenation: so the body yields exactly the types it takes, the invariant the verifier
//! checks for every `tsr.loop`, and no op needs a result whose shape changes from trip to trip.
//! This needs the trip count ahead of the loop: a constant or a symbolic `M` (the length
//! `Shape(x)[0]` gives, say: the accumulator is then `[seq, ...]`, no pinning) with a body
//! that passes its condition through unchanged. A `Loop` with scan outputs whose trip count is
//! computed at run time asks for it as a constant (the conformance runner then binds it), and
//! one whose body computes its condition is refused: its scan outputs' length is decided by the
//! data. Loops without scan outputs have no such limit: trip count and condition may both be
//! run-time values.
//!
//! `Scan` (opset 9 on: states and scan inputs, per-input and per-output directions and axes)
//! reads row `counter` (or `limit - 1 - counter` in reverse) of each scan input with a
//! `tsr.gather` inside the body, and moves each output's new axis to its `scan_output_axes`
//! position with a transpose after the loop. Scan-8 (a batch axis and `sequence_lens`) is not
//! imported.

use super::{invalid, BuildError, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::proto::GraphProto;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::control::{LoopRegions, DEFAULT_MAX_TRIPS};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::{normalize_axis, Dim, TensorType};

pub(super) fn register(r: &mut Registry) {
    r.insert("Loop", build_loop);
    r.insert("Scan", build_scan);
}

/// How the ONNX body's inputs and outputs sit among the carried values.
enum Form {
    /// `Loop`: the body takes `(iteration, cond, states...)` and yields
    /// `(cond, states..., scan outputs...)`.
    Loop,
    /// `Scan`: the body takes `(states..., one row of each scan input...)` and yields
    /// `(states..., scan outputs...)`.
    Scan { inputs: Vec<ValueId>, axes: Vec<usize>, reverse_in: Vec<bool>, reverse_out: Vec<bool> },
}

/// A loop before its body is imported.
struct Plan<'a> {
    body: &'a GraphProto,
    what: &'static str,
    form: Form,
    /// i64 scalar: the counter value at which the loop stops.
    limit: ValueId,
    /// i1 scalar: the condition before the first trip.
    cond: ValueId,
    /// The initial loop-carried values.
    states: Vec<ValueId>,
    /// The trip count when it is known before the loop runs (the scan outputs' length), or
    /// why scan outputs cannot be imported.
    trips: Result<Dim, BuildError>,
    max_trips: u64,
}

/// `Loop(M?, cond?, v_initial...)` with a `body` (opsets 1 to 21: 13 and later widen the
/// element types and 16 adds optional/sequence values, which tessera refuses at the graph
/// boundary).
fn build_loop(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let body = cx.attrs.req_graph("body")?;
    if cx.num_inputs() < 2 {
        return invalid(format!("Loop takes the trip count and the condition first, got {} inputs", cx.num_inputs()));
    }
    let n_states = cx.num_inputs() - 2;
    let has_scan_outputs = body.output.len() > 1 + n_states;
    let scalar = |imp: &mut Importer, v: ValueId, dtype: DType, what: &str| -> BuildResult<ValueId> {
        let ty = imp.ty(v);
        if ty.dtype != dtype || ty.num_elements() != Some(1) {
            return invalid(format!("the {what} must be one {dtype} element, got {ty}"));
        }
        imp.reshape(v, vec![])
    };
    let mut max_trips = DEFAULT_MAX_TRIPS;
    let (limit, mut trips) = match imp.slot(cx, 0)? {
        None => (
            imp.constant(Tensor::from_i64(DType::I64, vec![], vec![i64::MAX])),
            Err(BuildError::Unsupported(
                "a Loop with scan outputs and no trip count: their length is known only at run time".into(),
            )),
        ),
        Some(Slot::Shape { elems, .. }) => {
            let [count] = elems.as_slice() else {
                return invalid(format!("the trip count must be one element, got {} entries", elems.len()));
            };
            let trips = Dim::from_expr(count.clone()).map_err(|e| BuildError::Invalid(e.to_string()))?;
            (imp.dim_values(std::slice::from_ref(count), true)?, Ok(trips))
        }
        Some(Slot::Value(v)) => {
            let limit = scalar(imp, v, DType::I64, "trip count")?;
            let trips = match imp.constant_of(v).map(Tensor::to_i64_vec).as_deref() {
                Some([n]) => {
                    max_trips = max_trips.max((*n).max(0) as u64);
                    Ok(Dim::Static((*n).max(0) as u64))
                }
                _ => Err(BuildError::NotConstant {
                    value: cx.input_name(0).unwrap_or_default().to_string(),
                    role: "trip count (of a Loop with scan outputs)".into(),
                }),
            };
            (limit, trips)
        }
    };
    let cond = match imp.opt_value(cx, 1)? {
        None => imp.constant(Tensor::from_i64(DType::Bool, vec![], vec![1])),
        Some(v) => {
            let cond = scalar(imp, v, DType::Bool, "condition")?;
            match imp.constant_of(cond).map(|t| &t.data) {
                Some(Buffer::Int(c)) if c.first() == Some(&0) => trips = Ok(Dim::Static(0)),
                Some(_) => {}
                None if has_scan_outputs => {
                    return Err(BuildError::NotConstant {
                        value: cx.input_name(1).unwrap_or_default().to_string(),
                        role: "initial condition (of a Loop with scan outputs)".into(),
                    })
                }
                None => {}
            }
            cond
        }
    };
    let states = (0..n_states).map(|i| imp.value(cx, 2 + i)).collect::<BuildResult<Vec<_>>>()?;
    let plan = Plan { body, what: "the Loop body", form: Form::Loop, limit, cond, states, trips, max_trips };
    let (finals, scans) = build_tsr_loop(imp, cx, plan)?;
    Ok(finals.into_iter().chain(scans).map(Slot::Value).collect())
}

/// `Scan(initial states..., scan inputs...)` with a `body`, `num_scan_inputs` and the
/// directions and axes of opset 9 on (axes from 11 may be negative; Scan-8 is refused by
/// `legacy::modernize`).
fn build_scan(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let body = cx.attrs.req_graph("body")?;
    let num_scan = usize::try_from(cx.attrs.req_int("num_scan_inputs")?).unwrap_or(0);
    if num_scan == 0 || num_scan > cx.num_inputs() {
        return invalid(format!("num_scan_inputs must be 1 to {} (the inputs given)", cx.num_inputs()));
    }
    let n_states = cx.num_inputs() - num_scan;
    let n_outputs = body.output.len().checked_sub(n_states).ok_or_else(|| {
        BuildError::Invalid(format!("the body yields {} values for {n_states} states", body.output.len()))
    })?;
    let flags = |name: &str, n: usize| -> BuildResult<Vec<i64>> {
        let v = cx.attrs.opt_ints(name)?.unwrap_or_else(|| vec![0; n]);
        if v.len() != n {
            return invalid(format!("{name} has {} entries for {n} values", v.len()));
        }
        Ok(v)
    };
    let states = (0..n_states).map(|i| imp.value(cx, i)).collect::<BuildResult<Vec<_>>>()?;
    let inputs = (n_states..cx.num_inputs()).map(|i| imp.value(cx, i)).collect::<BuildResult<Vec<_>>>()?;
    let mut axes = Vec::with_capacity(num_scan);
    for (&x, &axis) in inputs.iter().zip(&flags("scan_input_axes", num_scan)?) {
        let ty = imp.ty(x);
        axes.push(
            normalize_axis(axis, ty.rank())
                .ok_or_else(|| BuildError::Invalid(format!("scan input axis {axis} is out of range for {ty}")))?,
        );
    }
    let lengths: Vec<Dim> = inputs.iter().zip(&axes).map(|(&x, &a)| imp.ty(x).dims[a].clone()).collect();
    let trips = lengths[0].clone();
    if let Some(other) = lengths.iter().find(|d| **d != trips) {
        return invalid(format!("the scan inputs differ in length along their scan axes ({trips} and {other})"));
    }
    let limit = match trips.as_static() {
        Some(n) => imp.constant(Tensor::from_i64(DType::I64, vec![], vec![n as i64])),
        None => {
            let expr = trips.to_expr().map_err(|e| BuildError::Invalid(e.to_string()))?;
            imp.dim_values(&[expr], true)?
        }
    };
    let is_reverse = |d: &i64| *d != 0;
    let form = Form::Scan {
        inputs,
        axes,
        reverse_in: flags("scan_input_directions", num_scan)?.iter().map(is_reverse).collect(),
        reverse_out: flags("scan_output_directions", n_outputs)?.iter().map(is_reverse).collect(),
    };
    let cond = imp.constant(Tensor::from_i64(DType::Bool, vec![], vec![1]));
    let max_trips = DEFAULT_MAX_TRIPS.max(trips.as_static().unwrap_or(0));
    let plan = Plan { body, what: "the Scan body", form, limit, cond, states, trips: Ok(trips), max_trips };
    let (finals, scans) = build_tsr_loop(imp, cx, plan)?;
    let out_axes = flags("scan_output_axes", n_outputs)?;
    let mut slots: Vec<Slot> = finals.into_iter().map(Slot::Value).collect();
    for (acc, axis) in scans.into_iter().zip(out_axes) {
        let rank = imp.ty(acc).rank();
        let k = normalize_axis(axis, rank)
            .ok_or_else(|| BuildError::Invalid(format!("scan output axis {axis} is out of range for rank {rank}")))?;
        let moved = if k == 0 {
            acc
        } else {
            // The new axis 0 goes to position k; the others keep their order.
            let perm = (0..rank as i64)
                .map(|j| {
                    if j < k as i64 {
                        j + 1
                    } else if j == k as i64 {
                        0
                    } else {
                        j
                    }
                })
                .collect();
            imp.add(Op::Transpose { perm }, &[acc])?
        };
        slots.push(Slot::Value(moved));
    }
    Ok(slots)
}

/// What the body region yields, and the accumulators' types.
struct BodyYields {
    yields: Vec<ValueId>,
    accumulators: Vec<TensorType>,
}

/// Emits the `tsr.loop` for `plan`; returns the final loop-carried values and the scan outputs
/// (each `[trips, ...]`, the new axis first).
fn build_tsr_loop(imp: &mut Importer, cx: &NodeCx, plan: Plan) -> BuildResult<(Vec<ValueId>, Vec<ValueId>)> {
    let i64_scalar = TensorType::new(DType::I64, vec![]);
    let mut header: Vec<(String, TensorType)> = vec![
        ("iteration".into(), i64_scalar.clone()),
        ("trip_limit".into(), i64_scalar),
        ("go_on".into(), TensorType::new(DType::Bool, vec![])),
    ];
    for (i, &s) in plan.states.iter().enumerate() {
        header.push((format!("state{i}"), imp.ty(s)));
    }

    let mut start = imp.begin_region();
    let header_args: Vec<(&str, TensorType)> = header.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let params = imp.block_args(&mut start, &header_args);
    let contents = body_contents(imp, cx, &plan, &mut start, &params);
    let body_yields = match contents {
        Ok(b) => b,
        Err(e) => {
            let _discarded = imp.end_region(start, None);
            return Err(e);
        }
    };
    let body = imp
        .end_region(start, Some(&body_yields.yields))
        .map_err(|m| BuildError::Invalid(format!("{}: {m}", plan.what)))?;

    let mut carried_types = header.clone();
    for (i, ty) in body_yields.accumulators.iter().enumerate() {
        carried_types.push((format!("scan{i}"), ty.clone()));
    }
    let mut start = imp.begin_region();
    let args: Vec<(&str, TensorType)> = carried_types.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let p = imp.block_args(&mut start, &args);
    let go_on = imp.compare(CompareOp::Lt, p[0], p[1]).and_then(|more| imp.binary(BinaryOp::And, p[2], more));
    let go_on = match go_on {
        Ok(v) => v,
        Err(e) => {
            let _discarded = imp.end_region(start, None);
            return Err(e);
        }
    };
    let cond =
        imp.end_region(start, Some(&[go_on])).map_err(|m| BuildError::Invalid(format!("the loop condition: {m}")))?;

    let mut captured = body.captures();
    for v in cond.captures() {
        if !captured.contains(&v) {
            captured.push(v);
        }
    }
    let body_region =
        body.close(&imp.graph, &captured, true).map_err(|m| BuildError::Invalid(format!("{}: {m}", plan.what)))?;
    let cond_region = cond
        .close(&imp.graph, &captured, false)
        .map_err(|m| BuildError::Invalid(format!("the loop condition: {m}")))?;

    let mut operands = vec![imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0])), plan.limit, plan.cond];
    operands.extend(&plan.states);
    for ty in &body_yields.accumulators {
        let zero = imp.scalar(ty.dtype, 0.0);
        operands.push(imp.broadcast(zero, &ty.dims)?);
    }
    operands.extend(&captured);
    let regions = LoopRegions { cond: cond_region, body: body_region, max_trips: plan.max_trips };
    let outs = imp.graph.add_node(Op::Loop(Box::new(regions)), &operands)?;
    let n = plan.states.len();
    let k = body_yields.accumulators.len();
    Ok((outs[3..3 + n].to_vec(), outs[3 + n..3 + n + k].to_vec()))
}

/// The body region's nodes, added to the graph being built after `params` (the counter, the
/// limit, the condition and the states): the ONNX body and the bookkeeping around it.
fn body_contents(
    imp: &mut Importer,
    cx: &NodeCx,
    plan: &Plan,
    start: &mut crate::onnx::import::RegionStart,
    params: &[ValueId],
) -> BuildResult<BodyYields> {
    let (iteration, limit, cond) = (params[0], params[1], params[2]);
    let states = &params[3..];
    let n = states.len();
    let from_end = |imp: &mut Importer| -> BuildResult<ValueId> {
        let last = imp.binary_scalar(BinaryOp::Sub, limit, 1.0)?;
        imp.binary(BinaryOp::Sub, last, iteration)
    };
    let onnx_params: Vec<ValueId> = match &plan.form {
        Form::Loop => [iteration, cond].into_iter().chain(states.iter().copied()).collect(),
        Form::Scan { inputs, axes, reverse_in, .. } => {
            let mut p = states.to_vec();
            for ((&x, &axis), &reverse) in inputs.iter().zip(axes).zip(reverse_in) {
                let row = if reverse { from_end(imp)? } else { iteration };
                p.push(imp.add(Op::Gather { axis: axis as i64 }, &[x, row])?);
            }
            p
        }
    };
    let slots = imp.import_body(plan.body, cx.opset, plan.what, &onnx_params)?;
    let mut outs = Vec::with_capacity(slots.len());
    for slot in slots {
        outs.push(match slot {
            Slot::Value(v) => v,
            Slot::Shape { elems, scalar } => imp.dim_values(&elems, scalar)?,
        });
    }
    let skip = match plan.form {
        Form::Loop => 1,
        Form::Scan { .. } => 0,
    };
    if outs.len() < skip + n {
        return invalid(format!("{} yields {} values, fewer than the {} it carries", plan.what, outs.len(), skip + n));
    }
    let cond_out = match plan.form {
        Form::Loop => {
            let c = outs[0];
            let ty = imp.ty(c);
            if ty.dtype != DType::Bool || ty.num_elements() != Some(1) {
                return invalid(format!("{} yields its condition as {ty}, not one bool element", plan.what));
            }
            imp.reshape(c, vec![])?
        }
        Form::Scan { .. } => cond,
    };
    let states_out = &outs[skip..skip + n];
    for (i, (&given, &got)) in states.iter().zip(states_out).enumerate() {
        let (given, got) = (imp.ty(given), imp.ty(got));
        if given != got {
            return Err(BuildError::Unsupported(format!(
                "loop-carried value {i} enters {} as {given} but leaves it as {got}: a carried value whose type changes from trip to trip",
                plan.what
            )));
        }
    }
    let scan_outs = outs[skip + n..].to_vec();
    let mut accumulators = Vec::with_capacity(scan_outs.len());
    let mut next_accs = Vec::with_capacity(scan_outs.len());
    if !scan_outs.is_empty() {
        let trips = plan.trips.clone()?;
        let passes_condition = cond_out == cond
            || matches!(imp.constant_of(cond_out).map(|t| &t.data), Some(Buffer::Int(c)) if c.first() == Some(&1));
        if !passes_condition {
            return Err(BuildError::Unsupported(format!(
                "{} computes its condition and has scan outputs, whose length is then decided by the data",
                plan.what
            )));
        }
        let types: Vec<(String, TensorType)> = scan_outs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let row = imp.ty(v);
                let mut dims = vec![trips.clone()];
                dims.extend(row.dims);
                (format!("scan{i}"), TensorType::new(row.dtype, dims))
            })
            .collect();
        let args: Vec<(&str, TensorType)> = types.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let accs = imp.block_args(start, &args);
        let zero = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0]));
        let positions = imp.broadcast(zero, std::slice::from_ref(&trips))?;
        let positions = imp.add(Op::Iota { axis: 0 }, &[positions])?;
        for (i, (&row, &acc)) in scan_outs.iter().zip(&accs).enumerate() {
            let reverse = match &plan.form {
                Form::Scan { reverse_out, .. } => reverse_out.get(i).copied().unwrap_or(false),
                Form::Loop => false,
            };
            let at = if reverse { from_end(imp)? } else { iteration };
            let hit = imp.compare(CompareOp::Eq, positions, at)?;
            let row_ty = imp.ty(row);
            let mut column = vec![trips.clone()];
            column.extend(std::iter::repeat_n(Dim::Static(1), row_ty.rank()));
            let hit = imp.reshape(hit, column)?;
            let mut one_row = vec![Dim::Static(1)];
            one_row.extend(row_ty.dims.iter().cloned());
            let row = imp.reshape(row, one_row)?;
            next_accs.push(imp.select(hit, row, acc)?);
            accumulators.push(types[i].1.clone());
        }
    }
    let next = imp.binary_scalar(BinaryOp::Add, iteration, 1.0)?;
    let mut yields = vec![next, limit, cond_out];
    yields.extend_from_slice(states_out);
    yields.extend(next_accs);
    Ok(BodyYields { yields, accumulators })
}
