//! The ONNX backend node-test runner: imports each test's `model.onnx`, evaluates it on every
//! `test_data_set_*` with a caller-supplied evaluator (the CLI passes the reference
//! interpreter, so this crate does not depend on the runtime), and compares with the expected
//! outputs under the ONNX backend runner's tolerances.

use super::error::OnnxError;
use super::proto::{ModelProto, TensorProto};
use super::tensor::{self, ExternalData};
use super::ImportOptions;
use prost::Message;
use std::fmt;
use std::path::{Path, PathBuf};
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;

/// Evaluates a graph on named inputs, giving named outputs in graph-output order.
pub type Evaluator<'a> = &'a dyn Fn(&Graph, &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, String>;

/// `onnx.backend.test.loader` defaults: a value passes when
/// `|actual - expected| <= atol + rtol * |expected|` (NumPy `assert_allclose`, NaN equal to NaN).
pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

/// The tolerance one case is compared under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Tolerance {
        Tolerance { rtol: RTOL, atol: ATOL }
    }
}

/// Per-case tolerances in place of the defaults, as onnx's own backend test passes them
/// (`BackendTest(test_kwargs={name: {"rtol": .., "atol": ..}})`, which its runner applies with
/// `kwargs.get("atol", model_test.atol)`): onnx keeps them in its test harness, not in the test
/// data, so tessera keeps a transcription (`tests/conformance/onnx-node-tolerances.txt`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tolerances {
    per_case: std::collections::BTreeMap<String, Tolerance>,
}

impl Tolerances {
    /// Reads the text form: one `name: rtol=R atol=A` per line (either key may be left out,
    /// keeping its default); blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Tolerances, ManifestError> {
        let mut per_case = std::collections::BTreeMap::new();
        for entry in named_lines(text, "name: rtol=R atol=A") {
            let (line, name, settings) = entry?;
            let error = |message: String| ManifestError { line, message };
            let mut tolerance = Tolerance::default();
            let mut keys = Vec::new();
            for setting in settings.split_whitespace() {
                let Some((key, value)) = setting.split_once('=') else {
                    return Err(error(format!("'{}' is not 'rtol=R' or 'atol=A'", truncate(setting))));
                };
                let field = match key {
                    "rtol" => &mut tolerance.rtol,
                    "atol" => &mut tolerance.atol,
                    _ => return Err(error(format!("unknown tolerance '{}' (rtol or atol)", truncate(key)))),
                };
                *field = match value.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => v,
                    _ => return Err(error(format!("{key}: '{}' is not a finite number >= 0", truncate(value)))),
                };
                if keys.contains(&key) {
                    return Err(error(format!("'{key}' is given twice for '{name}'")));
                }
                keys.push(key);
            }
            if keys.is_empty() {
                return Err(error(format!("'{name}' has no rtol or atol")));
            }
            if per_case.insert(name.to_string(), tolerance).is_some() {
                return Err(error(format!("'{name}' has two tolerance lines")));
            }
        }
        Ok(Tolerances { per_case })
    }

    /// The tolerance of the case named `name` (the defaults unless a line names it).
    pub fn of(&self, name: &str) -> Tolerance {
        self.per_case.get(name).copied().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The model imported but gave wrong results or failed to run (or did not import although
    /// nothing about it is unsupported).
    Failed(String),
    /// The importer does not support something the model uses.
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The test directory's name (`test_abs`).
    pub name: String,
    pub outcome: Outcome,
    /// Graph inputs the runner bound to their test values because the importer needs them as
    /// constants (a Reshape's shape fed as an input, say): the case passed specialized.
    pub bound_inputs: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
    /// Every case, sorted by name.
    pub cases: Vec<CaseResult>,
}

impl fmt::Display for Summary {
    /// The closing line: `onnx-node: P passed, F failed, U unsupported`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "onnx-node: {} passed, {} failed, {} unsupported", self.passed, self.failed, self.unsupported)
    }
}

