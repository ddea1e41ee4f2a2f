//! The printer: a graph as one MLIR `func.func` with every tsr op in generic form.
//!
//! The output is deterministic and canonical (attributes sorted, floats in their shortest
//! round-tripping decimal), so `print(parse(print(g))) == print(g)` byte for byte. Shape:
//!
//! ```text
//! func.func @mlp(%x: tensor<8x16xf32>, %w: tensor<16x32xf32> {tsr.param}) -> (tensor<8x32xf32>) {
//!   %y = "tsr.matmul"(%x, %w) : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
//!   return %y : tensor<8x32xf32>
//! }
//! ```

use crate::dtype::DType;
use crate::graph::{Graph, InputRole, ValueId};
use crate::ops::attr::Attr;
use crate::tensor::{Buffer, Tensor};
use crate::types::{Dim, TensorType};
use std::fmt::Write;

/// Prints `g` as one MLIR `func.func` (no surrounding `module`; MLIR adds it implicitly).
pub fn print_graph(g: &Graph) -> String {
    let mut out = String::new();
    out.push_str("func.func @");
    out.push_str(&symbol_name(&g.name));
    out.push('(');
    for (i, &v) in g.inputs().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let value = g.value(v);
        out.push('%');
        out.push_str(&value.name);
        out.push_str(": ");
        write_type(&mut out, &value.ty);
        let param = g.input_role(v) == Some(InputRole::Parameter);
        let sharding = g.io_shardings().and_then(|io| io.input(&value.name));
        match (param, sharding) {
            (false, None) => {}
            (true, None) => out.push_str(" {tsr.param}"),
            (false, Some(s)) => {
                let _ = write!(out, " {{tsr.sharding = \"{s}\"}}");
            }
            (true, Some(s)) => {
                let _ = write!(out, " {{tsr.param, tsr.sharding = \"{s}\"}}");
            }
        }
    }
    out.push_str(") -> (");
    match g.io_shardings() {
        None => write_type_list(&mut out, g, g.outputs()),
        Some(io) => {
            for (i, &v) in g.outputs().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_type(&mut out, &g.value(v).ty);
                if let Some(s) = io.output(i) {
                    let _ = write!(out, " {{tsr.sharding = \"{s}\"}}");
                }
            }
        }
    }
    out.push(')');
    if let Some(io) = g.io_shardings() {
        let _ = write!(out, " attributes {{tsr.mesh = \"{}\"}}", io.mesh);
    }
    out.push_str(" {\n");
    write_nodes(&mut out, g, "  ");
    out.push_str("  return");
    if !g.outputs().is_empty() {
        out.push(' ');
        write_value_list(&mut out, g, g.outputs());
        out.push_str(" : ");
        write_type_list(&mut out, g, g.outputs());
    }
    out.push_str("\n}\n");
    out
}

/// A region in MLIR's generic form: its entry block's arguments, its ops one indent deeper,
/// and `"tsr.yield"` of its outputs. `indent` is the indentation of the op holding it.
fn write_region(out: &mut String, g: &Graph, indent: &str) {
    out.push_str("{\n");
    if !g.inputs().is_empty() {
        out.push_str(indent);
        out.push_str("^bb0(");
        for (i, &v) in g.inputs().iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('%');
            out.push_str(&g.value(v).name);
            out.push_str(": ");
            write_type(out, &g.value(v).ty);
        }
        out.push_str("):\n");
    }
    let inner = format!("{indent}  ");
    write_nodes(out, g, &inner);
    out.push_str(&inner);
    out.push_str("\"tsr.yield\"(");
    write_value_list(out, g, g.outputs());
    out.push_str(") : (");
    write_type_list(out, g, g.outputs());
    out.push_str(") -> ()\n");
    out.push_str(indent);
    out.push('}');
}

