//! ONNX `If` through the importer and the reference interpreter: a run-time condition becomes
//! `tsr.if` with the enclosing values it reads as operands, a condition known at import picks
//! its branch, a branch ill-typed for the imported shapes becomes a `tsr.trap`, and nested
//! branches import as nested regions.

mod onnx_support;

use onnx_support::{assert_close, f32_raw, f32_value, model, node, run, value, D};
use tessera_frontend::onnx::proto::attribute_proto::AttributeType;
use tessera_frontend::onnx::proto::tensor_proto::DataType;
use tessera_frontend::onnx::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use tessera_frontend::onnx::{import_proto, ImportOptions};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;

/// A branch subgraph: its nodes and the names it yields (types left to the importer).
fn branch(nodes: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
    GraphProto {
        node: nodes,
        name: Some("branch".into()),
        output: outputs.iter().map(|o| f32_value(o, &[])).collect(),
        ..GraphProto::default()
    }
}

fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

fn if_node(cond: &str, out: &str, then_branch: GraphProto, else_branch: GraphProto) -> NodeProto {
    node(
        "If",
        "if",
        &[cond],
        &[out],
        vec![attr_graph("then_branch", then_branch), attr_graph("else_branch", else_branch)],
    )
}

fn bool_initializer(name: &str, v: bool) -> TensorProto {
    tessera_frontend::onnx::tensor::encode(name, &Tensor::from_i64(DType::Bool, vec![], vec![i64::from(v)]))
}

fn import(m: &tessera_frontend::onnx::proto::ModelProto) -> Graph {
    match import_proto(m, None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn ifs(g: &Graph) -> Vec<&tessera_ir::ops::control::IfRegions> {
    g.nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::If(regions) => Some(&**regions),
            _ => None,
        })
        .collect()
}

fn cond(v: bool) -> Tensor {
    Tensor::from_i64(DType::Bool, vec![], vec![i64::from(v)])
}

/// `y = cond ? x + k : -x`, `x: [3]`, `k` an initializer of the enclosing graph.
fn add_or_negate(then_nodes: Vec<NodeProto>) -> tessera_frontend::onnx::proto::ModelProto {
    model(
        vec![if_node(
            "cond",
            "y",
            branch(then_nodes, &["t"]),
            branch(vec![node("Neg", "neg", &["x"], &["e"], vec![])], &["e"]),
        )],
        vec![value("cond", DataType::Bool, &[]), f32_value("x", &[D::N(3)])],
        vec![f32_value("y", &[D::N(3)])],
        vec![f32_raw("k", &[3], &[10.0, 20.0, 30.0])],
        16,
    )
}

#[test]
fn a_run_time_condition_becomes_tsr_if_reading_the_enclosing_scope() {
    let g = import(&add_or_negate(vec![node("Add", "add", &["x", "k"], &["t"], vec![])]));
    let regions = ifs(&g);
    assert_eq!(regions.len(), 1, "one tsr.if");
    // `x` is captured (an operand after the condition); the small constant `k` is copied in.
    let (_, if_node) = g.nodes().find(|(_, n)| matches!(n.op, Op::If(_))).expect("the if");
    assert_eq!(if_node.inputs.len(), 2);
    assert_eq!(regions[0].then_branch.inputs().len(), 1);
    assert_eq!(regions[0].else_branch.inputs().len(), 1);
    let x = Tensor::from_f64(DType::F32, vec![3], vec![1.0, 2.0, 3.0]);
    let taken = run(&g, vec![cond(true), x.clone()]);
    assert_close(&taken[0], DType::F32, &[3], &[11.0, 22.0, 33.0], 0.0);
    let not_taken = run(&g, vec![cond(false), x]);
    assert_close(&not_taken[0], DType::F32, &[3], &[-1.0, -2.0, -3.0], 0.0);
}

