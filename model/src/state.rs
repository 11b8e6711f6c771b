//! `ClusterState`: the replicated state machine.
//!
//! `apply` is deterministic: given the same state and command every node reaches the same
//! state and answer. Times come from the command; ids from `next_id`.
//!
//! Besides the tasks themselves the state keeps indexes (pending queue, active tasks per
//! node, counts per status). They are not serialized; [`ClusterState::rebuild_indexes`]
//! recreates them after a snapshot is loaded.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::*;
use crate::node::{NodeId, NodeInfo};
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
    pub tasks: BTreeMap<TaskId, Task>,
    /// The id the next submitted task gets.
    pub next_id: TaskId,
    pub idempotency: BTreeMap<String, TaskId>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,

    /// Pending tasks in placement order: highest priority first, then oldest.
    #[serde(skip)]
    pending: BTreeSet<(Reverse<i32>, TaskId)>,
    /// Scheduled or running tasks per node.
    #[serde(skip)]
    active: BTreeMap<NodeId, BTreeSet<TaskId>>,
    #[serde(skip)]
    counts: [u64; 7],
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState {
            next_id: 1,
            ..ClusterState::default()
        }
    }

    /// Recreate the indexes from the tasks (after deserializing a snapshot).
    pub fn rebuild_indexes(&mut self) {
        self.pending.clear();
        self.active.clear();
        self.counts = [0; 7];
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            self.index_insert(id);
        }
    }

    fn index_insert(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get(&id) else { return };
        self.counts[t.status.index()] += 1;
        match t.status {
            TaskStatus::Pending => {
                self.pending.insert((Reverse(t.spec.priority), id));
            }
            TaskStatus::Scheduled | TaskStatus::Running => {
                if let Some(n) = t.node {
                    self.active.entry(n).or_default().insert(id);
                }
            }
            _ => {}
        }
    }

    fn index_remove(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get(&id) else { return };
        self.counts[t.status.index()] = self.counts[t.status.index()].saturating_sub(1);
        match t.status {
            TaskStatus::Pending => {
                self.pending.remove(&(Reverse(t.spec.priority), id));
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
            _ => {}
        }
    }

    /// Change one task, keeping the indexes and the event list in step.
    fn update(
        &mut self,
        id: TaskId,
        events: &mut Vec<TaskEvent>,
        f: impl FnOnce(&mut Task),
    ) -> bool {
        if !self.tasks.contains_key(&id) {
            return false;
        }
        self.index_remove(id);
        if let Some(t) = self.tasks.get_mut(&id) {
            f(t);
            events.push(TaskEvent {
                id,
                status: t.status,
                node: t.node,
                attempt: t.attempt,
            });
        }
        self.index_insert(id);
        true
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// Pending tasks in placement order.
    pub fn pending(&self) -> impl Iterator<Item = &Task> + '_ {
        self.pending.iter().filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Scheduled or running tasks on `node`.
    pub fn active_on(&self, node: NodeId) -> impl Iterator<Item = &Task> + '_ {
        self.active
            .get(&node)
            .into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn active_count(&self, node: NodeId) -> usize {
        self.active.get(&node).map_or(0, |s| s.len())
    }

    pub fn count(&self, status: TaskStatus) -> u64 {
        self.counts[status.index()]
    }

    /// Tasks newest first, optionally of one status, starting below `before` (a cursor).
    pub fn list(
        &self,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
    ) -> Vec<&Task> {
        let upper = before.unwrap_or(TaskId::MAX);
        self.tasks
            .range(..upper)
            .rev()
            .map(|(_, t)| t)
            .filter(|t| status.is_none_or(|s| t.status == s))
            .take(limit)
            .collect()
    }

    /// Apply one command. Deterministic; never panics on any command.
    pub fn apply(&mut self, req: &RaftRequest, events: &mut Vec<TaskEvent>) -> Response {
        if req.version != crate::FORMAT_VERSION {
            return Response::UnsupportedVersion(req.version);
        }
        self.apply_command(&req.command, events)
    }

    fn apply_command(&mut self, cmd: &Command, ev: &mut Vec<TaskEvent>) -> Response {
        match cmd {
            Command::Submit { now_ms, tasks } => {
                let mut out = Vec::with_capacity(tasks.len());
                for spec in tasks {
                    if let Some(key) = &spec.idempotency_key {
                        if let Some(&id) = self.idempotency.get(key) {
                            out.push(Submitted { id, created: false });
                            continue;
                        }
                    }
                    let id = self.next_id.max(1);
                    self.next_id = id + 1;
                    if let Some(key) = &spec.idempotency_key {
                        self.idempotency.insert(key.clone(), id);
                    }
                    self.tasks.insert(
                        id,
                        Task {
                            id,
                            spec: spec.clone(),
                            status: TaskStatus::Pending,
                            attempt: 0,
                            node: None,
                            created_at_ms: *now_ms,
                            scheduled_at_ms: None,
                            started_at_ms: None,
                            finished_at_ms: None,
                            retry_delay_ms: None,
                            result: None,
                            error: None,
                            isolation: None,
                        },
                    );
                    self.index_insert(id);
                    ev.push(TaskEvent {
                        id,
                        status: TaskStatus::Pending,
                        node: None,
                        attempt: 0,
                    });
                    out.push(Submitted { id, created: true });
                }
                Response::Submitted(out)
            }
            Command::Assign {
                now_ms,
                assignments,
            } => {
                let mut out = Vec::with_capacity(assignments.len());
                for a in assignments {
                    let ok = self.tasks.get(&a.task).is_some_and(|t| {
                        t.status == TaskStatus::Pending && t.attempt + 1 == a.attempt
                    });
                    if ok {
                        self.update(a.task, ev, |t| {
                            t.status = TaskStatus::Scheduled;
                            t.attempt = a.attempt;
                            t.node = Some(a.node);
                            t.scheduled_at_ms = Some(*now_ms);
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
                    let ok = self.tasks.get(&s.task).is_some_and(|t| {
                        t.status == TaskStatus::Scheduled
                            && t.attempt == s.attempt
                            && t.node == Some(s.node)
                    });
                    if ok {
                        self.update(s.task, ev, |t| {
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
                    let ok = self.tasks.get(&a.task).is_some_and(|t| {
                        matches!(t.status, TaskStatus::Scheduled | TaskStatus::Running)
                            && t.attempt == a.attempt
                            && t.node == Some(a.node)
                    });
                    if ok {
                        self.update(a.task, ev, |t| finish(t, c, *now_ms));
                    }
                    out.push(ok);
                }
                Response::Accepted(out)
            }
            Command::Cancel { now_ms, ids } => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.tasks.get(id).map(|t| t.status) {
                        None => out.push(None),
                        Some(s) if s.is_terminal() => out.push(Some(s)),
                        Some(_) => {
                            self.update(*id, ev, |t| {
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
                let ids: Vec<TaskId> = self
                    .active
                    .get(node)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for id in &ids {
                    self.update(*id, ev, |t| {
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
            Command::Batch(cmds) => {
                Response::Batch(cmds.iter().map(|c| self.apply_command(c, ev)).collect())
            }
        }
    }
}

/// Record how an attempt ended; a retryable end with attempts left goes back to pending.
fn finish(t: &mut Task, c: &Completion, now_ms: u64) {
    t.isolation = Some(c.isolation);
    let attempts_left = t.attempt < t.spec.retry.max_attempts;
    match &c.outcome {
        Outcome::Succeeded { result } => {
            t.status = TaskStatus::Succeeded;
            t.result = Some(result.clone());
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
            }
        }
    }
}

fn requeue(t: &mut Task) {
    t.status = TaskStatus::Pending;
    t.node = None;
    t.retry_delay_ms = Some(t.spec.retry.delay_after(t.attempt));
}

#[cfg(test)]
mod tests;
