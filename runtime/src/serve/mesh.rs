//! Tensor-parallel serving: one [`Engine`] rank per thread, joined by a
//! [`LocalCommunicator`], driven in lockstep through the [`ServingEngine`] interface.
//!
//! Every rank receives the same calls in the same order (adding and releasing sequences,
//! steps), so their block allocators, block tables and sequence ids stay identical without
//! being exchanged: one scheduler decides for the whole mesh, and a KV-cache block is one
//! logical block spanning every rank's key/value heads. A step runs on all ranks at once; they
//! meet in the two all-reduces of each layer, and rank 0 returns the logits.
//!
//! A step refused before it runs (unknown sequence, out of blocks, too long) is refused alike
//! by every rank.
//!
//! Failures never hang and never outlive their cause:
//! - A program failing on one rank (an error) aborts the communicator, so its peers' pending
//!   all-reduce returns at once, and every rank undoes the step. Once all ranks have answered,
//!   the mesh resets the communicator (clearing the failure and the failed round's undelivered
//!   operands): the step's requests get the error, naming the rank, and the next step runs.
//! - A rank that panics is caught at its thread (`catch_unwind`), which aborts the
//!   communicator the same way, so its peers return at once too. Its engine may be half-way
//!   through the step, so the mesh is lost: this and every later call fail with
//!   [`ServeError::RankLost`] naming the rank. The owner ends (`tessera generate` exits 1; the
//!   server fails every request with a 503 and exits 1 so that a supervisor restarts it).
//! - A rank's thread that is gone is lost the same way.

use super::engine::{Engine, Fault, KvUsage, SeqId, ServingEngine};
use super::ServeError;
use crate::spmd::{Communicator, LocalCommunicator};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tessera_ir::serving::ServeManifest;

/// Builds rank `rank`'s engine on that rank's thread (an [`Engine`] is not `Send`), with the
/// communicator it must pass to [`Engine::rank`].
pub type RankBuilder = dyn Fn(usize, Box<dyn Communicator>) -> Result<Engine, ServeError> + Send + Sync;

/// How long a rank waits for a peer's part of an all-reduce before failing: a step's ranks run
/// the same programs on the same rows, so a peer this late has died or hung.
const PEER_TIMEOUT: Duration = Duration::from_secs(300);

type Job = Box<dyn FnOnce(&mut Engine) + Send>;

