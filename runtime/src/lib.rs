//! tessera's runtime: executes graphs and moves tensors in and out.
//!
//! What it is for: the reference interpreter, the oracle that every optimization, rewrite
//! rule and backend is tested against (so it favours plain, obviously correct code over
//! speed), the in-process multi-rank executor for per-rank programs with collectives ([`spmd`],
//! over the [`spmd::Communicator`] trait that MPI/NCCL backends implement too), `.npy`
//! input/output for the CLI and tests, and [`step::StepExecutor`], the seam between a training
//! loop and what runs its step graph. The artifact loader, CPU and CUDA
//! executors and collectives will live here too.
//!
//! What it may depend on: `tessera-ir` (whose ops carry the reference semantics) and small
//! utility crates. Never on codegen, MLIR or LLVM: a cluster node needs only the runtime and
//! an artifact.

pub mod interpreter;
pub mod npy;
pub mod spmd;
pub mod step;
