//! `artifact::compile_to_dir` (weights written on a second thread while the kernels compile)
//! against `compile` + `write_artifact`: the same files byte for byte, and the same refusal of
//! a destination that is not an artifact, leaving nothing behind.

use std::collections::BTreeMap;
use std::path::Path;
use tessera_codegen::artifact::{compile, compile_to_dir, input_hash, write_artifact, CompileOptions};
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, f32s, input};

/// Elements of the large weight: 36 MiB of f32, more than one write-back step (32 MiB) of the
/// weights file, and not a whole number of streaming pieces.
const LARGE: usize = 9 * (1 << 20) + 5;

/// `y = x + w` and `z = x * v` over a large weight `w` and a small one `v`, with distinct values
/// so that a misplaced or reordered byte changes the file.
fn weighted_graph() -> Graph {
    let mut g = Graph::new("weighted");
    let x = input(&mut g, "x", f32s(&[LARGE as u64]));
    let w = Tensor::from_f32(vec![LARGE], (0..LARGE).map(|i| (i % 1000) as f32 * 0.5 - 3.0).collect());
    let w = add(&mut g, Op::Constant(w), &[]);
    let y = add(&mut g, Op::Binary(BinaryOp::Add), &[x, w]);
    let small = add(&mut g, Op::Constant(Tensor::from_f32(vec![3], vec![1.5, -2.0, 0.25])), &[]);
    let x3 = input(&mut g, "x3", f32s(&[3]));
    let z = add(&mut g, Op::Binary(BinaryOp::Mul), &[x3, small]);
    g.set_outputs(vec![y, z]);
    g
}

/// Every file under `dir` by relative path, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir").to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

fn cpu_options() -> CompileOptions {
    CompileOptions::cpu()
}

#[test]
fn compile_to_dir_writes_the_files_compile_and_write_artifact_write() {
    let graph = weighted_graph();
    let options = cpu_options();
    let model_bytes = b"weighted graph";
    let scratch = tempfile::tempdir().expect("temporary directory");
    let (one_pass, two_steps) = (scratch.path().join("one-pass"), scratch.path().join("two-steps"));

    let compiled =
        compile_to_dir(&graph, input_hash(model_bytes, &options), &options, &one_pass).expect("compile_to_dir");
    let reference = compile(&graph, model_bytes, &options).expect("compile");
    write_artifact(&two_steps, &reference.files).expect("write_artifact");

    assert_eq!(compiled.files, reference.files, "the artifact in memory differs");
    let (written, expected) = (files_under(&one_pass), files_under(&two_steps));
    assert_eq!(written.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (rel, bytes) in &expected {
        assert!(written[rel] == *bytes, "{rel} differs");
    }
    // The weights file holds both weights (more than one write-back step).
    let weights = &written["rank0/weights.bin"];
    assert!(weights.len() >= LARGE * 4 + 12, "weights.bin has {} bytes", weights.len());
    // Only the published artifact is left: no staging directory beside it.
    let names: Vec<String> = std::fs::read_dir(scratch.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "left beside the artifacts: {names:?}");
}

#[test]
fn compile_to_dir_refuses_a_directory_that_is_not_an_artifact_and_leaves_it_alone() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let dest = scratch.path().join("notes");
    std::fs::create_dir(&dest).expect("create");
    std::fs::write(dest.join("todo.txt"), b"keep me").expect("write");
    let options = cpu_options();
    let refused = compile_to_dir(&weighted_graph(), input_hash(b"m", &options), &options, &dest);
    let message = refused.expect_err("a directory of other files is refused").to_string();
    assert!(message.contains("is not a complete tessera artifact"), "{message}");
    assert_eq!(std::fs::read(dest.join("todo.txt")).expect("still there"), b"keep me");
    let entries = std::fs::read_dir(scratch.path()).expect("read").count();
    assert_eq!(entries, 1, "nothing but the refused directory is left");
}
