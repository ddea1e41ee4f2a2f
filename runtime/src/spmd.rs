//! Multi-rank execution of per-rank programs: every rank runs its program with the reference
//! interpreter on its own thread, and collectives go through a [`Communicator`].
//!
//! [`Communicator`] is the seam for real transports: its required methods are point-to-point
//! (`send`, `recv`) and `abort`; the collectives have reference implementations on top of them
//! (every member gathers every member's operand, then computes the group semantics of
//! [`tessera_ir::ops::collective::eval_group`]), which MPI and NCCL backends override with native
//! calls. [`LocalCommunicator`] is the in-process transport: one mailbox per rank, messages keyed
//! by sender and tag.
//!
//! Failure handling: a rank that fails calls [`Communicator::abort`], which wakes every waiting
//! rank with [`CommError::PeerFailed`]; a receive that waits longer than the configured timeout
//! fails with [`CommError::Timeout`]. So a multi-rank run ends with the first real error, never
//! a hang.

use crate::interpreter::{run_with, CollectiveHandler, RunError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;
use tessera_ir::ops::collective::{eval_group, Collective, MeshAxes, Reduction};
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::TensorType;

/// What a message is matched by, besides its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// A `send`/`recv` pair's tag.
    Message(i64),
    /// Traffic of collectives: every member issues the same collectives in the same order, so
    /// first-in first-out per sender matches them.
    Collective,
}

/// Why communication failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommError {
    #[error("rank {rank} failed, so this rank stopped: {message}")]
    PeerFailed { rank: usize, message: String },
    #[error("timed out after {seconds:.1} s waiting for a message from rank {from} ({tag:?})")]
    Timeout { from: usize, tag: Tag, seconds: f64 },
    #[error("rank {rank} is outside the world of {size} ranks")]
    BadRank { rank: usize, size: usize },
    #[error("{0}")]
    Semantics(String),
}

/// Point-to-point messaging and collectives among `size` ranks. Groups are lists of global
/// ranks in member order (as [`Mesh::group`] gives them) and include the caller.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sends `t` to rank `to`; does not wait for the receiver.
    fn send(&self, to: usize, tag: Tag, t: Tensor) -> Result<(), CommError>;
    /// Receives the oldest message from `from` with `tag`, waiting for it.
    fn recv(&self, from: usize, tag: Tag) -> Result<Tensor, CommError>;
    /// Marks this run failed, so that every rank waiting in `recv` (now or later) fails promptly.
    fn abort(&self, message: &str);

    /// Every member's `t`, in group order.
    fn exchange(&self, group: &[usize], t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        for &peer in group.iter().filter(|&&p| p != self.rank()) {
            self.send(peer, Tag::Collective, t.clone())?;
        }
        group
            .iter()
            .map(|&peer| if peer == self.rank() { Ok(t.clone()) } else { self.recv(peer, Tag::Collective) })
            .collect()
    }

    /// The group semantics of `op` for this rank, after exchanging operands.
    fn collective(
        &self,
        op: &Collective,
        group: &[usize],
        t: &Tensor,
        result: &TensorType,
    ) -> Result<Tensor, CommError> {
        let member = group
            .iter()
            .position(|&r| r == self.rank())
            .ok_or_else(|| CommError::Semantics(format!("rank {} is not in its own group {group:?}", self.rank())))?;
        let all = match op {
            // No data moves: only the member's own operand matters.
            Collective::AllSlice { .. } => vec![t.clone(); group.len()],
            // Point to point: the member sends to its target and reads its source's operand
            // into the source's slot (the other slots are not read).
            Collective::CollectivePermute { pairs, .. } => {
                let mut all = vec![t.clone(); group.len()];
                let rank_of = |m: u64| {
                    group.get(m as usize).copied().ok_or_else(|| {
                        CommError::Semantics(format!("member {m} is outside a group of {}", group.len()))
                    })
                };
                for &(_, target) in pairs.iter().filter(|p| p.0 as usize == member && p.1 as usize != member) {
                    self.send(rank_of(target)?, Tag::Collective, t.clone())?;
                }
                for &(source, _) in pairs.iter().filter(|p| p.1 as usize == member && p.0 as usize != member) {
                    all[source as usize] = self.recv(rank_of(source)?, Tag::Collective)?;
                }
                all
            }
            _ => self.exchange(group, t)?,
        };
        let refs: Vec<&Tensor> = all.iter().collect();
        eval_group(op, &refs, member, result).map_err(CommError::Semantics)
    }

    fn all_reduce(&self, group: &[usize], t: &Tensor, reduction: Reduction) -> Result<Tensor, CommError> {
        let op = Collective::AllReduce { reduction, group: anonymous(group) };
        self.collective(&op, group, t, &t.tensor_type())
    }

    fn all_gather(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        let op = Collective::AllGather { dim: dim as i64, group: anonymous(group) };
        let result = local_result(&op, t)?;
        self.collective(&op, group, t, &result)
    }

    fn reduce_scatter(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        let op = Collective::ReduceScatter { dim: dim as i64, group: anonymous(group) };
        let result = local_result(&op, t)?;
        self.collective(&op, group, t, &result)
    }

    // The signature is `Communicator::all_to_all`'s, as in the MPI and NCCL overrides (the
    // duplicates tool lists the three: rustfmt cannot fit it on one line); the body is this
    // communicator's own.
    fn all_to_all(
        &self,
        group: &[usize],
        t: &Tensor,
        split_dim: usize,
        concat_dim: usize,
    ) -> Result<Tensor, CommError> {
        let op = Collective::AllToAll {
            split_dim: split_dim as i64,
            concat_dim: concat_dim as i64,
            group: anonymous(group),
        };
        let result = local_result(&op, t)?;
        self.collective(&op, group, t, &result)
    }
}

