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
