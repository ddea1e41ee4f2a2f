//! Sharding propagation and per-rank program extraction for one pipeline stage.
//!
//! Values are either *computed* (activation inputs and results of nodes that depend on them)
//! or *free* (parameters, constants, and nodes that depend on nothing else: weight transposes,
//! bias broadcasts). Computed nodes are visited in program order; each picks its sharding from
//! its operands through the op's [`ShardingRule`] (first operand first, Megatron column-parallel
//! weights when the tensor axis is still unused), reshards operands that disagree (see
//! [`super::reshard`]) and leaves partial results partial until a consumer needs them whole.
//! Free values are materialized lazily, in the sharding their first consumer asks for, so
//! weights are loaded already split (backward propagation from uses to parameters) and the
//! work on them is done per stage that needs it.

use super::reshard;
use super::{ShardConfig, ShardError};
use std::collections::{HashMap, HashSet};
use tessera_ir::graph::{Graph, InputRole, NodeId, ValueDef, ValueId};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, Partial, Sharding, ShardingRule};
use tessera_ir::types::{Dim, TensorType};

/// What the stage builders share: the source graph and facts about its values.
pub struct Analysis<'g> {
    pub src: &'g Graph,
    pub mesh: &'g Mesh,
    pub config: &'g ShardConfig,
    /// Per source value: free (see the module doc).
    pub free: Vec<bool>,
    /// Seeds for graph inputs, by value.
    pub seeds: HashMap<ValueId, Sharding>,
}

