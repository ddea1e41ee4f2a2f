//! The applier: a checked rule as an egg rewrite whose right sides are added only where the
//! named conditions hold on the matched e-classes and every right side has its root's type.

use super::typecheck::{holds, part_op, term_type, Env, Facts};
use super::{Rule, RuleOp, Term};
use crate::egraph::lang::{AttrValue, ShapeAnalysis, TsrEGraph, TsrNode};
use egg::{Applier, Id, MultiPattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::sync::Arc;
use tessera_ir::types::TensorType;

fn pattern(t: &Term, ast: &mut PatternAst<TsrNode>) -> Result<Id, String> {
    Ok(match t {
        Term::Var(v) => ast.add(egg::ENodeOrVar::Var(v.parse::<Var>().map_err(|e| format!("{e:?}"))?)),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let children = args.iter().map(|a| pattern(a, ast)).collect::<Result<Vec<_>, _>>()?;
            ast.add(egg::ENodeOrVar::ENode(TsrNode::op(op.clone(), 0, children)))
        }
        Term::App { op: RuleOp::Part { .. } | RuleOp::ShapeOf, .. } => {
            return Err("'part' or 'shape-of' in a left side".into())
        }
    })
}

struct RuleApplier {
    rule: Arc<Rule>,
    roots: Vec<Var>,
}

fn subst_class(subst: &Subst, name: &str) -> Option<Id> {
    name.parse::<Var>().ok().and_then(|v| subst.get(v).copied())
}

/// Types `t` under `subst` without touching the e-graph; `None` when ill-typed.
fn type_of(egraph: &TsrEGraph, t: &Term, subst: &Subst) -> Option<TensorType> {
    let ty = |name: &str| subst_class(subst, name).and_then(|id| egraph[id].data.ty.clone());
    let attr = |name: &str| subst_class(subst, name).and_then(|id| egraph[id].data.attr.as_deref().cloned());
    term_type(t, &Env { ty: &ty, attr: &attr })
}

fn add_to_egraph(egraph: &mut TsrEGraph, t: &Term, subst: &Subst) -> Option<Id> {
    match t {
        Term::Var(v) => subst_class(subst, v),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let children = args.iter().map(|a| add_to_egraph(egraph, a, subst)).collect::<Option<Vec<_>>>()?;
            Some(egraph.add(TsrNode::op(op.clone(), 0, children)))
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let x = add_to_egraph(egraph, &args[0], subst)?;
            let pieces = args[1..].iter().map(|a| type_of(egraph, a, subst)).collect::<Option<Vec<_>>>()?;
            let xt = egraph[x].data.ty.clone()?;
            let refs: Vec<&TensorType> = pieces.iter().collect();
            let op = part_op(*index, *axis, &xt, &refs).ok()?;
            Some(egraph.add(TsrNode::op(op, 0, vec![x])))
        }
        Term::App { op: RuleOp::ShapeOf, args } => {
            let dims = type_of(egraph, args.first()?, subst)?.dims;
            Some(egraph.add(AttrValue::Shape(dims).node()))
        }
    }
}

impl Applier<TsrNode, ShapeAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut TsrEGraph,
        _eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<TsrNode>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let lookup = |name: &str| subst_class(subst, name);
        let ty = |name: &str| lookup(name).and_then(|id| egraph[id].data.ty.clone());
        let attr = |name: &str| lookup(name).and_then(|id| egraph[id].data.attr.as_deref().cloned());
        let same = |a: &str, b: &str| lookup(a).map(|x| egraph.find(x)) == lookup(b).map(|y| egraph.find(y));
        let deps = |name: &str| lookup(name).map(|id| egraph[id].data.deps);
        let disjoint = |a: &str, b: &str| matches!((deps(a), deps(b)), (Some(x), Some(y)) if x & y == 0);
        let ordered = |a: &str, b: &str| match (deps(a), deps(b)) {
            // Every input of `a` has a smaller index (mod 64) than every input of `b`.
            (Some(x), Some(y)) if x != 0 && y != 0 => 63 - x.leading_zeros() < y.trailing_zeros(),
            _ => false,
        };
        let measured_cpu = matches!(egraph.analysis.kernels, crate::egraph::cost::KernelCosts::Measured(_));
        let facts = Facts { ty: &ty, attr: &attr, same: &same, disjoint: &disjoint, ordered: &ordered, measured_cpu };
        if !self.rule.conditions.iter().all(|c| holds(c, &facts)) {
            return vec![];
        }
        // Check every right side's type first, so an ill-typed instance adds nothing.
        for (rhs, root) in self.rule.rhs.iter().zip(&self.roots) {
            let root_ty = egraph[subst[*root]].data.ty.clone();
            if root_ty.is_none() || type_of(egraph, rhs, subst) != root_ty {
                return vec![];
            }
        }
        let mut changed = Vec::new();
        for (rhs, root) in self.rule.rhs.iter().zip(&self.roots) {
            let Some(new) = add_to_egraph(egraph, rhs, subst) else {
                return changed;
            };
            let root = subst[*root];
            if egraph.union_trusted(root, new, rule_name) {
                changed.push(root);
            }
        }
        changed
    }
}

/// The egg rewrite of `rule`.
pub fn rewrite(rule: &Rule) -> Result<Rewrite<TsrNode, ShapeAnalysis>, String> {
    let mut asts = Vec::new();
    let mut roots = Vec::new();
    for (i, lhs) in rule.lhs.iter().enumerate() {
        let mut ast = PatternAst::default();
        pattern(lhs, &mut ast)?;
        let root: Var = format!("?root{i}").parse().map_err(|e| format!("{e:?}"))?;
        asts.push((root, ast));
        roots.push(root);
    }
    let applier = RuleApplier { rule: Arc::new(rule.clone()), roots };
    Rewrite::new(rule.name.clone(), MultiPattern::new(asts), applier)
}
