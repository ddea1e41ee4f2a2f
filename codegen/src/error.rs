//! The errors of code generation: what a kernel graph uses that codegen cannot compile
//! ([`Unsupported`], which the fusion pass asks for through [`crate::supports`]), and what can
//! go wrong while compiling ([`CodegenError`]).

use tessera_ir::dtype::DType;
use tessera_ir::graph::NodeId;

/// Why a kernel graph is outside what the code generator compiles.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unsupported {
    #[error("kernel graph is not valid: {0}")]
    InvalidGraph(String),
    #[error("op tsr.{op} ({subject}) has no code generator template")]
    Op { op: &'static str, node: NodeId, subject: String },
    #[error("value %{value} has type {ty}: kernels need fully static shapes")]
    SymbolicShape { value: String, ty: String },
    #[error("value %{value} has element type {dtype}, which codegen does not emit (it emits f64, f32, f16, bf16, i64, i32, i8 and i1; 8- and 4-bit floats, unsigned and 16-, 4- and 2-bit integers run on the reference interpreter)")]
    DType { value: String, dtype: DType },
    #[error("{subject}: {reason}")]
    Operands { node: NodeId, subject: String, reason: String },
}

/// Why compiling a set of kernels failed.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("kernel '{symbol}': {source}")]
    Unsupported {
        symbol: String,
        #[source]
        source: Unsupported,
    },
    #[error("kernel symbol '{0}' is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    InvalidSymbol(String),
    #[error("kernel symbol '{0}' is defined more than once")]
    DuplicateSymbol(String),
    /// MLIR rejected the generated module or a pass failed: a code generator bug, reported
    /// with MLIR's diagnostics instead of a crash.
    #[error("MLIR {stage} failed: {diagnostics}")]
    Mlir { stage: &'static str, diagnostics: String },
    #[error("LLVM {stage} failed: {message}")]
    Llvm { stage: &'static str, message: String },
    #[error("linking the shared object with `{command}` failed: {message}")]
    Link { command: String, message: String },
    #[error("I/O error while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("libdevice.10.bc (NVIDIA's math library, needed by GPU kernels using exp/tanh/erf/...) not found; run scripts/fetch-ptxas.sh or set TESSERA_LIBDEVICE (searched: {searched})")]
    MissingLibdevice { searched: String },
    /// A broken invariant of the code generator, reported instead of panicking.
    #[error("internal code generator error: {0}")]
    Internal(String),
}
