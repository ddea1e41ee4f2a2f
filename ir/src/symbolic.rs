//! Dimension expressions: integer polynomials over named symbols, in one canonical form.
//!
//! A [`DimExpr`] is a sum of terms, each an integer coefficient times a product of atoms; an atom
//! is a symbol (`batch`), or `floordiv(e, c)` / `mod(e, c)` of an expression by a positive
//! constant. Every constructor and every operation returns the canonical form, so two
//! expressions that are equal as polynomials over their atoms are equal structurally (`Eq`,
//! `Hash`, and `Display` all agree). `floordiv` and `mod` are simplified as far as integer
//! arithmetic allows without knowing the symbols' values: `floordiv(6 * s + 7, 3)` is
//! `2 * s + 2`, `floordiv(2 * s + 1, 4)` stays an atom (its argument reduced so every coefficient
//! lies in `0..4`), and `floordiv(floordiv(s, 2), 3)` is `floordiv(s, 6)`. Identities that need
//! more than that (`2 * floordiv(s, 2) + mod(s, 2) == s`) are not recognized.
//!
//! # Invariants
//!
//! - **Canonical.** No term has a zero coefficient; a monomial's atoms are sorted with positive
//!   exponents; an atom's argument is itself canonical, not constant, and already reduced.
//! - **Checked.** Every operation that could overflow an `i64` returns [`SymbolicError`]; no
//!   input makes this module panic.
//! - **Text.** `Display` is stable and [`DimExpr::parse`] reads it back:
//!   `parse(e.to_string()) == e`. A lone symbol prints as its bare name (`batch`), so the tensor
//!   types written before expressions existed keep their meaning.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// What can go wrong building or evaluating a dimension expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolicError {
    #[error("integer overflow computing {0}")]
    Overflow(String),
    #[error("division of {expr} by {divisor}: the divisor must be a positive constant")]
    BadDivisor { expr: String, divisor: i64 },
    #[error("dimension {expr} is {value}, negative")]
    Negative { expr: String, value: i64 },
    #[error("symbol '{0}' has no value")]
    Unbound(String),
    #[error("cannot parse dimension expression '{text}' at offset {offset}: {message}")]
    Parse { text: String, offset: usize, message: String },
}

/// A factor of a monomial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    Symbol(String),
    /// `floor(e / c)` with `c > 1`.
    FloorDiv(Box<DimExpr>, i64),
    /// `e - c * floor(e / c)` (in `0..c`) with `c > 1`.
    Mod(Box<DimExpr>, i64),
}

/// A product of atoms with positive exponents, sorted by atom; empty for the constant term.
type Monomial = Vec<(Atom, u32)>;

/// A canonical integer polynomial over [`Atom`]s (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DimExpr {
    terms: BTreeMap<Monomial, i64>,
}

fn overflow(what: impl fmt::Display) -> SymbolicError {
    SymbolicError::Overflow(what.to_string())
}

/// Multiplies two sorted monomials, adding the exponents of shared atoms.
fn mul_monomials(a: &Monomial, b: &Monomial) -> Result<Monomial, SymbolicError> {
    let mut merged: BTreeMap<Atom, u32> = BTreeMap::new();
    for (atom, exp) in a.iter().chain(b) {
        let e = merged.entry(atom.clone()).or_insert(0);
        *e = e.checked_add(*exp).ok_or_else(|| overflow("an exponent"))?;
    }
    Ok(merged.into_iter().collect())
}

impl DimExpr {
    pub fn constant(n: i64) -> DimExpr {
        let mut terms = BTreeMap::new();
        if n != 0 {
            terms.insert(Vec::new(), n);
        }
        DimExpr { terms }
    }

    pub fn symbol(name: &str) -> DimExpr {
        DimExpr::atom(Atom::Symbol(name.to_string()))
    }

    fn atom(atom: Atom) -> DimExpr {
        DimExpr { terms: BTreeMap::from([(vec![(atom, 1)], 1)]) }
    }

    /// The value when the expression has no symbols.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The name when the expression is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.terms.iter().next() {
            Some((m, 1)) if self.terms.len() == 1 && m.len() == 1 => match &m[0] {
                (Atom::Symbol(s), 1) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The names of every symbol, also those inside `floordiv`/`mod`, sorted.
    pub fn symbols(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect_symbols(&mut out);
        out
    }

    /// Adds the names of every symbol to `out`.
    pub fn collect_symbols<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        for monomial in self.terms.keys() {
            for (atom, _) in monomial {
                match atom {
                    Atom::Symbol(s) => {
                        out.insert(s);
                    }
                    Atom::FloorDiv(e, _) | Atom::Mod(e, _) => e.collect_symbols(out),
                }
            }
        }
    }

    pub fn add(&self, other: &DimExpr) -> Result<DimExpr, SymbolicError> {
        if let Some(rounded) = self.rounded_up_by(other)?.or(other.rounded_up_by(self)?) {
            return Ok(rounded);
        }
        self.add_terms(other)
    }

