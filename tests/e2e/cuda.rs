//! CUDA artifacts: `tessera compile --target cuda:sm_80|cuda:sm_90` writes per-kernel PTX (and
//! cubins, since the test machine has ptxas), launch geometry and cuBLAS GEMM plans; every PTX
//! file assembles for its architecture; compiles are deterministic; and `tessera run` either
//! says "no CUDA driver found" or, where a GPU exists, gives the interpreter's outputs.

use crate::artifact::{all_files, assert_close};
use crate::support::tessera;
use std::path::{Path, PathBuf};
use tessera_runtime::npy::read_npy;

/// A small GPT-2-style model (f32, no dropout) that keeps debug-build test time low.
const GPT: &str = "gpt:layers=2,hidden=64,heads=4,seq=16,vocab=100,dtype=f32,dropout=0";

fn ptxas() -> PathBuf {
    let path = tessera_codegen::cuda::find_ptxas();
    path.unwrap_or_else(|| panic!("ptxas is missing: run scripts/fetch-ptxas.sh (it fills .cache/cuda-nvcc)"))
}

fn assemble(ptx: &Path, arch: &str) -> Result<(), String> {
    let cubin = ptx.with_extension("check.cubin");
    let out = std::process::Command::new(ptxas())
        .arg(format!("-arch={arch}"))
        .arg(ptx)
        .arg("-o")
        .arg(&cubin)
        .output()
        .expect("ptxas runs");
    let _ = std::fs::remove_file(&cubin);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn gpt_compiles_to_ptx_for_sm_80_and_sm_90_deterministically_and_runs_or_says_no_driver() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    for (dir, target) in [("a", "cuda:sm_90"), ("b", "cuda:sm_90"), ("c", "cuda:sm_80")] {
        let out = tessera(cwd, &["compile", GPT, "--target", target, "-o", dir]);
        assert_eq!(out.code, 0, "{target}: {}", out.stderr);
        assert!(out.stdout.contains(&format!("for {target}")), "{}", out.stdout);
        assert!(out.stdout.contains("library steps run on the host"), "{}", out.stdout);
    }
    assert!(all_files(&cwd.join("a")) == all_files(&cwd.join("b")), "two sm_90 compiles differ");

    for (dir, arch) in [("a", "sm_90"), ("c", "sm_80")] {
        let root = cwd.join(dir);
        let manifest: tessera_ir::artifact::Manifest =
            serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("manifest")).expect("parse");
        assert_eq!(manifest.target, format!("cuda:{arch}"));
        let program: tessera_ir::artifact::Program =
            serde_json::from_slice(&std::fs::read(root.join("rank0/program.json")).expect("program")).expect("parse");
        let gpu = program.gpu.as_ref().expect("a GPU section");
        assert_eq!(gpu.arch, arch);
        // One PTX module per distinct kernel; the two layers' steps launch the same ones.
        let mut launched: Vec<&str> = program
            .steps
            .iter()
            .filter_map(|s| match s {
                tessera_ir::artifact::Step::Kernel { symbol, .. } => Some(symbol.as_str()),
                tessera_ir::artifact::Step::Library { .. } => None,
            })
            .collect();
        let kernel_steps = launched.len();
        launched.sort();
        launched.dedup();
        let mut compiled: Vec<&str> = gpu.kernels.iter().map(|k| k.symbol.as_str()).collect();
        compiled.sort();
        assert_eq!(launched, compiled, "one GPU kernel per distinct launched symbol");
        assert!(gpu.kernels.len() < kernel_steps, "{} kernels for {kernel_steps} steps", gpu.kernels.len());
        assert!(gpu.kernels.len() >= 4, "{} kernels", gpu.kernels.len());
        // Every matmul of the model (QKV, scores, context, output, MLP, head) is a cuBLAS GEMM.
        let matmuls = program.steps.iter().filter(|s| {
            use tessera_ir::artifact::{LibraryCall, Step};
            matches!(s, Step::Library { call: LibraryCall::MatMul | LibraryCall::MatMulTransposedB, .. })
        });
        assert_eq!(matmuls.count(), gpu.gemms.len());
        assert!(!gpu.gemms.is_empty());
        for kernel in &gpu.kernels {
            assert!(!kernel.launches.is_empty(), "{}", kernel.symbol);
            for launch in &kernel.launches {
                assert_eq!(launch.block, [256, 1, 1]);
                assert!(launch.grid[0] >= 1 && launch.grid[1..] == [1, 1], "{launch:?}");
            }
            let ptx = root.join("rank0").join(&kernel.ptx_file);
            let text = std::fs::read_to_string(&ptx).expect("ptx");
            assert!(text.contains(&format!(".target {arch}")), "{}", ptx.display());
            for launch in &kernel.launches {
                assert!(text.contains(&format!(".entry {}", launch.entry)), "{} lacks {}", ptx.display(), launch.entry);
            }
            if let Err(e) = assemble(&ptx, arch) {
                panic!("ptxas -arch={arch} rejects {}: {e}", ptx.display());
            }
            let cubin = kernel.cubin_file.as_ref().expect("a cubin (ptxas was available at compile time)");
            assert!(root.join("rank0").join(cubin).is_file());
        }
    }

    let out = tessera(cwd, &["run", "a", "--random-inputs", "7", "-o", "out-gpu"]);
    if tessera_runtime::executor::cuda::driver_present() {
        assert_eq!(out.code, 0, "{}", out.stderr);
        let reference = tessera(cwd, &["run", GPT, "--random-inputs", "7", "-o", "out-reference"]);
        assert_eq!(reference.code, 0, "{}", reference.stderr);
        let got = read_npy(&cwd.join("out-gpu/probs.npy")).expect("gpu output");
        let want = read_npy(&cwd.join("out-reference/probs.npy")).expect("reference output");
        assert_close(&got, &want, "GPT on the GPU");
    } else {
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(
            out.stderr.contains("artifact target cuda:sm_90 cannot run here: no CUDA driver found"),
            "{}",
            out.stderr
        );
        assert!(!cwd.join("out-gpu").exists());
        // The kernel benchmark compiles its kernels to PTX, then stops at the driver check.
        let out = tessera(cwd, &["bench", "kernels", "--target", "cuda"]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(out.stderr.contains("bench kernels --target cuda: no CUDA driver found"), "{}", out.stderr);
    }
}

