//! The CPU executor: maps `kernels.so`, resolves every kernel step's symbol once, and runs the
//! steps over an arena. [`CpuExecutor::bind`] allocates the arena and writes the resident inputs
//! (weights) once; each [`Bound::run`] writes only the other inputs; [`CpuExecutor::run`] is a
//! bind of nothing followed by one run. When every parameter input is resident, the program's
//! bind steps (weight-only work, `Program::bind_steps`) run once in the bind, and again only
//! after a resident input changed ([`Bound::write_resident`], carried outputs). A resident input
//! may also be a [`SharedInput`]: bytes outside the arena, read-only, shared by every binding
//! that maps them ([`Bound::with_shared_inputs`]; the serving engine binds one copy of the
//! weights to the programs of every row count).

use super::library::{self, In, Out};
use super::load::Artifact;
use super::profile::Profile;
use super::{ArtifactError, Feed, InputData, CONVERT_CHUNK, NOT_AN_INPUT};
use crate::spmd::RankComm;
use rayon::prelude::*;
use std::alloc::Layout;
use std::borrow::Borrow;
use std::time::Instant;
use tessera_ir::artifact::{decode, LibraryCall, Location, Program, Step, Storage, ALIGNMENT};
use tessera_ir::dtype::DType;
use tessera_ir::tensor::{Buffer as TensorData, Tensor};

type KernelFn = unsafe extern "C" fn(*const *mut u8);

/// Zeroed bytes aligned to [`ALIGNMENT`], so f32/i64 views and vector loads are aligned.
///
/// Allocated with the allocator's natural alignment and aligned by hand inside: a zeroed
/// allocation of an over-aligned layout is an explicit memset of every byte, while one of the
/// natural alignment is `calloc`, whose large blocks are fresh zero pages the kernel maps on
/// first touch. For a GPT-2 arena (half a GiB, much of it never touched) the difference is
/// several hundred milliseconds per run.
struct AlignedBytes {
    /// `ALIGNMENT`-aligned start, inside the allocation.
    ptr: *mut u8,
    len: usize,
    base: *mut u8,
    layout: Layout,
}

impl AlignedBytes {
    fn zeroed(len: usize) -> Result<AlignedBytes, String> {
        let slack = ALIGNMENT as usize;
        let too_large = || format!("cannot allocate {len} bytes");
        let size = len.checked_add(slack).ok_or_else(too_large)?;
        let layout = Layout::from_size_align(size, std::mem::align_of::<u128>()).map_err(|e| e.to_string())?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            return Err(too_large());
        }
        // SAFETY: the offset is below `slack`, so `ptr..ptr + len` lies inside the allocation.
        let ptr = unsafe { base.add(base.align_offset(slack)) };
        Ok(AlignedBytes { ptr, len, base, layout })
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.base, self.layout) }
    }
}

/// A resident input's stored bytes outside any arena, written once and then only read, shared
/// (through `Arc`) by every [`Bound`] that maps them ([`Bound::with_shared_inputs`]): programs
/// that read the same weights (the serving programs compiled for several row counts) hold one
/// copy between them instead of one per arena.
pub struct SharedInput {
    bytes: AlignedBytes,
    dtype: DType,
    storage: Storage,
    shape: Vec<u64>,
}

