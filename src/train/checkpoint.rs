//! Training checkpoints: `.npy` files of tensor blocks plus `index.json`, in a directory per step.
//!
//! Layout of `DIR/step-00000010/`:
//! - `index.json`: `format`, `step`, `data_position`, `rng_state`, `model`, `fingerprint` (the
//!   model's, [`crate::train::model_fingerprint`]), `optimizer`, `mesh` (the mesh that wrote it,
//!   empty for one process) and `tensors`, one entry per file: `name`, `file`, `sha256` (of the
//!   file's bytes), `kind` (`param` or `optimizer`), `dtype`, `shape` (of the whole tensor) and
//!   `block` (`offset` and `shape` of the part this file holds, and the `sharding` it came from).
//! - `tensors/<name>.npy` for a whole tensor, `tensors/<name>@<offsets>.npy` for a block: f32
//!   arrays (master weights and optimizer state are f32).
//!
//! A sharded run writes each block once (replicas are written by one rank), so a checkpoint is
//! as large as the model's state on any mesh, and loading reassembles whole tensors from the
//! offsets alone: a checkpoint resumes on any mesh, or on one process.
//!
//! Writes are atomic: everything goes to a hidden staging directory, every file and the
//! directory are fsynced, the directory is renamed to its final name and the parent fsynced
//! ([`save`] for one process, [`save_sharded`] for a mesh, where rank 0 writes the index and
//! renames after a barrier). A crash, or a rank killed mid-save, leaves either the complete
//! checkpoint or none, and [`latest`] only ever sees complete ones; the staging directory a
//! killed write leaves is removed by the next save into the same directory.
//!
//! # Invariants
//!
//! - **A checkpoint resumes only what wrote it, unaltered.** [`load`] checks every file against
//!   its `sha256` before parsing it (a flipped bit resumed with loss 7.7e35 before), and resuming
//!   checks `fingerprint` against the model being trained, naming both models. Checkpoints of
//!   the older formats (`tessera-checkpoint/1` and `/2`) have neither field: they still load,
//!   unverified, with a warning on stderr, so runs from before this format are not stranded.
//! - **Checkpoints are directories renamed into place**: files and directories are fsynced before
//!   the rename, so a crash leaves the previous complete checkpoint and no partial one. A sharded
//!   save stages every rank's blocks in one shared directory; rank 0 writes `index.json` and
//!   renames only after a barrier, so a rank that dies mid-save leaves only a hidden staging
//!   directory, which `latest` ignores.
//! - **A checkpoint does not depend on the mesh that wrote it.** Each file is one block of a
//!   tensor with its offset in the whole tensor; each block is written once (by the lowest rank
//!   of the first stage holding it); loading reassembles whole tensors from the offsets alone and
//!   fails if any element is not covered. Resuming cuts them for the new mesh, or one process.

use super::distributed::DistributedTrainer;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Reduction;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy;
use tessera_runtime::spmd::Communicator;

pub const FORMAT: &str = "tessera-checkpoint/3";
/// The formats before checksums and fingerprints: `/1` (one whole tensor per entry) and `/2`
/// (blocks). Still load, unverified, with a warning.
const UNVERIFIED_FORMATS: [&str; 2] = ["tessera-checkpoint/1", "tessera-checkpoint/2"];

/// Everything a run needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub data_position: u64,
    pub rng_state: u64,
    pub model: String,
    /// The model's fingerprint ([`crate::train::model_fingerprint`]); `None` for a checkpoint
    /// of a format before fingerprints.
    pub fingerprint: Option<String>,
    pub optimizer: String,
    /// Master weights, by name.
    pub params: Vec<(String, Tensor)>,
    /// Optimizer state, by name.
    pub optimizer_state: Vec<(String, Tensor)>,
}

/// A checkpoint's description besides its tensors (the same on every rank).
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub step: u64,
    pub data_position: u64,
    pub rng_state: u64,
    pub model: String,
    /// The model's fingerprint ([`crate::train::model_fingerprint`]).
    pub fingerprint: String,
    pub optimizer: String,
    /// The mesh that wrote it (`dp=2,tp=2`; empty for one process): informative, since a
    /// checkpoint loads on any mesh.
    pub mesh: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Param,
    Optimizer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Param => "param",
            Kind::Optimizer => "optimizer",
        }
    }
}

