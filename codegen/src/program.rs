//! Lowering a model graph to an artifact [`Program`]: specialization to static shapes and the
//! kernel ABI's storage types, fusion (asking [`crate::supports`]), one kernel per fusion group,
//! library calls for everything else, and the static memory plan.
//!
//! The memory plan: every value a step writes gets an arena range that is live from the step
//! that writes it to the last step that reads it, except that graph inputs and outputs are
//! pinned: live for the whole program (an input from before the first step, so one bound once
//! stays intact across runs; an output until it is read back). Ranges are handed out in step
//! order from a free list (best fit, coalescing on free), so values whose lifetimes do not
//! overlap share memory. A step's outputs are allocated before its dead inputs are freed, so no
//! kernel reads and writes one range.
//! Reshapes are views: the result shares its operand's range, which stays live for both.
//! Constants live in the read-only weights image instead.
//!
//! Kernel deduplication: fusion groups whose kernel graphs are the same up to names (same ops
//! and attributes, constants included, same types and the same wiring; see
//! [`kernel_identity`]) share one kernel. The first group's symbol (`tsr_kernel_GROUP`) is
//! kept, every later step launches it, and [`LoweredProgram::kernels`] holds each kernel once,
//! so the code generator compiles it once: the layers of a transformer, which repeat the same
//! fusion groups on other buffers, cost one layer's compile. This is sound because emission is
//! a function of the kernel graph's structure and the symbol alone (value and graph names never
//! reach the emitted code), and a kernel's buffers are its step's arguments, never baked in.
//!
//! # The artifact and its lowering
//!
//! `tessera compile MODEL --target cpu -o DIR` (`codegen::artifact`) writes (CUDA targets: see `codegen::cuda`):
//!
//! ```text
//! DIR/manifest.json        format_version, tessera_version, input_hash, target, options, mesh, ranks
//! DIR/rank0/program.json   buffers (storage, shape, arena or weights offset), inputs, outputs, steps
//! DIR/rank0/weights.bin    constants, little-endian, at their planned offsets
//! DIR/rank0/kernels.so     every distinct fused kernel (x86-64 ELF, `extern "C" fn(args: *const *mut u8)`)
//! ```
//!
//! The format's structs live in `ir::artifact`, so the runtime reads them without depending on
//! `codegen`. Lowering (`codegen::program`): bind symbolic dimensions (`--dim`), map every dtype to
//! its storage type (floats compute in f32, integers in i64, booleans as bytes), `cse,dce`, fuse,
//! then one step per group (a kernel) or per remaining op (a library call: GEMM, transpose, gather,
//! split, concat, slice, or `reference`, the op's reference semantics, correct but slow and counted
//! in the compile report). Invariants:
//! - **Deterministic.** Two compiles of the same model bytes and options give byte-identical
//!   directories: no timestamps, paths or hash-map order reach any file; `input_hash` is the
//!   SHA-256 of the model bytes and the normalized options.
//! - **Atomic.** Everything is built in memory, then written into `.DIR.tmp-PID` beside `DIR`,
//!   fsynced, and renamed into place; a failed compile removes its temporary directory and leaves
//!   `DIR` untouched. An existing artifact is replaced; any other existing content is refused.
//! - **Each distinct kernel is compiled once.** Fusion groups whose kernel graphs are equal up to
//!   names (`program::kernel_identity`: input types, ops with their attributes and constants,
//!   operand wiring, result types, outputs; value and graph names left out) share one kernel: the
//!   first group's symbol `tsr_kernel_GROUP` is kept and every later such step launches it on its
//!   own buffers; `LoweredProgram::kernels` lists each kernel once, in order of first launch, so
//!   `kernels.so` has one function and a CUDA artifact one PTX module/cubin per distinct kernel
//!   (GPT-2 small: 122 kernel steps, 12 kernels). This relies on emission (`codegen::emit`) being
//!   a function of the kernel graph's structure and the symbol only: it must never read value or
//!   graph names, nor bake a buffer address or step position into the code (unit test
//!   `identity_ignores_names_only`). Anything new that makes emitted code differ must be part of
//!   the kernel graph (an op attribute, a type), or be added to `kernel_identity`.
//! - **Static memory plan.** Each value a step writes gets an arena range live from its step to
//!   its last reader; ranges are reused best-fit from a coalescing free list in step order. A
//!   step's outputs never overlap its inputs. Reshape results share their operand's range.
//!   **Inputs and outputs are pinned**: live for the whole program, never shared with another
//!   value, so no step writes an input's range (what makes resident inputs possible; see `runtime::executor`). The
//!   cost is memory: GPT-2 small's arena grows from 475 to 523 MiB.

use std::collections::{BTreeMap, HashMap};
use tessera_ir::artifact::{align, BufferDesc, IoBinding, LibraryCall, Location, Program, Step, Storage};
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::{normalize_axis, Dim, TensorType};
use tessera_passes::fuse::{extract_kernel, fuse, FusionConfig};

use crate::weights::WeightsImage;
use crate::KernelSource;

/// Why a graph could not be lowered to a program.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("input %{value} has symbolic dimension '{dim}': give its size with --dim {dim}=N")]
    UnboundDim { value: String, dim: String },
    #[error("the graph specialized to static shapes and the target's storage types does not verify: {0}")]
    Specialize(String),
    #[error("{0}")]
    Pass(String),
    #[error("fusion group {group}: {message}")]
    Kernel { group: u32, message: String },
}

