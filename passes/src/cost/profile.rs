//! What one block costs on one device per micro-batch: its graph grouped into kernels, each
//! priced by the roofline; the activations it stores for the backward pass; its parameters
//! and its collectives.
//!
//! Kernels. Elementwise ops (`unary`, `binary`, `compare`, `where`, `cast`, `rope`) fuse with
//! elementwise and layout producers whose result they alone read; layout ops (`reshape`,
//! `transpose`, `broadcast`, `split`, `slice`, `concat`) are views a kernel reads through, so a
//! group of nothing but layout ops and literals costs nothing; a normalization, softmax or
//! reduction absorbs an elementwise prologue whose only output it reads (Megatron's fused
//! scale-mask-softmax); matmuls and convolutions are kernels of their own. A kernel's bytes are
//! the values it reads from outside and the values it writes for others (`gather` reads only
//! the rows it gathers, `scatter` with `add` updates in place). Its time is
//! `max(flops / (peak * efficiency), bytes / (HBM bandwidth * memory_efficiency)) + overhead`,
//! with the matmul efficiency `gemm_efficiency * f(m) f(n) f(k)`, `f(d) = d / (d + half_dim)`:
//! small or skinny matmuls (attention over 64..160-wide heads) fill fewer tiles. FLOPs are
//! [`Op::flops`], as in [`crate::stats`] (a test checks the totals agree).
//!
//! Backward. Each kernel's backward is taken as twice its forward (the two matmuls of a
//! matmul's gradient; a streaming kernel's gradient reads the saved input and the incoming
//! gradient and writes one), so only forward times are stored.
//!
//! Stored activations. A node the gradient flows through (a result depending on a parameter
//! or on a stream input) keeps what its gradient needs: a matmul's operands, the input of a
//! norm or of a nonlinear activation, a softmax's output, the other factor of a product (a
//! dropout's 1-byte keep-mask rather than its f16 cast), gather/scatter indices. Views are
//! traced back to the tensor they view and each tensor counts once. Activation inputs other
//! than stream inputs and keep-masks (causal masks, rotary tables, routes, token ids) are
//! shared by all layers or tiny and not counted. On the Megatron GPT layer this reproduces
//! Korthikanti et al.'s `34 s b h + 5 a s^2 b` bytes (a test checks it), and what selective
//! recomputation drops (saved only by the attention core and produced inside it) is the
//! `5 a s^2 b` part.

use crate::cost::collective::CollectiveKind;
use crate::cost::CostError;
use serde::Serialize;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, NodeId, ValueId};
use tessera_ir::hardware::DeviceSpec;
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::elementwise::{BackwardKeeps, BinaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;

/// What a node is, for parallelism (see `tessera_frontend::zoo::build::Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// The same on every tensor-parallel rank; sequence parallelism splits it.
    Replicated,
    /// Works on this rank's shard.
    TensorParallel,
    /// Recomputed by selective recomputation.
    AttentionCore,
}

/// A collective a value needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comm {
    /// Partial sums over the tensor-parallel group.
    TpAllReduce(ValueId),
    /// Tokens to or from experts over the expert-parallel group.
    EpAllToAll(ValueId),
}

/// A block's graph on one rank with its annotations.
#[derive(Debug, Clone)]
pub struct BlockGraph {
    pub graph: Graph,
    /// One per node.
    pub regions: Vec<Region>,
    pub comms: Vec<Comm>,
    pub expert_params: Vec<ValueId>,
    /// Activation inputs gradients flow into; in a pipeline stage's program also the values
    /// it receives from earlier stages (results of `recv`).
    pub stream_inputs: Vec<ValueId>,
    /// Activation inputs that are KV cache (serving).
    pub cache_inputs: Vec<ValueId>,
}

impl BlockGraph {
    /// A graph without annotations: all nodes replicated, no collectives, no stream inputs.
    pub fn plain(graph: Graph) -> BlockGraph {
        let regions = vec![Region::Replicated; graph.num_nodes()];
        BlockGraph {
            graph,
            regions,
            comms: Vec::new(),
            expert_params: Vec::new(),
            stream_inputs: Vec::new(),
            cache_inputs: Vec::new(),
        }
    }
}

