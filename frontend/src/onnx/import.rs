//! The import driver: decodes a `ModelProto`, checks the opset, turns initializers into
//! constants and graph inputs into activation inputs, runs one builder per node, and hands
//! builders the helpers they share (constant inputs, NumPy broadcasting, constant folding).

use super::attrs::Attrs;
use super::error::{NodeRef, OnnxError};
use super::ops::{self, BuildError, BuildResult, Registry};
use super::proto::{type_proto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto};
use super::tensor::{self, ExternalData};
use std::collections::HashMap;
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::{broadcast_dims, Op};
use tessera_ir::symbolic::DimExpr;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

/// The default-domain opsets tessera imports. 13 is where the ops GPT-2/BERT/ResNet exports use
/// took their current form (axes as inputs, bfloat16); 11 and 12 are still what paddle2onnx
/// writes (PaddleOCR's published models), and their differences stay in the builders
/// (Squeeze/Unsqueeze/ReduceSum axes and Split sizes as attributes, Softmax/LogSoftmax/Hardmax
/// over a flattened trailing block). 28 is the newest opset of onnx 1.23.2. The changes from 22
/// to 28 to the ops imported here add element types, except: Range-27 accepts float16/bfloat16
/// with a `stash_type` and SpaceToDepth-28 gains `mode` (CRD), which their builders handle;
/// Mod-28 defines `fmod = 0` on floats (floor division), and its builder handles float Mod at
/// every opset. ReduceLogSum(Exp)-28 drop integer types.
///
/// Opsets 1 to 10 go through `legacy::modernize`, which rewrites each node into its opset-11
/// form (Slice/Pad/Clip/TopK attributes that became inputs, Scatter as ScatterElements) and
/// refuses by name the ops whose older form it does not map.
pub const MIN_OPSET: i64 = 1;
pub const MAX_OPSET: i64 = 28;

/// Constant folding evaluates an op at import time when all its operands are constants and its
/// result has at most this many elements: enough for the shape arithmetic exporters emit
/// (`Shape -> Gather -> Concat -> Reshape`), small enough not to duplicate weights.
const FOLD_LIMIT: u64 = 1 << 16;

/// Choices that change what an import produces.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Graph inputs to replace by constants (ONNX input name, value), specializing the model:
    /// inputs that tessera needs at import time (a Reshape's target shape, a Reduce's axes) may
    /// then be fed as graph inputs in the ONNX file. Bound inputs are not inputs of the result.
    pub constants: Vec<(String, Tensor)>,
    /// What the model's initializers become.
    pub initializers: Initializers,
    /// Sizes of symbolic dimensions, bound in the graph inputs' types before any node is
    /// imported, so shape arithmetic folds to constants (for models whose shape arithmetic the
    /// symbolic import cannot decide; PP-OCRv4's recognizer, whose Reshape holds only where
    /// `floordiv(h + 15, 48)` is 1, now imports with that assumed and checked at run time).
    pub dims: HashMap<String, u64>,
}

/// What an import makes of a model's initializers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Initializers {
    /// `tsr.constant` nodes holding their values: a self-contained model to compile and run.
    #[default]
    Constants,
    /// The weights as the model's parameters: every floating-point initializer of rank 1 or more
    /// becomes a graph input with [`InputRole::Parameter`] and its declared type, and its payload
    /// is not read (what the planner needs, in the time it takes to read the graph), except to
    /// find an exporter's transposed copy of another initializer, which reads it through a
    /// transpose (`Importer::transposed_copies`). Integer and
    /// boolean initializers (indices, shapes, masks) and float scalars (an epsilon, a scale)
    /// stay constants. A builder that needs a parameter's value at import time (a `Resize`'s
    /// scales, say) decodes it then, and the input stays a parameter.
    Parameters,
}

/// Where a region built in place began ([`Importer::begin_region`]).
pub(crate) struct RegionStart {
    first: tessera_ir::graph::NodeId,
    /// The `tsr.trap` nodes standing for its block arguments ([`Importer::block_args`]).
    placeholders: Vec<tessera_ir::graph::NodeId>,
}

/// A region's nodes moved out of the graph being built ([`Importer::end_region`]), before its
/// block arguments are final: the loop that owns it decides which enclosing values it carries.
pub(crate) struct OpenRegion {
    /// The nodes as split off: its inputs are `captures`, its first nodes include the
    /// placeholders.
    raw: Graph,
    /// The placeholder nodes, as node indices of `raw`.
    placeholders: Vec<usize>,
    /// The enclosing values read, one per input of `raw`.
    captures: Vec<ValueId>,
    /// The value of each capture copied in as a constant, if it is one.
    literals: Vec<Option<Tensor>>,
    /// Per value of `raw`: whether a yield depends on it.
    live: Vec<bool>,
}

impl OpenRegion {
    /// The enclosing values the region reads at run time (small constants are copied in).
    pub fn captures(&self) -> Vec<ValueId> {
        let inputs = self.raw.inputs();
        self.captures
            .iter()
            .zip(&self.literals)
            .zip(inputs)
            .filter(|((_, literal), input)| literal.is_none() && self.live[input.index()])
            .map(|((&v, _), _)| v)
            .collect()
    }

    /// The region as a graph of its own: its block arguments are the placeholders' values, then
    /// one per `carried` enclosing value (unread where the region does not read it); it yields
    /// what [`Importer::end_region`] was given, then, with `pass_carried`, the `carried`
    /// arguments unchanged (a loop body carries its loop invariants).
    pub fn close(&self, outer: &Graph, carried: &[ValueId], pass_carried: bool) -> Result<Graph, String> {
        let raw = &self.raw;
        let mut g = Graph::new(tessera_ir::ops::control::REGION_NAME);
        let mut remap: Vec<Option<ValueId>> = vec![None; raw.num_values()];
        for &node in &self.placeholders {
            for &v in &raw.node(tessera_ir::graph::NodeId(node as u32)).outputs {
                remap[v.index()] =
                    Some(g.add_input(&raw.value(v).name, raw.value(v).ty.clone(), InputRole::Activation));
            }
        }
        let mut carried_args = Vec::with_capacity(carried.len());
        for &c in carried {
            let own = self.captures.iter().position(|&v| v == c).filter(|&i| self.literals[i].is_none());
            let arg = match own {
                Some(i) => {
                    let input = raw.inputs()[i];
                    let arg = g.add_input(&raw.value(input).name, raw.value(input).ty.clone(), InputRole::Activation);
                    remap[input.index()] = Some(arg);
                    arg
                }
                None => {
                    let base = &outer.value(c).name;
                    let name = (0u64..)
                        .map(|k| if k == 0 { base.clone() } else { format!("{base}_{k}") })
                        .find(|n| !g.has_name(n) && !raw.has_name(n))
                        .unwrap_or_else(|| base.clone());
                    g.add_input(&name, outer.value(c).ty.clone(), InputRole::Activation)
                }
            };
            carried_args.push(arg);
        }
        for (i, literal) in self.literals.iter().enumerate() {
            if let Some(t) = literal {
                let input = raw.inputs()[i];
                let value = raw.value(input);
                let node =
                    g.add_node_unchecked(Op::Constant(t.clone()), vec![], vec![(value.name.clone(), value.ty.clone())]);
                remap[input.index()] = Some(g.node(node).outputs[0]);
            }
        }
        for (id, node) in raw.nodes() {
            if self.placeholders.contains(&id.index()) || !node.outputs.iter().any(|v| self.live[v.index()]) {
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .map(|v| remap[v.index()].ok_or_else(|| format!("%{} is read but not carried", raw.value(*v).name)))
                .collect::<Result<Vec<_>, String>>()?;
            let results = node.outputs.iter().map(|&v| (raw.value(v).name.clone(), raw.value(v).ty.clone())).collect();
            let new = g.add_node_unchecked(node.op.clone(), inputs, results);
            for (&old, &v) in node.outputs.iter().zip(&g.node(new).outputs) {
                remap[old.index()] = Some(v);
            }
        }
        let mut yields = raw
            .outputs()
            .iter()
            .map(|v| remap[v.index()].ok_or_else(|| format!("yielded %{} has no value", raw.value(*v).name)))
            .collect::<Result<Vec<_>, String>>()?;
        if pass_carried {
            yields.extend(carried_args);
        }
        g.set_outputs(yields);
        Ok(g)
    }
}

/// An integer of a shape computed at import time: a dimension expression, constant when known.
pub(crate) type SymInt = DimExpr;

/// A shape value as an operand of shape arithmetic: its elements, and whether it is a scalar.
pub(crate) type ShapeOperand = (Vec<SymInt>, bool);

/// What an ONNX value name stands for in the graph being built.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// A tsr value.
    Value(ValueId),
    /// An int64 tensor holding (part of) a shape with symbolic dimensions, e.g. the result of
    /// `Shape` on a `[batch, seq, 768]` input. Shape arithmetic folds on it at import time; where
    /// real computation reads it, it becomes a `tsr.dim_values` node.
    Shape { elems: Vec<SymInt>, scalar: bool },
}

