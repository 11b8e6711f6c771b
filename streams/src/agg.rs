//! Window aggregates, computed incrementally: each record updates a fixed-size accumulator
//! (no window keeps its records), and two accumulators merge (session windows that grow
//! together).
//!
//! - `count`, `sum`, `min`, `max`, `first`, `last` (by event time): exact.
//! - `mean`, `std`: Welford's running mean and variance, merged with Chan et al.'s formula;
//!   `std` is the population standard deviation.
//! - `p50`, `p90`, `p99`: a DDSketch (`sketches-ddsketch`) with 1% relative accuracy: the
//!   answer is within 1% of a value of the window whose rank is the asked one; at most 2,048
//!   bins per sign (~40 KB) whatever the window's size. Only fields asked for a percentile
//!   carry one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// What an aggregate computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggKind {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Std,
    P50,
    P90,
    P99,
    First,
    Last,
}

impl AggKind {
    pub const ALL: [AggKind; 11] = [
        AggKind::Count,
        AggKind::Sum,
        AggKind::Mean,
        AggKind::Min,
        AggKind::Max,
        AggKind::Std,
        AggKind::P50,
        AggKind::P90,
        AggKind::P99,
        AggKind::First,
        AggKind::Last,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Mean => "mean",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Std => "std",
            AggKind::P50 => "p50",
            AggKind::P90 => "p90",
            AggKind::P99 => "p99",
            AggKind::First => "first",
            AggKind::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<AggKind> {
        AggKind::ALL.into_iter().find(|k| k.name() == s)
    }

    fn quantile(self) -> Option<f64> {
        match self {
            AggKind::P50 => Some(0.5),
            AggKind::P90 => Some(0.9),
            AggKind::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// One output field: `name` = `kind` of `field` (`None`: `count` of records, `"*"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub name: String,
    pub kind: AggKind,
    pub field: Option<String>,
}

/// The running state of one numeric field in one window.
#[derive(Clone, Serialize, Deserialize)]
pub struct FieldAcc {
    n: u64,
    sum: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    /// (event time, value) of the earliest and the latest record.
    first: Option<(i64, f64)>,
    last: Option<(i64, f64)>,
    sketch: Option<DDSketch>,
    /// Every (event time, value), when a kernel reads this field (at most
    /// `spec::MAX_KERNEL_VALUES`).
    values: Option<Vec<(i64, f64)>>,
}

impl std::fmt::Debug for FieldAcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldAcc")
            .field("n", &self.n)
            .field("mean", &self.mean)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("sketch", &self.sketch.as_ref().map(DDSketch::count))
            .finish()
    }
}

fn sketch() -> DDSketch {
    DDSketch::new(Config::defaults())
}

impl FieldAcc {
    fn new(with_sketch: bool, collect: bool) -> FieldAcc {
        FieldAcc {
            n: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: None,
            last: None,
            sketch: with_sketch.then(sketch),
            values: collect.then(Vec::new),
        }
    }

    fn add(&mut self, t: i64, v: f64) {
        self.n += 1;
        self.sum += v;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.first.is_none_or(|(ft, _)| t < ft) {
            self.first = Some((t, v));
        }
        if self.last.is_none_or(|(lt, _)| t >= lt) {
            self.last = Some((t, v));
        }
        if let Some(s) = self.sketch.as_mut() {
            s.add(v);
        }
        if let Some(vs) = self.values.as_mut() {
            if vs.len() < crate::spec::MAX_KERNEL_VALUES {
                vs.push((t, v));
            }
        }
    }

    fn merge(&mut self, o: &FieldAcc) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        self.mean += d * nb / n;
        self.m2 += o.m2 + d * d * na * nb / n;
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if let Some((t, v)) = o.first {
            if self.first.is_none_or(|(ft, _)| t < ft) {
                self.first = Some((t, v));
            }
        }
        if let Some((t, v)) = o.last {
            if self.last.is_none_or(|(lt, _)| t >= lt) {
                self.last = Some((t, v));
            }
        }
        match (self.sketch.as_mut(), o.sketch.as_ref()) {
            (Some(a), Some(b)) => {
                // Same config on both sides: merging cannot fail.
                let _ = a.merge(b);
            }
            (None, Some(b)) => self.sketch = Some(b.clone()),
            _ => {}
        }
        if let (Some(a), Some(b)) = (self.values.as_mut(), o.values.as_ref()) {
            let room = crate::spec::MAX_KERNEL_VALUES.saturating_sub(a.len());
            a.extend(b.iter().take(room));
        }
    }

