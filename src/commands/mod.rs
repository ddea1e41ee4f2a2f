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
