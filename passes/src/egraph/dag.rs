//! The extraction problem in index form, the exact DAG cost of a choice, and the DAG-aware
//! heuristic (the fallback of [`super::ilp`] and its warm start).
//!
//! [`Candidates`] lists, for every class reachable from the outputs, its usable e-nodes
//! (canonical children, no self-loop, finite own cost) with each child as a class index, so
//! that costing a choice is array work. A [`Choice`] picks one node per class; its DAG cost
//! counts the own cost ([`node_cost`]) of every class reachable from the roots *once*, however
//! many consumers share it, which is what [`super::cost::graph_cost`] measures on the emitted
//! graph. A choice that reaches a class from itself cannot be emitted and has no cost.
//!
//! The heuristic ([`improve`]) is local search from a starting choice (the input graph, the
//! greedy extraction): for every reachable class, each alternative node is tried together with
//! *follow-ups*, re-picks of other classes that can now share a class the move made reachable
//! (switching Q's matmul to a slice of a merged QKV matmul only pays once K and V switch as
//! well). A move is kept when the DAG cost falls, so the result is never costlier than its
//! start.

use super::cost::node_cost;
use super::lang::{TsrEGraph, TsrNode};
use egg::{Id, Language};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One usable e-node of a class.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: TsrNode,
    /// Own cost in microseconds ([`node_cost`]).
    pub cost: f64,
    /// The operand classes, as indices into [`Candidates::classes`] (deduplicated).
    pub children: Vec<usize>,
}

/// The classes reachable from the roots and their usable nodes.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Canonical class ids, in discovery order.
    pub classes: Vec<Id>,
    pub index: HashMap<Id, usize>,
    /// Usable nodes per class (same order as `classes`).
    pub nodes: Vec<Vec<Candidate>>,
    /// Root class indices (deduplicated, in output order).
    pub roots: Vec<usize>,
}

/// One node index per class (into [`Candidates::nodes`]); `None` for a class never picked.
pub type Choice = Vec<Option<usize>>;

