//! Cluster members as the state machine knows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Raft node id; unique in a cluster, chosen by the operator (`node.id`).
pub type NodeId = u64;

/// Cloud nodes are usually voters; edge nodes usually learners.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Cloud,
    Edge,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cloud => "cloud",
            Tier::Edge => "edge",
        }
    }
}

/// A node's self-description, registered through Raft when it starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub tier: Tier,
    pub labels: BTreeMap<String, String>,
    /// REST address (host:port) for clients and forwarding.
    pub api: String,
    /// Cluster RPC address (host:port).
    pub rpc: String,
    /// Tasks this node runs at once.
    pub slots: u32,
    /// CPU the node offers to tasks, in millicores (tasks' `resources.cpu_millis` add up to
    /// at most this).
    pub cpu_millis: u32,
    /// Memory the node offers to tasks, in MiB.
    pub memory_mb: u32,
    /// When the node last registered (proposer's clock).
    pub registered_at_ms: u64,
    /// False once the leader marks the node down; tasks are not placed on a down node.
    pub up: bool,
    /// When the node was marked down (proposer's clock).
    pub down_since_ms: Option<u64>,
}
