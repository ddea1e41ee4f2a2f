//! `tsr.loop` end to end: a loop whose trip count is an input runs through the interpreter and
//! through a compiled CPU artifact (as a reference step) with the hand-computed result, and a
//! loop that never ends stops at its trip limit with exit 1; the ONNX `Loop`/`Scan` fixtures
//! compiled (static and range artifacts) match onnxruntime.

use crate::support::tessera;
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy::{read_npy, write_npy};

/// `while i < n { i += 1; x = x * x + x }`: the trip count `n` is data.
const LOOP: &str = r#"func.func @grow(%n: tensor<i64>, %x: tensor<2x2xf32>) -> (tensor<i64>, tensor<2x2xf32>) {
  %zero = "tsr.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
  %i, %m, %y = "tsr.loop"(%zero, %n, %x) ({
  ^bb0(%i: tensor<i64>, %n: tensor<i64>, %x: tensor<2x2xf32>):
    %go = "tsr.lt"(%i, %n) : (tensor<i64>, tensor<i64>) -> tensor<i1>
    "tsr.yield"(%go) : (tensor<i1>) -> ()
  }, {
  ^bb0(%i: tensor<i64>, %n: tensor<i64>, %x: tensor<2x2xf32>):
    %one = "tsr.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %next_i = "tsr.add"(%i, %one) : (tensor<i64>, tensor<i64>) -> tensor<i64>
    %sq = "tsr.matmul"(%x, %x) : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %next_x = "tsr.add"(%sq, %x) : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    "tsr.yield"(%next_i, %n, %next_x) : (tensor<i64>, tensor<i64>, tensor<2x2xf32>) -> ()
  }) {max_trips = 50 : i64} : (tensor<i64>, tensor<i64>, tensor<2x2xf32>) -> (tensor<i64>, tensor<i64>, tensor<2x2xf32>)
  %scaled = "tsr.mul"(%y, %y) : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
  return %i, %scaled : tensor<i64>, tensor<2x2xf32>
}
"#;

/// The loop by hand: `trips` times `x = x·x + x`, then squared elementwise.
fn expected(trips: i64, x: [f64; 4]) -> Vec<f64> {
    let mut x = x;
    for _ in 0..trips {
        let sq = [
            x[0] * x[0] + x[1] * x[2],
            x[0] * x[1] + x[1] * x[3],
            x[2] * x[0] + x[3] * x[2],
            x[2] * x[1] + x[3] * x[3],
        ];
        x = [sq[0] + x[0], sq[1] + x[1], sq[2] + x[2], sq[3] + x[3]];
    }
    x.iter().map(|v| v * v).collect()
}

fn write_inputs(dir: &Path, n: i64, x: [f64; 4]) -> Vec<String> {
    let n_file = dir.join(format!("n{n}.npy"));
    write_npy(&n_file, &Tensor::from_i64(DType::I64, vec![], vec![n])).expect("writes n");
    let x_file = dir.join("x.npy");
    write_npy(&x_file, &Tensor::from_f64(DType::F32, vec![2, 2], x.to_vec())).expect("writes x");
    vec![format!("n={}", n_file.display()), format!("x={}", x_file.display())]
}

fn run(dir: &Path, model: &str, inputs: &[String], out: &Path) -> crate::support::Outcome {
    let out_arg = out.to_string_lossy().into_owned();
    let mut args = vec!["run", model, "-o", out_arg.as_str()];
    for input in inputs {
        args.extend(["--input", input.as_str()]);
    }
    tessera(dir, &args)
}

