//! `tessera train` launched by Slurm's `srun` (direct launch through Slurm's PMIx plugin) on a
//! throwaway single-node cluster (`scripts/slurm-local.sh`): the ranks find their world from
//! Slurm's environment, rank 0 alone prints, and the losses are the single process's.

use crate::mpi::{assert_close, losses, run_launcher, single_process, train_args, MpiOutcome};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running local cluster; dropping it stops the daemons and removes their directory, also when
/// the test fails.
struct LocalSlurm {
    dir: PathBuf,
    conf: PathBuf,
}

fn slurm_local_script() -> PathBuf {
    crate::support::repo_root().join("scripts").join("slurm-local.sh")
}

/// Runs `slurm-local.sh ACTION DIR`, killing it after `limit`; returns its exit code and stderr.
fn slurm_local(action: &str, dir: &Path, limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new("bash")
        .arg(slurm_local_script())
        .args([action, &dir.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
            }
            return (status.code(), err);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, format!("slurm-local.sh {action} still ran after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl LocalSlurm {
    fn start(parent: &Path) -> LocalSlurm {
        let dir = parent.join("slurm");
        let cluster = LocalSlurm { conf: dir.join("slurm.conf"), dir };
        // The script waits up to 60 s for the node; this limit only guards against a hang.
        let (code, stderr) = slurm_local("start", &cluster.dir, Duration::from_secs(90));
        if code != Some(0) {
            let logs: String = ["slurmctld.log", "slurmd.log", "munged.log"]
                .iter()
                .map(|log| {
                    let text = std::fs::read_to_string(cluster.dir.join("log").join(log)).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!("--- {log} (last lines)\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
                })
                .collect();
            // `cluster` drops here and stops whatever did start.
            panic!("scripts/slurm-local.sh start failed ({code:?}): {stderr}\n{logs}");
        }
        cluster
    }

    /// `srun -n ranks --mpi=pmix ...` on this cluster. The test's own Slurm environment (if the
    /// suite itself runs in a Slurm job) is removed, so the step cannot land in another cluster.
    fn srun(&self, cwd: &Path, ranks: usize, args: &[&str], limit: Duration) -> MpiOutcome {
        let mut cmd = Command::new("srun");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SLURM_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("SLURM_CONF", &self.conf)
            // 4 ranks on a 2-core node: --overcommit; a rank that fails ends the step (-K).
            .args(["-n", &ranks.to_string(), "--overcommit", "--mpi=pmix", "--kill-on-bad-exit=1"])
            .args(["--time=5", "--job-name=tessera-e2e"])
            .arg(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(cwd);
        run_launcher(cmd, limit)
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let (code, stderr) = slurm_local("stop", &self.dir, Duration::from_secs(60));
        if code != Some(0) {
            eprintln!("scripts/slurm-local.sh stop failed ({code:?}): {stderr}");
        }
    }
}

#[test]
fn srun_training_gives_the_single_process_losses_and_rank_0_alone_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = single_process(dir.path(), "5");
    assert_eq!(want.len(), 5);
    let cluster = LocalSlurm::start(dir.path());

    let out = cluster.srun(dir.path(), 4, &train_args("5", &["--mesh", "dp=2,tp=2"]), Duration::from_secs(240));
    assert_eq!(out.code, Some(0), "srun: {}", out.stderr);
    // `losses` parses every stdout line as a report: five lines, so only rank 0 printed.
    let got = losses(&out.stdout);
    assert_eq!(got.len(), 5, "{}", out.stdout);
    assert_close(&got, &want, "dp=2,tp=2 under srun");

    // The world comes from Slurm's step (no OMPI_/PMI_ size variable under srun): a mesh of
    // another size is refused before MPI starts, on every rank, and the step fails.
    let out = cluster.srun(dir.path(), 2, &train_args("1", &["--mesh", "dp=4"]), Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains("--mesh dp=4 has 4 devices but the launcher started 2 ranks"), "{}", out.stderr);
}
