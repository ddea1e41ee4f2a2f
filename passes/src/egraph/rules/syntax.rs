//! Rule syntax: the line lexer, the term and condition parser, and the resolution of a rule
//! token (`matmul`, `concat -1`, `part`, `shape-of`) to a rule operator; see [`super`] for the
//! format.

use super::typecheck::{type_check, var_kinds, MAX_VARS};
use super::{Condition, Rule, RuleError, RuleOp, Term};
use crate::egraph::lang::{generic_conv, generic_winograd_input};
use std::collections::BTreeSet;
use tessera_ir::ops::attr::AttrMap;
use tessera_ir::ops::table::Arity;
use tessera_ir::ops::Op;

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
            "winograd" => {
                let b = self.var()?;
                Condition::Winograd(a, b)
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
                        "unknown condition '{name}' (known: same-rank, same-type, rank, min-rank, distinct, disjoint, ordered, shape-is, same-except, unit-except, winograd)"
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
    let op = match name {
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
        "winograd_input" => {
            no_attrs()?;
            arity(2)?;
            generic_winograd_input()
        }
        "winograd_output" => {
            no_attrs()?;
            arity(2)?;
            Op::WinogradOutput { shape: vec![] }
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
        // Any other op that needs no attributes and has one result, by the op table.
        _ => match (Op::signature(name), Op::from_parts(name, AttrMap::default(), &[])) {
            (Some((Arity::Fixed(n), Arity::Fixed(1))), Ok(op)) if !op.is_communication() => {
                no_attrs()?;
                arity(n)?;
                op
            }
            _ => return Err(format!("unknown op '{name}' in a rule")),
        },
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
        | Condition::SameExcept(a, b, _)
        | Condition::Winograd(a, b) => vec![a, b],
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
