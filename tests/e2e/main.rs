//! End-to-end tests: the `tessera` binary and the crates together, one test binary.

mod artifact;
mod attention;
mod bad_input;
mod calibration;
mod cli;
mod cost_model;
mod cuda;
mod distributed;
mod egraph_models;
mod mpi;
mod onnx;
mod pass_data;
mod plan;
mod planner;
mod real_models;
mod runtime_only;
mod shard;
mod srun;
mod support;
mod tidy;
mod train;
mod train_artifact;
mod train_compiled;
mod zoo;
