//! The `egraph` pass: equality saturation over the tsr graph with egg, and extraction of the
//! cheapest equivalent graph by a roofline estimate.
//!
//! Map:
//! - [`lang`]: the egg language (every tsr op; inputs and constants as leaves), the shape
//!   analysis, graph → e-graph → graph.
//! - [`rules`]: the rule-file format, its parser, the load-time type check, egg rewrites, and
//!   the built-in rules (`passes/rules/*.rules`).
//! - [`taso`]: greedy rewriting without the e-graph (TASO's baseline), for comparison.
//! - [`cost`]: the roofline cost per e-node and per graph, or a measured table's.
//! - [`calibration`]: the measured kernel-time table of a machine (`tessera bench kernels
//!   --target cpu`), per op family and shape class, that `egraph{kernel-costs=FILE}` prices by.
//! - [`schedule`]: saturation phases (algebraic, layout, fusion-enabling, all) and the backoff
//!   scheduler that records banned and starved rules.
//! - [`greedy`]: greedy extraction by DAG cost.
//! - [`dag`]: the extraction problem in index form, the exact DAG cost of a choice, emittable
//!   (acyclic) choices, and the DAG-aware local search.
//! - [`ilp`]: exact extraction by mixed-integer programming (CBC), with a time limit and a gap.
//!
//! **The guard.** [`extract`] keeps the cheapest by [`cost::graph_cost`] of the input, greedy
//! extraction, the local search, the MIP (with `extract=ilp`) and greedy rewriting's result
//! (with `guard=true`), and says which ([`Method`]): the result is never costlier
//! than any of them, ties keep the input, and every output name is kept; the pipeline
//! verifies what it returns.
//!
//! # How it works
//!
//! **`passes::egraph`**: equality saturation over tsr with egg. `lang` is the egg language: an
//! e-node is `(op, result index, operand classes)`, graph inputs are leaves, constants are keyed
//! by the value that defined them; `reshape`/`broadcast` target shapes and `conv2d` windows are
//! *lifted* into attribute leaf children, so rules can match any shape or window. The
//! `ShapeAnalysis` gives every class its `TensorType` (by `Op::infer`), whether it folds at
//! weight-load time (depends on parameters and constants only), and its input set. `rules` parses
//! rule files (`passes/rules/*.rules`, see `passes/rules/README.md`), type-checks every rule on
//! sample shapes at load time and turns it into an egg rewrite whose applier re-checks types.
//! Saturation runs in phases ([`schedule`]) under iteration (per phase), e-node and time limits
//! with a backoff scheduler (per-rule `limit N`) that reports the rules it starved. Extraction
//! works on [`dag::Candidates`]: greedy (the cheaper of a per-class DAG-cost ranking and egg's
//! tree cost with view shares), made emittable by a backtracking top-down choice; then local
//! search from the input and from greedy; with `extract=ilp` a MIP (good_lp + CBC, Tensat's
//! order variables on cyclic components, warm-started from the local search, under a time
//! limit, with its proven gap). `taso` is the baseline without an e-graph (best single rewrite
//! per step); [`holds`] says whether a saturated e-graph contains its result, and `tessera
//! bench egraph` compares all of them on whole models (`--measure`: compiled, on the CPU).
//! `cost` is the roofline they minimise (`graph_cost` for graphs, `node_cost` per e-node).

pub mod calibration;
pub mod cost;
pub mod dag;
pub mod greedy;
pub mod ilp;
pub mod lang;
pub mod rules;
pub mod schedule;
pub mod taso;

use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use egg::{CostFunction, Extractor, Id, Language, Runner, StopReason};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;

const PASS: &str = "egraph";

// The option table of `egraph{...}`: one `OptionSpec` (name, default, help) per option, listed
// in `OPTIONS` below. The rows are alike by design (the duplicates tool lists them).
const ITERS: OptionSpec =
    OptionSpec { name: "iters", default: OptionValue::UInt(8), help: "most rounds of rule application" };
const NODES: OptionSpec =
    OptionSpec { name: "nodes", default: OptionValue::UInt(20_000), help: "stop saturating past this many e-nodes" };
const TIME_MS: OptionSpec =
    OptionSpec { name: "time-ms", default: OptionValue::UInt(2_000), help: "stop saturating after this long" };