/// A lowered program with what the artifact needs beside it.
#[derive(Debug, Clone)]
pub struct LoweredProgram {
    pub program: Program,
    /// The weights image (constants at their planned offsets).
    pub weights: WeightsImage,
    /// One kernel per distinct fusion group (see the module docs), in order of first launch.
    pub kernels: Vec<KernelSource>,
    pub stats: LowerStats,
}

/// Counts for the compile report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LowerStats {
    pub nodes: usize,
    /// Distinct kernels (compiled once each).
    pub kernels: usize,
    /// Kernel steps (launches); more than `kernels` when fusion groups repeat.
    pub kernel_steps: usize,
    pub fused_ops: usize,
    /// Library calls by name (`matmul`, `gather`, ..., `reference`).
    pub library_calls: BTreeMap<&'static str, usize>,
    /// The ops of the `reference` library calls (run by the interpreter), by mnemonic.
    pub reference_ops: BTreeMap<&'static str, usize>,
    pub views: usize,
    /// Fusion groups folded into the GEMM or convolution before them as its epilogue.
    pub epilogues: usize,
    pub arena_bytes: u64,
    /// What the arena would need without reuse (every value its own range).
    pub unshared_bytes: u64,
    /// CUDA targets: library steps without device code, run on the host between copies.
    pub host_steps: usize,
}

impl LowerStats {
    /// Steps of the program: kernel launches and library calls.
    pub fn steps(&self) -> usize {
        self.kernel_steps + self.library_calls.values().sum::<usize>()
    }

    /// Library calls that run an op with its reference semantics (the interpreter).
    pub fn reference_steps(&self) -> usize {
        self.library_calls.get("reference").copied().unwrap_or(0)
    }
}

/// The graph with every symbolic dimension bound from `dims` and every dtype replaced by its
/// storage type's compute dtype (f32, i64, bool): what the compiled program computes.
pub fn specialize(g: &Graph, dims: &HashMap<String, u64>) -> Result<Graph, LowerError> {
    let specialize_error = |e: tessera_ir::symbolic::SymbolicError| LowerError::Specialize(e.to_string());
    for &v in g.inputs() {
        let value = g.value(v);
        if let Some(dim) = value.ty.substitute(dims).map_err(specialize_error)?.symbols().next() {
            return Err(LowerError::UnboundDim { value: value.name.clone(), dim: dim.to_string() });
        }
    }
    let out = specialize_unchecked(g, dims)?;
    tessera_ir::verify::verify(&out).map_err(|e| LowerError::Specialize(e.to_string()))?;
    Ok(out)
}

/// [`specialize`] without the checks, for a graph or a region of one (`tsr.if`, `tsr.loop`),
/// whose regions are specialized alike so their block arguments keep the operands' types.
fn specialize_unchecked(g: &Graph, dims: &HashMap<String, u64>) -> Result<Graph, LowerError> {
    let specialize_error = |e: tessera_ir::symbolic::SymbolicError| LowerError::Specialize(e.to_string());
    let ty_of = |t: &TensorType| -> Result<TensorType, LowerError> {
        let t = t.substitute(dims).map_err(specialize_error)?;
        Ok(t.with_dtype(Storage::of(t.dtype).compute_dtype()))
    };
    let bind = |shape: &[Dim]| tessera_ir::types::bind_dims(shape, dims).map_err(specialize_error);
    let mut out = Graph::new(&g.name);
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for &v in g.inputs() {
        let value = g.value(v);
        let role = g.input_role(v).unwrap_or(tessera_ir::graph::InputRole::Activation);
        map.insert(v, out.add_input(&value.name, ty_of(&value.ty)?, role));
    }
    for (_, node) in g.nodes() {
        let op = match &node.op {
            Op::Cast { to } => Op::Cast { to: Storage::of(*to).compute_dtype() },
            Op::Constant(t) => Op::Constant(t.cast(Storage::of(t.dtype).compute_dtype())),
            Op::If(regions) => Op::If(Box::new(tessera_ir::ops::control::IfRegions {
                then_branch: specialize_unchecked(&regions.then_branch, dims)?,
                else_branch: specialize_unchecked(&regions.else_branch, dims)?,
            })),
            Op::Loop(regions) => Op::Loop(Box::new(tessera_ir::ops::control::LoopRegions {
                cond: specialize_unchecked(&regions.cond, dims)?,
                body: specialize_unchecked(&regions.body, dims)?,
                max_trips: regions.max_trips,
            })),
            Op::Broadcast { shape } => Op::Broadcast { shape: bind(shape)? },
            Op::Reshape { shape } => Op::Reshape { shape: bind(shape)? },
            // A trap's result types are its attribute: they bind like every other type.
            Op::Trap(trap) => Op::Trap(Box::new(tessera_ir::ops::control::Trap {
                message: trap.message.clone(),
                types: trap.types.iter().map(ty_of).collect::<Result<_, _>>()?,
            })),
            // What arrives is what the sender computed: the storage's compute dtype.
            Op::Collective(Collective::Recv { mesh_axis, peer, tag, ty }) => Op::Collective(Collective::Recv {
                mesh_axis: mesh_axis.clone(),
                peer: *peer,
                tag: *tag,
                ty: ty_of(ty)?,
            }),
            other => other.clone(),
        };
        let inputs = node.inputs.iter().map(|v| map[v]).collect();
        let results = node
            .outputs
            .iter()
            .map(|&v| Ok((g.value(v).name.clone(), ty_of(&g.value(v).ty)?)))
            .collect::<Result<Vec<_>, LowerError>>()?;
        let id = out.add_node_unchecked(op, inputs, results);
        for (&old, &new) in node.outputs.iter().zip(&out.node(id).outputs) {
            map.insert(old, new);
        }
    }
    out.set_outputs(g.outputs().iter().map(|v| map[v]).collect());
    Ok(out)
}

