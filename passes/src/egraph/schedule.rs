//! Rule scheduling for saturation: phases, and egg's backoff per rule with a record of which
//! rules were banned (starved) when a phase stopped.
//!
//! **Phases.** Built-in rules belong to a phase by their topic file: algebraic simplification
//! (`elementwise.rules`, `shape.rules`), then layout (`layout.rules`), then fusion-enabling
//! rewrites (`matmul.rules`, `conv.rules`), and a last phase runs every rule together, so a
//! rewrite that needs rules of two phases interleaved is still found. A user rule file's rules
//! take part in every phase. Each phase has the iteration limit; the node and time limits are
//! shared by all phases (a later phase gets what the earlier ones left).
//!
//! **Backoff.** [`Backoff`] is egg's `BackoffScheduler` (a rule that matches more than its
//! limit in one iteration is banned for `5 · 2^bans` iterations and its limit doubles), which
//! also records every ban, so the report can name the rules whose matches a phase never applied
//! because it stopped on a limit while they were banned.

use super::lang::{ShapeAnalysis, TsrEGraph, TsrNode};
use super::rules::Rule;
use egg::{Rewrite, RewriteScheduler, SearchMatches};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A saturation phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Elementwise algebra and shape rules (scalars, reshapes, broadcasts).
    Algebraic,
    /// Transposes and concatenations.
    Layout,
    /// Matmul and convolution rewrites (merges, distributivity, weight folding).
    FusionEnabling,
    /// Every rule together.
    All,
}

impl Phase {
    /// The phases in the order saturation runs them.
    pub const ORDER: [Phase; 4] = [Phase::Algebraic, Phase::Layout, Phase::FusionEnabling, Phase::All];

    /// Kebab-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Algebraic => "algebraic",
            Phase::Layout => "layout",
            Phase::FusionEnabling => "fusion-enabling",
            Phase::All => "all",
        }
    }

    /// The phase of a rule by the built-in file it comes from; `None` for user rules (they run
    /// in every phase).
    pub fn of(rule: &Rule) -> Option<Phase> {
        match rule.source_name.as_str() {
            "builtin:elementwise.rules" | "builtin:shape.rules" => Some(Phase::Algebraic),
            "builtin:layout.rules" => Some(Phase::Layout),
            "builtin:matmul.rules" | "builtin:conv.rules" => Some(Phase::FusionEnabling),
            _ => None,
        }
    }

    /// Whether `rule` runs in this phase.
    pub fn includes(self, rule: &Rule) -> bool {
        self == Phase::All || Phase::of(rule).is_none_or(|p| p == self)
    }
}

/// The schedule of one rule within one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSchedule {
    pub match_limit: usize,
    pub times_banned: usize,
    /// The iteration from which the rule is searched again.
    pub banned_until: usize,
}

/// Per-rule schedules, shared between the scheduler (owned by egg's runner) and the caller.
pub type Schedules = Rc<RefCell<BTreeMap<String, RuleSchedule>>>;

/// egg's backoff scheduler, recording bans in [`Schedules`].
pub struct Backoff {
    pub schedules: Schedules,
    /// Iterations of the first ban (doubling with each further ban).
    pub ban_length: usize,
}

/// egg's default match limit per iteration.
pub const DEFAULT_MATCH_LIMIT: usize = 1_000;

impl Backoff {
    /// A scheduler for `rules` (their `limit N`, or [`DEFAULT_MATCH_LIMIT`]).
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Backoff {
        let schedules = rules
            .into_iter()
            .map(|r| {
                let match_limit = r.match_limit.unwrap_or(DEFAULT_MATCH_LIMIT);
                (r.name.clone(), RuleSchedule { match_limit, times_banned: 0, banned_until: 0 })
            })
            .collect();
        Backoff { schedules: Rc::new(RefCell::new(schedules)), ban_length: 5 }
    }
}

impl RewriteScheduler<TsrNode, ShapeAnalysis> for Backoff {
    fn can_stop(&mut self, iteration: usize) -> bool {
        // As egg's: when nothing else matches, fast-forward to the next unban instead of
        // stopping while rules are banned.
        let mut schedules = self.schedules.borrow_mut();
        let min_ban = schedules.values().filter(|s| s.banned_until > iteration).map(|s| s.banned_until).min();
        match min_ban {
            None => true,
            Some(min_ban) => {
                let delta = min_ban - iteration;
                for s in schedules.values_mut().filter(|s| s.banned_until > iteration) {
                    s.banned_until -= delta;
                }
                false
            }
        }
    }

    fn search_rewrite<'a>(
        &mut self,
        iteration: usize,
        egraph: &TsrEGraph,
        rewrite: &'a Rewrite<TsrNode, ShapeAnalysis>,
    ) -> Vec<SearchMatches<'a, TsrNode>> {
        let mut schedules = self.schedules.borrow_mut();
        let schedule = schedules.entry(rewrite.name.to_string()).or_insert(RuleSchedule {
            match_limit: DEFAULT_MATCH_LIMIT,
            times_banned: 0,
            banned_until: 0,
        });
        if iteration < schedule.banned_until {
            return vec![];
        }
        let threshold = schedule.match_limit.checked_shl(schedule.times_banned as u32).unwrap_or(usize::MAX);
        let matches = rewrite.search_with_limit(egraph, threshold.saturating_add(1));
        let total: usize = matches.iter().map(|m| m.substs.len()).sum();
        if total > threshold {
            let ban = self.ban_length.checked_shl(schedule.times_banned as u32).unwrap_or(usize::MAX / 2);
            schedule.times_banned += 1;
            schedule.banned_until = iteration.saturating_add(ban);
            return vec![];
        }
        matches
    }
}

/// What one phase did.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Rules in the phase.
    pub rules: usize,
    pub iterations: usize,
    /// E-nodes when the phase ended.
    pub enodes: usize,
    /// `saturated`, `iteration-limit`, `node-limit`, `time-limit` or `other`.
    pub stop: &'static str,
    /// Applications per rule name in this phase.
    pub fired: BTreeMap<String, usize>,
    /// Rules banned at least once in this phase, with their ban count.
    pub banned: BTreeMap<String, usize>,
    /// Rules still banned when the phase stopped on a limit: their matches were cut short.
    pub starved: Vec<String>,
}
