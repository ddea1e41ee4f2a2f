//! The MLIR half of the pipeline: parse the generated text with melior, lower it to the `llvm`
//! dialect with upstream passes, and translate it to an LLVM IR module.

use crate::error::CodegenError;
use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::Context;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Once;

/// Lowers the kernels' loop nests to the `llvm` dialect. `arith-expand{include-bf16}` rewrites
/// the bf16 rounding casts into integer code; `convert-math-to-llvm` turns `exp`, `log`, `sqrt`,
/// `sin`, `cos`, `pow` into LLVM intrinsics (libm calls or instructions) and
/// `convert-math-to-libm` the rest (`tanh`, `erf`) into libm calls; static memref arguments
/// become bare pointers (`use-bare-ptr-memref-call-conv`), which the ABI wrapper passes.
pub const CPU_PIPELINE: &str = "builtin.module(arith-expand{include-bf16=true},convert-math-to-llvm,\
convert-math-to-libm,convert-scf-to-cf,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,\
convert-cf-to-llvm,convert-func-to-llvm{use-bare-ptr-memref-call-conv=true},reconcile-unrealized-casts)";

/// An MLIR context with every upstream dialect, pass and LLVM translation registered, and a
/// handler collecting diagnostics (without one, a failed parse is a silent `None`).
pub struct MlirSession {
    pub context: Context,
    diagnostics: Rc<RefCell<Vec<String>>>,
}

impl MlirSession {
    pub fn new() -> MlirSession {
        static PASSES: Once = Once::new();
        PASSES.call_once(register_all_passes);
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        // Single-threaded: kernels are small, and the caller may compile on several threads.
        let context = Context::new_with_registry(&registry, false);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        let diagnostics = Rc::new(RefCell::new(Vec::new()));
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |d| {
            sink.borrow_mut().push(format!("{}: {d}", d.location()));
            true
        });
        MlirSession { context, diagnostics }
    }

    fn take_diagnostics(&self) -> String {
        let messages = std::mem::take(&mut *self.diagnostics.borrow_mut());
        if messages.is_empty() {
            "no diagnostic".to_string()
        } else {
            messages.join("; ")
        }
    }

    /// Parses and verifies `text`.
    pub fn parse<'c>(&'c self, text: &str) -> Result<Module<'c>, CodegenError> {
        let module = Module::parse(&self.context, text)
            .ok_or_else(|| CodegenError::Mlir { stage: "parsing", diagnostics: self.take_diagnostics() })?;
        if !module.as_operation().verify() {
            return Err(CodegenError::Mlir { stage: "verification", diagnostics: self.take_diagnostics() });
        }
        Ok(module)
    }

    /// Runs a textual pass pipeline on `module`.
    pub fn run_pipeline(&self, module: &mut Module, pipeline: &str) -> Result<(), CodegenError> {
        let manager = PassManager::new(&self.context);
        parse_pass_pipeline(manager.as_operation_pass_manager(), pipeline)
            .map_err(|e| CodegenError::Mlir { stage: "pipeline parsing", diagnostics: e.to_string() })?;
        manager.run(module).map_err(|_| CodegenError::Mlir { stage: "lowering", diagnostics: self.take_diagnostics() })
    }
}

impl Default for MlirSession {
    fn default() -> MlirSession {
        MlirSession::new()
    }
}

/// Translates a module in the `llvm` dialect to an LLVM IR module in `llvm_context`.
pub fn translate_to_llvm<'ctx>(
    session: &MlirSession,
    module: &Module,
    llvm_context: &'ctx inkwell::context::Context,
) -> Result<inkwell::module::Module<'ctx>, CodegenError> {
    // SAFETY: MLIR and inkwell link the same shared libLLVM, so the context pointer is one
    // MLIR's translation can use; the operation is a live module of `session`.
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(
            module.as_operation().to_raw(),
            llvm_context.raw() as mlir_sys::LLVMContextRef,
        )
    };
    if raw.is_null() {
        return Err(CodegenError::Mlir { stage: "translation to LLVM IR", diagnostics: session.take_diagnostics() });
    }
    // SAFETY: `raw` is a non-null module the translation just created in `llvm_context` and
    // nothing else owns; the inkwell wrapper takes ownership and frees it with the context.
    Ok(unsafe { inkwell::module::Module::new(raw as inkwell::llvm_sys::prelude::LLVMModuleRef) })
}
