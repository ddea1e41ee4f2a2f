//! Helpers shared by the pass tests (graphs are built with `tessera_ir::testing::build`): running
//! a pipeline, and a differential check that a pass kept every output bit for bit on seeded random inputs.

use std::collections::HashMap;
use tessera_ir::graph::Graph;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::testing::inputs::seeded_inputs;
use tessera_passes::pipeline::{run_pipeline, Pipeline, PipelineReport, RunConfig};

/// Runs `pipeline` with verification after every pass.
pub fn run(g: &mut Graph, pipeline: &str) -> PipelineReport {
    let pipeline = Pipeline::parse(pipeline).unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    run_pipeline(g, &pipeline, &mut RunConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The op mnemonics in program order.
pub fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes().map(|(_, n)| n.op.mnemonic()).collect()
}

/// The names of the graph outputs.
pub fn output_names(g: &Graph) -> Vec<String> {
    g.outputs().iter().map(|&v| g.value(v).name.clone()).collect()
}

/// Seeded inputs for every graph input, symbolic dimensions bound to 2. Floats start with the values that break unsound
/// float rewrites (signed zeros, NaN, infinities), then uniform values in [-1, 1).
pub fn random_inputs(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let specials = [-0.0, 0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    // Symbolic dimensions (the examples' `batch`) are 2.
    seeded_inputs(g, seed, 2)
        .into_iter()
        .map(|(name, mut t)| {
            match &mut t.data {
                Buffer::Float(xs) => xs.iter_mut().zip(specials).for_each(|(x, s)| *x = s),
                Buffer::F32(xs) => {
                    std::sync::Arc::make_mut(xs).iter_mut().zip(specials).for_each(|(x, s)| *x = s as f32)
                }
                Buffer::F16(_) | Buffer::BF16(_) | Buffer::Int(_) => {}
            }
            // 2-byte floats: rebuilt through f64, which rounds the specials to the dtype.
            if matches!(t.data, Buffer::F16(_) | Buffer::BF16(_)) {
                let mut values = t.to_f64_vec();
                values.iter_mut().zip(specials).for_each(|(x, s)| *x = s);
                t = Tensor::from_f64(t.dtype, t.shape.clone(), values);
            }
            (name, t)
        })
        .collect()
}

/// Evaluates `g` with the reference interpreter on `inputs` by name.
pub fn evaluate(g: &Graph, inputs: &HashMap<String, Tensor>) -> Vec<Tensor> {
    let mut feeds: Vec<(String, Tensor)> = inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    feeds.sort_by(|a, b| a.0.cmp(&b.0));
    let outputs = tessera_runtime::interpreter::run(g, &feeds).unwrap_or_else(|e| panic!("interpreter: {e}"));
    outputs.into_iter().map(|(_, t)| t).collect()
}

/// Runs `pipeline` on a copy of `g` and checks that the result verifies and computes
/// bit-identical outputs on seeded inputs. Returns the optimized graph.
pub fn check_same_outputs(g: &Graph, pipeline: &str) -> Graph {
    let mut optimized = g.clone();
    run(&mut optimized, pipeline);
    tessera_ir::verify::verify(&optimized).expect("optimized graph verifies");
    for seed in [1, 2] {
        let inputs = random_inputs(g, seed);
        let before = evaluate(g, &inputs);
        let after = evaluate(&optimized, &inputs);
        assert_eq!(before.len(), after.len());
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(
                tessera_passes::cse::same_bits(b, a),
                "output {i} differs after '{pipeline}':\nbefore {:?}\nafter  {:?}",
                b.data,
                a.data
            );
        }
    }
    optimized
}