/// Lowers `g` (the model as loaded; `dims` binds its symbolic dimensions) for a target whose
/// code generator accepts the kernel graphs `can_compile` accepts, without epilogues (the
/// default of `CompileOptions::epilogues`).
pub fn lower(
    g: &Graph,
    dims: &HashMap<String, u64>,
    target: &str,
    can_compile: &dyn Fn(&Graph) -> bool,
) -> Result<LoweredProgram, LowerError> {
    lower_with(g, dims, target, can_compile, Lowering::default())
}

/// Choices of [`lower_with`] beyond the graph and the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lowering {
    /// Fold the elementwise group after a GEMM or convolution into its library call (CPU
    /// target, [`crate::epilogue`]).
    pub epilogues: bool,
    /// Outputs live from before the first step, like inputs (see the module docs).
    pub pinned_outputs: bool,
}

/// [`lower`] with `lowering`'s choices.
pub fn lower_with(
    g: &Graph,
    dims: &HashMap<String, u64>,
    target: &str,
    can_compile: &dyn Fn(&Graph) -> bool,
    lowering: Lowering,
) -> Result<LoweredProgram, LowerError> {
    let mut graph = specialize(g, dims)?;
    // Sizes are bound now: a `tsr.if` on a size check (an importer's assumption) has a constant
    // condition, and compiles as the region it takes rather than as one reference step.
    tessera_passes::fold_if::fold_constant_ifs(&mut graph).map_err(LowerError::Pass)?;
    let pipeline = tessera_passes::pipeline::Pipeline::parse("cse,dce").map_err(|e| LowerError::Pass(e.to_string()))?;
    tessera_passes::pipeline::run_pipeline(&mut graph, &pipeline, &mut Default::default())
        .map_err(|e| LowerError::Pass(e.to_string()))?;
    fuse(&mut graph, &FusionConfig { max_ops: 64, can_compile }).map_err(|e| LowerError::Pass(e.to_string()))?;
    let mut builder = Builder::new(&graph, g, target);
    builder.epilogues = lowering.epilogues && target == "cpu";
    builder.pinned_outputs = lowering.pinned_outputs;
    builder.build()
}

struct Builder<'a> {
    g: &'a Graph,
    /// The graph as the user wrote it, for the declared dtypes of inputs and outputs.
    original: &'a Graph,
    target: &'a str,
    buffers: Vec<BufferDesc>,
    buffer_of: HashMap<ValueId, u32>,
    /// Buffers that are views of another (reshape results): view -> root.
    root_of: Vec<u32>,
    weights: WeightsImage,
    steps: Vec<Step>,
    kernels: Vec<KernelSource>,
    /// The symbol of each distinct kernel, by [`kernel_identity`].
    symbol_of_kernel: HashMap<String, String>,
    stats: LowerStats,
    /// Fold epilogues into GEMMs and convolutions.
    epilogues: bool,
    /// Outputs live from before the first step ([`Lowering::pinned_outputs`]).
    pinned_outputs: bool,
}

const UNPLACED: Location = Location::Arena { offset: u64::MAX };

