//! `TaskStore`: every task the state holds, kept in two forms.
//!
//! A task that has not ended changes often and is read on every scheduling pass, so it stays
//! a plain [`Task`]. An ended task never changes again (short of a requeue from the dead-letter
//! queue or its removal by retention) and is read rarely, so it is kept packed: a short header
//! (status, dead-letter flag, finish time) and the task in varint bincode, one allocation
//! instead of a dozen. At 100,000 finished tasks that is the difference between ~1.8 KB and
//! ~0.25 KB per task (the header, then the task with its trace id as bytes, its times relative
//! to its creation and an attempt log its own fields imply left out).
//!
//! Snapshots do not see the difference: the store serializes as one map id → `Task` in id
//! order, exactly as the `BTreeMap<TaskId, Task>` it replaced, and deserializing it packs the
//! ended tasks again.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::iter::Peekable;

use bincode::Options;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::task::{AttemptLog, Task, TaskId, TaskStatus};

/// An ended task: header (status index, dead-letter flag, finish time in ms, little endian)
/// followed by [`Extras`] and the task in varint bincode.
#[derive(Clone)]
struct Packed(Box<[u8]>);

/// What packing takes out of a task to store it shorter; unpacking puts it back exactly.
#[derive(Serialize, Deserialize, Default, PartialEq, Debug)]
struct Extras {
    /// The trace id as 16 bytes, when it is 32 lowercase hex digits (`spec.trace_id` is then
    /// stored empty).
    trace: Option<[u8; 16]>,
    /// `scheduled_at_ms`, `started_at_ms`, `finished_at_ms` as differences from
    /// `created_at_ms` (a few bytes instead of nine; signed: leaders' clocks differ).
    times: [Option<i64>; 3],
    /// The attempt log is the single entry the task's own fields imply, with this outcome
    /// (the log is then stored empty).
    implied_outcome: Option<String>,
}

fn hex_trace(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

fn trace_hex(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// The one attempt-log entry a finished task's fields imply, with `outcome`.
fn implied_entry(t: &Task, outcome: String) -> Option<AttemptLog> {
    Some(AttemptLog {
        attempt: t.attempt,
        node: t.node.or(t.last_node)?,
        scheduled_at_ms: t.scheduled_at_ms,
        started_at_ms: t.started_at_ms,
        ended_at_ms: t.finished_at_ms?,
        outcome,
        retry_delay_ms: t.retry_delay_ms,
    })
}

/// Split a task into the short form: (extras, task with those fields emptied).
fn shorten(t: &Task) -> (Extras, Task) {
    let mut short = t.clone();
    let mut x = Extras::default();
    if let Some(b) = hex_trace(&t.spec.trace_id) {
        x.trace = Some(b);
        short.spec.trace_id = String::new();
    }
    let base = t.created_at_ms as i64;
    let delta = |v: Option<u64>| v.map(|v| (v as i64).wrapping_sub(base));
    x.times = [
        delta(t.scheduled_at_ms),
        delta(t.started_at_ms),
        delta(t.finished_at_ms),
    ];
    short.scheduled_at_ms = None;
    short.started_at_ms = None;
    short.finished_at_ms = None;
    if let [only] = t.attempts_log.as_slice() {
        if implied_entry(t, only.outcome.clone()).as_ref() == Some(only) {
            x.implied_outcome = Some(only.outcome.clone());
            short.attempts_log = Vec::new();
        }
    }
    (x, short)
}

/// Undo [`shorten`].
fn lengthen(x: Extras, mut t: Task) -> Task {
    if let Some(b) = &x.trace {
        t.spec.trace_id = trace_hex(b);
    }
    let base = t.created_at_ms as i64;
    let abs = |d: Option<i64>| d.map(|d| base.wrapping_add(d) as u64);
    t.scheduled_at_ms = abs(x.times[0]);
    t.started_at_ms = abs(x.times[1]);
    t.finished_at_ms = abs(x.times[2]);
    if let Some(outcome) = x.implied_outcome {
        if let Some(e) = implied_entry(&t, outcome) {
            t.attempts_log = vec![e];
        }
    }
    t
}

const HEADER: usize = 10;

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
}

impl Packed {
    fn pack(t: &Task) -> Packed {
        let mut buf = Vec::with_capacity(HEADER + 256);
        buf.push(t.status.index() as u8);
        buf.push(u8::from(t.dead_letter));
        buf.extend_from_slice(&t.finished_at_ms.unwrap_or(0).to_le_bytes());
        // Writing plain data into a Vec cannot fail: bincode only fails on a writer error, a
        // size limit (none here) or a map without a length (Task has none).
        if codec().serialize_into(&mut buf, &shorten(t)).is_err() {
            debug_assert!(false, "packing a task failed");
        }
        Packed(buf.into_boxed_slice())
    }

    fn unpack(&self) -> Option<Task> {
        let t = codec()
            .deserialize::<(Extras, Task)>(self.0.get(HEADER..)?)
            .ok()
            .map(|(x, t)| lengthen(x, t));
        debug_assert!(t.is_some(), "a packed task did not decode");
        t
    }

    fn status(&self) -> TaskStatus {
        let i = self.0.first().copied().unwrap_or(0) as usize;
        TaskStatus::ALL
            .get(i)
            .copied()
            .unwrap_or(TaskStatus::Succeeded)
    }

    fn dead_letter(&self) -> bool {
        self.0.get(1).is_some_and(|b| *b != 0)
    }

    fn finished_at_ms(&self) -> Option<u64> {
        let b: [u8; 8] = self.0.get(2..HEADER)?.try_into().ok()?;
        Some(u64::from_le_bytes(b)).filter(|v| *v != 0)
    }

    fn bytes(&self) -> usize {
        self.0.len()
    }
}

/// What a caller learns of an ended task without unpacking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedBrief {
    pub id: TaskId,
    pub status: TaskStatus,
    pub dead_letter: bool,
    pub finished_at_ms: Option<u64>,
}

