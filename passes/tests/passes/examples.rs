//! The repository's example models through the default pipeline and `tessera info`'s
//! statistics: still valid, same outputs bit for bit, and the same numbers the CLI prints.

use crate::support::check_same_outputs;
use std::collections::HashMap;
use std::path::Path;
use tessera_ir::graph::Graph;
use tessera_passes::stats::GraphStats;

fn example(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tessera_ir::mlir::parse_verified(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn examples_survive_the_default_pipeline() {
    for name in ["mlp.mlir", "cnn.mlir", "transformer_block.mlir"] {
        let g = example(name);
        let after = check_same_outputs(&g, "verify,canonicalize,cse,dce");
        let names = |g: &Graph| g.outputs().iter().map(|&v| g.value(v).name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&g), "{name}");
    }
}

#[test]
fn mlp_example_statistics() {
    let stats = GraphStats::compute(&example("mlp.mlir"), &[("batch".to_string(), 4)].into()).expect("bound");
    // 2*4*64*32 + 2*4*10*64 for the matmuls, 4*64 + 4*64 for add and gelu, 4*10 for the add.
    assert_eq!(stats.total.flops, 16_384 + 5_120 + 256 + 256 + 40);
    assert_eq!(stats.parameters.elements, 32 * 64 + 64 + 64 * 10 + 10);
    let err = GraphStats::compute(&example("mlp.mlir"), &HashMap::new()).expect_err("batch unbound");
    assert_eq!(err.to_string(), "unbound symbolic dimension(s): batch; give each a size, e.g. batch=8");
}
