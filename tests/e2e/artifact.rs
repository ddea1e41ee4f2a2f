//! Ahead-of-time artifacts end to end: `tessera compile` then `tessera run DIR` against the
//! reference interpreter, determinism, atomicity, and refusal of damaged artifacts.

use crate::support::tessera;
use std::path::Path;
use std::sync::Arc;
use tessera_ir::dtype::DType;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;
use tessera_runtime::executor::cpu::{Bound, CpuExecutor, SharedInput};
use tessera_runtime::executor::load::{load, Artifact};
use tessera_runtime::executor::{ArtifactError, Feed, InputData};
use tessera_runtime::npy::{read_npy, read_npy_feed, write_npy};

/// A two-layer GPT in f32 with dropout (boolean keep-masks, casts), small enough for debug builds.
const GPT: &str = "gpt:layers=2,hidden=64,heads=4,seq=16,vocab=100,dtype=f32";

pub fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{what}: dtype and shape");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs() / (1e-5 + b.abs())).fold(0.0, f64::max);
    // f32 kernels against the f64 reference rounded to f32 after every op.
    assert!(worst < 1e-3, "{what}: largest relative difference {worst}");
}

pub fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("inside").to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// The kernel steps of an artifact per distinct kernel, in order of first launch: `symbol
/// launches`, then the total. The two layers of a GPT launch the same kernels.
fn kernel_table(artifact: &Path) -> String {
    use tessera_ir::artifact::{Program, Step};
    let program: Program =
        serde_json::from_slice(&std::fs::read(artifact.join("rank0/program.json")).expect("program")).expect("parse");
    let mut table: Vec<(&str, usize)> = Vec::new();
    for step in &program.steps {
        if let Step::Kernel { symbol, .. } = step {
            match table.iter_mut().find(|(s, _)| s == symbol) {
                Some((_, n)) => *n += 1,
                None => table.push((symbol, 1)),
            }
        }
    }
    let launches: usize = table.iter().map(|(_, n)| n).sum();
    assert!(table.len() < launches, "no kernel is shared: {table:?}");
    let mut text: String = table.iter().map(|(s, n)| format!("{s} {n}\n")).collect();
    text.push_str(&format!("{} distinct kernels, {launches} kernel steps\n", table.len()));
    text
}