/// A group described by its size only, for the typed collective methods.
fn anonymous(group: &[usize]) -> MeshAxes {
    MeshAxes { axes: vec!["group".into()], size: group.len() as u64 }
}

fn local_result(op: &Collective, t: &Tensor) -> Result<TensorType, CommError> {
    let ty = t.tensor_type();
    let mut types = op.infer(&[&ty]).map_err(CommError::Semantics)?;
    types.pop().ok_or_else(|| CommError::Semantics(format!("tsr.{} has no result", op.mnemonic())))
}

struct Mailbox {
    queues: Mutex<HashMap<(usize, Tag), VecDeque<Tensor>>>,
    arrived: Condvar,
}

struct World {
    mailboxes: Vec<Mailbox>,
    failed: AtomicBool,
    failure: Mutex<Option<(usize, String)>>,
    timeout: Duration,
}

/// The in-process transport: ranks are threads sharing one set of mailboxes.
#[derive(Clone)]
pub struct LocalCommunicator {
    rank: usize,
    world: Arc<World>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave a queue half-updated (every update is one call), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalCommunicator {
    /// One communicator per rank of a world of `size`; `recv` gives up after `timeout`.
    pub fn world(size: usize, timeout: Duration) -> Vec<LocalCommunicator> {
        let world = Arc::new(World {
            mailboxes: (0..size)
                .map(|_| Mailbox { queues: Mutex::new(HashMap::new()), arrived: Condvar::new() })
                .collect(),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            timeout,
        });
        (0..size).map(|rank| LocalCommunicator { rank, world: world.clone() }).collect()
    }

    fn failure(&self) -> Option<CommError> {
        if !self.world.failed.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.world.failure).clone().map(|(rank, message)| CommError::PeerFailed { rank, message })
    }

    /// The first failure reported through [`Communicator::abort`]: its rank and message.
    pub fn first_failure(&self) -> Option<(usize, String)> {
        lock(&self.world.failure).clone()
    }

    /// Makes an aborted world usable again: clears the failure and drops every undelivered
    /// message (a failed round's operands, which would otherwise be taken for the next
    /// round's). Only for a caller that knows no rank is inside a send or receive (the serving
    /// mesh, between steps, once every rank has answered); a rank still communicating could
    /// lose a message.
    pub fn reset(&self) {
        let mut failure = lock(&self.world.failure);
        for mailbox in &self.world.mailboxes {
            lock(&mailbox.queues).clear();
        }
        *failure = None;
        self.world.failed.store(false, Ordering::SeqCst);
    }
}

