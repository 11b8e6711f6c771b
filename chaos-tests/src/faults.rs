//! Faults as typed values, and how each is done to a running cluster.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::json;

use crate::cluster::Cluster;
use crate::net::Kind;

/// Which node a fault hits, resolved when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Leader,
    /// A follower (not the leader), the lowest id.
    Follower,
    /// Any node, chosen by the run's seed.
    Random,
    Node(u64),
    /// The node running the run's stream job (as the live nodes' state says).
    StreamRunner,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL; the node stays down until [`Fault::Restart`] or [`Fault::Heal`].
    Kill { target: Target },
    /// Start a killed node again on its data: `Node(id)`, or for any other target the
    /// lowest-numbered killed node.
    Restart { target: Target },
    /// SIGSTOP (a frozen process: a GC pause, a VM stall).
    Pause { target: Target },
    /// Cut the target off from every other node (the harness can still reach it).
    Isolate { target: Target },
    /// Split the voters into the first `minority` ids and the rest.
    Split { minority: u64 },
    /// Packets from `from` to `to` are lost; the other direction works.
    OneWay { from: Target, to: Target },
    /// Every node loses this share of the packets it gets from other nodes.
    Loss { percent: u8 },
    /// Every cluster RPC waits this long before it leaves.
    Delay { ms: u64 },
    /// An actor on the target fails (the supervisor must restart it).
    PanicActor { target: Target, actor: String },
    /// Task processes on the target are killed -9 as they appear, for this long.
    KillTaskProcesses { target: Target, for_ms: u64 },
    /// Fill the target's data directory (a small tmpfs) to the last byte.
    FillDisk { target: Target },
    /// The target's wall clock jumps by this many seconds (libfaketime; monotonic time and the
    /// other nodes are untouched).
    ClockJump { target: Target, seconds: i64 },
    /// Every node killed -9, then all started again.
    RestartAll,
    /// Add node `id` as a learner, wait for it, promote it, then remove `remove`.
    Membership { id: u64, remove: Target },
    /// Undo every fault: continue paused nodes, clear packet rules and RPC faults, free the
    /// disk, restart killed nodes.
    Heal,
}

/// A fault as it was done: when, what, to whom, and what happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub at_ms: u64,
    pub fault: Fault,
    pub nodes: Vec<u64>,
    pub note: String,
}

/// What the injector remembers between faults.
#[derive(Default)]
pub struct Injector {
    pub log: Vec<Injected>,
    /// Nodes killed by a fault (restarted by Restart/Heal).
    killed: BTreeSet<u64>,
    /// Nodes with a ballast file.
    filled: BTreeSet<u64>,
    /// Nodes removed from the membership (never restarted).
    removed: BTreeSet<u64>,
    /// Nodes whose clock was moved.
    jumped: BTreeSet<u64>,
    /// Nodes that exited without being killed by a fault, and how.
    unexpected: Vec<String>,
    rng: Option<fastrand::Rng>,
}

impl Injector {
    pub fn new(seed: u64) -> Injector {
        Injector {
            rng: Some(fastrand::Rng::with_seed(seed)),
            ..Injector::default()
        }
    }

    fn resolve(&mut self, c: &Cluster, t: Target) -> Result<u64> {
        let live: Vec<u64> = c
            .ids()
            .into_iter()
            .filter(|id| !self.killed.contains(id) && !self.removed.contains(id))
            .collect();
        match t {
            Target::Node(id) => Ok(id),
            Target::Leader => c.leader().context("no agreed leader to target"),
            Target::StreamRunner => live
                .iter()
                .find_map(|n| {
                    let a = c.get(*n, "/v1/streams").ok()?;
                    a.body["streams"].as_array()?.first()?["node"].as_u64()
                })
                .context("no node runs the stream job"),
            Target::Follower => {
                let leader = c.leader();
                live.into_iter()
                    .find(|id| Some(*id) != leader)
                    .context("no follower to target")
            }
            Target::Random => {
                if live.is_empty() {
                    bail!("no live node to target");
                }
                let rng = self.rng.get_or_insert_with(fastrand::Rng::new);
                Ok(live[rng.usize(0..live.len())])
            }
        }
    }

