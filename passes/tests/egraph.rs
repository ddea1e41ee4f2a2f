//! Tests of the `egraph` pass: every built-in rule is sound on random instances (reference
//! interpreter, f64), rules put equal terms in one e-class, bad rule files are located errors,
//! and whole graphs keep their outputs while their estimated cost drops.

use egg::Language;
use proptest::prelude::*;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, f64s, input, param};
use tessera_ir::testing::inputs::seeded_inputs;
use tessera_ir::types::{Dim, TensorType};
use tessera_passes::egraph::dag::{Candidates, Choice};
use tessera_passes::egraph::ilp::IlpOutcome;
use tessera_passes::egraph::lang::{self, TsrNode};
use tessera_passes::egraph::rules::syntax::parse_rules;
use tessera_passes::egraph::rules::typecheck::instance_graph;
use tessera_passes::egraph::rules::{builtin, Rule};
use tessera_passes::egraph::{
    cost, extract, extract_greedy, greedy, saturate, ExtractConfig, Extraction, Limits, Method,
};
use tessera_passes::pass::PassStats;
use tessera_passes::pipeline::{run_pipeline, Pipeline, RunConfig};

/// Seeded values for every input of `g`, with symbolic dimensions bound to 2.
fn feeds(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    seeded_inputs(g, seed, 2)
}

fn evaluate(g: &Graph, seed: u64) -> Vec<Tensor> {
    let outs = tessera_runtime::interpreter::run(g, &feeds(g, seed)).unwrap_or_else(|e| panic!("interpreter: {e}"));
    outs.into_iter().map(|(_, t)| t).collect()
}

/// `|x - y| <= 1e-9 * max(1, |x|, |y|)`: relative, with an absolute floor where cancellation
/// (distributivity, associativity) leaves a result near zero. NaNs must agree.
fn close(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape != b.shape || a.dtype != b.dtype {
        return Err(format!("types differ: {:?} {:?} vs {:?} {:?}", a.dtype, a.shape, b.dtype, b.shape));
    }
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == &y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
        if !ok {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Evaluates both sides of `rule` on its `index`-th sample instance with seeded values.
fn check_rule(rule: &Rule, index: usize, seed: u64) -> Result<(), String> {
    let instances = rule.sample_instances();
    let inst = &instances[index % instances.len()];
    let g = instance_graph(rule, inst)?;
    let outs = evaluate(&g, seed);
    let k = rule.lhs.len();
    for i in 0..k {
        close(&outs[i], &outs[k + i]).map_err(|m| format!("rule {} on {inst:?}: {m}", rule.name))?;
    }
    Ok(())
}

fn rules() -> &'static [Rule] {
    builtin().unwrap_or_else(|e| panic!("built-in rules: {e}"))
}

#[test]
fn builtin_rules_load_and_are_documented() {
    let rules = rules();
    assert!(rules.len() >= 40, "only {} rules", rules.len());
    for r in rules {
        assert!(!r.doc.is_empty(), "rule {} has no identity comment", r.name);
    }
    let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rules.len(), "rule names are unique");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_builtin_rule_is_sound(index in 0usize..10_000, seed in any::<u64>()) {
        for rule in rules() {
            if let Err(m) = check_rule(rule, index, seed) {
                prop_assert!(false, "{}", m);
            }
        }
    }
}

/// A calibration table of one row, as `tessera bench kernels --target cpu` would write it.
fn one_row_cpu_table() -> tessera_passes::egraph::cost::KernelCosts {
    let text = r#"{"machine": {"cpu": "test", "cpus": 2, "threads": 1, "load_average": 0.0, "build": "release", "measured_at_unix_s": 0},
        "families": {"elementwise": [{"shape": "small", "work": 1000, "us": 2}]}}"#;
    let table = tessera_passes::egraph::calibration::Table::from_json("one-row.json", text).expect("a valid table");
    tessera_passes::egraph::cost::KernelCosts::Measured(std::sync::Arc::new(table))
}

/// Every rule through the e-graph, not only as written: the left side alone is loaded,
/// saturated with that one rule (its egg applier, attribute lifting and type re-check), and
/// every e-node of each output's class, emitted as a graph ([`lang::build_ranked`]), must
/// compute the left side's values (f64, seeded). A wrong applier (axis, permutation or shape
/// handling), a wrong union or a wrong emission shows as a difference of order one. Returns how
/// often the rule fired and how many nodes other than the left side's own were emitted.
fn check_rule_in_egraph(rule: &Rule, index: usize, seed: u64) -> Result<(usize, usize), String> {
    let instances = rule.sample_instances();
    let inst = &instances[index % instances.len()];
    let mut lhs_only = rule.clone();
    lhs_only.rhs.clear();
    let g = instance_graph(&lhs_only, inst)?;
    let expected = evaluate(&g, seed);
    // Priced by a measured CPU table, under which every rule may fire (`winograd` holds only
    // there); this check reads every e-node, not extraction's choice, so the prices do not matter.
    let limits = Limits {
        iters: 1,
        nodes: 10_000,
        time: std::time::Duration::from_secs(10),
        kernels: one_row_cpu_table(),
        ..Limits::default()
    };
    let s = saturate(&g, std::slice::from_ref(rule), limits)?;
    let fired = s.report.fired.get(&rule.name).copied().unwrap_or(0);
    let ranked = greedy::ranked(&s.egraph, &s.outputs);
    // The left side's own output nodes (egg keeps class ids, so a fresh load lines up).
    let fresh = lang::load(&g);
    let own: Vec<TsrNode> = fresh
        .outputs
        .iter()
        .flat_map(|&o| fresh.egraph[o].nodes.iter().map(|n| n.clone().map_children(|c| s.egraph.find(c))))
        .collect();
    let mut alternatives = 0;
    for (i, &root) in s.outputs.iter().enumerate() {
        for node in &s.egraph[root].nodes {
            let rank = |class: egg::Id| -> Vec<TsrNode> {
                let mut nodes = ranked.get(&class).cloned().unwrap_or_default();
                if class == root {
                    nodes.retain(|n| n != node);
                    nodes.insert(0, node.clone());
                }
                nodes
            };
            // `None`: the node cannot keep the output's name (it is an input, as `?x` on a
            // right side makes it), which the pass never emits either.
            let Some((built, used)) = lang::build_ranked(&g, &s.outputs, &rank) else { continue };
            if used.get(&root) != Some(node) {
                continue;
            }
            if !own.contains(node) {
                alternatives += 1;
            }
            let got = evaluate(&built, seed);
            close(&expected[i], &got[i])
                .map_err(|m| format!("rule {} on {inst:?}, e-node {node:?}: {m}", rule.name))?;
        }
    }
    Ok((fired, alternatives))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn every_builtin_rule_is_sound_through_the_egraph(index in 0usize..10_000, seed in any::<u64>()) {
        for rule in rules() {
            if let Err(m) = check_rule_in_egraph(rule, index, seed) {
                prop_assert!(false, "{}", m);
            }
        }
    }
}

