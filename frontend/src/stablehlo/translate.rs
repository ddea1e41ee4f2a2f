//! The StableHLO-to-tsr translation: walks `@main`'s body (inlining `func.call`s of private
//! functions), maps each op onto one or a few tsr ops, and folds at import what is constant.
//!
//! Folding is what makes control flow fit a graph without loops: a value whose operands are all
//! known is evaluated with tsr's own reference semantics ([`Op::eval`]) instead of becoming a
//! node, so a `while`'s condition over a constant counter folds to a boolean each trip and the
//! loop unrolls, and a `dynamic_slice` at a folded index becomes a plain `slice`. A `while` whose
//! condition does not fold on its first trip becomes a `tsr.loop`, and a `case` on an index
//! known only at run time nested `tsr.if`s; their regions read outer values as carried or
//! captured operands (tsr regions are isolated from above). Dimension
//! sizes JAX reads with `get_dimension_size` under shape polymorphism are carried as symbolic
//! dimensions beside the values, so `dynamic_broadcast_in_dim` gets its `?` sizes back.

use super::syntax::{Attr, Block, Op as SOp, SResult, SyntaxError, Ty, ValueRef};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::control::REGION_NAME;
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::sharding::{IoShardings, Mesh};
use tessera_ir::symbolic::DimExpr;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

/// Constants up to this many elements are folded at import; larger results stay ops.
const FOLD_LIMIT: usize = 1 << 16;
/// A `while` that still runs after this many trips is refused rather than unrolled.
const MAX_TRIPS: usize = 4096;
/// Nested `func.call`s deeper than this are refused (a recursive module).
const MAX_CALL_DEPTH: usize = 64;

/// A StableHLO value during translation: a graph value (made on first use when the value is a
/// folded constant), its folded contents if known, for integer shape values the dimension
/// sizes they hold, and for a value computed from `replica_id` its contents on every replica
/// (known at import, never a graph value: see [`replica`]).
#[derive(Clone)]
struct Val {
    id: Rc<Cell<Option<ValueId>>>,
    konst: Option<Rc<Tensor>>,
    ty: TensorType,
    sizes: Option<Vec<Dim>>,
    per_replica: Option<Rc<Vec<Tensor>>>,
}

impl Val {
    fn node(id: ValueId, ty: TensorType) -> Val {
        Val { id: Rc::new(Cell::new(Some(id))), konst: None, ty, sizes: None, per_replica: None }
    }

    fn constant(t: Tensor) -> Val {
        let sizes = (t.dtype.is_int() && t.shape.len() <= 1)
            .then(|| t.to_i64_vec().into_iter().map(|v| Dim::Static(v.max(0) as u64)).collect::<Vec<_>>());
        Val { id: Rc::new(Cell::new(None)), ty: t.tensor_type(), konst: Some(Rc::new(t)), sizes, per_replica: None }
    }

    /// A scalar or vector of dimension sizes that exists only at import (no graph value).
    fn sizes(ty: TensorType, sizes: Vec<Dim>) -> Val {
        Val { id: Rc::new(Cell::new(None)), konst: None, ty, sizes: Some(sizes), per_replica: None }
    }
}

type Env = HashMap<String, Vec<Val>>;

fn err<T>(offset: usize, message: impl Into<String>) -> SResult<T> {
    Err(SyntaxError { offset, message: message.into() })
}

/// Translates a parsed module's `@main` into a graph (not yet verified).
pub fn translate(top: &[SOp]) -> SResult<Graph> {
    let mut funcs: HashMap<String, &SOp> = HashMap::new();
    let mut module_name = None;
    let mut meshes: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<&SOp> = top.iter().collect();
    while let Some(op) = pending.pop() {
        match op.name.as_str() {
            "module" | "builtin.module" => {
                if let Some(Attr::Str(name)) = op.attr("sym_name") {
                    module_name = Some(name.clone());
                }
                pending.extend(op.regions.iter().flat_map(|r| r.ops.iter()));
            }
            "func.func" => {
                let Some(Attr::Str(name)) = op.attr("sym_name") else {
                    return err(op.offset, "func.func without a name");
                };
                if funcs.insert(name.clone(), op).is_some() {
                    return err(op.offset, format!("function @{name} is defined twice"));
                }
            }
            // A Shardy mesh: read with the shardings that name it (`@main`'s boundary).
            "sdy.mesh" => {
                if let (Some(Attr::Str(name)), Some(Attr::Opaque(axes))) = (op.attr("sym_name"), op.attr("mesh")) {
                    meshes.push((name.clone(), axes.clone()));
                }
            }
            other => return err(op.offset, format!("expected a module or func.func at the top level, found {other}")),
        }
    }
    let Some(main) = funcs.get("main").copied() else {
        return err(0, "no func.func @main: a StableHLO module as JAX writes it has its entry point in @main");
    };
    let Some(body) = main.regions.first() else { return err(main.offset, "@main has no body") };
    let name = module_name.unwrap_or_else(|| "main".to_string());
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    // Read only when a collective needs it: other modules import whatever their meshes say.
    let mesh = collective_mesh(&meshes, top);
    let mut t = Translator {
        funcs,
        graph: Graph::new(&name),
        depth: 0,
        mesh,
        sdy_meshes: meshes.clone(),
        constraint_mesh: None,
    };
    let mut args = Vec::new();
    for (position, (ssa_name, ty)) in body.args.iter().enumerate() {
        // MLIR numbers unnamed block arguments across the whole module in the generic form
        // (`%arg6`); an `argN` name is that numbering, so inputs take their position instead.
        let numbered =
            ssa_name.strip_prefix("arg").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let arg_name = &if numbered { format!("arg{position}") } else { ssa_name.clone() };
        let dims = ty
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some(n) => Dim::Static(*n),
                None => Dim::sym(&format!("{arg_name}_dim{i}")),
            })
            .collect();
        let tt = TensorType::new(ty.dtype, dims);
        let id = t.graph.add_input(arg_name, tt.clone(), InputRole::Activation);
        args.push(Val::node(id, tt));
    }
    let results = t.block(body, &Env::new(), args)?;
    let ret_offset = body.ops.last().map_or(main.offset, |op| op.offset);
    let mut outputs = Vec::new();
    for (i, v) in results.iter().enumerate() {
        let mut id = t.materialize(v, ret_offset)?;
        // An output must be its own value: an input or an earlier output passed through gets
        // an identity reshape to carry the name `outN`.
        if t.graph.inputs().contains(&id) || outputs.contains(&id) {
            id = t.add(Op::Reshape { shape: v.ty.dims.clone() }, &[id], ret_offset)?;
        }
        let out_name = format!("out{i}");
        if t.graph.has_name(&out_name) {
            return err(ret_offset, format!("@main has an argument named {out_name}, the name of its result {i}"));
        }
        t.graph.rename_value(id, &out_name);
        outputs.push(id);
    }
    t.graph.set_outputs(outputs);
    let attr_list = |key: &str| match main.attr(key) {
        Some(Attr::List(items)) => items.clone(),
        _ => Vec::new(),
    };
    super::sharding::read_io_shardings(&mut t.graph, &meshes, &attr_list("arg_attrs"), &attr_list("res_attrs"))
        .map_err(|message| SyntaxError { offset: main.offset, message })?;
    let boundary = t.graph.io_shardings().map(|io| io.mesh.clone());
    if let Some(mesh) = t.constraint_mesh_against(boundary.as_ref(), main.offset)? {
        t.graph.set_io_shardings(Some(IoShardings { mesh, inputs: Vec::new(), outputs: Vec::new() }));
    }
    Ok(t.graph)
}

/// The mesh of the module's collectives: its `sdy.mesh` (the only one, or the one named
/// `mesh`), else `replicas=N` from the module's `mhlo.num_replicas`, else none.
fn collective_mesh(meshes: &[(String, String)], top: &[SOp]) -> Result<Option<Mesh>, String> {
    let chosen = match meshes {
        [(_, axes)] => Some(axes),
        _ => meshes.iter().find(|(name, _)| name == "mesh").map(|(_, axes)| axes),
    };
    if let Some(axes) = chosen {
        return super::sharding::parse_sdy_mesh(axes).map(Some);
    }
    let replicas = top.iter().filter(|op| matches!(op.name.as_str(), "module" | "builtin.module")).find_map(|op| {
        match op.attr("mhlo.num_replicas") {
            Some(Attr::Int(n)) if *n > 1 => Some(*n as u64),
            _ => None,
        }
    });
    replicas.map(|n| Mesh::new(&[(super::collective::REPLICAS_AXIS, n)])).transpose()
}

mod constraint;
mod general_indexing;
mod manual;
mod replica;

struct Translator<'m> {
    funcs: HashMap<String, &'m SOp>,
    graph: Graph,
    depth: usize,
    /// The mesh collectives' replica groups are read over ([`super::collective`]), or why the
    /// module's mesh does not read.
    mesh: Result<Option<Mesh>, String>,
    /// The module's `sdy.mesh`es (name, axes text), which sharding constraints name.
    sdy_meshes: Vec<(String, String)>,
    /// The mesh the sharding constraints read so far name, and how it was named.
    constraint_mesh: Option<(String, Mesh)>,
}

impl<'m> Translator<'m> {
    /// Translates a block whose arguments take `args`; returns its terminator's operands.
    fn block(&mut self, block: &'m Block, outer: &Env, args: Vec<Val>) -> SResult<Vec<Val>> {
        if block.args.len() != args.len() {
            return err(
                block.offset,
                format!("region takes {} arguments but is given {}", block.args.len(), args.len()),
            );
        }
        let mut env = outer.clone();
        for ((name, ty), v) in block.args.iter().zip(args) {
            check_type(&v.ty, ty, block.offset, &format!("region argument %{name}"))?;
            env.insert(name.clone(), vec![v]);
        }
        for op in &block.ops {
            if matches!(op.name.as_str(), "return" | "func.return" | "stablehlo.return" | "sdy.return") {
                return op.operands.iter().map(|r| lookup(&env, r)).collect();
            }
            let vals = self.op(op, &env)?;
            let wanted: usize = op.results.iter().map(|(_, n)| n).sum();
            if wanted != vals.len() {
                return err(op.offset, format!("{} has {} results, but {wanted} are named", op.name, vals.len()));
            }
            for (i, (v, ty)) in vals.iter().zip(&op.result_types).enumerate() {
                check_type(&v.ty, ty, op.offset, &format!("result {i} of {}", op.name))?;
            }
            let mut rest = vals.into_iter();
            for (name, count) in &op.results {
                env.insert(name.clone(), rest.by_ref().take(*count).collect());
            }
        }
        err(block.offset, "block has no return")
    }