    /// Do `fault` now; `t0` is the history's time zero.
    pub fn inject(&mut self, c: &mut Cluster, fault: Fault, t0: Instant) -> Result<()> {
        let at_ms = t0.elapsed().as_millis() as u64;
        let (nodes, note) = self
            .apply(c, &fault)
            .with_context(|| format!("injecting {fault:?}"))?;
        eprintln!("chaos: {at_ms:>6} ms  {fault:?} -> nodes {nodes:?} {note}");
        self.log.push(Injected {
            at_ms,
            fault,
            nodes,
            note,
        });
        Ok(())
    }

    fn apply(&mut self, c: &mut Cluster, fault: &Fault) -> Result<(Vec<u64>, String)> {
        match fault {
            Fault::Kill { target } => {
                let id = self.resolve(c, *target)?;
                c.node_mut(id)?.kill9();
                self.killed.insert(id);
                Ok((vec![id], String::new()))
            }
            Fault::Restart { target } => {
                let id = match target {
                    Target::Node(id) => *id,
                    _ => *self.killed.iter().next().context("no killed node")?,
                };
                c.spawn(id)?;
                self.killed.remove(&id);
                Ok((vec![id], String::new()))
            }
            Fault::Pause { target } => {
                let id = self.resolve(c, *target)?;
                let n = c.node_mut(id)?;
                n.signal(Signal::SIGSTOP)?;
                n.paused = true;
                Ok((vec![id], String::new()))
            }
            Fault::Isolate { target } => {
                let id = self.resolve(c, *target)?;
                let rest: Vec<u64> = c.ids().into_iter().filter(|x| *x != id).collect();
                partition(c, &[id], &rest)?;
                Ok((vec![id], String::new()))
            }
            Fault::Split { minority } => {
                let ids = c.ids();
                let (a, b): (Vec<u64>, Vec<u64>) = ids.iter().partition(|id| **id <= *minority);
                partition(c, &a, &b)?;
                Ok((a, format!("| {b:?}")))
            }
            Fault::OneWay { from, to } => {
                let (f, t) = (self.resolve(c, *from)?, self.resolve(c, *to)?);
                if f == t {
                    bail!("one-way partition from node {f} to itself");
                }
                block(c, f, &[t], false)?;
                Ok((vec![f, t], format!("{f} -> {t} lost")))
            }
            Fault::Loss { percent } => {
                for id in c.ids() {
                    match c.kind() {
                        Kind::Netns | Kind::Docker => c.net.netns_loss(id, *percent)?,
                        Kind::Local => rpc_faults(c, id, json!({ "loss_percent": percent }))?,
                    }
                }
                Ok((c.ids(), String::new()))
            }
            Fault::Delay { ms } => {
                for id in c.ids() {
                    rpc_faults(c, id, json!({ "delay_ms": ms }))?;
                }
                Ok((
                    c.ids(),
                    "through the RPC fault filter (no sch_netem here)".into(),
                ))
            }
            Fault::PanicActor { target, actor } => {
                let id = self.resolve(c, *target)?;
                let path = format!("/v1/debug/fail/{actor}");
                expect(c, id, "POST", &path, &json!({}), 202)?;
                Ok((vec![id], actor.clone()))
            }
            Fault::KillTaskProcesses { target, for_ms } => {
                let id = self.resolve(c, *target)?;
                let pid = c.node(id)?.pid().context("node not running")?;
                let kills = kill_children(pid, Duration::from_millis(*for_ms));
                Ok((vec![id], format!("{kills} task processes killed")))
            }
            Fault::FillDisk { target } => {
                let id = self.resolve(c, *target)?;
                let n = c.node(id)?;
                if !n.tmpfs {
                    bail!("node {id} has no tmpfs data dir to fill");
                }
                let ballast = n.data_dir().join("ballast");
                // dd stops with "No space left on device"; that is the point.
                let _ = Command::new("dd")
                    .args(["if=/dev/zero", "bs=64k"])
                    .arg(format!("of={}", ballast.display()))
                    .output();
                self.filled.insert(id);
                Ok((vec![id], "tmpfs full".into()))
            }
            Fault::ClockJump { target, seconds } => {
                if c.settings.faketime.is_none() {
                    bail!(
                        "nodes do not run under libfaketime ({})",
                        crate::cluster::LIBFAKETIME
                    );
                }
                let id = self.resolve(c, *target)?;
                c.node(id)?.set_clock(*seconds)?;
                self.jumped.insert(id);
                Ok((vec![id], format!("clock {seconds:+} s")))
            }
            Fault::RestartAll => {
                let ids = c.ids();
                for id in &ids {
                    if !self.removed.contains(id) {
                        c.node_mut(*id)?.kill9();
                    }
                }
                for id in &ids {
                    if !self.removed.contains(id) {
                        c.spawn(*id)?;
                        self.killed.remove(id);
                    }
                }
                Ok((ids, String::new()))
            }
            Fault::Membership { id, remove } => {
                let addrs = c.spawn_learner(*id)?;
                let via = c.leader().context("no leader to add a learner")?;
                let learner = json!({ "id": id, "rpc": addrs.rpc, "api": addrs.api });
                expect(c, via, "POST", "/v1/cluster/learners", &learner, 200)?;
                // The leader refuses to promote a learner that has not caught up yet (409):
                // under load that takes a moment; ask again until it agrees or 20 s pass.
                let promote = format!("/v1/cluster/members/{id}/promote");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                loop {
                    let a = c
                        .send(via, "POST", &promote, &json!({}))
                        .map_err(|e| anyhow::anyhow!("POST {promote} on node {via}: {e}"))?;
                    match a.status {
                        200 => break,
                        409 if std::time::Instant::now() < deadline
                            && a.body.to_string().contains("has not caught up") =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(200))
                        }
                        s => bail!("POST {promote} on node {via}: {s} {}", a.body),
                    }
                }
                c.node_mut(*id)?.voter = true;
                let gone = self.resolve(c, *remove)?;
                let leader = c.leader().context("no leader to remove a member")?;
                let path = format!("/v1/cluster/members/{gone}");
                expect(c, leader, "DELETE", &path, &json!({}), 200)?;
                self.removed.insert(gone);
                c.node_mut(gone)?.kill9();
                Ok((vec![*id, gone], format!("added {id}, removed {gone}")))
            }
            Fault::Heal => self.heal(c),
        }
    }

    fn heal(&mut self, c: &mut Cluster) -> Result<(Vec<u64>, String)> {
        let mut notes = Vec::new();
        for id in c.ids() {
            if self.removed.contains(&id) {
                continue;
            }
            let n = c.node_mut(id)?;
            if n.paused {
                n.signal(Signal::SIGCONT)?;
                n.paused = false;
                notes.push(format!("continued {id}"));
            }
        }
        for id in std::mem::take(&mut self.jumped) {
            c.node(id)?.set_clock(0)?;
            notes.push(format!("clock of {id} back"));
        }
        let filled = self.filled.clone();
        for id in std::mem::take(&mut self.filled) {
            let _ = std::fs::remove_file(c.node(id)?.data_dir().join("ballast"));
            notes.push(format!("freed disk on {id}"));
        }
        for id in c.ids() {
            if self.removed.contains(&id) {
                continue;
            }
            if matches!(c.kind(), Kind::Netns | Kind::Docker) {
                c.net.netns_clear(id)?;
            }
            if c.node_mut(id)?.alive() {
                // A node that cannot be reached now is restarted below or holds no faults.
                let _ = rpc_faults(c, id, json!({}));
            }
        }
        // Restart what was killed, and what died by itself (a full disk may stop a node).
        for id in c.ids() {
            if self.removed.contains(&id) {
                continue;
            }
            let n = c.node_mut(id)?;
            if !n.alive() {
                let how = n.exit_status().unwrap_or_else(|| "killed".into());
                if !self.killed.contains(&id) {
                    if filled.contains(&id) {
                        // Stopping on a full disk is allowed (fail-stop); losing data is not.
                        notes.push(format!("node {id} stopped on the full disk ({how})"));
                    } else {
                        self.unexpected
                            .push(format!("node {id} exited by itself: {how}"));
                    }
                }
                c.spawn(id)?;
                notes.push(format!("restarted {id} ({how})"));
            }
        }
        self.killed.clear();
        Ok((c.ids(), notes.join(", ")))
    }

    /// Nodes that exited without a fault killing them.
    pub fn unexpected_exits(&self) -> &[String] {
        &self.unexpected
    }

    /// Nodes that were removed from the membership (not expected to run).
    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }
}

