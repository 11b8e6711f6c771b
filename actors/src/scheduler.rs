//! Scheduler: decides which node runs each pending task.
//!
//! Holds no durable state. It reads pending tasks and node capacity from the replicated
//! state and proposes `Assign` commands, so a restarted Scheduler (or a new leader's)
//! resumes from what Raft has committed. It places only while this node is the leader.
//!
//! ```text
//!  StateEvent ──Changed──▶ Scheduler ──Propose(Assign)──▶ StateShard ──▶ raft
//!        Tick (backoff timers, leadership changes) ──┘
//! ```
//!
//! Placement (this slice): highest priority first, then oldest; the live node with the most
//! free slots that satisfies the task's constraints. The scheduler issue adds policies.
//!
//! Liveness (leader only): every node's Monitor sends a heartbeat; a node not heard from for
//! `cluster.lease_ms` (counted from when this node became leader, at the earliest) is marked
//! down with one Raft write, which puts its unfinished tasks back to pending. A heartbeat
//! from a down node marks it up again. A heartbeat counts only if the node has applied the log
//! up to where the leader was half a lease ago: a node that answers but does not keep up (a
//! follower that fell behind) would never see what it is given, so it misses its lease too.
//!
//! Retry backoff: a task back in pending after a failed attempt carries `retry_delay_ms`; the
//! leader's Scheduler holds it for that long on its own monotonic clock, counted from when it
//! first saw the task waiting (a new leader starts the count again). Wall clocks never decide
//! when a retry runs: they may be hours apart between nodes.
//!
//! Failure policy: proposal errors are logged and retried on the next tick; the actor only
//! dies on injected failures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerun_model::{Assignment, ClusterState, Command, NodeId, NodeInfo, Response, Task, TaskId};
use edgerun_raft::{Heartbeat, RaftNode, StateEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::metrics_names as m;
use crate::{now_ms, InjectedFailure, Proposer};

const TICK: Duration = Duration::from_millis(200);

pub enum SchedulerMsg {
    /// The replicated state changed.
    Changed,
    Tick,
    /// An Assign proposal finished; these tasks may be considered again.
    Assigned(Vec<TaskId>),
    /// A node's liveness report (this node is the leader).
    Heartbeat(Heartbeat),
    /// A NodeDown/NodeUp proposal for this node finished.
    Marked(NodeId),
    Fail,
}

pub struct Scheduler;

pub struct SchedulerArgs {
    pub node: RaftNode,
    pub proposer: Proposer,
    /// A node silent this long is marked down.
    pub lease: Duration,
}

pub struct SchedulerState {
    node: RaftNode,
    proposer: Proposer,
    /// Tasks in an Assign that has not been applied yet.
    inflight: HashMap<TaskId, NodeId>,
    dirty: Arc<AtomicBool>,
    forwarder: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    lease: Duration,
    /// When this node last became leader; every node gets a full lease from then on.
    leader_since: Option<Instant>,
    last_seen: HashMap<NodeId, Instant>,
    /// The leader's applied index, sampled every tick, for judging whether nodes keep up.
    applied_samples: std::collections::VecDeque<(Instant, u64)>,
    /// Nodes with a NodeDown/NodeUp proposal in flight.
    marking: HashSet<NodeId>,
    /// Tasks in their retry backoff (id, attempt that failed) → when this leader first saw
    /// them waiting.
    backoff: HashMap<(TaskId, u32), Instant>,
}

fn matches(node: &NodeInfo, task: &Task) -> bool {
    let c = &task.spec.constraints;
    c.tier.is_none_or(|t| t == node.tier)
        && c.labels.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// Pick placements for pending tasks. Pure, for tests: `inflight` tasks (proposed, not yet
/// applied) are skipped and hold a slot on the node they were proposed for; tasks for which
/// `ready` says no (still in their retry backoff) are skipped.
pub fn plan(
    state: &ClusterState,
    inflight: &HashMap<TaskId, NodeId>,
    limit: usize,
    mut ready: impl FnMut(&Task) -> bool,
) -> Vec<Assignment> {
    let mut free: BTreeMap<NodeId, i64> = state
        .nodes
        .values()
        .filter(|n| n.up)
        .map(|n| (n.id, n.slots as i64 - state.active_count(n.id) as i64))
        .collect();
    for (task, node) in inflight {
        // Once applied, the task is already counted in active_count.
        let still_pending = state
            .task(*task)
            .is_some_and(|t| t.status == edgerun_model::TaskStatus::Pending);
        if let (true, Some(f)) = (still_pending, free.get_mut(node)) {
            *f -= 1;
        }
    }
    let mut total: i64 = free.values().filter(|f| **f > 0).sum();
    let mut out = Vec::new();
    if total <= 0 {
        return out;
    }
    for t in state.pending() {
        if total <= 0 || out.len() >= limit {
            break;
        }
        if inflight.contains_key(&t.id) || !ready(t) {
            continue;
        }
        let best = free
            .iter()
            .filter(|(id, f)| **f > 0 && state.nodes.get(id).is_some_and(|n| matches(n, t)))
            .max_by_key(|(id, f)| (**f, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(node) = best {
            if let Some(f) = free.get_mut(&node) {
                *f -= 1;
            }
            total -= 1;
            out.push(Assignment {
                task: t.id,
                node,
                attempt: t.attempt + 1,
            });
        }
    }
    out
}

impl SchedulerState {
    fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    fn mark(&mut self, myself: &ActorRef<SchedulerMsg>, node: NodeId, down: bool) {
        if !self.marking.insert(node) {
            return;
        }
        let proposer = self.proposer.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let cmd = if down {
                Command::NodeDown {
                    now_ms: now_ms(),
                    node,
                }
            } else {
                Command::NodeUp {
                    now_ms: now_ms(),
                    node,
                }
            };
            match proposer.propose(cmd).await {
                Ok(Response::NodeMarked {
                    changed: true,
                    requeued,
                }) => {
                    if down {
                        tracing::warn!(
                            node,
                            requeued = requeued.len(),
                            "node missed its lease: marked down, its tasks go back to pending"
                        );
                    } else {
                        tracing::info!(node, "node is back: marked up");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(node, error = %e, "marking a node failed; will retry"),
            }
            let _ = me.cast(SchedulerMsg::Marked(node));
        });
    }

    /// Leader only: mark down the nodes whose heartbeats stopped for a lease.
    fn check_leases(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if !self.is_leader() {
            self.leader_since = None;
            self.last_seen.clear();
            self.applied_samples.clear();
            return;
        }
        let now = Instant::now();
        let since = *self.leader_since.get_or_insert(now);
        self.last_seen.insert(self.node.id, now);
        let applied = *self.node.view.applied().borrow();
        self.applied_samples.push_back((now, applied));
        // Keep one sample older than half a lease, drop the rest of the old ones.
        while self
            .applied_samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) > self.lease / 2)
        {
            self.applied_samples.pop_front();
        }
        let up: Vec<NodeId> = self
            .node
            .view
            .read(|s| s.nodes.values().filter(|n| n.up).map(|n| n.id).collect());
        for n in up {
            let last = self.last_seen.get(&n).copied().unwrap_or(since);
            if now.duration_since(last) > self.lease {
                self.mark(myself, n, true);
            }
        }
    }

    /// The leader's applied index half a lease ago (0 when it has not led that long).
    fn applied_half_lease_ago(&self) -> u64 {
        let Some(cutoff) = Instant::now().checked_sub(self.lease / 2) else {
            return 0;
        };
        self.applied_samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= cutoff)
            .map_or(0, |(_, i)| *i)
    }

    fn heartbeat(&mut self, myself: &ActorRef<SchedulerMsg>, hb: Heartbeat) {
        let needed = self.applied_half_lease_ago();
        if hb.applied < needed {
            tracing::debug!(
                node = hb.node,
                applied = hb.applied,
                needed,
                "heartbeat from a node that is not keeping up; not counted"
            );
            return;
        }
        self.last_seen.insert(hb.node, Instant::now());
        let down = self
            .node
            .view
            .read(|s| s.nodes.get(&hb.node).is_some_and(|n| !n.up));
        if down && self.is_leader() {
            self.mark(myself, hb.node, false);
        }
    }

    fn place(&mut self, myself: &ActorRef<SchedulerMsg>) {
        self.dirty.store(false, Ordering::SeqCst);
        if !self.is_leader() {
            self.inflight.clear();
            return;
        }
        let now = Instant::now();
        let backoff = &mut self.backoff;
        let plan = self.node.view.read(|s| {
            plan(s, &self.inflight, 4096, |t| match t.retry_delay_ms {
                None | Some(0) => true,
                Some(d) => {
                    let since = *backoff.entry((t.id, t.attempt)).or_insert(now);
                    now.duration_since(since) >= Duration::from_millis(d)
                }
            })
        });
        // Forget the waits of tasks that are no longer waiting.
        if !backoff.is_empty() {
            self.node.view.read(|s| {
                backoff.retain(|(id, attempt), _| {
                    s.task(*id).is_some_and(|t| {
                        t.attempt == *attempt
                            && t.status == edgerun_model::TaskStatus::Pending
                            && t.retry_delay_ms.is_some()
                    })
                })
            });
        }
        if plan.is_empty() {
            return;
        }
        let ids: Vec<TaskId> = plan.iter().map(|a| a.task).collect();
        self.inflight.extend(plan.iter().map(|a| (a.task, a.node)));
        let proposer = self.proposer.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let n = plan.len();
            match proposer
                .propose(Command::Assign {
                    now_ms: now_ms(),
                    assignments: plan,
                })
                .await
            {
                Ok(Response::Accepted(v)) => {
                    let placed = v.iter().filter(|ok| **ok).count();
                    metrics::counter!(m::SCHEDULER_PLACED).increment(placed as u64);
                    if placed < n {
                        tracing::debug!(
                            placed,
                            refused = n - placed,
                            "some assignments were stale"
                        );
                    }
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to Assign"),
                Err(e) => tracing::warn!(error = %e, "assigning tasks failed; will retry"),
            }
            let _ = me.cast(SchedulerMsg::Assigned(ids));
        });
    }
}

