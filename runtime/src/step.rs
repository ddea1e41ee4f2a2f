//! The seam between a training loop and whatever runs its step graph.
//!
//! A training loop feeds named tensors to a [`StepExecutor`] once per step and reads the named
//! results back; it never looks inside. The single-process [`InterpreterExecutor`] runs the
//! whole step graph on the reference interpreter; a per-rank executor (compiled kernels,
//! collectives between ranks) implements the same trait and the loop stays as it is.

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
}

/// Runs one training step: named inputs in, named outputs (the graph's, in order) out.
pub trait StepExecutor {
    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError>;

    /// What runs the step, for logs (`interpreter`, `cpu x 4 ranks`, ...).
    fn describe(&self) -> String;
}

/// The whole step graph on the reference interpreter, in this process.
#[derive(Debug, Clone)]
pub struct InterpreterExecutor {
    graph: Graph,
}

impl InterpreterExecutor {
    /// Verifies the graph once; every step runs it as given.
    pub fn new(graph: Graph) -> Result<InterpreterExecutor, StepError> {
        verify(&graph)?;
        Ok(InterpreterExecutor { graph })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl StepExecutor for InterpreterExecutor {
    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError> {
        Ok(interpreter::run(&self.graph, feeds)?)
    }

    fn describe(&self) -> String {
        "reference interpreter, 1 process".to_string()
    }
}
