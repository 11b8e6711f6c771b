//! A real cluster: three `edgerun node` processes talking cluster RPC over TCP on 127.0.0.1.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, Node, FAST_FAILOVER};
use serde_json::{json, Value};

fn stats_task(i: u64) -> Value {
    json!({ "kernel": "stats", "input": { "values": [i, i + 1, i + 2] } })
}

/// Submit `task` through the nodes at `urls`, starting at `start`, moving on to the next
/// node on any error (connection refused, 503 during an election), until a 2xx or the
/// deadline. Returns the task id.
fn submit_retrying(
    agent: &ureq::Agent,
    urls: &[String],
    start: usize,
    task: &Value,
    deadline: Instant,
) -> Option<u64> {
    let mut i = start;
    loop {
        let url = &urls[i % urls.len()];
        if let Ok(r) = agent.post(&format!("{url}/v1/tasks")).send_json(task) {
            let v: Value = r.into_json().ok()?;
            return v["id"].as_u64();
        }
        if Instant::now() > deadline {
            return None;
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_nodes_agree_on_a_leader_and_run_tasks_submitted_through_any_of_them() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    for n in &c.nodes {
        let a = n.must_get("/v1/cluster");
        assert_eq!(a.body["leader"].as_u64(), Some(leader));
        let voters: Vec<u64> = a.body["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|x| x["role"] == "voter")
                    .filter_map(|x| x["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(voters, vec![1, 2, 3], "node {}: {}", n.id, a.body);
    }

    // 2,000 tasks from 6 client threads, round-robin over the three nodes.
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (urls, ids) = (urls.clone(), ids.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                for i in 0..334u64 {
                    let n = t * 334 + i;
                    if n >= 2000 {
                        break;
                    }
                    // As a client would on a loaded machine: a 503 while leadership moves
                    // (heartbeats starved of CPU) is retried, through the next node, under
                    // an idempotency key so that a retried write is not stored twice.
                    let mut task = stats_task(n);
                    task["idempotency_key"] = json!(format!("t50-{n}"));
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let id = submit_retrying(&agent, &urls, (n % 3) as usize, &task, deadline)
                        .unwrap_or_else(|| panic!("task {n} not accepted by any node in 120 s"));
                    ids.lock().unwrap_or_else(|p| p.into_inner()).push((id, n));
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("a client thread panicked"));
    }
    let ids = ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(ids.len(), 2000);
    let mut ran_on = BTreeMap::new();
    for (k, (id, n)) in ids.iter().enumerate() {
        // read through every node in turn: reads are linearizable wherever they land
        let t = c.nodes[k % 3].wait_for_task_end(*id, Duration::from_secs(120));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["result"]["mean"].as_f64(), Some(*n as f64 + 1.0), "{t}");
        *ran_on.entry(t["node"].as_u64().unwrap_or(0)).or_insert(0) += 1;
    }
    eprintln!("tasks per node: {ran_on:?}");
    assert_eq!(
        ran_on.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "every node ran tasks: {ran_on:?}"
    );
    let unique: BTreeSet<u64> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), 2000, "every submission got its own task");
}

#[test]
fn killing_the_leader_during_submissions_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start(dir.path(), 3, FAST_FAILOVER);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let total = 1000u64;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (urls, acked) = (urls.clone(), acked.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                for n in (t..total).step_by(4) {
                    let key = format!("k-{n}");
                    let mut task = stats_task(n);
                    task["idempotency_key"] = json!(key);
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let id = submit_retrying(&agent, &urls, n as usize, &task, deadline)
                        .unwrap_or_else(|| panic!("task {key} was never acknowledged"));
                    acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, key));
                }
            })
        })
        .collect();
    wait_until(
        "a few hundred acknowledged submissions",
        Duration::from_secs(60),
        || {
            let n = acked.lock().unwrap_or_else(|p| p.into_inner()).len();
            if n >= 250 {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        },
    );
    let killed_at = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    c.node_mut(leader).kill9();
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = c.wait_for_leader(&survivors, Duration::from_secs(30));
    let elected_after = killed_at.elapsed();
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("a client thread panicked"));
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(acked.len(), total as usize);
    let reader = c.node(new_leader);
    let mut first_placed_after_kill: Option<u64> = None;
    for (id, key) in &acked {
        let t = reader.wait_for_task_end(*id, Duration::from_secs(120));
        assert_eq!(t["status"], "succeeded", "{key}: {t}");
        assert_eq!(t["idempotency_key"], json!(key));
        if let Some(sched) = t["scheduled_at"].as_u64().filter(|s| *s >= killed_ms) {
            first_placed_after_kill = Some(first_placed_after_kill.map_or(sched, |f| f.min(sched)));
        }
    }
    // None lost, none recorded twice: exactly one task per key.
    let all = reader.must_list_all();
    let keys: BTreeMap<String, usize> = all.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t["idempotency_key"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
        m
    });
    assert_eq!(all.len(), total as usize, "one task per submission");
    assert!(keys.values().all(|n| *n == 1), "a key has several tasks");
    // Reported, not asserted (shared, noisy machines).
    eprintln!(
        "leader {leader} killed; node {new_leader} seen as leader after {elected_after:?} (polling /v1/cluster); next task placed after {:?} ms",
        first_placed_after_kill.map(|f| f - killed_ms)
    );
}

