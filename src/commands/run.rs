//! `tessera run`: evaluate a model with the reference interpreter on `.npy` inputs.

use super::parse_dim_bindings;
use crate::files::write_atomic;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;
use tessera_runtime::executor::Feed;
use tessera_runtime::npy;

#[derive(Args)]
pub struct RunArgs {
    /// The model to run (.mlir, .json, .onnx, a zoo model), or an artifact directory written
    /// by `tessera compile`.
    pub model: PathBuf,
    /// A graph input and the .npy file holding it (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Directory for the outputs, one NAME.npy per graph output.
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Fill inputs not given with --input with seeded uniform values (floats in [-1, 1)).
    #[arg(long, value_name = "SEED")]
    pub random_inputs: Option<u64>,
    /// Size of a symbolic dimension for random inputs, e.g. --dim batch=8 (repeatable).
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
    /// Print the execution time (without loading and writing files) to standard error.
    #[arg(long)]
    pub timing: bool,
    /// For a compiled artifact: print the wall time per kernel and library call, summed per
    /// kind and sorted by total time, to standard error.
    #[arg(long)]
    pub profile: bool,
    /// For a compiled artifact: bind the model's parameters (weights) once and run N times,
    /// feeding the other inputs each run, as a serving runtime does. With --timing, the bind
    /// and the runs' min and median are reported separately. The outputs are the last run's.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

pub fn run(args: RunArgs) -> Result<()> {
    if args.model.is_dir() {
        return run_artifact(args);
    }
    if args.profile {
        bail!("--profile profiles compiled artifacts (a directory written by `tessera compile`); use --timing for a model");
    }
    if args.repeat > 1 {
        bail!(
            "--repeat runs compiled artifacts (a directory written by `tessera compile`) with their weights bound once"
        );
    }
    let graph = tessera_frontend::load::load_model(&args.model)?;
    let mut bindings = parse_dim_bindings(&args.dim)?;
    super::check_dim_names(&graph, &bindings)?;
    let mut feeds = read_given_inputs(&graph, &args.inputs)?;
    bind_from_feeds(&graph, &feeds, &mut bindings);
    if let Some(seed) = args.random_inputs {
        feeds.extend(random_inputs(&graph, &feeds, &bindings, seed)?);
    }
    let start = std::time::Instant::now();
    let outputs = tessera_runtime::interpreter::run(&graph, &feeds)?;
    if args.timing {
        eprintln!("interpreter: {:.3} s", start.elapsed().as_secs_f64());
    }
    write_outputs(&args.output, &outputs)
}

/// Runs a compiled artifact: loads and checks it, then feeds inputs exactly as for a model (the
/// same seeded random inputs, so outputs are comparable with the interpreter's). The model's
/// parameters are bound once (resident in the arena), the other inputs are fed per run.
fn run_artifact(args: RunArgs) -> Result<()> {
    let artifact = tessera_runtime::executor::load::load(&args.model)?;
    let cuda = artifact.program.target.starts_with("cuda");
    if cuda {
        tessera_runtime::executor::cuda::check(&artifact)?;
    }
    let signature = signature_graph(&artifact.program);
    let mut feeds = read_given_feeds(&signature, &args.inputs)?;
    if let Some(seed) = args.random_inputs {
        let random = random_inputs(&signature, &feeds, &HashMap::new(), seed)?;
        feeds.extend(random.into_iter().map(|(name, t)| (name, Feed::Tensor(t))));
    }
    let (resident, per_run): (Vec<_>, Vec<_>) = feeds.into_iter().partition(|(name, _)| {
        artifact.program.inputs.iter().any(|binding| binding.name == *name && binding.parameter)
    });
    let mut profile = tessera_runtime::executor::profile::Profile::new();
    let mut timings = Timings::default();
    let outputs = if cuda {
        if args.profile {
            bail!("--profile times CPU artifacts; this artifact targets {}", artifact.program.target);
        }
        let executor = tessera_runtime::executor::cuda::CudaExecutor::new(artifact)?;
        let mut bound = timings.bind(|| executor.bind(&resident))?;
        timings.runs(args.repeat, || bound.run_stored(&per_run))?
    } else {
        let executor = tessera_runtime::executor::cpu::CpuExecutor::new(artifact)?;
        let mut bound = timings.bind(|| executor.bind(&resident))?;
        // Outputs come back as the arena's bytes, written to .npy as they are.
        if args.profile {
            profile.record("resident inputs (bound once)", timings.bind);
            timings.runs(args.repeat, || bound.run_stored(&per_run, Some(&mut profile)))?
        } else {
            timings.runs(args.repeat, || bound.run_stored(&per_run, None))?
        }
    };
    if args.timing {
        eprint!("{}", timings.report(resident.len()));
    }
    if args.profile {
        if args.repeat > 1 {
            eprintln!("profile, summed over {} runs:", args.repeat);
        }
        eprint!("{}", profile.report());
    }
    write_feeds(&args.output, &outputs)
}

/// Wall times of a compiled run: binding the resident inputs once, then each run.
#[derive(Default)]
struct Timings {
    bind: std::time::Duration,
    runs: Vec<std::time::Duration>,
}

impl Timings {
    fn bind<T, E>(&mut self, bind: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = std::time::Instant::now();
        let bound = bind()?;
        self.bind = start.elapsed();
        Ok(bound)
    }

