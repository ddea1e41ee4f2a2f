//! Greedy extraction by DAG cost (the "greedy-dag" extractor of extraction-gym).
//!
//! Tree-cost extraction (egg's `Extractor`) charges a shared subterm once per use, so it
//! prefers rewrites that duplicate work: `x·0.5` with `x = h·W + b` "costs" less as
//! `h·(0.5 W) + 0.5 b` (the weights fold), although `x` is computed anyway and the rewrite adds
//! a second matmul. Here the cost of a class is the cost of the set of classes its cheapest
//! sub-DAG computes, each counted once: a node's set is the union of its operands' sets plus
//! itself. Only classes with a kernel (own cost above zero) enter the sets, which keeps them
//! small (inputs, views and weight-load-time values are free).
//!
//! Still greedy: each class keeps one set, so sharing between *different* classes' choices is
//! only seen where their sub-DAGs overlap. [`super::ilp`] is exact.

use super::cost::node_cost;
use super::lang::{TsrEGraph, TsrNode};
use egg::{Id, Language};
use std::collections::HashMap;
use std::rc::Rc;

/// The classes a sub-DAG computes with their own costs, sorted by class id.
type CostSet = Rc<Vec<(Id, f64)>>;

fn union(a: &[(Id, f64)], b: &[(Id, f64)]) -> Vec<(Id, f64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// For every class reachable from `roots`, its nodes ranked by the DAG cost of choosing them
/// (cheapest first; nodes whose operands never got a cost are left out).
pub fn ranked(egraph: &TsrEGraph, roots: &[Id]) -> HashMap<Id, Vec<TsrNode>> {
    // The classes reachable from the roots, with their canonical nodes and own costs.
    let mut nodes: HashMap<Id, Vec<(TsrNode, f64)>> = HashMap::new();
    let mut todo: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(class) = todo.pop() {
        if nodes.contains_key(&class) {
            continue;
        }
        let list: Vec<(TsrNode, f64)> = egraph[class]
            .iter()
            .map(|n| {
                let n = n.clone().map_children(|c| egraph.find(c));
                let own = node_cost(egraph, &n);
                (n, own)
            })
            .filter(|(_, own)| own.is_finite())
            .collect();
        for (n, _) in &list {
            todo.extend(n.children.iter().copied());
        }
        nodes.insert(class, list);
    }
    let mut best: HashMap<Id, (f64, CostSet)> = HashMap::new();
    let mut classes: Vec<Id> = nodes.keys().copied().collect();
    classes.sort_unstable();
    // A node's set depends only on its operands' sets, so a node is re-priced only when an
    // operand's best changed since it was last priced (the result is the same as re-pricing
    // every node each pass, at a fraction of the unions). Stamps: `clock` when a class's best
    // last changed; `priced_at` when a node was last priced (0 = never).
    let mut clock: u64 = 1;
    let mut changed_at: HashMap<Id, u64> = HashMap::new();
    let mut priced: HashMap<Id, Vec<(u64, Option<f64>)>> =
        nodes.iter().map(|(&class, list)| (class, vec![(0, None); list.len()])).collect();
    let stale = |node: &TsrNode, priced_at: u64, changed_at: &HashMap<Id, u64>| {
        priced_at == 0 || node.children.iter().any(|c| changed_at.get(c).is_some_and(|&t| t >= priced_at))
    };
    // Bellman-Ford style: passes until no class improves (bounded, as costs only fall).
    for _ in 0..classes.len().max(1) {
        let mut changed = false;
        for &class in &classes {
            for (k, (node, own)) in nodes[&class].iter().enumerate() {
                let priced_at = priced[&class][k].0;
                if !stale(node, priced_at, &changed_at) {
                    continue;
                }
                let set = dag_set(class, node, *own, &best);
                let total: Option<f64> = set.as_ref().map(|set| set.iter().map(|(_, c)| c).sum());
                if let Some(entry) = priced.get_mut(&class) {
                    entry[k] = (clock, total);
                }
                let (Some(set), Some(total)) = (set, total) else {
                    continue;
                };
                let better = match best.get(&class) {
                    None => true,
                    // Relative margin: float sums in another order must not flip choices.
                    Some((old, _)) => total < *old * (1.0 - 1e-9) - 1e-12,
                };
                if better {
                    best.insert(class, (total, set));
                    changed_at.insert(class, clock);
                    clock += 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut out = HashMap::new();
    for (&class, list) in &nodes {
        let mut scored: Vec<(f64, TsrNode)> = list
            .iter()
            .zip(&priced[&class])
            .filter_map(|((node, own), &(priced_at, total))| {
                // Only a pass limit leaves a node priced on an operand set that changed since.
                let total = if stale(node, priced_at, &changed_at) {
                    dag_set(class, node, *own, &best)?.iter().map(|(_, c)| c).sum::<f64>()
                } else {
                    total?
                };
                Some((total, node.clone()))
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.insert(class, scored.into_iter().map(|(_, n)| n).collect());
    }
    out
}

/// The cost set of choosing `node` for `class`: its operands' sets and itself; `None` while an
/// operand has no cost yet, or when the choice would include `class` below itself.
fn dag_set(class: Id, node: &TsrNode, own: f64, best: &HashMap<Id, (f64, CostSet)>) -> Option<CostSet> {
    let mut set: Vec<(Id, f64)> = Vec::new();
    for child in &node.children {
        if *child == class {
            return None;
        }
        let (_, child_set) = best.get(child)?;
        if child_set.binary_search_by(|(c, _)| c.cmp(&class)).is_ok() {
            return None;
        }
        set = if set.is_empty() { child_set.as_ref().clone() } else { union(&set, child_set) };
    }
    if own > 0.0 {
        set = union(&set, &[(class, own)]);
    }
    Some(Rc::new(set))
}
