//! A stream job's pipeline over records: filter and map, event time and the watermark, keys,
//! windows, and what comes out — pure and synchronous (no I/O, no clock: the caller passes
//! arrival times and ticks), so a runner, a test and a benchmark drive it alike.
//!
//! ```text
//!  record ─▶ filter/map (CEL) ─▶ event time ─▶ watermark = max event time − max_delay_ms
//!                                   │
//!                                   ▼
//!            key_by ─▶ window(s) of the key ──(watermark ≥ end)──▶ result {result_id, key,
//!                                                                    window_start, window_end, …}
//! ```
//!
//! A record that is not an object, lacks its event time or key, fails an expression or gives
//! no number for an aggregated field is counted `malformed` and dropped; one whose windows
//! have all closed is counted `late` and dropped. Neither stops the job. [`Pipeline::checkpoint`]
//! is everything needed to go on after a restart (watermark, open windows, counters), given
//! the source is read again from the position saved with it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::agg::AggSet;
use crate::spec::{Step, TimeSpec};
use crate::window::{Open, WindowKind};

/// What a job has seen, for its status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub records_in: u64,
    pub records_out: u64,
    /// Records dropped by a filter.
    pub filtered: u64,
    pub late: u64,
    pub malformed: u64,
}

/// The state a checkpoint keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Largest event time seen, and the watermark (ms since the epoch).
    max_event: Option<i64>,
    watermark: i64,
    /// Arrival time of the last record (the caller's clock), for idleness.
    last_arrival_ms: i64,
    open: Open,
    counters: Counters,
    /// Results of a job without a window are numbered (their result id).
    seq: u64,
}

/// The checkpoint format's version (a checkpoint of another version is refused, not guessed).
/// 2: a window may keep the values a kernel reads.
const CHECKPOINT_VERSION: u16 = 2;

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u16,
    job: String,
    state: State,
}

/// A checkpoint that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("the checkpoint does not decode: {0}")]
    Decode(String),
    #[error("the checkpoint is format {found}; this build reads {CHECKPOINT_VERSION}")]
    Version { found: u16 },
    #[error("the checkpoint is job {found:?}'s, not {expected:?}'s")]
    OtherJob { found: String, expected: String },
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Stable across restarts and repeats: a window's from (job, key, start, end); a record's
    /// (no window) from its number in the job.
    pub result_id: String,
    pub value: Value,
    /// A kernel to run over the window before the result goes out (its result goes into
    /// `value` under the step's `as`).
    pub kernel: Option<KernelCall>,
}

/// One kernel run for one closed window: the kernel, its input, where its result goes.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelCall {
    pub kernel: String,
    pub input: Value,
    pub output: String,
}

/// The input a window kernel gets (see `spec::WINDOW_KERNELS`).
fn kernel_input(kernel: &str, values: &[(i64, f64)], start: i64, end: i64) -> Value {
    match kernel {
        "window_agg" => serde_json::json!({
            "points": values.iter().map(|(t, v)| serde_json::json!([t, v])).collect::<Vec<_>>(),
            "window_ms": (end - start).max(1),
            "aggs": ["count", "mean", "anomaly"],
        }),
        "fft" => {
            let n = values.len().max(1).next_power_of_two();
            let mut v: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
            v.resize(n, 0.0);
            serde_json::json!({ "values": v })
        }
        _ => serde_json::json!({ "values": values.iter().map(|(_, v)| *v).collect::<Vec<_>>() }),
    }
}

/// A job's compiled pipeline and its running state.
pub struct Pipeline {
    job: String,
    time: TimeSpec,
    steps: Vec<Step>,
    key_by: Option<String>,
    window: Option<(WindowKind, AggSet)>,
    kernel: Option<crate::spec::KernelStep>,
    state: State,
}

