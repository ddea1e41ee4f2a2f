//! Partitioning end to end: `tessera opt --pipeline 'shard{mesh=...}'` prints per-rank programs
//! (snapshots of the MLP on tp=2 and on pp=2), bad meshes are located errors, and small GPT and
//! Llama zoo models partitioned over dp/tp/pp compute on the in-process multi-rank executor
//! what the single-device interpreter computes.

use crate::support::{example, tessera};
use tessera_frontend::zoo::build::build_model;
use tessera_ir::graph::Graph;
use tessera_ir::random::SplitMix64;
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::inputs::seeded_inputs;
use tessera_ir::workload::BlockShape;
use tessera_passes::shard::{partition, ShardConfig, ShardedModule};
use tessera_runtime::spmd::{run_spmd, RankProgram, SpmdConfig};

#[test]
fn opt_prints_the_tensor_parallel_mlp_with_its_all_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["opt", "--pipeline", "shard{mesh=tp=2}", "--check-mlir", &example("mlp.mlir")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn opt_prints_pipeline_stages_separately() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "canonicalize,shard{mesh=pp=2},dce";
    let out = tessera(dir.path(), &["opt", "--pipeline", pipeline, "--check-mlir", &example("mlp.mlir")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn a_bound_batch_splits_over_the_data_axis() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["opt", "--dim", "batch=4", "--pipeline", "shard{mesh=dp=2,tp=2}", "--check-mlir", &example("mlp.mlir")];
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("// ranks: 0-3\n// input %x: [{dp}, {}]\n// input %w1: [{}, {tp}]"), "{}", out.stdout);
    assert!(out.stdout.contains("%x: tensor<2x32xf32>"), "{}", out.stdout);
    // The outputs are whole again: the dp blocks are gathered after the tp all-reduce.
    assert!(out.stdout.contains("-> (tensor<4x10xf32>)"), "{}", out.stdout);
}

#[test]
fn bad_meshes_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("shard{mesh=dp=2,tp=0}", "error: pass 'shard': mesh 'dp=2,tp=0', column 9: axis 'tp' has size 0"),
        ("shard{mesh=dp=2,dp=2}", "error: pass 'shard': mesh 'dp=2,dp=2', column 6: axis 'dp' appears twice"),
        ("shard{mesh=dp:2}", "error: pass 'shard': mesh 'dp:2', column 1: expected 'name=size', found 'dp:2'"),
        ("shard", "error: pass 'shard': needs a mesh, e.g. shard{mesh=dp=2,tp=4}"),
    ];
    for (pipeline, expected) in cases {
        let out = tessera(dir.path(), &["opt", "--pipeline", pipeline, &example("mlp.mlir")]);
        assert_eq!(out.code, 1, "{pipeline}");
        assert_eq!(out.stderr.trim(), expected, "{pipeline}");
    }
    // A batch of 3 does not split over dp=2.
    let model = dir.path().join("odd.mlir");
    let text = std::fs::read_to_string(example("mlp.mlir")).unwrap().replace("?x", "3x").replace(", [\"batch\"]", "");
    std::fs::write(&model, text).unwrap();
    let out = tessera(dir.path(), &["opt", "--pipeline", "shard{mesh=dp=2}", model.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("data axis dp=2 does not divide the batch (first) dimension of input %x: tensor<3x32xf32>"),
        "{}",
        out.stderr
    );
}

/// Uniform seeded values for every input; integer inputs (token ids) in `[0, vocab)`.
fn feeds(g: &Graph, seed: u64, vocab: i64) -> Vec<(String, Tensor)> {
    seeded_inputs(g, seed, 2)
        .into_iter()
        .map(|(name, t)| {
            if t.dtype.is_float() {
                return (name, t);
            }
            // Integer inputs draw token ids from the input's own stream instead.
            let mut rng = SplitMix64::for_name(seed, &name);
            let ids = (0..t.shape.iter().product()).map(|_| (rng.next_u64() % vocab as u64) as i64).collect();
            (name, Tensor::from_i64(t.dtype, t.shape, ids))
        })
        .collect()
}

