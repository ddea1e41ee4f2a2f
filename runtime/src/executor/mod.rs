//! Executors of ahead-of-time artifacts (see [`tessera_ir::artifact`] for the format).
//!
//! [`load`] reads and checks an artifact: manifest, format version, every file against its
//! SHA-256, and the program's internal consistency (buffer ranges inside the arena or the
//! weights image, aligned, step operands in range, no step writing a range it reads), so the
//! library calls never index out of bounds. [`cpu`] runs a checked program: it maps
//! `kernels.so` into the process and runs the steps over one arena; [`library`] holds the
//! library calls (GEMM through the `gemm` crate, data movement, the reference fallback).
//! [`cuda`] is the entry point for CUDA targets. [`profile`] accumulates per-step wall time
//! (`tessera run --profile`).

pub mod cpu;
pub mod cuda;
pub mod library;
pub mod load;
pub mod profile;

use std::path::PathBuf;
use tessera_ir::artifact::{BufferDesc, IoBinding, Location, Program};
use tessera_ir::tensor::Tensor;

/// Why an artifact could not be loaded or run. Messages name the artifact file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{dir}: not a tessera artifact (no manifest.json)")]
    NotAnArtifact { dir: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("{path}: artifact format version {found}, but this tessera reads version {expected}; recompile the model")]
    FormatVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: listed in the manifest but missing")]
    MissingFile { path: PathBuf },
    #[error("{path}: corrupted: SHA-256 {found} differs from the manifest's {expected}")]
    HashMismatch { path: PathBuf, found: String, expected: String },
    #[error("{path}: invalid program: {message}")]
    InvalidProgram { path: PathBuf, message: String },
    #[error("artifact target {target} cannot run here: {message}")]
    Target { target: String, message: String },
    #[error("{path}: cannot load kernels: {message}")]
    Kernels { path: PathBuf, message: String },
    #[error("input {name}: {message}")]
    Input { name: String, message: String },
    #[error("step {step} ({what}): {message}")]
    Step { step: usize, what: String, message: String },
}

/// The tensor fed for `binding`, checked against the dtype and shape the program declares, with
/// its buffer and the arena offset the buffer starts at. Both executors bind inputs this way.
pub(crate) fn bound_input<'a, 'p>(
    program: &'p Program,
    binding: &IoBinding,
    inputs: &'a [(String, Tensor)],
) -> Result<(&'a Tensor, &'p BufferDesc, u64), ArtifactError> {
    let input_error = |message: String| ArtifactError::Input { name: binding.name.clone(), message };
    let tensor =
        inputs.iter().find(|(n, _)| *n == binding.name).map(|(_, t)| t).ok_or_else(|| input_error("missing".into()))?;
    let desc = &program.buffers[binding.buffer as usize];
    let shape: Vec<u64> = tensor.shape.iter().map(|&n| n as u64).collect();
    if tensor.dtype != binding.dtype || shape != desc.shape {
        return Err(input_error(format!(
            "expected {} {:?}, got {} {:?}",
            binding.dtype, desc.shape, tensor.dtype, tensor.shape
        )));
    }
    let Location::Arena { offset } = desc.location else { return Err(input_error("not in the arena".into())) };
    Ok((tensor, desc, offset))
}
