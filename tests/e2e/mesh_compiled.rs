//! Compiled per-rank programs (issue 16, item 4): `tessera compile --mesh` writes one program
//! per rank, `mpirun -n N tessera run DIR` (and `tessera-rt run`) runs them over MPI with the
//! single-process artifact's results, and `tessera train --mesh` runs compiled ranks with the
//! single-process compiled run's losses and final weights.

use crate::mpi::{losses, mpirun, run_launcher, CORPUS};
use crate::support::{example, files_in, tessera};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tessera::train::checkpoint;
use tessera_ir::artifact::{LibraryCall, Manifest, Program, Step};
use tessera_ir::tensor::Tensor;

/// The largest difference between `got` and `want`, relative to `want`'s largest magnitude.
fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape, want.shape);
    let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale
}

fn read_npy(path: &Path) -> Tensor {
    tessera_runtime::npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compile(cwd: &Path, extra: &[&str]) {
    let mut args = vec!["compile", "--dim", "batch=4"];
    args.extend(extra);
    let out = tessera(cwd, &args);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
}

/// A transformer block (layer norms, attention, MLP: every collective kind `shard` inserts for
/// dp, tp and pp) over meshes of 2, 4 and 8 ranks: every rank's program comes from one compile
/// per pipeline stage, and the outputs equal the one-device artifact's.
#[test]
fn mesh_artifacts_under_mpirun_equal_the_single_device_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let block = example("transformer_block.mlir");
    compile(dir.path(), &[&block, "-o", "one"]);
    let out = tessera(dir.path(), &["run", "one", "--random-inputs", "5", "-o", "want"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = read_npy(&dir.path().join("want/y.npy"));
    for (mesh, ranks) in [("dp=2", 2), ("tp=2", 2), ("pp=2", 2), ("dp=2,tp=2", 4), ("dp=2,tp=2,pp=2", 8)] {
        let artifact = format!("mesh-{ranks}-{}", mesh.replace([',', '='], "_"));
        compile(dir.path(), &[&block, "--mesh", mesh, "-o", &artifact]);
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(dir.path().join(&artifact).join("manifest.json")).expect("manifest"))
                .expect("manifest json");
        let axes: Vec<String> = manifest.mesh.iter().map(|a| format!("{}={}", a.name, a.size)).collect();
        assert_eq!(axes.join(","), mesh);
        assert_eq!(manifest.ranks.len(), ranks);
        // Ranks of one stage share its code: the same kernels (by SHA-256) in every directory.
        let kernels = |rank: usize| {
            manifest.ranks[rank].files.iter().find(|f| f.path.ends_with("kernels.so")).map(|f| f.sha256.clone())
        };
        let output = format!("out-{artifact}");
        let args = ["run", artifact.as_str(), "--random-inputs", "5", "-o", output.as_str()];
        let run = mpirun(dir.path(), ranks, &args, &[], Duration::from_secs(120));
        assert_eq!(run.code, Some(0), "{mesh}: {}", run.stderr);
        let got = read_npy(&dir.path().join(&output).join("y.npy"));
        let error = relative_error(&got, &want);
        assert!(error <= 1e-5, "{mesh}: relative error {error}");
        if mesh == "dp=2,tp=2,pp=2" {
            // Stage 0 is ranks 0, 2, 4, 6 (pp is the last axis); stage 1 the odd ranks.
            assert!(kernels(0).is_some() && kernels(0) == kernels(6) && kernels(1) == kernels(7));
            assert_ne!(kernels(0), kernels(1));
        }
    }
    // The runtime-only binary runs the same per-rank programs.
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", "2"])
        .arg(crate::runtime_only::tessera_rt_binary())
        .args(["run", "mesh-2-tp_2", "--random-inputs", "5", "-o", "out-rt"])
        .current_dir(dir.path());
    let run = run_launcher(cmd, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "tessera-rt: {}", run.stderr);
    let error = relative_error(&read_npy(&dir.path().join("out-rt/y.npy")), &want);
    assert!(error <= 1e-5, "tessera-rt tp=2: relative error {error}");
}

/// A mesh artifact launched on the wrong number of processes: every process says so (before MPI
/// starts, so nobody waits for a missing rank), and so does one process without a launcher.
#[test]
fn a_mesh_artifact_on_the_wrong_number_of_ranks_is_an_error_on_every_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    compile(dir.path(), &[&example("mlp.mlir"), "--mesh", "tp=2", "-o", "tp2"]);
    let run = mpirun(dir.path(), 3, &["run", "tp2", "--random-inputs", "1", "-o", "out"], &[], Duration::from_secs(60));
    assert_ne!(run.code, Some(0));
    // Every rank refuses before MPI starts, but mpirun kills the remaining ranks once the first
    // one exits non-zero, so a loaded machine may show fewer than three copies of the refusal;
    // every error line it shows must be the refusal (as in runtime_only's mpirun test).
    let refusal = "error: the artifact has 2 rank(s) (mesh tp=2) but 3 process(es) were launched: run it with \
                   `mpirun -n 2`";
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!errors.is_empty() && errors.len() <= 3, "{}", run.stderr);
    assert!(errors.iter().all(|l| l.starts_with(refusal)), "{}", run.stderr);
    let out = tessera(dir.path(), &["run", "tp2", "--random-inputs", "1", "-o", "out"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("but this is one process, not launched by mpirun or srun"), "{}", out.stderr);
}

