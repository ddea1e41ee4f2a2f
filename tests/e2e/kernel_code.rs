//! The kernel code an artifact runs is the code its loader checked (issue 17, item 2 of "What to
//! build"): `kernels.so` swapped on disk after the check is not what gets mapped, and a CUDA
//! artifact's PTX entries must take the parameters the program passes.

use crate::artifact::all_files;
use crate::support::tessera;
use std::path::Path;
use tessera_ir::artifact::{Manifest, Program};
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;
use tessera_runtime::executor::cpu::CpuExecutor;
use tessera_runtime::executor::load::load;

const SPEC: &str = "gpt:layers=1,hidden=32,heads=2,seq=16,vocab=100,dtype=f32,dropout=0";

/// Seeded inputs for every program input.
fn inputs(program: &Program) -> Vec<(String, Tensor)> {
    let shape = |b: u32| program.buffers[b as usize].shape.iter().map(|&n| n as usize).collect();
    let seeded = |name: &str, dtype, b| uniform_tensor(&mut SplitMix64::for_name(7, name), dtype, shape(b));
    program.inputs.iter().map(|b| (b.name.clone(), seeded(&b.name, b.dtype, b.buffer))).collect()
}

/// A shared object whose constructor creates `marker`: what an attacker would swap in.
fn hostile_object(dir: &Path, marker: &Path) -> std::path::PathBuf {
    let source = dir.join("hostile.c");
    let c = format!(
        "#include <stdio.h>\n__attribute__((constructor)) static void hostile(void) {{ fclose(fopen(\"{}\", \"w\")); }}\n",
        marker.display()
    );
    std::fs::write(&source, c).expect("write");
    let object = dir.join("hostile.so");
    let built = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&object).arg(&source).status();
    assert!(built.expect("cc").success());
    object
}

/// The loader checks `kernels.so` (SHA-256, signature table), then the file is replaced by one
/// whose constructor leaves a marker: the executor maps the checked bytes from a sealed memfd,
/// so the constructor never runs, no mapping of the process is the artifact's file, and the
/// outputs are those of the untouched artifact.
#[test]
fn kernels_swapped_after_the_check_are_not_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    assert_eq!(tessera(cwd, &["compile", SPEC, "-o", "good"]).code, 0);
    assert_eq!(tessera(cwd, &["compile", SPEC, "-o", "swapped"]).code, 0);
    let marker = cwd.join("constructor-ran");
    let hostile = hostile_object(cwd, &marker);

    let reference = CpuExecutor::new(load(&cwd.join("good")).expect("load")).expect("executor");
    let feeds = inputs(reference.program());
    let want = reference.run(&feeds).expect("run");

    let checked = load(&cwd.join("swapped")).expect("load");
    let on_disk = cwd.join("swapped/rank0/kernels.so");
    std::fs::copy(&hostile, &on_disk).expect("swap after the check");
    let executor = CpuExecutor::new(checked).expect("the checked bytes load");
    assert!(!marker.exists(), "the object swapped in after the check was loaded");
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let on_disk = on_disk.canonicalize().expect("canonical");
    assert!(!maps.contains(&*on_disk.to_string_lossy()), "the artifact's kernels.so was mapped by path");
    assert!(maps.contains("/memfd:tessera-kernels.so"), "the kernels were not mapped from the sealed copy");
    assert!(executor.run(&feeds).expect("run") == want, "the checked kernels give other outputs");
}