    /// `self + pad` as `c * ceildiv(self, c)` when `pad` is `(-self) mod c`: a size padded up
    /// to a multiple of `c` (Swin pads each feature map to whole windows by
    /// `(window - size % window) % window`). Spelled as `mod(r, c)` where `r`, with `mod(self, c)`
    /// read as `self` (equal modulo `c`), plus `self` is a multiple of `c` term by term. So the
    /// padded size divides by `c` exactly, which the windows' reshapes need.
    fn rounded_up_by(&self, pad: &DimExpr) -> Result<Option<DimExpr>, SymbolicError> {
        let Some(Atom::Mod(r, c)) = pad.single_atom() else { return Ok(None) };
        if self.as_const().is_some() {
            return Ok(None);
        }
        let own_mod = Atom::Mod(Box::new(self.clone()), *c);
        let mut read = DimExpr::default();
        for (monomial, &k) in &r.terms {
            let mut term = DimExpr::constant(k);
            for (atom, exponent) in monomial {
                let factor = if *atom == own_mod { self.clone() } else { DimExpr::atom(atom.clone()) };
                for _ in 0..*exponent {
                    term = term.mul(&factor)?;
                }
            }
            read = read.add_terms(&term)?;
        }
        if read.add_terms(self)?.modulo(*c)?.as_const() != Some(0) {
            return Ok(None);
        }
        Ok(Some(self.ceildiv(*c)?.scale(*c)?))
    }

    /// The sum term by term, with no rewriting (see [`DimExpr::add`]).
    fn add_terms(&self, other: &DimExpr) -> Result<DimExpr, SymbolicError> {
        let mut terms = self.terms.clone();
        for (m, k) in &other.terms {
            let sum = terms
                .get(m)
                .copied()
                .unwrap_or(0)
                .checked_add(*k)
                .ok_or_else(|| overflow(format!("{self} + {other}")))?;
            if sum == 0 {
                terms.remove(m);
            } else {
                terms.insert(m.clone(), sum);
            }
        }
        Ok(DimExpr { terms })
    }

    pub fn neg(&self) -> Result<DimExpr, SymbolicError> {
        self.scale(-1)
    }

    pub fn sub(&self, other: &DimExpr) -> Result<DimExpr, SymbolicError> {
        self.add(&other.neg()?)
    }

