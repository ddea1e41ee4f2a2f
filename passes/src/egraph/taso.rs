//! Greedy rewriting without equality saturation, as TASO's greedy baseline does it: apply
//! whichever single rule application lowers the estimated cost ([`cost::graph_cost`]) the
//! most, and repeat until none does. It uses the same rules and matcher as the `egraph` pass
//! (the graph is loaded into an e-graph that holds just the graph, so matching is egg's), but
//! it keeps one graph at a time: a rewrite that only pays off after further rewrites (moving
//! a scalar through a transpose, say) is never taken.
//!
//! Each candidate is applied to a copy of the one-graph e-graph, and the graph that uses the
//! rewritten term is built and costed. Rules that only permute the operands of one op (`add-comm`)
//! cannot change the cost and are not tried.

use super::cost;
use super::lang::{self, TsrNode};
use super::rules::{self, Rule, Term};
use egg::{Id, Language};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;

/// Limits of the rewriting loop.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteLimits {
    pub steps: usize,
    pub time: Duration,
    /// How the cost prices values computed from parameters ([`cost::Weights`]).
    pub weights: cost::Weights,
    /// How a kernel is priced ([`cost::KernelCosts`]).
    pub kernels: cost::KernelCosts,
}

/// What greedy rewriting did.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteReport {
    /// Applications per rule name.
    pub applied: BTreeMap<String, usize>,
    pub steps: usize,
    /// Candidate rewrites evaluated, over all steps.
    pub candidates: usize,
    pub cost_before: f64,
    pub cost_after: f64,
    /// `no-improvement`, `step-limit` or `time-limit`.
    pub stop: &'static str,
}

/// Whether `rule` only permutes the operands of one op (then it cannot change the cost).
fn is_permutation(rule: &Rule) -> bool {
    match (rule.lhs.as_slice(), rule.rhs.as_slice()) {
        ([Term::App { op: a, args: x }], [Term::App { op: b, args: y }]) => {
            let vars = |args: &[Term]| -> Option<Vec<String>> {
                let mut v: Vec<String> = args
                    .iter()
                    .map(|t| match t {
                        Term::Var(name) => Some(name.clone()),
                        Term::App { .. } => None,
                    })
                    .collect::<Option<_>>()?;
                v.sort();
                Some(v)
            };
            a == b && vars(x).is_some() && vars(x) == vars(y)
        }
        _ => false,
    }
}

/// Rewrites `g` greedily with `rules` (see the module doc).
pub fn rewrite(g: &Graph, rules: &[Rule], limits: RewriteLimits) -> Result<(Graph, RewriteReport), String> {
    let start = Instant::now();
    let useful: Vec<&Rule> = rules.iter().filter(|r| !is_permutation(r)).collect();
    let rewrites = useful.iter().map(|r| rules::applier::rewrite(r)).collect::<Result<Vec<_>, _>>()?;
    let mut current = g.clone();
    let mut current_cost = cost::graph_cost_with(g, limits.weights, &limits.kernels);
    let mut report = RewriteReport {
        applied: BTreeMap::new(),
        steps: 0,
        candidates: 0,
        cost_before: current_cost,
        cost_after: current_cost,
        stop: "no-improvement",
    };
    'steps: loop {
        if report.steps >= limits.steps {
            report.stop = "step-limit";
            break;
        }
        let loaded = lang::load_for(&current, limits.weights);
        let base = loaded.egraph;
        let original: HashSet<TsrNode> = base.classes().flat_map(|c| c.iter().cloned()).collect();
        let mut best: Option<(f64, Graph, usize)> = None;
        for (index, rw) in rewrites.iter().enumerate() {
            for m in rw.searcher.search(&base) {
                for subst in &m.substs {
                    if start.elapsed() > limits.time {
                        report.stop = "time-limit";
                        break 'steps;
                    }
                    report.candidates += 1;
                    let mut trial = base.clone();
                    let changed = rw.applier.apply_one(&mut trial, m.eclass, subst, None, rw.name);
                    if changed.is_empty() {
                        continue;
                    }
                    trial.rebuild();
                    // Each class keeps its one node, except a rewritten class, which takes the
                    // new term (nodes that were not in the graph come first).
                    let rank = |class: Id| {
                        let mut nodes: Vec<TsrNode> =
                            trial[class].iter().map(|n| n.clone().map_children(|c| trial.find(c))).collect();
                        nodes.sort_by_key(|n| original.contains(n));
                        nodes
                    };
                    let roots: Vec<Id> = loaded.outputs.iter().map(|&o| trial.find(o)).collect();
                    let Some((graph, _)) = lang::build_ranked(&current, &roots, &rank) else {
                        continue;
                    };
                    let c = cost::graph_cost_with(&graph, limits.weights, &limits.kernels);
                    if c < current_cost - 1e-9 && best.as_ref().is_none_or(|(b, _, _)| c < *b) {
                        best = Some((c, graph, index));
                    }
                }
            }
        }
        match best {
            Some((c, graph, index)) => {
                current = graph;
                current_cost = c;
                report.steps += 1;
                *report.applied.entry(useful[index].name.clone()).or_insert(0) += 1;
            }
            None => break,
        }
    }
    report.cost_after = current_cost;
    Ok((current, report))
}
