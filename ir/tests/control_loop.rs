//! `tsr.loop`: reference semantics against hand-computed results, the trip limit, the region
//! text form (snapshot and round trip), and the verifier's diagnostics for carried types.

use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::mlir::{parse_verified, print_graph};
use tessera_ir::ops::control::{LoopRegions, REGION_NAME};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add_named, f32s, input};
use tessera_ir::testing::round_tripped_text;
use tessera_ir::types::TensorType;
use tessera_ir::verify::verify;

fn i64_scalar() -> TensorType {
    TensorType::new(DType::I64, vec![])
}

fn scalar_i64(v: i64) -> Tensor {
    Tensor::from_i64(DType::I64, vec![], vec![v])
}

/// `while i < n { i += 1; x *= 2 }` over carried `(i: i64, n: i64, x: [2] f32)`.
fn doubling_loop(max_trips: u64) -> Graph {
    let mut cond = Graph::new(REGION_NAME);
    let i = input(&mut cond, "i", i64_scalar());
    let n = input(&mut cond, "n", i64_scalar());
    input(&mut cond, "x", f32s(&[2]));
    let go_on = add_named(&mut cond, "go_on", Op::Compare(CompareOp::Lt), &[i, n]);
    cond.set_outputs(vec![go_on]);

    let mut body = Graph::new(REGION_NAME);
    let i = input(&mut body, "i", i64_scalar());
    let n = input(&mut body, "n", i64_scalar());
    let x = input(&mut body, "x", f32s(&[2]));
    let one = add_named(&mut body, "one", Op::Constant(scalar_i64(1)), &[]);
    let next_i = add_named(&mut body, "next_i", Op::Binary(BinaryOp::Add), &[i, one]);
    let two = add_named(&mut body, "two", Op::Constant(Tensor::from_f64(DType::F32, vec![2], vec![2.0; 2])), &[]);
    let next_x = add_named(&mut body, "next_x", Op::Binary(BinaryOp::Mul), &[x, two]);
    body.set_outputs(vec![next_i, n, next_x]);

    let mut g = Graph::new("doubling");
    let i0 = input(&mut g, "i0", i64_scalar());
    let n = input(&mut g, "n", i64_scalar());
    let x = input(&mut g, "x", f32s(&[2]));
    let regions = LoopRegions { cond, body, max_trips };
    let results = vec![
        ("i_end".to_string(), i64_scalar()),
        ("n_end".to_string(), i64_scalar()),
        ("x_end".to_string(), f32s(&[2])),
    ];
    let node = g.add_node_unchecked(Op::Loop(Box::new(regions)), vec![i0, n, x], results);
    let outs = g.node(node).outputs.clone();
    g.set_outputs(vec![outs[0], outs[2]]);
    g
}

fn floats(t: &Tensor) -> Vec<f64> {
    match t.floats() {
        Some(v) => v.into_owned(),
        None => panic!("expected floats, got {}", t.dtype),
    }
}

fn run(g: &Graph, i0: i64, n: i64) -> Result<Vec<Tensor>, String> {
    let (_, node) = g.nodes().next().expect("one node");
    let x = Tensor::from_f64(DType::F32, vec![2], vec![1.0, -3.0]);
    let results = [i64_scalar(), i64_scalar(), f32s(&[2])];
    node.op.eval(&[&scalar_i64(i0), &scalar_i64(n), &x], &results)
}

#[test]
fn a_loop_runs_its_body_while_the_condition_holds() {
    let g = doubling_loop(100);
    verify(&g).expect("verifies");
    let out = run(&g, 0, 3).expect("evaluates");
    assert_eq!(out[0].get_i64(0), 3);
    assert_eq!(floats(&out[2]), vec![8.0, -24.0]);
    // A condition false on entry runs no trip: the carried values come back unchanged.
    let out = run(&g, 5, 3).expect("evaluates");
    assert_eq!(out[0].get_i64(0), 5);
    assert_eq!(floats(&out[2]), vec![1.0, -3.0]);
}

#[test]
fn a_loop_past_its_trip_limit_fails_instead_of_hanging() {
    let g = doubling_loop(4);
    assert_eq!(floats(&run(&g, 0, 4).expect("four trips are allowed")[2]), vec![16.0, -48.0]);
    let err = run(&g, 0, 1_000_000_000).expect_err("the limit stops it");
    assert_eq!(err, "the loop did not end within 4 trips (its max_trips limit)");
}

#[test]
fn a_loop_counts_one_trip_of_flops() {
    let g = doubling_loop(10);
    let (_, node) = g.nodes().next().expect("one node");
    // cond: one compare; body: one i64 add and two f32 multiplies.
    assert_eq!(node.op.flops(&[&[], &[], &[2]], &[&[], &[], &[2]]), Ok(4));
}

#[test]
fn the_loop_text_form_is_stable_and_round_trips() {
    insta::assert_snapshot!(round_tripped_text(&doubling_loop(1000)));
}

#[test]
fn ill_typed_loops_are_located_errors() {
    let text = print_graph(&doubling_loop(7));
    // The body yields a carried value of another type than it takes.
    let drift = text.replace(
        "\"tsr.yield\"(%next_i, %n, %next_x) : (tensor<i64>, tensor<i64>, tensor<2xf32>) -> ()",
        "%r = \"tsr.reshape\"(%next_x) : (tensor<2xf32>) -> tensor<2x1xf32>\n    \"tsr.yield\"(%next_i, %n, %r) : (tensor<i64>, tensor<i64>, tensor<2x1xf32>) -> ()",
    );
    assert_ne!(drift, text);
    let err = parse_verified(&drift).expect_err("the carried type drifts");
    assert!(
        err.to_string().ends_with(
            "tsr.loop: carried value 2 enters the body as tensor<2xf32> but the body yields tensor<2x1xf32>"
        ),
        "{err}"
    );
    // The condition is not a boolean.
    let not_bool =
        text.replace("\"tsr.yield\"(%go_on) : (tensor<i1>) -> ()", "\"tsr.yield\"(%i) : (tensor<i64>) -> ()");
    assert_ne!(not_bool, text);
    let err = parse_verified(&not_bool).expect_err("the condition is an integer");
    assert!(
        err.to_string().ends_with("tsr.loop: the cond region: the condition must be an i1 tensor, got tensor<i64>"),
        "{err}"
    );
    // A missing region and a missing limit.
    let one_region = text.replacen("}, {", "}) ({", 1);
    assert!(parse_verified(&one_region).is_err());
    let no_limit = text.replace(" {max_trips = 7 : i64}", "").replace(" {max_trips = 7}", "");
    assert_ne!(no_limit, text);
    let err = parse_verified(&no_limit).expect_err("the limit is required");
    assert!(err.to_string().contains("max_trips"), "{err}");
}