impl<'a> Builder<'a> {
    fn new(g: &'a Graph, original: &'a Graph, target: &'a str) -> Builder<'a> {
        Builder {
            g,
            original,
            target,
            buffers: Vec::new(),
            buffer_of: HashMap::new(),
            root_of: Vec::new(),
            weights: WeightsImage::default(),
            steps: Vec::new(),
            kernels: Vec::new(),
            symbol_of_kernel: HashMap::new(),
            stats: LowerStats { nodes: g.num_nodes(), ..LowerStats::default() },
            epilogues: false,
            pinned_outputs: false,
        }
    }

    fn new_buffer(&mut self, v: ValueId, location: Location, view_of: Option<u32>) -> u32 {
        let value = self.g.value(v);
        let shape = value.ty.static_shape().unwrap_or_default();
        let id = self.buffers.len() as u32;
        self.buffers.push(BufferDesc {
            name: value.name.clone(),
            storage: Storage::of(value.ty.dtype),
            shape,
            location,
        });
        self.root_of.push(view_of.map_or(id, |r| self.root_of[r as usize]));
        self.buffer_of.insert(v, id);
        id
    }

    fn buffer(&mut self, v: ValueId) -> u32 {
        match self.buffer_of.get(&v) {
            Some(&b) => b,
            None => self.new_buffer(v, UNPLACED, None),
        }
    }

    fn build(mut self) -> Result<LoweredProgram, LowerError> {
        let g = self.g;
        for &v in g.inputs() {
            self.new_buffer(v, UNPLACED, None);
        }
        let (folded, transposed_b) = transposes_into_gemms(g);
        let epilogues = if self.epilogues { fold_epilogues(g, &transposed_b) } else { HashMap::new() };
        let epilogue_producers: std::collections::HashSet<NodeId> =
            epilogues.values().map(|f| f.folded.producer).collect();
        let mut done_groups = std::collections::HashSet::new();
        let nodes: Vec<(NodeId, _)> = g.nodes().collect();
        for (id, node) in nodes {
            if folded.contains(&id) || epilogue_producers.contains(&id) {
                continue;
            }
            if let Some(fold) = g.fusion_tag(id).and_then(|tag| epilogues.get(&tag.group)) {
                if !done_groups.insert(fold.group) {
                    continue;
                }
                let producer = g.node(fold.folded.producer);
                let (call, call_inputs) = match transposed_b.get(&fold.folded.producer) {
                    Some(&source) => (LibraryCall::MatMulTransposedB, vec![producer.inputs[0], source]),
                    None => (library_call(g, &producer.op, &producer.inputs), producer.inputs.clone()),
                };
                let call = LibraryCall::WithEpilogue { gemm: Box::new(call), epilogue: fold.folded.epilogue.clone() };
                *self.stats.library_calls.entry(call.name()).or_insert(0) += 1;
                self.stats.epilogues += 1;
                self.stats.fused_ops += fold.members;
                let inputs = call_inputs.iter().chain(&fold.folded.operands).map(|&v| self.buffer(v)).collect();
                let outputs = vec![self.buffer(fold.folded.output)];
                self.steps.push(Step::Library { call, inputs, outputs });
                continue;
            }
            if let Some(&source) = transposed_b.get(&id) {
                let call = LibraryCall::MatMulTransposedB;
                *self.stats.library_calls.entry(call.name()).or_insert(0) += 1;
                let inputs = vec![self.buffer(node.inputs[0]), self.buffer(source)];
                let outputs = vec![self.buffer(node.outputs[0])];
                self.steps.push(Step::Library { call, inputs, outputs });
                continue;
            }
            if let Some(tag) = g.fusion_tag(id) {
                if !done_groups.insert(tag.group) {
                    continue;
                }
                let members: Vec<NodeId> = g
                    .nodes()
                    .skip(id.index())
                    .take_while(|(m, _)| g.fusion_tag(*m) == Some(tag))
                    .map(|(m, _)| m)
                    .collect();
                self.stats.fused_ops += members.len();
                let symbol = format!("tsr_kernel_{}", tag.group);
                let kernel = extract_kernel(g, &members, &symbol)
                    .map_err(|e| LowerError::Kernel { group: tag.group, message: e.to_string() })?;
                let kernel = crate::power::inline_constant_exponents(g, kernel);
                let inputs = kernel.inputs.iter().map(|&v| self.buffer(v)).collect();
                let outputs = kernel.outputs.iter().map(|&v| self.buffer(v)).collect();
                let symbol = match self.symbol_of_kernel.entry(kernel_identity(&kernel.graph)) {
                    std::collections::hash_map::Entry::Occupied(first) => first.get().clone(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(symbol.clone());
                        self.kernels.push(KernelSource { symbol: symbol.clone(), graph: kernel.graph });
                        symbol
                    }
                };
                self.steps.push(Step::Kernel { symbol, inputs, outputs });
                self.stats.kernel_steps += 1;
                continue;
            }
            match &node.op {
                Op::Constant(t) => {
                    let offset = self.weights.place(t);
                    self.new_buffer(node.outputs[0], Location::Weights { offset }, None);
                }
                Op::Reshape { .. } => {
                    let source = self.buffer(node.inputs[0]);
                    self.new_buffer(node.outputs[0], UNPLACED, Some(source));
                    self.stats.views += 1;
                }
                op => {
                    let call = library_call(g, op, &node.inputs);
                    *self.stats.library_calls.entry(call.name()).or_insert(0) += 1;
                    if let LibraryCall::Reference { op } = &call {
                        *self.stats.reference_ops.entry(op.mnemonic()).or_insert(0) += 1;
                    }
                    let inputs = node.inputs.iter().map(|&v| self.buffer(v)).collect();
                    let outputs = node.outputs.iter().map(|&v| self.buffer(v)).collect();
                    self.steps.push(Step::Library { call, inputs, outputs });
                }
            }
        }
        self.stats.kernels = self.kernels.len();
        let bind_steps = self.bind_steps();
        let arena_bytes = self.plan_memory(&bind_steps);
        let io = |graph_values: &[ValueId], declared: &[ValueId], this: &mut Builder| -> Vec<IoBinding> {
            graph_values
                .iter()
                .zip(declared)
                .map(|(&v, &d)| IoBinding {
                    name: this.original.value(d).name.clone(),
                    dtype: this.original.value(d).ty.dtype,
                    buffer: this.buffer(v),
                    parameter: this.original.input_role(d) == Some(tessera_ir::graph::InputRole::Parameter),
                })
                .collect()
        };
        let inputs = io(g.inputs(), self.original.inputs(), &mut self);
        let outputs = io(g.outputs(), self.original.outputs(), &mut self);
        let program = Program {
            name: g.name.clone(),
            target: self.target.to_string(),
            arena_bytes,
            weights_file: "weights.bin".to_string(),
            weights_bytes: self.weights.len(),
            kernels_file: None,
            buffers: self.buffers,
            inputs,
            outputs,
            steps: self.steps,
            kernel_signatures: self.kernels.iter().map(KernelSource::signature).collect(),
            gpu: None,
            shard: None,
            bind_steps,
        };
        self.stats.arena_bytes = arena_bytes;
        Ok(LoweredProgram { program, weights: self.weights, kernels: self.kernels, stats: self.stats })
    }

    /// The steps whose every operand is a parameter input, a constant or the result of an
    /// earlier such step ([`Program::bind_steps`]): weight-only work an executor with resident
    /// parameters does once. Steps without operands and communication stay per run.
    fn bind_steps(&self) -> Vec<u32> {
        let mut weight_only = vec![false; self.buffers.len()];
        for (b, desc) in self.buffers.iter().enumerate() {
            if matches!(desc.location, Location::Weights { .. }) {
                weight_only[b] = true;
            }
        }
        for &v in self.g.inputs() {
            if self.g.input_role(v) == Some(tessera_ir::graph::InputRole::Parameter) {
                weight_only[self.root_of[self.buffer_of[&v] as usize] as usize] = true;
            }
        }
        let mut bind_steps = Vec::new();
        for (s, step) in self.steps.iter().enumerate() {
            let communicates = matches!(step, Step::Library { call: LibraryCall::Collective { .. }, .. });
            let reads_weights_only = step.inputs().iter().all(|&b| weight_only[self.root_of[b as usize] as usize]);
            if communicates || step.inputs().is_empty() || !reads_weights_only {
                continue;
            }
            for &b in step.outputs() {
                weight_only[self.root_of[b as usize] as usize] = true;
            }
            bind_steps.push(s as u32);
        }
        bind_steps
    }

    /// Assigns arena offsets (see the module docs); returns the arena size. The results of
    /// `bind_steps` are pinned like inputs (live from before the first step to the end):
    /// computed once, they must stay intact across runs.
    fn plan_memory(&mut self, bind_steps: &[u32]) -> u64 {
        let n = self.buffers.len();
        let in_arena = |b: &BufferDesc| matches!(b.location, Location::Arena { .. });
        // Lifetimes of roots in step numbers; inputs are defined at step 0 (before it runs).
        let never = usize::MAX;
        let mut first = vec![never; n];
        let mut last = vec![0usize; n];
        for &v in self.g.inputs() {
            let root = self.root_of[self.buffer_of[&v] as usize] as usize;
            first[root] = 0;
        }
        for (s, step) in self.steps.iter().enumerate() {
            for &b in step.outputs() {
                let root = self.root_of[b as usize] as usize;
                first[root] = first[root].min(s);
                last[root] = last[root].max(s);
            }
            for &b in step.inputs() {
                let root = self.root_of[b as usize] as usize;
                last[root] = last[root].max(s);
            }
        }
        // Inputs and outputs are pinned: live to the end, never shared. An output is read after
        // the last step; an input may be bound once and stay resident across runs (the
        // executors' `bind`), so no intermediate may overwrite it.
        for &v in self.g.inputs().iter().chain(self.g.outputs()) {
            let root = self.root_of[self.buffer_of[&v] as usize] as usize;
            last[root] = usize::MAX;
        }
        // Pinned outputs also start before the first step: no value computed earlier shares
        // their range, so a runtime may swap a carried output's range with its input's.
        if self.pinned_outputs {
            for &v in self.g.outputs() {
                let root = self.root_of[self.buffer_of[&v] as usize] as usize;
                if first[root] != never {
                    first[root] = 0;
                }
            }
        }
        // Bind steps' results live from before the first step (an executor may compute them
        // in the bind) to the end, like inputs.
        for &s in bind_steps {
            for &b in self.steps[s as usize].outputs() {
                let root = self.root_of[b as usize] as usize;
                first[root] = 0;
                last[root] = usize::MAX;
            }
        }
        // Allocation order: by first step, inputs first, then buffer id.
        let mut allocs_at: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut frees_after: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for b in 0..n {
            if self.root_of[b] as usize != b || !in_arena(&self.buffers[b]) || first[b] == never {
                continue;
            }
            allocs_at.entry(first[b]).or_default().push(b);
            if last[b] != usize::MAX {
                frees_after.entry(last[b]).or_default().push(b);
            }
        }
        let mut arena = FreeList::default();
        let mut offsets = vec![0u64; n];
        for s in 0..self.steps.len().max(1) {
            for &b in allocs_at.get(&s).into_iter().flatten() {
                let size = align(self.buffers[b].bytes().max(1));
                self.stats.unshared_bytes += size;
                offsets[b] = arena.allocate(size);
            }
            for &b in frees_after.get(&s).into_iter().flatten() {
                arena.free(offsets[b], align(self.buffers[b].bytes().max(1)));
            }
        }
        for b in 0..n {
            let root = self.root_of[b] as usize;
            match self.buffers[root].location {
                Location::Weights { offset } => self.buffers[b].location = Location::Weights { offset },
                Location::Arena { .. } => self.buffers[b].location = Location::Arena { offset: offsets[root] },
            }
        }
        arena.high_water
    }
}

/// What makes two kernel graphs compile to the same code: every input's type, every node's op
/// (with its attributes and constants), operands and result types, and the outputs, with values
/// named by their index; float constants by their bits. Value and graph names are left out:
/// emission never reads them. Two kernels with equal identities are interchangeable (the test
/// `identity_ignores_names_only`).
pub fn kernel_identity(kernel: &Graph) -> String {
    use std::fmt::Write;
    let mut key = String::new();
    // `write!` to a String cannot fail.
    for &v in kernel.inputs() {
        let _ = write!(key, "in {:?};", kernel.value(v).ty);
    }
    for (_, node) in kernel.nodes() {
        match &node.op {
            // Float literals by their bits: `Debug` prints every NaN alike, the emitter does not.
            Op::Constant(Tensor { dtype, shape, data: Buffer::Float(values) }) => {
                let _ = write!(key, "constant {dtype:?} {shape:?} [");
                for x in values {
                    let _ = write!(key, "{:x},", x.to_bits());
                }
                key.push_str("] (");
            }
            // Widened, so an f32, f16 or bf16 literal keys as it did when they were held as f64.
            Op::Constant(t @ Tensor { dtype, shape, data: Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) }) => {
                let _ = write!(key, "constant {dtype:?} {shape:?} [");
                for x in t.to_f64_vec() {
                    let _ = write!(key, "{:x},", x.to_bits());
                }
                key.push_str("] (");
            }
            op => {
                let _ = write!(key, "{op:?} (");
            }
        }
        for v in &node.inputs {
            let _ = write!(key, "{},", v.index());
        }
        key.push_str(") ->");
        for &v in &node.outputs {
            let _ = write!(key, " {} {:?},", v.index(), kernel.value(v).ty);
        }
        key.push(';');
    }
    key.push_str("out");
    for v in kernel.outputs() {
        let _ = write!(key, " {}", v.index());
    }
    key
}

