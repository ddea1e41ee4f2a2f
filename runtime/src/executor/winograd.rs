//! The Winograd F(2x2, 3x3) transforms of CPU programs (`tsr.winograd_input`,
//! `tsr.winograd_weight`, `tsr.winograd_output`), after the shapes are checked against each
//! other. The batched matmul between them is an ordinary `matmul` step.
//!
//! The input and output transforms run vectorised over channels: `V [16, T, C]` and
//! `M [16, T, K]` hold channels innermost, so the image is first transposed into a zero-padded
//! channels-last copy (one pass, through this thread's scratch), after which every one of a
//! patch's 16 inputs is a contiguous vector of channels and `Bᵀ d B` is 32 vector additions
//! writing 16 contiguous rows of `V`; the output transform turns 16 contiguous rows of `M` into
//! four channel vectors per tile, collects a row of tiles channels-last and transposes it into
//! NCHW. The arithmetic is the reference's ([`winograd::input_tile`], [`winograd::output_tile`])
//! on [`Lanes`] of 8 channels, compiled for AVX2 where the CPU has it. The weight transform runs
//! once at bind and stays the reference's generic loop.

use super::library::{f32s, f32s_mut, In, Out};
use std::cell::RefCell;
use std::ops::{Add, Mul, Sub};
use tessera_ir::artifact::{BufferDesc, Storage};
use tessera_ir::ops::winograd::{self, Scalar, Tiling, POSITIONS};

/// Channels per vector of the transforms (one AVX2 register of f32).
const LANES: usize = 8;

/// Eight channels' values of one transform position; the reference's tile arithmetic runs on it
/// lane by lane, which LLVM turns into one vector instruction per operation.
#[derive(Clone, Copy, Default)]
struct Lanes([f32; LANES]);

impl Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] - o.0[i]))
    }
}

impl Mul for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, o: Lanes) -> Lanes {
        Lanes(std::array::from_fn(|i| self.0[i] * o.0[i]))
    }
}

impl Scalar for Lanes {
    fn half() -> Lanes {
        Lanes([0.5; LANES])
    }
}

impl Lanes {
    /// The first `len` (at most [`LANES`]) values of `from`, zero beyond. A full vector is a
    /// fixed-length copy (one vector load); only a channel tail takes the variable-length one.
    #[inline(always)]
    fn load(from: &[f32], len: usize) -> Lanes {
        let mut lanes = Lanes::default();
        if len == LANES {
            lanes.0.copy_from_slice(&from[..LANES]);
        } else {
            lanes.0[..len].copy_from_slice(&from[..len]);
        }
        lanes
    }

    #[inline(always)]
    fn store(self, to: &mut [f32], len: usize) {
        if len == LANES {
            to[..LANES].copy_from_slice(&self.0);
        } else {
            to[..len].copy_from_slice(&self.0[..len]);
        }
    }
}

thread_local! {
    /// The channels-last staging buffer of the transforms (the padded image of the input
    /// transform, a row of output tiles of the output transform), kept per thread so that a
    /// run does not allocate and fault in fresh pages on every call.
    static STAGING: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `body` on this thread's staging buffer, taken out and put back so that it is never
/// borrowed across the call.
fn with_staging(body: impl FnOnce(&mut Vec<f32>)) {
    let mut staging = STAGING.with_borrow_mut(std::mem::take);
    body(&mut staging);
    STAGING.with_borrow_mut(|kept| {
        if kept.capacity() < staging.capacity() {
            *kept = staging;
        }
    });
}

/// Whether the AVX2 builds of the transforms may run here.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn dims<const R: usize>(d: &BufferDesc, what: &str) -> Result<[usize; R], String> {
    if d.storage != Storage::F32 {
        return Err(format!("{what} computes in f32 only; buffer {} has {:?} storage", d.name, d.storage));
    }
    let shape: Vec<usize> = d.shape.iter().map(|&n| n as usize).collect();
    <[usize; R]>::try_from(shape.as_slice()).map_err(|_| format!("{what} must be rank {R}, got {shape:?}"))
}

