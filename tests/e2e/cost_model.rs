//! The cost model's parts against their definitions: stored activations against Korthikanti
//! et al.'s formulas, FLOPs against `stats`, collectives against the alpha-beta formulas, and
//! schedules, ZeRO and KV cache against what they must do to time and memory.

use crate::support::{cluster, zoo};
use std::collections::HashMap;
use tessera_ir::workload::BlockShape;
use tessera_passes::cost::collective::{collective, Algorithm, CollectiveKind, Group};
use tessera_passes::cost::profile::profile;
use tessera_passes::cost::step::{
    estimate, Estimate, GradAccumulation, Job, LayerPartition, Mode, Parallelism, Recompute, Schedule,
};
use tessera_passes::cost::workload::{BlockKind, ProfileCache, Workload};
use tessera_passes::stats::GraphStats;

fn train_shape(batch: u64, seq: u64, tp: u64) -> BlockShape {
    BlockShape { batch, seq, tp, ep: 1, training: true, kv_cache: 0 }
}

fn par(dp: u64, tp: u64, pp: u64) -> Parallelism {
    Parallelism {
        dp,
        tp,
        pp,
        ep: 1,
        sp: false,
        micro_batch: 1,
        interleave: 1,
        recompute: Recompute::None,
        zero: 0,
        schedule: Schedule::OneFOneB,
        grad_accumulation: GradAccumulation::Fused,
        layer_partition: LayerPartition::Time,
    }
}

fn run(model: &str, cluster_spec: &str, job: Job, p: &Parallelism) -> Estimate {
    let w = zoo(model);
    let c = cluster(cluster_spec);
    let mut cache = ProfileCache::new(&w, &c.device);
    estimate(&mut cache, &c, &job, p).unwrap_or_else(|e| panic!("{model}: {e}"))
}

#[test]
fn stored_activations_follow_korthikanti() {
    // Per layer, in bytes: s b h (10 + 24 / t) replicated and tensor-parallel, 5 a s^2 b / t
    // in the attention core (Korthikanti et al. 2022, section 4).
    let w = zoo("gpt-175b");
    let c = cluster("a100-80g-sxm");
    let (s, b, h, a) = (2048.0, 2.0, 12288.0, 96.0);
    for t in [1u64, 8] {
        let g = w.build(BlockKind::Layer(0), &train_shape(2, 2048, t)).expect("layer");
        let p = profile(&g, &c.device).expect("profile");
        let tf = t as f64;
        assert_eq!(p.saved_bytes.replicated, 10.0 * s * b * h, "tp={t}");
        assert_eq!(p.saved_bytes.tensor_parallel, 24.0 * s * b * h / tf, "tp={t}");
        assert_eq!(p.saved_bytes.attention_core, 5.0 * a * s * s * b / tf, "tp={t}");
        assert_eq!(p.stream_bytes, 2.0 * s * b * h, "full recomputation keeps the layer input");
    }
}

#[test]
fn profile_flops_agree_with_stats() {
    let c = cluster("a100-80g-sxm");
    for model in ["gpt-22b:layers=2", "llama3-8b:layers=2", "mixtral-8x7b:layers=2", "deepseek-v3:layers=4"] {
        let w = zoo(model);
        let runs = w.layer_runs();
        let mut blocks = vec![BlockKind::Embedding, BlockKind::Head];
        blocks.extend(runs.iter().map(|&(k, _)| BlockKind::Layer(k)));
        for block in blocks {
            let g = w.build(block, &train_shape(1, 128, 2)).expect("block");
            let p = profile(&g, &c.device).expect("profile");
            let stats = GraphStats::compute(&g.graph, &HashMap::new()).expect("stats");
            assert_eq!(p.fwd_flops.total(), stats.total.flops as f64, "{model} {block:?}");
            assert_eq!(p.params, stats.parameters.elements as f64, "{model} {block:?}");
        }
    }
}

#[test]
fn fusion_prices_megatron_kernels() {
    // A GPT layer runs as 4 matmuls + 2 attention batched matmuls and 8 streaming kernels:
    // 2 layer norms, bias, fused scale-mask-softmax, attention dropout, two
    // bias-dropout-residual kernels and bias-gelu.
    let w = zoo("gpt-22b");
    let c = cluster("a100-80g-sxm");
    let g = w.build(BlockKind::Layer(0), &train_shape(1, 2048, 8)).expect("layer");
    let p = profile(&g, &c.device).expect("profile");
    let compute_bound = p.kernels.iter().filter(|k| k.compute_bound).count();
    assert_eq!((p.kernels.len(), compute_bound), (14, 6));
}

