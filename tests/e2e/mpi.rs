//! The multi-process runtime under `mpirun` (OpenMPI): the MPI transport against the in-process
//! one, `tessera train` on five meshes against one process, wrong launches, and a rank killed
//! mid-run (the others must exit non-zero within 30 s; the last checkpoint resumes elsewhere).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct MpiOutcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// From the last bytes a rank wrote to standard output to the launcher's exit (the whole
    /// run when nothing was written): how long a job took to end after its last report.
    pub after_last_output: Duration,
}

/// Runs `mpirun -n ranks tessera args...` in `cwd` with extra environment `env`; kills it (and
/// fails the test) after `limit`.
pub fn mpirun(cwd: &Path, ranks: usize, args: &[&str], env: &[(&str, &str)], limit: Duration) -> MpiOutcome {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_launcher(cmd, limit)
}

/// Runs a launcher command (`mpirun ...`, `srun ...`) to completion, collecting its output; kills
/// it (and fails the test) after `limit`.
pub fn run_launcher(mut cmd: Command, limit: Duration) -> MpiOutcome {
    let started = Instant::now();
    let launcher = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{launcher} runs (scripts/setup.sh installs it): {e}"));
    // Drain the pipes on threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let last_output = std::sync::Arc::new(std::sync::Mutex::new(started));
    let last_output_writer = std::sync::Arc::clone(&last_output);
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut out, &mut chunk) {
            bytes.extend_from_slice(&chunk[..n]);
            if let Ok(mut at) = last_output_writer.lock() {
                *at = Instant::now();
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).map(|_| s).unwrap_or_default()
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{launcher} {args:?} still ran after {limit:?}; stderr so far:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ended = Instant::now();
    let stdout = out_reader.join().unwrap_or_default();
    let last_output = last_output.lock().map(|at| *at).unwrap_or(started);
    MpiOutcome {
        code: status.code(),
        stdout,
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        after_last_output: ended.saturating_duration_since(last_output),
    }
}

#[test]
fn mpi_collectives_and_partitioned_programs_match_the_in_process_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mesh in ["dp=4", "tp=4", "pp=4", "dp=2,tp=2", "tp=2,pp=2"] {
        let out = mpirun(
            dir.path(),
            4,
            &["comm-test", "--mesh", mesh, "--format", "json", "--timeout", "30", "--comm", "mpi"],
            &[],
            Duration::from_secs(120),
        );
        assert_eq!(out.code, Some(0), "{mesh}: {}", out.stderr);
        // Rank 0 alone reports.
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{mesh}: {}", out.stdout);
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
        assert_eq!(v["ranks"], 4);
        let groups = if mesh.contains(',') { 3 } else { 2 };
        // Fifteen collectives per group (sums in four dtypes, maxima in three, gathers and
        // scatters in three dtypes and axes each, all-to-all, a gather of mismatched shapes that
        // must fail on every member) over each axis and over all axes, plus the ring; four
        // broadcasts per group.
        assert_eq!(v["collective_results"], 15 * groups + 1, "{mesh}: {v}");
        assert_eq!(v["broadcasts"], 4 * groups, "{mesh}: {v}");
        // Every typed collective ran as a native MPI call; no operand went whole through the
        // exchange.
        assert_eq!(v["transport"], "mpi", "{mesh}: {v}");
        for kind in ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast"] {
            assert!(v["native"][kind].as_u64().is_some_and(|n| n > 0), "{mesh}: no native {kind}: {v}");
        }
        assert_eq!(v["native"]["exchange"], 0, "{mesh}: {v}");
        assert!(v["collective_max_rel_error"].as_f64().is_some_and(|e| e <= 1e-6), "{mesh}: {v}");
        assert_eq!(v["forward_outputs"], 1, "{mesh}: {v}");
        assert!(v["forward_max_rel_error"].as_f64().is_some_and(|e| e <= 1e-9), "{mesh}: {v}");
    }
}

