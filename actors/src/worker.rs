//! Worker: runs the tasks placed on this node and commits their results.
//!
//! Holds no durable state: on every change it looks at the tasks the replicated state says
//! are scheduled or running here, and starts those it is not already running (up to
//! `executor.slots`). After a restart of the actor or the process, that same scan picks up
//! where the last one stopped (execution is at-least-once; the state machine records one
//! result per attempt).
//!
//! ```text
//!  StateEvent ─Changed─▶ Worker ─spawn─▶ attempt task ──run──▶ Executor (see `executor`)
//!                          ▲                 │  Propose(Start), Propose(Complete)
//!                          └──── Finished ◀──┘
//! ```
//!
//! The executor decides the isolation (`process` or `inproc` so far) and it is recorded on
//! every result. A kernel that crashes fails its attempt, never the node. Failure policy: the
//! actor only dies on injected failures.
//!
//! Stopping: on every scan the Worker checks its running attempts against the state; one that
//! is no longer this node's current attempt (cancelled, preempted, or given to another node
//! after this one was marked down) is stopped: its future is dropped, which kills its process
//! group or container (see `executor::KillOnDrop`), and nothing is committed for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerun_model::{AttemptRef, Completion, NodeId, Outcome, TaskId, TaskStatus, Work};
use edgerun_raft::{Outbox, RaftNode};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::executor::{Executor, Job as ExecJob};
use crate::metrics_names as m;
use crate::scheduler::forward_changes;
use crate::{now_ms, ProposeError, Proposer};

const TICK: Duration = Duration::from_millis(500);

pub enum WorkerMsg {
    Changed,
    Tick,
    /// An attempt ended (its completion is committed or no longer wanted).
    Finished(TaskId, u32),
}

pub struct Worker;

pub struct WorkerArgs {
    pub node: RaftNode,
    pub proposer: Proposer,
    pub executor: Arc<dyn Executor>,
    pub slots: u32,
    pub default_timeout: Duration,
    /// Memory limit of a task that asks for none.
    pub default_memory_mb: u32,
    /// `debug.kernel_delay_ms`: a wait before each kernel runs (tests only; zero by default).
    pub delay: Duration,
    /// Results longer than this are stored here, off-Raft.
    pub results: edgerun_raft::ResultStore,
    pub inline_result_max: usize,
    /// Completions not yet committed (survive a restart).
    pub outbox: Outbox,
    /// Results of deterministic kernels (`[cache]`); none = no cache.
    pub cache: Option<Arc<crate::cache::ResultCache>>,
}

/// How often the Worker sweeps out stored results nobody refers to.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct WorkerState {
    args: WorkerArgs,
    running: HashMap<TaskId, Running>,
    /// Attempts this node ran to the end (their completion committed or refused). A node whose
    /// state lags behind the leader still sees them assigned here; running them again would
    /// loop forever (seen in the chaos suite after a full disk).
    done: HashMap<TaskId, u32>,
    dirty: Arc<AtomicBool>,
    forwarder: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    last_sweep: Instant,
}

/// An attempt this node runs.
struct Running {
    attempt: u32,
    handle: tokio::task::AbortHandle,
    /// Still executing (false once the work ended and its completion is being delivered: that
    /// part is never cut short, it ends by itself when the cluster answers or moved on).
    executing: Arc<AtomicBool>,
}

struct Job {
    at: AttemptRef,
    status: TaskStatus,
    /// When the task was submitted (ms since the epoch), for the queue-wait metric.
    created_at: u64,
    work: Work,
    timeout: Duration,
    memory_mb: u32,
    cpu_millis: Option<u32>,
    network: bool,
    /// The task's disk ask; the executor applies the node's default.
    disk_mb: Option<u32>,
    trace_id: String,
    /// The task allows the result cache.
    cache: bool,
}

impl WorkerState {
    fn me(&self) -> NodeId {
        self.args.node.id
    }

    /// Stop the running attempts the state no longer gives to this node.
    fn stop_unwanted(&mut self) {
        let me = self.me();
        let running = &mut self.running;
        let stop: Vec<(TaskId, u32, String)> = self.args.node.view.read(|s| {
            running
                .iter()
                .filter(|(_, r)| r.executing.load(Ordering::SeqCst))
                .filter_map(|(id, r)| {
                    let attempt = &r.attempt;
                    let why = match s.task(*id) {
                        None => "the task is gone".to_string(),
                        Some(t) if t.status.is_terminal() => format!("it is {}", t.status.as_str()),
                        Some(t) if t.attempt != *attempt || t.node != Some(me) => {
                            match t.error.as_ref().map(|e| e.code.as_str()) {
                                Some("preempted") => "it was preempted".to_string(),
                                _ => "the attempt was taken from this node".to_string(),
                            }
                        }
                        Some(_) => return None,
                    };
                    Some((*id, *attempt, why))
                })
                .collect()
        });
        for (id, attempt, why) in stop {
            if let Some(r) = running.remove(&id) {
                r.handle.abort();
                metrics::counter!(m::TASKS_STOPPED).increment(1);
                tracing::info!(task = id, attempt, "stopped a running attempt: {why}");
            }
        }
    }

