//! The `fuse` pass at scale (plain `cargo bench` harness, no extra dependency): a residual stack
//! of N ops and of 10 N ops (matmuls, broadcast biases, elementwise chains, softmaxes and
//! residual adds, the shape of a transformer's layers), to show that fusion is linear in the
//! graph (10x the ops in at most ~12x the time).
//!
//! Run: `cargo bench -p tessera-passes --bench fuse --profile dev`. Numbers go to BENCHMARKS.md.

use std::time::{Duration, Instant};
use tessera_ir::testing::build::residual_stack;
use tessera_passes::fuse::{conservative_can_compile, fuse, groups, FusionConfig};

/// Ops per block of [`residual_stack`].
const OPS_PER_BLOCK: usize = 9;

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
