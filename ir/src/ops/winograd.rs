//! Winograd F(2x2, 3x3) convolution as three transforms around a batched matmul:
//! `tsr.winograd_input`, `tsr.winograd_weight`, `tsr.winograd_output`.
//!
//! A 3x3, stride-1, undilated, ungrouped `conv2d(x, w)` with padding `pads` equals
//! `winograd_output(matmul(winograd_input(x), winograd_weight(w)))`: the output is cut into 2x2
//! tiles; each tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for its 4x4 input patch `d` and kernel
//! `g` (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), and the
//! elementwise product summed over input channels is, per transform position `ξ` (16 of
//! them), one matrix product `[tiles, C] @ [C, K]`. That product does 16·C·K multiply-adds per
//! tile where the direct convolution does 36·C·K: 2.25× fewer. The weight transform reads only
//! the weight, so a compiled artifact runs it once, when the weights are bound.
//!
//! Layouts (`T = N · ⌈OH/2⌉ · ⌈OW/2⌉` tiles, tile `t = (n · tiles_h + i) · tiles_w + j` covers
//! output rows `2i, 2i+1` and columns `2j, 2j+1` of image `n`):
//! - `winograd_input {pads}`: `x [N, C, H, W] -> V [16, T, C]`, `V[4a+b, t, c] = (Bᵀ d B)[a][b]`
//!   with `d[r][s] = x[n, c, 2i + r - top, 2j + s - left]` (zero outside `x`: the padding, and
//!   the rows and columns past the last odd output);
//! - `winograd_weight`: `w [K, C, 3, 3] -> U [16, C, K]`, `U[4a+b, c, k] = (G g Gᵀ)[a][b]` with
//!   `g = w[k, c]`;
//! - `winograd_output`: `M [16, T, K] -> y [N, K, OH, OW]` (the result type's shape),
//!   `y[n, k, 2i+p, 2j+q] = (Aᵀ m A)[p][q]` with `m[a][b] = M[4a+b, t, k]`, outputs past `OH`
//!   or `OW` dropped.
//!
//! Padding is `[top, left, bottom, right]` as in [`super::conv`]. Reference semantics run the
//! same transforms in `f64` and round once; [`input_transform`], [`weight_transform`] and
//! [`output_transform`] are generic so that the CPU runtime runs them on `f32` directly. The
//! transforms are linear maps introduced by a rewrite for inference; they have no gradient
//! (differentiate before the e-graph pass).

use super::{expect_arity, floats, FlopResult, ShapeResult};
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use std::ops::{Add, Mul, Sub};

/// Transform positions per tile (a 4x4 patch).
pub const POSITIONS: usize = 16;

/// The scalar arithmetic the transforms need (`f32` in the runtime, `f64` in the reference).
pub trait Scalar: Copy + Default + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    fn half() -> Self;
}

impl Scalar for f32 {
    fn half() -> f32 {
        0.5
    }
}

impl Scalar for f64 {
    fn half() -> f64 {
        0.5
    }
}

/// The tiling of one Winograd convolution, from the image and the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub tiles_h: usize,
    pub tiles_w: usize,
    pub top: usize,
    pub left: usize,
}

impl Tiling {
    /// The tiling of a 3x3 stride-1 convolution of `[n, c, h, w]` padded by `pads`; an error
    /// when a pad is negative or the padded image is smaller than the kernel.
    pub fn new([n, c, h, w]: [usize; 4], pads: [i64; 4]) -> Result<Tiling, String> {
        let pad = |i: usize| usize::try_from(pads[i]).map_err(|_| format!("pads must be non-negative, got {pads:?}"));
        let (top, left, bottom, right) = (pad(0)?, pad(1)?, pad(2)?, pad(3)?);
        let extent = |n: usize, a: usize, b: usize| {
            n.checked_add(a).and_then(|v| v.checked_add(b)).and_then(|v| v.checked_sub(2)).filter(|&v| v >= 1)
        };
        let (Some(out_h), Some(out_w)) = (extent(h, top, bottom), extent(w, left, right)) else {
            return Err(format!("a 3x3 window does not fit the padded image {h}x{w} with pads {pads:?}"));
        };
        let (tiles_h, tiles_w) = (out_h.div_ceil(2), out_w.div_ceil(2));
        Ok(Tiling { n, c, h, w, out_h, out_w, tiles_h, tiles_w, top, left })
    }

