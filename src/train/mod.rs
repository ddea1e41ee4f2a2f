//! Training: a model becomes one step graph (`tessera_passes::train_step`), and a loop feeds it
//! batches of byte-level tokens, keeps the weights and optimizer state between steps, and
//! checkpoints them.
//!
//! The loop talks to its step graph only through [`StepExecutor`], so the single-process
//! reference interpreter used here can be replaced by a per-rank executor without touching
//! the data, the checkpoints or the reporting. Everything that makes a run reproducible (the
//! weights, the optimizer state, the step, the data position and the RNG state for dropout)
//! is in [`TrainState`], which is exactly what a checkpoint holds: resuming gives the losses of
//! a run that never stopped, bit for bit.
//!
//! The executor keeps the weights and the optimizer state between steps (the compiled one in its
//! arena); [`Trainer::state`] reads them back when a checkpoint needs them.
//!
//! Map: [`data`] (tokens and auxiliary inputs), [`checkpoint`] (atomic save and load),
//! [`compiled`] (the step compiled in-process to a CPU artifact, the default executor),
//! [`distributed`] (the same step partitioned over a mesh, one [`distributed::DistributedTrainer`]
//! per rank). Both trainers draw their batches through [`step_data`], so every mesh reads the
//! same stream.

pub mod checkpoint;
pub mod compiled;
pub mod data;
pub mod distributed;

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::time::Instant;
use tessera_frontend::zoo::build::build_model;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::ops::optim::{AdamW, Sgd};
use tessera_ir::ops::Op;
use tessera_ir::random::SplitMix64;
use tessera_ir::tensor::Tensor;
use tessera_ir::workload::BlockShape;
use tessera_passes::train_step::{self, Optimizer, TrainStep, TrainStepConfig};
use tessera_runtime::step::{CarriedState, CarriedValue, InterpreterExecutor, StepExecutor};

/// A model ready for training: the forward graph ending in logits, and its dropout rate.
#[derive(Debug, Clone)]
pub struct TrainModel {
    pub forward: Graph,
    pub dropout: f64,
    /// Sequences per micro-batch and tokens per sequence, from the `tokens` input.
    pub batch: usize,
    pub seq: usize,
}

/// Builds the forward graph of `model`: a zoo spec (built for `batch` sequences of `seq`
/// tokens, `seq` defaulting to the spec's) or a model file (whose shapes are fixed). A final
/// softmax is dropped, since the loss takes logits.
pub fn load_model(model: &str, batch: u64, seq: Option<u64>) -> Result<TrainModel> {
    let path = Path::new(model);
    let (mut forward, dropout) = if path.exists() {
        let g = tessera_frontend::load::load_model(path).with_context(|| format!("{model}: cannot load"))?;
        (g, 0.0)
    } else {
        let mut cfg = tessera_frontend::zoo::spec::parse(model)?;
        if let Some(seq) = seq {
            cfg.seq = seq;
        }
        let opts = BlockShape { batch, ..cfg.block_shape() };
        (build_model(&cfg, &opts)?.graph, cfg.dropout)
    };
    let &[out] = forward.outputs() else {
        bail!("{model}: a trainable model has exactly one output (logits or their softmax)");
    };
    if let Some(node) = forward.producer(out) {
        if let Op::Softmax { .. } = forward.node(node).op {
            let logits = forward.node(node).inputs[0];
            forward.set_outputs(vec![logits]);
            tessera_passes::dce::remove_dead_nodes(&mut forward);
        }
    }
    let tokens = forward
        .inputs()
        .iter()
        .find(|&&v| forward.value(v).name == "tokens")
        .with_context(|| format!("{model}: the model has no 'tokens' input"))?;
    let shape = forward.value(*tokens).ty.static_shape().unwrap_or_default();
    let [b, s] = shape[..] else {
        bail!("{model}: 'tokens' must be [batch, seq] with static sizes, got {}", forward.value(*tokens).ty);
    };
    Ok(TrainModel { forward, dropout, batch: b as usize, seq: s as usize })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    AdamW,
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// What a run is: everything but the data file and the executor.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The model as given (recorded in checkpoints).
    pub model: String,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub seed: u64,
    pub micro_batches: usize,
}

