//! The CLI on the example models: round trips, MLIR acceptance, runs against hand computation.

use crate::support::{example, files_in, tessera};
use tessera_ir::dtype::DType;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy;

const EXAMPLES: [&str; 3] = ["mlp.mlir", "transformer_block.mlir", "cnn.mlir"];

#[test]
fn version_names_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.trim(), format!("tessera {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn examples_print_as_text_mlir_accepts_and_reprint_identically() {
    let dir = tempfile::tempdir().unwrap();
    for name in EXAMPLES {
        let printed = dir.path().join(name);
        let printed = printed.to_str().unwrap();
        let first = tessera(dir.path(), &["opt", "--check-mlir", &example(name), "-o", printed]);
        assert_eq!(first.code, 0, "{name}: {}", first.stderr);
        let second = tessera(dir.path(), &["opt", "--check-mlir", printed]);
        assert_eq!(second.code, 0, "{name}: {}", second.stderr);
        assert_eq!(second.stdout, std::fs::read_to_string(printed).unwrap(), "{name} is not a fixed point");
    }
}

#[test]
fn json_form_round_trips_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("block.json");
    let json = json.to_str().unwrap();
    let to_json = tessera(dir.path(), &["opt", "--emit", "json", &example("transformer_block.mlir"), "-o", json]);
    assert_eq!(to_json.code, 0, "{}", to_json.stderr);
    let from_json = tessera(dir.path(), &["opt", json]);
    let direct = tessera(dir.path(), &["opt", &example("transformer_block.mlir")]);
    assert_eq!(from_json.code, 0, "{}", from_json.stderr);
    assert_eq!(from_json.stdout, direct.stdout);
}

#[test]
fn opt_reports_timing_and_prints_ir_after_every_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(
        dir.path(),
        &["opt", "--pipeline", "canonicalize,cse,dce", "--timing", "--print-ir-after-all", &example("mlp.mlir")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for pass in ["canonicalize", "cse", "dce"] {
        assert!(out.stderr.contains(&format!("IR Dump After {pass}")), "{}", out.stderr);
    }
    assert!(out.stdout.starts_with("func.func @mlp("), "{}", out.stdout);
}

/// Exact GELU through erf, with erf from its Maclaurin series (converges fast for |x| < 3,
/// far beyond what the test inputs reach); independent of the interpreter's own erf.
fn gelu_reference(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    assert!(z.abs() < 3.0);
    let (mut term, mut sum) = (z, z);
    for n in 1..80 {
        term *= -z * z / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    0.5 * x * (1.0 + sum * 2.0 / std::f64::consts::PI.sqrt())
}

fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

#[test]
fn mlp_run_matches_a_hand_written_computation() {
    let dir = tempfile::tempdir().unwrap();
    let batch = 3;
    let shapes: [(&str, Vec<usize>); 5] =
        [("x", vec![batch, 32]), ("w1", vec![32, 64]), ("b1", vec![64]), ("w2", vec![64, 10]), ("b2", vec![10])];
    let mut args = vec!["run".to_string(), example("mlp.mlir")];
    let mut values = Vec::new();
    for (name, shape) in &shapes {
        // Halved so pre-activations stay well inside the range the erf series below handles.
        let t = uniform_tensor(&mut SplitMix64::for_name(11, name), DType::F32, shape.clone());
        let t = Tensor::from_f64(DType::F32, t.shape.clone(), t.to_f64_vec().iter().map(|v| v * 0.5).collect());
        let path = dir.path().join(format!("{name}.npy"));
        std::fs::write(&path, npy::write_npy_bytes(&t)).unwrap();
        args.push("--input".into());
        args.push(format!("{name}={}", path.display()));
        values.push(t.to_f64_vec());
    }
    args.extend(["-o".into(), "out".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(files_in(&dir.path().join("out")), ["logits.npy"]);

    let [x, w1, b1, w2, b2] = [&values[0], &values[1], &values[2], &values[3], &values[4]];
    let f32_round = |v: f64| v as f32 as f64;
    let mut h = matmul(x, w1, batch, 32, 64);
    for (i, v) in h.iter_mut().enumerate() {
        *v = f32_round(gelu_reference(f32_round(f32_round(*v) + b1[i % 64])));
    }
    let mut expected = matmul(&h, w2, batch, 64, 10);
    for (i, v) in expected.iter_mut().enumerate() {
        *v = f32_round(*v) + b2[i % 10];
    }
    let logits = npy::read_npy(&dir.path().join("out/logits.npy")).unwrap();
    assert_eq!(logits.dtype, DType::F32);
    assert_eq!(logits.shape, vec![batch, 10]);
    for (got, want) in logits.to_f64_vec().iter().zip(&expected) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "got {got}, want {want}");
    }
}

#[test]
fn seeded_random_runs_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    for out_dir in ["a", "b"] {
        let out = tessera(
            dir.path(),
            &["run", &example("transformer_block.mlir"), "--random-inputs", "5", "--dim", "batch=2", "-o", out_dir],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let a = std::fs::read(dir.path().join("a/y.npy")).unwrap();
    let b = std::fs::read(dir.path().join("b/y.npy")).unwrap();
    assert_eq!(a, b);
    let y: Tensor = npy::read_npy(&dir.path().join("a/y.npy")).unwrap();
    assert_eq!(y.shape, vec![2, 8, 64]);
    assert!(y.to_f64_vec().iter().all(|v| v.is_finite()));
}

#[test]
fn cnn_runs_on_random_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        tessera(dir.path(), &["run", &example("cnn.mlir"), "--random-inputs", "1", "--dim", "batch=2", "-o", "o"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let logits = npy::read_npy(&dir.path().join("o/logits.npy")).unwrap();
    assert_eq!(logits.shape, vec![2, 10]);
}

#[test]
fn info_summarizes_the_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["info", &example("mlp.mlir"), "--dim", "batch=4"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn info_counts_unbound_symbols_as_one_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["info", &example("mlp.mlir")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr.trim(), "note: symbolic dimension 'batch' counted as 1 (set it with --dim batch=N)");
    assert!(out.stdout.contains("symbolic dims      batch=1"), "{}", out.stdout);
}

#[test]
fn explain_lists_the_rules_that_fired_and_the_cost() {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::support::repo_root().join("tests/data/egraph/qkv-merge.mlir");
    let out = tessera(dir.path(), &["opt", "--pipeline", "egraph", "--explain", model.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.starts_with("egraph: 3 -> "), "{}", out.stderr);
    let counter = |name: &str| -> u64 {
        let line = out.stderr.lines().find(|l| l.trim_start().starts_with(&format!("{name} = "))).unwrap_or("");
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name}: {}", out.stderr))
    };
    assert!(counter("rule.matmul-merge-rhs") > 0);
    assert!(counter("egraph.cost-after-ns") < counter("egraph.cost-before-ns"));
    assert_eq!(out.stdout.matches("\"tsr.matmul\"").count(), 1, "{}", out.stdout);
}
