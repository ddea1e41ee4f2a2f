//! Epilogues of GEMMs and convolutions ([`tessera_ir::artifact::Epilogue`]): the bias,
//! activation and residual add after a library call, applied to each block of its output right
//! after the block is computed, on the thread that computed it (the block is still in cache),
//! instead of a separate kernel step that re-reads the whole tensor.
//!
//! The program runs over chunks of [`LANES`] elements: every instruction is one short loop over
//! a chunk, which the compiler vectorizes (8 wide where the CPU has AVX2 and FMA, chosen at run
//! time). Transcendental functions use the same branch-free approximations as the generated
//! kernels (`codegen::emit::pointwise`: Cephes' `expf`, Eigen's rational `tanh` and `erf`), so a
//! fused program computes what the unfused one did, up to the order of a few roundings.

use rayon::prelude::*;
use tessera_ir::artifact::{Epilogue, EpilogueOp};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};

/// Elements per chunk: each instruction's value is one chunk (a few cache lines).
const LANES: usize = 64;

thread_local! {
    /// Per thread, the value registers of [`BoundEpilogue::apply`] (one chunk per instruction),
    /// kept across calls.
    static REGISTERS: std::cell::RefCell<Vec<[f32; LANES]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Outputs larger than this many elements get their epilogue split over rayon's threads when
/// the call that computed them ran threaded.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// An epilogue with its operands' data, checked against the size of the output it applies to.
pub struct BoundEpilogue<'a> {
    epilogue: &'a Epilogue,
    operands: Vec<&'a [f32]>,
}

impl<'a> BoundEpilogue<'a> {
    /// Checks `epilogue` and that every operand holds `extent` elements whose period
    /// (`inner * extent`) divides `output_len`.
    pub fn new(epilogue: &'a Epilogue, operands: Vec<&'a [f32]>, output_len: usize) -> Result<Self, String> {
        epilogue.check()?;
        if operands.len() != epilogue.operands.len() {
            return Err(format!(
                "the epilogue reads {} operands, the step gives {}",
                epilogue.operands.len(),
                operands.len()
            ));
        }
        for (i, (pattern, data)) in epilogue.operands.iter().zip(&operands).enumerate() {
            let period = pattern.inner.checked_mul(pattern.extent).and_then(|p| usize::try_from(p).ok());
            let fits = period.is_some_and(|p| p > 0 && output_len % p == 0);
            if data.len() as u64 != pattern.extent || !fits {
                return Err(format!(
                    "epilogue operand {i}: {} elements, pattern {pattern:?}, output of {output_len} elements",
                    data.len()
                ));
            }
        }
        Ok(BoundEpilogue { epilogue, operands })
    }

