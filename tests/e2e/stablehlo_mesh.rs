//! Per-rank programs as StableHLO (issue 19): `tessera opt --pipeline 'shard{...}' --emit
//! stablehlo` (and `--mesh` for a written per-rank program) writes the collectives as StableHLO
//! collectives over replica groups; XLA runs the module with one replica per rank
//! (scripts/stablehlo/run_stablehlo.py --replicas N) and every rank's outputs match tessera's
//! single-process result (or its in-process multi-rank executor); the export imports back into
//! the same tsr collectives. Pipeline stages export as one module that runs each replica's
//! stage, and the last stage's replicas return the single-process result.

use crate::stablehlo::{error_to_scale, jax_venv_present, seeded_input};
use crate::support::{example, repo_root, stablehlo_error_lines, tessera};
use std::path::Path;
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_passes::shard::{partition, ShardConfig};
use tessera_runtime::npy::{read_npy, write_npy};
use tessera_runtime::spmd::{run_spmd, RankProgram, SpmdConfig};

/// Allowed error of every element, relative to the largest magnitude of the expected output.
const TOLERANCE: f64 = 1e-4;

/// Runs `module` (a replicated StableHLO module) on `rank_inputs.len()` XLA replicas; each
/// rank's outputs in order.
pub(crate) fn run_on_xla_replicas(
    dir: &Path,
    module: &Path,
    rank_inputs: &[Vec<(String, Tensor)>],
) -> Vec<Vec<Tensor>> {
    let n = rank_inputs.len();
    let mut files = Vec::new();
    for (rank, inputs) in rank_inputs.iter().enumerate() {
        for (i, (_, t)) in inputs.iter().enumerate() {
            let file = dir.join(format!("in.r{rank}.{i}.npy"));
            write_npy(&file, t).expect("write an input");
            files.push(file);
        }
    }
    let out_dir = dir.join("xla-out");
    let xla = std::process::Command::new(repo_root().join(".cache/stablehlo/venv/bin/python"))
        .arg(repo_root().join("scripts/stablehlo/run_stablehlo.py"))
        .args(["--replicas", &n.to_string()])
        .arg(module)
        .arg(&out_dir)
        .args(&files)
        .output()
        .expect("the jax venv's python starts");
    assert!(
        xla.status.success(),
        "XLA rejected or failed the replicated module: {}",
        String::from_utf8_lossy(&xla.stderr)
    );
    (0..n)
        .map(|rank| {
            (0..)
                .map(|i| out_dir.join(format!("r{rank}.{i}.npy")))
                .take_while(|f| f.is_file())
                .map(|f| read_npy(&f).expect("XLA's output"))
                .collect()
        })
        .collect()
}

