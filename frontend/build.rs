//! Generates the prost types of the vendored ONNX schema (`proto/onnx.proto`) at build time.
//!
//! protox compiles the `.proto` in pure Rust, so no `protoc` binary is needed; prost-build then
//! writes `onnx.rs` into `OUT_DIR`, which `src/onnx/proto.rs` includes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new()
        // `bytes::Bytes` for every `bytes` field: decoding from a memory-mapped model then
        // slices the map instead of copying each tensor's raw_data.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
