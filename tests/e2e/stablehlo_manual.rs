//! `jax.shard_map` and GSPMD device orders from JAX itself (issue 19; the mesh cases of
//! scripts/stablehlo/generate.py, made on 4 CPU devices over a transposed device array):
//! a shard_map body (Shardy's `sdy.manual_computation`, GSPMD's `@SPMDFullToShardShape` pair)
//! imports as a per-rank program that matches JAX on every rank of tessera's in-process
//! multi-rank interpreter and of a compiled mesh artifact under `mpirun`, and exports as a
//! replicated module XLA runs with the same outputs; a `<=[2,2]T(1,0)` sharding reads as the
//! mesh axes JAX shards over, so each rank's block is the one JAX's device holds; malformed
//! forms are located errors.

use crate::mpi::mpirun;
use crate::stablehlo::{cases_dir, check_run, error_to_scale, generated_mesh_cases, jax_venv_present, run_args};
use crate::stablehlo_mesh::{run_on_xla_replicas, spmd_outputs};
use crate::support::{stablehlo_error_lines, tessera};
use std::path::Path;
use std::time::Duration;
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy::read_npy;

/// Allowed error of every element, relative to the largest magnitude of JAX's output.
const TOLERANCE: f64 = 1e-4;

/// The case's inputs (`inputs/argN.npy`) as `--input` values and tensors, and JAX's outputs.
fn case_data(case: &Path, graph: &Graph) -> (Vec<String>, Vec<(String, Tensor)>, Vec<Tensor>) {
    let mut flags = Vec::new();
    let mut inputs = Vec::new();
    for &id in graph.inputs() {
        let name = graph.value(id).name.clone();
        let file = case.join("inputs").join(format!("{name}.npy"));
        inputs.push((name.clone(), read_npy(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))));
        flags.push(format!("{name}={}", file.display()));
    }
    let outputs = (0..graph.outputs().len())
        .map(|i| read_npy(&case.join("outputs").join(format!("out{i}.npy"))).expect("JAX's output"))
        .collect();
    (flags, inputs, outputs)
}

