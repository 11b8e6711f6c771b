//! `ClusterState`: the replicated state machine.
//!
//! `apply` is deterministic: given the same state and command every node reaches the same
//! state and answer. Times come from the command; ids from `next_id`.
//!
//! Besides the tasks themselves the state keeps indexes (pending queue, active tasks per
//! node, counts per status). They are not serialized; [`ClusterState::rebuild_indexes`]
//! recreates them after a snapshot is loaded.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::*;
use crate::job::{FireRecord, Job, JobSpec, SlotDecision, RECENT_FIRES};
use crate::node::{NodeId, NodeInfo};
use crate::store::{EndedBrief, TaskStore};
use crate::task::*;

/// A change to one task, reported by `apply` so that actors (Scheduler, Worker, waiters)
/// react without scanning the whole state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskEvent {
    pub id: TaskId,
    pub status: TaskStatus,
    pub node: Option<NodeId>,
    pub attempt: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ClusterState {
    /// Live tasks as they are, ended ones packed (see [`TaskStore`]).
    pub tasks: TaskStore,
    /// The id the next submitted task gets.
    pub next_id: TaskId,
    /// Key → (task, when the key was first used).
    pub idempotency: BTreeMap<String, (TaskId, u64)>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub jobs: BTreeMap<JobId, Job>,
    pub next_job_id: JobId,
    /// Stream jobs (format 7).
    pub streams: crate::stream::Streams,
    /// WebAssembly modules (format 8).
    pub modules: crate::module::Modules,

    /// Pending tasks in queues of one priority and one [`Shape`], highest priority first,
    /// each queue oldest first. The scheduler drops a whole queue once its shape found no
    /// node: a backlog no node can take costs it one look per plan, not one per task.
    #[serde(skip)]
    pending: BTreeMap<(Reverse<i32>, Shape), BTreeSet<TaskId>>,
    /// Scheduled or running tasks per node.
    #[serde(skip)]
    active: BTreeMap<NodeId, BTreeSet<TaskId>>,
    #[serde(skip)]
    counts: [u64; 7],
    /// Pending tasks per submitter (admission control).
    #[serde(skip)]
    pending_by_submitter: BTreeMap<String, u64>,
    /// Pending tasks per priority (the Monitor's gauges, without a walk over the queue).
    #[serde(skip)]
    pending_by_priority: BTreeMap<i32, u64>,
    /// Task → unfinished tasks waiting for it (`after`).
    #[serde(skip)]
    dependents: BTreeMap<TaskId, BTreeSet<TaskId>>,
    /// The dead-letter queue.
    #[serde(skip)]
    dlq: BTreeSet<TaskId>,
    /// Idempotency keys by age (for the window).
    #[serde(skip)]
    keys_by_age: BTreeSet<(u64, String)>,
}

/// What decides whether a pending task fits a node: its constraints and its demand. Tasks of
/// one shape fit the same nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    pub constraints: Constraints,
    pub cpu_millis: u32,
    pub memory_mb: u32,
}

