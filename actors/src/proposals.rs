//! Typed proposals: one [`Proposer`] method per command, each answering in the shape that
//! command's `apply` gives (`edgerun_model::Response`), so that callers match on what can
//! happen instead of on every `Response` variant. A `Response` of another shape is a bug in
//! the state machine; it is found here, once, as [`ProposeError::Answer`].
//!
//! Every method stamps the command with the proposer's clock ([`crate::now_ms`]) and waits
//! until the entry is committed and applied on the leader, like [`Proposer::propose`].

use edgerun_model::{
    Admission, Assignment, AttemptRef, Command, Completion, JobId, JobSpec, NodeId, NodeInfo,
    Response, SlotDecision, StreamAction, StreamId, StreamReport, StreamSpec, StreamStatus,
    Submitted, TaskId, TaskSpec, TaskStatus,
};

use crate::{now_ms, ProposeError, Proposer};

/// A submission over an admission limit: nothing was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `cluster_full` or `too_many_pending`.
    pub code: String,
    pub message: String,
    pub retry_after_ms: u64,
}

/// Stored submissions: one per spec, in order, and the log index of the entry that carried
/// them (a node that has applied it reads what was written).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub tasks: Vec<Submitted>,
    pub index: u64,
}

/// What a cancel did to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// It had ended before (this status); nothing changed.
    AlreadyEnded(TaskStatus),
    Unknown,
}

/// What a requeue did to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueOutcome {
    /// Back to pending with a fresh set of attempts.
    Requeued,
    /// Not dead-lettered (running, succeeded, or failed with attempts left).
    NotDeadLetter,
    Unknown,
}

/// A NodeDown or NodeUp: whether the node's state changed, and the tasks put back to pending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeMarked {
    pub changed: bool,
    pub requeued: Vec<TaskId>,
}

/// A Fire: the tasks made, and how many slots were refused as already decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fired {
    pub tasks: Vec<TaskId>,
    pub refused: u32,
}

fn mismatch(command: &'static str, got: &Response) -> ProposeError {
    ProposeError::Answer {
        command,
        got: format!("{got:?}"),
    }
}

/// `Accepted` with one flag per item sent.
fn accepted(command: &'static str, r: Response, n: usize) -> Result<Vec<bool>, ProposeError> {
    match r {
        Response::Accepted(v) if v.len() == n => Ok(v),
        other => Err(mismatch(command, &other)),
    }
}

impl Proposer {
    /// Create tasks, all or none (an admission limit refuses the whole submission).
    pub async fn submit(
        &self,
        tasks: Vec<TaskSpec>,
        admission: Admission,
    ) -> Result<Result<Submission, Rejected>, ProposeError> {
        let n = tasks.len();
        let (r, index) = self
            .propose_indexed(Command::Submit {
                now_ms: now_ms(),
                tasks,
                admission,
            })
            .await?;
        match r {
            Response::Submitted(tasks) if tasks.len() == n => Ok(Ok(Submission { tasks, index })),
            Response::Rejected {
                code,
                message,
                retry_after_ms,
            } => Ok(Err(Rejected {
                code,
                message,
                retry_after_ms,
            })),
            other => Err(mismatch("Submit", &other)),
        }
    }

    /// Cancel tasks unless they have ended; one outcome per id, in order.
    pub async fn cancel(&self, ids: Vec<TaskId>) -> Result<Vec<CancelOutcome>, ProposeError> {
        let n = ids.len();
        let r = self
            .propose(Command::Cancel {
                now_ms: now_ms(),
                ids,
            })
            .await?;
        match r {
            Response::Cancelled(v) if v.len() == n => Ok(v
                .into_iter()
                .map(|s| match s {
                    None => CancelOutcome::Unknown,
                    Some(TaskStatus::Cancelled) => CancelOutcome::Cancelled,
                    Some(other) => CancelOutcome::AlreadyEnded(other),
                })
                .collect()),
            other => Err(mismatch("Cancel", &other)),
        }
    }

    /// Put dead-lettered tasks back to pending; one outcome per id, in order.
    pub async fn requeue(&self, ids: Vec<TaskId>) -> Result<Vec<RequeueOutcome>, ProposeError> {
        let n = ids.len();
        let r = self
            .propose(Command::Requeue {
                now_ms: now_ms(),
                ids,
            })
            .await?;
        match r {
            Response::Requeued(v) if v.len() == n => Ok(v
                .into_iter()
                .map(|s| match s {
                    None => RequeueOutcome::Unknown,
                    Some(true) => RequeueOutcome::Requeued,
                    Some(false) => RequeueOutcome::NotDeadLetter,
                })
                .collect()),
            other => Err(mismatch("Requeue", &other)),
        }
    }

    pub async fn create_job(&self, spec: JobSpec) -> Result<JobId, ProposeError> {
        match self
            .propose(Command::CreateJob {
                now_ms: now_ms(),
                spec: Box::new(spec),
            })
            .await?
        {
            Response::JobCreated(id) => Ok(id),
            other => Err(mismatch("CreateJob", &other)),
        }
    }

    /// Whether a job of that id existed (and is deleted now).
    pub async fn delete_job(&self, id: JobId) -> Result<bool, ProposeError> {
        match self
            .propose(Command::DeleteJob {
                now_ms: now_ms(),
                id,
            })
            .await?
        {
            Response::JobDeleted(existed) => Ok(existed),
            other => Err(mismatch("DeleteJob", &other)),
        }
    }

    /// Decide slots of a periodic job (the leader's scheduler).
    pub async fn fire(&self, job: JobId, slots: Vec<SlotDecision>) -> Result<Fired, ProposeError> {
        match self
            .propose(Command::Fire {
                now_ms: now_ms(),
                job,
                slots,
            })
            .await?
        {
            Response::Fired { tasks, refused } => Ok(Fired { tasks, refused }),
            other => Err(mismatch("Fire", &other)),
        }
    }

