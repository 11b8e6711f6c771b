//! One stream job's runner: source → pipeline → sink, checkpointed through Raft.
//!
//! The loop waits on three things: a batch from the source queue, a tick (200 ms: idle
//! sources advance the watermark, problems are reported), and the checkpoint interval. A
//! checkpoint is: flush the sink; encode (engine state, source position, sink position);
//! propose it with the `results` sink's results in one `StreamReport` entry; once committed,
//! acknowledge the input it covers. A report refused by the state machine means the job moved
//! on (another epoch: a pause, a move after this node was thought lost) and the runner stops
//! without touching anything more.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use edgerun_model::{NodeId, StreamCheckpoint, StreamId, StreamJob, StreamMetrics, StreamReport};
use edgerun_streams::{JobDef, Output, Pipeline};
use serde::{Deserialize, Serialize};

use crate::metrics_names as m;
use crate::streams::ingress::Ingress;
use crate::streams::sink::{Sink, SinkPos};
use crate::streams::source::{Ack, Ctx, Source, SourcePos};
use crate::{now_ms, Proposer};

const TICK: Duration = Duration::from_millis(200);
/// The largest checkpoint a job may have (one above `streams.inline_checkpoint_bytes` is kept
/// by hash, off the log: [`crate::streams::kept`]).
pub const MAX_CHECKPOINT_BYTES: usize = 128 * 1024 * 1024;
/// How often at most POSTed records make the runner checkpoint at once.
const CALLER_CHECKPOINT: Duration = Duration::from_millis(20);
/// Results a `results` sink holds before the runner checkpoints early.
const HOLD_RESULTS: usize = 20_000;
/// Unacknowledged batches before the runner checkpoints early (half the MQTT source's receive
/// maximum, so that the broker never waits on acknowledgements the runner holds).
const HOLD_ACKS: usize = crate::streams::source::MQTT_RECEIVE_MAX as usize / 2;

/// The runner's checkpoint (inside `StreamCheckpoint::data`).
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u16,
    engine: Vec<u8>,
    source: SourcePos,
    sink: SinkPos,
    /// The http source's most recent batch ids, oldest first.
    batches: VecDeque<String>,
}

/// Batch ids remembered for the http source's duplicate check.
const KEEP_BATCH_IDS: usize = 10_000;

const SAVED_VERSION: u16 = 1;

/// How a runner ended without failing.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The job is no longer this runner's (a report was refused).
    Fenced,
}

/// What a runner is given.
#[derive(Clone)]
pub struct RunnerCtx {
    pub node: NodeId,
    pub proposer: Proposer,
    pub ingress: Ingress,
    pub files_dir: std::path::PathBuf,
    pub max_record_bytes: usize,
    pub queue_batches: usize,
    /// `streams.http_sink_allow`, parsed.
    pub http_allow: std::sync::Arc<Vec<edgerun_config::allow::Allowed>>,
    /// The C++ kernels a window step may run.
    pub kernels: std::sync::Arc<dyn edgerun_cpp::Kernels>,
    /// This node's Raft (its view of the members, and the peers to send checkpoints to).
    pub raft: edgerun_raft::RaftNode,
    /// Checkpoints kept by hash, and the size above which a checkpoint goes there.
    pub checkpoints: edgerun_raft::CheckpointStore,
    pub inline_checkpoint_bytes: usize,
}

