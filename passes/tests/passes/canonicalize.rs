//! `canonicalize`: each rule on a small graph (structure before and after, output names, and
//! bit-identical outputs on seeded inputs including NaN, infinities and signed zeros), rules
//! that must not fire, folding limits, and the fixed point.

use crate::support::{check_same_outputs, ops, output_names, run};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, add_named, broadcast_scalar, dims, f32s, input, ty};

const NEG: Op = Op::Unary(UnaryOp::Neg);
const EXP: Op = Op::Unary(UnaryOp::Exp);

fn binary(b: BinaryOp) -> Op {
    Op::Binary(b)
}

/// Canonicalizes `g` (checking outputs stay bit-identical) and returns the result's ops and
/// output names.
fn canonicalize(g: &Graph) -> (Vec<&'static str>, Vec<String>) {
    let after = check_same_outputs(g, "canonicalize");
    (ops(&after), output_names(&after))
}

#[test]
fn identity_transpose_is_removed() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", f32s(&[2, 3]));
    let t = add(&mut g, Op::Transpose { perm: vec![0, 1] }, &[x]);
    let y = add_named(&mut g, "y", EXP, &[t]);
    g.set_outputs(vec![y]);
    assert_eq!(ops(&g), ["transpose", "exp"]);
    assert_eq!(canonicalize(&g), (vec!["exp"], vec!["y".to_string()]));
}

#[test]
fn transposes_compose_into_one() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", f32s(&[2, 3, 4]));
    let t1 = add(&mut g, Op::Transpose { perm: vec![1, 2, 0] }, &[x]); // [3, 4, 2]
    let t2 = add(&mut g, Op::Transpose { perm: vec![0, 2, 1] }, &[t1]); // [3, 2, 4]
    g.rename_value(t2, "y");
    g.set_outputs(vec![t2]);
    let after = check_same_outputs(&g, "canonicalize");
    assert_eq!(ops(&after), ["transpose"]);
    assert_eq!(after.node(tessera_ir::graph::NodeId(0)).op, Op::Transpose { perm: vec![1, 0, 2] });
    assert_eq!(after.node(tessera_ir::graph::NodeId(0)).inputs, [after.inputs()[0]]);
    assert_eq!(output_names(&after), ["y"]);
}

#[test]
fn inverse_transposes_cancel() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", f32s(&[2, 3, 4]));
    let t1 = add(&mut g, Op::Transpose { perm: vec![1, 2, 0] }, &[x]);
    let t2 = add(&mut g, Op::Transpose { perm: vec![2, 0, 1] }, &[t1]);
    let y = add_named(&mut g, "y", EXP, &[t2]);
    g.set_outputs(vec![y]);
    assert_eq!(canonicalize(&g), (vec!["exp"], vec!["y".to_string()]));
}

#[test]
fn a_chain_of_transposes_becomes_one_in_one_sweep() {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", f32s(&[2, 3, 4]));
    let mut v = x;
    for _ in 0..5 {
        v = add(&mut g, Op::Transpose { perm: vec![1, 2, 0] }, &[v]);
    }
    g.set_outputs(vec![v]);
    let mut after = g.clone();
    let report = run(&mut after, "canonicalize");
    assert_eq!(ops(&after), ["transpose"]);
    // Five rotations by one are a rotation by two.
    assert_eq!(after.node(tessera_ir::graph::NodeId(0)).op, Op::Transpose { perm: vec![2, 0, 1] });
    let counters = &report.passes[0].stats.counters;
    // In one sweep: t2 becomes a rotation by two of x, t3 (a rotation by three) is x itself,
    // t4 is then a rotation of x by one, and t5 becomes a rotation by two of x.
    assert_eq!(counters["transpose-of-transpose"], 3);
    assert_eq!(counters["dead-nodes"], 4);
    // The first sweep finds everything; the second confirms the fixed point.
    assert_eq!(counters["sweeps"], 2);
    check_same_outputs(&g, "canonicalize");
}

#[test]
fn reshapes_merge_and_identity_reshapes_vanish() {
    let mut g = Graph::new("r");
    let x = input(&mut g, "x", f32s(&[2, 6]));
    let r1 = add(&mut g, Op::Reshape { shape: dims(&[3, 4]) }, &[x]);
    let r2 = add_named(&mut g, "flat", Op::Reshape { shape: dims(&[12]) }, &[r1]);
    let r3 = add(&mut g, Op::Reshape { shape: dims(&[4, 3]) }, &[x]);
    let r4 = add(&mut g, Op::Reshape { shape: dims(&[2, 6]) }, &[r3]); // back to x's type
    let y = add_named(&mut g, "y", EXP, &[r4]);
    g.set_outputs(vec![r2, y]);
    let after = check_same_outputs(&g, "canonicalize");
    assert_eq!(ops(&after), ["reshape", "exp"]);
    assert_eq!(after.node(tessera_ir::graph::NodeId(0)).op, Op::Reshape { shape: dims(&[12]) });
    assert_eq!(output_names(&after), ["flat", "y"]);
}

