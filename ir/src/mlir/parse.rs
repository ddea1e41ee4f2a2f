//! The parser for the tsr text form: a lexer and a recursive-descent parser for exactly what
//! [`print_graph`](super::print_graph) writes, plus what `mlir-opt` writes back for it
//! (`module { ... }`, `%0:2` result groups used as `%0#1`, a bare single result type, large
//! literals as hex data `dense<"0x...">`, comments).
//!
//! Every error is one line with a 1-based `line:col`; no input makes it panic (it indexes
//! only through `get`, bounds nesting, and caps splat sizes).

use crate::dtype::DType;
use crate::graph::{Graph, InputRole, NodeId, ValueId};
use crate::ops::attr::{Attr, AttrMap};
use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use crate::verify::{verify, VerifyError};
use std::collections::HashMap;
use std::fmt;

/// A 1-based source position; columns count characters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A located, one-line error: `3:8: use of undefined value %q`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl ParseError {
    fn at(loc: Loc, message: impl Into<String>) -> ParseError {
        ParseError { line: loc.line, col: loc.col, message: message.into() }
    }

    pub fn loc(&self) -> Loc {
        Loc { line: self.line, col: self.col }
    }
}

/// Where each node, the function and its `return` were written: a side table next to the
/// graph, indexed by `NodeId`, so located diagnostics need no field in the IR.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceMap {
    nodes: Vec<Loc>,
    /// Byte offset of each node's op-name string, for tools that rewrite the text in place.
    pub(crate) node_offsets: Vec<usize>,
    /// The `func.func` keyword.
    pub func: Loc,
    /// The `return` keyword.
    pub ret: Loc,
}

impl SourceMap {
    /// Byte offset of the node's op-name string (`"tsr.split"`), for tools that rewrite the text
    /// in place (`tessera-mlir-check` splices arity-specific names into a copy).
    pub fn node_offset(&self, id: NodeId) -> Option<usize> {
        self.node_offsets.get(id.index()).copied()
    }

    /// The location of the node's op name (`"tsr.matmul"`), as MLIR locates ops.
    pub fn node(&self, id: NodeId) -> Option<Loc> {
        self.nodes.get(id.index()).copied()
    }

    /// Where a verifier error points: its node, else the `return` for errors about graph
    /// outputs, else the function.
    pub fn locate(&self, e: &VerifyError) -> Loc {
        match e.node.and_then(|n| self.node(n)) {
            Some(loc) => loc,
            None if e.subject.starts_with("graph output") => self.ret,
            None => self.func,
        }
    }
}

/// Parses one `func.func` (optionally inside `module { }`) into a graph and its source map.
/// The graph is well formed as SSA but not type-checked against the ops' shape rules; see
/// [`parse_verified`].
pub fn parse_graph(text: &str) -> Result<(Graph, SourceMap), ParseError> {
    Parser::new(text).parse_top()
}

/// [`parse_graph`], then the verifier, whose error is located at the offending op.
pub fn parse_verified(text: &str) -> Result<Graph, ParseError> {
    let (g, map) = parse_graph(text)?;
    verify(&g).map_err(|e| ParseError::at(map.locate(&e), e.to_string()))?;
    Ok(g)
}

/// Deeper dense-literal nesting than any tensor rank we support is an attack, not a model.
const MAX_NESTING: usize = 64;
/// A splat is expanded into memory; cap it so `dense<0.0> : tensor<9999999999xf32>` is an error
/// rather than an allocation failure. Literal lists are bounded by the text size already.
const MAX_SPLAT_ELEMENTS: usize = 1 << 26;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `%name`, or `%name#3` (a use of result 3 of a result group).
    Value {
        name: String,
        index: Option<u32>,
    },
    /// `@name` or `@"any name"`.
    Symbol(String),
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
            Tok::Value { name, index: None } => write!(f, "'%{name}'"),
            Tok::Value { name, index: Some(i) } => write!(f, "'%{name}#{i}'"),
            Tok::Symbol(s) => write!(f, "'@{s}'"),
            Tok::Ident(s) | Tok::Int(s) | Tok::Float(s) => write!(f, "'{s}'"),
            Tok::Hex(s) => write!(f, "'0x{s}'"),
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

/// A name in scope: one value, or the values of a `%name:N` result group.
enum Binding {
    Single(ValueId),
    Group(Vec<ValueId>),
}

/// One element of a dense literal as written, converted once the element type is known.
enum Scalar {
    Int(String),
    Float(String),
    Hex(String),
    Bool(bool),
}

/// A dense literal's nested lists.
enum DenseTree {
    Scalar(Scalar, Loc),
    List(Vec<DenseTree>),
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// One token of lookahead: the token, its start and its end offset.
    peeked: Option<(Tok, usize, usize)>,
    line_starts: Vec<usize>,
    graph: Graph,
    scope: HashMap<String, Binding>,
    node_locs: Vec<Loc>,
    node_offsets: Vec<usize>,
    /// Offset of the `return` keyword, for errors about graph outputs.
    last_return: usize,
}

