//! The library calls of CPU programs: GEMM through the `gemm` crate (packed, AVX2/FMA or
//! AVX-512 kernels chosen at run time, multithreaded on rayon's pool), data movement on raw
//! element bytes, communication over a rank's communicator, and the reference fallback. Convolution and pooling are in `super::conv`.
//!
//! Every function checks the shapes it is given against each other and returns an error
//! instead of indexing out of bounds; the loader has already checked that every buffer lies
//! inside its region.

use super::epilogue::BoundEpilogue;
use crate::spmd::RankComm;
use tessera_ir::artifact::{decode, encode, BufferDesc, Epilogue, LibraryCall, Storage};
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::optim::mean_negative_log_likelihood;
use tessera_ir::ops::Op;
use tessera_ir::types::TensorType;

/// A buffer of a step: its description and its bytes.
pub struct In<'a> {
    pub desc: &'a BufferDesc,
    pub bytes: &'a [u8],
}

pub struct Out<'a> {
    pub desc: &'a BufferDesc,
    pub bytes: &'a mut [u8],
}

fn dims(d: &BufferDesc) -> Vec<usize> {
    d.shape.iter().map(|&n| n as usize).collect()
}

pub(super) fn f32s(bytes: &[u8]) -> Result<&[f32], String> {
    // SAFETY: f32 has no invalid bit patterns; `align_to` only yields the aligned middle part,
    // and the check below rejects a buffer that is not entirely aligned.
    let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
    if !head.is_empty() || !tail.is_empty() {
        return Err("f32 buffer is not aligned".into());
    }
    Ok(body)
}

pub(super) fn f32s_mut(bytes: &mut [u8]) -> Result<&mut [f32], String> {
    // SAFETY: as in `f32s`.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<f32>() };
    if !head.is_empty() || !tail.is_empty() {
        return Err("f32 buffer is not aligned".into());
    }
    Ok(body)
}

/// `c = a @ b` in f32: `a` is row-major `[m, k]`, `c` row-major `[m, n]` (overwritten, never
/// read), and `b` is read through its column and row strides (`rhs_cs` between columns over n,
/// `rhs_rs` between rows over k): `(1, n)` for a row-major `[k, n]`, `(k, 1)` for a row-major
/// `[n, k]` used transposed. The one place the library calls reach the `gemm` crate.
pub(super) fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
    c: &mut [f32],
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let b_last = (n - 1) * rhs_cs + (k - 1) * rhs_rs;
    assert!(a.len() >= m * k && b.len() > b_last && c.len() >= m * n, "gemm operands too small");
    // SAFETY: the assertion above bounds every access of `a`, `b` (through its strides) and `c`;
    // `a` and `c` are read and written row-major, and `c` is not read (`read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `c[.., cols] += a @ b` in f32, every operand read (and `c` written) through its own row and
