//! `[raft]`: timeouts, batching, snapshots and the database cache.

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

/// Raft: timing, snapshots, batching, and the sled store that keeps the vote and results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    /// A follower that stops hearing from its leader campaigns after a timeout in this range;
    /// each node takes its own slot of it (1.5 heartbeats wide, by node id) so that two
    /// survivors never keep campaigning in the same instant.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the last snapshot (for slow followers).
    pub keep_logs_after_snapshot: u64,
    /// sled's page cache (vote, markers, off-Raft results; the Raft log is in segment
    /// files); sled's own default (~1 GiB) is far too much for an edge box.
    pub cache_capacity_mb: u64,
    /// Most commands gathered into one Raft entry while an earlier write is in flight.
    pub max_batch: usize,
    /// Most log entries in one AppendEntries. openraft gives an append one heartbeat interval
    /// to finish, so a follower catching up must be fed in pieces it can store in that time.
    pub max_payload_entries: u64,
    /// Connecting to a peer's cluster RPC gives up after this long (peer unreachable).
    pub connect_timeout_ms: u64,
    /// A forwarded write, read-index or membership request gives up after this long.
    pub forward_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 550,
            snapshot_after_logs: 5000,
            keep_logs_after_snapshot: 1000,
            cache_capacity_mb: 64,
            max_batch: 4096,
            max_payload_entries: 64,
            connect_timeout_ms: 500,
            forward_timeout_ms: 10_000,
        }
    }
}

impl RaftConfig {
    /// Check what types alone cannot (ranges, cross-field rules).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                r.election_timeout_min_ms,
                format!(
                    "more than raft.heartbeat_ms ({}), which must be positive",
                    r.heartbeat_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                r.election_timeout_max_ms,
                format!(
                    "more than raft.election_timeout_min_ms ({})",
                    r.election_timeout_min_ms
                ),
            ));
        }
        if r.cache_capacity_mb == 0 || r.cache_capacity_mb > 65_536 {
            return Err(invalid(
                "raft.cache_capacity_mb",
                r.cache_capacity_mb,
                "1 to 65536",
            ));
        }
        if r.snapshot_after_logs == 0 {
            return Err(invalid(
                "raft.snapshot_after_logs",
                0,
                "a positive number of entries",
            ));
        }
        if r.connect_timeout_ms == 0 || r.forward_timeout_ms == 0 {
            return Err(invalid(
                "raft.connect_timeout_ms",
                r.connect_timeout_ms,
                "positive, with a positive raft.forward_timeout_ms",
            ));
        }
        if !(1..=1_000_000).contains(&r.max_batch) {
            return Err(invalid("raft.max_batch", r.max_batch, "1 to 1000000"));
        }
        if !(1..=10_000).contains(&r.max_payload_entries) {
            return Err(invalid(
                "raft.max_payload_entries",
                r.max_payload_entries,
                "1 to 10000",
            ));
        }
        Ok(())
    }
}
