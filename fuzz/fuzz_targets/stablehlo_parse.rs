//! Fuzz target: the StableHLO importer (text → syntax tree → translation to tsr, with private
//! function inlining, loop unrolling and constant folding → verifier). What imports must print
//! as tsr text without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_frontend::stablehlo::import_text;
use tessera_ir::mlir::print::print_graph;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(graph) = import_text(text) {
        let _ = print_graph(&graph);
    }
});
