//! The planner: never slower than the published Megatron configurations it competes with,
//! honours fixed knobs, names a bad one, explains infeasible models, plans serving and MoE,
//! and its JSON for a small fixed case is a snapshot.

use crate::support::{cluster, zoo};
use tessera_passes::cost::step::{
    estimate, GradAccumulation, Job, LayerPartition, Mode, Parallelism, Recompute, Schedule, MEGATRON_DEEPSPEED_TP,
};
use tessera_passes::cost::workload::{GraphWorkload, ProfileCache};
use tessera_passes::planner::fixed::Fixed;
use tessera_passes::planner::{plan, Plan, PlanError, Request};

fn train(global_batch: u64, seq: u64) -> Job {
    Job { mode: Mode::Train, global_batch, seq }
}

fn run(model: &str, cluster_spec: &str, job: Job, fix: &str) -> Result<Plan, PlanError> {
    let w = zoo(model);
    let c = cluster(cluster_spec);
    let request = Request { job, fixed: Fixed::parse(fix)?, alternatives: 4 };
    plan(&w, &c, &request, &mut |_, _| {})
}

#[test]
fn never_slower_than_the_published_configuration() {
    // Korthikanti et al. 2022's configurations with sequence parallelism and selective
    // recomputation: (model, gpus, tp, pp, interleave), micro-batch 1, global batch = gpus.
    let published = [("gpt-175b", 64, 8, 8, 3), ("gpt-530b", 280, 8, 35, 3), ("gpt-1t", 512, 8, 64, 1)];
    for (model, gpus, tp, pp, interleave) in published {
        let spec = format!("a100-80g-sxm:gpus={gpus}");
        let job = train(gpus, 2048);
        let best = run(model, &spec, job, "").unwrap_or_else(|e| panic!("{model}: {e}"));
        let w = zoo(model);
        let c = cluster(&spec);
        let par = Parallelism {
            dp: 1,
            tp,
            pp,
            ep: 1,
            sp: true,
            micro_batch: 1,
            interleave,
            recompute: Recompute::Selective,
            zero: 0,
            schedule: Schedule::OneFOneB,
            grad_accumulation: GradAccumulation::Fused,
            layer_partition: LayerPartition::Time,
        };
        let reference = estimate(&mut ProfileCache::new(&w, &c.device), &c, &job, &par).expect("published");
        assert!(best.step_time_s <= reference.step_time_s, "{model}: {} > {}", best.step_time_s, reference.step_time_s);
        assert!(best.memory_per_gpu_bytes <= c.device.memory_bytes(), "{model} does not fit");
        assert_eq!(best.parallelism.gpus(), gpus);
        assert!(best.search.space > 100 && best.search.feasible > 0, "{:?}", best.search);
        assert!(best.mfu > 0.3 && best.mfu < 0.8, "{model}: MFU {}", best.mfu);
    }
}

#[test]
fn fixing_every_knob_gives_the_estimate_of_that_configuration() {
    let fix = "dp=1,tp=8,pp=8,micro_batch=1,interleave=3,recompute=full,sp=off,zero=0";
    let p = run("gpt-175b", "a100-80g-sxm:gpus=64", train(64, 2048), fix).expect("plan");
    assert_eq!((p.search.space, p.parallelism.interleave, p.parallelism.recompute), (1, 3, Recompute::Full));
    // The calibration row: 18.13 s measured.
    assert!((p.step_time_s / 18.13 - 1.0).abs() < 0.15, "{}", p.step_time_s);
    assert!(p.alternatives.is_empty());
    // Fixing some knobs searches the rest.
    let some = run("gpt-175b", "a100-80g-sxm:gpus=64", train(64, 2048), "tp=8,pp=8").expect("plan");
    assert_eq!((some.parallelism.tp, some.parallelism.pp, some.parallelism.dp), (8, 8, 1));
    assert!(some.step_time_s <= p.step_time_s);
}