/// `winograd_input`: image `[N, C, H, W]` to `[16, T, C]`.
pub fn input(x: &In, out: &mut Out, pads: [u64; 4]) -> Result<(), String> {
    let image = dims::<4>(x.desc, "winograd_input")?;
    let result = dims::<3>(out.desc, "winograd_input")?;
    let pads = pads.map(|p| i64::try_from(p).unwrap_or(i64::MAX));
    let tiling = Tiling::new(image, pads)?;
    if result != [POSITIONS, tiling.tiles(), tiling.c] {
        return Err(format!("winograd_input shapes {image:?} -> {result:?} do not agree with pads {pads:?}"));
    }
    let (xv, vv) = (f32s(x.bytes)?, f32s_mut(out.bytes)?);
    if xv.len() != image.iter().product::<usize>() || vv.len() != result.iter().product::<usize>() {
        return Err("winograd_input buffer sizes do not match their shapes".into());
    }
    with_staging(|staging| {
        if has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                input_avx2(xv, &tiling, vv, staging)
            };
        } else {
            input_channels_last(xv, &tiling, vv, staging);
        }
    });
    Ok(())
}

/// `winograd_weight`: kernel `[K, C, 3, 3]` to `[16, C, K]`.
pub fn weight(w: &In, out: &mut Out) -> Result<(), String> {
    let [k, c, kh, kw] = dims::<4>(w.desc, "winograd_weight")?;
    let result = dims::<3>(out.desc, "winograd_weight")?;
    if (kh, kw) != (3, 3) || result != [POSITIONS, c, k] {
        return Err(format!("winograd_weight shapes {:?} -> {result:?} do not agree", [k, c, kh, kw]));
    }
    let (wv, uv) = (f32s(w.bytes)?, f32s_mut(out.bytes)?);
    if wv.len() != k * c * 9 || uv.len() != POSITIONS * c * k {
        return Err("winograd_weight buffer sizes do not match their shapes".into());
    }
    winograd::weight_transform(wv, k, c, uv);
    Ok(())
}

/// `winograd_output`: product `[16, T, K]` to `[N, K, OH, OW]`.
pub fn output(m: &In, out: &mut Out) -> Result<(), String> {
    let product = dims::<3>(m.desc, "winograd_output")?;
    let result = dims::<4>(out.desc, "winograd_output")?;
    let tiling = winograd::output_tiling(&product, &result)?;
    let (mv, yv) = (f32s(m.bytes)?, f32s_mut(out.bytes)?);
    if mv.len() != product.iter().product::<usize>() || yv.len() != result.iter().product::<usize>() {
        return Err("winograd_output buffer sizes do not match their shapes".into());
    }
    let k = result[1];
    with_staging(|staging| {
        if has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                output_avx2(mv, &tiling, k, yv, staging)
            };
        } else {
            output_channels_last(mv, &tiling, k, yv, staging);
        }
    });
    Ok(())
}

/// [`input_channels_last`] compiled for AVX2, so the [`Lanes`] arithmetic is 8 wide.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn input_avx2(x: &[f32], tiling: &Tiling, v: &mut [f32], staging: &mut Vec<f32>) {
    input_channels_last(x, tiling, v, staging);
}

