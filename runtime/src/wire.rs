//! Tensors as typed element buffers for native collectives (MPI and NCCL), and the block
//! layouts that let a library collective, which only knows member-major contiguous blocks,
//! gather, scatter or exchange along any tensor axis.
//!
//! Element types are chosen so a value never changes on the wire: `f64` travels as `f64`,
//! `f32` as `f32`; bf16 and f16 move (gather, scatter, broadcast) as their 16 bits, their
//! maxima are taken as `f32` (which holds them exactly) and their sums as `f64`, so the result is
//! rounded to the dtype once, as the reference does; the fp8 types travel as `f32`; integers
//! and booleans as `i64` (sums are done on the same bits as `u64`, which wraps like the
//! reference's `wrapping_add`).

use tessera_ir::dtype::DType;
use tessera_ir::tensor::{Buffer, Tensor};

/// What a collective does with the elements, which decides their wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Copied unchanged (gather, all-to-all, broadcast).
    Move,
    Max,
    Sum,
}

/// The element type of a buffer on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    F32,
    F64,
    I64,
    /// The bits of bf16 or f16 values; only moved, never computed on.
    Bits16,
}

impl Wire {
    /// The wire type of `dtype` for `use_`; see the module documentation.
    pub fn of(dtype: DType, use_: Use) -> Wire {
        match (dtype, use_) {
            (DType::F64, _) => Wire::F64,
            (DType::F32, _) => Wire::F32,
            (DType::BF16 | DType::F16, Use::Move) => Wire::Bits16,
            (d, Use::Sum) if d.is_float() => Wire::F64,
            (d, _) if d.is_float() => Wire::F32,
            _ => Wire::I64,
        }
    }
}

impl Wire {
    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            Wire::Bits16 => 2,
            Wire::F32 => 4,
            Wire::F64 | Wire::I64 => 8,
        }
    }
}

/// `x` (already rounded to `dtype`, bf16 or f16) as its 16 bits.
fn to_bits16(dtype: DType, x: f64) -> u16 {
    if dtype == DType::BF16 {
        half::bf16::from_f64(x).to_bits()
    } else {
        half::f16::from_f64(x).to_bits()
    }
}

fn from_bits16(dtype: DType, bits: u16) -> f64 {
    if dtype == DType::BF16 {
        half::bf16::from_bits(bits).to_f64()
    } else {
        half::f16::from_bits(bits).to_f64()
    }
}

/// A tensor's elements in their wire type, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bits16(Vec<u16>),
}

impl Elements {
    /// The elements of `t` as `wire` (exact for the wire [`Wire::of`] gives).
    pub fn of(t: &Tensor, wire: Wire) -> Elements {
        match (wire, &t.data) {
            (Wire::F64, Buffer::Float(v)) => Elements::F64(v.clone()),
            (Wire::F32, Buffer::Float(v)) => Elements::F32(v.iter().map(|&x| x as f32).collect()),
            (Wire::F32, Buffer::F32(v)) => Elements::F32(v.to_vec()),
            (Wire::I64, Buffer::Int(v)) => Elements::I64(v.clone()),
            (Wire::Bits16, Buffer::F16(v)) => Elements::Bits16(v.iter().map(|x| x.to_bits()).collect()),
            (Wire::Bits16, Buffer::BF16(v)) => Elements::Bits16(v.iter().map(|x| x.to_bits()).collect()),
            (Wire::F64, _) => Elements::F64(t.to_f64_vec()),
            (Wire::F32, _) => Elements::F32(t.to_f64_vec().into_iter().map(|x| x as f32).collect()),
            (Wire::I64, _) => Elements::I64(t.to_i64_vec()),
            (Wire::Bits16, _) => Elements::Bits16(t.to_f64_vec().into_iter().map(|x| to_bits16(t.dtype, x)).collect()),
        }
    }

    pub fn zeros(wire: Wire, n: usize) -> Elements {
        match wire {
            Wire::F32 => Elements::F32(vec![0.0; n]),
            Wire::F64 => Elements::F64(vec![0.0; n]),
            Wire::I64 => Elements::I64(vec![0; n]),
            Wire::Bits16 => Elements::Bits16(vec![0; n]),
        }
    }

