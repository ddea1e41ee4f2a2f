//! Energy of a plan and Perseus-style clock planning: which SM clock each pipeline stage runs
//! at, the time–energy frontier those choices span, and the objectives (`time`, `energy`,
//! `cost`) and power cap the search ranks configurations by.
//!
//! The device's [`PowerModel`] gives board power against clock and load; the step model gives
//! each stage's time per micro-batch split into compute-bound kernels (stretched by `f_max / f`
//! at clock `f`), memory-bound kernels and transfers (unchanged) ([`PipelineTimes`]). A stage's
//! energy per micro-batch above idle is `(tdp - idle) r^k (t_c / r + load_m t_m)` at clock ratio
//! `r`; every device draws idle power for the whole step. The step takes
//! `m * t_max + (sum - t_max) / v` (training) or `max(m, p) * t_max` (decoding), so a stage
//! faster than the slowest one idles: slowing it down to fill that slack costs little or no
//! time and saves dynamic energy (Perseus, Chung et al., SOSP 2024: "energy bloat" of
//! non-critical stages). Slowing the critical stage too trades time for energy.
//!
//! Clock planning for a bound `tau` on the stage time per micro-batch: every stage takes the
//! clock that minimizes its dynamic energy plus the idle energy its longer fill/drain adds to
//! every device, among the clocks that keep it within `tau`. Sweeping `tau` over the stages'
//! times at each settable clock and keeping the points no other beats in both time and energy
//! gives the frontier. A power cap removes the clocks whose compute-bound power exceeds it.

use crate::cost::step::PipelineTimes;
use serde::Serialize;
use tessera_ir::hardware::DeviceSpec;

/// What the planner minimizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Step time (then energy, at the fastest step's lowest-energy clocks).
    Time,
    /// Energy per token, at whatever step time.
    Energy,
    /// Dollars per token: GPU-hours at their price plus facility energy at its price.
    Cost,
}

impl Objective {
    pub fn parse(text: &str) -> Result<Objective, EnergyError> {
        match text {
            "time" => Ok(Objective::Time),
            "energy" => Ok(Objective::Energy),
            "cost" => Ok(Objective::Cost),
            other => Err(EnergyError(format!("--objective {other}: unknown objective (time, energy or cost)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::Time => "time",
            Objective::Energy => "energy",
            Objective::Cost => "cost",
        }
    }
}

/// How to rank plans by energy and money.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyRequest {
    pub objective: Objective,
    /// Board power limit per device, W.
    pub power_cap_w: Option<f64>,
    /// For the cost objective.
    pub gpu_hour_price_usd: f64,
    pub electricity_usd_per_kwh: f64,
    pub pue: f64,
}

impl EnergyRequest {
    /// USD 0.08 per kWh: the 2023 US average price of electricity to industrial customers
    /// (EIA, Electric Power Monthly, table 5.6.A: 8.0 cents/kWh).
    pub const DEFAULT_ELECTRICITY_USD_PER_KWH: f64 = 0.08;

    pub fn new(objective: Objective) -> EnergyRequest {
        EnergyRequest {
            objective,
            power_cap_w: None,
            gpu_hour_price_usd: crate::planner::run::RunSpec::DEFAULT_GPU_HOUR_PRICE_USD,
            electricity_usd_per_kwh: EnergyRequest::DEFAULT_ELECTRICITY_USD_PER_KWH,
            pue: crate::planner::run::RunSpec::DEFAULT_PUE,
        }
    }

    /// Whether the search must price clocks for every configuration (else only the plan's).
    pub fn changes_the_search(&self) -> bool {
        self.objective != Objective::Time || self.power_cap_w.is_some()
    }
}

/// A power cap or price no device can run under.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EnergyError(pub String);

/// One point of the frontier: per-stage clocks and what they give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockPoint {
    pub step_time_s: f64,
    pub energy_j: f64,
    /// SM clock of each pipeline stage, first to last, MHz.
    pub stage_clocks_mhz: Vec<f64>,
}

/// The `energy` object of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyPlan {
    pub objective: Objective,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_cap_w: Option<f64>,
    /// Every stage at the highest clock the cap allows.
    pub max_clock: ClockPoint,
    /// The point the objective picks.
    pub chosen: ClockPoint,
    /// Points no other beats in both step time and energy, fastest first.
    pub frontier: Vec<ClockPoint>,
    /// The largest energy saving within 1% of the fastest step time, and where it comes from.
    pub explanation: String,
}

