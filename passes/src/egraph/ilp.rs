//! Exact extraction: the cheapest graph in a saturated e-graph by mixed-integer programming
//! (good_lp with COIN-OR CBC), under a time limit, warm-started from the DAG heuristic.
//!
//! The program (Tensat's formulation), over [`Candidates`]:
//! - a binary `x_n` per candidate e-node `n` (nodes of the classes reachable from the outputs);
//! - at most one node per class, `Σ_{n ∈ c} x_n ≤ 1`, and exactly one, `= 1`, for every class
//!   every emittable choice reaches (the output classes and what they must reach, below);
//! - a picked node's operands are computed: `x_n ≤ Σ_{m ∈ c} x_m` for each child class `c`;
//! - minimise `Σ cost(n) · x_n`, where `cost` is the node's own kernel time ([`super::cost::node_cost`]).
//!
//! Unlike greedy tree-cost extraction, this charges a shared subterm once: it is the true DAG
//! cost, which is what [`super::cost::graph_cost`] measures.
//!
//! **Required classes.** The relaxation of Tensat's program is weak on these e-graphs: a
//! residual sum has a dozen equal orders (associativity, commutativity), each reading its own
//! operand classes, and the LP picks each order at a twelfth, so it pays a twelfth of the layer
//! below, and a twelfth of that below the next sum. On `gpt2` its bound was 340 µs against an
//! optimum near 3,970 µs (a 91% gap CBC could not close in 10 s). But every order needs the
//! same matmuls, softmaxes and norms below it: [`mandatory`] computes, per class, the classes
//! any emittable choice reaching it must reach (a fixed point over the class graph), and the
//! classes the outputs must reach get `Σ x_n = 1`. The bound on `gpt2` rose to 3,164 µs and CBC
//! proves the optimum in well under a second.
//!
//! **Fewer binaries.** A node is *dominated* when another node of its class costs no more and
//! reads a subset of its operand classes (ties: the earlier node stays): every choice that picks
//! it stays feasible, acyclic and no costlier with the other node instead, so it gets no variable
//! ([`undominated`]); the warm start is moved off dominated nodes the same way.
//!
//! **Cycles.** An e-graph may contain cycles (`x = neg(neg(x))` puts `x` below itself), and a
//! choice that follows one cannot be emitted. Self-loops (a node with its own class as a child)
//! are dropped up front ([`Candidates::new`]). For the remaining cycles, each class in a
//! non-trivial strongly connected component of the class graph gets a continuous order variable
//! `t_c ∈ [0, 1]`, and a picked node must sit strictly above its operands in that order:
//! `t_c - t_child ≥ ε - (1 + ε)(1 - x_n)` with `ε = 1 / (|SCC| + 1)`. Edges between components
//! cannot close a cycle and get no constraint, so acyclic e-graphs get no order variables.
//! The order constraints are big-M constraints the relaxation satisfies with half a class on
//! each side of a cycle, so *support cuts* ([`SupportCut`]) tighten them: a picked class of a
//! set is computed, in the end, by a node that reads nothing in the set. They are added for
//! every two classes that read each other (a reshape and its inverse). (Separating them on the
//! LP relaxation's cycles, in rounds before the MIP, was tried: with the required classes, no
//! relaxation of the six models of `tessera bench egraph` violated one.)
//! (Solving without order variables and cutting the cycles a solution reaches, lazily, was
//! tried: free cycles of views make the first relaxations nearly free, and the gap on
//! `bert-base` went from 34% to 94%.)
//!
//! **Solver.** CBC (Debian's `coinor-libcbc-dev`, installed by `scripts/setup.sh`, linked
//! through `coin_cbc`). It starts from the warm choice (the DAG heuristic's, always feasible)
//! and stops at the optimum or the time limit, with the best solution found and the proven
//! lower bound; [`IlpChoice::gap`] is the relative distance between them. The solution is
//! checked (emittable, its DAG cost recomputed); a solver failure or an unusable solution is
//! [`IlpOutcome::Failed`], and the caller keeps the heuristic's choice.

use super::dag::{Candidates, Choice};
use good_lp::solvers::coin_cbc::coin_cbc;
use good_lp::{
    variable, Expression, ProblemVariables, Solution, SolutionStatus, SolverModel, Variable, WithInitialSolution,
};
use std::collections::HashMap;
use std::time::Duration;

