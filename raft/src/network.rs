//! openraft's RaftNetwork over cluster RPC ([`crate::rpc`]).
//!
//! One [`PeerClient`] per target, holding the shared connection pool for its address. Errors
//! keep openraft's split: no connection is `Unreachable` (openraft backs off), a broken
//! exchange is `Network`, an error raised by the remote Raft is `RemoteError`.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::rpc::{Peers, Pool, RpcError, RpcRequest, RpcResponse};
use crate::{Member, NodeId, TypeConfig};

/// Makes a [`PeerClient`] per peer.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Network {
        Network { peers }
    }
}

pub struct PeerClient {
    target: NodeId,
    member: Member,
    pool: std::sync::Arc<Pool>,
}

fn to_rpc_error<E: std::error::Error>(e: RpcError) -> RPCError<NodeId, Member, E> {
    match e {
        RpcError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected answer from node {0}: {1}")]
struct Unexpected(NodeId, String);

impl PeerClient {
    async fn call(&self, req: RpcRequest, option: &RPCOption) -> Result<RpcResponse, RpcError> {
        // openraft's hard TTL bounds the whole exchange; a bit less than it leaves room for
        // openraft's own bookkeeping.
        let ttl = option.hard_ttl().max(Duration::from_millis(50));
        self.pool.call(&req, ttl).await
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            e,
        ))
    }

    fn unexpected<E: std::error::Error>(&self, r: RpcResponse) -> RPCError<NodeId, Member, E> {
        RPCError::Network(NetworkError::new(&Unexpected(
            self.target,
            format!("{r:?}"),
        )))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            member: node.clone(),
            pool: self.peers.pool(&node.rpc),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self
            .call(RpcRequest::AppendEntries(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::AppendEntries(Ok(r)) => Ok(r),
            RpcResponse::AppendEntries(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(RpcRequest::InstallSnapshot(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::InstallSnapshot(Ok(r)) => Ok(r),
            RpcResponse::InstallSnapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self
            .call(RpcRequest::Vote(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::Vote(Ok(r)) => Ok(r),
            RpcResponse::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.unexpected(other)),
        }
    }
}
