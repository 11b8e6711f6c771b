//! Cluster RPC is authenticated: a process without the cluster secret cannot join, vote or
//! append. Real nodes over real sockets; the intruders are a node with another secret and
//! raw clients speaking the protocol.

mod common;

use std::time::Duration;

use common::*;
use edgerun_raft::openraft::{self, CommittedLeaderId, Vote};
use edgerun_raft::rpc::RpcRequest;
use edgerun_raft::secure::{Channel, ClusterKey};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn term_and_leader(c: &Cluster, id: u64) -> (u64, Option<u64>) {
    let a = c.node(id).must_get("/v1/cluster?stale=true").body;
    (a["term"].as_u64().unwrap_or(0), a["leader"].as_u64())
}

/// A vote request for a far higher term, as a disruptive or malicious node would send.
fn disruptive_vote(term: u64) -> Vec<u8> {
    let req = RpcRequest::Vote(openraft::raft::VoteRequest {
        vote: Vote::new(term, 9),
        last_log_id: Some(openraft::LogId::new(
            CommittedLeaderId::new(term, 9),
            1_000_000,
        )),
    });
    edgerun_model::encode(&req).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn without_the_cluster_secret_nobody_joins_votes_or_appends() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::must_start(dir.path(), 3, &[]);
    let leader = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let (term, _) = term_and_leader(&c, leader);
    let id = c
        .node(leader)
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [1, 2]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id"));
    assert_eq!(
        c.node(1).wait_for_task_end(id, Duration::from_secs(20))["status"],
        "succeeded"
    );

    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    for n in [1, 2, 3] {
        let addr = c.node(n).rpc_addr();
        rt.block_on(async {
            // 1. The old, unauthenticated framing: a length and a bincode vote for term + 100.
            let mut s = TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let body = disruptive_vote(term + 100);
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            s.write_all(&frame).await.unwrap_or_else(|e| panic!("{e}"));
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(_)) | Ok(Err(_))),
                "node {n} neither answered nor closed the connection"
            );
            assert!(
                buf.len() < 44,
                "node {n} answered an unauthenticated vote with {} bytes",
                buf.len()
            );

            // 2. The real protocol with a wrong secret: refused before any request.
            let wrong = ClusterKey::from_secret(b"not-the-cluster-secret-at-all")
                .unwrap_or_else(|e| panic!("{e}"));
            let s = TcpStream::connect(&addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let e = Channel::client(s, &wrong)
                .await
                .err()
                .unwrap_or_else(|| panic!("node {n} accepted a handshake with the wrong secret"));
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        });
    }

    // 3. A node with its own secret that believes it is a voter of the same cluster: it
    // campaigns and sends votes (and would append as a leader), all refused.
    let (api, rpc) = (free_port(), free_port());
    let rogue_secret = dir.path().join("rogue.secret");
    std::fs::write(&rogue_secret, "a-different-secret-0123456789")
        .unwrap_or_else(|e| panic!("{e}"));
    let peers = c.peers.replacen(
        "cluster.peers=[",
        &format!(
            "cluster.peers=[{{ id = 4, rpc = \"127.0.0.1:{rpc}\", api = \"127.0.0.1:{api}\" }}, "
        ),
        1,
    );
    let secret = format!("cluster.secret_file=\"{}\"", rogue_secret.display());
    let mut rogue = Node::spawn(
        &dir.path().join("rogue"),
        4,
        api,
        rpc,
        &[
            &peers,
            &secret,
            "raft.election_timeout_min_ms=300",
            "raft.election_timeout_max_ms=400",
        ],
    );
    // Its attempts are refused by every member, and it says why.
    wait_until(
        "the rogue node to be refused",
        Duration::from_secs(30),
        || {
            let log = rogue.log();
            let refused = log
                .matches("does not share this node's cluster secret")
                .count();
            if refused >= 3 {
                Ok(())
            } else {
                Err(format!("{refused} refusals in its log so far"))
            }
        },
    );
    wait_until(
        "the members to log the refused connections",
        Duration::from_secs(30),
        || {
            let counts: Vec<usize> = [1, 2, 3]
                .iter()
                .map(|n| {
                    c.node(*n)
                        .log()
                        .matches("refused a cluster RPC connection")
                        .count()
                })
                .collect();
            if counts.iter().all(|k| *k > 0) {
                Ok(())
            } else {
                Err(format!("refusals logged per member: {counts:?}"))
            }
        },
    );

    // 4. The admin adds it as a learner: it still never receives the log.
    let _ = c.node(leader).try_post_raw(
        "/v1/cluster/learners",
        json!({"id": 4, "rpc": format!("127.0.0.1:{rpc}"), "api": format!("127.0.0.1:{api}")})
            .to_string()
            .as_bytes(),
    );
    let id2 = c
        .node(leader)
        .must_post(
            "/v1/tasks",
            &json!({"kernel": "stats", "input": {"values": [3, 4]}}),
        )
        .body["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id"));
    assert_eq!(
        c.node(leader)
            .wait_for_task_end(id2, Duration::from_secs(20))["status"],
        "succeeded"
    );

    // The cluster never moved: same leader, same term; the rogue holds none of its tasks.
    let leader_now = c.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let (term_now, _) = term_and_leader(&c, leader_now);
    assert_eq!(leader_now, leader, "the leader changed");
    assert_eq!(term_now, term, "the term moved from {term} to {term_now}");
    if let Ok(a) = rogue.try_get(&format!("/v1/tasks/{id}?stale=true")) {
        assert_ne!(
            a.status, 200,
            "the rogue node has the cluster's task {id}: {}",
            a.body
        );
    }
    rogue.kill9();
    let log = [1, 2, 3]
        .iter()
        .map(|n| c.node(*n).log())
        .collect::<String>()
        + &rogue.log();
    assert!(!log.contains("a-different-secret"), "a secret was logged");
    let real = std::fs::read_to_string(dir.path().join("cluster.secret")).unwrap_or_default();
    assert!(
        real.trim().len() >= 16 && !log.contains(real.trim()),
        "the cluster secret was logged"
    );
    c.node_mut(1).kill9();
}