impl Shape {
    pub fn of(t: &Task) -> Shape {
        Shape {
            constraints: t.spec.constraints.clone(),
            cpu_millis: t.spec.resources.cpu_millis.unwrap_or(0),
            memory_mb: t.spec.resources.memory_mb.unwrap_or(0),
        }
    }
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState {
            next_id: 1,
            next_job_id: 1,
            ..ClusterState::default()
        }
    }

    /// Recreate the indexes from the tasks (after deserializing a snapshot).
    pub fn rebuild_indexes(&mut self) {
        self.streams.rebuild_indexes();
        self.pending.clear();
        self.active.clear();
        self.counts = [0; 7];
        self.pending_by_submitter.clear();
        self.pending_by_priority.clear();
        self.dependents.clear();
        self.dlq.clear();
        self.keys_by_age = self
            .idempotency
            .iter()
            .map(|(k, (_, at))| (*at, k.clone()))
            .collect();
        let live: Vec<TaskId> = self.tasks.live_tasks().map(|t| t.id).collect();
        for id in live {
            self.index_insert(id);
            if let Some(t) = self.tasks.live(id) {
                for d in &t.waiting_on {
                    self.dependents.entry(*d).or_default().insert(id);
                }
            }
        }
        let ended: Vec<EndedBrief> = self.tasks.ended_briefs().collect();
        for b in ended {
            self.counts[b.status.index()] += 1;
            if b.dead_letter {
                self.dlq.insert(b.id);
            }
        }
    }

    fn index_insert(&mut self, id: TaskId) {
        let Some(t) = self.tasks.live(id) else {
            if let Some(b) = self.tasks.ended_brief(id) {
                self.counts[b.status.index()] += 1;
                if b.dead_letter {
                    self.dlq.insert(id);
                }
            }
            return;
        };
        self.counts[t.status.index()] += 1;
        match t.status {
            TaskStatus::Pending => {
                self.pending
                    .entry((Reverse(t.spec.priority), Shape::of(t)))
                    .or_default()
                    .insert(id);
                *self.pending_by_priority.entry(t.spec.priority).or_default() += 1;
                *self
                    .pending_by_submitter
                    .entry(t.spec.submitter.clone())
                    .or_default() += 1;
            }
            TaskStatus::Scheduled | TaskStatus::Running => {
                if let Some(n) = t.node {
                    self.active.entry(n).or_default().insert(id);
                }
            }
            _ => {
                if t.dead_letter {
                    self.dlq.insert(id);
                }
            }
        }
    }

    fn index_remove(&mut self, id: TaskId) {
        let Some(t) = self.tasks.live(id) else {
            if let Some(b) = self.tasks.ended_brief(id) {
                self.counts[b.status.index()] = self.counts[b.status.index()].saturating_sub(1);
                self.dlq.remove(&id);
            }
            return;
        };
        self.counts[t.status.index()] = self.counts[t.status.index()].saturating_sub(1);
        match t.status {
            TaskStatus::Pending => {
                let key = (Reverse(t.spec.priority), Shape::of(t));
                if let Some(q) = self.pending.get_mut(&key) {
                    q.remove(&id);
                    if q.is_empty() {
                        self.pending.remove(&key);
                    }
                }
                if let Some(n) = self.pending_by_priority.get_mut(&t.spec.priority) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.pending_by_priority.remove(&t.spec.priority);
                    }
                }
                if let Some(n) = self.pending_by_submitter.get_mut(&t.spec.submitter) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.pending_by_submitter.remove(&t.spec.submitter);
                    }
                }
            }
            TaskStatus::Scheduled | TaskStatus::Running => {
                if let Some(n) = t.node {
                    if let Some(set) = self.active.get_mut(&n) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.active.remove(&n);
                        }
                    }
                }
            }
            _ => {
                self.dlq.remove(&id);
            }
        }
    }

    /// Change one task, keeping the indexes and the event list in step. A task that ends
    /// here settles the tasks waiting for it (`after`).
    fn update(
        &mut self,
        id: TaskId,
        now_ms: u64,
        events: &mut Vec<TaskEvent>,
        f: impl FnOnce(&mut Task),
    ) -> bool {
        let Some(was_terminal) = self.tasks.status(id).map(|s| s.is_terminal()) else {
            return false;
        };
        self.index_remove(id);
        let mut ended = None;
        let record = |t: &mut Task| {
            f(t);
            events.push(TaskEvent {
                id,
                status: t.status,
                node: t.node,
                attempt: t.attempt,
            });
            if !was_terminal && t.status.is_terminal() {
                ended = Some(t.status);
            }
        };
        if let Some(t) = self.tasks.live_mut(id) {
            record(t);
            self.tasks.settle(id);
        } else if let Some(mut t) = self.tasks.remove(id) {
            // An ended task changing (a requeue): unpacked, changed, stored as it now is.
            record(&mut t);
            self.tasks.insert(t);
        }
        self.index_insert(id);
        if let Some(status) = ended {
            self.settle_dependents(id, status, now_ms, events);
        }
        true
    }

    /// `dep` ended with `status`: its waiting tasks go on (success) or fail.
    fn settle_dependents(
        &mut self,
        dep: TaskId,
        status: TaskStatus,
        now_ms: u64,
        events: &mut Vec<TaskEvent>,
    ) {
        let Some(waiting) = self.dependents.remove(&dep) else {
            return;
        };
        for w in waiting {
            if status == TaskStatus::Succeeded {
                if let Some(t) = self.tasks.live_mut(w) {
                    t.waiting_on.retain(|d| *d != dep);
                }
                // An event so the scheduler looks again.
                if let Some(t) = self.tasks.live(w) {
                    events.push(TaskEvent {
                        id: w,
                        status: t.status,
                        node: t.node,
                        attempt: t.attempt,
                    });
                }
            } else {
                self.update(w, now_ms, events, |t| {
                    t.status = TaskStatus::Failed;
                    t.node = None;
                    t.finished_at_ms = Some(now_ms);
                    t.error = Some(TaskError {
                        code: "dependency_failed".into(),
                        message: format!("task {dep} (in after) ended {}", status.as_str()),
                    });
                });
            }
        }
    }

    /// A task: borrowed while it is live, unpacked once it ended.
    pub fn task(&self, id: TaskId) -> Option<Cow<'_, Task>> {
        self.tasks.get(id)
    }

    /// A task's status (cheap for an ended task too).
    pub fn task_status(&self, id: TaskId) -> Option<TaskStatus> {
        self.tasks.status(id)
    }

    /// Pending tasks by priority (highest first), then oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Task> + '_ {
        let mut ids: Vec<(Reverse<i32>, TaskId)> = self
            .pending
            .iter()
            .flat_map(|((p, _), q)| q.iter().map(move |id| (*p, *id)))
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|(_, id)| self.tasks.live(id))
    }

    /// The pending queues: (priority, shape, its tasks oldest first), highest priority first.
    pub fn pending_queues(
        &self,
    ) -> impl Iterator<Item = (i32, &Shape, impl Iterator<Item = &Task> + '_)> + '_ {
        self.pending
            .iter()
            .map(|((p, shape), q)| (p.0, shape, q.iter().filter_map(|id| self.tasks.live(*id))))
    }

    /// How many tasks are pending at each priority (only priorities with some).
    pub fn pending_counts(&self) -> &BTreeMap<i32, u64> {
        &self.pending_by_priority
    }

    /// Scheduled or running tasks on `node`.
    pub fn active_on(&self, node: NodeId) -> impl Iterator<Item = &Task> + '_ {
        self.active
            .get(&node)
            .into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|id| self.tasks.live(*id))
    }

    pub fn active_count(&self, node: NodeId) -> usize {
        self.active.get(&node).map_or(0, |s| s.len())
    }

    pub fn count(&self, status: TaskStatus) -> u64 {
        self.counts[status.index()]
    }

    pub fn pending_of(&self, submitter: &str) -> u64 {
        self.pending_by_submitter
            .get(submitter)
            .copied()
            .unwrap_or(0)
    }

    /// Ended tasks, oldest id first: id, status and finish time, without unpacking them.
    pub fn finished(&self) -> impl DoubleEndedIterator<Item = EndedBrief> + '_ {
        self.tasks.ended_briefs()
    }

    pub fn finished_count(&self) -> usize {
        self.tasks.ended_len()
    }

    /// The dead-letter queue, oldest first, from after `after`.
    pub fn dead_letters(&self, after: Option<TaskId>) -> impl Iterator<Item = Cow<'_, Task>> + '_ {
        let lower = after.map_or(0, |a| a.saturating_add(1));
        self.dlq.range(lower..).filter_map(|id| self.tasks.get(*id))
    }

    /// Tasks newest first, optionally of one status, starting below `before` (a cursor).
    pub fn list(
        &self,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
    ) -> Vec<Cow<'_, Task>> {
        let upper = before.unwrap_or(TaskId::MAX);
        self.tasks.newest_below(upper, status).take(limit).collect()
    }

    /// Apply one command. Deterministic; never panics on any command.
    pub fn apply(&mut self, req: &RaftRequest, events: &mut Vec<TaskEvent>) -> Response {
        if !crate::applies_format(req.version) {
            return Response::UnsupportedVersion(req.version);
        }
        self.apply_command(&req.command, events)
    }

    /// Forget idempotency keys older than the window.
    fn expire_keys(&mut self, now_ms: u64, window_ms: u64) {
        if window_ms == 0 {
            return;
        }
        while let Some((at, key)) = self.keys_by_age.first().cloned() {
            if at.saturating_add(window_ms) >= now_ms {
                break;
            }
            self.keys_by_age.pop_first();
            if self.idempotency.get(&key).is_some_and(|(_, a)| *a == at) {
                self.idempotency.remove(&key);
            }
        }
    }

    /// Check a submission against the admission limits: the tasks it would create, or why not.
    fn admit(&self, tasks: &[TaskSpec], adm: &Admission) -> Result<(), Response> {
        let mut keys = BTreeSet::new();
        let mut new_by: BTreeMap<&str, u64> = BTreeMap::new();
        let mut new = 0u64;
        for spec in tasks {
            if let Some(key) = &spec.idempotency_key {
                if self.idempotency.contains_key(key) || !keys.insert(key.as_str()) {
                    continue;
                }
            }
            new += 1;
            *new_by.entry(spec.submitter.as_str()).or_default() += 1;
        }
        let pending = self.count(TaskStatus::Pending);
        if adm.max_pending > 0 && pending + new > adm.max_pending {
            return Err(Response::Rejected {
                code: "cluster_full".into(),
                message: format!(
                    "the cluster has {pending} pending tasks; {new} more would pass limits.max_pending = {}",
                    adm.max_pending
                ),
                retry_after_ms: 1000,
            });
        }
        if adm.max_pending_per_submitter > 0 {
            for (who, n) in new_by {
                let have = self.pending_of(who);
                if have + n > adm.max_pending_per_submitter {
                    return Err(Response::Rejected {
                        code: "too_many_pending".into(),
                        message: format!(
                            "submitter {who:?} has {have} pending tasks; {n} more would pass limits.max_pending_per_submitter = {}",
                            adm.max_pending_per_submitter
                        ),
                        retry_after_ms: 1000,
                    });
                }
            }
        }
        Ok(())
    }

    /// Store a new pending task (its dependencies resolved against what exists now).
    fn create_task(
        &mut self,
        spec: TaskSpec,
        now_ms: u64,
        job: Option<JobFire>,
        ev: &mut Vec<TaskEvent>,
    ) -> TaskId {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        let mut waiting_on = Vec::new();
        let mut broken: Option<TaskError> = None;
        for dep in &spec.after {
            match self.tasks.status(*dep) {
                Some(TaskStatus::Succeeded) => {}
                Some(s) if s.is_terminal() => {
                    broken.get_or_insert(TaskError {
                        code: "dependency_failed".into(),
                        message: format!("task {dep} (in after) ended {}", s.as_str()),
                    });
                }
                Some(_) => {
                    if !waiting_on.contains(dep) {
                        waiting_on.push(*dep);
                    }
                }
                None => {
                    broken.get_or_insert(TaskError {
                        code: "dependency_unknown".into(),
                        message: format!("task {dep} (in after) does not exist"),
                    });
                }
            }
        }
        let (status, finished_at_ms, waiting_on) = match &broken {
            Some(_) => (TaskStatus::Failed, Some(now_ms), Vec::new()),
            None => (TaskStatus::Pending, None, waiting_on),
        };
        for dep in &waiting_on {
            self.dependents.entry(*dep).or_default().insert(id);
        }
        self.tasks.insert(Task {
            id,
            spec,
            status,
            attempt: 0,
            node: None,
            last_node: None,
            created_at_ms: now_ms,
            scheduled_at_ms: None,
            started_at_ms: None,
            finished_at_ms,
            retry_delay_ms: None,
            result: None,
            error: broken,
            isolation: None,
            attempts_uncounted: 0,
            preemptions: 0,
            dead_letter: false,
            waiting_on,
            job,
            result_ref: None,
            attempts_log: Vec::new(),
            cached: false,
        });
        self.index_insert(id);
        ev.push(TaskEvent {
            id,
            status,
            node: None,
            attempt: 0,
        });
        id
    }

    fn fire(
        &mut self,
        now_ms: u64,
        job_id: JobId,
        slots: &[SlotDecision],
        ev: &mut Vec<TaskEvent>,
    ) -> Response {
        let mut made = Vec::new();
        let mut refused = 0u32;
        for d in slots {
            let Some(job) = self.jobs.get(&job_id) else {
                refused += 1;
                continue;
            };
            if job.last_slot_ms.is_some_and(|l| d.slot_ms <= l) {
                refused += 1;
                continue;
            }
            let overlapping = job.spec.overlap == crate::job::Overlap::Forbid
                && job
                    .last_task
                    .and_then(|t| self.tasks.status(t))
                    .is_some_and(|s| !s.is_terminal());
            let skip = d
                .skip
                .clone()
                .or_else(|| overlapping.then(|| "overlap".to_string()));
            let task = match skip {
                Some(_) => None,
                None => {
                    let mut spec = job.spec.task.clone();
                    // One trace per fired slot, the same on every node.
                    spec.trace_id = slot_trace_id(job_id, d.slot_ms);
                    Some(self.create_task(
                        spec,
                        now_ms,
                        Some(JobFire {
                            job: job_id,
                            slot_ms: d.slot_ms,
                        }),
                        ev,
                    ))
                }
            };
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            job.last_slot_ms = Some(d.slot_ms);
            match task {
                Some(t) => {
                    job.fires += 1;
                    job.last_fire_ms = Some(d.slot_ms);
                    job.last_task = Some(t);
                    made.push(t);
                }
                None => job.skipped += 1,
            }
            job.recent.push_back(FireRecord {
                slot_ms: d.slot_ms,
                decided_at_ms: now_ms,
                task,
                skipped: skip,
            });
            while job.recent.len() > RECENT_FIRES {
                job.recent.pop_front();
            }
        }
        Response::Fired {
            tasks: made,
            refused,
        }
    }

    fn create_job(&mut self, now_ms: u64, spec: &JobSpec) -> Response {
        let id = self.next_job_id.max(1);
        self.next_job_id = id + 1;
        self.jobs.insert(
            id,
            Job {
                id,
                spec: spec.clone(),
                created_at_ms: now_ms,
                fires: 0,
                skipped: 0,
                last_slot_ms: None,
                last_fire_ms: None,
                last_task: None,
                recent: Default::default(),
            },
        );
        Response::JobCreated(id)
    }

    /// Submit: admission, idempotency keys, then one task per spec (moved in when owned).
    fn submit(
        &mut self,
        now_ms: u64,
        tasks: Cow<'_, [TaskSpec]>,
        admission: &Admission,
        ev: &mut Vec<TaskEvent>,
    ) -> Response {
        self.expire_keys(now_ms, admission.idempotency_window_ms);
        if let Err(rejected) = self.admit(&tasks, admission) {
            return rejected;
        }
        let mut out = Vec::with_capacity(tasks.len());
        for spec in tasks.into_owned() {
            if let Some(key) = &spec.idempotency_key {
                if let Some(&(id, _)) = self.idempotency.get(key) {
                    out.push(Submitted { id, created: false });
                    continue;
                }
            }
            let key = spec.idempotency_key.clone();
            let id = self.create_task(spec, now_ms, None, ev);
            if let Some(key) = key {
                self.idempotency.insert(key.clone(), (id, now_ms));
                self.keys_by_age.insert((now_ms, key));
            }
            out.push(Submitted { id, created: true });
        }
        Response::Submitted(out)
    }

    /// [`ClusterState::apply`] on a request it may take apart: submitted specs move into their
    /// tasks instead of being copied (the same result, tested).
    pub fn apply_owned(&mut self, req: RaftRequest, events: &mut Vec<TaskEvent>) -> Response {
        if !crate::applies_format(req.version) {
            return Response::UnsupportedVersion(req.version);
        }
        self.apply_command_owned(req.command, events)
    }

    fn apply_command_owned(&mut self, cmd: Command, ev: &mut Vec<TaskEvent>) -> Response {
        match cmd {
            Command::Submit {
                now_ms,
                tasks,
                admission,
            } => self.submit(now_ms, Cow::Owned(tasks), &admission, ev),
            Command::Batch(cmds) => Response::Batch(
                cmds.into_iter()
                    .map(|c| self.apply_command_owned(c, ev))
                    .collect(),
            ),
            other => self.apply_command(&other, ev),
        }
    }

    fn apply_command(&mut self, cmd: &Command, ev: &mut Vec<TaskEvent>) -> Response {
        match cmd {
            Command::Submit {
                now_ms,
                tasks,
                admission,
            } => self.submit(*now_ms, Cow::Borrowed(tasks), admission, ev),
            Command::Assign {
                now_ms,
                assignments,
            } => {
                let mut out = Vec::with_capacity(assignments.len());
                for a in assignments {
                    let ok = self.tasks.live(a.task).is_some_and(|t| {
                        t.status == TaskStatus::Pending
                            && t.attempt + 1 == a.attempt
                            && t.waiting_on.is_empty()
                    });
                    if ok {
                        self.update(a.task, *now_ms, ev, |t| {
                            t.status = TaskStatus::Scheduled;
                            t.attempt = a.attempt;
                            t.node = Some(a.node);
                            t.last_node = Some(a.node);
                            t.scheduled_at_ms = Some(*now_ms);
                            t.started_at_ms = None;
                            t.retry_delay_ms = None;
                        });
                    }
                    out.push(ok);
                }
                Response::Accepted(out)
            }
            Command::Start { now_ms, starts } => {
                let mut out = Vec::with_capacity(starts.len());
                for s in starts {
                    let ok = self.tasks.live(s.task).is_some_and(|t| {
                        t.status == TaskStatus::Scheduled
                            && t.attempt == s.attempt
                            && t.node == Some(s.node)
                    });
                    if ok {
                        self.update(s.task, *now_ms, ev, |t| {
                            t.status = TaskStatus::Running;
                            t.started_at_ms = Some(*now_ms);
                        });
                    }
                    out.push(ok);
                }
                Response::Accepted(out)
            }
            Command::Complete {
                now_ms,
                completions,
            } => {
                let mut out = Vec::with_capacity(completions.len());
                for c in completions {
                    let a = c.attempt;
                    let ok = self.tasks.live(a.task).is_some_and(|t| {
                        matches!(t.status, TaskStatus::Scheduled | TaskStatus::Running)
                            && t.attempt == a.attempt
                            && t.node == Some(a.node)
                    });
                    if ok {
                        self.update(a.task, *now_ms, ev, |t| finish(t, c, *now_ms));
                    }
                    out.push(ok);
                }
                Response::Accepted(out)
            }
            Command::Cancel { now_ms, ids } => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.tasks.status(*id) {
                        None => out.push(None),
                        Some(s) if s.is_terminal() => out.push(Some(s)),
                        Some(_) => {
                            self.update(*id, *now_ms, ev, |t| {
                                if t.node.is_some() {
                                    t.log_attempt(*now_ms, "cancelled");
                                }
                                t.status = TaskStatus::Cancelled;
                                t.finished_at_ms = Some(*now_ms);
                            });
                            out.push(Some(TaskStatus::Cancelled));
                        }
                    }
                }
                Response::Cancelled(out)
            }
            Command::RegisterNode { now_ms, node } => {
                let mut n = node.clone();
                n.registered_at_ms = *now_ms;
                n.up = true;
                n.down_since_ms = None;
                self.nodes.insert(n.id, n);
                Response::NodeRegistered
            }
            Command::NodeDown { now_ms, node } => {
                let changed = match self.nodes.get_mut(node) {
                    Some(n) if n.up => {
                        n.up = false;
                        n.down_since_ms = Some(*now_ms);
                        true
                    }
                    _ => false,
                };
                self.streams.node_down(*now_ms, *node);
                let ids: Vec<TaskId> = self
                    .active
                    .get(node)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for id in &ids {
                    self.update(*id, *now_ms, ev, |t| {
                        t.log_attempt(*now_ms, "node_lost");
                        t.status = TaskStatus::Pending;
                        t.node = None;
                        t.retry_delay_ms = None;
                        t.error = Some(TaskError {
                            code: "node_lost".into(),
                            message: format!(
                                "node {node} stopped answering during attempt {}",
                                t.attempt
                            ),
                        });
                    });
                }
                Response::NodeMarked {
                    changed,
                    requeued: ids,
                }
            }
            Command::NodeUp { node, .. } => {
                let changed = match self.nodes.get_mut(node) {
                    Some(n) if !n.up => {
                        n.up = true;
                        n.down_since_ms = None;
                        true
                    }
                    _ => false,
                };
                Response::NodeMarked {
                    changed,
                    requeued: Vec::new(),
                }
            }
            Command::Preempt { now_ms, victims } => {
                let mut out = Vec::with_capacity(victims.len());
                for v in victims {
                    let ok = self.tasks.live(v.task).is_some_and(|t| {
                        matches!(t.status, TaskStatus::Scheduled | TaskStatus::Running)
                            && t.attempt == v.attempt
                            && t.node == Some(v.node)
                    });
                    if ok {
                        self.update(v.task, *now_ms, ev, |t| {
                            t.log_attempt(*now_ms, "preempted");
                            t.status = TaskStatus::Pending;
                            t.node = None;
                            t.retry_delay_ms = None;
                            t.attempts_uncounted += 1;
                            t.preemptions += 1;
                            t.error = Some(TaskError {
                                code: "preempted".into(),
                                message: format!(
                                    "attempt {} on node {} made room for a higher-priority task; it does not count against the retries",
                                    t.attempt, v.node
                                ),
                            });
                        });
                    }
                    out.push(ok);
                }
                Response::Accepted(out)
            }
            Command::Requeue { now_ms, ids } => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match self
                        .tasks
                        .ended_brief(*id)
                        .map(|b| b.dead_letter)
                        .or_else(|| self.tasks.contains(*id).then_some(false))
                    {
                        None => out.push(None),
                        Some(false) => out.push(Some(false)),
                        Some(true) => {
                            self.update(*id, *now_ms, ev, |t| {
                                t.status = TaskStatus::Pending;
                                t.node = None;
                                t.dead_letter = false;
                                t.attempts_uncounted = t.attempt;
                                t.retry_delay_ms = None;
                                t.finished_at_ms = None;
                                t.result = None;
                            });
                            out.push(Some(true));
                        }
                    }
                }
                Response::Requeued(out)
            }
            Command::Collect { ids, .. } => {
                let mut n = 0;
                for id in ids {
                    if !self.tasks.status(*id).is_some_and(|s| s.is_terminal()) {
                        continue;
                    }
                    self.index_remove(*id);
                    if let Some(t) = self.tasks.remove(*id) {
                        if let Some(key) = &t.spec.idempotency_key {
                            if let Some((kid, at)) = self.idempotency.get(key).copied() {
                                if kid == *id {
                                    self.idempotency.remove(key);
                                    self.keys_by_age.remove(&(at, key.clone()));
                                }
                            }
                        }
                        n += 1;
                    }
                }
                Response::Collected(n)
            }
            Command::CreateJob { now_ms, spec } => self.create_job(*now_ms, spec),
            Command::DeleteJob { id, .. } => Response::JobDeleted(self.jobs.remove(id).is_some()),
            Command::Fire { now_ms, job, slots } => self.fire(*now_ms, *job, slots, ev),
            Command::Batch(cmds) => {
                Response::Batch(cmds.iter().map(|c| self.apply_command(c, ev)).collect())
            }
            Command::CreateStream { now_ms, spec } => {
                Response::StreamCreated(self.streams.create(*now_ms, spec))
            }
            Command::StreamControl { now_ms, id, action } => {
                Response::StreamChanged(self.streams.control(*now_ms, *id, *action))
            }
            Command::PlaceStream {
                now_ms,
                id,
                node,
                epoch,
            } => {
                let up = self.nodes.get(node).is_some_and(|n| n.up);
                Response::Accepted(vec![up && self.streams.place(*now_ms, *id, *node, *epoch)])
            }
            Command::StreamReport { now_ms, report } => {
                Response::Accepted(vec![self.streams.report(*now_ms, report)])
            }
            Command::PutModule { module } => match self.modules.put((**module).clone()) {
                Ok(created) => Response::ModulePut { created },
                Err(message) => Response::Rejected {
                    code: "invalid_module".into(),
                    message,
                    retry_after_ms: 0,
                },
            },
            Command::DeleteModule { id } => Response::ModuleDeleted(self.delete_module(id)),
        }
    }
}