#[test]
fn a_tiny_cuda_program_is_stable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let model = r#"func.func @tiny(%x: tensor<2x4x8xf32>, %w: tensor<8x8xf32>, %s: tensor<8xf32>) -> (tensor<2x4x8xf32>) {
  %m = "tsr.matmul"(%x, %w) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %n = "tsr.rms_norm"(%m, %s) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %y = "tsr.tanh"(%n) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}
"#;
    std::fs::write(cwd.join("tiny.mlir"), model).expect("write");
    let out = tessera(cwd, &["compile", "tiny.mlir", "--target", "cuda:sm_90", "-o", "art"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let program = std::fs::read_to_string(cwd.join("art/rank0/program.json")).expect("program");
    insta::assert_snapshot!("tiny_cuda_program", program);
    let manifest: tessera_ir::artifact::Manifest =
        serde_json::from_slice(&std::fs::read(cwd.join("art/manifest.json")).expect("manifest")).expect("parse");
    let files: Vec<&str> = manifest.ranks[0].files.iter().map(|f| f.path.as_str()).collect();
    insta::assert_snapshot!(
        "tiny_cuda_manifest",
        format!("target {}\noptions {:?}\nfiles {:?}", manifest.target, manifest.options, files)
    );
    // The loader checks the GPU section before any device work (so on every machine): a GEMM
    // plan that would read past its buffers, and a kernel step without code, are refused.
    let tamper = |name: &str, edit: &dyn Fn(&mut tessera_ir::artifact::GpuProgram)| {
        let dir = cwd.join(name);
        std::fs::create_dir_all(dir.join("rank0/kernels")).expect("mkdir");
        for (rel, bytes) in all_files(&cwd.join("art")) {
            std::fs::write(dir.join(rel), bytes).expect("copy");
        }
        let mut program: tessera_ir::artifact::Program =
            serde_json::from_slice(&std::fs::read(dir.join("rank0/program.json")).expect("read")).expect("parse");
        edit(program.gpu.as_mut().expect("gpu section"));
        crate::support::write_rehashed(&dir, &program, &manifest);
        tessera(cwd, &["run", name, "--random-inputs", "1", "-o", "out"])
    };
    let out = tamper("big-gemm", &|gpu| gpu.gemms[0].n = 100);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("step 0: the GEMM plan reaches outside its buffers"), "{}", out.stderr);
    let out = tamper("no-code", &|gpu| gpu.kernels.clear());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("step 1: kernel tsr_kernel_0 has no GPU code"), "{}", out.stderr);
    let out = tamper("escape", &|gpu| gpu.kernels[0].ptx_file = "../../manifest.json".into());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("leaves the artifact directory"), "{}", out.stderr);
}

