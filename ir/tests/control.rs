//! `tsr.if` and `tsr.trap`: reference semantics against hand-computed results, the region text
//! form (snapshot, round trip, property test), and the verifier's diagnostics for regions.

use proptest::prelude::{prop_assert, prop_assert_eq, proptest, ProptestConfig};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{BlockArg, Graph};
use tessera_ir::mlir::{parse_verified, print_graph};
use tessera_ir::ops::control::{IfRegions, Trap, REGION_NAME};
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add_named, f32s, input};
use tessera_ir::testing::{arb_graph_with, round_tripped_text, ArbGraphConfig};
use tessera_ir::types::{Dim, TensorType};
use tessera_ir::verify::verify;

fn bool_scalar() -> TensorType {
    TensorType::new(DType::Bool, vec![])
}

/// A region `x -> x <op> k` over `[n]` f32.
fn affine_region(n: u64, op: BinaryOp, k: f64, result: &str) -> Graph {
    let mut r = Graph::new(REGION_NAME);
    let x = input(&mut r, "x", f32s(&[n]));
    let c = add_named(
        &mut r,
        &format!("{result}_k"),
        Op::Constant(Tensor::from_f64(DType::F32, vec![n as usize], vec![k; n as usize])),
        &[],
    );
    let y = add_named(&mut r, result, Op::Binary(op), &[x, c]);
    r.set_outputs(vec![y]);
    r
}

/// `if cond then x + 1 else x * 2` over `[2]` f32.
fn choose() -> Graph {
    let mut g = Graph::new("choose");
    let cond = input(&mut g, "cond", bool_scalar());
    let x = input(&mut g, "x", f32s(&[2]));
    let regions = IfRegions {
        then_branch: affine_region(2, BinaryOp::Add, 1.0, "plus"),
        else_branch: affine_region(2, BinaryOp::Mul, 2.0, "times"),
    };
    let y = add_named(&mut g, "y", Op::If(Box::new(regions)), &[cond, x]);
    g.set_outputs(vec![y]);
    g
}

fn floats(t: &Tensor) -> Vec<f64> {
    match &t.data {
        tessera_ir::tensor::Buffer::Int(_) => panic!("expected floats, got {}", t.dtype),
        _ => t.to_f64_vec(),
    }
}

#[test]
fn if_runs_the_branch_its_condition_picks() {
    let g = choose();
    verify(&g).expect("verifies");
    let (_, node) = g.nodes().next().expect("one node");
    let x = Tensor::from_f64(DType::F32, vec![2], vec![1.0, 2.0]);
    let result = [f32s(&[2])];
    for (cond, expected) in [(1, vec![2.0, 3.0]), (0, vec![2.0, 4.0])] {
        let c = Tensor::from_i64(DType::Bool, vec![], vec![cond]);
        let out = node.op.eval(&[&c, &x], &result).expect("evaluates");
        assert_eq!(floats(&out[0]), expected, "cond = {cond}");
    }
}

#[test]
fn if_binds_symbolic_block_arguments_from_its_operands() {
    // The region is typed over `[n]`; the operand is concrete: the yield is bound to it.
    let mut region = Graph::new(REGION_NAME);
    let x = input(&mut region, "x", TensorType::new(DType::F32, vec![Dim::sym("n")]));
    let y = add_named(&mut region, "neg", Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Neg), &[x]);
    region.set_outputs(vec![y]);
    let op = Op::If(Box::new(IfRegions { then_branch: region.clone(), else_branch: region }));
    let concrete = f32s(&[3]);
    let types = op.infer(&[&bool_scalar(), &concrete]).expect("infers");
    assert_eq!(types, vec![concrete.clone()]);
    let c = Tensor::from_i64(DType::Bool, vec![], vec![1]);
    let x = Tensor::from_f64(DType::F32, vec![3], vec![1.0, -2.0, 0.5]);
    let out = op.eval(&[&c, &x], &[concrete]).expect("evaluates");
    assert_eq!(floats(&out[0]), vec![-1.0, 2.0, -0.5]);
}

#[test]
fn a_trap_fails_with_its_message_only_when_taken() {
    let mut trap_region = Graph::new(REGION_NAME);
    input(&mut trap_region, "x", f32s(&[2]));
    let trap = Op::Trap(Box::new(Trap { message: "the 8 kHz path needs 256 samples".into(), types: vec![f32s(&[2])] }));
    let t = add_named(&mut trap_region, "never", trap, &[]);
    trap_region.set_outputs(vec![t]);
    let op = Op::If(Box::new(IfRegions {
        then_branch: affine_region(2, BinaryOp::Add, 1.0, "plus"),
        else_branch: trap_region,
    }));
    let x = Tensor::from_f64(DType::F32, vec![2], vec![1.0, 2.0]);
    let taken = Tensor::from_i64(DType::Bool, vec![], vec![1]);
    assert_eq!(floats(&op.eval(&[&taken, &x], &[f32s(&[2])]).expect("then runs")[0]), vec![2.0, 3.0]);
    let not_taken = Tensor::from_i64(DType::Bool, vec![], vec![0]);
    let err = op.eval(&[&not_taken, &x], &[f32s(&[2])]).expect_err("the trap fails");
    assert_eq!(err, "in the else branch: %never = tsr.trap: the 8 kHz path needs 256 samples");
}

