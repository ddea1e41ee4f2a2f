//! The cost of a whole run from one step's plan: wall-clock days, GPU-hours, energy, dollars
//! and emissions of training on `tokens` tokens (or serving them), with the time lost to
//! failures, checkpoints and restarts.
//!
//! Training. `steps = tokens / (global batch * seq)` steps of the plan's step time are the
//! failure-free solve time `T_s`. Failures strike the job at the cluster's rate
//! `1 / M = nodes / mtbf_per_node` (a node is the unit that fails and stops a synchronous job:
//! [`RunSpec::mtbf_hours_per_node`]); the job checkpoints its state (bf16 weights plus fp32
//! master weights and Adam moments, [`CHECKPOINT_BYTES_PER_PARAM`] per parameter) in
//! `δ = bytes / storage bandwidth` every `τ` seconds of work, with `τ` Daly's higher-order
//! optimum of Young's `sqrt(2 δ M)` (Daly 2006, "A higher order estimate of the optimum
//! checkpoint interval for restart dumps", FGCS 22(3), eq. 37), and a failure costs a restart
//! `R` (rescheduling plus reading the checkpoint back) and the work since the last checkpoint.
//! The expected wall-clock time is Daly's `T_w = M e^{R/M} (e^{(τ+δ)/M} - 1) T_s / τ` (eq. 20),
//! and `goodput = T_s / T_w`.
//!
//! Energy is the plan's average board power over the GPUs (the step's energy over its time)
//! for the whole wall-clock time, lost work, checkpoints and restarts included (an upper bound:
//! a restarting GPU idles), times the facility's PUE. Dollars are GPU-hours times the price of
//! one; emissions are facility energy times the grid's carbon intensity.
//!
//! Serving. The tokens are decoded at the plan's tokens/s with no checkpoints (`goodput` 1);
//! dollars and joules per million tokens follow from the price and power per token/s.

use crate::cost::step::Mode;
use crate::planner::Plan;
use serde::Serialize;

/// Bytes a training checkpoint holds per parameter: bf16 weights (2), fp32 master weights and
/// Adam's two moments (4 each). Gradients are not saved.
pub const CHECKPOINT_BYTES_PER_PARAM: f64 = 14.0;

/// The facility, prices and reliability a run is priced with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Tokens trained on (training) or generated (serving).
    pub tokens: f64,
    /// Facility energy over IT energy.
    pub pue: f64,
    pub gpu_hour_price_usd: f64,
    /// Grams of CO2-equivalent per kWh drawn from the grid.
    pub grid_carbon_g_per_kwh: f64,
    /// Mean time between failures of one node (8 GPUs and their host) that stop the job, hours.
    pub mtbf_hours_per_node: f64,
    /// Aggregate write (and read) bandwidth of the checkpoint storage, GB/s.
    pub storage_gb_per_s: f64,
    /// Time to reschedule the job after a failure, before reading the checkpoint, minutes.
    pub restart_minutes: f64,
}

impl RunSpec {
    /// PUE 1.1: Google's fleet-wide trailing-twelve-month PUE of 2023 was 1.10 (Google 2024
    /// Environmental Report) and Meta's data centers report 1.08-1.09; hyperscale AI clusters
    /// are built to this.
    pub const DEFAULT_PUE: f64 = 1.1;
    /// USD 2.00 per GPU-hour: about what H100 capacity rents for on multi-year reservations in
    /// 2024-2025; on-demand cloud prices are 2 to 5 times this. Give `--gpu-hour-price`.
    pub const DEFAULT_GPU_HOUR_PRICE_USD: f64 = 2.0;
    /// 367 g CO2/kWh: the US grid average of 2023 (EIA, "How much carbon dioxide is produced per
    /// kilowatthour of U.S. electricity generation?": 0.81 lb/kWh).
    pub const DEFAULT_GRID_CARBON_G_PER_KWH: f64 = 367.0;
    /// 6,300 node-hours: Llama 3's 405B run saw 419 unexpected interruptions in 54 days on
    /// 16,384 H100s in 2,048 nodes (Dubey et al. 2024, "The Llama 3 Herd of Models", sec.
    /// 3.3.4): 54 * 24 * 2048 / 419 = 6,335 hours per node, a failure every 3.1 hours.
    pub const DEFAULT_MTBF_HOURS_PER_NODE: f64 = 6300.0;
    /// 2,000 GB/s: the sustained throughput of the Tectonic file system Llama 3 checkpointed
    /// to (same section: 2 TB/s sustained, 7 TB/s peak).
    pub const DEFAULT_STORAGE_GB_PER_S: f64 = 2000.0;
    /// 10 minutes to reschedule a job on healthy nodes and restart its ranks.
    pub const DEFAULT_RESTART_MINUTES: f64 = 10.0;

