//! The estimate that extraction minimises, per e-node and for whole graphs: the roofline, or a
//! measured calibration table ([`KernelCosts`]).
//!
//! A kernel costs `overhead + max(flops / peak, bytes / bandwidth)` on the H100 SXM preset of
//! [`tessera_ir::hardware`] ([`DeviceSpec::h100_80g_sxm`]): the bf16 tensor-core peak for
//! `matmul`/`conv2d`, the vector (fp32) peak for everything else, the datasheet HBM bandwidth,
//! and the preset's per-kernel overhead. Peaks and bandwidth are datasheet numbers, not the
//! fractions the cost model applies: extraction compares graphs on one device, and a uniform
//! efficiency would only rescale them. FLOPs are [`Op::flops`]; bytes follow [`crate::stats`]
//! (an unfused kernel reads each operand once and writes each result once).
//! Three conventions of our own:
//! - `reshape`, `slice` and `split` are views: a consumer reads through strides, no kernel
//!   runs. This is what makes a merged QKV matmul pay off (its three parts are views).
//! - under [`Weights::FoldedAtLoad`] (the default) a value computed from parameters and
//!   constants only is folded when weights load (the concatenated QKV weight is prepared once),
//!   so it costs nothing per step. CPU artifacts do this too: such values are their program's
//!   bind steps, run once when the parameters are bound (`ir::artifact::Program::bind_steps`).
//!   Under [`Weights::EveryStep`] it is a kernel like any other: what a runtime that binds
//!   parameters per call (or feeds them per run) pays.
//! - symbolic dimensions count as [`SYMBOL_SIZE`].
//!
//! Extraction picks one e-node per class by tree cost, which counts a shared subterm once per
//! use. A view is therefore charged its share of its operand (elements out / elements in):
//! exact when all parts of a split are used, as after a QKV merge. The pass compares the
//! true DAG cost ([`graph_cost`]) of the result with the original and keeps the cheaper graph.

use super::calibration::{Table, TableError};
use super::lang::{concrete, NodeKind, TsrEGraph, TsrNode};
use egg::{CostFunction, Id};
use std::sync::{Arc, LazyLock};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::hardware::DeviceSpec;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// The device's numbers in the units of this model (microseconds), derived once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelRates {
    /// Launch and tail time of one kernel, microseconds.
    pub overhead_us: f64,
    /// Tensor-core peak (dense bf16), FLOP per microsecond.
    pub matmul_flops_per_us: f64,
    /// Vector-unit peak, FLOP per microsecond.
    pub vector_flops_per_us: f64,
    /// Memory bandwidth, bytes per microsecond.
    pub bytes_per_us: f64,
}

impl KernelRates {
    /// The datasheet rates of `device` (no efficiency fractions).
    pub fn of(device: &DeviceSpec) -> KernelRates {
        KernelRates {
            overhead_us: device.kernel_overhead_us,
            matmul_flops_per_us: device.peak_flops(DType::BF16) / 1e6,
            vector_flops_per_us: device.vector_flops() / 1e6,
            bytes_per_us: device.hbm_bandwidth() / 1e6,
        }
    }
}

/// The device extraction prices against: the H100 SXM preset.
pub static RATES: LazyLock<KernelRates> = LazyLock::new(|| KernelRates::of(&DeviceSpec::h100_80g_sxm()));

/// What one kernel costs: the roofline of [`RATES`] (the default: GPU targets and the planner),
/// or a table measured on the machine that will run the artifact ([`super::calibration`]: CPU
/// artifacts, `egraph{kernel-costs=FILE}`). Views and folded values are free under both.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum KernelCosts {
    #[default]
    Roofline,
    Measured(Arc<Table>),
}

impl KernelCosts {
    /// Reads a calibration table ([`Table::read`]).
    pub fn measured(path: &str) -> Result<KernelCosts, TableError> {
        Ok(KernelCosts::Measured(Arc::new(Table::read(path)?)))
    }

