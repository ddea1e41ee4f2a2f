//! A quick end-to-end check of the CPU path.

mod harness;

use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

#[test]
fn gelu_of_affine() {
    let mut g = Graph::new("gelu_affine");
    let x = g.add_input("x", TensorType::of_static(DType::F32, &[4, 8]), InputRole::Activation);
    let w = g.add_input("w", TensorType::of_static(DType::F32, &[4, 8]), InputRole::Parameter);
    let b = g.add_input("b", TensorType::of_static(DType::F32, &[8]), InputRole::Parameter);
    let xw = g.add(Op::Binary(BinaryOp::Mul), &[x, w]).unwrap();
    let bb = g.add(Op::Broadcast { shape: vec![Dim::Static(4), Dim::Static(8)] }, &[b]).unwrap();
    let s = g.add(Op::Binary(BinaryOp::Add), &[xw, bb]).unwrap();
    let y = g.add(Op::Unary(UnaryOp::Gelu), &[s]).unwrap();
    let z = g.add(Op::Softmax { axis: 1 }, &[y]).unwrap();
    g.set_outputs(vec![y, z]);
    harness::check_all(&[g], 1);
}

/// Zero-element tensors of rank > 1 as kernel arguments, and one value returned twice.
#[test]
fn empty_multi_dimensional_outputs() {
    let text = r#"func.func @mlp(%x0: tensor<4x1x1xi32>) -> (tensor<0x1x0xi32>, tensor<0x1x0xi32>) {
  %0 = "tsr.slice"(%x0) {ends = array<i64: 1, 2, 1>, starts = array<i64: 2, -2, -1>, steps = array<i64: 1, 2, -1>} : (tensor<4x1x1xi32>) -> tensor<0x1x0xi32>
  return %0, %0 : tensor<0x1x0xi32>, tensor<0x1x0xi32>
}"#;
    let g = tessera_ir::mlir::parse::parse_verified(text).unwrap();
    let t = tessera_codegen::cpu::cpu_module_text(&[tessera_codegen::KernelSource {
        symbol: "k0".into(),
        graph: g.clone(),
    }])
    .unwrap();
    std::fs::write("/tmp/case.mlir", &t).unwrap();
    harness::check_all(&[g], 1);
}