impl<'g> Analysis<'g> {
    pub fn new(src: &'g Graph, mesh: &'g Mesh, config: &'g ShardConfig) -> Result<Analysis<'g>, ShardError> {
        let mut free = vec![false; src.num_values()];
        let mut seeds = HashMap::new();
        for &v in src.inputs() {
            let value = src.value(v);
            let seed_error = |message: String| ShardError::Seed { value: value.name.clone(), message };
            // A seed given in the config wins; then the sharding the graph's input was given
            // (an imported `sdy.sharding`), whose axes must mean the same on the shard mesh.
            let imported = src.io_shardings().and_then(|io| io.input(&value.name).map(|s| (io, s)));
            let seed = match config.seeds.iter().find(|(name, _)| *name == value.name) {
                Some((_, s)) => Some(s.clone()),
                None => match imported {
                    Some((io, s)) => {
                        for axis in s.used_axes() {
                            let (given, here) = (io.mesh.axis_size(axis), mesh.axis_size(axis));
                            if given != here {
                                return Err(seed_error(format!(
                                    "its sharding {s} was given over the mesh {}, where axis '{axis}' has size {}, but the shard mesh {mesh} {}",
                                    io.mesh,
                                    given.unwrap_or(0),
                                    here.map_or("has no such axis".to_string(), |n| format!("gives it size {n}"))
                                )));
                            }
                        }
                        Some(s.clone())
                    }
                    None => None,
                },
            };
            match seed {
                Some(s) => {
                    if s.partial.is_some() {
                        return Err(seed_error(format!("an input cannot be partial ({s})")));
                    }
                    s.check(mesh, &value.ty).map_err(seed_error)?;
                    seeds.insert(v, s);
                }
                None if src.input_role(v) == Some(InputRole::Parameter)
                    || config.state_inputs.contains(&value.name) =>
                {
                    free[v.index()] = true
                }
                None => {
                    seeds.insert(v, batch_seed(mesh, config, &value.name, &value.ty)?);
                }
            }
        }
        for (_, node) in src.nodes() {
            if node.op.is_communication() {
                return Err(ShardError::AlreadyPartitioned { op: node.op.mnemonic() });
            }
            // A constrained value is computed where it stands (resharded there), even when it
            // depends on parameters only: its layout is the constraint's, not its first use's.
            let is_free =
                !matches!(node.op, Op::ShardingConstraint { .. }) && node.inputs.iter().all(|v| free[v.index()]);
            for v in &node.outputs {
                free[v.index()] = is_free;
            }
        }
        Ok(Analysis { src, mesh, config, free, seeds })
    }

    /// Computed nodes in program order.
    pub fn computed_nodes(&self) -> Vec<NodeId> {
        self.src
            .nodes()
            .filter(|(_, n)| !n.outputs.iter().all(|v| self.free[v.index()]) || n.outputs.is_empty())
            .map(|(id, _)| id)
            .collect()
    }
}

/// Data parallelism's seed for an activation input: its first dimension split over the data
/// axis. A static first dimension the axis does not divide is an error (the batch does not
/// split); a symbolic one (or a scalar) stays whole, since its extent is unknown here.
fn batch_seed(mesh: &Mesh, config: &ShardConfig, name: &str, ty: &TensorType) -> Result<Sharding, ShardError> {
    let replicated = Sharding::replicated(ty.rank());
    let size = mesh.axis_size(&config.data_axis).unwrap_or(1);
    match ty.dims.first() {
        Some(Dim::Static(n)) if size > 1 => {
            if n % size != 0 {
                return Err(ShardError::UnevenBatch {
                    input: name.to_string(),
                    ty: ty.to_string(),
                    axis: config.data_axis.clone(),
                    size,
                });
            }
            let mut s = replicated;
            s.dims[0].push(config.data_axis.clone());
            Ok(s)
        }
        _ => Ok(replicated),
    }
}

/// One stage's program under construction.
pub struct StageBuilder<'a, 'g> {
    an: &'a Analysis<'g>,
    /// Program outputs and their shardings (set by [`StageBuilder::finish_outputs`]).
    pub output_shardings: Vec<Sharding>,
    stage: usize,
    pub out: Graph,
    /// Source value -> local values available, with their shardings (the first is the one the
    /// value was defined or received with).
    avail: HashMap<ValueId, Vec<(ValueId, Sharding)>>,
    /// Shardings of the program's inputs, in order.
    pub input_shardings: Vec<Sharding>,
    /// Every name in the source graph or this program.
    names: HashSet<String>,
    /// Sharding another stage sent a value with, and that stage, by source value.
    received: HashMap<ValueId, (usize, Sharding)>,
    pub collectives: usize,
    /// The source node being visited when the partitioner emits into this stage (`None` while it
    /// sends or finishes outputs): recorded per emitted node in [`StageBuilder::origins`].
    pub current: Option<NodeId>,
    /// Per program node: the source node it was emitted for (schedules read its unit).
    pub origins: Vec<Option<NodeId>>,
}

impl<'a, 'g> StageBuilder<'a, 'g> {
    pub fn new(an: &'a Analysis<'g>, stage: usize) -> Self {
        let names = an.src.values().map(|(_, v)| v.name.clone()).collect();
        let name = if an.mesh.axis_size(&an.config.pipeline_axis).is_some() {
            format!("{}_stage{stage}", an.src.name)
        } else {
            an.src.name.clone()
        };
        StageBuilder {
            an,
            stage,
            out: Graph::new(&name),
            avail: HashMap::new(),
            input_shardings: Vec::new(),
            names,
            received: HashMap::new(),
            collectives: 0,
            output_shardings: Vec::new(),
            current: None,
            origins: Vec::new(),
        }
    }

    fn fresh(&mut self, base: &str, what: &str) -> String {
        let base = if base.starts_with(|c: char| c.is_ascii_digit()) { format!("v{base}") } else { base.to_string() };
        let mut k = 0;
        loop {
            let candidate = if k == 0 { format!("{base}_{what}") } else { format!("{base}_{what}{k}") };
            if self.names.insert(candidate.clone()) {
                return candidate;
            }
            k += 1;
        }
    }

    fn internal(&self, message: String) -> ShardError {
        ShardError::Internal { stage: self.stage, message }
    }

    /// Appends `op` on local operands with the given result names; types from the shape rule.
    fn emit(&mut self, op: Op, inputs: &[ValueId], names: Vec<String>) -> Result<Vec<ValueId>, ShardError> {
        let types = {
            let operand_types: Vec<&TensorType> = inputs.iter().map(|&v| &self.out.value(v).ty).collect();
            op.infer(&operand_types)
                .map_err(|m| self.internal(format!("tsr.{} on local operands: {m}", op.mnemonic())))?
        };
        if types.len() != names.len() {
            return Err(self.internal(format!(
                "tsr.{} gives {} results, {} named",
                op.mnemonic(),
                types.len(),
                names.len()
            )));
        }
        if op.is_communication() {
            self.collectives += 1;
        }
        let node = self.out.add_node_unchecked(op, inputs.to_vec(), names.into_iter().zip(types).collect());
        self.origins.push(self.current);
        Ok(self.out.node(node).outputs.clone())
    }