    /// Microseconds of one kernel computing `op` (all its results) from `inputs`.
    pub fn kernel_us(&self, op: &Op, inputs: &[&TensorType], results: &[&TensorType]) -> f64 {
        match self {
            KernelCosts::Roofline => kernel_us(op, inputs, results),
            KernelCosts::Measured(table) => {
                if is_view(op) {
                    return 0.0;
                }
                let (flops, moved) = kernel_work(op, inputs, results);
                table.kernel_us(op, flops, moved)
            }
        }
    }

    /// `roofline` or `measured (CPU, date)`, for reports.
    pub fn name(&self) -> String {
        match self {
            KernelCosts::Roofline => "roofline".to_string(),
            KernelCosts::Measured(t) => format!("measured on {}", t.machine.cpu),
        }
    }
}

/// When values computed from parameters (and constants) only are computed, which decides
/// whether they cost anything per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// Once, when weights load: free per step (CPU artifacts' bind steps, the planner).
    #[default]
    FoldedAtLoad,
    /// On every step (parameters fed per call): priced as kernels. Constants still fold.
    EveryStep,
}

/// Size assumed for every symbolic dimension.
pub const SYMBOL_SIZE: u64 = 8;

/// `t`'s dimensions with symbolic ones counted as [`SYMBOL_SIZE`].
fn shape(t: &TensorType) -> Vec<u64> {
    t.dims
        .iter()
        .map(|d| match d {
            Dim::Static(n) => *n,
            Dim::Symbolic(_) => SYMBOL_SIZE,
        })
        .collect()
}

/// [`Op::flops`] with symbolic dimensions counted as [`SYMBOL_SIZE`].
fn flops(op: &Op, inputs: &[&TensorType], results: &[&TensorType]) -> f64 {
    let inputs: Vec<Vec<u64>> = inputs.iter().map(|t| shape(t)).collect();
    let results: Vec<Vec<u64>> = results.iter().map(|t| shape(t)).collect();
    let input_shapes: Vec<&[u64]> = inputs.iter().map(Vec::as_slice).collect();
    let result_shapes: Vec<&[u64]> = results.iter().map(Vec::as_slice).collect();
    op.flops(&input_shapes, &result_shapes).unwrap_or(0) as f64
}

fn elements(t: &TensorType) -> f64 {
    shape(t).iter().map(|&n| n as f64).product()
}

fn bytes(t: &TensorType) -> f64 {
    elements(t) * t.dtype.size_bytes() as f64
}

/// The FLOPs of one kernel of `op` and the bytes it moves (every operand read once, every
/// result written once), symbolic dimensions counted as [`SYMBOL_SIZE`].
pub fn kernel_work(op: &Op, inputs: &[&TensorType], results: &[&TensorType]) -> (f64, f64) {
    let moved = inputs.iter().map(|t| bytes(t)).sum::<f64>() + results.iter().map(|t| bytes(t)).sum::<f64>();
    (flops(op, inputs, results), moved)
}

/// Whether `op` is a view (no kernel) in this model.
pub fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Slice { .. } | Op::Split { .. } | Op::Constant(_))
}

/// Microseconds of one kernel computing `op` (all its results) from `inputs`.
pub fn kernel_us(op: &Op, inputs: &[&TensorType], results: &[&TensorType]) -> f64 {
    if is_view(op) {
        return 0.0;
    }
    let (flops, moved) = kernel_work(op, inputs, results);
    let rates = &*RATES;
    let peak = if matches!(op, Op::MatMul | Op::Conv2d { .. }) {
        rates.matmul_flops_per_us
    } else {
        rates.vector_flops_per_us
    };
    rates.overhead_us + (flops / peak).max(moved / rates.bytes_per_us)
}

/// The estimated step time of `g` in microseconds: every kernel once (views and folded values
/// are free), with weights folded at load ([`graph_cost_for`] with [`Weights::FoldedAtLoad`]).
pub fn graph_cost(g: &Graph) -> f64 {
    graph_cost_for(g, Weights::FoldedAtLoad)
}

