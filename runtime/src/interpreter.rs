//! The reference interpreter: evaluates a graph node by node with each op's reference
//! semantics ([`tessera_ir::ops::Op::eval`]).
//!
//! It checks the feeds against the graph's declared inputs, binds every symbolic dimension to
//! one size, gives each node concrete result types through the op's shape rule, and drops
//! each value after its last use, so peak memory is the live set, not the whole graph.

use std::borrow::Cow;
use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::{Dim, TensorType};
use tessera_ir::verify::{node_subject, verify, VerifyError};

/// Why a graph could not be run on the given inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("invalid graph: {0}")]
    InvalidGraph(#[from] VerifyError),
    #[error("unknown input '{name}' (the graph's inputs are: {known})")]
    UnknownInput { name: String, known: String },
    #[error("input '{name}' is supplied more than once")]
    DuplicateInput { name: String },
    #[error("missing input(s): {}", names.join(", "))]
    MissingInputs { names: Vec<String> },
    #[error("input '{name}' is declared {declared} but the tensor given is {given}")]
    InputDtype { name: String, declared: DType, given: DType },
    #[error("input '{name}' is declared {declared} but the tensor given has shape {given:?}")]
    InputShape { name: String, declared: TensorType, given: Vec<usize> },
    #[error(
        "symbolic dimension '{dim}' is {first_size} in input '{first_input}' but {size} in input '{input}' \
         (dimension {axis})"
    )]
    DimConflict { dim: String, first_input: String, first_size: usize, input: String, size: usize, axis: usize },
    /// A dimension expression of an input disagrees with the sizes its symbols were given.
    #[error("{message}")]
    DimBinding { message: String },
    #[error("input '{name}' is malformed: {message}")]
    MalformedInput { name: String, message: String },
    /// A node failed; `subject` is `%name = tsr.op` as the verifier spells it.
    #[error("{subject}: {message}")]
    Node { node: NodeId, subject: String, message: String },
    /// A broken invariant of the interpreter itself, reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Evaluates the ops that need other ranks (`tsr.all_reduce`, `tsr.send`, ...). The
/// single-device interpreter has none, so those ops fail with the op's own "needs a
/// communicator" error; the multi-rank executor ([`crate::spmd`]) passes one per rank.
pub trait CollectiveHandler {
    /// Runs `op` on this rank's `operands`, giving tensors of the local `results` types.
    fn execute(&mut self, op: &Collective, operands: &[&Tensor], results: &[TensorType])
        -> Result<Vec<Tensor>, String>;
}

