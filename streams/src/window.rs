//! Event-time windows per key: which windows a record falls in, when a window closes, and
//! what was still open (for a checkpoint).
//!
//! - tumbling `size`: `[k·size, (k+1)·size)`, one per record.
//! - sliding `size, slide`: every `[k·slide, k·slide + size)` that holds the record
//!   (`size / slide` of them).
//! - session `gap`: a record opens `[t, t + gap)`; sessions of a key that overlap merge (their
//!   accumulators too), so a session ends `gap` after its last record.
//!
//! A window closes (its result is emitted) once the watermark reaches its end. A record none
//! of whose windows is still open is late: the caller counts it and drops it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::agg::{Acc, AggSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowKind {
    Tumbling { size_ms: u64 },
    Sliding { size_ms: u64, slide_ms: u64 },
    Session { gap_ms: u64 },
}

impl WindowKind {
    /// The windows `[start, end)` a record at `t` belongs to (sessions: the one it opens).
    fn assign(self, t: i64) -> Vec<(i64, i64)> {
        match self {
            WindowKind::Tumbling { size_ms } => {
                let size = size_ms as i64;
                let start = t.div_euclid(size) * size;
                vec![(start, start + size)]
            }
            WindowKind::Sliding { size_ms, slide_ms } => {
                let (size, slide) = (size_ms as i64, slide_ms as i64);
                // The last window starting at or before t, then back while it still holds t.
                let mut start = t.div_euclid(slide) * slide;
                let mut out = Vec::new();
                while start + size > t {
                    out.push((start, start + size));
                    start -= slide;
                }
                out.reverse();
                out
            }
            WindowKind::Session { gap_ms } => vec![(t, t + gap_ms as i64)],
        }
    }
}

/// One closed window's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// (event time, value) of the field a kernel reads, in arrival order.
    pub collected: Option<Vec<(i64, f64)>>,
}

/// The open windows of every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Open {
    /// key → start → (end, accumulator).
    windows: BTreeMap<String, BTreeMap<i64, (i64, Acc)>>,
    /// (end, key, start) of every open window, to close them in order.
    by_end: BTreeSet<(i64, String, i64)>,
}

impl Open {
    pub fn len(&self) -> usize {
        self.by_end.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_end.is_empty()
    }

    /// Add a record at `t` with its aggregate `values` to every window of `key` it belongs to
    /// that is still open at `watermark`. False when there is none (the record is late).
    pub fn add(
        &mut self,
        kind: WindowKind,
        aggs: &AggSet,
        key: &str,
        t: i64,
        values: &[f64],
        watermark: i64,
    ) -> bool {
        let mut took = false;
        for (start, end) in kind.assign(t) {
            if end <= watermark {
                continue;
            }
            took = true;
            if let WindowKind::Session { .. } = kind {
                self.add_session(aggs, key, start, end, t, values);
                continue;
            }
            let w = self.windows.entry(key.to_string()).or_default();
            let (_, acc) = w.entry(start).or_insert_with(|| {
                self.by_end.insert((end, key.to_string(), start));
                (end, aggs.empty())
            });
            aggs.add(acc, t, values);
        }
        took
    }

