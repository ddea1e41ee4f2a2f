//! The `egraph` pass: equality saturation over the tsr graph with egg, and extraction of the
//! cheapest equivalent graph by a roofline estimate.
//!
//! Map:
//! - [`lang`]: the egg language (every tsr op; inputs and constants as leaves), the shape
//!   analysis, graph → e-graph → graph.
//! - [`rules`]: the rule-file format, its parser, the load-time type check, egg rewrites, and
//!   the built-in rules (`passes/rules/*.rules`).
//! - [`taso`]: greedy rewriting without the e-graph (TASO's baseline), for comparison.
//! - [`cost`]: the roofline cost per e-node and per graph.
//! - [`greedy`]: greedy extraction by DAG cost (the default).
//! - [`ilp`]: exact extraction by integer linear programming, with a time limit.
//!
//! The pass keeps the original graph unless the extracted one is strictly cheaper by
//! [`cost::graph_cost`] and keeps every output name; the pipeline verifies what it returns.
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
//! Saturation runs under iteration, e-node and time limits with egg's backoff scheduler
//! (per-rule `limit N`). Extraction: `greedy` (the cheaper of a per-class DAG-cost extractor and
//! egg's tree cost with view shares) or `ilp` (exact DAG cost with good_lp + microlp, Tensat's
//! order variables on cyclic components, warm-started from greedy, under a time limit). `taso`
//! is the baseline without an e-graph (best single rewrite per step), and `tessera bench egraph`
//! compares them on whole models. `cost` is the roofline both minimise (`graph_cost` for graphs,
//! `node_cost` per e-node).

pub mod cost;
pub mod greedy;
pub mod ilp;
pub mod lang;
pub mod rules;
pub mod taso;

use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use egg::{BackoffScheduler, CostFunction, Extractor, Id, Runner, StopReason};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;

const PASS: &str = "egraph";

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
    help: "extraction method: greedy (per-class DAG cost) or ilp (exact DAG cost, warm-started from greedy)",
};
const ILP_TIME_MS: OptionSpec = OptionSpec {
    name: "ilp-time-ms",
    default: OptionValue::UInt(2_000),
    help: "time limit of ILP extraction; past it the best solution found (or greedy) is used",
};

/// The options of `egraph{...}`.
pub static OPTIONS: &[OptionSpec] = &[ITERS, NODES, TIME_MS, RULES, BUILTIN, EXTRACT, ILP_TIME_MS];

/// How the optimized graph is read out of the saturated e-graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extraction {
    /// The better of two greedy heuristics (per-class DAG cost, tree cost with view shares).
    Greedy,
    /// [`ilp::extract`] by DAG cost within the time limit, warm-started from greedy.
    Ilp { time_limit: Duration },
}

/// Limits on saturation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub iters: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { iters: 8, nodes: 20_000, time: Duration::from_millis(2_000) }
    }
}

/// What saturation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Applications per rule name (rules that never fired are absent).
    pub fired: BTreeMap<String, usize>,
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    /// `saturated`, `iteration-limit`, `node-limit`, `time-limit` or `other`.
    pub stop: &'static str,
}

/// A saturated e-graph and the classes of the graph's outputs.
pub struct Saturated {
    pub egraph: lang::TsrEGraph,
    pub outputs: Vec<egg::Id>,
    pub report: Report,
}

/// Loads `g` into an e-graph and applies `rules` until a limit or saturation.
pub fn saturate(g: &Graph, rules: &[rules::Rule], limits: Limits) -> Result<Saturated, String> {
    let rewrites = rules.iter().map(rules::applier::rewrite).collect::<Result<Vec<_>, _>>()?;
    let loaded = lang::load(g);
    let mut scheduler = BackoffScheduler::default();
    for rule in rules {
        if let Some(limit) = rule.match_limit {
            scheduler = scheduler.rule_match_limit(rule.name.as_str(), limit);
        }
    }
    let runner = Runner::default()
        .with_scheduler(scheduler)
        .with_egraph(loaded.egraph)
        .with_iter_limit(limits.iters)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(&rewrites);
    let mut fired = BTreeMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *fired.entry(name.to_string()).or_insert(0) += n;
        }
    }
    let stop = match runner.stop_reason {
        Some(StopReason::Saturated) => "saturated",
        Some(StopReason::IterationLimit(_)) => "iteration-limit",
        Some(StopReason::NodeLimit(_)) => "node-limit",
        Some(StopReason::TimeLimit(_)) => "time-limit",
        _ => "other",
    };
    let egraph = runner.egraph;
    let outputs = loaded.outputs.iter().map(|&o| egraph.find(o)).collect();
    let report = Report {
        fired,
        iterations: runner.iterations.len(),
        enodes: egraph.total_number_of_nodes(),
        eclasses: egraph.number_of_classes(),
        stop,
    };
    Ok(Saturated { egraph, outputs, report })
}