/// The kernel half of CUDA serving: the serving programs of the Llama checkpoint (GQA, rotary
/// embedding), one rank's four and a `tp=2` rank's five, compile for cuda:sm_80 with every
/// matmul a cuBLAS GEMM and every kernel's PTX assembled by ptxas. The serving engine binds
/// compiled CPU programs only (attention over the paged cache runs on the host), so
/// `compile --serve` still refuses a CUDA target, naming why.
#[test]
fn serving_programs_compile_to_ptx_that_ptxas_assembles() {
    use tessera_codegen::artifact::{compile, write_artifact, CompileOptions, Target};
    let checkpoint = crate::serve_reference::checkpoint("llama-tiny");
    let model = tessera::serve::open_model(checkpoint.to_str().expect("a UTF-8 path"), 0).expect("the checkpoint");
    let work = tempfile::tempdir().expect("tempdir");
    for tp in [1, 2] {
        let graphs = tessera_frontend::zoo::serve::build_serving_tp(&model.config, &model.arch, 4, tp)
            .expect("the serving programs build");
        for (name, graph) in graphs.named() {
            let options = CompileOptions {
                target: Target::CudaSm80,
                dims: Default::default(),
                graph_options: vec![format!("serve:program={name}"), "serve:rows=4".to_string()],
                epilogues: false,
                pinned_outputs: false,
            };
            let compiled = compile(graph, b"llama-tiny", &options)
                .unwrap_or_else(|e| panic!("tp={tp} {name}: no CUDA compile: {e}"));
            let dir = work.path().join(format!("tp{tp}-{name}"));
            write_artifact(&dir, &compiled.files).expect("the artifact is written");
            let program: tessera_ir::artifact::Program =
                serde_json::from_slice(&std::fs::read(dir.join("rank0/program.json")).expect("program"))
                    .expect("parse");
            let gpu = program.gpu.as_ref().expect("a GPU section");
            let matmuls = program.steps.iter().filter(|s| {
                use tessera_ir::artifact::{LibraryCall, Step};
                matches!(s, Step::Library { call: LibraryCall::MatMul | LibraryCall::MatMulTransposedB, .. })
            });
            assert_eq!(matmuls.count(), gpu.gemms.len(), "tp={tp} {name}");
            for kernel in &gpu.kernels {
                let ptx = dir.join("rank0").join(&kernel.ptx_file);
                if let Err(e) = assemble(&ptx, "sm_80") {
                    panic!("tp={tp} {name}: ptxas rejects {}: {e}", ptx.display());
                }
                let cubin = kernel.cubin_file.as_ref().expect("a cubin (ptxas was available at compile time)");
                assert!(dir.join("rank0").join(cubin).is_file(), "tp={tp} {name}: {cubin}");
            }
        }
    }
    let out = tessera(
        work.path(),
        &["compile", checkpoint.to_str().expect("a UTF-8 path"), "--serve", "--target", "cuda:sm_80", "-o", "served"],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("--serve compiles for --target cpu (the engine's attention runs on the host)"),
        "{}",
        out.stderr
    );
}
