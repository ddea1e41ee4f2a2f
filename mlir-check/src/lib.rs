//! Asks MLIR itself whether a text parses and verifies, with `tsr` defined through IRDL.
//!
//! Its own crate so that only the crates that call it link melior and MLIR: `tessera-ir` stays
//! pure Rust, and the runtime (which depends on `ir` for the artifact format and the reference
//! semantics) builds and links without MLIR or LLVM, whatever else a build selects (a cargo
//! feature of `ir` would be switched on for every package of a workspace build, the runtime's
//! binary included).
//!
//! MLIR knows each tsr op's name and operand/result counts from the IRDL definition; shapes
//! are tessera's own verifier's business. Unregistered dialects stay disallowed, so an unknown
//! `tsr.foo` (or `foo.bar`) is an error here as well.
//!
//! IRDL caveat: one IRDL constraint variable binds one type per op, and a `variadic` group is
//! checked against a single variable, so all types in a variadic group must be equal (checked
//! in LLVM 22's `IRDLLoading.cpp`). Fixed-arity ops therefore get one `single` operand/result
//! per position, each with its own `irdl.any`. The variadic ops (`concat`'s operands, `split`'s
//! results) are defined per check from the counts the text uses: with one count `n`, `@split`
//! has `n` singles; when a text mixes counts, each such op is checked under an arity-specific
//! name (`tsr.split_arity3`, with exactly 3 independent results) that is spliced into a copy of
//! the text, and diagnostics are mapped back to the original spelling and columns.
//!
//! # The MLIR text form and IRDL
//!
//! The printer emits MLIR's generic op form (`%y = "tsr.matmul"(%a, %b) : (...) -> ...`) inside a
//! `func.func`. `ir::mlir::check_with_mlir` registers the upstream dialects, defines `tsr` through
//! IRDL, parses the text with melior and verifies it, with unregistered dialects disallowed.
//! IRDL checks operand/result counts and that they are builtin types; tessera's own verifier checks
//! the shape rules, which IRDL cannot express.
//!
//! IRDL ties every member of a `variadic` group to one constraint value, which binds to the first
//! type it meets, so "variadic of `irdl.any`" rejects a `concat` of differently shaped tensors.
//! The check therefore defines every op with fixed arity (one `irdl.any` per operand and result,
//! from a table that a unit test compares with the shape rules) and defines `concat` and `split`
//! from the counts the checked text uses. When one text uses several counts of them, the check
//! runs on a copy where those op names carry an arity suffix (`tsr.split_arity3`) and maps MLIR's
//! diagnostics back to the original positions. The printed text itself never changes.
//!
//! The parser also reads what MLIR prints back (`module {}` wrappers, `%0:2`/`%0#1` result
//! groups, hex `dense<"0x...">` constants), so `MLIR → tessera` works on MLIR's own reprint.

use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::Context;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::rc::Rc;
use tessera_ir::mlir::parse_graph;
use tessera_ir::ops::table::Arity;
use tessera_ir::ops::Op;

/// Why MLIR did not accept a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlirCheckError {
    /// MLIR's diagnostics, each `line:col: message`.
    #[error("MLIR rejected the text: {}", .0.join("; "))]
    Rejected(Vec<String>),
    /// The generated IRDL dialect failed to load; a bug in this module, not in the input.
    #[error("the tsr IRDL dialect did not load: {0}")]
    Dialect(String),
    /// MLIR's C API takes NUL-terminated text.
    #[error("the text contains a NUL byte at offset {0}")]
    NulByte(usize),
}

/// The variadic counts a text uses, per mnemonic with a variadic side.
#[derive(Debug, Default)]
struct VariadicUse {
    counts: BTreeMap<&'static str, BTreeSet<usize>>,
}

impl VariadicUse {
    /// The counts of `mnemonic` when the text mixes several (then it is checked per arity).
    fn mixed(&self, mnemonic: &str) -> Option<&BTreeSet<usize>> {
        self.counts.get(mnemonic).filter(|c| c.len() > 1)
    }
}

