//! ONNX `If` through the importer and the reference interpreter: a run-time condition becomes
//! `tsr.if` with the enclosing values it reads as operands, a condition known at import picks
//! its branch, a branch ill-typed for the imported shapes becomes a `tsr.trap`, a condition the
//! sizes decide is a run-time `tsr.if` (what follows it imported once per branch where the
//! branches' types differ by size), and nested branches import as nested regions.

mod onnx_support;

use onnx_support::{assert_close, attr_int, attr_ints, f32_raw, f32_value, i64_typed, model, node, run, value, D};
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

/// The printed form of `g` parses back to the same graph.
fn assert_text_round_trips(g: &Graph) {
    let text = tessera_ir::mlir::print_graph(g);
    let back = tessera_ir::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, g);
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

/// `y = (n == 4) ? x + x : -x` for `x: [b, n]`, the condition the sizes decide: `Shape`,
/// `Gather` and `Equal` of the symbolic `n` and 4, then an `If` whose branches keep `x`'s shape.
fn doubled_when_four_long(then_nodes: Vec<NodeProto>, then_yield: &str) -> tessera_frontend::onnx::proto::ModelProto {
    model(
        vec![
            node("Shape", "shape", &["x"], &["s"], vec![]),
            node("Gather", "n", &["s", "one"], &["n"], vec![attr_int("axis", 0)]),
            node("Equal", "is_four", &["n", "four"], &["c"], vec![]),
            if_node(
                "c",
                "y",
                branch(then_nodes, &[then_yield]),
                branch(vec![node("Neg", "neg", &["x"], &["e"], vec![])], &["e"]),
            ),
        ],
        vec![f32_value("x", &[D::P("b"), D::P("n")])],
        vec![f32_value("y", &[D::P("b"), D::P("n")])],
        vec![i64_typed("one", &[], &[1]), i64_typed("four", &[], &[4])],
        16,
    )
}

#[test]
fn a_condition_the_sizes_decide_is_a_run_time_if_when_both_branches_hold_for_every_size() {
    let g = import(&doubled_when_four_long(vec![node("Add", "add", &["x", "x"], &["t"], vec![])], "t"));
    assert_eq!(ifs(&g).len(), 1, "one tsr.if, not a branch picked at import");
    let x = |n: usize| Tensor::from_f64(DType::F32, vec![2, n], (0..2 * n).map(|i| i as f64).collect());
    let four = run(&g, vec![x(4)]);
    assert_close(&four[0], DType::F32, &[2, 4], &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0], 0.0);
    let three = run(&g, vec![x(3)]);
    assert_close(&three[0], DType::F32, &[2, 3], &[-0.0, -1.0, -2.0, -3.0, -4.0, -5.0], 0.0);
}

