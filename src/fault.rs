//! Fault injection, for tests only: `TESSERA_FAULT=RANK:STEP` makes rank RANK kill itself with
//! SIGKILL (no cleanup, no abort message: what the OOM killer or a dead node looks like) when it
//! reaches STEP; `TESSERA_FAULT=RANK:STEP:hang` stops it with SIGSTOP instead (a rank that hangs
//! without dying, which no launcher notices: the other ranks' receive deadlines must end the
//! job). `tessera train` counts optimizer steps (the rank stops at the start of step STEP,
//! while the other ranks are inside it waiting for its data); `tessera comm-test` counts
//! collective rounds. Unset, or naming another rank, it does nothing.

use anyhow::{bail, Context, Result};

pub const ENV: &str = "TESSERA_FAULT";

/// What happens to the rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// SIGKILL: the process dies.
    Kill,
    /// SIGSTOP: the process stays, doing nothing, until something kills it.
    Hang,
}

/// A requested fault: `rank` suffers `effect` at `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub rank: usize,
    pub step: u64,
    pub effect: Effect,
}

/// The fault the environment asks for.
pub fn requested() -> Result<Option<Fault>> {
    let Ok(spec) = std::env::var(ENV) else { return Ok(None) };
    let parts: Vec<&str> = spec.split(':').collect();
    let parse = |s: &str| s.trim().parse::<u64>().with_context(|| format!("{ENV}='{spec}': '{s}' is not a number"));
    let (rank, step, effect) = match parts[..] {
        [rank, step] => (parse(rank)?, parse(step)?, Effect::Kill),
        [rank, step, "hang"] => (parse(rank)?, parse(step)?, Effect::Hang),
        _ => bail!("{ENV}='{spec}': expected RANK:STEP or RANK:STEP:hang"),
    };
    if step == 0 {
        bail!("{ENV}='{spec}': steps count from 1");
    }
    Ok(Some(Fault { rank: rank as usize, step, effect }))
}

/// Kills (or stops) this process if `fault` names this rank and step.
pub fn maybe_die(fault: Option<Fault>, rank: usize, step: u64) {
    let Some(f) = fault.filter(|f| f.rank == rank && f.step == step) else { return };
    let (verb, signal) = match f.effect {
        Effect::Kill => ("kills", libc::SIGKILL),
        Effect::Hang => ("stops", libc::SIGSTOP),
    };
    eprintln!("tessera: rank {rank}: {ENV} {verb} this process at step {step}");
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

/// Serving's fault injection, read by debug builds only (the `tessera` the end-to-end tests
/// run): `TESSERA_SERVE_FAULT=RANK:RUNS:panic` makes tensor-parallel rank RANK panic when it
/// starts its program run after RUNS runs (counted from when the mesh is built; one run is
/// one chunk of a step), `RANK:RUNS:error` makes that run fail as a kernel error would,
/// `RANK:RUNS:head-error` makes it fail after its all-reduces (in rank 0's head). A
/// release build ignores the variable, so no setting can crash a production server.
pub const SERVE_ENV: &str = "TESSERA_SERVE_FAULT";

/// A requested serving fault: rank, runs before it, and how the run fails.
pub type ServeFault = (usize, usize, tessera_runtime::serve::engine::Fault);

/// The serving fault the environment asks for (always none in a release build).
pub fn serve_requested() -> Result<Option<ServeFault>> {
    if !cfg!(debug_assertions) {
        return Ok(None);
    }
    let Ok(spec) = std::env::var(SERVE_ENV) else { return Ok(None) };
    let parse =
        |s: &str| s.trim().parse::<usize>().with_context(|| format!("{SERVE_ENV}='{spec}': '{s}' is not a number"));
    use tessera_runtime::serve::engine::Fault as F;
    match spec.split(':').collect::<Vec<_>>()[..] {
        [rank, runs, "panic"] => Ok(Some((parse(rank)?, parse(runs)?, F::Panic))),
        [rank, runs, "error"] => Ok(Some((parse(rank)?, parse(runs)?, F::Error))),
        [rank, runs, "head-error"] => Ok(Some((parse(rank)?, parse(runs)?, F::HeadError))),
        _ => bail!("{SERVE_ENV}='{spec}': expected RANK:RUNS:panic, RANK:RUNS:error or RANK:RUNS:head-error"),
    }
}