    /// Applies the epilogue to `block`, the output's elements from flat index `start` on.
    pub fn apply(&self, block: &mut [f32], start: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { self.apply_avx2_fma(block, start) };
            return;
        }
        self.apply_body(block, start);
    }

    /// [`BoundEpilogue::apply`], split over rayon's threads when `threaded` and the block is
    /// large (each element's result does not depend on the split).
    pub fn apply_maybe_parallel(&self, block: &mut [f32], start: usize, threaded: bool) {
        if threaded && block.len() >= 2 * PARALLEL_MIN_ELEMENTS {
            block
                .par_chunks_mut(PARALLEL_MIN_ELEMENTS)
                .enumerate()
                .for_each(|(i, chunk)| self.apply(chunk, start + i * PARALLEL_MIN_ELEMENTS));
        } else {
            self.apply(block, start);
        }
    }

    /// [`BoundEpilogue::apply_body`] compiled for AVX2 and FMA, so its loops vectorize 8 wide.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_avx2_fma(&self, block: &mut [f32], start: usize) {
        self.apply_body(block, start);
    }

    #[inline(always)]
    fn apply_body(&self, block: &mut [f32], start: usize) {
        let code = &self.epilogue.code;
        // The value registers come from this thread's scratch, not the heap: a per-call
        // allocation of `code.len()` chunks made PP-OCR cls 35-40% slower fused than unfused
        // (its depthwise epilogues run on many small blocks). Taken out and put back, so the
        // thread-local is never borrowed across the loop.
        let mut values = REGISTERS.with_borrow_mut(std::mem::take);
        if values.len() < code.len() {
            values.resize(code.len(), [0f32; LANES]);
        }
        self.run_chunks(block, start, &mut values[..code.len()]);
        REGISTERS.with_borrow_mut(|kept| {
            if kept.len() < values.len() {
                *kept = values;
            }
        });
    }

    /// Runs the program over `block` chunk by chunk, `values[j]` holding instruction `j`'s
    /// value for the current chunk.
    #[inline(always)]
    fn run_chunks(&self, block: &mut [f32], start: usize, values: &mut [[f32; LANES]]) {
        let code = &self.epilogue.code;
        // A scalar operand (a clip bound, hard-swish's 3 and 6) is the same in every chunk:
        // its register is filled once per call, not once per chunk.
        let is_scalar = |op: &EpilogueOp| match *op {
            EpilogueOp::Operand { index } => self.operands[index as usize].len() == 1,
            _ => false,
        };
        for (op, register) in code.iter().zip(values.iter_mut()) {
            if let (true, EpilogueOp::Operand { index }) = (is_scalar(op), op) {
                register.fill(self.operands[*index as usize][0]);
            }
        }
        for (c, chunk) in block.chunks_mut(LANES).enumerate() {
            let base = start + c * LANES;
            let len = chunk.len();
            for (j, op) in code.iter().enumerate() {
                let (earlier, rest) = values.split_at_mut(j);
                let out = &mut rest[0][..len];
                match *op {
                    EpilogueOp::Result => out.copy_from_slice(chunk),
                    EpilogueOp::Operand { .. } if is_scalar(op) => {}
                    EpilogueOp::Operand { index } => {
                        let pattern = self.epilogue.operands[index as usize];
                        let data = self.operands[index as usize];
                        read_operand(data, pattern.inner as usize, base, out);
                    }
                    EpilogueOp::Unary { unary, x } => unary_lanes(unary, &earlier[x as usize][..len], out),
                    EpilogueOp::Binary { binary, a, b } => {
                        binary_lanes(binary, &earlier[a as usize][..len], &earlier[b as usize][..len], out)
                    }
                }
            }
            chunk.copy_from_slice(&values[code.len() - 1][..len]);
        }
    }
}

/// `out[j] = data[((base + j) / inner) % data.len()]`: runs of one value (`inner` > 1) or
/// contiguous pieces of `data` (`inner` 1).
#[inline(always)]
fn read_operand(data: &[f32], inner: usize, base: usize, out: &mut [f32]) {
    let extent = data.len();
    if extent == 1 {
        // A scalar (a clip bound, GELU's constants): one fill, not a copy per element (which
        // made magika's GELU-tanh epilogue slower than the kernel it replaced).
        out.fill(data[0]);
        return;
    }
    let mut done = 0;
    while done < out.len() {
        let position = base + done;
        let index = (position / inner) % extent;
        if inner == 1 {
            let run = (extent - index).min(out.len() - done);
            out[done..done + run].copy_from_slice(&data[index..index + run]);
            done += run;
        } else {
            let run = (inner - position % inner).min(out.len() - done);
            out[done..done + run].fill(data[index]);
            done += run;
        }
    }
}

#[inline(always)]
fn map1(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
fn map2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[inline(always)]
fn unary_lanes(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    match op {
        UnaryOp::Neg => map1(x, out, |v| -v),
        UnaryOp::Abs => map1(x, out, f32::abs),
        UnaryOp::Exp => map1(x, out, exp),
        UnaryOp::Sqrt => map1(x, out, f32::sqrt),
        UnaryOp::Rsqrt => map1(x, out, |v| 1.0 / v.sqrt()),
        UnaryOp::Reciprocal => map1(x, out, |v| 1.0 / v),
        UnaryOp::Tanh => map1(x, out, tanh),
        UnaryOp::Sigmoid => map1(x, out, sigmoid),
        // `v < 0` is false for NaN, so NaN passes through as in the reference.
        UnaryOp::Relu => map1(x, out, |v| if v < 0.0 { 0.0 } else { v }),
        UnaryOp::Gelu => map1(x, out, |v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))),
        UnaryOp::GeluTanh => map1(x, out, |v| {
            let inner = v + 0.044715 * (v * v * v);
            0.5 * v * (1.0 + tanh(0.797_884_6 * inner))
        }),
        UnaryOp::Silu => map1(x, out, |v| v * sigmoid(v)),
        UnaryOp::Erf => map1(x, out, erf),
        UnaryOp::Softsign => map1(x, out, |v| v / (1.0 + v.abs())),
        // `Epilogue::check` refuses the others before any epilogue runs.
        _ => map1(x, out, |_| f32::NAN),
    }
}

