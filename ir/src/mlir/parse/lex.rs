//! The lexer of the tsr text form: tokens, source positions and one token of lookahead, as
//! methods of the [`Parser`](super::Parser) that owns the position. Every method is linear in
//! the bytes it consumes; nothing here backtracks beyond one token.

use super::{Loc, PResult, ParseError, Parser};
use crate::quote::clip;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// `%name`, or `%name#3` (a use of result 3 of a result group).
    Value {
        name: String,
        index: Option<u32>,
    },
    /// `@name` or `@"any name"`.
    Symbol(String),
    /// `^name`, a block label (the entry block of a region: `^bb0(%a: type):`).
    Block(String),
    /// A bare identifier: `func.func`, `return`, `tensor`, `axis`, `tsr.param`, `i64`, ...
    Ident(String),
    /// A decimal integer literal, sign included.
    Int(String),
    /// A float literal (has a `.`), sign included.
    Float(String),
    /// `0x...`, the digits only.
    Hex(String),
    Str(String),
    Arrow,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Less,
    Greater,
    Comma,
    Equal,
    Colon,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Value { name, index: None } => write!(f, "'%{}'", clip(name)),
            Tok::Value { name, index: Some(i) } => write!(f, "'%{}#{i}'", clip(name)),
            Tok::Symbol(s) => write!(f, "'@{}'", clip(s)),
            Tok::Block(s) => write!(f, "'^{}'", clip(s)),
            Tok::Ident(s) | Tok::Int(s) | Tok::Float(s) => write!(f, "'{}'", clip(s)),
            Tok::Hex(s) => write!(f, "'0x{}'", clip(s)),
            Tok::Str(_) => f.write_str("string"),
            Tok::Arrow => f.write_str("'->'"),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBrace => f.write_str("'{'"),
            Tok::RBrace => f.write_str("'}'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::Less => f.write_str("'<'"),
            Tok::Greater => f.write_str("'>'"),
            Tok::Comma => f.write_str("','"),
            Tok::Equal => f.write_str("'='"),
            Tok::Colon => f.write_str("':'"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

/// What kind of number [`Parser::lex_number_span`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumberKind {
    Int,
    Float,
    Hex,
}

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_$.".contains(&b)
}

fn is_suffix_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_$.-".contains(&b)
}

