//! Random well-typed graphs for property tests: proptest strategies every crate's tests reuse.
//!
//! Generated graphs are also safe to evaluate: no integer division, no max/min/argmax over
//! empty tensors, gather and scatter indices in range, scatter `none` writes each element once.
//!
//! A graph is generated as a recipe (a seed for the inputs and a list of `(step kind, seed)`
//! pairs) and then built deterministically with [`Graph::add_node`], so every generated graph
//! verifies and proptest shrinks a failing graph by dropping steps. A step that happens not
//! to fit the values at hand adds nothing.
//!
//! [`inputs`] holds the helpers tests share for evaluating graphs (seeded inputs), [`build`]
//! the ones for building graphs by hand, [`bench`] the timing the plain bench harnesses share.

pub mod bench;
pub mod build;
pub mod inputs;

/// A stage program using every collective and `send`/`recv` once, in the text form: the
/// round-trip test of `ops::collective` and MLIR's acceptance test in `tessera-mlir-check`
/// both read it.
pub const COLLECTIVES_TEXT: &str = r#"func.func @stage(%x: tensor<4x6xf32>) -> (tensor<4x6xf32>) {
  %a = "tsr.all_reduce"(%x) {group_size = 2 : i64, mesh_axes = "tp", reduction = "sum"} : (tensor<4x6xf32>) -> tensor<4x6xf32>
  %b = "tsr.all_gather"(%a) {dim = 1 : i64, group_size = 4 : i64, mesh_axes = "dp,tp"} : (tensor<4x6xf32>) -> tensor<4x24xf32>
  %c = "tsr.reduce_scatter"(%b) {dim = 1 : i64, group_size = 4 : i64, mesh_axes = "dp,tp"} : (tensor<4x24xf32>) -> tensor<4x6xf32>
  %d = "tsr.all_to_all"(%c) {concat_dim = 1 : i64, group_size = 2 : i64, mesh_axes = "tp", split_dim = 0 : i64} : (tensor<4x6xf32>) -> tensor<2x12xf32>
  %e = "tsr.all_slice"(%d) {dim = 1 : i64, group_size = 2 : i64, mesh_axes = "tp"} : (tensor<2x12xf32>) -> tensor<2x6xf32>
  %p = "tsr.collective_permute"(%e) {group_size = 2 : i64, mesh_axes = "tp", sources = array<i64: 0, 1>, targets = array<i64: 1, 0>} : (tensor<2x6xf32>) -> tensor<2x6xf32>
  "tsr.send"(%p) {mesh_axis = "pp", peer = 1 : i64, tag = 7 : i64} : (tensor<2x6xf32>) -> ()
  %f = "tsr.recv"() {mesh_axis = "pp", peer = 1 : i64, tag = 8 : i64} : () -> tensor<4x6xf32>
  return %f : tensor<4x6xf32>
}
"#;

use crate::dtype::DType;
use crate::graph::{Graph, InputRole, ValueDef, ValueId};
use crate::ops::conv::{PoolKind, Window};
use crate::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use crate::ops::indexing::ScatterReduction;
use crate::ops::reduce::ReduceKind;
use crate::ops::Op;
use crate::random::SplitMix64;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use proptest::prelude::{any, Strategy};

/// The text form of `g`, after asserting that it parses and verifies back to `g` and prints the
/// same again: the round-trip check the region tests share (they snapshot the returned text).
pub fn round_tripped_text(g: &Graph) -> String {
    let text = crate::mlir::print_graph(g);
    let back = crate::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, g);
    assert_eq!(crate::mlir::print_graph(&back), text);
    text
}

/// What random graphs may contain.
#[derive(Debug, Clone, Copy)]
pub struct ArbGraphConfig {
    /// At most this many steps; a step adds one op (sometimes two or three, e.g. a constant
    /// weight and the matmul using it).
    pub max_steps: usize,
    /// Whether inputs may have symbolic dimensions (`batch`, `seq`). Turn off for tests that
    /// evaluate graphs, which need concrete shapes.
    pub symbolic_dims: bool,
}

