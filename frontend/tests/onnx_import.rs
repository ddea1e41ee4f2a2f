//! ONNX import checked numerically: hand-built models go through the importer and the reference
//! interpreter, and the outputs are compared with values computed by hand.

mod onnx_support;

use onnx_support::{
    assert_close, attr_float, attr_int, attr_ints, attr_str, f32_raw, f32_typed, f32_value, i64_typed, mlp_model,
    model, node, run, value, D,
};
use prost::Message;
use tessera_frontend::onnx::proto::tensor_proto::{DataLocation, DataType};
use tessera_frontend::onnx::proto::{StringStringEntryProto, TensorProto};
use tessera_frontend::onnx::{import_bytes, import_model, import_proto, ImportOptions};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;
use tessera_ir::testing::inputs::f32_tensor;
use tessera_ir::types::Dim;

fn import(m: &tessera_frontend::onnx::proto::ModelProto) -> Graph {
    match import_proto(m, None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn count_ops(g: &Graph, mnemonic: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.mnemonic() == mnemonic).count()
}

#[test]
fn mlp_with_a_broadcast_bias_matches_hand_computed_values() {
    let g = import(&mlp_model());
    let x = g.inputs()[0];
    assert_eq!(g.value(x).name, "x");
    assert_eq!(g.value(x).ty.dims, vec![Dim::sym("batch"), Dim::Static(3)]);
    assert_eq!(g.value(g.outputs()[0]).name, "y");
    // The bias [2] is broadcast explicitly to [batch, 2] before the add.
    assert_eq!(count_ops(&g, "broadcast"), 1);
    assert_eq!(count_ops(&g, "constant"), 2);
    // x @ W = [[4, -1], [0, -1]]; + B = [[4.5, -1.5], [0.5, -1.5]]; relu.
    let y = run(&g, vec![f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0])]);
    assert_close(&y[0], DType::F32, &[2, 2], &[4.5, 0.0, 0.5, 0.0], 0.0);
}

#[test]
fn bytes_and_proto_imports_agree() {
    let m = mlp_model();
    let from_bytes = import_bytes(&m.encode_to_vec(), None).map_err(|e| e.to_string());
    assert_eq!(from_bytes, Ok(import(&m)));
}

#[test]
fn gemm_softmax_and_layer_norm() {
    let m = model(
        vec![
            node("Gemm", "gemm", &["a", "b", "c"], &["g"], vec![attr_int("transB", 1), attr_float("alpha", 0.5)]),
            node("Softmax", "sm", &["s"], &["p"], vec![attr_int("axis", -1)]),
            node("LayerNormalization", "ln", &["l", "scale", "bias"], &["n"], vec![attr_float("epsilon", 0.0)]),
        ],
        vec![
            f32_value("a", &[D::N(2), D::N(2)]),
            f32_value("s", &[D::N(1), D::N(2)]),
            f32_value("l", &[D::N(1), D::N(4)]),
        ],
        vec![
            f32_value("g", &[D::N(2), D::N(2)]),
            f32_value("p", &[D::N(1), D::N(2)]),
            f32_value("n", &[D::N(1), D::N(4)]),
        ],
        vec![
            f32_raw("b", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            f32_typed("c", &[2], &[10.0, 20.0]),
            f32_typed("scale", &[4], &[1.0, 1.0, 2.0, 2.0]),
            f32_typed("bias", &[4], &[0.0, 0.0, 0.0, 1.0]),
        ],
        17,
    );
    let g = import(&m);
    // The exact-shape scale and bias let LayerNormalization map to tsr.layer_norm.
    assert_eq!(count_ops(&g, "layer_norm"), 1);
    let out = run(
        &g,
        vec![
            f32_tensor(&[2, 2], &[1.0, 0.0, 0.0, 1.0]),
            f32_tensor(&[1, 2], &[0.0, 3f64.ln()]),
            f32_tensor(&[1, 4], &[1.0, 2.0, 3.0, 4.0]),
        ],
    );
    // a @ b^T = [[1, 3], [2, 4]]; * 0.5 + c = [[10.5, 21.5], [11, 22]].
    assert_close(&out[0], DType::F32, &[2, 2], &[10.5, 21.5, 11.0, 22.0], 0.0);
    // softmax([0, ln 3]) = [1/4, 3/4].
    assert_close(&out[1], DType::F32, &[1, 2], &[0.25, 0.75], 1e-6);
    // mean 2.5, variance 1.25: (x - 2.5) / sqrt(1.25) * scale + bias.
    let r = 1.25f64.sqrt();
    let expected = [-1.5 / r, -0.5 / r, 2.0 * 0.5 / r, 2.0 * 1.5 / r + 1.0];
    assert_close(&out[2], DType::F32, &[1, 4], &expected, 1e-5);
}

/// Celu in bf16 is its formula rounded once (onnx's reference: `2 * expm1(x / 2)` in f32, then
/// bf16). Rounding `exp(-0.25)` to bf16 before `- 1`, as a bf16 decomposition would, gives
/// -0.4453125 for x = -0.5 instead of -0.443359375.
#[test]
fn celu_in_bf16_rounds_its_formula_once() {
    let m = model(
        vec![node("Celu", "celu", &["x"], &["y"], vec![attr_float("alpha", 2.0)])],
        vec![value("x", DataType::Bfloat16, &[D::N(5)])],
        vec![value("y", DataType::Bfloat16, &[D::N(5)])],
        vec![],
        17,
    );
    let x = tessera_ir::tensor::Tensor::from_f64(DType::BF16, vec![5], vec![-3.0, -0.5, 0.0, 0.5, 3.0]);
    let y = run(&import(&m), vec![x]);
    assert_close(&y[0], DType::BF16, &[5], &[-1.5546875, -0.443359375, 0.0, 0.5, 3.0], 0.0);
}

/// Softmax in f16 is the steps of its Softmax-13 function body, each rounded to f16 (as onnx's
/// reference and its `_expanded` tests compute it). The one-op softmax, the exact quotient rounded
/// once, would give [0.7119140625, 0.16357421875, 0.065185546875, 0.0595703125] here.
#[test]
fn softmax_in_f16_rounds_each_step_of_its_function_body() {
    let m = model(
        vec![node("Softmax", "sm", &["x"], &["y"], vec![attr_int("axis", -1)])],
        vec![value("x", DataType::Float16, &[D::N(1), D::N(4)])],
        vec![value("y", DataType::Float16, &[D::N(1), D::N(4)])],
        vec![],
        17,
    );
    let x = tessera_ir::tensor::Tensor::from_f64(
        DType::F16,
        vec![1, 4],
        vec![2.55078125, 1.080078125, 0.1600341796875, 0.07000732421875],
    );
    let y = run(&import(&m), vec![x]);
    let steps = [0.71142578125, 0.1634521484375, 0.06512451171875, 0.059539794921875];
    assert_close(&y[0], DType::F16, &[1, 4], &steps, 0.0);
}

/// A strided convolution over symbolic height and width, then exporter-style shape arithmetic on
/// its result (`Shape`, `Gather`, `Mul`, `Div`, `Concat`) flattening it: the types are
/// expressions, the arithmetic folds at import, and the values match at two input sizes.
#[test]
fn symbolic_convolution_and_shape_arithmetic() {
    let m = model(
        vec![
            node(
                "Conv",
                "conv",
                &["x", "w"],
                &["c"],
                vec![attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])],
            ),
            node("Shape", "shape", &["c"], &["s"], vec![]),
            node("Gather", "hw", &["s", "hw_idx"], &["hw"], vec![attr_int("axis", 0)]),
            node("Gather", "h", &["hw", "zero"], &["h"], vec![attr_int("axis", 0)]),
            node("Gather", "w", &["hw", "one"], &["w2"], vec![attr_int("axis", 0)]),
            node("Mul", "area", &["h", "w2"], &["area"], vec![]),
            node("Mul", "double", &["area", "two"], &["two_area"], vec![]),
            node("Div", "half", &["two_area", "two"], &["area_again"], vec![]),
            node("Unsqueeze", "unsq", &["area_again", "axes"], &["area1"], vec![]),
            node("Concat", "cat", &["batch_keep", "area1"], &["target"], vec![attr_int("axis", 0)]),
            node("Reshape", "reshape", &["c", "target"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("batch"), D::N(1), D::P("h"), D::P("w")])],
        vec![f32_value("y", &[D::P("batch"), D::P("hw")])],
        vec![
            f32_typed("w", &[1, 1, 3, 3], &[1.0; 9]),
            i64_typed("hw_idx", &[2], &[2, 3]),
            i64_typed("zero", &[], &[0]),
            i64_typed("one", &[], &[1]),
            i64_typed("two", &[], &[2]),
            i64_typed("axes", &[1], &[0]),
            i64_typed("batch_keep", &[1], &[0]),
        ],
        17,
    );
    let g = import(&m);
    let y = g.value(g.outputs()[0]).ty.to_string();
    assert_eq!(y, r#"tensor<?x?xf32, ["batch", "floordiv(h + 1, 2) * floordiv(w + 1, 2)"]>"#);
    // A 3x3 box filter with stride 2 and padding 1 over ones counts the window's in-bounds cells.
    let out = run(&g, vec![f32_tensor(&[1, 1, 3, 3], &[1.0; 9])]);
    assert_close(&out[0], DType::F32, &[1, 4], &[4.0, 4.0, 4.0, 4.0], 0.0);
    let out = run(&g, vec![f32_tensor(&[2, 1, 2, 5], &[1.0; 20])]);
    assert_close(&out[0], DType::F32, &[2, 3], &[4.0, 6.0, 4.0, 4.0, 6.0, 4.0], 0.0);
}

