//! Code generation: kernel graphs (fusion groups with static shapes) to machine code.
//!
//! What it is for: lowering each kernel graph to upstream MLIR (`scf` loop nests over
//! `memref`/`arith`/`math`, emitted as text and parsed by melior), lowering that to the `llvm`
//! dialect, translating to LLVM IR, and optimizing and emitting x86-64 code with inkwell,
//! linked into one shared object per call ([`compile_cpu`]); and the same loop bodies as
//! `gpu.func` kernels lowered through NVVM to PTX for sm_80/sm_90 ([`compile_ptx`]).
//!
//! The kernel ABI: every exported kernel is `extern "C" fn symbol(args: *const *mut u8)`;
//! `args[i]` points to the i-th buffer: the graph inputs in order, then the graph outputs in
//! order, each row-major and contiguous; float tensors (any float dtype) hold `f32`, integer
//! tensors `i64`, booleans one byte (0 or 1). A kernel frees every temporary it allocates.
//!
//! Map: [`supports`] (what compiles), [`emit`] (kernel graph → MLIR text), [`mlir`] (parse,
//! lower, translate), [`llvm`] (entry points, O3, object), [`cpu`] ([`compile_cpu`], linking),
//! [`ptx`] ([`compile_ptx`] and the launch protocol), [`cuda`] (a program's GPU section: PTX
//! and cubin files, launches, cuBLAS GEMMs), [`decompose`] (optimizer updates as elementwise
//! ops), [`error`]; [`program`] (a model graph to
//! an artifact program: fusion, kernels, library calls, memory plan), [`weights`] (the weights
//! image as a layout of shared constants, streamed when written) and [`artifact`] (`tessera
//! compile`: the artifact directory, atomic and deterministic).
//!
//! What it may depend on: `tessera-ir`, `tessera-passes` (fusion), `tessera-kernels`,
//! melior/mlir-sys, inkwell; the
//! runtime never depends on it.
//!
//! # Emission, lowering pipelines, math functions and the kernel ABI
//!
//! **`codegen`**: kernel graphs to machine code. `supports(&Graph) -> Result<(), Unsupported>`
//! says what compiles (verified, static shapes, no 8-bit floats, every op templated) and names the
//! op or value that does not. `emit` prints one kernel as MLIR text in upstream dialects only:
//! a `func.func` over static `memref`s whose body is `scf.for` nests of `arith`/`math` scalar
//! code (one nest per materialized value, operands read through `value_at`, which loads from a
//! buffer or recomputes a pointwise producer); melior parses and verifies it. Text instead of
//! builder calls, and memref/scf instead of `linalg` on tensors plus bufferization, because the
//! kernels are tiny, static and already scheduled: the text is short, readable and deterministic.
//!
//! - CPU (`compile_cpu`): `arith-expand{include-bf16}, convert-math-to-llvm, convert-math-to-libm,
//!   convert-scf-to-cf, expand-strided-metadata, finalize-memref-to-llvm, convert-arith-to-llvm,
//!   convert-cf-to-llvm, convert-func-to-llvm{use-bare-ptr-memref-call-conv}`, then
//!   `mlirTranslateModuleToLLVMIR` into an inkwell context, one entry point per kernel added with
//!   inkwell (loads `args[i]`, calls the internal `@{symbol}__impl`), `default<O3>` for
//!   `x86-64-v3`, PIC object, `cc -shared -s -Wl,--build-id=none -Wl,--no-undefined ... -lm`.
//! - GPU (`compile_ptx`, sm_80/sm_90): the same emitter in GPU mode: each materialized value
//!   becomes a `gpu.func` whose outermost nest is one thread per index (softmax/norm rows loop
//!   inside their thread), temporaries become parameters the executor allocates;
//!   `nvvm-attach-target{chip features=+ptx80 O=3 l=libdevice}`, `convert-gpu-to-nvvm{bare
//!   pointers}`, `gpu-module-to-binary{format=isa}`; the PTX is read from the `gpu.binary`.
//!   `PtxModule` lists the launches in order and the temporaries (protocol in `codegen/src/ptx.rs`).
//!   libdevice and ptxas come from `scripts/fetch-ptxas.sh` (pinned PyPI wheel, `.cache/cuda-nvcc`).
//!
//! Math functions: on the CPU, `tanh` (and `gelu_tanh`), `exp` (softmax, `sigmoid`, `silu`) and
//! `erf` (`gelu`) are inline branch-free approximations with no call, so loops using them
//! vectorize: Eigen's rational `tanh` (2.4 ulp measured) and `erf` (2.8 ulp), Cephes' `expf` with
//! `2^n` built as two exponent-bit factors (0.72 ulp over the whole range: overflow to infinity,
//! subnormals, underflow to 0, NaN kept); the bounds are asserted by sweeps in
//! `codegen/tests/smoke.rs`. `log`, `sin`, `cos`, `pow` are libm calls. On the GPU every math
//! function is a libdevice call (linked into the PTX). The softmax template's sum is
//! `fastmath<reassoc>` so it vectorizes; every other reduction keeps the reference's order.
//!
//! The kernel ABI: `extern "C" fn symbol(args: *const *mut u8)`; `args[i]` is the i-th buffer
//! (inputs in order, then outputs in order), row-major and contiguous; every float dtype is `f32` in
//! memory, integers `i64`, booleans one byte. Inside a kernel integers compute in their own width
//! (i32/i8 wrap as the reference does) and floats in f32, rounded to f16/bf16 after every op for
//! those dtypes.
//!
//! - **Compiled kernels are the interpreter within f32 tolerance.** Every template is tested
//!   against `tessera_runtime::interpreter` on random shapes and inputs (`codegen/tests/ops.rs`,
//!   `fused.rs`, including random graphs from `ir::testing`). Integer kernels never trap: division
//!   by zero divides by 1 (the reference reports an error), `MIN / -1` wraps; out-of-range gather
//!   indices are clamped (the reference reports an error).
//! - **Kernels own their memory.** A CPU kernel frees every temporary it allocates (`memref.alloc`
//!   paired with `memref.dealloc`); the `.so` imports only glibc symbols (tested with `nm`).
//! - **Compiled output is deterministic.** Same kernels, same bytes: fixed target CPU (not the
//!   host's), fixed symbol order, fixed source file name, no build id, stripped; tested.

