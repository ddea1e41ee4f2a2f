//! The weights image of a compiled program (`weights.bin`) as a layout, not as bytes: each
//! constant at its planned offset, held as the tensor itself (whose f32 elements are shared with
//! the graph), and encoded piece by piece only when the image is hashed or written. A model's
//! weights are then in memory once while it compiles, not once as constants and again as the
//! image (BENCHMARKS.md, "GPT-2 small: import and compile").

use std::io::{Read, Write};
use std::sync::OnceLock;
use tessera_ir::artifact::{align, encode_range_into, encoded_len, Sha256Writer};
use tessera_ir::tensor::Tensor;

/// Elements encoded per piece when the image is streamed (4 MiB of f32): large enough that the
/// per-piece calls cost nothing, small enough that the staging buffer is negligible memory.
const ELEMENTS_PER_PIECE: usize = 1 << 20;

/// The constants of a program at their offsets in `weights.bin`; the bytes are exactly what
/// encoding every constant with [`tessera_ir::artifact::encode`] at its offset, zeros between,
/// gives.
#[derive(Default, Clone)]
pub struct WeightsImage {
    /// `(offset, constant)`, in increasing offset order.
    placed: Vec<(u64, Tensor)>,
    len: u64,
    /// The image's SHA-256 (lowercase hex), computed once on first use.
    sha256: OnceLock<String>,
}

impl WeightsImage {
    /// Places `constant` at the next aligned offset after everything placed so far, and returns
    /// that offset.
    pub fn place(&mut self, constant: &Tensor) -> u64 {
        let offset = align(self.len);
        self.len = offset + encoded_len(constant);
        self.placed.push((offset, constant.clone()));
        self.sha256 = OnceLock::new();
        offset
    }

    /// The image's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the image's bytes to `out`, encoding one piece of a constant at a time.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut written = 0u64;
        let mut piece = Vec::new();
        for (offset, constant) in &self.placed {
            let padding = offset - written;
            std::io::copy(&mut std::io::repeat(0).take(padding), out)?;
            let mut start = 0;
            while start < constant.len() {
                let end = (start + ELEMENTS_PER_PIECE).min(constant.len());
                piece.clear();
                encode_range_into(constant, start..end, &mut piece);
                out.write_all(&piece)?;
                start = end;
            }
            written = offset + encoded_len(constant);
        }
        Ok(())
    }

    /// The image's bytes in one buffer (for small images and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len as usize);
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut bytes);
        bytes
    }

    /// The SHA-256 of the image's bytes, lowercase hex (what the manifest records for
    /// `weights.bin`), hashed from the constants without building the image.
    pub fn sha256_hex(&self) -> &str {
        self.sha256.get_or_init(|| {
            let mut hasher = Sha256Writer::default();
            // Hashing cannot fail.
            let _ = self.write_to(&mut hasher);
            hasher.finish_hex()
        })
    }
}

/// Two images are equal when their bytes are: same length and same SHA-256 (the constants'
/// values compare as bytes, so NaN payloads and signed zeros count, as in the file).
impl PartialEq for WeightsImage {
    fn eq(&self, other: &WeightsImage) -> bool {
        self.len == other.len && self.sha256_hex() == other.sha256_hex()
    }
}

impl Eq for WeightsImage {}

impl std::fmt::Debug for WeightsImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightsImage").field("constants", &self.placed.len()).field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::{encode, ALIGNMENT};
    use tessera_ir::dtype::DType;

    /// The image written piece by piece is byte for byte the constants encoded whole at their
    /// aligned offsets, zeros between, for every storage kind, and for a constant spanning
    /// several pieces; its digest is the digest of those bytes.
    #[test]
    fn streamed_image_equals_the_constants_encoded_at_their_offsets() {
        let big: Vec<f32> = (0..ELEMENTS_PER_PIECE * 2 + 3).map(|i| i as f32 * 0.5 - 7.0).collect();
        let constants = [
            Tensor::from_f32(vec![3], vec![1.5, -0.0, f32::MAX]),
            Tensor::from_i64(DType::I32, vec![2], vec![-1, 7]),
            Tensor::from_i64(DType::Bool, vec![5], vec![0, 1, 1, 0, 1]),
            Tensor::from_f64(DType::F16, vec![2], vec![0.5, -65504.0]),
            Tensor::from_f32(vec![big.len()], big),
        ];
        let mut image = WeightsImage::default();
        let mut expected = Vec::new();
        for constant in &constants {
            let offset = image.place(constant);
            assert_eq!(offset % ALIGNMENT, 0);
            assert_eq!(offset, align(expected.len() as u64));
            expected.resize(offset as usize, 0);
            expected.extend_from_slice(&encode(constant));
        }
        assert_eq!(image.len(), expected.len() as u64);
        let bytes = image.to_vec();
        assert!(bytes == expected, "the streamed image differs from the encoded constants");
        assert_eq!(image.sha256_hex(), tessera_ir::artifact::sha256_hex(&expected));
    }
}
