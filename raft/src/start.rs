//! Start a node's Raft on its open data directory ([`crate::DataDir`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use edgerun_config::NodeConfig;
use openraft::SnapshotPolicy;

use crate::network::Network;
use crate::rpc::Peers;
use crate::{LogStore, Member, NodeId, Raft, RaftStoreError, StateMachineStore, StateView};

pub(crate) const FORMAT_KEY: &[u8] = b"edgerun_format";

/// The data directory's format, stamped in the database. 6: the Raft log in segment files
/// (`<data>/log/`). 5 (earlier builds): the log in sled; still opened, and the log is moved
/// out at start (then the stamp becomes 6, which those builds refuse: they would find no
/// log). The state's own encoding is `edgerun_model::FORMAT_VERSION`, versioned apart.
pub const DIR_FORMAT: u16 = 6;
/// A data directory whose log is still in sled.
pub const LEGACY_DIR_FORMAT: u16 = 5;

/// The format stamp of `db`, if it has a readable one.
pub(crate) fn dir_format(db: &sled::Db) -> Option<u16> {
    match db.get(FORMAT_KEY) {
        Ok(Some(v)) if v.len() == 2 => Some(u16::from_be_bytes([v[0], v[1]])),
        _ => None,
    }
}

/// A started Raft node, the read side of its state machine, and the connection pools to its
/// peers (shared by Raft replication and application RPC).
#[derive(Clone)]
pub struct RaftNode {
    pub id: NodeId,
    pub raft: Raft,
    pub view: StateView,
    pub peers: Peers,
}

impl RaftNode {
    /// The leader as this node knows it, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, Option<Member>)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let member = m.membership_config.membership().get_node(&leader).cloned();
        Some((leader, member))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }
}

/// This node's election timeout range: one tick-wide slot (openraft checks timeouts every 1.5
/// heartbeats) of `[min, max)` chosen by node id. openraft draws a node's timeout once, at
/// start, and waits the leader lease (`max`) plus that timeout after losing its leader; two
/// survivors whose timeouts fall in the same tick campaign in the same tick, split the vote,
/// and do it again every round (seen in `edgerun bench failover`: up to 3.5 s without a
/// leader). Slots by id keep members of a small cluster at least a tick apart.
pub fn election_window(node: NodeId, r: &edgerun_config::RaftConfig) -> (u64, u64) {
    let tick = (r.heartbeat_ms * 3 / 2).max(1);
    let spread = r.election_timeout_max_ms - r.election_timeout_min_ms;
    let slots = (spread / tick).max(1);
    let lo = r.election_timeout_min_ms + (node % slots) * tick;
    (lo, lo + tick.min(spread).max(1))
}

/// openraft's config from ours.
pub fn raft_config(cfg: &NodeConfig) -> Result<Arc<openraft::Config>, RaftStoreError> {
    let r = &cfg.raft;
    let (election_min, election_max) = election_window(cfg.node.id, r);
    let c = openraft::Config {
        cluster_name: "edgerun".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_after_logs),
        max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
        max_payload_entries: r.max_payload_entries,
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| RaftStoreError::Config(e.to_string()))
}

/// The initial voters: `cluster.peers`, or this node alone.
pub fn initial_members(cfg: &NodeConfig) -> BTreeMap<NodeId, Member> {
    if cfg.cluster.peers.is_empty() {
        BTreeMap::from([(
            cfg.node.id,
            Member {
                rpc: cfg.advertised_rpc(),
                api: cfg.advertised_api(),
            },
        )])
    } else {
        cfg.cluster
            .peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    Member {
                        rpc: p.rpc.clone(),
                        api: p.api.clone(),
                    },
                )
            })
            .collect()
    }
}

/// Start Raft on `db`. A fresh voter initializes the cluster with the initial members; a
/// node that already has state never re-initializes.
pub async fn start_raft(
    cfg: &NodeConfig,
    data: &crate::DataDir,
    flusher: &crate::Flusher,
) -> Result<RaftNode, RaftStoreError> {
    let db = data.db();
    let log_dir = data.log_dir();
    let log = LogStore::open(db, flusher.clone(), &log_dir).map_err(|e| {
        let path = log_dir.display().to_string();
        let message = e.to_string();
        if e.is_damaged() {
            RaftStoreError::Damaged { path, message }
        } else {
            RaftStoreError::Open { path, message }
        }
    })?;
    if dir_format(db) != Some(DIR_FORMAT) {
        // The log is in files now: an earlier build must not open this directory.
        let stamp = |e: sled::Error| RaftStoreError::Open {
            path: data.db_path().display().to_string(),
            message: e.to_string(),
        };
        db.insert(FORMAT_KEY, &DIR_FORMAT.to_be_bytes())
            .map_err(stamp)?;
        db.flush().map_err(stamp)?;
    }
    let sm = StateMachineStore::open(db, &data.snapshot_dir())?;
    let view = sm.view();
    let key = crate::secure::ClusterKey::load(&cfg.cluster_secret_file())
        .map_err(RaftStoreError::Fatal)?;
    let peers = Peers::new(
        std::time::Duration::from_millis(cfg.raft.connect_timeout_ms),
        key,
        crate::rpc::BreakerSettings {
            failures: cfg.cluster.breaker_failures,
            cooldown: std::time::Duration::from_millis(cfg.cluster.breaker_cooldown_ms),
        },
    );
    let raft = Raft::new(
        cfg.node.id,
        raft_config(cfg)?,
        Network::new(peers.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| RaftStoreError::Fatal(e.to_string()))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| RaftStoreError::Fatal(e.to_string()))?;
    if !initialized && cfg.cluster.role == edgerun_config::Role::Voter {
        let members = initial_members(cfg);
        if let Err(e) = raft.initialize(members).await {
            // NotAllowed means another path already initialized it: fine.
            tracing::info!(error = %e, "raft initialize skipped");
        }
    }
    Ok(RaftNode {
        id: cfg.node.id,
        raft,
        view,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::election_window;

    #[test]
    fn members_of_a_small_cluster_get_distinct_election_slots() {
        let r = edgerun_config::RaftConfig::default();
        let tick = r.heartbeat_ms * 3 / 2;
        let w: Vec<(u64, u64)> = (1..=4).map(|id| election_window(id, &r)).collect();
        for (i, a) in w.iter().enumerate() {
            assert!(a.0 >= r.election_timeout_min_ms && a.1 <= r.election_timeout_max_ms + tick);
            assert_eq!(a.1 - a.0, tick);
            for b in &w[i + 1..] {
                assert!(a.0.abs_diff(b.0) >= tick, "{w:?}");
            }
        }
        // A narrow range still gives a valid window.
        let narrow = edgerun_config::RaftConfig {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 301,
            ..r
        };
        assert_eq!(election_window(7, &narrow), (300, 301));
    }
}
