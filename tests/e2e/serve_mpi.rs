//! Tensor-parallel serving with ranks as processes: `mpirun -n 2 tessera serve DIR` on a
//! directory `tessera compile --serve --mesh tp=2` wrote. Rank 0 serves HTTP and leads; rank 1
//! follows. Through a real socket: transformers' tokens for 8 mixed requests, SIGTERM to the
//! launcher ending both processes with exit 0, and a rank that panics ending the whole job
//! at once with a message naming it. Like the other `mpirun` tests (`mpi.rs`), these need
//! OpenMPI's `mpirun` (scripts/setup.sh installs it).

use crate::serve_http::{eight_mixed_requests_match_transformers, Server};
use crate::serve_reference::checkpoint;
use crate::support::{repo_root, tessera};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera::http::client;

/// `tessera compile llama-tiny --serve --mesh tp=2` into `work`.
fn two_rank_directory(work: &Path) -> PathBuf {
    let dir = work.join("llama-tp2");
    let source = checkpoint("llama-tiny");
    let args = ["compile", source.to_str().expect("a UTF-8 path"), "--serve", "--mesh", "tp=2", "--max-batch", "4"];
    let out =
        tessera(&repo_root(), &[&args[..], &["--max-seq", "160", "-o", dir.to_str().expect("a UTF-8 path")]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    dir
}

/// `mpirun -n 2 tessera serve DIR --port 0 --kv-blocks 16` with `env`.
fn mpirun_serve(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "2", env!("CARGO_BIN_EXE_tessera"), "serve"])
        .args([dir.to_str().expect("a UTF-8 path"), "--port", "0", "--kv-blocks", "16"])
        .envs(env.iter().copied());
    Server::spawn(command)
}

/// The process `mpirun` (pid `launcher`) started as MPI rank `rank`: its child whose
/// environment says so.
fn rank_process(launcher: u32, rank: usize) -> i32 {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    let entries = std::fs::read_dir("/proc").expect("/proc lists processes");
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    pids.filter(|pid| {
        // The parent pid is the 4th field of /proc/PID/stat, after the parenthesised name.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        parent == Some(launcher)
    })
    .find(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes())
    })
    .unwrap_or_else(|| panic!("no rank {rank} under mpirun {launcher}"))
}

/// Two processes serve the completions of one (transformers' tokens, with preemption forced by
/// 16 blocks for 8 requests), report both ranks in `/metrics`, and SIGTERM to rank 0 (the
/// HTTP process) ends the job with exit 0: rank 0 drains, then stops rank 1.
#[test]
fn two_rank_processes_serve_the_completions_of_one() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = two_rank_directory(work.path());
    let server = mpirun_serve(&dir, &[]);
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    assert_eq!(server.metric("tessera_tp_ranks"), 2.0);
    assert!(server.metric("tessera_all_reduce_seconds_total") > 0.0, "the processes all-reduced");
    assert!(server.metric("tessera_preemptions_total") >= 1.0, "16 blocks for 8 requests must preempt");
    let mut server = server;
    let rank0 = rank_process(server.pid(), 0);
    // SAFETY: kill(2) on a process of this test's job has no memory effects.
    assert_eq!(unsafe { libc::kill(rank0, libc::SIGTERM) }, 0);
    assert_eq!(server.wait_exit(Duration::from_secs(60), "after SIGTERM to rank 0"), 0);
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("SIGTERM: finishing in-flight requests") && stderr.contains("tessera serve: stopped"),
        "{stderr}"
    );
}

/// Rank 1 panicking in a step (the debug-build hook `TESSERA_SERVE_FAULT`) ends every
/// process within seconds, not at the 300 s receive deadline: the launcher exits non-zero,
/// the message names the rank, and the request in flight is not left hanging.
#[test]
fn a_rank_process_that_panics_ends_the_job() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = two_rank_directory(work.path());
    let mut server = mpirun_serve(&dir, &[(tessera::fault::SERVE_ENV, "1:3:panic")]);
    let started = Instant::now();
    let body = json!({"prompt": "Hello world", "max_tokens": 20, "temperature": 0});
    let response = client::request(&server.address, "POST", "/v1/completions", body.to_string().as_bytes());
    assert!(
        response.as_ref().map_or(true, |r| r.status >= 500),
        "a completion from a dead job: {:?}",
        response.map(|r| r.text())
    );
    let code = server.wait_exit(Duration::from_secs(30), "after rank 1 panicked");
    assert_ne!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let stderr = server.stderr_text();
    assert!(stderr.contains("aborting the MPI job: tensor-parallel rank 1 panicked: injected failure"), "{stderr}");
}

