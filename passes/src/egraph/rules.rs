//! Rewrite rules as data: the rule-file format, its parser, the load-time type check, and the
//! translation of a rule into an egg rewrite.
//!
//! One rule per line; `#` starts a comment, and the comment lines just above a rule are its
//! documentation (the built-in files give each rule a one-line identity):
//!
//! ```text
//! # a·(b ‖ c) = a·b ‖ a·c
//! rule matmul-concat-rhs: (matmul ?a (concat -1 ?b ?c)) => (concat -1 (matmul ?a ?b) (matmul ?a ?c))
//! # two matmuls reading one input become one matmul and two views (QKV fusion)
//! rule matmul-merge-rhs: (matmul ?a ?b) & (matmul ?a ?c) => (part 0 -1 (matmul ?a (concat -1 ?b ?c)) ?b ?c) & (part 1 -1 (matmul ?a (concat -1 ?b ?c)) ?b ?c) if distinct(?b, ?c)
//! ```
//!
//! A term is a variable `?x` or `(op attrs... terms...)`. Ops are tsr mnemonics; attributes are
//! integers or `[int ...]` lists written before the operands: `concat AXIS`, `softmax AXIS`,
//! `transpose [PERM]`. Axes count from the end (`-1` is the last axis), so rules hold for
//! every rank. The right side may also use `(part I AXIS X ?v1 ?v2 ...)`: the `I`-th of the
//! consecutive pieces of `X` along `AXIS` whose sizes are those of `?v1`, `?v2`, ... there (a
//! `slice`). Several left sides joined by `&` form a multi-pattern; the right sides, joined the
//! same way, are equal to them in order.
//!
//! **Attributes as operands.** `reshape` and `broadcast` take their target shape, and `conv2d`
//! its window, as a last operand: `(reshape ?x ?s)`, `(conv2d ?x ?w ?win)`. In the e-graph that
//! attribute is a leaf child (see [`super::lang::lift`]), so a left side matches every target
//! shape or window and binds it to a variable, which a right side may reuse. A right side may
//! also compute a target: `(shape-of X)` is the dimensions of the type of term `X`, e.g.
//! `(broadcast ?c (shape-of ?a))`. A variable's kind (tensor, shape, window) follows from where
//! it appears; using one variable as two kinds is an error.
//!
//! Conditions (`if c1, c2`) are named predicates on the matched classes: `same-rank(?a, ?b)`,
//! `same-type(?a, ?b)`, `rank(?a, N)`, `min-rank(?a, N)`, `distinct(?a, ?b)` (different
//! e-classes), `disjoint(?a, ?b)` (computed from disjoint sets of graph inputs) and
//! `ordered(?a, ?b)` (every input of `?a` comes before every input of `?b`). Merge rules use
//! `ordered`: it keeps a merged weight from being merged again with a part of itself, and
//! builds one concatenation order (`q ‖ k ‖ v`), so greedy extraction cannot pick two
//! different merged matmuls for the three projections. On shapes: `shape-is(?x, ?s)` (tensor
//! `?x` has shape `?s`), `same-except(?a, ?b, AXIS)` (same rank, equal dimensions except at
//! `AXIS`: concatenable) and `unit-except(?x, AXIS)` (all dimensions 1 but the one at `AXIS`:
//! a per-channel vector).
//!
//! **Scheduling.** A rule may end with `limit N`: after `N` matches in one iteration egg's
//! backoff scheduler bans it for a few iterations (doubling each time). The built-in
//! associativity, commutativity and distributivity rules use it, so they cannot fill the
//! e-graph before the rules that pay off have run.
//!
//! **Type check at load time.** Types of a rule cannot be derived symbolically from the shape
//! rules (they are Rust code), so each rule is instantiated on sample types: every assignment
//! of a fixed list of f64 shapes to its variables. Where the left sides type-check and the
//! conditions hold, each right side must type-check with its left side's type; a rule for which
//! no sample type-checks, or one whose sides differ on any sample, is rejected. The same
//! instances seed the numeric property tests.

use super::lang::{generic_conv, infer_result, is_lifted, lower, AttrValue, ShapeAnalysis, TsrEGraph, TsrNode};
use egg::{Applier, Id, MultiPattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::conv::Window;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// A located problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {message}")]
pub struct RuleError {
    pub source_name: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// An operator of the rule language.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleOp {
    /// A tsr op with its attributes (axes counted from the end).
    Fixed(Op),
    /// `(part I AXIS X ?v...)`: piece `index` of `X` along `axis` (right sides only).
    Part { index: usize, axis: i64 },
    /// `(shape-of X)`: the dimensions of `X`'s type, as the target of a `reshape` or
    /// `broadcast` (right sides only).
    ShapeOf,
}

/// A term of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Var(String),
    App { op: RuleOp, args: Vec<Term> },
}

/// A named predicate on matched classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    SameRank(String, String),
    SameType(String, String),
    Rank(String, usize),
    MinRank(String, usize),
    Distinct(String, String),
    Disjoint(String, String),
    Ordered(String, String),
    /// `shape-is(?x, ?s)`: tensor `?x` has exactly the dimensions of shape `?s`.
    ShapeIs(String, String),
    /// `same-except(?a, ?b, AXIS)`: same rank, equal dimensions except at `AXIS` (from the
    /// end): the operands of a concatenation along `AXIS`.
    SameExcept(String, String, i64),
    /// `unit-except(?x, AXIS)`: every dimension of `?x` is 1 except the one at `AXIS` (from
    /// the end): a per-channel vector laid out for broadcasting.
    UnitExcept(String, i64),
}