/// The ops of `g`, one a line at `indent`, with the fusion-group comments.
fn write_nodes(out: &mut String, g: &Graph, indent: &str) {
    let mut previous_group = None;
    for (id, node) in g.nodes() {
        let tag = g.fusion_tag(id);
        if let Some(tag) = tag.filter(|t| previous_group != Some(t.group)) {
            // Members are contiguous (the `fuse` pass orders them so); count this run.
            let members = g.nodes().skip(id.index()).take_while(|(m, _)| g.fusion_tag(*m) == Some(tag)).count();
            out.push_str(indent);
            out.push_str(&crate::fusion::group_comment(tag, members));
            out.push('\n');
        }
        previous_group = tag.map(|t| t.group);
        out.push_str(indent);
        if !node.outputs.is_empty() {
            write_value_list(out, g, &node.outputs);
            out.push_str(" = ");
        }
        out.push_str("\"tsr.");
        out.push_str(node.op.mnemonic());
        out.push_str("\"(");
        write_value_list(out, g, &node.inputs);
        out.push(')');
        let regions = match &node.op {
            crate::ops::Op::If(regions) => Some(regions.branches()),
            crate::ops::Op::Loop(regions) => Some(regions.regions()),
            _ => None,
        };
        if let Some(regions) = regions {
            out.push_str(" (");
            for (i, (_, branch)) in regions.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_region(out, branch, indent);
            }
            out.push(')');
        }
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            out.push_str(" {");
            for (i, (name, attr)) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(name);
                out.push_str(" = ");
                write_attr(out, attr);
            }
            out.push('}');
        }
        out.push_str(" : (");
        write_type_list(out, g, &node.inputs);
        out.push_str(") -> ");
        // MLIR's functional type: a single result type stands alone, others are parenthesized.
        if let [v] = node.outputs.as_slice() {
            write_type(out, &g.value(*v).ty);
        } else {
            out.push('(');
            write_type_list(out, g, &node.outputs);
            out.push(')');
        }
        out.push('\n');
    }
}

/// A symbol as MLIR spells it: bare when it is a valid bare identifier, else a quoted string.
fn symbol_name(name: &str) -> String {
    let mut chars = name.chars();
    let bare = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c));
    if bare {
        name.to_string()
    } else {
        let mut s = String::new();
        write_string(&mut s, name);
        s
    }
}

fn write_value_list(out: &mut String, g: &Graph, values: &[ValueId]) {
    for (i, &v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('%');
        out.push_str(&g.value(v).name);
    }
}

fn write_type_list(out: &mut String, g: &Graph, values: &[ValueId]) {
    for (i, &v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_type(out, &g.value(v).ty);
    }
}

/// The builtin tensor type. Same spelling as `TensorType`'s `Display`, except that symbol
/// names are escaped, so an odd name still prints as text the parser reads back.
pub(crate) fn write_type(out: &mut String, ty: &TensorType) {
    out.push_str("tensor<");
    for d in &ty.dims {
        match d {
            Dim::Static(n) => {
                let _ = write!(out, "{n}x");
            }
            Dim::Symbolic(_) => out.push_str("?x"),
        }
    }
    out.push_str(ty.dtype.mlir_name());
    let mut first = true;
    for d in &ty.dims {
        if let Dim::Symbolic(e) = d {
            out.push_str(if first { ", [" } else { ", " });
            first = false;
            write_string(out, &e.to_string());
        }
    }
    if !first {
        out.push(']');
    }
    out.push('>');
}

/// A string literal with MLIR's escapes: `\"`, `\\`, and `\XX` for other control bytes.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_attr(out: &mut String, attr: &Attr) {
    match attr {
        Attr::Int(v) => {
            let _ = write!(out, "{v} : i64");
        }
        Attr::Float(v) => {
            out.push_str(&format_float(*v, DType::F64));
            out.push_str(" : f64");
        }
        Attr::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Attr::Str(s) => write_string(out, s),
        Attr::Ints(v) if v.is_empty() => out.push_str("array<i64>"),
        Attr::Ints(v) => {
            out.push_str("array<i64: ");
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{x}");
            }
            out.push('>');
        }
        Attr::Dense(t) => write_dense(out, t),
    }
}

/// Constants with more elements than this print as MLIR's hex data, `dense<"0x...">`, which
/// re-reads fast and exactly; smaller ones keep the readable nested lists.
pub const HEX_DENSE_MIN_ELEMENTS: usize = 1024;

/// A tensor's `dense<...> : tensor<...>` literal, as the tsr printer writes it (for other MLIR
/// writers: the StableHLO exporter).
pub fn dense_literal(t: &Tensor) -> String {
    let mut out = String::new();
    write_dense(&mut out, t);
    out
}

/// `dense<...> : tensor<...>`: a splat when every element has the same bits, `dense<>` when
/// empty, hex data when large (see [`HEX_DENSE_MIN_ELEMENTS`]), else lists nested by shape.
fn write_dense(out: &mut String, t: &Tensor) {
    if t.len() > HEX_DENSE_MIN_ELEMENTS && write_dense_hex(out, t) {
        return;
    }
    let elems: Vec<String> = (0..t.len()).map(|i| format_element(t, i)).collect();
    out.push_str("dense<");
    match elems.split_first() {
        None => {}
        // Equal spellings are equal bits: the spelling of an element is a function of its bits.
        Some((first, rest)) if rest.iter().all(|e| e == first) => out.push_str(first),
        Some(_) => {
            let count: Option<usize> = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if count == Some(elems.len()) {
                write_nested(out, &elems, &t.shape);
            } else {
                // A tensor whose data disagrees with its shape: print it flat; the parser will
                // report the count mismatch instead of the printer panicking.
                write_nested(out, &elems, &[elems.len()]);
            }
        }
    }
    out.push_str("> : ");
    write_type(out, &t.tensor_type());
}

