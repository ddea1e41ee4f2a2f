//! Zoo models wherever a model is accepted: `info`, `run` and `opt` build them from a preset
//! name or a `family:key=value` spec.

use crate::support::tessera;
use tessera_runtime::npy;

#[test]
fn info_on_a_preset_counts_gpt2_small() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["info", "gpt2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // GPT-2 small: 124,439,808 parameters (tied embeddings), as published.
    assert!(out.stdout.contains("parameters         148 tensors, 124,439,808 elements"), "{}", out.stdout);
}

#[test]
fn a_tiny_llama_runs_and_gives_distributions() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "llama:layers=2,hidden=32,heads=4,kv_heads=2,seq=8,vocab=50";
    let out = tessera(dir.path(), &["run", spec, "--random-inputs", "3", "-o", "out"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let probs = npy::read_npy(&dir.path().join("out/probs.npy")).unwrap();
    assert_eq!(probs.shape, vec![1, 8, 50]);
    for row in probs.to_f64_vec().chunks(50) {
        let sum: f64 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "a next-token distribution sums to {sum}");
    }
    let text = tessera(dir.path(), &["opt", spec, "--check-mlir"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("\"tsr.rope\""), "a Llama block uses rotary embeddings");
}

#[test]
fn bad_zoo_specs_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["info", "gpt:layerz=2"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: model spec 'gpt:layerz=2': unknown key 'layerz'; known keys: layers,"));
    let out = tessera(dir.path(), &["info", "nosuchmodel"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: nosuchmodel: unsupported model format (expected a .mlir, .json or .onnx file, or a zoo model such as gpt2 or llama:layers=2)"
    );
}
