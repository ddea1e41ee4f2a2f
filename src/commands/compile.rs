//! `tessera compile`: a model (or, with `--train`, its whole training step) to an ahead-of-time
//! artifact directory.

use super::parse_dim_specs;
use super::train::{OptimizerArg, ScheduleArg};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera::train::{self, OptimizerKind, TrainConfig};
use tessera_codegen::artifact::{
    compile_ranged, compile_sharded, compile_to_dir, input_hash, input_hash_of_file, write_artifact, CompileOptions,
    Target,
};
use tessera_ir::artifact::DimRange;
use tessera_ir::graph::Graph;
use tessera_ir::serving::{KvDtype, ServeShape};
use tessera_ir::sharding::Mesh;
use tessera_passes::cost::step::Schedule;
use tessera_passes::shard::{partition, PipelineSchedule, ShardConfig, ShardedModule};
use tessera_passes::train_step::TrainStep;

#[derive(Args)]
pub struct CompileArgs {
    /// The model (.mlir, .json, .onnx, or a zoo model such as gpt2 or gpt:layers=2,hidden=64,heads=4).
    pub model: PathBuf,
    /// What to compile for: cpu, cuda:sm_80 or cuda:sm_90.
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Size of a symbolic dimension, e.g. --dim batch=8, or the range of sizes it may take at
    /// run time, e.g. --dim seq=1..512 (repeatable, mixing both): with a range the artifact
    /// runs at any size in it, taken from the inputs at each run (CPU target only). A one-size
    /// range (seq=48..48) is a pinned size, bound at import where the symbolic import fails.
    #[arg(long, value_name = "NAME=SIZE|NAME=LO..HI")]
    pub dim: Vec<String>,
    /// The artifact directory to write (replaced atomically if it holds an artifact).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Compile the whole training step (forward, loss, backward, optimizer update): the
    /// program's inputs are the master weights, the optimizer state, the step counter (AdamW)
    /// and per micro-batch the tokens (and masks) and targets; its outputs are the loss, the
    /// updated weights and the updated optimizer state, in that order.
    #[arg(long)]
    pub train: bool,
    /// Fold the elementwise work after each GEMM and convolution (bias, activation, residual)
    /// into the library call as an epilogue instead of kernels of their own (CPU target).
    /// Opt-in: measured faster on magika but slower on PP-OCR cls (BENCHMARKS.md, "Epilogues").
    #[arg(long)]
    pub epilogues: bool,
    /// The optimizer of the training step (with --train).
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw, requires = "train")]
    pub optimizer: OptimizerArg,
    /// Learning rate (with --train).
    #[arg(long, default_value_t = 3e-3, requires = "train")]
    pub lr: f64,
    /// Micro-batches whose gradients one step accumulates (with --train).
    #[arg(long, default_value_t = 1, requires = "train")]
    pub micro_batches: usize,
    /// Sequences per micro-batch (with --train, zoo models).
    #[arg(long, default_value_t = 4, requires = "train")]
    pub batch: u64,
    /// Tokens per sequence (with --train, zoo models; default: the spec's seq).
    #[arg(long, requires = "train")]
    pub seq: Option<u64>,
    /// Partition over a device mesh (`dp=2,tp=2,pp=2`) with the `shard` pass and write one
    /// program per rank (`rank0/` ... `rankN-1/`), run with `mpirun -n N tessera run DIR`.
    /// With --serve: `tp=N` only, each rank's weight shards in `rankR/`.
    #[arg(long, value_name = "AXES")]
    pub mesh: Option<String>,
    /// The pipeline schedule of a mesh training step with pp > 1 (the order of each stage's
    /// steps; with --train --mesh).
    #[arg(long, value_enum, default_value_t = ScheduleArg::OneFOneB, requires = "mesh")]
    pub schedule: ScheduleArg,
    /// Compile the serving programs (prefill and batched decode over a paged KV cache) of a
    /// zoo model or a Hugging Face checkpoint directory: DIR gets serve.json, one artifact per
    /// program (embed, layer_in, layer_out, head; attn_out and mlp for layer_out with
    /// --mesh tp=N), model.json, the tokenizer and rank0/ ... rankN-1/ with each rank's weight
    /// shards; `tessera serve DIR` and `tessera generate DIR` run it.
    #[arg(long, conflicts_with = "train")]
    pub serve: bool,
    /// Sequences one decode step runs at most, and tokens per program run (with --serve); the
    /// programs are also compiled for fewer rows (`rows1/`, `rows2/`, ...: --row-buckets, by
    /// default each smaller power of two), and a run uses the fewest rows that hold its tokens.
    #[arg(long, default_value_t = 8, requires = "serve")]
    pub max_batch: u64,
    /// Tokens a sequence holds at most (with --serve; default: the model's context, at most 2048).
    #[arg(long, requires = "serve")]
    pub max_seq: Option<u64>,
    /// Tokens per KV-cache block (with --serve).
    #[arg(long, default_value_t = 16, requires = "serve")]
    pub kv_block: u64,
    /// What the paged KV cache stores keys and values in: f32 (exact), bf16 or int8 (with a
    /// scale per block and head); attention reads it directly.
    #[arg(long, default_value = "f32", value_parser = tessera::serve::parse_kv_dtype, requires = "serve")]
    pub kv_dtype: KvDtype,
    /// The smaller row counts to compile the programs for besides --max-batch (with --serve):
    /// increasing, comma-separated, e.g. 1,4,12; a run uses the fewest rows that hold its
    /// tokens. Default: the powers of two below --max-batch.
    #[arg(long, value_name = "LIST", value_parser = tessera::serve::parse_row_buckets, requires = "serve")]
    pub row_buckets: Option<tessera::serve::RowBuckets>,
}