const RULES: OptionSpec = OptionSpec {
    name: "rules",
    default: OptionValue::Str(Cow::Borrowed("")),
    help: "a rule file used in addition to the built-in rules",
};
const BUILTIN: OptionSpec =
    OptionSpec { name: "builtin", default: OptionValue::Bool(true), help: "use the built-in rules" };
const EXTRACT: OptionSpec = OptionSpec {
    name: "extract",
    default: OptionValue::Str(Cow::Borrowed("greedy")),
    help: "extraction method: greedy (greedy extraction and a DAG-aware local search) or ilp (also a MIP, warm-started from the local search)",
};
const ILP_TIME_MS: OptionSpec = OptionSpec {
    name: "ilp-time-ms",
    default: OptionValue::UInt(2_000),
    help: "time limit of the MIP (CBC); past it the best solution found is used, and the guard compares it with the heuristics",
};

const SEARCH_MS: OptionSpec = OptionSpec {
    name: "search-ms",
    default: OptionValue::UInt(1_000),
    help: "time limit of the DAG-aware local search (the MIP's warm start and fallback)",
};
const WEIGHTS: OptionSpec = OptionSpec {
    name: "weights",
    default: OptionValue::Str(Cow::Borrowed("load")),
    help: "when values computed from parameters only are computed: load (once, free per step: CPU artifacts' bind steps, the planner) or step (on every call, priced as kernels)",
};
const GUARD_REWRITING: OptionSpec = OptionSpec {
    name: "guard",
    default: OptionValue::Bool(false),
    help: "also run greedy rewriting without the e-graph and keep its result when it is cheaper",
};
const REWRITING_TIME_MS: OptionSpec = OptionSpec {
    name: "guard-ms",
    default: OptionValue::UInt(10_000),
    help: "time limit of greedy rewriting under guard=true",
};

const KERNEL_COSTS: OptionSpec = OptionSpec {
    name: "kernel-costs",
    default: OptionValue::Str(Cow::Borrowed("")),
    help: "a calibration table (JSON, `tessera bench kernels --target cpu --out FILE`) that prices kernels as measured on the machine that runs the artifact; empty: the H100 roofline",
};

/// The options of `egraph{...}`.
pub static OPTIONS: &[OptionSpec] = &[
    ITERS,
    NODES,
    TIME_MS,
    RULES,
    BUILTIN,
    EXTRACT,
    ILP_TIME_MS,
    SEARCH_MS,
    WEIGHTS,
    GUARD_REWRITING,
    REWRITING_TIME_MS,
    KERNEL_COSTS,
];

/// How the optimized graph is read out of the saturated e-graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extraction {
    /// Greedy extraction and the DAG-aware local search ([`dag::improve`]).
    Greedy,
    /// Also [`ilp::extract`] by DAG cost within the time limit, warm-started from the local
    /// search.
    Ilp { time_limit: Duration },
}

/// Limits on saturation, and the pricing extraction will use.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub iters: usize,
    pub nodes: usize,
    pub time: Duration,
    /// How the cost that extraction minimises prices values computed from parameters: the
    /// e-graph's analysis marks them as folding only under [`cost::Weights::FoldedAtLoad`].
    pub weights: cost::Weights,
    /// How a kernel is priced (the saturated e-graph carries it to extraction).
    pub kernels: cost::KernelCosts,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            iters: 8,
            nodes: 20_000,
            time: Duration::from_millis(2_000),
            weights: cost::Weights::FoldedAtLoad,
            kernels: cost::KernelCosts::Roofline,
        }
    }
}

/// What saturation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Applications per rule name over all phases (rules that never fired are absent).
    pub fired: BTreeMap<String, usize>,
    /// Iterations over all phases.
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    /// How the last phase stopped: `saturated`, `iteration-limit`, `node-limit`, `time-limit`
    /// or `other`.
    pub stop: &'static str,
    /// Each phase, in the order run ([`schedule::Phase::ORDER`]).
    pub phases: Vec<schedule::PhaseReport>,
    /// Rules still banned when the last phase stopped on a limit (their matches were cut
    /// short); empty when it saturated.
    pub starved: Vec<String>,
}

impl Report {
    /// One line: per phase its iterations, e-nodes and stop reason, then the starved rules.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {} it/{} nodes/{}", p.phase.name(), p.iterations, p.enodes, p.stop))
            .collect();
        let starved = if self.starved.is_empty() { "none".to_string() } else { self.starved.join(" ") };
        format!("{}; starved: {starved}", phases.join(", "))
    }
}

