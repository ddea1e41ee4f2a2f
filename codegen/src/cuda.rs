//! The CUDA half of an artifact program: per-kernel PTX (and cubins when `ptxas` is at hand),
//! launch geometry, matmul steps as cuBLAS strided-batched GEMMs, and the scratch region for
//! kernel temporaries ([`tessera_ir::artifact::GpuProgram`]).
//!
//! The target-independent [`Program`] (steps, buffers, the static memory plan) is the CPU's:
//! buffer offsets are device arena offsets. Library steps other than f32 GEMMs (gather,
//! transpose, slices, the reference fallback, integer matmuls) have no device code; the CUDA
//! executor runs them on the host between copies, which the compile report counts.
//!
//! # CUDA targets
//!
//! - **CUDA targets** (`--target cuda:sm_80|cuda:sm_90`, `codegen::cuda`) share the lowering,
//!   steps, buffers and memory plan with the CPU (buffer offsets are device arena offsets); the
//!   program gets a `gpu` section (absent, and absent from the JSON, for the CPU): per distinct
//!   kernel `rank0/kernels/SYMBOL.ptx` (one PTX module per kernel, from `compile_ptx`) and, when `ptxas`
//!   is found at compile time (`$TESSERA_PTXAS`, `.cache/cuda-nvcc`, `$CUDA_HOME`), `SYMBOL.cubin`;
//!   launches with grid/block (1-D, 256 threads per block, grid from the loop nest's thread
//!   count); temporaries at offsets of one scratch region that all kernels share (steps run in
//!   order on one stream); and per matmul step a cuBLAS plan: `sgemm_strided_batched` in
//!   column-major terms (row-major `C = A·op(B)` is `Cᵀ = op(B)ᵀ·Aᵀ`, so cuBLAS's first operand
//!   is the step's `b`, transposed for `matmul_transposed_b`), a weight without batch dimensions
//!   folding the batch into the rows, one strided call for equal or fully broadcast batches, one
//!   call per result matrix for mixed broadcasting. The loader checks that every kernel step has
//!   code, temporaries fit the scratch region, and every GEMM call stays inside its buffers.
//!   Whether cubins are present depends on ptxas being installed, which the input hash does not
//!   cover: determinism holds per machine setup.

use crate::error::CodegenError;
use crate::ptx::{compile_ptx, GpuArch};
use crate::KernelSource;
use std::path::{Path, PathBuf};
use tessera_ir::artifact::{
    align, BufferDesc, GemmBatch, GpuGemm, GpuKernel, GpuLaunch, GpuProgram, GpuTemporary, LibraryCall, Program, Step,
    Storage,
};

/// A file of the rank's directory: its relative path and contents.
pub type RankFile = (String, Vec<u8>);

/// Where `ptxas` is looked for, in order: `$TESSERA_PTXAS`, the repository cache written by
/// `scripts/fetch-ptxas.sh`, and a CUDA installation (`$CUDA_HOME`, `/usr/local/cuda`).
pub fn ptxas_candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("TESSERA_PTXAS") {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/cuda-nvcc/bin/ptxas")));
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        paths.push(PathBuf::from(home).join("bin/ptxas"));
    }
    paths.push(PathBuf::from("/usr/local/cuda/bin/ptxas"));
    paths
}