/// The cheapest graph in `s` by greedy (tree-cost) extraction, with `original`'s inputs and
/// output names; `None` when it cannot keep them.
pub fn extract_greedy(original: &Graph, s: &Saturated) -> Option<Graph> {
    greedy_choice(original, s).map(|(g, _)| g)
}

/// Greedy extraction and the node it used per class: the cheaper (by [`cost::graph_cost`]) of
/// two heuristics. By DAG cost per class ([`greedy::ranked`]), which sees sharing inside a
/// class's sub-DAG but not across classes; and by egg's tree cost with views charged their
/// share of their operand ([`cost::Roofline`]), which sees the sharing of a merged matmul by
/// its parts but charges other shared subterms once per use. [`lang::build_ranked`] skips a
/// node that would close a cycle.
fn greedy_choice(original: &Graph, s: &Saturated) -> Option<(Graph, HashMap<Id, lang::TsrNode>)> {
    let ranked = greedy::ranked(&s.egraph, &s.outputs);
    let by_dag = |class: Id| ranked.get(&s.egraph.find(class)).cloned().unwrap_or_default();
    let dag = lang::build_ranked(original, &s.outputs, &by_dag);
    let extractor = Extractor::new(&s.egraph, cost::Roofline { egraph: &s.egraph });
    let by_tree = |class: Id| {
        let mut roofline = cost::Roofline { egraph: &s.egraph };
        let mut nodes: Vec<(f64, lang::TsrNode)> = s.egraph[class]
            .iter()
            .map(|n| (roofline.cost(n, |c| extractor.find_best_cost(c)), n.clone()))
            .filter(|(c, _)| c.is_finite())
            .collect();
        nodes.sort_by(|a, b| a.0.total_cmp(&b.0));
        nodes.into_iter().map(|(_, n)| n).collect()
    };
    let tree = lang::build_ranked(original, &s.outputs, &by_tree);
    match (dag, tree) {
        (Some(d), Some(t)) => Some(if cost::graph_cost(&t.0) < cost::graph_cost(&d.0) { t } else { d }),
        (d, t) => d.or(t),
    }
}

/// What ILP extraction produced: the graph (when it could be emitted with the original
/// names) and the solver's report.
pub struct IlpExtracted {
    pub graph: Option<Graph>,
    pub report: ilp::IlpChoice,
}