// SAFETY: the bytes are written in `SharedInput::new` and only read after it: no step writes an
// input's range (`executor::resident_inputs`), and `Bound::write_resident` and `Bound::carry`
// refuse a shared input. Plain bytes have no thread affinity.
unsafe impl Send for SharedInput {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for SharedInput {}

impl SharedInput {
    /// `data` converted to `storage` (the storage of the program buffers it will be bound to).
    pub fn new<T: InputData>(data: &T, storage: Storage) -> Result<SharedInput, String> {
        let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        let len = shape
            .iter()
            .try_fold(storage.element_bytes(), |bytes, &n| bytes.checked_mul(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{shape:?} elements of {storage:?} do not fit in memory"))?;
        let bytes = AlignedBytes::zeroed(len)?;
        // SAFETY: `bytes` was just allocated with `len` bytes; nothing else refers to it yet.
        let dest = unsafe { std::slice::from_raw_parts_mut(bytes.ptr, len) };
        data.write_into(storage, dest)?;
        Ok(SharedInput { bytes, dtype: data.dtype(), storage, shape })
    }

    /// Bytes held (once, however many bindings share them).
    pub fn len(&self) -> usize {
        self.bytes.len
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.len == 0
    }
}

/// An arena byte range `start..end` that a [`Bound`] reads from a [`SharedInput`] instead.
struct SharedRange {
    start: u64,
    end: u64,
    input: std::sync::Arc<SharedInput>,
}

/// Where a bound program's buffers live: in its arena, except the ranges of shared inputs.
#[derive(Clone, Copy)]
struct Memory<'a> {
    arena: &'a AlignedBytes,
    shared: &'a [SharedRange],
    /// Per buffer, its arena offset in the bound's current layout ([`Bound::offsets`]).
    offsets: &'a [u64],
}

/// [`decode`], with a fast path for the common case, f32 values of an f32 output: they are
/// exact as f64, so no rounding is needed (GPT-2's logits are 6.4 million of them).
fn read_elements(bytes: &[u8], storage: Storage, dtype: DType, shape: &[usize]) -> Option<Tensor> {
    if storage != Storage::F32 || dtype != DType::F32 {
        return decode(bytes, storage, dtype, shape);
    }
    // SAFETY: every bit pattern is a valid f32; only the aligned middle is used.
    let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
    if !head.is_empty() || !tail.is_empty() || body.len() != shape.iter().product::<usize>() {
        return decode(bytes, storage, dtype, shape);
    }
    let values = body.par_iter().with_min_len(CONVERT_CHUNK).map(|&x| f64::from(x)).collect();
    Some(Tensor { dtype, shape: shape.to_vec(), data: TensorData::Float(values) })
}

/// A loaded CPU program, ready to run any number of times.
pub struct CpuExecutor {
    program: Program,
    weights: AlignedBytes,
    /// Resolved kernel per step (None for library steps).
    kernels: Vec<Option<KernelFn>>,
    // Keeps the shared object mapped while `kernels` point into it; dropped after them.
    _library: Option<libloading::Library>,
    // The memfd the library was opened from, kept open until after the library is closed:
    // `dlopen` finds an already loaded object by its path string, so while a library opened
    // as `/proc/self/fd/N` is loaded, no other object may be given the number N (a second
    // executor in this process would otherwise get the first one's kernels). Dropped last.
    _sealed: Option<super::sealed::SealedObject>,
}

impl CpuExecutor {
    pub fn new(artifact: Artifact) -> Result<CpuExecutor, ArtifactError> {
        if artifact.program.target != "cpu" {
            return Err(ArtifactError::Target {
                target: artifact.program.target.clone(),
                message: "the CPU executor runs only artifacts compiled with --target cpu".into(),
            });
        }
        let weights = AlignedBytes::zeroed(artifact.weights.len())
            .map_err(|message| ArtifactError::Kernels { path: artifact.rank_dir.clone(), message })?;
        // SAFETY: `weights` has exactly `artifact.weights.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(artifact.weights.as_ptr(), weights.ptr, artifact.weights.len()) };
        let mut library = None;
        let mut sealed_object = None;
        if let Some(file) = &artifact.program.kernels_file {
            let path = artifact.rank_dir.join(file);
            let kernels_error = |message: String| ArtifactError::Kernels { path: path.clone(), message };
            let object = artifact
                .kernels_object
                .as_deref()
                .ok_or_else(|| kernels_error("not loaded with the program".into()))?;
            // The bytes that were checked, from a sealed memfd: the file at `path` may have
            // changed since (executor::sealed).
            let sealed = super::sealed::SealedObject::new("tessera-kernels.so", object)
                .map_err(|e| kernels_error(format!("cannot copy the checked object to memory: {e}")))?;
            // SAFETY: loading runs the object's initializers. These bytes are the compiler's
            // output (no constructors of its own): their SHA-256 matched the manifest and their
            // signature table the program's.
            let lib = unsafe { libloading::Library::new(sealed.path()) }.map_err(|e| kernels_error(e.to_string()))?;
            library = Some((lib, path));
            sealed_object = Some(sealed);
        }
        let mut kernels = Vec::with_capacity(artifact.program.steps.len());
        for step in &artifact.program.steps {
            kernels.push(match (step, &library) {
                (Step::Kernel { symbol, .. }, Some((lib, path))) => {
                    // SAFETY: every kernel of the object has the ABI `extern "C" fn(*const *mut u8)`.
                    let f = unsafe { lib.get::<KernelFn>(symbol.as_bytes()) }.map_err(|e| ArtifactError::Kernels {
                        path: path.clone(),
                        message: format!("symbol {symbol}: {e}"),
                    })?;
                    Some(*f)
                }
                _ => None,
            });
        }
        Ok(CpuExecutor {
            program: artifact.program,
            weights,
            kernels,
            _library: library.map(|(l, _)| l),
            _sealed: sealed_object,
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Binds `resident` inputs once (by name, of their declared dtype and shape): allocates an
    /// arena that stays with the returned [`Bound`] and writes them into it. Each
    /// [`Bound::run`] then writes only the other inputs, so weights are converted once, not per
    /// run. Fails if a name is not a program input or a step would overwrite the input's
    /// buffer (see `executor::resident_inputs`).
    pub fn bind<T: InputData>(&self, resident: &[(String, T)]) -> Result<Bound<&CpuExecutor>, ArtifactError> {
        Bound::new(self, resident)
    }

    /// [`CpuExecutor::bind`] into a [`Bound`] that owns the executor, for a holder that keeps
    /// both for as long as it runs (a training loop's step executor).
    pub fn into_bound<T: InputData>(self, resident: &[(String, T)]) -> Result<Bound<CpuExecutor>, ArtifactError> {
        Bound::new(self, resident)
    }

    /// [`CpuExecutor::bind`] into a [`Bound`] that shares the executor with other bindings (the
    /// serving engine binds one layer program once per layer, each holding that layer's weights).
    pub fn bind_shared<T: InputData>(
        executor: std::rc::Rc<CpuExecutor>,
        resident: &[(String, T)],
    ) -> Result<Bound<std::rc::Rc<CpuExecutor>>, ArtifactError> {
        Bound::new(executor, resident)
    }

    /// Runs the program on `inputs` (every program input by name, of its declared dtype and
    /// shape) and returns the outputs by name, in the program's order.
    pub fn run<T: InputData>(&self, inputs: &[(String, T)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.bind::<T>(&[])?.run(inputs)
    }

    /// [`CpuExecutor::run`], adding the wall time of every step to `profile` (kernels by
    /// symbol, library calls by name), so repeated runs accumulate.
    pub fn run_profiled<T: InputData>(
        &self,
        inputs: &[(String, T)],
        profile: &mut Profile,
    ) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.bind::<T>(&[])?.run_profiled(inputs, profile)
    }

    /// Runs step `s` of the program on `arena`.
    fn run_step(&self, arena: Memory, s: usize, step: &Step, comm: Option<&RankComm>) -> Result<(), ArtifactError> {
        let step_error = |message: String| ArtifactError::Step { step: s, what: describe(step), message };
        match (step, self.kernels[s]) {
            (Step::Kernel { inputs, outputs, .. }, Some(kernel)) => {
                let args: Vec<*mut u8> = inputs.iter().chain(outputs).map(|&b| self.pointer(arena, b)).collect();
                // SAFETY: the kernel reads and writes exactly the buffers of its kernel graph,
                // which the program passes in ABI order; all lie inside their regions.
                unsafe { kernel(args.as_ptr()) };
                Ok(())
            }
            (Step::Library { call, inputs, outputs }, _) => {
                self.library_step(arena, call, inputs, outputs, comm).map_err(step_error)
            }
            (Step::Kernel { symbol, .. }, None) => Err(step_error(format!("kernel {symbol} is not loaded"))),
        }
    }

    fn pointer(&self, memory: Memory, buffer: u32) -> *mut u8 {
        match self.program.buffers[buffer as usize].location {
            Location::Arena { .. } => {
                // The current layout's offset: the program's, or its range swapped with the
                // range of the carried input or output it pairs with (`Bound::carry`).
                let offset = memory.offsets[buffer as usize];
                match memory.shared.iter().find(|r| r.start <= offset && offset < r.end) {
                    // SAFETY: `Bound::with_shared_inputs` checked that a buffer starting inside
                    // a shared range ends inside it, and the range is the shared input's length.
                    Some(range) => unsafe { range.input.bytes.ptr.add((offset - range.start) as usize) },
                    // SAFETY: the loader checked the program's offset + size against the
                    // arena's length; a swapped offset is another pinned range of the same
                    // size (`Bound::carry`), so the result stays inside the allocation.
                    None => unsafe { memory.arena.ptr.add(offset as usize) },
                }
            }
            // SAFETY: as above, against the length of the weights region.
            Location::Weights { offset } => unsafe { self.weights.ptr.add(offset as usize) },
        }
    }

    fn bytes<'a>(&'a self, arena: Memory<'a>, buffer: u32) -> &'a [u8] {
        let len = self.program.buffers[buffer as usize].bytes() as usize;
        // SAFETY: inside its region (checked by the loader); no `&mut` to it is alive.
        unsafe { std::slice::from_raw_parts(self.pointer(arena, buffer), len) }
    }

    /// Runs the steps of the program over `arena` in order, except those `skip` marks (the bind
    /// steps whose results are current; `skip` may be shorter than the steps), adding each
    /// one's wall time to `profile`.
    fn steps(
        &self,
        arena: Memory,
        skip: &[bool],
        comm: Option<&RankComm>,
        mut profile: Option<&mut Profile>,
    ) -> Result<(), ArtifactError> {
        for (s, step) in self.program.steps.iter().enumerate() {
            if skip.get(s).copied().unwrap_or(false) {
                continue;
            }
            let started = profile.as_ref().map(|_| Instant::now());
            self.run_step(arena, s, step, comm)?;
            if let (Some(profile), Some(started)) = (profile.as_deref_mut(), started) {
                profile.record_step(step, started.elapsed());
            }
        }
        Ok(())
    }

    fn library_step(
        &self,
        arena: Memory,
        call: &LibraryCall,
        inputs: &[u32],
        outputs: &[u32],
        comm: Option<&RankComm>,
    ) -> Result<(), String> {
        let buffers = &self.program.buffers;
        debug_assert!(arena.arena.len >= self.program.arena_bytes as usize);
        let ins: Vec<In> =
            inputs.iter().map(|&b| In { desc: &buffers[b as usize], bytes: self.bytes(arena, b) }).collect();
        let mut outs: Vec<Out> = outputs
            .iter()
            .map(|&b| {
                let len = buffers[b as usize].bytes() as usize;
                // SAFETY: the loader checked that a step's outputs overlap neither its inputs
                // nor each other, and that they lie in the (writable) arena.
                let bytes = unsafe { std::slice::from_raw_parts_mut(self.pointer(arena, b), len) };
                Out { desc: &buffers[b as usize], bytes }
            })
            .collect();
        if let LibraryCall::Collective { op } = call {
            let comm = comm.ok_or_else(|| {
                format!(
                    "tsr.{} needs the other ranks: run a mesh artifact under mpirun/srun with one process per rank",
                    op.mnemonic()
                )
            })?;
            return library::collective(op, comm, &ins, &mut outs);
        }
        let (Some(first_in), Some(first_out)) = (ins.first(), outs.first_mut()) else {
            return match call {
                LibraryCall::Reference { op } => library::reference(op, &ins, &mut outs),
                _ => Err("missing operands".into()),
            };
        };
        match call {
            LibraryCall::MatMul => library::matmul(first_in, ins.get(1).ok_or("missing operand")?, first_out, false),
            LibraryCall::MatMulTransposedB => {
                library::matmul(first_in, ins.get(1).ok_or("missing operand")?, first_out, true)
            }
            LibraryCall::IntegerMatMul { dtype } => {
                library::integer_matmul(first_in, ins.get(1).ok_or("missing operand")?, first_out, *dtype)
            }
            LibraryCall::Transpose { perm } => library::transpose(first_in, first_out, perm),
            LibraryCall::Gather { axis } => {
                library::gather(first_in, ins.get(1).ok_or("missing operand")?, first_out, *axis as usize)
            }
            LibraryCall::Slice { starts, steps } => library::slice(first_in, first_out, starts, steps),
            LibraryCall::Split { axis } => library::split(first_in, &mut outs, *axis as usize),
            LibraryCall::Concat { axis } => library::concat(&ins, first_out, *axis as usize),
            LibraryCall::Conv2d { window, groups } => {
                super::conv::conv2d(first_in, ins.get(1).ok_or("missing operand")?, first_out, window, *groups)
            }
            LibraryCall::Pool2d { kind, kernel, window } => {
                super::conv::pool2d(first_in, first_out, *kind, *kernel, window)
            }
            LibraryCall::Recurrent { kind, cell } => super::recurrent::recurrent(*kind, cell, &ins, &mut outs),
            LibraryCall::WinogradInput { pads } => super::winograd::input(first_in, first_out, *pads),
            LibraryCall::WinogradWeight => super::winograd::weight(first_in, first_out),
            LibraryCall::WinogradOutput => super::winograd::output(first_in, first_out),
            LibraryCall::CrossEntropy => {
                library::cross_entropy(first_in, ins.get(1).ok_or("missing operand")?, first_out)
            }
            LibraryCall::Scatter { axis, reduction } => library::scatter(
                first_in,
                ins.get(1).ok_or("missing operand")?,
                ins.get(2).ok_or("missing operand")?,
                first_out,
                *axis as i64,
                *reduction,
            ),
            LibraryCall::Reference { op } => library::reference(op, &ins, &mut outs),
            LibraryCall::WithEpilogue { gemm, epilogue } => library::with_epilogue(gemm, epilogue, &ins, first_out),
            LibraryCall::Collective { .. } => Err("unreachable: collectives are handled above".into()),
        }
    }
}

/// The borrows that [`Bound::run_steps`] hands to a pool thread: the executor (its mapped
/// kernels), the arena and the profile. Not `Send` on their own only because the arena and the
/// weights are raw pointers.
struct SendJob<'a>((&'a CpuExecutor, Memory<'a>, Option<&'a mut Profile>));

// SAFETY: `rayon::scope` returns only when its closure has, and the calling thread blocks in it
// meanwhile: the borrows are used by one thread at a time, as if moved there and back. The
// pointed-to memory is plain bytes (no thread affinity), which the library calls already share
// with rayon's threads through slices.
unsafe impl Send for SendJob<'_> {}

impl<'a> SendJob<'a> {
    fn into_parts(self) -> (&'a CpuExecutor, Memory<'a>, Option<&'a mut Profile>) {
        self.0
    }
}

/// A [`CpuExecutor`] with some inputs bound once ([`CpuExecutor::bind`]): one arena, kept
/// across runs, that holds the resident inputs. The memory plan pins every input's range (no
/// step writes it), so they stay intact; every other range is written before it is read in each
/// run, so nothing depends on the arena starting zeroed.
pub struct Bound<E: Borrow<CpuExecutor>> {
    executor: E,
    arena: AlignedBytes,
    /// Per program input: bound once (true) or fed per run.
    resident: Vec<bool>,
    /// Per program input: a resident input read from a [`SharedInput`] (`shared`), not the arena.
    shared_input: Vec<bool>,
    /// The arena ranges of the shared inputs (and of the buffers that alias them).
    shared: Vec<SharedRange>,
    /// The other ranks, for the communication steps of a mesh artifact's program.
    comm: Option<RankComm>,
    /// Per step: one of the program's bind steps, run once and skipped while
    /// `bind_results_current` (empty when not every parameter is resident: then every step
    /// runs on every run, as the per-run parameters may change).
    bind_step: Vec<bool>,
    /// The bind steps' results in the arena were computed from the resident inputs as they are
    /// now (false after [`Bound::write_resident`] or a run that carried outputs into them).
    bind_results_current: bool,
    /// Per buffer, where it lives in the arena now: the program's offset until a run carries
    /// outputs, then with each swappable carried output's range and its input's range traded
    /// ([`Carry`]), so the next run reads the new state where the last one wrote it.
    offsets: Vec<u64>,
}

impl<E: Borrow<CpuExecutor>> Bound<E> {
    fn new<T: InputData>(executor: E, resident: &[(String, T)]) -> Result<Bound<E>, ArtifactError> {
        Bound::with_shared_inputs(executor, resident, &[])
    }

