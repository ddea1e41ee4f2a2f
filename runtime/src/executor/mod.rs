//! Executors of ahead-of-time artifacts (see [`tessera_ir::artifact`] for the format).
//!
//! [`load`] reads and checks an artifact: manifest, format version, every file against its
//! SHA-256, and the program's internal consistency (buffer ranges inside the arena or the
//! weights image, aligned, step operands in range, no step writing a range it reads), so the
//! library calls never index out of bounds. [`cpu`] runs a checked program: it maps
//! `kernels.so` into the process and runs the steps over one arena. Both executors bind inputs
//! the same way: `bind(resident)` writes some inputs (the weights) once into an arena that the
//! returned `Bound` keeps, and each `Bound::run(rest)` writes only the others
//! (`resident_inputs` and `check_run_inputs` hold the rules); [`library`] holds the
//! library calls (GEMM through the `gemm` crate, data movement, the reference fallback).
//! [`cuda`] is the entry point for CUDA targets. [`ranged`] runs range artifacts (`compile --dim
//! NAME=LO..HI`, format 3: the symbolic graph, its sizes bound from each run's inputs and
//! checked against the recorded ranges; `RangedExecutor::load`, `bind` once, `run` at any
//! sizes). [`profile`] accumulates per-step wall time
//! (`tessera run --profile`). [`run`] is running an artifact directory as a command, shared by
//! `tessera run` and `tessera-rt run` (rank selection under `mpirun`/`srun` included).
//!
//! # Binding, executing and checking
//!
//! - **Resident inputs (bind once, run many).** `CpuExecutor::bind(resident)` (and
//!   `CudaExecutor::bind`) allocates one arena, writes the named inputs into it, and returns a
//!   `Bound` whose `run(rest)` writes only the other inputs and runs the steps; the arena is
//!   reused across runs. `bind` refuses a name that is not a program input, a name bound twice,
//!   and an input whose range some step writes (an artifact planned before inputs were pinned:
//!   recompile); `run` refuses unknown, duplicate, missing, and resident names. Nothing relies on
//!   the arena starting zeroed: every non-input range is written by its step before any read
//!   (GEMMs do not read their destination). `IoBinding::parameter` marks the inputs the model
//!   declares parameters (absent from the JSON when false, so older programs still load);
//!   `tessera run DIR` binds those once and feeds the rest per run, `--repeat N` runs N times.
//!   `executor.run(inputs)` is `bind(&[])` followed by one run.
//! - **Carried outputs (training).** `cpu::Bound::carry(&[(output, input)])` names outputs that
//!   replace resident inputs after each `Bound::run_carrying`: the bytes are copied inside the
//!   arena, as stored (a training step's updated weights and optimizer state never leave it);
//!   `resident_input` reads one back and `write_resident` overwrites one (checkpoints).
//!   `CpuExecutor::into_bound` gives a `Bound` that owns its executor
//!   (`runtime::step::CompiledExecutor` keeps one for a whole run). Inputs are anything
//!   `InputData`: a `Tensor` (converted to the buffer's storage in chunks on rayon's pool) or a
//!   `Feed::Stored` (the bytes of an `.npy` file already in the input's storage, f32 for f32 and
//!   i64 for i64, which `npy::read_npy_feed` keeps as read and the executor copies as they are).
//!   `Bound::run_stored` returns outputs the same way (the arena's bytes, no f64 widening), which
//!   `tessera run DIR` writes to `.npy` as they are.
//! - **Executing.** `runtime::executor::cpu` allocates the arena per bind (`calloc`'d, so
//!   untouched pages cost nothing; aligned by hand to 64 bytes), converts the inputs straight into
//!   it, runs the steps in order, and reads the outputs. GEMMs (`library::matmul`) go through the `gemm`
//!   crate on rayon's pool: large ones split inside `gemm`, batches of small ones (attention heads)
//!   one GEMM per task; threads split the output, never a sum over k, so results are bit-identical
//!   to a single-threaded run. `tessera run DIR --profile` prints the wall time per kernel symbol
//!   and library call (and of the input/output copies), sorted by total.
//! - **Communication steps (mesh artifacts).** `LibraryCall::Collective` steps run over the
//!   `spmd::RankComm` a `cpu::Bound` is `connect`ed to (mesh plus communicator; `run DIR`
//!   connects MPI, `tessera train --mesh` the rank's communicator, threads or MPI): the operand
//!   is read into a tensor as the interpreter holds it, the collective runs with the
//!   interpreter's group semantics, and the result is written back as stored. Without a
//!   communicator such a step is an error naming the op; the CUDA executor refuses them.
//! - **Checked before run.** The loader (`runtime::executor::load`) refuses a missing manifest, an
//!   unknown format version, a missing file or one whose SHA-256 differs from the manifest, and a
//!   program whose buffers leave their region, are misaligned, or whose steps write what they read,
//!   before any kernel is mapped. Library calls check shapes and indices and return errors.