/// A quantity split by region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ByRegion {
    pub replicated: f64,
    pub tensor_parallel: f64,
    pub attention_core: f64,
}

impl ByRegion {
    pub fn total(&self) -> f64 {
        self.replicated + self.tensor_parallel + self.attention_core
    }

    pub fn get(&self, region: Region) -> f64 {
        match region {
            Region::Replicated => self.replicated,
            Region::TensorParallel => self.tensor_parallel,
            Region::AttentionCore => self.attention_core,
        }
    }

    fn add(&mut self, region: Region, x: f64) {
        match region {
            Region::Replicated => self.replicated += x,
            Region::TensorParallel => self.tensor_parallel += x,
            Region::AttentionCore => self.attention_core += x,
        }
    }

    /// The total with the replicated part divided by `sp` (sequence parallelism over `sp`
    /// ranks; 1 without it).
    pub fn with_sequence_split(&self, sp: f64) -> f64 {
        self.replicated / sp + self.tensor_parallel + self.attention_core
    }
}

/// One kernel of a block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kernel {
    /// The first node of the kernel, by its result's name.
    pub name: String,
    pub region: Region,
    pub flops: f64,
    pub bytes: f64,
    pub time_s: f64,
    /// Whether the roofline's compute side bound it.
    pub compute_bound: bool,
    /// A matmul's `(m, n, k, batch)` (batch: independent products of one batched matmul);
    /// `None` for every other kernel.
    pub matmul_dims: Option<(f64, f64, f64, f64)>,
}

/// A block's costs on one device, per micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockProfile {
    pub kernels: Vec<Kernel>,
    /// Forward time by region, seconds (backward is twice this).
    pub fwd_time: ByRegion,
    /// Forward FLOPs by region.
    pub fwd_flops: ByRegion,
    /// Activation bytes kept for backward without recomputation; `attention_core` is what
    /// selective recomputation drops.
    pub saved_bytes: ByRegion,
    /// Bytes of the stream inputs: what full recomputation keeps.
    pub stream_bytes: f64,
    /// Parameter elements and their bytes in the graph's dtype.
    pub params: f64,
    pub param_bytes: f64,
    /// The part of `params` that belongs to routed experts.
    pub expert_params: f64,
    /// Each parameter input by name with its (elements, bytes): a weight two blocks of one
    /// stage share (a tied token table, when the embedding and the head sit on one stage) is
    /// found by its name and counted once.
    pub named_params: Vec<(String, f64, f64)>,
    /// Each collective over the tensor-parallel group, with its bytes in NCCL's buffer
    /// convention (see [`crate::cost::collective`]): the zoo's partial sums
    /// ([`Comm::TpAllReduce`]) and the explicit collectives of a stage program.
    pub tp_comms: Vec<(CollectiveKind, f64)>,
    /// Bytes of each `send` (to a later pipeline stage) and of each `recv` of a stage program.
    pub sends: Vec<f64>,
    pub recvs: Vec<f64>,
    /// Bytes each rank sends in each all-to-all over the expert group.
    pub ep_comm_bytes: Vec<f64>,
    /// KV cache held as inputs (serving), bytes.
    pub cache_bytes: f64,
    /// The largest bytes one kernel reads and writes: a bound on transient buffers.
    pub peak_kernel_bytes: f64,
}

impl BlockProfile {
    /// The fraction of the block's kernel time the roofline's compute side bounds: the part
    /// a lower SM clock stretches.
    pub fn compute_bound_fraction(&self) -> f64 {
        let total: f64 = self.kernels.iter().map(|k| k.time_s).sum();
        let bound: f64 = self.kernels.iter().filter(|k| k.compute_bound).map(|k| k.time_s).sum();
        if total > 0.0 {
            bound / total
        } else {
            0.0
        }
    }
}

/// The mesh axis a stage program's collectives must name to be priced as tensor parallelism.
pub const TENSOR_AXIS: &str = "tp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Gemm,
    Elementwise,
    Layout,
    Reduction,
    Memory,
    Literal,
    /// Data movement between ranks: priced on links by the step model, never a kernel.
    Communication,
}

