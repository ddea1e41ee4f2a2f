//! [`supports`]: whether the code generator can compile a kernel graph, and if not, which
//! value or op is the reason. The fusion pass calls it to keep groups compilable.

use crate::error::Unsupported;
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::Op;
use tessera_ir::verify::{node_subject, verify};
use tessera_kernels::template::template;

/// The largest non-splat literal tensor a kernel may contain.
pub const MAX_CONSTANT_ELEMENTS: usize = 1 << 16;

fn is_splat(t: &tessera_ir::tensor::Tensor) -> bool {
    match &t.data {
        tessera_ir::tensor::Buffer::Float(v) => v.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()),
        tessera_ir::tensor::Buffer::F32(v) => v.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()),
        tessera_ir::tensor::Buffer::F16(v) => v.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()),
        tessera_ir::tensor::Buffer::BF16(v) => v.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()),
        tessera_ir::tensor::Buffer::Int(v) => v.windows(2).all(|w| w[0] == w[1]),
    }
}

/// The element types the CPU and GPU code generators emit; the others (8- and 4-bit floats,
/// unsigned and 16-, 4- and 2-bit integers) stay on the reference path.
fn compiled_dtype(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::I64 | DType::I32 | DType::I8 | DType::Bool
    )
}

/// `Ok` when [`crate::compile_cpu`] (and [`crate::compile_ptx`]) can compile `g`: it verifies,
/// every shape is static, every element type is one codegen emits, every op has a template, and no literal
/// is large (see [`MAX_CONSTANT_ELEMENTS`]).
pub fn supports(g: &Graph) -> Result<(), Unsupported> {
    verify(g).map_err(|e| Unsupported::InvalidGraph(e.to_string()))?;
    for (_, value) in g.values() {
        if value.ty.static_shape().is_none() {
            return Err(Unsupported::SymbolicShape { value: value.name.clone(), ty: value.ty.to_string() });
        }
        if !compiled_dtype(value.ty.dtype) {
            return Err(Unsupported::DType { value: value.name.clone(), dtype: value.ty.dtype });
        }
    }
    for (id, node) in g.nodes() {
        if template(&node.op).is_none() {
            return Err(Unsupported::Op { op: node.op.mnemonic(), node: id, subject: node_subject(g, id) });
        }
        // Literal tensors become MLIR text (one hex literal per element) compiled into the
        // object; weights belong in kernel inputs, so big non-splat literals are refused.
        if let Op::Constant(t) = &node.op {
            if t.len() > MAX_CONSTANT_ELEMENTS && !is_splat(t) {
                let reason = format!(
                    "a literal of {} elements (more than {MAX_CONSTANT_ELEMENTS}); pass it as a kernel input",
                    t.len()
                );
                return Err(Unsupported::Operands { node: id, subject: node_subject(g, id), reason });
            }
        }
        // A window over an empty input would clamp its taps to index 0 of an empty buffer.
        if matches!(node.op, Op::Conv2d { .. } | Op::Pool2d { .. }) {
            let empty = |v: tessera_ir::graph::ValueId| g.value(v).ty.num_elements() == Some(0);
            if empty(node.inputs[0]) && !empty(node.outputs[0]) {
                let reason = "a window over an empty input".to_string();
                return Err(Unsupported::Operands { node: id, subject: node_subject(g, id), reason });
            }
        }
        // The reference rejects argmax over an empty axis at run time; the kernel would read
        // out of bounds, so such graphs are refused up front.
        if let Op::ArgMax { axis, .. } = &node.op {
            let shape = g.value(node.inputs[0]).ty.static_shape().unwrap_or_default();
            let ax = tessera_ir::types::normalize_axis(*axis, shape.len());
            let others: u64 = shape.iter().enumerate().filter(|&(d, _)| Some(d) != ax).map(|(_, &n)| n).product();
            if ax.is_some_and(|a| shape[a] == 0) && others > 0 {
                let reason = "argmax over an axis of extent zero has no value".to_string();
                return Err(Unsupported::Operands { node: id, subject: node_subject(g, id), reason });
            }
        }
    }
    Ok(())
}
