//! Structured control flow: `tsr.if`, an op whose two branches are regions, and `tsr.loop`, a
//! while loop over loop-carried values with a condition region and a body region.
//!
//! A region is a [`Graph`] of its own: its inputs are the block arguments, its outputs what the
//! region yields. Regions are isolated from above (like `func.func`): every outer value a
//! branch reads is an operand of the `tsr.if` after the condition, and arrives as the block
//! argument at the same position. So a region is verified, evaluated, printed and rewritten as
//! an ordinary graph, and passes that treat `tsr.if` as one opaque op stay correct.
//!
//! Operands: `(cond, captured...)`; `cond` is an `i1` tensor of one element (rank 0, or every
//! dimension 1), each captured value has the type of both branches' block argument at its
//! position. Results: the branches' yields, which must agree in count and type.
//!
//! `tsr.loop` has `stablehlo.while`'s form: operands are the initial carried values; the `cond`
//! region takes the carried values and yields one `i1` element (go on?); the `body` region takes
//! them and yields the next ones, of the same types; the results are the carried values when
//! `cond` first says stop. Two regions rather than one body yielding `(cond, carried...)`
//! because StableHLO's while is this form exactly (imported and exported region for region),
//! and ONNX `Loop`/`Scan` fit it by carrying their iteration counter, trip count and
//! condition: `cond` compares them, `body` runs the ONNX body and steps the counter; loop
//! invariants are carried unchanged (regions read only their block arguments). The reference
//! semantics stop with an error after `max_trips` trips (an attribute, by default
//! [`DEFAULT_MAX_TRIPS`]) rather than hang on a loop that never ends.

use super::ShapeResult;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use std::collections::HashMap;

/// The name every region graph carries (the text form prints none, so parsing gives this one).
pub const REGION_NAME: &str = "region";

/// `tsr.trap`: stands for a computation that cannot run, and fails with `message` when it is
/// reached. The importer makes it the body of an `If` branch that does not type-check for the
/// shapes imported (ONNX runs only the branch taken, so a model may hold a branch that is
/// ill-typed for the inputs it is used with); the branch is then an error only if taken.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trap {
    pub message: String,
    /// The result types (the text form prints them; the other branch's yields).
    pub types: Vec<TensorType>,
}

/// The trips a `tsr.loop` may run when its importer sets no other limit: past it the reference
/// semantics fail (`loop did not end within N trips`) instead of hanging.
pub const DEFAULT_MAX_TRIPS: u64 = 1_000_000;

/// The regions of a `tsr.loop` and its trip limit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoopRegions {
    /// `(carried...) -> i1` of one element: whether to run the body again.
    pub cond: Graph,
    /// `(carried...) -> (carried...)`: the next carried values, of the same types.
    pub body: Graph,
    /// The most trips the reference semantics run before failing (the text attribute
    /// `max_trips`).
    pub max_trips: u64,
}

impl LoopRegions {
    /// The regions with their text names (`cond`, `body`), in printing order.
    pub fn regions(&self) -> [(&'static str, &Graph); 2] {
        [("cond", &self.cond), ("body", &self.body)]
    }
}

/// The shape rule of `tsr.loop`: both regions take the carried values; `cond` yields one `i1`
/// element and `body` yields exactly the types it takes (so the carried types cannot drift
/// from trip to trip). The results have the operands' types.
pub fn infer_loop(inputs: &[&TensorType], regions: &LoopRegions) -> ShapeResult {
    let verdict = region_yield_types("cond", &regions.cond, inputs)?;
    match verdict.as_slice() {
        [cond] => check_condition(cond).map_err(|e| format!("the cond region: {e}"))?,
        _ => return Err(format!("the cond region yields {} values, not one i1 condition", verdict.len())),
    }
    region_yield_types("body", &regions.body, inputs)?;
    let params: Vec<&TensorType> = regions.body.inputs().iter().map(|&p| &regions.body.value(p).ty).collect();
    let yields: Vec<&TensorType> = regions.body.outputs().iter().map(|&v| &regions.body.value(v).ty).collect();
    if params.len() != yields.len() {
        return Err(format!("the body region takes {} carried values but yields {}", params.len(), yields.len()));
    }
    for (i, (param, yielded)) in params.iter().zip(&yields).enumerate() {
        if param != yielded {
            return Err(format!("carried value {i} enters the body as {param} but the body yields {yielded}"));
        }
    }
    Ok(inputs.iter().map(|t| (*t).clone()).collect())
}

/// The reference semantics of `tsr.loop`: while `cond` yields true, replaces the carried values
/// by what `body` yields; an error after `max_trips` trips.
pub fn eval_loop(inputs: &[&Tensor], regions: &LoopRegions) -> Result<Vec<Tensor>, String> {
    let mut carried: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    let mut trips = 0u64;
    loop {
        let args: Vec<&Tensor> = carried.iter().collect();
        let verdict = eval_region(&regions.cond, &args).map_err(|e| format!("in the cond region: {e}"))?;
        let go_on = match verdict.first().map(|t| &t.data) {
            Some(crate::tensor::Buffer::Int(v)) if v.len() == 1 => v[0] != 0,
            _ => return Err("the cond region must yield one i1 element".into()),
        };
        if !go_on {
            return Ok(carried);
        }
        if trips >= regions.max_trips {
            return Err(format!("the loop did not end within {} trips (its max_trips limit)", regions.max_trips));
        }
        trips += 1;
        carried = eval_region(&regions.body, &args).map_err(|e| format!("in the body region, trip {trips}: {e}"))?;
    }
}

/// FLOPs of `tsr.loop`: one trip (`cond` and `body` once), since the trip count is known only at
/// run time: a lower bound for a loop that runs at least once.
pub fn flops_loop(regions: &LoopRegions) -> super::FlopResult {
    Ok(region_flops(&regions.cond)?.saturating_add(region_flops(&regions.body)?))
}

/// The two branches of a `tsr.if`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IfRegions {
    pub then_branch: Graph,
    pub else_branch: Graph,
}