fn class(op: &Op) -> Class {
    match op {
        Op::MatMul | Op::Conv2d { .. } => Class::Gemm,
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Rope { .. }
        | Op::Iota { .. }
        | Op::Sgd(_)
        | Op::AdamW(_) => Class::Elementwise,
        Op::Reshape { .. }
        // An identity where it stays; `shard` turns it into the resharding collectives.
        | Op::ShardingConstraint { .. }
        | Op::Transpose { .. }
        | Op::Broadcast { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Concat { .. } => Class::Layout,
        Op::Softmax { .. }
        | Op::LayerNorm { .. }
        | Op::RmsNorm { .. }
        | Op::Reduce { .. }
        | Op::ArgMax { .. }
        | Op::Pool2d { .. }
        // A chain of small GEMMs with a serial dependence between steps: never fused, and far
        // from a GEMM's efficiency, so it is not priced as one.
        | Op::Recurrent { .. }
        // A branch is a whole sub-graph run as one step: never fused, priced by its FLOPs.
        | Op::If(_)
        // A loop is a whole sub-graph run per trip as one step: never fused.
        | Op::Loop(_)
        | Op::CrossEntropy => Class::Reduction,
        // Never runs to completion; nothing to price.
        Op::Trap(_) => Class::Literal,
        // Slicing out this rank's block of a replicated value is a view.
        Op::Collective(Collective::AllSlice { .. }) => Class::Layout,
        // Collectives move data and never fuse; the step model prices them on links, not here.
        Op::Collective(_) => Class::Communication,
        // Winograd transforms scatter and gather 4x4 tiles: memory-bound, never fused.
        Op::Gather { .. }
        | Op::Scatter { .. }
        | Op::WinogradInput { .. }
        | Op::WinogradWeight
        | Op::WinogradOutput { .. } => Class::Memory,
        Op::Constant(_) => Class::Literal,
    }
}

fn fusible(c: Class) -> bool {
    matches!(c, Class::Elementwise | Class::Layout | Class::Literal)
}

struct Sizes {
    elements: Vec<f64>,
    bytes: Vec<f64>,
    shapes: Vec<Vec<u64>>,
}

fn sizes(g: &Graph) -> Result<Sizes, CostError> {
    let mut s = Sizes { elements: Vec::new(), bytes: Vec::new(), shapes: Vec::new() };
    for (_, v) in g.values() {
        let shape = v.ty.static_shape().ok_or_else(|| CostError::Symbolic { value: v.name.clone() })?;
        let n = shape.iter().map(|&d| d as f64).product::<f64>();
        s.elements.push(n);
        s.bytes.push(n * v.ty.dtype.size_bytes() as f64);
        s.shapes.push(shape);
    }
    Ok(s)
}

/// [`Op::flops`] of a node, over the graph's static shapes.
fn node_flops(op: &Op, inputs: &[ValueId], outputs: &[ValueId], s: &Sizes) -> f64 {
    let shapes = |vs: &[ValueId]| vs.iter().map(|v| s.shapes[v.index()].as_slice()).collect::<Vec<_>>();
    op.flops(&shapes(inputs), &shapes(outputs)).unwrap_or(0) as f64
}

/// `(m, n, k, batch)` of a matmul or an implicit-GEMM convolution.
fn gemm_dims(op: &Op, inputs: &[ValueId], outputs: &[ValueId], s: &Sizes) -> (f64, f64, f64, f64) {
    let shape = |v: Option<&ValueId>| v.map(|v| s.shapes[v.index()].clone()).unwrap_or_default();
    let (a, b, out) = (shape(inputs.first()), shape(inputs.get(1)), shape(outputs.first()));
    let dim = |v: &[u64], from_end: usize| v.len().checked_sub(from_end).map_or(1.0, |i| v[i] as f64);
    match op {
        Op::Conv2d { .. } => {
            // Output [N, O, OH, OW], weight [O, C/g, KH, KW].
            let n = dim(&b, 4);
            let m = out.iter().map(|&d| d as f64).product::<f64>() / n.max(1.0);
            let k = b.iter().skip(1).map(|&d| d as f64).product::<f64>();
            (m, n, k, 1.0)
        }
        _ => {
            let (n, k) = (dim(&b, 1), dim(&a, 1));
            let total = out.iter().map(|&d| d as f64).product::<f64>();
            if b.len() == 2 {
                // A shared weight: the activation's leading dimensions are rows of one GEMM.
                let m = total / n.max(1.0);
                return (m, n, k, 1.0);
            }
            let m = dim(&a, 2);
            (m, n, k, total / (m * n).max(1.0))
        }
    }
}

/// Bytes a kernel reads for operand `v`: a view (reshape, transpose, broadcast) reads the
/// tensor it views, so a broadcast operand (grouped-query keys shared by query heads) costs
/// its source once.
fn read_bytes(g: &Graph, s: &Sizes, v: ValueId) -> f64 {
    let mut bytes = s.bytes[v.index()];
    let mut at = v;
    while let Some(p) = g.producer(at) {
        let node = g.node(p);
        match node.op {
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Broadcast { .. } | Op::Slice { .. } => {
                at = node.inputs[0];
                bytes = bytes.min(s.bytes[at.index()]);
            }
            // The pieces of a concatenation are read where they are (a KV cache and the new
            // token's keys).
            Op::Concat { .. } => {
                let pieces: f64 = node.inputs.iter().map(|&x| read_bytes(g, s, x)).sum();
                return bytes.min(pieces);
            }
            _ => break,
        }
    }
    bytes
}

/// Matmul efficiency for dims `m, n, k` (see the module doc).
pub fn gemm_efficiency(device: &DeviceSpec, m: f64, n: f64, k: f64) -> f64 {
    let f = |d: f64| d / (d + device.gemm_half_dim);
    device.gemm_efficiency * f(m) * f(n) * f(k)
}

struct Dsu(Vec<usize>);

impl Dsu {
    fn find(&mut self, i: usize) -> usize {
        let mut root = i;
        while self.0[root] != root {
            root = self.0[root];
        }
        let mut j = i;
        while self.0[j] != root {
            let next = self.0[j];
            self.0[j] = root;
            j = next;
        }
        root
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The later node is the representative, so a group is named by its last node.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[lo] = hi;
        }
    }
}

