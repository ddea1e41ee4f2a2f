//! `tessera bench kernels --target cpu`: the calibration table of this machine (issue 20, item
//! 3). Each op family the e-graph prices ([`calibration::family`]) is compiled for the CPU as a
//! one-op graph at a few shape classes, run on one thread with its parameters resident, and
//! timed step by step by the executor's profile (see [`timed`]). The table, with the machine, goes to
//! `--out` as JSON for `egraph{kernel-costs=FILE}` and `tessera bench egraph --kernel-costs`.

use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::TensorType;
use tessera_passes::egraph::calibration::{self, Machine, Point, Table};
use tessera_passes::egraph::cost;

/// One measured case: the family, a label for the shape class, and its one-op graph.
struct Case {
    family: &'static str,
    shape: String,
    graph: Graph,
}

fn f32(shape: &[u64]) -> TensorType {
    TensorType::of_static(DType::F32, shape)
}

/// A graph of `op` over activation inputs of `shapes` (parameters where `parameter` says so).
fn one_op(op: Op, shapes: &[(&[u64], bool)]) -> Result<Graph> {
    let mut g = Graph::new("calibration");
    let inputs: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, (shape, parameter))| {
            let role = if *parameter { InputRole::Parameter } else { InputRole::Activation };
            g.add_input(&format!("x{i}"), f32(shape), role)
        })
        .collect();
    let y = g.add(op, &inputs)?;
    g.set_outputs(vec![y]);
    Ok(g)
}

fn label(shape: &[u64]) -> String {
    shape.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

/// The shape classes: the sizes the zoo's BERT, GPT-2 and ResNet-50 kernels span, from a few
/// kilobytes (where a step's fixed cost dominates) to tens of megabytes.
fn cases() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let mut push = |family: &'static str, shape: String, graph: Graph| cases.push(Case { family, shape, graph });
    for (m, k, n) in [(16, 64, 64), (128, 768, 768), (128, 768, 3072), (512, 768, 768), (1024, 768, 2304)] {
        let g = one_op(Op::MatMul, &[(&[m, k], false), (&[k, n], true)])?;
        push("matmul", format!("{m}x{k} @ {k}x{n}"), g);
    }
    // Attention's batched matmul (both operands activations).
    let g = one_op(Op::MatMul, &[(&[12, 128, 64], false), (&[12, 64, 128], false)])?;
    push("matmul", "12x128x64 @ 12x64x128".into(), g);
    let window = |stride: i64, pad: i64| Window { strides: [stride, stride], pads: [pad; 4], dilations: [1, 1] };
    for (c, o, hw, k, stride) in
        // The 3x3 ones at every ResNet-50 stage, so that each direct convolution the Winograd
        // rule could replace is priced by a point of its own shape class.
        [
            (16, 16, 8, 3, 1),
            (64, 64, 56, 3, 1),
            (128, 128, 28, 3, 1),
            (256, 256, 14, 3, 1),
            (512, 512, 7, 3, 1),
            (256, 64, 56, 1, 1),
            (512, 2048, 7, 1, 1),
        ]
    {
        let op = Op::Conv2d { window: window(stride, k as i64 / 2), groups: 1 };
        let g = one_op(op, &[(&[1, c, hw, hw], false), (&[o, c, k, k], true)])?;
        push("conv2d", format!("1x{c}x{hw}x{hw} * {o}x{c}x{k}x{k}"), g);
    }
    let sizes: [&[u64]; 4] = [&[1024], &[128, 768], &[1, 256, 56, 56], &[12, 512, 512]];
    for shape in sizes {
        push(
            "elementwise",
            format!("add {}", label(shape)),
            one_op(Op::Binary(BinaryOp::Add), &[(shape, false), (shape, false)])?,
        );
    }
    for shape in sizes {
        push("elementwise", format!("gelu {}", label(shape)), one_op(Op::Unary(UnaryOp::Gelu), &[(shape, false)])?);
    }
    let rows: [&[u64]; 3] = [&[8, 128], &[12, 128, 128], &[12, 512, 512]];
    for shape in rows {
        push("softmax", label(shape), one_op(Op::Softmax { axis: -1 }, &[(shape, false)])?);
        let reduce = Op::Reduce { kind: ReduceKind::Sum, axes: vec![-1], keepdims: true };
        push("reduce", format!("sum {}", label(shape)), one_op(reduce, &[(shape, false)])?);
    }
    for rows in [8, 128, 1024] {
        let op = Op::LayerNorm { axis: -1, epsilon: 1e-5 };
        let g = one_op(op, &[(&[rows, 768], false), (&[768], true), (&[768], true)])?;
        push("norm", format!("{rows}x768"), g);
    }
    for shape in [[1u64, 8, 4, 16], [1, 128, 12, 64], [1, 512, 12, 64]] {
        push("transpose", label(&shape), one_op(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[(&shape, false)])?);
    }
    for shape in [[8u64, 64], [128, 768], [512, 768]] {
        push("concat", format!("3 x {}", label(&shape)), one_op(Op::Concat { axis: -1 }, &[(&shape[..], false); 3])?);
    }
    // Winograd F(2x2, 3x3) over ResNet-50's stride-1 3x3 convolutions: the input and output
    // transforms (memory-bound), and the batched GEMM between them (16 transform positions,
    // the weight transform resident: it runs at bind).
    for (c, hw) in [(64u64, 56u64), (128, 28), (256, 14), (512, 7)] {
        let tiles = hw.div_ceil(2) * hw.div_ceil(2);
        let input = Op::WinogradInput { pads: [1; 4] };
        push("winograd", format!("input 1x{c}x{hw}x{hw}"), one_op(input, &[(&[1, c, hw, hw], false)])?);
        let shape = vec![1, c, hw, hw].into_iter().map(tessera_ir::types::Dim::Static).collect();
        let output = Op::WinogradOutput { shape };
        push("winograd", format!("output 16x{tiles}x{c}"), one_op(output, &[(&[16, tiles, c], false)])?);
        let g = one_op(Op::MatMul, &[(&[16, tiles, c], false), (&[16, c, c], true)])?;
        push("matmul", format!("16x{tiles}x{c} @ 16x{c}x{c}"), g);
    }
    for (c, hw) in [(16, 16), (64, 112)] {
        let op = Op::Pool2d { kind: PoolKind::Max, kernel: [3, 3], window: window(2, 1) };
        push("pool2d", format!("1x{c}x{hw}x{hw}"), one_op(op, &[(&[1, c, hw, hw], false)])?);
    }
    Ok(cases)
}