#[test]
fn bad_fixes_name_the_knob() {
    let err = |fix: &str| run("gpt-175b", "a100-80g-sxm:gpus=64", train(64, 2048), fix).expect_err(fix).to_string();
    assert_eq!(err("tp=64"), "--fix tp: model 'gpt-175b': cannot build tp=64: tp must divide heads = 96");
    assert_eq!(err("tp=3"), "--fix tp: tp=3 does not divide the 64 GPUs");
    assert_eq!(err("pp=128"), "--fix pp: pp=128 is larger than the 96 layers");
    assert_eq!(err("tp=8,pp=16"), "--fix pp: tp * pp = 128 does not divide the 64 GPUs");
    assert_eq!(err("tp=8,pp=4,dp=4"), "--fix dp: dp * tp * pp = 128 but the cluster has 64 GPUs");
    assert_eq!(err("dp=64,micro_batch=2"), "--fix micro_batch: 2 does not divide the per-replica batch 1");
    assert_eq!(err("pp=5,interleave=2"), "--fix pp: pp=5 does not divide the 64 GPUs");
    assert_eq!(err("pp=8,interleave=5"), "--fix interleave: pp * interleave = 40 does not divide the 96 layers");
    assert_eq!(err("tp=1,sp=on"), "--fix sp: sequence parallelism needs tp > 1");
    assert_eq!(err("zero=4"), "--fix zero: '4' is not a ZeRO stage 0..3");
    assert_eq!(err("recompute=some"), "--fix recompute: 'some' is not one of none, selective, full");
    assert!(err("tensor=8").starts_with("--fix tensor: unknown knob; knobs: dp, tp, pp,"));
    assert_eq!(err("ep=2"), "--fix ep: model 'gpt-175b': cannot build ep=2: expert parallelism needs an MoE model");
}

#[test]
fn a_model_that_fits_nowhere_says_how_much_it_needs() {
    let e = run("gpt-1t", "a100-80g-sxm", train(8, 2048), "").expect_err("1T on 8 GPUs");
    assert!(e.is_infeasible());
    let PlanError::Infeasible { min_memory_bytes, device_memory_bytes, .. } = &e else { panic!("{e}") };
    // At least the weights, gradients and Adam state of 1T parameters over 8 GPUs.
    assert!(*min_memory_bytes > 1.0e12 * 18.0 / 8.0 && *device_memory_bytes == 80e9);
    assert!(e.to_string().starts_with("gpt-1t does not fit on a100-80g-sxm: the smallest configuration needs"));
    let fixed = run("gpt-175b", "a100-80g-sxm:gpus=64", train(64, 2048), "tp=1,pp=1,zero=0").expect_err("no room");
    assert!(fixed.to_string().contains("under the fixed knobs"), "{fixed}");
    let none = run("gpt-175b", "a100-80g-sxm:gpus=64", train(63, 2048), "tp=8,pp=8,dp=1,micro_batch=2");
    assert!(matches!(none, Err(PlanError::BadFix { .. })), "{none:?}");
}

#[test]
fn serving_and_experts_plan_too() {
    let serve = Job { mode: Mode::Serve, global_batch: 64, seq: 8192 };
    let p = run("llama3-70b", "h100-80g-sxm", serve, "").expect("serve");
    assert!(p.estimate.memory.kv_cache > 0.0 && p.estimate.memory.optimizer == 0.0);
    assert!(p.tokens_per_s > 100.0, "{}", p.tokens_per_s);
    let moe = run("mixtral-8x7b", "h100-80g-sxm:gpus=64", train(256, 4096), "").expect("moe");
    assert_eq!(8 % moe.parallelism.ep, 0);
    assert_eq!(moe.parallelism.dp % moe.parallelism.ep, 0);
    let ep = run("mixtral-8x7b", "h100-80g-sxm:gpus=64", train(256, 4096), "ep=8,tp=1,pp=1").expect("ep=8");
    assert!(ep.estimate.time.ep_comm_s > 0.0 && ep.comm_bytes_per_step.inter_node > 0.0);
}

