//! What the cost model prices: a model as runs of identical blocks, each block's graph built
//! on demand for a shape and sharding, and profiled once per distinct shape.
//!
//! Repeated layers are the reason this is fast: a 128-layer model has three distinct blocks
//! (embedding, layer, head), so every candidate plan reuses a handful of profiles.

use crate::cost::profile::{profile, BlockGraph, BlockProfile, TENSOR_AXIS};
use crate::cost::CostError;
use crate::shard::partition::Analysis;
use crate::shard::{ShardConfig, ShardedModule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::hardware::DeviceSpec;
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::sharding::Mesh;
use tessera_ir::types::Dim;
use tessera_ir::workload::BlockShape;

/// The mesh axis a graph's pipeline stages are cut along (the shard pass's default role).
const PIPELINE_AXIS: &str = "pp";

/// Which block of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    Embedding,
    /// The `i`-th distinct kind of layer.
    Layer(usize),
    Head,
}

/// A knob that cannot work for a model, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{knob}: {message}")]
pub struct KnobError {
    pub knob: &'static str,
    pub message: String,
}

/// A model the planner can split.
pub trait Workload {
    fn name(&self) -> &str;
    /// Layers in pipeline order as runs `(kind, count)` of identical layers.
    fn layer_runs(&self) -> Vec<(usize, u64)>;
    fn has_embedding(&self) -> bool;
    fn has_head(&self) -> bool;
    /// The head reuses the embedding table (the first and last stage sync its gradient).
    fn tied_embeddings(&self) -> bool;
    /// The default sequence length.
    fn seq(&self) -> u64;
    /// Parameters of the whole model, counted once.
    fn parameters(&self) -> u64;
    /// The most tensor-parallel ranks the graph can be split over, and the number of experts.
    fn max_tp(&self) -> u64;
    fn experts(&self) -> u64;
    /// Model-specific limits on one knob value (tp must divide the heads, ...).
    fn check_tp(&self, tp: u64) -> Result<(), KnobError>;
    fn check_ep(&self, ep: u64) -> Result<(), KnobError>;
    /// Builds one rank's graph of `block`.
    fn build(&self, block: BlockKind, shape: &BlockShape) -> Result<BlockGraph, String>;

    fn layers(&self) -> u64 {
        self.layer_runs().iter().map(|&(_, n)| n).sum()
    }

    /// Whether `pp` pipeline stages can cut the model (by default: no more stages than layers).
    fn check_pp(&self, pp: u64) -> Result<(), KnobError> {
        let layers = self.layers();
        if pp > layers {
            return Err(KnobError { knob: "pp", message: format!("pp={pp} is larger than the {layers} layers") });
        }
        Ok(())
    }

    /// `None` when the step model cuts [`Workload::layer_runs`] into stages itself (runs of
    /// repeated layers, interleaving allowed); `Some(kinds)` when the workload is cut into one
    /// program per stage: stage `s` of a `pp`-stage pipeline runs block `Layer(kinds[s])` once
    /// and nothing else (no separate embedding or head, no interleaving).
    fn stage_programs(&self, _pp: u64) -> Option<Vec<usize>> {
        None
    }

    /// The sequences one run of the block graphs processes when that is fixed (a model file
    /// without a symbolic `batch` dimension): every micro-batch is then this size.
    fn fixed_micro_batch(&self) -> Option<u64> {
        None
    }

    /// Whether the tensor-parallel blocks support sequence parallelism (the replicated part
    /// split over the tensor-parallel ranks).
    fn sequence_parallel(&self) -> bool {
        true
    }
}

/// Profiles by block and shape, built once each.
pub struct ProfileCache<'w> {
    workload: &'w dyn Workload,
    device: DeviceSpec,
    profiles: HashMap<(BlockKind, BlockShape), Arc<BlockProfile>>,
    splits: HashMap<(BlockShape, bool, u64), Arc<Vec<usize>>>,
}