/// Each rule's applier matches its own left side on some sample instance and adds a right side
/// that the pass could emit (checked numerically by [`check_rule_in_egraph`]); only rules whose
/// right side is a bare variable emit nothing new (the output would be that input).
#[test]
fn every_builtin_rule_fires_on_its_own_left_side() {
    for rule in rules() {
        let n = rule.sample_instances().len().min(8);
        let (mut fired, mut alternatives) = (0, 0);
        for index in 0..n {
            let (f, a) = check_rule_in_egraph(rule, index, index as u64).unwrap_or_else(|m| panic!("{m}"));
            fired += f;
            alternatives += a;
        }
        assert!(fired > 0, "rule {} never fired on its own left side ({n} instances)", rule.name);
        let identity = rule.rhs.iter().all(|t| matches!(t, tessera_passes::egraph::rules::Term::Var(_)));
        if !identity {
            assert!(alternatives > 0, "rule {}: no alternative to the left side was emitted", rule.name);
        }
    }
}

#[test]
fn a_wrong_rule_fails_the_numeric_check() {
    // Type-correct (so it loads) but false: subtraction does not commute.
    let wrong = parse_rules("test", "rule sub-comm: (sub ?a ?b) => (sub ?b ?a)\n").expect("loads");
    let failures = (0..8).filter(|&seed| check_rule(&wrong[0], seed as usize, seed).is_err()).count();
    assert!(failures > 0, "the wrong rule passed every check");
}

#[test]
fn a_wrong_rule_fails_the_check_through_the_egraph() {
    // The same false rule, applied by egg in the e-graph: the emitted alternative differs.
    let wrong = parse_rules("test", "rule sub-comm: (sub ?a ?b) => (sub ?b ?a)\n").expect("loads");
    let failures = (0..8).filter(|&seed| check_rule_in_egraph(&wrong[0], seed as usize, seed).is_err()).count();
    assert!(failures > 0, "the wrong rule passed every check through the e-graph");
}

#[test]
fn rules_put_equal_terms_in_one_class() {
    // Each case: a graph with two outputs that the rules must prove equal.
    type Build = fn(&mut Graph, ValueId, ValueId, ValueId) -> (ValueId, ValueId);
    let cases: Vec<(&str, Build)> = vec![
        ("distributivity", |g, a, b, c| {
            let s = add(g, Op::Binary(BinaryOp::Add), &[b, c]);
            let left = add(g, Op::Binary(BinaryOp::Mul), &[a, s]);
            let ab = add(g, Op::Binary(BinaryOp::Mul), &[b, a]);
            let ac = add(g, Op::Binary(BinaryOp::Mul), &[a, c]);
            (left, add(g, Op::Binary(BinaryOp::Add), &[ac, ab]))
        }),
        ("double transpose", |g, a, _, _| {
            let t = add(g, Op::Transpose { perm: vec![1, 0] }, &[a]);
            let tt = add(g, Op::Transpose { perm: vec![1, 0] }, &[t]);
            let n = add(g, Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Neg), &[tt]);
            let n2 = add(g, Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Neg), &[a]);
            (n, n2)
        }),
        ("matmul over concat", |g, a, b, c| {
            let bc = add(g, Op::Concat { axis: 1 }, &[b, c]);
            let m = add(g, Op::MatMul, &[a, bc]);
            let ab = add(g, Op::MatMul, &[a, b]);
            let ac = add(g, Op::MatMul, &[a, c]);
            (m, add(g, Op::Concat { axis: -1 }, &[ab, ac]))
        }),
    ];
    for (name, build) in cases {
        let mut g = Graph::new(name);
        let a = input(&mut g, "a", f64s(&[4, 4]));
        let b = input(&mut g, "b", f64s(&[4, 4]));
        let c = input(&mut g, "c", f64s(&[4, 4]));
        let (x, y) = build(&mut g, a, b, c);
        g.set_outputs(vec![x, y]);
        let s = saturate(&g, rules(), Limits::default()).expect("saturates");
        assert_eq!(s.egraph.find(s.outputs[0]), s.egraph.find(s.outputs[1]), "{name}: {:?}", s.report);
    }
}