/// The model `model` with `dims` bound, partitioned over `mesh` as `tessera opt` does, exported
/// through the CLI and run on XLA replicas: the worst error of any rank's output against the
/// single-process interpreter, and the exported text. With pipeline stages the module's
/// arguments are the stages' inputs merged by name and type (a replica feeds its own stage's
/// blocks and zeros for the others) and its results the stages' outputs merged the same way;
/// a replica whose stage does not compute an output must return zeros there.
fn sharded_round_trip(model: &str, dims: &[(&str, u64)], mesh: &str) -> (f64, String) {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    let pipeline = format!("shard{{mesh={mesh}}}");
    let mut opt = vec!["opt".to_string(), model.to_string(), "--pipeline".into(), pipeline];
    for (name, size) in dims {
        opt.extend(["--dim".to_string(), format!("{name}={size}")]);
    }
    opt.extend(["--emit", "stablehlo", "-o", "exported.mlir"].map(String::from));
    let args: Vec<&str> = opt.iter().map(String::as_str).collect();
    let exported = tessera(dir, &args);
    assert_eq!(exported.code, 0, "{model} on {mesh}: {}", exported.stderr);
    let mut graph = tessera_frontend::load::load_model(Path::new(model)).expect("the model loads");
    if !dims.is_empty() {
        graph = graph.bind_dims(&dims.iter().map(|(n, s)| (n.to_string(), *s)).collect()).expect("bind");
    }
    let mesh = Mesh::parse(mesh).expect("mesh");
    let module = partition(&graph, &ShardConfig::new(mesh.clone()).with_training_roles_of(&graph)).expect("partition");
    let mut seed = 23;
    let global: Vec<(String, Tensor)> = graph
        .inputs()
        .iter()
        .map(|&id| (graph.value(id).name.clone(), seeded_input(&graph.value(id).ty, &mut seed)))
        .collect();
    let expected = tessera_runtime::interpreter::run(&graph, &global).expect("single process");
    let merged = |values: fn(&Graph) -> &[tessera_ir::graph::ValueId]| {
        let mut list: Vec<(String, tessera_ir::types::TensorType)> = Vec::new();
        for stage in &module.stages {
            for &v in values(&stage.graph) {
                let key = (stage.graph.value(v).name.clone(), stage.graph.value(v).ty.clone());
                if !list.contains(&key) {
                    list.push(key);
                }
            }
        }
        list
    };
    let (params, results) = (merged(Graph::inputs), merged(Graph::outputs));
    let rank_inputs: Vec<Vec<(String, Tensor)>> = (0..mesh.num_devices())
        .map(|r| {
            let own = module.rank_inputs(r, &global).expect("feeds");
            params
                .iter()
                .map(|(name, ty)| {
                    let dims: Vec<usize> = ty.static_shape().expect("static").iter().map(|&d| d as usize).collect();
                    let fed = own.iter().find(|(n, t)| n == name && t.shape == dims);
                    (name.clone(), fed.map_or_else(|| Tensor::zeros(ty.dtype, dims.clone()), |(_, t)| t.clone()))
                })
                .collect()
        })
        .collect();
    let got = run_on_xla_replicas(dir, &dir.join("exported.mlir"), &rank_inputs);
    let mut worst = 0.0f64;
    for (rank, outputs) in got.iter().enumerate() {
        assert_eq!(outputs.len(), results.len(), "rank {rank}'s outputs");
        let stage = module.program_of(rank).expect("a stage");
        for (ours, (name, _)) in outputs.iter().zip(&results) {
            let computes = stage.graph.outputs().iter().any(|&v| stage.graph.value(v).name == *name);
            if !computes {
                assert!(ours.to_f64_vec().iter().all(|&x| x == 0.0), "rank {rank} %{name}: not zeros off its stage");
                continue;
            }
            let (_, want) = expected.iter().find(|(n, _)| n == name).expect("a graph output");
            let error = error_to_scale(ours, want);
            println!("{model} on {mesh}: rank {rank} %{name}: XLA replica vs one process {error:.2e}");
            worst = worst.max(error);
        }
    }
    let text = std::fs::read_to_string(dir.join("exported.mlir")).expect("the export");
    (worst, text)
}

#[test]
fn sharded_programs_run_on_xla_replicas_with_the_single_process_result() {
    if !jax_venv_present() {
        return;
    }
    let (error, text) = sharded_round_trip(&example("mlp.mlir"), &[("batch", 4)], "dp=2,tp=2");
    assert!(error <= TOLERANCE, "mlp on dp=2,tp=2: {error:.3e}");
    // The tp all-reduce and the dp gather of the output, over the mesh's replica groups.
    assert!(text.contains("mhlo.num_replicas = 4 : i32"), "{text}");
    assert!(
        text.contains("\"stablehlo.all_reduce\"") && text.contains("replica_groups = dense<[[0, 1], [2, 3]]>"),
        "{text}"
    );
    assert!(
        text.contains("\"stablehlo.all_gather\"") && text.contains("replica_groups = dense<[[0, 2], [1, 3]]>"),
        "{text}"
    );
    let gpt = "gpt:layers=1,hidden=32,heads=4,ffn=64,vocab=64,seq=8,dtype=f32";
    for mesh in ["tp=2", "tp=4"] {
        let (error, text) = sharded_round_trip(gpt, &[], mesh);
        assert!(error <= TOLERANCE, "zoo GPT block on {mesh}: {error:.3e}");
        assert!(text.contains("\"stablehlo.all_reduce\""), "{mesh}: {text}");
    }
}

