//! The CUDA executor: runs a `cuda:sm_80`/`cuda:sm_90` artifact on device 0 through cudarc.
//!
//! cudarc loads the driver, NVRTC and cuBLAS libraries at run time and panics on the first call
//! into one that is missing, so every entry point checks for them first ([`driver_present`],
//! [`check`]) and reports "no CUDA driver found" as a typed error.
//!
//! What a run does, in the program's order on one stream: the weights image is uploaded once
//! (at load); [`CudaExecutor::bind`] allocates one device arena of the program's size (the
//! CPU's static memory plan: buffer offsets are arena offsets) and uploads the resident inputs
//! (weights) once; each [`Bound::run`] uses it and one scratch region for kernel temporaries:
//! the other inputs are copied in, each kernel step launches its entries (from the cubin when it
//! loads on this device, else from the PTX) with
//! the grid and block the compiler computed, each GEMM step is `cublasSgemmStridedBatched`
//! with the compiler's transposes and strides, and each other library step (gather, transpose,
//! slices, the reference fallback) runs on the host between a download of its inputs and an
//! upload of its outputs. Finally the outputs are copied back.
//!
//! # The CUDA executor
//!
//! - **CUDA executor** (`runtime::executor::cuda`, cudarc with dynamic loading): checks for
//!   `libcuda` (`is_culib_present`) and cuBLAS before any CUDA call, since cudarc panics on a
//!   missing library, and reports "no CUDA driver found". With a driver: uploads the weights
//!   once, loads each kernel's cubin (or, when there is none or it is for another architecture,
//!   its PTX, JIT-compiled by the driver); per bind allocates the device arena and uploads the
//!   resident inputs; per run copies the other inputs in, launches kernels and GEMMs in step order, runs the
//!   remaining library steps (gather, transpose, slice, split, concat, reference) on the host
//!   between a download and an upload (the compile report counts them), and copies outputs out.
//!   No GPU was available while it was written: it is unexercised on hardware. What is checked
//!   without one: every PTX file assembles with ptxas for its architecture, the GEMM plans run
//!   under cuBLAS's documented column-major semantics give the row-major matmul (unit test), the
//!   loader's checks, and the no-driver error. `tessera bench kernels --target cuda`
//!   (`CudaBench`) times fused elementwise/softmax/layer-norm kernels with CUDA events against
//!   the device-to-device copy bandwidth; it compiles the kernels first, so machines without a GPU
//!   check the PTX and then stop at the driver check.

use super::library::{self, In, Out};
use super::load::Artifact;
use super::{ArtifactError, Feed, InputData};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;
use tessera_ir::artifact::{
    BufferDesc, GpuGemm, GpuKernel, GpuLaunch, GpuProgram, LibraryCall, Location, Program, Step,
};
use tessera_ir::tensor::Tensor;

/// Whether a CUDA driver library (`libcuda.so.1`) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: loading libcuda runs its initializers, as any CUDA program does; it is unloaded
    // again when the handle drops.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Checks that a CUDA artifact could run here; errors "no CUDA driver found" without a driver,
/// and names the missing library when cuBLAS or NVRTC (PTX loading) is absent.
pub fn check(artifact: &Artifact) -> Result<(), ArtifactError> {
    let target = artifact.program.target.clone();
    if !driver_present() {
        return Err(ArtifactError::Target { target, message: "no CUDA driver found".into() });
    }
    // SAFETY: as for the driver; nothing is called through these libraries here.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(ArtifactError::Target { target, message: "the CUDA driver is present but cuBLAS is not".into() });
    }
    if artifact.program.gpu.is_none() {
        return Err(ArtifactError::Target { target, message: "the program has no GPU section".into() });
    }
    Ok(())
}

/// What the executor does for one step.
enum StepPlan {
    /// Launches of a kernel: the loaded entry functions and the kernel's index in the GPU section.
    Kernel { functions: Vec<CudaFunction>, kernel: usize },
    /// A cuBLAS GEMM (index into [`GpuProgram::gemms`]).
    Gemm(usize),
    /// A library call run on the host.
    Host,
}