#[test]
fn bad_rule_files_are_located_errors() {
    let cases = [
        ("rule r: (add ?a ?b) => (add ?b ?a", "1:34: expected ')' or an operand"),
        ("\n  rule r (add ?a ?b) => ?a", "2:10: expected ':' after the rule name"),
        ("rule r: (frob ?a) => ?a", "1:10: unknown op 'frob' in a rule"),
        ("rule r: (add ?a) => ?a", "1:10: 'add' takes 2 operand(s), got 1"),
        ("rule r: (add ?a ?b) => (add ?a ?c)", "1:24: variable ?c is not bound by the left side"),
        ("rule r: (concat 1 ?a ?b) => ?a", "1:10: axes in rules count from the end: write -2 for 'concat', not 1"),
        ("rule r: (add ?a ?b) => ?a if shiny(?a, ?b)", "1:30: unknown condition 'shiny'"),
        ("rule r: (add ?a ?b) => ?a $", "1:27: unexpected character '$'"),
        ("rule r: (add ?a ?b) => ?a\nrule r: (mul ?a ?b) => ?a", "2:6: rule 'r' is defined twice"),
        ("rule r: (matmul ?a ?b) => (matmul ?b ?a)", "1:1: rule 'r': the sides have different types"),
        ("rule r: (transpose [1 0] ?a) => ?a", "1:1: rule 'r': the sides have different types"),
        ("rule r: (matmul ?a ?b) => (concat -1 ?a ?b)", "1:1: rule 'r': the right side is ill-typed"),
        ("rule r: (add ?a ?b) & (mul ?a ?b) => ?a", "1:38: 2 left side(s) but 1 right side(s)"),
        ("rule r: (part 0 -1 ?a ?b ?c) => ?a", "1:10: 'part' may only appear on the right side"),
        ("rule r: (sub ?a ?b) => (add ?a ?b) extra", "1:36: expected 'if', 'limit', '&' or the end of the rule"),
        ("rule r: (add ?a ?b) => (add ?b ?a) limit 0", "1:42: expected a positive match limit"),
        ("rule r: (reshape ?x ?s) => (reshape ?s ?x)", "1:9: variable ?s is used both as a Shape and as a Tensor"),
        ("rule r: (reshape ?x (shape-of ?x)) => ?x", "1:22: 'shape-of' may only appear on the right side"),
        ("rule r: (neg ?x) => (neg (shape-of ?x))", "1:9: (shape-of X) can only be the target shape"),
        ("rule r: (add ?a ?b) => ?a if same-except(?a, ?b)", "1:48: expected ','"),
    ];
    for (text, expected) in cases {
        let err = parse_rules("bad.rules", text).expect_err(text);
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("bad.rules:{expected}")),
            "{text:?}\n  got: {message}\n  want: {expected}"
        );
    }
}

fn run_egraph(g: &mut Graph, pipeline: &str) -> PassStats {
    let pipeline = Pipeline::parse(pipeline).unwrap_or_else(|e| panic!("{e}"));
    let report = run_pipeline(g, &pipeline, &mut RunConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    report.passes.into_iter().next().map(|p| p.stats).expect("one pass ran")
}

fn assert_same_outputs(a: &Graph, b: &Graph) {
    let names = |g: &Graph| g.outputs().iter().map(|&v| g.value(v).name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "output names are kept");
    for seed in [1, 2, 3] {
        for (x, y) in evaluate(a, seed).iter().zip(&evaluate(b, seed)) {
            close(x, y).unwrap_or_else(|m| panic!("outputs differ: {m}"));
        }
    }
}

/// A GPT-style attention block with separate Q, K and V projections (f64, so the comparison
/// can be tight).
fn gpt_attention() -> Graph {
    let mut g = Graph::new("attention");
    let (s, d, h, hd) = (8u64, 64u64, 4u64, 16u64);
    let x = input(&mut g, "x", TensorType::new(DType::F64, vec![Dim::sym("batch"), Dim::Static(s), Dim::Static(d)]));
    let w = |g: &mut Graph, name: &str| param(g, name, f64s(&[d, d]));
    let (wq, wk, wv, wo) = (w(&mut g, "w_q"), w(&mut g, "w_k"), w(&mut g, "w_v"), w(&mut g, "w_o"));
    let heads = |g: &mut Graph, m: ValueId, perm: Vec<i64>| {
        let shape = vec![Dim::sym("batch"), Dim::Static(s), Dim::Static(h), Dim::Static(hd)];
        let r = add(g, Op::Reshape { shape }, &[m]);
        add(g, Op::Transpose { perm }, &[r])
    };
    let q = add(&mut g, Op::MatMul, &[x, wq]);
    let k = add(&mut g, Op::MatMul, &[x, wk]);
    let v = add(&mut g, Op::MatMul, &[x, wv]);
    let q = heads(&mut g, q, vec![0, 2, 1, 3]);
    let k = heads(&mut g, k, vec![0, 2, 3, 1]);
    let v = heads(&mut g, v, vec![0, 2, 1, 3]);
    let scores = add(&mut g, Op::MatMul, &[q, k]);
    let probs = add(&mut g, Op::Softmax { axis: -1 }, &[scores]);
    let ctx = add(&mut g, Op::MatMul, &[probs, v]);
    let ctx = add(&mut g, Op::Transpose { perm: vec![0, 2, 1, 3] }, &[ctx]);
    let shape = vec![Dim::sym("batch"), Dim::Static(s), Dim::Static(d)];
    let flat = add(&mut g, Op::Reshape { shape }, &[ctx]);
    let out = add(&mut g, Op::MatMul, &[flat, wo]);
    g.rename_value(out, "y");
    g.set_outputs(vec![out]);
    g
}

fn count(g: &Graph, mnemonic: &str) -> usize {
    g.nodes().filter(|(_, n)| n.op.mnemonic() == mnemonic).count()
}

#[test]
fn qkv_projections_merge_and_the_cost_drops() {
    let original = gpt_attention();
    let mut g = original.clone();
    let start = std::time::Instant::now();
    let stats = run_egraph(&mut g, "egraph");
    let elapsed = start.elapsed();
    let before = cost::graph_cost(&original);
    let after = cost::graph_cost(&g);
    eprintln!("gpt attention: cost {before:.3} us -> {after:.3} us in {elapsed:?}");
    assert!(after < before, "cost {before} -> {after}; {stats:?}");
    assert!(stats.counters.get("rule.matmul-merge-rhs").copied().unwrap_or(0) > 0, "{stats:?}");
    // Q, K and V are one matmul now: 3 projections + 2 attention + 1 output -> 4.
    assert_eq!(count(&g, "matmul"), 4, "{}", tessera_ir::mlir::print_graph(&g));
    assert_same_outputs(&original, &g);
}

/// `weights=step` prices what a CPU artifact runs on every call: the merged QKV's weight
/// concat is then a kernel per step. The optimized graph is never costlier than the input under
/// the pricing it was extracted with, and costs more under `step` than under `load` exactly by
/// the kernels it computes from weights.
#[test]
fn weights_priced_per_step_count_the_weight_kernels() {
    use tessera_passes::egraph::cost::Weights;
    let original = gpt_attention();
    let (mut folded, mut every_step) = (original.clone(), original.clone());
    run_egraph(&mut folded, "egraph");
    let stats = run_egraph(&mut every_step, "egraph{weights=step}");
    let (before, after) = (stats.counters["egraph.cost-before-ns"], stats.counters["egraph.cost-after-ns"]);
    assert!(after <= before, "{stats:?}");
    assert_eq!(after as f64, (cost::graph_cost_for(&every_step, Weights::EveryStep) * 1000.0).round());
    // The input computes nothing from weights alone: both pricings agree on it.
    assert_eq!(cost::graph_cost(&original), cost::graph_cost_for(&original, Weights::EveryStep));
    // The load-priced result concatenates the three weights; per step that costs a kernel.
    assert_eq!(count(&folded, "concat"), 1, "{}", tessera_ir::mlir::print_graph(&folded));
    assert!(cost::graph_cost_for(&folded, Weights::EveryStep) > cost::graph_cost(&folded));
    assert_same_outputs(&original, &every_step);
}

#[test]
fn the_transformer_block_keeps_its_outputs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/transformer_block.mlir");
    let text = std::fs::read_to_string(path).expect("example");
    let original = tessera_ir::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut g = original.clone();
    let start = std::time::Instant::now();
    let stats = run_egraph(&mut g, "egraph");
    let elapsed = start.elapsed();
    let before = stats.counters["egraph.cost-before-ns"];
    let after = stats.counters["egraph.cost-after-ns"];
    eprintln!("transformer_block: cost {before} ns -> {after} ns in {elapsed:?}; {stats:?}");
    assert!(after <= before);
    assert_same_outputs(&original, &g);
}