/// The highest clock ratios a power cap allows, or why none is.
pub fn allowed_ratios(device: &DeviceSpec, power_cap_w: Option<f64>) -> Result<Vec<f64>, EnergyError> {
    let power = &device.power;
    let all = power.clock_ratios();
    let Some(cap) = power_cap_w else { return Ok(all) };
    if !(cap.is_finite() && cap > 0.0) {
        return Err(EnergyError(format!("--power-cap {cap}: must be a positive number of watts")));
    }
    let full = |r: f64| device.idle_w + (device.tdp_w - device.idle_w) * r.powf(power.dynamic_power_exponent);
    let allowed: Vec<f64> = all.iter().copied().filter(|&r| full(r) <= cap + 1e-9).collect();
    if allowed.is_empty() {
        let lowest = all.last().copied().unwrap_or(1.0);
        return Err(EnergyError(format!(
            "--power-cap {cap}: below the {:.0} W a {} draws at its lowest planned clock ({:.0} MHz)",
            full(lowest),
            device.name,
            lowest * power.max_sm_clock_mhz
        )));
    }
    Ok(allowed)
}

/// How much more than its idle energy a second of fill and drain counts when stages pick their
/// clocks: 1 is energy alone; the larger ones trade energy for time, the last puts time first.
const TIME_WEIGHTS: [f64; 5] = [1.0, 3.0, 10.0, 30.0, 1e6];
/// The index of the time-first weight.
const TIME_FIRST: usize = 4;

impl EnergyPlan {
    /// The clocks `request` picks for a configuration's pipeline, the frontier (at most
    /// `points` points) and the explanation, for a step of `tokens` on `gpus` devices.
    pub fn new(
        times: &PipelineTimes,
        device: &DeviceSpec,
        ratios: Vec<f64>,
        request: &EnergyRequest,
        gpus: f64,
        tokens: f64,
        points: usize,
    ) -> EnergyPlan {
        let planner = ClockPlanner::new(times, device, ratios);
        let chosen = planner.best(&scorer(request, gpus, tokens), request.objective == Objective::Time);
        let frontier = planner.frontier(points);
        let max_clock = planner.max_clock();
        let explanation = explain(&frontier, &max_clock, device.power.max_sm_clock_mhz);
        EnergyPlan {
            objective: request.objective,
            power_cap_w: request.power_cap_w,
            max_clock,
            chosen,
            frontier,
            explanation,
        }
    }
}

/// The clock planner's view of one configuration on one device. Stages with the same times
/// (all but the ends, for evenly cut repeated layers) are planned once, as one class.
pub struct ClockPlanner<'a> {
    times: &'a PipelineTimes,
    idle_w: f64,
    /// Clock ratios allowed (highest first) and the highest clock's MHz.
    ratios: Vec<f64>,
    max_mhz: f64,
    /// The class of each stage, and per class: how many stages, their devices in all.
    class_of: Vec<usize>,
    class_stages: Vec<f64>,
    class_gpus: Vec<f64>,
    /// Per class and clock: seconds per micro-batch (rising with the clock index) and
    /// dynamic joules per device per micro-batch.
    class_time: Vec<Vec<f64>>,
    class_dynamic: Vec<Vec<f64>>,
    /// Per time weight, class and clock index `l`: the best clock among indices `0..=l`.
    prefix_best: Vec<Vec<Vec<usize>>>,
    gpus: f64,
}