impl Default for ArbGraphConfig {
    fn default() -> ArbGraphConfig {
        ArbGraphConfig { max_steps: 12, symbolic_dims: true }
    }
}

/// Random well-typed graphs with the default [`ArbGraphConfig`].
pub fn arb_graph() -> impl Strategy<Value = Graph> {
    arb_graph_with(ArbGraphConfig::default())
}

/// Random well-typed graphs: 1-3 inputs (some parameters, some with symbolic dimensions) and
/// up to `config.max_steps` ops drawn from every op family.
pub fn arb_graph_with(config: ArbGraphConfig) -> impl Strategy<Value = Graph> {
    let steps = proptest::collection::vec((0..N_STEP_KINDS, any::<u64>()), 1..=config.max_steps.max(1));
    (any::<u64>(), steps).prop_map(move |(seed, steps)| build_graph(seed, &steps, &config))
}

/// The generator's random stream: SplitMix64 (the same one `random` uses, whose algorithm is
/// fixed, so recorded proptest regressions keep reproducing).
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as usize) as i64
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len())).copied()
    }
}

const N_STEP_KINDS: u8 = 24;

fn build_graph(seed: u64, steps: &[(u8, u64)], config: &ArbGraphConfig) -> Graph {
    let mut rng = Rng::new(seed);
    let name = rng.pick(&["g", "mlp", "block", "my-model"]).unwrap_or("g");
    let mut b = Builder { g: Graph::new(name), pool: Vec::new() };
    let n_inputs = 1 + rng.below(3);
    for i in 0..n_inputs {
        let ty = input_type(&mut rng, config.symbolic_dims);
        let (role, prefix) = if rng.chance(3) { (InputRole::Parameter, "w") } else { (InputRole::Activation, "x") };
        let v = b.g.add_input(&format!("{prefix}{i}"), ty, role);
        b.pool.push(v);
    }
    for &(kind, step_seed) in steps {
        b.step(kind, &mut Rng::new(step_seed));
    }
    let mut outputs = Vec::new();
    if !rng.chance(16) {
        if let Some(&last) = b.pool.last() {
            outputs.push(last);
        }
        for _ in 0..rng.below(3) {
            if let Some(v) = rng.pick(&b.pool) {
                outputs.push(v);
            }
        }
    }
    b.g.set_outputs(outputs);
    // Some readable names beside the numbered ones, as frontends produce.
    let results: Vec<ValueId> =
        b.g.values().filter(|(_, v)| matches!(v.def, ValueDef::Result { .. })).map(|(id, _)| id).collect();
    for v in results {
        if rng.chance(4) {
            let candidate = format!("h{}", v.0);
            if !b.g.has_name(&candidate) {
                b.g.rename_value(v, &candidate);
            }
        }
    }
    b.g
}

fn input_type(rng: &mut Rng, symbolic: bool) -> TensorType {
    if rng.chance(5) {
        // An NCHW image, for convolution and pooling.
        let dtype = rng.pick(&[DType::F32, DType::F32, DType::F16]).unwrap_or(DType::F32);
        let n = if symbolic && rng.chance(2) { Dim::sym("batch") } else { Dim::Static(1 + rng.below(2) as u64) };
        let c = 1 + rng.below(3) as u64;
        let h = 3 + rng.below(3) as u64;
        let w = 3 + rng.below(3) as u64;
        return TensorType::new(dtype, vec![n, Dim::Static(c), Dim::Static(h), Dim::Static(w)]);
    }
    // Input element types, f32 three times as likely as each other. `random_constant` draws
    // from a list of its own (the odds differ and it adds i8), so the two lists look alike.
    let dtype = rng
        .pick(&[
            DType::F32,
            DType::F32,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I64,
            DType::I32,
            DType::Bool,
        ])
        .unwrap_or(DType::F32);
    let rank = rng.pick(&[0, 1, 2, 2, 2, 3, 3]).unwrap_or(2);
    let mut dims: Vec<Dim> = (0..rank).map(|_| Dim::Static(1 + rng.below(4) as u64)).collect();
    if symbolic && rank >= 2 && rng.chance(3) {
        dims[0] = Dim::sym("batch");
        if rank >= 3 && rng.chance(2) {
            dims[1] = Dim::sym("seq");
        }
    }
    TensorType::new(dtype, dims)
}

