//! One module per subcommand: its clap arguments and its body.

pub mod bench;
pub mod comm_test;
pub mod compile;
pub mod import;
pub mod info;
pub mod opt;
pub mod plan;
pub mod run;
pub mod test_onnx;
pub mod train;

use anyhow::{bail, Context, Result};
use std::collections::HashMap;

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
