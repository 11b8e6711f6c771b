//! What the actor tests share: in-process Raft nodes (`edgerun_raft::testing`) with a
//! StateShard in front.

use std::path::Path;
use std::time::Duration;

use edgerun_actors::shard::{ShardArgs, ShardMsg, StateShard};
use edgerun_actors::{Proposer, Slot};
use edgerun_raft::testing::Cluster;
use edgerun_raft::RaftNode;
use ractor::Actor;

/// `n` in-process nodes with an agreed leader.
pub async fn cluster(dir: &Path, n: u64) -> Cluster {
    let c = Cluster::start(dir, n)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<u64> = (1..=n).collect();
    c.leader(&all, 0, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// A StateShard on `node` and the proposer in front of it.
pub async fn shard(node: &RaftNode, max_batch: usize, forward_timeout: Duration) -> Proposer {
    let slot: Slot<ShardMsg> = Slot::default();
    let (r, _) = Actor::spawn(
        None,
        StateShard,
        ShardArgs {
            node: node.clone(),
            max_batch,
            forward_timeout,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("starting the shard: {e}"));
    slot.set(Some(r));
    Proposer::new(slot)
}