struct RankThread {
    jobs: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

/// Tensor-parallel ranks on threads, as one [`ServingEngine`] (see the module doc).
pub struct MeshEngine {
    manifest: ServeManifest,
    ranks: Vec<RankThread>,
    /// A handle on the ranks' communicator, to stop them all when one thread is gone.
    comm: LocalCommunicator,
    /// Sequence ids as every rank's engine hands them out (0, 1, 2, ...).
    next_seq: SeqId,
    /// KV-cache block bytes summed over the ranks.
    block_bytes: usize,
    weight_bytes: usize,
    /// The last KV usage read from rank 0 (answered again if rank 0 has stopped).
    last_kv: Cell<KvUsage>,
    /// Rank 0's all-reduce time after the last step.
    all_reduce_time: Duration,
    /// The first rank lost (panicked, or its thread gone) and why: the mesh runs nothing after.
    lost: RefCell<Option<(usize, String)>>,
}

/// What a rank's job sends back: its result, or the message of the panic that ended it.
type Answer = (usize, Result<Box<dyn Any + Send>, String>);

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl MeshEngine {
    /// Starts `ranks` threads, each building its engine with `build`; returns once every rank
    /// is built, or the first rank's error.
    pub fn start(ranks: usize, build: std::sync::Arc<RankBuilder>) -> Result<MeshEngine, ServeError> {
        if ranks == 0 {
            return Err(ServeError::Invalid("a mesh of no ranks".into()));
        }
        let comms = LocalCommunicator::world(ranks, PEER_TIMEOUT);
        let comm = comms[0].clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(ranks);
        for (rank, rank_comm) in comms.into_iter().enumerate() {
            let (jobs, job_rx) = mpsc::channel::<Job>();
            let (build, ready) = (build.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("tp-rank-{rank}"))
                .spawn(move || {
                    let mut engine = match build(rank, Box::new(rank_comm)) {
                        Ok(engine) => engine,
                        Err(e) => {
                            let _ = ready.send((rank, Err(e)));
                            return;
                        }
                    };
                    let sizes = (engine.kv_usage(), engine.weight_bytes(), engine.manifest().clone());
                    if ready.send((rank, Ok(sizes))).is_err() {
                        return;
                    }
                    drop(ready);
                    for job in job_rx {
                        job(&mut engine);
                    }
                })
                .map_err(|e| ServeError::Invalid(format!("cannot start rank {rank}'s thread: {e}")))?;
            threads.push(RankThread { jobs, thread: Some(thread) });
        }
        drop(ready_tx);
        let mut built: Vec<Option<(KvUsage, usize, ServeManifest)>> = vec![None; ranks];
        let mut first_error: Option<(usize, ServeError)> = None;
        for (rank, result) in ready_rx.iter().take(ranks) {
            match result {
                Ok(sizes) => built[rank] = Some(sizes),
                Err(e) if first_error.as_ref().is_none_or(|(r, _)| rank < *r) => first_error = Some((rank, e)),
                Err(_) => {}
            }
        }
        if let Some((rank, e)) = first_error {
            return Err(ServeError::Invalid(format!("tensor-parallel rank {rank}: {e}")));
        }
        let built: Vec<(KvUsage, usize, ServeManifest)> = built.into_iter().flatten().collect();
        let Some((kv, _, manifest)) = built.first().cloned().filter(|_| built.len() == ranks) else {
            comm.abort("a rank's thread ended while building its engine");
            return Err(ServeError::Invalid("a tensor-parallel rank's thread ended while building its engine".into()));
        };
        let block_bytes = built.iter().map(|b| b.0.block_bytes).sum();
        let mesh = MeshEngine {
            manifest,
            ranks: threads,
            comm,
            next_seq: 0,
            block_bytes,
            weight_bytes: built.iter().map(|b| b.1).sum(),
            last_kv: Cell::new(KvUsage { block_bytes, ..kv }),
            all_reduce_time: Duration::ZERO,
            lost: RefCell::new(None),
        };
        Ok(mesh)
    }

    pub fn ranks(&self) -> usize {
        self.ranks.len()
    }

    /// The error of a lost mesh, if it is lost.
    fn lost_error(&self) -> Option<ServeError> {
        self.lost
            .borrow()
            .as_ref()
            .map(|(rank, message)| ServeError::RankLost { rank: *rank, message: message.clone() })
    }

    /// Runs `f` on every rank at once; returns each rank's result in rank order. A rank that
    /// panics (caught on its thread, which aborts the communicator so that its peers stop
    /// waiting for it) or whose thread is gone loses the mesh: [`ServeError::RankLost`].
    fn on_all<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Engine) -> T + Clone + Send + 'static,
    ) -> Result<Vec<T>, ServeError> {
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        let (tx, rx) = mpsc::channel::<Answer>();
        for (rank, thread) in self.ranks.iter().enumerate() {
            let (f, tx, comm) = (f.clone(), tx.clone(), self.comm.clone());
            let job: Job = Box::new(move |engine| {
                let answer = match std::panic::catch_unwind(AssertUnwindSafe(|| f(engine))) {
                    Ok(value) => Ok(Box::new(value) as Box<dyn Any + Send>),
                    Err(payload) => {
                        let message = format!("panicked: {}", panic_message(payload.as_ref()));
                        comm.abort(&format!("tensor-parallel rank {rank} {message}"));
                        Err(message)
                    }
                };
                let _ = tx.send((rank, answer));
            });
            if thread.jobs.send(job).is_err() {
                return Err(self.lose(rank, "its thread has stopped".into()));
            }
        }
        drop(tx);
        let mut results: Vec<Option<T>> = (0..self.ranks.len()).map(|_| None).collect();
        let mut panicked: Option<(usize, String)> = None;
        for (rank, answer) in rx.iter().take(self.ranks.len()) {
            match answer {
                Ok(value) => results[rank] = value.downcast::<T>().ok().map(|v| *v),
                Err(message) => {
                    panicked.get_or_insert((rank, message));
                }
            }
        }
        if let Some((rank, message)) = panicked {
            return Err(self.lose(rank, message));
        }
        let missing = results.iter().position(Option::is_none);
        if let Some(rank) = missing {
            return Err(self.lose(rank, "its thread has stopped".into()));
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Runs `f` on every rank without waiting for it.
    fn on_all_async(&self, f: impl Fn(&mut Engine) + Clone + Send + 'static) {
        if self.lost.borrow().is_some() {
            return;
        }
        for (rank, thread) in self.ranks.iter().enumerate() {
            let (f, comm) = (f.clone(), self.comm.clone());
            let job: Job = Box::new(move |engine| {
                if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| f(engine))) {
                    let message = panic_message(payload.as_ref());
                    comm.abort(&format!("tensor-parallel rank {rank} panicked: {message}"));
                }
            });
            if thread.jobs.send(job).is_err() {
                self.lose(rank, "its thread has stopped".into());
                return;
            }
        }
    }

    /// Marks the mesh lost through `rank` (the first loss is the one reported) and stops every
    /// rank's collectives; returns the error.
    fn lose(&self, rank: usize, message: String) -> ServeError {
        let mut lost = self.lost.borrow_mut();
        let (rank, message) = lost.get_or_insert((rank, message)).clone();
        self.comm.abort(&format!("tensor-parallel rank {rank} {message}"));
        ServeError::RankLost { rank, message }
    }
}