impl Communicator for LocalCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.world.mailboxes.len()
    }

    fn send(&self, to: usize, tag: Tag, t: Tensor) -> Result<(), CommError> {
        let mailbox = self.world.mailboxes.get(to).ok_or(CommError::BadRank { rank: to, size: self.size() })?;
        lock(&mailbox.queues).entry((self.rank, tag)).or_default().push_back(t);
        mailbox.arrived.notify_all();
        Ok(())
    }

    fn recv(&self, from: usize, tag: Tag) -> Result<Tensor, CommError> {
        if from >= self.size() {
            return Err(CommError::BadRank { rank: from, size: self.size() });
        }
        let mailbox = &self.world.mailboxes[self.rank];
        let deadline = Instant::now() + self.world.timeout;
        let mut queues = lock(&mailbox.queues);
        loop {
            if let Some(t) = queues.get_mut(&(from, tag)).and_then(VecDeque::pop_front) {
                return Ok(t);
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CommError::Timeout { from, tag, seconds: self.world.timeout.as_secs_f64() });
            }
            queues = match mailbox.arrived.wait_timeout(queues, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn abort(&self, message: &str) {
        {
            let mut failure = lock(&self.world.failure);
            if failure.is_none() {
                *failure = Some((self.rank, message.to_string()));
            }
            self.world.failed.store(true, Ordering::SeqCst);
        }
        // Taking each mailbox lock orders this wake-up after any receiver's failure check.
        for mailbox in &self.world.mailboxes {
            let _guard = lock(&mailbox.queues);
            mailbox.arrived.notify_all();
        }
    }
}

/// Runs collectives of one rank's program: resolves mesh axes to groups of ranks.
struct RankCollectives<'a> {
    mesh: &'a Mesh,
    comm: &'a dyn Communicator,
}

impl CollectiveHandler for RankCollectives<'_> {
    fn execute(
        &mut self,
        op: &Collective,
        operands: &[&Tensor],
        results: &[TensorType],
    ) -> Result<Vec<Tensor>, String> {
        let rank = self.comm.rank();
        match op {
            Collective::Send { mesh_axis, peer, tag } => {
                let to = self.mesh.peer(rank, mesh_axis, *peer as u64)?;
                let t = operands.first().ok_or("send has no operand")?;
                self.comm.send(to, Tag::Message(*tag), (*t).clone()).map_err(|e| e.to_string())?;
                Ok(vec![])
            }
            Collective::Recv { mesh_axis, peer, tag, ty } => {
                let from = self.mesh.peer(rank, mesh_axis, *peer as u64)?;
                let t = self.comm.recv(from, Tag::Message(*tag)).map_err(|e| e.to_string())?;
                let fits = t.dtype == ty.dtype
                    && t.shape.len() == ty.rank()
                    && ty.dims.iter().zip(&t.shape).all(|(d, &n)| d.as_static().is_none_or(|s| s == n as u64));
                if !fits {
                    return Err(format!("received {} from rank {from} but expected {ty}", t.tensor_type()));
                }
                Ok(vec![t])
            }
            _ => {
                let axes = op.group().ok_or("collective without a group")?;
                let group = self.mesh.group(rank, &axes.axes)?;
                if group.len() as u64 != axes.size {
                    return Err(format!(
                        "group_size is {} but the mesh {} gives axes {} a group of {}",
                        axes.size,
                        self.mesh,
                        axes.joined(),
                        group.len()
                    ));
                }
                let t = operands.first().ok_or("collective has no operand")?;
                let result = results.first().ok_or("collective has no result type")?;
                let out = match op {
                    Collective::AllReduce { reduction, .. } => self.comm.all_reduce(&group, t, *reduction),
                    Collective::AllGather { dim, .. } => self.comm.all_gather(&group, t, axis(*dim, t)?),
                    Collective::ReduceScatter { dim, .. } => self.comm.reduce_scatter(&group, t, axis(*dim, t)?),
                    Collective::AllToAll { split_dim, concat_dim, .. } => {
                        self.comm.all_to_all(&group, t, axis(*split_dim, t)?, axis(*concat_dim, t)?)
                    }
                    _ => self.comm.collective(op, &group, t, result),
                }
                .map_err(|e| e.to_string())?;
                Ok(vec![out])
            }
        }
    }
}

/// A rank's way to the others, for executors of compiled per-rank programs: the mesh its
/// programs' collectives name axes of, and the communicator (whose rank is this rank of it).
#[derive(Clone)]
pub struct RankComm {
    pub mesh: Mesh,
    pub comm: Arc<dyn Communicator>,
}

impl RankComm {
    /// Runs one communication op of this rank's program, as the interpreter does in
    /// [`run_rank`]: mesh axes resolve to groups of ranks, `send`/`recv` peers to ranks.
    pub fn execute(
        &self,
        op: &Collective,
        operands: &[&Tensor],
        results: &[TensorType],
    ) -> Result<Vec<Tensor>, String> {
        RankCollectives { mesh: &self.mesh, comm: self.comm.as_ref() }.execute(op, operands, results)
    }
}