/// What a rule variable stands for, fixed by where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    Tensor,
    /// The target shape of a `reshape` or `broadcast`.
    Shape,
    /// The window of a `conv2d`.
    Window,
}

/// A sample value of a rule variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Tensor(TensorType),
    Attr(AttrValue),
}

/// One rule, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// The comment lines just above the rule.
    pub doc: String,
    pub lhs: Vec<Term>,
    pub rhs: Vec<Term>,
    pub conditions: Vec<Condition>,
    /// Where the rule starts, for messages.
    pub source_name: String,
    pub line: usize,
    /// The kind of every variable (tensor, shape or window), from where it appears.
    pub kinds: BTreeMap<String, VarKind>,
    /// `limit N`: matches per iteration before the backoff scheduler bans the rule for a
    /// while (egg's default, 1000, when absent). Low limits tame associativity and
    /// commutativity, which otherwise fill the e-graph.
    pub match_limit: Option<usize>,
    /// The sample instances, computed on first use.
    pub instances: std::sync::OnceLock<Vec<Instance>>,
}

/// Values for a rule's variables (tensor types, shapes, windows) that make its left sides well
/// typed.
pub type Instance = Vec<(String, Sample)>;

/// Shapes tried for every tensor and shape variable by the load-time type check: ranks 0 to
/// 4, with unit dimensions for broadcasting and a 4-D image/kernel pair for convolutions.
const SAMPLE_SHAPES: &[&[u64]] = &[
    &[],
    &[4],
    &[3, 4],
    &[4, 3],
    &[4, 4],
    &[1, 4],
    &[4, 1],
    &[2, 3, 4],
    &[2, 4, 3],
    &[2, 4, 4],
    &[2, 1, 1],
    &[2, 2, 4, 3],
    &[2, 2, 3, 3],
    &[2, 2, 1, 1],
    &[2, 4, 2, 3],
];

/// Windows tried for every window variable: plain, and padded with stride 2.
fn sample_windows() -> Vec<AttrValue> {
    let window = |strides, pads| AttrValue::Conv { window: Window { strides, pads, dilations: [1, 1] }, groups: 1 };
    vec![window([1, 1], [0; 4]), window([2, 2], [1; 4])]
}

/// Most variables a rule may have (the type check enumerates `SAMPLE_SHAPES^vars`).
const MAX_VARS: usize = 5;

// ---------------------------------------------------------------- lexer and parser

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Amp,
    Arrow,
    Var(String),
    Int(i64),
    Word(String),
}

struct Lexed {
    tok: Tok,
    column: usize,
}

fn lex_line(text: &str, err: &dyn Fn(usize, String) -> RuleError) -> Result<Vec<Lexed>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            ':' => Some(Tok::Colon),
            '&' => Some(Tok::Amp),
            _ => None,
        };
        if let Some(tok) = single {
            out.push(Lexed { tok, column });
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        if c == '=' && chars.get(i + 1) == Some(&'>') {
            out.push(Lexed { tok: Tok::Arrow, column });
            i += 2;
            continue;
        }
        let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '?' || c == '.';
        if !word_char(c) {
            return Err(err(column, format!("unexpected character '{c}'")));
        }
        let start = i;
        while i < chars.len() && word_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let tok = if let Some(name) = word.strip_prefix('?') {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(column, format!("bad variable name '{word}'")));
            }
            Tok::Var(word.clone())
        } else if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            let n = word.parse().map_err(|_| err(column, format!("bad integer '{word}'")))?;
            Tok::Int(n)
        } else {
            Tok::Word(word)
        };
        out.push(Lexed { tok, column });
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [Lexed],
    at: usize,
    end_column: usize,
    err: &'a dyn Fn(usize, String) -> RuleError,
}