/// column strides: `a [m, k]` at `a_strides = (rows, columns)`, `b [k, n]` at `b_strides`, `c`
/// row-major with row stride `c_rs` (its columns contiguous). For a sum split into several
/// products over shifted views of one operand (a convolution tap by tap).
pub(super) fn gemm_f32_add(
    (m, n, k): (usize, usize, usize),
    (a, a_strides): (&[f32], (usize, usize)),
    (b, b_strides): (&[f32], (usize, usize)),
    (c, c_rs): (&mut [f32], usize),
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |(rows, cols): (usize, usize), r: usize, q: usize| (r - 1) * rows + (q - 1) * cols;
    assert!(
        a.len() > last(a_strides, m, k) && b.len() > last(b_strides, k, n) && c.len() > (m - 1) * c_rs + n - 1,
        "gemm operands too small"
    );
    // SAFETY: the assertion above bounds every access of `a`, `b` and `c` through their
    // strides; `c` is read and written (`read_dst` true, alpha 1: `c = c + a @ b`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            true,
            a.as_ptr(),
            a_strides.1 as isize,
            a_strides.0 as isize,
            b.as_ptr(),
            b_strides.1 as isize,
            b_strides.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// GEMMs below this many multiply-adds run on one thread: splitting them costs more than it
/// saves (measured: a 128x64x128 head of GPT-2 attention ran 3x slower split over 2 threads).
pub(super) const PARALLEL_GEMM_MIN_MACS: usize = 1 << 22;

/// `out = a @ b` with NumPy broadcasting of the batch dimensions, f32 only; with
/// `b_transposed`, `b` holds `[.., n, k]` and is read transposed through the GEMM's strides.
/// Runs on all cores; the result does not depend on the thread count (see [`matmul_on`]).
pub fn matmul(a: &In, b: &In, out: &mut Out, b_transposed: bool) -> Result<(), String> {
    matmul_on(a, b, out, b_transposed, true)
}

/// [`matmul`], multithreaded or not. Threads split the output (into column/row blocks inside
/// one GEMM, or into whole GEMMs of a batch), never the sum over k, so every element is
/// summed in the same order either way and the results are bit-identical.
pub fn matmul_on(a: &In, b: &In, out: &mut Out, b_transposed: bool, threaded: bool) -> Result<(), String> {
    matmul_with(a, b, out, b_transposed, threaded, None)
}

/// A [`LibraryCall::WithEpilogue`] step: `call` (a GEMM or a convolution) on the first two
/// inputs, its output block by block through `epilogue`, whose operands are the other inputs.
pub fn with_epilogue(call: &LibraryCall, epilogue: &Epilogue, inputs: &[In], out: &mut Out) -> Result<(), String> {
    let [a, b, operands @ ..] = inputs else {
        return Err("an epilogue step needs the call's two operands".into());
    };
    if out.desc.storage != Storage::F32 || operands.iter().any(|o| o.desc.storage != Storage::F32) {
        return Err("epilogue of non-float tensors".into());
    }
    let data = operands.iter().map(|o| f32s(o.bytes)).collect::<Result<Vec<_>, _>>()?;
    let bound = BoundEpilogue::new(epilogue, data, out.desc.elements() as usize)?;
    match call {
        LibraryCall::MatMul => matmul_with(a, b, out, false, true, Some(&bound)),
        LibraryCall::MatMulTransposedB => matmul_with(a, b, out, true, true, Some(&bound)),
        LibraryCall::Conv2d { window, groups } => super::conv::conv2d_with(a, b, out, window, *groups, Some(&bound)),
        other => Err(format!("an epilogue after a '{}' call", other.name())),
    }
}

/// [`matmul_on`], then `epilogue` over each GEMM's output right after that GEMM, on the same
/// thread (split over the pool when the GEMM was).
pub fn matmul_with(
    a: &In,
    b: &In,
    out: &mut Out,
    b_transposed: bool,
    threaded: bool,
    epilogue: Option<&BoundEpilogue>,
) -> Result<(), String> {
    if [a.desc.storage, b.desc.storage, out.desc.storage] != [Storage::F32; 3] {
        return Err("matmul of non-float tensors".into());
    }
    let (sa, sb, so) = (dims(a.desc), dims(b.desc), dims(out.desc));
    if sa.len() < 2 || sb.len() < 2 || so.len() < 2 {
        return Err("matmul operands need rank >= 2".into());
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (b_k, n) =
        if b_transposed { (sb[sb.len() - 1], sb[sb.len() - 2]) } else { (sb[sb.len() - 2], sb[sb.len() - 1]) };
    // Strides of b's rows (over k) and columns (over n).
    let (rsb, csb) = if b_transposed { (1, k) } else { (n, 1) };
    if b_k != k || so[so.len() - 2] != m || so[so.len() - 1] != n {
        return Err(format!("matmul shapes {sa:?} x {sb:?} -> {so:?} do not agree"));
    }
    let batch_out = &so[..so.len() - 2];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let (pa, pb) = (f32s(a.bytes)?, f32s(b.bytes)?);
    let po = f32s_mut(out.bytes)?;
    let batches: usize = batch_out.iter().product();
    // A weight without batch dimensions: fold the whole batch of `a` into the rows of one GEMM.
    let b_broadcast = bb.iter().all(|&d| d == 1);
    let a_full = ba == batch_out;
    // `start`: the flat index of `c`'s first element in the output, for the epilogue.
    let gemm = |mm: usize, a: &[f32], b: &[f32], c: &mut [f32], threaded: bool, start: usize| {
        let split = threaded && mm * n * k >= PARALLEL_GEMM_MIN_MACS;
        if !split && super::small_gemm::suits(mm, n, k) {
            super::small_gemm::gemm((mm, n, k), a, b, (csb, rsb), c);
        } else if !b_transposed && super::small_gemm::suits_skinny(mm, n, k) {
            super::small_gemm::skinny((mm, n, k), a, b, c, split);
        } else {
            let parallelism = if split { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
            gemm_f32((mm, n, k), a, b, (csb, rsb), c, parallelism);
        }
        if let Some(epilogue) = epilogue {
            epilogue.apply_maybe_parallel(c, start, split);
        }
    };
    let need = |len: usize, want: usize, what: &str| {
        if len < want {
            Err(format!("matmul {what} buffer too small"))
        } else {
            Ok(())
        }
    };
    need(pa.len(), sa.iter().product(), "a")?;
    need(pb.len(), sb.iter().product(), "b")?;
    need(po.len(), batches * m * n, "out")?;
    if b_broadcast && a_full {
        gemm(batches * m, &pa[..batches * m * k], &pb[..k * n], &mut po[..batches * m * n], threaded, 0);
        return Ok(());
    }
    let one = |t: usize, c: &mut [f32], threaded: bool| {
        let (ia, ib) = (operand_batch(t, batch_out, ba), operand_batch(t, batch_out, bb));
        gemm(m, &pa[ia * m * k..(ia + 1) * m * k], &pb[ib * k * n..(ib + 1) * k * n], c, threaded, t * m * n);
    };
    if m * n == 0 {
        return Ok(());
    }
    let outputs = po[..batches * m * n].chunks_mut(m * n).enumerate();
    if threaded && m * n * k < PARALLEL_GEMM_MIN_MACS {
        // Small GEMMs (attention heads): one whole GEMM per task.
        use rayon::prelude::*;
        outputs.par_bridge().for_each(|(t, c)| one(t, c, false));
    } else {
        outputs.for_each(|(t, c)| one(t, c, threaded));
    }
    Ok(())
}

/// Maps batch index `out_batch` of a matmul's output (batch dimensions `batch_out`) to the
/// batch index of an operand whose batch dimensions are `shape` (aligned at the end, an extent
/// of 1 stretches), NumPy-style.
fn operand_batch(out_batch: usize, batch_out: &[usize], shape: &[usize]) -> usize {
    let mut rest = out_batch;
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..batch_out.len()).rev() {
        let extent = batch_out[d];
        let i = rest % extent.max(1);
        rest /= extent.max(1);
        if let Some(sd) = (d + shape.len()).checked_sub(batch_out.len()) {
            let s = shape[sd];
            if s != 1 {
                idx += i * stride;
            }
            stride *= s;
        }
    }
    idx
}

/// A [`LibraryCall::IntegerMatMul`] step: `a @ b` on i64 storage with the interpreter's
/// arithmetic (`tessera_ir::ops::matmul::eval`): products and sums wrap in i64, then the result
/// wraps to `dtype`. That is exact for narrower integers too: wrapping is a ring homomorphism,
/// so wrapping once at the end equals wrapping at `dtype`'s width after every operation.
pub fn integer_matmul(a: &In, b: &In, out: &mut Out, dtype: DType) -> Result<(), String> {
    if [a.desc.storage, b.desc.storage, out.desc.storage] != [Storage::I64; 3] || !dtype.is_int() {
        return Err(format!("integer matmul of non-integer tensors ({dtype})"));
    }
    let (sa, sb, so) = (dims(a.desc), dims(b.desc), dims(out.desc));
    if sa.len() < 2 || sb.len() < 2 || so.len() < 2 {
        return Err("matmul operands need rank >= 2".into());
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    if sb[sb.len() - 2] != k || so[so.len() - 2] != m || so[so.len() - 1] != n {
        return Err(format!("matmul shapes {sa:?} x {sb:?} -> {so:?} do not agree"));
    }
    let batch_out = &so[..so.len() - 2];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let (pa, pb) = (i64s(a.bytes), i64s(b.bytes));
    let batches: usize = batch_out.iter().product();
    if pa.len() < sa.iter().product() || pb.len() < sb.iter().product() || out.bytes.len() < 8 * batches * m * n {
        return Err("integer matmul buffer too small".into());
    }
    let mut row = vec![0i64; n];
    let mut rows = out.bytes.chunks_exact_mut(8 * n.max(1));
    for t in 0..batches {
        let (ia, ib) = (operand_batch(t, batch_out, ba), operand_batch(t, batch_out, bb));
        let (x, y) = (&pa[ia * m * k..(ia + 1) * m * k], &pb[ib * k * n..(ib + 1) * k * n]);
        for i in 0..m {
            row.fill(0);
            for (p, &lhs) in x[i * k..(i + 1) * k].iter().enumerate() {
                // CumSum's triangular 0/1 matrix is half zeros.
                if lhs == 0 {
                    continue;
                }
                for (r, &v) in row.iter_mut().zip(&y[p * n..(p + 1) * n]) {
                    *r = r.wrapping_add(lhs.wrapping_mul(v));
                }
            }
            let Some(dest) = rows.next() else { return Ok(()) };
            for (d, &r) in dest.chunks_exact_mut(8).zip(&row) {
                d.copy_from_slice(&dtype.wrap_int(r).to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Permutes axes: `out[i_0.., i_r] = in[.. i_perm^-1 ..]`, copying whole inner rows when the
/// last axis stays last.
pub fn transpose(input: &In, out: &mut Out, perm: &[u64]) -> Result<(), String> {
    let si = dims(input.desc);
    let so = dims(out.desc);
    let r = si.len();
    let mut seen = vec![false; r];
    if perm.len() != r || so.len() != r {
        return Err("transpose rank mismatch".into());
    }
    for (d, &p) in perm.iter().enumerate() {
        let p = p as usize;
        if p >= r || std::mem::replace(&mut seen[p], true) || so[d] != si[p] {
            return Err(format!("transpose perm {perm:?} does not map {si:?} to {so:?}"));
        }
    }
    let e = input.desc.storage.element_bytes() as usize;
    let total: usize = so.iter().product();
    if total == 0 {
        return Ok(());
    }
    let in_strides = tessera_ir::tensor::strides(&si);
    // Source stride for each output axis.
    let src: Vec<usize> = perm.iter().map(|&p| in_strides[p as usize]).collect();
    // Inner run: the last output axis, contiguous in the source when it is the source's last axis.
    let inner = so[r - 1];
    let contiguous = src[r - 1] == 1;
    let rows = total / inner.max(1);
    let mut counter = vec![0usize; r.saturating_sub(1)];
    for row in 0..rows {
        let base: usize = counter.iter().zip(&src).map(|(i, s)| i * s).sum();
        let dst = &mut out.bytes[row * inner * e..(row + 1) * inner * e];
        if contiguous {
            dst.copy_from_slice(&input.bytes[base * e..(base + inner) * e]);
        } else {
            let step = src[r - 1];
            for (j, chunk) in dst.chunks_exact_mut(e).enumerate() {
                let at = (base + j * step) * e;
                chunk.copy_from_slice(&input.bytes[at..at + e]);
            }
        }
        // Advance the multi-index over the outer output axes.
        for d in (0..r.saturating_sub(1)).rev() {
            counter[d] += 1;
            if counter[d] < so[d] {
                break;
            }
            counter[d] = 0;
        }
    }
    Ok(())
}

/// `out = data[.., indices, ..]` along `axis`; indices may be negative (counted from the end).
pub fn gather(data: &In, indices: &In, out: &mut Out, axis: usize) -> Result<(), String> {
    if indices.desc.storage != Storage::I64 {
        return Err("gather indices must be integers".into());
    }
    let sd = dims(data.desc);
    let si = dims(indices.desc);
    if axis >= sd.len() {
        return Err("gather axis out of range".into());
    }
    let mut expected = sd[..axis].to_vec();
    expected.extend(&si);
    expected.extend(&sd[axis + 1..]);
    if dims(out.desc) != expected {
        return Err(format!("gather output shape {:?} is not {expected:?}", out.desc.shape));
    }
    let e = data.desc.storage.element_bytes() as usize;
    let n = sd[axis];
    let inner: usize = sd[axis + 1..].iter().product::<usize>() * e;
    let outer: usize = sd[..axis].iter().product();
    let n_idx: usize = si.iter().product();
    let idx: Vec<usize> = indices
        .bytes
        .chunks_exact(8)
        .map(|c| {
            let k = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            let resolved = if k < 0 { k + n as i64 } else { k };
            usize::try_from(resolved)
                .ok()
                .filter(|&r| r < n)
                .ok_or_else(|| format!("index {k} is out of range [-{n}, {n}) for axis {axis} of extent {n}"))
        })
        .collect::<Result<_, _>>()?;
    for o in 0..outer {
        for (q, &i) in idx.iter().enumerate().take(n_idx) {
            let src = (o * n + i) * inner;
            let dst = (o * n_idx + q) * inner;
            out.bytes[dst..dst + inner].copy_from_slice(&data.bytes[src..src + inner]);
        }
    }
    Ok(())
}

/// Outer count and inner byte width around `axis` of `shape`.
fn around(shape: &[usize], axis: usize, e: usize) -> (usize, usize) {
    (shape[..axis].iter().product(), shape[axis + 1..].iter().product::<usize>() * e)
}

/// Consecutive pieces of `input` along `axis`, one per output.
pub fn split(input: &In, outs: &mut [Out], axis: usize) -> Result<(), String> {
    let si = dims(input.desc);
    if axis >= si.len() {
        return Err("split axis out of range".into());
    }
    let e = input.desc.storage.element_bytes() as usize;
    let (outer, inner) = around(&si, axis, e);
    let mut sizes = Vec::with_capacity(outs.len());
    for o in outs.iter() {
        let so = dims(o.desc);
        let mut expect = si.clone();
        expect[axis] = so.get(axis).copied().unwrap_or(0);
        if so != expect {
            return Err(format!("split output {so:?} does not fit input {si:?}"));
        }
        sizes.push(so[axis]);
    }
    if sizes.iter().sum::<usize>() != si[axis] {
        return Err("split sizes do not add up".into());
    }
    let row = si[axis] * inner;
    for i in 0..outer {
        let mut at = i * row;
        for (o, &size) in outs.iter_mut().zip(&sizes) {
            let len = size * inner;
            o.bytes[i * len..(i + 1) * len].copy_from_slice(&input.bytes[at..at + len]);
            at += len;
        }
    }
    Ok(())
}

/// Joins `inputs` along `axis`.
pub fn concat(inputs: &[In], out: &mut Out, axis: usize) -> Result<(), String> {
    let so = dims(out.desc);
    if axis >= so.len() {
        return Err("concat axis out of range".into());
    }
    let e = out.desc.storage.element_bytes() as usize;
    let (outer, inner) = around(&so, axis, e);
    let mut total = 0;
    for x in inputs {
        let sx = dims(x.desc);
        let mut expect = so.clone();
        expect[axis] = sx.get(axis).copied().unwrap_or(0);
        if sx != expect || x.desc.storage != out.desc.storage {
            return Err(format!("concat input {sx:?} does not fit output {so:?}"));
        }
        total += sx[axis];
    }
    if total != so[axis] {
        return Err("concat sizes do not add up".into());
    }
    let row = so[axis] * inner;
    for i in 0..outer {
        let mut at = i * row;
        for x in inputs {
            let len = x.desc.shape[axis] as usize * inner;
            out.bytes[at..at + len].copy_from_slice(&x.bytes[i * len..(i + 1) * len]);
            at += len;
        }
    }
    Ok(())
}

/// `out[i] = input[starts + i * steps]` per axis (positive steps).
pub fn slice(input: &In, out: &mut Out, starts: &[u64], steps: &[u64]) -> Result<(), String> {
    let si = dims(input.desc);
    let so = dims(out.desc);
    let r = si.len();
    if starts.len() != r || steps.len() != r || so.len() != r {
        return Err("slice rank mismatch".into());
    }
    for d in 0..r {
        let (start, step) = (starts[d] as usize, steps[d] as usize);
        if so[d] > 0 && (step == 0 || start + (so[d] - 1) * step >= si[d]) {
            return Err(format!("slice of {si:?} to {so:?} reads past axis {d}"));
        }
    }
    let total: usize = so.iter().product();
    if total == 0 {
        return Ok(());
    }
    let e = input.desc.storage.element_bytes() as usize;
    let strides = tessera_ir::tensor::strides(&si);
    let mut counter = vec![0usize; r];
    for j in 0..total {
        let src: usize = (0..r).map(|d| (starts[d] as usize + counter[d] * steps[d] as usize) * strides[d]).sum();
        out.bytes[j * e..(j + 1) * e].copy_from_slice(&input.bytes[src * e..(src + 1) * e]);
        for d in (0..r).rev() {
            counter[d] += 1;
            if counter[d] < so[d] {
                break;
            }
            counter[d] = 0;
        }
    }
    Ok(())
}

/// A step's operands decoded into tensors of their compute types (as the interpreter holds
/// them), and its results' types: what the reference semantics and the communicator take.
fn as_tensors(inputs: &[In], outs: &[Out]) -> Result<(Vec<tessera_ir::tensor::Tensor>, Vec<TensorType>), String> {
    let tensors = inputs
        .iter()
        .map(|x| {
            let storage = x.desc.storage;
            decode(x.bytes, storage, storage.compute_dtype(), &dims(x.desc)).ok_or("input buffer has the wrong size")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types = outs.iter().map(|o| TensorType::of_static(o.desc.storage.compute_dtype(), &o.desc.shape)).collect();
    Ok((tensors, types))
}

/// A communication step on the step's buffers: the operand is read into a tensor (as the
/// interpreter holds it), sent or reduced over `comm`, and the result written back as stored.
pub fn collective(op: &Collective, comm: &RankComm, inputs: &[In], outs: &mut [Out]) -> Result<(), String> {
    let (tensors, types) = as_tensors(inputs, outs)?;
    let refs: Vec<&tessera_ir::tensor::Tensor> = tensors.iter().collect();
    let results = comm.execute(op, &refs, &types)?;
    if results.len() != outs.len() {
        return Err(format!("tsr.{} returned {} results, the step has {}", op.mnemonic(), results.len(), outs.len()));
    }
    for (o, t) in outs.iter_mut().zip(&results) {
        let bytes = encode(&t.cast(o.desc.storage.compute_dtype()));
        if bytes.len() != o.bytes.len() {
            return Err(format!("received {:?} but the buffer holds {:?}", t.shape, o.desc.shape));
        }
        o.bytes.copy_from_slice(&bytes);
    }
    Ok(())
}

/// Evaluates `op` with its reference semantics on the step's buffers.
pub fn reference(op: &Op, inputs: &[In], outs: &mut [Out]) -> Result<(), String> {
    if let Some(done) = reference_direct(op, inputs, outs) {
        return done;
    }
    let (tensors, types) = as_tensors(inputs, outs)?;
    let refs: Vec<&tessera_ir::tensor::Tensor> = tensors.iter().collect();
    let results = op.eval(&refs, &types)?;
    for (o, t) in outs.iter_mut().zip(&results) {
        let bytes = encode(t);
        if bytes.len() != o.bytes.len() {
            return Err("result has the wrong size".into());
        }
        o.bytes.copy_from_slice(&bytes);
    }
    Ok(())
}

/// The reference ops that have a library call of their own ([`LibraryCall::CrossEntropy`],
/// [`LibraryCall::Scatter`]), for programs compiled before those calls existed: the same
/// functions, on the arena's buffers. `None`: another op, or other storage; the caller
/// evaluates the op.
fn reference_direct(op: &Op, inputs: &[In], outs: &mut [Out]) -> Option<Result<(), String>> {
    use Storage::{F32, I64};
    let storages: Vec<Storage> =
        inputs.iter().map(|x| x.desc.storage).chain(outs.iter().map(|o| o.desc.storage)).collect();
    match (op, inputs, outs) {
        (Op::CrossEntropy, [logits, targets], [out]) if storages == [F32, I64, F32] => {
            Some(cross_entropy(logits, targets, out))
        }
        (Op::Scatter { axis, reduction }, [data, indices, updates], [out]) if storages == [F32, I64, F32, F32] => {
            Some(scatter(data, indices, updates, out, *axis, *reduction))
        }
        _ => None,
    }
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}

/// [`LibraryCall::CrossEntropy`]: `tessera_ir::ops::optim::eval_cross_entropy` on f32 logits
/// `[.., V]` and i64 targets, read in place (no f64 copy of the logits), with the
/// interpreter's arithmetic: f64 in the same order, one rounding to f32 at the end.
pub fn cross_entropy(logits: &In, targets: &In, out: &mut Out) -> Result<(), String> {
    let v = *dims(logits.desc).last().ok_or("logits have rank 0")?;
    let loss = mean_negative_log_likelihood(f32s(logits.bytes)?, &i64s(targets.bytes), v)?;
    *f32s_mut(out.bytes)?.first_mut().ok_or("the loss buffer is empty")? = loss as f32;
    Ok(())
}

/// Above this many table elements per update, [`scatter`] combines only the touched positions.
const SPARSE_SCATTER_RATIO: usize = 8;

/// [`LibraryCall::Scatter`]: `tessera_ir::ops::indexing::eval_scatter` on f32 data and
/// updates: `out` is `data` with `updates[p]` stored at (or, for add, summed into) position `p`
/// with its `axis` coordinate replaced by `indices[p]`. Only the touched positions are
/// combined, in f64 in update order, each rounded once to f32 as the interpreter does; every
/// other element is `data`'s, copied as bytes. An embedding's gradient (a batch's token rows
/// added into a zero table) so costs one copy of the table and work per token, not an f64
/// pass over the whole table.
pub fn scatter(
    data: &In,
    indices: &In,
    updates: &In,
    out: &mut Out,
    axis: i64,
    reduction: tessera_ir::ops::indexing::ScatterReduction,
) -> Result<(), String> {
    use tessera_ir::ops::indexing::ScatterReduction;
    let (shape, update_shape) = (dims(data.desc), dims(updates.desc));
    let rank = shape.len();
    let ax = usize::try_from(if axis < 0 { axis + rank as i64 } else { axis })
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} is out of range for shape {shape:?}"))?;
    if dims(indices.desc) != update_shape || update_shape.len() != rank || dims(out.desc) != shape {
        return Err(format!(
            "indices {:?} and updates {update_shape:?} must share one shape of rank {rank}",
            indices.desc.shape
        ));
    }
    let n = shape[ax];
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let original = f32s(data.bytes)?;
    let values = f32s(updates.bytes)?;
    if original.len() != shape.iter().product::<usize>() || values.len() != update_shape.iter().product::<usize>() {
        return Err("a scatter buffer has the wrong size".into());
    }
    // A table not much larger than the updates (a small vocabulary) is combined densely, an
    // f64 copy of all of it; a larger one only at the touched positions, each looked up in a
    // map, which costs more per update than an f64 pass over a table of that size.
    let dense = original.len() <= SPARSE_SCATTER_RATIO * values.len();
    let mut all: Vec<f64> = if dense { original.iter().map(|&x| f64::from(x)).collect() } else { Vec::new() };
    // Otherwise the running f64 value of each touched position, in order of first touch.
    let mut slot_of: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut touched: Vec<(usize, f64)> = Vec::new();
    let mut position = vec![0usize; rank];
    for (&k, &value) in i64s(indices.bytes).iter().zip(values) {
        let r = usize::try_from(if k < 0 { k + n as i64 } else { k }).ok().filter(|&r| r < n).ok_or_else(|| {
            format!("index {k} at indices{position:?} is out of range [-{n}, {n}) for axis {ax} of extent {n}")
        })?;
        if let Some(d) = (0..rank).find(|&d| d != ax && position[d] >= shape[d]) {
            return Err(format!("update at {position:?} lies outside data of shape {shape:?} in dimension {d}"));
        }
        let target: usize = (0..rank).map(|d| if d == ax { r } else { position[d] } * strides[d]).sum();
        let acc = if dense {
            &mut all[target]
        } else {
            let slot = *slot_of.entry(target).or_insert_with(|| {
                touched.push((target, f64::from(original[target])));
                touched.len() - 1
            });
            &mut touched[slot].1
        };
        let value = f64::from(value);
        match reduction {
            ScatterReduction::None => *acc = value,
            ScatterReduction::Add => *acc += value,
            ScatterReduction::Mul => *acc *= value,
            ScatterReduction::Max => *acc = acc.max(value),
            ScatterReduction::Min => *acc = acc.min(value),
        }
        // The next position of `updates`, row-major.
        for d in (0..rank).rev() {
            position[d] += 1;
            if position[d] < update_shape[d] {
                break;
            }
            position[d] = 0;
        }
    }
    let result = f32s_mut(out.bytes)?;
    if result.len() != original.len() {
        return Err("the output buffer has the wrong size".into());
    }
    if dense {
        for (r, a) in result.iter_mut().zip(all) {
            *r = a as f32;
        }
    } else {
        result.copy_from_slice(original);
        for (target, value) in touched {
            result[target] = value as f32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::test_buffers::{bytes, desc};

    /// The direct fallbacks against the generic one (the interpreter's `Op::eval` on converted
    /// tensors): the same bits, for cross-entropy and for scatter and scatter-add with repeated
    /// and negative indices along either axis.
    #[test]
    fn direct_reference_ops_are_bit_identical_to_the_interpreter() {
        use tessera_ir::ops::indexing::ScatterReduction;
        let int_desc = |shape: &[usize]| BufferDesc { storage: Storage::I64, ..desc(shape) };
        let i64_bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let run = |op: &Op, ins: &[(BufferDesc, Vec<u8>)], out_shape: &[usize], direct: bool| -> Vec<u32> {
            let inputs: Vec<In> = ins.iter().map(|(d, b)| In { desc: d, bytes: b }).collect();
            let out_desc = desc(out_shape);
            let mut out = vec![0f32; out_shape.iter().product()];
            // SAFETY: as in `bytes`, mutably; `out` is not otherwise borrowed.
            let out_bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), 4 * out.len()) };
            let mut outs = [Out { desc: &out_desc, bytes: out_bytes }];
            let result = if direct {
                reference_direct(op, &inputs, &mut outs).expect("a direct op")
            } else {
                let tensors: Vec<_> = inputs
                    .iter()
                    .map(|x| decode(x.bytes, x.desc.storage, x.desc.storage.compute_dtype(), &dims(x.desc)).unwrap())
                    .collect();
                let refs: Vec<_> = tensors.iter().collect();
                let ty = TensorType::of_static(tessera_ir::dtype::DType::F32, &out_desc.shape);
                op.eval(&refs, &[ty]).map(|r| outs[0].bytes.copy_from_slice(&encode(&r[0])))
            };
            result.unwrap();
            out.iter().map(|x| x.to_bits()).collect()
        };
        let logits = values(12 * 37, 5).iter().map(|x| 8.0 * x).collect::<Vec<f32>>();
        let targets: Vec<i64> = (0..12).map(|i| (i * 7) % 37).collect();
        let ce = [(desc(&[3, 4, 37]), bytes(&logits).to_vec()), (int_desc(&[3, 4]), i64_bytes(&targets))];
        assert_eq!(run(&Op::CrossEntropy, &ce, &[], true), run(&Op::CrossEntropy, &ce, &[], false));
        let cases = [
            (0, ScatterReduction::Add),
            (-1, ScatterReduction::Add),
            (1, ScatterReduction::None),
            (0, ScatterReduction::Mul),
            (1, ScatterReduction::Max),
            (-2, ScatterReduction::Min),
        ];
        // 6 rows: the dense path; 64 rows (320 elements for 20 updates): only the touched ones.
        for ((axis, reduction), rows) in cases.into_iter().flat_map(|c| [(c, 6), (c, 64)]) {
            let data = values(rows * 5, 3);
            let updates = values(4 * 5, 4);
            let indices: Vec<i64> = (0..20).map(|i| [0, 3, -1, 3, 2][i % 5]).collect();
            let ins = [
                (desc(&[rows, 5]), bytes(&data).to_vec()),
                (int_desc(&[4, 5]), i64_bytes(&indices)),
                (desc(&[4, 5]), bytes(&updates).to_vec()),
            ];
            let op = Op::Scatter { axis, reduction };
            let direct = run(&op, &ins, &[rows, 5], true);
            assert_eq!(direct, run(&op, &ins, &[rows, 5], false), "scatter axis {axis} {reduction:?}");
            assert_ne!(
                direct,
                bytes(&data).chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>()
            );
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Runs `a @ b` (b given as `[.., n, k]` when transposed) threaded and not; checks that the
    /// two are bit-identical and agree with a naive f64 product.
    fn check(sa: &[usize], sb: &[usize], so: &[usize], transposed: bool) {
        let (a, b) = (values(sa.iter().product(), 1), values(sb.iter().product(), 2));
        let (da, db, dout) = (desc(sa), desc(sb), desc(so));
        let mut results = Vec::new();
        for threaded in [false, true] {
            let mut out = vec![f32::NAN; so.iter().product()];
            // SAFETY: as in `bytes`, mutably; `out` is not otherwise borrowed.
            let out_bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), 4 * out.len()) };
            let mut o = Out { desc: &dout, bytes: out_bytes };
            let (ia, ib) = (In { desc: &da, bytes: bytes(&a) }, In { desc: &db, bytes: bytes(&b) });
            matmul_on(&ia, &ib, &mut o, transposed, threaded).unwrap();
            results.push(out);
        }
        let same = results[0].iter().zip(&results[1]).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "threaded and single-threaded results differ for {sa:?} x {sb:?}");
        // Naive reference with NumPy batch broadcasting (operand batch dims are 1 or full here).
        let r = so.len();
        let (m, n) = (so[r - 2], so[r - 1]);
        let k = sa[sa.len() - 1];
        let batch: Vec<usize> = so[..r - 2].to_vec();
        let pick = |shape: &[usize], t: &[usize]| -> usize {
            let lead = &shape[..shape.len() - 2];
            let offset = batch.len() - lead.len();
            lead.iter().enumerate().fold(0, |acc, (d, &s)| acc * s + if s == 1 { 0 } else { t[d + offset] })
        };
        let batches: usize = batch.iter().product();
        for flat in 0..batches {
            let mut t = vec![0; batch.len()];
            let mut rest = flat;
            for d in (0..batch.len()).rev() {
                t[d] = rest % batch[d];
                rest /= batch[d];
            }
            let (ba, bb) = (pick(sa, &t), pick(sb, &t));
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| {
                            let bv = if transposed { b[bb * n * k + j * k + p] } else { b[bb * k * n + p * n + j] };
                            f64::from(a[ba * m * k + i * k + p]) * f64::from(bv)
                        })
                        .sum();
                    let got = f64::from(results[0][flat * m * n + i * n + j]);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{sa:?} x {sb:?} at {flat},{i},{j}");
                }
            }
        }
    }

    #[test]
    fn threaded_gemms_are_bit_identical_to_single_threaded_and_correct() {
        // One large GEMM (split inside gemm), with the batch of `a` folded into its rows.
        check(&[3, 96, 200], &[200, 300], &[3, 96, 300], false);
        check(&[96, 200], &[300, 200], &[96, 300], true);
        // A batch of small GEMMs (one per task), and broadcast batch dimensions.
        check(&[12, 33, 17], &[12, 17, 29], &[12, 33, 29], false);
        check(&[2, 1, 9, 5], &[1, 3, 5, 7], &[2, 3, 9, 7], false);
        check(&[4, 9, 5], &[4, 7, 5], &[4, 9, 7], true);
    }

    /// The integer GEMM against the interpreter's `matmul` eval: the same values, for CumSum's
    /// shape (`[1, s] @ [s, s]` with a triangular 0/1 matrix), broadcast batches on either side,
    /// products and sums that overflow i64, and an i32 product that wraps at 32 bits.
    #[test]
    fn integer_matmul_equals_the_interpreter_and_wraps_like_it() {
        use tessera_ir::tensor::Tensor;
        let int_desc = |shape: &[usize]| BufferDesc { storage: Storage::I64, ..desc(shape) };
        let run = |dtype: DType, sa: &[usize], a: Vec<i64>, sb: &[usize], b: Vec<i64>, so: &[usize]| {
            let (ta, tb) = (Tensor::from_i64(dtype, sa.to_vec(), a), Tensor::from_i64(dtype, sb.to_vec(), b));
            let expected = tessera_ir::ops::matmul::eval(&ta, &tb, so).expect("interpreter");
            let (da, db, dout) = (int_desc(sa), int_desc(sb), int_desc(so));
            let (ba, bb) = (encode(&ta), encode(&tb));
            let mut out = vec![0xA5u8; 8 * so.iter().product::<usize>()];
            let mut o = Out { desc: &dout, bytes: &mut out };
            integer_matmul(&In { desc: &da, bytes: &ba }, &In { desc: &db, bytes: &bb }, &mut o, dtype).unwrap();
            assert_eq!(out, encode(&expected), "{dtype} {sa:?} x {sb:?}");
            out
        };
        let seeded = |n: usize, seed: i64, scale: i64| -> Vec<i64> {
            (0..n as i64).map(|i| (i.wrapping_mul(2654435761) ^ seed) % 201 * scale - 100 * scale).collect()
        };
        // CumSum of position ids along a symbolic axis: ones below and on the diagonal.
        let s = 7;
        let ids: Vec<i64> = (0..s as i64).map(|i| i % 3).collect();
        let lower: Vec<i64> = (0..s * s).map(|e| i64::from(e / s <= e % s)).collect();
        let cumsum = run(DType::I64, &[1, s], ids.clone(), &[s, s], lower, &[1, s]);
        let prefix: Vec<u8> = ids
            .iter()
            .scan(0i64, |acc, x| {
                *acc += x;
                Some(*acc)
            })
            .flat_map(i64::to_le_bytes)
            .collect();
        assert_eq!(cumsum, prefix);
        run(DType::I64, &[2, 1, 3, 4], seeded(24, 1, 1), &[5, 4, 2], seeded(40, 2, 1), &[2, 5, 3, 2]);
        run(DType::I64, &[3, 5], seeded(15, 3, 1 << 40), &[4, 5, 6], seeded(120, 4, 1 << 40), &[4, 3, 6]);
        // Products of up to 2^32 summed over 4: the i32 result wraps where the i64 one does not.
        let (a, b) = (seeded(24, 5, 1 << 12), seeded(12, 6, 1 << 12));
        let wide = run(DType::I64, &[2, 3, 4], a.clone(), &[4, 3], b.clone(), &[2, 3, 3]);
        assert_ne!(run(DType::I32, &[2, 3, 4], a, &[4, 3], b, &[2, 3, 3]), wide);
    }
}