    /// `k * self`.
    pub fn scale(&self, k: i64) -> Result<DimExpr, SymbolicError> {
        if k == 0 {
            return Ok(DimExpr::default());
        }
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            terms.insert(m.clone(), c.checked_mul(k).ok_or_else(|| overflow(format!("{k} * ({self})")))?);
        }
        Ok(DimExpr { terms })
    }

    pub fn mul(&self, other: &DimExpr) -> Result<DimExpr, SymbolicError> {
        let mut out = DimExpr::default();
        for (ma, ka) in &self.terms {
            for (mb, kb) in &other.terms {
                let k = ka.checked_mul(*kb).ok_or_else(|| overflow(format!("({self}) * ({other})")))?;
                let term = DimExpr { terms: BTreeMap::from([(mul_monomials(ma, mb)?, k)]) };
                out = out.add(&term)?;
            }
        }
        Ok(out)
    }

    /// Splits `self` as `divisor * quotient + remainder` with every coefficient of `remainder`
    /// in `0..divisor` (constant term included).
    fn split_by(&self, divisor: i64) -> (DimExpr, DimExpr) {
        let (mut quotient, mut remainder) = (BTreeMap::new(), BTreeMap::new());
        for (m, k) in &self.terms {
            let (q, r) = (k.div_euclid(divisor), k.rem_euclid(divisor));
            if q != 0 {
                quotient.insert(m.clone(), q);
            }
            if r != 0 {
                remainder.insert(m.clone(), r);
            }
        }
        (DimExpr { terms: quotient }, DimExpr { terms: remainder })
    }

    fn check_divisor(&self, divisor: i64) -> Result<(), SymbolicError> {
        if divisor <= 0 {
            return Err(SymbolicError::BadDivisor { expr: self.to_string(), divisor });
        }
        Ok(())
    }

    /// `floor(self / divisor)`; `divisor` must be positive.
    pub fn floordiv(&self, divisor: i64) -> Result<DimExpr, SymbolicError> {
        self.check_divisor(divisor)?;
        if divisor == 1 {
            return Ok(self.clone());
        }
        // floor((c * q + r) / c) = q + floor(r / c) for integers q and r.
        let (quotient, remainder) = self.split_by(divisor);
        if remainder.as_const().is_some() {
            // The remainder is a constant in 0..divisor: its floor is 0.
            return Ok(quotient);
        }
        // floor((floor(e / a) + k) / b) = floor((e + a * k) / (a * b)) for positive a and b: the
        // shape of a chain of strided windows collapses to one division.
        let offset = remainder.terms.get(&EMPTY_MONOMIAL).copied().unwrap_or(0);
        let mut without_offset = remainder.clone();
        without_offset.terms.remove(&EMPTY_MONOMIAL);
        if let Some(Atom::FloorDiv(inner, d)) = without_offset.single_atom() {
            if let (Some(product), Some(shift)) = (d.checked_mul(divisor), d.checked_mul(offset)) {
                return quotient.add(&inner.add(&DimExpr::constant(shift))?.floordiv(product)?);
            }
        }
        quotient.add(&DimExpr::atom(Atom::FloorDiv(Box::new(remainder), divisor)))
    }

    /// `self - divisor * floor(self / divisor)`, in `0..divisor`; `divisor` must be positive.
    pub fn modulo(&self, divisor: i64) -> Result<DimExpr, SymbolicError> {
        self.check_divisor(divisor)?;
        if divisor == 1 {
            return Ok(DimExpr::default());
        }
        // (c * q + r) mod c = r mod c.
        let (_, remainder) = self.split_by(divisor);
        if remainder.as_const().is_some() {
            return Ok(remainder);
        }
        Ok(DimExpr::atom(Atom::Mod(Box::new(remainder), divisor)))
    }

    /// `ceil(self / divisor)` = `floor((self + divisor - 1) / divisor)`.
    pub fn ceildiv(&self, divisor: i64) -> Result<DimExpr, SymbolicError> {
        self.check_divisor(divisor)?;
        let bump = divisor.checked_sub(1).ok_or_else(|| overflow("a ceiling division"))?;
        self.add(&DimExpr::constant(bump))?.floordiv(divisor)
    }

    /// `(P, N)` with `self = P - N`, where `P` holds the terms with positive coefficients and
    /// `N` the negated others, so both are sums of terms with positive coefficients.
    pub fn split_signs(&self) -> (DimExpr, DimExpr) {
        let (mut positive, mut negative) = (DimExpr::default(), DimExpr::default());
        for (monomial, &coefficient) in &self.terms {
            if coefficient > 0 {
                positive.terms.insert(monomial.clone(), coefficient);
            } else if let Some(magnitude) = coefficient.checked_neg() {
                negative.terms.insert(monomial.clone(), magnitude);
            } else {
                // i64::MIN has no positive counterpart; it stays on its side, still exact.
                positive.terms.insert(monomial.clone(), coefficient);
            }
        }
        (positive, negative)
    }

    /// A lower bound on the value for every assignment of the symbols to integers `>= 1` (the
    /// importer's documented assumption: a dimension that a symbol names is at least 1), or
    /// `None` when the form gives none (a term with a negative coefficient, or an atom whose
    /// argument has no bound). Each term counts at its least: a symbol at 1, `mod` at 0,
    /// `floordiv(e, c)` at `floor(bound(e) / c)`.
    pub fn lower_bound(&self) -> Option<i64> {
        let mut bound: i64 = 0;
        for (monomial, &coefficient) in &self.terms {
            let mut least: i64 = 1;
            for (atom, exponent) in monomial {
                let atom_least = match atom {
                    Atom::Symbol(_) => 1,
                    Atom::Mod(..) => 0,
                    Atom::FloorDiv(e, c) => e.lower_bound()?.div_euclid(*c),
                };
                // A product grows with its factors only while they are non-negative.
                if atom_least < 0 {
                    return None;
                }
                least = least.checked_mul(atom_least.checked_pow(*exponent)?)?;
            }
            if coefficient < 0 && !monomial.is_empty() {
                return None;
            }
            bound = bound.checked_add(coefficient.checked_mul(least)?)?;
        }
        Some(bound)
    }

    /// Whether `self < other` for every assignment of the symbols to integers `>= 1`: `Some`
    /// when the answer is the same for all of them and [`DimExpr::lower_bound`] shows it,
    /// `None` when it depends on the sizes (or the bounds cannot tell).
    pub fn decide_less(&self, other: &DimExpr) -> Option<bool> {
        let ahead = other.sub(self).ok()?.lower_bound();
        let behind = self.sub(other).ok()?.lower_bound();
        match (ahead, behind) {
            (Some(d), _) if d >= 1 => Some(true),
            (_, Some(d)) if d >= 0 => Some(false),
            _ => None,
        }
    }

    /// Whether `self == other` for every assignment of the symbols to integers `>= 1`; `None`
    /// when it depends on the sizes. Equal canonical forms are equal; otherwise one side must
    /// be provably larger.
    pub fn decide_equal(&self, other: &DimExpr) -> Option<bool> {
        if self == other {
            return Some(true);
        }
        match (self.decide_less(other), other.decide_less(self)) {
            (Some(true), _) | (_, Some(true)) => Some(false),
            _ => None,
        }
    }

    /// The atom when `self` is exactly one atom with coefficient and exponent 1.
    fn single_atom(&self) -> Option<&Atom> {
        match self.terms.iter().next() {
            Some((m, 1)) if self.terms.len() == 1 && m.len() == 1 && m[0].1 == 1 => Some(&m[0].0),
            _ => None,
        }
    }

    /// The value with every symbol given by `lookup`; unbound symbols and overflow are errors.
    pub fn eval_with(&self, lookup: &dyn Fn(&str) -> Option<i64>) -> Result<i64, SymbolicError> {
        let mut total: i64 = 0;
        for (m, k) in &self.terms {
            let mut product = *k;
            for (atom, exp) in m {
                let base = match atom {
                    Atom::Symbol(s) => lookup(s).ok_or_else(|| SymbolicError::Unbound(s.clone()))?,
                    Atom::FloorDiv(e, c) => e.eval_with(lookup)?.div_euclid(*c),
                    Atom::Mod(e, c) => e.eval_with(lookup)?.rem_euclid(*c),
                };
                for _ in 0..*exp {
                    product = product.checked_mul(base).ok_or_else(|| overflow(self))?;
                }
            }
            total = total.checked_add(product).ok_or_else(|| overflow(self))?;
        }
        Ok(total)
    }

    /// The value under `bindings` (see [`DimExpr::eval_with`]).
    pub fn eval(&self, bindings: &HashMap<String, i64>) -> Result<i64, SymbolicError> {
        self.eval_with(&|s| bindings.get(s).copied())
    }

    /// Replaces the symbols that `lookup` maps; the others stay.
    pub fn substitute_with(&self, lookup: &dyn Fn(&str) -> Option<DimExpr>) -> Result<DimExpr, SymbolicError> {
        let mut out = DimExpr::default();
        for (m, k) in &self.terms {
            let mut product = DimExpr::constant(*k);
            for (atom, exp) in m {
                let base = match atom {
                    Atom::Symbol(s) => lookup(s).unwrap_or_else(|| DimExpr::symbol(s)),
                    Atom::FloorDiv(e, c) => e.substitute_with(lookup)?.floordiv(*c)?,
                    Atom::Mod(e, c) => e.substitute_with(lookup)?.modulo(*c)?,
                };
                for _ in 0..*exp {
                    product = product.mul(&base)?;
                }
            }
            out = out.add(&product)?;
        }
        Ok(out)
    }

    /// Replaces the symbols that `bindings` maps; the others stay.
    pub fn substitute(&self, bindings: &HashMap<String, DimExpr>) -> Result<DimExpr, SymbolicError> {
        self.substitute_with(&|s| bindings.get(s).cloned())
    }

    /// `self / divisor` when it divides exactly as polynomials and `divisor` is one term (`k *
    /// monomial`, `k != 0`): every term of `self` must contain the monomial with a coefficient
    /// that `k` divides. `None` otherwise (also when the quotient is not exact).
    pub fn div_exact(&self, divisor: &DimExpr) -> Option<DimExpr> {
        if divisor.terms.len() > 1 {
            return self.div_exact_polynomial(divisor);
        }
        let [(dm, dk)] = divisor.terms.iter().collect::<Vec<_>>()[..] else { return None };
        let mut terms = BTreeMap::new();
        for (m, k) in &self.terms {
            if k % dk != 0 {
                return None;
            }
            let mut rest: BTreeMap<Atom, u32> = m.iter().cloned().collect();
            for (atom, exp) in dm {
                let have = rest.get_mut(atom)?;
                *have = have.checked_sub(*exp)?;
                if *have == 0 {
                    rest.remove(atom);
                }
            }
            terms.insert(rest.into_iter().collect(), k / dk);
        }
        Some(DimExpr { terms })
    }

    /// [`DimExpr::div_exact`] by a divisor of several terms (`64 * b + 64 * b * h` by
    /// `16 * b + 16 * b * h`, as a reshape's `-1` over symbolic dims asks): long division, each
    /// step dividing the remainder's greatest term by the divisor's, and the quotient checked by
    /// multiplying back, so a wrong step can only give `None`.
    fn div_exact_polynomial(&self, divisor: &DimExpr) -> Option<DimExpr> {
        let (lead_monomial, lead_coefficient) = divisor.terms.iter().next_back()?;
        let lead = DimExpr { terms: BTreeMap::from([(lead_monomial.clone(), *lead_coefficient)]) };
        let mut quotient = DimExpr::default();
        let mut remainder = self.clone();
        // Each step removes the remainder's greatest term; a bound keeps hostile input finite.
        for _ in 0..=self.terms.len() {
            let Some((monomial, coefficient)) = remainder.terms.iter().next_back() else { break };
            let top = DimExpr { terms: BTreeMap::from([(monomial.clone(), *coefficient)]) };
            let step = top.div_exact(&lead)?;
            quotient = quotient.add(&step).ok()?;
            remainder = remainder.sub(&step.mul(divisor).ok()?).ok()?;
        }
        (quotient.mul(divisor).ok()? == *self).then_some(quotient)
    }

    /// When `self` is `a * s + b` for a single symbol `s`: `s` and the integer value that makes
    /// `self` equal `target` (`None` when no integer does). `None` for any other expression.
    pub fn solve_linear(&self, target: i64) -> Option<(String, Option<i64>)> {
        let mut names = self.symbols().into_iter();
        let (Some(name), None) = (names.next(), names.next()) else { return None };
        let name = name.to_string();
        let b = self.terms.get(&EMPTY_MONOMIAL).copied().unwrap_or(0);
        let monomial = vec![(Atom::Symbol(name.clone()), 1)];
        let a = *self.terms.get(&monomial)?;
        if self.terms.len() != 1 + usize::from(b != 0) {
            return None;
        }
        let value = target.checked_sub(b).filter(|d| d % a == 0).map(|d| d / a);
        Some((name, value))
    }

    /// Reads the text `Display` writes (see the module documentation).
    pub fn parse(text: &str) -> Result<DimExpr, SymbolicError> {
        let mut parser = Parser { text, pos: 0 };
        let e = parser.expr()?;
        parser.skip_space();
        if parser.pos != text.len() {
            return Err(parser.error("unexpected text after the expression"));
        }
        Ok(e)
    }
}

