//! Project rules as tests, over every Rust file of the workspace: each file opens with a `//!`
//! doc line, and no function body is longer than [`MAX_FN_BODY_LINES`] lines.
//!
//! Functions are measured by parsing each file with `syn` (line numbers from `proc-macro2`'s
//! span locations), so braces inside strings, comments and char literals cannot confuse the
//! count; a body's length is the number of lines strictly between its braces.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The longest function body the project accepts, in lines.
const MAX_FN_BODY_LINES: usize = 150;

/// Functions allowed over the limit while a change that splits them is in flight; each entry
/// is `(path from the workspace root, function name)`. Empty: every function fits.
const LONG_FUNCTIONS_ALLOWED: &[(&str, &str)] = &[];

/// Every `.rs` file under the workspace root, skipping build output and hidden directories
/// (`target/`, `.cache/` with its downloaded packages, `.git/`).
fn workspace_rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(workspace_root(), &mut files);
    files.sort();
    files
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// A function with a body, as the tidy check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FnLength {
    name: String,
    line: usize,
    body_lines: usize,
}

/// Collects every function with a body (free functions, methods, trait defaults, nested
/// functions) with the number of lines between its braces.
#[derive(Default)]
struct FnLengths {
    found: Vec<FnLength>,
}

impl FnLengths {
    fn record(&mut self, name: &syn::Ident, block: &syn::Block) {
        let open = block.brace_token.span.open().start().line;
        let close = block.brace_token.span.close().start().line;
        let line = name.span().start().line;
        self.found.push(FnLength { name: name.to_string(), line, body_lines: close.saturating_sub(open + 1) });
    }
}

impl<'ast> Visit<'ast> for FnLengths {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.record(&f.sig.ident, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.record(&f.sig.ident, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.record(&f.sig.ident, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// The functions of `source` with their body lengths; `Err` with the location if it does not
/// parse.
fn function_lengths(source: &str) -> Result<Vec<FnLength>, String> {
    let file = syn::parse_file(source).map_err(|e| {
        let at = e.span().start();
        format!("{}:{}: {e}", at.line, at.column)
    })?;
    let mut lengths = FnLengths::default();
    lengths.visit_file(&file);
    Ok(lengths.found)
}

#[test]
fn the_measure_counts_lines_between_the_braces_and_ignores_braces_in_literals() {
    let source = r#"//! A file.
fn short() {}
fn three() {
    let s = "}}}{";
    let c = '}';
    // } a comment with a brace
}
struct S;
impl S {
    fn method(&self) -> u32 {
        fn nested() -> u32 {
            1
        }
        nested()
    }
}
trait T {
    fn required(&self);
    fn provided(&self) {
        let _ = 1;
    }
}
"#;
    let found = function_lengths(source).expect("parses");
    let summary: Vec<(String, usize, usize)> = found.into_iter().map(|f| (f.name, f.line, f.body_lines)).collect();
    assert_eq!(
        summary,
        [
            ("short".to_string(), 2, 0),
            ("three".to_string(), 3, 3),
            ("method".to_string(), 10, 4),
            ("nested".to_string(), 11, 1),
            ("provided".to_string(), 19, 1),
        ]
    );
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let files = workspace_rust_files();
    assert!(files.len() > 100, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            !text.starts_with("//!")
        })
        .map(|f| relative(f))
        .collect();
    assert!(missing.is_empty(), "these files do not start with a `//!` doc line: {missing:#?}");
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let mut too_long = Vec::new();
    let mut allowed_seen = Vec::new();
    for file in workspace_rust_files() {
        let path = relative(&file);
        let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
        let lengths = function_lengths(&source).unwrap_or_else(|e| panic!("{path}:{e}"));
        for f in lengths.into_iter().filter(|f| f.body_lines > MAX_FN_BODY_LINES) {
            if LONG_FUNCTIONS_ALLOWED.contains(&(path.as_str(), f.name.as_str())) {
                allowed_seen.push((path.clone(), f.name));
            } else {
                too_long.push(format!("{path}:{}: fn {} has {} body lines", f.line, f.name, f.body_lines));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_FN_BODY_LINES} lines (split them at their natural seams): {too_long:#?}"
    );
    // A stale allowlist entry would let the next long function in by name.
    for (path, name) in LONG_FUNCTIONS_ALLOWED {
        assert!(
            allowed_seen.iter().any(|(p, n)| p == path && n == name),
            "{path}: fn {name} is allowlisted but no longer over the limit; remove the entry"
        );
    }
}

/// The architecture map stays short enough to read in ten minutes (issue 14): detail belongs in
/// module docs, so a longer map means prose moved to the wrong place.
const ARCHITECTURE_MAX_LINES: usize = 250;

#[test]
fn the_architecture_map_stays_within_its_line_budget() {
    let path = workspace_root().join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("docs/ARCHITECTURE.md is readable");
    let lines = text.lines().count();
    assert!(
        lines <= ARCHITECTURE_MAX_LINES,
        "docs/ARCHITECTURE.md has {lines} lines, over the budget of {ARCHITECTURE_MAX_LINES}: move algorithm prose into module docs"
    );
}
