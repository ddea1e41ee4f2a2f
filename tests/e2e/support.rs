//! Helpers shared by the end-to-end tests: running the binary and reading its results.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tessera` with `args` in `cwd`.
pub fn tessera(cwd: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the tessera binary runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository root (where `examples/` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example(name: &str) -> String {
    repo_root().join("examples").join(name).to_string_lossy().into_owned()
}

/// All file names in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// `tessera plan` for GPT-2 on one 8-GPU H100 node, the base the planner's usage-error tests
/// add their bad flags to.
pub const GPT2_PLAN: [&str; 6] = ["plan", "gpt2", "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8"];

/// `tessera plan` serving Llama 3 70B on one 8-GPU H100 node, followed by `extra`.
pub fn llama3_70b_serve_plan<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let base = ["plan", "llama3-70b", "--mode", "serve", "--cluster", "h100-80g-sxm:gpus=8"];
    base.iter().chain(extra).copied().collect()
}

/// Runs `base` plus each case's extra flags and checks the usage error: exit code 2 and one
/// line of stderr that starts with the case's message.
pub fn assert_usage_errors(base: &[&str], cases: &[(&[&str], &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, expected) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = tessera(dir.path(), &args);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.starts_with(expected), "{extra:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

/// A zoo preset or spec in the cost model's terms.
pub fn zoo(spec: &str) -> tessera::workload::ZooWorkload {
    let cfg = tessera_frontend::zoo::spec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    tessera::workload::ZooWorkload::new(cfg)
}

/// A cluster preset or spec, as `tessera plan --cluster` reads it.
pub fn cluster(spec: &str) -> tessera_ir::hardware::ClusterSpec {
    tessera_frontend::cluster::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// The fields issue 5 requires of a plan's JSON, checked through the library and the CLI.
pub const PLAN_FIELDS: [&str; 10] = [
    "step_time_s",
    "tokens_per_s",
    "model_tflops_per_gpu",
    "hardware_tflops_per_gpu",
    "mfu",
    "memory_per_gpu_bytes",
    "parallelism",
    "comm_bytes_per_step",
    "bubble_fraction",
    "alternatives",
];

/// A weight-heavy MLP as MLIR text: `blocks` pairs of `width -> 4 width` (GELU) and
/// `4 width -> width` bf16 matmuls over `[batch, tokens, width]` with a symbolic batch. With a
/// small batch its step is dominated by streaming and synchronizing weights, which tensor
/// parallelism splits and data parallelism does not.
pub fn wide_mlp_mlir(blocks: usize, tokens: u64, width: u64) -> String {
    let act = |w: u64| format!("tensor<?x{tokens}x{w}xbf16, [\"batch\"]>");
    let mut params = vec![format!("%x: {}", act(width))];
    let mut body = String::new();
    let mut cur = "%x".to_string();
    for i in 0..2 * blocks {
        let (k, n) = if i % 2 == 0 { (width, 4 * width) } else { (4 * width, width) };
        params.push(format!("%w{i}: tensor<{k}x{n}xbf16> {{tsr.param}}"));
        body += &format!("  %h{i} = \"tsr.matmul\"({cur}, %w{i}) : ({}, tensor<{k}x{n}xbf16>) -> {}\n", act(k), act(n));
        cur = format!("%h{i}");
        if i % 2 == 0 {
            body += &format!("  %a{i} = \"tsr.gelu\"({cur}) : ({}) -> {}\n", act(n), act(n));
            cur = format!("%a{i}");
        }
    }
    format!(
        "func.func @wide_mlp({}) -> ({}) {{\n{body}  return {cur} : {}\n}}\n",
        params.join(", "),
        act(width),
        act(width)
    )
}

/// Writes `program` as `dir/rank0/program.json`, then `manifest` with every rank-0 file's
/// SHA-256 and size recomputed: a tampered artifact that passes the integrity check, so the
/// loader's validity checks are what must refuse it.
pub fn write_rehashed(dir: &Path, program: &tessera_ir::artifact::Program, manifest: &tessera_ir::artifact::Manifest) {
    std::fs::write(dir.join("rank0/program.json"), serde_json::to_vec_pretty(program).expect("json")).expect("write");
    let mut manifest = manifest.clone();
    for f in &mut manifest.ranks[0].files {
        let bytes = std::fs::read(dir.join(&f.path)).expect("read");
        f.sha256 = tessera_ir::artifact::sha256_hex(&bytes);
        f.bytes = bytes.len() as u64;
    }
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

/// Writes each `(name, text)` case to `NAME.stablehlo.mlir` in `dir` and runs `tessera info` on
/// it; asserts exit status 1, no panic, and a first line of stderr located in that file
/// (`error: FILE:LINE:COL: message`). Returns those lines, one per case, in order.
pub fn stablehlo_error_lines<S: AsRef<str>>(dir: &Path, cases: &[(&str, S)]) -> Vec<String> {
    cases
        .iter()
        .map(|(name, text)| {
            let file = format!("{name}.stablehlo.mlir");
            std::fs::write(dir.join(&file), text.as_ref()).expect("write the case");
            let out = tessera(dir, &["info", &file]);
            assert_eq!(out.code, 1, "{name}: exit status; stderr: {}", out.stderr);
            assert!(!out.stderr.contains("panicked"), "{name}: {}", out.stderr);
            let line = out.stderr.lines().next().unwrap_or_default().to_string();
            let located = line.strip_prefix(&format!("error: {file}:")).and_then(|rest| {
                let mut parts = rest.splitn(3, ':');
                Some((parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?))
            });
            assert!(located.is_some(), "{name}: not a located error: {line}");
            line
        })
        .collect()
}

/// Compiles the ONNX node test (or fixture) directory `case` for the CPU into `tmp`, asserts that
/// no step is left to the reference interpreter, and runs its data sets on the compiled code
/// under the node-test tolerances.
pub fn run_node_test_compiled(case: &Path, tmp: &Path) -> tessera_frontend::onnx::conformance::Outcome {
    use tessera_runtime::executor::cpu::CpuExecutor;
    use tessera_runtime::executor::load::load;
    let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let artifact = tmp.join(&name);
    let model = case.join("model.onnx").to_string_lossy().into_owned();
    let out = tessera(tmp, &["compile", &model, "-o", &artifact.to_string_lossy()]);
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    let reference_steps = out.stdout.lines().find_map(|l| l.strip_prefix("reference steps: "));
    assert!(reference_steps.is_some_and(|r| r.starts_with("0 of ")), "{name}: {}", out.stdout);
    let executor = CpuExecutor::new(load(&artifact).expect("load")).expect("executor");
    let compiled = |_: &tessera_ir::graph::Graph, inputs: &[(String, tessera_ir::tensor::Tensor)]| {
        executor.run(inputs).map_err(|e| e.to_string())
    };
    tessera_frontend::onnx::conformance::run_node_test(case, &compiled)
}