    pub fn wire(&self) -> Wire {
        match self {
            Elements::F32(_) => Wire::F32,
            Elements::F64(_) => Wire::F64,
            Elements::I64(_) => Wire::I64,
            Elements::Bits16(_) => Wire::Bits16,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Elements::F32(v) => v.len(),
            Elements::F64(v) => v.len(),
            Elements::I64(v) => v.len(),
            Elements::Bits16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_ptr(&self) -> *const std::ffi::c_void {
        match self {
            Elements::F32(v) => v.as_ptr().cast(),
            Elements::F64(v) => v.as_ptr().cast(),
            Elements::I64(v) => v.as_ptr().cast(),
            Elements::Bits16(v) => v.as_ptr().cast(),
        }
    }

    pub fn as_mut_ptr(&mut self) -> *mut std::ffi::c_void {
        match self {
            Elements::F32(v) => v.as_mut_ptr().cast(),
            Elements::F64(v) => v.as_mut_ptr().cast(),
            Elements::I64(v) => v.as_mut_ptr().cast(),
            Elements::Bits16(v) => v.as_mut_ptr().cast(),
        }
    }

    /// The elements at `indices`, in that order.
    pub fn pick(&self, indices: &[usize]) -> Elements {
        match self {
            Elements::F32(v) => Elements::F32(indices.iter().map(|&i| v[i]).collect()),
            Elements::F64(v) => Elements::F64(indices.iter().map(|&i| v[i]).collect()),
            Elements::I64(v) => Elements::I64(indices.iter().map(|&i| v[i]).collect()),
            Elements::Bits16(v) => Elements::Bits16(indices.iter().map(|&i| v[i]).collect()),
        }
    }

    /// A tensor of `dtype` and `shape` holding these elements (rounded or wrapped to `dtype`).
    pub fn into_tensor(self, dtype: DType, shape: Vec<usize>) -> Tensor {
        match self {
            Elements::F32(v) => Tensor::from_f64(dtype, shape, v.into_iter().map(f64::from).collect()),
            Elements::F64(v) => Tensor::from_f64(dtype, shape, v),
            Elements::I64(v) => Tensor::from_i64(dtype, shape, v),
            Elements::Bits16(v) => {
                Tensor::from_f64(dtype, shape, v.into_iter().map(|b| from_bits16(dtype, b)).collect())
            }
        }
    }

    /// `g` member-major blocks of `block_shape` (these elements) concatenated along axis `d`;
    /// no copy when the blocks are already in that order (nothing before axis `d`).
    pub fn concat_blocks(self, block_shape: &[usize], d: usize, g: usize) -> Elements {
        if around(block_shape, d).0 == 1 {
            self
        } else {
            self.pick(&concat_indices(block_shape, d, g))
        }
    }

    /// These elements (of `shape`) cut into `g` blocks along axis `d`, laid out member-major;
    /// no copy when they already are (nothing before axis `d`).
    pub fn split_blocks(self, shape: &[usize], d: usize, g: usize) -> Elements {
        if around(shape, d).0 == 1 {
            self
        } else {
            self.pick(&split_indices(shape, d, g))
        }
    }

    /// For a NaN-propagating maximum through a library `max` (which need not propagate NaN):
    /// replaces NaNs by -inf and returns one flag per element that was NaN.
    pub fn take_nans(&mut self) -> Vec<u8> {
        fn take<T: Copy + PartialEq>(v: &mut [T], neg_inf: T) -> Vec<u8> {
            v.iter_mut()
                .map(|x| {
                    // NaN is the only value that differs from itself.
                    #[allow(clippy::eq_op)]
                    let nan = *x != *x;
                    if nan {
                        *x = neg_inf;
                    }
                    u8::from(nan)
                })
                .collect()
        }
        match self {
            Elements::F32(v) => take(v, f32::NEG_INFINITY),
            Elements::F64(v) => take(v, f64::NEG_INFINITY),
            Elements::I64(v) => vec![0; v.len()],
            Elements::Bits16(v) => vec![0; v.len()],
        }
    }

    /// Puts NaN back wherever any member's flag was set (after the max of the flags).
    pub fn restore_nans(&mut self, flags: &[u8]) {
        match self {
            Elements::F32(v) => v.iter_mut().zip(flags).filter(|(_, &f)| f != 0).for_each(|(x, _)| *x = f32::NAN),
            Elements::F64(v) => v.iter_mut().zip(flags).filter(|(_, &f)| f != 0).for_each(|(x, _)| *x = f64::NAN),
            Elements::I64(_) | Elements::Bits16(_) => {}
        }
    }
}

/// `shape` seen around axis `d`: (elements before it, its length, elements after it).
fn around(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

/// Indices that turn `g` member-major blocks (each of `block_shape`, row-major, one after
/// another) into their concatenation along axis `d`.
pub fn concat_indices(block_shape: &[usize], d: usize, g: usize) -> Vec<usize> {
    let (outer, len, inner) = around(block_shape, d);
    let mut out = Vec::with_capacity(outer * g * len * inner);
    for o in 0..outer {
        for j in 0..g {
            for k in 0..len {
                let start = ((j * outer + o) * len + k) * inner;
                out.extend(start..start + inner);
            }
        }
    }
    out
}

/// Indices that cut a tensor of `shape` into `g` equal blocks along axis `d` and lay them out
/// member-major (block 0's elements, then block 1's, ...), each block row-major.
/// `shape[d]` must be a multiple of `g`.
pub fn split_indices(shape: &[usize], d: usize, g: usize) -> Vec<usize> {
    let (outer, len, inner) = around(shape, d);
    let block = len / g;
    let mut out = Vec::with_capacity(outer * len * inner);
    for j in 0..g {
        for o in 0..outer {
            for k in 0..block {
                let start = (o * len + j * block + k) * inner;
                out.extend(start..start + inner);
            }
        }
    }
    out
}

/// A 64-bit fingerprint of a tensor's dtype and shape (FNV-1a), which members of a native
/// collective compare before moving data: MPI and NCCL would otherwise read past a shorter
/// buffer instead of reporting the mismatch.
pub fn signature(t: &Tensor) -> u64 {
    let text = format!("{}{:?}", t.dtype.mlir_name(), t.shape);
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::ops::collective::{eval_group, Collective, MeshAxes};

    fn tensor(shape: Vec<usize>, seed: i64) -> Tensor {
        let n = shape.iter().product::<usize>() as i64;
        Tensor::from_i64(DType::I64, shape, (0..n).map(|i| i * 10 + seed).collect())
    }

    fn group(g: usize) -> MeshAxes {
        MeshAxes { axes: vec!["x".into()], size: g as u64 }
    }

    #[test]
    fn concat_indices_gather_along_every_axis_like_the_reference() {
        let shape = vec![2, 3, 4];
        let members: Vec<Tensor> = (0..3).map(|m| tensor(shape.clone(), m)).collect();
        let refs: Vec<&Tensor> = members.iter().collect();
        let mut flat = Vec::new();
        members.iter().for_each(|t| flat.extend(t.to_i64_vec()));
        for d in 0..3 {
            let op = Collective::AllGather { dim: d as i64, group: group(3) };
            let ty = op.infer(&[&members[0].tensor_type()]).expect("infers").remove(0);
            let want = eval_group(&op, &refs, 0, &ty).expect("reference");
            let got = Elements::I64(flat.clone()).pick(&concat_indices(&shape, d, 3));
            assert_eq!(got.into_tensor(DType::I64, want.shape.clone()), want, "axis {d}");
            let got = Elements::I64(flat.clone()).concat_blocks(&shape, d, 3);
            assert_eq!(got.into_tensor(DType::I64, want.shape.clone()), want, "axis {d} (no copy when in order)");
        }
    }

    #[test]
    fn split_indices_cut_blocks_like_the_reference_scatter() {
        let shape = vec![2, 6, 3];
        let t = tensor(shape.clone(), 1);
        for d in [0usize, 1] {
            let g = 2;
            let packed = Elements::of(&t, Wire::of(DType::I64, Use::Move)).pick(&split_indices(&shape, d, g));
            let blocks = Elements::of(&t, Wire::of(DType::I64, Use::Move)).split_blocks(&shape, d, g);
            assert_eq!(blocks, packed, "axis {d}");
            let block = t.len() / g;
            for member in 0..g {
                let op = Collective::AllSlice { dim: d as i64, group: group(g) };
                let ty = op.infer(&[&t.tensor_type()]).expect("infers").remove(0);
                let want = eval_group(&op, &[&t, &t], member, &ty).expect("reference");
                let Elements::I64(v) = &packed else { unreachable!() };
                assert_eq!(&v[member * block..(member + 1) * block], want.to_i64_vec().as_slice(), "axis {d}");
            }
        }
    }

    #[test]
    fn wires_hold_their_dtypes_exactly() {
        let bf = Tensor::from_f64(DType::BF16, vec![3], vec![1.0 / 3.0, -2.5, 1e-3]);
        assert_eq!(Wire::of(DType::BF16, Use::Move), Wire::Bits16);
        assert_eq!(Wire::of(DType::BF16, Use::Max), Wire::F32);
        assert_eq!(Wire::of(DType::BF16, Use::Sum), Wire::F64);
        let h = Tensor::from_f64(DType::F16, vec![2], vec![0.333, -65504.0]);
        for t in [&bf, &h] {
            for use_ in [Use::Move, Use::Max, Use::Sum] {
                let back = Elements::of(t, Wire::of(t.dtype, use_)).into_tensor(t.dtype, t.shape.clone());
                assert_eq!(&back, t, "{use_:?}");
            }
        }
        let i = Tensor::from_i64(DType::I64, vec![2], vec![i64::MIN, 5]);
        assert_eq!(Elements::of(&i, Wire::of(DType::I64, Use::Sum)).into_tensor(DType::I64, vec![2]), i);
    }

    #[test]
    fn nans_survive_a_max_through_flags() {
        let mut e = Elements::F32(vec![1.0, f32::NAN, -3.0]);
        let flags = e.take_nans();
        assert_eq!(flags, vec![0, 1, 0]);
        assert_eq!(e, Elements::F32(vec![1.0, f32::NEG_INFINITY, -3.0]));
        e.restore_nans(&flags);
        let Elements::F32(v) = e else { unreachable!() };
        assert!(v[1].is_nan() && v[0] == 1.0);
    }

    #[test]
    fn signatures_tell_shapes_and_dtypes_apart() {
        let a = Tensor::zeros(DType::F32, vec![2, 3]);
        assert_eq!(signature(&a), signature(&Tensor::zeros(DType::F32, vec![2, 3])));
        assert_ne!(signature(&a), signature(&Tensor::zeros(DType::F32, vec![3, 2])));
        assert_ne!(signature(&a), signature(&Tensor::zeros(DType::BF16, vec![2, 3])));
    }
}
