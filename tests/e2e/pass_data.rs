//! Data-driven pass tests: each `tests/data/<pass>/<case>.mlir` starts with `// RUN: PIPELINE`;
//! the pipeline's output is an insta snapshot named `<pass>__<case>`, and the optimized graph
//! must compute what the original computes (reference interpreter, seeded inputs).

use crate::support::repo_root;
use tessera_ir::graph::Graph;
use tessera_passes::pipeline::{run_pipeline, Pipeline, RunConfig};

fn seeded_inputs(g: &Graph) -> Vec<(String, tessera_ir::tensor::Tensor)> {
    let all_static = g.inputs().iter().all(|&v| g.value(v).ty.static_shape().is_some());
    assert!(all_static, "pass test cases use static shapes");
    tessera_ir::testing::inputs::seeded_inputs(g, 3, 0)
}

#[test]
fn pass_cases_match_their_snapshots_and_preserve_results() {
    let data = repo_root().join("tests/data");
    let mut cases = Vec::new();
    for pass_dir in std::fs::read_dir(&data).unwrap() {
        let pass_dir = pass_dir.unwrap().path();
        for case in std::fs::read_dir(&pass_dir).unwrap() {
            cases.push(case.unwrap().path());
        }
    }
    cases.sort();
    assert!(cases.len() >= 3, "expected pass cases under {}", data.display());
    for path in cases {
        let text = std::fs::read_to_string(&path).unwrap();
        let pipeline = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// RUN: "))
            .unwrap_or_else(|| panic!("{} must start with '// RUN: PIPELINE'", path.display()));
        let original = tessera_frontend::load::load_model(&path).unwrap();
        let mut optimized = original.clone();
        let pipeline = Pipeline::parse(pipeline).unwrap();
        run_pipeline(&mut optimized, &pipeline, &mut RunConfig::default()).unwrap();

        let pass = path.parent().unwrap().file_name().unwrap().to_string_lossy();
        let case = path.file_stem().unwrap().to_string_lossy();
        insta::assert_snapshot!(format!("{pass}__{case}"), tessera_ir::mlir::print_graph(&optimized));

        let inputs = seeded_inputs(&original);
        let before = tessera_runtime::interpreter::run(&original, &inputs).unwrap();
        let after = tessera_runtime::interpreter::run(&optimized, &inputs).unwrap();
        assert_eq!(before, after, "{} changed the results", path.display());
    }
}
