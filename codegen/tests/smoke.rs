//! A quick end-to-end check of the CPU path.

mod harness;

use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::testing::build::{add, broadcast, f32s, input, param};

#[test]
fn gelu_of_affine() {
    let mut g = Graph::new("gelu_affine");
    let x = input(&mut g, "x", f32s(&[4, 8]));
    let w = param(&mut g, "w", f32s(&[4, 8]));
    let b = param(&mut g, "b", f32s(&[8]));
    let xw = add(&mut g, Op::Binary(BinaryOp::Mul), &[x, w]);
    let bb = broadcast(&mut g, b, &[4, 8]);
    let s = add(&mut g, Op::Binary(BinaryOp::Add), &[xw, bb]);
    let y = add(&mut g, Op::Unary(UnaryOp::Gelu), &[s]);
    let z = add(&mut g, Op::Softmax { axis: 1 }, &[y]);
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
    assert!(t.contains("@k0"), "the module defines the kernel symbol:\n{t}");
    harness::check_all(&[g], 1);
}

/// The largest error of the compiled `op` on `xs` against `exact` (computed in f64), in ulp
/// of the exactly rounded f32 result (the subnormal spacing for results below the normal
/// range); NaN must stay NaN.
fn worst_ulp(op: UnaryOp, xs: &[f64], exact: impl Fn(f64) -> f64) -> f64 {
    let mut g = Graph::new("approximation");
    let x = input(&mut g, "x", f32s(&[xs.len() as u64]));
    let y = add(&mut g, Op::Unary(op), &[x]);
    g.set_outputs(vec![y]);
    let object =
        tessera_codegen::compile_cpu(&[tessera_codegen::KernelSource { symbol: "t".into(), graph: g.clone() }])
            .unwrap();
    let lib = harness::load(&object.shared_object);
    let input = tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![xs.len()], xs.to_vec());
    let got = harness::call(&lib, "t", &g, std::slice::from_ref(&input)).remove(0).to_f64_vec();
    let mut worst = 0.0f64;
    for (x, t) in input.to_f64_vec().iter().zip(&got) {
        let want = exact(*x);
        if want.is_nan() {
            assert!(t.is_nan(), "{}({x}) gave {t}", op.mnemonic());
            continue;
        }
        if want.is_infinite() || (want as f32).is_infinite() {
            assert_eq!(*t, f64::from(want as f32), "{}({x})", op.mnemonic());
            continue;
        }
        let ulp = (want as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
        worst = worst.max((t - want).abs() / ulp as f64);
    }
    worst
}

fn sweep(from: f64, to: f64, n: usize) -> impl Iterator<Item = f64> {
    (0..n).map(move |i| from + (to - from) * i as f64 / (n - 1) as f64)
}

/// The vectorizable tanh approximation stays within a few ulp of the exact value, relative to
/// the result, over the whole range (tails, tiny values, and the clamp) and keeps NaN.
#[test]
fn tanh_approximation_is_within_a_few_ulp() {
    let xs: Vec<f64> = sweep(-10.0, 10.0, 20001).chain([1e-5, -3e-4, 4e-4, 1e-30, f64::NAN, f64::INFINITY]).collect();
    let worst = worst_ulp(UnaryOp::Tanh, &xs, f64::tanh);
    assert!(worst <= 4.0, "worst error {worst} ulp");
}

/// The inline exp (no libm call) over its whole range: overflow to infinity, results in the
/// subnormal range and underflow to 0, the infinities and NaN.
#[test]
fn exp_approximation_is_within_one_ulp() {
    let specials = [0.0, -0.0, 1e-30, 88.72, 88.7228, 88.73, 89.0, -87.3, -100.0, -103.9, -104.0, -200.0];
    let infinities = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    let xs: Vec<f64> =
        sweep(-110.0, 90.0, 40001).chain(sweep(-1.0, 1.0, 4001)).chain(specials).chain(infinities).collect();
    let worst = worst_ulp(UnaryOp::Exp, &xs, f64::exp);
    // Measured: 0.72 ulp.
    assert!(worst <= 1.0, "worst error {worst} ulp");
}

/// The inline erf (a rational function) within a few ulp, tails and tiny values included.
#[test]
fn erf_approximation_is_within_a_few_ulp() {
    let xs: Vec<f64> = sweep(-6.0, 6.0, 24001).chain([1e-6, -1e-20, 3.9, 4.0, f64::NAN, f64::INFINITY]).collect();
    let worst = worst_ulp(UnaryOp::Erf, &xs, |x| UnaryOp::Erf.apply_f64(x));
    // Measured: 2.8 ulp.
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

/// `pow` by a constant small integer is multiplication, not a `powf` call (which keeps the loop
/// scalar), and stays within 2 ulp of the exact power (negative bases, tiny and huge values,
/// overflow to infinity, NaN); other exponents keep `powf` and its accuracy.
#[test]
fn powers_by_small_integers_are_multiplications() {
    let xs: Vec<f64> = sweep(-30.0, 30.0, 6001).chain([1e-20, -1e-12, 3e12, -5e25, f64::NAN, f64::INFINITY]).collect();
    for (exponent, inline) in [(1.0, true), (2.0, true), (3.0, true), (4.0, true), (2.5, false), (5.0, false)] {
        let mut g = Graph::new("power");
        let shape = [xs.len() as u64];
        let x = input(&mut g, "x", f32s(&shape));
        let power = tessera_ir::testing::build::filled_constant(&mut g, DType::F32, &shape, exponent);
        let y = add(&mut g, Op::Binary(BinaryOp::Pow), &[x, power]);
        g.set_outputs(vec![y]);
        let emitted = tessera_codegen::emit::emit_kernel("power", &g).unwrap();
        assert_eq!(!emitted.function.contains("math.powf"), inline, "x^{exponent}");
        let object =
            tessera_codegen::compile_cpu(&[tessera_codegen::KernelSource { symbol: "t".into(), graph: g.clone() }])
                .unwrap();
        let lib = harness::load(&object.shared_object);
        let data = tessera_ir::tensor::Tensor::from_f64(DType::F32, vec![xs.len()], xs.clone());
        let got = harness::call(&lib, "t", &g, std::slice::from_ref(&data)).remove(0).to_f64_vec();
        for (x, t) in data.to_f64_vec().iter().zip(&got) {
            let want = x.powf(exponent);
            if want.is_nan() {
                assert!(t.is_nan(), "{x}^{exponent} gave {t}");
            } else if (want as f32).is_infinite() {
                assert_eq!(*t, f64::from(want as f32), "{x}^{exponent}");
            } else {
                let ulp = f64::from((want as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON);
                assert!((t - want).abs() <= 2.0 * ulp, "{x}^{exponent}: {t}, exact {want}");
            }
        }
    }
}
