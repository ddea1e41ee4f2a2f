//! The pass manager: every pipeline-text diagnostic, verification around passes (and which
//! pass gets the blame), hooks, and the per-pass report.

use tessera_ir::graph::{Graph, NodeId};
use tessera_ir::ops::elementwise::UnaryOp;
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, add_named, f32s, input};
use tessera_passes::pass::{PassError, PassOptions, PassStats};
use tessera_passes::pipeline::{run_pipeline, PassInvocation, Pipeline, RunConfig};
use tessera_passes::registry::PassInfo;

const KNOWN: &str = "known passes: canonicalize, cse, dce, egraph, fold-if, fuse, shard, verify";

#[test]
fn bad_pipelines_have_located_messages() {
    let cases: &[(&str, String)] = &[
        ("foo", format!("column 1: unknown pass 'foo'; {KNOWN}")),
        ("cse,fusion{iters=8,nodes=10000}", format!("column 5: unknown pass 'fusion'; {KNOWN}")),
        ("cse,,dce", "column 5: expected a pass name, found ','".into()),
        ("cse,", "column 5: expected a pass name, found end of pipeline".into()),
        (",cse", "column 1: expected a pass name, found ','".into()),
        ("cse dce", "column 5: expected ',' or the end of the pipeline, found 'd'".into()),
        ("cse}", "column 4: expected ',', '{' or the end of the pipeline, found '}'".into()),
        ("cße", "column 2: expected ',', '{' or the end of the pipeline, found 'ß'".into()),
        ("cse{} dce", "column 7: expected ',' or the end of the pipeline, found 'd'".into()),
        ("cse{iters=3}", "column 5: pass 'cse' has no option 'iters'; it takes no options".into()),
        (
            "canonicalize{iters=3}",
            "column 14: pass 'canonicalize' has no option 'iters'; its options are: fold-limit, max-iterations".into(),
        ),
        (
            "canonicalize{max-iterations=ten}",
            "column 29: option 'max-iterations' of pass 'canonicalize' must be an unsigned integer, got 'ten'".into(),
        ),
        (
            "canonicalize{max-iterations=-1}",
            "column 29: option 'max-iterations' of pass 'canonicalize' must be an unsigned integer, got '-1'".into(),
        ),
        (
            "canonicalize{max-iterations=2,max-iterations=3}",
            "column 31: option 'max-iterations' of pass 'canonicalize' is given twice".into(),
        ),
        ("canonicalize{max-iterations}", "column 28: expected '=' after the option name, found '}'".into()),
        ("canonicalize{=3}", "column 14: expected an option name, found '='".into()),
        ("canonicalize{max-iterations=}", "column 29: expected an option value, found '}'".into()),
        ("canonicalize{max-iterations=3", "column 13: '{' is never closed".into()),
        ("canonicalize{fold-limit=3 ;}", "column 27: expected ',' or '}', found ';'".into()),
        ("builtin.module(cse)", "column 15: nested pipelines are not supported: a tessera module is one graph".into()),
    ];
    for (text, expected) in cases {
        match Pipeline::parse(text) {
            Ok(p) => panic!("'{text}' parsed as '{p}'"),
            Err(e) => assert_eq!(&e.to_string(), expected, "pipeline '{text}'"),
        }
    }
}

#[test]
fn good_pipelines_parse() {
    let cases = [
        ("verify,canonicalize,cse,dce", "verify,canonicalize,cse,dce"),
        ("  cse  ,  dce  ", "cse,dce"),
        ("canonicalize{max-iterations=2 fold-limit=0}", "canonicalize{fold-limit=0,max-iterations=2}"),
        ("canonicalize{ fold-limit = 7 , max-iterations=2 }", "canonicalize{fold-limit=7,max-iterations=2}"),
        ("cse{}", "cse"),
        ("", ""),
    ];
    for (text, canonical) in cases {
        let p = Pipeline::parse(text).unwrap_or_else(|e| panic!("'{text}': {e}"));
        assert_eq!(p.to_string(), canonical);
        assert_eq!(Pipeline::parse(canonical).expect("canonical text parses"), p);
    }
}

