//! The MPI transport: [`MpiCommunicator`] implements [`Communicator`] for one rank per process,
//! launched by `mpirun` (OpenMPI) or `srun`.
//!
//! Messages: a tensor travels as one byte buffer (a length-prefixed JSON header with dtype and
//! shape, then the elements in their [`crate::wire`] type for moving: f64 for `f64`, f32 for
//! `f32` and fp8, the 16 bits of bf16/f16, i64 for integers and booleans), so a received tensor
//! equals the sent one bit for bit; the receiver learns dtype and shape from the header.
//!
//! Nothing blocks without a deadline. Sends are `MPI_Isend`s whose buffers this side keeps
//! until they complete (so two ranks that send to each other before receiving never deadlock,
//! whatever the message size). Receives poll `MPI_Improbe` until the configured timeout.
//! Collectives run on a sub-communicator per group (`MPI_Comm_create_group`: only the members
//! take part, created on first use and cached; members meet their groups' collectives in the
//! same order, so they create them in the same order too) as native non-blocking MPI
//! collectives on typed buffers (see [`crate::wire`]: no value changes on the wire; bf16/f16
//! move as their 16 bits and are summed as f64, integers travel as i64 and are summed as u64
//! so they wrap), polled the same way:
//! `all_reduce` is `MPI_Iallreduce` (sum, or max with NaN carried by a second max over 0/1
//! flags, since `MPI_MAX` need not propagate it), `all_gather` `MPI_Iallgather`,
//! `reduce_scatter` `MPI_Ireduce_scatter_block`, `all_to_all` `MPI_Ialltoall`, [`broadcast`]
//! `MPI_Ibcast`; gathers and scatters along an inner axis pack and unpack member-major blocks.
//! Before moving data, members compare a fingerprint of their operand's dtype and shape (one
//! `MPI_Iallgather` of a u64), so a mismatch is an error, not a read past a buffer. Only
//! collectives without a typed method (`Communicator::collective` called directly) exchange
//! whole operands (`MPI_Iallgatherv`) and apply [`tessera_ir::ops::collective::eval_group`].
//! [`MpiCommunicator::native_calls`] counts which path ran.
//!
//! [`broadcast`]: MpiCommunicator::broadcast
//!
//! Failures: [`Communicator::abort`] prints its message and calls `MPI_Abort`, which ends every
//! process of the job. A peer that dies without aborting (killed, crashed) is noticed by
//! OpenMPI 4.1's `mpirun`, which then kills the remaining processes within about a second
//! (checked by `tests/e2e/mpi.rs`); the receive deadline is the second line of defence, for
//! launchers that do not.
//!
//! Threads: MPI is initialized with `MPI_THREAD_SERIALIZED` and every MPI call happens under one
//! lock, so the communicator may be shared between threads. Waiting releases the lock between
//! polls.
//!
//! # Communicators: which collective goes where, and their invariants
//!
//! **`runtime`**: the reference interpreter and `.npy` I/O. `spmd` runs per-rank programs on
//! threads: `Communicator` (rank, size, send/recv, abort; collectives with reference
//! implementations over point-to-point that MPI/NCCL backends override) and `LocalCommunicator`
//! (mailboxes keyed by sender and tag); `run_rank` runs one rank's program over any
//! communicator. Two multi-process transports follow; `nccl::Transport::open(mpi|nccl)`
//! starts one (`tessera train --comm`, `tessera comm-test --comm`; MPI unless asked: the step runs
//! on the host, and every rank of a job must use the same transport, which a per-rank guess from
//! local GPUs could not promise).
//!
//! *Communicator section: which collective goes where.*
//!
//! | call | `MpiCommunicator` (host memory) | `NcclCommunicator` (one GPU per rank) |
//! |---|---|---|
//! | `all_reduce` sum / max | `MPI_Iallreduce` `SUM` / `MAX` (+ a `MAX` of 0/1 NaN flags) | `ncclAllReduce` `ncclSum` / `ncclMax` (+ NaN flags) |
//! | `all_gather` (any dim) | `MPI_Iallgather`, then unpack member-major blocks | `ncclAllGather`, same unpacking |
//! | `reduce_scatter` (any dim) | pack blocks member-major, `MPI_Ireduce_scatter_block` | same packing, `ncclReduceScatter` |
//! | `all_to_all` | pack, `MPI_Ialltoall`, unpack | pack, grouped `ncclSend`/`ncclRecv`, unpack |
//! | `broadcast` (inherent method, no IR op) | `MPI_Ibcast` | `ncclBroadcast` |
//! | `send`/`recv` (pipeline) | `MPI_Isend` / polled `MPI_Improbe` + receive of the exact byte wire form (JSON dtype/shape header, raw elements) | over MPI, as on the left |
//! | `collective` of another op, `exchange` | `MPI_Iallgatherv` of wire forms, then `eval_group` | over MPI |
//!
//! `mpi::MpiCommunicator`: rsmpi over OpenMPI, one rank per process under `mpirun`/`srun`
//! (`launched_world_size`, `launched_local_rank` read the launcher's environment: OpenMPI's,
//! PMI's or PMIx's size variable, else Slurm's `SLURM_STEP_NUM_TASKS`, which only a job step's
//! tasks have, never a batch script, so a process that no launcher started as a rank is never taken
//! for one; `tests/e2e/srun.rs` checks `srun --mpi=pmix` on a throwaway cluster from
//! `scripts/slurm-local.sh`, which keeps all its state in one directory); collectives
//! run on a per-group sub-communicator made with `MPI_Comm_create_group` (only members take
//! part) and cached. `nccl::NcclCommunicator` wraps one: `availability()` probes libcuda and
//! libnccl *before* MPI starts (so `--comm nccl` fails on every rank with "NCCL needs a CUDA
//! driver: no CUDA driver found" or "NCCL needs libnccl: libnccl not found"); the GPU is the local
//! rank (launcher variable, else an `MPI_COMM_TYPE_SHARED` split); one NCCL communicator per
//! group: member 0's `ncclGetUniqueId` is `MPI_Ibcast` over the group's MPI communicator, then
//! `ncclCommInitRank(member)`. Operands are staged host→device on the rank's stream, results
//! copied back. Invariants:
//! - **Wire types keep values** (`runtime::wire`): f64 as f64, f32 as f32; bf16/f16 move as
//!   their 16 bits (`ncclBfloat16`/`ncclFloat16`, `MPI_UINT16_T`), are maxed as f32 and summed as
//!   f64 (rounded to the dtype once, as `eval_group` does); integers as i64, summed as u64 bits
//!   (wraps like `wrapping_add`). Float sums differ from the reference only by addition order.
//! - **Members agree on the operand before data moves**: every native collective first
//!   `MPI_Iallgather`s a 64-bit fingerprint of (dtype, shape); a mismatch is a `CommError`, never
//!   a read past a shorter buffer.
//! - **Max propagates NaN** although `MPI_MAX`/`ncclMax` need not: NaNs become -inf and a second
//!   max over 0/1 flags puts them back.
//! - **Deadlines everywhere**: MPI requests are polled (`MPI_Test`) until `--comm-timeout`, their
//!   buffers leaked on a timeout; NCCL work is polled through an event and
//!   `ncclCommGetAsyncError`, and a timeout or asynchronous error calls `ncclCommAbort` and drops
//!   that communicator; `abort` aborts the NCCL communicators (when no collective holds them)
//!   before `MPI_Abort`. `ncclCommInitRank` (blocking until all members join) runs on a helper
//!   thread that the caller waits for with the deadline.
//! - **Pipeline messages never deadlock**: sends do not wait for receivers, receives match by
//!   sender and tag. NCCL p2p cannot promise either (it matches in issue order and blocks the
//!   stream until both sides meet), so `send`/`recv` stay on MPI in the NCCL transport.
//! - `native_calls()` counts each kind; `tessera comm-test` reports them (`"native"` in JSON) and
//!   the e2e test asserts every typed collective ran natively and `exchange` never did.
//!
//! `abort` prints and calls `MPI_Abort`. `tessera comm-test` checks either transport against
//! `LocalCommunicator` under `mpirun`. Not verified here: the NCCL path has never run on a GPU in
//! this project (no GPU machine); it compiles, fails cleanly without a driver, and its layout and
//! type mapping are unit-tested; `tests/e2e/mpi.rs` runs `comm-test --comm nccl` where two GPUs
//! and libnccl exist.
//!
//! - **No rank waits forever.** Under MPI every receive and collective is non-blocking and polled
//!   against `--comm-timeout` (NCCL work too, aborting its communicator on a timeout); a failing rank calls `MPI_Abort`. A rank that dies (SIGKILL, OOM)
//!   is noticed by OpenMPI 4.1's `mpirun`, which kills the rest of the job within about a second
//!   (tested: `tests/e2e/mpi.rs`); a rank that hangs without dying is caught by the others'
//!   deadlines, whose abort ends the job. Test-only fault injection: `TESSERA_FAULT=RANK:STEP`
//!   (SIGKILL) or `RANK:STEP:hang` (SIGSTOP), read by `tessera train` and `tessera comm-test`.

