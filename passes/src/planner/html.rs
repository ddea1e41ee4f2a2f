//! `tessera plan --report plan.html`: one self-contained page (inline SVG and CSS, no script,
//! nothing fetched) with the chosen schedule's pipeline timeline per stage, memory per GPU by
//! category, traffic per link class, the alternatives, the time–energy frontier and, for
//! serving plans, the throughput–latency frontier.
//!
//! The timeline is the 1F1B order (warm-up forwards, one forward one backward, cool-down
//! backwards) simulated with each stage's forward, backward and transfer times per
//! micro-batch from the estimate; interleaved chunks are drawn merged per stage, and long
//! schedules show their first micro-batches (the caption says how many).

use crate::cost::step::PipelineTimes;
use crate::planner::energy::{ClockPlanner, ClockPoint};
use crate::planner::report::seconds;
use crate::planner::serve::ServePlan;
use crate::planner::{Plan, FRONTIER_POINTS};
use tessera_ir::hardware::DeviceSpec;

/// At most this many operations (forward or backward passes of one micro-batch on one stage)
/// are drawn.
const MAX_DRAWN_OPS: u64 = 2000;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1100px}\
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}\
th{background:#eee}.forward{fill:#4e79a7}.backward{fill:#f28e2b}.transfer{fill:#59a14f}.bubble{fill:#eeeeee}.free{fill:#eeeeee}\
.weights{fill:#4e79a7}.gradients{fill:#f28e2b}.optimizer{fill:#e15759}.activations{fill:#76b7b2}\
.temporary{fill:#edc948}.kv_cache{fill:#b07aa1}.reserved{fill:#bab0ac}.link{fill:#59a14f}\
.point{fill:#e15759}.line{fill:none;stroke:#4e79a7;stroke-width:2}.axis{stroke:#333;stroke-width:1}\
.limit{stroke:#e15759;stroke-dasharray:4 3}text{font-size:11px}";

/// Escapes text for HTML and SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n{body}</body>\n</html>\n",
        escape(title),
        escape(title)
    )
}

/// One operation of the drawn schedule.
struct Op {
    stage: usize,
    backward: bool,
    start: f64,
    compute: f64,
    transfer: f64,
}

/// Simulates 1F1B for `m` micro-batches over the stages of `times`.
fn one_f_one_b(times: &PipelineTimes, m: u64) -> Vec<Op> {
    let p = times.stages.len();
    let m = m as usize;
    // Each stage's order: warm-up forwards, then alternate, then the remaining backwards.
    let orders: Vec<Vec<(bool, usize)>> = (0..p)
        .map(|s| {
            let warmup = (p - s - 1).min(m);
            let mut order: Vec<(bool, usize)> = (0..warmup).map(|i| (false, i)).collect();
            let (mut f, mut b) = (warmup, 0);
            while b < m {
                if f < m {
                    order.push((false, f));
                    f += 1;
                }
                order.push((true, b));
                b += 1;
            }
            order
        })
        .collect();
    let mut fwd_done = vec![vec![f64::NAN; m]; p];
    let mut bwd_done = vec![vec![f64::NAN; m]; p];
    let mut next = vec![0usize; p];
    let mut free = vec![0.0f64; p];
    let mut ops = Vec::new();
    let train = times.train;
    loop {
        let mut progressed = false;
        for s in 0..p {
            while let Some(&(backward, i)) = orders[s].get(next[s]) {
                let ready = if backward {
                    if s + 1 < p {
                        bwd_done[s + 1][i]
                    } else {
                        fwd_done[s][i]
                    }
                } else if s > 0 {
                    fwd_done[s - 1][i]
                } else {
                    0.0
                };
                if ready.is_nan() {
                    break;
                }
                let st = &times.stages[s];
                let compute = if backward { st.backward_s } else { st.forward_s };
                let transfer = if train { st.transfer_s / 2.0 } else { st.transfer_s };
                let start = ready.max(free[s]);
                let end = start + compute + transfer;
                free[s] = end;
                if backward {
                    bwd_done[s][i] = end;
                } else {
                    fwd_done[s][i] = end;
                }
                ops.push(Op { stage: s, backward, start, compute, transfer });
                next[s] += 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if !train {
        ops.retain(|o| !o.backward);
    }
    ops
}

/// The timeline SVG and how many micro-batches it shows.
fn timeline(times: &PipelineTimes) -> (String, u64) {
    let p = times.stages.len().max(1) as u64;
    let shown = times.micro_batches.min((MAX_DRAWN_OPS / (2 * p)).max(1));
    let ops = one_f_one_b(times, shown);
    let end = ops.iter().map(|o| o.start + o.compute + o.transfer).fold(0.0, f64::max).max(1e-12);
    let (width, row, left) = (1000.0, 18.0, 70.0);
    let scale = (width - left - 10.0) / end;
    let height = row * p as f64 + 30.0;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n");
    for s in 0..p {
        let y = s as f64 * row;
        svg += &format!(
            "<rect class=\"bubble\" x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>\n",
            end * scale,
            row - 2.0
        );
        svg += &format!("<text x=\"2\" y=\"{:.1}\">stage {s}</text>\n", y + row - 6.0);
    }
    for o in &ops {
        let y = o.stage as f64 * row;
        let x = left + o.start * scale;
        let class = if o.backward { "backward" } else { "forward" };
        svg += &format!(
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{:.1}\"/>\n",
            o.compute * scale,
            row - 2.0
        );
        if o.transfer > 0.0 {
            svg += &format!(
                "<rect class=\"transfer\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{:.1}\"/>\n",
                x + o.compute * scale,
                o.transfer * scale,
                row - 2.0
            );
        }
    }
    svg += &format!(
        "<text x=\"{left}\" y=\"{:.1}\">0</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
        height - 8.0,
        width - 10.0,
        height - 8.0,
        seconds(end)
    );
    svg += "</svg>\n";
    (svg, shown)
}

/// A horizontal stacked bar per row: `(label, [(class, value)])`, with an optional limit line.
fn stacked_bars(
    class: &str,
    rows: &[(String, Vec<(&str, f64)>)],
    limit: Option<f64>,
    unit: &dyn Fn(f64) -> String,
) -> String {
    let total_max = rows
        .iter()
        .map(|(_, parts)| parts.iter().map(|p| p.1).sum::<f64>())
        .fold(limit.unwrap_or(0.0), f64::max)
        .max(1e-12);
    let (width, row, left) = (1000.0, 28.0, 150.0);
    let scale = (width - left - 120.0) / total_max;
    let height = row * rows.len() as f64 + 10.0;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{class}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n");
    for (r, (label, parts)) in rows.iter().enumerate() {
        let y = r as f64 * row;
        svg += &format!("<text x=\"2\" y=\"{:.1}\">{}</text>\n", y + 17.0, escape(label));
        let mut x = left;
        for (part, value) in parts {
            let w = value * scale;
            svg += &format!("<rect class=\"{part}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{:.1}\"><title>{part}: {}</title></rect>\n", row - 6.0, unit(*value));
            x += w;
        }
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            x + 4.0,
            y + 17.0,
            unit(parts.iter().map(|p| p.1).sum())
        );
    }
    if let Some(limit) = limit {
        let x = left + limit * scale;
        svg += &format!("<line class=\"limit\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{height}\"/>\n");
    }
    svg += "</svg>\n";
    svg
}

/// A line plot of `(x, y)` points with labelled axes.
fn plot(
    class: &str,
    points: &[(f64, f64)],
    x_label: &str,
    y_label: &str,
    fmt_x: &dyn Fn(f64) -> String,
    fmt_y: &dyn Fn(f64) -> String,
) -> String {
    let (width, height, left, bottom) = (600.0, 320.0, 80.0, 40.0);
    let (x0, x1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let span = |a: f64, b: f64| if (b - a).abs() > 0.0 { b - a } else { a.abs().max(1.0) };
    let sx = |x: f64| left + (x - x0) / span(x0, x1) * (width - left - 20.0);
    let sy = |y: f64| height - bottom - (y - y0) / span(y0, y1) * (height - bottom - 20.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{class}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n");
    svg += &format!(
        "<line class=\"axis\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\n",
        height - bottom,
        width - 20.0,
        height - bottom
    );
    svg += &format!("<line class=\"axis\" x1=\"{left}\" y1=\"20\" x2=\"{left}\" y2=\"{:.1}\"/>\n", height - bottom);
    if !points.is_empty() {
        let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        svg += &format!("<polyline class=\"line\" points=\"{}\"/>\n", path.join(" "));
        for &(x, y) in points {
            svg += &format!(
                "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}, {}</title></circle>\n",
                sx(x),
                sy(y),
                fmt_x(x),
                fmt_y(y)
            );
        }
        svg += &format!("<text x=\"{left}\" y=\"{:.1}\">{}</text>\n", height - bottom + 14.0, fmt_x(x0));
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            width - 20.0,
            height - bottom + 14.0,
            fmt_x(x1)
        );
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", left - 4.0, sy(y0), fmt_y(y0));
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 4.0,
            sy(y1) + 10.0,
            fmt_y(y1)
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        (left + width) / 2.0,
        height - 6.0,
        escape(x_label)
    );
    svg += &format!("<text x=\"12\" y=\"14\">{}</text>\n", escape(y_label));
    svg += "</svg>\n";
    svg
}

fn gigabytes(b: f64) -> String {
    format!("{:.1} GB", b / 1e9)
}

/// The report of a training (or decode-step) plan on `device`.
pub fn plan_report(plan: &Plan, device: &DeviceSpec) -> String {
    let mut body = String::new();
    let p = &plan.parallelism;
    body += &format!(
        "<p>{} on {} ({} x {}): dp={} tp={} pp={} ep={} micro_batch={} interleave={} recompute={} zero={}; step {}, MFU {:.1}%, {:.1} GB per GPU.</p>\n",
        escape(&plan.model),
        escape(&plan.cluster),
        plan.gpus,
        escape(&plan.device),
        p.dp,
        p.tp,
        p.pp,
        p.ep,
        p.micro_batch,
        p.interleave,
        p.recompute.name(),
        p.zero,
        seconds(plan.step_time_s),
        100.0 * plan.mfu,
        plan.memory_per_gpu_bytes / 1e9
    );
    let times = &plan.estimate.pipeline;
    let (svg, shown) = timeline(times);
    body += "<h2>Pipeline timeline</h2>\n";
    body += &format!(
        "<p>1F1B order per stage: forward (blue), backward with recomputation (orange), transfers (green), idle (grey); {shown} of {} micro-batches shown{}.</p>\n",
        times.micro_batches,
        if p.interleave > 1 { format!(", the {} chunks of a stage merged", p.interleave) } else { String::new() }
    );
    body += &svg;
    let m = &plan.estimate.memory;
    body += "<h2>Memory per GPU</h2>\n<p>The stage that needs the most, by category; the dashed line is the device's memory.</p>\n";
    let parts = vec![
        ("weights", m.weights),
        ("gradients", m.gradients),
        ("optimizer", m.optimizer),
        ("activations", m.activations),
        ("temporary", m.temporary),
        ("kv_cache", m.kv_cache),
        ("reserved", m.reserved),
    ];
    body += &stacked_bars("memory", &[("peak stage".to_string(), parts)], Some(plan.device_memory_bytes), &gigabytes);
    body += "<h2>Communication per link class</h2>\n<p>Bytes one GPU sends per step.</p>\n";
    let c = &plan.comm_bytes_per_step;
    let links = vec![
        (c.intra_node_link.clone(), vec![("link", c.intra_node)]),
        (c.inter_node_link.clone(), vec![("link", c.inter_node)]),
    ];
    body += &stacked_bars("communication", &links, None, &gigabytes);
    body += "<h2>Alternatives</h2>\n<table class=\"alternatives\">\n<tr><th>dp</th><th>tp</th><th>pp</th><th>ep</th><th>mb</th><th>v</th><th>recompute</th><th>zero</th><th>step</th><th>memory</th><th>why it lost</th></tr>\n";
    // One row per alternative; the calibration test's text table has the same row layout, not
    // the same columns.
    for a in &plan.alternatives {
        let q = &a.parallelism;
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>\n",
            q.dp,
            q.tp,
            q.pp,
            q.ep,
            q.micro_batch,
            q.interleave,
            q.recompute.name(),
            q.zero,
            seconds(a.step_time_s),
            gigabytes(a.memory_per_gpu_bytes),
            escape(&a.why)
        );
    }
    body += "</table>\n";
    let frontier: Vec<ClockPoint> = match &plan.energy {
        Some(e) => e.frontier.clone(),
        None => ClockPlanner::new(times, device, device.power.clock_ratios()).frontier(FRONTIER_POINTS),
    };
    body += "<h2>Time–energy frontier</h2>\n<p>Per-stage SM clocks (Perseus): step time against energy per step.</p>\n";
    let points: Vec<(f64, f64)> = frontier.iter().map(|f| (f.step_time_s, f.energy_j / 1e3)).collect();
    body += &plot("energy-frontier", &points, "step time", "energy per step (kJ)", &|x| seconds(x), &|y| {
        format!("{y:.0} kJ")
    });
    page(&format!("tessera plan: {}", plan.model), &body)
}

/// The report of a serving plan.
pub fn serve_report(model: &str, cluster: &str, serve: &ServePlan) -> String {
    let mut body = format!(
        "<p>{} on {}: {} placement, prefill on {} x (tp={} pp={}), decode on {} x (tp={} pp={}); TTFT {}, TPOT {}, {:.2} requests/s, {:.2} J per output token.</p>\n",
        escape(model),
        escape(cluster),
        serve.placement,
        serve.prefill.replicas,
        serve.prefill.tp,
        serve.prefill.pp,
        serve.decode.replicas,
        serve.decode.tp,
        serve.decode.pp,
        seconds(serve.ttft_s),
        seconds(serve.tpot_s),
        serve.requests_per_s,
        serve.energy_j_per_token
    );
    body += "<h2>Memory per decode GPU</h2>\n<p>KV cache of the running batch against what is free after the weights.</p>\n";
    let rows = vec![(
        "decode GPU".to_string(),
        vec![
            ("kv_cache", serve.kv_cache_bytes_per_gpu),
            ("free", (serve.kv_capacity_bytes_per_gpu - serve.kv_cache_bytes_per_gpu).max(0.0)),
        ],
    )];
    body += &stacked_bars("memory", &rows, None, &gigabytes);
    body += "<h2>Throughput–latency frontier</h2>\n<p>Decode batch from 1 to the KV cache's limit: output tokens per second per GPU against the time per output token.</p>\n";
    let points: Vec<(f64, f64)> =
        serve.frontier.iter().map(|f| (f.tpot_s * 1e3, f.output_tokens_per_s_per_gpu)).collect();
    body +=
        &plot("serving-frontier", &points, "TPOT (ms)", "output tokens/s per GPU", &|x| format!("{x:.1} ms"), &|y| {
            format!("{y:.0}")
        });
    body += "<table class=\"frontier\">\n<tr><th>batch</th><th>TPOT</th><th>TTFT</th><th>tokens/s per GPU</th></tr>\n";
    for f in &serve.frontier {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>\n",
            f.batch,
            seconds(f.tpot_s),
            seconds(f.ttft_s),
            f.output_tokens_per_s_per_gpu
        );
    }
    body += "</table>\n";
    page(&format!("tessera serving plan: {model}"), &body)
}

#[cfg(test)]
mod tests {
    use super::one_f_one_b;
    use crate::cost::step::{PipelineTimes, StageTimes};

    #[test]
    fn the_simulated_1f1b_schedule_takes_the_step_models_pipeline_time() {
        let stage = StageTimes { gpus: 1, forward_s: 1.0, backward_s: 2.0, ..StageTimes::default() };
        let times =
            PipelineTimes { train: true, micro_batches: 8, interleave: 1, stages: vec![stage; 4], after_s: 0.0 };
        let ops = one_f_one_b(&times, 8);
        assert_eq!(ops.len(), 2 * 4 * 8);
        let end = ops.iter().map(|o| o.start + o.compute + o.transfer).fold(0.0, f64::max);
        // (m + p - 1) * (f + b) for equal stages.
        assert_eq!(end, (8.0 + 3.0) * 3.0);
        // The last stage starts after three forwards.
        let first_last = ops.iter().filter(|o| o.stage == 3).map(|o| o.start).fold(f64::INFINITY, f64::min);
        assert_eq!(first_last, 3.0);
    }
}