#[test]
fn any_graph_plans_every_layout_the_shard_pass_can_cut() {
    let text = include_str!("../../examples/transformer_block.mlir");
    let graph = tessera_frontend::load::load_model_text(
        std::path::Path::new("block.mlir"),
        text,
        tessera_frontend::load::ModelFormat::MlirText,
    )
    .expect("example parses");
    let w = GraphWorkload::new(graph, 16).expect("partitionable");
    let c = cluster("a100-80g-sxm");
    let request = Request { job: train(64, 16), fixed: Fixed::default(), alternatives: 2 };
    // A tiny block: replicas are cheapest, but tp and pp were priced (the space holds them).
    let p = plan(&w, &c, &request, &mut |_, _| {}).expect("plan");
    assert_eq!((p.parallelism.dp, p.parallelism.tp, p.parallelism.pp), (8, 1, 1));
    let tp = Request { fixed: Fixed::parse("tp=2,pp=2,zero=0").expect("fix"), ..request };
    let p = plan(&w, &c, &tp, &mut |_, _| {}).expect("tp=2,pp=2 plans");
    assert!(p.estimate.time.tp_comm_s > 0.0 && p.estimate.time.pp_comm_s > 0.0, "{:?}", p.estimate.time);
    for (fix, knob) in [("sp=on", "sp"), ("pp=2,interleave=2", "interleave"), ("pp=1000", "pp")] {
        let r = Request { fixed: Fixed::parse(fix).expect("fix"), ..request };
        let err = plan(&w, &c, &r, &mut |_, _| {}).expect_err(fix).to_string();
        assert!(err.starts_with(&format!("--fix {knob}: ")), "{fix}: {err}");
    }
}

/// The memory a plan predicts for a graph is what the partitioned programs hold: weights are
/// the local parameter bytes of a stage program, gradients and Adam state 4 and 12 bytes per
/// local parameter.
#[test]
fn graph_plan_memory_is_the_partitioned_programs_local_parameters() {
    use tessera_ir::workload::BlockShape;
    use tessera_passes::cost::workload::Workload;
    let text = crate::support::wide_mlp_mlir(2, 128, 1024);
    let graph = tessera_frontend::load::load_model_text(
        std::path::Path::new("wide.mlir"),
        &text,
        tessera_frontend::load::ModelFormat::MlirText,
    )
    .expect("generated MLP parses");
    let w = GraphWorkload::new(graph, 1).expect("partitionable");
    let c = cluster("h100-80g-sxm:gpus=8");
    for (tp, pp) in [(2, 1), (4, 2), (1, 4)] {
        let fix = format!("tp={tp},pp={pp},zero=0,micro_batch=1,recompute=none");
        let request = Request { job: train(8, 1), fixed: Fixed::parse(&fix).expect("fix"), alternatives: 0 };
        let p = plan(&w, &c, &request, &mut |_, _| {}).expect("plan");
        let shape = BlockShape { batch: 1, seq: 1, tp, ep: 1, training: true, kv_cache: 0 };
        let module = w.partitioned(&shape, pp).expect("partition");
        assert_eq!(module.stages.len() as u64, pp);
        // (bytes, elements) of each stage program's parameter inputs, at their local types.
        let local: Vec<(f64, f64)> = module
            .stages
            .iter()
            .map(|s| {
                let g = &s.graph;
                let params =
                    g.inputs().iter().filter(|&&v| g.input_role(v) == Some(tessera_ir::graph::InputRole::Parameter));
                params.fold((0.0, 0.0), |(b, n), &v| {
                    let ty = &g.value(v).ty;
                    let elements = ty.num_elements().expect("static") as f64;
                    (b + elements * ty.dtype.size_bytes() as f64, n + elements)
                })
            })
            .collect();
        let m = &p.estimate.memory;
        let stage = local.iter().find(|(bytes, _)| *bytes == m.weights);
        let (_, elements) = stage.unwrap_or_else(|| panic!("tp={tp} pp={pp}: weights {} not in {local:?}", m.weights));
        assert_eq!(m.gradients, 4.0 * elements, "tp={tp} pp={pp}");
        assert_eq!(m.optimizer, 12.0 * elements, "tp={tp} pp={pp}");
        let total: f64 = local.iter().map(|(b, _)| b).sum();
        assert!(total * tp as f64 >= 2.0 * w.parameters() as f64, "every parameter is held somewhere");
        if tp > 1 {
            // Megatron's split: the column- and row-parallel weights are cut over tp.
            assert!(local.iter().all(|(b, _)| *b <= 2.0 * w.parameters() as f64 / tp as f64), "{local:?}");
        }
    }
}

