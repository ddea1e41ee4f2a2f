//! The load-time type check of rules: every rule is instantiated on sample types (each
//! assignment of `SAMPLE_SHAPES` and sample windows to its variables), its conditions are
//! evaluated on those facts, and its sides are built into a graph whose shape rules must agree.
//! The same instances seed the numeric property tests ([`instance_graph`]).

use super::{Condition, Instance, Rule, RuleOp, Sample, Term, VarKind};
use crate::egraph::lang::{infer_result, is_lifted, lower, AttrValue};
use std::collections::{BTreeMap, HashMap};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::conv::Window;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// Shapes tried for every tensor and shape variable by the load-time type check: ranks 0 to
/// 4, with unit dimensions for broadcasting and a 4-D image/kernel pair for convolutions.
const SAMPLE_SHAPES: &[&[u64]] = &[
    &[],
    &[4],
    &[3, 4],
    &[4, 3],
    &[4, 4],
    &[1, 4],
    &[4, 1],
    &[2, 3, 4],
    &[2, 4, 3],
    &[2, 4, 4],
    &[2, 1, 1],
    &[2, 2, 4, 3],
    &[2, 2, 3, 3],
    &[2, 2, 1, 1],
    &[2, 4, 2, 3],
];

/// Windows tried for every window variable: plain, and padded with stride 2.
fn sample_windows() -> Vec<AttrValue> {
    let window = |strides, pads| AttrValue::Conv { window: Window { strides, pads, dilations: [1, 1] }, groups: 1 };
    vec![window([1, 1], [0; 4]), window([2, 2], [1; 4])]
}

/// Most variables a rule may have (the type check enumerates `SAMPLE_SHAPES^vars`).
pub(super) const MAX_VARS: usize = 5;

/// Facts a condition may ask about matched variables.
pub(super) struct Facts<'a> {
    pub(super) ty: &'a dyn Fn(&str) -> Option<TensorType>,
    pub(super) attr: &'a dyn Fn(&str) -> Option<AttrValue>,
    pub(super) same: &'a dyn Fn(&str, &str) -> bool,
    pub(super) disjoint: &'a dyn Fn(&str, &str) -> bool,
    pub(super) ordered: &'a dyn Fn(&str, &str) -> bool,
    /// Whether kernels are priced by a calibration table measured on the CPU backend
    /// ([`crate::egraph::cost::KernelCosts::Measured`]): `winograd` holds only then, since
    /// only there is the Winograd form measured to pay (the roofline prices GPU kernels, and
    /// on a CUDA target the transforms would be host library calls).
    pub(super) measured_cpu: bool,
}

pub(super) fn holds(c: &Condition, facts: &Facts) -> bool {
    let (ty, same) = (facts.ty, facts.same);
    match c {
        Condition::SameRank(a, b) => matches!((ty(a), ty(b)), (Some(x), Some(y)) if x.rank() == y.rank()),
        Condition::SameType(a, b) => matches!((ty(a), ty(b)), (Some(x), Some(y)) if x == y),
        Condition::Rank(a, n) => ty(a).is_some_and(|t| t.rank() == *n),
        Condition::MinRank(a, n) => ty(a).is_some_and(|t| t.rank() >= *n),
        Condition::Distinct(a, b) => !same(a, b),
        Condition::Disjoint(a, b) => (facts.disjoint)(a, b),
        Condition::Ordered(a, b) => (facts.ordered)(a, b),
        Condition::ShapeIs(a, b) => {
            matches!((ty(a), (facts.attr)(b)), (Some(t), Some(AttrValue::Shape(dims))) if t.dims == dims)
        }
        Condition::SameExcept(a, b, axis) => match (ty(a), ty(b)) {
            (Some(x), Some(y)) if x.rank() == y.rank() => {
                let skip = tessera_ir::types::normalize_axis(*axis, x.rank());
                skip.is_some() && x.dims.iter().zip(&y.dims).enumerate().all(|(i, (p, q))| Some(i) == skip || p == q)
            }
            _ => false,
        },
        Condition::Winograd(w, win) => {
            let kernel = ty(w).is_some_and(|t| {
                t.rank() == 4
                    && t.dims[2] == Dim::Static(3)
                    && t.dims[3] == Dim::Static(3)
                    && t.static_shape().is_some()
            });
            let window = matches!((facts.attr)(win), Some(AttrValue::Conv { window, groups: 1 })
                if window.strides == [1, 1] && window.dilations == [1, 1]);
            kernel && window && facts.measured_cpu
        }
        Condition::UnitExcept(a, axis) => ty(a).is_some_and(|t| {
            let keep = tessera_ir::types::normalize_axis(*axis, t.rank());
            keep.is_some() && t.dims.iter().enumerate().all(|(i, d)| Some(i) == keep || *d == Dim::Static(1))
        }),
    }
}