#[test]
fn symbolic_reshape_through_shape_arithmetic() {
    // y = reshape(x, concat(unsqueeze(shape(x)[0]), [24])), as exporters write a flatten.
    let m = model(
        vec![
            node("Shape", "shape", &["x"], &["s"], vec![]),
            node("Gather", "first", &["s", "zero"], &["b"], vec![attr_int("axis", 0)]),
            node("Unsqueeze", "unsq", &["b", "axes"], &["b1"], vec![]),
            node("Concat", "cat", &["b1", "rest"], &["target"], vec![attr_int("axis", 0)]),
            node("Reshape", "reshape", &["x", "target"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("batch"), D::N(4), D::N(6)])],
        vec![f32_value("y", &[D::P("batch"), D::N(24)])],
        vec![i64_typed("zero", &[], &[0]), i64_typed("axes", &[1], &[0]), i64_typed("rest", &[1], &[24])],
        17,
    );
    let g = import(&m);
    let y = g.outputs()[0];
    assert_eq!(g.value(y).ty.dims, vec![Dim::sym("batch"), Dim::Static(24)]);
    // The shape arithmetic happened at import time: one reshape is all that is left.
    assert_eq!(g.num_nodes(), 1);
    assert!(matches!(g.node(tessera_ir::graph::NodeId(0)).op, Op::Reshape { .. }));
    let values: Vec<f64> = (0..48).map(f64::from).collect();
    let out = run(&g, vec![f32_tensor(&[2, 4, 6], &values)]);
    assert_close(&out[0], DType::F32, &[2, 24], &values, 0.0);
}

#[test]
fn reshape_zero_and_minus_one_follow_onnx() {
    let m = model(
        vec![node("Reshape", "r", &["x", "shape"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2), D::N(3), D::N(4)])],
        vec![f32_value("y", &[D::N(2), D::N(12)])],
        vec![i64_typed("shape", &[2], &[0, -1])],
        14,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::Static(2), Dim::Static(12)]);
}