#[test]
fn the_region_text_form_is_stable_and_round_trips() {
    insta::assert_snapshot!(round_tripped_text(&choose()));
}

#[test]
fn branches_that_disagree_are_located_errors() {
    let text = r#"func.func @bad(%c: tensor<i1>, %x: tensor<2xf32>) -> (tensor<2xf32>) {
  %y = "tsr.if"(%c, %x) ({
  ^bb0(%a: tensor<2xf32>):
    "tsr.yield"(%a) : (tensor<2xf32>) -> ()
  }, {
  ^bb0(%a: tensor<2xf32>):
    %s = "tsr.reshape"(%a) : (tensor<2xf32>) -> tensor<2x1xf32>
    "tsr.yield"(%s) : (tensor<2x1xf32>) -> ()
  }) : (tensor<i1>, tensor<2xf32>) -> tensor<2xf32>
  return %y : tensor<2xf32>
}
"#;
    let err = parse_verified(text).expect_err("the branches disagree");
    assert_eq!(
        err.to_string(),
        "2:8: %y = tsr.if: the else branch yields (tensor<2x1xf32>) but the then branch yields (tensor<2xf32>)"
    );
    let not_bool = text
        .replace("%c: tensor<i1>", "%c: tensor<f32>")
        .replace("(tensor<i1>, tensor<2xf32>) ->", "(tensor<f32>, tensor<2xf32>) ->");
    let err = parse_verified(&not_bool).expect_err("the condition is not i1");
    assert_eq!(err.to_string(), "2:8: %y = tsr.if: the condition must be an i1 tensor, got tensor<f32>");
    let outer_use = text.replace(
        "\"tsr.yield\"(%a) : (tensor<2xf32>) -> ()\n  }, {",
        "\"tsr.yield\"(%x) : (tensor<2xf32>) -> ()\n  }, {",
    );
    let err = parse_verified(&outer_use).expect_err("regions are isolated from above");
    assert_eq!(err.to_string(), "4:17: use of undefined value %x");
}

/// `g` as both branches of a `tsr.if` whose operands are a condition and `g`'s inputs.
fn wrap_in_if(g: Graph) -> Graph {
    let mut outer = Graph::new("outer");
    let cond = input(&mut outer, "cond", bool_scalar());
    let mut operands = vec![cond];
    for &v in g.inputs() {
        let value = g.value(v);
        operands.push(input(&mut outer, &format!("{}_outer", value.name), value.ty.clone()));
    }
    // Block arguments are activations: the region is rebuilt with its inputs as such.
    let args: Vec<BlockArg> = (0..g.inputs().len()).map(BlockArg::Input).collect();
    let mut region = g.with_block_args(&args).expect("every input is kept");
    region.name = REGION_NAME.to_string();
    let n = region.outputs().len();
    let regions = IfRegions { then_branch: region.clone(), else_branch: region };
    let results: Vec<(String, TensorType)> =
        g.outputs().iter().enumerate().map(|(i, &v)| (format!("r{i}"), g.value(v).ty.clone())).collect();
    let node = outer.add_node_unchecked(Op::If(Box::new(regions)), operands, results);
    let outs = outer.node(node).outputs.clone();
    assert_eq!(outs.len(), n);
    outer.set_outputs(outs);
    outer
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random graphs as regions (nested once or twice) print, parse back equal, and verify.
    #[test]
    fn random_regions_round_trip_through_text(
        g in arb_graph_with(ArbGraphConfig { max_steps: 8, symbolic_dims: true }),
        nested in proptest::bool::ANY,
    ) {
        let mut wrapped = wrap_in_if(g);
        if nested {
            wrapped = wrap_in_if(wrapped);
        }
        prop_assert!(verify(&wrapped).is_ok(), "{:?}", verify(&wrapped).err());
        let text = print_graph(&wrapped);
        let back = parse_verified(&text);
        prop_assert!(back.is_ok(), "{}\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), text);
        let back = back.unwrap_or_else(|_| Graph::new(""));
        prop_assert_eq!(print_graph(&back), text);
        prop_assert_eq!(back, wrapped);
    }
}
