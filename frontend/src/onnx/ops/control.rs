//! Control flow: ONNX `If` as `tsr.if` (its branches become regions whose block arguments are
//! the enclosing values they read); an `If` whose condition is known at import time is
//! replaced by the branch it takes.

use super::{invalid, BuildError, BuildResult, Registry};
use crate::onnx::attrs::Attrs;
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::proto::{GraphProto, NodeProto, ValueInfoProto};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BlockArg, Graph, ValueId};
use tessera_ir::ops::control::{IfRegions, Trap};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Buffer;
use tessera_ir::types::TensorType;

pub(super) fn register(r: &mut Registry) {
    r.insert("If", build_if);
}

/// `If(cond)` with `then_branch` and `else_branch` (every opset from 11 on: 13 and later only
/// widen the element types, 16 adds optional types, which tessera refuses elsewhere).
fn build_if(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let then_body = cx.attrs.req_graph("then_branch")?;
    let else_body = cx.attrs.req_graph("else_branch")?;
    let cond = imp.value(cx, 0)?;
    let cond_ty = imp.ty(cond);
    if cond_ty.dtype != DType::Bool {
        return invalid(format!("the condition must be a bool tensor, got {cond_ty}"));
    }
    if cond_ty.num_elements() != Some(1) {
        return invalid(format!("the condition must have exactly one element, got {cond_ty}"));
    }
    // A condition known now (shape arithmetic, a constant) picks its branch at import.
    if let Some(Buffer::Int(v)) = imp.constant_of(cond).map(|t| &t.data) {
        let (what, body) = if v.first().is_some_and(|&c| c != 0) {
            ("the then branch", then_body)
        } else {
            ("the else branch", else_body)
        };
        return check_outputs(cx, imp.import_subgraph(body, cx.opset, what)?);
    }
    // Inside what follows a size-decided If, imported once per branch, its condition is known.
    if let Some(&(_, holds)) = imp.assumed_conditions.iter().find(|(c, _)| *c == cond) {
        let (what, body) = if holds { ("the then branch", then_body) } else { ("the else branch", else_body) };
        return check_outputs(cx, imp.import_subgraph(body, cx.opset, what)?);
    }
    let size_condition = imp.size_condition(cond);
    let then_import = imp.import_region(then_body, cx.opset, "the then branch");
    let else_import = imp.import_region(else_body, cx.opset, "the else branch");
    if let Some(condition) = &size_condition {
        return size_conditional(imp, cx, (cond, condition), then_import, else_import);
    }
    // ONNX runs only the branch taken, and exporters leave branches that are ill-typed for some
    // input shapes (silero-vad's 8 kHz path on a 16 kHz frame).
    let (then_part, else_part) = trapping_the_ill_typed(then_import, else_import)?;
    conditional(imp, cx, cond, then_part, else_part)
}