/// A rank's program run on its own (through the library, as no command does): its first
/// communication step says that it needs the other ranks instead of computing garbage.
#[test]
fn a_rank_program_without_a_communicator_stops_at_its_first_collective() {
    let dir = tempfile::tempdir().expect("tempdir");
    compile(dir.path(), &[&example("mlp.mlir"), "--mesh", "tp=2", "-o", "tp2"]);
    let artifact = tessera_runtime::executor::load::load_rank(&dir.path().join("tp2"), 1).expect("rank 1 loads");
    let inputs: Vec<(String, Tensor)> = artifact
        .program
        .inputs
        .iter()
        .map(|binding| {
            let shape = artifact.program.buffers[binding.buffer as usize].shape.iter().map(|&n| n as usize).collect();
            (binding.name.clone(), Tensor::zeros(binding.dtype, shape))
        })
        .collect();
    let executor = tessera_runtime::executor::cpu::CpuExecutor::new(artifact).expect("executor");
    let error = executor.run(&inputs).expect_err("a collective without a communicator").to_string();
    assert!(error.contains("tsr.all_reduce needs the other ranks: run a mesh artifact under mpirun/srun"), "{error}");
}

/// One line per step of a program: kernels by symbol, library calls by name, communication
/// with its axes or peer, and the buffers it reads and writes.
fn step_list(program: &Program) -> String {
    let buffer = |b: &u32| program.buffers[*b as usize].name.clone();
    let mut out = String::new();
    for step in &program.steps {
        let what = match step {
            Step::Kernel { symbol, .. } => format!("kernel {symbol}"),
            Step::Library { call: LibraryCall::Collective { op }, .. } => {
                format!("{}{}", op.mnemonic(), collective_detail(op))
            }
            Step::Library { call, .. } => call.name().to_string(),
        };
        let ins: Vec<String> = step.inputs().iter().map(buffer).collect();
        let outs: Vec<String> = step.outputs().iter().map(buffer).collect();
        out += &format!("  {what} ({}) -> ({})\n", ins.join(", "), outs.join(", "));
    }
    out
}

fn collective_detail(op: &tessera_ir::ops::collective::Collective) -> String {
    use tessera_ir::ops::collective::Collective;
    match op {
        Collective::Send { mesh_axis, peer, tag } | Collective::Recv { mesh_axis, peer, tag, .. } => {
            format!(" {mesh_axis}={peer} tag {tag}")
        }
        other => other.group().map_or(String::new(), |g| format!(" over {}", g.joined())),
    }
}

/// The per-rank step lists of a small model on a mixed mesh: what each rank runs, collectives
/// and send/recv in their places.
#[test]
fn per_rank_step_lists_of_a_mixed_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    compile(dir.path(), &[&example("mlp.mlir"), "--mesh", "tp=2,pp=2", "-o", "mesh"]);
    let root = dir.path().join("mesh");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest")).expect("json");
    let mut text = String::new();
    for entry in &manifest.ranks {
        let program: Program =
            serde_json::from_slice(&std::fs::read(root.join(&entry.program)).expect("program")).expect("json");
        let shard = program.shard.as_ref().expect("a mesh program says where its rank is");
        assert_eq!(shard.rank, entry.rank);
        text += &format!(
            "rank {} (stage {} of {}{}):\n",
            shard.rank,
            shard.stage,
            shard.stages,
            if shard.writes_outputs { ", writes the outputs" } else { "" }
        );
        for io in &shard.inputs {
            text += &format!("  input {} {:?} {}\n", io.name, io.global_shape, io.sharding);
        }
        text += &step_list(&program);
    }
    insta::assert_snapshot!(text);
}

