//! `cse`: duplicates merge (chains of them in one walk), differing attributes and constants
//! that differ in any bit do not, and outputs keep their names.

use crate::support::{check_same_outputs, ops, output_names, run};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, add_named, f32s, input};

const EXP: Op = Op::Unary(UnaryOp::Exp);
const ADD: Op = Op::Binary(BinaryOp::Add);
const MUL: Op = Op::Binary(BinaryOp::Mul);

#[test]
fn chains_of_duplicates_merge_in_one_walk() {
    let mut g = Graph::new("c");
    let x = input(&mut g, "x", f32s(&[4]));
    let a1 = add(&mut g, EXP, &[x]);
    let a2 = add(&mut g, EXP, &[x]);
    let b1 = add(&mut g, ADD, &[a1, x]);
    let b2 = add(&mut g, ADD, &[a2, x]);
    let y = add_named(&mut g, "y", MUL, &[b1, b2]);
    g.set_outputs(vec![y]);
    let after = check_same_outputs(&g, "cse");
    assert_eq!(ops(&after), ["exp", "add", "mul"]);
    let mul = &after.node(tessera_ir::graph::NodeId(2));
    assert_eq!(mul.inputs[0], mul.inputs[1]);
    assert_eq!(output_names(&after), ["y"]);
    let mut again = after.clone();
    let report = run(&mut again, "cse");
    assert_eq!(report.passes[0].stats.rewrites, 0);
}

#[test]
fn operand_order_and_attributes_matter() {
    let mut g = Graph::new("c");
    let x = input(&mut g, "x", f32s(&[3, 3]));
    let w = input(&mut g, "w", f32s(&[3, 3]));
    let outs = vec![
        add(&mut g, Op::MatMul, &[x, w]),
        add(&mut g, Op::MatMul, &[w, x]),
        add(&mut g, Op::Softmax { axis: 0 }, &[x]),
        add(&mut g, Op::Softmax { axis: 1 }, &[x]),
        add(&mut g, Op::Reduce { kind: ReduceKind::Sum, axes: vec![0], keepdims: true }, &[x]),
        add(&mut g, Op::Reduce { kind: ReduceKind::Max, axes: vec![0], keepdims: true }, &[x]),
        add(&mut g, Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: true }, &[x]),
        add(&mut g, Op::Cast { to: DType::F16 }, &[x]),
        add(&mut g, Op::Cast { to: DType::BF16 }, &[x]),
    ];
    g.set_outputs(outs);
    let mut after = g.clone();
    let report = run(&mut after, "cse");
    assert_eq!(report.passes[0].stats.rewrites, 0);
    assert_eq!(after, g);
}

#[test]
fn equal_constants_merge_but_signed_zeros_and_dtypes_do_not() {
    let mut g = Graph::new("k");
    let x = input(&mut g, "x", f32s(&[2]));
    let mut outs = Vec::new();
    for value in [1.5, 1.5, 0.0, -0.0, 0.0] {
        let c = add(&mut g, Op::Constant(Tensor::from_f64(DType::F32, vec![2], vec![value, 2.0])), &[]);
        outs.push(add(&mut g, MUL, &[x, c]));
    }
    let nan = || Op::Constant(Tensor::from_f64(DType::F32, vec![2], vec![f64::NAN, 1.0]));
    let n1 = add(&mut g, nan(), &[]);
    let n2 = add(&mut g, nan(), &[]);
    outs.push(add(&mut g, ADD, &[n1, n2]));
    let i1 = add(&mut g, Op::Constant(Tensor::from_i64(DType::I32, vec![2], vec![1, 2])), &[]);
    let i2 = add(&mut g, Op::Constant(Tensor::from_i64(DType::I64, vec![2], vec![1, 2])), &[]);
    outs.extend([i1, i2]);
    g.set_outputs(outs);
    let after = check_same_outputs(&g, "cse");
    // Kept: 1.5 and its mul, 0.0 and its mul, -0.0 and its mul, one NaN constant (equal bits
    // merge) and the add, and both integer constants.
    assert_eq!(
        ops(&after),
        ["constant", "mul", "constant", "mul", "constant", "mul", "constant", "add", "constant", "constant"]
    );
    let add_node = after.node(tessera_ir::graph::NodeId(7));
    assert_eq!(add_node.inputs[0], add_node.inputs[1]);
}

#[test]
fn multi_result_nodes_merge_result_by_result() {
    let mut g = Graph::new("s");
    let x = input(&mut g, "x", f32s(&[4]));
    let s1 = g.add_node(Op::Split { axis: 0, sizes: vec![1, 3] }, &[x]).expect("split");
    let s2 = g.add_node(Op::Split { axis: 0, sizes: vec![1, 3] }, &[x]).expect("split");
    let s3 = g.add_node(Op::Split { axis: 0, sizes: vec![3, 1] }, &[x]).expect("split");
    let a = add(&mut g, EXP, &[s1[1]]);
    let b = add(&mut g, EXP, &[s2[1]]);
    let c = add(&mut g, EXP, &[s3[0]]);
    g.set_outputs(vec![a, b, s2[0], c]);
    let after = check_same_outputs(&g, "cse");
    assert_eq!(ops(&after), ["split", "split", "exp", "exp"]);
    assert_eq!(after.outputs()[0], after.outputs()[1]);
    assert_eq!(after.outputs()[2], after.node(tessera_ir::graph::NodeId(0)).outputs[0]);
}

#[test]
fn merged_outputs_keep_names_unless_both_are_outputs() {
    let mut g = Graph::new("o");
    let x = input(&mut g, "x", f32s(&[2]));
    let h1 = add_named(&mut g, "h1", EXP, &[x]);
    let h2 = add_named(&mut g, "y", EXP, &[x]);
    let z1 = add_named(&mut g, "z1", ADD, &[h1, x]);
    let z2 = add_named(&mut g, "z2", ADD, &[h2, x]);
    g.set_outputs(vec![h2, z1, z2]);
    let after = check_same_outputs(&g, "cse");
    assert_eq!(ops(&after), ["exp", "add"]);
    // %h1 (not an output) takes the name of the output %y it replaces; %z1 is an output
    // itself, so the third output becomes %z1 too.
    assert_eq!(output_names(&after), ["y", "z1", "z1"]);
}
