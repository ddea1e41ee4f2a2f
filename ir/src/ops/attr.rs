//! Op attributes as the text form spells them, and typed access to them while parsing.

use crate::tensor::Tensor;

/// One attribute value. Each variant has one MLIR spelling: `3 : i64`, `1.0e-05 : f64`,
/// `true`, `"tanh"`, `array<i64: 0, 2, 1>`, `dense<...> : tensor<...>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Dense(Tensor),
}

impl Attr {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Attr::Int(_) => "integer",
            Attr::Float(_) => "float",
            Attr::Bool(_) => "bool",
            Attr::Str(_) => "string",
            Attr::Ints(_) => "array<i64>",
            Attr::Dense(_) => "dense tensor",
        }
    }
}

/// The attributes of one op as written, consumed by an op's `from_attrs`. Every attribute must be
/// taken exactly once; [`AttrMap::finish`] reports the ones nobody asked for.
#[derive(Debug, Default)]
pub struct AttrMap {
    entries: Vec<(String, Attr, bool)>,
}

impl AttrMap {
    pub fn new(entries: Vec<(String, Attr)>) -> AttrMap {
        AttrMap { entries: entries.into_iter().map(|(k, v)| (k, v, false)).collect() }
    }

    fn take(&mut self, name: &str) -> Option<Attr> {
        let entry = self.entries.iter_mut().find(|(k, _, used)| k == name && !*used)?;
        entry.2 = true;
        Some(entry.1.clone())
    }

    fn required(&mut self, name: &str) -> Result<Attr, String> {
        self.take(name).ok_or_else(|| format!("missing attribute '{name}'"))
    }

    pub fn int(&mut self, name: &str) -> Result<i64, String> {
        match self.required(name)? {
            Attr::Int(v) => Ok(v),
            other => Err(wrong_kind(name, "integer", &other)),
        }
    }

    pub fn int_or(&mut self, name: &str, default: i64) -> Result<i64, String> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(v),
            Some(other) => Err(wrong_kind(name, "integer", &other)),
        }
    }

    pub fn float(&mut self, name: &str) -> Result<f64, String> {
        match self.required(name)? {
            Attr::Float(v) => Ok(v),
            other => Err(wrong_kind(name, "float", &other)),
        }
    }

    /// An optional float attribute (`None` when absent).
    pub fn float_opt(&mut self, name: &str) -> Result<Option<f64>, String> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(v)),
            Some(other) => Err(wrong_kind(name, "float", &other)),
        }
    }

    pub fn bool_or(&mut self, name: &str, default: bool) -> Result<bool, String> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Bool(v)) => Ok(v),
            Some(other) => Err(wrong_kind(name, "bool", &other)),
        }
    }

    pub fn string(&mut self, name: &str) -> Result<String, String> {
        match self.required(name)? {
            Attr::Str(v) => Ok(v),
            other => Err(wrong_kind(name, "string", &other)),
        }
    }

    pub fn ints(&mut self, name: &str) -> Result<Vec<i64>, String> {
        match self.required(name)? {
            Attr::Ints(v) => Ok(v),
            other => Err(wrong_kind(name, "array<i64>", &other)),
        }
    }

    pub fn dense(&mut self, name: &str) -> Result<Tensor, String> {
        match self.required(name)? {
            Attr::Dense(v) => Ok(v),
            other => Err(wrong_kind(name, "dense tensor", &other)),
        }
    }

    /// Errors on attributes that no accessor took.
    pub fn finish(self) -> Result<(), String> {
        match self.entries.iter().find(|(_, _, used)| !used) {
            Some((name, _, _)) => Err(format!("unknown attribute '{name}'")),
            None => Ok(()),
        }
    }
}

fn wrong_kind(name: &str, expected: &str, got: &Attr) -> String {
    format!("attribute '{name}' must be {expected}, got {}", got.kind_name())
}