    fn add_session(
        &mut self,
        aggs: &AggSet,
        key: &str,
        start: i64,
        end: i64,
        t: i64,
        values: &[f64],
    ) {
        let w = self.windows.entry(key.to_string()).or_default();
        // Sessions of this key that overlap [start, end): they merge into one.
        let overlapping: Vec<i64> = w
            .range(..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        let mut acc = aggs.empty();
        aggs.add(&mut acc, t, values);
        let (mut lo, mut hi) = (start, end);
        for s in overlapping {
            if let Some((e, a)) = w.remove(&s) {
                self.by_end.remove(&(e, key.to_string(), s));
                acc.merge(&a);
                lo = lo.min(s);
                hi = hi.max(e);
            }
        }
        self.by_end.insert((hi, key.to_string(), lo));
        w.insert(lo, (hi, acc));
    }

    /// Close every window whose end the watermark has reached, in end order.
    pub fn close(&mut self, aggs: &AggSet, watermark: i64) -> Vec<Closed> {
        let mut out = Vec::new();
        while let Some((end, key, start)) = self.by_end.first().cloned() {
            if end > watermark {
                break;
            }
            self.by_end.pop_first();
            let Some(w) = self.windows.get_mut(&key) else {
                continue;
            };
            if let Some((_, acc)) = w.remove(&start) {
                out.push(Closed {
                    fields: aggs.finish(&acc),
                    collected: aggs.collected(&acc),
                    key: key.clone(),
                    start,
                    end,
                });
            }
            if w.is_empty() {
                self.windows.remove(&key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{AggKind, Aggregate};

    fn count() -> AggSet {
        AggSet::new(vec![Aggregate {
            name: "n".into(),
            kind: AggKind::Count,
            field: None,
        }])
    }

    fn n(c: &Closed) -> u64 {
        c.fields["n"].as_u64().unwrap_or(0)
    }

    #[test]
    fn windows_are_assigned_by_kind() {
        let t = WindowKind::Tumbling { size_ms: 10 };
        assert_eq!(t.assign(0), vec![(0, 10)]);
        assert_eq!(t.assign(19), vec![(10, 20)]);
        assert_eq!(t.assign(-1), vec![(-10, 0)]);
        let s = WindowKind::Sliding {
            size_ms: 10,
            slide_ms: 5,
        };
        assert_eq!(s.assign(12), vec![(5, 15), (10, 20)]);
        assert_eq!(s.assign(10), vec![(5, 15), (10, 20)]);
        assert_eq!(s.assign(9), vec![(0, 10), (5, 15)]);
    }

    #[test]
    fn tumbling_windows_close_when_the_watermark_reaches_their_end_and_late_records_are_refused() {
        let (k, a) = (WindowKind::Tumbling { size_ms: 10 }, count());
        let mut o = Open::default();
        for t in [1, 5, 9, 12] {
            assert!(o.add(k, &a, "s1", t, &[], 0));
        }
        assert!(o.add(k, &a, "s2", 3, &[], 0));
        assert!(
            o.close(&a, 9).is_empty(),
            "closed before the watermark reached 10"
        );
        let c = o.close(&a, 10);
        let got: Vec<(&str, i64, i64, u64)> = c
            .iter()
            .map(|c| (c.key.as_str(), c.start, c.end, n(c)))
            .collect();
        assert_eq!(got, vec![("s1", 0, 10, 3), ("s2", 0, 10, 1)]);
        // [0, 10) is closed at watermark 10: a record in it is late; [10, 20) is open.
        assert!(!o.add(k, &a, "s1", 7, &[], 10));
        assert!(o.add(k, &a, "s1", 15, &[], 10));
        let c = o.close(&a, 20);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].start, n(&c[0])), (10, 2));
        assert!(o.is_empty());
    }

    #[test]
    fn sessions_merge_when_they_touch_and_end_a_gap_after_their_last_record() {
        let (k, a) = (WindowKind::Session { gap_ms: 10 }, count());
        let mut o = Open::default();
        for t in [0, 5, 30, 14] {
            assert!(o.add(k, &a, "s", t, &[], 0));
        }
        // 0, 5, 14 form one session [0, 24); 30 its own [30, 40).
        assert_eq!(o.len(), 2);
        let c = o.close(&a, 40);
        let got: Vec<(i64, i64, u64)> = c.iter().map(|c| (c.start, c.end, n(c))).collect();
        assert_eq!(got, vec![(0, 24, 3), (30, 40, 1)]);
        // A record that bridges two open sessions merges them: gap 15, [100, 115) and
        // [125, 140), then 112 opens [112, 127), which overlaps both.
        let k = WindowKind::Session { gap_ms: 15 };
        let mut o = Open::default();
        for t in [100, 125] {
            o.add(k, &a, "s", t, &[], 0);
        }
        assert_eq!(o.len(), 2);
        o.add(k, &a, "s", 112, &[], 0);
        let c = o.close(&a, 1_000);
        assert_eq!(
            c.iter().map(|c| (c.start, c.end, n(c))).collect::<Vec<_>>(),
            vec![(100, 140, 3)]
        );
    }

    #[test]
    fn sliding_windows_each_count_their_records() {
        let (k, a) = (
            WindowKind::Sliding {
                size_ms: 10,
                slide_ms: 5,
            },
            count(),
        );
        let mut o = Open::default();
        for t in [1, 6, 11] {
            o.add(k, &a, "s", t, &[], 0);
        }
        let c = o.close(&a, 100);
        let got: Vec<(i64, u64)> = c.iter().map(|c| (c.start, n(c))).collect();
        assert_eq!(got, vec![(-5, 1), (0, 2), (5, 2), (10, 1)]);
    }
}
