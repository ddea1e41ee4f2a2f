//! The NCCL transport: [`NcclCommunicator`] implements [`Communicator`] for ranks that each
//! drive one GPU, launched by `mpirun`/`srun` like the MPI transport, which it builds on.
//!
//! Start-up: [`availability`] checks for a CUDA driver and libnccl *before* MPI starts, so a
//! machine without them fails with a clear message on every rank. The rank's GPU is its local
//! rank ([`MpiCommunicator::local_rank`]: the launcher's variable, else a shared-memory split);
//! a node with fewer GPUs than ranks is an error, not a silent oversubscription.
//!
//! Communicators: one NCCL communicator per group (global ranks in member order), created on
//! first use: member 0 calls `ncclGetUniqueId`, the id goes to the members over the group's
//! MPI communicator (`MPI_Ibcast`, with the deadline), and every member calls
//! `ncclCommInitRank` with its member index as NCCL rank, so NCCL's rank order is the group
//! order. Members meet their groups' collectives in the same order, so they create them in the
//! same order. NCCL's blocking init runs on a helper thread, and the caller waits for it with
//! the deadline too.
//!
//! Collectives: operands are staged host->device on the rank's stream, the NCCL call is issued
//! on it, an event is recorded, and the host polls that event and `ncclCommGetAsyncError` until
//! the deadline; on a timeout or an asynchronous error the communicator is aborted
//! (`ncclCommAbort`, which stops its kernels) and dropped, and the device buffers are leaked
//! (the aborted kernels may have held them). Element types are those of [`crate::wire`] with
//! NCCL's types: `ncclFloat32`, `ncclFloat64`, `ncclInt64` (`ncclUint64` for sums, which wrap),
//! `ncclBfloat16`/`ncclFloat16` for moves of 16-bit floats, whose sums go as `ncclFloat64` and
//! maxima as `ncclFloat32` so results equal the reference's (rounded once). Max carries NaN in a
//! second all-reduce of 0/1 flags, as the MPI transport does. Before moving data, members
//! compare their operands' dtype and shape over MPI (one small `MPI_Iallgather`).
//! `all_reduce` is `ncclAllReduce`, `all_gather` `ncclAllGather`, `reduce_scatter`
//! `ncclReduceScatter`, `all_to_all` grouped `ncclSend`/`ncclRecv` pairs, [`broadcast`]
//! `ncclBroadcast`.
//!
//! [`Communicator::abort`] aborts this rank's NCCL communicators (unless a collective is using
//! them at that moment) and then calls `MPI_Abort`, which ends every process of the job.
//!
//! Point-to-point `send`/`recv` go over MPI: [`Communicator::recv`] matches by sender and tag
//! and learns the shape from the message, and a sender must not wait for its receiver; NCCL's
//! `ncclSend`/`ncclRecv` match in issue order per peer, need the size in advance and block the
//! stream until both sides meet, so a ring of sends before receives would deadlock.
//!
//! [`broadcast`]: NcclCommunicator::broadcast

use crate::mpi::{
    all_to_all_result, check_all_to_all, check_axis, check_divisible, poll_until, MpiCommunicator, MpiError,
};
use crate::spmd::{CommError, Communicator, Tag};
use crate::wire::{Elements, Use, Wire};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclResult_t, ncclUniqueId};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Reduction;
use tessera_ir::tensor::Tensor;

/// Why the NCCL transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum NcclError {
    #[error("NCCL needs a CUDA driver: no CUDA driver found")]
    NoDriver,
    #[error("NCCL needs libnccl: libnccl not found (install NCCL 2.x, e.g. the libnccl2 package)")]
    NoLibrary,
    #[error(transparent)]
    Mpi(#[from] MpiError),
    #[error(
        "rank {rank} is local rank {local} of its node, which has {devices} CUDA devices (NCCL runs one GPU per rank)"
    )]
    TooFewDevices { rank: usize, local: usize, devices: usize },
    #[error("CUDA: {0}")]
    Cuda(String),
}

