//! The CLI's adapter to [`tessera_ir::files::write_atomic`], the workspace's one atomic writer:
//! it adds nothing but `anyhow` for the commands.

use anyhow::Result;
use std::path::Path;

/// Writes `bytes` to `path` atomically; refuses a destination that is not a regular file
/// (symlink, FIFO, device node): to write to standard output, leave `-o` out.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(tessera_ir::files::write_atomic(path, bytes)?)
}