/// Runs every node test under `dir` (each a subdirectory holding `model.onnx`) under the
/// default tolerances.
pub fn run_node_tests(dir: &Path, eval: Evaluator) -> Result<Summary, OnnxError> {
    run_node_tests_with(dir, eval, &Tolerances::default())
}

/// Runs every node test under `dir`, each compared under its tolerance in `tolerances`.
pub fn run_node_tests_with(dir: &Path, eval: Evaluator, tolerances: &Tolerances) -> Result<Summary, OnnxError> {
    let io = |source| OnnxError::Io { path: dir.to_path_buf(), source };
    let mut case_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    case_dirs.sort();
    let mut summary = Summary::default();
    for case in case_dirs {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (outcome, bound_inputs) = run_guarded(&case, eval, tolerances.of(&name));
        match outcome {
            Outcome::Passed => summary.passed += 1,
            Outcome::Failed(_) => summary.failed += 1,
            Outcome::Unsupported(_) => summary.unsupported += 1,
        }
        summary.cases.push(CaseResult { name, outcome, bound_inputs });
    }
    Ok(summary)
}

/// Runs one node test directory. A panic anywhere below (an evaluator bug, say) is caught and
/// reported as a failure of this case, so one bad case does not end the whole suite.
pub fn run_node_test(case: &Path, eval: Evaluator) -> Outcome {
    run_guarded(case, eval, Tolerance::default()).0
}

fn run_guarded(case: &Path, eval: Evaluator, tolerance: Tolerance) -> (Outcome, Vec<String>) {
    let run = std::panic::AssertUnwindSafe(|| run_case(case, eval, tolerance));
    match std::panic::catch_unwind(run) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Outcome::Failed(format!("panicked: {message}")), vec![])
        }
    }
}

/// The outcome and the inputs bound to constants on the way.
fn run_case(case: &Path, eval: Evaluator, tolerance: Tolerance) -> (Outcome, Vec<String>) {
    match run_case_sets(case, eval, tolerance) {
        Ok(bound) => (Outcome::Passed, bound),
        Err(outcome) => (outcome, vec![]),
    }
}

fn run_case_sets(case: &Path, eval: Evaluator, tolerance: Tolerance) -> Result<Vec<String>, Outcome> {
    let model_path = case.join("model.onnx");
    let model = match std::fs::read(&model_path) {
        Ok(bytes) => match ModelProto::decode(bytes.as_slice()) {
            Ok(m) => m,
            Err(e) => return Err(Outcome::Failed(format!("import: {}", OnnxError::from(e)))),
        },
        Err(e) => return Err(Outcome::Failed(format!("cannot read {}: {e}", model_path.display()))),
    };
    let mut data_sets: Vec<PathBuf> = match std::fs::read_dir(case) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")))
            .collect(),
        Err(e) => return Err(Outcome::Failed(format!("cannot list {}: {e}", case.display()))),
    };
    data_sets.sort();
    if data_sets.is_empty() {
        return import(&model, case, &[]).map(|_| vec![]);
    }
    let mut bound = Vec::new();
    for set in &data_sets {
        for name in run_data_set(&model, case, set, eval, tolerance)? {
            if !bound.contains(&name) {
                bound.push(name);
            }
        }
    }
    Ok(bound)
}

