//! The flash-style attention template: `softmax(q kᵀ · scale + mask) v` per (batch, head,
//! query row), compiled for the CPU, against the reference interpreter on random shapes
//! (key counts that are and are not multiples of the key tile), causal masks and dense ones;
//! the emitted code never allocates the score matrix; the GPU launch is one thread per row.

mod harness;

use proptest::prelude::*;
use tessera_codegen::emit::{emit_gpu_kernel, emit_kernel};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, broadcast, broadcast_scalar, input, ty};

/// `softmax(q · transpose(k) · scale + mask) · v` on `[batch, heads, seq, dim]` tensors
/// (queries `seq_q`, keys `seq_k`), the mask `[seq_q, seq_k]` broadcast over batch and heads.
fn sdpa(batch: u64, heads: u64, seq_q: u64, seq_k: u64, dim: u64, dtype: DType) -> Graph {
    let mut g = Graph::new("sdpa");
    let q = input(&mut g, "q", ty(dtype, &[batch, heads, seq_q, dim]));
    let k = input(&mut g, "k", ty(dtype, &[batch, heads, seq_k, dim]));
    let v = input(&mut g, "v", ty(dtype, &[batch, heads, seq_k, dim + 1]));
    let mask = input(&mut g, "mask", ty(dtype, &[seq_q, seq_k]));
    let scores_shape = [batch, heads, seq_q, seq_k];
    let kt = add(&mut g, Op::Transpose { perm: vec![0, 1, 3, 2] }, &[k]);
    let scores = add(&mut g, Op::MatMul, &[q, kt]);
    let scale = broadcast_scalar(&mut g, dtype, 1.0 / (dim as f64).sqrt(), &scores_shape);
    let scaled = add(&mut g, Op::Binary(BinaryOp::Mul), &[scores, scale]);
    let mask = broadcast(&mut g, mask, &scores_shape);
    let masked = add(&mut g, Op::Binary(BinaryOp::Add), &[scaled, mask]);
    let probs = add(&mut g, Op::Softmax { axis: -1 }, &[masked]);
    let out = add(&mut g, Op::MatMul, &[probs, v]);
    g.set_outputs(vec![out]);
    g
}

/// Random inputs with the mask replaced: causal (`-1e9` above the diagonal, aligned to the
/// last query as in decoding with a cache) or all zeros.
fn inputs(g: &Graph, seed: u64, seq_q: u64, seq_k: u64, causal: bool) -> Vec<Tensor> {
    let mut inputs = harness::random_inputs(g, seed);
    let offset = seq_k as i64 - seq_q as i64;
    let mask: Vec<f64> = (0..seq_q as i64)
        .flat_map(|i| (0..seq_k as i64).map(move |j| if causal && j > i + offset.max(0) { -1e9 } else { 0.0 }))
        .collect();
    let dtype = inputs[3].dtype;
    inputs[3] = Tensor::from_f64(dtype, vec![seq_q as usize, seq_k as usize], mask);
    inputs
}

/// `shape` is `[batch, heads, seq_q, seq_k, dim]`.
fn check(shape: [u64; 5], causal: bool, dtype: DType, seed: u64) {
    let [batch, heads, seq_q, seq_k, dim] = shape;
    let g = sdpa(batch, heads, seq_q, seq_k, dim, dtype);
    let object =
        tessera_codegen::compile_cpu(&[tessera_codegen::KernelSource { symbol: "sdpa".into(), graph: g.clone() }])
            .expect("compile");
    let lib = harness::load(&object.shared_object);
    let inputs = inputs(&g, seed, seq_q, seq_k, causal);
    let want = harness::reference(&g, &inputs);
    let got = harness::call(&lib, "sdpa", &g, &inputs);
    harness::assert_matches(&got[0], &want[0], &format!("sdpa {batch}x{heads}x{seq_q}x{seq_k}x{dim} causal={causal}"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn flash_attention_matches_the_interpreter(
        batch in 1u64..3, heads in 1u64..4, seq_q in 1u64..12, seq_k in 1u64..80, dim in 1u64..20,
        causal in any::<bool>(), seed in any::<u64>(),
    ) {
        check([batch, heads, seq_q, seq_k, dim], causal, DType::F32, seed);
    }
}

#[test]
fn flash_attention_in_f64_and_bf16_storage() {
    check([1, 2, 5, 40, 8], true, DType::F64, 3);
    check([2, 1, 3, 33, 4], false, DType::BF16, 4);
}

#[test]
fn the_score_matrix_is_never_allocated() {
    // 70 keys: two full tiles of 32 and a partial one.
    let g = sdpa(1, 2, 9, 70, 8, DType::F32);
    let cpu = emit_kernel("sdpa", &g).expect("emit");
    assert!(!cpu.function.contains("memref.alloc()"), "no heap temporaries:\n{}", cpu.function);
    assert!(!cpu.function.contains("2x9x70x"), "no buffer of the scores' shape:\n{}", cpu.function);
    assert!(cpu.function.contains("memref.alloca() : memref<32xf32>"), "one key tile of scores per row");
    let gpu = emit_gpu_kernel("sdpa", &g).expect("emit");
    assert!(gpu.temporaries.is_empty());
    let threads: Vec<usize> = gpu.launches.iter().map(|(_, n)| *n).collect();
    assert_eq!(threads, vec![2 * 9], "one launch, one thread per (head, query row)");
}
