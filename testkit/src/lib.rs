//! What the integration tests (`node/tests/common`), the benchmarks (`bench/`), the chaos
//! harness (`chaos-tests/`) and `edgerun dev` share to start local clusters of real
//! `edgerun` processes.
//!
//! # Layout
//! - [`ports`]: free TCP ports on 127.0.0.1 that no other harness process is handed.
//! - [`layout`]: a cluster's shape (ids, API and RPC addresses) and the `cluster.peers` value
//!   every member is started with.
//! - [`process`]: one node process: its log, signals, a clean stop or kill -9, reaped, never
//!   left running.
//!
//! std only: it is a dependency of the `edgerun` binary (`edgerun dev`) too.

pub mod layout;
pub mod ports;
pub mod process;

pub use layout::{Layout, Member};

/// The `--set` overrides every harness starts its nodes with unless it tests these very
/// settings: authentication off (t85 and friends test it) and the request limits out of the
/// way (a harness's clients all come from one address, far faster than a user).
pub const HARNESS_SETS: &[&str] = &[
    "auth.enabled=false",
    "limits.requests_per_second=100000000",
    "limits.burst=100000000",
    "limits.address_requests_per_second=100000000",
    "limits.address_burst=100000000",
];
pub use ports::free_port;
pub use process::{Log, NodeProcess};