#[derive(Clone, Default)]
pub struct TaskStore {
    live: BTreeMap<TaskId, Task>,
    ended: BTreeMap<TaskId, Packed>,
}

impl fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskStore")
            .field("live", &self.live.len())
            .field("ended", &self.ended.len())
            .finish()
    }
}

impl TaskStore {
    pub fn len(&self) -> usize {
        self.live.len() + self.ended.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.ended.is_empty()
    }

    /// Tasks that have not ended.
    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    /// Tasks that ended.
    pub fn ended_len(&self) -> usize {
        self.ended.len()
    }

    /// Bytes the packed (ended) tasks take, headers included.
    pub fn packed_bytes(&self) -> usize {
        self.ended.values().map(Packed::bytes).sum()
    }

    pub fn contains(&self, id: TaskId) -> bool {
        self.live.contains_key(&id) || self.ended.contains_key(&id)
    }

    /// A task: borrowed when it is live, unpacked when it ended.
    pub fn get(&self, id: TaskId) -> Option<Cow<'_, Task>> {
        if let Some(t) = self.live.get(&id) {
            return Some(Cow::Borrowed(t));
        }
        self.ended.get(&id)?.unpack().map(Cow::Owned)
    }

    /// A task's status, without unpacking.
    pub fn status(&self, id: TaskId) -> Option<TaskStatus> {
        match self.live.get(&id) {
            Some(t) => Some(t.status),
            None => self.ended.get(&id).map(Packed::status),
        }
    }

    /// A live task, to change in place. It must stay live: call [`TaskStore::settle`] after a
    /// change that may have ended it.
    pub(crate) fn live_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        self.live.get_mut(&id)
    }

    pub(crate) fn live(&self, id: TaskId) -> Option<&Task> {
        self.live.get(&id)
    }

    /// Move a live task that ended into the packed form.
    pub(crate) fn settle(&mut self, id: TaskId) {
        if self.live.get(&id).is_some_and(|t| t.status.is_terminal()) {
            if let Some(t) = self.live.remove(&id) {
                self.ended.insert(id, Packed::pack(&t));
            }
        }
    }

    /// Store a task (replacing one with its id) in the form its status asks for.
    pub fn insert(&mut self, t: Task) {
        let id = t.id;
        if t.status.is_terminal() {
            self.live.remove(&id);
            self.ended.insert(id, Packed::pack(&t));
        } else {
            self.ended.remove(&id);
            self.live.insert(id, t);
        }
    }

    /// Remove a task and hand it back whole.
    pub fn remove(&mut self, id: TaskId) -> Option<Task> {
        if let Some(t) = self.live.remove(&id) {
            return Some(t);
        }
        self.ended.remove(&id)?.unpack()
    }

    /// Live tasks in id order.
    pub fn live_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.live.values()
    }

    /// Ended tasks in id order, without unpacking.
    pub fn ended_briefs(&self) -> impl DoubleEndedIterator<Item = EndedBrief> + '_ {
        self.ended.iter().map(|(id, p)| EndedBrief {
            id: *id,
            status: p.status(),
            dead_letter: p.dead_letter(),
            finished_at_ms: p.finished_at_ms(),
        })
    }

    /// One ended task's header; `None` for a live or unknown task.
    pub fn ended_brief(&self, id: TaskId) -> Option<EndedBrief> {
        self.ended.get(&id).map(|p| EndedBrief {
            id,
            status: p.status(),
            dead_letter: p.dead_letter(),
            finished_at_ms: p.finished_at_ms(),
        })
    }

    /// Ended task ids in id order.
    pub fn ended_ids(&self) -> impl DoubleEndedIterator<Item = TaskId> + '_ {
        self.ended.keys().copied()
    }

    /// Every task in id order.
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, Task>> + '_ {
        Merge {
            a: self.live.iter().peekable(),
            b: self.ended.iter().peekable(),
            rev: false,
        }
    }

    /// Tasks with ids below `upper`, newest first; `status` given, only those with it (ended
    /// tasks are filtered on their header, so a filtered listing unpacks only what it returns).
    pub fn newest_below(
        &self,
        upper: TaskId,
        status: Option<TaskStatus>,
    ) -> impl Iterator<Item = Cow<'_, Task>> + '_ {
        let keep = move |s: TaskStatus| status.is_none_or(|want| want == s);
        let live = self
            .live
            .range(..upper)
            .rev()
            .filter(move |(_, t)| keep(t.status));
        let ended = self
            .ended
            .range(..upper)
            .rev()
            .filter(move |(_, p)| keep(p.status()));
        Merge {
            a: live.peekable(),
            b: ended.peekable(),
            rev: true,
        }
    }
}