fn small_graph() -> Graph {
    let mut g = Graph::new("g");
    let x = input(&mut g, "x", f32s(&[2, 3]));
    let dead = add(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    add(&mut g, Op::Unary(UnaryOp::Neg), &[dead]);
    let t = add_named(&mut g, "t", Op::Transpose { perm: vec![1, 0] }, &[x]);
    let y = add_named(&mut g, "y", Op::Unary(UnaryOp::Tanh), &[t]);
    g.set_outputs(vec![y]);
    g
}

#[test]
fn the_hook_sees_each_pass_and_the_report_counts_nodes() {
    let mut g = small_graph();
    let pipeline = Pipeline::parse("verify,dce,cse").expect("parses");
    let mut seen = Vec::new();
    let mut hook = |name: &str, g: &Graph| seen.push((name.to_string(), g.num_nodes()));
    let mut config = RunConfig { after_pass: Some(&mut hook), ..RunConfig::default() };
    let report = run_pipeline(&mut g, &pipeline, &mut config).expect("runs");
    assert_eq!(seen, [("verify".to_string(), 4), ("dce".to_string(), 2), ("cse".to_string(), 2)]);
    let counts: Vec<_> = report.passes.iter().map(|p| (p.name, p.nodes_before, p.nodes_after)).collect();
    assert_eq!(counts, [("verify", 4, 4), ("dce", 4, 2), ("cse", 2, 2)]);
    let table = report.timing_table();
    assert!(table.contains("  Total Execution Time: "), "{table}");
    for row in ["4 -> 4         0  verify\n", "4 -> 2         2  dce\n", "(verifier)\n", "Total\n"] {
        assert!(table.contains(row), "no '{row}' in\n{table}");
    }
}

/// A deliberately wrong pass: makes the first node (the transpose, once canonicalize has
/// removed the dead nodes) produce a type other than its declared one.
fn break_types(g: &mut Graph, _: &PassOptions) -> Result<PassStats, PassError> {
    g.node_mut(NodeId(0)).op = Op::Transpose { perm: vec![0, 1] };
    Ok(PassStats::default())
}

static BREAK_TYPES: PassInfo =
    PassInfo { name: "break-types", description: "test only", options: &[], run: break_types };

#[test]
fn the_pass_that_breaks_the_ir_is_named() {
    let mut g = small_graph();
    let mut pipeline = Pipeline::parse("canonicalize").expect("parses");
    pipeline.passes.push(PassInvocation { pass: &BREAK_TYPES, options: PassOptions::default() });
    let mut calls = 0;
    let mut hook = |_: &str, _: &Graph| calls += 1;
    let mut config = RunConfig { after_pass: Some(&mut hook), ..RunConfig::default() };
    let err = run_pipeline(&mut g, &pipeline, &mut config).expect_err("the IR is broken");
    assert_eq!(
        err.to_string(),
        "pass 'break-types' produced invalid IR: %t = tsr.transpose: result 0 is declared \
         tensor<3x2xf32>, but the op produces tensor<2x3xf32>"
    );
    assert!(matches!(err, PassError::BrokeIr { pass: "break-types", .. }), "{err:?}");
    // The hook ran after canonicalize only.
    assert_eq!(calls, 1);
}

#[test]
fn an_invalid_input_is_reported_before_any_pass_runs() {
    let mut g = Graph::new("bad");
    let x = input(&mut g, "x", f32s(&[2]));
    g.add_node_unchecked(Op::Unary(UnaryOp::Exp), vec![x], vec![("y".into(), f32s(&[3]))]);
    let pipeline = Pipeline::parse("dce").expect("parses");
    let err = run_pipeline(&mut g, &pipeline, &mut RunConfig::default()).expect_err("invalid input");
    assert_eq!(
        err.to_string(),
        "the input graph does not verify: %y = tsr.exp: result 0 is declared tensor<3xf32>, \
         but the op produces tensor<2xf32>"
    );
    // Without verification between passes, the verify pass is what reports it.
    let pipeline = Pipeline::parse("verify").expect("parses");
    let mut config = RunConfig { verify_each: false, ..RunConfig::default() };
    let err = run_pipeline(&mut g, &pipeline, &mut config).expect_err("invalid input");
    assert!(err.to_string().starts_with("verify: %y = tsr.exp: result 0 is declared"), "{err}");
}

#[test]
fn the_default_pipeline_runs_end_to_end() {
    let mut g = small_graph();
    let report = crate::support::run(&mut g, "verify,canonicalize,cse,dce");
    assert_eq!(crate::support::ops(&g), ["transpose", "tanh"]);
    assert_eq!(report.passes.len(), 4);
    assert_eq!(report.passes[1].stats.counters["dead-nodes"], 2);
}

#[test]
fn string_options_hold_key_value_lists() {
    let p = Pipeline::parse("cse, shard{mesh=dp=2,tp=4, pp=2},dce").expect("parses");
    assert_eq!(p.to_string(), "cse,shard{mesh=dp=2,tp=4,pp=2},dce");
    // The list ends at an entry whose key is an option of the pass.
    let err = Pipeline::parse("shard{mesh=dp=2,mesh=tp=2}").expect_err("twice");
    assert_eq!(err.to_string(), "column 17: option 'mesh' of pass 'shard' is given twice");
}
