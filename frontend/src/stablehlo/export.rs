//! The StableHLO writer: a verified tsr graph with static shapes as a StableHLO module that
//! JAX's MLIR bindings parse and XLA runs (`tessera opt IN --emit stablehlo`).
//!
//! Ops are written in MLIR's generic form (one spelling for every op, nothing to get wrong in
//! custom assemblies) inside a `func.func public @main` whose arguments are the graph inputs in
//! order and whose results are the graph outputs. tsr's NumPy-style broadcasting becomes
//! explicit `broadcast_in_dim`s; composite tsr ops (`softmax`, `layer_norm`, `gelu`, ...) are
//! written as the StableHLO ops JAX would emit for them. Ops without a counterpart here are
//! refused naming the node.
//!
//! A per-rank program (what `shard` makes, one stage) exports over its mesh
//! ([`export_rank_program`]) as a replicated module: `mhlo.num_replicas` is the mesh size, rank
//! `r` is replica `r`, and each collective's group (its mesh axes) becomes `replica_groups`, the
//! groups in order of their first member and members in tsr's group order (coordinates on the
//! axes, major to minor). `all_reduce`, `all_gather` and `reduce_scatter` carry a
//! `channel_handle` with `use_global_device_ids` (flattened ids, which with one partition are the
//! replica ids), as JAX writes them; `all_to_all` carries none, because XLA reads an all-to-all
//! with a channel as cross-partition and a replicated module has one partition. `all_slice`
//! becomes a `dynamic_slice` at the block of `replica_id`; `collective_permute` a
//! `collective_permute` whose `source_target_pairs` repeat the member pairs in every group
//! (without a channel, for the same reason as `all_to_all`). The mesh is written as
//! `sdy.mesh @mesh` so the import can name the axes again. A global program's
//! `tsr.sharding_constraint`s are written as `sdy.sharding_constraint` over the mesh of its
//! boundary shardings (refused without one; in a per-rank program they are identities and
//! write as their operand). Pipeline stages, which run different programs joined by
//! `send`/`recv`, export together as one module ([`pipeline`]); in a one-program export
//! `send`/`recv` are refused.

pub mod pipeline;

use std::fmt::Write as _;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::collective::{Collective, MeshAxes, Reduction};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, Sharding};
use tessera_ir::tensor::Tensor;

/// Why a graph cannot be written as StableHLO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub message: String,
}

type EResult<T> = Result<T, ExportError>;

fn refuse<T>(message: impl Into<String>) -> EResult<T> {
    Err(ExportError { message: message.into() })
}

/// A static tensor type.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    dtype: DType,
    dims: Vec<u64>,
}

impl Shape {
    fn text(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            let _ = write!(s, "{d}x");
        }
        s.push_str(self.dtype.mlir_name());
        s.push('>');
        s
    }

    fn with_dims(&self, dims: Vec<u64>) -> Shape {
        Shape { dtype: self.dtype, dims }
    }

    fn scalar(&self) -> Shape {
        self.with_dims(Vec::new())
    }

    fn rank(&self) -> usize {
        self.dims.len()
    }
}

/// A written value: its SSA name and type.
#[derive(Debug, Clone)]
struct V {
    name: String,
    shape: Shape,
}

/// Writes `graph` as a StableHLO module named after it.
pub fn export_graph(graph: &Graph) -> EResult<String> {
    export_with(graph, None)
}

/// Writes the per-rank program `graph` that every rank of `mesh` runs as a replicated StableHLO
/// module, its collectives as StableHLO collectives over replica groups (see the module docs).
/// Its arguments are one rank's blocks, so boundary shardings are not written.
pub fn export_rank_program(graph: &Graph, mesh: &Mesh) -> EResult<String> {
    export_with(graph, Some(mesh))
}

fn export_with(graph: &Graph, mesh: Option<&Mesh>) -> EResult<String> {
    // Boundary shardings go back as Shardy's, over one `sdy.mesh @mesh`.
    let io = if mesh.is_some() { None } else { graph.io_shardings() };
    let mut w = Writer {
        body: String::new(),
        next: 0,
        values: vec![None; graph.num_values()],
        mesh: mesh.cloned(),
        io_mesh: io.map(|io| io.mesh.clone()),
        channels: 0,
    };
    let mut params = Vec::new();
    let sdy = |s: Option<&Sharding>| -> EResult<String> {
        match s {
            None => Ok(String::new()),
            Some(s) if s.partial.is_some() => {
                refuse(format!("the boundary sharding {s} is partial; StableHLO boundaries are not"))
            }
            Some(s) => Ok(format!(" {{sdy.sharding = {}}}", super::sharding::sdy_sharding_text("mesh", s))),
        }
    };
    for (i, &id) in graph.inputs().iter().enumerate() {
        let shape = static_shape(graph, id)?;
        let sharding = sdy(io.and_then(|io| io.input(&graph.value(id).name)))?;
        params.push(format!("%arg{i}: {}{sharding}", shape.text()));
        w.values[id.index()] = Some(V { name: format!("%arg{i}"), shape });
    }
    w.nodes(graph)?;
    let outputs: Vec<V> = graph.outputs().iter().map(|&v| w.value(v)).collect::<EResult<_>>()?;
    let module_name = module_name(graph);
    let result_types: Vec<String> = outputs.iter().map(|v| v.shape.text()).collect();
    let results = result_types
        .iter()
        .enumerate()
        .map(|(i, ty)| Ok(format!("{ty}{}", sdy(io.and_then(|io| io.output(i)))?)))
        .collect::<EResult<Vec<String>>>()?;
    let mut out = String::new();
    match mesh {
        Some(mesh) => replicated_module_header(&mut out, &module_name, mesh),
        None => {
            let _ = writeln!(out, "module @{module_name} {{");
        }
    }
    if let Some(io) = io {
        let _ = writeln!(out, "  sdy.mesh @mesh = <{}>", super::sharding::sdy_mesh_text(&io.mesh));
    }
    close_module(&mut out, &params, &results, &w.body, &outputs);
    Ok(out)
}

/// `@main` with arguments `params`, result types `results` (each with its attributes), the ops
/// `body` and the return of `outputs`; then the end of the module.
fn close_module(out: &mut String, params: &[String], results: &[String], body: &str, outputs: &[V]) {
    let _ = writeln!(out, "  func.func public @main({}) -> ({}) {{", params.join(", "), results.join(", "));
    out.push_str(body);
    let names: Vec<&str> = outputs.iter().map(|v| v.name.as_str()).collect();
    let types: Vec<String> = outputs.iter().map(|v| v.shape.text()).collect();
    let _ = writeln!(out, "    \"func.return\"({}) : ({}) -> ()", names.join(", "), types.join(", "));
    out.push_str("  }\n}\n");
}

