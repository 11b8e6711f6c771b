//! Raft for edgerun: openraft's type configuration, a log store (segment files), the state machine
//! store around `model::ClusterState`, and the node-to-node network.
//!
//! # Layout
//! - [`TypeConfig`] and aliases (this file).
//! - [`log_store`]: `LogStore`: the Raft log in segment files ([`log_files`]), the vote and
//!   purge/commit markers in sled; appends are acknowledged only after `fdatasync`.
//! - [`state_machine`]: `StateMachineStore` (in-memory `ClusterState`, snapshots in files) and
//!   `StateView`, the read handle the rest of the node uses.
//! - [`rpc`]: cluster RPC, length-delimited bincode frames over TCP with pooled connections;
//!   [`server`] answers it. [`network`]: openraft's RaftNetwork on top of it.
//! - [`data_dir`]: `DataDir`, the data directory's layout and the one place its sled database
//!   is opened (node, restore, doctor, benchmarks).
//! - [`start`]: starts a Raft node from the config on an open `DataDir`.
//! - [`private`]: data at rest private to the node's user (dirs 0700, files 0600).
//! - [`snapshot_files`]: the state machine's snapshots as plain files beside the database.
//! - [`store_error`]: `StoreError`, the typed errors of the node's own files and trees.
//! - [`flush`]: one flusher per database, coalescing durable writes (appends, votes, outbox).
//! - [`results`]: results too big to replicate, kept in this node's sled and fetched by peers.
//! - [`secure`]: the cluster RPC handshake over the shared secret and a MAC on every frame.
//! - [`breaker`]: a circuit breaker per peer on cluster RPC.
//! - [`faults`]: network faults injected into outgoing cluster RPC (chaos tests).
//! - [`backup`]: backups of the replicated state, and seeding a data directory from one.
//! - [`doctor`]: what a (stopped) data directory holds and whether it is whole.
//! - [`testing`]: in-process clusters for the fast test tier (N nodes over a network the test
//!   cuts and heals, no sockets).
//!
//! ```text
//!  proposer ──client_write──▶ openraft ──append──▶ LogStore (<data>/log/*.seg, fdatasync)
//!                                 │
//!                                 └──apply──▶ StateMachineStore ──events──▶ StateView subscribers
//!                                                 │ build/install snapshot
//!                                                 ▼
//!                                             <data>/snapshot/ (files)
//! ```
//!
//! Durability: the log is the record. The state machine lives in memory and is rebuilt at
//! start from the last snapshot plus the committed log entries after it.
//!
//! **Architecture Invariant:** raft never depends on actors or api.

// openraft's StorageError is large by design and every storage trait returns it.
#![allow(clippy::result_large_err)]

use serde::{Deserialize, Serialize};

pub mod backup;
pub mod breaker;
pub mod checkpoints;
pub mod data_dir;
pub mod doctor;
pub mod faults;
pub mod flush;
pub mod log_files;
pub mod log_store;
pub mod network;
pub mod private;
pub mod results;
pub mod rpc;
pub mod secure;
pub mod server;
pub mod snapshot_files;
pub mod start;
pub mod state_machine;
pub mod store_error;
pub mod testing;

pub use checkpoints::{CheckpointKey, CheckpointStore};
pub use data_dir::{DataDir, DataDirError, Prepared};
pub use flush::Flusher;
pub use log_store::LogStore;
pub use results::{Outbox, ResultStore};
pub use rpc::{
    AppRequest, AppResponse, Heartbeat, IngestRefusal, MembershipChange, Peers, RemoteError,
};
pub use start::{start_raft, RaftNode};
pub use state_machine::{StateEvent, StateMachineStore, StateView};
pub use store_error::StoreError;

pub use openraft;

/// What openraft knows about a member: how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Cluster RPC, host:port.
    pub rpc: String,
    /// REST API, host:port.
    pub api: String,
}

openraft::declare_raft_types!(
    /// edgerun's Raft types: the log carries `RaftRequest`s, apply answers `Response`s.
    pub TypeConfig:
        D = edgerun_model::RaftRequest,
        R = edgerun_model::Response,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Member>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;

/// Errors of this layer, for callers that start or inspect the store.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("opening the database at {path}: {message}")]
    Open { path: String, message: String },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The Raft log's files are damaged (a checksum, a gap, a file cut short mid-log).
    #[error("{path}: {message}")]
    Damaged { path: String, message: String },
    #[error("raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Fatal(String),
}
