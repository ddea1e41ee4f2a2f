//! A register-tiled f32 GEMM for the small products of training steps and attention heads
//! (k of 16 to a few hundred, right operand a few hundred KiB at most), where the `gemm`
//! crate's per-call set-up and packing cost more than the multiply-adds themselves.
//!
//! `c = a @ b`: `a` row-major `[m, k]`, `c` row-major `[m, n]` (overwritten), `b` read through
//! its column and row strides like [`super::library::gemm_f32`]; a `b` that is not row-major
//! (the transposed weight of `x @ w^T`) is first copied row-major into a per-thread scratch
//! (`k * n` floats against `m * n * k` multiply-adds). Tiles of a few rows by [`COLUMNS`]
//! columns of `c` live in registers over the whole sum; the columns that do not fill a tile go
//! through a scalar loop. Every element is one fused multiply-add chain over k in increasing
//! order, whatever the tile, the vector width or the thread, so the result depends only on the
//! operands (AVX-512 and AVX2 give the same bits; without FMA the chain is multiply then add).
//!
//! [`skinny`] is the same chain with the loops the other way round, for a few rows against a
//! weight too large for L2 (a serving decode step: 4 to 32 tokens through `[512, 2048]`
//! projections): column panels outer, so each panel of the weight comes from memory once and
//! from L2 for the other row tiles. The `gemm` crate packs such a weight on every call and runs
//! at about half the rate (measured on the serving shapes of `BENCHMARKS.md`, issue 18).

use std::cell::RefCell;

/// Columns of `c` per register tile: two AVX2 vectors, one AVX-512 vector. The rows per tile
/// (a const parameter of the kernel) make eight independent accumulator registers either way,
/// enough to keep two FMA pipes of latency 4 busy: 4 rows with AVX2, 8 with AVX-512.
const COLUMNS: usize = 16;

/// The right operand at most this many floats (256 KiB: it stays in L2 while every row tile
/// streams over it); larger products go to the `gemm` crate, which blocks for the caches.
const MAX_RHS_FLOATS: usize = 1 << 16;

/// Whether [`gemm`] is the one to use for an `m x n x k` product run on one thread.
pub(super) fn suits(m: usize, n: usize, k: usize) -> bool {
    m > 0 && n >= COLUMNS && k > 0 && k * n <= MAX_RHS_FLOATS
}

/// Rows of `a` that [`skinny`] takes: from a register tile's rows (fewer leave the FMA pipes
/// waiting on one chain) to where the `gemm` crate's cache blocking catches up (measured: equal
/// at 64 rows, 1.7x slower at 32, on `[16..64, 512] @ [512, 512..2048]`).
const SKINNY_ROWS: std::ops::RangeInclusive<usize> = 4..=32;

/// Columns of a [`skinny`] register tile: four AVX-512 vectors, so a tile of four rows holds
/// sixteen accumulators and a weight panel of k = 2048 is 512 KiB, within L2.
const SKINNY_COLUMNS: usize = 64;

