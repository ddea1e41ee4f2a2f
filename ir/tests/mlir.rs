//! The MLIR text form as a contract: round trips (text and JSON), snapshots of printed graphs,
//! MLIR's own acceptance through IRDL, and every parser diagnostic with its exact location.

use proptest::prelude::{prop_assert, prop_assert_eq, proptest, ProptestConfig};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::json::{from_json, to_json};
use tessera_ir::mlir::{parse_graph, parse_verified, print_graph, Loc};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::recurrent::{Cell, Direction, RecurrentKind};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::sharding::{IoShardings, Mesh, Sharding};
use tessera_ir::symbolic::DimExpr;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::arb_graph;
use tessera_ir::testing::build::{add, add_named, f32s, input, param};
use tessera_ir::types::{Dim, TensorType};
use tessera_ir::verify::{verify, VerifyError};
use tessera_mlir_check::{check_with_mlir, irdl_dialect_text, print_with_mlir};

// ---- hand-built graphs ----

fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = input(&mut g, "x", f32s(&[8, 16]));
    let w1 = param(&mut g, "w1", f32s(&[16, 32]));
    let b1 = param(&mut g, "b1", f32s(&[32]));
    let w2 = param(&mut g, "w2", f32s(&[32, 4]));
    let h = add_named(&mut g, "h", Op::MatMul, &[x, w1]);
    let b = add_named(&mut g, "b1_wide", Op::Broadcast { shape: vec![Dim::Static(8), Dim::Static(32)] }, &[b1]);
    let hb = add_named(&mut g, "h_biased", Op::Binary(BinaryOp::Add), &[h, b]);
    let a = add_named(&mut g, "a", Op::Unary(UnaryOp::Gelu), &[hb]);
    let y = add_named(&mut g, "y", Op::MatMul, &[a, w2]);
    g.set_outputs(vec![y]);
    g
}

fn attention() -> Graph {
    let batch = || Dim::sym("batch");
    let mut g = Graph::new("attention");
    let x = input(&mut g, "x", TensorType::new(DType::F32, vec![batch(), Dim::Static(4), Dim::Static(8)]));
    let w = param(&mut g, "w_qkv", f32s(&[8, 24]));
    let scale = param(&mut g, "ln_scale", f32s(&[8]));
    let bias = param(&mut g, "ln_bias", f32s(&[8]));
    let qkv = add_named(&mut g, "qkv", Op::MatMul, &[x, w]);
    let parts = g.add_node(Op::Split { axis: -1, sizes: vec![8, 8, 8] }, &[qkv]).expect("split");
    for (v, name) in parts.iter().zip(["q", "k", "v"]) {
        g.rename_value(*v, name);
    }
    let (q, k, v) = (parts[0], parts[1], parts[2]);
    let kt = add_named(&mut g, "k_t", Op::Transpose { perm: vec![0, 2, 1] }, &[k]);
    let scores = add_named(&mut g, "scores", Op::MatMul, &[q, kt]);
    let c = add_named(&mut g, "inv_sqrt_d", Op::Constant(Tensor::scalar(DType::F32, 0.35355339)), &[]);
    let shape = vec![batch(), Dim::Static(4), Dim::Static(4)];
    let cw = add_named(&mut g, "inv_sqrt_d_wide", Op::Broadcast { shape }, &[c]);
    let scaled = add_named(&mut g, "scaled", Op::Binary(BinaryOp::Mul), &[scores, cw]);
    let probs = add_named(&mut g, "probs", Op::Softmax { axis: -1 }, &[scaled]);
    let ctx = add_named(&mut g, "context", Op::MatMul, &[probs, v]);
    let y = add_named(&mut g, "y", Op::LayerNorm { axis: 2, epsilon: 1e-5 }, &[ctx, scale, bias]);
    g.set_outputs(vec![y, probs]);
    g
}

fn conv_pool() -> Graph {
    let mut g = Graph::new("conv_pool");
    let x = input(&mut g, "image", f32s(&[1, 3, 8, 8]));
    let w = param(&mut g, "conv_w", f32s(&[4, 3, 3, 3]));
    let window = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
    let c = add_named(&mut g, "conv", Op::Conv2d { window, groups: 1 }, &[x, w]);
    let r = add_named(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[c]);
    let window = Window { strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1] };
    let p = add_named(&mut g, "pool", Op::Pool2d { kind: PoolKind::Max, kernel: [2, 2], window }, &[r]);
    let m = add_named(&mut g, "mean", Op::Reduce { kind: ReduceKind::Mean, axes: vec![2, 3], keepdims: false }, &[p]);
    let am = add_named(&mut g, "class", Op::ArgMax { axis: 1, keepdims: false }, &[m]);
    g.set_outputs(vec![m, am]);
    g
}

fn constants() -> Graph {
    let mut g = Graph::new("constants");
    let tensors = [
        ("f32_tenths", Tensor::from_f64(DType::F32, vec![2, 2], vec![0.1, -0.2, 1e-7, 3.0e20])),
        ("f32_splat", Tensor::from_f64(DType::F32, vec![2, 3], vec![1.5; 6])),
        ("f16_vec", Tensor::from_f64(DType::F16, vec![3], vec![0.1, 65504.0, -6e-8])),
        ("bf16_vec", Tensor::from_f64(DType::BF16, vec![2], vec![3.3, -1e30])),
        ("f64_scalar", Tensor::scalar(DType::F64, std::f64::consts::PI)),
        ("i64_vec", Tensor::from_i64(DType::I64, vec![3], vec![i64::MIN, 0, i64::MAX])),
        ("i32_mat", Tensor::from_i64(DType::I32, vec![2, 1], vec![-7, 9])),
        ("i8_vec", Tensor::from_i64(DType::I8, vec![2], vec![-128, 127])),
        ("mask", Tensor::from_i64(DType::Bool, vec![2, 2], vec![1, 0, 0, 1])),
        ("f8_e4m3", Tensor::from_f64(DType::F8E4M3, vec![2], vec![448.0, -0.5])),
        ("f8_e5m2", Tensor::from_f64(DType::F8E5M2, vec![2], vec![1.25, f64::INFINITY])),
        ("empty", Tensor::zeros(DType::F32, vec![0, 3])),
        ("f32_inf", Tensor::from_f64(DType::F32, vec![2], vec![f64::INFINITY, f64::NEG_INFINITY])),
    ];
    let mut outs = Vec::new();
    for (name, t) in tensors {
        outs.push(add_named(&mut g, name, Op::Constant(t), &[]));
    }
    g.set_outputs(outs);
    g
}

