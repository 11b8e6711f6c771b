//! The leader's Scheduler over an in-process Raft node (`edgerun_raft::testing`): it places a
//! task on a registered node, marks the node down when its heartbeats stop for a lease (and
//! puts the task back to pending, to be placed as a new attempt), and marks it up again when
//! it is heard from. The same over real processes and a real lease is node/tests/t50_cluster.rs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgerun_actors::scheduler::{Scheduler, SchedulerArgs, SchedulerMsg};
use edgerun_actors::{Policy, Retention};
use edgerun_model::{Admission, NodeInfo, TaskSpec, TaskStatus, Tier};
use edgerun_raft::{Heartbeat, RaftNode};
use ractor::{Actor, ActorRef};

mod common;

const LEASE: Duration = Duration::from_millis(1_500);

fn worker(id: u64) -> NodeInfo {
    NodeInfo {
        id,
        tier: Tier::Edge,
        labels: BTreeMap::new(),
        api: format!("worker-{id}:1"),
        rpc: format!("worker-{id}:2"),
        slots: 4,
        cpu_millis: 4_000,
        memory_mb: 4_096,
        registered_at_ms: 0,
        up: true,
        down_since_ms: None,
    }
}

fn beat(node: &RaftNode, scheduler: &ActorRef<SchedulerMsg>, id: u64) {
    let hb = Heartbeat {
        node: id,
        running: 0,
        slots: 4,
        applied: *node.view.applied().borrow(),
    };
    let _ = scheduler.cast(SchedulerMsg::Heartbeat(hb));
}

/// Wait for `what` to hold, beating for `alive` meanwhile (every 100 ms, a lease is 1.5 s).
async fn wait_beating<T: std::fmt::Debug>(
    what: &str,
    node: &RaftNode,
    scheduler: &ActorRef<SchedulerMsg>,
    alive: &[u64],
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in alive {
            beat(node, scheduler, *id);
        }
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within 30 s; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_loses_its_task_after_a_lease_and_is_marked_up_when_heard_from() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = common::cluster(dir.path(), 1).await;
    let node = c.node(1).clone();
    let proposer = common::shard(&node, 64, Duration::from_secs(2)).await;
    // Node 2 is the only worker (the leader itself is not registered as one).
    proposer
        .register_node(worker(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (scheduler, _) = Actor::spawn(
        None,
        Scheduler,
        SchedulerArgs {
            node: node.clone(),
            proposer: proposer.clone(),
            lease: LEASE,
            policy: Policy::default(),
            retention: Retention::default(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let id = proposer
        .submit(
            vec![TaskSpec::kernel("stats", "{\"values\":[1]}")],
            Admission::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r:?}"))
        .tasks[0]
        .id;
    let task = |n: &RaftNode| {
        n.view
            .read(|s| s.task(id).map(|t| (t.status, t.node, t.attempt)))
    };
    let up = |n: &RaftNode| n.view.read(|s| s.nodes.get(&2).map(|w| w.up));

    // Beating: placed on node 2, and node 2 stays up for longer than a lease.
    wait_beating(
        "the task placed on node 2",
        &node,
        &scheduler,
        &[2],
        || match task(&node) {
            Some((TaskStatus::Scheduled, Some(2), 1)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let until = Instant::now() + 2 * LEASE;
    while Instant::now() < until {
        beat(&node, &scheduler, 2);
        assert_eq!(up(&node), Some(true), "node 2 marked down while beating");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Silent: marked down after its lease; its task back to pending (attempt 1 ended).
    wait_beating("node 2 marked down", &node, &scheduler, &[], || {
        match (up(&node), task(&node)) {
            (Some(false), Some((TaskStatus::Pending, _, 1))) => Ok(()),
            other => Err(format!("(up, task) = {other:?}")),
        }
    })
    .await;

    // Heard from again: up, and the task placed again as attempt 2.
    wait_beating(
        "node 2 up and the task placed again",
        &node,
        &scheduler,
        &[2],
        || match (up(&node), task(&node)) {
            (Some(true), Some((TaskStatus::Scheduled, Some(2), 2))) => Ok(()),
            other => Err(format!("(up, task) = {other:?}")),
        },
    )
    .await;
    scheduler.stop(None);
    c.shutdown().await;
}
