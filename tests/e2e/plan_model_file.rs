//! `tessera plan` on model files as what they are: an ONNX export's initializers are its
//! parameters (trained with gradients and optimizer state, resident when serving), its batch and
//! sequence are its symbolic input dimensions, and its plan agrees with the zoo model it exports.
//!
//! The ONNX models are written by `scripts/planner/gpt2_onnx.py` (GPT-2 as `torch.onnx.export`
//! writes it, random weights) with the real-models venv's `onnx` (`scripts/real-models/setup.sh`).

use crate::support::{repo_root, tessera, Outcome};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A GPT-2-shaped model small enough for a debug build, and the zoo spec of the same model
/// without dropout (an export is an inference graph).
const SMALL: &[&str] = &["--layers", "2", "--hidden", "64", "--heads", "4", "--vocab", "256", "--ctx", "64"];
const SMALL_ZOO: &str = "gpt:layers=2,hidden=64,heads=4,vocab=256,seq=64,dropout=0";

/// Writes the small GPT-2 ONNX model into `dir` with the batch and sequence dimensions named
/// `batch` and `seq`; returns its path.
fn write_gpt2(dir: &Path, file: &str, batch: &str, seq: &str) -> PathBuf {
    write_gpt2_with(dir, file, batch, seq, &[])
}

/// [`write_gpt2`] with more of the script's options (`--dtype f32`, say).
fn write_gpt2_with(dir: &Path, file: &str, batch: &str, seq: &str, options: &[&str]) -> PathBuf {
    let python = repo_root().join(".cache/real-models/venv/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/real-models/setup.sh", python.display());
    let out = dir.join(file);
    let status = Command::new(&python)
        .arg(repo_root().join("scripts/planner/gpt2_onnx.py"))
        .arg(&out)
        .args(SMALL)
        .args(["--batch-name", batch, "--seq-name", seq])
        .args(options)
        .status()
        .expect("python runs");
    assert!(status.success(), "gpt2_onnx.py failed");
    out
}

fn plan_json(dir: &Path, model: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["plan", model, "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8", "--seq", "64"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--format", "json"]);
    let out = tessera(dir, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("plan JSON")
}

fn memory(plan: &serde_json::Value, part: &str) -> f64 {
    plan["estimate"]["memory"][part].as_f64().expect("memory part")
}

#[test]
fn an_onnx_export_trains_with_its_weights_as_parameters_like_the_zoo_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gpt2(dir.path(), "gpt2.onnx", "batch_size", "sequence_length");
    let file = plan_json(dir.path(), model.to_str().unwrap(), &[]);
    let zoo = plan_json(dir.path(), SMALL_ZOO, &[]);
    // 2 layers of 12 h^2 + 13 h, the 256 x 64 token and 64 x 64 position tables, the final norm.
    let expected = 2 * (12 * 64 * 64 + 13 * 64) + 256 * 64 + 64 * 64 + 2 * 64;
    assert_eq!(file["parameters"].as_u64(), Some(expected), "{file}");
    assert_eq!(zoo["parameters"].as_u64(), Some(expected), "{zoo}");
    assert_eq!(file["global_batch"].as_u64(), Some(8));
    assert_eq!(file["seq"].as_u64(), Some(64));
    assert_eq!(file["parallelism"], zoo["parallelism"]);
    let (t_file, t_zoo) = (file["step_time_s"].as_f64().unwrap(), zoo["step_time_s"].as_f64().unwrap());
    assert!((t_file / t_zoo - 1.0).abs() < 0.05, "step time {t_file} s for the file, {t_zoo} s for the zoo");
    assert_eq!(memory(&file, "activations"), memory(&zoo, "activations"));
    // bf16 weights, f32 gradients, Adam moments sharded by ZeRO-1 over dp=8.
    assert_eq!(memory(&file, "weights"), 2.0 * expected as f64);
    assert_eq!(memory(&file, "gradients"), 4.0 * expected as f64);
    assert!(memory(&file, "optimizer") > 0.0, "{file}");
    // The zoo model on one stage holds its tied token table once, as the file does: the same
    // weights, gradients and optimizer state (its head used to count a second copy).
    for part in ["weights", "gradients", "optimizer"] {
        let (f, z) = (memory(&file, part), memory(&zoo, part));
        assert!((z / f - 1.0).abs() < 1e-9, "{part}: {f} bytes for the file, {z} for the zoo");
    }
}

/// An f32 export (what `torch.onnx.export` writes for a default `GPT2LMHeadModel`) plans like
/// the zoo model in f32 (`dtype=f32`): step time and every part of the memory within 5%. The
/// comparison with the bf16 zoo default would mix precisions (f32 matmuls price ~3.5x slower).
#[test]
fn an_f32_onnx_export_plans_like_the_zoo_model_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gpt2_with(dir.path(), "gpt2-f32.onnx", "batch", "seq", &["--dtype", "f32"]);
    let file = plan_json(dir.path(), model.to_str().unwrap(), &[]);
    let zoo = plan_json(dir.path(), &format!("{SMALL_ZOO},dtype=f32"), &[]);
    assert_eq!(file["parameters"], zoo["parameters"], "{file}");
    assert_eq!(file["parallelism"], zoo["parallelism"]);
    let within = |what: &str, f: f64, z: f64| {
        assert!(f > 0.0 && (f / z - 1.0).abs() < 0.05, "{what}: {f} for the file, {z} for the zoo");
    };
    within("step time (s)", file["step_time_s"].as_f64().unwrap(), zoo["step_time_s"].as_f64().unwrap());
    for part in ["weights", "gradients", "optimizer", "activations", "temporary"] {
        within(&format!("{part} (bytes)"), memory(&file, part), memory(&zoo, part));
    }
    // f32 weights: 4 bytes per parameter (the bf16 file above has 2).
    assert_eq!(memory(&file, "weights"), 4.0 * file["parameters"].as_f64().unwrap());
}