    fn materialize(&mut self, v: &Val, at: usize) -> SResult<ValueId> {
        if let Some(id) = v.id.get() {
            return Ok(id);
        }
        if v.per_replica.is_some() {
            return err(at, replica::AS_DATA);
        }
        let Some(t) = &v.konst else {
            return err(
                at,
                "a dimension size read with get_dimension_size is used as data; tessera computes sizes at import only",
            );
        };
        let id = self.add(Op::Constant((**t).clone()), &[], at)?;
        v.id.set(Some(id));
        Ok(id)
    }

    fn add(&mut self, op: Op, inputs: &[ValueId], at: usize) -> SResult<ValueId> {
        self.graph.add(op, inputs).map_err(|e| SyntaxError { offset: at, message: e.to_string() })
    }

    /// One tsr op on `inputs`, folded when every input is known and the result is small.
    fn emit(&mut self, op: Op, inputs: &[&Val], at: usize) -> SResult<Val> {
        if inputs.iter().any(|v| v.id.get().is_none() && v.konst.is_none()) {
            // Computed from dimension sizes (JAX's shape assertions): known only as a type, an
            // error only if something uses it as data.
            let types: Vec<&TensorType> = inputs.iter().map(|v| &v.ty).collect();
            let mut results =
                op.infer(&types).map_err(|m| SyntaxError { offset: at, message: format!("{}: {m}", op.mnemonic()) })?;
            if results.len() == 1 {
                return Ok(Val {
                    id: Rc::new(Cell::new(None)),
                    konst: None,
                    ty: results.remove(0),
                    sizes: None,
                    per_replica: None,
                });
            }
        }
        if inputs.iter().all(|v| v.konst.is_some()) {
            let tensors: Vec<&Tensor> = inputs.iter().filter_map(|v| v.konst.as_deref()).collect();
            let types: Vec<TensorType> = tensors.iter().map(|t| t.tensor_type()).collect();
            let refs: Vec<&TensorType> = types.iter().collect();
            let results =
                op.infer(&refs).map_err(|m| SyntaxError { offset: at, message: format!("{}: {m}", op.mnemonic()) })?;
            if results.len() == 1 && results[0].num_elements().is_some_and(|n| n as usize <= FOLD_LIMIT) {
                let mut out = op
                    .eval(&tensors, &results)
                    .map_err(|m| SyntaxError { offset: at, message: format!("{}: {m}", op.mnemonic()) })?;
                if out.len() == 1 {
                    return Ok(Val::constant(out.remove(0)));
                }
            }
        }
        let mut ids = Vec::with_capacity(inputs.len());
        for v in inputs {
            ids.push(self.materialize(v, at)?);
        }
        let id = self.add(op, &ids, at)?;
        let ty = self.graph.value(id).ty.clone();
        Ok(Val::node(id, ty))
    }

    fn op(&mut self, op: &'m SOp, env: &Env) -> SResult<Vec<Val>> {
        let args: Vec<Val> = op.operands.iter().map(|r| lookup(env, r)).collect::<SResult<_>>()?;
        if manual::is_manual_marker(op) {
            check_arity(op, &args, 1)?;
            return Ok(args);
        }
        if let Some(form) = constraint::form_of(op) {
            return self.with_constraint(op, env, args, form);
        }
        if args.iter().any(|v| v.per_replica.is_some()) {
            return self.replica_dependent(op, env, args);
        }
        self.op_on(op, env, args)
    }

    /// One op on operands already looked up (none of them replica-dependent).
    fn op_on(&mut self, op: &'m SOp, env: &Env, args: Vec<Val>) -> SResult<Vec<Val>> {
        let (at, name) = (op.offset, op.name.as_str());
        let arity = |n: usize| check_arity(op, &args, n);
        if let Some(b) = binary_of(name) {
            arity(2)?;
            if let Some(v) = size_arithmetic(b, &args[0], &args[1]) {
                return Ok(vec![v]);
            }
            return Ok(vec![self.emit(Op::Binary(b), &[&args[0], &args[1]], at)?]);
        }
        if let Some(u) = unary_of(name) {
            arity(1)?;
            return Ok(vec![self.emit(Op::Unary(u), &[&args[0]], at)?]);
        }
        match name {
            "stablehlo.constant"
            | "chlo.erfc"
            | "stablehlo.exponential_minus_one"
            | "stablehlo.log_plus_one"
            | "stablehlo.clamp"
            | "stablehlo.compare"
            | "stablehlo.select"
            | "stablehlo.convert"
            | "stablehlo.optimization_barrier"
            | "stablehlo.iota" => self.value_op(op, args),
            "stablehlo.broadcast_in_dim"
            | "stablehlo.dynamic_broadcast_in_dim"
            | "stablehlo.reshape"
            | "stablehlo.dynamic_reshape"
            | "stablehlo.get_dimension_size"
            | "stablehlo.transpose"
            | "stablehlo.slice"
            | "stablehlo.concatenate"
            | "stablehlo.dynamic_slice"
            | "stablehlo.dynamic_update_slice" => self.layout_op(op, args),
            "stablehlo.gather" => {
                arity(2)?;
                one(self.gather(op, &args[0], &args[1])?)
            }
            "stablehlo.while" | "stablehlo.case" | "func.call" | "call" | "stablehlo.custom_call" => {
                self.control_op(op, env, args)
            }
            "stablehlo.dot_general" => {
                arity(2)?;
                one(self.dot_general(op, &args[0], &args[1])?)
            }
            "stablehlo.reduce" => self.reduce(op, &args),
            "stablehlo.scatter" => {
                arity(3)?;
                Ok(vec![self.scatter(op, &args[0], &args[1], &args[2])?])
            }
            "stablehlo.reduce_window" => self.reduce_window(op, &args),
            _ if super::collective::is_collective(name) => {
                arity(1)?;
                let mesh = self.mesh.as_ref().map_err(|e| SyntaxError { offset: at, message: format!("{name}: {e}") })?;
                // A GSPMD shard_map body's groups are over the device grid its shardings name.
                let mesh = mesh.as_ref().or(self.constraint_mesh.as_ref().map(|(_, m)| m));
                let collective = super::collective::collective_of(op, mesh)?;
                let x = self.materialize(&args[0], at)?;
                let id = self.add(Op::Collective(collective), &[x], at)?;
                one(Val::node(id, self.graph.value(id).ty.clone()))
            }
            "stablehlo.replica_id" => {
                arity(0)?;
                one(self.replica_id(at)?)
            }
            "stablehlo.collective_broadcast" => {
                err(at, format!("{name} has no tsr counterpart: tsr moves data between ranks in group collectives, collective_permute and the send/recv that join pipeline stages"))
            }
            "sdy.manual_computation" => self.manual_computation(op, env, args),
            "stablehlo.convolution" => {
                arity(2)?;
                one(self.convolution(op, &args[0], &args[1])?)
            }
            _ if name.starts_with("stablehlo.") || name.starts_with("chlo.") || name.starts_with("mhlo.") => {
                err(at, format!("unsupported StableHLO op {name}"))
            }
            _ => err(at, format!("unknown op {name}")),
        }
    }

    // Each op-family method opens with the same two locals (location and name, arity check) over
    // its own `op` and `args`: a closure that borrows them cannot be returned by a shared helper.
    /// Constants, elementwise ops beyond one tsr op, and conversions.
    fn value_op(&mut self, op: &'m SOp, args: Vec<Val>) -> SResult<Vec<Val>> {
        let (at, name) = (op.offset, op.name.as_str());
        let arity = |n: usize| check_arity(op, &args, n);
        match name {
            "stablehlo.constant" => match op.attr("value") {
                Some(Attr::Dense(t)) => one(Val::constant(t.clone())),
                _ => err(at, "stablehlo.constant needs a dense value"),
            },
            "chlo.erfc" | "stablehlo.exponential_minus_one" | "stablehlo.log_plus_one" => {
                arity(1)?;
                let x = &args[0];
                let unit = self.splat(1.0, &x.ty, at)?;
                match name {
                    "chlo.erfc" => {
                        let e = self.emit(Op::Unary(UnaryOp::Erf), &[x], at)?;
                        one(self.emit(Op::Binary(BinaryOp::Sub), &[&unit, &e], at)?)
                    }
                    "stablehlo.exponential_minus_one" => {
                        let e = self.emit(Op::Unary(UnaryOp::Exp), &[x], at)?;
                        one(self.emit(Op::Binary(BinaryOp::Sub), &[&e, &unit], at)?)
                    }
                    _ => {
                        let s = self.emit(Op::Binary(BinaryOp::Add), &[&unit, x], at)?;
                        one(self.emit(Op::Unary(UnaryOp::Log), &[&s], at)?)
                    }
                }
            }
            "stablehlo.clamp" => {
                arity(3)?;
                let ty = args[1].ty.clone();
                let lo = self.broadcast_scalar(&args[0], &ty, at)?;
                let hi = self.broadcast_scalar(&args[2], &ty, at)?;
                let m = self.emit(Op::Binary(BinaryOp::Max), &[&args[1], &lo], at)?;
                one(self.emit(Op::Binary(BinaryOp::Min), &[&m, &hi], at)?)
            }
            "stablehlo.compare" => {
                arity(2)?;
                let direction = match op.attr("comparison_direction").or(op.attr("word0")) {
                    Some(Attr::Word(w)) => w.as_str(),
                    _ => return err(at, "stablehlo.compare needs a comparison direction"),
                };
                let c = match direction {
                    "EQ" => CompareOp::Eq,
                    "NE" => CompareOp::Ne,
                    "LT" => CompareOp::Lt,
                    "LE" => CompareOp::Le,
                    "GT" => CompareOp::Gt,
                    "GE" => CompareOp::Ge,
                    other => return err(at, format!("unknown comparison direction {other}")),
                };
                one(self.emit(Op::Compare(c), &[&args[0], &args[1]], at)?)
            }
            "stablehlo.select" => {
                arity(3)?;
                let pred = self.broadcast_scalar(&args[0], &args[1].ty, at)?;
                one(self.emit(Op::Where, &[&pred, &args[1], &args[2]], at)?)
            }
            "stablehlo.convert" => {
                arity(1)?;
                let to = op.result_types.first().map(|t| t.dtype).ok_or_else(|| SyntaxError {
                    offset: at,
                    message: "stablehlo.convert needs its result type".into(),
                })?;
                if args[0].ty.dtype == to {
                    return one(args[0].clone());
                }
                if let Some(sizes) = &args[0].sizes {
                    if to.is_int() && args[0].konst.is_none() {
                        return one(Val::sizes(args[0].ty.with_dtype(to), sizes.clone()));
                    }
                }
                one(self.emit(Op::Cast { to }, &[&args[0]], at)?)
            }
            "stablehlo.optimization_barrier" => Ok(args),
            "stablehlo.iota" => {
                let axis = int_attr(op, &["iota_dimension", "dim"])?;
                let ty = result_type(op, 0)?;
                let Some(shape) = ty.dims.iter().copied().collect::<Option<Vec<u64>>>() else {
                    return err(at, format!("iota of dynamic type {ty} is not supported"));
                };
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let probe = Tensor::zeros(ty.dtype, shape.clone());
                let t = tessera_ir::ops::indexing::eval_iota(&probe, axis, &shape)
                    .map_err(|m| SyntaxError { offset: at, message: m })?;
                one(Val::constant(t))
            }
            _ => err(at, format!("unsupported StableHLO op {name}")),
        }
    }

