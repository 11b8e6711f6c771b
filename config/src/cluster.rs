//! `[cluster]`: membership (role, peers, advertised addresses), the cluster RPC secret,
//! heartbeats and leases, and the RPC circuit breaker.

use std::net::SocketAddr;
use std::path::PathBuf;

use edgerun_model::NodeId;
use serde::{Deserialize, Serialize};

use crate::{invalid, is_host_port, ConfigError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Voter,
    Learner,
}

/// One initial cluster member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    /// host:port of its cluster RPC.
    pub rpc: String,
    /// host:port of its REST API.
    pub api: String,
}

/// Cluster membership and node-to-node RPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    /// Address other nodes use to reach this node's RPC; defaults to `listen`.
    pub advertise_rpc: Option<String>,
    /// Address clients and peers use to reach this node's REST API; defaults to `api.listen`.
    pub advertise_api: Option<String>,
    pub role: Role,
    /// The initial members, this node included. Empty = a single-node cluster of this node.
    pub peers: Vec<Peer>,
    /// How often each node reports to the leader.
    pub heartbeat_ms: u64,
    /// A node silent for this long is marked down and its tasks go elsewhere.
    pub lease_ms: u64,
    /// The secret every member shares: cluster RPC connections prove it (HMAC handshake)
    /// and every frame carries a MAC under a key derived from it. Created (random, mode
    /// 0600) if missing; copy it to every node. Empty = `<data_dir>/cluster.secret`.
    pub secret_file: PathBuf,
    /// Cluster RPC to a peer fails at once after this many failures in a row, until a probe
    /// gets through (one per `breaker_cooldown_ms`). 0 = never.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7201)),
            advertise_rpc: None,
            advertise_api: None,
            role: Role::Voter,
            peers: Vec::new(),
            heartbeat_ms: 500,
            lease_ms: 3_000,
            secret_file: PathBuf::new(),
            breaker_failures: 5,
            breaker_cooldown_ms: 500,
        }
    }
}

impl ClusterConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.breaker_failures > 0 && self.breaker_cooldown_ms == 0 {
            return Err(invalid(
                "cluster.breaker_cooldown_ms",
                0,
                "milliseconds, at least 1 (or cluster.breaker_failures = 0)",
            ));
        }
        let c = self;
        if c.heartbeat_ms == 0 || c.lease_ms < 2 * c.heartbeat_ms {
            return Err(invalid(
                "cluster.lease_ms",
                c.lease_ms,
                format!(
                    "at least twice cluster.heartbeat_ms ({}), which must be positive",
                    c.heartbeat_ms
                ),
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(invalid(
                    "cluster.peers",
                    format!("id {}", p.id),
                    "unique ids from 1",
                ));
            }
            if !is_host_port(&p.rpc) || !is_host_port(&p.api) {
                return Err(invalid(
                    "cluster.peers",
                    format!("{{ id = {}, rpc = {:?}, api = {:?} }}", p.id, p.rpc, p.api),
                    "host:port addresses",
                ));
            }
        }
        for (key, addr) in [
            ("cluster.advertise_rpc", &self.advertise_rpc),
            ("cluster.advertise_api", &self.advertise_api),
        ] {
            if let Some(a) = addr {
                if !is_host_port(a) {
                    return Err(invalid(key, a, "host:port"));
                }
            }
        }
        Ok(())
    }
}
