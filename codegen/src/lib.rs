//! Code generation from fused groups to machine code and ahead-of-time artifacts.
//!
//! What it is for: lowering fusion groups to MLIR upstream dialects through melior
//! (linalg/tensor/arith/math, bufferization, scf, gpu + nvvm or llvm), translating to LLVM IR,
//! optimizing and emitting PTX or x86-64 with inkwell, and writing the artifact directory. It is
//! empty until the codegen work lands; the crate exists now so the workspace has its final shape.
//!
//! What it may depend on: `tessera-ir`, `tessera-passes`, `tessera-kernels`, melior, inkwell.
//! The runtime never depends on it.
