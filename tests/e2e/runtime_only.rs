//! The runtime without the compiler: `tessera-runtime` and `tessera-rt` depend on no MLIR or LLVM
//! (checked with `cargo tree`), `tessera-rt run` writes what `tessera run` writes for the same
//! artifact, and under `mpirun` every process runs its rank's program.

use super::mpi::run_launcher;
use super::support::{example, files_in, repo_root, tessera, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tessera_ir::artifact::Manifest;

/// Crates that bring MLIR or LLVM into a build.
const COMPILER_CRATES: [&str; 4] = ["melior", "mlir-sys", "inkwell", "llvm-sys"];

/// The package names in `cargo tree -p PACKAGE -e normal`, one per line.
fn normal_dependencies(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .current_dir(repo_root())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines are "name vX.Y.Z (path)" or "name vX.Y.Z (*)".
    text.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect()
}

fn compiler_crates_in(deps: &[String]) -> Vec<&str> {
    COMPILER_CRATES.into_iter().filter(|c| deps.iter().any(|d| d == c)).collect()
}

#[test]
fn the_runtime_and_tessera_rt_depend_on_no_mlir_or_llvm() {
    // The check can fail: the compiler's codegen crate has them all.
    let codegen = normal_dependencies("tessera-codegen");
    assert_eq!(compiler_crates_in(&codegen), COMPILER_CRATES, "{codegen:?}");
    for package in ["tessera-ir", "tessera-runtime", "tessera-rt"] {
        let deps = normal_dependencies(package);
        assert!(deps.iter().any(|d| d == "tessera-ir"), "{package}: the tree is read ({deps:?})");
        assert_eq!(compiler_crates_in(&deps), Vec::<&str>::new(), "{package} depends on MLIR/LLVM");
        for compiler in ["tessera-mlir-check", "tessera-codegen", "tessera-passes", "tessera-frontend"] {
            assert!(!deps.iter().any(|d| d == compiler), "{package} depends on {compiler}");
        }
    }
}

/// `tessera-rt`, built once per test run beside the `tessera` binary (cargo builds only the
/// binaries of the package under test, and `tessera-rt` is its own package).
pub(crate) fn tessera_rt_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let tessera = PathBuf::from(env!("CARGO_BIN_EXE_tessera"));
        let profile_dir = tessera.parent().expect("the binary's directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(name) => name.to_string(),
        };
        let out = Command::new(env!("CARGO"))
            .args(["build", "--offline", "--locked", "-q", "-p", "tessera-rt", "--profile", &profile])
            .current_dir(repo_root())
            .output()
            .expect("cargo build runs");
        assert!(out.status.success(), "cargo build -p tessera-rt: {}", String::from_utf8_lossy(&out.stderr));
        profile_dir.join("tessera-rt")
    })
}

