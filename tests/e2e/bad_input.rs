//! Every kind of bad input gives one located error line, exit code 1, no panic and no output.

use crate::support::{example, files_in, tessera};
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy;

/// Runs `args` in a fresh directory holding `files`, and checks the failure contract: exit code
/// 1, a single `error: ...` line on stderr that contains `expected`, and no files created.
fn assert_fails(files: &[(&str, Vec<u8>)], args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let before = files_in(dir.path());
    let out = tessera(dir.path(), args);
    assert_eq!(out.code, 1, "{args:?} should fail with code 1; stderr: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{args:?} panicked: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(lines[0].contains(expected), "{args:?}: expected '{expected}' in: {}", lines[0]);
    assert_eq!(lines[0].matches(expected).count(), 1, "{args:?}: the message repeats itself: {}", lines[0]);
    assert_eq!(files_in(dir.path()), before, "{args:?} left files behind");
    assert!(out.stdout.is_empty(), "{args:?} printed output: {}", out.stdout);
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn npy_of(dtype: DType, shape: Vec<usize>) -> Vec<u8> {
    npy::write_npy_bytes(&Tensor::zeros(dtype, shape))
}

const HEADER: &str = "func.func @f(%x: tensor<2x3xf32>, %w: tensor<4x5xf32>) -> (tensor<2x3xf32>) {\n";

#[test]
fn malformed_text_is_located() {
    let bad = format!(
        "{HEADER}  %y = \"tsr.exp\"(%x : (tensor<2x3xf32>) -> tensor<2x3xf32>\n  return %y : tensor<2x3xf32>\n}}\n"
    );
    assert_fails(&[("bad.mlir", text(&bad))], &["opt", "bad.mlir", "-o", "out.mlir"], "bad.mlir:2:");
}

#[test]
fn truncated_text_is_located() {
    let bad = format!("{HEADER}  %y = \"tsr.exp\"(%x) : (tensor<2x3xf32>) -> tens");
    assert_fails(&[("cut.mlir", text(&bad))], &["opt", "cut.mlir", "-o", "out.mlir"], "cut.mlir:2:");
}

#[test]
fn unknown_op_is_named_and_located() {
    let bad = format!("{HEADER}  %y = \"tsr.frobnicate\"(%x) : (tensor<2x3xf32>) -> tensor<2x3xf32>\n  return %y : tensor<2x3xf32>\n}}\n");
    assert_fails(&[("bad.mlir", text(&bad))], &["opt", "bad.mlir"], "bad.mlir:2:8: unknown op 'tsr.frobnicate'");
}

#[test]
fn shape_mismatch_names_the_node_and_location() {
    let bad = format!("{HEADER}  %y = \"tsr.matmul\"(%x, %w) : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x5xf32>\n  return %x : tensor<2x3xf32>\n}}\n");
    assert_fails(
        &[("bad.mlir", text(&bad))],
        &["info", "bad.mlir"],
        "bad.mlir:2:8: %y = tsr.matmul: contracting dimensions differ",
    );
}

#[test]
fn ill_typed_result_is_reported() {
    let bad = format!(
        "{HEADER}  %y = \"tsr.exp\"(%x) : (tensor<2x3xf32>) -> tensor<3x2xf32>\n  return %x : tensor<2x3xf32>\n}}\n"
    );
    assert_fails(
        &[("bad.mlir", text(&bad))],
        &["opt", "bad.mlir", "-o", "o.mlir"],
        "bad.mlir:2:8: %y = tsr.exp: result 0 is declared",
    );
}

#[test]
fn undefined_value_is_located() {
    let bad = format!(
        "{HEADER}  %y = \"tsr.exp\"(%q) : (tensor<2x3xf32>) -> tensor<2x3xf32>\n  return %y : tensor<2x3xf32>\n}}\n"
    );
    assert_fails(&[("bad.mlir", text(&bad))], &["opt", "bad.mlir"], "bad.mlir:2:");
}

#[test]
fn missing_model_file() {
    assert_fails(&[], &["info", "absent.mlir"], "absent.mlir: cannot read: No such file or directory (os error 2)");
    assert_fails(&[], &["info", "absent.onnx"], "No such file or directory (os error 2)");
}

#[test]
fn unsupported_model_extension() {
    assert_fails(&[("model.txt", text("hello"))], &["info", "model.txt"], "model.txt: unsupported model format");
}

#[test]
fn malformed_json_is_located() {
    assert_fails(&[("g.json", text("{\"name\": \"g\",\n \"values\": [}"))], &["opt", "g.json"], "g.json:2:");
}

#[test]
fn json_with_dangling_ids_is_rejected() {
    let json = r#"{"name":"g","values":[],"nodes":[],"inputs":[],"outputs":[7]}"#;
    assert_fails(&[("g.json", text(json))], &["opt", "g.json"], "refers to value v7");
}

#[test]
fn missing_input_file() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[],
        &["run", &mlp, "--input", "x=nothere.npy", "-o", "out"],
        "nothere.npy: No such file or directory (os error 2)",
    );
}

