//! `tessera bench import MODEL --dim NAME=N`: what `tessera compile MODEL --target cpu` costs on a
//! large model, phase by phase (import, with the input hash beside it on a second thread as
//! `tessera compile` hashes it; then compile and artifact write, which overlap as they do in
//! `tessera compile`: `codegen::artifact::compile_to_dir`), with the CPU time of the main thread
//! in each phase (comparable on a shared machine, where wall time is mostly waiting), the peak
//! resident memory against the bytes of the model's weights (issue 15's bar for GPT-2 small:
//! under 3 s in all, peak memory at most 1.5x the weights). Run it from a release build;
//! numbers go to BENCHMARKS.md ("GPT-2 small: import and compile").

use super::parse_dim_specs;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;
use tessera_codegen::artifact::{compile_to_dir, input_hash_of_file, CompileOptions, Target};
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;

/// Runs the phases of `tessera compile MODEL --target cpu --dim ...` on `model` once, writing the
/// artifact into a temporary directory that is removed afterwards, and prints one line per
/// phase and a summary.
pub fn run(models: &[String], dim_specs: &[String]) -> Result<()> {
    let [model] = models else { bail!("bench import takes one model file, got {}", models.len()) };
    let path = Path::new(model);
    if !path.is_file() {
        bail!("{model}: not a file (bench import measures importing a model file)");
    }
    let (dims, ranges) = parse_dim_specs(dim_specs)?;
    if !ranges.is_empty() {
        bail!("bench import compiles for pinned sizes: give --dim NAME=N");
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; build with --release for numbers worth recording");
    }
    let options = CompileOptions {
        target: Target::Cpu,
        dims: dims.clone(),
        graph_options: Vec::new(),
        epilogues: false,
        pinned_outputs: false,
    };
    let start = Instant::now();
    let start_cpu = thread_cpu_seconds();
    // As `tessera compile` does: the input hash on a second thread while the model imports.
    let hashing = {
        let (path, options) = (path.to_path_buf(), options.clone());
        std::thread::spawn(move || {
            let phase = Instant::now();
            input_hash_of_file(&path, &options).map(|hash| (hash, phase.elapsed().as_secs_f64()))
        })
    };
    let (graph, _) = super::load_model_binding(path, &dims, &[])?;
    super::check_dim_names(&graph, &dims)?;
    let import_s = start.elapsed().as_secs_f64();
    let import_cpu = thread_cpu_seconds();
    let import_rss = resident_kib("VmHWM");
    let weight_bytes = constant_bytes(&graph);

    let phase = Instant::now();
    let hashed = hashing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let (hash, hash_s) = hashed.with_context(|| format!("{model}: cannot read"))?;
    let hash_wait_s = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    let out = std::env::temp_dir().join(format!("tessera-bench-import-{}", std::process::id()));
    // As `tessera compile` does: the weights written and fsynced while the kernels compile.
    let compiled = compile_to_dir(&graph, hash, &options, &out).with_context(|| model.clone())?;
    drop(graph);
    let compile_s = phase.elapsed().as_secs_f64();
    let compile_cpu = thread_cpu_seconds();
    let total_s = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;

    let peak = resident_kib("VmHWM");
    let mib = |kib: Option<u64>| kib.map_or("unknown".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
    let weight_mib = weight_bytes as f64 / (1 << 20) as f64;
    println!("model          {model} ({} nodes compiled)", compiled.stats.nodes);
    let cpu_between = |from: Option<f64>, to: Option<f64>| match (from, to) {
        (Some(from), Some(to)) => format!("{:.3} s", to - from),
        _ => "unknown".to_string(),
    };
    println!(
        "import         {import_s:.3} s (main thread CPU {}; peak RSS so far {})",
        cpu_between(start_cpu, import_cpu),
        mib(import_rss)
    );
    println!("input hash     {hash_s:.3} s on a second thread during import ({hash_wait_s:.3} s waited for after it)");
    println!(
        "compile + write {compile_s:.3} s (main thread CPU {}; cpu target, weights written and fsynced on a second thread)",
        cpu_between(import_cpu, compile_cpu)
    );
    println!("total          {total_s:.3} s");
    if let Some((user, sys)) = cpu_seconds() {
        // Wall time on a shared machine is mostly waiting for a core; CPU time is comparable.
        println!("cpu time       {user:.3} s user + {sys:.3} s sys = {:.3} s", user + sys);
    }
    println!("weights        {weight_mib:.0} MiB ({weight_bytes} bytes of constants)");
    match peak {
        Some(k) => println!(
            "peak RSS       {} ({:.2}x the weights)",
            mib(Some(k)),
            k as f64 * 1024.0 / weight_bytes.max(1) as f64
        ),
        None => println!("peak RSS       unknown (no /proc/self/status)"),
    }
    Ok(())
}

/// Bytes of the graph's constants in their own element types (a model's weights).
fn constant_bytes(g: &Graph) -> u64 {
    g.nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Constant(t) => t.dtype.packed_bytes(t.len()),
            _ => None,
        })
        .map(|b| b as u64)
        .sum()
}

/// A `/proc/self/status` memory field (`VmHWM`: peak resident set) in KiB; `None` off Linux.
fn resident_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The calling thread's user + system CPU seconds so far, from `getrusage(RUSAGE_THREAD)`.
fn thread_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which points to one.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it started zeroed).
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// This process's user and system CPU seconds so far (all threads), from `getrusage`.
fn cpu_seconds() -> Option<(f64, f64)> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which points to one.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it started zeroed).
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((seconds(usage.ru_utime), seconds(usage.ru_stime)))
}
