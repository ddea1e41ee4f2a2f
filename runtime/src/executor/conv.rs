//! The convolution and pooling library calls of CPU programs: `conv2d` as im2col per group into
//! a packed buffer and one GEMM (the `gemm` crate, as for MatMul), a direct loop over a
//! zero-padded copy of each plane for depthwise convolutions (every tap of a block of outputs
//! summed in registers), and direct max/average pooling.
//!
//! Semantics are those of `tessera_ir::ops::conv` (NCHW images, weights `[O, C / groups, KH,
//! KW]`, pads `[top, left, bottom, right]`, average pooling over the non-padding taps only); the
//! tests in `tests` compare every call with the reference interpreter (`Op::eval`). Storage is
//! f32 only: the shape rules admit float element types alone, and every float dtype is stored
//! as f32, so any other storage is a malformed artifact and is refused with an error.

use super::epilogue::BoundEpilogue;
use super::library::{f32s, f32s_mut, gemm_f32, gemm_f32_add, In, Out, PARALLEL_GEMM_MIN_MACS};
use rayon::prelude::*;
use std::cell::RefCell;
use tessera_ir::artifact::{BufferDesc, Storage};
use tessera_ir::ops::conv::{PoolKind, Window};

fn nchw(desc: &BufferDesc, what: &str) -> Result<[usize; 4], String> {
    let dims: Vec<usize> = desc.shape.iter().map(|&n| n as usize).collect();
    <[usize; 4]>::try_from(dims.as_slice()).map_err(|_| format!("{what} must be rank 4, got {:?}", desc.shape))
}

/// The window's attributes as unsigned sizes, after [`Window::check`].
struct Geometry {
    strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pads: [usize; 4],
    dilations: [usize; 2],
}

impl Geometry {
    /// Checks `window` and that `[oh, ow]` is what it gives for input `[h, w]` and kernel
    /// `[kh, kw]`.
    fn new(window: &Window, input: [usize; 2], kernel: [usize; 2], out: [usize; 2]) -> Result<Geometry, String> {
        window.check()?;
        for d in 0..2 {
            let extent = window.output_extent(d, input[d] as i64, kernel[d] as i64)?;
            if extent != out[d] as i64 {
                return Err(format!(
                    "output extent {} along spatial axis {d} is not {extent} (input {input:?}, kernel {kernel:?})",
                    out[d]
                ));
            }
        }
        let unsigned = |v: i64| usize::try_from(v).map_err(|_| format!("window attribute {v} is out of range"));
        Ok(Geometry {
            strides: [unsigned(window.strides[0])?, unsigned(window.strides[1])?],
            pads: [
                unsigned(window.pads[0])?,
                unsigned(window.pads[1])?,
                unsigned(window.pads[2])?,
                unsigned(window.pads[3])?,
            ],
            dilations: [unsigned(window.dilations[0])?, unsigned(window.dilations[1])?],
        })
    }

    /// Along spatial axis `d`, for kernel tap `k`: the range of output coordinates whose input
    /// coordinate `o * stride - pad + k * dilation` lies inside `0..n`, and that coordinate's
    /// offset `k * dilation - pad` (so the input coordinate is `o * stride + offset`).
    fn valid(&self, d: usize, k: usize, n: usize, out: usize) -> (std::ops::Range<usize>, isize) {
        let stride = self.strides[d] as isize;
        let offset = (k * self.dilations[d]) as isize - self.pads[d] as isize;
        // First o with o * stride + offset >= 0, and one past the last with it < n.
        let lo = if offset >= 0 { 0 } else { (-offset + stride - 1) / stride };
        let last = n as isize - 1 - offset;
        let hi = if last < 0 { 0 } else { (last / stride + 1).min(out as isize) };
        let lo = lo.min(hi);
        (lo as usize..hi as usize, offset)
    }
}

/// Convolutions and poolings below this many multiply-adds (or window taps) run on the calling
/// thread: rayon's hand-off costs more than it saves on the small layers of mobile models.
const SEQUENTIAL_MAX_MACS: usize = 1 << 18;

/// `for_each` over the planes of `out`, on rayon's pool when `work` is large enough.
fn for_each_plane(out: &mut [f32], plane: usize, work: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if work < SEQUENTIAL_MAX_MACS {
        out.chunks_mut(plane).enumerate().for_each(|(p, x)| f(p, x));
    } else {
        out.par_chunks_mut(plane).enumerate().for_each(|(p, x)| f(p, x));
    }
}

fn check_f32(descs: &[&BufferDesc], what: &str) -> Result<(), String> {
    match descs.iter().find(|d| d.storage != Storage::F32) {
        Some(d) => Err(format!("{what} computes in f32 only; buffer {} has {:?} storage", d.name, d.storage)),
        None => Ok(()),
    }
}

