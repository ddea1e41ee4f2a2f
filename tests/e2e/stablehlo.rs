//! StableHLO import (issue 19): the cases JAX itself writes (scripts/stablehlo/setup.sh) run
//! through the interpreter and a compiled CPU artifact and match JAX's outputs; malformed text
//! gives a located error and exit 1; mutated text never panics the reader.

use crate::support::{repo_root, stablehlo_error_lines, tessera};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;
use tessera_runtime::npy::read_npy;

/// Allowed error of every element, relative to the largest magnitude of the expected output.
const TOLERANCE: f64 = 1e-4;

pub(crate) fn cases_dir() -> PathBuf {
    repo_root().join(".cache/stablehlo/cases")
}

/// The case names of `cases.json`, or `None` (with the reason printed) when the cases are not
/// generated; under CI (`CI` set) their absence fails the test.
fn generated_cases() -> Option<Vec<String>> {
    generated_list("cases")
}

/// The 4-device mesh cases of `cases.json` (`mesh_cases`), as [`generated_cases`].
pub(crate) fn generated_mesh_cases() -> Option<Vec<String>> {
    generated_list("mesh_cases")
}

fn generated_list(key: &str) -> Option<Vec<String>> {
    let index = cases_dir().join("cases.json");
    if !index.is_file() {
        let why = format!(
            "the StableHLO cases are not generated ({} is missing): run scripts/stablehlo/setup.sh",
            index.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        println!("stablehlo: skipped: {why}");
        return None;
    }
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
    let Some(cases) = json[key].as_array() else {
        let why = format!("{} lists no {key}: run scripts/stablehlo/setup.sh", index.display());
        assert!(std::env::var_os("CI").is_none(), "{why}");
        println!("stablehlo: skipped: {why}");
        return None;
    };
    Some(cases.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
}

/// The worst element's distance from JAX's, over the largest magnitude of JAX's output.
pub(crate) fn error_to_scale(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.shape, expected.shape, "output shapes differ");
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let scale = e.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    a.iter()
        .zip(&e)
        .map(|(a, e)| if (a - e).is_nan() { f64::INFINITY } else { (a - e).abs() / scale })
        .fold(0.0, f64::max)
}

/// `--input argN=FILE` for every input of a case, and `--dim` bindings of the symbolic
/// dimensions the import gives, from the inputs' shapes.
pub(crate) fn run_args(model: &Path, case: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{}:{e}", model.display()));
    let mut inputs = Vec::new();
    let mut dims = Vec::new();
    for &id in graph.inputs() {
        let value = graph.value(id);
        let file = case.join("inputs").join(format!("{}.npy", value.name));
        let shape = read_npy(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).shape;
        for (d, size) in value.ty.dims.iter().zip(&shape) {
            if let Dim::Symbolic(expr) = d {
                let symbol =
                    expr.as_symbol().unwrap_or_else(|| panic!("input {} has a compound dimension {expr}", value.name));
                dims.push(format!("{symbol}={size}"));
            }
        }
        inputs.push(format!("{}={}", value.name, file.display()));
    }
    (inputs, dims)
}

/// The outputs `tessera run MODEL` writes on the case's inputs, against JAX's.
pub(crate) fn check_run(work: &Path, label: &str, model: &str, inputs: &[String], case: &Path) -> usize {
    let out = work.join(format!("out-{}", label.replace([' ', '/'], "-")));
    let out_arg = out.to_string_lossy().into_owned();
    let mut args = vec!["run", model, "-o", out_arg.as_str()];
    for input in inputs {
        args.extend(["--input", input.as_str()]);
    }
    let run = tessera(work, &args);
    assert_eq!(run.code, 0, "{label}: tessera run failed: {}", run.stderr);
    let expected_dir = case.join("outputs");
    let mut checked = 0;
    for name in crate::support::files_in(&expected_dir) {
        let expected = read_npy(&expected_dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = read_npy(&out.join(&name)).unwrap_or_else(|e| panic!("{label}: output {name}: {e}"));
        let error = error_to_scale(&actual, &expected);
        println!("{label}: {name}: max error {error:.2e} of the largest magnitude");
        assert!(
            error <= TOLERANCE,
            "{label}: {name} differs from JAX by {error:.3e} of its largest magnitude (max {TOLERANCE:e})"
        );
        checked += 1;
    }
    assert!(checked > 0, "{label}: JAX wrote no outputs");
    checked
}

/// Issue 19's acceptance: every generated case, in both text forms, imports, runs through the
/// interpreter and through a compiled CPU artifact, and matches JAX within 1e-4 of the largest
/// output magnitude.
#[test]
fn every_jax_case_matches_jax_in_the_interpreter_and_compiled() {
    let Some(cases) = generated_cases() else { return };
    assert!(cases.len() >= 7, "expected the seven generated cases, got {cases:?}");
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut checked = 0;
    for name in &cases {
        let case = cases_dir().join(name);
        for form in ["pretty", "generic"] {
            let model = case.join(format!("{form}.stablehlo.mlir"));
            let model_arg = model.to_string_lossy().into_owned();
            let (inputs, dims) = run_args(&model, &case);
            checked += check_run(work.path(), &format!("{name} {form} interpreter"), &model_arg, &inputs, &case);
            let artifact = work.path().join(format!("artifact-{name}-{form}"));
            let artifact_arg = artifact.to_string_lossy().into_owned();
            let mut compile = vec!["compile", model_arg.as_str(), "--target", "cpu", "-o", artifact_arg.as_str()];
            for d in &dims {
                compile.extend(["--dim", d.as_str()]);
            }
            let compiled = tessera(work.path(), &compile);
            assert_eq!(compiled.code, 0, "{name} {form}: tessera compile failed: {}", compiled.stderr);
            checked += check_run(work.path(), &format!("{name} {form} compiled"), &artifact_arg, &inputs, &case);
        }
    }
    println!("stablehlo: {checked} outputs of {} cases match JAX", cases.len());
}

/// The scan RNN's `while` unrolls (five trips of two matmuls, no loop left) and the dynamic-batch
/// case keeps its batch symbolic.
#[test]
fn a_scan_unrolls_and_a_polymorphic_batch_stays_symbolic() {
    let Some(_) = generated_cases() else { return };
    let read = |case: &str| {
        let path = cases_dir().join(case).join("pretty.stablehlo.mlir");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
    };
    let rnn = read("scan_rnn");
    let matmuls = rnn.nodes().filter(|(_, n)| n.op == tessera_ir::ops::Op::MatMul).count();
    assert_eq!(matmuls, 10, "five unrolled steps of x @ wx + h @ wh");
    let dynamic = read("dynamic_batch");
    let x = dynamic.value(dynamic.inputs()[0]);
    assert_eq!((x.name.as_str(), x.ty.to_string().as_str()), ("arg0", r#"tensor<?x16xf32, ["arg0_dim0"]>"#));
    let out = dynamic.value(dynamic.outputs()[0]);
    assert_eq!((out.name.as_str(), out.ty.to_string().as_str()), ("out0", r#"tensor<?xf32, ["arg0_dim0"]>"#));
}

/// Malformed StableHLO, each a located error with exit status 1 from `tessera info`.
const MALFORMED: [(&str, &str); 13] = [
    (
        "unknown_op",
        "func.func @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.frobnicate %arg0 : tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n",
    ),
    (
        "wrong_dimension_numbers",
        "func.func @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3x4xf32>) -> tensor<2x4xf32> {\n  %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [0] x [0] : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n  return %0 : tensor<2x4xf32>\n}\n",
    ),
    (
        "dimension_out_of_range",
        "func.func @main(%arg0: tensor<2x3xf32>, %arg1: tensor<3x4xf32>) -> tensor<2x4xf32> {\n  %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [5] x [0] : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n  return %0 : tensor<2x4xf32>\n}\n",
    ),
    (
        "mismatched_region_types",
        "func.func @main(%arg0: tensor<4xf32>) -> tensor<f32> {\n  %cst = stablehlo.constant dense<0.0> : tensor<f32>\n  %0 = stablehlo.reduce(%arg0 init: %cst) across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>\n   reducer(%a: tensor<i32>, %b: tensor<i32>)  {\n    %1 = stablehlo.add %a, %b : tensor<i32>\n    stablehlo.return %1 : tensor<i32>\n  }\n  return %0 : tensor<f32>\n}\n",
    ),
    (
        "unsupported_reduction_body",
        "func.func @main(%arg0: tensor<4xf32>) -> tensor<f32> {\n  %cst = stablehlo.constant dense<0.0> : tensor<f32>\n  %0 = stablehlo.reduce(%arg0 init: %cst) applies stablehlo.subtract across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>\n  return %0 : tensor<f32>\n}\n",
    ),
    (
        "truncated",
        "module @jit_f {\n  func.func public @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {\n    %0 = stablehlo.add %arg0, %arg0 : tensor<2x",
    ),
    (
        "custom_call",
        "func.func @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.custom_call @cublas_gemm(%arg0) : (tensor<2xf32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n",
    ),
    (
        // A data-dependent while whose body changes a carried value's type.
        "while_mismatched_carried_types",
        "func.func @main(%arg0: tensor<2xf32>, %arg1: tensor<i32>) -> tensor<2xf32> {\n  %c = stablehlo.constant dense<0> : tensor<i32>\n  %0:2 = stablehlo.while(%i = %c, %x = %arg0) : tensor<i32>, tensor<2xf32>\n  cond {\n    %1 = stablehlo.compare LT, %i, %arg1, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>\n    stablehlo.return %1 : tensor<i1>\n  } do {\n    %1 = stablehlo.convert %x : (tensor<2xf32>) -> tensor<2xf16>\n    stablehlo.return %i, %1 : tensor<i32>, tensor<2xf16>\n  }\n  return %0#1 : tensor<2xf32>\n}\n",
    ),
    (
        "case_without_branches",
        "func.func @main(%arg0: tensor<2xf32>, %arg1: tensor<i32>) -> tensor<2xf32> {\n  %0 = \"stablehlo.case\"(%arg1) : (tensor<i32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n",
    ),
    (
        "case_branches_disagree",
        "func.func @main(%arg0: tensor<2xf32>, %arg1: tensor<i32>) -> tensor<2xf32> {\n  %0 = \"stablehlo.case\"(%arg1) ({\n    stablehlo.return %arg0 : tensor<2xf32>\n  }, {\n    %1 = stablehlo.reshape %arg0 : (tensor<2xf32>) -> tensor<1x2xf32>\n    stablehlo.return %1 : tensor<1x2xf32>\n  }) : (tensor<i32>) -> tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n",
    ),
    (
        // A condition that never turns false, with a trip count known at import.
        "while_never_ends",
        "func.func @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {\n  %t = stablehlo.constant dense<true> : tensor<i1>\n  %0 = stablehlo.while(%x = %arg0) : tensor<2xf32>\n  cond {\n    stablehlo.return %t : tensor<i1>\n  } do {\n    stablehlo.return %x : tensor<2xf32>\n  }\n  return %0 : tensor<2xf32>\n}\n",
    ),
    (
        // The indices are said to address dimension 2 of a rank-2 operand.
        "scatter_bad_dimension_numbers",
        "func.func @main(%arg0: tensor<6x4xf32>, %arg1: tensor<2x1xi32>, %arg2: tensor<2x4xf32>) -> tensor<6x4xf32> {\n  %0 = \"stablehlo.scatter\"(%arg0, %arg1, %arg2) <{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [2], index_vector_dim = 1>}> ({\n  ^bb0(%a: tensor<f32>, %b: tensor<f32>):\n    %1 = stablehlo.add %a, %b : tensor<f32>\n    stablehlo.return %1 : tensor<f32>\n  }) : (tensor<6x4xf32>, tensor<2x1xi32>, tensor<2x4xf32>) -> tensor<6x4xf32>\n  return %0 : tensor<6x4xf32>\n}\n",
    ),
    (
        "scatter_unsupported_update",
        "func.func @main(%arg0: tensor<6x4xf32>, %arg1: tensor<2x1xi32>, %arg2: tensor<2x4xf32>) -> tensor<6x4xf32> {\n  %0 = \"stablehlo.scatter\"(%arg0, %arg1, %arg2) <{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>}> ({\n  ^bb0(%a: tensor<f32>, %b: tensor<f32>):\n    %1 = stablehlo.subtract %a, %b : tensor<f32>\n    stablehlo.return %1 : tensor<f32>\n  }) : (tensor<6x4xf32>, tensor<2x1xi32>, tensor<2x4xf32>) -> tensor<6x4xf32>\n  return %0 : tensor<6x4xf32>\n}\n",
    ),
];

#[test]
fn malformed_stablehlo_is_a_located_error_with_exit_1() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let lines = stablehlo_error_lines(work.path(), &MALFORMED);
    insta::assert_snapshot!(lines.iter().map(|line| format!("{line}\n")).collect::<String>());
}

/// A small module in both forms, for the mutation test (the generated cases may be absent).
const SAMPLE: &str = r#"module @jit_f attributes {mhlo.num_partitions = 1 : i32} {
  func.func public @main(%arg0: tensor<2x4xf32>, %arg1: tensor<4x3xf32>) -> (tensor<2x3xf32> {jax.result_info = "result"}) {
    %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<2x4xf32>, tensor<4x3xf32>) -> tensor<2x3xf32>
    %cst = stablehlo.constant dense<5.000000e-01> : tensor<f32>
    %1 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<2x3xf32>
    %2 = chlo.erf %0 : tensor<2x3xf32> -> tensor<2x3xf32>
    %3 = stablehlo.multiply %1, %2 : tensor<2x3xf32>
    %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2xf32>
    %5 = stablehlo.slice %3 [0:2, 1:3:1] : (tensor<2x3xf32>) -> tensor<2x2xf32>
    %6 = "stablehlo.reduce"(%5, %cst) <{dimensions = array<i64: 0>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %7 = "stablehlo.maximum"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>
      "stablehlo.return"(%7) : (tensor<f32>) -> ()
    }) : (tensor<2x2xf32>, tensor<f32>) -> tensor<2xf32>
    %8 = stablehlo.add %4, %6 : tensor<2xf32>
    %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<2xf32>) -> tensor<2x3xf32>
    %10 = stablehlo.add %3, %9 : tensor<2x3xf32>
    return %10 : tensor<2x3xf32>
  }
}
"#;

#[test]
fn the_sample_imports_and_computes_erf_then_reductions() {
    let graph = tessera_frontend::stablehlo::import_text(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_f64(tessera_ir::dtype::DType::F32, vec![2, 4], (0..8).map(|i| i as f64 / 8.0).collect());
    let w =
        Tensor::from_f64(tessera_ir::dtype::DType::F32, vec![4, 3], (0..12).map(|i| (i as f64 - 6.0) / 12.0).collect());
    let inputs = [("arg0".to_string(), x.clone()), ("arg1".to_string(), w.clone())];
    let out = tessera_runtime::interpreter::run(&graph, &inputs).unwrap_or_else(|e| panic!("{e}"));
    // The same computation in f64 by hand.
    let (xv, wv) = (x.to_f64_vec(), w.to_f64_vec());
    let mut y = [[0.0f64; 3]; 2];
    for i in 0..2 {
        for j in 0..3 {
            let dot: f64 = (0..4).map(|k| xv[i * 4 + k] * wv[k * 3 + j]).sum();
            y[i][j] = 0.5 * erf(dot);
        }
    }
    // Both reductions start from the constant 0.5, which is not their identity.
    let row_sum = |i: usize| y[i].iter().sum::<f64>() + 0.5;
    let col_max = |j: usize| y[0][j].max(y[1][j]).max(0.5);
    assert_eq!(out[0].0, "out0");
    let got = out[0].1.to_f64_vec();
    for i in 0..2 {
        for j in 0..3 {
            let want = y[i][j] + row_sum(i) + col_max(i + 1);
            assert!((got[i * 3 + j] - want).abs() < 1e-5, "[{i},{j}]: {} vs {want}", got[i * 3 + j]);
        }
    }
}

/// erf by its Maclaurin series (converges fast for the |x| < 1 the test feeds it).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..40 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Deleting, duplicating or replacing a span of a valid module gives an import result or a
    /// located error, never a panic.
    #[test]
    fn mutated_text_never_panics_the_importer(
        start in 0usize..SAMPLE.len(),
        len in 0usize..24,
        kind in 0u8..3,
        filler in prop::sample::select(vec!["", "%", "(", ")", "{", "}", "<", ">", "[", "]", ":", ",", "x", "?", "\"", "#", "-1", "99999999999999999999", "tensor<", "dense<", "^bb0(", "stablehlo.while"]),
    ) {
        let end = (start + len).min(SAMPLE.len());
        let (Some(head), Some(span), Some(tail)) = (SAMPLE.get(..start), SAMPLE.get(start..end), SAMPLE.get(end..)) else {
            return Ok(());
        };
        let mutated = match kind {
            0 => format!("{head}{tail}"),
            1 => format!("{head}{span}{span}{tail}"),
            _ => format!("{head}{filler}{tail}"),
        };
        if let Err(e) = tessera_frontend::stablehlo::import_text(&mutated) {
            prop_assert!(e.line >= 1 && e.col >= 1, "unlocated error {e:?}");
        }
    }
}

/// A seeded input for `ty`: floats in [-1, 1), integers in [0, 8) (valid token ids and
/// positions for the small models below), booleans true (dropout keeps everything).
pub(crate) fn seeded_input(ty: &tessera_ir::types::TensorType, seed: &mut u64) -> Tensor {
    let shape: Vec<usize> = ty.static_shape().expect("a static input").iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    let mut next = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as f64 / (1u64 << 31) as f64
    };
    match ty.dtype {
        d if d.is_float() => Tensor::from_f64(d, shape, (0..n).map(|_| next() * 2.0 - 1.0).collect()),
        tessera_ir::dtype::DType::Bool => Tensor::from_i64(ty.dtype, shape, vec![1; n]),
        d => Tensor::from_i64(d, shape, (0..n).map(|_| (next() * 8.0) as i64).collect()),
    }
}

