//! What a training step is fed besides weights: byte-level tokens from a text file, and the
//! forward graph's auxiliary inputs (positions, causal masks, dropout keep-masks, rotary
//! tables), recognized by the zoo's input names.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tessera_ir::dtype::DType;
use tessera_ir::random::SplitMix64;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::TensorType;

/// Byte-level tokens (vocabulary 256). Sequence number `i` of a run starts at a pseudo-random
/// offset drawn from `(seed, i)` alone, so batches are spread over the whole text (contiguous
/// chunks of one section would make every step's loss follow the section), and the data
/// position is just the count of sequences drawn: a checkpoint holds it, and resuming draws
/// exactly the sequences the uninterrupted run would have.
#[derive(Debug, Clone)]
pub struct ByteCorpus {
    bytes: Vec<u8>,
}

impl ByteCorpus {
    pub fn read(path: &Path) -> Result<ByteCorpus> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read the training data", path.display()))?;
        Ok(ByteCorpus { bytes })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> ByteCorpus {
        ByteCorpus { bytes }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `batch` sequences of `seq` tokens and their targets (the next byte of each): sequences
    /// number `*position`, `*position + 1`, ... of the stream seeded by `seed`; `*position`
    /// advances past them.
    pub fn next_batch(&self, position: &mut u64, batch: usize, seq: usize, seed: u64) -> Result<(Tensor, Tensor)> {
        if self.bytes.len() < seq + 1 {
            bail!("the training data has {} bytes; a sequence of {seq} needs at least {}", self.bytes.len(), seq + 1);
        }
        let starts = (self.bytes.len() - seq) as u64;
        let mut tokens = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let start =
                (SplitMix64::new(seed ^ position.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64() % starts) as usize;
            let window = &self.bytes[start..start + seq + 1];
            tokens.extend(window[..seq].iter().map(|&b| b as i64));
            targets.extend(window[1..].iter().map(|&b| b as i64));
            *position += 1;
        }
        let shape = vec![batch, seq];
        Ok((Tensor::from_i64(DType::I64, shape.clone(), tokens), Tensor::from_i64(DType::I64, shape, targets)))
    }
}

/// The value of a forward input other than the tokens, by its zoo name: `positions` (0..S),
/// `*.mask` (additive causal mask, 0 on and below the diagonal, -1e9 above), `*.keep` (dropout
/// keep-mask, each element kept with probability `1 - dropout`, drawn from `rng`),
/// `*.cos`/`*.sin` (rotary tables, angle `s / 10000^(2i / d)`).
pub fn auxiliary_input(name: &str, ty: &TensorType, dropout: f64, rng: &mut SplitMix64) -> Result<Tensor> {
    let shape: Vec<usize> = ty
        .static_shape()
        .with_context(|| format!("input '{name}' has symbolic dimensions ({ty}); training needs static shapes"))?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let n: usize = shape.iter().product();
    if name == "positions" {
        return Ok(Tensor::from_i64(ty.dtype, shape, (0..n as i64).collect()));
    }
    if name.ends_with(".mask") {
        let [rows, cols] = shape[..] else { bail!("mask '{name}' must be [seq, seq], got {ty}") };
        let values = (0..rows * cols).map(|i| if i % cols > i / cols { -1e9 } else { 0.0 }).collect();
        return Ok(Tensor::from_f64(ty.dtype, shape, values));
    }
    if name.ends_with(".keep") {
        let values = (0..n).map(|_| (rng.next_f64() >= dropout) as i64).collect();
        return Ok(Tensor::from_i64(DType::Bool, shape, values));
    }
    if name.ends_with(".cos") || name.ends_with(".sin") {
        let [seq, half] = shape[..] else { bail!("rotary table '{name}' must be [seq, dim / 2], got {ty}") };
        let sine = name.ends_with(".sin");
        let values = (0..seq * half)
            .map(|i| {
                let (s, k) = (i / half, i % half);
                let angle = s as f64 / 10000f64.powf(2.0 * k as f64 / (2 * half) as f64);
                if sine {
                    angle.sin()
                } else {
                    angle.cos()
                }
            })
            .collect();
        return Ok(Tensor::from_f64(ty.dtype, shape, values));
    }
    bail!("the model has an input '{name}' ({ty}) that training does not know how to feed (tokens, positions, *.mask, *.keep, *.cos, *.sin)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_windows_with_next_byte_targets_and_depend_on_the_position_only() {
        let corpus = ByteCorpus::from_bytes((0u8..100).collect());
        let mut pos = 0;
        let (x, y) = corpus.next_batch(&mut pos, 3, 5, 7).expect("batch");
        assert_eq!(pos, 3);
        let (x, y) = (x.to_i64_vec(), y.to_i64_vec());
        for row in 0..3 {
            let first = x[row * 5];
            assert_eq!(x[row * 5..(row + 1) * 5], (first..first + 5).collect::<Vec<_>>()[..]);
            assert_eq!(y[row * 5..(row + 1) * 5], (first + 1..first + 6).collect::<Vec<_>>()[..]);
        }
        // Resuming at position 1 draws sequences 1 and 2 again.
        let mut resumed = 1;
        let (again, _) = corpus.next_batch(&mut resumed, 2, 5, 7).expect("batch");
        assert_eq!(again.to_i64_vec(), x[5..]);
        assert!(corpus.next_batch(&mut pos, 1, 100, 7).is_err());
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let ty = TensorType::of_static(DType::F32, &[3, 3]);
        let m = auxiliary_input("l0.mask", &ty, 0.0, &mut SplitMix64::new(0)).expect("mask");
        assert_eq!(m.to_f64_vec(), [0.0, -1e9, -1e9, 0.0, 0.0, -1e9, 0.0, 0.0, 0.0]);
    }
}