impl Parser<'_> {
    fn column(&self) -> usize {
        self.toks.get(self.at).map_or(self.end_column, |t| t.column)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.tok)
    }

    fn fail<T>(&self, message: String) -> Result<T, RuleError> {
        Err((self.err)(self.column(), message))
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), RuleError> {
        if self.peek() == Some(&tok) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(format!("expected {what}"))
        }
    }

    fn word(&mut self, what: &str) -> Result<(String, usize), RuleError> {
        let column = self.column();
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.at += 1;
                Ok((w, column))
            }
            _ => self.fail(format!("expected {what}")),
        }
    }

    fn var(&mut self) -> Result<String, RuleError> {
        match self.peek() {
            Some(Tok::Var(v)) => {
                let v = v.clone();
                self.at += 1;
                Ok(v)
            }
            _ => self.fail("expected a variable like ?a".into()),
        }
    }

    fn term(&mut self, rhs: bool) -> Result<Term, RuleError> {
        match self.peek() {
            Some(Tok::Var(_)) => Ok(Term::Var(self.var()?)),
            Some(Tok::LParen) => {
                self.at += 1;
                let (name, column) = self.word("an op name")?;
                let mut attrs: Vec<Attr> = Vec::new();
                loop {
                    match self.peek() {
                        Some(Tok::Int(n)) => {
                            attrs.push(Attr::Int(*n));
                            self.at += 1;
                        }
                        Some(Tok::LBracket) => {
                            self.at += 1;
                            let mut list = Vec::new();
                            while let Some(Tok::Int(n)) = self.peek() {
                                list.push(*n);
                                self.at += 1;
                            }
                            self.expect(Tok::RBracket, "']' or an integer")?;
                            attrs.push(Attr::List(list));
                        }
                        _ => break,
                    }
                }
                let mut args = Vec::new();
                while matches!(self.peek(), Some(Tok::Var(_)) | Some(Tok::LParen)) {
                    args.push(self.term(rhs)?);
                }
                self.expect(Tok::RParen, "')' or an operand")?;
                let op = rule_op(&name, &attrs, &args, rhs).map_err(|m| (self.err)(column, m))?;
                Ok(Term::App { op, args })
            }
            _ => self.fail("expected a term: a variable or '('".into()),
        }
    }

    fn terms(&mut self, rhs: bool) -> Result<Vec<Term>, RuleError> {
        let mut terms = vec![self.term(rhs)?];
        while self.peek() == Some(&Tok::Amp) {
            self.at += 1;
            terms.push(self.term(rhs)?);
        }
        Ok(terms)
    }

    fn condition(&mut self) -> Result<Condition, RuleError> {
        let (name, column) = self.word("a condition name")?;
        self.expect(Tok::LParen, "'(' after the condition name")?;
        let a = self.var()?;
        self.expect(Tok::Comma, "','")?;
        let cond = match name.as_str() {
            "same-rank" | "same-type" | "distinct" | "disjoint" | "ordered" | "shape-is" => {
                let b = self.var()?;
                match name.as_str() {
                    "same-rank" => Condition::SameRank(a, b),
                    "same-type" => Condition::SameType(a, b),
                    "distinct" => Condition::Distinct(a, b),
                    "ordered" => Condition::Ordered(a, b),
                    "shape-is" => Condition::ShapeIs(a, b),
                    _ => Condition::Disjoint(a, b),
                }
            }
            "same-except" => {
                let b = self.var()?;
                self.expect(Tok::Comma, "','")?;
                let axis = match self.peek() {
                    Some(Tok::Int(n)) if *n < 0 => *n,
                    _ => return self.fail("expected an axis counted from the end (a negative integer)".into()),
                };
                self.at += 1;
                Condition::SameExcept(a, b, axis)
            }
            "unit-except" => {
                let axis = match self.peek() {
                    Some(Tok::Int(n)) if *n < 0 => *n,
                    _ => return self.fail("expected an axis counted from the end (a negative integer)".into()),
                };
                self.at += 1;
                Condition::UnitExcept(a, axis)
            }
            "rank" | "min-rank" => {
                let n = match self.peek() {
                    Some(Tok::Int(n)) if *n >= 0 => *n as usize,
                    _ => return self.fail("expected a rank (a non-negative integer)".into()),
                };
                self.at += 1;
                if name == "rank" {
                    Condition::Rank(a, n)
                } else {
                    Condition::MinRank(a, n)
                }
            }
            _ => {
                return Err((self.err)(
                    column,
                    format!(
                        "unknown condition '{name}' (known: same-rank, same-type, rank, min-rank, distinct, disjoint, ordered, shape-is, same-except, unit-except)"
                    ),
                ))
            }
        };
        self.expect(Tok::RParen, "')'")?;
        Ok(cond)
    }
}

enum Attr {
    Int(i64),
    List(Vec<i64>),
}