/// The first `ptxas` that exists, if any.
pub fn find_ptxas() -> Option<PathBuf> {
    ptxas_candidates().into_iter().find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` with `ptxas`; the cubin's bytes.
pub fn assemble(ptxas: &Path, ptx: &str, arch: GpuArch, symbol: &str) -> Result<Vec<u8>, CodegenError> {
    let dir = tempfile::tempdir().map_err(|e| CodegenError::Internal(format!("ptxas temporary directory: {e}")))?;
    let (input, output) = (dir.path().join(format!("{symbol}.ptx")), dir.path().join(format!("{symbol}.cubin")));
    std::fs::write(&input, ptx).map_err(|e| CodegenError::Internal(format!("{}: {e}", input.display())))?;
    let out = std::process::Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| CodegenError::Internal(format!("cannot run {}: {e}", ptxas.display())))?;
    if !out.status.success() {
        return Err(CodegenError::Internal(format!(
            "ptxas rejected kernel {symbol} for {}: {}",
            arch.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read(&output).map_err(|e| CodegenError::Internal(format!("{}: {e}", output.display())))
}

/// The GPU section of `program` and the files it names (relative to the rank's directory):
/// `kernels/SYMBOL.ptx`, and `kernels/SYMBOL.cubin` when `ptxas` is given.
pub fn gpu_program(
    program: &Program,
    kernels: &[KernelSource],
    arch: GpuArch,
    ptxas: Option<&Path>,
) -> Result<(GpuProgram, Vec<RankFile>), CodegenError> {
    let modules = if kernels.is_empty() { Vec::new() } else { compile_ptx(kernels, arch)? };
    let mut files = Vec::new();
    let mut gpu_kernels = Vec::with_capacity(modules.len());
    let mut scratch_bytes = 0;
    for module in modules {
        let ptx_file = format!("kernels/{}.ptx", module.symbol);
        let cubin_file = match ptxas {
            Some(ptxas) => {
                let cubin = assemble(ptxas, &module.ptx, arch, &module.symbol)?;
                let name = format!("kernels/{}.cubin", module.symbol);
                files.push((name.clone(), cubin));
                Some(name)
            }
            None => None,
        };
        files.push((ptx_file.clone(), module.ptx.into_bytes()));
        // Temporaries of one kernel are disjoint; kernels run one at a time and share them.
        let mut offset = 0;
        let temporaries = module
            .temporaries
            .iter()
            .map(|t| {
                let scratch_offset = offset;
                offset = align(offset + t.bytes);
                GpuTemporary { scratch_offset, bytes: t.bytes }
            })
            .collect();
        scratch_bytes = u64::max(scratch_bytes, offset);
        let launches =
            module.launches.into_iter().map(|l| GpuLaunch { entry: l.entry, grid: l.grid, block: l.block }).collect();
        gpu_kernels.push(GpuKernel { symbol: module.symbol, ptx_file, cubin_file, launches, temporaries });
    }
    let mut gemms = Vec::new();
    for (s, step) in program.steps.iter().enumerate() {
        let Step::Library { call, inputs, outputs } = step else { continue };
        let transposed = match call {
            LibraryCall::MatMul => false,
            LibraryCall::MatMulTransposedB => true,
            _ => continue,
        };
        let buffer = |ids: &[u32], i: usize| ids.get(i).and_then(|&b| program.buffers.get(b as usize));
        let (Some(a), Some(b), Some(c)) = (buffer(inputs, 0), buffer(inputs, 1), buffer(outputs, 0)) else {
            return Err(CodegenError::Internal(format!("step {s}: a matmul needs two inputs and one output")));
        };
        if [a.storage, b.storage, c.storage] != [Storage::F32; 3] {
            // cuBLAS sgemm is f32 only; the executor runs the step on the host, as the CPU does.
            continue;
        }
        let gemm =
            plan_gemm(a, b, c, transposed).map_err(|message| CodegenError::Internal(format!("step {s}: {message}")))?;
        gemms.push(GpuGemm { step: s as u32, ..gemm });
    }
    let gpu = GpuProgram { arch: arch.name().to_string(), scratch_bytes, kernels: gpu_kernels, gemms };
    Ok((gpu, files))
}

/// `c = a @ b` (row-major, NumPy batch broadcasting; `b` stored `[.., n, k]` when `transposed`)
/// as cuBLAS calls; `step` is left 0 for the caller.
pub fn plan_gemm(a: &BufferDesc, b: &BufferDesc, c: &BufferDesc, transposed: bool) -> Result<GpuGemm, String> {
    if [a.storage, b.storage, c.storage] != [Storage::F32; 3] {
        return Err("matmul of non-float tensors".into());
    }
    let (sa, sb, sc) = (&a.shape, &b.shape, &c.shape);
    if sa.len() < 2 || sb.len() < 2 || sc.len() < 2 {
        return Err("matmul operands need rank >= 2".into());
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (b_k, n) = if transposed { (sb[sb.len() - 1], sb[sb.len() - 2]) } else { (sb[sb.len() - 2], sb[sb.len() - 1]) };
    if b_k != k || sc[sc.len() - 2] != m || sc[sc.len() - 1] != n {
        return Err(format!("matmul shapes {sa:?} x {sb:?} -> {sc:?} do not agree"));
    }
    let (batch_a, batch_b, batch_c) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2], &sc[..sc.len() - 2]);
    let batches: u64 = batch_c.iter().product();
    let (size_a, size_b, size_c) = (m * k, k * n, m * n);
    let a_full = batch_a == batch_c;
    let b_single = batch_b.iter().all(|&d| d == 1);
    let a_single = batch_a.iter().all(|&d| d == 1);
    let u32_of =
        |x: u64, what: &str| u32::try_from(x).map_err(|_| format!("{what} = {x} exceeds cuBLAS's 32-bit sizes"));
    let mut rows = m;
    let calls = if a_full && b_single {
        // A weight without batch dimensions: the whole batch of `a` is the rows of one GEMM.
        rows = batches * m;
        vec![GemmBatch { batch: 1, offset_a: 0, offset_b: 0, offset_c: 0, stride_a: 0, stride_b: 0, stride_c: 0 }]
    } else if (a_full || a_single) && (batch_b == batch_c || b_single) {
        let stride_a = if a_single { 0 } else { size_a };
        let stride_b = if b_single { 0 } else { size_b };
        let batch = u32_of(batches, "batch")?;
        vec![GemmBatch { batch, offset_a: 0, offset_b: 0, offset_c: 0, stride_a, stride_b, stride_c: size_c }]
    } else {
        // Mixed broadcasting: one GEMM per result matrix.
        (0..batches)
            .map(|i| GemmBatch {
                batch: 1,
                offset_a: broadcast_index(i, batch_c, batch_a) * size_a,
                offset_b: broadcast_index(i, batch_c, batch_b) * size_b,
                offset_c: i * size_c,
                stride_a: 0,
                stride_b: 0,
                stride_c: 0,
            })
            .collect()
    };
    Ok(GpuGemm {
        step: 0,
        trans_b: transposed,
        trans_a: false,
        m: u32_of(n, "n")?,
        n: u32_of(rows, "rows")?,
        k: u32_of(k, "k")?,
        ld_b: u32_of(if transposed { k } else { n }, "ld")?.max(1),
        ld_a: u32_of(k, "ld")?.max(1),
        ld_c: u32_of(n, "ld")?.max(1),
        calls,
    })
}

/// The index into an operand with batch shape `operand` of the result's batch index `i` (shape
/// `result`), under NumPy broadcasting (trailing alignment; size-1 dimensions stretch).
fn broadcast_index(i: u64, result: &[u64], operand: &[u64]) -> u64 {
    let mut rest = i;
    let (mut index, mut scale) = (0, 1);
    for (j, &size) in result.iter().enumerate().rev() {
        let coordinate = rest % size.max(1);
        rest /= size.max(1);
        let from_end = result.len() - 1 - j;
        if from_end < operand.len() {
            let d = operand[operand.len() - 1 - from_end];
            if d != 1 {
                index += coordinate * scale;
            }
            scale *= d;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::Location;

    fn buffer(shape: &[u64]) -> BufferDesc {
        BufferDesc {
            name: "x".into(),
            storage: Storage::F32,
            shape: shape.to_vec(),
            location: Location::Arena { offset: 0 },
        }
    }

    #[test]
    fn a_weight_without_batch_folds_the_batch_into_rows() {
        let g = plan_gemm(&buffer(&[2, 5, 3]), &buffer(&[3, 4]), &buffer(&[2, 5, 4]), false).expect("plan");
        assert_eq!((g.m, g.n, g.k, g.ld_b, g.ld_a, g.ld_c, g.trans_b), (4, 10, 3, 4, 3, 4, false));
        assert_eq!(g.calls.len(), 1);
        assert_eq!(g.calls[0].batch, 1);
    }

    #[test]
    fn a_transposed_operand_is_read_through_cublas_transa() {
        // q [2,4,8,16] @ k^T with k stored [2,4,8,16]: scores [2,4,8,8].
        let g =
            plan_gemm(&buffer(&[2, 4, 8, 16]), &buffer(&[2, 4, 8, 16]), &buffer(&[2, 4, 8, 8]), true).expect("plan");
        assert_eq!((g.m, g.n, g.k, g.ld_b, g.ld_a, g.ld_c, g.trans_b), (8, 8, 16, 16, 16, 8, true));
        let c = g.calls[0];
        assert_eq!((c.batch, c.stride_a, c.stride_b, c.stride_c), (8, 128, 128, 64));
    }

    #[test]
    fn mixed_broadcasting_takes_one_call_per_result_matrix() {
        let g = plan_gemm(&buffer(&[2, 1, 3, 4]), &buffer(&[1, 3, 4, 5]), &buffer(&[2, 3, 3, 5]), false).expect("plan");
        assert_eq!(g.calls.len(), 6);
        let offsets: Vec<(u64, u64, u64)> = g.calls.iter().map(|c| (c.offset_a, c.offset_b, c.offset_c)).collect();
        assert_eq!(offsets, [(0, 0, 0), (0, 20, 15), (0, 40, 30), (12, 0, 45), (12, 20, 60), (12, 40, 75)]);
    }

    /// cuBLAS `sgemm_strided_batched` as documented (column-major, `op` per `trans`), on
    /// element offsets into host slices.
    fn cublas_emulation(g: &GpuGemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        for call in &g.calls {
            for batch in 0..call.batch as usize {
                // cuBLAS's A is the step's b, its B the step's a.
                let first = call.offset_b as usize + batch * call.stride_b as usize;
                let second = call.offset_a as usize + batch * call.stride_a as usize;
                let out = call.offset_c as usize + batch * call.stride_c as usize;
                let op_first = |i: usize, l: usize| op_element(b, first, g.ld_b as usize, g.trans_b, i, l);
                let op_second = |l: usize, j: usize| op_element(a, second, g.ld_a as usize, g.trans_a, l, j);
                for i in 0..m {
                    for j in 0..n {
                        let sum: f32 = (0..k).map(|l| op_first(i, l) * op_second(l, j)).sum();
                        c[out + i + j * g.ld_c as usize] = sum;
                    }
                }
            }
        }
    }

    /// Element (`row`, `col`) of cuBLAS's `op(M)` for the column-major matrix `M` that starts at
    /// `base` in `matrix` with leading dimension `ld`: `M` itself, or its transpose when `trans`.
    fn op_element(matrix: &[f32], base: usize, ld: usize, trans: bool, row: usize, col: usize) -> f32 {
        if trans {
            matrix[base + col + row * ld]
        } else {
            matrix[base + row + col * ld]
        }
    }

    /// Row-major batched matmul with NumPy broadcasting (the reference semantics).
    fn reference(sa: &[u64], sb: &[u64], sc: &[u64], a: &[f32], b: &[f32], transposed: bool) -> Vec<f32> {
        let (m, k) = (sa[sa.len() - 2] as usize, sa[sa.len() - 1] as usize);
        let n = sc[sc.len() - 1] as usize;
        let batch_c = &sc[..sc.len() - 2];
        let batches: u64 = batch_c.iter().product();
        let mut c = vec![0.0; batches as usize * m * n];
        for i in 0..batches {
            let ia = broadcast_index(i, batch_c, &sa[..sa.len() - 2]) as usize * m * k;
            let ib = broadcast_index(i, batch_c, &sb[..sb.len() - 2]) as usize * k * n;
            for r in 0..m {
                for col in 0..n {
                    let bv = |l: usize| if transposed { b[ib + col * k + l] } else { b[ib + l * n + col] };
                    c[i as usize * m * n + r * n + col] = (0..k).map(|l| a[ia + r * k + l] * bv(l)).sum();
                }
            }
        }
        c
    }

    /// The plans, executed with cuBLAS's documented semantics, compute the row-major matmul
    /// for every batching case (folded rows, equal batches, broadcast `a` or `b`, mixed) with
    /// and without the transposed `b`.
    #[test]
    fn plans_run_with_cublas_semantics_give_the_matmul() {
        let cases: [(&[u64], &[u64], &[u64]); 5] = [
            (&[2, 3, 4], &[4, 5], &[2, 3, 5]),
            (&[2, 2, 3, 4], &[2, 2, 4, 5], &[2, 2, 3, 5]),
            (&[3, 4], &[2, 4, 5], &[2, 3, 5]),
            (&[2, 1, 3, 4], &[1, 3, 4, 5], &[2, 3, 3, 5]),
            (&[1, 3, 4], &[2, 4, 5], &[2, 3, 5]),
        ];
        for (sa, sb, sc) in cases {
            for transposed in [false, true] {
                let mut sb = sb.to_vec();
                if transposed {
                    let r = sb.len();
                    sb.swap(r - 1, r - 2);
                }
                let value = |i: usize, salt: f32| ((i as f32 * 0.37 + salt).sin() * 2.0).round() / 2.0;
                let a: Vec<f32> = (0..sa.iter().product::<u64>() as usize).map(|i| value(i, 0.1)).collect();
                let b: Vec<f32> = (0..sb.iter().product::<u64>() as usize).map(|i| value(i, 1.3)).collect();
                let plan = plan_gemm(&buffer(sa), &buffer(&sb), &buffer(sc), transposed).expect("plan");
                let mut c = vec![f32::NAN; sc.iter().product::<u64>() as usize];
                cublas_emulation(&plan, &a, &b, &mut c);
                assert_eq!(c, reference(sa, &sb, sc, &a, &b, transposed), "{sa:?} x {sb:?} (transposed {transposed})");
            }
        }
    }

    #[test]
    fn shapes_that_disagree_are_refused() {
        assert!(plan_gemm(&buffer(&[2, 3]), &buffer(&[4, 5]), &buffer(&[2, 5]), false).is_err());
    }
}