/// Forward state events to `actor` as one pending `Changed` at a time.
pub(crate) fn forward_changes<M: ractor::Message>(
    node: &RaftNode,
    actor: ActorRef<M>,
    dirty: Arc<AtomicBool>,
    msg: fn() -> M,
) -> tokio::task::JoinHandle<()> {
    let mut rx = node.view.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(StateEvent::Tasks(_))
                | Ok(StateEvent::Reset)
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if !dirty.swap(true, Ordering::SeqCst) && actor.cast(msg()).is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let dirty = Arc::new(AtomicBool::new(false));
        let forwarder = forward_changes(&args.node, myself.clone(), dirty.clone(), || {
            SchedulerMsg::Changed
        });
        let ticker = myself.send_interval(TICK, || SchedulerMsg::Tick);
        let _ = myself.cast(SchedulerMsg::Changed);
        Ok(SchedulerState {
            node: args.node,
            proposer: args.proposer,
            inflight: HashMap::new(),
            dirty,
            forwarder,
            ticker,
            lease: args.lease,
            leader_since: None,
            last_seen: HashMap::new(),
            applied_samples: std::collections::VecDeque::new(),
            marking: HashSet::new(),
            backoff: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Changed => state.place(&myself),
            SchedulerMsg::Tick => {
                state.check_leases(&myself);
                state.place(&myself);
            }
            SchedulerMsg::Heartbeat(hb) => state.heartbeat(&myself, hb),
            SchedulerMsg::Marked(node) => {
                state.marking.remove(&node);
            }
            SchedulerMsg::Assigned(ids) => {
                for id in ids {
                    state.inflight.remove(&id);
                }
                state.place(&myself);
            }
            SchedulerMsg::Fail => {
                // post_stop does not run for a failed actor: stop its helpers here.
                state.ticker.abort();
                state.forwarder.abort();
                return Err(Box::new(InjectedFailure));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgerun_model::{RaftRequest, TaskSpec, Tier};

    fn node(id: NodeId, slots: u32, tier: Tier) -> NodeInfo {
        NodeInfo {
            id,
            tier,
            labels: Default::default(),
            api: String::new(),
            rpc: String::new(),
            slots,
            registered_at_ms: 0,
            up: true,
            down_since_ms: None,
        }
    }

    #[test]
    fn plan_fills_free_slots_by_priority_and_respects_constraints() {
        let mut s = ClusterState::new();
        let mut ev = Vec::new();
        s.apply(
            &RaftRequest::new(Command::RegisterNode {
                now_ms: 0,
                node: node(1, 2, Tier::Cloud),
            }),
            &mut ev,
        );
        s.apply(
            &RaftRequest::new(Command::RegisterNode {
                now_ms: 0,
                node: node(2, 1, Tier::Edge),
            }),
            &mut ev,
        );
        let mut hi = TaskSpec::kernel("stats", "{}");
        hi.priority = 9;
        let mut edge = TaskSpec::kernel("stats", "{}");
        edge.constraints.tier = Some(Tier::Edge);
        let specs = vec![
            TaskSpec::kernel("stats", "{}"),
            hi,
            edge,
            TaskSpec::kernel("stats", "{}"),
            TaskSpec::kernel("stats", "{}"),
        ];
        s.apply(
            &RaftRequest::new(Command::Submit {
                now_ms: 0,
                tasks: specs,
            }),
            &mut ev,
        );
        let p = plan(&s, &HashMap::new(), 100, |_| true);
        // 3 slots in all; priority 9 (task 2) first; task 3 only fits the edge node
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].task, 2);
        assert!(p.iter().any(|a| a.task == 3 && a.node == 2));
        assert!(p.iter().all(|a| a.attempt == 1));
        let inflight: HashMap<TaskId, NodeId> = p.iter().map(|a| (a.task, a.node)).collect();
        assert_eq!(
            plan(&s, &inflight, 100, |_| true).len(),
            0,
            "in-flight tasks hold their slots"
        );
        assert_eq!(
            plan(&s, &HashMap::new(), 100, |t| t.id != 2)
                .first()
                .map(|a| a.task),
            Some(1),
            "a task in its backoff is passed over"
        );
    }
}