/// `(name, tensor)` of a checkpoint's weights and optimizer state.
fn checkpoint_tensors(dir: &Path) -> Vec<(String, Tensor)> {
    let ckpt = checkpoint::load(&checkpoint::latest(dir).expect("a checkpoint")).expect("loads");
    ckpt.params.into_iter().chain(ckpt.optimizer_state).collect()
}

/// f32 training over MPI on compiled ranks: dp, tp, pp and a mixed mesh give the losses and final
/// weights (and optimizer state) of the single-process compiled run within 1e-5 relative.
///
/// SGD, because AdamW's final weights cannot be compared this way: the gradient of an attention
/// key's bias is zero in exact arithmetic (softmax ignores a constant added to every score), so
/// in f32 it is rounding noise, which AdamW's `m / sqrt(v)` scales up to a full `lr` step of
/// either sign whatever order partial sums were added in. The AdamW losses of compiled ranks are
/// checked by the fault and resume tests in `mpi.rs`.
#[test]
fn compiled_mesh_training_under_mpirun_equals_the_single_process_compiled_run() {
    const GPT32: &str = "gpt:layers=2,hidden=32,heads=4,seq=16,vocab=256";
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |ckpt: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec!["train", GPT32, "--steps", "3", "--data", CORPUS, "--batch", "4", "--micro-batches", "2"];
        a.extend(["--optimizer", "sgd", "--lr", "0.1"]);
        a.extend(["--format", "json", "--checkpoint-dir", ckpt, "--checkpoint-every", "3"]);
        a.extend(extra);
        a
    };
    let out = tessera(dir.path(), &args("one", &[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = losses(&out.stdout);
    let want_state = checkpoint_tensors(&dir.path().join("one"));
    for (mesh, ranks, ckpt) in [("dp=2", 2, "dp"), ("tp=2", 2, "tp"), ("pp=2", 2, "pp"), ("dp=2,pp=2", 4, "mixed")] {
        let run = mpirun(dir.path(), ranks, &args(ckpt, &["--mesh", mesh]), &[], Duration::from_secs(300));
        assert_eq!(run.code, Some(0), "{mesh}: {}", run.stderr);
        let got = losses(&run.stdout);
        assert_eq!(got.len(), want.len(), "{mesh}");
        for ((step, a), (_, b)) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{mesh} step {step}: loss {a}, one process {b}");
        }
        let state = checkpoint_tensors(&dir.path().join(ckpt));
        assert_eq!(state.len(), want_state.len(), "{mesh}");
        for ((name, got), (want_name, want)) in state.iter().zip(&want_state) {
            assert_eq!(name, want_name);
            let error = relative_error(got, want);
            assert!(error <= 1e-5, "{mesh}: final {name} differs by {error} relative");
        }
        assert!(files_in(&dir.path().join(ckpt)).iter().any(|f| f == "step-00000003"), "{mesh}");
    }
}

/// `compile --train --mesh`: the training step's stage programs, each rank's in its pipeline
/// schedule's order, with the mesh and schedule recorded (and hashed) in the manifest.
#[test]
fn a_training_step_compiles_to_one_program_per_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=2,hidden=16,heads=2,seq=8,vocab=64";
    let args = ["compile", model, "--train", "--micro-batches", "2", "--mesh", "pp=2", "-o", "step"];
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("over mesh pp=2"), "{}", out.stdout);
    let root = dir.path().join("step");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest")).expect("json");
    assert!(manifest.options.iter().any(|o| o == "mesh=pp=2"), "{:?}", manifest.options);
    assert!(manifest.options.iter().any(|o| o == "schedule=1f1b"), "{:?}", manifest.options);
    assert_eq!(manifest.ranks.len(), 2);
    for entry in &manifest.ranks {
        let program: Program =
            serde_json::from_slice(&std::fs::read(root.join(&entry.program)).expect("program")).expect("json");
        let count = |mnemonic: &str| {
            program
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Library { call: LibraryCall::Collective { op }, .. } if op.mnemonic() == mnemonic))
                .count()
        };
        // Activations go forward and gradients back: both stages send and receive, once per
        // micro-batch at least.
        assert!(count("send") >= 2 && count("recv") >= 2, "rank {}: {}", entry.rank, step_list(&program));
        // Every stage updates its own layers' weights and returns the loss.
        assert!(program.outputs.iter().any(|o| o.name == "loss"), "rank {}", entry.rank);
        assert!(program.outputs.iter().any(|o| o.name.ends_with(".next")), "rank {}", entry.rank);
    }
}