pub fn run(args: CompileArgs) -> Result<()> {
    let start = Instant::now();
    let Some(target) = Target::parse(&args.target) else {
        bail!("--target '{}': expected cpu, cuda:sm_80 or cuda:sm_90", args.target);
    };
    if args.serve {
        return serve(&args, target, start);
    }
    let (dims, ranges) = parse_dim_specs(&args.dim)?;
    if !ranges.is_empty() {
        return compile_range(&args, target, dims, &ranges, start);
    }
    // A plain model file's input hash (SHA-256 of its bytes: 650 MB for GPT-2 small) does not
    // depend on the import, so it is hashed on a second thread while the model imports.
    let early_hash = (!args.train && args.mesh.is_none() && args.model.is_file()).then(|| {
        let path = args.model.clone();
        let options = CompileOptions {
            target,
            dims: dims.clone(),
            graph_options: Vec::new(),
            epilogues: args.epilogues,
            pinned_outputs: false,
        };
        std::thread::spawn(move || input_hash_of_file(&path, &options))
    });
    let (graph, graph_options, bound_at_import, step) = if args.train {
        let (step, options) = training_step(&args)?;
        (step.graph.clone(), options, false, Some(step))
    } else {
        let (graph, bound) = super::load_model_binding(&args.model, &dims, &[])?;
        (graph, Vec::new(), bound, None)
    };
    if !bound_at_import {
        super::check_dim_names(&graph, &dims)?;
    }
    let options = CompileOptions { target, dims, graph_options, epilogues: args.epilogues, pinned_outputs: args.train };
    if args.mesh.is_none() && is_rank_program(&graph) {
        let mesh = graph.io_shardings().map_or_else(|| "MESH".to_string(), |io| io.mesh.to_string());
        bail!("{} is a per-rank program (it has collectives): compile it with --mesh {mesh}", args.model.display());
    }
    if let Some(mesh) = &args.mesh {
        let model_bytes = model_bytes(&args.model)?;
        return compile_mesh(&args, mesh, graph, step.as_ref(), &model_bytes, options, start);
    }
    // The input hash covers the model's bytes, hashed from the file in pieces (holding a 650 MB
    // model's bytes through the compile was that much peak memory); a zoo model is its spec.
    let input_hash = if let Some(hashing) = early_hash {
        let hashed = hashing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        hashed.with_context(|| format!("{}: cannot read", args.model.display()))?
    } else if args.model.is_file() {
        input_hash_of_file(&args.model, &options).with_context(|| format!("{}: cannot read", args.model.display()))?
    } else {
        input_hash(args.model.to_string_lossy().as_bytes(), &options)
    };
    // The weights are written and fsynced while the kernels compile (codegen::artifact docs).
    let compiled = compile_to_dir(&graph, input_hash, &options, &args.output)
        .with_context(|| format!("{}", args.model.display()))?;
    let s = &compiled.stats;
    let library: Vec<String> = s.library_calls.iter().map(|(name, n)| format!("{n} {name}")).collect();
    println!(
        "compiled {}{} ({} nodes) for {} in {:.2} s: {} kernels holding {} ops ({} distinct, compiled once each), library calls: {}, {} views",
        args.model.display(),
        if args.train { " training step" } else { "" },
        s.nodes,
        target.name(),
        start.elapsed().as_secs_f64(),
        s.kernel_steps,
        s.fused_ops,
        s.kernels,
        if library.is_empty() { "none".to_string() } else { library.join(", ") },
        s.views
    );
    // Steps the interpreter runs: the first thing to read when a compiled model is slow.
    let by_op: Vec<String> = s.reference_ops.iter().map(|(op, n)| format!("{n} {op}")).collect();
    println!(
        "reference steps: {} of {}{}",
        s.reference_steps(),
        s.steps(),
        if by_op.is_empty() { String::new() } else { format!(" ({})", by_op.join(", ")) }
    );
    if target != Target::Cpu {
        println!("{} library steps run on the host (all but the GEMMs, which are cuBLAS calls)", s.host_steps);
    }
    println!(
        "arena {:.1} MiB (without reuse {:.1} MiB); wrote {}",
        s.arena_bytes as f64 / (1 << 20) as f64,
        s.unshared_bytes as f64 / (1 << 20) as f64,
        args.output.display()
    );
    Ok(())
}

