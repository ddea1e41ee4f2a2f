//! The `shard` pass: partitions any verified graph over a named device mesh into per-rank
//! programs with explicit collectives.
//!
//! Mesh axes have roles by name: `pp` splits the graph into pipeline stages ([`stages`]: exact
//! balance of roofline time, `send`/`recv` at the cuts), `dp` splits the first dimension of
//! activation inputs (data parallelism), `tp` splits matmul weights Megatron-style (column
//! parallel, then row parallel with an all-reduce of the partial sums). Other axes are used only
//! through user seeds ([`ShardConfig::seeds`]). Propagation and collective insertion are in
//! [`partition()`] and [`reshard`]; every op follows its family's sharding rule
//! ([`tessera_ir::ops::Op::sharding_rule`]), and ops without one are replicated.
//!
//! Invariants of the result:
//! - every rank of a stage runs the same program (SPMD): collectives name mesh axes, never
//!   ranks, so one program per stage is printed with its rank list;
//! - program types are local (the block one rank holds); program inputs carry the sharding the
//!   caller must feed ([`ShardedModule::rank_inputs`] cuts them from global tensors);
//! - the last stage's outputs are the source outputs, replicated, under their source names, so
//!   every rank of the last stage returns exactly what the single-device interpreter returns;
//!   except for training steps ([`ShardConfig::for_train_step`]): there an output tied to an
//!   input (`w.next` to `w`) leaves every stage holding the input in the input's sharding (a
//!   rank's block of it), and the other outputs (the loss) leave every stage, replicated;
//! - stages are built together in one program order and exchange values with `send`/`recv`
//!   right before their first use, in both directions (backward passes send gradients back);
//!   a training step's stages are then reordered into their pipeline schedule ([`schedule`]:
//!   GPipe, 1F1B, interleaved 1F1B), which never changes what a node computes, and the result
//!   is checked to be deadlock-free;
//! - a dimension is split only when the axes divide it; uneven or symbolic dimensions stay whole,
//!   except the batch of an activation input, which the data axis must divide (an error says so).
//!
//! # Partitioning and training steps
//!
//! **`passes::shard`**: `partition(graph, mesh)` gives one program per pipeline stage. Mesh axes
//! have roles by name: `dp` splits activation inputs' first dimension, `tp` splits matmul weights
//! Megatron-style (column-parallel, then row-parallel through the rule), `pp` cuts the computed
//! nodes into contiguous stages balanced exactly (dynamic programming over roofline times) with
//! `send`/`recv` at the cuts. Propagation visits computed nodes in program order and picks factor
//! axes from operands through `Op::sharding_rule`; parameters and what depends only on them
//! (*free* values: transposes, casts, bias broadcasts) are materialized lazily in the sharding the
//! first consumer asks for, so weights arrive pre-split. `reshard` plans the collectives between two
//! shardings (reduce partials by `reduce_scatter`/`all_reduce`, move an axis by `all_to_all`, gather
//! to the common prefix, split by `all_slice`). `tessera opt --pipeline 'shard{mesh=...}'` prints
//! the programs; passes after `shard` run on each of them.
//!
//! *Training steps* (`ShardConfig::for_train_step`, or read off the `sgd`/`adamw` ops of a step
//! given as text): optimizer state inputs are free like parameters (so they arrive split like
//! their parameter, which the update, elementwise, follows); `w.next` is *tied* to `w` and leaves
//! every stage that holds `w` in `w`'s sharding; the loss is returned by every stage. `dp`
//! gradients are partial sums of the batch-split matmuls, all-reduced when the update asks for
//! the parameter's (dp-replicated) sharding: no special case. `cross_entropy` splits its rows as a
//! partial sum of local means scaled by `1/parts`. Pipeline stages come from *layer groups*
//! (`TrainStep::node_groups`: the forward-graph node each step node instantiates or, through
//! `autodiff::differentiate_traced`, differentiates; the loss after every layer; an update with
//! its parameter's first use), cut into contiguous runs (`pp * interleave` runs with interleaving:
//! run `j` is chunk `j / pp` of stage `j % pp`); all stage programs are built together in one
//! program order, with a `send`/`recv` pair right before a value's first use on another stage,
//! forward and backward alike.
//!
//! # Invariants
//!
//! - **Per-rank programs are SPMD and local.** Collectives name mesh axes, never ranks, so every
//!   rank of a stage runs the same program; every type in it is the block one rank holds. A
//!   dimension is split only when its static extent is divisible by the axes' sizes (symbolic and
//!   uneven dimensions stay whole, which is always correct); only an activation's batch that the
//!   data axis does not divide is an error. The last stage returns the source outputs replicated,
//!   under their source names, so multi-rank runs are compared with the interpreter directly.
//! - **Shardings print in comments.** `// input %w1: [{}, {tp}]` before each program (and
//!   `partial_sum{tp}` for partial values in the text form of `ir::sharding`), so the programs stay
//!   plain MLIR that `--check-mlir` accepts; collectives are ordinary `tsr` ops with string
//!   `mesh_axes` and an integer `group_size`, so the shape rule needs no mesh.
//! - **A partitioned training step keeps each rank's blocks in place.** Each parameter's
//!   optimizer state is split exactly like the parameter, and the updated parameter and state
//!   leave in the parameter's input sharding, so a rank never gathers its weights between steps.
//!   Every mesh starts from the single-process initial weights cut per rank and reads the same
//!   data stream, so its losses equal one process's up to the order of partial sums (1e-9 in f64,
//!   tested on dp=4, tp=4, pp=4, dp=2×tp=2, tp=2×pp=2). Backward nodes and updates run on the
//!   stage of the layer they belong to.

