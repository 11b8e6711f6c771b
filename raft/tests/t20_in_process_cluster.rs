//! Raft with edgerun's own log store and state machine, three nodes in one process over a
//! network the test cuts and heals (`edgerun_raft::testing`): elections, partitions, and a
//! follower brought back by a snapshot. The fast tier's cluster tests; the same behaviour over
//! real sockets and processes is in node/tests/t50_cluster.rs and the chaos suite.

use std::sync::Arc;
use std::time::Duration;

use edgerun_model::{Admission, Command, RaftRequest, Response, TaskSpec, TaskStatus};
use edgerun_raft::testing::{eventually, quick_config, Cluster};
use edgerun_raft::RaftNode;

fn submit(n: u64) -> RaftRequest {
    RaftRequest::new(Command::Submit {
        now_ms: 1,
        tasks: (0..n)
            .map(|i| TaskSpec::kernel("stats", format!("{{\"values\":[{i}]}}")))
            .collect(),
        admission: Admission::default(),
    })
}

async fn write(node: &RaftNode, req: RaftRequest) -> Response {
    match node.raft.client_write(req).await {
        Ok(r) => r.data,
        Err(e) => panic!("write through node {} failed: {e}", node.id),
    }
}

fn pending(node: &RaftNode) -> u64 {
    node.view.read(|s| s.count(TaskStatus::Pending))
}

/// Wait until every node of `c` holds `want` pending tasks.
async fn converge(c: &Cluster, want: u64, within: Duration) {
    eventually(&format!("every node holding {want} tasks"), within, || {
        let seen: Vec<(u64, u64)> = c.nodes.values().map(|n| (n.id, pending(n))).collect();
        if seen.iter().all(|(_, p)| *p == want) {
            Ok(())
        } else {
            Err(format!("(node, tasks) {seen:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_and_its_uncommitted_write_is_dropped_at_the_heal() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::start(dir.path(), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all = [1, 2, 3];
    let (old, term) = c
        .leader(&all, 0, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(write(c.node(old), submit(1)).await, Response::Submitted(v) if v.len() == 1));
    converge(&c, 1, Duration::from_secs(10)).await;

    c.router.isolate(old);
    let rest: Vec<u64> = all.iter().copied().filter(|n| *n != old).collect();
    let (new, new_term) = c
        .leader(&rest, term, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(new, old);
    // Alone, the old leader cannot commit: its write never returns.
    let alone = tokio::time::timeout(
        Duration::from_millis(500),
        c.node(old).raft.client_write(submit(5)),
    )
    .await;
    assert!(
        !matches!(alone, Ok(Ok(_))),
        "a leader cut off from the majority committed a write"
    );
    assert!(matches!(write(c.node(new), submit(2)).await, Response::Submitted(v) if v.len() == 2));

    c.router.heal();
    c.leader(&all, new_term - 1, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // 1 + 2 committed; the 5 the old leader appended alone are gone everywhere.
    converge(&c, 3, Duration::from_secs(10)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_past_the_purged_log_comes_back_through_a_snapshot() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = (*quick_config()).clone();
    config.snapshot_policy = edgerun_raft::openraft::SnapshotPolicy::LogsSinceLast(20);
    config.max_in_snapshot_log_to_keep = 0;
    config.purge_batch_size = 1;
    let c = Cluster::start_with(dir.path(), 3, Arc::new(config))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all = [1, 2, 3];
    let (leader, _) = c
        .leader(&all, 0, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lagging = all.iter().copied().find(|n| *n != leader).unwrap_or(1);
    c.router.isolate(lagging);
    for _ in 0..60 {
        write(c.node(leader), submit(1)).await;
    }
    // The leader's log before its snapshot is purged: the follower can only get a snapshot.
    eventually(
        "the leader purging its log",
        Duration::from_secs(10),
        || {
            let purged = c
                .node(leader)
                .raft
                .metrics()
                .borrow()
                .purged
                .map(|p| p.index);
            match purged {
                Some(i) if i > 5 => Ok(()),
                other => Err(format!("purged up to {other:?}")),
            }
        },
    )
    .await;
    c.router.heal();
    converge(&c, 60, Duration::from_secs(15)).await;
    let m = c.node(lagging).raft.metrics().borrow().clone();
    assert!(
        m.snapshot.is_some(),
        "node {lagging} caught up without a snapshot: {m:?}"
    );
    c.shutdown().await;
}
