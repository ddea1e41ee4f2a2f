//! Tensor-parallel serving (`--mesh tp=N`): the GPT-2 and Llama (GQA) test checkpoints of
//! `.cache/serve` split over two ranks give the same greedy tokens as one rank, the same bits
//! run after run (the all-reduce adds in rank order), KV numbers for the whole mesh,
//! meshes serving cannot run refused with exit 2, and a rank that fails or panics stopping
//! its peers at once (not after the 300 s receive deadline) with an error that names it.

use crate::serve_reference::{checkpoint, reference, Case};
use crate::support::{repo_root, tessera};
use std::time::{Duration, Instant};
use tessera::serve::{build_engine, build_mesh_engine, generate, open_model, GenerateOptions};
use tessera_ir::serving::ServeShape;
use tessera_runtime::serve::engine::{Fault, ServingEngine};
use tessera_runtime::serve::sampling::{argmax, SamplingParams};
use tessera_runtime::serve::ServeError;

/// Far below the mesh's 300 s receive deadline: a peer that waited for it would fail the test.
const PROMPT_FAILURE: Duration = Duration::from_secs(20);

const NEW_TOKENS: usize = 20;

fn greedy() -> GenerateOptions {
    GenerateOptions { max_new_tokens: NEW_TOKENS, sampling: SamplingParams::default(), stop: None }
}

/// For both checkpoints and the prompts of 1 and 7 tokens, two ranks generate one rank's 20
/// greedy tokens (which are transformers'); their logits are within float rounding of one
/// rank's and bit-identical from one run to the next; the mesh's KV block is one rank's block
/// in bytes (each rank holds half the key/value heads) and its weights are one copy plus the
/// replicated embedding, layer norms and row-parallel biases (the head is rank 0's alone).
#[test]
fn two_ranks_generate_the_tokens_of_one() {
    let reference = reference();
    for name in ["gpt2-tiny", "llama-tiny"] {
        let model = open_model(checkpoint(name).to_str().expect("a UTF-8 path"), 0).expect("the checkpoint opens");
        let shape = ServeShape::new(1, 64, 16);
        let (mut one, _) = build_engine(&model, shape).expect("the one-rank engine builds");
        let (mut two, _) =
            build_mesh_engine(&model, shape, shape.cache_blocks(), &[], 2).expect("the two-rank engine builds");
        let cases: Vec<&Case> = reference.models[name].iter().filter(|c| c.prompt_ids.len() <= 7).collect();
        assert_eq!(cases.iter().map(|c| c.prompt_ids.len()).collect::<Vec<_>>(), [1, 7], "{name}: the short prompts");
        for case in cases {
            let want = generate(&mut one, &model, &case.prompt, &greedy(), &mut |_| {}).expect("one rank generates");
            let got = generate(&mut two, &model, &case.prompt, &greedy(), &mut |_| {}).expect("two ranks generate");
            let label = format!("{name}, prompt of {} tokens", case.prompt_ids.len());
            assert_eq!(want.generated_ids, case.generated_ids[..NEW_TOKENS], "{label}: one rank is transformers");
            assert_eq!(got.generated_ids, want.generated_ids, "{label}");
            assert_eq!(got.text, want.text, "{label}");
            // Logits: close to one rank's, and the same bits on a second run.
            let logits = |engine: &mut dyn ServingEngine| {
                let seq = engine.add_sequence();
                let logits = engine.prefill(seq, &case.prompt_ids).expect("prefill");
                engine.release(seq);
                logits
            };
            let (single, first, second) = (logits(&mut one), logits(&mut two), logits(&mut two));
            assert_eq!(first, second, "{label}: the all-reduce adds in a fixed order");
            let worst = single.iter().zip(&first).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{label}: logits differ by {worst}");
        }
        assert!(two.all_reduce_time() > std::time::Duration::ZERO, "{name}: the ranks all-reduced");
        let (kv_one, kv_two) = (one.kv_usage(), two.kv_usage());
        assert_eq!(kv_two, kv_one, "{name}: the mesh's blocks, whole-mesh bytes per block, nothing held");
        let c = &model.config;
        // The layers' norms (the final norm is the head's, on rank 0 alone); LayerNorm has a bias.
        let norms = 2 * c.layers * c.hidden * if c.bias { 2 } else { 1 };
        let positions = if name == "gpt2-tiny" { c.seq * c.hidden } else { 0 };
        let replicated = c.vocab * c.hidden + positions + norms + if c.bias { 2 * c.layers * c.hidden } else { 0 };
        assert_eq!(two.weight_bytes(), one.weight_bytes() + (replicated * 4) as usize, "{name}: weight bytes");
    }
}