use crate::spmd::{CommError, Communicator, Tag};
use crate::wire::{signature, Elements, Use, Wire};
use ::mpi::ffi;
use ::mpi::topology::{Communicator as _, Group as _, SimpleCommunicator};
use ::mpi::traits::{AsRaw, MatchedReceiveVec, Source};
use ::mpi::Threading;
use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Reduction;
use tessera_ir::tensor::Tensor;

/// Why the MPI transport could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MpiError {
    #[error("MPI is already initialized in this process (one MpiCommunicator per process)")]
    AlreadyInitialized,
}

/// The MPI tag of collective traffic between two ranks; message tags start above it.
const COLLECTIVE_TAG: c_int = 0;
/// The smallest upper bound on tags that MPI guarantees (`MPI_TAG_UB` >= 32767).
const MAX_TAG: c_int = 32767;

/// The world size the launcher announced, without initializing MPI: `mpirun` (OpenMPI) sets
/// `OMPI_COMM_WORLD_SIZE`, MPICH's Hydra `PMI_SIZE`, PMIx launchers `PMIX_SIZE`. Slurm's `srun`
/// sets none of these (its PMIx plugin exports only `PMIX_RANK` and the server's address) but
/// `SLURM_STEP_NUM_TASKS`, the task count of this job step. Not `SLURM_NTASKS`: a batch script
/// has that too, and a `tessera` it starts directly is one process, not a rank.
/// `None` for a process started by hand.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| v.trim().parse::<usize>().ok()))
}

