//! The `egraph` pass on real model graphs at reduced size: BERT (zoo and ONNX-export forms),
//! GPT-2 in the ONNX-export form with separate Q/K/V, and ResNet. The optimized graph must
//! compute what the original computes (reference interpreter, seeded inputs), and the rules
//! that make each model cheaper must fire.

use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::inputs::model_inputs;
use tessera_passes::pass::PassStats;
use tessera_passes::pipeline::{run_pipeline, Pipeline, RunConfig};

fn model(spec: &str) -> Graph {
    tessera_frontend::load::load_model(std::path::Path::new(spec)).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// Seeded model-like inputs (valid ids, positive variances, weights scaled by fan-in; see
/// `model_inputs` for why unscaled weights would make any two f32 forms disagree).
fn feeds(g: &Graph, seed: u64) -> Vec<(String, Tensor)> {
    assert!(g.inputs().iter().all(|&v| g.value(v).ty.static_shape().is_some()), "static models");
    model_inputs(g, seed, 0)
}

fn optimize(g: &Graph, pipeline: &str) -> (Graph, PassStats) {
    let mut out = g.clone();
    let pipeline = Pipeline::parse(pipeline).unwrap_or_else(|e| panic!("{e}"));
    let report = run_pipeline(&mut out, &pipeline, &mut RunConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let stats = report.passes.into_iter().next().map(|p| p.stats).expect("one pass");
    (out, stats)
}

/// The outputs of `a` and `b` on the same seeded inputs agree to `tolerance`, relative to the
/// largest magnitude of each output (the bench's measure, and the 1e-5 for f32).
fn assert_same_outputs(spec: &str, a: &Graph, b: &Graph, tolerance: f64) {
    for seed in [1, 2] {
        let inputs = feeds(a, seed);
        let x = tessera_runtime::interpreter::run(a, &inputs).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let y = tessera_runtime::interpreter::run(b, &inputs).unwrap_or_else(|e| panic!("{spec} optimized: {e}"));
        assert_eq!(x.len(), y.len());
        for ((name_x, tx), (name_y, ty)) in x.iter().zip(&y) {
            assert_eq!(name_x, name_y, "{spec}: output names are kept");
            assert_eq!(tx.shape, ty.shape, "{spec}: {name_x}");
            let (p, q) = (tx.to_f64_vec(), ty.to_f64_vec());
            let scale = p.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
            let worst = p.iter().zip(&q).fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
            assert!(worst <= tolerance * scale, "{spec}: {name_x}: difference {worst:e} of {scale:e}");
        }
    }
}

fn fired(stats: &PassStats, rule: &str) -> usize {
    stats.counters.get(format!("rule.{rule}").as_str()).copied().unwrap_or(0)
}

#[test]
fn bert_gpt2_and_resnet_keep_their_outputs_and_get_cheaper() {
    let cases: [(&str, &[&str]); 4] = [
        ("bert:layers=2,hidden=32,heads=4,ffn=64,vocab=16,seq=8,dtype=f32", &["matmul-merge-rhs", "matmul-scalar-lhs"]),
        ("bert:layers=2,hidden=32,heads=4,ffn=64,vocab=16,seq=8,dtype=f32,form=onnx", &["matmul-merge-rhs"]),
        ("gpt:layers=2,hidden=32,heads=4,vocab=16,seq=8,dtype=f32,qkv=separate,form=onnx", &["matmul-merge-rhs"]),
        ("resnet:blocks=1-1-1-1,width=4,image=32,classes=10", &["conv-scale-fold"]),
    ];
    for (i, (spec, rules)) in cases.into_iter().enumerate() {
        let original = model(spec);
        // ILP extraction on two of the models only: in debug builds it takes its whole limit.
        let pipelines: &[&str] = if i % 2 == 0 {
            &["egraph{iters=5,time-ms=600000}", "egraph{iters=5,time-ms=600000,extract=ilp,ilp-time-ms=1000}"]
        } else {
            &["egraph{iters=5,time-ms=600000}"]
        };
        for &pipeline in pipelines {
            let (optimized, stats) = optimize(&original, pipeline);
            let (before, after) = (stats.counters["egraph.cost-before-ns"], stats.counters["egraph.cost-after-ns"]);
            assert!(after < before, "{spec} {pipeline}: cost {before} -> {after}; {stats:?}");
            for rule in rules {
                assert!(fired(&stats, rule) > 0, "{spec} {pipeline}: {rule} did not fire; {stats:?}");
            }
            assert_same_outputs(spec, &original, &optimized, 1e-5);
        }
    }
}

/// The rewrites are exact, not merely close: in f64 the optimized graph agrees with the original
/// to rounding (1e-12), at a depth where f32 rounding alone would reach 1e-5 with unscaled
/// weights. A wrong rule, applier or extraction shows here as a difference of order one.
#[test]
fn optimized_models_agree_in_f64_to_rounding() {
    for spec in [
        "bert:layers=6,hidden=32,heads=4,ffn=64,vocab=16,seq=8,dtype=f64",
        "gpt:layers=6,hidden=32,heads=4,vocab=16,seq=8,dtype=f64",
        "gpt:layers=2,hidden=32,heads=4,vocab=16,seq=8,dtype=f64,qkv=separate,form=onnx",
    ] {
        let original = model(spec);
        let (optimized, stats) = optimize(&original, "egraph{iters=5,time-ms=600000}");
        let (before, after) = (stats.counters["egraph.cost-before-ns"], stats.counters["egraph.cost-after-ns"]);
        assert!(after < before, "{spec}: the e-graph changed nothing to check; {stats:?}");
        assert_same_outputs(spec, &original, &optimized, 1e-12);
    }
}

/// The MIP proves its optimum or a gap of at most 1% within its 10 s (issue 20) on a small GPT,
/// whose e-graph has the structure that made the bound weak (residual sums in a dozen orders,
/// reshape pairs that read each other): with Tensat's program alone CBC stopped at its limit
/// with a gap of 82% on it. The MIP's graph is also checked. (The small BERT of the test above
/// still ends at its limit with a gap of about 5%.)
#[test]
fn the_mip_proves_a_gap_of_at_most_one_percent() {
    for spec in ["gpt:layers=2,hidden=32,heads=4,vocab=16,seq=8,dtype=f32"] {
        let original = model(spec);
        let (optimized, stats) = optimize(&original, "egraph{iters=5,time-ms=600000,extract=ilp,ilp-time-ms=10000}");
        assert!(!stats.counters.contains_key("egraph.ilp.failed"), "{spec}: {stats:?}");
        let gap_ppm = stats.counters["egraph.ilp-gap-ppm"];
        assert!(gap_ppm <= 10_000, "{spec}: gap {:.2}%; {stats:?}", gap_ppm as f64 / 1e4);
        // The guard keeps the cheapest method; the MIP's result is no costlier than any.
        let ilp = stats.counters["egraph.cost.ilp-ns"];
        for method in ["greedy-extraction", "local-search"] {
            assert!(ilp <= stats.counters[format!("egraph.cost.{method}-ns").as_str()], "{spec}: {stats:?}");
        }
        assert_same_outputs(spec, &original, &optimized, 1e-5);
    }
}

/// `tessera bench egraph --measure` on a small GPT, BERT and ResNet: the guarded result is no
/// costlier than any method's, and the compiled CPU artifacts before and after compute the same
/// outputs to 1e-5 relative (f32). Weight-only values are priced as computed once (a CPU
/// artifact's bind steps), so all three get cheaper, the small BERT by its merged QKV weight.
#[test]
fn bench_measures_the_compiled_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let specs = [
        ("gpt:layers=1,hidden=32,heads=4,vocab=16,seq=8,dtype=f32,qkv=separate", true),
        ("bert:layers=4,hidden=32,heads=4,ffn=64,vocab=16,seq=8,dtype=f32", true),
        ("resnet:blocks=1-1-1-1,width=4,image=32,classes=10", true),
    ];
    let mut args = vec!["bench", "egraph"];
    args.extend(specs.iter().map(|(spec, _)| *spec));
    args.extend(["--measure", "--repeat", "2", "--rounds", "1", "--baseline-time-s", "20", "--ilp-time-ms", "2000"]);
    let out = crate::support::tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (spec, gets_cheaper) in specs {
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("| `{spec}`")))
            .unwrap_or_else(|| panic!("{}", out.stdout));
        check_bench_row(row, gets_cheaper);
    }
}