#[test]
fn broadcasts_merge_and_identity_broadcasts_vanish() {
    let mut g = Graph::new("b");
    let x = input(&mut g, "x", f32s(&[4]));
    let b1 = add(&mut g, Op::Broadcast { shape: dims(&[3, 4]) }, &[x]);
    let b2 = add(&mut g, Op::Broadcast { shape: dims(&[2, 3, 4]) }, &[b1]);
    let b3 = add(&mut g, Op::Broadcast { shape: dims(&[2, 3, 4]) }, &[b2]); // same type
    g.rename_value(b3, "y");
    g.set_outputs(vec![b3]);
    let after = check_same_outputs(&g, "canonicalize");
    assert_eq!(ops(&after), ["broadcast"]);
    assert_eq!(after.node(tessera_ir::graph::NodeId(0)).inputs, [after.inputs()[0]]);
    assert_eq!(output_names(&after), ["y"]);
}

#[test]
fn casts_to_the_same_dtype_vanish_others_stay() {
    let mut g = Graph::new("c");
    let x = input(&mut g, "x", f32s(&[5]));
    let same = add(&mut g, Op::Cast { to: DType::F32 }, &[x]);
    let e = add(&mut g, EXP, &[same]);
    let half = add(&mut g, Op::Cast { to: DType::F16 }, &[e]);
    g.set_outputs(vec![half]);
    assert_eq!(canonicalize(&g).0, ["exp", "cast"]);
}

#[test]
fn double_negation_cancels_for_floats_and_wrapping_integers() {
    for dtype in [DType::F32, DType::I8] {
        let mut g = Graph::new("n");
        let x = input(&mut g, "x", ty(dtype, &[8]));
        let n1 = add(&mut g, NEG, &[x]);
        let n2 = add(&mut g, NEG, &[n1]);
        let n3 = add_named(&mut g, "y", NEG, &[n2]);
        g.set_outputs(vec![n3]);
        // neg(neg(neg(x))) is one neg, and the output keeps its name.
        assert_eq!(canonicalize(&g), (vec!["neg"], vec!["y".to_string()]), "{dtype}");
    }
}

#[test]
fn the_most_negative_integer_survives_double_negation() {
    let mut g = Graph::new("n");
    let x = input(&mut g, "x", ty(DType::I8, &[2]));
    let n1 = add(&mut g, NEG, &[x]);
    let n2 = add(&mut g, NEG, &[n1]);
    g.set_outputs(vec![n2]);
    let inputs = [("x".to_string(), Tensor::from_i64(DType::I8, vec![2], vec![-128, 127]))].into();
    let before = crate::support::evaluate(&g, &inputs);
    let mut after = g.clone();
    run(&mut after, "canonicalize");
    assert_eq!(ops(&after), Vec::<&str>::new());
    assert_eq!(crate::support::evaluate(&after, &inputs), before);
    assert_eq!(before[0].to_i64_vec(), [-128, 127]);
}

/// `x op splat(c)` and `splat(c) op x` for a float `c`: whether canonicalize removes the op.
fn folds_float(op: BinaryOp, c: f64, constant_first: bool) -> bool {
    let mut g = Graph::new("a");
    let x = input(&mut g, "x", f32s(&[2, 4]));
    let k = broadcast_scalar(&mut g, DType::F32, c, &[2, 4]);
    let operands = if constant_first { [k, x] } else { [x, k] };
    // The op's result is the output itself, so a sign flip of a zero would show in the
    // differential check (`exp` after it would hide one).
    let y = add(&mut g, binary(op), &operands);
    g.set_outputs(vec![y]);
    let (after, _) = canonicalize(&g);
    !after.contains(&op.mnemonic())
}

#[test]
fn float_identities_fold_only_when_exact() {
    use BinaryOp::{Add, Div, Mul, Sub};
    // x + (-0) = x for every x, but x + (+0) maps -0 to +0.
    assert!(folds_float(Add, -0.0, false));
    assert!(folds_float(Add, -0.0, true));
    assert!(!folds_float(Add, 0.0, false));
    // x - (+0) = x, but x - (-0) maps -0 to +0, and 0 - x is a negation.
    assert!(folds_float(Sub, 0.0, false));
    assert!(!folds_float(Sub, -0.0, false));
    assert!(!folds_float(Sub, 0.0, true));
    // x * 1 and 1 * x are x; x * 0 is not 0 (NaN, infinities, sign) and is never folded.
    assert!(folds_float(Mul, 1.0, false));
    assert!(folds_float(Mul, 1.0, true));
    assert!(!folds_float(Mul, 0.0, false));
    assert!(!folds_float(Mul, 2.0, false));
    // x / 1 is x; 1 / x is not.
    assert!(folds_float(Div, 1.0, false));
    assert!(!folds_float(Div, 1.0, true));
}