    /// Broadcasts, reshapes, transposes, slices and concatenation.
    fn layout_op(&mut self, op: &'m SOp, args: Vec<Val>) -> SResult<Vec<Val>> {
        let (at, name) = (op.offset, op.name.as_str());
        let arity = |n: usize| check_arity(op, &args, n);
        match name {
            "stablehlo.broadcast_in_dim" | "stablehlo.dynamic_broadcast_in_dim" => {
                let dims = ints_attr(op, &["broadcast_dimensions", "dims"])?;
                let target = if name == "stablehlo.dynamic_broadcast_in_dim" {
                    arity(2)?;
                    match &args[1].sizes {
                        Some(sizes) => sizes.clone(),
                        None => return err(at, "dynamic_broadcast_in_dim's output shape is not known at import"),
                    }
                } else {
                    arity(1)?;
                    self.result_dims(op, 0, |i| {
                        // The operand's rank is checked against `dims` later: a
                        // dimension past it gives no size here.
                        dims.iter().position(|&d| d == i as i64).and_then(|j| args[0].ty.dims.get(j).cloned())
                    })?
                };
                one(self.broadcast_in_dim(&args[0], &dims, &target, at)?)
            }
            "stablehlo.reshape" | "stablehlo.dynamic_reshape" => {
                let target = if name == "stablehlo.dynamic_reshape" {
                    arity(2)?;
                    args[1].sizes.clone().ok_or_else(|| SyntaxError {
                        offset: at,
                        message: "dynamic_reshape's output shape is not known at import".into(),
                    })?
                } else {
                    arity(1)?;
                    self.reshape_dims(op, &args[0], at)?
                };
                if let (Some(sizes), None) = (&args[0].sizes, &args[0].konst) {
                    return one(Val::sizes(TensorType::new(args[0].ty.dtype, target), sizes.clone()));
                }
                if target == args[0].ty.dims {
                    return one(args[0].clone());
                }
                one(self.emit(Op::Reshape { shape: target }, &[&args[0]], at)?)
            }
            "stablehlo.get_dimension_size" => {
                arity(1)?;
                let d = int_attr(op, &["dimension", "dim"])?;
                let Some(dim) = usize::try_from(d).ok().and_then(|d| args[0].ty.dims.get(d)) else {
                    return err(at, format!("dimension {d} is out of range for {}", args[0].ty));
                };
                let ty = TensorType::new(DType::I32, Vec::new());
                match dim {
                    Dim::Static(n) => one(Val::constant(Tensor::from_i64(DType::I32, Vec::new(), vec![*n as i64]))),
                    sym => one(Val::sizes(ty, vec![sym.clone()])),
                }
            }
            "stablehlo.transpose" => {
                arity(1)?;
                let perm = ints_attr(op, &["permutation", "dims"])?;
                one(self.emit(Op::Transpose { perm }, &[&args[0]], at)?)
            }
            "stablehlo.slice" => {
                arity(1)?;
                let (starts, ends, steps) = match op.attr("slice") {
                    Some(Attr::List(ranges)) => {
                        let mut s = (Vec::new(), Vec::new(), Vec::new());
                        for r in ranges {
                            match r {
                                Attr::Range(v) if v.len() >= 2 => {
                                    s.0.push(v[0]);
                                    s.1.push(v[1]);
                                    s.2.push(v.get(2).copied().unwrap_or(1));
                                }
                                _ => return err(at, "slice ranges must be start:limit or start:limit:stride"),
                            }
                        }
                        s
                    }
                    _ => (
                        ints_attr(op, &["start_indices"])?,
                        ints_attr(op, &["limit_indices"])?,
                        ints_attr(op, &["strides"]).unwrap_or_else(|_| vec![1; args[0].ty.rank()]),
                    ),
                };
                one(self.emit(Op::Slice { starts, ends, steps }, &[&args[0]], at)?)
            }
            "stablehlo.concatenate" => {
                let axis = int_attr(op, &["dimension", "dim"])?;
                if args.iter().all(|a| a.sizes.is_some()) && args.iter().any(|a| a.konst.is_none()) {
                    let sizes: Vec<Dim> = args.iter().flat_map(|a| a.sizes.clone().unwrap_or_default()).collect();
                    let ty = TensorType::new(args[0].ty.dtype, vec![Dim::Static(sizes.len() as u64)]);
                    return one(Val::sizes(ty, sizes));
                }
                let refs: Vec<&Val> = args.iter().collect();
                one(self.emit(Op::Concat { axis }, &refs, at)?)
            }
            "stablehlo.dynamic_slice" => {
                if args.is_empty() {
                    return arity(1).map(|_| Vec::new());
                }
                let sizes = ints_attr(op, &["slice_sizes", "sizes"])?;
                let starts = self.constant_starts(&args[0], &args[1..], &sizes, at)?;
                let ends = starts.iter().zip(&sizes).map(|(s, n)| s + n).collect();
                one(self.emit(Op::Slice { starts, ends, steps: vec![1; sizes.len()] }, &[&args[0]], at)?)
            }
            "stablehlo.dynamic_update_slice" => {
                if args.len() < 2 {
                    return arity(2).map(|_| Vec::new());
                }
                let sizes: Vec<i64> = args[1].ty.dims.iter().map(|d| d.as_static().map_or(-1, |n| n as i64)).collect();
                if sizes.contains(&-1) {
                    return err(at, "dynamic_update_slice of a dynamic-shaped update is not supported");
                }
                let starts = self.constant_starts(&args[0], &args[2..], &sizes, at)?;
                one(self.update_slice(&args[0], &args[1], &starts, 0, at)?)
            }
            _ => err(at, format!("unsupported StableHLO op {name}")),
        }
    }

    /// Loops, branches, calls and custom calls.
    fn control_op(&mut self, op: &'m SOp, env: &Env, args: Vec<Val>) -> SResult<Vec<Val>> {
        let (at, name) = (op.offset, op.name.as_str());
        let arity = |n: usize| check_arity(op, &args, n);
        match name {
            "stablehlo.while" => self.while_loop(op, env, args),
            "stablehlo.case" => {
                arity(1)?;
                let Some(last) = op.regions.len().checked_sub(1) else {
                    return err(at, "stablehlo.case without branches");
                };
                let Some(index) = args[0].konst.as_ref().map(|t| t.get_i64(0)) else {
                    return self.structured_case(op, env, &args[0]);
                };
                // Out-of-range indices run the last branch, as StableHLO specifies.
                let branch = usize::try_from(index).ok().filter(|&i| i <= last).unwrap_or(last);
                self.block(&op.regions[branch], env, Vec::new())
            }
            "func.call" | "call" => {
                let callee = match (&op.callee, op.attr("callee")) {
                    (Some(c), _) | (None, Some(Attr::Symbol(c))) => c,
                    _ => return err(at, "call without a callee"),
                };
                let Some(func) = self.funcs.get(callee.as_str()).copied() else {
                    return err(at, format!("call of unknown function @{callee}"));
                };
                let Some(body) = func.regions.first() else {
                    return err(func.offset, format!("@{callee} has no body"));
                };
                if self.depth >= MAX_CALL_DEPTH {
                    return err(at, format!("calls nest deeper than {MAX_CALL_DEPTH} (a recursive module?)"));
                }
                self.depth += 1;
                let out = self.block(body, &Env::new(), args);
                self.depth -= 1;
                out
            }
            "stablehlo.custom_call" => {
                let target = op.callee.clone().or_else(|| match op.attr("call_target_name") {
                    Some(Attr::Str(s)) => Some(s.clone()),
                    _ => None,
                });
                let target = target.unwrap_or_default();
                if matches!(target.as_str(), "SPMDFullToShardShape" | "SPMDShardToFullShape") {
                    return self.spmd_shape(op, args, target == "SPMDFullToShardShape");
                }
                if target == "shape_assertion" {
                    // JAX's check that the input shapes meet the export's constraints: checked
                    // here when it folds, else it is the run's binding of the dimensions.
                    if args.first().and_then(|a| a.konst.as_ref()).is_some_and(|t| t.get_i64(0) == 0) {
                        let message = match op.attr("error_message") {
                            Some(Attr::Str(s)) => s.clone(),
                            _ => "shape assertion failed".into(),
                        };
                        return err(at, message);
                    }
                    return Ok(Vec::new());
                }
                err(at, format!("custom_call @{target} is not supported: tessera cannot call foreign code"))
            }
            _ => err(at, format!("unsupported StableHLO op {name}")),
        }
    }

    /// A constant `value` of `like`'s type (its dimensions may be symbolic).
    fn splat(&mut self, value: f64, like: &TensorType, at: usize) -> SResult<Val> {
        let scalar = Val::constant(Tensor::scalar(like.dtype, value));
        self.broadcast_scalar(&scalar, like, at)
    }

    /// A rank-0 value broadcast to `like`'s shape; other values as they are.
    fn broadcast_scalar(&mut self, v: &Val, like: &TensorType, at: usize) -> SResult<Val> {
        if v.ty.rank() == 0 && like.rank() > 0 {
            return self.emit(Op::Broadcast { shape: like.dims.clone() }, &[v], at);
        }
        Ok(v.clone())
    }

