//! Writing output files atomically, so a failed command never leaves a partial file behind.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename (the runtime's
/// [`tessera_runtime::files::write_atomic`], with the path in the error).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tessera_runtime::files::write_atomic(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}