/// The cheapest graph in `s` by exact (DAG-cost) extraction within `time_limit`, warm-started
/// from the greedy choice. When the solver fails, `graph` is `None` and the report says why.
pub fn extract_ilp(original: &Graph, s: &Saturated, time_limit: Duration) -> IlpExtracted {
    let extractor = Extractor::new(&s.egraph, cost::Roofline { egraph: &s.egraph });
    let greedy = greedy_choice(original, s).map(|(_, choice)| choice).unwrap_or_default();
    let warm = |class: Id| {
        let class = s.egraph.find(class);
        greedy.get(&class).cloned().unwrap_or_else(|| extractor.find_best_node(class).clone())
    };
    let report = ilp::extract(&s.egraph, &s.outputs, &warm, time_limit);
    if matches!(report.outcome, ilp::IlpOutcome::Failed(_)) {
        return IlpExtracted { graph: None, report };
    }
    let choose = |class: Id| {
        let class = s.egraph.find(class);
        report.choice.get(&class).cloned().unwrap_or_else(|| extractor.find_best_node(class).clone())
    };
    let graph = lang::build(original, &s.outputs, &choose);
    IlpExtracted { graph, report }
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
/// `egraph.cost-after-ns` (roofline estimate), `egraph.kept-original` (1 when extraction did not
/// improve the estimate). With `extract=ilp` also `egraph.greedy-cost-ns`, `egraph.ilp-cost-ns`,
/// `egraph.ilp.OUTCOME` (1; `optimal`, `time-limit` or `failed`), `egraph.ilp-variables`,
/// `egraph.ilp-constraints`, and `egraph.ilp-used-greedy` (1 when the greedy graph was kept
/// because the ILP found nothing cheaper or failed). `rewrites` is the number of rule
/// applications when the graph changed.
pub fn run(g: &mut Graph, options: &PassOptions) -> Result<PassStats, PassError> {
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let limits = Limits {
        iters: to_usize(options.uint(PASS, &ITERS)?),
        nodes: to_usize(options.uint(PASS, &NODES)?),
        time: Duration::from_millis(options.uint(PASS, &TIME_MS)?),
    };
    let extraction = match options.str(PASS, &EXTRACT)? {
        "greedy" => Extraction::Greedy,
        "ilp" => Extraction::Ilp { time_limit: Duration::from_millis(options.uint(PASS, &ILP_TIME_MS)?) },
        other => return Err(failed(format!("extract={other} is not supported (greedy or ilp)"))),
    };
    // Per-rank programs are opaque to the e-graph: a `send` has no result to extract, and
    // collectives must stay in program order on every rank.
    if g.nodes().any(|(_, n)| n.op.is_communication()) {
        let mut stats = PassStats::default();
        stats.counters.insert("skipped-communication", 1);
        return Ok(stats);
    }
    let rules = load_rules(options)?;
    let start = Instant::now();
    let saturated = saturate(g, &rules, limits).map_err(failed)?;
    let before = cost::graph_cost(g);
    let mut stats = PassStats::default();
    let ns = |us: f64| if us.is_finite() { (us * 1000.0).round() as usize } else { usize::MAX };
    let greedy = extract_greedy(g, &saturated);
    let extracted = match extraction {
        Extraction::Greedy => greedy,
        Extraction::Ilp { time_limit } => {
            let ilp = extract_ilp(g, &saturated, time_limit);
            let greedy_cost = greedy.as_ref().map_or(f64::INFINITY, cost::graph_cost);
            let ilp_cost = ilp.graph.as_ref().map_or(f64::INFINITY, cost::graph_cost);
            stats.counters.insert("egraph.greedy-cost-ns", ns(greedy_cost));
            stats.counters.insert("egraph.ilp-cost-ns", ns(ilp_cost));
            stats.counters.insert(intern(format!("egraph.ilp.{}", ilp.report.outcome.name())), 1);
            stats.counters.insert("egraph.ilp-variables", ilp.report.variables);
            stats.counters.insert("egraph.ilp-constraints", ilp.report.constraints);
            if ilp_cost <= greedy_cost {
                ilp.graph
            } else {
                stats.counters.insert("egraph.ilp-used-greedy", 1);
                greedy
            }
        }
    };
    let report = &saturated.report;
    let total_fired: usize = report.fired.values().sum();
    for (name, &n) in &report.fired {
        stats.counters.insert(intern(format!("rule.{name}")), n);
    }
    let mut set = |name: &'static str, n: usize| {
        stats.counters.insert(name, n);
    };
    set("egraph.rules-fired", total_fired);
    set("egraph.iterations", report.iterations);
    set("egraph.enodes", report.enodes);
    set("egraph.eclasses", report.eclasses);
    set(intern(format!("egraph.stop.{}", report.stop)), 1);
    set("egraph.cost-before-ns", ns(before));
    let after = extracted.as_ref().map(cost::graph_cost);
    match (extracted, after) {
        (Some(new), Some(after)) if after < before => {
            set("egraph.cost-after-ns", ns(after));
            set("egraph.time-us", start.elapsed().as_micros() as usize);
            *g = new;
            stats.rewrites = total_fired.max(1);
        }
        _ => {
            set("egraph.cost-after-ns", ns(before));
            set("egraph.kept-original", 1);
            set("egraph.time-us", start.elapsed().as_micros() as usize);
        }
    }
    Ok(stats)
}