/// Transposes of the last two axes whose one use is as the second operand of a matmul, alone
/// (untagged or a group of one): they fold into the GEMM's strides. Returns the folded
/// transposes and, per such matmul, the transpose's operand.
/// A fusion group folded into a GEMM's or convolution's library call as its epilogue.
struct EpilogueFold {
    group: u32,
    members: usize,
    folded: crate::epilogue::Folded,
}

/// The fusion groups that fold into the GEMM or convolution they read ([`crate::epilogue`]),
/// by group. A producer must be a library call of its own (not in a fusion group) that
/// lowers to `matmul`, `matmul_transposed_b` or `conv2d`.
fn fold_epilogues(g: &Graph, transposed_b: &HashMap<NodeId, ValueId>) -> HashMap<u32, EpilogueFold> {
    let readers = crate::epilogue::Readers::of(g);
    let is_call = |n: NodeId| {
        let node = g.node(n);
        g.fusion_tag(n).is_none()
            && (transposed_b.contains_key(&n)
                || (matches!(node.op, Op::MatMul | Op::Conv2d { .. })
                    && crate::epilogue::takes_epilogue(&library_call(g, &node.op, &node.inputs))))
    };
    let mut groups: Vec<(u32, Vec<NodeId>)> = Vec::new();
    for (id, _) in g.nodes() {
        let Some(tag) = g.fusion_tag(id) else { continue };
        match groups.last_mut() {
            Some((group, members)) if *group == tag.group => members.push(id),
            _ => groups.push((tag.group, vec![id])),
        }
    }
    let mut folds = HashMap::new();
    for (group, members) in groups {
        if let Some(folded) = crate::epilogue::fold(g, &readers, &members, &is_call) {
            folds.insert(group, EpilogueFold { group, members: members.len(), folded });
        }
    }
    folds
}

