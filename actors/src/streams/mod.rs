//! Stream jobs on this node: the StreamManager starts a runner actor for each job the
//! replicated state places here, stops the ones it no longer does, and restarts a failed one
//! with backoff; a job whose runner fails more than `streams.max_restarts` times within
//! `streams.window_secs` is reported `failed` with the last error.
//!
//! ```text
//!  state (streams placed here) ──▶ StreamManager ──spawn_linked──▶ StreamRunner (one per job)
//!                                       ▲                              │ source ─▶ pipeline ─▶ sink
//!                                       └── ActorTerminated(reason) ◀──┘ checkpoints: StreamReport
//! ```
//!
//! - [`runner`]: the loop of one job (checkpoints, fencing, metrics).
//! - [`source`]: http, mqtt, redis and file sources, each reading into a bounded queue.
//! - [`sink`]: results, redis, mqtt, http and file sinks, and what each guarantees.
//! - [`ingress`]: records POSTed for a job that runs here, answered once checkpointed.
//! - [`kept`]: where a checkpoint's bytes live (in the log, or by hash on several nodes).

pub mod ingress;
pub mod kept;
pub mod runner;
pub mod sink;
pub mod source;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use edgerun_model::{StreamId, StreamJob, StreamReport};
use edgerun_raft::RaftNode;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

pub use ingress::Ingress;
pub use runner::RunnerCtx;

use crate::metrics_names as m;

const CHECK: Duration = Duration::from_millis(250);
/// How often this node sweeps the checkpoints it keeps by hash.
const SWEEP: Duration = Duration::from_secs(5);

/// How long a POST of records waits for the checkpoint that covers them.
pub const INGEST_WAIT: Duration = Duration::from_secs(30);

pub enum ManagerMsg {
    /// Compare the runners with the state.
    Check,
    /// Start the runner of this job again (after its backoff).
    Restart(StreamId, u64),
}

pub struct StreamManager;

pub struct ManagerArgs {
    pub node: RaftNode,
    pub ctx: RunnerCtx,
    pub max_restarts: u32,
    pub window: Duration,
}

struct Runner {
    epoch: u64,
    actor: Option<ActorRef<()>>,
    failures: VecDeque<Instant>,
    last_error: Option<String>,
}

pub struct ManagerState {
    args: ManagerArgs,
    runners: HashMap<StreamId, Runner>,
    /// (job, epoch) whose runner ended for good here (fenced, or failed past its budget):
    /// not started again at that epoch.
    done: HashSet<(StreamId, u64)>,
    last_changes: Option<u64>,
    ticker: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
    /// Set by the forwarder while a Check it sent is pending.
    dirty: std::sync::Arc<std::sync::atomic::AtomicBool>,
    last_sweep: Instant,
}

impl ManagerState {
    fn me(&self) -> edgerun_model::NodeId {
        self.args.node.id
    }

