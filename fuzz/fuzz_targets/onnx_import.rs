//! Fuzz target: the ONNX importer on arbitrary bytes (protobuf decoding, then every op builder,
//! shape inference and the verifier). No external data directory: a model that needs one is an
//! error, like any other malformed model; only a panic, a hang or an abort is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tessera_frontend::onnx::import_bytes(bytes, None);
});
