//! Pipeline stages that run different programs (what `shard` makes over a mesh with a pipeline
//! axis, joined by tsr `send`/`recv`) as one StableHLO module that every replica runs.
//!
//! XLA runs one program on every replica, so the module runs every stage and picks the replica's
//! own: the stage is `replica_id`'s coordinate on the pipeline axis (a table read at
//! `replica_id`), and each stretch of local work is one `stablehlo.case` on it whose branch `s`
//! is stage `s`'s next stretch. Communication stays outside the cases, where every replica
//! meets it: a `send` and the `recv` it pairs with (same axis and tag, each naming the other's
//! stage) become one `stablehlo.collective_permute` from the sender's ranks to the receiver's
//! ranks at the same coordinates on the other axes, and a stage's group collectives (over its
//! data or tensor axes, whose groups never leave a stage) are written as in a one-stage
//! program; the replicas of other stages join them with zeros and drop the result.
//!
//! A case yields every value its stretch defines that a later stretch, a transfer or an
//! output reads; the branches of the other stages yield zeros in those places. The module's
//! arguments are the stages' inputs in stage order (one argument for inputs of the same name
//! and type), and a replica only reads those of its own stage. Its results are the stages'
//! outputs, also merged by name and type; a replica of a stage that does not compute an output
//! returns zeros there.
//!
//! The stretches and transfers follow each program's order: a transfer is written when its
//! sender has reached the `send` and its receiver the `recv`. Programs whose orders never meet
//! (each stage waiting on a transfer another stage has not reached) are refused naming them.

use super::{in_node, refuse, replicated_module_header, static_shape, EResult, ExportError, Shape, Writer, V};
use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;

/// Writes the pipeline whose stage `s` runs `stages[s]` on the ranks at coordinate `s` of
/// `pipeline_axis` of `mesh` as one StableHLO module every replica runs (see the module docs).
pub fn export_pipeline(stages: &[&Graph], mesh: &Mesh, pipeline_axis: &str) -> EResult<String> {
    let axis = mesh.axes().iter().position(|a| a.name == pipeline_axis);
    let (Some(axis), Some(first)) = (axis, stages.first()) else {
        return refuse(format!("the mesh {mesh} has no pipeline axis '{pipeline_axis}'"));
    };
    if mesh.axes()[axis].size as usize != stages.len() {
        return refuse(format!(
            "{} stage programs for the pipeline axis {pipeline_axis}={}",
            stages.len(),
            mesh.axes()[axis].size
        ));
    }
    let mut w = Writer {
        body: String::new(),
        next: 0,
        values: Vec::new(),
        mesh: Some(mesh.clone()),
        io_mesh: None,
        channels: 0,
    };
    let mut programs: Vec<Program> = stages.iter().copied().map(Program::new).collect();

    // One argument per input name and type, in stage order.
    let mut params: Vec<NamedShape> = Vec::new();
    for p in &mut programs {
        for &id in p.graph.inputs() {
            let key = (p.graph.value(id).name.clone(), static_shape(p.graph, id)?);
            let index = params.iter().position(|k| *k == key).unwrap_or_else(|| {
                params.push(key.clone());
                params.len() - 1
            });
            p.values[id.index()] = Some(V { name: format!("%arg{index}"), shape: key.1 });
        }
    }

    let coords: Vec<i64> = (0..mesh.num_devices()).map(|r| mesh.coords(r)[axis] as i64).collect();
    let stage_i64 = w.at_replica(coords);
    let stage = w.op("stablehlo.convert", &[&stage_i64], "", &Shape { dtype: DType::I32, dims: Vec::new() });

    while programs.iter().any(|p| !p.done()) {
        let stretches: Vec<(usize, usize)> = programs.iter().map(Program::next_stretch).collect();
        let computed = stretches.iter().any(|(from, to)| to > from);
        if computed {
            w.case(&stage, &mut programs, &stretches)?;
        }
        for (p, &(_, to)) in programs.iter_mut().zip(&stretches) {
            p.at = to;
        }
        let transferred = w.exchanges(&mut programs, mesh, axis, pipeline_axis)?;
        if !computed && !transferred {
            return refuse(format!("the stage programs never meet: {}", waiting(&programs)));
        }
    }

    // Outputs merged by name and type; each from the stage(s) that compute it, zeros elsewhere.
    let mut results: Vec<(NamedShape, Vec<(usize, V)>)> = Vec::new();
    for (s, p) in programs.iter().enumerate() {
        for &id in p.graph.outputs() {
            let key = (p.graph.value(id).name.clone(), static_shape(p.graph, id)?);
            let v = p.value(id)?;
            match results.iter_mut().find(|(k, _)| *k == key) {
                Some((_, from)) => from.push((s, v)),
                None => results.push((key, vec![(s, v)])),
            }
        }
    }
    let mut outputs = Vec::new();
    for ((_, shape), from) in &results {
        let mut picked = w.splat(0.0, shape);
        for (s, v) in from {
            let this_stage = w.constant(&Tensor::scalar(DType::I32, *s as f64));
            let props = "compare_type = #stablehlo<comparison_type SIGNED>, comparison_direction = #stablehlo<comparison_direction EQ>";
            let on_stage = w.op("stablehlo.compare", &[&stage, &this_stage], props, &stage.shape.with_bool());
            let on_stage = w.broadcast_to(&on_stage, &shape.dims);
            picked = w.op("stablehlo.select", &[&on_stage, v, &picked], "", shape);
        }
        outputs.push(picked);
    }

    let mut out = String::new();
    replicated_module_header(&mut out, &super::module_name(first), mesh);
    let args: Vec<String> = params.iter().enumerate().map(|(i, (_, s))| format!("%arg{i}: {}", s.text())).collect();
    let types: Vec<String> = outputs.iter().map(|v| v.shape.text()).collect();
    super::close_module(&mut out, &args, &types, &w.body, &outputs);
    Ok(out)
}

