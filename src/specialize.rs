//! Per-size compilation of range artifacts: the [`Specializer`] `tessera run DIR` hands the
//! runtime, so a range artifact runs the kernels a pinned `--dim NAME=N` compile would emit.
//!
//! The runtime crate links no code generator (`tessera-rt` stays free of MLIR/LLVM), so this
//! half lives in the binary that does. For each distinct set of sizes the runtime asks for, the
//! symbolic graph is compiled with those sizes as `CompileOptions::dims`, which is exactly the
//! pinned compile path (`codegen::artifact::compile_to_dir`, whose lowering binds the symbols),
//! written to a private temporary directory and loaded through the same checks as any artifact
//! on disk; the directory is removed once loaded (the kernels stay mapped from a sealed copy).
//! The runtime caches the result per size (`runtime::executor::ranged`).

use std::collections::{BTreeMap, HashMap};
use tessera_codegen::artifact::{compile_to_dir, input_hash, CompileOptions, Target};
use tessera_ir::graph::Graph;
use tessera_runtime::executor::load::{load, Artifact};
use tessera_runtime::executor::ranged::Specializer;

/// The manifest option a range artifact records when it was compiled with `--epilogues`.
const EPILOGUES_ON: &str = "epilogues=on";

/// Compiles a range artifact's graph at one size through the pinned CPU pipeline.
#[derive(Debug, Default)]
pub struct CpuSpecializer;

impl Specializer for CpuSpecializer {
    fn specialize(&self, graph: &Graph, sizes: &BTreeMap<String, u64>, options: &[String]) -> Result<Artifact, String> {
        let dims: HashMap<String, u64> = sizes.iter().map(|(name, &size)| (name.clone(), size)).collect();
        let options = CompileOptions {
            target: Target::Cpu,
            dims,
            graph_options: Vec::new(),
            epilogues: options.iter().any(|o| o == EPILOGUES_ON),
            pinned_outputs: false,
        };
        // Recorded in a manifest nobody keeps: what identifies this program is the range
        // artifact's own manifest, checked when it was loaded.
        let hash = input_hash(b"range artifact, specialized", &options);
        let scratch = tempfile::Builder::new()
            .prefix("tessera-range-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        let dir = scratch.path().join("specialized");
        compile_to_dir(graph, hash, &options, &dir).map_err(|e| e.to_string())?;
        let artifact = load(&dir).map_err(|e| e.to_string())?;
        scratch.close().map_err(|e| format!("removing the temporary artifact: {e}"))?;
        Ok(artifact)
    }
}
