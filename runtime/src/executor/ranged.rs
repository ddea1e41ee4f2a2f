//! Range artifacts (`tessera compile --dim NAME=LO..HI`, format 3): one artifact that runs at
//! any size in its ranges, taking the sizes from the inputs at every run.
//!
//! What the artifact holds: the model's graph with its range symbols left symbolic (the `--dim
//! NAME=N` ones bound), as `tsr` MLIR text in `rank0/graph.mlir` (constants included), and in
//! the manifest the ranges ([`tessera_ir::artifact::Manifest::dims`]). How it runs: each run
//! binds the symbols from the inputs' shapes (`ir::types::bind_from_shapes`, so a dimension
//! such as `seq + 1` solves for `seq`), checks every size against its range, and evaluates the
//! graph with the reference interpreter ([`crate::interpreter`]), which gives each node its
//! concrete types through the op's shape rule and allocates per value (no arena: memory is
//! the live set of the run at its own sizes, dropped after each value's last use).
//!
//! Two ways to run, by what the binary links. The runtime links no code generator (`tessera-rt`
//! stays free of MLIR/LLVM), so on its own it evaluates the graph with the interpreter. A binary
//! that links one (`tessera`) hands the executor a [`Specializer`]: each run's sizes are then
//! bound into the graph and compiled exactly as `tessera compile --dim NAME=N` compiles them (the
//! same CPU pipeline, so the same kernels, library calls and memory plan for that size), and the
//! compiled program is kept in a cache keyed by the sizes: a `--repeat` run or a server compiles
//! once per distinct size, and memory is planned per size (re-planned per distinct size, not for
//! the upper bound). The interpreter stays the oracle the compiled path is tested against.
//!
//! # API: bind weights once, run at varying sizes
//!
//! ```text
//! let executor = RangedExecutor::load(dir, None)?;       // manifest, checksums, parse, verify
//! let mut bound = executor.bind(weights)?;               // the parameters, kept across runs
//! let out = bound.run(&[("input_ids".into(), ids)])?;    // any sizes in range, each run
//! // or, compiled per distinct size and cached (the binary supplies the code generator):
//! let executor = RangedExecutor::load(dir, None)?.with_specializer(specializer);
//! ```
//!
//! # Invariants
//!
//! - **Every free symbol has a range, every range a symbol.** The graph's input symbols are
//!   exactly the manifest's `dims` (checked at load), so no run meets an unbound dimension.
//! - **A run outside a range is refused before any compute**, naming the symbol, its size, the
//!   range and the input and axis it came from; inputs whose sizes disagree (`batch` 2 in one
//!   input and 3 in another) are refused naming the input and dimension. Both are
//!   `ArtifactError`s, never panics.

use super::cpu::{Bound, CpuExecutor};
use super::load::{checked_files, read_manifest_expecting, Artifact};
use super::ArtifactError;
use crate::interpreter;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ir::artifact::{DimRange, LibraryCall, Step, MANIFEST_FILE, SYMBOLIC_PROGRAM_FILE};
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

/// Compiles a range artifact's symbolic program at one set of sizes into a loaded, checked CPU
/// artifact: what `tessera compile --dim NAME=N` writes for those sizes. Supplied by a binary
/// that links the code generator (the runtime does not: see the module docs).
pub trait Specializer: std::fmt::Debug + Send + Sync {
    /// `graph` compiled with every symbol of `sizes` bound; `options` are the range artifact's
    /// manifest options (`epilogues=on` and the like), which the compile keeps.
    fn specialize(&self, graph: &Graph, sizes: &BTreeMap<String, u64>, options: &[String]) -> Result<Artifact, String>;
}

/// A range artifact's program, loaded and checked, ready to bind and run.
#[derive(Debug)]
pub struct RangedExecutor {
    graph: Graph,
    dims: Vec<DimRange>,
    /// The broadcasts whose sizes the symbols left undecided, checked at every run's sizes
    /// before anything is computed.
    checks: Vec<tessera_ir::ops::layout::DeferredBroadcast>,
    /// The manifest's options, handed to the specializer.
    options: Vec<String>,
    /// Compiles each distinct size when present; the interpreter runs otherwise.
    specializer: Option<Arc<dyn Specializer>>,
}

