//! Monitor: announces this node to the cluster and exports gauges.
//!
//! At start it proposes `RegisterNode` (tier, labels, addresses, slots), retrying until a
//! leader takes it. Every tick it sets gauges from the replicated state and Raft metrics.
//! Every `cluster.heartbeat_ms` it reports to the leader (over cluster RPC, or straight to the
//! local Scheduler when this node leads).
//!
//! Failure policy: registration and gauge errors are logged; the actor only dies on
//! injected failures.

use std::time::Duration;

use edgerun_model::{NodeInfo, TaskStatus};
use edgerun_raft::{Heartbeat, RaftNode};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::child::Slot;
use crate::metrics_names as m;
use crate::scheduler::SchedulerMsg;
use crate::{now_ms, InjectedFailure, Proposer};

const TICK: Duration = Duration::from_secs(1);

pub enum MonitorMsg {
    Tick,
    Beat,
    Fail,
}

pub struct Monitor;

pub struct MonitorArgs {
    pub node: RaftNode,
    pub proposer: Proposer,
    pub info: NodeInfo,
    /// The local Scheduler, which takes this node's heartbeat when it leads.
    pub scheduler: Slot<SchedulerMsg>,
    pub heartbeat: Duration,
    /// Alert rules and what fires (shared with the API).
    pub alerts: std::sync::Arc<crate::alerts::Alerts>,
    /// This node's data directory (for the disk rule).
    pub data_dir: std::path::PathBuf,
    /// Scheduled backups of the state (`[backup]`), if any.
    pub backups: Option<BackupPlan>,
}

/// When and where this node writes backups of the replicated state.
#[derive(Clone)]
pub struct BackupPlan {
    pub schedule: cron::Schedule,
    /// The schedule's time zone.
    pub tz: chrono_tz::Tz,
    pub dir: std::path::PathBuf,
    /// Newest backups kept.
    pub keep: usize,
}

impl BackupPlan {
    /// The next time after `after_ms` (ms since the epoch).
    fn next_after(&self, after_ms: u64) -> Option<u64> {
        crate::scheduler::cron::next_slot(&self.schedule, self.tz, after_ms)
    }
}

pub struct MonitorState {
    node: RaftNode,
    alerts: std::sync::Arc<crate::alerts::Alerts>,
    data_dir: std::path::PathBuf,
    /// Pending counts by priority last exported.
    pending_seen: std::collections::BTreeMap<i32, u64>,
    info: NodeInfo,
    scheduler: Slot<SchedulerMsg>,
    heartbeat: Duration,
    ticker: tokio::task::JoinHandle<()>,
    beater: tokio::task::JoinHandle<()>,
    register: tokio::task::JoinHandle<()>,
    /// The heartbeat in flight, if any (one at a time).
    sending: Option<tokio::task::JoinHandle<()>>,
    /// When free memory was last handed back to the system.
    last_trim: std::time::Instant,
    trimming: Option<tokio::task::JoinHandle<()>>,
    backups: Option<BackupPlan>,
    /// When the next scheduled backup is due (ms since the epoch).
    next_backup: Option<u64>,
    /// The backup being written, if any (one at a time).
    backing_up: Option<tokio::task::JoinHandle<()>>,
}

/// How often the Monitor hands the allocator's free pages back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

impl MonitorState {
    /// Every [`TRIM_EVERY`], on a blocking thread: freed memory goes back to the system, so
    /// resident memory follows what the node holds instead of its highest peak.
    fn maybe_trim(&mut self) {
        if self.last_trim.elapsed() < TRIM_EVERY
            || self.trimming.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last_trim = std::time::Instant::now();
        self.trimming = Some(tokio::task::spawn_blocking(|| {
            let started = std::time::Instant::now();
            let released = edgerun_cpp::release_free_memory();
            tracing::trace!(
                released,
                ms = started.elapsed().as_millis() as u64,
                "free memory handed back"
            );
        }));
    }

    /// Start a scheduled backup when one is due (and none is being written).
    fn maybe_back_up(&mut self) {
        let Some(plan) = self.backups.clone() else {
            return;
        };
        let now = now_ms();
        let Some(due) = self.next_backup else {
            self.next_backup = plan.next_after(now);
            return;
        };
        if now < due || self.backing_up.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.next_backup = plan.next_after(now);
        let (view, id) = (self.node.view.clone(), self.node.id);
        self.backing_up = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let res = edgerun_raft::backup::take(&view, id, now_ms()).and_then(|(info, bytes)| {
                edgerun_raft::backup::write_rotated(&plan.dir, &info, &bytes, plan.keep)
                    .map(|p| (info, p))
            });
            match res {
                Ok((info, path)) => tracing::info!(
                    file = %path.display(),
                    bytes = info.bytes,
                    tasks = info.tasks,
                    last_index = info.last_index,
                    ms = started.elapsed().as_millis() as u64,
                    "scheduled backup written"
                ),
                Err(e) => {
                    tracing::error!(dir = %plan.dir.display(), error = %e, "scheduled backup failed")
                }
            }
        }));
    }
}

