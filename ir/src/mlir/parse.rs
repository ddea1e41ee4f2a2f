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
use crate::sharding::{IoShardings, Mesh, Sharding};
use crate::symbolic::DimExpr;
use crate::types::{Dim, TensorType};
use crate::verify::{verify, VerifyError};
use std::collections::HashMap;
use std::fmt;

mod dense;
mod lex;

use lex::Tok;

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

/// A dense literal `<...> : tensor<...>` that starts at byte `offset` of `text` (just after its
/// `dense` keyword), for the other MLIR-text readers (the StableHLO importer): the tensor and
/// the offset just past its type. Errors are located in `text`.
pub fn parse_dense_at(text: &str, offset: usize) -> Result<(crate::tensor::Tensor, usize), ParseError> {
    let mut parser = Parser::new(text);
    parser.pos = offset.min(text.len());
    let tensor = parser.parse_dense(offset)?;
    let end = parser.peeked.as_ref().map_or(parser.pos, |(_, start, _)| *start);
    Ok((tensor, end))
}

/// A name in scope: one value, or the values of a `%name:N` result group.
enum Binding {
    Single(ValueId),
    Group(Vec<ValueId>),
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
    /// How deeply the region being parsed nests.
    depth: usize,
    /// The function's boundary shardings as written (`tsr.sharding`, `tsr.mesh`), with where.
    written_shardings: WrittenShardings,
}

/// `tsr.sharding = "..."` texts on arguments (by name) and results (by position), and the
/// function's `tsr.mesh`, each with its offset; turned into [`IoShardings`] after the signature.
#[derive(Default)]
struct WrittenShardings {
    inputs: Vec<(String, String, usize)>,
    outputs: Vec<(usize, String, usize)>,
    mesh: Option<(String, usize)>,
}

/// Regions nest at most this deep (nested `tsr.if`), so hostile text cannot exhaust the stack.
const MAX_REGION_DEPTH: usize = 64;