fn rule_op(name: &str, attrs: &[Attr], args: &[Term], rhs: bool) -> Result<RuleOp, String> {
    let ints = || -> Result<Vec<i64>, String> {
        attrs
            .iter()
            .map(|a| match a {
                Attr::Int(n) => Ok(*n),
                Attr::List(_) => Err(format!("'{name}' takes integer attributes, not a list")),
            })
            .collect()
    };
    let arity = |n: usize| -> Result<(), String> {
        if args.len() != n {
            return Err(format!("'{name}' takes {n} operand(s), got {}", args.len()));
        }
        Ok(())
    };
    let no_attrs = || -> Result<(), String> {
        if !attrs.is_empty() {
            return Err(format!("'{name}' takes no attributes"));
        }
        Ok(())
    };
    let axis = |what: &str| -> Result<i64, String> {
        match ints()?.as_slice() {
            [a] if *a < 0 => Ok(*a),
            [a] => Err(format!("axes in rules count from the end: write {} for '{what}', not {a}", -1 - a)),
            _ => Err(format!("'{what}' takes one attribute, its axis")),
        }
    };
    let op = if let Some(u) = UnaryOp::from_mnemonic(name) {
        no_attrs()?;
        arity(1)?;
        Op::Unary(u)
    } else if let Some(b) = BinaryOp::from_mnemonic(name) {
        no_attrs()?;
        arity(2)?;
        Op::Binary(b)
    } else if let Some(c) = CompareOp::from_mnemonic(name) {
        no_attrs()?;
        arity(2)?;
        Op::Compare(c)
    } else {
        match name {
            "matmul" => {
                no_attrs()?;
                arity(2)?;
                Op::MatMul
            }
            "where" => {
                no_attrs()?;
                arity(3)?;
                Op::Where
            }
            // The target shape and the window are operands here (see the module doc).
            "reshape" => {
                no_attrs()?;
                arity(2)?;
                Op::Reshape { shape: vec![] }
            }
            "broadcast" => {
                no_attrs()?;
                arity(2)?;
                Op::Broadcast { shape: vec![] }
            }
            "conv2d" => {
                no_attrs()?;
                arity(3)?;
                generic_conv()
            }
            "shape-of" => {
                if !rhs {
                    return Err("'shape-of' may only appear on the right side".into());
                }
                no_attrs()?;
                arity(1)?;
                return Ok(RuleOp::ShapeOf);
            }
            "softmax" => {
                arity(1)?;
                Op::Softmax { axis: axis(name)? }
            }
            "concat" => {
                if args.len() < 2 {
                    return Err("'concat' takes at least 2 operands".into());
                }
                Op::Concat { axis: axis(name)? }
            }
            "transpose" => {
                arity(1)?;
                match attrs {
                    [Attr::List(perm)] => Op::Transpose { perm: perm.clone() },
                    _ => return Err("'transpose' takes one attribute, its permutation like [1 0]".into()),
                }
            }
            "part" => {
                if !rhs {
                    return Err("'part' may only appear on the right side".into());
                }
                let (index, ax) = match ints()?.as_slice() {
                    [i, a] if *i >= 0 && *a < 0 => (*i as usize, *a),
                    _ => return Err("'part' takes a piece index and a negative axis: (part 0 -1 X ?b ?c)".into()),
                };
                let pieces = args.get(1..).unwrap_or(&[]);
                if pieces.len() < 2 || index >= pieces.len() || !pieces.iter().all(|t| matches!(t, Term::Var(_))) {
                    return Err("'part' takes a term and at least two variables giving the piece sizes".into());
                }
                return Ok(RuleOp::Part { index, axis: ax });
            }
            _ => return Err(format!("unknown op '{name}' in a rule")),
        }
    };
    Ok(RuleOp::Fixed(op))
}

fn vars_of(t: &Term, out: &mut BTreeSet<String>) {
    match t {
        Term::Var(v) => {
            out.insert(v.clone());
        }
        Term::App { args, .. } => args.iter().for_each(|a| vars_of(a, out)),
    }
}

fn condition_vars(c: &Condition) -> Vec<&String> {
    match c {
        Condition::SameRank(a, b)
        | Condition::SameType(a, b)
        | Condition::Distinct(a, b)
        | Condition::Disjoint(a, b)
        | Condition::Ordered(a, b)
        | Condition::ShapeIs(a, b)
        | Condition::SameExcept(a, b, _) => vec![a, b],
        Condition::Rank(a, _) | Condition::MinRank(a, _) | Condition::UnitExcept(a, _) => vec![a],
    }
}

/// Parses a rule file. `source_name` is used in messages (a path, or `builtin:matmul.rules`).
/// Every rule is type-checked (see the module doc).
pub fn parse_rules(source_name: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |column: usize, message: String| RuleError {
            source_name: source_name.to_string(),
            line: line_no,
            column,
            message,
        };
        let trimmed = line.trim_start();
        if let Some(comment) = trimmed.strip_prefix('#') {
            doc.push(comment.trim().to_string());
            continue;
        }
        if trimmed.is_empty() {
            doc.clear();
            continue;
        }
        let toks = lex_line(line, &err)?;
        let mut p = Parser { toks: &toks, at: 0, end_column: line.chars().count() + 1, err: &err };
        match p.word("'rule'") {
            Ok((w, _)) if w == "rule" => {}
            _ => return Err(err(line.len() - trimmed.len() + 1, "expected 'rule NAME: LHS => RHS'".into())),
        }
        let name_column = p.column();
        let (name, _) = p.word("a rule name")?;
        if rules.iter().any(|r| r.name == name) {
            return Err(err(name_column, format!("rule '{name}' is defined twice")));
        }
        p.expect(Tok::Colon, "':' after the rule name")?;
        let lhs_column = p.column();
        let lhs = p.terms(false)?;
        if lhs.iter().any(|t| matches!(t, Term::Var(_))) {
            return Err(err(lhs_column, "a left side must be an op, not a bare variable".into()));
        }
        p.expect(Tok::Arrow, "'=>' or '&'")?;
        let rhs_column = p.column();
        let rhs = p.terms(true)?;
        if rhs.len() != lhs.len() {
            return Err(err(rhs_column, format!("{} left side(s) but {} right side(s)", lhs.len(), rhs.len())));
        }
        let mut conditions = Vec::new();
        if let Some(Tok::Word(w)) = p.peek() {
            if w == "if" {
                p.at += 1;
                conditions.push(p.condition()?);
                while p.peek() == Some(&Tok::Comma) {
                    p.at += 1;
                    conditions.push(p.condition()?);
                }
            }
        }
        let mut match_limit = None;
        if let Some(Tok::Word(w)) = p.peek() {
            if w == "limit" {
                p.at += 1;
                match p.peek() {
                    Some(Tok::Int(n)) if *n > 0 => match_limit = Some(*n as usize),
                    _ => return p.fail("expected a positive match limit after 'limit'".into()),
                }
                p.at += 1;
            }
        }
        if p.peek().is_some() {
            return p.fail("expected 'if', 'limit', '&' or the end of the rule".into());
        }
        let mut bound = BTreeSet::new();
        lhs.iter().for_each(|t| vars_of(t, &mut bound));
        let mut used = BTreeSet::new();
        rhs.iter().for_each(|t| vars_of(t, &mut used));
        for c in &conditions {
            used.extend(condition_vars(c).into_iter().cloned());
        }
        if let Some(v) = used.difference(&bound).next() {
            return Err(err(rhs_column, format!("variable {v} is not bound by the left side")));
        }
        if bound.len() > MAX_VARS {
            return Err(err(lhs_column, format!("at most {MAX_VARS} variables per rule, got {}", bound.len())));
        }
        let kinds = var_kinds(lhs.iter().chain(&rhs)).map_err(|m| err(lhs_column, m))?;
        let rule = Rule {
            name,
            doc: doc.join(" "),
            lhs,
            rhs,
            conditions,
            source_name: source_name.to_string(),
            line: line_no,
            kinds,
            match_limit,
            instances: std::sync::OnceLock::new(),
        };
        doc.clear();
        type_check(&rule).map_err(|m| err(1, m))?;
        rules.push(rule);
    }
    Ok(rules)
}

