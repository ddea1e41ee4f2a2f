//! The text form of a plan: a summary block and a table of the alternatives (the JSON form is
//! the serde view of [`Plan`]).

use crate::cost::step::Mode;
use crate::planner::{Plan, SearchStats};
use std::fmt;

/// `1.23 s`, `45.6 ms`, `789 us`.
pub fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} us", s * 1e6)
    }
}

/// `12.3 GB` (1e9 bytes, as devices are sold).
pub fn gigabytes(b: f64) -> String {
    format!("{:.1} GB", b / 1e9)
}

/// `1.2 M`, `345.6 k`.
fn si(x: f64) -> String {
    let (scaled, prefix) = if x >= 1e12 {
        (x / 1e12, " T")
    } else if x >= 1e9 {
        (x / 1e9, " G")
    } else if x >= 1e6 {
        (x / 1e6, " M")
    } else if x >= 1e3 {
        (x / 1e3, " k")
    } else {
        (x, " ")
    };
    format!("{scaled:.1}{prefix}")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl fmt::Display for SearchStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} configurations evaluated, {} fit in memory, {} block profiles built",
            self.space, self.feasible, self.profiles
        )
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parallelism;
        let e = &self.estimate;
        let mode = match self.mode {
            Mode::Train => "train",
            Mode::Serve => "serve",
        };
        let what = match self.mode {
            Mode::Train => format!("global batch {} x seq {}", self.global_batch, self.seq),
            Mode::Serve => format!("{} sequences, context {}", self.global_batch, self.seq),
        };
        writeln!(
            f,
            "plan for {} ({} parameters) on {} ({} x {}), {mode}, {what}",
            self.model,
            si(self.parameters as f64).trim_end(),
            self.cluster,
            self.gpus,
            self.device
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "  parallelism   dp={} tp={} pp={} ep={} sp={} micro_batch={} interleave={} recompute={} zero={} schedule={}{}",
            p.dp,
            p.tp,
            p.pp,
            p.ep,
            on_off(p.sp),
            p.micro_batch,
            p.interleave,
            p.recompute.name(),
            p.zero,
            p.schedule.name(),
            crate::planner::framework_knobs_suffix(p)
        )?;
        let unit = match self.mode {
            Mode::Train => "step",
            Mode::Serve => "decode step",
        };
        writeln!(
            f,
            "  {unit:<13} {} ({} micro-batches of {}), {}tokens/s",
            seconds(self.step_time_s),
            e.micro_batches,
            p.micro_batch,
            si(self.tokens_per_s)
        )?;
        writeln!(
            f,
            "  throughput    {:.1} model TFLOP/s per GPU, {:.1} with recomputation, MFU {:.1}%",
            self.model_tflops_per_gpu,
            self.hardware_tflops_per_gpu,
            100.0 * self.mfu
        )?;
        let m = &e.memory;
        writeln!(
            f,
            "  memory/GPU    {} of {}: weights {}, gradients {}, optimizer {}, activations {}, temporary {}, KV cache {}, reserved {}",
            gigabytes(m.total),
            gigabytes(self.device_memory_bytes),
            gigabytes(m.weights),
            gigabytes(m.gradients),
            gigabytes(m.optimizer),
            gigabytes(m.activations),
            gigabytes(m.temporary),
            gigabytes(m.kv_cache),
            gigabytes(m.reserved)
        )?;
        let t = &e.time;
        writeln!(
            f,
            "  time          compute {}, recompute {}, tp comm {}, ep comm {}, pp transfers {}, bubble {} ({:.1}%), dp sync {}, optimizer {}",
            seconds(t.compute_s),
            seconds(t.recompute_s),
            seconds(t.tp_comm_s),
            seconds(t.ep_comm_s),
            seconds(t.pp_comm_s),
            seconds(t.bubble_s),
            100.0 * self.bubble_fraction,
            seconds(t.dp_comm_exposed_s),
            seconds(t.optimizer_s)
        )?;
        let c = &self.comm_bytes_per_step;
        writeln!(
            f,
            "  traffic/GPU   {} over {}, {} over {} per step",
            gigabytes(c.intra_node),
            c.intra_node_link,
            gigabytes(c.inter_node),
            c.inter_node_link
        )?;
        writeln!(f, "  energy        {:.1} kJ per step", self.energy_per_step_j / 1e3)?;
        writeln!(f, "  search        {}", self.search)?;
        if let Some(run) = &self.run {
            write_run(f, run)?;
        }
        if let Some(energy) = &self.energy {
            write_energy(f, energy)?;
        }
        if self.alternatives.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(f, "alternatives")?;
        let mut rows =
            vec![["dp", "tp", "pp", "ep", "sp", "mb", "v", "recompute", "zero", "step", "memory", "why it lost"]
                .map(String::from)];
        for a in &self.alternatives {
            let q = &a.parallelism;
            rows.push([
                q.dp.to_string(),
                q.tp.to_string(),
                q.pp.to_string(),
                q.ep.to_string(),
                on_off(q.sp).to_string(),
                q.micro_batch.to_string(),
                q.interleave.to_string(),
                q.recompute.name().to_string(),
                q.zero.to_string(),
                seconds(a.step_time_s),
                gigabytes(a.memory_per_gpu_bytes),
                a.why.clone(),
            ]);
        }
        let mut widths = [0usize; 12];
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.len());
            }
        }
        for r in &rows {
            write!(f, " ")?;
            for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
                if i == r.len() - 1 {
                    write!(f, "  {cell}")?;
                } else if i == 7 {
                    write!(f, "  {cell:<w$}")?;
                } else {
                    write!(f, "  {cell:>w$}")?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Per-stage clocks as `1410 x4, 1200 x4` (runs of equal clocks, in stage order).
pub fn clocks(mhz: &[f64]) -> String {
    let mut runs: Vec<(f64, usize)> = Vec::new();
    for &c in mhz {
        match runs.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => runs.push((c, 1)),
        }
    }
    let parts: Vec<String> =
        runs.iter().map(|(c, n)| if *n == 1 { format!("{c:.0}") } else { format!("{c:.0} x{n}") }).collect();
    parts.join(", ")
}

/// The `energy` lines: the objective's clocks, and the time–energy frontier as a table.
fn write_energy(f: &mut fmt::Formatter<'_>, energy: &crate::planner::energy::EnergyPlan) -> fmt::Result {
    let cap = energy.power_cap_w.map(|w| format!(", power cap {w:.0} W")).unwrap_or_default();
    writeln!(
        f,
        "  clocks        objective {}{cap}: {} MHz per stage, {} and {:.1} kJ per step (all stages at the highest clock: {} and {:.1} kJ)",
        energy.objective.name(),
        clocks(&energy.chosen.stage_clocks_mhz),
        seconds(energy.chosen.step_time_s),
        energy.chosen.energy_j / 1e3,
        seconds(energy.max_clock.step_time_s),
        energy.max_clock.energy_j / 1e3
    )?;
    if !energy.explanation.is_empty() {
        writeln!(f, "                {}", energy.explanation)?;
    }
    writeln!(f)?;
    writeln!(f, "time-energy frontier (per step)")?;
    writeln!(f, "  {:>10}  {:>7}  {:>12}  {:>7}  stage clocks (MHz)", "step", "time", "energy", "energy")?;
    let base = &energy.max_clock;
    for p in &energy.frontier {
        writeln!(
            f,
            "  {:>10}  {:>+6.2}%  {:>9.1} kJ  {:>+6.1}%  {}",
            seconds(p.step_time_s),
            100.0 * (p.step_time_s / base.step_time_s - 1.0),
            p.energy_j / 1e3,
            100.0 * (p.energy_j / base.energy_j - 1.0),
            clocks(&p.stage_clocks_mhz)
        )?;
    }
    Ok(())
}

/// The `run` lines of a plan: the whole run's time, energy, money and emissions.
fn write_run(f: &mut fmt::Formatter<'_>, run: &crate::planner::run::RunCost) -> fmt::Result {
    writeln!(
        f,
        "  run           {} tokens: {:.1} days, {} GPU-hours, {:.1} MWh, ${}, {:.1} t CO2e, goodput {:.1}%",
        si(run.tokens).trim_end(),
        run.days,
        si(run.gpu_hours).trim_end(),
        run.energy_mwh,
        si(run.cost_usd).trim_end(),
        run.co2_t,
        100.0 * run.goodput
    )?;
    writeln!(
        f,
        "                ${:.2} and {:.2} MJ per million tokens, {:.3e} model FLOPs",
        run.usd_per_million_tokens,
        run.joules_per_million_tokens / 1e6,
        run.model_flops
    )?;
    if let Some(t) = &run.training {
        writeln!(
            f,
            "                {:.0} steps; a failure every {:.1} h ({:.0} expected); checkpoints of {} written in {} every {} (Young/Daly)",
            t.steps,
            t.cluster_mtbf_hours,
            t.expected_failures,
            gigabytes(t.checkpoint_bytes),
            seconds(t.checkpoint_write_s),
            seconds(t.checkpoint_interval_s)
        )?;
    }
    Ok(())
}