    /// A spec with every default and `tokens` tokens.
    pub fn with_tokens(tokens: f64) -> RunSpec {
        RunSpec {
            tokens,
            pue: RunSpec::DEFAULT_PUE,
            gpu_hour_price_usd: RunSpec::DEFAULT_GPU_HOUR_PRICE_USD,
            grid_carbon_g_per_kwh: RunSpec::DEFAULT_GRID_CARBON_G_PER_KWH,
            mtbf_hours_per_node: RunSpec::DEFAULT_MTBF_HOURS_PER_NODE,
            storage_gb_per_s: RunSpec::DEFAULT_STORAGE_GB_PER_S,
            restart_minutes: RunSpec::DEFAULT_RESTART_MINUTES,
        }
    }

    /// Refuses numbers no run can have, naming the flag that gave them.
    pub fn validate(&self) -> Result<(), RunSpecError> {
        let checks: [(&'static str, f64, bool, &'static str); 7] = [
            ("tokens", self.tokens, self.tokens > 0.0, "must be a positive number of tokens"),
            ("pue", self.pue, self.pue >= 1.0, "must be at least 1 (a facility uses at least its IT energy)"),
            ("gpu-hour-price", self.gpu_hour_price_usd, self.gpu_hour_price_usd >= 0.0, "must not be negative"),
            ("grid-carbon", self.grid_carbon_g_per_kwh, self.grid_carbon_g_per_kwh >= 0.0, "must not be negative"),
            ("mtbf-hours", self.mtbf_hours_per_node, self.mtbf_hours_per_node > 0.0, "must be positive"),
            ("storage-gbps", self.storage_gb_per_s, self.storage_gb_per_s > 0.0, "must be positive"),
            ("restart-minutes", self.restart_minutes, self.restart_minutes >= 0.0, "must not be negative"),
        ];
        for (flag, value, ok, why) in checks {
            if !value.is_finite() || !ok {
                return Err(RunSpecError { flag, value, why });
            }
        }
        Ok(())
    }
}

/// A [`RunSpec`] number no run can have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--{flag} {value}: {why}")]
pub struct RunSpecError {
    pub flag: &'static str,
    pub value: f64,
    pub why: &'static str,
}

/// What a whole run costs (the `run` object of a plan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunCost {
    pub tokens: f64,
    /// Expected wall-clock days, failures included.
    pub days: f64,
    pub gpu_hours: f64,
    /// Facility energy (board energy times PUE), MWh.
    pub energy_mwh: f64,
    pub cost_usd: f64,
    /// Tonnes of CO2-equivalent.
    pub co2_t: f64,
    /// Failure-free time over expected wall-clock time.
    pub goodput: f64,
    /// Model FLOPs of the whole run (no recomputation).
    pub model_flops: f64,
    pub usd_per_million_tokens: f64,
    /// Facility energy per million tokens, J.
    pub joules_per_million_tokens: f64,
    /// Training only: steps, and the checkpointing that goodput assumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<Checkpointing>,
}

/// How a training run checkpoints and what failures cost it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpointing {
    pub steps: f64,
    /// The job's mean time between failures (per-node MTBF over the nodes), hours.
    pub cluster_mtbf_hours: f64,
    pub expected_failures: f64,
    pub checkpoint_bytes: f64,
    pub checkpoint_write_s: f64,
    /// Daly's optimal time between checkpoints, seconds of work.
    pub checkpoint_interval_s: f64,
    pub restart_s: f64,
}

/// Daly's optimum checkpoint interval for a write time `delta` and a mean time between
/// failures `mtbf` (both seconds): Young's `sqrt(2 delta M)` with Daly's higher-order terms,
/// and `M` itself when checkpoints take longer than `2 M`.
pub fn optimal_checkpoint_interval(delta: f64, mtbf: f64) -> f64 {
    if delta >= 2.0 * mtbf {
        return mtbf;
    }
    let x = delta / (2.0 * mtbf);
    (2.0 * delta * mtbf).sqrt() * (1.0 + x.sqrt() / 3.0 + x / 9.0) - delta
}

/// Daly's expected wall-clock time to do `solve` seconds of work checkpointing every `tau`
/// seconds of work in `delta` seconds, restarting in `restart` seconds, failures arriving at
/// mean interval `mtbf`.
pub fn expected_wall_time(solve: f64, tau: f64, delta: f64, restart: f64, mtbf: f64) -> f64 {
    mtbf * (restart / mtbf).exp() * ((tau + delta) / mtbf).exp_m1() * solve / tau
}

