//! The cluster RPC server: accepts connections on `cluster.listen`, answers Raft's messages
//! itself and hands application requests to an [`AppHandler`] (implemented by the actors).
//!
//! Each connection is served by its own task, one request at a time; a malformed frame
//! gets a `Refused` answer and the connection is closed. Failure policy: errors are logged
//! per connection; the listener keeps accepting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::rpc::{read_frame, write_frame, AppRequest, AppResponse, RpcRequest, RpcResponse};
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
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let raft = raft.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_conn(stream, raft, app).await {
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

async fn serve_conn(mut s: TcpStream, raft: Raft, app: Arc<dyn AppHandler>) -> std::io::Result<()> {
    while let Some(frame) = read_frame(&mut s).await? {
        let (resp, close) = match edgerun_model::decode::<RpcRequest>(&frame) {
            Ok(req) => (answer(req, &raft, &*app).await, false),
            Err(e) => (
                RpcResponse::Refused(format!("undecodable request: {e}")),
                true,
            ),
        };
        let body =
            edgerun_model::encode(&resp).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_frame(&mut s, &body).await?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

async fn answer(req: RpcRequest, raft: &Raft, app: &dyn AppHandler) -> RpcResponse {
    match req {
        RpcRequest::AppendEntries(r) => RpcResponse::AppendEntries(raft.append_entries(r).await),
        RpcRequest::Vote(r) => RpcResponse::Vote(raft.vote(r).await),
        RpcRequest::InstallSnapshot(r) => {
            RpcResponse::InstallSnapshot(raft.install_snapshot(r).await)
        }
        RpcRequest::App(r) => RpcResponse::App(app.handle(r).await),
    }
}