impl RangedExecutor {
    /// Loads the range artifact in `dir`: the manifest (whose SHA-256 must be `expected` when
    /// given), rank 0's files against their checksums, and its symbolic program.
    pub fn load(dir: &Path, expected: Option<&str>) -> Result<RangedExecutor, ArtifactError> {
        let manifest = read_manifest_expecting(dir, expected)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let malformed = |message: String| ArtifactError::Malformed { path: manifest_path.clone(), message };
        if manifest.dims.is_empty() {
            return Err(malformed("no dims: not a range artifact".into()));
        }
        let [rank] = manifest.ranks.as_slice() else {
            return Err(malformed(format!("a range artifact has one rank, this one {}", manifest.ranks.len())));
        };
        if manifest.target != "cpu" {
            return Err(malformed(format!("a range artifact runs on the cpu, this one targets {}", manifest.target)));
        }
        let program_path = dir.join(&rank.program);
        let text = checked_files(dir, rank)?
            .into_iter()
            .find(|(path, _)| *path == rank.program)
            .map(|(_, bytes)| bytes)
            .ok_or_else(|| malformed(format!("'{}' is used but not listed with a checksum", rank.program)))?;
        if !rank.program.ends_with(SYMBOLIC_PROGRAM_FILE) {
            return Err(malformed(format!(
                "the program of a range artifact is {SYMBOLIC_PROGRAM_FILE}, not {}",
                rank.program
            )));
        }
        let invalid = |message: String| ArtifactError::InvalidProgram { path: program_path.clone(), message };
        let text = String::from_utf8(text).map_err(|_| invalid("not UTF-8 text".into()))?;
        let graph = tessera_ir::mlir::parse::parse_verified(&text).map_err(|e| invalid(e.to_string()))?;
        let mut executor = RangedExecutor::new(graph, manifest.dims).map_err(|e| match e {
            ArtifactError::InvalidProgram { message, .. } => invalid(message),
            other => other,
        })?;
        executor.options = manifest.options;
        Ok(executor)
    }

    /// Runs compiled code from now on: each distinct size compiled by `specializer` once per
    /// [`RangedBound`] and cached there.
    pub fn with_specializer(mut self, specializer: Arc<dyn Specializer>) -> RangedExecutor {
        self.specializer = Some(specializer);
        self
    }

    /// Whether runs compile per size (a [`Specializer`] was given) rather than interpret.
    pub fn specializes(&self) -> bool {
        self.specializer.is_some()
    }