#[inline(always)]
fn binary_lanes(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
    // `max`/`min` propagate NaN, as the reference and the kernels' `arith.maximumf` do.
    let nan_or = |x: f32, y: f32, r: f32| if x.is_nan() || y.is_nan() { f32::NAN } else { r };
    match op {
        BinaryOp::Add => map2(a, b, out, |x, y| x + y),
        BinaryOp::Sub => map2(a, b, out, |x, y| x - y),
        BinaryOp::Mul => map2(a, b, out, |x, y| x * y),
        BinaryOp::Div => map2(a, b, out, |x, y| x / y),
        BinaryOp::Max => map2(a, b, out, |x, y| nan_or(x, y, if x > y { x } else { y })),
        BinaryOp::Min => map2(a, b, out, |x, y| nan_or(x, y, if x < y { x } else { y })),
        _ => map2(a, b, out, |_, _| f32::NAN),
    }
}

/// `p(x)` by Horner's rule (coefficients lowest degree first).
#[inline(always)]
fn horner(coefficients: &[f32], x: f32) -> f32 {
    let mut acc = coefficients[coefficients.len() - 1];
    for &k in coefficients[..coefficients.len() - 1].iter().rev() {
        acc = acc * x + k;
    }
    acc
}

/// `floor` from a truncating conversion (SSE2 has no vector floor); exact for |x| < 2^23,
/// which covers the exponent's range in [`exp`].
#[inline(always)]
fn floor_small(x: f32) -> f32 {
    let t = (x as i32) as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// `exp(x)` as the CPU kernels compute it: Cephes' `expf`, `x = n ln2 + r`, a degree-7
/// polynomial for `exp(r)` and `2^n` as two exponent-bit factors (see
/// `codegen::emit::pointwise`'s `exp`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let c = x.clamp(-104.0, 88.73);
    let n = floor_small(c * std::f32::consts::LOG2_E + 0.5);
    let r = c - n * 0.693_359_4;
    let r = r + n * 2.121_944_4e-4;
    let p = horner(&[5e-1, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_2e-3, 1.987_569_1e-4], r);
    let e = p * (r * r) + r + 1.0;
    let ni = n as i32;
    let (h, rest) = (ni >> 1, ni - (ni >> 1));
    let factor = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let scaled = e * factor(h) * factor(rest);
    if x.is_nan() {
        x
    } else {
        scaled
    }
}

/// `c p(c²) / q(c²)` with `c` the input clamped to ±`bound` (where the function is ±1 in f32).
#[inline(always)]
fn odd_rational(x: f32, bound: f32, alpha: &[f32], beta: &[f32]) -> f32 {
    let c = x.clamp(-bound, bound);
    let c2 = c * c;
    horner(alpha, c2) * c / horner(beta, c2)
}

/// Eigen's rational `tanh` (`generic_fast_tanh_float`), `x` itself below 4e-4.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let alpha =
        [4.893_524_6e-3, 6.372_619_3e-4, 1.485_722_4e-5, 5.122_297e-8, -8.604_672e-11, 2.000_188e-13, -2.760_768_5e-16];
    let beta = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let r = odd_rational(x, 7.905_311, &alpha, &beta);
    if x.abs() < 4e-4 {
        x
    } else {
        r
    }
}

/// Eigen's rational `erf` (`generic_fast_erf_float`) on `x` clamped to ±4.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let alpha = [
        -1.609_603_3e-2,
        -2.954_6e-3,
        -7.349_906_3e-4,
        -5.692_506_4e-5,
        -2.101_024e-6,
        2.770_681_4e-8,
        -2.726_142_3e-10,
    ];
    let beta = [-1.426_473_9e-2, -7.373_329e-3, -1.682_827e-3, -2.133_740_6e-4, -1.456_607_2e-5];
    odd_rational(x, 4.0, &alpha, &beta)
}