/// One block of a tensor: the part of the global tensor a rank holds, and where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub name: String,
    pub kind: Kind,
    /// The global tensor's shape.
    pub global_shape: Vec<usize>,
    /// Where the block starts in the global tensor, per dimension.
    pub offset: Vec<usize>,
    /// How the tensor was split (`[{}, {tp}]`), for readers; loading needs only the offsets.
    pub sharding: String,
    pub tensor: Tensor,
}

impl Block {
    /// The whole tensor as one block.
    pub fn whole(name: &str, kind: Kind, tensor: &Tensor) -> Block {
        Block {
            name: name.to_string(),
            kind,
            global_shape: tensor.shape.clone(),
            offset: vec![0; tensor.shape.len()],
            sharding: String::new(),
            tensor: tensor.clone(),
        }
    }

    /// The block's file inside the checkpoint: named by tensor and offset, not by rank, so a
    /// block that several ranks hold (replicas) has one name.
    fn file(&self) -> String {
        if self.tensor.shape == self.global_shape {
            format!("tensors/{}.npy", self.name)
        } else {
            let at: Vec<String> = self.offset.iter().map(usize::to_string).collect();
            format!("tensors/{}@{}.npy", self.name, at.join("_"))
        }
    }
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Whether `name` is a staging directory of a checkpoint write that can no longer finish: a
/// single-process `.step-N.tmp-PID` whose process is gone, or (`sharded`, called by rank 0
/// when no other save is running) a shared `.step-N.tmp`.
fn is_stale_staging(name: &str, sharded: bool) -> bool {
    let Some(rest) = name.strip_prefix(".step-") else { return false };
    let Some((_, suffix)) = rest.split_once(".tmp") else { return false };
    if suffix.is_empty() {
        return sharded;
    }
    match suffix.strip_prefix('-').and_then(|pid| pid.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// Removes the staging directories that killed checkpoint writes left under `dir`.
fn remove_stale_staging(dir: &Path, sharded: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && name.to_str().is_some_and(|n| is_stale_staging(n, sharded)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    Ok(tessera_ir::files::sync_dir(dir)?)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(tessera_ir::files::write_synced(path, bytes)?)
}

/// Writes `blocks` into `tmp/tensors` (fsynced) and returns their index entries.
fn write_blocks(tmp: &Path, blocks: &[Block]) -> Result<Vec<Value>> {
    let mut entries = Vec::new();
    for b in blocks {
        if b.name.contains('/') || b.name.contains("..") {
            bail!("tensor name '{}' cannot be a file name", b.name);
        }
        let file = b.file();
        let bytes = npy::write_npy_bytes(&b.tensor);
        write_synced(&tmp.join(&file), &bytes)?;
        entries.push(json!({
            "name": b.name,
            "file": file,
            "sha256": tessera_ir::artifact::sha256_hex(&bytes),
            "kind": b.kind.name(),
            "dtype": b.tensor.dtype.mlir_name(),
            "shape": b.global_shape,
            "block": {"offset": b.offset, "shape": b.tensor.shape, "sharding": b.sharding},
        }));
    }
    Ok(entries)
}

/// Writes `index.json` into `tmp`, then moves `tmp` to its final name under `dir`, fsyncing.
fn publish(dir: &Path, tmp: &Path, meta: &Meta, entries: Vec<Value>) -> Result<PathBuf> {
    fsync_dir(&tmp.join("tensors"))?;
    let index = json!({
        "format": FORMAT,
        "step": meta.step,
        "data_position": meta.data_position,
        "rng_state": meta.rng_state,
        "model": meta.model,
        "fingerprint": meta.fingerprint,
        "optimizer": meta.optimizer,
        "mesh": meta.mesh,
        "tensors": entries,
    });
    let text = serde_json::to_string_pretty(&index).context("index.json")?;
    write_synced(&tmp.join("index.json"), text.as_bytes())?;
    fsync_dir(tmp)?;
    let final_dir = dir.join(step_dir_name(meta.step));
    // A checkpoint of this step from an earlier run is replaced whole.
    tessera_ir::files::replace_dir(tmp, &final_dir)?;
    Ok(final_dir)
}

fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    std::fs::create_dir_all(path.join("tensors")).with_context(|| format!("{}: cannot create", path.display()))
}

/// Writes `ckpt` (one process, whole tensors) under `dir` (created if missing) and returns the
/// checkpoint's directory.
pub fn save(dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    remove_stale_staging(dir, false);
    let tmp = dir.join(format!(".{}.tmp-{}", step_dir_name(ckpt.step), std::process::id()));
    let meta = Meta {
        step: ckpt.step,
        data_position: ckpt.data_position,
        rng_state: ckpt.rng_state,
        model: ckpt.model.clone(),
        fingerprint: ckpt.fingerprint.clone().context("a checkpoint to save needs the model's fingerprint")?,
        optimizer: ckpt.optimizer.clone(),
        mesh: String::new(),
    };
    let blocks: Vec<Block> = ckpt
        .params
        .iter()
        .map(|(n, t)| Block::whole(n, Kind::Param, t))
        .chain(ckpt.optimizer_state.iter().map(|(n, t)| Block::whole(n, Kind::Optimizer, t)))
        .collect();
    let result = fresh_dir(&tmp).and_then(|_| write_blocks(&tmp, &blocks)).and_then(|e| publish(dir, &tmp, &meta, e));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Waits until every rank of `comm` arrives.
fn barrier(comm: &dyn Communicator) -> Result<()> {
    let everyone: Vec<usize> = (0..comm.size()).collect();
    comm.all_reduce(&everyone, &Tensor::scalar(DType::F64, 0.0), Reduction::Max).context("checkpoint barrier")?;
    Ok(())
}

/// Writes a sharded checkpoint: every rank of `comm` calls this with the same `meta` and the
/// blocks it is responsible for (each block of each tensor written by exactly one rank). Every
/// rank writes its blocks into a staging directory; after a barrier rank 0 merges the ranks'
/// lists into `index.json` and renames the directory into place; a second barrier lets no rank
/// go on before the checkpoint exists. `dir` must be one filesystem shared by all ranks (one
/// machine, or a cluster file system). Returns the checkpoint's directory.
pub fn save_sharded(dir: &Path, meta: &Meta, blocks: &[Block], comm: &dyn Communicator) -> Result<PathBuf> {
    let rank = comm.rank();
    // The same staging name on every rank (no pid): the ranks share it.
    let tmp = dir.join(format!(".{}.tmp", step_dir_name(meta.step)));
    if rank == 0 {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        remove_stale_staging(dir, true);
        fresh_dir(&tmp)?;
    }
    barrier(comm)?;
    let entries = write_blocks(&tmp, blocks)?;
    let list = serde_json::to_string(&entries).context("block list")?;
    write_synced(&tmp.join(format!("blocks-{rank}.json")), list.as_bytes())?;
    barrier(comm)?;
    let final_dir = dir.join(step_dir_name(meta.step));
    if rank == 0 {
        let mut all = Vec::new();
        for r in 0..comm.size() {
            let path = tmp.join(format!("blocks-{r}.json"));
            let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let list: Vec<Value> =
                serde_json::from_str(&text).with_context(|| format!("{}: not a block list", path.display()))?;
            all.extend(list);
            std::fs::remove_file(&path).with_context(|| format!("{}: cannot remove", path.display()))?;
        }
        publish(dir, &tmp, meta, all)?;
    }
    barrier(comm)?;
    Ok(final_dir)
}

/// The blocks rank `trainer.rank()` writes into a sharded checkpoint: those of the tensors it
/// holds that it is the writer of ([`DistributedTrainer::writes_shard`]: one rank per distinct
/// block), each with its offset in the whole tensor.
pub fn rank_blocks(trainer: &DistributedTrainer) -> Result<Vec<Block>> {
    let shared = &trainer.shared;
    let mesh = shared.mesh();
    let rank = trainer.rank();
    let mut blocks = Vec::new();
    for shard in trainer.rank_shards()?.iter().filter(|s| trainer.writes_shard(s)) {
        let offset = shard
            .sharding
            .dims
            .iter()
            .zip(&shard.tensor.shape)
            .map(|(axes, &len)| {
                let index =
                    if axes.is_empty() { 0 } else { mesh.index_in_group(rank, axes).map_err(anyhow::Error::msg)? };
                Ok(index as usize * len)
            })
            .collect::<Result<Vec<usize>>>()?;
        let kind = if shared.step.params.iter().any(|p| p.name == shard.name) { Kind::Param } else { Kind::Optimizer };
        let global_shape = shard
            .global
            .static_shape()
            .with_context(|| format!("'{}' has symbolic dimensions", shard.name))?
            .iter()
            .map(|&d| d as usize)
            .collect();
        blocks.push(Block {
            name: shard.name.clone(),
            kind,
            global_shape,
            offset,
            sharding: shard.sharding.to_string(),
            tensor: shard.tensor.clone(),
        });
    }
    Ok(blocks)
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

/// The `format` of an `index.json`, read before the rest.
#[derive(Deserialize)]
struct IndexFormat {
    format: String,
}

/// `index.json` as [`load`] reads it; `mesh`, and a block's `shape` and `sharding`, are
/// informative and not read.
#[derive(Deserialize)]
struct Index {
    step: u64,
    data_position: u64,
    rng_state: u64,
    model: String,
    /// Absent in the unverified formats.
    fingerprint: Option<String>,
    optimizer: String,
    tensors: Vec<IndexEntry>,
}

/// One file of a checkpoint: a whole tensor, or the block of it at `block.offset`.
#[derive(Deserialize)]
struct IndexEntry {
    name: String,
    file: String,
    /// Lowercase hex SHA-256 of the file; absent in the unverified formats.
    sha256: Option<String>,
    kind: Kind,
    dtype: String,
    /// The whole tensor's shape.
    shape: Vec<usize>,
    block: Option<IndexBlock>,
}

#[derive(Deserialize)]
struct IndexBlock {
    offset: Vec<usize>,
}

/// A global tensor being put together from its blocks.
struct Assembly {
    kind: Kind,
    shape: Vec<usize>,
    dtype: DType,
    values: Vec<f64>,
    filled: Vec<bool>,
}

/// Reads a checkpoint directory written by [`save`] or [`save_sharded`] (on any mesh): every
/// tensor is reassembled whole from its blocks.
pub fn load(ckpt_dir: &Path) -> Result<Checkpoint> {
    let index_path = ckpt_dir.join("index.json");
    let text =
        std::fs::read_to_string(&index_path).with_context(|| format!("{}: cannot read", index_path.display()))?;
    let at = index_path.display();
    // The format first, so another file says so rather than naming a missing field.
    let tag: IndexFormat = serde_json::from_str(&text).with_context(|| format!("{at}: not a checkpoint index"))?;
    let verified = tag.format == FORMAT;
    if !verified && !UNVERIFIED_FORMATS.contains(&tag.format.as_str()) {
        bail!("{at}: not a {FORMAT} checkpoint");
    }
    let index: Index = serde_json::from_str(&text).with_context(|| format!("{at}: malformed checkpoint index"))?;
    if verified && index.fingerprint.is_none() {
        bail!("{at}: a {FORMAT} index needs the model's 'fingerprint'");
    }
    if !verified {
        eprintln!(
            "warning: {at}: a {} checkpoint has no checksums or model fingerprint; its tensors and model are not verified",
            tag.format
        );
    }
    let mut order: Vec<String> = Vec::new();
    let mut tensors: HashMap<String, Assembly> = HashMap::new();
    for entry in &index.tensors {
        let IndexEntry { name, file, sha256, kind, dtype, shape, block } = entry;
        let (name, kind, shape) = (name.as_str(), *kind, shape.clone());
        if file.contains("..") || Path::new(file).is_absolute() {
            bail!("{at}: tensor file '{file}' lies outside the checkpoint");
        }
        let offset = match block {
            Some(block) => block.offset.clone(),
            None => vec![0; shape.len()],
        };
        let path = ckpt_dir.join(file);
        let bytes = npy::read_checked(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        match sha256 {
            Some(expected) => {
                let actual = tessera_ir::artifact::sha256_hex(&bytes);
                if actual != *expected {
                    bail!(
                        "{}: tensor '{name}' is corrupt: its SHA-256 is {actual}, index.json records {expected}",
                        path.display()
                    );
                }
            }
            None if verified => bail!("{at}: tensor file '{file}' has no sha256"),
            None => {}
        }
        let t = npy::read_npy_bytes(&bytes).with_context(|| format!("{}: cannot read", path.display()))?;
        let dtype = DType::from_mlir_name(dtype).with_context(|| format!("{at}: '{name}' has an unknown dtype"))?;
        let n: usize = shape.iter().product();
        let whole = tensors.entry(name.to_string()).or_insert_with(|| {
            order.push(name.to_string());
            Assembly { kind, shape: shape.clone(), dtype, values: vec![0.0; n], filled: vec![false; n] }
        });
        if whole.shape != shape || whole.kind != kind {
            bail!("{at}: the blocks of '{name}' disagree on its shape or kind");
        }
        let fits = t.shape.len() == shape.len()
            && offset.len() == shape.len()
            && offset.iter().zip(&t.shape).zip(&shape).all(|((&o, &b), &g)| o + b <= g);
        if !fits {
            bail!("{at}: a block of '{name}' ({:?} at {offset:?}) lies outside its shape {shape:?}", t.shape);
        }
        let strides = tessera_ir::tensor::strides(&shape);
        for (i, x) in t.to_f64_vec().into_iter().enumerate() {
            let index = tessera_ir::tensor::unravel(i, &t.shape);
            let flat: usize = index.iter().zip(&offset).zip(&strides).map(|((&c, &o), &s)| (c + o) * s).sum();
            whole.values[flat] = x;
            whole.filled[flat] = true;
        }
    }
    let mut params = Vec::new();
    let mut optimizer_state = Vec::new();
    for name in order {
        let Some(a) = tensors.remove(&name) else { continue };
        if !a.filled.iter().all(|&f| f) {
            bail!("{at}: the blocks of '{name}' do not cover it (a rank's files are missing)");
        }
        let t = Tensor::from_f64(a.dtype, a.shape, a.values);
        match a.kind {
            Kind::Param => params.push((name, t)),
            Kind::Optimizer => optimizer_state.push((name, t)),
        }
    }
    Ok(Checkpoint {
        step: index.step,
        data_position: index.data_position,
        rng_state: index.rng_state,
        model: index.model,
        fingerprint: index.fingerprint,
        optimizer: index.optimizer,
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
            fingerprint: Some("f00d".into()),
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
    fn sharded_saves_reassemble_whole_tensors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Tensor::from_f64(DType::F32, vec![4, 2], (0..8).map(f64::from).collect());
        let m = Tensor::from_f64(DType::F32, vec![3], vec![0.5, 0.25, -1.0]);
        let meta = Meta {
            step: 7,
            data_position: 99,
            rng_state: 12,
            model: "gpt:layers=1".into(),
            fingerprint: "f00d".into(),
            optimizer: "adamw".into(),
            mesh: "tp=2".into(),
        };
        // Rank r holds rows 2r..2r+2 of w; m is replicated and rank 1 writes it.
        let blocks = |rank: usize| {
            let rows = Tensor::from_f64(DType::F32, vec![2, 2], w.to_f64_vec()[4 * rank..4 * rank + 4].to_vec());
            let mut blocks = vec![Block {
                name: "w".into(),
                kind: Kind::Param,
                global_shape: vec![4, 2],
                offset: vec![2 * rank, 0],
                sharding: "[{tp}, {}]".into(),
                tensor: rows,
            }];
            if rank == 1 {
                blocks.push(Block::whole("w.m", Kind::Optimizer, &m));
            }
            blocks
        };
        let comms = tessera_runtime::spmd::LocalCommunicator::world(2, std::time::Duration::from_secs(20));
        let saved: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .iter()
                .enumerate()
                .map(|(rank, comm)| {
                    let (meta, blocks, dir) = (&meta, blocks(rank), dir.path());
                    s.spawn(move || save_sharded(dir, meta, &blocks, comm).expect("save"))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("no panic")).collect()
        });
        assert_eq!(saved[0], saved[1]);
        assert_eq!(latest(dir.path()).expect("latest"), saved[0]);
        let ckpt = load(&saved[0]).expect("load");
        assert_eq!((ckpt.step, ckpt.data_position, ckpt.rng_state), (7, 99, 12));
        assert_eq!(ckpt.params, vec![("w".to_string(), w)]);
        assert_eq!(ckpt.optimizer_state, vec![("w.m".to_string(), m)]);
        // A lost block is an error, not a tensor with a hole.
        std::fs::remove_file(saved[0].join("tensors/w@2_0.npy")).expect("rm");
        let err = load(&saved[0]).expect_err("incomplete");
        assert!(err.to_string().contains("cannot read") || err.to_string().contains("do not cover"), "{err}");
        let index = saved[0].join("index.json");
        let text = std::fs::read_to_string(&index).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        let kept: Vec<Value> = v["tensors"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|e| e["file"] != "tensors/w@2_0.npy")
            .cloned()
            .collect();
        let mut v = v;
        v["tensors"] = Value::Array(kept);
        std::fs::write(&index, v.to_string()).expect("write");
        let err = load(&saved[0]).expect_err("incomplete");
        assert!(err.to_string().contains("the blocks of 'w' do not cover it"), "{err}");
    }

    #[test]
    fn a_flipped_bit_is_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = save(dir.path(), &sample(2)).expect("save");
        let path = saved.join("tensors/l0.w.m.npy");
        let mut bytes = std::fs::read(&path).expect("read");
        *bytes.last_mut().expect("bytes") ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let err = load(&saved).expect_err("corrupt").to_string();
        assert!(err.contains("tensors/l0.w.m.npy: tensor 'l0.w.m' is corrupt: its SHA-256 is "), "{err}");
    }

    /// Rewrites `index.json` of `saved` through `edit`.
    fn edit_index(saved: &Path, edit: impl FnOnce(&mut Value)) {
        let index = saved.join("index.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).expect("read")).expect("json");
        edit(&mut v);
        std::fs::write(&index, v.to_string()).expect("write");
    }

    #[test]
    fn older_formats_load_unverified_and_the_current_one_needs_its_checksums() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = save(dir.path(), &sample(4)).expect("save");
        let strip = |v: &mut Value| {
            v.as_object_mut().expect("object").remove("fingerprint");
            for t in v["tensors"].as_array_mut().expect("list") {
                t.as_object_mut().expect("object").remove("sha256");
            }
        };
        edit_index(&saved, strip);
        let err = load(&saved).expect_err("no fingerprint").to_string();
        assert!(err.ends_with("a tessera-checkpoint/3 index needs the model's 'fingerprint'"), "{err}");
        edit_index(&saved, |v| v["fingerprint"] = json!("f00d"));
        let err = load(&saved).expect_err("no sha256").to_string();
        assert!(err.ends_with("tensor file 'tensors/l0.w.npy' has no sha256"), "{err}");
        edit_index(&saved, |v| {
            strip(v);
            v["format"] = json!("tessera-checkpoint/2");
        });
        let old = load(&saved).expect("a /2 checkpoint loads");
        assert_eq!(old, Checkpoint { fingerprint: None, ..sample(4) });
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

    #[test]
    fn staging_directories_of_killed_writes_are_removed_by_the_next_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A pid above the kernel's pid_max (2^22) belongs to no process; our own pid is live.
        let dead = dir.path().join(".step-00000003.tmp-4999999");
        let live = dir.path().join(format!(".step-00000003.tmp-{}", std::process::id()));
        let unrelated = dir.path().join(".notes.tmp-4999999");
        for d in [&dead, &live, &unrelated] {
            std::fs::create_dir_all(d.join("tensors")).expect("mkdir");
        }
        save(dir.path(), &sample(1)).expect("save");
        assert!(!dead.exists(), "the dead writer's staging directory is left");
        assert!(live.exists() && unrelated.exists(), "a live or unrelated directory was removed");
        assert!(is_stale_staging(".step-00000001.tmp", true));
        assert!(!is_stale_staging(".step-00000001.tmp", false));
    }
}