    /// An executor of `graph` whose input symbols are exactly the names of `dims`, each range
    /// non-empty and starting at 1 or more.
    pub fn new(graph: Graph, mut dims: Vec<DimRange>) -> Result<RangedExecutor, ArtifactError> {
        let invalid = |message: String| ArtifactError::InvalidProgram { path: "graph".into(), message };
        tessera_ir::verify::verify(&graph).map_err(|e| invalid(e.to_string()))?;
        dims.sort();
        for pair in dims.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(invalid(format!("dimension '{}' has two ranges", pair[0].name)));
            }
        }
        if let Some(bad) = dims.iter().find(|d| d.lo == 0 || d.lo > d.hi) {
            return Err(invalid(format!("range {bad} is empty or includes 0")));
        }
        let symbols: BTreeSet<&str> = graph.inputs().iter().flat_map(|&v| graph.value(v).ty.symbols()).collect();
        let ranged: BTreeSet<&str> = dims.iter().map(|d| d.name.as_str()).collect();
        if symbols != ranged {
            let list = |s: &BTreeSet<&str>| s.iter().copied().collect::<Vec<_>>().join(", ");
            return Err(invalid(format!(
                "the inputs' symbolic dimensions ({}) are not the ranged ones ({})",
                list(&symbols),
                list(&ranged)
            )));
        }
        let checks = tessera_ir::ops::layout::deferred_broadcasts(&graph);
        Ok(RangedExecutor { graph, dims, checks, options: Vec::new(), specializer: None })
    }

    /// The symbolic program.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The ranges, sorted by name.
    pub fn dims(&self) -> &[DimRange] {
        &self.dims
    }

    /// The inputs the model declares parameters (what a caller binds once).
    pub fn parameters(&self) -> Vec<&str> {
        let inputs = self.graph.inputs().iter();
        inputs
            .filter(|&&v| self.graph.input_role(v) == Some(InputRole::Parameter))
            .map(|&v| self.graph.value(v).name.as_str())
            .collect()
    }

    /// The size of every ranged symbol for `inputs` (all of the graph's inputs, by name):
    /// learned from their shapes and checked against the ranges (see the module docs).
    pub fn sizes(&self, inputs: &[(&str, &Tensor)]) -> Result<HashMap<String, u64>, ArtifactError> {
        let mut given = Vec::new();
        for &v in self.graph.inputs() {
            let value = self.graph.value(v);
            let Some((_, tensor)) = inputs.iter().find(|(name, _)| *name == value.name) else { continue };
            if tensor.shape.len() != value.ty.rank() {
                return Err(ArtifactError::Input {
                    name: value.name.clone(),
                    message: format!("declared {} but the tensor given has shape {:?}", value.ty, tensor.shape),
                });
            }
            given.push((format!("input '{}'", value.name), &value.ty, tensor.shape.as_slice()));
        }
        let observed: Vec<(&str, &tessera_ir::types::TensorType, &[usize])> =
            given.iter().map(|(what, ty, shape)| (what.as_str(), *ty, *shape)).collect();
        let mut sizes = HashMap::new();
        tessera_ir::types::bind_from_shapes(&observed, &mut sizes)
            .map_err(|message| ArtifactError::DimSizes { message })?;
        for range in &self.dims {
            let Some(&size) = sizes.get(&range.name) else {
                return Err(ArtifactError::DimSizes {
                    message: format!("no input gives the size of symbolic dimension '{}'", range.name),
                });
            };
            if !range.contains(size) {
                return Err(ArtifactError::DimOutOfRange {
                    range: range.clone(),
                    size,
                    origin: self.origin(&range.name, &given),
                });
            }
        }
        // Sizes past i64 were refused binding; `bind_from_shapes` works in i64.
        let signed: HashMap<String, i64> = sizes.iter().map(|(k, &v)| (k.clone(), v as i64)).collect();
        for check in &self.checks {
            let holds = check.holds(&signed).map_err(|message| ArtifactError::DimSizes { message })?;
            if !holds {
                let size =
                    |e: &tessera_ir::symbolic::DimExpr| e.eval(&signed).map(|n| n.to_string()).unwrap_or_default();
                let mut bound: Vec<String> = sizes.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                bound.sort();
                return Err(ArtifactError::DimSizes {
                    message: format!(
                        "these input sizes ({}) do not run this model: it broadcasts a dimension of size {} = {} against {} = {} (value '{}'); the two agree only at some sizes",
                        bound.join(", "),
                        check.operand,
                        size(&check.operand),
                        check.target,
                        size(&check.target),
                        check.value
                    ),
                });
            }
        }
        Ok(sizes)
    }

    /// "input 'x', dimension 1": the first input dimension that is exactly `symbol`, else the
    /// first that mentions it.
    fn origin(&self, symbol: &str, given: &[(String, &tessera_ir::types::TensorType, &[usize])]) -> String {
        let found = |exact: bool| {
            given.iter().find_map(|(what, ty, _)| {
                ty.dims
                    .iter()
                    .position(|d| match d {
                        Dim::Symbolic(e) if exact => e.as_symbol() == Some(symbol),
                        Dim::Symbolic(e) => e.symbols().contains(symbol),
                        Dim::Static(_) => false,
                    })
                    .map(|axis| format!("{what}, dimension {axis}"))
            })
        };
        found(true).or_else(|| found(false)).unwrap_or_else(|| "the inputs".to_string())
    }

    /// Keeps `resident` (typically the parameters) for every run of the returned [`RangedBound`].
    /// Refuses a name that is not an input and a name given twice.
    pub fn bind(&self, resident: Vec<(String, Tensor)>) -> Result<RangedBound<'_>, ArtifactError> {
        self.check_names(&resident, &[])?;
        Ok(RangedBound { executor: self, resident, programs: HashMap::new(), compiles: Vec::new() })
    }

    /// One run with every input given: `bind(vec![])` then [`RangedBound::run`].
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        self.bind(Vec::new())?.run(inputs)
    }

    fn check_names(&self, feeds: &[(String, Tensor)], resident: &[(String, Tensor)]) -> Result<(), ArtifactError> {
        let mut seen = BTreeSet::new();
        for (name, _) in resident.iter().chain(feeds) {
            let known = self.graph.inputs().iter().any(|&v| self.graph.value(v).name == *name);
            let message = if !known {
                "not an input of the program"
            } else if !seen.insert(name.as_str()) {
                "given twice (or bound and given)"
            } else {
                continue;
            };
            return Err(ArtifactError::Input { name: name.clone(), message: message.into() });
        }
        Ok(())
    }
}

