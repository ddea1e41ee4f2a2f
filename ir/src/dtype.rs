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
    I64,
    I32,
    I8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I64,
        DType::I32,
        DType::I8,
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
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::Bool => "i1",
        }
    }

    pub fn from_mlir_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.mlir_name() == name)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8)
    }

    /// Storage size of one element in bytes (bool counts as one byte, as in `.npy`).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::Bool => 1,
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
            DType::I64 | DType::I32 | DType::I8 | DType::Bool => x,
        }
    }

    /// Wraps an integer to this integer dtype the way two's complement hardware does; bool is
    /// `x != 0`.
    pub fn wrap_int(self, x: i64) -> i64 {
        match self {
            DType::I32 => x as i32 as i64,
            DType::I8 => x as i8 as i64,
            DType::Bool => (x != 0) as i64,
            _ => x,
        }
    }
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