    /// Result `index`'s dimensions from the text, `?` filled by `known(i)`.
    fn result_dims(&self, op: &SOp, index: usize, known: impl Fn(usize) -> Option<Dim>) -> SResult<Vec<Dim>> {
        let ty = result_type(op, index)?;
        ty.dims
            .iter()
            .enumerate()
            .map(|(i, d)| match (d, known(i)) {
                (Some(n), _) => Ok(Dim::Static(*n)),
                (None, Some(dim)) => Ok(dim),
                (None, None) => err(op.offset, format!("dimension {i} of {ty} is not known at import")),
            })
            .collect()
    }

    /// A reshape's target: the text's type, a single `?` solved from the element count.
    fn reshape_dims(&self, op: &SOp, x: &Val, at: usize) -> SResult<Vec<Dim>> {
        let ty = result_type(op, 0)?;
        if ty.dims.iter().all(Option::is_some) {
            return self.result_dims(op, 0, |_| None);
        }
        let unknown = ty.dims.iter().filter(|d| d.is_none()).count();
        let total = tessera_ir::types::dims_product(&x.ty.dims)
            .map_err(|e| SyntaxError { offset: at, message: e.to_string() })?;
        let known: i64 = ty.dims.iter().flatten().map(|&n| n as i64).product();
        let solved = (unknown == 1).then(|| total.div_exact(&DimExpr::constant(known))).flatten();
        let Some(solved) = solved else {
            return err(at, format!("cannot tell the dynamic dimensions of reshape to {ty} at import"));
        };
        let solved = Dim::from_expr(solved).map_err(|e| SyntaxError { offset: at, message: e.to_string() })?;
        Ok(ty.dims.iter().map(|d| d.map_or_else(|| solved.clone(), Dim::Static)).collect())
    }

