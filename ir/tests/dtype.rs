//! Element type rounding and bit codecs against NumPy/ml_dtypes (a table written by
//! `scripts/dtype-table.py`), and property tests: every value a narrow float dtype rounds to
//! survives its bit pattern, and integer wrapping stays in each dtype's range.

use proptest::prelude::*;
use tessera_ir::dtype::DType;

const TABLE: &str = include_str!("data/dtype-rounding.tsv");

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a == b && a.is_sign_negative() == b.is_sign_negative())
}

#[test]
fn narrow_types_round_as_ml_dtypes_does() {
    let mut lines = TABLE.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').skip(1).collect();
    let dtypes: Vec<DType> = header.iter().map(|n| DType::from_mlir_name(n).unwrap_or(DType::F64)).collect();
    assert_eq!(dtypes.len(), 9, "the table's header names nine dtypes: {header:?}");
    let mut checked = 0;
    for line in lines {
        let cells: Vec<&str> = line.split('\t').collect();
        let bits = |s: &str| u32::from_str_radix(s, 16).map(f32::from_bits).map(f64::from);
        let Ok(x) = bits(cells[0]) else { panic!("bad input cell in '{line}'") };
        for (d, cell) in dtypes.iter().zip(&cells[1..]) {
            if *cell == "-" {
                continue;
            }
            let Ok(want) = bits(cell) else { panic!("bad cell in '{line}'") };
            let got = if d.is_float() { d.round_float(x) } else { d.int_from_f64(x) as f64 };
            // -0 of a signed integer is 0.
            assert!(
                same(got, want) || (!d.is_float() && got == want),
                "{d} of {x:e}: got {got:e}, ml_dtypes gives {want:e}"
            );
            checked += 1;
        }
    }
    assert!(checked > 1500, "only {checked} table cells checked");
}

#[test]
fn saturating_float8_casts_clamp_to_the_largest_finite_value() {
    assert_eq!(DType::F8E4M3Fnuz.round_float_saturating(1e6), 240.0);
    assert_eq!(DType::F8E4M3Fnuz.round_float_saturating(f64::NEG_INFINITY), -240.0);
    assert!(DType::F8E4M3Fnuz.round_float(1e6).is_nan());
    assert_eq!(DType::F8E5M2.round_float_saturating(f64::INFINITY), 57344.0);
    assert!(DType::F8E5M2Fnuz.round_float_saturating(f64::NAN).is_nan());
    // FNUZ formats have no negative zero.
    assert!(DType::F8E5M2Fnuz.round_float(-1e-30).is_sign_positive());
}

/// The float types of 8 bits or fewer: small enough to check every bit pattern.
fn small_floats() -> impl Iterator<Item = DType> {
    DType::ALL.into_iter().filter(|d| d.is_float() && d.bits() <= 8)
}

/// Every integer type (signed and unsigned, packed ones included; not bool).
fn ints() -> impl Iterator<Item = DType> {
    DType::ALL.into_iter().filter(|d| d.is_int())
}

#[test]
fn the_filtered_lists_hold_the_types_the_tests_mean() {
    let small: Vec<DType> = small_floats().collect();
    assert_eq!(small, [DType::F8E4M3, DType::F8E5M2, DType::F8E4M3Fnuz, DType::F8E5M2Fnuz, DType::F4E2M1]);
    let ints: Vec<DType> = ints().collect();
    assert_eq!(ints.len(), 12, "{ints:?}");
    assert!(ints.contains(&DType::U2) && !ints.contains(&DType::Bool), "{ints:?}");
}

#[test]
fn every_bit_pattern_of_a_small_float_decodes_and_encodes_back() {
    for d in small_floats() {
        for bits in 0..1u64 << d.bits() {
            let Some(x) = d.float_from_bits(bits) else { panic!("{d} is a float") };
            let back = d.float_to_bits(x).and_then(|b| d.float_from_bits(b));
            assert!(back.is_some_and(|y| same(x, y)), "{d}: 0x{bits:02x} decodes to {x}, which does not encode back");
            if !x.is_nan() {
                assert!(same(d.round_float(x), x), "{d}: {x} is representable, so rounding keeps it");
            }
        }
    }
}

proptest! {
    #[test]
    fn rounded_small_floats_survive_their_bits(x in prop::num::f64::ANY) {
        for d in small_floats() {
            let r = d.round_float(x);
            let back = d.float_to_bits(r).and_then(|b| d.float_from_bits(b));
            prop_assert!(back.is_some_and(|y| same(r, y)), "{} of {}: {} does not survive its bits", d, x, r);
            prop_assert!(same(d.round_float(r), r), "{} rounding is not idempotent at {}", d, r);
        }
    }

    #[test]
    fn wrapped_integers_stay_in_range_and_keep_the_low_bits(x in any::<i64>()) {
        for d in ints() {
            let w = d.wrap_int(x);
            let (lo, hi) = d.int_range().unwrap_or((0, 0));
            prop_assert!((lo..=hi).contains(&w), "{} wraps {} to {} outside {}..={}", d, x, w, lo, hi);
            let mask = if d.bits() == 64 { u64::MAX } else { (1u64 << d.bits()) - 1 };
            prop_assert_eq!((w as u64) & mask, (x as u64) & mask, "{} changed the low bits of {}", d, x);
            prop_assert_eq!(d.wrap_int(w), w);
        }
    }
}
