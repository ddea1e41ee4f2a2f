//! What published models need beyond the conformance suite, each checked numerically on a
//! hand-built model: opsets 11 and 12 (paddle2onnx's PaddleOCR exports), exporters' spellings of
//! dynamic input dimensions, and tf2onnx's "to the end" slice sentinel (Magika).

mod onnx_support;

use onnx_support::{assert_close, attr_int, attr_ints, attr_tensor, f32_value, i64_typed, model, node, run, value, D};
use tessera_frontend::onnx::proto::tensor_proto::DataType;
use tessera_frontend::onnx::{import_proto, ImportOptions};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::testing::inputs::f32_tensor;
use tessera_ir::types::Dim;

fn import(m: &tessera_frontend::onnx::proto::ModelProto) -> Graph {
    match import_proto(m, None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

#[test]
fn opset_11_squeeze_unsqueeze_reduce_sum_and_split_take_attributes() {
    let m = model(
        vec![
            node("Unsqueeze", "u", &["x"], &["u"], vec![attr_ints("axes", &[0, 3])]),
            node("Squeeze", "s", &["u"], &["s"], vec![attr_ints("axes", &[0])]),
            node("ReduceSum", "r", &["x"], &["r"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)]),
            node("Split", "sp", &["x"], &["a", "b"], vec![attr_int("axis", 1), attr_ints("split", &[1, 2])]),
        ],
        vec![f32_value("x", &[D::N(2), D::N(3)])],
        vec![
            f32_value("s", &[D::N(2), D::N(3), D::N(1)]),
            f32_value("r", &[D::N(2)]),
            f32_value("a", &[D::N(2), D::N(1)]),
            f32_value("b", &[D::N(2), D::N(2)]),
        ],
        vec![],
        11,
    );
    let g = import(&m);
    let out = run(&g, vec![f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    // Only axis 0 of [1, 2, 3, 1] is squeezed: the attribute is honoured, not "every unit axis".
    assert_close(&out[0], DType::F32, &[2, 3, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.0);
    assert_close(&out[1], DType::F32, &[2], &[6.0, 15.0], 0.0);
    assert_close(&out[2], DType::F32, &[2, 1], &[1.0, 4.0], 0.0);
    assert_close(&out[3], DType::F32, &[2, 2], &[2.0, 3.0, 5.0, 6.0], 0.0);
}

#[test]
fn opset_12_softmax_family_normalizes_the_flattened_trailing_block() {
    // Before opset 13, axis = 1 on [1, 2, 2] means one softmax over all four values.
    let m = model(
        vec![
            node("Softmax", "sm", &["x"], &["p"], vec![]),
            node("LogSoftmax", "lsm", &["x"], &["l"], vec![attr_int("axis", 1)]),
            node("Hardmax", "hm", &["x"], &["h"], vec![]),
            node("Softmax", "last", &["x"], &["q"], vec![attr_int("axis", 2)]),
        ],
        vec![f32_value("x", &[D::N(1), D::N(2), D::N(2)])],
        vec![
            f32_value("p", &[D::N(1), D::N(2), D::N(2)]),
            f32_value("l", &[D::N(1), D::N(2), D::N(2)]),
            f32_value("h", &[D::N(1), D::N(2), D::N(2)]),
            f32_value("q", &[D::N(1), D::N(2), D::N(2)]),
        ],
        vec![],
        12,
    );
    let g = import(&m);
    let xs = [0.0, 1.0, 2.0, 3.0];
    let out = run(&g, vec![f32_tensor(&[1, 2, 2], &xs)]);
    let total: f64 = xs.iter().map(|x: &f64| x.exp()).sum();
    let p: Vec<f64> = xs.iter().map(|x| x.exp() / total).collect();
    assert_close(&out[0], DType::F32, &[1, 2, 2], &p, 1e-7);
    let l: Vec<f64> = xs.iter().map(|x| x - total.ln()).collect();
    assert_close(&out[1], DType::F32, &[1, 2, 2], &l, 1e-6);
    // The maximum of the whole block, not of each row.
    assert_close(&out[2], DType::F32, &[1, 2, 2], &[0.0, 0.0, 0.0, 1.0], 0.0);
    // On the last axis both readings agree: rows [0, 1] and [2, 3].
    let r = 1.0 / (1.0 + 1f64.exp());
    assert_close(&out[3], DType::F32, &[1, 2, 2], &[r, 1.0 - r, r, 1.0 - r], 1e-7);
}

#[test]
fn opset_13_softmax_keeps_one_axis() {
    let m = model(
        vec![node("Softmax", "sm", &["x"], &["p"], vec![attr_int("axis", 1)])],
        vec![f32_value("x", &[D::N(1), D::N(2), D::N(2)])],
        vec![f32_value("p", &[D::N(1), D::N(2), D::N(2)])],
        vec![],
        13,
    );
    let out = run(&import(&m), vec![f32_tensor(&[1, 2, 2], &[0.0, 1.0, 2.0, 3.0])]);
    // Columns [0, 2] and [1, 3] each normalize on their own.
    let r = 1.0 / (1.0 + 2f64.exp());
    assert_close(&out[0], DType::F32, &[1, 2, 2], &[r, r, 1.0 - r, 1.0 - r], 1e-7);
}

#[test]
fn negative_and_placeholder_dims_are_distinct_dynamic_dims() {
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        // As paddle2onnx declares images: dim_value -1 and dim_param "?" for dynamic sizes.
        vec![value("x", DataType::Float, &[D::N(-1), D::N(3), D::P("?"), D::P("?")])],
        vec![f32_value("y", &[D::N(-1), D::N(3), D::P("?"), D::P("?")])],
        vec![],
        11,
    );
    let g = import(&m);
    let x = g.inputs()[0];
    assert_eq!(
        g.value(x).ty.dims,
        vec![Dim::sym("x_dim0"), Dim::Static(3), Dim::sym("x_dim2"), Dim::sym("x_dim3")],
        "two '?' dims must not be tied together"
    );
    // A non-square image runs, which a shared '?' dimension would refuse.
    let xs: Vec<f64> = (0..6).map(|i| i as f64 - 2.0).collect();
    let out = run(&g, vec![f32_tensor(&[1, 3, 1, 2], &xs)]);
    assert_close(&out[0], DType::F32, &[1, 3, 1, 2], &[0.0, 0.0, 0.0, 1.0, 2.0, 3.0], 0.0);
}

#[test]
fn tf2onnx_slice_end_sentinel_keeps_a_symbolic_dim_whole() {
    // Magika's strided_slice: starts 0, ends 1e9 on every axis, the first one symbolic.
    let m = model(
        vec![node("Slice", "s", &["x", "starts", "ends", "axes"], &["y"], vec![])],
        vec![f32_value("x", &[D::P("batch"), D::N(3)])],
        vec![f32_value("y", &[D::P("batch"), D::N(2)])],
        vec![
            i64_typed("starts", &[2], &[0, 1]),
            i64_typed("ends", &[2], &[1_000_000_000, 1_000_000_000]),
            i64_typed("axes", &[2], &[0, 1]),
        ],
        15,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::sym("batch"), Dim::Static(2)]);
    let out = run(&g, vec![f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    assert_close(&out[0], DType::F32, &[2, 2], &[2.0, 3.0, 5.0, 6.0], 0.0);
    // A smaller end could cut the dimension short: still refused.
    let mut short = m.clone();
    if let Some(g) = short.graph.as_mut() {
        g.initializer[1] = i64_typed("ends", &[2], &[1000, 1_000_000_000]);
    }
    let err = import_proto(&short, None, &ImportOptions::default()).err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("node 's' (Slice): unsupported: cannot slice symbolic dimension batch as [0:1000:1] without knowing its size"));
}

#[test]
fn torchscript_pad_by_sizes_reorders_its_pads_and_still_imports_symbolically() {
    // torch's `F.pad(x, (0, (2 - w % 2) % 2))` as the TorchScript exporter writes it (Swin's pad
    // to whole windows): the pads are computed from the shape, padded with zeros to 2 x rank,
    // turned into (begin, end) rows, reversed, transposed and flattened to ONNX's order.
    let scalar = |name: &str, v: i64| i64_typed(name, &[], &[v]);
    let m = model(
        vec![
            node("Shape", "shape", &["x"], &["s"], vec![]),
            node("Gather", "width", &["s", "two"], &["w"], vec![attr_int("axis", 0)]),
            node("Mod", "mod", &["w", "window"], &["m"], vec![]),
            node("Sub", "sub", &["window", "m"], &["d"], vec![]),
            node("Mod", "mod2", &["d", "window"], &["p"], vec![]),
            node("Unsqueeze", "unsqueeze", &["p", "axis0"], &["pu"], vec![]),
            node("Concat", "torch_pads", &["zero", "pu"], &["tp"], vec![attr_int("axis", 0)]),
            node("Cast", "cast", &["tp"], &["tpc"], vec![attr_int("to", 7)]),
            node(
                "ConstantOfShape",
                "fill",
                &["missing"],
                &["zeros"],
                vec![attr_tensor("value", i64_typed("v", &[1], &[0]))],
            ),
            node("Concat", "all", &["tpc", "zeros"], &["all"], vec![attr_int("axis", 0)]),
            node("Reshape", "rows", &["all", "row_shape"], &["rows"], vec![]),
            node("Slice", "reverse", &["rows", "minus_one", "to_front", "axis0", "minus_one"], &["rev"], vec![]),
            node("Transpose", "transpose", &["rev"], &["t"], vec![attr_ints("perm", &[1, 0])]),
            node("Reshape", "flat", &["t", "minus_one"], &["f"], vec![]),
            node("Cast", "cast2", &["f"], &["pads"], vec![attr_int("to", 7)]),
            node("Pad", "pad", &["x", "pads"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::N(1), D::N(2), D::P("w")])],
        vec![f32_value("y", &[D::N(1), D::N(2), D::P("padded")])],
        vec![
            scalar("two", 2),
            scalar("window", 2),
            i64_typed("axis0", &[1], &[0]),
            i64_typed("zero", &[1], &[0]),
            i64_typed("missing", &[1], &[4]),
            i64_typed("row_shape", &[2], &[-1, 2]),
            i64_typed("minus_one", &[1], &[-1]),
            i64_typed("to_front", &[1], &[-i64::MAX]),
        ],
        13,
    );
    let g = import(&m);
    assert!(g.value(g.inputs()[0]).ty.dims[2] == Dim::sym("w"), "imported symbolically");
    // An odd width gains one zero column; an even one none (an empty block).
    let out = run(&g, vec![f32_tensor(&[1, 2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    assert_close(&out[0], DType::F32, &[1, 2, 4], &[1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0], 0.0);
    let out = run(&g, vec![f32_tensor(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0])]);
    assert_close(&out[0], DType::F32, &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0], 0.0);
}
