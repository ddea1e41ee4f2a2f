//! The training step compiled in this process to a CPU artifact, the same way as `tessera
//! compile --train --target cpu` (same graph, same options, same code generator), and run by
//! the runtime's [`CompiledExecutor`] with the weights and optimizer state resident in its
//! arena.
//!
//! The artifact goes to a temporary directory only because the runtime maps its kernels from a
//! shared object on disk; once loaded, the directory is removed.

use super::{build_step, carried_state, data, init_state, named_state, TrainConfig, TrainModel, Trainer};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tessera_codegen::artifact::{compile, write_artifact, CompileOptions, Target};
use tessera_passes::train_step::TrainStep;
use tessera_runtime::executor::load;
use tessera_runtime::step::CompiledExecutor;

/// The options `tessera compile --train` records for the step of `model` under `config` (they
/// shaped the graph; the manifest records and hashes them).
pub fn step_graph_options(model: &TrainModel, config: &TrainConfig) -> Vec<String> {
    vec![
        format!("train:batch={}", model.batch),
        format!("train:lr={:e}", config.lr),
        format!("train:micro_batches={}", config.micro_batches),
        format!("train:optimizer={}", config.optimizer.name()),
        format!("train:seq={}", model.seq),
    ]
}

/// A compiled step ready to train, and how long compiling took.
pub struct CompiledStep {
    pub executor: CompiledExecutor,
    pub compile_time: Duration,
}

/// Compiles `step` (of `model` under `config`) for the CPU and binds `state` (the carried
/// tensors by input name) into the executor's arena.
pub fn compile_step(
    model: &TrainModel,
    step: &TrainStep,
    config: &TrainConfig,
    state: &[(String, tessera_ir::tensor::Tensor)],
) -> Result<CompiledStep> {
    let started = Instant::now();
    let options = CompileOptions {
        target: Target::Cpu,
        dims: Default::default(),
        graph_options: step_graph_options(model, config),
        epilogues: false,
        pinned_outputs: true,
    };
    let compiled = compile(&step.graph, config.model.as_bytes(), &options)
        .with_context(|| format!("{}: cannot compile the training step", config.model))?;
    let scratch = tempfile::Builder::new().prefix("tessera-train-").tempdir().context("a temporary directory")?;
    let dir = scratch.path().join("step");
    write_artifact(&dir, &compiled.files)?;
    let artifact = load::load(&dir)?;
    let executor = CompiledExecutor::new(artifact, carried_state(step)?, state)?;
    // The kernels stay mapped after their file is gone.
    scratch.close().context("removing the temporary artifact")?;
    Ok(CompiledStep { executor, compile_time: started.elapsed() })
}

/// A fresh run on the compiled step, and how long compiling took.
pub fn compiled_trainer(
    model: TrainModel,
    config: TrainConfig,
    corpus: data::ByteCorpus,
) -> Result<(Trainer<CompiledExecutor>, Duration)> {
    let step = build_step(&model, &config)?;
    let state = init_state(&step, config.seed);
    let compiled = compile_step(&model, &step, &config, &named_state(&step, &state))?;
    Ok((Trainer::new(model, step, config, corpus, compiled.executor)?, compiled.compile_time))
}