pub mod conv;
pub mod cpu;
pub mod cubin;
pub mod cuda;
pub mod elf;
pub mod epilogue;
pub mod library;
pub mod load;
pub mod profile;
pub mod ptx;
pub mod ranged;
pub mod recurrent;
pub mod run;
pub mod sealed;
mod small_gemm;
pub mod winograd;

/// Buffers for the library calls' unit tests (`conv`, `library`).
#[cfg(test)]
mod test_buffers {
    use tessera_ir::artifact::{BufferDesc, Location, Storage};

    /// An f32 arena buffer of `shape` at offset 0.
    pub fn desc(shape: &[usize]) -> BufferDesc {
        BufferDesc {
            name: "x".into(),
            storage: Storage::F32,
            shape: shape.iter().map(|&n| n as u64).collect(),
            location: Location::Arena { offset: 0 },
        }
    }

    /// Seeded values in [-1, 1): a multiplicative hash of the index and the seed.
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The bytes of `values`, as the arena holds them.
    pub fn bytes(values: &[f32]) -> &[u8] {
        // SAFETY: any f32 is 4 plain bytes; the slice covers exactly the values.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), 4 * values.len()) }
    }
}

use rayon::prelude::*;
use std::borrow::Cow;
use std::path::PathBuf;
use tessera_ir::artifact::{decode, encode, BufferDesc, IoBinding, Location, Program, Storage};
use tessera_ir::dtype::DType;
use tessera_ir::tensor::{Buffer as TensorData, Tensor};

/// Why an artifact could not be loaded or run. Messages name the artifact file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{dir}: not a tessera artifact (no manifest.json)")]
    NotAnArtifact { dir: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error(
        "{path}: artifact format version {found}, but this tessera reads versions {} to {expected}; recompile the model",
        tessera_ir::artifact::FIRST_READABLE_FORMAT_VERSION
    )]
    FormatVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: listed in the manifest but missing")]
    MissingFile { path: PathBuf },
    #[error("{path}: SHA-256 {found} is not the expected {expected} (--expect-sha256); refusing to load the artifact")]
    ManifestHash { path: PathBuf, found: String, expected: String },
    #[error("--expect-sha256 '{expected}' is not a SHA-256 (64 hexadecimal digits)")]
    ExpectedHash { expected: String },
    #[error("{path}: corrupted: SHA-256 {found} differs from the manifest's {expected}")]
    HashMismatch { path: PathBuf, found: String, expected: String },
    #[error(
        "{path}: the program's arena needs {}, more than the memory limit of {} (raise it with --max-memory)",
        tessera_ir::budget::human_bytes(*bytes),
        tessera_ir::budget::human_bytes(*limit)
    )]
    ArenaBudget { path: PathBuf, bytes: u64, limit: u64 },
    #[error("{path}: invalid program: {message}")]
    InvalidProgram { path: PathBuf, message: String },
    #[error("artifact target {target} cannot run here: {message}")]
    Target { target: String, message: String },
    #[error("{path}: cannot load kernels: {message}")]
    Kernels { path: PathBuf, message: String },
    #[error("{origin}: symbolic dimension '{}' is {size}, outside the artifact's range {range}", range.name)]
    DimOutOfRange { range: tessera_ir::artifact::DimRange, size: u64, origin: String },
    #[error("inconsistent input sizes: {message}")]
    DimSizes { message: String },
    #[error("symbolic program: {message}")]
    Symbolic { message: String },
    #[error("cannot compile the range artifact at {sizes}: {message}")]
    Specialize { sizes: String, message: String },
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

pub(crate) const NOT_AN_INPUT: &str = "the program has no input of this name";