/// The step graph of `model` under `cfg` (f32 master weights; f64 for an f64 model).
pub fn build_step(model: &TrainModel, cfg: &TrainConfig) -> Result<TrainStep> {
    let optimizer = match cfg.optimizer {
        OptimizerKind::AdamW => Optimizer::AdamW(AdamW { lr: cfg.lr, weight_decay: 0.0, ..AdamW::default() }),
        OptimizerKind::Sgd => Optimizer::Sgd(Sgd { lr: cfg.lr, momentum: 0.9, weight_decay: 0.0 }),
    };
    // Master weights are f32, or f64 when the model computes in f64 (never less precise than
    // the compute).
    let computes_f64 = model.forward.inputs().iter().any(|&v| {
        model.forward.input_role(v) == Some(InputRole::Parameter) && model.forward.value(v).ty.dtype == DType::F64
    });
    let master = if computes_f64 { DType::F64 } else { DType::F32 };
    let step_cfg = TrainStepConfig { optimizer, micro_batches: cfg.micro_batches, master };
    Ok(train_step::build(&model.forward, &step_cfg)?)
}

/// Everything that changes from step to step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Master weights in [`TrainStep::params`] order.
    pub params: Vec<Tensor>,
    /// Optimizer state in [`TrainStep::state`] order.
    pub optimizer_state: Vec<Tensor>,
    /// Steps completed.
    pub step: u64,
    pub data_position: u64,
    /// The dropout stream.
    pub rng: SplitMix64State,
}

/// The state of a [`SplitMix64`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64State(pub u64);

/// Which step outputs replace which inputs from one step to the next: the graph's outputs
/// after the loss are the updated weights, then the updated optimizer state, in
/// [`TrainStep::params`] then [`TrainStep::state`] order.
pub fn carried_state(step: &TrainStep) -> Result<CarriedState> {
    let outputs = step.graph.outputs();
    let slots: Vec<&train_step::StateSlot> = step.params.iter().chain(&step.state).collect();
    ensure!(
        outputs.len() == 1 + slots.len(),
        "the step graph has {} outputs, expected the loss and {} updated tensors",
        outputs.len(),
        slots.len()
    );
    Ok(slots
        .iter()
        .zip(&outputs[1..])
        .map(|(slot, &v)| CarriedValue { input: slot.name.clone(), output: step.graph.value(v).name.clone() })
        .collect())
}

/// The carried tensors of `state`, by step input name.
fn named_state(step: &TrainStep, state: &TrainState) -> Vec<(String, Tensor)> {
    let slots = step.params.iter().chain(&step.state);
    slots.zip(state.params.iter().chain(&state.optimizer_state)).map(|(s, t)| (s.name.clone(), t.clone())).collect()
}

/// Fresh weights from `seed`: scales 1, biases 0, everything else normal with standard
/// deviation 0.02 (GPT-2's initialization), drawn in parameter order.
pub fn init_state(step: &TrainStep, seed: u64) -> TrainState {
    let mut rng = SplitMix64::new(seed);
    let params = step
        .params
        .iter()
        .map(|slot| {
            let shape: Vec<usize> = slot.ty.static_shape().unwrap_or_default().iter().map(|&d| d as usize).collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = if slot.name.ends_with(".scale") {
                vec![1.0; n]
            } else if slot.name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| 0.02 * normal(&mut rng)).collect()
            };
            Tensor::from_f64(slot.ty.dtype, shape, values)
        })
        .collect();
    let optimizer_state = step
        .state
        .iter()
        .map(|slot| {
            let shape = slot.ty.static_shape().unwrap_or_default().iter().map(|&d| d as usize).collect();
            Tensor::zeros(slot.ty.dtype, shape)
        })
        .collect();
    // The dropout stream is distinct from the initialization stream.
    let dropout_seed = SplitMix64::for_name(seed, "dropout").next_u64();
    TrainState { params, optimizer_state, step: 0, data_position: 0, rng: SplitMix64State(dropout_seed) }
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One step's numbers, as `--format json` prints them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    /// CPU time of the whole process (every thread) during the step: on a shared machine the
    /// one-thread benchmarks compare this, which waiting for a core does not inflate.
    pub cpu_time_s: f64,
}

/// CPU time consumed so far by this process, all threads together, in seconds.
pub fn process_cpu_time_s() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; CLOCK_PROCESS_CPUTIME_ID exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return f64::NAN;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// The data part of one step's feeds (see [`step_data`]) and where the streams stand after it.
#[derive(Debug, Clone)]
pub struct StepData {
    /// AdamW's step counter, and per micro-batch the activation inputs and the targets, by
    /// step-graph input name (global tensors: a rank cuts its part).
    pub feeds: Vec<(String, Tensor)>,
    pub data_position: u64,
    pub rng: SplitMix64State,
}