impl IfRegions {
    /// The branches with their text names (`then`, `else`), in printing order.
    pub fn branches(&self) -> [(&'static str, &Graph); 2] {
        [("then", &self.then_branch), ("else", &self.else_branch)]
    }
}

/// The shape rule of `tsr.if`: checks the condition and each captured operand against both
/// branches' block arguments, and gives the branches' yield types. Operand types may be
/// concrete where a region's are symbolic (the interpreter infers with concrete types): the
/// region's symbols are then bound from the operands and substituted in the yields.
pub fn infer_if(inputs: &[&TensorType], regions: &IfRegions) -> ShapeResult {
    let (cond, captured) = inputs.split_first().ok_or("expects a condition operand")?;
    check_condition(cond)?;
    let mut yields: Option<(&str, Vec<TensorType>)> = None;
    for (name, branch) in regions.branches() {
        let types = region_yield_types(name, branch, captured)?;
        match &yields {
            None => yields = Some((name, types)),
            Some((first, expected)) if *expected != types => {
                return Err(format!(
                    "the {name} branch yields ({}) but the {first} branch yields ({})",
                    list(&types),
                    list(expected)
                ))
            }
            Some(_) => {}
        }
    }
    Ok(yields.map(|(_, types)| types).unwrap_or_default())
}

/// The condition must be an `i1` tensor of exactly one element.
fn check_condition(cond: &TensorType) -> Result<(), String> {
    if cond.dtype != crate::dtype::DType::Bool {
        return Err(format!("the condition must be an i1 tensor, got {cond}"));
    }
    if !cond.dims.iter().all(|d| *d == Dim::Static(1)) {
        return Err(format!("the condition must have exactly one element, got {cond}"));
    }
    Ok(())
}

/// `branch`'s yield types for the captured operand types `captured`: its block arguments must
/// match them (equal, or symbolic where the operand is concrete, then bound from it).
fn region_yield_types(name: &str, branch: &Graph, captured: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let params = branch.inputs();
    if params.len() != captured.len() {
        return Err(format!(
            "the {name} branch takes {} block arguments but {} values are captured",
            params.len(),
            captured.len()
        ));
    }
    let mut given: Vec<(String, &TensorType, Vec<usize>)> = Vec::new();
    for (i, (&p, &operand)) in params.iter().zip(captured).enumerate() {
        let param = &branch.value(p).ty;
        if param == operand {
            continue;
        }
        let concrete = operand.static_shape().filter(|s| s.len() == param.rank() && param.dtype == operand.dtype);
        match concrete {
            Some(shape) => given.push((
                format!("block argument {i} of the {name} branch"),
                param,
                shape.into_iter().map(|n| n as usize).collect(),
            )),
            None => {
                return Err(format!(
                    "block argument {i} of the {name} branch is {param}, but the captured operand is {operand}"
                ))
            }
        }
    }
    let yields: Vec<TensorType> = branch.outputs().iter().map(|&v| branch.value(v).ty.clone()).collect();
    if given.is_empty() {
        return Ok(yields);
    }
    let observed: Vec<(&str, &TensorType, &[usize])> =
        given.iter().map(|(what, ty, shape)| (what.as_str(), *ty, shape.as_slice())).collect();
    let mut bindings = HashMap::new();
    crate::types::bind_from_shapes(&observed, &mut bindings)?;
    yields.iter().map(|t| t.substitute(&bindings).map_err(|e| e.to_string())).collect()
}

/// The reference semantics of `tsr.if`: runs the branch the condition picks on the captured
/// operands and returns what it yields.
pub fn eval_if(inputs: &[&Tensor], regions: &IfRegions) -> Result<Vec<Tensor>, String> {
    let (cond, captured) = inputs.split_first().ok_or("missing the condition operand")?;
    let taken = match &cond.data {
        crate::tensor::Buffer::Int(v) if v.len() == 1 => v[0] != 0,
        _ => return Err(format!("the condition must hold one i1 element, got {}", cond.tensor_type())),
    };
    let (name, branch) = if taken { ("then", &regions.then_branch) } else { ("else", &regions.else_branch) };
    eval_region(branch, captured).map_err(|e| format!("in the {name} branch: {e}"))
}

/// Evaluates a region on concrete block arguments with each op's reference semantics: binds
/// the region's symbols from the arguments' shapes, then runs the nodes in order.
pub fn eval_region(region: &Graph, args: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let params = region.inputs();
    if params.len() != args.len() {
        return Err(format!("the region takes {} arguments, {} given", params.len(), args.len()));
    }
    let what: Vec<String> = params.iter().map(|&p| format!("block argument %{}", region.value(p).name)).collect();
    let observed: Vec<(&str, &TensorType, &[usize])> = params
        .iter()
        .zip(args)
        .zip(&what)
        .map(|((&p, t), what)| (what.as_str(), &region.value(p).ty, t.shape.as_slice()))
        .collect();
    let mut bindings = HashMap::new();
    crate::types::bind_from_shapes(&observed, &mut bindings)?;
    let bound = region.bind_dims(&bindings).map_err(|e| e.to_string())?;
    let mut values: Vec<Option<Tensor>> = vec![None; bound.num_values()];
    for (&p, t) in bound.inputs().iter().zip(args) {
        let declared = &bound.value(p).ty;
        if *declared != t.tensor_type() {
            return Err(format!(
                "block argument %{} is {declared} but the value given is {}",
                bound.value(p).name,
                t.tensor_type()
            ));
        }
        values[p.index()] = Some((*t).clone());
    }
    for (id, node) in bound.nodes() {
        let subject = crate::verify::node_subject(&bound, id);
        let operands = node
            .inputs
            .iter()
            .map(|&v| values[v.index()].as_ref().ok_or_else(|| format!("{subject}: an operand has no value")))
            .collect::<Result<Vec<&Tensor>, String>>()?;
        let results: Vec<TensorType> = node.outputs.iter().map(|&v| bound.value(v).ty.clone()).collect();
        let outs = node.op.eval(&operands, &results).map_err(|e| format!("{subject}: {e}"))?;
        for (&v, t) in node.outputs.iter().zip(outs) {
            values[v.index()] = Some(t);
        }
    }
    bound
        .outputs()
        .iter()
        .map(|&v| values[v.index()].clone().ok_or_else(|| format!("yielded %{} has no value", bound.value(v).name)))
        .collect()
}

/// FLOPs of `tsr.if`: the costlier branch's (the condition is not known ahead of time), each
/// node counted with [`super::Op::flops`]; a region with symbolic shapes counts its nodes with
/// every static dimension and 1 for each symbolic one (a lower bound).
pub fn flops_if(regions: &IfRegions) -> super::FlopResult {
    let mut most = 0u128;
    for (_, branch) in regions.branches() {
        most = most.max(region_flops(branch)?);
    }
    Ok(most)
}

fn region_flops(region: &Graph) -> super::FlopResult {
    let shape = |t: &TensorType| -> Vec<u64> { t.dims.iter().map(|d| d.as_static().unwrap_or(1)).collect() };
    let mut total = 0u128;
    for (_, node) in region.nodes() {
        let ins: Vec<Vec<u64>> = node.inputs.iter().map(|&v| shape(&region.value(v).ty)).collect();
        let outs: Vec<Vec<u64>> = node.outputs.iter().map(|&v| shape(&region.value(v).ty)).collect();
        let ins: Vec<&[u64]> = ins.iter().map(Vec::as_slice).collect();
        let outs: Vec<&[u64]> = outs.iter().map(Vec::as_slice).collect();
        total = total.saturating_add(node.op.flops(&ins, &outs)?);
    }
    Ok(total)
}

fn list(types: &[TensorType]) -> String {
    types.iter().map(TensorType::to_string).collect::<Vec<_>>().join(", ")
}
