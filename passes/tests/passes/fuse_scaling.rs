//! `fuse` scales linearly with the graph (issue 17, finding 6: 5k / 10k / 20k ops took 0.8 / 2.8
//! / 10.6 s, quadratic): 10x the ops must not take anywhere near 100x the time.

use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;
use tessera_ir::testing::build::residual_stack;
use tessera_passes::fuse::{conservative_can_compile, fuse, groups, FusionConfig};

/// The fastest of `runs` fusions of `graph`, and the number of groups it made.
fn fastest_fuse(graph: &Graph, runs: usize) -> (Duration, usize) {
    let config = FusionConfig { max_ops: 64, can_compile: &conservative_can_compile };
    let timed = (0..runs).map(|_| {
        let mut g = graph.clone();
        let start = Instant::now();
        fuse(&mut g, &config).unwrap_or_else(|e| panic!("fuse: {e}"));
        (start.elapsed(), groups(&g).len())
    });
    timed.min().unwrap_or_else(|| panic!("no runs"))
}

#[test]
fn fuse_time_grows_linearly_with_the_ops() {
    let (small, large) = (residual_stack(100), residual_stack(1_000));
    let (small_time, small_groups) = fastest_fuse(&small, 3);
    let (large_time, large_groups) = fastest_fuse(&large, 2);
    // One fusible chain per block, whatever the size.
    assert_eq!((small_groups, large_groups), (100, 1_000));
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
    eprintln!("fuse: 900 ops {small_time:?}, 9000 ops {large_time:?}, {ratio:.1}x");
    // Linear is about 10x (BENCHMARKS.md measures 11.2x); the quadratic pass was about 100x.
    // The bound leaves room for a loaded shared machine, not for a quadratic pass.
    assert!(ratio < 30.0, "10x the ops took {ratio:.1}x the time ({small_time:?} -> {large_time:?})");
}