    /// Start and stop runners to match the state.
    async fn check(&mut self, myself: &ActorRef<ManagerMsg>, force: bool) {
        self.dirty.store(false, std::sync::atomic::Ordering::SeqCst);
        let me = self.me();
        let (changes, wanted): (u64, HashMap<StreamId, u64>) = self.args.node.view.read(|s| {
            (
                s.streams.changes(),
                s.streams.on(me).map(|j| (j.id, j.epoch)).collect(),
            )
        });
        if !force && self.last_changes == Some(changes) {
            return;
        }
        self.last_changes = Some(changes);
        self.done.retain(|(id, e)| wanted.get(id) == Some(e));
        // Runners of jobs that left this node (or moved to another epoch) stop.
        let stale: Vec<StreamId> = self
            .runners
            .iter()
            .filter(|(id, r)| wanted.get(id) != Some(&r.epoch))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(r) = self.runners.remove(&id) {
                if let Some(a) = r.actor {
                    tracing::info!(
                        stream = id,
                        epoch = r.epoch,
                        "stream job left this node; stopping its runner"
                    );
                    a.stop(None);
                }
            }
        }
        for (id, epoch) in wanted {
            if self.runners.contains_key(&id) || self.done.contains(&(id, epoch)) {
                continue;
            }
            self.runners.insert(
                id,
                Runner {
                    epoch,
                    actor: None,
                    failures: VecDeque::new(),
                    last_error: None,
                },
            );
            self.start(myself, id, epoch).await;
        }
    }

    async fn start(&mut self, myself: &ActorRef<ManagerMsg>, id: StreamId, epoch: u64) {
        let job: Option<StreamJob> = self
            .args
            .node
            .view
            .read(|s| s.streams.get(id).filter(|j| j.epoch == epoch).cloned());
        let Some(job) = job else {
            self.runners.remove(&id);
            return;
        };
        let spawned = Actor::spawn_linked(
            Some(format!("stream-{id}-{epoch}-{}", crate::now_ms())),
            StreamRunner,
            (job, self.args.ctx.clone()),
            myself.get_cell(),
        )
        .await;
        match spawned {
            Ok((a, _)) => {
                if let Some(r) = self.runners.get_mut(&id) {
                    r.actor = Some(a);
                }
            }
            Err(e) => {
                self.failed(myself, id, epoch, format!("the runner did not start: {e}"))
                    .await
            }
        }
    }

    /// A runner failed: restart it after a backoff, or give up past the budget.
    async fn failed(
        &mut self,
        myself: &ActorRef<ManagerMsg>,
        id: StreamId,
        epoch: u64,
        error: String,
    ) {
        metrics::counter!(m::STREAM_RESTARTS, "job" => id.to_string()).increment(1);
        let window = self.args.window;
        let max = self.args.max_restarts as usize;
        let Some(r) = self.runners.get_mut(&id).filter(|r| r.epoch == epoch) else {
            return;
        };
        r.actor = None;
        let now = Instant::now();
        r.failures.push_back(now);
        while r
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            r.failures.pop_front();
        }
        r.last_error = Some(error.clone());
        let n = r.failures.len();
        if n > max {
            tracing::error!(stream = id, failures = n, error = %error, "stream runner keeps failing; the job is failed");
            self.done.insert((id, epoch));
            self.runners.remove(&id);
            let report = StreamReport {
                id,
                node: self.me(),
                epoch,
                failed: true,
                error: Some(format!(
                    "the runner failed {n} times within {} s; last error: {error}",
                    window.as_secs()
                )),
                metrics: self
                    .args
                    .node
                    .view
                    .read(|s| s.streams.get(id).map(|j| j.metrics.clone()))
                    .unwrap_or_default(),
                checkpoint: None,
                results: Vec::new(),
            };
            let proposer = self.args.ctx.proposer.clone();
            tokio::spawn(async move {
                // Retried until it is taken or refused: a job must not stay "running" here.
                let mut wait = Duration::from_millis(200);
                loop {
                    match proposer.report_stream(report.clone()).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(stream = id, error = %e, "reporting a failed stream job; will retry");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
            return;
        }
        let backoff = Duration::from_millis((100u64 << (n - 1).min(7)).min(10_000));
        tracing::warn!(stream = id, failures = n, backoff_ms = backoff.as_millis() as u64, error = %error, "stream runner failed; restarting it from its last checkpoint");
        myself.send_after(backoff, move || ManagerMsg::Restart(id, epoch));
    }
}

impl Actor for StreamManager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        args: ManagerArgs,
    ) -> Result<ManagerState, ActorProcessingErr> {
        let ticker = myself.send_interval(CHECK, || ManagerMsg::Check);
        // Look at once when the state changes (a job placed here starts without waiting for
        // the next CHECK); the check is cheap when no stream job changed.
        let dirty = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarder =
            crate::scheduler::forward_changes(&args.node, myself.clone(), dirty.clone(), || {
                ManagerMsg::Check
            });
        Ok(ManagerState {
            args,
            runners: HashMap::new(),
            done: HashSet::new(),
            last_changes: None,
            ticker,
            forwarder,
            dirty,
            last_sweep: Instant::now(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ManagerMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.forwarder.abort();
        for r in state.runners.values() {
            if let Some(a) = &r.actor {
                a.stop(None);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Check => {
                state.check(&myself, false).await;
                if state.last_sweep.elapsed() >= SWEEP {
                    state.last_sweep = Instant::now();
                    kept::sweep(&state.args.node, &state.args.ctx.checkpoints);
                }
            }
            ManagerMsg::Restart(id, epoch) => {
                let still = state
                    .runners
                    .get(&id)
                    .is_some_and(|r| r.epoch == epoch && r.actor.is_none());
                if still {
                    state.start(&myself, id, epoch).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ManagerMsg>,
        evt: SupervisionEvent,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            SupervisionEvent::ActorFailed(cell, e) => (cell, Some(format!("panicked: {e}"))),
            _ => return Ok(()),
        };
        let found = state
            .runners
            .iter()
            .find(|(_, r)| {
                r.actor
                    .as_ref()
                    .is_some_and(|a| a.get_id() == cell.get_id())
            })
            .map(|(id, r)| (*id, r.epoch));
        let Some((id, epoch)) = found else {
            return Ok(()); // a runner stopped on purpose
        };
        // Fenced while the state still gives the job to this runner: its report was refused
        // for another reason (a checkpoint out of step with the state's): start it again
        // from the state's checkpoint rather than leave the job without a runner.
        let still_here = state.args.node.view.read(|s| {
            s.streams
                .get(id)
                .is_some_and(|j| j.node == Some(state.args.node.id) && j.epoch == epoch)
        });
        if reason.as_deref() == Some(FENCED) && still_here {
            state
                .failed(
                    &myself,
                    id,
                    epoch,
                    "its report was refused although the job is still placed here; starting again from the last committed checkpoint".into(),
                )
                .await;
            return Ok(());
        }
        match reason.as_deref() {
            Some(FENCED) | None => {
                tracing::info!(stream = id, epoch, "stream runner ended: the job moved on");
                state.done.insert((id, epoch));
                state.runners.remove(&id);
                // Look again now: the job may be here at a newer epoch.
                state.check(&myself, true).await;
            }
            Some(e) => state.failed(&myself, id, epoch, e.to_string()).await,
        }
        Ok(())
    }
}

/// A runner's stop reason when its job moved on (not a failure).
const FENCED: &str = "fenced";

/// One job's runner: an actor around [`runner::run`] so that the manager supervises it.
pub struct StreamRunner;

impl Actor for StreamRunner {
    type Msg = ();
    /// The supervising task and the run's own task.
    type State = (tokio::task::JoinHandle<()>, tokio::task::AbortHandle);
    type Arguments = (StreamJob, RunnerCtx);

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        (job, ctx): (StreamJob, RunnerCtx),
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = job.id;
        // The run in its own task: a panic in it is a failure of this runner, not of the node.
        let run = tokio::spawn(runner::run(job, ctx));
        let abort = run.abort_handle();
        let watch = tokio::spawn(async move {
            let r = run.await;
            let reason = match r {
                Ok(Ok(runner::Ended::Fenced)) => FENCED.to_string(),
                Ok(Err(e)) => e,
                Err(e) => format!("the runner panicked: {e}"),
            };
            if reason != FENCED {
                tracing::warn!(stream = id, error = %reason, "stream runner failed");
            }
            myself.stop(Some(reason));
        });
        Ok((watch, abort))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        (watch, run): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        run.abort();
        watch.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _msg: (),
        _task: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