/// The little-endian bytes of element `i` of `t`, for the dtypes with an exact hex form (fp8
/// and booleans keep the list form).
fn element_bits(t: &Tensor, i: usize) -> Option<u64> {
    let bits = match t.dtype {
        DType::F64 => t.get_f64(i).to_bits(),
        DType::F32 => u64::from((t.get_f64(i) as f32).to_bits()),
        // 2-byte storage prints its own bits (NaN payloads included).
        DType::F16 | DType::BF16 => match &t.data {
            Buffer::F16(v) => u64::from(v[i].to_bits()),
            Buffer::BF16(v) => u64::from(v[i].to_bits()),
            _ if t.dtype == DType::F16 => u64::from(half::f16::from_f64(t.get_f64(i)).to_bits()),
            _ => u64::from(half::bf16::from_f64(t.get_f64(i)).to_bits()),
        },
        d if d.is_int() => t.get_i64(i) as u64,
        // Small floats and booleans keep the list form.
        _ => return None,
    };
    Some(bits)
}

/// Writes `dense<"0xHEX"> : type` (raw little-endian elements, as MLIR prints large constants)
/// and returns true, or writes nothing and returns false when `t` is a splat, malformed or of
/// a dtype without a hex form.
fn write_dense_hex(out: &mut String, t: &Tensor) -> bool {
    let count: Option<usize> = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(first) = element_bits(t, 0) else { return false };
    if count != Some(t.len()) || (1..t.len()).all(|i| element_bits(t, i) == Some(first)) {
        return false;
    }
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let size = t.dtype.size_bytes();
    out.reserve(t.len() * size * 2 + 32);
    out.push_str("dense<\"0x");
    for i in 0..t.len() {
        let bits = element_bits(t, i).unwrap_or(0);
        for byte in bits.to_le_bytes().iter().take(size) {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0xF)]));
        }
    }
    out.push_str("\"> : ");
    write_type(out, &t.tensor_type());
    true
}

fn write_nested(out: &mut String, elems: &[String], shape: &[usize]) {
    match shape.split_first() {
        None => {
            if let Some(e) = elems.first() {
                out.push_str(e);
            }
        }
        Some((&n, inner)) => {
            out.push('[');
            let chunk = elems.len().checked_div(n).unwrap_or(0);
            for i in 0..n {
                if i > 0 {
                    out.push_str(", ");
                }
                let part = elems.get(i * chunk..(i + 1) * chunk).unwrap_or(&[]);
                write_nested(out, part, inner);
            }
            out.push(']');
        }
    }
}

fn format_element(t: &Tensor, i: usize) -> String {
    if t.dtype.is_float() {
        format_float(t.get_f64(i), t.dtype)
    } else if t.dtype == DType::Bool {
        (if t.get_i64(i) != 0 { "true" } else { "false" }).to_string()
    } else if t.dtype == DType::U64 {
        // u64's upper half is held as negative i64 (two's complement).
        (t.get_i64(i) as u64).to_string()
    } else {
        t.get_i64(i).to_string()
    }
}

/// A float of `dtype` as MLIR reads it back exactly: the shortest decimal that rounds to the
/// same value in `dtype` (for 16- and 8-bit floats, the exact value when that is nearly as
/// short), always with a `.` as MLIR requires of float literals; or the dtype's bit pattern in
/// hex for infinities and NaN, which have no decimal spelling.
pub fn format_float(x: f64, dtype: DType) -> String {
    if !x.is_finite() {
        return format_hex_float(x, dtype);
    }
    let sci = match dtype {
        // Rust's `{:e}` is already the shortest round-trip form for f64 and f32.
        DType::F64 => format!("{x:e}"),
        DType::F32 => format!("{:e}", x as f32),
        // 16- and 8-bit floats: the shortest decimal that rounds back to `x` can look wrong
        // (`1.2` for E5M2's 1.25, `450.0` for E4M3's 448), so the exact value wins while it is
        // at most two digits longer (`0.1` still stands for f16's 0.0999755859375).
        _ => {
            let exact = format!("{x:e}");
            let shortest = (0..17)
                .map(|digits| format!("{x:.digits$e}"))
                .find(|s| s.parse::<f64>().is_ok_and(|y| dtype.round_float(y) == x))
                .unwrap_or_else(|| exact.clone());
            if significant_digits(&exact) <= significant_digits(&shortest) + 2 {
                exact
            } else {
                shortest
            }
        }
    };
    decimal_from_scientific(&sci)
}

