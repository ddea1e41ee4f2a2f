//! Seeded inputs for evaluating a graph in tests: every input gets uniform values from its own
//! stream ([`SplitMix64::for_name`] of the seed and the input's name), so adding an input does
//! not change the values of the others, and two graphs with the same input names (a graph and
//! its optimized form) get the same feeds.

use crate::graph::Graph;
use crate::random::{uniform_tensor, SplitMix64};
use crate::tensor::Tensor;

/// One tensor per input of `g`, by name and in input order: uniform values (floats in
/// `[-1, 1)`, see [`uniform_tensor`]) from the input's own stream of `seed`; symbolic dimensions
/// take the extent `symbolic`.
pub fn seeded_inputs(g: &Graph, seed: u64, symbolic: usize) -> Vec<(String, Tensor)> {
    g.inputs()
        .iter()
        .map(|&v| {
            let value = g.value(v);
            let shape = value.ty.dims.iter().map(|d| d.as_static().map_or(symbolic, |n| n as usize)).collect();
            let mut rng = SplitMix64::for_name(seed, &value.name);
            (value.name.clone(), uniform_tensor(&mut rng, value.ty.dtype, shape))
        })
        .collect()
}

/// An `f32` tensor of `shape` with the given `values` (rounded to f32), for hand-written feeds
/// and expected outputs.
pub fn f32_tensor(shape: &[usize], values: &[f64]) -> Tensor {
    Tensor::from_f64(crate::dtype::DType::F32, shape.to_vec(), values.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::graph::InputRole;
    use crate::types::{Dim, TensorType};

    fn two_inputs(first: &str) -> Graph {
        let mut g = Graph::new("g");
        let batch = Dim::sym("batch");
        g.add_input(first, TensorType::new(DType::F32, vec![batch, Dim::Static(3)]), InputRole::Activation);
        g.add_input("w", TensorType::new(DType::F32, vec![Dim::Static(3)]), InputRole::Parameter);
        g
    }

    #[test]
    fn inputs_follow_their_names_and_bind_symbolic_dimensions() {
        let feeds = seeded_inputs(&two_inputs("x"), 7, 2);
        let names: Vec<&str> = feeds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x", "w"]);
        assert_eq!(feeds[0].1.shape, [2, 3]);
        assert_eq!(feeds[1].1.shape, [3]);
        let w = uniform_tensor(&mut SplitMix64::for_name(7, "w"), DType::F32, vec![3]);
        assert_eq!(feeds[1].1, w);
        // Renaming another input leaves `w`'s values alone; another seed changes them.
        assert_eq!(seeded_inputs(&two_inputs("y"), 7, 2)[1].1, w);
        assert_ne!(seeded_inputs(&two_inputs("x"), 8, 2)[1].1, w);
    }
}
