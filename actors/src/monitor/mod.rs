//! Monitor: announces this node to the cluster and exports gauges.
//!
//! At start it proposes `RegisterNode` (tier, labels, addresses, slots), retrying until a
//! leader takes it. Every tick it sets gauges from the replicated state and Raft metrics.
//! Every `cluster.heartbeat_ms` it reports to the leader (over cluster RPC, or straight to the
//! local Scheduler when this node leads).
//!
//! Its periodic duties live beside it: scheduled backups of the state ([`backups`]) and
//! handing freed memory back to the system ([`trim`]).
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
use crate::{now_ms, Proposer};

mod backups;
mod trim;

pub use backups::BackupPlan;

const TICK: Duration = Duration::from_secs(1);

pub enum MonitorMsg {
    Tick,
    Beat,
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
    trim: trim::Trimmer,
    backups: Option<backups::ScheduledBackups>,
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
            trim: trim::Trimmer::new(),
            backups: args.backups.map(backups::ScheduledBackups::new),
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
                if let Some(b) = state.backups.as_mut() {
                    b.tick(&state.node.view, state.node.id);
                }
                state.trim.tick();
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
        }
        Ok(())
    }
}
