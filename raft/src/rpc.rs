//! Cluster RPC: length-delimited bincode frames over TCP.
//!
//! One protocol carries Raft's own messages (append, vote, snapshot chunks) and the
//! application's (forwarded writes, read-index requests, heartbeats, membership changes).
//! Every connection is authenticated with the cluster secret and every frame carries a MAC
//! ([`crate::secure`]); a frame's body is bincode. A connection carries one request at a time
//! and is reused ([`Pool`]). The server side is in [`crate::server`].
//!
//! Errors are classified as openraft expects: no connection = `Unreachable` (openraft backs
//! off), a broken or timed-out exchange = `Network`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgerun_model::{RaftRequest, Response};
use openraft::error::InstallSnapshotError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::secure::{Channel, ClusterKey};
use crate::{Member, NodeId, RaftError, TypeConfig};

/// Largest frame accepted (snapshot chunks are far smaller).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Idle connections kept per peer.
const MAX_IDLE: usize = 16;

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    App(AppRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError>),
    Vote(Result<VoteResponse<NodeId>, RaftError>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<InstallSnapshotError>>),
    App(AppResponse),
    /// The request could not be decoded or handled at all.
    Refused(String),
}

/// Application requests between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppRequest {
    /// A write from a follower, to be proposed by the leader (never forwarded again).
    Propose(RaftRequest),
    /// Confirm leadership and return the index a linearizable read must wait for.
    ReadIndex,
    /// A node's liveness report to the leader.
    Heartbeat(Heartbeat),
    /// A membership change, run by the leader.
    Membership(MembershipChange),
    /// A result this node stored off-Raft.
    FetchResult { task: u64, attempt: u32 },
    /// Records for a stream job's `http` source, forwarded to the node that runs the job (a
    /// JSON array or JSON lines, as POSTed). Answered once they are in a checkpoint.
    StreamRecords {
        stream: u64,
        body: Vec<u8>,
        /// The caller's batch id: a batch seen before is not taken twice.
        batch_id: Option<String>,
    },
    /// A stream checkpoint kept by hash (`crate::checkpoints`): store it, checked against
    /// the hash, flushed before the answer.
    PutCheckpoint {
        stream: u64,
        seq: u64,
        sha256: [u8; 32],
        data: Vec<u8>,
    },
    /// A stream checkpoint this node keeps by hash (none when it does not have it).
    FetchCheckpoint { stream: u64, sha256: [u8; 32] },
}

/// Why records for a stream job were not taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
pub enum IngestRefusal {
    #[error("stream job {0} does not run on this node (it may be moving)")]
    NotHere(u64),
    #[error("the stream job's input buffer is full")]
    Full { retry_after_ms: u64 },
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub node: NodeId,
    /// Attempts this node is running now.
    pub running: u32,
    pub slots: u32,
    /// The last log index this node has applied: a node that answers but does not keep up
    /// cannot run what it is given, and the leader treats it as missing its lease.
    pub applied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum MembershipChange {
    AddLearner { id: NodeId, member: Member },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

/// Why a leader-side request was not done.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
pub enum RemoteError {
    #[error("node {me} is not the leader (leader: {leader:?})")]
    NotLeader { me: NodeId, leader: Option<NodeId> },
    #[error("{0}")]
    Failed(String),
    /// The leader cannot do it now (no quorum, catching up, restarting an actor); retry.
    #[error("the leader cannot serve this now: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppResponse {
    /// The answer and the log index of the entry that carried the write (a follower waits
    /// until it has applied that far before it reads what it wrote).
    Proposed(Result<(Response, u64), RemoteError>),
    ReadIndex(Result<u64, RemoteError>),
    Heartbeat(Result<(), RemoteError>),
    Membership(Result<(), RemoteError>),
    /// The stored result (JSON text), or none when this node does not have it.
    Result(Result<Option<String>, RemoteError>),
    /// How many records were taken (they are in a committed checkpoint).
    StreamRecords(Result<u64, IngestRefusal>),
    CheckpointStored(Result<(), RemoteError>),
    Checkpoint(Result<Option<Vec<u8>>, RemoteError>),
}

/// A failed exchange, classified for openraft.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}")]
    Network {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} refused the request: {message}")]
    Refused { addr: String, message: String },
    /// The peer answered in another request's shape (a peer of another build, or a bug).
    #[error("{addr} answered a {asked} request with {got}")]
    Mismatch {
        addr: String,
        asked: &'static str,
        got: String,
    },
}

/// Reused connections to one peer.
pub struct Pool {
    addr: String,
    idle: Mutex<Vec<Channel>>,
    connect_timeout: Duration,
    key: ClusterKey,
    /// The last handshake was refused (logged once per change, not per retry).
    refused: std::sync::atomic::AtomicBool,
    breaker: crate::breaker::Breaker,
}

/// When calls to a peer stop being tried ([`crate::breaker`]).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Failures in a row that open the circuit; 0 = never.
    pub failures: u32,
    pub cooldown: Duration,
}

