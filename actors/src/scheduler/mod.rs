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
//! Placement: see [`plan`] (priorities with aging, constraints, resources, binpack/spread,
//! affinities, preemption). All of one tick's assignments (and evictions) go into one Raft
//! entry.
//!
//! Periodic jobs: see [`cron`]. Retention: every `retention.interval_ms` the leader collects
//! finished tasks beyond `retention.max_finished` or older than `retention.max_age_secs`.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerun_model::{JobId, NodeId, TaskId};
use edgerun_raft::{Heartbeat, RaftNode, StateEvent};

pub mod cron;
pub mod plan;

pub use plan::{pending_reason, plan, simulated_cluster, Plan, Policy};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::metrics_names as m;
use crate::{now_ms, Proposer};

const TICK: Duration = Duration::from_millis(100);

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
    /// A Preempt proposal finished.
    Evicted(Vec<TaskId>),
    /// A Fire proposal for this job finished.
    Fired(JobId),
    /// A Collect proposal finished.
    Collected,
    /// A plan held back by the throttle is due.
    Replan,
    /// A PlaceStream proposal finished.
    StreamPlaced(edgerun_model::StreamId),
}

/// A plan that placed nothing and took this long or more holds the next one back for
/// `PLAN_QUIET_FACTOR` times as long: a backlog no node can take (tasks for an edge site that
/// is offline) costs at most a tenth of a core instead of a full scan per applied write, and
/// a task that becomes placeable meanwhile waits at most that long (`edgerun bench submit`,
/// 16 clients: 2.3k → 2.9k single submissions/s against a factor of 4).
const PLAN_QUIET_MIN: Duration = Duration::from_millis(1);
const PLAN_QUIET_FACTOR: u32 = 10;

/// `[retention]`, in the units the scheduler uses.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_finished: u64,
    pub max_age_ms: u64,
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_finished: 100_000,
            max_age_ms: 7 * 86_400_000,
            interval: Duration::from_secs(5),
        }
    }
}

/// Most tasks one Collect command removes.
const COLLECT_BATCH: usize = 10_000;

pub struct Scheduler;

pub struct SchedulerArgs {
    pub node: RaftNode,
    pub proposer: Proposer,
    /// A node silent this long is marked down.
    pub lease: Duration,
    pub policy: Policy,
    pub retention: Retention,
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
    policy: Policy,
    retention: Retention,
    /// Attempts in a Preempt that has not been applied yet.
    evicting: HashSet<TaskId>,
    /// Jobs with a Fire in flight.
    firing: HashSet<JobId>,
    /// Each job's schedule, parsed once (a job's spec never changes), or why it cannot be.
    schedules: HashMap<JobId, Option<(::cron::Schedule, chrono_tz::Tz)>>,
    /// When retention last ran, and whether its Collect is in flight.
    last_collect: Option<Instant>,
    collecting: bool,
    /// No plan before this (the last one placed nothing and was slow), and whether a Replan
    /// is already on its way.
    quiet_until: Option<Instant>,
    replan_due: bool,
    /// Stream jobs with a PlaceStream in flight.
    placing_streams: HashSet<edgerun_model::StreamId>,
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
            match proposer.mark_node(node, down).await {
                Ok(crate::NodeMarked {
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
        if let Some(until) = self.quiet_until.filter(|u| now < *u) {
            if !self.replan_due {
                self.replan_due = true;
                myself.send_after(until - now, || SchedulerMsg::Replan);
            }
            return;
        }
        let wall = now_ms();
        let backoff = &mut self.backoff;
        let started = Instant::now();
        let Plan {
            assignments: plan,
            preempt,
        } = self.node.view.read(|s| {
            plan(
                s,
                &self.inflight,
                &self.evicting,
                4096,
                wall,
                &self.policy,
                |t| match t.retry_delay_ms {
                    None | Some(0) => true,
                    Some(d) => {
                        let since = *backoff.entry((t.id, t.attempt)).or_insert(now);
                        now.duration_since(since) >= Duration::from_millis(d)
                    }
                },
            )
        });
        let took = started.elapsed();
        metrics::histogram!(m::SCHEDULER_PLAN_SECONDS).record(took.as_secs_f64());
        self.quiet_until = (plan.is_empty() && preempt.is_empty() && took >= PLAN_QUIET_MIN)
            .then(|| Instant::now() + took * PLAN_QUIET_FACTOR);
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
        if !preempt.is_empty() {
            let ids: Vec<TaskId> = preempt.iter().map(|v| v.task).collect();
            self.evicting.extend(ids.iter().copied());
            let proposer = self.proposer.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let n = preempt.len();
                match proposer.preempt(preempt).await {
                    Ok(v) => {
                        let done = v.iter().filter(|ok| **ok).count();
                        metrics::counter!(m::SCHEDULER_PREEMPTED).increment(done as u64);
                        tracing::info!(evicted = done, asked = n, "preempted lower-priority tasks");
                    }
                    Err(e) => tracing::warn!(error = %e, "preempting failed; will retry"),
                }
                let _ = me.cast(SchedulerMsg::Evicted(ids));
            });
        }
        if plan.is_empty() {
            return;
        }
        let ids: Vec<TaskId> = plan.iter().map(|a| a.task).collect();
        if tracing::enabled!(target: edgerun_model::TRACE_TARGET, tracing::Level::DEBUG) {
            self.node.view.read(|s| {
                for a in &plan {
                    if let Some(t) = s.task(a.task) {
                        tracing::debug!(
                            target: edgerun_model::TRACE_TARGET,
                            trace_id = %t.spec.trace_id,
                            task = a.task,
                            node = a.node,
                            attempt = a.attempt,
                            "placing"
                        );
                    }
                }
            });
        }
        self.inflight.extend(plan.iter().map(|a| (a.task, a.node)));
        let proposer = self.proposer.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let n = plan.len();
            match proposer.assign(plan).await {
                Ok(v) => {
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
                Err(e) => tracing::warn!(error = %e, "assigning tasks failed; will retry"),
            }
            let _ = me.cast(SchedulerMsg::Assigned(ids));
        });
    }
}

