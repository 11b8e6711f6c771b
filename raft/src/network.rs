//! The Raft network. This first slice runs single-voter clusters: every peer is reported
//! `Unreachable`, which openraft handles by backing off. The cluster issue replaces this with
//! length-delimited bincode frames over TCP.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::{Member, NodeId, TypeConfig};

#[derive(Debug, thiserror::Error)]
#[error("node {target} at {addr}: cluster RPC is not available in this build (single-node)")]
struct NoNetwork {
    target: NodeId,
    addr: String,
}

/// Makes a [`PeerClient`] per peer.
#[derive(Clone, Default)]
pub struct Network;

pub struct PeerClient {
    target: NodeId,
    addr: String,
}

impl PeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, Member, E> {
        RPCError::Unreachable(Unreachable::new(&NoNetwork {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.rpc.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