#[test]
fn input_with_wrong_dtype() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[("x.npy", npy_of(DType::I64, vec![2, 32]))],
        &["run", &mlp, "--input", "x=x.npy", "--random-inputs", "1", "-o", "out"],
        "x=x.npy",
    );
}

#[test]
fn input_with_wrong_shape() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[("x.npy", npy_of(DType::F32, vec![2, 31]))],
        &["run", &mlp, "--input", "x=x.npy", "--random-inputs", "1", "-o", "out"],
        "input 'x' is declared tensor<?x32xf32, [\"batch\"]> but the tensor given has shape [2, 31]",
    );
}

#[test]
fn input_not_given() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[("x.npy", npy_of(DType::F32, vec![2, 32]))],
        &["run", &mlp, "--input", "x=x.npy", "-o", "out"],
        "w1",
    );
}

#[test]
fn input_that_the_model_lacks() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[("x.npy", npy_of(DType::F32, vec![2, 32]))],
        &["run", &mlp, "--input", "z=x.npy", "-o", "out"],
        "the model has no input of that name",
    );
}

#[test]
fn garbage_npy_file() {
    let mlp = example("mlp.mlir");
    assert_fails(
        &[("x.npy", text("not an npy file at all"))],
        &["run", &mlp, "--input", "x=x.npy", "--random-inputs", "1", "-o", "out"],
        "x=x.npy",
    );
}

#[test]
fn random_inputs_need_symbolic_sizes() {
    let mlp = example("mlp.mlir");
    assert_fails(&[], &["run", &mlp, "--random-inputs", "1", "-o", "out"], "--dim");
}

#[test]
fn unknown_pass_in_pipeline() {
    let mlp = example("mlp.mlir");
    assert_fails(&[], &["opt", "--pipeline", "canonicalize,frobnicate", &mlp, "-o", "o.mlir"], "frobnicate");
}

#[test]
fn output_directory_is_not_created_on_failure() {
    let mlp = example("mlp.mlir");
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["run", &mlp, "-o", "out"]);
    assert_eq!(out.code, 1);
    assert!(!Path::new(&dir.path().join("out")).exists());
}

#[test]
fn random_bytes_as_onnx() {
    assert_fails(&[("m.onnx", vec![0x0a, 0xff, 0xff, 0x13, 0x07, 0x42])], &["import", "m.onnx"], "m.onnx");
}

#[test]
fn import_needs_an_onnx_file() {
    assert_fails(&[], &["import", &example("mlp.mlir")], "expected an .onnx file");
}

