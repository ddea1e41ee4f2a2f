//! Range artifacts end to end (`tessera compile --dim NAME=LO..HI`): one artifact run at several
//! sizes against the interpreter, the recorded dims, and located refusals of sizes out of range,
//! inputs that disagree, bad specs, targets that cannot take ranges, and an `If` the sizes decide.

use crate::artifact::assert_close;
use crate::support::tessera;
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy::{read_npy, write_npy};

/// `y = tanh((x * z) @ w)` with x, z: batch x seq and w: seq x 8, and `g = tanh(h)` with a
/// `heads` dimension the tests pin.
const MODEL: &str = r#"func.func @m(%x: tensor<?x?xf32, ["batch", "seq"]>, %z: tensor<?x?xf32, ["batch", "seq"]>, %w: tensor<?x8xf32, ["seq"]>, %h: tensor<?x8xf32, ["heads"]>) -> (tensor<?x8xf32, ["batch"]>, tensor<?x8xf32, ["heads"]>) {
  %a = "tsr.mul"(%x, %z) : (tensor<?x?xf32, ["batch", "seq"]>, tensor<?x?xf32, ["batch", "seq"]>) -> tensor<?x?xf32, ["batch", "seq"]>
  %m = "tsr.matmul"(%a, %w) : (tensor<?x?xf32, ["batch", "seq"]>, tensor<?x8xf32, ["seq"]>) -> tensor<?x8xf32, ["batch"]>
  %y = "tsr.tanh"(%m) : (tensor<?x8xf32, ["batch"]>) -> tensor<?x8xf32, ["batch"]>
  %g = "tsr.tanh"(%h) : (tensor<?x8xf32, ["heads"]>) -> tensor<?x8xf32, ["heads"]>
  return %y, %g : tensor<?x8xf32, ["batch"]>, tensor<?x8xf32, ["heads"]>
}
"#;

fn tensor(shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f64(DType::F32, shape.to_vec(), (0..n).map(|i| ((i * 7 % 13) as f64 - 6.0) * scale).collect())
}

/// Writes the inputs at (batch, seq), z's seq `z_seq`, as `PREFIX-NAME.npy` and returns the
/// `--input` arguments.
fn write_inputs(cwd: &Path, prefix: &str, batch: usize, seq: usize, z_seq: usize) -> Vec<String> {
    let inputs = [
        ("x", tensor(&[batch, seq], 0.1)),
        ("z", tensor(&[batch, z_seq], 0.2)),
        ("w", tensor(&[seq, 8], 0.05)),
        ("h", tensor(&[2, 8], 0.3)),
    ];
    let mut args = Vec::new();
    for (name, t) in inputs {
        let file = format!("{prefix}-{name}.npy");
        write_npy(&cwd.join(&file), &t).expect("write input");
        args.extend(["--input".to_string(), format!("{name}={file}")]);
    }
    args
}

fn run(cwd: &Path, model: &str, inputs: &[String], out: &str) -> crate::support::Outcome {
    let mut args = vec!["run", model];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["-o", out]);
    tessera(cwd, &args)
}

#[test]
fn one_range_artifact_runs_at_every_size_and_matches_the_interpreter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    std::fs::write(cwd.join("m.mlir"), MODEL).expect("write model");
    let compile = ["compile", "m.mlir", "--dim", "seq=1..16", "--dim", "heads=2", "--dim", "batch=2..4", "-o", "art"];
    let out = tessera(cwd, &compile);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("a range artifact for batch=2..4, seq=1..16"), "{}", out.stdout);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.join("art/manifest.json")).expect("manifest")).expect("json");
    let recorded = serde_json::json!({
        "format_version": manifest["format_version"],
        "options": manifest["options"],
        "program": manifest["ranks"][0]["program"],
        "dims": manifest["dims"],
    });
    insta::assert_snapshot!("range_artifact_recorded_dims", serde_json::to_string_pretty(&recorded).expect("json"));

    for (batch, seq) in [(2, 1), (4, 16), (3, 5)] {
        let inputs = write_inputs(cwd, &format!("{batch}x{seq}"), batch, seq, seq);
        let ranged = run(cwd, "art", &inputs, &format!("r-{batch}x{seq}"));
        assert_eq!(ranged.code, 0, "{}", ranged.stderr);
        let mut reference_inputs = inputs.clone();
        reference_inputs.extend(["--dim".to_string(), "heads=2".to_string()]);
        let reference = run(cwd, "m.mlir", &reference_inputs, &format!("i-{batch}x{seq}"));
        assert_eq!(reference.code, 0, "{}", reference.stderr);
        for output in ["y", "g"] {
            let got = read_npy(&cwd.join(format!("r-{batch}x{seq}/{output}.npy"))).expect("range output");
            let want = read_npy(&cwd.join(format!("i-{batch}x{seq}/{output}.npy"))).expect("reference output");
            assert_close(&got, &want, &format!("{output} at batch {batch}, seq {seq}"));
        }
        let y = read_npy(&cwd.join(format!("r-{batch}x{seq}/y.npy"))).expect("y");
        assert_eq!(y.shape, vec![batch, 8]);
    }

    // Several runs at one size compile it once: the program is cached by its sizes.
    let mut repeated = write_inputs(cwd, "again", 3, 5, 5);
    repeated.extend(["--timing", "--repeat", "3"].map(String::from));
    let again = run(cwd, "art", &repeated, "again");
    assert_eq!(again.code, 0, "{}", again.stderr);
    let compiles: Vec<&str> = again.stderr.lines().filter(|l| l.starts_with("range artifact: compiled at ")).collect();
    assert_eq!(compiles.len(), 1, "{}", again.stderr);
    assert!(compiles[0].starts_with("range artifact: compiled at batch=3, seq=5 in "), "{}", again.stderr);
    assert!(again.stderr.contains("range artifact (compiled per size), 3 runs"), "{}", again.stderr);
}

