//! The StateShard over an in-process Raft cluster (`edgerun_raft::testing`): concurrent
//! proposals share log entries (group commit) and every caller gets its own answer; a node
//! cut off from its leader answers "no leader" instead of waiting. Forwarding a write from a
//! follower to its leader goes over cluster RPC, tested with real nodes in
//! node/tests/t50_cluster.rs.

use std::collections::BTreeSet;
use std::time::Duration;

use edgerun_raft::testing::eventually;

use edgerun_actors::ProposeError;
use edgerun_model::{Admission, TaskSpec};

mod common;
use common::shard;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_entries_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = common::cluster(dir.path(), 1).await;
    let node = c.node(1).clone();
    let proposer = shard(&node, 32, Duration::from_secs(2)).await;
    let before = node.raft.metrics().borrow().last_log_index.unwrap_or(0);

    let n = 300;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let p = proposer.clone();
        calls.spawn(async move {
            let spec = TaskSpec::kernel("stats", format!("{{\"values\":[{i}]}}"));
            p.submit(vec![spec], Admission::default()).await
        });
    }
    let mut ids = BTreeSet::new();
    let mut entries = BTreeSet::new();
    while let Some(r) = calls.join_next().await {
        let s = r
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("a proposal failed: {e}"))
            .unwrap_or_else(|r| panic!("a proposal was rejected: {r:?}"));
        assert_eq!(s.tasks.len(), 1);
        assert!(s.tasks[0].created);
        ids.insert(s.tasks[0].id);
        entries.insert(s.index);
    }
    assert_eq!(ids.len(), n, "two callers got the same task");
    let after = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    // One entry per batch of at most 32: at least 300/32, and far fewer than 300.
    assert!(
        entries.len() >= n.div_ceil(32) && entries.len() < n / 2,
        "{n} proposals in {} entries",
        entries.len()
    );
    assert!(after - before >= entries.len() as u64, "{before}..{after}");
    assert_eq!(
        node.view
            .read(|s| s.count(edgerun_model::TaskStatus::Pending)),
        n as u64
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_every_leader_says_so_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = common::cluster(dir.path(), 3).await;
    let (leader, _) = c
        .leader(&[1, 2, 3], 0, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let alone = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap_or(1);
    c.router.isolate(alone);
    // Cut off, it campaigns and knows no leader.
    eventually(
        &format!("node {alone} without a leader"),
        Duration::from_secs(10),
        || match c.node(alone).raft.metrics().borrow().current_leader {
            None => Ok(()),
            Some(l) => Err(format!("it names {l}")),
        },
    )
    .await;
    // A forward timeout far longer than the test's patience: the answer must not wait for it.
    let proposer = shard(c.node(alone), 32, Duration::from_secs(600)).await;
    let spec = TaskSpec::kernel("stats", "{\"values\":[1]}");
    match tokio::time::timeout(
        Duration::from_secs(60),
        proposer.submit(vec![spec], Admission::default()),
    )
    .await
    {
        Ok(Err(ProposeError::NoLeader)) => {}
        Ok(other) => panic!("a node without a leader answered {other:?}"),
        Err(_) => panic!("a node without a leader kept the caller waiting"),
    }
    c.shutdown().await;
}