/// Two id-ordered streams (live, packed) merged into one.
struct Merge<'a, A, B>
where
    A: Iterator<Item = (&'a TaskId, &'a Task)>,
    B: Iterator<Item = (&'a TaskId, &'a Packed)>,
{
    a: Peekable<A>,
    b: Peekable<B>,
    rev: bool,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = (&'a TaskId, &'a Task)>,
    B: Iterator<Item = (&'a TaskId, &'a Packed)>,
{
    type Item = Cow<'a, Task>;

    fn next(&mut self) -> Option<Cow<'a, Task>> {
        loop {
            let take_a = match (self.a.peek(), self.b.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((x, _)), Some((y, _))) => (x < y) != self.rev,
            };
            if take_a {
                return self.a.next().map(|(_, t)| Cow::Borrowed(t));
            }
            let (_, p) = self.b.next()?;
            // A packed task that does not decode cannot happen (it was encoded here); skip it
            // rather than end the whole iteration.
            if let Some(t) = p.unpack() {
                return Some(Cow::Owned(t));
            }
        }
    }
}

impl Serialize for TaskStore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.len()))?;
        for t in self.iter() {
            m.serialize_entry(&t.id, t.as_ref())?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TaskStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TaskStore, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskStore;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of task id to task")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<TaskStore, M::Error> {
                let mut store = TaskStore::default();
                while let Some((id, mut t)) = m.next_entry::<TaskId, Task>()? {
                    // The map key is the id; the state machine never lets them differ.
                    t.id = id;
                    store.insert(t);
                }
                Ok(store)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskSpec, TaskStatus};

    fn task(id: TaskId, status: TaskStatus) -> Task {
        let mut spec = TaskSpec::kernel("stats", format!("{{\"values\":[{id}]}}"));
        spec.submitter = "alice".into();
        spec.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        Task {
            id,
            spec,
            status,
            attempt: 1,
            node: None,
            last_node: Some(2),
            created_at_ms: 1_700_000_000_000 + id,
            scheduled_at_ms: Some(1_700_000_000_001),
            started_at_ms: Some(1_700_000_000_002),
            finished_at_ms: status.is_terminal().then_some(1_700_000_000_003 + id),
            retry_delay_ms: None,
            result: Some(format!("{{\"sum\":{id}}}")),
            error: None,
            isolation: None,
            attempts_uncounted: 0,
            preemptions: 0,
            dead_letter: status == TaskStatus::Failed,
            waiting_on: Vec::new(),
            job: None,
            result_ref: None,
            attempts_log: Vec::new(),
            cached: false,
        }
    }

    #[test]
    fn ended_tasks_are_packed_and_come_back_equal() {
        let mut s = TaskStore::default();
        let done = task(1, TaskStatus::Succeeded);
        let failed = task(2, TaskStatus::Failed);
        let live = task(3, TaskStatus::Running);
        s.insert(done.clone());
        s.insert(failed.clone());
        s.insert(live.clone());
        assert_eq!((s.live_len(), s.ended_len()), (1, 2));
        assert_eq!(s.get(1).as_deref(), Some(&done));
        assert_eq!(s.get(2).as_deref(), Some(&failed));
        assert!(matches!(s.get(3), Some(Cow::Borrowed(_))));
        assert_eq!(s.status(2), Some(TaskStatus::Failed));
        let briefs: Vec<EndedBrief> = s.ended_briefs().collect();
        assert_eq!(briefs[1].id, 2);
        assert!(briefs[1].dead_letter && !briefs[0].dead_letter);
        assert_eq!(briefs[0].finished_at_ms, done.finished_at_ms);
        // Requeued: back to live.
        let mut again = s.remove(2).expect("task 2");
        again.status = TaskStatus::Pending;
        s.insert(again);
        assert_eq!((s.live_len(), s.ended_len()), (2, 1));
    }

    #[test]
    fn serializes_as_the_plain_map_it_replaced() {
        let mut s = TaskStore::default();
        let mut plain = BTreeMap::new();
        for (id, st) in [
            (1, TaskStatus::Succeeded),
            (2, TaskStatus::Pending),
            (5, TaskStatus::Cancelled),
            (7, TaskStatus::Running),
            (9, TaskStatus::TimedOut),
        ] {
            s.insert(task(id, st));
            plain.insert(id, task(id, st));
        }
        let a = bincode::serialize(&s).expect("store");
        let b = bincode::serialize(&plain).expect("map");
        assert_eq!(a, b, "same bytes as BTreeMap<TaskId, Task>");
        let back: TaskStore = bincode::deserialize(&b).expect("decode");
        assert_eq!((back.live_len(), back.ended_len()), (2, 3));
        let ids: Vec<TaskId> = back.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![1, 2, 5, 7, 9]);
        let newest: Vec<TaskId> = back.newest_below(9, None).map(|t| t.id).collect();
        assert_eq!(newest, vec![7, 5, 2, 1]);
        let pending: Vec<TaskId> = back
            .newest_below(u64::MAX, Some(TaskStatus::Pending))
            .map(|t| t.id)
            .collect();
        assert_eq!(pending, vec![2]);
    }

    #[test]
    fn packing_gives_back_exactly_what_went_in() {
        let mut cases = Vec::new();
        let base = task(7, TaskStatus::Succeeded);
        cases.push(base.clone());
        // With the attempt log its fields imply.
        let mut t = base.clone();
        t.node = Some(3);
        t.log_attempt(1_700_000_000_010, "succeeded");
        cases.push(t.clone());
        // A log that differs from what the fields imply, and a longer one.
        let mut odd = t.clone();
        odd.attempts_log[0].ended_at_ms += 1;
        cases.push(odd);
        let mut two = t.clone();
        two.attempt = 2;
        two.log_attempt(1_700_000_000_020, "worker_crashed");
        cases.push(two);
        // Trace ids that are not 32 lowercase hex digits; none.
        for trace in ["4BF92F3577B34DA6A3CE929D0E0E4736", "abc", "", "zz"] {
            let mut t = base.clone();
            t.spec.trace_id = trace.into();
            cases.push(t);
        }
        // Times before creation (another leader's clock), absent, at the extremes.
        let mut t = base.clone();
        t.scheduled_at_ms = Some(5);
        t.started_at_ms = None;
        t.finished_at_ms = Some(u64::MAX);
        t.created_at_ms = u64::MAX - 3;
        cases.push(t);
        let mut t = base.clone();
        t.status = TaskStatus::Cancelled;
        t.node = None;
        t.last_node = None;
        t.finished_at_ms = Some(0);
        t.log_attempt(9, "cancelled");
        cases.push(t);
        for (i, t) in cases.into_iter().enumerate() {
            let p = Packed::pack(&t);
            assert_eq!(p.unpack().as_ref(), Some(&t), "case {i}");
            assert_eq!(p.status(), t.status, "case {i}");
        }
    }

    #[test]
    fn a_packed_task_is_a_fraction_of_the_plain_one() {
        let mut t = task(42, TaskStatus::Succeeded);
        t.log_attempt(1_700_000_000_050, "succeeded");
        let p = Packed::pack(&t);
        let fixed = bincode::serialize(&t).expect("plain").len();
        let varint = codec().serialize(&t).expect("varint").len();
        assert!(
            p.bytes() < varint && varint < fixed,
            "{} vs {varint} vs {fixed}",
            p.bytes()
        );
    }
}