/// Whether NCCL can run here: a CUDA driver and libnccl can be loaded. Loads nothing else.
pub fn availability() -> Result<(), NcclError> {
    if !crate::executor::cuda::driver_present() {
        return Err(NcclError::NoDriver);
    }
    // SAFETY: loading libnccl runs its initializers, as any NCCL program does; it is unloaded
    // again when the probe's handle drops.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err(NcclError::NoLibrary);
    }
    Ok(())
}

/// How many GPUs NCCL could use here: errors without a CUDA driver or libnccl.
pub fn devices() -> Result<usize, NcclError> {
    availability()?;
    let n = CudaContext::device_count().map_err(|e| NcclError::Cuda(format!("{e:?}")))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Which transport `--comm` asks for. There is no automatic choice: the training step runs on
/// the host today, so NCCL would only add staging copies, and a per-rank guess (this rank has a
/// GPU, the next one does not) would split one job over two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommChoice {
    Mpi,
    Nccl,
}

/// The transport a rank runs with.
pub enum Transport {
    Mpi(MpiCommunicator),
    Nccl(NcclCommunicator),
}

impl Transport {
    /// Starts the transport `choice` picks; receives and collectives fail after `timeout`.
    pub fn open(choice: CommChoice, timeout: Duration) -> Result<Transport, NcclError> {
        let nccl = match choice {
            CommChoice::Mpi => false,
            CommChoice::Nccl => true,
        };
        Ok(if nccl {
            Transport::Nccl(NcclCommunicator::init(timeout)?)
        } else {
            Transport::Mpi(MpiCommunicator::init(timeout)?)
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Mpi(_) => "mpi",
            Transport::Nccl(_) => "nccl",
        }
    }

    /// The communicator, shareable between threads (and no longer a [`Transport`]).
    pub fn into_shared(self) -> Arc<dyn Communicator> {
        match self {
            Transport::Mpi(c) => Arc::new(c),
            Transport::Nccl(c) => Arc::new(c),
        }
    }

    pub fn comm(&self) -> &dyn Communicator {
        match self {
            Transport::Mpi(c) => c,
            Transport::Nccl(c) => c,
        }
    }

    pub fn timeout(&self) -> Duration {
        match self {
            Transport::Mpi(c) => c.timeout(),
            Transport::Nccl(c) => c.mpi.timeout(),
        }
    }

    /// `t` of the group's member `root` on every member (see [`MpiCommunicator::broadcast`]).
    pub fn broadcast(&self, group: &[usize], root: usize, t: &Tensor) -> Result<Tensor, CommError> {
        match self {
            Transport::Mpi(c) => c.broadcast(group, root, t),
            Transport::Nccl(c) => c.broadcast(group, root, t),
        }
    }

    /// How many collectives of each kind ran natively (and through the exchange).
    pub fn native_calls(&self) -> Vec<(&'static str, u64)> {
        match self {
            Transport::Mpi(c) => c.native_calls(),
            Transport::Nccl(c) => c.native_calls(),
        }
    }
}

/// An NCCL communicator handle.
struct RawComm(ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; every use happens under `NcclCommunicator::comms`' lock.
unsafe impl Send for RawComm {}

/// The NCCL collectives, counted like [`crate::mpi::Native`].
const KINDS: [&str; 5] = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast"];

/// One rank of a job whose collectives run through NCCL; see the module documentation.
pub struct NcclCommunicator {
    // Field order is drop order: NCCL communicators go before the stream, the context, and MPI.
    comms: Mutex<HashMap<Vec<usize>, RawComm>>,
    stream: Arc<CudaStream>,
    context: Arc<CudaContext>,
    device: usize,
    calls: [AtomicU64; KINDS.len()],
    mpi: MpiCommunicator,
}

fn cuda_error(e: impl std::fmt::Debug) -> CommError {
    CommError::Semantics(format!("CUDA: {e:?}"))
}

fn nccl_error(what: &str, e: nccl::NcclError) -> CommError {
    CommError::Semantics(format!("NCCL {what} failed: {:?}", e.0))
}

/// A device pointer `elements` elements of `T` past `base`.
fn offset<T>(base: u64, elements: usize) -> u64 {
    base + (elements * std::mem::size_of::<T>()) as u64
}

impl NcclCommunicator {
    /// Checks for the driver and libnccl, starts MPI, and opens this rank's GPU.
    pub fn init(timeout: Duration) -> Result<NcclCommunicator, NcclError> {
        // Before MPI starts, so a machine without NCCL fails the same way on every rank.
        availability()?;
        let mpi = MpiCommunicator::init(timeout)?;
        let local = mpi.local_rank();
        let devices = devices()?;
        if local >= devices {
            return Err(NcclError::TooFewDevices { rank: mpi.rank(), local, devices });
        }
        let context = CudaContext::new(local).map_err(|e| NcclError::Cuda(format!("{e:?}")))?;
        let stream = context.new_stream().map_err(|e| NcclError::Cuda(format!("{e:?}")))?;
        Ok(NcclCommunicator {
            comms: Mutex::new(HashMap::new()),
            stream,
            context,
            device: local,
            calls: Default::default(),
            mpi,
        })
    }

    /// The CUDA device this rank drives.
    pub fn device(&self) -> usize {
        self.device
    }

    /// How many collectives of each kind ran through NCCL, and how many operands went whole
    /// through the MPI exchange instead.
    pub fn native_calls(&self) -> Vec<(&'static str, u64)> {
        let mut calls: Vec<_> = KINDS.iter().zip(&self.calls).map(|(&k, n)| (k, n.load(Ordering::Relaxed))).collect();
        calls.extend(self.mpi.native_calls().into_iter().filter(|&(kind, _)| kind == "exchange"));
        calls
    }

    fn count(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|&k| k == kind) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<usize>, RawComm>> {
        self.comms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The NCCL communicator of `group`, created with its members on first use.
    fn group_comm(
        &self,
        comms: &mut HashMap<Vec<usize>, RawComm>,
        group: &[usize],
        member: usize,
    ) -> Result<ncclComm_t, CommError> {
        if let Some(comm) = comms.get(group) {
            return Ok(comm.0);
        }
        let id = if member == 0 {
            nccl::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?.internal.map(|c| c as u8).to_vec()
        } else {
            vec![0u8; 128]
        };
        let id = self.mpi.broadcast_bytes(group, 0, id)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (dst, &src) in internal.iter_mut().zip(&id) {
            *dst = src as std::ffi::c_char;
        }
        // ncclCommInitRank blocks until every member has joined: it runs on a helper thread so
        // that this one keeps the deadline (on a timeout the helper is left blocked; the caller
        // aborts the job).
        let (size, rank, context) = (group.len() as i32, member as i32, Arc::clone(&self.context));
        let (done, joined) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("nccl-init".into())
            .spawn(move || {
                let result = context.bind_to_thread().map_err(cuda_error).and_then(|()| {
                    let mut comm: ncclComm_t = std::ptr::null_mut();
                    // SAFETY: `comm` is written by NCCL; every member passes the same id and
                    // group size and its own member index.
                    unsafe { nccl::comm_init_rank(&mut comm, size, ncclUniqueId { internal }, rank) }
                        .map(|_| RawComm(comm))
                        .map_err(|e| nccl_error("ncclCommInitRank", e))
                });
                let _ = done.send(result);
            })
            .map_err(|e| CommError::Semantics(format!("cannot start a thread for ncclCommInitRank: {e}")))?;
        let timeout = self.mpi.timeout();
        let RawComm(comm) = joined.recv_timeout(timeout).map_err(|_| CommError::Timeout {
            from: group.iter().copied().find(|&r| r != self.mpi.rank()).unwrap_or(group[0]),
            tag: Tag::Collective,
            seconds: timeout.as_secs_f64(),
        })??;
        comms.insert(group.to_vec(), RawComm(comm));
        Ok(comm)
    }

    /// Waits for the work recorded so far on the stream, polling with the deadline; on a timeout
    /// or an asynchronous NCCL error aborts `comm` and forgets it (the caller leaks its buffers).
    fn wait(
        &self,
        comms: &mut HashMap<Vec<usize>, RawComm>,
        group: &[usize],
        comm: ncclComm_t,
        peer: usize,
    ) -> Result<(), CommError> {
        let event = self.stream.record_event(None).map_err(cuda_error)?;
        let timeout = self.mpi.timeout();
        let outcome = poll_until(timeout, || match event.try_is_complete() {
            Ok(true) => Some(Ok(())),
            Err(e) => Some(Err(cuda_error(e))),
            Ok(false) => {
                let mut state = ncclResult_t::ncclSuccess;
                // SAFETY: `comm` is a live communicator of this rank.
                let _ = unsafe { cudarc::nccl::sys::ncclCommGetAsyncError(comm, &mut state) };
                match state {
                    ncclResult_t::ncclSuccess | ncclResult_t::ncclInProgress => None,
                    failed => Some(Err(CommError::Semantics(format!("NCCL reported {failed:?} on group {group:?}")))),
                }
            }
        })
        .unwrap_or(Err(CommError::Timeout {
            from: peer,
            tag: Tag::Collective,
            seconds: timeout.as_secs_f64(),
        }));
        if outcome.is_err() {
            if let Some(RawComm(comm)) = comms.remove(group) {
                // SAFETY: the communicator is not used again; abort stops its kernels.
                let _ = unsafe { nccl::comm_abort(comm) };
            }
        }
        outcome
    }

    /// Stages `host` on the device, runs `launch(comm, send, recv, stream)` into a buffer of
    /// `out_len` elements, waits, and copies the result back. `launch` returns NCCL's status.
    #[allow(clippy::too_many_arguments)]
    fn on_device<T: DeviceRepr + ValidAsZeroBits + Clone + Default>(
        &self,
        comms: &mut HashMap<Vec<usize>, RawComm>,
        group: &[usize],
        comm: ncclComm_t,
        peer: usize,
        host: &[T],
        out_len: usize,
        launch: impl FnOnce(u64, u64, *mut c_void) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<Vec<T>, CommError> {
        if host.is_empty() && out_len == 0 {
            // Nothing to move (and CUDA refuses zero-byte allocations).
            return Ok(Vec::new());
        }
        let send: CudaSlice<T> = self.stream.clone_htod(host).map_err(cuda_error)?;
        let mut recv: CudaSlice<T> = self.stream.alloc_zeros(out_len.max(1)).map_err(cuda_error)?;
        let launched = {
            let (send_ptr, _send_sync) = send.device_ptr(&self.stream);
            let (recv_ptr, _recv_sync) = recv.device_ptr_mut(&self.stream);
            launch(send_ptr, recv_ptr, self.stream.cu_stream() as *mut c_void)
        };
        let waited = launched.map_err(|e| nccl_error("launch", e)).and_then(|_| self.wait(comms, group, comm, peer));
        if let Err(e) = waited {
            std::mem::forget((send, recv));
            return Err(e);
        }
        let mut out = self.stream.clone_dtoh(&recv).map_err(cuda_error)?;
        out.truncate(out_len);
        Ok(out)
    }

    /// Runs one collective on `elements` (see [`Self::on_device`]) for every wire type.
    fn run(
        &self,
        group: &[usize],
        t: &Tensor,
        elements: Elements,
        out_len: usize,
        launch: impl FnOnce(
            u64,
            u64,
            usize,
            ncclDataType_t,
            ncclComm_t,
            *mut c_void,
        ) -> Result<nccl::NcclStatus, nccl::NcclError>,
        sum: bool,
    ) -> Result<Elements, CommError> {
        let call = self.mpi.native_call(group, t)?;
        let peer = call.map_or(self.mpi.rank(), |c| c.peer);
        let member = group.iter().position(|&r| r == self.mpi.rank()).unwrap_or(0);
        let mut comms = self.lock();
        // NCCL calls act on the calling thread's current device.
        self.context.bind_to_thread().map_err(cuda_error)?;
        let comm = self.group_comm(&mut comms, group, member)?;
        let datatype = nccl_datatype(elements.wire(), t.dtype, sum);
        let width = elements.wire().width();
        let go = |send: u64, recv: u64, stream: *mut c_void| launch(send, recv, width, datatype, comm, stream);
        Ok(match elements {
            Elements::F32(v) => Elements::F32(self.on_device(&mut comms, group, comm, peer, &v, out_len, go)?),
            Elements::F64(v) => Elements::F64(self.on_device(&mut comms, group, comm, peer, &v, out_len, go)?),
            Elements::I64(v) => Elements::I64(self.on_device(&mut comms, group, comm, peer, &v, out_len, go)?),
            Elements::Bits16(v) => Elements::Bits16(self.on_device(&mut comms, group, comm, peer, &v, out_len, go)?),
        })
    }

    /// `t` of the group's member `root` on every member (`ncclBroadcast`); every member passes a
    /// tensor of the same dtype and shape, whose values only matter on the root.
    pub fn broadcast(&self, group: &[usize], root: usize, t: &Tensor) -> Result<Tensor, CommError> {
        if root >= group.len() {
            return Err(CommError::Semantics(format!("broadcast root {root} is outside a group of {}", group.len())));
        }
        if group.len() == 1 {
            return Ok(t.clone());
        }
        let elements = Elements::of(t, Wire::of(t.dtype, Use::Move));
        let n = elements.len();
        let out = self.run(
            group,
            t,
            elements,
            n,
            // SAFETY: `on_device` allocates `send` from `elements` (`n` elements) and `recv`
            // of `n`, keeps both alive until the stream has finished the call, and `comm` is the
            // group's live communicator bound to this thread's device.
            |send, recv, _, dt, comm, stream| unsafe {
                nccl::broadcast(send as *const c_void, recv as *mut c_void, n, dt, root as i32, comm, stream.cast())
            },
            false,
        )?;
        self.count("broadcast");
        Ok(out.into_tensor(t.dtype, t.shape.clone()))
    }
}

/// NCCL's element type for a wire buffer of `dtype`'s values.
fn nccl_datatype(wire: Wire, dtype: DType, sum: bool) -> ncclDataType_t {
    match wire {
        Wire::F32 => ncclDataType_t::ncclFloat32,
        Wire::F64 => ncclDataType_t::ncclFloat64,
        // Unsigned addition wraps, on the same bits.
        Wire::I64 if sum => ncclDataType_t::ncclUint64,
        Wire::I64 => ncclDataType_t::ncclInt64,
        Wire::Bits16 if dtype == DType::BF16 => ncclDataType_t::ncclBfloat16,
        Wire::Bits16 => ncclDataType_t::ncclFloat16,
    }
}

impl Drop for NcclCommunicator {
    fn drop(&mut self) {
        let _ = self.context.bind_to_thread();
        for (_, RawComm(comm)) in self.lock().drain() {
            // SAFETY: no collective is in flight (they all completed or aborted their comm).
            let _ = unsafe { nccl::comm_destroy(comm) };
        }
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn size(&self) -> usize {
        self.mpi.size()
    }

    fn send(&self, to: usize, tag: Tag, t: Tensor) -> Result<(), CommError> {
        self.mpi.send(to, tag, t)
    }

    fn recv(&self, from: usize, tag: Tag) -> Result<Tensor, CommError> {
        self.mpi.recv(from, tag)
    }

    fn abort(&self, message: &str) {
        // Stop this rank's NCCL kernels first where no collective holds the communicators (a
        // thread waiting in one keeps the lock; waiting for it could hang); MPI_Abort then ends
        // every process of the job, and with them their communicators.
        if let Ok(mut comms) = self.comms.try_lock() {
            let _ = self.context.bind_to_thread();
            for (_, RawComm(comm)) in comms.drain() {
                // SAFETY: no collective uses the communicator (we hold the lock); it is dropped.
                let _ = unsafe { nccl::comm_abort(comm) };
            }
        }
        self.mpi.abort(message)
    }

    fn exchange(&self, group: &[usize], t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        self.mpi.exchange(group, t)
    }

    fn all_reduce(&self, group: &[usize], t: &Tensor, reduction: Reduction) -> Result<Tensor, CommError> {
        if group.len() == 1 {
            return Ok(t.clone());
        }
        let sum = reduction == Reduction::Sum;
        let mut elements = Elements::of(t, Wire::of(t.dtype, if sum { Use::Sum } else { Use::Max }));
        let nans = (!sum && elements.wire() != Wire::I64).then(|| elements.take_nans());
        let n = elements.len();
        let op = if sum { ncclRedOp_t::ncclSum } else { ncclRedOp_t::ncclMax };
        // SAFETY: `on_device` allocates `send` and `recv` with `n` elements each (the flags pass
        // `n` too) and keeps them alive until the stream has finished the call; `comm` is the
        // group's live communicator.
        let all_reduce = |send: u64, recv: u64, _: usize, dt, comm, stream: *mut c_void| unsafe {
            nccl::all_reduce(send as *const c_void, recv as *mut c_void, n, dt, op, comm, stream.cast())
        };
        let mut out = self.run(group, t, elements, n, all_reduce, sum)?;
        if let Some(flags) = nans {
            let flags = Tensor::from_i64(DType::I64, vec![n], flags.into_iter().map(i64::from).collect());
            let any = self.run(group, &flags, Elements::of(&flags, Wire::I64), n, all_reduce, false)?;
            let Elements::I64(any) = any else {
                return Err(CommError::Semantics("the NaN flags came back in another type".into()));
            };
            out.restore_nans(&any.into_iter().map(|f| u8::from(f != 0)).collect::<Vec<_>>());
        }
        self.count("all_reduce");
        Ok(out.into_tensor(t.dtype, t.shape.clone()))
    }

    fn all_gather(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        check_axis(t, dim)?;
        if group.len() == 1 {
            return Ok(t.clone());
        }
        let g = group.len();
        let elements = Elements::of(t, Wire::of(t.dtype, Use::Move));
        let n = elements.len();
        let gathered = self.run(
            group,
            t,
            elements,
            n * g,
            // SAFETY: `send` holds `n` elements and `recv` `n * g`, both allocated by
            // `on_device` and alive until the stream has finished the call.
            |send, recv, _, dt, comm, stream| unsafe {
                nccl::all_gather(send as *const c_void, recv as *mut c_void, n, dt, comm, stream.cast())
            },
            false,
        )?;
        let mut shape = t.shape.clone();
        shape[dim] *= g;
        self.count("all_gather");
        Ok(gathered.concat_blocks(&t.shape, dim, g).into_tensor(t.dtype, shape))
    }

    fn reduce_scatter(&self, group: &[usize], t: &Tensor, dim: usize) -> Result<Tensor, CommError> {
        check_divisible(t, dim, group.len(), "reduce_scatter")?;
        if group.len() == 1 {
            return Ok(t.clone());
        }
        let g = group.len();
        let elements = Elements::of(t, Wire::of(t.dtype, Use::Sum)).split_blocks(&t.shape, dim, g);
        let block = elements.len() / g;
        let out = self.run(
            group,
            t,
            elements,
            block,
            // SAFETY: `send` holds `g` blocks of `block` elements and `recv` one block,
            // both allocated by `on_device` and alive until the stream has finished the call.
            |send, recv, _, dt, comm, stream| unsafe {
                nccl::reduce_scatter(
                    send as *const c_void,
                    recv as *mut c_void,
                    block,
                    dt,
                    ncclRedOp_t::ncclSum,
                    comm,
                    stream.cast(),
                )
            },
            true,
        )?;
        let mut shape = t.shape.clone();
        shape[dim] /= g;
        self.count("reduce_scatter");
        Ok(out.into_tensor(t.dtype, shape))
    }

    // The signature is `Communicator::all_to_all`'s; the checks and the reassembly of the
    // received blocks are shared with the MPI override; only the transfer (grouped
    // ncclSend/ncclRecv) is NCCL's own.
    fn all_to_all(
        &self,
        group: &[usize],
        t: &Tensor,
        split_dim: usize,
        concat_dim: usize,
    ) -> Result<Tensor, CommError> {
        check_all_to_all(t, split_dim, concat_dim, group.len())?;
        if group.len() == 1 {
            return Ok(t.clone());
        }
        let g = group.len();
        let elements = Elements::of(t, Wire::of(t.dtype, Use::Move)).split_blocks(&t.shape, split_dim, g);
        let n = elements.len();
        let block = n / g;
        let blocks = self.run(
            group,
            t,
            elements,
            n,
            |send, recv, width, dt, comm, stream| {
                nccl::group_start()?;
                // Block j goes to member j; member j's block for us lands in slot j.
                let pairs = (0..g).try_for_each(|j| {
                    let (to, from) = (offset::<u8>(send, j * block * width), offset::<u8>(recv, j * block * width));
                    // SAFETY: both blocks lie inside the staged buffers of `n` elements.
                    unsafe {
                        nccl::send(to as *const c_void, block, dt, j as i32, comm, stream.cast())?;
                        nccl::recv(from as *mut c_void, block, dt, j as i32, comm, stream.cast()).map(|_| ())
                    }
                });
                // The group is closed whatever happened inside it.
                let ended = nccl::group_end();
                pairs.and(ended)
            },
            false,
        )?;
        self.count("all_to_all");
        Ok(all_to_all_result(blocks, t, split_dim, concat_dim, g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_buffers_get_nccl_types_that_keep_their_values() {
        assert_eq!(nccl_datatype(Wire::of(DType::F32, Use::Sum), DType::F32, true), ncclDataType_t::ncclFloat32);
        assert_eq!(nccl_datatype(Wire::of(DType::F64, Use::Max), DType::F64, false), ncclDataType_t::ncclFloat64);
        // 16-bit floats move as themselves but are summed in f64 (rounded once, like the reference).
        assert_eq!(nccl_datatype(Wire::of(DType::BF16, Use::Move), DType::BF16, false), ncclDataType_t::ncclBfloat16);
        assert_eq!(nccl_datatype(Wire::of(DType::F16, Use::Move), DType::F16, false), ncclDataType_t::ncclFloat16);
        assert_eq!(nccl_datatype(Wire::of(DType::BF16, Use::Sum), DType::BF16, true), ncclDataType_t::ncclFloat64);
        // Integer sums wrap as unsigned; maxima compare signed.
        assert_eq!(nccl_datatype(Wire::of(DType::I64, Use::Sum), DType::I64, true), ncclDataType_t::ncclUint64);
        assert_eq!(nccl_datatype(Wire::of(DType::I32, Use::Max), DType::I32, false), ncclDataType_t::ncclInt64);
    }

    #[test]
    fn without_a_driver_nccl_says_so_before_touching_mpi() {
        if crate::executor::cuda::driver_present() {
            return;
        }
        let e = availability().expect_err("no driver");
        assert_eq!(e.to_string(), "NCCL needs a CUDA driver: no CUDA driver found");
        assert!(devices().is_err());
        // Asking for NCCL fails with the same message (and MPI is never initialized, which this
        // test process could do only once).
        let e = Transport::open(CommChoice::Nccl, Duration::from_secs(1)).err().expect("fails");
        assert_eq!(e.to_string(), "NCCL needs a CUDA driver: no CUDA driver found");
    }

    #[test]
    fn device_offsets_count_bytes_of_the_element_type() {
        assert_eq!(offset::<f32>(1000, 3), 1012);
        assert_eq!(offset::<u8>(1000, 3 * 8), 1024);
    }
}