/// The whole run of `plan` on a cluster of `nodes` nodes.
pub fn run_cost(plan: &Plan, nodes: u64, spec: &RunSpec) -> RunCost {
    let gpus = plan.gpus as f64;
    let power_w = plan.energy_per_step_j / plan.step_time_s;
    let solve_s = spec.tokens / plan.tokens_per_s;
    let (wall_s, training) = match plan.mode {
        Mode::Serve => (solve_s, None),
        Mode::Train => {
            let mtbf_s = spec.mtbf_hours_per_node * 3600.0 / nodes.max(1) as f64;
            let checkpoint_bytes = plan.parameters as f64 * CHECKPOINT_BYTES_PER_PARAM;
            let delta = checkpoint_bytes / (spec.storage_gb_per_s * 1e9);
            let restart = spec.restart_minutes * 60.0 + delta;
            let tau = optimal_checkpoint_interval(delta, mtbf_s);
            let wall = expected_wall_time(solve_s, tau, delta, restart, mtbf_s);
            let checkpointing = Checkpointing {
                steps: spec.tokens / (plan.global_batch * plan.seq) as f64,
                cluster_mtbf_hours: mtbf_s / 3600.0,
                expected_failures: wall / mtbf_s,
                checkpoint_bytes,
                checkpoint_write_s: delta,
                checkpoint_interval_s: tau,
                restart_s: restart,
            };
            (wall, Some(checkpointing))
        }
    };
    let gpu_hours = gpus * wall_s / 3600.0;
    let energy_j = power_w * wall_s * spec.pue;
    let energy_mwh = energy_j / 3.6e9;
    let cost_usd = gpu_hours * spec.gpu_hour_price_usd;
    RunCost {
        tokens: spec.tokens,
        days: wall_s / 86400.0,
        gpu_hours,
        energy_mwh,
        cost_usd,
        // MWh * 1000 kWh/MWh * g/kWh / 1e6 g/t.
        co2_t: energy_mwh * spec.grid_carbon_g_per_kwh / 1e3,
        goodput: solve_s / wall_s,
        model_flops: plan.model_tflops_per_gpu * 1e12 * gpus * solve_s,
        usd_per_million_tokens: cost_usd / spec.tokens * 1e6,
        joules_per_million_tokens: energy_j / spec.tokens * 1e6,
        training,
    }
}

#[cfg(test)]
mod tests {
    use super::{expected_wall_time, optimal_checkpoint_interval, RunSpec};

    #[test]
    fn daly_interval_is_youngs_to_first_order_and_capped_at_the_mtbf() {
        // delta << M: sqrt(2 delta M) within a few percent.
        let (delta, mtbf) = (10.0f64, 11_000.0f64);
        let young = (2.0 * delta * mtbf).sqrt();
        let daly = optimal_checkpoint_interval(delta, mtbf);
        assert!((daly / young - 1.0).abs() < 0.03, "{daly} vs {young}");
        assert_eq!(optimal_checkpoint_interval(3.0 * mtbf, mtbf), mtbf);
    }

    #[test]
    fn the_optimal_interval_minimizes_the_expected_wall_time() {
        let (solve, delta, restart, mtbf) = (1e7, 30.0, 600.0, 11_000.0);
        let best = optimal_checkpoint_interval(delta, mtbf);
        let at = |tau: f64| expected_wall_time(solve, tau, delta, restart, mtbf);
        for factor in [0.5, 0.8, 1.25, 2.0] {
            assert!(at(best) < at(best * factor), "tau {best} is not better than {}", best * factor);
        }
        // Without failures the wall time is the work plus the checkpoints.
        let never = 1e15;
        let wall = expected_wall_time(solve, 1000.0, delta, restart, never);
        assert!((wall / (solve * (1.0 + delta / 1000.0)) - 1.0).abs() < 1e-6, "{wall}");
    }

    #[test]
    fn impossible_specs_name_their_flag() {
        let ok = RunSpec::with_tokens(1e12);
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (RunSpec { tokens: 0.0, ..ok.clone() }, "--tokens 0: must be a positive number of tokens"),
            (RunSpec { pue: 0.9, ..ok.clone() }, "--pue 0.9: must be at least 1"),
            (RunSpec { gpu_hour_price_usd: -2.0, ..ok.clone() }, "--gpu-hour-price -2: must not be negative"),
            (RunSpec { grid_carbon_g_per_kwh: f64::NAN, ..ok.clone() }, "--grid-carbon NaN"),
            (RunSpec { mtbf_hours_per_node: 0.0, ..ok.clone() }, "--mtbf-hours 0: must be positive"),
        ];
        for (spec, expected) in cases {
            let message = spec.validate().expect_err("refused").to_string();
            assert!(message.starts_with(expected), "{message}");
        }
    }
}
