//! Pieces of the `tessera` command line that the end-to-end tests use too: the zoo models of
//! the frontend as the cost model's workloads (`passes` does not depend on the frontend, so the
//! adapter lives with its users).

use tessera_frontend::zoo::build::{build_block, check_sharding, Block, CommSite, Role};
use tessera_frontend::zoo::config::{LayerKind, ModelConfig};
use tessera_ir::workload::BlockShape;
use tessera_passes::cost::profile::{BlockGraph, Comm, Region};
use tessera_passes::cost::workload::{BlockKind, KnobError, Workload};

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
        let opts = BlockShape { tp, ..self.cfg.block_shape() };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "tp", message: e.to_string() })
    }

    fn check_ep(&self, ep: u64) -> Result<(), KnobError> {
        let opts = BlockShape { ep, ..self.cfg.block_shape() };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "ep", message: e.to_string() })
    }

    fn build(&self, block: BlockKind, shape: &BlockShape) -> Result<BlockGraph, String> {
        let block = match block {
            BlockKind::Embedding => Block::Embedding,
            BlockKind::Head => Block::Head,
            BlockKind::Layer(k) => Block::Layer(self.kinds[..k].iter().map(|&(_, n)| n).sum()),
        };
        let built = build_block(&self.cfg, block, shape).map_err(|e| e.to_string())?;
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