/// The inputs of step number `completed + 1` besides the weights and the optimizer state:
/// the batches drawn from `corpus` at `data_position`, the auxiliary inputs (dropout masks from
/// the `rng` stream), and the step counter.
pub fn step_data(
    model: &TrainModel,
    step: &TrainStep,
    config: &TrainConfig,
    corpus: &data::ByteCorpus,
    completed: u64,
    data_position: u64,
    rng: SplitMix64State,
) -> Result<StepData> {
    let mut feeds: Vec<(String, Tensor)> = Vec::new();
    if let Some(name) = &step.step_input {
        let t = i64::try_from(completed + 1).context("step count overflows")?;
        feeds.push((name.clone(), Tensor::from_i64(DType::I64, vec![], vec![t])));
    }
    let data_seed = SplitMix64::for_name(config.seed, "data").next_u64();
    let mut rng = SplitMix64::new(rng.0);
    let mut position = data_position;
    for micro in &step.micro_batches {
        let (tokens, targets) = corpus.next_batch(&mut position, model.batch, model.seq, data_seed)?;
        for (step_name, forward_name) in &micro.activations {
            let t = if forward_name == "tokens" {
                tokens.clone()
            } else {
                let v = step.graph.inputs().iter().find(|&&v| step.graph.value(v).name == *step_name);
                let ty = &step.graph.value(*v.context("step input missing")?).ty;
                data::auxiliary_input(forward_name, ty, model.dropout, &mut rng)?
            };
            feeds.push((step_name.clone(), t));
        }
        feeds.push((micro.targets.clone(), targets));
    }
    Ok(StepData { feeds, data_position: position, rng: SplitMix64State(rng.state()) })
}

/// The training loop's state and its executor.
pub struct Trainer<E: StepExecutor> {
    pub model: TrainModel,
    pub step: TrainStep,
    pub config: TrainConfig,
    /// The weights and optimizer state in here are the executor's as of the last
    /// [`Trainer::state`] (the executor holds the current ones); the rest is current.
    state: TrainState,
    /// Whether `state`'s tensors are the executor's current ones.
    synced: bool,
    corpus: data::ByteCorpus,
    executor: E,
}

impl Trainer<InterpreterExecutor> {
    /// A fresh run on the reference interpreter.
    pub fn on_interpreter(model: TrainModel, config: TrainConfig, corpus: data::ByteCorpus) -> Result<Self> {
        let step = build_step(&model, &config)?;
        let executor = InterpreterExecutor::carrying(step.graph.clone(), carried_state(&step)?)?;
        Trainer::new(model, step, config, corpus, executor)
    }
}

impl<E: StepExecutor> Trainer<E> {
    /// A run with any executor of `step.graph` that carries [`carried_state`]`(&step)`; hands it
    /// the initial weights.
    pub fn new(
        model: TrainModel,
        step: TrainStep,
        config: TrainConfig,
        corpus: data::ByteCorpus,
        mut executor: E,
    ) -> Result<Trainer<E>> {
        let state = init_state(&step, config.seed);
        executor.set_state(&named_state(&step, &state))?;
        Ok(Trainer { model, step, config, state, synced: true, corpus, executor })
    }

    pub fn executor(&self) -> &E {
        &self.executor
    }

    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.executor
    }

    /// Optimizer steps completed.
    pub fn steps_done(&self) -> u64 {
        self.state.step
    }

    /// The whole state, the weights and optimizer state read back from the executor if a step
    /// changed them since the last call.
    pub fn state(&mut self) -> Result<&TrainState> {
        if !self.synced {
            let n_params = self.step.params.len();
            let mut tensors = self.executor.state()?.into_iter().map(|(_, t)| t);
            self.state.params = tensors.by_ref().take(n_params).collect();
            self.state.optimizer_state = tensors.collect();
            self.synced = true;
        }
        Ok(&self.state)
    }

    /// Tokens one step consumes.
    pub fn tokens_per_step(&self) -> usize {
        self.model.batch * self.model.seq * self.config.micro_batches
    }

    /// Runs one optimizer step and returns its report.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let cpu_started = process_cpu_time_s();
        let data = step_data(
            &self.model,
            &self.step,
            &self.config,
            &self.corpus,
            self.state.step,
            self.state.data_position,
            self.state.rng,
        )?;
        let outputs = self.executor.run_step(&data.feeds)?;
        self.synced = false;
        ensure!(
            outputs.len() == 1,
            "the step returned {} outputs besides the carried state, expected the loss",
            outputs.len()
        );
        let loss = outputs.first().map(|(_, t)| t.get_f64(0)).unwrap_or(f64::NAN);
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {}", self.state.step + 1);
        }
        self.state.step += 1;
        self.state.data_position = data.data_position;
        self.state.rng = data.rng;
        let step_time_s = started.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.state.step,
            loss,
            step_time_s,
            tokens_per_s: self.tokens_per_step() as f64 / step_time_s.max(1e-12),
            cpu_time_s: process_cpu_time_s() - cpu_started,
        })
    }

    /// The state as a checkpoint.
    pub fn checkpoint(&mut self) -> Result<checkpoint::Checkpoint> {
        self.state()?;
        checkpoint_of(&self.step, &self.config, &self.state)
    }

    /// Continues from `ckpt`, which must hold exactly this step's tensors.
    pub fn restore(&mut self, ckpt: checkpoint::Checkpoint) -> Result<()> {
        let state = state_from_checkpoint(&self.step, &self.config, ckpt)?;
        self.executor.set_state(&named_state(&self.step, &state))?;
        self.state = state;
        self.synced = true;
        Ok(())
    }
}