impl ServingEngine for MeshEngine {
    fn manifest(&self) -> &ServeManifest {
        &self.manifest
    }

    fn add_sequence(&mut self) -> SeqId {
        let expected = self.next_seq;
        self.next_seq += 1;
        let comm = self.comm.clone();
        self.on_all_async(move |engine| {
            let id = engine.add_sequence();
            if id != expected {
                // The ranks' calls diverged: nothing they compute can be trusted any more.
                comm.abort(&format!("a rank numbered a sequence {id}, the mesh {expected}"));
            }
        });
        expected
    }

    fn release(&mut self, seq: SeqId) {
        self.on_all_async(move |engine| engine.release(seq));
    }

    fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError> {
        let owned: Vec<(SeqId, Vec<u32>)> = work.iter().map(|&(seq, tokens)| (seq, tokens.to_vec())).collect();
        let results = self.on_all(move |engine| {
            let work: Vec<(SeqId, &[u32])> = owned.iter().map(|(seq, tokens)| (*seq, &tokens[..])).collect();
            (engine.step(&work), engine.all_reduce_time())
        })?;
        if let Some(&(_, time)) = results.first() {
            self.all_reduce_time = time;
        }
        // The cause rather than its echo: a rank whose program failed, not the peers it stopped.
        let echo = |e: &ServeError| matches!(e, ServeError::Collective(crate::spmd::CommError::PeerFailed { .. }));
        let mut errors: Vec<ServeError> = Vec::new();
        let mut logits = None;
        for (result, _) in results {
            match result {
                Ok(rank_logits) => {
                    logits.get_or_insert(rank_logits);
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(at) = errors.iter().position(|e| !echo(e)).or((!errors.is_empty()).then_some(0)) {
            // Every rank has answered and undone the step: nothing is in flight, so the
            // communicator can forget the failure and the next step can run.
            let cause = self.comm.first_failure();
            self.comm.reset();
            // A failure past the step's last all-reduce (rank 0's head) left the other ranks'
            // part of the step done: they undo it too (a no-op where the step failed).
            self.on_all_async(|engine| engine.undo_last_step());
            let error = errors.swap_remove(at);
            return Err(match (error, cause) {
                // Name the rank whose failure stopped the others.
                (ServeError::Collective(crate::spmd::CommError::PeerFailed { rank, message }), _) => {
                    ServeError::RankFailed { rank, message }
                }
                (error, Some((rank, _))) => ServeError::RankFailed { rank, message: error.to_string() },
                (error, None) => error,
            });
        }
        logits.ok_or_else(|| ServeError::Invalid("no rank answered the step".into()))
    }

    fn kv_usage(&self) -> KvUsage {
        let rank0 = self.ranks.first().filter(|_| self.lost.borrow().is_none()).map(|thread| {
            let (tx, rx) = mpsc::channel();
            let job: Job = Box::new(move |engine| {
                let _ = tx.send(engine.kv_usage());
            });
            thread.jobs.send(job).ok().and_then(|()| rx.recv().ok())
        });
        if let Some(Some(kv)) = rank0 {
            self.last_kv.set(KvUsage { block_bytes: self.block_bytes, ..kv });
        }
        self.last_kv.get()
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn all_reduce_time(&self) -> Duration {
        self.all_reduce_time
    }
}

impl MeshEngine {
    /// [`Engine::fail_forward_after`] on every rank (the same run fails on all of them).
    pub fn fail_forward_after(&mut self, runs: usize) {
        self.on_all_async(move |engine| engine.fail_forward_after(runs));
    }

    /// [`Engine::inject_fault`] on rank `rank` alone: its peers meet the fault in their
    /// all-reduces. A `rank` outside the mesh injects nothing.
    pub fn inject_fault(&mut self, rank: usize, runs: usize, fault: Fault) {
        if let Some(thread) = self.ranks.get(rank) {
            let _ = thread.jobs.send(Box::new(move |engine| engine.inject_fault(runs, fault)));
        }
    }
}

impl Drop for MeshEngine {
    fn drop(&mut self) {
        for rank in &mut self.ranks {
            // Closing the job queue ends the rank's loop.
            let (closed, _) = mpsc::channel();
            rank.jobs = closed;
            if let Some(thread) = rank.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
