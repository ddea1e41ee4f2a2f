//! Loading a model file by its extension into a verified graph.

use std::fmt;
use std::path::{Path, PathBuf};
use tessera_ir::graph::Graph;

/// The formats a model file can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// The tsr dialect in MLIR text form (`.mlir`).
    MlirText,
    /// The serde JSON view of a graph (`.json`).
    GraphJson,
    /// An ONNX model (`.onnx`), imported by [`crate::onnx`].
    Onnx,
    /// StableHLO text (`.stablehlo.mlir`, or `.mlir` whose ops are `stablehlo.`/`chlo.`),
    /// imported by [`crate::stablehlo`].
    StableHlo,
}

impl ModelFormat {
    /// The format a path's extension names, if any.
    pub fn of_path(path: &Path) -> Option<ModelFormat> {
        if path.file_name()?.to_str()?.ends_with(".stablehlo.mlir") {
            return Some(ModelFormat::StableHlo);
        }
        match path.extension()?.to_str()? {
            "mlir" => Some(ModelFormat::MlirText),
            "json" => Some(ModelFormat::GraphJson),
            "onnx" => Some(ModelFormat::Onnx),
            _ => None,
        }
    }
}

/// Why a model could not be loaded. Displays as one line starting with the file (and, for text
/// formats, the line and column).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: unsupported model format (expected a .mlir, .json or .onnx file, or a zoo model such as gpt2 or llama:layers=2)")]
    UnsupportedFormat { path: PathBuf },
    /// A zoo spec that does not parse or build; the message names the spec.
    #[error("{message}")]
    Zoo { message: String },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax { path: PathBuf, line: u32, col: u32, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}:{source}")]
    StableHlo { path: PathBuf, source: crate::stablehlo::StablehloError },
    #[error("{path}: {source}")]
    Onnx { path: PathBuf, source: Box<crate::onnx::OnnxError> },
}

/// Reads and verifies a model file, or builds a zoo model (`gpt2`, `llama3-8b`,
/// `gpt:layers=2,hidden=64,heads=4`) when the argument is no file with a model extension.
pub fn load_model(path: &Path) -> Result<Graph, LoadError> {
    load_model_with(path, &crate::onnx::ImportOptions::default())
}

/// [`load_model`] with the ONNX importer's options (the planner imports initializers as
/// parameters); other formats ignore them.
pub fn load_model_with(path: &Path, onnx_options: &crate::onnx::ImportOptions) -> Result<Graph, LoadError> {
    let Some(format) = ModelFormat::of_path(path) else {
        return match path.to_str() {
            Some(spec) if !path.exists() => load_zoo_model(spec, path),
            _ => Err(LoadError::UnsupportedFormat { path: path.to_path_buf() }),
        };
    };
    if format == ModelFormat::Onnx {
        // Binary and memory-mapped: the importer reads the file itself.
        return crate::onnx::import_model_with(path, onnx_options).map_err(|e| match e {
            crate::onnx::OnnxError::Io { source, .. } => LoadError::Io { path: path.to_path_buf(), source },
            source => LoadError::Onnx { path: path.to_path_buf(), source: Box::new(source) },
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    load_model_text(path, &text, format)
}

/// The whole zoo model `spec` (embedding, every layer, head) for batch 1 on one device. A spec
/// that names no preset and has no `family:` overrides is reported as an unsupported file.
fn load_zoo_model(spec: &str, path: &Path) -> Result<Graph, LoadError> {
    let zoo_error = |e: &dyn std::fmt::Display| LoadError::Zoo { message: format!("zoo model '{spec}': {e}") };
    if crate::zoo::resnet::is_resnet_spec(spec) {
        let cfg = crate::zoo::resnet::parse(spec).map_err(|e| LoadError::Zoo { message: e.to_string() })?;
        let graph = crate::zoo::resnet::build(&cfg).map_err(|e| zoo_error(&e))?;
        tessera_ir::verify::verify(&graph).map_err(|e| zoo_error(&e))?;
        return Ok(graph);
    }
    let cfg = match crate::zoo::spec::parse(spec) {
        Ok(cfg) => cfg,
        Err(e) if spec.contains(':') => return Err(LoadError::Zoo { message: e.to_string() }),
        Err(_) => return Err(LoadError::UnsupportedFormat { path: path.to_path_buf() }),
    };
    let opts = cfg.block_shape();
    let mut graph = crate::zoo::build::build_model(&cfg, &opts).map_err(|e| zoo_error(&e))?.graph;
    // The model's one output is the next-token distribution; name it (`tessera run` writes
    // `probs.npy`) instead of leaving the builder's number.
    if let [out] = *graph.outputs() {
        if graph.value(out).name.chars().all(|c| c.is_ascii_digit()) && !graph.has_name("probs") {
            graph.rename_value(out, "probs");
        }
    }
    tessera_ir::verify::verify(&graph).map_err(|e| zoo_error(&e))?;
    Ok(graph)
}

/// Parses and verifies model text that came from `path` (used in messages only).
pub fn load_model_text(path: &Path, text: &str, format: ModelFormat) -> Result<Graph, LoadError> {
    let path = path.to_path_buf();
    match format {
        ModelFormat::MlirText if crate::stablehlo::looks_like_stablehlo(text) => {
            load_model_text(&path, text, ModelFormat::StableHlo)
        }
        ModelFormat::StableHlo => {
            crate::stablehlo::import_text(text).map_err(|source| LoadError::StableHlo { path, source })
        }
        ModelFormat::MlirText => tessera_ir::mlir::parse_verified(text).map_err(|e| LoadError::Syntax {
            path,
            line: e.line,
            col: e.col,
            message: e.message,
        }),
        ModelFormat::GraphJson => {
            let graph = tessera_ir::json::from_json(text).map_err(|e| LoadError::Syntax {
                path: path.clone(),
                line: e.line() as u32,
                col: e.column() as u32,
                message: e.to_string(),
            })?;
            tessera_ir::verify::verify(&graph).map_err(|e| LoadError::Invalid { path, message: e.to_string() })?;
            Ok(graph)
        }
        // ONNX is binary; text that reached here is imported as its bytes (external data
        // resolves next to `path`).
        ModelFormat::Onnx => crate::onnx::import_bytes(text.as_bytes(), path.parent())
            .map_err(|source| LoadError::Onnx { path: path.clone(), source: Box::new(source) }),
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::MlirText => "MLIR text",
            ModelFormat::GraphJson => "graph JSON",
            ModelFormat::Onnx => "ONNX",
            ModelFormat::StableHlo => "StableHLO text",
        })
    }
}