#[test]
fn a_mesh_that_does_not_match_the_world_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = mpirun(dir.path(), 2, &["comm-test", "--mesh", "dp=4"], &[], Duration::from_secs(60));
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--mesh dp=4 has 4 devices but MPI started 2 ranks"), "{}", out.stderr);
}

/// Whether this machine could run NCCL on two ranks: then the NCCL transport must pass the same
/// checks; without a driver or libnccl, `--comm nccl` must say which is missing and fail.
#[test]
fn comm_nccl_runs_where_nccl_can_and_says_why_not_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = tessera_runtime::executor::cuda::driver_present();
    let available = tessera_runtime::nccl::availability();
    let gpus = tessera_runtime::nccl::devices().unwrap_or(0);
    let comm_test = ["comm-test", "--mesh", "dp=2", "--format", "json", "--timeout", "60", "--comm", "nccl"];
    let out = mpirun(dir.path(), 2, &comm_test, &[], Duration::from_secs(120));
    if gpus >= 2 {
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
        assert_eq!(v["transport"], "nccl", "{v}");
        for kind in ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast"] {
            assert!(v["native"][kind].as_u64().is_some_and(|n| n > 0), "no NCCL {kind}: {v}");
        }
        assert_eq!(v["native"]["exchange"], 0, "{v}");
        return;
    }
    let why = if !driver {
        "NCCL needs a CUDA driver: no CUDA driver found"
    } else if available.is_err() {
        "NCCL needs libnccl: libnccl not found"
    } else {
        "CUDA devices (NCCL runs one GPU per rank)"
    };
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains(why), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    // `train --comm nccl` fails the same way; without `--comm` the transport is MPI.
    let out =
        mpirun(dir.path(), 2, &train_args("1", &["--mesh", "dp=2", "--comm", "nccl"]), &[], Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains(why), "{}", out.stderr);
    let default = ["comm-test", "--mesh", "dp=2", "--format", "json", "--timeout", "60"];
    let out = mpirun(dir.path(), 2, &default, &[], Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(v["transport"], "mpi", "{v}");
}

#[test]
fn a_killed_rank_ends_the_whole_job_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Rank 2 dies at the fourth collective; a generous receive timeout shows that what stops
    // the others is mpirun noticing the death, not the deadline.
    let out = mpirun(
        dir.path(),
        4,
        &["comm-test", "--mesh", "dp=2,tp=2", "--timeout", "300"],
        &[("TESSERA_FAULT", "2:4")],
        Duration::from_secs(30),
    );
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("rank 2: TESSERA_FAULT kills this process at step 4"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "no rank reports success: {}", out.stdout);
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
}

#[test]
fn a_hung_rank_ends_the_job_at_the_receive_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    // SIGSTOP: the rank neither dies nor answers, so mpirun notices nothing; the others' 3 s
    // deadline fails their collective, which aborts the job (killing the stopped rank too).
    let out = mpirun(
        dir.path(),
        4,
        &["comm-test", "--mesh", "dp=2,tp=2", "--timeout", "3"],
        &[("TESSERA_FAULT", "2:4:hang")],
        Duration::from_secs(30),
    );
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("rank 2: TESSERA_FAULT stops this process at step 4"), "{}", out.stderr);
    assert!(out.stderr.contains("aborting the MPI job"), "{}", out.stderr);
    assert!(out.stderr.contains("timed out after 3.0 s waiting for a message from rank 2"), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
}

pub const CORPUS: &str = "/usr/share/common-licenses/GPL-3";
/// Small enough for four debug-build processes on two cores; f64 so that the only difference
/// between meshes is the order partial sums are added in.
pub const GPT: &str = "gpt:layers=2,hidden=32,heads=4,seq=16,vocab=256,dtype=fp64";