#[test]
fn integer_identities_fold() {
    for (op, c, constant_first) in
        [(BinaryOp::Add, 0, true), (BinaryOp::Sub, 0, false), (BinaryOp::Mul, 1, true), (BinaryOp::Div, 1, false)]
    {
        let mut g = Graph::new("i");
        let x = input(&mut g, "x", ty(DType::I32, &[6]));
        let k = add(&mut g, Op::Constant(Tensor::from_i64(DType::I32, vec![6], vec![c; 6])), &[]);
        let operands = if constant_first { [k, x] } else { [x, k] };
        let y = add(&mut g, binary(op), &operands);
        let z = add(&mut g, NEG, &[y]);
        g.set_outputs(vec![z]);
        assert_eq!(canonicalize(&g).0, ["neg"], "{}", op.mnemonic());
    }
}

#[test]
fn a_non_splat_constant_is_not_an_identity() {
    let mut g = Graph::new("a");
    let x = input(&mut g, "x", f32s(&[2]));
    let k = add(&mut g, Op::Constant(Tensor::from_f64(DType::F32, vec![2], vec![1.0, 2.0])), &[]);
    let y = add(&mut g, binary(BinaryOp::Mul), &[x, k]);
    g.set_outputs(vec![y]);
    assert_eq!(canonicalize(&g).0, ["constant", "mul"]);
}

#[test]
fn slices_that_keep_everything_vanish() {
    let mut g = Graph::new("s");
    let x = input(&mut g, "x", f32s(&[4, 1]));
    let whole = Op::Slice { starts: vec![0, 0], ends: vec![i64::MAX, 1], steps: vec![1, 5] };
    let s1 = add(&mut g, whole, &[x]);
    let reverse = Op::Slice { starts: vec![-1, 0], ends: vec![i64::MIN, 1], steps: vec![-1, 1] };
    let s2 = add(&mut g, reverse, &[s1]);
    let part = Op::Slice { starts: vec![1, 0], ends: vec![3, 1], steps: vec![1, 1] };
    let s3 = add(&mut g, part, &[s2]);
    g.set_outputs(vec![s3]);
    assert_eq!(g.value(s2).ty, g.value(x).ty);
    // The whole-tensor slice goes; the reversal (same type, different order) and the part stay.
    assert_eq!(canonicalize(&g).0, ["slice", "slice"]);
}

#[test]
fn single_operand_concat_and_single_size_split_vanish() {
    let mut g = Graph::new("cs");
    let x = input(&mut g, "x", f32s(&[3, 2]));
    let c = add(&mut g, Op::Concat { axis: 0 }, &[x]);
    let s = g.add_node(Op::Split { axis: 1, sizes: vec![2] }, &[c]).expect("split");
    let y = add_named(&mut g, "y", EXP, &[s[0]]);
    g.set_outputs(vec![y]);
    assert_eq!(ops(&g), ["concat", "split", "exp"]);
    assert_eq!(canonicalize(&g), (vec!["exp"], vec!["y".to_string()]));
}

#[test]
fn where_with_equal_branches_is_the_branch() {
    let mut g = Graph::new("w");
    let c = input(&mut g, "c", ty(DType::Bool, &[4]));
    let x = input(&mut g, "x", f32s(&[4]));
    let w = add(&mut g, Op::Where, &[c, x, x]);
    let y = add(&mut g, EXP, &[w]);
    g.set_outputs(vec![y]);
    assert_eq!(canonicalize(&g).0, ["exp"]);
}

#[test]
fn constants_fold_through_chains() {
    let mut g = Graph::new("f");
    let x = input(&mut g, "x", f32s(&[2, 3]));
    let a = add(&mut g, Op::Constant(Tensor::from_f64(DType::F32, vec![3], vec![1.0, 2.0, 3.0])), &[]);
    let e = add(&mut g, EXP, &[a]);
    let b = add(&mut g, Op::Broadcast { shape: dims(&[2, 3]) }, &[e]);
    let y = add(&mut g, binary(BinaryOp::Mul), &[x, b]);
    g.set_outputs(vec![y]);
    let after = check_same_outputs(&g, "canonicalize");
    assert_eq!(ops(&after), ["constant", "mul"]);
    let Op::Constant(folded) = &after.node(tessera_ir::graph::NodeId(0)).op else { panic!("not a constant") };
    assert_eq!(folded.shape, [2, 3]);
    let e1 = DType::F32.round_float(1f64.exp());
    assert_eq!(folded.get_f64(0), e1);
    assert_eq!(folded.get_f64(3), e1);
    assert_eq!(folded.get_f64(5), DType::F32.round_float(3f64.exp()));
}