pub(crate) fn tessera_rt(cwd: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(tessera_rt_binary()).args(args).current_dir(cwd).output().expect("tessera-rt runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file of `dir` with its bytes, by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_in(dir).into_iter().map(|name| (name.clone(), std::fs::read(dir.join(&name)).expect("read"))).collect()
}

/// Compiles the transformer block example for the CPU into `cwd/ART`.
fn compile_block(cwd: &Path) {
    let block = example("transformer_block.mlir");
    let out = tessera(cwd, &["compile", &block, "--target", "cpu", "--dim", "batch=2", "-o", "art"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn tessera_rt_runs_an_artifact_as_tessera_run_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    compile_block(cwd);
    let run = ["run", "art", "--random-inputs", "7", "--repeat", "2", "--timing", "-o"];
    let compiler = tessera(cwd, &[&run[..], &["by-tessera"]].concat());
    assert_eq!(compiler.code, 0, "{}", compiler.stderr);
    let runtime = tessera_rt(cwd, &[&run[..], &["by-rt"]].concat());
    assert_eq!(runtime.code, 0, "{}", runtime.stderr);
    let (want, got) = (contents(&cwd.join("by-tessera")), contents(&cwd.join("by-rt")));
    assert!(!want.is_empty());
    assert_eq!(got, want, "the same outputs, byte for byte");
    assert_eq!(runtime.stdout.replace("by-rt", "by-tessera"), compiler.stdout);
    for out in [&compiler, &runtime] {
        assert!(out.stderr.contains("compiled artifact, 2 runs with the parameters resident"), "{}", out.stderr);
    }

    // Given inputs are read as `tessera run` reads them: the block's output has the shape of its
    // input x, so it serves as one; a missing file is the same error.
    let output = files_in(&cwd.join("by-tessera")).remove(0);
    let x = format!("x=by-tessera/{output}");
    let given = ["run", "art", "--input", &x, "--random-inputs", "1", "-o"];
    let compiler = tessera(cwd, &[&given[..], &["given-tessera"]].concat());
    let runtime = tessera_rt(cwd, &[&given[..], &["given-rt"]].concat());
    assert_eq!((compiler.code, runtime.code), (0, 0), "{}{}", compiler.stderr, runtime.stderr);
    assert_eq!(contents(&cwd.join("given-rt")), contents(&cwd.join("given-tessera")));
    assert_ne!(contents(&cwd.join("given-rt")), want, "x was read from the file, not drawn");
    let missing_input = ["run", "art", "--input", "x=missing.npy", "-o", "o"];
    let (compiler, runtime) = (tessera(cwd, &missing_input), tessera_rt(cwd, &missing_input));
    assert_eq!((runtime.code, &runtime.stderr), (1, &compiler.stderr));
    assert!(runtime.stderr.starts_with("error: --input x=missing.npy: "), "{}", runtime.stderr);

    // Errors: the same one-line format and exit codes as `tessera`.
    let missing = tessera_rt(cwd, &["run", "no-such-dir", "-o", "o"]);
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stderr, "error: no-such-dir: not a tessera artifact (no manifest.json)\n");
    let usage = tessera_rt(cwd, &["run", "art"]);
    assert_eq!(usage.code, 2, "no -o is a usage error: {}", usage.stderr);
    // The input-size budget is the same flag with the same refusal.
    let tiny = ["--max-memory", "1K", "run", "art", "--random-inputs", "1", "-o", "o"];
    let (compiler, runtime) = (tessera(cwd, &tiny), tessera_rt(cwd, &tiny));
    assert_eq!((runtime.code, &runtime.stderr), (1, &compiler.stderr));
    assert!(runtime.stderr.contains("more than the memory limit of"), "{}", runtime.stderr);
    assert!(!cwd.join("o").exists(), "a failed run writes nothing");
}

/// Turns the one-rank artifact in `cwd/art` into a two-rank one in `cwd/art2` (`dp=2`, each rank
/// its own copy of the program, as `tessera compile --mesh` would lay them out).
fn two_rank_copy(cwd: &Path) {
    let (from, to) = (cwd.join("art"), cwd.join("art2"));
    for rank in ["rank0", "rank1"] {
        std::fs::create_dir_all(to.join(rank)).expect("mkdir");
        for name in files_in(&from.join("rank0")) {
            std::fs::copy(from.join("rank0").join(&name), to.join(rank).join(&name)).expect("copy");
        }
    }
    let text = std::fs::read_to_string(from.join("manifest.json")).expect("manifest");
    let mut manifest: Manifest = serde_json::from_str(&text).expect("manifest parses");
    let mut second = manifest.ranks[0].clone();
    second.rank = 1;
    second.program = second.program.replace("rank0/", "rank1/");
    for file in &mut second.files {
        file.path = file.path.replace("rank0/", "rank1/");
    }
    manifest.ranks.push(second);
    manifest.mesh = vec![tessera_ir::artifact::MeshAxis { name: "dp".into(), size: 2 }];
    let json = serde_json::to_string_pretty(&manifest).expect("json");
    std::fs::write(to.join("manifest.json"), json).expect("write manifest");
}

fn mpirun_rt(cwd: &Path, ranks: usize, args: &[&str]) -> super::mpi::MpiOutcome {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", &ranks.to_string()])
        .arg(tessera_rt_binary())
        .args(args)
        .current_dir(cwd);
    run_launcher(cmd, Duration::from_secs(60))
}

#[test]
fn under_mpirun_each_process_runs_its_ranks_program_and_rank_0_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    compile_block(cwd);
    two_rank_copy(cwd);
    let single = tessera_rt(cwd, &["run", "art", "--random-inputs", "3", "-o", "single"]);
    assert_eq!(single.code, 0, "{}", single.stderr);

    let two = mpirun_rt(cwd, 2, &["run", "art2", "--random-inputs", "3", "-o", "two"]);
    assert_eq!(two.code, Some(0), "{}", two.stderr);
    assert_eq!(contents(&cwd.join("two")), contents(&cwd.join("single")));
    assert_eq!(two.stdout.matches("wrote ").count(), files_in(&cwd.join("single")).len(), "rank 0 alone writes");

    // A world of another size is refused by every rank, before any runs. mpirun kills the
    // remaining ranks once the first one exits non-zero, so a loaded machine may show fewer than
    // three copies of the message; every error line it shows must be the refusal.
    let three = mpirun_rt(cwd, 3, &["run", "art2", "--random-inputs", "3", "-o", "three"]);
    assert_ne!(three.code, Some(0));
    let refusal = "error: the artifact has 2 rank(s) (mesh dp=2) but 3 process(es) were launched: run it with \
                   `mpirun -n 2` or `srun -n 2`";
    let errors: Vec<&str> = three.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!errors.is_empty() && errors.len() <= 3, "{}", three.stderr);
    assert!(errors.iter().all(|l| *l == refusal), "{}", three.stderr);
    let alone = tessera_rt(cwd, &["run", "art2", "--random-inputs", "3", "-o", "alone"]);
    assert_eq!(alone.code, 1);
    assert!(alone.stderr.contains("not launched by mpirun or srun: run it with `mpirun -n 2`"), "{}", alone.stderr);
    assert!(!cwd.join("three").exists() && !cwd.join("alone").exists());

    // Rank 1 loads rank1/ (and checks it): damaging its weights fails that rank, by name.
    let weights = cwd.join("art2/rank1/weights.bin");
    let mut bytes = std::fs::read(&weights).expect("weights");
    bytes.push(0);
    std::fs::write(&weights, bytes).expect("damage");
    let damaged = mpirun_rt(cwd, 2, &["run", "art2", "--random-inputs", "3", "-o", "damaged"]);
    assert_ne!(damaged.code, Some(0));
    assert!(damaged.stderr.contains("rank1/weights.bin: corrupted: SHA-256"), "{}", damaged.stderr);
    assert!(!damaged.stderr.contains("rank0/"), "{}", damaged.stderr);
}

