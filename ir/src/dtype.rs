//! Element types of tensors, their MLIR spellings and how values round to them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor. Floats are stored as `f64` by the reference semantics and rounded to
/// the dtype after every op; integers and booleans as `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3,
    F8E5M2,
    /// FLOAT8E4M3FNUZ: bias 8, no infinities, no negative zero; `0x80` is the only NaN.
    F8E4M3Fnuz,
    /// FLOAT8E5M2FNUZ: bias 16, no infinities, no negative zero; `0x80` is the only NaN.
    F8E5M2Fnuz,
    /// FLOAT4E2M1: 2 exponent bits, 1 mantissa bit, largest 6, no infinities and no NaN.
    F4E2M1,
    I64,
    I32,
    I16,
    I8,
    /// 4-bit and 2-bit integers: one element per value in memory, packed (low bits first) in
    /// ONNX payloads, as ONNX packs them.
    I4,
    I2,
    U64,
    U32,
    U16,
    U8,
    U4,
    U2,
    Bool,
}

impl DType {
    pub const ALL: [DType; 22] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::F8E4M3Fnuz,
        DType::F8E5M2Fnuz,
        DType::F4E2M1,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::I4,
        DType::I2,
        DType::U64,
        DType::U32,
        DType::U16,
        DType::U8,
        DType::U4,
        DType::U2,
        DType::Bool,
    ];

    /// The builtin MLIR type spelling (`f8E4M3FN` is the OCP FP8 format without infinities).
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8E4M3FN",
            DType::F8E5M2 => "f8E5M2",
            DType::F8E4M3Fnuz => "f8E4M3FNUZ",
            DType::F8E5M2Fnuz => "f8E5M2FNUZ",
            DType::F4E2M1 => "f4E2M1FN",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::I4 => "i4",
            DType::I2 => "i2",
            // MLIR's unsigned integer types (`ui8`), distinct from the signless `i8`.
            DType::U64 => "ui64",
            DType::U32 => "ui32",
            DType::U16 => "ui16",
            DType::U8 => "ui8",
            DType::U4 => "ui4",
            DType::U2 => "ui2",
            DType::Bool => "i1",
        }
    }

    pub fn from_mlir_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.mlir_name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64
                | DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::F8E5M2
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F4E2M1
        )
    }

    pub fn is_int(self) -> bool {
        self.int_range().is_some() && self != DType::Bool
    }

    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U64 | DType::U32 | DType::U16 | DType::U8 | DType::U4 | DType::U2)
    }

    /// Bits of one element as formats store it (4 and 2 for the packed types).
    pub fn bits(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 16,
            DType::F8E4M3
            | DType::F8E5M2
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz
            | DType::I8
            | DType::U8
            | DType::Bool => 8,
            DType::F4E2M1 | DType::I4 | DType::U4 => 4,
            DType::I2 | DType::U2 => 2,
        }
    }

    /// Storage size of one element in bytes (bool counts as one byte, as in `.npy`; the 4- and
    /// 2-bit types take one byte each in memory, and are packed only in ONNX payloads, see
    /// [`DType::packed_bytes`]).
    pub fn size_bytes(self) -> usize {
        self.bits().div_ceil(8)
    }

    /// Bytes of `count` elements packed as ONNX packs them (sub-byte types share bytes).
    pub fn packed_bytes(self, count: usize) -> Option<usize> {
        count.checked_mul(self.bits()).map(|b| b.div_ceil(8))
    }

    /// The smallest and largest value of an integer or boolean dtype (u64's upper half is held
    /// as negative `i64`, two's complement, so its range is that of `i64`).
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DType::I64 | DType::U64 => (i64::MIN, i64::MAX),
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            DType::I16 => (i16::MIN as i64, i16::MAX as i64),
            DType::I8 => (i8::MIN as i64, i8::MAX as i64),
            DType::I4 => (-8, 7),
            DType::I2 => (-2, 1),
            DType::U32 => (0, u32::MAX as i64),
            DType::U16 => (0, u16::MAX as i64),
            DType::U8 => (0, u8::MAX as i64),
            DType::U4 => (0, 15),
            DType::U2 => (0, 3),
            DType::Bool => (0, 1),
            _ => return None,
        })
    }

    /// The largest finite value of a float dtype.
    pub fn max_finite(self) -> Option<f64> {
        Some(match self {
            DType::F64 => f64::MAX,
            DType::F32 => f32::MAX as f64,
            DType::F16 => 65504.0,
            DType::BF16 => half::bf16::MAX.to_f64(),
            DType::F8E4M3 => 448.0,
            DType::F8E5M2 | DType::F8E5M2Fnuz => 57344.0,
            DType::F8E4M3Fnuz => 240.0,
            DType::F4E2M1 => 6.0,
            _ => return None,
        })
    }

    /// Integer value `x` as an `f64` (u64's upper half, held as negative `i64`, read back as
    /// unsigned).
    pub fn int_to_f64(self, x: i64) -> f64 {
        if self == DType::U64 {
            x as u64 as f64
        } else {
            x as f64
        }
    }

    /// A float converted to this integer dtype as ONNX's reference (NumPy `astype`, ml_dtypes
    /// for the 4- and 2-bit types) converts it: truncated toward zero, then wrapped to the
    /// dtype's width; NaN and infinities give 0. The 4- and 2-bit types give 0 for values out
    /// of their range instead of wrapping. Bool is `x != 0`.
    pub fn int_from_f64(self, x: f64) -> i64 {
        if self == DType::Bool {
            return (x != 0.0) as i64;
        }
        if !x.is_finite() {
            return 0;
        }
        let t = x.trunc();
        match self {
            DType::I4 | DType::I2 | DType::U4 | DType::U2 => {
                let (lo, hi) = self.int_range().unwrap_or((0, 0));
                if t < lo as f64 || t > hi as f64 {
                    0
                } else {
                    t as i64
                }
            }
            DType::U64 => {
                if t < 0.0 {
                    self.wrap_int(t as i64)
                } else {
                    t as u64 as i64
                }
            }
            _ => self.wrap_int(t as i64),
        }
    }

    /// Rounds `x` to the nearest value representable in this float dtype (round half to even).
    /// Integer dtypes are left to [`DType::wrap_int`].
    pub fn round_float(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => x as f32 as f64,
            // Through f32 rounded to odd, then half's f32 conversion (ties to even): correct for
            // every f64, since f32 keeps more than two bits beyond either format. half 2.7's own
            // `from_f64` ignores the bits below the rounding bit, so 250.50004577 became bf16
            // 250 instead of 251 (the codegen proptest of casts caught it).
            DType::F16 => half::f16::from_f32(f32_rounded_to_odd(x)).to_f64(),
            DType::BF16 => half::bf16::from_f32(f32_rounded_to_odd(x)).to_f64(),
            // E4M3FN: 3 mantissa bits, min normal exponent -6, max 448, no infinity (overflow is NaN).
            DType::F8E4M3 => round_small_float(x, 3, -6, 448.0, false),
            // E5M2: 2 mantissa bits, min normal exponent -14, max 57344, IEEE infinities.
            DType::F8E5M2 => round_small_float(x, 2, -14, 57344.0, true),
            // The FNUZ formats have no negative zero: -0 (and negative values rounding to 0)
            // become +0.
            DType::F8E4M3Fnuz => round_small_float(x, 3, -7, 240.0, false) + 0.0,
            DType::F8E5M2Fnuz => round_small_float(x, 2, -15, 57344.0, false) + 0.0,
            // E2M1 has neither infinity nor NaN: out-of-range values saturate, as ONNX's Cast
            // specifies for it; NaN has no encoding, and ONNX's reference (ml_dtypes) writes it as
            // the bit pattern of -0.
            DType::F4E2M1 => {
                if x.is_nan() {
                    -0.0
                } else {
                    round_small_float(x.clamp(-6.0, 6.0), 1, 0, 6.0, false)
                }
            }
            _ => x,
        }
    }

    /// Rounds `x` to this float dtype with ONNX's float8 saturation: finite values beyond the
    /// largest and infinities become the largest finite value of the sign (NaN stays NaN). For
    /// formats with infinities (`f8E5M2`) an infinite `x` stays infinite only when not saturating.
    pub fn round_float_saturating(self, x: f64) -> f64 {
        match self.max_finite() {
            Some(max)
                if !x.is_nan()
                    && matches!(self, DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz) =>
            {
                self.round_float(x.clamp(-max, max))
            }
            _ => self.round_float(x),
        }
    }

    /// Wraps an integer to this integer dtype the way two's complement hardware does; bool is
    /// `x != 0`.
    pub fn wrap_int(self, x: i64) -> i64 {
        match self {
            DType::I32 => x as i32 as i64,
            DType::I16 => x as i16 as i64,
            DType::I8 => x as i8 as i64,
            // Sign-extend the low 4 or 2 bits.
            DType::I4 => (x << 60) >> 60,
            DType::I2 => (x << 62) >> 62,
            DType::U32 => x as u32 as i64,
            DType::U16 => x as u16 as i64,
            DType::U8 => x as u8 as i64,
            DType::U4 => x & 0xf,
            DType::U2 => x & 0x3,
            DType::Bool => (x != 0) as i64,
            _ => x,
        }
    }
}