/// Small values of `dtype`: quarter steps, tenths (to exercise shortest-decimal printing),
/// small integers, booleans; sometimes a splat.
fn small_tensor(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> Tensor {
    let n: usize = shape.iter().product();
    let scale = rng.pick(&[0.25, 0.1, 1.5]).unwrap_or(0.25);
    let splat = rng.chance(4);
    let first = rng.range(-8, 8);
    let ints: Vec<i64> = (0..n).map(|_| if splat { first } else { rng.range(-8, 8) }).collect();
    if dtype.is_float() {
        Tensor::from_f64(dtype, shape, ints.iter().map(|&k| k as f64 * scale).collect())
    } else if dtype == DType::Bool {
        Tensor::from_i64(dtype, shape, ints.iter().map(|&k| i64::from(k > 0)).collect())
    } else {
        Tensor::from_i64(dtype, shape, ints)
    }
}

fn static_usize(d: &Dim) -> Option<usize> {
    d.as_static().and_then(|n| usize::try_from(n).ok())
}

struct Builder {
    g: Graph,
    /// Every value so far, inputs and results, in creation order.
    pool: Vec<ValueId>,
}

impl Builder {
    fn ty(&self, v: ValueId) -> TensorType {
        self.g.value(v).ty.clone()
    }

    fn pick_where(&self, rng: &mut Rng, pred: impl Fn(&TensorType) -> bool) -> Option<ValueId> {
        let candidates: Vec<ValueId> = self.pool.iter().copied().filter(|&v| pred(&self.g.value(v).ty)).collect();
        rng.pick(&candidates)
    }

    /// A value of exactly `ty`, preferring another one than `v`.
    fn partner(&self, rng: &mut Rng, v: ValueId) -> ValueId {
        let ty = self.ty(v);
        let others: Vec<ValueId> = self.pool.iter().copied().filter(|&w| w != v && self.g.value(w).ty == ty).collect();
        if !others.is_empty() && !rng.chance(3) {
            return rng.pick(&others).unwrap_or(v);
        }
        v
    }

    fn add(&mut self, op: Op, inputs: &[ValueId]) -> Option<Vec<ValueId>> {
        let outs = self.g.add_node(op, inputs).ok()?;
        self.pool.extend(&outs);
        Some(outs)
    }

    fn add1(&mut self, op: Op, inputs: &[ValueId]) -> Option<ValueId> {
        self.add(op, inputs)?.first().copied()
    }

    fn constant(&mut self, rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> Option<ValueId> {
        self.add1(Op::Constant(small_tensor(rng, dtype, shape)), &[])
    }

    /// One generation step; `None` (nothing added) when the step does not fit.
    fn step(&mut self, kind: u8, rng: &mut Rng) -> Option<()> {
        match kind {
            0 => self.unary(rng),
            1 => self.binary(rng),
            2 => self.compare(rng).map(|_| ()),
            3 => self.select(rng),
            4 => self.cast(rng),
            5 => self.matmul(rng),
            6 => self.softmax(rng),
            7 => self.norm(rng),
            8 => self.reduce(rng),
            9 => self.argmax(rng),
            10 => self.transpose(rng),
            11 => self.reshape(rng),
            12 => self.slice(rng),
            13 => self.concat(rng),
            14 => self.split(rng),
            15 => self.broadcast(rng),
            16 => self.random_constant(rng),
            17 => self.conv2d(rng),
            18 => self.pool2d(rng),
            19 => self.gather(rng),
            20 => self.rope(rng),
            21 => self.scatter(rng),
            22 => self.recurrent(rng),
            _ => self.training(rng),
        }
    }

    fn unary(&mut self, rng: &mut Rng) -> Option<()> {
        let v = self.pick_where(rng, |_| true)?;
        let dtype = self.ty(v).dtype;
        let defined: Vec<UnaryOp> =
            UnaryOp::ALL.iter().copied().filter(|u| u.accepts(dtype) && !u.is_bitwise()).collect();
        let op = rng.pick(&defined)?;
        self.add1(Op::Unary(op), &[v]).map(|_| ())
    }

    fn binary(&mut self, rng: &mut Rng) -> Option<()> {
        let v = self.pick_where(rng, |_| true)?;
        let w = self.partner(rng, v);
        let dtype = self.ty(v).dtype;
        let ops: Vec<BinaryOp> = BinaryOp::ALL
            .iter()
            .copied()
            .filter(|b| match b {
                // Code generators leave bitwise ops to the interpreter; random graphs feed them.
                b if b.is_bitwise() => false,
                BinaryOp::And | BinaryOp::Or => dtype == DType::Bool,
                BinaryOp::Pow => dtype.is_float(),
                // Integer division by a random value may divide by zero when evaluated.
                BinaryOp::Div => dtype.is_float(),
                _ => dtype != DType::Bool,
            })
            .collect();
        let op = rng.pick(&ops)?;
        self.add1(Op::Binary(op), &[v, w]).map(|_| ())
    }

    fn compare(&mut self, rng: &mut Rng) -> Option<ValueId> {
        let v = self.pick_where(rng, |_| true)?;
        self.compare_of(rng, v)
    }

    fn compare_of(&mut self, rng: &mut Rng, v: ValueId) -> Option<ValueId> {
        let w = self.partner(rng, v);
        let op = rng.pick(CompareOp::ALL)?;
        self.add1(Op::Compare(op), &[v, w])
    }

    fn select(&mut self, rng: &mut Rng) -> Option<()> {
        let a = self.pick_where(rng, |_| true)?;
        let dims = self.ty(a).dims;
        let cond = match self.pick_where(rng, |t| t.dtype == DType::Bool && t.dims == dims) {
            Some(c) if rng.chance(2) => c,
            _ => self.compare_of(rng, a)?,
        };
        let b = self.partner(rng, a);
        self.add1(Op::Where, &[cond, a, b]).map(|_| ())
    }

    fn cast(&mut self, rng: &mut Rng) -> Option<()> {
        let v = self.pick_where(rng, |_| true)?;
        let to = rng.pick(&[DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::Bool])?;
        self.add1(Op::Cast { to }, &[v]).map(|_| ())
    }

    fn matmul(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() >= 2 && (t.dtype.is_float() || t.dtype.is_int()))?;
        let t = self.ty(x);
        let r = t.rank();
        let w = match t.dims.get(r - 1).and_then(static_usize) {
            Some(k) if rng.chance(2) => {
                let n = 1 + rng.below(4);
                self.constant(rng, t.dtype, vec![k, n])?
            }
            _ => {
                let mut perm: Vec<i64> = (0..r as i64).collect();
                perm.swap(r - 1, r - 2);
                self.add1(Op::Transpose { perm }, &[x])?
            }
        };
        self.add1(Op::MatMul, &[x, w]).map(|_| ())
    }

    fn softmax(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() >= 1 && t.dtype.is_float())?;
        let r = self.ty(x).rank() as i64;
        let axis = rng.range(-r, r - 1);
        self.add1(Op::Softmax { axis }, &[x]).map(|_| ())
    }

    fn norm(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| {
            t.rank() >= 1 && t.dtype.is_float() && t.dims.last().is_some_and(|d| d.as_static().is_some())
        })?;
        let t = self.ty(x);
        let r = t.rank();
        // The normalized (trailing) dims must be static for the constant scale and bias.
        let first_static_tail = (0..r).rev().take_while(|&i| t.dims[i].as_static().is_some()).last().unwrap_or(r - 1);
        let axis = first_static_tail + rng.below(r - first_static_tail);
        let shape: Vec<usize> = t.dims[axis..].iter().filter_map(static_usize).collect();
        let epsilon = rng.pick(&[1e-5, 1e-6, 0.001])?;
        let axis_attr = if rng.chance(2) { axis as i64 - r as i64 } else { axis as i64 };
        let scale = self.constant(rng, t.dtype, shape.clone())?;
        if rng.chance(2) {
            let bias = self.constant(rng, t.dtype, shape)?;
            self.add1(Op::LayerNorm { axis: axis_attr, epsilon }, &[x, scale, bias]).map(|_| ())
        } else {
            self.add1(Op::RmsNorm { axis: axis_attr, epsilon }, &[x, scale]).map(|_| ())
        }
    }

    fn random_axes(rng: &mut Rng, rank: usize) -> Vec<i64> {
        let mut axes = Vec::new();
        for a in 0..rank as i64 {
            if rng.chance(2) {
                axes.push(if rng.chance(3) { a - rank as i64 } else { a });
            }
        }
        axes
    }

    fn reduce(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.dtype != DType::Bool)?;
        let t = self.ty(x);
        // Max and min of no elements have no value; keep them to non-empty tensors.
        let empty = t.dims.contains(&Dim::Static(0));
        let kinds: Vec<ReduceKind> = ReduceKind::ALL
            .iter()
            .copied()
            .filter(|k| *k != ReduceKind::Mean || t.dtype.is_float())
            .filter(|k| !(empty && matches!(k, ReduceKind::Max | ReduceKind::Min)))
            .collect();
        let kind = rng.pick(&kinds)?;
        let axes = Self::random_axes(rng, t.rank());
        self.add1(Op::Reduce { kind, axes, keepdims: rng.chance(2) }, &[x]).map(|_| ())
    }

    fn argmax(&mut self, rng: &mut Rng) -> Option<()> {
        let x =
            self.pick_where(rng, |t| t.rank() >= 1 && t.dtype != DType::Bool && !t.dims.contains(&Dim::Static(0)))?;
        let r = self.ty(x).rank() as i64;
        let axis = rng.range(-r, r - 1);
        self.add1(Op::ArgMax { axis, keepdims: rng.chance(2) }, &[x]).map(|_| ())
    }

    fn transpose(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |_| true)?;
        let r = self.ty(x).rank();
        let mut perm: Vec<i64> = (0..r as i64).collect();
        for i in (1..r).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        self.add1(Op::Transpose { perm }, &[x]).map(|_| ())
    }

    fn reshape(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |_| true)?;
        let t = self.ty(x);
        let product: u64 = t.dims.iter().filter_map(Dim::as_static).product();
        let mut shape: Vec<Dim> = t.dims.iter().filter(|d| d.as_static().is_none()).cloned().collect();
        match rng.below(3) {
            0 => shape.push(Dim::Static(product)),
            // `product / 2 * 2` rather than `is_multiple_of`, which is newer than the MSRV.
            1 if product / 2 * 2 == product => {
                shape.push(Dim::Static(2));
                shape.push(Dim::Static(product / 2));
            }
            _ => {
                shape.insert(0, Dim::Static(1));
                shape.push(Dim::Static(product));
            }
        }
        self.add1(Op::Reshape { shape }, &[x]).map(|_| ())
    }

    fn slice(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() >= 1)?;
        let t = self.ty(x);
        let (mut starts, mut ends, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for d in &t.dims {
            match d.as_static() {
                Some(n) => {
                    let n = n as i64;
                    starts.push(rng.range(-n - 1, n + 1));
                    ends.push(rng.range(-n - 1, n + 1));
                    steps.push(rng.pick(&[1, 1, 2, -1])?);
                }
                None => {
                    starts.push(0);
                    ends.push(i64::MAX);
                    steps.push(1);
                }
            }
        }
        self.add1(Op::Slice { starts, ends, steps }, &[x]).map(|_| ())
    }

    fn static_axis(&self, rng: &mut Rng, t: &TensorType) -> Option<(usize, usize)> {
        let axes: Vec<usize> = (0..t.rank()).filter(|&i| t.dims[i].as_static().is_some_and(|n| n >= 1)).collect();
        let axis = rng.pick(&axes)?;
        Some((axis, static_usize(&t.dims[axis])?))
    }

    fn concat(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() >= 1)?;
        let t = self.ty(x);
        let (axis, n) = self.static_axis(rng, &t)?;
        let mut inputs = vec![x];
        for _ in 0..rng.below(3) {
            if rng.chance(2) {
                // A shorter piece of x along the axis, so operand types differ.
                let r = t.rank();
                let mut ends = vec![i64::MAX; r];
                ends[axis] = 1 + rng.below(n) as i64;
                let piece = self.add1(Op::Slice { starts: vec![0; r], ends, steps: vec![1; r] }, &[x])?;
                inputs.push(piece);
            } else {
                inputs.push(self.partner(rng, x));
            }
        }
        let axis = if rng.chance(3) { axis as i64 - t.rank() as i64 } else { axis as i64 };
        self.add1(Op::Concat { axis }, &inputs).map(|_| ())
    }

    fn split(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() >= 1)?;
        let t = self.ty(x);
        let (axis, n) = self.static_axis(rng, &t)?;
        let parts = 1 + rng.below(n.min(3));
        let mut sizes = vec![1i64; parts];
        for _ in parts..n {
            let i = rng.below(parts);
            sizes[i] += 1;
        }
        self.add(Op::Split { axis: axis as i64, sizes }, &[x]).map(|_| ())
    }

    fn broadcast(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.rank() <= 3)?;
        let t = self.ty(x);
        let mut shape: Vec<Dim> = Vec::new();
        if rng.chance(2) {
            shape.push(Dim::Static(1 + rng.below(3) as u64));
        }
        for d in &t.dims {
            shape.push(match d {
                Dim::Static(1) => Dim::Static(1 + rng.below(3) as u64),
                other => other.clone(),
            });
        }
        self.add1(Op::Broadcast { shape }, &[x]).map(|_| ())
    }

    fn random_constant(&mut self, rng: &mut Rng) -> Option<()> {
        let dtype = rng.pick(&[
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I64,
            DType::I32,
            DType::I8,
            DType::Bool,
        ])?;
        let rank = rng.below(3);
        let shape: Vec<usize> = (0..rank).map(|_| if rng.chance(12) { 0 } else { 1 + rng.below(3) }).collect();
        self.constant(rng, dtype, shape).map(|_| ())
    }

    fn image(&self, rng: &mut Rng) -> Option<(ValueId, TensorType, [usize; 3])> {
        let x = self.pick_where(rng, |t| {
            t.rank() == 4 && t.dtype.is_float() && t.dims[1..].iter().all(|d| d.as_static().is_some_and(|n| n >= 1))
        })?;
        let t = self.ty(x);
        let chw = [static_usize(&t.dims[1])?, static_usize(&t.dims[2])?, static_usize(&t.dims[3])?];
        Some((x, t, chw))
    }

    fn window(rng: &mut Rng) -> Window {
        let p = rng.range(0, 1);
        Window {
            strides: [rng.range(1, 2), rng.range(1, 2)],
            pads: [p, rng.range(0, 1), p, rng.range(0, 1)],
            dilations: [1, rng.range(1, 2)],
        }
    }

    fn conv2d(&mut self, rng: &mut Rng) -> Option<()> {
        let (x, t, [c, h, w]) = self.image(rng)?;
        let groups = if rng.chance(3) { c } else { 1 };
        let o = groups * (1 + rng.below(2));
        let kh = 1 + rng.below(h.min(3));
        let kw = 1 + rng.below(w.min(2));
        let weight = self.constant(rng, t.dtype, vec![o, c / groups, kh, kw])?;
        self.add1(Op::Conv2d { window: Self::window(rng), groups: groups as i64 }, &[x, weight]).map(|_| ())
    }

    fn pool2d(&mut self, rng: &mut Rng) -> Option<()> {
        let (x, _, [_, h, w]) = self.image(rng)?;
        let kind = rng.pick(PoolKind::ALL)?;
        let kernel = [1 + rng.below(h.min(3)) as i64, 1 + rng.below(w.min(3)) as i64];
        self.add1(Op::Pool2d { kind, kernel, window: Self::window(rng) }, &[x]).map(|_| ())
    }

    fn gather(&mut self, rng: &mut Rng) -> Option<()> {
        let data = self.pick_where(rng, |t| t.rank() >= 1)?;
        let t = self.ty(data);
        let (axis, n) = self.static_axis(rng, &t)?;
        let rank = rng.below(3);
        let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(3)).collect();
        let count: usize = shape.iter().product();
        let values = (0..count).map(|_| rng.below(n) as i64).collect();
        let indices = self.add1(Op::Constant(Tensor::from_i64(DType::I64, shape, values)), &[])?;
        self.add1(Op::Gather { axis: axis as i64 }, &[data, indices]).map(|_| ())
    }

    fn scatter(&mut self, rng: &mut Rng) -> Option<()> {
        let data = self.pick_where(rng, |t| t.rank() >= 1 && t.static_shape().is_some())?;
        let t = self.ty(data);
        let shape: Vec<usize> = t.dims.iter().filter_map(static_usize).collect();
        let axis = rng.below(shape.len());
        let n = shape[axis];
        // Indices form a permutation along the axis (identity or reversed), so `none` never
        // writes one element twice and reference results are deterministic.
        let reverse = rng.chance(2);
        let count: usize = shape.iter().product();
        let values = (0..count)
            .map(|i| {
                let coord = crate::tensor::unravel(i, &shape)[axis];
                (if reverse { n - 1 - coord } else { coord }) as i64
            })
            .collect();
        let indices = self.add1(Op::Constant(Tensor::from_i64(DType::I64, shape, values)), &[])?;
        let reduction = rng.pick(&[ScatterReduction::None, ScatterReduction::Add])?;
        self.add1(Op::Scatter { axis: axis as i64, reduction }, &[data, indices, data]).map(|_| ())
    }

    fn rope(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| {
            let r = t.rank();
            r >= 2
                && t.dtype.is_float()
                && t.dims[r - 2].as_static().is_some()
                && t.dims[r - 1].as_static().is_some_and(|d| d % 2 == 0)
        })?;
        let t = self.ty(x);
        let r = t.rank();
        let seq = static_usize(&t.dims[r - 2])?;
        let half = static_usize(&t.dims[r - 1])? / 2;
        let cos = self.constant(rng, t.dtype, vec![seq, half])?;
        let sin = self.constant(rng, t.dtype, vec![seq, half])?;
        let interleaved = rng.below(2) == 1;
        self.add1(Op::Rope { interleaved }, &[x, cos, sin]).map(|_| ())
    }

    /// An LSTM, GRU or RNN over a float `[seq, batch, input]` value with static batch and input
    /// extents, with random directions, activations (parameters included), clipping and flags,
    /// and sometimes `sequence_lens` (when `seq` is static).
    fn recurrent(&mut self, rng: &mut Rng) -> Option<()> {
        use crate::ops::recurrent::{Activation, ActivationKind, Cell, Direction, RecurrentKind};
        let x = self.pick_where(rng, |t| {
            t.rank() == 3 && t.dtype.is_float() && t.dims[1..].iter().all(|d| d.as_static().is_some())
        })?;
        let t = self.ty(x);
        let (batch, input) = (static_usize(&t.dims[1])?, static_usize(&t.dims[2])?);
        let kind = rng.pick(RecurrentKind::ALL)?;
        let direction = rng.pick(&[Direction::Forward, Direction::Reverse, Direction::Bidirectional])?;
        let hidden = 1 + rng.below(3);
        let mut cell = Cell::new(kind, hidden as i64, direction);
        if rng.chance(3) {
            for a in cell.activations.iter_mut() {
                let mut custom = Activation::plain(rng.pick(&ActivationKind::ALL)?);
                if custom.kind.uses_alpha() {
                    custom.alpha = rng.pick(&[0.5, 1.25, 0.1])?;
                }
                if custom.kind.uses_beta() {
                    custom.beta = rng.pick(&[0.0, -0.25, 0.75])?;
                }
                *a = custom;
            }
        }
        if rng.chance(3) {
            cell.clip = Some(rng.pick(&[0.5, 3.0])?);
        }
        cell.input_forget = kind == RecurrentKind::Lstm && rng.chance(3);
        cell.linear_before_reset = kind == RecurrentKind::Gru && rng.chance(2);
        let (dirs, gh) = (direction.num_directions(), kind.gates() * hidden);
        let mut operands = vec![x];
        for shape in [vec![dirs, gh, input], vec![dirs, gh, hidden], vec![dirs, 2 * gh], vec![dirs, batch, hidden]] {
            operands.push(self.constant(rng, t.dtype, shape)?);
        }
        if kind == RecurrentKind::Lstm {
            operands.push(self.constant(rng, t.dtype, vec![dirs, batch, hidden])?);
            operands.push(self.constant(rng, t.dtype, vec![dirs, 3 * hidden])?);
        }
        if let (Some(seq), true) = (static_usize(&t.dims[0]), rng.chance(2)) {
            let lens = (0..batch).map(|_| rng.below(seq + 1) as i64).collect();
            operands.push(self.add1(Op::Constant(Tensor::from_i64(DType::I64, vec![batch], lens)), &[])?);
        }
        self.add(Op::Recurrent { kind, cell }, &operands).map(|_| ())
    }

    /// A loss or an optimizer update: `cross_entropy` over a float value's last dimension with
    /// constant targets, or `sgd`/`adamw` with the value as parameter, gradient and state.
    fn training(&mut self, rng: &mut Rng) -> Option<()> {
        let x = self.pick_where(rng, |t| t.dtype.is_float() && t.static_shape().is_some())?;
        let t = self.ty(x);
        let shape: Vec<usize> = t.dims.iter().filter_map(static_usize).collect();
        match rng.below(3) {
            0 => {
                let (&vocab, lead) = shape.split_last()?;
                if vocab == 0 {
                    return None;
                }
                let count: usize = lead.iter().product();
                let values = (0..count).map(|_| rng.below(vocab) as i64).collect();
                let targets = self.add1(Op::Constant(Tensor::from_i64(DType::I64, lead.to_vec(), values)), &[])?;
                self.add1(Op::CrossEntropy, &[x, targets]).map(|_| ())
            }
            1 => {
                let hyper = crate::ops::optim::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01 };
                self.add(Op::Sgd(hyper), &[x, x, x]).map(|_| ())
            }
            _ => {
                let step =
                    self.add1(Op::Constant(Tensor::from_i64(DType::I64, vec![], vec![1 + rng.below(5) as i64])), &[])?;
                let hyper = crate::ops::optim::AdamW::default();
                self.add(Op::AdamW(hyper), &[x, x, x, x, step]).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn static_config_gives_static_graphs() {
        let mut runner = TestRunner::deterministic();
        let strategy = arb_graph_with(ArbGraphConfig { symbolic_dims: false, ..ArbGraphConfig::default() });
        for _ in 0..200 {
            let g = strategy.new_tree(&mut runner).expect("strategy").current();
            assert!(g.values().all(|(_, v)| v.ty.static_shape().is_some()), "{g:?}");
        }
    }

    #[test]
    fn generated_graphs_verify_and_use_many_ops() {
        let mut runner = TestRunner::deterministic();
        let strategy = arb_graph();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let g = strategy.new_tree(&mut runner).expect("strategy").current();
            crate::verify::verify(&g).expect("generated graphs verify");
            seen.extend(g.nodes().map(|(_, n)| n.op.mnemonic()));
        }
        for family in [
            "matmul",
            "softmax",
            "split",
            "concat",
            "conv2d",
            "where",
            "rope",
            "scatter",
            "gather",
            "adamw",
            "sgd",
            "cross_entropy",
        ] {
            assert!(seen.contains(family), "no {family} in 300 graphs: {seen:?}");
        }
    }
}
