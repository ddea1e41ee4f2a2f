//! Constant exponents of `pow` inside kernels: a scalar constant is a weight (it never joins a
//! fusion group, and its broadcast, weight-only work, is computed once at bind), so a kernel
//! that computes `pow(x, broadcast(c))` sees `c` or its broadcast as an operand buffer and must
//! call libm's `powf`, which keeps its loop scalar. GPT-2's ONNX export spells
//! its GELU's cube that way (`Pow(x, 3.0)`): 9% of a one-thread run in one scalar kernel. Here
//! such an operand becomes a constant inside the kernel graph, so the emitter sees the exponent
//! and multiplies (`emit::pointwise`'s small powers). The kernel keeps its operands (the buffer
//! is still passed, unread), so the program's steps do not change, and a kernel whose exponents
//! are not small constants is left as it was.

use std::collections::HashMap;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_passes::fuse::KernelGraph;

/// The power a float constant raises to when all its elements equal one integer from 1 to 4:
/// such powers are computed by multiplication (2 ulp at most), any other by `powf`.
pub(crate) fn small_integer_power(t: &Tensor) -> Option<u32> {
    if !t.dtype.is_float() || t.is_empty() {
        return None;
    }
    let power = t.get_f64(0);
    let small = (1.0..=4.0).contains(&power) && power.fract() == 0.0;
    (small && (1..t.len()).all(|i| t.get_f64(i).to_bits() == power.to_bits())).then_some(power as u32)
}

/// `kernel` (extracted from `g`) with every operand that is a `pow` exponent (through
/// broadcasts and reshapes inside the kernel) and, in `g`, a one-element constant or a
/// broadcast of one (which the program computes once at bind) computed inside the kernel instead, when its value is a small integer power
/// ([`small_integer_power`]).
pub(crate) fn inline_constant_exponents(g: &Graph, kernel: KernelGraph) -> KernelGraph {
    let k = &kernel.graph;
    let position: HashMap<ValueId, usize> = k.inputs().iter().enumerate().map(|(i, &v)| (v, i)).collect();
    // Kernel input position -> the one-element constant that defines it in `g`, and its type.
    let mut constants: HashMap<usize, (Tensor, tessera_ir::types::TensorType)> = HashMap::new();
    for (_, node) in k.nodes() {
        if node.op != Op::Binary(BinaryOp::Pow) {
            continue;
        }
        let mut exponent = node.inputs[1];
        while let Some(producer) = k.producer(exponent) {
            match k.node(producer).op {
                Op::Broadcast { .. } | Op::Reshape { .. } => exponent = k.node(producer).inputs[0],
                _ => break,
            }
        }
        let Some(&at) = position.get(&exponent) else { continue };
        // In `g` the operand is the constant, or its broadcast (weight-only work: a bind step).
        let mut source = kernel.inputs[at];
        while let Some(producer) = g.producer(source) {
            match &g.node(producer).op {
                Op::Broadcast { .. } | Op::Reshape { .. } => source = g.node(producer).inputs[0],
                Op::Constant(t) if t.len() == 1 && small_integer_power(t).is_some() => {
                    constants.insert(at, (t.clone(), g.value(source).ty.clone()));
                    break;
                }
                _ => break,
            }
        }
    }
    if constants.is_empty() {
        return kernel;
    }
    let mut graph = Graph::new(&k.name);
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (at, &v) in k.inputs().iter().enumerate() {
        let value = k.value(v);
        let role = k.input_role(v).unwrap_or(tessera_ir::graph::InputRole::Activation);
        let input = graph.add_input(&value.name, value.ty.clone(), role);
        map.insert(v, input);
        if let Some((constant, constant_ty)) = constants.remove(&at) {
            let name = format!("exponent_{}", value.name);
            let node = graph.add_node_unchecked(Op::Constant(constant), Vec::new(), vec![(name, constant_ty.clone())]);
            let mut exponent = graph.node(node).outputs[0];
            if constant_ty.dims != value.ty.dims {
                let name = format!("exponent_broadcast_{}", value.name);
                let spread = Op::Broadcast { shape: value.ty.dims.clone() };
                let node = graph.add_node_unchecked(spread, vec![exponent], vec![(name, value.ty.clone())]);
                exponent = graph.node(node).outputs[0];
            }
            map.insert(v, exponent);
        }
    }
    for (_, node) in k.nodes() {
        let operands = node.inputs.iter().map(|v| map[v]).collect();
        let results = node.outputs.iter().map(|&v| (k.value(v).name.clone(), k.value(v).ty.clone())).collect();
        let new_node = graph.add_node_unchecked(node.op.clone(), operands, results);
        for (&old, &new) in node.outputs.iter().zip(&graph.node(new_node).outputs.clone()) {
            map.insert(old, new);
        }
    }
    graph.set_outputs(k.outputs().iter().map(|v| map[v]).collect());
    KernelGraph { graph, inputs: kernel.inputs, outputs: kernel.outputs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::testing::build::{add, broadcast, f32s, input};
    use tessera_passes::fuse::extract_kernel;

    /// `pow(x, broadcast(c))` with `c` a scalar constant outside the group (a weight), as the
    /// ONNX importer writes GPT-2's GELU cube, and with the broadcast outside too (a bind step):
    /// the kernel computes the exponent inside and emits no `powf` call for 2 and 3, keeps its
    /// operands, and is left alone for other exponents.
    #[test]
    fn scalar_constant_exponents_move_inside_the_kernel() {
        // `skip`: the group starts at the broadcast (1) or at the pow, the broadcast outside.
        for (exponent, inline, skip) in [(3.0, true, 1), (2.5, false, 1), (2.0, true, 2), (1.5, false, 2)] {
            let mut g = Graph::new("gelu_cube");
            let x = input(&mut g, "x", f32s(&[4, 8]));
            let c =
                add(&mut g, Op::Constant(Tensor::from_f64(tessera_ir::dtype::DType::F32, vec![], vec![exponent])), &[]);
            let b = broadcast(&mut g, c, &[4, 8]);
            let y = add(&mut g, Op::Binary(BinaryOp::Pow), &[x, b]);
            g.set_outputs(vec![y]);
            let members: Vec<_> = g.nodes().map(|(id, _)| id).skip(skip).collect();
            let kernel = extract_kernel(&g, &members, "k").unwrap();
            let operands = if skip == 1 { vec![c, x] } else { vec![x, b] };
            assert_eq!(kernel.inputs, operands);
            let before = crate::emit::emit_kernel("k", &kernel.graph).unwrap().function;
            assert!(before.contains("math.powf"));
            let inlined = inline_constant_exponents(&g, kernel);
            assert_eq!(inlined.inputs, operands, "the step's operands stay");
            assert_eq!(inlined.graph.inputs().len(), 2);
            // The operand's name is a number here (as the importer's broadcasts are), and the
            // new values' names must still be valid SSA names.
            crate::supports(&inlined.graph).unwrap();
            let after = crate::emit::emit_kernel("k", &inlined.graph).unwrap().function;
            assert_eq!(after.contains("math.powf"), !inline, "x^{exponent}");
            assert_eq!(after == before, !inline, "only a small power changes the kernel");
        }
    }
}
