//! The seam between a training loop and whatever runs its step graph.
//!
//! A training loop hands a [`StepExecutor`] the state a step carries to the next (weights and
//! optimizer state) once, with [`StepExecutor::set_state`]; then it feeds the per-step tensors
//! (tokens, targets, the step counter, dropout masks) once per step and reads back the outputs
//! that are not carried (the loss). The carried outputs replace their inputs inside the
//! executor, and [`StepExecutor::state`] reads them out when the loop needs them (a
//! checkpoint). Which output replaces which input is a [`CarriedState`] list.
//!
//! Two executors run the whole step in this process: [`InterpreterExecutor`] on the reference
//! interpreter, and [`CompiledExecutor`] on a CPU artifact of the step graph, whose carried
//! tensors stay resident in the arena (each step's updated weights are copied to the weights'
//! input range, as stored, instead of converted out and in again).

use crate::executor::cpu::{Bound, Carry, CpuExecutor};
use crate::executor::load::Artifact;
use crate::executor::profile::Profile;
use crate::interpreter::{self, RunError};
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;
use tessera_ir::verify::{verify, VerifyError};

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("invalid step graph: {0}")]
    Invalid(#[from] VerifyError),
    /// The compiled step could not be bound or run (the artifact error's message).
    #[error("compiled step: {0}")]
    Compiled(String),
    #[error("carried state: {0}")]
    State(String),
}

/// One carried tensor: after each step, graph output `output` becomes graph input `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedValue {
    pub input: String,
    pub output: String,
}

/// The carried tensors of a step graph, in the order [`StepExecutor::state`] returns them.
pub type CarriedState = Vec<CarriedValue>;

/// Runs one training step after another, keeping the carried state in between.
pub trait StepExecutor {
    /// Replaces the carried state: one tensor per carried input, by input name.
    fn set_state(&mut self, state: &[(String, Tensor)]) -> Result<(), StepError>;

    /// Runs one step on the per-step inputs (every graph input that is not carried); the
    /// carried outputs replace their inputs, and the others are returned by name, in graph
    /// order.
    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError>;

    /// The carried state, by input name, in the order of the [`CarriedState`].
    fn state(&self) -> Result<Vec<(String, Tensor)>, StepError>;

    /// What runs the step, for logs (`interpreter`, `cpu x 4 ranks`, ...).
    fn describe(&self) -> String;
}

/// The whole step graph on the reference interpreter, in this process.
#[derive(Debug, Clone)]
pub struct InterpreterExecutor {
    graph: Graph,
    carried: CarriedState,
    /// The carried inputs' current values, in `carried` order (empty before `set_state`).
    state: Vec<Tensor>,
}

impl InterpreterExecutor {
    /// Verifies the graph once; every step runs it as given. Nothing is carried: each step is
    /// fed every input and returns every output.
    pub fn new(graph: Graph) -> Result<InterpreterExecutor, StepError> {
        InterpreterExecutor::carrying(graph, Vec::new())
    }

