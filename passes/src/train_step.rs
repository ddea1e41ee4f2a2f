//! The training-step builder: forward, loss, backward and optimizer update as ONE graph.
//!
//! Given a forward graph whose single output is the logits `[..., V]`, [`build`] emits a graph
//! that takes the master weights, the optimizer state and one batch of token targets (plus the
//! forward's other activation inputs) per micro-batch, and returns the loss and the updated
//! weights and state. Running it once is one optimizer step.
//!
//! - **Micro-batches** (gradient accumulation): the forward is instantiated once per
//!   micro-batch, sharing the weights; the loss is the mean of the micro-batch losses, so the
//!   backward pass sums the per-micro-batch gradients (each of `loss_k / k`) into one
//!   gradient, and one update follows. With equal micro-batches this is exactly the gradient
//!   of the whole batch.
//! - **Mixed precision**: the master weights and optimizer state have `master` dtype (f32);
//!   when the forward computes in another dtype (bf16), each weight is cast once to it, so the
//!   forward and backward run in bf16 and the cast's gradient rule casts the gradients back to
//!   f32 before the update (the usual "bf16 compute, f32 master weights" recipe).
//!
//! Names: inputs keep the forward's names (prefixed `mb{k}.` when there are several
//! micro-batches), targets are `targets` (`mb{k}.targets`), optimizer state is
//! `{param}.velocity` (SGD) or `{param}.m`/`{param}.v` plus the scalar `step` (AdamW). Outputs are
//! `loss`, then `{param}.next` for every parameter, then the state's `.next` values, in the
//! order of [`TrainStep::params`] and [`TrainStep::state`].
//!
//! # Autodiff and the step builder
//!
//! **`passes::autodiff`, `passes::train_step`**: reverse-mode differentiation appends the
//! backward computation to a graph (activity analysis, then one reverse sweep over the original
//! nodes calling each op's rule); the training-step builder instantiates the forward once per
//! micro-batch on shared f32 master weights (cast to the compute dtype), adds the loss, the
//! backward and one optimizer update per parameter, and returns one graph whose outputs are the
//! loss and the next weights and optimizer state.
//!
//! - **A training step is one graph and its state is explicit.** Weights, optimizer state, the
//!   step count (AdamW's bias correction is an operand, not an attribute), the data position and
//!   the dropout RNG state are all inputs or loop state, never hidden in an op; a checkpoint holds
//!   exactly them, so a resumed run reproduces the uninterrupted losses bit for bit.

