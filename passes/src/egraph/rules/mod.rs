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
//! a per-channel vector). On convolutions: `winograd(?w, ?win)` (a 3x3 kernel under a stride-1,
//! undilated, ungrouped window).
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
//!
//! The module is split at its seams: [`syntax`] reads a rule file into [`Rule`]s, [`typecheck`]
//! instantiates rules on sample types (the load-time check and the numeric tests' inputs), and
//! [`applier`] turns a checked rule into an egg rewrite.

pub mod applier;
pub mod syntax;
pub mod typecheck;

use super::lang::AttrValue;
use std::collections::BTreeMap;
use tessera_ir::ops::Op;
use tessera_ir::types::TensorType;

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
    /// `winograd(?w, ?win)`: kernel `?w` is a static `[K, C, 3, 3]` and window `?win` has
    /// stride 1, no dilation and one group: a convolution Winograd F(2x2, 3x3) computes; and
    /// kernels are priced by a measured CPU calibration table, the one pricing under which the
    /// Winograd form is measured to pay (never under the roofline, so never for CUDA targets).
    Winograd(String, String),
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

/// The built-in rule files, by topic.
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("builtin:conv.rules", include_str!("../../../rules/conv.rules")),
    ("builtin:elementwise.rules", include_str!("../../../rules/elementwise.rules")),
    ("builtin:layout.rules", include_str!("../../../rules/layout.rules")),
    ("builtin:matmul.rules", include_str!("../../../rules/matmul.rules")),
    ("builtin:shape.rules", include_str!("../../../rules/shape.rules")),
];

/// The built-in rules (parsed and type-checked once per process).
pub fn builtin() -> Result<&'static [Rule], RuleError> {
    static BUILTIN: std::sync::OnceLock<Result<Vec<Rule>, RuleError>> = std::sync::OnceLock::new();
    let parsed = BUILTIN.get_or_init(|| {
        let mut all = Vec::new();
        for (name, text) in BUILTIN_FILES {
            all.extend(syntax::parse_rules(name, text)?);
        }
        Ok(all)
    });
    parsed.as_ref().map(|v| v.as_slice()).map_err(Clone::clone)
}
