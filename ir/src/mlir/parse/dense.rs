//! The reader of dense literals, `dense<...> : tensor<...>`: nested lists of elements, splats
//! and MLIR's hex form `dense<"0x...">` (raw little-endian element data), with element
//! conversion to the declared type. Linear in the literal's size: positions are kept as byte
//! offsets and turned into line:col only for an error.

use super::lex::{hex_value, NumberKind, Tok};
use super::{PResult, ParseError, Parser};
use crate::dtype::DType;
use crate::tensor::Tensor;
use crate::types::TensorType;

/// Deeper dense-literal nesting than any tensor rank we support is an attack, not a model.
const MAX_NESTING: usize = 64;
/// A splat is expanded into memory; cap it so `dense<0.0> : tensor<9999999999xf32>` is an error
/// rather than an allocation failure. Literal lists are bounded by the text size already.
const MAX_SPLAT_ELEMENTS: usize = 1 << 26;

/// One element of a dense literal as written, converted once the element type is known: a
/// number is the byte range of its text (hex: of its digits), so reading an element allocates
/// nothing.
enum Scalar {
    Int(usize, usize),
    Float(usize, usize),
    Hex(usize, usize),
    Bool(bool),
}

/// A dense literal's nested lists.
enum DenseTree {
    /// An element and its byte offset (a `Loc` costs a scan of the line: only for errors).
    Scalar(Scalar, usize),
    List(Vec<DenseTree>),
}