/// How the solver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlpOutcome {
    /// Proven optimal.
    Optimal,
    /// The time limit hit; the choice is the best solution found by then (see the gap).
    TimeLimit,
    /// No usable solution from the solver (the message says why); the caller keeps the warm
    /// start.
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

/// What the MIP chose, and the sizes and bounds of the program.
#[derive(Debug, Clone)]
pub struct IlpChoice {
    pub outcome: IlpOutcome,
    /// The chosen node per candidate class (all `None` when `Failed`).
    pub choice: Choice,
    /// The DAG cost of `choice` in microseconds (infinite when `Failed`).
    pub cost: f64,
    /// The solver's proven lower bound on the optimum, microseconds (0 when unknown).
    pub bound: f64,
    pub variables: usize,
    pub constraints: usize,
}

impl IlpChoice {
    /// `(cost - bound) / cost`: 0 when proven optimal, 1 when nothing is known.
    pub fn gap(&self) -> f64 {
        if matches!(self.outcome, IlpOutcome::Optimal) || self.cost <= 0.0 {
            return 0.0;
        }
        if !self.cost.is_finite() {
            return 1.0;
        }
        ((self.cost - self.bound) / self.cost).clamp(0.0, 1.0)
    }
}

/// Strongly connected components of the class graph (Tarjan, iterative): the component id of
/// each class index.
fn components(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut index: Vec<Option<usize>> = vec![None; n];
    let mut low: Vec<usize> = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut comp: Vec<usize> = vec![0; n];
    let mut next = 0usize;
    let mut n_comps = 0usize;
    for start in 0..n {
        if index[start].is_some() {
            continue;
        }
        // Frames: (class, position in its successor list).
        let mut frames: Vec<(usize, usize)> = vec![(start, 0)];
        index[start] = Some(next);
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(frame) = frames.last_mut() {
            let v = frame.0;
            if frame.1 < edges[v].len() {
                let w = edges[v][frame.1];
                frame.1 += 1;
                match index[w] {
                    None => {
                        index[w] = Some(next);
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        frames.push((w, 0));
                    }
                    Some(iw) if on_stack[w] => low[v] = low[v].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if Some(low[v]) == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = n_comps;
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

/// Per class, whether each node is kept: `false` for a node dominated by another of its class
/// (cost no higher, operand classes a subset; of equal nodes the first is kept).
pub fn undominated(cands: &Candidates) -> Vec<Vec<bool>> {
    cands
        .nodes
        .iter()
        .map(|nodes| {
            (0..nodes.len())
                .map(|j| {
                    !nodes.iter().enumerate().any(|(i, a)| {
                        let b = &nodes[j];
                        let subset = a.children.iter().all(|c| b.children.contains(c));
                        let no_costlier = a.cost <= b.cost;
                        let strictly = a.cost < b.cost || a.children.len() < b.children.len();
                        i != j && subset && no_costlier && (strictly || i < j)
                    })
                })
                .collect()
        })
        .collect()
}

/// `choice` with every dominated pick replaced by a kept node that dominates it (fewer operand
/// classes, so the result stays acyclic and reaches no more than before; no costlier).
fn onto_kept(cands: &Candidates, kept: &[Vec<bool>], choice: &Choice) -> Choice {
    choice
        .iter()
        .enumerate()
        .map(|(class, &pick)| {
            let pick = pick?;
            if kept[class][pick] {
                return Some(pick);
            }
            let b = &cands.nodes[class][pick];
            let better = cands.nodes[class].iter().enumerate().filter(|&(i, a)| {
                kept[class][i] && a.cost <= b.cost && a.children.iter().all(|c| b.children.contains(c))
            });
            better.min_by(|x, y| x.1.cost.total_cmp(&y.1.cost)).map(|(i, _)| i).or(Some(pick))
        })
        .collect()
}

/// A valid inequality that cuts fractional cycles: when `class` is picked, some class of `set`
/// (which holds `class`) is computed by a node that reads no class of `set`. An acyclic choice
/// that reaches `class` follows its picks inside `set` until one leaves it, so every emittable
/// choice satisfies it; the relaxation of the order variables does not (half of a class
/// computed, half a free view of a class that is half a view of it, costs half).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SupportCut {
    class: usize,
    set: Vec<usize>,
}

/// Per class, the classes every emittable choice that reaches it must also reach (as bit sets
/// over class indices): the greatest solution of `must(A) = ∩_{n ∈ A} ∪_{c ∈ children(n)} ({c}
/// ∪ must(c))` over the kept nodes. Any solution of the equation is sound, by induction on a
/// class's height in an acyclic choice: its pick's children are reached, and with them what
/// they must reach. The relaxation cannot see this: it spreads a class over alternatives
/// (eleven orders of the same residual sum), each reading its own operands at a fraction, and
/// every computation below them, though all alternatives need it, is paid at that fraction.
fn mandatory(cands: &Candidates, kept: &[Vec<bool>], comp: &[usize]) -> Vec<Vec<u64>> {
    let n = cands.classes.len();
    let words = n.div_ceil(64);
    let mut must: Vec<Vec<u64>> = vec![vec![u64::MAX; words]; n];
    // Tarjan numbers components sinks first, so operands come before their consumers.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&c| comp[c]);
    let mut changed = true;
    while changed {
        changed = false;
        for &class in &order {
            let mut meet = vec![u64::MAX; words];
            for (candidate, _) in cands.nodes[class].iter().zip(&kept[class]).filter(|(_, &k)| k) {
                let mut join = vec![0u64; words];
                for &child in &candidate.children {
                    join[child / 64] |= 1 << (child % 64);
                    for (j, m) in join.iter_mut().zip(&must[child]) {
                        *j |= m;
                    }
                }
                for (m, j) in meet.iter_mut().zip(&join) {
                    *m &= j;
                }
            }
            if meet != must[class] {
                must[class] = meet;
                changed = true;
            }
        }
    }
    must
}

/// The program's structure, shared by the LP rounds and the MIP.
struct Formulation<'a> {
    cands: &'a Candidates,
    kept: Vec<Vec<bool>>,
    /// Strongly connected component of each class over the kept nodes.
    comp: Vec<usize>,
    comp_size: HashMap<usize, usize>,
    /// Classes every emittable choice reaches (the roots and what they must reach).
    required: Vec<bool>,
}

/// A built model with its variables (`x` per kept node, `t` per class in a cyclic component).
struct Built {
    model: good_lp::solvers::coin_cbc::CoinCbcProblem,
    x: Vec<Vec<Option<Variable>>>,
    t: Vec<Option<Variable>>,
    variables: usize,
    constraints: usize,
}

impl<'a> Formulation<'a> {
    fn new(cands: &'a Candidates) -> Formulation<'a> {
        let kept = undominated(cands);
        let edges = kept_edges(cands, &kept);
        let comp = components(&edges);
        let mut comp_size: HashMap<usize, usize> = HashMap::new();
        for &c in &comp {
            *comp_size.entry(c).or_insert(0) += 1;
        }
        let must = mandatory(cands, &kept, &comp);
        let mut required = vec![false; cands.classes.len()];
        for &root in &cands.roots {
            required[root] = true;
            for (class, r) in required.iter_mut().enumerate() {
                *r |= must[root][class / 64] & (1 << (class % 64)) != 0;
            }
        }
        Formulation { cands, kept, comp, comp_size, required }
    }

    fn cyclic(&self, class: usize) -> bool {
        self.comp_size[&self.comp[class]] > 1
    }

    /// For every two classes of a component that each have a node reading the other, the cut
    /// on the pair, both ways.
    fn pair_cuts(&self) -> Vec<SupportCut> {
        let mut cuts = Vec::new();
        for (class, nodes) in self.cands.nodes.iter().enumerate() {
            if !self.cyclic(class) {
                continue;
            }
            let mut reads: Vec<usize> = nodes
                .iter()
                .zip(&self.kept[class])
                .filter(|(_, &k)| k)
                .flat_map(|(c, _)| c.children.iter().copied())
                .filter(|&child| self.comp[child] == self.comp[class])
                .collect();
            reads.sort_unstable();
            reads.dedup();
            for other in reads {
                let back = self.cands.nodes[other]
                    .iter()
                    .zip(&self.kept[other])
                    .any(|(c, &k)| k && c.children.contains(&class));
                if back {
                    cuts.push(SupportCut { class, set: vec![class.min(other), class.max(other)] });
                }
            }
        }
        cuts
    }

    /// The program: binaries, Tensat's constraints, one node per class (exactly one where
    /// required), and `cuts`; `presolve = false` turns CBC's presolve and preprocessing off.
    fn build(&self, cuts: &[SupportCut], presolve: bool) -> Built {
        let cands = self.cands;
        let n = cands.classes.len();
        let mut vars = ProblemVariables::new();
        let x: Vec<Vec<Option<Variable>>> =
            self.kept.iter().map(|ks| ks.iter().map(|&k| k.then(|| vars.add(variable().binary()))).collect()).collect();
        let t: Vec<Option<Variable>> =
            (0..n).map(|c| self.cyclic(c).then(|| vars.add(variable().min(0.0).max(1.0)))).collect();
        let variables = x.iter().flatten().flatten().count() + t.iter().flatten().count();
        let objective: Expression = cands
            .nodes
            .iter()
            .zip(&x)
            .flat_map(|(nodes, xs)| nodes.iter().zip(xs).filter_map(|(c, v)| v.map(|v| c.cost * v)))
            .sum();
        let mut model = vars.minimise(objective).using(coin_cbc);
        model.set_parameter("log", "0");
        model.set_parameter("slog", "0");
        if !presolve {
            model.set_parameter("presolve", "off");
            model.set_parameter("preprocess", "off");
        }
        let mut constraints = 0usize;
        let sum_of = |class: usize| -> Expression { x[class].iter().flatten().copied().map(Expression::from).sum() };
        for class in 0..n {
            if self.required[class] {
                model.add_constraint(sum_of(class).eq(1.0));
                constraints += 1;
            } else if x[class].iter().flatten().count() > 1 {
                model.add_constraint(sum_of(class).leq(1.0));
                constraints += 1;
            }
            for (candidate, xn) in cands.nodes[class].iter().zip(&x[class]) {
                let Some(xn) = *xn else { continue };
                for &child in &candidate.children {
                    model.add_constraint(Expression::from(xn).leq(sum_of(child)));
                    constraints += 1;
                    if let (Some(tc), Some(tk)) = (t[class], t[child]) {
                        if self.comp[class] == self.comp[child] {
                            let eps = 1.0 / (self.comp_size[&self.comp[class]] as f64 + 1.0);
                            let lhs = Expression::from(tc) - tk - (1.0 + eps) * xn;
                            model.add_constraint(lhs.geq(eps - (1.0 + eps)));
                            constraints += 1;
                        }
                    }
                }
            }
        }
        for cut in cuts {
            let mut support = Expression::from(0.0);
            for &member in &cut.set {
                for (candidate, xn) in cands.nodes[member].iter().zip(&x[member]) {
                    if let Some(xn) = *xn {
                        if !candidate.children.iter().any(|c| cut.set.contains(c)) {
                            support += xn;
                        }
                    }
                }
            }
            model.add_constraint(sum_of(cut.class).leq(support));
            constraints += 1;
        }
        Built { model, x, t, variables, constraints }
    }
}

/// The class graph over the kept nodes.
fn kept_edges(cands: &Candidates, kept: &[Vec<bool>]) -> Vec<Vec<usize>> {
    cands
        .nodes
        .iter()
        .enumerate()
        .map(|(class, nodes)| {
            let mut succ: Vec<usize> = nodes
                .iter()
                .enumerate()
                .filter(|&(i, _)| kept[class][i])
                .flat_map(|(_, c)| c.children.iter().copied())
                .collect();
            succ.sort_unstable();
            succ.dedup();
            succ
        })
        .collect()
}

/// Extracts the cheapest DAG of `cands` within `time_limit`, starting from `warm` (an
/// emittable choice, e.g. the DAG heuristic's).
pub fn extract(cands: &Candidates, warm: Option<&Choice>, time_limit: Duration) -> IlpChoice {
    let n = cands.classes.len();
    let failed = |message: String, variables: usize, constraints: usize| IlpChoice {
        outcome: IlpOutcome::Failed(message),
        choice: vec![None; n],
        cost: f64::INFINITY,
        bound: 0.0,
        variables,
        constraints,
    };
    if cands.roots.iter().any(|&r| cands.nodes[r].is_empty()) {
        return failed("an output class has no usable node".to_string(), 0, 0);
    }
    let start = std::time::Instant::now();
    let program = Formulation::new(cands);
    let cuts = program.pair_cuts();
    let warm = warm.map(|w| onto_kept(cands, &program.kept, w));
    // CBC's presolve and preprocessing, given the warm start, declared the relaxation of
    // feasible programs infeasible (secondary status "linear relaxation infeasible") and
    // returned a non-solution, on the attention blocks of `passes/tests/egraph.rs`; without
    // them ResNet-50's program found no solution in its limit. So: with them, and when that
    // gives nothing usable, without them in the time left.
    let mut last = failed("not solved".to_string(), 0, 0);
    for presolve in [true, false] {
        let Built { mut model, x, t, variables, constraints } = program.build(&cuts, presolve);
        // CBC takes fractional seconds; good_lp's `with_time_limit` would round up to whole ones.
        let left = time_limit.saturating_sub(start.elapsed());
        model.set_parameter("sec", &format!("{:.3}", left.as_secs_f64().max(0.001)));
        if let Some(values) =
            warm.as_ref().and_then(|w| warm_start(cands, w, &x, &t, &program.comp, &program.comp_size))
        {
            model = model.with_initial_solution(values);
        }
        let solution = match model.solve() {
            Ok(s) => s,
            Err(e) => {
                last = failed(e.to_string(), variables, constraints);
                continue;
            }
        };
        let outcome = match solution.status() {
            SolutionStatus::Optimal => IlpOutcome::Optimal,
            _ => IlpOutcome::TimeLimit,
        };
        let bound = solution.model().best_possible_value();
        let choice: Choice =
            x.iter().map(|xs| xs.iter().position(|v| v.is_some_and(|v| solution.value(v) > 0.5))).collect();
        let Some(cost) = cands.dag_cost(&choice) else {
            let message = "the solver's choice cannot be emitted (none found in the limit)";
            last = failed(message.to_string(), variables, constraints);
            continue;
        };
        let bound = if bound.is_finite() { bound.min(cost) } else { 0.0 };
        return IlpChoice { outcome, choice, cost, bound, variables, constraints };
    }
    last
}

/// The variable values of `warm`, when it is emittable: picks on the classes it reaches, and
/// order values that rise along its edges inside each component; `None` otherwise (the solver
/// then starts cold).
fn warm_start(
    cands: &Candidates,
    warm: &Choice,
    x: &[Vec<Option<Variable>>],
    t: &[Option<Variable>],
    comp: &[usize],
    comp_size: &HashMap<usize, usize>,
) -> Option<Vec<(Variable, f64)>> {
    let reached = cands.reached(warm)?;
    // Height inside a component: the longest chain of chosen edges below a class within it.
    let mut height: Vec<Option<usize>> = vec![None; cands.classes.len()];
    fn height_of(
        class: usize,
        cands: &Candidates,
        warm: &Choice,
        comp: &[usize],
        height: &mut Vec<Option<usize>>,
    ) -> usize {
        // The choice is acyclic (checked by `reached`), so the recursion ends; its depth is
        // bounded by one component's size along chosen edges.
        if let Some(h) = height[class] {
            return h;
        }
        let children = warm[class].map_or(&[][..], |p| cands.nodes[class][p].children.as_slice());
        let h = children
            .iter()
            .filter(|&&c| comp[c] == comp[class])
            .map(|&c| height_of(c, cands, warm, comp, height) + 1)
            .max()
            .unwrap_or(0);
        height[class] = Some(h);
        h
    }
    let mut values = Vec::new();
    for (class, xs) in x.iter().enumerate() {
        for (i, v) in xs.iter().enumerate() {
            if let Some(v) = *v {
                values.push((v, if reached[class] && warm[class] == Some(i) { 1.0 } else { 0.0 }));
            }
        }
    }
    for (class, tv) in t.iter().enumerate() {
        if let Some(v) = *tv {
            let eps = 1.0 / (comp_size[&comp[class]] as f64 + 1.0);
            let h = if reached[class] { height_of(class, cands, warm, comp, &mut height) } else { 0 };
            values.push((v, (h as f64 * eps).min(1.0)));
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egraph::dag::Candidate;
    use crate::egraph::lang::{NodeKind, TsrNode};
    use std::sync::Arc;
    use tessera_ir::dtype::DType;
    use tessera_ir::types::TensorType;

    /// A candidate of `cost` reading `children`; its e-node is a placeholder (an input leaf
    /// numbered `id`), since the MIP only reads costs and children.
    fn node(id: u32, cost: f64, children: &[usize]) -> Candidate {
        let ty = Arc::new(TensorType::of_static(DType::F32, &[1]));
        let node = TsrNode { kind: NodeKind::Input { index: id, parameter: false, ty }, children: vec![] };
        Candidate { node, cost, children: children.to_vec() }
    }

    fn candidates(nodes: Vec<Vec<Candidate>>) -> Candidates {
        let classes: Vec<egg::Id> = (0..nodes.len()).map(egg::Id::from).collect();
        let index = classes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        Candidates { classes, index, nodes, roots: vec![0] }
    }

    #[test]
    fn a_free_cycle_is_not_extracted() {
        // Class 0 (the root): computed for 5, or a free view of class 1; class 1: a free view
        // of class 0 (closing a cycle), or computed for 3. Without acyclicity the free cycle
        // costs 0; the optimum that can be emitted is the view of the computed class 1.
        let cands =
            candidates(vec![vec![node(0, 5.0, &[]), node(1, 0.0, &[1])], vec![node(2, 0.0, &[0]), node(3, 3.0, &[])]]);
        let warm: Choice = vec![Some(0), None];
        let report = extract(&cands, Some(&warm), Duration::from_secs(10));
        assert_eq!(report.outcome, IlpOutcome::Optimal);
        assert_eq!(report.choice[0], Some(1));
        assert_eq!(report.choice[1], Some(1));
        assert!((report.cost - 3.0).abs() < 1e-9, "{}", report.cost);
        assert_eq!(report.gap(), 0.0);
    }

    #[test]
    fn what_every_alternative_needs_is_required() {
        // The root sums terms in two orders (nodes reading classes 1 and 2, or 3 and 4); both
        // orders read the expensive class 5 below (through 1 or 3), which is therefore
        // required, while class 6, read by one order only, is not. Without the requirement the
        // relaxation picks each order at a half and pays half of class 5.
        let cands = candidates(vec![
            vec![node(0, 1.0, &[1, 2]), node(1, 1.0, &[3, 4])],
            vec![node(2, 1.0, &[5])],
            vec![node(3, 1.0, &[6])],
            vec![node(4, 1.0, &[5])],
            vec![node(5, 1.0, &[])],
            vec![node(6, 100.0, &[])],
            vec![node(7, 50.0, &[])],
        ]);
        let kept = undominated(&cands);
        let comp = components(&kept_edges(&cands, &kept));
        let must = mandatory(&cands, &kept, &comp);
        let has = |class: usize, m: usize| must[class][m / 64] & (1 << (m % 64)) != 0;
        assert!(has(0, 5) && !has(0, 6) && !has(0, 1) && !has(0, 3), "{:?}", must[0]);
        let program = Formulation::new(&cands);
        assert_eq!(program.required, vec![true, false, false, false, false, true, false]);
        let report = extract(&cands, None, Duration::from_secs(10));
        assert_eq!(report.outcome, IlpOutcome::Optimal);
        assert!((report.cost - 103.0).abs() < 1e-9, "{}", report.cost);
    }

    #[test]
    fn two_classes_that_read_each_other_get_support_cuts() {
        // Class 0 (the root) is computed for 5 or a free view of class 1; class 1 is a free
        // view of class 0 or computed for 3: one cut each way on the pair.
        let cands =
            candidates(vec![vec![node(0, 5.0, &[]), node(1, 0.0, &[1])], vec![node(2, 0.0, &[0]), node(3, 3.0, &[])]]);
        let cuts = Formulation::new(&cands).pair_cuts();
        assert_eq!(cuts, vec![SupportCut { class: 0, set: vec![0, 1] }, SupportCut { class: 1, set: vec![0, 1] }]);
    }

    #[test]
    fn dominated_nodes_get_no_variable() {
        // In class 0 node 1 costs more than node 0 and reads a superset of its operands; node 2
        // is cheaper, so it stays although it reads more. Equal nodes keep the first.
        let cands = candidates(vec![
            vec![node(0, 1.0, &[]), node(1, 2.0, &[1]), node(2, 0.5, &[1]), node(3, 1.0, &[])],
            vec![node(4, 1.0, &[])],
        ]);
        assert_eq!(undominated(&cands), vec![vec![true, false, true, false], vec![true]]);
        // A warm start on a dominated node moves to its cheapest kept dominator (node 2 reads
        // what node 1 reads, for less).
        let kept = undominated(&cands);
        assert_eq!(onto_kept(&cands, &kept, &vec![Some(1), Some(0)]), vec![Some(2), Some(0)]);
        let report = extract(&cands, Some(&vec![Some(1), Some(0)]), Duration::from_secs(10));
        assert_eq!(report.variables, 3);
        assert!((report.cost - 1.0).abs() < 1e-9, "{}", report.cost);
    }
}