/// Cut every node of `a` off from every node of `b`, both ways.
fn partition(c: &mut Cluster, a: &[u64], b: &[u64]) -> Result<()> {
    for x in a {
        block(c, *x, b, true)?;
    }
    for y in b {
        block(c, *y, a, true)?;
    }
    Ok(())
}

/// Lose what `from` sends to each of `to` (and, with `both`, what it gets from them).
fn block(c: &mut Cluster, from: u64, to: &[u64], both: bool) -> Result<()> {
    match c.kind() {
        Kind::Netns | Kind::Docker => {
            for t in to {
                c.net.netns_block(from, *t, both)?;
            }
            Ok(())
        }
        Kind::Local => {
            // The RPC filter works on what a node sends; `both` is done by the caller
            // blocking the other side too. Add to what is already dropped.
            let current = c
                .get(from, "/v1/debug/net")
                .map_err(anyhow::Error::msg)?
                .body;
            let mut drop: BTreeSet<String> = current["drop_to"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for t in to {
                drop.insert(c.node(*t)?.addrs.rpc.clone());
            }
            let mut body = current.clone();
            body["drop_to"] = json!(drop);
            rpc_faults(c, from, body)
        }
    }
}

/// Send a request to node `id` and require status `want`.
fn expect(
    c: &Cluster,
    id: u64,
    method: &str,
    path: &str,
    body: &serde_json::Value,
    want: u16,
) -> Result<()> {
    let a = c
        .send(id, method, path, body)
        .map_err(|e| anyhow::anyhow!("{method} {path} on node {id}: {e}"))?;
    if a.status != want {
        bail!("{method} {path} on node {id}: {} {}", a.status, a.body);
    }
    Ok(())
}

/// Replace node `id`'s RPC faults.
fn rpc_faults(c: &Cluster, id: u64, body: serde_json::Value) -> Result<()> {
    let a = c
        .send(id, "PUT", "/v1/debug/net", &body)
        .map_err(|e| anyhow::anyhow!("node {id}: {e}"))?;
    if a.status != 200 {
        bail!("node {id} refused RPC faults: {} {}", a.status, a.body);
    }
    Ok(())
}

/// kill -9 every child of `pid` (a task process: `edgerun kernel-exec`, an exec shim or a
/// container helper) as it appears, for `dur`; how many were killed.
fn kill_children(pid: u32, dur: Duration) -> usize {
    let end = Instant::now() + dur;
    let mut killed = BTreeSet::new();
    while Instant::now() < end {
        let out = Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output();
        if let Ok(out) = out {
            for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(p) = child.parse::<i32>() {
                    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL)
                        .is_ok()
                    {
                        killed.insert(p);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.len()
}