    fn value(&self, kind: AggKind) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match kind {
            AggKind::Count => self.n as f64,
            AggKind::Sum => self.sum,
            AggKind::Mean => self.mean,
            AggKind::Min => self.min,
            AggKind::Max => self.max,
            AggKind::Std => (self.m2 / self.n as f64).max(0.0).sqrt(),
            AggKind::First => self.first?.1,
            AggKind::Last => self.last?.1,
            AggKind::P50 | AggKind::P90 | AggKind::P99 => {
                let q = kind.quantile()?;
                self.sketch.as_ref()?.quantile(q).ok()??
            }
        })
    }
}

/// Everything one window needs for its aggregates: a record count and one [`FieldAcc`] per
/// field an aggregate reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Acc {
    records: u64,
    fields: BTreeMap<String, FieldAcc>,
}

/// The aggregates of a window step, and which fields they read.
#[derive(Debug, Clone)]
pub struct AggSet {
    pub aggs: Vec<Aggregate>,
    /// Fields read, and whether a percentile of each is asked.
    fields: BTreeMap<String, bool>,
    /// The field whose values are kept for a kernel.
    collect: Option<String>,
}

/// A record's value for a field the aggregates read was missing or not a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotANumber {
    pub field: String,
}

impl AggSet {
    pub fn new(aggs: Vec<Aggregate>) -> AggSet {
        AggSet::collecting(aggs, None)
    }

    /// Aggregates, and the values of `collect` kept for a kernel.
    pub fn collecting(aggs: Vec<Aggregate>, collect: Option<String>) -> AggSet {
        let mut fields = BTreeMap::new();
        for a in &aggs {
            if let Some(f) = &a.field {
                let p = fields.entry(f.clone()).or_insert(false);
                *p |= a.kind.quantile().is_some();
            }
        }
        if let Some(f) = &collect {
            fields.entry(f.clone()).or_insert(false);
        }
        AggSet {
            aggs,
            fields,
            collect,
        }
    }

    /// The kept values of a window, when a kernel reads them.
    pub fn collected(&self, acc: &Acc) -> Option<Vec<(i64, f64)>> {
        let f = self.collect.as_ref()?;
        acc.fields.get(f)?.values.clone()
    }

    pub fn empty(&self) -> Acc {
        Acc {
            records: 0,
            fields: self
                .fields
                .iter()
                .map(|(f, p)| {
                    let keep = self.collect.as_ref() == Some(f);
                    (f.clone(), FieldAcc::new(*p, keep))
                })
                .collect(),
        }
    }

    /// The numbers a record gives each field read, or which field it lacks.
    pub fn values(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<f64>, NotANumber> {
        self.fields
            .keys()
            .map(|f| {
                record
                    .get(f)
                    .and_then(serde_json::Value::as_f64)
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| NotANumber { field: f.clone() })
            })
            .collect()
    }

    /// Add a record (its event time and [`AggSet::values`]) to `acc`.
    pub fn add(&self, acc: &mut Acc, t: i64, values: &[f64]) {
        acc.records += 1;
        for ((_, f), v) in acc.fields.iter_mut().zip(values) {
            f.add(t, *v);
        }
    }

    /// The window's result fields (a window with no record for a field gives null).
    pub fn finish(&self, acc: &Acc) -> serde_json::Map<String, serde_json::Value> {
        self.aggs
            .iter()
            .map(|a| {
                let v = match &a.field {
                    None => Some(acc.records as f64),
                    Some(f) => acc.fields.get(f).and_then(|x| x.value(a.kind)),
                };
                let json = match (a.kind, v) {
                    (AggKind::Count, Some(n)) => serde_json::Value::from(n as u64),
                    (_, Some(x)) => serde_json::Number::from_f64(x)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                    (_, None) => serde_json::Value::Null,
                };
                (a.name.clone(), json)
            })
            .collect()
    }
}