/// Imports `model` with `inputs` available for binding: when the importer needs a graph input
/// as a constant (a Reshape's shape fed as an input, say), that input is bound to its test value
/// and the import retried. Returns the graph and the inputs left to feed it, in order.
fn import_specialized(
    model: &ModelProto,
    case: &Path,
    inputs: &[(String, Tensor)],
) -> Result<(Graph, Vec<(String, Tensor)>), Outcome> {
    let mut options = ImportOptions::default();
    loop {
        match super::import_proto(model, Some(case), &options) {
            Ok(graph) => {
                let rest = inputs.iter().filter(|(n, _)| !options.constants.iter().any(|(b, _)| b == n)).cloned();
                return Ok((graph, rest.collect()));
            }
            Err(e) => {
                // Bind the graph inputs the needed value is computed from (itself, if it is one).
                let sources = e.needed_constant().map(|name| upstream_inputs(model, name)).unwrap_or_default();
                let new: Vec<(String, Tensor)> = inputs
                    .iter()
                    .filter(|(n, _)| sources.contains(n) && !options.constants.iter().any(|(b, _)| b == n))
                    .cloned()
                    .collect();
                if !new.is_empty() {
                    options.constants.extend(new);
                } else if e.is_unsupported() {
                    return Err(Outcome::Unsupported(e.to_string()));
                } else {
                    return Err(Outcome::Failed(format!("import: {e}")));
                }
            }
        }
    }
}

/// The graph inputs that the ONNX value `name` depends on (itself when it is one).
fn upstream_inputs(model: &ModelProto, name: &str) -> Vec<String> {
    let Some(g) = model.graph.as_ref() else { return vec![] };
    let mut seen: Vec<String> = Vec::new();
    let mut stack = vec![name.to_string()];
    let mut found = Vec::new();
    while let Some(v) = stack.pop() {
        if seen.contains(&v) {
            continue;
        }
        seen.push(v.clone());
        if g.input.iter().any(|i| i.name() == v) {
            found.push(v.clone());
        }
        // Shape and Size depend on their input's type, not its data: no need to bind it.
        let producer = g.node.iter().find(|n| n.output.contains(&v));
        if let Some(node) = producer.filter(|n| !matches!(n.op_type(), "Shape" | "Size")) {
            stack.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    found
}

fn import(model: &ModelProto, case: &Path, inputs: &[(String, Tensor)]) -> Result<Graph, Outcome> {
    import_specialized(model, case, inputs).map(|(g, _)| g)
}

/// The ONNX names of the graph inputs that have no initializer, in order: the inputs the test
/// data files feed.
fn fed_inputs(model: &ModelProto) -> Vec<String> {
    let Some(g) = model.graph.as_ref() else { return vec![] };
    g.input.iter().map(|i| i.name().to_string()).filter(|n| !g.initializer.iter().any(|t| t.name() == n)).collect()
}

/// `prefix_0.pb`, `prefix_1.pb`, ... as tensors, until the first missing index.
fn read_tensors(set: &Path, prefix: &str) -> Result<Vec<Tensor>, Outcome> {
    let mut out = Vec::new();
    for i in 0.. {
        let path = set.join(format!("{prefix}_{i}.pb"));
        if !path.is_file() {
            break;
        }
        out.push(read_tensor(&path)?);
    }
    Ok(out)
}

/// Reads one serialized `TensorProto` (a test input or expected output).
pub fn read_tensor_file(path: &Path) -> Result<Tensor, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
    let proto = TensorProto::decode(bytes.as_slice())?;
    let mut external = ExternalData::new(path.parent());
    tensor::decode(&proto, &mut external).map_err(|e| OnnxError::Tensor {
        name: path.display().to_string(),
        message: e.message,
        unsupported: e.unsupported,
    })
}

fn read_tensor(path: &Path) -> Result<Tensor, Outcome> {
    read_tensor_file(path).map_err(|e| {
        if e.is_unsupported() {
            Outcome::Unsupported(e.to_string())
        } else {
            Outcome::Failed(e.to_string())
        }
    })
}

/// Runs one data set; returns the inputs it had to bind to constants.
fn run_data_set(
    model: &ModelProto,
    case: &Path,
    set: &Path,
    eval: Evaluator,
    tolerance: Tolerance,
) -> Result<Vec<String>, Outcome> {
    let set_name = set.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Sequence and optional test values are not TensorProtos; a model using them is unsupported,
    // which the import reports better than the failed read.
    let (inputs, expected) = match (read_tensors(set, "input"), read_tensors(set, "output")) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(read_error), _) | (_, Err(read_error)) => {
            import(model, case, &[])?;
            return Err(read_error);
        }
    };
    let names = fed_inputs(model);
    if inputs.len() != names.len() {
        return Err(Outcome::Failed(format!(
            "{set_name}: {} input files for {} graph inputs",
            inputs.len(),
            names.len()
        )));
    }
    let named: Vec<(String, Tensor)> = names.into_iter().zip(inputs).collect();
    let (graph, rest) = import_specialized(model, case, &named)?;
    let bound: Vec<String> =
        named.iter().filter(|(n, _)| !rest.iter().any(|(r, _)| r == n)).map(|(n, _)| n.clone()).collect();
    // The remaining ONNX inputs are the tsr graph's inputs, in the same order.
    let feed: Vec<(String, Tensor)> =
        graph.inputs().iter().zip(rest).map(|(&v, (_, t))| (graph.value(v).name.clone(), t)).collect();
    let actual = eval(&graph, &feed).map_err(|e| Outcome::Failed(format!("{set_name}: evaluation: {e}")))?;
    if actual.len() != expected.len() {
        return Err(Outcome::Failed(format!("{set_name}: {} outputs, expected {}", actual.len(), expected.len())));
    }
    for (i, ((name, got), want)) in actual.iter().zip(&expected).enumerate() {
        compare(got, want, tolerance)
            .map_err(|m| Outcome::Failed(format!("{set_name}: output {i} ('{name}'): {m}")))?;
    }
    Ok(bound)
}