pub(super) fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl<'a> Parser<'a> {
    pub(super) fn loc(&self, offset: usize) -> Loc {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = match self.text.get(start..offset) {
            Some(s) => s.chars().count(),
            None => offset.saturating_sub(start),
        };
        Loc { line: u32::try_from(line).unwrap_or(u32::MAX), col: u32::try_from(col + 1).unwrap_or(u32::MAX) }
    }

    pub(super) fn err<T>(&self, offset: usize, message: impl Into<String>) -> PResult<T> {
        Err(ParseError::at(self.loc(offset), message))
    }

    pub(super) fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    pub(super) fn skip_trivia(&mut self) {
        loop {
            match self.byte(self.pos) {
                Some(b) if b.is_ascii_whitespace() => self.pos += 1,
                Some(b'/') if self.byte(self.pos + 1) == Some(b'/') => {
                    while let Some(b) = self.byte(self.pos) {
                        if b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    pub(super) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.byte(self.pos).is_some_and(&pred) {
            self.pos += 1;
        }
        // Predicates only accept ASCII, so the slice ends on a character boundary.
        self.text.get(start..self.pos).unwrap_or("")
    }

    /// Lexes the token at `self.pos` and returns it with its start offset.
    pub(super) fn lex(&mut self) -> PResult<(Tok, usize)> {
        self.skip_trivia();
        let start = self.pos;
        let Some(b) = self.byte(start) else {
            return Ok((Tok::Eof, start));
        };
        let single = |t: Tok| Some(t);
        let punct = match b {
            b'(' => single(Tok::LParen),
            b')' => single(Tok::RParen),
            b'{' => single(Tok::LBrace),
            b'}' => single(Tok::RBrace),
            b'[' => single(Tok::LBracket),
            b']' => single(Tok::RBracket),
            b'<' => single(Tok::Less),
            b'>' => single(Tok::Greater),
            b',' => single(Tok::Comma),
            b'=' => single(Tok::Equal),
            b':' => single(Tok::Colon),
            _ => None,
        };
        if let Some(t) = punct {
            self.pos += 1;
            return Ok((t, start));
        }
        match b {
            b'-' if self.byte(start + 1) == Some(b'>') => {
                self.pos += 2;
                Ok((Tok::Arrow, start))
            }
            b'-' | b'0'..=b'9' => self.lex_number(start),
            b'%' => {
                self.pos += 1;
                let name = self.lex_suffix_id(start, "value name")?;
                let index = if self.byte(self.pos) == Some(b'#') {
                    self.pos += 1;
                    let digits = self.take_while(|b| b.is_ascii_digit());
                    match digits.parse::<u32>() {
                        Ok(i) => Some(i),
                        Err(_) => return self.err(start, format!("expected a result number after '%{name}#'")),
                    }
                } else {
                    None
                };
                Ok((Tok::Value { name, index }, start))
            }
            b'@' => {
                self.pos += 1;
                if self.byte(self.pos) == Some(b'"') {
                    let s = self.lex_string()?;
                    return Ok((Tok::Symbol(s), start));
                }
                if !self.byte(self.pos).is_some_and(is_id_start) {
                    return self.err(start, "expected a symbol name after '@'");
                }
                let name = self.take_while(is_id_char).to_string();
                Ok((Tok::Symbol(name), start))
            }
            b'^' => {
                self.pos += 1;
                let name = self.lex_suffix_id(start, "block name")?;
                Ok((Tok::Block(name), start))
            }
            b'"' => Ok((Tok::Str(self.lex_string()?), start)),
            b if is_id_start(b) => Ok((Tok::Ident(self.take_while(is_id_char).to_string()), start)),
            _ => {
                let c = self.text.get(start..).and_then(|s| s.chars().next()).unwrap_or('?');
                self.err(start, format!("unexpected character '{}'", c.escape_default()))
            }
        }
    }

    /// After `%`: a decimal number or `[A-Za-z_$.-][A-Za-z0-9_$.-]*`, MLIR's suffix-id.
    pub(super) fn lex_suffix_id(&mut self, start: usize, what: &str) -> PResult<String> {
        let name = match self.byte(self.pos) {
            Some(b) if b.is_ascii_digit() => {
                let digits = self.take_while(|b| b.is_ascii_digit());
                if self.byte(self.pos).is_some_and(is_suffix_char) {
                    return self.err(start, format!("invalid {what}: a numeric name has only digits"));
                }
                digits
            }
            Some(b) if b.is_ascii_alphabetic() || b"_$.-".contains(&b) => self.take_while(is_suffix_char),
            _ => return self.err(start, format!("expected a {what} after '%'")),
        };
        Ok(name.to_string())
    }

    pub(super) fn lex_number(&mut self, start: usize) -> PResult<(Tok, usize)> {
        let kind = self.lex_number_span(start)?;
        let text = self.text.get(start..self.pos).unwrap_or("");
        let tok = match kind {
            NumberKind::Hex => Tok::Hex(text.get(2..).unwrap_or("").to_string()),
            NumberKind::Float => Tok::Float(text.to_string()),
            NumberKind::Int => Tok::Int(text.to_string()),
        };
        Ok((tok, start))
    }

    /// Lexes the number at `start` (`self.pos`) without allocating: afterwards its text is
    /// `start..self.pos` (`0x` included for hex). The dense-literal reader takes elements this
    /// way, as spans of the text, so a list of millions of numbers makes no string per element.
    pub(super) fn lex_number_span(&mut self, start: usize) -> PResult<NumberKind> {
        let negative = self.byte(self.pos) == Some(b'-');
        if negative {
            self.pos += 1;
        }
        if !self.byte(self.pos).is_some_and(|b| b.is_ascii_digit()) {
            return self.err(start, "expected a digit after '-'");
        }
        if !negative && self.byte(self.pos) == Some(b'0') && self.byte(self.pos + 1) == Some(b'x') {
            self.pos += 2;
            let digits = self.take_while(|b| b.is_ascii_hexdigit());
            if digits.is_empty() {
                return self.err(start, "expected hex digits after '0x'");
            }
            return Ok(NumberKind::Hex);
        }
        self.take_while(|b| b.is_ascii_digit());
        let mut is_float = false;
        if self.byte(self.pos) == Some(b'.') {
            is_float = true;
            self.pos += 1;
            self.take_while(|b| b.is_ascii_digit());
            if matches!(self.byte(self.pos), Some(b'e' | b'E')) {
                let save = self.pos;
                self.pos += 1;
                if matches!(self.byte(self.pos), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.take_while(|b| b.is_ascii_digit()).is_empty() {
                    self.pos = save;
                    return self.err(save, "expected digits in the float exponent");
                }
            }
        }
        if self.byte(self.pos).is_some_and(is_id_char) {
            return self.err(start, "malformed number");
        }
        Ok(if is_float { NumberKind::Float } else { NumberKind::Int })
    }

    /// A `"..."` literal with MLIR's escapes (`\"`, `\\`, `\n`, `\t`, `\XX`).
    pub(super) fn lex_string(&mut self) -> PResult<String> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut bytes = Vec::new();
        loop {
            match self.byte(self.pos) {
                None | Some(b'\n') => return self.err(start, "unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let esc = self.pos;
                    self.pos += 1;
                    match self.byte(self.pos) {
                        Some(c @ (b'"' | b'\\')) => {
                            bytes.push(c);
                            self.pos += 1;
                        }
                        Some(b'n') => {
                            bytes.push(b'\n');
                            self.pos += 1;
                        }
                        Some(b't') => {
                            bytes.push(b'\t');
                            self.pos += 1;
                        }
                        _ => match self.bytes.get(self.pos..self.pos + 2) {
                            Some(&[hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                                bytes.push(hex_value(hi) * 16 + hex_value(lo));
                                self.pos += 2;
                            }
                            _ => return self.err(esc, "unknown escape in string"),
                        },
                    }
                }
                Some(b) => {
                    bytes.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(bytes).or_else(|_| self.err(start, "string is not valid UTF-8"))
    }

    /// The lookahead entry, lexing one when none is buffered.
    pub(super) fn fill(&mut self) -> PResult<(Tok, usize, usize)> {
        match self.peeked.take() {
            Some(entry) => Ok(entry),
            None => {
                let (tok, start) = self.lex()?;
                Ok((tok, start, self.pos))
            }
        }
    }

    pub(super) fn peek(&mut self) -> PResult<&Tok> {
        let entry = self.fill()?;
        Ok(&self.peeked.insert(entry).0)
    }

    /// Start offset of the next token.
    pub(super) fn peek_start(&mut self) -> PResult<usize> {
        let entry = self.fill()?;
        Ok(self.peeked.insert(entry).1)
    }

    pub(super) fn next(&mut self) -> PResult<(Tok, usize)> {
        let (tok, start, end) = self.fill()?;
        self.pos = end;
        Ok((tok, start))
    }

    pub(super) fn eat(&mut self, want: &Tok) -> PResult<bool> {
        if self.peek()? == want {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn expect(&mut self, want: &Tok, context: &str) -> PResult<usize> {
        let (tok, start) = self.next()?;
        if &tok == want {
            return Ok(start);
        }
        self.unexpected(&tok, start, &format!("{want}{context}"))
    }

    pub(super) fn unexpected<T>(&self, got: &Tok, at: usize, expected: &str) -> PResult<T> {
        if *got == Tok::Eof {
            return self.err(at, format!("unexpected end of input, expected {expected}"));
        }
        self.err(at, format!("expected {expected}, got {got}"))
    }

    pub(super) fn eat_keyword(&mut self, word: &str) -> PResult<bool> {
        if matches!(self.peek()?, Tok::Ident(s) if s == word) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }
}
