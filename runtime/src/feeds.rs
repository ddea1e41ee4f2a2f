//! The files around a run, shared by `tessera run` and `tessera-rt run`: `--input NAME=FILE.npy`
//! specs, seeded random values for the inputs not given, and one `NAME.npy` per output.

use crate::executor::Feed;
use crate::npy::{self, NpyError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;

/// Why a run's inputs could not be read or its outputs written.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("--input '{spec}': expected NAME=FILE.npy")]
    Spec { spec: String },
    #[error("--input '{name}': the model has no input of that name (inputs: {known})")]
    UnknownInput { name: String, known: String },
    #[error("--input '{name}' is given twice")]
    GivenTwice { name: String },
    #[error("--input {name}={file}")]
    Read {
        name: String,
        file: String,
        /// Boxed: `NpyError` carries paths and the writer's and budget's errors, and every
        /// `Result` of this module would otherwise be that large.
        #[source]
        source: Box<NpyError>,
    },
    #[error("input %{name} has symbolic dimension(s) {symbols}: give their sizes with --dim NAME=SIZE")]
    Unbound { name: String, symbols: String },
    #[error("input %{name}: {message}")]
    BadDims { name: String, message: String },
    #[error("output {name}: {message}")]
    Encode { name: String, message: String },
    #[error("{}: cannot create output directory", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A random input larger than the `--max-memory` budget.
    #[error(transparent)]
    Budget(#[from] tessera_ir::budget::BudgetError),
    /// The workspace's atomic writer refused or failed (its message names the path).
    #[error(transparent)]
    Write(#[from] tessera_ir::files::FileError),
}

/// Reads every `--input NAME=FILE.npy`, checking the name and converting to the declared dtype
/// where the documented f32 stand-in applies (bf16 and fp8 have no .npy dtype).
pub fn read_inputs(graph: &Graph, specs: &[String]) -> Result<Vec<(String, Tensor)>, FeedError> {
    read_given(graph, specs, |file, dtype| npy::read_npy(file).and_then(|t| npy::conform_to(t, dtype)))
}

/// [`read_inputs`] for an artifact: an array already in the input's storage (f32 for f32, i64
/// for i64) is kept as bytes, which the executor copies into its arena without converting.
pub fn read_feeds(graph: &Graph, specs: &[String]) -> Result<Vec<(String, Feed)>, FeedError> {
    read_given(graph, specs, npy::read_npy_feed)
}

fn read_given<T>(
    graph: &Graph,
    specs: &[String],
    read: impl Fn(&Path, DType) -> Result<T, NpyError>,
) -> Result<Vec<(String, T)>, FeedError> {
    let declared: HashMap<&str, _> =
        graph.inputs().iter().map(|&v| (graph.value(v).name.as_str(), graph.value(v).ty.dtype)).collect();
    let mut seen = HashSet::new();
    let mut feeds = Vec::new();
    for spec in specs {
        let (name, file) = spec.split_once('=').ok_or_else(|| FeedError::Spec { spec: spec.clone() })?;
        let name = name.trim_start_matches('%');
        let Some(&dtype) = declared.get(name) else {
            let known: Vec<&str> = graph.inputs().iter().map(|&v| graph.value(v).name.as_str()).collect();
            return Err(FeedError::UnknownInput { name: name.to_string(), known: known.join(", ") });
        };
        if !seen.insert(name.to_string()) {
            return Err(FeedError::GivenTwice { name: name.to_string() });
        }
        let tensor = read(Path::new(file), dtype).map_err(|source| FeedError::Read {
            name: name.to_string(),
            file: file.to_string(),
            source: Box::new(source),
        })?;
        feeds.push((name.to_string(), tensor));
    }
    Ok(feeds)
}

/// Seeded values for the graph inputs that `feeds` does not give: each input's generator is
/// seeded from `seed` and its name, so a value does not depend on which other inputs are given.
pub fn random_inputs<T>(
    graph: &Graph,
    feeds: &[(String, T)],
    bindings: &HashMap<String, u64>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>, FeedError> {
    let mut out = Vec::new();
    for &v in graph.inputs() {
        let value = graph.value(v);
        if feeds.iter().any(|(n, _)| *n == value.name) {
            continue;
        }
        let ty = value
            .ty
            .substitute(bindings)
            .map_err(|e| FeedError::BadDims { name: value.name.clone(), message: e.to_string() })?;
        let Some(shape) = ty.static_shape() else {
            let unbound: Vec<&str> = ty.symbols().collect();
            return Err(FeedError::Unbound { name: value.name.clone(), symbols: unbound.join(", ") });
        };
        tessera_ir::budget::check_shape(&format!("random input %{}", value.name), &shape)?;
        let shape = shape.into_iter().map(|n| n as usize).collect();
        let mut rng = SplitMix64::for_name(seed, &value.name);
        out.push((value.name.clone(), uniform_tensor(&mut rng, ty.dtype, shape)));
    }
    Ok(out)
}

/// Writes `NAME.npy` per output into `dir` and returns the paths written, in output order.
/// Every file is staged and renamed into place, so an error leaves no partial file; outputs
/// returned twice get a `_N` suffix.
pub fn write_outputs(dir: &Path, outputs: &[(String, Tensor)]) -> Result<Vec<PathBuf>, FeedError> {
    write_encoded(dir, outputs.iter().map(|(name, t)| Ok((name.as_str(), npy::write_npy_bytes(t)))))
}

/// [`write_outputs`] for an artifact's outputs (stored bytes go to the file as they are).
pub fn write_feeds(dir: &Path, outputs: &[(String, Feed)]) -> Result<Vec<PathBuf>, FeedError> {
    write_encoded(
        dir,
        outputs.iter().map(|(name, feed)| {
            let bytes =
                npy::write_npy_feed_bytes(feed).map_err(|message| FeedError::Encode { name: name.clone(), message })?;
            Ok((name.as_str(), bytes))
        }),
    )
}

fn write_encoded<'a>(
    dir: &Path,
    outputs: impl Iterator<Item = Result<(&'a str, Vec<u8>), FeedError>>,
) -> Result<Vec<PathBuf>, FeedError> {
    std::fs::create_dir_all(dir).map_err(|source| FeedError::CreateDir { path: dir.to_path_buf(), source })?;
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
        tessera_ir::files::write_atomic(path, bytes)?;
    }
    Ok(encoded.into_iter().map(|(path, _)| path).collect())
}
