//! Exact extraction: the cheapest graph in a saturated e-graph by integer linear programming
//! (good_lp with the pure-Rust `microlp` solver), under a time limit.
//!
//! The program (Tensat's formulation):
//! - a binary `x_n` per candidate e-node `n` (nodes of the classes reachable from the outputs);
//! - every output class picks a node: `Σ_{n ∈ root} x_n = 1`;
//! - a picked node's operands are computed: `x_n ≤ Σ_{m ∈ c} x_m` for each child class `c`;
//! - minimise `Σ cost(n) · x_n`, where `cost` is the node's own kernel time ([`node_cost`]).
//!
//! Unlike greedy tree-cost extraction, this charges a shared subterm once: it is the true DAG
//! cost, which is what [`super::cost::graph_cost`] measures.
//!
//! **Cycles.** An e-graph may contain cycles (`x = neg(neg(x))` puts `x` below itself), and a
//! choice that follows one cannot be emitted. Self-loops (a node with its own class as a child)
//! are dropped up front. For the remaining cycles, each class in a non-trivial strongly
//! connected component of the class graph gets a continuous order variable `t_c ∈ [0, 1]`, and
//! a picked node must sit strictly above its operands in that order:
//! `t_c - t_child ≥ ε - (1 + ε)(1 - x_n)` with `ε = 1 / (|SCC| + 1)`. Edges between components
//! cannot close a cycle and get no constraint, so acyclic e-graphs get no order variables.
//!
//! **Time limit.** The solver starts from the greedy choice (a warm start) and stops at the
//! limit with the best solution found; if it found none, or fails, the caller keeps the greedy
//! result. [`IlpOutcome`] says which happened, and the pass reports it.

use super::cost::node_cost;
use super::lang::{TsrEGraph, TsrNode};
use egg::{Id, Language};
use good_lp::{
    microlp, variable, Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus, SolverModel, Variable,
    WithInitialSolution, WithTimeLimit,
};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// How the solver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlpOutcome {
    /// Proven optimal.
    Optimal,
    /// The time limit hit; the choice is the best solution found by then.
    TimeLimit,
    /// No solution from the solver (the message says why); the caller uses greedy extraction.
    Failed(String),
}

impl IlpOutcome {
    /// Kebab-case name for counters and `--explain`.
    pub fn name(&self) -> &'static str {
        match self {
            IlpOutcome::Optimal => "optimal",
            IlpOutcome::TimeLimit => "time-limit",
            IlpOutcome::Failed(_) => "failed",
        }
    }
}

/// What the ILP chose: one node per class it uses, and the sizes of the program.
#[derive(Debug, Clone)]
pub struct IlpChoice {
    pub outcome: IlpOutcome,
    /// The chosen node of every class the solution uses (empty when `Failed`).
    pub choice: HashMap<Id, TsrNode>,
    /// The objective of the solution: its DAG cost in microseconds.
    pub cost: f64,
    pub variables: usize,
    pub constraints: usize,
}