/// A CUDA artifact is checked without a GPU: its PTX files are kept as checked (a later swap on
/// disk changes nothing the executor loads), and PTX whose entry takes another parameter list
/// than the program passes (one parameter fewer, or a 32-bit one) is refused by name at load,
/// even with the manifest's hashes recomputed.
#[test]
fn cuda_ptx_entries_must_take_the_parameters_the_program_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let out = tessera(cwd, &["compile", SPEC, "--target", "cuda:sm_90", "-o", "good"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let artifact = load(&cwd.join("good")).expect("the compiler's PTX matches its program");
    let gpu = artifact.program.gpu.clone().expect("a GPU section");
    let kernel = &gpu.kernels[0];
    let ptx_path = cwd.join("good/rank0").join(&kernel.ptx_file);
    let ptx = std::fs::read_to_string(&ptx_path).expect("ptx");
    std::fs::write(&ptx_path, "garbage").expect("swap after the check");
    assert_eq!(artifact.gpu_code(&kernel.ptx_file), Some(ptx.as_bytes()), "the checked PTX was not kept");
    std::fs::write(&ptx_path, &ptx).expect("restore");

    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(cwd.join("good/manifest.json")).expect("read")).expect("manifest");
    let entry = &kernel.launches[0].entry;
    let tamper = |name: &str, edit: &dyn Fn(&str) -> String| {
        let dir = cwd.join(name);
        for (rel, bytes) in all_files(&cwd.join("good")) {
            std::fs::create_dir_all(dir.join(&rel).parent().expect("parent")).expect("mkdir");
            std::fs::write(dir.join(rel), bytes).expect("copy");
        }
        let edited = edit(&ptx);
        assert_ne!(edited, ptx, "{name}: the edit changed nothing");
        std::fs::write(dir.join("rank0").join(&kernel.ptx_file), edited).expect("write");
        crate::support::write_rehashed(&dir, &artifact.program, &manifest);
        load(&dir).map(|_| ()).expect_err("a tampered PTX loaded").to_string()
    };
    // Every parameter of the first entry but the first dropped.
    let last = format!(",\n\t.param .u64 .ptr .align 1 {entry}_param_");
    let dropped = tamper("dropped", &|text| {
        let at = text.find(&last).expect("a second parameter");
        let end = at + text[at..].find(")").expect("closing parenthesis");
        format!("{}\n{}", &text[..at], &text[end..])
    });
    assert!(dropped.contains(&format!("kernel {}: entry {entry} takes", kernel.symbol)), "{dropped}");
    assert!(dropped.contains("parameters, the program passes"), "{dropped}");
    assert!(dropped.contains(&format!("rank0/{}: cannot load kernels", kernel.ptx_file)), "{dropped}");
    let narrow = tamper("narrow", &|text| text.replacen(".param .u64 .ptr", ".param .u32", 1));
    assert!(narrow.contains("parameter 0 of entry") && narrow.contains("is .u32"), "{narrow}");
    let renamed = tamper("renamed", &|text| text.replace(&format!(".entry {entry}("), ".entry other_name("));
    assert!(renamed.contains(&format!("the PTX declares no entry {entry}")), "{renamed}");
}

/// The CUDA executor loads a kernel's cubin before its PTX, so a cubin whose entry takes other
/// parameters than the program passes is refused at load too (read from its `.nv.info`
/// records; no GPU needed).
#[test]
fn cuda_cubin_entries_must_take_the_parameters_the_program_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cwd = tmp.path();
    let out = tessera(cwd, &["compile", SPEC, "--target", "cuda:sm_90", "-o", "good"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let artifact = load(&cwd.join("good")).expect("the compiler's cubins match its program");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(cwd.join("good/manifest.json")).expect("read")).expect("manifest");
    let gpu = artifact.program.gpu.clone().expect("a GPU section");
    let kernel = &gpu.kernels[0];
    let cubin_file = kernel.cubin_file.as_ref().expect("a cubin (ptxas was available at compile time)");
    let cubin = std::fs::read(cwd.join("good/rank0").join(cubin_file)).expect("cubin");
    let other = gpu.kernels.iter().filter_map(|k| k.cubin_file.as_ref()).find(|c| *c != cubin_file);
    let other = std::fs::read(cwd.join("good/rank0").join(other.expect("a second cubin"))).expect("cubin");
    // One parameter record turned into another attribute: the entry now takes one fewer.
    let record = cubin.windows(4).position(|w| w == [4, 0x17, 12, 0]).expect("a parameter record");
    let mut one_fewer = cubin.clone();
    one_fewer[record + 1] = 0x18;
    for (name, bytes, wanted) in
        [("one-fewer", one_fewer, "parameters, the program passes"), ("foreign", other, "the cubin has no entry")]
    {
        let dir = cwd.join(name);
        for (rel, contents) in all_files(&cwd.join("good")) {
            std::fs::create_dir_all(dir.join(&rel).parent().expect("parent")).expect("mkdir");
            std::fs::write(dir.join(rel), contents).expect("copy");
        }
        std::fs::write(dir.join("rank0").join(cubin_file), bytes).expect("write");
        crate::support::write_rehashed(&dir, &artifact.program, &manifest);
        let error = load(&dir).map(|_| ()).expect_err("a tampered cubin loaded").to_string();
        assert!(error.contains(wanted) && error.contains(&format!("kernel {}", kernel.symbol)), "{name}: {error}");
        assert!(error.contains(&format!("rank0/{cubin_file}: cannot load kernels")), "{name}: {error}");
    }
}
