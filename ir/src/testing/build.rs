//! Graph-building helpers every crate's hand-written graph tests share: tensor types from
//! static shapes, inputs by role, and single-result nodes that panic with the shape rule's
//! message (a test graph that does not type-check is a typo in the test, not user data).
//!
//! They are free functions over `&mut Graph` rather than a builder type so that a test keeps
//! the [`Graph`] it inspects, renames values and sets outputs on with the graph's own API.

use crate::dtype::DType;
use crate::graph::{Graph, InputRole, ValueId};
use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

/// A tensor type of `dtype` with the static `shape`.
pub fn ty(dtype: DType, shape: &[u64]) -> TensorType {
    TensorType::of_static(dtype, shape)
}

/// An `f32` tensor type with the static `shape`.
pub fn f32s(shape: &[u64]) -> TensorType {
    ty(DType::F32, shape)
}

/// An `f64` tensor type with the static `shape`.
pub fn f64s(shape: &[u64]) -> TensorType {
    ty(DType::F64, shape)
}

/// The static dimensions of `shape` (for ops such as `broadcast` and `reshape`).
pub fn dims(shape: &[u64]) -> Vec<Dim> {
    shape.iter().map(|&n| Dim::Static(n)).collect()
}

/// Adds an activation input.
pub fn input(g: &mut Graph, name: &str, t: TensorType) -> ValueId {
    g.add_input(name, t, InputRole::Activation)
}

/// Adds a parameter input.
pub fn param(g: &mut Graph, name: &str, t: TensorType) -> ValueId {
    g.add_input(name, t, InputRole::Parameter)
}

/// Adds a single-result node; panics with the op's mnemonic and the shape rule's message.
pub fn add(g: &mut Graph, op: Op, inputs: &[ValueId]) -> ValueId {
    let mnemonic = op.mnemonic();
    g.add(op, inputs).unwrap_or_else(|e| panic!("building the test graph: {mnemonic}: {e}"))
}

/// Adds a single-result node and names its result (how the printed text spells it).
pub fn add_named(g: &mut Graph, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
    let v = add(g, op, inputs);
    g.rename_value(v, name);
    v
}

/// `x` broadcast to the static `shape`.
pub fn broadcast(g: &mut Graph, x: ValueId, shape: &[u64]) -> ValueId {
    add(g, Op::Broadcast { shape: dims(shape) }, &[x])
}

/// A scalar constant broadcast to `shape` (two nodes: how splats appear in imported graphs).
pub fn broadcast_scalar(g: &mut Graph, dtype: DType, value: f64, shape: &[u64]) -> ValueId {
    let c = add(g, Op::Constant(Tensor::scalar(dtype, value)), &[]);
    broadcast(g, c, shape)
}

/// One constant node of `shape` with every element `value` (truncated for integer types).
pub fn filled_constant(g: &mut Graph, dtype: DType, shape: &[u64], value: f64) -> ValueId {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n = shape.iter().product();
    let t = if dtype.is_float() {
        Tensor::from_f64(dtype, shape, vec![value; n])
    } else {
        Tensor::from_i64(dtype, shape, vec![value as i64; n])
    };
    add(g, Op::Constant(t), &[])
}

/// `blocks` residual blocks over a `[16, 32]` activation: `x + softmax(gelu(x @ w + b) * x)`,
/// with an f16 round trip (two casts), so each block has one library call and one fusible chain
/// (9 ops a block). The graph the `fuse` bench times and its scaling test checks.
pub fn residual_stack(blocks: usize) -> Graph {
    let t = "tensor<16x32xf32>";
    let mut params = vec![format!("%x: {t}")];
    let mut body = String::new();
    let mut cur = "%x".to_string();
    for i in 0..blocks {
        params.push(format!("%w{i}: tensor<32x32xf32> {{tsr.param}}, %b{i}: tensor<32xf32> {{tsr.param}}"));
        body += &format!(
            "  %h{i} = \"tsr.matmul\"({cur}, %w{i}) : ({t}, tensor<32x32xf32>) -> {t}\n\
             \x20 %bb{i} = \"tsr.broadcast\"(%b{i}) : (tensor<32xf32>) -> {t}\n\
             \x20 %a{i} = \"tsr.add\"(%h{i}, %bb{i}) : ({t}, {t}) -> {t}\n\
             \x20 %g{i} = \"tsr.gelu\"(%a{i}) : ({t}) -> {t}\n\
             \x20 %m{i} = \"tsr.mul\"(%g{i}, {cur}) : ({t}, {t}) -> {t}\n\
             \x20 %s{i} = \"tsr.softmax\"(%m{i}) {{axis = -1 : i64}} : ({t}) -> {t}\n\
             \x20 %c{i} = \"tsr.cast\"(%s{i}) : ({t}) -> tensor<16x32xf16>\n\
             \x20 %d{i} = \"tsr.cast\"(%c{i}) : (tensor<16x32xf16>) -> {t}\n\
             \x20 %r{i} = \"tsr.add\"(%d{i}, {cur}) : ({t}, {t}) -> {t}\n"
        );
        cur = format!("%r{i}");
    }
    let text = format!("func.func @stack({}) -> ({t}) {{\n{body}  return {cur} : {t}\n}}\n", params.join(", "));
    crate::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("the residual stack parses: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{add_named, broadcast_scalar, f32s, filled_constant, input, param};
    use crate::dtype::DType;
    use crate::graph::{Graph, InputRole};
    use crate::ops::elementwise::BinaryOp;
    use crate::ops::Op;
    use crate::verify::verify;

    #[test]
    fn builds_a_verified_graph_with_named_values_and_roles() {
        let mut g = Graph::new("t");
        let x = input(&mut g, "x", f32s(&[2, 3]));
        let w = param(&mut g, "w", f32s(&[2, 3]));
        let one = broadcast_scalar(&mut g, DType::F32, 1.0, &[2, 3]);
        let twos = filled_constant(&mut g, DType::I32, &[2], 2.7);
        let s = add_named(&mut g, "s", Op::Binary(BinaryOp::Add), &[x, w]);
        let y = add_named(&mut g, "y", Op::Binary(BinaryOp::Add), &[s, one]);
        g.set_outputs(vec![y, twos]);
        verify(&g).expect("verifies");
        let roles: Vec<Option<InputRole>> = g.inputs().iter().map(|&v| g.input_role(v)).collect();
        assert_eq!(roles, [Some(InputRole::Activation), Some(InputRole::Parameter)]);
        assert_eq!(g.value(y).name, "y");
        assert_eq!(g.value(y).ty, f32s(&[2, 3]));
        let mnemonics: Vec<&str> = g.nodes().map(|(_, n)| n.op.mnemonic()).collect();
        assert_eq!(mnemonics, ["constant", "broadcast", "constant", "add", "add"]);
    }
}