#[test]
fn compiled_gpt_gives_the_interpreters_outputs_and_compiles_deterministically() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    for dir in ["a", "b"] {
        let out = tessera(cwd, &["compile", GPT, "--target", "cpu", "-o", dir]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("kernels holding"), "{}", out.stdout);
    }
    let (a, b) = (all_files(&cwd.join("a")), all_files(&cwd.join("b")));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["manifest.json", "rank0/kernels.so", "rank0/program.json", "rank0/weights.bin"]);
    assert!(a == b, "two compiles of one model differ");
    insta::assert_snapshot!("gpt_kernel_table", kernel_table(&cwd.join("a")));

    let compiled = tessera(cwd, &["run", "a", "--random-inputs", "7", "-o", "out-compiled"]);
    assert_eq!(compiled.code, 0, "{}", compiled.stderr);
    let reference = tessera(cwd, &["run", GPT, "--random-inputs", "7", "-o", "out-reference"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let got = read_npy(&cwd.join("out-compiled/probs.npy")).expect("compiled output");
    let want = read_npy(&cwd.join("out-reference/probs.npy")).expect("reference output");
    assert_close(&got, &want, GPT);

    // --profile: the same outputs, and a table of every kind of step (GEMMs, kernels, copies).
    let profiled = tessera(cwd, &["run", "a", "--random-inputs", "7", "--profile", "-o", "out-profiled"]);
    assert_eq!(profiled.code, 0, "{}", profiled.stderr);
    let again = read_npy(&cwd.join("out-profiled/probs.npy")).expect("profiled output");
    assert!(again == got, "a profiled run gave other outputs");
    for row in ["library matmul", "kernel tsr_kernel_", "inputs (copied into the arena)", "all kernel steps"] {
        assert!(profiled.stderr.contains(row), "no '{row}' in the profile:\n{}", profiled.stderr);
    }
    let model_profile = tessera(cwd, &["run", GPT, "--random-inputs", "7", "--profile", "-o", "out-x"]);
    assert_eq!(model_profile.code, 1);
    assert!(model_profile.stderr.contains("--profile profiles compiled artifacts"), "{}", model_profile.stderr);

    // --repeat: the parameters bound once, three runs; the last run's outputs are the single
    // run's, bit for bit, and the timing separates the bind from the steady-state runs.
    let repeated = tessera(cwd, &["run", "a", "--random-inputs", "7", "--repeat", "3", "--timing", "-o", "out-3"]);
    assert_eq!(repeated.code, 0, "{}", repeated.stderr);
    assert!(read_npy(&cwd.join("out-3/probs.npy")).expect("repeated output") == got, "--repeat 3 changed outputs");
    for line in ["parameter inputs once", "3 runs with the parameters resident: min"] {
        assert!(repeated.stderr.contains(line), "no '{line}' in:\n{}", repeated.stderr);
    }
    let model_repeat = tessera(cwd, &["run", GPT, "--random-inputs", "7", "--repeat", "2", "-o", "out-x"]);
    assert_eq!(model_repeat.code, 1);
    assert!(model_repeat.stderr.contains("--repeat runs compiled artifacts"), "{}", model_repeat.stderr);

    // Replacing an artifact in place works; replacing something else is refused.
    let again = tessera(cwd, &["compile", GPT, "-o", "a"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    std::fs::write(cwd.join("precious.txt"), "data").expect("write");
    std::fs::create_dir(cwd.join("notes")).expect("mkdir");
    std::fs::write(cwd.join("notes/x"), "x").expect("write");
    let refused = tessera(cwd, &["compile", GPT, "-o", "notes"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("is not a complete tessera artifact"), "{}", refused.stderr);
}

#[test]
fn symbolic_dimensions_are_bound_at_compile_time_and_failed_compiles_leave_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let model = r#"func.func @norm(%x: tensor<?x8xf32, ["batch"]>, %s: tensor<8xf32>, %w: tensor<8x8xf32>) -> (tensor<?x8xf32, ["batch"]>) {
  %n = "tsr.rms_norm"(%x, %s) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<?x8xf32, ["batch"]>, tensor<8xf32>) -> tensor<?x8xf32, ["batch"]>
  %m = "tsr.matmul"(%n, %w) : (tensor<?x8xf32, ["batch"]>, tensor<8x8xf32>) -> tensor<?x8xf32, ["batch"]>
  %t = "tsr.transpose"(%m) {perm = array<i64: 1, 0>} : (tensor<?x8xf32, ["batch"]>) -> tensor<8x?xf32, ["batch"]>
  %u = "tsr.transpose"(%t) {perm = array<i64: 1, 0>} : (tensor<8x?xf32, ["batch"]>) -> tensor<?x8xf32, ["batch"]>
  %y = "tsr.tanh"(%u) : (tensor<?x8xf32, ["batch"]>) -> tensor<?x8xf32, ["batch"]>
  return %y : tensor<?x8xf32, ["batch"]>
}
"#;
    std::fs::write(cwd.join("norm.mlir"), model).expect("write model");
    let failed = tessera(cwd, &["compile", "norm.mlir", "-o", "out"]);
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("input %x has symbolic dimension 'batch': give its size with --dim batch=N"),
        "{}",
        failed.stderr
    );
    let mut left: Vec<String> =
        std::fs::read_dir(cwd).expect("ls").map(|e| e.expect("e").file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["norm.mlir"], "a failed compile left files behind");

    let ok = tessera(cwd, &["compile", "norm.mlir", "--dim", "batch=3", "-o", "out"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let compiled = tessera(cwd, &["run", "out", "--random-inputs", "2", "-o", "o1"]);
    assert_eq!(compiled.code, 0, "{}", compiled.stderr);
    let reference = tessera(cwd, &["run", "norm.mlir", "--random-inputs", "2", "--dim", "batch=3", "-o", "o2"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let got = read_npy(&cwd.join("o1/y.npy")).expect("compiled");
    assert_close(&got, &read_npy(&cwd.join("o2/y.npy")).expect("reference"), "norm");
}

#[test]
fn damaged_artifacts_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let spec = "gpt:layers=1,hidden=32,heads=2,seq=16,vocab=100,dtype=f32,dropout=0";
    assert_eq!(tessera(cwd, &["compile", spec, "-o", "good"]).code, 0);
    let copy = |name: &str| {
        let dst = cwd.join(name);
        std::fs::create_dir_all(dst.join("rank0")).expect("mkdir");
        for (rel, bytes) in all_files(&cwd.join("good")) {
            std::fs::write(dst.join(rel), bytes).expect("copy");
        }
        dst
    };
    let run = |name: &str| tessera(cwd, &["run", name, "--random-inputs", "1", "-o", "out"]);
    assert_eq!(run("good").code, 0);

    let corrupt = copy("corrupt");
    let mut so = std::fs::read(corrupt.join("rank0/kernels.so")).expect("read");
    let middle = so.len() / 2;
    so[middle] ^= 0xff;
    std::fs::write(corrupt.join("rank0/kernels.so"), so).expect("write");
    let out = run("corrupt");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("rank0/kernels.so: corrupted: SHA-256"), "{}", out.stderr);

    let old = copy("old");
    let manifest = std::fs::read_to_string(old.join("manifest.json")).expect("read");
    std::fs::write(old.join("manifest.json"), manifest.replace("\"format_version\": 2", "\"format_version\": 99"))
        .expect("write");
    let out = run("old");
    assert!(
        out.stderr.contains("artifact format version 99, but this tessera reads versions 2 to 3; recompile"),
        "{}",
        out.stderr
    );

    let missing = copy("missing");
    std::fs::remove_file(missing.join("rank0/weights.bin")).expect("rm");
    let out = run("missing");
    assert!(out.stderr.contains("rank0/weights.bin: listed in the manifest but missing"), "{}", out.stderr);

    let no_manifest = copy("no-manifest");
    std::fs::remove_file(no_manifest.join("manifest.json")).expect("rm");
    let out = run("no-manifest");
    assert!(out.stderr.contains("no-manifest: not a tessera artifact (no manifest.json)"), "{}", out.stderr);
}

/// A tampered `program.json` whose manifest hashes were recomputed passes the integrity check;
/// the loader's validity checks refuse it before any kernel is loaded or run.
#[test]
fn tampered_programs_with_recomputed_hashes_are_refused_before_anything_runs() {
    use tessera_ir::artifact::{Location, Program, Step};
    use tessera_ir::budget::human_bytes;
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let spec = "gpt:layers=1,hidden=32,heads=2,seq=16,vocab=100,dtype=f32,dropout=0";
    assert_eq!(tessera(cwd, &["compile", spec, "-o", "good"]).code, 0);
    let manifest: tessera_ir::artifact::Manifest =
        serde_json::from_slice(&std::fs::read(cwd.join("good/manifest.json")).expect("read")).expect("manifest");
    let good: Program =
        serde_json::from_slice(&std::fs::read(cwd.join("good/rank0/program.json")).expect("read")).expect("program");
    let tamper = |name: &str, edit: &dyn Fn(&mut Program)| {
        let dir = cwd.join(name);
        std::fs::create_dir_all(dir.join("rank0")).expect("mkdir");
        for (rel, bytes) in all_files(&cwd.join("good")) {
            std::fs::write(dir.join(rel), bytes).expect("copy");
        }
        let mut program = good.clone();
        edit(&mut program);
        crate::support::write_rehashed(&dir, &program, &manifest);
        let out = tessera(cwd, &["run", name, "--random-inputs", "1", "-o", "out"]);
        assert_eq!(out.code, 1, "{name} ran: {}", out.stderr);
        assert!(out.stderr.contains(&format!("{name}/rank0/program.json")), "{name}: {}", out.stderr);
        out.stderr
    };
    let e = tamper("small-arena", &|p| p.arena_bytes /= 2);
    assert!(e.contains("is outside its region"), "{e}");
    let e = tamper("duplicate-input", &|p| {
        let first = p.inputs[0].clone();
        p.inputs.push(first);
    });
    assert!(e.contains(&format!("input {} is bound twice", good.inputs[0].name)), "{e}");
    let e = tamper("unwritten-output", &|p| {
        let out = p.outputs[0].buffer;
        p.steps.retain(|s| !s.outputs().contains(&out));
    });
    assert!(e.contains(&format!("output {} is never written", good.outputs[0].name)), "{e}");
    // The first step reads the buffer the last step writes: uninitialized arena memory.
    let last_out = good.steps.last().and_then(|s| s.outputs().first().copied()).expect("a last output");
    let e = tamper("read-before-write", &|p| match &mut p.steps[0] {
        Step::Kernel { inputs, .. } | Step::Library { inputs, .. } => inputs[0] = last_out,
    });
    assert!(e.contains(&format!("step 0 reads buffer {last_out}")), "{e}");
    assert!(e.contains("before any step writes it"), "{e}");
    // One kernel symbol called with two arities: its pointer array would be read past its end.
    let kernels: Vec<(usize, String, usize)> = good
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Step::Kernel { symbol, inputs, .. } => Some((i, symbol.clone(), inputs.len())),
            Step::Library { .. } => None,
        })
        .collect();
    let (first, other) = kernels
        .iter()
        .flat_map(|a| kernels.iter().map(move |b| (a, b)))
        .find(|(a, b)| a.0 < b.0 && a.2 != b.2)
        .expect("two kernels of different arity");
    let e = tamper("arity", &|p| {
        if let Step::Kernel { symbol, .. } = &mut p.steps[other.0] {
            *symbol = first.1.clone();
        }
    });
    assert!(e.contains(&format!("step {} calls kernel {}", other.0, first.1)), "{e}");
    // Arena buffers of one step moved onto each other.
    let e = tamper("overlap", &|p| {
        let step = p.steps.iter().find(|s| s.outputs().len() == 1 && !s.inputs().is_empty()).cloned();
        let Some(step) = step else { return };
        let (i, o) = (step.inputs()[0] as usize, step.outputs()[0] as usize);
        if let (Location::Arena { offset }, true) = (p.buffers[i].location, true) {
            p.buffers[o].location = Location::Arena { offset };
        }
    });
    assert!(e.contains("writes memory it also reads or writes elsewhere"), "{e}");
    // A kernel step whose buffers are not what its kernel was compiled for: the recorded
    // signature of its first kernel says a longer first input than the step passes.
    let (step, symbol) = (kernels[0].0, kernels[0].1.clone());
    let e = tamper("signature-shape", &|p| p.kernel_signatures[0].inputs[0].shape.push(7));
    assert!(e.contains(&format!("step {step}: argument 0 of kernel {symbol} is buffer")), "{e}");
    let e = tamper("bind-step-out-of-range", &|p| p.bind_steps = vec![p.steps.len() as u32]);
    assert!(e.contains(&format!("bind step {n}, but there are {n} steps", n = good.steps.len())), "{e}");
    // Step 0's result dies early and its range is reused: as a bind step (computed once) a
    // later step would overwrite it.
    let e = tamper("clobbered-bind-step", &|p| p.bind_steps = vec![0]);
    assert!(e.contains("overwrites the result of a bind step"), "{e}");
    let e = tamper("no-signature", &|p| p.kernel_signatures.clear());
    assert!(e.contains(&format!("step {step}: kernel {symbol} has no signature")), "{e}");
    // An arena of a petabyte (every buffer still inside it) is refused before it is allocated.
    let e = tamper("huge-arena", &|p| p.arena_bytes = 1 << 50);
    assert!(e.contains("the program's arena needs 1.0 PiB, more than the memory limit of"), "{e}");
    assert!(e.contains("(raise it with --max-memory)"), "{e}");
    let out = tessera(cwd, &["--max-memory", "4K", "run", "good", "--random-inputs", "1", "-o", "out"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let want = format!("good/rank0/program.json: the program's arena needs {}", human_bytes(good.arena_bytes));
    assert!(out.stderr.contains(&want) && out.stderr.contains("the memory limit of 4.0 KiB"), "{}", out.stderr);
    assert!(!cwd.join("out").exists(), "a refused artifact wrote outputs");
}

/// A foreign `kernels.so` under recomputed hashes is refused from its bytes, before it is mapped:
/// one whose constructor would leave a marker file (it never runs), and another model's kernels
/// (same symbols, other shapes), whose signature table differs from the program's.
#[test]
fn foreign_kernel_objects_are_refused_before_they_are_mapped() {
    use tessera_ir::artifact::{Manifest, Program};
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let spec = "gpt:layers=1,hidden=32,heads=2,seq=16,vocab=100,dtype=f32,dropout=0";
    let other = "gpt:layers=1,hidden=64,heads=2,seq=16,vocab=100,dtype=f32,dropout=0";
    assert_eq!(tessera(cwd, &["compile", spec, "-o", "good"]).code, 0);
    assert_eq!(tessera(cwd, &["compile", other, "-o", "other"]).code, 0);
    let marker = cwd.join("constructor-ran");
    let source = cwd.join("hostile.c");
    let c = format!(
        "#include <stdio.h>\n__attribute__((constructor)) static void hostile(void) {{ fclose(fopen(\"{}\", \"w\")); }}\n",
        marker.display()
    );
    std::fs::write(&source, c).expect("write");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(cwd.join("hostile.so"))
        .arg(&source)
        .status()
        .expect("cc");
    assert!(built.success());
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(cwd.join("good/manifest.json")).expect("read")).expect("manifest");
    let program: Program =
        serde_json::from_slice(&std::fs::read(cwd.join("good/rank0/program.json")).expect("read")).expect("program");
    let swap = |name: &str, object: &Path| {
        let dir = cwd.join(name);
        std::fs::create_dir_all(dir.join("rank0")).expect("mkdir");
        for (rel, bytes) in all_files(&cwd.join("good")) {
            std::fs::write(dir.join(rel), bytes).expect("copy");
        }
        std::fs::copy(object, dir.join("rank0/kernels.so")).expect("swap");
        crate::support::write_rehashed(&dir, &program, &manifest);
        let out = tessera(cwd, &["run", name, "--random-inputs", "1", "-o", "out"]);
        assert_eq!(out.code, 1, "{name} ran: {}", out.stderr);
        assert!(out.stderr.contains(&format!("{name}/rank0/kernels.so: cannot load kernels")), "{}", out.stderr);
        out.stderr
    };
    let e = swap("constructor", &cwd.join("hostile.so"));
    assert!(e.contains("exports no tessera_kernel_signatures table"), "{e}");
    assert!(!marker.exists(), "the foreign object's constructor ran");
    let e = swap("other-model", &cwd.join("other/rank0/kernels.so"));
    assert!(e.contains("its kernel signatures differ from the program's"), "{e}");
    assert!(e.contains("f32[1,16,64]") || e.contains(",64]"), "the foreign shapes are shown: {e}");
    assert!(!cwd.join("out").exists(), "a refused artifact wrote outputs");
    // The good artifact, loaded in-process, passes the same check.
    load(&cwd.join("good")).expect("the compiler's own object has the program's signatures");
}

/// Named tensors fed to an executor.
type Feeds = Vec<(String, Tensor)>;

/// Seeded inputs for every program input of `artifact`, split into its parameters and the rest.
fn seeded_inputs(artifact: &Artifact, seed: u64) -> (Feeds, Feeds) {
    let p = &artifact.program;
    p.inputs
        .iter()
        .map(|b| {
            let shape = p.buffers[b.buffer as usize].shape.iter().map(|&n| n as usize).collect();
            (b.name.clone(), uniform_tensor(&mut SplitMix64::for_name(seed, &b.name), b.dtype, shape))
        })
        .partition(|(name, _)| p.inputs.iter().any(|b| b.name == *name && b.parameter))
}

#[test]
fn weights_bound_once_stay_resident_across_runs_and_bad_bindings_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    // Dropout on: its keep-masks are per-run (activation) inputs besides the tokens.
    let spec = "gpt:layers=2,hidden=32,heads=2,seq=16,vocab=100,dtype=f32";
    let out = tessera(cwd, &["compile", spec, "-o", "a"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let artifact = load(&cwd.join("a")).expect("load");
    let (weights, first) = seeded_inputs(&artifact, 1);
    let (_, second) = seeded_inputs(&artifact, 2);
    assert!(weights.len() > 10 && !first.is_empty(), "parameters {} per-run {}", weights.len(), first.len());
    let executor = CpuExecutor::new(artifact).expect("executor");
    let all = |per_run: &[(String, Tensor)]| [&weights[..], per_run].concat();
    let fresh_first = executor.run(&all(&first)).expect("fresh run");
    let fresh_second = executor.run(&all(&second)).expect("fresh run");
    assert!(fresh_first != fresh_second, "the per-run inputs do not change the outputs");

    // Alternating per-run inputs over one arena: each run equals a run on a fresh arena, so
    // neither the weights nor anything else carries over between runs.
    let mut bound = executor.bind(&weights).expect("bind");
    for (per_run, want) in [(&first, &fresh_first), (&second, &fresh_second), (&first, &fresh_first)] {
        assert!(bound.run(per_run).expect("bound run") == *want, "a run with resident weights differs");
    }

    // A weight read from an f32 .npy file is bound as its bytes (no f64 detour), with the same
    // result; an i64 token array likewise per run.
    let stored = |name: &str, tensor: &Tensor| {
        let path = cwd.join(format!("{name}.npy"));
        write_npy(&path, tensor).expect("write npy");
        let feed = read_npy_feed(&path, tensor.dtype).expect("read npy");
        assert!(matches!(feed, Feed::Stored { .. }), "{name} ({}) was not kept as stored bytes", tensor.dtype);
        (name.to_string(), feed)
    };
    let tensor_feeds = |feeds: &[(String, Tensor)]| -> Vec<(String, Feed)> {
        feeds.iter().map(|(n, t)| (n.clone(), Feed::Tensor(t.clone()))).collect()
    };
    let mut weight_feeds = tensor_feeds(&weights);
    weight_feeds[0] = stored(&weights[0].0, &weights[0].1);
    let mut run_feeds = tensor_feeds(&first);
    let tokens = run_feeds.iter().position(|(_, f)| f.dtype() == DType::I64).expect("an integer input");
    run_feeds[tokens] = stored(&first[tokens].0, &first[tokens].1);
    let mut from_files = executor.bind(&weight_feeds).expect("bind stored");
    assert!(from_files.run(&run_feeds).expect("run stored") == fresh_first, "stored bytes gave other outputs");
    let Feed::Stored { dtype, shape, data, start } = weight_feeds[0].1.clone() else { unreachable!() };
    weight_feeds[0].1 = Feed::Stored { dtype, shape: vec![shape.iter().product::<usize>() / 2, 2], data, start };
    let Err(e) = executor.bind(&weight_feeds) else { panic!("bound stored bytes of a wrong shape") };
    assert!(e.to_string().starts_with(&format!("input {}: expected f32", weights[0].0)), "{e}");

    // Bad bindings say what is wrong with which input.
    let error = |result: Result<Vec<(String, Tensor)>, ArtifactError>| result.expect_err("accepted").to_string();
    let mut renamed = weights.clone();
    renamed[0].0 = "no_such_weight".into();
    let Err(e) = executor.bind(&renamed) else { panic!("bound an unknown name") };
    assert_eq!(e.to_string(), "input no_such_weight: the program has no input of this name");
    let mut twice = weights.clone();
    twice.push(weights[0].clone());
    let Err(e) = executor.bind(&twice) else { panic!("bound an input twice") };
    assert!(e.to_string().ends_with("bound twice"), "{e}");
    let mut reshaped = weights.clone();
    let (name, tensor) = &reshaped[0];
    let wrong_shape = Tensor::from_f64(
        tensor.dtype,
        vec![tensor.shape.iter().product::<usize>() + 1],
        vec![0.0; tensor.shape.iter().product::<usize>() + 1],
    );
    let message = format!("input {name}: expected");
    reshaped[0].1 = wrong_shape;
    let Err(e) = executor.bind(&reshaped) else { panic!("bound a wrong shape") };
    assert!(e.to_string().starts_with(&message), "{e}");
    let mut retyped = weights.clone();
    let n = retyped[0].1.shape.iter().product();
    retyped[0].1 = Tensor::from_i64(DType::I64, retyped[0].1.shape.clone(), vec![0; n]);
    let Err(e) = executor.bind(&retyped) else { panic!("bound a wrong dtype") };
    assert!(e.to_string().contains("expected f32") && e.to_string().contains("got i64"), "{e}");

    let missing_weight = &weights[1..];
    let mut partly = executor.bind(missing_weight).expect("bind all but one");
    let e = error(partly.run(&first));
    assert_eq!(e, format!("input {}: missing", weights[0].0));
    let e = error(bound.run(&all(&first)));
    assert!(e.ends_with("bound once as a resident input; it cannot also be fed per run"), "{e}");
    let e = error(bound.run(&first[1..]));
    assert_eq!(e, format!("input {}: missing", first[0].0));
    // After refused runs, the bound weights still give the right outputs.
    assert!(bound.run(&first).expect("bound run") == fresh_first);

    // The weights as shared inputs (one read-only copy outside the arenas, mapped by any number
    // of bindings, as the serving engine binds its row-count programs): two bindings read the
    // same bytes and each gives a fresh arena's outputs; a shared input cannot be overwritten
    // and must have the input's shape.
    let program = executor.program();
    let shared: Vec<(String, Arc<SharedInput>)> = weights
        .iter()
        .map(|(name, tensor)| {
            let binding = program.inputs.iter().find(|b| b.name == *name).expect("a program input");
            let storage = program.buffers[binding.buffer as usize].storage;
            (name.clone(), Arc::new(SharedInput::new(tensor, storage).expect("the weight converts")))
        })
        .collect();
    let no_copies: &[(String, Tensor)] = &[];
    let mut one = Bound::with_shared_inputs(&executor, no_copies, &shared).expect("bind shared");
    let mut other = Bound::with_shared_inputs(&executor, no_copies, &shared).expect("bind shared again");
    assert_eq!(Arc::strong_count(&shared[0].1), 3, "both bindings hold the one copy");
    for (per_run, want) in [(&first, &fresh_first), (&second, &fresh_second)] {
        assert!(one.run(per_run).expect("shared run") == *want, "a run over shared weights differs");
        assert!(other.run(per_run).expect("shared run") == *want, "a run over shared weights differs");
    }
    let e = one.write_resident(&weights[0].0, weights[0].1.clone()).expect_err("overwrote a shared input");
    assert_eq!(e.to_string(), format!("input {}: a shared input is read-only", weights[0].0));
    let mut misshapen = shared.clone();
    let (_, other_shape) = shared
        .iter()
        .zip(&weights)
        .find(|(_, (_, tensor))| tensor.shape != weights[0].1.shape)
        .map(|(pair, _)| pair)
        .expect("weights of two shapes");
    misshapen[0].1 = other_shape.clone();
    let Err(e) = Bound::with_shared_inputs(&executor, no_copies, &misshapen) else {
        panic!("bound a shared input of another shape")
    };
    assert!(e.to_string().starts_with(&format!("input {}: expected", weights[0].0)), "{e}");

    // An artifact whose plan lets a step overwrite an input's range (as memory plans did before
    // inputs were pinned) runs, but refuses to keep that input resident.
    let mut artifact = load(&cwd.join("a")).expect("load");
    let p = &mut artifact.program;
    let victim = p.inputs.iter().find(|b| b.parameter).expect("a parameter").clone();
    let victim_desc = p.buffers[victim.buffer as usize].clone();
    let clobber = p.steps.iter().flat_map(|s| s.outputs()).copied().find(|&o| {
        let d = &p.buffers[o as usize];
        d.location != victim_desc.location && d.bytes() > 0 && d.bytes() <= victim_desc.bytes()
    });
    let clobber = clobber.expect("a step output that fits in the input");
    p.buffers[clobber as usize].location = victim_desc.location;
    let executor = CpuExecutor::new(artifact).expect("executor");
    let Err(e) = executor.bind(&weights) else { panic!("kept an input resident that a step overwrites") };
    assert!(e.to_string().contains("overwrites its buffer, so it cannot stay resident"), "{e}");
}

/// Weight-only work (here a concatenation of two weights and its scaling, what the e-graph's
/// merged-projection rewrite creates) is a program's bind steps: with every parameter resident
/// they run once in the bind, again after a resident weight changes, and on every run when a
/// parameter is fed per run; every way gives the interpreter's outputs.
#[test]
fn weight_only_steps_run_at_bind_and_follow_the_weights() {
    use tessera_codegen::artifact::{compile, write_artifact, CompileOptions};
    use tessera_ir::graph::{Graph, InputRole};
    use tessera_ir::ops::elementwise::BinaryOp;
    use tessera_ir::ops::Op;
    use tessera_ir::types::TensorType;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut g = Graph::new("merged_projection");
    let x = g.add_input("x", TensorType::of_static(DType::F32, &[3, 4]), InputRole::Activation);
    let wq = g.add_input("wq", TensorType::of_static(DType::F32, &[4, 4]), InputRole::Parameter);
    let wk = g.add_input("wk", TensorType::of_static(DType::F32, &[4, 4]), InputRole::Parameter);
    let merged = g.add(Op::Concat { axis: 1 }, &[wq, wk]).expect("concat");
    let two = g.add(Op::Constant(Tensor::from_f64(DType::F32, vec![4, 8], vec![2.0; 32])), &[]).expect("constant");
    let scaled = g.add(Op::Binary(BinaryOp::Mul), &[merged, two]).expect("mul");
    let y = g.add(Op::MatMul, &[x, scaled]).expect("matmul");
    g.set_outputs(vec![y]);
    let options = CompileOptions::cpu();
    let compiled = compile(&g, b"merged_projection", &options).expect("compile");
    write_artifact(&tmp.path().join("a"), &compiled.files).expect("write");
    let artifact = load(&tmp.path().join("a")).expect("load");
    // Everything but the matmul on `x` reads weights only.
    let steps = &artifact.program.steps;
    assert_eq!(artifact.program.bind_steps.len(), steps.len() - 1, "{steps:?}");
    let executor = CpuExecutor::new(artifact).expect("executor");

    let tensor = |name: &str, seed: u64, shape: &[usize]| {
        (name.to_string(), uniform_tensor(&mut SplitMix64::for_name(seed, name), DType::F32, shape.to_vec()))
    };
    let (q1, q2, k) = (tensor("wq", 1, &[4, 4]), tensor("wq", 2, &[4, 4]), tensor("wk", 1, &[4, 4]));
    let (x1, x2) = (tensor("x", 1, &[3, 4]), tensor("x", 2, &[3, 4]));
    let expect = |feeds: &[&(String, Tensor)]| {
        let feeds: Vec<(String, Tensor)> = feeds.iter().map(|&f| f.clone()).collect();
        tessera_runtime::interpreter::run(&g, &feeds).expect("interpreter")
    };
    let assert_close = |got: Vec<(String, Tensor)>, want: Vec<(String, Tensor)>, what: &str| {
        let (got, want) = (got[0].1.to_f64_vec(), want[0].1.to_f64_vec());
        assert_eq!(got.len(), want.len(), "{what}");
        let worst = got.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1.0)));
        assert!(worst < 1e-5, "{what}: differs by {worst}");
    };

    let mut bound = executor.bind(&[q1.clone(), k.clone()]).expect("bind");
    assert_close(bound.run(std::slice::from_ref(&x1)).expect("run"), expect(&[&x1, &q1, &k]), "first run");
    assert_close(bound.run(std::slice::from_ref(&x2)).expect("run"), expect(&[&x2, &q1, &k]), "second run");
    bound.write_resident("wq", q2.1.clone()).expect("write resident");
    assert_close(bound.run(std::slice::from_ref(&x1)).expect("run"), expect(&[&x1, &q2, &k]), "after a new weight");
    // A parameter fed per run: the bind steps run on every run, on that run's weight.
    let mut partly = executor.bind(std::slice::from_ref(&k)).expect("bind one weight");
    assert_close(partly.run(&[x1.clone(), q1.clone()]).expect("run"), expect(&[&x1, &q1, &k]), "per-run weight");
    assert_close(partly.run(&[x1.clone(), q2.clone()]).expect("run"), expect(&[&x1, &q2, &k]), "per-run weight");
}