#[test]
fn a_silent_node_loses_its_tasks_to_others_and_its_late_results_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Every attempt takes 1.5 s, so tasks are surely mid-run when the node goes silent.
    let mut sets = FAST_FAILOVER.to_vec();
    sets.push("debug.kernel_delay_ms=1500");
    let c = Cluster::must_start(dir.path(), 3, &sets);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    let batch: Vec<Value> = (0..9).map(stats_task).collect();
    let a = c
        .node(leader)
        .must_post("/v1/tasks/batch", &json!({ "tasks": batch }));
    assert_eq!(a.status, 201, "{}", a.body);
    let running_on_victim: Vec<u64> = wait_until(
        "tasks running on the victim",
        Duration::from_secs(60),
        || {
            let all = c.node(leader).must_list_all();
            let r: Vec<u64> = all
                .iter()
                .filter(|t| t["node"].as_u64() == Some(victim) && t["status"] == "running")
                .filter_map(|t| t["id"].as_u64())
                .collect();
            if r.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(r)
            }
        },
    );
    c.node(victim).signal("STOP");
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != victim).collect();
    // After the lease the leader marks it down and the tasks go elsewhere, as new attempts.
    for id in &running_on_victim {
        let t = c
            .node(leader)
            .wait_for_task_end(*id, Duration::from_secs(60));
        assert_eq!(t["status"], "succeeded", "{t}");
        assert!(
            others.contains(&t["node"].as_u64().unwrap_or(0)),
            "task {id} finished on the silent node: {t}"
        );
        assert!(t["attempt"].as_u64() >= Some(2), "a new attempt: {t}");
    }
    let nodes = c.node(leader).must_get("/v1/nodes").body;
    let v = nodes["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|x| x["id"].as_u64() == Some(victim)).cloned());
    assert_eq!(
        v.map(|x| x["up"].clone()),
        Some(json!(false)),
        "the silent node is marked down"
    );
    let results: BTreeMap<u64, Value> = running_on_victim
        .iter()
        .map(|id| {
            (
                *id,
                c.node(leader).must_get(&format!("/v1/tasks/{id}")).body,
            )
        })
        .collect();

    // It wakes up: its old attempts are either stopped (its Worker sees they were given
    // to other nodes) or finished and their completions refused; never recorded.
    c.node(victim).signal("CONT");
    wait_until(
        "the woken node's stale attempts to be stopped or refused",
        Duration::from_secs(60),
        || {
            let refused = c
                .node(victim)
                .metric("edgerun_completions_refused_total")
                .unwrap_or(0.0);
            let stopped = c
                .node(victim)
                .metric("edgerun_worker_tasks_stopped_total")
                .unwrap_or(0.0);
            if refused + stopped >= running_on_victim.len() as f64 {
                Ok(())
            } else {
                Err(format!("refused = {refused}, stopped = {stopped}"))
            }
        },
    );
    wait_until(
        "the woken node to be marked up again",
        Duration::from_secs(30),
        || {
            let nodes = c.node(leader).must_get("/v1/nodes").body;
            let up = nodes["nodes"].as_array().and_then(|n| {
                n.iter()
                    .find(|x| x["id"].as_u64() == Some(victim))
                    .map(|x| x["up"].clone())
            });
            if up == Some(json!(true)) {
                Ok(())
            } else {
                Err(format!("{nodes}"))
            }
        },
    );
    // The recorded results did not change, and the woken node has caught up to them.
    for (id, before) in &results {
        assert_eq!(
            &c.node(leader).must_get(&format!("/v1/tasks/{id}")).body,
            before
        );
        assert_eq!(
            &c.node(victim).must_get(&format!("/v1/tasks/{id}")).body,
            before
        );
    }
}