/// Prices `block` on `device`.
pub fn profile(block: &BlockGraph, device: &DeviceSpec) -> Result<BlockProfile, CostError> {
    let g = &block.graph;
    if block.regions.len() != g.num_nodes() {
        return Err(CostError::Malformed(format!(
            "{} regions for {} nodes in block '{}'",
            block.regions.len(),
            g.num_nodes(),
            g.name
        )));
    }
    let facts = BlockFacts::new(g)?;
    let group_of = fusion_groups(&facts);
    let priced = price_groups(block, device, &facts, &group_of);
    let saved_bytes = saved_activations(block, &facts.s, &facts.consumers);
    let (params, param_bytes, expert_params) = parameter_counts(block, &facts.s);
    let named_params = g
        .inputs()
        .iter()
        .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
        .map(|&v| (g.value(v).name.clone(), facts.s.elements[v.index()], facts.s.bytes[v.index()]))
        .collect();
    let comms = block_comms(block, &facts)?;
    let bytes_of = |v: &ValueId| facts.s.bytes.get(v.index()).copied().unwrap_or(0.0);
    Ok(BlockProfile {
        kernels: priced.kernels,
        fwd_time: priced.fwd_time,
        fwd_flops: priced.fwd_flops,
        saved_bytes,
        stream_bytes: block.stream_inputs.iter().map(bytes_of).sum(),
        params,
        param_bytes,
        expert_params,
        named_params,
        tp_comms: comms.tp_comms,
        sends: comms.sends,
        recvs: comms.recvs,
        ep_comm_bytes: comms.ep_comm_bytes,
        cache_bytes: block.cache_inputs.iter().map(bytes_of).sum(),
        peak_kernel_bytes: priced.peak_kernel_bytes,
    })
}

