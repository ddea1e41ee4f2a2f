//! `tessera comm-test`: checks the multi-process transport where it runs. Launched with
//! `mpirun -n N tessera comm-test --mesh ...`, every rank
//! 1. runs a script of collectives (all-reduce sum and max in several dtypes, NaN included,
//!    all-gather and reduce-scatter along outer and inner axes, all-to-all over every mesh axis
//!    and over all axes, and a send/recv ring) through the transport `--comm` picks (MPI, or
//!    NCCL on GPUs), and the same script through the in-process [`LocalCommunicator`] on
//!    threads, and compares its results with the local ones; then broadcasts from the last
//!    member of every group and compares with that member's operand;
//! 2. partitions the forward graph of a small zoo model (f64) over the mesh and runs its own
//!    program over MPI; ranks of the last stage compare the outputs with the single-device
//!    interpreter.
//!
//! Rank 0 prints a summary (JSON with `--format json`) with the transport and how many
//! collectives of each kind ran as native library calls; any mismatch fails every rank.

use super::train::{CommArg, Format};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::time::{Duration, Instant};
use tessera::fault;
use tessera_frontend::zoo::build::build_model;
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::{Collective, MeshAxes, Reduction};
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_ir::workload::BlockShape;
use tessera_passes::shard::{partition, ShardConfig};
use tessera_runtime::nccl::Transport;
use tessera_runtime::spmd::{run_rank, Communicator, LocalCommunicator, Tag};

#[derive(Args)]
pub struct CommTestArgs {
    /// The mesh the ranks form; its size must be the number of MPI ranks (default: dp=N).
    #[arg(long)]
    pub mesh: Option<String>,
    /// A zoo model whose forward graph is partitioned over the mesh and run on the ranks.
    #[arg(long, default_value = "gpt:layers=2,hidden=32,heads=4,seq=8,vocab=50")]
    pub model: String,
    /// Seconds a rank waits for a message before failing.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The transport under test.
    #[arg(long, value_enum, default_value_t = CommArg::Mpi)]
    pub comm: CommArg,
    /// After the checks, time all-reduce, all-gather and reduce-scatter of this many f32
    /// elements over all ranks, natively and through the whole-operand exchange.
    #[arg(long, value_name = "ELEMENTS")]
    pub bench: Option<usize>,
    /// Repetitions per timed collective.
    #[arg(long, default_value_t = 20)]
    pub bench_iters: usize,
}

/// A tensor every rank can compute for every rank: deterministic in (rank, what, dtype).
fn operand(rank: usize, what: &str, dtype: DType, shape: Vec<usize>) -> Tensor {
    let mut rng = SplitMix64::for_name(rank as u64 + 1, what);
    uniform_tensor(&mut rng, dtype, shape)
}