#[test]
fn folding_respects_the_limit() {
    let mut g = Graph::new("f");
    let a = add(&mut g, Op::Constant(Tensor::scalar(DType::F32, 2.0)), &[]);
    let big = add(&mut g, Op::Broadcast { shape: dims(&[64, 65]) }, &[a]); // 4160 elements
    let small = add(&mut g, Op::Broadcast { shape: dims(&[64, 64]) }, &[a]); // 4096 elements
    g.set_outputs(vec![big, small]);
    let mut after = g.clone();
    run(&mut after, "canonicalize");
    assert_eq!(ops(&after), ["constant", "broadcast", "constant"]);
    let mut unfolded = g.clone();
    run(&mut unfolded, "canonicalize{fold-limit=0}");
    assert_eq!(ops(&unfolded), ["constant", "broadcast", "broadcast"]);
}

#[test]
fn an_output_replaced_by_a_node_result_keeps_its_name() {
    let mut g = Graph::new("o");
    let x = input(&mut g, "x", f32s(&[3]));
    let h = add_named(&mut g, "h", EXP, &[x]);
    let n1 = add(&mut g, NEG, &[h]);
    let n2 = add_named(&mut g, "y", NEG, &[n1]);
    g.set_outputs(vec![n2]);
    let (after_ops, names) = canonicalize(&g);
    assert_eq!(after_ops, ["exp"]);
    assert_eq!(names, ["y"]);
}

#[test]
fn an_output_replaced_by_a_graph_input_or_another_output_takes_its_name() {
    // Input names are the signature and output names must stay unique, so these are the two
    // cases where an output's name changes (see `tessera_passes::rewrite`).
    let mut g = Graph::new("o");
    let x = input(&mut g, "x", f32s(&[3]));
    let e = add_named(&mut g, "e", EXP, &[x]);
    let n1 = add(&mut g, NEG, &[x]);
    let n2 = add_named(&mut g, "y", NEG, &[n1]);
    let m1 = add(&mut g, NEG, &[e]);
    let m2 = add_named(&mut g, "z", NEG, &[m1]);
    g.set_outputs(vec![e, n2, m2]);
    let (after_ops, names) = canonicalize(&g);
    assert_eq!(after_ops, ["exp"]);
    assert_eq!(names, ["e", "x", "e"]);
}

#[test]
fn rules_leave_unrelated_graphs_alone() {
    let mut g = Graph::new("u");
    let x = input(&mut g, "x", f32s(&[2, 3]));
    let w = input(&mut g, "w", f32s(&[3, 4]));
    let m = add(&mut g, Op::MatMul, &[x, w]);
    let t = add(&mut g, Op::Transpose { perm: vec![1, 0] }, &[m]);
    let s = add(&mut g, Op::Softmax { axis: -1 }, &[t]);
    g.set_outputs(vec![s]);
    let mut after = g.clone();
    let report = run(&mut after, "canonicalize");
    assert_eq!(after, g);
    assert_eq!(report.passes[0].stats.rewrites, 0);
    assert_eq!(report.passes[0].stats.counters["sweeps"], 1);
}

#[test]
fn dead_nodes_are_erased() {
    let mut g = Graph::new("d");
    let x = input(&mut g, "x", f32s(&[2]));
    let dead = add(&mut g, EXP, &[x]);
    add(&mut g, NEG, &[dead]);
    let y = add(&mut g, NEG, &[x]);
    g.set_outputs(vec![y]);
    let mut after = g.clone();
    let report = run(&mut after, "canonicalize");
    assert_eq!(ops(&after), ["neg"]);
    assert_eq!(report.passes[0].stats.counters["dead-nodes"], 2);
}

#[test]
fn max_iterations_zero_changes_nothing_but_dead_nodes() {
    let mut g = Graph::new("m");
    let x = input(&mut g, "x", f32s(&[2]));
    let n1 = add(&mut g, NEG, &[x]);
    let n2 = add(&mut g, NEG, &[n1]);
    let y = add(&mut g, EXP, &[n2]);
    g.set_outputs(vec![y]);
    let mut after = g.clone();
    run(&mut after, "canonicalize{max-iterations=0}");
    assert_eq!(ops(&after), ["neg", "neg", "exp"]);
    run(&mut after, "canonicalize{max-iterations=1}");
    assert_eq!(ops(&after), ["exp"]);
}