/// The input transform of `x` (`[N, C, H, W]`) into `v` (`[16, T, C]`): each image
/// transposed into `staging` as a zero-padded `[2·tiles_h + 2, 2·tiles_w + 2, C]` (every patch
/// inside it), then each patch's 16 channel vectors transformed into `v`'s 16 rows of its tile.
#[inline(always)]
fn input_channels_last(x: &[f32], tiling: &Tiling, v: &mut [f32], staging: &mut Vec<f32>) {
    let Tiling { n, c, h, w, tiles_h, tiles_w, top, left, .. } = *tiling;
    let tiles = tiling.tiles();
    let avx2 = has_avx2();
    let (padded_h, padded_w) = (2 * tiles_h + 2, 2 * tiles_w + 2);
    // `h + top <= padded_h` and `w + left <= padded_w`: the output extent is `h + top + bottom - 2`
    // and the tiles cover it.
    let (rows_in, cols_in) = (h.min(padded_h - top), w.min(padded_w - left));
    // Zeroed once per call: the image's rows and columns overwrite the same positions for
    // every image, so the padding around them stays zero.
    staging.clear();
    staging.resize(padded_h * padded_w * c, 0.0);
    for image in 0..n {
        // Row by row, so the channels-last row being written (padded_w · C values) stays in L1
        // while every channel's plane contributes its row.
        for y in 0..rows_in {
            let row_start = ((y + top) * padded_w + left) * c;
            let staged = &mut staging[row_start..row_start + cols_in * c];
            let source = |ch: usize| &x[((image * c + ch) * h + y) * w..][..cols_in];
            let full = c - c % LANES;
            // Eight channels at a time: eight row reads, one vector write per column.
            for ch in (0..full).step_by(LANES) {
                let rows: [&[f32]; LANES] = std::array::from_fn(|l| source(ch + l));
                for col in 0..cols_in {
                    let lanes: [f32; LANES] = std::array::from_fn(|l| rows[l][col]);
                    staged[col * c + ch..][..LANES].copy_from_slice(&lanes);
                }
            }
            for ch in full..c {
                for (col, &value) in source(ch).iter().enumerate() {
                    staged[col * c + ch] = value;
                }
            }
        }
        for i in 0..tiles_h {
            for j in 0..tiles_w {
                let t = (image * tiles_h + i) * tiles_w + j;
                for ch in (0..c).step_by(LANES) {
                    let len = LANES.min(c - ch);
                    #[cfg(target_arch = "x86_64")]
                    if len == LANES && avx2 {
                        let patch = |r: usize, s: usize| ((2 * i + r) * padded_w + 2 * j + s) * c + ch;
                        let rows: [usize; POSITIONS] = std::array::from_fn(|xi| (xi * tiles + t) * c + ch);
                        // SAFETY: the CPU has AVX2 (checked just above).
                        unsafe { avx2::input_patch(staging, patch, v, &rows) };
                        continue;
                    }
                    let d: [Lanes; POSITIONS] = std::array::from_fn(|rs| {
                        let (r, s) = (rs / 4, rs % 4);
                        Lanes::load(&staging[((2 * i + r) * padded_w + 2 * j + s) * c + ch..], len)
                    });
                    for (xi, value) in winograd::input_tile(&d).into_iter().enumerate() {
                        value.store(&mut v[(xi * tiles + t) * c + ch..], len);
                    }
                }
            }
        }
    }
}

/// [`output_channels_last`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn output_avx2(m: &[f32], tiling: &Tiling, k: usize, y: &mut [f32], staging: &mut Vec<f32>) {
    output_channels_last(m, tiling, k, y, staging);
}

/// The output transform of `m` (`[16, T, K]`) into `y` (`[N, K, OH, OW]`): a row of tiles at a
/// time, each tile's 2x2 outputs as channel vectors into `staging` (`[2, 2·tiles_w, K]`), then
/// the row's (one or two) output rows transposed into each channel's plane.
#[inline(always)]
fn output_channels_last(m: &[f32], tiling: &Tiling, k: usize, y: &mut [f32], staging: &mut Vec<f32>) {
    let Tiling { n, out_h, out_w, tiles_h, tiles_w, .. } = *tiling;
    let tiles = tiling.tiles();
    let avx2 = has_avx2();
    let staged_w = 2 * tiles_w;
    staging.clear();
    staging.resize(2 * staged_w * k, 0.0);
    for image in 0..n {
        for i in 0..tiles_h {
            for j in 0..tiles_w {
                let t = (image * tiles_h + i) * tiles_w + j;
                for ch in (0..k).step_by(LANES) {
                    let len = LANES.min(k - ch);
                    #[cfg(target_arch = "x86_64")]
                    if len == LANES && avx2 {
                        let rows: [usize; POSITIONS] = std::array::from_fn(|xi| (xi * tiles + t) * k + ch);
                        let outs: [usize; 4] =
                            std::array::from_fn(|pq| ((pq / 2) * staged_w + 2 * j + pq % 2) * k + ch);
                        // SAFETY: the CPU has AVX2 (checked just above).
                        unsafe { avx2::output_tile(m, &rows, staging, &outs) };
                        continue;
                    }
                    let tile: [Lanes; POSITIONS] =
                        std::array::from_fn(|xi| Lanes::load(&m[(xi * tiles + t) * k + ch..], len));
                    for (pq, value) in winograd::output_tile(&tile).into_iter().enumerate() {
                        let (p, q) = (pq / 2, pq % 2);
                        value.store(&mut staging[(p * staged_w + 2 * j + q) * k + ch..], len);
                    }
                }
            }
            for p in 0..2.min(out_h - 2 * i) {
                let staged = &staging[p * staged_w * k..(p + 1) * staged_w * k];
                for ch in 0..k {
                    let row = &mut y[((image * k + ch) * out_h + 2 * i + p) * out_w..][..out_w];
                    for (col, value) in row.iter_mut().enumerate() {
                        *value = staged[col * k + ch];
                    }
                }
            }
        }
    }
}