    /// Binds `resident` inputs as [`CpuExecutor::bind`] does, and maps the `shared` ones
    /// instead of copying them: the program reads their buffers (and any buffer aliasing them)
    /// from the [`SharedInput`]'s bytes, which must have the input's dtype, storage and shape.
    /// They are read-only here ([`Bound::write_resident`] and [`Bound::carry`] refuse them).
    pub fn with_shared_inputs<T: InputData>(
        executor: E,
        resident: &[(String, T)],
        shared: &[(String, std::sync::Arc<SharedInput>)],
    ) -> Result<Bound<E>, ArtifactError> {
        let p = &executor.borrow().program;
        let names = resident.iter().map(|(name, _)| name.as_str()).chain(shared.iter().map(|(name, _)| name.as_str()));
        let is_resident = super::resident_inputs(p, names)?;
        let mut shared_input = vec![false; p.inputs.len()];
        let mut shared_ranges = Vec::with_capacity(shared.len());
        for (name, input) in shared {
            let input_error = |message: String| ArtifactError::Input { name: name.clone(), message };
            let i = p.inputs.iter().position(|b| b.name == *name).ok_or_else(|| input_error(NOT_AN_INPUT.into()))?;
            let (binding, desc) = (&p.inputs[i], &p.buffers[p.inputs[i].buffer as usize]);
            if binding.dtype != input.dtype || desc.storage != input.storage || desc.shape != input.shape {
                return Err(input_error(format!(
                    "expected {} {:?} stored as {:?}, the shared input is {} {:?} stored as {:?}",
                    binding.dtype, desc.shape, desc.storage, input.dtype, input.shape, input.storage
                )));
            }
            let Location::Arena { offset: start } = desc.location else {
                return Err(input_error("not in the arena".into()));
            };
            let end = start + desc.bytes();
            // A buffer that aliases the input (a reshape of it) is read from the shared bytes
            // too, so it must lie wholly inside the input's range.
            let straddles = p.buffers.iter().any(|b| match b.location {
                Location::Arena { offset } => {
                    let b_end = offset + b.bytes();
                    offset < end && start < b_end && (offset < start || b_end > end)
                }
                Location::Weights { .. } => false,
            });
            if straddles {
                return Err(input_error("a buffer overlaps the input's range without lying inside it".into()));
            }
            shared_input[i] = true;
            shared_ranges.push(SharedRange { start, end, input: input.clone() });
        }
        let arena = AlignedBytes::zeroed(p.arena_bytes as usize)
            .map_err(|message| ArtifactError::Input { name: "(arena)".into(), message })?;
        let every_parameter_resident = p.inputs.iter().zip(&is_resident).all(|(binding, &r)| r || !binding.parameter);
        let mut bind_step = Vec::new();
        if every_parameter_resident && !p.bind_steps.is_empty() {
            bind_step = vec![false; p.steps.len()];
            for &s in &p.bind_steps {
                bind_step[s as usize] = true;
            }
        }
        let offsets = p
            .buffers
            .iter()
            .map(|b| match b.location {
                Location::Arena { offset } => offset,
                Location::Weights { .. } => 0,
            })
            .collect();
        let mut bound = Bound {
            executor,
            arena,
            resident: is_resident,
            shared_input,
            shared: shared_ranges,
            comm: None,
            bind_step,
            bind_results_current: false,
            offsets,
        };
        bound.write_inputs(resident, true)?;
        bound.run_bind_steps()?;
        Ok(bound)
    }

