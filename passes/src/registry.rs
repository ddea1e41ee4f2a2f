//! The one table of passes: each registered once, under the kebab-case name pipelines use,
//! with a one-line description and its options.

use crate::pass::{OptionSpec, PassFn};
use std::fmt::Write;

/// A registered pass.
#[derive(Debug)]
pub struct PassInfo {
    /// Kebab-case name, as written in pipelines and used for its test data.
    pub name: &'static str,
    /// One line for `--help` and error messages.
    pub description: &'static str,
    pub options: &'static [OptionSpec],
    pub run: PassFn,
}

impl PassInfo {
    pub fn option(&self, name: &str) -> Option<&'static OptionSpec> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// Every pass, sorted by name.
pub static PASSES: &[PassInfo] = &[
    PassInfo {
        name: "canonicalize",
        description: "local algebraic simplifications and constant folding, to a fixed point",
        options: crate::canonicalize::OPTIONS,
        run: crate::canonicalize::run,
    },
    PassInfo {
        name: "cse",
        description: "merge nodes that compute the same op on the same operands",
        options: &[],
        run: crate::cse::run,
    },
    PassInfo {
        name: "dce",
        description: "remove nodes whose results reach no graph output",
        options: &[],
        run: crate::dce::run,
    },
    PassInfo {
        name: "egraph",
        description: "equality saturation with rewrite rules, then extraction by a roofline estimate",
        options: crate::egraph::OPTIONS,
        run: crate::egraph::run,
    },
    PassInfo {
        name: "fold-if",
        description: "replace each tsr.if whose condition is computed from constants by the region it takes",
        options: &[],
        run: crate::fold_if::run,
    },
    PassInfo {
        name: "fuse",
        description: "group elementwise ops, reductions, softmax and norms into fused kernels (tags the nodes)",
        options: crate::fuse::OPTIONS,
        run: crate::fuse::run,
    },
    PassInfo {
        name: "shard",
        description: "partition over a device mesh into per-rank programs with collectives (opt prints them)",
        options: crate::shard::OPTIONS,
        run: crate::shard::run,
    },
    PassInfo {
        name: "verify",
        description: "check the graph with the IR verifier",
        options: &[],
        run: crate::verify::run,
    },
];

/// The pass registered under `name`.
pub fn find(name: &str) -> Option<&'static PassInfo> {
    PASSES.iter().find(|p| p.name == name)
}

/// `canonicalize, cse, dce, verify`: for error messages.
pub fn known_names() -> String {
    PASSES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

/// Every pass with its description and options, one per line, for `--help`.
pub fn help_text() -> String {
    let width = PASSES.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let setting = |o: &OptionSpec| format!("{}={}", o.name, o.default);
    let option_width = PASSES.iter().flat_map(|p| p.options).map(|o| setting(o).len()).max().unwrap_or(0);
    let mut out = String::new();
    for p in PASSES {
        let _ = writeln!(out, "  {:width$}  {}", p.name, p.description);
        for o in p.options {
            let _ = writeln!(out, "  {:width$}    {:option_width$}  {}", "", setting(o), o.help);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_sorted_unique_and_kebab_case() {
        let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for p in PASSES {
            let kebab = |s: &str| s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            assert!(kebab(p.name), "{}", p.name);
            for o in p.options {
                assert!(kebab(o.name), "{}.{}", p.name, o.name);
            }
        }
    }

    #[test]
    fn help_lists_every_pass_and_option() {
        let help = help_text();
        assert!(help.contains("  cse           merge nodes that compute the same op on the same operands\n"));
        assert!(help.contains(
            "\n                  max-iterations=10  most sweeps over the graph before stopping short of a fixed point\n"
        ));
        assert!(help.contains("\n                  fold-limit=4096    largest result"));
        assert_eq!(help.lines().filter(|l| !l.starts_with("      ")).count(), PASSES.len());
    }
}
