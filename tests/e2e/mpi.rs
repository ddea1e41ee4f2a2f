//! The multi-process runtime under `mpirun` (OpenMPI): the MPI transport against the in-process
//! one, wrong launches, and a rank killed mid-run (the others must exit non-zero within 30 s).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct MpiOutcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `mpirun -n ranks tessera args...` in `cwd` with extra environment `env`; kills it (and
/// fails the test) after `limit`.
pub fn mpirun(cwd: &Path, ranks: usize, args: &[&str], env: &[(&str, &str)], limit: Duration) -> MpiOutcome {
    let started = Instant::now();
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("mpirun runs (scripts/setup.sh installs openmpi-bin)");
    // Drain the pipes on threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).map(|_| s).unwrap_or_default()
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
                "mpirun {args:?} still ran after {limit:?}; stderr so far:\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    MpiOutcome {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

#[test]
fn mpi_collectives_and_partitioned_programs_match_the_in_process_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mesh in ["dp=4", "tp=4", "pp=4", "dp=2,tp=2", "tp=2,pp=2"] {
        let out = mpirun(
            dir.path(),
            4,
            &["comm-test", "--mesh", mesh, "--format", "json", "--timeout", "30"],
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
        // Seven collectives per group (sums in three dtypes, max, gather, scatter, all-to-all)
        // over each axis and over all axes, plus the ring.
        assert_eq!(v["collective_results"], 7 * groups + 1, "{mesh}: {v}");
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
