//! Executors of ahead-of-time artifacts (see [`tessera_ir::artifact`] for the format).
//!
//! [`load`] reads and checks an artifact: manifest, format version, every file against its
//! SHA-256, and the program's internal consistency (buffer ranges inside the arena or the
//! weights image, aligned, step operands in range, no step writing a range it reads), so the
//! library calls never index out of bounds. [`cpu`] runs a checked program: it maps
//! `kernels.so` into the process and runs the steps over one arena. Both executors bind inputs
//! the same way: `bind(resident)` writes some inputs (the weights) once into an arena that the
//! returned `Bound` keeps, and each `Bound::run(rest)` writes only the others
//! ([`resident_inputs`] and [`check_run_inputs`] hold the rules); [`library`] holds the
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

/// Which of the program's inputs (by index into [`Program::inputs`]) are resident: bound once
/// and kept in the arena across runs. Checks that every name is a program input, named once,
/// and that no step writes any part of its buffer (the memory plan pins inputs; an artifact
/// planned otherwise is refused rather than silently computing with overwritten weights).
pub(crate) fn resident_inputs<'n>(
    program: &Program,
    names: impl IntoIterator<Item = &'n str>,
) -> Result<Vec<bool>, ArtifactError> {
    let mut resident = vec![false; program.inputs.len()];
    for name in names {
        let input_error = |message: &str| ArtifactError::Input { name: name.to_string(), message: message.into() };
        let i = program.inputs.iter().position(|b| b.name == name).ok_or_else(|| input_error(NOT_AN_INPUT))?;
        if std::mem::replace(&mut resident[i], true) {
            return Err(input_error("bound twice"));
        }
        let range = arena_range(program, program.inputs[i].buffer);
        let written = program.steps.iter().position(|step| {
            step.outputs().iter().any(|&o| {
                let (start, end) = arena_range(program, o);
                start < end && start < range.1 && range.0 < end
            })
        });
        if let Some(step) = written {
            let message = format!(
                "step {step} overwrites its buffer, so it cannot stay resident across runs \
                 (an artifact from before inputs were pinned: recompile it)"
            );
            return Err(ArtifactError::Input { name: name.to_string(), message });
        }
    }
    Ok(resident)
}

const NOT_AN_INPUT: &str = "the program has no input of this name";

/// Checks the names of the inputs fed for one run: each a program input, given once, and not
/// one of the resident inputs (those are bound once; missing ones are reported by
/// [`bound_input`]).
pub(crate) fn check_run_inputs(
    program: &Program,
    resident: &[bool],
    inputs: &[(String, Tensor)],
) -> Result<(), ArtifactError> {
    for (k, (name, _)) in inputs.iter().enumerate() {
        let input_error = |message: &str| ArtifactError::Input { name: name.clone(), message: message.into() };
        let i = program.inputs.iter().position(|b| b.name == *name).ok_or_else(|| input_error(NOT_AN_INPUT))?;
        if resident[i] {
            return Err(input_error("bound once as a resident input; it cannot also be fed per run"));
        }
        if inputs[..k].iter().any(|(n, _)| n == name) {
            return Err(input_error("given twice"));
        }
    }
    Ok(())
}

/// The arena byte range of `buffer` (empty for a buffer in the weights image).
fn arena_range(program: &Program, buffer: u32) -> (u64, u64) {
    let desc = &program.buffers[buffer as usize];
    match desc.location {
        Location::Arena { offset } => (offset, offset + desc.bytes()),
        Location::Weights { .. } => (0, 0),
    }
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