    /// Runs the bind steps (if they are run apart from the others) on the resident inputs.
    fn run_bind_steps(&mut self) -> Result<(), ArtifactError> {
        let executor = self.executor.borrow();
        for (s, step) in executor.program.steps.iter().enumerate() {
            if self.bind_step.get(s).copied().unwrap_or(false) {
                let memory = Memory { arena: &self.arena, shared: &self.shared, offsets: &self.offsets };
                executor.run_step(memory, s, step, self.comm.as_ref())?;
            }
        }
        self.bind_results_current = true;
        Ok(())
    }

    pub fn executor(&self) -> &CpuExecutor {
        self.executor.borrow()
    }

    /// Runs the program's communication steps over `comm` from now on (a mesh artifact's
    /// rank program; without it such a step fails with an error).
    pub fn connect(&mut self, comm: RankComm) {
        self.comm = Some(comm);
    }

    /// Writes `inputs` and runs the program: `inputs` must be exactly the program inputs that
    /// are not resident. Returns the outputs by name, in the program's order.
    pub fn run<T: InputData>(&mut self, inputs: &[(String, T)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.run_steps(inputs, None, Output::Tensor, &Carry::default()).and_then(tensors)
    }

    /// [`Bound::run`], adding the wall time of every step to `profile` (kernels by symbol,
    /// library calls by name), so repeated runs accumulate.
    pub fn run_profiled<T: InputData>(
        &mut self,
        inputs: &[(String, T)],
        profile: &mut Profile,
    ) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.run_steps(inputs, Some(profile), Output::Tensor, &Carry::default()).and_then(tensors)
    }