fn transposes_into_gemms(g: &Graph) -> (std::collections::HashSet<NodeId>, HashMap<NodeId, ValueId>) {
    let uses = g.use_counts();
    let mut folded = std::collections::HashSet::new();
    let mut matmuls = HashMap::new();
    for (id, node) in g.nodes() {
        let Op::MatMul = node.op else { continue };
        // A matmul inside a fused kernel (an attention site) is the kernel's, not a GEMM call.
        if g.fusion_tag(id).is_some() {
            continue;
        }
        let Some(t) = g.producer(node.inputs[1]) else { continue };
        let Op::Transpose { perm } = &g.node(t).op else { continue };
        let r = perm.len();
        let swaps_last_two = r >= 2
            && perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i as i64)
            && perm[r - 2] == r as i64 - 1
            && perm[r - 1] == r as i64 - 2;
        let alone = g.fusion_tag(t).is_none_or(|tag| {
            g.nodes().filter(|(m, _)| g.fusion_tag(*m).is_some_and(|x| x.group == tag.group)).count() == 1
        });
        let float = Storage::of(g.value(node.inputs[1]).ty.dtype) == Storage::F32;
        if swaps_last_two && alone && float && uses[node.inputs[1].index()] == 1 && node.inputs[0] != node.inputs[1] {
            folded.insert(t);
            matmuls.insert(id, g.node(t).inputs[0]);
        }
    }
    (folded, matmuls)
}