fn result_id(job: &str, key: &str, start: i64, end: i64) -> String {
    let mut h = Sha256::new();
    for part in [job.as_bytes(), key.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(start.to_be_bytes());
    h.update(end.to_be_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The event times accepted, in ms either side of the epoch (2^53: JSON's exact integers,
/// ±285,000 years); window arithmetic on them cannot overflow. Beyond it a record is malformed.
pub const MAX_EVENT_TIME_MS: i64 = 9_007_199_254_740_991;

/// Event time from a field: ms since the epoch, or RFC 3339 text.
fn event_time(v: &Value) -> Option<i64> {
    let t = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => {
            let t = humantime::parse_rfc3339_weak(s).ok()?;
            let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
            i64::try_from(d.as_millis()).ok()
        }
        _ => None,
    }?;
    (-MAX_EVENT_TIME_MS..=MAX_EVENT_TIME_MS)
        .contains(&t)
        .then_some(t)
}

fn key_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Pipeline {
    /// A pipeline for job `job` (its id: part of every result id) from checked steps.
    pub fn new(job: &str, time: TimeSpec, steps: Vec<Step>) -> Pipeline {
        let mut key_by = None;
        let mut window = None;
        let mut kernel = None;
        let mut rest = Vec::new();
        for s in steps {
            match s {
                Step::KeyBy(f) => key_by = Some(f),
                Step::Window {
                    kind,
                    aggregates,
                    kernel: k,
                } => {
                    let collect = k.as_ref().map(|k| k.field.clone());
                    window = Some((kind, AggSet::collecting(aggregates, collect)));
                    kernel = k;
                }
                other => rest.push(other),
            }
        }
        Pipeline {
            job: job.to_string(),
            time,
            steps: rest,
            key_by,
            window,
            kernel,
            state: State {
                max_event: None,
                watermark: i64::MIN,
                last_arrival_ms: 0,
                open: Open::default(),
                counters: Counters::default(),
                seq: 0,
            },
        }
    }

    pub fn counters(&self) -> Counters {
        self.state.counters
    }

    /// The watermark, once a record has been seen.
    pub fn watermark(&self) -> Option<i64> {
        self.state.max_event.map(|_| self.state.watermark)
    }

    /// Windows still open (all keys).
    pub fn open_windows(&self) -> usize {
        self.state.open.len()
    }

    /// Start measuring idleness from `now_ms` (a runner that resumed from a checkpoint: the
    /// time the job was down or moving is not the source being silent, and counting it would
    /// close windows whose records are still on their way).
    pub fn resume_clock(&mut self, now_ms: i64) {
        self.state.last_arrival_ms = now_ms;
    }

    /// Count records a source could not read as JSON objects (they never reach `push`).
    pub fn count_malformed(&mut self, n: u64) {
        self.state.counters.records_in += n;
        self.state.counters.malformed += n;
    }

    /// Take one record that arrived at `arrival_ms` (the caller's clock); results go to `out`.
    pub fn push(&mut self, record: Value, arrival_ms: i64, out: &mut Vec<Output>) {
        let c = &mut self.state.counters;
        c.records_in += 1;
        self.state.last_arrival_ms = self.state.last_arrival_ms.max(arrival_ms);
        let Value::Object(mut rec) = record else {
            c.malformed += 1;
            return;
        };
        match self.apply_steps(&mut rec) {
            Ok(true) => {}
            Ok(false) => {
                self.state.counters.filtered += 1;
                return;
            }
            Err(()) => {
                self.state.counters.malformed += 1;
                return;
            }
        }
        let t = match &self.time.field {
            None => Some(arrival_ms),
            Some(f) => rec.get(f).and_then(event_time),
        };
        let Some(t) = t else {
            self.state.counters.malformed += 1;
            return;
        };
        let key = match &self.key_by {
            None => Some(String::new()),
            Some(f) => rec.get(f).filter(|v| !v.is_null()).map(key_of),
        };
        let Some(key) = key else {
            self.state.counters.malformed += 1;
            return;
        };
        let Some((kind, aggs)) = &self.window else {
            // No window: the record itself is the result.
            self.state.seq += 1;
            self.state.counters.records_out += 1;
            self.advance(t);
            out.push(Output {
                result_id: format!("{}:{}", self.job, self.state.seq),
                value: Value::Object(rec),
                kernel: None,
            });
            return;
        };
        let Ok(values) = aggs.values(&rec) else {
            self.state.counters.malformed += 1;
            return;
        };
        let took = self
            .state
            .open
            .add(*kind, aggs, &key, t, &values, self.state.watermark);
        if !took {
            self.state.counters.late += 1;
        }
        self.advance(t);
        self.close(out);
    }

    /// Filters and maps, in order. Ok(false): filtered out; Err: an expression failed.
    fn apply_steps(&self, rec: &mut Map<String, Value>) -> Result<bool, ()> {
        for s in &self.steps {
            match s {
                Step::Filter(e) => {
                    if !e.test(rec).map_err(|_| ())? {
                        return Ok(false);
                    }
                }
                Step::Map(fields) => {
                    let mut new = Vec::with_capacity(fields.len());
                    for (name, e) in fields {
                        new.push((name.clone(), e.eval(rec).map_err(|_| ())?));
                    }
                    rec.extend(new);
                }
                Step::KeyBy(_) | Step::Window { .. } => {}
            }
        }
        Ok(true)
    }

    fn advance(&mut self, t: i64) {
        let max = self.state.max_event.map_or(t, |m| m.max(t));
        self.state.max_event = Some(max);
        let wm = max.saturating_sub(self.time.max_delay_ms as i64);
        self.state.watermark = self.state.watermark.max(wm);
    }

    fn close(&mut self, out: &mut Vec<Output>) {
        let Some((_, aggs)) = &self.window else {
            return;
        };
        for c in self.state.open.close(aggs, self.state.watermark) {
            let mut v = Map::new();
            let id = result_id(&self.job, &c.key, c.start, c.end);
            v.insert("result_id".into(), Value::from(id.clone()));
            v.insert("key".into(), Value::from(c.key));
            v.insert("window_start".into(), Value::from(c.start));
            v.insert("window_end".into(), Value::from(c.end));
            v.extend(c.fields);
            self.state.counters.records_out += 1;
            let kernel = match (&self.kernel, &c.collected) {
                (Some(k), Some(vals)) if !vals.is_empty() => Some(KernelCall {
                    kernel: k.name.clone(),
                    input: kernel_input(&k.name, vals, c.start, c.end),
                    output: k.output.clone(),
                }),
                _ => None,
            };
            out.push(Output {
                result_id: id,
                value: Value::Object(v),
                kernel,
            });
        }
    }

    /// The caller's clock moved to `now_ms`: a source silent for `idle_ms` lets event time go
    /// on with the clock since its last record, so windows it would have closed close.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        let Some(max) = self.state.max_event else {
            return;
        };
        let silent = now_ms.saturating_sub(self.state.last_arrival_ms);
        if silent < self.time.idle_ms() as i64 {
            return;
        }
        let projected = max
            .saturating_add(silent)
            .saturating_sub(self.time.max_delay_ms as i64);
        self.state.watermark = self.state.watermark.max(projected);
        self.close(out);
    }

    /// Everything the job needs to go on from here (with the source's position, kept beside).
    pub fn checkpoint(&self) -> Vec<u8> {
        bincode::serialize(&Stored {
            version: CHECKPOINT_VERSION,
            job: self.job.clone(),
            state: self.state.clone(),
        })
        .unwrap_or_default()
    }

    /// Go on from a checkpoint of this job.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        #[derive(Deserialize)]
        struct Head {
            version: u16,
        }
        let head: Head =
            bincode::deserialize(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))?;
        if head.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                found: head.version,
            });
        }
        let s: Stored =
            bincode::deserialize(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))?;
        if s.job != self.job {
            return Err(CheckpointError::OtherJob {
                found: s.job,
                expected: self.job.clone(),
            });
        }
        self.state = s.state;
        Ok(())
    }
}