fn axis(d: i64, t: &Tensor) -> Result<usize, String> {
    tessera_ir::types::normalize_axis(d, t.shape.len())
        .ok_or_else(|| format!("dim {d} is out of range for {:?}", t.shape))
}

/// Runs one rank's program with the interpreter, its collectives going through `comm` (whose
/// rank is this rank of `mesh`). For per-rank drivers (a training step on each rank); it does
/// not abort `comm` on failure, the caller decides.
pub fn run_rank(
    mesh: &Mesh,
    graph: &Graph,
    inputs: &[(String, Tensor)],
    comm: &dyn Communicator,
) -> Result<Vec<(String, Tensor)>, RunError> {
    let mut handler = RankCollectives { mesh, comm };
    run_with(graph, inputs, Some(&mut handler))
}

/// The most bytes of computed values (activations, gradients, updated weights: every node
/// result, not the caller's inputs) that [`run_rank`] holds at once running `graph`: the
/// interpreter keeps a result from its node until its last use (a result nobody uses only while
/// its node runs), so this follows the program order exactly; a pipeline schedule changes it by
/// reordering the program. `None` when a result has a symbolic shape.
pub fn peak_live_bytes(graph: &Graph) -> Option<u64> {
    let bytes = |v: tessera_ir::graph::ValueId| -> Option<u64> {
        let ty = &graph.value(v).ty;
        Some(ty.num_elements()? * ty.dtype.size_bytes() as u64)
    };
    let mut uses = graph.use_counts();
    let mut live = 0u64;
    let mut peak = 0u64;
    let produced: std::collections::HashSet<_> = graph.nodes().flat_map(|(_, n)| n.outputs.iter().copied()).collect();
    for (_, node) in graph.nodes() {
        let mut made = 0u64;
        for &v in &node.outputs {
            made += bytes(v)?;
        }
        peak = peak.max(live + made);
        for &v in &node.outputs {
            if uses[v.index()] > 0 {
                live += bytes(v)?;
            }
        }
        for &v in &node.inputs {
            uses[v.index()] -= 1;
            if uses[v.index()] == 0 && produced.contains(&v) {
                live -= bytes(v)?;
            }
        }
    }
    Some(peak)
}

/// Settings of a multi-rank run.
#[derive(Debug, Clone)]
pub struct SpmdConfig {
    /// How long a rank waits for one message before the run fails.
    pub timeout: Duration,
}

impl Default for SpmdConfig {
    fn default() -> SpmdConfig {
        SpmdConfig { timeout: Duration::from_secs(60) }
    }
}

/// One rank's program and its local inputs (by name).
pub struct RankProgram<'a> {
    pub graph: &'a Graph,
    pub inputs: Vec<(String, Tensor)>,
}

/// Why a multi-rank run failed: the rank that failed first and its error (the others stop with
/// "rank N failed").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpmdError {
    #[error("{ranks} programs given for a mesh of {devices} devices")]
    WrongRankCount { ranks: usize, devices: usize },
    #[error("rank {rank}: {error}")]
    Rank { rank: usize, error: RunError },
    #[error("rank {rank} panicked")]
    Panicked { rank: usize },
}