/// This process's index among the ranks on its node, as the launcher announced it (OpenMPI's
/// `OMPI_COMM_WORLD_LOCAL_RANK`, Slurm's `SLURM_LOCALID`, MPICH's `MPI_LOCALRANKID`).
pub fn launched_local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| v.trim().parse::<usize>().ok()))
}

/// A pending `MPI_Isend` and the buffer it reads from, which must outlive it.
struct PendingSend {
    request: ffi::MPI_Request,
    _buffer: Vec<u8>,
}

/// MPI state; only touched under [`MpiCommunicator::state`]'s lock.
struct State {
    world: SimpleCommunicator,
    /// Sub-communicators by group (global ranks in member order).
    groups: HashMap<Vec<usize>, SimpleCommunicator>,
    sends: Vec<PendingSend>,
}

// SAFETY: MPI handles are process-wide and valid on any thread. MPI is initialized with at least
// MPI_THREAD_SERIALIZED (checked in `init`) and every use of a `State` happens under the
// communicator's mutex, so no two threads ever call MPI at once.
unsafe impl Send for State {}

/// One rank of an MPI job; see the module documentation.
pub struct MpiCommunicator {
    // Field order is drop order: communicators and pending sends go before MPI_Finalize.
    state: Mutex<State>,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Collectives run, by [`Native`] kind.
    calls: [AtomicU64; Native::ALL.len()],
    _universe: ::mpi::environment::Universe,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every MPI call under the lock either completes or aborts the process; a panic elsewhere
    // leaves the state consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls `poll` until it reports completion or `timeout` passes. The first polls only yield
/// the core (a message usually arrives within microseconds); later ones sleep, from 10 µs up to
/// 200 µs, so ranks oversubscribing a node leave the cores to those that compute.
pub(crate) fn poll_until<T>(timeout: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    const YIELDS: u32 = 64;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(10);
    for attempt in 0u32.. {
        if let Some(done) = poll() {
            return Some(done);
        }
        if Instant::now() >= deadline {
            return None;
        }
        if attempt < YIELDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_micros(200));
        }
    }
    None
}

fn to_c_int(n: usize, what: &str) -> Result<c_int, CommError> {
    c_int::try_from(n).map_err(|_| CommError::Semantics(format!("{what} of {n} does not fit MPI's int counts")))
}