/// [`graph_cost`] with values computed from parameters priced as `weights` says.
pub fn graph_cost_for(g: &Graph, weights: Weights) -> f64 {
    graph_cost_with(g, weights, &KernelCosts::Roofline)
}

/// [`graph_cost_for`] with each kernel priced by `kernels`.
pub fn graph_cost_with(g: &Graph, weights: Weights, kernels: &KernelCosts) -> f64 {
    let mut folded = vec![false; g.num_values()];
    for &v in g.inputs() {
        folded[v.index()] = weights == Weights::FoldedAtLoad && g.input_role(v) == Some(InputRole::Parameter);
    }
    let mut total = 0.0;
    for (_, node) in g.nodes() {
        let is_folded = node.inputs.iter().all(|v| folded[v.index()]);
        for v in &node.outputs {
            folded[v.index()] = is_folded;
        }
        if is_folded {
            continue;
        }
        let inputs: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
        let results: Vec<&TensorType> = node.outputs.iter().map(|&v| &g.value(v).ty).collect();
        total += kernels.kernel_us(&node.op, &inputs, &results);
    }
    total
}

/// The own cost of one e-node in microseconds: its kernel (priced by the e-graph's
/// [`KernelCosts`]), or 0 for inputs, views and values
/// folded at weight-load time; infinite when the node is ill-typed. Exact extraction sums it
/// over the chosen DAG (a multi-result kernel is split evenly over its results).
pub fn node_cost(egraph: &TsrEGraph, enode: &TsrNode) -> f64 {
    let attr_of = |c: Id| egraph[c].data.attr.clone();
    let Some((op, operands)) = concrete(enode, &attr_of) else {
        return 0.0;
    };
    let op = &op;
    let data: Vec<_> = operands.iter().map(|&c| &egraph[c].data).collect();
    if data.iter().all(|d| d.folded) {
        return 0.0;
    }
    let types: Option<Vec<&TensorType>> = data.iter().map(|d| d.ty.as_ref()).collect();
    let Some(types) = types else {
        return f64::INFINITY;
    };
    let Ok(result_types) = op.infer(&types) else {
        return f64::INFINITY;
    };
    if is_view(op) {
        return 0.0;
    }
    let results: Vec<&TensorType> = result_types.iter().collect();
    egraph.analysis.kernels.kernel_us(op, &types, &results) / results.len().max(1) as f64
}

/// Tree cost for egg's extractor, with views charged their share of their operand.
pub struct Roofline<'a> {
    pub egraph: &'a TsrEGraph,
}

impl CostFunction<TsrNode> for Roofline<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &TsrNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let NodeKind::Op { result, .. } = &enode.kind else {
            return 0.0;
        };
        let attr_of = |c: Id| self.egraph[c].data.attr.clone();
        let Some((op, operands)) = concrete(enode, &attr_of) else {
            return 0.0;
        };
        let op = &op;
        let data: Vec<_> = operands.iter().map(|&c| &self.egraph[c].data).collect();
        if data.iter().all(|d| d.folded) {
            return 0.0;
        }
        let types: Option<Vec<&TensorType>> = data.iter().map(|d| d.ty.as_ref()).collect();
        let Some(types) = types else {
            return f64::INFINITY;
        };
        let result_types = match op.infer(&types) {
            Ok(r) => r,
            Err(_) => return f64::INFINITY,
        };
        let results: Vec<&TensorType> = result_types.iter().collect();
        if is_view(op) {
            // A view's share of its operand: the elements it exposes over those it reads.
            let share = match (results.get(*result as usize), types.first()) {
                (Some(r), Some(x)) if elements(x) > 0.0 => (elements(r) / elements(x)).min(1.0),
                _ => 1.0,
            };
            return enode.children.iter().map(|&c| costs(c)).sum::<f64>() * share;
        }
        // A multi-result kernel is charged once, split over its results.
        let own = self.egraph.analysis.kernels.kernel_us(op, &types, &results) / results.len().max(1) as f64;
        own + enode.children.iter().map(|&c| costs(c)).sum::<f64>()
    }
}
