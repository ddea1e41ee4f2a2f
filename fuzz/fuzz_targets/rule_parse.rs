//! Fuzz target: the rewrite-rule file parser and its type checker (`--rules FILE`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = tessera_passes::egraph::rules::syntax::parse_rules("fuzz.rules", text);
});