#[test]
fn a_condition_known_at_import_picks_its_branch() {
    let mut m = add_or_negate(vec![node("Add", "add", &["x", "k"], &["t"], vec![])]);
    let graph = m.graph.as_mut().expect("a graph");
    graph.input.retain(|i| i.name() != "cond");
    graph.initializer.push(bool_initializer("cond", false));
    let g = import(&m);
    assert!(ifs(&g).is_empty(), "no tsr.if left");
    let out = run(&g, vec![Tensor::from_f64(DType::F32, vec![3], vec![1.0, 2.0, 3.0])]);
    assert_close(&out[0], DType::F32, &[3], &[-1.0, -2.0, -3.0], 0.0);
}

#[test]
fn a_branch_ill_typed_for_the_shapes_is_an_error_only_when_taken() {
    // Adding a [2] tensor to x: [3] does not broadcast; ONNX would fail only if it ran.
    let m = add_or_negate(vec![
        node(
            "Constant",
            "two",
            &[],
            &["two"],
            vec![onnx_support::attr_tensor("value", f32_raw("v", &[2], &[1.0, 2.0]))],
        ),
        node("Add", "add", &["x", "two"], &["t"], vec![]),
    ]);
    let g = import(&m);
    let regions = ifs(&g);
    assert_eq!(regions.len(), 1);
    let traps = regions[0].then_branch.nodes().filter(|(_, n)| matches!(n.op, Op::Trap(_))).count();
    assert_eq!(traps, 1, "the then branch is a trap");
    let x = Tensor::from_f64(DType::F32, vec![3], vec![1.0, 2.0, 3.0]);
    let out = run(&g, vec![cond(false), x.clone()]);
    assert_close(&out[0], DType::F32, &[3], &[-1.0, -2.0, -3.0], 0.0);
    let named = vec![("cond".to_string(), cond(true)), ("x".to_string(), x)];
    let err = tessera_runtime::interpreter::run(&g, &named).expect_err("the trap is taken");
    let message = err.to_string();
    assert!(message.contains("the If branch taken cannot run for these shapes"), "{message}");
    assert!(message.contains("do not broadcast"), "{message}");
}

#[test]
fn nested_ifs_import_as_nested_regions() {
    // y = c1 ? (c2 ? x + k : x) : -x
    let inner = if_node(
        "c2",
        "inner",
        branch(vec![node("Add", "add", &["x", "k"], &["a"], vec![])], &["a"]),
        branch(vec![node("Identity", "id", &["x"], &["b"], vec![])], &["b"]),
    );
    let m = model(
        vec![if_node(
            "c1",
            "y",
            branch(vec![inner], &["inner"]),
            branch(vec![node("Neg", "neg", &["x"], &["e"], vec![])], &["e"]),
        )],
        vec![value("c1", DataType::Bool, &[]), value("c2", DataType::Bool, &[]), f32_value("x", &[D::N(3)])],
        vec![f32_value("y", &[D::N(3)])],
        vec![f32_raw("k", &[3], &[10.0, 20.0, 30.0])],
        16,
    );
    let g = import(&m);
    let outer = ifs(&g);
    assert_eq!(outer.len(), 1);
    assert_eq!(ifs(&outer[0].then_branch).len(), 1, "the inner if is a region of the outer one's then branch");
    let x = || Tensor::from_f64(DType::F32, vec![3], vec![1.0, 2.0, 3.0]);
    for (c1, c2, expected) in [
        (true, true, [11.0, 22.0, 33.0]),
        (true, false, [1.0, 2.0, 3.0]),
        (false, true, [-1.0, -2.0, -3.0]),
        (false, false, [-1.0, -2.0, -3.0]),
    ] {
        let out = run(&g, vec![cond(c1), cond(c2), x()]);
        assert_close(&out[0], DType::F32, &[3], &expected, 0.0);
    }
    // The printed form parses back to the same graph.
    let text = tessera_ir::mlir::print_graph(&g);
    let back = tessera_ir::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, g);
}
