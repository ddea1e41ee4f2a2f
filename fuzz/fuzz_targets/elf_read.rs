//! Fuzz target: the ELF reader that checks `kernels.so` before it is loaded (section headers,
//! dynamic symbol table, string table, the signature table's bytes compared with a program's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_ir::artifact::{KernelOperand, KernelSignature, Storage, KERNEL_SIGNATURES_SYMBOL};
use tessera_runtime::executor::{elf::exported_symbol_bytes, load::check_kernel_table};

fuzz_target!(|bytes: &[u8]| {
    // The lookup the loader makes, then the whole check against a one-kernel program's table
    // (its comparison and its message quoting whatever the object exports).
    let _ = exported_symbol_bytes(bytes, KERNEL_SIGNATURES_SYMBOL);
    let operand = KernelOperand { storage: Storage::F32, shape: vec![2, 3] };
    let signature =
        KernelSignature { symbol: "tsr_kernel_0".into(), inputs: vec![operand.clone()], outputs: vec![operand] };
    let _ = check_kernel_table(bytes, &[signature]);
});