/// `-o` of `opt`, `import` and `plan` at a symlink, a FIFO and a device node: refused, nothing
/// replaced, no file created (the special file survives; the symlink's target is untouched).
#[test]
fn output_to_a_symlink_fifo_or_device_is_refused() {
    let mlp = example("mlp.mlir");
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("target.txt"), "precious").unwrap();
    std::os::unix::fs::symlink("target.txt", cwd.join("link")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(cwd.join("fifo")).status().unwrap().success());
    let plan_args = ["plan", "gpt2", "--cluster", "a100-80g-sxm:gpus=8", "--global-batch", "8"];
    let onnx = crate::support::repo_root().join(".cache/onnx-node-tests/test_abs/model.onnx");
    assert!(onnx.is_file(), "{} is missing: run scripts/fetch-onnx-tests.sh", onnx.display());
    let onnx = onnx.to_string_lossy().into_owned();
    // /dev/stdout is a symlink (to /proc/self/fd/1): refused like any other, where writing it
    // through a replacement file printed nothing.
    let specials = [
        ("link", "is a symbolic link"),
        ("fifo", "is a FIFO"),
        ("/dev/null", "is a device node"),
        ("/dev/stdout", "is a symbolic link"),
    ];
    for (out, kind) in specials {
        let opt: Vec<&str> = vec!["opt", &mlp, "-o", out];
        let import: Vec<&str> = vec!["import", &onnx, "-o", out];
        let plan: Vec<&str> = plan_args.iter().copied().chain(["-o", out]).collect();
        for args in [opt, import, plan] {
            let before = files_in(cwd);
            let got = tessera(cwd, &args);
            assert_eq!(got.code, 1, "{args:?}: {}", got.stderr);
            assert!(
                got.stderr.contains(kind) && got.stderr.contains("will not replace it"),
                "{args:?}: {}",
                got.stderr
            );
            assert_eq!(files_in(cwd), before, "{args:?} changed the directory");
        }
    }
    assert!(std::fs::symlink_metadata(cwd.join("link")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(cwd.join("target.txt")).unwrap(), "precious");
    // Without -o the text goes to standard output, the documented way to pipe it.
    let piped = tessera(cwd, &["opt", &mlp]);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(piped.stdout.contains("func.func"), "{}", piped.stdout);
}

/// `compile -o P` replaces only a complete artifact: a directory holding a file merely named
/// `manifest.json` (garbage, or a valid-looking manifest whose files are missing) is kept.
#[test]
fn compile_never_replaces_a_directory_that_is_not_a_complete_artifact() {
    let mlp = example("mlp.mlir");
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let compiled = tessera(cwd, &["compile", &mlp, "--dim", "batch=2", "-o", "art"]);
    assert_eq!(compiled.code, 0, "{}", compiled.stderr);
    let manifest = std::fs::read_to_string(cwd.join("art/manifest.json")).unwrap();
    for (name, text) in [("garbage", "hello, not json".to_string()), ("hollow", manifest)] {
        let victim = cwd.join(name);
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("manifest.json"), &text).unwrap();
        std::fs::write(victim.join("thesis.tex"), "years of work").unwrap();
        let got = tessera(cwd, &["compile", &mlp, "--dim", "batch=2", "-o", name]);
        assert_eq!(got.code, 1, "{name}: {}", got.stderr);
        assert!(got.stderr.contains("is not a complete tessera artifact"), "{name}: {}", got.stderr);
        assert_eq!(std::fs::read_to_string(victim.join("thesis.tex")).unwrap(), "years of work");
    }
    // A symlink to an artifact is not replaced either (its target would be).
    std::os::unix::fs::symlink("art", cwd.join("alias")).unwrap();
    let got = tessera(cwd, &["compile", &mlp, "--dim", "batch=2", "-o", "alias"]);
    assert_eq!(got.code, 1, "{}", got.stderr);
    assert!(got.stderr.contains("is a symbolic link"), "{}", got.stderr);
    // The complete artifact itself is replaced in place.
    let again = tessera(cwd, &["compile", &mlp, "--dim", "batch=2", "-o", "art"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A `.npy` file whose header declares `shape` of f32 but holds `data_bytes` bytes of data.
fn npy_declaring(shape: &str, data_bytes: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_bytes));
    bytes
}