#[test]
fn small_plan_json_snapshot() {
    let p = run("gpt:layers=4,hidden=512,heads=8,seq=512,vocab=1024", "a100-80g-sxm:gpus=16", train(32, 512), "")
        .expect("plan");
    let json = serde_json::to_value(&p).expect("json");
    for key in crate::support::PLAN_FIELDS {
        assert!(json.get(key).is_some(), "plan JSON lacks {key}");
    }
    insta::assert_json_snapshot!(json);
}

/// A model file without a symbolic batch runs its own batch per micro-batch: the planner
/// counts micro-batches of that size and refuses another `micro_batch`.
#[test]
fn a_static_batch_is_the_micro_batch() {
    let text = crate::support::wide_mlp_mlir(1, 64, 256).replace("?x", "2x").replace(", [\"batch\"]", "");
    let graph = tessera_frontend::load::load_model_text(
        std::path::Path::new("static.mlir"),
        &text,
        tessera_frontend::load::ModelFormat::MlirText,
    )
    .expect("static MLP parses");
    let w = GraphWorkload::new(graph, 1).expect("partitionable");
    let c = cluster("h100-80g-sxm:gpus=8");
    let request = Request { job: train(32, 1), fixed: Fixed::default(), alternatives: 3 };
    let p = plan(&w, &c, &request, &mut |_, _| {}).expect("plan");
    assert_eq!(p.parallelism.micro_batch, 2);
    assert!(p.alternatives.iter().all(|a| a.parallelism.micro_batch == 2));
    assert_eq!(p.estimate.micro_batches, 32 / (2 * p.parallelism.dp));
    let fix = Request { fixed: Fixed::parse("micro_batch=4").expect("fix"), ..request };
    let err = plan(&w, &c, &fix, &mut |_, _| {}).expect_err("static batch").to_string();
    assert_eq!(err, "--fix micro_batch: the model's batch is static: 2 per micro-batch");
    let odd = Request { job: train(3, 1), ..request };
    let err = plan(&w, &c, &odd, &mut |_, _| {}).expect_err("3 sequences in runs of 2").to_string();
    assert!(err.contains("static (2 per micro-batch)"), "{err}");
}

/// `grad_accumulation=unfused` adds a pass of 6 bytes per parameter of the stage to every
/// micro-batch's backward; `grad_accumulation=bf16_optimizer` (DeepSpeed's `BF16_Optimizer`)
/// one of 18 bytes, all-reduces the gradients in fp32 rather than reduce-scattering them, and
/// keeps the bf16 gradient beside the fp32 one (2 bytes per parameter, as much as the bf16
/// weights); the latter only with DeepSpeed's engine.
#[test]
fn unfused_gradient_accumulation_streams_every_parameter_every_micro_batch() {
    let base = "tp=8,pp=4,dp=2,micro_batch=1,interleave=1,recompute=full,sp=off,zero=1,schedule=deepspeed";
    let job = train(64, 2048);
    let of = |extra: &str| {
        run("gpt-22b", "a100-80g-sxm:gpus=64", job, &format!("{base}{extra}"))
            .unwrap_or_else(|e| panic!("{extra}: {e}"))
    };
    let fused = of("");
    let unfused = of(",grad_accumulation=unfused");
    let bf16 = of(",grad_accumulation=bf16_optimizer");
    assert_eq!(fused.parallelism.grad_accumulation, GradAccumulation::Fused);
    assert_eq!(unfused.parallelism.grad_accumulation, GradAccumulation::Unfused);
    assert_eq!(bf16.parallelism.grad_accumulation, GradAccumulation::Bf16Optimizer);
    // The pass of every stage over a step: its backward time per micro-batch grows by it.
    let m = fused.estimate.micro_batches as f64;
    let passes = |p: &Plan| -> Vec<f64> {
        let stages = p.estimate.pipeline.stages.iter().zip(&fused.estimate.pipeline.stages);
        stages.map(|(s, f)| m * (s.backward_s - f.backward_s)).collect()
    };
    let (unfused_passes, bf16_passes) = (passes(&unfused), passes(&bf16));
    // The same parameters stream in both on every stage: the pass grows with its bytes, 18
    // against 6.
    for (b, u) in bf16_passes.iter().zip(&unfused_passes) {
        assert!(*u > 0.0 && (b - 3.0 * u).abs() <= 1e-9 * b, "{bf16_passes:?} {unfused_passes:?}");
    }
    // The stage with the most memory holds the embedding and the most parameters: its pass is
    // over `weights / 2` of them (bf16); the others' over fewer.
    let weights = fused.estimate.memory.weights;
    let bandwidth = cluster("a100-80g-sxm:gpus=64").device.stream_bandwidth();
    let full_pass = m * (weights / 2.0) * 18.0 / bandwidth;
    let largest = bf16_passes.iter().fold(0.0f64, |a, &b| a.max(b));
    assert!(largest > 0.5 * full_pass && largest <= full_pass * 1.0001, "{largest} s of {full_pass} s");
    let smallest_unfused = unfused_passes.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    assert!(unfused.estimate.step_time_s > fused.estimate.step_time_s + 0.9 * smallest_unfused);
    assert_eq!(unfused.estimate.memory.gradients, fused.estimate.memory.gradients);
    assert_eq!(unfused.estimate.time.dp_comm_exposed_s, fused.estimate.time.dp_comm_exposed_s);
    assert!((bf16.estimate.memory.gradients - fused.estimate.memory.gradients - weights).abs() <= 1e-6 * weights);
    assert!(bf16.estimate.time.dp_comm_exposed_s > fused.estimate.time.dp_comm_exposed_s);
    let err = run("gpt-22b", "a100-80g-sxm:gpus=64", job, "pp=4,grad_accumulation=bf16_optimizer")
        .expect_err("bf16 optimizer without deepspeed")
        .to_string();
    assert!(err.starts_with("--fix grad_accumulation: "), "{err}");
    let err = run("gpt-22b", "a100-80g-sxm:gpus=64", job, "grad_accumulation=fp8").expect_err("unknown").to_string();
    assert!(err.starts_with("--fix grad_accumulation: 'fp8' is not"), "{err}");
}