    /// Tiles over the whole batch.
    pub fn tiles(&self) -> usize {
        self.n * self.tiles_h * self.tiles_w
    }
}

fn static_dims<const R: usize>(t: &TensorType, what: &str) -> Result<[usize; R], String> {
    if t.rank() != R {
        return Err(format!("{what} must have rank {R}, got {t}"));
    }
    let mut dims = [0; R];
    for (d, dim) in dims.iter_mut().zip(&t.dims) {
        let n = dim.as_static().ok_or_else(|| format!("{what} must have static dimensions, got {t}"))?;
        *d = usize::try_from(n).map_err(|_| format!("{what} is too large: {t}"))?;
    }
    Ok(dims)
}

fn float_operand<'a>(inputs: &[&'a TensorType], what: &str) -> Result<&'a TensorType, String> {
    let x = inputs[0];
    if !x.dtype.is_float() {
        return Err(format!("{what} needs a float operand, got {x}"));
    }
    Ok(x)
}

fn static_type(like: &TensorType, dims: &[usize]) -> TensorType {
    TensorType::new(like.dtype, dims.iter().map(|&d| Dim::Static(d as u64)).collect())
}

/// `winograd_input {pads}`: `[N, C, H, W] -> [16, T, C]`.
pub fn infer_input(inputs: &[&TensorType], pads: [i64; 4]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = float_operand(inputs, "winograd_input")?;
    let tiling = Tiling::new(static_dims::<4>(x, "winograd_input's image")?, pads)?;
    Ok(vec![static_type(x, &[POSITIONS, tiling.tiles(), tiling.c])])
}

/// `winograd_weight`: `[K, C, 3, 3] -> [16, C, K]`.
pub fn infer_weight(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let w = float_operand(inputs, "winograd_weight")?;
    let [k, c, kh, kw] = static_dims::<4>(w, "winograd_weight's kernel")?;
    if (kh, kw) != (3, 3) {
        return Err(format!("winograd_weight needs a 3x3 kernel, got {w}"));
    }
    Ok(vec![static_type(w, &[POSITIONS, c, k])])
}

/// `winograd_output`: `[16, T, K] -> shape = [N, K, OH, OW]`, with `T = N·⌈OH/2⌉·⌈OW/2⌉`.
pub fn infer_output(inputs: &[&TensorType], shape: &[Dim]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let m = float_operand(inputs, "winograd_output")?;
    let [positions, tiles, k] = static_dims::<3>(m, "winograd_output's operand")?;
    let target = static_type(m, &[]);
    let target = TensorType::new(target.dtype, shape.to_vec());
    let [n, out_k, oh, ow] = static_dims::<4>(&target, "winograd_output's result")?;
    if positions != POSITIONS || out_k != k || oh == 0 || ow == 0 || n * oh.div_ceil(2) * ow.div_ceil(2) != tiles {
        return Err(format!("winograd_output cannot turn {m} into {target}"));
    }
    Ok(vec![target])
}

/// FLOPs of the input transform: `Bᵀ d B` is 32 additions per 4x4 patch, 2 per result element.
pub fn flops_input(out_elements: u128) -> FlopResult {
    Ok(out_elements.saturating_mul(2))
}

/// FLOPs of the weight transform: `G g Gᵀ` is about 4 operations per result element.
pub fn flops_weight(out_elements: u128) -> FlopResult {
    Ok(out_elements.saturating_mul(4))
}

/// FLOPs of the output transform: `Aᵀ m A` is 24 additions per 2x2 output tile, 6 per result
/// element.
pub fn flops_output(out_elements: u128) -> FlopResult {
    Ok(out_elements.saturating_mul(6))
}

