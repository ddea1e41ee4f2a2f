//! `fold-if`: a `tsr.if` on a size check, once the size is bound, becomes the region it takes
//! (snapshot of the IR before and after); over both branches and many sizes the folded graph
//! computes what the interpreter computes on the conditional (property test); a condition read
//! from data stays an `if`.

use crate::support::{evaluate, ops, output_names, run};
use proptest::prelude::{prop_assert_eq, proptest, ProptestConfig};
use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::mlir::print_graph;
use tessera_ir::ops::control::{IfRegions, Trap, REGION_NAME};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::symbolic::DimExpr;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add_named, input};
use tessera_ir::types::{Dim, TensorType};

/// `floordiv(h + 15, 48)`: PP-OCRv4's recognizer needs it to be 1.
fn rows() -> Dim {
    Dim::from_expr(DimExpr::parse("floordiv(h + 15, 48)").expect("parses")).expect("a dimension")
}

fn x_type() -> TensorType {
    TensorType::new(DType::F32, vec![Dim::sym("h"), Dim::Static(2)])
}

/// The shape of what the importer writes for an assumed size: `x: [h, 2]`;
/// `if floordiv(h + 15, 48) == 1 then x * 3 else trap`, the size computed at run time as the sum
/// of a broadcast of ones (as `Importer::dim_values` does).
fn size_checked() -> Graph {
    let mut g = Graph::new("size_checked");
    let x = input(&mut g, "x", x_type());
    let one = add_named(&mut g, "one", Op::Constant(Tensor::from_i64(DType::I64, vec![], vec![1])), &[]);
    let ones = add_named(&mut g, "ones", Op::Broadcast { shape: vec![rows()] }, &[one]);
    let sum = Op::Reduce { kind: ReduceKind::Sum, axes: vec![0], keepdims: false };
    let size = add_named(&mut g, "size", sum, &[ones]);
    let holds = add_named(&mut g, "holds", Op::Compare(CompareOp::Eq), &[size, one]);

    let mut then_branch = Graph::new(REGION_NAME);
    let a = input(&mut then_branch, "x", x_type());
    let three = Tensor::from_f64(DType::F32, vec![], vec![3.0]);
    let k = add_named(&mut then_branch, "three", Op::Constant(three), &[]);
    let k = add_named(&mut then_branch, "three_b", Op::Broadcast { shape: x_type().dims }, &[k]);
    let y = add_named(&mut then_branch, "tripled", Op::Binary(BinaryOp::Mul), &[a, k]);
    then_branch.set_outputs(vec![y]);

    let mut else_branch = Graph::new(REGION_NAME);
    input(&mut else_branch, "x", x_type());
    let message = "node 'reshape_7' needs the size floordiv(h + 15, 48) to be 1".to_string();
    let trap = Op::Trap(Box::new(Trap { message, types: vec![x_type()] }));
    let never = add_named(&mut else_branch, "unreachable0", trap, &[]);
    else_branch.set_outputs(vec![never]);

    let regions = IfRegions { then_branch, else_branch };
    let y = add_named(&mut g, "y", Op::If(Box::new(regions)), &[holds, x]);
    // A node after the conditional reads its result: it must read the inlined value.
    let z = add_named(&mut g, "z", Op::Binary(BinaryOp::Add), &[y, x]);
    g.set_outputs(vec![z, y]);
    g
}

fn bound(g: &Graph, h: u64) -> Graph {
    let bindings: HashMap<String, u64> = [("h".to_string(), h)].into();
    let bound = g.bind_dims(&bindings).expect("binds");
    tessera_ir::verify::verify(&bound).expect("the bound graph verifies");
    bound
}

fn xs(h: u64, seed: u64) -> HashMap<String, Tensor> {
    let n = h as usize * 2;
    let values = (0..n).map(|i| ((i as u64 * 7 + seed) % 13) as f64 - 6.0).collect();
    [("x".to_string(), Tensor::from_f64(DType::F32, vec![h as usize, 2], values))].into()
}

#[test]
fn a_size_checked_if_folds_to_the_region_its_bound_size_takes() {
    let before = bound(&size_checked(), 40);
    let mut after = before.clone();
    let report = run(&mut after, "fold-if");
    assert_eq!(report.passes[0].stats.counters["folded"], 1);
    // The condition's computation and the trap are gone; the results keep their names.
    assert_eq!(ops(&after), ["constant", "broadcast", "mul", "add"]);
    assert_eq!(output_names(&after), ["z", "y"]);
    insta::assert_snapshot!(format!("before:\n{}\nafter:\n{}", print_graph(&before), print_graph(&after)));
    assert_eq!(evaluate(&after, &xs(40, 1)), evaluate(&before, &xs(40, 1)));
}

#[test]
fn a_size_outside_the_check_folds_to_the_trap_and_fails_with_its_message() {
    let mut g = bound(&size_checked(), 100);
    run(&mut g, "fold-if");
    assert_eq!(ops(&g), ["trap", "add"]);
    let feeds: Vec<(String, Tensor)> = xs(100, 0).into_iter().collect();
    let err = tessera_runtime::interpreter::run(&g, &feeds).expect_err("the trap is reached");
    assert!(err.to_string().contains("needs the size floordiv(h + 15, 48) to be 1"), "{err}");
}

#[test]
fn a_condition_read_from_data_or_a_free_size_stays_an_if() {
    // Unbound, the size is symbolic: nothing to fold.
    let mut symbolic = size_checked();
    let report = run(&mut symbolic, "fold-if");
    assert_eq!(report.passes[0].stats.counters.get("folded"), None, "nothing folded");
    assert!(ops(&symbolic).contains(&"if"));
    // A condition that is a graph input is data.
    let mut g = bound(&size_checked(), 40);
    let cond = input(&mut g, "cond", TensorType::new(DType::Bool, vec![]));
    let if_node = g.nodes().find(|(_, n)| matches!(n.op, Op::If(_))).map(|(id, _)| id).expect("an if");
    g.node_mut(if_node).inputs[0] = cond;
    run(&mut g, "fold-if,dce");
    assert!(ops(&g).contains(&"if"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Over sizes on both sides of the check (then for 33..=80, the trap elsewhere) the folded
    /// graph holds no `if` and computes, bit for bit, what the interpreter computes on the
    /// conditional, or fails with the same message.
    #[test]
    fn folding_agrees_with_the_interpreter_on_both_branches(h in 1u64..160, seed in 0u64..1000) {
        let before = bound(&size_checked(), h);
        let mut after = before.clone();
        run(&mut after, "fold-if");
        prop_assert_eq!(ops(&after).contains(&"if"), false);
        prop_assert_eq!(ops(&after).contains(&"trap"), !(33..=80).contains(&h));
        let feeds: Vec<(String, Tensor)> = xs(h, seed).into_iter().collect();
        let expected = tessera_runtime::interpreter::run(&before, &feeds).map_err(|e| e.to_string());
        let got = tessera_runtime::interpreter::run(&after, &feeds).map_err(|e| e.to_string());
        match (expected, got) {
            (Ok(expected), Ok(got)) => prop_assert_eq!(expected, got),
            (Err(expected), Err(got)) => {
                // The conditional names the branch; the trap's own message is in both.
                prop_assert_eq!(expected.contains("needs the size"), got.contains("needs the size"));
            }
            (expected, got) => prop_assert_eq!(expected.is_ok(), got.is_ok()),
        }
    }
}
