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

/// Seeded inputs that a trained model could see, for comparing a model with its optimized or
/// compiled form: [`seeded_inputs`] with integer inputs (token, type and position ids) reduced
/// to 0 or 1, valid for every embedding table, batch-norm variances (`*.var`) made positive,
/// and every floating parameter of rank 2 or more divided by the square root of its fan-in
/// (the element count over the output extent: the first axis of a rank-4 convolution weight,
/// the last axis otherwise), as weight initialization does. Why the scaling: with weights
/// uniform in `[-1, 1)` the activations of a deep transformer grow by `√fan-in` per matmul,
/// attention scores reach the thousands and softmax flips between near-ties, so rounding
/// differences of `1e-7` become differences of `1e-1` in the output; two correct forms of the
/// graph then disagree, and so does either with its own f64 evaluation.
pub fn model_inputs(g: &Graph, seed: u64, symbolic: usize) -> Vec<(String, Tensor)> {
    seeded_inputs(g, seed, symbolic)
        .into_iter()
        .zip(g.inputs())
        .map(|((name, t), &v)| {
            let dtype = t.dtype;
            let values = t.to_f64_vec();
            let is_param = g.input_role(v) == Some(crate::graph::InputRole::Parameter);
            let values: Vec<f64> = if !dtype.is_float() && dtype != crate::dtype::DType::Bool {
                values.iter().map(|x| x.rem_euclid(2.0).floor()).collect()
            } else if dtype.is_float() && name.ends_with(".var") {
                values.iter().map(|x| x.abs() + 0.5).collect()
            } else if dtype.is_float() && is_param && t.shape.len() >= 2 {
                let out_extent = if t.shape.len() == 4 { t.shape[0] } else { t.shape[t.shape.len() - 1] };
                let fan_in = (t.shape.iter().product::<usize>() / out_extent.max(1)).max(1);
                let scale = 1.0 / (fan_in as f64).sqrt();
                values.iter().map(|x| x * scale).collect()
            } else {
                return (name, t);
            };
            (name, Tensor::from_f64(dtype, t.shape.clone(), values))
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
    fn model_inputs_scale_weights_by_fan_in_and_keep_ids_valid() {
        let mut g = Graph::new("g");
        g.add_input("ids", TensorType::new(DType::I64, vec![Dim::Static(64)]), InputRole::Activation);
        g.add_input("w", TensorType::new(DType::F32, vec![Dim::Static(256), Dim::Static(4)]), InputRole::Parameter);
        g.add_input("conv", TensorType::of_static(DType::F32, &[4, 16, 2, 2]), InputRole::Parameter);
        g.add_input("bn.var", TensorType::new(DType::F32, vec![Dim::Static(8)]), InputRole::Parameter);
        g.add_input("x", TensorType::new(DType::F32, vec![Dim::Static(8), Dim::Static(8)]), InputRole::Activation);
        let plain = seeded_inputs(&g, 3, 1);
        let model = model_inputs(&g, 3, 1);
        let ids = model[0].1.to_f64_vec();
        assert!(ids.iter().all(|&i| i == 0.0 || i == 1.0), "{ids:?}");
        assert!(ids.contains(&0.0) && ids.contains(&1.0), "{ids:?}");
        // [256, 4]: fan-in 256, so 1/16 of the plain value; [4, 16, 2, 2]: fan-in 64, 1/8.
        for (index, scale) in [(1, 16.0), (2, 8.0)] {
            for (p, m) in plain[index].1.to_f64_vec().iter().zip(model[index].1.to_f64_vec()) {
                assert!((p / scale - m).abs() < 1e-6, "{}: {p} / {scale} vs {m}", model[index].0);
            }
        }
        assert!(model[3].1.to_f64_vec().iter().all(|&v| v >= 0.5), "variances are positive");
        assert_eq!(model[4].1, plain[4].1, "activations keep their values");
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