/// Dtype, shape and values within `tolerance`, as the ONNX backend runner checks.
pub fn compare(got: &Tensor, want: &Tensor, tolerance: Tolerance) -> Result<(), String> {
    if got.dtype != want.dtype {
        return Err(format!("dtype {} differs from expected {}", got.dtype, want.dtype));
    }
    if got.shape != want.shape {
        return Err(format!("shape {:?} differs from expected {:?}", got.shape, want.shape));
    }
    if got.len() != want.len() {
        return Err(format!("{} values for {} expected", got.len(), want.len()));
    }
    let mut bad = 0usize;
    let mut first = None;
    for i in 0..want.len() {
        let (g, w) = (got.get_f64(i), want.get_f64(i));
        let close = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tolerance.atol + tolerance.rtol * w.abs()
        };
        if !close {
            bad += 1;
            first.get_or_insert((i, g, w));
        }
    }
    match first {
        None => Ok(()),
        Some((i, g, w)) => Err(format!("{bad} of {} values differ; first at {i}: {g} vs expected {w}", want.len())),
    }
}

/// The conformance manifest: the node tests known to pass, one name per line (`#` starts a
/// comment). A count can hide one op regressing while another starts passing; a manifest names
/// every case, so a regression is reported by name and a newly passing case is promoted into
/// the manifest on purpose (tract's `test-rt` works the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Case names, sorted.
    pub passing: std::collections::BTreeSet<String>,
    /// The cases known not to pass, each with its reason (name -> reason), when an exclusion
    /// list is given: then every case of the suite must be either listed or excluded.
    pub excluded: Option<std::collections::BTreeMap<String, String>>,
}

/// How a run compares with a [`Manifest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestCheck {
    /// Listed cases that did not pass, with what happened instead.
    pub regressed: Vec<(String, Outcome)>,
    /// Listed cases that are not in the suite at all (a renamed case, or the wrong directory).
    pub missing: Vec<String>,
    /// Cases that passed but are not listed yet.
    pub newly_passing: Vec<String>,
    /// Cases that neither pass nor are excluded with a reason (checked only when the manifest
    /// has an exclusion list): a new case of the suite, or an exclusion dropped by mistake.
    pub unexcluded: Vec<(String, Outcome)>,
    /// Excluded cases that now pass: promote them (drop the exclusion, list the case).
    pub excluded_but_passing: Vec<String>,
}

