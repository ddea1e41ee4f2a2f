//! Fault injection, for tests only: `TESSERA_FAULT=RANK:STEP` makes rank RANK kill itself with
//! SIGKILL (no cleanup, no abort message: what the OOM killer or a dead node looks like) when it
//! reaches STEP. `tessera train` counts optimizer steps (the rank dies in the middle of step
//! STEP, after its forward pass has begun exchanging data); `tessera comm-test` counts
//! collective rounds. Unset, or naming another rank, it does nothing.

use anyhow::{bail, Context, Result};

pub const ENV: &str = "TESSERA_FAULT";

/// The fault the environment asks for: (rank, step).
pub fn requested() -> Result<Option<(usize, u64)>> {
    let Ok(spec) = std::env::var(ENV) else { return Ok(None) };
    let (rank, step) = spec.split_once(':').with_context(|| format!("{ENV}='{spec}': expected RANK:STEP"))?;
    let parse = |s: &str| s.trim().parse::<u64>().with_context(|| format!("{ENV}='{spec}': '{s}' is not a number"));
    let (rank, step) = (parse(rank)?, parse(step)?);
    if step == 0 {
        bail!("{ENV}='{spec}': steps count from 1");
    }
    Ok(Some((rank as usize, step)))
}

/// Kills this process with SIGKILL if `fault` names this rank and step.
pub fn maybe_die(fault: Option<(usize, u64)>, rank: usize, step: u64) {
    if fault == Some((rank, step)) {
        eprintln!("tessera: rank {rank}: {ENV} kills this process at step {step}");
        // SAFETY: kill(2) on our own pid with a valid signal number; it does not return.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