// ---------------------------------------------------------------- instantiation

/// Facts a condition may ask about matched variables.
struct Facts<'a> {
    ty: &'a dyn Fn(&str) -> Option<TensorType>,
    attr: &'a dyn Fn(&str) -> Option<AttrValue>,
    same: &'a dyn Fn(&str, &str) -> bool,
    disjoint: &'a dyn Fn(&str, &str) -> bool,
    ordered: &'a dyn Fn(&str, &str) -> bool,
}

fn holds(c: &Condition, facts: &Facts) -> bool {
    let (ty, same) = (facts.ty, facts.same);
    match c {
        Condition::SameRank(a, b) => matches!((ty(a), ty(b)), (Some(x), Some(y)) if x.rank() == y.rank()),
        Condition::SameType(a, b) => matches!((ty(a), ty(b)), (Some(x), Some(y)) if x == y),
        Condition::Rank(a, n) => ty(a).is_some_and(|t| t.rank() == *n),
        Condition::MinRank(a, n) => ty(a).is_some_and(|t| t.rank() >= *n),
        Condition::Distinct(a, b) => !same(a, b),
        Condition::Disjoint(a, b) => (facts.disjoint)(a, b),
        Condition::Ordered(a, b) => (facts.ordered)(a, b),
        Condition::ShapeIs(a, b) => {
            matches!((ty(a), (facts.attr)(b)), (Some(t), Some(AttrValue::Shape(dims))) if t.dims == dims)
        }
        Condition::SameExcept(a, b, axis) => match (ty(a), ty(b)) {
            (Some(x), Some(y)) if x.rank() == y.rank() => {
                let skip = tessera_ir::types::normalize_axis(*axis, x.rank());
                skip.is_some() && x.dims.iter().zip(&y.dims).enumerate().all(|(i, (p, q))| Some(i) == skip || p == q)
            }
            _ => false,
        },
        Condition::UnitExcept(a, axis) => ty(a).is_some_and(|t| {
            let keep = tessera_ir::types::normalize_axis(*axis, t.rank());
            keep.is_some() && t.dims.iter().enumerate().all(|(i, d)| Some(i) == keep || *d == Dim::Static(1))
        }),
    }
}

/// The slice op of `(part ...)`, for an operand of type `x` and piece types `pieces`.
fn part_op(index: usize, axis: i64, x: &TensorType, pieces: &[&TensorType]) -> Result<Op, String> {
    let rank = x.rank();
    let ax =
        tessera_ir::types::normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} out of range for {x}"))?;
    let mut sizes = Vec::new();
    for p in pieces {
        // Each piece's axis counts from its own end (pieces may have fewer batch dimensions).
        let pax = tessera_ir::types::normalize_axis(axis, p.rank());
        match pax.and_then(|a| p.dims.get(a)) {
            Some(Dim::Static(n)) => sizes.push(*n as i64),
            _ => return Err("piece sizes must be static".into()),
        }
    }
    let start: i64 = sizes[..index].iter().sum();
    let mut starts = vec![0; rank];
    let mut ends = vec![i64::MAX; rank];
    starts[ax] = start;
    ends[ax] = start + sizes[index];
    Ok(Op::Slice { starts, ends, steps: vec![1; rank] })
}

/// How to look up the values of a rule's variables.
struct Env<'a> {
    ty: &'a dyn Fn(&str) -> Option<TensorType>,
    attr: &'a dyn Fn(&str) -> Option<AttrValue>,
}