/// `Bᵀ d B` of a 4x4 patch `d` (row-major), as 16 values (row-major). Public, and generic over
/// [`Scalar`], so that the CPU runtime runs it on vectors of channels.
#[inline(always)]
pub fn input_tile<T: Scalar>(d: &[T; 16]) -> [T; 16] {
    // Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: rows first, then columns.
    let mut rows = [T::default(); 16];
    for s in 0..4 {
        let (d0, d1, d2, d3) = (d[s], d[4 + s], d[8 + s], d[12 + s]);
        rows[s] = d0 - d2;
        rows[4 + s] = d1 + d2;
        rows[8 + s] = d2 - d1;
        rows[12 + s] = d1 - d3;
    }
    let mut out = [T::default(); 16];
    for a in 0..4 {
        let r = &rows[4 * a..4 * a + 4];
        out[4 * a] = r[0] - r[2];
        out[4 * a + 1] = r[1] + r[2];
        out[4 * a + 2] = r[2] - r[1];
        out[4 * a + 3] = r[1] - r[3];
    }
    out
}

/// `G g Gᵀ` of a 3x3 kernel `g` (row-major), as 16 values (row-major).
fn weight_tile<T: Scalar>(g: &[T; 9]) -> [T; 16] {
    // G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
    let half = T::half();
    let mut rows = [T::default(); 12]; // G g: 4x3
    for s in 0..3 {
        let (g0, g1, g2) = (g[s], g[3 + s], g[6 + s]);
        rows[s] = g0;
        rows[3 + s] = half * (g0 + g1 + g2);
        rows[6 + s] = half * (g0 - g1 + g2);
        rows[9 + s] = g2;
    }
    let mut out = [T::default(); 16];
    for a in 0..4 {
        let r = &rows[3 * a..3 * a + 3];
        out[4 * a] = r[0];
        out[4 * a + 1] = half * (r[0] + r[1] + r[2]);
        out[4 * a + 2] = half * (r[0] - r[1] + r[2]);
        out[4 * a + 3] = r[2];
    }
    out
}

/// `Aᵀ m A` of a 4x4 tile `m` (row-major), as a 2x2 tile (row-major); public like [`input_tile`].
#[inline(always)]
pub fn output_tile<T: Scalar>(m: &[T; 16]) -> [T; 4] {
    // Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]].
    let mut rows = [T::default(); 8]; // Aᵀ m: 2x4
    for s in 0..4 {
        let (m0, m1, m2, m3) = (m[s], m[4 + s], m[8 + s], m[12 + s]);
        rows[s] = m0 + m1 + m2;
        rows[4 + s] = m1 - m2 - m3;
    }
    let mut out = [T::default(); 4];
    for p in 0..2 {
        let r = &rows[4 * p..4 * p + 4];
        out[2 * p] = r[0] + r[1] + r[2];
        out[2 * p + 1] = r[1] - r[2] - r[3];
    }
    out
}

/// The input transform of image `x` (`[N, C, H, W]`, row-major) into `v` (`[16, T, C]`) for
/// the channels `channels` only (so a caller may split the work by channel).
pub fn input_transform<T: Scalar>(x: &[T], tiling: &Tiling, channels: std::ops::Range<usize>, v: &mut [T]) {
    let Tiling { c, h, w, tiles_h, tiles_w, top, left, .. } = *tiling;
    let tiles = tiling.tiles();
    // Tile by tile, channels innermost: the 16 rows of `v` a tile writes are each contiguous
    // over the channels, and the image rows it reads stay in cache across the channels.
    for n in 0..tiling.n {
        for i in 0..tiles_h {
            let rows: [Option<usize>; 4] = std::array::from_fn(|r| (2 * i + r).checked_sub(top).filter(|&y| y < h));
            for j in 0..tiles_w {
                let cols: [Option<usize>; 4] =
                    std::array::from_fn(|s| (2 * j + s).checked_sub(left).filter(|&xx| xx < w));
                let t = (n * tiles_h + i) * tiles_w + j;
                for ch in channels.clone() {
                    let plane = &x[(n * c + ch) * h * w..(n * c + ch + 1) * h * w];
                    let mut d = [T::default(); 16];
                    for (r, y) in rows.iter().enumerate() {
                        let Some(y) = y else { continue };
                        for (s, xx) in cols.iter().enumerate() {
                            if let Some(xx) = xx {
                                d[4 * r + s] = plane[y * w + xx];
                            }
                        }
                    }
                    for (xi, value) in input_tile(&d).into_iter().enumerate() {
                        v[(xi * tiles + t) * c + ch] = value;
                    }
                }
            }
        }
    }
}

