//! The interface of a pass: a plain function over a graph, its typed options, what it reports,
//! and how it fails.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use tessera_ir::graph::Graph;
use tessera_ir::verify::VerifyError;

/// A pass: rewrites `g` in place. It may assume `g` verifies and must leave it verifying (the
/// pass manager checks, and names the pass when it does not).
pub type PassFn = fn(&mut Graph, &PassOptions) -> Result<PassStats, PassError>;

/// A value of a pass option. The kind of an option is the kind of its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    UInt(u64),
    Bool(bool),
    Str(Cow<'static, str>),
}

impl OptionValue {
    /// What the kind is called in error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            OptionValue::UInt(_) => "an unsigned integer",
            OptionValue::Bool(_) => "true or false",
            OptionValue::Str(_) => "a string",
        }
    }

    /// Parses `text` as a value of the same kind as `self`; `None` when it is not one.
    pub fn parse_like(&self, text: &str) -> Option<OptionValue> {
        match self {
            OptionValue::UInt(_) => text.parse().ok().map(OptionValue::UInt),
            OptionValue::Bool(_) => match text {
                "true" | "1" => Some(OptionValue::Bool(true)),
                "false" | "0" => Some(OptionValue::Bool(false)),
                _ => None,
            },
            OptionValue::Str(_) => Some(OptionValue::Str(Cow::Owned(text.to_string()))),
        }
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::UInt(n) => write!(f, "{n}"),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Str(s) => f.write_str(s),
        }
    }
}

/// One option a pass accepts, as `name=value` in a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionSpec {
    /// Kebab-case, as written in pipelines.
    pub name: &'static str,
    /// Used when the pipeline does not set the option; also fixes its kind.
    pub default: OptionValue,
    /// One line for `--help` and error messages.
    pub help: &'static str,
}

/// The options given to one pass invocation. Only options set in the pipeline text are stored;
/// the accessors fall back to the spec's default, so `PassOptions::default()` means "all
/// defaults".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassOptions {
    given: BTreeMap<&'static str, OptionValue>,
}

impl PassOptions {
    /// Sets `spec`'s option. Callers (the pipeline parser) check the kind first.
    pub fn set(&mut self, spec: &OptionSpec, value: OptionValue) {
        self.given.insert(spec.name, value);
    }

    /// The options set explicitly, by name (for printing a pipeline back).
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &OptionValue)> + '_ {
        self.given.iter().map(|(k, v)| (*k, v))
    }

    fn value<'a>(&'a self, spec: &'a OptionSpec) -> &'a OptionValue {
        self.given.get(spec.name).unwrap_or(&spec.default)
    }

    /// The value of an unsigned-integer option.
    pub fn uint(&self, pass: &'static str, spec: &OptionSpec) -> Result<u64, PassError> {
        match self.value(spec) {
            OptionValue::UInt(n) => Ok(*n),
            other => Err(PassError::option_kind(pass, spec, other)),
        }
    }

    /// The value of a boolean option.
    pub fn bool(&self, pass: &'static str, spec: &OptionSpec) -> Result<bool, PassError> {
        match self.value(spec) {
            OptionValue::Bool(b) => Ok(*b),
            other => Err(PassError::option_kind(pass, spec, other)),
        }
    }

    /// The value of a string option.
    pub fn str<'a>(&'a self, pass: &'static str, spec: &'a OptionSpec) -> Result<&'a str, PassError> {
        match self.value(spec) {
            OptionValue::Str(s) => Ok(s),
            other => Err(PassError::option_kind(pass, spec, other)),
        }
    }
}

/// What a pass did. The pass manager adds node counts and wall time around it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Changes made: rewrites applied, nodes merged or removed.
    pub rewrites: usize,
    /// Named counters a pass chooses to report (per rule, per kind of change), sorted by name.
    pub counters: BTreeMap<&'static str, usize>,
}

impl PassStats {
    /// Adds `n` to counter `name` and to `rewrites`.
    pub fn count(&mut self, name: &'static str, n: usize) {
        if n > 0 {
            *self.counters.entry(name).or_insert(0) += n;
            self.rewrites += n;
        }
    }
}

/// Why a pass, or a pipeline, failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// The graph given to `run_pipeline` does not verify, so no pass ran.
    #[error("the input graph does not verify: {0}")]
    InvalidInput(VerifyError),
    /// The `verify` pass found an error.
    #[error("verify: {0}")]
    Verify(VerifyError),
    /// A pass left a graph the verifier rejects: a bug in that pass.
    #[error("pass '{pass}' produced invalid IR: {error}")]
    BrokeIr { pass: &'static str, error: VerifyError },
    /// An option's value has the wrong kind for the accessor a pass used: a bug in that pass.
    #[error("pass '{pass}': option '{option}' must be {expected}, got '{got}'")]
    OptionKind { pass: &'static str, option: &'static str, expected: &'static str, got: String },
    /// A pass could not do its work for a reason it explains.
    #[error("pass '{pass}': {message}")]
    Failed { pass: &'static str, message: String },
}

impl PassError {
    fn option_kind(pass: &'static str, spec: &OptionSpec, got: &OptionValue) -> PassError {
        PassError::OptionKind { pass, option: spec.name, expected: spec.default.kind_name(), got: got.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: OptionSpec = OptionSpec { name: "limit", default: OptionValue::UInt(4), help: "" };
    const FLAG: OptionSpec = OptionSpec { name: "flag", default: OptionValue::Bool(false), help: "" };

    #[test]
    fn values_parse_by_the_kind_of_the_default() {
        assert_eq!(LIMIT.default.parse_like("12"), Some(OptionValue::UInt(12)));
        assert_eq!(LIMIT.default.parse_like("-1"), None);
        assert_eq!(FLAG.default.parse_like("true"), Some(OptionValue::Bool(true)));
        assert_eq!(FLAG.default.parse_like("0"), Some(OptionValue::Bool(false)));
        assert_eq!(FLAG.default.parse_like("yes"), None);
        let text = OptionValue::Str(Cow::Borrowed("")).parse_like("a.b");
        assert_eq!(text, Some(OptionValue::Str(Cow::Owned("a.b".into()))));
    }

    #[test]
    fn accessors_fall_back_to_defaults_and_check_kinds() {
        let mut options = PassOptions::default();
        assert_eq!(options.uint("p", &LIMIT), Ok(4));
        options.set(&LIMIT, OptionValue::UInt(9));
        assert_eq!(options.uint("p", &LIMIT), Ok(9));
        let err = options.bool("p", &LIMIT).expect_err("kind mismatch");
        assert_eq!(err.to_string(), "pass 'p': option 'limit' must be an unsigned integer, got '9'");
    }
}