    /// Remove stored results of tasks that are gone or ended with another attempt's result.
    fn sweep_results(&mut self) {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return;
        }
        self.last_sweep = Instant::now();
        self.sweep_outbox();
        let me = self.me();
        let keys = self.args.results.keys();
        if keys.is_empty() {
            return;
        }
        let stale: Vec<(TaskId, u32)> = self.args.node.view.read(|s| {
            keys.into_iter()
                .filter(|(id, attempt)| match s.task(*id) {
                    None => true,
                    Some(t) => {
                        t.status.is_terminal()
                            && t.result_ref
                                .is_none_or(|r| r.node != me || r.attempt != *attempt)
                    }
                })
                .collect()
        });
        for (id, attempt) in stale {
            self.args.results.remove(id, attempt);
        }
    }

    /// Drop kept completions the cluster has moved past (the attempt was given away and this
    /// node has heard so): their delivery was stopped with the attempt.
    fn sweep_outbox(&mut self) {
        let me = self.me();
        let keys = self.args.outbox.keys();
        if keys.is_empty() {
            return;
        }
        let running = &self.running;
        let stale: Vec<(TaskId, u32)> = self.args.node.view.read(|s| {
            keys.into_iter()
                .filter(|(id, attempt)| {
                    running.get(id).is_none_or(|r| r.attempt != *attempt)
                        && s.task(*id).is_none_or(|t| {
                            t.status.is_terminal() || t.attempt != *attempt || t.node != Some(me)
                        })
                })
                .collect()
        });
        for (id, attempt) in stale {
            tracing::info!(
                task = id,
                attempt,
                "dropping a kept completion the cluster has moved past"
            );
            self.args.outbox.remove(id, attempt);
        }
    }

    fn scan(&mut self, myself: &ActorRef<WorkerMsg>) {
        self.dirty.store(false, Ordering::SeqCst);
        self.stop_unwanted();
        let free = (self.args.slots as usize).saturating_sub(self.running.len());
        if free == 0 {
            return;
        }
        let me = self.me();
        let default_timeout = self.args.default_timeout;
        let default_memory = self.args.default_memory_mb;
        let done = &mut self.done;
        let jobs: Vec<Job> = self.args.node.view.read(|s| {
            // Forget finished attempts once the state has moved past them.
            done.retain(|id, attempt| {
                s.task(*id).is_some_and(|t| {
                    t.attempt == *attempt && t.node == Some(me) && !t.status.is_terminal()
                })
            });
            s.active_on(me)
                .filter(|t| !self.running.contains_key(&t.id))
                .filter(|t| done.get(&t.id) != Some(&t.attempt))
                .take(free)
                .map(|t| Job {
                    at: AttemptRef {
                        task: t.id,
                        node: me,
                        attempt: t.attempt,
                    },
                    status: t.status,
                    created_at: t.created_at_ms,
                    work: t.spec.work.clone(),
                    timeout: t
                        .spec
                        .timeout_ms
                        .map_or(default_timeout, Duration::from_millis),
                    memory_mb: t.spec.resources.memory_mb.unwrap_or(default_memory),
                    cpu_millis: t.spec.resources.cpu_millis,
                    network: t.spec.resources.network,
                    disk_mb: t.spec.resources.disk_mb,
                    trace_id: t.spec.trace_id.clone(),
                    cache: t.spec.cache,
                })
                .collect()
        });
        for job in jobs {
            let (task, attempt) = (job.at.task, job.at.attempt);
            let executing = Arc::new(AtomicBool::new(true));
            let ctx = AttemptCtx {
                executor: self.args.executor.clone(),
                proposer: self.args.proposer.clone(),
                node: self.args.node.clone(),
                delay: self.args.delay,
                results: self.args.results.clone(),
                inline_max: self.args.inline_result_max,
                outbox: self.args.outbox.clone(),
                executing: executing.clone(),
                cache: self.args.cache.clone(),
            };
            let me = myself.clone();
            // Every line logged while running the attempt carries its trace id.
            let span = tracing::info_span!("attempt", trace_id = %job.trace_id, task, attempt);
            let handle = tokio::spawn(
                async move {
                    run_attempt(job, ctx).await;
                    let _ = me.cast(WorkerMsg::Finished(task, attempt));
                }
                .instrument(span),
            );
            self.running.insert(
                task,
                Running {
                    attempt,
                    handle: handle.abort_handle(),
                    executing,
                },
            );
        }
        metrics::gauge!(m::WORKER_BUSY_SLOTS).set(self.running.len() as f64);
    }
}