/// `1 / (1 + exp(-x))`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::EpilogueOperand;

    /// Every supported unary op against the interpreter's (f64) semantics, over a range that
    /// covers the approximations' clamps.
    #[test]
    fn unary_ops_match_the_interpreter() {
        use tessera_ir::dtype::DType;
        use tessera_ir::ops::Op;
        use tessera_ir::tensor::Tensor;
        use tessera_ir::types::TensorType;
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.05).collect();
        let input = Tensor::from_f64(DType::F32, vec![xs.len()], xs.iter().map(|&x| f64::from(x)).collect());
        let ty = TensorType::of_static(DType::F32, &[xs.len() as u64]);
        for &op in UnaryOp::ALL.iter().filter(|&&op| Epilogue::supports_unary(op)) {
            let want = Op::Unary(op).eval(&[&input], std::slice::from_ref(&ty)).expect("reference eval");
            let want = want[0].to_f64_vec();
            let mut out = vec![0f32; xs.len()];
            for (x, o) in xs.chunks(LANES).zip(out.chunks_mut(LANES)) {
                unary_lanes(op, x, o);
            }
            for ((&x, &got), &want) in xs.iter().zip(&out).zip(&want) {
                let got = f64::from(got);
                if want.is_nan() || want.is_infinite() {
                    assert!(got == want || (got.is_nan() && want.is_nan()), "{op:?}({x}) = {got}, want {want}");
                    continue;
                }
                // Relative for large values, absolute near 0 (where `1 + erf` and the like
                // cancel in f32, as in the kernels).
                let tolerance = 1e-5 * want.abs().max(1.0);
                assert!((got - want).abs() <= tolerance, "{op:?}({x}) = {got}, want {want}");
            }
        }
    }

    /// A bias over a convolution's channels, relu, and a residual: block by block from odd
    /// starting points equals the formula element by element.
    #[test]
    fn operands_broadcast_by_their_pattern_in_any_block() {
        let (channels, plane) = (3, 50);
        let total = channels * plane;
        let bias = [0.5f32, -1.0, 2.0];
        let residual: Vec<f32> = (0..total).map(|i| i as f32 * 0.01).collect();
        let epilogue = Epilogue {
            operands: vec![
                EpilogueOperand { inner: plane as u64, extent: channels as u64 },
                EpilogueOperand { inner: 1, extent: total as u64 },
                EpilogueOperand { inner: total as u64, extent: 1 },
            ],
            code: vec![
                EpilogueOp::Result,
                EpilogueOp::Operand { index: 0 },
                EpilogueOp::Binary { binary: BinaryOp::Add, a: 0, b: 1 },
                EpilogueOp::Unary { unary: UnaryOp::Relu, x: 2 },
                EpilogueOp::Operand { index: 1 },
                EpilogueOp::Binary { binary: BinaryOp::Add, a: 3, b: 4 },
                EpilogueOp::Operand { index: 2 },
                EpilogueOp::Binary { binary: BinaryOp::Min, a: 5, b: 6 },
            ],
        };
        let bound = BoundEpilogue::new(&epilogue, vec![&bias, &residual, &[1.5]], total).expect("binds");
        let input: Vec<f32> = (0..total).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: Vec<f32> =
            (0..total).map(|i| ((input[i] + bias[i / plane]).max(0.0) + residual[i]).min(1.5)).collect();
        for split in [1, 7, 64, 100, total] {
            let mut got = input.clone();
            let mut start = 0;
            for block in got.chunks_mut(split) {
                let len = block.len();
                bound.apply(block, start);
                start += len;
            }
            assert_eq!(got, want, "blocks of {split}");
        }
        assert!(BoundEpilogue::new(&epilogue, vec![&bias[..2], &residual, &[1.5]], total).is_err());
        assert!(BoundEpilogue::new(&epilogue, vec![&bias, &residual], total).is_err());
    }
}