/// Whether `name` prints bare: a letter, `_` or `$`, then letters, digits, `_`, `$`, `.`, `-`
/// (the characters of the ONNX importer's sanitized names). Others print in backquotes.
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || "_$".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "_$.-".contains(c))
        && !matches!(name, "floordiv" | "mod")
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Symbol(s) if is_plain_name(s) => f.write_str(s),
            Atom::Symbol(s) => write!(f, "`{s}`"),
            Atom::FloorDiv(e, c) => write!(f, "floordiv({e}, {c})"),
            Atom::Mod(e, c) => write!(f, "mod({e}, {c})"),
        }
    }
}

impl fmt::Display for DimExpr {
    /// Non-constant terms in canonical order, then the constant: `2 * seq + batch * seq - 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let constant = self.terms.get(&EMPTY_MONOMIAL).map(|k| (&EMPTY_MONOMIAL, k));
        let ordered = self.terms.iter().filter(|(m, _)| !m.is_empty()).chain(constant);
        for (i, (m, k)) in ordered.enumerate() {
            let sign = if *k < 0 { "-" } else { "+" };
            match (i, *k < 0) {
                (0, true) => f.write_str("-")?,
                (0, false) => {}
                _ => write!(f, " {sign} ")?,
            }
            let magnitude = k.unsigned_abs();
            if m.is_empty() {
                write!(f, "{magnitude}")?;
                continue;
            }
            if magnitude != 1 {
                write!(f, "{magnitude} * ")?;
            }
            let mut first = true;
            for (atom, exp) in m.iter() {
                for _ in 0..*exp {
                    if !first {
                        f.write_str(" * ")?;
                    }
                    first = false;
                    write!(f, "{atom}")?;
                }
            }
        }
        Ok(())
    }
}