#[test]
fn conv_batch_norm_and_pooling() {
    let m = model(
        vec![
            node("Conv", "conv", &["x", "w", "cb"], &["c"], vec![attr_ints("kernel_shape", &[2, 2])]),
            node(
                "BatchNormalization",
                "bn",
                &["c", "scale", "bias", "mean", "var"],
                &["n"],
                vec![attr_float("epsilon", 1.0)],
            ),
            node("MaxPool", "mp", &["n"], &["m"], vec![attr_ints("kernel_shape", &[2, 2])]),
            node("GlobalAveragePool", "gap", &["n"], &["a"], vec![]),
        ],
        vec![f32_value("x", &[D::N(1), D::N(1), D::N(3), D::N(3)])],
        vec![
            f32_value("m", &[D::N(1), D::N(1), D::N(1), D::N(1)]),
            f32_value("a", &[D::N(1), D::N(1), D::N(1), D::N(1)]),
        ],
        vec![
            f32_raw("w", &[1, 1, 2, 2], &[1.0; 4]),
            f32_typed("cb", &[1], &[1.0]),
            f32_typed("scale", &[1], &[2.0]),
            f32_typed("bias", &[1], &[1.0]),
            f32_typed("mean", &[1], &[1.0]),
            f32_typed("var", &[1], &[0.0]),
        ],
        15,
    );
    let g = import(&m);
    // Batch norm folds into one multiply and one add by constants.
    assert_eq!(count_ops(&g, "mul"), 1);
    assert_eq!(count_ops(&g, "add"), 2);
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let out = run(&g, vec![f32_tensor(&[1, 1, 3, 3], &x)]);
    // 2x2 window sums 12, 16, 24, 28, + 1 = 13, 17, 25, 29; bn: (v - 1) / 1 * 2 + 1 = 2v - 1.
    assert_close(&out[0], DType::F32, &[1, 1, 1, 1], &[57.0], 0.0);
    assert_close(&out[1], DType::F32, &[1, 1, 1, 1], &[(25.0 + 33.0 + 49.0 + 57.0) / 4.0], 0.0);
}

/// A batch norm and a hard-swish after a convolution keep their constants at the size of the
/// channels (or a scalar), broadcast to the activation's shape by `tsr.broadcast`: none is
/// folded into a constant the size of the activation (which every kernel would then read).
/// The values still follow the formula.
#[test]
fn per_channel_and_scalar_constants_stay_broadcasts_of_their_own_size() {
    let (channels, side) = (3usize, 8usize);
    let plane = side * side;
    let m = model(
        vec![
            node("Conv", "conv", &["x", "w"], &["c"], vec![attr_ints("kernel_shape", &[1, 1])]),
            node("BatchNormalization", "bn", &["c", "scale", "bias", "mean", "var"], &["n"], vec![]),
            node("HardSwish", "hs", &["n"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::N(1), D::N(1), D::N(side as i64), D::N(side as i64)])],
        vec![f32_value("y", &[D::N(1), D::N(channels as i64), D::N(side as i64), D::N(side as i64)])],
        vec![
            f32_raw("w", &[channels, 1, 1, 1], &[1.0, -2.0, 0.5]),
            f32_typed("scale", &[3], &[2.0, 1.0, 4.0]),
            f32_typed("bias", &[3], &[1.0, 0.0, -1.0]),
            f32_typed("mean", &[3], &[0.5, -1.0, 0.0]),
            f32_typed("var", &[3], &[1.0, 4.0, 0.25]),
        ],
        15,
    );
    let g = import(&m);
    let largest_constant = g
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Constant(t) => Some(t.len()),
            _ => None,
        })
        .max();
    assert_eq!(largest_constant, Some(channels), "a constant was folded at the activation's size");
    assert!(count_ops(&g, "broadcast") >= 2, "the scale and shift are broadcast at run time");
    let x: Vec<f64> = (0..plane).map(|i| i as f64 * 0.1 - 3.0).collect();
    let out = run(&g, vec![f32_tensor(&[1, 1, side, side], &x)]);
    let (w, scale, bias, mean, var) =
        ([1.0, -2.0, 0.5], [2.0, 1.0, 4.0], [1.0, 0.0, -1.0], [0.5, -1.0, 0.0], [1.0, 4.0, 0.25]);
    let want: Vec<f64> = (0..channels * plane)
        .map(|i| {
            let (c, p) = (i / plane, i % plane);
            let n = (x[p] * w[c] - mean[c]) / (var[c] + 1e-5f64).sqrt() * scale[c] + bias[c];
            n * (n + 3.0).clamp(0.0, 6.0) / 6.0
        })
        .collect();
    assert_close(&out[0], DType::F32, &[1, channels, side, side], &want, 1e-4);
}

#[test]
fn split_slice_gather_transpose_concat() {
    let m = model(
        vec![
            node("Split", "split", &["x"], &["p", "q"], vec![attr_int("axis", 1)]),
            node("Slice", "slice", &["x", "starts", "ends", "axes", "steps"], &["s"], vec![]),
            node("Gather", "gather", &["x", "idx"], &["gt"], vec![attr_int("axis", 1)]),
            node("Transpose", "t", &["q"], &["qt"], vec![]),
            node("Concat", "cat", &["p", "q"], &["c"], vec![attr_int("axis", 0)]),
        ],
        vec![f32_value("x", &[D::N(2), D::N(4)])],
        vec![
            f32_value("s", &[D::N(2), D::N(2)]),
            f32_value("gt", &[D::N(2), D::N(2)]),
            f32_value("qt", &[D::N(2), D::N(2)]),
            f32_value("c", &[D::N(4), D::N(2)]),
        ],
        vec![
            i64_typed("starts", &[1], &[-1]),
            i64_typed("ends", &[1], &[i64::MIN]),
            i64_typed("axes", &[1], &[1]),
            i64_typed("steps", &[1], &[-2]),
            i64_typed("idx", &[2], &[-1, 0]),
        ],
        18,
    );
    let g = import(&m);
    let out = run(&g, vec![f32_tensor(&[2, 4], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])]);
    assert_close(&out[0], DType::F32, &[2, 2], &[3.0, 1.0, 7.0, 5.0], 0.0);
    assert_close(&out[1], DType::F32, &[2, 2], &[3.0, 0.0, 7.0, 4.0], 0.0);
    assert_close(&out[2], DType::F32, &[2, 2], &[2.0, 6.0, 3.0, 7.0], 0.0);
    assert_close(&out[3], DType::F32, &[4, 2], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0], 0.0);
}