/// A then branch that holds for no size picking it (a `Squeeze` of the axis the condition says
/// is 4 long) makes what follows it a trap: the model imports with its sizes symbolic, runs the
/// other branch, and fails, naming why, only at the sizes that pick it (as ONNX would).
#[test]
fn a_branch_that_holds_for_no_size_picking_it_is_a_trap() {
    let mut m = doubled_when_four_long(vec![node("Squeeze", "squeeze", &["x", "axes"], &["t"], vec![])], "t");
    let graph = m.graph.as_mut().expect("a graph");
    graph.initializer.push(i64_typed("axes", &[1], &[1]));
    let g = import(&m);
    assert_eq!(ifs(&g).len(), 1, "one tsr.if on the size condition");
    let three = run(&g, vec![Tensor::from_f64(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    assert_close(&three[0], DType::F32, &[2, 3], &[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], 0.0);
    let named = vec![("x".to_string(), Tensor::from_f64(DType::F32, vec![1, 4], vec![1.0; 4]))];
    let message = tessera_runtime::interpreter::run(&g, &named).expect_err("the trap is taken").to_string();
    assert!(message.contains("the If branch taken cannot run for these shapes"), "{message}");
    assert!(message.contains("Squeeze"), "{message}");
}

/// torch's TorchScript exporter writes `squeeze(dim)` as an `If` on `size == 1` with a
/// `Squeeze` and an `Identity` branch (silero-vad): `x: [b, n]` is `[b]` after the then branch
/// and `[b, n]` after the else branch. What follows the `If` (here a sum over the last axis, a
/// sum of everything, and the rank) is imported once per branch, so one symbolic import runs
/// both: at `n = 1` the squeezed path (rank 1, the last-axis sum over `b`), else the other.
fn squeezed_when_one_long(
    outputs: Vec<tessera_frontend::onnx::proto::ValueInfoProto>,
    tail: Vec<NodeProto>,
) -> tessera_frontend::onnx::proto::ModelProto {
    let mut nodes = vec![
        node("Shape", "shape", &["x"], &["s"], vec![]),
        node("Gather", "n", &["s", "one"], &["n"], vec![attr_int("axis", 0)]),
        node("Equal", "is_one", &["n", "one"], &["c"], vec![]),
        if_node(
            "c",
            "y",
            branch(vec![node("Squeeze", "squeeze", &["x", "axes"], &["t"], vec![])], &["t"]),
            branch(vec![node("Identity", "keep", &["x"], &["e"], vec![])], &["e"]),
        ),
    ];
    nodes.extend(tail);
    model(
        nodes,
        vec![f32_value("x", &[D::P("b"), D::P("n")])],
        outputs,
        vec![i64_typed("one", &[], &[1]), i64_typed("axes", &[1], &[1]), i64_typed("last", &[1], &[-1])],
        16,
    )
}

#[test]
fn what_follows_an_if_whose_branches_differ_in_rank_by_size_is_imported_per_branch() {
    let mut m = squeezed_when_one_long(
        vec![f32_value("total", &[]), value("rank", DataType::Int64, &[]), f32_value("rows", &[D::P("b")])],
        vec![
            node("ReduceSum", "total", &["y"], &["total"], vec![attr_int("keepdims", 0)]),
            node("Shape", "y_shape", &["y"], &["ys"], vec![]),
            node("Size", "rank", &["ys"], &["rank"], vec![]),
            // [b] after the squeeze: its last axis is b, summed to a scalar, then spread back.
            node("ReduceSum", "rows", &["y", "last"], &["r"], vec![attr_int("keepdims", 0)]),
            node("Gather", "b", &["s", "zero"], &["b"], vec![attr_int("axis", 0)]),
            node("Unsqueeze", "b_shape", &["b", "zero_axis"], &["b_shape"], vec![]),
            node("Expand", "spread", &["r", "b_shape"], &["rows"], vec![]),
        ],
    );
    let graph = m.graph.as_mut().expect("a graph");
    graph.initializer.push(i64_typed("zero", &[], &[0]));
    graph.initializer.push(i64_typed("zero_axis", &[1], &[0]));
    let g = import(&m);
    assert_eq!(ifs(&g).len(), 1, "one tsr.if holding what follows each branch");
    assert!(g.inputs().iter().all(|&v| !g.value(v).ty.symbols().collect::<Vec<_>>().is_empty()), "symbolic inputs");

    // n = 1: squeezed to [2]; the last-axis sum adds the two rows' one element each.
    let one_long = run(&g, vec![Tensor::from_f64(DType::F32, vec![2, 1], vec![1.0, 2.0])]);
    assert_close(&one_long[0], DType::F32, &[], &[3.0], 0.0);
    assert_close(&one_long[1], DType::I64, &[], &[1.0], 0.0);
    assert_close(&one_long[2], DType::F32, &[2], &[3.0, 3.0], 0.0);
    // n = 3: kept as [2, 3]; the last-axis sum is per row.
    let three_long = run(&g, vec![Tensor::from_f64(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    assert_close(&three_long[0], DType::F32, &[], &[21.0], 0.0);
    assert_close(&three_long[1], DType::I64, &[], &[2.0], 0.0);
    assert_close(&three_long[2], DType::F32, &[2], &[6.0, 15.0], 0.0);

    assert_text_round_trips(&g);
}

/// Where the outputs' types still differ after what follows each branch, the `If` is refused,
/// naming its condition and the output.
#[test]
fn an_if_whose_followers_yield_different_types_by_size_is_refused_naming_the_output() {
    let m = squeezed_when_one_long(vec![f32_value("y", &[D::P("b"), D::P("n")])], vec![]);
    let message = import_proto(&m, None, &ImportOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("node 'if'"), "{message}");
    assert!(message.contains("the condition depends on the sizes (Eq of n and 1)"), "{message}");
    assert!(message.contains("output 'y' is tensor<?xf32"), "{message}");

    // The same model with `n` bound picks its branch at import and runs.
    let dims = [("n".to_string(), 3u64)].into_iter().collect();
    let bound = import_proto(&m, None, &ImportOptions { dims, ..Default::default() }).expect("the bound import");
    let out = run(&bound, vec![Tensor::from_f64(DType::F32, vec![1, 3], vec![1.0, 2.0, 3.0])]);
    assert_close(&out[0], DType::F32, &[1, 3], &[1.0, 2.0, 3.0], 0.0);
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
    assert_text_round_trips(&g);
}

/// A size an op's shape rule needs equal to 1, true for some sizes only (PP-OCRv4's recognizer
/// reshapes a height `floordiv(h + 15, 48)` away): `x: [1, 1, h]` max-pooled by 2 is
/// `[1, 1, floordiv(h, 2)]`, reshaped to `[1, 1, 1]` (which needs `floordiv(h, 2) = 1`) and
/// concatenated with the pooled map along axis 1 (which needs it again). One symbolic import
/// assumes it once, checked at run time: `h = 3` runs, `h = 5` is an error naming the reshape
/// and the size.
#[test]
fn a_size_a_shape_rule_needs_equal_to_one_is_assumed_once_and_checked_at_run_time() {
    let m = model(
        vec![
            node("MaxPool", "pool", &["x"], &["p"], vec![attr_ints("kernel_shape", &[2]), attr_ints("strides", &[2])]),
            node("Reshape", "flat", &["p", "unit_shape"], &["r"], vec![]),
            node("Neg", "negate", &["r"], &["n"], vec![]),
            node("Concat", "join", &["p", "n"], &["y"], vec![attr_int("axis", 1)]),
        ],
        vec![f32_value("x", &[D::N(1), D::N(1), D::P("h")])],
        vec![f32_value("y", &[D::N(1), D::N(2), D::N(1)])],
        vec![i64_typed("unit_shape", &[3], &[1, 1, 1])],
        13,
    );
    let g = import(&m);
    assert_eq!(ifs(&g).len(), 1, "one assumption, one run-time check: {}", tessera_ir::mlir::print_graph(&g));
    let out = run(&g, vec![Tensor::from_f64(DType::F32, vec![1, 1, 3], vec![5.0, 7.0, 2.0])]);
    assert_close(&out[0], DType::F32, &[1, 2, 1], &[7.0, -7.0], 0.0);

    let named = vec![("x".to_string(), Tensor::from_f64(DType::F32, vec![1, 1, 5], vec![1.0; 5]))];
    let message = match tessera_runtime::interpreter::run(&g, &named) {
        Ok(_) => panic!("h = 5 gives floordiv(h, 2) = 2 and must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("node 'flat'"), "{message}");
    assert!(message.contains("floordiv(h, 2) to be 1"), "{message}");

    assert_text_round_trips(&g);
}

/// A roll fixture below: `nodes` over `x: [1, 1, h]` yielding `output`, with the slice bounds
/// and shifts they read (`zero`, `one`, `minus_one`, `two`, `to_end`, the last axis `last_axis`).
fn roll_model(
    nodes: Vec<NodeProto>,
    output: tessera_frontend::onnx::proto::ValueInfoProto,
) -> tessera_frontend::onnx::proto::ModelProto {
    let bounds = [("zero", 0), ("one", 1), ("minus_one", -1), ("two", 2), ("to_end", i64::MAX), ("last_axis", 2)];
    let bounds = bounds.into_iter().map(|(name, v)| i64_typed(name, &[1], &[v])).collect();
    model(nodes, vec![f32_value("x", &[D::N(1), D::N(1), D::P("h")])], vec![output], bounds, 18)
}

/// `m` imported with exactly one size assumption, one run-time check.
fn import_with_one_check(m: &tessera_frontend::onnx::proto::ModelProto) -> Graph {
    let g = import(m);
    assert_eq!(ifs(&g).len(), 1, "one assumption, one run-time check: {}", tessera_ir::mlir::print_graph(&g));
    g
}

/// The error a run of `g` on `x` gives, which must fail.
fn run_error(g: &Graph, x: Tensor, why: &str) -> String {
    match tessera_runtime::interpreter::run(g, &[("x".to_string(), x)]) {
        Ok(_) => panic!("{why}"),
        Err(e) => e.to_string(),
    }
}

/// A size a slice needs to be at least its bounds, true for some sizes only (Swin's TorchScript
/// roll by -1 slices `[1:]` and `[0:1]` of `2 * floordiv(h + 4, 8)` rows): `x: [1, 1, h]`
/// trimmed to `x[..., 2:]` has `h - 2` columns, 0 at `h = 2`. The trimmed map rolled by -1 along
/// them imports once symbolically with `h - 2 >= 1` assumed (one run-time check, the `[0:1]`
/// slice a gather of index 0): `h = 5` gives the roll, `h = 2` an error naming the slice and the
/// size. (The `[1:]` slice is sized `h - 3` on the slice rule's own assumption that it fits; here
/// it follows the check, where at `h = 2` it would fail with a negative extent.)
#[test]
fn a_size_a_constant_slice_needs_at_least_its_end_is_assumed_and_checked_at_run_time() {
    let m = roll_model(
        vec![
            node("Slice", "trim", &["x", "two", "to_end", "last_axis"], &["p"], vec![]),
            node("Slice", "head", &["p", "zero", "one", "last_axis"], &["head_part"], vec![]),
            node("Slice", "tail", &["p", "one", "to_end", "last_axis"], &["tail_part"], vec![]),
            node("Concat", "roll", &["tail_part", "head_part"], &["y"], vec![attr_int("axis", 2)]),
        ],
        f32_value("y", &[D::N(1), D::N(1), D::P("columns")]),
    );
    let g = import_with_one_check(&m);
    let x = Tensor::from_f64(DType::F32, vec![1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let out = run(&g, vec![x]);
    assert_close(&out[0], DType::F32, &[1, 1, 3], &[4.0, 5.0, 3.0], 0.0);

    let message = run_error(&g, Tensor::from_f64(DType::F32, vec![1, 1, 2], vec![1.0; 2]), "h = 2 trims to 0 columns");
    assert!(message.contains("node 'head'"), "{message}");
    assert!(message.contains("h - 2 to be at least 1"), "{message}");

    assert_text_round_trips(&g);
}

/// Swin's dynamo roll: the shift is `1 mod n` of an even number of columns `n` (Swin's padded
/// rows are `2 * floordiv(h + 4, 8)`; here `x[..., 2:]` twice, `2 * (h - 2)`), 1 wherever `n` is
/// not 0; the roll is `[shift:n]` then `[0:shift]`, and the reverse roll shifts by `-1 mod n`
/// (`n - 1`). Both import with `n >= 2` assumed once, checked at run time: `h = 4` rolls left
/// then right (the input back, after the roll left), `h = 2` (`n = 0`) is an error naming the
/// modulo. A size that may be 1 is not assumed larger (`1 mod floordiv(h, 2)`): refused.
#[test]
fn a_constant_modulo_a_size_is_the_constant_where_the_size_is_assumed_larger() {
    let m = roll_model(
        vec![
            node("Slice", "trim", &["x", "two", "to_end", "last_axis"], &["trimmed"], vec![]),
            node("Concat", "twice", &["trimmed", "trimmed"], &["p"], vec![attr_int("axis", 2)]),
            node("Shape", "columns", &["p"], &["n"], vec![attr_int("start", 2), attr_int("end", 3)]),
            node("Mod", "shift", &["one", "n"], &["s"], vec![]),
            node("Slice", "after", &["p", "s", "n", "last_axis"], &["a"], vec![]),
            node("Slice", "before", &["p", "zero", "s", "last_axis"], &["b"], vec![]),
            node("Concat", "roll", &["a", "b"], &["left"], vec![attr_int("axis", 2)]),
            node("Mod", "back_shift", &["minus_one", "n"], &["t"], vec![]),
            node("Slice", "back_after", &["left", "t", "n", "last_axis"], &["c"], vec![]),
            node("Slice", "back_before", &["left", "zero", "t", "last_axis"], &["d"], vec![]),
            node("Concat", "unroll", &["c", "d"], &["y"], vec![attr_int("axis", 2)]),
            node("Concat", "both", &["left", "y"], &["z"], vec![attr_int("axis", 1)]),
        ],
        f32_value("z", &[D::N(1), D::N(2), D::P("columns")]),
    );
    let g = import_with_one_check(&m);
    let x = Tensor::from_f64(DType::F32, vec![1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
    let out = run(&g, vec![x]);
    assert_close(&out[0], DType::F32, &[1, 2, 4], &[4.0, 3.0, 4.0, 3.0, 3.0, 4.0, 3.0, 4.0], 0.0);

    let message = run_error(&g, Tensor::from_f64(DType::F32, vec![1, 1, 2], vec![1.0; 2]), "h = 2 leaves 0 columns");
    assert!(message.contains("node 'shift'"), "{message}");
    assert!(message.contains("2 * h - 4 to be at least 2"), "{message}");

    assert_text_round_trips(&g);

    // 1 mod a size that may be 1 is 0 or 1 by size: refused, not assumed.
    let mut odd = m.clone();
    if let Some(graph) = odd.graph.as_mut() {
        graph.node[1] = node(
            "MaxPool",
            "twice",
            &["trimmed"],
            &["p"],
            vec![attr_ints("kernel_shape", &[2]), attr_ints("strides", &[2])],
        );
    }
    let err = import_proto(&odd, None, &ImportOptions::default()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("node 'shift' (Mod): unsupported: the dimension 1 modulo floordiv(h, 2) - 1"), "{err}");
}

/// Size assumptions nest past the four size-decided `If`s whose followers import once per
/// branch (Swin-T's three shifting stages need six: a padded height and width each), since each
/// imports what follows once: `x[..., k:][..., 0:1]` for k = 2..7 assumes `h - k >= 1` for six
/// different sizes, six checks one inside the other. `h = 8` gives `x[2..8]`; `h = 7` fails the
/// innermost, naming `head7`.
#[test]
fn size_assumptions_nest_deeper_than_size_decided_ifs() {
    let shifts = 2..=7_i64;
    let mut nodes = Vec::new();
    let mut initializers = vec![i64_typed("zero", &[1], &[0]), i64_typed("one", &[1], &[1])];
    initializers.push(i64_typed("to_end", &[1], &[i64::MAX]));
    initializers.push(i64_typed("last_axis", &[1], &[2]));
    for k in shifts.clone() {
        let (start, trimmed, head) = (format!("k{k}"), format!("trimmed{k}"), format!("first{k}"));
        initializers.push(i64_typed(&start, &[1], &[k]));
        nodes.push(node("Slice", &format!("trim{k}"), &["x", &start, "to_end", "last_axis"], &[&trimmed], vec![]));
        nodes.push(node("Slice", &format!("head{k}"), &[&trimmed, "zero", "one", "last_axis"], &[&head], vec![]));
    }
    let heads: Vec<String> = shifts.clone().map(|k| format!("first{k}")).collect();
    let heads: Vec<&str> = heads.iter().map(String::as_str).collect();
    nodes.push(node("Concat", "gather_heads", &heads, &["y"], vec![attr_int("axis", 2)]));
    let m = model(
        nodes,
        vec![f32_value("x", &[D::N(1), D::N(1), D::P("h")])],
        vec![f32_value("y", &[D::N(1), D::N(1), D::N(6)])],
        initializers,
        18,
    );
    let g = import(&m);
    let mut depth = 0;
    let mut region = &g;
    while let Some(if_regions) = ifs(region).first().copied() {
        depth += 1;
        region = &if_regions.then_branch;
    }
    assert_eq!(depth, 6, "six nested checks: {}", tessera_ir::mlir::print_graph(&g));
    let xs: Vec<f64> = (0..8).map(f64::from).collect();
    let out = run(&g, vec![Tensor::from_f64(DType::F32, vec![1, 1, 8], xs)]);
    assert_close(&out[0], DType::F32, &[1, 1, 6], &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0.0);
    let message = run_error(&g, Tensor::from_f64(DType::F32, vec![1, 1, 7], vec![1.0; 7]), "h = 7 leaves head7 empty");
    assert!(message.contains("node 'head7'"), "{message}");
    assert!(message.contains("h - 7 to be at least 1"), "{message}");
    assert_text_round_trips(&g);
}
