//! Pass pipelines: their text form (`verify,canonicalize{max-iterations=4},cse,dce`, in the
//! spirit of `mlir-opt --pass-pipeline`), running them with the verifier after every pass, and
//! the per-pass timing report.
//!
//! Grammar (whitespace is allowed around every token):
//!
//! ```text
//! pipeline := (pass (',' pass)*)?
//! pass     := NAME ('{' (option ((',' | whitespace) option)*)? '}')?
//! option   := NAME '=' VALUE        NAME  = [A-Za-z0-9_.-]+
//!                                   VALUE = any run of characters but , { } = and whitespace
//!                                   (a string option's value may hold '=' and then runs on over
//!                                   ',NAME=VALUE' entries whose NAME is not an option of the
//!                                   pass: shard{mesh=dp=2,tp=4})
//! ```
//!
//! A tessera module is one graph, so unlike MLIR there is nothing to nest into: `op(...)`
//! anchors are rejected with a located error. Errors carry the 1-based column of the offending
//! character, so the CLI can point at it.

use crate::pass::{OptionValue, PassError, PassOptions, PassStats};
use crate::registry::{self, PassInfo};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;

/// A parsed pipeline: passes resolved against the registry, options checked against each
/// pass's specs.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub passes: Vec<PassInvocation>,
}

/// One pass in a pipeline, with the options the text set.
#[derive(Debug, Clone)]
pub struct PassInvocation {
    pub pass: &'static PassInfo,
    pub options: PassOptions,
}

impl PartialEq for PassInvocation {
    fn eq(&self, other: &PassInvocation) -> bool {
        self.pass.name == other.pass.name && self.options == other.options
    }
}

impl PartialEq for Pipeline {
    fn eq(&self, other: &Pipeline) -> bool {
        self.passes == other.passes
    }
}

/// A pipeline text that does not parse, with the 1-based column (in characters) where it goes
/// wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {kind}")]
pub struct PipelineError {
    pub column: usize,
    pub kind: PipelineErrorKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineErrorKind {
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    #[error("unknown pass '{name}'; known passes: {known}")]
    UnknownPass { name: String, known: String },
    #[error("pass '{pass}' has no option '{option}'; {known}")]
    UnknownOption { pass: &'static str, option: String, known: String },
    #[error("option '{option}' of pass '{pass}' must be {expected}, got '{value}'")]
    BadValue { pass: &'static str, option: &'static str, expected: &'static str, value: String },
    #[error("option '{option}' of pass '{pass}' is given twice")]
    DuplicateOption { pass: &'static str, option: &'static str },
    #[error("'{{' is never closed")]
    Unclosed,
    #[error("nested pipelines are not supported: a tessera module is one graph")]
    Nested,
}

impl Pipeline {
    /// Parses pipeline text; an empty text is the empty pipeline.
    pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        Parser { chars: text.chars().collect(), pos: 0 }.pipeline()
    }

    /// The pass names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.pass.name).collect()
    }
}

impl FromStr for Pipeline {
    type Err = PipelineError;

    fn from_str(text: &str) -> Result<Pipeline, PipelineError> {
        Pipeline::parse(text)
    }
}

impl fmt::Display for Pipeline {
    /// The canonical text, which parses back to the same pipeline: options in name order, only
    /// those set explicitly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(p.pass.name)?;
            let given: Vec<_> = p.options.given().collect();
            if !given.is_empty() {
                f.write_str("{")?;
                for (j, (name, value)) in given.iter().enumerate() {
                    if j > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={value}")?;
                }
                f.write_str("}")?;
            }
        }
        Ok(())
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-".contains(c)
}

fn is_value_char(c: char) -> bool {
    !c.is_whitespace() && !",{}=".contains(c)
}