type PResult<T> = Result<T, ParseError>;

fn is_id_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_$.".contains(&b)
}

fn is_suffix_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_$.-".contains(&b)
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            peeked: None,
            line_starts,
            graph: Graph::new(""),
            scope: HashMap::new(),
            node_locs: Vec::new(),
            node_offsets: Vec::new(),
            last_return: 0,
        }
    }

    // ---- positions and errors ----

    fn loc(&self, offset: usize) -> Loc {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = match self.text.get(start..offset) {
            Some(s) => s.chars().count(),
            None => offset.saturating_sub(start),
        };
        Loc { line: u32::try_from(line).unwrap_or(u32::MAX), col: u32::try_from(col + 1).unwrap_or(u32::MAX) }
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> PResult<T> {
        Err(ParseError::at(self.loc(offset), message))
    }

    // ---- lexer ----

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn skip_trivia(&mut self) {
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

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.byte(self.pos).is_some_and(&pred) {
            self.pos += 1;
        }
        // Predicates only accept ASCII, so the slice ends on a character boundary.
        self.text.get(start..self.pos).unwrap_or("")
    }

    /// Lexes the token at `self.pos` and returns it with its start offset.
    fn lex(&mut self) -> PResult<(Tok, usize)> {
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
            b'"' => Ok((Tok::Str(self.lex_string()?), start)),
            b if is_id_start(b) => Ok((Tok::Ident(self.take_while(is_id_char).to_string()), start)),
            _ => {
                let c = self.text.get(start..).and_then(|s| s.chars().next()).unwrap_or('?');
                self.err(start, format!("unexpected character '{}'", c.escape_default()))
            }
        }
    }

    /// After `%`: a decimal number or `[A-Za-z_$.-][A-Za-z0-9_$.-]*`, MLIR's suffix-id.
    fn lex_suffix_id(&mut self, start: usize, what: &str) -> PResult<String> {
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

    fn lex_number(&mut self, start: usize) -> PResult<(Tok, usize)> {
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
            return Ok((Tok::Hex(digits.to_string()), start));
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
        let text = self.text.get(start..self.pos).unwrap_or("").to_string();
        Ok((if is_float { Tok::Float(text) } else { Tok::Int(text) }, start))
    }

    /// A `"..."` literal with MLIR's escapes (`\"`, `\\`, `\n`, `\t`, `\XX`).
    fn lex_string(&mut self) -> PResult<String> {
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
    fn fill(&mut self) -> PResult<(Tok, usize, usize)> {
        match self.peeked.take() {
            Some(entry) => Ok(entry),
            None => {
                let (tok, start) = self.lex()?;
                Ok((tok, start, self.pos))
            }
        }
    }

    fn peek(&mut self) -> PResult<&Tok> {
        let entry = self.fill()?;
        Ok(&self.peeked.insert(entry).0)
    }

    /// Start offset of the next token.
    fn peek_start(&mut self) -> PResult<usize> {
        let entry = self.fill()?;
        Ok(self.peeked.insert(entry).1)
    }

    fn next(&mut self) -> PResult<(Tok, usize)> {
        let (tok, start, end) = self.fill()?;
        self.pos = end;
        Ok((tok, start))
    }

    fn eat(&mut self, want: &Tok) -> PResult<bool> {
        if self.peek()? == want {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn expect(&mut self, want: &Tok, context: &str) -> PResult<usize> {
        let (tok, start) = self.next()?;
        if &tok == want {
            return Ok(start);
        }
        self.unexpected(&tok, start, &format!("{want}{context}"))
    }

    fn unexpected<T>(&self, got: &Tok, at: usize, expected: &str) -> PResult<T> {
        if *got == Tok::Eof {
            return self.err(at, format!("unexpected end of input, expected {expected}"));
        }
        self.err(at, format!("expected {expected}, got {got}"))
    }

    fn eat_keyword(&mut self, word: &str) -> PResult<bool> {
        if matches!(self.peek()?, Tok::Ident(s) if s == word) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// After an opening bracket: `item (',' item)* close`, or just `close`.
    fn parse_list<T>(
        &mut self,
        close: Tok,
        what: &str,
        mut item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let mut items = Vec::new();
        if self.eat(&close)? {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            let (tok, at) = self.next()?;
            if tok == Tok::Comma {
                continue;
            }
            if tok == close {
                return Ok(items);
            }
            return self.unexpected(&tok, at, &format!("',' or {close} in {what}"));
        }
    }

    /// `(type, ...)` or a single type, as MLIR writes result types.
    fn parse_result_types(&mut self) -> PResult<Vec<TensorType>> {
        if self.eat(&Tok::LParen)? {
            return self.parse_list(Tok::RParen, "the result types", |p| p.parse_tensor_type());
        }
        Ok(vec![self.parse_tensor_type()?])
    }

    // ---- grammar ----

    fn parse_top(mut self) -> PResult<(Graph, SourceMap)> {
        let in_module = self.eat_keyword("module")?;
        if in_module {
            if matches!(self.peek()?, Tok::Symbol(_)) {
                self.next()?;
            }
            self.expect(&Tok::LBrace, " after 'module'")?;
        }
        let (func, ret) = self.parse_func()?;
        if in_module {
            let (tok, at) = self.next()?;
            match tok {
                Tok::RBrace => {}
                Tok::Ident(s) if s == "func.func" => {
                    return self.err(at, "expected one func.func, found a second one");
                }
                other => return self.unexpected(&other, at, "'}' closing the module"),
            }
        }
        let (tok, at) = self.next()?;
        match tok {
            Tok::Eof => {}
            Tok::Ident(s) if s == "func.func" => return self.err(at, "expected one func.func, found a second one"),
            other => return self.unexpected(&other, at, "end of input"),
        }
        self.apply_fusion_comments();
        let map = SourceMap { nodes: self.node_locs, node_offsets: self.node_offsets, func, ret };
        Ok((self.graph, map))
    }

    /// Reads back the `// fusion group N (kind, K ops)` comments the printer writes: the K ops
    /// after such a line get its tag. Other comments stay comments; a count that runs past the
    /// function's ops tags what there is.
    fn apply_fusion_comments(&mut self) {
        let mut line_start = 0;
        for line in self.text.split_inclusive('\n') {
            let offset = line_start;
            line_start += line.len();
            let Some((tag, members)) = crate::fusion::parse_group_comment(line) else { continue };
            let first = self.node_offsets.partition_point(|&at| at < offset);
            for index in first..(first + members).min(self.node_offsets.len()) {
                self.graph.set_fusion_tag(crate::graph::NodeId(index as u32), Some(tag));
            }
        }
    }

    /// `func.func @name(args) [-> results] { ops return }`; returns the func and return locations.
    fn parse_func(&mut self) -> PResult<(Loc, Loc)> {
        let (tok, at) = self.next()?;
        if !matches!(&tok, Tok::Ident(s) if s == "func.func") {
            return self.unexpected(&tok, at, "'func.func'");
        }
        let func_loc = self.loc(at);
        let (tok, name_at) = self.next()?;
        let Tok::Symbol(name) = tok else {
            return self.unexpected(&tok, name_at, "the function name ('@name')");
        };
        self.graph = Graph::new(&name);
        self.expect(&Tok::LParen, " opening the argument list")?;
        self.parse_list(Tok::RParen, "the argument list", |p| p.parse_argument())?;
        let result_types = if self.eat(&Tok::Arrow)? { self.parse_result_types()? } else { Vec::new() };
        self.expect(&Tok::LBrace, " opening the function body")?;
        loop {
            let at = self.peek_start()?;
            match self.peek()? {
                Tok::Ident(s) if s == "return" || s == "func.return" => {
                    self.next()?;
                    self.parse_return(at, &result_types)?;
                    break;
                }
                Tok::Value { .. } | Tok::Str(_) => self.parse_op()?,
                _ => {
                    let (tok, at) = self.next()?;
                    return self.unexpected(&tok, at, "an op or 'return'");
                }
            }
        }
        let ret_loc = self.loc(self.last_return);
        self.expect(&Tok::RBrace, " after 'return' (it ends the function)")?;
        Ok((func_loc, ret_loc))
    }

    /// `%name: type` with an optional `{tsr.param}`.
    fn parse_argument(&mut self) -> PResult<()> {
        let (tok, at) = self.next()?;
        let Tok::Value { name, index } = tok else {
            return self.unexpected(&tok, at, "an argument ('%name: type')");
        };
        if index.is_some() {
            return self.err(at, "an argument cannot have a result number");
        }
        self.expect(&Tok::Colon, " after the argument name")?;
        let ty = self.parse_tensor_type()?;
        let mut role = InputRole::Activation;
        if self.eat(&Tok::LBrace)? {
            let keys = self.parse_list(Tok::RBrace, "the argument attributes", |p| {
                let (tok, key_at) = p.next()?;
                let key = match tok {
                    Tok::Ident(s) | Tok::Str(s) => s,
                    other => return p.unexpected(&other, key_at, "an argument attribute"),
                };
                if p.eat(&Tok::Equal)? && !p.eat_keyword("unit")? {
                    let at = p.peek_start()?;
                    return p.err(at, format!("'{key}' takes no value"));
                }
                Ok((key, key_at))
            })?;
            for (key, key_at) in keys {
                if key != "tsr.param" {
                    let message = format!("unknown argument attribute '{key}' (only tsr.param is known)");
                    return self.err(key_at, message);
                }
                if role == InputRole::Parameter {
                    return self.err(key_at, "duplicate argument attribute 'tsr.param'");
                }
                role = InputRole::Parameter;
            }
        }
        self.define_name(&name, at)?;
        let v = self.graph.add_input(&name, ty, role);
        self.scope.insert(name, Binding::Single(v));
        Ok(())
    }

    fn define_name(&self, name: &str, at: usize) -> PResult<()> {
        if self.scope.contains_key(name) || self.graph.has_name(name) {
            return self.err(at, format!("redefinition of value %{name}"));
        }
        Ok(())
    }

    /// Resolves a use (`%a`, `%a#1`) to a value.
    fn resolve(&self, name: &str, index: Option<u32>, at: usize) -> PResult<ValueId> {
        let spelled = match index {
            Some(i) => format!("%{name}#{i}"),
            None => format!("%{name}"),
        };
        match (self.scope.get(name), index) {
            (None, _) => self.err(at, format!("use of undefined value {spelled}")),
            (Some(Binding::Single(v)), None | Some(0)) => Ok(*v),
            (Some(Binding::Single(_)), Some(_)) => {
                self.err(at, format!("%{name} has only one result, so {spelled} is undefined"))
            }
            (Some(Binding::Group(vs)), Some(i)) => match vs.get(i as usize) {
                Some(v) => Ok(*v),
                None => self.err(at, format!("%{name} has {} results, so {spelled} is undefined", vs.len())),
            },
            (Some(Binding::Group(vs)), None) => match vs.as_slice() {
                [v] => Ok(*v),
                _ => self.err(at, format!("%{name} names {} results; use %{name}#N", vs.len())),
            },
        }
    }

    fn parse_use(&mut self, what: &str) -> PResult<(ValueId, usize)> {
        let (tok, at) = self.next()?;
        let Tok::Value { name, index } = tok else {
            return self.unexpected(&tok, at, what);
        };
        Ok((self.resolve(&name, index, at)?, at))
    }

    /// `%a, %b = "tsr.op"(%x) {attrs} : (types) -> types`.
    fn parse_op(&mut self) -> PResult<()> {
        // Result definitions: (name, group size, offset).
        let mut defs: Vec<(String, Option<u32>, usize)> = Vec::new();
        if matches!(self.peek()?, Tok::Value { .. }) {
            loop {
                let (tok, at) = self.next()?;
                let Tok::Value { name, index } = tok else {
                    return self.unexpected(&tok, at, "a result name");
                };
                if index.is_some() {
                    return self
                        .err(at, format!("cannot define %{name} with a result number; write %{name}:N for a group"));
                }
                let mut group = None;
                if self.eat(&Tok::Colon)? {
                    let (tok, n_at) = self.next()?;
                    let n = match &tok {
                        Tok::Int(s) => s.parse::<u32>().ok().filter(|&n| n > 0),
                        _ => None,
                    };
                    match n {
                        Some(n) => group = Some(n),
                        None => return self.unexpected(&tok, n_at, "a positive result count after ':'"),
                    }
                }
                if defs.iter().any(|(n, _, _)| *n == name) {
                    return self.err(at, format!("redefinition of value %{name}"));
                }
                defs.push((name, group, at));
                let (tok, at) = self.next()?;
                match tok {
                    Tok::Comma => continue,
                    Tok::Equal => break,
                    other => return self.unexpected(&other, at, "',' or '=' after the result names"),
                }
            }
        }
        let (tok, op_at) = self.next()?;
        let Tok::Str(op_name) = tok else {
            return self.unexpected(&tok, op_at, "an op name string (\"tsr.add\")");
        };
        self.expect(&Tok::LParen, " opening the operand list")?;
        let operands = self.parse_list(Tok::RParen, "the operand list", |p| p.parse_use("an operand ('%name')"))?;
        let mut attrs: Vec<(String, Attr)> = Vec::new();
        if self.eat(&Tok::LBrace)? {
            let entries = self.parse_list(Tok::RBrace, "the attribute dictionary", |p| {
                let (tok, key_at) = p.next()?;
                let key = match tok {
                    Tok::Ident(s) | Tok::Str(s) => s,
                    other => return p.unexpected(&other, key_at, "an attribute name"),
                };
                p.expect(&Tok::Equal, &format!(" after attribute name '{key}'"))?;
                Ok((key, p.parse_attr_value()?, key_at))
            })?;
            for (key, value, key_at) in entries {
                if attrs.iter().any(|(k, _)| *k == key) {
                    return self.err(key_at, format!("duplicate attribute '{key}'"));
                }
                attrs.push((key, value));
            }
        }
        self.expect(&Tok::Colon, " before the op's type")?;
        let types_at = self.expect(&Tok::LParen, " opening the operand types")?;
        let operand_types = self.parse_list(Tok::RParen, "the operand types", |p| {
            let at = p.peek_start()?;
            Ok((p.parse_tensor_type()?, at))
        })?;
        self.expect(&Tok::Arrow, " in the op's type")?;
        let results_at = self.peek_start()?;
        let result_types = self.parse_result_types()?;

        // Type agreement, in the order a reader checks it.
        if operand_types.len() != operands.len() {
            return self.err(
                types_at,
                format!("op has {} operand(s) but its type lists {}", operands.len(), operand_types.len()),
            );
        }
        for ((v, _), (ty, ty_at)) in operands.iter().zip(&operand_types) {
            let value = self.graph.value(*v);
            if value.ty != *ty {
                return self.err(
                    *ty_at,
                    format!("operand %{} has type {}, but the op's type says {ty}", value.name, value.ty),
                );
            }
        }
        let n_defined: u64 = defs.iter().map(|(_, g, _)| u64::from(g.unwrap_or(1))).sum();
        if n_defined != result_types.len() as u64 {
            return self.err(
                results_at,
                format!("op defines {n_defined} result(s) but its type lists {}", result_types.len()),
            );
        }
        let op_loc = self.loc(op_at);
        let Some(mnemonic) = op_name.strip_prefix("tsr.") else {
            return Err(ParseError::at(op_loc, format!("unknown op '{op_name}'")));
        };
        let op = Op::from_parts(mnemonic, AttrMap::new(attrs), &result_types).map_err(|m| {
            if m.starts_with("unknown op") {
                ParseError::at(op_loc, m)
            } else {
                ParseError::at(op_loc, format!("{op_name}: {m}"))
            }
        })?;

        // Names: `%a` is one value; `%a:N` is N values named `a_0`.. (`r1_0`.. for numeric
        // `%1:N`, since a numeric name must be all digits).
        let mut results = Vec::with_capacity(result_types.len());
        let mut types = result_types.into_iter();
        let mut bindings: Vec<(String, Option<usize>)> = Vec::new();
        for (name, group, at) in &defs {
            self.define_name(name, *at)?;
            if results.iter().any(|(m, _)| m == name) {
                return self.err(*at, format!("redefinition of value %{name}"));
            }
            match group {
                None => {
                    let ty = types.next().unwrap_or_else(|| TensorType::new(DType::F32, vec![]));
                    results.push((name.clone(), ty));
                    bindings.push((name.clone(), None));
                }
                Some(n) => {
                    let prefix = if name.starts_with(|c: char| c.is_ascii_digit()) { "r" } else { "" };
                    for i in 0..*n {
                        let member = format!("{prefix}{name}_{i}");
                        if self.scope.contains_key(&member)
                            || self.graph.has_name(&member)
                            || results.iter().any(|(m, _)| *m == member)
                        {
                            return self.err(*at, format!("result group %{name}:{n} would redefine value %{member}"));
                        }
                        let ty = types.next().unwrap_or_else(|| TensorType::new(DType::F32, vec![]));
                        results.push((member, ty));
                    }
                    bindings.push((name.clone(), Some(*n as usize)));
                }
            }
        }
        let inputs = operands.iter().map(|(v, _)| *v).collect();
        let node = self.graph.add_node_unchecked(op, inputs, results);
        self.node_locs.push(op_loc);
        self.node_offsets.push(op_at);
        let outputs = self.graph.node(node).outputs.clone();
        let mut next = outputs.into_iter();
        for (name, group) in bindings {
            let binding = match group {
                None => Binding::Single(next.next().unwrap_or(ValueId(0))),
                Some(n) => Binding::Group(next.by_ref().take(n).collect()),
            };
            self.scope.insert(name, binding);
        }
        Ok(())
    }

    /// `return [%a, %b : type, type]`, checked against the values and the function's types.
    fn parse_return(&mut self, at: usize, declared: &[TensorType]) -> PResult<()> {
        self.last_return = at;
        let mut values: Vec<(ValueId, usize)> = Vec::new();
        if matches!(self.peek()?, Tok::Value { .. }) {
            loop {
                values.push(self.parse_use("a returned value ('%name')")?);
                if !self.eat(&Tok::Comma)? {
                    break;
                }
            }
            self.expect(&Tok::Colon, " before the returned types")?;
            let mut types: Vec<(TensorType, usize)> = Vec::new();
            loop {
                let ty_at = self.peek_start()?;
                types.push((self.parse_tensor_type()?, ty_at));
                if !self.eat(&Tok::Comma)? {
                    break;
                }
            }
            if types.len() != values.len() {
                return self.err(at, format!("return has {} value(s) but {} type(s)", values.len(), types.len()));
            }
            for ((v, _), (ty, ty_at)) in values.iter().zip(&types) {
                let value = self.graph.value(*v);
                if value.ty != *ty {
                    return self
                        .err(*ty_at, format!("returned %{} has type {}, but is written {ty}", value.name, value.ty));
                }
            }
        }
        if values.len() != declared.len() {
            return self
                .err(at, format!("return has {} value(s), but the function returns {}", values.len(), declared.len()));
        }
        for (i, ((v, v_at), want)) in values.iter().zip(declared).enumerate() {
            let value = self.graph.value(*v);
            if value.ty != *want {
                return self.err(
                    *v_at,
                    format!(
                        "returned value {i} (%{}) has type {}, but the function returns {want}",
                        value.name, value.ty
                    ),
                );
            }
        }
        self.graph.set_outputs(values.into_iter().map(|(v, _)| v).collect());
        Ok(())
    }

    // ---- types ----

    /// `tensor<4x?xf32, ["batch"]>`. Dimensions are scanned below the token level, as MLIR
    /// does, because `4x?xf32` is not a sequence of ordinary tokens.
    fn parse_tensor_type(&mut self) -> PResult<TensorType> {
        let (tok, at) = self.next()?;
        if !matches!(&tok, Tok::Ident(s) if s == "tensor") {
            return self.unexpected(&tok, at, "a tensor type");
        }
        self.expect(&Tok::Less, " after 'tensor'")?;
        debug_assert!(self.peeked.is_none());
        self.skip_trivia();
        let mut dims: Vec<Option<u64>> = Vec::new();
        loop {
            let dim_at = self.pos;
            match self.byte(self.pos) {
                Some(b) if b.is_ascii_digit() => {
                    let digits = self.take_while(|b| b.is_ascii_digit());
                    let Ok(n) = digits.parse::<u64>() else {
                        return self.err(dim_at, format!("dimension {digits} is too large"));
                    };
                    dims.push(Some(n));
                }
                Some(b'?') => {
                    self.pos += 1;
                    dims.push(None);
                }
                Some(b'*') => return self.err(dim_at, "unranked tensors are not supported"),
                _ => break,
            }
            if self.byte(self.pos) != Some(b'x') {
                return self.err(self.pos, "expected 'x' after a dimension");
            }
            self.pos += 1;
        }
        let dtype_at = self.pos;
        let name = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() {
            let (tok, at) = self.next()?;
            return self.unexpected(&tok, at, "an element type");
        }
        let Some(dtype) = DType::from_mlir_name(name) else {
            return self.err(dtype_at, format!("unknown element type '{name}'"));
        };
        let n_dynamic = dims.iter().filter(|d| d.is_none()).count();
        let mut names: Vec<String> = Vec::new();
        let enc_at = self.peek_start()?;
        if self.eat(&Tok::Comma)? {
            self.expect(&Tok::LBracket, " opening the list of symbolic dimension names")?;
            names = self.parse_list(Tok::RBracket, "the dimension names", |p| {
                let (tok, at) = p.next()?;
                match tok {
                    Tok::Str(s) if !s.is_empty() => Ok(s),
                    Tok::Str(_) => p.err(at, "a symbolic dimension name cannot be empty"),
                    other => p.unexpected(&other, at, "a dimension name string"),
                }
            })?;
        }
        if names.len() != n_dynamic {
            return self.err(
                enc_at,
                format!("tensor type has {n_dynamic} '?' dimension(s) but names {} symbol(s)", names.len()),
            );
        }
        self.expect(&Tok::Greater, " closing the tensor type")?;
        let mut names = names.into_iter();
        let dims = dims
            .into_iter()
            .map(|d| match d {
                Some(n) => Dim::Static(n),
                None => Dim::Symbolic(names.next().unwrap_or_default()),
            })
            .collect();
        Ok(TensorType::new(dtype, dims))
    }

    // ---- attributes ----

    fn parse_attr_value(&mut self) -> PResult<Attr> {
        let (tok, at) = self.next()?;
        match tok {
            Tok::Int(s) => match self.optional_scalar_type()? {
                None | Some((DType::I64, _)) => Ok(Attr::Int(self.parse_i64(&s, at)?)),
                Some((DType::F64, _)) => Ok(Attr::Float(self.parse_f64(&s, at)?)),
                Some((other, ty_at)) => {
                    self.err(ty_at, format!("an integer attribute must be i64 or f64, got {other}"))
                }
            },
            Tok::Hex(h) => match self.optional_scalar_type()? {
                None | Some((DType::I64, _)) => match u64::from_str_radix(&h, 16) {
                    Ok(bits) => Ok(Attr::Int(bits as i64)),
                    Err(_) => self.err(at, format!("hex literal 0x{h} does not fit 64 bits")),
                },
                Some((DType::F64, _)) => Ok(Attr::Float(self.hex_float(&h, DType::F64, at)?)),
                Some((other, ty_at)) => self.err(ty_at, format!("a hex attribute must be i64 or f64, got {other}")),
            },
            Tok::Float(s) => match self.optional_scalar_type()? {
                None | Some((DType::F64, _)) => Ok(Attr::Float(self.parse_f64(&s, at)?)),
                Some((other, ty_at)) => self.err(ty_at, format!("a float attribute must be f64, got {other}")),
            },
            Tok::Ident(s) if s == "true" => Ok(Attr::Bool(true)),
            Tok::Ident(s) if s == "false" => Ok(Attr::Bool(false)),
            Tok::Str(s) => Ok(Attr::Str(s)),
            Tok::Ident(s) if s == "array" => self.parse_array(),
            Tok::Ident(s) if s == "dense" => Ok(Attr::Dense(self.parse_dense(at)?)),
            other => self.unexpected(&other, at, "an attribute value"),
        }
    }

    /// An optional `: i64` / `: f64` after a scalar attribute.
    fn optional_scalar_type(&mut self) -> PResult<Option<(DType, usize)>> {
        if !self.eat(&Tok::Colon)? {
            return Ok(None);
        }
        let (tok, at) = self.next()?;
        match &tok {
            Tok::Ident(s) => match DType::from_mlir_name(s) {
                Some(d) => Ok(Some((d, at))),
                None => self.err(at, format!("unknown type '{s}'")),
            },
            _ => self.unexpected(&tok, at, "a scalar type"),
        }
    }

    /// `array<i64: 1, -2>` or `array<i64>`, after `array`.
    fn parse_array(&mut self) -> PResult<Attr> {
        self.expect(&Tok::Less, " after 'array'")?;
        let (tok, at) = self.next()?;
        if !matches!(&tok, Tok::Ident(s) if s == "i64") {
            return self.unexpected(&tok, at, "'i64' (only array<i64: ...> is supported)");
        }
        let mut values = Vec::new();
        if self.eat(&Tok::Colon)? {
            loop {
                let (tok, at) = self.next()?;
                match tok {
                    Tok::Int(s) => values.push(self.parse_i64(&s, at)?),
                    other => return self.unexpected(&other, at, "an integer"),
                }
                if !self.eat(&Tok::Comma)? {
                    break;
                }
            }
        }
        self.expect(&Tok::Greater, " closing the array")?;
        Ok(Attr::Ints(values))
    }

    fn parse_i64(&self, s: &str, at: usize) -> PResult<i64> {
        s.parse::<i64>().or_else(|_| self.err(at, format!("integer {s} does not fit i64")))
    }

    fn parse_f64(&self, s: &str, at: usize) -> PResult<f64> {
        s.parse::<f64>().or_else(|_| self.err(at, format!("malformed float literal '{s}'")))
    }

    /// `dense<...> : tensor<...>`, after `dense`.
    fn parse_dense(&mut self, dense_at: usize) -> PResult<Tensor> {
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
        let mut scalars: Vec<(&Scalar, Loc)> = Vec::new();
        match &tree {
            None if count == 0 => {}
            None => return self.err(dense_at, format!("dense literal has 0 elements, but {ty} has {count}")),
            Some(DenseTree::Scalar(s, loc)) => {
                if count > MAX_SPLAT_ELEMENTS {
                    return self
                        .err(dense_at, format!("splat of {count} elements is too large (limit {MAX_SPLAT_ELEMENTS})"));
                }
                if count > 0 {
                    scalars.push((s, *loc));
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
            for (s, loc) in scalars {
                values.push(self.float_element(s, loc, dtype)?);
            }
            if splat {
                let v = values.first().copied().unwrap_or(0.0);
                values = vec![v; count];
            }
            Tensor::from_f64(dtype, shape, values)
        } else {
            let mut values = Vec::with_capacity(scalars.len());
            for (s, loc) in scalars {
                values.push(self.int_element(s, loc, dtype)?);
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
        let (tok, at) = self.next()?;
        let loc = self.loc(at);
        let scalar = match tok {
            Tok::LBracket => {
                if depth >= MAX_NESTING {
                    return self.err(at, format!("dense literal nested deeper than {MAX_NESTING}"));
                }
                let items = self.parse_list(Tok::RBracket, "the dense literal", |p| p.parse_dense_tree(depth + 1))?;
                return Ok(DenseTree::List(items));
            }
            Tok::Int(s) => Scalar::Int(s),
            Tok::Float(s) => Scalar::Float(s),
            Tok::Hex(h) => Scalar::Hex(h),
            Tok::Ident(s) if s == "true" => Scalar::Bool(true),
            Tok::Ident(s) if s == "false" => Scalar::Bool(false),
            other => return self.unexpected(&other, at, "a dense element"),
        };
        Ok(DenseTree::Scalar(scalar, loc))
    }

    fn float_element(&self, s: &Scalar, loc: Loc, dtype: DType) -> PResult<f64> {
        match s {
            Scalar::Float(text) | Scalar::Int(text) => {
                text.parse::<f64>().map_err(|_| ParseError::at(loc, format!("malformed float literal '{text}'")))
            }
            Scalar::Hex(h) => self.hex_float_at(h, dtype, loc),
            Scalar::Bool(b) => Err(ParseError::at(loc, format!("expected a {dtype} element, got {b}"))),
        }
    }

    fn int_element(&self, s: &Scalar, loc: Loc, dtype: DType) -> PResult<i64> {
        let (lo, hi): (i128, i128) = match dtype {
            DType::I8 => (i8::MIN.into(), i8::MAX.into()),
            DType::I32 => (i32::MIN.into(), i32::MAX.into()),
            DType::Bool => (0, 1),
            _ => (i64::MIN.into(), i64::MAX.into()),
        };
        let bits = match dtype {
            DType::I8 => 8,
            DType::I32 => 32,
            DType::Bool => 1,
            _ => 64,
        };
        match s {
            Scalar::Bool(b) if dtype == DType::Bool => Ok(i64::from(*b)),
            Scalar::Bool(b) => Err(ParseError::at(loc, format!("expected an {dtype} element, got {b}"))),
            Scalar::Int(text) => match text.parse::<i128>() {
                Ok(v) if (lo..=hi).contains(&v) => Ok(v as i64),
                _ => Err(ParseError::at(loc, format!("integer {text} is out of range for {dtype}"))),
            },
            // A hex integer is a bit pattern of the element width, as in MLIR.
            Scalar::Hex(h) => match u128::from_str_radix(h, 16) {
                Ok(v) if v < (1u128 << bits) => {
                    let shift = 128 - bits;
                    Ok((((v << shift) as i128) >> shift) as i64)
                }
                _ => Err(ParseError::at(loc, format!("hex literal 0x{h} does not fit {dtype}"))),
            },
            Scalar::Float(text) => Err(ParseError::at(loc, format!("expected an {dtype} element, got {text}"))),
        }
    }

    fn hex_float(&self, h: &str, dtype: DType, at: usize) -> PResult<f64> {
        self.hex_float_at(h, dtype, self.loc(at))
    }

    /// A float from its bit pattern in `dtype` (MLIR's spelling of NaN and infinities).
    fn hex_float_at(&self, h: &str, dtype: DType, loc: Loc) -> PResult<f64> {
        let width = 8 * dtype.size_bytes() as u32;
        let bits = u64::from_str_radix(h, 16).ok().filter(|&b| width >= 64 || b < (1u64 << width));
        match (bits, dtype.is_float()) {
            (Some(bits), true) => Ok(float_from_bits(bits, dtype)),
            _ => Err(ParseError::at(loc, format!("hex literal 0x{h} does not fit {dtype}"))),
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
    match dtype {
        DType::F64 => f64::from_bits(bits),
        DType::F32 => f64::from(f32::from_bits(bits as u32)),
        DType::F16 => half::f16::from_bits(bits as u16).to_f64(),
        DType::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
        DType::F8E4M3 => decode_f8(bits as u8, 3, 7, false),
        DType::F8E5M2 => decode_f8(bits as u8, 2, 15, true),
        // Not floats; callers check first.
        DType::I64 | DType::I32 | DType::I8 | DType::Bool => bits as f64,
    }
}

/// Decodes an 8-bit float with `mantissa_bits` and exponent `bias`; `ieee` formats reserve the
/// top exponent for infinities and NaN, E4M3FN only its all-ones pattern for NaN.
fn decode_f8(b: u8, mantissa_bits: u32, bias: i32, ieee: bool) -> f64 {
    let negative = b & 0x80 != 0;
    let sign = if negative { -1.0 } else { 1.0 };
    // Negation (not multiplication) sets a NaN's sign bit reliably.
    let nan = if negative { -f64::NAN } else { f64::NAN };
    let exp_bits = 7 - mantissa_bits;
    let max_exp = (1u8 << exp_bits) - 1;
    let exp = (b >> mantissa_bits) & max_exp;
    let mant = b & ((1u8 << mantissa_bits) - 1);
    let scale = f64::from(1u32 << mantissa_bits);
    if ieee && exp == max_exp {
        return if mant == 0 { sign * f64::INFINITY } else { nan };
    }
    if !ieee && exp == max_exp && mant == (1u8 << mantissa_bits) - 1 {
        return nan;
    }
    if exp == 0 {
        return sign * f64::from(mant) / scale * 2f64.powi(1 - bias);
    }
    sign * (1.0 + f64::from(mant) / scale) * 2f64.powi(i32::from(exp) - bias)
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

fn flatten<'t>(tree: &'t DenseTree, out: &mut Vec<(&'t Scalar, Loc)>) {
    match tree {
        DenseTree::Scalar(s, loc) => out.push((s, *loc)),
        DenseTree::List(items) => items.iter().for_each(|t| flatten(t, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_bit_patterns_decode_to_the_format_values() {
        assert_eq!(decode_f8(0x38, 3, 7, false), 1.0);
        assert_eq!(decode_f8(0x7E, 3, 7, false), 448.0);
        assert!(decode_f8(0x7F, 3, 7, false).is_nan());
        assert_eq!(decode_f8(0x01, 3, 7, false), 2f64.powi(-9));
        assert_eq!(decode_f8(0x3C, 2, 15, true), 1.0);
        assert_eq!(decode_f8(0x7B, 2, 15, true), 57344.0);
        assert_eq!(decode_f8(0xFC, 2, 15, true), f64::NEG_INFINITY);
        assert!(decode_f8(0x7E, 2, 15, true).is_nan());
        assert_eq!(decode_f8(0x01, 2, 15, true), 2f64.powi(-16));
    }
}