/// Runs every rank and compares the last stage's outputs with the interpreter's (relative 1e-9:
/// in f64 only the order of partial sums differs).
fn check(g: &Graph, module: &ShardedModule, inputs: &[(String, Tensor)]) {
    let expected = tessera_runtime::interpreter::run(g, inputs).expect("single device");
    let devices = module.mesh.num_devices();
    let rank_inputs: Vec<_> = (0..devices).map(|r| module.rank_inputs(r, inputs).expect("inputs")).collect();
    let programs: Vec<RankProgram<'_>> = (0..devices)
        .map(|r| RankProgram { graph: &module.program_of(r).expect("program").graph, inputs: rank_inputs[r].clone() })
        .collect();
    let outputs = run_spmd(&module.mesh, &programs, &SpmdConfig::default()).expect("multi-rank run");
    let last = module.stages.last().expect("stages");
    for &rank in &last.ranks {
        for ((name, got), (want_name, want)) in outputs[rank].iter().zip(&expected) {
            assert_eq!(name, want_name);
            assert_eq!(got.shape, want.shape);
            for (i, (x, y)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
                assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0), "rank {rank} %{name}[{i}]: {x} vs {y}");
            }
        }
    }
}

#[test]
fn small_zoo_models_match_the_single_device_result_on_every_mesh() {
    let specs =
        ["gpt:layers=2,hidden=32,heads=4,seq=8,vocab=50", "llama:layers=2,hidden=32,heads=4,kv_heads=2,seq=8,vocab=50"];
    for spec in specs {
        let mut cfg = tessera_frontend::zoo::spec::parse(spec).expect("spec");
        // In f64 the only difference from one device is the order partial sums are added in.
        cfg.dtype = tessera_ir::dtype::DType::F64;
        let opts = BlockShape { batch: 2, seq: cfg.seq, tp: 1, ep: 1, training: false, kv_cache: 0 };
        let g = build_model(&cfg, &opts).expect("builds").graph;
        // Token ids and positions both index tables of at least `seq` = 8 rows.
        let inputs = feeds(&g, 11, 8);
        for mesh in ["dp=2", "pp=2", "dp=2,pp=2", "tp=2", "dp=2,tp=2", "tp=2,pp=2", "dp=2,tp=2,pp=2"] {
            let module = partition(&g, &ShardConfig::new(Mesh::parse(mesh).expect("mesh")))
                .unwrap_or_else(|e| panic!("{spec} on {mesh}: {e}"));
            let collectives: usize = module.stages.iter().map(|s| s.collectives).sum();
            assert!(collectives > 0, "{spec} on {mesh} communicates");
            check(&g, &module, &inputs);
        }
    }
}