    /// [`InterpreterExecutor::new`], carrying `carried` from step to step.
    pub fn carrying(graph: Graph, carried: CarriedState) -> Result<InterpreterExecutor, StepError> {
        verify(&graph)?;
        check_carried(&graph, &carried)?;
        Ok(InterpreterExecutor { graph, carried, state: Vec::new() })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

/// Every carried input and output is one of the graph's, each named once.
fn check_carried(graph: &Graph, carried: &CarriedState) -> Result<(), StepError> {
    let names = |values: &[tessera_ir::graph::ValueId]| -> Vec<String> {
        values.iter().map(|&v| graph.value(v).name.clone()).collect()
    };
    let (inputs, outputs) = (names(graph.inputs()), names(graph.outputs()));
    for (k, c) in carried.iter().enumerate() {
        if !inputs.contains(&c.input) {
            return Err(StepError::State(format!("'{}' is not an input of the step graph", c.input)));
        }
        if !outputs.contains(&c.output) {
            return Err(StepError::State(format!("'{}' is not an output of the step graph", c.output)));
        }
        if carried[..k].iter().any(|d| d.input == c.input || d.output == c.output) {
            return Err(StepError::State(format!("'{}' is carried twice", c.input)));
        }
    }
    Ok(())
}

/// `state` in `carried` order, checked to name every carried input once.
fn ordered_state(carried: &CarriedState, state: &[(String, Tensor)]) -> Result<Vec<Tensor>, StepError> {
    if state.len() != carried.len() {
        return Err(StepError::State(format!("{} tensors given, {} carried", state.len(), carried.len())));
    }
    carried
        .iter()
        .map(|c| {
            state
                .iter()
                .find(|(name, _)| *name == c.input)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| StepError::State(format!("no tensor for carried input '{}'", c.input)))
        })
        .collect()
}

impl StepExecutor for InterpreterExecutor {
    fn set_state(&mut self, state: &[(String, Tensor)]) -> Result<(), StepError> {
        self.state = ordered_state(&self.carried, state)?;
        Ok(())
    }

    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError> {
        if self.state.len() != self.carried.len() {
            return Err(StepError::State("no state set before the first step".into()));
        }
        let mut all: Vec<(String, Tensor)> =
            self.carried.iter().zip(&self.state).map(|(c, t)| (c.input.clone(), t.clone())).collect();
        all.extend(feeds.iter().cloned());
        let mut outputs = interpreter::run(&self.graph, &all)?;
        for (c, slot) in self.carried.iter().zip(&mut self.state) {
            let i = outputs.iter().position(|(name, _)| *name == c.output);
            let i = i.ok_or_else(|| StepError::State(format!("the step did not return '{}'", c.output)))?;
            *slot = outputs.remove(i).1;
        }
        Ok(outputs)
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, StepError> {
        Ok(self.carried.iter().zip(&self.state).map(|(c, t)| (c.input.clone(), t.clone())).collect())
    }

    fn describe(&self) -> String {
        "reference interpreter, 1 process".to_string()
    }
}

/// The whole step as a compiled CPU artifact, in this process. The carried inputs are bound
/// once as resident inputs of the arena; after each run the carried outputs are copied onto
/// them there (as stored: f32 bytes for f32), so a step converts only its per-step inputs and
/// its loss.
pub struct CompiledExecutor {
    bound: Bound<CpuExecutor>,
    carried: CarriedState,
    carry: Carry,
    /// Steps that run on the reference interpreter inside the artifact, by op (for logs).
    reference_ops: Vec<String>,
    /// Accumulated per-step wall times when profiling.
    profile: Option<Profile>,
    /// The mesh size, once connected to the other ranks.
    ranks: Option<usize>,
}

impl CompiledExecutor {
    /// Binds `state` (one tensor per carried input) as the resident inputs of `artifact`'s CPU
    /// program.
    pub fn new(
        artifact: Artifact,
        carried: CarriedState,
        state: &[(String, Tensor)],
    ) -> Result<CompiledExecutor, StepError> {
        let compiled = |e: crate::executor::ArtifactError| StepError::Compiled(e.to_string());
        let ordered = ordered_state(&carried, state)?;
        let resident: Vec<(String, Tensor)> = carried.iter().map(|c| c.input.clone()).zip(ordered).collect();
        let mut reference_ops: Vec<String> = artifact
            .program
            .steps
            .iter()
            .filter_map(|s| match s {
                tessera_ir::artifact::Step::Library {
                    call: tessera_ir::artifact::LibraryCall::Reference { op },
                    ..
                } => Some(op.mnemonic().to_string()),
                _ => None,
            })
            .collect();
        reference_ops.sort();
        let bound = CpuExecutor::new(artifact).and_then(|e| e.into_bound(&resident)).map_err(compiled)?;
        let pairs: Vec<(String, String)> = carried.iter().map(|c| (c.output.clone(), c.input.clone())).collect();
        let carry = bound.carry(&pairs).map_err(compiled)?;
        Ok(CompiledExecutor { bound, carried, carry, reference_ops, profile: None, ranks: None })
    }

    /// Runs the program's communication steps over `comm` from now on: a rank's program of a
    /// partitioned step (`tessera train --mesh`).
    pub fn connect(&mut self, comm: crate::spmd::RankComm) {
        self.ranks = Some(comm.mesh.num_devices());
        self.bound.connect(comm);
    }

    /// Ops of the steps that fall back to the reference interpreter, sorted (one entry per step).
    pub fn reference_ops(&self) -> &[String] {
        &self.reference_ops
    }

    /// From now on, accumulates the wall time of every kernel and library call.
    pub fn start_profile(&mut self) {
        self.profile = Some(Profile::new());
    }

    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }
}

impl StepExecutor for CompiledExecutor {
    fn set_state(&mut self, state: &[(String, Tensor)]) -> Result<(), StepError> {
        let ordered = ordered_state(&self.carried, state)?;
        for (c, t) in self.carried.iter().zip(ordered) {
            self.bound.write_resident(&c.input, t).map_err(|e| StepError::Compiled(e.to_string()))?;
        }
        Ok(())
    }

    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError> {
        self.bound
            .run_carrying(feeds, &self.carry, self.profile.as_mut())
            .map_err(|e| StepError::Compiled(e.to_string()))
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, StepError> {
        self.carried
            .iter()
            .map(|c| {
                let t = self.bound.resident_input(&c.input).map_err(|e| StepError::Compiled(e.to_string()))?;
                Ok((c.input.clone(), t))
            })
            .collect()
    }

    fn describe(&self) -> String {
        let fallback = if self.reference_ops.is_empty() {
            "no reference steps".to_string()
        } else {
            format!("{} reference steps ({})", self.reference_ops.len(), self.reference_ops.join(", "))
        };
        match self.ranks {
            None => format!("compiled CPU artifact, 1 process, {fallback}"),
            Some(n) => format!("compiled CPU artifact, rank of {n}, {fallback}"),
        }
    }
}
