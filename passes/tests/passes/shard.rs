//! The `shard` pass: per-rank programs, run on the in-process multi-rank executor, compute what
//! the single-device interpreter computes, on random graphs and random small meshes, and on the
//! examples; uneven dimensions replicate; errors are clear.

use proptest::prelude::{prop_assert, proptest, ProptestConfig};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::inputs::seeded_inputs;
use tessera_ir::testing::{arb_graph_with, ArbGraphConfig};
use tessera_passes::shard::{partition, ShardConfig, ShardError, ShardedModule};
use tessera_runtime::spmd::{run_spmd, RankProgram, SpmdConfig};

/// Uniform seeded values for every input, symbolic dimensions bound to `sym`.
fn feeds(g: &Graph, seed: u64, sym: usize) -> Vec<(String, Tensor)> {
    seeded_inputs(g, seed, sym)
}

/// Within rounding of the dtype (partial sums are rounded before they are combined); NaNs and
/// infinities must agree; integers exactly.
fn close(dtype: DType, a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape != b.shape || a.dtype != b.dtype {
        return Err(format!("types differ: {} vs {}", a.tensor_type(), b.tensor_type()));
    }
    let tol = match dtype {
        DType::F64 => 1e-9,
        DType::F32 => 1e-4,
        DType::F16 => 2e-2,
        DType::BF16 => 1e-1,
        _ if dtype.is_float() => 2e-1,
        _ => 0.0,
    };
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || *x == y || (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0);
        if !ok {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Runs every rank of `module` and checks each last-stage rank's outputs against the
/// interpreter's on the global inputs.
pub fn check_against_interpreter(g: &Graph, module: &ShardedModule, inputs: &[(String, Tensor)]) -> Result<(), String> {
    let expected = tessera_runtime::interpreter::run(g, inputs).map_err(|e| format!("interpreter: {e}"))?;
    let devices = module.mesh.num_devices();
    let mut rank_inputs = Vec::with_capacity(devices);
    for rank in 0..devices {
        rank_inputs.push(module.rank_inputs(rank, inputs).map_err(|e| e.to_string())?);
    }
    let programs: Vec<RankProgram<'_>> = (0..devices)
        .map(|rank| {
            let graph = &module.program_of(rank).expect("every rank has a program").graph;
            RankProgram { graph, inputs: rank_inputs[rank].clone() }
        })
        .collect();
    let outputs = run_spmd(&module.mesh, &programs, &SpmdConfig::default()).map_err(|e| format!("spmd: {e}"))?;
    let last = module.stages.last().ok_or("no stages")?;
    for &rank in &last.ranks {
        let got = &outputs[rank];
        if got.len() != expected.len() {
            return Err(format!("rank {rank} returned {} outputs, expected {}", got.len(), expected.len()));
        }
        for ((name, t), (want_name, want)) in got.iter().zip(&expected) {
            if name != want_name {
                return Err(format!("rank {rank}: output %{name} should be named %{want_name}"));
            }
            close(want.dtype, t, want).map_err(|m| format!("rank {rank}, output %{name}: {m}"))?;
        }
    }
    Ok(())
}

fn mesh(dp: u64, tp: u64, pp: u64) -> Mesh {
    Mesh::new(&[("dp", dp), ("tp", tp), ("pp", pp)]).expect("mesh")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn per_rank_programs_compute_the_single_device_result(
        g in arb_graph_with(ArbGraphConfig { max_steps: 10, symbolic_dims: false }),
        dp in 1u64..=4, tp in 1u64..=4, pp in 1u64..=4, seed in 0u64..1000,
    ) {
        let config = ShardConfig::new(mesh(dp, tp, pp));
        match partition(&g, &config) {
            Ok(module) => {
                let inputs = feeds(&g, seed, 2);
                let result = check_against_interpreter(&g, &module, &inputs);
                prop_assert!(result.is_ok(), "{}\n{}\n{}", result.err().unwrap_or_default(),
                    tessera_ir::mlir::print_graph(&g), module.print());
            }
            // Only the documented refusals: more stages than compute nodes, a batch the data
            // axis does not divide.
            Err(ShardError::TooManyStages { .. } | ShardError::UnevenBatch { .. }) => {}
            Err(e) => prop_assert!(false, "{e}\n{}", tessera_ir::mlir::print_graph(&g)),
        }
    }
}

fn example(name: &str) -> Graph {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example");
    tessera_ir::mlir::parse_verified(&text).expect("parses")
}

#[test]
fn the_mlp_example_is_megatron_split_and_correct() {
    let g = example("mlp.mlir");
    for (dp, tp, pp) in [(1, 2, 1), (2, 2, 1), (1, 2, 2), (2, 2, 2), (1, 4, 1)] {
        let module = partition(&g, &ShardConfig::new(mesh(dp, tp, pp))).expect("partitions");
        check_against_interpreter(&g, &module, &feeds(&g, 7, 4)).unwrap_or_else(|e| panic!("{dp},{tp},{pp}: {e}"));
    }
    // tp=2: w1 column-parallel, w2 row-parallel, one all-reduce of the partial sums.
    let module = partition(&g, &ShardConfig::new(Mesh::parse("tp=2").expect("mesh"))).expect("partitions");
    let text = module.print();
    assert!(text.contains("// input %w1: [{}, {tp}]") && text.contains("// input %w2: [{tp}, {}]"), "{text}");
    assert_eq!(text.matches("\"tsr.all_reduce\"").count(), 1, "{text}");
}

#[test]
fn the_transformer_block_example_is_correct_on_every_mesh() {
    let g = example("transformer_block.mlir");
    for (dp, tp, pp) in [(2, 2, 1), (1, 2, 2), (2, 2, 2)] {
        let module = partition(&g, &ShardConfig::new(mesh(dp, tp, pp))).expect("partitions");
        check_against_interpreter(&g, &module, &feeds(&g, 3, 4)).unwrap_or_else(|e| panic!("{dp},{tp},{pp}: {e}"));
    }
}

#[test]
fn bad_meshes_and_uneven_batches_are_clear_errors() {
    let text = "func.func @f(%x: tensor<3x4xf32>, %w: tensor<4x4xf32> {tsr.param}) -> (tensor<3x4xf32>) {
  %y = \"tsr.matmul\"(%x, %w) : (tensor<3x4xf32>, tensor<4x4xf32>) -> tensor<3x4xf32>
  return %y : tensor<3x4xf32>
}
";
    let g = tessera_ir::mlir::parse_verified(text).expect("parses");
    let err = partition(&g, &ShardConfig::new(Mesh::parse("dp=2").expect("mesh"))).expect_err("uneven");
    assert_eq!(
        err.to_string(),
        "data axis dp=2 does not divide the batch (first) dimension of input %x: tensor<3x4xf32>"
    );
    let err = partition(&g, &ShardConfig::new(Mesh::parse("pp=3").expect("mesh"))).expect_err("stages");
    assert_eq!(err.to_string(), "pipeline axis pp=3 needs at least 3 compute nodes, the graph has 1");
    // tp=3 does not divide the weight's 4 columns: replicated, still correct.
    let module = partition(&g, &ShardConfig::new(Mesh::parse("dp=3,tp=3").expect("mesh"))).expect("partitions");
    check_against_interpreter(&g, &module, &feeds(&g, 1, 1)).expect("equal");
    assert!(module.print().contains("// input %w: [{}, {}]"), "{}", module.print());
}

#[test]
fn seeds_drive_all_to_all_and_reduce_scatter_and_stay_correct() {
    let text = "func.func @f(%x: tensor<4x4xf32>, %y: tensor<4x4xf32>, %a: tensor<4x8xf32>, %w: tensor<8x4xf32> {tsr.param}, %z: tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) {
  %s = \"tsr.add\"(%x, %y) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %p = \"tsr.matmul\"(%a, %w) : (tensor<4x8xf32>, tensor<8x4xf32>) -> tensor<4x4xf32>
  %q = \"tsr.add\"(%z, %p) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %s, %q : tensor<4x4xf32>, tensor<4x4xf32>
}
";
    let g = tessera_ir::mlir::parse_verified(text).expect("parses");
    let mut config = ShardConfig::new(Mesh::parse("dp=2,tp=2").expect("mesh"));
    let seed = |s: &str| tessera_ir::sharding::Sharding::parse(s).expect("sharding");
    config.seeds = vec![
        ("x".into(), seed("[{tp}, {}]")),
        ("y".into(), seed("[{}, {tp}]")),
        // The contraction split over tp makes %p a partial sum; %z wants its rows split.
        ("a".into(), seed("[{}, {tp}]")),
        ("z".into(), seed("[{tp}, {}]")),
    ];
    let module = partition(&g, &config).expect("partitions");
    let printed = module.print();
    for op in ["all_to_all", "reduce_scatter", "all_gather"] {
        assert!(printed.contains(&format!("\"tsr.{op}\"")), "no {op}:\n{printed}");
    }
    check_against_interpreter(&g, &module, &feeds(&g, 5, 1)).expect("equal");
    // A seed that does not fit the value is an error naming it.
    config.seeds = vec![("x".into(), seed("[{tp}]"))];
    let err = partition(&g, &config).expect_err("bad seed").to_string();
    assert_eq!(err, "seed for %x: sharding [{tp}] has 1 dimensions but the type tensor<4x4xf32> has 2");
}