static EMPTY_MONOMIAL: Monomial = Vec::new();

/// Serialized as its text (`"2 * seq + 1"`), so JSON views and artifacts read like the IR.
impl serde::Serialize for DimExpr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DimExpr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<DimExpr, D::Error> {
        let text = String::deserialize(deserializer)?;
        DimExpr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Recursive descent over the `Display` grammar:
/// `expr := ["-"] term (("+" | "-") term)*`, `term := factor ("*" factor)*`,
/// `factor := "-" factor | INT | NAME | "`" TEXT "`" | ("floordiv" | "mod") "(" expr "," INT ")" | "(" expr ")"`.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

/// How deep parentheses and calls may nest, so hostile text cannot overflow the stack.
const MAX_PARSE_DEPTH: usize = 64;

impl Parser<'_> {
    fn error(&self, message: &str) -> SymbolicError {
        SymbolicError::Parse { text: self.text.to_string(), offset: self.pos, message: message.to_string() }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: char) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: char) -> Result<(), SymbolicError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{token}'")))
        }
    }

    fn depth_check(&self, depth: usize) -> Result<(), SymbolicError> {
        if depth > MAX_PARSE_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<DimExpr, SymbolicError> {
        self.expr_at(0)
    }

    fn expr_at(&mut self, depth: usize) -> Result<DimExpr, SymbolicError> {
        self.depth_check(depth)?;
        let mut total = self.term(depth)?;
        loop {
            if self.eat('+') {
                total = total.add(&self.term(depth)?)?;
            } else if self.eat('-') {
                total = total.sub(&self.term(depth)?)?;
            } else {
                return Ok(total);
            }
        }
    }

    fn term(&mut self, depth: usize) -> Result<DimExpr, SymbolicError> {
        let mut product = self.factor(depth)?;
        while self.eat('*') {
            product = product.mul(&self.factor(depth)?)?;
        }
        Ok(product)
    }

    fn integer(&mut self) -> Result<i64, SymbolicError> {
        self.skip_space();
        let negative = self.eat('-');
        self.skip_space();
        let digits = self.rest().chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(self.error("expected an integer"));
        }
        let text = &self.rest()[..digits];
        let magnitude: i64 = text.parse().map_err(|_| self.error("integer out of range"))?;
        self.pos += digits;
        Ok(if negative { -magnitude } else { magnitude })
    }

    fn factor(&mut self, depth: usize) -> Result<DimExpr, SymbolicError> {
        self.depth_check(depth)?;
        self.skip_space();
        if self.eat('-') {
            return self.factor(depth + 1)?.neg();
        }
        if self.eat('(') {
            let inner = self.expr_at(depth + 1)?;
            self.expect(')')?;
            return Ok(inner);
        }
        if self.eat('`') {
            let len = self.rest().find('`').ok_or_else(|| self.error("unterminated quoted name"))?;
            let name = self.rest()[..len].to_string();
            self.pos += len + 1;
            return Ok(DimExpr::symbol(&name));
        }
        let first = self.rest().chars().next().ok_or_else(|| self.error("expected a term"))?;
        if first.is_ascii_digit() {
            return Ok(DimExpr::constant(self.integer()?));
        }
        if !(first.is_ascii_alphabetic() || "_$".contains(first)) {
            return Err(self.error("expected a term"));
        }
        let len = self.rest().chars().take_while(|c| c.is_ascii_alphanumeric() || "_$.-".contains(*c)).count();
        let name = self.rest()[..len].to_string();
        self.pos += len;
        let call = matches!(name.as_str(), "floordiv" | "mod");
        if call && self.eat('(') {
            let arg = self.expr_at(depth + 1)?;
            self.expect(',')?;
            self.skip_space();
            let at = self.pos;
            let divisor = self.integer()?;
            self.expect(')')?;
            let result = if name == "floordiv" { arg.floordiv(divisor) } else { arg.modulo(divisor) };
            return result.map_err(|e| match e {
                SymbolicError::BadDivisor { .. } => {
                    SymbolicError::Parse { text: self.text.to_string(), offset: at, message: e.to_string() }
                }
                other => other,
            });
        }
        Ok(DimExpr::symbol(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::{DimExpr, SymbolicError};
    use proptest::prelude::{prop_assert, prop_assert_eq, prop_oneof, proptest, Strategy};
    use std::collections::HashMap;

    fn e(text: &str) -> DimExpr {
        DimExpr::parse(text).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn canonical_forms_print_as_expected() {
        let (s, b) = (DimExpr::symbol("seq"), DimExpr::symbol("batch"));
        let cases = [
            (s.clone(), "seq"),
            (s.scale(2).unwrap(), "2 * seq"),
            (s.add(&DimExpr::constant(1)).unwrap(), "seq + 1"),
            (DimExpr::constant(1).sub(&s).unwrap(), "-seq + 1"),
            (s.mul(&b).unwrap().add(&b).unwrap(), "batch + batch * seq"),
            (s.scale(6).unwrap().add(&DimExpr::constant(7)).unwrap().floordiv(3).unwrap(), "2 * seq + 2"),
            (
                s.scale(5).unwrap().add(&DimExpr::constant(-1)).unwrap().floordiv(4).unwrap(),
                "seq + floordiv(seq + 3, 4) - 1",
            ),
            (s.floordiv(2).unwrap().floordiv(3).unwrap(), "floordiv(seq, 6)"),
            // Two 3x3 stride-2 windows with padding 1: floor((floor((h + 1) / 2) + 1) / 2).
            (
                s.add(&DimExpr::constant(1))
                    .unwrap()
                    .floordiv(2)
                    .unwrap()
                    .add(&DimExpr::constant(1))
                    .unwrap()
                    .floordiv(2)
                    .unwrap(),
                "floordiv(seq + 3, 4)",
            ),
            (s.scale(4).unwrap().add(&DimExpr::constant(6)).unwrap().modulo(4).unwrap(), "2"),
            (s.sub(&s).unwrap(), "0"),
            (s.mul(&s).unwrap(), "seq * seq"),
            (DimExpr::symbol("p2o.Dynamic-0"), "p2o.Dynamic-0"),
            (DimExpr::symbol("a b"), "`a b`"),
        ];
        for (expr, text) in cases {
            assert_eq!(expr.to_string(), text);
            assert_eq!(e(text), expr, "{text}");
        }
    }

    #[test]
    fn a_size_padded_to_a_multiple_is_that_multiple() {
        // Swin: n + (window - n % window) % window, with n itself a window count.
        for (n, c) in [(e("floordiv(width, 4)"), 2), (e("h"), 7), (e("2 * h + 1"), 3)] {
            let pad = DimExpr::constant(c).sub(&n.modulo(c).unwrap()).unwrap().modulo(c).unwrap();
            let padded = n.add(&pad).unwrap();
            assert_eq!(padded, n.ceildiv(c).unwrap().scale(c).unwrap(), "{n} + {pad}");
            assert_eq!(pad.add(&n).unwrap(), padded, "either order");
            // So the padded size splits into whole windows, as the windows' reshape needs.
            assert_eq!(padded.floordiv(c).unwrap().scale(c).unwrap(), padded);
            for value in 1..30 {
                let bind = HashMap::from([("width".to_string(), value), ("h".to_string(), value)]);
                let size = n.eval(&bind).unwrap();
                assert_eq!(padded.eval(&bind), Ok(size + (c - size % c) % c), "{n} at {value}");
            }
        }
        // A pad that is not (-n) mod c stays a sum.
        let n = e("h");
        let other = n.add(&DimExpr::constant(1)).unwrap().modulo(3).unwrap();
        assert_eq!(n.add(&other).unwrap().to_string(), "h + mod(h + 1, 3)");
    }

    #[test]
    fn floordiv_and_mod_agree_with_integer_arithmetic() {
        let x = e("3 * a - 7");
        for a in -20..20 {
            let bind = HashMap::from([("a".to_string(), a)]);
            for c in 1..7 {
                assert_eq!(x.floordiv(c).unwrap().eval(&bind), Ok((3 * a - 7).div_euclid(c)));
                assert_eq!(x.modulo(c).unwrap().eval(&bind), Ok((3 * a - 7).rem_euclid(c)));
            }
        }
    }

    #[test]
    fn errors_are_typed() {
        let big = DimExpr::constant(i64::MAX);
        assert!(matches!(big.add(&DimExpr::constant(1)), Err(SymbolicError::Overflow(_))));
        assert!(matches!(e("a * a").eval(&HashMap::from([("a".into(), 1 << 40)])), Err(SymbolicError::Overflow(_))));
        assert_eq!(e("a + b").eval(&HashMap::from([("a".into(), 1)])), Err(SymbolicError::Unbound("b".into())));
        assert!(matches!(e("a").floordiv(0), Err(SymbolicError::BadDivisor { .. })));
        assert!(matches!(DimExpr::parse("floordiv(a, -2)"), Err(SymbolicError::Parse { offset: 12, .. })));
        assert!(matches!(DimExpr::parse("a +"), Err(SymbolicError::Parse { offset: 3, .. })));
        assert!(matches!(DimExpr::parse("99999999999999999999"), Err(SymbolicError::Parse { .. })));
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(matches!(DimExpr::parse(&deep), Err(SymbolicError::Parse { .. })));
    }

    #[test]
    fn substitution_and_symbols() {
        let x = e("floordiv(h + 2, 3) * w");
        assert_eq!(x.symbols().into_iter().collect::<Vec<_>>(), vec!["h", "w"]);
        let bound = x.substitute(&HashMap::from([("h".to_string(), e("3 * k + 1"))])).unwrap();
        assert_eq!(bound, e("k * w + w"));
        assert_eq!(e("seq").as_symbol(), Some("seq"));
        assert_eq!(e("2 * seq").as_symbol(), None);
        assert_eq!(e("4 - 4").as_const(), Some(0));
        assert_eq!(e("2 * s + 1").solve_linear(9), Some(("s".to_string(), Some(4))));
        assert_eq!(e("2 * s + 1").solve_linear(8), Some(("s".to_string(), None)));
        assert_eq!(e("s * s").solve_linear(9), None);
        assert_eq!(e("s + t").solve_linear(9), None);
        assert_eq!(e("68 * s + 4 * s * t").div_exact(&e("4 * s")), Some(e("t + 17")));
        assert_eq!(e("2 * s").div_exact(&e("4")), None);
        assert_eq!(e("2 * s").div_exact(&e("t")), None);
        assert_eq!(e("2 * s").div_exact(&e("s + 1")), None);
        let flat = e("64 * b + 64 * b * floordiv(h, 8) * floordiv(w, 8)");
        assert_eq!(flat.div_exact(&e("16 * b + 16 * b * floordiv(h, 8) * floordiv(w, 8)")), Some(e("4")));
        assert_eq!(e("s * s + 2 * s + 1").div_exact(&e("s + 1")), Some(e("s + 1")));
        assert_eq!(e("s * s + 2 * s + 2").div_exact(&e("s + 1")), None);
        assert_eq!(e("8 * s + 4").div_exact(&e("2 * s + 1")), Some(e("4")));
    }

    #[test]
    fn lower_bounds_assume_every_symbol_is_at_least_one() {
        assert_eq!(e("seq").lower_bound(), Some(1));
        assert_eq!(e("seq + 1").lower_bound(), Some(2));
        assert_eq!(e("2 * batch * seq - 3").lower_bound(), Some(-1));
        assert_eq!(e("mod(seq, 4) + floordiv(seq + 7, 8)").lower_bound(), Some(1));
        assert_eq!(e("512 - seq").lower_bound(), None);
        assert_eq!(e("floordiv(seq - 9, 2)").lower_bound(), Some(-4));
        assert_eq!(e("floordiv(seq - 9, 2) * seq").lower_bound(), None);
        assert_eq!(e("2 * seq - batch * seq - 3").split_signs(), (e("2 * seq"), e("batch * seq + 3")));
    }

    #[test]
    fn comparisons_decide_what_holds_for_every_size() {
        let (seq, zero, minus_one) = (e("seq"), e("0"), e("-1"));
        assert_eq!(seq.decide_equal(&minus_one), Some(false));
        assert_eq!(zero.decide_less(&seq), Some(true));
        assert_eq!(seq.decide_less(&zero), Some(false));
        assert_eq!(seq.decide_equal(&e("seq")), Some(true));
        assert_eq!(seq.decide_equal(&e("1")), None);
        assert_eq!(seq.decide_less(&e("512")), None);
        assert_eq!(seq.decide_less(&e("seq + 1")), Some(true));
        assert_eq!(e("batch * seq + seq").decide_less(&seq), Some(false));
        // True for every size, but beyond the term-by-term bound: left undecided, not guessed.
        assert_eq!(e("batch * seq").decide_less(&seq), None);
    }

    /// How a random expression is built, kept so the test can evaluate the same tree directly.
    #[derive(Debug, Clone)]
    enum Tree {
        Const(i64),
        Sym(usize),
        Add(Box<Tree>, Box<Tree>),
        Sub(Box<Tree>, Box<Tree>),
        Mul(Box<Tree>, Box<Tree>),
        FloorDiv(Box<Tree>, i64),
        Mod(Box<Tree>, i64),
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];

    /// Random trees; `with_division: false` ones have depth 3, so degree at most 8 in a symbol.
    fn tree(with_division: bool) -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![(-3i64..4).prop_map(Tree::Const), (0usize..3).prop_map(Tree::Sym)];
        leaf.prop_recursive(if with_division { 4 } else { 3 }, 24, 2, move |inner| {
            let arithmetic = prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(x, y)| Tree::Add(Box::new(x), Box::new(y))),
                (inner.clone(), inner.clone()).prop_map(|(x, y)| Tree::Sub(Box::new(x), Box::new(y))),
                (inner.clone(), inner.clone()).prop_map(|(x, y)| Tree::Mul(Box::new(x), Box::new(y))),
            ];
            if with_division {
                prop_oneof![
                    3 => arithmetic,
                    1 => (inner.clone(), 1i64..5).prop_map(|(x, c)| Tree::FloorDiv(Box::new(x), c)),
                    1 => (inner, 1i64..5).prop_map(|(x, c)| Tree::Mod(Box::new(x), c)),
                ]
                .boxed()
            } else {
                arithmetic.boxed()
            }
        })
    }

    fn build(t: &Tree) -> DimExpr {
        let ok = |r: Result<DimExpr, SymbolicError>| r.expect("small expressions do not overflow");
        match t {
            Tree::Const(n) => DimExpr::constant(*n),
            Tree::Sym(i) => DimExpr::symbol(NAMES[*i]),
            Tree::Add(x, y) => ok(build(x).add(&build(y))),
            Tree::Sub(x, y) => ok(build(x).sub(&build(y))),
            Tree::Mul(x, y) => ok(build(x).mul(&build(y))),
            Tree::FloorDiv(x, c) => ok(build(x).floordiv(*c)),
            Tree::Mod(x, c) => ok(build(x).modulo(*c)),
        }
    }

    fn direct(t: &Tree, values: &[i64; 3]) -> i64 {
        match t {
            Tree::Const(n) => *n,
            Tree::Sym(i) => values[*i],
            Tree::Add(x, y) => direct(x, values) + direct(y, values),
            Tree::Sub(x, y) => direct(x, values) - direct(y, values),
            Tree::Mul(x, y) => direct(x, values) * direct(y, values),
            Tree::FloorDiv(x, c) => direct(x, values).div_euclid(*c),
            Tree::Mod(x, c) => direct(x, values).rem_euclid(*c),
        }
    }

    fn bindings(values: &[i64; 3]) -> HashMap<String, i64> {
        NAMES.iter().zip(values).map(|(n, v)| (n.to_string(), *v)).collect()
    }

    /// A 9x9x9 grid: two polynomials of degree at most 8 in each symbol that agree on it are
    /// the same polynomial.
    fn probe_points() -> Vec<[i64; 3]> {
        let mut out = Vec::new();
        for a in -4..5 {
            for b in -4..5 {
                for c in -4..5 {
                    out.push([a, b, c]);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn eval_commutes_with_the_arithmetic(t in tree(true), a in -50i64..50, b in -50i64..50, c in -50i64..50) {
            let values = [a, b, c];
            prop_assert_eq!(build(&t).eval(&bindings(&values)), Ok(direct(&t, &values)));
        }

        #[test]
        fn lower_bounds_and_decisions_hold_at_every_size(
            x in tree(true), y in tree(true), a in 1i64..40, b in 1i64..40, c in 1i64..40,
        ) {
            let values = [a, b, c];
            let (ex, ey) = (build(&x), build(&y));
            let (vx, vy) = (direct(&x, &values), direct(&y, &values));
            if let Some(bound) = ex.lower_bound() {
                prop_assert!(vx >= bound, "{ex} = {vx} below its bound {bound}");
            }
            if let Some(less) = ex.decide_less(&ey) {
                prop_assert_eq!(less, vx < vy, "{} < {}", ex, ey);
            }
            if let Some(equal) = ex.decide_equal(&ey) {
                prop_assert_eq!(equal, vx == vy, "{} == {}", ex, ey);
            }
        }

        #[test]
        fn exact_division_is_sound(x in tree(true), y in tree(true)) {
            let (ex, ey) = (build(&x), build(&y));
            for dividend in [ex.clone(), ex.mul(&ey).unwrap()] {
                if let Some(q) = dividend.div_exact(&ey) {
                    prop_assert_eq!(q.mul(&ey).unwrap(), dividend);
                }
            }
        }

        #[test]
        fn text_round_trips(t in tree(true)) {
            let expr = build(&t);
            prop_assert_eq!(DimExpr::parse(&expr.to_string()), Ok(expr));
        }

        #[test]
        fn equal_polynomials_print_identically(x in tree(false), y in tree(false)) {
            let (ex, ey) = (build(&x), build(&y));
            let points = probe_points();
            let equal_everywhere = points.iter().all(|p| direct(&x, p) == direct(&y, p));
            if equal_everywhere {
                prop_assert_eq!(ex.to_string(), ey.to_string());
            } else {
                prop_assert!(ex != ey);
            }
            // The same polynomial built two ways: (x + y)(x - y) and x*x - y*y.
            let left = ex.add(&ey).unwrap().mul(&ex.sub(&ey).unwrap()).unwrap();
            let right = ex.mul(&ex).unwrap().sub(&ey.mul(&ey).unwrap()).unwrap();
            prop_assert_eq!(left.to_string(), right.to_string());
            prop_assert_eq!(left, right);
        }
    }
}