/// The library call for an op outside every fusion group.
fn library_call(g: &Graph, op: &Op, inputs: &[ValueId]) -> LibraryCall {
    let rank = |i: usize| inputs.get(i).map_or(0, |v| g.value(*v).ty.rank());
    let axis = |a: i64, r: usize| normalize_axis(a, r).map(|a| a as u64);
    let fast = match op {
        // The GEMM library computes in f32; an integer product (CumSum lowered to a product
        // with a triangular 0/1 matrix, on int64 position ids) has its own exact kernel, which
        // wraps to the first operand's dtype as the interpreter does.
        Op::MatMul => {
            let storages: Vec<Storage> = inputs.iter().map(|&v| Storage::of(g.value(v).ty.dtype)).collect();
            match (storages.as_slice(), inputs.first()) {
                ([Storage::F32, Storage::F32], _) => Some(LibraryCall::MatMul),
                ([Storage::I64, Storage::I64], Some(&a)) => {
                    Some(LibraryCall::IntegerMatMul { dtype: g.value(a).ty.dtype })
                }
                _ => None,
            }
        }
        Op::Collective(c) => Some(LibraryCall::Collective { op: c.clone() }),
        Op::CrossEntropy => {
            let storages: Vec<Storage> = inputs.iter().map(|&v| Storage::of(g.value(v).ty.dtype)).collect();
            (storages == [Storage::F32, Storage::I64]).then_some(LibraryCall::CrossEntropy)
        }
        Op::Scatter { axis: a, reduction } => {
            let storages: Vec<Storage> = inputs.iter().map(|&v| Storage::of(g.value(v).ty.dtype)).collect();
            let float = storages == [Storage::F32, Storage::I64, Storage::F32];
            axis(*a, rank(0)).filter(|_| float).map(|axis| LibraryCall::Scatter { axis, reduction: *reduction })
        }
        Op::Transpose { perm } => perm
            .iter()
            .map(|&p| u64::try_from(p).ok())
            .collect::<Option<Vec<u64>>>()
            .map(|perm| LibraryCall::Transpose { perm }),
        Op::Gather { axis: a } => axis(*a, rank(0)).map(|axis| LibraryCall::Gather { axis }),
        Op::Split { axis: a, .. } => axis(*a, rank(0)).map(|axis| LibraryCall::Split { axis }),
        Op::Concat { axis: a } => axis(*a, rank(0)).map(|axis| LibraryCall::Concat { axis }),
        Op::Slice { starts, ends: _, steps } => slice_call(g, inputs, starts, steps),
        Op::Conv2d { window, groups } => {
            let float = inputs.iter().all(|&v| Storage::of(g.value(v).ty.dtype) == Storage::F32);
            let groups = u64::try_from(*groups).ok().filter(|_| float);
            groups.map(|groups| LibraryCall::Conv2d { window: window.clone(), groups })
        }
        Op::Pool2d { kind, kernel, window } => {
            let float = inputs.iter().all(|&v| Storage::of(g.value(v).ty.dtype) == Storage::F32);
            let kernel = [u64::try_from(kernel[0]).ok(), u64::try_from(kernel[1]).ok()];
            match kernel {
                [Some(kh), Some(kw)] if float => {
                    Some(LibraryCall::Pool2d { kind: *kind, kernel: [kh, kw], window: window.clone() })
                }
                _ => None,
            }
        }
        Op::WinogradInput { pads } => {
            let float = inputs.iter().all(|&v| Storage::of(g.value(v).ty.dtype) == Storage::F32);
            let pads = pads.map(|p| u64::try_from(p).ok());
            match pads {
                [Some(top), Some(left), Some(bottom), Some(right)] if float => {
                    Some(LibraryCall::WinogradInput { pads: [top, left, bottom, right] })
                }
                _ => None,
            }
        }
        Op::WinogradWeight | Op::WinogradOutput { .. } => {
            let float = inputs.iter().all(|&v| Storage::of(g.value(v).ty.dtype) == Storage::F32);
            float.then(|| match op {
                Op::WinogradWeight => LibraryCall::WinogradWeight,
                _ => LibraryCall::WinogradOutput,
            })
        }
        Op::Recurrent { kind, cell } => {
            // Float operands (f32 storage); `sequence_lens`, the one integer operand, is last.
            let float =
                inputs.iter().take(kind.required_operands()).all(|&v| Storage::of(g.value(v).ty.dtype) == Storage::F32);
            float.then(|| LibraryCall::Recurrent { kind: *kind, cell: cell.clone() })
        }
        _ => None,
    };
    fast.unwrap_or_else(|| LibraryCall::Reference { op: op.clone() })
}

/// Slices with positive steps become a strided copy (starts clamped as the shape rule does);
/// the rest go to the reference semantics.
fn slice_call(g: &Graph, inputs: &[ValueId], starts: &[i64], steps: &[i64]) -> Option<LibraryCall> {
    let shape = g.value(*inputs.first()?).ty.static_shape()?;
    if starts.len() != shape.len() || steps.len() != shape.len() || steps.iter().any(|&s| s <= 0) {
        return None;
    }
    let starts = starts
        .iter()
        .zip(&shape)
        .map(|(&s, &n)| {
            let n = n as i64;
            let s = if s < 0 { s + n } else { s };
            s.clamp(0, n) as u64
        })
        .collect();
    Some(LibraryCall::Slice { starts, steps: steps.iter().map(|&s| s as u64).collect() })
}

/// Free arena ranges, sorted by offset; allocation is best fit, else growth at the top.
#[derive(Default)]
struct FreeList {
    free: Vec<(u64, u64)>,
    top: u64,
    high_water: u64,
}

impl FreeList {
    fn allocate(&mut self, size: u64) -> u64 {
        let best = self.free.iter().enumerate().filter(|(_, &(_, len))| len >= size).min_by_key(|(_, &(_, len))| len);
        if let Some((i, &(offset, len))) = best {
            if len == size {
                self.free.remove(i);
            } else {
                self.free[i] = (offset + size, len - size);
            }
            return offset;
        }
        // Grow: a free range touching the top extends it.
        let offset = match self.free.last() {
            Some(&(offset, len)) if offset + len == self.top => {
                self.free.pop();
                offset
            }
            _ => self.top,
        };
        self.top = offset + size;
        self.high_water = self.high_water.max(self.top);
        offset
    }