impl DType {
    /// The value of the bit pattern `bits` (in the low [`DType::bits`] bits) of a float dtype;
    /// `None` for integer dtypes.
    pub fn float_from_bits(self, bits: u64) -> Option<f64> {
        Some(match self {
            DType::F64 => f64::from_bits(bits),
            DType::F32 => f64::from(f32::from_bits(bits as u32)),
            DType::F16 => half::f16::from_bits(bits as u16).to_f64(),
            DType::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
            DType::F8E4M3 => decode_small_float(bits as u8, 4, 3, 7, Specials::AllOnesNan),
            DType::F8E5M2 => decode_small_float(bits as u8, 5, 2, 15, Specials::Ieee),
            DType::F8E4M3Fnuz => decode_small_float(bits as u8, 4, 3, 8, Specials::NegativeZeroNan),
            DType::F8E5M2Fnuz => decode_small_float(bits as u8, 5, 2, 16, Specials::NegativeZeroNan),
            DType::F4E2M1 => decode_small_float(bits as u8 & 0xf, 2, 1, 1, Specials::None),
            _ => return None,
        })
    }

    /// The bit pattern of `x` (already representable) in a float dtype; NaN gives the format's
    /// NaN of the same sign (F4E2M1, without NaN, gives -0's pattern, as ml_dtypes does), an
    /// unrepresentable value the pattern of 0. `None` for integer dtypes.
    pub fn float_to_bits(self, x: f64) -> Option<u64> {
        Some(match self {
            DType::F64 => x.to_bits(),
            DType::F32 => u64::from((x as f32).to_bits()),
            DType::F16 => u64::from(half::f16::from_f64(x).to_bits()),
            DType::BF16 => u64::from(half::bf16::from_f64(x).to_bits()),
            DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F4E2M1 => {
                let codes = 1u64 << self.bits();
                let decode = |b: u64| self.float_from_bits(b).unwrap_or(0.0);
                let same = |y: f64| {
                    if x.is_nan() {
                        y.is_nan() && y.is_sign_negative() == x.is_sign_negative()
                    } else {
                        y == x && y.is_sign_negative() == x.is_sign_negative()
                    }
                };
                (0..codes)
                    .find(|&b| same(decode(b)))
                    .or_else(|| {
                        (0..codes).find(|&b| decode(b).is_nan() == x.is_nan() && (x.is_nan() || decode(b) == x))
                    })
                    .unwrap_or(if self == DType::F4E2M1 && x.is_nan() { 0x8 } else { 0 })
            }
            _ => return None,
        })
    }
}