pub mod artifact;
pub mod cpu;
pub mod cuda;
pub mod decompose;
pub mod emit;
mod epilogue;
pub mod error;
pub mod llvm;
pub mod mlir;
mod power;
pub mod program;
pub mod ptx;
pub mod support;
pub mod weights;

pub use cpu::{compile_cpu, CpuObject};
pub use error::{CodegenError, Unsupported};
pub use ptx::{compile_ptx, GpuArch, PtxModule};
pub use support::supports;

use tessera_ir::graph::Graph;

/// One kernel to compile: its exported symbol and its kernel graph (inputs, then outputs, are
/// the kernel's arguments in order).
#[derive(Debug, Clone)]
pub struct KernelSource {
    pub symbol: String,
    pub graph: Graph,
}

impl KernelSource {
    /// The kernel's ABI as the artifact records it: the storage and shape of each argument.
    pub fn signature(&self) -> tessera_ir::artifact::KernelSignature {
        let operands = |ids: &[tessera_ir::graph::ValueId]| {
            let operand = |&v: &tessera_ir::graph::ValueId| {
                let ty = &self.graph.value(v).ty;
                let storage = tessera_ir::artifact::Storage::of(ty.dtype);
                tessera_ir::artifact::KernelOperand { storage, shape: ty.static_shape().unwrap_or_default() }
            };
            ids.iter().map(operand).collect()
        };
        tessera_ir::artifact::KernelSignature {
            symbol: self.symbol.clone(),
            inputs: operands(self.graph.inputs()),
            outputs: operands(self.graph.outputs()),
        }
    }
}

/// Checks that every symbol is a C identifier, unique, and that every graph is supported.
pub(crate) fn check_symbols(kernels: &[KernelSource]) -> Result<(), CodegenError> {
    let mut seen = std::collections::BTreeSet::new();
    for k in kernels {
        let s = &k.symbol;
        let mut chars = s.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(CodegenError::InvalidSymbol(s.clone()));
        }
        if !seen.insert(s.as_str()) {
            return Err(CodegenError::DuplicateSymbol(s.clone()));
        }
        supports(&k.graph).map_err(|source| CodegenError::Unsupported { symbol: s.clone(), source })?;
    }
    Ok(())
}