impl ManifestCheck {
    /// True when every listed case passed.
    pub fn holds(&self) -> bool {
        self.regressed.is_empty()
            && self.missing.is_empty()
            && self.unexcluded.is_empty()
            && self.excluded_but_passing.is_empty()
    }
}

impl fmt::Display for ManifestCheck {
    /// One line per regressed or missing case, then a count of the newly passing ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, outcome) in &self.regressed {
            writeln!(f, "REGRESSED {name}: {}", outcome_reason(outcome))?;
        }
        for name in &self.missing {
            writeln!(f, "MISSING {name}: listed in the manifest or the exclusions but not in the suite")?;
        }
        for (name, outcome) in &self.unexcluded {
            writeln!(f, "UNEXCLUDED {name}: does not pass and has no exclusion ({})", outcome_reason(outcome))?;
        }
        for name in &self.excluded_but_passing {
            writeln!(f, "EXCLUDED-BUT-PASSING {name}: passes; list it instead of excluding it")?;
        }
        write!(
            f,
            "manifest: {} regressed, {} missing, {} newly passing",
            self.regressed.len(),
            self.missing.len(),
            self.newly_passing.len()
        )?;
        if !self.unexcluded.is_empty() || !self.excluded_but_passing.is_empty() {
            write!(
                f,
                ", {} unexcluded, {} excluded but passing",
                self.unexcluded.len(),
                self.excluded_but_passing.len()
            )?;
        }
        Ok(())
    }
}

/// A malformed manifest line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ManifestError {
    pub line: usize,
    pub message: String,
}