/// The weight transform of `w` (`[K, C, 3, 3]`) into `u` (`[16, C, K]`).
pub fn weight_transform<T: Scalar>(w: &[T], k: usize, c: usize, u: &mut [T]) {
    for out in 0..k {
        for ch in 0..c {
            let base = (out * c + ch) * 9;
            let mut g = [T::default(); 9];
            g.copy_from_slice(&w[base..base + 9]);
            for (xi, value) in weight_tile(&g).into_iter().enumerate() {
                u[(xi * c + ch) * k + out] = value;
            }
        }
    }
}

/// The output transform of `m` (`[16, T, K]`) into `y` (`[N, K, OH, OW]`) for the output
/// channels `channels` only.
pub fn output_transform<T: Scalar>(m: &[T], tiling: &Tiling, k: usize, channels: std::ops::Range<usize>, y: &mut [T]) {
    let Tiling { out_h, out_w, tiles_h, tiles_w, .. } = *tiling;
    let tiles = tiling.tiles();
    // Tile by tile, channels innermost: the 16 rows of `m` a tile reads are each contiguous
    // over the channels.
    for n in 0..tiling.n {
        for i in 0..tiles_h {
            for j in 0..tiles_w {
                let t = (n * tiles_h + i) * tiles_w + j;
                for ch in channels.clone() {
                    let mut tile = [T::default(); 16];
                    for (xi, value) in tile.iter_mut().enumerate() {
                        *value = m[(xi * tiles + t) * k + ch];
                    }
                    let out = output_tile(&tile);
                    let plane = (n * k + ch) * out_h * out_w;
                    for p in 0..2 {
                        let row = 2 * i + p;
                        if row >= out_h {
                            continue;
                        }
                        for q in 0..2 {
                            let col = 2 * j + q;
                            if col < out_w {
                                y[plane + row * out_w + col] = out[2 * p + q];
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dims4(shape: &[usize], what: &str) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(shape).map_err(|_| format!("{what} must be rank 4, got {shape:?}"))
}

/// Reference semantics of `winograd_input`.
pub fn eval_input(x: &Tensor, pads: [i64; 4], out: &[usize]) -> Result<Tensor, String> {
    let tiling = Tiling::new(dims4(&x.shape, "winograd_input's image")?, pads)?;
    let xv = floats(x)?;
    let mut v = vec![0.0; out.iter().product()];
    if v.len() != POSITIONS * tiling.tiles() * tiling.c {
        return Err(format!("winograd_input result {out:?} does not fit image {:?}", x.shape));
    }
    input_transform(&xv, &tiling, 0..tiling.c, &mut v);
    Ok(Tensor::from_f64(x.dtype, out.to_vec(), v))
}

/// Reference semantics of `winograd_weight`.
pub fn eval_weight(w: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let [k, c, kh, kw] = dims4(&w.shape, "winograd_weight's kernel")?;
    if (kh, kw) != (3, 3) || out != [POSITIONS, c, k] {
        return Err(format!("winograd_weight cannot turn {:?} into {out:?}", w.shape));
    }
    let wv = floats(w)?;
    let mut u = vec![0.0; POSITIONS * c * k];
    weight_transform(&wv, k, c, &mut u);
    Ok(Tensor::from_f64(w.dtype, out.to_vec(), u))
}

/// Reference semantics of `winograd_output`.
pub fn eval_output(m: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let tiling = output_tiling(&m.shape, out)?;
    let mv = floats(m)?;
    let k = out[1];
    let mut y = vec![0.0; out.iter().product()];
    output_transform(&mv, &tiling, k, 0..k, &mut y);
    Ok(Tensor::from_f64(m.dtype, out.to_vec(), y))
}

/// The tiling of `winograd_output` from its operand's shape `[16, T, K]` and its result's
/// `[N, K, OH, OW]` (only the output side of it: `c`, `h`, `w` and the padding are 0).
pub fn output_tiling(m: &[usize], out: &[usize]) -> Result<Tiling, String> {
    let [n, k, out_h, out_w] = dims4(out, "winograd_output's result")?;
    let (tiles_h, tiles_w) = (out_h.div_ceil(2), out_w.div_ceil(2));
    if m != [POSITIONS, n * tiles_h * tiles_w, k] {
        return Err(format!("winograd_output cannot turn {m:?} into {out:?}"));
    }
    Ok(Tiling { n, c: 0, h: 0, w: 0, out_h, out_w, tiles_h, tiles_w, top: 0, left: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::ops::conv::Window;
    use crate::ops::Op;

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let count: usize = shape.iter().product();
        let values = (0..count).map(|i| (((i as u64 * 7919 + seed * 104729) % 97) as f64 - 48.0) / 16.0).collect();
        Tensor::from_f64(DType::F64, shape.to_vec(), values)
    }

    fn eval(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs
            .iter()
            .map(|t| TensorType::new(t.dtype, t.shape.iter().map(|&d| Dim::Static(d as u64)).collect()))
            .collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let results = op.infer(&refs).expect("well-typed");
        op.eval(inputs, &results).expect("evaluates").remove(0)
    }

    /// The three transforms around a batched matmul give the direct convolution, on odd and
    /// even output sizes, with and without padding.
    #[test]
    fn transforms_around_a_matmul_equal_the_direct_convolution() {
        for (shape, pads) in [([2, 3, 6, 6], [1, 1, 1, 1]), ([1, 2, 5, 7], [0, 0, 0, 0]), ([1, 4, 4, 3], [1, 0, 2, 1])]
        {
            let x = tensor(&shape, 1);
            let w = tensor(&[5, shape[1], 3, 3], 2);
            let window = Window { strides: [1, 1], pads, dilations: [1, 1] };
            let direct = eval(&Op::Conv2d { window, groups: 1 }, &[&x, &w]);
            let v = eval(&Op::WinogradInput { pads }, &[&x]);
            let u = eval(&Op::WinogradWeight, &[&w]);
            let m = eval(&Op::MatMul, &[&v, &u]);
            let out: Vec<Dim> = direct.shape.iter().map(|&d| Dim::Static(d as u64)).collect();
            let y = eval(&Op::WinogradOutput { shape: out }, &[&m]);
            assert_eq!(y.shape, direct.shape);
            let (got, want) = (floats(&y).expect("float"), floats(&direct).expect("float"));
            let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-9, "max difference {worst} for {shape:?} pads {pads:?}");
        }
    }

    #[test]
    fn shape_rules_give_tiles_and_reject_misfits() {
        let t = |dims: &[u64]| TensorType::new(DType::F32, dims.iter().map(|&d| Dim::Static(d)).collect());
        // 7x7 with pads 1: a 7x7 output, 4x4 tiles per image.
        assert_eq!(infer_input(&[&t(&[2, 8, 7, 7])], [1; 4]), Ok(vec![t(&[16, 32, 8])]));
        assert_eq!(infer_weight(&[&t(&[4, 8, 3, 3])]), Ok(vec![t(&[16, 8, 4])]));
        let out: Vec<Dim> = [2, 4, 7, 7].iter().map(|&d| Dim::Static(d)).collect();
        assert_eq!(infer_output(&[&t(&[16, 32, 4])], &out), Ok(vec![t(&[2, 4, 7, 7])]));
        assert!(infer_weight(&[&t(&[4, 8, 5, 5])]).is_err());
        assert!(infer_input(&[&t(&[1, 1, 2, 2])], [0; 4]).is_err());
        assert!(infer_output(&[&t(&[16, 31, 4])], &out).is_err());
    }
}
