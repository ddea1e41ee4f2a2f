//! The `shard` pass: partitions any verified graph over a named device mesh into per-rank
//! programs with explicit collectives.
//!
//! Mesh axes have roles by name: `pp` splits the graph into pipeline stages ([`stages`]: exact
//! balance of roofline time, `send`/`recv` at the cuts), `dp` splits the first dimension of
//! activation inputs (data parallelism), `tp` splits matmul weights Megatron-style (column
//! parallel, then row parallel with an all-reduce of the partial sums). Other axes are used only
//! through user seeds ([`ShardConfig::seeds`]). Propagation and collective insertion are in
//! [`partition`] and [`reshard`]; every op follows its family's sharding rule
//! ([`tessera_ir::ops::Op::sharding_rule`]), and ops without one are replicated.
//!
//! Invariants of the result:
//! - every rank of a stage runs the same program (SPMD): collectives name mesh axes, never
//!   ranks, so one program per stage is printed with its rank list;
//! - program types are local (the block one rank holds); program inputs carry the sharding the
//!   caller must feed ([`ShardedModule::rank_inputs`] cuts them from global tensors);
//! - the last stage's outputs are the source outputs, replicated, under their source names, so
//!   every rank of the last stage returns exactly what the single-device interpreter returns;
//! - a dimension is split only when the axes divide it; uneven or symbolic dimensions stay whole,
//!   except the batch of an activation input, which the data axis must divide (an error says so).

pub mod partition;
pub mod reshard;
pub mod stages;

use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::sharding::{Mesh, MeshError, Sharding};
use tessera_ir::tensor::Tensor;

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
    #[error("pipeline axis {axis}={stages} needs at least {stages} compute nodes, the graph has {nodes}")]
    TooManyStages { axis: String, stages: usize, nodes: usize },
    #[error("data axis {axis}={size} does not divide the batch (first) dimension of input %{input}: {ty}")]
    UnevenBatch { input: String, ty: String, axis: String, size: u64 },
    #[error("stage {stage}: internal error: {message}")]
    Internal { stage: usize, message: String },
    #[error("{0}")]
    Feed(String),
}

/// One pipeline stage's program, which every rank in `ranks` runs.
#[derive(Debug, Clone)]
pub struct StageProgram {
    pub stage: usize,
    pub ranks: Vec<usize>,
    pub graph: Graph,
    /// The sharding of each program input, in order.
    pub input_shardings: Vec<Sharding>,
    /// Collectives (including `send`/`recv`) in the program.
    pub collectives: usize,
    /// Roofline time of the stage's computed nodes at global shapes (for balance reports).
    pub roofline_s: f64,
}

/// The per-rank programs of a partitioned graph.
#[derive(Debug, Clone)]
pub struct ShardedModule {
    pub mesh: Mesh,
    pub stages: Vec<StageProgram>,
}

impl ShardedModule {
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
    let stage_of_node = stages::balance(&times, n_stages);
    // Which later stages read each computed value; the last stage reads the outputs.
    let mut stage_of_value: HashMap<ValueId, usize> = HashMap::new();
    for (i, &id) in computed.iter().enumerate() {
        for &v in &g.node(id).outputs {
            stage_of_value.insert(v, stage_of_node[i]);
        }
    }
    let mut readers: BTreeMap<ValueId, BTreeSet<usize>> = BTreeMap::new();
    for (i, &id) in computed.iter().enumerate() {
        for v in &g.node(id).inputs {
            if let Some(&s) = stage_of_value.get(v) {
                if s < stage_of_node[i] {
                    readers.entry(*v).or_default().insert(stage_of_node[i]);
                }
            }
        }
    }
    for v in g.outputs() {
        if let Some(&s) = stage_of_value.get(v) {
            if s + 1 < n_stages {
                readers.entry(*v).or_default().insert(n_stages - 1);
            }
        }
    }
    let mut received: HashMap<ValueId, (usize, Sharding)> = HashMap::new();
    let mut programs = Vec::with_capacity(n_stages);
    for stage in 0..n_stages {
        let mut sent = Vec::new();
        let (graph, input_shardings, collectives) = {
            let mut b = partition::StageBuilder::new(&an, stage, &received);
            for (i, &id) in computed.iter().enumerate() {
                if stage_of_node[i] == stage {
                    b.visit(id)?;
                }
            }
            for (&v, to) in &readers {
                if stage_of_value.get(&v) == Some(&stage) {
                    let to: Vec<usize> = to.iter().copied().collect();
                    sent.push((v, b.send(v, &to)?));
                }
            }
            if stage + 1 == n_stages {
                b.finish_outputs()?;
            }
            (b.out, b.input_shardings, b.collectives)
        };
        for (v, sharding) in sent {
            received.insert(v, (stage, sharding));
        }
        tessera_ir::verify::verify(&graph)
            .map_err(|e| ShardError::Internal { stage, message: format!("the stage program does not verify: {e}") })?;
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
        programs.push(StageProgram { stage, ranks, graph, input_shardings, collectives, roofline_s });
    }
    Ok(ShardedModule { mesh: mesh.clone(), stages: programs })
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
    let config = config_from_options(options)?;
    let module = partition(g, &config).map_err(|e| PassError::Failed { pass: PASS, message: e.to_string() })?;
    let mut stats = PassStats::default();
    stats.counters.insert("stages", module.stages.len());
    stats.counters.insert("collectives", module.stages.iter().map(|s| s.collectives).sum());
    Ok(stats)
}