#[test]
fn reduce_axes_follow_the_opset() {
    // Opset 17: ReduceMean's axes are an attribute; ReduceSum's are an input (since 13).
    let m = model(
        vec![
            node("ReduceMean", "mean", &["x"], &["m"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)]),
            node("ReduceSum", "sum", &["x", "axes"], &["s"], vec![]),
        ],
        vec![f32_value("x", &[D::N(2), D::N(3)])],
        vec![f32_value("m", &[D::N(2)]), f32_value("s", &[D::N(1), D::N(3)])],
        vec![i64_typed("axes", &[1], &[0])],
        17,
    );
    let g = import(&m);
    let out = run(&g, vec![f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
    assert_close(&out[0], DType::F32, &[2], &[2.0, 5.0], 0.0);
    assert_close(&out[1], DType::F32, &[1, 3], &[5.0, 7.0, 9.0], 0.0);
}

#[test]
fn integer_and_boolean_ops_keep_their_types() {
    let m = model(
        vec![
            node("Mod", "mod", &["a", "b"], &["r"], vec![]),
            node("Less", "lt", &["a", "b"], &["l"], vec![]),
            node("Where", "w", &["l", "a", "b"], &["w"], vec![]),
            node("Cast", "c", &["w"], &["f"], vec![attr_int("to", DataType::Float as i64)]),
        ],
        vec![value("a", DataType::Int64, &[D::N(4)]), value("b", DataType::Int64, &[D::N(4)])],
        vec![
            value("r", DataType::Int64, &[D::N(4)]),
            value("l", DataType::Bool, &[D::N(4)]),
            f32_value("f", &[D::N(4)]),
        ],
        vec![],
        13,
    );
    let g = import(&m);
    let a = tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![4], vec![7, -7, 7, -7]);
    let b = tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![4], vec![3, 3, -3, -3]);
    let out = run(&g, vec![a, b]);
    // Python-style modulo: the remainder takes the divisor's sign.
    assert_eq!(out[0].to_i64_vec(), [1, 2, -2, -1]);
    assert_eq!((out[1].dtype, out[1].to_i64_vec()), (DType::Bool, vec![0, 1, 0, 1]));
    assert_close(&out[2], DType::F32, &[4], &[3.0, -7.0, -3.0, -7.0], 0.0);
}

#[test]
fn external_data_is_read_relative_to_the_model() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    // Eight bytes of padding, then W = [[1, 0], [0, 1], [1, -1]] as little-endian f32.
    let mut blob = vec![0xAAu8; 8];
    for v in [1.0f32, 0.0, 0.0, 1.0, 1.0, -1.0] {
        blob.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::create_dir_all(dir.path().join("weights")).ok();
    std::fs::write(dir.path().join("weights/w.bin"), &blob).ok();
    let mut m = mlp_model();
    let graph = m.graph.as_mut().map(|g| &mut g.initializer[0]);
    let Some(w) = graph else { panic!("model has no graph") };
    w.raw_data = None;
    w.data_location = Some(DataLocation::External as i32);
    let kv = |k: &str, v: &str| StringStringEntryProto { key: Some(k.into()), value: Some(v.into()) };
    w.external_data = vec![kv("location", "weights/w.bin"), kv("offset", "8"), kv("length", "24")];
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).ok();
    let g = match import_model(&path) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    };
    let y = run(&g, vec![f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0])]);
    assert_close(&y[0], DType::F32, &[2, 2], &[4.5, 0.0, 0.5, 0.0], 0.0);
}

#[test]
fn bound_inputs_become_constants() {
    let m = model(
        vec![node("Reshape", "r", &["x", "shape"], &["y"], vec![])],
        vec![f32_value("x", &[D::N(2), D::N(3)]), value("shape", DataType::Int64, &[D::N(1)])],
        vec![f32_value("y", &[D::N(6)])],
        vec![],
        14,
    );
    let err = import_proto(&m, None, &ImportOptions::default()).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("node 'r' (Reshape): unsupported: input 'shape' ('shape') must be a constant (known at import time)")
    );
    let shape = tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![1], vec![6]);
    let options = ImportOptions { constants: vec![("shape".into(), shape)], ..ImportOptions::default() };
    let g = match import_proto(&m, None, &options) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(g.inputs().len(), 1);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::Static(6)]);
}

/// For planning, float initializers are the model's parameters: inputs of their declared type
/// whose payload is never read; the model computes the same from them as from the constants.
#[test]
fn initializers_as_parameters_are_inputs_that_compute_the_same() {
    use tessera_frontend::onnx::Initializers;
    use tessera_ir::graph::InputRole;
    let options = ImportOptions { initializers: Initializers::Parameters, ..ImportOptions::default() };
    let g = match import_proto(&mlp_model(), None, &options) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let described: Vec<(String, Option<InputRole>, Vec<Dim>)> =
        g.inputs().iter().map(|&v| (g.value(v).name.clone(), g.input_role(v), g.value(v).ty.dims.clone())).collect();
    assert_eq!(
        described,
        vec![
            ("W".to_string(), Some(InputRole::Parameter), vec![Dim::Static(3), Dim::Static(2)]),
            ("B".to_string(), Some(InputRole::Parameter), vec![Dim::Static(2)]),
            ("x".to_string(), Some(InputRole::Activation), vec![Dim::sym("batch"), Dim::Static(3)]),
        ]
    );
    assert_eq!(count_ops(&g, "constant"), 0);
    let w = f32_tensor(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, -1.0]);
    let b = f32_tensor(&[2], &[0.5, -0.5]);
    let y = run(&g, vec![w, b, f32_tensor(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0])]);
    assert_close(&y[0], DType::F32, &[2, 2], &[4.5, 0.0, 0.5, 0.0], 0.0);

    // The payload is not read: a weight whose bytes do not match its shape plans, and is
    // refused when imported to run.
    let mut truncated = mlp_model();
    let graph = truncated.graph.as_mut().expect("graph");
    graph.initializer[0].raw_data = Some(vec![0u8; 3].into());
    assert!(import_proto(&truncated, None, &options).is_ok());
    let refused = import_proto(&truncated, None, &ImportOptions::default()).err().map(|e| e.to_string());
    assert!(refused.is_some_and(|e| e.contains("holds 3 bytes")));
}

