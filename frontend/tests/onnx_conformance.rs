//! The ONNX backend node conformance suite through import + the reference interpreter, checked
//! against a manifest of the cases known to pass (`tests/conformance/onnx-node-passing.txt`): every
//! listed case must still pass, so one op cannot regress unnoticed while another starts passing.
//!
//! The suite comes from the pinned onnx wheel (`scripts/fetch-onnx-tests.sh` unpacks it into
//! `.cache/onnx-node-tests/`; `make test` runs it first); without that directory the test fails
//! and says how to get it. Newly passing cases are printed; `TESSERA_BLESS=1` promotes them by
//! rewriting the manifest (review the diff). `TESSERA_ONNX_REPORT=path` writes one line per case
//! (name, outcome, reason) for triage.

use std::path::Path;
use tessera_frontend::onnx::conformance::{run_node_tests, Manifest, Outcome};
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;

/// The first line of the manifest: which data it was measured on.
const MANIFEST_HEADER: &str =
    "ONNX node tests that pass import + the reference interpreter (onnx 1.20.1's data); TESSERA_BLESS=1 cargo test -p tessera-frontend --test onnx_conformance promotes new ones";

fn interpreter(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, String> {
    tessera_runtime::interpreter::run(g, inputs).map_err(|e| e.to_string())
}

fn write_report(report: &str, summary: &tessera_frontend::onnx::conformance::Summary) {
    let lines: Vec<String> = summary
        .cases
        .iter()
        .map(|c| match &c.outcome {
            Outcome::Passed if c.bound_inputs.is_empty() => format!("{}\tpassed", c.name),
            Outcome::Passed => format!("{}\tpassed\tbound inputs: {}", c.name, c.bound_inputs.join(", ")),
            Outcome::Failed(m) => format!("{}\tfailed\t{m}", c.name),
            Outcome::Unsupported(m) => format!("{}\tunsupported\t{m}", c.name),
        })
        .collect();
    if let Err(e) = std::fs::write(report, lines.join("\n") + "\n") {
        panic!("cannot write {report}: {e}");
    }
}

#[test]
fn onnx_node_tests_pass_every_case_of_the_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(".cache/onnx-node-tests");
    assert!(
        dir.is_dir(),
        "the ONNX node tests are not fetched ({} is missing): run scripts/fetch-onnx-tests.sh",
        dir.display()
    );
    let manifest_path = root.join("tests/conformance/onnx-node-passing.txt");
    let text = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest_path.display()));
    let manifest = Manifest::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    let summary = match run_node_tests(&dir, &interpreter) {
        Ok(s) => s,
        Err(e) => panic!("cannot run the suite: {e}"),
    };
    if let Ok(report) = std::env::var("TESSERA_ONNX_REPORT") {
        write_report(&report, &summary);
    }
    let check = manifest.check(&summary);
    println!("{summary}\n{check}");
    for name in &check.newly_passing {
        println!("newly passing: {name}");
    }
    if std::env::var_os("TESSERA_BLESS").is_some() && check.regressed.is_empty() {
        let promoted = Manifest::of_summary(&summary).to_text(&[MANIFEST_HEADER]);
        if let Err(e) = std::fs::write(&manifest_path, promoted) {
            panic!("cannot write {}: {e}", manifest_path.display());
        }
        return;
    }
    assert!(check.holds(), "{check}");
}

/// The recurrent-layer fixtures (`tests/data/onnx-recurrent/`, onnxruntime's outputs for what
/// the node tests leave out; `scripts/gen-recurrent-fixtures.py` writes them) all pass on the
/// interpreter. `tests/e2e/recurrent.rs` runs them compiled.
#[test]
fn recurrent_fixtures_match_onnxruntime_on_the_interpreter() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/onnx-recurrent");
    let summary = run_node_tests(&dir, &interpreter).unwrap_or_else(|e| panic!("cannot run the fixtures: {e}"));
    let failures: Vec<String> = summary
        .cases
        .iter()
        .filter(|c| c.outcome != Outcome::Passed)
        .map(|c| format!("{}: {:?}", c.name, c.outcome))
        .collect();
    assert_eq!((summary.passed, failures), (11, Vec::<String>::new()));
}
