//! Placement: which pending task runs where. Pure functions over the replicated state, so the
//! leader's Scheduler, the benchmarks and every node explaining a pending task (`pending_reason`)
//! compute the same thing.
//!
//! 1. Order: effective priority first (the task's priority plus one point per `aging` of
//!    waiting, at most 100), then oldest. The state keeps one queue per priority and shape
//!    (constraints + demand), oldest first, and within a queue the oldest has aged most, so
//!    the queues are merged with a heap: no sort of the whole backlog per tick. Once a task
//!    finds no node, the rest of its queue would not either (room only shrinks within a
//!    plan): without preemption the queue is dropped from the merge, so a backlog no node can
//!    take costs one look per plan instead of one per task.
//! 2. Filter: up nodes that match the constraints (tier; each label one of the values given)
//!    and have a free slot and the task's cpu_millis and memory_mb free (capacity from the node's
//!    registration, use from the tasks the state has on it, plus this tick's own placements).
//! 3. Score: soft affinities (sum of matching weights) first, then `binpack` (the busiest node
//!    after placing) or `spread` (the least busy); ties go to the lower node id.
//! 4. Preemption (when on): a task that fits on no node, but would on a node that matches it if
//!    some running tasks of lower priority (by at least `min_gap`) were gone, evicts the fewest
//!    of those (lowest priority, newest first). It is placed on a later tick, once the eviction
//!    is applied; its own (higher) place in the order keeps the freed room for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use edgerun_model::{
    Assignment, AttemptRef, ClusterState, Constraints, NodeId, NodeInfo, Placement, StreamId,
    StreamSpec, Task, TaskId, TaskStatus,
};

/// The cluster-wide scheduling settings (`[scheduler]`).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub placement: Placement,
    /// One priority point per this many ms of waiting; 0 = no aging.
    pub aging_ms: u64,
    pub preemption: bool,
    pub min_gap: i32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            placement: Placement::Spread,
            aging_ms: 60_000,
            preemption: false,
            min_gap: 1,
        }
    }
}

/// What one tick decided.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    /// Running attempts to evict (preemption).
    pub preempt: Vec<AttemptRef>,
}

pub const MAX_PRIORITY: i32 = 100;

/// The priority a task competes with after waiting since `created_at_ms`.
pub fn effective_priority(t: &Task, now_ms: u64, aging_ms: u64) -> i32 {
    let p = t.spec.priority;
    if aging_ms == 0 || p >= MAX_PRIORITY {
        return p;
    }
    let aged = now_ms.saturating_sub(t.created_at_ms) / aging_ms;
    p.saturating_add(aged.min(MAX_PRIORITY as u64) as i32)
        .min(MAX_PRIORITY)
}

fn demand(t: &Task) -> (i64, i64) {
    (
        i64::from(t.spec.resources.cpu_millis.unwrap_or(0)),
        i64::from(t.spec.resources.memory_mb.unwrap_or(0)),
    )
}

fn stream_demand(s: &StreamSpec) -> (i64, i64) {
    (
        i64::from(s.resources.cpu_millis.unwrap_or(0)),
        i64::from(s.resources.memory_mb.unwrap_or(0)),
    )
}

/// Where to start the stream jobs that wait for a node: (job, node, epoch), each on the least
/// full node that matches its constraints and has a slot and its resources free (stream jobs
/// spread: each one runs for long). Jobs in `inflight` (a placement not applied yet) are
/// left alone.
pub fn place_streams(
    state: &ClusterState,
    inflight: &HashSet<StreamId>,
) -> Vec<(StreamId, NodeId, u64)> {
    let waiting: Vec<_> = state
        .streams
        .unplaced()
        .filter(|j| !inflight.contains(&j.id))
        .collect();
    if waiting.is_empty() {
        return Vec::new();
    }
    let mut rooms = rooms(state, &HashMap::new());
    let mut out = Vec::new();
    for j in waiting {
        let d = stream_demand(&j.spec);
        let best = rooms
            .iter()
            .enumerate()
            .filter(|(_, r)| r.fits(d) && matches(r.info, &j.spec.constraints))
            .min_by_key(|(_, r)| (r.fill_after(d), r.info.id))
            .map(|(i, _)| i);
        if let Some(r) = best.and_then(|i| rooms.get_mut(i)) {
            r.slots -= 1;
            r.cpu -= d.0;
            r.mem -= d.1;
            out.push((j.id, r.info.id, j.epoch + 1));
        }
    }
    out
}