/// A tied weight that the exporter wrote twice, once transposed (`torch.onnx.export` of GPT-2:
/// the token table `[vocab, hidden]` and the head's `[hidden, vocab]` copy), is one parameter
/// when planning: the copy reads it through a transpose. A matrix of the swapped shape that
/// differs in one element stays a parameter of its own. The model computes what its constants do.
#[test]
fn a_transposed_copy_of_an_initializer_is_the_same_parameter() {
    let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
    // Row-major [4, 3] `E` and its transpose [3, 4]; `U` is the transpose but for one element.
    let transposed: Vec<f32> = (0..3).flat_map(|c| (0..4).map(move |r| table[r * 3 + c] as f32)).collect();
    let mut almost = transposed.clone();
    almost[5] += 0.5;
    let m = model(
        vec![
            node("Gather", "embed", &["E", "ids"], &["h"], vec![]),
            node("MatMul", "head", &["h", "ET"], &["logits"], vec![]),
            node("MatMul", "other", &["h", "U"], &["other_logits"], vec![]),
        ],
        vec![value("ids", DataType::Int64, &[D::P("batch")])],
        vec![f32_value("logits", &[D::P("batch"), D::N(4)]), f32_value("other_logits", &[D::P("batch"), D::N(4)])],
        vec![f32_raw("E", &[4, 3], &table), f32_typed("ET", &[3, 4], &transposed), f32_typed("U", &[3, 4], &almost)],
        17,
    );
    a_transposed_copy_is_tied(&m, &table, &almost);
    // In `raw_data` (as exporters write large weights) the pair is first compared at a few
    // places without decoding; `almost` differs at element 5, which both diagonals probe.
    let mut raw = m.clone();
    let graph = raw.graph.as_mut().expect("the model has a graph");
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    graph.initializer[1] = f32_raw("ET", &[3, 4], &wide(&transposed));
    graph.initializer[2] = f32_raw("U", &[3, 4], &wide(&almost));
    a_transposed_copy_is_tied(&raw, &table, &almost);
}

/// `m` (from the test above) imported for planning: `ET` reads `E` through a transpose, `U`
/// is a parameter of its own, and the model computes what its constants do.
fn a_transposed_copy_is_tied(m: &tessera_frontend::onnx::proto::ModelProto, table: &[f64], almost: &[f32]) {
    use tessera_frontend::onnx::Initializers;
    use tessera_ir::graph::InputRole;
    let options = ImportOptions { initializers: Initializers::Parameters, ..ImportOptions::default() };
    let g = match import_proto(m, None, &options) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let parameters: Vec<String> = g
        .inputs()
        .iter()
        .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
        .map(|&v| g.value(v).name.clone())
        .collect();
    assert_eq!(parameters, vec!["E".to_string(), "U".to_string()]);
    assert_eq!(count_ops(&g, "transpose"), 1);
    let ids = tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![2], vec![3, 1]);
    let e = f32_tensor(&[4, 3], table);
    let u = f32_tensor(&[3, 4], &almost.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>());
    let planned = run(&g, vec![e, u, ids.clone()]);
    let constants = match import_proto(m, None, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let expected = run(&constants, vec![ids]);
    assert_eq!(planned, expected);
    // h = rows 3 and 1 of E; logits = h E^T.
    let dot = |a: usize, b: usize| (0..3).map(|c| table[a * 3 + c] * table[b * 3 + c]).sum::<f64>();
    let want: Vec<f64> = [3, 1].iter().flat_map(|&a| (0..4).map(move |b| dot(a, b))).collect();
    assert_close(&planned[0], DType::F32, &[2, 4], &want, 0.0);
}

/// `x: [batch, seq]`, its `Shape`, and `seq` as a scalar (`Gather(shape, 1)`): the start of
/// the exporter-style shape arithmetic the next tests build on.
fn seq_of_x() -> Vec<tessera_frontend::onnx::proto::NodeProto> {
    vec![
        node("Shape", "shape", &["x"], &["s"], vec![]),
        node("Gather", "seq", &["s", "one"], &["seq"], vec![attr_int("axis", 0)]),
    ]
}

fn ones(shape: &[usize]) -> tessera_ir::tensor::Tensor {
    f32_tensor(shape, &vec![1.0; shape.iter().product()])
}

/// `Range(0, seq, 1)` and `Range(1, seq, 2)` over a symbolic `seq` are tensors of symbolic
/// length (`tsr.iota`), computed once the run binds `seq`, an empty range included.
#[test]
fn range_over_a_symbolic_limit_has_a_symbolic_length() {
    let mut nodes = seq_of_x();
    nodes.push(node("Range", "positions", &["zero", "seq", "one"], &["p"], vec![]));
    nodes.push(node("Range", "odd", &["one", "seq", "two"], &["o"], vec![]));
    let m = model(
        nodes,
        vec![f32_value("x", &[D::P("batch"), D::P("seq")])],
        vec![value("p", DataType::Int64, &[D::P("seq")]), value("o", DataType::Int64, &[D::P("n")])],
        vec![i64_typed("zero", &[], &[0]), i64_typed("one", &[], &[1]), i64_typed("two", &[], &[2])],
        17,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::sym("seq")]);
    assert_eq!(g.value(g.outputs()[1]).ty.to_string(), r#"tensor<?xi64, ["floordiv(seq, 2)"]>"#);
    assert!(count_ops(&g, "iota") >= 1);
    let out = run(&g, vec![ones(&[2, 5])]);
    assert_eq!((out[0].to_i64_vec(), out[1].to_i64_vec()), (vec![0, 1, 2, 3, 4], vec![1, 3]));
    let out = run(&g, vec![ones(&[1, 1])]);
    assert_eq!((out[0].to_i64_vec(), out[1].to_i64_vec()), (vec![0], vec![]));
}

/// `table[0:seq]` of a constant table (BERT's position ids): a gather of iota positions with the
/// symbolic length `seq`; a run with `seq` past the table fails naming the index and the bound.
#[test]
fn slice_with_a_symbolic_end_gathers_a_symbolic_length() {
    let mut nodes = seq_of_x();
    nodes.push(node("Unsqueeze", "end", &["seq", "axes"], &["end"], vec![]));
    nodes.push(node("Slice", "rows", &["table", "start", "end", "axes"], &["y"], vec![]));
    let m = model(
        nodes,
        vec![f32_value("x", &[D::P("batch"), D::P("seq")])],
        vec![f32_value("y", &[D::P("seq"), D::N(2)])],
        vec![
            i64_typed("one", &[], &[1]),
            i64_typed("axes", &[1], &[0]),
            i64_typed("start", &[1], &[0]),
            f32_typed("table", &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        ],
        17,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::sym("seq"), Dim::Static(2)]);
    let out = run(&g, vec![ones(&[1, 3])]);
    assert_close(&out[0], DType::F32, &[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 0.0);
    let x = g.inputs()[0];
    let too_long = tessera_runtime::interpreter::run(&g, &[(g.value(x).name.clone(), ones(&[1, 5]))]);
    let message = too_long.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains('4') && message.contains("out of range"), "{message}");
}

