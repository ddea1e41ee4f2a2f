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