/// The command: `--mesh tp=2` streams the text one rank streams and says so in its JSON.
#[test]
fn generate_command_runs_on_two_ranks() {
    let reference = reference();
    let case = &reference.models["llama-tiny"][1];
    let dir = checkpoint("llama-tiny");
    let args = ["generate", dir.to_str().expect("a UTF-8 path"), "--prompt", &case.prompt, "--max-new-tokens", "20"];
    let out = tessera(&repo_root(), &[&args[..], &["--mesh", "tp=2", "--json"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON object");
    assert_eq!(json["tp"], 2);
    assert_eq!(json["generated_ids"], serde_json::json!(case.generated_ids[..NEW_TOKENS]));
    assert!(json["all_reduce_seconds"].as_f64().is_some_and(|s| s > 0.0), "{json}");
}

/// Meshes serving cannot run exit 2 with the reason: a tp that does not divide the heads
/// (gpt2-tiny has 4), the key/value heads (llama-tiny has 2 for 4 query heads) or the MLP
/// width, and axes other than tp; `serve` refuses before it listens.
#[test]
fn meshes_serving_cannot_run_are_refused() {
    let gpt2 = checkpoint("gpt2-tiny");
    let llama = checkpoint("llama-tiny");
    let zoo = "llama:layers=1,hidden=64,heads=4,kv_heads=4,ffn=90,vocab=256,seq=64";
    let cases: [(&str, &str, &str); 5] = [
        (gpt2.to_str().expect("a UTF-8 path"), "tp=3", "tp=3 does not divide the model's 4 attention heads"),
        (llama.to_str().expect("a UTF-8 path"), "tp=4", "tp=4 does not divide the model's 2 key/value heads"),
        (zoo, "tp=4", "tp=4 does not divide the model's 90 MLP width (ffn)"),
        (gpt2.to_str().expect("a UTF-8 path"), "dp=2,tp=2", "serving runs tensor parallelism only (tp=N); dp=2"),
        (llama.to_str().expect("a UTF-8 path"), "pp=2", "serving runs tensor parallelism only (tp=N); pp=2"),
    ];
    for (model, mesh, reason) in cases {
        let out =
            tessera(&repo_root(), &["generate", model, "--prompt", "hi", "--max-new-tokens", "2", "--mesh", mesh]);
        assert_eq!(out.code, 2, "generate {model} --mesh {mesh}: {}", out.stderr);
        assert!(out.stderr.contains(reason), "generate --mesh {mesh}: {}", out.stderr);
        let out = tessera(&repo_root(), &["serve", model, "--port", "0", "--mesh", mesh]);
        assert_eq!(out.code, 2, "serve {model} --mesh {mesh}: {}", out.stderr);
        assert!(out.stderr.contains(reason), "serve --mesh {mesh}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "serve --mesh {mesh} listened: {}", out.stdout);
    }
}

/// An injected kernel error on rank 1 alone, in the middle of a 7-token prefill (one-row runs,
/// so rank 0 is waiting in an all-reduce for rank 1's part): the step fails at once with an
/// error naming rank 1, both ranks undid it (no blocks held), and the same mesh then generates
/// transformers' tokens: the failure is not permanent.
#[test]
fn a_step_failing_on_one_rank_names_it_and_the_mesh_runs_on() {
    let reference = reference();
    let case = &reference.models["llama-tiny"][1];
    assert_eq!(case.prompt_ids.len(), 7);
    let model = open_model(checkpoint("llama-tiny").to_str().expect("a UTF-8 path"), 0).expect("the checkpoint opens");
    let shape = ServeShape::new(1, 64, 16);
    let (mut two, _) =
        build_mesh_engine(&model, shape, shape.cache_blocks(), &[], 2).expect("the two-rank engine builds");
    for runs_before in [0, 3] {
        let seq = two.add_sequence();
        two.inject_fault(1, runs_before, Fault::Error);
        let started = Instant::now();
        let error = two.prefill(seq, &case.prompt_ids).expect_err("the injected failure");
        assert!(started.elapsed() < PROMPT_FAILURE, "the peer waited {:?}", started.elapsed());
        assert!(matches!(error, ServeError::RankFailed { rank: 1, .. }), "{error}");
        assert!(error.to_string().starts_with("tensor-parallel rank 1 failed the step: "), "{error}");
        assert!(!error.is_fatal());
        assert_eq!(two.kv_usage().blocks_used, 0, "the failed step's blocks are free on every rank");
        two.release(seq);
        let got = generate(&mut two, &model, &case.prompt, &greedy(), &mut |_| {}).expect("the mesh runs on");
        assert_eq!(got.generated_ids, case.generated_ids[..NEW_TOKENS], "after a failure {runs_before} runs in");
    }
}

/// A failure past a run's all-reduces (rank 0's head, `Fault::HeadError`), in a 7-token
/// prefill's first one-row run (rank 1 then waits in the next run's all-reduce) and in its
/// last (rank 1 has finished the step, and undoes it after): the error names rank 0, and the
/// same sequence prefilled again gives transformers' tokens, so no rank kept the failed step.
#[test]
fn a_head_failure_on_rank_0_is_undone_on_every_rank() {
    let reference = reference();
    let case = &reference.models["llama-tiny"][1];
    let model = open_model(checkpoint("llama-tiny").to_str().expect("a UTF-8 path"), 0).expect("the checkpoint opens");
    let shape = ServeShape::new(1, 64, 16);
    let (mut two, _) =
        build_mesh_engine(&model, shape, shape.cache_blocks(), &[], 2).expect("the two-rank engine builds");
    for runs_before in [0, case.prompt_ids.len() - 1] {
        let seq = two.add_sequence();
        two.inject_fault(0, runs_before, Fault::HeadError);
        let error = two.prefill(seq, &case.prompt_ids).expect_err("the injected failure");
        assert!(matches!(error, ServeError::RankFailed { rank: 0, .. }), "{error}");
        let mut next = argmax(&two.prefill(seq, &case.prompt_ids).expect("the same prompt again"));
        let mut generated = vec![next];
        while generated.len() < NEW_TOKENS {
            next = argmax(&two.decode(&[(seq, next)]).expect("a decode step")[0]);
            generated.push(next);
        }
        assert_eq!(generated, case.generated_ids[..NEW_TOKENS], "after a head failure {runs_before} runs in");
        two.release(seq);
    }
}

/// Rank 1 panicking part-way through a prefill is caught at its thread and stops rank 0's
/// all-reduce at once; the mesh is lost: this step and every later call fail with
/// `RankLost` naming rank 1 and the panic, and dropping the mesh does not hang.
#[test]
fn a_rank_that_panics_loses_the_mesh_at_once() {
    let reference = reference();
    let case = &reference.models["gpt2-tiny"][1];
    let model = open_model(checkpoint("gpt2-tiny").to_str().expect("a UTF-8 path"), 0).expect("the checkpoint opens");
    let shape = ServeShape::new(1, 64, 16);
    let (mut two, _) =
        build_mesh_engine(&model, shape, shape.cache_blocks(), &[], 2).expect("the two-rank engine builds");
    let seq = two.add_sequence();
    two.inject_fault(1, 2, Fault::Panic);
    let started = Instant::now();
    let error = two.prefill(seq, &case.prompt_ids).expect_err("the injected panic");
    assert!(started.elapsed() < PROMPT_FAILURE, "the peer waited {:?}", started.elapsed());
    let ServeError::RankLost { rank: 1, message } = &error else { panic!("not rank 1 lost: {error}") };
    assert!(message.contains("panicked: injected failure (Engine::inject_fault) on tensor-parallel rank 1"), "{error}");
    assert!(error.is_fatal());
    let again = two.decode(&[(seq, 0)]).expect_err("a lost mesh runs nothing");
    assert_eq!(again.to_string(), error.to_string());
    let generation = generate(&mut two, &model, &case.prompt, &greedy(), &mut |_| {});
    let message = generation.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("tensor-parallel rank 1 panicked"), "{message}");
    let dropped = Instant::now();
    drop(two);
    assert!(dropped.elapsed() < PROMPT_FAILURE);
}

/// The command: a rank that panics (the debug-build fault hook `TESSERA_SERVE_FAULT`) ends
/// `tessera generate --mesh tp=2` at once with exit 1 and a message naming the rank.
#[test]
fn generate_exits_1_naming_a_rank_that_panicked() {
    let dir = checkpoint("llama-tiny");
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["generate", dir.to_str().expect("a UTF-8 path"), "--prompt", "hello there", "--mesh", "tp=2"])
        .args(["--max-new-tokens", "8"])
        .env(tessera::fault::SERVE_ENV, "1:4:panic")
        .output()
        .expect("tessera runs");
    assert!(started.elapsed() < PROMPT_FAILURE + Duration::from_secs(30), "{:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tensor-parallel rank 1 panicked: injected failure"), "{stderr}");
    assert!(stderr.contains("the mesh cannot run another step"), "{stderr}");
}

/// `tessera compile CHECKPOINT --serve --mesh tp=2 -o DIR` into a fresh directory; DIR.
fn compile_serving_dir(work: &std::path::Path, name: &str, mesh: &str) -> std::path::PathBuf {
    let out_dir = work.join(format!("{name}-{mesh}"));
    let source = checkpoint(name);
    let args = ["compile", source.to_str().expect("a UTF-8 path"), "--serve", "--max-batch", "2", "--max-seq", "128"];
    let out =
        tessera(&repo_root(), &[&args[..], &["--mesh", mesh, "-o", out_dir.to_str().expect("a UTF-8 path")]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    out_dir
}

/// Per-rank serving artifacts: `compile --serve --mesh tp=2` writes the programs once (and
/// for one row in `rows1/`) and `rank0/`, `rank1/` with each rank's shards only (rank 1 has no head; a query projection is
/// half its columns), and `generate DIR` gives transformers' tokens for the GPT-2 and Llama
/// (GQA) checkpoints from the two-rank and the one-rank directory alike, with no checkpoint.
#[test]
fn compiled_rank_directories_generate_the_tokens_of_one_rank() {
    let reference = reference();
    let work = tempfile::tempdir().expect("a temporary directory");
    for name in ["gpt2-tiny", "llama-tiny"] {
        let two = compile_serving_dir(work.path(), name, "tp=2");
        let one = compile_serving_dir(work.path(), name, "tp=1");
        let expected =
            ["attn_out", "embed", "head", "layer_in", "mlp", "model.json", "rank0", "rank1", "rows1", "serve.json"];
        let expected: Vec<String> = expected.iter().chain(&["tokenizer.json"]).map(|s| s.to_string()).collect();
        assert_eq!(crate::support::files_in(&two), expected, "{name}: the programs once, a directory per rank");
        assert_eq!(crate::support::files_in(&two.join("rank1")), ["weights.safetensors"], "{name}: weights only");
        let shards = |rank: usize| {
            let bytes = std::fs::read(two.join(format!("rank{rank}/weights.safetensors"))).expect("the rank's weights");
            let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
            tensors
                .tensors()
                .into_iter()
                .map(|(n, v)| (n, v.shape().to_vec()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (rank0, rank1) = (shards(0), shards(1));
        // The head (the final norm, and the output projection unless tied to the embedding)
        // is rank 0's alone; every other tensor is on both ranks.
        let head_only: Vec<&String> = rank0.keys().filter(|k| !rank1.contains_key(*k)).collect();
        let expected: &[&str] = match name {
            "gpt2-tiny" => &["final_norm.bias", "final_norm.scale"],
            _ => &["final_norm.scale", "head.weight"],
        };
        assert_eq!(head_only, expected, "{name}");
        assert!(rank1.keys().all(|k| rank0.contains_key(k)), "{name}");
        let model = open_model(checkpoint(name).to_str().expect("a UTF-8 path"), 0).expect("the checkpoint opens");
        let c = &model.config;
        let per_rank = (c.heads * c.head_dim / 2) as usize;
        let q = if name == "gpt2-tiny" { "l0.attn.qkv.weight" } else { "l0.attn.q.weight" };
        let columns = if name == "gpt2-tiny" { 3 * per_rank } else { per_rank };
        assert_eq!(rank1[q], [c.hidden as usize, columns], "{name}: rank 1's {q}");
        for case in reference.models[name].iter().filter(|c| c.prompt_ids.len() <= 7) {
            for dir in [&two, &one] {
                let args = ["generate", dir.to_str().expect("a UTF-8 path"), "--prompt", &case.prompt, "--json"];
                let out = tessera(&repo_root(), &[&args[..], &["--max-new-tokens", "20"]].concat());
                assert_eq!(out.code, 0, "{}", out.stderr);
                let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON object");
                let label = format!("{name} from {}, prompt of {} tokens", dir.display(), case.prompt_ids.len());
                assert_eq!(json["generated_ids"], serde_json::json!(case.generated_ids[..NEW_TOKENS]), "{label}");
                assert_eq!(json["tp"], if dir == &two { 2 } else { 1 }, "{label}");
            }
        }
    }
}

/// A compiled directory runs as compiled: another --mesh, --max-batch or --kv-dtype is refused
/// with exit 2 naming what it was compiled for.
#[test]
fn a_compiled_directory_refuses_other_shapes_and_meshes() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = compile_serving_dir(work.path(), "llama-tiny", "tp=2");
    let dir = dir.to_str().expect("a UTF-8 path");
    let out = tessera(&repo_root(), &["generate", dir, "--prompt", "hi", "--mesh", "tp=1"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("was compiled for tp=2"), "{}", out.stderr);
    let out = tessera(&repo_root(), &["generate", dir, "--prompt", "hi", "--kv-dtype", "int8"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("was compiled for --max-batch 2 --max-seq 128 --kv-block 16 --kv-dtype f32"),
        "{}",
        out.stderr
    );
    let out = tessera(&repo_root(), &["serve", dir, "--port", "0", "--max-batch", "4"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "serve listened: {}", out.stdout);
}