/// Pipeline stages that run different programs, exported as one module every replica runs (a
/// `case` on the replica's stage, each send/recv pair one `collective_permute`): on XLA the
/// last stage's replicas return the single-process result and every other replica zeros.
#[test]
fn pipeline_stages_run_on_xla_replicas_as_one_module_with_the_single_process_result() {
    if !jax_venv_present() {
        return;
    }
    // The exported text: XLA's replicas gave the single-process result, and the text has the
    // case and the transfers `pairs` (`[[source, target], ...]> : tensor<...>`).
    let check = |model: &str, dims: &[(&str, u64)], mesh: &str, pairs: &str| {
        let (error, text) = sharded_round_trip(model, dims, mesh);
        assert!(error <= TOLERANCE, "{model} on {mesh}: {error:.3e}");
        assert!(text.contains("\"stablehlo.case\""), "{mesh}: {text}");
        assert!(text.contains("\"stablehlo.collective_permute\"(%"), "{mesh}: {text}");
        assert!(text.contains(&format!("source_target_pairs = dense<{pairs}")), "{mesh}: {text}");
        text
    };
    let gpt = "gpt:layers=2,hidden=32,heads=4,ffn=64,vocab=64,seq=8,dtype=f32";
    check(gpt, &[], "pp=2", "[[0, 1]]> : tensor<1x2xi64>");
    check(gpt, &[], "pp=4", "[[1, 2]]> : tensor<1x2xi64>");
    // Stages whose programs hold the tensor-parallel all-reduce; pp moves rank r to r + 2.
    let text = check(&example("mlp.mlir"), &[("batch", 4)], "pp=2,tp=2", "[[0, 2], [1, 3]]> : tensor<2x2xi64>");
    assert!(text.contains("\"stablehlo.all_reduce\""), "{text}");
}

/// A per-rank program with every grouped collective tsr has, on a 2x2 mesh (a permutation that
/// leaves member 0 without a source, which gets zeros, and a rotation of the whole mesh).
const EVERY_COLLECTIVE: &str = r#"func.func @every_collective(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x16xf32>, tensor<1x8xf32>, tensor<8x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %peak = "tsr.all_reduce"(%x) {group_size = 2 : i64, mesh_axes = "tp", reduction = "max"} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %wide = "tsr.all_gather"(%x) {dim = 1 : i64, group_size = 2 : i64, mesh_axes = "dp"} : (tensor<4x8xf32>) -> tensor<4x16xf32>
  %part = "tsr.reduce_scatter"(%x) {dim = 0 : i64, group_size = 4 : i64, mesh_axes = "tp,dp"} : (tensor<4x8xf32>) -> tensor<1x8xf32>
  %swapped = "tsr.all_to_all"(%x) {concat_dim = 0 : i64, group_size = 2 : i64, mesh_axes = "tp", split_dim = 1 : i64} : (tensor<4x8xf32>) -> tensor<8x4xf32>
  %mine = "tsr.all_slice"(%x) {dim = 1 : i64, group_size = 2 : i64, mesh_axes = "dp"} : (tensor<4x8xf32>) -> tensor<4x4xf32>
  %sum = "tsr.all_reduce"(%x) {group_size = 4 : i64, mesh_axes = "dp,tp", reduction = "sum"} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %shifted = "tsr.collective_permute"(%x) {group_size = 2 : i64, mesh_axes = "dp", sources = array<i64: 0>, targets = array<i64: 1>} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %rotated = "tsr.collective_permute"(%x) {group_size = 4 : i64, mesh_axes = "dp,tp", sources = array<i64: 0, 1, 2, 3>, targets = array<i64: 1, 2, 3, 0>} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %peak, %wide, %part, %swapped, %mine, %sum, %shifted, %rotated : tensor<4x8xf32>, tensor<4x16xf32>, tensor<1x8xf32>, tensor<8x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
"#;

/// Every rank's outputs of `graph` on tessera's in-process multi-rank executor.
pub(crate) fn spmd_outputs(
    graph: &Graph,
    mesh: &Mesh,
    rank_inputs: &[Vec<(String, Tensor)>],
) -> Vec<Vec<(String, Tensor)>> {
    // Fed by position: an imported program names its inputs `arg0`, ...
    let names: Vec<String> = graph.inputs().iter().map(|&v| graph.value(v).name.clone()).collect();
    let programs: Vec<RankProgram<'_>> = rank_inputs
        .iter()
        .map(|inputs| RankProgram {
            graph,
            inputs: names.iter().cloned().zip(inputs.iter().map(|(_, t)| t.clone())).collect(),
        })
        .collect();
    run_spmd(mesh, &programs, &SpmdConfig::default()).expect("the multi-rank run")
}