/// The node being imported, as builders see it.
pub(crate) struct NodeCx<'a> {
    pub proto: &'a NodeProto,
    pub attrs: Attrs<'a>,
    /// The model's default-domain opset version.
    pub opset: i64,
}

impl NodeCx<'_> {
    /// The name of input `i`, `None` when it is absent or the empty name (an omitted optional).
    pub fn input_name(&self, i: usize) -> Option<&str> {
        self.proto.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn num_inputs(&self) -> usize {
        self.proto.input.len()
    }

    /// Whether output `i` is requested (present and named).
    pub fn wants_output(&self, i: usize) -> bool {
        self.proto.output.get(i).is_some_and(|s| !s.is_empty())
    }

    pub fn num_outputs(&self) -> usize {
        self.proto.output.len()
    }
}

pub(crate) struct Importer {
    pub graph: Graph,
    slots: HashMap<String, Slot>,
    external: ExternalData,
    base_dir: Option<std::path::PathBuf>,
    /// Initializers imported as parameters ([`Initializers::Parameters`]), by their input, for
    /// the rare builder that needs one's value at import time.
    parameter_initializers: HashMap<ValueId, TensorProto>,
    /// Symbols replaced by another ([`Importer::unify_dims`]), (replaced, kept), in order.
    unified_symbols: Vec<(String, String)>,
    /// Comparisons of dimension expressions that only the sizes decide, computed at run time
    /// ([`Importer::size_comparison`]): the result (a `tsr.compare`) -> the comparison as text,
    /// so an `If` on one can tell its condition depends on the sizes
    /// ([`Importer::size_condition`]). Keyed by id, since the result is renamed to the ONNX
    /// output's name after its builder returns.
    size_comparisons: HashMap<ValueId, String>,
    /// The size conditions the nodes being imported are known to satisfy: inside the part of a
    /// graph imported once per branch of a size-decided `If` ([`ops::control::split_at_size_if`]),
    /// (condition, its value there). A later `If` on the same condition takes that branch.
    pub assumed_conditions: Vec<(ValueId, bool)>,
    /// How many of [`Importer::assumed_conditions`] are size assumptions
    /// ([`ops::control::split_at_size_assumption`]), which import what follows once (the other
    /// side is a trap), not once per branch: they nest under their own, larger limit.
    pub nested_assumptions: usize,
    /// The size comparisons of two single entries that are an equality or its negation
    /// (`Equal(dim, 1)`, and `Not` of that as `!=`): result -> (the entries, whether the result
    /// says they are equal), so an assumed condition tells which sizes are equal.
    size_equalities: HashMap<ValueId, (SymInt, SymInt, bool)>,
    /// The size comparisons `size >= n` an assumption made ([`BuildError::AssumesSize`] with
    /// [`ops::SizeRelation::AtLeast`]): result -> (the size, `n`), so an assumed condition tells
    /// which sizes are at least how large.
    size_lower_bounds: HashMap<ValueId, (SymInt, i64)>,
    /// The run-time tensors made from shape values ([`Importer::dim_values`]) -> their entries,
    /// so integer layout ops over them still have known contents ([`Importer::size_elements`]).
    pub(super) size_values: HashMap<ValueId, Vec<SymInt>>,
}

/// What importing one node came to.
pub(crate) enum NodeImport {
    /// Its outputs are defined.
    Imported,
    /// It is an `If` on a size condition whose branches yield different types: what follows
    /// must be imported once per branch. The refusal, should that fail too.
    SplitHere(String),
    /// Its shape rule needs `size = value`, true for some sizes only: it and what follows are
    /// imported with that assumed, under a run-time check ([`BuildError::AssumesSize`]).
    AssumeHere { size: SymInt, relation: ops::SizeRelation, value: i64, refusal: String },
}

/// Imports a decoded model; `base_dir` resolves external data.
pub(crate) fn import(model: &ModelProto, base_dir: Option<&Path>, options: &ImportOptions) -> Result<Graph, OnnxError> {
    import_with_payloads(model, ExternalData::new(base_dir), options)
}

/// [`import`] reading payloads through `external` (which may know the model's own file, so
/// that `raw_data` is read from it straight into each constant: see [`ExternalData::with_model_file`]).
pub(crate) fn import_with_payloads(
    model: &ModelProto,
    external: ExternalData,
    options: &ImportOptions,
) -> Result<Graph, OnnxError> {
    let opset = default_opset(model)?;
    let graph_proto = model.graph.as_ref().ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    let name = sanitize(graph_proto.name());
    let base_dir = external.base_dir().map(Path::to_path_buf);
    let mut imp = Importer {
        graph: Graph::new(if name.is_empty() { "main" } else { &name }),
        slots: HashMap::new(),
        external,
        base_dir,
        parameter_initializers: HashMap::new(),
        unified_symbols: Vec::new(),
        size_comparisons: HashMap::new(),
        assumed_conditions: Vec::new(),
        nested_assumptions: 0,
        size_equalities: HashMap::new(),
        size_lower_bounds: HashMap::new(),
        size_values: HashMap::new(),
    };
    imp.add_initializers(graph_proto, options.initializers)?;
    imp.add_inputs(graph_proto, &options.constants, &options.dims)?;
    let registry = ops::registry();
    imp.import_nodes(&graph_proto.node, opset, &registry, &graph_proto.output)?;
    imp.set_outputs(graph_proto)?;
    imp.remove_dead_nodes();
    tessera_ir::verify::verify(&imp.graph)?;
    Ok(imp.graph)
}

/// Drops the nodes of `g` no output depends on.
fn remove_dead_nodes(g: &mut Graph) {
    let mut live = vec![false; g.num_values()];
    for v in g.outputs() {
        live[v.index()] = true;
    }
    let mut keep = vec![false; g.num_nodes()];
    let nodes: Vec<_> = g.nodes().map(|(id, n)| (id, n.inputs.clone(), n.outputs.clone())).collect();
    for (id, inputs, outputs) in nodes.into_iter().rev() {
        if outputs.iter().any(|v| live[v.index()]) {
            keep[id.index()] = true;
            for v in inputs {
                live[v.index()] = true;
            }
        }
    }
    g.retain_nodes(|id, _| keep[id.index()]);
}

/// A graph holding only the model's activation inputs (those without an initializer), with
/// their declared types and the names a full import gives them: what reading input files
/// needs, without importing any node.
pub(crate) fn declared_inputs(model: &ModelProto) -> Result<Graph, OnnxError> {
    let graph_proto = model.graph.as_ref().ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    let mut imp = Importer {
        graph: Graph::new("inputs"),
        slots: HashMap::new(),
        external: ExternalData::new(None),
        base_dir: None,
        parameter_initializers: HashMap::new(),
        unified_symbols: Vec::new(),
        size_comparisons: HashMap::new(),
        assumed_conditions: Vec::new(),
        nested_assumptions: 0,
        size_equalities: HashMap::new(),
        size_lower_bounds: HashMap::new(),
        size_values: HashMap::new(),
    };
    for init in &graph_proto.initializer {
        // Marks the name as defined, so add_inputs skips it; nothing reads the slot.
        imp.slots.insert(init.name().to_string(), Slot::Shape { elems: Vec::new(), scalar: false });
    }
    imp.add_inputs(graph_proto, &[], &HashMap::new())?;
    Ok(imp.graph)
}

/// The version of the default domain (`""` or `ai.onnx`), checked against the supported range;
/// `None` when the model imports only other domains (whose nodes are then unsupported ops).
fn default_opset(model: &ModelProto) -> Result<Option<i64>, OnnxError> {
    let Some(version) = model.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map(|o| o.version())
    else {
        if model.opset_import.is_empty() {
            return Err(OnnxError::Model("the model imports no opset".into()));
        }
        return Ok(None);
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&version) {
        return Err(OnnxError::UnsupportedOpset { version, min: MIN_OPSET, max: MAX_OPSET });
    }
    Ok(Some(version))
}

/// A valid tsr SSA name for an ONNX name: characters outside `[A-Za-z0-9_$.-]` become `_`, and
/// a name starting with a digit but not all digits gets a `_` prefix.
pub(crate) fn sanitize(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_$.-".contains(c) { c } else { '_' }).collect();
    let all_digits = s.chars().all(|c| c.is_ascii_digit());
    if s.starts_with(|c: char| c.is_ascii_digit()) && !all_digits {
        s.insert(0, '_');
    }
    s
}