impl SchedulerState {
    /// Leader only: start the stream jobs that wait for a node (one placement in flight per
    /// job; checked every tick, so a job whose node was lost moves within a tick of the
    /// NodeDown).
    fn place_streams(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if !self.is_leader() {
            self.placing_streams.clear();
            return;
        }
        let placing = &self.placing_streams;
        let todo = self.node.view.read(|s| plan::place_streams(s, placing));
        for (id, node, epoch) in todo {
            self.placing_streams.insert(id);
            let proposer = self.proposer.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                match proposer.place_stream(id, node, epoch).await {
                    Ok(true) => tracing::info!(stream = id, node, epoch, "stream job placed"),
                    Ok(false) => tracing::debug!(stream = id, "stream placement was stale"),
                    Err(e) => {
                        tracing::warn!(stream = id, error = %e, "placing a stream job failed; will retry")
                    }
                }
                let _ = me.cast(SchedulerMsg::StreamPlaced(id));
            });
        }
    }

    /// Leader only: decide the due slots of every periodic job (one Fire in flight per job).
    fn fire_jobs(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if !self.is_leader() {
            self.firing.clear();
            return;
        }
        let now = now_ms();
        let firing = &self.firing;
        let schedules = &mut self.schedules;
        let due: Vec<(JobId, Vec<edgerun_model::SlotDecision>)> = self.node.view.read(|s| {
            schedules.retain(|id, _| s.jobs.contains_key(id));
            s.jobs
                .values()
                .filter(|j| !firing.contains(&j.id))
                .filter_map(|j| {
                    let parsed = schedules.entry(j.id).or_insert_with(|| {
                        cron::parse(&j.spec.schedule, &j.spec.timezone)
                            .map_err(|e| {
                                tracing::warn!(job = j.id, error = %e, "a job's schedule cannot be read; it never fires")
                            })
                            .ok()
                    });
                    let (schedule, tz) = parsed.as_ref()?;
                    let d = cron::decide_parsed(j, schedule, *tz, now, 1000);
                    (!d.is_empty()).then_some((j.id, d))
                })
                .collect()
        });
        for (job, slots) in due {
            self.firing.insert(job);
            let proposer = self.proposer.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                match proposer.fire(job, slots).await {
                    Ok(crate::Fired { tasks, refused }) => {
                        metrics::counter!(m::JOB_FIRES).increment(tasks.len() as u64);
                        if refused > 0 {
                            tracing::info!(
                                job,
                                refused,
                                "slots already decided by an earlier leader"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(job, error = %e, "firing a job failed; will retry"),
                }
                let _ = me.cast(SchedulerMsg::Fired(job));
            });
        }
    }

    /// Leader only, every `retention.interval`: collect finished tasks over the limits.
    fn collect(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if !self.is_leader() || self.collecting {
            return;
        }
        let r = self.retention;
        if r.max_finished == 0 && r.max_age_ms == 0 {
            return;
        }
        if self.last_collect.is_some_and(|t| t.elapsed() < r.interval) {
            return;
        }
        self.last_collect = Some(Instant::now());
        let now = now_ms();
        let ids: Vec<TaskId> = self.node.view.read(|s| {
            let over = if r.max_finished > 0 {
                (s.finished_count() as u64).saturating_sub(r.max_finished) as usize
            } else {
                0
            };
            s.finished()
                .enumerate()
                .filter(|(i, t)| {
                    *i < over
                        || (r.max_age_ms > 0
                            && t.finished_at_ms
                                .is_some_and(|f| f.saturating_add(r.max_age_ms) < now))
                })
                .map(|(_, t)| t.id)
                .take(COLLECT_BATCH)
                .collect()
        });
        if ids.is_empty() {
            return;
        }
        self.collecting = true;
        let proposer = self.proposer.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            match proposer.collect(ids).await {
                Ok(n) => {
                    metrics::counter!(m::TASKS_COLLECTED).increment(n);
                    tracing::debug!(collected = n, "retention collected finished tasks");
                }
                Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
            }
            let _ = me.cast(SchedulerMsg::Collected);
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
                | Ok(StateEvent::Streams)
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
            policy: args.policy,
            retention: args.retention,
            evicting: HashSet::new(),
            firing: HashSet::new(),
            schedules: HashMap::new(),
            last_collect: None,
            collecting: false,
            leader_since: None,
            last_seen: HashMap::new(),
            applied_samples: std::collections::VecDeque::new(),
            marking: HashSet::new(),
            backoff: HashMap::new(),
            quiet_until: None,
            replan_due: false,
            placing_streams: HashSet::new(),
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
            SchedulerMsg::Changed => {
                state.place(&myself);
                state.place_streams(&myself);
            }
            SchedulerMsg::Tick => {
                state.check_leases(&myself);
                state.place(&myself);
                state.place_streams(&myself);
                state.fire_jobs(&myself);
                state.collect(&myself);
            }
            SchedulerMsg::StreamPlaced(id) => {
                state.placing_streams.remove(&id);
            }
            SchedulerMsg::Evicted(ids) => {
                for id in ids {
                    state.evicting.remove(&id);
                }
                state.place(&myself);
            }
            SchedulerMsg::Fired(job) => {
                state.firing.remove(&job);
            }
            SchedulerMsg::Collected => state.collecting = false,
            SchedulerMsg::Replan => {
                state.replan_due = false;
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
        }
        Ok(())
    }
}