/// String option values may hold `=` (`mesh=dp=2,tp=4`).
fn is_list_value_char(c: char) -> bool {
    !c.is_whitespace() && !",{}".contains(c)
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn column(&self) -> usize {
        self.pos + 1
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, pred: fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn error(&self, kind: PipelineErrorKind) -> PipelineError {
        PipelineError { column: self.column(), kind }
    }

    fn expected(&self, expected: &'static str) -> PipelineError {
        let found = match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "end of pipeline".to_string(),
        };
        self.error(PipelineErrorKind::Expected { expected, found })
    }

    fn pipeline(mut self) -> Result<Pipeline, PipelineError> {
        let mut pipeline = Pipeline::default();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(pipeline);
        }
        loop {
            pipeline.passes.push(self.pass()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(pipeline),
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(_) => return Err(self.expected("',' or the end of the pipeline")),
            }
        }
    }

    fn pass(&mut self) -> Result<PassInvocation, PipelineError> {
        let name_column = self.column();
        let name = self.take_while(is_name_char);
        if name.is_empty() {
            return Err(self.expected("a pass name"));
        }
        // A name runs up to a separator; anything else glued to it is a typo, not a shorter
        // name (`cße` is not the unknown pass `c`).
        match self.peek() {
            Some(c) if !c.is_whitespace() && !",{(".contains(c) => {
                return Err(self.expected("',', '{' or the end of the pipeline"))
            }
            _ => {}
        }
        // Before the registry lookup, so `builtin.module(...)` gets the helpful message.
        self.skip_ws();
        if self.peek() == Some('(') {
            return Err(self.error(PipelineErrorKind::Nested));
        }
        let pass = registry::find(&name).ok_or_else(|| PipelineError {
            column: name_column,
            kind: PipelineErrorKind::UnknownPass { name, known: registry::known_names() },
        })?;
        let mut options = PassOptions::default();
        if self.peek() == Some('{') {
            self.options(pass, &mut options)?;
        }
        Ok(PassInvocation { pass, options })
    }

    /// `{k=v, ...}` after `pass`'s name; the cursor is on the `{`.
    fn options(&mut self, pass: &'static PassInfo, options: &mut PassOptions) -> Result<(), PipelineError> {
        let brace_column = self.column();
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key_column = self.column();
            let key = self.take_while(is_name_char);
            if key.is_empty() {
                return Err(self.expected("an option name"));
            }
            self.skip_ws();
            if self.peek() != Some('=') {
                return Err(self.expected("'=' after the option name"));
            }
            self.pos += 1;
            self.skip_ws();
            let spec = pass.option(&key).ok_or_else(|| {
                let known = if pass.options.is_empty() {
                    "it takes no options".to_string()
                } else {
                    let names: Vec<&str> = pass.options.iter().map(|o| o.name).collect();
                    format!("its options are: {}", names.join(", "))
                };
                PipelineError {
                    column: key_column,
                    kind: PipelineErrorKind::UnknownOption { pass: pass.name, option: key.clone(), known },
                }
            })?;
            let value_column = self.column();
            let string_option = matches!(spec.default, OptionValue::Str(_));
            let value_chars = if string_option { is_list_value_char } else { is_value_char };
            let mut value = self.take_while(value_chars);
            if value.is_empty() {
                return Err(self.expected("an option value"));
            }
            // A string value that is itself a `k=v` list (`mesh=dp=2,tp=4`) runs on over
            // `,k=v` entries whose key is not an option of the pass.
            while string_option && value.contains('=') {
                let save = self.pos;
                if self.peek() != Some(',') {
                    break;
                }
                self.pos += 1;
                self.skip_ws();
                let entry_key = self.take_while(is_name_char);
                if entry_key.is_empty() || pass.option(&entry_key).is_some() || self.peek() != Some('=') {
                    self.pos = save;
                    break;
                }
                self.pos += 1;
                let entry_value = self.take_while(is_list_value_char);
                value = format!("{value},{entry_key}={entry_value}");
            }
            let parsed = spec.default.parse_like(&value).ok_or_else(|| PipelineError {
                column: value_column,
                kind: PipelineErrorKind::BadValue {
                    pass: pass.name,
                    option: spec.name,
                    expected: spec.default.kind_name(),
                    value: value.clone(),
                },
            })?;
            if options.given().any(|(name, _)| name == spec.name) {
                return Err(PipelineError {
                    column: key_column,
                    kind: PipelineErrorKind::DuplicateOption { pass: pass.name, option: spec.name },
                });
            }
            options.set(spec, parsed);
            let separated = self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                // MLIR separates options by spaces; accept that too.
                Some(c) if separated && is_name_char(c) => {}
                None => return Err(PipelineError { column: brace_column, kind: PipelineErrorKind::Unclosed }),
                Some(_) => return Err(self.expected("',' or '}'")),
            }
        }
    }
}

