//! Pieces of the `tessera` command line that the end-to-end tests use too: the zoo models and
//! cluster specs of the frontend in the cost model's terms (`passes` does not depend on the
//! frontend, so the adapter lives with its users).

use tessera_frontend::cluster::{ClusterSpec, LinkSpec};
use tessera_frontend::zoo::build::{build_block, check_sharding, Block, BuildOptions, CommSite, Role};
use tessera_frontend::zoo::config::{LayerKind, ModelConfig};
use tessera_ir::dtype::DType;
use tessera_passes::cost::hardware::{Cluster, Device, Link};
use tessera_passes::cost::profile::{BlockGraph, Comm, Region};
use tessera_passes::cost::workload::{BlockKind, KnobError, Shape, Workload};

/// A zoo model as a workload: one graph per distinct block, built per rank.
pub struct ZooWorkload {
    pub cfg: ModelConfig,
    kinds: Vec<(LayerKind, u64)>,
}

impl ZooWorkload {
    pub fn new(cfg: ModelConfig) -> ZooWorkload {
        let kinds = cfg.layer_counts();
        ZooWorkload { cfg, kinds }
    }
}

impl Workload for ZooWorkload {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn layer_runs(&self) -> Vec<(usize, u64)> {
        self.kinds.iter().enumerate().map(|(i, &(_, n))| (i, n)).collect()
    }

    fn has_embedding(&self) -> bool {
        true
    }

    fn has_head(&self) -> bool {
        true
    }

    fn tied_embeddings(&self) -> bool {
        self.cfg.tied_embeddings
    }

    fn seq(&self) -> u64 {
        self.cfg.seq
    }

    fn parameters(&self) -> u64 {
        self.cfg.parameter_count()
    }

    fn max_tp(&self) -> u64 {
        self.cfg.heads
    }

    fn experts(&self) -> u64 {
        self.cfg.experts
    }

    fn check_tp(&self, tp: u64) -> Result<(), KnobError> {
        let opts = BuildOptions { tp, ..BuildOptions::new(&self.cfg) };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "tp", message: e.to_string() })
    }

    fn check_ep(&self, ep: u64) -> Result<(), KnobError> {
        let opts = BuildOptions { ep, ..BuildOptions::new(&self.cfg) };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "ep", message: e.to_string() })
    }

    fn build(&self, block: BlockKind, shape: &Shape) -> Result<BlockGraph, String> {
        let block = match block {
            BlockKind::Embedding => Block::Embedding,
            BlockKind::Head => Block::Head,
            BlockKind::Layer(k) => Block::Layer(self.kinds[..k].iter().map(|&(_, n)| n).sum()),
        };
        let opts = BuildOptions {
            batch: shape.batch,
            seq: shape.seq,
            tp: shape.tp,
            ep: shape.ep,
            training: shape.training,
            kv_cache: shape.kv_cache,
        };
        let built = build_block(&self.cfg, block, &opts).map_err(|e| e.to_string())?;
        let regions = built
            .roles
            .iter()
            .map(|r| match r {
                Role::Replicated => Region::Replicated,
                Role::TensorParallel => Region::TensorParallel,
                Role::AttentionCore => Region::AttentionCore,
            })
            .collect();
        let comms = built
            .comms
            .iter()
            .map(|c| match *c {
                CommSite::TpAllReduce(v) => Comm::TpAllReduce(v),
                CommSite::EpDispatch(v) | CommSite::EpCombine(v) => Comm::EpAllToAll(v),
            })
            .collect();
        Ok(BlockGraph {
            graph: built.graph,
            regions,
            comms,
            expert_params: built.expert_params,
            stream_inputs: built.stream_inputs,
            cache_inputs: built.cache_inputs,
        })
    }
}

/// A cluster spec (datasheet units) in the cost model's SI units.
pub fn to_cluster(c: &ClusterSpec) -> Cluster {
    let d = &c.device;
    let dtypes = |key: &str| match key {
        "bf16" => vec![DType::BF16],
        "fp16" => vec![DType::F16],
        "fp32" => vec![DType::F32],
        "fp8" => vec![DType::F8E4M3, DType::F8E5M2],
        _ => vec![],
    };
    let peak_flops =
        d.peak_tflops.iter().flat_map(|(k, &v)| dtypes(k).into_iter().map(move |dt| (dt, v * 1e12))).collect();
    let link = |l: &LinkSpec| Link {
        name: l.name.clone(),
        bandwidth: l.bandwidth_gbps * 1e9,
        latency_s: l.latency_us * 1e-6,
        efficiency: l.efficiency,
    };
    Cluster {
        name: c.name.clone(),
        device: Device {
            name: d.name.clone(),
            peak_flops,
            // Without an fp32 entry, take CUDA cores as 1/16 of the tensor-core peak (A100: 19.5 vs 312).
            vector_flops: d
                .peak_tflops
                .get("fp32")
                .copied()
                .filter(|&v| v > 0.0)
                .unwrap_or_else(|| d.peak_tflops.values().copied().fold(0.0, f64::max) / 16.0)
                * 1e12,
            memory_bytes: d.memory_gb * 1e9,
            hbm_bandwidth: d.hbm_gbps * 1e9,
            tdp_w: d.tdp_w,
            idle_w: d.idle_w,
            gemm_efficiency: d.gemm_efficiency,
            gemm_half_dim: d.gemm_half_dim,
            memory_efficiency: d.memory_efficiency,
            kernel_overhead_s: d.kernel_overhead_us * 1e-6,
            reserved_bytes: d.reserved_gb * 1e9,
        },
        gpus: c.gpus,
        gpus_per_node: c.gpus_per_node,
        intra: link(&c.intra_node),
        inter: link(&c.inter_node),
    }
}
