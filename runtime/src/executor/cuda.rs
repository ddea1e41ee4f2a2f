//! CUDA targets: the driver check that comes before anything touches CUDA.
//!
//! `cudarc`'s context creation panics where no driver is installed, so the runtime checks for
//! the driver library first and reports a clean error. This build of the compiler emits no
//! CUDA artifacts yet (`tessera compile --target cuda:*` says so), so a CUDA artifact can only
//! come from elsewhere; it is refused with the reason.

use super::load::Artifact;
use super::ArtifactError;

/// Whether a CUDA driver library (`libcuda.so.1`) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: loading libcuda runs its initializers, as any CUDA program does; it is unloaded
    // again when the handle drops.
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| unsafe { libloading::Library::new(name) }.is_ok())
}

/// Checks that a CUDA artifact could run here; errors "no CUDA driver found" without a driver.
pub fn check(artifact: &Artifact) -> Result<(), ArtifactError> {
    let target = artifact.program.target.clone();
    if !driver_present() {
        return Err(ArtifactError::Target { target, message: "no CUDA driver found".into() });
    }
    Err(ArtifactError::Target { target, message: "this build of tessera has no CUDA executor".into() })
}