thread_local! {
    /// Per thread, reused across calls so that the small layers of a model do not allocate (and
    /// fault in fresh pages) on every call: the padded input plane and the accumulator of a
    /// depthwise convolution.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `out = conv2d(x, w)` with `groups` channel groups; see the module docs.
pub fn conv2d(x: &In, w: &In, out: &mut Out, window: &Window, groups: u64) -> Result<(), String> {
    conv2d_with(x, w, out, window, groups, None)
}

/// [`conv2d`], then `epilogue` over each GEMM's (or depthwise plane's) output right after it is
/// computed, on the same thread.
pub fn conv2d_with(
    x: &In,
    w: &In,
    out: &mut Out,
    window: &Window,
    groups: u64,
    epilogue: Option<&BoundEpilogue>,
) -> Result<(), String> {
    check_f32(&[x.desc, w.desc, out.desc], "conv2d")?;
    let [n, c, h, wd] = nchw(x.desc, "conv2d input")?;
    let [o, cg, kh, kw] = nchw(w.desc, "conv2d weight")?;
    let [on, oo, oh, ow] = nchw(out.desc, "conv2d result")?;
    let groups = usize::try_from(groups).map_err(|_| "conv2d groups out of range".to_string())?;
    if on != n || oo != o || groups == 0 || o % groups != 0 || cg.checked_mul(groups) != Some(c) {
        return Err(format!(
            "conv2d shapes {:?} * {:?} -> {:?} do not fit {groups} groups",
            x.desc.shape, w.desc.shape, out.desc.shape
        ));
    }
    let geometry = Geometry::new(window, [h, wd], [kh, kw], [oh, ow])?;
    let (xv, wv) = (f32s(x.bytes)?, f32s(w.bytes)?);
    let ov = f32s_mut(out.bytes)?;
    if xv.len() != n * c * h * wd || wv.len() != o * cg * kh * kw || ov.len() != n * o * oh * ow {
        return Err("conv2d buffer sizes do not match their shapes".into());
    }
    if ov.is_empty() {
        return Ok(());
    }
    let shape = ConvShape { c, h, w: wd, o, cg, kh, kw, oh, ow, groups };
    if cg * kh * kw == 0 {
        ov.fill(0.0);
        if let Some(epilogue) = epilogue {
            epilogue.apply(ov, 0);
        }
    } else if cg == 1 && groups == c && groups > 1 {
        depthwise(xv, wv, ov, &shape, &geometry, epilogue);
    } else {
        im2col_gemm(xv, wv, ov, &shape, &geometry, epilogue);
    }
    Ok(())
}

/// The extents of one convolution (per image; the batch is the slices' length).
struct ConvShape {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
}

/// Per image and group: `out[og, L] = w_g[og, K] @ col[K, L]` with `K = cg * kh * kw` taps and
/// `L = oh * ow` output positions; `col` is the group's input unfolded (im2col), or the input
/// itself for a 1x1 kernel with unit strides and no padding, and no `col` at all for a kernel
/// one column wide at unit strides without horizontal padding ([`column_taps`]). Threads split whole GEMMs when each
/// is small, else the output inside one GEMM (never the sum over K); small convolutions run on
/// the calling thread.
fn im2col_gemm(xv: &[f32], wv: &[f32], ov: &mut [f32], s: &ConvShape, g: &Geometry, epilogue: Option<&BoundEpilogue>) {
    let (og, k, l) = (s.o / s.groups, s.cg * s.kh * s.kw, s.oh * s.ow);
    let pointwise = s.kh == 1 && s.kw == 1 && g.strides == [1, 1] && g.pads == [0; 4];
    let columnwise = s.kh > 1 && s.kw == 1 && g.strides == [1, 1] && g.pads[1] == 0 && g.pads[3] == 0;
    let one = |t: usize, dst: &mut [f32], col: &mut Vec<f32>, parallelism: gemm::Parallelism| {
        let (image, group) = (t / s.groups, t % s.groups);
        let channels = (image * s.c + group * s.cg) * s.h * s.w;
        let input = &xv[channels..channels + s.cg * s.h * s.w];
        let lhs = &wv[group * og * k..(group + 1) * og * k];
        if columnwise {
            column_taps(input, lhs, dst, s, g, parallelism);
        } else if pointwise && l < FEW_POSITIONS {
            pointwise_few_positions((og, l, k), lhs, input, dst, col);
        } else {
            let rhs: &[f32] = if pointwise {
                input
            } else {
                // `unfold` writes every element, so a longer buffer from an earlier call is only
                // shortened (no fill), and a shorter one grows with zeros once.
                col.resize(k * l, 0.0);
                unfold(input, col, s, g);
                col
            };
            gemm_f32((og, l, k), lhs, rhs, (1, l), dst, parallelism);
        }
        if let Some(epilogue) = epilogue {
            let threaded = matches!(parallelism, gemm::Parallelism::Rayon(_));
            epilogue.apply_maybe_parallel(dst, t * og * l, threaded);
        }
    };
    let macs = ov.len() * k;
    let tasks = ov.chunks_mut(og * l).enumerate();
    if macs < SEQUENTIAL_MAX_MACS {
        with_columns(|col| tasks.for_each(|(t, dst)| one(t, dst, col, gemm::Parallelism::None)));
    } else if og * k * l >= PARALLEL_GEMM_MIN_MACS {
        with_columns(|col| tasks.for_each(|(t, dst)| one(t, dst, col, gemm::Parallelism::Rayon(0))));
    } else {
        tasks.par_bridge().for_each(|(t, dst)| with_columns(|col| one(t, dst, col, gemm::Parallelism::None)));
    }
}

/// Pointwise convolutions over fewer output positions than this take
/// [`pointwise_few_positions`]: the `gemm` crate's micro-kernels are 8 or 16 positions tall.
/// Measured: 4 positions (PP-OCRv4 det's last stage) gain, 12 (PP-OCRv4 rec's) lose 20%, as
/// the dot products read each weight once per four positions and the crate's tile is 3/4 full.
const FEW_POSITIONS: usize = 8;

/// A 1x1 convolution over `l < FEW_POSITIONS` output positions (the last stage of a mobile
/// backbone on a small image, 2x2, and squeeze-excitation layers on one pixel),
/// `dst[og, l] = w[og, k] @ x[k, l]`. The `gemm` crate vectorizes along the destination's
/// contiguous axis, here the positions, so 4 of them left half of each 8-wide micro-kernel
/// tile empty (`perf` of PP-OCRv4 det: that kernel 17% of a run), and it packs the weight on
/// every call. Here every output is a dot product along the input channels, where both the
/// weight row and the (transposed, `l * k` floats) input column are contiguous: blocks of two
/// weight rows by four positions keep eight vector sums in registers, and each weight is read
/// once per four positions.
fn pointwise_few_positions(
    (og, l, k): (usize, usize, usize),
    weights: &[f32],
    input: &[f32],
    dst: &mut [f32],
    transposed: &mut Vec<f32>,
) {
    let (weights, input, dst) = (&weights[..og * k], &input[..k * l], &mut dst[..og * l]);
    let columns: &[f32] = if l == 1 {
        input
    } else {
        transposed.clear();
        transposed.extend((0..l).flat_map(|j| input.iter().skip(j).step_by(l)));
        transposed
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { dot_blocks_avx2_fma((og, l, k), weights, columns, dst) };
        return;
    }
    for (row, out) in weights.chunks_exact(k).zip(dst.chunks_exact_mut(l)) {
        for (d, column) in out.iter_mut().zip(columns.chunks_exact(k)) {
            *d = dot(row, column);
        }
    }
}

/// `dst[o, j] = rows[o, ..] · columns[j, ..]` for `rows [og, k]`, `columns [l, k]`, `dst [og,
/// l]`, in blocks of [`DOT_ROWS`] x [`DOT_COLUMNS`] vector sums.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_blocks_avx2_fma((og, l, k): (usize, usize, usize), rows: &[f32], columns: &[f32], dst: &mut [f32]) {
    assert!(rows.len() >= og * k && columns.len() >= l * k && dst.len() >= og * l, "dot operands too small");
    let mut o = 0;
    while o < og {
        let r = (og - o).min(DOT_ROWS);
        let mut j = 0;
        while j < l {
            let c = (l - j).min(DOT_COLUMNS);
            // SAFETY: rows o..o + r and columns j..j + c lie inside the operands (asserted).
            match (r, c) {
                (2, 4) => dot_block::<2, 4>(k, rows, columns, dst, l, o, j),
                (2, 3) => dot_block::<2, 3>(k, rows, columns, dst, l, o, j),
                (2, 2) => dot_block::<2, 2>(k, rows, columns, dst, l, o, j),
                (2, _) => dot_block::<2, 1>(k, rows, columns, dst, l, o, j),
                (_, 4) => dot_block::<1, 4>(k, rows, columns, dst, l, o, j),
                (_, 3) => dot_block::<1, 3>(k, rows, columns, dst, l, o, j),
                (_, 2) => dot_block::<1, 2>(k, rows, columns, dst, l, o, j),
                _ => dot_block::<1, 1>(k, rows, columns, dst, l, o, j),
            }
            j += c;
        }
        o += r;
    }
}

