//! The MPI transport: [`MpiCommunicator`] implements [`Communicator`] for one rank per process,
//! launched by `mpirun` (OpenMPI) or `srun`.
//!
//! Messages: a tensor travels as one byte buffer (a length-prefixed JSON header with dtype and
//! shape, then the elements: f64 for `f64`, f32 for the narrower floats, which hold them
//! exactly, i64 for integers and booleans), so a received tensor equals the sent one bit for bit.
//!
//! Nothing blocks without a deadline. Sends are `MPI_Isend`s whose buffers this side keeps
//! until they complete (so two ranks that send to each other before receiving never deadlock,
//! whatever the message size). Receives poll `MPI_Improbe` until the configured timeout.
//! Collectives run on a sub-communicator per group (`MPI_Comm_create_group`: only the members
//! take part, created on first use and cached; members meet their groups' collectives in the
//! same order, so they create them in the same order too) with non-blocking MPI collectives
//! polled the same way: `all_reduce` (sum of f32/f64) is `MPI_Iallreduce`; every other
//! collective exchanges operands with `MPI_Iallgatherv` and applies the group semantics of
//! [`tessera_ir::ops::collective::eval_group`] locally, exactly as the in-process transport does.
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

use crate::spmd::{CommError, Communicator, Tag};
use ::mpi::ffi;
use ::mpi::topology::{Communicator as _, Group as _, SimpleCommunicator};
use ::mpi::traits::{AsRaw, MatchedReceiveVec, Source};
use ::mpi::Threading;
use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Reduction;
use tessera_ir::tensor::{Buffer, Tensor};

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
fn poll_until<T>(timeout: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
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
            _universe: universe,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Polls `request` until it completes or the deadline passes. On a timeout the request stays
    /// pending, so the caller must leak (not free) the buffers it uses. The error names `peer`
    /// (the first other member): MPI does not say which member is late.
    /// Native `MPI_Iallreduce` with `MPI_SUM` of `send` (whose elements are `datatype`) over
    /// `comm`, waiting with the deadline; `peer` names the rank a timeout blames.
    fn sum_all_reduce<T: Copy + Default>(
        &self,
        comm: ffi::MPI_Comm,
        peer: usize,
        datatype: ffi::MPI_Datatype,
        send: Vec<T>,
    ) -> Result<Vec<T>, CommError> {
        let count = to_c_int(send.len(), "a tensor")?;
        let mut recv = vec![T::default(); send.len()];
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        {
            let _state = lock(&self.state);
            // SAFETY: both buffers outlive the request (leaked on a timeout, since MPI may still
            // write into `recv`).
            unsafe {
                ffi::MPI_Iallreduce(
                    send.as_ptr() as *const c_void,
                    recv.as_mut_ptr() as *mut c_void,
                    count,
                    datatype,
                    ffi::RSMPI_SUM,
                    comm,
                    &mut request,
                )
            };
        }
        if let Err(e) = self.wait(&mut request, peer) {
            std::mem::forget((send, recv));
            return Err(e);
        }
        Ok(recv)
    }

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
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
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
        let (comm, member) = self.group_comm(group)?;
        let peer = group.iter().copied().find(|&r| r != self.rank).unwrap_or(self.rank);
        let mine = encode(t);
        // Sizes first, so members whose operands differ in size still meet (and then fail the
        // shape check of the group semantics instead of truncating).
        let my_len = [mine.len() as u64];
        let mut lens = vec![0u64; group.len()];
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
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
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
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
        // MPI_MAX does not promise NaN propagation and MPI has no bf16 or wrapping integer sum:
        // those go through the exchange, which computes tessera's semantics exactly.
        let datatype = match (reduction, t.dtype) {
            (Reduction::Sum, DType::F32) => unsafe { ffi::RSMPI_FLOAT },
            (Reduction::Sum, DType::F64) => unsafe { ffi::RSMPI_DOUBLE },
            _ => return self.exchange_reduce(group, t, reduction),
        };
        if group.len() == 1 && group[0] == self.rank {
            return Ok(t.clone());
        }
        let (comm, _) = self.group_comm(group)?;
        let peer = group.iter().copied().find(|&r| r != self.rank).unwrap_or(self.rank);
        let values = t.to_f64_vec();
        let out = if t.dtype == DType::F32 {
            let send: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            self.sum_all_reduce(comm, peer, datatype, send)?.into_iter().map(f64::from).collect()
        } else {
            self.sum_all_reduce(comm, peer, datatype, values)?
        };
        Ok(Tensor::from_f64(t.dtype, t.shape.clone(), out))
    }
}

impl MpiCommunicator {
    /// `all_reduce` through the exchange and the reference group semantics.
    fn exchange_reduce(&self, group: &[usize], t: &Tensor, reduction: Reduction) -> Result<Tensor, CommError> {
        let op = tessera_ir::ops::collective::Collective::AllReduce {
            reduction,
            group: tessera_ir::ops::collective::MeshAxes { axes: vec!["group".into()], size: group.len() as u64 },
        };
        self.collective(&op, group, t, &t.tensor_type())
    }
}

/// The wire form of a tensor; see the module documentation.
pub fn encode(t: &Tensor) -> Vec<u8> {
    let header = serde_json::json!({"dtype": t.dtype, "shape": t.shape}).to_string();
    let width = element_width(t.dtype);
    let mut out = Vec::with_capacity(4 + header.len() + t.len() * width);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &t.data {
        Buffer::Float(values) if t.dtype == DType::F64 => {
            values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()))
        }
        // Every narrower float value is exactly an f32.
        Buffer::Float(values) => values.iter().for_each(|&v| out.extend_from_slice(&(v as f32).to_le_bytes())),
        Buffer::Int(values) => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
    }
    out
}

fn element_width(dtype: DType) -> usize {
    if dtype.is_float() && dtype != DType::F64 {
        4
    } else {
        8
    }
}

/// A tensor from its wire form.
pub fn decode(bytes: &[u8]) -> Result<Tensor, String> {
    let header_len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the message is shorter than its header length")?;
    let header = bytes.get(4..4 + header_len).ok_or("the message is shorter than its header")?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    let dtype: DType = header
        .get("dtype")
        .cloned()
        .and_then(|d| serde_json::from_value(d).ok())
        .ok_or("the header has no valid 'dtype'")?;
    let shape: Vec<usize> = header
        .get("shape")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or("the header has no valid 'shape'")?;
    let data = &bytes[4 + header_len..];
    let n: usize = shape.iter().product();
    let width = element_width(dtype);
    if data.len() != n * width {
        return Err(format!("{} data bytes for {n} elements of {}", data.len(), dtype.mlir_name()));
    }
    let chunks = data.chunks_exact(width);
    Ok(if dtype == DType::F64 {
        let values = chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        Tensor { dtype, shape, data: Buffer::Float(values) }
    } else if dtype.is_float() {
        let values = chunks.map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or_default()))).collect();
        Tensor { dtype, shape, data: Buffer::Float(values) }
    } else {
        let values = chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        Tensor { dtype, shape, data: Buffer::Int(values) }
    })
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
        ];
        for t in cases {
            assert_eq!(decode(&encode(&t)).expect("decodes"), t);
        }
    }

    #[test]
    fn truncated_messages_are_errors() {
        let bytes = encode(&Tensor::from_f64(DType::F32, vec![4], vec![1.0; 4]));
        assert!(decode(&bytes[..bytes.len() - 1]).expect_err("short").contains("data bytes"));
        assert!(decode(&bytes[..2]).is_err());
    }
}
