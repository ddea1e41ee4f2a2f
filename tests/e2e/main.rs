//! End-to-end tests: the `tessera` binary and the crates together, one test binary.

mod bad_input;
mod cli;
mod onnx;
mod pass_data;
mod plan;
mod real_models;
mod support;
mod zoo;