/// The type of tensor term `t`, by the shape rules alone; `None` when ill-typed.
fn term_type(t: &Term, env: &Env) -> Option<TensorType> {
    match t {
        Term::Var(v) => (env.ty)(v),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let (op, tensors) = if is_lifted(op) {
                let (last, rest) = args.split_last()?;
                (lower(op, &term_attr(last, env)?)?, rest)
            } else {
                (op.clone(), &args[..])
            };
            let types = tensors.iter().map(|a| term_type(a, env)).collect::<Option<Vec<_>>>()?;
            let refs: Vec<&TensorType> = types.iter().collect();
            infer_result(&op, 0, &refs).ok()
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let types = args.iter().map(|a| term_type(a, env)).collect::<Option<Vec<_>>>()?;
            let pieces: Vec<&TensorType> = types[1..].iter().collect();
            let op = part_op(*index, *axis, &types[0], &pieces).ok()?;
            infer_result(&op, 0, &[&types[0]]).ok()
        }
        Term::App { op: RuleOp::ShapeOf, .. } => None,
    }
}

/// The value of attribute term `t` (a shape or window variable, or `(shape-of X)`).
fn term_attr(t: &Term, env: &Env) -> Option<AttrValue> {
    match t {
        Term::Var(v) => (env.attr)(v),
        Term::App { op: RuleOp::ShapeOf, args } => Some(AttrValue::Shape(term_type(args.first()?, env)?.dims)),
        Term::App { .. } => None,
    }
}

/// Adds `t` to graph `g` with tensor variables bound by `env` and attribute variables by
/// `attrs`; errors when a node is ill-typed.
pub fn add_term(
    g: &mut Graph,
    t: &Term,
    env: &HashMap<String, ValueId>,
    attrs: &HashMap<String, AttrValue>,
) -> Result<ValueId, String> {
    match t {
        Term::Var(v) => env.get(v).copied().ok_or_else(|| format!("unbound {v}")),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let (op, tensors) = if is_lifted(op) {
                let ty = |v: &str| env.get(v).map(|&id| g.value(id).ty.clone());
                let attr = |v: &str| attrs.get(v).cloned();
                let (last, rest) = args.split_last().ok_or("a lifted op without operands")?;
                let value = term_attr(last, &Env { ty: &ty, attr: &attr }).ok_or("ill-typed attribute")?;
                (lower(op, &value).ok_or("attribute of the wrong kind")?, rest)
            } else {
                (op.clone(), &args[..])
            };
            let operands = tensors.iter().map(|a| add_term(g, a, env, attrs)).collect::<Result<Vec<_>, _>>()?;
            let rank = operands.first().map_or(0, |&v| g.value(v).ty.rank());
            let op = super::lang::normalize(&op, rank);
            g.add(op, &operands).map_err(|e| e.to_string())
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let x = add_term(g, &args[0], env, attrs)?;
            let pieces = args[1..].iter().map(|a| add_term(g, a, env, attrs)).collect::<Result<Vec<_>, _>>()?;
            let piece_types: Vec<&TensorType> = pieces.iter().map(|&p| &g.value(p).ty).collect();
            let op = part_op(*index, *axis, &g.value(x).ty, &piece_types)?;
            g.add(op, &[x]).map_err(|e| e.to_string())
        }
        Term::App { op: RuleOp::ShapeOf, .. } => Err("'shape-of' is not a tensor".into()),
    }
}

/// A graph whose inputs are the rule's tensor variables (typed by `inst`) and whose outputs
/// are the left sides followed by the right sides; `Err` when a side is ill-typed.
pub fn instance_graph(rule: &Rule, inst: &Instance) -> Result<Graph, String> {
    let mut g = Graph::new(&rule.name);
    let mut env = HashMap::new();
    let mut attrs = HashMap::new();
    for (name, sample) in inst {
        match sample {
            Sample::Tensor(ty) => {
                let input = g.add_input(name.trim_start_matches('?'), ty.clone(), InputRole::Activation);
                env.insert(name.clone(), input);
            }
            Sample::Attr(a) => {
                attrs.insert(name.clone(), a.clone());
            }
        }
    }
    let mut outs = Vec::new();
    for t in rule.lhs.iter().chain(&rule.rhs) {
        outs.push(add_term(&mut g, t, &env, &attrs)?);
    }
    g.set_outputs(outs);
    Ok(g)
}

/// The kind of every variable in `terms` (by position: the last operand of `reshape` and
/// `broadcast` is a shape, of `conv2d` a window); `Err` on a variable used as two kinds or an
/// attribute position holding anything but a variable or `(shape-of X)`.
fn var_kinds<'a>(terms: impl Iterator<Item = &'a Term>) -> Result<BTreeMap<String, VarKind>, String> {
    fn walk(t: &Term, want: VarKind, kinds: &mut BTreeMap<String, VarKind>) -> Result<(), String> {
        match t {
            Term::Var(v) => match kinds.insert(v.clone(), want) {
                Some(old) if old != want => Err(format!("variable {v} is used both as a {old:?} and as a {want:?}")),
                _ => Ok(()),
            },
            Term::App { op: RuleOp::ShapeOf, args } => {
                if want != VarKind::Shape {
                    return Err("(shape-of X) can only be the target shape of a reshape or broadcast".into());
                }
                args.iter().try_for_each(|a| walk(a, VarKind::Tensor, kinds))
            }
            Term::App { op, args } => {
                if want != VarKind::Tensor {
                    return Err(format!("a {want:?} must be a variable or (shape-of X)"));
                }
                let lifted = matches!(op, RuleOp::Fixed(op) if is_lifted(op));
                for (i, a) in args.iter().enumerate() {
                    let kind = match op {
                        RuleOp::Fixed(Op::Conv2d { .. }) if lifted && i + 1 == args.len() => VarKind::Window,
                        RuleOp::Fixed(_) if lifted && i + 1 == args.len() => VarKind::Shape,
                        _ => VarKind::Tensor,
                    };
                    walk(a, kind, kinds)?;
                }
                Ok(())
            }
        }
    }
    let mut kinds = BTreeMap::new();
    for t in terms {
        walk(t, VarKind::Tensor, &mut kinds)?;
    }
    Ok(kinds)
}