/// Strongly connected components of the class graph (Tarjan, iterative); the component id of
/// each class.
fn components(classes: &[Id], edges: &HashMap<Id, Vec<Id>>) -> HashMap<Id, usize> {
    let mut index: HashMap<Id, usize> = HashMap::new();
    let mut low: HashMap<Id, usize> = HashMap::new();
    let mut on_stack: BTreeSet<Id> = BTreeSet::new();
    let mut stack: Vec<Id> = Vec::new();
    let mut comp: HashMap<Id, usize> = HashMap::new();
    let mut next = 0usize;
    let mut n_comps = 0usize;
    let empty = Vec::new();
    for &start in classes {
        if index.contains_key(&start) {
            continue;
        }
        // Frames: (class, position in its successor list).
        let mut frames: Vec<(Id, usize)> = vec![(start, 0)];
        index.insert(start, next);
        low.insert(start, next);
        next += 1;
        stack.push(start);
        on_stack.insert(start);
        while let Some(frame) = frames.last_mut() {
            let v = frame.0;
            let succ = edges.get(&v).unwrap_or(&empty);
            if frame.1 < succ.len() {
                let w = succ[frame.1];
                frame.1 += 1;
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(w) {
                    slot.insert(next);
                    low.insert(w, next);
                    next += 1;
                    stack.push(w);
                    on_stack.insert(w);
                    frames.push((w, 0));
                } else if on_stack.contains(&w) {
                    let lw = index[&w];
                    let lv = low.get_mut(&v).expect("visited");
                    *lv = (*lv).min(lw);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                let lv = low[&v];
                let lp = low.get_mut(&parent).expect("visited");
                *lp = (*lp).min(lv);
            }
            if low[&v] == index[&v] {
                while let Some(w) = stack.pop() {
                    on_stack.remove(&w);
                    comp.insert(w, n_comps);
                    if w == v {
                        break;
                    }
                }
                n_comps += 1;
            }
        }
    }
    comp
}

/// Extracts the cheapest DAG for `roots` from `egraph`, starting from `warm` (one node per
/// class, e.g. the greedy choice), within `time_limit`.
pub fn extract(egraph: &TsrEGraph, roots: &[Id], warm: &dyn Fn(Id) -> TsrNode, time_limit: Duration) -> IlpChoice {
    let failed = |message: String| IlpChoice {
        outcome: IlpOutcome::Failed(message),
        choice: HashMap::new(),
        cost: f64::INFINITY,
        variables: 0,
        constraints: 0,
    };
    // Candidate nodes of every class reachable from the roots.
    let mut candidates: HashMap<Id, Vec<(TsrNode, f64)>> = HashMap::new();
    let mut order: Vec<Id> = Vec::new();
    let mut todo: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(class) = todo.pop() {
        if candidates.contains_key(&class) {
            continue;
        }
        let mut nodes = Vec::new();
        for node in egraph[class].iter() {
            let node = node.clone().map_children(|c| egraph.find(c));
            if node.children.contains(&class) {
                continue; // a self-loop is never emitted
            }
            let cost = node_cost(egraph, &node);
            if !cost.is_finite() {
                continue;
            }
            todo.extend(node.children.iter().copied());
            nodes.push((node, cost));
        }
        order.push(class);
        candidates.insert(class, nodes);
    }
    // Class graph for cycle detection.
    let edges: HashMap<Id, Vec<Id>> = candidates
        .iter()
        .map(|(&c, nodes)| {
            let mut succ: Vec<Id> = nodes.iter().flat_map(|(n, _)| n.children.iter().copied()).collect();
            succ.sort_unstable();
            succ.dedup();
            (c, succ)
        })
        .collect();
    let comp = components(&order, &edges);
    let mut comp_size: HashMap<usize, usize> = HashMap::new();
    for &c in comp.values() {
        *comp_size.entry(c).or_insert(0) += 1;
    }
    let cyclic = |c: Id| comp_size[&comp[&c]] > 1;

    let mut vars = ProblemVariables::new();
    let mut x: HashMap<Id, Vec<Variable>> = HashMap::new();
    let mut t: HashMap<Id, Variable> = HashMap::new();
    for &class in &order {
        let xs = candidates[&class].iter().map(|_| vars.add(variable().binary())).collect();
        x.insert(class, xs);
        if cyclic(class) {
            t.insert(class, vars.add(variable().min(0.0).max(1.0)));
        }
    }
    let n_vars = x.values().map(Vec::len).sum::<usize>() + t.len();
    let objective: Expression =
        order.iter().flat_map(|c| candidates[c].iter().zip(&x[c]).map(|((_, cost), &v)| *cost * v)).sum();
    let mut model = vars.minimise(objective).using(microlp).with_time_limit(time_limit.as_secs_f64());
    let mut n_constraints = 0usize;
    let sum_of = |class: &Id| -> Expression { x[class].iter().copied().map(Expression::from).sum() };
    let roots: BTreeSet<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    for root in &roots {
        model.add_constraint(sum_of(root).eq(1.0));
        n_constraints += 1;
    }
    for &class in &order {
        for ((node, _), &xn) in candidates[&class].iter().zip(&x[&class]) {
            let mut children = node.children.clone();
            children.sort_unstable();
            children.dedup();
            for child in children {
                model.add_constraint(Expression::from(xn).leq(sum_of(&child)));
                n_constraints += 1;
                if let (Some(&tc), Some(&tk)) = (t.get(&class), t.get(&child)) {
                    if comp[&class] == comp[&child] {
                        let eps = 1.0 / (comp_size[&comp[&class]] as f64 + 1.0);
                        let lhs = Expression::from(tc) - tk - (1.0 + eps) * xn;
                        model.add_constraint(lhs.geq(eps - (1.0 + eps)));
                        n_constraints += 1;
                    }
                }
            }
        }
    }
    if let Some(start) = warm_start(egraph, &roots, warm, &candidates, &x, &t, &comp, &comp_size) {
        model = model.with_initial_solution(start);
    }
    let solution = match model.solve() {
        Ok(s) => s,
        Err(ResolutionError::Other(m)) => return failed(m.to_string()),
        Err(e) => return failed(e.to_string()),
    };
    let outcome = match solution.status() {
        SolutionStatus::Optimal => IlpOutcome::Optimal,
        _ => IlpOutcome::TimeLimit,
    };
    let mut choice = HashMap::new();
    let mut cost = 0.0;
    for &class in &order {
        let picked = candidates[&class].iter().zip(&x[&class]).find(|(_, &v)| solution.value(v) > 0.5);
        if let Some(((node, c), _)) = picked {
            choice.insert(class, node.clone());
            cost += c;
        }
    }
    IlpChoice { outcome, choice, cost, variables: n_vars, constraints: n_constraints }
}

/// The variable values of `warm`'s choice, when it is a feasible solution of the program
/// (acyclic, every node a candidate); `None` otherwise, and the solver starts cold.
#[allow(clippy::too_many_arguments)]
fn warm_start(
    egraph: &TsrEGraph,
    roots: &BTreeSet<Id>,
    warm: &dyn Fn(Id) -> TsrNode,
    candidates: &HashMap<Id, Vec<(TsrNode, f64)>>,
    x: &HashMap<Id, Vec<Variable>>,
    t: &HashMap<Id, Variable>,
    comp: &HashMap<Id, usize>,
    comp_size: &HashMap<usize, usize>,
) -> Option<Vec<(Variable, f64)>> {
    // Post-order over the warm choice; `height` counts chosen edges inside one component.
    let mut picked: HashMap<Id, usize> = HashMap::new();
    let mut height: HashMap<Id, usize> = HashMap::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().map(|&r| (r, false)).collect();
    let mut on_path: BTreeSet<Id> = BTreeSet::new();
    while let Some((class, expanded)) = stack.pop() {
        if height.contains_key(&class) {
            continue;
        }
        let node = warm(class).map_children(|c| egraph.find(c));
        let index = candidates.get(&class)?.iter().position(|(n, _)| *n == node)?;
        if !expanded {
            if !on_path.insert(class) {
                return None;
            }
            stack.push((class, true));
            stack.extend(node.children.iter().filter(|c| !height.contains_key(c)).map(|&c| (c, false)));
            continue;
        }
        on_path.remove(&class);
        let h = node
            .children
            .iter()
            .filter(|c| comp.get(c) == comp.get(&class))
            .map(|c| height.get(c).map_or(0, |h| h + 1))
            .max()
            .unwrap_or(0);
        height.insert(class, h);
        picked.insert(class, index);
    }
    let mut values = Vec::new();
    for (class, xs) in x {
        for (i, &v) in xs.iter().enumerate() {
            values.push((v, if picked.get(class) == Some(&i) { 1.0 } else { 0.0 }));
        }
    }
    for (class, &v) in t {
        let eps = 1.0 / (comp_size[&comp[class]] as f64 + 1.0);
        values.push((v, height.get(class).map_or(0.0, |&h| h as f64 * eps)));
    }
    Some(values)
}
