//! Fusion-group tags: which fused kernel a node belongs to, as decided by the `fuse` pass.
//!
//! The tags are a side table of the graph (one `Option<FusionTag>` per node). The printer shows
//! each group as a comment line before its first member (`// fusion group 3 (loop, 4 ops)`);
//! MLIR ignores comments, and tessera's parser reads them back, so the text form round-trips.
//! Members of a group are contiguous in program order (the pass orders them so).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a fused kernel computes, in XLA's vocabulary where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionKind {
    /// Elementwise ops and broadcasts over one index space (XLA loop fusion).
    Loop,
    /// A reduction with the elementwise producers it reads (XLA input fusion).
    Input,
    /// A softmax with its producers and consumers, as one kernel.
    Softmax,
    /// A layer norm with its producers and consumers.
    LayerNorm,
    /// An RMS norm with its producers and consumers.
    RmsNorm,
    /// Scaled-dot-product attention, `softmax(f(q kᵀ)) v`, as one flash-style kernel.
    Attention,
}

impl FusionKind {
    pub const ALL: [FusionKind; 6] = [
        FusionKind::Loop,
        FusionKind::Input,
        FusionKind::Softmax,
        FusionKind::LayerNorm,
        FusionKind::RmsNorm,
        FusionKind::Attention,
    ];

    /// The spelling in comments and reports.
    pub fn name(self) -> &'static str {
        match self {
            FusionKind::Loop => "loop",
            FusionKind::Input => "input",
            FusionKind::Softmax => "softmax",
            FusionKind::LayerNorm => "layer_norm",
            FusionKind::RmsNorm => "rms_norm",
            FusionKind::Attention => "attention",
        }
    }

    pub fn from_name(name: &str) -> Option<FusionKind> {
        FusionKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FusionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node's membership in a fusion group; groups are numbered from 0 in program order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FusionTag {
    pub group: u32,
    pub kind: FusionKind,
}

/// The comment line the printer writes before a group's first member (without indentation).
pub fn group_comment(tag: FusionTag, members: usize) -> String {
    let noun = if members == 1 { "op" } else { "ops" };
    format!("// fusion group {} ({}, {members} {noun})", tag.group, tag.kind)
}

/// Reads a comment written by [`group_comment`]: the tag and the member count.
pub fn parse_group_comment(line: &str) -> Option<(FusionTag, usize)> {
    let rest = line.trim().strip_prefix("// fusion group ")?;
    let (group, rest) = rest.split_once(' ')?;
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let (kind, count) = inner.split_once(", ")?;
    let count = count.strip_suffix(" ops").or_else(|| count.strip_suffix(" op"))?;
    let tag = FusionTag { group: group.parse().ok()?, kind: FusionKind::from_name(kind)? };
    Some((tag, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip() {
        for kind in FusionKind::ALL {
            for members in [1, 7] {
                let tag = FusionTag { group: 12, kind };
                assert_eq!(parse_group_comment(&group_comment(tag, members)), Some((tag, members)));
            }
        }
        assert_eq!(group_comment(FusionTag { group: 3, kind: FusionKind::Loop }, 4), "// fusion group 3 (loop, 4 ops)");
        assert_eq!(parse_group_comment("// fusion group x (loop, 4 ops)"), None);
        assert_eq!(parse_group_comment("// a comment"), None);
    }
}
