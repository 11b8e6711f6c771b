//! In-process clusters for the fast test tier: N Raft nodes in one process, each with its
//! real log store, state machine and data directory, joined by a [`Router`] instead of
//! sockets — a network the test can cut and heal link by link (openraft's own test "router"
//! style). No ports, no processes: a three-node election, a partition and a heal take well
//! under a second.
//!
//! What it does not cover is the wire (framing, the handshake, pools, breakers): the
//! integration tests under `node/tests` run real nodes over real sockets.
//!
//! Compiled into the library (not behind a feature) so that the test build and the binary
//! build share one set of features; nothing in the node calls it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::rpc::{BreakerSettings, Peers};
use crate::{
    DataDir, Flusher, LogStore, Member, NodeId, Raft, RaftNode, StateMachineStore, TypeConfig,
};

/// Which nodes exist and which links are cut.
#[derive(Default)]
struct Links {
    nodes: BTreeMap<NodeId, Raft>,
    /// Cut one way: `(from, to)` messages are lost.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The network between the nodes of one process.
#[derive(Clone, Default)]
pub struct Router {
    links: Arc<Mutex<Links>>,
}

#[derive(Debug, thiserror::Error)]
#[error("link {from} -> {to} is cut")]
struct Cut {
    from: NodeId,
    to: NodeId,
}

impl Router {
    fn target(&self, from: NodeId, to: NodeId) -> Result<Raft, Cut> {
        let l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if l.cut.contains(&(from, to)) {
            return Err(Cut { from, to });
        }
        l.nodes.get(&to).cloned().ok_or(Cut { from, to })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Links) -> T) -> T {
        f(&mut self.links.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Cut `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId) {
        self.with(|l| {
            let others: Vec<NodeId> = l.nodes.keys().copied().filter(|n| *n != node).collect();
            for o in others {
                l.cut.insert((node, o));
                l.cut.insert((o, node));
            }
        });
    }

    /// Every link works again.
    pub fn heal(&self) {
        self.with(|l| l.cut.clear());
    }
}

/// The sending side of one node.
pub struct RouterNetwork {
    router: Router,
    from: NodeId,
}

pub struct RouterClient {
    router: Router,
    from: NodeId,
    to: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = RouterClient;

    async fn new_client(&mut self, target: NodeId, _node: &Member) -> RouterClient {
        RouterClient {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl RouterClient {
    fn raft<E: std::error::Error>(&self) -> Result<Raft, RPCError<NodeId, Member, E>> {
        self.router
            .target(self.from, self.to)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.to, e))
    }
}

impl RaftNetwork<TypeConfig> for RouterClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let raft = self.raft()?;
        raft.append_entries(rpc).await.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        raft.install_snapshot(rpc).await.map_err(|e| self.remote(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let raft = self.raft()?;
        raft.vote(rpc).await.map_err(|e| self.remote(e))
    }
}

/// Wait until `probe` answers Ok (polled every 10 ms), up to `within`; panics with `what` and
/// the probe's last answer when it never does.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Raft settings for in-process nodes: quick elections, small snapshots.
pub fn quick_config() -> Arc<openraft::Config> {
    Arc::new(openraft::Config {
        cluster_name: "edgerun-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        ..Default::default()
    })
}

/// N in-process nodes (ids 1..=n), all voters, over one [`Router`].
pub struct Cluster {
    pub router: Router,
    pub nodes: BTreeMap<NodeId, RaftNode>,
}

impl Cluster {
    /// Start `n` voters with their data directories under `dir` and initialize the cluster.
    pub async fn start(dir: &Path, n: u64) -> Result<Cluster, String> {
        Cluster::start_with(dir, n, quick_config()).await
    }

    pub async fn start_with(
        dir: &Path,
        n: u64,
        config: Arc<openraft::Config>,
    ) -> Result<Cluster, String> {
        let router = Router::default();
        let key = crate::secure::ClusterKey::from_secret(b"in-process test cluster secret 0123")?;
        let mut nodes = BTreeMap::new();
        let members: BTreeMap<NodeId, Member> = (1..=n)
            .map(|id| {
                (
                    id,
                    Member {
                        rpc: format!("in-process-{id}:0"),
                        api: format!("in-process-{id}:0"),
                    },
                )
            })
            .collect();
        for id in 1..=n {
            let (data, _) =
                DataDir::open(&dir.join(format!("n{id}")), 16).map_err(|e| e.to_string())?;
            let flusher = Flusher::new(data.db().clone());
            let log =
                LogStore::open(data.db(), flusher, &data.log_dir()).map_err(|e| e.to_string())?;
            let sm = StateMachineStore::open(data.db(), &data.snapshot_dir())
                .map_err(|e| e.to_string())?;
            let view = sm.view();
            let raft = Raft::new(
                id,
                config.clone(),
                RouterNetwork {
                    router: router.clone(),
                    from: id,
                },
                log,
                sm,
            )
            .await
            .map_err(|e| e.to_string())?;
            router.with(|l| l.nodes.insert(id, raft.clone()));
            let peers = Peers::new(
                Duration::from_millis(200),
                key.clone(),
                BreakerSettings {
                    failures: 0,
                    cooldown: Duration::from_millis(100),
                },
            );
            nodes.insert(
                id,
                RaftNode {
                    id,
                    raft,
                    view,
                    peers,
                },
            );
        }
        if let Some(first) = nodes.get(&1) {
            first
                .raft
                .initialize(members)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Cluster { router, nodes })
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[&id]
    }

    /// Wait until every node in `among` names one leader from `among` in a term above
    /// `after_term`; its id and term. The error says what each node last said.
    pub async fn leader(
        &self,
        among: &[NodeId],
        after_term: u64,
        within: Duration,
    ) -> Result<(NodeId, u64), String> {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<(NodeId, Option<NodeId>, u64)> = among
                .iter()
                .map(|id| {
                    let m = self.nodes[id].raft.metrics().borrow().clone();
                    (*id, m.current_leader, m.current_term)
                })
                .collect();
            if let Some((_, Some(l), term)) = seen.first() {
                if among.contains(l)
                    && *term > after_term
                    && seen.iter().all(|(_, x, t)| *x == Some(*l) && t == term)
                {
                    return Ok((*l, *term));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no agreed leader among {among:?} above term {after_term} within {within:?}; (node, leader, term): {seen:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop every node's Raft.
    pub async fn shutdown(self) {
        for n in self.nodes.values() {
            let _ = n.raft.shutdown().await;
        }
    }
}