/// The collectives script; results are named by what produced them. `fault` is checked before
/// each round (a round is one collective).
fn script(comm: &dyn Communicator, mesh: &Mesh, fault: Option<fault::Fault>) -> Result<Vec<(String, Tensor)>> {
    let rank = comm.rank();
    let mut groups: Vec<Vec<String>> = mesh.axes().iter().map(|a| vec![a.name.clone()]).collect();
    groups.push(mesh.axes().iter().map(|a| a.name.clone()).collect());
    let mut out = Vec::new();
    let mut round = 0u64;
    let mut next_round = || {
        round += 1;
        fault::maybe_die(fault, rank, round);
    };
    for axes in &groups {
        let group = mesh.group(rank, axes).map_err(anyhow::Error::msg)?;
        let g = group.len();
        let name = axes.join("+");
        let err = |op: &str, e: tessera_runtime::spmd::CommError| anyhow::anyhow!("{op} over {name}: {e}");
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            next_round();
            let t = operand(rank, &format!("sum-{name}"), dtype, vec![3, 5]);
            let r = comm.all_reduce(&group, &t, Reduction::Sum).map_err(|e| err("all_reduce", e))?;
            out.push((format!("all_reduce sum {} over {name}", dtype.mlir_name()), r));
        }
        next_round();
        // Integer sums wrap.
        let t = Tensor::from_i64(DType::I64, vec![3], vec![i64::MAX - 1, rank as i64 - 7, 1 << 40]);
        out.push((
            format!("all_reduce sum i64 over {name}"),
            comm.all_reduce(&group, &t, Reduction::Sum).map_err(|e| err("all_reduce", e))?,
        ));
        for dtype in [DType::F32, DType::BF16, DType::I64] {
            next_round();
            let mut t = operand(rank, &format!("max-{name}"), dtype, vec![4]);
            if dtype.is_float() && rank == group[0] {
                // A NaN on one member only must reach every member.
                t = Tensor::from_f64(dtype, vec![4], vec![f64::NAN, 1.0, -2.0, 0.5]);
            }
            out.push((
                format!("all_reduce max {} over {name}", dtype.mlir_name()),
                comm.all_reduce(&group, &t, Reduction::Max).map_err(|e| err("all_reduce", e))?,
            ));
        }
        for (dtype, dim) in [(DType::F32, 1), (DType::BF16, 0), (DType::I64, 1)] {
            next_round();
            let t = operand(rank, &format!("gather-{name}"), dtype, vec![2, 3]);
            out.push((
                format!("all_gather {} dim {dim} over {name}", dtype.mlir_name()),
                comm.all_gather(&group, &t, dim).map_err(|e| err("all_gather", e))?,
            ));
        }
        for (dtype, dim) in [(DType::F32, 0), (DType::F64, 1), (DType::BF16, 1)] {
            next_round();
            let shape = if dim == 0 { vec![2 * g, 3] } else { vec![2, 2 * g, 3] };
            let t = operand(rank, &format!("scatter-{name}"), dtype, shape);
            out.push((
                format!("reduce_scatter {} dim {dim} over {name}", dtype.mlir_name()),
                comm.reduce_scatter(&group, &t, dim).map_err(|e| err("reduce_scatter", e))?,
            ));
        }
        next_round();
        let t = operand(rank, &format!("a2a-{name}"), DType::F64, vec![g, 2]);
        out.push((
            format!("all_to_all over {name}"),
            comm.all_to_all(&group, &t, 0, 1).map_err(|e| err("all_to_all", e))?,
        ));
        if g > 1 {
            // Members whose operands differ in shape: every member must get an error (and
            // the transport must stay usable), never a read past the shorter buffer.
            next_round();
            let member = group.iter().position(|&r| r == rank).unwrap_or(0);
            let t = operand(rank, &format!("mismatch-{name}"), DType::F32, vec![2 + member % 2, 3]);
            let failed = comm.all_gather(&group, &t, 1).is_err();
            out.push((
                format!("mismatched all_gather fails over {name}"),
                Tensor::scalar(DType::Bool, f64::from(u8::from(failed))),
            ));
        }
    }
    // A ring: everyone sends before receiving, which deadlocks any transport whose sends wait.
    next_round();
    let n = comm.size();
    let big = operand(rank, "ring", DType::F32, vec![64, 1024]);
    comm.send((rank + 1) % n, Tag::Message(7), big).context("send")?;
    out.push(("ring recv".into(), comm.recv((rank + n - 1) % n, Tag::Message(7)).context("recv")?));
    Ok(out)
}

/// Seconds per call (the slowest rank's mean over `iters`) of all-reduce, all-gather and
/// reduce-scatter over all ranks, through the native typed methods and through the reference
/// path (`Communicator::collective`: operands exchanged whole, then `eval_group`).
fn bench(comm: &dyn Communicator, elements: usize, iters: usize) -> Result<Vec<serde_json::Value>> {
    let size = comm.size();
    let world: Vec<usize> = (0..size).collect();
    // A multiple of the world size, so reduce-scatter splits it.
    let n = elements.div_ceil(size).max(1) * size;
    let t = operand(comm.rank(), "bench", DType::F32, vec![n]);
    let group = MeshAxes { axes: vec!["world".into()], size: size as u64 };
    let mut rows = Vec::new();
    for op in [
        Collective::AllReduce { reduction: Reduction::Sum, group: group.clone() },
        Collective::AllGather { dim: 0, group: group.clone() },
        Collective::ReduceScatter { dim: 0, group: group.clone() },
    ] {
        let result = op.infer(&[&t.tensor_type()]).map_err(anyhow::Error::msg)?.remove(0);
        let time = |native: bool| -> Result<f64> {
            // Start together, report the slowest rank.
            comm.all_reduce(&world, &Tensor::zeros(DType::F32, vec![1]), Reduction::Sum)?;
            let start = Instant::now();
            for _ in 0..iters {
                match (&op, native) {
                    (Collective::AllReduce { .. }, true) => comm.all_reduce(&world, &t, Reduction::Sum)?,
                    (Collective::AllGather { .. }, true) => comm.all_gather(&world, &t, 0)?,
                    (Collective::ReduceScatter { .. }, true) => comm.reduce_scatter(&world, &t, 0)?,
                    _ => comm.collective(&op, &world, &t, &result)?,
                };
            }
            let mine = start.elapsed().as_secs_f64() / iters as f64;
            let slowest =
                comm.all_reduce(&world, &Tensor::from_f64(DType::F64, vec![1], vec![mine]), Reduction::Max)?;
            Ok(slowest.get_f64(0))
        };
        let (native, exchange) = (time(true)?, time(false)?);
        rows.push(serde_json::json!({"op": op.mnemonic(), "elements": n, "native_s": native, "exchange_s": exchange}));
    }
    Ok(rows)
}

