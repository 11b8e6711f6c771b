//! The node's supervised actors (ractor).
//!
//! # Layout
//! - [`supervisor`]: `NodeSupervisor`, restarts failed children with backoff and a budget.
//! - [`child`]: `ChildSpec`, how the supervisor starts each child (the Api lives in the
//!   `api` crate and plugs in through it).
//! - [`shard`]: `StateShard`, the only writer to Raft; gathers concurrent proposals into one
//!   entry (group commit). [`Proposer`] is the handle others propose through;
//!   [`proposals`] gives it one typed method per command (`cancel(ids) -> Vec<CancelOutcome>`).
//! - [`scheduler`]: places pending tasks, only where this node leads.
//! - [`worker`]: runs the tasks placed on this node and commits their results.
//! - [`monitor`]: registers the node, heartbeats to the leader, exports gauges; writes the
//!   scheduled backups (`monitor/backups.rs`) and hands freed memory back (`monitor/trim.rs`).
//! - [`cluster`]: ClusterRpc (the node-to-node listener), the leader-side handler for
//!   forwarded writes, read-index, heartbeats and membership changes, and `read_barrier`.
//! - [`cluster_handle`]: [`ClusterHandle`], the facade the Api reaches Raft through (leader,
//!   readiness, metrics, membership, reads, off-Raft results, backups) in plain types.
//! - [`specs`]: the core actors' `ChildSpec`s, in start order, and failure injection.
//! - [`executor`]: how an attempt runs (in-process, a sandboxed process, a container), with
//!   seccomp, cgroups and the process shim.
//! - [`streams`]: stream jobs on this node: the StreamManager and one runner actor per job
//!   (sources, the engine of `edgerun-streams`, sinks, checkpoints through Raft).
//! - [`alerts`]: the alert rules the Monitor checks; [`cache`]: the result cache of
//!   deterministic kernels (in-process or Redis); [`redis_link`]: the one Redis connection;
//!   [`metrics_names`]: every metric's name.
//!
//! ```text
//!  NodeSupervisor ─┬─ StateShard ◀──Propose── Scheduler, Worker, Monitor, Api
//!                  ├─ Scheduler  ◀──StateEvent── raft state machine
//!                  ├─ Worker     ──spawn_blocking──▶ cpp kernels
//!                  ├─ Monitor
//!                  └─ Api (api crate)
//! ```
//!
//! Failure policy: an actor returns `Err` from `handle` only when it should die; the
//! supervisor restarts it. Everything an actor needs after a restart is rebuilt from the
//! replicated state (`StateView`), never kept only in the actor.

pub mod alerts;
pub mod cache;
pub mod child;
pub mod cluster;
pub mod cluster_handle;
pub mod executor;
pub mod metrics_names;
pub mod monitor;
pub mod proposals;
pub mod redis_link;
pub mod scheduler;
pub mod shard;
pub mod specs;
pub mod streams;
pub mod supervisor;
pub mod worker;

pub use child::{ChildSpec, Slot};
pub use cluster_handle::{
    net_faults, set_net_faults, Backup, BackupError, ClusterHandle, Leadership, MemberChange,
    MemberInfo, NetFaults, RaftStatus, Readiness, ResultError, Role, StateChange, StateChanges,
};
pub use proposals::{CancelOutcome, Fired, NodeMarked, Rejected, RequeueOutcome, Submission};
pub use scheduler::{Policy, Retention};
pub use shard::{ProposeError, Proposer};
pub use specs::{core_children, CoreParts, StreamsParts};
pub use supervisor::{NodeExit, NodeSupervisor, SupervisorArgs, SupervisorMsg};

pub use edgerun_cpp::{catalog, CppKernels, KernelError, KernelInfo, Kernels};
pub use edgerun_raft::IngestRefusal;

/// The current time in milliseconds since the Unix epoch, as proposers stamp it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why an actor stopped when a failure was injected (`POST /v1/debug/fail/{actor}`, with
/// `debug.fault_injection` on). The supervisor takes any stop it did not ask for as a failure:
/// injecting one is stopping the actor with this reason, so no actor carries a test-only
/// message in its enum.
pub const INJECTED_FAILURE: &str = "injected failure (debug.fault_injection)";
