//! The cost model's view of the hardware: which link class traffic crosses. The devices, links
//! and clusters themselves are [`tessera_ir::hardware`]'s, in datasheet units with SI
//! accessors, shared with the cluster specs of `frontend` and the e-graph's extraction cost.

use serde::Serialize;

/// Which link class traffic crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkClass {
    IntraNode,
    InterNode,
}