/// What the parts of a block's profile read: its nodes in order with their classes, and per
/// value its sizes, use count, consuming nodes and whether it is a graph output.
struct BlockFacts<'g> {
    g: &'g Graph,
    nodes: Vec<(NodeId, &'g tessera_ir::graph::Node)>,
    classes: Vec<Class>,
    uses: Vec<usize>,
    consumers: Vec<Vec<usize>>,
    is_output: Vec<bool>,
    s: Sizes,
}

impl<'g> BlockFacts<'g> {
    fn new(g: &'g Graph) -> Result<Self, CostError> {
        let s = sizes(g)?;
        let nodes: Vec<(NodeId, &tessera_ir::graph::Node)> = g.nodes().collect();
        let classes: Vec<Class> = nodes.iter().map(|(_, n)| class(&n.op)).collect();
        let uses = g.use_counts();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.num_values()];
        for (id, n) in &nodes {
            for v in &n.inputs {
                consumers[v.index()].push(id.index());
            }
        }
        let is_output: Vec<bool> = {
            let mut o = vec![false; g.num_values()];
            for v in g.outputs() {
                o[v.index()] = true;
            }
            o
        };
        Ok(BlockFacts { g, nodes, classes, uses, consumers, is_output, s })
    }
}

/// The fusion group of every node, named by its representative node.
fn fusion_groups(facts: &BlockFacts) -> Vec<usize> {
    let BlockFacts { g, nodes, classes, uses, consumers, is_output, .. } = facts;
    // Fusion groups.
    let mut dsu = Dsu((0..nodes.len()).collect());
    // Elementwise ops join elementwise producers; views join views. A view of a computed
    // result is not part of the kernel that computes it: readers read through it.
    for (id, n) in nodes {
        let c = classes[id.index()];
        for v in &n.inputs {
            let Some(p) = g.producer(*v) else { continue };
            let pc = classes[p.index()];
            let joins = match c {
                Class::Elementwise => matches!(pc, Class::Elementwise | Class::Literal),
                Class::Layout => matches!(pc, Class::Layout | Class::Literal),
                _ => false,
            };
            if joins && uses[v.index()] == 1 {
                dsu.union(id.index(), p.index());
            }
        }
    }
    // Values each group writes for readers outside it.
    let external_outputs = |dsu: &mut Dsu, group: usize| -> Vec<ValueId> {
        let mut out = Vec::new();
        for (id, n) in nodes {
            if dsu.find(id.index()) != group {
                continue;
            }
            for &v in &n.outputs {
                let outside = consumers[v.index()].iter().any(|&c| dsu.find(c) != group);
                if outside || is_output[v.index()] {
                    out.push(v);
                }
            }
        }
        out
    };
    for (id, n) in nodes {
        if classes[id.index()] != Class::Reduction {
            continue;
        }
        for v in &n.inputs {
            let Some(p) = g.producer(*v) else { continue };
            if !fusible(classes[p.index()]) || uses[v.index()] != 1 {
                continue;
            }
            let group = dsu.find(p.index());
            let has_elementwise =
                nodes.iter().any(|(m, _)| classes[m.index()] == Class::Elementwise && dsu.find(m.index()) == group);
            if has_elementwise && external_outputs(&mut dsu, group) == [*v] {
                dsu.union(id.index(), p.index());
            }
        }
    }

    (0..nodes.len()).map(|i| dsu.find(i)).collect()
}

/// The kernels of a block and their totals.
struct PricedGroups {
    kernels: Vec<Kernel>,
    fwd_time: ByRegion,
    fwd_flops: ByRegion,
    peak_kernel_bytes: f64,
}