impl<'a> Parser<'a> {
    /// `dense<...> : tensor<...>`, after `dense`.
    pub(super) fn parse_dense(&mut self, dense_at: usize) -> PResult<Tensor> {
        self.expect(&Tok::Less, " after 'dense'")?;
        let blob_at = self.peek_start()?;
        let blob = match self.peek()? {
            Tok::Str(s) => Some(s.clone()),
            _ => None,
        };
        let tree = if blob.is_some() {
            self.next()?;
            None
        } else if self.peek()? == &Tok::Greater {
            None
        } else {
            Some(self.parse_dense_tree(0)?)
        };
        self.expect(&Tok::Greater, " closing the dense literal")?;
        self.expect(&Tok::Colon, " before the dense literal's type")?;
        let ty_at = self.peek_start()?;
        let ty = self.parse_tensor_type()?;
        let Some(shape) = ty.static_shape() else {
            return self.err(ty_at, format!("a dense literal needs a static type, got {ty}"));
        };
        let shape: Option<Vec<usize>> = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let count = shape.as_ref().and_then(|s| s.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)));
        let (Some(shape), Some(count)) = (shape, count) else {
            return self.err(ty_at, format!("{ty} has too many elements"));
        };
        if let Some(blob) = blob {
            return self.dense_from_blob(&blob, blob_at, &ty, shape, count);
        }
        let dtype = ty.dtype;
        let mut scalars: Vec<(&Scalar, usize)> = Vec::new();
        match &tree {
            None if count == 0 => {}
            None => return self.err(dense_at, format!("dense literal has 0 elements, but {ty} has {count}")),
            Some(DenseTree::Scalar(s, at)) => {
                if count > MAX_SPLAT_ELEMENTS {
                    return self
                        .err(dense_at, format!("splat of {count} elements is too large (limit {MAX_SPLAT_ELEMENTS})"));
                }
                if count > 0 {
                    scalars.push((s, *at));
                }
            }
            Some(list) => {
                let mut literal_shape = Vec::new();
                literal_shape_of(list, &mut literal_shape);
                flatten(list, &mut scalars);
                if scalars.len() != count {
                    return self
                        .err(dense_at, format!("dense literal has {} elements, but {ty} has {count}", scalars.len()));
                }
                if !is_regular(list, &shape) {
                    return self.err(
                        dense_at,
                        format!("dense literal has shape {literal_shape:?}, but {ty} has shape {shape:?}"),
                    );
                }
            }
        }
        let splat = matches!(tree, Some(DenseTree::Scalar(..)));
        let tensor = if dtype.is_float() {
            let mut values = Vec::with_capacity(scalars.len());
            for (s, at) in scalars {
                values.push(self.float_element(s, at, dtype)?);
            }
            if splat {
                let v = values.first().copied().unwrap_or(0.0);
                values = vec![v; count];
            }
            Tensor::from_f64(dtype, shape, values)
        } else {
            let mut values = Vec::with_capacity(scalars.len());
            for (s, at) in scalars {
                values.push(self.int_element(s, at, dtype)?);
            }
            if splat {
                let v = values.first().copied().unwrap_or(0);
                values = vec![v; count];
            }
            Tensor::from_i64(dtype, shape, values)
        };
        Ok(tensor)
    }

    fn parse_dense_tree(&mut self, depth: usize) -> PResult<DenseTree> {
        // The common case, a number with no token looked ahead: read as a span of the text.
        if self.peeked.is_none() {
            self.skip_trivia();
            let start = self.pos;
            let number = match self.byte(start) {
                Some(b'0'..=b'9') => true,
                Some(b'-') => self.byte(start + 1) != Some(b'>'),
                _ => false,
            };
            if number {
                let scalar = match self.lex_number_span(start)? {
                    NumberKind::Int => Scalar::Int(start, self.pos),
                    NumberKind::Float => Scalar::Float(start, self.pos),
                    NumberKind::Hex => Scalar::Hex(start + 2, self.pos),
                };
                return Ok(DenseTree::Scalar(scalar, start));
            }
        }
        let (tok, at) = self.next()?;
        // A token's text is the exact source text at its offset (hex: after the `0x`).
        let scalar = match tok {
            Tok::LBracket => {
                if depth >= MAX_NESTING {
                    return self.err(at, format!("dense literal nested deeper than {MAX_NESTING}"));
                }
                let items = self.parse_list(Tok::RBracket, "the dense literal", |p| p.parse_dense_tree(depth + 1))?;
                return Ok(DenseTree::List(items));
            }
            Tok::Int(s) => Scalar::Int(at, at + s.len()),
            Tok::Float(s) => Scalar::Float(at, at + s.len()),
            Tok::Hex(h) => Scalar::Hex(at + 2, at + 2 + h.len()),
            Tok::Ident(s) if s == "true" => Scalar::Bool(true),
            Tok::Ident(s) if s == "false" => Scalar::Bool(false),
            other => return self.unexpected(&other, at, "a dense element"),
        };
        Ok(DenseTree::Scalar(scalar, at))
    }

    /// The source text of a number element.
    fn span(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or("")
    }

    fn float_element(&self, s: &Scalar, at: usize, dtype: DType) -> PResult<f64> {
        match *s {
            Scalar::Float(start, end) | Scalar::Int(start, end) => {
                let text = self.span(start, end);
                text.parse::<f64>()
                    .map_err(|_| ParseError::at(self.loc(at), format!("malformed float literal '{text}'")))
            }
            Scalar::Hex(start, end) => self.hex_float(self.span(start, end), dtype, at),
            Scalar::Bool(b) => Err(ParseError::at(self.loc(at), format!("expected a {dtype} element, got {b}"))),
        }
    }

    fn int_element(&self, s: &Scalar, at: usize, dtype: DType) -> PResult<i64> {
        let (lo, hi): (i128, i128) = match (dtype, dtype.int_range()) {
            (DType::U64, _) => (0, u64::MAX.into()),
            (_, Some((lo, hi))) => (lo.into(), hi.into()),
            _ => (i64::MIN.into(), i64::MAX.into()),
        };
        let bits = if dtype == DType::Bool { 1 } else { dtype.bits() as u32 };
        match *s {
            Scalar::Bool(b) if dtype == DType::Bool => Ok(i64::from(b)),
            Scalar::Bool(b) => Err(ParseError::at(self.loc(at), format!("expected an {dtype} element, got {b}"))),
            Scalar::Int(start, end) => match self.span(start, end).parse::<i128>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(v as i64),
                _ => {
                    let text = self.span(start, end);
                    Err(ParseError::at(self.loc(at), format!("integer {text} is out of range for {dtype}")))
                }
            },
            // A hex integer is a bit pattern of the element width, as in MLIR.
            Scalar::Hex(start, end) => match u128::from_str_radix(self.span(start, end), 16) {
                Ok(v) if v < (1u128 << bits) => {
                    let shift = 128 - bits;
                    Ok((((v << shift) as i128) >> shift) as i64)
                }
                _ => {
                    let h = self.span(start, end);
                    Err(ParseError::at(self.loc(at), format!("hex literal 0x{h} does not fit {dtype}")))
                }
            },
            Scalar::Float(start, end) => {
                let text = self.span(start, end);
                Err(ParseError::at(self.loc(at), format!("expected an {dtype} element, got {text}")))
            }
        }
    }

    /// A float from its bit pattern in `dtype` (MLIR's spelling of NaN and infinities).
    pub(super) fn hex_float(&self, h: &str, dtype: DType, at: usize) -> PResult<f64> {
        let width = 8 * dtype.size_bytes() as u32;
        let bits = u64::from_str_radix(h, 16).ok().filter(|&b| width >= 64 || b < (1u64 << width));
        match (bits, dtype.is_float()) {
            (Some(bits), true) => Ok(float_from_bits(bits, dtype)),
            _ => self.err(at, format!("hex literal 0x{h} does not fit {dtype}")),
        }
    }

    /// `dense<"0x...">`, MLIR's spelling of large literals: the raw little-endian element data
    /// (booleans packed eight to a byte, least significant bit first), or one element for a splat.
    fn dense_from_blob(
        &self,
        blob: &str,
        at: usize,
        ty: &TensorType,
        shape: Vec<usize>,
        count: usize,
    ) -> PResult<Tensor> {
        let hex = blob.strip_prefix("0x").unwrap_or("");
        let bytes: Option<Vec<u8>> = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| match pair {
                [hi, lo] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                    Some(hex_value(*hi) * 16 + hex_value(*lo))
                }
                _ => None,
            })
            .collect();
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return self.err(at, "a dense string literal must be \"0x\" followed by pairs of hex digits");
        };
        let dtype = ty.dtype;
        if dtype == DType::Bool {
            let splat = bytes.len() == 1 && count > 8;
            let needed = count.div_ceil(8);
            if !splat && bytes.len() != needed {
                return self.err(at, format!("hex data has {} bytes, but {ty} needs {needed}", bytes.len()));
            }
            let byte = |i: usize| bytes.get(if splat { 0 } else { i / 8 }).copied().unwrap_or(0);
            let bit = |i: usize| if splat { byte(i) & 1 } else { (byte(i) >> (i % 8)) & 1 };
            if count > MAX_SPLAT_ELEMENTS {
                return self.err(at, format!("splat of {count} elements is too large (limit {MAX_SPLAT_ELEMENTS})"));
            }
            return Ok(Tensor::from_i64(dtype, shape, (0..count).map(|i| i64::from(bit(i))).collect()));
        }
        let size = dtype.size_bytes();
        let splat = bytes.len() == size && count != 1;
        if splat && count > MAX_SPLAT_ELEMENTS {
            return self.err(at, format!("splat of {count} elements is too large (limit {MAX_SPLAT_ELEMENTS})"));
        }
        if !splat && Some(bytes.len()) != count.checked_mul(size) {
            return self
                .err(at, format!("hex data has {} bytes, but {ty} needs {}", bytes.len(), count.saturating_mul(size)));
        }
        let elements: Vec<u64> = bytes
            .chunks(size)
            .map(|chunk| chunk.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
            .collect();
        let element = |i: usize| elements.get(if splat { 0 } else { i }).copied().unwrap_or(0);
        if dtype.is_float() {
            Ok(Tensor::from_f64(dtype, shape, (0..count).map(|i| float_from_bits(element(i), dtype)).collect()))
        } else {
            let shift = 64 - 8 * size as u32;
            Ok(Tensor::from_i64(dtype, shape, (0..count).map(|i| ((element(i) << shift) as i64) >> shift).collect()))
        }
    }
}