pub mod partition;
pub mod reshard;
pub mod schedule;
pub mod stages;

use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, MeshError, Sharding};
use tessera_ir::tensor::Tensor;

pub use schedule::{Phase, PipelineSchedule, Unit};

const PASS: &str = "shard";

pub const MESH: OptionSpec =
    OptionSpec { name: "mesh", default: OptionValue::Str(Cow::Borrowed("")), help: "device mesh, e.g. dp=2,tp=4,pp=2" };

pub static OPTIONS: &[OptionSpec] = &[MESH];

/// What to partition over.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub mesh: Mesh,
    /// The axis that splits activation inputs' first dimension.
    pub data_axis: String,
    /// The axis that splits matmul weights.
    pub tensor_axis: String,
    /// The axis along which the graph is cut into pipeline stages.
    pub pipeline_axis: String,
    /// Shardings for graph inputs by name, overriding the role-based seeds.
    pub seeds: Vec<(String, Sharding)>,
    /// Activation inputs that are per-parameter state (optimizer moments): like parameters,
    /// they are loaded in the sharding their first consumer (the update) asks for.
    pub state_inputs: Vec<String>,
    /// `(output, input)` pairs: the output leaves in the input's sharding, from every stage that
    /// holds the input (`w.next` ties to `w`, so a rank keeps its blocks from step to step).
    pub output_ties: Vec<(String, String)>,
    /// Untied outputs are returned (replicated) by every stage, not only by the last.
    pub outputs_on_every_stage: bool,
    /// Pipeline stage assignment by layer: per source node, its group (e.g.
    /// [`crate::train_step::TrainStep::node_groups`]). Groups are cut into contiguous runs,
    /// one per stage, balancing the roofline time of the nodes in them; a computed node
    /// without a group goes to the latest stage of its operands. Without groups the computed
    /// nodes themselves are cut in program order.
    pub node_groups: Option<Vec<Option<usize>>>,
    /// Per source node of a training step: its micro-batch and phase, so pipeline stages run
    /// their work in [`ShardConfig::schedule`]'s order. Without it a stage runs in program
    /// order (every micro-batch's forward, then the backward).
    pub node_units: Option<NodeUnits>,
    /// The pipeline schedule (with layer groups, its `interleave` chunks per stage).
    pub schedule: PipelineSchedule,
}

/// The micro-batch and phase of each node of a training step graph (see
/// [`ShardConfig::node_units`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUnits {
    pub micro_batches: usize,
    /// Per source node: `(micro-batch, phase)`, or `None` for work of no single micro-batch
    /// (weight casts, gradient sums, updates, the loss sum).
    pub of_node: Vec<Option<(usize, Phase)>>,
}