    /// The local value of source value `v` in sharding `want` (never partial), emitting what it
    /// takes: a free value's computation, a receive from an earlier stage, or a reshard.
    pub fn get(&mut self, v: ValueId, want: &Sharding) -> Result<ValueId, ShardError> {
        if let Some(found) = self.avail.get(&v).and_then(|list| list.iter().find(|(_, s)| s == want)) {
            return Ok(found.0);
        }
        if !self.avail.contains_key(&v) {
            self.define(v, want)?;
            if let Some(found) = self.avail.get(&v).and_then(|list| list.iter().find(|(_, s)| s == want)) {
                return Ok(found.0);
            }
        }
        let (local, from) = self
            .avail
            .get(&v)
            .and_then(|l| l.first())
            .cloned()
            .ok_or_else(|| self.internal(format!("%{} has no local value", self.an.src.value(v).name)))?;
        let steps = reshard::plan(self.an.mesh, &from, want).map_err(|m| self.internal(m))?;
        let base = self.an.src.value(v).name.clone();
        let mut cur = local;
        for step in steps {
            let name = self.fresh(&base, step.op.mnemonic());
            cur = self.emit(step.op, &[cur], vec![name])?[0];
            self.avail.entry(v).or_default().push((cur, step.after));
        }
        Ok(cur)
    }

    /// Receives source value `v` from stage `from`, which sent it in `sharding` (a `recv` here,
    /// now); nothing when `v` is already here.
    pub fn receive(&mut self, v: ValueId, from: usize, sharding: Sharding) -> Result<(), ShardError> {
        if self.avail.contains_key(&v) {
            return Ok(());
        }
        self.received.insert(v, (from, sharding.clone()));
        self.define(v, &sharding)
    }

    /// Whether `v` is available here (defined, computed or received).
    pub fn has(&self, v: ValueId) -> bool {
        self.avail.contains_key(&v)
    }

    /// The sharding source input `v` is a program input of this stage with, if it is one.
    pub fn input_sharding(&self, v: ValueId) -> Option<Sharding> {
        if !matches!(self.an.src.value(v).def, ValueDef::Input { .. }) || self.received.contains_key(&v) {
            return None;
        }
        self.avail.get(&v).and_then(|l| l.first()).map(|(_, s)| s.clone())
    }

    /// The sharding `v` was first made available in, if it is available.
    fn current(&mut self, v: ValueId) -> Option<Sharding> {
        self.avail.get(&v).and_then(|l| l.first()).map(|(_, s)| s.clone())
    }

    /// Makes `v` available: as a program input, a receive, or (free values) by computing it.
    fn define(&mut self, v: ValueId, want: &Sharding) -> Result<(), ShardError> {
        let src = self.an.src;
        let value = src.value(v);
        if let Some((from_stage, sharding)) = self.received.get(&v).cloned() {
            let ty = sharding.local_type(self.an.mesh, &value.ty).map_err(|m| self.internal(m))?;
            let op = Op::Collective(Collective::Recv {
                mesh_axis: self.an.config.pipeline_axis.clone(),
                peer: from_stage as i64,
                tag: v.index() as i64,
                ty,
            });
            let local = self.emit(op, &[], vec![value.name.clone()])?[0];
            self.avail.entry(v).or_default().push((local, sharding.clone()));
            return Ok(());
        }
        match value.def {
            ValueDef::Input { role, .. } => {
                // A seeded input arrives as seeded; a free one (a parameter) as first asked for,
                // when that sharding fits it.
                // An input that is also a graph output stays whole, so the output is the input
                // itself, under its own name.
                let is_output = src.outputs().contains(&v);
                let sharding = match self.an.seeds.get(&v) {
                    _ if is_output => Sharding::replicated(value.ty.rank()),
                    Some(s) => s.clone(),
                    None if want.check(self.an.mesh, &value.ty).is_ok() => want.clone(),
                    None => Sharding::replicated(value.ty.rank()),
                };
                let ty = sharding.local_type(self.an.mesh, &value.ty).map_err(|m| self.internal(m))?;
                let local = self.out.add_input(&value.name, ty, role);
                self.input_shardings.push(sharding.clone());
                self.avail.entry(v).or_default().push((local, sharding));
                Ok(())
            }
            ValueDef::Result { node, index } => {
                if !self.an.free[v.index()] {
                    return Err(self.internal(format!("%{} is used before it is computed", value.name)));
                }
                // Factors from the wanted sharding of this result, through the rule.
                let rule = rule_of(src, node);
                let mut assignment: Vec<Vec<String>> = vec![Vec::new(); rule.factor_sizes.len()];
                for (d, axes) in want.dims.iter().enumerate() {
                    if let Some(Some(f)) = rule.results.get(index).and_then(|r| r.get(d)) {
                        try_assign(self.an.mesh, &rule, &mut assignment, *f, axes);
                    }
                }
                self.emit_node(node, &rule, &assignment)
            }
        }
    }

