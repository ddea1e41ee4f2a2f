//! One module per subcommand: its clap arguments and its body.

pub mod bench;
pub mod bench_import;
pub mod bench_kernels_cpu;
pub mod comm_test;
pub mod compile;
pub mod generate;
pub mod import;
pub mod info;
pub mod opt;
pub mod plan;
pub mod run;
pub mod serve;
pub mod test_onnx;
pub mod train;

use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// Loads `path` like `tessera_frontend::load::load_model`, except that an ONNX model whose
/// symbolic import fails is imported again with its inputs' symbols bound to the sizes `dims`
/// and the input files `input_specs` (`NAME=FILE.npy`) give, with a note on stderr naming the
/// sizes and the symbolic error. Returns the graph and whether it was bound at import.
pub fn load_model_binding(
    path: &std::path::Path,
    dims: &HashMap<String, u64>,
    input_specs: &[String],
) -> Result<(tessera_ir::graph::Graph, bool)> {
    let symbolic_error = match tessera_frontend::load::load_model(path) {
        Ok(graph) => return Ok((graph, false)),
        Err(e @ tessera_frontend::load::LoadError::Onnx { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let declared = match tessera_frontend::onnx::declared_inputs(path) {
        Ok(declared) => declared,
        Err(_) => return Err(symbolic_error.into()),
    };
    let mut bindings = dims.clone();
    if !input_specs.is_empty() {
        let feeds = tessera_runtime::feeds::read_inputs(&declared, input_specs)?;
        run::bind_from_feeds(&declared, &feeds, &mut bindings)?;
    }
    let known: std::collections::BTreeSet<&str> = declared.values().flat_map(|(_, v)| v.ty.symbols()).collect();
    bindings.retain(|name, _| known.contains(name.as_str()));
    if bindings.is_empty() {
        return Err(symbolic_error.into());
    }
    let options = tessera_frontend::onnx::ImportOptions { dims: bindings.clone(), ..Default::default() };
    let graph = tessera_frontend::onnx::import_model_with(path, &options)
        .with_context(|| format!("{}: also with its input sizes bound", path.display()))
        .with_context(|| symbolic_error.to_string())?;
    let mut sizes: Vec<String> = bindings.iter().map(|(name, n)| format!("{name}={n}")).collect();
    sizes.sort();
    eprintln!("note: imported with {} bound, since the symbolic import failed: {symbolic_error}", sizes.join(", "));
    Ok((graph, true))
}

/// The symbols of `path`'s declared inputs that its import unified with another (two symbols
/// the graph uses as one size become one, see `Importer::unify_dims`), each mapped to the
/// symbol `graph` keeps: found by comparing each declared input's dimensions with those of the
/// graph input of the same name. Empty for a model that is not ONNX.
pub fn unified_symbols(path: &std::path::Path, graph: &tessera_ir::graph::Graph) -> HashMap<String, String> {
    let mut aliases = HashMap::new();
    let Ok(declared) = tessera_frontend::onnx::declared_inputs(path) else { return aliases };
    for &d in declared.inputs() {
        let declared_value = declared.value(d);
        let Some(&g) = graph.inputs().iter().find(|&&g| graph.value(g).name == declared_value.name) else { continue };
        for (a, b) in declared_value.ty.dims.iter().zip(&graph.value(g).ty.dims) {
            let symbol = |d: &tessera_ir::types::Dim| match d {
                tessera_ir::types::Dim::Symbolic(e) => e.as_symbol().map(str::to_string),
                tessera_ir::types::Dim::Static(_) => None,
            };
            if let (Some(from), Some(to)) = (symbol(a), symbol(b)) {
                if from != to {
                    aliases.insert(from, to);
                }
            }
        }
    }
    aliases
}

/// Parses `--dim name=N` bindings of symbolic dimensions.
/// Refuses a `--dim` binding of a symbol `graph` does not have (a typo would otherwise be
/// silently ignored), naming the symbols it has.
pub fn check_dim_names(graph: &tessera_ir::graph::Graph, bindings: &HashMap<String, u64>) -> Result<()> {
    let known: std::collections::BTreeSet<&str> = graph.values().flat_map(|(_, v)| v.ty.symbols()).collect();
    let mut unknown: Vec<&String> = bindings.keys().filter(|name| !known.contains(name.as_str())).collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        let known = if known.is_empty() {
            "it has none".to_string()
        } else {
            format!("its symbols: {}", known.into_iter().collect::<Vec<_>>().join(", "))
        };
        bail!("--dim {name}: the model has no symbolic dimension '{name}' ({known})");
    }
    Ok(())
}

/// Parses `tessera compile`'s `--dim` specs: `NAME=N` pins a symbol (the first map), `NAME=LO..HI`
/// leaves it free within a range (the list, sorted by name). A name given twice is refused.
pub fn parse_dim_specs(specs: &[String]) -> Result<(HashMap<String, u64>, Vec<tessera_ir::artifact::DimRange>)> {
    let mut pinned = Vec::new();
    let mut ranges = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for spec in specs {
        let (name, value) =
            spec.split_once('=').with_context(|| format!("--dim '{spec}': expected NAME=SIZE or NAME=LO..HI"))?;
        if !names.insert(name.to_string()) {
            bail!("--dim '{name}' is given twice");
        }
        let Some((lo, hi)) = value.split_once("..") else {
            pinned.push(spec.clone());
            continue;
        };
        let size = |text: &str| text.trim().parse::<u64>().ok().filter(|&n| n > 0);
        let (Some(lo), Some(hi)) = (size(lo), size(hi)) else {
            bail!("--dim '{spec}': a range is LO..HI with positive integers LO <= HI");
        };
        if lo > hi {
            bail!("--dim '{spec}': the range is empty ({lo} > {hi})");
        }
        ranges.push(tessera_ir::artifact::DimRange { name: name.to_string(), lo, hi });
    }
    ranges.sort();
    Ok((parse_dim_bindings(&pinned)?, ranges))
}

pub fn parse_dim_bindings(dims: &[String]) -> Result<HashMap<String, u64>> {
    let mut bindings = HashMap::new();
    for spec in dims {
        let (name, value) = spec.split_once('=').with_context(|| format!("--dim '{spec}': expected NAME=SIZE"))?;
        let size: u64 = value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("--dim '{spec}': size must be a positive integer"))?;
        if bindings.insert(name.to_string(), size).is_some() {
            bail!("--dim '{name}' is given twice");
        }
    }
    Ok(bindings)
}