#[test]
fn every_collective_runs_on_xla_replicas_as_on_tesseras_ranks_and_imports_back() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    std::fs::write(dir.join("ranks.mlir"), EVERY_COLLECTIVE).expect("write the program");
    let out = tessera(dir, &["opt", "ranks.mlir", "--mesh", "dp=2,tp=2", "--emit", "stablehlo", "-o", "exported.mlir"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(dir.join("exported.mlir")).expect("the export");
    for op in [
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "replica_id",
        "dynamic_slice",
        "collective_permute",
    ] {
        assert!(text.contains(&format!("\"stablehlo.{op}\"")), "{op}: {text}");
    }
    // "tp,dp" orders the 4-rank group tp-major: members 0, 2, 1, 3.
    assert!(text.contains("replica_groups = dense<[[0, 2, 1, 3]]> : tensor<1x4xi64>, scatter_dimension = 0"), "{text}");
    // dp's groups are [0, 2] and [1, 3].
    assert!(text.contains("source_target_pairs = dense<[[0, 2], [1, 3]]> : tensor<2x2xi64>"), "{text}");
    assert!(text.contains("source_target_pairs = dense<[[0, 1], [1, 2], [2, 3], [3, 0]]> : tensor<4x2xi64>"), "{text}");
    let graph = tessera_ir::mlir::parse_verified(EVERY_COLLECTIVE).expect("the program parses");
    let mesh = Mesh::parse("dp=2,tp=2").expect("mesh");
    let mut seed = 5;
    let rank_inputs: Vec<Vec<(String, Tensor)>> =
        (0..4).map(|_| vec![("x".to_string(), seeded_input(&graph.value(graph.inputs()[0]).ty, &mut seed))]).collect();
    let expected = spmd_outputs(&graph, &mesh, &rank_inputs);
    if jax_venv_present() {
        let got = run_on_xla_replicas(dir, &dir.join("exported.mlir"), &rank_inputs);
        for (rank, (outputs, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(outputs.len(), want.len());
            for (ours, (name, want)) in outputs.iter().zip(want) {
                let error = error_to_scale(ours, want);
                assert!(error <= TOLERANCE, "rank {rank} %{name}: XLA replica vs tessera rank {error:.3e}");
            }
        }
    }
    // Import back: the groups name the same mesh axes again, and all_slice's replica_id-indexed
    // dynamic_slice reads as the all_slice it was.
    let original = graph;
    let mut shlo = text.clone();
    let imported = tessera_frontend::stablehlo::import_text(&shlo).unwrap_or_else(|e| panic!("{e}\n{shlo}"));
    let collectives = |g: &Graph| -> Vec<String> {
        g.nodes().filter(|(_, n)| matches!(n.op, Op::Collective(_))).map(|(_, n)| format!("{:?}", n.op)).collect()
    };
    assert_eq!(collectives(&imported), collectives(&original));
    let back = spmd_outputs(&imported, &mesh, &rank_inputs);
    let want = spmd_outputs(&original, &mesh, &rank_inputs);
    for (rank, (b, w)) in back.iter().zip(&want).enumerate() {
        for ((_, b), (name, w)) in b.iter().zip(w) {
            assert_eq!(b, w, "rank {rank} %{name}: the imported program computes otherwise");
        }
    }
    // Groups that no axes of the mesh form are a located error.
    shlo = shlo.replacen("dense<[[0, 1], [2, 3]]>", "dense<[[0, 3], [1, 2]]>", 1);
    let e = tessera_frontend::stablehlo::import_text(&shlo).expect_err("diagonal groups");
    assert!(e.to_string().contains("are not the groups of any axes of the mesh dp=2,tp=2"), "{e}");
}

/// A replicated module around one collective line (`%0` from `%arg0: tensor<4x8xf32>`).
fn collective_module(header: &str, op: &str, result: &str) -> String {
    format!(
        "module @m {header}{{\n  func.func public @main(%arg0: tensor<4x8xf32>) -> ({result}) {{\n{op}\n    \"func.return\"(%0) : ({result}) -> ()\n  }}\n}}\n"
    )
}

const REPLICATED: &str = "attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 4 : i32} ";
const ADD_BODY: &str = "({\n    ^bb0(%a: tensor<f32>, %b: tensor<f32>):\n      %c = \"stablehlo.add\"(%a, %b) : (tensor<f32>, tensor<f32>) -> tensor<f32>\n      \"stablehlo.return\"(%c) : (tensor<f32>) -> ()\n    })";

#[test]
fn malformed_collectives_are_located_errors_and_unexportable_programs_are_named() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let all_reduce = |groups: &str, body: &str| {
        format!("    %0 = \"stablehlo.all_reduce\"(%arg0) <{{replica_groups = {groups}}}> {body} : (tensor<4x8xf32>) -> tensor<4x8xf32>")
    };
    let pairs = "dense<[[0, 1], [2, 3]]> : tensor<2x2xi64>";
    let with_mesh =
        |module: &str| module.replacen("{\n  func", "{\n  sdy.mesh @mesh = <[\"dp\"=2, \"tp\"=2]>\n  func", 1);
    let permute = |pairs: &str| {
        let n = pairs.matches('[').count() - 1;
        format!("    %0 = \"stablehlo.collective_permute\"(%arg0) <{{source_target_pairs = dense<{pairs}> : tensor<{n}x2xi64>}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>")
    };
    // all_slice as tessera exports it, with each replica's offset along dimension 1 read from
    // `table` and the slice sizes `sizes`.
    let replica_slice = |table: &str, sizes: &str| {
        let result = format!("tensor<{}xf32>", sizes.replace(", ", "x"));
        collective_module(
            REPLICATED,
            &format!(
                "    %t = \"stablehlo.constant\"() <{{value = {table} : tensor<4xi64>}}> : () -> tensor<4xi64>\n    %r = \"stablehlo.replica_id\"() : () -> tensor<ui32>\n    %i = \"stablehlo.convert\"(%r) : (tensor<ui32>) -> tensor<i64>\n    %s1 = \"stablehlo.dynamic_slice\"(%t, %i) <{{slice_sizes = array<i64: 1>}}> : (tensor<4xi64>, tensor<i64>) -> tensor<1xi64>\n    %s = \"stablehlo.reshape\"(%s1) : (tensor<1xi64>) -> tensor<i64>\n    %z = \"stablehlo.constant\"() <{{value = dense<0> : tensor<i64>}}> : () -> tensor<i64>\n    %0 = \"stablehlo.dynamic_slice\"(%arg0, %z, %s) <{{slice_sizes = array<i64: {sizes}>}}> : (tensor<4x8xf32>, tensor<i64>, tensor<i64>) -> {result}"
            ),
            &result,
        )
    };
    let cases = [
        ("no_mesh", collective_module("", &all_reduce(pairs, ADD_BODY), "tensor<4x8xf32>")),
        (
            "groups_of_no_axes",
            collective_module(REPLICATED, &all_reduce("dense<[[0, 2], [1, 3]]> : tensor<2x2xi64>", ADD_BODY), "tensor<4x8xf32>")
                .replacen("{\n  func", "{\n  sdy.mesh @mesh = <[\"a\"=4]>\n  func", 1),
        ),
        (
            "multiply_body",
            collective_module(REPLICATED, &all_reduce(pairs, &ADD_BODY.replace("stablehlo.add", "stablehlo.multiply")), "tensor<4x8xf32>")
                .replacen("{\n  func", "{\n  sdy.mesh @mesh = <[\"dp\"=2, \"tp\"=2]>\n  func", 1),
        ),
        (
            "split_count",
            collective_module(
                REPLICATED,
                &format!("    %0 = \"stablehlo.all_to_all\"(%arg0) <{{concat_dimension = 0 : i64, replica_groups = {pairs}, split_count = 4 : i64, split_dimension = 1 : i64}}> : (tensor<4x8xf32>) -> tensor<8x4xf32>"),
                "tensor<8x4xf32>",
            )
            .replacen("{\n  func", "{\n  sdy.mesh @mesh = <[\"dp\"=2, \"tp\"=2]>\n  func", 1),
        ),
        (
            "ragged_groups",
            collective_module(REPLICATED, &all_reduce("dense<[[0, 1, 2], [3, -1, -1]]> : tensor<2x3xi64>", ADD_BODY), "tensor<4x8xf32>"),
        ),
        ("permute_outside_the_mesh", with_mesh(&collective_module(REPLICATED, &permute("[[0, 1], [1, 7]]"), "tensor<4x8xf32>"))),
        ("permute_source_twice", with_mesh(&collective_module(REPLICATED, &permute("[[0, 1], [0, 2]]"), "tensor<4x8xf32>"))),
        ("permute_no_mesh", collective_module("", &permute("[[0, 1], [1, 0]]"), "tensor<4x8xf32>")),
        (
            "replica_id_as_data",
            with_mesh(&collective_module(
                REPLICATED,
                "    %r = \"stablehlo.replica_id\"() : () -> tensor<ui32>\n    %f = \"stablehlo.convert\"(%r) : (tensor<ui32>) -> tensor<f32>\n    %b = \"stablehlo.broadcast_in_dim\"(%f) <{broadcast_dimensions = array<i64>}> : (tensor<f32>) -> tensor<4x8xf32>\n    %0 = \"stablehlo.add\"(%arg0, %b) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>",
                "tensor<4x8xf32>",
            )),
        ),
        ("slice_offsets_of_no_axes", with_mesh(&replica_slice("dense<[0, 4, 4, 0]>", "4, 4"))),
        ("slice_cuts_two_dimensions", with_mesh(&replica_slice("dense<[0, 4, 4, 0]>", "2, 4"))),
        // Point-to-point transfers ordered by tokens, as XLA pipelines write them.
        (
            "send",
            collective_module(
                REPLICATED,
                "    %t = \"stablehlo.after_all\"() : () -> !stablehlo.token\n    %s = \"stablehlo.send\"(%arg0, %t) <{channel_handle = #stablehlo.channel_handle<handle = 1, type = 2>, is_host_transfer = false}> : (tensor<4x8xf32>, !stablehlo.token) -> !stablehlo.token\n    %0 = \"stablehlo.negate\"(%arg0) : (tensor<4x8xf32>) -> tensor<4x8xf32>",
                "tensor<4x8xf32>",
            ),
        ),
        (
            "recv",
            collective_module(
                REPLICATED,
                "    %t = \"stablehlo.after_all\"() : () -> !stablehlo.token\n    %r:2 = \"stablehlo.recv\"(%t) <{channel_handle = #stablehlo.channel_handle<handle = 1, type = 3>, is_host_transfer = false}> : (!stablehlo.token) -> (tensor<4x8xf32>, !stablehlo.token)\n    %0 = \"stablehlo.add\"(%arg0, %r#0) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>",
                "tensor<4x8xf32>",
            ),
        ),
        (
            "token_argument",
            "module @m {\n  func.func public @main(%arg0: tensor<4x8xf32>, %arg1: !stablehlo.token) -> (tensor<4x8xf32>) {\n    \"func.return\"(%arg0) : (tensor<4x8xf32>) -> ()\n  }\n}\n".to_string(),
        ),
    ];
    let mut messages: String =
        stablehlo_error_lines(work.path(), &cases).iter().map(|line| format!("{line}\n")).collect();
    // Export: a per-rank program's collectives need its mesh; one stage's program alone cannot
    // export its send (its partner is another program).
    std::fs::write(work.path().join("ranks.mlir"), EVERY_COLLECTIVE).expect("write the program");
    let no_mesh = tessera(work.path(), &["opt", "ranks.mlir", "--emit", "stablehlo"]);
    let stage = "func.func @stage0(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>) {\n  \"tsr.send\"(%x) {mesh_axis = \"pp\", peer = 1 : i64, tag = 0 : i64} : (tensor<4x8xf32>) -> ()\n  return %x : tensor<4x8xf32>\n}\n";
    std::fs::write(work.path().join("stage0.mlir"), stage).expect("write the program");
    let one_stage = tessera(work.path(), &["opt", "stage0.mlir", "--mesh", "pp=2", "--emit", "stablehlo"]);
    for out in [no_mesh, one_stage] {
        assert_eq!(out.code, 1, "{}", out.stderr);
        messages.push_str(&out.stderr.replace(&example("mlp.mlir"), "mlp.mlir"));
    }
    insta::assert_snapshot!(messages);
}
