//! The reference interpreter on small graphs: input checking, symbolic dimensions, error
//! messages that name the failing node, and output order.

use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, add_named, f64s, input, param, ty};
use tessera_ir::testing::inputs::f32_tensor;
use tessera_ir::types::{Dim, TensorType};
use tessera_runtime::interpreter::{run, RunError};

fn f32_type(dims: Vec<Dim>) -> TensorType {
    TensorType::new(DType::F32, dims)
}

fn feed(name: &str, t: Tensor) -> (String, Tensor) {
    (name.to_string(), t)
}

/// `%y = add(%x, %b)` over `[batch, 2]` inputs, with the result named `y`.
fn add_graph() -> Graph {
    let mut g = Graph::new("add");
    let ty = f32_type(vec![Dim::sym("batch"), Dim::Static(2)]);
    let x = input(&mut g, "x", ty.clone());
    let b = param(&mut g, "b", ty);
    let y = add_named(&mut g, "y", Op::Binary(BinaryOp::Add), &[x, b]);
    g.set_outputs(vec![y]);
    g
}

fn run_err(g: &Graph, inputs: &[(String, Tensor)]) -> String {
    match run(g, inputs) {
        Err(e) => e.to_string(),
        Ok(outputs) => panic!("expected an error, got {outputs:?}"),
    }
}