/// Whether [`skinny`] is the one to use for an `m x n x k` product whose right operand is
/// row-major: a few rows, a right operand too large for [`gemm`], on a CPU with AVX-512 (with
/// AVX2 alone the narrower tiles measured no faster than the `gemm` crate).
pub(super) fn suits_skinny(m: usize, n: usize, k: usize) -> bool {
    SKINNY_ROWS.contains(&m) && n >= SKINNY_COLUMNS && k > 0 && !suits(m, n, k) && has_avx512()
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = a @ b` for `a` row-major `[m, k]`, `b` row-major `[k, n]`, `c` row-major `[m, n]`
/// (overwritten), column panel by column panel (see the module comment). With `threaded`, the
/// column panels are split over rayon's threads, each computing its columns into a buffer of
/// its own; every element is the same chain either way, so the bits do not depend on it.
/// Panics if an operand is too small for the shapes, as [`gemm`] does.
pub(super) fn skinny((m, n, k): (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32], threaded: bool) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operands too small");
    let (a, b, c) = (&a[..m * k], &b[..k * n], &mut c[..m * n]);
    let parts = if threaded { rayon::current_num_threads().min(n / SKINNY_COLUMNS).max(1) } else { 1 };
    if parts == 1 {
        return skinny_dispatch((m, n, k), a, b, 0..n, c);
    }
    use rayon::prelude::*;
    // Whole panels per part, the last part taking the columns that do not fill one.
    let panels = n / SKINNY_COLUMNS;
    let bounds: Vec<usize> =
        (0..=parts).map(|p| if p == parts { n } else { p * panels / parts * SKINNY_COLUMNS }).collect();
    let blocks: Vec<Vec<f32>> = bounds
        .par_windows(2)
        .map(|w| {
            let mut block = vec![0.0f32; m * (w[1] - w[0])];
            skinny_dispatch((m, n, k), a, b, w[0]..w[1], &mut block);
            block
        })
        .collect();
    for (w, block) in bounds.windows(2).zip(&blocks) {
        let width = w[1] - w[0];
        for (row, part) in c.chunks_exact_mut(n).zip(block.chunks_exact(width)) {
            row[w[0]..w[1]].copy_from_slice(part);
        }
    }
}

/// Columns `columns` of `a @ b` into `out` (row-major `[m, columns.len()]`), on the widest
/// kernel this CPU runs ([`suits_skinny`] checked for AVX-512; other CPUs take the portable one,
/// as tests do everywhere).
fn skinny_dispatch(
    shape: (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    columns: std::ops::Range<usize>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { skinny_avx512(shape, a, b, columns, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { skinny_avx2(shape, a, b, columns, out) };
        }
    }
    skinny_kernel::<Separate>(shape, a, b, columns, out);
}

/// `skinny_kernel` compiled for a set of target features (one function per set, as
/// `target_feature` requires), so its `mul_add` is the fused instruction.
macro_rules! skinny_with_features {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            shape: (usize, usize, usize),
            a: &[f32],
            b: &[f32],
            columns: std::ops::Range<usize>,
            out: &mut [f32],
        ) {
            skinny_kernel::<Fused>(shape, a, b, columns, out);
        }
    };
}

skinny_with_features!(skinny_avx512, "avx512f,avx2,fma");
skinny_with_features!(skinny_avx2, "avx2,fma");

/// [`skinny_dispatch`]'s loops: panels of [`SKINNY_COLUMNS`] columns outer, then of
/// [`COLUMNS`], then single columns; within a panel, tiles of four rows and then single rows.
#[inline(always)]
fn skinny_kernel<F: MulAdd>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    columns: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let width = columns.len();
    let mut j0 = columns.start;
    while j0 + SKINNY_COLUMNS <= columns.end {
        skinny_panel::<F, SKINNY_COLUMNS>((m, n, k), a, b, (j0, j0 - columns.start), (out, width));
        j0 += SKINNY_COLUMNS;
    }
    while j0 + COLUMNS <= columns.end {
        skinny_panel::<F, COLUMNS>((m, n, k), a, b, (j0, j0 - columns.start), (out, width));
        j0 += COLUMNS;
    }
    while j0 < columns.end {
        skinny_panel::<F, 1>((m, n, k), a, b, (j0, j0 - columns.start), (out, width));
        j0 += 1;
    }
}

/// One panel of `COLS` columns of `b` from column `j0`, written at column `at` of `out` (row
/// stride `width`): row tiles of four, then single rows, each a register tile over all of k.
#[inline(always)]
fn skinny_panel<F: MulAdd, const COLS: usize>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    (j0, at): (usize, usize),
    (out, width): (&mut [f32], usize),
) {
    let mut i0 = 0;
    while i0 + 4 <= m {
        skinny_tile::<F, 4, COLS>(i0, (n, k), a, b, (j0, at), (out, width));
        i0 += 4;
    }
    while i0 < m {
        skinny_tile::<F, 1, COLS>(i0, (n, k), a, b, (j0, at), (out, width));
        i0 += 1;
    }
}

#[inline(always)]
fn skinny_tile<F: MulAdd, const ROWS: usize, const COLS: usize>(
    i0: usize,
    (n, k): (usize, usize),
    a: &[f32],
    b: &[f32],
    (j0, at): (usize, usize),
    (out, width): (&mut [f32], usize),
) {
    let a_rows: [&[f32]; ROWS] = std::array::from_fn(|r| &a[(i0 + r) * k..(i0 + r + 1) * k]);
    let mut acc = [[0.0f32; COLS]; ROWS];
    for p in 0..k {
        let b_row: &[f32; COLS] = b[p * n + j0..p * n + j0 + COLS].try_into().expect("a full tile");
        for r in 0..ROWS {
            let x = a_rows[r][p];
            for j in 0..COLS {
                acc[r][j] = F::mul_add(x, b_row[j], acc[r][j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        out[(i0 + r) * width + at..(i0 + r) * width + at + COLS].copy_from_slice(row);
    }
}

thread_local! {
    /// The row-major copy of a strided right operand, reused across calls on this thread.
    static PACKED_RHS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c = a @ b` (see the module comment); `(rhs_cs, rhs_rs)` are `b`'s strides between columns
/// (over n) and rows (over k). Panics if an operand is too small for the shapes, as
/// `gemm_f32` does (the callers have checked the buffers against the shapes).
pub(super) fn gemm(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
    c: &mut [f32],
) {
    assert!(a.len() >= m * k && c.len() >= m * n, "gemm operands too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    assert!(b.len() > (n - 1) * rhs_cs + (k - 1) * rhs_rs, "gemm operands too small");
    if rhs_cs == 1 && rhs_rs == n {
        return dispatch((m, n, k), &a[..m * k], &b[..k * n], &mut c[..m * n]);
    }
    PACKED_RHS.with(|packed| {
        let mut packed = packed.borrow_mut();
        packed.clear();
        packed.resize(k * n, 0.0);
        for (p, row) in packed.chunks_exact_mut(n).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = b[j * rhs_cs + p * rhs_rs];
            }
        }
        dispatch((m, n, k), &a[..m * k], &packed, &mut c[..m * n]);
    });
}

