//! Fuzz target: the MLIR text parser and verifier. Whatever parses must print and re-read to
//! the same text (the round-trip contract of the text form), so a parser that accepts what the
//! printer cannot reproduce is a finding too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_ir::mlir::{parse::parse_verified, print::print_graph};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(graph) = parse_verified(text) else { return };
    let printed = print_graph(&graph);
    let reread = parse_verified(&printed).unwrap_or_else(|e| panic!("printed text does not re-read: {e}\n{printed}"));
    assert_eq!(print_graph(&reread), printed, "print(parse(print(g))) != print(g)");
});