impl NodeUnits {
    /// Reads them off a step graph: a node belongs to micro-batch `k` when the inputs of `k`
    /// (and of no other micro-batch) reach it; it is backward when it comes after the loss
    /// (the step builder appends the backward after every forward and the loss).
    pub fn of_train_step(step: &crate::train_step::TrainStep) -> NodeUnits {
        #[derive(Clone, Copy, PartialEq)]
        enum Reach {
            No,
            One(usize),
            Many,
        }
        let g = &step.graph;
        let mut reach = vec![Reach::No; g.num_values()];
        for (k, mb) in step.micro_batches.iter().enumerate() {
            for name in mb.activations.iter().map(|(n, _)| n).chain([&mb.targets]) {
                if let Some(&v) = g.inputs().iter().find(|&&v| g.value(v).name == *name) {
                    reach[v.index()] = Reach::One(k);
                }
            }
        }
        let loss = g.outputs().iter().find(|&&v| g.value(v).name == "loss").and_then(|&v| g.producer(v));
        let mut of_node = Vec::with_capacity(g.num_nodes());
        for (id, n) in g.nodes() {
            let r = n.inputs.iter().fold(Reach::No, |acc, v| match (acc, reach[v.index()]) {
                (a, Reach::No) => a,
                (Reach::No, b) => b,
                (Reach::One(a), Reach::One(b)) if a == b => Reach::One(a),
                _ => Reach::Many,
            });
            for v in &n.outputs {
                reach[v.index()] = r;
            }
            let phase = if loss.is_some_and(|l| id > l) { Phase::Backward } else { Phase::Forward };
            of_node.push(match r {
                Reach::One(k) => Some((k, phase)),
                _ => None,
            });
        }
        NodeUnits { micro_batches: step.micro_batches.len(), of_node }
    }
}

impl ShardConfig {
    /// The default roles: `dp`, `tp`, `pp`.
    pub fn new(mesh: Mesh) -> ShardConfig {
        ShardConfig {
            mesh,
            data_axis: "dp".into(),
            tensor_axis: "tp".into(),
            pipeline_axis: "pp".into(),
            seeds: vec![],
            state_inputs: vec![],
            output_ties: vec![],
            outputs_on_every_stage: false,
            node_groups: None,
            node_units: None,
            schedule: PipelineSchedule::default(),
        }
    }

    /// The training roles read off a step graph itself (for a graph given as text, e.g. to
    /// `tessera opt`): every `sgd`/`adamw` makes its state operands state inputs and ties each
    /// of its results that is a graph output to the operand it updates; the loss then goes to
    /// every stage. Stages stay a cut of program order (no layer groups in text).
    pub fn with_training_roles_of(mut self, g: &Graph) -> ShardConfig {
        use tessera_ir::ops::Op;
        for (_, n) in g.nodes() {
            let states = match n.op {
                Op::Sgd(_) => 1,
                Op::AdamW(_) => 2,
                _ => continue,
            };
            // Result 0 updates operand 0 (the parameter), result j >= 1 operand j + 1 (state).
            let updated = |j: usize| if j == 0 { n.inputs.first() } else { n.inputs.get(j + 1) };
            for &s in n.inputs.iter().skip(2).take(states) {
                if g.producer(s).is_none() {
                    self.state_inputs.push(g.value(s).name.clone());
                }
            }
            for (j, out) in n.outputs.iter().enumerate() {
                if let (true, Some(&input)) = (g.outputs().contains(out), updated(j)) {
                    if g.producer(input).is_none() {
                        self.output_ties.push((g.value(*out).name.clone(), g.value(input).name.clone()));
                    }
                }
            }
        }
        self.outputs_on_every_stage |= !self.output_ties.is_empty();
        self
    }

