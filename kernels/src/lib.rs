//! Kernel templates for fusion groups.
//!
//! What it is for: the kernels the code generator instantiates per fusion group (elementwise
//! chains, reductions, softmax, layer/RMS norm, attention) and the library-call kernels (GEMM
//! through cuBLAS(Lt) on GPU). It is empty until the fusion and codegen work lands; the crate
//! exists now so the workspace has its final shape and dependency directions.
//!
//! What it may depend on: `tessera-ir` only.
