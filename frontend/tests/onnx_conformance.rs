//! The ONNX backend node conformance suite through import + the reference interpreter, with a
//! ratchet: the pass count may not drop below [`PASS_FLOOR`].
//!
//! The suite comes from the pinned onnx wheel (`scripts/fetch-onnx-tests.sh` unpacks it into
//! `.cache/onnx-node-tests/`; `make test` runs it first); without that directory the test fails
//! and says how to get it.
//! `TESSERA_ONNX_REPORT=path` writes one line per case (name, outcome, reason) for triage.

use std::path::Path;
use tessera_frontend::onnx::conformance::{run_node_tests, Outcome};
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;

/// Node tests known to pass (measured with onnx 1.20.1's data). Raise it when more pass.
const PASS_FLOOR: usize = 1111;

fn interpreter(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, String> {
    tessera_runtime::interpreter::run(g, inputs).map_err(|e| e.to_string())
}

#[test]
fn onnx_node_tests_pass_at_least_the_floor() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnx-node-tests");
    assert!(
        dir.is_dir(),
        "the ONNX node tests are not fetched ({} is missing): run scripts/fetch-onnx-tests.sh",
        dir.display()
    );
    let summary = match run_node_tests(&dir, &interpreter) {
        Ok(s) => s,
        Err(e) => panic!("cannot run the suite: {e}"),
    };
    if let Ok(report) = std::env::var("TESSERA_ONNX_REPORT") {
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
        if let Err(e) = std::fs::write(&report, lines.join("\n") + "\n") {
            panic!("cannot write {report}: {e}");
        }
    }
    println!("{summary}");
    assert!(summary.passed >= PASS_FLOOR, "{summary}: fewer than the recorded floor of {PASS_FLOOR} passed");
}