/// A [`RangedExecutor`] with some inputs bound once (see [`RangedExecutor::bind`]), and, when
/// the executor specializes, the compiled program of every size run so far.
pub struct RangedBound<'e> {
    executor: &'e RangedExecutor,
    resident: Vec<(String, Tensor)>,
    /// Per distinct sizes: the compiled program with the resident inputs bound, or `None`
    /// where compiling or its first run failed and the interpreter runs those sizes.
    programs: HashMap<BTreeMap<String, u64>, Option<Bound<CpuExecutor>>>,
    /// Per compile, in order: the sizes (`batch=2, seq=5`), how long compiling, binding and the
    /// first run took, and why the interpreter runs these sizes instead, if it does.
    compiles: Vec<SizeCompile>,
}

impl std::fmt::Debug for RangedBound<'_> {
    /// The compiled programs show as their sizes (a bound program is an arena and mapped code).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangedBound")
            .field("executor", self.executor)
            .field("resident", &self.resident)
            .field("programs", &self.programs.iter().map(|(k, p)| (k, p.is_some())).collect::<Vec<_>>())
            .field("compiles", &self.compiles)
            .finish()
    }
}

impl RangedBound<'_> {
    /// Runs at the sizes `inputs` (the inputs not bound) and the bound ones give; the graph's
    /// outputs in order, by name. Specializing, the first run at a size compiles it.
    pub fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, ArtifactError> {
        let executor = self.executor;
        executor.check_names(inputs, &self.resident)?;
        let all: Vec<(&str, &Tensor)> = self.resident.iter().chain(inputs).map(|(n, t)| (n.as_str(), t)).collect();
        let sizes = executor.sizes(&all)?;
        // The interpreter takes one list of owned feeds; the copy is the inputs' (the
        // parameters of an imported model are usually constants inside the graph).
        let feeds: Vec<(String, Tensor)> = self.resident.iter().chain(inputs).cloned().collect();
        let symbolic = |e: interpreter::RunError| ArtifactError::Symbolic { message: e.to_string() };
        let Some(specializer) = &executor.specializer else {
            return interpreter::run(&executor.graph, &feeds).map_err(symbolic);
        };
        // What the interpreter refuses (a static dimension or dtype that differs, an input
        // missing) the compiled path refuses with the same message, before compiling.
        interpreter::check_inputs(&executor.graph, &feeds).map_err(symbolic)?;
        let sizes: BTreeMap<String, u64> = sizes.into_iter().collect();
        if let Some(Some(program)) = self.programs.get_mut(&sizes) {
            return program.run(inputs);
        }
        if self.programs.contains_key(&sizes) {
            return interpreter::run(&executor.graph, &feeds).map_err(symbolic);
        }
        // First run at these sizes: compile, bind and run. What the code generator cannot take
        // at these sizes (a refused specialization, or a step its library calls do not cover)
        // falls back to the interpreter, which checked the inputs above, and is reported.
        let start = Instant::now();
        let spelled = spell(&sizes);
        let mut reference_steps = 0;
        let compiled = specializer
            .specialize(&executor.graph, &sizes, &executor.options)
            .map_err(|message| ArtifactError::Specialize { sizes: spelled.clone(), message })
            .and_then(|artifact| {
                reference_steps = artifact
                    .program
                    .steps
                    .iter()
                    .filter(|step| matches!(step, Step::Library { call: LibraryCall::Reference { .. }, .. }))
                    .count();
                CpuExecutor::new(artifact)?.into_bound(&self.resident)
            })
            .and_then(|mut bound| bound.run(inputs).map(|outputs| (bound, outputs)));
        let took = start.elapsed();
        match compiled {
            Ok((bound, outputs)) => {
                self.compiles.push(SizeCompile { sizes: spelled, took, reference_steps, fallback: None });
                self.programs.insert(sizes, Some(bound));
                Ok(outputs)
            }
            Err(why) => {
                let fallback = Some(why.to_string());
                self.compiles.push(SizeCompile { sizes: spelled, took, reference_steps, fallback });
                self.programs.insert(sizes, None);
                interpreter::run(&executor.graph, &feeds).map_err(symbolic)
            }
        }
    }

    /// Every compile so far (sizes spelled `batch=2, seq=5`, the time it took with the bind and
    /// the first run, and why the interpreter runs those sizes, if it does), in order: empty
    /// when no specializer was given.
    pub fn compiles(&self) -> &[SizeCompile] {
        &self.compiles
    }
}

