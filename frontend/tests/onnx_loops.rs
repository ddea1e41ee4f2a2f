//! ONNX `Loop` and `Scan` through the importer: the fixtures import as one `tsr.loop` each, verify
//! and round-trip through the text form with their symbolic lengths kept; nested loops become
//! nested regions; and every refusal (a scan output of data-decided length, a carried value
//! whose type changes, Scan-8, a trip count needed ahead) is a named diagnostic. The numbers
//! against onnxruntime are in `onnx_conformance.rs` (the `tests/fixtures/onnx-loops` cases).

mod onnx_support;

use onnx_support::{attr_int, f32_value, i64_typed, model, node, run, value, D};
use std::path::Path;
use tessera_frontend::onnx::proto::attribute_proto::AttributeType;
use tessera_frontend::onnx::proto::tensor_proto::DataType;
use tessera_frontend::onnx::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use tessera_frontend::onnx::{import_model, import_proto, ImportOptions};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::mlir::parse::parse_verified;
use tessera_ir::mlir::print::print_graph;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;

fn fixture(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/onnx-loops").join(name).join("model.onnx");
    import_model(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn loops_in(g: &Graph) -> usize {
    g.nodes().filter(|(_, n)| matches!(n.op, Op::Loop(_))).count()
}

fn output_types(g: &Graph) -> Vec<String> {
    g.outputs().iter().map(|&v| g.value(v).ty.to_string()).collect()
}

#[test]
fn fixtures_import_as_one_loop_that_round_trips_with_symbolic_lengths_kept() {
    let cases = [
        ("loop_data_dependent_trips", vec!["tensor<4xf32>", "tensor<f32>"]),
        ("loop_symbolic_scan_outputs", vec!["tensor<2xf32>", r#"tensor<?x2xf32, ["n"]>"#]),
        ("scan_reverse_cumsum", vec!["tensor<3xf32>", r#"tensor<3x?xf32, ["steps"]>"#]),
    ];
    for (name, types) in cases {
        let g = fixture(name);
        assert_eq!((loops_in(&g), output_types(&g)), (1, types.iter().map(|t| t.to_string()).collect()), "{name}");
        if let Err(e) = tessera_ir::verify::verify(&g) {
            panic!("{name}: {e}");
        }
        let text = print_graph(&g);
        let parsed = parse_verified(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(print_graph(&parsed), text, "{name}");
    }
}

fn body(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> AttributeProto {
    AttributeProto {
        name: Some("body".into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(GraphProto {
            node: nodes,
            name: Some("body".into()),
            input: inputs,
            output: outputs,
            ..GraphProto::default()
        }),
        ..Default::default()
    }
}

fn i64_scalar(name: &str) -> ValueInfoProto {
    value(name, DataType::Int64, &[])
}

fn bool_scalar(name: &str) -> ValueInfoProto {
    value(name, DataType::Bool, &[])
}

/// `for i in 0..3 { for j in 0..2 { k += i + j } }` as a Loop whose body holds a Loop reading
/// the outer counter.
fn nested_loops() -> ModelProto {
    let inner = body(
        vec![
            node("Add", "ij", &["i", "j"], &["i_plus_j"], vec![]),
            node("Add", "k_step", &["k_inner_in", "i_plus_j"], &["k_inner_out"], vec![]),
            node("Identity", "cond_pass", &["c_inner_in"], &["c_inner_out"], vec![]),
        ],
        vec![i64_scalar("j"), bool_scalar("c_inner_in"), i64_scalar("k_inner_in")],
        vec![bool_scalar("c_inner_out"), i64_scalar("k_inner_out")],
    );
    let outer = body(
        vec![
            node("Loop", "inner", &["two", "", "k_in"], &["k_out"], vec![inner]),
            node("Identity", "cond_pass", &["c_in"], &["c_out"], vec![]),
        ],
        vec![i64_scalar("i"), bool_scalar("c_in"), i64_scalar("k_in")],
        vec![bool_scalar("c_out"), i64_scalar("k_out")],
    );
    model(
        vec![node("Loop", "outer", &["three", "", "k0"], &["k"], vec![outer])],
        vec![i64_scalar("k0")],
        vec![i64_scalar("k")],
        vec![i64_typed("two", &[], &[2]), i64_typed("three", &[], &[3])],
        17,
    )
}

#[test]
fn a_loop_inside_a_loop_body_is_a_nested_region_reading_the_outer_counter() {
    let g = match import_proto(&nested_loops(), None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let inner_loops: Vec<usize> = g
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Loop(regions) => Some(loops_in(&regions.body)),
            _ => None,
        })
        .collect();
    assert_eq!(inner_loops, vec![1]);
    let text = print_graph(&g);
    assert!(parse_verified(&text).is_ok(), "{text}");
    // k = 10 + sum over i < 3, j < 2 of (i + j) = 10 + 9.
    let out = run(&g, vec![Tensor::from_i64(DType::I64, vec![], vec![10])]);
    assert_eq!(out[0].to_i64_vec(), vec![19]);
}

fn error_of(m: &ModelProto) -> String {
    match import_proto(m, None, &ImportOptions::default()) {
        Ok(_) => panic!("the import unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

/// A Loop over `x: [2]` with trip count input `m`, whose body is `nodes` yielding
/// `(cond_out, s_out, extra...)`.
fn one_loop(
    nodes: Vec<NodeProto>,
    extra: &[&str],
    m: &str,
    initializers: Vec<tessera_frontend::onnx::proto::TensorProto>,
) -> ModelProto {
    let mut outputs = vec![bool_scalar("cond_out"), f32_value("s_out", &[])];
    outputs.extend(extra.iter().map(|e| f32_value(e, &[])));
    let loop_body = body(nodes, vec![i64_scalar("i"), bool_scalar("cond_in"), f32_value("s_in", &[D::N(2)])], outputs);
    let mut results = vec!["s"];
    results.extend(extra.iter().map(|_| "scanned"));
    model(
        vec![node("Loop", "loop", &[m, "", "x"], &results, vec![loop_body])],
        vec![f32_value("x", &[D::N(2)]), i64_scalar("m")],
        results.iter().map(|r| f32_value(r, &[])).collect(),
        initializers,
        17,
    )
}

#[test]
fn loop_refusals_are_named() {
    // The body decides when to stop and has a scan output: its length is decided by the data.
    let computed_cond = one_loop(
        vec![
            node("Add", "step", &["s_in", "s_in"], &["s_out"], vec![]),
            node("ReduceSum", "total", &["s_out"], &["t"], vec![attr_int("keepdims", 0)]),
            node("Less", "small", &["t", "limit"], &["cond_out"], vec![]),
            node("Identity", "row", &["s_out"], &["row"], vec![]),
        ],
        &["row"],
        "three",
        vec![i64_typed("three", &[], &[3]), onnx_support::f32_typed("limit", &[], &[100.0])],
    );
    assert_eq!(
        error_of(&computed_cond),
        "node 'loop' (Loop): unsupported: the Loop body computes its condition and has scan outputs, whose length is then decided by the data"
    );
    // A carried value that doubles in length every trip.
    let growing = one_loop(
        vec![
            node("Concat", "grow", &["s_in", "s_in"], &["s_out"], vec![attr_int("axis", 0)]),
            node("Identity", "pass", &["cond_in"], &["cond_out"], vec![]),
        ],
        &[],
        "m",
        vec![],
    );
    assert_eq!(
        error_of(&growing),
        "node 'loop' (Loop): unsupported: loop-carried value 0 enters the Loop body as tensor<2xf32> but leaves it as tensor<4xf32>: a carried value whose type changes from trip to trip"
    );
    // Scan outputs need the trip count before the loop: one computed at run time is asked for.
    let runtime_trips = one_loop(
        vec![
            node("Identity", "same", &["s_in"], &["s_out"], vec![]),
            node("Identity", "pass", &["cond_in"], &["cond_out"], vec![]),
            node("Identity", "row", &["s_in"], &["row"], vec![]),
        ],
        &["row"],
        "m",
        vec![],
    );
    let message = error_of(&runtime_trips);
    assert!(message.contains("'m'") && message.contains("trip count (of a Loop with scan outputs)"), "{message}");
}

#[test]
fn scan_8_is_refused_by_name() {
    let scan_body = body(
        vec![node("Add", "add", &["s_in", "x_row"], &["s_out"], vec![])],
        vec![f32_value("s_in", &[D::N(1), D::N(2)]), f32_value("x_row", &[D::N(1), D::N(2)])],
        vec![f32_value("s_out", &[D::N(1), D::N(2)])],
    );
    let m = model(
        vec![node("Scan", "scan", &["", "s0", "x"], &["s"], vec![scan_body, attr_int("num_scan_inputs", 1)])],
        vec![f32_value("s0", &[D::N(1), D::N(2)]), f32_value("x", &[D::N(1), D::N(3), D::N(2)])],
        vec![f32_value("s", &[D::N(1), D::N(2)])],
        vec![],
        8,
    );
    assert_eq!(
        error_of(&m),
        "node 'scan' (Scan): unsupported: Scan-8 (a batch axis and sequence_lens) is not imported; Scan from opset 9 on is"
    );
}