impl<'w> ProfileCache<'w> {
    pub fn new(workload: &'w dyn Workload, device: &DeviceSpec) -> ProfileCache<'w> {
        ProfileCache { workload, device: device.clone(), profiles: HashMap::new(), splits: HashMap::new() }
    }

    pub fn workload(&self) -> &'w dyn Workload {
        self.workload
    }

    pub fn get(&mut self, block: BlockKind, shape: &BlockShape) -> Result<Arc<BlockProfile>, CostError> {
        if let Some(p) = self.profiles.get(&(block, *shape)) {
            return Ok(p.clone());
        }
        let graph = self
            .workload
            .build(block, shape)
            .map_err(|message| CostError::Build { block: format!("{block:?}"), message })?;
        let p = Arc::new(profile(&graph, &self.device)?);
        self.profiles.insert((block, *shape), p.clone());
        Ok(p)
    }

    /// The chunk of each item (the embedding, the layers, the head) when a pipeline cuts them
    /// into `chunks` contiguous runs: [`crate::shard::stages::balance`], the shard pass's exact
    /// balancer, over `weights()`, computed once per shape, sequence split and chunk count.
    pub fn chunks(
        &mut self,
        shape: &BlockShape,
        sequence_parallel: bool,
        chunks: u64,
        weights: impl FnOnce() -> Vec<f64>,
    ) -> Arc<Vec<usize>> {
        let key = (*shape, sequence_parallel, chunks);
        self.splits
            .entry(key)
            .or_insert_with(|| Arc::new(crate::shard::stages::balance(&weights(), chunks as usize)))
            .clone()
    }

    /// How many distinct block profiles were built.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// Any graph as a workload, partitioned by the `shard` pass: for `tp` tensor-parallel ranks and
/// `pp` pipeline stages the graph is cut into per-stage programs over the mesh `tp=T,pp=P`
/// ([`crate::shard::partition()`]: Megatron seeds, propagation, collectives, stages balanced by
/// exact dynamic programming), and each stage's program is priced as one block with its local
/// types and explicit collectives. Data parallelism replicates those programs (the step model
/// adds the gradient sync and ZeRO). The batch dimension ([`SymbolicDims::batch`], `batch` by
/// default) takes the micro-batch size and the sequence dimension (`seq`) the sequence length;
/// any other symbolic dimension is an error. A graph without a symbolic batch dimension runs its
/// static batch per micro-batch ([`Workload::fixed_micro_batch`]), so the planner counts
/// micro-batches of that size.
pub struct GraphWorkload {
    graph: Graph,
    seq: u64,
    dims: SymbolicDims,
    /// Nodes the shard pass computes (not folded from parameters alone): the deepest pipeline.
    computed: u64,
    /// The static batch of a graph without a symbolic `batch` dimension (the first dimension
    /// of its first activation input, 1 without one).
    static_batch: Option<u64>,
    partitions: Mutex<HashMap<PartitionKey, Arc<ShardedModule>>>,
}

/// Partitions built so far are keyed by (micro-batch, sequence, tp, pp).
type PartitionKey = (u64, u64, u64, u64);

/// Block kinds of a graph's stage programs: every (pipeline depth, stage) pair has its own kind,
/// so the profiles of different cuts never mix. Depth `p` uses kinds `p(p-1)/2 .. p(p+1)/2`;
/// kind 0 is the whole graph.
pub fn stage_kind(pp: u64, stage: u64) -> usize {
    (pp * (pp - 1) / 2 + stage) as usize
}

/// The (pipeline depth, stage) of a [`stage_kind`].
fn kind_stage(kind: usize) -> (u64, u64) {
    let mut pp = 1u64;
    while stage_kind(pp + 1, 0) <= kind {
        pp += 1;
    }
    (pp, kind as u64 - stage_kind(pp, 0) as u64)
}

impl GraphWorkload {
    /// Checks the graph partitions (no collectives yet, it verifies) and counts what a
    /// pipeline can cut.
    pub fn new(graph: Graph, seq: u64) -> Result<GraphWorkload, CostError> {
        GraphWorkload::with_dims(graph, seq, SymbolicDims::default())
    }

