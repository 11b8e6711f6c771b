//! The cluster RPC server: accepts connections on `cluster.listen`, answers Raft's messages
//! itself and hands application requests to an [`AppHandler`] (implemented by the actors).
//!
//! Each connection first proves the cluster secret ([`crate::secure`]); one that does not is
//! closed before any request is read (logged as a warning with the peer's address). Each
//! connection is then served by its own task, one request at a time; a malformed frame gets
//! a `Refused` answer and the connection is closed. Failure policy: errors are logged
//! per connection; the listener keeps accepting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::rpc::{AppRequest, AppResponse, RpcRequest, RpcResponse};
use crate::secure::{Channel, ClusterKey};
use crate::Raft;

/// Answers the application part of cluster RPC.
pub trait AppHandler: Send + Sync + 'static {
    fn handle(&self, req: AppRequest) -> Pin<Box<dyn Future<Output = AppResponse> + Send + '_>>;
}

/// Serve cluster RPC on `listener` until the returned task is aborted.
pub fn serve(
    listener: TcpListener,
    raft: Raft,
    app: Arc<dyn AppHandler>,
    key: ClusterKey,
) -> tokio::task::JoinHandle<()> {
    // This node's id, fixed for the life of the Raft instance.
    let me = raft.metrics().borrow().id;
    let refusals = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let raft = raft.clone();
                    let app = app.clone();
                    let key = key.clone();
                    let refusals = refusals.clone();
                    tokio::spawn(async move {
                        let ch = match Channel::server_within(stream, &key, HANDSHAKE_LIMIT).await {
                            Ok(ch) => ch,
                            Err(e) => {
                                refusals.refused(&peer, &e);
                                return;
                            }
                        };
                        if let Err(e) = serve_conn(ch, me, raft, app).await {
                            tracing::debug!(%peer, error = %e, "cluster RPC connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a cluster RPC connection");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Refused handshakes are logged at most once per [`REFUSAL_LOG_EVERY`], with how many were
/// not logged since: a flood of bad connections must not flood the log.
#[derive(Default)]
struct RefusalLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl RefusalLog {
    /// True when this refusal was logged.
    fn refused(&self, peer: &std::net::SocketAddr, e: &std::io::Error) -> bool {
        let now = std::time::Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = match st.0 {
            None => true,
            Some(last) => now.duration_since(last) >= REFUSAL_LOG_EVERY,
        };
        if !due {
            st.1 += 1;
            return false;
        }
        let not_logged = std::mem::take(&mut st.1);
        st.0 = Some(now);
        drop(st);
        tracing::warn!(%peer, error = %e, not_logged_since_last = not_logged, "refused a cluster RPC connection (at most one such line per 10 s)");
        true
    }
}

/// How long a new connection has to complete the handshake.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve_conn(
    mut s: Channel,
    me: u64,
    raft: Raft,
    app: Arc<dyn AppHandler>,
) -> std::io::Result<()> {
    while let Some(frame) = s.recv().await? {
        let (resp, close) = match edgerun_model::decode::<RpcRequest>(&frame) {
            Ok(req) => (answer(req, me, &raft, &*app).await, false),
            Err(e) => (
                RpcResponse::Refused(format!("undecodable request: {e}")),
                true,
            ),
        };
        let body =
            edgerun_model::encode(&resp).map_err(|e| std::io::Error::other(e.to_string()))?;
        s.send(&body).await?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// The node a Raft message says it comes from.
fn sender(req: &RpcRequest) -> Option<u64> {
    match req {
        RpcRequest::AppendEntries(r) => r.vote.leader_id().voted_for(),
        RpcRequest::Vote(r) => r.vote.leader_id().voted_for(),
        RpcRequest::InstallSnapshot(r) => r.vote.leader_id().voted_for(),
        RpcRequest::App(_) => None,
    }
}

async fn answer(req: RpcRequest, me: u64, raft: &Raft, app: &dyn AppHandler) -> RpcResponse {
    // A node never sends Raft messages to itself: one that claims to come from this node
    // means a member was registered with this node's address (refused at the API, but never
    // let it reach the Raft core, which does not expect it).
    if sender(&req) == Some(me) {
        tracing::error!(
            node = me,
            "refused a Raft message that claims to come from this node itself: a member is registered with this node's cluster address"
        );
        return RpcResponse::Refused(format!(
            "node {me} does not take Raft messages from itself (a member has its address)"
        ));
    }
    match req {
        RpcRequest::AppendEntries(r) => RpcResponse::AppendEntries(raft.append_entries(r).await),
        RpcRequest::Vote(r) => RpcResponse::Vote(raft.vote(r).await),
        RpcRequest::InstallSnapshot(r) => {
            RpcResponse::InstallSnapshot(raft.install_snapshot(r).await)
        }
        RpcRequest::App(r) => RpcResponse::App(app.handle(r).await),
    }
}

#[cfg(test)]
mod refusal_log_tests {
    #[test]
    fn a_flood_of_refusals_logs_one_line() {
        let log = super::RefusalLog::default();
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let e = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "bad mac");
        let logged = (0..4000).filter(|_| log.refused(&peer, &e)).count();
        assert_eq!(logged, 1);
        assert_eq!(log.state.lock().map(|s| s.1).unwrap_or(0), 3999);
    }
}
