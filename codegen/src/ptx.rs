//! [`compile_ptx`]: kernel graphs to PTX for NVIDIA GPUs (sm_80, sm_90).
//!
//! Each kernel graph becomes one `gpu.module` whose `gpu.func`s are its materialized values in
//! program order, one thread per output index (rows for softmax and norms, which loop inside the
//! thread); [`crate::emit`] writes the same loop bodies as on the CPU. The pipeline attaches an
//! NVVM target, lowers to the `nvvm` dialect with bare-pointer memref parameters, links
//! libdevice (for `exp`, `tanh`, `erf`, ...) and emits PTX with `gpu-module-to-binary{format=isa}`.
//!
//! Launch protocol (what an executor does with a [`PtxModule`]): allocate every temporary of
//! `temporaries` (element count × 4 bytes for `f32`, 8 for `i64`, 1 for `i8`), then launch
//! `launches` in order on one stream, each with `grid = [ceil(threads / block), 1, 1]` and
//! `block = [block, 1, 1]`, passing as parameters one device pointer per kernel-graph input,
//! then per output, then per temporary (the same buffers, in the same order, for every launch).

use crate::emit::emit_gpu_kernel;
use crate::error::CodegenError;
use crate::mlir::MlirSession;
use crate::{check_symbols, KernelSource};
use melior::ir::attribute::AttributeLike;
use melior::ir::block::BlockLike;
use melior::ir::operation::OperationLike;
use std::path::PathBuf;

/// The GPU architectures PTX is emitted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuArch {
    /// Ampere (A100).
    Sm80,
    /// Hopper (H100, H200).
    Sm90,
}

impl GpuArch {
    /// The `sm_XX` name (`ptxas -arch`, `.target`).
    pub fn name(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "sm_80",
            GpuArch::Sm90 => "sm_90",
        }
    }
}

/// Threads per block of every launch.
pub const BLOCK_SIZE: u32 = 256;

/// One kernel launch of a [`PtxModule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuLaunch {
    /// The `.entry` name in the PTX.
    pub entry: String,
    /// Threads to run (the grid covers them with blocks of [`GpuLaunch::block`]).
    pub threads: u64,
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

/// A temporary buffer the executor allocates for a [`PtxModule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuTemporary {
    pub elements: u64,
    pub bytes: u64,
}

/// The PTX of one kernel graph and how to launch it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxModule {
    pub symbol: String,
    pub arch: GpuArch,
    pub ptx: String,
    pub launches: Vec<GpuLaunch>,
    pub temporaries: Vec<GpuTemporary>,
}

/// Where libdevice (NVIDIA's bitcode math library) is looked for, in order: `$TESSERA_LIBDEVICE`,
/// the repository cache written by `scripts/fetch-ptxas.sh`, and a CUDA installation.
pub fn libdevice_candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("TESSERA_LIBDEVICE") {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.cache/cuda-nvcc/nvvm/libdevice/libdevice.10.bc"
    )));
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        paths.push(PathBuf::from(home).join("nvvm/libdevice/libdevice.10.bc"));
    }
    paths.push(PathBuf::from("/usr/local/cuda/nvvm/libdevice/libdevice.10.bc"));
    paths
}

/// Compiles each kernel into its own PTX module for `arch`.
pub fn compile_ptx(kernels: &[KernelSource], arch: GpuArch) -> Result<Vec<PtxModule>, CodegenError> {
    check_symbols(kernels)?;
    let mut modules = String::new();
    let mut plans = Vec::new();
    for k in kernels {
        let text = emit_gpu_kernel(&k.symbol, &k.graph)?;
        modules.push_str(&text.module);
        plans.push(text);
    }
    let text = format!("module attributes {{gpu.container_module}} {{\n{modules}}}\n");
    // libdevice is linked only when a kernel calls a math function.
    let link = if text.contains(" math.") {
        let candidates = libdevice_candidates();
        let found = candidates.iter().find(|p| p.is_file()).ok_or_else(|| CodegenError::MissingLibdevice {
            searched: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        })?;
        let path = found.display().to_string();
        if path.contains([',', '}', ' ']) {
            return Err(CodegenError::MissingLibdevice { searched: format!("{path} (path has ',', '}}' or ' ')") });
        }
        format!(" l={path}")
    } else {
        String::new()
    };
    let pipeline = format!(
        "builtin.module(nvvm-attach-target{{chip={} features=+ptx80 O=3{link}}},gpu.module(arith-expand{{include-bf16=true}},\
         convert-scf-to-cf,convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=true}},reconcile-unrealized-casts),\
         gpu-module-to-binary{{format=isa}})",
        arch.name()
    );
    let session = MlirSession::new();
    let mut module = session.parse(&text)?;
    session.run_pipeline(&mut module, &pipeline)?;
    let ptx = binaries(&module)?;
    kernels
        .iter()
        .zip(plans)
        .map(|(k, plan)| {
            let ptx = ptx
                .iter()
                .find(|(name, _)| *name == k.symbol)
                .map(|(_, text)| text.clone())
                .ok_or_else(|| CodegenError::Internal(format!("no gpu.binary for {}", k.symbol)))?;
            let launches = plan
                .launches
                .into_iter()
                .map(|(entry, threads)| {
                    let blocks = (threads as u64).div_ceil(BLOCK_SIZE as u64);
                    let grid = u32::try_from(blocks)
                        .map_err(|_| CodegenError::Internal(format!("{entry}: {threads} threads exceed a 1-D grid")))?;
                    Ok(GpuLaunch { entry, threads: threads as u64, grid: [grid, 1, 1], block: [BLOCK_SIZE, 1, 1] })
                })
                .collect::<Result<Vec<_>, CodegenError>>()?;
            let temporaries = plan
                .temporaries
                .into_iter()
                .map(|(n, ty)| {
                    let width = match ty {
                        "i64" => 8,
                        "i8" => 1,
                        _ => 4,
                    };
                    GpuTemporary { elements: n as u64, bytes: n as u64 * width }
                })
                .collect();
            Ok(PtxModule { symbol: k.symbol.clone(), arch, ptx, launches, temporaries })
        })
        .collect()
}

/// The PTX text of every `gpu.binary` op of the lowered module, by symbol name.
fn binaries(module: &melior::ir::Module) -> Result<Vec<(String, String)>, CodegenError> {
    let mut found = Vec::new();
    let mut op = module.body().first_operation();
    while let Some(operation) = op {
        if operation.name().as_string_ref().as_str().ok() == Some("gpu.binary") {
            let name = operation
                .attribute("sym_name")
                .ok()
                .and_then(|a| melior::ir::attribute::StringAttribute::try_from(a).ok())
                .map(|s| s.value().to_string())
                .ok_or_else(|| CodegenError::Internal("gpu.binary without a name".into()))?;
            let objects = operation
                .attribute("objects")
                .map_err(|_| CodegenError::Internal(format!("gpu.binary @{name} without objects")))?;
            // SAFETY: `objects` of gpu.binary is an array of #gpu.object attributes.
            let text = unsafe {
                let object = mlir_sys::mlirArrayAttrGetElement(objects.to_raw(), 0);
                let s = mlir_sys::mlirGPUObjectAttrGetObject(object);
                let bytes = std::slice::from_raw_parts(s.data as *const u8, s.length);
                String::from_utf8_lossy(bytes).into_owned()
            };
            found.push((name, text));
        }
        op = operation.next_in_block();
    }
    Ok(found)
}