/// Prices each fusion group as one kernel: roofline of its FLOPs and the bytes it reads and
/// writes, plus the launch overhead.
fn price_groups(block: &BlockGraph, device: &DeviceSpec, facts: &BlockFacts, group_of: &[usize]) -> PricedGroups {
    let BlockFacts { g, nodes, classes, consumers, is_output, s, .. } = facts;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, &r) in group_of.iter().enumerate() {
        members[r].push(i);
    }
    let mut kernels = Vec::new();
    let mut fwd_time = ByRegion::default();
    let mut fwd_flops = ByRegion::default();
    let mut peak_kernel_bytes: f64 = 0.0;
    let bandwidth = device.stream_bandwidth();
    for (root, group) in members.iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let in_group = |i: usize| group_of[i] == root;
        let mut flops = 0.0;
        for &i in group {
            let n = nodes[i].1;
            flops += node_flops(&n.op, &n.inputs, &n.outputs, s);
        }
        let does_work =
            group.iter().any(|&i| !matches!(classes[i], Class::Layout | Class::Literal | Class::Communication));
        let region = block.regions[root];
        if !does_work {
            fwd_flops.add(region, flops);
            continue;
        }
        let mut read: Vec<ValueId> = Vec::new();
        let mut written: Vec<ValueId> = Vec::new();
        for &i in group {
            let n = nodes[i].1;
            for &v in &n.inputs {
                let inside = g.producer(v).is_some_and(|p| in_group(p.index()));
                if !inside && !read.contains(&v) {
                    read.push(v);
                }
            }
            for &v in &n.outputs {
                if consumers[v.index()].iter().any(|&c| !in_group(c)) || is_output[v.index()] {
                    written.push(v);
                }
            }
        }
        let sum = |vs: &[ValueId]| vs.iter().map(|v| s.bytes[v.index()]).sum::<f64>();
        let sum_read = |vs: &[ValueId]| vs.iter().map(|&v| read_bytes(g, s, v)).sum::<f64>();
        let head = nodes[root].1;
        let mut matmul_dims = None;
        let (bytes, compute_s) = match (classes[root], &head.op) {
            (Class::Gemm, op) => {
                let (m, n, k, batch) = gemm_dims(op, &head.inputs, &head.outputs, s);
                matmul_dims = Some((m, n, k, batch));
                let dtype = g.value(head.inputs[0]).ty.dtype;
                let eff = gemm_efficiency(device, m, n, k);
                // A matmul too thin for tensor-core tiles (decoding) still runs at the vector rate.
                let rate = (device.peak_flops(dtype) * eff).max(device.vector_flops());
                (sum_read(&read) + sum(&written), flops / rate)
            }
            (Class::Memory, Op::Gather { .. }) => {
                // Reads the indices and only the gathered rows.
                let indices = head.inputs.get(1).map_or(0.0, |v| s.bytes[v.index()]);
                (indices + 2.0 * sum(&written), 0.0)
            }
            (Class::Memory, Op::Scatter { .. }) => {
                // In place: reads indices and updates, reads and writes the touched rows.
                let part = |i: usize| head.inputs.get(i).map_or(0.0, |v| s.bytes[v.index()]);
                (part(1) + 3.0 * part(2), flops / device.vector_flops())
            }
            _ => (sum_read(&read) + sum(&written), flops / device.vector_flops()),
        };
        let memory_s = bytes / bandwidth;
        let time_s = compute_s.max(memory_s) + device.kernel_overhead_s();
        peak_kernel_bytes = peak_kernel_bytes.max(bytes);
        fwd_time.add(region, time_s);
        fwd_flops.add(region, flops);
        kernels.push(Kernel {
            name: g.value(nodes[group[0]].1.outputs.first().copied().unwrap_or(ValueId(0))).name.clone(),
            region,
            flops,
            bytes,
            time_s,
            compute_bound: compute_s >= memory_s,
            matmul_dims,
        });
    }

    PricedGroups { kernels, fwd_time, fwd_flops, peak_kernel_bytes }
}

/// (parameters, their bytes, expert parameters) of the block's inputs.
fn parameter_counts(block: &BlockGraph, s: &Sizes) -> (f64, f64, f64) {
    let g = &block.graph;
    let mut params = 0.0;
    let mut param_bytes = 0.0;
    let mut expert_params = 0.0;
    for &v in g.inputs() {
        if g.input_role(v) == Some(InputRole::Parameter) {
            params += s.elements[v.index()];
            param_bytes += s.bytes[v.index()];
            if block.expert_params.contains(&v) {
                expert_params += s.elements[v.index()];
            }
        }
    }
    (params, param_bytes, expert_params)
}

/// The collectives a block's forward runs, by where the step model prices them.
struct BlockComms {
    tp_comms: Vec<(CollectiveKind, f64)>,
    sends: Vec<f64>,
    recvs: Vec<f64>,
    ep_comm_bytes: Vec<f64>,
}