fn symbolic() -> Graph {
    let mut g = Graph::new("symbolic");
    let ty = TensorType::new(DType::BF16, vec![Dim::sym("batch"), Dim::sym("seq"), Dim::Static(16)]);
    let x = input(&mut g, "x", ty);
    let s = add_named(&mut g, "sum", Op::Reduce { kind: ReduceKind::Sum, axes: vec![-1], keepdims: true }, &[x]);
    let f = add_named(&mut g, "wide", Op::Cast { to: DType::F32 }, &[s]);
    let shape = vec![Dim::sym("seq"), Dim::sym("batch")];
    let r = add_named(&mut g, "flat", Op::Reshape { shape }, &[f]);
    let steps = Op::Slice { starts: vec![0, 0, 0], ends: vec![i64::MAX, i64::MAX, 8], steps: vec![1, 1, 2] };
    let half = add_named(&mut g, "half", steps, &[x]);
    g.set_outputs(vec![r, half]);
    g
}

/// A bidirectional LSTM with sequence lengths and peepholes over a symbolic sequence, then a GRU
/// (reset after the projection, clipped) and an RNN with parameterised activations.
fn recurrent() -> Graph {
    let mut g = Graph::new("recurrent");
    let x = input(&mut g, "x", TensorType::new(DType::F32, vec![Dim::sym("seq"), Dim::Static(2), Dim::Static(3)]));
    let lens = input(&mut g, "lens", TensorType::of_static(DType::I32, &[2]));
    let mut weight = |name: &str, shape: &[u64]| param(&mut g, name, f32s(shape));
    let (w, r, b) = (weight("w", &[2, 16, 3]), weight("r", &[2, 16, 4]), weight("b", &[2, 32]));
    let (h0, c0, p) = (weight("h0", &[2, 2, 4]), weight("c0", &[2, 2, 4]), weight("p", &[2, 12]));
    let (gw, gr, gb, gh) =
        (weight("gw", &[1, 6, 8]), weight("gr", &[1, 6, 2]), weight("gb", &[1, 12]), weight("gh", &[1, 2, 2]));
    let (rw, rr, rb, rh) =
        (weight("rw", &[1, 2, 2]), weight("rr", &[1, 2, 2]), weight("rb", &[1, 4]), weight("rh", &[1, 1, 2]));
    let lstm =
        Op::Recurrent { kind: RecurrentKind::Lstm, cell: Cell::new(RecurrentKind::Lstm, 4, Direction::Bidirectional) };
    let outs = g.add_node(lstm, &[x, w, r, b, h0, c0, p, lens]).expect("lstm");
    let batch_major = add(&mut g, Op::Transpose { perm: vec![0, 2, 1, 3] }, &[outs[0]]);
    let flat = Op::Reshape { shape: vec![Dim::sym("seq"), Dim::Static(2), Dim::Static(8)] };
    let y = add_named(&mut g, "y_flat", flat, &[batch_major]);
    let mut gru = Cell::new(RecurrentKind::Gru, 2, Direction::Reverse);
    gru.linear_before_reset = true;
    gru.clip = Some(2.5);
    let gru_outs =
        g.add_node(Op::Recurrent { kind: RecurrentKind::Gru, cell: gru }, &[y, gw, gr, gb, gh]).expect("gru");
    let mut rnn = Cell::new(RecurrentKind::Rnn, 2, Direction::Forward);
    rnn.activations = Cell::parse_activations("affine(0.5, -0.25)").expect("activation");
    let state = add(&mut g, Op::Transpose { perm: vec![1, 0, 2] }, &[gru_outs[1]]);
    let rnn_outs =
        g.add_node(Op::Recurrent { kind: RecurrentKind::Rnn, cell: rnn }, &[state, rw, rr, rb, rh]).expect("rnn");
    g.set_outputs(vec![outs[1], outs[2], gru_outs[0], rnn_outs[0]]);
    g
}

/// Dimension expressions: a strided convolution over symbolic height and width, a flattening
/// reshape (a product), a concatenation (a sum) and a slice from index 1 (a difference).
fn symbolic_expressions() -> Graph {
    let mut g = Graph::new("symbolic_expressions");
    let ty = TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::Static(3), Dim::sym("h"), Dim::sym("w")]);
    let x = input(&mut g, "image", ty);
    let w = param(&mut g, "conv_w", f32s(&[4, 3, 3, 3]));
    let window = Window { strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1] };
    let c = add_named(&mut g, "conv", Op::Conv2d { window, groups: 1 }, &[x, w]);
    let dim = |text: &str| Dim::from_expr(DimExpr::parse(text).expect("a valid expression")).expect("a dimension");
    let flat = vec![Dim::sym("batch"), dim("4 * floordiv(h + 1, 2) * floordiv(w + 1, 2)")];
    let f = add_named(&mut g, "flat", Op::Reshape { shape: flat }, &[c]);
    let both = add_named(&mut g, "both", Op::Concat { axis: 2 }, &[x, x]);
    let steps = Op::Slice { starts: vec![0, 0, 0, 1], ends: vec![i64::MAX; 4], steps: vec![1; 4] };
    let tail = add_named(&mut g, "tail", steps, &[both]);
    g.set_outputs(vec![f, tail]);
    g
}