#[test]
fn sizes_out_of_range_and_inputs_that_disagree_are_located_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    std::fs::write(cwd.join("m.mlir"), MODEL).expect("write model");
    let out = tessera(
        cwd,
        &["compile", "m.mlir", "--dim", "batch=2..4", "--dim", "seq=1..16", "--dim", "heads=2", "-o", "art"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // (input files' name, batch, seq of x, seq of z, the error the run must name)
    let refused = [
        (
            "big",
            5,
            3,
            3,
            "input 'x', dimension 0: symbolic dimension 'batch' is 5, outside the artifact's range batch=2..4",
        ),
        ("long", 2, 17, 17, "symbolic dimension 'seq' is 17, outside the artifact's range seq=1..16"),
        (
            "bad",
            2,
            3,
            4,
            "inconsistent input sizes: dimension 1 of input 'z' is seq = 3 (with seq = 3), but the tensor given has 4",
        ),
    ];
    for (i, (name, batch, seq_x, seq_z, expected)) in refused.into_iter().enumerate() {
        let inputs = write_inputs(cwd, name, batch, seq_x, seq_z);
        let out = run(cwd, "art", &inputs, &format!("o{}", i + 1));
        assert_eq!(out.code, 1, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
    }
    assert!(!cwd.join("o3").exists(), "a refused run wrote outputs");
}

#[test]
fn bad_range_specs_and_targets_without_ranges_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    std::fs::write(cwd.join("m.mlir"), MODEL).expect("write model");
    let cases: [(&[&str], &str); 6] = [
        (&["--dim", "batch=4..2"], "--dim 'batch=4..2': the range is empty (4 > 2)"),
        (&["--dim", "batch=0..2"], "a range is LO..HI with positive integers LO <= HI"),
        (&["--dim", "batch=1..x"], "a range is LO..HI with positive integers LO <= HI"),
        (&["--dim", "batch=1..2", "--dim", "batch=3"], "--dim 'batch' is given twice"),
        (&["--dim", "bacth=1..2"], "--dim bacth: the model has no symbolic dimension 'bacth'"),
        (
            &["--dim", "batch=1..2", "--dim", "heads=2"],
            "input %x has symbolic dimension 'seq': give its size with --dim seq=N",
        ),
    ];
    for (dims, message) in cases {
        let mut args = vec!["compile", "m.mlir", "-o", "art"];
        args.extend(dims);
        let out = tessera(cwd, &args);
        assert_eq!(out.code, 1, "{dims:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{dims:?}: {}", out.stderr);
        assert!(!cwd.join("art").exists(), "{dims:?}: a refused compile wrote the artifact");
    }
    let cuda = [
        "compile",
        "m.mlir",
        "--target",
        "cuda:sm_90",
        "--dim",
        "batch=1..2",
        "--dim",
        "seq=3",
        "--dim",
        "heads=2",
        "-o",
        "art",
    ];
    let out = tessera(cwd, &cuda);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("a range artifact runs on the CPU only"), "{}", out.stderr);
}