/// `e` located at node `node_id` of `graph`.
fn in_node(graph: &Graph, node_id: NodeId, e: ExportError) -> ExportError {
    let result = match name_of(graph, node_id) {
        name if name.is_empty() => String::new(),
        name => format!(", result %{name}"),
    };
    let op = graph.node(node_id).op.mnemonic();
    ExportError { message: format!("node {} (tsr.{op}{result}): {}", node_id.index(), e.message) }
}

/// The module name for `graph`: its name with everything but letters, digits and `_` as `_`.
fn module_name(graph: &Graph) -> String {
    let name: String =
        graph.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.is_empty() {
        "tessera".to_string()
    } else {
        name
    }
}

/// The opening of a module every replica of `mesh` runs (one partition), with the mesh written
/// as `sdy.mesh @mesh` so the import can name its axes again.
fn replicated_module_header(out: &mut String, module_name: &str, mesh: &Mesh) {
    let _ = writeln!(
        out,
        "module @{module_name} attributes {{mhlo.num_partitions = 1 : i32, mhlo.num_replicas = {} : i32}} {{",
        mesh.num_devices()
    );
    let _ = writeln!(out, "  sdy.mesh @mesh = <{}>", super::sharding::sdy_mesh_text(mesh));
}

fn name_of(graph: &Graph, node: NodeId) -> String {
    graph.node(node).outputs.first().map_or_else(String::new, |&v| graph.value(v).name.clone())
}

fn static_shape(graph: &Graph, v: ValueId) -> EResult<Shape> {
    let ty = &graph.value(v).ty;
    match ty.static_shape() {
        Some(dims) => Ok(Shape { dtype: ty.dtype, dims }),
        None => refuse(format!(
            "%{} has the symbolic type {ty}; bind its dimensions with --dim to export",
            graph.value(v).name
        )),
    }
}

fn ints(values: impl IntoIterator<Item = i64>) -> String {
    let list: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    if list.is_empty() {
        "array<i64>".to_string()
    } else {
        format!("array<i64: {}>", list.join(", "))
    }
}

fn list(values: &[i64]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("[{}]", items.join(", "))
}

struct Writer {
    body: String,
    next: usize,
    values: Vec<Option<V>>,
    /// The mesh of a per-rank program; collectives are refused without one.
    mesh: Option<Mesh>,
    /// The mesh of a global program's boundary shardings (written as `sdy.mesh @mesh`), which
    /// its sharding constraints name.
    io_mesh: Option<Mesh>,
    /// Channel handles handed out so far (each collective gets its own, from 1).
    channels: u64,
}

impl Writer {
    /// Writes every node of `graph`, whose inputs are already bound.
    fn nodes(&mut self, graph: &Graph) -> EResult<()> {
        for (node_id, _) in graph.nodes() {
            self.graph_node(graph, node_id)?;
        }
        Ok(())
    }

    /// Writes node `node_id` of `graph`, whose inputs are already bound, and binds its results.
    fn graph_node(&mut self, graph: &Graph, node_id: NodeId) -> EResult<()> {
        let node = graph.node(node_id);
        let inputs: Vec<V> = node.inputs.iter().map(|&v| self.value(v)).collect::<EResult<_>>()?;
        let results: Vec<Shape> = node.outputs.iter().map(|&v| static_shape(graph, v)).collect::<EResult<_>>()?;
        let written = self.node(&node.op, &inputs, &results).map_err(|e| in_node(graph, node_id, e))?;
        for (&out, v) in node.outputs.iter().zip(written) {
            self.values[out.index()] = Some(v);
        }
        Ok(())
    }

    /// A writer for a region nested in this one's body: fresh names continue this writer's,
    /// values bound as `values` (indexed by the region's graph).
    fn nested(&self, values: Vec<Option<V>>) -> Writer {
        Writer {
            body: String::new(),
            next: self.next,
            values,
            mesh: self.mesh.clone(),
            io_mesh: self.io_mesh.clone(),
            channels: self.channels,
        }
    }

    /// Takes back the names and channels a nested writer handed out; its region's text as
    /// StableHLO writes it: `{ [^bb0(args):] ops "stablehlo.return"(yields) }`.
    fn close_region(&mut self, sub: Writer, block_args: &[String], yields: &[V]) -> String {
        self.next = sub.next;
        self.channels = sub.channels;
        let names: Vec<&str> = yields.iter().map(|v| v.name.as_str()).collect();
        let types: Vec<String> = yields.iter().map(|v| v.shape.text()).collect();
        let header =
            if block_args.is_empty() { String::new() } else { format!("    ^bb0({}):\n", block_args.join(", ")) };
        format!(
            "{{\n{header}{}    \"stablehlo.return\"({}) : ({}) -> ()\n    }}",
            sub.body,
            names.join(", "),
            types.join(", ")
        )
    }

    /// A region as StableHLO writes it: `{ [^bb0(args):] ops "stablehlo.return"(yields) }`.
    /// With `captured`, the region's inputs are those outer values (`case` branches take no
    /// block arguments); else they become block arguments. A `cond` region's one-element
    /// condition is reshaped to the `tensor<i1>` `while` wants.
    fn region(&mut self, g: &Graph, captured: Option<&[V]>, cond: bool) -> EResult<String> {
        let mut sub = self.nested(vec![None; g.num_values()]);
        let mut args = Vec::new();
        for (i, &id) in g.inputs().iter().enumerate() {
            let v = match captured {
                Some(outer) => outer.get(i).cloned().ok_or_else(|| ExportError {
                    message: format!("the region reads {} values but {} are captured", g.inputs().len(), outer.len()),
                })?,
                None => {
                    let shape = static_shape(g, id)?;
                    let name = sub.fresh();
                    args.push(format!("{name}: {}", shape.text()));
                    V { name, shape }
                }
            };
            sub.values[id.index()] = Some(v);
        }
        sub.nodes(g)?;
        let mut yields: Vec<V> = g.outputs().iter().map(|&v| sub.value(v)).collect::<EResult<_>>()?;
        if cond {
            if let Some(first) = yields.first_mut().filter(|v| v.shape.rank() > 0) {
                let scalar = first.shape.scalar();
                *first = sub.op("stablehlo.reshape", &[&first.clone()], "", &scalar);
            }
        }
        Ok(self.close_region(sub, &args, &yields))
    }