/// A module argument or result: the name and type of the stage values it stands for.
type NamedShape = (String, Shape);

/// One stage's program as it is written: the next node to write and the module-level value of
/// each of its values written so far.
struct Program<'g> {
    graph: &'g Graph,
    order: Vec<NodeId>,
    at: usize,
    values: Vec<Option<V>>,
    /// The position in `order` of the last node reading each value (outputs read at the end).
    last_read: HashMap<ValueId, usize>,
}

impl<'g> Program<'g> {
    fn new(graph: &'g Graph) -> Program<'g> {
        let order: Vec<NodeId> = graph.nodes().map(|(id, _)| id).collect();
        let mut last_read = HashMap::new();
        for (position, &id) in order.iter().enumerate() {
            for &v in &graph.node(id).inputs {
                last_read.insert(v, position);
            }
        }
        for &v in graph.outputs() {
            last_read.insert(v, order.len());
        }
        Program { graph, order, at: 0, values: vec![None; graph.num_values()], last_read }
    }

    fn done(&self) -> bool {
        self.at == self.order.len()
    }

    /// The positions `[at, to)` of the local work before the next communication.
    fn next_stretch(&self) -> (usize, usize) {
        let to = (self.at..self.order.len())
            .find(|&i| communicates(&self.graph.node(self.order[i]).op))
            .unwrap_or(self.order.len());
        (self.at, to)
    }

    /// The communication this program waits at, if any.
    fn waiting_at(&self) -> Option<&'g Collective> {
        match &self.graph.node(*self.order.get(self.at)?).op {
            Op::Collective(c) => Some(c),
            _ => None,
        }
    }

    /// The values the nodes at `[from, to)` define that later nodes or the outputs read.
    fn live_out(&self, from: usize, to: usize) -> Vec<ValueId> {
        self.order[from..to]
            .iter()
            .flat_map(|&id| self.graph.node(id).outputs.iter().copied())
            .filter(|v| self.last_read.get(v).is_some_and(|&read| read >= to))
            .collect()
    }

    fn value(&self, id: ValueId) -> EResult<V> {
        match self.values.get(id.index()).cloned().flatten() {
            Some(v) => Ok(v),
            None => refuse(format!("%{} is used before it is defined", self.graph.value(id).name)),
        }
    }
}

/// Whether `op` moves data between ranks (written outside the cases). `all_slice` only cuts
/// the rank's own block.
fn communicates(op: &Op) -> bool {
    matches!(op, Op::Collective(c) if !matches!(c, Collective::AllSlice { .. }))
}

