//! The StableHLO text reader: a recursive-descent parser over the characters of a module as JAX
//! writes it, in MLIR's generic op form (`"stablehlo.add"(%a, %b) : (...) -> ...`) or in the
//! custom assembly of the ops JAX emits (`stablehlo.add %a, %b : tensor<...>`), into a small
//! syntax tree ([`Op`], [`Block`], [`Attr`]) that [`super::translate`] maps onto tsr.
//!
//! Both forms land in the same tree: the custom assembly of an op is read into the attribute
//! names of its generic form where the translation needs them (`dot_general`'s dimension
//! numbers, `reduce`'s dimensions and body), so the translation reads one shape. Errors carry
//! the byte offset of what they point at; [`super::StablehloError`] turns it into `line:col`.
//! No input makes the reader panic: it indexes through `get` and bounds nesting.

use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;

/// Deeper nesting (regions, lists) than any real module has is malformed input, not a model.
const MAX_DEPTH: usize = 96;

/// A reader error: the byte offset it points at and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

pub type SResult<T> = Result<T, SyntaxError>;

/// A tensor type as written: its element type and dimensions, `None` for `?`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ty {
    pub dtype: DType,
    pub dims: Vec<Option<u64>>,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.dims {
            match d {
                Some(n) => write!(f, "{n}x")?,
                None => f.write_str("?x")?,
            }
        }
        write!(f, "{}>", self.dtype.mlir_name())
    }
}

/// An attribute value, as either form writes it. Its own type rather than
/// `tessera_ir::ops::attr::Attr` (whose first variants it repeats): StableHLO attributes also
/// hold symbols, keywords, lists, dictionaries and types, which tsr attributes never do.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// `@name`.
    Symbol(String),
    /// A bare keyword: an enum case (`LT`, `SIGNED`, `DEFAULT`) or a layout letter (`b`, `f`).
    Word(String),
    /// `[a, b, ...]`.
    List(Vec<Attr>),
    /// `array<i64: 1, 2>` and `array<i1: false>` (booleans as 0 and 1).
    Ints(Vec<i64>),
    Dense(Tensor),
    /// `{key = value, unit_key}`, and the parameters of `#stablehlo.dot<...>`-like attributes.
    Dict(Vec<(String, Attr)>),
    /// `a x b`: `dot_general`'s `contracting_dims = [1] x [0]`, a convolution's operand layouts.
    Pair(Box<Attr>, Box<Attr>),
    /// `a -> b`: a convolution's input layouts and its output layout.
    Arrow(Box<Attr>, Box<Attr>),
    /// `start:limit:stride` in the custom form of `slice`.
    Range(Vec<i64>),
    /// `(types) -> types`, as `function_type` carries it.
    FuncType(Vec<Ty>, Vec<Ty>),
    Type(Ty),
    /// An attribute of a dialect the importer does not interpret, kept as its text.
    Opaque(String),
    /// A key written without a value.
    Unit,
}

/// A reference to a value: `%name` or `%name#index`, and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueRef {
    pub name: String,
    pub index: usize,
    pub offset: usize,
}

/// One op in either form. `results` are the names it defines with their counts (`%1:6`).
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub offset: usize,
    pub name: String,
    pub results: Vec<(String, usize)>,
    pub operands: Vec<ValueRef>,
    pub attrs: Vec<(String, Attr)>,
    pub regions: Vec<Block>,
    /// `func.call @f` and `custom_call @target`.
    pub callee: Option<String>,
    pub operand_types: Vec<Ty>,
    pub result_types: Vec<Ty>,
}

impl Op {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A block: its arguments (`^bb0(%a: T)` or a custom form's named arguments) and ops.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    pub offset: usize,
    pub args: Vec<(String, Ty)>,
    pub ops: Vec<Op>,
}

/// Reads a whole module: the top-level ops (`module` or `"builtin.module"`, or bare functions).
pub fn parse_module(text: &str) -> SResult<Vec<Op>> {
    let mut reader = Reader { text, bytes: text.as_bytes(), pos: 0, depth: 0, op_name: String::new() };
    let mut ops = Vec::new();
    loop {
        reader.skip_trivia();
        if reader.pos >= reader.bytes.len() {
            return Ok(ops);
        }
        ops.push(reader.op()?);
    }
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    /// The op whose text is being read, so that a type it cannot hold names it.
    op_name: String,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'-')
}