impl<'a> ClockPlanner<'a> {
    pub fn new(times: &'a PipelineTimes, device: &DeviceSpec, ratios: Vec<f64>) -> ClockPlanner<'a> {
        let power = &device.power;
        let dynamic_w = device.tdp_w - device.idle_w;
        let mut classes: Vec<crate::cost::step::StageTimes> = Vec::new();
        let mut class_of = Vec::with_capacity(times.stages.len());
        let mut class_stages: Vec<f64> = Vec::new();
        let mut class_gpus: Vec<f64> = Vec::new();
        for s in &times.stages {
            let i = match classes.iter().position(|c| c == s) {
                Some(i) => i,
                None => {
                    classes.push(*s);
                    class_stages.push(0.0);
                    class_gpus.push(0.0);
                    classes.len() - 1
                }
            };
            class_of.push(i);
            class_stages[i] += 1.0;
            class_gpus[i] += s.gpus as f64;
        }
        let scale: Vec<f64> = ratios.iter().map(|&r| dynamic_w * r.powf(power.dynamic_power_exponent)).collect();
        let class_time: Vec<Vec<f64>> = classes.iter().map(|c| ratios.iter().map(|&r| c.at(r)).collect()).collect();
        let class_dynamic: Vec<Vec<f64>> = classes
            .iter()
            .map(|c| {
                ratios
                    .iter()
                    .zip(&scale)
                    .map(|(&r, &w)| w * (c.clock_bound_s / r + power.memory_bound_load * c.memory_bound_s))
                    .collect()
            })
            .collect();
        let gpus: f64 = class_gpus.iter().sum();
        let m = times.micro_batches as f64;
        let fill = if times.train { 1.0 / times.interleave as f64 } else { 0.0 };
        let prefix_best = TIME_WEIGHTS
            .iter()
            .map(|&weight| {
                (0..classes.len())
                    .map(|c| {
                        // A stage's dynamic energy plus the idle energy its share of the fill and
                        // drain adds to every device, that time weighted.
                        let gpus_per_stage = class_gpus[c] / class_stages[c];
                        let cost = |l: usize| {
                            gpus_per_stage * m * class_dynamic[c][l]
                                + gpus * device.idle_w * fill * weight * class_time[c][l]
                        };
                        let mut best = 0;
                        (0..ratios.len())
                            .map(|l| {
                                if cost(l) < cost(best) {
                                    best = l;
                                }
                                best
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        ClockPlanner {
            times,
            idle_w: device.idle_w,
            ratios,
            max_mhz: power.max_sm_clock_mhz,
            class_of,
            class_stages,
            class_gpus,
            class_time,
            class_dynamic,
            prefix_best,
            gpus,
        }
    }

    /// Step time and energy with class `c` at clock index `levels[c]`.
    fn evaluate(&self, levels: &[usize]) -> (f64, f64) {
        let t = self.times;
        let m = t.micro_batches as f64;
        let mut t_max: f64 = 0.0;
        let mut sum = 0.0;
        let mut dynamic = 0.0;
        for (c, &l) in levels.iter().enumerate() {
            let time = self.class_time[c][l];
            t_max = t_max.max(time);
            sum += self.class_stages[c] * time;
            dynamic += self.class_gpus[c] * m * self.class_dynamic[c][l];
        }
        let step = if t.train {
            m * t_max + (sum - t_max) / t.interleave as f64 + t.after_s
        } else {
            (t.micro_batches.max(t.stages.len() as u64) as f64) * t_max
        };
        (step, dynamic + self.gpus * self.idle_w * step)
    }

    /// Each class's clock for a bound `tau` on its time per micro-batch, under the time
    /// weight `weight` (an index of [`TIME_WEIGHTS`]); `None` when some class cannot meet it.
    fn levels_for(&self, tau: f64, weight: usize) -> Option<Vec<usize>> {
        let bound = tau * (1.0 + 1e-12);
        self.class_time
            .iter()
            .enumerate()
            .map(|(c, times)| {
                let feasible = times.partition_point(|&t| t <= bound);
                (feasible > 0).then(|| self.prefix_best[weight][c][feasible - 1])
            })
            .collect()
    }

    fn point(&self, levels: &[usize]) -> ClockPoint {
        let (step_time_s, energy_j) = self.evaluate(levels);
        let stage_clocks_mhz = self.class_of.iter().map(|&c| (self.ratios[levels[c]] * self.max_mhz).round()).collect();
        ClockPoint { step_time_s, energy_j, stage_clocks_mhz }
    }

    /// Every stage at the highest allowed clock.
    pub fn max_clock(&self) -> ClockPoint {
        self.point(&vec![0; self.class_time.len()])
    }

    /// The bounds worth trying: the slowest class's time at each clock (`all`: every class's).
    fn bounds(&self, all: bool) -> Vec<f64> {
        let fastest = self.class_time.iter().map(|t| t[0]).fold(0.0, f64::max);
        let critical = self.class_time.iter().position(|t| t[0] == fastest).unwrap_or(0);
        let mut taus: Vec<f64> = if all {
            self.class_time.iter().flatten().copied().filter(|&t| t >= fastest).collect()
        } else {
            self.class_time[critical].clone()
        };
        taus.sort_by(f64::total_cmp);
        taus.dedup();
        taus
    }

    /// The point minimizing `score(step time, energy)`; `time_first`: the score is mostly
    /// time, so only the fastest clocks within each bound are tried.
    pub fn best(&self, score: &dyn Fn(f64, f64) -> f64, time_first: bool) -> ClockPoint {
        let max = vec![0; self.class_time.len()];
        let (time, energy) = self.evaluate(&max);
        let mut best: (f64, Vec<usize>) = (score(time, energy), max);
        let weights: Vec<usize> = if time_first { vec![TIME_FIRST] } else { (0..TIME_WEIGHTS.len()).collect() };
        for tau in self.bounds(false) {
            for &weight in &weights {
                let Some(levels) = self.levels_for(tau, weight) else { continue };
                let (time, energy) = self.evaluate(&levels);
                let value = score(time, energy);
                if value < best.0 {
                    best = (value, levels);
                }
            }
        }
        self.point(&best.1)
    }

    /// The Pareto frontier of (step time, energy), fastest first, at most `limit` points spread
    /// over it (the fastest and the lowest-energy always among them).
    pub fn frontier(&self, limit: usize) -> Vec<ClockPoint> {
        let mut points: Vec<ClockPoint> = vec![self.max_clock()];
        for tau in self.bounds(true) {
            for weight in 0..TIME_WEIGHTS.len() {
                points.extend(self.levels_for(tau, weight).map(|l| self.point(&l)));
            }
        }
        points.sort_by(|a, b| a.step_time_s.total_cmp(&b.step_time_s).then(a.energy_j.total_cmp(&b.energy_j)));
        let mut pareto: Vec<ClockPoint> = Vec::new();
        for p in points {
            if pareto.last().is_none_or(|last| p.energy_j < last.energy_j * (1.0 - 1e-9)) {
                pareto.push(p);
            }
        }
        thin(pareto, limit)
    }
}

/// Keeps `limit` points evenly spread by index, the first and the last included; and every
/// point within 1% of the fastest time's lowest energy one (the claim the report makes).
fn thin(points: Vec<ClockPoint>, limit: usize) -> Vec<ClockPoint> {
    if points.len() <= limit || limit < 2 {
        return points;
    }
    let n = points.len();
    let fastest = points[0].step_time_s;
    let within: Option<usize> = points.iter().rposition(|p| p.step_time_s <= fastest * 1.01);
    let mut keep: Vec<usize> = (0..limit).map(|i| i * (n - 1) / (limit - 1)).collect();
    keep.extend(within);
    keep.sort_unstable();
    keep.dedup();
    keep.into_iter().map(|i| points[i].clone()).collect()
}

/// The saving at most 1% slower than the fastest point, said in words: which stages run at
/// which clocks.
pub fn explain(frontier: &[ClockPoint], max_clock: &ClockPoint, max_mhz: f64) -> String {
    let Some(within) = frontier.iter().rfind(|p| p.step_time_s <= max_clock.step_time_s * 1.01) else {
        return String::new();
    };
    let saving = 100.0 * (1.0 - within.energy_j / max_clock.energy_j);
    let slower = 100.0 * (within.step_time_s / max_clock.step_time_s - 1.0);
    let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
    for (s, &mhz) in within.stage_clocks_mhz.iter().enumerate() {
        match groups.iter_mut().find(|(c, _)| *c == mhz) {
            Some((_, stages)) => stages.push(s),
            None => groups.push((mhz, vec![s])),
        }
    }
    groups.sort_by(|a, b| b.0.total_cmp(&a.0));
    let parts: Vec<String> = groups
        .iter()
        .map(|(mhz, stages)| {
            let which = stage_ranges(stages);
            if (*mhz - max_mhz).abs() < 0.5 {
                format!("{which} at the full {mhz:.0} MHz")
            } else {
                format!("{which} at {mhz:.0} MHz")
            }
        })
        .collect();
    format!(
        "{saving:.1}% less energy per step for {slower:+.2}% step time: {}; the slower stages have slack \
         next to the slowest one and spend it at lower clocks",
        parts.join(", ")
    )
}

/// `stages 0-3, 7` from sorted indices.
fn stage_ranges(stages: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < stages.len() {
        let mut j = i;
        while j + 1 < stages.len() && stages[j + 1] == stages[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { format!("{}", stages[i]) } else { format!("{}-{}", stages[i], stages[j]) });
        i = j + 1;
    }
    let noun = if stages.len() == 1 { "stage" } else { "stages" };
    format!("{noun} {}", parts.join(", "))
}

/// A bound no clock choice of `times` beats on the objective's score: the step time at the
/// highest allowed clock (`ratios[0]`) and the dynamic energy at the lowest, which lets the
/// search skip configurations without planning their clocks.
pub fn lower_bound(times: &PipelineTimes, device: &DeviceSpec, ratios: &[f64], score: &dyn Fn(f64, f64) -> f64) -> f64 {
    let (Some(&fast), Some(&slow)) = (ratios.first(), ratios.last()) else { return f64::NEG_INFINITY };
    let power = &device.power;
    let m = times.micro_batches as f64;
    let dynamic_w = (device.tdp_w - device.idle_w) * slow.powf(power.dynamic_power_exponent);
    let mut t_max: f64 = 0.0;
    let mut sum = 0.0;
    let mut dynamic = 0.0;
    let mut gpus = 0.0;
    for s in &times.stages {
        let time = s.at(fast);
        t_max = t_max.max(time);
        sum += time;
        gpus += s.gpus as f64;
        dynamic +=
            s.gpus as f64 * m * dynamic_w * (s.clock_bound_s / slow + power.memory_bound_load * s.memory_bound_s);
    }
    let step = if times.train {
        m * t_max + (sum - t_max) / times.interleave as f64 + times.after_s
    } else {
        (times.micro_batches.max(times.stages.len() as u64) as f64) * t_max
    };
    score(step, dynamic + gpus * device.idle_w * step)
}

/// The score an objective ranks (step time, energy) by, for a step of `tokens` on `gpus`.
pub fn scorer(request: &EnergyRequest, gpus: f64, tokens: f64) -> impl Fn(f64, f64) -> f64 {
    let r = *request;
    move |time: f64, energy: f64| match r.objective {
        Objective::Time => time * (1.0 + 1e-9 * energy / (energy + 1.0)),
        Objective::Energy => energy / tokens,
        Objective::Cost => {
            let usd = gpus * time / 3600.0 * r.gpu_hour_price_usd + energy * r.pue / 3.6e6 * r.electricity_usd_per_kwh;
            usd / tokens
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{allowed_ratios, ClockPlanner, EnergyRequest, Objective};
    use crate::cost::step::{PipelineTimes, StageTimes};
    use tessera_ir::hardware::DeviceSpec;

    fn stage(clock_bound_s: f64) -> StageTimes {
        StageTimes { gpus: 8, clock_bound_s, memory_bound_s: 0.2, transfer_s: 0.05, ..StageTimes::default() }
    }

    fn pipeline(stages: Vec<StageTimes>) -> PipelineTimes {
        PipelineTimes { train: true, micro_batches: 32, interleave: 1, stages, after_s: 0.1 }
    }

    #[test]
    fn power_at_the_highest_clock_is_tdp_and_falls_with_the_clock() {
        let a100 = DeviceSpec::a100_80g_sxm();
        let one = pipeline(vec![StageTimes { gpus: 1, clock_bound_s: 1.0, ..StageTimes::default() }]);
        let planner = ClockPlanner::new(&one, &a100, a100.power.clock_ratios());
        // One micro-batch-long step of pure compute-bound work: 32 s at 400 W plus 0.1 s idle.
        let max = planner.max_clock();
        assert!((max.energy_j - (32.0 * 400.0 + 0.1 * 80.0)).abs() < 1e-6, "{max:?}");
        assert_eq!(max.stage_clocks_mhz, vec![1410.0]);
        // At half the clock: twice the time, a quarter of the dynamic power (k = 2).
        let ratios = a100.power.clock_ratios();
        let half = ClockPlanner::new(&one, &a100, vec![*ratios.last().expect("clocks")]);
        let p = half.max_clock();
        assert_eq!(p.stage_clocks_mhz, vec![705.0]);
        assert!((p.step_time_s - 64.1).abs() < 1e-9, "{p:?}");
        assert!((p.energy_j - (64.0 * (80.0 + 320.0 * 0.25) + 0.1 * 80.0)).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn slack_of_faster_stages_is_spent_at_lower_clocks_for_free() {
        let a100 = DeviceSpec::a100_80g_sxm();
        // The last stage holds twice the compute of the others.
        let times = pipeline(vec![stage(0.5), stage(0.5), stage(0.5), stage(1.0)]);
        let planner = ClockPlanner::new(&times, &a100, a100.power.clock_ratios());
        let max = planner.max_clock();
        let frontier = planner.frontier(12);
        assert_eq!(frontier[0].step_time_s, max.step_time_s);
        // Within 1% of the fastest time, the faster stages run slower and save energy.
        let within = frontier.iter().rfind(|p| p.step_time_s <= max.step_time_s * 1.01).expect("a point");
        assert!(within.energy_j < max.energy_j * 0.95, "{within:?} vs {max:?}");
        assert_eq!(within.stage_clocks_mhz[3], 1410.0);
        assert!(within.stage_clocks_mhz[0] < 1200.0, "{within:?}");
        let explanation = super::explain(&frontier, &max, 1410.0);
        assert!(explanation.contains("stage 3 at the full 1410 MHz"), "{explanation}");
        // Pareto: slower points use less energy.
        for pair in frontier.windows(2) {
            assert!(pair[1].step_time_s > pair[0].step_time_s && pair[1].energy_j < pair[0].energy_j);
        }
    }

    #[test]
    fn a_power_cap_lowers_the_highest_clock_and_an_impossible_one_is_refused() {
        let h100 = DeviceSpec::h100_80g_sxm();
        let capped = allowed_ratios(&h100, Some(500.0)).expect("a cap above idle");
        // 140 + 560 r^2 <= 500: r <= 0.8018.
        assert!(capped[0] <= 0.8018 && capped[0] > 0.79, "{}", capped[0]);
        let err = allowed_ratios(&h100, Some(100.0)).expect_err("below idle").to_string();
        assert!(err.starts_with("--power-cap 100: below the 280 W"), "{err}");
        assert!(allowed_ratios(&h100, Some(-1.0)).is_err());
    }

    #[test]
    fn the_energy_objective_picks_a_lower_clock_than_the_time_objective() {
        let a100 = DeviceSpec::a100_80g_sxm();
        let times = pipeline(vec![stage(1.0), stage(1.0)]);
        let planner = ClockPlanner::new(&times, &a100, a100.power.clock_ratios());
        let time = planner.best(&super::scorer(&EnergyRequest::new(Objective::Time), 16.0, 1.0), true);
        let energy = planner.best(&super::scorer(&EnergyRequest::new(Objective::Energy), 16.0, 1.0), false);
        assert_eq!(time.stage_clocks_mhz, vec![1410.0, 1410.0]);
        assert!(energy.stage_clocks_mhz[0] < 1410.0 && energy.energy_j < time.energy_j);
        assert!(Objective::parse("speed").is_err());
    }
}