/// A saturated e-graph and the classes of the graph's outputs.
pub struct Saturated {
    pub egraph: lang::TsrEGraph,
    pub outputs: Vec<egg::Id>,
    pub report: Report,
    /// The pricing the e-graph was loaded with ([`Limits::weights`]).
    pub weights: cost::Weights,
}

fn stop_name(reason: &Option<StopReason>) -> &'static str {
    match reason {
        Some(StopReason::Saturated) => "saturated",
        Some(StopReason::IterationLimit(_)) => "iteration-limit",
        Some(StopReason::NodeLimit(_)) => "node-limit",
        Some(StopReason::TimeLimit(_)) => "time-limit",
        _ => "other",
    }
}

/// Loads `g` into an e-graph and applies `rules` in phases ([`schedule`]) until each phase
/// saturates or hits a limit: `limits.iters` per phase, the node and time limits over all.
pub fn saturate(g: &Graph, rules: &[rules::Rule], limits: Limits) -> Result<Saturated, String> {
    let loaded = lang::load_for(g, limits.weights);
    let mut egraph = loaded.egraph;
    egraph.analysis.kernels = limits.kernels.clone();
    let start = Instant::now();
    let mut phases = Vec::new();
    for phase in schedule::Phase::ORDER {
        let selected: Vec<&rules::Rule> = rules.iter().filter(|r| phase.includes(r)).collect();
        if selected.is_empty() {
            continue;
        }
        let rewrites = selected.iter().map(|r| rules::applier::rewrite(r)).collect::<Result<Vec<_>, _>>()?;
        let scheduler = schedule::Backoff::new(selected.iter().copied());
        let schedules = scheduler.schedules.clone();
        let runner = Runner::default()
            .with_scheduler(scheduler)
            .with_egraph(egraph)
            .with_iter_limit(limits.iters)
            .with_node_limit(limits.nodes)
            .with_time_limit(limits.time.saturating_sub(start.elapsed()))
            .run(&rewrites);
        let mut fired = BTreeMap::new();
        for it in &runner.iterations {
            for (name, n) in &it.applied {
                *fired.entry(name.to_string()).or_insert(0) += n;
            }
        }
        let stop = stop_name(&runner.stop_reason);
        let iterations = runner.iterations.len();
        egraph = runner.egraph;
        let schedules = schedules.borrow();
        let banned =
            schedules.iter().filter(|(_, s)| s.times_banned > 0).map(|(n, s)| (n.clone(), s.times_banned)).collect();
        let starved = if stop == "saturated" {
            Vec::new()
        } else {
            schedules.iter().filter(|(_, s)| s.banned_until > iterations).map(|(n, _)| n.clone()).collect()
        };
        phases.push(schedule::PhaseReport {
            phase,
            rules: selected.len(),
            iterations,
            enodes: egraph.total_number_of_nodes(),
            stop,
            fired,
            banned,
            starved,
        });
    }
    let mut fired = BTreeMap::new();
    for p in &phases {
        for (name, n) in &p.fired {
            *fired.entry(name.clone()).or_insert(0) += n;
        }
    }
    let outputs = loaded.outputs.iter().map(|&o| egraph.find(o)).collect();
    let last = phases.last();
    let report = Report {
        fired,
        iterations: phases.iter().map(|p| p.iterations).sum(),
        enodes: egraph.total_number_of_nodes(),
        eclasses: egraph.number_of_classes(),
        stop: last.map_or("saturated", |p| p.stop),
        starved: last.map_or_else(Vec::new, |p| p.starved.clone()),
        phases,
    };
    Ok(Saturated { egraph, outputs, report, weights: limits.weights })
}

/// The cheapest graph in `s` by greedy extraction ([`greedy_choice`]), with `original`'s
/// inputs and output names; `None` when it cannot keep them.
pub fn extract_greedy(original: &Graph, s: &Saturated) -> Option<Graph> {
    let cands = dag::Candidates::new(&s.egraph, &s.outputs);
    let ranked = ranked_positions(&cands, &greedy::ranked(&s.egraph, &s.outputs));
    let by_dag = cands.acyclic_choice(&|class| ranked[class].clone());
    let choice = greedy_choice(s, &cands, by_dag)?;
    emit(original, s, &cands, &choice)
}