/// `tessera opt MODEL --emit stablehlo`, run by XLA (scripts/stablehlo/run_stablehlo.py in the
/// jax venv), against `tessera run MODEL` on the same seeded inputs; the worst error relative to
/// each output's largest magnitude.
fn round_trip_error(model: &str, dims: &[&str]) -> f64 {
    round_trip_error_fed(model, dims, None)
}

/// [`round_trip_error`] on the inputs of `case` (`case/inputs/NAME.npy`) when given: indices
/// the seeded values would put out of range (JAX's fill value, NaN, there) come from JAX.
fn round_trip_error_fed(model: &str, dims: &[&str], case: Option<&Path>) -> f64 {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    let mut opt = vec!["opt", model, "--emit", "stablehlo", "-o", "exported.mlir"];
    for d in dims {
        opt.extend(["--dim", d]);
    }
    let exported = tessera(dir, &opt);
    assert_eq!(exported.code, 0, "{model}: --emit stablehlo failed: {}", exported.stderr);
    let mut graph = tessera_frontend::load::load_model(Path::new(model)).unwrap_or_else(|e| panic!("{e}"));
    if !dims.is_empty() {
        let bindings = dims
            .iter()
            .map(|d| {
                d.split_once('=').map(|(k, v)| (k.to_string(), v.parse::<u64>().expect("a size"))).expect("NAME=SIZE")
            })
            .collect();
        graph = graph.bind_dims(&bindings).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut seed = 19;
    let mut run = vec!["run".to_string(), model.to_string(), "-o".to_string(), "tessera-out".to_string()];
    let mut files = Vec::new();
    for &id in graph.inputs() {
        let value = graph.value(id);
        let file = match case {
            Some(case) => case.join("inputs").join(format!("{}.npy", value.name)),
            None => {
                let file = dir.join(format!("input{}.npy", files.len()));
                tessera_runtime::npy::write_npy(&file, &seeded_input(&value.ty, &mut seed)).expect("write an input");
                file
            }
        };
        run.extend(["--input".to_string(), format!("{}={}", value.name, file.display())]);
        files.push(file.to_string_lossy().into_owned());
    }
    let run_refs: Vec<&str> = run.iter().map(String::as_str).collect();
    let ran = tessera(dir, &run_refs);
    assert_eq!(ran.code, 0, "{model}: tessera run failed: {}", ran.stderr);
    let python = repo_root().join(".cache/stablehlo/venv/bin/python");
    let xla = std::process::Command::new(&python)
        .arg(repo_root().join("scripts/stablehlo/run_stablehlo.py"))
        .arg(dir.join("exported.mlir"))
        .arg(dir.join("xla-out"))
        .args(&files)
        .output()
        .expect("the jax venv's python starts");
    assert!(
        xla.status.success(),
        "{model}: XLA rejected or failed the export: {}",
        String::from_utf8_lossy(&xla.stderr)
    );
    let mut worst = 0.0f64;
    for (i, &id) in graph.outputs().iter().enumerate() {
        let name = &graph.value(id).name;
        let ours = read_npy(&dir.join("tessera-out").join(format!("{name}.npy"))).expect("tessera's output");
        let theirs = read_npy(&dir.join("xla-out").join(format!("{i}.npy"))).expect("XLA's output");
        let error = error_to_scale(&theirs, &ours);
        println!("{model}: {name}: XLA vs tessera: max error {error:.2e} of the largest magnitude");
        worst = worst.max(error);
    }
    worst
}

pub(crate) fn jax_venv_present() -> bool {
    let present = repo_root().join(".cache/stablehlo/venv/bin/python").is_file();
    if !present {
        let why = "the jax venv is missing: run scripts/stablehlo/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        println!("stablehlo: skipped: {why}");
    }
    present
}

/// Export round trip (issue 19): every JAX case imported, exported again and run by XLA gives
/// tessera's outputs.
#[test]
fn exported_cases_run_in_xla_with_tesseras_outputs() {
    let Some(cases) = generated_cases() else { return };
    for name in &cases {
        let model = cases_dir().join(name).join("pretty.stablehlo.mlir");
        let model_arg = model.to_string_lossy().into_owned();
        // The dynamic case exports for the batch its inputs have (XLA wants static shapes).
        let dims: &[&str] = if name == "dynamic_batch" { &["arg0_dim0=3"] } else { &[] };
        let error = round_trip_error(&model_arg, dims);
        assert!(error <= TOLERANCE, "{name}: XLA differs from tessera by {error:.3e} of the largest magnitude");
    }
}

/// The zoo GPT block (embedding gathers, layer norms, attention with a mask, dropout masks) in
/// f32 and in its default bf16, and the example transformer block, exported and run by XLA.
/// The f32 block checks the semantics (1e-6 measured); the bf16 one that XLA takes bf16 text
/// and agrees at bf16's resolution (5e-2 of the largest probability measured: XLA's CPU
/// fusions keep f32 between ops where tessera rounds every op to bf16).
#[test]
fn exported_transformer_blocks_run_in_xla_with_tesseras_outputs() {
    if !jax_venv_present() {
        return;
    }
    let gpt = round_trip_error("gpt:layers=1,hidden=32,heads=4,ffn=64,vocab=64,seq=8,dtype=f32", &[]);
    assert!(gpt <= TOLERANCE, "zoo GPT block (f32): XLA differs from tessera by {gpt:.3e}");
    let gpt = round_trip_error("gpt:layers=1,hidden=32,heads=4,ffn=64,vocab=64,seq=8", &[]);
    assert!(gpt <= 0.1, "zoo GPT block (bf16): XLA differs from tessera by {gpt:.3e}");
    let block = round_trip_error(&crate::support::example("transformer_block.mlir"), &["batch=2"]);
    assert!(block <= TOLERANCE, "transformer_block.mlir: XLA differs from tessera by {block:.3e}");
}

/// An op without a StableHLO counterpart is refused naming the node, with exit status 1.
#[test]
fn exporting_an_op_without_counterpart_names_the_node() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let text = "func.func @f(%x: tensor<2x4xf32>, %t: tensor<2xi64>) -> tensor<f32> {\n  %loss = \"tsr.cross_entropy\"(%x, %t) : (tensor<2x4xf32>, tensor<2xi64>) -> tensor<f32>\n  return %loss : tensor<f32>\n}\n";
    std::fs::write(work.path().join("loss.mlir"), text).expect("write the model");
    let out = tessera(work.path(), &["opt", "loss.mlir", "--emit", "stablehlo"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    insta::assert_snapshot!(out.stderr.trim_end());
}

/// A module JAX lowers under a Shardy mesh (`in_shardings`, `with_sharding_constraint`): the
/// argument shardings become the graph's boundary shardings over the mesh.
#[test]
fn a_shardy_annotated_module_keeps_its_boundary_shardings() {
    let text = r#"module @jit_f attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["dp"=1, "tp"=1]> {stablehlo.mesh = {axes = [{name = "dp", size = 1 : i64}, {name = "tp", size = 1 : i64}]}}
  func.func public @main(%arg0: tensor<4x8xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"dp"}, {}]>}, %arg1: tensor<8x6xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {"tp"}]>}) -> (tensor<4x6xf32> {jax.result_info = "result"}) {
    %0 = stablehlo.dot_general %arg0, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<4x8xf32>, tensor<8x6xf32>) -> tensor<4x6xf32>
    %1 = stablehlo.tanh %0 : tensor<4x6xf32>
    return %1 : tensor<4x6xf32>
  }
}
"#;
    let graph = tessera_frontend::stablehlo::import_text(text).unwrap_or_else(|e| panic!("{e}"));
    let ops: Vec<&str> = graph.nodes().map(|(_, n)| n.op.mnemonic()).collect();
    assert_eq!(ops, ["matmul", "tanh"]);
    let io = graph.io_shardings().expect("the boundary shardings");
    assert_eq!(io.mesh.to_string(), "dp=1,tp=1");
    let inputs: Vec<String> = io.inputs.iter().map(|(n, s)| format!("{n}: {s}")).collect();
    assert_eq!(inputs, ["arg0: [{dp}, {}]", "arg1: [{}, {tp}]"]);
    assert!(io.outputs.is_empty());
    let x = Tensor::from_f64(tessera_ir::dtype::DType::F32, vec![4, 8], vec![0.25; 32]);
    let w = Tensor::from_f64(tessera_ir::dtype::DType::F32, vec![8, 6], vec![0.5; 48]);
    let out = tessera_runtime::interpreter::run(&graph, &[("arg0".into(), x), ("arg1".into(), w)])
        .unwrap_or_else(|e| panic!("{e}"));
    let want = (8.0f64 * 0.25 * 0.5).tanh();
    assert!(out[0].1.to_f64_vec().iter().all(|&v| (v - want).abs() < 1e-6), "{:?}", out[0].1.to_f64_vec());
}