/// What the input hash covers: the model file's bytes, or a zoo model's spec.
fn model_bytes(model: &std::path::Path) -> Result<Vec<u8>> {
    if model.is_file() {
        std::fs::read(model).with_context(|| format!("{}: cannot read", model.display()))
    } else {
        Ok(model.to_string_lossy().into_owned().into_bytes())
    }
}

/// `--dim NAME=LO..HI`: a range artifact (see `runtime::executor::ranged`), which needs the
/// model to import with its ranged dimensions symbolic. A range of one size (`NAME=N..N`) is a
/// pinned size: when the symbolic import fails, the model is imported again with the pinned
/// sizes bound, as a compile without ranges does (shape arithmetic that only some sizes allow,
/// e.g. a branch on `seq == 1`, then folds), and the other ranges stay symbolic.
fn compile_range(
    args: &CompileArgs,
    target: Target,
    dims: std::collections::HashMap<String, u64>,
    ranges: &[DimRange],
    start: Instant,
) -> Result<()> {
    if args.train || args.mesh.is_some() {
        bail!("--dim NAME=LO..HI compiles a model for one device; --train and --mesh need every dimension pinned (--dim NAME=N)");
    }
    let model_bytes = model_bytes(&args.model)?;
    let mut pinned = dims.clone();
    pinned.extend(ranges.iter().filter(|r| r.lo == r.hi).map(|r| (r.name.clone(), r.lo)));
    let (graph, bound_at_import) = super::load_model_binding(&args.model, &pinned, &[]).with_context(|| {
        format!("{}: a range artifact needs the model to import with symbolic dimensions", args.model.display())
    })?;
    // What the import bound is a static size in the graph now, no longer a range.
    let bound: Vec<&DimRange> = if bound_at_import {
        let left: std::collections::BTreeSet<&str> = graph.values().flat_map(|(_, v)| v.ty.symbols()).collect();
        ranges.iter().filter(|r| r.lo == r.hi && !left.contains(r.name.as_str())).collect()
    } else {
        Vec::new()
    };
    let ranges: Vec<DimRange> = ranges.iter().filter(|r| !bound.contains(r)).cloned().collect();
    let ranges = merge_unified_ranges(ranges, &super::unified_symbols(&args.model, &graph))?;
    let mut names = dims.clone();
    names.extend(ranges.iter().map(|r| (r.name.clone(), r.lo)));
    if !bound_at_import {
        super::check_dim_names(&graph, &names)?;
    }
    let options =
        CompileOptions { target, dims, graph_options: Vec::new(), epilogues: args.epilogues, pinned_outputs: false };
    let files =
        compile_ranged(&graph, &model_bytes, &options, &ranges).with_context(|| format!("{}", args.model.display()))?;
    write_artifact(&args.output, &files)?;
    // Broadcasts between sizes the symbols leave undecided: each run checks them at its sizes.
    let checks = tessera_ir::ops::layout::deferred_broadcasts(&graph);
    if !checks.is_empty() {
        let listed: Vec<String> =
            checks.iter().map(|c| format!("{} == {} ('{}')", c.operand, c.target, c.value)).collect();
        println!(
            "run-time shape checks: {} ({}), refused at a run whose sizes break one",
            checks.len(),
            listed.join(", ")
        );
    }
    let spelled: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    println!(
        "compiled {} ({} nodes) for {} in {:.2} s: a range artifact for {} (the symbolic graph, compiled by `tessera run` per distinct size it meets); wrote {}",
        args.model.display(),
        graph.num_nodes(),
        target.name(),
        start.elapsed().as_secs_f64(),
        spelled.join(", "),
        args.output.display()
    );
    Ok(())
}