/// Comparisons of dimension expressions decide what holds for every size >= 1: `Equal(seq, -1)`
/// is false and `Less(0, seq)` true, folded to constants; `Equal(seq, 4)` depends on the size
/// and is computed at run time from the bound size.
#[test]
fn comparisons_of_symbolic_dims_decide_for_every_size_or_at_run_time() {
    let mut nodes = seq_of_x();
    nodes.push(node("Equal", "is_minus_one", &["seq", "minus_one"], &["e"], vec![]));
    nodes.push(node("Less", "positive", &["zero", "seq"], &["l"], vec![]));
    let outputs = vec![value("e", DataType::Bool, &[]), value("l", DataType::Bool, &[])];
    let initializers = || {
        vec![
            i64_typed("one", &[], &[1]),
            i64_typed("zero", &[], &[0]),
            i64_typed("minus_one", &[], &[-1]),
            i64_typed("four", &[], &[4]),
        ]
    };
    let x = || vec![f32_value("x", &[D::P("batch"), D::P("seq")])];
    let g = import(&model(nodes, x(), outputs, initializers(), 17));
    assert_eq!(g.num_nodes(), 2, "both comparisons fold to constants");
    let out = run(&g, vec![ones(&[1, 3])]);
    assert_eq!((out[0].to_i64_vec(), out[1].to_i64_vec()), (vec![0], vec![1]));

    let mut nodes = seq_of_x();
    nodes.push(node("Equal", "is_four", &["seq", "four"], &["e"], vec![]));
    let undecided = import(&model(nodes, x(), vec![value("e", DataType::Bool, &[])], initializers(), 17));
    let compares = undecided.nodes().filter(|(_, n)| matches!(n.op, Op::Compare(_))).count();
    assert_eq!(compares, 1, "compared at run time");
    assert_eq!(run(&undecided, vec![ones(&[2, 4])])[0].to_i64_vec(), vec![1]);
    assert_eq!(run(&undecided, vec![ones(&[2, 3])])[0].to_i64_vec(), vec![0]);
}

/// A shape value read as data (`x * float(seq)`) becomes a run-time tensor computed from the
/// bound sizes, and `GatherND` with run-time indices over a symbolic `[batch, seq]` picks
/// `x[b, s]` per index pair, negative components counting from the end.
#[test]
fn shape_values_as_data_and_gather_nd_with_run_time_indices() {
    let mut nodes = seq_of_x();
    nodes.push(node("Cast", "seq_f", &["seq"], &["seq_f"], vec![attr_int("to", DataType::Float as i64)]));
    nodes.push(node("Mul", "scaled", &["x", "seq_f"], &["y"], vec![]));
    nodes.push(node("GatherND", "picked", &["x", "idx"], &["z"], vec![]));
    let m = model(
        nodes,
        vec![f32_value("x", &[D::P("batch"), D::P("seq")]), value("idx", DataType::Int64, &[D::P("n"), D::N(2)])],
        vec![f32_value("y", &[D::P("batch"), D::P("seq")]), f32_value("z", &[D::P("n")])],
        vec![i64_typed("one", &[], &[1])],
        17,
    );
    let g = import(&m);
    let values: Vec<f64> = (0..6).map(f64::from).collect();
    let idx = tessera_ir::tensor::Tensor::from_i64(DType::I64, vec![3, 2], vec![0, 2, 1, 0, -1, -2]);
    let out = run(&g, vec![f32_tensor(&[2, 3], &values), idx]);
    assert_close(&out[0], DType::F32, &[2, 3], &[0.0, 3.0, 6.0, 9.0, 12.0, 15.0], 0.0);
    assert_close(&out[1], DType::F32, &[3], &[2.0, 3.0, 4.0], 0.0);
}