/// A loaded CUDA program, ready to run any number of times.
pub struct CudaExecutor {
    program: Program,
    gpu: GpuProgram,
    /// The weights image on the host too, for host steps that read a constant.
    host_weights: Vec<u8>,
    plans: Vec<StepPlan>,
    weights: CudaSlice<u8>,
    scratch: CudaSlice<u8>,
    blas: CudaBlas,
    stream: Arc<CudaStream>,
    _context: Arc<CudaContext>,
}

fn cuda_error(artifact: &Artifact, what: &str, e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Target { target: artifact.program.target.clone(), message: format!("{what}: {e}") }
}

impl CudaExecutor {
    /// Creates a context on device 0, loads every kernel module and uploads the weights.
    pub fn new(artifact: Artifact) -> Result<CudaExecutor, ArtifactError> {
        check(&artifact)?;
        let gpu = artifact.program.gpu.clone().ok_or_else(|| cuda_error(&artifact, "program", "no GPU section"))?;
        let context =
            CudaContext::new(0).map_err(|e| cuda_error(&artifact, "cannot create a context on device 0", e))?;
        let stream = context.default_stream();
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| cuda_error(&artifact, "cannot create a cuBLAS handle", e))?;
        let mut plans = Vec::with_capacity(artifact.program.steps.len());
        let mut loaded: Vec<Option<Vec<CudaFunction>>> = vec![None; gpu.kernels.len()];
        let mut gemms = gpu.gemms.iter().enumerate().map(|(i, g)| (g.step as usize, i)).collect::<Vec<_>>().into_iter();
        let mut next_gemm = gemms.next();
        for (s, step) in artifact.program.steps.iter().enumerate() {
            plans.push(match step {
                Step::Kernel { symbol, .. } => {
                    let kernel = gpu.kernels.iter().position(|k| k.symbol == *symbol).ok_or_else(|| {
                        cuda_error(&artifact, &format!("step {s}"), format!("no GPU code for {symbol}"))
                    })?;
                    // Deduplicated kernels are launched by many steps: load each module once.
                    let functions = match &loaded[kernel] {
                        Some(functions) => Vec::clone(functions),
                        None => {
                            let functions = load_kernel(&context, &artifact, &gpu.kernels[kernel], symbol)?;
                            loaded[kernel] = Some(functions.clone());
                            functions
                        }
                    };
                    StepPlan::Kernel { functions, kernel }
                }
                Step::Library { .. } => match next_gemm {
                    Some((step, gemm)) if step == s => {
                        next_gemm = gemms.next();
                        StepPlan::Gemm(gemm)
                    }
                    _ => StepPlan::Host,
                },
            });
        }
        let weights = upload(&stream, &artifact.weights).map_err(|e| cuda_error(&artifact, "weights", e))?;
        let scratch = stream
            .alloc_zeros::<u8>(gpu.scratch_bytes.max(1) as usize)
            .map_err(|e| cuda_error(&artifact, "scratch", e))?;
        Ok(CudaExecutor {
            program: artifact.program,
            gpu,
            host_weights: artifact.weights,
            plans,
            weights,
            scratch,
            blas,
            stream,
            _context: context,
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Binds `resident` inputs once (by name, of their declared dtype and shape): allocates a
    /// device arena that stays with the returned [`Bound`] and uploads them into it. Each
    /// [`Bound::run`] then uploads only the other inputs. Fails if a name is not a program
    /// input or a step would overwrite the input's buffer (see `executor::resident_inputs`).
    pub fn bind<T: InputData>(&self, resident: &[(String, T)]) -> Result<Bound<'_>, ArtifactError> {
        let p = &self.program;
        let is_resident = super::resident_inputs(p, resident.iter().map(|(name, _)| name.as_str()))?;
        let device = |message: String| ArtifactError::Target { target: p.target.clone(), message };
        let arena =
            self.stream.alloc_zeros::<u8>(p.arena_bytes.max(1) as usize).map_err(|e| device(format!("arena: {e}")))?;
        let mut bound = Bound { executor: self, arena, resident: is_resident };
        bound.upload_inputs(resident, true)?;
        Ok(bound)
    }

    /// Runs the program on `inputs` (every program input by name, of its declared dtype and
    /// shape) and returns the outputs by name, in the program's order.
    pub fn run<T: InputData>(&self, inputs: &[(String, T)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.bind::<T>(&[])?.run(inputs)
    }

    /// The device address of `buffer`.
    fn address(&self, arena: &CudaSlice<u8>, buffer: u32) -> u64 {
        let (base, offset) = match self.program.buffers[buffer as usize].location {
            Location::Arena { offset } => (arena.device_ptr(&self.stream).0, offset),
            Location::Weights { offset } => (self.weights.device_ptr(&self.stream).0, offset),
        };
        base + offset
    }

    fn launch(
        &self,
        arena: &CudaSlice<u8>,
        functions: &[CudaFunction],
        kernel: usize,
        inputs: &[u32],
        outputs: &[u32],
    ) -> Result<(), String> {
        let code = &self.gpu.kernels[kernel];
        let scratch = self.scratch.device_ptr(&self.stream).0;
        let params: Vec<u64> = inputs
            .iter()
            .chain(outputs)
            .map(|&b| self.address(arena, b))
            .chain(code.temporaries.iter().map(|t| scratch + t.scratch_offset))
            .collect();
        // SAFETY: the kernel's parameters are one pointer per input, output and temporary
        // (the compiler's launch protocol); every buffer lies inside its allocation (checked
        // by the loader) and the scratch region holds every temporary.
        unsafe { launch_in_order(&self.stream, functions, &code.launches, &params) }
    }

    fn gemm(&self, arena: &CudaSlice<u8>, g: &GpuGemm, inputs: &[u32], outputs: &[u32]) -> Result<(), String> {
        let (&[a, b], &[c]) = (inputs, outputs) else { return Err("a GEMM takes two inputs and one output".into()) };
        let (a, b, c) = (self.address(arena, a), self.address(arena, b), self.address(arena, c));
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let int = |x: u64| i32::try_from(x).map_err(|_| format!("{x} exceeds cuBLAS's int"));
        let long = |x: u64| i64::try_from(x).map_err(|_| format!("{x} exceeds cuBLAS's long"));
        let (alpha, beta) = (1.0f32, 0.0f32);
        for call in &g.calls {
            let f32_at = |base: u64, offset: u64| base + offset * 4;
            // SAFETY: the compiler planned the GEMM from the buffers' shapes, so every matrix of
            // every batch lies inside its buffer; the handle runs on this executor's stream.
            unsafe {
                cudarc::cublas::result::sgemm_strided_batched(
                    *self.blas.handle(),
                    op(g.trans_b),
                    op(g.trans_a),
                    int(g.m.into())?,
                    int(g.n.into())?,
                    int(g.k.into())?,
                    &alpha,
                    f32_at(b, call.offset_b) as *const f32,
                    int(g.ld_b.into())?,
                    long(call.stride_b)?,
                    f32_at(a, call.offset_a) as *const f32,
                    int(g.ld_a.into())?,
                    long(call.stride_a)?,
                    &beta,
                    f32_at(c, call.offset_c) as *mut f32,
                    int(g.ld_c.into())?,
                    long(call.stride_c)?,
                    int(call.batch.into())?,
                )
            }
            .map_err(|e| format!("cublasSgemmStridedBatched: {e}"))?;
        }
        Ok(())
    }

    /// Copies `desc`'s bytes to the host (8-byte aligned, so f32 and i64 views work).
    fn download(&self, arena: &CudaSlice<u8>, desc: &BufferDesc) -> Result<Vec<u8>, String> {
        let len = desc.bytes() as usize;
        match desc.location {
            Location::Weights { offset } => Ok(self.host_weights[offset as usize..offset as usize + len].to_vec()),
            Location::Arena { offset } => {
                let mut host = vec![0u8; len];
                let view = arena.slice(offset as usize..offset as usize + len);
                self.stream.memcpy_dtoh(&view, &mut host).map_err(|e| e.to_string())?;
                // The copy is asynchronous on the stream; the host reads `host` next.
                self.stream.synchronize().map_err(|e| e.to_string())?;
                Ok(host)
            }
        }
    }

    fn host_step(
        &self,
        arena: &mut CudaSlice<u8>,
        call: &LibraryCall,
        inputs: &[u32],
        outputs: &[u32],
    ) -> Result<(), String> {
        let buffers = &self.program.buffers;
        let staged: Vec<Aligned> = inputs
            .iter()
            .map(|&b| self.download(arena, &buffers[b as usize]).map(|bytes| Aligned::from(&bytes)))
            .collect::<Result<_, _>>()?;
        let mut results: Vec<Aligned> = outputs.iter().map(|&b| Aligned::zeroed(buffers[b as usize].bytes())).collect();
        {
            let ins: Vec<In> =
                inputs.iter().zip(&staged).map(|(&b, s)| In { desc: &buffers[b as usize], bytes: s.bytes() }).collect();
            let mut outs: Vec<Out> = outputs
                .iter()
                .zip(&mut results)
                .map(|(&b, s)| Out { desc: &buffers[b as usize], bytes: s.bytes_mut() })
                .collect();
            host_library_call(call, &ins, &mut outs)?;
        }
        for (&b, result) in outputs.iter().zip(&results) {
            let Location::Arena { offset } = buffers[b as usize].location else {
                return Err("a step writes the weights".into());
            };
            let bytes = result.bytes();
            let mut view = arena.slice_mut(offset as usize..offset as usize + bytes.len());
            self.stream.memcpy_htod(bytes, &mut view).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A [`CudaExecutor`] with some inputs bound once ([`CudaExecutor::bind`]): one device arena,
/// kept across runs, that holds the resident inputs. As on the CPU, the memory plan pins every
/// input's range (no step writes it) and every other range is written before it is read.
pub struct Bound<'e> {
    executor: &'e CudaExecutor,
    arena: CudaSlice<u8>,
    /// Per program input: bound once (true) or fed per run.
    resident: Vec<bool>,
}

impl Bound<'_> {
    /// Uploads `inputs` and runs the program: `inputs` must be exactly the program inputs that
    /// are not resident. Returns the outputs by name, in the program's order.
    pub fn run<T: InputData>(&mut self, inputs: &[(String, T)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        let outputs = self.run_stored(inputs)?;
        let mut tensors = Vec::with_capacity(outputs.len());
        for (name, feed) in outputs {
            match feed.to_tensor() {
                Ok(t) => tensors.push((name, t)),
                Err(message) => return Err(ArtifactError::Input { name, message }),
            }
        }
        Ok(tensors)
    }

    /// [`Bound::run`] returning each output as its stored bytes ([`Feed::Stored`], as
    /// downloaded) instead of a tensor, as the CPU executor's `run_stored` does.
    pub fn run_stored<T: InputData>(&mut self, inputs: &[(String, T)]) -> Result<Vec<(String, Feed)>, ArtifactError> {
        let executor = self.executor;
        let p = &executor.program;
        super::check_run_inputs(p, &self.resident, inputs)?;
        self.upload_inputs(inputs, false)?;
        let device = |message: String| ArtifactError::Target { target: p.target.clone(), message };
        let arena = &mut self.arena;
        for (s, step) in p.steps.iter().enumerate() {
            let step_error = |message: String| ArtifactError::Step { step: s, what: describe(step), message };
            match (&executor.plans[s], step) {
                (StepPlan::Kernel { functions, kernel }, Step::Kernel { inputs, outputs, .. }) => {
                    executor.launch(arena, functions, *kernel, inputs, outputs).map_err(step_error)?
                }
                (StepPlan::Gemm(g), Step::Library { inputs, outputs, .. }) => {
                    executor.gemm(arena, &executor.gpu.gemms[*g], inputs, outputs).map_err(step_error)?
                }
                (StepPlan::Host, Step::Library { call, inputs, outputs }) => {
                    executor.host_step(arena, call, inputs, outputs).map_err(step_error)?
                }
                _ => return Err(step_error("the step does not match its loaded plan".into())),
            }
        }
        let mut results = Vec::with_capacity(p.outputs.len());
        for binding in &p.outputs {
            let desc = &p.buffers[binding.buffer as usize];
            let data = executor.download(arena, desc).map_err(|e| device(format!("output {}: {e}", binding.name)))?;
            let shape: Vec<usize> = desc.shape.iter().map(|&n| n as usize).collect();
            results.push((binding.name.clone(), Feed::Stored { dtype: binding.dtype, shape, data, start: 0 }));
        }
        Ok(results)
    }

    /// Uploads the resident inputs (`resident` true) or the per-run ones into the arena.
    fn upload_inputs<T: InputData>(&mut self, inputs: &[(String, T)], resident: bool) -> Result<(), ArtifactError> {
        let executor = self.executor;
        let p = &executor.program;
        for (binding, _) in p.inputs.iter().zip(&self.resident).filter(|(_, &r)| r == resident) {
            let input_error = |message: String| ArtifactError::Input { name: binding.name.clone(), message };
            let (data, desc, offset) = super::bound_input(p, binding, inputs)?;
            let bytes = data.stored_bytes(desc.storage).map_err(input_error)?;
            let mut view = self.arena.slice_mut(offset as usize..offset as usize + bytes.len());
            executor.stream.memcpy_htod(bytes.as_ref(), &mut view).map_err(|e| input_error(format!("upload: {e}")))?;
        }
        Ok(())
    }
}

/// The checked bytes of a PTX or cubin file (the loader kept them: the file is not read again,
/// so what runs is what was checked).
fn read_code(artifact: &Artifact, rel: &str) -> Result<Vec<u8>, ArtifactError> {
    artifact.gpu_code(rel).map(<[u8]>::to_vec).ok_or_else(|| ArtifactError::Kernels {
        path: artifact.rank_dir.join(rel),
        message: "not loaded with the program".into(),
    })
}

/// Loads the module of one GPU kernel (its cubin where that loads, else its PTX, which the
/// driver JIT-compiles for this device) and its entry functions.
fn load_kernel(
    context: &Arc<CudaContext>,
    artifact: &Artifact,
    code: &GpuKernel,
    symbol: &str,
) -> Result<Vec<CudaFunction>, ArtifactError> {
    // The cubin runs only on its architecture's devices; the PTX is JIT-compiled
    // by the driver for this device (same or newer architecture).
    let from_cubin = match &code.cubin_file {
        Some(cubin) => Some(context.load_module(Ptx::from_binary(read_code(artifact, cubin)?))),
        None => None,
    };
    let module = match from_cubin {
        Some(Ok(module)) => module,
        cubin_result => {
            let ptx = Ptx::from_src(String::from_utf8_lossy(&read_code(artifact, &code.ptx_file)?));
            context.load_module(ptx).map_err(|e| {
                let cubin = match cubin_result {
                    Some(Err(c)) => format!(" (its cubin: {c})"),
                    _ => String::new(),
                };
                cuda_error(artifact, &format!("cannot load the module of {symbol}"), format!("{e}{cubin}"))
            })?
        }
    };
    code.launches
        .iter()
        .map(|l| module.load_function(&l.entry).map_err(|e| cuda_error(artifact, &format!("entry {}", l.entry), e)))
        .collect()
}

/// Launches `functions[i]` with the geometry of `launches[i]`, in order on `stream`, each with
/// `params` as its parameters.
///
/// # Safety
/// `params` must be what the kernels expect under the compiler's launch protocol: one device
/// pointer per buffer, each into an allocation that holds everything the kernel touches.
unsafe fn launch_in_order(
    stream: &CudaStream,
    functions: &[CudaFunction],
    launches: &[GpuLaunch],
    params: &[u64],
) -> Result<(), String> {
    for (function, launch) in functions.iter().zip(launches) {
        let config = LaunchConfig {
            grid_dim: (launch.grid[0], launch.grid[1], launch.grid[2]),
            block_dim: (launch.block[0], launch.block[1], launch.block[2]),
            shared_mem_bytes: 0,
        };
        let mut builder = stream.launch_builder(function);
        for param in params {
            builder.arg(param);
        }
        // SAFETY: the caller vouches for the parameters (this function's contract).
        unsafe { builder.launch(config) }.map_err(|e| format!("launch of {}: {e}", launch.entry))?;
    }
    Ok(())
}

fn upload(stream: &Arc<CudaStream>, bytes: &[u8]) -> Result<CudaSlice<u8>, cudarc::driver::DriverError> {
    let mut slice = stream.alloc_zeros::<u8>(bytes.len().max(1))?;
    if !bytes.is_empty() {
        let mut view = slice.slice_mut(0..bytes.len());
        stream.memcpy_htod(bytes, &mut view)?;
    }
    Ok(slice)
}

/// Host bytes aligned to 8, so the library calls' f32/i64 views are aligned.
struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    fn zeroed(len: u64) -> Aligned {
        let len = len as usize;
        Aligned { words: vec![0; len.div_ceil(8)], len }
    }

    fn from(bytes: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(bytes.len() as u64);
        a.bytes_mut().copy_from_slice(bytes);
        a
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has alignment 1.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A library call on host buffers (what the CPU executor does for the same step).
fn host_library_call(call: &LibraryCall, ins: &[In], outs: &mut [Out]) -> Result<(), String> {
    let input = |i: usize| ins.get(i).ok_or_else(|| "missing operand".to_string());
    match call {
        LibraryCall::Reference { op } => library::reference(op, ins, outs),
        LibraryCall::Collective { op } => Err(format!(
            "tsr.{}: the CUDA executor runs one-device programs; mesh artifacts run on the CPU target",
            op.mnemonic()
        )),
        LibraryCall::Split { axis } => library::split(input(0)?, outs, *axis as usize),
        LibraryCall::Concat { axis } => library::concat(ins, outs.first_mut().ok_or("missing output")?, *axis as usize),
        LibraryCall::Recurrent { kind, cell } => super::recurrent::recurrent(*kind, cell, ins, outs),
        LibraryCall::WithEpilogue { gemm, epilogue } => {
            library::with_epilogue(gemm, epilogue, ins, outs.first_mut().ok_or("missing output")?)
        }
        _ => {
            let out = outs.first_mut().ok_or("missing output")?;
            match call {
                LibraryCall::MatMul => library::matmul(input(0)?, input(1)?, out, false),
                LibraryCall::MatMulTransposedB => library::matmul(input(0)?, input(1)?, out, true),
                LibraryCall::IntegerMatMul { dtype } => library::integer_matmul(input(0)?, input(1)?, out, *dtype),
                LibraryCall::Transpose { perm } => library::transpose(input(0)?, out, perm),
                LibraryCall::Gather { axis } => library::gather(input(0)?, input(1)?, out, *axis as usize),
                LibraryCall::Slice { starts, steps } => library::slice(input(0)?, out, starts, steps),
                LibraryCall::Conv2d { window, groups } => {
                    super::conv::conv2d(input(0)?, input(1)?, out, window, *groups)
                }
                LibraryCall::Pool2d { kind, kernel, window } => {
                    super::conv::pool2d(input(0)?, out, *kind, *kernel, window)
                }
                LibraryCall::WinogradInput { pads } => super::winograd::input(input(0)?, out, *pads),
                LibraryCall::WinogradWeight => super::winograd::weight(input(0)?, out),
                LibraryCall::WinogradOutput => super::winograd::output(input(0)?, out),
                LibraryCall::CrossEntropy => library::cross_entropy(input(0)?, input(1)?, out),
                LibraryCall::Scatter { axis, reduction } => {
                    library::scatter(input(0)?, input(1)?, input(2)?, out, *axis as i64, *reduction)
                }
                LibraryCall::Split { .. }
                | LibraryCall::Concat { .. }
                | LibraryCall::Recurrent { .. }
                | LibraryCall::Collective { .. }
                | LibraryCall::Reference { .. }
                | LibraryCall::WithEpilogue { .. } => Err("unreachable library call".into()),
            }
        }
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Kernel { symbol, .. } => format!("kernel {symbol}"),
        Step::Library { call, .. } => format!("library call {}", call.name()),
    }
}

/// Kernel timing on device 0, for `tessera bench kernels --target cuda`: the device's copy
/// bandwidth, and the time of a PTX kernel over buffers of given sizes.
pub struct CudaBench {
    stream: Arc<CudaStream>,
    context: Arc<CudaContext>,
}

/// A kernel to time: its PTX, its launches, and the bytes of every launch parameter's buffer
/// (kernel inputs, outputs, temporaries, in the launch protocol's order).
pub struct BenchKernel<'a> {
    pub ptx: &'a str,
    pub launches: &'a [tessera_ir::artifact::GpuLaunch],
    pub buffers: &'a [u64],
}

impl CudaBench {
    /// Errors "no CUDA driver found" on machines without one, before any CUDA call.
    pub fn new() -> Result<CudaBench, String> {
        if !driver_present() {
            return Err("no CUDA driver found".into());
        }
        let context = CudaContext::new(0).map_err(|e| format!("cannot create a context on device 0: {e}"))?;
        let stream = context.default_stream();
        Ok(CudaBench { stream, context })
    }

    /// The device's name.
    pub fn device_name(&self) -> Result<String, String> {
        self.context.name().map_err(|e| e.to_string())
    }

    /// Seconds per run of `work`, the mean of `reps` runs after one warm-up run, from events
    /// recorded on the stream around them.
    fn time(&self, reps: u32, mut work: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
        work()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timing).map_err(|e| e.to_string())?;
        for _ in 0..reps {
            work()?;
        }
        let end = self.stream.record_event(timing).map_err(|e| e.to_string())?;
        end.synchronize().map_err(|e| e.to_string())?;
        let ms = start.elapsed_ms(&end).map_err(|e| e.to_string())?;
        Ok(f64::from(ms) / 1e3 / f64::from(reps.max(1)))
    }

    /// Device-to-device copy bandwidth in bytes per second, counting the read and the write
    /// (2 · `bytes` per copy), as bandwidth tests do.
    pub fn copy_bandwidth(&self, bytes: u64, reps: u32) -> Result<f64, String> {
        let src = self.stream.alloc_zeros::<u8>(bytes as usize).map_err(|e| e.to_string())?;
        let mut dst = self.stream.alloc_zeros::<u8>(bytes as usize).map_err(|e| e.to_string())?;
        let seconds = self.time(reps, || self.stream.memcpy_dtod(&src, &mut dst).map_err(|e| e.to_string()))?;
        Ok(2.0 * bytes as f64 / seconds)
    }

    /// Seconds per run of `kernel` (all its launches, in order) over zeroed buffers.
    pub fn kernel_seconds(&self, kernel: &BenchKernel, reps: u32) -> Result<f64, String> {
        let module = self.context.load_module(Ptx::from_src(kernel.ptx)).map_err(|e| format!("load PTX: {e}"))?;
        let functions = kernel
            .launches
            .iter()
            .map(|l| module.load_function(&l.entry).map_err(|e| format!("entry {}: {e}", l.entry)))
            .collect::<Result<Vec<_>, _>>()?;
        let buffers = kernel
            .buffers
            .iter()
            .map(|&n| self.stream.alloc_zeros::<u8>(n.max(1) as usize).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let params: Vec<u64> = buffers.iter().map(|b| b.device_ptr(&self.stream).0).collect();
        // SAFETY: one buffer per kernel parameter, each of the size the compiler gave.
        self.time(reps, || unsafe { launch_in_order(&self.stream, &functions, kernel.launches, &params) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::Storage;
    use tessera_ir::ops::conv::{PoolKind, Window};

    fn desc(shape: &[u64]) -> BufferDesc {
        BufferDesc {
            name: "x".into(),
            storage: Storage::F32,
            shape: shape.to_vec(),
            location: Location::Arena { offset: 0 },
        }
    }

    fn le_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Runs `call` on the host as the CUDA executor does between copies; returns the output.
    fn host(call: &LibraryCall, inputs: &[(&[u64], &[f32])], out_shape: &[u64]) -> Vec<f32> {
        let descs: Vec<BufferDesc> = inputs.iter().map(|(s, _)| desc(s)).collect();
        let data: Vec<Aligned> = inputs.iter().map(|(_, v)| Aligned::from(&le_bytes(v))).collect();
        let ins: Vec<In> = descs.iter().zip(&data).map(|(d, w)| In { desc: d, bytes: w.bytes() }).collect();
        let dout = desc(out_shape);
        let mut result = Aligned::zeroed(4 * out_shape.iter().product::<u64>());
        host_library_call(call, &ins, &mut [Out { desc: &dout, bytes: result.bytes_mut() }]).expect("host call");
        result.bytes().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// Convolution and pooling steps of a CUDA program run on the host, with the CPU's results.
    #[test]
    fn conv_and_pool_run_on_the_host() {
        let window = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let conv = LibraryCall::Conv2d { window: window.clone(), groups: 1 };
        let summed = host(&conv, &[(&[1, 1, 3, 3], &x), (&[1, 1, 2, 2], &[1.0; 4])], &[1, 1, 2, 2]);
        assert_eq!(summed, [12.0, 16.0, 24.0, 28.0]);
        let pool = LibraryCall::Pool2d { kind: PoolKind::Max, kernel: [2, 2], window };
        assert_eq!(host(&pool, &[(&[1, 1, 3, 3], &x)], &[1, 1, 2, 2]), [5.0, 6.0, 8.0, 9.0]);
    }
}