/// Positions in `cands.nodes[class]` of `nodes`, in order (nodes that are not candidates are
/// skipped).
fn positions(cands: &dag::Candidates, class: usize, nodes: &[lang::TsrNode]) -> Vec<usize> {
    nodes.iter().filter_map(|want| cands.nodes[class].iter().position(|c| c.node == *want)).collect()
}

/// The nodes `ranked` lists for each candidate class, as positions (found once: the node
/// comparisons are a large part of extraction's time when repeated per ranking).
fn ranked_positions(cands: &dag::Candidates, ranked: &HashMap<Id, Vec<lang::TsrNode>>) -> Vec<Vec<usize>> {
    (0..cands.classes.len())
        .map(|class| positions(cands, class, ranked.get(&cands.classes[class]).map_or(&[], |v| v.as_slice())))
        .collect()
}

/// Greedy extraction: the cheaper (by DAG cost) of two rankings made emittable by
/// [`dag::Candidates::acyclic_choice`]. By DAG cost per class ([`greedy::ranked`]; the caller
/// passes that choice, `by_dag`, which it also uses as the local search's fill), which sees
/// sharing inside a class's sub-DAG but not across classes; and by egg's tree cost with views
/// charged their share of their operand ([`cost::Roofline`]), which sees the sharing of a
/// merged matmul by its parts but charges other shared subterms once per use.
fn greedy_choice(s: &Saturated, cands: &dag::Candidates, by_dag: Option<dag::Choice>) -> Option<dag::Choice> {
    let extractor = Extractor::new(&s.egraph, cost::Roofline { egraph: &s.egraph });
    let by_tree = |class: usize| {
        let mut roofline = cost::Roofline { egraph: &s.egraph };
        let mut scored: Vec<(f64, usize)> = cands.nodes[class]
            .iter()
            .enumerate()
            .map(|(p, c)| (roofline.cost(&c.node, |child| extractor.find_best_cost(child)), p))
            .filter(|(c, _)| c.is_finite())
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.into_iter().map(|(_, p)| p).collect()
    };
    [by_dag, cands.acyclic_choice(&by_tree)]
        .into_iter()
        .flatten()
        .filter_map(|choice| cands.dag_cost(&choice).map(|c| (c, choice)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, choice)| choice)
}

/// The graph of an emittable `choice`, with `original`'s inputs and output names.
fn emit(original: &Graph, s: &Saturated, cands: &dag::Candidates, choice: &dag::Choice) -> Option<Graph> {
    let nodes = cands.nodes_of(choice);
    let choose = |class: Id| {
        let class = s.egraph.find(class);
        nodes.get(&class).cloned().unwrap_or_else(|| s.egraph[class].nodes[0].clone())
    };
    lang::build(original, &s.outputs, &choose)
}

/// Whether the saturated e-graph already holds `other` (an equivalent graph with the same
/// inputs, e.g. greedy rewriting's result): adding it to a copy merges nothing new into the
/// output classes, i.e. each of its outputs lands in the class of the matching output.
/// `other`'s literals are matched to equal literals of the e-graph by value.
pub fn holds(s: &Saturated, other: &Graph) -> bool {
    let mut egraph = s.egraph.clone();
    // Equal literals are separate classes (keyed by their defining value): merge them in the
    // copy, so that `other`'s literals, mapped to one of them, meet every use.
    let mut literals: HashMap<String, Id> = HashMap::new();
    let mut same: Vec<(Id, Id)> = Vec::new();
    for class in egraph.classes() {
        for node in class.iter() {
            if let Some((op @ tessera_ir::ops::Op::Constant(_), _)) = node.as_op() {
                let first = *literals.entry(format!("{op:?}")).or_insert(class.id);
                same.push((first, class.id));
            }
        }
    }
    for (a, b) in same {
        egraph.union(a, b);
    }
    egraph.rebuild();
    let constant_class = |op: &tessera_ir::ops::Op| match op {
        tessera_ir::ops::Op::Constant(_) => literals.get(&format!("{op:?}")).copied(),
        _ => None,
    };
    let added = lang::load_into(&mut egraph, other, s.weights, &constant_class);
    added.len() == s.outputs.len() && added.iter().zip(&s.outputs).all(|(&a, &o)| egraph.find(a) == egraph.find(o))
}

