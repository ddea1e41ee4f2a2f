//! The `verify` pass: the IR verifier as a pipeline step, for pipelines run with verification
//! between passes turned off, or to check a graph without changing it.

use crate::pass::{PassError, PassOptions, PassStats};
use tessera_ir::graph::Graph;

/// Checks `g` with [`tessera_ir::verify::verify`]; changes nothing.
pub fn run(g: &mut Graph, _options: &PassOptions) -> Result<PassStats, PassError> {
    tessera_ir::verify::verify(g).map_err(PassError::Verify)?;
    Ok(PassStats::default())
}