/// `tessera bench egraph` saturates under iteration and node limits only (no wall-time limit
/// unless `--time-ms` is given), so two runs build the same e-graph whatever the load: every
/// phase ends on its iteration limit or saturates, and both runs report the same phases, rules
/// fired and starved, and the same size of the MIP.
#[test]
fn bench_saturates_the_same_e_graph_on_every_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = "bert:layers=4,hidden=32,heads=4,ffn=64,vocab=16,seq=8,dtype=f32";
    let args = ["bench", "egraph", spec, "--iters", "3", "--baseline-time-s", "1", "--ilp-time-ms", "500"];
    let runs: Vec<(String, String)> = (0..2)
        .map(|_| {
            let out = crate::support::tessera(dir.path(), &args);
            assert_eq!(out.code, 0, "{}", out.stderr);
            let row = out.stdout.lines().find(|l| l.starts_with(&format!("| `{spec}`"))).unwrap_or_else(|| {
                panic!("{}", out.stdout);
            });
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // | model | nodes | cost | greedy | local | MIP | e-graph | rewriting | guarded | saturation |
            let variables = cells[6].rsplit(", ").next().unwrap_or("").to_string();
            let saturation = cells[10].split("; saturation ").next().unwrap_or("").to_string();
            (variables, saturation)
        })
        .collect();
    let (variables, saturation) = &runs[0];
    assert!(variables.ends_with(" variables)"), "{variables}");
    assert!(!saturation.contains("time-limit"), "{saturation}");
    assert_eq!(
        saturation.matches("iteration-limit").count() + saturation.matches("saturated").count(),
        4,
        "{saturation}"
    );
    assert_eq!(&runs[1], &runs[0]);
}

fn check_bench_row(row: &str, gets_cheaper: bool) {
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | model | nodes | cost | greedy | local | MIP | e-graph | rewriting | guarded | saturation | measured |
    // A method that produced no graph prints "none".
    let percent = |cell: &str| -> f64 {
        if cell.starts_with("none") {
            return f64::INFINITY;
        }
        let value = cell.trim_start_matches("**").split('%').next().unwrap_or("");
        value.parse().unwrap_or_else(|_| panic!("no percentage in '{cell}'"))
    };
    let guarded = percent(cells[9]);
    for (i, cell) in cells.iter().enumerate().take(9).skip(4) {
        assert!(guarded <= percent(cell) + 1e-9, "column {i}: {guarded} vs {cell}; {row}");
    }
    assert!(guarded <= 0.0, "{row}");
    assert!(guarded < 0.0 || !gets_cheaper, "{row}");
    // Whether the e-graph holds greedy rewriting's result is reported (it depends on how far
    // saturation got in its time limit).
    assert!(cells[8].contains("e-graph"), "{row}");
    assert!(cells[10].contains("starved:"), "{row}");
    let difference: f64 = cells[11]
        .rsplit("max relative difference ")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no difference in '{}'", cells[11]));
    assert!(difference <= 1e-5, "{row}");
}