fn collective_names(g: &Graph) -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        g.nodes().filter(|(_, n)| matches!(n.op, Op::Collective(_))).map(|(_, n)| n.op.mnemonic()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Every shard_map case, in both text forms: the import is a per-rank program over the mesh
/// with every collective of the body; every rank of the in-process multi-rank interpreter, every
/// rank of the compiled mesh artifact under mpirun (rank 0 writes), and every XLA replica of the
/// export match JAX within 1e-4; the export imports back to the same collectives.
#[test]
fn shard_map_bodies_match_jax_on_every_rank_interpreted_compiled_and_on_xla() {
    let Some(cases) = generated_mesh_cases() else { return };
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    for (name, mesh_text) in [("shard_map_sdy", "x=2,y=2"), ("shard_map_gspmd", "d0=2,d1=2")] {
        assert!(cases.iter().any(|c| c == name), "{name} is not generated: {cases:?}");
        let case = cases_dir().join(name);
        for form in ["pretty", "generic"] {
            let label = format!("{name} {form}");
            let model = case.join(format!("{form}.stablehlo.mlir"));
            let model_arg = model.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&model).expect("the case");
            let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{label}: {e}"));
            let mesh = graph.io_shardings().map(|io| io.mesh.clone()).expect("the imported program records its mesh");
            assert_eq!(mesh.to_string(), mesh_text, "{label}");
            assert_eq!(
                collective_names(&graph),
                ["all_gather", "all_reduce", "all_slice", "all_to_all", "collective_permute", "reduce_scatter"],
                "{label}"
            );
            let (flags, inputs, expected) = case_data(&case, &graph);
            let rank_inputs = vec![inputs.clone(); mesh.num_devices()];
            for (rank, outputs) in spmd_outputs(&graph, &mesh, &rank_inputs).iter().enumerate() {
                for ((out, got), want) in outputs.iter().zip(&expected) {
                    let error = error_to_scale(got, want);
                    assert!(error <= TOLERANCE, "{label} interpreter rank {rank} {out}: {error:.3e}");
                }
            }
            let artifact = format!("artifact-{name}-{form}");
            let compiled =
                tessera(dir, &["compile", &model_arg, "--mesh", mesh_text, "--target", "cpu", "-o", &artifact]);
            assert_eq!(compiled.code, 0, "{label}: {}", compiled.stderr);
            let out_dir = format!("out-{name}-{form}");
            let mut run = vec!["run", artifact.as_str(), "-o", out_dir.as_str()];
            for f in &flags {
                run.extend(["--input", f.as_str()]);
            }
            let ran = mpirun(dir, mesh.num_devices(), &run, &[], Duration::from_secs(120));
            assert_eq!(ran.code, Some(0), "{label} under mpirun: {}", ran.stderr);
            for (i, want) in expected.iter().enumerate() {
                let got = read_npy(&dir.join(&out_dir).join(format!("out{i}.npy"))).expect("the compiled output");
                let error = error_to_scale(&got, want);
                println!("{label}: compiled on {} ranks: out{i} {error:.2e}", mesh.num_devices());
                assert!(error <= TOLERANCE, "{label} compiled out{i}: {error:.3e}");
            }
            let exported = format!("exported-{name}-{form}.mlir");
            let export =
                tessera(dir, &["opt", &model_arg, "--mesh", mesh_text, "--emit", "stablehlo", "-o", &exported]);
            assert_eq!(export.code, 0, "{label}: {}", export.stderr);
            let back = std::fs::read_to_string(dir.join(&exported)).expect("the export");
            let again =
                tessera_frontend::stablehlo::import_text(&back).unwrap_or_else(|e| panic!("{label}: {e}\n{back}"));
            assert_eq!(collective_names(&again), collective_names(&graph), "{label}: the export imports back");
            if jax_venv_present() {
                let got = run_on_xla_replicas(dir, &dir.join(&exported), &rank_inputs);
                for (rank, outputs) in got.iter().enumerate() {
                    for (i, (got, want)) in outputs.iter().zip(&expected).enumerate() {
                        let error = error_to_scale(got, want);
                        assert!(error <= TOLERANCE, "{label}: XLA replica {rank} out{i}: {error:.3e}");
                    }
                }
            }
        }
    }
}

