//! Attention as one fused kernel: `tessera opt --pipeline fuse` on a small zoo GPT layer groups
//! q·kᵀ, the scale, the causal mask, the softmax and ·v (with the key transpose) as one group
//! of kind attention; with attention dropout (training) the probabilities have another use
//! and the site is left to the softmax group and the GEMMs.

use crate::support::tessera;

const GPT: &str = "gpt2:layers=2,hidden=64,heads=2,seq=16,vocab=32,dropout=0";

#[test]
fn a_zoo_gpt_layer_fuses_attention_into_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["opt", GPT, "--pipeline", "fuse"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.matches("(attention, 10 ops)").count(), 2, "one per layer:\n{}", out.stdout);
    // The first layer's attention group, from its comment to the next group.
    let start = out.stdout.find("(attention,").expect("an attention group");
    let start = out.stdout[..start].rfind('\n').map_or(0, |i| i + 1);
    let body = out.stdout[start..].find('\n').map_or(out.stdout.len(), |i| start + i + 1);
    let end = out.stdout[body..].find("// fusion group").map_or(out.stdout.len(), |i| body + i);
    insta::assert_snapshot!("gpt_layer_attention_group", &out.stdout[start..end]);
    let training = tessera(dir.path(), &["opt", &GPT.replace("dropout=0", "dropout=0.1"), "--pipeline", "fuse"]);
    assert_eq!(training.code, 0, "{}", training.stderr);
    assert!(!training.stdout.contains("(attention,"), "dropout on the probabilities is not a site");
}

/// The rule: attention kernels on CUDA, the GEMM library path on the CPU (where the fused
/// kernel measured slower, BENCHMARKS.md).
#[test]
fn compiled_attention_is_fused_on_cuda_and_library_gemms_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = tessera(dir.path(), &["compile", GPT, "-o", "cpu"]);
    assert_eq!(cpu.code, 0, "{}", cpu.stderr);
    // Per layer: qkv, out, up, down projections and the two attention GEMMs.
    assert!(cpu.stdout.contains("12 matmul"), "{}", cpu.stdout);
    let cuda = tessera(dir.path(), &["compile", GPT, "--target", "cuda:sm_90", "-o", "cuda"]);
    assert_eq!(cuda.code, 0, "{}", cuda.stderr);
    assert!(cuda.stdout.contains("8 matmul"), "the attention GEMMs are inside kernels: {}", cuda.stdout);
}