impl Candidates {
    /// Collects the classes reachable from `roots` through usable nodes.
    pub fn new(egraph: &TsrEGraph, roots: &[Id]) -> Candidates {
        let mut classes: Vec<Id> = Vec::new();
        let mut index: HashMap<Id, usize> = HashMap::new();
        let mut raw: Vec<Vec<(TsrNode, f64)>> = Vec::new();
        let mut todo: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
        while let Some(class) = todo.pop() {
            if index.contains_key(&class) {
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
            index.insert(class, classes.len());
            classes.push(class);
            raw.push(nodes);
        }
        let nodes = raw
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|(node, cost)| {
                        let mut children: Vec<usize> = node.children.iter().map(|c| index[c]).collect();
                        children.sort_unstable();
                        children.dedup();
                        Candidate { node, cost, children }
                    })
                    .collect()
            })
            .collect();
        let mut root_indices: Vec<usize> = Vec::new();
        for r in roots {
            let i = index[&egraph.find(*r)];
            if !root_indices.contains(&i) {
                root_indices.push(i);
            }
        }
        Candidates { classes, index, nodes, roots: root_indices }
    }

    /// The choice that picks, per class, the first node of `rank` that is a candidate (classes
    /// where none is stay `None`).
    pub fn choice_from(&self, rank: &dyn Fn(Id) -> Vec<TsrNode>) -> Choice {
        self.classes
            .iter()
            .zip(&self.nodes)
            .map(|(&class, nodes)| rank(class).iter().find_map(|want| nodes.iter().position(|c| c.node == *want)))
            .collect()
    }

    /// The classes `choice` reaches from the roots, or `None` when it is cyclic or a reached
    /// class has no pick.
    pub fn reached(&self, choice: &Choice) -> Option<Vec<bool>> {
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; self.classes.len()];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for &root in &self.roots {
            if state[root] == 2 {
                continue;
            }
            state[root] = 1;
            stack.push((root, 0));
            while let Some(&mut (class, ref mut next)) = stack.last_mut() {
                let pick = choice[class]?;
                let children = &self.nodes[class][pick].children;
                if *next < children.len() {
                    let child = children[*next];
                    *next += 1;
                    match state[child] {
                        0 => {
                            state[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => return None,
                        _ => {}
                    }
                    continue;
                }
                state[class] = 2;
                stack.pop();
            }
        }
        Some(state.into_iter().map(|s| s == 2).collect())
    }

    /// The DAG cost of `choice`: every reached class's own cost once; `None` when the choice
    /// cannot be emitted (cyclic, or a reached class without a pick).
    pub fn dag_cost(&self, choice: &Choice) -> Option<f64> {
        Some(self.reached_cost(choice, &self.reached(choice)?))
    }

    /// The DAG cost of `choice` given the classes it reaches ([`Candidates::reached`]), for
    /// callers that need both without walking the DAG twice.
    fn reached_cost(&self, choice: &Choice, reached: &[bool]) -> f64 {
        reached
            .iter()
            .enumerate()
            .filter(|(_, &r)| r)
            .map(|(class, _)| choice[class].map_or(0.0, |pick| self.nodes[class][pick].cost))
            .sum()
    }

    /// The chosen node per reached class, keyed by class id.
    pub fn nodes_of(&self, choice: &Choice) -> HashMap<Id, TsrNode> {
        let reached = self.reached(choice).unwrap_or_else(|| vec![true; self.classes.len()]);
        self.classes
            .iter()
            .enumerate()
            .filter(|(i, _)| reached[*i])
            .filter_map(|(i, &class)| choice[i].map(|pick| (class, self.nodes[i][pick].node.clone())))
            .collect()
    }

    /// An emittable choice that follows `rank` (preferred node indices per class; the class's
    /// other nodes follow by own cost): top-down from the roots, each class takes its first
    /// node that reads no class being chosen above it. At a dead end (every node of a class
    /// does) the parent's node is banned and the walk restarts, so this backtracks; `None`
    /// when the roots themselves run out of nodes or after [`MAX_RESTARTS`].
    pub fn acyclic_choice(&self, rank: &dyn Fn(usize) -> Vec<usize>) -> Option<Choice> {
        let n = self.classes.len();
        let order: Vec<Vec<usize>> = (0..n)
            .map(|class| {
                let mut list: Vec<usize> = Vec::new();
                for p in rank(class) {
                    if p < self.nodes[class].len() && !list.contains(&p) {
                        list.push(p);
                    }
                }
                let mut rest: Vec<usize> = (0..self.nodes[class].len()).filter(|p| !list.contains(p)).collect();
                rest.sort_by(|&a, &b| self.nodes[class][a].cost.total_cmp(&self.nodes[class][b].cost));
                list.extend(rest);
                list
            })
            .collect();
        let mut banned: HashSet<(usize, usize)> = HashSet::new();
        'restart: for _ in 0..MAX_RESTARTS {
            let mut choice: Choice = vec![None; n];
            // 0 = not chosen yet, 1 = on the current path, 2 = done.
            let mut state = vec![0u8; n];
            let mut stack: Vec<(usize, usize)> = Vec::new();
            for &root in &self.roots {
                if state[root] == 2 {
                    continue;
                }
                let mut entering = Some(root);
                loop {
                    if let Some(class) = entering.take() {
                        let usable = order[class].iter().copied().find(|&p| {
                            !banned.contains(&(class, p))
                                && self.nodes[class][p].children.iter().all(|&c| state[c] != 1)
                        });
                        match usable {
                            Some(p) => {
                                choice[class] = Some(p);
                                state[class] = 1;
                                stack.push((class, 0));
                            }
                            None => match stack.last() {
                                Some(&(parent, _)) => {
                                    let parent_pick = choice[parent]?;
                                    banned.insert((parent, parent_pick));
                                    continue 'restart;
                                }
                                None => return None,
                            },
                        }
                    }
                    let Some(top) = stack.last_mut() else { break };
                    let (class, next) = *top;
                    let children = &self.nodes[class][choice[class]?].children;
                    if next < children.len() {
                        top.1 += 1;
                        if state[children[next]] == 0 {
                            entering = Some(children[next]);
                        }
                        continue;
                    }
                    state[class] = 2;
                    stack.pop();
                }
            }
            return Some(choice);
        }
        None
    }

    /// Number of candidate nodes over all classes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.iter().map(Vec::len).sum()
    }
}