/// Sizes from the input that would need more memory than the budget are refused with the
/// tensor's name and size, before anything is allocated (they aborted the process).
#[test]
fn huge_sizes_are_refused_with_the_tensor_and_its_size() {
    let mlp = example("mlp.mlir");
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), mlp.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--random-inputs".into(), "1".into(), "-o".into(), "out".into()]);
        args
    };
    let dim = run(&["--dim", "batch=1099511627776"]);
    assert_fails(
        &[],
        &as_strs(&dim),
        "random input %x needs 256.0 TiB (35184372088832 elements), more than the memory limit of",
    );
    let big = "func.func @f(%x: tensor<1099511627776xf32>) -> (tensor<1099511627776xf32>) {\n  %y = \"tsr.tanh\"(%x) : (tensor<1099511627776xf32>) -> tensor<1099511627776xf32>\n  return %y : tensor<1099511627776xf32>\n}\n";
    assert_fails(
        &[("big.mlir", text(big))],
        &["run", "big.mlir", "--random-inputs", "1", "-o", "out"],
        "random input %x needs 8.0 TiB (1099511627776 elements)",
    );
    // --max-memory lowers the limit: 64 rows of 32 f32 inputs are 16 KiB in the IR.
    let small = run(&["--dim", "batch=64"]);
    let mut limited = vec!["--max-memory".to_string(), "1K".to_string()];
    limited.extend(small.iter().cloned());
    assert_fails(
        &[],
        &as_strs(&limited),
        "random input %x needs 16.0 KiB (2048 elements), more than the memory limit of 1.0 KiB",
    );
    let usage = tessera(Path::new("."), &["--max-memory", "lots", "info", &mlp]);
    assert_eq!(usage.code, 2, "a malformed --max-memory is a usage error: {}", usage.stderr);
    assert!(usage.stderr.contains("'lots' is not a size like 8G, 512M or 1048576"), "{}", usage.stderr);
}

/// `.npy` inputs: a device or FIFO is not read at all, and a header's declared size is checked
/// against the file (and the budget) before the data is read.
#[test]
fn npy_inputs_are_checked_against_their_declared_size_before_reading() {
    let mlp = example("mlp.mlir");
    let args = |input: &str| -> Vec<String> {
        ["run", &mlp, "--input", input, "--random-inputs", "1", "-o", "out"].iter().map(|s| s.to_string()).collect()
    };
    assert_fails(&[], &as_strs(&args("x=/dev/zero")), "/dev/zero: not a regular file");
    assert_fails(
        &[("x.npy", npy_declaring("(1099511627776, 32)", 16))],
        &as_strs(&args("x=x.npy")),
        "truncated data: expected 140737488355328 bytes, got 16",
    );
    let limited: Vec<String> =
        ["--max-memory".to_string(), "1K".to_string()].into_iter().chain(args("x=x.npy")).collect();
    assert_fails(
        &[("x.npy", npy_declaring("(64, 32)", 64 * 32 * 4))],
        &as_strs(&limited),
        "the array in x.npy needs 16.0 KiB (2048 elements)",
    );
}

/// A `--dim` for a symbol the model lacks is an error naming the symbols it has (a typo was
/// silently ignored), in every command that takes `--dim`.
#[test]
fn dim_of_an_unknown_symbol_names_the_known_ones() {
    let mlp = example("mlp.mlir");
    let expected = "--dim nosuch: the model has no symbolic dimension 'nosuch' (its symbols: batch)";
    assert_fails(&[], &["info", &mlp, "--dim", "nosuch=3"], expected);
    assert_fails(&[], &["opt", &mlp, "--dim", "nosuch=3", "-o", "o.mlir"], expected);
    assert_fails(&[], &["run", &mlp, "--dim", "nosuch=3", "--random-inputs", "1", "-o", "out"], expected);
    assert_fails(&[], &["compile", &mlp, "--dim", "nosuch=3", "-o", "art"], expected);
}

/// A huge line of garbage (or a huge name) is quoted in part: the error stays one short line.
#[test]
fn huge_garbage_is_quoted_in_part() {
    let garbage = "a".repeat(10_000_000);
    assert_fails(
        &[("g.mlir", text(&garbage))],
        &["info", "g.mlir"],
        &format!("got '{}... (10000000 bytes)'", "a".repeat(200)),
    );
    let json = format!("{{\"nodes\": [\"{}\"]}}", "c".repeat(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g.json"), json).unwrap();
    let out = tessera(dir.path(), &["info", "g.json"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.len() < 1200, "{} bytes of error", out.stderr.len());
    assert!(out.stderr.contains("bytes omitted ..."), "{}", out.stderr);
}