/// A `dim_param` as a symbol name: sanitized, and starting with a letter or `_` so that it reads
/// as one name inside a dimension expression (`2 * seq`).
fn symbol_name(param: &str) -> String {
    let s = sanitize(param);
    if s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$') {
        s
    } else {
        format!("_{s}")
    }
}

/// The tsr type of a graph input or output's `TypeProto`. `what` names it in messages.
fn tensor_type_of(ty: Option<&TypeProto>, value_name: &str) -> Result<TensorType, (String, bool)> {
    let tt = match ty.and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tt)) => tt,
        Some(other) => {
            let kind = match other {
                type_proto::Value::SequenceType(_) => "sequence",
                type_proto::Value::MapType(_) => "map",
                type_proto::Value::OptionalType(_) => "optional",
                type_proto::Value::SparseTensorType(_) => "sparse tensor",
                type_proto::Value::TensorType(_) => "tensor",
            };
            return Err((format!("{kind} values are not supported"), true));
        }
        None => return Err(("has no type".into(), false)),
    };
    let dtype = tensor::dtype_of(tt.elem_type()).map_err(|e| (e.message, e.unsupported))?;
    let shape =
        tt.shape.as_ref().ok_or_else(|| ("has no shape (tessera needs at least the rank)".to_string(), true))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        use super::proto::tensor_shape_proto::dimension::Value as DimValue;
        dims.push(match &d.value {
            Some(DimValue::DimValue(n)) if *n > tensor::MAX_DIM => {
                return Err((
                    format!("dimension {i} ({n}) is larger than tessera's limit of {}", tensor::MAX_DIM),
                    false,
                ))
            }
            Some(DimValue::DimValue(n)) if *n >= 0 => Dim::Static(*n as u64),
            Some(DimValue::DimParam(p)) if p.chars().any(|c| c.is_ascii_alphanumeric()) => Dim::sym(&symbol_name(p)),
            // An unnamed dynamic dimension gets a name of its own, unequal to every other. Some
            // exporters (paddle2onnx) spell "dynamic" as `dim_value: -1` or `dim_param: "?"`; a
            // shared placeholder like "?" names no dimension, so it must not tie two together.
            _ => Dim::sym(&symbol_name(&format!("{}_dim{i}", sanitize(value_name)))),
        });
    }
    let count = dims.iter().filter_map(Dim::as_static).try_fold(1u64, |acc, n| acc.checked_mul(n));
    if count.is_none_or(|c| c > tensor::MAX_ELEMENTS) {
        return Err(("has too many elements".into(), false));
    }
    Ok(TensorType::new(dtype, dims))
}

impl Importer {
    fn add_initializers(&mut self, g: &GraphProto, initializers: Initializers) -> Result<(), OnnxError> {
        if let Some(s) = g.sparse_initializer.first() {
            let name = s.values.as_ref().map(|v| v.name().to_string()).unwrap_or_default();
            return Err(OnnxError::Tensor {
                name,
                message: "sparse initializers are not supported".into(),
                unsupported: true,
            });
        }
        let copies = if initializers == Initializers::Parameters { self.transposed_copies(g) } else { HashMap::new() };
        for init in &g.initializer {
            let name = init.name();
            if name.is_empty() {
                return Err(OnnxError::Model("an initializer has no name".into()));
            }
            if copies.contains_key(name) {
                continue;
            }
            let tensor_error = |e: tensor::PayloadError| OnnxError::Tensor {
                name: name.to_string(),
                message: e.message,
                unsupported: e.unsupported,
            };
            if initializers == Initializers::Parameters {
                let ty = tensor::declared_type(init).map_err(tensor_error)?;
                if ty.dtype.is_float() && ty.rank() > 0 {
                    let ssa = self.unique_name(name);
                    let v = self.graph.add_input(&ssa, ty, InputRole::Parameter);
                    self.parameter_initializers.insert(v, init.clone());
                    self.slots.insert(name.to_string(), Slot::Value(v));
                    continue;
                }
            }
            let t = tensor::decode(init, &mut self.external).map_err(tensor_error)?;
            let v = self.constant(t);
            self.name_value(v, name);
            self.slots.insert(name.to_string(), Slot::Value(v));
        }
        // A copy reads its original through a transpose: one parameter, as in the model.
        let mut copies: Vec<(String, String)> = copies.into_iter().collect();
        copies.sort();
        for (copy, original) in copies {
            let Some(Slot::Value(of)) = self.slots.get(&original).cloned() else { continue };
            let added = self.graph.add_node(Op::Transpose { perm: vec![1, 0] }, &[of]);
            let Some(&v) = added
                .map_err(|e| OnnxError::Model(format!("initializer '{copy}' as the transpose of '{original}': {e}")))?
                .first()
            else {
                return Err(OnnxError::Model(format!("initializer '{copy}': tsr.transpose gave no result")));
            };
            self.name_value(v, &copy);
            self.slots.insert(copy, Slot::Value(v));
        }
        Ok(())
    }

