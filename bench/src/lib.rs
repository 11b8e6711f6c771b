//! edgerun's benchmarks, run through the `edgerun` binary (`edgerun bench <scenario>`,
//! `edgerun bench-sandbox`, `edgerun bench-kernels`): they start that same binary as nodes
//! and helpers, so they live beside the server rather than in it.
//!
//! # Layout
//! - [`cluster`]: `edgerun bench <scenario>` — submit (beside etcd), e2e, failover, memory,
//!   startup, scheduler — on loopback with real `edgerun node` processes; writes
//!   `bench-<scenario>.json`.
//! - [`sandbox`]: `edgerun bench-sandbox` — per-task overhead of each isolation mode, and of
//!   `runc run` on the same bundle.
//! - [`stream`]: `edgerun bench stream` — stream jobs: http ingest → window → results, and
//!   MQTT → window → Redis beside mosquitto_sub's drain rate.
//! - [`kernels`]: `edgerun bench-kernels` — each C++ kernel called directly (no cluster).

pub mod cluster;
pub mod kernels;
pub mod sandbox;
pub mod stream;
pub mod wasm;
