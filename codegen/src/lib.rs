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
//! an artifact program: fusion, kernels, library calls, memory plan) and [`artifact`] (`tessera
//! compile`: the artifact directory, atomic and deterministic).
//!
//! What it may depend on: `tessera-ir`, `tessera-passes` (fusion), `tessera-kernels`,
//! melior/mlir-sys, inkwell; the
//! runtime never depends on it.

pub mod artifact;
pub mod cpu;
pub mod cuda;
pub mod decompose;
pub mod emit;
pub mod error;
pub mod llvm;
pub mod mlir;
pub mod program;
pub mod ptx;
pub mod support;

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
