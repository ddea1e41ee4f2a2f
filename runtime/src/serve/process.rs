//! Tensor-parallel ranks as processes (one per rank, launched by `mpirun`): rank 0 leads,
//! the others follow.
//!
//! Rank 0 owns the scheduler (and the HTTP server in `tessera serve`); its engine is a
//! [`LeaderEngine`]: every call that changes the ranks' state (adding or releasing a sequence,
//! a step) is first sent to every other rank as a command, then run on rank 0's own
//! [`Engine`]. The other ranks run [`follow`]: they apply the commands in the order sent, so
//! their sequence ids, block tables and caches stay those of rank 0 (as the threads of
//! [`super::mesh::MeshEngine`] do), and meet rank 0 in each layer's all-reduces.
//!
//! Commands travel as `i64` tensors on one message tag (point-to-point, first in first out):
//! `[ADD]`, `[RELEASE, seq]`, `[STEP, items, seq, n, tokens..., ...]`, `[UNDO]`, `[STOP]`. A follower
//! waits for the next command without a deadline (an idle server sends nothing), since a
//! leader that dies ends the job through the launcher.
//!
//! A step that fails on a rank (a program error) is undone on every rank and the ranks serve
//! on, as the threads of a mesh do, without aborting the communicator (which for MPI is
//! `MPI_Abort`, ending the job): the failing rank joins its peers' next all-reduce with the
//! error in place of its partial sum ([`Engine::announce_failures`]), so every rank leaves
//! that all-reduce with [`ServeError::RankFailed`] naming it and undoes the step. MPI cannot
//! cancel a collective a peer never joins, hence announcing rather than aborting. The one
//! failure past a step's last all-reduce is rank 0's head: the leader then sends `UNDO`, and
//! the followers undo the step they finished ([`Engine::undo_last_step`]); a head failure in
//! an earlier run of the step is announced at the next run's first all-reduce. A failure of
//! the communicator itself (a deadline, a lost peer) and a panic still end the job
//! (`MPI_Abort` with the message; a rank killed outright is noticed by `mpirun`, which kills
//! the rest). Dropping the leader sends `STOP`, so a server that shuts down ends its followers
//! with exit 0.

use super::engine::{Engine, KvUsage, SeqId, ServingEngine};
use super::ServeError;
use crate::spmd::{CommError, Communicator, Tag};
use std::sync::Arc;
use std::time::Duration;
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Reduction;
use tessera_ir::serving::ServeManifest;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::TensorType;

/// The tag of the leader's commands (the engine's all-reduces are collectives, apart).
const COMMAND_TAG: Tag = Tag::Message(0x5e_7e);
const ADD: i64 = 0;
const RELEASE: i64 = 1;
const STEP: i64 = 2;
const STOP: i64 = 3;
const UNDO: i64 = 4;

/// A shared communicator as the owned one [`Engine::rank`] takes: every call forwarded, the
/// native collectives included.
pub struct SharedCommunicator(pub Arc<dyn Communicator>);

impl Communicator for SharedCommunicator {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn send(&self, to: usize, tag: Tag, t: Tensor) -> Result<(), CommError> {
        self.0.send(to, tag, t)
    }
    fn recv(&self, from: usize, tag: Tag) -> Result<Tensor, CommError> {
        self.0.recv(from, tag)
    }
    fn abort(&self, message: &str) {
        self.0.abort(message)
    }
    fn exchange(&self, group: &[usize], t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        self.0.exchange(group, t)
    }
    fn collective(
        &self,
        op: &tessera_ir::ops::collective::Collective,
        group: &[usize],
        t: &Tensor,
        result: &TensorType,
    ) -> Result<Tensor, CommError> {
        self.0.collective(op, group, t, result)
    }
    fn all_reduce(&self, group: &[usize], t: &Tensor, reduction: Reduction) -> Result<Tensor, CommError> {
        self.0.all_reduce(group, t, reduction)
    }
    fn all_gather(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        self.0.all_gather(group, t, dim)
    }
    fn reduce_scatter(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        self.0.reduce_scatter(group, t, dim)
    }
    fn all_to_all(&self, group: &[usize], t: &Tensor, split: usize, concat: usize) -> Result<Tensor, CommError> {
        self.0.all_to_all(group, t, split, concat)
    }
}

/// Rank 0's engine in a job of processes (see the module doc).
pub struct LeaderEngine {
    engine: Engine,
    comm: Arc<dyn Communicator>,
}

impl LeaderEngine {
    /// `engine` is rank 0's, built with `comm` (as a [`SharedCommunicator`]).
    pub fn new(engine: Engine, comm: Arc<dyn Communicator>) -> LeaderEngine {
        LeaderEngine { engine, comm }
    }