/// `ranges` with the range of each symbol the import unified with another (`aliases`: replaced
/// symbol -> kept symbol) moved onto the kept symbol: intersected with its range if it has
/// one (an empty intersection is an error: no run could satisfy both), else renamed.
fn merge_unified_ranges(
    ranges: Vec<DimRange>,
    aliases: &std::collections::HashMap<String, String>,
) -> Result<Vec<DimRange>> {
    let mut merged: Vec<DimRange> = ranges.iter().filter(|r| !aliases.contains_key(&r.name)).cloned().collect();
    for range in ranges.iter().filter(|r| aliases.contains_key(&r.name)) {
        let kept = &aliases[&range.name];
        match merged.iter_mut().find(|r| &r.name == kept) {
            Some(r) => {
                let (lo, hi) = (r.lo.max(range.lo), r.hi.min(range.hi));
                if lo > hi {
                    bail!(
                        "--dim {range}: the model uses '{}' as the size '{kept}' is, whose range {r} does not meet it",
                        range.name
                    );
                }
                (r.lo, r.hi) = (lo, hi);
            }
            None => merged.push(DimRange { name: kept.clone(), lo: range.lo, hi: range.hi }),
        }
        eprintln!(
            "note: --dim {range}: the model uses '{}' as the same size as '{kept}'; the range applies to '{kept}'",
            range.name
        );
    }
    Ok(merged)
}

/// True when `graph` has collectives: a program each rank of a mesh runs, not a global one.
fn is_rank_program(graph: &Graph) -> bool {
    graph.nodes().any(|(_, n)| matches!(n.op, tessera_ir::ops::Op::Collective(_)))
}

/// `--mesh`: partitions `graph` (the model with `--dim` bound, or the training step) and writes
/// the per-rank artifact, printing one line per pipeline stage.
fn compile_mesh(
    args: &CompileArgs,
    mesh_text: &str,
    graph: Graph,
    step: Option<&TrainStep>,
    model_bytes: &[u8],
    mut options: CompileOptions,
    start: Instant,
) -> Result<()> {
    let mesh = Mesh::parse(mesh_text).map_err(|e| anyhow::anyhow!("--mesh '{mesh_text}': {e}"))?;
    let kind = match args.schedule {
        ScheduleArg::Gpipe => Schedule::GPipe,
        ScheduleArg::OneFOneB => Schedule::OneFOneB,
    };
    let schedule = PipelineSchedule { kind, interleave: 1 };
    let config = match step {
        Some(step) => {
            options.graph_options.push(format!("schedule={schedule}"));
            ShardConfig { schedule, ..ShardConfig::for_train_step(mesh, step) }
        }
        None => ShardConfig::new(mesh),
    };
    // Partitioning splits static dimensions only: bind the sizes first.
    let graph = graph.bind_dims(&options.dims).map_err(|e| anyhow::anyhow!("--dim: {e}"))?;
    let module = if is_rank_program(&graph) {
        // Already per-rank (an imported shard_map body): every rank runs it on the global inputs.
        if let Some(io) = graph.io_shardings().filter(|io| io.mesh != config.mesh) {
            bail!("{} is a per-rank program over the mesh {}, not {}", args.model.display(), io.mesh, config.mesh);
        }
        ShardedModule::of_rank_program(&graph, &config.mesh)
            .with_context(|| format!("cannot run {} over {}", args.model.display(), config.mesh))?
    } else {
        partition(&graph, &config).with_context(|| format!("cannot partition over {}", config.mesh))?
    };
    let compiled =
        compile_sharded(&module, model_bytes, &options).with_context(|| format!("{}", args.model.display()))?;
    write_artifact(&args.output, &compiled.files)?;
    println!(
        "compiled {}{} for {} over mesh {} in {:.2} s: {} ranks, {} pipeline stage(s)",
        args.model.display(),
        if args.train { " training step" } else { "" },
        options.target.name(),
        module.mesh,
        start.elapsed().as_secs_f64(),
        module.mesh.num_devices(),
        module.stages.len()
    );
    for (stage, s) in module.stages.iter().zip(&compiled.stages) {
        let communication: usize = s
            .library_calls
            .iter()
            .filter(|(name, _)| tessera_ir::ops::collective::MNEMONICS.contains(name))
            .map(|(_, n)| n)
            .sum();
        println!(
            "stage {} (ranks {}): {} steps, {} kernels ({} distinct), {} communication steps, {} reference steps",
            stage.stage,
            stage.ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            s.steps(),
            s.kernel_steps,
            s.kernels,
            communication,
            s.reference_steps()
        );
    }
    println!("wrote {}", args.output.display());
    Ok(())
}