/// Run the kernels of closed windows (on a blocking thread: a kernel over 65,536 values is
/// real work) and put each result into its window's result; a kernel that refuses its input
/// leaves `{"error": ...}` there instead, and the job goes on.
async fn run_kernels(kernels: &std::sync::Arc<dyn edgerun_cpp::Kernels>, outs: &mut [Output]) {
    let calls: Vec<(usize, edgerun_streams::engine::KernelCall)> = outs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, o)| o.kernel.take().map(|k| (i, k)))
        .collect();
    if calls.is_empty() {
        return;
    }
    let k = kernels.clone();
    let done = tokio::task::spawn_blocking(move || {
        calls
            .into_iter()
            .map(|(i, c)| {
                let r = k.run(&c.kernel, &c.input.to_string());
                (i, c.output, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(done) = done else {
        tracing::warn!("a window kernel panicked; its windows go out without its result");
        return;
    };
    for (i, name, r) in done {
        let v = match r {
            Ok(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        if let Some(serde_json::Value::Object(m)) = outs.get_mut(i).map(|o| &mut o.value) {
            m.insert(name, v);
        }
    }
}

/// The engine's name for a job (part of every result id).
pub fn engine_job(id: StreamId) -> String {
    format!("stream-{id}")
}

struct Run {
    id: StreamId,
    epoch: u64,
    seq: u64,
    pipeline: Pipeline,
    sink: Sink,
    pos: SourcePos,
    acks: Vec<Ack>,
    /// Acknowledgements of input in the last committed checkpoint, not yet sent.
    committed: Vec<Ack>,
    /// Something changed since the last checkpoint.
    dirty: bool,
    /// Records POSTed to the http source wait for the next checkpoint.
    callers_waiting: bool,
    /// The last report failed (no leader): logged once per streak.
    report_failing: bool,
    /// When the last checkpoint was committed (or the runner started).
    last_checkpoint: Instant,
    /// Recent batch ids of the http source (in the checkpoint), and the same as a set.
    batches: VecDeque<String>,
    batch_set: HashSet<String>,
    reported_problem: Option<Option<String>>,
    /// Counters already exported as metrics.
    exported: edgerun_streams::Counters,
    job_label: String,
}

/// The job as the cluster has it now: after a read barrier, so that this node's copy has every
/// checkpoint committed before the runner started. The manager read the job from this node's
/// copy, which can lag (a follower that has not applied the last report yet, a node just
/// restarted that replays its log): a runner that resumed from an older checkpoint would make
/// the next checkpoint's seq again, and its report, from the same epoch, would replace the
/// committed one, losing input already acknowledged (found by the chaos suite's restart-all).
/// Waits as long as there is no leader (nothing can be checkpointed then anyway); `None` when
/// the job is no longer this placement's.
async fn current(job: &StreamJob, ctx: &RunnerCtx) -> Option<StreamJob> {
    let mut wait = Duration::from_millis(50);
    let mut said = false;
    loop {
        match crate::cluster::read_barrier(&ctx.raft, Duration::from_secs(5)).await {
            Ok(()) => break,
            Err(e) => {
                if !said {
                    tracing::info!(stream = job.id, error = %e, "waiting for the cluster before resuming from the last checkpoint");
                    said = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
    ctx.raft.view.read(|s| {
        s.streams
            .get(job.id)
            .filter(|j| j.epoch == job.epoch && j.node == Some(ctx.node))
            .cloned()
    })
}

/// Run `job` (as placed at `job.epoch`) until it fails (Err, with the reason) or is fenced.
pub async fn run(job: StreamJob, ctx: RunnerCtx) -> Result<Ended, String> {
    let Some(job) = current(&job, &ctx).await else {
        return Ok(Ended::Fenced);
    };
    let def_json: serde_json::Value = serde_json::from_str(&job.spec.definition)
        .map_err(|e| format!("the stored definition does not parse: {e}"))?;
    let def = JobDef::parse(&def_json).map_err(|e| e.to_string())?;
    let steps = def.steps().map_err(|e| e.to_string())?;
    let mut pipeline = Pipeline::new(&engine_job(job.id), def.time.clone(), steps);
    let (mut spos, mut kpos, seq) = (SourcePos::default(), SinkPos::default(), 0);
    let mut batches = VecDeque::new();
    let seq = match &job.checkpoint {
        None => seq,
        Some(c) => {
            let data = crate::streams::kept::load(&ctx, job.id, c.seq, &c.data).await?;
            let saved: Saved = edgerun_model::decode(&data)
                .map_err(|e| format!("checkpoint {} does not decode: {e}", c.seq))?;
            if saved.version != SAVED_VERSION {
                return Err(format!(
                    "checkpoint {} is runner format {}; this build reads {SAVED_VERSION}",
                    c.seq, saved.version
                ));
            }
            pipeline
                .restore(&saved.engine)
                .map_err(|e| format!("checkpoint {}: {e}", c.seq))?;
            pipeline.resume_clock(now_ms() as i64);
            spos = saved.source;
            kpos = saved.sink;
            batches = saved.batches;
            c.seq
        }
    };
    let sink = Sink::open(&def.sink, &kpos, job.id, &ctx.files_dir, &ctx.http_allow).await?;
    let ingress = matches!(def.source, edgerun_streams::SourceDef::Http)
        .then(|| ctx.ingress.register(job.id, job.epoch, ctx.queue_batches));
    let source = Source::open(
        &def.source,
        &spos,
        Ctx {
            job: job.id,
            files_dir: ctx.files_dir.clone(),
            max_record_bytes: ctx.max_record_bytes,
            queue: ctx.queue_batches,
            ingress,
        },
    )
    .await;
    let mut source = match source {
        Ok(s) => s,
        Err(e) => {
            ctx.ingress.unregister(job.id, job.epoch);
            return Err(e);
        }
    };
    tracing::info!(
        stream = job.id,
        epoch = job.epoch,
        checkpoint = seq,
        source = def.source.kind(),
        sink = def.sink.kind(),
        "stream runner started"
    );
    let exported = pipeline.counters();
    let mut run = Run {
        id: job.id,
        epoch: job.epoch,
        seq,
        pipeline,
        sink,
        pos: spos,
        acks: Vec::new(),
        committed: Vec::new(),
        dirty: false,
        callers_waiting: false,
        report_failing: false,
        last_checkpoint: Instant::now(),
        batch_set: batches.iter().cloned().collect(),
        batches,
        reported_problem: None,
        exported,
        job_label: job.id.to_string(),
    };
    let r = run.go(&mut source, &ctx, def.checkpoint_ms).await;
    ctx.ingress.unregister(job.id, job.epoch);
    r
}

impl Run {
    async fn go(
        &mut self,
        source: &mut Source,
        ctx: &RunnerCtx,
        checkpoint_ms: u64,
    ) -> Result<Ended, String> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut every = tokio::time::interval(Duration::from_millis(checkpoint_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(64);
        let mut outs: Vec<Output> = Vec::new();
        // Say at once that the runner is up (status `running` once its source is ready), or
        // what keeps it from reading.
        self.reported_problem = Some(source.problems.borrow().clone());
        if self.report(ctx, None, Vec::new()).await? == Some(false) {
            return Ok(Ended::Fenced);
        }
        loop {
            tokio::select! {
                n = source.batches.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        return Err("the source stopped".into());
                    }
                    let now = now_ms() as i64;
                    for p in batch.drain(..) {
                        if let Some(b) = p.batch_id {
                            if !self.batch_set.insert(b.clone()) {
                                // Taken before (a retry whose first answer was lost): answered
                                // with the next checkpoint, not taken again.
                                self.callers_waiting = true;
                                self.acks.push(p.ack);
                                continue;
                            }
                            self.batches.push_back(b);
                            while self.batches.len() > KEEP_BATCH_IDS {
                                if let Some(old) = self.batches.pop_front() {
                                    self.batch_set.remove(&old);
                                }
                            }
                        }
                        for r in p.records {
                            self.pipeline.push(r, now, &mut outs);
                        }
                        if p.malformed > 0 {
                            self.pipeline.count_malformed(p.malformed);
                        }
                        if p.pos != SourcePos::Replayed {
                            self.pos = p.pos;
                        }
                        self.callers_waiting |= matches!(p.ack, Ack::Http { .. });
                        self.acks.push(p.ack);
                    }
                    self.dirty = true;
                    run_kernels(&ctx.kernels, &mut outs).await;
                    self.sink.write(&outs).await?;
                    outs.clear();
                    let full = self.sink.held() >= HOLD_RESULTS || self.acks.len() >= HOLD_ACKS;
                    // Callers of the http source wait for a checkpoint: one right away (at
                    // most every CALLER_CHECKPOINT), not at the next tick or interval.
                    let callers = self.callers_waiting
                        && self.last_checkpoint.elapsed() >= CALLER_CHECKPOINT;
                    if (full || callers) && self.checkpoint(ctx).await? == Some(false) {
                        return Ok(Ended::Fenced);
                    }
                }
                _ = ticker.tick() => {
                    // Callers of the http source wait for a checkpoint: do not make them wait
                    // a long checkpoint interval.
                    if self.callers_waiting && self.checkpoint(ctx).await? == Some(false) {
                        return Ok(Ended::Fenced);
                    }
                    self.pipeline.tick(now_ms() as i64, &mut outs);
                    if !outs.is_empty() {
                        self.dirty = true;
                        run_kernels(&ctx.kernels, &mut outs).await;
                        self.sink.write(&outs).await?;
                        outs.clear();
                    }
                    self.export();
                    // A new problem (or its end) goes to the job's status.
                    let problem = source.problems.borrow().clone().or_else(|| self.sink.problem());
                    if self.reported_problem.as_ref() != Some(&problem) {
                        self.reported_problem = Some(problem);
                        if self.report(ctx, None, Vec::new()).await? == Some(false) {
                            return Ok(Ended::Fenced);
                        }
                    }
                }
                // Callers wait and the last checkpoint was too recent a moment ago: now.
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(self.last_checkpoint + CALLER_CHECKPOINT)),
                    if self.callers_waiting => {
                    if self.checkpoint(ctx).await? == Some(false) {
                        return Ok(Ended::Fenced);
                    }
                }
                _ = every.tick() => {
                    // Nothing taken and nothing closed: no entry (an idle job costs nothing).
                    if self.dirty && self.checkpoint(ctx).await? == Some(false) {
                        return Ok(Ended::Fenced);
                    }
                }
            }
            // Acknowledge the input of a committed checkpoint.
            if !self.committed.is_empty() {
                let acks = std::mem::take(&mut self.committed);
                if let Err(e) = source.acknowledge(acks).await {
                    // Not fatal: unacknowledged input is read again after a restart and
                    // skipped there by the checkpoint's position (Redis), or replayed into a
                    // state that already has it only for MQTT, whose guarantee is at least once.
                    tracing::warn!(stream = self.id, error = %e, "acknowledging input failed");
                }
            }
        }
    }

    fn metrics(&self) -> StreamMetrics {
        let c = self.pipeline.counters();
        StreamMetrics {
            records_in: c.records_in,
            records_out: c.records_out,
            filtered: c.filtered,
            late: c.late,
            malformed: c.malformed,
            watermark_ms: self.pipeline.watermark(),
            last_checkpoint_ms: None,
        }
    }

    /// Counters as Prometheus metrics (deltas since the last export).
    fn export(&mut self) {
        let c = self.pipeline.counters();
        let e = self.exported;
        for (stage, now, before) in [
            ("in", c.records_in, e.records_in),
            ("out", c.records_out, e.records_out),
            ("filtered", c.filtered, e.filtered),
            ("late", c.late, e.late),
            ("malformed", c.malformed, e.malformed),
        ] {
            if now > before {
                metrics::counter!(m::STREAM_RECORDS, "job" => self.job_label.clone(), "stage" => stage)
                    .increment(now - before);
            }
        }
        self.exported = c;
        if let Some(w) = self.pipeline.watermark() {
            let lag = (now_ms() as i64).saturating_sub(w).max(0) as f64 / 1000.0;
            metrics::gauge!(m::STREAM_WATERMARK_LAG, "job" => self.job_label.clone()).set(lag);
        }
    }

    /// A report without a checkpoint (status and problem). `Some(false)`: fenced.
    async fn report(
        &mut self,
        ctx: &RunnerCtx,
        checkpoint: Option<StreamCheckpoint>,
        results: Vec<(String, String)>,
    ) -> Result<Option<bool>, String> {
        let problem = self.reported_problem.clone().flatten();
        let r = StreamReport {
            id: self.id,
            node: ctx.node,
            epoch: self.epoch,
            failed: false,
            error: problem.clone(),
            metrics: self.metrics(),
            checkpoint,
            results,
        };
        match ctx.proposer.report_stream(r).await {
            Ok(ok) => {
                if std::mem::take(&mut self.report_failing) {
                    tracing::info!(stream = self.id, "reporting to the cluster works again");
                }
                Ok(Some(ok))
            }
            Err(e) => {
                // Once per streak (a leader change fails every report for a moment).
                if !self.report_failing {
                    tracing::warn!(stream = self.id, error = %e, "reporting to the cluster failed; retrying at each checkpoint");
                }
                self.report_failing = true;
                Ok(None)
            }
        }
    }

    /// Flush the sink, propose the checkpoint; `Some(true)` committed, `Some(false)` fenced,
    /// `None` not committed (no leader: tried again at the next interval, nothing lost).
    async fn checkpoint(&mut self, ctx: &RunnerCtx) -> Result<Option<bool>, String> {
        let started = Instant::now();
        self.sink.flush().await?;
        let saved = Saved {
            version: SAVED_VERSION,
            engine: self.pipeline.checkpoint(),
            source: self.pos.clone(),
            sink: self.sink.position(),
            batches: self.batches.clone(),
        };
        let data = edgerun_model::encode(&saved).map_err(|e| e.to_string())?;
        if data.len() > MAX_CHECKPOINT_BYTES {
            return Err(format!(
                "the job's state is {} bytes, more than the {MAX_CHECKPOINT_BYTES} a checkpoint may hold (fewer keys, shorter windows or fewer percentiles)",
                data.len()
            ));
        }
        let bytes = data.len();
        let Some((data, kept)) =
            crate::streams::kept::keep(ctx, self.id, self.seq + 1, data).await?
        else {
            return Ok(None);
        };
        let results = self.sink.take_results();
        let cp = StreamCheckpoint {
            seq: self.seq + 1,
            epoch: self.epoch,
            at_ms: now_ms(),
            data,
        };
        let n_results = results.len();
        let sent = results.clone();
        match self.report(ctx, Some(cp), results).await? {
            Some(true) => {
                self.seq += 1;
                self.dirty = false;
                self.callers_waiting = false;
                self.last_checkpoint = Instant::now();
                metrics::histogram!(m::STREAM_CHECKPOINT_SECONDS, "job" => self.job_label.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(m::STREAM_CHECKPOINTS, "job" => self.job_label.clone(), "kept" => kept)
                    .increment(1);
                metrics::gauge!(m::STREAM_CHECKPOINT_BYTES, "job" => self.job_label.clone())
                    .set(bytes as f64);
                crate::streams::kept::committed(ctx, self.id, self.seq);
                tracing::debug!(
                    stream = self.id,
                    seq = self.seq,
                    results = n_results,
                    "checkpoint committed"
                );
                self.committed = std::mem::take(&mut self.acks);
                Ok(Some(true))
            }
            Some(false) => Ok(Some(false)),
            None => {
                self.sink.untake_results(sent);
                Ok(None)
            }
        }
    }
}
