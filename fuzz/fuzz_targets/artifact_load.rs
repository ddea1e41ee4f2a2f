//! Fuzz target: the artifact loader's readers of untrusted files, `manifest.json` and a rank's
//! `program.json` with its consistency checks. An input is the manifest's bytes, a NUL byte,
//! then the program's (no NUL: both parsers get the whole input), so one corpus entry exercises
//! both and the fuzzer can grow either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_runtime::executor::load::{parse_manifest, parse_program};

fuzz_target!(|bytes: &[u8]| {
    let (manifest, program) = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => (&bytes[..nul], &bytes[nul + 1..]),
        None => (bytes, bytes),
    };
    let _ = parse_manifest(manifest, Path::new("manifest.json"));
    // The weights image's size comes from the program itself when it parses, so the checks
    // against it are reached rather than failing on the first size comparison.
    let weights_bytes = serde_json::from_slice::<serde_json::Value>(program)
        .ok()
        .and_then(|v| v.get("weights_bytes").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let _ = parse_program(program, weights_bytes, Path::new("rank0/program.json"));
});
