//! The `fuse` pass at scale (plain `cargo bench` harness, no extra dependency): a residual stack
//! of N ops and of 10 N ops (matmuls, broadcast biases, elementwise chains, softmaxes and
//! residual adds, the shape of a transformer's layers), to show that fusion is linear in the
//! graph (10x the ops in at most ~12x the time).
//!
//! Run: `cargo bench -p tessera-passes --bench fuse --profile dev`. Numbers go to BENCHMARKS.md.

use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;
use tessera_ir::mlir::parse_verified;
use tessera_passes::fuse::{conservative_can_compile, fuse, groups, FusionConfig};

/// Ops per block of [`residual_stack`].
const OPS_PER_BLOCK: usize = 9;

/// `blocks` residual blocks over a `[16, 32]` activation: `x + softmax(gelu(x @ w + b) * x)`,
/// with an f16 round trip (two casts), so each block has one library call and one fusible chain.
fn residual_stack(blocks: usize) -> Graph {
    let t = "tensor<16x32xf32>";
    let mut params = vec![format!("%x: {t}")];
    let mut body = String::new();
    let mut cur = "%x".to_string();
    for i in 0..blocks {
        params.push(format!("%w{i}: tensor<32x32xf32> {{tsr.param}}, %b{i}: tensor<32xf32> {{tsr.param}}"));
        body += &format!(
            "  %h{i} = \"tsr.matmul\"({cur}, %w{i}) : ({t}, tensor<32x32xf32>) -> {t}\n\
             \x20 %bb{i} = \"tsr.broadcast\"(%b{i}) : (tensor<32xf32>) -> {t}\n\
             \x20 %a{i} = \"tsr.add\"(%h{i}, %bb{i}) : ({t}, {t}) -> {t}\n\
             \x20 %g{i} = \"tsr.gelu\"(%a{i}) : ({t}) -> {t}\n\
             \x20 %m{i} = \"tsr.mul\"(%g{i}, {cur}) : ({t}, {t}) -> {t}\n\
             \x20 %s{i} = \"tsr.softmax\"(%m{i}) {{axis = -1 : i64}} : ({t}) -> {t}\n\
             \x20 %c{i} = \"tsr.cast\"(%s{i}) : ({t}) -> tensor<16x32xf16>\n\
             \x20 %d{i} = \"tsr.cast\"(%c{i}) : (tensor<16x32xf16>) -> {t}\n\
             \x20 %r{i} = \"tsr.add\"(%d{i}, {cur}) : ({t}, {t}) -> {t}\n"
        );
        cur = format!("%r{i}");
    }
    let text = format!("func.func @stack({}) -> ({t}) {{\n{body}  return {cur} : {t}\n}}\n", params.join(", "));
    parse_verified(&text).expect("the benchmark graph parses")
}

fn main() {
    println!("{:>8} {:>10} {:>8}", "ops", "fuse (s)", "groups");
    let mut times = Vec::new();
    for blocks in [200, 2_000] {
        let graph = residual_stack(blocks);
        let mut runs: Vec<(Duration, usize)> = (0..3)
            .map(|_| {
                let mut g = graph.clone();
                let config = FusionConfig { max_ops: 64, can_compile: &conservative_can_compile };
                let start = Instant::now();
                fuse(&mut g, &config).expect("fuse");
                (start.elapsed(), groups(&g).len())
            })
            .collect();
        runs.sort();
        let (median, n_groups) = runs[1];
        println!("{:>8} {:>10.3} {:>8}", blocks * OPS_PER_BLOCK, median.as_secs_f64(), n_groups);
        times.push(median);
    }
    println!("10x ops: {:.1}x the time", times[1].as_secs_f64() / times[0].as_secs_f64());
}