/// Which bit patterns of a small float format are special.
#[derive(Clone, Copy, PartialEq)]
enum Specials {
    /// IEEE: the top exponent holds infinities (mantissa 0) and NaNs.
    Ieee,
    /// OCP `FN` formats: only the all-ones exponent and mantissa is NaN (either sign).
    AllOnesNan,
    /// `FNUZ` formats: the negative-zero pattern `0x80` is the single NaN.
    NegativeZeroNan,
    /// No specials at all (FLOAT4E2M1).
    None,
}

/// Decodes a small float with `exp_bits`, `mantissa_bits` and exponent `bias`.
fn decode_small_float(b: u8, exp_bits: u32, mantissa_bits: u32, bias: i32, specials: Specials) -> f64 {
    let width = 1 + exp_bits + mantissa_bits;
    let sign_bit = 1u8 << (width - 1);
    let negative = b & sign_bit != 0;
    let max_exp = (1u8 << exp_bits) - 1;
    let exp = (b >> mantissa_bits) & max_exp;
    let mant_mask = (1u8 << mantissa_bits) - 1;
    let mant = b & mant_mask;
    // Negation (not multiplication) sets a NaN's sign bit reliably.
    let nan = if negative { -f64::NAN } else { f64::NAN };
    match specials {
        Specials::Ieee if exp == max_exp => {
            return if mant == 0 { f64::INFINITY.copysign(if negative { -1.0 } else { 1.0 }) } else { nan }
        }
        Specials::AllOnesNan if exp == max_exp && mant == mant_mask => return nan,
        Specials::NegativeZeroNan if b == sign_bit => return f64::NAN,
        _ => {}
    }
    let sign = if negative { -1.0 } else { 1.0 };
    let scale = f64::from(1u32 << mantissa_bits);
    if exp == 0 {
        return sign * f64::from(mant) / scale * 2f64.powi(1 - bias);
    }
    sign * (1.0 + f64::from(mant) / scale) * 2f64.powi(i32::from(exp) - bias)
}