#[test]
fn a_learner_catches_up_by_snapshot_then_is_promoted_and_a_voter_removed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let snap = [
        "raft.snapshot_after_logs=20",
        "raft.keep_logs_after_snapshot=5",
    ];
    let mut c = Cluster::must_start(dir.path(), 3, &snap);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let mut ids = Vec::new();
    for i in 0..60u64 {
        let a = c.nodes[(i % 3) as usize].must_post("/v1/tasks", &stats_task(i));
        assert_eq!(a.status, 201, "{}", a.body);
        ids.push(a.body["id"].as_u64().unwrap_or(0));
    }
    for id in &ids {
        c.node(leader)
            .wait_for_task_end(*id, Duration::from_secs(60));
    }
    let purged = wait_until(
        "the leader to purge its log after a snapshot",
        Duration::from_secs(30),
        || {
            let a = c.node(leader).must_get("/v1/cluster").body;
            match a["purged"].as_u64() {
                Some(p) if p > 10 => Ok(p),
                _ => Err(format!("{a}")),
            }
        },
    );

    // Node 4 starts as a learner and is added through a follower (forwarded to the leader).
    let (api, rpc) = (common::free_port(), common::free_port());
    let mut sets: Vec<&str> = vec![&c.peers, &c.secret, "cluster.role=\"learner\""];
    sets.extend_from_slice(&snap);
    let mut n4 = Node::spawn(&dir.path().join("n4"), 4, api, rpc, &sets);
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    let a = c.node(follower).must_post(
        "/v1/cluster/learners",
        &json!({ "id": 4, "rpc": format!("127.0.0.1:{rpc}"), "api": format!("127.0.0.1:{api}") }),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    n4.must_be_ready();
    let last = ids.last().copied().unwrap_or(0);
    let t = n4.wait_for_task_end(last, Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded");
    let m4 = n4.must_get("/v1/cluster").body;
    assert!(
        m4["snapshot"].as_u64() >= Some(purged),
        "node 4 got the state by snapshot: {m4}"
    );
    assert_eq!(n4.must_list_all().len(), ids.len());

    // Promote node 4, then remove a voter that is not the leader.
    let a = c
        .node(leader)
        .must_post("/v1/cluster/members/4/promote", &json!({}));
    assert_eq!(a.status, 200, "{}", a.body);
    let gone = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    // Node 4 learns of its promotion when it applies the membership entry.
    wait_until(
        "node 4 to see itself a voter",
        Duration::from_secs(20),
        || {
            let a = n4.try_get("/v1/cluster")?;
            if a.body["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["id"] == 4 && x["role"] == "voter"))
            {
                Ok(())
            } else {
                Err(a.body.to_string())
            }
        },
    );
    let d = c
        .node(leader)
        .agent_delete(&format!("/v1/cluster/members/{gone}"));
    assert_eq!(d.status, 200, "{}", d.body);
    c.node_mut(gone).kill9();
    let remaining: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|id| *id != gone).collect();
    let members = wait_until(
        "membership without the removed node",
        Duration::from_secs(30),
        || {
            let a = n4.try_get("/v1/cluster")?;
            let ids: Vec<u64> = a.body["members"]
                .as_array()
                .map(|m| m.iter().filter_map(|x| x["id"].as_u64()).collect())
                .unwrap_or_default();
            if ids == remaining {
                Ok(ids)
            } else {
                Err(format!("{}", a.body))
            }
        },
    );
    assert_eq!(members.len(), 3);
    // The cluster keeps serving, through the new voter too.
    let a = n4.must_post("/v1/tasks", &stats_task(1000));
    assert_eq!(a.status, 201, "{}", a.body);
    let t = n4.wait_for_task_end(a.body["id"].as_u64().unwrap_or(0), Duration::from_secs(30));
    assert_eq!(t["status"], "succeeded");
    assert_ne!(t["node"].as_u64(), Some(gone));
}

#[test]
fn killing_every_node_and_restarting_them_keeps_all_data() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start(dir.path(), 3, &[]);
    c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let batch: Vec<Value> = (0..200).map(stats_task).collect();
    let ids = c.nodes[1].must_submit_batch(&batch);
    for id in &ids {
        c.nodes[0].wait_for_task_end(*id, Duration::from_secs(60));
    }
    let before = c.nodes[0].must_list_all();
    for n in c.nodes.iter_mut() {
        n.kill9();
    }
    for n in c.nodes.iter_mut() {
        n.must_restart_no_wait();
    }
    for n in c.nodes.iter_mut() {
        n.must_be_ready();
    }
    c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    for n in &c.nodes {
        assert_eq!(n.must_list_all(), before, "node {} after the restart", n.id);
    }
}