#[test]
fn collectives_follow_alpha_beta() {
    let c = cluster("a100-80g-sxm:nodes=4");
    let (bi, ai) = (c.intra_node.effective_bandwidth(), c.intra_node.latency_s());
    let s = 1e8;
    // A ring in one node: 2 (n - 1) / n * S / B + 2 (n - 1) alpha.
    let ar = collective(&c, CollectiveKind::AllReduce, s, Group::new(8, 1));
    assert_eq!(ar.algorithm, Algorithm::Ring);
    assert!((ar.time_s - (2.0 * 7.0 / 8.0 * s / bi + 14.0 * ai)).abs() < 1e-12);
    assert_eq!((ar.intra_bytes, ar.inter_bytes), (2.0 * 7.0 / 8.0 * s, 0.0));
    // Across nodes with eight ranks per node the hierarchical algorithm wins.
    let wide = collective(&c, CollectiveKind::AllReduce, s, Group::new(32, 1));
    assert_eq!(wide.algorithm, Algorithm::Hierarchical);
    assert!(wide.time_s > ar.time_s && wide.inter_bytes > 0.0);
    // One rank per node (data parallelism across nodes) uses the NICs only.
    let dp = collective(&c, CollectiveKind::AllReduce, s, Group::new(4, 8));
    assert_eq!(dp.intra_bytes, 0.0);
    assert_eq!(collective(&c, CollectiveKind::AllGather, s, Group::new(1, 1)).time_s, 0.0);
    let p2p = collective(&c, CollectiveKind::SendRecv, s, Group::new(2, 8));
    assert!((p2p.time_s - (c.inter_node.latency_s() + s / c.inter_node.effective_bandwidth())).abs() < 1e-12);
}

#[test]
fn schedules_trade_bubble_and_memory() {
    let job = Job { mode: Mode::Train, global_batch: 64, seq: 2048 };
    let base = Parallelism { recompute: Recompute::Full, ..par(1, 8, 8) };
    let plain = run("gpt-175b", "a100-80g-sxm:gpus=64", job, &base);
    let interleaved = run("gpt-175b", "a100-80g-sxm:gpus=64", job, &Parallelism { interleave: 3, ..base });
    let gpipe = run("gpt-175b", "a100-80g-sxm:gpus=64", job, &Parallelism { schedule: Schedule::GPipe, ..base });
    // Equal stages would give (p - 1) / (m + p - 1) = 7 / 71; the head makes the last slower.
    assert!((plain.bubble_fraction - 7.0 / 71.0).abs() < 0.01, "{}", plain.bubble_fraction);
    assert!(interleaved.bubble_fraction < plain.bubble_fraction / 2.5);
    assert!(interleaved.memory.activations > plain.memory.activations);
    assert_eq!(gpipe.step_time_s, plain.step_time_s);
    // GPipe keeps all 64 micro-batches' checkpoints, 1F1B at most 8 (plus one layer's transient).
    assert!(gpipe.memory.activations > 6.0 * plain.memory.activations);
}

#[test]
fn zero_stages_shard_state_over_data_parallel_ranks() {
    let job = Job { mode: Mode::Train, global_batch: 32, seq: 2048 };
    let spec = "a100-80g-sxm:gpus=32";
    let base = Parallelism { recompute: Recompute::Full, ..par(4, 8, 1) };
    let z: Vec<Estimate> = (0..=3).map(|zero| run("gpt-22b", spec, job, &Parallelism { zero, ..base })).collect();
    assert!((z[1].memory.optimizer * 4.0 - z[0].memory.optimizer).abs() < 1.0);
    assert_eq!(z[1].memory.gradients, z[0].memory.gradients);
    assert!((z[2].memory.gradients * 4.0 - z[0].memory.gradients).abs() < 1.0);
    assert!((z[3].memory.weights * 4.0 - z[0].memory.weights).abs() < 1.0);
    assert!(z[3].comm_bytes.inter_node > z[0].comm_bytes.inter_node);
}

#[test]
fn serving_holds_the_kv_cache() {
    let job = Job { mode: Mode::Serve, global_batch: 64, seq: 4096 };
    let p = Parallelism { micro_batch: 64, ..par(1, 4, 1) };
    let e = run("llama3-8b", "h100-80g-sxm:gpus=4", job, &p);
    let cfg = tessera_frontend::zoo::spec::parse("llama3-8b").expect("preset");
    // Every sequence's cache for its context, split over 4 tensor-parallel ranks.
    let expected = (cfg.kv_cache_bytes_per_token() * 4096 * 64) as f64 / 4.0;
    assert_eq!(e.memory.kv_cache, expected);
    assert_eq!((e.memory.gradients, e.memory.optimizer, e.tokens), (0.0, 0.0, 64.0));
    // Decoding reads every weight and the whole cache per token: memory-bound, plus kernel
    // launches and latency-bound all-reduces of one token's activations.
    let bytes = (cfg.parameter_count() * 2) as f64 / 4.0 + expected;
    let floor = bytes / (3350e9 * 0.8);
    assert!(e.step_time_s > floor && e.step_time_s < 2.5 * floor, "{} vs {floor}", e.step_time_s);
}