/// The slice op of `(part ...)`, for an operand of type `x` and piece types `pieces`.
pub(super) fn part_op(index: usize, axis: i64, x: &TensorType, pieces: &[&TensorType]) -> Result<Op, String> {
    let rank = x.rank();
    let ax =
        tessera_ir::types::normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} out of range for {x}"))?;
    let mut sizes = Vec::new();
    for p in pieces {
        // Each piece's axis counts from its own end (pieces may have fewer batch dimensions).
        let pax = tessera_ir::types::normalize_axis(axis, p.rank());
        match pax.and_then(|a| p.dims.get(a)) {
            Some(Dim::Static(n)) => sizes.push(*n as i64),
            _ => return Err("piece sizes must be static".into()),
        }
    }
    let start: i64 = sizes[..index].iter().sum();
    let mut starts = vec![0; rank];
    let mut ends = vec![i64::MAX; rank];
    starts[ax] = start;
    ends[ax] = start + sizes[index];
    Ok(Op::Slice { starts, ends, steps: vec![1; rank] })
}

/// How to look up the values of a rule's variables.
pub(super) struct Env<'a> {
    pub(super) ty: &'a dyn Fn(&str) -> Option<TensorType>,
    pub(super) attr: &'a dyn Fn(&str) -> Option<AttrValue>,
}

/// The type of tensor term `t`, by the shape rules alone; `None` when ill-typed.
pub(super) fn term_type(t: &Term, env: &Env) -> Option<TensorType> {
    match t {
        Term::Var(v) => (env.ty)(v),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let (op, tensors) = if is_lifted(op) {
                let (last, rest) = args.split_last()?;
                (lower(op, &term_attr(last, env)?)?, rest)
            } else {
                (op.clone(), &args[..])
            };
            let types = tensors.iter().map(|a| term_type(a, env)).collect::<Option<Vec<_>>>()?;
            let refs: Vec<&TensorType> = types.iter().collect();
            infer_result(&op, 0, &refs).ok()
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let types = args.iter().map(|a| term_type(a, env)).collect::<Option<Vec<_>>>()?;
            let pieces: Vec<&TensorType> = types[1..].iter().collect();
            let op = part_op(*index, *axis, &types[0], &pieces).ok()?;
            infer_result(&op, 0, &[&types[0]]).ok()
        }
        Term::App { op: RuleOp::ShapeOf, .. } => None,
    }
}

/// The value of attribute term `t` (a shape or window variable, or `(shape-of X)`).
fn term_attr(t: &Term, env: &Env) -> Option<AttrValue> {
    match t {
        Term::Var(v) => (env.attr)(v),
        Term::App { op: RuleOp::ShapeOf, args } => Some(AttrValue::Shape(term_type(args.first()?, env)?.dims)),
        Term::App { .. } => None,
    }
}