impl Pool {
    pub fn new(
        addr: String,
        connect_timeout: Duration,
        key: ClusterKey,
        breaker: BreakerSettings,
    ) -> Pool {
        Pool {
            breaker: crate::breaker::Breaker::new(addr.clone(), breaker.failures, breaker.cooldown),
            addr,
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            key,
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Calls to this peer fail at once now.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connect (within the connect timeout) and authenticate (within `handshake`: the
    /// caller's own timeout, as a loaded peer may take a while to answer the challenge).
    async fn connect(&self, handshake: Duration) -> Result<Channel, RpcError> {
        use std::sync::atomic::Ordering;
        let unreachable = |source| RpcError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let s = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                unreachable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(unreachable)?;
        let _ = s.set_nodelay(true);
        let ch = tokio::time::timeout(handshake, Channel::client(s, &self.key))
            .await
            .map_err(|_| RpcError::Network {
                addr: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the handshake took longer than {handshake:?}"),
                ),
            })?;
        match ch {
            Ok(ch) => {
                if self.refused.swap(false, Ordering::Relaxed) {
                    tracing::info!(addr = %self.addr, "cluster RPC handshake accepted again");
                }
                Ok(ch)
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(addr = %self.addr, error = %e, "cluster RPC peer refused: it does not share this node's cluster secret; copy the same cluster.secret_file to every member");
                }
                Err(RpcError::Refused {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })
            }
            Err(e) => Err(RpcError::Network {
                addr: self.addr.clone(),
                source: e,
            }),
        }
    }

    /// Send one request and wait for its answer, within `timeout`; fail at once while the
    /// circuit to this peer is open.
    pub async fn call(&self, req: &RpcRequest, timeout: Duration) -> Result<RpcResponse, RpcError> {
        if let Err(wait) = self.breaker.admit() {
            return Err(RpcError::Unreachable {
                addr: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!(
                        "circuit open after repeated failures; next try in {} ms",
                        wait.as_millis()
                    ),
                ),
            });
        }
        let res = self.call_inner(req, timeout).await;
        match &res {
            Ok(_) => self.breaker.success(),
            Err(_) => self.breaker.failure(),
        }
        res
    }