    /// An op with regions: `%n:k = "name"(operands) (regions) : (types) -> (types)`.
    fn region_op(&mut self, name: &str, operands: &[&V], regions: &[String], results: &[Shape]) -> Vec<V> {
        let out = self.fresh();
        let names: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let types: Vec<String> = operands.iter().map(|v| v.shape.text()).collect();
        let result_types: Vec<String> = results.iter().map(Shape::text).collect();
        let _ = writeln!(
            self.body,
            "    {out}:{} = \"{name}\"({}) ({}) : ({}) -> ({})",
            results.len(),
            names.join(", "),
            regions.join(", "),
            types.join(", "),
            result_types.join(", ")
        );
        results.iter().enumerate().map(|(i, shape)| V { name: format!("{out}#{i}"), shape: shape.clone() }).collect()
    }

    fn value(&self, id: ValueId) -> EResult<V> {
        match self.values.get(id.index()).cloned().flatten() {
            Some(v) => Ok(v),
            None => refuse(format!("value {} is used before it is defined", id.index())),
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%{}", self.next - 1)
    }

    /// One generic op line: `%n = "name"(operands) <{props}> : (types) -> result`.
    fn op(&mut self, name: &str, operands: &[&V], props: &str, result: &Shape) -> V {
        let out = self.fresh();
        let names: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let types: Vec<String> = operands.iter().map(|v| v.shape.text()).collect();
        let props = if props.is_empty() { String::new() } else { format!(" <{{{props}}}>") };
        let _ = writeln!(
            self.body,
            "    {out} = \"{name}\"({}){props} : ({}) -> {}",
            names.join(", "),
            types.join(", "),
            result.text()
        );
        V { name: out, shape: result.clone() }
    }

    fn constant(&mut self, t: &Tensor) -> V {
        let literal = tessera_ir::mlir::print::dense_literal(t);
        let shape = Shape { dtype: t.dtype, dims: t.shape.iter().map(|&d| d as u64).collect() };
        self.op("stablehlo.constant", &[], &format!("value = {literal}"), &shape)
    }

    /// `value` of `like`'s element type, broadcast to its shape.
    fn splat(&mut self, value: f64, like: &Shape) -> V {
        let scalar = self.constant(&Tensor::scalar(like.dtype, value));
        self.broadcast_to(&scalar, &like.dims)
    }

    /// NumPy-style broadcast (trailing dimensions align, 1 stretches) to `dims`.
    fn broadcast_to(&mut self, v: &V, dims: &[u64]) -> V {
        if v.shape.dims == dims {
            return v.clone();
        }
        let offset = dims.len().saturating_sub(v.shape.rank());
        let map = ints((0..v.shape.rank()).map(|i| (offset + i) as i64));
        self.op(
            "stablehlo.broadcast_in_dim",
            &[v],
            &format!("broadcast_dimensions = {map}"),
            &v.shape.with_dims(dims.to_vec()),
        )
    }

    /// `v` (the result of reducing `axes` away) broadcast back to `dims`.
    fn unreduce(&mut self, v: &V, axes: &[usize], dims: &[u64]) -> V {
        let kept = ints((0..dims.len()).filter(|d| !axes.contains(d)).map(|d| d as i64));
        self.op(
            "stablehlo.broadcast_in_dim",
            &[v],
            &format!("broadcast_dimensions = {kept}"),
            &v.shape.with_dims(dims.to_vec()),
        )
    }

    fn binary(&mut self, name: &str, a: &V, b: &V, dims: &[u64]) -> V {
        let a = self.broadcast_to(a, dims);
        let b = self.broadcast_to(b, dims);
        let shape = a.shape.clone();
        self.op(name, &[&a, &b], "", &shape)
    }

    fn unary(&mut self, name: &str, x: &V) -> V {
        let shape = x.shape.clone();
        self.op(name, &[x], "", &shape)
    }

    /// `reduce` over `axes` with the body `combine` and the initial value `init`.
    fn reduce(&mut self, x: &V, axes: &[usize], combine: &str, init: f64) -> V {
        let init_v = self.constant(&Tensor::scalar(x.shape.dtype, init));
        let dims: Vec<u64> =
            x.shape.dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
        let result = x.shape.with_dims(dims);
        let scalar = x.shape.scalar().text();
        let (out, a, b, c) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
        let axes_attr = ints(axes.iter().map(|&a| a as i64));
        let _ = writeln!(
            self.body,
            "    {out} = \"stablehlo.reduce\"({}, {}) <{{dimensions = {axes_attr}}}> ({{\n    ^bb0({a}: {scalar}, {b}: {scalar}):\n      {c} = \"{combine}\"({a}, {b}) : ({scalar}, {scalar}) -> {scalar}\n      \"stablehlo.return\"({c}) : ({scalar}) -> ()\n    }}) : ({}, {scalar}) -> {}",
            x.name,
            init_v.name,
            x.shape.text(),
            result.text()
        );
        V { name: out, shape: result }
    }

    /// The mean over `axes`, broadcast back to `x`'s shape.
    fn mean_keep(&mut self, x: &V, axes: &[usize]) -> V {
        let sum = self.reduce(x, axes, "stablehlo.add", 0.0);
        let count: u64 = axes.iter().map(|&a| x.shape.dims[a]).product();
        let n = self.splat(count as f64, &sum.shape);
        let mean = self.binary("stablehlo.divide", &sum, &n, &sum.shape.dims.clone());
        self.unreduce(&mean, axes, &x.shape.dims)
    }

    /// `tsr.loop` as `stablehlo.while`, `tsr.if` as `stablehlo.case`.
    fn control(&mut self, op: &Op, x: &[V], results: &[Shape]) -> EResult<Vec<V>> {
        match op {
            Op::Loop(regions) => {
                let cond = self.region(&regions.cond, None, true)?;
                let body = self.region(&regions.body, None, false)?;
                let operands: Vec<&V> = x.iter().collect();
                Ok(self.region_op("stablehlo.while", &operands, &[cond, body], results))
            }
            Op::If(regions) => {
                // `case` runs branch `index`, the last one for an index out of range: the
                // condition as an i32 (1 when true) picks (else, then).
                let scalar = x[0].shape.scalar();
                let flag = if x[0].shape.rank() > 0 {
                    self.op("stablehlo.reshape", &[&x[0]], "", &scalar)
                } else {
                    x[0].clone()
                };
                let index = self.op("stablehlo.convert", &[&flag], "", &Shape { dtype: DType::I32, dims: Vec::new() });
                let captured = &x[1..];
                let else_branch = self.region(&regions.else_branch, Some(captured), false)?;
                let then_branch = self.region(&regions.then_branch, Some(captured), false)?;
                Ok(self.region_op("stablehlo.case", &[&index], &[else_branch, then_branch], results))
            }
            _ => refuse("not a control-flow op"),
        }
    }

    /// The StableHLO for one tsr node; one value per result.
    fn node(&mut self, op: &Op, x: &[V], results: &[Shape]) -> EResult<Vec<V>> {
        if let Op::Collective(c) = op {
            return self.collective(c, x, results);
        }
        let out = results.first().cloned().ok_or_else(|| ExportError { message: "node has no results".into() })?;
        let one = |v: V| Ok(vec![v]);
        match op {
            Op::Constant(t) => one(self.constant(t)),
            Op::Loop(_) | Op::If(_) => self.control(op, x, results),
            Op::Collective(c) => self.collective(c, x, results),
            Op::Unary(u) => one(self.unary_op(*u, &x[0])),
            Op::Binary(b) => {
                let name = match b {
                    BinaryOp::Add => "stablehlo.add",
                    BinaryOp::Sub => "stablehlo.subtract",
                    BinaryOp::Mul => "stablehlo.multiply",
                    BinaryOp::Div => "stablehlo.divide",
                    BinaryOp::Pow => "stablehlo.power",
                    BinaryOp::Max => "stablehlo.maximum",
                    BinaryOp::Min => "stablehlo.minimum",
                    BinaryOp::And => "stablehlo.and",
                    BinaryOp::Or | BinaryOp::BitOr => "stablehlo.or",
                    BinaryOp::BitAnd => "stablehlo.and",
                    BinaryOp::BitXor => "stablehlo.xor",
                    // StableHLO reads the amount as unsigned, so an amount outside 0..width
                    // gives 0 (or -1 arithmetic right of a negative value), as tsr defines it.
                    BinaryOp::ShiftLeft => "stablehlo.shift_left",
                    BinaryOp::ShiftRight if x[0].shape.dtype.is_unsigned() => "stablehlo.shift_right_logical",
                    BinaryOp::ShiftRight => "stablehlo.shift_right_arithmetic",
                };
                one(self.binary(name, &x[0], &x[1], &out.dims))
            }
            Op::Compare(c) => {
                let direction = match c {
                    CompareOp::Eq => "EQ",
                    CompareOp::Ne => "NE",
                    CompareOp::Lt => "LT",
                    CompareOp::Le => "LE",
                    CompareOp::Gt => "GT",
                    CompareOp::Ge => "GE",
                };
                let kind = match x[0].shape.dtype {
                    d if d.is_float() => "FLOAT",
                    DType::Bool => "UNSIGNED",
                    _ => "SIGNED",
                };
                let (a, b) = (self.broadcast_to(&x[0], &out.dims), self.broadcast_to(&x[1], &out.dims));
                let props = format!("compare_type = #stablehlo<comparison_type {kind}>, comparison_direction = #stablehlo<comparison_direction {direction}>");
                one(self.op("stablehlo.compare", &[&a, &b], &props, &out))
            }
            Op::Where => {
                let c = self.broadcast_to(&x[0], &out.dims);
                let (a, b) = (self.broadcast_to(&x[1], &out.dims), self.broadcast_to(&x[2], &out.dims));
                one(self.op("stablehlo.select", &[&c, &a, &b], "", &out))
            }
            Op::Cast { .. } => one(self.op("stablehlo.convert", &[&x[0]], "", &out)),
            Op::MatMul => one(self.matmul(&x[0], &x[1], &out)),
            Op::Softmax { axis } => {
                let ax = axis_index(*axis, x[0].shape.rank())?;
                let m = self.reduce(&x[0], &[ax], "stablehlo.maximum", f64::NEG_INFINITY);
                let m = self.unreduce(&m, &[ax], &out.dims);
                let shifted = self.binary("stablehlo.subtract", &x[0], &m, &out.dims);
                let e = self.unary("stablehlo.exponential", &shifted);
                let s = self.reduce(&e, &[ax], "stablehlo.add", 0.0);
                let s = self.unreduce(&s, &[ax], &out.dims);
                one(self.binary("stablehlo.divide", &e, &s, &out.dims))
            }
            Op::LayerNorm { axis, epsilon } | Op::RmsNorm { axis, epsilon } => self.norm(op, *axis, *epsilon, x, &out),
            Op::Reduce { kind, axes, keepdims } => {
                let rank = x[0].shape.rank();
                let mut axes: Vec<usize> = axes.iter().map(|&a| axis_index(a, rank)).collect::<EResult<_>>()?;
                axes.sort_unstable();
                axes.dedup();
                let reduced = match kind {
                    ReduceKind::Sum => self.reduce(&x[0], &axes, "stablehlo.add", 0.0),
                    ReduceKind::Max => self.reduce(&x[0], &axes, "stablehlo.maximum", f64::NEG_INFINITY),
                    ReduceKind::Min => self.reduce(&x[0], &axes, "stablehlo.minimum", f64::INFINITY),
                    ReduceKind::Prod => self.reduce(&x[0], &axes, "stablehlo.multiply", 1.0),
                    ReduceKind::Mean => {
                        let sum = self.reduce(&x[0], &axes, "stablehlo.add", 0.0);
                        let count: u64 = axes.iter().map(|&a| x[0].shape.dims[a]).product();
                        let n = self.splat(count as f64, &sum.shape);
                        self.binary("stablehlo.divide", &sum, &n, &sum.shape.dims.clone())
                    }
                };
                if *keepdims {
                    return one(self.op("stablehlo.reshape", &[&reduced], "", &out));
                }
                one(reduced)
            }
            Op::Broadcast { .. } => one(self.broadcast_to(&x[0], &out.dims)),
            Op::Reshape { .. } => one(self.op("stablehlo.reshape", &[&x[0]], "", &out)),
            Op::ShardingConstraint { sharding } => one(self.sharding_constraint(sharding, &x[0], &out)?),
            Op::Transpose { perm } => one(self.op(
                "stablehlo.transpose",
                &[&x[0]],
                &format!("permutation = {}", ints(perm.iter().copied())),
                &out,
            )),
            Op::Slice { starts, ends, steps } => one(self.slice(&x[0], starts, ends, steps, &out)?),
            Op::Concat { axis } => {
                let ax = axis_index(*axis, out.rank())?;
                let refs: Vec<&V> = x.iter().collect();
                one(self.op("stablehlo.concatenate", &refs, &format!("dimension = {ax} : i64"), &out))
            }
            Op::Split { axis, .. } => {
                let ax = axis_index(*axis, x[0].shape.rank())?;
                let mut start = 0i64;
                let mut pieces = Vec::new();
                for piece in results {
                    let rank = x[0].shape.rank();
                    let mut starts = vec![0; rank];
                    let mut ends: Vec<i64> = x[0].shape.dims.iter().map(|&d| d as i64).collect();
                    starts[ax] = start;
                    ends[ax] = start + piece.dims[ax] as i64;
                    start = ends[ax];
                    pieces.push(self.slice(&x[0], &starts, &ends, &vec![1; rank], piece)?);
                }
                Ok(pieces)
            }
            Op::Gather { axis } => one(self.gather(&x[0], &x[1], *axis, &out)?),
            Op::Scatter { axis, reduction } => one(self.scatter(&x[0], &x[1], &x[2], *axis, *reduction, &out)?),
            Op::Iota { axis } => {
                let ax = axis_index(*axis, out.rank())?;
                one(self.op("stablehlo.iota", &[], &format!("iota_dimension = {ax} : i64"), &out))
            }
            Op::Conv2d { window, groups } => {
                let props = format!(
                    "batch_group_count = 1 : i64, dimension_numbers = #stablehlo.conv<[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]>, feature_group_count = {groups} : i64, padding = dense<[[{}, {}], [{}, {}]]> : tensor<2x2xi64>, rhs_dilation = {}, window_strides = {}",
                    window.pads[0],
                    window.pads[2],
                    window.pads[1],
                    window.pads[3],
                    ints(window.dilations),
                    ints(window.strides)
                );
                one(self.op("stablehlo.convolution", &[&x[0], &x[1]], &props, &out))
            }
            Op::Pool2d { kind, kernel, window } => one(self.pool(&x[0], *kind, *kernel, window, &out)?),
            Op::ArgMax { .. }
            | Op::Rope { .. }
            | Op::CrossEntropy
            | Op::Sgd(_)
            | Op::AdamW(_)
            | Op::Recurrent { .. }
            | Op::WinogradInput { .. }
            | Op::WinogradWeight
            | Op::WinogradOutput { .. }
            | Op::Trap(_) => refuse("this op has no StableHLO counterpart in the exporter yet"),
        }
    }

    /// `layer_norm` (centred) and `rms_norm` over the dimensions from `axis` on, scaled (and
    /// shifted by the bias operand when there is one).
    fn norm(&mut self, op: &Op, axis: i64, epsilon: f64, x: &[V], out: &Shape) -> EResult<Vec<V>> {
        let ax = axis_index(axis, x[0].shape.rank())?;
        let axes: Vec<usize> = (ax..x[0].shape.rank()).collect();
        let centered = if matches!(op, Op::LayerNorm { .. }) {
            let mean = self.mean_keep(&x[0], &axes);
            self.binary("stablehlo.subtract", &x[0], &mean, &out.dims)
        } else {
            x[0].clone()
        };
        let square = self.binary("stablehlo.multiply", &centered, &centered, &out.dims);
        let var = self.mean_keep(&square, &axes);
        let eps = self.splat(epsilon, out);
        let shifted = self.binary("stablehlo.add", &var, &eps, &out.dims);
        let inv = self.unary("stablehlo.rsqrt", &shifted);
        let normed = self.binary("stablehlo.multiply", &centered, &inv, &out.dims);
        let scaled = self.binary("stablehlo.multiply", &normed, &x[1], &out.dims);
        match x.get(2) {
            Some(bias) => Ok(vec![self.binary("stablehlo.add", &scaled, bias, &out.dims)]),
            None => Ok(vec![scaled]),
        }
    }

    fn unary_op(&mut self, u: UnaryOp, x: &V) -> V {
        let dims = x.shape.dims.clone();
        match u {
            UnaryOp::Neg => self.unary("stablehlo.negate", x),
            UnaryOp::Abs => self.unary("stablehlo.abs", x),
            UnaryOp::Exp => self.unary("stablehlo.exponential", x),
            UnaryOp::Log => self.unary("stablehlo.log", x),
            UnaryOp::Sqrt => self.unary("stablehlo.sqrt", x),
            UnaryOp::Rsqrt => self.unary("stablehlo.rsqrt", x),
            UnaryOp::Tanh => self.unary("stablehlo.tanh", x),
            UnaryOp::Sigmoid => self.unary("stablehlo.logistic", x),
            UnaryOp::Sin => self.unary("stablehlo.sine", x),
            UnaryOp::Cos => self.unary("stablehlo.cosine", x),
            UnaryOp::Floor => self.unary("stablehlo.floor", x),
            UnaryOp::Ceil => self.unary("stablehlo.ceil", x),
            UnaryOp::Round => self.unary("stablehlo.round_nearest_even", x),
            UnaryOp::Not | UnaryOp::BitNot => self.unary("stablehlo.not", x),
            UnaryOp::Erf => self.unary("chlo.erf", x),
            UnaryOp::Acos => self.unary("chlo.acos", x),
            UnaryOp::Asin => self.unary("chlo.asin", x),
            UnaryOp::Atan => self.unary("chlo.atan", x),
            UnaryOp::Reciprocal => {
                let one = self.splat(1.0, &x.shape);
                self.binary("stablehlo.divide", &one, x, &dims)
            }
            UnaryOp::Relu => {
                let zero = self.splat(0.0, &x.shape);
                self.binary("stablehlo.maximum", x, &zero, &dims)
            }
            UnaryOp::Silu => {
                let s = self.unary("stablehlo.logistic", x);
                self.binary("stablehlo.multiply", x, &s, &dims)
            }
            UnaryOp::Softsign => {
                let a = self.unary("stablehlo.abs", x);
                let one = self.splat(1.0, &x.shape);
                let d = self.binary("stablehlo.add", &one, &a, &dims);
                self.binary("stablehlo.divide", x, &d, &dims)
            }
            // 0.5 x (1 + erf(x / sqrt 2)) and 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
            UnaryOp::Gelu | UnaryOp::GeluTanh => {
                let inner = if u == UnaryOp::Gelu {
                    let c = self.splat(std::f64::consts::FRAC_1_SQRT_2, &x.shape);
                    let scaled = self.binary("stablehlo.multiply", x, &c, &dims);
                    self.unary("chlo.erf", &scaled)
                } else {
                    let cube = self.binary("stablehlo.multiply", x, x, &dims);
                    let cube = self.binary("stablehlo.multiply", &cube, x, &dims);
                    let k = self.splat(0.044715, &x.shape);
                    let term = self.binary("stablehlo.multiply", &k, &cube, &dims);
                    let sum = self.binary("stablehlo.add", x, &term, &dims);
                    let c = self.splat((2.0 / std::f64::consts::PI).sqrt(), &x.shape);
                    let scaled = self.binary("stablehlo.multiply", &c, &sum, &dims);
                    self.unary("stablehlo.tanh", &scaled)
                };
                let one = self.splat(1.0, &x.shape);
                let plus = self.binary("stablehlo.add", &one, &inner, &dims);
                let half = self.splat(0.5, &x.shape);
                let hx = self.binary("stablehlo.multiply", &half, x, &dims);
                self.binary("stablehlo.multiply", &hx, &plus, &dims)
            }
        }
    }

    /// `[..., m, k] x [..., k, n]`: a `dot_general` contracting `k`; a rank-2 right side
    /// needs no batch, otherwise both sides are broadcast to the result's batch.
    fn matmul(&mut self, a: &V, b: &V, out: &Shape) -> V {
        let ra = a.shape.rank();
        if b.shape.rank() == 2 {
            let props = format!("dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [{}], rhs_contracting_dimensions = [0]>", ra - 1);
            return self.op("stablehlo.dot_general", &[a, b], &props, out);
        }
        let nb = out.rank() - 2;
        let batch = &out.dims[..nb];
        let mut a_dims = batch.to_vec();
        a_dims.extend_from_slice(&a.shape.dims[ra - 2..]);
        let mut b_dims = batch.to_vec();
        b_dims.extend_from_slice(&b.shape.dims[b.shape.rank() - 2..]);
        let a = self.broadcast_to(a, &a_dims);
        let b = self.broadcast_to(b, &b_dims);
        let batch_list = list(&(0..nb as i64).collect::<Vec<_>>());
        let props = format!(
            "dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = {batch_list}, rhs_batching_dimensions = {batch_list}, lhs_contracting_dimensions = [{}], rhs_contracting_dimensions = [{}]>",
            nb + 1,
            nb
        );
        self.op("stablehlo.dot_general", &[&a, &b], &props, out)
    }

    fn slice(&mut self, x: &V, starts: &[i64], ends: &[i64], steps: &[i64], out: &Shape) -> EResult<V> {
        let mut s = Vec::new();
        let mut e = Vec::new();
        for (i, &len) in x.shape.dims.iter().enumerate() {
            if steps[i] < 1 {
                return refuse("slices with a negative step have no StableHLO slice counterpart");
            }
            let (first, count) = tessera_ir::ops::layout::slice_extent(len as i64, starts[i], ends[i], steps[i]);
            s.push(first);
            e.push(if count == 0 { first } else { first + (count - 1) * steps[i] + 1 });
        }
        let props = format!(
            "limit_indices = {}, start_indices = {}, strides = {}",
            ints(e),
            ints(s),
            ints(steps.iter().copied())
        );
        Ok(self.op("stablehlo.slice", &[x], &props, out))
    }

    /// tsr `gather` (ONNX Gather) as StableHLO `gather` with one collapsed dimension; negative
    /// indices are wrapped first, as tsr resolves them (StableHLO would clamp).
    /// tsr's `scatter` (ONNX ScatterElements along `axis`) as `stablehlo.scatter` of single
    /// elements: each update's full coordinates (its own position, with the wrapped index on
    /// `axis`) as the index vector, every operand dimension inserted.
    fn scatter(
        &mut self,
        data: &V,
        indices: &V,
        updates: &V,
        axis: i64,
        reduction: tessera_ir::ops::indexing::ScatterReduction,
        out: &Shape,
    ) -> EResult<V> {
        let rank = data.shape.rank();
        let ax = axis_index(axis, rank)?;
        let idx_shape = Shape { dtype: DType::I64, dims: indices.shape.dims.clone() };
        let idx = if indices.shape.dtype == DType::I64 {
            indices.clone()
        } else {
            self.op("stablehlo.convert", &[indices], "", &idx_shape)
        };
        let zero = self.splat(0.0, &idx_shape);
        let extent = self.splat(data.shape.dims[ax] as f64, &idx_shape);
        let negative = self.op(
            "stablehlo.compare",
            &[&idx, &zero],
            "compare_type = #stablehlo<comparison_type SIGNED>, comparison_direction = #stablehlo<comparison_direction LT>",
            &idx_shape.with_bool(),
        );
        let wrapped = self.binary("stablehlo.add", &idx, &extent, &idx_shape.dims.clone());
        let resolved = self.op("stablehlo.select", &[&negative, &wrapped, &idx], "", &idx_shape);
        let mut column_dims = idx_shape.dims.clone();
        column_dims.push(1);
        let column = idx_shape.with_dims(column_dims);
        let mut coordinates = Vec::with_capacity(rank);
        for d in 0..rank {
            let position = if d == ax {
                resolved.clone()
            } else {
                self.op("stablehlo.iota", &[], &format!("iota_dimension = {d} : i64"), &idx_shape)
            };
            coordinates.push(self.op("stablehlo.reshape", &[&position], "", &column));
        }
        let mut all_dims = idx_shape.dims.clone();
        all_dims.push(rank as u64);
        let refs: Vec<&V> = coordinates.iter().collect();
        let full = self.op(
            "stablehlo.concatenate",
            &refs,
            &format!("dimension = {rank} : i64"),
            &idx_shape.with_dims(all_dims),
        );
        let scalar = data.shape.scalar().text();
        let (result, a, b, c) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
        use tessera_ir::ops::indexing::ScatterReduction;
        let combiner = match reduction {
            ScatterReduction::None => None,
            ScatterReduction::Add => Some("stablehlo.add"),
            ScatterReduction::Mul => Some("stablehlo.multiply"),
            ScatterReduction::Max => Some("stablehlo.maximum"),
            ScatterReduction::Min => Some("stablehlo.minimum"),
        };
        let combine = match combiner {
            Some(op) => format!(
                "      {c} = \"{op}\"({a}, {b}) : ({scalar}, {scalar}) -> {scalar}\n      \"stablehlo.return\"({c}) : ({scalar}) -> ()"
            ),
            None => format!("      \"stablehlo.return\"({b}) : ({scalar}) -> ()"),
        };
        let dims = list(&(0..rank as i64).collect::<Vec<_>>());
        let _ = writeln!(
            self.body,
            "    {result} = \"stablehlo.scatter\"({}, {}, {}) <{{indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<inserted_window_dims = {dims}, scatter_dims_to_operand_dims = {dims}, index_vector_dim = {}>, unique_indices = false}}> ({{\n    ^bb0({a}: {scalar}, {b}: {scalar}):\n{combine}\n    }}) : ({}, {}, {}) -> {}",
            data.name,
            full.name,
            updates.name,
            idx_shape.rank(),
            data.shape.text(),
            full.shape.text(),
            updates.shape.text(),
            out.text()
        );
        Ok(V { name: result, shape: out.clone() })
    }

    fn gather(&mut self, data: &V, indices: &V, axis: i64, out: &Shape) -> EResult<V> {
        let rank = data.shape.rank();
        let ax = axis_index(axis, rank)?;
        let ri = indices.shape.rank();
        let zero = self.splat(0.0, &indices.shape);
        let extent = self.splat(data.shape.dims[ax] as f64, &indices.shape);
        let negative = self.op(
            "stablehlo.compare",
            &[indices, &zero],
            "compare_type = #stablehlo<comparison_type SIGNED>, comparison_direction = #stablehlo<comparison_direction LT>",
            &indices.shape.with_dims(indices.shape.dims.clone()).with_bool(),
        );
        let wrapped = self.binary("stablehlo.add", indices, &extent, &indices.shape.dims.clone());
        let resolved = self.op("stablehlo.select", &[&negative, &wrapped, indices], "", &indices.shape);
        let offset_dims: Vec<i64> =
            (0..rank).filter(|&d| d != ax).map(|d| if d < ax { d as i64 } else { (d - 1 + ri) as i64 }).collect();
        let sizes = ints(data.shape.dims.iter().enumerate().map(|(d, &n)| if d == ax { 1 } else { n as i64 }));
        let props = format!(
            "dimension_numbers = #stablehlo.gather<offset_dims = {}, collapsed_slice_dims = [{ax}], start_index_map = [{ax}], index_vector_dim = {ri}>, indices_are_sorted = false, slice_sizes = {sizes}",
            list(&offset_dims)
        );
        Ok(self.op("stablehlo.gather", &[data, &resolved], &props, out))
    }

    /// A collective of a per-rank program over the writer's mesh (see the module docs).
    fn collective(&mut self, c: &Collective, x: &[V], results: &[Shape]) -> EResult<Vec<V>> {
        let Some(mesh) = self.mesh.clone() else {
            return refuse(
                "a collective needs the mesh its ranks form: export the per-rank program with --mesh, \
                 or after 'shard' in the same pipeline",
            );
        };
        let (Some(group), Some(x), Some(out)) = (c.group(), x.first(), results.first()) else {
            return refuse(
                "send/recv join pipeline stages, which run different programs: export the stages together, \
                 after 'shard' in the same pipeline",
            );
        };
        let groups = replica_groups(&mesh, group)?;
        let scalar = x.shape.scalar().text();
        let body = |combine: &str, a: &str, b: &str, c: &str| {
            format!(
                "({{\n    ^bb0({a}: {scalar}, {b}: {scalar}):\n      {c} = \"{combine}\"({a}, {b}) : ({scalar}, {scalar}) -> {scalar}\n      \"stablehlo.return\"({c}) : ({scalar}) -> ()\n    }})"
            )
        };
        let rank = x.shape.rank();
        match c {
            Collective::AllReduce { .. } | Collective::ReduceScatter { .. } => {
                let (name, combine, extra) = match c {
                    Collective::AllReduce { reduction: Reduction::Max, .. } => {
                        ("stablehlo.all_reduce", "stablehlo.maximum", String::new())
                    }
                    Collective::ReduceScatter { dim, .. } => (
                        "stablehlo.reduce_scatter",
                        "stablehlo.add",
                        format!(", scatter_dimension = {} : i64", axis_index(*dim, rank)?),
                    ),
                    _ => ("stablehlo.all_reduce", "stablehlo.add", String::new()),
                };
                let channel = self.channel();
                let (result, a, b, s) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                let _ = writeln!(
                    self.body,
                    "    {result} = \"{name}\"({}) <{{{channel}, replica_groups = {groups}{extra}, use_global_device_ids}}> {} : ({}) -> {}",
                    x.name,
                    body(combine, &a, &b, &s),
                    x.shape.text(),
                    out.text()
                );
                Ok(vec![V { name: result, shape: out.clone() }])
            }
            Collective::AllGather { dim, .. } => {
                let props = format!(
                    "all_gather_dim = {} : i64, {}, replica_groups = {groups}, use_global_device_ids",
                    axis_index(*dim, rank)?,
                    self.channel()
                );
                Ok(vec![self.op("stablehlo.all_gather", &[x], &props, out)])
            }
            Collective::AllToAll { split_dim, concat_dim, group } => {
                let props = format!(
                    "concat_dimension = {} : i64, replica_groups = {groups}, split_count = {} : i64, split_dimension = {} : i64",
                    axis_index(*concat_dim, rank)?,
                    group.size,
                    axis_index(*split_dim, rank)?
                );
                Ok(vec![self.op("stablehlo.all_to_all", &[x], &props, out)])
            }
            Collective::AllSlice { dim, group } => {
                let d = axis_index(*dim, rank)?;
                // Rank r's block starts at (its index in the group) x (block length): a table
                // read at `replica_id`.
                let block = out.dims[d] as i64;
                let starts: Vec<i64> = (0..mesh.num_devices())
                    .map(|r| mesh.index_in_group(r, &group.axes).map(|i| i as i64 * block))
                    .collect::<Result<_, String>>()
                    .map_err(|message| ExportError { message })?;
                let start = self.at_replica(starts);
                let zero = self.constant(&Tensor::scalar(DType::I64, 0.0));
                let mut operands: Vec<&V> = vec![x];
                for i in 0..rank {
                    operands.push(if i == d { &start } else { &zero });
                }
                let props = format!("slice_sizes = {}", ints(out.dims.iter().map(|&n| n as i64)));
                Ok(vec![self.op("stablehlo.dynamic_slice", &operands, &props, out)])
            }
            Collective::CollectivePermute { pairs, group } => {
                let groups =
                    super::collective::groups_over(&mesh, &group.axes).map_err(|message| ExportError { message })?;
                let mut rows = Vec::new();
                for members in &groups {
                    for &(source, target) in pairs {
                        let (Some(s), Some(t)) = (members.get(source as usize), members.get(target as usize)) else {
                            return refuse(format!(
                                "collective_permute pair ({source}, {target}) is outside a group of {}",
                                members.len()
                            ));
                        };
                        rows.push(format!("[{s}, {t}]"));
                    }
                }
                let props =
                    format!("source_target_pairs = dense<[{}]> : tensor<{}x2xi64>", rows.join(", "), rows.len());
                Ok(vec![self.op("stablehlo.collective_permute", &[x], &props, out)])
            }
            Collective::Send { .. } | Collective::Recv { .. } => refuse("send/recv have no group"),
        }
    }

    /// `tsr.sharding_constraint` of a global program: `sdy.sharding_constraint` over the
    /// boundary shardings' mesh. In a per-rank program (an imported GSPMD shard_map keeps the
    /// layout its blocks were cut by) it is the identity it is on every rank: its operand.
    fn sharding_constraint(&mut self, sharding: &Sharding, x: &V, out: &Shape) -> EResult<V> {
        if self.mesh.is_some() {
            return Ok(x.clone());
        }
        let Some(mesh) = &self.io_mesh else {
            return refuse(
                "a sharding constraint names axes of the mesh the boundary shardings define, and this graph has none",
            );
        };
        let ty = tessera_ir::types::TensorType::of_static(out.dtype, &out.dims);
        sharding
            .check(mesh, &ty)
            .map_err(|e| ExportError { message: format!("sharding constraint {sharding}: {e}") })?;
        let props = format!("sharding = {}", super::sharding::sdy_sharding_text("mesh", sharding));
        Ok(self.op("sdy.sharding_constraint", &[x], &props, out))
    }

    /// `table[replica_id]`, an i64 scalar: what differs between replicas of one module.
    fn at_replica(&mut self, table: Vec<i64>) -> V {
        let n = table.len();
        let table = self.constant(&Tensor::from_i64(DType::I64, vec![n], table));
        let id = self.fresh();
        let _ = writeln!(self.body, "    {id} = \"stablehlo.replica_id\"() : () -> tensor<ui32>");
        let scalar_i64 = Shape { dtype: DType::I64, dims: Vec::new() };
        let id_i64 = self.fresh();
        let _ =
            writeln!(self.body, "    {id_i64} = \"stablehlo.convert\"({id}) : (tensor<ui32>) -> {}", scalar_i64.text());
        let id_i64 = V { name: id_i64, shape: scalar_i64.clone() };
        let one = self.op(
            "stablehlo.dynamic_slice",
            &[&table, &id_i64],
            "slice_sizes = array<i64: 1>",
            &scalar_i64.with_dims(vec![1]),
        );
        self.op("stablehlo.reshape", &[&one], "", &scalar_i64)
    }

    /// The next channel handle, as the attribute entry `channel_handle = ...`.
    fn channel(&mut self) -> String {
        self.channels += 1;
        format!("channel_handle = #stablehlo.channel_handle<handle = {}, type = 1>", self.channels)
    }

    fn pool(&mut self, x: &V, kind: PoolKind, kernel: [i64; 2], window: &Window, out: &Shape) -> EResult<V> {
        if window.dilations != [1, 1] {
            return refuse("pooling with dilation has no export yet");
        }
        let (combine, init) = match kind {
            PoolKind::Max => ("stablehlo.maximum", f64::NEG_INFINITY),
            PoolKind::Avg if window.pads == [0, 0, 0, 0] => ("stablehlo.add", 0.0),
            PoolKind::Avg => return refuse("padded average pooling has no export yet"),
        };
        let init_v = self.constant(&Tensor::scalar(x.shape.dtype, init));
        let scalar = x.shape.scalar().text();
        let (res, a, b, c) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
        let p = window.pads;
        let _ = writeln!(
            self.body,
            "    {res} = \"stablehlo.reduce_window\"({}, {}) <{{padding = dense<[[0, 0], [0, 0], [{}, {}], [{}, {}]]> : tensor<4x2xi64>, window_dimensions = {}, window_strides = {}}}> ({{\n    ^bb0({a}: {scalar}, {b}: {scalar}):\n      {c} = \"{combine}\"({a}, {b}) : ({scalar}, {scalar}) -> {scalar}\n      \"stablehlo.return\"({c}) : ({scalar}) -> ()\n    }}) : ({}, {scalar}) -> {}",
            x.name,
            init_v.name,
            p[0],
            p[2],
            p[1],
            p[3],
            ints([1, 1, kernel[0], kernel[1]]),
            ints([1, 1, window.strides[0], window.strides[1]]),
            x.shape.text(),
            out.text()
        );
        let pooled = V { name: res, shape: out.clone() };
        if kind == PoolKind::Max {
            return Ok(pooled);
        }
        let count = self.splat((kernel[0] * kernel[1]) as f64, out);
        Ok(self.binary("stablehlo.divide", &pooled, &count, &out.dims))
    }
}

impl Shape {
    fn with_bool(&self) -> Shape {
        Shape { dtype: DType::Bool, dims: self.dims.clone() }
    }
}

/// The groups of a collective over `group`'s axes as a `replica_groups` attribute: every rank of
/// `mesh` in exactly one group, groups ordered by their first member, members in tsr's order.
fn replica_groups(mesh: &Mesh, group: &MeshAxes) -> EResult<String> {
    let groups = super::collective::groups_over(mesh, &group.axes).map_err(|message| ExportError { message })?;
    let size = groups.first().map_or(0, Vec::len);
    if size as u64 != group.size {
        return refuse(format!(
            "the group over {} has {size} ranks on mesh {mesh}, but the op says group_size = {}",
            group.joined(),
            group.size
        ));
    }
    let rows: Vec<String> =
        groups.iter().map(|g| format!("[{}]", g.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))).collect();
    Ok(format!("dense<[{}]> : tensor<{}x{size}xi64>", rows.join(", "), groups.len()))
}

fn axis_index(axis: i64, rank: usize) -> EResult<usize> {
    tessera_ir::types::normalize_axis(axis, rank)
        .ok_or_else(|| ExportError { message: format!("axis {axis} is out of range for rank {rank}") })
}
