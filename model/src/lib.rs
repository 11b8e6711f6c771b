//! edgerun's domain model: tasks, nodes, the Raft commands that change them and the
//! deterministic state machine that applies those commands.
//!
//! # Layout
//! - [`task`]: `TaskSpec` (what a user asks for), `Task` (what the cluster records), statuses.
//! - [`node`]: `NodeInfo`, the tier and address of a cluster member.
//! - [`command`]: `RaftRequest` / `Command` / `Response`, the replicated log's payload.
//! - [`store`]: `TaskStore`, every task the state holds (live tasks whole, ended ones packed).
//! - [`faults`]: `NetFaults`, faults on a node's outgoing cluster RPC (chaos tests).
//! - [`job`]: periodic jobs, a cron schedule that makes a task at each slot.
//! - [`state`]: `ClusterState`, the state machine. `apply` is pure: no clocks, no I/O, no
//!   randomness; the proposer stamps every time it needs.
//!
//! Everything here is plain data with serde, encoded with bincode on the wire and on disk.
//! Types in this crate avoid serde attributes that bincode cannot honour (internally tagged
//! enums, skipped-if fields); the JSON shapes users see live in the `api` crate.
//!
//! **Architecture Invariant:** this crate has no internal dependencies and does no I/O.

pub mod command;
pub mod faults;
pub mod job;
pub mod migrate;
pub mod module;
pub mod node;
pub mod state;
pub mod store;
pub mod stream;
pub mod task;

pub use command::*;
pub use faults::NetFaults;
pub use job::*;
pub use node::*;
pub use state::*;
pub use store::{EndedBrief, TaskStore};
pub use stream::*;
pub use task::*;

/// Version tag written into every Raft request and snapshot. A node refuses to apply a
/// request with a version it does not know instead of guessing at its layout; a data directory
/// written by another version is refused at start.
///
/// 2: Raft runs with one leader per term (openraft `single-term-leader`), which changes how log
/// ids are stored.
/// 3: the scheduler issue: resources, placement, dependencies, dead letters, periodic jobs,
/// admission control, retention.
/// 4: a task carries the trace id of the request that submitted it.
/// 5: result memoization: a task may opt out of the cache (`cache`), a completion and a task
/// say whether the result came from the cache (`cached`).
/// 6: a task may ask for disk (`resources.disk_mb`).
/// 7: stream jobs (`ClusterState::streams`, four commands appended to `Command`). A format 6
/// snapshot is migrated when read ([`migrate`]) and format 6 log entries still apply: their
/// commands encode the same in 7.
pub const FORMAT_VERSION: u16 = 8;

/// Whether a request of format `v` can be applied by this build.
pub fn applies_format(v: u16) -> bool {
    v == FORMAT_VERSION || migrate::FROM.contains(&v)
}

/// The log target of the lines that follow one task through the cluster (submit, forward,
/// commit, placement, run, completion), each with the task's `trace_id`. At debug level:
/// `log.filter = "info,edgerun::trace=debug"` shows them.
pub const TRACE_TARGET: &str = "edgerun::trace";

/// Encode a value with the project's one binary encoding (bincode 1, fixed options).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serialize(value).map_err(|e| CodecError(e.to_string()))
}

/// Decode a value written by [`encode`]. Corrupt or truncated input is an error, never a panic.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    bincode::deserialize(bytes).map_err(|e| CodecError(e.to_string()))
}

/// [`encode`] into a writer (a buffered file: no copy of the whole value in memory).
pub fn encode_into<T: serde::Serialize>(
    w: &mut impl std::io::Write,
    value: &T,
) -> Result<(), CodecError> {
    bincode::serialize_into(w, value).map_err(|e| CodecError(e.to_string()))
}

/// [`decode`] from a reader.
pub fn decode_from<T: serde::de::DeserializeOwned>(r: impl std::io::Read) -> Result<T, CodecError> {
    bincode::deserialize_from(r).map_err(|e| CodecError(e.to_string()))
}

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("bincode: {0}")]
pub struct CodecError(pub String);
