//! tessera's runtime: executes graphs and moves tensors in and out.
//!
//! What it is for: the reference interpreter, the oracle that every optimization, rewrite
//! rule and backend is tested against (so it favours plain, obviously correct code over
//! speed), the in-process multi-rank executor for per-rank programs with collectives ([`spmd`],
//! over the [`spmd::Communicator`] trait that MPI/NCCL backends implement too), `.npy`
//! input/output for the CLI and tests, [`step::StepExecutor`] (the seam between a training
//! loop and what runs its step graph), and the [`executor`]s of ahead-of-time artifacts
//! (loader with integrity checks, CPU executor over `kernels.so` and library calls, and
//! [`executor::run`], the `run DIR` command of both binaries), the files around a run
//! ([`feeds`]: `--input` specs, seeded random inputs, `.npy` outputs, written atomically through
//! [`tessera_ir::files`]), and [`serve`] (the serving engine: compiled prefill/decode programs over
//! a paged KV cache, sampling, tokenizers).
//!
//! What it may depend on: `tessera-ir` (whose ops carry the reference semantics and the
//! artifact format) and small utility crates (`libloading`, `gemm` and `rayon` for GEMMs). Never on
//! codegen, MLIR or LLVM: a cluster node needs only the runtime and an artifact (the
//! `tessera-rt` binary in `rt/`; `tests/e2e/runtime_only.rs` checks the dependency tree).

pub mod executor;
pub mod feeds;
pub mod interpreter;
pub mod mpi;
pub mod nccl;
pub mod npy;
pub mod serve;
pub mod spmd;
pub mod step;
pub mod wire;