/// Runs `g` on `inputs` (each graph input by name, exactly once) and returns the graph's
/// outputs in order, each named by its value's name.
pub fn run(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RunError> {
    run_with(g, inputs, None)
}

/// [`run`], with collectives evaluated by `collectives` (one rank of a multi-rank run).
pub fn run_with(
    g: &Graph,
    inputs: &[(String, Tensor)],
    mut collectives: Option<&mut dyn CollectiveHandler>,
) -> Result<Vec<(String, Tensor)>, RunError> {
    verify(g)?;
    // Inputs are borrowed from the caller, results owned; both are dropped after their last use.
    let mut values: Vec<Option<Cow<'_, Tensor>>> = vec![None; g.num_values()];
    let mut bindings = bind_inputs(g, inputs, &mut values)?;
    let mut uses = g.use_counts();
    for &v in g.inputs() {
        if uses[v.index()] == 0 {
            values[v.index()] = None;
        }
    }
    for (id, node) in g.nodes() {
        let fail = |message: String| RunError::Node { node: id, subject: node_subject(g, id), message };
        let outputs = {
            let operands = node
                .inputs
                .iter()
                .map(|&v| {
                    values[v.index()]
                        .as_deref()
                        .ok_or_else(|| fail(format!("operand %{} has no value", g.value(v).name)))
                })
                .collect::<Result<Vec<&Tensor>, RunError>>()?;
            let op = bind_op(&node.op, &bindings).map_err(fail)?;
            let operand_types: Vec<TensorType> = operands.iter().map(|t| t.tensor_type()).collect();
            let refs: Vec<&TensorType> = operand_types.iter().collect();
            let mut results = op.infer(&refs).map_err(fail)?;
            // A `recv` brings its own shape: it binds symbolic dimensions no input binds (a
            // pipeline stage's `batch`), and its concrete type is what arrived.
            let received = match (&*op, collectives.as_deref_mut()) {
                (Op::Collective(c @ Collective::Recv { .. }), Some(handler)) => {
                    let outs = handler.execute(c, &operands, &results).map_err(fail)?;
                    for (&v, t) in node.outputs.iter().zip(&outs) {
                        bind_received(&g.value(v).ty, t, &mut bindings).map_err(fail)?;
                    }
                    results = outs.iter().map(Tensor::tensor_type).collect();
                    Some(outs)
                }
                _ => None,
            };
            check_results(g, &node.outputs, &results, &bindings).map_err(fail)?;
            // Result sizes follow from the inputs (`--dim`, an `Expand` target): refuse one
            // over the memory budget before evaluating allocates it.
            for (&v, ty) in node.outputs.iter().zip(&results) {
                let dims: Vec<u128> = ty.dims.iter().filter_map(|d| d.as_static()).map(u128::from).collect();
                tessera_ir::budget::check_shape(&format!("result %{}", g.value(v).name), &dims)
                    .map_err(|e| fail(e.to_string()))?;
            }
            let outputs = match (received, &*op, collectives.as_deref_mut()) {
                (Some(outs), _, _) => Ok(outs),
                (None, Op::Collective(c), Some(handler)) => handler.execute(c, &operands, &results),
                (None, _, _) => op.eval(&operands, &results),
            }
            .map_err(fail)?;
            // The oracle checks itself: an eval that disagrees with its shape rule is a bug here.
            let produced: Vec<TensorType> = outputs.iter().map(Tensor::tensor_type).collect();
            if produced != results {
                let list = |ts: &[TensorType]| ts.iter().map(TensorType::to_string).collect::<Vec<_>>().join(", ");
                return Err(RunError::Internal(format!(
                    "{}: the reference semantics produced ({}), the shape rule ({})",
                    node_subject(g, id),
                    list(&produced),
                    list(&results)
                )));
            }
            outputs
        };
        for (&v, t) in node.outputs.iter().zip(outputs) {
            if uses[v.index()] > 0 {
                values[v.index()] = Some(Cow::Owned(t));
            }
        }
        for &v in &node.inputs {
            uses[v.index()] -= 1;
            if uses[v.index()] == 0 {
                values[v.index()] = None;
            }
        }
    }
    let mut outputs = Vec::with_capacity(g.outputs().len());
    for &v in g.outputs() {
        uses[v.index()] -= 1;
        // The last use of a value takes it; an output listed twice is cloned for the others.
        let slot = if uses[v.index()] == 0 { values[v.index()].take() } else { values[v.index()].clone() };
        let name = &g.value(v).name;
        let t = slot.ok_or_else(|| RunError::Internal(format!("graph output %{name} has no value")))?;
        outputs.push((name.clone(), t.into_owned()));
    }
    Ok(outputs)
}

/// Checks `inputs` against `g`'s inputs exactly as [`run`] does before computing anything (names,
/// dtypes, declared shapes, consistent sizes, none missing) and returns every symbol's size: for
/// an executor that runs compiled code in the interpreter's place and must refuse what it
/// refuses, with the same messages.
pub fn check_inputs(g: &Graph, inputs: &[(String, Tensor)]) -> Result<HashMap<String, u64>, RunError> {
    let mut values: Vec<Option<Cow<'_, Tensor>>> = vec![None; g.num_values()];
    bind_inputs(g, inputs, &mut values)
}

/// Checks every feed against the graph's inputs, stores it in `values`, and returns the size of
/// every symbolic dimension.
fn bind_inputs<'a>(
    g: &Graph,
    inputs: &'a [(String, Tensor)],
    values: &mut [Option<Cow<'a, Tensor>>],
) -> Result<HashMap<String, u64>, RunError> {
    // Symbol -> (size, input that bound it, its dimension), for precise conflict messages.
    let mut bound: HashMap<&str, (usize, &str)> = HashMap::new();
    for (name, t) in inputs {
        let Some(&v) = g.inputs().iter().find(|&&v| g.value(v).name == *name) else {
            let known: Vec<&str> = g.inputs().iter().map(|&v| g.value(v).name.as_str()).collect();
            return Err(RunError::UnknownInput { name: name.clone(), known: known.join(", ") });
        };
        if values[v.index()].is_some() {
            return Err(RunError::DuplicateInput { name: name.clone() });
        }
        check_well_formed(t).map_err(|message| RunError::MalformedInput { name: name.clone(), message })?;
        let declared = &g.value(v).ty;
        if t.dtype != declared.dtype {
            return Err(RunError::InputDtype { name: name.clone(), declared: declared.dtype, given: t.dtype });
        }
        let shape_error =
            || RunError::InputShape { name: name.clone(), declared: declared.clone(), given: t.shape.clone() };
        if t.shape.len() != declared.rank() {
            return Err(shape_error());
        }
        for (axis, (dim, &size)) in declared.dims.iter().zip(&t.shape).enumerate() {
            match dim {
                Dim::Static(n) if *n != size as u64 => return Err(shape_error()),
                Dim::Static(_) => {}
                Dim::Symbolic(expr) => match expr.as_symbol().map(|sym| (sym, bound.get(sym))) {
                    None => {}
                    Some((sym, Some(&(first_size, first_input)))) if first_size != size => {
                        return Err(RunError::DimConflict {
                            dim: sym.to_string(),
                            first_input: first_input.to_string(),
                            first_size,
                            input: name.clone(),
                            size,
                            axis,
                        });
                    }
                    Some((_, Some(_))) => {}
                    Some((sym, None)) => {
                        bound.insert(sym, (size, name));
                    }
                },
            }
        }
        values[v.index()] = Some(Cow::Borrowed(t));
    }
    let missing: Vec<String> =
        g.inputs().iter().filter(|v| values[v.index()].is_none()).map(|&v| g.value(v).name.clone()).collect();
    if !missing.is_empty() {
        return Err(RunError::MissingInputs { names: missing });
    }
    // Dimensions that are expressions (`seq + 1`) solve for their symbols and are checked.
    let mut bindings: HashMap<String, u64> =
        bound.into_iter().map(|(sym, (size, _))| (sym.to_string(), size as u64)).collect();
    let what: Vec<String> = inputs.iter().map(|(name, _)| format!("input '{name}'")).collect();
    let given: Vec<(&str, &TensorType, &[usize])> = inputs
        .iter()
        .zip(&what)
        .filter_map(|((name, t), what)| {
            let v = g.inputs().iter().find(|&&v| g.value(v).name == *name)?;
            Some((what.as_str(), &g.value(*v).ty, t.shape.as_slice()))
        })
        .collect();
    tessera_ir::types::bind_from_shapes(&given, &mut bindings).map_err(|message| RunError::DimBinding { message })?;
    Ok(bindings)
}

/// A feed must hold one element per index of its shape, in the storage its dtype uses.
fn check_well_formed(t: &Tensor) -> Result<(), String> {
    let count = t.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    if count != Some(t.len()) {
        return Err(format!("{} elements stored for shape {:?}", t.len(), t.shape));
    }
    if t.data.kind() != Buffer::kind_of(t.dtype) {
        return Err(format!("{} values in the wrong storage", t.dtype));
    }
    Ok(())
}

/// Binds the symbolic dimensions of `declared` that no input bound from the received `t`.
fn bind_received(declared: &TensorType, t: &Tensor, bindings: &mut HashMap<String, u64>) -> Result<(), String> {
    if declared.rank() != t.shape.len() || declared.dtype != t.dtype {
        return Err(format!("received {} but expected {declared}", t.tensor_type()));
    }
    tessera_ir::types::bind_from_shapes(&[("the received tensor", declared, &t.shape)], bindings)
}

/// `op` with its symbolic target shape (only `reshape` and `broadcast` carry one) bound to sizes.
fn bind_op<'o>(op: &'o Op, bindings: &HashMap<String, u64>) -> Result<Cow<'o, Op>, String> {
    let bind = |shape: &[Dim]| tessera_ir::types::bind_dims(shape, bindings).map_err(|e| e.to_string());
    Ok(match op {
        Op::Broadcast { shape } => Cow::Owned(Op::Broadcast { shape: bind(shape)? }),
        Op::Reshape { shape } => Cow::Owned(Op::Reshape { shape: bind(shape)? }),
        _ => Cow::Borrowed(op),
    })
}

/// The concrete result types must be static and agree with the declared ones under the
/// bindings (the verifier checked the symbolic form, so a disagreement is a symbol that no
/// input binds).
fn check_results(
    g: &Graph,
    outputs: &[ValueId],
    results: &[TensorType],
    bindings: &HashMap<String, u64>,
) -> Result<(), String> {
    for (&v, concrete) in outputs.iter().zip(results) {
        let declared = g.value(v).ty.substitute(bindings).map_err(|e| e.to_string())?;
        if let Some(sym) = declared.symbols().next().or_else(|| concrete.symbols().next()) {
            return Err(format!("symbolic dimension '{sym}' of %{} is bound by no graph input", g.value(v).name));
        }
        if declared != *concrete {
            return Err(format!(
                "result %{} is declared {} but is {concrete} for these inputs",
                g.value(v).name,
                g.value(v).ty
            ));
        }
    }
    Ok(())
}
