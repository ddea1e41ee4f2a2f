//! Training checkpoints: one `.npy` file per tensor plus `index.json`, in a directory per step.
//!
//! Layout of `DIR/step-00000010/`:
//! - `index.json`: `format`, `step`, `data_position`, `rng_state`, `model`, `optimizer`, and
//!   `tensors`, one entry per file: `name`, `file`, `kind` (`param` or `optimizer`), `dtype`,
//!   `shape` (of the whole tensor) and `shard` (`{"rank": 0, "of": 1, "axis": null}`: the slice
//!   this file holds, so a sharded run writes one file per shard and the index ties them).
//! - `tensors/<name>.npy`: f32 arrays (master weights and optimizer state are f32).
//!
//! Writes are atomic: everything goes to a hidden temporary directory, every file and the
//! directory are fsynced, the directory is renamed to its final name and the parent fsynced.
//! A crash leaves either the complete checkpoint or none, and [`latest`] only ever sees
//! complete ones.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy;

pub const FORMAT: &str = "tessera-checkpoint/1";

/// Everything a run needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub data_position: u64,
    pub rng_state: u64,
    pub model: String,
    pub optimizer: String,
    /// Master weights, by name.
    pub params: Vec<(String, Tensor)>,
    /// Optimizer state, by name.
    pub optimizer_state: Vec<(String, Tensor)>,
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("{}: cannot sync", dir.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes `ckpt` under `dir` (created if missing) and returns the checkpoint's directory.
pub fn save(dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let final_dir = dir.join(step_dir_name(ckpt.step));
    let tmp = dir.join(format!(".{}.tmp-{}", step_dir_name(ckpt.step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    }
    let result = (|| -> Result<()> {
        let tensors_dir = tmp.join("tensors");
        std::fs::create_dir_all(&tensors_dir).with_context(|| format!("{}: cannot create", tensors_dir.display()))?;
        let mut entries = Vec::new();
        let all = ckpt.params.iter().map(|p| ("param", p)).chain(ckpt.optimizer_state.iter().map(|s| ("optimizer", s)));
        for (kind, (name, t)) in all {
            let file = format!("tensors/{name}.npy");
            write_synced(&tmp.join(&file), &npy::write_npy_bytes(t))?;
            entries.push(json!({
                "name": name,
                "file": file,
                "kind": kind,
                "dtype": t.dtype.mlir_name(),
                "shape": t.shape,
                "shard": {"rank": 0, "of": 1, "axis": null},
            }));
        }
        fsync_dir(&tensors_dir)?;
        let index = json!({
            "format": FORMAT,
            "step": ckpt.step,
            "data_position": ckpt.data_position,
            "rng_state": ckpt.rng_state,
            "model": ckpt.model,
            "optimizer": ckpt.optimizer,
            "tensors": entries,
        });
        let text = serde_json::to_string_pretty(&index).context("index.json")?;
        write_synced(&tmp.join("index.json"), text.as_bytes())?;
        fsync_dir(&tmp)?;
        if final_dir.exists() {
            // A checkpoint of this step from an earlier run: the new one replaces it whole.
            std::fs::remove_dir_all(&final_dir).with_context(|| format!("{}: cannot replace", final_dir.display()))?;
        }
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("{}: cannot rename into place", final_dir.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| final_dir)
}

/// The newest complete checkpoint directory under `dir`.
pub fn latest(dir: &Path) -> Result<PathBuf> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot read the checkpoint directory", dir.display()))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) else { continue };
        if entry.path().join("index.json").is_file() && best.as_ref().is_none_or(|(b, _)| step > *b) {
            best = Some((step, entry.path()));
        }
    }
    best.map(|(_, p)| p).with_context(|| format!("{}: no checkpoint (step-*/index.json) to resume from", dir.display()))
}

/// Reads a checkpoint directory written by [`save`].
pub fn load(ckpt_dir: &Path) -> Result<Checkpoint> {
    let index_path = ckpt_dir.join("index.json");
    let text =
        std::fs::read_to_string(&index_path).with_context(|| format!("{}: cannot read", index_path.display()))?;
    let index: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", index_path.display()))?;
    let field = |key: &str| index.get(key).with_context(|| format!("{}: missing '{key}'", index_path.display()));
    if field("format")?.as_str() != Some(FORMAT) {
        bail!("{}: not a {FORMAT} checkpoint", index_path.display());
    }
    let uint = |key: &str| -> Result<u64> {
        field(key)?
            .as_u64()
            .with_context(|| format!("{}: '{key}' must be a non-negative integer", index_path.display()))
    };
    let string = |key: &str| -> Result<String> {
        Ok(field(key)?
            .as_str()
            .with_context(|| format!("{}: '{key}' must be a string", index_path.display()))?
            .to_string())
    };
    let mut params = Vec::new();
    let mut optimizer_state = Vec::new();
    let tensors =
        field("tensors")?.as_array().with_context(|| format!("{}: 'tensors' must be a list", index_path.display()))?;
    for entry in tensors {
        let get = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .with_context(|| format!("{}: a tensor lacks '{key}'", index_path.display()))
        };
        let (name, file, kind) = (get("name")?, get("file")?, get("kind")?);
        if file.contains("..") || Path::new(file).is_absolute() {
            bail!("{}: tensor file '{file}' lies outside the checkpoint", index_path.display());
        }
        let path = ckpt_dir.join(file);
        let t = npy::read_npy(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        match kind {
            "param" => params.push((name.to_string(), t)),
            "optimizer" => optimizer_state.push((name.to_string(), t)),
            other => bail!("{}: tensor '{name}' has unknown kind '{other}'", index_path.display()),
        }
    }
    Ok(Checkpoint {
        step: uint("step")?,
        data_position: uint("data_position")?,
        rng_state: uint("rng_state")?,
        model: string("model")?,
        optimizer: string("optimizer")?,
        params,
        optimizer_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::dtype::DType;

    fn sample(step: u64) -> Checkpoint {
        Checkpoint {
            step,
            data_position: 40,
            rng_state: u64::MAX - 1,
            model: "gpt:layers=1".into(),
            optimizer: "adamw".into(),
            params: vec![("l0.w".into(), Tensor::from_f64(DType::F32, vec![2], vec![0.5, -1.25]))],
            optimizer_state: vec![("l0.w.m".into(), Tensor::from_f64(DType::F32, vec![2], vec![1e-3, 0.0]))],
        }
    }

    #[test]
    fn round_trip_and_only_complete_checkpoints_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = save(dir.path(), &sample(3)).expect("save");
        assert_eq!(load(&saved).expect("load"), sample(3));
        // What a crash leaves behind: a staging directory, and a step directory whose index
        // was never written. Neither is a checkpoint.
        std::fs::create_dir_all(dir.path().join(".step-00000006.tmp-1/tensors")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("step-00000009/tensors")).expect("mkdir");
        assert_eq!(latest(dir.path()).expect("latest"), saved);
        let newer = save(dir.path(), &sample(12)).expect("save");
        assert_eq!(latest(dir.path()).expect("latest"), newer);
    }

    #[test]
    fn an_index_pointing_outside_the_checkpoint_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = save(dir.path(), &sample(1)).expect("save");
        let index = saved.join("index.json");
        let text = std::fs::read_to_string(&index).expect("read").replace("tensors/l0.w.npy", "../../etc/passwd");
        std::fs::write(&index, text).expect("write");
        let err = load(&saved).expect_err("escape");
        assert!(err.to_string().contains("lies outside the checkpoint"), "{err}");
    }
}
