//! Rate limits shared through a real Redis: a client spreading its calls over three nodes is
//! limited once, cluster-wide; with Redis gone each node falls back to its own bucket (no
//! request fails because of it), and sharing resumes when Redis is back.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BURST: u64 = 12;

/// `n` quick calls spread round-robin over the nodes: (served, limited, seconds taken).
fn spread(c: &Cluster, n: usize) -> (u64, u64, f64) {
    let t = Instant::now();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..n {
        let a = c.nodes[i % c.nodes.len()].must_call("GET", "/v1/kernels", None, None);
        match a.status {
            200 => ok += 1,
            429 => {
                a.must_be_rate_limited();
                limited += 1;
            }
            s => panic!("call {i}: status {s}: {}", a.body),
        }
    }
    (ok, limited, t.elapsed().as_secs_f64())
}

#[test]
fn three_nodes_share_one_bucket_through_redis_and_fall_back_without_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut redis = RedisServer::must_start(&dir.path().join("redis"));
    let url = format!("redis.url=\"{}\"", redis.url());
    let burst = format!("limits.burst={BURST}");
    let c = Cluster::must_start(
        dir.path(),
        3,
        &[&url, "limits.requests_per_second=1", &burst],
    );

    // 3 × BURST calls over three nodes: one shared bucket serves about BURST of them.
    let (ok, limited, secs) = spread(&c, 3 * BURST as usize);
    let most = BURST + secs.ceil() as u64 + 1;
    assert!(
        (BURST..=most).contains(&ok),
        "shared bucket: {ok} served, {limited} limited in {secs:.2} s (expected {BURST}..={most}; \
         three separate buckets would serve {})",
        3 * BURST
    );
    for n in &c.nodes {
        assert!(
            n.log()
                .contains("rate limits are shared by all nodes through Redis"),
            "node {} does not say it shares its limits",
            n.id
        );
    }

    // Redis goes away: every node falls back to its own (still full) bucket; nothing fails.
    redis.kill();
    let (ok, limited, secs) = spread(&c, 3 * BURST as usize);
    assert!(
        ok >= 3 * BURST - 1,
        "without Redis each node has its own bucket: {ok} served, {limited} limited in {secs:.2} s"
    );
    wait_until(
        "every node to warn that Redis is gone",
        Duration::from_secs(10),
        || {
            let quiet: Vec<u64> = c
                .nodes
                .iter()
                .filter(|n| !n.log().contains("Redis unavailable: rate limits fall back"))
                .map(|n| n.id)
                .collect();
            if quiet.is_empty() {
                Ok(())
            } else {
                Err(format!("nodes without the warning: {quiet:?}"))
            }
        },
    );

    // Redis is back (empty): the nodes reconnect and share one bucket again.
    redis.must_restart();
    wait_until(
        "every node to use Redis again",
        Duration::from_secs(30),
        || {
            for n in &c.nodes {
                let _ = n.must_call("GET", "/healthz", None, None);
            }
            let back: Vec<u64> = c
                .nodes
                .iter()
                .filter(|n| n.log().contains("Redis answers again"))
                .map(|n| n.id)
                .collect();
            if back.len() == c.nodes.len() {
                Ok(())
            } else {
                // /healthz is not limited and so never asks Redis: poke each node's /v1 once.
                for n in &c.nodes {
                    let _ = n.must_call("GET", "/v1/kernels", None, None);
                }
                Err(format!("nodes back on Redis: {back:?}"))
            }
        },
    );
    // (The pokes above took a few tokens from the fresh shared bucket: fewer are served.)
    let (ok, limited, secs) = spread(&c, 3 * BURST as usize);
    let most = BURST + secs.ceil() as u64 + 1;
    assert!(
        ok <= most,
        "shared again: {ok} served, {limited} limited in {secs:.2} s (at most {most})"
    );
    let logs: String = c.nodes.iter().map(|n| n.log()).collect();
    assert!(!logs.contains("panicked"), "a node panicked");
}