fn hand_built() -> Vec<(&'static str, Graph)> {
    vec![
        ("mlp", mlp()),
        ("attention", attention()),
        ("conv_pool", conv_pool()),
        ("constants", constants()),
        ("symbolic", symbolic()),
        ("recurrent", recurrent()),
        ("symbolic_expressions", symbolic_expressions()),
        ("sharded_mlp", sharded_mlp()),
    ]
}

/// The MLP with boundary shardings (what a StableHLO import with `sdy.sharding`s gives): they
/// print as `tsr.sharding` argument and result attributes and the function's `tsr.mesh`.
fn sharded_mlp() -> Graph {
    let mut g = mlp();
    let sharding = |text: &str| Sharding::parse(text).expect("sharding");
    g.set_io_shardings(Some(IoShardings {
        mesh: Mesh::parse("dp=2,tp=4").expect("mesh"),
        inputs: vec![("x".into(), sharding("[{dp}, {}]")), ("w1".into(), sharding("[{}, {tp}]"))],
        outputs: vec![(0, sharding("[{dp}, {}]"))],
    }));
    g
}

/// Boundary shardings that do not read or do not fit are located errors.
#[test]
fn bad_boundary_shardings_are_located_errors() {
    let err = |text: &str| parse_verified(text).expect_err(text).to_string();
    let f = |args: &str, results: &str, attrs: &str| {
        format!("func.func @f(%x: tensor<4x8xf32>{args}) -> (tensor<4x8xf32>{results}){attrs} {{\n  return %x : tensor<4x8xf32>\n}}\n")
    };
    let mesh = r#" attributes {tsr.mesh = "dp=2"}"#;
    let report = [
        err(&f(r#" {tsr.sharding = "[{dp}, {}]"}"#, "", "")),
        err(&f(r#" {tsr.sharding = "[{dp}"}"#, "", mesh)),
        err(&f("", r#" {tsr.sharding = "[{tp}, {}]"}"#, mesh)),
        err(&f(r#" {tsr.sharding = "[{dp}]"}"#, "", mesh)),
        err(&f("", "", r#" attributes {tsr.mesh = "dp=0"}"#)),
        err(&f("", "", r#" attributes {tsr.grid = "dp=2"}"#)),
        err(&f("", r#" {tsr.sharding = 3}"#, mesh)),
    ]
    .join("\n");
    insta::assert_snapshot!(report);
}

// ---- snapshots and round trips of the hand-built graphs ----

#[test]
fn hand_built_graphs_print_as_snapshotted() {
    for (name, g) in hand_built() {
        verify(&g).expect(name);
        insta::assert_snapshot!(name, print_graph(&g));
    }
}

#[test]
fn hand_built_graphs_round_trip() {
    for (name, g) in hand_built() {
        let text = print_graph(&g);
        let back = parse_verified(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back, g, "{name}");
        assert_eq!(print_graph(&back), text, "{name}");
    }
}

/// NaN is not equal to itself, so graphs holding one compare by their text.
#[test]
fn nan_constants_round_trip_bit_for_bit() {
    let mut g = Graph::new("nan");
    for dtype in [DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8E4M3, DType::F8E5M2] {
        let t = Tensor::from_f64(dtype, vec![3], vec![f64::NAN, -f64::NAN, 1.0]);
        add(&mut g, Op::Constant(t), &[]);
    }
    let text = print_graph(&g);
    assert!(text.contains("dense<[0x7FC00000, 0xFFC00000, 1.0]> : tensor<3xf32>"), "{text}");
    assert!(text.contains("dense<[0x7FF8000000000000, 0xFFF8000000000000, 1.0]> : tensor<3xf64>"), "{text}");
    let (back, _) = parse_graph(&text).expect("parses");
    assert_eq!(print_graph(&back), text);
    check_with_mlir(&text).expect("MLIR accepts NaN bit patterns");
}

/// Large constants print as hex data and read back bit for bit (NaN payloads and signed zeros
/// included); fp8 and booleans, which have no hex form here, keep the list form.
#[test]
fn large_constants_print_as_hex_and_round_trip_bit_for_bit() {
    let n = tessera_ir::mlir::print::HEX_DENSE_MIN_ELEMENTS + 1;
    let floats: Vec<f64> = (0..n).map(|i| (i as f64 - 500.0) / 3.0).collect();
    let mut special = floats.clone();
    special[..4].copy_from_slice(&[f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY]);
    let ints: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 255 - 127).collect();
    let mut g = Graph::new("large");
    let mut outs = Vec::new();
    for dtype in [DType::F64, DType::F32, DType::F16, DType::BF16] {
        let t = Tensor::from_f64(dtype, vec![n], special.iter().map(|&x| dtype.round_float(x)).collect());
        outs.push(add_named(&mut g, &format!("c_{dtype}"), Op::Constant(t), &[]));
    }
    for dtype in [DType::I64, DType::I32, DType::I8] {
        let t = Tensor::from_i64(dtype, vec![n], ints.clone());
        outs.push(add_named(&mut g, &format!("c_{dtype}"), Op::Constant(t), &[]));
    }
    let f8 = Tensor::from_f64(DType::F8E4M3, vec![n], floats.iter().map(|&x| DType::F8E4M3.round_float(x)).collect());
    outs.push(add_named(&mut g, "c_f8", Op::Constant(f8), &[]));
    g.set_outputs(outs);
    let text = print_graph(&g);
    assert_eq!(text.matches("dense<\"0x").count(), 7, "seven hex literals expected");
    assert!(text.contains("dense<\"0x0000C07F000000800000807F000080FF"), "f32 data starts NaN, -0.0, +inf, -inf");
    let f8_line = text.lines().find(|l| l.contains("%c_f8 ")).unwrap_or_default();
    assert!(f8_line.contains("{value = dense<[-"), "fp8 keeps the list form: {}", &f8_line[..80.min(f8_line.len())]);
    let back = parse_verified(&text).expect("hex literals parse");
    assert_eq!(print_graph(&back), text, "print(parse(print(g))) changed");
    let nan_free = |t: &Tensor| t.to_f64_vec().into_iter().skip(1).collect::<Vec<f64>>();
    for ((_, a), (_, b)) in g.nodes().zip(back.nodes()) {
        if let (Op::Constant(x), Op::Constant(y)) = (&a.op, &b.op) {
            assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape));
            assert_eq!(nan_free(x), nan_free(y), "{}", x.dtype);
            let signs: Vec<bool> = y.to_f64_vec().iter().map(|v| v.is_sign_negative()).collect();
            assert_eq!(signs, x.to_f64_vec().iter().map(|v| v.is_sign_negative()).collect::<Vec<_>>());
        }
    }
    check_with_mlir(&text).expect("MLIR accepts the hex literals");
}

/// Reading a long list literal is linear: a 200k-element literal parses (it took ~4.7 s when
/// every element recomputed its column from the start of the line).
#[test]
fn long_dense_lists_parse_in_linear_time() {
    let n = 200_000;
    let list: Vec<String> = (0..n).map(|i| format!("{i}.5")).collect();
    let text = format!(
        "func.func @f() -> (tensor<{n}xf32>) {{\n  %c = \"tsr.constant\"() {{value = dense<[{}]> : tensor<{n}xf32>}} : () -> tensor<{n}xf32>\n  return %c : tensor<{n}xf32>\n}}\n",
        list.join(", ")
    );
    let start = std::time::Instant::now();
    let g = parse_verified(&text).unwrap_or_else(|e| panic!("{e}"));
    let elapsed = start.elapsed();
    assert_eq!(g.nodes().len(), 1);
    // Generous for a loaded debug build; the quadratic reader needed seconds.
    assert!(elapsed.as_secs_f64() < 2.0, "200k elements took {elapsed:?}");
    // An error deep in the literal still has its exact column.
    let bad = text.replacen("199999.5", "true", 1);
    let e = parse_graph(&bad).err().map(|e| e.to_string()).unwrap_or_default();
    let col = bad.lines().nth(1).and_then(|l| l.find("true")).map_or(0, |c| c + 1);
    assert!(e.starts_with(&format!("2:{col}: ")), "{e}");
}

/// The examples shipped with the repository are in the printer's canonical form.
#[test]
fn examples_reprint_identically() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples directory") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("mlir") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let g = parse_verified(&text).unwrap_or_else(|e| panic!("{}:{e}", path.display()));
        let without_comments: String =
            text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        assert_eq!(print_graph(&g), without_comments, "{}", path.display());
        if let Err(e) = check_with_mlir(&text) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "no examples found in {}", dir.display());
}

/// What `mlir-opt` prints back for our text: numbered values, a result group, a module, a bare
/// single result type. (Taken from `mlir-opt --irdl-file=... ` output.)
#[test]
fn mlir_opt_output_parses() {
    let text = r#"module {
  func.func @mlp(%arg0: tensor<8x16xf32>, %arg1: tensor<16x32xf32> {tsr.param}) -> tensor<8x16xf32> {
    %0 = "tsr.matmul"(%arg0, %arg1) : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
    %1:2 = "tsr.split"(%0) {axis = 1 : i64, sizes = array<i64: 16, 16>} : (tensor<8x32xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>)
    %2 = "tsr.constant"() {value = dense<[1.000000e+00, 2.500000e+00]> : tensor<2xf32>} : () -> tensor<2xf32>
    %3 = "tsr.add"(%1#0, %1#1) : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
    return %3 : tensor<8x16xf32>
  }
}
"#;
    let g = parse_verified(text).expect("parses");
    assert_eq!(g.num_nodes(), 4);
    let printed = print_graph(&g);
    assert!(printed.contains("%r1_0, %r1_1 = \"tsr.split\"(%0)"), "{printed}");
    assert!(printed.contains("dense<[1.0, 2.5]>"), "{printed}");
    assert!(printed.contains("{tsr.param}"), "{printed}");
}

#[test]
fn source_map_points_at_each_op() {
    let text = print_graph(&mlp());
    let (g, map) = parse_graph(&text).expect("parses");
    for (id, _) in g.nodes() {
        let loc = map.node(id).expect("every node has a location");
        assert_eq!(loc.line, id.0 + 2, "one op per line after the signature");
        let line = text.lines().nth(loc.line as usize - 1).expect("line");
        assert!(line[loc.col as usize - 1..].starts_with("\"tsr."), "{line}");
    }
    assert_eq!(map.func, Loc { line: 1, col: 1 });
    assert_eq!(map.ret, Loc { line: 7, col: 3 });
}

#[test]
fn json_round_trips_the_hand_built_graphs() {
    for (name, g) in hand_built() {
        let back = from_json(&to_json(&g)).expect(name);
        // NaN constants are never equal to themselves, so compare through the text form, which
        // spells them by bit pattern.
        assert_eq!(print_graph(&back), print_graph(&g), "{name}");
        if name != "constants" {
            assert_eq!(back, g, "{name}");
        }
    }
}

// ---- random graphs ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_round_trip_through_text_and_json(g in arb_graph()) {
        let text = print_graph(&g);
        let back = parse_verified(&text);
        prop_assert!(back.is_ok(), "{}\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), text);
        let back = back.unwrap_or_else(|_| Graph::new(""));
        prop_assert_eq!(print_graph(&back), text.clone());
        prop_assert_eq!(&back, &g);
        let json = to_json(&g);
        let from = from_json(&json);
        prop_assert!(from.is_ok(), "{:?}", from.as_ref().err());
        prop_assert_eq!(from.unwrap_or_else(|_| Graph::new("")), g);
    }

    /// Damaged text (truncated, a byte changed, a line dropped) gives an error or a graph,
    /// never a panic.
    #[test]
    fn damaged_text_never_panics(g in arb_graph(), cut in 0usize..4096, pos in 0usize..4096, byte in 0u8..128, mode in 0u8..4) {
        let text = print_graph(&g);
        let damaged = match mode {
            0 => text.get(..cut % (text.len() + 1)).unwrap_or("").to_string(),
            1 => {
                let mut bytes = text.clone().into_bytes();
                let i = pos % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(i) {
                    *b = byte;
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            2 => {
                // An extreme value in place of one number: shape rules must not overflow.
                let extremes = ["0", "-1", "4294967296", "9223372036854775807", "-9223372036854775808"];
                let runs: Vec<(usize, usize)> = digit_runs(&text);
                match runs.get(pos % runs.len().max(1)) {
                    Some(&(start, end)) => {
                        format!("{}{}{}", &text[..start], extremes[byte as usize % extremes.len()], &text[end..])
                    }
                    None => text.clone(),
                }
            }
            _ => {
                let lines: Vec<&str> = text.lines().collect();
                let drop = pos % lines.len().max(1);
                lines.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, l)| format!("{l}\n")).collect()
            }
        };
        if let Err(e) = parse_verified(&damaged) {
            prop_assert!(e.line >= 1 && e.col >= 1 && !e.message.contains('\n'), "{}", e);
        }
    }
}

proptest! {
    /// Token soup and arbitrary text: an error or a graph, never a panic.
    #[test]
    fn arbitrary_text_never_panics(
        soup in proptest::collection::vec(proptest::sample::select(TOKENS.to_vec()), 0..40),
        noise in ".{0,80}",
    ) {
        let text: String = soup.concat();
        for input in [text.as_str(), noise.as_str()] {
            if let Err(e) = parse_verified(input) {
                prop_assert!(e.line >= 1 && e.col >= 1 && !e.message.contains('\n'), "{}", e);
            }
        }
    }
}

/// Byte ranges of the maximal runs of ASCII digits in `text`.
fn digit_runs(text: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in text.bytes().enumerate().chain(std::iter::once((text.len(), b' '))) {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// Fragments of the grammar, so random sequences get past the first token now and then.
const TOKENS: &[&str] = &[
    "func.func ",
    "@f",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    ", ",
    ": ",
    " = ",
    " -> ",
    "%x",
    "%y",
    "%0:2",
    "%0#1",
    "\"tsr.add\"",
    "\"tsr.split\"",
    "\"tsr.constant\"",
    "tensor<",
    "4x",
    "?x",
    "f32",
    "i1",
    "[\"b\"]",
    "dense<",
    "array<i64: ",
    "1",
    "-2",
    "1.5",
    "0x7FC00000",
    "true",
    "return ",
    "module ",
    "{tsr.param}",
    "\n",
    "// c\n",
    "axis",
    "value",
    "\"",
    "#",
    "%",
];

proptest! {
    // Each case builds an MLIR context with every upstream dialect registered (a few ms).
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// MLIR accepts the text, and its own printing of it reads back as the same graph.
    #[test]
    fn mlir_accepts_and_reprints_random_graphs(g in arb_graph()) {
        let text = print_graph(&g);
        let printed = print_with_mlir(&text);
        prop_assert!(printed.is_ok(), "{}\n{}", printed.err().map(|e| e.to_string()).unwrap_or_default(), text);
        let printed = printed.unwrap_or_default();
        let back = parse_verified(&printed);
        prop_assert!(back.is_ok(), "{}\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), printed);
        prop_assert_eq!(canonical_names(&back.unwrap_or_else(|_| Graph::new(""))), canonical_names(&g));
    }
}

// ---- MLIR's own verdict ----

#[test]
fn mlir_accepts_and_reprints_the_hand_built_graphs() {
    for (name, g) in hand_built() {
        let text = print_graph(&g);
        let printed = print_with_mlir(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        let back = parse_verified(&printed).unwrap_or_else(|e| panic!("{name}: {e}\n{printed}"));
        assert_eq!(canonical_names(&back), canonical_names(&g), "{name}:\n{printed}");
    }
}

/// MLIR prints large literals as raw hex data (`dense<"0x...">`, booleans bit-packed); they
/// read back as the same values, and a hex splat fills the tensor.
#[test]
fn mlir_hex_literals_read_back() {
    let mut g = Graph::new("big");
    let n = 130;
    let tensors = [
        Tensor::from_i64(DType::Bool, vec![n], (0..n as i64).map(|i| i64::from(i % 3 == 0)).collect()),
        Tensor::from_f64(DType::F16, vec![2, n / 2], (0..n).map(|i| i as f64 * 0.5 - 7.0).collect()),
        Tensor::from_f64(DType::BF16, vec![n], (0..n).map(|i| -(i as f64) / 3.0).collect()),
        Tensor::from_f64(DType::F8E5M2, vec![n], (0..n).map(|i| i as f64 - 60.0).collect()),
        Tensor::from_i64(DType::I8, vec![n], (0..n as i64).map(|i| i - 64).collect()),
        Tensor::from_i64(DType::I64, vec![n], (0..n as i64).map(|i| i * -1_000_000_007).collect()),
        Tensor::from_f64(DType::F64, vec![n], (0..n).map(|i| (i as f64).sqrt()).collect()),
    ];
    let mut outs = Vec::new();
    for t in tensors {
        outs.push(add(&mut g, Op::Constant(t), &[]));
    }
    g.set_outputs(outs);
    let printed = print_with_mlir(&print_graph(&g)).expect("MLIR accepts it");
    assert!(printed.contains("dense<\"0x"), "{printed}");
    let back = parse_verified(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(canonical_names(&back), canonical_names(&g));

    let splat = "func.func @s() -> (tensor<3xi32>) {\n  %0 = \"tsr.constant\"() {value = dense<\"0xFEFFFFFF\"> : tensor<3xi32>} : () -> tensor<3xi32>\n  return %0 : tensor<3xi32>\n}\n";
    let g = parse_verified(splat).expect("hex splat");
    let (_, node) = g.nodes().next().expect("one node");
    assert_eq!(node.op, Op::Constant(Tensor::from_i64(DType::I32, vec![3], vec![-2, -2, -2])));
    let short = splat.replace("0xFEFFFFFF", "0xFEFFFF");
    assert_eq!(
        parse_verified(&short).expect_err("3 bytes").to_string(),
        "2:40: hex data has 3 bytes, but tensor<3xi32> needs 12"
    );
}

/// The graph with every value renamed `v<id>`, to compare graphs whose names differ (MLIR
/// renumbers values when it prints).
fn canonical_names(g: &Graph) -> Graph {
    let mut g = g.clone();
    let ids: Vec<ValueId> = g.values().map(|(id, _)| id).collect();
    for id in ids {
        g.rename_value(id, &format!("v{}", id.0));
    }
    g
}

#[test]
fn mlir_accepts_variadic_ops_of_mixed_counts_and_types() {
    let text = r#"func.func @cat(%a: tensor<2x3xf32>, %b: tensor<4x3xf32>) -> (tensor<6x3xf32>, tensor<10x3xf32>) {
  %c = "tsr.concat"(%a, %b) {axis = 0 : i64} : (tensor<2x3xf32>, tensor<4x3xf32>) -> tensor<6x3xf32>
  %d = "tsr.concat"(%a, %b, %b) {axis = 0 : i64} : (tensor<2x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>) -> tensor<10x3xf32>
  %e, %f = "tsr.split"(%d) {axis = 0 : i64, sizes = array<i64: 3, 7>} : (tensor<10x3xf32>) -> (tensor<3x3xf32>, tensor<7x3xf32>)
  %g, %h, %i = "tsr.split"(%d) {axis = 0 : i64, sizes = array<i64: 1, 2, 7>} : (tensor<10x3xf32>) -> (tensor<1x3xf32>, tensor<2x3xf32>, tensor<7x3xf32>)
  %j = "tsr.split"(%i) {axis = 0 : i64, sizes = array<i64: 7>} : (tensor<7x3xf32>) -> tensor<7x3xf32>
  return %c, %d : tensor<6x3xf32>, tensor<10x3xf32>
}
"#;
    parse_verified(text).expect("tessera accepts it");
    check_with_mlir(text).expect("MLIR accepts it");
    // With mixed counts spliced into a copy, MLIR's errors still point into the original.
    let bad_neg = "  %k = \"tsr.neg\"(%c, %c) : (tensor<6x3xf32>, tensor<6x3xf32>) -> tensor<6x3xf32>\n  return";
    let err = check_with_mlir(&text.replacen("  return", bad_neg, 1)).expect_err("neg takes one operand");
    assert_eq!(err.to_string(), "MLIR rejected the text: 7:8: op expects exactly 1 operands, but got 2");
}

#[test]
fn mlir_rejects_unknown_ops_and_bad_counts() {
    let unknown = "func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {\n  %y = \"tsr.unknown_op\"(%x) : (tensor<4xf32>) -> tensor<4xf32>\n  return %y : tensor<4xf32>\n}\n";
    let err = check_with_mlir(unknown).expect_err("unknown op").to_string();
    assert!(err.contains("2:8:") && err.contains("tsr.unknown_op"), "{err}");

    let foreign = unknown.replace("tsr.unknown_op", "foo.bar");
    let err = check_with_mlir(&foreign).expect_err("unregistered dialect").to_string();
    assert!(err.contains("foo.bar") || err.contains("unregistered"), "{err}");

    let arity = "func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {\n  %y = \"tsr.add\"(%x) : (tensor<4xf32>) -> tensor<4xf32>\n  return %y : tensor<4xf32>\n}\n";
    let err = check_with_mlir(arity).expect_err("add takes two operands").to_string();
    assert!(err.contains("2:8:") && err.contains("2 operands"), "{err}");

    assert!(check_with_mlir("func.func @f(\0) {}").is_err());
}

#[test]
fn irdl_dialect_defines_every_op() {
    let text = irdl_dialect_text();
    for m in Op::all_mnemonics() {
        assert!(text.contains(&format!("irdl.operation @{m} {{")), "{m}");
    }
    assert!(
        text.contains("  irdl.operation @matmul {\n    %in0 = irdl.any\n    %in1 = irdl.any\n    %out0 = irdl.any\n")
    );
}

// ---- diagnostics ----

/// One line per case: the input and the exact `line:col: message`.
#[test]
fn malformed_inputs_give_located_errors() {
    let sig = "func.func @f(%x: tensor<2x3xf32>, %w: tensor<3x4xf32>) -> (tensor<2x4xf32>) {\n";
    let ret = "  return %y : tensor<2x4xf32>\n}\n";
    let mm = "  %y = \"tsr.matmul\"(%x, %w) : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{sig}  %y = \"tsr.foo\"(%x, %w) : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:8: unknown op 'tsr.foo'",
        ),
        (
            format!("{sig}  %y = \"arith.addf\"(%x, %w) : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:8: unknown op 'arith.addf'",
        ),
        (
            format!("{sig}  %y = \"tsr.matmul\"(%x, %q) : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:25: use of undefined value %q",
        ),
        (
            format!("{sig}  %y = \"tsr.matmul\"(%x, %x) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:8: %y = tsr.matmul: contracting dimensions differ: 3 (of tensor<2x3xf32>) vs 2 (of tensor<2x3xf32>)",
        ),
        (
            format!("{sig}  %y = \"tsr.matmul\"(%x, %w) : (tensor<2x3xf32>, tensor<3x3xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:49: operand %w has type tensor<3x4xf32>, but the op's type says tensor<3x3xf32>",
        ),
        (
            format!("{sig}  %y = \"tsr.matmul\"(%x, %w) : (tensor<2x3xf32>) -> tensor<2x4xf32>\n{ret}"),
            "2:31: op has 2 operand(s) but its type lists 1",
        ),
        (
            format!("{sig}  %y = \"tsr.matmul\"(%x, %w) : (tensor<2x3xf32>, tensor<3x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)\n{ret}"),
            "2:69: op defines 1 result(s) but its type lists 2",
        ),
        (format!("{sig}{mm}{mm}{ret}"), "3:3: redefinition of value %y"),
        (format!("{sig}{mm}  %z = \"tsr.neg\"(%y) : (tensor<2x4xf32>) -> tensor<2x4xf32> $\n{ret}"), "3:61: unexpected character '$'"),
        (format!("{sig}{mm}  return %y : tensor<2x4xf32>"), "3:30: unexpected end of input, expected '}' after 'return' (it ends the function)"),
        (format!("{sig}  %y = \"tsr.matmul\"(%x, %w"), "2:27: unexpected end of input, expected ',' or ')' in the operand list"),
        (
            format!("{sig}{mm}  return %y : tensor<2x5xf32>\n}}\n"),
            "3:15: returned %y has type tensor<2x4xf32>, but is written tensor<2x5xf32>",
        ),
        (
            "func.func @f(%x: tensor<2xf32>) -> (tensor<3xf32>) {\n  return %x : tensor<2xf32>\n}\n".to_string(),
            "2:10: returned value 0 (%x) has type tensor<2xf32>, but the function returns tensor<3xf32>",
        ),
        (
            "func.func @f(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {\n  return %x : tensor<2xf32>\n}\n".to_string(),
            "2:3: return has 1 value(s), but the function returns 2",
        ),
        ("func.func @f(%x: tensor<2xf7>) -> () {\n  return\n}\n".to_string(), "1:27: unknown element type 'f7'"),
        ("func.func @f(%x: tensor<?x2xf32>) -> () {\n  return\n}\n".to_string(), "1:32: tensor type has 1 '?' dimension(s) but names 0 symbol(s)"),
        (
            "func.func @f() -> () {\n  %c = \"tsr.constant\"() {value = dense<[1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>\n  return\n}\n".to_string(),
            "2:34: dense literal has 2 elements, but tensor<3xf32> has 3",
        ),
        (
            "func.func @f() -> () {\n  %c = \"tsr.constant\"() {value = dense<[[1, 2], [3, 4]]> : tensor<4xi64>} : () -> tensor<4xi64>\n  return\n}\n".to_string(),
            "2:34: dense literal has shape [2, 2], but tensor<4xi64> has shape [4]",
        ),
        (
            "func.func @f() -> () {\n  %c = \"tsr.constant\"() {value = dense<[1, 300]> : tensor<2xi8>} : () -> tensor<2xi8>\n  return\n}\n".to_string(),
            "2:44: integer 300 is out of range for i8",
        ),
        (
            "func.func @f() -> () {\n  %c = \"tsr.constant\"() {value = dense<[true, 2.5]> : tensor<2xi1>} : () -> tensor<2xi1>\n  return\n}\n".to_string(),
            "2:47: expected an i1 element, got 2.5",
        ),
        (
            "func.func @f() -> () {\n  %c = \"tsr.constant\"() {value = dense<0x7FC0000000> : tensor<f32>} : () -> tensor<f32>\n  return\n}\n".to_string(),
            "2:40: hex literal 0x7FC0000000 does not fit f32",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %s = \"tsr.softmax\"(%x) : (tensor<4xf32>) -> tensor<4xf32>\n  return\n}\n".to_string(),
            "2:8: tsr.softmax: missing attribute 'axis'",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %s = \"tsr.softmax\"(%x) {axis = 0 : i64, axis = 1 : i64} : (tensor<4xf32>) -> tensor<4xf32>\n  return\n}\n".to_string(),
            "2:43: duplicate attribute 'axis'",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %s = \"tsr.softmax\"(%x) {axis = 1.5} : (tensor<4xf32>) -> tensor<4xf32>\n  return\n}\n".to_string(),
            "2:8: tsr.softmax: attribute 'axis' must be integer, got float",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %s = \"tsr.softmax\"(%x) {axis = 0 : i64} : (tensor<4xf32>) -> tensor<4xf32>\n  return\n}\n".to_string(),
            "OK",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %s = \"tsr.softmax\"(%x) {axis = 3 : i64} : (tensor<4xf32>) -> tensor<4xf32>\n  return\n}\n".to_string(),
            "2:8: %s = tsr.softmax: axis 3 is out of range for tensor<4xf32>",
        ),
        ("func.func @f(%x: tensor<4xf32>, %x: tensor<4xf32>) -> () {\n  return\n}\n".to_string(), "1:33: redefinition of value %x"),
        ("func.func @f(%x: tensor<4xf32> {tsr.weight}) -> () {\n  return\n}\n".to_string(), "1:33: unknown argument attribute 'tsr.weight' (tsr.param and tsr.sharding are known)"),
        ("func.func @f() -> () {\n  %s = \"tsr.x\n  return\n}\n".to_string(), "2:8: unterminated string"),
        ("func.func @f() -> () {\n  return\n}\nfunc.func @g() -> () {\n  return\n}\n".to_string(), "4:1: expected one func.func, found a second one"),
        ("".to_string(), "1:1: unexpected end of input, expected 'func.func'"),
        ("func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {\n  return %x#1 : tensor<4xf32>\n}\n".to_string(), "2:10: %x has only one result, so %x#1 is undefined"),
        (
            "func.func @f(%x: tensor<4xf32>) -> (tensor<2xf32>) {\n  %p:2 = \"tsr.split\"(%x) {axis = 0 : i64, sizes = array<i64: 2, 2>} : (tensor<4xf32>) -> (tensor<2xf32>, tensor<2xf32>)\n  return %p : tensor<2xf32>\n}\n".to_string(),
            "3:10: %p names 2 results; use %p#N",
        ),
        (
            "func.func @f(%x: tensor<4xf32>) -> () {\n  %y = \"tsr.neg\"(%x) : (tensor<4xf32>) -> tensor<4xf32> // trailing comment\n  // a whole-line comment\n\n  return\n}\n".to_string(),
            "OK",
        ),
    ];
    let mut mismatches = Vec::new();
    for (text, want) in cases {
        let got = match parse_verified(&text) {
            Ok(_) => "OK".to_string(),
            Err(e) => e.to_string(),
        };
        if got != want {
            mismatches.push(format!("input:\n{text}want: {want}\ngot:  {got}\n"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn verifier_errors_without_a_node_point_at_the_return_or_the_function() {
    let text = "func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {\n  return %x : tensor<4xf32>\n}\n";
    let (_, map) = parse_graph(text).expect("valid");
    let output_error = VerifyError { node: None, subject: "graph output 0".into(), message: "m".into() };
    assert_eq!(map.locate(&output_error), Loc { line: 2, col: 3 });
    let name_error = VerifyError { node: None, subject: "%x".into(), message: "is defined more than once".into() };
    assert_eq!(map.locate(&name_error), Loc { line: 1, col: 1 });
}

/// The element types of issue 15 (unsigned and 16/4/2-bit integers, FNUZ float8, float4) print
/// as MLIR's builtin types (`ui8`, `i4`, `f8E4M3FNUZ`, `f4E2M1FN`), read back equal, in both
/// the list and (large integer constants) the hex form, and MLIR itself accepts the text.
#[test]
fn narrow_and_unsigned_dtypes_round_trip() {
    let mut g = Graph::new("narrow");
    let mut outs = Vec::new();
    let ints = [
        (DType::U8, vec![0, 255]),
        (DType::U16, vec![0, 65535]),
        (DType::U32, vec![0, u32::MAX as i64]),
        (DType::U64, vec![0, -1]), // u64::MAX, held as -1
        (DType::I16, vec![-32768, 32767]),
        (DType::I4, vec![-8, 7]),
        (DType::U4, vec![0, 15]),
        (DType::I2, vec![-2, 1]),
        (DType::U2, vec![0, 3]),
    ];
    for (dtype, values) in ints {
        let t = Tensor::from_i64(dtype, vec![2], values);
        outs.push(add_named(&mut g, &format!("c_{dtype}"), Op::Constant(t), &[]));
    }
    for (dtype, values) in [
        (DType::F8E4M3Fnuz, vec![240.0, -0.5, f64::NAN]),
        (DType::F8E5M2Fnuz, vec![57344.0, 1.25, f64::NAN]),
        (DType::F4E2M1, vec![6.0, -1.5, 0.5]),
    ] {
        let t = Tensor::from_f64(dtype, vec![3], values);
        outs.push(add_named(&mut g, &format!("c_{dtype}"), Op::Constant(t), &[]));
    }
    let n = tessera_ir::mlir::print::HEX_DENSE_MIN_ELEMENTS + 1;
    for dtype in [DType::U8, DType::U32, DType::I16, DType::I4] {
        let t = Tensor::from_i64(dtype, vec![n], (0..n as i64).map(|i| i * 7919 - 3000).collect());
        outs.push(add_named(&mut g, &format!("large_{dtype}"), Op::Constant(t), &[]));
    }
    g.set_outputs(outs);
    verify(&g).expect("verifies");
    let text = print_graph(&g);
    for spelling in ["tensor<2xui8>", "tensor<2xi4>", "tensor<2xui2>", "tensor<3xf8E4M3FNUZ>", "tensor<3xf4E2M1FN>"] {
        assert!(text.contains(spelling), "{spelling} missing from\n{text}");
    }
    assert!(text.contains("18446744073709551615"), "u64::MAX prints unsigned\n{text}");
    let (back, _) = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print_graph(&back), text);
    check_with_mlir(&text).expect("MLIR accepts the builtin narrow and unsigned types");
}
