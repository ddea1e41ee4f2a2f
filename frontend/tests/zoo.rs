//! The model zoo: presets match their published sizes, built graphs agree with the analytic
//! config, shard consistently, verify, evaluate, and bad specs get errors naming the problem.

use tessera_frontend::zoo::build::{build_block, build_model, Block, CommSite, Role, ZooBlock};
use tessera_frontend::zoo::config::{LayerKind, ModelConfig};
use tessera_frontend::zoo::spec::parse;
use tessera_frontend::zoo::{presets, ZooError};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::inputs::seeded_inputs;
use tessera_ir::workload::BlockShape;

fn cfg(spec: &str) -> ModelConfig {
    parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// Elements of every parameter input of a graph.
fn graph_params(g: &Graph) -> u64 {
    g.inputs()
        .iter()
        .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
        .map(|&v| g.value(v).ty.num_elements().expect("zoo graphs are static"))
        .sum()
}

fn built(cfg: &ModelConfig, block: Block, opts: &BlockShape) -> ZooBlock {
    let b = build_block(cfg, block, opts).unwrap_or_else(|e| panic!("{}: {e}", cfg.name));
    tessera_ir::verify::verify(&b.graph).unwrap_or_else(|e| panic!("{} {block:?}: {e}", cfg.name));
    assert_eq!(b.roles.len(), b.graph.num_nodes(), "one role per node");
    b
}

#[test]
fn presets_have_their_published_sizes() {
    // (preset, total parameters, active parameters), from the papers and model cards.
    let cases: [(&str, f64, f64); 11] = [
        // 110M with the pooler (0.6M), which the encoder graph leaves out.
        ("bert-base", 109.5e6, 109.5e6),
        ("gpt3-175b", 175e9, 175e9),
        ("gpt-22b", 22e9, 22e9),
        ("gpt-175b", 175e9, 175e9),
        ("gpt-530b", 530e9, 530e9),
        ("gpt-1t", 1.0e12, 1.0e12),
        ("llama3-8b", 8.03e9, 8.03e9),
        ("llama3-70b", 70.6e9, 70.6e9),
        ("llama3-405b", 405.9e9, 405.9e9),
        ("mixtral-8x7b", 46.7e9, 12.9e9),
        ("deepseek-v3", 671e9, 37e9),
    ];
    for (name, total, active) in cases {
        let c = presets::preset(name).expect(name);
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let (n, a) = (c.parameter_count() as f64, c.active_parameter_count() as f64);
        assert!((n / total - 1.0).abs() < 0.025, "{name}: {n:.4e} parameters, published {total:.4e}");
        assert!((a / active - 1.0).abs() < 0.025, "{name}: {a:.4e} active, published {active:.4e}");
    }
    for name in presets::NAMES {
        assert_eq!(cfg(name).name, name);
    }
}

#[test]
fn whole_model_graphs_count_the_analytic_parameters() {
    for name in presets::NAMES {
        let c = cfg(name);
        let model = build_model(&c, &BlockShape { seq: 4, ..c.block_shape() }).expect(name);
        tessera_ir::verify::verify(&model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(graph_params(&model.graph), c.parameter_count(), "{name}");
    }
    let gpt3 = cfg("gpt3-175b");
    let n = gpt3.parameter_count() as f64;
    assert!((174.5e9..175.5e9).contains(&n), "gpt3-175b has {n:.4e} parameters");
}

#[test]
fn one_layer_of_each_kind_matches_the_config() {
    for name in ["gpt-22b", "llama3-70b", "mixtral-8x7b", "deepseek-v3"] {
        let c = cfg(name);
        let opts = BlockShape { seq: 16, ..c.block_shape() };
        for (kind, _) in c.layer_counts() {
            let layer = if kind == LayerKind::Dense { 0 } else { c.layers - 1 };
            let b = built(&c, Block::Layer(layer), &opts);
            assert_eq!(graph_params(&b.graph), c.layer_params(kind), "{name} {kind:?}");
        }
        assert_eq!(graph_params(&built(&c, Block::Embedding, &opts).graph), c.embedding_params(), "{name}");
        // The head of a tied model keeps a copy of the table: the last pipeline stage's view.
        let tied = if c.tied_embeddings { c.vocab * c.hidden } else { 0 };
        assert_eq!(graph_params(&built(&c, Block::Head, &opts).graph), c.head_params() + tied, "{name}");
    }
}

#[test]
fn tensor_parallel_ranks_hold_a_slice_and_mark_their_collectives() {
    let c = cfg("gpt-175b");
    let full = built(&c, Block::Layer(0), &BlockShape { seq: 32, ..c.block_shape() });
    let rank = built(&c, Block::Layer(0), &BlockShape { seq: 32, tp: 8, ..c.block_shape() });
    // Norms and the row-parallel biases (4h + 2h for a GPT layer) are replicated.
    let replicated = 6 * c.hidden;
    assert_eq!(8 * (graph_params(&rank.graph) - replicated) + replicated, graph_params(&full.graph));
    assert!(full.comms.is_empty());
    let sites: Vec<bool> = rank.comms.iter().map(|s| matches!(s, CommSite::TpAllReduce(_))).collect();
    assert_eq!(sites, [true, true], "attention output and MLP output");
    // The attention core: scores matmul, scale, mask, softmax, dropout and the values matmul.
    let core: Vec<&str> = rank
        .graph
        .nodes()
        .filter(|(id, _)| rank.roles[id.index()] == Role::AttentionCore)
        .map(|(_, n)| n.op.mnemonic())
        .filter(|m| !matches!(*m, "constant" | "broadcast"))
        .collect();
    assert_eq!(core, ["matmul", "mul", "add", "softmax", "cast", "mul", "mul", "matmul"]);

    // Grouped-query attention with more ranks than key/value heads replicates them.
    let llama = cfg("llama3-70b");
    let r16 = built(&llama, Block::Layer(0), &BlockShape { seq: 8, tp: 16, ..llama.block_shape() });
    let qkv = r16.graph.values().find(|(_, v)| v.name == "l0.attn.qkv.weight").expect("qkv weight").1;
    assert_eq!(qkv.ty.static_shape(), Some(vec![8192, (64 / 16 + 2) * 128]));

    let moe = cfg("mixtral-8x7b");
    let ep = built(&moe, Block::Layer(0), &BlockShape { seq: 64, tp: 2, ep: 4, ..moe.block_shape() });
    let kinds: Vec<&str> = ep
        .comms
        .iter()
        .map(|s| match s {
            CommSite::TpAllReduce(_) => "tp",
            CommSite::EpDispatch(_) => "dispatch",
            CommSite::EpCombine(_) => "combine",
        })
        .collect();
    assert_eq!(kinds, ["tp", "dispatch", "tp", "combine"]);
    // Two local experts, each with capacity for a quarter of four ranks' routed tokens.
    let w = ep.graph.values().find(|(_, v)| v.name == "l0.experts.gate_up.weight").expect("expert weight").1;
    assert_eq!(w.ty.static_shape(), Some(vec![2, 4096, 14336]));
    assert_eq!(ep.expert_params.len(), 2);
}

#[test]
fn moe_graphs_run_only_the_active_experts() {
    // FLOPs of the expert matmuls: 2 * slots * h * 3 * ffn, with slots = tokens * top_k.
    let c = cfg("mixtral-8x7b:layers=1,hidden=64,heads=4,kv_heads=2,expert_ffn=96,vocab=128");
    let opts = BlockShape { batch: 2, seq: 8, ..c.block_shape() };
    let b = built(&c, Block::Layer(0), &opts);
    let g = &b.graph;
    let mut expert_flops = 0u64;
    for (_, node) in g.nodes() {
        if node.op.mnemonic() == "matmul" && b.expert_params.contains(&node.inputs[1]) {
            let out = g.value(node.outputs[0]).ty.num_elements().expect("static");
            let k = g.value(node.inputs[0]).ty.static_shape().expect("static").last().copied().expect("rank");
            expert_flops += 2 * out * k;
        }
    }
    let tokens = 2 * 8;
    assert_eq!(expert_flops, 2 * tokens * c.top_k * 64 * 3 * 96);
}

/// Random inputs the graph accepts: integer inputs stay below 8 (token ids, positions and
/// routes are all valid then).
fn random_inputs(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    assert!(g.inputs().iter().all(|&v| g.value(v).ty.static_shape().is_some()), "zoo test models are static");
    seeded_inputs(g, seed, 0)
}

#[test]
fn tiny_models_evaluate_to_probability_rows() {
    let specs = [
        "gpt:layers=2,hidden=32,heads=4,vocab=16,seq=8,dtype=f32",
        "llama:layers=2,hidden=32,heads=4,kv_heads=2,vocab=16,seq=8,dtype=f32",
        "moe:layers=2,hidden=32,heads=4,kv_heads=2,experts=4,top_k=2,expert_ffn=16,vocab=16,seq=8,dtype=f32",
        "deepseek-v3:layers=2,hidden=32,heads=4,ffn=48,experts=4,top_k=2,expert_ffn=16,dense_layers=1,\
         q_lora_rank=16,kv_lora_rank=8,qk_nope_dim=8,qk_rope_dim=4,v_head_dim=8,vocab=16,seq=8,dtype=f32",
    ];
    for spec in specs {
        let c = cfg(spec);
        let model = build_model(&c, &BlockShape { batch: 2, ..c.block_shape() }).expect(spec);
        tessera_ir::verify::verify(&model.graph).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let outputs = tessera_runtime::interpreter::run(&model.graph, &random_inputs(&model.graph, 7))
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        let probs = &outputs[0].1;
        assert_eq!(probs.shape, [2, 8, 16], "{spec}");
        for row in probs.to_f64_vec().chunks(16) {
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5 && row.iter().all(|p| p.is_finite()), "{spec}: row sums to {sum}");
        }
    }
}

#[test]
fn serving_graphs_read_the_kv_cache() {
    let c = cfg("llama3-8b");
    let opts = BlockShape { batch: 4, seq: 1, tp: 2, training: false, kv_cache: 1023, ..c.block_shape() };
    let b = built(&c, Block::Layer(0), &opts);
    let cache: u64 = b.cache_inputs.iter().map(|&v| b.graph.value(v).ty.num_elements().expect("static") * 2).sum();
    // Per rank: K and V of 4 key/value heads of 128 for 1023 tokens of 4 sequences.
    assert_eq!(cache, 2 * 4 * 128 * 1023 * 4 * 2);
    assert_eq!(cache * 2 * c.layers / 1023 / 4, c.kv_cache_bytes_per_token());
    // Training graphs of GPT have dropout masks; serving graphs do not.
    let gpt = cfg("gpt2");
    let serve = built(&gpt, Block::Layer(0), &BlockShape { training: false, ..gpt.block_shape() });
    assert!(serve.graph.values().all(|(_, v)| v.ty.dtype != DType::Bool));
}

#[test]
fn specs_override_and_derive() {
    let c = cfg("gpt:layers=96,hidden=12288,heads=96,seq=2048,vocab=51200");
    assert_eq!((c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim, c.ffn), (96, 12288, 96, 96, 128, 49152));
    let small = cfg("gpt3-175b:layers=2,hidden=256,heads=8");
    assert_eq!(
        (small.ffn, small.head_dim, small.vocab, small.name.as_str()),
        (1024, 32, 50257, "gpt3-175b:layers=2,hidden=256,heads=8")
    );
    let llama = cfg("llama3-8b:hidden=2048,heads=16");
    assert_eq!((llama.kv_heads, llama.head_dim, llama.ffn), (8, 128, 14336));
    let moe = cfg("llama3-8b:experts=8,top_k=2");
    assert_eq!((moe.experts, moe.expert_ffn), (8, 14336));
}

#[test]
fn bad_specs_name_the_problem() {
    let err = |spec: &str| parse(spec).expect_err(spec).to_string();
    assert!(err("gpt-7b").starts_with("unknown model 'gpt-7b'; presets: gpt2, gpt3-175b,"), "{}", err("gpt-7b"));
    assert!(err("gpt3-175b:layer=4")
        .starts_with("model spec 'gpt3-175b:layer=4': unknown key 'layer'; known keys: layers,"));
    assert_eq!(err("gpt:layers=2,hidden=64"), "model spec 'gpt:layers=2,hidden=64': family 'gpt' needs heads");
    assert_eq!(err("gpt2:layers=two"), "model spec 'gpt2:layers=two': layers=two: expected a non-negative integer");
    assert_eq!(err("gpt2:layers"), "model spec 'gpt2:layers': expected key=value, found 'layers'");
    assert_eq!(err("llama3-8b:kv_heads=5"), "model 'llama3-8b:kv_heads=5': kv_heads: 5 must divide heads = 32");
    assert_eq!(err("gpt2:norm=batch"), "model spec 'gpt2:norm=batch': norm=batch: expected layer or rms");
    assert_eq!(
        err("gpt2:top_k=2"),
        "model 'gpt2:top_k=2': experts: top_k, shared_experts and dense_layers need experts > 0"
    );
    let c = cfg("gpt-175b");
    let e = build_block(&c, Block::Layer(0), &BlockShape { tp: 7, ..c.block_shape() }).expect_err("tp=7");
    assert_eq!(e.to_string(), "model 'gpt-175b': cannot build tp=7: tp must divide heads = 96");
    assert!(matches!(build_block(&c, Block::Layer(96), &c.block_shape()), Err(ZooError::Build { .. })));
}