/// Called with a pass's name and the graph it left.
pub type AfterPassHook<'a> = &'a mut dyn FnMut(&str, &Graph);

/// How [`run_pipeline`] runs: hooks and checks.
pub struct RunConfig<'a> {
    /// Called after each pass that succeeded (and, with `verify_each`, verified); the CLI
    /// prints the IR here for `--print-ir-after-all`.
    pub after_pass: Option<AfterPassHook<'a>>,
    /// Verify the input before the first pass and the graph after every pass (the default).
    /// Off only to time the passes alone; passes may assume verified input.
    pub verify_each: bool,
}

impl Default for RunConfig<'_> {
    fn default() -> Self {
        RunConfig { after_pass: None, verify_each: true }
    }
}

/// What one pass did and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRecord {
    pub name: &'static str,
    /// Wall time of the pass itself, without the verifier.
    pub wall: Duration,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub stats: PassStats,
}

/// Per-pass records of a pipeline run, for `--timing`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineReport {
    pub passes: Vec<PassRecord>,
    /// Wall time of all verifier runs (input and after each pass).
    pub verify_wall: Duration,
}

/// Runs `pipeline` over `g`. With `config.verify_each`, the input is verified first (a failure
/// is [`PassError::InvalidInput`]) and the graph after every pass (a failure is
/// [`PassError::BrokeIr`] naming the pass). On error, `g` holds the graph as the failing step
/// left it, so the caller can print it.
pub fn run_pipeline(
    g: &mut Graph,
    pipeline: &Pipeline,
    config: &mut RunConfig<'_>,
) -> Result<PipelineReport, PassError> {
    let mut report = PipelineReport::default();
    if config.verify_each {
        let start = Instant::now();
        tessera_ir::verify::verify(g).map_err(PassError::InvalidInput)?;
        report.verify_wall += start.elapsed();
    }
    for invocation in &pipeline.passes {
        let name = invocation.pass.name;
        let nodes_before = g.num_nodes();
        let start = Instant::now();
        let io_shardings = g.io_shardings().cloned();
        let stats = (invocation.pass.run)(g, &invocation.options)?;
        let wall = start.elapsed();
        keep_io_shardings(g, io_shardings);
        if config.verify_each {
            let start = Instant::now();
            tessera_ir::verify::verify(g).map_err(|error| PassError::BrokeIr { pass: name, error })?;
            report.verify_wall += start.elapsed();
        }
        report.passes.push(PassRecord { name, wall, nodes_before, nodes_after: g.num_nodes(), stats });
        if let Some(hook) = config.after_pass.as_mut() {
            hook(name, g);
        }
    }
    Ok(report)
}

/// Gives a graph back the boundary shardings a pass dropped by rebuilding it (passes build new
/// graphs and need not know the side table): those of inputs still present by name and of
/// outputs still present by position, when their types still fit.
fn keep_io_shardings(g: &mut Graph, before: Option<tessera_ir::sharding::IoShardings>) {
    let Some(mut io) = before else { return };
    if g.io_shardings().is_some() {
        return;
    }
    let input_type = |name: &str| g.inputs().iter().map(|&v| g.value(v)).find(|v| v.name == name).map(|v| &v.ty);
    io.inputs.retain(|(name, s)| input_type(name).is_some_and(|ty| s.check(&io.mesh, ty).is_ok()));
    io.outputs.retain(|(i, s)| g.outputs().get(*i).is_some_and(|&v| s.check(&io.mesh, &g.value(v).ty).is_ok()));
    if !io.inputs.is_empty() || !io.outputs.is_empty() {
        g.set_io_shardings(Some(io));
    }
}