/// Shardings between ops in the forms JAX and hand-written modules use: each imports as one
/// `tsr.sharding_constraint` with the sharding it names (the snapshot lists them); forms with
/// no tsr sharding, or over another mesh, are located errors (exit 1).
#[test]
fn shardings_between_ops_import_as_constraints_or_name_the_form() {
    let with_constraint = |mesh: &str, constraint: &str| {
        format!(
            "module @jit_f attributes {{mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32}} {{\n{mesh}  func.func public @main(%arg0: tensor<4x8xf32>) -> (tensor<4x8xf32> {{jax.result_info = \"result\"}}) {{\n    %0 = stablehlo.tanh %arg0 : tensor<4x8xf32>\n    {constraint}\n    return %1 : tensor<4x8xf32>\n  }}\n}}\n"
        )
    };
    let sdy_mesh = "  sdy.mesh @mesh = <[\"x\"=2, \"y\"=2]> {stablehlo.mesh = {axes = [{name = \"x\", size = 2 : i64}, {name = \"y\", size = 2 : i64}]}}\n";
    let read = [
        ("shardy", with_constraint(sdy_mesh, "%1 = sdy.sharding_constraint %0 <@mesh, [{\"x\"}, {\"y\"}]> : tensor<4x8xf32>")),
        (
            "shardy_generic",
            with_constraint(sdy_mesh, "%1 = \"sdy.sharding_constraint\"(%0) <{sharding = #sdy.sharding<@mesh, [{\"x\"}, {}]>}> : (tensor<4x8xf32>) -> tensor<4x8xf32>"),
        ),
        (
            "gspmd",
            with_constraint("", "%1 = stablehlo.custom_call @Sharding(%0) {backend_config = \"\", mhlo.sharding = \"{devices=[2,2]<=[4]}\"} : (tensor<4x8xf32>) -> tensor<4x8xf32>"),
        ),
        ("op_attribute", with_constraint("", "%1 = stablehlo.negate %0 {mhlo.sharding = \"{replicated}\"} : tensor<4x8xf32>")),
        (
            "op_shardy_attribute",
            with_constraint(sdy_mesh, "%1 = stablehlo.negate %0 {sdy.sharding = #sdy.sharding_per_value<[<@mesh, [{}, {\"y\"}]>]>} : tensor<4x8xf32>"),
        ),
    ];
    let mut listed = String::new();
    for (name, text) in &read {
        let graph = tessera_frontend::stablehlo::import_text(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let constraints: Vec<String> = graph
            .nodes()
            .filter_map(|(_, n)| match &n.op {
                tessera_ir::ops::Op::ShardingConstraint { sharding } => Some(sharding.to_string()),
                _ => None,
            })
            .collect();
        let mesh = graph.io_shardings().map_or("none".to_string(), |io| io.mesh.to_string());
        listed.push_str(&format!("{name}: {} over {mesh}\n", constraints.join(", ")));
    }
    let refused = [
        ("no_such_mesh", with_constraint(sdy_mesh, "%1 = sdy.sharding_constraint %0 <@other, [{\"x\"}, {}]> : tensor<4x8xf32>")),
        ("wrong_rank", with_constraint(sdy_mesh, "%1 = sdy.sharding_constraint %0 <@mesh, [{\"x\"}]> : tensor<4x8xf32>")),
        (
            "devices_in_no_mesh_order",
            with_constraint("", "%1 = stablehlo.custom_call @Sharding(%0) {backend_config = \"\", mhlo.sharding = \"{devices=[1,4]0,3,1,2}\"} : (tensor<4x8xf32>) -> tensor<4x8xf32>"),
        ),
        ("sub_axis", with_constraint(sdy_mesh, "%1 = sdy.sharding_constraint %0 <@mesh, [{\"x\":(1)2}, {}]> : tensor<4x8xf32>")),
        (
            "two_meshes",
            with_constraint(
                "  sdy.mesh @mesh = <[\"x\"=2, \"y\"=2]>\n  sdy.mesh @other = <[\"z\"=4]>\n",
                "%c = sdy.sharding_constraint %0 <@mesh, [{\"x\"}, {}]> : tensor<4x8xf32>\n    %1 = sdy.sharding_constraint %c <@other, [{\"z\"}, {}]> : tensor<4x8xf32>",
            ),
        ),
    ];
    let work = tempfile::tempdir().expect("a temporary directory");
    let lines = stablehlo_error_lines(work.path(), &refused);
    for ((name, text), line) in refused.iter().zip(&lines) {
        let constraint_line = text.lines().position(|l| l.contains("%1 =")).expect("the constraint") + 1;
        let at = format!("error: {name}.stablehlo.mlir:{constraint_line}:");
        assert!(line.starts_with(&at), "{name}: not located at the constraint: {line}");
    }
    listed.extend(lines.iter().map(|line| format!("{line}\n")));
    insta::assert_snapshot!(listed);
}

/// `jax.lax.with_sharding_constraint` as JAX writes it (tests/fixtures/stablehlo/constraint_*,
/// scripts/stablehlo/generate_constraint.py): Shardy's `sdy.sharding_constraint` (hidden
/// columns over `y`) and GSPMD's `custom_call @Sharding` (rows over the device grid's `d0`).
/// Each imports with one `tsr.sharding_constraint`, matches JAX interpreted and compiled, and
/// `shard` puts the constrained value in the constrained layout (snapshots of the per-rank
/// programs); the Shardy form exports back as `sdy.sharding_constraint`, which imports to the
/// same graph and runs on XLA with tessera's outputs.
#[test]
fn jax_sharding_constraints_match_jax_and_pin_the_shard_pass() {
    for (form, mesh) in [("sdy", "x=2,y=2"), ("mhlo", "d0=2,d1=2")] {
        let name = format!("constraint_{form}");
        let case = sharded_fixture(&name);
        let model = case.join("pretty.stablehlo.mlir");
        let model_arg = model.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&model).expect("the fixture");
        let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let constraints = graph.nodes().filter(|(_, n)| n.op.mnemonic() == "sharding_constraint").count();
        assert_eq!(constraints, 1, "{name}");
        let work = tempfile::tempdir().expect("a temporary directory");
        let (inputs, _) = run_args(&model, &case);
        assert_eq!(check_run(work.path(), &format!("{name} interpreter"), &model_arg, &inputs, &case), 1);
        let artifact = work.path().join("artifact").to_string_lossy().into_owned();
        let compiled = tessera(work.path(), &["compile", &model_arg, "--target", "cpu", "-o", &artifact]);
        assert_eq!(compiled.code, 0, "{name}: tessera compile failed: {}", compiled.stderr);
        assert_eq!(check_run(work.path(), &format!("{name} compiled"), &artifact, &inputs, &case), 1);
        let pipeline = format!("shard{{mesh={mesh}}}");
        let sharded = tessera(work.path(), &["opt", &model_arg, "--pipeline", &pipeline]);
        assert_eq!(sharded.code, 0, "{name}: {}", sharded.stderr);
        insta::assert_snapshot!(format!("{name}_per_rank"), sharded.stdout);
    }
    let model_arg = sharded_fixture("constraint_sdy").join("pretty.stablehlo.mlir").to_string_lossy().into_owned();
    let work = tempfile::tempdir().expect("a temporary directory");
    let exported = tessera(work.path(), &["opt", &model_arg, "--emit", "stablehlo"]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert!(
        exported.stdout.contains(r#""sdy.sharding_constraint"(%"#)
            && exported.stdout.contains(r#"<{sharding = #sdy.sharding<@mesh, [{}, {"y"}]>}>"#),
        "{}",
        exported.stdout
    );
    let text = std::fs::read_to_string(&model_arg).expect("the fixture");
    let graph = tessera_frontend::stablehlo::import_text(&text).expect("imports");
    let again = tessera_frontend::stablehlo::import_text(&exported.stdout).unwrap_or_else(|e| panic!("{e}"));
    let constraints = |g: &tessera_ir::graph::Graph| -> Vec<String> {
        g.nodes()
            .filter(|(_, n)| n.op.mnemonic() == "sharding_constraint")
            .map(|(_, n)| format!("{:?}", n.op))
            .collect()
    };
    assert_eq!(constraints(&again), constraints(&graph));
    assert_eq!(again.io_shardings(), graph.io_shardings());
    if jax_venv_present() {
        let error = round_trip_error_fed(&model_arg, &[], Some(&sharded_fixture("constraint_sdy")));
        assert!(error <= TOLERANCE, "XLA differs from tessera by {error:.3e}");
    }
}

fn sharded_fixture(file: &str) -> PathBuf {
    repo_root().join("tests/fixtures/stablehlo").join(file)
}

/// A JAX function jitted with `NamedSharding`s over a 2x2 CPU mesh (tests/fixtures/stablehlo,
/// written by scripts/stablehlo/generate_sharded.py): the imported graph carries the argument
/// and result shardings (snapshot of its tsr text), computes JAX's output, the `shard` pass
/// seeds its inputs from them (no `dp`/`tp` roles involved: the axes are JAX's `x` and `y`),
/// and `--emit stablehlo` writes them back as Shardy annotations that import to the same.
#[test]
fn jax_named_shardings_import_seed_the_shard_pass_and_export_back() {
    let model = sharded_fixture("sharded_mlp.stablehlo.mlir");
    let text = std::fs::read_to_string(&model).expect("the sharded fixture");
    let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("sharded_mlp_imported", tessera_ir::mlir::print_graph(&graph));
    let inputs: Vec<(String, Tensor)> = (0..3)
        .map(|i| {
            let file = sharded_fixture(&format!("sharded_mlp.arg{i}.npy"));
            (format!("arg{i}"), read_npy(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        })
        .collect();
    let out = tessera_runtime::interpreter::run(&graph, &inputs).unwrap_or_else(|e| panic!("{e}"));
    let want = read_npy(&sharded_fixture("sharded_mlp.out0.npy")).expect("JAX's output");
    let error = error_to_scale(&out[0].1, &want);
    assert!(error <= TOLERANCE, "interpreter vs JAX: {error:.3e}");

    let work = tempfile::tempdir().expect("a temporary directory");
    let model_arg = model.to_string_lossy().into_owned();
    let sharded = tessera(work.path(), &["opt", &model_arg, "--pipeline", "canonicalize,shard{mesh=x=2,y=2}"]);
    assert_eq!(sharded.code, 0, "{}", sharded.stderr);
    let seeds: Vec<&str> = sharded.stdout.lines().filter(|l| l.starts_with("// input")).collect();
    assert_eq!(seeds, ["// input %arg0: [{x}, {}]", "// input %arg1: [{}, {y}]", "// input %arg2: [{y}, {}]"]);
    assert!(
        sharded
            .stdout
            .contains("func.func @jit_f(%arg0: tensor<4x4xf32>, %arg1: tensor<4x3xf32>, %arg2: tensor<3x4xf32>)"),
        "{}",
        sharded.stdout
    );

    let exported = tessera(work.path(), &["opt", &model_arg, "--emit", "stablehlo"]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert!(exported.stdout.contains(r#"sdy.mesh @mesh = <["x"=2, "y"=2]>"#), "{}", exported.stdout);
    let again = tessera_frontend::stablehlo::import_text(&exported.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.io_shardings(), graph.io_shardings());
    if jax_venv_present() {
        let error = round_trip_error(&model_arg, &[]);
        assert!(error <= TOLERANCE, "XLA differs from tessera by {error:.3e}");
    }
}

/// `@main` with one argument annotated `ANNOTATION` (a 4x8 f32) and a second sharded over `x`.
fn annotated_main(mesh: &str, annotation: &str) -> String {
    format!(
        "module @m {{\n  {mesh}\n  func.func public @main(%arg0: tensor<4x8xf32> {{{annotation}}}) -> (tensor<4x8xf32>) {{\n    %0 = stablehlo.tanh %arg0 : tensor<4x8xf32>\n    return %0 : tensor<4x8xf32>\n  }}\n}}\n"
    )
}

/// Every sharding form: what tessera reads (GSPMD strings as a device grid `d0, d1, ...`) and the
/// located error naming each form it cannot represent (exit 1, no panic).
#[test]
fn sharding_annotations_read_or_name_the_form_they_cannot_represent() {
    let sdy_mesh = r#"sdy.mesh @mesh = <["x"=2, "y"=2]>"#;
    let cases: &[(&str, &str, &str)] = &[
        ("mhlo_tiled", "", r#"mhlo.sharding = "{devices=[2,1]0,1}""#),
        ("mhlo_iota_replicate_last", "", r#"mhlo.sharding = "{devices=[1,2,2]<=[4] last_tile_dim_replicate}""#),
        ("mhlo_replicated", "", r#"mhlo.sharding = "{replicated}""#),
        ("mhlo_transposed_iota", "", r#"mhlo.sharding = "{devices=[2,2]<=[2,2]T(1,0)}""#),
        ("mhlo_transposed_list", "", r#"mhlo.sharding = "{devices=[1,2,2]0,2,1,3 last_tile_dim_replicate}""#),
        ("sdy_open_dimension", sdy_mesh, r#"sdy.sharding = #sdy.sharding<@mesh, [{"y", ?}, {"x"}]>"#),
        ("mhlo_maximal", "", r#"mhlo.sharding = "{maximal device=0}""#),
        ("mhlo_devices_out_of_order", "", r#"mhlo.sharding = "{devices=[2,1]1,0}""#),
        ("mhlo_tuple", "", r#"mhlo.sharding = "{{replicated}, {maximal device=1}}""#),
        ("sdy_sub_axis", sdy_mesh, r#"sdy.sharding = #sdy.sharding<@mesh, [{"x":(1)2}, {}]>"#),
        ("sdy_unknown_mesh", sdy_mesh, r#"sdy.sharding = #sdy.sharding<@grid, [{"x"}, {}]>"#),
        ("sdy_unknown_axis", sdy_mesh, r#"sdy.sharding = #sdy.sharding<@mesh, [{"z"}, {}]>"#),
        ("sdy_uneven", r#"sdy.mesh @mesh = <["x"=3]>"#, r#"sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>"#),
        (
            "sdy_device_ids",
            r#"sdy.mesh @mesh = <["x"=2], device_ids=[1, 0]>"#,
            r#"sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>"#,
        ),
    ];
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut report = String::new();
    for (name, mesh, annotation) in cases {
        let file = format!("{name}.stablehlo.mlir");
        std::fs::write(work.path().join(&file), annotated_main(mesh, annotation)).expect("write the case");
        let out = tessera(work.path(), &["opt", &file]);
        assert!(!out.stderr.contains("panicked"), "{name}: {}", out.stderr);
        let line = match out.code {
            0 => out.stdout.lines().next().unwrap_or_default().to_string(),
            1 => out.stderr.lines().next().unwrap_or_default().to_string(),
            code => panic!("{name}: exit status {code}: {}", out.stderr),
        };
        report.push_str(&format!("{name}: {line}\n"));
    }
    insta::assert_snapshot!(report);
}

/// An imported sharding whose axis the shard mesh sizes differently is an error naming both.
#[test]
fn an_imported_sharding_over_another_mesh_is_refused_by_shard() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let model = sharded_fixture("sharded_mlp.stablehlo.mlir").to_string_lossy().into_owned();
    let out = tessera(work.path(), &["opt", &model, "--pipeline", "shard{mesh=x=4,y=1}"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let message = out.stderr.replace(&model, "MODEL");
    insta::assert_snapshot!(message.trim_end());
}

/// `x.at[idx].max(v)`, `.min(v)` and `.multiply(v)` as JAX lowers them (scatters whose update
/// regions are `maximum`, `minimum`, `multiply`; index 1 repeated, so updates combine with each
/// other too; tests/fixtures/stablehlo/scatter_combine from scripts/stablehlo/
/// generate_scatter_combine.py) match JAX in the interpreter and compiled CPU, and export back
/// to XLA with the same outputs.
#[test]
fn scatter_max_min_and_multiply_match_jax_interpreted_and_compiled() {
    let case = sharded_fixture("scatter_combine");
    let model = case.join("pretty.stablehlo.mlir");
    let model_arg = model.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&model).expect("the scatter fixture");
    let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{e}"));
    let reductions: Vec<String> = graph
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            tessera_ir::ops::Op::Scatter { reduction, .. } => Some(reduction.mnemonic().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(reductions, ["max", "min", "mul"]);
    let work = tempfile::tempdir().expect("a temporary directory");
    let (inputs, _) = run_args(&model, &case);
    assert_eq!(check_run(work.path(), "scatter_combine interpreter", &model_arg, &inputs, &case), 3);
    let artifact = work.path().join("artifact").to_string_lossy().into_owned();
    let compiled = tessera(work.path(), &["compile", &model_arg, "--target", "cpu", "-o", &artifact]);
    assert_eq!(compiled.code, 0, "tessera compile failed: {}", compiled.stderr);
    assert_eq!(check_run(work.path(), "scatter_combine compiled", &artifact, &inputs, &case), 3);
    if jax_venv_present() {
        let error = round_trip_error(&model_arg, &[]);
        assert!(error <= TOLERANCE, "XLA differs from tessera by {error:.3e}");
    }
}

/// Issue 19's last forms, as JAX 0.10.2 lowers them (tests/fixtures/stablehlo, written by
/// scripts/stablehlo/generate_indexing_cases.py): `lax.switch` on a run-time index with
/// operands (a `case` whose branches read the function's values), `jnp.take_along_axis` and a
/// `vmap`ped row lookup (gathers with operand batching dimensions), `x.at[i, j].set(v)` and
/// `.add(v)` (scatters with a 2-element index vector). Each matches JAX interpreted and
/// compiled, and exports back to XLA with tessera's outputs.
#[test]
fn switch_with_operands_and_general_gathers_and_scatters_match_jax() {
    let cases = [
        ("switch_operands", 2, "if"),
        ("take_along_axis", 1, "gather"),
        ("set_2d", 2, "scatter"),
        ("vmap_gather", 1, "gather"),
    ];
    for (name, outputs, op) in cases {
        let case = sharded_fixture(name);
        let model = case.join("pretty.stablehlo.mlir");
        let model_arg = model.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&model).expect("the fixture");
        let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(graph.nodes().any(|(_, n)| n.op.mnemonic() == op), "{name} imports with a tsr.{op}");
        let work = tempfile::tempdir().expect("a temporary directory");
        let (inputs, _) = run_args(&model, &case);
        assert_eq!(check_run(work.path(), &format!("{name} interpreter"), &model_arg, &inputs, &case), outputs);
        let artifact = work.path().join("artifact").to_string_lossy().into_owned();
        let compiled = tessera(work.path(), &["compile", &model_arg, "--target", "cpu", "-o", &artifact]);
        assert_eq!(compiled.code, 0, "{name}: tessera compile failed: {}", compiled.stderr);
        assert_eq!(check_run(work.path(), &format!("{name} compiled"), &artifact, &inputs, &case), outputs);
        if jax_venv_present() {
            let error = round_trip_error_fed(&model_arg, &[], Some(&case));
            assert!(error <= TOLERANCE, "{name}: XLA differs from tessera by {error:.3e}");
        }
    }
}

/// Wrong dimension numbers of the general gather/scatter forms (the fixtures with one number
/// changed): a located error naming them, exit 1.
#[test]
fn malformed_general_gathers_and_scatters_are_located_errors() {
    let fixture =
        |name: &str| std::fs::read_to_string(sharded_fixture(name).join("pretty.stablehlo.mlir")).expect("fixture");
    let cases = [
        (
            "batching_unpaired",
            fixture("take_along_axis")
                .replace("start_indices_batching_dims = [0]", "start_indices_batching_dims = [0, 1]"),
        ),
        (
            "batching_is_the_index_vector",
            fixture("vmap_gather").replace("start_indices_batching_dims = [0]", "start_indices_batching_dims = [2]"),
        ),
        (
            "slice_larger_than_operand",
            fixture("vmap_gather").replace("slice_sizes = array<i64: 1, 1, 2>", "slice_sizes = array<i64: 1, 1, 3>"),
        ),
        (
            "index_map_repeats",
            fixture("set_2d").replacen(
                "scatter_dims_to_operand_dims = [0, 1]",
                "scatter_dims_to_operand_dims = [1, 1]",
                1,
            ),
        ),
        (
            "index_map_too_short",
            fixture("set_2d").replacen(
                "scatter_dims_to_operand_dims = [0, 1]",
                "scatter_dims_to_operand_dims = [0]",
                1,
            ),
        ),
    ];
    let work = tempfile::tempdir().expect("a temporary directory");
    let lines = stablehlo_error_lines(work.path(), &cases);
    insta::assert_snapshot!(lines.iter().map(|line| format!("{line}\n")).collect::<String>());
}