/// An `If` whose condition the sizes decide (`Equal` of a dimension expression and a constant,
/// as torch's TorchScript exporter writes `squeeze(dim)`): a run-time conditional like any
/// other when both branches import, and yield the same types, for every size. Otherwise (a
/// branch that is ill-typed for some sizes is no trap here, since the sizes that pick it may be
/// the ones that make it well-typed; or the branches yield different types) what follows the
/// `If` is imported once per branch, with the condition known ([`split_at_size_if`]).
fn size_conditional(
    imp: &mut Importer,
    cx: &NodeCx,
    (cond, condition): (ValueId, &str),
    then_import: BuildResult<(Graph, Vec<ValueId>)>,
    else_import: BuildResult<(Graph, Vec<ValueId>)>,
) -> BuildResult<Vec<Slot>> {
    let refuse = |why: String| -> BuildResult<Vec<Slot>> {
        Err(BuildError::Unsupported(format!(
            "the condition depends on the sizes ({condition}) and {why}, so the shapes after the If \
             would depend on it (import with the sizes bound: `--dim NAME=N`)"
        )))
    };
    let split = |refusal: BuildResult<Vec<Slot>>| match refusal {
        Err(BuildError::Unsupported(why)) => Err(BuildError::TypesDependOnSizes(why)),
        other => other,
    };
    let (then_branch, else_branch) = match (then_import, else_import) {
        (Ok(then_branch), Ok(else_branch)) => (then_branch, else_branch),
        (Err(BuildError::Invalid(why)), _) => {
            return split(refuse(format!("the then branch does not hold for every size: {why}")))
        }
        (_, Err(BuildError::Invalid(why))) => {
            return split(refuse(format!("the else branch does not hold for every size: {why}")))
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let types =
        |region: &Graph| -> Vec<TensorType> { region.outputs().iter().map(|&v| region.value(v).ty.clone()).collect() };
    let (then_types, else_types) = (types(&then_branch.0), types(&else_branch.0));
    if let Some((i, (t, e))) = then_types.iter().zip(&else_types).enumerate().find(|(_, (t, e))| t != e) {
        return split(refuse(format!("its branches yield {t} and {e} as output {i}")));
    }
    conditional(imp, cx, cond, then_branch, else_branch)
}

/// `tsr.if` on `cond` with the two imported regions, each taking the union of what either
/// captures as its block arguments.
fn conditional(
    imp: &mut Importer,
    cx: &NodeCx,
    cond: ValueId,
    then_part: (Graph, Vec<ValueId>),
    else_part: (Graph, Vec<ValueId>),
) -> BuildResult<Vec<Slot>> {
    let outs = if_values(imp, cond, then_part, else_part)?;
    check_outputs(cx, outs.into_iter().map(Slot::Value).collect())
}

/// The results of a `tsr.if` on `cond` with the two imported regions (see [`conditional`]).
fn if_values(
    imp: &mut Importer,
    cond: ValueId,
    (then_region, then_captures): (Graph, Vec<ValueId>),
    (else_region, else_captures): (Graph, Vec<ValueId>),
) -> BuildResult<Vec<ValueId>> {
    // Both regions take the union of what either captures, in one order.
    let mut captured = then_captures.clone();
    for &v in &else_captures {
        if !captured.contains(&v) {
            captured.push(v);
        }
    }
    let args_for = |own: &[ValueId]| -> Vec<BlockArg> {
        captured
            .iter()
            .map(|v| match own.iter().position(|o| o == v) {
                Some(i) => BlockArg::Input(i),
                None => BlockArg::Unused { name: imp.graph.value(*v).name.clone(), ty: imp.ty(*v) },
            })
            .collect()
    };
    let then_branch = then_region.with_block_args(&args_for(&then_captures))?;
    let else_branch = else_region.with_block_args(&args_for(&else_captures))?;
    let mut operands = vec![cond];
    operands.extend(&captured);
    imp.add_n(Op::If(Box::new(IfRegions { then_branch, else_branch })), &operands)
}

/// The most size-decided `If`s whose followers are imported once per branch, one inside the
/// other: each doubles what is imported after it.
const MAX_NESTED_SPLITS: usize = 4;

/// The most size assumptions one inside the other ([`split_at_size_assumption`]): each imports
/// what follows once, so this only bounds the regions' depth. Swin's shifted windows need two
/// per stage that shifts (its padded height and width), three stages in Swin-T at 224 x 224.
const MAX_NESTED_ASSUMPTIONS: usize = 32;

/// What follows an `If` on a size condition whose branches yield different types (or hold only
/// for the sizes that pick them), imported once per branch: for each branch, a graph of its
/// nodes, then `Identity` nodes giving the `If`'s outputs their values, then the `rest` of the
/// enclosing graph's nodes, yielding the enclosing graph's `outputs`, imported as a region
/// while the condition is assumed to have the value that picks the branch (so a `Squeeze` of a
/// dimension it says is 1 types as one, and a later `If` on it takes its branch). The two
/// become one `tsr.if` on the condition, whose results define `outputs`: the types must agree
/// there. Where what follows one branch does not type-check for any size that picks it, that
/// side is a trap (an error only if those sizes come). `refusal` is the `If`'s own refusal,
/// quoted when this fails too.
pub(crate) fn split_at_size_if(
    imp: &mut Importer,
    node: &NodeProto,
    rest: &[NodeProto],
    outputs: &[ValueInfoProto],
    opset: i64,
    refusal: &str,
) -> Result<(), String> {
    let refuse = |why: String| format!("{refusal}; importing what follows once per branch: {why}");
    if imp.assumed_conditions.len() - imp.nested_assumptions >= MAX_NESTED_SPLITS {
        return Err(refuse(format!("more than {MAX_NESTED_SPLITS} such Ifs nest")));
    }
    let cx = NodeCx { proto: node, attrs: Attrs::of(node), opset };
    let cond = imp.value(&cx, 0).map_err(|e| refuse(build_message(e)))?;
    let follower = |body: &GraphProto| -> GraphProto {
        let mut g = GraphProto { initializer: body.initializer.clone(), node: body.node.clone(), ..Default::default() };
        for (k, (from, to)) in body.output.iter().zip(&node.output).enumerate() {
            if !to.is_empty() {
                g.node.push(NodeProto {
                    name: Some(format!("{}/result{k}", node.name())),
                    op_type: Some("Identity".into()),
                    input: vec![from.name().to_string()],
                    output: vec![to.clone()],
                    ..Default::default()
                });
            }
        }
        g.node.extend(rest.iter().cloned());
        g.output = outputs.to_vec();
        g
    };
    let mut parts = Vec::with_capacity(2);
    for (attr, holds) in [("then_branch", true), ("else_branch", false)] {
        let body = cx.attrs.req_graph(attr).map_err(refuse)?;
        let what = format!("the {} and what follows it", attr.replace('_', " "));
        imp.assumed_conditions.push((cond, holds));
        let imported = imp.import_region(&follower(body), opset, &what);
        imp.assumed_conditions.pop();
        parts.push(imported);
    }
    let else_part = parts.pop().ok_or("two parts")?;
    let then_part = parts.pop().ok_or("two parts")?;
    let (then_part, else_part) = trapping_the_ill_typed(then_part, else_part).map_err(|e| refuse(build_message(e)))?;
    let types =
        |region: &Graph| -> Vec<TensorType> { region.outputs().iter().map(|&v| region.value(v).ty.clone()).collect() };
    let (then_types, else_types) = (types(&then_part.0), types(&else_part.0));
    if let Some((i, (t, e))) = then_types.iter().zip(&else_types).enumerate().find(|(_, (t, e))| t != e) {
        let name = outputs.get(i).map_or("", |o| o.name());
        return Err(refuse(format!("output '{name}' is {t} after the then branch and {e} after the else branch")));
    }
    let results = if_values(imp, cond, then_part, else_part).map_err(|e| refuse(build_message(e)))?;
    for (out, v) in outputs.iter().zip(results) {
        imp.define_value(out.name(), v);
    }
    Ok(())
}

/// A size an op's shape rule needs equal to a constant, or at least a constant
/// ([`BuildError::AssumesSize`]), and the node that needs it (named in the run-time error for
/// sizes that violate it).
pub(crate) struct SizeAssumption {
    pub size: tessera_ir::symbolic::DimExpr,
    pub relation: super::SizeRelation,
    pub value: i64,
    pub node: crate::onnx::error::NodeRef,
}

/// `nodes` (the node that needs the assumption, then the rest of the enclosing graph or branch
/// body), imported once while `size = value` (or `size >= value`) is assumed (so a `Reshape` or
/// `Concat` that needs `size = 1` takes the one element of that axis, static extent 1 for every
/// size, and a `Slice` of constant bounds that needs the axis at least as long as its bounds
/// gathers those indices), as the then branch of a `tsr.if` on the size comparison computed at
/// run time; the else branch is a trap naming the node and the size, the located error a run at
/// violating sizes gets. The results define `outputs`. The assumption is recorded once: later
/// nodes that need the same size related to the same constant (or a smaller lower bound) see it
/// assumed, and only a different size splits again.
pub(crate) fn split_at_size_assumption(
    imp: &mut Importer,
    assumption: &SizeAssumption,
    nodes: &[NodeProto],
    outputs: &[ValueInfoProto],
    opset: i64,
) -> Result<(), String> {
    let SizeAssumption { size, relation, value, node } = assumption;
    if imp.nested_assumptions >= MAX_NESTED_ASSUMPTIONS {
        return Err(format!("more than {MAX_NESTED_ASSUMPTIONS} assumed sizes nest"));
    }
    let constant = tessera_ir::symbolic::DimExpr::constant(*value);
    let op = relation.compare_op();
    let text = format!("{op:?} of {size} and {value}");
    let holds = imp
        .size_comparison(op, (std::slice::from_ref(size), true), (std::slice::from_ref(&constant), true), text)
        .map_err(build_message)?;
    if *relation == super::SizeRelation::AtLeast {
        imp.record_size_lower_bound(holds, size.clone(), *value);
    }
    let body = GraphProto { node: nodes.to_vec(), output: outputs.to_vec(), ..Default::default() };
    imp.assumed_conditions.push((holds, true));
    imp.nested_assumptions += 1;
    let what = format!("node '{}' and what follows it, with {size} {} {value} assumed", node.name, relation.symbol());
    let imported = imp.import_region(&body, opset, &what);
    imp.nested_assumptions -= 1;
    imp.assumed_conditions.pop();
    let then_part = imported.map_err(build_message)?;
    let needed = match relation {
        super::SizeRelation::Equal => format!("{value}"),
        super::SizeRelation::AtLeast => format!("at least {value}"),
    };
    let message = format!(
        "{node} needs the size {size} to be {needed}, which these input sizes do not give \
         (the model imports with it assumed and checks it at run time)"
    );
    let (mut trap, _) = trap_region_saying(&then_part.0, message);
    // Each region binds its symbols from its block arguments, and what the then branch reads
    // may carry the width only as `floordiv(w + 3, 8)`: both take the inputs that name the
    // symbols (unused where not read), so every symbol of their types is bound.
    let symbolic_inputs: Vec<ValueId> =
        imp.graph.inputs().iter().copied().filter(|&v| imp.ty(v).symbols().next().is_some()).collect();
    for &v in &symbolic_inputs {
        let name = imp.graph.value(v).name.clone();
        trap.add_input(&name, imp.ty(v), tessera_ir::graph::InputRole::Activation);
    }
    let else_part = (trap, symbolic_inputs);
    let results = if_values(imp, holds, then_part, else_part).map_err(build_message)?;
    for (out, v) in outputs.iter().zip(results) {
        imp.define_value(out.name(), v);
    }
    Ok(())
}

/// A conditional's part: an imported region and the enclosing values it captures.
type Part = (Graph, Vec<ValueId>);

/// The two imported parts of a conditional, where one that is ill-typed (an `Invalid` error)
/// becomes a trap yielding the other's types: an error only if it is taken. Unsupported ops,
/// or both parts failing, stay errors.
fn trapping_the_ill_typed(then_part: BuildResult<Part>, else_part: BuildResult<Part>) -> BuildResult<(Part, Part)> {
    match (then_part, else_part) {
        (Ok(then_part), Ok(else_part)) => Ok((then_part, else_part)),
        (Ok(then_part), Err(BuildError::Invalid(why))) => {
            let trap = trap_region(&then_part.0, why);
            Ok((then_part, trap))
        }
        (Err(BuildError::Invalid(why)), Ok(else_part)) => {
            let trap = trap_region(&else_part.0, why);
            Ok((trap, else_part))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The message of a build error.
fn build_message(e: BuildError) -> String {
    match e {
        BuildError::Unsupported(m)
        | BuildError::Invalid(m)
        | BuildError::TypesDependOnSizes(m)
        | BuildError::AssumesSize { refusal: m, .. } => m,
        BuildError::NotConstant { value, role } => format!("input '{role}' ('{value}') must be known at import time"),
    }
}

/// A region that yields what `other` yields by failing with `why` (see [`Trap`]).
fn trap_region(other: &Graph, why: String) -> (Graph, Vec<ValueId>) {
    trap_region_saying(other, format!("the If branch taken cannot run for these shapes: {why}"))
}

/// A region that yields what `other` yields by failing with `message`.
fn trap_region_saying(other: &Graph, message: String) -> (Graph, Vec<ValueId>) {
    let types: Vec<TensorType> = other.outputs().iter().map(|&v| other.value(v).ty.clone()).collect();
    let mut region = Graph::new(tessera_ir::ops::control::REGION_NAME);
    let results = types.iter().enumerate().map(|(i, ty)| (format!("unreachable{i}"), ty.clone())).collect();
    let node = region.add_node_unchecked(Op::Trap(Box::new(Trap { message, types })), vec![], results);
    let yields = region.node(node).outputs.clone();
    region.set_outputs(yields);
    (region, Vec::new())
}

/// The branches yield what the node's outputs name, one each.
fn check_outputs(cx: &NodeCx, slots: Vec<Slot>) -> BuildResult<Vec<Slot>> {
    if slots.len() != cx.num_outputs() {
        return invalid(format!("the branch yields {} values for {} outputs", slots.len(), cx.num_outputs()));
    }
    Ok(slots)
}