impl MonitorState {
    fn beat(&mut self) {
        if self.sending.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = self.node.id;
        let hb = Heartbeat {
            node: me,
            running: self.node.view.read(|s| s.active_count(me)) as u32,
            slots: self.info.slots,
            applied: *self.node.view.applied().borrow(),
        };
        match self.node.leader() {
            Some((l, _)) if l == me => {
                if let Some(s) = self.scheduler.get() {
                    let _ = s.cast(SchedulerMsg::Heartbeat(hb));
                }
            }
            Some((_, Some(member))) => {
                let peers = self.node.peers.clone();
                let timeout = self.heartbeat.max(Duration::from_millis(200));
                self.sending = Some(tokio::spawn(async move {
                    match peers.heartbeat(&member.rpc, hb, timeout).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "the leader refused a heartbeat"),
                        Err(e) => tracing::debug!(error = %e, "heartbeat to the leader failed"),
                    }
                }));
            }
            _ => {}
        }
    }

    fn stop_helpers(&mut self) {
        self.ticker.abort();
        self.beater.abort();
        self.register.abort();
        if let Some(h) = self.sending.take() {
            h.abort();
        }
    }
}

impl Actor for Monitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = MonitorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        args: MonitorArgs,
    ) -> Result<MonitorState, ActorProcessingErr> {
        let proposer = args.proposer.clone();
        let info = args.info.clone();
        let view = args.node.view.clone();
        let register = tokio::spawn(async move {
            let mut delay = Duration::from_millis(20);
            loop {
                // Skip the write when the state already has this exact registration.
                let known = view.read(|s| {
                    s.nodes.get(&info.id).is_some_and(|n| {
                        n.up && n.api == info.api
                            && n.rpc == info.rpc
                            && n.slots == info.slots
                            && n.cpu_millis == info.cpu_millis
                            && n.memory_mb == info.memory_mb
                            && n.tier == info.tier
                            && n.labels == info.labels
                    })
                });
                if known {
                    return;
                }
                match proposer.register_node(info.clone()).await {
                    Ok(_) => {
                        tracing::info!(node = info.id, slots = info.slots, "node registered");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "registering the node; will retry"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
        // The gauges from the first scrape on, not a tick later.
        let _ = myself.cast(MonitorMsg::Tick);
        let ticker = myself.send_interval(TICK, || MonitorMsg::Tick);
        let beater = myself.send_interval(args.heartbeat, || MonitorMsg::Beat);
        Ok(MonitorState {
            node: args.node,
            info: args.info,
            scheduler: args.scheduler,
            heartbeat: args.heartbeat,
            pending_seen: Default::default(),
            alerts: args.alerts,
            data_dir: args.data_dir,
            ticker,
            beater,
            register,
            sending: None,
            last_trim: std::time::Instant::now(),
            trimming: None,
            backups: args.backups,
            next_backup: None,
            backing_up: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MonitorMsg>,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_helpers();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Tick => {
                state.maybe_back_up();
                state.maybe_trim();
                let counts: Vec<(TaskStatus, u64)> = state.node.view.read(|s| {
                    TaskStatus::ALL
                        .iter()
                        .map(|st| (*st, s.count(*st)))
                        .collect()
                });
                for (st, n) in counts {
                    metrics::gauge!(m::TASKS_BY_STATUS, "status" => st.as_str()).set(n as f64);
                }
                let rm = state.node.raft.metrics().borrow().clone();
                metrics::gauge!(m::RAFT_TERM).set(rm.current_term as f64);
                metrics::gauge!(m::RAFT_IS_LEADER).set(
                    if rm.current_leader == Some(state.node.id) {
                        1.0
                    } else {
                        0.0
                    },
                );
                let applied = rm.last_applied.map_or(0, |l| l.index);
                metrics::gauge!(m::RAFT_LAST_APPLIED).set(applied as f64);
                metrics::gauge!(m::RAFT_COMMIT_INDEX).set(applied as f64);
                metrics::gauge!(m::RAFT_LEADER).set(rm.current_leader.unwrap_or(0) as f64);
                if let Some(rep) = &rm.replication {
                    let last = rm.last_log_index.unwrap_or(0);
                    for (peer, matched) in rep.iter() {
                        if *peer == state.node.id {
                            continue;
                        }
                        let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                        metrics::gauge!(m::RAFT_REPLICATION_LAG, "peer" => peer.to_string())
                            .set(lag as f64);
                    }
                }
                let (nodes, pending) = state.node.view.read(|s| {
                    let nodes: Vec<(u64, bool)> = s.nodes.values().map(|n| (n.id, n.up)).collect();
                    (nodes, s.pending_counts().clone())
                });
                for (id, up) in nodes {
                    metrics::gauge!(m::NODE_UP, "node" => id.to_string()).set(if up {
                        1.0
                    } else {
                        0.0
                    });
                }
                // Priorities seen before keep their series (at 0) when none is pending.
                for (prio, n) in state.pending_seen.iter_mut() {
                    *n = pending.get(prio).copied().unwrap_or(0);
                }
                for (prio, n) in pending {
                    state.pending_seen.insert(prio, n);
                }
                for (prio, n) in &state.pending_seen {
                    metrics::gauge!(m::SCHEDULER_PENDING, "priority" => prio.to_string())
                        .set(*n as f64);
                }
                let disk = if state.alerts.rules.disk_percent > 0.0 {
                    crate::alerts::disk_used_percent(&state.data_dir)
                } else {
                    None
                };
                let now = now_ms();
                let me = state.node.id;
                let found = state
                    .node
                    .view
                    .read(|s| crate::alerts::evaluate(&state.alerts.rules, s, now, me, disk));
                let changes = state.alerts.update(found, me, now);
                state.alerts.report(changes, rm.current_leader == Some(me));
            }
            MonitorMsg::Beat => state.beat(),
            MonitorMsg::Fail => {
                // post_stop does not run for a failed actor: stop its helpers here.
                state.stop_helpers();
                return Err(Box::new(InjectedFailure));
            }
        }
        Ok(())
    }
}