    /// The configuration for a training step graph: optimizer state like parameters, updated
    /// parameters and state tied to their inputs, the loss on every stage, and pipeline stages
    /// cut between layers.
    pub fn for_train_step(mesh: Mesh, step: &crate::train_step::TrainStep) -> ShardConfig {
        let mut ties: Vec<(String, String)> = Vec::new();
        for slot in step.params.iter().chain(&step.state) {
            ties.push((format!("{}.next", slot.name), slot.name.clone()));
        }
        ShardConfig {
            state_inputs: step.state.iter().map(|s| s.name.clone()).collect(),
            output_ties: ties,
            outputs_on_every_stage: true,
            node_groups: Some(step.node_groups.clone()),
            node_units: Some(NodeUnits::of_train_step(step)),
            ..ShardConfig::new(mesh)
        }
    }
}

/// Why a graph could not be partitioned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("the input graph does not verify: {0}")]
    InvalidInput(tessera_ir::verify::VerifyError),
    #[error("the graph already has communication (tsr.{op}); shard partitions single-device graphs")]
    AlreadyPartitioned { op: &'static str },
    #[error("seed for %{value}: {message}")]
    Seed { value: String, message: String },
    #[error("sharding constraint on %{value}: {message}")]
    Constraint { value: String, message: String },
    #[error("pipeline axis {axis}={stages} needs at least {stages} compute nodes, the graph has {nodes}")]
    TooManyStages { axis: String, stages: usize, nodes: usize },
    #[error("data axis {axis}={size} does not divide the batch (first) dimension of input %{input}: {ty}")]
    UnevenBatch { input: String, ty: String, axis: String, size: u64 },
    #[error("stage {stage}: internal error: {message}")]
    Internal { stage: usize, message: String },
    #[error("{0}")]
    Feed(String),
    #[error("the per-rank program's {node}: {message}")]
    RankProgram { node: String, message: String },
    #[error("pipeline schedule {schedule}: {message}")]
    Schedule { schedule: PipelineSchedule, message: String },
}

/// One pipeline stage's program, which every rank in `ranks` runs.
#[derive(Debug, Clone)]
pub struct StageProgram {
    pub stage: usize,
    pub ranks: Vec<usize>,
    pub graph: Graph,
    /// The sharding of each program input, in order.
    pub input_shardings: Vec<Sharding>,
    /// The sharding of each program output, in order.
    pub output_shardings: Vec<Sharding>,
    /// Collectives (including `send`/`recv`) in the program.
    pub collectives: usize,
    /// Roofline time of the stage's computed nodes at global shapes (for balance reports).
    pub roofline_s: f64,
    /// The order the program runs its micro-batches' work in (empty: program order).
    pub schedule: Vec<Unit>,
}

/// The per-rank programs of a partitioned graph.
#[derive(Debug, Clone)]
pub struct ShardedModule {
    pub mesh: Mesh,
    pub stages: Vec<StageProgram>,
}

impl ShardedModule {
    /// A program that is already per-rank (its collectives name axes of `mesh`, as an imported
    /// `shard_map` body does) as the one stage every rank runs, its inputs and outputs
    /// replicated: every rank reads the global inputs and returns the global outputs.
    pub fn of_rank_program(g: &Graph, mesh: &Mesh) -> Result<ShardedModule, ShardError> {
        tessera_ir::verify::verify(g).map_err(ShardError::InvalidInput)?;
        let mut collectives = 0;
        for (id, n) in g.nodes() {
            let Op::Collective(c) = &n.op else { continue };
            collectives += 1;
            let node = || format!("tsr.{} (node {})", n.op.mnemonic(), id.index());
            let Some(group) = c.group() else {
                let message = "send/recv join pipeline stages; every rank runs this one program".to_string();
                return Err(ShardError::RankProgram { node: node(), message });
            };
            if mesh.group_size(&group.axes).ok() != Some(group.size) {
                let message = format!(
                    "mesh axes {} of group size {} are not axes of the mesh {mesh}",
                    group.axes.join(","),
                    group.size
                );
                return Err(ShardError::RankProgram { node: node(), message });
            }
        }
        let replicated =
            |values: &[ValueId]| values.iter().map(|&v| Sharding::replicated(g.value(v).ty.rank())).collect();
        let stage = StageProgram {
            stage: 0,
            ranks: (0..mesh.num_devices()).collect(),
            graph: g.clone(),
            input_shardings: replicated(g.inputs()),
            output_shardings: replicated(g.outputs()),
            collectives,
            roofline_s: 0.0,
            schedule: Vec::new(),
        };
        Ok(ShardedModule { mesh: mesh.clone(), stages: vec![stage] })
    }

