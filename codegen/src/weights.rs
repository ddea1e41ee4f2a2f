//! The weights image of a compiled program (`weights.bin`) as a layout, not as bytes: each
//! constant at its planned offset, held as the tensor itself (whose f32 elements are shared with
//! the graph), and encoded piece by piece only when the image is hashed or written. A model's
//! weights are then in memory once while it compiles, not once as constants and again as the
//! image (BENCHMARKS.md, "GPT-2 small: import and compile").

use std::io::Write;
use std::sync::OnceLock;
use tessera_ir::artifact::{align, encode_range_into, encoded_len, Sha256Writer};
use tessera_ir::tensor::{Buffer, Tensor};

/// Elements per piece when the image is streamed (256 KiB of f32): large enough that the
/// per-piece calls cost nothing, small enough that a staged piece is still in the core's cache
/// when it is written or hashed.
const ELEMENTS_PER_PIECE: usize = 1 << 16;

/// Zeros for the padding between constants (always shorter than one alignment unit).
const ZEROS: [u8; tessera_ir::artifact::ALIGNMENT as usize] = [0; tessera_ir::artifact::ALIGNMENT as usize];

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

    /// Calls `each` with the image's bytes, piece by piece in order: the padding, then each
    /// constant a piece at a time. An f32 constant's piece is its own elements' bytes on a
    /// little-endian host (what encoding them gives), so a model's weights are not copied to be
    /// written or hashed; other constants are encoded into a staging buffer a piece at a time.
    fn for_each_piece(&self, mut each: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut written = 0u64;
        let mut staging = Vec::new();
        for (offset, constant) in &self.placed {
            let mut padding = (offset - written) as usize;
            while padding > 0 {
                let n = padding.min(ZEROS.len());
                each(&ZEROS[..n])?;
                padding -= n;
            }
            let mut start = 0;
            while start < constant.len() {
                let end = (start + ELEMENTS_PER_PIECE).min(constant.len());
                match (&constant.data, cfg!(target_endian = "little")) {
                    (Buffer::F32(values), true) => each(f32_bytes(&values[start..end]))?,
                    _ => {
                        staging.clear();
                        encode_range_into(constant, start..end, &mut staging);
                        each(&staging)?;
                    }
                }
                start = end;
            }
            written = offset + encoded_len(constant);
        }
        Ok(())
    }

    /// Writes the image's bytes to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        self.for_each_piece(|piece| out.write_all(piece))
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

/// The bytes of `values` in memory order (their little-endian encoding on a little-endian host).
fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: the byte slice covers exactly the memory of `values` (size_of_val bytes from its
    // start), lives no longer than the borrow of `values`, and u8 has alignment 1 and no
    // invalid bit patterns; f32 has no padding, so every byte is initialized.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
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