    /// Emits source node `node` with factor `assignment`: operands fetched in the shardings the
    /// rule derives, the op localized, results recorded with their (maybe partial) shardings.
    fn emit_node(&mut self, node: NodeId, rule: &ShardingRule, assignment: &[Vec<String>]) -> Result<(), ShardError> {
        let src = self.an.src;
        let n = src.node(node);
        let mut locals = Vec::with_capacity(n.inputs.len());
        for (i, &v) in n.inputs.iter().enumerate() {
            let dims = rule.operands[i].iter().map(|f| f.map(|f| assignment[f].clone()).unwrap_or_default()).collect();
            locals.push(self.get(v, &Sharding { dims, partial: None })?);
        }
        let mut partial_axes: Vec<String> = Vec::new();
        for (f, axes) in assignment.iter().enumerate() {
            if !axes.is_empty() && !rule.is_parallel(f) {
                partial_axes.extend(axes.iter().cloned());
            }
        }
        let partial = match (rule.reduction, partial_axes.is_empty()) {
            (Some(kind), false) => Some(Partial { kind, axes: partial_axes }),
            (None, false) => {
                return Err(self.internal(format!("tsr.{} split a reduction it cannot combine", n.op.mnemonic())))
            }
            _ => None,
        };
        let results: Vec<Sharding> = rule
            .results
            .iter()
            .map(|dims| Sharding {
                dims: dims.iter().map(|f| f.map(|f| assignment[f].clone()).unwrap_or_default()).collect(),
                partial: partial.clone(),
            })
            .collect();
        let mut local_types = Vec::with_capacity(results.len());
        for (s, &v) in results.iter().zip(&n.outputs) {
            local_types.push(s.local_type(self.an.mesh, &src.value(v).ty).map_err(|m| self.internal(m))?);
        }
        let op = localize(&n.op, &results, &local_types);
        let names: Vec<String> = n.outputs.iter().map(|&v| src.value(v).name.clone()).collect();
        let outs = match (&n.op, &partial) {
            // A split cross-entropy is the mean over this rank's rows: scaled by 1/parts, the
            // blocks sum to the global mean.
            (Op::CrossEntropy, Some(p)) => {
                let parts = self.an.mesh.group_size(&p.axes).map_err(|m| self.internal(m))?;
                let base = names[0].clone();
                let local_mean = self.fresh(&base, "local_mean");
                let mean = self.emit(op, &locals, vec![local_mean])?[0];
                let dtype = self.out.value(mean).ty.dtype;
                let scale = tessera_ir::tensor::Tensor::scalar(dtype, tessera_ir::ops::optim::local_mean_scale(parts));
                let scale_name = self.fresh(&base, "scale");
                let k = self.emit(Op::Constant(scale), &[], vec![scale_name])?[0];
                self.emit(Op::Binary(tessera_ir::ops::elementwise::BinaryOp::Mul), &[mean, k], names)?
            }
            _ => self.emit(op, &locals, names)?,
        };
        for (i, (&v, &local)) in n.outputs.iter().zip(&outs).enumerate() {
            if self.out.value(local).ty != local_types[i] {
                return Err(self.internal(format!(
                    "%{} is {} locally but its sharding {} gives {}",
                    src.value(v).name,
                    self.out.value(local).ty,
                    results[i],
                    local_types[i]
                )));
            }
            self.avail.entry(v).or_default().push((local, results[i].clone()));
        }
        Ok(())
    }