#[test]
fn runs_a_graph_and_names_its_outputs() {
    let g = add_graph();
    let x = f32_tensor(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f32_tensor(&[3, 2], &[0.5; 6]);
    let out = run(&g, &[feed("b", b), feed("x", x)]).expect("run");
    assert_eq!(out, [("y".to_string(), f32_tensor(&[3, 2], &[1.5, 2.5, 3.5, 4.5, 5.5, 6.5]))]);
}

#[test]
fn missing_unknown_and_duplicate_inputs_are_named() {
    let g = add_graph();
    let t = || f32_tensor(&[1, 2], &[1.0, 2.0]);
    assert_eq!(run_err(&g, &[feed("x", t())]), "missing input(s): b");
    assert_eq!(run_err(&g, &[]), "missing input(s): x, b");
    assert_eq!(
        run_err(&g, &[feed("x", t()), feed("b", t()), feed("z", t())]),
        "unknown input 'z' (the graph's inputs are: x, b)"
    );
    assert_eq!(run_err(&g, &[feed("x", t()), feed("x", t())]), "input 'x' is supplied more than once");
}

#[test]
fn wrong_dtype_and_shape_are_rejected() {
    let g = add_graph();
    let good = f32_tensor(&[1, 2], &[1.0, 2.0]);
    let as_f64 = Tensor::from_f64(DType::F64, vec![1, 2], vec![1.0, 2.0]);
    assert_eq!(
        run_err(&g, &[feed("x", as_f64), feed("b", good.clone())]),
        "input 'x' is declared f32 but the tensor given is f64"
    );
    let wrong_width = f32_tensor(&[1, 3], &[1.0, 2.0, 3.0]);
    assert_eq!(
        run_err(&g, &[feed("x", good.clone()), feed("b", wrong_width)]),
        "input 'b' is declared tensor<?x2xf32, [\"batch\"]> but the tensor given has shape [1, 3]"
    );
    let wrong_rank = f32_tensor(&[2], &[1.0, 2.0]);
    assert_eq!(
        run_err(&g, &[feed("x", wrong_rank), feed("b", good)]),
        "input 'x' is declared tensor<?x2xf32, [\"batch\"]> but the tensor given has shape [2]"
    );
}

#[test]
fn a_symbolic_dimension_has_one_size_across_inputs() {
    let g = add_graph();
    let x = f32_tensor(&[2, 2], &[0.0; 4]);
    let b = f32_tensor(&[3, 2], &[0.0; 6]);
    let err = run(&g, &[feed("x", x), feed("b", b)]).expect_err("conflict");
    assert_eq!(err.to_string(), "symbolic dimension 'batch' is 2 in input 'x' but 3 in input 'b' (dimension 0)");
    assert!(matches!(err, RunError::DimConflict { ref dim, .. } if dim == "batch"));
}

#[test]
fn a_failing_node_is_named_in_the_error() {
    let mut g = Graph::new("gather");
    let table = param(&mut g, "table", ty(DType::F32, &[3, 2]));
    let ids = input(&mut g, "ids", ty(DType::I64, &[2]));
    let rows = add_named(&mut g, "rows", Op::Gather { axis: 0 }, &[table, ids]);
    g.set_outputs(vec![rows]);
    let table_values = f32_tensor(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ok = run(
        &g,
        &[feed("table", table_values.clone()), feed("ids", Tensor::from_i64(DType::I64, vec![2], vec![-1, 1]))],
    )
    .expect("in range");
    assert_eq!(ok[0].1, f32_tensor(&[2, 2], &[5.0, 6.0, 3.0, 4.0]));
    let bad_ids = Tensor::from_i64(DType::I64, vec![2], vec![0, 5]);
    let err = run(&g, &[feed("table", table_values), feed("ids", bad_ids)]).expect_err("out of range");
    assert_eq!(
        err.to_string(),
        "%rows = tsr.gather: index 5 at indices[1] is out of range [-3, 3) for axis 0 of extent 3"
    );
    assert!(matches!(err, RunError::Node { node, .. } if node.index() == 0));
}

#[test]
fn integer_division_by_zero_names_the_node() {
    let mut g = Graph::new("div");
    let i32_pair = ty(DType::I32, &[2]);
    let a = input(&mut g, "a", i32_pair.clone());
    let b = input(&mut g, "b", i32_pair);
    let q = add_named(&mut g, "q", Op::Binary(BinaryOp::Div), &[a, b]);
    g.set_outputs(vec![q]);
    let ints = |v: Vec<i64>| Tensor::from_i64(DType::I32, vec![2], v);
    let err = run_err(&g, &[feed("a", ints(vec![1, 2])), feed("b", ints(vec![1, 0]))]);
    assert_eq!(err, "%q = tsr.div: integer division by zero");
}

#[test]
fn an_invalid_graph_is_reported_by_the_verifier() {
    let mut g = Graph::new("bad");
    let x = input(&mut g, "x", ty(DType::F32, &[2]));
    // Declared with the wrong result type, which only the verifier notices.
    g.add_node_unchecked(Op::Unary(UnaryOp::Neg), vec![x], vec![("y".into(), ty(DType::F32, &[3]))]);
    let err = run(&g, &[feed("x", f32_tensor(&[2], &[1.0, 2.0]))]).expect_err("invalid");
    assert!(matches!(err, RunError::InvalidGraph(_)));
    assert_eq!(
        err.to_string(),
        "invalid graph: %y = tsr.neg: result 0 is declared tensor<3xf32>, but the op produces tensor<2xf32>"
    );
}

#[test]
fn symbolic_reshape_and_broadcast_targets_are_bound() {
    let mut g = Graph::new("shapes");
    let x = input(&mut g, "x", f32_type(vec![Dim::sym("batch"), Dim::Static(2), Dim::Static(2)]));
    let bias = param(&mut g, "bias", ty(DType::F32, &[4]));
    let flat = add(&mut g, Op::Reshape { shape: vec![Dim::sym("batch"), Dim::Static(4)] }, &[x]);
    let wide = add(&mut g, Op::Broadcast { shape: vec![Dim::sym("batch"), Dim::Static(4)] }, &[bias]);
    let y = add(&mut g, Op::Binary(BinaryOp::Add), &[flat, wide]);
    g.set_outputs(vec![y]);
    let x_values = f32_tensor(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let bias_values = f32_tensor(&[4], &[10.0, 20.0, 30.0, 40.0]);
    let out = run(&g, &[feed("x", x_values), feed("bias", bias_values)]).expect("run");
    assert_eq!(out[0].1, f32_tensor(&[2, 4], &[11.0, 22.0, 33.0, 44.0, 15.0, 26.0, 37.0, 48.0]));
}

#[test]
fn a_symbol_bound_by_no_input_is_an_error() {
    let mut g = Graph::new("unbound");
    let x = input(&mut g, "x", ty(DType::F32, &[1]));
    let y = add_named(&mut g, "y", Op::Broadcast { shape: vec![Dim::sym("n")] }, &[x]);
    g.set_outputs(vec![y]);
    let err = run_err(&g, &[feed("x", f32_tensor(&[1], &[1.0]))]);
    assert_eq!(err, "%y = tsr.broadcast: symbolic dimension 'n' of %y is bound by no graph input");
}

#[test]
fn outputs_keep_graph_order_including_inputs_repeats_and_split_results() {
    let mut g = Graph::new("outputs");
    let x = input(&mut g, "x", ty(DType::I64, &[3]));
    let parts = g.add_node(Op::Split { axis: 0, sizes: vec![1, 2] }, &[x]).expect("split");
    let (head, tail): (ValueId, ValueId) = (parts[0], parts[1]);
    g.rename_value(head, "head");
    g.rename_value(tail, "tail");
    g.set_outputs(vec![tail, x, head, tail]);
    let xs = Tensor::from_i64(DType::I64, vec![3], vec![7, 8, 9]);
    let out = run(&g, &[feed("x", xs.clone())]).expect("run");
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["tail", "x", "head", "tail"]);
    assert_eq!(out[0].1.to_i64_vec(), [8, 9]);
    assert_eq!(out[1].1, xs);
    assert_eq!(out[2].1.to_i64_vec(), [7]);
    assert_eq!(out[3].1, out[0].1);
}

#[test]
fn values_shared_by_several_nodes_survive_until_their_last_use() {
    // x feeds three nodes; dead results (z) and unused inputs (unused) are dropped early.
    let mut g = Graph::new("shared");
    let ty = f64s(&[2]);
    let x = input(&mut g, "x", ty.clone());
    let _unused = input(&mut g, "unused", ty);
    let a = add(&mut g, Op::Unary(UnaryOp::Neg), &[x]);
    let _z = add(&mut g, Op::Unary(UnaryOp::Exp), &[a]);
    let b = add(&mut g, Op::Binary(BinaryOp::Mul), &[x, a]);
    let c = add(&mut g, Op::Binary(BinaryOp::Add), &[b, x]);
    g.set_outputs(vec![c]);
    let xs = Tensor::from_f64(DType::F64, vec![2], vec![2.0, 3.0]);
    let out = run(&g, &[feed("x", xs.clone()), feed("unused", xs)]).expect("run");
    // x * -x + x
    assert_eq!(out[0].1.to_f64_vec(), [-2.0, -6.0]);
}