/// The widest kernel this CPU runs.
fn dispatch(shape: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { kernel_avx512(shape, a, b, c) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { kernel_avx2(shape, a, b, c) };
        }
    }
    kernel::<Separate, 4>(shape, a, b, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel_avx512(shape: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
    kernel::<Fused, 8>(shape, a, b, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(shape: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
    kernel::<Fused, 4>(shape, a, b, c);
}

/// `x * y + acc`, the step of every element's chain.
trait MulAdd {
    fn mul_add(x: f32, y: f32, acc: f32) -> f32;
}

/// One rounding: the CPU's fused instruction (inside the `target_feature` kernels).
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(x: f32, y: f32, acc: f32) -> f32 {
        x.mul_add(y, acc)
    }
}

/// Multiply, then add: without FMA hardware (the software `fmaf` is far slower than this).
struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(x: f32, y: f32, acc: f32) -> f32 {
        x * y + acc
    }
}

/// The tiled loops, inlined into each feature-specific caller so that `mul_add` becomes the
/// CPU's fused instruction and the tile's accumulators stay in vector registers. `a` is exactly
/// `m * k`, `b` exactly `k * n` (row-major), `c` exactly `m * n`.
#[inline(always)]
fn kernel<F: MulAdd, const ROWS: usize>((m, n, k): (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
    let full_columns = n - n % COLUMNS;
    let mut i0 = 0;
    while i0 + ROWS <= m {
        let a_rows: [&[f32]; ROWS] = std::array::from_fn(|r| &a[(i0 + r) * k..(i0 + r + 1) * k]);
        for j0 in (0..full_columns).step_by(COLUMNS) {
            let mut acc = [[0.0f32; COLUMNS]; ROWS];
            for p in 0..k {
                let b_row: &[f32; COLUMNS] = b[p * n + j0..p * n + j0 + COLUMNS].try_into().expect("a full tile");
                for r in 0..ROWS {
                    let x = a_rows[r][p];
                    for j in 0..COLUMNS {
                        acc[r][j] = F::mul_add(x, b_row[j], acc[r][j]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                c[(i0 + r) * n + j0..(i0 + r) * n + j0 + COLUMNS].copy_from_slice(row);
            }
        }
        for r in 0..ROWS {
            scalar_columns::<F>(i0 + r, full_columns..n, (n, k), a, b, c);
        }
        i0 += ROWS;
    }
    for i in i0..m {
        scalar_columns::<F>(i, 0..n, (n, k), a, b, c);
    }
}

/// Row `i` of `c` over `columns`, one element at a time, summed in the tiles' order.
#[inline(always)]
fn scalar_columns<F: MulAdd>(
    i: usize,
    columns: std::ops::Range<usize>,
    (n, k): (usize, usize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    let a_row = &a[i * k..(i + 1) * k];
    for j in columns {
        let mut acc = 0.0f32;
        for (p, &x) in a_row.iter().enumerate() {
            acc = F::mul_add(x, b[p * n + j], acc);
        }
        c[i * n + j] = acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `a @ b` in f64, `b` through its strides.
    fn expected((m, n, k): (usize, usize, usize), a: &[f32], b: &[f32], (cs, rs): (usize, usize)) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[j * cs + p * rs])).sum();
            }
        }
        c
    }

    #[test]
    fn tiles_edges_and_strided_operands_give_the_product() {
        // Full tiles only, column and row edges, a transposed right operand, n below a tile.
        let cases = [(8, 32, 64, false), (7, 37, 5, false), (64, 16, 64, true), (5, 70, 3, true), (3, 16, 1, false)];
        for (m, n, k, transposed) in cases {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let strides = if transposed { (k, 1) } else { (1, n) };
            let mut c = vec![f32::NAN; m * n];
            gemm((m, n, k), &a, &b, strides, &mut c);
            let want = expected((m, n, k), &a, &b, strides);
            for (idx, (&got, &want)) in c.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{m}x{n}x{k} [{idx}]: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn every_element_is_the_same_chain_whatever_its_place_in_a_tile() {
        // Row i of a product equals the one-row product of row i: tiles and edges sum alike.
        let (m, n, k) = (9, 40, 33);
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        let mut c = vec![0.0; m * n];
        gemm((m, n, k), &a, &b, (1, n), &mut c);
        for i in 0..m {
            let mut row = vec![0.0; n];
            gemm((1, n, k), &a[i * k..(i + 1) * k], &b, (1, n), &mut row);
            assert_eq!(&c[i * n..(i + 1) * n], &row[..], "row {i}");
        }
    }

    /// The column-panel order gives every element the chain the row-tile kernel gives it (the
    /// same bits), threaded or not, at panel, tile and column edges.
    #[test]
    fn skinny_products_equal_the_tiled_kernel_bit_for_bit() {
        for (m, n, k) in [(4, 64, 9), (16, 1536, 64), (7, 200, 33), (32, 130, 5), (5, 65, 70)] {
            let a = values(m * k, 5);
            let b = values(k * n, 6);
            let mut tiled = vec![f32::NAN; m * n];
            gemm((m, n, k), &a, &b, (1, n), &mut tiled);
            let want = expected((m, n, k), &a, &b, (1, n));
            for threaded in [false, true] {
                let mut c = vec![f32::NAN; m * n];
                skinny((m, n, k), &a, &b, &mut c, threaded);
                assert_eq!(c, tiled, "{m}x{n}x{k}, threaded {threaded}");
            }
            for (idx, (&got, &want)) in tiled.iter().zip(&want).enumerate() {
                assert!((f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "{m}x{n}x{k} [{idx}]");
            }
        }
    }

    #[test]
    fn k_of_zero_writes_zeros() {
        let mut c = vec![1.0; 4 * 16];
        gemm((4, 16, 0), &[], &[], (1, 16), &mut c);
        assert!(c.iter().all(|&x| x == 0.0));
    }
}
