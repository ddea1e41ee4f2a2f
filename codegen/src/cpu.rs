//! [`compile_cpu`]: kernel graphs to one x86-64 shared object.
//!
//! Pipeline: emit MLIR text per kernel ([`crate::emit`]) into one module, parse and lower it
//! ([`crate::mlir::CPU_PIPELINE`]), translate to LLVM IR, add the ABI entry points, optimize
//! and emit an object ([`crate::llvm`]), and link it with `cc -shared`. The result is
//! deterministic: the same kernels give the same bytes (fixed target CPU, fixed symbol order,
//! no build id, stripped, no paths recorded).

use crate::emit::{emit_kernel, impl_name};
use crate::error::CodegenError;
use crate::llvm::{emit_cpu_object, EntryPoint};
use crate::mlir::{translate_to_llvm, MlirSession, CPU_PIPELINE};
use crate::{check_symbols, KernelSource};
use std::process::Command;

/// A compiled set of CPU kernels: an x86-64 ELF shared object exporting one
/// `extern "C" fn(args: *const *mut u8)` per kernel, and the kernels' signature table
/// ([`tessera_ir::artifact::KERNEL_SIGNATURES_SYMBOL`]) that the loader checks before mapping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuObject {
    pub shared_object: Vec<u8>,
}

/// The MLIR module (text) of `kernels` before lowering: what [`compile_cpu`] compiles.
pub fn cpu_module_text(kernels: &[KernelSource]) -> Result<String, CodegenError> {
    check_symbols(kernels)?;
    let mut globals = String::new();
    let mut functions = String::new();
    for k in kernels {
        let text = emit_kernel(&k.symbol, &k.graph)?;
        globals.push_str(&text.globals);
        functions.push_str(&text.function);
    }
    Ok(format!("module {{\n{globals}{functions}}}\n"))
}

/// Compiles `kernels` into one shared object (see the crate docs for the ABI).
pub fn compile_cpu(kernels: &[KernelSource]) -> Result<CpuObject, CodegenError> {
    let text = cpu_module_text(kernels)?;
    let session = MlirSession::new();
    let mut module = session.parse(&text)?;
    session.run_pipeline(&mut module, CPU_PIPELINE)?;
    let llvm_context = inkwell::context::Context::create();
    let llvm_module = translate_to_llvm(&session, &module, &llvm_context)?;
    let entries: Vec<EntryPoint> = kernels
        .iter()
        .map(|k| EntryPoint {
            symbol: k.symbol.clone(),
            impl_name: impl_name(&k.symbol),
            n_args: k.graph.inputs().len() + k.graph.outputs().len(),
        })
        .collect();
    let signatures: Vec<_> = kernels.iter().map(KernelSource::signature).collect();
    let table = tessera_ir::artifact::signature_table(&signatures);
    let object = emit_cpu_object(&llvm_context, &llvm_module, &entries, &table)?;
    Ok(CpuObject { shared_object: link_shared_object(&object)? })
}

/// Links an object into a shared object with the system C compiler driver. `-Wl,--no-undefined`
/// makes any symbol not in libc or libm a link error; `-s` drops the symbol table (the dynamic
/// symbols stay) and `--build-id=none` the build id, so the bytes depend only on the object.
fn link_shared_object(object: &[u8]) -> Result<Vec<u8>, CodegenError> {
    let io = |context: &'static str| move |source| CodegenError::Io { context, source };
    let dir = tempfile::tempdir().map_err(io("creating a temporary directory"))?;
    let object_path = dir.path().join("kernels.o");
    let library_path = dir.path().join("kernels.so");
    std::fs::write(&object_path, object).map_err(io("writing the object file"))?;
    let mut command = Command::new("cc");
    command
        .args(["-shared", "-s", "-Wl,--build-id=none", "-Wl,--no-undefined", "-Wl,--hash-style=gnu", "-o"])
        .arg(&library_path)
        .arg(&object_path)
        .arg("-lm");
    let shown = "cc -shared -s -Wl,--build-id=none -Wl,--no-undefined -o kernels.so kernels.o -lm".to_string();
    let output = command.output().map_err(|e| CodegenError::Link { command: shown.clone(), message: e.to_string() })?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(CodegenError::Link { command: shown, message });
    }
    std::fs::read(&library_path).map_err(io("reading the shared object"))
}