/// Weight rows per block of [`dot_blocks_avx2_fma`].
const DOT_ROWS: usize = 2;
/// Positions per block of [`dot_blocks_avx2_fma`]: with [`DOT_ROWS`], eight vector sums.
const DOT_COLUMNS: usize = 4;

/// One `R x C` block of [`dot_blocks_avx2_fma`]: rows `o..o + R`, positions `j..j + C`.
///
/// # Safety
/// The CPU must have AVX2 and FMA, and the block must lie inside the operands.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_block<const R: usize, const C: usize>(
    k: usize,
    rows: &[f32],
    columns: &[f32],
    dst: &mut [f32],
    l: usize,
    o: usize,
    j: usize,
) {
    use std::arch::x86_64::*;
    let row_at = |r: usize| rows.as_ptr().add((o + r) * k);
    let column_at = |c: usize| columns.as_ptr().add((j + c) * k);
    let mut sums = [[_mm256_setzero_ps(); C]; R];
    let mut i = 0;
    while i + 8 <= k {
        let xs: [__m256; C] = std::array::from_fn(|c| _mm256_loadu_ps(column_at(c).add(i)));
        for (r, row_sums) in sums.iter_mut().enumerate() {
            let w = _mm256_loadu_ps(row_at(r).add(i));
            for (sum, &x) in row_sums.iter_mut().zip(&xs) {
                *sum = _mm256_fmadd_ps(w, x, *sum);
            }
        }
        i += 8;
    }
    for (r, row_sums) in sums.iter().enumerate() {
        for (c, &sum) in row_sums.iter().enumerate() {
            // Horizontal sum of the eight lanes, then the channels past the last whole vector.
            let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
            let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let mut total = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
            for t in i..k {
                total = (*row_at(r).add(t)).mul_add(*column_at(c).add(t), total);
            }
            dst[(o + r) * l + j + c] = total;
        }
    }
}