/// The full-vector transforms in AVX2 intrinsics: the same arithmetic as
/// [`winograd::input_tile`] and [`winograd::output_tile`] on eight channels, kept in registers
/// (the generic [`Lanes`] form moves its 16-vector arrays through the stack).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, POSITIONS};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
    };

    /// Eight values of `from` at `at` (bounds-checked).
    #[inline(always)]
    unsafe fn load(from: &[f32], at: usize) -> __m256 {
        _mm256_loadu_ps(from[at..at + LANES].as_ptr())
    }

    #[inline(always)]
    unsafe fn store(to: &mut [f32], at: usize, value: __m256) {
        _mm256_storeu_ps(to[at..at + LANES].as_mut_ptr(), value)
    }

    /// `Bᵀ d B` of the patch whose input `(r, s)` starts at `patch(r, s)` in `staging`, position
    /// `ξ` written at `rows[ξ]` of `v`.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)] // `s` picks a column of the patch and of `combined` alike
    pub(super) unsafe fn input_patch(
        staging: &[f32],
        patch: impl Fn(usize, usize) -> usize,
        v: &mut [f32],
        rows: &[usize; POSITIONS],
    ) {
        let mut combined = [[_mm256_setzero_ps(); 4]; 4];
        for s in 0..4 {
            let (d0, d1, d2, d3) = (
                load(staging, patch(0, s)),
                load(staging, patch(1, s)),
                load(staging, patch(2, s)),
                load(staging, patch(3, s)),
            );
            combined[0][s] = _mm256_sub_ps(d0, d2);
            combined[1][s] = _mm256_add_ps(d1, d2);
            combined[2][s] = _mm256_sub_ps(d2, d1);
            combined[3][s] = _mm256_sub_ps(d1, d3);
        }
        for (a, r) in combined.iter().enumerate() {
            store(v, rows[4 * a], _mm256_sub_ps(r[0], r[2]));
            store(v, rows[4 * a + 1], _mm256_add_ps(r[1], r[2]));
            store(v, rows[4 * a + 2], _mm256_sub_ps(r[2], r[1]));
            store(v, rows[4 * a + 3], _mm256_sub_ps(r[1], r[3]));
        }
    }

    /// `Aᵀ m A` of the tile whose position `ξ` starts at `rows[ξ]` of `m`, output `(p, q)`
    /// written at `outs[2p + q]` of `staging`.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)] // `s` picks a column of the tile and of `combined` alike
    pub(super) unsafe fn output_tile(m: &[f32], rows: &[usize; POSITIONS], staging: &mut [f32], outs: &[usize; 4]) {
        let at = |a: usize, b: usize| rows[4 * a + b];
        let mut combined = [[_mm256_setzero_ps(); 4]; 2];
        for s in 0..4 {
            let (m0, m1, m2, m3) = (load(m, at(0, s)), load(m, at(1, s)), load(m, at(2, s)), load(m, at(3, s)));
            combined[0][s] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
            combined[1][s] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
        }
        for (p, r) in combined.iter().enumerate() {
            store(staging, outs[2 * p], _mm256_add_ps(_mm256_add_ps(r[0], r[1]), r[2]));
            store(staging, outs[2 * p + 1], _mm256_sub_ps(_mm256_sub_ps(r[1], r[2]), r[3]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::library::matmul;
    use super::super::test_buffers::{bytes, desc, values};
    use super::*;
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::conv::Window;
    use tessera_ir::ops::Op;
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;

    /// Runs one library call from `inputs` (shape, values) into a zeroed `out_shape` buffer.
    fn call(inputs: &[(&[usize], &[f32])], out_shape: &[usize], f: impl FnOnce(&[In], &mut Out)) -> Vec<f32> {
        let descs: Vec<BufferDesc> = inputs.iter().map(|(shape, _)| desc(shape)).collect();
        let ins: Vec<In> = inputs.iter().zip(&descs).map(|((_, v), d)| In { desc: d, bytes: bytes(v) }).collect();
        let out_desc = desc(out_shape);
        let mut result = vec![0.0f32; out_shape.iter().product()];
        // SAFETY: any bytes are a valid f32; the slice covers exactly `result`.
        let out_bytes = unsafe { std::slice::from_raw_parts_mut(result.as_mut_ptr().cast::<u8>(), 4 * result.len()) };
        f(&ins, &mut Out { desc: &out_desc, bytes: out_bytes });
        result
    }

    /// The three transforms and the batched GEMM between them give the interpreter's direct
    /// convolution within f32 rounding (relative to the output's largest magnitude), through the
    /// vectorised transforms on this CPU.
    #[test]
    fn winograd_calls_around_a_matmul_match_the_interpreters_conv2d() {
        // Channel counts below, at and past one vector of lanes (the full and the tail paths);
        // output channels likewise.
        let cases =
            [([1usize, 8, 9, 9], 6usize, [1i64; 4]), ([2, 3, 6, 5], 4, [0, 1, 2, 0]), ([2, 19, 7, 8], 11, [1; 4])];
        for (xs, k, pads) in cases {
            let ws = [k, xs[1], 3, 3];
            let (x, w) = (values(xs.iter().product(), 1), values(ws.iter().product(), 2));
            let window = Window { strides: [1, 1], pads, dilations: [1, 1] };
            let tensor = |shape: &[usize], v: &[f32]| {
                Tensor::from_f64(DType::F32, shape.to_vec(), v.iter().map(|&e| e as f64).collect())
            };
            let (xt, wt) = (tensor(&xs, &x), tensor(&ws, &w));
            let conv = Op::Conv2d { window, groups: 1 };
            let types: Vec<TensorType> = [&xt, &wt].iter().map(|t| t.tensor_type()).collect();
            let result_types = conv.infer(&types.iter().collect::<Vec<_>>()).expect("well-typed");
            let want = conv.eval(&[&xt, &wt], &result_types).expect("evaluates").remove(0);
            let want_values = want.floats().expect("floats").to_vec();
            let tiling = Tiling::new(xs, pads).expect("fits");
            let (t, c) = (tiling.tiles(), xs[1]);
            let upads = pads.map(|p| p as u64);
            let v = call(&[(&xs, &x)], &[16, t, c], |ins, out| input(&ins[0], out, upads).expect("input"));
            let u = call(&[(&ws, &w)], &[16, c, k], |ins, out| weight(&ins[0], out).expect("weight"));
            let m = call(&[(&[16, t, c], &v), (&[16, c, k], &u)], &[16, t, k], |ins, out| {
                matmul(&ins[0], &ins[1], out, false).expect("matmul")
            });
            let y = call(&[(&[16, t, k], &m)], &want.shape, |ins, out| output(&ins[0], out).expect("output"));
            let scale = want_values.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            let worst = y.iter().zip(&want_values).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-5 * scale, "max difference {worst} (scale {scale}) for {xs:?} pads {pads:?}");
        }
    }
}