    /// Place tasks (the leader's scheduler); per assignment, whether it was taken (false:
    /// stale, the task moved on meanwhile).
    pub async fn assign(&self, assignments: Vec<Assignment>) -> Result<Vec<bool>, ProposeError> {
        let n = assignments.len();
        let r = self
            .propose(Command::Assign {
                now_ms: now_ms(),
                assignments,
            })
            .await?;
        accepted("Assign", r, n)
    }

    /// Evict running attempts for higher-priority work; per victim, whether it was evicted.
    pub async fn preempt(&self, victims: Vec<AttemptRef>) -> Result<Vec<bool>, ProposeError> {
        let n = victims.len();
        let r = self
            .propose(Command::Preempt {
                now_ms: now_ms(),
                victims,
            })
            .await?;
        accepted("Preempt", r, n)
    }

    /// A Worker began these attempts; per attempt, whether it was still current.
    pub async fn start(&self, starts: Vec<AttemptRef>) -> Result<Vec<bool>, ProposeError> {
        let n = starts.len();
        let r = self
            .propose(Command::Start {
                now_ms: now_ms(),
                starts,
            })
            .await?;
        accepted("Start", r, n)
    }

    /// A Worker finished these attempts; per completion, whether it was taken (false: a stale
    /// attempt, or the task was cancelled).
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<Vec<bool>, ProposeError> {
        let n = completions.len();
        let r = self
            .propose(Command::Complete {
                now_ms: now_ms(),
                completions,
            })
            .await?;
        accepted("Complete", r, n)
    }

    /// Forget finished tasks (retention); how many were collected.
    pub async fn collect(&self, ids: Vec<TaskId>) -> Result<u64, ProposeError> {
        match self
            .propose(Command::Collect {
                now_ms: now_ms(),
                ids,
            })
            .await?
        {
            Response::Collected(n) => Ok(n),
            other => Err(mismatch("Collect", &other)),
        }
    }

    /// Mark a node down (its lease ran out; its unfinished tasks go back to pending) or up.
    pub async fn mark_node(&self, node: NodeId, down: bool) -> Result<NodeMarked, ProposeError> {
        let now_ms = now_ms();
        let cmd = if down {
            Command::NodeDown { now_ms, node }
        } else {
            Command::NodeUp { now_ms, node }
        };
        match self.propose(cmd).await? {
            Response::NodeMarked { changed, requeued } => Ok(NodeMarked { changed, requeued }),
            other => Err(mismatch(if down { "NodeDown" } else { "NodeUp" }, &other)),
        }
    }

    /// A node announces itself (on every start).
    pub async fn register_node(&self, node: NodeInfo) -> Result<(), ProposeError> {
        match self
            .propose(Command::RegisterNode {
                now_ms: now_ms(),
                node,
            })
            .await?
        {
            Response::NodeRegistered => Ok(()),
            other => Err(mismatch("RegisterNode", &other)),
        }
    }

    /// Store a module (checked by the caller); whether it is new.
    pub async fn put_module(
        &self,
        module: edgerun_model::module::WasmModule,
    ) -> Result<bool, ProposeError> {
        match self
            .propose(Command::PutModule {
                module: Box::new(module),
            })
            .await?
        {
            Response::ModulePut { created } => Ok(created),
            Response::Rejected { message, .. } => Err(ProposeError::Rejected(message)),
            other => Err(mismatch("PutModule", &other)),
        }
    }

    /// Remove a module: `Ok(false)` unknown, `Err` (inner) what still uses it.
    pub async fn delete_module(&self, id: String) -> Result<Result<bool, String>, ProposeError> {
        match self.propose(Command::DeleteModule { id }).await? {
            Response::ModuleDeleted(r) => Ok(r),
            other => Err(mismatch("DeleteModule", &other)),
        }
    }

    pub async fn create_stream(&self, spec: StreamSpec) -> Result<StreamId, ProposeError> {
        match self
            .propose(Command::CreateStream {
                now_ms: now_ms(),
                spec: Box::new(spec),
            })
            .await?
        {
            Response::StreamCreated(id) => Ok(id),
            other => Err(mismatch("CreateStream", &other)),
        }
    }

    /// Pause, resume or delete a stream job: its status after, `None` for an unknown id.
    pub async fn control_stream(
        &self,
        id: StreamId,
        action: StreamAction,
    ) -> Result<Option<StreamStatus>, ProposeError> {
        match self
            .propose(Command::StreamControl {
                now_ms: now_ms(),
                id,
                action,
            })
            .await?
        {
            Response::StreamChanged(s) => Ok(s),
            other => Err(mismatch("StreamControl", &other)),
        }
    }

    /// Place a waiting stream job (the leader's scheduler); false when it was stale.
    pub async fn place_stream(
        &self,
        id: StreamId,
        node: NodeId,
        epoch: u64,
    ) -> Result<bool, ProposeError> {
        let r = self
            .propose(Command::PlaceStream {
                now_ms: now_ms(),
                id,
                node,
                epoch,
            })
            .await?;
        Ok(accepted("PlaceStream", r, 1)?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// A runner's report; false when it was fenced (the job moved on, or the checkpoint does
    /// not follow the last one).
    pub async fn report_stream(&self, report: StreamReport) -> Result<bool, ProposeError> {
        let r = self
            .propose(Command::StreamReport {
                now_ms: now_ms(),
                report: Box::new(report),
            })
            .await?;
        Ok(accepted("StreamReport", r, 1)?
            .first()
            .copied()
            .unwrap_or(false))
    }
}