/// Run one attempt and commit its completion, retrying the commit while the task is still
/// this attempt's and the cluster has no leader.
/// What one attempt needs besides its job.
struct AttemptCtx {
    executor: Arc<dyn Executor>,
    proposer: Proposer,
    node: RaftNode,
    delay: Duration,
    results: edgerun_raft::ResultStore,
    inline_max: usize,
    outbox: Outbox,
    /// Cleared when the work has ended (see `Running::executing`).
    executing: Arc<AtomicBool>,
    cache: Option<Arc<crate::cache::ResultCache>>,
}

async fn run_attempt(job: Job, ctx: AttemptCtx) {
    let AttemptCtx {
        executor,
        proposer,
        node,
        delay,
        results,
        inline_max,
        outbox,
        executing,
        cache,
    } = ctx;
    let at = job.at;
    if job.status == TaskStatus::Scheduled {
        let p = proposer.clone();
        // Running and the Start write overlap; a Start that lands after the completion is
        // refused by the state machine, which is fine.
        tokio::spawn(async move {
            let _ = p.start(vec![at]).await;
        });
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let started = Instant::now();
    if job.status == TaskStatus::Scheduled {
        let waited_ms = now_ms().saturating_sub(job.created_at);
        metrics::histogram!(m::TASK_QUEUE_WAIT).record(waited_ms as f64 / 1000.0);
    }
    let kernel = match &job.work {
        edgerun_model::Work::Kernel { kernel, .. } => kernel.clone(),
        edgerun_model::Work::Exec { .. } => "exec".to_string(),
        w @ (edgerun_model::Work::Wasm { .. } | edgerun_model::Work::Http(_)) => {
            w.kind().to_string()
        }
    };
    let isolation = executor.isolation_for(&job.work);
    // A deterministic kernel's result may already be known.
    let cache_key = match (&cache, &job.work) {
        (Some(_), edgerun_model::Work::Kernel { kernel, input }) if job.cache => {
            crate::cache::kernel_key(kernel, input)
        }
        _ => None,
    };
    let hit = match (&cache, &cache_key) {
        (Some(c), Some(k)) => c.get(k).await,
        _ => None,
    };
    let cached = hit.is_some();
    let outcome = match hit {
        Some(result) => {
            tracing::debug!(target: edgerun_model::TRACE_TARGET, kernel = %kernel, "result from the cache");
            Outcome::Succeeded { result }
        }
        None => {
            tracing::debug!(target: edgerun_model::TRACE_TARGET, kernel = %kernel, isolation = isolation.as_str(), "attempt started");
            let outcome = executor
                .run(ExecJob {
                    task: at.task,
                    attempt: at.attempt,
                    work: job.work,
                    timeout: job.timeout,
                    memory_mb: job.memory_mb,
                    cpu_millis: job.cpu_millis,
                    network: job.network,
                    disk_mb: job.disk_mb,
                })
                .await;
            if let (Some(c), Some(k), Outcome::Succeeded { result }) =
                (&cache, &cache_key, &outcome)
            {
                c.put(k, result).await;
            }
            outcome
        }
    };
    executing.store(false, Ordering::SeqCst);
    // A result too big for the log stays here; the log records where it is.
    let outcome = match outcome {
        Outcome::Succeeded { result } if result.len() > inline_max => {
            match results.put(at.task, at.attempt, &result).await {
                Ok(()) => Outcome::Stored {
                    node: at.node,
                    bytes: result.len() as u64,
                },
                Err(e) => {
                    tracing::warn!(task = at.task, error = %e, "storing a large result failed; it goes into the log");
                    Outcome::Succeeded { result }
                }
            }
        }
        other => other,
    };
    let took = started.elapsed();
    tracing::debug!(
        target: edgerun_model::TRACE_TARGET,
        outcome = outcome_label(&outcome),
        ms = took.as_millis() as u64,
        "attempt ended"
    );
    metrics::histogram!(m::TASK_DURATION, "kernel" => kernel, "isolation" => isolation.as_str())
        .record(took.as_secs_f64());
    if let Outcome::Failed {
        error,
        retryable: true,
        ..
    } = &outcome
    {
        tracing::warn!(task = at.task, attempt = at.attempt, code = %error.code, "attempt failed and may be retried: {}", error.message);
    }
    let completion = Completion {
        attempt: at,
        outcome,
        isolation,
        cached,
    };
    // Kept on disk until the cluster answers: a node cut off from the leader (or restarted
    // while cut off) delivers it when the link returns.
    if let Err(e) = outbox.put(&completion) {
        tracing::warn!(task = at.task, error = %e, "could not keep the completion in the outbox");
    }
    deliver(completion, proposer, node, outbox).await;
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded { .. } | Outcome::Stored { .. } => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::TimedOut { .. } => "timed_out",
    }
}