/// Adds `t` to graph `g` with tensor variables bound by `env` and attribute variables by
/// `attrs`; errors when a node is ill-typed.
pub fn add_term(
    g: &mut Graph,
    t: &Term,
    env: &HashMap<String, ValueId>,
    attrs: &HashMap<String, AttrValue>,
) -> Result<ValueId, String> {
    match t {
        Term::Var(v) => env.get(v).copied().ok_or_else(|| format!("unbound {v}")),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let (op, tensors) = if is_lifted(op) {
                let ty = |v: &str| env.get(v).map(|&id| g.value(id).ty.clone());
                let attr = |v: &str| attrs.get(v).cloned();
                let (last, rest) = args.split_last().ok_or("a lifted op without operands")?;
                let value = term_attr(last, &Env { ty: &ty, attr: &attr }).ok_or("ill-typed attribute")?;
                (lower(op, &value).ok_or("attribute of the wrong kind")?, rest)
            } else {
                (op.clone(), &args[..])
            };
            let operands = tensors.iter().map(|a| add_term(g, a, env, attrs)).collect::<Result<Vec<_>, _>>()?;
            let rank = operands.first().map_or(0, |&v| g.value(v).ty.rank());
            let op = crate::egraph::lang::normalize(&op, rank);
            g.add(op, &operands).map_err(|e| e.to_string())
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let x = add_term(g, &args[0], env, attrs)?;
            let pieces = args[1..].iter().map(|a| add_term(g, a, env, attrs)).collect::<Result<Vec<_>, _>>()?;
            let piece_types: Vec<&TensorType> = pieces.iter().map(|&p| &g.value(p).ty).collect();
            let op = part_op(*index, *axis, &g.value(x).ty, &piece_types)?;
            g.add(op, &[x]).map_err(|e| e.to_string())
        }
        Term::App { op: RuleOp::ShapeOf, .. } => Err("'shape-of' is not a tensor".into()),
    }
}

/// A graph whose inputs are the rule's tensor variables (typed by `inst`) and whose outputs
/// are the left sides followed by the right sides; `Err` when a side is ill-typed.
pub fn instance_graph(rule: &Rule, inst: &Instance) -> Result<Graph, String> {
    let mut g = Graph::new(&rule.name);
    let mut env = HashMap::new();
    let mut attrs = HashMap::new();
    for (name, sample) in inst {
        match sample {
            Sample::Tensor(ty) => {
                let input = g.add_input(name.trim_start_matches('?'), ty.clone(), InputRole::Activation);
                env.insert(name.clone(), input);
            }
            Sample::Attr(a) => {
                attrs.insert(name.clone(), a.clone());
            }
        }
    }
    let mut outs = Vec::new();
    for t in rule.lhs.iter().chain(&rule.rhs) {
        outs.push(add_term(&mut g, t, &env, &attrs)?);
    }
    g.set_outputs(outs);
    Ok(g)
}

/// The kind of every variable in `terms` (by position: the last operand of `reshape` and
/// `broadcast` is a shape, of `conv2d` a window); `Err` on a variable used as two kinds or an
/// attribute position holding anything but a variable or `(shape-of X)`.
pub(super) fn var_kinds<'a>(terms: impl Iterator<Item = &'a Term>) -> Result<BTreeMap<String, VarKind>, String> {
    fn walk(t: &Term, want: VarKind, kinds: &mut BTreeMap<String, VarKind>) -> Result<(), String> {
        match t {
            Term::Var(v) => match kinds.insert(v.clone(), want) {
                Some(old) if old != want => Err(format!("variable {v} is used both as a {old:?} and as a {want:?}")),
                _ => Ok(()),
            },
            Term::App { op: RuleOp::ShapeOf, args } => {
                if want != VarKind::Shape {
                    return Err("(shape-of X) can only be the target shape of a reshape or broadcast".into());
                }
                args.iter().try_for_each(|a| walk(a, VarKind::Tensor, kinds))
            }
            Term::App { op, args } => {
                if want != VarKind::Tensor {
                    return Err(format!("a {want:?} must be a variable or (shape-of X)"));
                }
                let lifted = matches!(op, RuleOp::Fixed(op) if is_lifted(op));
                for (i, a) in args.iter().enumerate() {
                    let kind = match op {
                        RuleOp::Fixed(Op::Conv2d { .. } | Op::WinogradInput { .. })
                            if lifted && i + 1 == args.len() =>
                        {
                            VarKind::Window
                        }
                        RuleOp::Fixed(_) if lifted && i + 1 == args.len() => VarKind::Shape,
                        _ => VarKind::Tensor,
                    };
                    walk(a, kind, kinds)?;
                }
                Ok(())
            }
        }
    }
    let mut kinds = BTreeMap::new();
    for t in terms {
        walk(t, VarKind::Tensor, &mut kinds)?;
    }
    Ok(kinds)
}