/// Broadcasts from the last member of every group (every mesh axis, and all axes) in several
/// dtypes; the result must be that member's operand, bit for bit. Returns how many ran.
fn check_broadcasts(transport: &Transport, mesh: &Mesh) -> Result<usize> {
    let rank = transport.comm().rank();
    let mut groups: Vec<Vec<String>> = mesh.axes().iter().map(|a| vec![a.name.clone()]).collect();
    groups.push(mesh.axes().iter().map(|a| a.name.clone()).collect());
    let mut count = 0;
    for axes in &groups {
        let group = mesh.group(rank, axes).map_err(anyhow::Error::msg)?;
        let root = group.len() - 1;
        let name = axes.join("+");
        for dtype in [DType::F32, DType::BF16, DType::I64, DType::F64] {
            let what = format!("bcast-{name}");
            let got = transport
                .broadcast(&group, root, &operand(rank, &what, dtype, vec![2, 5]))
                .map_err(|e| anyhow::anyhow!("broadcast over {name}: {e}"))?;
            let want = operand(group[root], &what, dtype, vec![2, 5]);
            ensure!(got == want, "broadcast {} over {name}: got {:?}, expected {:?}", dtype.mlir_name(), got, want);
            count += 1;
        }
    }
    Ok(count)
}

/// The largest elementwise difference relative to the magnitudes (absolute below 1: sums that
/// cancel keep only their absolute rounding error).
/// NaN matches only NaN.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(&x, y)| match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (true, false) | (false, true) => f64::INFINITY,
            _ if x == y => 0.0,
            _ => (x - y).abs() / x.abs().max(y.abs()).max(1.0),
        })
        .fold(0.0, f64::max)
}

fn compare(what: &str, got: &[(String, Tensor)], want: &[(String, Tensor)], tolerance: f64) -> Result<f64> {
    ensure!(got.len() == want.len(), "{what}: {} results, expected {}", got.len(), want.len());
    let mut worst = 0.0f64;
    for ((name, g), (want_name, w)) in got.iter().zip(want) {
        ensure!(name == want_name, "{what}: result '{name}' where '{want_name}' was expected");
        ensure!(g.tensor_type() == w.tensor_type(), "{what} {name}: {} vs {}", g.tensor_type(), w.tensor_type());
        let e = relative_error(g, w);
        ensure!(e <= tolerance, "{what} {name}: relative error {e:.3e} exceeds {tolerance:.0e}");
        worst = worst.max(e);
    }
    Ok(worst)
}

pub fn run(args: CommTestArgs) -> Result<()> {
    ensure!(args.timeout.is_finite() && args.timeout > 0.0, "--timeout must be a positive number of seconds");
    let fault = fault::requested()?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let transport = Transport::open(args.comm.choice(), timeout)?;
    let comm = transport.comm();
    let (rank, size) = (comm.rank(), comm.size());
    let result = check(&args, &transport, fault);
    if let Err(e) = &result {
        // One failing rank must not leave the others waiting.
        if size > 1 {
            comm.abort(&format!("comm-test: {e:#}"));
        }
    }
    let mut summary = result?;
    if let Some(elements) = args.bench {
        let rows = bench(comm, elements, args.bench_iters.max(1));
        if let Err(e) = &rows {
            comm.abort(&format!("comm-test --bench: {e:#}"));
        }
        summary["bench"] = serde_json::Value::Array(rows?);
    }
    if rank == 0 {
        match args.format {
            Format::Json => println!("{summary}"),
            Format::Text => println!(
                "comm-test: {size} ranks on mesh {} over {}: {} collective results match the in-process transport \
                 (max relative error {:.1e}); {} forward outputs match one device (max relative error {:.1e}); \
                 native calls on rank 0: {}",
                summary["mesh"].as_str().unwrap_or("?"),
                transport.name(),
                summary["collective_results"],
                summary["collective_max_rel_error"].as_f64().unwrap_or(f64::NAN),
                summary["forward_outputs"],
                summary["forward_max_rel_error"].as_f64().unwrap_or(f64::NAN),
                transport.native_calls().iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", "),
            ),
        }
        if args.format == Format::Text {
            for row in summary["bench"].as_array().into_iter().flatten() {
                println!(
                    "bench {} of {} f32 over {size} ranks: native {:.3} ms, exchange {:.3} ms",
                    row["op"].as_str().unwrap_or("?"),
                    row["elements"],
                    row["native_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                    row["exchange_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                );
            }
        }
    }
    Ok(())
}