    /// Sends `command` to every follower. A send that fails ends the job: the followers could
    /// no longer mirror rank 0.
    fn tell(&self, command: Vec<i64>) -> Result<(), ServeError> {
        let t = Tensor::from_i64(DType::I64, vec![command.len()], command);
        for rank in 1..self.comm.size() {
            if let Err(e) = self.comm.send(rank, COMMAND_TAG, t.clone()) {
                self.comm.abort(&format!("tensor-parallel rank 0 cannot reach rank {rank}: {e}"));
                return Err(ServeError::RankLost { rank, message: format!("cannot be reached: {e}") });
            }
        }
        Ok(())
    }
}

impl ServingEngine for LeaderEngine {
    fn manifest(&self) -> &ServeManifest {
        self.engine.manifest()
    }

    fn add_sequence(&mut self) -> SeqId {
        // A failed send has aborted the job; the id is rank 0's either way.
        let _ = self.tell(vec![ADD]);
        self.engine.add_sequence()
    }

    fn release(&mut self, seq: SeqId) {
        let _ = self.tell(vec![RELEASE, seq as i64]);
        self.engine.release(seq)
    }

    fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError> {
        let mut command = vec![STEP, work.len() as i64];
        for &(seq, tokens) in work {
            command.extend([seq as i64, tokens.len() as i64]);
            command.extend(tokens.iter().map(|&t| i64::from(t)));
        }
        self.tell(command)?;
        let result = self.engine.step(work);
        if result.is_err() {
            // A failure past the step's last all-reduce (rank 0's head) is rank 0's alone:
            // the followers finished the step, so they undo it (a no-op where it failed or was
            // refused there too).
            self.tell(vec![UNDO])?;
        }
        result
    }

    fn kv_usage(&self) -> KvUsage {
        // Every rank holds its key/value heads of the same blocks: a block is the mesh's.
        let kv = self.engine.kv_usage();
        KvUsage { block_bytes: kv.block_bytes * self.comm.size(), ..kv }
    }

    fn weight_bytes(&self) -> usize {
        // Rank 0's: the others' are in their own processes.
        self.engine.weight_bytes()
    }

    fn all_reduce_time(&self) -> Duration {
        self.engine.all_reduce_time()
    }
}

impl Drop for LeaderEngine {
    fn drop(&mut self) {
        let _ = self.tell(vec![STOP]);
    }
}

/// A follower's loop (ranks other than 0): applies rank 0's commands to `engine` until
/// `STOP`. A step's own error needs nothing here but a line on stderr: a refusal is rank 0's
/// too, and a program failure has been announced to every rank (or aborted the job).
pub fn follow(engine: &mut Engine, comm: &dyn Communicator) -> Result<(), ServeError> {
    loop {
        let command = match comm.recv(0, COMMAND_TAG) {
            Ok(t) => t,
            // Idle: no request is running.
            Err(CommError::Timeout { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let Buffer::Int(words) = &command.data else {
            return Err(ServeError::Invalid("a leader's command that is not integers".into()));
        };
        let bad = || ServeError::Invalid(format!("a malformed command from rank 0: {words:?}"));
        match words.first().copied() {
            Some(ADD) => {
                engine.add_sequence();
            }
            Some(RELEASE) => engine.release(*words.get(1).ok_or_else(bad)? as SeqId),
            Some(STEP) => {
                let items = *words.get(1).ok_or_else(bad)? as usize;
                let mut work: Vec<(SeqId, Vec<u32>)> = Vec::with_capacity(items);
                let mut at = 2;
                for _ in 0..items {
                    let (seq, n) = match words.get(at..at + 2) {
                        Some(&[seq, n]) => (seq as SeqId, n as usize),
                        _ => return Err(bad()),
                    };
                    let tokens = words.get(at + 2..at + 2 + n).ok_or_else(bad)?;
                    work.push((seq, tokens.iter().map(|&t| t as u32).collect()));
                    at += 2 + n;
                }
                let work: Vec<(SeqId, &[u32])> = work.iter().map(|(seq, tokens)| (*seq, &tokens[..])).collect();
                match engine.step(&work) {
                    // A refusal is rank 0's too, and a failure on any rank (this one's
                    // announced) is undone on every rank: rank 0 answers for the step.
                    Ok(_) | Err(ServeError::RankFailed { .. }) => {}
                    Err(e) if e.is_refusal() => {}
                    Err(e) => eprintln!(
                        "tessera: tensor-parallel rank {}: a step failed and was undone on every rank: {e}",
                        comm.rank()
                    ),
                }
            }
            Some(UNDO) => engine.undo_last_step(),
            Some(STOP) => return Ok(()),
            _ => return Err(bad()),
        }
    }
}
