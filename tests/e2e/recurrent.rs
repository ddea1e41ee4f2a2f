//! Recurrent layers (`LSTM`, `GRU`, `RNN`) compiled for the CPU: every ONNX node test of the
//! three ops and every fixture of `tests/fixtures/onnx-recurrent/` (onnxruntime's outputs for what
//! the node tests leave out: bidirectional layers with `sequence_lens`, `layout = 1`, `clip`,
//! `input_forget`, `linear_before_reset`, parameterised activations; written by
//! `scripts/gen-recurrent-fixtures.py`) must compile with no step left to the reference
//! interpreter and give the expected outputs under the node-test tolerances. The interpreter's
//! side of the same cases runs in `tessera test-onnx` (the manifest, and the frontend test of
//! the fixtures).

use crate::support::repo_root;
use std::path::{Path, PathBuf};
use tessera_frontend::onnx::conformance::Outcome;

fn recurrent_cases() -> Vec<PathBuf> {
    let root = repo_root();
    let node_tests = root.join(".cache/onnx-node-tests");
    assert!(node_tests.is_dir(), "the ONNX node tests are not fetched: run scripts/fetch-onnx-tests.sh");
    let listed = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut cases: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("model.onnx").is_file())
            .filter(|p| p.file_name().is_some_and(|n| keep(&n.to_string_lossy())))
            .collect();
        cases.sort();
        cases
    };
    let recurrent = |name: &str| {
        ["test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_"].iter().any(|prefix| name.starts_with(prefix))
    };
    let mut cases = listed(&node_tests, &recurrent);
    assert_eq!(cases.len(), 18, "the onnx 1.23.2 data has 18 LSTM/GRU/RNN node tests");
    let fixtures = listed(&root.join("tests/fixtures/onnx-recurrent"), &|_| true);
    assert_eq!(fixtures.len(), 11, "fixtures of tests/fixtures/onnx-recurrent");
    cases.extend(fixtures);
    cases
}

#[test]
fn compiled_recurrent_layers_match_onnxruntime_with_no_reference_steps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for case in recurrent_cases() {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        assert_eq!(crate::support::run_node_test_compiled(&case, tmp.path()), Outcome::Passed, "{name}");
    }
}