/// A way the pass can end up with a graph; the guard keeps the cheapest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// The input graph, unchanged.
    Input,
    /// Greedy extraction ([`extract_greedy`]).
    GreedyExtraction,
    /// The DAG-aware heuristic: local search from the input and from greedy extraction
    /// ([`dag::improve`]).
    LocalSearch,
    /// The MIP ([`ilp::extract`]), warm-started from the local search.
    Ilp,
    /// Greedy rewriting without the e-graph ([`taso::rewrite`]), when the guard runs it.
    GreedyRewriting,
}

impl Method {
    /// Kebab-case name for counters and reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Input => "input",
            Method::GreedyExtraction => "greedy-extraction",
            Method::LocalSearch => "local-search",
            Method::Ilp => "ilp",
            Method::GreedyRewriting => "greedy-rewriting",
        }
    }
}

/// How [`extract`] reads the result out of a saturated e-graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractConfig {
    pub extraction: Extraction,
    /// Time for the local search.
    pub search_time: Duration,
}

impl Default for ExtractConfig {
    fn default() -> ExtractConfig {
        ExtractConfig { extraction: Extraction::Greedy, search_time: Duration::from_millis(1_000) }
    }
}

/// The result of [`extract`]: the cheapest candidate, which method gave it, and every
/// candidate's estimated cost.
pub struct Extracted {
    /// The cheapest graph ([`cost::graph_cost`]); the input itself when nothing is cheaper.
    pub graph: Graph,
    pub cost: f64,
    pub winner: Method,
    /// Each method's estimated cost (infinite when it produced no graph), in [`Method`] order.
    pub costs: BTreeMap<Method, f64>,
    /// The MIP's report, with `extraction = ilp`.
    pub ilp: Option<ilp::IlpChoice>,
    pub search: dag::SearchStats,
    /// Variables of the extraction problem: candidate e-nodes reachable from the outputs.
    pub candidate_nodes: usize,
}

/// The input graph's own nodes per class of the saturated e-graph: loading `original` again
/// gives the same class ids (egg never renumbers), canonicalised through `s`. A class may hold
/// several (merged) original nodes.
fn input_nodes(original: &Graph, s: &Saturated) -> HashMap<Id, Vec<lang::TsrNode>> {
    let fresh = lang::load_for(original, s.weights);
    let mut nodes: HashMap<Id, Vec<lang::TsrNode>> = HashMap::new();
    for class in fresh.egraph.classes() {
        for node in class.iter() {
            let node = node.clone().map_children(|c| s.egraph.find(c));
            nodes.entry(s.egraph.find(class.id)).or_default().push(node);
        }
    }
    nodes
}