/// The IRDL definition of the tsr dialect, one `irdl.operation` per mnemonic with one
/// `irdl.any` per operand and result; `concat`'s operands and `split`'s results are `variadic`
/// (so, under IRDL's rules, of one type). For `mlir-opt --irdl-file=...`.
pub fn irdl_dialect_text() -> String {
    dialect_text(&VariadicUse::default())
}

fn dialect_text(uses: &VariadicUse) -> String {
    let mut out = String::from("irdl.dialect @tsr {\n");
    for mnemonic in Op::all_mnemonics() {
        let (operands, results) = Op::signature(mnemonic).unwrap_or((Arity::Variadic, Arity::Variadic));
        let counts = uses.counts.get(mnemonic);
        // One count in the whole text: the plain name is exact for it.
        let exact = |arity: Arity| match (arity, counts) {
            (Arity::Variadic, Some(c)) if c.len() == 1 => c.first().map_or(arity, |&n| Arity::Fixed(n)),
            _ => arity,
        };
        write_operation(&mut out, mnemonic, exact(operands), exact(results));
        for &n in uses.mixed(mnemonic).into_iter().flatten() {
            let fix = |arity: Arity| {
                if arity == Arity::Variadic {
                    Arity::Fixed(n)
                } else {
                    arity
                }
            };
            write_operation(&mut out, &arity_name(mnemonic, n), fix(operands), fix(results));
        }
    }
    out.push_str("}\n");
    out
}

fn arity_name(mnemonic: &str, n: usize) -> String {
    format!("{mnemonic}_arity{n}")
}

fn write_operation(out: &mut String, name: &str, operands: Arity, results: Arity) {
    let _ = writeln!(out, "  irdl.operation @{name} {{");
    let operand_list = constraint_list(out, "in", operands);
    let result_list = constraint_list(out, "out", results);
    let _ = writeln!(out, "    irdl.operands({operand_list})");
    let _ = writeln!(out, "    irdl.results({result_list})");
    out.push_str("  }\n");
}

