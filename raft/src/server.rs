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
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let raft = raft.clone();
                    let app = app.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        let ch = match Channel::server_within(stream, &key, HANDSHAKE_LIMIT).await {
                            Ok(ch) => ch,
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "refused a cluster RPC connection");
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