impl Acc {
    /// Fold `other` (a window that merged into this one) in.
    pub fn merge(&mut self, other: &Acc) {
        self.records += other.records;
        for (f, o) in &other.fields {
            match self.fields.get_mut(f) {
                Some(a) => a.merge(o),
                None => {
                    self.fields.insert(f.clone(), o.clone());
                }
            }
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(spec: &[(&str, AggKind, Option<&str>)]) -> AggSet {
        AggSet::new(
            spec.iter()
                .map(|(n, k, f)| Aggregate {
                    name: n.to_string(),
                    kind: *k,
                    field: f.map(String::from),
                })
                .collect(),
        )
    }

    fn rec(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn incremental_aggregates_equal_a_recomputation_and_survive_a_merge() {
        use AggKind::*;
        let s = set(&[
            ("n", Count, None),
            ("sum", Sum, Some("x")),
            ("mean", Mean, Some("x")),
            ("lo", Min, Some("x")),
            ("hi", Max, Some("x")),
            ("sd", Std, Some("x")),
            ("p50", P50, Some("x")),
            ("p99", P99, Some("x")),
            ("first", First, Some("x")),
            ("last", Last, Some("x")),
        ]);
        // Out of event-time order on purpose.
        let xs: Vec<(i64, f64)> = (0..1000)
            .map(|i| (((i * 7919) % 1000) as i64, ((i * 37) % 101) as f64 - 30.0))
            .collect();
        let (mut a, mut b, mut whole) = (s.empty(), s.empty(), s.empty());
        for (i, (t, x)) in xs.iter().enumerate() {
            let v = s.values(&rec(json!({ "x": x }))).unwrap_or_default();
            s.add(&mut whole, *t, &v);
            s.add(if i % 3 == 0 { &mut a } else { &mut b }, *t, &v);
        }
        a.merge(&b);
        let n = xs.len() as f64;
        let mean = xs.iter().map(|p| p.1).sum::<f64>() / n;
        let sd = (xs.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let mut sorted: Vec<f64> = xs.iter().map(|p| p.1).collect();
        sorted.sort_by(f64::total_cmp);
        let first = xs.iter().min_by_key(|p| p.0).map(|p| p.1);
        let last = xs.iter().max_by_key(|p| p.0).map(|p| p.1);
        for acc in [&whole, &a] {
            let r = s.finish(acc);
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            assert_eq!(r["n"], 1000);
            assert!((f("sum") - mean * n).abs() < 1e-6, "{r:?}");
            assert!((f("mean") - mean).abs() < 1e-9, "{r:?}");
            assert!((f("sd") - sd).abs() < 1e-9, "{r:?}");
            assert_eq!((f("lo"), f("hi")), (sorted[0], sorted[999]));
            assert_eq!((Some(f("first")), Some(f("last"))), (first, last));
            // DDSketch: within 1% of a value at the asked rank.
            for (k, q) in [("p50", 0.5), ("p99", 0.99)] {
                let rank = ((q * (n - 1.0)) as usize).min(999);
                let near = &sorted[rank.saturating_sub(10)..(rank + 10).min(1000)];
                assert!(
                    near.iter()
                        .any(|v| (f(k) - v).abs() <= v.abs() * 0.01 + 1e-9),
                    "{k} = {} not within 1% of values near rank {rank}: {near:?}",
                    f(k)
                );
            }
        }
    }

    #[test]
    fn a_record_without_a_number_for_an_aggregated_field_is_named() {
        let s = set(&[
            ("t", AggKind::Mean, Some("temp")),
            ("n", AggKind::Count, None),
        ]);
        assert_eq!(
            s.values(&rec(json!({ "temp": "hot" }))),
            Err(NotANumber {
                field: "temp".into()
            })
        );
        assert!(s.values(&rec(json!({ "x": 1 }))).is_err());
        assert_eq!(s.values(&rec(json!({ "temp": 2.5 }))), Ok(vec![2.5]));
        // An empty window: counts are 0, the rest null.
        let r = s.finish(&s.empty());
        assert_eq!(r["n"], 0);
        assert!(r["t"].is_null());
    }
}