/// The value of the bit pattern `bits` (in the low bits) of a float dtype.
fn float_from_bits(bits: u64, dtype: DType) -> f64 {
    // Not floats give the bits as a number; callers check first.
    dtype.float_from_bits(bits).unwrap_or(bits as f64)
}

/// Whether the nested lists have exactly `shape` (every list at depth `d` has `shape[d]`
/// entries and scalars sit at depth `rank`).
fn is_regular(tree: &DenseTree, shape: &[usize]) -> bool {
    match (tree, shape.split_first()) {
        (DenseTree::Scalar(..), None) => true,
        (DenseTree::List(items), Some((&n, rest))) => items.len() == n && items.iter().all(|t| is_regular(t, rest)),
        _ => false,
    }
}

/// The shape a nested literal suggests, following first entries (for error messages).
fn literal_shape_of(tree: &DenseTree, out: &mut Vec<usize>) {
    if let DenseTree::List(items) = tree {
        out.push(items.len());
        if let Some(first) = items.first() {
            literal_shape_of(first, out);
        }
    }
}

fn flatten<'t>(tree: &'t DenseTree, out: &mut Vec<(&'t Scalar, usize)>) {
    match tree {
        DenseTree::Scalar(s, at) => out.push((s, *at)),
        DenseTree::List(items) => items.iter().for_each(|t| flatten(t, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_bit_patterns_decode_to_the_format_values() {
        let e4m3 = |b| float_from_bits(b, DType::F8E4M3);
        let e5m2 = |b| float_from_bits(b, DType::F8E5M2);
        assert_eq!(e4m3(0x38), 1.0);
        assert_eq!(e4m3(0x7E), 448.0);
        assert!(e4m3(0x7F).is_nan());
        assert_eq!(e4m3(0x01), 2f64.powi(-9));
        assert_eq!(e5m2(0x3C), 1.0);
        assert_eq!(e5m2(0x7B), 57344.0);
        assert_eq!(e5m2(0xFC), f64::NEG_INFINITY);
        assert!(e5m2(0x7E).is_nan());
        assert_eq!(e5m2(0x01), 2f64.powi(-16));
    }
}
