//! [`NetFaults`]: faults on a node's outgoing cluster RPC, as the chaos tests set them
//! (`PUT /v1/debug/net`). Plain data here so that the API and Raft's RPC filter share one type.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Faults on this node's outgoing cluster RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetFaults {
    /// Peer RPC addresses (`host:port`) whose requests are lost.
    #[serde(default)]
    pub drop_to: BTreeSet<String>,
    /// Extra latency before each request leaves, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Share of requests lost, 0–100.
    #[serde(default)]
    pub loss_percent: u8,
}

impl NetFaults {
    pub fn is_clear(&self) -> bool {
        self == &NetFaults::default()
    }
}
