//! Stream jobs as the replicated state keeps them: the definition, where the job runs, its last
//! checkpoint and the results of a `results` sink.
//!
//! The engine (expressions, windows, the checkpoint's inside) is the `streams` crate; here a
//! checkpoint is opaque bytes. What the state decides:
//! - **placement and fencing**: each placement gets a new `epoch`; a runner's report carries
//!   the epoch it was started for, and a report of any other epoch is refused. A runner cut off
//!   from the cluster while its job moved on cannot overwrite the new runner's checkpoint.
//! - **exactly once for `results`**: a report carries the checkpoint and the results produced
//!   since the previous one in one entry, so both are committed or neither is; a result whose
//!   `result_id` is already kept is skipped.
//! - **retention**: at most `max_results` results per job, oldest dropped first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::node::NodeId;
use crate::task::{Constraints, Resources};

/// Stream jobs are numbered by the state machine from 1.
pub type StreamId = u64;

/// What the user asked for. `definition` is the job's JSON as submitted (source, time,
/// pipeline, sink), checked by the API against the engine before it is proposed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub definition: String,
    pub constraints: Constraints,
    pub resources: Resources,
    pub checkpoint_ms: u64,
    /// Results of a `results` sink kept (oldest dropped first).
    pub max_results: u32,
    pub submitter: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// Waiting for a node, or placed and not yet reported running.
    Starting,
    Running,
    Paused,
    /// Failed more often than the node's restart budget allows; `error` says why. A resume
    /// starts it again from its last checkpoint.
    Failed,
    /// Deleted (only in the answer to a delete: the job is gone from the state).
    Stopped,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Starting => "starting",
            StreamStatus::Running => "running",
            StreamStatus::Paused => "paused",
            StreamStatus::Failed => "failed",
            StreamStatus::Stopped => "stopped",
        }
    }
}

/// Counters of a running job, as of its last report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StreamMetrics {
    pub records_in: u64,
    pub records_out: u64,
    pub filtered: u64,
    pub late: u64,
    pub malformed: u64,
    /// Event time the job's windows have closed up to.
    pub watermark_ms: Option<i64>,
    /// When the last checkpoint was committed (reporter's clock).
    pub last_checkpoint_ms: Option<u64>,
}

/// A runner's consistent snapshot: source position, open windows, sink position (the
/// engine's encoding).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamCheckpoint {
    /// Increases by one per committed checkpoint of the job.
    pub seq: u64,
    /// The placement (epoch) whose runner made it.
    pub epoch: u64,
    pub at_ms: u64,
    pub data: Vec<u8>,
}

/// One result of a `results` sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamResult {
    /// Position in the job's results, from 1 (the `after` cursor of the results call).
    pub seq: u64,
    pub result_id: String,
    /// The result as JSON text.
    pub json: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamJob {
    pub id: StreamId,
    pub spec: StreamSpec,
    pub status: StreamStatus,
    /// Where it runs (or is being started); `None` while it waits for a node, is paused or
    /// failed.
    pub node: Option<NodeId>,
    /// The placement generation; reports of another epoch are refused.
    pub epoch: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The last problem the runner reported (an unreachable broker while it retries, or why
    /// it failed); cleared by a report without one.
    pub error: Option<String>,
    /// Placements after the first (node losses, resumes after a failure).
    pub moves: u32,
    pub checkpoint: Option<StreamCheckpoint>,
    pub metrics: StreamMetrics,
    pub results: VecDeque<StreamResult>,
    /// The seq the next result gets.
    pub next_result_seq: u64,
}

/// What a runner reports: its state, and optionally a checkpoint with the results made since
/// the previous one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamReport {
    pub id: StreamId,
    pub node: NodeId,
    pub epoch: u64,
    /// Running, or gave up (`failed` = true, with `error` the reason).
    pub failed: bool,
    pub error: Option<String>,
    pub metrics: StreamMetrics,
    /// Must be the job's checkpoint seq + 1.
    pub checkpoint: Option<StreamCheckpoint>,
    /// (result_id, JSON) for a `results` sink.
    pub results: Vec<(String, String)>,
}

/// What a user (or the scheduler) does to a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamAction {
    Pause,
    Resume,
    Delete,
}

/// Every stream job.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Streams {
    pub jobs: BTreeMap<StreamId, StreamJob>,
    pub next_id: StreamId,
    /// Result ids kept, per job (the results sink's duplicate check); rebuilt after a load.
    #[serde(skip)]
    ids: BTreeMap<StreamId, BTreeSet<String>>,
    /// Bumped by every change to a job; a node's stream manager looks again when it moves.
    #[serde(skip)]
    changes: u64,
}

impl Streams {
    pub fn rebuild_indexes(&mut self) {
        self.ids = self
            .jobs
            .values()
            .map(|j| {
                (
                    j.id,
                    j.results.iter().map(|r| r.result_id.clone()).collect(),
                )
            })
            .collect();
        self.changes = self.changes.wrapping_add(1);
    }