/// Extracts from `s` by `config`, and keeps the cheapest (by [`cost::graph_cost`]) of the
/// input, greedy extraction, the local search, the MIP (with `extract = ilp`) and `baseline`
/// (greedy rewriting's result, when the caller ran it): the result is never costlier than any
/// of them. Ties go to the earlier [`Method`], so an unimproved graph stays the input.
pub fn extract(original: &Graph, s: &Saturated, config: &ExtractConfig, baseline: Option<&Graph>) -> Extracted {
    let price = |g: &Graph| cost::graph_cost_with(g, s.weights, &s.egraph.analysis.kernels);
    let before = price(original);
    let cands = dag::Candidates::new(&s.egraph, &s.outputs);
    let ranked = ranked_positions(&cands, &greedy::ranked(&s.egraph, &s.outputs));
    let fill = cands.acyclic_choice(&|class| ranked[class].clone());
    let greedy = greedy_choice(s, &cands, fill.clone());
    // The input graph as a choice: its own nodes first; where merged classes make them cyclic,
    // `acyclic_choice` falls back to other nodes, so the start is emittable.
    let originals = input_nodes(original, s);
    let input = cands.acyclic_choice(&|class| {
        let mut list = positions(&cands, class, originals.get(&cands.classes[class]).map_or(&[], |v| v.as_slice()));
        list.extend(ranked[class].iter().copied());
        list
    });
    let deadline = Instant::now() + config.search_time;
    let fill = fill.unwrap_or_else(|| vec![None; cands.classes.len()]);
    let mut best: Option<(dag::Choice, f64)> = None;
    let mut search = dag::SearchStats::default();
    for start in input.iter().chain(greedy.iter()) {
        let (choice, c, stats) = dag::improve(&cands, start, &fill, deadline);
        search.moves += stats.moves;
        search.tried += stats.tried;
        search.timed_out |= stats.timed_out;
        if c.is_finite() && best.as_ref().is_none_or(|(_, b)| c < *b) {
            best = Some((choice, c));
        }
    }
    let emit = |choice: &dag::Choice| emit(original, s, &cands, choice);
    let mut graphs: Vec<(Method, Option<Graph>)> = vec![
        (Method::GreedyExtraction, greedy.as_ref().and_then(emit)),
        (Method::LocalSearch, best.as_ref().and_then(|(choice, _)| emit(choice))),
    ];
    let mut ilp_report = None;
    if let Extraction::Ilp { time_limit } = config.extraction {
        let report = ilp::extract(&cands, best.as_ref().map(|(choice, _)| choice), time_limit);
        let graph = if matches!(report.outcome, ilp::IlpOutcome::Failed(_)) { None } else { emit(&report.choice) };
        graphs.push((Method::Ilp, graph));
        ilp_report = Some(report);
    }
    let mut costs = BTreeMap::new();
    costs.insert(Method::Input, before);
    let mut winner = (Method::Input, before, None);
    for (method, graph) in graphs.into_iter().chain(baseline.map(|g| (Method::GreedyRewriting, Some(g.clone())))) {
        let c = graph.as_ref().map_or(f64::INFINITY, price);
        costs.insert(method, c);
        if c < winner.1 {
            winner = (method, c, graph);
        }
    }
    Extracted {
        graph: winner.2.unwrap_or_else(|| original.clone()),
        cost: winner.1,
        winner: winner.0,
        costs,
        ilp: ilp_report,
        search,
        candidate_nodes: cands.num_nodes(),
    }
}

/// Counter names must be `&'static str`; rule names come from files, so each distinct name is
/// leaked once (bounded by the number of distinct rule names in the process).
fn intern(name: String) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut guard = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(&s) = set.get(name.as_str()) {
        return s;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    set.insert(leaked);
    leaked
}

fn failed(message: String) -> PassError {
    PassError::Failed { pass: PASS, message }
}

/// The rules selected by `options`: the built-in set and/or a user file.
pub fn load_rules(options: &PassOptions) -> Result<Vec<rules::Rule>, PassError> {
    let mut all = Vec::new();
    if options.bool(PASS, &BUILTIN)? {
        all.extend(rules::builtin().map_err(|e| failed(e.to_string()))?.iter().cloned());
    }
    let path = options.str(PASS, &RULES)?;
    if !path.is_empty() {
        let text = std::fs::read_to_string(path).map_err(|e| failed(format!("cannot read rule file {path}: {e}")))?;
        let user = rules::syntax::parse_rules(path, &text).map_err(|e| failed(e.to_string()))?;
        // A user rule replaces a built-in one of the same name.
        all.retain(|r| !user.iter().any(|u| u.name == r.name));
        all.extend(user);
    }
    Ok(all)
}

