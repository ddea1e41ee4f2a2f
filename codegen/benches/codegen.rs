//! Codegen benchmarks (plain `cargo bench` harness, no extra dependency): compile time per
//! kernel for the CPU and PTX paths, and the run time of compiled CPU kernels against the
//! reference interpreter on GPT-2-small shapes (width 768, 12 heads, 128 tokens).
//!
//! Run: `cargo bench -p tessera-codegen --bench codegen`. Numbers go to BENCHMARKS.md.

#[path = "../tests/fused_graphs.rs"]
mod fused_graphs;
#[path = "../tests/harness.rs"]
mod harness;

use fused_graphs::{attention, masked_softmax, residual_norms};
use tessera_codegen::{compile_cpu, compile_ptx, GpuArch, KernelSource};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::testing::bench::median;

fn kernels(graphs: &[Graph]) -> Vec<KernelSource> {
    graphs.iter().enumerate().map(|(i, g)| KernelSource { symbol: format!("k{i}"), graph: g.clone() }).collect()
}

fn main() {
    let gelu = tessera_kernels::builders::bias_gelu(128, 3072, DType::F32, true).expect("bias_gelu");
    let gpt2 = [gelu, residual_norms(128, 768), masked_softmax(12, 128), attention(128, 64)];
    println!("compile time (median of 5), one kernel per compile_cpu call:");
    for g in &gpt2 {
        let one = kernels(std::slice::from_ref(g));
        let t = median(5, || {
            compile_cpu(&one).expect("compile");
        });
        println!("  {:<16} {:>8.1} ms", g.name, t.as_secs_f64() * 1e3);
    }
    let batch: Vec<Graph> = (0..4).flat_map(|_| gpt2.iter().cloned()).collect();
    let all = kernels(&batch);
    let t = median(3, || {
        compile_cpu(&all).expect("compile");
    });
    println!(
        "  16 kernels in one .so: {:.1} ms ({:.1} ms per kernel)",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3 / 16.0
    );
    let t = median(3, || {
        compile_ptx(&all, GpuArch::Sm90).expect("compile");
    });
    println!(
        "  16 kernels to PTX (sm_90): {:.1} ms ({:.1} ms per kernel)",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e3 / 16.0
    );

    println!("run time on the CPU (median), compiled kernel vs reference interpreter:");
    let object = compile_cpu(&kernels(&gpt2)).expect("compile");
    let lib = harness::load(&object.shared_object);
    for (i, g) in gpt2.iter().enumerate() {
        let inputs = harness::random_inputs(g, 1);
        let symbol = format!("k{i}");
        let mut prepared = harness::Prepared::new(&lib, &symbol, g, &inputs);
        let compiled = median(11, || prepared.run());
        let interpreted = median(3, || {
            harness::reference(g, &inputs);
        });
        println!(
            "  {:<16} compiled {:>8.3} ms   interpreter {:>9.3} ms   speedup {:>6.1}x",
            g.name,
            compiled.as_secs_f64() * 1e3,
            interpreted.as_secs_f64() * 1e3,
            interpreted.as_secs_f64() / compiled.as_secs_f64()
        );
    }
}