/// A model whose shape arithmetic holds at one size only (`tests/fixtures/range-pin/`: x [batch,
/// width] reshaped to [batch, 4]) gets no range artifact while `width` ranges, since it imports
/// only with width bound; with the one-size range `width=4..4` the compile binds it at import,
/// says so, and the artifact runs at every batch in range (tanh of the input, checked by value)
/// and refuses another width naming the declared type.
#[test]
fn a_one_size_range_is_bound_at_import_where_the_symbolic_import_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let model = crate::support::repo_root().join("tests/fixtures/range-pin/width-must-be-4.onnx");
    let model = model.to_string_lossy().into_owned();
    let free = tessera(cwd, &["compile", &model, "--dim", "batch=1..3", "--dim", "width=4..8", "-o", "free"]);
    assert_eq!(free.code, 1, "{}", free.stderr);
    assert!(
        free.stderr.contains("a range artifact needs the model to import with symbolic dimensions")
            && free.stderr.contains("element counts differ (batch * width vs 4 * batch)"),
        "{}",
        free.stderr
    );
    let pinned = tessera(cwd, &["compile", &model, "--dim", "batch=1..3", "--dim", "width=4..4", "-o", "art"]);
    assert_eq!(pinned.code, 0, "{}", pinned.stderr);
    assert!(pinned.stderr.contains("note: imported with width=4 bound"), "{}", pinned.stderr);
    assert!(pinned.stdout.contains("a range artifact for batch=1..3"), "{}", pinned.stdout);
    for batch in [1, 3] {
        let x = tensor(&[batch, 4], 0.2);
        write_npy(&cwd.join("x.npy"), &x).expect("write input");
        let out = format!("out{batch}");
        let ran = run(cwd, "art", &["--input".to_string(), "x=x.npy".to_string()], &out);
        assert_eq!(ran.code, 0, "batch {batch}: {}", ran.stderr);
        let y = read_npy(&cwd.join(&out).join("y.npy")).expect("read output");
        let expected: Vec<f64> = x.to_f64_vec().iter().map(|v| v.tanh()).collect();
        assert_close(&y, &Tensor::from_f64(DType::F32, vec![batch, 4], expected), &format!("batch {batch}"));
    }
    write_npy(&cwd.join("x5.npy"), &tensor(&[2, 5], 0.2)).expect("write input");
    let wrong = run(cwd, "art", &["--input".to_string(), "x=x5.npy".to_string()], "out5");
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains(r#"input 'x' is declared tensor<?x4xf32, ["batch"]> but the tensor given has shape [2, 5]"#),
        "{}",
        wrong.stderr
    );
}

/// An `If` whose condition the sizes decide (`tests/fixtures/size-if/`: `x + x` when x's width is
/// 4, else `-x`, the condition `Equal(Gather(Shape(x), 1), 4)`) imports once as a run-time
/// conditional: `tessera run` takes each branch by the width it is given, with no bound
/// re-import, and one range artifact over the width does the same at both widths, each size's
/// program compiled with the conditional folded to its branch (no reference step).
#[test]
fn an_if_the_sizes_decide_runs_each_branch_from_one_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let model = crate::support::repo_root().join("tests/fixtures/size-if/doubled-when-four-wide.onnx");
    let model = model.to_string_lossy().into_owned();
    let compiled = tessera(cwd, &["compile", &model, "--dim", "batch=1..2", "--dim", "width=3..4", "-o", "art"]);
    assert_eq!(compiled.code, 0, "{}", compiled.stderr);
    assert!(!compiled.stderr.contains("note: imported with"), "{}", compiled.stderr);
    for (width, factor) in [(4, 2.0), (3, -1.0)] {
        let x = tensor(&[2, width], 0.2);
        write_npy(&cwd.join("x.npy"), &x).expect("write input");
        let expected =
            Tensor::from_f64(DType::F32, vec![2, width], x.to_f64_vec().iter().map(|v| v * factor).collect());
        for (model, out) in [(model.as_str(), format!("run{width}")), ("art", format!("art{width}"))] {
            let mut inputs = vec!["--input".to_string(), "x=x.npy".to_string()];
            if model == "art" {
                inputs.push("--timing".to_string());
            }
            let ran = run(cwd, model, &inputs, &out);
            assert_eq!(ran.code, 0, "{model} at width {width}: {}", ran.stderr);
            if model == "art" {
                assert!(ran.stderr.contains(", 0 reference steps"), "width {width}: {}", ran.stderr);
            }
            assert!(!ran.stderr.contains("note: imported with"), "{model} at width {width}: {}", ran.stderr);
            let y = read_npy(&cwd.join(&out).join("y.npy")).expect("read output");
            assert_close(&y, &expected, &format!("{model} at width {width}"));
        }
    }
}