impl PipelineReport {
    /// Passes plus verifier, excluding time spent in hooks.
    pub fn total_wall(&self) -> Duration {
        self.passes.iter().map(|p| p.wall).sum::<Duration>() + self.verify_wall
    }

    /// The table `--timing` prints, laid out like MLIR's `-mlir-timing` report, with node
    /// counts and rewrites beside each pass's wall time. Ends with a newline.
    pub fn timing_table(&self) -> String {
        let total = self.total_wall();
        let rule = "===-------------------------------------------------------------------------===";
        let title = "... Pass execution timing report ...";
        // Centred under the rule, without trailing spaces.
        let indent = (rule.len() - title.len()) / 2;
        let mut out = format!(
            "{rule}\n{:indent$}{title}\n{rule}\n  Total Execution Time: {:.4} seconds\n\n",
            "",
            total.as_secs_f64()
        );
        out.push_str("  ----Wall Time----  ----Nodes----  Rewrites  ----Name----\n");
        let time = |d: Duration| {
            let pct = if total.is_zero() { 0.0 } else { 100.0 * d.as_secs_f64() / total.as_secs_f64() };
            format!("  {:>8.4} ({pct:>5.1}%)", d.as_secs_f64())
        };
        for p in &self.passes {
            let nodes = format!("{} -> {}", p.nodes_before, p.nodes_after);
            out.push_str(&format!("{}  {nodes:>13}  {:>8}  {}\n", time(p.wall), p.stats.rewrites, p.name));
        }
        out.push_str(&format!("{}  {:>13}  {:>8}  (verifier)\n", time(self.verify_wall), "", ""));
        out.push_str(&format!("  {:>8.4} (100.0%)  {:>13}  {:>8}  Total\n", total.as_secs_f64(), "", ""));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_round_trips() {
        let text = " verify , canonicalize{ max-iterations = 3  fold-limit=0 },cse{},dce ";
        let p = Pipeline::parse(text).unwrap();
        assert_eq!(p.names(), ["verify", "canonicalize", "cse", "dce"]);
        let canonical = p.to_string();
        assert_eq!(canonical, "verify,canonicalize{fold-limit=0,max-iterations=3},cse,dce");
        assert_eq!(Pipeline::parse(&canonical).unwrap(), p);
    }

    #[test]
    fn empty_text_is_the_empty_pipeline() {
        assert!(Pipeline::parse("  ").unwrap().passes.is_empty());
    }

    #[test]
    fn timing_table_layout() {
        let report = PipelineReport {
            passes: vec![
                PassRecord {
                    name: "canonicalize",
                    wall: Duration::from_millis(3),
                    nodes_before: 12,
                    nodes_after: 9,
                    stats: PassStats { rewrites: 4, ..PassStats::default() },
                },
                PassRecord {
                    name: "dce",
                    wall: Duration::from_millis(1),
                    nodes_before: 9,
                    nodes_after: 9,
                    stats: PassStats::default(),
                },
            ],
            verify_wall: Duration::from_millis(4),
        };
        let expected = "\
===-------------------------------------------------------------------------===
                     ... Pass execution timing report ...
===-------------------------------------------------------------------------===
  Total Execution Time: 0.0080 seconds

  ----Wall Time----  ----Nodes----  Rewrites  ----Name----
    0.0030 ( 37.5%)        12 -> 9         4  canonicalize
    0.0010 ( 12.5%)         9 -> 9         0  dce
    0.0040 ( 50.0%)                           (verifier)
    0.0080 (100.0%)                           Total
";
        assert_eq!(report.timing_table(), expected);
    }
}