/// `(step, loss)` of every JSON line.
pub fn losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["step_time_s"].as_f64().is_some_and(|t| t > 0.0), "{line}");
            assert!(v["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0), "{line}");
            (v["step"].as_u64().expect("step"), v["loss"].as_f64().expect("loss"))
        })
        .collect()
}

pub fn train_args<'a>(steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", GPT, "--steps", steps, "--data", CORPUS, "--batch", "4", "--format", "json"];
    args.extend(extra);
    args
}

pub fn single_process(cwd: &Path, steps: &str) -> Vec<(u64, f64)> {
    let out = crate::support::tessera(cwd, &train_args(steps, &[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    losses(&out.stdout)
}

pub fn assert_close(got: &[(u64, f64)], want: &[(u64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for ((s, a), (t, b)) in got.iter().zip(want) {
        assert_eq!(s, t, "{what}");
        assert!((a - b).abs() <= 1e-5 * a.abs().max(b.abs()), "{what} step {s}: loss {a} vs {b} on one process");
    }
}

#[test]
fn mpi_training_on_every_mesh_gives_the_single_process_losses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = single_process(dir.path(), "5");
    // Compiled ranks on every mesh, and the interpreter (the oracle, in f64) on one.
    let meshes = [("dp=4", "compiled"), ("tp=4", "compiled"), ("pp=4", "compiled"), ("dp=2,tp=2", "compiled")];
    for (mesh, executor) in meshes.into_iter().chain([("tp=2,pp=2", "reference")]) {
        let out = mpirun(
            dir.path(),
            4,
            &train_args("5", &["--mesh", mesh, "--executor", executor]),
            &[],
            Duration::from_secs(240),
        );
        assert_eq!(out.code, Some(0), "{mesh}: {}", out.stderr);
        // Rank 0 alone prints: five lines, not twenty.
        assert_close(&losses(&out.stdout), &want, &format!("{mesh} ({executor})"));
    }
}

#[test]
fn without_a_launcher_the_mesh_runs_on_threads_and_checkpoints_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = single_process(dir.path(), "4");
    let out = crate::support::tessera(
        dir.path(),
        &train_args("4", &["--mesh", "dp=2,tp=2", "--checkpoint-dir", "ckpt", "--checkpoint-every", "2"]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_close(&losses(&out.stdout), &want, "dp=2,tp=2 on threads");
    let mut names = crate::support::files_in(&dir.path().join("ckpt"));
    names.retain(|n| !n.starts_with('.'));
    assert_eq!(names, ["step-00000002", "step-00000004"]);
    std::fs::remove_dir_all(dir.path().join("ckpt/step-00000004")).expect("rm");
    let out = crate::support::tessera(dir.path(), &train_args("4", &["--mesh", "pp=2", "--resume", "ckpt"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_close(&losses(&out.stdout), &want[2..], "resumed on pp=2 threads");
}

#[test]
fn mpi_training_needs_a_mesh_of_the_world_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = mpirun(dir.path(), 2, &train_args("1", &["--mesh", "dp=4"]), &[], Duration::from_secs(60));
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--mesh dp=4 has 4 devices but the launcher started 2 ranks"), "{}", out.stderr);
    let out = mpirun(dir.path(), 2, &train_args("1", &[]), &[], Duration::from_secs(60));
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("launched as 2 MPI ranks: give --mesh with 2 devices"), "{}", out.stderr);
}

#[test]
fn a_rank_killed_mid_run_stops_the_job_and_the_last_checkpoint_resumes_on_another_mesh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = single_process(dir.path(), "5");
    // Checkpoints every step; rank 1 dies at step 3 while the others are inside it. A receive
    // timeout far above the limit shows that mpirun's noticing the death is what stops them.
    // The ranks run compiled programs: the job must end within 30 s of the last report (step
    // 2's), however long compiling took before step 1.
    let args = train_args("5", &["--mesh", "dp=2,tp=2", "--checkpoint-dir", "ckpt", "--checkpoint-every", "1"]);
    let mut args = args;
    args.extend(["--comm-timeout", "300"]);
    let out = mpirun(dir.path(), 4, &args, &[("TESSERA_FAULT", "1:3")], Duration::from_secs(240));
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("rank 1: TESSERA_FAULT kills this process at step 3"), "{}", out.stderr);
    assert!(out.after_last_output < Duration::from_secs(30), "{:?}", out.after_last_output);
    // The two completed steps were reported and checkpointed; step 3 never completed.
    assert_close(&losses(&out.stdout), &want[..2], "before the fault");
    let ckpt = dir.path().join("ckpt");
    let mut names = crate::support::files_in(&ckpt);
    names.retain(|n| !n.starts_with('.'));
    assert_eq!(names, ["step-00000001", "step-00000002"]);
    // Every block once: as many entries as distinct files, all present, some of them blocks.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("step-00000002/index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["mesh"], "dp=2,tp=2");
    let files: Vec<&str> =
        index["tensors"].as_array().expect("tensors").iter().map(|t| t["file"].as_str().unwrap_or("")).collect();
    let distinct: std::collections::BTreeSet<&str> = files.iter().copied().collect();
    assert_eq!(distinct.len(), files.len(), "a block was written twice");
    assert!(files.iter().any(|f| f.contains('@')), "tp=2 splits some tensors into blocks");
    let mut on_disk = crate::support::files_in(&ckpt.join("step-00000002/tensors"));
    on_disk.iter_mut().for_each(|f| f.insert_str(0, "tensors/"));
    assert_eq!(on_disk.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), distinct);
    // Resume on another mesh (tp=2 over two processes), and on one process.
    let out =
        mpirun(dir.path(), 2, &train_args("5", &["--mesh", "tp=2", "--resume", "ckpt"]), &[], Duration::from_secs(240));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_close(&losses(&out.stdout), &want[2..], "resumed on tp=2");
    let out = crate::support::tessera(dir.path(), &train_args("5", &["--resume", "ckpt"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_close(&losses(&out.stdout), &want[2..], "resumed on one process");
}

/// Pipeline schedules over MPI: 1F1B on four stages and interleaved 1F1B (two chunks of two
/// layers per stage) give the single-process losses; invalid combinations are refused upfront.
#[test]
fn mpi_pipeline_schedules_give_the_single_process_losses() {
    const GPT4: &str = "gpt:layers=4,hidden=32,heads=4,seq=16,vocab=256,dtype=fp64";
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec!["train", GPT4, "--steps", "2", "--data", CORPUS, "--batch", "1", "--micro-batches", "4"];
        a.extend(["--format", "json"]);
        a.extend(extra);
        a
    };
    let out = crate::support::tessera(dir.path(), &args(&[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = losses(&out.stdout);
    for (ranks, extra) in [(4, ["--mesh", "pp=4", "--interleave", "1"]), (2, ["--mesh", "pp=2", "--interleave", "2"])] {
        let out = mpirun(dir.path(), ranks, &args(&extra), &[], Duration::from_secs(240));
        assert_eq!(out.code, Some(0), "{extra:?}: {}", out.stderr);
        assert_close(&losses(&out.stdout), &want, &format!("{extra:?}"));
    }
    for (extra, message) in [
        (["--mesh", "pp=2", "--schedule", "gpipe", "--interleave", "2"], "interleaving needs the 1f1b schedule"),
        (["--mesh", "pp=4", "--schedule", "1f1b", "--interleave", "2"], "does not divide the 4 layers"),
    ] {
        let out = crate::support::tessera(dir.path(), &args(&extra));
        assert_ne!(out.code, 0, "{extra:?}");
        assert!(out.stderr.contains(message), "{extra:?}: {}", out.stderr);
    }
    let out = crate::support::tessera(dir.path(), &args(&["--mesh", "pp=3", "--interleave", "2"]));
    assert!(out.stderr.contains("micro-batches (4) to be a multiple of pp (3)"), "{}", out.stderr);
}
