//! Fused kernels as the fusion pass will form them (gelu(x*w+b), softmax(mask+scores),
//! layer_norm(x+res), a whole attention head), random well-typed graphs from the shared
//! generator, determinism of the shared object, and the typed errors of unsupported input.

#[path = "fused_graphs.rs"]
mod fused_graphs;
mod harness;

use proptest::prelude::*;
use tessera_codegen::{compile_cpu, supports, CodegenError, KernelSource, Unsupported};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::UnaryOp;
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, f32s, input, ty};
use tessera_ir::testing::{arb_graph_with, ArbGraphConfig};
use tessera_ir::types::{Dim, TensorType};

use fused_graphs::{attention, gelu_bias, masked_softmax, residual_norms};

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fused_chains_match_the_interpreter(rows in 1u64..6, k in 1u64..9, cols in 1u64..9, half in 1u64..4, seed in any::<u64>()) {
        let graphs = [
            gelu_bias(rows, k, cols),
            masked_softmax(rows, cols),
            residual_norms(rows, cols),
            attention(cols, 2 * half),
        ];
        harness::check_all(&graphs, seed);
    }

    /// Random graphs of every op family: the supported ones compile and match the interpreter.
    #[test]
    fn random_graphs_match_the_interpreter(g in arb_graph_with(ArbGraphConfig { max_steps: 10, symbolic_dims: false })) {
        prop_assume!(supports(&g).is_ok());
        harness::check_all(&[g], 7);
    }
}

#[test]
fn the_same_kernels_give_the_same_bytes() {
    let kernels = |graphs: Vec<Graph>| -> Vec<KernelSource> {
        graphs.into_iter().enumerate().map(|(i, graph)| KernelSource { symbol: format!("fused_{i}"), graph }).collect()
    };
    let a = compile_cpu(&kernels(vec![gelu_bias(3, 4, 5), attention(4, 4)])).expect("first compile");
    let b = compile_cpu(&kernels(vec![gelu_bias(3, 4, 5), attention(4, 4)])).expect("second compile");
    assert!(a.shared_object.starts_with(b"\x7fELF"), "an ELF file");
    assert!(a == b, "two compiles differ");
    let other = compile_cpu(&kernels(vec![gelu_bias(3, 4, 6), attention(4, 4)])).expect("third compile");
    assert!(a != other, "a different kernel gives different bytes");
}

/// The shared object imports nothing but libc and libm (malloc/free for temporaries, libm math).
#[test]
fn the_shared_object_needs_only_libc_and_libm() {
    let object = compile_cpu(&[
        KernelSource { symbol: "attention".into(), graph: attention(4, 4) },
        KernelSource { symbol: "norms".into(), graph: residual_norms(3, 8) },
        KernelSource { symbol: "gelu".into(), graph: gelu_bias(2, 3, 4) },
    ])
    .expect("compile");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("k.so");
    std::fs::write(&path, &object.shared_object).expect("write");
    let out = std::process::Command::new("nm").args(["-D", "--undefined-only"]).arg(&path).output().expect("run nm");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    // Strong imports (`U`); the C runtime's startup files add weak ones (`w`) that need nothing.
    let imports: Vec<&str> = listing
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["U", name] => Some(name),
            _ => None,
        })
        .collect();
    assert!(imports.iter().any(|s| s.starts_with("free@")), "temporaries are freed: {imports:?}");
    for symbol in &imports {
        assert!(symbol.contains("@GLIBC_"), "unexpected import {symbol} (all: {imports:?})");
    }
    let exports = std::process::Command::new("nm").args(["-D", "--defined-only"]).arg(&path).output().expect("nm");
    let exports = String::from_utf8_lossy(&exports.stdout).to_string();
    for name in ["attention", "norms", "gelu"] {
        assert!(exports.lines().any(|l| l.ends_with(&format!(" T {name}"))), "{name} exported: {exports}");
    }
    assert!(!exports.contains("__impl"), "implementations stay internal: {exports}");
    // The signature table the loader checks before mapping the object, in read-only data.
    let table = tessera_ir::artifact::KERNEL_SIGNATURES_SYMBOL;
    assert!(exports.lines().any(|l| l.ends_with(&format!(" R {table}"))), "{table} exported: {exports}");
}

#[test]
fn unsupported_input_gives_typed_errors_naming_the_cause() {
    let mut g = Graph::new("scatter");
    let data = input(&mut g, "data", f32s(&[4, 2]));
    let ids = input(&mut g, "ids", ty(DType::I64, &[1, 2]));
    let updates = input(&mut g, "updates", f32s(&[1, 2]));
    let y = add(&mut g, Op::Scatter { axis: 0, reduction: ScatterReduction::Add }, &[data, ids, updates]);
    g.set_outputs(vec![y]);
    match supports(&g) {
        Err(Unsupported::Op { op, .. }) => assert_eq!(op, "scatter"),
        other => panic!("expected an unsupported op, got {other:?}"),
    }
    let err = compile_cpu(&[KernelSource { symbol: "scatter".into(), graph: g }]).expect_err("unsupported");
    assert!(err.to_string().contains("tsr.scatter"), "{err}");

    let mut g = Graph::new("symbolic");
    let x = input(&mut g, "x", TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::Static(4)]));
    let y = add(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    g.set_outputs(vec![y]);
    assert!(matches!(supports(&g), Err(Unsupported::SymbolicShape { .. })));

    let mut g = Graph::new("fp8");
    let x = input(&mut g, "x", ty(DType::F8E4M3, &[4]));
    let y = add(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    g.set_outputs(vec![y]);
    assert!(matches!(supports(&g), Err(Unsupported::DType { dtype: DType::F8E4M3, .. })));

    let mut g = Graph::new("weights");
    let n = tessera_codegen::support::MAX_CONSTANT_ELEMENTS + 1;
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let w = add(&mut g, Op::Constant(tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![n], values)), &[]);
    let y = add(&mut g, Op::Unary(UnaryOp::Exp), &[w]);
    g.set_outputs(vec![y]);
    match supports(&g) {
        Err(Unsupported::Operands { reason, .. }) => assert!(reason.contains("pass it as a kernel input"), "{reason}"),
        other => panic!("expected a refused literal, got {other:?}"),
    }

    let ok = gelu_bias(1, 1, 1);
    let bad_symbol = compile_cpu(&[KernelSource { symbol: "not a symbol".into(), graph: ok.clone() }]);
    assert!(matches!(bad_symbol, Err(CodegenError::InvalidSymbol(_))));
    let twice = compile_cpu(&[
        KernelSource { symbol: "k".into(), graph: ok.clone() },
        KernelSource { symbol: "k".into(), graph: ok },
    ]);
    assert!(matches!(twice, Err(CodegenError::DuplicateSymbol(_))));
}

/// The kernel-graph builders of `tessera_kernels` compile and match the interpreter in every
/// float dtype codegen supports (f16/bf16 round after every op, as the reference does).
#[test]
fn builders_match_the_interpreter_in_every_float_dtype() {
    use tessera_kernels::builders::{attention_head, bias_gelu, masked_softmax, residual_norm};
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let graphs = [
            bias_gelu(3, 16, dtype, true).expect("bias_gelu"),
            bias_gelu(2, 8, dtype, false).expect("bias_gelu"),
            masked_softmax(2, 9, 0.125, dtype).expect("masked_softmax"),
            residual_norm(3, 16, 1e-5, false, dtype).expect("layer norm"),
            residual_norm(3, 16, 1e-6, true, dtype).expect("rms norm"),
            attention_head(2, 5, 4, dtype).expect("attention"),
        ];
        harness::check_all(&graphs, 11);
    }
}