/// `--expect-sha256` pins an artifact for a deployment: both binaries run it when its manifest
/// has that SHA-256 and refuse it, before loading anything, when the manifest was changed (here
/// rewritten with every file's hash recomputed, which the integrity check alone accepts) or the
/// expectation is not a SHA-256.
#[test]
fn expect_sha256_pins_the_manifest_in_both_binaries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    assert_eq!(tessera(cwd, &["compile", &example("mlp.mlir"), "--dim", "batch=2", "-o", "art"]).code, 0);
    let manifest_bytes = std::fs::read(cwd.join("art/manifest.json")).expect("manifest");
    let good = tessera_ir::artifact::sha256_hex(&manifest_bytes);
    let upper = good.to_ascii_uppercase();
    for (binary, run) in [("tessera", tessera as fn(&Path, &[&str]) -> Outcome), ("tessera-rt", tessera_rt)] {
        let out = run(cwd, &["run", "art", "--random-inputs", "1", "--expect-sha256", &upper, "-o", "out-ok"]);
        assert_eq!(out.code, 0, "{binary}: {}", out.stderr);
        let out = run(cwd, &["run", "art", "--random-inputs", "1", "--expect-sha256", "abc", "-o", "out-bad"]);
        assert_eq!(out.code, 1, "{binary}: {}", out.stderr);
        assert!(
            out.stderr.contains("--expect-sha256 'abc' is not a SHA-256 (64 hexadecimal digits)"),
            "{}",
            out.stderr
        );
    }
    // The same artifact with its manifest rewritten (another tool version) and rehashed.
    let manifest: tessera_ir::artifact::Manifest = serde_json::from_slice(&manifest_bytes).expect("parse");
    let program: tessera_ir::artifact::Program =
        serde_json::from_slice(&std::fs::read(cwd.join("art/rank0/program.json")).expect("program")).expect("parse");
    let changed = tessera_ir::artifact::Manifest { tessera_version: "9.9.9".into(), ..manifest };
    crate::support::write_rehashed(&cwd.join("art"), &program, &changed);
    let found = tessera_ir::artifact::sha256_hex(&std::fs::read(cwd.join("art/manifest.json")).expect("manifest"));
    for (binary, run) in [("tessera", tessera as fn(&Path, &[&str]) -> Outcome), ("tessera-rt", tessera_rt)] {
        let out = run(cwd, &["run", "art", "--random-inputs", "1", "--expect-sha256", &good, "-o", "out-changed"]);
        assert_eq!(out.code, 1, "{binary}: {}", out.stderr);
        let want = format!("manifest.json: SHA-256 {found} is not the expected {good} (--expect-sha256)");
        assert!(out.stderr.contains(&want), "{binary}: {}", out.stderr);
        // Without the expectation the rehashed artifact is accepted: the pin is what refused it.
        let out = run(cwd, &["run", "art", "--random-inputs", "1", "-o", "out-unpinned"]);
        assert_eq!(out.code, 0, "{binary}: {}", out.stderr);
    }
    assert!(!cwd.join("out-bad").exists() && !cwd.join("out-changed").exists());
    let out = tessera(cwd, &["run", &example("mlp.mlir"), "--expect-sha256", &good, "-o", "o"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--expect-sha256 checks a compiled artifact's manifest"), "{}", out.stderr);
}