/// Counters: `rule.NAME` per rule application, `egraph.rules-fired`, `egraph.iterations`,
/// `egraph.enodes`, `egraph.eclasses`, `egraph.stop.REASON` (1), `egraph.cost-before-ns` and
/// `egraph.cost-after-ns` (roofline estimate), `egraph.kept-original` (1 when nothing improved
/// the estimate), `egraph.winner.METHOD` (1: which candidate the guard kept, see [`Method`]),
/// `egraph.cost.METHOD-ns` per candidate, `egraph.search-moves`, `egraph.phase.PHASE.iterations`
/// per saturation phase and `egraph.starved.RULE` (1) per rule still banned when saturation
/// stopped on a limit. With `extract=ilp` also
/// `egraph.ilp.OUTCOME` (1; `optimal`, `time-limit` or `failed`), `egraph.ilp-gap-ppm` (parts
/// per million), `egraph.ilp-variables` and `egraph.ilp-constraints`. With
/// `guard=true` greedy rewriting runs too and is one of the candidates. `rewrites`
/// is the number of rule applications when the graph changed.
pub fn run(g: &mut Graph, options: &PassOptions) -> Result<PassStats, PassError> {
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let limits = Limits {
        iters: to_usize(options.uint(PASS, &ITERS)?),
        nodes: to_usize(options.uint(PASS, &NODES)?),
        time: Duration::from_millis(options.uint(PASS, &TIME_MS)?),
        weights: match options.str(PASS, &WEIGHTS)? {
            "load" => cost::Weights::FoldedAtLoad,
            "step" => cost::Weights::EveryStep,
            other => return Err(failed(format!("weights={other} is not supported (load or step)"))),
        },
        kernels: match options.str(PASS, &KERNEL_COSTS)? {
            "" => cost::KernelCosts::Roofline,
            path => cost::KernelCosts::measured(path).map_err(|e| failed(e.to_string()))?,
        },
    };
    let extraction = match options.str(PASS, &EXTRACT)? {
        "greedy" => Extraction::Greedy,
        "ilp" => Extraction::Ilp { time_limit: Duration::from_millis(options.uint(PASS, &ILP_TIME_MS)?) },
        other => return Err(failed(format!("extract={other} is not supported (greedy or ilp)"))),
    };
    let config = ExtractConfig { extraction, search_time: Duration::from_millis(options.uint(PASS, &SEARCH_MS)?) };
    // Per-rank programs are opaque to the e-graph: a `send` has no result to extract, and
    // collectives must stay in program order on every rank.
    if g.nodes().any(|(_, n)| n.op.is_communication()) {
        let mut stats = PassStats::default();
        stats.counters.insert("skipped-communication", 1);
        return Ok(stats);
    }
    let rules = load_rules(options)?;
    let start = Instant::now();
    let baseline = if options.bool(PASS, &GUARD_REWRITING)? {
        let limits = taso::RewriteLimits {
            steps: usize::MAX,
            time: Duration::from_millis(options.uint(PASS, &REWRITING_TIME_MS)?),
            weights: limits.weights,
            kernels: limits.kernels.clone(),
        };
        Some(taso::rewrite(g, &rules, limits).map_err(failed)?.0)
    } else {
        None
    };
    let saturated = saturate(g, &rules, limits).map_err(failed)?;
    let extracted = extract(g, &saturated, &config, baseline.as_ref());
    let mut stats = PassStats::default();
    let ns = |us: f64| if us.is_finite() { (us * 1000.0).round() as usize } else { usize::MAX };
    if let Some(ilp) = &extracted.ilp {
        stats.counters.insert(intern(format!("egraph.ilp.{}", ilp.outcome.name())), 1);
        stats.counters.insert("egraph.ilp-gap-ppm", (ilp.gap() * 1e6).round() as usize);
        stats.counters.insert("egraph.ilp-variables", ilp.variables);
        stats.counters.insert("egraph.ilp-constraints", ilp.constraints);
    }
    for (method, &c) in &extracted.costs {
        stats.counters.insert(intern(format!("egraph.cost.{}-ns", method.name())), ns(c));
    }
    stats.counters.insert(intern(format!("egraph.winner.{}", extracted.winner.name())), 1);
    stats.counters.insert("egraph.search-moves", extracted.search.moves);
    let report = &saturated.report;
    let total_fired: usize = report.fired.values().sum();
    for (name, &n) in &report.fired {
        stats.counters.insert(intern(format!("rule.{name}")), n);
    }
    let mut set = |name: &'static str, n: usize| {
        stats.counters.insert(name, n);
    };
    for phase in &report.phases {
        set(intern(format!("egraph.phase.{}.iterations", phase.phase.name())), phase.iterations);
    }
    for rule in &report.starved {
        set(intern(format!("egraph.starved.{rule}")), 1);
    }
    set("egraph.rules-fired", total_fired);
    set("egraph.iterations", report.iterations);
    set("egraph.enodes", report.enodes);
    set("egraph.eclasses", report.eclasses);
    set(intern(format!("egraph.stop.{}", report.stop)), 1);
    set("egraph.cost-before-ns", ns(extracted.costs[&Method::Input]));
    set("egraph.cost-after-ns", ns(extracted.cost));
    if extracted.winner == Method::Input {
        set("egraph.kept-original", 1);
    } else {
        *g = extracted.graph;
        stats.rewrites = total_fired.max(1);
    }
    set("egraph.time-us", start.elapsed().as_micros() as usize);
    Ok(stats)
}