    /// Visits a computed node: picks factor axes from its operands, adds the Megatron
    /// column-parallel seed, and emits it.
    pub fn visit(&mut self, node: NodeId) -> Result<(), ShardError> {
        let src = self.an.src;
        let n = src.node(node);
        if let Op::ShardingConstraint { sharding } = &n.op {
            return self.constrain(node, sharding);
        }
        let rule = rule_of(src, node);
        let mut assignment: Vec<Vec<String>> = vec![Vec::new(); rule.factor_sizes.len()];
        // An optimizer update splits like its parameter as this stage holds it, so the updated
        // parameter and state come out in the parameter's own sharding (a rank keeps its
        // blocks across steps); the gradient is resharded (all-reduced over data) to match.
        // Its state is then split exactly like the parameter, whatever the gradient's split.
        let param_sharding = match n.op {
            Op::Sgd(_) | Op::AdamW(_) => n.inputs.first().and_then(|&p| self.current(p)),
            _ => None,
        };
        if let Some(param) = &param_sharding {
            for (d, axes) in param.dims.iter().enumerate() {
                if let Some(Some(f)) = rule.operands[0].get(d) {
                    try_assign(self.an.mesh, &rule, &mut assignment, *f, axes);
                }
            }
        }
        for (i, &v) in n.inputs.iter().enumerate() {
            if self.an.free[v.index()] {
                continue;
            }
            if !self.avail.contains_key(&v) {
                // From an earlier stage, or an input: define it in its own sharding.
                let natural = self.received.get(&v).map(|(_, s)| s.clone()).or_else(|| self.an.seeds.get(&v).cloned());
                let natural = natural.unwrap_or_else(|| Sharding::replicated(src.value(v).ty.rank()));
                self.define(v, &natural)?;
            }
            let Some(current) = self.current(v) else { continue };
            if param_sharding.is_some() {
                continue;
            }
            for (d, axes) in current.dims.iter().enumerate() {
                if let Some(Some(f)) = rule.operands[i].get(d) {
                    try_assign(self.an.mesh, &rule, &mut assignment, *f, axes);
                }
            }
        }
        // Megatron: a matmul whose weight is still free splits its output columns over the
        // tensor axis when that axis is unused (column-parallel); when the activation already
        // splits the contraction over it, the weight becomes row-parallel through the rule.
        if matches!(n.op, Op::MatMul) && n.inputs.len() == 2 && self.an.free[n.inputs[1].index()] {
            let tp = &self.an.config.tensor_axis;
            let used = assignment.iter().flatten().any(|a| a == tp);
            if !used && self.an.mesh.axis_size(tp).is_some_and(|s| s > 1) {
                if let Some(Some(f)) = rule.results[0].last() {
                    try_assign(self.an.mesh, &rule, &mut assignment, *f, std::slice::from_ref(tp));
                }
            }
        }
        self.emit_node(node, &rule, &assignment)
    }

    /// A `tsr.sharding_constraint`: its operand resharded into the constraint's sharding (what
    /// collectives that takes), which is then its result's local value; the op itself emits
    /// nothing, so what follows starts from the constrained layout.
    fn constrain(&mut self, node: NodeId, sharding: &Sharding) -> Result<(), ShardError> {
        let src = self.an.src;
        let n = src.node(node);
        let (Some(&x), Some(&y)) = (n.inputs.first(), n.outputs.first()) else {
            return Err(self.internal("tsr.sharding_constraint without its operand or result".into()));
        };
        let fail = |message: String| ShardError::Constraint { value: src.value(y).name.clone(), message };
        if sharding.used_axes().any(|a| *a == self.an.config.pipeline_axis) {
            return Err(fail(format!("the pipeline axis '{}' cannot split a value", self.an.config.pipeline_axis)));
        }
        sharding.check(self.an.mesh, &src.value(x).ty).map_err(fail)?;
        if !self.an.free[x.index()] && !self.avail.contains_key(&x) {
            let natural = self.received.get(&x).map(|(_, s)| s.clone()).or_else(|| self.an.seeds.get(&x).cloned());
            self.define(x, &natural.unwrap_or_else(|| Sharding::replicated(src.value(x).ty.rank())))?;
        }
        let local = self.get(x, sharding)?;
        self.avail.entry(y).or_default().push((local, sharding.clone()));
        Ok(())
    }

