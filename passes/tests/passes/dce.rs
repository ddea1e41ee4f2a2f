//! `dce`: dead chains go, everything reaching an output stays, in order and with its names.

use crate::support::{ops, output_names, run};
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, add_named, f32s, input};

const EXP: Op = Op::Unary(UnaryOp::Exp);
const NEG: Op = Op::Unary(UnaryOp::Neg);

#[test]
fn dead_chains_are_removed_and_outputs_kept() {
    let mut g = Graph::new("d");
    let x = input(&mut g, "x", f32s(&[3]));
    let unused = input(&mut g, "unused", f32s(&[3]));
    let d1 = add(&mut g, EXP, &[x]);
    let d2 = add(&mut g, NEG, &[d1]);
    add(&mut g, Op::Binary(BinaryOp::Add), &[d2, unused]);
    let live = add_named(&mut g, "y", NEG, &[x]);
    let also = add_named(&mut g, "z", EXP, &[live]);
    g.set_outputs(vec![also, live]);
    let report = run(&mut g, "dce");
    assert_eq!(ops(&g), ["neg", "exp"]);
    assert_eq!(output_names(&g), ["z", "y"]);
    // Graph inputs are the signature: dce never removes one.
    assert_eq!(g.inputs().len(), 2);
    let record = &report.passes[0];
    assert_eq!((record.nodes_before, record.nodes_after), (5, 2));
    assert_eq!(record.stats.rewrites, 3);
    assert_eq!(record.stats.counters["removed"], 3);
}

#[test]
fn a_multi_result_node_stays_when_one_result_is_used() {
    let mut g = Graph::new("s");
    let x = input(&mut g, "x", f32s(&[4]));
    let parts = g.add_node(Op::Split { axis: 0, sizes: vec![2, 2] }, &[x]).expect("split");
    add(&mut g, EXP, &[parts[0]]);
    let y = add(&mut g, EXP, &[parts[1]]);
    g.set_outputs(vec![y]);
    run(&mut g, "dce");
    assert_eq!(ops(&g), ["split", "exp"]);
}

#[test]
fn a_graph_without_dead_nodes_is_unchanged() {
    let mut g = Graph::new("u");
    let x = input(&mut g, "x", f32s(&[4]));
    let y = add(&mut g, EXP, &[x]);
    g.set_outputs(vec![y, x]);
    let before = g.clone();
    let report = run(&mut g, "dce");
    assert_eq!(g, before);
    assert_eq!(report.passes[0].stats.rewrites, 0);
}