/// `--serve`: the serving programs of a zoo spec or checkpoint directory.
fn serve(args: &CompileArgs, target: Target, start: Instant) -> Result<()> {
    if target != Target::Cpu {
        bail!("--serve compiles for --target cpu (the engine's attention runs on the host)");
    }
    if !args.dim.is_empty() {
        bail!("--serve takes --max-batch, --max-seq and --kv-block, not --dim");
    }
    // Checked before the model is opened: a bad list costs nothing.
    let buckets = match &args.row_buckets {
        Some(chosen) => tessera::serve::chosen_row_buckets(chosen, args.max_batch)?,
        None => tessera::serve::row_buckets(args.max_batch),
    };
    let name = args.model.to_string_lossy().into_owned();
    let model = tessera::serve::open_model(&name, 0)?;
    let max_seq = args.max_seq.unwrap_or(model.config.seq.min(2048));
    let shape = ServeShape { kv_dtype: args.kv_dtype, ..ServeShape::new(args.max_batch, max_seq, args.kv_block) };
    let tp = tessera::serve::serving_tp(args.mesh.as_deref(), &model.config)?;
    let mut manifest = model.manifest(shape, tp)?;
    // A run uses the fewest rows that hold its tokens: a lone sequence is not padded.
    manifest.row_buckets = buckets.into_iter().filter(|&r| r < shape.rows).collect();
    tessera::serve::compiled::write_compiled(&model, &manifest, &args.model, &args.output)?;
    let s = manifest.shape;
    let kv_bytes = s.cache_blocks() * manifest.kv_block_bytes();
    println!(
        "compiled the serving programs of {name} for cpu{} in {:.2} s: {} rows per run{}, decode batches up to {}, {} tokens per sequence, KV cache {} blocks of {} tokens ({:.1} MiB); wrote {}",
        if tp > 1 { format!(" on {tp} tensor-parallel ranks") } else { String::new() },
        start.elapsed().as_secs_f64(),
        s.rows,
        match &manifest.row_buckets[..] {
            [] => String::new(),
            fewer => format!(
                " (and {} for fewer tokens)",
                fewer.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ),
        },
        s.max_batch,
        s.max_seq,
        s.cache_blocks(),
        s.kv_block,
        kv_bytes as f64 / (1 << 20) as f64,
        args.output.display()
    );
    Ok(())
}

/// The training step of `--train` (its graph and roles), and the options that shaped it.
fn training_step(args: &CompileArgs) -> Result<(TrainStep, Vec<String>)> {
    if args.micro_batches == 0 || args.batch == 0 {
        bail!("--batch and --micro-batches must be positive");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    let name = args.model.to_string_lossy().into_owned();
    let model = train::load_model(&name, args.batch, args.seq)?;
    let optimizer = match args.optimizer {
        OptimizerArg::Adamw => OptimizerKind::AdamW,
        OptimizerArg::Sgd => OptimizerKind::Sgd,
    };
    let config = TrainConfig { model: name, optimizer, lr: args.lr, seed: 0, micro_batches: args.micro_batches };
    let step = train::build_step(&model, &config)?;
    // The same options `tessera train` compiles its step with.
    let options = train::compiled::step_graph_options(&model, &config);
    Ok((step, options))
}
