//! Reading the text form back at scale (plain `cargo bench` harness, no extra dependency): a
//! constant of N elements as a nested list (`dense<[...]>`) and as hex data (`dense<"0x...">`,
//! what the printer writes above `HEX_DENSE_MIN_ELEMENTS`), for N and 10 N, to show that both
//! readers are linear (10x the elements in at most ~12x the time).
//!
//! Run: `cargo bench -p tessera-ir --bench parse`. Numbers go to BENCHMARKS.md.

use std::time::Duration;
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::mlir::{parse_graph, print_graph};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::bench::median;

/// A graph returning one f32 constant of `n` distinct elements.
fn constant_graph(n: usize) -> Graph {
    let mut g = Graph::new("big");
    let values = (0..n).map(|i| (i as f64) * 0.25 - 1000.0).collect();
    let c = g.add(Op::Constant(Tensor::from_f64(DType::F32, vec![n], values)), &[]).expect("constant");
    g.set_outputs(vec![c]);
    g
}

/// The same graph's text with the constant as a flat decimal list (the pre-hex printed form).
fn list_text(n: usize) -> String {
    let small = print_graph(&constant_graph(2));
    let list: Vec<String> = (0..n).map(|i| format!("{:?}", (i as f32) * 0.25 - 1000.0)).collect();
    small
        .replace("dense<[-1000.0, -999.75]>", &format!("dense<[{}]>", list.join(", ")))
        .replace("tensor<2xf32>", &format!("tensor<{n}xf32>"))
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    println!("{:>10} {:>12} {:>12} {:>12}", "elements", "list (s)", "hex (s)", "text (MB)");
    let mut rows = Vec::new();
    for n in [200_000, 2_000_000] {
        let list = list_text(n);
        let hex = print_graph(&constant_graph(n));
        assert!(hex.contains("dense<\"0x"), "the printer should write hex data for {n} elements");
        let t_list = median(3, || {
            parse_graph(&list).expect("list parses");
        });
        let t_hex = median(3, || {
            parse_graph(&hex).expect("hex parses");
        });
        println!("{n:>10} {:>12.3} {:>12.3} {:>12.1}", seconds(t_list), seconds(t_hex), list.len() as f64 / 1e6);
        rows.push((t_list, t_hex));
    }
    let ratio = |a: Duration, b: Duration| seconds(b) / seconds(a);
    println!(
        "10x elements: list {:.1}x the time, hex {:.1}x the time",
        ratio(rows[0].0, rows[1].0),
        ratio(rows[0].1, rows[1].1)
    );
}