impl Rule {
    /// Every sample instance whose left sides type-check and whose conditions hold (computed
    /// once per rule).
    pub fn sample_instances(&self) -> Vec<Instance> {
        self.instances.get_or_init(|| self.enumerate_instances()).clone()
    }

    fn enumerate_instances(&self) -> Vec<Instance> {
        let vars: Vec<(String, VarKind)> = self.kinds.iter().map(|(v, k)| (v.clone(), *k)).collect();
        let shapes: Vec<Vec<u64>> = SAMPLE_SHAPES.iter().map(|s| s.to_vec()).collect();
        let choices: Vec<Vec<Sample>> = vars
            .iter()
            .map(|(_, kind)| match kind {
                VarKind::Tensor => {
                    shapes.iter().map(|s| Sample::Tensor(TensorType::of_static(DType::F64, s))).collect()
                }
                VarKind::Shape => shapes
                    .iter()
                    .map(|s| Sample::Attr(AttrValue::Shape(s.iter().map(|&n| Dim::Static(n)).collect())))
                    .collect(),
                VarKind::Window => sample_windows().into_iter().map(Sample::Attr).collect(),
            })
            .collect();
        let total: usize = choices.iter().map(Vec::len).product();
        let mut out = Vec::new();
        for mut code in 0..total {
            let inst: Instance = vars
                .iter()
                .zip(&choices)
                .map(|((v, _), options)| {
                    let sample = options[code % options.len()].clone();
                    code /= options.len();
                    (v.clone(), sample)
                })
                .collect();
            let ty = |name: &str| {
                inst.iter().find_map(|(v, s)| match s {
                    Sample::Tensor(t) if v == name => Some(t.clone()),
                    _ => None,
                })
            };
            let attr = |name: &str| {
                inst.iter().find_map(|(v, s)| match s {
                    Sample::Attr(a) if v == name => Some(a.clone()),
                    _ => None,
                })
            };
            // Sample variables are distinct inputs, listed in order.
            let facts =
                Facts { ty: &ty, attr: &attr, same: &|a, b| a == b, disjoint: &|a, b| a != b, ordered: &|a, b| a < b };
            if !self.conditions.iter().all(|c| holds(c, &facts)) {
                continue;
            }
            let env = Env { ty: &ty, attr: &attr };
            if self.lhs.iter().all(|t| term_type(t, &env).is_some()) {
                out.push(inst);
            }
        }
        out
    }
}

fn type_check(rule: &Rule) -> Result<(), String> {
    let instances = rule.sample_instances();
    if instances.is_empty() {
        return Err(format!("rule '{}': no sample shapes make the left side well typed", rule.name));
    }
    for inst in &instances {
        let g = instance_graph(rule, inst).map_err(|m| {
            format!(
                "rule '{}': the right side is ill-typed where the left side is not ({}): {m}",
                rule.name,
                show(inst)
            )
        })?;
        let k = rule.lhs.len();
        for i in 0..k {
            let (l, r) = (&g.value(g.outputs()[i]).ty, &g.value(g.outputs()[k + i]).ty);
            if l != r {
                return Err(format!(
                    "rule '{}': the sides have different types, {l} and {r} ({})",
                    rule.name,
                    show(inst)
                ));
            }
        }
    }
    Ok(())
}

fn show(inst: &Instance) -> String {
    let show_sample = |s: &Sample| match s {
        Sample::Tensor(t) => t.to_string(),
        Sample::Attr(a) => format!("{a:?}"),
    };
    inst.iter().map(|(v, s)| format!("{v}: {}", show_sample(s))).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------- egg rewrites

fn pattern(t: &Term, ast: &mut PatternAst<TsrNode>) -> Result<Id, String> {
    Ok(match t {
        Term::Var(v) => ast.add(egg::ENodeOrVar::Var(v.parse::<Var>().map_err(|e| format!("{e:?}"))?)),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let children = args.iter().map(|a| pattern(a, ast)).collect::<Result<Vec<_>, _>>()?;
            ast.add(egg::ENodeOrVar::ENode(TsrNode::op(op.clone(), 0, children)))
        }
        Term::App { op: RuleOp::Part { .. } | RuleOp::ShapeOf, .. } => {
            return Err("'part' or 'shape-of' in a left side".into())
        }
    })
}

struct RuleApplier {
    rule: Arc<Rule>,
    roots: Vec<Var>,
}

fn subst_class(subst: &Subst, name: &str) -> Option<Id> {
    name.parse::<Var>().ok().and_then(|v| subst.get(v).copied())
}