    /// Runs `run` `repeat` times (at least once), keeping the last outputs.
    fn runs<T, E>(&mut self, repeat: u32, mut run: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        loop {
            let start = std::time::Instant::now();
            let outputs = run()?;
            self.runs.push(start.elapsed());
            if self.runs.len() >= repeat as usize {
                return Ok(outputs);
            }
        }
    }

    /// "compiled artifact: S s" for the bind plus the first run (what one cold `run` costs),
    /// then, for several runs, the steady state with the parameters resident.
    fn report(&self, resident: usize) -> String {
        let secs = |d: std::time::Duration| d.as_secs_f64();
        let first = self.runs.first().copied().unwrap_or_default();
        let mut out = format!(
            "compiled artifact: {:.3} s (binding {resident} parameter inputs once {:.3} s, first run {:.3} s)\n",
            secs(self.bind + first),
            secs(self.bind),
            secs(first)
        );
        if self.runs.len() > 1 {
            let mut sorted = self.runs.clone();
            sorted.sort();
            let median = if sorted.len() % 2 == 1 {
                secs(sorted[sorted.len() / 2])
            } else {
                (secs(sorted[sorted.len() / 2 - 1]) + secs(sorted[sorted.len() / 2])) / 2.0
            };
            out += &format!(
                "compiled artifact, {} runs with the parameters resident: min {:.3} s, median {:.3} s\n",
                sorted.len(),
                secs(sorted[0]),
                median
            );
        }
        out
    }
}

/// A graph with the program's inputs only: what input reading needs to know.
fn signature_graph(program: &tessera_ir::artifact::Program) -> Graph {
    let mut g = Graph::new(&program.name);
    for binding in &program.inputs {
        let shape = program.buffers.get(binding.buffer as usize).map(|b| b.shape.clone()).unwrap_or_default();
        let ty = tessera_ir::types::TensorType::of_static(binding.dtype, &shape);
        g.add_input(&binding.name, ty, tessera_ir::graph::InputRole::Activation);
    }
    g
}

/// Reads every `--input NAME=FILE.npy`, checking the name and converting to the declared dtype
/// where the documented f32 stand-in applies (bf16 and fp8 have no .npy dtype).
fn read_given_inputs(graph: &Graph, specs: &[String]) -> Result<Vec<(String, Tensor)>> {
    read_given(graph, specs, |file, dtype| npy::read_npy(file).and_then(|t| npy::conform_to(t, dtype)))
}

/// [`read_given_inputs`] for an artifact: an array already in the input's storage (f32 for f32,
/// i64 for i64) is kept as bytes, which the executor copies into its arena without converting.
fn read_given_feeds(graph: &Graph, specs: &[String]) -> Result<Vec<(String, Feed)>> {
    read_given(graph, specs, npy::read_npy_feed)
}

fn read_given<T>(
    graph: &Graph,
    specs: &[String],
    read: impl Fn(&Path, DType) -> Result<T, npy::NpyError>,
) -> Result<Vec<(String, T)>> {
    let declared: HashMap<&str, _> =
        graph.inputs().iter().map(|&v| (graph.value(v).name.as_str(), graph.value(v).ty.dtype)).collect();
    let mut seen = HashSet::new();
    let mut feeds = Vec::new();
    for spec in specs {
        let (name, file) = spec.split_once('=').with_context(|| format!("--input '{spec}': expected NAME=FILE.npy"))?;
        let name = name.trim_start_matches('%');
        let Some(&dtype) = declared.get(name) else {
            let known: Vec<&str> = graph.inputs().iter().map(|&v| graph.value(v).name.as_str()).collect();
            bail!("--input '{name}': the model has no input of that name (inputs: {})", known.join(", "));
        };
        if !seen.insert(name.to_string()) {
            bail!("--input '{name}' is given twice");
        }
        let tensor = read(Path::new(file), dtype).with_context(|| format!("--input {name}={file}"))?;
        feeds.push((name.to_string(), tensor));
    }
    Ok(feeds)
}

/// Learns symbolic dimension sizes from the inputs given, without overriding `--dim`; the
/// interpreter reports any inconsistency precisely.
fn bind_from_feeds(graph: &Graph, feeds: &[(String, Tensor)], bindings: &mut HashMap<String, u64>) {
    for &v in graph.inputs() {
        let value = graph.value(v);
        let Some((_, tensor)) = feeds.iter().find(|(n, _)| *n == value.name) else { continue };
        for (dim, &size) in value.ty.dims.iter().zip(&tensor.shape) {
            if let Dim::Symbolic(s) = dim {
                bindings.entry(s.clone()).or_insert(size as u64);
            }
        }
    }
}

/// Seeded values for the graph inputs that `feeds` does not give.
fn random_inputs<T>(
    graph: &Graph,
    feeds: &[(String, T)],
    bindings: &HashMap<String, u64>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for &v in graph.inputs() {
        let value = graph.value(v);
        if feeds.iter().any(|(n, _)| *n == value.name) {
            continue;
        }
        let ty = value.ty.substitute(bindings);
        let Some(shape) = ty.static_shape() else {
            let unbound: Vec<&str> = ty.symbols().collect();
            bail!(
                "input %{} has symbolic dimension(s) {}: give their sizes with --dim NAME=SIZE",
                value.name,
                unbound.join(", ")
            );
        };
        tessera_ir::budget::check_shape(&format!("random input %{}", value.name), &shape)?;
        let shape = shape.into_iter().map(|n| n as usize).collect();
        let mut rng = SplitMix64::for_name(seed, &value.name);
        out.push((value.name.clone(), uniform_tensor(&mut rng, ty.dtype, shape)));
    }
    Ok(out)
}

/// Writes `NAME.npy` per output. Every file is staged and renamed into place, so an error
/// leaves no partial file; outputs returned twice get a `_N` suffix.
fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> Result<()> {
    write_encoded(dir, outputs.iter().map(|(name, t)| Ok((name.as_str(), npy::write_npy_bytes(t)))))
}

/// [`write_outputs`] for an artifact's outputs (stored bytes go to the file as they are).
fn write_feeds(dir: &Path, outputs: &[(String, Feed)]) -> Result<()> {
    write_encoded(
        dir,
        outputs.iter().map(|(name, feed)| {
            let bytes = npy::write_npy_feed_bytes(feed).map_err(|e| anyhow::anyhow!("output {name}: {e}"))?;
            Ok((name.as_str(), bytes))
        }),
    )
}

fn write_encoded<'a>(dir: &Path, outputs: impl Iterator<Item = Result<(&'a str, Vec<u8>)>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create output directory", dir.display()))?;
    let mut used = HashSet::new();
    let mut encoded = Vec::new();
    for output in outputs {
        let (name, bytes) = output?;
        let mut file = format!("{name}.npy");
        let mut n = 1;
        while !used.insert(file.clone()) {
            file = format!("{name}_{n}.npy");
            n += 1;
        }
        encoded.push((dir.join(file), bytes));
    }
    for (path, bytes) in &encoded {
        write_atomic(path, bytes)?;
    }
    for (path, _) in &encoded {
        println!("wrote {}", path.display());
    }
    Ok(())
}