#[test]
fn without_a_quorum_writes_get_503_with_retry_after_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut sets = FAST_FAILOVER.to_vec();
    sets.push("raft.forward_timeout_ms=1500");
    let mut c = Cluster::must_start(dir.path(), 3, &sets);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        c.node_mut(id).kill9();
    }
    let a = c.node(leader).must_post("/v1/tasks", &stats_task(1));
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        ["not_committed", "no_leader", "leader_unreachable"]
            .contains(&a.body["error"]["code"].as_str().unwrap_or("")),
        "{}",
        a.body
    );
    assert_eq!(a.retry_after.as_deref(), Some("1"));
}

/// Membership changes that would break the cluster are refused with 409 and change nothing:
/// a second member at a member's address (the leader's own included), promoting a node that
/// is not a learner, removing the leader itself.
#[test]
fn harmful_membership_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    // Membership only: a member's `state` (unregistered → up) may still be settling.
    let members = || -> Vec<Value> {
        let mut m = c.node(leader).must_get("/v1/cluster").body["members"].clone();
        for x in m.as_array_mut().into_iter().flatten() {
            if let Some(o) = x.as_object_mut() {
                o.remove("state");
                o.remove("tier");
            }
        }
        m.as_array().cloned().unwrap_or_default()
    };
    let before = members();
    let leader_rpc = c.node(leader).rpc_addr();
    let refused = |path: &str, body: Option<Value>, method: &str, expect: &str| {
        let a = c.node(leader).must_call(method, path, None, body.as_ref());
        let status = if expect == "not a member" { 404 } else { 409 };
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        let msg = a.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(msg.contains(expect), "{method} {path}: {msg}");
    };
    refused(
        "/v1/cluster/learners",
        Some(json!({"id": 9, "rpc": leader_rpc, "api": "127.0.0.1:1"})),
        "POST",
        "already uses",
    );
    refused(
        "/v1/cluster/learners",
        Some(json!({"id": leader, "rpc": "127.0.0.1:2", "api": "127.0.0.1:3"})),
        "POST",
        "already a voter",
    );
    refused(
        "/v1/cluster/members/99/promote",
        None,
        "POST",
        "not a member",
    );
    refused(
        &format!("/v1/cluster/members/{leader}"),
        None,
        "DELETE",
        "is the leader",
    );
    let after = members();
    assert_eq!(before, after, "a refused change altered the membership");
    // The leader's Raft is untouched: it still commits.
    let a = c.node(leader).must_post("/v1/tasks", &stats_task(7));
    assert_eq!(a.status, 201, "{}", a.body);
}