impl MpiCommunicator {
    /// Initializes MPI; receives and collectives fail with [`CommError::Timeout`] after `timeout`.
    pub fn init(timeout: Duration) -> Result<MpiCommunicator, MpiError> {
        let (universe, provided) =
            ::mpi::initialize_with_threading(Threading::Serialized).ok_or(MpiError::AlreadyInitialized)?;
        let world = universe.world();
        if matches!(provided, Threading::Single | Threading::Funneled) {
            // The MPI library promises less than we lock for: tell the user rather than guess.
            eprintln!(
                "tessera: warning: MPI provides thread level {provided:?}; use the communicator from the main thread only"
            );
        }
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiCommunicator {
            state: Mutex::new(State { world, groups: HashMap::new(), sends: Vec::new() }),
            rank,
            size,
            timeout,
            calls: Default::default(),
            _universe: universe,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Polls `request` until it completes or the deadline passes. On a timeout the request stays
    /// pending, so the caller must leak (not free) the buffers it uses. The error names `peer`
    /// (the first other member): MPI does not say which member is late.
    fn wait(&self, request: &mut ffi::MPI_Request, peer: usize) -> Result<(), CommError> {
        let done = poll_until(self.timeout, || {
            let _state = lock(&self.state);
            let mut flag: c_int = 0;
            // SAFETY: `request` is an active request from this process (or already null).
            unsafe { ffi::MPI_Test(request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            (flag != 0).then_some(())
        });
        done.ok_or(CommError::Timeout { from: peer, tag: Tag::Collective, seconds: self.timeout.as_secs_f64() })
    }

    /// Frees the buffers of sends that have completed.
    fn reap_sends(state: &mut State) {
        state.sends.retain_mut(|send| {
            let mut flag: c_int = 0;
            // SAFETY: each pending request is active until MPI_Test reports it complete.
            unsafe { ffi::MPI_Test(&mut send.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            flag == 0
        });
    }

    fn mpi_tag(tag: Tag) -> Result<c_int, CommError> {
        match tag {
            Tag::Collective => Ok(COLLECTIVE_TAG),
            Tag::Message(t) if (0..i64::from(MAX_TAG)).contains(&t) => Ok(t as c_int + 1),
            Tag::Message(t) => {
                Err(CommError::Semantics(format!("message tag {t} is outside MPI's range 0..{}", MAX_TAG - 1)))
            }
        }
    }

    fn check_rank(&self, rank: usize) -> Result<c_int, CommError> {
        if rank < self.size {
            Ok(rank as c_int)
        } else {
            Err(CommError::BadRank { rank, size: self.size })
        }
    }

    /// The raw communicator of `group` (created collectively by its members on first use) and
    /// this rank's position in it.
    fn group_comm(&self, group: &[usize]) -> Result<(ffi::MPI_Comm, usize), CommError> {
        let member = group
            .iter()
            .position(|&r| r == self.rank)
            .ok_or_else(|| CommError::Semantics(format!("rank {} is not in its own group {group:?}", self.rank)))?;
        for &r in group {
            self.check_rank(r)?;
        }
        let mut state = lock(&self.state);
        if group.iter().copied().eq(0..self.size) {
            return Ok((state.world.as_raw(), member));
        }
        if let Some(comm) = state.groups.get(group) {
            return Ok((comm.as_raw(), member));
        }
        let ranks: Vec<::mpi::Rank> = group.iter().map(|&r| r as ::mpi::Rank).collect();
        let mpi_group = state.world.group().include(&ranks);
        // Only the members call this (MPI_Comm_create_group), so groups that do not share a
        // rank never wait for each other.
        let comm = state.world.split_by_subgroup_with_tag(&mpi_group, 1).ok_or_else(|| {
            CommError::Semantics(format!("MPI gave rank {} no communicator for group {group:?}", self.rank))
        })?;
        let raw = comm.as_raw();
        state.groups.insert(group.to_vec(), comm);
        Ok((raw, member))
    }
}

impl Drop for MpiCommunicator {
    fn drop(&mut self) {
        // MPI_Finalize must not run under pending sends; they complete as soon as their
        // receivers take them, which in a finished run they all have.
        let timeout = self.timeout;
        let _ = poll_until(timeout, || {
            let mut state = lock(&self.state);
            MpiCommunicator::reap_sends(&mut state);
            state.sends.is_empty().then_some(())
        });
        let mut state = lock(&self.state);
        if !state.sends.is_empty() {
            eprintln!("tessera: rank {}: {} sends never completed; their buffers leak", self.rank, state.sends.len());
            std::mem::forget(std::mem::take(&mut state.sends));
        }
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&self, to: usize, tag: Tag, t: Tensor) -> Result<(), CommError> {
        let dest = self.check_rank(to)?;
        let mpi_tag = Self::mpi_tag(tag)?;
        let buffer = encode(&t);
        let count = to_c_int(buffer.len(), "a message")?;
        let mut state = lock(&self.state);
        Self::reap_sends(&mut state);
        let mut request = null_request();
        // SAFETY: the buffer moves into `state.sends` (a Vec's heap block does not move) and is
        // freed only after MPI_Test reports the send complete.
        unsafe {
            ffi::MPI_Isend(
                buffer.as_ptr() as *const c_void,
                count,
                ffi::RSMPI_UINT8_T,
                dest,
                mpi_tag,
                state.world.as_raw(),
                &mut request,
            )
        };
        state.sends.push(PendingSend { request, _buffer: buffer });
        Ok(())
    }

    fn recv(&self, from: usize, tag: Tag) -> Result<Tensor, CommError> {
        let source = self.check_rank(from)?;
        let mpi_tag = Self::mpi_tag(tag)?;
        let bytes = poll_until(self.timeout, || {
            let mut state = lock(&self.state);
            Self::reap_sends(&mut state);
            let probe = state.world.process_at_rank(source).immediate_matched_probe_with_tag(mpi_tag);
            probe.map(|matched| matched.matched_receive_vec::<u8>().0)
        })
        .ok_or(CommError::Timeout { from, tag, seconds: self.timeout.as_secs_f64() })?;
        decode(&bytes).map_err(|e| CommError::Semantics(format!("a message from rank {from}: {e}")))
    }

    fn abort(&self, message: &str) {
        eprintln!("tessera: rank {} of {}: aborting the MPI job: {message}", self.rank, self.size);
        // Not under the lock: a thread may hold it while waiting, and MPI_Abort must not wait.
        // SAFETY: MPI_Abort on the world communicator ends every process of the job.
        unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, 1) };
    }

    fn exchange(&self, group: &[usize], t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        if group.len() == 1 && group[0] == self.rank {
            return Ok(vec![t.clone()]);
        }
        self.count(Native::Exchange);
        let (comm, member) = self.group_comm(group)?;
        let peer = group.iter().copied().find(|&r| r != self.rank).unwrap_or(self.rank);
        let mine = encode(t);
        // Sizes first, so members whose operands differ in size still meet (and then fail the
        // shape check of the group semantics instead of truncating).
        let my_len = [mine.len() as u64];
        let mut lens = vec![0u64; group.len()];
        let mut request = null_request();
        {
            let _state = lock(&self.state);
            // SAFETY: both buffers outlive the request: on a timeout they are leaked below.
            unsafe {
                ffi::MPI_Iallgather(
                    my_len.as_ptr() as *const c_void,
                    1,
                    ffi::RSMPI_UINT64_T,
                    lens.as_mut_ptr() as *mut c_void,
                    1,
                    ffi::RSMPI_UINT64_T,
                    comm,
                    &mut request,
                )
            };
        }
        if let Err(e) = self.wait(&mut request, peer) {
            std::mem::forget(lens);
            return Err(e);
        }
        let counts = lens.iter().map(|&n| to_c_int(n as usize, "an operand")).collect::<Result<Vec<_>, _>>()?;
        let mut displs = Vec::with_capacity(counts.len());
        let mut total: usize = 0;
        for &c in &counts {
            displs.push(to_c_int(total, "the gathered operands")?);
            total += c as usize;
        }
        let mut all = vec![0u8; total];
        let mut request = null_request();
        {
            let _state = lock(&self.state);
            // SAFETY: as above; `counts` and `displs` must stay alive until completion too.
            unsafe {
                ffi::MPI_Iallgatherv(
                    mine.as_ptr() as *const c_void,
                    counts[member],
                    ffi::RSMPI_UINT8_T,
                    all.as_mut_ptr() as *mut c_void,
                    counts.as_ptr(),
                    displs.as_ptr(),
                    ffi::RSMPI_UINT8_T,
                    comm,
                    &mut request,
                )
            };
        }
        if let Err(e) = self.wait(&mut request, peer) {
            std::mem::forget((mine, all, counts, displs));
            return Err(e);
        }
        displs
            .iter()
            .zip(&counts)
            .zip(group)
            .map(|((&at, &n), &from)| {
                decode(&all[at as usize..at as usize + n as usize])
                    .map_err(|e| CommError::Semantics(format!("the operand of rank {from}: {e}")))
            })
            .collect()
    }

    fn all_reduce(&self, group: &[usize], t: &Tensor, reduction: Reduction) -> Result<Tensor, CommError> {
        let Some(call) = self.native_call(group, t)? else { return Ok(t.clone()) };
        let sum = reduction == Reduction::Sum;
        let mut send = Elements::of(t, Wire::of(t.dtype, if sum { Use::Sum } else { Use::Max }));
        // MPI_MAX need not propagate NaN; the flags (max of 0/1 per element) carry it.
        let nans = (!sum && send.wire() != Wire::I64).then(|| send.take_nans());
        let (count, datatype) = (to_c_int(send.len(), "a tensor")?, mpi_datatype(send.wire(), sum));
        // SAFETY: RSMPI_SUM and RSMPI_MAX are constants the MPI library initializes before
        // MPI_Init returns (which `MpiCommunicator` has called); reading them copies a handle.
        let op = if sum { unsafe { ffi::RSMPI_SUM } } else { unsafe { ffi::RSMPI_MAX } };
        let recv = Elements::zeros(send.wire(), send.len());
        // SAFETY: `send` and `recv` both hold `count` elements of `datatype`, and `nonblocking`
        // keeps them alive until the request completes (leaking them on a timeout).
        let (_, mut out) = self.nonblocking(call.peer, (send, recv), |(send, recv), request| unsafe {
            ffi::MPI_Iallreduce(send.as_ptr(), recv.as_mut_ptr(), count, datatype, op, call.comm, request)
        })?;
        if let Some(flags) = nans {
            let any = vec![0u8; flags.len()];
            // SAFETY: one u8 flag per element in both buffers (`count` of them), kept alive by
            // `nonblocking` until the request completes.
            let (_, any) = self.nonblocking(call.peer, (flags, any), |(flags, any), request| unsafe {
                ffi::MPI_Iallreduce(
                    flags.as_ptr().cast(),
                    any.as_mut_ptr().cast(),
                    count,
                    ffi::RSMPI_UINT8_T,
                    ffi::RSMPI_MAX,
                    call.comm,
                    request,
                )
            })?;
            out.restore_nans(&any);
        }
        self.count(Native::AllReduce);
        Ok(out.into_tensor(t.dtype, t.shape.clone()))
    }

    fn all_gather(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        check_axis(t, dim)?;
        let Some(call) = self.native_call(group, t)? else { return Ok(t.clone()) };
        let g = group.len();
        let send = Elements::of(t, Wire::of(t.dtype, Use::Move));
        let (count, datatype) = (to_c_int(send.len(), "a tensor")?, mpi_datatype(send.wire(), false));
        let recv = Elements::zeros(send.wire(), send.len() * g);
        // SAFETY: `recv` holds `count` elements for each of the `g` members, `send` holds
        // `count`; `nonblocking` keeps both alive until the request completes.
        let (_, gathered) = self.nonblocking(call.peer, (send, recv), |(send, recv), request| unsafe {
            ffi::MPI_Iallgather(send.as_ptr(), count, datatype, recv.as_mut_ptr(), count, datatype, call.comm, request)
        })?;
        let mut shape = t.shape.clone();
        shape[dim] *= g;
        self.count(Native::AllGather);
        Ok(gathered.concat_blocks(&t.shape, dim, g).into_tensor(t.dtype, shape))
    }

    fn reduce_scatter(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        check_divisible(t, dim, group.len(), "reduce_scatter")?;
        let Some(call) = self.native_call(group, t)? else { return Ok(t.clone()) };
        let g = group.len();
        let send = Elements::of(t, Wire::of(t.dtype, Use::Sum)).split_blocks(&t.shape, dim, g);
        let (count, datatype) = (to_c_int(send.len() / g, "a block")?, mpi_datatype(send.wire(), true));
        let recv = Elements::zeros(send.wire(), send.len() / g);
        // SAFETY: `send` holds `g` blocks of `count` elements and `recv` one block; both stay
        // alive until the request completes (`nonblocking` leaks them on a timeout).
        let (_, block) = self.nonblocking(call.peer, (send, recv), |(send, recv), request| unsafe {
            ffi::MPI_Ireduce_scatter_block(
                send.as_ptr(),
                recv.as_mut_ptr(),
                count,
                datatype,
                ffi::RSMPI_SUM,
                call.comm,
                request,
            )
        })?;
        let mut shape = t.shape.clone();
        shape[dim] /= g;
        self.count(Native::ReduceScatter);
        Ok(block.into_tensor(t.dtype, shape))
    }

    // The signature is `Communicator::all_to_all`'s; the checks and the reassembly of the
    // received blocks are shared with the NCCL override; only the transfer (MPI_Ialltoall) is
    // MPI's own.
    fn all_to_all(
        &self,
        group: &[usize],
        t: &Tensor,
        split_dim: usize,
        concat_dim: usize,
    ) -> Result<Tensor, CommError> {
        check_all_to_all(t, split_dim, concat_dim, group.len())?;
        let Some(call) = self.native_call(group, t)? else { return Ok(t.clone()) };
        let g = group.len();
        let send = Elements::of(t, Wire::of(t.dtype, Use::Move)).split_blocks(&t.shape, split_dim, g);
        let (count, datatype) = (to_c_int(send.len() / g, "a block")?, mpi_datatype(send.wire(), false));
        let recv = Elements::zeros(send.wire(), send.len());
        // SAFETY: `send` and `recv` both hold `g` blocks of `count` elements; `nonblocking` keeps
        // them alive until the request completes.
        let (_, blocks) = self.nonblocking(call.peer, (send, recv), |(send, recv), request| unsafe {
            ffi::MPI_Ialltoall(send.as_ptr(), count, datatype, recv.as_mut_ptr(), count, datatype, call.comm, request)
        })?;
        self.count(Native::AllToAll);
        Ok(all_to_all_result(blocks, t, split_dim, concat_dim, g))
    }
}

/// The collectives that run as native MPI calls; [`MpiCommunicator::native_calls`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    Broadcast,
    /// Operands exchanged whole (`MPI_Iallgatherv`) for the reference group semantics: only
    /// collectives without a native path (none of the typed methods) come here.
    Exchange,
}

impl Native {
    pub const ALL: [Native; 6] = [
        Native::AllReduce,
        Native::AllGather,
        Native::ReduceScatter,
        Native::AllToAll,
        Native::Broadcast,
        Native::Exchange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Native::AllReduce => "all_reduce",
            Native::AllGather => "all_gather",
            Native::ReduceScatter => "reduce_scatter",
            Native::AllToAll => "all_to_all",
            Native::Broadcast => "broadcast",
            Native::Exchange => "exchange",
        }
    }
}

/// The group communicator of a native collective and the rank a timeout blames.
#[derive(Clone, Copy)]
pub(crate) struct GroupCall {
    pub(crate) comm: ffi::MPI_Comm,
    pub(crate) peer: usize,
}

fn mpi_datatype(wire: Wire, sum: bool) -> ffi::MPI_Datatype {
    // SAFETY: reading MPI's predefined datatype handles.
    unsafe {
        match wire {
            Wire::F32 => ffi::RSMPI_FLOAT,
            Wire::F64 => ffi::RSMPI_DOUBLE,
            // Unsigned addition wraps (signed overflow is undefined in C), on the same bits.
            Wire::I64 if sum => ffi::RSMPI_UINT64_T,
            Wire::I64 => ffi::RSMPI_INT64_T,
            Wire::Bits16 => ffi::RSMPI_UINT16_T,
        }
    }
}

pub(crate) fn check_axis(t: &Tensor, dim: usize) -> Result<(), CommError> {
    if dim < t.shape.len() {
        Ok(())
    } else {
        Err(CommError::Semantics(format!("dim {dim} is out of range for {}", t.tensor_type())))
    }
}

pub(crate) fn check_divisible(t: &Tensor, dim: usize, g: usize, op: &str) -> Result<(), CommError> {
    check_axis(t, dim)?;
    if t.shape[dim] % g == 0 {
        Ok(())
    } else {
        Err(CommError::Semantics(format!(
            "tsr.{op}: dim {dim} of {} does not split into {g} equal blocks",
            t.tensor_type()
        )))
    }
}

/// Checks an `all_to_all` operand for a group of `g`: `split_dim` cuts `t` into `g` equal
/// blocks and `concat_dim` is one of its axes.
pub(crate) fn check_all_to_all(t: &Tensor, split_dim: usize, concat_dim: usize, g: usize) -> Result<(), CommError> {
    check_divisible(t, split_dim, g, "all_to_all")?;
    check_axis(t, concat_dim)
}

/// The result of an `all_to_all` of `t` over a group of `g` from the `received` blocks (one per
/// member, member-major): the blocks concatenated along `concat_dim`.
pub(crate) fn all_to_all_result(
    received: Elements,
    t: &Tensor,
    split_dim: usize,
    concat_dim: usize,
    g: usize,
) -> Tensor {
    let mut block_shape = t.shape.clone();
    block_shape[split_dim] /= g;
    let out = received.concat_blocks(&block_shape, concat_dim, g);
    let mut shape = block_shape;
    shape[concat_dim] *= g;
    out.into_tensor(t.dtype, shape)
}

impl MpiCommunicator {
    /// How many collectives of each kind ran, natively or through the exchange.
    pub fn native_calls(&self) -> Vec<(&'static str, u64)> {
        Native::ALL.iter().map(|&n| (n.name(), self.calls[n as usize].load(Ordering::Relaxed))).collect()
    }

    fn count(&self, what: Native) {
        self.calls[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Starts one non-blocking MPI operation under the lock and waits for it with the deadline.
    /// `buffers` are what it reads and writes: on a timeout they are leaked, as MPI may still
    /// use them.
    fn nonblocking<B>(
        &self,
        peer: usize,
        mut buffers: B,
        start: impl FnOnce(&mut B, &mut ffi::MPI_Request) -> c_int,
    ) -> Result<B, CommError> {
        let mut request = null_request();
        {
            let _state = lock(&self.state);
            // MPI's default error handler aborts the job on a failed call, so the return code
            // is always success here.
            start(&mut buffers, &mut request);
        }
        match self.wait(&mut request, peer) {
            Ok(()) => Ok(buffers),
            Err(e) => {
                std::mem::forget(buffers);
                Err(e)
            }
        }
    }

    /// The group communicator for a native collective over `group` whose members contribute
    /// tensors like `t`, after checking that they all do (same dtype and shape: MPI would
    /// otherwise read past the shorter buffers). `None` for a group of this rank alone.
    pub(crate) fn native_call(&self, group: &[usize], t: &Tensor) -> Result<Option<GroupCall>, CommError> {
        if group.len() == 1 && group[0] == self.rank {
            return Ok(None);
        }
        let (comm, member) = self.group_comm(group)?;
        let peer = group.iter().copied().find(|&r| r != self.rank).unwrap_or(self.rank);
        let mine = [signature(t)];
        let all = vec![0u64; group.len()];
        // SAFETY: `mine` holds one u64 and `all` one per group member, the counts passed; both
        // stay alive until the request completes.
        let (_, all) = self.nonblocking(peer, (mine, all), |(mine, all), request| unsafe {
            ffi::MPI_Iallgather(
                mine.as_ptr().cast(),
                1,
                ffi::RSMPI_UINT64_T,
                all.as_mut_ptr().cast(),
                1,
                ffi::RSMPI_UINT64_T,
                comm,
                request,
            )
        })?;
        if let Some(other) = all.iter().position(|&s| s != mine[0]) {
            return Err(CommError::Semantics(format!(
                "group member {other} (rank {}) contributes another dtype or shape than member {member}'s {}",
                group[other],
                t.tensor_type()
            )));
        }
        Ok(Some(GroupCall { comm, peer }))
    }

    /// `t` of the group's member `root` on every member (`MPI_Ibcast`); every member passes a
    /// tensor of the same dtype and shape, whose values only matter on the root.
    pub fn broadcast(&self, group: &[usize], root: usize, t: &Tensor) -> Result<Tensor, CommError> {
        if root >= group.len() {
            return Err(CommError::Semantics(format!("broadcast root {root} is outside a group of {}", group.len())));
        }
        let Some(call) = self.native_call(group, t)? else { return Ok(t.clone()) };
        let data = Elements::of(t, Wire::of(t.dtype, Use::Move));
        let (count, datatype) = (to_c_int(data.len(), "a tensor")?, mpi_datatype(data.wire(), false));
        // SAFETY: every member's `data` holds `count` elements of `datatype` (checked by
        // `native_call`) and stays alive until the request completes.
        let data = self.nonblocking(call.peer, data, |data, request| unsafe {
            ffi::MPI_Ibcast(data.as_mut_ptr(), count, datatype, root as c_int, call.comm, request)
        })?;
        self.count(Native::Broadcast);
        Ok(data.into_tensor(t.dtype, t.shape.clone()))
    }

    /// `bytes` of the group's member `root` on every member, which all pass buffers of the same
    /// length (the NCCL transport sends its unique ids this way).
    pub fn broadcast_bytes(&self, group: &[usize], root: usize, bytes: Vec<u8>) -> Result<Vec<u8>, CommError> {
        if group.len() == 1 {
            return Ok(bytes);
        }
        let (comm, _) = self.group_comm(group)?;
        let peer = group.get(root).copied().unwrap_or(self.rank);
        let count = to_c_int(bytes.len(), "a message")?;
        // SAFETY: `bytes` holds `count` bytes and `nonblocking` keeps it alive until the
        // request completes; members pass equal lengths (this function's contract).
        self.nonblocking(peer, bytes, |bytes, request| unsafe {
            ffi::MPI_Ibcast(bytes.as_mut_ptr().cast(), count, ffi::RSMPI_UINT8_T, root as c_int, comm, request)
        })
    }

    /// This rank's index among the ranks on its node: from the launcher (OpenMPI's
    /// `OMPI_COMM_WORLD_LOCAL_RANK`, Slurm's `SLURM_LOCALID`, MPICH's `MPI_LOCALRANKID`), else
    /// from an `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)` split (collective over the world:
    /// every rank must ask at the same point).
    pub fn local_rank(&self) -> usize {
        if let Some(local) = launched_local_rank() {
            return local;
        }
        let state = lock(&self.state);
        // SAFETY: RSMPI_COMM_NULL is a constant handle the MPI library defines; reading it copies it.
        let mut node: ffi::MPI_Comm = unsafe { ffi::RSMPI_COMM_NULL };
        let mut local: c_int = 0;
        // SAFETY: collective over the world, which every rank calls at start-up; the new
        // communicator is freed before returning.
        unsafe {
            ffi::MPI_Comm_split_type(
                state.world.as_raw(),
                ffi::RSMPI_COMM_TYPE_SHARED as c_int,
                self.rank as c_int,
                ffi::RSMPI_INFO_NULL,
                &mut node,
            );
            ffi::MPI_Comm_rank(node, &mut local);
            ffi::MPI_Comm_free(&mut node);
        }
        local as usize
    }
}

/// A fresh request handle for a non-blocking call to fill in.
fn null_request() -> ffi::MPI_Request {
    // SAFETY: RSMPI_REQUEST_NULL is a constant handle the MPI library defines (the rsmpi shim
    // exports it as a static); reading it copies the handle and nothing writes to it.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

/// The wire form of a tensor; see the module documentation.
pub fn encode(t: &Tensor) -> Vec<u8> {
    let header = serde_json::json!({"dtype": t.dtype, "shape": t.shape}).to_string();
    let elements = Elements::of(t, Wire::of(t.dtype, Use::Move));
    let mut out = Vec::with_capacity(4 + header.len() + elements.len() * elements.wire().width());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &elements {
        Elements::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Elements::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Elements::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Elements::Bits16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

/// The JSON header of a tensor's wire form.
#[derive(serde::Deserialize)]
struct WireHeader {
    dtype: DType,
    shape: Vec<usize>,
}

/// A tensor from its wire form.
pub fn decode(bytes: &[u8]) -> Result<Tensor, String> {
    let header_len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the message is shorter than its header length")?;
    let header = bytes.get(4..4 + header_len).ok_or("the message is shorter than its header")?;
    let WireHeader { dtype, shape } = serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    let data = &bytes[4 + header_len..];
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("the shape overflows")?;
    let wire = Wire::of(dtype, Use::Move);
    if Some(data.len()) != n.checked_mul(wire.width()) {
        return Err(format!("{} data bytes for {n} elements of {}", data.len(), dtype.mlir_name()));
    }
    fn read<const W: usize, T>(data: &[u8], from: fn([u8; W]) -> T) -> Vec<T> {
        data.chunks_exact(W).map(|c| from(c.try_into().unwrap_or([0; W]))).collect()
    }
    let elements = match wire {
        Wire::F32 => Elements::F32(read(data, f32::from_le_bytes)),
        Wire::F64 => Elements::F64(read(data, f64::from_le_bytes)),
        Wire::I64 => Elements::I64(read(data, i64::from_le_bytes)),
        Wire::Bits16 => Elements::Bits16(read(data, u16::from_le_bytes)),
    };
    Ok(elements.into_tensor(dtype, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_round_trips_every_dtype_exactly() {
        let cases = [
            Tensor::from_f64(DType::F64, vec![2], vec![0.1, -1e300]),
            Tensor::from_f64(DType::F32, vec![1, 2], vec![0.1, f64::INFINITY]),
            Tensor::from_f64(DType::BF16, vec![3], vec![1.0 / 3.0, -2.5, 1e-3]),
            Tensor::from_f64(DType::F16, vec![], vec![0.333]),
            Tensor::from_i64(DType::I64, vec![2], vec![i64::MIN, 7]),
            Tensor::from_i64(DType::I32, vec![2, 1], vec![-3, 1 << 30]),
            Tensor::from_i64(DType::Bool, vec![2], vec![1, 0]),
            Tensor::zeros(DType::F32, vec![0, 4]),
            Tensor::from_f64(DType::F8E4M3, vec![2], vec![0.5, -448.0]),
        ];
        for t in cases {
            assert_eq!(decode(&encode(&t)).expect("decodes"), t);
        }
    }

    #[test]
    fn sixteen_bit_floats_travel_as_two_bytes() {
        let t = Tensor::from_f64(DType::BF16, vec![100], vec![1.5; 100]);
        let f = Tensor::from_f64(DType::F32, vec![100], vec![1.5; 100]);
        assert_eq!(encode(&f).len() - encode(&t).len(), 200 + "f32".len() - "bf16".len());
    }

    #[test]
    fn truncated_messages_are_errors() {
        let bytes = encode(&Tensor::from_f64(DType::F32, vec![4], vec![1.0; 4]));
        assert!(decode(&bytes[..bytes.len() - 1]).expect_err("short").contains("data bytes"));
        assert!(decode(&bytes[..2]).is_err());
    }
}