/// The block's declared collectives and, in stage programs, its explicit collective ops.
fn block_comms(block: &BlockGraph, facts: &BlockFacts) -> Result<BlockComms, CostError> {
    let BlockFacts { nodes, s, .. } = facts;
    let bytes_of = |v: &ValueId| s.bytes.get(v.index()).copied().unwrap_or(0.0);
    let mut tp_comms: Vec<(CollectiveKind, f64)> = block
        .comms
        .iter()
        .filter_map(|c| match c {
            Comm::TpAllReduce(v) => Some((CollectiveKind::AllReduce, bytes_of(v))),
            Comm::EpAllToAll(_) => None,
        })
        .collect();
    let (mut sends, mut recvs) = (Vec::new(), Vec::new());
    for (_, n) in nodes {
        let Op::Collective(c) = &n.op else { continue };
        let operand = n.inputs.first().map_or(0.0, bytes_of);
        let result = n.outputs.first().map_or(0.0, bytes_of);
        let kind = match c {
            Collective::Send { .. } => {
                sends.push(operand);
                continue;
            }
            Collective::Recv { .. } => {
                recvs.push(result);
                continue;
            }
            Collective::AllSlice { .. } => continue,
            Collective::AllReduce { .. } => (CollectiveKind::AllReduce, operand),
            Collective::AllGather { .. } => (CollectiveKind::AllGather, result),
            Collective::ReduceScatter { .. } => (CollectiveKind::ReduceScatter, operand),
            Collective::AllToAll { .. } => (CollectiveKind::AllToAll, operand),
            // Every member's operand goes to one peer: priced as the all-to-all of the
            // operand, the priced kind whose traffic is closest (it keeps 1/G of it local).
            Collective::CollectivePermute { .. } => (CollectiveKind::AllToAll, operand),
        };
        // Stage programs name the tensor axis `tp` (the shard pass's default roles); the
        // data-parallel replicas' gradient sync is the step model's, not the program's.
        match c.group() {
            Some(group) if group.axes == [TENSOR_AXIS] => tp_comms.push(kind),
            other => {
                return Err(CostError::Malformed(format!(
                    "tsr.{} over {}: the cost model prices collectives over the '{TENSOR_AXIS}' axis only",
                    c.mnemonic(),
                    other.map_or("no group".to_string(), |g| g.joined())
                )))
            }
        }
    }
    let ep_comm_bytes = block
        .comms
        .iter()
        .filter_map(|c| match c {
            Comm::EpAllToAll(v) => Some(bytes_of(v)),
            Comm::TpAllReduce(_) => None,
        })
        .collect();
    Ok(BlockComms { tp_comms, sends, recvs, ep_comm_bytes })
}