    async fn call_inner(
        &self,
        req: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, RpcError> {
        let body = edgerun_model::encode(req).map_err(|e| RpcError::Refused {
            addr: self.addr.clone(),
            message: e.to_string(),
        })?;
        match crate::faults::verdict(&self.addr) {
            crate::faults::Verdict::Send => {}
            crate::faults::Verdict::Delay(d) => tokio::time::sleep(d).await,
            crate::faults::Verdict::Lose => {
                // A lost request looks like a silent peer: the caller's timeout runs out.
                tokio::time::sleep(timeout).await;
                return Err(RpcError::Network {
                    addr: self.addr.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?} (request lost by fault injection)"),
                    ),
                });
            }
        }
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (mut conn, reused) = match pooled {
            Some(c) => (c, true),
            None => (self.connect(timeout).await?, false),
        };
        let net = |source| RpcError::Network {
            addr: self.addr.clone(),
            source,
        };
        let exchange = async {
            conn.send(&body).await?;
            conn.recv().await
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(net(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                )))
            }
            Ok(Err(e)) if reused => {
                // A pooled connection may have been closed by the peer meanwhile: one fresh try.
                tracing::debug!(addr = %self.addr, error = %e, "pooled connection broken; reconnecting");
                let mut fresh = self.connect(timeout).await?;
                let again = async {
                    fresh.send(&body).await?;
                    fresh.recv().await
                };
                let a = tokio::time::timeout(timeout, again)
                    .await
                    .map_err(|_| {
                        net(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {timeout:?}"),
                        ))
                    })?
                    .map_err(net)?;
                conn = fresh;
                a
            }
            Ok(Err(e)) => return Err(net(e)),
            Ok(Ok(a)) => a,
        };
        let Some(frame) = answer else {
            return Err(net(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            )));
        };
        let resp: RpcResponse = edgerun_model::decode(&frame).map_err(|e| {
            net(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(resp)
    }
}

/// Connection pools by address, shared by the Raft network and application RPC.
#[derive(Clone)]
pub struct Peers {
    pools: Arc<Mutex<HashMap<String, Arc<Pool>>>>,
    connect_timeout: Duration,
    key: ClusterKey,
    breaker: BreakerSettings,
}

impl Peers {
    pub fn new(connect_timeout: Duration, key: ClusterKey, breaker: BreakerSettings) -> Peers {
        Peers {
            pools: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
            key,
            breaker,
        }
    }

    /// The cluster key (the RPC server authenticates its clients with it).
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    pub fn pool(&self, addr: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    addr.to_string(),
                    self.connect_timeout,
                    self.key.clone(),
                    self.breaker,
                ))
            })
            .clone()
    }

    /// Send an application request to the node at `addr`.
    pub async fn app(
        &self,
        addr: &str,
        req: AppRequest,
        timeout: Duration,
    ) -> Result<AppResponse, RpcError> {
        match self.pool(addr).call(&RpcRequest::App(req), timeout).await? {
            RpcResponse::App(a) => Ok(a),
            RpcResponse::Refused(message) => Err(RpcError::Refused {
                addr: addr.to_string(),
                message,
            }),
            other => Err(RpcError::Mismatch {
                addr: addr.to_string(),
                asked: "application",
                got: format!("{other:?}"),
            }),
        }
    }

    /// Forward a write to the leader at `addr`: the answer and the log index that carried it.
    pub async fn propose(
        &self,
        addr: &str,
        req: RaftRequest,
        timeout: Duration,
    ) -> Result<Result<(Response, u64), RemoteError>, RpcError> {
        match self.app(addr, AppRequest::Propose(req), timeout).await? {
            AppResponse::Proposed(r) => Ok(r),
            other => Err(mismatch(addr, "Propose", &other)),
        }
    }

    /// Ask the leader at `addr` for the index a linearizable read must wait for.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, RemoteError>, RpcError> {
        match self.app(addr, AppRequest::ReadIndex, timeout).await? {
            AppResponse::ReadIndex(r) => Ok(r),
            other => Err(mismatch(addr, "ReadIndex", &other)),
        }
    }

    /// Report this node's liveness to the leader at `addr`.
    pub async fn heartbeat(
        &self,
        addr: &str,
        hb: Heartbeat,
        timeout: Duration,
    ) -> Result<Result<(), RemoteError>, RpcError> {
        match self.app(addr, AppRequest::Heartbeat(hb), timeout).await? {
            AppResponse::Heartbeat(r) => Ok(r),
            other => Err(mismatch(addr, "Heartbeat", &other)),
        }
    }

    /// Have the leader at `addr` run a membership change.
    pub async fn membership(
        &self,
        addr: &str,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<Result<(), RemoteError>, RpcError> {
        match self
            .app(addr, AppRequest::Membership(change), timeout)
            .await?
        {
            AppResponse::Membership(r) => Ok(r),
            other => Err(mismatch(addr, "Membership", &other)),
        }
    }

    /// A result the node at `addr` stored off-Raft (none when it does not have it).
    pub async fn fetch_result(
        &self,
        addr: &str,
        task: u64,
        attempt: u32,
        timeout: Duration,
    ) -> Result<Result<Option<String>, RemoteError>, RpcError> {
        match self
            .app(addr, AppRequest::FetchResult { task, attempt }, timeout)
            .await?
        {
            AppResponse::Result(r) => Ok(r),
            other => Err(mismatch(addr, "FetchResult", &other)),
        }
    }

    /// Hand records to the stream job's runner on the node at `addr`.
    pub async fn stream_records(
        &self,
        addr: &str,
        stream: u64,
        body: Vec<u8>,
        batch_id: Option<String>,
        timeout: Duration,
    ) -> Result<Result<u64, IngestRefusal>, RpcError> {
        match self
            .app(
                addr,
                AppRequest::StreamRecords {
                    stream,
                    body,
                    batch_id,
                },
                timeout,
            )
            .await?
        {
            AppResponse::StreamRecords(r) => Ok(r),
            other => Err(mismatch(addr, "StreamRecords", &other)),
        }
    }
}

impl Peers {
    /// Store a stream checkpoint on the node at `addr`.
    pub async fn put_checkpoint(
        &self,
        addr: &str,
        stream: u64,
        seq: u64,
        sha256: [u8; 32],
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Result<(), RemoteError>, RpcError> {
        let req = AppRequest::PutCheckpoint {
            stream,
            seq,
            sha256,
            data,
        };
        match self.app(addr, req, timeout).await? {
            AppResponse::CheckpointStored(r) => Ok(r),
            other => Err(mismatch(addr, "PutCheckpoint", &other)),
        }
    }

    /// A stream checkpoint the node at `addr` keeps by hash.
    pub async fn fetch_checkpoint(
        &self,
        addr: &str,
        stream: u64,
        sha256: [u8; 32],
        timeout: Duration,
    ) -> Result<Result<Option<Vec<u8>>, RemoteError>, RpcError> {
        match self
            .app(
                addr,
                AppRequest::FetchCheckpoint { stream, sha256 },
                timeout,
            )
            .await?
        {
            AppResponse::Checkpoint(r) => Ok(r),
            other => Err(mismatch(addr, "FetchCheckpoint", &other)),
        }
    }
}

fn mismatch(addr: &str, asked: &'static str, got: &AppResponse) -> RpcError {
    RpcError::Mismatch {
        addr: addr.to_string(),
        asked,
        got: format!("{got:?}"),
    }
}