    /// The local value of `v` as it is (partial or not), defining it if needed.
    pub fn get_any(&mut self, v: ValueId) -> Result<(ValueId, Sharding), ShardError> {
        if !self.avail.contains_key(&v) {
            let rank = self.an.src.value(v).ty.rank();
            self.define(v, &Sharding::replicated(rank))?;
        }
        self.avail
            .get(&v)
            .and_then(|l| l.first())
            .cloned()
            .ok_or_else(|| self.internal(format!("%{} has no local value", self.an.src.value(v).name)))
    }

    /// Emits `send`s of `v` (as it is) to the stages in `to`; returns the sharding sent.
    pub fn send(&mut self, v: ValueId, to: &[usize]) -> Result<Sharding, ShardError> {
        let (local, sharding) = self.get_any(v)?;
        for &stage in to {
            let op = Op::Collective(Collective::Send {
                mesh_axis: self.an.config.pipeline_axis.clone(),
                peer: stage as i64,
                tag: v.index() as i64,
            });
            self.emit(op, &[local], vec![])?;
        }
        Ok(sharding)
    }

    /// Sets the program outputs to the given source values in the given shardings, under their
    /// source names.
    pub fn finish_outputs(&mut self, wanted: &[(ValueId, Sharding)]) -> Result<(), ShardError> {
        let src = self.an.src;
        let mut outputs = Vec::new();
        for (v, sharding) in wanted {
            outputs.push(self.get(*v, sharding)?);
        }
        self.output_shardings = wanted.iter().map(|(_, s)| s.clone()).collect();
        // A resharded output takes the source name; the local block it came from is renamed.
        for (&(v, _), &local) in wanted.iter().zip(&outputs) {
            let name = src.value(v).name.clone();
            if self.out.value(local).name == name {
                continue;
            }
            let holder = self.out.values().find(|(_, val)| val.name == name).map(|(id, _)| id);
            if let Some(holder) = holder {
                let renamed = self.fresh(&name, "block");
                self.out.rename_value(holder, &renamed);
            }
            self.out.rename_value(local, &name);
        }
        self.out.set_outputs(outputs);
        Ok(())
    }
}

fn rule_of(src: &Graph, node: NodeId) -> ShardingRule {
    let n = src.node(node);
    let operands: Vec<&TensorType> = n.inputs.iter().map(|&v| &src.value(v).ty).collect();
    let results: Vec<TensorType> = n.outputs.iter().map(|&v| src.value(v).ty.clone()).collect();
    n.op.sharding_rule(&operands, &results)
}

/// Gives factor `f` the axes `axes` when it has none yet, none of them is taken by another
/// factor, and they divide its extent.
fn try_assign(mesh: &Mesh, rule: &ShardingRule, assignment: &mut [Vec<String>], f: usize, axes: &[String]) {
    if axes.is_empty() || !assignment[f].is_empty() {
        return;
    }
    if axes.iter().any(|a| assignment.iter().flatten().any(|b| b == a)) {
        return;
    }
    let (Some(Some(extent)), Ok(parts)) = (rule.factor_sizes.get(f), mesh.group_size(axes)) else {
        return;
    };
    // A reduction factor is only split when the op can leave partial results.
    if !rule.is_parallel(f) && rule.reduction.is_none() {
        return;
    }
    if parts > 1 && extent % parts == 0 {
        assignment[f] = axes.to_vec();
    }
}

/// The op as one rank runs it: targets and slice bounds of split dimensions become local.
fn localize(op: &Op, results: &[Sharding], local_types: &[TensorType]) -> Op {
    match op {
        Op::Reshape { .. } => Op::Reshape { shape: local_types[0].dims.clone() },
        Op::Broadcast { .. } => Op::Broadcast { shape: local_types[0].dims.clone() },
        Op::Slice { starts, ends, steps } => {
            let (mut starts, mut ends, mut steps) = (starts.clone(), ends.clone(), steps.clone());
            for (d, axes) in results[0].dims.iter().enumerate() {
                if !axes.is_empty() {
                    starts[d] = 0;
                    ends[d] = local_types[0].dims[d].as_static().map_or(i64::MAX, |n| n as i64);
                    steps[d] = 1;
                }
            }
            Op::Slice { starts, ends, steps }
        }
        other => other.clone(),
    }
}
