//! Monitor: announces this node to the cluster and exports gauges.
//!
//! At start it proposes `RegisterNode` (tier, labels, addresses, slots), retrying until a
//! leader takes it. Every tick it sets gauges from the replicated state and Raft metrics.
//! Heartbeats to the leader come with the cluster issue.
//!
//! Failure policy: registration and gauge errors are logged; the actor only dies on
//! injected failures.

use std::time::Duration;

use edgerun_model::{Command, NodeInfo, TaskStatus};
use edgerun_raft::RaftNode;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::metrics_names as m;
use crate::{now_ms, InjectedFailure, Proposer};

const TICK: Duration = Duration::from_secs(1);

pub enum MonitorMsg {
    Tick,
    Fail,
}

pub struct Monitor;

pub struct MonitorArgs {
    pub node: RaftNode,
    pub proposer: Proposer,
    pub info: NodeInfo,
}

pub struct MonitorState {
    node: RaftNode,
    ticker: tokio::task::JoinHandle<()>,
    register: tokio::task::JoinHandle<()>,
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
                            && n.tier == info.tier
                            && n.labels == info.labels
                    })
                });
                if known {
                    return;
                }
                match proposer
                    .propose(Command::RegisterNode {
                        now_ms: now_ms(),
                        node: info.clone(),
                    })
                    .await
                {
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
        let ticker = myself.send_interval(TICK, || MonitorMsg::Tick);
        Ok(MonitorState {
            node: args.node,
            ticker,
            register,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MonitorMsg>,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.register.abort();
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
                metrics::gauge!(m::RAFT_LAST_APPLIED)
                    .set(rm.last_applied.map_or(0, |l| l.index) as f64);
            }
            MonitorMsg::Fail => {
                // post_stop does not run for a failed actor: stop its helpers here.
                state.ticker.abort();
                state.register.abort();
                return Err(Box::new(InjectedFailure));
            }
        }
        Ok(())
    }
}