/// The fused QKV weight is head-interleaved, so its column split over tp hands every rank whole
/// heads of Q, K and V: attention (from the QKV matmul to the output projection) needs no
/// gather, each layer communicates exactly its two Megatron all-reduces, and the result is the
/// interpreter's.
#[test]
fn fused_qkv_attention_under_tp_needs_no_gather() {
    use tessera_ir::ops::collective::Collective;
    use tessera_ir::ops::Op;
    let specs = [
        ("gpt:layers=2,hidden=32,heads=4,seq=8,vocab=64,dropout=0", [2, 4]),
        ("llama:layers=1,hidden=32,heads=4,kv_heads=2,seq=8,vocab=64", [2, 2]),
    ];
    for (spec, tps) in specs {
        let mut cfg = tessera_frontend::zoo::spec::parse(spec).expect("spec");
        assert_eq!(cfg.qkv, tessera_frontend::zoo::config::Qkv::Fused);
        cfg.dtype = tessera_ir::dtype::DType::F64;
        let opts = BlockShape { batch: 2, seq: cfg.seq, tp: 1, ep: 1, training: false, kv_cache: 0 };
        let g = build_model(&cfg, &opts).expect("builds").graph;
        let inputs = feeds(&g, 5, 8);
        for tp in tps {
            let mesh = format!("tp={tp}");
            let module = partition(&g, &ShardConfig::new(Mesh::parse(&mesh).expect("mesh"))).expect("partitions");
            let program = &module.stages[0].graph;
            let reads = |n: &tessera_ir::graph::Node, suffix: &str| {
                n.inputs.iter().any(|&v| program.value(v).name.ends_with(suffix))
            };
            let mut in_attention = false;
            let mut all_reduces = 0;
            for (_, n) in program.nodes() {
                if reads(n, ".attn.qkv.weight") {
                    in_attention = true;
                }
                if reads(n, ".attn.out.weight") {
                    in_attention = false;
                }
                match &n.op {
                    Op::Collective(Collective::AllGather { .. }) if in_attention => {
                        panic!("{spec} on {mesh}: an all_gather inside attention")
                    }
                    Op::Collective(Collective::AllReduce { .. }) => all_reduces += 1,
                    _ => {}
                }
            }
            assert_eq!(
                all_reduces,
                2 * cfg.layers,
                "{spec} on {mesh}: one all-reduce after attention, one after the MLP"
            );
            check(&g, &module, &inputs);
        }
    }
}

/// An MLP whose first weight is constrained to split its rows over tp (row-parallel, where the
/// Megatron default would split its columns) and whose hidden activation is constrained to
/// split its batch over dp: the per-rank program holds each constrained value in that layout
/// (snapshot), every rank computes the single-device result, and a constraint over the pipeline
/// axis or an axis the mesh lacks is an error naming the value.
#[test]
fn sharding_constraints_pin_the_layout_of_their_values() {
    let text = r#"func.func @constrained(%x: tensor<4x8xf64>, %w1: tensor<8x6xf64> {tsr.param}, %w2: tensor<6x8xf64> {tsr.param}) -> (tensor<4x8xf64>) {
  %w1_rows = "tsr.sharding_constraint"(%w1) {sharding = "[{tp}, {}]"} : (tensor<8x6xf64>) -> tensor<8x6xf64>
  %h = "tsr.matmul"(%x, %w1_rows) : (tensor<4x8xf64>, tensor<8x6xf64>) -> tensor<4x6xf64>
  %t = "tsr.tanh"(%h) : (tensor<4x6xf64>) -> tensor<4x6xf64>
  %t_batch = "tsr.sharding_constraint"(%t) {sharding = "[{dp}, {}]"} : (tensor<4x6xf64>) -> tensor<4x6xf64>
  %y = "tsr.matmul"(%t_batch, %w2) : (tensor<4x6xf64>, tensor<6x8xf64>) -> tensor<4x8xf64>
  return %y : tensor<4x8xf64>
}
"#;
    let g = tessera_ir::mlir::parse_verified(text).expect("the constrained MLP parses");
    let mesh = Mesh::parse("dp=2,tp=2").expect("mesh");
    let module = partition(&g, &ShardConfig::new(mesh)).expect("partitions");
    let program = module.print();
    insta::assert_snapshot!(program);
    check(&g, &module, &feeds(&g, 7, 1));
    for (mesh, wanted) in [("tp=2,pp=2", "the pipeline axis 'pp' cannot split a value"), ("dp=2", "axis 'tp'")] {
        let bad = text.replace("[{tp}, {}]", if mesh.contains("pp") { "[{pp}, {}]" } else { "[{tp}, {}]" });
        let g = tessera_ir::mlir::parse_verified(&bad).expect("parses");
        let err = partition(&g, &ShardConfig::new(Mesh::parse(mesh).expect("mesh"))).expect_err(mesh).to_string();
        assert!(err.starts_with("sharding constraint on %w1_rows: ") && err.contains(wanted), "{mesh}: {err}");
    }
}
