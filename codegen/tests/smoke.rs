//! A quick end-to-end check of the CPU path.

mod harness;

use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

#[test]
fn gelu_of_affine() {
    let mut g = Graph::new("gelu_affine");
    let x = g.add_input("x", TensorType::of_static(DType::F32, &[4, 8]), InputRole::Activation);
    let w = g.add_input("w", TensorType::of_static(DType::F32, &[4, 8]), InputRole::Parameter);
    let b = g.add_input("b", TensorType::of_static(DType::F32, &[8]), InputRole::Parameter);
    let xw = g.add(Op::Binary(BinaryOp::Mul), &[x, w]).unwrap();
    let bb = g.add(Op::Broadcast { shape: vec![Dim::Static(4), Dim::Static(8)] }, &[b]).unwrap();
    let s = g.add(Op::Binary(BinaryOp::Add), &[xw, bb]).unwrap();
    let y = g.add(Op::Unary(UnaryOp::Gelu), &[s]).unwrap();
    let z = g.add(Op::Softmax { axis: 1 }, &[y]).unwrap();
    g.set_outputs(vec![y, z]);
    harness::check_all(&[g], 1);
}

/// Zero-element tensors of rank > 1 as kernel arguments, and one value returned twice.
#[test]
fn empty_multi_dimensional_outputs() {
    let text = r#"func.func @mlp(%x0: tensor<4x1x1xi32>) -> (tensor<0x1x0xi32>, tensor<0x1x0xi32>) {
  %0 = "tsr.slice"(%x0) {ends = array<i64: 1, 2, 1>, starts = array<i64: 2, -2, -1>, steps = array<i64: 1, 2, -1>} : (tensor<4x1x1xi32>) -> tensor<0x1x0xi32>
  return %0, %0 : tensor<0x1x0xi32>, tensor<0x1x0xi32>
}"#;
    let g = tessera_ir::mlir::parse::parse_verified(text).unwrap();
    let t = tessera_codegen::cpu::cpu_module_text(&[tessera_codegen::KernelSource {
        symbol: "k0".into(),
        graph: g.clone(),
    }])
    .unwrap();
    std::fs::write("/tmp/case.mlir", &t).unwrap();
    harness::check_all(&[g], 1);
}

/// The vectorizable tanh approximation stays within a few ulp of the exact value, relative to
/// the result, over the whole range (tails, tiny values, and the clamp) and keeps NaN.
#[test]
fn tanh_approximation_is_within_a_few_ulp() {
    let n = 20001;
    let xs: Vec<f64> = (0..n)
        .map(|i| -10.0 + 20.0 * i as f64 / (n - 1) as f64)
        .chain([1e-5, -3e-4, 4e-4, 1e-30, f64::NAN, f64::INFINITY])
        .collect();
    let mut g = Graph::new("tanh");
    let x = g.add_input("x", TensorType::of_static(DType::F32, &[xs.len() as u64]), InputRole::Activation);
    let y = g.add(Op::Unary(UnaryOp::Tanh), &[x]).unwrap();
    g.set_outputs(vec![y]);
    let object =
        tessera_codegen::compile_cpu(&[tessera_codegen::KernelSource { symbol: "t".into(), graph: g.clone() }])
            .unwrap();
    let lib = harness::load(&object.shared_object);
    let input = tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![xs.len()], xs.clone());
    let got = harness::call(&lib, "t", &g, std::slice::from_ref(&input)).remove(0).to_f64_vec();
    let mut worst = 0.0f64;
    for (x, t) in input.to_f64_vec().iter().zip(&got) {
        let exact = x.tanh();
        if exact.is_nan() {
            assert!(t.is_nan(), "tanh({x}) gave {t}");
            continue;
        }
        let ulp = (exact as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
        worst = worst.max((t - exact).abs() / ulp as f64);
    }
    assert!(worst <= 4.0, "worst error {worst} ulp");
}

/// The emitted MLIR of one fused kernel, for the CPU and the GPU: `scale * scores + mask`
/// computed inline inside the softmax loops (never stored), one `gpu.func` per row on the GPU.
#[test]
fn emitted_mlir_of_a_masked_softmax() {
    let graph = tessera_kernels::builders::masked_softmax(1, 4, 0.5, DType::F32).unwrap();
    let cpu = tessera_codegen::emit::emit_kernel("softmax", &graph).unwrap();
    insta::assert_snapshot!("cpu", format!("{}{}", cpu.globals, cpu.function));
    let gpu = tessera_codegen::emit::emit_gpu_kernel("softmax", &graph).unwrap();
    insta::assert_snapshot!("gpu", format!("{}\n{:?}", gpu.module, gpu.launches));
}