/// Runs `programs[r]` as rank `r` of `mesh`, each on its own thread, and returns every rank's
/// outputs. The first failing rank's error is returned; the others are released promptly.
pub fn run_spmd(
    mesh: &Mesh,
    programs: &[RankProgram<'_>],
    config: &SpmdConfig,
) -> Result<Vec<Vec<(String, Tensor)>>, SpmdError> {
    let devices = mesh.num_devices();
    if programs.len() != devices {
        return Err(SpmdError::WrongRankCount { ranks: programs.len(), devices });
    }
    let comms = LocalCommunicator::world(devices, config.timeout);
    let results: Vec<Result<Vec<(String, Tensor)>, SpmdError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = programs
            .iter()
            .zip(&comms)
            .enumerate()
            .map(|(rank, (program, comm))| {
                scope.spawn(move || {
                    let mut handler = RankCollectives { mesh, comm };
                    let out = run_with(program.graph, &program.inputs, Some(&mut handler));
                    if let Err(e) = &out {
                        comm.abort(&e.to_string());
                    }
                    out.map_err(|error| SpmdError::Rank { rank, error })
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join().unwrap_or_else(|_| {
                    comms[rank].abort("panicked");
                    Err(SpmdError::Panicked { rank })
                })
            })
            .collect()
    });
    // Report the root cause: the rank that failed first, not those it released.
    if let Some((first, _)) = comms.first().and_then(LocalCommunicator::first_failure) {
        if let Some(Err(e)) = results.get(first) {
            return Err(e.clone());
        }
    }
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::dtype::DType;

    #[test]
    fn a_failing_rank_releases_the_others_promptly() {
        let comms = LocalCommunicator::world(2, Duration::from_secs(30));
        let start = Instant::now();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| comms[1].recv(0, Tag::Message(3)));
            std::thread::sleep(Duration::from_millis(20));
            comms[0].abort("boom");
            let err = waiter.join().expect("no panic").expect_err("released");
            assert_eq!(err, CommError::PeerFailed { rank: 0, message: "boom".into() });
        });
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// After an abort, `reset` gives a world that delivers again, without the failed round's
    /// leftover message (rank 1's operand that rank 0 never took).
    #[test]
    fn a_reset_world_forgets_the_failure_and_the_failed_round() {
        let comms = LocalCommunicator::world(2, Duration::from_millis(200));
        let stale = Tensor::from_f32(vec![1], vec![1.0]);
        comms[1].send(0, Tag::Collective, stale).expect("sent");
        comms[0].abort("rank 0's program failed");
        assert_eq!(comms[1].first_failure(), Some((0, "rank 0's program failed".into())));
        comms[0].reset();
        assert_eq!(comms[1].first_failure(), None);
        assert!(matches!(comms[0].recv(1, Tag::Collective), Err(CommError::Timeout { from: 1, .. })));
        let fresh = Tensor::from_f32(vec![1], vec![2.0]);
        comms[1].send(0, Tag::Collective, fresh.clone()).expect("sent");
        assert_eq!(comms[0].recv(1, Tag::Collective).expect("delivered"), fresh);
    }

    /// The interpreter's free rule, by hand: a result lives from its node to its last use
    /// (or to the end, for an output); a chain holds two values at once, two chains joined at
    /// the end three.
    #[test]
    fn peak_live_bytes_follows_the_free_rule() {
        use tessera_ir::graph::InputRole;
        use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
        use tessera_ir::ops::Op;
        let ty = TensorType::of_static(DType::F32, &[4]); // 16 bytes
        let mut chain = Graph::new("chain");
        let x = chain.add_input("x", ty.clone(), InputRole::Activation);
        let mut v = x;
        for _ in 0..3 {
            v = chain.add(Op::Unary(UnaryOp::Exp), &[v]).expect("exp");
        }
        chain.set_outputs(vec![v]);
        assert_eq!(peak_live_bytes(&chain), Some(32));
        let mut joined = Graph::new("joined");
        let x = joined.add_input("x", ty, InputRole::Activation);
        let a = joined.add(Op::Unary(UnaryOp::Neg), &[x]).expect("neg");
        let mut b = x;
        for _ in 0..3 {
            b = joined.add(Op::Unary(UnaryOp::Exp), &[b]).expect("exp");
        }
        let sum = joined.add(Op::Binary(BinaryOp::Add), &[a, b]).expect("add");
        joined.set_outputs(vec![sum]);
        // `a` waits through the whole chain: 16 + 32 during it, 48 at the sum.
        assert_eq!(peak_live_bytes(&joined), Some(48));
    }

    #[test]
    fn receives_time_out_instead_of_hanging() {
        let comms = LocalCommunicator::world(2, Duration::from_millis(50));
        let err = comms[0].recv(1, Tag::Collective).expect_err("nobody sends");
        assert!(matches!(err, CommError::Timeout { from: 1, .. }), "{err}");
    }

    #[test]
    fn typed_collectives_follow_the_group_semantics() {
        let comms = LocalCommunicator::world(2, Duration::from_secs(10));
        let outs: Vec<Tensor> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let t = Tensor::from_f64(DType::F32, vec![2], vec![c.rank() as f64 + 1.0, 10.0]);
                        let sum = c.all_reduce(&[0, 1], &t, Reduction::Sum).expect("all_reduce");
                        c.all_gather(&[0, 1], &sum, 0).expect("all_gather")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("no panic")).collect()
        });
        for out in outs {
            assert_eq!(out.to_f64_vec(), [3.0, 20.0, 3.0, 20.0]);
        }
    }
}
