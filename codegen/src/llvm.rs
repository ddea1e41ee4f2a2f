//! The LLVM half of the CPU pipeline: add the ABI entry points, optimize with LLVM's O3
//! pipeline and emit an x86-64 object file, all through inkwell.

use crate::error::CodegenError;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::values::BasicMetadataValueEnum;
use inkwell::{AddressSpace, OptimizationLevel};
use std::sync::Once;
use tessera_ir::artifact::KERNEL_SIGNATURES_SYMBOL;

/// The x86-64 target of CPU kernels: fixed (not the host's), so that the object is the same on
/// every machine that compiles it. `x86-64-v3` (AVX2, FMA, BMI2; every x86-64 server CPU since
/// 2015) lets LLVM vectorize the loops 8 floats wide; LLVM fuses no multiply-add without
/// fast-math flags, so the numerics do not depend on FMA.
pub const CPU_TRIPLE: &str = "x86_64-unknown-linux-gnu";
pub const CPU_NAME: &str = "x86-64-v3";

/// One kernel's ABI entry point to add: `void symbol(ptr args)` calling `impl_name` with
/// `n_args` pointers loaded from `args[0..n_args]`.
pub struct EntryPoint {
    pub symbol: String,
    pub impl_name: String,
    pub n_args: usize,
}

fn cpu_target_machine() -> Result<TargetMachine, CodegenError> {
    static INIT: Once = Once::new();
    INIT.call_once(|| Target::initialize_x86(&InitializationConfig::default()));
    let triple = TargetTriple::create(CPU_TRIPLE);
    let target = Target::from_triple(&triple)
        .map_err(|e| CodegenError::Llvm { stage: "target lookup", message: e.to_string() })?;
    target
        .create_target_machine(&triple, CPU_NAME, "", OptimizationLevel::Aggressive, RelocMode::PIC, CodeModel::Default)
        .ok_or_else(|| CodegenError::Llvm {
            stage: "target machine creation",
            message: format!("no {CPU_NAME} machine"),
        })
}

/// Adds the entry points to `module` (the translated kernels), makes the implementations
/// internal, optimizes at O3 and returns the object file bytes.
pub fn emit_cpu_object<'ctx>(
    context: &'ctx Context,
    module: &Module<'ctx>,
    entries: &[EntryPoint],
    signature_table: &str,
) -> Result<Vec<u8>, CodegenError> {
    let machine = cpu_target_machine()?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    // The name is recorded in the object; a fixed one keeps the bytes independent of paths.
    module.set_source_file_name("tessera_kernels");
    add_entry_points(context, module, entries)?;
    add_signature_table(context, module, signature_table);
    module.verify().map_err(|e| CodegenError::Llvm { stage: "verification", message: e.to_string() })?;
    module
        .run_passes("default<O3>", &machine, inkwell::passes::PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm { stage: "optimization", message: e.to_string() })?;
    let buffer = machine
        .write_to_memory_buffer(module, FileType::Object)
        .map_err(|e| CodegenError::Llvm { stage: "object emission", message: e.to_string() })?;
    Ok(buffer.as_slice().to_vec())
}

/// The exported constant [`KERNEL_SIGNATURES_SYMBOL`] holding `table` (not NUL-terminated:
/// the symbol's size is its length), which the loader reads from the file before mapping it.
fn add_signature_table<'ctx>(context: &'ctx Context, module: &Module<'ctx>, table: &str) {
    let bytes = context.const_string(table.as_bytes(), false);
    let global = module.add_global(bytes.get_type(), None, KERNEL_SIGNATURES_SYMBOL);
    global.set_initializer(&bytes);
    global.set_constant(true);
    global.set_linkage(Linkage::External);
}

fn add_entry_points<'ctx>(
    context: &'ctx Context,
    module: &Module<'ctx>,
    entries: &[EntryPoint],
) -> Result<(), CodegenError> {
    let builder = context.create_builder();
    let ptr = context.ptr_type(AddressSpace::default());
    let i64t = context.i64_type();
    let entry_ty = context.void_type().fn_type(&[ptr.into()], false);
    let fail = |e: inkwell::builder::BuilderError| CodegenError::Llvm { stage: "entry point", message: e.to_string() };
    for entry in entries {
        let callee = module.get_function(&entry.impl_name).ok_or_else(|| {
            CodegenError::Internal(format!("function {} is missing from the translated module", entry.impl_name))
        })?;
        callee.set_linkage(Linkage::Internal);
        let function = module.add_function(&entry.symbol, entry_ty, Some(Linkage::External));
        let block = context.append_basic_block(function, "entry");
        builder.position_at_end(block);
        let args = function
            .get_first_param()
            .ok_or_else(|| CodegenError::Internal("entry point without parameter".into()))?
            .into_pointer_value();
        let mut operands: Vec<BasicMetadataValueEnum> = Vec::with_capacity(entry.n_args);
        for i in 0..entry.n_args {
            // SAFETY: an in-bounds GEP by the caller's contract (args holds n_args pointers).
            let slot = unsafe { builder.build_in_bounds_gep(ptr, args, &[i64t.const_int(i as u64, false)], "slot") }
                .map_err(fail)?;
            operands.push(builder.build_load(ptr, slot, "buffer").map_err(fail)?.into());
        }
        builder.build_call(callee, &operands, "").map_err(fail)?;
        builder.build_return(None).map_err(fail)?;
    }
    Ok(())
}