use crate::autodiff::{differentiate_traced, AutodiffError};
use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{AddNodeError, Graph, InputRole, NodeId, ValueId};
use tessera_ir::ops::optim::{AdamW, Sgd};
use tessera_ir::ops::Op;
use tessera_ir::types::TensorType;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd(Sgd),
    AdamW(AdamW),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainStepConfig {
    pub optimizer: Optimizer,
    /// Micro-batches accumulated into one update (at least 1).
    pub micro_batches: usize,
    /// Dtype of the master weights and optimizer state.
    pub master: DType,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainStepError {
    #[error("the forward graph must have exactly one output (the logits), got {0}")]
    Outputs(usize),
    #[error("micro_batches must be at least 1")]
    NoMicroBatches,
    #[error("master dtype must be a float type, got {0}")]
    MasterDtype(DType),
    #[error("the forward graph has no parameters to train")]
    NoParameters,
    #[error("building the step: {0}")]
    Build(#[from] AddNodeError),
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
}

/// A state tensor the optimizer keeps per parameter (`velocity`, `m`, `v`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateSlot {
    pub name: String,
    pub ty: TensorType,
}

/// The step graph and how to feed it.
#[derive(Debug, Clone)]
pub struct TrainStep {
    pub graph: Graph,
    /// Master weights: name and type, in output order.
    pub params: Vec<StateSlot>,
    /// Optimizer state per parameter, in output order (all of one parameter's slots together).
    pub state: Vec<StateSlot>,
    /// The scalar `step` input (AdamW), counting updates from 1.
    pub step_input: Option<String>,
    /// Per micro-batch: the forward's activation inputs `(step-graph name, forward name)` and
    /// the targets input name.
    pub micro_batches: Vec<MicroBatchInputs>,
    /// Per step-graph node: its *layer group* for pipeline partitioning
    /// ([`crate::shard::ShardConfig::node_groups`]). A forward node (of any micro-batch) has the
    /// index of the forward-graph node it instantiates; a backward node, its primal's group; the
    /// loss nodes come after every forward node; a parameter's cast and update take the group of
    /// the parameter's first forward use. So a pipeline cut of the groups is a cut between
    /// layers, and the backward and the update of a layer land on the layer's stage.
    pub node_groups: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MicroBatchInputs {
    pub activations: Vec<(String, String)>,
    pub targets: String,
}

/// Builds the training step of `forward` (see the module doc).
pub fn build(forward: &Graph, cfg: &TrainStepConfig) -> Result<TrainStep, TrainStepError> {
    let [logits_out] = forward.outputs() else {
        return Err(TrainStepError::Outputs(forward.outputs().len()));
    };
    if cfg.micro_batches == 0 {
        return Err(TrainStepError::NoMicroBatches);
    }
    if !cfg.master.is_float() {
        return Err(TrainStepError::MasterDtype(cfg.master));
    }
    let fwd_params: Vec<ValueId> =
        forward.inputs().iter().copied().filter(|&v| forward.input_role(v) == Some(InputRole::Parameter)).collect();
    if fwd_params.is_empty() {
        return Err(TrainStepError::NoParameters);
    }
    let mut g = Graph::new(&format!("{}_train_step", forward.name));
    // Master weights and their casts to the compute dtype (one cast shared by micro-batches).
    // The group of each parameter: its first forward use.
    let first_use = |p: ValueId| forward.nodes().find(|(_, n)| n.inputs.contains(&p)).map_or(0, |(id, _)| id.index());
    let loss_group = forward.num_nodes();
    let mut groups: Vec<Option<usize>> = Vec::new();
    let mut params = Vec::new();
    let mut masters = Vec::new();
    let mut compute: HashMap<ValueId, ValueId> = HashMap::new();
    for &p in &fwd_params {
        let v = forward.value(p);
        let ty = v.ty.with_dtype(cfg.master);
        let master = g.add_input(&v.name, ty.clone(), InputRole::Parameter);
        let used = if v.ty.dtype == cfg.master { master } else { g.add(Op::Cast { to: v.ty.dtype }, &[master])? };
        groups.resize(g.num_nodes(), Some(first_use(p)));
        compute.insert(p, used);
        masters.push(master);
        params.push(StateSlot { name: v.name.clone(), ty });
    }
    // Optimizer state inputs.
    let slot_names: &[&str] = match cfg.optimizer {
        Optimizer::Sgd(_) => &["velocity"],
        Optimizer::AdamW(_) => &["m", "v"],
    };
    let mut state = Vec::new();
    let mut state_inputs = Vec::new();
    for slot in &params {
        for s in slot_names {
            let name = format!("{}.{s}", slot.name);
            state_inputs.push(g.add_input(&name, slot.ty.clone(), InputRole::Activation));
            state.push(StateSlot { name, ty: slot.ty.clone() });
        }
    }
    // The update op, with AdamW's step counter input.
    #[derive(Clone, Copy)]
    enum Update {
        Sgd(Sgd),
        AdamW(AdamW, ValueId),
    }
    let update = match cfg.optimizer {
        Optimizer::AdamW(h) => {
            Update::AdamW(h, g.add_input("step", TensorType::of_static(DType::I64, &[]), InputRole::Activation))
        }
        Optimizer::Sgd(h) => Update::Sgd(h),
    };
    // One forward and loss per micro-batch.
    let logits_ty = &forward.value(*logits_out).ty;
    let target_dims = logits_ty.dims[..logits_ty.rank().saturating_sub(1)].to_vec();
    let mut micro = Vec::new();
    let mut losses = Vec::new();
    for k in 0..cfg.micro_batches {
        let prefix = if cfg.micro_batches == 1 { String::new() } else { format!("mb{k}.") };
        let mut map = compute.clone();
        let mut activations = Vec::new();
        for &a in forward.inputs() {
            if forward.input_role(a) == Some(InputRole::Parameter) {
                continue;
            }
            let v = forward.value(a);
            let name = format!("{prefix}{}", v.name);
            map.insert(a, g.add_input(&name, v.ty.clone(), InputRole::Activation));
            activations.push((name, v.name.clone()));
        }
        let targets_name = format!("{prefix}targets");
        let targets =
            g.add_input(&targets_name, TensorType::new(DType::I64, target_dims.clone()), InputRole::Activation);
        for (id, node) in forward.nodes() {
            let inputs: Vec<ValueId> = node.inputs.iter().map(|v| map[v]).collect();
            let outs = g.add_node(node.op.clone(), &inputs)?;
            groups.resize(g.num_nodes(), Some(id.index()));
            for (&old, new) in node.outputs.iter().zip(outs) {
                map.insert(old, new);
            }
        }
        losses.push(g.add(Op::CrossEntropy, &[map[logits_out], targets])?);
        groups.resize(g.num_nodes(), Some(loss_group));
        micro.push(MicroBatchInputs { activations, targets: targets_name });
    }
    let mut loss = losses[0];
    for &l in &losses[1..] {
        loss = g.add(Op::Binary(tessera_ir::ops::elementwise::BinaryOp::Add), &[loss, l])?;
    }
    if losses.len() > 1 {
        let dtype = g.value(loss).ty.dtype;
        let k = g.add(Op::Constant(tessera_ir::tensor::Tensor::scalar(dtype, 1.0 / losses.len() as f64)), &[])?;
        loss = g.add(Op::Binary(tessera_ir::ops::elementwise::BinaryOp::Mul), &[loss, k])?;
    }
    groups.resize(g.num_nodes(), Some(loss_group));
    let (grads, primals) = differentiate_traced(&mut g, loss, &masters)?;
    for primal in primals {
        groups.push(primal.and_then(|p: NodeId| groups.get(p.index()).copied().flatten()));
    }
    // Updates.
    let mut next_params = Vec::new();
    let mut next_state = Vec::new();
    for (i, (&p, &dp)) in masters.iter().zip(&grads).enumerate() {
        let outs = match update {
            Update::AdamW(h, step) => {
                g.add_node(Op::AdamW(h), &[p, dp, state_inputs[2 * i], state_inputs[2 * i + 1], step])?
            }
            Update::Sgd(h) => g.add_node(Op::Sgd(h), &[p, dp, state_inputs[i]])?,
        };
        groups.resize(g.num_nodes(), Some(first_use(fwd_params[i])));
        next_params.push(outs[0]);
        next_state.extend(&outs[1..]);
    }
    // The loss may be an output of a forward node that another name already uses: alias it.
    let loss_out = rename_output(&mut g, loss, "loss")?;
    let mut outputs = vec![loss_out];
    for (slot, &v) in params.iter().zip(&next_params) {
        outputs.push(rename_output(&mut g, v, &format!("{}.next", slot.name))?);
    }
    for (slot, &v) in state.iter().zip(&next_state) {
        outputs.push(rename_output(&mut g, v, &format!("{}.next", slot.name))?);
    }
    g.set_outputs(outputs);
    groups.resize(g.num_nodes(), None);
    let live = crate::dce::live_nodes(&g);
    g.retain_nodes(|id, _| live[id.index()]);
    let node_groups = groups.into_iter().zip(&live).filter(|(_, &l)| l).map(|(grp, _)| grp).collect();
    Ok(TrainStep {
        graph: g,
        params,
        state,
        step_input: matches!(update, Update::AdamW(..)).then(|| "step".to_string()),
        micro_batches: micro,
        node_groups,
    })
}

/// Gives the node result `v` the name `name` (names of graph outputs are what the executor
/// returns them by).
fn rename_output(g: &mut Graph, v: ValueId, name: &str) -> Result<ValueId, TrainStepError> {
    if g.has_name(name) {
        return Err(TrainStepError::Build(AddNodeError {
            op: "rename",
            message: format!("the forward graph already has a value named '{name}'"),
        }));
    }
    g.rename_value(v, name);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::ops::elementwise::BinaryOp;
    use tessera_ir::verify::verify;

    /// `logits = x @ w + b` in bf16, with `x` an activation input.
    fn linear_bf16() -> Graph {
        let mut g = Graph::new("linear");
        let x = g.add_input("x", TensorType::of_static(DType::BF16, &[2, 3, 4]), InputRole::Activation);
        let w = g.add_input("w", TensorType::of_static(DType::BF16, &[4, 5]), InputRole::Parameter);
        let b = g.add_input("b", TensorType::of_static(DType::BF16, &[2, 3, 5]), InputRole::Parameter);
        let y = g.add(Op::MatMul, &[x, w]).expect("matmul");
        let y = g.add(Op::Binary(BinaryOp::Add), &[y, b]).expect("add");
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn mixed_precision_keeps_f32_masters_and_casts_once_per_weight() {
        let cfg =
            TrainStepConfig { optimizer: Optimizer::AdamW(AdamW::default()), micro_batches: 2, master: DType::F32 };
        let step = build(&linear_bf16(), &cfg).expect("step");
        verify(&step.graph).expect("the step verifies");
        let g = &step.graph;
        let name_of = |v: ValueId| g.value(v).name.clone();
        let inputs: Vec<String> = g.inputs().iter().map(|&v| name_of(v)).collect();
        assert_eq!(
            inputs,
            ["w", "b", "w.m", "w.v", "b.m", "b.v", "step", "mb0.x", "mb0.targets", "mb1.x", "mb1.targets"]
        );
        let outputs: Vec<String> = g.outputs().iter().map(|&v| name_of(v)).collect();
        assert_eq!(outputs, ["loss", "w.next", "b.next", "w.m.next", "w.v.next", "b.m.next", "b.v.next"]);
        // Masters and their updates are f32; the forward runs in bf16.
        for &v in g.inputs().iter().take(6).chain(&g.outputs()[1..]) {
            assert_eq!(g.value(v).ty.dtype, DType::F32, "%{}", name_of(v));
        }
        // One cast down per weight (shared by both micro-batches), one cast up per gradient.
        let casts_of = |from_input: bool, to: DType| {
            g.nodes()
                .filter(|(_, n)| n.op == Op::Cast { to } && g.producer(n.inputs[0]).is_none() == from_input)
                .count()
        };
        assert_eq!(casts_of(true, DType::BF16), 2);
        assert_eq!(casts_of(false, DType::F32), 2);
        assert_eq!(g.nodes().filter(|(_, n)| matches!(n.op, Op::CrossEntropy)).count(), 2);
        assert_eq!(g.nodes().filter(|(_, n)| matches!(n.op, Op::AdamW(_))).count(), 2);
    }

    #[test]
    fn node_groups_follow_the_forward_layer() {
        let cfg =
            TrainStepConfig { optimizer: Optimizer::AdamW(AdamW::default()), micro_batches: 2, master: DType::F32 };
        let forward = linear_bf16();
        let step = build(&forward, &cfg).expect("step");
        let g = &step.graph;
        assert_eq!(step.node_groups.len(), g.num_nodes());
        let group_of = |pred: &dyn Fn(&Op) -> bool| -> Vec<Option<usize>> {
            g.nodes().filter(|(_, n)| pred(&n.op)).map(|(id, _)| step.node_groups[id.index()]).collect()
        };
        // Forward node 0 is the matmul, node 1 the add; the loss comes after both.
        let loss = Some(forward.num_nodes());
        assert_eq!(group_of(&|op| matches!(op, Op::CrossEntropy)), [loss, loss]);
        // The matmuls: two forward copies (group 0) and the weight-gradient matmul of each (x
        // is an input, so it gets none).
        assert_eq!(group_of(&|op| matches!(op, Op::MatMul)), [Some(0); 4]);
        // w's update goes with the matmul, b's with the add.
        assert_eq!(group_of(&|op| matches!(op, Op::AdamW(_))), [Some(0), Some(1)]);
        // Only constants (the loss seed, scale literals) have no group.
        for (id, n) in g.nodes() {
            assert!(step.node_groups[id.index()].is_some() || n.inputs.is_empty(), "{:?}", n.op);
        }
    }

    #[test]
    fn bad_configurations_are_errors() {
        let sgd = Optimizer::Sgd(Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 });
        let cfg = TrainStepConfig { optimizer: sgd, micro_batches: 0, master: DType::F32 };
        assert_eq!(build(&linear_bf16(), &cfg).expect_err("no micro-batches"), TrainStepError::NoMicroBatches);
        let cfg = TrainStepConfig { optimizer: sgd, micro_batches: 1, master: DType::I32 };
        assert_eq!(build(&linear_bf16(), &cfg).expect_err("int masters"), TrainStepError::MasterDtype(DType::I32));
        let mut no_params = Graph::new("f");
        let x = no_params.add_input("x", TensorType::of_static(DType::F32, &[2, 3]), InputRole::Activation);
        no_params.set_outputs(vec![x]);
        let cfg = TrainStepConfig { optimizer: sgd, micro_batches: 1, master: DType::F32 };
        assert_eq!(build(&no_params, &cfg).expect_err("nothing to train"), TrainStepError::NoParameters);
    }
}