    /// The program rank `rank` runs.
    pub fn program_of(&self, rank: usize) -> Option<&StageProgram> {
        self.stages.iter().find(|s| s.ranks.contains(&rank))
    }

    /// Rank `rank`'s inputs, cut from the global inputs (by name) by the program's shardings.
    pub fn rank_inputs(&self, rank: usize, global: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, ShardError> {
        let program = self.program_of(rank).ok_or_else(|| ShardError::Feed(format!("no program runs rank {rank}")))?;
        let g = &program.graph;
        g.inputs()
            .iter()
            .zip(&program.input_shardings)
            .map(|(&v, sharding)| {
                let name = &g.value(v).name;
                let t = global
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .ok_or_else(|| ShardError::Feed(format!("missing input '{name}'")))?;
                let block = sharding
                    .shard_tensor(&self.mesh, rank, t)
                    .map_err(|m| ShardError::Feed(format!("input '{name}': {m}")))?;
                Ok((name.clone(), block))
            })
            .collect()
    }

    /// Every program as MLIR text, each preceded by `//` comments giving the mesh, the ranks
    /// that run it and the sharding of each input (comments keep the text valid MLIR).
    pub fn print(&self) -> String {
        let mut out = String::new();
        let n_stages = self.stages.len();
        for p in &self.stages {
            let _ = writeln!(out, "// mesh: {} ({} ranks)", self.mesh, self.mesh.num_devices());
            if n_stages > 1 {
                let _ = writeln!(out, "// pipeline stage {} of {n_stages}", p.stage);
            }
            let _ = writeln!(out, "// ranks: {}", rank_list(&p.ranks));
            if !p.schedule.is_empty() {
                let units: Vec<String> = p.schedule.iter().map(Unit::to_string).collect();
                let _ = writeln!(out, "// schedule: {}", units.join(" "));
            }
            for (&v, s) in p.graph.inputs().iter().zip(&p.input_shardings) {
                let _ = writeln!(out, "// input %{}: {s}", p.graph.value(v).name);
            }
            out.push_str(&tessera_ir::mlir::print_graph(&p.graph));
        }
        out
    }
}

/// `0-3` for a run, `0, 2` otherwise.
fn rank_list(ranks: &[usize]) -> String {
    let contiguous = ranks.windows(2).all(|w| w[1] == w[0] + 1);
    match (ranks.first(), ranks.last()) {
        (Some(a), Some(b)) if contiguous && ranks.len() > 2 => format!("{a}-{b}"),
        _ => ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// Partitions `g` over `config.mesh` into per-stage programs.
pub fn partition(g: &Graph, config: &ShardConfig) -> Result<ShardedModule, ShardError> {
    tessera_ir::verify::verify(g).map_err(ShardError::InvalidInput)?;
    let mesh = &config.mesh;
    let n_stages = mesh.axis_size(&config.pipeline_axis).unwrap_or(1) as usize;
    for (name, s) in &config.seeds {
        if s.used_axes().any(|a| *a == config.pipeline_axis) {
            return Err(ShardError::Seed {
                value: name.clone(),
                message: format!("the pipeline axis '{}' cannot split a value", config.pipeline_axis),
            });
        }
    }
    let an = partition::Analysis::new(g, mesh, config)?;
    let computed = an.computed_nodes();
    if computed.len() < n_stages {
        return Err(ShardError::TooManyStages {
            axis: config.pipeline_axis.clone(),
            stages: n_stages,
            nodes: computed.len(),
        });
    }
    let times = stages::node_times(g, &computed);
    // With layer groups, the groups are cut into `pp * interleave` runs (virtual stages); run
    // `j` is chunk `j / pp` of stage `j % pp`.
    let scheduled = config.node_units.as_ref().filter(|u| n_stages > 1 && u.of_node.len() == g.num_nodes());
    let chunks = match (&config.node_groups, scheduled) {
        (Some(_), Some(units)) => {
            let schedule = config.schedule;
            schedule
                .check(n_stages, units.micro_batches)
                .map_err(|message| ShardError::Schedule { schedule, message })?;
            schedule.interleave
        }
        _ => 1,
    };
    let run_of_node = match &config.node_groups {
        Some(groups) if n_stages > 1 => {
            stages::by_groups(g, &computed, &times, groups, n_stages * chunks, &config.pipeline_axis)?
        }
        _ => stages::balance(&times, n_stages),
    };
    let stage_of_node: Vec<usize> = run_of_node.iter().map(|r| r % n_stages).collect();
    let chunk_of: HashMap<tessera_ir::graph::NodeId, usize> =
        computed.iter().zip(&run_of_node).map(|(&id, r)| (id, r / n_stages)).collect();
    // Every stage's program is built at once, visiting the computed nodes in program order: a
    // value another stage needs is sent (as it is, maybe partial) right before its first use
    // there, and received at the same point. Every program is a subsequence of one global order
    // with each `recv` after its `send`, so the stages cannot wait on each other in a cycle.
    let mut builders: Vec<partition::StageBuilder<'_, '_>> =
        (0..n_stages).map(|stage| partition::StageBuilder::new(&an, stage)).collect();
    let mut stage_of_value: HashMap<ValueId, usize> = HashMap::new();
    for (i, &id) in computed.iter().enumerate() {
        let stage = stage_of_node[i];
        // What this stage emits now (receives included) is for `id`; the sender's part is not.
        builders[stage].current = Some(id);
        for &v in &g.node(id).inputs {
            if let Some(&from) = stage_of_value.get(&v) {
                transfer(&mut builders, v, from, stage)?;
            }
        }
        builders[stage].visit(id)?;
        builders[stage].current = None;
        for &v in &g.node(id).outputs {
            stage_of_value.insert(v, stage);
        }
    }
    let wanted = route_outputs(g, config, &mut builders, &stage_of_value, n_stages)?;
    let mut programs = Vec::with_capacity(n_stages);
    let mut units_of_stage: Vec<Vec<Option<Unit>>> = Vec::with_capacity(n_stages);
    for (stage, mut b) in builders.into_iter().enumerate() {
        b.finish_outputs(&wanted[stage])?;
        let graph = b.out;
        let mut schedule = Vec::new();
        if let (Some(units), Some(_)) = (scheduled, &config.node_groups) {
            schedule = config.schedule.units(stage, n_stages, units.micro_batches);
            // A node's unit is its source node's, on the source node's chunk.
            let unit_of: Vec<Option<Unit>> = b
                .origins
                .iter()
                .map(|origin| {
                    let src = (*origin)?;
                    let (micro_batch, phase) = units.of_node[src.index()]?;
                    Some(Unit { phase, micro_batch, chunk: chunk_of.get(&src).copied().unwrap_or(0) })
                })
                .collect();
            units_of_stage.push(unit_of);
        }
        let ranks = (0..mesh.num_devices())
            .filter(|&r| match mesh.axes().iter().position(|a| a.name == config.pipeline_axis) {
                Some(i) => mesh.coords(r)[i] == stage as u64,
                None => true,
            })
            .collect();
        let roofline_s = computed
            .iter()
            .zip(&times)
            .enumerate()
            .filter(|(i, _)| stage_of_node[*i] == stage)
            .map(|(_, (_, t))| t)
            .sum();
        programs.push(StageProgram {
            stage,
            ranks,
            graph,
            input_shardings: b.input_shardings,
            output_shardings: b.output_shardings,
            collectives: b.collectives,
            roofline_s,
            schedule,
        });
    }
    if units_of_stage.len() == n_stages {
        let mut graphs: Vec<Graph> =
            programs.iter_mut().map(|p| std::mem::replace(&mut p.graph, Graph::new(""))).collect();
        let orders: Vec<Vec<Unit>> = programs.iter().map(|p| p.schedule.clone()).collect();
        let result = schedule::reorder_stages(&mut graphs, &units_of_stage, &orders);
        for (p, graph) in programs.iter_mut().zip(graphs) {
            p.graph = graph;
        }
        result.map_err(|message| ShardError::Schedule { schedule: config.schedule, message })?;
    }
    for p in &programs {
        tessera_ir::verify::verify(&p.graph).map_err(|e| ShardError::Internal {
            stage: p.stage,
            message: format!("the stage program does not verify: {e}"),
        })?;
    }
    Ok(ShardedModule { mesh: mesh.clone(), stages: programs })
}

/// Where each graph output goes, sending it there: a tied output to every stage holding its
/// input, in that input's sharding; the others replicated to the last stage (or to every stage).
/// Returns, per stage, the outputs it must produce with their shardings.
fn route_outputs(
    g: &Graph,
    config: &ShardConfig,
    builders: &mut [partition::StageBuilder<'_, '_>],
    stage_of_value: &HashMap<ValueId, usize>,
    n_stages: usize,
) -> Result<Vec<Vec<(ValueId, Sharding)>>, ShardError> {
    let mut wanted: Vec<Vec<(ValueId, Sharding)>> = vec![Vec::new(); n_stages];
    for &v in g.outputs() {
        let name = &g.value(v).name;
        let tied = config
            .output_ties
            .iter()
            .find(|(out, _)| out == name)
            .and_then(|(_, input)| g.inputs().iter().copied().find(|&i| g.value(i).name == *input));
        let mut targets: Vec<(usize, Sharding)> = Vec::new();
        if let Some(input) = tied {
            for (stage, b) in builders.iter().enumerate() {
                if let Some(sharding) = b.input_sharding(input) {
                    targets.push((stage, sharding));
                }
            }
        }
        if targets.is_empty() {
            let whole = Sharding::replicated(g.value(v).ty.rank());
            let from = if config.outputs_on_every_stage { 0 } else { n_stages - 1 };
            targets = (from..n_stages).map(|stage| (stage, whole.clone())).collect();
        }
        for (stage, sharding) in targets {
            if let Some(&from) = stage_of_value.get(&v) {
                transfer(builders, v, from, stage)?;
            }
            wanted[stage].push((v, sharding));
        }
    }
    Ok(wanted)
}

/// Makes source value `v`, computed on stage `from`, available on stage `to`: a `send` of it as
/// it is on `from` and the matching `recv` on `to`, unless `to` has it already.
fn transfer(
    builders: &mut [partition::StageBuilder<'_, '_>],
    v: ValueId,
    from: usize,
    to: usize,
) -> Result<(), ShardError> {
    if from == to || builders[to].has(v) {
        return Ok(());
    }
    let sharding = builders[from].send(v, &[to])?;
    builders[to].receive(v, from, sharding)
}

/// The mesh option of a `shard` invocation.
pub fn config_from_options(options: &PassOptions) -> Result<ShardConfig, PassError> {
    let text = options.str(PASS, &MESH)?;
    if text.is_empty() {
        return Err(PassError::Failed { pass: PASS, message: "needs a mesh, e.g. shard{mesh=dp=2,tp=4}".into() });
    }
    let mesh = Mesh::parse(text).map_err(|e| PassError::Failed { pass: PASS, message: e.to_string() })?;
    Ok(ShardConfig::new(mesh))
}

/// The registered pass. A pass maps one graph to one graph, but `shard` makes one program per
/// pipeline stage; inside a plain pipeline it therefore checks that the graph partitions and
/// leaves it unchanged. `tessera opt` runs it as the partitioning step and prints the programs.
pub fn run(g: &mut Graph, options: &PassOptions) -> Result<PassStats, PassError> {
    let config = config_from_options(options)?.with_training_roles_of(g);
    let module = partition(g, &config).map_err(|e| PassError::Failed { pass: PASS, message: e.to_string() })?;
    let mut stats = PassStats::default();
    stats.counters.insert("stages", module.stages.len());
    stats.counters.insert("collectives", module.stages.iter().map(|s| s.collectives).sum());
    Ok(stats)
}