/// Propose a completion until the cluster answers it (accepted or fenced) or the local state
/// says the attempt is no longer this node's; then drop it from the outbox.
async fn deliver(completion: Completion, proposer: Proposer, node: RaftNode, outbox: Outbox) {
    let at = completion.attempt;
    let label = outcome_label(&completion.outcome);
    let mut delay = Duration::from_millis(20);
    loop {
        match proposer.complete(vec![completion.clone()]).await {
            Ok(v) => {
                if v.first() == Some(&true) {
                    metrics::counter!(m::TASKS_FINISHED, "status" => label).increment(1);
                    tracing::debug!(target: edgerun_model::TRACE_TARGET, outcome = label, "completion committed");
                } else {
                    metrics::counter!(m::COMPLETIONS_REFUSED).increment(1);
                    tracing::info!(
                        task = at.task,
                        attempt = at.attempt,
                        "completion refused (stale attempt or cancelled)"
                    );
                }
                break;
            }
            Err(e) => {
                let still_ours = node.view.read(|s| {
                    s.task(at.task).is_some_and(|t| {
                        !t.status.is_terminal()
                            && t.attempt == at.attempt
                            && t.node == Some(at.node)
                    })
                });
                if !still_ours {
                    break;
                }
                if !matches!(e, ProposeError::NoLeader | ProposeError::Unavailable) {
                    tracing::warn!(task = at.task, error = %e, "committing a result failed; retrying");
                }
                // Back off, but try again at once when a (new) leader is known: after a
                // leader's loss the backoff had grown to ~1 s by the time the election
                // ended, and freed slots waited for it (`edgerun bench failover`: first
                // placement ~600 ms after the new leader).
                let mut metrics = node.raft.metrics();
                let seen = metrics.borrow().current_leader;
                let leader_moved = async {
                    let moved = metrics
                        .wait_for(|m| m.current_leader.is_some() && m.current_leader != seen)
                        .await
                        .is_ok();
                    if !moved {
                        // Raft is stopping: only the sleep ends the wait.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = leader_moved => {}
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
    outbox.remove(at.task, at.attempt);
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let dirty = Arc::new(AtomicBool::new(false));
        let forwarder = forward_changes(&args.node, myself.clone(), dirty.clone(), || {
            WorkerMsg::Changed
        });
        let ticker = myself.send_interval(TICK, || WorkerMsg::Tick);
        // Completions a previous run finished but could not deliver: deliver them, and do not
        // run those attempts again.
        let (kept, errors) = args.outbox.all();
        for e in errors {
            tracing::error!("{e}");
        }
        let mut done = HashMap::new();
        for c in kept {
            tracing::info!(
                task = c.attempt.task,
                attempt = c.attempt.attempt,
                "delivering a completion kept in the outbox"
            );
            done.insert(c.attempt.task, c.attempt.attempt);
            tokio::spawn(deliver(
                c,
                args.proposer.clone(),
                args.node.clone(),
                args.outbox.clone(),
            ));
        }
        let _ = myself.cast(WorkerMsg::Changed);
        Ok(WorkerState {
            args,
            running: HashMap::new(),
            done,
            dirty,
            forwarder,
            ticker,
            last_sweep: Instant::now(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        state.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Changed => state.scan(&myself),
            WorkerMsg::Tick => {
                if let Err(e) = state.args.outbox.flush_if_dirty().await {
                    tracing::warn!(error = %e, "flushing the outbox failed; will retry");
                }
                // Counted after the flush: what the gauge shows is on disk.
                metrics::gauge!(m::WORKER_OUTBOX).set(state.args.outbox.len() as f64);
                state.sweep_results();
                state.scan(&myself);
            }
            WorkerMsg::Finished(id, attempt) => {
                // Only if it is still this attempt's entry (a stopped attempt's may be gone and
                // a newer attempt of the same task running).
                if state.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                    state.running.remove(&id);
                    state.done.insert(id, attempt);
                }
                state.scan(&myself);
            }
        }
        Ok(())
    }
}