/// One compile of a range artifact at the sizes of a run.
#[derive(Debug, Clone)]
pub struct SizeCompile {
    /// The sizes, spelled `batch=2, seq=5`.
    pub sizes: String,
    /// The compile with the bind and the first run.
    pub took: Duration,
    /// Steps of the compiled program that run an op's reference semantics (issue 16: none).
    pub reference_steps: usize,
    /// Why the interpreter runs these sizes, if it does.
    pub fallback: Option<String>,
}

/// `batch=2, seq=5`.
fn spell(sizes: &BTreeMap<String, u64>) -> String {
    sizes.iter().map(|(name, size)| format!("{name}={size}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::dtype::DType;

    /// `y = (x + z) @ w` with x, z: batch x seq and w: seq x 4.
    const MODEL: &str = r##"func.func @m(%x: tensor<?x?xf32, ["batch", "seq"]>, %z: tensor<?x?xf32, ["batch", "seq"]>, %w: tensor<?x4xf32, ["seq"]>) -> tensor<?x4xf32, ["batch"]> {
  %a = "tsr.add"(%x, %z) : (tensor<?x?xf32, ["batch", "seq"]>, tensor<?x?xf32, ["batch", "seq"]>) -> tensor<?x?xf32, ["batch", "seq"]>
  %y = "tsr.matmul"(%a, %w) : (tensor<?x?xf32, ["batch", "seq"]>, tensor<?x4xf32, ["seq"]>) -> tensor<?x4xf32, ["batch"]>
  return %y : tensor<?x4xf32, ["batch"]>
}
"##;

    fn executor() -> RangedExecutor {
        let graph = tessera_ir::mlir::parse::parse_verified(MODEL).expect("parse");
        let dims = vec![DimRange { name: "seq".into(), lo: 1, hi: 8 }, DimRange { name: "batch".into(), lo: 2, hi: 3 }];
        RangedExecutor::new(graph, dims).expect("executor")
    }

    fn tensor(shape: &[usize], offset: f64) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f64(DType::F32, shape.to_vec(), (0..n).map(|i| i as f64 * 0.5 + offset).collect())
    }

    fn feeds(batch: usize, seq: usize, z_seq: usize) -> Vec<(String, Tensor)> {
        vec![
            ("x".to_string(), tensor(&[batch, seq], 1.0)),
            ("z".to_string(), tensor(&[batch, z_seq], -2.0)),
            ("w".to_string(), tensor(&[seq, 4], 0.25)),
        ]
    }

    /// `x + broadcast(y)` where `y`'s size `floordiv(h + 1, 2)` agrees with `x`'s `floordiv(h, 2)`
    /// only at even `h` (the shape PP-OCRv4-det's feature pyramid has).
    const UNDECIDED: &str = r##"func.func @main(%x: tensor<?xf32, ["floordiv(h, 2)"]>, %y: tensor<?xf32, ["floordiv(h + 1, 2)"]>, %h: tensor<?xf32, ["h"]>) -> tensor<?xf32, ["floordiv(h, 2)"]> {
  %b = "tsr.broadcast"(%y) : (tensor<?xf32, ["floordiv(h + 1, 2)"]>) -> tensor<?xf32, ["floordiv(h, 2)"]>
  %a = "tsr.add"(%x, %b) : (tensor<?xf32, ["floordiv(h, 2)"]>, tensor<?xf32, ["floordiv(h, 2)"]>) -> tensor<?xf32, ["floordiv(h, 2)"]>
  return %a : tensor<?xf32, ["floordiv(h, 2)"]>
}
"##;

    #[test]
    fn a_broadcast_the_symbols_leave_undecided_is_checked_at_each_runs_sizes() {
        let graph = tessera_ir::mlir::parse::parse_verified(UNDECIDED).expect("parse");
        let executor =
            RangedExecutor::new(graph, vec![DimRange { name: "h".into(), lo: 1, hi: 16 }]).expect("executor");
        let feeds = |h: usize| {
            vec![
                ("x".to_string(), tensor(&[h / 2], 1.0)),
                ("y".to_string(), tensor(&[h.div_ceil(2)], 0.0)),
                ("h".to_string(), tensor(&[h], 0.0)),
            ]
        };
        let out = executor.run(&feeds(6)).expect("h = 6: 3 and 3");
        assert_eq!(out[0].1.to_f64_vec(), vec![1.0, 2.0, 3.0]);
        let err = executor.run(&feeds(7)).expect_err("h = 7: 3 against 4");
        assert_eq!(
            err.to_string(),
            "inconsistent input sizes: these input sizes (h = 7) do not run this model: it broadcasts a dimension of size floordiv(h + 1, 2) = 4 against floordiv(h, 2) = 3 (value 'b'); the two agree only at some sizes"
        );
    }

    #[test]
    fn runs_at_every_size_in_range_like_the_interpreter() {
        let executor = executor();
        assert_eq!(executor.dims()[0].name, "batch", "ranges are kept sorted");
        for (batch, seq) in [(2, 1), (3, 8), (2, 5)] {
            let feeds = feeds(batch, seq, seq);
            let expected = interpreter::run(executor.graph(), &feeds).expect("interpreter");
            let got = executor.run(&feeds).expect("run");
            assert_eq!(got, expected);
            assert_eq!(got[0].1.shape, vec![batch, 4]);
        }
    }

    #[test]
    fn bound_inputs_stay_across_runs_at_other_sizes() {
        let executor = executor();
        let w = tensor(&[3, 4], 0.25);
        let mut bound = executor.bind(vec![("w".to_string(), w)]).expect("bind");
        for batch in [2, 3] {
            let all = feeds(batch, 3, 3);
            let expected = interpreter::run(executor.graph(), &all).expect("interpreter");
            assert_eq!(bound.run(&all[..2]).expect("run"), expected);
        }
        let err = bound.run(&feeds(2, 3, 3)).expect_err("w is bound");
        assert!(err.to_string().contains("input w: given twice"), "{err}");
    }

    #[test]
    fn a_size_outside_its_range_names_the_symbol_range_and_input() {
        let executor = executor();
        let err = executor.run(&feeds(4, 2, 2)).expect_err("batch 4 is out of 2..3");
        assert_eq!(
            err.to_string(),
            "input 'x', dimension 0: symbolic dimension 'batch' is 4, outside the artifact's range batch=2..3"
        );
        let err = executor.run(&feeds(2, 9, 9)).expect_err("seq 9 is out of 1..8");
        assert!(err.to_string().contains("'seq' is 9, outside the artifact's range seq=1..8"), "{err}");
    }

    #[test]
    fn inputs_that_disagree_on_a_size_are_refused_naming_the_input() {
        let executor = executor();
        let err = executor.run(&feeds(2, 3, 5)).expect_err("seq is 3 in x and 5 in z");
        let text = err.to_string();
        assert!(text.starts_with("inconsistent input sizes: "), "{text}");
        assert!(text.contains("input '") && text.contains("seq"), "{text}");
        let mut feeds = feeds(2, 3, 3);
        feeds[0].1 = tensor(&[2, 3, 1], 0.0);
        let err = executor.run(&feeds).expect_err("x has rank 3");
        assert!(err.to_string().starts_with("input x: declared"), "{err}");
    }

    #[test]
    fn ranges_must_match_the_inputs_symbols() {
        let graph = tessera_ir::mlir::parse::parse_verified(MODEL).expect("parse");
        let err = RangedExecutor::new(graph.clone(), vec![DimRange { name: "batch".into(), lo: 1, hi: 2 }])
            .expect_err("seq has no range");
        assert!(err.to_string().contains("(batch, seq) are not the ranged ones (batch)"), "{err}");
        let dims = vec![DimRange { name: "batch".into(), lo: 3, hi: 2 }, DimRange { name: "seq".into(), lo: 1, hi: 2 }];
        let err = RangedExecutor::new(graph, dims).expect_err("3..2 is empty");
        assert!(err.to_string().contains("range batch=3..2 is empty"), "{err}");
    }
}