/// `layer_partition=` cuts the layers as the framework did rather than by time: `layers` by
/// count (Megatron-LM, DeepSpeed's `type:transformer`: 10 layers over 4 stages fill 3, 3, 3
/// and leave 1, as DeepSpeed's `partition_balanced` does), `layers_and_embeddings` with the
/// embedding and the head counted as a layer each (DeepSpeed's `type:transformer|embedding`:
/// 12 items, 2, 3, 3, 2 layers). Read back from each stage's forward time, in units of the
/// middle stages' layers (the 512-token embedding and head are small beside a layer).
#[test]
fn fixed_layer_partition_cuts_the_stages_by_count() {
    let model = "gpt:layers=10,hidden=2048,heads=16,vocab=512,seq=1024";
    let base = "tp=1,pp=4,dp=1,micro_batch=1,interleave=1,recompute=full,sp=off,zero=0,schedule=deepspeed";
    let job = train(8, 1024);
    let layers_per_stage = |partition: &str| -> Vec<f64> {
        let fix = if partition.is_empty() { base.to_string() } else { format!("{base},layer_partition={partition}") };
        let plan = run(model, "a100-80g-sxm:gpus=4", job, &fix).unwrap_or_else(|e| panic!("{partition}: {e}"));
        let forward: Vec<f64> = plan.estimate.pipeline.stages.iter().map(|s| s.forward_s).collect();
        let name = if partition.is_empty() { "time" } else { partition };
        assert_eq!(plan.parallelism.layer_partition.name(), name);
        // Stage 1 holds 3 layers under every partition here.
        forward.iter().map(|f| 3.0 * f / forward[1]).collect()
    };
    let near = |got: &[f64], want: [f64; 4]| got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 0.05);
    let by_count = layers_per_stage("layers");
    assert!(near(&by_count, [3.0, 3.0, 3.0, 1.0]), "layers: {by_count:?}");
    let with_ends = layers_per_stage("layers_and_embeddings");
    assert!(near(&with_ends, [2.0, 3.0, 3.0, 2.0]), "layers_and_embeddings: {with_ends:?}");
    // By time the slowest stage holds the fewest layers it can: 3.
    let by_time = layers_per_stage("");
    assert!(by_time.iter().all(|&l| l <= 3.05) && by_time.iter().sum::<f64>() >= 9.9, "time: {by_time:?}");
    let err = run(model, "a100-80g-sxm:gpus=4", job, "layer_partition=parameters").expect_err("unknown").to_string();
    assert!(err.starts_with("--fix layer_partition: 'parameters' is not"), "{err}");
}