    /// [`GraphWorkload::new`] for a graph whose batch and sequence dimensions are named `dims`
    /// (see [`SymbolicDims::infer`]).
    pub fn with_dims(graph: Graph, seq: u64, dims: SymbolicDims) -> Result<GraphWorkload, CostError> {
        let mesh = Mesh::new(&[(PIPELINE_AXIS, 1)]).map_err(CostError::Invalid)?;
        let config = ShardConfig::new(mesh.clone());
        tessera_ir::verify::verify(&graph)
            .map_err(|e| CostError::Invalid(format!("the graph does not verify: {e}")))?;
        let computed = Analysis::new(&graph, &mesh, &config)
            .map_err(|e| CostError::Invalid(e.to_string()))?
            .computed_nodes()
            .len() as u64;
        let batch_dim = Dim::sym(&dims.batch);
        let symbolic_batch = graph.values().any(|(_, v)| v.ty.dims.contains(&batch_dim));
        let static_batch = (!symbolic_batch).then(|| {
            let first = graph.inputs().iter().find(|&&v| graph.input_role(v) != Some(InputRole::Parameter));
            first.and_then(|&v| graph.value(v).ty.dims.first().and_then(Dim::as_static)).unwrap_or(1)
        });
        Ok(GraphWorkload { graph, seq, dims, computed, static_batch, partitions: Mutex::new(HashMap::new()) })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph with its batch and sequence dimensions bound.
    fn bound(&self, batch: u64, seq: u64) -> Result<Graph, String> {
        let bindings = HashMap::from([(self.dims.batch.clone(), batch), (self.dims.seq.clone(), seq)]);
        let mut g = Graph::new(&self.graph.name);
        // Rebuild with bound types: inputs first, then nodes with their result types bound.
        let bind = |ty: &tessera_ir::types::TensorType| -> Result<tessera_ir::types::TensorType, String> {
            let bound = ty.substitute(&bindings).map_err(|e| e.to_string())?;
            match bound.dims.iter().find(|d| matches!(d, Dim::Symbolic(_))) {
                Some(d) => Err(format!(
                    "symbolic dimension '{d}' has no size (only the batch dimension '{}' and the sequence dimension '{}' are bound)",
                    self.dims.batch, self.dims.seq
                )),
                None => Ok(bound),
            }
        };
        let bind_dims = |dims: &[Dim]| -> Result<Vec<Dim>, String> {
            tessera_ir::types::bind_dims(dims, &bindings).map_err(|e| e.to_string())
        };
        let mut value_map = vec![None; self.graph.num_values()];
        for &v in self.graph.inputs() {
            let value = self.graph.value(v);
            let role = self.graph.input_role(v).unwrap_or(InputRole::Activation);
            value_map[v.index()] = Some(g.add_input(&value.name, bind(&value.ty)?, role));
        }
        for (_, node) in self.graph.nodes() {
            let inputs = node.inputs.iter().map(|v| value_map[v.index()].unwrap_or(*v)).collect();
            let results = node
                .outputs
                .iter()
                .map(|&v| Ok((self.graph.value(v).name.clone(), bind(&self.graph.value(v).ty)?)))
                .collect::<Result<Vec<_>, String>>()?;
            // Reshape and broadcast targets name the same symbolic dimensions as the types.
            let op = match &node.op {
                Op::Reshape { shape } => Op::Reshape { shape: bind_dims(shape)? },
                Op::Broadcast { shape } => Op::Broadcast { shape: bind_dims(shape)? },
                other => other.clone(),
            };
            let id = g.add_node_unchecked(op, inputs, results);
            for (i, &v) in node.outputs.iter().enumerate() {
                value_map[v.index()] = Some(g.node(id).outputs[i]);
            }
        }
        g.set_outputs(self.graph.outputs().iter().map(|v| value_map[v.index()].unwrap_or(*v)).collect());
        Ok(g)
    }

    /// The per-stage programs for `shape` over `tp` ranks and `pp` stages, built once.
    pub fn partitioned(&self, shape: &BlockShape, pp: u64) -> Result<Arc<ShardedModule>, String> {
        let key = (shape.batch, shape.seq, shape.tp, pp);
        if let Some(m) = self.partitions.lock().map_err(|_| "a partition build panicked".to_string())?.get(&key) {
            return Ok(m.clone());
        }
        let g = self.bound(shape.batch, shape.seq)?;
        let mesh = Mesh::new(&[(TENSOR_AXIS, shape.tp), (PIPELINE_AXIS, pp)])?;
        let module = Arc::new(crate::shard::partition(&g, &ShardConfig::new(mesh)).map_err(|e| e.to_string())?);
        self.partitions.lock().map_err(|_| "a partition build panicked".to_string())?.insert(key, module.clone());
        Ok(module)
    }
}

/// Which symbolic dimensions of a graph are its batch and its sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicDims {
    pub batch: String,
    pub seq: String,
}

impl Default for SymbolicDims {
    /// tsr's own spelling: `batch` and `seq`.
    fn default() -> SymbolicDims {
        SymbolicDims { batch: "batch".to_string(), seq: "seq".to_string() }
    }
}

/// Why the batch and sequence dimensions of a graph cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}; the inputs' dimensions: {inputs}")]
pub struct DimsError {
    pub message: String,
    /// Every activation input with its dimensions, e.g. `input_ids [batch, sequence]`.
    pub inputs: String,
}

impl SymbolicDims {
    /// Names the batch and sequence dimensions of `graph` from its activation inputs' symbolic
    /// dimensions: `batch` and `seq` when named (`--batch-dim`, `--seq-dim`), else the one
    /// dimension whose name says so (batch: `batch`, `batch_size`, `bs`, `b`, `n`, or any name
    /// containing "batch"; sequence: `seq`, `sequence`, `seq_len`, `sequence_length`, `s`, `t`,
    /// `tokens`, `length`, or any name containing "seq"). Every symbolic dimension must be one of
    /// the two; a graph may lack either.
    pub fn infer(graph: &Graph, batch: Option<&str>, seq: Option<&str>) -> Result<SymbolicDims, DimsError> {
        let activations: Vec<ValueId> =
            graph.inputs().iter().copied().filter(|&v| graph.input_role(v) != Some(InputRole::Parameter)).collect();
        let inputs = activations
            .iter()
            .map(|&v| {
                let dims: Vec<String> = graph.value(v).ty.dims.iter().map(|d| d.to_string()).collect();
                format!("{} [{}]", graph.value(v).name, dims.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut symbolic: Vec<String> = Vec::new();
        for &v in &activations {
            for d in &graph.value(v).ty.dims {
                // Only a lone symbol can be the batch or the sequence: `2 * seq` is derived.
                if let Some(name) = match d {
                    Dim::Symbolic(e) => e.as_symbol(),
                    Dim::Static(_) => None,
                } {
                    if !symbolic.iter().any(|s| s == name) {
                        symbolic.push(name.to_string());
                    }
                }
            }
        }
        let error = |message: String| DimsError { message, inputs: inputs.clone() };
        let pick = |given: Option<&str>, what: &str, flag: &str, looks: fn(&str) -> bool| match given {
            Some(name) if symbolic.iter().any(|d| d == name) => Ok(Some(name.to_string())),
            Some(name) => Err(error(format!("{flag} {name}: the model has no symbolic dimension '{name}'"))),
            None => {
                let found: Vec<&String> = symbolic.iter().filter(|d| looks(&d.to_ascii_lowercase())).collect();
                match found.as_slice() {
                    [] => Ok(None),
                    [one] => Ok(Some(one.to_string())),
                    many => {
                        let names: Vec<&str> = many.iter().map(|d| d.as_str()).collect();
                        Err(error(format!(
                            "{} symbolic dimensions look like the {what} ({}); name one with {flag}",
                            names.len(),
                            names.join(", ")
                        )))
                    }
                }
            }
        };
        let batch = pick(batch, "batch", "--batch-dim", looks_like_batch)?;
        let seq = pick(seq, "sequence", "--seq-dim", looks_like_seq)?;
        if batch.is_some() && batch == seq {
            return Err(error("the batch and the sequence dimension must differ".to_string()));
        }
        if let Some(other) = symbolic.iter().find(|d| Some(*d) != batch.as_ref() && Some(*d) != seq.as_ref()) {
            return Err(error(format!(
                "symbolic dimension '{other}' is neither the batch nor the sequence: name them with --batch-dim and --seq-dim"
            )));
        }
        let default = SymbolicDims::default();
        Ok(SymbolicDims { batch: batch.unwrap_or(default.batch), seq: seq.unwrap_or(default.seq) })
    }

    /// Whether `graph` has the sequence dimension (then the planner needs a sequence length).
    pub fn has_seq(&self, graph: &Graph) -> bool {
        let seq = Dim::sym(&self.seq);
        graph.inputs().iter().any(|&v| graph.value(v).ty.dims.contains(&seq))
    }
}

fn looks_like_batch(name: &str) -> bool {
    name.contains("batch") || matches!(name, "bs" | "b" | "n")
}

fn looks_like_seq(name: &str) -> bool {
    name.contains("seq") || matches!(name, "s" | "t" | "tokens" | "length" | "len" | "seqlen")
}

/// Float activation inputs: data the gradient reaches.
fn float_activations(g: &Graph) -> Vec<ValueId> {
    g.inputs()
        .iter()
        .copied()
        .filter(|&v| g.input_role(v) != Some(InputRole::Parameter))
        .filter(|&v| g.value(v).ty.dtype.is_float())
        .collect()
}

impl Workload for GraphWorkload {
    fn name(&self) -> &str {
        &self.graph.name
    }

    fn layer_runs(&self) -> Vec<(usize, u64)> {
        vec![(stage_kind(1, 0), 1)]
    }

    fn has_embedding(&self) -> bool {
        false
    }

    fn has_head(&self) -> bool {
        false
    }

    fn tied_embeddings(&self) -> bool {
        false
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn parameters(&self) -> u64 {
        let g = &self.graph;
        g.inputs()
            .iter()
            .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
            .filter_map(|&v| g.value(v).ty.num_elements())
            .sum()
    }

    /// The shard pass splits what the ranks divide and keeps the rest whole, so any count
    /// partitions; the cost decides whether it pays.
    fn max_tp(&self) -> u64 {
        u64::MAX
    }

    fn experts(&self) -> u64 {
        0
    }

    fn check_tp(&self, _tp: u64) -> Result<(), KnobError> {
        Ok(())
    }

    fn check_ep(&self, ep: u64) -> Result<(), KnobError> {
        if ep == 1 {
            return Ok(());
        }
        Err(KnobError { knob: "ep", message: "expert parallelism needs an MoE zoo model".to_string() })
    }

    fn check_pp(&self, pp: u64) -> Result<(), KnobError> {
        if pp > self.computed {
            let message = format!("pp={pp} is larger than the {} computed nodes of the graph", self.computed);
            return Err(KnobError { knob: "pp", message });
        }
        Ok(())
    }

    fn fixed_micro_batch(&self) -> Option<u64> {
        self.static_batch
    }

    fn stage_programs(&self, pp: u64) -> Option<Vec<usize>> {
        Some((0..pp).map(|s| stage_kind(pp, s)).collect())
    }

    fn sequence_parallel(&self) -> bool {
        false
    }

    fn build(&self, block: BlockKind, shape: &BlockShape) -> Result<BlockGraph, String> {
        let BlockKind::Layer(kind) = block else {
            return Err(format!("a graph has no {block:?} block"));
        };
        let (pp, stage) = kind_stage(kind);
        if pp == 1 && shape.tp == 1 {
            let g = self.bound(shape.batch, shape.seq)?;
            let stream_inputs = float_activations(&g);
            return Ok(BlockGraph { stream_inputs, ..BlockGraph::plain(g) });
        }
        let module = self.partitioned(shape, pp)?;
        let program = module.stages.get(stage as usize).ok_or_else(|| format!("no stage {stage} of {pp}"))?;
        let g = program.graph.clone();
        let mut stream_inputs = float_activations(&g);
        for (_, n) in g.nodes() {
            if matches!(n.op, Op::Collective(Collective::Recv { .. })) {
                stream_inputs.extend(n.outputs.iter().copied());
            }
        }
        Ok(BlockGraph { stream_inputs, ..BlockGraph::plain(g) })
    }
}

#[cfg(test)]
mod tests {
    use super::{kind_stage, stage_kind, SymbolicDims};
    use tessera_ir::dtype::DType;
    use tessera_ir::graph::{Graph, InputRole};
    use tessera_ir::types::{Dim, TensorType};

    /// A graph whose activation inputs have the symbolic dimensions `inputs` and a weight with
    /// a symbolic-looking but static shape.
    fn graph_with(inputs: &[&[&str]]) -> Graph {
        let mut g = Graph::new("dims");
        for (i, dims) in inputs.iter().enumerate() {
            let dims = dims.iter().map(|d| Dim::sym(d)).collect();
            g.add_input(&format!("x{i}"), TensorType::new(DType::I64, dims), InputRole::Activation);
        }
        g.add_input("w", TensorType::new(DType::BF16, vec![Dim::Static(4)]), InputRole::Parameter);
        g
    }

    #[test]
    fn batch_and_sequence_are_found_by_name_or_named() {
        let g = graph_with(&[&["batch_size", "sequence_length"], &["sequence_length", "sequence_length"]]);
        let dims = SymbolicDims::infer(&g, None, None).expect("obvious names");
        assert_eq!(dims, SymbolicDims { batch: "batch_size".into(), seq: "sequence_length".into() });
        assert!(dims.has_seq(&g));

        let g = graph_with(&[&["s0", "s1"]]);
        let refused = SymbolicDims::infer(&g, None, None).expect_err("opaque names").to_string();
        assert_eq!(
            refused,
            "symbolic dimension 's0' is neither the batch nor the sequence: name them with --batch-dim and --seq-dim; the inputs' dimensions: x0 [s0, s1]"
        );
        let named = SymbolicDims::infer(&g, Some("s0"), Some("s1")).expect("named");
        assert_eq!(named, SymbolicDims { batch: "s0".into(), seq: "s1".into() });
        let same = SymbolicDims::infer(&g, Some("s0"), Some("s0")).expect_err("one dimension for both");
        assert!(same.to_string().starts_with("the batch and the sequence dimension must differ"), "{same}");

        // Only a batch: the sequence keeps tsr's default name and the graph has none.
        let g = graph_with(&[&["batch"]]);
        let dims = SymbolicDims::infer(&g, None, None).expect("batch only");
        assert_eq!(dims, SymbolicDims::default());
        assert!(!dims.has_seq(&g));

        let g = graph_with(&[&["batch", "seq_a"], &["batch", "seq_b"]]);
        let two = SymbolicDims::infer(&g, None, None).expect_err("two sequences").to_string();
        assert!(
            two.starts_with("2 symbolic dimensions look like the sequence (seq_a, seq_b); name one with --seq-dim"),
            "{two}"
        );
    }

    #[test]
    fn stage_kinds_are_distinct_per_depth_and_stage() {
        let mut seen = std::collections::HashSet::new();
        for pp in 1..=12 {
            for s in 0..pp {
                let k = stage_kind(pp, s);
                assert!(seen.insert(k), "kind {k} repeats");
                assert_eq!(kind_stage(k), (pp, s));
            }
        }
    }
}