/// Whether `node` satisfies the hard constraints.
pub fn matches(node: &NodeInfo, c: &Constraints) -> bool {
    c.tier.is_none_or(|t| t == node.tier)
        && c.labels
            .iter()
            .all(|(k, vs)| node.labels.get(k).is_some_and(|v| vs.contains(v)))
}

/// A node's room during planning.
#[derive(Clone, Debug)]
struct Room<'a> {
    info: &'a NodeInfo,
    slots: i64,
    cpu: i64,
    mem: i64,
}

impl Room<'_> {
    fn fits(&self, (cpu, mem): (i64, i64)) -> bool {
        self.slots >= 1 && self.cpu >= cpu && self.mem >= mem
    }

    /// How full the node would be after taking `d`, in per-mille of its fullest dimension.
    fn fill_after(&self, (cpu, mem): (i64, i64)) -> i64 {
        let i = self.info;
        let frac = |free: i64, total: u32, take: i64| -> i64 {
            let total = i64::from(total);
            if total <= 0 {
                return 0;
            }
            ((total - free + take) * 1000) / total
        };
        frac(self.slots, i.slots, 1)
            .max(frac(self.cpu, i.cpu_millis, cpu))
            .max(frac(self.mem, i.memory_mb, mem))
    }
}

fn affinity_score(node: &NodeInfo, t: &Task) -> i64 {
    t.spec
        .affinities
        .iter()
        .filter(|a| {
            node.labels
                .get(&a.label)
                .is_some_and(|v| a.values.contains(v))
        })
        .map(|a| i64::from(a.weight))
        .sum()
}

/// Every up node's room: capacity less what the state has on it and what is in flight.
fn rooms<'a>(state: &'a ClusterState, inflight: &HashMap<TaskId, NodeId>) -> Vec<Room<'a>> {
    let mut out: Vec<Room<'a>> = state
        .nodes
        .values()
        .filter(|n| n.up)
        .map(|n| {
            let mut r = Room {
                info: n,
                slots: i64::from(n.slots),
                cpu: i64::from(n.cpu_millis),
                mem: i64::from(n.memory_mb),
            };
            for t in state.active_on(n.id) {
                let (c, m) = demand(t);
                r.slots -= 1;
                r.cpu -= c;
                r.mem -= m;
            }
            // A stream job holds a slot and its resources for as long as it runs there.
            for j in state.streams.on(n.id) {
                let (c, m) = stream_demand(&j.spec);
                r.slots -= 1;
                r.cpu -= c;
                r.mem -= m;
            }
            r
        })
        .collect();
    if inflight.is_empty() {
        return out;
    }
    let index: HashMap<NodeId, usize> = out
        .iter()
        .enumerate()
        .map(|(i, r)| (r.info.id, i))
        .collect();
    for (task, node) in inflight {
        // Once applied, the task is already counted by active_on.
        let Some(t) = state
            .task(*task)
            .filter(|t| t.status == TaskStatus::Pending)
        else {
            continue;
        };
        if let Some(r) = index.get(node).and_then(|i| out.get_mut(*i)) {
            let (c, m) = demand(&t);
            r.slots -= 1;
            r.cpu -= c;
            r.mem -= m;
        }
    }
    out
}

type TaskIter<'a> = std::iter::Peekable<Box<dyn Iterator<Item = &'a Task> + 'a>>;