type PResult<T> = Result<T, ParseError>;

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
            depth: 0,
            written_shardings: WrittenShardings::default(),
        }
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

    /// `(type [{tsr.sharding = "..."}], ...)` or a single type, as MLIR writes result types.
    fn parse_result_types(&mut self) -> PResult<Vec<TensorType>> {
        if self.eat(&Tok::LParen)? {
            let mut index = 0;
            return self.parse_list(Tok::RParen, "the result types", |p| {
                let ty = p.parse_tensor_type()?;
                if p.eat(&Tok::LBrace)? {
                    let (key, key_at) = p.parse_string_attr()?;
                    if key != "tsr.sharding" {
                        return p.err(key_at, format!("unknown result attribute '{key}' (only tsr.sharding is known)"));
                    }
                    let (text, text_at) = p.parse_string_value(&key)?;
                    p.written_shardings.outputs.push((index, text, text_at));
                    p.expect(&Tok::RBrace, " closing the result attributes")?;
                }
                index += 1;
                Ok(ty)
            });
        }
        Ok(vec![self.parse_tensor_type()?])
    }

    /// An attribute key (`tsr.sharding`), its position; the caller reads what follows.
    fn parse_string_attr(&mut self) -> PResult<(String, usize)> {
        let (tok, key_at) = self.next()?;
        match tok {
            Tok::Ident(s) | Tok::Str(s) => Ok((s, key_at)),
            other => self.unexpected(&other, key_at, "an attribute name"),
        }
    }

    /// `= "text"` after attribute `key`: the text and where it starts.
    fn parse_string_value(&mut self, key: &str) -> PResult<(String, usize)> {
        self.expect(&Tok::Equal, &format!(" after '{key}' (it takes a string)"))?;
        let (tok, at) = self.next()?;
        match tok {
            Tok::Str(text) => Ok((text, at)),
            other => self.unexpected(&other, at, &format!("a string for '{key}'")),
        }
    }

    /// Builds the graph's [`IoShardings`] from the `tsr.sharding`/`tsr.mesh` texts read.
    fn apply_written_shardings(&mut self) -> PResult<()> {
        let written = std::mem::take(&mut self.written_shardings);
        let Some((mesh_text, mesh_at)) = written.mesh else {
            if let Some(at) = written.inputs.first().map(|i| i.2).or(written.outputs.first().map(|o| o.2)) {
                return self
                    .err(at, "tsr.sharding needs the function's tsr.mesh attribute (attributes {tsr.mesh = \"x=2\"})");
            }
            return Ok(());
        };
        let mesh = Mesh::parse(&mesh_text).map_err(|e| ParseError::at(self.loc(mesh_at), format!("tsr.mesh: {e}")))?;
        let sharding = |text: &str, at: usize| {
            Sharding::parse(text).map_err(|e| ParseError::at(self.loc(at), format!("tsr.sharding: {e}")))
        };
        let inputs =
            written.inputs.iter().map(|(n, t, at)| Ok((n.clone(), sharding(t, *at)?))).collect::<PResult<_>>()?;
        let outputs = written.outputs.iter().map(|(i, t, at)| Ok((*i, sharding(t, *at)?))).collect::<PResult<_>>()?;
        self.graph.set_io_shardings(Some(IoShardings { mesh, inputs, outputs }));
        Ok(())
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
        if self.eat_keyword("attributes")? {
            self.expect(&Tok::LBrace, " opening the function attributes")?;
            let (key, key_at) = self.parse_string_attr()?;
            if key != "tsr.mesh" {
                return self.err(key_at, format!("unknown function attribute '{key}' (only tsr.mesh is known)"));
            }
            let (text, text_at) = self.parse_string_value(&key)?;
            self.written_shardings.mesh = Some((text, text_at));
            self.expect(&Tok::RBrace, " closing the function attributes")?;
        }
        self.apply_written_shardings()?;
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

    /// `%name: type` with optional attributes `{tsr.param, tsr.sharding = "[{x}, {}]"}`.
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
                if key == "tsr.sharding" {
                    let (text, text_at) = p.parse_string_value(&key)?;
                    p.written_shardings.inputs.push((name.clone(), text, text_at));
                    return Ok((String::new(), key_at));
                }
                if p.eat(&Tok::Equal)? && !p.eat_keyword("unit")? {
                    let at = p.peek_start()?;
                    return p.err(at, format!("'{key}' takes no value"));
                }
                Ok((key, key_at))
            })?;
            for (key, key_at) in keys.into_iter().filter(|(key, _)| !key.is_empty()) {
                if key != "tsr.param" {
                    let message = format!("unknown argument attribute '{key}' (tsr.param and tsr.sharding are known)");
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

    /// The result names before `=` (none when the op defines no result): each `%name` or
    /// `%name:N` (a group of N), with its offset.
    fn parse_result_defs(&mut self) -> PResult<Vec<(String, Option<u32>, usize)>> {
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
        Ok(defs)
    }

    /// The optional attribute dictionary `{name = value, ...}`; a repeated name is an error.
    fn parse_attr_dict(&mut self) -> PResult<Vec<(String, Attr)>> {
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
        Ok(attrs)
    }

    /// `%a, %b = "tsr.op"(%x) {attrs} : (types) -> types`.
    fn parse_op(&mut self) -> PResult<()> {
        let defs = self.parse_result_defs()?;
        let (tok, op_at) = self.next()?;
        let Tok::Str(op_name) = tok else {
            return self.unexpected(&tok, op_at, "an op name string (\"tsr.add\")");
        };
        self.expect(&Tok::LParen, " opening the operand list")?;
        let operands = self.parse_list(Tok::RParen, "the operand list", |p| p.parse_use("an operand ('%name')"))?;
        let regions_at = self.peek_start()?;
        let regions = if self.eat(&Tok::LParen)? {
            self.parse_list(Tok::RParen, "the region list", |p| p.parse_region())?
        } else {
            Vec::new()
        };
        let attrs = self.parse_attr_dict()?;
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
        let op = if mnemonic == "if" {
            if !attrs.is_empty() {
                return Err(ParseError::at(op_loc, "tsr.if takes no attributes"));
            }
            let mut regions = regions.into_iter();
            match (regions.next(), regions.next(), regions.next()) {
                (Some(then_branch), Some(else_branch), None) => {
                    Op::If(Box::new(crate::ops::control::IfRegions { then_branch, else_branch }))
                }
                _ => return self.err(regions_at, "tsr.if takes exactly two regions (then, else)"),
            }
        } else if mnemonic == "loop" {
            let mut attrs = AttrMap::new(attrs);
            let max_trips = attrs.int("max_trips").map_err(|m| ParseError::at(op_loc, format!("{op_name}: {m}")))?;
            attrs.finish().map_err(|m| ParseError::at(op_loc, format!("{op_name}: {m}")))?;
            let Ok(max_trips) = u64::try_from(max_trips) else {
                return Err(ParseError::at(op_loc, format!("{op_name}: max_trips must not be negative")));
            };
            let mut regions = regions.into_iter();
            match (regions.next(), regions.next(), regions.next()) {
                (Some(cond), Some(body), None) => {
                    Op::Loop(Box::new(crate::ops::control::LoopRegions { cond, body, max_trips }))
                }
                _ => return self.err(regions_at, "tsr.loop takes exactly two regions (cond, body)"),
            }
        } else if !regions.is_empty() {
            return self.err(regions_at, format!("{op_name} takes no regions"));
        } else {
            Op::from_parts(mnemonic, AttrMap::new(attrs), &result_types).map_err(|m| {
                if m.starts_with("unknown op") {
                    ParseError::at(op_loc, m)
                } else {
                    ParseError::at(op_loc, format!("{op_name}: {m}"))
                }
            })?
        };

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

    /// A region: `{ [^bb0(%a: type, ...):] ops "tsr.yield"(%v, ...) : (types) -> () }`. Regions
    /// are isolated from above: their names form a scope of their own, and they read only
    /// their block arguments.
    fn parse_region(&mut self) -> PResult<Graph> {
        self.depth += 1;
        if self.depth > MAX_REGION_DEPTH {
            let at = self.peek_start()?;
            return self.err(at, format!("regions nest deeper than {MAX_REGION_DEPTH}"));
        }
        self.expect(&Tok::LBrace, " opening a region")?;
        let saved_graph = std::mem::replace(&mut self.graph, Graph::new(crate::ops::control::REGION_NAME));
        let saved_scope = std::mem::take(&mut self.scope);
        let saved_locs = std::mem::take(&mut self.node_locs);
        let saved_offsets = std::mem::take(&mut self.node_offsets);
        let body = self.parse_region_body();
        let region = std::mem::replace(&mut self.graph, saved_graph);
        self.scope = saved_scope;
        self.node_locs = saved_locs;
        self.node_offsets = saved_offsets;
        self.depth -= 1;
        body?;
        Ok(region)
    }

    fn parse_region_body(&mut self) -> PResult<()> {
        if let Tok::Block(_) = self.peek()? {
            self.next()?;
            if self.eat(&Tok::LParen)? {
                self.parse_list(Tok::RParen, "the block arguments", |p| p.parse_argument())?;
            }
            self.expect(&Tok::Colon, " after the block label")?;
        }
        loop {
            match self.peek()? {
                Tok::Str(s) if s == "tsr.yield" => {
                    self.next()?;
                    self.parse_yield()?;
                    break;
                }
                Tok::Value { .. } | Tok::Str(_) => self.parse_op()?,
                _ => {
                    let (tok, at) = self.next()?;
                    return self.unexpected(&tok, at, "an op or \"tsr.yield\"");
                }
            }
        }
        self.expect(&Tok::RBrace, " after \"tsr.yield\" (it ends the region)")?;
        Ok(())
    }

    /// `"tsr.yield"(%a, ...) : (types) -> ()`, the region's results.
    fn parse_yield(&mut self) -> PResult<()> {
        self.expect(&Tok::LParen, " opening the yielded values")?;
        let values =
            self.parse_list(Tok::RParen, "the yielded values", |p| p.parse_use("a yielded value ('%name')"))?;
        self.expect(&Tok::Colon, " before the yield's type")?;
        let types_at = self.expect(&Tok::LParen, " opening the yielded types")?;
        let types = self.parse_list(Tok::RParen, "the yielded types", |p| p.parse_tensor_type())?;
        self.expect(&Tok::Arrow, " in the yield's type")?;
        self.expect(&Tok::LParen, " ('tsr.yield' has no results: '-> ()')")?;
        self.expect(&Tok::RParen, " ('tsr.yield' has no results: '-> ()')")?;
        if types.len() != values.len() {
            return self.err(types_at, format!("yield of {} value(s) lists {} type(s)", values.len(), types.len()));
        }
        for ((v, _), ty) in values.iter().zip(&types) {
            let value = self.graph.value(*v);
            if value.ty != *ty {
                return self.err(
                    types_at,
                    format!("yielded %{} has type {}, but the yield's type says {ty}", value.name, value.ty),
                );
            }
        }
        self.graph.set_outputs(values.into_iter().map(|(v, _)| v).collect());
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
        let mut names: Vec<Dim> = Vec::new();
        let enc_at = self.peek_start()?;
        if self.eat(&Tok::Comma)? {
            self.expect(&Tok::LBracket, " opening the list of symbolic dimension names")?;
            names = self.parse_list(Tok::RBracket, "the dimension names", |p| {
                let (tok, at) = p.next()?;
                match tok {
                    Tok::Str(s) if s.is_empty() => p.err(at, "a symbolic dimension cannot be empty"),
                    Tok::Str(s) => match DimExpr::parse(&s).and_then(Dim::from_expr) {
                        Ok(d) => Ok(d),
                        Err(e) => p.err(at, format!("symbolic dimension: {e}")),
                    },
                    other => p.unexpected(&other, at, "a dimension expression string"),
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
                None => names.next().unwrap_or(Dim::Static(0)),
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
}
