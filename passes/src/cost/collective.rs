//! Collectives by the alpha-beta model on the links they cross.
//!
//! A group of ranks is described by its size and the rank distance between its members
//! (tensor-parallel groups are consecutive ranks, data-parallel groups are `tp` apart, ...);
//! with ranks numbered node by node that says how many members share a node. Each collective
//! is priced as every algorithm NCCL could pick (flat ring, double binary tree, and the
//! hierarchical one: reduce-scatter in the node, the operation across nodes over every
//! device's own NIC, all-gather in the node) and the fastest wins. `bytes` follows NCCL's
//! buffer convention: the full buffer for all-reduce, the gathered output for all-gather, the
//! input for reduce-scatter, everything a rank sends for all-to-all, the message for send/recv.

use crate::cost::hardware::LinkClass;
use serde::Serialize;
use tessera_ir::hardware::ClusterSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    /// Point-to-point to the rank `stride` away.
    SendRecv,
}

/// `size` ranks, consecutive members `stride` ranks apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Group {
    pub size: u64,
    pub stride: u64,
}

impl Group {
    pub fn new(size: u64, stride: u64) -> Group {
        Group { size: size.max(1), stride: stride.max(1) }
    }

    /// Members that share a node (the group spreads evenly over its nodes).
    pub fn members_per_node(&self, gpus_per_node: u64) -> u64 {
        if self.stride >= gpus_per_node {
            1
        } else {
            (gpus_per_node / self.stride).clamp(1, self.size)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    None,
    Ring,
    Tree,
    Hierarchical,
    Direct,
}

/// Time of one collective and the bytes one device sends over each link class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CollectiveCost {
    pub time_s: f64,
    pub algorithm: Algorithm,
    pub intra_bytes: f64,
    pub inter_bytes: f64,
}

impl CollectiveCost {
    pub const ZERO: CollectiveCost =
        CollectiveCost { time_s: 0.0, algorithm: Algorithm::None, intra_bytes: 0.0, inter_bytes: 0.0 };

    pub fn bytes(&self, class: LinkClass) -> f64 {
        match class {
            LinkClass::IntraNode => self.intra_bytes,
            LinkClass::InterNode => self.inter_bytes,
        }
    }

    /// `n` of these one after another.
    pub fn times(self, n: f64) -> CollectiveCost {
        CollectiveCost {
            time_s: self.time_s * n,
            intra_bytes: self.intra_bytes * n,
            inter_bytes: self.inter_bytes * n,
            ..self
        }
    }
}

fn cost(time_s: f64, algorithm: Algorithm, intra_bytes: f64, inter_bytes: f64) -> CollectiveCost {
    CollectiveCost { time_s, algorithm, intra_bytes, inter_bytes }
}

fn fastest(options: impl IntoIterator<Item = CollectiveCost>) -> CollectiveCost {
    options
        .into_iter()
        .fold(None, |best: Option<CollectiveCost>, c| match best {
            Some(b) if b.time_s <= c.time_s => Some(b),
            _ => Some(c),
        })
        .unwrap_or(CollectiveCost::ZERO)
}

/// The cost of `kind` on `bytes` over `group`.
pub fn collective(cluster: &ClusterSpec, kind: CollectiveKind, bytes: f64, group: Group) -> CollectiveCost {
    let n = group.size;
    if n <= 1 || bytes <= 0.0 {
        return CollectiveCost::ZERO;
    }
    let (intra, inter) = (&cluster.intra_node, &cluster.inter_node);
    let (bi, be) = (intra.effective_bandwidth(), inter.effective_bandwidth());
    let (ai, ae) = (intra.latency_s(), inter.latency_s());
    let k = group.members_per_node(cluster.gpus_per_node);
    let nodes = n.div_ceil(k);
    let nf = n as f64;
    let kf = k as f64;
    let nodes_f = nodes as f64;
    let s = bytes;
    match kind {
        CollectiveKind::SendRecv => {
            if group.stride >= cluster.gpus_per_node {
                cost(ae + s / be, Algorithm::Direct, 0.0, s)
            } else {
                cost(ai + s / bi, Algorithm::Direct, s, 0.0)
            }
        }
        CollectiveKind::AllReduce => {
            let share = 2.0 * (nf - 1.0) / nf * s;
            if nodes == 1 {
                let ring = cost(2.0 * (nf - 1.0) * ai + share / bi, Algorithm::Ring, share, 0.0);
                let tree = cost(2.0 * nf.log2().ceil() * ai + 2.0 * s / bi, Algorithm::Tree, 2.0 * s, 0.0);
                return fastest([ring, tree]);
            }
            let ring = cost(2.0 * (nf - 1.0) * ae + share / be.min(bi), Algorithm::Ring, 0.0, share);
            let tree = cost(2.0 * nf.log2().ceil() * ae + 2.0 * s / be.min(bi), Algorithm::Tree, 0.0, 2.0 * s);
            // Reduce-scatter in the node, all-reduce of a 1/k slice across nodes on every
            // device's NIC at once, all-gather in the node.
            let in_node = 2.0 * ((kf - 1.0) * ai + (kf - 1.0) / kf * s / bi);
            let slice = s / kf;
            let across_ring = 2.0 * (nodes_f - 1.0) * ae + 2.0 * (nodes_f - 1.0) / nodes_f * slice / be;
            let across_tree = 2.0 * nodes_f.log2().ceil() * ae + 2.0 * slice / be;
            let across_bytes = 2.0 * (nodes_f - 1.0) / nodes_f * slice;
            let hier = cost(
                in_node + across_ring.min(across_tree),
                Algorithm::Hierarchical,
                2.0 * (kf - 1.0) / kf * s,
                across_bytes,
            );
            if k == 1 {
                fastest([ring, tree])
            } else {
                fastest([ring, tree, hier])
            }
        }
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter => {
            let share = (nf - 1.0) / nf * s;
            if nodes == 1 {
                return cost((nf - 1.0) * ai + share / bi, Algorithm::Ring, share, 0.0);
            }
            let ring = cost((nf - 1.0) * ae + share / be.min(bi), Algorithm::Ring, 0.0, share);
            let in_node = (kf - 1.0) * ai + (kf - 1.0) / kf * s / bi;
            let across = (nodes_f - 1.0) * ae + (nodes_f - 1.0) / nodes_f * (s / kf) / be;
            let hier = cost(
                in_node + across,
                Algorithm::Hierarchical,
                (kf - 1.0) / kf * s,
                (nodes_f - 1.0) / nodes_f * s / kf,
            );
            if k == 1 {
                ring
            } else {
                fastest([ring, hier])
            }
        }
        CollectiveKind::AllToAll => {
            let intra_bytes = (kf - 1.0) / nf * s;
            let inter_bytes = (nf - kf) / nf * s;
            // Sends to every peer are posted at once; the handshakes still grow with the group.
            let latency = nf.log2().ceil() * if nodes == 1 { ai } else { ae };
            let time = latency + (intra_bytes / bi).max(inter_bytes / be);
            cost(time, Algorithm::Direct, intra_bytes, inter_bytes)
        }
    }
}
