//! The PTX path: every kernel of the CPU tests compiles for sm_80 and sm_90, and NVIDIA's
//! assembler accepts every emitted module. ptxas and libdevice come from the PyPI wheel
//! `nvidia-cuda-nvcc-cu12` that `scripts/fetch-ptxas.sh` unpacks into `.cache/cuda-nvcc`.

#[path = "fused_graphs.rs"]
mod fused_graphs;

use fused_graphs::{attention, gelu_bias, masked_softmax, residual_norms};
use std::path::PathBuf;
use tessera_codegen::{compile_ptx, GpuArch, KernelSource};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, f32s, input, ty};

fn ptxas() -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/cuda-nvcc/bin/ptxas"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-ptxas.sh (downloads the pinned nvidia-cuda-nvcc-cu12 wheel)",
        path.display()
    );
    path
}

/// Every unary op, an integer chain, reductions, argmax, a cast and a pass-through output.
fn op_zoo() -> Vec<Graph> {
    let mut graphs = Vec::new();
    let mut g = Graph::new("unary");
    let x = input(&mut g, "x", f32s(&[3, 5]));
    let outs = UnaryOp::ALL
        .iter()
        .filter(|u| **u != UnaryOp::Not && !u.is_bitwise())
        .map(|&u| add(&mut g, Op::Unary(u), &[x]))
        .collect();
    g.set_outputs(outs);
    graphs.push(g);
    let mut g = Graph::new("integers");
    let a = input(&mut g, "a", ty(DType::I32, &[4, 6]));
    let b = input(&mut g, "b", ty(DType::I32, &[4, 6]));
    let q = add(&mut g, Op::Binary(BinaryOp::Div), &[a, b]);
    let c = add(&mut g, Op::Compare(tessera_ir::ops::elementwise::CompareOp::Lt), &[q, a]);
    let s = add(&mut g, Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false }, &[q]);
    let m = add(&mut g, Op::ArgMax { axis: 0, keepdims: true }, &[a]);
    let f = add(&mut g, Op::Cast { to: DType::BF16 }, &[q]);
    g.set_outputs(vec![c, s, m, f, a]);
    graphs.push(g);
    let mut g = Graph::new("conv_pool");
    let x = input(&mut g, "x", f32s(&[1, 4, 8, 8]));
    let w = input(&mut g, "w", f32s(&[4, 2, 3, 3]));
    let window = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
    let y = add(&mut g, Op::Conv2d { window: window.clone(), groups: 2 }, &[x, w]);
    let p = add(&mut g, Op::Pool2d { kind: PoolKind::Avg, kernel: [2, 2], window }, &[y]);
    g.set_outputs(vec![p]);
    graphs.push(g);
    graphs
}

#[test]
fn every_kernel_assembles_for_sm80_and_sm90() {
    let ptxas = ptxas();
    let mut graphs =
        vec![gelu_bias(3, 4, 5), masked_softmax(2, 7), residual_norms(3, 16), attention(8, 4), attention(40, 4)];
    graphs.extend(op_zoo());
    let kernels: Vec<KernelSource> =
        graphs.into_iter().enumerate().map(|(i, graph)| KernelSource { symbol: format!("k{i}"), graph }).collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    for arch in [GpuArch::Sm80, GpuArch::Sm90] {
        let modules = compile_ptx(&kernels, arch).unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        assert_eq!(modules.len(), kernels.len());
        for m in &modules {
            assert!(m.ptx.contains(&format!(".target {}", arch.name())), "{}: target line", m.symbol);
            assert!(!m.ptx.contains(".extern .func"), "{}: unresolved functions (libdevice not linked)", m.symbol);
            for launch in &m.launches {
                assert!(
                    m.ptx.contains(&format!(".entry {}(", launch.entry)),
                    "{} has entry {}",
                    m.symbol,
                    launch.entry
                );
                assert!(u64::from(launch.grid[0]) * u64::from(launch.block[0]) >= launch.threads);
            }
            let path = dir.path().join(format!("{}_{}.ptx", m.symbol, arch.name()));
            std::fs::write(&path, &m.ptx).expect("write ptx");
            let out = std::process::Command::new(&ptxas)
                .arg(format!("-arch={}", arch.name()))
                .arg(&path)
                .arg("-o")
                .arg(path.with_extension("cubin"))
                .output()
                .expect("run ptxas");
            assert!(
                out.status.success(),
                "ptxas rejected {} for {}: {}",
                m.symbol,
                arch.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn launch_plans_follow_the_schedule() {
    let modules = compile_ptx(&[KernelSource { symbol: "norms".into(), graph: residual_norms(3, 16) }], GpuArch::Sm90)
        .expect("compile");
    let m = &modules[0];
    // x + res is an output (one thread per element), the norms one thread per row.
    let threads: Vec<u64> = m.launches.iter().map(|l| l.threads).collect();
    assert_eq!(threads, vec![48, 3, 3]);
    assert!(m.temporaries.is_empty());
    let softmax = compile_ptx(&[KernelSource { symbol: "s".into(), graph: masked_softmax(2, 7) }], GpuArch::Sm80)
        .expect("compile");
    assert_eq!(softmax[0].launches.iter().map(|l| l.threads).collect::<Vec<_>>(), vec![14]);
}

mod random {
    use super::ptxas;
    use proptest::prelude::*;
    use tessera_codegen::{compile_ptx, supports, GpuArch, KernelSource};
    use tessera_ir::testing::{arb_graph_with, ArbGraphConfig};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random graphs of every supported op family lower to PTX that ptxas accepts.
        #[test]
        fn random_graphs_assemble(g in arb_graph_with(ArbGraphConfig { max_steps: 10, symbolic_dims: false })) {
            prop_assume!(supports(&g).is_ok());
            let modules = compile_ptx(&[KernelSource { symbol: "r".into(), graph: g }], GpuArch::Sm90)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("r.ptx");
            std::fs::write(&path, &modules[0].ptx).expect("write ptx");
            let out = std::process::Command::new(ptxas()).args(["-arch=sm_90"]).arg(&path).arg("-o").arg(path.with_extension("cubin")).output().expect("run ptxas");
            prop_assert!(out.status.success(), "ptxas: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