fn check(args: &CommTestArgs, transport: &Transport, fault: Option<fault::Fault>) -> Result<serde_json::Value> {
    let comm = transport.comm();
    let (rank, size) = (comm.rank(), comm.size());
    let mesh_text = args.mesh.clone().unwrap_or_else(|| format!("dp={size}"));
    let mesh = Mesh::parse(&mesh_text).map_err(|e| anyhow::anyhow!("--mesh '{mesh_text}': {e}"))?;
    if mesh.num_devices() != size {
        bail!("--mesh {mesh_text} has {} devices but MPI started {size} ranks", mesh.num_devices());
    }

    // 1. Collectives: MPI against the in-process transport, same script, same operands.
    let local = LocalCommunicator::world(size, transport.timeout());
    let expected = std::thread::scope(|s| {
        let mine = s.spawn(|| script(&local[rank], &mesh, None));
        let others: Vec<_> = (0..size)
            .filter(|&r| r != rank)
            .map(|r| {
                let c = &local[r];
                let mesh = &mesh;
                s.spawn(move || script(c, mesh, None))
            })
            .collect();
        for h in others {
            let _ = h.join();
        }
        mine.join().map_err(|_| anyhow::anyhow!("the in-process reference panicked"))?
    })?;
    let got = script(comm, &mesh, fault)?;
    // Native MPI sums add in another order than the reference (which adds in f64 and rounds once).
    let collective_error = compare("collective", &got, &expected, 1e-6)?;
    let broadcasts = check_broadcasts(transport, &mesh)?;

    // 2. A partitioned forward graph.
    let mut cfg = tessera_frontend::zoo::spec::parse(&args.model)?;
    cfg.dtype = DType::F64;
    let opts = BlockShape { batch: 2 * mesh.num_devices() as u64, ..cfg.block_shape() };
    let graph = build_model(&cfg, &opts)?.graph;
    let module = partition(&graph, &ShardConfig::new(mesh.clone()))
        .with_context(|| format!("{} on mesh {mesh_text}", args.model))?;
    let inputs: Vec<(String, Tensor)> = graph
        .inputs()
        .iter()
        .map(|&v| {
            let value = graph.value(v);
            let shape: Vec<usize> = value.ty.static_shape().unwrap_or_default().iter().map(|&d| d as usize).collect();
            let mut rng = SplitMix64::for_name(5, &value.name);
            let t = if value.ty.dtype.is_float() {
                uniform_tensor(&mut rng, value.ty.dtype, shape)
            } else {
                // Token ids and positions both index tables of at least `seq` rows.
                let n = shape.iter().product();
                let ids = (0..n).map(|_| (rng.next_u64() % cfg.seq) as i64).collect();
                Tensor::from_i64(value.ty.dtype, shape, ids)
            };
            (value.name.clone(), t)
        })
        .collect();
    let program = module.program_of(rank).with_context(|| format!("no program for rank {rank}"))?;
    let rank_inputs = module.rank_inputs(rank, &inputs)?;
    let outputs = run_rank(&mesh, &program.graph, &rank_inputs, comm)?;
    let last_stage = module.stages.last().is_some_and(|s| s.ranks.contains(&rank));
    let (forward_error, forward_outputs) = if last_stage {
        let want = tessera_runtime::interpreter::run(&graph, &inputs)?;
        (compare("forward", &outputs, &want, 1e-9)?, want.len())
    } else {
        (0.0, 0)
    };
    // Every rank must finish its checks before rank 0 reports success.
    let worst = comm.all_reduce(
        &(0..size).collect::<Vec<_>>(),
        &Tensor::from_f64(DType::F64, vec![3], vec![collective_error, forward_error, forward_outputs as f64]),
        Reduction::Max,
    )?;
    let native: serde_json::Map<String, serde_json::Value> =
        transport.native_calls().into_iter().map(|(kind, n)| (kind.to_string(), n.into())).collect();
    Ok(serde_json::json!({
        "ranks": size,
        "mesh": mesh_text,
        "transport": transport.name(),
        "native": native,
        "broadcasts": broadcasts,
        "collective_results": got.len(),
        "collective_max_rel_error": worst.get_f64(0),
        "forward_outputs": worst.get_f64(2) as u64,
        "forward_max_rel_error": worst.get_f64(1),
    }))
}