/// The work of `g`'s one node as the e-graph counts it ([`cost::kernel_work`]).
/// Also the bytes it moves, for families whose work is FLOPs (see [`Point::bytes`]).
fn work(g: &Graph, family: &str) -> Result<(f64, Option<f64>)> {
    let (_, node) = g.nodes().next().ok_or_else(|| anyhow!("empty calibration graph"))?;
    let inputs: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
    let results: Vec<&TensorType> = node.outputs.iter().map(|&v| &g.value(v).ty).collect();
    let (flops, bytes) = cost::kernel_work(&node.op, &inputs, &results);
    Ok(if calibration::work_is_flops(family) { (flops, Some(bytes)) } else { (bytes, None) })
}

/// One calibration graph's times, in microseconds (medians over repeated runs).
struct Timed {
    /// Process CPU time of a whole run: the steps, and copying the activation inputs in and
    /// the outputs out.
    run_us: f64,
    /// The steps' share of it: what the kernel costs inside a model, where no copy surrounds
    /// it.
    steps_us: f64,
}

/// Times repeated runs of `g`: compiled for the CPU, parameters resident, one thread. A run is
/// timed by process CPU time, not wall time, because on a shared machine a run's wall time is
/// mostly waiting for a core; the steps get the share of it that the executor's profile (wall
/// time around each step) gives them of the run's wall time, both taken at their 10th
/// percentile over the runs (the runs least interrupted by waiting for a core, which would
/// otherwise land on the steps or the copies at random). Timing the steps, rather than
/// subtracting the copies at a measured copy rate, keeps memory-bound kernels off a floor: the
/// copies of a one-op run are most of it when the op moves no more bytes than they do.
fn timed(g: &Graph, scratch: &Path) -> Result<Timed> {
    use tessera_codegen::artifact::{compile, write_artifact, CompileOptions};
    use tessera_runtime::executor::cpu::CpuExecutor;
    use tessera_runtime::executor::profile::Profile;
    let options = CompileOptions::cpu();
    let compiled = compile(g, b"calibration", &options).map_err(|e| anyhow!("compile: {e}"))?;
    std::fs::remove_dir_all(scratch).ok();
    write_artifact(scratch, &compiled.files).map_err(|e| anyhow!("write: {e}"))?;
    let artifact = tessera_runtime::executor::load::load(scratch).map_err(|e| anyhow!("load: {e}"))?;
    let executor = CpuExecutor::new(artifact).map_err(|e| anyhow!("load: {e}"))?;
    let inputs = tessera_ir::testing::inputs::model_inputs(g, 1, 0);
    let is_parameter = |name: &str| {
        g.inputs().iter().any(|&v| g.value(v).name == name && g.input_role(v) == Some(InputRole::Parameter))
    };
    let (resident, per_run): (Vec<_>, Vec<_>) = inputs.into_iter().partition(|(n, _)| is_parameter(n));
    let mut bound = executor.bind(&resident).map_err(|e| anyhow!("bind: {e}"))?;
    bound.run(&per_run).map_err(|e| anyhow!("run: {e}"))?;
    let (budget_s, max_runs, min_runs) = (0.3, 200, 5);
    let (mut runs, mut steps, mut walls) = (Vec::new(), Vec::new(), Vec::new());
    let mut spent = 0.0;
    for run in 0..max_runs {
        let mut profile = Profile::new();
        let (started, wall) = (super::bench::process_cpu_seconds()?, std::time::Instant::now());
        bound.run_profiled(&per_run, &mut profile).map_err(|e| anyhow!("run: {e}"))?;
        let (cpu, wall) = (super::bench::process_cpu_seconds()? - started, wall.elapsed().as_secs_f64());
        let is_step = |kind: &str| kind.starts_with("kernel ") || kind.starts_with("library ");
        let step_wall: f64 = profile.entries().iter().filter(|e| is_step(&e.kind)).map(|e| e.total.as_secs_f64()).sum();
        runs.push(cpu);
        steps.push(step_wall);
        walls.push(wall);
        spent += cpu;
        if run + 1 >= min_runs && spent >= budget_s {
            break;
        }
    }
    let quantile = |mut times: Vec<f64>, q: f64| {
        times.sort_by(|a, b| a.total_cmp(b));
        times[((times.len() - 1) as f64 * q) as usize] * 1e6
    };
    let run_us = quantile(runs, 0.5);
    let share = (quantile(steps, 0.1) / quantile(walls, 0.1)).min(1.0);
    Ok(Timed { run_us, steps_us: run_us * share })
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map_or_else(|| "unknown".to_string(), |m| m.trim().to_string());
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads: rayon_threads(),
        load_average,
        build: if cfg!(debug_assertions) { "debug" } else { "release" }.to_string(),
        measured_at_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS").ok().and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// Measures every case, prints a table, and writes the JSON table to `out` when given.
pub fn run(out: Option<&Path>) -> Result<()> {
    let machine = machine();
    let scratch = std::env::temp_dir().join(format!("tessera-bench-kernels-cpu-{}", std::process::id()));
    println!(
        "machine: {} ({} CPUs, {} thread(s), load {:.1}, {} build)",
        machine.cpu, machine.cpus, machine.threads, machine.load_average, machine.build
    );
    println!("| family | shape class | work | run (CPU) | steps alone | rate |");
    println!("|---|---|---|---|---|---|");
    let mut families: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for case in cases()? {
        let (work, bytes) = work(&case.graph, case.family)?;
        let Timed { run_us, steps_us } =
            timed(&case.graph, &scratch).map_err(|e| anyhow!("{} {}: {e}", case.family, case.shape))?;
        // A step is never free: the profile's clock has a resolution far below any kernel here.
        let us = steps_us.max(0.01);
        let rate = if calibration::work_is_flops(case.family) {
            format!("{:.2} GFLOP/s", work / us / 1e3)
        } else {
            format!("{:.2} GB/s", work / us / 1e3)
        };
        let unit = if calibration::work_is_flops(case.family) { "FLOP" } else { "B" };
        println!("| {} | {} | {work:.3e} {unit} | {run_us:.1} µs | {us:.1} µs | {rate} |", case.family, case.shape);
        families.entry(case.family.to_string()).or_default().push(Point { shape: case.shape, work, us, bytes });
    }
    std::fs::remove_dir_all(&scratch).ok();
    let mut table = Table { machine, families };
    for points in table.families.values_mut() {
        points.sort_by(|a, b| a.work.total_cmp(&b.work));
    }
    if let Some(out) = out {
        let text = serde_json::to_string_pretty(&table)?;
        // Read back through the checking parser, so a table written is a table that loads.
        Table::from_json(&out.display().to_string(), &text)?;
        std::fs::write(out, text + "\n").map_err(|e| anyhow!("{}: {e}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