/// ViT's dynamo export reshapes `[s33, 4, 17, 32]` to `[-1, 17, 32]`: the `-1` is the symbolic
/// quotient `4 * s33`.
#[test]
fn reshape_minus_one_over_a_symbolic_dim_is_the_symbolic_quotient() {
    let m = model(
        vec![node("Reshape", "r", &["x", "shape"], &["y"], vec![])],
        vec![f32_value("x", &[D::P("s33"), D::N(4), D::N(17), D::N(32)])],
        vec![f32_value("y", &[D::P("n"), D::N(17), D::N(32)])],
        vec![i64_typed("shape", &[3], &[-1, 17, 32])],
        17,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.to_string(), r#"tensor<?x17x32xf32, ["4 * s33"]>"#);
    let out = run(&g, vec![ones(&[2, 4, 17, 32])]);
    assert_eq!(out[0].shape, vec![8, 17, 32]);
}

/// ViT's position-embedding interpolation: a constant `[1, 2, 3, 3]` grid resized (cubic and
/// linear, each coordinate transform the run-time path covers) to `sizes` that are shape
/// arithmetic over the symbolic input, `floordiv(h, 4)` by `w`. The symbolic import computes
/// taps and weights at run time; it must agree with the import that binds `h` and `w` first,
/// whose taps are planned at import time, at sizes that shrink, keep and grow the grid.
#[test]
fn resize_to_symbolic_sizes_matches_the_import_with_sizes_bound() {
    let grid: Vec<f32> = (0..18).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
    for (mode, transform) in [
        ("cubic", "half_pixel"),
        ("cubic", "pytorch_half_pixel"),
        ("linear", "align_corners"),
        ("linear", "asymmetric"),
    ] {
        let m = model(
            vec![
                node("Shape", "shape", &["x"], &["s"], vec![]),
                node("Gather", "hw", &["s", "hw_idx"], &["hw"], vec![attr_int("axis", 0)]),
                node("Div", "quarter", &["hw", "div"], &["out_hw"], vec![]),
                node("Concat", "sizes", &["lead", "out_hw"], &["sizes"], vec![attr_int("axis", 0)]),
                node(
                    "Resize",
                    "resize",
                    &["grid", "", "", "sizes"],
                    &["y"],
                    vec![attr_str("mode", mode), attr_str("coordinate_transformation_mode", transform)],
                ),
            ],
            vec![f32_value("x", &[D::P("h"), D::P("w")])],
            vec![f32_value("y", &[D::N(1), D::N(2), D::P("oh"), D::P("ow")])],
            vec![
                f32_typed("grid", &[1, 2, 3, 3], &grid),
                i64_typed("hw_idx", &[2], &[0, 1]),
                i64_typed("div", &[2], &[4, 1]),
                i64_typed("lead", &[2], &[1, 2]),
            ],
            18,
        );
        let symbolic = import(&m);
        assert!(count_ops(&symbolic, "iota") >= 1, "{mode} {transform}: taps are computed at run time");
        for (h, w) in [(4, 2), (12, 3), (21, 7), (8, 1)] {
            let dims = [("h".to_string(), h as u64), ("w".to_string(), w as u64)].into_iter().collect();
            let bound = import_proto(&m, None, &ImportOptions { dims, ..Default::default() })
                .unwrap_or_else(|e| panic!("bound import: {e}"));
            let at_run_time = run(&symbolic, vec![ones(&[h, w])]);
            let planned = run(&bound, vec![ones(&[h, w])]);
            let expected: Vec<f64> = planned[0].to_f64_vec();
            let label = format!("{mode} {transform} at {h}x{w}");
            assert_eq!(at_run_time[0].shape, planned[0].shape, "{label}");
            for (got, want) in at_run_time[0].to_f64_vec().iter().zip(&expected) {
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{label}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn float32_initializers_import_into_f32_storage_with_their_exact_bits() {
    // A quiet NaN with a payload, a signalling NaN, the smallest subnormal, negative zero, the
    // largest f32 and 0.1 (not exact in binary): every bit pattern must survive, as f32, from
    // both payload forms (raw bytes and the typed `float_data` field).
    let bits: [u32; 6] = [0x7fc0_0123, 0x7f80_0001, 0x0000_0001, 0x8000_0000, 0x7f7f_ffff, 0x3dcc_cccd];
    let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let raw = TensorProto {
        dims: vec![2, 3],
        data_type: Some(DataType::Float as i32),
        name: Some("raw".into()),
        raw_data: Some(values.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..TensorProto::default()
    };
    let m = model(
        vec![
            node("Identity", "from_raw", &["raw"], &["y_raw"], vec![]),
            node("Identity", "from_typed", &["typed"], &["y_typed"], vec![]),
        ],
        vec![],
        vec![
            value("y_raw", DataType::Float, &[D::N(2), D::N(3)]),
            value("y_typed", DataType::Float, &[D::N(2), D::N(3)]),
        ],
        vec![raw, f32_typed("typed", &[2, 3], &values)],
        17,
    );
    let g = import(&m);
    let constants: Vec<&tessera_ir::tensor::Tensor> =
        g.nodes().filter_map(|(_, n)| if let Op::Constant(t) = &n.op { Some(t) } else { None }).collect();
    assert_eq!(constants.len(), 2);
    for t in constants {
        assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[2usize, 3][..]));
        match &t.data {
            tessera_ir::tensor::Buffer::F32(v) => {
                assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), bits);
            }
            other => panic!("expected f32 storage, got {other:?}"),
        }
    }
}

/// `Pad` in reflect mode over a symbolic extent (silero-vad's STFT pads its `sequence` axis by
/// 64): the mirrored blocks are gathered by constant indices, so one symbolic import runs at
/// every length, equal to the import with the length bound; a length the padding does not fit
/// (ONNX requires more elements than the padding) is the run's out-of-range error.
#[test]
fn reflect_padding_of_a_symbolic_axis_matches_the_import_with_its_size_bound() {
    let m = model(
        vec![node("Pad", "pad", &["x", "pads"], &["y"], vec![attr_str("mode", "reflect")])],
        vec![f32_value("x", &[D::N(2), D::P("n")])],
        vec![f32_value("y", &[D::N(2), D::P("m")])],
        vec![i64_typed("pads", &[4], &[0, 3, 0, 2])],
        18,
    );
    let symbolic = import(&m);
    assert_eq!(symbolic.value(symbolic.outputs()[0]).ty.to_string(), r#"tensor<2x?xf32, ["n + 5"]>"#);
    let x = |n: usize| f32_tensor(&[2, n], &(0..2 * n).map(|i| (i * i % 7) as f64).collect::<Vec<_>>());
    let out = run(&symbolic, vec![x(4)]);
    // Row 0 is [0, 1, 4, 2]: reflected, [2, 4, 1 | 0, 1, 4, 2 | 4, 1] (NumPy's np.pad agrees).
    assert_close(
        &out[0],
        DType::F32,
        &[2, 9],
        &[2.0, 4.0, 1.0, 0.0, 1.0, 4.0, 2.0, 4.0, 1.0, 0.0, 1.0, 4.0, 2.0, 4.0, 1.0, 0.0, 1.0, 4.0],
        0.0,
    );
    for n in [4, 6, 11] {
        let dims = [("n".to_string(), n as u64)].into_iter().collect();
        let bound = import_proto(&m, None, &ImportOptions { dims, ..Default::default() })
            .unwrap_or_else(|e| panic!("bound import at n = {n}: {e}"));
        let (at_run_time, planned) = (run(&symbolic, vec![x(n)]), run(&bound, vec![x(n)]));
        assert_eq!(at_run_time[0].shape, vec![2, n + 5]);
        assert_eq!(at_run_time[0].to_f64_vec(), planned[0].to_f64_vec(), "n = {n}");
    }
    let input = symbolic.value(symbolic.inputs()[0]).name.clone();
    let too_short = tessera_runtime::interpreter::run(&symbolic, &[(input, x(3))]);
    let message = too_short.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("out of range"), "{message}");
}

/// `CumSum` along a symbolic axis (RoBERTa's position ids: a cumulative sum of the attention
/// mask along `seq`) imports with its triangular mask built at run time from `iota` positions,
/// for each `exclusive`/`reverse` combination: hand-computed sums at `seq = 4`, and the bound
/// import's values at other lengths.
#[test]
fn cumsum_along_a_symbolic_axis_runs_at_every_length() {
    // x = [[1, 2, 3, 4], [5, 6, 7, 8]] at seq = 4; the sums run along axis 1.
    let expected = [
        ((0, 0), [1.0, 3.0, 6.0, 10.0, 5.0, 11.0, 18.0, 26.0]),
        ((1, 0), [0.0, 1.0, 3.0, 6.0, 0.0, 5.0, 11.0, 18.0]),
        ((0, 1), [10.0, 9.0, 7.0, 4.0, 26.0, 21.0, 15.0, 8.0]),
        ((1, 1), [9.0, 7.0, 4.0, 0.0, 21.0, 15.0, 8.0, 0.0]),
    ];
    let x = |n: usize| f32_tensor(&[2, n], &(1..=2 * n).map(|i| i as f64).collect::<Vec<_>>());
    for ((exclusive, reverse), want) in expected {
        let m = model(
            vec![node(
                "CumSum",
                "positions",
                &["x", "axis"],
                &["y"],
                vec![attr_int("exclusive", exclusive), attr_int("reverse", reverse)],
            )],
            vec![f32_value("x", &[D::N(2), D::P("seq")])],
            vec![f32_value("y", &[D::N(2), D::P("seq")])],
            vec![i64_typed("axis", &[], &[1])],
            14,
        );
        let symbolic = import(&m);
        assert_eq!(symbolic.value(symbolic.outputs()[0]).ty.dims, vec![Dim::Static(2), Dim::sym("seq")]);
        assert!(count_ops(&symbolic, "iota") >= 2, "the mask's positions are computed at run time");
        let out = run(&symbolic, vec![x(4)]);
        assert_close(&out[0], DType::F32, &[2, 4], &want, 0.0);
        for n in [1, 3, 7] {
            let dims = [("seq".to_string(), n as u64)].into_iter().collect();
            let bound = import_proto(&m, None, &ImportOptions { dims, ..Default::default() })
                .unwrap_or_else(|e| panic!("bound import at seq = {n}: {e}"));
            let (at_run_time, planned) = (run(&symbolic, vec![x(n)]), run(&bound, vec![x(n)]));
            assert_eq!(at_run_time[0].shape, vec![2, n]);
            assert_eq!(at_run_time[0].to_f64_vec(), planned[0].to_f64_vec(), "{exclusive} {reverse} seq = {n}");
        }
    }
}

/// `Tile` by a shape value (DeBERTa-v2 tiles its relative position embeddings by
/// `[batch, 1, 1]`, from `Shape`): the repeat is the symbolic `batch`, and one import runs at
/// every batch, equal to NumPy's `tile` (each copy of `t` stacked along axis 0).
#[test]
fn tile_by_a_shape_value_repeats_a_symbolic_number_of_times() {
    let m = model(
        vec![
            node("Shape", "shape", &["x"], &["s"], vec![]),
            node("Slice", "batch", &["s", "zero", "one"], &["b"], vec![]),
            node("Concat", "repeats", &["b", "one", "two"], &["r"], vec![attr_int("axis", 0)]),
            node("Tile", "tile", &["t", "r"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("batch"), D::N(3)])],
        vec![f32_value("y", &[D::P("rows"), D::N(2), D::N(4)])],
        vec![
            i64_typed("zero", &[1], &[0]),
            i64_typed("one", &[1], &[1]),
            i64_typed("two", &[1], &[2]),
            f32_typed("t", &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
        ],
        17,
    );
    let g = import(&m);
    assert_eq!(g.value(g.outputs()[0]).ty.to_string(), r#"tensor<?x2x4xf32, ["batch"]>"#);
    for batch in [1, 3] {
        let out = run(&g, vec![ones(&[batch, 3])]);
        let row = [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0];
        let want: Vec<f64> = (0..batch).flat_map(|_| row).collect();
        assert_close(&out[0], DType::F32, &[batch, 2, 4], &want, 0.0);
    }
}

/// Two inputs whose batch symbols the graph uses as one size (an `Add` of `[a, 2]` and `[b, 2]`)
/// import with one symbol: `b` becomes `a` in every type, the result is `[a, 2]`, and it runs at
/// any batch the inputs agree on.
#[test]
fn symbols_an_add_uses_as_one_size_become_one() {
    let m = model(
        vec![node("Add", "sum", &["x", "y"], &["z"], vec![])],
        vec![f32_value("x", &[D::P("a"), D::N(2)]), f32_value("y", &[D::P("b"), D::N(2)])],
        vec![f32_value("z", &[D::P("a"), D::N(2)])],
        vec![],
        17,
    );
    let g = import(&m);
    let types: Vec<String> = g.inputs().iter().map(|&v| g.value(v).ty.to_string()).collect();
    assert_eq!(types, vec![r#"tensor<?x2xf32, ["a"]>"#; 2]);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::sym("a"), Dim::Static(2)]);
    let x = tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![3, 2], vec![10.0; 6]);
    assert_close(&run(&g, vec![x, y])[0], DType::F32, &[3, 2], &[11.0, 12.0, 13.0, 14.0, 15.0, 16.0], 0.0);
}

/// An LSTM's initial state declared with a batch symbol of its own (silero-vad's `state:
/// [2, state_dim1, 128]` beside `input: [input_dim0, ...]`) takes the batch symbol of X.
#[test]
fn an_lstm_initial_state_takes_the_batch_symbol_of_its_input() {
    let m = model(
        vec![node("LSTM", "lstm", &["x", "W", "R", "", "", "h0"], &["", "h"], vec![attr_int("hidden_size", 1)])],
        vec![f32_value("x", &[D::N(2), D::P("n"), D::N(1)]), f32_value("h0", &[D::N(1), D::P("state_n"), D::N(1)])],
        vec![f32_value("h", &[D::N(1), D::P("n"), D::N(1)])],
        vec![f32_typed("W", &[1, 4, 1], &[0.5; 4]), f32_typed("R", &[1, 4, 1], &[0.25; 4])],
        14,
    );
    let g = import(&m);
    let h0 = g.inputs()[1];
    assert_eq!(g.value(h0).ty.dims, vec![Dim::Static(1), Dim::sym("n"), Dim::Static(1)]);
    assert_eq!(g.value(g.outputs()[0]).ty.dims, vec![Dim::Static(1), Dim::sym("n"), Dim::Static(1)]);
    let out = run(
        &g,
        vec![
            tessera_ir::tensor::Tensor::zeros(DType::F32, vec![2, 3, 1]),
            tessera_ir::tensor::Tensor::zeros(DType::F32, vec![1, 3, 1]),
        ],
    );
    assert_eq!(out[0].shape, vec![1, 3, 1]);
}
