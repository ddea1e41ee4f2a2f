//! What the cost model prices: a model as runs of identical blocks, each block's graph built
//! on demand for a shape and sharding, and profiled once per distinct shape.
//!
//! Repeated layers are the reason this is fast: a 128-layer model has three distinct blocks
//! (embedding, layer, head), so every candidate plan reuses a handful of profiles.

use crate::cost::hardware::Device;
use crate::cost::profile::{profile, BlockGraph, BlockProfile};
use crate::cost::CostError;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_ir::graph::Graph;
use tessera_ir::types::Dim;

/// Which block of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    Embedding,
    /// The `i`-th distinct kind of layer.
    Layer(usize),
    Head,
}

/// The shapes and sharding one rank's graph of a block is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Sequences per micro-batch.
    pub batch: u64,
    /// New tokens per sequence.
    pub seq: u64,
    pub tp: u64,
    pub ep: u64,
    pub training: bool,
    /// Tokens already cached (serving).
    pub kv_cache: u64,
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
    /// Whether the graph can be split over tensor-parallel ranks (zoo models can, arbitrary
    /// graphs not yet) and over expert-parallel ranks.
    fn max_tp(&self) -> u64;
    fn experts(&self) -> u64;
    /// Model-specific limits on one knob value (tp must divide the heads, ...).
    fn check_tp(&self, tp: u64) -> Result<(), KnobError>;
    fn check_ep(&self, ep: u64) -> Result<(), KnobError>;
    /// Builds one rank's graph of `block`.
    fn build(&self, block: BlockKind, shape: &Shape) -> Result<BlockGraph, String>;

    fn layers(&self) -> u64 {
        self.layer_runs().iter().map(|&(_, n)| n).sum()
    }
}

/// Profiles by block and shape, built once each.
pub struct ProfileCache<'w> {
    workload: &'w dyn Workload,
    device: Device,
    profiles: HashMap<(BlockKind, Shape), Arc<BlockProfile>>,
}

impl<'w> ProfileCache<'w> {
    pub fn new(workload: &'w dyn Workload, device: &Device) -> ProfileCache<'w> {
        ProfileCache { workload, device: device.clone(), profiles: HashMap::new() }
    }

    pub fn workload(&self) -> &'w dyn Workload {
        self.workload
    }

    pub fn get(&mut self, block: BlockKind, shape: &Shape) -> Result<Arc<BlockProfile>, CostError> {
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

    /// How many distinct block profiles were built.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// Any graph as a workload: one block, replicated on every rank (data parallelism and ZeRO
/// only, until sharding propagation can split arbitrary graphs). A symbolic dimension named
/// `batch` takes the micro-batch size and one named `seq` the sequence length; any other
/// symbolic dimension is an error.
pub struct GraphWorkload {
    pub graph: Graph,
    pub seq: u64,
}

impl Workload for GraphWorkload {
    fn name(&self) -> &str {
        &self.graph.name
    }

    fn layer_runs(&self) -> Vec<(usize, u64)> {
        vec![(0, 1)]
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
            .filter(|&&v| g.input_role(v) == Some(tessera_ir::graph::InputRole::Parameter))
            .filter_map(|&v| g.value(v).ty.num_elements())
            .sum()
    }

    fn max_tp(&self) -> u64 {
        1
    }

    fn experts(&self) -> u64 {
        0
    }

    fn check_tp(&self, tp: u64) -> Result<(), KnobError> {
        if tp == 1 {
            return Ok(());
        }
        let message = "tensor parallelism needs a zoo model (arbitrary graphs are not sharded yet)".to_string();
        Err(KnobError { knob: "tp", message })
    }

    fn check_ep(&self, ep: u64) -> Result<(), KnobError> {
        if ep == 1 {
            return Ok(());
        }
        Err(KnobError { knob: "ep", message: "expert parallelism needs an MoE zoo model".to_string() })
    }

    fn build(&self, _block: BlockKind, shape: &Shape) -> Result<BlockGraph, String> {
        let bindings = HashMap::from([("batch".to_string(), shape.batch), ("seq".to_string(), shape.seq)]);
        let mut g = Graph::new(&self.graph.name);
        // Rebuild with bound types: inputs first, then nodes with their result types bound.
        let bind = |ty: &tessera_ir::types::TensorType| -> Result<tessera_ir::types::TensorType, String> {
            let bound = ty.substitute(&bindings);
            match bound.dims.iter().find(|d| matches!(d, Dim::Symbolic(_))) {
                Some(d) => Err(format!("symbolic dimension '{d}' has no size (only batch and seq are bound)")),
                None => Ok(bound),
            }
        };
        let mut value_map = vec![None; self.graph.num_values()];
        for &v in self.graph.inputs() {
            let value = self.graph.value(v);
            let role = self.graph.input_role(v).unwrap_or(tessera_ir::graph::InputRole::Activation);
            value_map[v.index()] = Some(g.add_input(&value.name, bind(&value.ty)?, role));
        }
        for (_, node) in self.graph.nodes() {
            let inputs = node.inputs.iter().map(|v| value_map[v.index()].unwrap_or(*v)).collect();
            let results = node
                .outputs
                .iter()
                .map(|&v| Ok((self.graph.value(v).name.clone(), bind(&self.graph.value(v).ty)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let id = g.add_node_unchecked(node.op.clone(), inputs, results);
            for (i, &v) in node.outputs.iter().enumerate() {
                value_map[v.index()] = Some(g.node(id).outputs[i]);
            }
        }
        g.set_outputs(self.graph.outputs().iter().map(|v| value_map[v.index()].unwrap_or(*v)).collect());
        // Every float activation input is data the gradient reaches (as a layer's input).
        let stream_inputs = g
            .inputs()
            .iter()
            .copied()
            .filter(|&v| g.input_role(v) != Some(tessera_ir::graph::InputRole::Parameter))
            .filter(|&v| g.value(v).ty.dtype.is_float())
            .collect();
        Ok(BlockGraph { stream_inputs, ..BlockGraph::plain(g) })
    }
}