    /// Moves whenever any job changed (not replicated: for change detection on this node).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn get(&self, id: StreamId) -> Option<&StreamJob> {
        self.jobs.get(&id)
    }

    /// Jobs placed on `node` (running or starting there).
    pub fn on(&self, node: NodeId) -> impl Iterator<Item = &StreamJob> + '_ {
        self.jobs.values().filter(move |j| j.node == Some(node))
    }

    /// Jobs waiting for a node.
    pub fn unplaced(&self) -> impl Iterator<Item = &StreamJob> + '_ {
        self.jobs
            .values()
            .filter(|j| j.node.is_none() && j.status == StreamStatus::Starting)
    }

    /// Results of a job after `after`, at most `limit`.
    pub fn results(&self, id: StreamId, after: u64, limit: usize) -> Vec<&StreamResult> {
        let Some(j) = self.jobs.get(&id) else {
            return Vec::new();
        };
        // Seqs are consecutive in the deque: index arithmetic, no scan.
        let first = j.results.front().map_or(0, |r| r.seq);
        let skip = (after.saturating_add(1)).saturating_sub(first) as usize;
        j.results.iter().skip(skip).take(limit).collect()
    }

    pub(crate) fn create(&mut self, now_ms: u64, spec: &StreamSpec) -> StreamId {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        self.jobs.insert(
            id,
            StreamJob {
                id,
                spec: spec.clone(),
                status: StreamStatus::Starting,
                node: None,
                epoch: 0,
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                error: None,
                moves: 0,
                checkpoint: None,
                metrics: StreamMetrics::default(),
                results: VecDeque::new(),
                next_result_seq: 1,
            },
        );
        self.changes = self.changes.wrapping_add(1);
        id
    }

    /// Pause, resume or delete: the status after it, `None` for an unknown job.
    pub(crate) fn control(
        &mut self,
        now_ms: u64,
        id: StreamId,
        action: StreamAction,
    ) -> Option<StreamStatus> {
        let job = self.jobs.get_mut(&id)?;
        self.changes = self.changes.wrapping_add(1);
        match action {
            StreamAction::Delete => {
                self.jobs.remove(&id);
                self.ids.remove(&id);
                return Some(StreamStatus::Stopped);
            }
            StreamAction::Pause => {
                if job.status != StreamStatus::Paused {
                    job.status = StreamStatus::Paused;
                    job.node = None;
                    // The runner's later reports are refused: it stops at this epoch.
                    job.epoch += 1;
                }
            }
            StreamAction::Resume => {
                if matches!(job.status, StreamStatus::Paused | StreamStatus::Failed) {
                    job.status = StreamStatus::Starting;
                    job.node = None;
                    job.epoch += 1;
                    job.error = None;
                }
            }
        }
        job.updated_at_ms = now_ms;
        Some(job.status)
    }

    /// The scheduler places a waiting job; `epoch` must be the job's epoch + 1.
    pub(crate) fn place(&mut self, now_ms: u64, id: StreamId, node: NodeId, epoch: u64) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.node.is_some() || job.status != StreamStatus::Starting || epoch != job.epoch + 1 {
            return false;
        }
        if job.epoch > 0 {
            job.moves += 1;
        }
        job.node = Some(node);
        job.epoch = epoch;
        job.updated_at_ms = now_ms;
        self.changes = self.changes.wrapping_add(1);
        true
    }

    /// A runner's report; refused (false) unless it is of the job's current placement and
    /// its checkpoint follows the last one.
    pub(crate) fn report(&mut self, now_ms: u64, r: &StreamReport) -> bool {
        let Some(job) = self.jobs.get_mut(&r.id) else {
            return false;
        };
        if job.node != Some(r.node) || job.epoch != r.epoch {
            return false;
        }
        // The next checkpoint; or the last one again from the same runner, which did not get
        // the answer to it (its leader died after the commit): its state now is later and its
        // results a superset (repeats are skipped by result_id), so it replaces the last one.
        if let Some(c) = &r.checkpoint {
            let next = c.seq == job.checkpoint.as_ref().map_or(0, |l| l.seq) + 1;
            let again = job
                .checkpoint
                .as_ref()
                .is_some_and(|l| l.seq == c.seq && l.epoch == r.epoch && c.epoch == r.epoch);
            if !(next || again) {
                return false;
            }
        }
        job.updated_at_ms = now_ms;
        job.error = r.error.clone();
        job.metrics = r.metrics.clone();
        if r.failed {
            job.status = StreamStatus::Failed;
            job.node = None;
            self.changes = self.changes.wrapping_add(1);
            return true;
        }
        // Running once the runner says so without a problem (its source is ready).
        if job.status == StreamStatus::Starting && r.error.is_none() {
            job.status = StreamStatus::Running;
            self.changes = self.changes.wrapping_add(1);
        }
        if let Some(c) = &r.checkpoint {
            job.checkpoint = Some(c.clone());
            job.metrics.last_checkpoint_ms = Some(c.at_ms);
        }
        let ids = self.ids.entry(r.id).or_default();
        for (rid, json) in &r.results {
            if !ids.insert(rid.clone()) {
                continue;
            }
            job.results.push_back(StreamResult {
                seq: job.next_result_seq,
                result_id: rid.clone(),
                json: json.clone(),
            });
            job.next_result_seq += 1;
        }
        let max = job.spec.max_results.max(1) as usize;
        while job.results.len() > max {
            if let Some(old) = job.results.pop_front() {
                ids.remove(&old.result_id);
            }
        }
        true
    }

    /// A node was lost: its jobs wait for another node (a new epoch fences the old runner).
    pub(crate) fn node_down(&mut self, now_ms: u64, node: NodeId) -> Vec<StreamId> {
        let mut moved = Vec::new();
        for job in self.jobs.values_mut() {
            if job.node == Some(node) {
                job.node = None;
                job.status = StreamStatus::Starting;
                job.updated_at_ms = now_ms;
                moved.push(job.id);
            }
        }
        if !moved.is_empty() {
            self.changes = self.changes.wrapping_add(1);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StreamSpec {
        StreamSpec {
            name: "t".into(),
            definition: "{}".into(),
            constraints: Constraints::default(),
            resources: Resources::default(),
            checkpoint_ms: 1000,
            max_results: 3,
            submitter: "anon".into(),
        }
    }

    fn report(id: StreamId, node: NodeId, epoch: u64, seq: u64, results: &[&str]) -> StreamReport {
        StreamReport {
            id,
            node,
            epoch,
            failed: false,
            error: None,
            metrics: StreamMetrics::default(),
            checkpoint: Some(StreamCheckpoint {
                seq,
                epoch,
                at_ms: 5,
                data: vec![seq as u8],
            }),
            results: results
                .iter()
                .map(|r| (r.to_string(), format!("{{\"r\":\"{r}\"}}")))
                .collect(),
        }
    }

    #[test]
    fn placement_is_fenced_by_epoch_and_checkpoints_follow_each_other() {
        let mut s = Streams::default();
        let id = s.create(1, &spec());
        assert!(!s.place(2, id, 1, 2), "epoch must be the next one");
        assert!(s.place(2, id, 1, 1));
        assert!(!s.place(2, id, 2, 2), "already placed");
        assert!(s.report(3, &report(id, 1, 1, 1, &["a", "b"])));
        assert_eq!(s.get(id).map(|j| j.status), Some(StreamStatus::Running));
        // seq 1 again from the same runner (its answer was lost): it replaces seq 1.
        assert!(
            s.report(3, &report(id, 1, 1, 1, &["a", "b"])),
            "seq 1 again"
        );
        assert_eq!(s.results(id, 0, 10).len(), 2, "repeats skipped");
        assert!(!s.report(3, &report(id, 1, 1, 3, &["c"])), "seq skipped");
        // The node is lost: the job moves; the old runner's reports are refused.
        assert_eq!(s.node_down(4, 1), vec![id]);
        assert_eq!(s.unplaced().count(), 1);
        assert!(s.place(5, id, 2, 2));
        assert!(!s.report(6, &report(id, 1, 1, 2, &["x"])), "old epoch");
        // The new runner repeats a result it re-made from the checkpoint: kept once.
        assert!(s.report(6, &report(id, 2, 2, 2, &["b", "c", "d"])));
        let kept: Vec<&str> = s
            .results(id, 0, 10)
            .iter()
            .map(|r| r.result_id.as_str())
            .collect();
        assert_eq!(kept, vec!["b", "c", "d"], "max_results = 3, oldest dropped");
        let after: Vec<u64> = s.results(id, 3, 10).iter().map(|r| r.seq).collect();
        assert_eq!(after, vec![4]);
        assert_eq!(s.get(id).map(|j| j.moves), Some(1));
    }

    #[test]
    fn pause_resume_delete() {
        let mut s = Streams::default();
        let id = s.create(1, &spec());
        assert!(s.place(2, id, 1, 1));
        assert_eq!(
            s.control(3, id, StreamAction::Pause),
            Some(StreamStatus::Paused)
        );
        assert!(!s.report(4, &report(id, 1, 1, 1, &[])), "paused: fenced");
        assert_eq!(s.unplaced().count(), 0);
        assert_eq!(
            s.control(5, id, StreamAction::Resume),
            Some(StreamStatus::Starting)
        );
        assert!(
            !s.place(6, id, 2, 3),
            "pause and resume each moved the epoch"
        );
        assert!(s.place(6, id, 2, 4));
        let mut failed = report(id, 2, 4, 1, &[]);
        failed.failed = true;
        failed.error = Some("broker unreachable".into());
        assert!(s.report(7, &failed));
        assert_eq!(s.get(id).map(|j| j.status), Some(StreamStatus::Failed));
        assert_eq!(s.unplaced().count(), 0, "a failed job is not placed again");
        assert_eq!(
            s.control(8, id, StreamAction::Delete),
            Some(StreamStatus::Stopped)
        );
        assert!(s.get(id).is_none());
        assert_eq!(s.control(9, id, StreamAction::Pause), None);
    }
}