    fn free(&mut self, offset: u64, size: u64) {
        let i = self.free.partition_point(|&(o, _)| o < offset);
        self.free.insert(i, (offset, size));
        // Coalesce with the next, then with the previous range.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::elementwise::UnaryOp;
    use tessera_ir::testing::build::{add, f32s, input, param};

    /// `tanh(rms_norm(x, s))` three times with matmuls between: the first two norms are the same
    /// kernel on other buffers, the third has another epsilon.
    fn three_norms() -> Graph {
        let mut g = Graph::new("three_norms");
        let mut x = input(&mut g, "x", f32s(&[4, 8]));
        for (layer, epsilon) in [(0, 1e-5), (1, 1e-5), (2, 1e-6)] {
            let s = param(&mut g, &format!("scale{layer}"), f32s(&[8]));
            let n = add(&mut g, Op::RmsNorm { axis: -1, epsilon }, &[x, s]);
            x = add(&mut g, Op::Unary(UnaryOp::Tanh), &[n]);
            if layer < 2 {
                let w = param(&mut g, &format!("w{layer}"), f32s(&[8, 8]));
                x = add(&mut g, Op::MatMul, &[x, w]);
            }
        }
        g.set_outputs(vec![x]);
        g
    }

    fn kernel_symbols(program: &Program) -> Vec<&str> {
        program
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel { symbol, .. } => Some(symbol.as_str()),
                Step::Library { .. } => None,
            })
            .collect()
    }

    #[test]
    fn repeated_fusion_groups_share_one_kernel() {
        let can_compile = |k: &Graph| crate::supports(k).is_ok();
        let lowered = lower(&three_norms(), &HashMap::new(), "cpu", &can_compile).expect("lower");
        let symbols = kernel_symbols(&lowered.program);
        assert_eq!(symbols.len(), 3, "{symbols:?}");
        assert_eq!(symbols[0], symbols[1], "the first two norms are one kernel");
        assert_ne!(symbols[0], symbols[2], "another epsilon is another kernel");
        let compiled: Vec<&str> = lowered.kernels.iter().map(|k| k.symbol.as_str()).collect();
        assert_eq!(compiled, [symbols[0], symbols[2]], "each distinct kernel once, in order of first launch");
        assert_eq!((lowered.stats.kernels, lowered.stats.kernel_steps), (2, 3));
        // The shared kernel's steps still read and write their own buffers.
        let steps: Vec<&Step> = lowered.program.steps.iter().filter(|s| matches!(s, Step::Kernel { .. })).collect();
        assert_ne!(steps[0].inputs(), steps[1].inputs());
        assert_ne!(steps[0].outputs(), steps[1].outputs());
    }

    /// The identity leaves out exactly what emission never reads: renaming every value keeps
    /// both the identity and the emitted code, while changing an attribute changes both.
    #[test]
    fn identity_ignores_names_only() {
        let can_compile = |k: &Graph| crate::supports(k).is_ok();
        let lowered = lower(&three_norms(), &HashMap::new(), "cpu", &can_compile).expect("lower");
        let kernel = &lowered.kernels[0].graph;
        let mut renamed = kernel.clone();
        renamed.name = "another".into();
        for (v, _) in kernel.values() {
            renamed.rename_value(v, &format!("renamed_{}", v.index()));
        }
        assert_ne!(&renamed, kernel);
        assert_eq!(kernel_identity(&renamed), kernel_identity(kernel));
        let emit = |g: &Graph| crate::emit::emit_kernel("k", g).map(|t| format!("{}{}", t.globals, t.function));
        assert_eq!(emit(&renamed).expect("emit"), emit(kernel).expect("emit"));
        let gpu = |g: &Graph| crate::emit::emit_gpu_kernel("k", g).map(|t| t.module);
        assert_eq!(gpu(&renamed).expect("emit"), gpu(kernel).expect("emit"));

        let other = &lowered.kernels[1].graph;
        assert_ne!(kernel_identity(other), kernel_identity(kernel));
        assert_ne!(emit(other).expect("emit"), emit(kernel).expect("emit"));
    }

    /// Convolution and pooling outside fusion groups become their own library calls, not
    /// reference steps.
    #[test]
    fn conv_and_pool_are_library_calls_not_reference_steps() {
        use tessera_ir::ops::conv::{PoolKind, Window};
        let mut g = Graph::new("conv_pool");
        let x = input(&mut g, "x", f32s(&[1, 4, 8, 8]));
        let w = param(&mut g, "w", f32s(&[4, 1, 3, 3]));
        let window = Window { strides: [2, 1], pads: [1, 0, 1, 2], dilations: [1, 2] };
        let y = add(&mut g, Op::Conv2d { window: window.clone(), groups: 4 }, &[x, w]);
        let pool = Op::Pool2d { kind: PoolKind::Avg, kernel: [2, 2], window: window.clone() };
        let z = add(&mut g, pool, &[y]);
        g.set_outputs(vec![z]);
        // No kernel compiles, so the pool stays outside every group, as when codegen refuses it.
        let lowered = lower(&g, &HashMap::new(), "cpu", &|_: &Graph| false).expect("lower");
        let calls: Vec<&LibraryCall> = lowered
            .program
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Library { call, .. } => Some(call),
                Step::Kernel { .. } => None,
            })
            .collect();
        assert_eq!(
            calls,
            [
                &LibraryCall::Conv2d { window: window.clone(), groups: 4 },
                &LibraryCall::Pool2d { kind: PoolKind::Avg, kernel: [2, 2], window }
            ]
        );
        assert_eq!((lowered.stats.reference_steps(), lowered.stats.steps()), (0, 2));
        assert!(lowered.stats.reference_ops.is_empty());
    }

    /// `x + c` for the constant `c`.
    fn add_constant(values: Vec<f32>) -> Graph {
        let mut g = Graph::new("add_constant");
        let x = input(&mut g, "x", f32s(&[2]));
        // Built directly: `Tensor::from_f64` rounds to the dtype, which makes every NaN alike.
        let constant = Tensor { dtype: DType::F32, shape: vec![2], data: Buffer::F32(std::sync::Arc::new(values)) };
        let c = add(&mut g, Op::Constant(constant), &[]);
        let y = add(&mut g, Op::Binary(tessera_ir::ops::elementwise::BinaryOp::Add), &[x, c]);
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn constants_are_compared_by_their_bits() {
        let identity = |values: Vec<f32>| kernel_identity(&add_constant(values));
        assert_eq!(identity(vec![1.0, 2.0]), identity(vec![1.0, 2.0]));
        assert_ne!(identity(vec![1.0, 2.0]), identity(vec![1.0, 3.0]));
        assert_ne!(identity(vec![0.0, 2.0]), identity(vec![-0.0, 2.0]));
        let (nan_a, nan_b) = (f32::from_bits(0x7fc0_0001), f32::from_bits(0x7fc0_0002));
        assert_eq!(format!("{nan_a:?}"), format!("{nan_b:?}"), "Debug cannot tell them apart");
        assert_ne!(identity(vec![nan_a, 2.0]), identity(vec![nan_b, 2.0]));
    }
}