impl Manifest {
    /// Reads the text form: one case name per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let mut passing = std::collections::BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let name = raw.split('#').next().unwrap_or_default().trim();
            if name.is_empty() {
                continue;
            }
            let error = |message: String| ManifestError { line: i + 1, message };
            if name.contains(char::is_whitespace) || name.contains(['/', '\\']) {
                return Err(error(format!("'{}' is not a node-test directory name", truncate(name))));
            }
            if !passing.insert(name.to_string()) {
                return Err(error(format!("'{name}' is listed twice")));
            }
        }
        Ok(Manifest { passing, excluded: None })
    }

    /// Adds the exclusion list's text form: one `name: reason` per line (the reason is required
    /// and runs to the end of the line); blank lines and lines starting with `#` are skipped. A
    /// case may not be both listed and excluded.
    pub fn with_exclusions(mut self, text: &str) -> Result<Manifest, ManifestError> {
        let mut excluded = std::collections::BTreeMap::new();
        for entry in named_lines(text, "name: reason") {
            let (line, name, reason) = entry?;
            let error = |message: String| ManifestError { line, message };
            if reason.is_empty() {
                return Err(error(format!("'{name}' is excluded without a reason")));
            }
            if self.passing.contains(name) {
                return Err(error(format!("'{name}' is both listed as passing and excluded")));
            }
            if excluded.insert(name.to_string(), reason.to_string()).is_some() {
                return Err(error(format!("'{name}' is excluded twice")));
            }
        }
        self.excluded = Some(excluded);
        Ok(self)
    }

    /// The manifest of the cases `summary` passed; with `previous` exclusions, every case that
    /// does not pass is excluded, keeping its previous reason or else taking the run's reason.
    pub fn of_summary(summary: &Summary, previous: Option<&Manifest>) -> Manifest {
        let passing = summary.cases.iter().filter(|c| c.outcome == Outcome::Passed).map(|c| c.name.clone()).collect();
        let excluded = previous.and_then(|m| m.excluded.as_ref()).map(|old| {
            summary
                .cases
                .iter()
                .filter(|c| c.outcome != Outcome::Passed)
                .map(|c| {
                    let reason = old.get(&c.name).cloned().unwrap_or_else(|| match &c.outcome {
                        Outcome::Failed(m) => format!("fails: {}", first_line(m)),
                        other => first_line(outcome_reason(other)).to_string(),
                    });
                    (c.name.clone(), reason)
                })
                .collect()
        });
        Manifest { passing, excluded }
    }

    /// The exclusion list's text form, `header` lines first as comments; `None` without one.
    pub fn exclusions_text(&self, header: &[&str]) -> Option<String> {
        let excluded = self.excluded.as_ref()?;
        let mut out = String::new();
        for line in header {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for (name, reason) in excluded {
            out.push_str(&format!("{name}: {reason}\n"));
        }
        Some(out)
    }

    /// The text form, `header` lines first as comments.
    pub fn to_text(&self, header: &[&str]) -> String {
        let mut out = String::new();
        for line in header {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for name in &self.passing {
            out.push_str(name);
            out.push('\n');
        }
        out
    }

    /// Compares a run with the manifest.
    pub fn check(&self, summary: &Summary) -> ManifestCheck {
        let mut check = ManifestCheck::default();
        let mut seen = std::collections::BTreeSet::new();
        for case in &summary.cases {
            seen.insert(case.name.as_str());
            let listed = self.passing.contains(&case.name);
            match (&case.outcome, listed) {
                (Outcome::Passed, false) => check.newly_passing.push(case.name.clone()),
                (Outcome::Passed, true) | (_, false) => {}
                (outcome, true) => check.regressed.push((case.name.clone(), outcome.clone())),
            }
        }
        check.missing = self.passing.iter().filter(|n| !seen.contains(n.as_str())).cloned().collect();
        if let Some(excluded) = &self.excluded {
            for case in &summary.cases {
                let is_excluded = excluded.contains_key(&case.name);
                match (&case.outcome, is_excluded) {
                    (Outcome::Passed, true) => check.excluded_but_passing.push(case.name.clone()),
                    (Outcome::Passed, false) | (_, true) => {}
                    (outcome, false) if !self.passing.contains(&case.name) => {
                        check.unexcluded.push((case.name.clone(), outcome.clone()))
                    }
                    (_, false) => {}
                }
            }
            check.missing.extend(excluded.keys().filter(|n| !seen.contains(n.as_str())).cloned());
        }
        check
    }
}

/// The `name: rest` lines of a list file, as (line number, name, trimmed rest); blank lines and
/// lines starting with `#` are skipped. A line without `:` is an error naming `form`, and so is
/// a name that is not a node-test directory name.
fn named_lines<'t>(
    text: &'t str,
    form: &'static str,
) -> impl Iterator<Item = Result<(usize, &'t str, &'t str), ManifestError>> + 't {
    text.lines().enumerate().filter_map(move |(i, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let error = |message: String| Some(Err(ManifestError { line: i + 1, message }));
        let Some((name, rest)) = line.split_once(':') else {
            return error(format!("'{}' is not '{form}'", truncate(line)));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains(['/', '\\']) {
            return error(format!("'{}' is not a node-test directory name", truncate(name)));
        }
        Some(Ok((i + 1, name, rest.trim())))
    })
}

/// What a case's outcome says, for messages.
fn outcome_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed(m) | Outcome::Unsupported(m) => m,
    }
}

/// The first line of `text`, so a reason stays one line of the exclusion list.
fn first_line(text: &str) -> &str {
    truncate(text.lines().next().unwrap_or_default())
}