/// Most restarts of [`Candidates::acyclic_choice`] after dead ends.
pub const MAX_RESTARTS: usize = 1_000;

/// Most follow-up re-picks tried after one move (a move that makes a large sub-DAG reachable
/// would otherwise cost a DAG walk per consumer of each of its classes).
const MAX_FOLLOW_UPS: usize = 64;

/// What the local search did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SearchStats {
    /// Moves kept (each lowered the DAG cost).
    pub moves: usize,
    /// Moves tried.
    pub tried: usize,
    /// Whether the deadline stopped the search before a pass without improvement.
    pub timed_out: bool,
}

/// Improves `start` (which must be emittable) by local search until a pass over all reached
/// classes finds no improving move or `deadline` passes. Classes without a pick in `start`
/// take `fill`'s pick when a move needs them. Returns the improved choice and its DAG cost.
pub fn improve(cands: &Candidates, start: &Choice, fill: &Choice, deadline: Instant) -> (Choice, f64, SearchStats) {
    let mut current: Choice = start.iter().zip(fill).map(|(s, f)| s.or(*f)).collect();
    let mut stats = SearchStats::default();
    let Some(mut cost) = cands.dag_cost(&current) else {
        return (start.clone(), f64::INFINITY, stats);
    };
    // Who could consume a class: (consumer class, node index) per operand class.
    let mut consumers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); cands.classes.len()];
    for (class, nodes) in cands.nodes.iter().enumerate() {
        for (pick, candidate) in nodes.iter().enumerate() {
            for &child in &candidate.children {
                consumers[child].push((class, pick));
            }
        }
    }
    let better = |new: f64, old: f64| new < old * (1.0 - 1e-9) - 1e-12;
    loop {
        let mut improved = false;
        let Some(mut reached) = cands.reached(&current) else { break };
        for class in 0..cands.classes.len() {
            if !reached[class] || cands.nodes[class].len() < 2 {
                continue;
            }
            for pick in 0..cands.nodes[class].len() {
                if current[class] == Some(pick) {
                    continue;
                }
                if Instant::now() > deadline {
                    stats.timed_out = true;
                    return (current, cost, stats);
                }
                stats.tried += 1;
                let mut trial = current.clone();
                trial[class] = Some(pick);
                let Some(before_follow) = cands.reached(&trial) else { continue };
                let mut trial_cost = cands.reached_cost(&trial, &before_follow);
                // Follow-ups: classes with a node over a class this move made reachable.
                let newly: HashSet<usize> =
                    (0..cands.classes.len()).filter(|&c| before_follow[c] && !reached[c]).collect();
                let mut follow: Vec<(usize, usize)> =
                    newly.iter().flat_map(|&c| consumers[c].iter().copied()).filter(|&(d, _)| d != class).collect();
                follow.sort_unstable();
                follow.dedup();
                follow.truncate(MAX_FOLLOW_UPS);
                for (other, other_pick) in follow {
                    if trial[other] == Some(other_pick) {
                        continue;
                    }
                    let mut next = trial.clone();
                    next[other] = Some(other_pick);
                    if let Some(c) = cands.dag_cost(&next) {
                        if better(c, trial_cost) {
                            trial = next;
                            trial_cost = c;
                        }
                    }
                }
                if better(trial_cost, cost) {
                    current = trial;
                    cost = trial_cost;
                    stats.moves += 1;
                    improved = true;
                    reached = cands.reached(&current).unwrap_or(reached);
                    break;
                }
            }
        }
        if !improved {
            break;
        }
    }
    (current, cost, stats)
}