    /// Initializers whose values are another initializer's transpose, by name, each with the
    /// name of the one it copies (the first of the two in the file): how `torch.onnx.export`
    /// writes a tied weight that one side reads transposed. GPT-2's head reads the token table
    /// as a second, pre-transposed `[hidden, vocab]` initializer, so the file holds 38.6 M
    /// weights twice; planned as two parameters, the model would have 162.9 M of them and
    /// train, shard and store both. Only non-square 2-D float initializers with swapped shapes
    /// and one element type are compared, each decoded at most once; a pair that differs
    /// anywhere is no copy, and one that cannot be decoded is left as it is.
    fn transposed_copies(&mut self, g: &GraphProto) -> HashMap<String, String> {
        let matrices: Vec<(usize, usize, usize)> = g
            .initializer
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = tensor::declared_type(t).ok()?;
                match ty.dims.as_slice() {
                    [Dim::Static(r), Dim::Static(c)] if ty.dtype.is_float() && r != c => {
                        Some((i, *r as usize, *c as usize))
                    }
                    _ => None,
                }
            })
            .collect();
        let mut decoded: HashMap<usize, Option<Tensor>> = HashMap::new();
        let mut copies = HashMap::new();
        for (a, &(i, rows, cols)) in matrices.iter().enumerate() {
            for &(j, rows_j, cols_j) in &matrices[a + 1..] {
                let (first, second) = (&g.initializer[i], &g.initializer[j]);
                let swapped = (rows_j, cols_j) == (cols, rows) && first.data_type() == second.data_type();
                if !swapped || copies.contains_key(second.name()) || copies.contains_key(first.name()) {
                    continue;
                }
                if !self.transposed_at_probes(first, second, rows, cols) {
                    continue;
                }
                for k in [i, j] {
                    decoded.entry(k).or_insert_with(|| tensor::decode(&g.initializer[k], &mut self.external).ok());
                }
                let (Some(Some(x)), Some(Some(y))) = (decoded.get(&i), decoded.get(&j)) else { continue };
                let transposed = (0..rows)
                    .all(|r| (0..cols).all(|c| x.get_f64(r * cols + c).to_bits() == y.get_f64(c * rows + r).to_bits()));
                if transposed {
                    copies.insert(second.name().to_string(), first.name().to_string());
                }
            }
        }
        copies
    }

    /// Whether `second` (`[cols, rows]`) holds `first`'s (`[rows, cols]`) elements at the
    /// transposed places along both diagonals (`TRANSPOSE_PROBES` of each), compared as raw
    /// bits without decoding either payload; true when they cannot be read that way (inline
    /// typed fields), so that the full comparison decides. GPT-2's `c_fc` and `c_proj` weights
    /// have swapped shapes and differ at the first probe: decoding all 24 of them made planning
    /// the real export take 200 MB more memory and 0.1-0.3 s more CPU in release (BENCHMARKS.md).
    fn transposed_at_probes(&mut self, first: &TensorProto, second: &TensorProto, rows: usize, cols: usize) -> bool {
        const TRANSPOSE_PROBES: usize = 8;
        let spread = |k: usize, n: usize| k * (n - 1) / (TRANSPOSE_PROBES - 1);
        let places = (0..TRANSPOSE_PROBES).flat_map(|k| {
            let (r, c) = (spread(k, rows), spread(k, cols));
            [(r, c), (r, cols - 1 - c)]
        });
        for (r, c) in places {
            let x = tensor::raw_element(first, r * cols + c, &mut self.external);
            let y = tensor::raw_element(second, c * rows + r, &mut self.external);
            match (x, y) {
                (Some(x), Some(y)) if x != y => return false,
                (Some(_), Some(_)) => {}
                _ => return true,
            }
        }
        true
    }

    /// Graph inputs not shadowed by an initializer become activation inputs. An input that also
    /// has an initializer is, in ONNX, overridable; tessera keeps the initializer as a constant
    /// so the imported model is self-contained.
    fn add_inputs(
        &mut self,
        g: &GraphProto,
        constants: &[(String, Tensor)],
        dims: &HashMap<String, u64>,
    ) -> Result<(), OnnxError> {
        for input in &g.input {
            let name = input.name();
            if self.slots.contains_key(name) {
                continue;
            }
            let err = |(message, unsupported): (String, bool)| OnnxError::GraphValue {
                kind: "input",
                name: name.to_string(),
                message,
                unsupported,
            };
            if name.is_empty() {
                return Err(err(("has no name".into(), false)));
            }
            let ty = tensor_type_of(input.r#type.as_ref(), name).map_err(err)?;
            if let Some((_, t)) = constants.iter().find(|(n, _)| n == name) {
                let fits = t.dtype == ty.dtype
                    && t.shape.len() == ty.rank()
                    && t.shape.iter().zip(&ty.dims).all(|(&n, d)| d.as_static().is_none_or(|s| s == n as u64));
                if !fits {
                    return Err(err((format!("bound value of type {} does not fit {ty}", t.tensor_type()), false)));
                }
                let v = self.constant(t.clone());
                self.name_value(v, name);
                self.slots.insert(name.to_string(), Slot::Value(v));
                continue;
            }
            let ty = ty.substitute(dims).map_err(|e| err((e.to_string(), false)))?;
            let ssa = self.unique_name(name);
            let v = self.graph.add_input(&ssa, ty, InputRole::Activation);
            self.slots.insert(name.to_string(), Slot::Value(v));
        }
        Ok(())
    }

    /// Imports `nodes` in order, defining the graph's `outputs` (by name). At an `If` whose
    /// branches' types only the sizes decide, the nodes after it are imported once per branch
    /// ([`ops::control::split_at_size_if`]), which defines the outputs, and the walk ends.
    fn import_nodes(
        &mut self,
        nodes: &[NodeProto],
        opset: Option<i64>,
        registry: &Registry,
        outputs: &[ValueInfoProto],
    ) -> Result<(), OnnxError> {
        for (index, node) in nodes.iter().enumerate() {
            // import_node refuses a default-domain node without an opset before building it.
            let node_ref = || NodeRef { name: node.name().to_string(), index, op_type: node.op_type().to_string() };
            match self.import_node(node, index, opset, registry)? {
                NodeImport::Imported => {}
                NodeImport::SplitHere(refusal) => {
                    let rest = &nodes[index + 1..];
                    let opset = opset.unwrap_or(MAX_OPSET);
                    return ops::control::split_at_size_if(self, node, rest, outputs, opset, &refusal)
                        .map_err(|message| OnnxError::UnsupportedNode { node: node_ref(), message });
                }
                NodeImport::AssumeHere { size, relation, value, refusal } => {
                    let assumption = ops::control::SizeAssumption { size, relation, value, node: node_ref() };
                    let opset = opset.unwrap_or(MAX_OPSET);
                    return ops::control::split_at_size_assumption(self, &assumption, &nodes[index..], outputs, opset)
                        .map_err(|why| OnnxError::UnsupportedNode {
                            node: node_ref(),
                            message: format!("{refusal}; importing it and what follows with that assumed: {why}"),
                        });
                }
            }
        }
        Ok(())
    }

    fn import_node(
        &mut self,
        node: &NodeProto,
        index: usize,
        opset: Option<i64>,
        registry: &Registry,
    ) -> Result<NodeImport, OnnxError> {
        let domain = node.domain();
        let op_type = if matches!(domain, "" | "ai.onnx") {
            node.op_type().to_string()
        } else {
            format!("{domain}.{}", node.op_type())
        };
        let node_ref = NodeRef { name: node.name().to_string(), index, op_type: op_type.clone() };
        if registry.get(op_type.as_str()).is_none()
            && !(super::legacy::RENAMED.contains(&op_type.as_str()) && opset.is_some_and(|v| v < 11))
        {
            return Err(OnnxError::UnsupportedOp { node: node_ref });
        }
        // A node of another domain (ai.onnx.ml) does not depend on the default domain's opset.
        let opset = match opset {
            Some(v) => v,
            None if !matches!(domain, "" | "ai.onnx") => MAX_OPSET,
            None => {
                return Err(OnnxError::Node {
                    node: node_ref.clone(),
                    message: "the model imports no opset of the default ONNX domain".into(),
                })
            }
        };
        // ONNX graphs are SSA: a second definition of a name would silently replace the first.
        for (i, out_name) in node.output.iter().enumerate() {
            let again_in_node = node.output[..i].contains(out_name);
            if !out_name.is_empty() && (again_in_node || self.slots.contains_key(out_name)) {
                return Err(OnnxError::Node {
                    node: node_ref,
                    message: format!(
                        "output '{}' is already defined (by another node, a graph input or an initializer); ONNX names each value once",
                        tessera_ir::quote::clip(out_name)
                    ),
                });
            }
        }
        let modern;
        let node = if opset < 11 && matches!(domain, "" | "ai.onnx") {
            modern = super::legacy::modernize(self, node, opset)
                .map_err(|message| OnnxError::UnsupportedNode { node: node_ref.clone(), message })?;
            &modern
        } else {
            node
        };
        let builder =
            if matches!(domain, "" | "ai.onnx") { registry.get(node.op_type()) } else { registry.get(&op_type) };
        let builder = builder.ok_or_else(|| OnnxError::UnsupportedOp { node: node_ref.clone() })?;
        let cx = NodeCx { proto: node, attrs: Attrs::of(node), opset };
        let first_new = self.graph.num_values();
        let outs = builder(self, &cx);
        match outs {
            Err(BuildError::TypesDependOnSizes(refusal)) => return Ok(NodeImport::SplitHere(refusal)),
            Err(BuildError::AssumesSize { size, relation, value, refusal }) => {
                return Ok(NodeImport::AssumeHere { size, relation, value, refusal })
            }
            _ => {}
        }
        let outs = outs.map_err(|e| match e {
            BuildError::Unsupported(message)
            | BuildError::TypesDependOnSizes(message)
            | BuildError::AssumesSize { refusal: message, .. } => {
                OnnxError::UnsupportedNode { node: node_ref.clone(), message }
            }
            BuildError::Invalid(message) => OnnxError::Node { node: node_ref.clone(), message },
            BuildError::NotConstant { value, role } => OnnxError::NotConstant { node: node_ref.clone(), role, value },
        })?;
        for (i, out_name) in node.output.iter().enumerate() {
            if out_name.is_empty() {
                continue;
            }
            let Some(slot) = outs.get(i) else {
                return Err(OnnxError::UnsupportedNode {
                    node: node_ref,
                    message: format!("output {i} ('{out_name}') is not supported"),
                });
            };
            if let Slot::Value(v) = slot {
                // Name fresh results after the ONNX value, so the IR reads like the model; a value
                // the node merely passes through (Identity) keeps its first name.
                if v.index() >= first_new && self.graph.value(*v).name.parse::<u64>().is_ok() {
                    self.name_value(*v, out_name);
                }
            }
            self.slots.insert(out_name.clone(), slot.clone());
        }
        Ok(NodeImport::Imported)
    }

    fn set_outputs(&mut self, g: &GraphProto) -> Result<(), OnnxError> {
        let mut outputs = Vec::with_capacity(g.output.len());
        for out in &g.output {
            let name = out.name();
            let err = |message: String, unsupported: bool| OnnxError::GraphValue {
                kind: "output",
                name: name.to_string(),
                message,
                unsupported,
            };
            let v = match self.slots.get(name).cloned() {
                Some(Slot::Value(v)) => v,
                Some(Slot::Shape { elems, .. }) => {
                    return Err(err(format!("is a shape with symbolic dimensions ({})", show_sym(&elems)), true))
                }
                None => return Err(err("is not produced by any node, input or initializer".into(), false)),
            };
            check_declared_output(out, &self.graph.value(v).ty).map_err(|m| err(m, false))?;
            // Outputs carry the model's output names (files `tessera run` writes are named after
            // them), even when the node that produced them was folded into an earlier one. Graph
            // inputs keep their names, and a value returned twice keeps its first name.
            let is_node_result = self.graph.producer(v).is_some();
            if is_node_result && !outputs.contains(&v) && self.graph.value(v).name != sanitize(name) {
                self.name_value(v, name);
            }
            outputs.push(v);
        }
        self.graph.set_outputs(outputs);
        Ok(())
    }

    /// Drops nodes no graph output depends on (folded shape arithmetic, unused initializers).
    fn remove_dead_nodes(&mut self) {
        remove_dead_nodes(&mut self.graph);
    }

    // ---- Subgraphs (the branches of `If`) ----

    /// Imports the nodes of `body` (a subgraph attribute) into the graph being built, reading
    /// the enclosing scope's values by name, and returns one slot per subgraph output. Names the
    /// subgraph defines are visible only inside it: the scope is restored afterwards.
    pub fn import_subgraph(&mut self, body: &GraphProto, opset: i64, what: &str) -> BuildResult<Vec<Slot>> {
        self.import_body(body, opset, what, &[])
    }

    /// [`Importer::import_subgraph`] for a body that takes inputs (a `Loop` or `Scan` body):
    /// its inputs, in order, name `params`.
    pub fn import_body(
        &mut self,
        body: &GraphProto,
        opset: i64,
        what: &str,
        params: &[ValueId],
    ) -> BuildResult<Vec<Slot>> {
        let saved = self.slots.clone();
        let result = self.import_subgraph_nodes(body, opset, params);
        self.slots = saved;
        result.map_err(|e| {
            let message = format!("in {what}: {e}");
            if e.is_unsupported() {
                BuildError::Unsupported(message)
            } else {
                BuildError::Invalid(message)
            }
        })
    }

    fn import_subgraph_nodes(
        &mut self,
        body: &GraphProto,
        opset: i64,
        params: &[ValueId],
    ) -> Result<Vec<Slot>, OnnxError> {
        for init in &body.initializer {
            let t = tensor::decode(init, &mut self.external).map_err(|e| OnnxError::Tensor {
                name: init.name().to_string(),
                message: e.message,
                unsupported: e.unsupported,
            })?;
            let v = self.constant(t);
            self.name_value(v, init.name());
            self.slots.insert(init.name().to_string(), Slot::Value(v));
        }
        if params.is_empty() {
            if let Some(input) = body.input.first() {
                return Err(OnnxError::GraphValue {
                    kind: "input",
                    name: input.name().to_string(),
                    message: "a branch subgraph takes no inputs (it reads the enclosing scope)".into(),
                    unsupported: false,
                });
            }
        } else if body.input.len() != params.len() {
            return Err(OnnxError::Model(format!(
                "the body takes {} inputs where {} are expected",
                body.input.len(),
                params.len()
            )));
        }
        for (input, &param) in body.input.iter().zip(params) {
            self.slots.insert(input.name().to_string(), Slot::Value(param));
        }
        let registry = ops::registry();
        self.import_nodes(&body.node, Some(opset), &registry, &body.output)?;
        body.output
            .iter()
            .map(|out| {
                self.slots.get(out.name()).cloned().ok_or_else(|| OnnxError::GraphValue {
                    kind: "output",
                    name: out.name().to_string(),
                    message: "is not produced by any node of the subgraph or the enclosing scope".into(),
                    unsupported: false,
                })
            })
            .collect()
    }

    /// Imports `body` as a region: its nodes are imported into the graph being built, then
    /// moved out into a graph of their own (dead ones dropped) whose block arguments are the
    /// enclosing values it reads, returned beside it. Small constants of the enclosing scope
    /// it reads are copied in rather than captured, so they keep folding inside the region.
    pub fn import_region(&mut self, body: &GraphProto, opset: i64, what: &str) -> BuildResult<(Graph, Vec<ValueId>)> {
        let first = tessera_ir::graph::NodeId(self.graph.num_nodes() as u32);
        let slots = match self.import_subgraph(body, opset, what) {
            Ok(slots) => slots,
            Err(e) => {
                // What the branch added before failing is no part of the enclosing graph.
                let _discarded = self.graph.split_off_region(first, what, &[]);
                return Err(e);
            }
        };
        let mut yields = Vec::with_capacity(slots.len());
        for slot in slots {
            yields.push(match slot {
                Slot::Value(v) => v,
                Slot::Shape { elems, scalar } => self.dim_values(&elems, scalar)?,
            });
        }
        let (mut region, captures) = self
            .graph
            .split_off_region(first, tessera_ir::ops::control::REGION_NAME, &yields)
            .map_err(|m| BuildError::Invalid(format!("{what}: {m}")))?;
        remove_dead_nodes(&mut region);
        self.inline_small_constants(region, captures).map_err(|m| BuildError::Invalid(format!("{what}: {m}")))
    }

    /// Replaces the block arguments of `region` that stand for small constants of the
    /// enclosing graph by copies of those constants.
    fn inline_small_constants(&self, region: Graph, captures: Vec<ValueId>) -> Result<(Graph, Vec<ValueId>), String> {
        use tessera_ir::graph::BlockArg;
        let literal = |v: ValueId| self.constant_of(v).filter(|t| t.len() as u64 <= FOLD_LIMIT).cloned();
        let args: Vec<BlockArg> = captures
            .iter()
            .enumerate()
            .map(|(input, &v)| match literal(v) {
                Some(value) => BlockArg::Literal { input, value },
                None => BlockArg::Input(input),
            })
            .collect();
        if args.iter().all(|a| matches!(a, BlockArg::Input(_))) {
            return Ok((region, captures));
        }
        let kept: Vec<ValueId> =
            captures.iter().zip(&args).filter(|(_, a)| matches!(a, BlockArg::Input(_))).map(|(&v, _)| v).collect();
        Ok((region.with_block_args(&args)?, kept))
    }

    // ---- Regions built in place (the bodies of `Loop` and `Scan`) ----

    /// Starts a region: the nodes added from now on until [`Importer::end_region`] move into it.
    pub fn begin_region(&mut self) -> RegionStart {
        RegionStart { first: tessera_ir::graph::NodeId(self.graph.num_nodes() as u32), placeholders: Vec::new() }
    }

    /// New block arguments of the region begun at `start`, one per `(name, type)`: in the
    /// enclosing graph they are the results of a `tsr.trap` that only stands for them until the
    /// region is closed (it never reaches a finished graph).
    pub fn block_args(&mut self, start: &mut RegionStart, args: &[(&str, TensorType)]) -> Vec<ValueId> {
        let results = args.iter().map(|(name, ty)| (self.unique_name(name), ty.clone())).collect();
        let trap = tessera_ir::ops::control::Trap {
            message: "a block argument of a region being imported".into(),
            types: args.iter().map(|(_, ty)| ty.clone()).collect(),
        };
        let node = self.graph.add_node_unchecked(Op::Trap(Box::new(trap)), vec![], results);
        start.placeholders.push(node);
        self.graph.node(node).outputs.clone()
    }

    /// Moves the nodes added since `start` out of the graph being built into an open region
    /// yielding `yields`: its block arguments are those [`Importer::block_args`] made, then the
    /// enclosing values it reads. On an error, pass `None` to drop what was added.
    pub fn end_region(&mut self, start: RegionStart, yields: Option<&[ValueId]>) -> Result<OpenRegion, String> {
        let (raw, captures) =
            self.graph.split_off_region(start.first, tessera_ir::ops::control::REGION_NAME, yields.unwrap_or(&[]))?;
        let placeholders = start.placeholders.iter().map(|n| n.index() - start.first.index()).collect();
        // A small constant it reads is copied in rather than captured, so it keeps folding.
        let literals =
            captures.iter().map(|&v| self.constant_of(v).filter(|t| t.len() as u64 <= FOLD_LIMIT).cloned()).collect();
        let mut live = vec![false; raw.num_values()];
        for v in raw.outputs() {
            live[v.index()] = true;
        }
        let nodes: Vec<_> = raw.nodes().map(|(_, n)| (n.inputs.clone(), n.outputs.clone())).collect();
        for (inputs, outputs) in nodes.into_iter().rev() {
            if outputs.iter().any(|v| live[v.index()]) {
                for v in inputs {
                    live[v.index()] = true;
                }
            }
        }
        Ok(OpenRegion { raw, placeholders, captures, literals, live })
    }

    /// A name for a new value derived from `onnx_name`, unique in the graph.
    fn unique_name(&self, onnx_name: &str) -> String {
        let base = sanitize(onnx_name);
        let base = if base.is_empty() { "v".to_string() } else { base };
        if !self.graph.has_name(&base) {
            return base;
        }
        (1u64..).map(|k| format!("{base}_{k}")).find(|n| !self.graph.has_name(n)).unwrap_or(base)
    }

    fn name_value(&mut self, v: ValueId, onnx_name: &str) {
        let name = self.unique_name(onnx_name);
        self.graph.rename_value(v, &name);
    }

    /// Defines the ONNX value `name` as the constant `t` (the inputs `legacy::modernize` adds).
    pub fn define_constant(&mut self, name: &str, t: Tensor) {
        let v = self.constant(t);
        self.slots.insert(name.to_string(), Slot::Value(v));
    }

    /// Defines the ONNX value `name` as `v`, named after it.
    pub fn define_value(&mut self, name: &str, v: ValueId) {
        self.name_value(v, name);
        self.slots.insert(name.to_string(), Slot::Value(v));
    }

    /// The element type of `node`'s input `i`, when it is a defined value.
    pub fn input_dtype(&self, node: &NodeProto, i: usize) -> Option<DType> {
        match self.slots.get(node.input.get(i)?)? {
            Slot::Value(v) => Some(self.graph.value(*v).ty.dtype),
            Slot::Shape { .. } => Some(DType::I64),
        }
    }

    // ---- Inputs of the current node ----

    /// The slot bound to input `i`, `None` for an omitted optional input.
    pub fn slot(&self, cx: &NodeCx, i: usize) -> BuildResult<Option<Slot>> {
        let Some(name) = cx.input_name(i) else { return Ok(None) };
        match self.slots.get(name) {
            Some(s) => Ok(Some(s.clone())),
            None => Err(BuildError::Invalid(format!("input '{name}' is not defined before the node"))),
        }
    }

    /// Input `i` as a tsr value, `None` when omitted. A shape value with symbolic entries
    /// becomes a run-time tensor here ([`Importer::dim_values`]).
    pub fn opt_value(&mut self, cx: &NodeCx, i: usize) -> BuildResult<Option<ValueId>> {
        match self.slot(cx, i)? {
            None => Ok(None),
            Some(Slot::Value(v)) => Ok(Some(v)),
            Some(Slot::Shape { elems, scalar }) => self.dim_values(&elems, scalar).map(Some),
        }
    }

    /// A shape value as a run-time int64 tensor (a scalar when `scalar`), for the computation
    /// that reads it as data (a position index `Range(0, seq) + past`, a mask length, ...).
    /// Each symbolic entry `e` is split as `P - N`, both sums of terms with positive
    /// coefficients, and each part is the length of an all-ones vector summed:
    /// `reduce_sum(broadcast(1, [P]))`. So the entry is computed from the dimensions the run
    /// binds, by ops the interpreter and the compiled path already have, in `O(P + N)` work.
    pub fn dim_values(&mut self, elems: &[SymInt], scalar: bool) -> BuildResult<ValueId> {
        let mut entries = Vec::with_capacity(elems.len());
        for e in elems {
            let (positive, negative) = e.split_signs();
            let p = self.dim_length(&positive, e)?;
            let entry = match negative.as_const() {
                Some(0) => p,
                _ => {
                    let n = self.dim_length(&negative, e)?;
                    self.binary(tessera_ir::ops::elementwise::BinaryOp::Sub, p, n)?
                }
            };
            entries.push(entry);
        }
        let made = if scalar {
            match entries.as_slice() {
                [v] => *v,
                _ => return Err(BuildError::Invalid(format!("a scalar shape value with {} entries", entries.len()))),
            }
        } else {
            let rows: Vec<ValueId> =
                entries.into_iter().map(|v| self.reshape(v, vec![Dim::Static(1)])).collect::<BuildResult<_>>()?;
            match rows.as_slice() {
                [] => self.constant(Tensor::from_i64(DType::I64, vec![0], vec![])),
                [v] => *v,
                _ => self.add(Op::Concat { axis: 0 }, &rows)?,
            }
        };
        self.size_values.insert(made, elems.to_vec());
        Ok(made)
    }

    /// `a op b` of two shape values that the sizes decide (see `compare` in the elementwise ops):
    /// both computed at run time ([`Importer::dim_values`]) and compared there; `text` says
    /// which comparison it is, for the messages of an `If` on the result.
    pub fn size_comparison(
        &mut self,
        op: tessera_ir::ops::elementwise::CompareOp,
        (a, a_scalar): (&[SymInt], bool),
        (b, b_scalar): (&[SymInt], bool),
        text: String,
    ) -> BuildResult<ValueId> {
        let entries = match (a, b) {
            ([x], [y]) if matches!(op, CompareOp::Eq | CompareOp::Ne) => Some((x.clone(), y.clone())),
            _ => None,
        };
        let (a, b) = (self.dim_values(a, a_scalar)?, self.dim_values(b, b_scalar)?);
        let holds = self.compare(op, a, b)?;
        self.size_comparisons.insert(holds, text);
        if let Some((x, y)) = entries {
            self.size_equalities.insert(holds, (x, y, op == CompareOp::Eq));
        }
        Ok(holds)
    }

    /// Whether the conditions assumed where the nodes being imported run
    /// ([`Importer::assumed_conditions`]) say that the size `dim` equals `n`.
    pub fn assumed_equal(&self, dim: &SymInt, n: i64) -> bool {
        let n = DimExpr::constant(n);
        // Ids of regions split off are reused, so an entry counts only while a compare defines it.
        let compared =
            |v: ValueId| self.graph.producer(v).is_some_and(|p| matches!(self.graph.node(p).op, Op::Compare(_)));
        self.assumed_conditions.iter().any(|(cond, value)| match self.size_equalities.get(cond) {
            Some((x, y, says_equal)) if says_equal == value && compared(*cond) => {
                (x == dim && *y == n) || (y == dim && *x == n)
            }
            _ => false,
        })
    }

    /// Records that the size comparison `holds` says `size >= n` (an assumption's check).
    pub(crate) fn record_size_lower_bound(&mut self, holds: ValueId, size: SymInt, n: i64) {
        self.size_lower_bounds.insert(holds, (size, n));
    }

    /// Whether the size `dim` is at least `n` for every size of the symbols, or by the
    /// conditions assumed where the nodes being imported run ([`Importer::assumed_conditions`]).
    pub fn known_at_least(&self, dim: &SymInt, n: i64) -> bool {
        if dim.lower_bound().is_some_and(|least| least >= n) {
            return true;
        }
        // Ids of regions split off are reused, so an entry counts only while a compare defines it.
        let compared =
            |v: ValueId| self.graph.producer(v).is_some_and(|p| matches!(self.graph.node(p).op, Op::Compare(_)));
        self.assumed_conditions.iter().any(|(cond, value)| match self.size_lower_bounds.get(cond) {
            Some((size, least)) => *value && size == dim && *least >= n && compared(*cond),
            None => false,
        })
    }

    /// That the size `dim` is at least `n`, which a slice of constant bounds or a constant
    /// modulo the size needs: `Ok` where known ([`Importer::known_at_least`]); the request to
    /// assume it, checked at run time ([`BuildError::AssumesSize`]), where it holds for every
    /// non-empty axis, the size being a multiple of some `m >= n` (Swin's padded rows,
    /// `2 * floordiv(h + 4, 8)`, are at least 2 wherever they are not 0); otherwise `refusal`,
    /// unsupported (`x[0:1000]` of a batch is 1000 rows only where the batch has that many).
    pub(crate) fn require_at_least(&self, dim: &SymInt, n: i64, refusal: impl FnOnce() -> String) -> BuildResult<()> {
        const MAX_FACTOR: i64 = 1 << 12;
        if self.known_at_least(dim, n) {
            return Ok(());
        }
        // A size is never negative where it is read (a negative extent fails where it is made).
        let non_empty_suffices =
            n <= 1 || (n <= MAX_FACTOR && (n..=MAX_FACTOR).any(|m| dim.div_exact(&DimExpr::constant(m)).is_some()));
        if !non_empty_suffices {
            return Err(BuildError::Unsupported(refusal()));
        }
        Err(BuildError::AssumesSize {
            size: dim.clone(),
            relation: ops::SizeRelation::AtLeast,
            value: n,
            refusal: refusal(),
        })
    }

    /// The first size comparison ([`Importer::size_comparison`]) that `cond` is computed from,
    /// as text, found by walking its producers in the graph being built (so through `Not`,
    /// `Cast`, `And`, reshapes); `None` when the condition depends on data only.
    pub fn size_condition(&self, cond: ValueId) -> Option<String> {
        let mut seen = std::collections::HashSet::new();
        let mut pending = vec![cond];
        while let Some(v) = pending.pop() {
            if !seen.insert(v) {
                continue;
            }
            let Some(node) = self.graph.producer(v) else { continue };
            let node = self.graph.node(node);
            // A region imported and split off frees its ids, so an id is taken for a size
            // comparison only while a compare still defines it.
            if let (Some(text), Op::Compare(_)) = (self.size_comparisons.get(&v), &node.op) {
                return Some(text.clone());
            }
            pending.extend(node.inputs.iter().copied());
        }
        None
    }

    /// `part` (a sum of terms with positive coefficients, part of the entry `whole`) as a
    /// run-time int64 scalar.
    fn dim_length(&mut self, part: &SymInt, whole: &SymInt) -> BuildResult<ValueId> {
        if let Some(n) = part.as_const() {
            return Ok(self.constant(Tensor::from_i64(DType::I64, vec![], vec![n])));
        }
        if part.lower_bound().is_none_or(|b| b < 0) {
            return Err(BuildError::Unsupported(format!(
                "computing the shape entry {whole} at run time: its part {part} may be negative"
            )));
        }
        let one = self.constant(Tensor::from_i64(DType::I64, vec![], vec![1]));
        let ones = self.broadcast(one, &[Dim::Symbolic(part.clone())])?;
        self.add(Op::Reduce { kind: tessera_ir::ops::reduce::ReduceKind::Sum, axes: vec![0], keepdims: false }, &[ones])
    }

    /// Required input `i` as a tsr value.
    pub fn value(&mut self, cx: &NodeCx, i: usize) -> BuildResult<ValueId> {
        self.opt_value(cx, i)?.ok_or_else(|| BuildError::Invalid(format!("missing required input {i}")))
    }

    pub fn ty(&self, v: ValueId) -> TensorType {
        self.graph.value(v).ty.clone()
    }

    /// The literal of `v` when a constant node defines it.
    pub fn constant_of(&self, v: ValueId) -> Option<&Tensor> {
        let node = self.graph.producer(v)?;
        match &self.graph.node(node).op {
            Op::Constant(t) => Some(t),
            _ => None,
        }
    }

    /// Input `i` as a constant tensor: `None` when omitted, unsupported when computed at run time.
    pub fn const_input(&self, cx: &NodeCx, i: usize, what: &str) -> BuildResult<Option<Tensor>> {
        let v = match self.slot(cx, i)? {
            None => return Ok(None),
            Some(Slot::Value(v)) => v,
            Some(Slot::Shape { elems, .. }) => {
                return Err(BuildError::NotConstant {
                    value: format!("{} (the shape value {})", cx.input_name(i).unwrap_or_default(), show_sym(&elems)),
                    role: what.to_string(),
                })
            }
        };
        if let Some(init) = self.parameter_initializers.get(&v) {
            let mut external = ExternalData::new(self.base_dir.as_deref());
            return tensor::decode(init, &mut external).map(Some).map_err(|e| {
                let message = format!("initializer '{}': {}", init.name(), e.message);
                if e.unsupported {
                    BuildError::Unsupported(message)
                } else {
                    BuildError::Invalid(message)
                }
            });
        }
        match self.constant_of(v) {
            Some(t) => Ok(Some(t.clone())),
            None => Err(BuildError::NotConstant {
                value: cx.input_name(i).unwrap_or_default().to_string(),
                role: what.to_string(),
            }),
        }
    }

    /// Input `i` as constant integers (any integer dtype), `None` when omitted.
    pub fn const_ints(&self, cx: &NodeCx, i: usize, what: &str) -> BuildResult<Option<Vec<i64>>> {
        match self.const_input(cx, i, what)? {
            None => Ok(None),
            Some(t) if t.dtype.is_int() => Ok(Some(t.to_i64_vec())),
            Some(t) => Err(BuildError::Invalid(format!("input '{what}' must be integers, got {}", t.dtype))),
        }
    }

    /// Input `i` as a shape-like integer list: a constant, or a shape with symbolic entries.
    pub fn shape_input(&self, cx: &NodeCx, i: usize, what: &str) -> BuildResult<Option<Vec<SymInt>>> {
        match self.slot(cx, i)? {
            Some(Slot::Shape { elems, .. }) => Ok(Some(elems)),
            // A shape value that went through a reshape to rows and back (torch's `F.pad`
            // reorders its pads so) is a run-time tensor whose entries are still known.
            Some(Slot::Value(v)) if self.constant_of(v).is_none() && self.ty(v).rank() == 1 => {
                match self.size_elements(v) {
                    Some(elems) => Ok(Some(elems)),
                    None => Ok(self.const_ints(cx, i, what)?.map(|v| v.into_iter().map(DimExpr::constant).collect())),
                }
            }
            _ => Ok(self.const_ints(cx, i, what)?.map(|v| v.into_iter().map(DimExpr::constant).collect())),
        }
    }

    /// Inputs `range` as shape values when at least one is a [`Slot::Shape`] and the others are
    /// integer constants of rank 0 or 1: each as (elements, is a scalar). `None` otherwise (the
    /// node then computes on tensors).
    pub fn shape_operands(&self, cx: &NodeCx, range: std::ops::Range<usize>) -> BuildResult<Option<Vec<ShapeOperand>>> {
        let mut out = Vec::with_capacity(range.len());
        let mut any_shape = false;
        for i in range {
            match self.slot(cx, i)? {
                Some(Slot::Shape { elems, scalar }) => {
                    any_shape = true;
                    out.push((elems, scalar));
                }
                Some(Slot::Value(v)) => match self.constant_of(v) {
                    Some(t) if t.dtype.is_int() && t.shape.len() <= 1 => {
                        out.push((t.to_i64_vec().into_iter().map(DimExpr::constant).collect(), t.shape.is_empty()))
                    }
                    _ => return Ok(None),
                },
                None => return Ok(None),
            }
        }
        Ok(any_shape.then_some(out))
    }

    /// A shape-like slot; fully known ones become int64 constants.
    pub fn shape_slot(&mut self, elems: Vec<SymInt>, scalar: bool) -> Slot {
        let known: Option<Vec<i64>> = elems.iter().map(DimExpr::as_const).collect();
        match known {
            Some(ints) => {
                let shape = if scalar { vec![] } else { vec![ints.len()] };
                Slot::Value(self.constant(Tensor::from_i64(DType::I64, shape, ints)))
            }
            None => Slot::Shape { elems, scalar },
        }
    }

    /// Decodes a tensor attribute (a `Constant`'s value, say), external data included.
    pub fn decode_tensor(&mut self, t: &super::proto::TensorProto) -> BuildResult<Tensor> {
        tensor::decode(t, &mut self.external).map_err(|e| {
            let message = format!("tensor '{}': {}", t.name(), e.message);
            if e.unsupported {
                BuildError::Unsupported(message)
            } else {
                BuildError::Invalid(message)
            }
        })
    }

    // ---- Emitting tsr ops ----

    /// Appends `op`, folding it into a constant when every operand is constant and the result is
    /// small (see [`FOLD_LIMIT`]).
    pub fn add_n(&mut self, op: Op, inputs: &[ValueId]) -> BuildResult<Vec<ValueId>> {
        if !inputs.is_empty() {
            if let Some(folded) = self.try_fold(&op, inputs) {
                return Ok(folded.into_iter().map(|t| self.constant(t)).collect());
            }
        }
        Ok(self.graph.add_node(op, inputs)?)
    }

    pub fn add(&mut self, op: Op, inputs: &[ValueId]) -> BuildResult<ValueId> {
        let mnemonic = op.mnemonic();
        let outs = self.add_n(op, inputs)?;
        match outs.as_slice() {
            [v] => Ok(*v),
            _ => Err(BuildError::Invalid(format!("tsr.{mnemonic} gave {} results, not one", outs.len()))),
        }
    }

    fn try_fold(&self, op: &Op, inputs: &[ValueId]) -> Option<Vec<Tensor>> {
        // Only ops of constants are typed here (a shape rule may refuse, or overflow on, what
        // the graph builder reports with a located error).
        let constant_source = |v: ValueId| {
            self.constant_of(v).or_else(|| {
                let node = self.graph.node(self.graph.producer(v)?);
                match (&node.op, node.inputs.as_slice()) {
                    (Op::Broadcast { .. }, [source]) => self.constant_of(*source),
                    _ => None,
                }
            })
        };
        if !inputs.iter().all(|&v| constant_source(v).is_some()) {
            return None;
        }
        let types: Vec<&TensorType> = inputs.iter().map(|&v| &self.graph.value(v).ty).collect();
        let results = op.infer(&types).ok()?;
        let small = results.iter().all(|t| t.num_elements().is_some_and(|n| n <= FOLD_LIMIT));
        if !small {
            return None;
        }
        // Operands are constants, or float constants broadcast (kept as broadcasts, below),
        // evaluated here at their full shape.
        let mut largest_constant = 0;
        let mut operands: Vec<std::borrow::Cow<Tensor>> = Vec::with_capacity(inputs.len());
        for &v in inputs {
            let (constant, full) = self.folding_operand(v)?;
            largest_constant = largest_constant.max(constant.len());
            operands.push(full);
        }
        // A float result larger than every constant it is computed from is a broadcast of
        // them (a per-channel scale or bias, a scalar): it stays a `tsr.broadcast` of the small
        // constant, not a copy at the activation's size (PP-OCR cls's batch norms and
        // hard-swish constants had made 7.6 MB of weights out of 0.5 MB, and every kernel and
        // epilogue read five activation-sized tensors instead of a few channels' values).
        let expands =
            results.iter().any(|t| t.dtype.is_float() && t.num_elements().is_some_and(|n| n > largest_constant as u64));
        if expands {
            return None;
        }
        let refs: Vec<&Tensor> = operands.iter().map(|t| t.as_ref()).collect();
        // Evaluation errors (say, integer division by zero) are left to run time, where they
        // belong to the inputs that cause them, so folding never turns a valid model invalid.
        op.eval(&refs, &results).ok()
    }

    /// `v` as a folding operand: the constant it is, or the float constant it broadcasts
    /// (with the broadcast evaluated); `None` when it is computed at run time.
    fn folding_operand(&self, v: ValueId) -> Option<(&Tensor, std::borrow::Cow<'_, Tensor>)> {
        if let Some(t) = self.constant_of(v) {
            return Some((t, std::borrow::Cow::Borrowed(t)));
        }
        let node = self.graph.node(self.graph.producer(v)?);
        let (Op::Broadcast { .. }, [source]) = (&node.op, node.inputs.as_slice()) else { return None };
        let constant = self.constant_of(*source)?;
        let ty = &self.graph.value(v).ty;
        let full = node.op.eval(&[constant], std::slice::from_ref(ty)).ok()?.pop()?;
        Some((constant, std::borrow::Cow::Owned(full)))
    }

    pub fn constant(&mut self, t: Tensor) -> ValueId {
        let name = self.graph.fresh_name();
        let ty = t.tensor_type();
        let node = self.graph.add_node_unchecked(Op::Constant(t), vec![], vec![(name, ty)]);
        self.graph.node(node).outputs[0]
    }

    /// A rank-0 constant.
    pub fn scalar(&mut self, dtype: DType, x: f64) -> ValueId {
        self.constant(Tensor::scalar(dtype, x))
    }

    /// The value `x` in the dtype and shape of `like`.
    pub fn full_like(&mut self, like: ValueId, x: f64) -> BuildResult<ValueId> {
        let ty = self.ty(like);
        let s = self.scalar(ty.dtype, x);
        self.broadcast(s, &ty.dims)
    }

    /// `v` broadcast to `dims` (NumPy trailing alignment); `v` itself when it has them already.
    pub fn broadcast(&mut self, v: ValueId, dims: &[Dim]) -> BuildResult<ValueId> {
        if self.graph.value(v).ty.dims == dims {
            return Ok(v);
        }
        self.add(Op::Broadcast { shape: dims.to_vec() }, &[v])
    }

    /// Broadcasts all of `vs` to their common NumPy shape. Two different symbols meeting in one
    /// position are unified first ([`Importer::unify_dims`]): the graph uses them as one size.
    pub fn broadcast_all(&mut self, vs: &[ValueId]) -> BuildResult<Vec<ValueId>> {
        let mut dims: Vec<Dim> = Vec::new();
        for &v in vs {
            let ty = self.ty(v);
            let rank = dims.len().max(ty.rank());
            for i in 0..rank {
                let (Some(i_dims), Some(i_ty)) =
                    ((i + dims.len()).checked_sub(rank), (i + ty.rank()).checked_sub(rank))
                else {
                    continue;
                };
                let (da, db) = (self.unified(&dims[i_dims]), self.unified(&ty.dims[i_ty]));
                self.unify_dims(&da, &db)?;
                dims[i_dims] = self.unified(&da);
            }
            let ty = self.ty(v);
            dims = broadcast_dims(&dims, &ty.dims).ok_or_else(|| {
                BuildError::Invalid(format!("operand shapes do not broadcast: {}", self.type_list(vs)))
            })?;
        }
        vs.iter().map(|&v| self.broadcast(v, &dims)).collect()
    }

    /// Makes two dimensions that the node being imported requires to be one size one symbol:
    /// where `a` and `b` are two different bare symbols, the one whose name sorts last is
    /// replaced by the other everywhere ([`Graph::substitute_symbol`]: value types, shape values
    /// in flight, regions). Anything else is left as it is (equal dimensions, a size 1 that
    /// broadcasts, expressions), for the op's own shape rule to accept or refuse.
    ///
    /// A symbol is a size the inputs give at run time; two of them the graph uses as one (a
    /// recurrent layer's batch and its initial state's, two operands of an `Add`) can only run
    /// when the inputs give them one size, so one symbol loses nothing, and a run whose inputs
    /// disagree fails binding the symbol, naming the input. Broadcasting a symbol that is 1 at
    /// run time against another is the case given up (exporters' dynamic axes do not do that).
    pub fn unify_dims(&mut self, a: &Dim, b: &Dim) -> BuildResult<()> {
        let (Dim::Symbolic(ea), Dim::Symbolic(eb)) = (a, b) else { return Ok(()) };
        let (Some(sa), Some(sb)) = (ea.as_symbol(), eb.as_symbol()) else { return Ok(()) };
        if sa == sb {
            return Ok(());
        }
        let (kept, replaced) = if sa < sb { (sa, sb) } else { (sb, sa) };
        let (kept, replaced) = (kept.to_string(), replaced.to_string());
        let by = DimExpr::symbol(&kept);
        let failed = |e: tessera_ir::symbolic::SymbolicError| {
            BuildError::Invalid(format!("unifying dimension '{replaced}' with '{kept}': {e}"))
        };
        self.graph.substitute_symbol(&replaced, &by).map_err(failed)?;
        for slot in self.slots.values_mut() {
            if let Slot::Shape { elems, .. } = slot {
                for e in elems.iter_mut() {
                    if e.symbols().contains(replaced.as_str()) {
                        *e = e.substitute_with(&|s| (s == replaced).then(|| by.clone())).map_err(failed)?;
                    }
                }
            }
        }
        self.unified_symbols.push((replaced, kept));
        Ok(())
    }

    /// `d` with every symbol [`Importer::unify_dims`] replaced so far substituted.
    pub fn unified(&self, d: &Dim) -> Dim {
        let mut d = d.clone();
        for (replaced, kept) in &self.unified_symbols {
            if let Dim::Symbolic(e) = &d {
                if e.symbols().contains(replaced.as_str()) {
                    let by = DimExpr::symbol(kept);
                    match e.substitute_with(&|s| (s == replaced).then(|| by.clone())).and_then(Dim::from_expr) {
                        Ok(next) => d = next,
                        Err(_) => return d,
                    }
                }
            }
        }
        d
    }

    fn type_list(&self, vs: &[ValueId]) -> String {
        vs.iter().map(|&v| self.graph.value(v).ty.to_string()).collect::<Vec<_>>().join(", ")
    }

    pub fn unary(&mut self, op: UnaryOp, a: ValueId) -> BuildResult<ValueId> {
        self.add(Op::Unary(op), &[a])
    }

    /// A binary op with ONNX (NumPy) broadcasting made explicit.
    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        let ab = self.broadcast_all(&[a, b])?;
        self.add(Op::Binary(op), &ab)
    }

    /// `op(a, scalar)` with the scalar in `a`'s dtype.
    pub fn binary_scalar(&mut self, op: BinaryOp, a: ValueId, x: f64) -> BuildResult<ValueId> {
        let s = self.scalar(self.graph.value(a).ty.dtype, x);
        self.binary(op, a, s)
    }

    pub fn compare(&mut self, op: CompareOp, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        let ab = self.broadcast_all(&[a, b])?;
        self.add(Op::Compare(op), &ab)
    }

    /// `where(cond, a, b)` with all three broadcast to one shape.
    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        let all = self.broadcast_all(&[cond, a, b])?;
        self.add(Op::Where, &all)
    }

    pub fn cast(&mut self, v: ValueId, to: DType) -> BuildResult<ValueId> {
        if self.graph.value(v).ty.dtype == to {
            return Ok(v);
        }
        self.add(Op::Cast { to }, &[v])
    }

    pub fn reshape(&mut self, v: ValueId, dims: Vec<Dim>) -> BuildResult<ValueId> {
        if self.graph.value(v).ty.dims == dims {
            return Ok(v);
        }
        self.add(Op::Reshape { shape: dims }, &[v])
    }
}

/// A graph output's declared element type must be what the importer computed; a mismatch means
/// the model is inconsistent (or an op was imported wrongly), and running it would mislead.
fn check_declared_output(out: &ValueInfoProto, ty: &TensorType) -> Result<(), String> {
    let Some(type_proto::Value::TensorType(tt)) = out.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok(());
    };
    if tt.elem_type.is_none() {
        return Ok(());
    }
    let declared = tensor::dtype_of(tt.elem_type()).map_err(|e| e.message)?;
    if declared != ty.dtype {
        return Err(format!("is declared {declared} but computed as {ty}"));
    }
    Ok(())
}

pub(crate) fn show_sym(elems: &[SymInt]) -> String {
    let parts: Vec<String> = elems.iter().map(DimExpr::to_string).collect();
    format!("[{}]", parts.join(", "))
}