/// `mpirun -n 2 tessera generate DIR` on a two-rank directory: rank 0 prints one JSON object
/// with transformers' tokens (tp 2) for prompts of 1, 7 and 100 tokens and 50 new tokens,
/// rank 1 follows its steps and prints nothing, and both exit 0 (streamed text too: rank 0
/// alone writes it). A checkpoint (not a compiled directory) under two processes is refused.
#[test]
fn two_rank_processes_generate_the_tokens_of_one() {
    let reference = crate::serve_reference::reference();
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = two_rank_directory(work.path());
    let dir = dir.to_str().expect("a UTF-8 path");
    let limit = Duration::from_secs(120);
    let new_tokens = reference.new_tokens.to_string();
    for case in &reference.models["llama-tiny"] {
        let args = ["generate", dir, "--prompt", &case.prompt, "--max-new-tokens", &new_tokens, "--json"];
        let out = crate::mpi::mpirun(&repo_root(), 2, &args, &[], limit);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "rank 0 alone prints: {}", out.stdout);
        let json: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
        let label = format!("prompt of {} tokens", case.prompt_ids.len());
        assert_eq!(json["generated_ids"], json!(case.generated_ids), "{label}");
        assert_eq!(json["tp"], 2, "{label}");
        assert!(json["all_reduce_seconds"].as_f64().is_some_and(|s| s > 0.0), "{label}: {json}");
    }
    let case = &reference.models["llama-tiny"][1];
    let streamed = crate::mpi::mpirun(&repo_root(), 2, &["generate", dir, "--prompt", &case.prompt], &[], limit);
    let alone = tessera(&repo_root(), &["generate", dir, "--prompt", &case.prompt]);
    assert_eq!((streamed.code, alone.code), (Some(0), 0), "{}\n{}", streamed.stderr, alone.stderr);
    assert_eq!(streamed.stdout, alone.stdout, "two processes stream what the threads of one do");
    let source = checkpoint("llama-tiny");
    let args = ["generate", source.to_str().expect("a UTF-8 path"), "--prompt", "hi"];
    let refused = crate::mpi::mpirun(&repo_root(), 2, &args, &[], limit);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("under a launcher of 2 processes"), "{}", refused.stderr);
}

/// Under MPI a step that fails on one rank (a program error, `TESSERA_SERVE_FAULT=1:3:error`,
/// not a crash) is undone on every rank, as with threads: `generate` exits 1 naming the rank
/// and its error without aborting the job, and a server answers the request of the failed
/// step with a 500 naming the rank, then serves 8 mixed requests with transformers' tokens
/// and ends with exit 0 on SIGTERM.
#[test]
fn a_step_failing_on_a_rank_process_is_undone_and_the_ranks_serve_on() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = two_rank_directory(work.path());
    let fault = [(tessera::fault::SERVE_ENV, "1:3:error")];
    let args = ["generate", dir.to_str().expect("a UTF-8 path"), "--prompt", "Hello world", "--json"];
    let out = crate::mpi::mpirun(&repo_root(), 2, &args, &fault, Duration::from_secs(60));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "no tokens from a failed generation: {}", out.stdout);
    let cause = "tensor-parallel rank 1 failed the step: program embed: injected failure (Engine::inject_fault) on tensor-parallel rank 1";
    assert!(out.stderr.contains(cause), "{}", out.stderr);
    assert!(!out.stderr.contains("aborting the MPI job"), "{}", out.stderr);

    let mut server = mpirun_serve(&dir, &fault);
    let body = json!({"prompt": "Hello world", "max_tokens": 20, "temperature": 0});
    let failed = client::request(&server.address, "POST", "/v1/completions", body.to_string().as_bytes())
        .expect("the request goes through");
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(failed.text().contains(cause), "{}", failed.text());
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    let rank0 = rank_process(server.pid(), 0);
    // SAFETY: kill(2) on a process of this test's job has no memory effects.
    assert_eq!(unsafe { libc::kill(rank0, libc::SIGTERM) }, 0);
    assert_eq!(server.wait_exit(Duration::from_secs(60), "after SIGTERM to rank 0"), 0);
    let stderr = server.stderr_text();
    assert!(stderr.contains("tensor-parallel rank 1: a step failed and was undone on every rank"), "{stderr}");

    // Rank 0's head failing in a decode step (one run, past its all-reduces): rank 1 has
    // finished the step when rank 0 fails, and undoes it on rank 0's word.
    let mut server = mpirun_serve(&dir, &[(tessera::fault::SERVE_ENV, "0:3:head-error")]);
    let failed = client::request(&server.address, "POST", "/v1/completions", body.to_string().as_bytes())
        .expect("the request goes through");
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(failed.text().contains("program head: injected failure"), "{}", failed.text());
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    let rank0 = rank_process(server.pid(), 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(rank0, libc::SIGTERM) }, 0);
    assert_eq!(server.wait_exit(Duration::from_secs(60), "after SIGTERM to rank 0"), 0);
}