/// `state` of a run of `step` under `config` as a checkpoint.
pub fn checkpoint_of(step: &TrainStep, config: &TrainConfig, state: &TrainState) -> Result<checkpoint::Checkpoint> {
    let named = |slots: &[train_step::StateSlot], ts: &[Tensor]| {
        slots.iter().zip(ts).map(|(s, t)| (s.name.clone(), t.clone())).collect()
    };
    Ok(checkpoint::Checkpoint {
        step: state.step,
        data_position: state.data_position,
        rng_state: state.rng.0,
        model: config.model.clone(),
        fingerprint: Some(model_fingerprint(&config.model)?),
        optimizer: config.optimizer.name().to_string(),
        params: named(&step.params, &state.params),
        optimizer_state: named(&step.state, &state.optimizer_state),
    })
}

/// The fingerprint a checkpoint records and resume checks: lowercase hex SHA-256 of the text of
/// `model`'s forward graph built for one sequence of the model's own length. It tells apart
/// models whose parameters agree in name and shape (another head count, another activation, a
/// dropout), and depends on nothing a resumed run may change: not the mesh, the batch, the
/// sequence length of the run, the micro-batches or the learning rate (the optimizer's kind is
/// checked on its own).
pub fn model_fingerprint(model: &str) -> Result<String> {
    let forward = load_model(model, 1, None)?.forward;
    Ok(tessera_ir::artifact::sha256_hex(tessera_ir::mlir::print::print_graph(&forward).as_bytes()))
}

/// The state `ckpt` holds, which must be exactly the tensors of `step` under `config`.
pub fn state_from_checkpoint(
    step: &TrainStep,
    config: &TrainConfig,
    ckpt: checkpoint::Checkpoint,
) -> Result<TrainState> {
    if ckpt.optimizer != config.optimizer.name() {
        bail!("the checkpoint was written with optimizer {}, not {}", ckpt.optimizer, config.optimizer.name());
    }
    let ours = model_fingerprint(&config.model)?;
    if let Some(theirs) = ckpt.fingerprint.as_ref().filter(|&theirs| *theirs != ours) {
        bail!(
            "the checkpoint is of another model: it trained '{}' (fingerprint {}), this run trains '{}' (fingerprint {})",
            ckpt.model,
            theirs.chars().take(16).collect::<String>(),
            config.model,
            &ours[..16]
        );
    }
    let take = |slots: &[train_step::StateSlot], mut given: Vec<(String, Tensor)>, what: &str| -> Result<Vec<Tensor>> {
        ensure!(
            given.len() == slots.len(),
            "the checkpoint has {} {what} tensors, the model {}",
            given.len(),
            slots.len()
        );
        slots
            .iter()
            .map(|slot| {
                let i = given
                    .iter()
                    .position(|(n, _)| *n == slot.name)
                    .with_context(|| format!("the checkpoint lacks {what} tensor '{}'", slot.name))?;
                let (_, t) = given.swap_remove(i);
                let t = t.cast(slot.ty.dtype);
                ensure!(
                    t.tensor_type() == slot.ty,
                    "checkpoint tensor '{}' is {}, the model needs {}",
                    slot.name,
                    t.tensor_type(),
                    slot.ty
                );
                Ok(t)
            })
            .collect()
    };
    Ok(TrainState {
        params: take(&step.params, ckpt.params, "parameter")?,
        optimizer_state: take(&step.state, ckpt.optimizer_state, "optimizer")?,
        step: ckpt.step,
        data_position: ckpt.data_position,
        rng: SplitMix64State(ckpt.rng_state),
    })
}

/// Parameters of a forward graph (for reports).
pub fn parameter_count(g: &Graph) -> u64 {
    g.inputs()
        .iter()
        .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
        .map(|&v| g.value(v).ty.num_elements().unwrap_or(0))
        .sum()
}