#[test]
fn an_onnx_export_serves_with_its_weights_resident() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gpt2(dir.path(), "gpt2.onnx", "batch", "seq");
    let plan = plan_json(dir.path(), model.to_str().unwrap(), &["--mode", "serve"]);
    let params = plan["parameters"].as_f64().unwrap();
    let gpus_holding_a_copy = plan["parallelism"]["tp"].as_f64().unwrap() * plan["parallelism"]["pp"].as_f64().unwrap();
    assert_eq!(memory(&plan, "weights"), 2.0 * params / gpus_holding_a_copy, "{plan}");
    assert_eq!(memory(&plan, "gradients"), 0.0);
    assert_eq!(memory(&plan, "optimizer"), 0.0);
}

#[test]
fn dimensions_whose_names_say_nothing_are_named_with_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gpt2(dir.path(), "opaque.onnx", "s0", "s1");
    let model = model.to_str().unwrap();
    let refused =
        tessera(dir.path(), &["plan", model, "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8", "--seq", "64"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("symbolic dimension 's0' is neither the batch nor the sequence"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("input_ids [s0, s1], position_ids [s0, s1], causal_mask [s1, s1]"),
        "{}",
        refused.stderr
    );
    let named = plan_json(dir.path(), model, &["--batch-dim", "s0", "--seq-dim", "s1"]);
    let obvious = plan_json(dir.path(), write_gpt2(dir.path(), "named.onnx", "batch", "seq").to_str().unwrap(), &[]);
    assert_eq!(named["step_time_s"], obvious["step_time_s"]);
    assert_eq!(named["parameters"], obvious["parameters"]);
}

fn plan_args_outcome(dir: &Path, args: &[&str]) -> Outcome {
    let out = tessera(dir, args);
    assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    out
}

#[test]
fn a_model_file_request_that_cannot_be_read_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_gpt2(dir.path(), "gpt2.onnx", "batch", "sequence");
    let model = model.to_str().unwrap();
    let base = ["plan", model, "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8"];
    let no_seq = plan_args_outcome(dir.path(), &base);
    assert!(
        no_seq.stderr.contains("the model's sequence dimension 'sequence' needs a length: give --seq"),
        "{}",
        no_seq.stderr
    );
    let unknown = plan_args_outcome(dir.path(), &[&base[..], &["--seq", "64", "--seq-dim", "tokens"]].concat());
    assert!(
        unknown.stderr.contains("--seq-dim tokens: the model has no symbolic dimension 'tokens'"),
        "{}",
        unknown.stderr
    );
    let zoo = plan_args_outcome(
        dir.path(),
        &["plan", "gpt2", "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8", "--batch-dim", "b"],
    );
    assert!(zoo.stderr.contains("'gpt2' is a zoo model"), "{}", zoo.stderr);
}