    /// [`Bound::run`] returning each output as its stored bytes ([`Feed::Stored`], copied out
    /// of the arena) instead of a tensor: no widening of f32 to f64, for callers that write
    /// them out (`tessera run` writes them to `.npy` files as they are).
    pub fn run_stored<T: InputData>(
        &mut self,
        inputs: &[(String, T)],
        profile: Option<&mut Profile>,
    ) -> Result<Vec<(String, Feed)>, ArtifactError> {
        self.run_steps(inputs, profile, Output::Stored, &Carry::default())
    }

    /// Which outputs replace which resident inputs after each [`Bound::run_carrying`]: `pairs`
    /// holds `(output, input)` names; the input must be resident and of the output's storage
    /// and shape.
    pub fn carry(&self, pairs: &[(String, String)]) -> Result<Carry, ArtifactError> {
        let p = &self.executor().program;
        let mut carry = Carry::default();
        for (output, input) in pairs {
            let input_error = |message: String| ArtifactError::Input { name: input.clone(), message };
            let out = p.outputs.iter().position(|b| b.name == *output).ok_or_else(|| ArtifactError::Input {
                name: output.clone(),
                message: "the program has no output of this name".into(),
            })?;
            let i = p.inputs.iter().position(|b| b.name == *input).ok_or_else(|| input_error(NOT_AN_INPUT.into()))?;
            if !self.resident[i] {
                return Err(input_error("only a resident input can carry an output from run to run".into()));
            }
            if self.shared_input[i] {
                return Err(input_error("a shared input is read-only: it cannot carry an output".into()));
            }
            if carry.pairs.iter().any(|c| c.input == i) {
                return Err(input_error("carries two outputs".into()));
            }
            let (src, dest) = (&p.buffers[p.outputs[out].buffer as usize], &p.buffers[p.inputs[i].buffer as usize]);
            if src.storage != dest.storage || src.shape != dest.shape {
                return Err(input_error(format!(
                    "{:?} {:?} cannot carry output {output}, {:?} {:?}",
                    dest.storage, dest.shape, src.storage, src.shape
                )));
            }
            let (input_buffer, output_buffer) = (p.inputs[i].buffer, p.outputs[out].buffer);
            let swap = swappable(p, input_buffer, output_buffer, &carry.pairs);
            carry.pairs.push(Carried { output: out, input: i, swap });
        }
        Ok(carry)
    }