impl Rule {
    /// Every sample instance whose left sides type-check and whose conditions hold (computed
    /// once per rule).
    pub fn sample_instances(&self) -> Vec<Instance> {
        self.instances.get_or_init(|| self.enumerate_instances()).clone()
    }

    fn enumerate_instances(&self) -> Vec<Instance> {
        let vars: Vec<(String, VarKind)> = self.kinds.iter().map(|(v, k)| (v.clone(), *k)).collect();
        let shapes: Vec<Vec<u64>> = SAMPLE_SHAPES.iter().map(|s| s.to_vec()).collect();
        let choices: Vec<Vec<Sample>> = vars
            .iter()
            .map(|(_, kind)| match kind {
                VarKind::Tensor => {
                    shapes.iter().map(|s| Sample::Tensor(TensorType::of_static(DType::F64, s))).collect()
                }
                VarKind::Shape => shapes
                    .iter()
                    .map(|s| Sample::Attr(AttrValue::Shape(s.iter().map(|&n| Dim::Static(n)).collect())))
                    .collect(),
                VarKind::Window => sample_windows().into_iter().map(Sample::Attr).collect(),
            })
            .collect();
        let total: usize = choices.iter().map(Vec::len).product();
        let mut out = Vec::new();
        for mut code in 0..total {
            let inst: Instance = vars
                .iter()
                .zip(&choices)
                .map(|((v, _), options)| {
                    let sample = options[code % options.len()].clone();
                    code /= options.len();
                    (v.clone(), sample)
                })
                .collect();
            let ty = |name: &str| {
                inst.iter().find_map(|(v, s)| match s {
                    Sample::Tensor(t) if v == name => Some(t.clone()),
                    _ => None,
                })
            };
            let attr = |name: &str| {
                inst.iter().find_map(|(v, s)| match s {
                    Sample::Attr(a) if v == name => Some(a.clone()),
                    _ => None,
                })
            };
            // Sample variables are distinct inputs, listed in order; the samples check the
            // rule's arithmetic, which holds whatever the pricing.
            let facts = Facts {
                ty: &ty,
                attr: &attr,
                same: &|a, b| a == b,
                disjoint: &|a, b| a != b,
                ordered: &|a, b| a < b,
                measured_cpu: true,
            };
            if !self.conditions.iter().all(|c| holds(c, &facts)) {
                continue;
            }
            let env = Env { ty: &ty, attr: &attr };
            if self.lhs.iter().all(|t| term_type(t, &env).is_some()) {
                out.push(inst);
            }
        }
        out
    }
}

pub(super) fn type_check(rule: &Rule) -> Result<(), String> {
    let instances = rule.sample_instances();
    if instances.is_empty() {
        return Err(format!("rule '{}': no sample shapes make the left side well typed", rule.name));
    }
    for inst in &instances {
        let g = instance_graph(rule, inst).map_err(|m| {
            format!(
                "rule '{}': the right side is ill-typed where the left side is not ({}): {m}",
                rule.name,
                show(inst)
            )
        })?;
        let k = rule.lhs.len();
        for i in 0..k {
            let (l, r) = (&g.value(g.outputs()[i]).ty, &g.value(g.outputs()[k + i]).ty);
            if l != r {
                return Err(format!(
                    "rule '{}': the sides have different types, {l} and {r} ({})",
                    rule.name,
                    show(inst)
                ));
            }
        }
    }
    Ok(())
}

fn show(inst: &Instance) -> String {
    let show_sample = |s: &Sample| match s {
        Sample::Tensor(t) => t.to_string(),
        Sample::Attr(a) => format!("{a:?}"),
    };
    inst.iter().map(|(v, s)| format!("{v}: {}", show_sample(s))).collect::<Vec<_>>().join(", ")
}