#[test]
fn a_data_dependent_loop_runs_in_the_interpreter_and_compiled() {
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path();
    let model = dir.join("grow.mlir");
    std::fs::write(&model, LOOP).expect("writes the model");
    let model_arg = model.to_string_lossy().into_owned();
    let artifact_arg = dir.join("grow.art").to_string_lossy().into_owned();
    let compiled = tessera(dir, &["compile", model_arg.as_str(), "--target", "cpu", "-o", artifact_arg.as_str()]);
    assert_eq!(compiled.code, 0, "compile failed: {}", compiled.stderr);
    assert!(compiled.stdout.contains("reference steps: 1 "), "the loop is one reference step: {}", compiled.stdout);
    let x = [0.5, -0.25, 0.125, 0.75];
    for n in [0, 1, 3] {
        let inputs = write_inputs(dir, n, x);
        for (label, program) in [("interpreter", model_arg.as_str()), ("compiled", artifact_arg.as_str())] {
            let out = dir.join(format!("out-{label}-{n}"));
            let outcome = run(dir, program, &inputs, &out);
            assert_eq!(outcome.code, 0, "{label} n={n}: {}", outcome.stderr);
            let trips = read_npy(&out.join("i.npy")).expect("the counter");
            assert_eq!(trips.get_i64(0), n, "{label}: trips");
            let y = read_npy(&out.join("scaled.npy")).expect("the result").to_f64_vec();
            for (got, want) in y.iter().zip(expected(n, x)) {
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{label} n={n}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn a_loop_past_its_trip_limit_exits_1_with_the_limit_named() {
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path();
    let model = dir.join("grow.mlir");
    // 51 trips asked of a loop limited to 50.
    std::fs::write(&model, LOOP).expect("writes the model");
    let inputs = write_inputs(dir, 51, [0.0; 4]);
    let outcome = run(dir, &model.to_string_lossy(), &inputs, &dir.join("out"));
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("the loop did not end within 50 trips (its max_trips limit)"),
        "{}",
        outcome.stderr
    );
}

/// The ONNX loop fixtures (`tests/fixtures/onnx-loops/`, onnxruntime's outputs; written by
/// `scripts/gen-loop-fixtures.py`) compiled for the CPU match onnxruntime at every data set: the
/// Loop with a data-dependent trip count as one static artifact (the loop a reference step, the
/// only one), the Loop and Scan of symbolic length as range artifacts run at two sizes each.
#[test]
fn onnx_loop_fixtures_compiled_match_onnxruntime() {
    use tessera_frontend::onnx::conformance::{run_node_test, Outcome};
    use tessera_ir::graph::Graph;
    use tessera_runtime::executor::cpu::CpuExecutor;
    use tessera_runtime::executor::load::load;
    use tessera_runtime::executor::ranged::RangedExecutor;

    let fixtures = crate::support::repo_root().join("tests/fixtures/onnx-loops");
    let tmp = tempfile::tempdir().expect("tempdir");
    let compile = |name: &str, dims: &[&str]| -> (std::path::PathBuf, String) {
        let artifact = tmp.path().join(name);
        let model = fixtures.join(name).join("model.onnx").to_string_lossy().into_owned();
        let mut args = vec!["compile", model.as_str(), "-o"];
        let out_dir = artifact.to_string_lossy().into_owned();
        args.push(&out_dir);
        for d in dims {
            args.extend(["--dim", d]);
        }
        let out = tessera(tmp.path(), &args);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        (artifact, out.stdout)
    };

    let (artifact, report) = compile("loop_data_dependent_trips", &[]);
    assert!(report.contains("reference steps: 1 of 2 (1 loop)"), "{report}");
    let executor = CpuExecutor::new(load(&artifact).expect("load")).expect("executor");
    let compiled = |_: &Graph, inputs: &[(String, Tensor)]| executor.run(inputs).map_err(|e| e.to_string());
    assert_eq!(run_node_test(&fixtures.join("loop_data_dependent_trips"), &compiled), Outcome::Passed);

    for (name, dim) in [("loop_symbolic_scan_outputs", "n=1..8"), ("scan_reverse_cumsum", "steps=1..8")] {
        let (artifact, report) = compile(name, &[dim]);
        assert!(report.contains(&format!("a range artifact for {dim}")), "{name}: {report}");
        let executor = RangedExecutor::load(&artifact, None).expect("load");
        let ranged = |_: &Graph, inputs: &[(String, Tensor)]| executor.run(inputs).map_err(|e| e.to_string());
        assert_eq!(run_node_test(&fixtures.join(name), &ranged), Outcome::Passed, "{name}");
    }
}