/// The pending queues merged in effective-priority order (see the module doc), lazily; a
/// queue can be dropped from the merge.
struct Ordered<'a> {
    queues: Vec<(TaskIter<'a>, bool)>,
    heap: BinaryHeap<(i32, Reverse<TaskId>, usize)>,
    now_ms: u64,
    aging_ms: u64,
}

impl<'a> Ordered<'a> {
    fn new(state: &'a ClusterState, now_ms: u64, aging_ms: u64) -> Ordered<'a> {
        let mut o = Ordered {
            queues: Vec::new(),
            heap: BinaryHeap::new(),
            now_ms,
            aging_ms,
        };
        for (_, _, tasks) in state.pending_queues() {
            let it: Box<dyn Iterator<Item = &'a Task> + 'a> = Box::new(tasks);
            let mut it = it.peekable();
            if let Some(t) = it.peek() {
                let i = o.queues.len();
                o.heap
                    .push((effective_priority(t, now_ms, aging_ms), Reverse(t.id), i));
            }
            o.queues.push((it, false));
        }
        o
    }

    /// The next task and the queue it came from.
    fn next(&mut self) -> Option<(usize, &'a Task)> {
        loop {
            let (_, _, i) = self.heap.pop()?;
            let Some((q, dropped)) = self.queues.get_mut(i) else {
                continue;
            };
            if *dropped {
                continue;
            }
            let Some(t) = q.next() else { continue };
            if let Some(n) = q.peek() {
                self.heap.push((
                    effective_priority(n, self.now_ms, self.aging_ms),
                    Reverse(n.id),
                    i,
                ));
            }
            return Some((i, t));
        }
    }

    /// Take no more tasks from queue `i`.
    fn drop_queue(&mut self, i: usize) {
        if let Some(q) = self.queues.get_mut(i) {
            q.1 = true;
        }
    }
}

/// Pending tasks in effective-priority order (see the module doc), lazily.
pub fn in_order<'a>(
    state: &'a ClusterState,
    now_ms: u64,
    aging_ms: u64,
) -> impl Iterator<Item = &'a Task> + 'a {
    let mut o = Ordered::new(state, now_ms, aging_ms);
    std::iter::from_fn(move || o.next().map(|(_, t)| t))
}

/// Pick placements (and evictions) for pending tasks. `inflight` tasks (proposed, not yet
/// applied) are skipped and hold their room on the node they were proposed for; tasks for
/// which `ready` says no (still in their retry backoff) are skipped; `evicting` are attempts
/// already being preempted (not chosen again).
pub fn plan(
    state: &ClusterState,
    inflight: &HashMap<TaskId, NodeId>,
    evicting: &HashSet<TaskId>,
    limit: usize,
    now_ms: u64,
    policy: &Policy,
    mut ready: impl FnMut(&Task) -> bool,
) -> Plan {
    let mut rooms = rooms(state, inflight);
    let mut out = Plan::default();
    let mut free_slots: i64 = rooms.iter().map(|r| r.slots.max(0)).sum();
    if free_slots <= 0 && !policy.preemption {
        return out;
    }
    // Shapes (constraints + demand) that found no node this tick: room only shrinks within a
    // tick, so the same shape is not tried again.
    let mut failed: Vec<(&Constraints, (i64, i64))> = Vec::new();
    let mut victims: HashSet<TaskId> = evicting.clone();
    let mut order = Ordered::new(state, now_ms, policy.aging_ms);
    while let Some((queue, t)) = order.next() {
        if out.assignments.len() >= limit || (free_slots <= 0 && !policy.preemption) {
            break;
        }
        if inflight.contains_key(&t.id) || !t.waiting_on.is_empty() || !ready(t) {
            continue;
        }
        let d = demand(t);
        let c = &t.spec.constraints;
        if failed
            .iter()
            .any(|(fc, fd)| *fc == c && fd.0 <= d.0 && fd.1 <= d.1)
        {
            if policy.preemption {
                preempt(state, t, &rooms, policy, &mut victims, &mut out.preempt);
            } else {
                // Every task in this queue has this shape: none of them fits either.
                order.drop_queue(queue);
            }
            continue;
        }
        let binpack = t.spec.placement.unwrap_or(policy.placement) == Placement::Binpack;
        let mut best: Option<(i64, Reverse<NodeId>, usize)> = None;
        for (i, r) in rooms.iter().enumerate() {
            if !r.fits(d) || !matches(r.info, c) {
                continue;
            }
            let fill = r.fill_after(d);
            let score = affinity_score(r.info, t) * 10_000 + if binpack { fill } else { -fill };
            let key = (score, Reverse(r.info.id), i);
            if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, i)) => {
                if let Some(r) = rooms.get_mut(i) {
                    r.slots -= 1;
                    r.cpu -= d.0;
                    r.mem -= d.1;
                    free_slots -= 1;
                    out.assignments.push(Assignment {
                        task: t.id,
                        node: r.info.id,
                        attempt: t.attempt + 1,
                    });
                }
            }
            None => {
                failed.push((c, d));
                if policy.preemption {
                    preempt(state, t, &rooms, policy, &mut victims, &mut out.preempt);
                } else {
                    order.drop_queue(queue);
                }
            }
        }
    }
    out
}