/// JAX's `P('y', None)` over a 2x2 mesh is GSPMD's `{devices=[2,1,2]<=[2,2]T(1,0)
/// last_tile_dim_replicate}`: rows over the fast axis. The case imports with the shardings over
/// `d1` (y) where JAX shards over y, runs interpreted and compiled with JAX's output, and the
/// block each rank's output sharding cuts is the one JAX's device of that logical id holds
/// (the mesh is built over a transposed device array, so physical ids differ).
#[test]
fn a_transposed_gspmd_device_order_gives_each_rank_the_block_jax_gives_its_device() {
    let Some(cases) = generated_mesh_cases() else { return };
    assert!(cases.iter().any(|c| c == "gspmd_transposed"), "{cases:?}");
    let case = cases_dir().join("gspmd_transposed");
    let work = tempfile::tempdir().expect("a temporary directory");
    for form in ["pretty", "generic"] {
        let model = case.join(format!("{form}.stablehlo.mlir"));
        let model_arg = model.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&model).expect("the case");
        assert!(text.contains("<=[2,2]T(1,0)"), "{form}: the fixture has no transposed device order");
        let graph = tessera_frontend::stablehlo::import_text(&text).unwrap_or_else(|e| panic!("{form}: {e}"));
        let io = graph.io_shardings().expect("boundary shardings");
        assert_eq!(io.mesh.to_string(), "d0=2,d1=2");
        let read: Vec<String> = io.inputs.iter().map(|(n, s)| format!("{n} {s}")).collect();
        assert_eq!(read, ["arg0 [{d0}, {d1}]", "arg1 [{d1}, {}]"], "{form}");
        let (_, out_sharding) = io.outputs.first().expect("the output's sharding").clone();
        assert_eq!(out_sharding.to_string(), "[{}, {d1}]");
        let constraint: Vec<String> = graph
            .nodes()
            .filter_map(|(_, n)| match &n.op {
                Op::ShardingConstraint { sharding } => Some(sharding.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(constraint, ["[{d1}, {}]"], "{form}");
        let (inputs, _) = run_args(&model, &case);
        check_run(work.path(), &format!("gspmd_transposed {form} interpreter"), &model_arg, &inputs, &case);
        let artifact = work.path().join(format!("artifact-{form}")).to_string_lossy().into_owned();
        let compiled = tessera(work.path(), &["compile", &model_arg, "--target", "cpu", "-o", &artifact]);
        assert_eq!(compiled.code, 0, "{form}: {}", compiled.stderr);
        check_run(work.path(), &format!("gspmd_transposed {form} compiled"), &artifact, &inputs, &case);
        let global = read_npy(&case.join("outputs/out0.npy")).expect("JAX's output");
        for rank in 0..io.mesh.num_devices() {
            let block = out_sharding.shard_tensor(&io.mesh, rank, &global).expect("the rank's block");
            let jax = read_npy(&case.join(format!("shards/out0.r{rank}.npy"))).expect("JAX's device block");
            assert_eq!(block, jax, "{form}: rank {rank}'s block is not the one JAX's device {rank} holds");
        }
    }
}

/// A shard_map module of the 2x2 mesh around one body line (`%b` from `%a`, both
/// `tensor<4x2xf32>` blocks of an 8x4 argument split over x and y).
fn manual_module(in_shardings: &str, manual_axes: &str, body: &str, local: &str) -> String {
    format!(
        "module @m attributes {{mhlo.num_partitions = 4 : i32}} {{\n  sdy.mesh @mesh = <[\"x\"=2, \"y\"=2]>\n  func.func public @main(%arg0: tensor<8x4xf32>) -> (tensor<8x4xf32>) {{\n    %0 = sdy.manual_computation(%arg0) in_shardings=[{in_shardings}] out_shardings=[<@mesh, [{{\"x\"}}, {{\"y\"}}]>] manual_axes={{{manual_axes}}} (%a: {local}) {{\n{body}\n      sdy.return %b : tensor<4x2xf32>\n    }} : (tensor<8x4xf32>) -> tensor<8x4xf32>\n    return %0 : tensor<8x4xf32>\n  }}\n}}\n"
    )
}

/// GSPMD's shard_map form around `%a` (`@Sharding` with `sharding`, then `FULL_TO_SHARD`'s line).
fn gspmd_manual_module(sharding: &str, full_to_shard: &str, shard_to_full: &str) -> String {
    format!(
        "module @m attributes {{mhlo.num_partitions = 4 : i32}} {{\n  func.func public @main(%arg0: tensor<8x4xf32>) -> (tensor<8x4xf32>) {{\n    %0 = stablehlo.custom_call @Sharding(%arg0) {{mhlo.sharding = \"{sharding}\"}} : (tensor<8x4xf32>) -> tensor<8x4xf32>\n    {full_to_shard}\n    %2 = stablehlo.tanh %1 : tensor<4x2xf32>\n    %3 = stablehlo.custom_call @Sharding(%2) {{mhlo.sharding = \"{{manual}}\"}} : (tensor<4x2xf32>) -> tensor<4x2xf32>\n    %4 = stablehlo.custom_call @SPMDShardToFullShape(%3) {{mhlo.sharding = \"{shard_to_full}\"}} : (tensor<4x2xf32>) -> tensor<8x4xf32>\n    return %4 : tensor<8x4xf32>\n  }}\n}}\n"
    )
}

/// Malformed shard_map bodies and GSPMD device orders: a located error, exit 1, no panic
/// (snapshot of the messages); a per-rank program compiles only with its own mesh.
#[test]
fn malformed_shard_map_bodies_and_device_orders_are_located_errors() {
    let xy = r#"<@mesh, [{"x"}, {"y"}]>"#;
    let tanh = "      %b = stablehlo.tanh %a : tensor<4x2xf32>";
    let local = "tensor<4x2xf32>";
    let full = "%1 = stablehlo.custom_call @SPMDFullToShardShape(%0) {mhlo.sharding = \"{manual}\"} : (tensor<8x4xf32>) -> tensor<4x2xf32>";
    let grid = "{devices=[2,2]<=[4]}";
    let cases = [
        ("manual_partly_automatic", manual_module(xy, r#""x""#, tanh, local)),
        ("manual_unknown_axis", manual_module(xy, r#""x", "y", "z""#, tanh, local)),
        ("manual_unknown_mesh", manual_module(r#"<@grid, [{"x"}, {"y"}]>"#, r#""x", "y""#, tanh, local)),
        ("manual_sharding_count", manual_module(&format!("{xy}, {xy}"), r#""x", "y""#, tanh, local)),
        ("manual_sharding_rank", manual_module(r#"<@mesh, [{"x"}, {"y"}, {}]>"#, r#""x", "y""#, tanh, local)),
        ("manual_block_type", manual_module(xy, r#""x", "y""#, tanh, "tensor<8x2xf32>")),
        ("manual_axis_twice", manual_module(r#"<@mesh, [{"x"}, {"x"}]>"#, r#""x", "y""#, tanh, local)),
        (
            "manual_groups_of_no_axes",
            manual_module(
                xy,
                r#""x", "y""#,
                "      %b = \"stablehlo.all_gather\"(%a) <{all_gather_dim = 0 : i64, replica_groups = dense<[[0, 3], [1, 2]]> : tensor<2x2xi64>}> : (tensor<4x2xf32>) -> tensor<4x2xf32>",
                local,
            ),
        ),
        ("manual_truncated", manual_module(xy, r#""x", "y""#, tanh, local)[..330].to_string()),
        ("full_to_shard_of_no_layout", gspmd_manual_module(grid, &full.replace("(%0)", "(%arg0)"), grid)),
        ("shard_to_full_other_grid", gspmd_manual_module(grid, full, "{devices=[4,1]<=[4]}")),
        ("gspmd_devices_in_no_mesh_order", gspmd_manual_module("{devices=[2,2]0,3,1,2}", full, grid)),
        ("gspmd_iota_not_a_permutation", gspmd_manual_module("{devices=[2,2]<=[2,2]T(1,1)}", full, grid)),
        ("gspmd_iota_wrong_size", gspmd_manual_module("{devices=[2,2]<=[2,3]T(1,0)}", full, grid)),
    ];
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut messages: String =
        stablehlo_error_lines(work.path(), &cases).iter().map(|line| format!("{line}\n")).collect();
    // A per-rank program compiles only over its own mesh, and only with --mesh.
    std::fs::write(work.path().join("body.stablehlo.mlir"), manual_module(xy, r#""x", "y""#, tanh, local))
        .expect("write the case");
    for extra in [&[][..], &["--mesh", "x=4"][..], &["--mesh", "a=2,b=2"][..]] {
        let mut args = vec!["compile", "body.stablehlo.mlir", "--target", "cpu", "-o", "art"];
        args.extend_from_slice(extra);
        let out = tessera(work.path(), &args);
        assert_eq!(out.code, 1, "{extra:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        messages.push_str(&format!("compile {extra:?}: {}\n", out.stderr.lines().next().unwrap_or_default()));
    }
    insta::assert_snapshot!(messages);
}