    /// `broadcast_in_dim`: operand dimension `i` becomes result dimension `dims[i]`, as a
    /// transpose (when `dims` is not increasing), a reshape that inserts the new unit
    /// dimensions, and a NumPy-style broadcast.
    fn broadcast_in_dim(&mut self, x: &Val, dims: &[i64], target: &[Dim], at: usize) -> SResult<Val> {
        if dims.len() != x.ty.rank() {
            return err(at, format!("broadcast_dimensions has {} entries for operand {}", dims.len(), x.ty));
        }
        if dims.iter().any(|&d| d < 0 || d as usize >= target.len()) {
            return err(
                at,
                format!("broadcast_dimensions {dims:?} out of range for a result of rank {}", target.len()),
            );
        }
        let mut order: Vec<usize> = (0..dims.len()).collect();
        order.sort_by_key(|&i| dims[i]);
        if order.windows(2).any(|w| dims[w[0]] == dims[w[1]]) {
            return err(at, format!("broadcast_dimensions {dims:?} repeats a dimension"));
        }
        let mut v = x.clone();
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            let perm = order.iter().map(|&o| o as i64).collect();
            v = self.emit(Op::Transpose { perm }, &[&v], at)?;
        }
        let mut expanded = vec![Dim::Static(1); target.len()];
        for (k, &i) in order.iter().enumerate() {
            expanded[dims[i] as usize] = v.ty.dims[k].clone();
        }
        for (j, (e, t)) in expanded.iter().zip(target).enumerate() {
            if e != t && *e != Dim::Static(1) {
                return err(at, format!("operand dimension {e} cannot broadcast to result dimension {j} of size {t}"));
            }
        }
        if expanded != v.ty.dims {
            v = self.emit(Op::Reshape { shape: expanded.clone() }, &[&v], at)?;
        }
        if expanded != target {
            v = self.emit(Op::Broadcast { shape: target.to_vec() }, &[&v], at)?;
        }
        Ok(v)
    }

    /// Start indices that fold at import, clamped into range as StableHLO specifies.
    fn constant_starts(&self, x: &Val, indices: &[Val], sizes: &[i64], at: usize) -> SResult<Vec<i64>> {
        if indices.len() != x.ty.rank() || sizes.len() != x.ty.rank() {
            return err(
                at,
                format!(
                    "{} start indices and {} sizes for an operand of rank {}",
                    indices.len(),
                    sizes.len(),
                    x.ty.rank()
                ),
            );
        }
        let mut starts = Vec::new();
        for (i, (idx, &size)) in indices.iter().zip(sizes).enumerate() {
            let Some(start) = idx.konst.as_ref().map(|t| t.get_i64(0)) else {
                return err(
                    at,
                    format!("start index {i} is not known at import; tessera slices at fixed offsets only"),
                );
            };
            let Some(extent) = x.ty.dims[i].as_static() else {
                return err(at, format!("dynamic slicing of the dynamic dimension {i} of {} is not supported", x.ty));
            };
            if size < 0 || size as u64 > extent {
                return err(at, format!("slice size {size} does not fit dimension {i} of {}", x.ty));
            }
            starts.push(start.clamp(0, extent as i64 - size));
        }
        Ok(starts)
    }

    /// `x` with `update` written at `starts`, from dimension `d` on: slices of `x` before and
    /// after the update along `d`, concatenated around the update of the middle slice.
    fn update_slice(&mut self, x: &Val, update: &Val, starts: &[i64], d: usize, at: usize) -> SResult<Val> {
        if d == starts.len() {
            return Ok(update.clone());
        }
        let extent = x.ty.dims[d].as_static().unwrap_or(0) as i64;
        let size = update.ty.dims[d].as_static().unwrap_or(0) as i64;
        if size == extent {
            return self.update_slice(x, update, starts, d + 1, at);
        }
        let rank = starts.len();
        let full: Vec<i64> = x.ty.dims.iter().map(|d| d.as_static().unwrap_or(0) as i64).collect();
        let slice = |lo: i64, hi: i64| {
            let mut s = vec![0; rank];
            let mut e = full.clone();
            s[d] = lo;
            e[d] = hi;
            Op::Slice { starts: s, ends: e, steps: vec![1; rank] }
        };
        let (lo, hi) = (starts[d], starts[d] + size);
        let middle_x = self.emit(slice(lo, hi), &[x], at)?;
        let middle = self.update_slice(&middle_x, update, starts, d + 1, at)?;
        let mut parts = Vec::new();
        if lo > 0 {
            parts.push(self.emit(slice(0, lo), &[x], at)?);
        }
        parts.push(middle);
        if hi < extent {
            parts.push(self.emit(slice(hi, extent), &[x], at)?);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let refs: Vec<&Val> = parts.iter().collect();
        self.emit(Op::Concat { axis: d as i64 }, &refs, at)
    }

    /// The `gather` JAX emits for `table[ids]` and `jnp.take(x, ids, axis)`: one collapsed
    /// dimension indexed by the whole index vector, full slices elsewhere, offset dimensions
    /// around the index dimensions as tsr's `gather` places them.
    fn gather(&mut self, op: &SOp, data: &Val, indices: &Val) -> SResult<Val> {
        let at = op.offset;
        let Some(Attr::Dict(numbers)) = op.attr("dimension_numbers") else {
            return err(at, "stablehlo.gather needs its dimension_numbers");
        };
        let get = |k: &str| numbers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let list = |k: &str| get(k).as_ref().and_then(attr_ints).unwrap_or_default();
        let index_vector_dim = match get("index_vector_dim") {
            Some(Attr::Int(d)) => d,
            _ => indices.ty.rank() as i64,
        };
        let (collapsed, start_map) = (list("collapsed_slice_dims"), list("start_index_map"));
        let batching = list("operand_batching_dims");
        // Anything beyond one collapsed, whole-sliced dimension takes the general form.
        let general = general_indexing::IndexDims::read(op, "dimension_numbers", indices.ty.rank())?;
        let [axis] = collapsed[..] else {
            return self.general_gather(op, &general, data, indices);
        };
        if start_map != [axis] || !batching.is_empty() {
            return self.general_gather(op, &general, data, indices);
        }
        let rank = data.ty.rank();
        if axis < 0 || axis as usize >= rank {
            return err(at, format!("collapsed dimension {axis} is out of range for {}", data.ty));
        }
        let idx = self.without_index_vector_dim("gather", indices, index_vector_dim, at)?;
        let batch_rank = idx.ty.rank() as i64;
        let expected_offsets: Vec<i64> =
            (0..rank as i64).filter(|&d| d != axis).map(|d| if d < axis { d } else { d - 1 + batch_rank }).collect();
        if list("offset_dims") != expected_offsets {
            return self.general_gather(op, &general, data, indices);
        }
        let sizes = ints_attr(op, &["slice_sizes"])?;
        let full = data.ty.dims.iter().enumerate().all(|(d, n)| {
            if d as i64 == axis {
                sizes.get(d) == Some(&1)
            } else {
                n.as_static().map(|n| n as i64) == sizes.get(d).copied()
            }
        });
        if !full || sizes.len() != rank {
            return self.general_gather(op, &general, data, indices);
        }
        self.emit(Op::Gather { axis }, &[data, &idx], at)
    }

    /// `scatter` of whole slices along one operand dimension `a` (what `x.at[ids].add(v)` and
    /// `.set(v)` lower to) as tsr's `scatter` (ONNX ScatterElements) along `a`: the updates
    /// transposed so their scatter dimension sits at `a`, the indices broadcast over the slice.
    /// The update computation is `add` (returning the sum of its arguments) or replace
    /// (returning the update). StableHLO skips an update whose index is out of bounds: the
    /// operand gets one spare slice at index `n` along `a`, such indices are sent there, and
    /// the spare slice is cut off again.
    fn scatter(&mut self, op: &SOp, data: &Val, indices: &Val, updates: &Val) -> SResult<Val> {
        let at = op.offset;
        let Some(Attr::Dict(numbers)) = op.attr("scatter_dimension_numbers") else {
            return err(at, "stablehlo.scatter needs its scatter_dimension_numbers");
        };
        let get = |k: &str| numbers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let list = |k: &str| get(k).as_ref().and_then(attr_ints).unwrap_or_default();
        let (window, inserted, to_operand) =
            (list("update_window_dims"), list("inserted_window_dims"), list("scatter_dims_to_operand_dims"));
        // Anything beyond whole slices along one dimension takes the general form.
        let general = general_indexing::IndexDims::read(op, "scatter_dimension_numbers", indices.ty.rank())?;
        let reduction = scatter_reduction(op)?;
        if !list("input_batching_dims").is_empty() || !list("scatter_indices_batching_dims").is_empty() {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        }
        let rank = data.ty.rank();
        let [axis] = inserted[..] else {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        };
        if axis < 0 || axis as usize >= rank {
            return err(at, format!("inserted window dimension {axis} is out of range for {}", data.ty));
        }
        if to_operand != [axis] {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        }
        let index_vector_dim = match get("index_vector_dim") {
            Some(Attr::Int(d)) => d,
            _ => indices.ty.rank() as i64,
        };
        let idx = self.without_index_vector_dim("scatter", indices, index_vector_dim, at)?;
        if idx.ty.rank() != 1 {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        }
        // The updates: one scatter dimension and the window dimensions, one per operand
        // dimension but `axis`, in order, each whole.
        let urank = updates.ty.rank();
        let scatter_dims: Vec<usize> = (0..urank).filter(|d| !window.contains(&(*d as i64))).collect();
        let window_ok = window.len() + 1 == rank
            && window.windows(2).all(|w| w[0] < w[1])
            && window.iter().all(|&w| w >= 0 && (w as usize) < urank);
        let [u] = scatter_dims[..] else {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        };
        if !window_ok || urank != rank {
            return self.general_scatter(op, &general, data, indices, updates, reduction);
        }
        let operand_dims: Vec<usize> = (0..rank).filter(|&d| d != axis as usize).collect();
        for (&w, &d) in window.iter().zip(&operand_dims) {
            if updates.ty.dims[w as usize] != data.ty.dims[d] {
                return self.general_scatter(op, &general, data, indices, updates, reduction);
            }
        }
        let mut perm: Vec<i64> = window.clone();
        perm.insert(axis as usize, u as i64);
        let shape: Vec<Dim> = perm.iter().map(|&p| updates.ty.dims[p as usize].clone()).collect();
        let arranged = self.arrange(updates, &perm, &shape, at)?;
        let mut column: Vec<Dim> = vec![Dim::Static(1); rank];
        column[axis as usize] = idx.ty.dims[0].clone();
        let Some(static_dims) = data.ty.static_shape() else {
            return err(at, format!("scatter into {} needs a static operand shape", data.ty));
        };
        let ax = axis as usize;
        let n = static_dims[ax];
        let zero = self.splat(0.0, &idx.ty.clone(), at)?;
        let extent = self.splat(n as f64, &idx.ty.clone(), at)?;
        let not_negative = self.emit(Op::Compare(CompareOp::Ge), &[&idx, &zero], at)?;
        let below = self.emit(Op::Compare(CompareOp::Lt), &[&idx, &extent], at)?;
        let in_bounds = self.emit(Op::Binary(BinaryOp::And), &[&not_negative, &below], at)?;
        let idx = self.emit(Op::Where, &[&in_bounds, &idx, &extent], at)?;
        let idx = self.emit(Op::Reshape { shape: column }, &[&idx], at)?;
        let idx = self.emit(Op::Broadcast { shape: shape.clone() }, &[&idx], at)?;
        let mut spare_dims = data.ty.dims.clone();
        spare_dims[ax] = Dim::Static(1);
        let spare = self.splat(0.0, &TensorType::new(data.ty.dtype, spare_dims), at)?;
        let padded = self.emit(Op::Concat { axis }, &[data, &spare], at)?;
        let scattered = self.emit(Op::Scatter { axis, reduction }, &[&padded, &idx, &arranged], at)?;
        let ends: Vec<i64> = static_dims.iter().map(|&d| d as i64).collect();
        let slice = Op::Slice { starts: vec![0; rank], ends, steps: vec![1; rank] };
        self.emit(slice, &[&scattered], at)
    }

    /// `dot_general` as transposes to `[batch, free, contracting]` and `[batch, contracting,
    /// free]`, reshapes to one free and one contracting dimension, a batched `matmul`, and a
    /// reshape to `[batch, lhs free, rhs free]`.
    fn dot_general(&mut self, op: &SOp, lhs: &Val, rhs: &Val) -> SResult<Val> {
        let at = op.offset;
        let DotDims { lhs_batch: lb, rhs_batch: rb, lhs_contract: lc, rhs_contract: rc } = dot_dimension_numbers(op)?;
        let check = |dims: &[i64], v: &Val, what: &str| -> SResult<()> {
            for &d in dims {
                if d < 0 || d as usize >= v.ty.rank() {
                    return err(at, format!("{what} dimension {d} is out of range for {}", v.ty));
                }
            }
            let mut sorted = dims.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != dims.len() {
                return err(at, format!("{what} dimensions {dims:?} repeat a dimension"));
            }
            Ok(())
        };
        check(&[lb.clone(), lc.clone()].concat(), lhs, "lhs batching/contracting")?;
        check(&[rb.clone(), rc.clone()].concat(), rhs, "rhs batching/contracting")?;
        if lb.len() != rb.len() || lc.len() != rc.len() {
            return err(
                at,
                format!(
                    "dot_general pairs {} lhs with {} rhs batching and {} lhs with {} rhs contracting dimensions",
                    lb.len(),
                    rb.len(),
                    lc.len(),
                    rc.len()
                ),
            );
        }
        for (&l, &r) in lb.iter().zip(&rb).chain(lc.iter().zip(&rc)) {
            if lhs.ty.dims[l as usize] != rhs.ty.dims[r as usize] {
                return err(
                    at,
                    format!(
                        "dot_general pairs lhs dimension {l} ({}) with rhs dimension {r} ({})",
                        lhs.ty.dims[l as usize], rhs.ty.dims[r as usize]
                    ),
                );
            }
        }
        let free = |v: &Val, b: &[i64], c: &[i64]| -> Vec<i64> {
            (0..v.ty.rank() as i64).filter(|d| !b.contains(d) && !c.contains(d)).collect()
        };
        let (lf, rf) = (free(lhs, &lb, &lc), free(rhs, &rb, &rc));
        let product = |v: &Val, dims: &[i64]| -> SResult<Dim> {
            let ds: Vec<Dim> = dims.iter().map(|&d| v.ty.dims[d as usize].clone()).collect();
            let e =
                tessera_ir::types::dims_product(&ds).map_err(|e| SyntaxError { offset: at, message: e.to_string() })?;
            Dim::from_expr(e).map_err(|e| SyntaxError { offset: at, message: e.to_string() })
        };
        let batch: Vec<Dim> = lb.iter().map(|&d| lhs.ty.dims[d as usize].clone()).collect();
        let (m, k, n) = (product(lhs, &lf)?, product(lhs, &lc)?, product(rhs, &rf)?);
        let a = self.arrange(
            lhs,
            &[lb.clone(), lf.clone(), lc.clone()].concat(),
            &[batch.clone(), vec![m, k.clone()]].concat(),
            at,
        )?;
        let b = self.arrange(
            rhs,
            &[rb.clone(), rc.clone(), rf.clone()].concat(),
            &[batch.clone(), vec![k, product(rhs, &rf)?]].concat(),
            at,
        )?;
        let _ = n;
        let y = self.emit(Op::MatMul, &[&a, &b], at)?;
        let mut out: Vec<Dim> = batch;
        out.extend(lf.iter().map(|&d| lhs.ty.dims[d as usize].clone()));
        out.extend(rf.iter().map(|&d| rhs.ty.dims[d as usize].clone()));
        if out == y.ty.dims {
            return Ok(y);
        }
        self.emit(Op::Reshape { shape: out }, &[&y], at)
    }

    /// `v` transposed by `perm` (skipped when it is the identity) and reshaped to `shape`
    /// (skipped when it already has it).
    fn arrange(&mut self, v: &Val, perm: &[i64], shape: &[Dim], at: usize) -> SResult<Val> {
        let mut out = v.clone();
        if perm.iter().enumerate().any(|(i, &p)| i as i64 != p) {
            out = self.emit(Op::Transpose { perm: perm.to_vec() }, &[&out], at)?;
        }
        if out.ty.dims != shape {
            out = self.emit(Op::Reshape { shape: shape.to_vec() }, &[&out], at)?;
        }
        Ok(out)
    }

    fn reduce(&mut self, op: &SOp, args: &[Val]) -> SResult<Vec<Val>> {
        let at = op.offset;
        if args.len() != 2 {
            return err(
                at,
                format!("reduce of {} operands (a variadic reduction such as argmax) is not supported", args.len() / 2),
            );
        }
        let (x, init) = (&args[0], &args[1]);
        let kind = reducer_kind(op, x.ty.dtype)?;
        let axes = ints_attr(op, &["dimensions"])?;
        if x.ty.dtype == DType::Bool {
            // tsr reduces numbers: all / any of booleans as the minimum / maximum of 0s and 1s.
            let numbers = self.emit(Op::Cast { to: DType::I32 }, &[x], at)?;
            let r = self.emit(Op::Reduce { kind: kind.reduce, axes, keepdims: false }, &[&numbers], at)?;
            let r = self.emit(Op::Cast { to: DType::Bool }, &[&r], at)?;
            return one_or_combined(self, r, init, kind, at);
        }
        let r = self.emit(Op::Reduce { kind: kind.reduce, axes, keepdims: false }, &[x], at)?;
        one_or_combined(self, r, init, kind, at)
    }

    fn reduce_window(&mut self, op: &SOp, args: &[Val]) -> SResult<Vec<Val>> {
        let at = op.offset;
        if args.len() != 2 {
            return err(at, format!("reduce_window of {} operands is not supported", args.len() / 2));
        }
        let (x, init) = (&args[0], &args[1]);
        let kind = reducer_kind(op, x.ty.dtype)?;
        let rank = x.ty.rank();
        let window = ints_attr(op, &["window_dimensions"])?;
        let ones = vec![1; rank];
        let strides = ints_attr(op, &["window_strides"]).unwrap_or_else(|_| ones.clone());
        for name in ["base_dilations", "window_dilations"] {
            if ints_attr(op, &[name]).is_ok_and(|d| d.iter().any(|&v| v != 1)) {
                return err(at, format!("reduce_window with {name} other than 1 is not supported"));
            }
        }
        let padding = match op.attr("padding") {
            Some(Attr::Dense(t)) => t.to_i64_vec(),
            None => vec![0; 2 * rank],
            _ => return err(at, "reduce_window's padding must be a dense Nx2 tensor"),
        };
        let pads = if padding.len() == 1 { vec![padding[0]; 2 * rank] } else { padding };
        if rank != 4
            || window.len() != 4
            || strides.len() != 4
            || pads.len() != 8
            || window[..2] != [1, 1]
            || strides[..2] != [1, 1]
            || pads[..4] != [0, 0, 0, 0]
        {
            return err(at, "reduce_window is supported as 2-D pooling only: rank 4 (NCHW), windows and strides of 1 on the first two dimensions");
        }
        let w =
            Window { strides: [strides[2], strides[3]], pads: [pads[4], pads[6], pads[5], pads[7]], dilations: [1, 1] };
        let kernel = [window[2], window[3]];
        let pooled = match kind.reduce {
            ReduceKind::Max => self.emit(Op::Pool2d { kind: PoolKind::Max, kernel, window: w }, &[x], at)?,
            ReduceKind::Sum if w.pads == [0, 0, 0, 0] => {
                let avg = self.emit(Op::Pool2d { kind: PoolKind::Avg, kernel, window: w }, &[x], at)?;
                let count = self.splat((kernel[0] * kernel[1]) as f64, &avg.ty, at)?;
                self.emit(Op::Binary(BinaryOp::Mul), &[&avg, &count], at)?
            }
            _ => return err(at, "reduce_window is supported as max pooling or unpadded sum pooling only"),
        };
        one_or_combined(self, pooled, init, kind, at)
    }

    fn convolution(&mut self, op: &SOp, x: &Val, w: &Val) -> SResult<Val> {
        let at = op.offset;
        let layout = op.attr("dimension_numbers").or(op.attr("dim_numbers"));
        let words = |a: &Attr| -> Option<Vec<String>> {
            match a {
                Attr::List(items) => items
                    .iter()
                    .map(|i| match i {
                        Attr::Word(w) => Some(w.clone()),
                        Attr::Int(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            }
        };
        let layouts = match layout {
            Some(Attr::Arrow(inputs, out)) => match &**inputs {
                Attr::Pair(l, r) => words(l).zip(words(r)).zip(words(out)),
                _ => None,
            },
            _ => None,
        };
        let Some(((l, r), o)) = layouts else {
            return err(at, "convolution needs dimension numbers such as [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]");
        };
        if l != ["b", "f", "0", "1"] || r != ["o", "i", "0", "1"] || o != ["b", "f", "0", "1"] {
            return err(
                at,
                format!("convolution layout [{}]x[{}]->[{}] is not supported: tessera's conv2d is [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]", l.join(", "), r.join(", "), o.join(", ")),
            );
        }
        let window = match op.attr("window") {
            Some(Attr::Dict(entries)) => entries.clone(),
            _ => Vec::new(),
        };
        let from_window = |key: &str| window.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let ints = |a: Option<Attr>| -> Option<Vec<i64>> { a.and_then(|a| attr_ints(&a)) };
        let strides =
            ints(op.attr("window_strides").cloned()).or_else(|| ints(from_window("stride"))).unwrap_or(vec![1, 1]);
        let rhs_dilation =
            ints(op.attr("rhs_dilation").cloned()).or_else(|| ints(from_window("rhs_dilate"))).unwrap_or(vec![1, 1]);
        let lhs_dilation =
            ints(op.attr("lhs_dilation").cloned()).or_else(|| ints(from_window("lhs_dilate"))).unwrap_or(vec![1, 1]);
        let padding: Vec<i64> = match op.attr("padding").cloned().or_else(|| from_window("pad")) {
            Some(Attr::Dense(t)) if t.len() == 1 => vec![t.get_i64(0); 4],
            Some(Attr::Dense(t)) => t.to_i64_vec(),
            Some(Attr::List(rows)) => rows.iter().filter_map(attr_ints).flatten().collect(),
            _ => vec![0; 4],
        };
        if lhs_dilation.iter().any(|&d| d != 1) {
            return err(at, "convolution with lhs_dilation (a transposed convolution) is not supported");
        }
        if let Some(Attr::Int(n)) = op.attr("batch_group_count") {
            if *n != 1 {
                return err(at, "convolution with batch_group_count other than 1 is not supported");
            }
        }
        let groups = match op.attr("feature_group_count") {
            Some(Attr::Int(n)) => *n,
            _ => 1,
        };
        if strides.len() != 2 || rhs_dilation.len() != 2 || padding.len() != 4 {
            return err(at, "convolution needs 2 strides, 2 dilations and 2x2 padding (2-D only)");
        }
        let window = Window {
            strides: [strides[0], strides[1]],
            pads: [padding[0], padding[2], padding[1], padding[3]],
            dilations: [rhs_dilation[0], rhs_dilation[1]],
        };
        self.emit(Op::Conv2d { window, groups }, &[x, w], at)
    }

    /// A `while` unrolled: the condition must fold to a constant on every trip.
    fn while_loop(&mut self, op: &'m SOp, env: &Env, mut carried: Vec<Val>) -> SResult<Vec<Val>> {
        let [cond, body] = op.regions.as_slice() else {
            return err(op.offset, "stablehlo.while needs a cond and a body region");
        };
        for trip in 0..MAX_TRIPS {
            let verdict = self.block(cond, env, carried.clone())?;
            let [pred] = verdict.as_slice() else {
                return err(cond.offset, format!("while condition returns {} values, not one i1", verdict.len()));
            };
            if pred.ty.dtype != DType::Bool || pred.ty.rank() != 0 {
                return err(cond.offset, format!("while condition returns {}, not tensor<i1>", pred.ty));
            }
            let Some(go_on) = pred.konst.as_ref().map(|t| t.get_i64(0) != 0) else {
                if trip == 0 {
                    // The trip count is data: the loop stays a loop. The nodes the condition
                    // just added are left unread (dead-code elimination drops them): removing
                    // them here would leave stale ids in constants they materialized.
                    return self.structured_loop(op, env, carried);
                }
                return err(
                    op.offset,
                    "while loop whose condition folds on its first trips but not later is not supported",
                );
            };
            if !go_on {
                return Ok(carried);
            }
            let next = self.block(body, env, carried)?;
            if next.len() != op.operands.len() {
                return err(
                    body.offset,
                    format!("while body returns {} values for {} loop values", next.len(), op.operands.len()),
                );
            }
            carried = next;
        }
        err(op.offset, format!("while loop runs more than {MAX_TRIPS} trips; it is not unrolled"))
    }
}

impl<'m> Translator<'m> {
    /// A `while` whose trip count is known only at run time, as one `tsr.loop`. The carried
    /// values are its operands; every non-constant outer value the regions read (StableHLO
    /// regions may read from above, tsr regions may not) is carried too, unchanged by the body;
    /// outer constants are copied into the regions.
    fn structured_loop(&mut self, op: &'m SOp, env: &Env, carried: Vec<Val>) -> SResult<Vec<Val>> {
        let [cond, body] = op.regions.as_slice() else {
            return err(op.offset, "stablehlo.while needs a cond and a body region");
        };
        let mut free = Vec::new();
        for block in [cond, body] {
            free_names(block, &mut Vec::new(), &mut free);
        }
        let mut region_env = Env::new();
        let mut captured: Vec<Val> = Vec::new();
        for name in free {
            let Some(vals) = env.get(&name) else { continue };
            let mut inner = Vec::new();
            for v in vals {
                match &v.konst {
                    Some(t) => inner.push(Val::constant((**t).clone())),
                    None => {
                        inner.push(v.clone());
                        captured.push(v.clone());
                    }
                }
            }
            region_env.insert(name, inner);
        }
        let n_carried = carried.len();
        let mut operands = Vec::new();
        for v in carried.iter().chain(&captured) {
            operands.push(self.materialize(v, op.offset)?);
        }
        let types: Vec<TensorType> = carried.iter().chain(&captured).map(|v| v.ty.clone()).collect();
        let (cond_graph, _) = self.loop_region(cond, &region_env, &captured, &types, n_carried, false)?;
        let (body_graph, yields) = self.loop_region(body, &region_env, &captured, &types, n_carried, true)?;
        if yields != n_carried {
            return err(body.offset, format!("while body returns {yields} values for {n_carried} loop values"));
        }
        let regions = tessera_ir::ops::control::LoopRegions {
            cond: cond_graph,
            body: body_graph,
            max_trips: tessera_ir::ops::control::DEFAULT_MAX_TRIPS,
        };
        let outs = self
            .graph
            .add_node(Op::Loop(Box::new(regions)), &operands)
            .map_err(|e| SyntaxError { offset: op.offset, message: format!("stablehlo.while as {e}") })?;
        Ok(outs.iter().take(n_carried).map(|&id| Val::node(id, self.graph.value(id).ty.clone())).collect())
    }

    /// One region of a `tsr.loop` from a `while` block: block arguments for the carried values
    /// and then the captured ones (rebound in `env` by name), translated into a graph of its
    /// own. The body yields the captured values back unchanged. Returns the region and how many
    /// values the block returned.
    fn loop_region(
        &mut self,
        block: &'m Block,
        env: &Env,
        captured: &[Val],
        types: &[TensorType],
        n_carried: usize,
        is_body: bool,
    ) -> SResult<(Graph, usize)> {
        let mut yielded = 0;
        let region = self.in_fresh_region(|t| {
            let params: Vec<ValueId> = types
                .iter()
                .enumerate()
                .map(|(i, ty)| {
                    let name = if i < n_carried { format!("carried{i}") } else { format!("captured{}", i - n_carried) };
                    t.graph.add_input(&name, ty.clone(), InputRole::Activation)
                })
                .collect();
            let env = env_for_region(env, captured, &params[n_carried..], &types[n_carried..]);
            let args: Vec<Val> =
                params[..n_carried].iter().zip(types).map(|(&p, ty)| Val::node(p, ty.clone())).collect();
            let returned = t.block(block, &env, args)?;
            let mut yields = Vec::new();
            for v in &returned {
                yields.push(t.materialize(v, block.offset)?);
            }
            if is_body {
                yields.extend_from_slice(&params[n_carried..]);
            } else if returned.len() != 1 || returned[0].ty.dtype != DType::Bool || returned[0].ty.rank() != 0 {
                let got: Vec<String> = returned.iter().map(|v| v.ty.to_string()).collect();
                return err(block.offset, format!("while condition returns ({}), not one tensor<i1>", got.join(", ")));
            }
            t.graph.set_outputs(yields);
            yielded = returned.len();
            Ok(())
        })?;
        Ok((region, yielded))
    }
}

impl<'m> Translator<'m> {
    /// A `case` on an index known only at run time, as nested `tsr.if`s: `index == 0` picks
    /// branch 0, else `index == 1` branch 1, ..., and the last branch otherwise (StableHLO runs
    /// the last branch for an index out of range). Each branch reads the outer values it uses
    /// as captured operands; outer constants are copied in.
    fn structured_case(&mut self, op: &'m SOp, env: &Env, index: &Val) -> SResult<Vec<Val>> {
        if index.ty.rank() != 0 || !matches!(index.ty.dtype, DType::I32 | DType::I64 | DType::U32 | DType::U64) {
            return err(op.offset, format!("stablehlo.case index must be a tensor<i32>, got {}", index.ty));
        }
        for (k, branch) in op.regions.iter().enumerate() {
            if !branch.args.is_empty() {
                return err(
                    branch.offset,
                    format!("stablehlo.case branch {k} takes block arguments; branches take none"),
                );
            }
        }
        let mut free = Vec::new();
        for block in &op.regions {
            free_names(block, &mut Vec::new(), &mut free);
        }
        // Captured: the index first, then every non-constant outer value a branch reads.
        let mut captured: Vec<Val> = vec![index.clone()];
        let mut region_env = Env::new();
        for name in free {
            let Some(vals) = env.get(&name) else { continue };
            for v in vals {
                if v.konst.is_none() && !captured.iter().any(|c| Rc::ptr_eq(&c.id, &v.id)) {
                    captured.push(v.clone());
                }
            }
            region_env.insert(name, vals.clone());
        }
        let mut operands = Vec::new();
        for v in &captured {
            operands.push(self.materialize(v, op.offset)?);
        }
        let types: Vec<TensorType> = captured.iter().map(|v| v.ty.clone()).collect();
        let selection = self.case_region(op, &region_env, &captured, &types, 0)?;
        self.inline_region(&selection, &operands, op.offset)
    }

    /// A region over the captured values (the index first) that runs the branches from `k` on:
    /// the last branch's ops, or `tsr.if` on `index == k` between branch `k` and the region of
    /// the branches after it.
    fn case_region(
        &mut self,
        op: &'m SOp,
        env: &Env,
        captured: &[Val],
        types: &[TensorType],
        k: usize,
    ) -> SResult<Graph> {
        let branch = self.in_fresh_region(|t| t.branch_into_current(&op.regions[k], env, captured, types))?;
        if k + 1 == op.regions.len() {
            return Ok(branch);
        }
        let rest = self.case_region(op, env, captured, types, k + 1)?;
        self.in_fresh_region(|t| {
            let params: Vec<ValueId> = types
                .iter()
                .enumerate()
                .map(|(i, ty)| t.graph.add_input(&format!("captured{i}"), ty.clone(), InputRole::Activation))
                .collect();
            let pred = t.index_is(params[0], &types[0], k, op.offset)?;
            let mut operands = vec![pred];
            operands.extend_from_slice(&params);
            let regions = tessera_ir::ops::control::IfRegions { then_branch: branch, else_branch: rest };
            let outs = t
                .graph
                .add_node(Op::If(Box::new(regions)), &operands)
                .map_err(|e| SyntaxError { offset: op.offset, message: e.to_string() })?;
            t.graph.set_outputs(outs);
            Ok(())
        })
    }

    /// Runs `build` with `self.graph` a fresh region; returns that region.
    fn in_fresh_region(&mut self, build: impl FnOnce(&mut Self) -> SResult<()>) -> SResult<Graph> {
        let outer = std::mem::replace(&mut self.graph, Graph::new(REGION_NAME));
        let built = build(self);
        let region = std::mem::replace(&mut self.graph, outer);
        built.map(|()| region)
    }

    /// `indices` without their index vector dimension (which must have size 1) when they carry
    /// one at `index_vector_dim`; as they are otherwise.
    fn without_index_vector_dim(&mut self, op: &str, indices: &Val, index_vector_dim: i64, at: usize) -> SResult<Val> {
        let Some(d) = usize::try_from(index_vector_dim).ok().filter(|&d| d < indices.ty.rank()) else {
            return Ok(indices.clone());
        };
        if indices.ty.dims[d] != Dim::Static(1) {
            let message =
                format!("{op}'s index vector dimension {index_vector_dim} of {} must have size 1", indices.ty);
            return err(at, message);
        }
        let mut dims = indices.ty.dims.clone();
        dims.remove(d);
        self.emit(Op::Reshape { shape: dims }, &[indices], at)
    }

    /// `index == k` as an `i1` value of `self.graph`.
    fn index_is(&mut self, index: ValueId, ty: &TensorType, k: usize, at: usize) -> SResult<ValueId> {
        let k = self.add(Op::Constant(Tensor::scalar(ty.dtype, k as f64)), &[], at)?;
        self.add(Op::Compare(CompareOp::Eq), &[index, k], at)
    }

    /// One `case` branch translated into `self.graph` (a fresh region): inputs for the captured
    /// values, the branch's ops, its results as outputs.
    fn branch_into_current(
        &mut self,
        block: &'m Block,
        env: &Env,
        captured: &[Val],
        types: &[TensorType],
    ) -> SResult<()> {
        let params: Vec<ValueId> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| self.graph.add_input(&format!("captured{i}"), ty.clone(), InputRole::Activation))
            .collect();
        let env = env_for_region(env, captured, &params, types);
        let returned = self.block(block, &env, Vec::new())?;
        let mut yields = Vec::new();
        for v in &returned {
            yields.push(self.materialize(v, block.offset)?);
        }
        self.graph.set_outputs(yields);
        Ok(())
    }

    /// Copies `region`'s nodes into `self.graph` with its inputs bound to `args`; its outputs.
    fn inline_region(&mut self, region: &Graph, args: &[ValueId], at: usize) -> SResult<Vec<Val>> {
        let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
        for (&p, &a) in region.inputs().iter().zip(args) {
            remap.insert(p, a);
        }
        for (_, node) in region.nodes() {
            let inputs: Vec<ValueId> = node.inputs.iter().map(|v| remap[v]).collect();
            let outs = self
                .graph
                .add_node(node.op.clone(), &inputs)
                .map_err(|e| SyntaxError { offset: at, message: e.to_string() })?;
            for (&old, new) in node.outputs.iter().zip(outs) {
                remap.insert(old, new);
            }
        }
        Ok(region.outputs().iter().map(|v| Val::node(remap[v], self.graph.value(remap[v]).ty.clone())).collect())
    }
}

/// The value names `block` (and the blocks nested in it) reads without defining, in first-use
/// order, added to `free`; `defined` holds the names in scope.
fn free_names(block: &Block, defined: &mut Vec<String>, free: &mut Vec<String>) {
    let mark = defined.len();
    defined.extend(block.args.iter().map(|(name, _)| name.clone()));
    for op in &block.ops {
        for r in &op.operands {
            if !defined.contains(&r.name) && !free.contains(&r.name) {
                free.push(r.name.clone());
            }
        }
        for region in &op.regions {
            free_names(region, defined, free);
        }
        defined.extend(op.results.iter().map(|(name, _)| name.clone()));
    }
    defined.truncate(mark);
}

/// The update computation of a `scatter`: `add`, `multiply`, `maximum` or `minimum` of its two
/// arguments, or the update returned.
fn scatter_reduction(op: &SOp) -> SResult<ScatterReduction> {
    let Some(body) = op.regions.first() else { return err(op.offset, "stablehlo.scatter needs an update region") };
    let (Some((current, _)), Some((update, _))) = (body.args.first(), body.args.get(1)) else {
        return err(body.offset, "the scatter update region takes (current, update) scalars");
    };
    match body.ops.as_slice() {
        [ret]
            if matches!(ret.name.as_str(), "stablehlo.return" | "return")
                && ret.operands.len() == 1
                && ret.operands[0].name == *update =>
        {
            Ok(ScatterReduction::None)
        }
        [combine, ret]
            if matches!(ret.name.as_str(), "stablehlo.return" | "return")
                && ret.operands.len() == 1
                && combine.results.first().is_some_and(|(n, _)| *n == ret.operands[0].name) =>
        {
            let names: Vec<&str> = combine.operands.iter().map(|r| r.name.as_str()).collect();
            let both = names.len() == 2 && names.contains(&current.as_str()) && names.contains(&update.as_str());
            let reduction = match combine.name.as_str() {
                "stablehlo.add" => Some(ScatterReduction::Add),
                "stablehlo.multiply" => Some(ScatterReduction::Mul),
                "stablehlo.maximum" => Some(ScatterReduction::Max),
                "stablehlo.minimum" => Some(ScatterReduction::Min),
                _ => None,
            };
            match reduction {
                Some(r) if both => Ok(r),
                _ => err(
                    combine.offset,
                    format!(
                        "scatter update computation {} is not supported (add, multiply, maximum, minimum of the two arguments, or replace)",
                        combine.name
                    ),
                ),
            }
        }
        _ => {
            err(body.offset, "scatter update computation is not supported (add, multiply, maximum, minimum or replace)")
        }
    }
}

/// A reduction body recognized as one tsr reduction, with its identity element.
#[derive(Clone, Copy)]
struct Reducer {
    reduce: ReduceKind,
    combine: BinaryOp,
    identity: f64,
}

/// The reduction a `reduce`/`reduce_window` body computes: one `add`, `maximum`, `minimum` or
/// `multiply` of the two block arguments, returned.
fn reducer_kind(op: &SOp, dtype: DType) -> SResult<Reducer> {
    let Some(body) = op.regions.first() else { return err(op.offset, format!("{} needs a body region", op.name)) };
    let element = Ty { dtype, dims: Vec::new() };
    if body.args.len() != 2 {
        return err(body.offset, format!("{} body takes {} arguments, expected 2", op.name, body.args.len()));
    }
    for (name, ty) in &body.args {
        if *ty != element {
            return err(
                body.offset,
                format!("{} body argument %{name} has type {ty}, but the operand's elements are {element}", op.name),
            );
        }
    }
    let [combine, ret] = body.ops.as_slice() else {
        return err(body.offset, format!("{} body is not a single add, maximum, minimum or multiply", op.name));
    };
    let arg_names: Vec<&str> = body.args.iter().map(|(n, _)| n.as_str()).collect();
    let operand_names: Vec<&str> = combine.operands.iter().map(|r| r.name.as_str()).collect();
    let uses_both =
        operand_names.len() == 2 && operand_names.contains(&arg_names[0]) && operand_names.contains(&arg_names[1]);
    let returns_it =
        ret.operands.len() == 1 && combine.results.first().is_some_and(|(n, _)| *n == ret.operands[0].name);
    if !uses_both || !returns_it || !matches!(ret.name.as_str(), "stablehlo.return" | "return") {
        return err(
            combine.offset,
            format!("{} body is not a single add, maximum, minimum or multiply of its two arguments", op.name),
        );
    }
    let (reduce, combine_op, identity) = match combine.name.as_str() {
        "stablehlo.add" => (ReduceKind::Sum, BinaryOp::Add, 0.0),
        "stablehlo.maximum" => (ReduceKind::Max, BinaryOp::Max, f64::NEG_INFINITY),
        "stablehlo.minimum" => (ReduceKind::Min, BinaryOp::Min, f64::INFINITY),
        "stablehlo.multiply" => (ReduceKind::Prod, BinaryOp::Mul, 1.0),
        // All / any of booleans (JAX's bounds checks of index vectors): the minimum / maximum.
        "stablehlo.and" if dtype == DType::Bool => (ReduceKind::Min, BinaryOp::And, 1.0),
        "stablehlo.or" if dtype == DType::Bool => (ReduceKind::Max, BinaryOp::Or, 0.0),
        other => {
            return err(
                combine.offset,
                format!("{} body {other} is not supported (expected add, maximum, minimum or multiply)", op.name),
            )
        }
    };
    Ok(Reducer { reduce, combine: combine_op, identity })
}

/// The reduction `r` combined with the init value, unless the init is the identity.
fn one_or_combined(t: &mut Translator, r: Val, init: &Val, kind: Reducer, at: usize) -> SResult<Vec<Val>> {
    if init.ty.rank() != 0 || init.ty.dtype != r.ty.dtype {
        return err(
            at,
            format!("init value {} must be a scalar of the operand's element type {}", init.ty, r.ty.dtype),
        );
    }
    let is_identity = init.konst.as_ref().is_some_and(|c| {
        let v = c.get_f64(0);
        v == kind.identity
            || (kind.identity.is_infinite()
                && c.dtype.is_float()
                && v.abs() >= f32::MAX as f64
                && v.signum() == kind.identity.signum())
    });
    if is_identity {
        return Ok(vec![r]);
    }
    let b = t.broadcast_scalar(init, &r.ty, at)?;
    Ok(vec![t.emit(Op::Binary(kind.combine), &[&r, &b], at)?])
}

/// `dot_general`'s dimension numbers.
struct DotDims {
    lhs_batch: Vec<i64>,
    rhs_batch: Vec<i64>,
    lhs_contract: Vec<i64>,
    rhs_contract: Vec<i64>,
}

/// The dimension numbers from either form.
fn dot_dimension_numbers(op: &SOp) -> SResult<DotDims> {
    if let Some(Attr::Dict(entries)) = op.attr("dot_dimension_numbers") {
        let get = |k: &str| entries.iter().find(|(n, _)| n == k).and_then(|(_, v)| attr_ints(v)).unwrap_or_default();
        return Ok(DotDims {
            lhs_batch: get("lhs_batching_dimensions"),
            rhs_batch: get("rhs_batching_dimensions"),
            lhs_contract: get("lhs_contracting_dimensions"),
            rhs_contract: get("rhs_contracting_dimensions"),
        });
    }
    let pair = |k: &str| -> SResult<(Vec<i64>, Vec<i64>)> {
        match op.attr(k) {
            None => Ok((Vec::new(), Vec::new())),
            Some(Attr::Pair(l, r)) => match (attr_ints(l), attr_ints(r)) {
                (Some(l), Some(r)) => Ok((l, r)),
                _ => err(op.offset, format!("{k} must be [lhs dims] x [rhs dims]")),
            },
            Some(_) => err(op.offset, format!("{k} must be [lhs dims] x [rhs dims]")),
        }
    };
    let (lhs_batch, rhs_batch) = pair("batching_dims")?;
    let (lhs_contract, rhs_contract) = pair("contracting_dims")?;
    Ok(DotDims { lhs_batch, rhs_batch, lhs_contract, rhs_contract })
}

/// Integer-valued arithmetic on dimension sizes (`batch * 8` for a dynamic reshape's shape).
fn size_arithmetic(op: BinaryOp, a: &Val, b: &Val) -> Option<Val> {
    if a.konst.is_some() && b.konst.is_some() {
        return None;
    }
    let (sa, sb) = (a.sizes.as_ref()?, b.sizes.as_ref()?);
    if sa.len() != sb.len() {
        return None;
    }
    let mut out = Vec::new();
    for (x, y) in sa.iter().zip(sb) {
        let (x, y) = (x.to_expr().ok()?, y.to_expr().ok()?);
        let e = match op {
            BinaryOp::Add => x.add(&y).ok()?,
            BinaryOp::Sub => x.sub(&y).ok()?,
            BinaryOp::Mul => x.mul(&y).ok()?,
            _ => return None,
        };
        out.push(Dim::from_expr(e).ok()?);
    }
    Some(Val::sizes(a.ty.clone(), out))
}

/// The results of an op with one result.
fn one(v: Val) -> SResult<Vec<Val>> {
    Ok(vec![v])
}

fn check_arity(op: &SOp, args: &[Val], n: usize) -> SResult<()> {
    if args.len() == n {
        Ok(())
    } else {
        err(op.offset, format!("{} takes {n} operands, got {}", op.name, args.len()))
    }
}

fn lookup(env: &Env, r: &ValueRef) -> SResult<Val> {
    match env.get(&r.name).and_then(|group| group.get(r.index)) {
        Some(v) => Ok(v.clone()),
        None if env.contains_key(&r.name) => err(r.offset, format!("%{}#{} is out of range", r.name, r.index)),
        None => err(r.offset, format!("use of undefined value %{}", r.name)),
    }
}

/// A value's tsr type against the type the text wrote: element types and static dimensions
/// must agree (`?` in the text matches any size).
fn check_type(actual: &TensorType, written: &Ty, at: usize, what: &str) -> SResult<()> {
    let dims_agree = actual.rank() == written.dims.len()
        && actual.dims.iter().zip(&written.dims).all(|(a, w)| match (a, w) {
            (Dim::Static(a), Some(w)) => a == w,
            (_, None) => true,
            (Dim::Symbolic(_), Some(_)) => true,
        });
    if actual.dtype != written.dtype || !dims_agree {
        return err(at, format!("{what} is written as {written}, but its operands give {actual}"));
    }
    Ok(())
}

fn result_type(op: &SOp, index: usize) -> SResult<&Ty> {
    op.result_types
        .get(index)
        .ok_or_else(|| SyntaxError { offset: op.offset, message: format!("{} needs a result type", op.name) })
}

fn attr_ints(a: &Attr) -> Option<Vec<i64>> {
    match a {
        Attr::Ints(v) => Some(v.clone()),
        Attr::List(items) => items.iter().map(|i| if let Attr::Int(n) = i { Some(*n) } else { None }).collect(),
        Attr::Dense(t) if t.dtype.is_int() => Some(t.to_i64_vec()),
        _ => None,
    }
}

/// The first of `names` the op carries, as a list of integers.
fn ints_attr(op: &SOp, names: &[&str]) -> SResult<Vec<i64>> {
    for name in names {
        if let Some(a) = op.attr(name) {
            return attr_ints(a).ok_or_else(|| SyntaxError {
                offset: op.offset,
                message: format!("{} attribute {name} must be a list of integers", op.name),
            });
        }
    }
    err(op.offset, format!("{} needs the attribute {}", op.name, names[0]))
}

fn int_attr(op: &SOp, names: &[&str]) -> SResult<i64> {
    for name in names {
        match op.attr(name) {
            Some(Attr::Int(n)) => return Ok(*n),
            Some(_) => return err(op.offset, format!("{} attribute {name} must be an integer", op.name)),
            None => {}
        }
    }
    err(op.offset, format!("{} needs the attribute {}", op.name, names[0]))
}

fn binary_of(name: &str) -> Option<BinaryOp> {
    Some(match name {
        "stablehlo.add" => BinaryOp::Add,
        "stablehlo.subtract" => BinaryOp::Sub,
        "stablehlo.multiply" => BinaryOp::Mul,
        "stablehlo.divide" => BinaryOp::Div,
        "stablehlo.power" => BinaryOp::Pow,
        "stablehlo.maximum" => BinaryOp::Max,
        "stablehlo.minimum" => BinaryOp::Min,
        "stablehlo.and" => BinaryOp::And,
        "stablehlo.or" => BinaryOp::Or,
        _ => return None,
    })
}

fn unary_of(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "stablehlo.negate" => UnaryOp::Neg,
        "stablehlo.abs" => UnaryOp::Abs,
        "stablehlo.exponential" => UnaryOp::Exp,
        "stablehlo.log" => UnaryOp::Log,
        "stablehlo.sqrt" => UnaryOp::Sqrt,
        "stablehlo.rsqrt" => UnaryOp::Rsqrt,
        "stablehlo.tanh" => UnaryOp::Tanh,
        "stablehlo.logistic" => UnaryOp::Sigmoid,
        "stablehlo.sine" => UnaryOp::Sin,
        "stablehlo.cosine" => UnaryOp::Cos,
        "stablehlo.floor" => UnaryOp::Floor,
        "stablehlo.ceil" => UnaryOp::Ceil,
        "stablehlo.round_nearest_even" => UnaryOp::Round,
        "stablehlo.not" => UnaryOp::Not,
        "chlo.erf" => UnaryOp::Erf,
        "chlo.asin" => UnaryOp::Asin,
        "chlo.acos" => UnaryOp::Acos,
        "chlo.atan" => UnaryOp::Atan,
        _ => return None,
    })
}

/// `env` as a region sees it: every name holding a captured outer value is rebound to that
/// value's region input (`captured[k]` to `inputs[k]` of type `types[k]`: the block argument in
/// there), and every constant gets a fresh value (a value materializes in one graph only).
fn env_for_region(env: &Env, captured: &[Val], inputs: &[ValueId], types: &[TensorType]) -> Env {
    let mut env = env.clone();
    for vals in env.values_mut() {
        for v in vals.iter_mut() {
            if let Some(k) = captured.iter().position(|c| Rc::ptr_eq(&c.id, &v.id)) {
                *v = Val::node(inputs[k], types[k].clone());
            } else if let Some(t) = &v.konst {
                *v = Val::constant((**t).clone());
            }
        }
    }
    env
}