    /// Writes `inputs`, runs the program, then copies every output `carry` names into its
    /// resident input inside the arena (bytes as stored, no conversion), so the next run reads
    /// them; returns the other outputs by name, in the program's order.
    pub fn run_carrying<T: InputData>(
        &mut self,
        inputs: &[(String, T)],
        carry: &Carry,
        profile: Option<&mut Profile>,
    ) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.run_steps(inputs, profile, Output::Tensor, carry).and_then(tensors)
    }

    /// The current value of resident input `name` (after [`Bound::run_carrying`], the carried
    /// output of the last run).
    pub fn resident_input(&self, name: &str) -> Result<Tensor, ArtifactError> {
        let p = &self.executor().program;
        let input_error = |message: &str| ArtifactError::Input { name: name.to_string(), message: message.into() };
        let i = p.inputs.iter().position(|b| b.name == name).ok_or_else(|| input_error(NOT_AN_INPUT))?;
        if !self.resident[i] {
            return Err(input_error("not resident: its value is whatever the last run was fed"));
        }
        let binding = &p.inputs[i];
        let desc = &p.buffers[binding.buffer as usize];
        let shape: Vec<usize> = desc.shape.iter().map(|&n| n as usize).collect();
        let memory = Memory { arena: &self.arena, shared: &self.shared, offsets: &self.offsets };
        read_elements(self.executor().bytes(memory, binding.buffer), desc.storage, binding.dtype, &shape)
            .ok_or_else(|| input_error("buffer has the wrong size"))
    }

    /// Overwrites resident input `name` with `data` (a checkpoint's weights, say), as
    /// [`CpuExecutor::bind`] wrote it.
    pub fn write_resident<T: InputData>(&mut self, name: &str, data: T) -> Result<(), ArtifactError> {
        let p = &self.executor.borrow().program;
        let input_error = |message: String| ArtifactError::Input { name: name.to_string(), message };
        let i = p.inputs.iter().position(|b| b.name == name).ok_or_else(|| input_error(NOT_AN_INPUT.into()))?;
        if !self.resident[i] {
            return Err(input_error("not resident: feed it per run".into()));
        }
        if self.shared_input[i] {
            return Err(input_error("a shared input is read-only".into()));
        }
        let given = [(name.to_string(), data)];
        let (data, desc, _) = super::bound_input(p, &p.inputs[i], &given)?;
        let offset = self.offsets[p.inputs[i].buffer as usize];
        // SAFETY: the loader checked that the buffer lies inside the arena, and no other
        // reference into the arena is alive (`&mut self`).
        let dest =
            unsafe { std::slice::from_raw_parts_mut(self.arena.ptr.add(offset as usize), desc.bytes() as usize) };
        data.write_into(desc.storage, dest).map_err(input_error)?;
        self.bind_results_current = false;
        Ok(())
    }

