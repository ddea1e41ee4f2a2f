//! Fuzz target: the `.npy` reader (header, dtype, shape and declared size against the data).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tessera_runtime::npy::read_npy_bytes(bytes);
});