/// `schedule=deepspeed` prices DeepSpeed's pipeline engine, whose stages wait only for the
/// neighbour they exchange with: with the same fixed configuration the pipeline is 1F1B's
/// plus a second pair of transfers per micro-batch and Megatron-DeepSpeed's slower
/// tensor-parallel collectives (`MEGATRON_DEEPSPEED_TP`: ring times and a time per call, in every slot
/// of the pipeline), within one micro-batch's slot (where the step-by-step run and 1F1B's
/// closed form pace an uneven pipeline differently), not a lockstep of backward halves; the
/// gradient reduction overlaps nothing; it cannot be interleaved.
#[test]
fn deepspeed_schedule_pays_its_exchanges_not_a_lockstep() {
    let base = "tp=8,pp=4,dp=2,micro_batch=1,interleave=1,recompute=full,sp=off,zero=1";
    let job = train(64, 2048);
    let of = |schedule: &str| {
        run("gpt-22b", "a100-80g-sxm:gpus=64", job, &format!("{base},schedule={schedule}"))
            .unwrap_or_else(|e| panic!("{schedule}: {e}"))
    };
    let (megatron, deepspeed) = (of("1f1b"), of("deepspeed"));
    assert_eq!(deepspeed.parallelism.schedule, Schedule::DeepSpeed);
    let (m, t) = (megatron.estimate.micro_batches as f64, &megatron.estimate.time);
    // Per micro-batch on the slowest stage: forward f, backward 2f, full recomputation f.
    let per_micro_batch = (t.compute_s + t.recompute_s + t.tp_comm_s + t.pp_comm_s) / m;
    let tp_s = deepspeed.estimate.time.tp_comm_s;
    // Megatron-DeepSpeed's collective: `ring_time_factor` ring times and `call_s` per call. What
    // is left after the ring part is a call count per micro-batch of the slowest stage: at least
    // the 12 layers' two all-reduces in each of the forward, the recomputed forward and the
    // backward, and at most those and the end blocks' (the two schedules may pick different
    // end stages as the slowest, so the count need not be whole).
    let stack = MEGATRON_DEEPSPEED_TP;
    let calls_per_micro_batch = (tp_s - stack.ring_time_factor * t.tp_comm_s) / stack.call_s / m;
    assert!(
        (72.0..=90.0).contains(&calls_per_micro_batch),
        "{tp_s} s, {} s: {calls_per_micro_batch} calls per micro-batch",
        t.tp_comm_s
    );
    // The slower collectives lengthen every slot of the pipeline, `m + p - 1` of them.
    let slots = m + (megatron.estimate.pipeline.stages.len() - 1) as f64;
    let tp_gap = (tp_s - t.tp_comm_s) / m * slots;
    let pipeline_gap = deepspeed.estimate.pipeline_time_s - megatron.estimate.pipeline_time_s - tp_gap;
    assert!(t.pp_comm_s > 0.0);
    assert!((pipeline_gap - t.pp_comm_s).abs() <= per_micro_batch, "{pipeline_gap} s against {} s", t.pp_comm_s);
    assert!((deepspeed.estimate.time.pp_comm_s - 2.0 * t.pp_comm_s).abs() <= 1e-9 * t.pp_comm_s);
    // A lockstep of backward halves would add m (b - f) = m t / 2: many micro-batches' worth.
    let forward_half = per_micro_batch * (t.compute_s / 3.0) / (t.compute_s + t.recompute_s);
    let lockstep_extra = m * (per_micro_batch - 2.0 * forward_half);
    assert!(pipeline_gap < 0.1 * lockstep_extra, "{pipeline_gap} s, lockstep {lockstep_extra} s");
    assert!(deepspeed.estimate.time.dp_comm_exposed_s >= megatron.estimate.time.dp_comm_exposed_s);
    let err = run("gpt-22b", "a100-80g-sxm:gpus=64", job, "pp=4,interleave=2,schedule=deepspeed")
        .expect_err("interleaved deepspeed")
        .to_string();
    assert!(err.starts_with("--fix interleave: "), "{err}");
}
