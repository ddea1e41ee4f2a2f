//! Where the time of a compiled program goes: wall time per step, accumulated per kind of step
//! (a kernel by its symbol, which the layers of a model share when their kernels are identical;
//! a library call by its name) plus the work around them (copying inputs in, outputs out),
//! printed as a table sorted by total time.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;
use tessera_ir::artifact::Step;

/// Accumulated time and call count per kind of step.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    entries: Vec<ProfileEntry>,
    index: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileEntry {
    /// `kernel SYMBOL` or `library NAME`.
    pub kind: String,
    pub calls: u64,
    pub total: Duration,
}

impl Profile {
    pub fn new() -> Profile {
        Profile::default()
    }

    pub fn record_step(&mut self, step: &Step, elapsed: Duration) {
        let kind = match step {
            Step::Kernel { symbol, .. } => format!("kernel {symbol}"),
            Step::Library { call, .. } => format!("library {}", call.name()),
        };
        self.record(&kind, elapsed);
    }

    /// Adds `elapsed` to the entry `kind` (work outside the steps: copying inputs, ...).
    pub fn record(&mut self, kind: &str, elapsed: Duration) {
        let at = match self.index.get(kind) {
            Some(&at) => at,
            None => {
                self.index.insert(kind.to_string(), self.entries.len());
                self.entries.push(ProfileEntry { kind: kind.to_string(), calls: 0, total: Duration::ZERO });
                self.entries.len() - 1
            }
        };
        self.entries[at].calls += 1;
        self.entries[at].total += elapsed;
    }

    /// The entries, most total time first (ties by kind, so the order is stable).
    pub fn entries(&self) -> Vec<&ProfileEntry> {
        let mut sorted: Vec<&ProfileEntry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.kind.cmp(&b.kind)));
        sorted
    }

    pub fn total(&self) -> Duration {
        self.entries.iter().map(|e| e.total).sum()
    }

    /// A table: milliseconds, share of the total, calls, kind; then the library calls and the
    /// kernels each summed.
    pub fn report(&self) -> String {
        let total = self.total().as_secs_f64();
        let share = |d: Duration| if total > 0.0 { 100.0 * d.as_secs_f64() / total } else { 0.0 };
        let mut out = format!("{:>10} {:>6} {:>6}  step\n", "ms", "%", "calls");
        for e in self.entries() {
            let _ = writeln!(
                out,
                "{:>10.2} {:>6.1} {:>6}  {}",
                1e3 * e.total.as_secs_f64(),
                share(e.total),
                e.calls,
                e.kind
            );
        }
        for group in ["kernel", "library"] {
            let in_group = self.entries.iter().filter(|e| e.kind.starts_with(group));
            let (calls, sum) = in_group.fold((0, Duration::ZERO), |(c, d), e| (c + e.calls, d + e.total));
            let _ =
                writeln!(out, "{:>10.2} {:>6.1} {:>6}  all {group} steps", 1e3 * sum.as_secs_f64(), share(sum), calls);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::artifact::LibraryCall;

    #[test]
    fn steps_are_grouped_by_kind_and_sorted_by_total_time() {
        let kernel = |symbol: &str| Step::Kernel { symbol: symbol.into(), inputs: vec![], outputs: vec![] };
        let gemm = Step::Library { call: LibraryCall::MatMul, inputs: vec![], outputs: vec![] };
        let mut p = Profile::new();
        p.record_step(&kernel("k0"), Duration::from_millis(2));
        p.record_step(&gemm, Duration::from_millis(5));
        p.record_step(&kernel("k0"), Duration::from_millis(4));
        p.record_step(&kernel("k1"), Duration::from_millis(1));
        let got: Vec<(&str, u64, u128)> =
            p.entries().iter().map(|e| (e.kind.as_str(), e.calls, e.total.as_millis())).collect();
        assert_eq!(got, [("kernel k0", 2, 6), ("library matmul", 1, 5), ("kernel k1", 1, 1)]);
        assert_eq!(p.total(), Duration::from_millis(12));
        let report = p.report();
        assert!(report.contains("  all kernel steps"), "{report}");
        assert!(report.lines().nth(1).is_some_and(|l| l.ends_with("kernel k0") && l.contains("50.0")), "{report}");
    }
}