/// Types `t` under `subst` without touching the e-graph; `None` when ill-typed.
fn type_of(egraph: &TsrEGraph, t: &Term, subst: &Subst) -> Option<TensorType> {
    let ty = |name: &str| subst_class(subst, name).and_then(|id| egraph[id].data.ty.clone());
    let attr = |name: &str| subst_class(subst, name).and_then(|id| egraph[id].data.attr.as_deref().cloned());
    term_type(t, &Env { ty: &ty, attr: &attr })
}

fn add_to_egraph(egraph: &mut TsrEGraph, t: &Term, subst: &Subst) -> Option<Id> {
    match t {
        Term::Var(v) => subst_class(subst, v),
        Term::App { op: RuleOp::Fixed(op), args } => {
            let children = args.iter().map(|a| add_to_egraph(egraph, a, subst)).collect::<Option<Vec<_>>>()?;
            Some(egraph.add(TsrNode::op(op.clone(), 0, children)))
        }
        Term::App { op: RuleOp::Part { index, axis }, args } => {
            let x = add_to_egraph(egraph, &args[0], subst)?;
            let pieces = args[1..].iter().map(|a| type_of(egraph, a, subst)).collect::<Option<Vec<_>>>()?;
            let xt = egraph[x].data.ty.clone()?;
            let refs: Vec<&TensorType> = pieces.iter().collect();
            let op = part_op(*index, *axis, &xt, &refs).ok()?;
            Some(egraph.add(TsrNode::op(op, 0, vec![x])))
        }
        Term::App { op: RuleOp::ShapeOf, args } => {
            let dims = type_of(egraph, args.first()?, subst)?.dims;
            Some(egraph.add(AttrValue::Shape(dims).node()))
        }
    }
}

impl Applier<TsrNode, ShapeAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut TsrEGraph,
        _eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<TsrNode>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let lookup = |name: &str| subst_class(subst, name);
        let ty = |name: &str| lookup(name).and_then(|id| egraph[id].data.ty.clone());
        let attr = |name: &str| lookup(name).and_then(|id| egraph[id].data.attr.as_deref().cloned());
        let same = |a: &str, b: &str| lookup(a).map(|x| egraph.find(x)) == lookup(b).map(|y| egraph.find(y));
        let deps = |name: &str| lookup(name).map(|id| egraph[id].data.deps);
        let disjoint = |a: &str, b: &str| matches!((deps(a), deps(b)), (Some(x), Some(y)) if x & y == 0);
        let ordered = |a: &str, b: &str| match (deps(a), deps(b)) {
            // Every input of `a` has a smaller index (mod 64) than every input of `b`.
            (Some(x), Some(y)) if x != 0 && y != 0 => 63 - x.leading_zeros() < y.trailing_zeros(),
            _ => false,
        };
        let facts = Facts { ty: &ty, attr: &attr, same: &same, disjoint: &disjoint, ordered: &ordered };
        if !self.rule.conditions.iter().all(|c| holds(c, &facts)) {
            return vec![];
        }
        // Check every right side's type first, so an ill-typed instance adds nothing.
        for (rhs, root) in self.rule.rhs.iter().zip(&self.roots) {
            let root_ty = egraph[subst[*root]].data.ty.clone();
            if root_ty.is_none() || type_of(egraph, rhs, subst) != root_ty {
                return vec![];
            }
        }
        let mut changed = Vec::new();
        for (rhs, root) in self.rule.rhs.iter().zip(&self.roots) {
            let Some(new) = add_to_egraph(egraph, rhs, subst) else {
                return changed;
            };
            let root = subst[*root];
            if egraph.union_trusted(root, new, rule_name) {
                changed.push(root);
            }
        }
        changed
    }
}

/// The egg rewrite of `rule`.
pub fn rewrite(rule: &Rule) -> Result<Rewrite<TsrNode, ShapeAnalysis>, String> {
    let mut asts = Vec::new();
    let mut roots = Vec::new();
    for (i, lhs) in rule.lhs.iter().enumerate() {
        let mut ast = PatternAst::default();
        pattern(lhs, &mut ast)?;
        let root: Var = format!("?root{i}").parse().map_err(|e| format!("{e:?}"))?;
        asts.push((root, ast));
        roots.push(root);
    }
    let applier = RuleApplier { rule: Arc::new(rule.clone()), roots };
    Rewrite::new(rule.name.clone(), MultiPattern::new(asts), applier)
}

/// The built-in rule files, by topic.
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("builtin:conv.rules", include_str!("../../rules/conv.rules")),
    ("builtin:elementwise.rules", include_str!("../../rules/elementwise.rules")),
    ("builtin:layout.rules", include_str!("../../rules/layout.rules")),
    ("builtin:matmul.rules", include_str!("../../rules/matmul.rules")),
    ("builtin:shape.rules", include_str!("../../rules/shape.rules")),
];

/// The built-in rules (parsed and type-checked once per process).
pub fn builtin() -> Result<&'static [Rule], RuleError> {
    static BUILTIN: std::sync::OnceLock<Result<Vec<Rule>, RuleError>> = std::sync::OnceLock::new();
    let parsed = BUILTIN.get_or_init(|| {
        let mut all = Vec::new();
        for (name, text) in BUILTIN_FILES {
            all.extend(parse_rules(name, text)?);
        }
        Ok(all)
    });
    parsed.as_ref().map(|v| v.as_slice()).map_err(Clone::clone)
}