/// What every unfinished stage waits at, for the error when no transfer can be written.
fn waiting(programs: &[Program<'_>]) -> String {
    let mut parts = Vec::new();
    for (s, p) in programs.iter().enumerate() {
        if let Some(c) = p.waiting_at() {
            let what = match c {
                Collective::Send { mesh_axis, peer, tag } => format!("send to {mesh_axis}={peer} (tag {tag})"),
                Collective::Recv { mesh_axis, peer, tag, .. } => format!("recv from {mesh_axis}={peer} (tag {tag})"),
                other => format!("tsr.{}", other.mnemonic()),
            };
            parts.push(format!("stage {s} waits at its {what}"));
        }
    }
    parts.join(", ")
}

impl Writer {
    /// One `stablehlo.case` on `stage` whose branch `s` writes stage `s`'s nodes at
    /// `stretches[s]` and yields what later work reads; other stages' places yield zeros.
    fn case(&mut self, stage: &V, programs: &mut [Program<'_>], stretches: &[(usize, usize)]) -> EResult<()> {
        let live: Vec<Vec<ValueId>> =
            programs.iter().zip(stretches).map(|(p, &(from, to))| p.live_out(from, to)).collect();
        let mut shapes = Vec::new();
        for (p, values) in programs.iter().zip(&live) {
            for &v in values {
                shapes.push(static_shape(p.graph, v)?);
            }
        }
        let mut branches = Vec::new();
        for (s, p) in programs.iter().enumerate() {
            let mut sub = self.nested(p.values.clone());
            let (from, to) = stretches[s];
            for &id in &p.order[from..to] {
                sub.graph_node(p.graph, id)?;
            }
            let mut yields = Vec::new();
            for (t, values) in live.iter().enumerate() {
                for &v in values {
                    yields.push(if t == s {
                        sub.value(v)?
                    } else {
                        sub.splat(0.0, &static_shape(programs[t].graph, v)?)
                    });
                }
            }
            branches.push(self.close_region(sub, &[], &yields));
        }
        if shapes.is_empty() {
            // Nothing written here is read later.
            return Ok(());
        }
        let results = self.region_op("stablehlo.case", &[stage], &branches, &shapes);
        let mut results = results.into_iter();
        for (p, values) in programs.iter_mut().zip(&live) {
            for &v in values {
                p.values[v.index()] = results.next();
            }
        }
        Ok(())
    }

    /// Writes every communication the stages wait at that can happen now: group collectives at
    /// once, a `send` when its receiver waits at the matching `recv`. Whether any was written.
    fn exchanges(&mut self, programs: &mut [Program<'_>], mesh: &Mesh, axis: usize, axis_name: &str) -> EResult<bool> {
        let mut written = false;
        for s in 0..programs.len() {
            let Some(c) = programs[s].waiting_at() else { continue };
            let node = programs[s].order[programs[s].at];
            let graph = programs[s].graph;
            match c {
                Collective::Recv { .. } => {}
                Collective::Send { mesh_axis, peer, tag } => {
                    if mesh_axis != axis_name {
                        let e = ExportError {
                            message: format!("send along {mesh_axis}, but the pipeline axis is {axis_name}"),
                        };
                        return Err(in_node(graph, node, e));
                    }
                    let target = *peer as usize;
                    let pairs_with = |c: &Collective| {
                        matches!(c, Collective::Recv { mesh_axis: a, peer: from, tag: t, .. }
                            if a == mesh_axis && *from as usize == s && t == tag)
                    };
                    let Some(Collective::Recv { ty, .. }) =
                        programs.get(target).and_then(Program::waiting_at).filter(|c| pairs_with(c))
                    else {
                        continue;
                    };
                    let sent = programs[s].value(graph.node(node).inputs[0])?;
                    let Some(dims) = ty.static_shape() else {
                        return refuse(format!("stage {target} receives the symbolic type {ty}"));
                    };
                    if sent.shape.dims != dims || sent.shape.dtype != ty.dtype {
                        let e = ExportError {
                            message: format!("sends {} but stage {target} receives {ty}", sent.shape.text()),
                        };
                        return Err(in_node(graph, node, e));
                    }
                    let mut rows = Vec::new();
                    for rank in 0..mesh.num_devices() {
                        let mut coords = mesh.coords(rank);
                        if coords[axis] as usize == s {
                            coords[axis] = target as u64;
                            rows.push(format!("[{rank}, {}]", mesh.rank_of(&coords)));
                        }
                    }
                    let props =
                        format!("source_target_pairs = dense<[{}]> : tensor<{}x2xi64>", rows.join(", "), rows.len());
                    let shape = sent.shape.clone();
                    let arrived = self.op("stablehlo.collective_permute", &[&sent], &props, &shape);
                    let receiver = &mut programs[target];
                    let recv_node = receiver.graph.node(receiver.order[receiver.at]);
                    if let Some(&out) = recv_node.outputs.first() {
                        receiver.values[out.index()] = Some(arrived);
                    }
                    receiver.at += 1;
                    programs[s].at += 1;
                    written = true;
                }
                group => {
                    let n = graph.node(node);
                    let x: Vec<V> = n.inputs.iter().map(|&v| programs[s].value(v)).collect::<EResult<_>>()?;
                    let results: Vec<Shape> =
                        n.outputs.iter().map(|&v| static_shape(graph, v)).collect::<EResult<_>>()?;
                    let out = self.collective(group, &x, &results).map_err(|e| in_node(graph, node, e))?;
                    for (&id, v) in n.outputs.iter().zip(out) {
                        programs[s].values[id.index()] = Some(v);
                    }
                    programs[s].at += 1;
                    written = true;
                }
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::export_pipeline;
    use tessera_ir::mlir::parse_verified;
    use tessera_ir::sharding::Mesh;

    fn stage(name: &str, body: &str) -> tessera_ir::graph::Graph {
        let text = format!("func.func @{name}(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>) {{\n{body}}}\n");
        parse_verified(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const SEND_0: &str =
        "  \"tsr.send\"(%y) {mesh_axis = \"pp\", peer = 1 : i64, tag = 0 : i64} : (tensor<2x4xf32>) -> ()\n";
    const RECV_0: &str =
        "  %r = \"tsr.recv\"() {mesh_axis = \"pp\", peer = 0 : i64, tag = 0 : i64} : () -> tensor<2x4xf32>\n";

    #[test]
    fn a_send_and_its_recv_are_one_permute_between_two_cases() {
        let first = stage(
            "s0",
            &format!("  %y = \"tsr.exp\"(%x) : (tensor<2x4xf32>) -> tensor<2x4xf32>\n{SEND_0}  return %x : tensor<2x4xf32>\n"),
        );
        let second = stage(
            "s1",
            &format!("{RECV_0}  %z = \"tsr.add\"(%r, %x) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>\n  return %z : tensor<2x4xf32>\n"),
        );
        let mesh = Mesh::parse("pp=2").expect("mesh");
        let text = export_pipeline(&[&first, &second], &mesh, "pp").expect("export");
        // One argument: both stages read %x of the same type. Two results: stage 0's %x and
        // stage 1's %z (different names).
        assert!(text.contains("@main(%arg0: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)"), "{text}");
        let case = text.find("\"stablehlo.case\"").expect("a case");
        let permute = text.find("source_target_pairs = dense<[[0, 1]]> : tensor<1x2xi64>").expect("the transfer");
        let second_case = text.rfind("\"stablehlo.case\"").expect("a case");
        assert!(case < permute && permute < second_case, "{text}");
        assert_eq!(text.matches("\"stablehlo.case\"").count(), 2, "{text}");
    }

    #[test]
    fn programs_whose_transfers_never_meet_are_refused_naming_where_each_waits() {
        // Each stage receives before it sends.
        let recv_1 =
            "  %r = \"tsr.recv\"() {mesh_axis = \"pp\", peer = 1 : i64, tag = 1 : i64} : () -> tensor<2x4xf32>\n";
        let first = stage("s0", &format!("{recv_1}  %y = \"tsr.neg\"(%r) : (tensor<2x4xf32>) -> tensor<2x4xf32>\n{SEND_0}  return %y : tensor<2x4xf32>\n"));
        let send_1 =
            "  \"tsr.send\"(%r) {mesh_axis = \"pp\", peer = 0 : i64, tag = 1 : i64} : (tensor<2x4xf32>) -> ()\n";
        let second = stage("s1", &format!("{RECV_0}{send_1}  return %r : tensor<2x4xf32>\n"));
        let mesh = Mesh::parse("pp=2").expect("mesh");
        let e = export_pipeline(&[&first, &second], &mesh, "pp").expect_err("a cycle");
        assert_eq!(
            e.message,
            "the stage programs never meet: stage 0 waits at its recv from pp=1 (tag 1), stage 1 waits at its recv from pp=0 (tag 0)"
        );
        let e = export_pipeline(&[&first], &mesh, "pp").expect_err("one stage of two");
        assert_eq!(e.message, "1 stage programs for the pipeline axis pp=2");
        let e = export_pipeline(&[&first, &second], &mesh, "stages").expect_err("no such axis");
        assert_eq!(e.message, "the mesh pp=2 has no pipeline axis 'stages'");
    }
}