/// At most 200 bytes of `text` (on a character boundary), for quoting input in messages.
fn truncate(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod manifest_tests {
    use super::{CaseResult, Manifest, Outcome, Summary};

    fn summary(cases: &[(&str, Outcome)]) -> Summary {
        let cases: Vec<CaseResult> = cases
            .iter()
            .map(|(n, o)| CaseResult { name: n.to_string(), outcome: o.clone(), bound_inputs: vec![] })
            .collect();
        Summary { passed: 0, failed: 0, unsupported: 0, cases }
    }

    #[test]
    fn a_regression_is_named_even_when_the_count_holds() {
        let manifest = Manifest::parse("# onnx 1.20.1\ntest_abs\ntest_acos  # since the trig family\n\n").unwrap();
        let run = summary(&[
            ("test_abs", Outcome::Passed),
            ("test_acos", Outcome::Failed("wrong values".into())),
            ("test_add", Outcome::Passed),
        ]);
        let check = manifest.check(&run);
        assert!(!check.holds());
        assert_eq!(check.regressed, vec![("test_acos".to_string(), Outcome::Failed("wrong values".into()))]);
        assert_eq!(check.newly_passing, vec!["test_add".to_string()]);
        assert_eq!(
            check.to_string(),
            "REGRESSED test_acos: wrong values\nmanifest: 1 regressed, 0 missing, 1 newly passing"
        );
        // Promoting: the manifest of this run lists exactly what passed.
        let promoted = Manifest::of_summary(&run, None);
        assert_eq!(promoted.to_text(&["h"]), "# h\ntest_abs\ntest_add\n");
        assert_eq!(Manifest::parse(&promoted.to_text(&["h"])).unwrap(), promoted);
    }

    #[test]
    fn listed_cases_absent_from_the_suite_are_missing() {
        let manifest = Manifest::parse("test_gone\n").unwrap();
        let check = manifest.check(&summary(&[("test_abs", Outcome::Unsupported("op".into()))]));
        assert_eq!(check.missing, vec!["test_gone".to_string()]);
        assert!(check.regressed.is_empty() && !check.holds());
    }

    #[test]
    fn with_exclusions_every_case_is_listed_or_excluded_with_a_reason() {
        let manifest = Manifest::parse("test_abs\n")
            .unwrap()
            .with_exclusions("# why each case is left out\ntest_if: If is a region op: not imported\n")
            .unwrap();
        let run = summary(&[
            ("test_abs", Outcome::Passed),
            ("test_if", Outcome::Unsupported("node #0 (If): unsupported op".into())),
            ("test_new", Outcome::Failed("2 of 4 values differ".into())),
        ]);
        let check = manifest.check(&run);
        assert_eq!(check.unexcluded, vec![("test_new".to_string(), Outcome::Failed("2 of 4 values differ".into()))]);
        assert!(!check.holds());
        assert_eq!(
            check.to_string(),
            "UNEXCLUDED test_new: does not pass and has no exclusion (2 of 4 values differ)\n\
             manifest: 0 regressed, 0 missing, 0 newly passing, 1 unexcluded, 0 excluded but passing"
        );
        // Promoting keeps the written reason and takes the run's reason for a new exclusion.
        let promoted = Manifest::of_summary(&run, Some(&manifest));
        assert_eq!(
            promoted.exclusions_text(&["h"]).unwrap(),
            "# h\ntest_if: If is a region op: not imported\ntest_new: fails: 2 of 4 values differ\n"
        );
        let reread = Manifest::parse("test_abs\n").unwrap().with_exclusions(&promoted.exclusions_text(&[]).unwrap());
        assert_eq!(reread.unwrap(), promoted);

        // An excluded case that passes must be promoted.
        let now_passing = summary(&[("test_abs", Outcome::Passed), ("test_if", Outcome::Passed)]);
        let check = manifest.check(&now_passing);
        assert_eq!(check.excluded_but_passing, vec!["test_if".to_string()]);
        assert!(!check.holds());
    }

    #[test]
    fn malformed_exclusions_are_located_errors() {
        let manifest = Manifest::parse("test_abs\n").unwrap();
        let error = |text: &str| manifest.clone().with_exclusions(text).unwrap_err().to_string();
        assert_eq!(error("test_if\n"), "line 1: 'test_if' is not 'name: reason'");
        assert_eq!(error("\ntest_if:  \n"), "line 2: 'test_if' is excluded without a reason");
        assert_eq!(error("test_abs: flaky\n"), "line 1: 'test_abs' is both listed as passing and excluded");
        assert_eq!(error("test_if: a\ntest_if: b\n"), "line 2: 'test_if' is excluded twice");
        assert_eq!(error("a b: c\n"), "line 1: 'a b' is not a node-test directory name");
    }

    #[test]
    fn malformed_manifests_are_located_errors() {
        assert_eq!(Manifest::parse("test_a\ntest_a\n").unwrap_err().to_string(), "line 2: 'test_a' is listed twice");
        assert_eq!(
            Manifest::parse("ok\n../etc/passwd\n").unwrap_err().to_string(),
            "line 2: '../etc/passwd' is not a node-test directory name"
        );
        let long = "x ".repeat(1000);
        let message = Manifest::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 260, "{message}");
    }
}

