//! The REST API (actix-web): `/v1` routes of API.md, health, readiness and metrics.
//!
//! # Layout
//! - [`routes`]: the one route table, with the role each route needs.
//! - [`auth`], [`guard`], [`body`]: who calls and whether the matched route lets them;
//!   rate limits and the audit log; the body-read deadline.
//! - [`handlers`]: one module per resource; each takes only the context it needs
//!   (`TasksCtx`, `ClusterCtx`, `DebugCtx`, the Prometheus handle).
//! - [`dto`]: JSON shapes and their validation into model types.
//! - [`error`]: `ApiError` and its one mapping to statuses and the error body.
//! - [`shared_limit`]: rate limits shared through Redis.
//! - [`server`]: the Api actor and its `ChildSpec` for the node supervisor; [`tls`]: HTTPS
//!   with rustls.
//! - [`openapi`]: the OpenAPI document (`/v1/openapi.json`), derived from the types, with
//!   every route and `ErrorCode`; [`trace`]: trace ids across a request's nodes.
//!
//! Failure policy: every bad request gets a 4xx in API.md's shape and changes nothing;
//! writes that cannot reach a leader get 503 with Retry-After.
//!
//! **Architecture Invariant:** the API reaches Raft only through the actors crate's
//! `ClusterHandle` (plain types: leader, readiness, metrics, membership, results, backups);
//! it names no type of the Raft crate or of the Raft library.

pub mod auth;
pub mod body;
pub mod dto;
pub mod error;
pub mod guard;
pub mod handlers;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod shared_limit;
pub mod tls;
pub mod trace;

pub use auth::Auth;
pub use error::ApiError;
pub use guard::Guard;
pub use handlers::cluster::ClusterCtx;
pub use handlers::debug::DebugCtx;
pub use handlers::tasks::TasksCtx;
pub use server::{ApiParts, ApiSpec};

#[cfg(test)]
mod tests {
    /// The architecture invariant above, checked on this crate's sources.
    #[test]
    fn sources_name_no_raft_type() {
        // Spelled in pieces so that this file does not match itself.
        let banned = [
            concat!("open", "raft"),
            concat!("edgerun_", "raft"),
            concat!("Raft", "Node"),
            concat!("Raft", "Metrics"),
            concat!("State", "View"),
        ];
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut seen = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    seen += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    for b in banned {
                        assert!(!text.contains(b), "{} names {b}", path.display());
                    }
                }
            }
        }
        assert!(seen > 10, "found only {seen} source files");
    }
}