/// Checks the names of the inputs fed for one run: each a program input, given once, and not
/// one of the resident inputs (those are bound once; missing ones are reported by
/// [`bound_input`]).
pub(crate) fn check_run_inputs<T>(
    program: &Program,
    resident: &[bool],
    inputs: &[(String, T)],
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

/// Data for a program input: a [`Tensor`] (values as f64 or i64, converted to the buffer's
/// storage) or a [`Feed`].
pub trait InputData: Sync {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    /// Writes the elements into `dest`, the input's buffer (in `storage`, little-endian, aligned
    /// to [`tessera_ir::artifact::ALIGNMENT`]).
    fn write_into(&self, storage: Storage, dest: &mut [u8]) -> Result<(), String>;
    /// The elements in `storage`, little-endian (what a device upload copies).
    fn stored_bytes(&self, storage: Storage) -> Result<Cow<'_, [u8]>, String>;
}

/// Elements per task when converting inputs and outputs on rayon's pool: large enough that the
/// task overhead vanishes, small enough that a weight matrix splits across the cores.
pub(crate) const CONVERT_CHUNK: usize = 1 << 16;

impl InputData for Tensor {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Converts straight into `dest` without an intermediate buffer: model weights are program
    /// inputs, so this is half a GiB for GPT-2 small.
    fn write_into(&self, storage: Storage, dest: &mut [u8]) -> Result<(), String> {
        let size_error = || "buffer size does not match the tensor".to_string();
        match (&self.data, storage) {
            // Element-wise stores through aligned typed views (the arena's buffers are aligned),
            // so the conversion loop vectorizes (CPU artifacts are x86-64: little-endian like the
            // format), in chunks on rayon's pool.
            (TensorData::Float(values), Storage::F32) => {
                // SAFETY: every bit pattern is a valid f32; only the aligned middle is used.
                let (head, body, tail) = unsafe { dest.align_to_mut::<f32>() };
                if !head.is_empty() || !tail.is_empty() || body.len() != values.len() {
                    return Err(size_error());
                }
                body.par_chunks_mut(CONVERT_CHUNK)
                    .zip(values.par_chunks(CONVERT_CHUNK))
                    .for_each(|(d, v)| d.iter_mut().zip(v).for_each(|(d, &x)| *d = x as f32));
            }
            (TensorData::Int(values), Storage::I64) => {
                // SAFETY: as above, for i64.
                let (head, body, tail) = unsafe { dest.align_to_mut::<i64>() };
                if !head.is_empty() || !tail.is_empty() || body.len() != values.len() {
                    return Err(size_error());
                }
                body.copy_from_slice(values);
            }
            _ => {
                let bytes = encode(self);
                if bytes.len() != dest.len() {
                    return Err(size_error());
                }
                dest.copy_from_slice(&bytes);
            }
        }
        Ok(())
    }

    fn stored_bytes(&self, _: Storage) -> Result<Cow<'_, [u8]>, String> {
        Ok(Cow::Owned(encode(self)))
    }
}

/// Data for a program input as the CLI reads it: a tensor, or the bytes of a `.npy` file whose
/// data already is the input's storage (`npy::read_npy_feed`), copied into the arena as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    Tensor(Tensor),
    /// `data[start..]` holds the elements of `shape` in the storage of `dtype`, little-endian.
    Stored {
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<u8>,
        start: usize,
    },
}

impl Feed {
    /// The data as a [`Tensor`] (stored bytes decoded: exact, f32 and i64 widen to f64 and i64).
    pub fn to_tensor(&self) -> Result<Tensor, String> {
        match self {
            Feed::Tensor(t) => Ok(t.clone()),
            Feed::Stored { dtype, shape, data, start } => data
                .get(*start..)
                .and_then(|bytes| decode(bytes, Storage::of(*dtype), *dtype, shape))
                .ok_or_else(|| format!("{dtype} {shape:?}: the stored bytes do not match the shape")),
        }
    }
}

impl InputData for Feed {
    fn dtype(&self) -> DType {
        match self {
            Feed::Tensor(t) => t.dtype,
            Feed::Stored { dtype, .. } => *dtype,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Feed::Tensor(t) => &t.shape,
            Feed::Stored { shape, .. } => shape,
        }
    }

    fn write_into(&self, storage: Storage, dest: &mut [u8]) -> Result<(), String> {
        match self {
            Feed::Tensor(t) => t.write_into(storage, dest),
            Feed::Stored { .. } => {
                let bytes = self.stored_bytes(storage)?;
                if bytes.len() != dest.len() {
                    return Err("buffer size does not match the array".into());
                }
                let chunk = CONVERT_CHUNK * 4;
                dest.par_chunks_mut(chunk).zip(bytes.par_chunks(chunk)).for_each(|(d, b)| d.copy_from_slice(b));
                Ok(())
            }
        }
    }

    fn stored_bytes(&self, storage: Storage) -> Result<Cow<'_, [u8]>, String> {
        match self {
            Feed::Tensor(t) => t.stored_bytes(storage),
            Feed::Stored { dtype, data, start, .. } => {
                if Storage::of(*dtype) != storage {
                    return Err(format!("{dtype} data cannot fill a buffer stored as {storage:?}"));
                }
                data.get(*start..).map(Cow::Borrowed).ok_or_else(|| "array data out of range".to_string())
            }
        }
    }
}

/// The data fed for `binding`, checked against the dtype and shape the program declares, with
/// its buffer and the arena offset the buffer starts at. Both executors bind inputs this way.
pub(crate) fn bound_input<'a, 'p, T: InputData>(
    program: &'p Program,
    binding: &IoBinding,
    inputs: &'a [(String, T)],
) -> Result<(&'a T, &'p BufferDesc, u64), ArtifactError> {
    let input_error = |message: String| ArtifactError::Input { name: binding.name.clone(), message };
    let data =
        inputs.iter().find(|(n, _)| *n == binding.name).map(|(_, t)| t).ok_or_else(|| input_error("missing".into()))?;
    let desc = &program.buffers[binding.buffer as usize];
    let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
    if data.dtype() != binding.dtype || shape != desc.shape {
        return Err(input_error(format!(
            "expected {} {:?}, got {} {:?}",
            binding.dtype,
            desc.shape,
            data.dtype(),
            data.shape()
        )));
    }
    let Location::Arena { offset } = desc.location else { return Err(input_error("not in the arena".into())) };
    Ok((data, desc, offset))
}