impl ClusterState {
    /// Remove module `id` unless a task that has not ended or a job's template runs it
    /// (`Err` says which).
    fn delete_module(&mut self, id: &str) -> Result<bool, String> {
        if self.modules.get(id).is_none() {
            return Ok(false);
        }
        let uses = |w: &Work| matches!(w, Work::Wasm { module, .. } if module == id);
        if let Some(t) = self.tasks.live_tasks().find(|t| uses(&t.spec.work)) {
            return Err(format!("task {} ({}) runs it", t.id, t.status.as_str()));
        }
        if let Some(j) = self.jobs.values().find(|j| uses(&j.spec.task.work)) {
            return Err(format!("job {} ({}) runs it", j.id, j.spec.name));
        }
        Ok(self.modules.remove(id))
    }
}

/// Record how an attempt ended; a retryable end with attempts left goes back to pending.
fn finish(t: &mut Task, c: &Completion, now_ms: u64) {
    let node = t.node;
    finish_inner(t, c, now_ms);
    let outcome = match &c.outcome {
        Outcome::Succeeded { .. } | Outcome::Stored { .. } => "succeeded".to_string(),
        Outcome::Failed { error, .. } => error.code.clone(),
        Outcome::TimedOut { .. } => "timed_out".to_string(),
    };
    t.last_node = node;
    t.log_attempt(now_ms, &outcome);
}