/// Declares one `irdl.any` per position and returns the `irdl.operands`/`irdl.results` list.
fn constraint_list(out: &mut String, prefix: &str, arity: Arity) -> String {
    match arity {
        Arity::Fixed(n) => (0..n)
            .map(|i| {
                let _ = writeln!(out, "    %{prefix}{i} = irdl.any");
                format!("{prefix}{i}: single %{prefix}{i}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        Arity::Variadic => {
            let _ = writeln!(out, "    %{prefix} = irdl.any");
            format!("{prefix}: variadic %{prefix}")
        }
    }
}

/// Where a copy of the text got `_arityN` spliced into an op name: its 1-based line, the
/// column just after the original name, how many characters were inserted, and the spliced
/// and original op names.
struct Splice {
    line: usize,
    col: usize,
    len: usize,
    spliced: String,
    original: String,
}

/// The text MLIR checks (the input, or a copy with arity-specific names for mixed-count
/// variadic ops), the dialect definition for it, and the splices to undo afterwards.
fn prepare(text: &str) -> (String, String, Vec<Splice>) {
    let Ok((g, map)) = parse_graph(text) else {
        // MLIR has the final word on text tessera cannot read; check it as written.
        return (text.to_string(), irdl_dialect_text(), Vec::new());
    };
    let mut uses = VariadicUse::default();
    let mut variadic_nodes = Vec::new();
    for (id, node) in g.nodes() {
        let mnemonic = node.op.mnemonic();
        let count = match Op::signature(mnemonic) {
            Some((Arity::Variadic, _)) => node.inputs.len(),
            Some((_, Arity::Variadic)) => node.outputs.len(),
            _ => continue,
        };
        uses.counts.entry(mnemonic).or_default().insert(count);
        variadic_nodes.push((id, mnemonic, count));
    }
    let mut splices = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (id, mnemonic, count) in variadic_nodes {
        let quoted = format!("\"tsr.{mnemonic}\"");
        let Some(offset) = map.node_offset(id) else { continue };
        // An op name written with escapes cannot be spliced; MLIR then checks it as written.
        if uses.mixed(mnemonic).is_none() || !text.get(offset..).is_some_and(|rest| rest.starts_with(&quoted)) {
            continue;
        }
        let at = offset + quoted.len() - 1; // before the closing quote
        let insert = format!("_arity{count}");
        out.push_str(text.get(last..at).unwrap_or(""));
        out.push_str(&insert);
        last = at;
        let before = text.get(..at).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        splices.push(Splice {
            line: before.matches('\n').count() + 1,
            col: before.get(line_start..).map_or(0, |s| s.chars().count()) + 1,
            len: insert.len(),
            spliced: format!("tsr.{}", arity_name(mnemonic, count)),
            original: format!("tsr.{mnemonic}"),
        });
    }
    out.push_str(text.get(last..).unwrap_or(""));
    (out, dialect_text(&uses), splices)
}

/// A diagnostic as MLIR gave it, before its position is mapped back to the original text.
struct RawDiagnostic {
    line: usize,
    col: usize,
    message: String,
}

/// Parses and verifies `text` with MLIR (all upstream dialects plus tsr through IRDL) and
/// returns MLIR's diagnostics, each `line:col: message`, when it does not accept it.
pub fn check_with_mlir(text: &str) -> Result<(), MlirCheckError> {
    run_mlir(text, false).map(|_| ())
}

/// Like [`check_with_mlir`], and returns MLIR's own printing of the module (`func.func` in
/// custom form, tsr ops in generic form, values renumbered), which [`parse_graph`] reads back.
pub fn print_with_mlir(text: &str) -> Result<String, MlirCheckError> {
    run_mlir(text, true).map(|printed| printed.unwrap_or_default())
}

fn run_mlir(text: &str, print: bool) -> Result<Option<String>, MlirCheckError> {
    if let Some(offset) = text.bytes().position(|b| b == 0) {
        return Err(MlirCheckError::NulByte(offset));
    }
    let (checked_text, dialect, splices) = prepare(text);

    let registry = DialectRegistry::new();
    melior::utility::register_all_dialects(&registry);
    // No thread pool: one small module per context, and tests create many contexts.
    let context = Context::new_with_registry(&registry, false);
    context.set_allow_unregistered_dialects(false);

    let diagnostics = Rc::new(RefCell::new(Vec::<RawDiagnostic>::new()));
    let sink = Rc::clone(&diagnostics);
    let handler = context.attach_diagnostic_handler(move |d| {
        let loc = d.location();
        let (line, col) = if loc.is_file_line_col_range() {
            (loc.file_line_col_range_start_line(), loc.file_line_col_range_start_column())
        } else {
            (0, 0)
        };
        sink.borrow_mut().push(RawDiagnostic { line, col, message: d.to_string() });
        true
    });
    let result = parse_and_verify(&context, &checked_text, &dialect, print);
    context.detach_diagnostic_handler(handler);
    let messages: Vec<String> = diagnostics.take().into_iter().map(|d| unsplice(d, &splices)).collect();
    match result {
        Ok(printed) => Ok(printed.map(|p| unsplice_names(&p, &splices))),
        Err(Failure::Dialect) => Err(MlirCheckError::Dialect(messages.join("; "))),
        Err(Failure::Text(what)) if messages.is_empty() => Err(MlirCheckError::Rejected(vec![what.to_string()])),
        Err(Failure::Text(_)) => Err(MlirCheckError::Rejected(messages)),
    }
}

/// Maps a diagnostic on the spliced copy back to the text the caller gave.
fn unsplice(d: RawDiagnostic, splices: &[Splice]) -> String {
    let message = unsplice_names(&d.message, splices);
    if d.line == 0 {
        return message;
    }
    let shift: usize = splices.iter().filter(|s| s.line == d.line && s.col < d.col).map(|s| s.len).sum();
    format!("{}:{}: {message}", d.line, d.col.saturating_sub(shift))
}

/// `tsr.split_arity3` back to `tsr.split`; longer names first, so `_arity30` is not read as
/// `_arity3` followed by `0`.
fn unsplice_names(text: &str, splices: &[Splice]) -> String {
    let mut names: Vec<(&str, &str)> = splices.iter().map(|s| (s.spliced.as_str(), s.original.as_str())).collect();
    names.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
    names.dedup();
    names.iter().fold(text.to_string(), |acc, (spliced, original)| acc.replace(spliced, original))
}

enum Failure {
    Dialect,
    Text(&'static str),
}

fn parse_and_verify(context: &Context, text: &str, dialect: &str, print: bool) -> Result<Option<String>, Failure> {
    let irdl = Module::parse(context, dialect).ok_or(Failure::Dialect)?;
    if !melior::utility::load_irdl_dialects(&irdl) {
        return Err(Failure::Dialect);
    }
    let module = Module::parse(context, text).ok_or(Failure::Text("the text did not parse (no diagnostic)"))?;
    if !module.as_operation().verify() {
        return Err(Failure::Text("the module did not verify (no diagnostic)"));
    }
    Ok(print.then(|| module.as_operation().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::ops::attr::AttrMap;
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;

    #[test]
    fn diagnostics_on_spliced_text_map_back() {
        let splice = |line, col, n: usize| Splice {
            line,
            col,
            len: format!("_arity{n}").len(),
            spliced: format!("tsr.split_arity{n}"),
            original: "tsr.split".into(),
        };
        let splices = [splice(3, 14, 3), splice(5, 14, 30)];
        let d = RawDiagnostic { line: 3, col: 40, message: "'tsr.split_arity3' op bad".into() };
        assert_eq!(unsplice(d, &splices), "3:33: 'tsr.split' op bad");
        let d = RawDiagnostic { line: 5, col: 8, message: "'tsr.split_arity30', %x_arity".into() };
        assert_eq!(unsplice(d, &splices), "5:8: 'tsr.split', %x_arity");
        let d = RawDiagnostic { line: 4, col: 40, message: "m".into() };
        assert_eq!(unsplice(d, &splices), "4:40: m");
    }

    #[test]
    fn every_mnemonic_has_a_signature() {
        for m in Op::all_mnemonics() {
            assert!(Op::signature(m).is_some(), "no IRDL signature for tsr.{m}");
        }
    }

    /// The table agrees with the shape rules: a fixed arity's count is the one `infer`
    /// accepts, as far as the arity check is concerned (the error for a wrong count names it).
    #[test]
    fn fixed_arities_match_the_shape_rules() {
        let t = TensorType::of_static(tessera_ir::dtype::DType::F32, &[2, 2]);
        for m in Op::all_mnemonics() {
            let Some((Arity::Fixed(n), _)) = Op::signature(m) else {
                continue;
            };
            let op = sample_op(m);
            let too_many: Vec<&TensorType> = vec![&t; n + 1];
            let err = op.infer(&too_many).expect_err(m);
            assert!(err.contains(&format!("expected {n} operand")), "tsr.{m}: {err}");
        }
    }

    fn sample_op(m: &str) -> Op {
        let mut attrs = vec![];
        let ints = |v: &[i64]| tessera_ir::ops::attr::Attr::Ints(v.to_vec());
        use tessera_ir::ops::attr::Attr;
        match m {
            "constant" => {
                attrs.push(("value".to_string(), Attr::Dense(Tensor::scalar(tessera_ir::dtype::DType::F32, 1.0))))
            }
            "softmax" | "concat" | "gather" | "iota" => attrs.push(("axis".to_string(), Attr::Int(0))),
            "layer_norm" | "rms_norm" => {
                attrs.push(("axis".to_string(), Attr::Int(0)));
                attrs.push(("epsilon".to_string(), Attr::Float(1e-5)));
            }
            "argmax" => attrs.push(("axis".to_string(), Attr::Int(0))),
            "transpose" => attrs.push(("perm".to_string(), ints(&[1, 0]))),
            "slice" => {
                for k in ["starts", "ends", "steps"] {
                    attrs.push((k.to_string(), ints(&[0, 0])));
                }
            }
            "split" => {
                attrs.push(("axis".to_string(), Attr::Int(0)));
                attrs.push(("sizes".to_string(), ints(&[1, 1])));
            }
            "scatter" => {
                attrs.push(("axis".to_string(), Attr::Int(0)));
                attrs.push(("reduction".to_string(), Attr::Str("none".into())));
            }
            "conv2d" | "max_pool2d" | "avg_pool2d" => {
                attrs.push(("strides".to_string(), ints(&[1, 1])));
                attrs.push(("pads".to_string(), ints(&[0, 0, 0, 0])));
                attrs.push(("dilations".to_string(), ints(&[1, 1])));
                if m == "conv2d" {
                    attrs.push(("groups".to_string(), Attr::Int(1)));
                } else {
                    attrs.push(("kernel".to_string(), ints(&[1, 1])));
                }
            }
            "all_reduce" | "all_gather" | "reduce_scatter" | "all_to_all" | "all_slice" | "collective_permute" => {
                attrs.push(("mesh_axes".to_string(), Attr::Str("tp".into())));
                attrs.push(("group_size".to_string(), Attr::Int(2)));
                match m {
                    "all_reduce" => attrs.push(("reduction".to_string(), Attr::Str("sum".into()))),
                    "all_to_all" => {
                        attrs.push(("split_dim".to_string(), Attr::Int(0)));
                        attrs.push(("concat_dim".to_string(), Attr::Int(1)));
                    }
                    "collective_permute" => {
                        attrs.push(("sources".to_string(), ints(&[0, 1])));
                        attrs.push(("targets".to_string(), ints(&[1, 0])));
                    }
                    _ => attrs.push(("dim".to_string(), Attr::Int(0))),
                }
            }
            "send" | "recv" => {
                attrs.push(("mesh_axis".to_string(), Attr::Str("pp".into())));
                attrs.push(("peer".to_string(), Attr::Int(1)));
                attrs.push(("tag".to_string(), Attr::Int(0)));
            }
            _ if m.starts_with("reduce_") => attrs.push(("axes".to_string(), ints(&[0]))),
            "sgd" => {
                for k in ["lr", "momentum", "weight_decay"] {
                    attrs.push((k.to_string(), Attr::Float(0.1)));
                }
            }
            "trap" => attrs.push(("message".to_string(), Attr::Str("unreachable".into()))),
            "sharding_constraint" => attrs.push(("sharding".to_string(), Attr::Str("[{}, {}]".into()))),
            "winograd_input" => attrs.push(("pads".to_string(), ints(&[0, 0, 0, 0]))),
            "adamw" => {
                for k in ["lr", "beta1", "beta2", "epsilon", "weight_decay"] {
                    attrs.push((k.to_string(), Attr::Float(0.1)));
                }
            }
            _ => {}
        }
        let result = TensorType::of_static(tessera_ir::dtype::DType::F32, &[2, 2]);
        Op::from_parts(m, AttrMap::new(attrs), &[result]).expect(m)
    }

    /// The collectives' text form (see `tessera_ir::ops::collective`) is accepted by MLIR too.
    #[test]
    fn mlir_accepts_the_collectives_through_irdl() {
        let text = tessera_ir::testing::COLLECTIVES_TEXT;
        check_with_mlir(text).expect("MLIR accepts the collectives through IRDL");
        let unknown = text.replace("tsr.all_slice", "tsr.all_slices");
        assert!(check_with_mlir(&unknown).is_err(), "an unknown collective is rejected");
    }
}
