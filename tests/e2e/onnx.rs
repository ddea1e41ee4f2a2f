//! The ONNX front door through the CLI: import, running `.onnx` directly, and the conformance
//! runner on a few official node tests (fetched by scripts/fetch-onnx-tests.sh).

use crate::support::{repo_root, tessera};
use std::path::{Path, PathBuf};

fn node_tests() -> PathBuf {
    let dir = repo_root().join(".cache/onnx-node-tests");
    assert!(dir.is_dir(), "{} is missing: run scripts/fetch-onnx-tests.sh", dir.display());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn test_onnx_summarizes_a_selection_of_node_tests() {
    let dir = tempfile::tempdir().unwrap();
    for case in ["test_abs", "test_gemm_default_matrix_bias", "test_softmax_axis_0", "test_string_concat"] {
        copy_dir(&node_tests().join(case), &dir.path().join(case));
    }
    let out = tessera(dir.path(), &["test-onnx", "."]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().last(), Some("onnx-node: 3 passed, 0 failed, 1 unsupported"));

    let json = tessera(dir.path(), &["test-onnx", ".", "--json"]);
    let cases: Vec<serde_json::Value> =
        json.stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cases.len(), 4);
    let string_case = cases.iter().find(|c| c["name"] == "test_string_concat").unwrap();
    assert_eq!(string_case["outcome"], "unsupported");
    let reason = string_case["reason"].as_str().unwrap();
    assert!(
        reason.contains("string tensors are not supported: tessera computes on numeric tensors only"),
        "{string_case}"
    );

    // A wrong expected value makes the case fail, and a failure makes the command fail (an
    // unsupported case does not).
    let expected = dir.path().join("test_abs/test_data_set_0/output_0.pb");
    let mut bytes = std::fs::read(&expected).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&expected, bytes).unwrap();
    let out = tessera(dir.path(), &["test-onnx", "."]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.stdout.lines().last(), Some("onnx-node: 2 passed, 1 failed, 1 unsupported"));
    assert!(out.stderr.contains("1 of 4 ONNX node tests failed"), "{}", out.stderr);
}

#[test]
fn test_onnx_fails_naming_each_listed_case_that_does_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    for case in ["test_abs", "test_string_concat"] {
        copy_dir(&node_tests().join(case), &dir.path().join("suite").join(case));
    }
    // test_string_concat is unsupported: listing it as passing is a regression, named on stdout.
    std::fs::write(dir.path().join("passing.txt"), "# two cases\ntest_abs\ntest_string_concat\n").unwrap();
    let out = tessera(dir.path(), &["test-onnx", "suite", "--manifest", "passing.txt"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let regressed = "REGRESSED test_string_concat: graph input 'x': string tensors are not supported: tessera computes on numeric tensors only";
    assert!(out.stdout.contains(regressed), "{}", out.stdout);
    assert!(out.stderr.contains("1 listed node test(s) regressed and 0 are missing"), "{}", out.stderr);
    // Known failures outside the manifest are not fatal; a case that passes but is not listed
    // is counted as newly passing.
    std::fs::write(dir.path().join("passing.txt"), "").unwrap();
    let out = tessera(dir.path(), &["test-onnx", "suite", "--manifest", "passing.txt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().last(), Some("manifest: 0 regressed, 0 missing, 1 newly passing"));
    // With an exclusion list every case must pass or be excluded with a reason.
    std::fs::write(dir.path().join("passing.txt"), "test_abs\n").unwrap();
    std::fs::write(dir.path().join("excluded.txt"), "# none yet\n").unwrap();
    let args = ["test-onnx", "suite", "--manifest", "passing.txt", "--excluded", "excluded.txt"];
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("UNEXCLUDED test_string_concat: does not pass and has no exclusion"), "{}", out.stdout);
    std::fs::write(dir.path().join("excluded.txt"), "test_string_concat: string tensors are refused\n").unwrap();
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::write(dir.path().join("excluded.txt"), "test_string_concat:\n").unwrap();
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("excluded.txt: line 1: 'test_string_concat' is excluded without a reason"),
        "{}",
        out.stderr
    );
    // A malformed manifest is a located error.
    std::fs::write(dir.path().join("passing.txt"), "test_abs\ntest_abs\n").unwrap();
    let out = tessera(dir.path(), &["test-onnx", "suite", "--manifest", "passing.txt"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("passing.txt: line 2: 'test_abs' is listed twice"), "{}", out.stderr);
}

#[test]
fn import_prints_tsr_text_that_reparses() {
    let dir = tempfile::tempdir().unwrap();
    let model = node_tests().join("test_gemm_default_matrix_bias/model.onnx");
    let out = tessera(dir.path(), &["import", model.to_str().unwrap(), "-o", "gemm.mlir"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(dir.path().join("gemm.mlir")).unwrap();
    insta::assert_snapshot!(text);
    let again = tessera(dir.path(), &["opt", "gemm.mlir", "--check-mlir"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, text);
}

#[test]
fn onnx_models_run_and_summarize_directly() {
    let dir = tempfile::tempdir().unwrap();
    let model = node_tests().join("test_softmax_axis_0/model.onnx");
    let model = model.to_str().unwrap();
    let run = tessera(dir.path(), &["run", model, "--random-inputs", "2", "-o", "out"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(dir.path().join("out/y.npy").is_file(), "{}", run.stdout);
    let info = tessera(dir.path(), &["info", model]);
    assert_eq!(info.code, 0, "{}", info.stderr);
    assert!(info.stdout.contains("softmax"), "{}", info.stdout);
}

/// `--tolerances` compares a case under its own tolerance, as onnx's backend test does: the DFT
/// inverse data (NumPy's float32 FFT, 1.9e-7 where the exact value is 0) fails the default atol
/// 1e-7 and passes onnx's 1e-6; a malformed tolerance line is a located error and exit 1.
#[test]
fn test_onnx_applies_per_case_tolerances_and_refuses_a_malformed_list() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&node_tests().join("test_dft_inverse"), &dir.path().join("cases/test_dft_inverse"));
    let out = tessera(dir.path(), &["test-onnx", "cases"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.stdout.lines().last(), Some("onnx-node: 0 passed, 1 failed, 0 unsupported"));

    std::fs::write(dir.path().join("tolerances.txt"), "# onnx's dft_atol\ntest_dft_inverse: atol=1e-6\n").unwrap();
    let out = tessera(dir.path(), &["test-onnx", "cases", "--tolerances", "tolerances.txt"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.lines().last(), Some("onnx-node: 1 passed, 0 failed, 0 unsupported"));

    std::fs::write(dir.path().join("bad.txt"), "test_dft: atol=1e-6\ntest_dft_inverse: atol=wide\n").unwrap();
    let out = tessera(dir.path(), &["test-onnx", "cases", "--tolerances", "bad.txt"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("bad.txt") && out.stderr.contains("line 2: atol: 'wide' is not a finite number >= 0"));
}

/// 3-D AveragePool and LpPool (two 2-D pools) and LRN (an average pool over the channels)
/// compile with no step left to the interpreter and give the node tests' expected outputs.
#[test]
fn three_d_pooling_and_lrn_compile_for_the_cpu_and_match_the_node_tests() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["test_averagepool_3d_dilations_small", "test_lppool_3d_default", "test_lrn", "test_lrn_default"] {
        let outcome = crate::support::run_node_test_compiled(&node_tests().join(name), tmp.path());
        assert_eq!(outcome, tessera_frontend::onnx::conformance::Outcome::Passed, "{name}");
    }
}