fn significant_digits(sci: &str) -> usize {
    let mantissa = sci.split('e').next().unwrap_or(sci);
    mantissa.chars().filter(char::is_ascii_digit).count()
}

/// Rewrites Rust's `{:e}` output (`-1.25e-7`) in the shorter of two layouts, plain
/// (`0.25`, `1234.0`) or scientific with a signed two-digit exponent (`1.25e-07`, `-1.0e+09`),
/// preferring scientific on a tie (`1.0e-05` over `0.00001`); both always have a `.`.
fn decimal_from_scientific(sci: &str) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };

    let (first, rest) = digits.split_at(1);
    let rest = if rest.is_empty() { "0" } else { rest };
    let exp_sign = if exp < 0 { '-' } else { '+' };
    let scientific = format!("{sign}{first}.{rest}e{exp_sign}{:02}", exp.unsigned_abs());
    if digits == "0" {
        return format!("{sign}0.0");
    }

    let point = exp + 1; // digits before the decimal point
    let plain = if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else {
        let point = point as usize;
        if digits.len() <= point {
            let zeros = "0".repeat(point - digits.len());
            format!("{sign}{digits}{zeros}.0")
        } else {
            let (int, frac) = digits.split_at(point);
            format!("{sign}{int}.{frac}")
        }
    };
    if plain.len() < scientific.len() {
        plain
    } else {
        scientific
    }
}

/// The bit pattern of a non-finite value in `dtype`, as MLIR's hex float literal.
fn format_hex_float(x: f64, dtype: DType) -> String {
    let neg = x.is_sign_negative();
    match dtype {
        DType::F64 => format!("0x{:016X}", x.to_bits()),
        DType::F32 => format!("0x{:08X}", (x as f32).to_bits()),
        DType::F16 => format!("0x{:04X}", half::f16::from_f64(x).to_bits()),
        DType::BF16 => format!("0x{:04X}", half::bf16::from_f64(x).to_bits()),
        // E4M3FN has no infinities: everything non-finite is its single NaN encoding.
        DType::F8E4M3 => format!("0x{:02X}", if neg { 0xFF } else { 0x7F }),
        DType::F8E5M2 => {
            let bits = if x.is_nan() { 0x7E } else { 0x7C };
            format!("0x{:02X}", bits | if neg { 0x80 } else { 0 })
        }
        DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F4E2M1 => {
            format!("0x{:02X}", dtype.float_to_bits(x).unwrap_or(0))
        }
        // Not a float dtype; no caller asks, but print something readable.
        _ => format!("{x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_mlir_decimals() {
        let cases = [
            (1.0, "1.0"),
            (2.5, "2.5"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e-5, "1.0e-05"),
            (0.0001, "0.0001"),
            (123456.75, "123456.75"),
            (-1e9, "-1.0e+09"),
            (1234567.0, "1234567.0"),
            (1e6, "1.0e+06"),
            (65504.0, "65504.0"),
            (1e16, "1.0e+16"),
            (1.5e300, "1.5e+300"),
            (-3.25e-7, "-3.25e-07"),
        ];
        for (x, want) in cases {
            assert_eq!(format_float(x, DType::F64), want, "{x}");
        }
        assert_eq!(format_float(0.1f32 as f64, DType::F32), "0.1");
        assert_eq!(format_float(DType::F16.round_float(0.1), DType::F16), "0.1");
        assert_eq!(format_float(DType::BF16.round_float(3.3), DType::BF16), "3.3");
    }

    #[test]
    fn non_finite_floats_print_as_bit_patterns() {
        assert_eq!(format_float(f64::NAN, DType::F32), "0x7FC00000");
        assert_eq!(format_float(f64::INFINITY, DType::F32), "0x7F800000");
        assert_eq!(format_float(f64::NEG_INFINITY, DType::F64), "0xFFF0000000000000");
        assert_eq!(format_float(f64::INFINITY, DType::F16), "0x7C00");
        assert_eq!(format_float(f64::NAN, DType::BF16), "0x7FC0");
        assert_eq!(format_float(f64::NAN, DType::F8E4M3), "0x7F");
        assert_eq!(format_float(f64::NEG_INFINITY, DType::F8E5M2), "0xFC");
    }
}