fn finish_inner(t: &mut Task, c: &Completion, now_ms: u64) {
    t.isolation = Some(c.isolation);
    t.cached = c.cached && matches!(c.outcome, Outcome::Succeeded { .. });
    let attempts_left = t.counted_attempts() < t.spec.retry.max_attempts;
    match &c.outcome {
        Outcome::Succeeded { result } => {
            t.status = TaskStatus::Succeeded;
            t.result = Some(result.clone());
            t.result_ref = None;
            t.error = None;
            t.finished_at_ms = Some(now_ms);
        }
        Outcome::Stored { node, bytes } => {
            t.status = TaskStatus::Succeeded;
            t.result = None;
            t.result_ref = Some(ResultRef {
                node: *node,
                attempt: t.attempt,
                bytes: *bytes,
            });
            t.error = None;
            t.finished_at_ms = Some(now_ms);
        }
        Outcome::Failed {
            error,
            retryable,
            output,
        } => {
            t.error = Some(error.clone());
            t.result = output.clone();
            if *retryable && attempts_left {
                requeue(t);
            } else {
                t.status = TaskStatus::Failed;
                t.finished_at_ms = Some(now_ms);
                // Bad input fails the same way again: not a dead letter to requeue.
                t.dead_letter = *retryable;
            }
        }
        Outcome::TimedOut { after_ms } => {
            t.error = Some(TaskError {
                code: "timed_out".into(),
                message: format!("attempt {} ran longer than {after_ms} ms", t.attempt),
            });
            if attempts_left {
                requeue(t);
            } else {
                t.status = TaskStatus::TimedOut;
                t.finished_at_ms = Some(now_ms);
                t.dead_letter = true;
            }
        }
    }
}

fn requeue(t: &mut Task) {
    t.status = TaskStatus::Pending;
    t.node = None;
    t.retry_delay_ms = Some(t.spec.retry.delay_after(t.id, t.counted_attempts()));
}

/// The trace id of the task a job makes for one slot: derived from the job and the slot, so
/// every node applying the Fire computes the same one.
pub fn slot_trace_id(job: u64, slot_ms: u64) -> String {
    format!("{job:016x}{slot_ms:016x}")
}

#[cfg(test)]
mod tests;