    /// Writes the resident inputs (`resident` true) or the per-run ones into the arena.
    fn write_inputs<T: InputData>(&mut self, inputs: &[(String, T)], resident: bool) -> Result<(), ArtifactError> {
        let p = &self.executor.borrow().program;
        let written = p.inputs.iter().zip(self.resident.iter().zip(&self.shared_input));
        for (binding, _) in written.filter(|(_, (r, shared))| **r == resident && !**shared) {
            let input_error = |message: String| ArtifactError::Input { name: binding.name.clone(), message };
            let (data, desc, _) = super::bound_input(p, binding, inputs)?;
            let offset = self.offsets[binding.buffer as usize];
            // SAFETY: the loader checked that the buffer lies inside the arena, and no other
            // reference into the arena is alive (`&mut self`).
            let dest =
                unsafe { std::slice::from_raw_parts_mut(self.arena.ptr.add(offset as usize), desc.bytes() as usize) };
            data.write_into(desc.storage, dest).map_err(input_error)?;
        }
        Ok(())
    }

    fn run_steps<T: InputData>(
        &mut self,
        inputs: &[(String, T)],
        mut profile: Option<&mut Profile>,
        output: Output,
        carry: &Carry,
    ) -> Result<Vec<(String, Feed)>, ArtifactError> {
        super::check_run_inputs(&self.executor.borrow().program, &self.resident, inputs)?;
        let started = profile.as_ref().map(|_| Instant::now());
        self.write_inputs(inputs, false)?;
        if let (Some(profile), Some(started)) = (profile.as_deref_mut(), started) {
            profile.record("inputs (copied into the arena)", started.elapsed());
        }
        if !self.bind_results_current {
            self.run_bind_steps()?;
        }
        let executor = self.executor.borrow();
        let p = &executor.program;
        let arena = Memory { arena: &self.arena, shared: &self.shared, offsets: &self.offsets };
        let skip = self.bind_step.as_slice();
        match &self.comm {
            Some(comm) => executor.steps(arena, skip, Some(comm), profile.as_deref_mut())?,
            None => {
                // The steps run on a thread of rayon's pool, so that each parallel library call
                // (a GEMM split over threads, convolution planes) starts its tasks from a worker
                // instead of handing them from this thread to the pool and sleeping until they
                // end: `perf` of one-thread runs of PP-OCRv4 det put 6% in that hand-off's
                // futex waits and wake-ups, once per parallel call. A program with a
                // communicator stays on its own thread: its collective steps block on the
                // other ranks, which may be threads of this process waiting for the same pool.
                let job = SendJob((executor, arena, profile.as_deref_mut()));
                rayon::scope(move |_| {
                    // A method call, so that the closure captures the whole `job` (its fields
                    // alone are not `Send`).
                    let (executor, arena, profile) = job.into_parts();
                    executor.steps(arena, skip, None, profile)
                })?;
            }
        }
        let started = profile.as_ref().map(|_| Instant::now());
        let mut results = Vec::with_capacity(p.outputs.len());
        for (o, binding) in p.outputs.iter().enumerate() {
            if carry.pairs.iter().any(|c| c.output == o) {
                continue;
            }
            let desc = &p.buffers[binding.buffer as usize];
            let bytes = executor.bytes(arena, binding.buffer);
            let shape: Vec<usize> = desc.shape.iter().map(|&n| n as usize).collect();
            let feed = match output {
                Output::Tensor => read_elements(bytes, desc.storage, binding.dtype, &shape).map(Feed::Tensor),
                Output::Stored => Some(Feed::Stored { dtype: binding.dtype, shape, data: bytes.to_vec(), start: 0 }),
            };
            let feed = feed.ok_or_else(|| ArtifactError::Input {
                name: binding.name.clone(),
                message: "output buffer has the wrong size".into(),
            })?;
            results.push((binding.name.clone(), feed));
        }
        if let (Some(profile), Some(started)) = (profile.as_deref_mut(), started) {
            profile.record("outputs (read from the arena)", started.elapsed());
        }
        let started = profile.as_ref().map(|_| Instant::now());
        for c in carry.pairs.iter().filter(|c| c.swap.is_none()) {
            let src = executor.pointer(arena, p.outputs[c.output].buffer);
            let dest = executor.pointer(arena, p.inputs[c.input].buffer);
            let len = p.buffers[p.inputs[c.input].buffer as usize].bytes() as usize;
            // SAFETY: both buffers lie inside their regions (checked by the loader) and have
            // `len` bytes (`Bound::carry` checked storage and shape); the destination is an
            // input's arena range, which no step writes; `copy` allows the two to overlap.
            unsafe { std::ptr::copy(src, dest, len) };
        }
        for (c, swap) in carry.pairs.iter().filter_map(|c| c.swap.as_ref().map(|s| (c, s))) {
            // The output's range now holds the input's next value: trade the two ranges, and
            // with them every view inside each, instead of copying the bytes.
            let (input_start, output_start) =
                (self.offsets[p.inputs[c.input].buffer as usize], self.offsets[p.outputs[c.output].buffer as usize]);
            for &b in &swap.input_views {
                self.offsets[b as usize] = self.offsets[b as usize] - input_start + output_start;
            }
            for &b in &swap.output_views {
                self.offsets[b as usize] = self.offsets[b as usize] - output_start + input_start;
            }
        }
        if !carry.pairs.is_empty() {
            self.bind_results_current = false;
        }
        if let (Some(profile), Some(started)) = (profile, started) {
            if !carry.pairs.is_empty() {
                profile.record("carried outputs (ranges swapped with their inputs', or copied)", started.elapsed());
            }
        }
        Ok(results)
    }
}

/// Outputs that replace resident inputs after each run ([`Bound::carry`]): a training step's
/// updated weights and optimizer state, which stay in the arena from step to step.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    pairs: Vec<Carried>,
}

impl Carry {
    /// How many outputs are carried.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many of them trade arena ranges with their inputs after a run ([`Swap`]); the
    /// others are copied.
    pub fn swapped(&self) -> usize {
        self.pairs.iter().filter(|c| c.swap.is_some()).count()
    }
}

#[derive(Debug, Clone)]
struct Carried {
    /// Index into the program's outputs.
    output: usize,
    /// Index into the program's inputs.
    input: usize,
    /// The buffers that move when the two ranges are traded; `None`: the output is copied
    /// onto the input after each run instead.
    swap: Option<Swap>,
}

/// A carried output whose arena range trades places with its input's after each run. Both
/// ranges are pinned (live for the whole program, written by no other value), so renaming one
/// as the other is another valid memory plan of the same program: the steps then read the
/// state from where the last run wrote it and write the next state over the old one, with no
/// copy (a GPT-2 step carries 1.5 GB of weights and AdamW moments).
#[derive(Debug, Clone)]
struct Swap {
    /// The buffers lying in the input's range (the input and its views).
    input_views: Vec<u32>,
    /// The buffers lying in the output's range.
    output_views: Vec<u32>,
}

/// The [`Swap`] of carried pair (`input`, `output`), if their ranges can trade places: both in
/// the arena, the same size, disjoint, each holding only buffers that lie wholly inside it (the
/// value and its reshapes), and neither overlapping a range that an earlier pair swaps.
fn swappable(p: &Program, input: u32, output: u32, earlier: &[Carried]) -> Option<Swap> {
    let range = |b: u32| match p.buffers[b as usize].location {
        Location::Arena { offset } => Some((offset, offset + p.buffers[b as usize].bytes())),
        Location::Weights { .. } => None,
    };
    let (input_range, output_range) = (range(input)?, range(output)?);
    let overlaps = |(a0, a1): (u64, u64), (b0, b1): (u64, u64)| a0 < b1 && b0 < a1;
    if input_range.1 - input_range.0 != output_range.1 - output_range.0 || overlaps(input_range, output_range) {
        return None;
    }
    let earlier_ranges = earlier
        .iter()
        .filter(|c| c.swap.is_some())
        .flat_map(|c| [range(p.inputs[c.input].buffer), range(p.outputs[c.output].buffer)].into_iter().flatten());
    for r in earlier_ranges {
        if overlaps(r, input_range) || overlaps(r, output_range) {
            return None;
        }
    }
    let views = |(start, end): (u64, u64)| -> Option<Vec<u32>> {
        let mut inside = Vec::new();
        for b in 0..p.buffers.len() as u32 {
            let Some((b0, b1)) = range(b) else { continue };
            // A zero-size buffer at a range's end does not lie in it.
            if b0 >= start && b1 <= end && b0 < end {
                inside.push(b);
            } else if overlaps((b0, b1), (start, end)) {
                return None;
            }
        }
        Some(inside)
    };
    Some(Swap { input_views: views(input_range)?, output_views: views(output_range)? })
}

/// How a run returns its outputs.
#[derive(Clone, Copy)]
enum Output {
    Tensor,
    Stored,
}

/// The outputs as tensors (those read as [`Output::Tensor`] already are).
fn tensors(outputs: Vec<(String, Feed)>) -> Result<Vec<(String, Tensor)>, ArtifactError> {
    outputs
        .into_iter()
        .map(|(name, feed)| match feed {
            Feed::Tensor(t) => Ok((name, t)),
            stored => match stored.to_tensor() {
                Ok(t) => Ok((name, t)),
                Err(message) => Err(ArtifactError::Input { name, message }),
            },
        })
        .collect()
}

fn describe(step: &Step) -> String {
    match step {
        Step::Kernel { symbol, .. } => format!("kernel {symbol}"),
        Step::Library { call, .. } => format!("library call {}", call.name()),
    }
}