impl<'a> Reader<'a> {
    fn err<T>(&self, offset: usize, message: impl Into<String>) -> SResult<T> {
        Err(SyntaxError { offset, message: message.into() })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// Skips whitespace and `//` comments.
    fn skip_trivia(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else if b == b'/' && self.peek_at(1) == Some(b'/') {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// What the next characters are, for messages: up to the end of a word, or one character.
    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the text".to_string(),
            Some(b) if is_ident_byte(b) => {
                let end =
                    (self.pos..self.bytes.len()).find(|&i| !is_ident_byte(self.bytes[i])).unwrap_or(self.bytes.len());
                format!("'{}'", self.text.get(self.pos..end).unwrap_or("?"))
            }
            Some(_) => format!("'{}'", self.text.get(self.pos..).and_then(|s| s.chars().next()).unwrap_or('?')),
        }
    }

    fn expected<T>(&self, what: &str) -> SResult<T> {
        self.err(self.pos, format!("expected {what}, found {}", self.describe_next()))
    }

    /// Consumes `token` (after trivia) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_trivia();
        if self.bytes.get(self.pos..self.pos + token.len()) == Some(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> SResult<()> {
        if self.eat(token) {
            Ok(())
        } else {
            self.expected(&format!("'{token}'"))
        }
    }

    /// Consumes the word `word` if it comes next as a whole identifier.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_trivia();
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) == Some(word.as_bytes())
            && !self.bytes.get(end).is_some_and(|&b| is_ident_byte(b))
        {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> SResult<String> {
        self.skip_trivia();
        let start = self.pos;
        while self.peek().is_some_and(|b| is_ident_byte(b) && b != b'-' || (b == b'-' && self.pos > start)) {
            // A '-' continues a name (`mhlo.frontend_attributes`-like keys never need it at
            // the start) but not an arrow.
            if self.peek() == Some(b'-') && self.peek_at(1) == Some(b'>') {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return self.expected("a name");
        }
        Ok(self.text.get(start..self.pos).unwrap_or_default().to_string())
    }

    fn enter(&mut self) -> SResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn string(&mut self) -> SResult<String> {
        self.skip_trivia();
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return self.expected("a string");
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return self.err(start, "unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = self.peek_at(1);
                    self.pos += 2;
                    match esc {
                        Some(b'n') => out.push('\n'),
                        Some(b't') => out.push('\t'),
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(h) if h.is_ascii_hexdigit() => {
                            let lo = self.peek().filter(u8::is_ascii_hexdigit);
                            let Some(lo) = lo else { return self.err(self.pos, "bad escape in string") };
                            self.pos += 1;
                            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                            out.push((hex(h) * 16 + hex(lo)) as char);
                        }
                        _ => return self.err(self.pos.saturating_sub(2), "bad escape in string"),
                    }
                }
                Some(_) => {
                    let rest = self.text.get(self.pos..).unwrap_or_default();
                    let Some(c) = rest.chars().next() else { return self.err(self.pos, "bad character") };
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// `%name`, `%name#3`.
    fn value_ref(&mut self) -> SResult<ValueRef> {
        self.skip_trivia();
        let offset = self.pos;
        if !self.eat("%") {
            return self.expected("a value such as %0");
        }
        let name = self.ident()?;
        let mut index = 0;
        if self.peek() == Some(b'#') {
            self.pos += 1;
            index = self.integer()?.try_into().or_else(|_| self.err(offset, "negative result index"))?;
        }
        Ok(ValueRef { name, index, offset })
    }

    fn integer(&mut self) -> SResult<i64> {
        self.skip_trivia();
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.text.get(start..self.pos).unwrap_or_default();
        digits.parse().or_else(|_| {
            self.pos = start;
            self.expected("an integer")
        })
    }

    /// `tensor<2x?x8xf32>` (an encoding after the element type is skipped), or a bare
    /// element type for scalars written without `tensor`.
    fn ty(&mut self) -> SResult<Ty> {
        self.skip_trivia();
        let start = self.pos;
        if self.peek() == Some(b'!') {
            let name = self.ident_after_bang()?;
            if name == "stablehlo.token" {
                return self.err(
                    start,
                    format!(
                        "{}: !stablehlo.token has no tsr counterpart: tokens order the point-to-point \
                         stablehlo.send/recv (and infeed/outfeed), while tsr's send/recv join pipeline stages that run \
                         different programs and every replica runs this module (collective_permute moves data between \
                         replicas)",
                        self.op_name
                    ),
                );
            }
            return self.err(start, format!("type !{name} is not supported (only tensors)"));
        }
        let word = self.ident()?;
        if word != "tensor" {
            // `tensor<2x8xf32>` lexes as one word up to `<`; a scalar element type is a word.
            return match DType::from_mlir_name(&word) {
                Some(dtype) => Ok(Ty { dtype, dims: Vec::new() }),
                None => self.err(start, format!("expected a tensor type, found '{word}'")),
            };
        }
        if self.peek() != Some(b'<') {
            return self.expected("'<' after 'tensor'");
        }
        self.pos += 1;
        let mut dims = Vec::new();
        loop {
            self.skip_trivia();
            let at = self.pos;
            match self.peek() {
                Some(b'?') => {
                    self.pos += 1;
                    dims.push(None);
                }
                Some(b) if b.is_ascii_digit() => {
                    while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits = self.text.get(at..self.pos).unwrap_or_default();
                    let n =
                        digits.parse::<u64>().or_else(|_| self.err(at, format!("dimension {digits} is too large")))?;
                    dims.push(Some(n));
                }
                Some(b'*') => return self.err(at, "unranked tensors are not supported"),
                _ => break,
            }
            if self.peek() != Some(b'x') {
                return self.expected("'x' after a dimension");
            }
            self.pos += 1;
        }
        let at = self.pos;
        let element = self.ident()?;
        let dtype = match DType::from_mlir_name(&element) {
            Some(d) => d,
            None if element.starts_with("ui")
                || element.starts_with("complex")
                || element == "i16"
                || element == "f8E4M3FNUZ" =>
            {
                return self.err(at, format!("element type {element} is not supported by tessera"))
            }
            None => return self.err(at, format!("unknown element type '{element}'")),
        };
        if self.eat(",") {
            // An encoding such as a bounds attribute: skipped, the dimensions stay as written.
            self.balanced_until(b'>')?;
        }
        self.expect(">")?;
        Ok(Ty { dtype, dims })
    }

    fn ident_after_bang(&mut self) -> SResult<String> {
        self.pos += 1;
        let name = self.ident()?;
        if self.peek() == Some(b'<') {
            self.pos += 1;
            self.balanced_until(b'>')?;
            self.expect(">")?;
        }
        Ok(name)
    }

    /// Skips text up to (not over) the `close` byte at nesting level 0 of `<>`, `()`, `[]`, `{}`
    /// and strings; returns the skipped text.
    fn balanced_until(&mut self, close: u8) -> SResult<&'a str> {
        let start = self.pos;
        let mut stack: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.err(start, format!("unterminated '{}'", close as char));
            };
            if stack.is_empty() && b == close {
                return Ok(self.text.get(start..self.pos).unwrap_or_default());
            }
            match b {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'<' | b'(' | b'[' | b'{' => {
                    if stack.len() >= MAX_DEPTH {
                        return self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels"));
                    }
                    stack.push(match b {
                        b'<' => b'>',
                        b'(' => b')',
                        b'[' => b']',
                        _ => b'}',
                    })
                }
                // `->` is no closing angle bracket.
                b'>' if self.pos > 0 && self.bytes.get(self.pos - 1) == Some(&b'-') => {}
                b'>' | b')' | b']' | b'}' if stack.pop() != Some(b) => {
                    return self.err(self.pos, format!("unbalanced '{}'", b as char));
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// A list of types: `(T, T)` or `T, T` (each may be followed by an attribute dict, which
    /// function signatures carry).
    fn type_list(&mut self) -> SResult<Vec<Ty>> {
        self.skip_trivia();
        let mut out = Vec::new();
        if self.eat("(") {
            if self.eat(")") {
                return Ok(out);
            }
            loop {
                out.push(self.ty()?);
                self.skip_trivia();
                if self.peek() == Some(b'{') {
                    self.attr_dict()?;
                }
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(")")?;
            return Ok(out);
        }
        out.push(self.ty()?);
        Ok(out)
    }

    /// After `:`: `(A, B) -> C`, `(A) -> (C, D)`, `A -> B`, `A`, or `A, B, ...` (the custom
    /// form of `select` and `while`). Returns operand and result types; without an arrow the
    /// list is returned as operand types and the result types are empty.
    fn signature(&mut self) -> SResult<(Vec<Ty>, Vec<Ty>, bool)> {
        self.skip_trivia();
        let operands = if self.peek() == Some(b'(') {
            self.type_list()?
        } else {
            let mut list = vec![self.ty()?];
            loop {
                let save = self.pos;
                if !self.eat(",") {
                    break;
                }
                self.skip_trivia();
                if self.bytes.get(self.pos..self.pos + 7) != Some(b"tensor<") {
                    self.pos = save;
                    break;
                }
                list.push(self.ty()?);
            }
            list
        };
        if self.eat("->") {
            let results = self.type_list()?;
            return Ok((operands, results, true));
        }
        Ok((operands, Vec::new(), false))
    }

    /// `{key = value, key}`.
    fn attr_dict(&mut self) -> SResult<Vec<(String, Attr)>> {
        self.expect("{")?;
        self.enter()?;
        let out = self.comma_list("}", |p| {
            p.skip_trivia();
            let key = if p.peek() == Some(b'"') { p.string()? } else { p.ident()? };
            let value = if p.eat("=") { p.attr()? } else { Attr::Unit };
            Ok((key, value))
        })?;
        self.leave();
        Ok(out)
    }

    /// One attribute value; see [`Attr`] for the forms.
    fn attr(&mut self) -> SResult<Attr> {
        self.enter()?;
        let value = self.attr_inner()?;
        self.leave();
        Ok(value)
    }

    fn attr_inner(&mut self) -> SResult<Attr> {
        self.skip_trivia();
        let start = self.pos;
        let first = match self.peek() {
            None => return self.expected("an attribute value"),
            Some(b'[') => {
                self.pos += 1;
                Attr::List(self.comma_list("]", Self::attr)?)
            }
            Some(b'{') => Attr::Dict(self.attr_dict()?),
            Some(b'"') => Attr::Str(self.string()?),
            Some(b'@') => {
                self.pos += 1;
                if self.peek() == Some(b'"') {
                    Attr::Symbol(self.string()?)
                } else {
                    Attr::Symbol(self.ident()?)
                }
            }
            Some(b'#') => self.dialect_attr()?,
            Some(b'(') => {
                let operands = self.type_list()?;
                self.expect("->")?;
                let results = self.type_list()?;
                Attr::FuncType(operands, results)
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => self.number()?,
            Some(_) => {
                let word = self.ident()?;
                match word.as_str() {
                    "true" => Attr::Bool(true),
                    "false" => Attr::Bool(false),
                    "dense" if self.peek() == Some(b'<') => {
                        let (tensor, end) = tessera_ir::mlir::parse_dense_at(self.text, self.pos)
                            .map_err(|e| SyntaxError { offset: self.offset_of(e.line, e.col), message: e.message })?;
                        self.pos = end;
                        Attr::Dense(tensor)
                    }
                    "array" if self.peek() == Some(b'<') => self.dense_array()?,
                    "tensor" if self.peek() == Some(b'<') => {
                        self.pos = start;
                        Attr::Type(self.ty()?)
                    }
                    "unit" => Attr::Unit,
                    _ => Attr::Word(word),
                }
            }
        };
        // `[1] x [0]` and `[b, f]x[o, i]->[b, f]`.
        let save = self.pos;
        self.skip_trivia();
        let first = if self.peek() == Some(b'x') && matches!(self.peek_at(1), Some(b'[') | Some(b' ')) {
            self.pos += 1;
            let second = self.attr()?;
            Attr::Pair(Box::new(first), Box::new(second))
        } else {
            self.pos = save;
            first
        };
        if self.bytes.get(self.pos..self.pos + 2) == Some(b"->") && matches!(first, Attr::Pair(..)) {
            self.pos += 2;
            let out = self.attr()?;
            return Ok(Attr::Arrow(Box::new(first), Box::new(out)));
        }
        Ok(first)
    }

    /// The byte offset of a 1-based line and column (the dense-literal reader reports those).
    fn offset_of(&self, line: u32, col: u32) -> usize {
        let line_start = if line <= 1 {
            0
        } else {
            self.bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(line as usize - 2).map_or(0, |(i, _)| i + 1)
        };
        let rest = self.text.get(line_start..).unwrap_or_default();
        line_start + rest.char_indices().nth(col.saturating_sub(1) as usize).map_or(rest.len(), |(i, _)| i)
    }

    /// An integer or float, with an optional `: type` suffix (`1 : i64`), or a slice range
    /// `0:6:1`.
    fn number(&mut self) -> SResult<Attr> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let mut is_float = false;
        if self.peek() == Some(b'0') && matches!(self.peek_at(1), Some(b'x') | Some(b'X')) {
            self.pos += 2;
            while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            let text = self.text.get(start..self.pos).unwrap_or_default();
            let digits = text.trim_start_matches('-').get(2..).unwrap_or_default();
            let bits =
                u64::from_str_radix(digits, 16).or_else(|_| self.err(start, format!("bad hex number {text}")))?;
            return Ok(Attr::Int(bits as i64));
        }
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() {
                self.pos += 1;
            } else if matches!(b, b'.' | b'e' | b'E') || (matches!(b, b'+' | b'-') && is_float) {
                is_float = true;
                self.pos += 1;
            } else {
                break;
            }
        }
        let text = self.text.get(start..self.pos).unwrap_or_default();
        let value = if is_float {
            Attr::Float(text.parse().or_else(|_| self.err(start, format!("bad number '{text}'")))?)
        } else {
            Attr::Int(text.parse().or_else(|_| self.err(start, format!("bad integer '{text}'")))?)
        };
        let save = self.pos;
        self.skip_trivia();
        if self.peek() == Some(b':') {
            self.pos += 1;
            self.skip_trivia();
            if self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'-') {
                // A slice range: `start:limit(:stride)`.
                let Attr::Int(first) = value else { return self.err(start, "a slice bound must be an integer") };
                let mut range = vec![first, self.integer()?];
                if self.peek() == Some(b':') {
                    self.pos += 1;
                    range.push(self.integer()?);
                }
                return Ok(Attr::Range(range));
            }
            // `1 : i64` is a typed literal; in `dim = 0 : tensor<...>` the colon starts the
            // op's signature instead.
            let word_at = self.pos;
            let word = if self.peek().is_some_and(|b| b.is_ascii_alphabetic()) { self.ident()? } else { String::new() };
            if word != "tensor" && (DType::from_mlir_name(&word).is_some() || word == "index" || word.starts_with("ui"))
            {
                return Ok(value);
            }
            self.pos = word_at;
        }
        self.pos = save;
        Ok(value)
    }

    /// `array<i64: 1, 2>`, `array<i64>`, `array<i1: false, true>`, after `array`.
    fn dense_array(&mut self) -> SResult<Attr> {
        self.expect("<")?;
        let at = self.pos;
        let element = self.ident()?;
        let mut out = Vec::new();
        if self.eat(":") {
            loop {
                self.skip_trivia();
                if self.eat_word("true") {
                    out.push(1);
                } else if self.eat_word("false") {
                    out.push(0);
                } else {
                    out.push(self.integer()?);
                }
                if !self.eat(",") {
                    break;
                }
            }
        }
        self.expect(">")?;
        if !matches!(element.as_str(), "i64" | "i32" | "i1") {
            return self.err(at, format!("array<{element}> is not supported (expected i64, i32 or i1 elements)"));
        }
        Ok(Attr::Ints(out))
    }

    /// `#stablehlo.dot<k = v, ...>` (and `gather`, `scatter`) as a dict; `#stablehlo<kind CASE>`
    /// as its case word; `#stablehlo.conv<...>` as its layouts; anything else as text.
    fn dialect_attr(&mut self) -> SResult<Attr> {
        let start = self.pos;
        self.pos += 1;
        let name = self.ident()?;
        if self.peek() != Some(b'<') {
            return Ok(Attr::Opaque(format!("#{name}")));
        }
        self.pos += 1;
        let value = match name.as_str() {
            "stablehlo.dot" | "stablehlo.gather" | "stablehlo.scatter" | "stablehlo.dot_algorithm" => {
                let mut entries = Vec::new();
                if self.peek() != Some(b'>') {
                    loop {
                        let key = self.ident()?;
                        self.expect("=")?;
                        entries.push((key, self.attr()?));
                        if !self.eat(",") {
                            break;
                        }
                    }
                }
                Attr::Dict(entries)
            }
            "stablehlo" | "chlo" | "mhlo" => {
                let _kind = self.ident()?;
                Attr::Word(self.ident()?)
            }
            "stablehlo.conv" => self.attr()?,
            _ => {
                self.balanced_until(b'>')?;
                Attr::Opaque(self.text.get(start..self.pos + 1).unwrap_or_default().to_string())
            }
        };
        self.expect(">")?;
        Ok(value)
    }

    /// `{ ops }` of a custom form, whose block arguments the op names itself.
    fn braced_block(&mut self, args: Vec<(String, Ty)>) -> SResult<Block> {
        self.skip_trivia();
        let offset = self.pos;
        self.expect("{")?;
        self.enter()?;
        let mut block = Block { offset, args, ops: Vec::new() };
        if self.peek_label() {
            block.args = self.block_header()?;
        }
        loop {
            self.skip_trivia();
            if self.eat("}") {
                break;
            }
            if self.peek().is_none() {
                return self.err(offset, "unterminated region: missing '}'");
            }
            block.ops.push(self.op()?);
        }
        self.leave();
        Ok(block)
    }

    fn peek_label(&mut self) -> bool {
        self.skip_trivia();
        self.peek() == Some(b'^')
    }

    /// `^bb0(%a: T, %b: T):`.
    fn block_header(&mut self) -> SResult<Vec<(String, Ty)>> {
        self.expect("^")?;
        self.ident()?;
        let mut args = Vec::new();
        if self.eat("(") {
            args = self.comma_list(")", |p| {
                let arg = p.value_ref()?;
                p.expect(":")?;
                Ok((arg.name, p.ty()?))
            })?;
        }
        self.expect(":")?;
        Ok(args)
    }

    /// `(%a, %b)`.
    fn operand_list(&mut self) -> SResult<Vec<ValueRef>> {
        self.expect("(")?;
        self.comma_list(")", Self::value_ref)
    }

    /// The rest of a comma-separated list whose opening token was just read: `item, item close`,
    /// or `close` alone for an empty list. One place for the loop that every bracketed list of
    /// the syntax (operands, block arguments, attribute lists and dictionaries) shares.
    fn comma_list<T>(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> SResult<T>) -> SResult<Vec<T>> {
        let mut out = Vec::new();
        if !self.eat(close) {
            loop {
                out.push(item(self)?);
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(close)?;
        }
        Ok(out)
    }

    /// One op, generic or custom, with its result names.
    fn op(&mut self) -> SResult<Op> {
        self.skip_trivia();
        let mut results = Vec::new();
        if self.peek() == Some(b'%') {
            loop {
                let r = self.value_ref()?;
                let mut count = 1;
                if self.peek() == Some(b':') && self.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                    count = usize::try_from(self.integer()?).or_else(|_| self.err(r.offset, "bad result count"))?;
                }
                results.push((r.name, count));
                if !self.eat(",") {
                    break;
                }
            }
            self.expect("=")?;
        }
        self.skip_trivia();
        let offset = self.pos;
        let mut op = Op {
            offset,
            name: String::new(),
            results,
            operands: Vec::new(),
            attrs: Vec::new(),
            regions: Vec::new(),
            callee: None,
            operand_types: Vec::new(),
            result_types: Vec::new(),
        };
        let generic = self.peek() == Some(b'"');
        op.name = if generic { self.string()? } else { self.ident()? };
        let outer = std::mem::replace(&mut self.op_name, op.name.clone());
        if generic {
            self.generic_op(&mut op)?;
        } else {
            self.custom_op(&mut op)?;
        }
        self.op_name = outer;
        Ok(op)
    }

    /// `(operands) <{props}>? ({regions})? {attrs}? : (types) -> types`, after the name.
    fn generic_op(&mut self, op: &mut Op) -> SResult<()> {
        op.operands = self.operand_list()?;
        if self.eat("<{") {
            self.pos -= 1;
            op.attrs.extend(self.attr_dict()?);
            self.expect(">")?;
        }
        self.skip_trivia();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            loop {
                op.regions.push(self.braced_block(Vec::new())?);
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(")")?;
        }
        self.skip_trivia();
        if self.peek() == Some(b'{') {
            op.attrs.extend(self.attr_dict()?);
        }
        self.expect(":")?;
        let (operands, results, functional) = self.signature()?;
        if !functional {
            return self.expected("'->' in the generic op's type");
        }
        op.operand_types = operands;
        op.result_types = results;
        Ok(())
    }

    /// The custom assembly of the ops JAX emits.
    fn custom_op(&mut self, op: &mut Op) -> SResult<()> {
        match op.name.as_str() {
            "module" | "builtin.module" => {
                self.skip_trivia();
                if self.peek() == Some(b'@') {
                    self.pos += 1;
                    op.attrs.push(("sym_name".into(), Attr::Str(self.ident()?)));
                }
                if self.eat_word("attributes") {
                    op.attrs.extend(self.attr_dict()?);
                }
                op.regions.push(self.braced_block(Vec::new())?);
                Ok(())
            }
            "func.func" => self.custom_func(op),
            // Shardy's mesh and sharding constraints; tessera keeps the text of the shardings.
            "sdy.mesh" => {
                self.expect("@")?;
                op.attrs.push(("sym_name".into(), Attr::Str(self.ident()?)));
                self.expect("=")?;
                self.expect("<")?;
                let axes = self.balanced_until(b'>')?;
                op.attrs.push(("mesh".into(), Attr::Opaque(axes.to_string())));
                self.expect(">")?;
                self.skip_trivia();
                if self.peek() == Some(b'{') {
                    op.attrs.extend(self.attr_dict()?);
                }
                Ok(())
            }
            "sdy.sharding_constraint" => {
                op.operands.push(self.value_ref()?);
                self.expect("<")?;
                let sharding = self.balanced_until(b'>')?;
                op.attrs.push(("sharding".into(), Attr::Opaque(sharding.to_string())));
                self.expect(">")?;
                self.trailing_attrs_and_signature(op)
            }
            "sdy.manual_computation" => self.custom_manual_computation(op),
            "return" | "func.return" | "stablehlo.return" | "sdy.return" => {
                self.skip_trivia();
                if self.peek() == Some(b'%') {
                    loop {
                        op.operands.push(self.value_ref()?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect(":")?;
                    op.operand_types = self.signature()?.0;
                }
                Ok(())
            }
            "func.call" | "call" => {
                self.expect("@")?;
                op.callee = Some(self.ident()?);
                op.operands = self.operand_list()?;
                self.trailing_attrs_and_signature(op)
            }
            "stablehlo.reduce" => self.custom_reduce(op),
            "stablehlo.constant" => {
                self.skip_trivia();
                if self.peek() == Some(b'{') {
                    op.attrs.extend(self.attr_dict()?);
                }
                let value = self.attr()?;
                let Attr::Dense(tensor) = &value else {
                    return self.err(op.offset, "stablehlo.constant needs a dense<...> : tensor<...> value");
                };
                let ty = tensor.tensor_type();
                op.result_types = vec![Ty { dtype: ty.dtype, dims: ty.dims.iter().map(|d| d.as_static()).collect() }];
                op.attrs.push(("value".into(), value));
                Ok(())
            }
            "stablehlo.while" => self.custom_while(op),
            _ => self.custom_items(op),
        }
    }

    /// `func.func public @main(%arg0: T {attrs}, ...) -> (T {attrs}, ...) attributes {...} {`.
    fn custom_func(&mut self, op: &mut Op) -> SResult<()> {
        self.skip_trivia();
        for visibility in ["public", "private", "nested"] {
            if self.eat_word(visibility) {
                op.attrs.push(("sym_visibility".into(), Attr::Str(visibility.into())));
            }
        }
        self.expect("@")?;
        op.attrs.push(("sym_name".into(), Attr::Str(self.ident()?)));
        self.expect("(")?;
        let mut args = Vec::new();
        let mut arg_attrs = Vec::new();
        if !self.eat(")") {
            loop {
                let arg = self.value_ref()?;
                self.expect(":")?;
                args.push((arg.name, self.ty()?));
                self.skip_trivia();
                arg_attrs.push(Attr::Dict(if self.peek() == Some(b'{') { self.attr_dict()? } else { Vec::new() }));
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(")")?;
        }
        op.attrs.push(("arg_attrs".into(), Attr::List(arg_attrs)));
        if self.eat("->") {
            // Result attributes (`{sdy.sharding = ...}`) are kept as `res_attrs`, as the generic
            // form writes them.
            let mut res_attrs = Vec::new();
            self.skip_trivia();
            if self.eat("(") {
                if !self.eat(")") {
                    loop {
                        op.result_types.push(self.ty()?);
                        self.skip_trivia();
                        res_attrs.push(Attr::Dict(if self.peek() == Some(b'{') {
                            self.attr_dict()?
                        } else {
                            Vec::new()
                        }));
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect(")")?;
                }
            } else {
                op.result_types.push(self.ty()?);
            }
            op.attrs.push(("res_attrs".into(), Attr::List(res_attrs)));
        }
        if self.eat_word("attributes") {
            op.attrs.extend(self.attr_dict()?);
        }
        op.regions.push(self.braced_block(args)?);
        Ok(())
    }

    /// `stablehlo.reduce(%x init: %c), ... applies stablehlo.add across dimensions = [1] : T`
    /// or the same with `across ...` and a `reducer(%a: T, %b: T) { ... }` body after the type.
    fn custom_reduce(&mut self, op: &mut Op) -> SResult<()> {
        let mut inits = Vec::new();
        loop {
            self.expect("(")?;
            op.operands.push(self.value_ref()?);
            if !self.eat_word("init") {
                return self.expected("'init:'");
            }
            self.expect(":")?;
            inits.push(self.value_ref()?);
            self.expect(")")?;
            if !self.eat(",") {
                break;
            }
        }
        op.operands.extend(inits);
        let applies = if self.eat_word("applies") { Some((self.pos, self.ident()?)) } else { None };
        if !self.eat_word("across") {
            return self.expected("'across'");
        }
        if !self.eat_word("dimensions") {
            return self.expected("'dimensions'");
        }
        self.expect("=")?;
        let dims = self.attr()?;
        op.attrs.push(("dimensions".into(), dims));
        self.trailing_attrs_and_signature(op)?;
        match applies {
            Some((offset, body_op)) => {
                // The body the custom form abbreviates: one binary op on the block's arguments.
                let element = |t: &Ty| Ty { dtype: t.dtype, dims: Vec::new() };
                let n = op.operands.len() / 2;
                let elements: Vec<Ty> = op.operand_types.iter().take(n).map(element).collect();
                let mut block = Block { offset, args: Vec::new(), ops: Vec::new() };
                for (i, t) in elements.iter().enumerate() {
                    block.args.push((format!("lhs{i}"), t.clone()));
                }
                for (i, t) in elements.iter().enumerate() {
                    block.args.push((format!("rhs{i}"), t.clone()));
                }
                let arg = |name: String| ValueRef { name, index: 0, offset };
                block.ops.push(Op {
                    offset,
                    name: body_op,
                    results: vec![("body".into(), 1)],
                    operands: vec![arg("lhs0".into()), arg("rhs0".into())],
                    attrs: Vec::new(),
                    regions: Vec::new(),
                    callee: None,
                    operand_types: elements.clone(),
                    result_types: elements.clone(),
                });
                block.ops.push(Op {
                    offset,
                    name: "stablehlo.return".into(),
                    results: Vec::new(),
                    operands: vec![arg("body".into())],
                    attrs: Vec::new(),
                    regions: Vec::new(),
                    callee: None,
                    operand_types: elements,
                    result_types: Vec::new(),
                });
                op.regions.push(block);
            }
            None => {
                if !self.eat_word("reducer") {
                    return self.expected("'reducer' and the reduction body");
                }
                let mut args = Vec::new();
                self.skip_trivia();
                while self.peek() == Some(b'(') {
                    self.pos += 1;
                    loop {
                        let arg = self.value_ref()?;
                        self.expect(":")?;
                        args.push((arg.name, self.ty()?));
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect(")")?;
                    self.skip_trivia();
                }
                // The custom form lists (lhs_i, rhs_i) pairs; the block takes all lhs first.
                let (mut lhs, mut rhs) = (Vec::new(), Vec::new());
                for (i, a) in args.into_iter().enumerate() {
                    if i % 2 == 0 {
                        lhs.push(a)
                    } else {
                        rhs.push(a)
                    }
                }
                lhs.extend(rhs);
                op.regions.push(self.braced_block(lhs)?);
            }
        }
        Ok(())
    }

    /// `sdy.manual_computation(%a, ...) in_shardings=[...] out_shardings=[...] manual_axes={...}
    /// (%arg: T, ...) { ... } : (types) -> types`; the shardings and axes keep their text.
    fn custom_manual_computation(&mut self, op: &mut Op) -> SResult<()> {
        op.operands = self.operand_list()?;
        for (key, open, close) in
            [("in_shardings", "[", b']'), ("out_shardings", "[", b']'), ("manual_axes", "{", b'}')]
        {
            if !self.eat_word(key) {
                return self.expected(&format!("'{key}=' in sdy.manual_computation"));
            }
            self.expect("=")?;
            self.expect(open)?;
            let inner = self.balanced_until(close)?;
            op.attrs.push((key.into(), Attr::Opaque(format!("{open}{inner}{}", close as char))));
            self.pos += 1;
        }
        self.expect("(")?;
        let args = self.comma_list(")", |p| {
            let arg = p.value_ref()?;
            p.expect(":")?;
            Ok((arg.name, p.ty()?))
        })?;
        op.regions.push(self.braced_block(args)?);
        self.trailing_attrs_and_signature(op)
    }

    /// `stablehlo.while(%iterArg = %init, ...) : T, ... cond { ... } do { ... }`.
    fn custom_while(&mut self, op: &mut Op) -> SResult<()> {
        self.expect("(")?;
        let mut names = Vec::new();
        if !self.eat(")") {
            loop {
                names.push(self.value_ref()?.name);
                self.expect("=")?;
                op.operands.push(self.value_ref()?);
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(")")?;
        }
        self.skip_trivia();
        if self.peek() == Some(b'{') || self.eat_word("attributes") {
            op.attrs.extend(self.attr_dict()?);
        }
        if !names.is_empty() {
            self.expect(":")?;
            op.operand_types = self.signature()?.0;
        }
        op.result_types = op.operand_types.clone();
        if op.operand_types.len() != names.len() {
            return self
                .err(op.offset, format!("while has {} values but {} types", names.len(), op.operand_types.len()));
        }
        let args: Vec<(String, Ty)> = names.into_iter().zip(op.operand_types.iter().cloned()).collect();
        if !self.eat_word("cond") {
            return self.expected("'cond'");
        }
        op.regions.push(self.braced_block(args.clone())?);
        if !self.eat_word("do") {
            return self.expected("'do'");
        }
        op.regions.push(self.braced_block(args)?);
        Ok(())
    }

    /// The common custom form: optional `(operands)`, then comma-separated items (`%value`,
    /// `@target(operands)`, `key = value`, a bare enum word, a slice spec `[0:2, 1:3]`), an
    /// optional attribute dict, and `: signature`.
    fn custom_items(&mut self, op: &mut Op) -> SResult<()> {
        self.skip_trivia();
        if self.peek() == Some(b'(') {
            op.operands = self.operand_list()?;
        }
        let mut words = 0;
        loop {
            self.skip_trivia();
            match self.peek() {
                Some(b'%') => op.operands.push(self.value_ref()?),
                Some(b'@') => {
                    self.pos += 1;
                    op.callee = Some(self.ident()?);
                    op.operands = self.operand_list()?;
                }
                Some(b'[') => {
                    let spec = self.attr()?;
                    op.attrs.push(("slice".into(), spec));
                }
                Some(b':') | Some(b'{') | None => break,
                Some(b) if is_ident_byte(b) && !b.is_ascii_digit() => {
                    let save = self.pos;
                    let word = self.ident()?;
                    if self.eat("=") {
                        let value = self.attr()?;
                        op.attrs.push((word, value));
                    } else if self.peek() == Some(b'"') || word.contains('.') {
                        // The next op's name: this op had nothing after its name.
                        self.pos = save;
                        break;
                    } else {
                        op.attrs.push((format!("word{words}"), Attr::Word(word)));
                        words += 1;
                    }
                }
                _ => return self.expected(&format!("an operand or attribute of {}", op.name)),
            }
            // `slice %x [0:2, 1:3]` has no comma before its ranges.
            if !self.eat(",") && self.peek() != Some(b'[') {
                break;
            }
        }
        self.trailing_attrs_and_signature(op)
    }

    /// `{attrs}? : signature`, filling the op's types; a plain `: T` is every operand's and the
    /// result's type, `: P, T` (select) gives the result type last.
    fn trailing_attrs_and_signature(&mut self, op: &mut Op) -> SResult<()> {
        self.skip_trivia();
        if self.peek() == Some(b'{') {
            op.attrs.extend(self.attr_dict()?);
        }
        self.expect(":")?;
        let (operands, results, functional) = self.signature()?;
        if functional {
            op.operand_types = operands;
            op.result_types = results;
        } else {
            op.result_types = operands.last().cloned().into_iter().collect();
            op.operand_types = operands;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_and_generic_dot_general_read_the_same_dimension_numbers() {
        let custom = "%0 = stablehlo.dot_general %a, %b, batching_dims = [0] x [0], contracting_dims = [2] x [1] : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>";
        let ops = parse_module(custom).expect("custom form parses");
        assert_eq!(
            ops[0].attr("contracting_dims"),
            Some(&Attr::Pair(Box::new(Attr::List(vec![Attr::Int(2)])), Box::new(Attr::List(vec![Attr::Int(1)]))))
        );
        let generic = r#"%0 = "stablehlo.dot_general"(%a, %b) <{dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = [0], rhs_batching_dimensions = [0], lhs_contracting_dimensions = [2], rhs_contracting_dimensions = [1]>}> : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>"#;
        let ops = parse_module(generic).expect("generic form parses");
        let Some(Attr::Dict(entries)) = ops[0].attr("dot_dimension_numbers") else {
            panic!("no dimension numbers: {ops:?}")
        };
        assert_eq!(entries[2], ("lhs_contracting_dimensions".to_string(), Attr::List(vec![Attr::Int(2)])));
        assert_eq!(ops[0].result_types[0].dims, vec![Some(2), Some(3), Some(5)]);
    }

    #[test]
    fn truncated_text_is_an_error_at_its_end() {
        let text =
            "func.func @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.add %arg0, %arg0 : tensor<2x";
        let err = parse_module(text).expect_err("truncated");
        assert!(err.offset >= text.len() - 1, "{err:?}");
    }
}