/// Choose running attempts to evict so that `t` fits on one node; none if no node can be
/// freed enough by tasks of low enough priority.
fn preempt(
    state: &ClusterState,
    t: &Task,
    rooms: &[Room<'_>],
    policy: &Policy,
    victims: &mut HashSet<TaskId>,
    out: &mut Vec<AttemptRef>,
) {
    let d = demand(t);
    let mut best: Option<Vec<&Task>> = None;
    for r in rooms {
        if !matches(r.info, &t.spec.constraints)
            || i64::from(r.info.cpu_millis) < d.0
            || i64::from(r.info.memory_mb) < d.1
        {
            continue;
        }
        let mut cands: Vec<&Task> = state
            .active_on(r.info.id)
            .filter(|v| {
                !victims.contains(&v.id)
                    && v.spec.priority.saturating_add(policy.min_gap) <= t.spec.priority
            })
            .collect();
        cands.sort_by_key(|v| (v.spec.priority, Reverse(v.id)));
        let mut room = r.clone();
        let mut chosen = Vec::new();
        for v in cands {
            if room.fits(d) {
                break;
            }
            let (c, m) = demand(v);
            room.slots += 1;
            room.cpu += c;
            room.mem += m;
            chosen.push(v);
        }
        if room.fits(d)
            && !chosen.is_empty()
            && best.as_ref().is_none_or(|b| chosen.len() < b.len())
        {
            best = Some(chosen);
        }
    }
    for v in best.unwrap_or_default() {
        if let Some(node) = v.node {
            victims.insert(v.id);
            out.push(AttemptRef {
                task: v.id,
                node,
                attempt: v.attempt,
            });
        }
    }
}

fn describe(c: &Constraints) -> String {
    let mut parts = Vec::new();
    if let Some(t) = c.tier {
        parts.push(format!("tier={}", t.as_str()));
    }
    for (k, vs) in &c.labels {
        match vs.as_slice() {
            [one] => parts.push(format!("{k}={one}")),
            many => parts.push(format!("{k} in [{}]", many.join(","))),
        }
    }
    if parts.is_empty() {
        "no node".into()
    } else {
        format!("no node with {}", parts.join(", "))
    }
}

fn needs(d: (i64, i64)) -> String {
    let mut parts = vec!["a slot".to_string()];
    if d.0 > 0 {
        parts.push(format!("{} cpu_millis", d.0));
    }
    if d.1 > 0 {
        parts.push(format!("{} MB", d.1));
    }
    parts.join(", ")
}

/// Why a pending task is not running yet, in words (GET /v1/tasks/{id} `pending_reason`).
/// `None` when the task is not pending.
pub fn pending_reason(
    state: &ClusterState,
    t: &Task,
    now_ms: u64,
    policy: &Policy,
) -> Option<String> {
    if t.status != TaskStatus::Pending {
        return None;
    }
    if !t.waiting_on.is_empty() {
        let ids: Vec<String> = t.waiting_on.iter().map(|i| i.to_string()).collect();
        return Some(format!(
            "waiting for task {} to succeed (after)",
            ids.join(", ")
        ));
    }
    let c = &t.spec.constraints;
    let d = demand(t);
    let matching: Vec<&NodeInfo> = state.nodes.values().filter(|n| matches(n, c)).collect();
    let up: Vec<&NodeInfo> = matching.iter().copied().filter(|n| n.up).collect();
    if up.is_empty() {
        let down = matching.len();
        return Some(if down > 0 {
            format!(
                "{} is up ({down} matching node(s) down)",
                describe(c).replacen("no node", "no matching node", 1)
            )
        } else {
            format!("{} in the cluster", describe(c))
        });
    }
    let big = up
        .iter()
        .any(|n| i64::from(n.cpu_millis) >= d.0 && i64::from(n.memory_mb) >= d.1);
    if !big {
        let max_mem = up.iter().map(|n| n.memory_mb).max().unwrap_or(0);
        let max_cpu = up.iter().map(|n| n.cpu_millis).max().unwrap_or(0);
        return Some(format!(
            "{} is big enough for {} (largest: {max_cpu} cpu_millis, {max_mem} MB); it will not fit until such a node joins",
            describe(c).replacen("no node", "no up node", 1),
            needs(d)
        ));
    }
    if let Some(delay) = t.retry_delay_ms.filter(|d| *d > 0) {
        return Some(format!(
            "retry backoff: attempt {} failed; the next waits {delay} ms",
            t.attempt
        ));
    }
    let free = rooms(state, &HashMap::new())
        .iter()
        .any(|r| r.fits(d) && matches(r.info, c));
    if !free {
        return Some(format!(
            "{} has {} free; waiting for running tasks to end",
            describe(c),
            needs(d)
        ));
    }
    let me = effective_priority(t, now_ms, policy.aging_ms);
    // Counted up to a bound: a reason must stay cheap with a huge backlog.
    const COUNT_UP_TO: usize = 10_000;
    let ahead = in_order(state, now_ms, policy.aging_ms)
        .take_while(|o| o.id != t.id)
        .take(COUNT_UP_TO)
        .filter(|o| effective_priority(o, now_ms, policy.aging_ms) >= me)
        .count();
    Some(if ahead >= COUNT_UP_TO {
        format!("queued behind {COUNT_UP_TO}+ tasks of equal or higher priority")
    } else if ahead > 0 {
        format!("queued behind {ahead} task(s) of equal or higher priority")
    } else {
        "being placed".into()
    })
}

/// A cluster of `nodes` registered nodes as the replicated state holds them (half cloud, half
/// edge, racks a/b/c, 8 slots, 8 CPUs, 16 GiB), for measuring the planner
/// (`cargo bench --bench placement`, `edgerun bench scheduler`).
pub fn simulated_cluster(nodes: u64) -> ClusterState {
    let mut s = ClusterState::new();
    for i in 1..=nodes {
        let node = edgerun_model::NodeInfo {
            id: i,
            tier: if i % 2 == 0 {
                edgerun_model::Tier::Edge
            } else {
                edgerun_model::Tier::Cloud
            },
            labels: [(
                "rack".to_string(),
                ["a", "b", "c"][(i % 3) as usize].to_string(),
            )]
            .into_iter()
            .collect(),
            api: String::new(),
            rpc: String::new(),
            slots: 8,
            cpu_millis: 8000,
            memory_mb: 16_384,
            registered_at_ms: 0,
            up: true,
            down_since_ms: None,
        };
        s.apply(
            &edgerun_model::RaftRequest::new(edgerun_model::Command::RegisterNode {
                now_ms: 0,
                node,
            }),
            &mut Vec::new(),
        );
    }
    s
}

#[cfg(test)]
mod tests;
