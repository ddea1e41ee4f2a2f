//! A thin graph builder for the zoo: adds nodes through the shape rule, names parameters, and
//! records the side tables (node role, collective sites) as it goes.

use crate::zoo::build::{CommSite, Role, ZooBlock};
use crate::zoo::ZooError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

pub(crate) struct Builder {
    /// The graph and its side tables, as [`Builder::finish`] hands them over.
    pub block: ZooBlock,
    /// The role given to nodes added from now on.
    pub role: Role,
    pub dtype: DType,
    model: String,
}

pub(crate) fn dims(shape: &[u64]) -> Vec<Dim> {
    shape.iter().map(|&n| Dim::Static(n)).collect()
}

impl Builder {
    pub fn new(name: &str, model: &str, dtype: DType) -> Builder {
        Builder {
            block: ZooBlock {
                graph: Graph::new(name),
                roles: Vec::new(),
                comms: Vec::new(),
                expert_params: Vec::new(),
                stream_inputs: Vec::new(),
                cache_inputs: Vec::new(),
            },
            role: Role::Replicated,
            dtype,
            model: model.to_string(),
        }
    }

    pub fn finish(self, outputs: Vec<ValueId>) -> ZooBlock {
        let mut block = self.block;
        block.graph.set_outputs(outputs);
        block
    }

    fn error(&self, what: &str, message: String) -> ZooError {
        ZooError::Build { model: self.model.clone(), what: what.to_string(), message }
    }

    pub fn shape(&self, v: ValueId) -> Vec<u64> {
        // Zoo graphs are fully static; a symbolic dimension would be a builder bug, shown as 0.
        self.block.graph.value(v).ty.dims.iter().map(|d| d.as_static().unwrap_or(0)).collect()
    }

    pub fn param(&mut self, name: &str, shape: &[u64]) -> ValueId {
        self.block.graph.add_input(name, TensorType::of_static(self.dtype, shape), InputRole::Parameter)
    }

    pub fn expert_param(&mut self, name: &str, shape: &[u64]) -> ValueId {
        let v = self.param(name, shape);
        self.block.expert_params.push(v);
        v
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[u64]) -> ValueId {
        self.block.graph.add_input(name, TensorType::of_static(dtype, shape), InputRole::Activation)
    }

    /// KV cache of earlier tokens (serving).
    pub fn cache_input(&mut self, name: &str, shape: &[u64]) -> ValueId {
        let v = self.input(name, self.dtype, shape);
        self.block.cache_inputs.push(v);
        v
    }

    /// The residual stream (or the token ids) entering a block; gradients flow into it.
    pub fn stream_input(&mut self, name: &str, dtype: DType, shape: &[u64]) -> ValueId {
        let v = self.input(name, dtype, shape);
        self.block.stream_inputs.push(v);
        v
    }

    pub fn op(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, ZooError> {
        let mnemonic = op.mnemonic();
        let v = self.block.graph.add(op, inputs).map_err(|e| self.error(mnemonic, e.message))?;
        self.block.roles.push(self.role);
        Ok(v)
    }

    pub fn ops(&mut self, op: Op, inputs: &[ValueId]) -> Result<Vec<ValueId>, ZooError> {
        let mnemonic = op.mnemonic();
        let vs = self.block.graph.add_node(op, inputs).map_err(|e| self.error(mnemonic, e.message))?;
        self.block.roles.push(self.role);
        Ok(vs)
    }

    /// Marks `v` as needing collective `site` across its group before any use.
    pub fn comm(&mut self, site: fn(ValueId) -> CommSite, v: ValueId) {
        self.block.comms.push(site(v));
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, ZooError> {
        self.op(Op::Binary(op), &[a, b])
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId, ZooError> {
        self.op(Op::Unary(op), &[x])
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, ZooError> {
        self.op(Op::MatMul, &[a, b])
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[u64]) -> Result<ValueId, ZooError> {
        self.op(Op::Reshape { shape: dims(shape) }, &[x])
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[i64]) -> Result<ValueId, ZooError> {
        self.op(Op::Transpose { perm: perm.to_vec() }, &[x])
    }

    pub fn broadcast(&mut self, x: ValueId, shape: &[u64]) -> Result<ValueId, ZooError> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.op(Op::Broadcast { shape: dims(shape) }, &[x])
    }

    /// `x + bias` with `bias` broadcast over the leading dimensions.
    pub fn add_bias(&mut self, x: ValueId, bias: ValueId) -> Result<ValueId, ZooError> {
        let shape = self.shape(x);
        let b = self.broadcast(bias, &shape)?;
        self.binary(BinaryOp::Add, x, b)
    }

    /// `x * c` for a scalar literal `c`.
    pub fn scale(&mut self, x: ValueId, c: f64) -> Result<ValueId, ZooError> {
        let dtype = self.block.graph.value(x).ty.dtype;
        let shape = self.shape(x);
        let literal = self.op(Op::Constant(Tensor::scalar(dtype, c)), &[])?;
        let splat = self.broadcast(literal, &shape)?;
        self.binary(BinaryOp::Mul, x, splat)
    }

    /// `x op c` for a scalar literal `c` broadcast to `x`'s shape (ONNX's implicit broadcast).
    pub fn binary_scalar(&mut self, op: BinaryOp, x: ValueId, c: f64) -> Result<ValueId, ZooError> {
        let dtype = self.block.graph.value(x).ty.dtype;
        let shape = self.shape(x);
        let literal = self.op(Op::Constant(Tensor::scalar(dtype, c)), &[])?;
        let splat = self.broadcast(literal, &shape)?;
        self.binary(op, x, splat)
    }

    pub fn split(&mut self, x: ValueId, axis: i64, sizes: &[u64]) -> Result<Vec<ValueId>, ZooError> {
        let sizes = sizes.iter().map(|&s| s as i64).collect();
        self.ops(Op::Split { axis, sizes }, &[x])
    }

    pub fn concat(&mut self, xs: &[ValueId], axis: i64) -> Result<ValueId, ZooError> {
        self.op(Op::Concat { axis }, xs)
    }
}