/// `x` as an f32 rounded to odd: exact values stay, an inexact one becomes the f32 next to it
/// toward zero with its lowest mantissa bit set. Rounding that to a format with at least two
/// fewer mantissa bits (f16, bf16) gives the correctly rounded result, with no double-rounding
/// error.
fn f32_rounded_to_odd(x: f64) -> f32 {
    let nearest = x as f32;
    if nearest.is_nan() || nearest.is_infinite() || nearest as f64 == x {
        return nearest;
    }
    let mut bits = nearest.to_bits();
    if (nearest as f64).abs() > x.abs() {
        // Rounded away from zero: the f32 one step toward zero is the truncation.
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// Round to a binary float format with `mantissa_bits` explicit bits, normal exponents from
/// `min_exp`, and largest finite `max_finite`; subnormals are kept, overflow gives infinity or NaN.
fn round_small_float(x: f64, mantissa_bits: i32, min_exp: i32, max_finite: f64, has_inf: bool) -> f64 {
    if !x.is_finite() {
        return if has_inf || x.is_nan() { x } else { f64::NAN };
    }
    if x == 0.0 {
        return x;
    }
    let exp = x.abs().log2().floor() as i32;
    let exp = exp.max(min_exp);
    let quantum = 2f64.powi(exp - mantissa_bits);
    let rounded = (x / quantum).round_ties_even() * quantum;
    if rounded.abs() > max_finite {
        if has_inf {
            // IEEE: values beyond max + half an ulp round to infinity.
            let half_ulp = 2f64.powi(max_finite.log2().floor() as i32 - mantissa_bits - 1);
            if x.abs() < max_finite + half_ulp {
                return max_finite.copysign(x);
            }
            return f64::INFINITY.copysign(x);
        }
        return f64::NAN;
    }
    rounded
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mlir_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_rounding_matches_the_format_tables() {
        assert_eq!(DType::F8E4M3.round_float(448.0), 448.0);
        assert!(DType::F8E4M3.round_float(500.0).is_nan());
        assert_eq!(DType::F8E4M3.round_float(1.0625), 1.0); // tie to even
        assert_eq!(DType::F8E4M3.round_float(1.1), 1.125);
        assert_eq!(DType::F8E4M3.round_float(2f64.powi(-9)), 2f64.powi(-9)); // smallest subnormal
        assert_eq!(DType::F8E5M2.round_float(1.3), 1.25);
        assert_eq!(DType::F8E5M2.round_float(1e6), f64::INFINITY);
        assert_eq!(DType::F8E5M2.round_float(57344.0), 57344.0);
        assert_eq!(DType::BF16.round_float(1.0 + 1.0 / 256.0), 1.0);
        // Just above a tie rounds up: the bits below the rounding bit count.
        assert_eq!(DType::BF16.round_float(-(250.5 + 3.0 / 65536.0)), -251.0);
        assert_eq!(DType::BF16.round_float(250.5), 250.0);
        assert_eq!(DType::BF16.round_float(251.5), 252.0);
        assert_eq!(DType::F16.round_float(2049.0 + 1e-9), 2050.0);
        assert_eq!(DType::F16.round_float(2049.0), 2048.0);
        assert_eq!(DType::BF16.round_float(1e300), f64::INFINITY);
        assert_eq!(DType::F16.round_float(-1e-30), -0.0);
        assert_eq!(DType::I8.wrap_int(130), -126);
    }
}