/// See the module doc, "Stored activations".
fn saved_activations(block: &BlockGraph, s: &Sizes, consumers: &[Vec<usize>]) -> ByRegion {
    let g = &block.graph;
    let mut grad = vec![false; g.num_values()];
    for &v in g.inputs() {
        grad[v.index()] = g.input_role(v) == Some(InputRole::Parameter) || block.stream_inputs.contains(&v);
    }
    for (_, n) in g.nodes() {
        let any = n.inputs.iter().any(|v| grad[v.index()]);
        for v in &n.outputs {
            // A stage program's received values are its stream (the gradient leaves through them).
            grad[v.index()] = any || block.stream_inputs.contains(v);
        }
    }
    // The tensor a value views (through layout ops, and through casts of gradient-free values).
    let root = |mut v: ValueId| loop {
        let Some(p) = g.producer(v) else { return v };
        let node = g.node(p);
        let view =
            matches!(node.op, Op::Reshape { .. } | Op::Transpose { .. } | Op::Broadcast { .. } | Op::Slice { .. });
        let free_cast = matches!(node.op, Op::Cast { .. }) && !grad[v.index()];
        if view || free_cast {
            v = node.inputs[0];
        } else {
            return v;
        }
    };
    let mut savers: Vec<Vec<usize>> = vec![Vec::new(); g.num_values()];
    for (id, n) in g.nodes() {
        if !n.outputs.iter().any(|v| grad[v.index()]) {
            continue;
        }
        let operand = |i: usize| n.inputs.get(i).copied();
        let rg = |i: usize| operand(i).is_some_and(|v| grad[v.index()]);
        let mut keep: Vec<ValueId> = Vec::new();
        let mut save = |v: Option<ValueId>| keep.extend(v);
        match &n.op {
            Op::MatMul | Op::Conv2d { .. } | Op::Binary(BinaryOp::Mul) => {
                if rg(0) {
                    save(operand(1));
                }
                if rg(1) {
                    save(operand(0));
                }
            }
            Op::Binary(BinaryOp::Div) => {
                save(operand(1));
                if rg(1) {
                    save(operand(0));
                }
            }
            Op::Binary(BinaryOp::Pow | BinaryOp::Max | BinaryOp::Min) => {
                save(operand(0));
                save(operand(1));
            }
            // The Winograd transforms are linear and not differentiated (see `ops::winograd`).
            Op::Binary(_)
            | Op::Compare(_)
            | Op::Cast { .. }
            | Op::Constant(_)
            | Op::Collective(_)
            | Op::ShardingConstraint { .. }
            | Op::Trap(_)
            | Op::WinogradInput { .. }
            | Op::WinogradWeight
            | Op::WinogradOutput { .. } => {}
            Op::Unary(u) => match u.backward_keeps() {
                BackwardKeeps::Nothing => {}
                BackwardKeeps::Operand => save(operand(0)),
                BackwardKeeps::Result => save(n.outputs.first().copied()),
            },
            Op::Where => save(operand(0)),
            Op::Softmax { .. } => save(n.outputs.first().copied()),
            // The loss keeps its logits (their softmax is its gradient); updates end the graph.
            Op::CrossEntropy => save(operand(0)),
            Op::Sgd(_) | Op::AdamW(_) => {}
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => save(operand(0)),
            Op::Reduce { kind, .. } => {
                if matches!(kind, ReduceKind::Max | ReduceKind::Min | ReduceKind::Prod) {
                    save(operand(0));
                }
            }
            Op::Pool2d { .. } => save(operand(0)),
            // Backpropagation through time reads every operand and the whole state sequence.
            // Control flow is not differentiated; were it, a branch would read any operand.
            Op::Recurrent { .. } | Op::If(_) | Op::Loop(_) => {
                keep.extend(n.inputs.iter().copied());
                keep.extend(n.outputs.first().copied());
            }
            Op::Gather { .. } | Op::Scatter { .. } => save(operand(1)),
            Op::Rope { .. } => {
                save(operand(1));
                save(operand(2));
            }
            Op::ArgMax { .. }
            | Op::Iota { .. }
            | Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Split { .. } => {}
        }
        for v in keep {
            let r = root(v);
            let counted = match g.producer(r) {
                Some(p) => !g.node(p).op.is_constant(),
                None => match g.input_role(r) {
                    Some(InputRole::Parameter) => false,
                    _ => block.stream_inputs.contains(&r) || g.value(r).ty.dtype == DType::Bool,
                },
            };
            if counted && !savers[r.index()].contains(&id.index()) {
                savers[r.index()].push(id.index());
            }
        }
    }
    let core = |i: usize| block.regions[i] == Region::AttentionCore;
    let mut saved = ByRegion::default();
    for (v, who) in savers.iter().enumerate() {
        if who.is_empty() {
            continue;
        }
        let value = ValueId(v as u32);
        let producer = g.producer(value).map(|p| p.index());
        let made_in_core = match producer {
            Some(p) => core(p),
            None => consumers[v].iter().all(|&c| core(c)),
        };
        let region = if who.iter().all(|&i| core(i)) && made_in_core {
            Region::AttentionCore
        } else {
            let replicated = match producer {
                Some(p) => block.regions[p] == Region::Replicated,
                None => consumers[v].iter().any(|&c| block.regions[c] == Region::Replicated),
            };
            if replicated {
                Region::Replicated
            } else {
                Region::TensorParallel
            }
        };
        saved.add(region, s.bytes[v]);
    }
    saved
}