#[cfg(test)]
mod tolerance_tests {
    use super::{compare, Tolerance, Tolerances};
    use tessera_ir::dtype::DType;
    use tessera_ir::tensor::Tensor;

    fn f32s(values: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F32, vec![values.len()], values.to_vec())
    }

    #[test]
    fn a_case_with_its_own_tolerance_is_compared_under_it_and_the_rest_under_the_defaults() {
        let tolerances = Tolerances::parse(
            "# onnx's dft_atol on Linux\ntest_dft_inverse: atol=1e-6\n\ntest_celu_bfloat16_expanded: rtol=1e-2 atol=1e-2\n",
        )
        .unwrap();
        assert_eq!(tolerances.of("test_dft_inverse"), Tolerance { rtol: 1e-3, atol: 1e-6 });
        assert_eq!(tolerances.of("test_celu_bfloat16_expanded"), Tolerance { rtol: 1e-2, atol: 1e-2 });
        assert_eq!(tolerances.of("test_abs"), Tolerance::default());
        // NumPy's float32 ifft leaves 1.9e-7 where the exact value is 0 (test_dft_inverse, row 5).
        let (got, want) = (f32s(&[0.0, -5.0]), f32s(&[1.9073486e-7, -5.0]));
        assert_eq!(
            compare(&got, &want, Tolerance::default()).unwrap_err(),
            "1 of 2 values differ; first at 0: 0 vs expected 0.00000019073486612342094"
        );
        assert_eq!(compare(&got, &want, tolerances.of("test_dft_inverse")), Ok(()));
        // The wider atol still fails a value beyond it.
        let far = f32s(&[2e-6, -5.0]);
        assert!(compare(&far, &f32s(&[0.0, -5.0]), tolerances.of("test_dft_inverse")).is_err());
    }

    #[test]
    fn malformed_tolerance_lines_are_located_errors() {
        let error = |text: &str| Tolerances::parse(text).unwrap_err().to_string();
        assert_eq!(error("test_dft\n"), "line 1: 'test_dft' is not 'name: rtol=R atol=A'");
        assert_eq!(error("# c\ntest_dft:\n"), "line 2: 'test_dft' has no rtol or atol");
        assert_eq!(error("test_dft: atol\n"), "line 1: 'atol' is not 'rtol=R' or 'atol=A'");
        assert_eq!(error("test_dft: tol=1\n"), "line 1: unknown tolerance 'tol' (rtol or atol)");
        assert_eq!(error("test_dft: atol=-1\n"), "line 1: atol: '-1' is not a finite number >= 0");
        assert_eq!(error("test_dft: atol=NaN\n"), "line 1: atol: 'NaN' is not a finite number >= 0");
        assert_eq!(error("test_dft: atol=1 atol=2\n"), "line 1: 'atol' is given twice for 'test_dft'");
        assert_eq!(error("a: atol=1\na: rtol=1\n"), "line 2: 'a' has two tolerance lines");
        assert_eq!(error("../x: atol=1\n"), "line 1: '../x' is not a node-test directory name");
    }
}