#[test]
fn user_rule_files_and_limits_are_reported() {
    let dir = std::env::temp_dir().join(format!("tessera-egraph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("mine.rules");
    std::fs::write(&file, "# a + b = b + a\nrule my-add-comm: (add ?a ?b) => (add ?b ?a)\n").expect("write");
    let mut g = gpt_attention();
    let stats = run_egraph(&mut g, &format!("egraph{{builtin=false,rules={},iters=1}}", file.display()));
    assert_eq!(stats.counters.get("egraph.stop.saturated"), Some(&1), "{stats:?}");
    std::fs::write(&file, "rule broken: (add ?a ?b => ?a\n").expect("write");
    let pipeline = Pipeline::parse(&format!("egraph{{rules={}}}", file.display())).expect("pipeline");
    let err = run_pipeline(&mut g, &pipeline, &mut RunConfig::default()).expect_err("bad file");
    assert!(err.to_string().contains("mine.rules:1:25: expected ')' or an operand"), "{err}");
    let mut g = gpt_attention();
    let stats = run_egraph(&mut g, "egraph{iters=1}");
    assert_eq!(stats.counters.get("egraph.stop.iteration-limit"), Some(&1), "{stats:?}");
    // One iteration per phase, each reported.
    for phase in ["algebraic", "layout", "fusion-enabling", "all"] {
        let key = format!("egraph.phase.{phase}.iterations");
        assert!(stats.counters.get(key.as_str()).is_some_and(|&n| n <= 1), "{key}: {stats:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gate_and_up_projections_merge() {
    // A SwiGLU MLP: silu(x·w_gate) * (x·w_up), then the down projection.
    let mut g = Graph::new("swiglu");
    let x = input(&mut g, "x", f64s(&[8, 32]));
    let w_gate = param(&mut g, "w_gate", f64s(&[32, 64]));
    let w_up = param(&mut g, "w_up", f64s(&[32, 64]));
    let w_down = param(&mut g, "w_down", f64s(&[64, 32]));
    let gate = add(&mut g, Op::MatMul, &[x, w_gate]);
    let gate = add(&mut g, Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Silu), &[gate]);
    let up = add(&mut g, Op::MatMul, &[x, w_up]);
    let h = add(&mut g, Op::Binary(BinaryOp::Mul), &[gate, up]);
    let y = add(&mut g, Op::MatMul, &[h, w_down]);
    g.set_outputs(vec![y]);
    let original = g.clone();
    let stats = run_egraph(&mut g, "egraph");
    assert!(stats.counters["egraph.cost-after-ns"] < stats.counters["egraph.cost-before-ns"], "{stats:?}");
    assert_eq!(count(&g, "matmul"), 2, "{}", tessera_ir::mlir::print_graph(&g));
    assert_same_outputs(&original, &g);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random graphs of every op family survive the pass: it verifies (the pipeline checks),
    /// keeps output names, and keeps values. Rewrites reassociate float math rounded to the
    /// graph's type, so values agree to 1e-3 relative here (3e-2 for 16-bit floats, whose
    /// 8- or 11-bit significands round every intermediate), and overflow may move between
    /// finite and not.
    #[test]
    fn random_graphs_keep_their_outputs(g in tessera_ir::testing::arb_graph_with(
        tessera_ir::testing::ArbGraphConfig { max_steps: 12, symbolic_dims: false },
    )) {
        let mut optimized = g.clone();
        let pipeline = Pipeline::parse("egraph{iters=3,time-ms=300}").expect("parses");
        let result = run_pipeline(&mut optimized, &pipeline, &mut RunConfig::default());
        prop_assert!(result.is_ok(), "{:?}", result.err());
        let names = |g: &Graph| g.outputs().iter().map(|&v| g.value(v).name.clone()).collect::<Vec<_>>();
        prop_assert_eq!(names(&g), names(&optimized));
        let feeds = feeds(&g, 7);
        // Graphs the oracle rejects on these inputs say nothing about the pass.
        if let Ok(before) = tessera_runtime::interpreter::run(&g, &feeds) {
            let after = tessera_runtime::interpreter::run(&optimized, &feeds);
            prop_assert!(after.is_ok(), "{:?}", after.err());
            for ((_, b), (_, a)) in before.iter().zip(&after.expect("checked")) {
                prop_assert_eq!(&b.shape, &a.shape);
                let tolerance = if b.dtype.size_bytes() == 2 && b.dtype.is_float() { 3e-2 } else { 1e-3 };
                for (x, y) in b.to_f64_vec().iter().zip(a.to_f64_vec()) {
                    let ok = x == &y
                        || (!x.is_finite() && !y.is_finite())
                        || (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1.0);
                    prop_assert!(ok, "{} vs {}", x, y);
                }
            }
        }
    }
}

/// The greedy ranking as first written: every pass re-prices every node of every class (its
/// set: the union of its operands' sets and itself, each class's own cost counted once), and
/// the final order re-prices them all again. [`greedy::ranked`] skips nodes whose operands'
/// sets did not change; it must rank exactly as this does.
fn ranked_by_repricing_everything(
    egraph: &lang::TsrEGraph,
    roots: &[egg::Id],
) -> std::collections::HashMap<egg::Id, Vec<TsrNode>> {
    use std::collections::{BTreeMap, HashMap};
    type Set = BTreeMap<egg::Id, f64>;
    let mut nodes: BTreeMap<egg::Id, Vec<(TsrNode, f64)>> = BTreeMap::new();
    let mut todo: Vec<egg::Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(class) = todo.pop() {
        if nodes.contains_key(&class) {
            continue;
        }
        let list: Vec<(TsrNode, f64)> = egraph[class]
            .iter()
            .map(|n| n.clone().map_children(|c| egraph.find(c)))
            .map(|n| {
                let own = cost::node_cost(egraph, &n);
                (n, own)
            })
            .filter(|(_, own)| own.is_finite())
            .collect();
        todo.extend(list.iter().flat_map(|(n, _)| n.children.iter().copied()));
        nodes.insert(class, list);
    }
    let price = |class: egg::Id, node: &TsrNode, own: f64, best: &HashMap<egg::Id, (f64, Set)>| {
        let mut set = Set::new();
        for child in &node.children {
            let (_, child_set) = best.get(child)?;
            if *child == class || child_set.contains_key(&class) {
                return None;
            }
            set.extend(child_set.iter().map(|(&c, &x)| (c, x)));
        }
        if own > 0.0 {
            set.insert(class, own);
        }
        Some((set.values().sum::<f64>(), set))
    };
    let mut best: HashMap<egg::Id, (f64, Set)> = HashMap::new();
    for _ in 0..nodes.len().max(1) {
        let mut changed = false;
        for (&class, list) in &nodes {
            for (node, own) in list {
                let Some((total, set)) = price(class, node, *own, &best) else { continue };
                if best.get(&class).is_none_or(|(old, _)| total < *old * (1.0 - 1e-9) - 1e-12) {
                    best.insert(class, (total, set));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    nodes
        .iter()
        .map(|(&class, list)| {
            let mut scored: Vec<(f64, TsrNode)> = list
                .iter()
                .filter_map(|(node, own)| price(class, node, *own, &best).map(|(total, _)| (total, node.clone())))
                .collect();
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
            (class, scored.into_iter().map(|(_, n)| n).collect())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Greedy extraction's ranking, which re-prices only nodes whose operands changed, ranks
    /// every class exactly as re-pricing everything each pass does, on saturated random graphs.
    #[test]
    fn greedy_ranking_matches_repricing_everything(g in tessera_ir::testing::arb_graph_with(
        tessera_ir::testing::ArbGraphConfig { max_steps: 12, symbolic_dims: false },
    )) {
        let limits = Limits { iters: 3, time: std::time::Duration::from_secs(60), ..Limits::default() };
        let s = saturate(&g, rules(), limits).expect("saturates");
        prop_assert_eq!(greedy::ranked(&s.egraph, &s.outputs), ranked_by_repricing_everything(&s.egraph, &s.outputs));
    }
}

/// `o1 = -(a·b)` and `o2 = a·b`: by tree cost `(-a)·b` is the cheaper term for `o1` (it negates
/// the small `a`), so greedy extraction computes a second matmul; by DAG cost negating the
/// shared `a·b` is cheaper. ILP extraction must find that, and both must keep the outputs.
#[test]
fn ilp_extraction_beats_greedy_where_sharing_matters() {
    let mut g = Graph::new("shared");
    let a = input(&mut g, "a", f64s(&[64, 4]));
    let b = input(&mut g, "b", f64s(&[4, 64]));
    let m = add(&mut g, Op::MatMul, &[a, b]);
    let n = add(&mut g, Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Neg), &[m]);
    g.set_outputs(vec![n, m]);
    let s = saturate(&g, rules(), Limits::default()).expect("saturates");
    let greedy = extract_greedy(&g, &s).expect("greedy graph");
    let config = ExtractConfig {
        extraction: Extraction::Ilp { time_limit: std::time::Duration::from_secs(10) },
        ..ExtractConfig::default()
    };
    let extracted = extract(&g, &s, &config, None);
    let report = extracted.ilp.as_ref().expect("ilp ran");
    assert_eq!(report.outcome, IlpOutcome::Optimal, "{:?}", report.outcome);
    assert_eq!(report.gap(), 0.0);
    let ilp_graph = extracted.graph;
    let (greedy_cost, ilp_cost) = (cost::graph_cost(&greedy), cost::graph_cost(&ilp_graph));
    assert!(ilp_cost < greedy_cost - 1.0, "ilp {ilp_cost} vs greedy {greedy_cost}");
    assert!((report.cost - ilp_cost).abs() < 1e-6, "objective {} vs graph {ilp_cost}", report.cost);
    assert!((extracted.costs[&Method::Ilp] - ilp_cost).abs() < 1e-6, "{:?}", extracted.costs);
    assert_eq!(count(&greedy, "matmul"), 2, "{}", tessera_ir::mlir::print_graph(&greedy));
    assert_eq!(count(&ilp_graph, "matmul"), 1, "{}", tessera_ir::mlir::print_graph(&ilp_graph));
    assert_same_outputs(&g, &greedy);
    assert_same_outputs(&g, &ilp_graph);
}

/// On graphs where greedy is already optimal the ILP agrees, through the pass, and the pass
/// reports the solver's outcome.
#[test]
fn ilp_extraction_through_the_pass() {
    let original = gpt_attention();
    let mut greedy = original.clone();
    let greedy_stats = run_egraph(&mut greedy, "egraph");
    let mut ilp = original.clone();
    let stats = run_egraph(&mut ilp, "egraph{extract=ilp,ilp-time-ms=5000}");
    assert_eq!(stats.counters.get("egraph.ilp.optimal"), Some(&1), "{stats:?}");
    assert!(stats.counters["egraph.cost-after-ns"] <= greedy_stats.counters["egraph.cost-after-ns"], "{stats:?}");
    assert_same_outputs(&original, &ilp);
    // A zero time limit stops the solver at once: the pass says so and keeps a valid graph.
    let mut limited = original.clone();
    let stats = run_egraph(&mut limited, "egraph{extract=ilp,ilp-time-ms=0}");
    let outcome = ["egraph.ilp.time-limit", "egraph.ilp.failed"].iter().any(|k| stats.counters.contains_key(k));
    assert!(outcome, "{stats:?}");
    assert_same_outputs(&original, &limited);
    // With the guard, greedy rewriting is one more candidate, and the winner is named.
    let mut guarded = original.clone();
    let stats = run_egraph(&mut guarded, "egraph{guard=true,guard-ms=30000}");
    let rewriting = stats.counters["egraph.cost.greedy-rewriting-ns"];
    assert!(stats.counters["egraph.cost-after-ns"] <= rewriting, "{stats:?}");
    assert_eq!(stats.counters.keys().filter(|k| k.starts_with("egraph.winner.")).count(), 1, "{stats:?}");
    assert_same_outputs(&original, &guarded);
}

/// The greedy rewriting baseline (no e-graph) merges the projections too, keeps the outputs,
/// and never ends above where it started.
#[test]
fn greedy_rewriting_baseline_merges_projections() {
    use tessera_passes::egraph::taso::{rewrite, RewriteLimits};
    let original = gpt_attention();
    let limits = RewriteLimits {
        steps: 50,
        time: std::time::Duration::from_secs(60),
        weights: Default::default(),
        kernels: Default::default(),
    };
    let (g, report) = rewrite(&original, rules(), limits).expect("rewrites");
    assert_eq!(report.stop, "no-improvement", "{report:?}");
    assert!(report.cost_after < report.cost_before, "{report:?}");
    assert!((cost::graph_cost(&g) - report.cost_after).abs() < 1e-9);
    assert!(report.applied.get("matmul-merge-rhs").copied().unwrap_or(0) >= 2, "{report:?}");
    assert_eq!(count(&g, "matmul"), 4, "{}", tessera_ir::mlir::print_graph(&g));
    assert_same_outputs(&original, &g);
    // Equality saturation finds every rewrite greedy rewriting made: its result is in the
    // e-graph, and extraction is at least as cheap.
    let s = saturate(&original, rules(), Limits::default()).expect("saturates");
    assert!(tessera_passes::egraph::holds(&s, &g), "{:?}", s.report);
    assert!(!tessera_passes::egraph::holds(&s, &gpt_attention_with_output_scaled()));
    let extracted = extract(&original, &s, &ExtractConfig::default(), None);
    assert!(extracted.cost <= report.cost_after, "{} vs {}", extracted.cost, report.cost_after);
}

/// The attention block with its output doubled: not equivalent, so never in its e-graph.
fn gpt_attention_with_output_scaled() -> Graph {
    let mut g = gpt_attention();
    let y = g.outputs()[0];
    let doubled = add(&mut g, Op::Binary(BinaryOp::Add), &[y, y]);
    g.set_outputs(vec![doubled]);
    g
}

#[test]
fn extraction_prices_against_the_h100_preset() {
    // The rates are the preset's datasheet numbers in microseconds, exactly.
    let rates = *cost::RATES;
    assert_eq!(rates, cost::KernelRates::of(&tessera_ir::hardware::DeviceSpec::h100_80g_sxm()));
    assert_eq!(
        (rates.overhead_us, rates.matmul_flops_per_us, rates.vector_flops_per_us, rates.bytes_per_us),
        (5.0, 989e6, 67e6, 3.35e6)
    );
    // A 4096³ matmul is compute-bound (139 µs of FLOPs against 120 µs moving f64s): overhead
    // plus FLOPs at the tensor-core peak.
    let (x, w, y) = (f64s(&[4096, 4096]), f64s(&[4096, 4096]), f64s(&[4096, 4096]));
    let expected = 5.0 + 2.0 * 4096f64.powi(3) / 989e6;
    assert!((cost::kernel_us(&Op::MatMul, &[&x, &w], &[&y]) - expected).abs() < 1e-9);
}

fn ilp_config(seconds: u64) -> ExtractConfig {
    ExtractConfig {
        extraction: Extraction::Ilp { time_limit: std::time::Duration::from_secs(seconds) },
        search_time: std::time::Duration::from_secs(seconds),
    }
}

/// The cheapest emittable choice by enumerating every combination (tiny instances only).
fn brute_force(cands: &Candidates) -> f64 {
    let sizes: Vec<usize> = cands.nodes.iter().map(|n| n.len().max(1)).collect();
    let total: f64 = sizes.iter().map(|&n| n as f64).product();
    assert!(total <= 2e6, "{total} combinations is too many to enumerate");
    let mut picks = vec![0usize; sizes.len()];
    let mut best = f64::INFINITY;
    loop {
        let choice: Choice =
            picks.iter().zip(&cands.nodes).map(|(&p, n)| if n.is_empty() { None } else { Some(p) }).collect();
        if let Some(c) = cands.dag_cost(&choice) {
            best = best.min(c);
        }
        // Next combination (odometer).
        let mut i = 0;
        loop {
            if i == picks.len() {
                return best;
            }
            picks[i] += 1;
            if picks[i] < sizes[i] {
                break;
            }
            picks[i] = 0;
            i += 1;
        }
    }
}

/// On small saturated e-graphs the MIP's optimum equals the brute-force optimum of the same
/// DAG cost, and it says so (optimal, gap 0).
#[test]
fn the_mip_finds_the_brute_force_optimum() {
    let mut shared = Graph::new("shared");
    let a = input(&mut shared, "a", f64s(&[64, 4]));
    let b = input(&mut shared, "b", f64s(&[4, 64]));
    let m = add(&mut shared, Op::MatMul, &[a, b]);
    let n = add(&mut shared, Op::Unary(tessera_ir::ops::elementwise::UnaryOp::Neg), &[m]);
    shared.set_outputs(vec![n, m]);
    let mut projections = Graph::new("projections");
    let x = input(&mut projections, "x", f64s(&[16, 32]));
    let wq = param(&mut projections, "w_q", f64s(&[32, 32]));
    let wk = param(&mut projections, "w_k", f64s(&[32, 32]));
    let q = add(&mut projections, Op::MatMul, &[x, wq]);
    let k = add(&mut projections, Op::MatMul, &[x, wk]);
    let s = add(&mut projections, Op::Binary(BinaryOp::Add), &[q, k]);
    projections.set_outputs(vec![s]);
    for g in [shared, projections] {
        let limits = Limits { iters: 2, ..Limits::default() };
        let s = saturate(&g, rules(), limits).expect("saturates");
        let cands = Candidates::new(&s.egraph, &s.outputs);
        let optimum = brute_force(&cands);
        let report = tessera_passes::egraph::ilp::extract(&cands, None, std::time::Duration::from_secs(10));
        assert_eq!(report.outcome, IlpOutcome::Optimal, "{}: {:?}", g.name, report.outcome);
        assert!((report.cost - optimum).abs() < 1e-9, "{}: MIP {} vs brute force {optimum}", g.name, report.cost);
        assert_eq!(report.gap(), 0.0);
        let extracted = extract(&g, &s, &ilp_config(10), None);
        assert!(extracted.cost <= optimum + 1e-9, "{}: {} vs {optimum}", g.name, extracted.cost);
        assert_same_outputs(&g, &extracted.graph);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// On random graphs the guarded extraction is never costlier than the input nor than greedy
    /// extraction, with or without the MIP, and the cost it reports is its graph's.
    #[test]
    fn extraction_never_exceeds_greedy_or_the_input(g in tessera_ir::testing::arb_graph_with(
        tessera_ir::testing::ArbGraphConfig { max_steps: 12, symbolic_dims: false },
    )) {
        let limits = Limits { iters: 3, time: std::time::Duration::from_millis(300), ..Limits::default() };
        let s = saturate(&g, rules(), limits).expect("saturates");
        let greedy = extract_greedy(&g, &s).map_or(f64::INFINITY, |e| cost::graph_cost(&e));
        for config in [ExtractConfig::default(), ilp_config(1)] {
            let extracted = extract(&g, &s, &config, None);
            let input = cost::graph_cost(&g);
            prop_assert!(extracted.cost <= input, "{} > input {}", extracted.cost, input);
            prop_assert!(extracted.cost <= greedy, "{} > greedy {}", extracted.cost, greedy);
            prop_assert_eq!(extracted.cost, cost::graph_cost(&extracted.graph));
            prop_assert!(extracted.costs.values().all(|&c| extracted.cost <= c));
        }
    }
}

/// The saturation report of the attention block, phase by phase: which rules each phase ran,
/// fired, banned and starved, and which extraction method won.
#[test]
fn the_schedule_report_of_the_attention_block() {
    let g = gpt_attention();
    let limits = Limits { iters: 8, nodes: 20_000, time: std::time::Duration::from_secs(60), ..Limits::default() };
    let s = saturate(&g, rules(), limits).expect("saturates");
    let mut text = String::new();
    for phase in &s.report.phases {
        let fired: Vec<String> = phase.fired.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        let banned: Vec<String> = phase.banned.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        text.push_str(&format!(
            "{}: {} rules, {} iterations, {} e-nodes, stop {}\n  fired: {}\n  banned: {}\n  starved: {}\n",
            phase.phase.name(),
            phase.rules,
            phase.iterations,
            phase.enodes,
            phase.stop,
            fired.join(", "),
            banned.join(", "),
            phase.starved.join(", "),
        ));
    }
    let extracted = extract(&g, &s, &ilp_config(10), None);
    text.push_str(&format!("winner: {}\n", extracted.winner.name()));
    for (method, c) in &extracted.costs {
        text.push_str(&format!("  {}: {c:.3} us\n", method.name()));
    }
    insta::assert_snapshot!(text);
}

/// `egraph{kernel-costs=FILE}` prices by the measured table: the pass's costs are the table's,
/// not the roofline's; a table that cannot be read is an error, not a silent roofline.
#[test]
fn a_calibration_table_prices_extraction() {
    use tessera_passes::egraph::cost::KernelCosts;
    // The file format as in the unit tests of `egraph::calibration`, with this test's own rows.
    let text = r#"{
        "machine": {"cpu": "test", "cpus": 2, "threads": 1, "load_average": 0.0, "build": "debug", "measured_at_unix_s": 0},
        "families": {
            "elementwise": [{"shape": "small", "work": 1000, "us": 2}, {"shape": "large", "work": 1000000, "us": 400}],
            "matmul": [{"shape": "small", "work": 1000, "us": 1}, {"shape": "large", "work": 100000000, "us": 2000}]
        }
    }"#;
    let path = std::env::temp_dir().join(format!("tessera-calibration-test-{}.json", std::process::id()));
    std::fs::write(&path, text).expect("write table");
    let measured = KernelCosts::measured(&path.display().to_string()).expect("table loads");
    let original = gpt_attention();
    let mut g = original.clone();
    let stats = run_egraph(&mut g, &format!("egraph{{kernel-costs={}}}", path.display()));
    let expected = cost::graph_cost_with(&original, cost::Weights::FoldedAtLoad, &measured);
    assert_eq!(stats.counters["egraph.cost-before-ns"], (expected * 1000.0).round() as usize);
    assert_ne!(expected, cost::graph_cost(&original));
    assert_eq!(
        stats.counters["egraph.cost-after-ns"],
        (cost::graph_cost_with(&g, cost::Weights::FoldedAtLoad, &measured) * 1000.0).round() as usize
    );
    assert_same_outputs(&original, &g);
    std::fs::remove_file(&path).ok();
    let pipeline = Pipeline::parse("egraph{kernel-costs=/nonexistent/table.json}").expect("parses");
    let error =
        run_pipeline(&mut original.clone(), &pipeline, &mut RunConfig::default()).expect_err("unreadable table");
    assert!(error.to_string().contains("cannot read calibration table"), "{error}");
}

/// A 3x3 same-padded convolution over a 16x16 image, its kernel a parameter (f64).
fn conv_3x3() -> Graph {
    let mut g = Graph::new("conv");
    let x = input(&mut g, "x", f64s(&[1, 16, 16, 16]));
    let w = param(&mut g, "w", f64s(&[16, 16, 3, 3]));
    let window = tessera_ir::ops::conv::Window { strides: [1, 1], pads: [1; 4], dilations: [1, 1] };
    let y = add(&mut g, Op::Conv2d { window, groups: 1 }, &[x, w]);
    g.set_outputs(vec![y]);
    g
}

/// Winograd is measured to pay on the CPU backend only: under the roofline (the default
/// pricing, and the only one for CUDA targets, where the transforms would be host library
/// calls between device GEMMs) `conv-winograd` never fires, whatever the convolution, and the
/// extracted graph keeps `conv2d`; under a CPU table the same graph gets the Winograd form.
#[test]
fn winograd_fires_only_under_a_measured_cpu_table() {
    let g = conv_3x3();
    let roofline = saturate(&g, rules(), Limits::default()).expect("saturates");
    assert_eq!(roofline.report.fired.get("conv-winograd"), None, "fired under the roofline");
    let mut extracted = g.clone();
    run_egraph(&mut extracted, "egraph");
    assert_eq!(["conv2d", "winograd_input"].map(|m| count(&extracted, m)), [1, 0]);
    let table = Limits { kernels: one_row_cpu_table(), ..Limits::default() };
    let measured = saturate(&g, rules(), table).expect("saturates");
    assert_eq!(measured.report.fired.get("conv-winograd"), Some(&1), "not fired under a CPU table");
}

/// Extraction takes the Winograd form of a convolution where the table prices it cheaper
/// (its GEMM does 2.25x fewer FLOPs, the transforms are cheap, the kernel transform runs at
/// bind) and keeps the direct convolution where the table prices the transforms dear; both
/// ways the outputs are the convolution's.
#[test]
fn winograd_is_extracted_only_where_the_table_prices_it_cheaper() {
    let table = |transform_us: f64| {
        format!(
            r#"{{
            "machine": {{"cpu": "test", "cpus": 2, "threads": 1, "load_average": 0.0, "build": "release", "measured_at_unix_s": 0}},
            "families": {{
                "elementwise": [{{"shape": "small", "work": 1000, "us": 2}}],
                "matmul": [{{"shape": "small", "work": 1000, "us": 1}}, {{"shape": "large", "work": 100000000, "us": 2000}}],
                "conv2d": [{{"shape": "small", "work": 1000, "us": 1}}, {{"shape": "large", "work": 100000000, "us": 2000}}],
                "winograd": [{{"shape": "small", "work": 1000, "us": {transform_us}}}, {{"shape": "large", "work": 1000000000, "us": {transform_us}}}]
            }}
        }}"#
        )
    };
    for (transform_us, winograd) in [(1.0, true), (1000.0, false)] {
        let path = std::env::temp_dir().join(format!("tessera-winograd-{}-{transform_us}.json", std::process::id()));
        std::fs::write(&path, table(transform_us)).expect("write table");
        let original = conv_3x3();
        let mut g = original.clone();
        run_egraph(&mut g, &format!("egraph{{kernel-costs={}}}", path.display()));
        std::fs::remove_file(&path).ok();
        let expected = if winograd { [0, 1, 1, 1, 1] } else { [1, 0, 0, 0, 0] };
        let found = ["conv2d", "winograd_input", "winograd_weight", "matmul", "winograd_output"].map(|m| count(&g, m));
        assert_eq!(found, expected, "transforms at {transform_us} us");
        assert_same_outputs(&original, &g);
    }
}
