//! Graph statistics: hand-computed FLOPs, sizes and peak memory of an MLP and a small CNN, and
//! the unbound-symbol error.

use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::conv::Window;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, dims, f32s, input, param};
use tessera_ir::types::{Dim, TensorType};
use tessera_passes::stats::{GraphStats, OpCost, StatsError, TensorGroup};

/// `gelu(x @ w1 + b1) @ w2` with x: [batch, 1024], w1: [1024, 4096], w2: [4096, 1024].
fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = input(&mut g, "x", TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::Static(1024)]));
    let w1 = param(&mut g, "w1", f32s(&[1024, 4096]));
    let b1 = param(&mut g, "b1", f32s(&[4096]));
    let w2 = param(&mut g, "w2", f32s(&[4096, 1024]));
    let h = add(&mut g, Op::MatMul, &[x, w1]);
    let b = add(&mut g, Op::Broadcast { shape: vec![Dim::sym("batch"), Dim::Static(4096)] }, &[b1]);
    let hb = add(&mut g, Op::Binary(BinaryOp::Add), &[h, b]);
    let a = add(&mut g, Op::Unary(UnaryOp::Gelu), &[hb]);
    let y = add(&mut g, Op::MatMul, &[a, w2]);
    g.set_outputs(vec![y]);
    g
}

fn batch(n: u64) -> HashMap<String, u64> {
    [("batch".to_string(), n)].into()
}

#[test]
fn mlp_flops_sizes_and_peak_memory() {
    let stats = GraphStats::compute(&mlp(), &batch(8)).expect("all symbols bound");
    // 2*8*4096*1024 per matmul, 8*4096 for the add and for gelu, 0 for the broadcast.
    assert_eq!(stats.total.flops, 67_108_864 + 32_768 + 32_768 + 67_108_864);
    assert_eq!(stats.total.flops, 134_283_264);
    assert_eq!(
        stats.op_counts.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
        [("add", 1), ("broadcast", 1), ("gelu", 1), ("matmul", 2)]
    );
    assert_eq!(
        stats.op_costs["matmul"],
        OpCost {
            flops: 134_217_728,
            // x (32 KiB) + w1 (16 MiB), and a (128 KiB) + w2 (16 MiB).
            bytes_read: (32_768 + 16_777_216) + (131_072 + 16_777_216),
            bytes_written: 131_072 + 32_768,
        }
    );
    assert_eq!(stats.parameters, TensorGroup { count: 3, elements: 8_392_704, bytes: 33_570_816 });
    assert_eq!(stats.activation_inputs, TensorGroup { count: 1, elements: 8_192, bytes: 32_768 });
    assert_eq!(stats.outputs, TensorGroup { count: 1, elements: 8_192, bytes: 32_768 });
    assert_eq!(stats.constants, TensorGroup::default());
    assert_eq!(stats.num_nodes, 5);
    // Four [8, 4096] results and one [8, 1024], in f32.
    assert_eq!(stats.result_bytes, 4 * 131_072 + 32_768);
    // Peak at the add: weights (33,570,816) + h, broadcast b1 and the sum (3 * 131,072); x
    // died after the first matmul.
    assert_eq!(stats.peak_live_bytes, 33_570_816 + 3 * 131_072);
    assert_eq!(stats.symbols, [("batch".to_string(), 8)].into());
}

#[test]
fn flops_scale_with_the_bound_batch() {
    let one = GraphStats::compute(&mlp(), &batch(1)).expect("bound");
    let many = GraphStats::compute(&mlp(), &batch(64)).expect("bound");
    assert_eq!(many.total.flops, 64 * one.total.flops);
}

#[test]
fn unbound_symbols_are_named() {
    let mut g = mlp();
    let s = input(&mut g, "s", TensorType::new(DType::F32, vec![Dim::sym("seq"), Dim::sym("batch")]));
    let y = add(&mut g, Op::Unary(UnaryOp::Exp), &[s]);
    g.set_outputs(vec![g.outputs()[0], y]);
    let err = GraphStats::compute(&g, &HashMap::new()).expect_err("nothing bound");
    assert_eq!(err, StatsError::UnboundSymbols { names: vec!["batch".into(), "seq".into()] });
    assert_eq!(err.to_string(), "unbound symbolic dimension(s): batch, seq; give each a size, e.g. batch=8");
    let err = GraphStats::compute(&g, &batch(2)).expect_err("seq unbound");
    assert_eq!(err.to_string(), "unbound symbolic dimension(s): seq; give each a size, e.g. seq=8");
}

#[test]
fn conv_pool_and_reduce_flops() {
    let mut g = Graph::new("cnn");
    let x = input(&mut g, "x", f32s(&[2, 3, 16, 16]));
    let w1 = param(&mut g, "w1", f32s(&[8, 3, 3, 3]));
    let dw = param(&mut g, "dw", f32s(&[8, 1, 3, 3]));
    let same = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
    let c1 = add(&mut g, Op::Conv2d { window: same.clone(), groups: 1 }, &[x, w1]); // [2, 8, 16, 16]
    let pool = Op::Pool2d {
        kind: tessera_ir::ops::conv::PoolKind::Max,
        kernel: [2, 2],
        window: Window { strides: [2, 2], pads: [0; 4], dilations: [1, 1] },
    };
    let p = add(&mut g, pool, &[c1]); // [2, 8, 8, 8]
    let c2 = add(&mut g, Op::Conv2d { window: same, groups: 8 }, &[p, dw]); // depthwise
    let r = add(
        &mut g,
        Op::Reduce { kind: tessera_ir::ops::reduce::ReduceKind::Mean, axes: vec![2, 3], keepdims: false },
        &[c2],
    );
    let s = add(&mut g, Op::Softmax { axis: 1 }, &[r]);
    let flat = add(&mut g, Op::Reshape { shape: dims(&[16]) }, &[s]);
    g.set_outputs(vec![flat]);
    let stats = GraphStats::compute(&g, &HashMap::new()).expect("static");
    let conv = 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3) + 2 * (2 * 8 * 8 * 8) * 9;
    assert_eq!(stats.op_costs["conv2d"].flops, conv);
    assert_eq!(stats.op_costs["max_pool2d"].flops, 2 * 8 * 8 * 8 * 4);
    assert_eq!(stats.op_costs["reduce_mean"].flops, 2 * 8 * 8 * 8);
    assert_eq!(stats.op_costs["softmax"].flops, 5 * 16);
    assert_eq!(stats.op_costs["reshape"], OpCost::default());
    assert_eq!(stats.total.flops, conv + 1024 * 4 + 1024 + 80);
    assert!(stats.symbols.is_empty());
}

#[test]
fn the_summary_reads_well() {
    let text = GraphStats::compute(&mlp(), &batch(8)).expect("bound").to_string();
    let expected_lines = [
        "graph @mlp",
        "  symbolic dims      batch=8",
        "  nodes              5",
        "  parameters         3 tensors, 8,392,704 elements, 32.0 MiB",
        "  activation inputs  1 tensor, 8,192 elements, 32.0 KiB",
        "  FLOPs              134.3 M (134,283,264)",
        "  op         count    FLOPs  bytes read  bytes written",
        "  matmul         2  134.2 M    32.2 MiB      160.0 KiB",
        "  total          5  134.3 M    32.5 MiB      544.0 KiB",
    ];
    for line in expected_lines {
        assert!(text.lines().any(|l| l == line), "no line '{line}' in\n{text}");
    }
}
