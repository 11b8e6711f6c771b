//! NodeSupervisor: the root of the node's actor tree.
//!
//! Starts its children in order (StateShard, Monitor, Scheduler, Worker, then the Api) and
//! restarts any that fails, one-for-one, after an exponential backoff. Each child has a
//! restart budget (`supervisor.max_restarts` within `supervisor.window_secs`, Erlang's max
//! restart intensity): one failure past it shuts the whole node down, and [`NodeExit`] says
//! which actor kept failing and why, so the process exits non-zero with that message.
//!
//! ractor has no built-in restart strategy (its default handler stops the supervisor), so
//! the policy lives here. Completed restarts are counted in `edgerun_actor_restarts_total{actor}`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: the restart window follows `tokio::time::pause` in tests.
use tokio::time::Instant;

use edgerun_config::SupervisorConfig;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;

use crate::child::ChildSpec;
use crate::metrics_names as m;

/// Why the supervisor stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeExit {
    /// Asked to stop (signal, shutdown call).
    Stopped,
    /// A child failed more often than its budget allows.
    BudgetExceeded {
        actor: &'static str,
        failures: usize,
        window_secs: u64,
        last_error: String,
    },
    /// A child could not be started at all.
    StartFailed { actor: &'static str, error: String },
}

impl std::fmt::Display for NodeExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeExit::Stopped => write!(f, "stopped"),
            NodeExit::BudgetExceeded { actor, failures, window_secs, last_error } => write!(
                f,
                "actor {actor} failed {failures} times within {window_secs} s, more than the restart budget allows; shutting the node down (last error: {last_error})"
            ),
            NodeExit::StartFailed { actor, error } => write!(f, "actor {actor} could not be started: {error}"),
        }
    }
}

pub enum SupervisorMsg {
    /// Start child `index` again (sent after its backoff).
    Restart(usize),
    /// Fault injection: make the named child fail.
    InjectFailure {
        actor: String,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Stop every child, then the supervisor.
    Shutdown,
}

pub struct NodeSupervisor;

pub struct SupervisorArgs {
    pub children: Vec<Arc<dyn ChildSpec>>,
    pub policy: SupervisorConfig,
    pub exit: watch::Sender<Option<NodeExit>>,
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
    failures: VecDeque<Instant>,
}

pub struct SupervisorState {
    children: Vec<Child>,
    policy: SupervisorConfig,
    exit: watch::Sender<Option<NodeExit>>,
    stopping: bool,
}

impl SupervisorState {
    fn find(&self, cell: &ActorCell) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|x| x.get_id() == cell.get_id()))
    }

    /// Record a failure of child `i`; restart it after a backoff or stop the node.
    fn on_failure(&mut self, myself: &ActorRef<SupervisorMsg>, i: usize, error: String) {
        let window = Duration::from_secs(self.policy.window_secs);
        let max = self.policy.max_restarts as usize;
        let (initial, cap) = (self.policy.backoff_initial_ms, self.policy.backoff_max_ms);
        let Some(child) = self.children.get_mut(i) else {
            return;
        };
        child.cell = None;
        let now = Instant::now();
        child.failures.push_back(now);
        while child
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            child.failures.pop_front();
        }
        let name = child.spec.name();
        let failures = child.failures.len();
        if failures > max {
            let exit = NodeExit::BudgetExceeded {
                actor: name,
                failures,
                window_secs: self.policy.window_secs,
                last_error: error,
            };
            tracing::error!("{exit}");
            self.exit.send_replace(Some(exit.clone()));
            self.stopping = true;
            myself.stop(Some(exit.to_string()));
            return;
        }
        let delay = initial
            .saturating_mul(1u64 << (failures.saturating_sub(1)).min(20))
            .min(cap);
        tracing::warn!(actor = name, failures, delay_ms = delay, error = %error, "actor failed; restarting after backoff");
        myself.send_after(Duration::from_millis(delay), move || {
            SupervisorMsg::Restart(i)
        });
    }

    async fn stop_children(&mut self) {
        for c in self.children.iter_mut().rev() {
            if let Some(cell) = c.cell.take() {
                let _ = cell
                    .stop_and_wait(Some("node shutdown".into()), Some(Duration::from_secs(10)))
                    .await;
            }
        }
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            children: Vec::new(),
            policy: args.policy,
            exit: args.exit,
            stopping: false,
        };
        for spec in args.children {
            tracing::info!(actor = spec.name(), "starting actor");
            // Exported at 0 from the start, so a rate over it works before the first restart.
            metrics::counter!(m::ACTOR_RESTARTS, "actor" => spec.name()).increment(0);
            match spec.spawn(myself.get_cell()).await {
                Ok(cell) => state.children.push(Child {
                    spec,
                    cell: Some(cell),
                    failures: VecDeque::new(),
                }),
                Err(e) => {
                    let exit = NodeExit::StartFailed {
                        actor: spec.name(),
                        error: e.to_string(),
                    };
                    state.exit.send_replace(Some(exit.clone()));
                    state.stop_children().await;
                    return Err(exit.to_string().into());
                }
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping = true;
        state.stop_children().await;
        state.exit.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(NodeExit::Stopped);
                true
            } else {
                false
            }
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(i) => {
                if state.stopping {
                    return Ok(());
                }
                let Some(spec) = state.children.get(i).map(|c| c.spec.clone()) else {
                    return Ok(());
                };
                match spec.spawn(myself.get_cell()).await {
                    Ok(cell) => {
                        tracing::info!(actor = spec.name(), "actor restarted");
                        metrics::counter!(m::ACTOR_RESTARTS, "actor" => spec.name()).increment(1);
                        if let Some(c) = state.children.get_mut(i) {
                            c.cell = Some(cell);
                        }
                    }
                    Err(e) => state.on_failure(&myself, i, format!("restart failed: {e}")),
                }
            }
            SupervisorMsg::InjectFailure { actor, reply } => {
                let res = match state.children.iter().find(|c| c.spec.name() == actor) {
                    None => Err(format!(
                        "no actor named {actor:?}; actors: {}",
                        state
                            .children
                            .iter()
                            .map(|c| c.spec.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(c) if c.cell.is_none() => Err(format!("actor {actor} is restarting")),
                    Some(c) => {
                        if c.spec.inject_failure() {
                            Ok(())
                        } else {
                            Err(format!("actor {actor} is restarting"))
                        }
                    }
                };
                let _ = reply.send(res);
            }
            SupervisorMsg::Shutdown => {
                state.stopping = true;
                state.stop_children().await;
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.stopping {
            return Ok(());
        }
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(i) = state.find(&cell) {
                    state.on_failure(&myself, i, err.to_string());
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(i) = state.find(&cell) {
                    let why = reason.unwrap_or_else(|| "stopped without a reason".into());
                    state.on_failure(&myself, i, format!("stopped unexpectedly: {why}"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