/// `a · b` over their common length, in eight running partial sums (the portable path of
/// [`pointwise_few_positions`]).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_blocks, b_blocks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_blocks.remainder().iter().zip(b_blocks.remainder()).map(|(x, y)| x * y).sum();
    let mut lanes = [0f32; 8];
    for (x, y) in a_blocks.zip(b_blocks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

thread_local! {
    /// Per thread, the im2col buffer of [`im2col_gemm`], kept across calls: allocating it per
    /// call cost a fresh zeroed allocation (memset and page faults) for every convolution of
    /// every run (`perf`: memset and memmove 13% of a PP-OCRv4 det run).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's im2col buffer. The buffer is taken out of the thread-local for
/// the call (and put back after), so a nested use on the same thread (rayon may run another
/// convolution's task here while a threaded GEMM waits) gets an empty buffer instead of a
/// borrow panic.
fn with_columns<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut col = COLUMNS.with_borrow_mut(std::mem::take);
    let result = f(&mut col);
    COLUMNS.with_borrow_mut(|kept| {
        if kept.capacity() < col.capacity() {
            *kept = col;
        }
    });
    result
}

/// A convolution whose kernel is one column wide (`kw = 1`), at unit strides and without
/// horizontal padding (magika's `5x1` over a width-1 image): output position `l = oy * w + ox`
/// of tap `ky` reads input position `l + (ky * dy - top) * w` of every channel, so the product
/// is a sum over the taps of GEMMs on shifted views of the input, `out[og, L] += w_g[.., ky]
/// [og, cg] @ x[cg, L shifted]`, each over the output rows that tap reaches inside the image:
/// no unfolded copy of the input (the `gemm` crate packs its operands either way).
fn column_taps(input: &[f32], lhs: &[f32], dst: &mut [f32], s: &ConvShape, g: &Geometry, p: gemm::Parallelism) {
    let (og, k, l) = (s.o / s.groups, s.cg * s.kh, s.oh * s.ow);
    dst.fill(0.0);
    for ky in 0..s.kh {
        let (ys, y_offset) = g.valid(0, ky, s.h, s.oh);
        if ys.is_empty() {
            continue;
        }
        let first_in = ((ys.start as isize + y_offset) as usize) * s.w;
        let (first_out, n) = (ys.start * s.ow, ys.len() * s.ow);
        // w_g[o, ci, ky] lies at o * k + ci * kh + ky; x[ci, position] at ci * h * w + position.
        gemm_f32_add(
            (og, n, s.cg),
            (&lhs[ky..], (k, s.kh)),
            (&input[first_in..], (s.h * s.w, 1)),
            (&mut dst[first_out..], l),
            p,
        );
    }
}

/// im2col of one group's channels `input [cg, h, w]` into `col [cg * kh * kw, oh * ow]`; taps in
/// the padding are zeros.
fn unfold(input: &[f32], col: &mut [f32], s: &ConvShape, g: &Geometry) {
    let l = s.oh * s.ow;
    let mut rows = col.chunks_exact_mut(l);
    for ci in 0..s.cg {
        let plane = &input[ci * s.h * s.w..(ci + 1) * s.h * s.w];
        for ky in 0..s.kh {
            let (ys, y_offset) = g.valid(0, ky, s.h, s.oh);
            for kx in 0..s.kw {
                let (xs, x_offset) = g.valid(1, kx, s.w, s.ow);
                let Some(row) = rows.next() else { return };
                if ys.len() < s.oh || xs.len() < s.ow {
                    // Some of this tap's positions fall in the padding: zeros there.
                    row.fill(0.0);
                }
                if xs.is_empty() {
                    // Every column of this tap is padding (and `first` below would be negative).
                    continue;
                }
                for oy in ys.clone() {
                    let iy = (oy * g.strides[0]) as isize + y_offset;
                    let src = &plane[iy as usize * s.w..(iy as usize + 1) * s.w];
                    let dst = &mut row[oy * s.ow..(oy + 1) * s.ow];
                    let first = (xs.start * g.strides[1]) as isize + x_offset;
                    if g.strides[1] == 1 {
                        let first = first as usize;
                        dst[xs.clone()].copy_from_slice(&src[first..first + xs.len()]);
                    } else {
                        for (j, ox) in xs.clone().enumerate() {
                            dst[ox] = src[first as usize + j * g.strides[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise convolution (one input channel per group): each output plane is a weighted sum of
/// shifted input planes. The input plane is first copied into a zero-padded scratch plane, so
/// every tap reads whole rows without bounds arithmetic; with unit strides the output is
/// accumulated at the padded width, so each tap is one long multiply-add over the whole plane
/// (the planes of mobile models are a few pixels wide, too short for row-sized loops), and the
/// valid columns are copied out at the end. Threads split the planes.
fn depthwise(xv: &[f32], wv: &[f32], ov: &mut [f32], s: &ConvShape, g: &Geometry, epilogue: Option<&BoundEpilogue>) {
    let multiplier = s.o / s.groups;
    let taps = s.kh * s.kw;
    let plane_len = s.oh * s.ow;
    // The epilogue runs once per block of whole planes, not per plane: mobile models' planes
    // are a few dozen pixels, and a call per plane made the fused run slower than the unfused
    // one. A block of about `EPILOGUE_BLOCK_ELEMENTS` is still in cache when the epilogue reads it.
    let planes_per_block = if epilogue.is_some() { (EPILOGUE_BLOCK_ELEMENTS / plane_len).max(1) } else { 1 };
    for_each_plane(ov, plane_len * planes_per_block, ov.len() * taps, |b, block| {
        let first_plane = b * planes_per_block;
        SCRATCH.with_borrow_mut(|(padded, acc)| {
            for (i, plane) in block.chunks_mut(plane_len).enumerate() {
                let p = first_plane + i;
                let (image, oc) = (p / s.o, p % s.o);
                let channel = image * s.c + oc / multiplier;
                let input = &xv[channel * s.h * s.w..(channel + 1) * s.h * s.w];
                let weights = &wv[oc * taps..(oc + 1) * taps];
                let operands = PlaneOperands { input, weights, s, g };
                depthwise_plane(operands, plane, padded, acc);
            }
        });
        if let Some(epilogue) = epilogue {
            epilogue.apply(block, first_plane * plane_len);
        }
    });
}

/// The least number of elements a depthwise convolution's epilogue is applied to at once (a
/// whole number of planes, one plane when a plane is larger): 16 KiB of f32, inside L1 or L2.
const EPILOGUE_BLOCK_ELEMENTS: usize = 4096;

/// What one plane of [`depthwise`] reads: its input channel, its filter taps, and the
/// convolution's shape and geometry (passed as one through the instruction-set dispatch).
#[derive(Clone, Copy)]
struct PlaneOperands<'a> {
    input: &'a [f32],
    weights: &'a [f32],
    s: &'a ConvShape,
    g: &'a Geometry,
}

/// One plane of [`depthwise`] into `plane`, on the best instruction set the CPU has; `padded`
/// and `acc` are the thread's scratch buffers.
fn depthwise_plane(operands: PlaneOperands, plane: &mut [f32], padded: &mut Vec<f32>, acc: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { depthwise_plane_avx2_fma(operands, plane, padded, acc) };
        return;
    }
    depthwise_plane_body::<false>(operands, plane, padded, acc);
}

/// [`depthwise_plane_body`] compiled for AVX2 and FMA, so its loops vectorize 8 wide.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_plane_avx2_fma(
    operands: PlaneOperands,
    plane: &mut [f32],
    padded: &mut Vec<f32>,
    acc: &mut Vec<f32>,
) {
    depthwise_plane_body::<true>(operands, plane, padded, acc);
}

/// The work of [`depthwise_plane`]; `FMA`: multiply-adds are fused (only where the CPU has
/// them: `mul_add` is a slow library call otherwise).
#[inline(always)]
fn depthwise_plane_body<const FMA: bool>(
    operands: PlaneOperands,
    plane: &mut [f32],
    padded: &mut Vec<f32>,
    acc: &mut Vec<f32>,
) {
    let PlaneOperands { input, weights, s, g } = operands;
    let madd = |a: f32, w: f32, x: f32| if FMA { x.mul_add(w, a) } else { a + w * x };
    let [top, left, bottom, right] = g.pads;
    let (ph, pw) = (s.h + top + bottom, s.w + left + right);
    let padded: &[f32] = if g.pads == [0; 4] {
        input
    } else {
        pad_plane(input, padded, s, g);
        &padded[..]
    };
    debug_assert_eq!(padded.len(), ph * pw);
    let [dy, dx] = g.dilations;
    if g.strides == [1, 1] {
        // Output position (oy, ox) at oy * pw + ox of `acc`; its tap (ky, kx) reads the padded
        // plane at that index plus ky * dy * pw + kx * dx, which stays inside it for every
        // valid position (oh = ph - (kh - 1) * dy, ow = pw - (kw - 1) * dx at most).
        let len = (s.oh - 1) * pw + s.ow;
        // `resize` without `clear`: every element is written below, so only growth is filled.
        acc.resize(len, 0.0);
        let acc = &mut acc[..len];
        #[cfg(target_arch = "x86_64")]
        if FMA {
            let taps = TapGrid { kernel: [s.kh, s.kw], steps: [dy * pw, dx] };
            // SAFETY: `FMA` is true only on the AVX2 + FMA path of `depthwise_plane`.
            unsafe { sum_taps_avx2_fma(padded, taps, weights, acc) };
            copy_valid_columns(acc, plane, s.ow, pw);
            return;
        }
        acc.fill(0.0);
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let weight = weights[ky * s.kw + kx];
                let shifted = &padded[ky * dy * pw + kx * dx..][..len];
                for (a, &x) in acc.iter_mut().zip(shifted) {
                    *a = madd(*a, weight, x);
                }
            }
        }
        copy_valid_columns(acc, plane, s.ow, pw);
        return;
    }
    let [sy, sx] = g.strides;
    #[cfg(target_arch = "x86_64")]
    if FMA && sx == 1 {
        // Rows `sy` apart, each a unit-stride run of the taps straight into the output row.
        let taps = TapGrid { kernel: [s.kh, s.kw], steps: [dy * pw, dx] };
        for (oy, dst) in plane.chunks_exact_mut(s.ow).enumerate() {
            // SAFETY: `FMA` is true only on the AVX2 + FMA path of `depthwise_plane`.
            unsafe { sum_taps_avx2_fma(&padded[oy * sy * pw..], taps, weights, dst) };
        }
        return;
    }
    for (oy, dst) in plane.chunks_exact_mut(s.ow).enumerate() {
        dst.fill(0.0);
        for ky in 0..s.kh {
            let row = &padded[(oy * sy + ky * dy) * pw..][..pw];
            for kx in 0..s.kw {
                let weight = weights[ky * s.kw + kx];
                if sx == 1 {
                    for (d, &x) in dst.iter_mut().zip(&row[kx * dx..kx * dx + s.ow]) {
                        *d = madd(*d, weight, x);
                    }
                } else {
                    for (ox, d) in dst.iter_mut().enumerate() {
                        *d = madd(*d, weight, row[ox * sx + kx * dx]);
                    }
                }
            }
        }
    }
}

/// Writes `input [h, w]` into `padded [h + top + bottom, w + left + right]` with zeros around
/// it. Only the border is zeroed: the interior is overwritten, so a buffer left from an earlier
/// plane needs no full clear.
fn pad_plane(input: &[f32], padded: &mut Vec<f32>, s: &ConvShape, g: &Geometry) {
    let [top, left, bottom, right] = g.pads;
    let pw = s.w + left + right;
    padded.resize((s.h + top + bottom) * pw, 0.0);
    let (head, rest) = padded.split_at_mut(top * pw);
    head.fill(0.0);
    let (body, tail) = rest.split_at_mut(s.h * pw);
    tail.fill(0.0);
    for (row, src) in body.chunks_exact_mut(pw).zip(input.chunks_exact(s.w)) {
        row[..left].fill(0.0);
        row[left..left + s.w].copy_from_slice(src);
        row[left + s.w..].fill(0.0);
    }
}

/// Copies the `ow` valid columns of each row of `acc` (rows `pw` apart, the last one possibly
/// short) into the rows of `plane`.
fn copy_valid_columns(acc: &[f32], plane: &mut [f32], ow: usize, pw: usize) {
    for (oy, dst) in plane.chunks_exact_mut(ow).enumerate() {
        dst.copy_from_slice(&acc[oy * pw..oy * pw + ow]);
    }
}

/// A depthwise filter's taps over a plane stored row by row: `kernel = [kh, kw]` taps, tap
/// `(ky, kx)` at offset `ky * steps[0] + kx * steps[1]` from the output position it adds to.
#[derive(Clone, Copy)]
struct TapGrid {
    kernel: [usize; 2],
    steps: [usize; 2],
}

/// `acc[i] = sum over taps t of weights[t] * plane[i + offset(t)]`, the taps in row-major order,
/// each a fused multiply-add onto the sum of the ones before it (so the result is bit for bit
/// that of one multiply-add pass per tap). Blocks of 32 outputs stay in four AVX registers over
/// all the taps, so each output is stored once instead of once per tap.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_taps_avx2_fma(plane: &[f32], taps: TapGrid, weights: &[f32], acc: &mut [f32]) {
    use std::arch::x86_64::*;
    let ([kh, kw], [row_step, col_step]) = (taps.kernel, taps.steps);
    let len = acc.len();
    if len == 0 {
        return;
    }
    let last_offset = (kh - 1) * row_step + (kw - 1) * col_step;
    assert!(weights.len() >= kh * kw && plane.len() >= last_offset + len, "depthwise taps out of the plane");
    let (src, dst) = (plane.as_ptr(), acc.as_mut_ptr());
    let mut i = 0;
    // SAFETY (every pointer below): a load at `i + offset .. i + offset + 8` with `i + 8 <= len`
    // (or `i + 32` for the wide block) and `offset <= last_offset` is inside `plane` by the
    // assertion; stores are at `i .. i + 8 <= len` of `acc`.
    while i + 32 <= len {
        let mut sums = [_mm256_setzero_ps(); 4];
        for ky in 0..kh {
            for kx in 0..kw {
                let w = _mm256_set1_ps(*weights.get_unchecked(ky * kw + kx));
                let at = src.add(i + ky * row_step + kx * col_step);
                for (v, sum) in sums.iter_mut().enumerate() {
                    *sum = _mm256_fmadd_ps(w, _mm256_loadu_ps(at.add(8 * v)), *sum);
                }
            }
        }
        for (v, sum) in sums.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i + 8 * v), *sum);
        }
        i += 32;
    }
    while i + 8 <= len {
        let mut sum = _mm256_setzero_ps();
        for ky in 0..kh {
            for kx in 0..kw {
                let w = _mm256_set1_ps(*weights.get_unchecked(ky * kw + kx));
                sum = _mm256_fmadd_ps(w, _mm256_loadu_ps(src.add(i + ky * row_step + kx * col_step)), sum);
            }
        }
        _mm256_storeu_ps(dst.add(i), sum);
        i += 8;
    }
    for (j, out) in acc.iter_mut().enumerate().skip(i) {
        let mut sum = 0.0f32;
        for ky in 0..kh {
            for kx in 0..kw {
                sum = plane[j + ky * row_step + kx * col_step].mul_add(weights[ky * kw + kx], sum);
            }
        }
        *out = sum;
    }
}

/// `out = max_pool2d / avg_pool2d(x)` over a `kernel` window: max pads with -inf and propagates
/// NaN; average divides by the number of taps inside the input (a window wholly in the padding
/// gives -inf and NaN). Threads split the planes.
pub fn pool2d(x: &In, out: &mut Out, kind: PoolKind, kernel: [u64; 2], window: &Window) -> Result<(), String> {
    check_f32(&[x.desc, out.desc], kind.mnemonic())?;
    let [n, c, h, wd] = nchw(x.desc, "pool2d input")?;
    let [on, oc, oh, ow] = nchw(out.desc, "pool2d result")?;
    let [kh, kw] = kernel.map(|k| k as usize);
    if on != n || oc != c || kh == 0 || kw == 0 {
        return Err(format!(
            "pool2d shapes {:?} -> {:?} with kernel {kernel:?} do not agree",
            x.desc.shape, out.desc.shape
        ));
    }
    let g = Geometry::new(window, [h, wd], [kh, kw], [oh, ow])?;
    let xv = f32s(x.bytes)?;
    let ov = f32s_mut(out.bytes)?;
    if xv.len() != n * c * h * wd || ov.len() != n * c * oh * ow {
        return Err("pool2d buffer sizes do not match their shapes".into());
    }
    if ov.is_empty() {
        return Ok(());
    }
    // Per kernel row and column: which output coordinates it reaches, and from where.
    let rows: Vec<_> = (0..kh).map(|ky| g.valid(0, ky, h, oh)).collect();
    let cols: Vec<_> = (0..kw).map(|kx| g.valid(1, kx, wd, ow)).collect();
    for_each_plane(ov, oh * ow, ov.len() * kh * kw, |p, plane| {
        let input = &xv[p * h * wd..(p + 1) * h * wd];
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut max, mut sum, mut count) = (f32::NEG_INFINITY, 0.0f32, 0usize);
                for (ys, y_offset) in &rows {
                    if !ys.contains(&oy) {
                        continue;
                    }
                    let iy = ((oy * g.strides[0]) as isize + y_offset) as usize;
                    for (xs, x_offset) in &cols {
                        if !xs.contains(&ox) {
                            continue;
                        }
                        let v = input[iy * wd + ((ox * g.strides[1]) as isize + x_offset) as usize];
                        max = if v.is_nan() || max.is_nan() { f32::NAN } else { max.max(v) };
                        sum += v;
                        count += 1;
                    }
                }
                plane[oy * ow + ox] = match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg => sum / count as f32,
                };
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::test_buffers::{bytes, desc, values};
    use proptest::prelude::*;
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::Op;
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;

    /// Runs `call` on the inputs into an output of `out_shape` (prefilled with NaN, so an
    /// unwritten element shows).
    fn run_call(inputs: &[(&[usize], &[f32])], out_shape: &[usize], call: impl Fn(&[In], &mut Out)) -> Vec<f32> {
        let descs: Vec<BufferDesc> = inputs.iter().map(|(s, _)| desc(s)).collect();
        let ins: Vec<In> = descs.iter().zip(inputs).map(|(d, (_, v))| In { desc: d, bytes: bytes(v) }).collect();
        let dout = desc(out_shape);
        let mut result = vec![f32::NAN; out_shape.iter().product()];
        // SAFETY: as in `bytes`, mutably; `result` is not otherwise borrowed.
        let out_bytes = unsafe { std::slice::from_raw_parts_mut(result.as_mut_ptr().cast(), 4 * result.len()) };
        call(&ins, &mut Out { desc: &dout, bytes: out_bytes });
        result
    }

    /// The reference interpreter's result of `op` on f32 tensors.
    fn reference(op: &Op, inputs: &[(&[usize], &[f32])]) -> Tensor {
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|(s, v)| Tensor::from_f64(DType::F32, s.to_vec(), v.iter().map(|&x| f64::from(x)).collect()))
            .collect();
        let types: Vec<TensorType> = tensors
            .iter()
            .map(|t| TensorType::of_static(DType::F32, &t.shape.iter().map(|&n| n as u64).collect::<Vec<_>>()))
            .collect();
        let type_refs: Vec<&TensorType> = types.iter().collect();
        let out_type = op.infer(&type_refs).expect("shape rule").remove(0);
        let refs: Vec<&Tensor> = tensors.iter().collect();
        op.eval(&refs, &[out_type]).expect("reference eval").remove(0)
    }

    /// Equal within 1e-4 relative to the magnitude (absolute near zero); NaN and infinities
    /// must match exactly.
    fn assert_close(got: &[f32], want: &Tensor, what: &str) {
        let want = want.to_f64_vec();
        assert_eq!(got.len(), want.len(), "{what}: element count");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let g = f64::from(g);
            let same_special = (g.is_nan() && w.is_nan()) || (g.is_infinite() && g == w);
            let close = (g - w).abs() <= 1e-4 * w.abs().max(1.0);
            assert!(same_special || close, "{what}: element {i} is {g}, the interpreter gives {w}");
        }
    }

    #[derive(Debug, Clone)]
    struct Case {
        n: usize,
        groups: usize,
        cg: usize,
        og: usize,
        hw: [usize; 2],
        kernel: [usize; 2],
        window: Window,
    }

    fn window() -> impl Strategy<Value = Window> {
        (prop::array::uniform2(1i64..=3), prop::array::uniform4(0i64..=2), prop::array::uniform2(1i64..=2))
            .prop_map(|(strides, pads, dilations)| Window { strides, pads, dilations })
    }

    /// Random convolutions whose window fits the padded input; `depthwise` forces one input
    /// channel per group.
    fn case(depthwise: bool) -> impl Strategy<Value = Case> {
        let cg = if depthwise { 1..=1usize } else { 1..=4usize };
        (
            1..=2usize,
            1..=4usize,
            cg,
            1..=3usize,
            prop::array::uniform2(1..=9usize),
            prop::array::uniform2(1..=3usize),
            window(),
        )
            .prop_map(|(n, groups, cg, og, hw, kernel, window)| Case { n, groups, cg, og, hw, kernel, window })
            .prop_filter("the window fits the padded input", |c| {
                (0..2).all(|d| c.window.output_extent(d, c.hw[d] as i64, c.kernel[d] as i64).is_ok())
            })
    }

    fn check_conv(case: &Case) {
        let c = case.groups * case.cg;
        let o = case.groups * case.og;
        let xs = [case.n, c, case.hw[0], case.hw[1]];
        let ws = [o, case.cg, case.kernel[0], case.kernel[1]];
        let (x, w) = (values(xs.iter().product(), 1), values(ws.iter().product(), 2));
        let op = Op::Conv2d { window: case.window.clone(), groups: case.groups as i64 };
        let want = reference(&op, &[(&xs, &x), (&ws, &w)]);
        let got = run_call(&[(&xs, &x), (&ws, &w)], &want.shape, |ins, out| {
            conv2d(&ins[0], &ins[1], out, &case.window, case.groups as u64).expect("conv2d");
        });
        assert_close(&got, &want, &format!("{case:?}"));
    }

    proptest! {
        #[test]
        fn conv2d_matches_the_interpreter(case in case(false)) {
            check_conv(&case);
        }

        #[test]
        fn depthwise_conv2d_matches_the_interpreter(case in case(true)) {
            check_conv(&case);
        }

        #[test]
        fn pool2d_matches_the_interpreter(
            n in 1..=2usize, c in 1..=3usize, hw in prop::array::uniform2(1..=9usize),
            kernel in prop::array::uniform2(1..=3usize), window in window(), max in any::<bool>(),
        ) {
            let fits = (0..2).all(|d| window.output_extent(d, hw[d] as i64, kernel[d] as i64).is_ok());
            prop_assume!(fits);
            let kind = if max { PoolKind::Max } else { PoolKind::Avg };
            let xs = [n, c, hw[0], hw[1]];
            let x = values(xs.iter().product(), 3);
            let op = Op::Pool2d { kind, kernel: kernel.map(|k| k as i64), window: window.clone() };
            let want = reference(&op, &[(&xs, &x)]);
            let got = run_call(&[(&xs, &x)], &want.shape, |ins, out| {
                pool2d(&ins[0], out, kind, kernel.map(|k| k as u64), &window).expect("pool2d");
            });
            assert_close(&got, &want, &format!("{kind:?} {xs:?} {kernel:?} {window:?}"));
        }
    }

    /// Convolutions big enough to use threads (one GEMM split across them, whole GEMMs per task,
    /// depthwise planes per task), the depthwise shapes of a mobile model, and a 1x1 one that
    /// reads the input in place still match the interpreter.
    #[test]
    fn large_and_pointwise_convolutions_match_the_interpreter() {
        let big = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 1, cg: 32, og: 64, hw: [32, 32], kernel: [3, 3], window: big.clone() });
        check_conv(&Case { n: 1, groups: 4, cg: 8, og: 8, hw: [16, 16], kernel: [3, 3], window: big.clone() });
        check_conv(&Case { n: 2, groups: 64, cg: 1, og: 1, hw: [32, 32], kernel: [3, 3], window: big });
        // Depthwise layers of PP-OCRv4 rec: 5x5 taps over planes four pixels wide, unit and
        // (2, 1) strides; and a dilated one.
        let mobile = Window { strides: [1, 1], pads: [2, 2, 2, 2], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 240, cg: 1, og: 1, hw: [12, 4], kernel: [5, 5], window: mobile });
        let strided = Window { strides: [2, 1], pads: [2, 2, 2, 2], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 48, cg: 1, og: 1, hw: [12, 4], kernel: [5, 5], window: strided });
        // Unpadded (read in place, no padded copy), and rows of a (2, 1) stride long enough for
        // whole register blocks of the tap sums; a dilated one.
        let unpadded = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 8, cg: 1, og: 1, hw: [13, 11], kernel: [3, 3], window: unpadded });
        let tall = Window { strides: [2, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 3, cg: 1, og: 1, hw: [9, 45], kernel: [3, 3], window: tall });
        let dilated = Window { strides: [1, 2], pads: [2, 1, 0, 3], dilations: [2, 2] };
        check_conv(&Case { n: 2, groups: 8, cg: 1, og: 2, hw: [9, 7], kernel: [3, 3], window: dilated });
        let pointwise = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        check_conv(&Case { n: 2, groups: 2, cg: 8, og: 4, hw: [5, 7], kernel: [1, 1], window: pointwise.clone() });
        // Fewer positions than a micro-kernel tile, as dot products: PP-OCRv4 det's last stage
        // (2x2) scaled down, a 3x2 image with an odd channel count (partial blocks both ways),
        // and one pixel (a squeeze-excitation layer) with a channel count that leaves a tail
        // after the blocks of eight.
        check_conv(&Case { n: 1, groups: 1, cg: 48, og: 40, hw: [2, 2], kernel: [1, 1], window: pointwise.clone() });
        check_conv(&Case { n: 2, groups: 2, cg: 20, og: 9, hw: [3, 2], kernel: [1, 1], window: pointwise.clone() });
        check_conv(&Case { n: 2, groups: 1, cg: 45, og: 12, hw: [1, 1], kernel: [1, 1], window: pointwise });
        // One column wide, tap by tap without im2col: magika's shape (width 1), scaled down, one
        // that splits its GEMMs over threads, and one padded and dilated over a wider image.
        let column = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        check_conv(&Case { n: 1, groups: 1, cg: 32, og: 16, hw: [40, 1], kernel: [5, 1], window: column.clone() });
        check_conv(&Case { n: 1, groups: 1, cg: 64, og: 128, hw: [260, 1], kernel: [5, 1], window: column });
        let padded = Window { strides: [1, 1], pads: [3, 0, 1, 0], dilations: [2, 1] };
        check_conv(&Case { n: 2, groups: 2, cg: 3, og: 4, hw: [9, 6], kernel: [3, 1], window: padded });
    }

    /// A depthwise convolution's epilogue (bias per channel, then ReLU) runs once per block of
    /// planes: with planes of 35 and of 5,000 elements (several planes per block with a shorter
    /// last block, and one plane per block) it gives the unfused convolution followed by the
    /// formula, element for element.
    #[test]
    fn depthwise_epilogue_over_blocks_of_planes_equals_the_unfused_result() {
        use tessera_ir::artifact::{Epilogue, EpilogueOp, EpilogueOperand};
        use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
        let window = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
        for (n, channels, hw) in [(2, 300, [5, 7]), (1, 3, [50, 100])] {
            let xs = [n, channels, hw[0], hw[1]];
            let ws = [channels, 1, 3, 3];
            let (x, w) = (values(xs.iter().product(), 1), values(ws.iter().product(), 2));
            let bias = values(channels, 3);
            let plane = hw[0] * hw[1];
            let epilogue = Epilogue {
                operands: vec![EpilogueOperand { inner: plane as u64, extent: channels as u64 }],
                code: vec![
                    EpilogueOp::Result,
                    EpilogueOp::Operand { index: 0 },
                    EpilogueOp::Binary { binary: BinaryOp::Add, a: 0, b: 1 },
                    EpilogueOp::Unary { unary: UnaryOp::Relu, x: 2 },
                ],
            };
            let out_len = n * channels * plane;
            let bound = BoundEpilogue::new(&epilogue, vec![&bias], out_len).expect("binds");
            let conv = |epilogue: Option<&BoundEpilogue>| {
                run_call(&[(&xs, &x), (&ws, &w)], &xs, |ins, out| {
                    conv2d_with(&ins[0], &ins[1], out, &window, channels as u64, epilogue).expect("conv2d");
                })
            };
            let unfused = conv(None);
            let want: Vec<f32> =
                unfused.iter().enumerate().map(|(i, &v)| (v + bias[(i / plane) % channels]).max(0.0)).collect();
            assert_eq!(conv(Some(&bound)), want, "{xs:?}");
        }
    }

    #[test]
    fn non_f32_storage_and_mismatched_shapes_are_refused() {
        let window = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        let (dx, dw, dout) = (desc(&[1, 1, 3, 3]), desc(&[1, 1, 2, 2]), desc(&[1, 1, 2, 2]));
        let x = values(9, 1);
        let w = values(4, 2);
        let mut result = vec![0f32; 4];
        // SAFETY: as in `bytes`, mutably.
        let out_bytes = unsafe { std::slice::from_raw_parts_mut(result.as_mut_ptr().cast(), 16) };
        let mut out = Out { desc: &dout, bytes: out_bytes };
        let mut ints = dx.clone();
        ints.storage = Storage::I64;
        let err =
            conv2d(&In { desc: &ints, bytes: bytes(&x) }, &In { desc: &dw, bytes: bytes(&w) }, &mut out, &window, 1);
        assert!(err.is_err_and(|e| e.contains("f32 only")));
        let wrong = desc(&[1, 1, 3, 3]);
        let err =
            conv2d(&In { desc: &wrong, bytes: bytes(&x) }, &In { desc: &dw, bytes: bytes(&w) }, &mut out, &window, 2);
        assert!(err.is_err_and(|e| e.contains("groups")));
        let err = pool2d(&In { desc: &dx, bytes: bytes(&x) }, &mut out, PoolKind::Max, [3, 3], &window);
        assert!(err.is_err_and(|e| e.contains("output extent")));
    }
}
