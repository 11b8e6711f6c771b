//! A stream job as its user writes it (API.md "Stream jobs"), checked into what the engine
//! runs: every error names the field (`pipeline[2].window.size_ms`) and what is wrong; an
//! expression's error says where in it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agg::{AggKind, Aggregate};
use crate::expr::Expr;
use crate::window::WindowKind;

/// A spec that cannot run, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// Event time: a field of the record (ms since the epoch, or RFC 3339 text), or the arrival
/// time when `field` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    pub field: Option<String>,
    /// How far behind the largest event time seen a record may be and still count.
    #[serde(default)]
    pub max_delay_ms: u64,
    /// A source silent this long lets the watermark move on with the clock, so that the last
    /// windows close (default 2 × `max_delay_ms`, at least 1 s).
    pub idle_ms: Option<u64>,
}

impl TimeSpec {
    pub fn idle_ms(&self) -> u64 {
        self.idle_ms
            .unwrap_or_else(|| (2 * self.max_delay_ms).max(1_000))
    }
}

/// One step of the pipeline, checked and compiled.
#[derive(Debug)]
pub enum Step {
    Filter(Expr),
    /// New or replaced fields, in the order written.
    Map(Vec<(String, Expr)>),
    KeyBy(String),
    Window {
        kind: WindowKind,
        aggregates: Vec<Aggregate>,
        /// A C++ kernel run over each closed window's values of one field.
        kernel: Option<KernelStep>,
    },
}

/// `"kernel": {"name", "field", "as"}` of a window step: the kernel gets the window's values
/// of `field` (in arrival order, at most [`MAX_KERNEL_VALUES`]) and its result goes into the
/// window's result under `as` (default: the kernel's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelStep {
    pub name: String,
    pub field: String,
    pub output: String,
}

/// The kernels a window step can run, with the input each is given: `stats` and `sort`
/// `{"values"}`, `fft` `{"values"}` zero-padded to a power of two, `window_agg`
/// `{"points": [[t, v]...], "window_ms", "aggs": ["count", "mean", "anomaly"]}`.
pub const WINDOW_KERNELS: [&str; 4] = ["stats", "sort", "fft", "window_agg"];
/// The most values of one window a kernel gets (later ones are left out of its input).
pub const MAX_KERNEL_VALUES: usize = 65_536;

/// The largest window size accepted (a day): open windows live in memory.
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// The most steps in a pipeline.
pub const MAX_STEPS: usize = 64;

/// Check and compile a `pipeline` array (the JSON of API.md).
pub fn pipeline(v: &Value) -> Result<Vec<Step>, SpecError> {
    let steps = v
        .as_array()
        .ok_or_else(|| bad("pipeline", "must be an array of steps"))?;
    if steps.len() > MAX_STEPS {
        return Err(bad(
            "pipeline",
            format!("{} steps; at most {MAX_STEPS}", steps.len()),
        ));
    }
    let mut out = Vec::with_capacity(steps.len());
    let mut windows = 0;
    for (i, s) in steps.iter().enumerate() {
        let at = format!("pipeline[{i}]");
        let o = s.as_object().ok_or_else(|| {
            bad(
                &at,
                "a step is an object such as {\"filter\": \"temp > 0.0\"}",
            )
        })?;
        let kinds: Vec<&str> = ["filter", "map", "key_by", "window"]
            .into_iter()
            .filter(|k| o.contains_key(*k))
            .collect();
        let step = match kinds.as_slice() {
            ["filter"] => {
                only(o, &["filter"], &at)?;
                Step::Filter(expr(&o["filter"], &format!("{at}.filter"))?)
            }
            ["map"] => {
                only(o, &["map"], &at)?;
                let m = o["map"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| bad(format!("{at}.map"), "an object of field: expression"))?;
                let mut fields = Vec::new();
                for (name, e) in m {
                    fields.push((name.clone(), expr(e, &format!("{at}.map.{name}"))?));
                }
                Step::Map(fields)
            }
            ["key_by"] => {
                only(o, &["key_by"], &at)?;
                let f = o["key_by"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| bad(format!("{at}.key_by"), "a field name"))?;
                Step::KeyBy(f.to_string())
            }
            ["window"] => {
                only(o, &["window", "aggregate", "kernel"], &at)?;
                windows += 1;
                if windows > 1 {
                    return Err(bad(&at, "one window step per job"));
                }
                let kind = window(&o["window"], &format!("{at}.window"))?;
                let aggregates = aggregates(
                    o.get("aggregate").ok_or_else(|| {
                        bad(
                            format!("{at}.aggregate"),
                            "missing: what the window computes, e.g. {\"n\": {\"count\": \"*\"}}",
                        )
                    })?,
                    &format!("{at}.aggregate"),
                )?;
                let kernel = match o.get("kernel") {
                    None => None,
                    Some(k) => Some(kernel_step(k, &format!("{at}.kernel"))?),
                };
                Step::Window {
                    kind,
                    aggregates,
                    kernel,
                }
            }
            [] => {
                return Err(bad(
                    &at,
                    format!(
                        "unknown step {:?}; steps are filter, map, key_by, window",
                        o.keys().collect::<Vec<_>>()
                    ),
                ))
            }
            more => {
                return Err(bad(
                    &at,
                    format!("one kind of step per object, not {more:?}"),
                ))
            }
        };
        out.push(step);
    }
    if let Some(i) = out.iter().position(|s| matches!(s, Step::Window { .. })) {
        if i + 1 != out.len() {
            return Err(bad(
                format!("pipeline[{}]", i + 1),
                "the window step is the last one",
            ));
        }
    }
    Ok(out)
}

fn only(o: &serde_json::Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), SpecError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            format!("{at}.{k}"),
            format!("unknown here; accepted: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn kernel_step(v: &Value, at: &str) -> Result<KernelStep, SpecError> {
    let o = v.as_object().ok_or_else(|| {
        bad(
            at,
            "an object such as {\"name\": \"stats\", \"field\": \"temp\"}",
        )
    })?;
    only(o, &["name", "field", "as"], at)?;
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| WINDOW_KERNELS.contains(n))
        .ok_or_else(|| {
            bad(
                format!("{at}.name"),
                format!("one of {}", WINDOW_KERNELS.join(", ")),
            )
        })?;
    let field = o
        .get("field")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            bad(
                format!("{at}.field"),
                "the numeric field whose values it gets",
            )
        })?;
    let output = match o.get("as") {
        None => name.to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(_) => return Err(bad(format!("{at}.as"), "a field name")),
    };
    Ok(KernelStep {
        name: name.to_string(),
        field: field.to_string(),
        output,
    })
}

fn expr(v: &Value, at: &str) -> Result<Expr, SpecError> {
    let src = v
        .as_str()
        .ok_or_else(|| bad(at, "an expression, as a string"))?;
    Expr::compile(src).map_err(|e| bad(at, format!("{src:?} does not parse {e}")))
}

fn window(v: &Value, at: &str) -> Result<WindowKind, SpecError> {
    let k: WindowKind = serde_json::from_value(v.clone()).map_err(|e| {
        bad(
            at,
            format!("{e}; e.g. {{\"type\": \"tumbling\", \"size_ms\": 10000}}"),
        )
    })?;
    let (field, ms) = match k {
        WindowKind::Tumbling { size_ms } => ("size_ms", size_ms),
        WindowKind::Sliding { size_ms, slide_ms } => {
            if slide_ms == 0 || slide_ms > size_ms || size_ms / slide_ms > 1_000 {
                return Err(bad(
                    format!("{at}.slide_ms"),
                    format!("{slide_ms}; from 1 to size_ms ({size_ms}), at most 1,000 windows per record"),
                ));
            }
            ("size_ms", size_ms)
        }
        WindowKind::Session { gap_ms } => ("gap_ms", gap_ms),
    };
    if ms == 0 || ms > MAX_WINDOW_MS {
        return Err(bad(
            format!("{at}.{field}"),
            format!("{ms}; from 1 to {MAX_WINDOW_MS} (a day)"),
        ));
    }
    Ok(k)
}

fn aggregates(v: &Value, at: &str) -> Result<Vec<Aggregate>, SpecError> {
    let m = v
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad(at, "an object of name: {aggregate: field}"))?;
    let mut out = Vec::new();
    for (name, a) in m {
        let here = format!("{at}.{name}");
        if ["key", "window_start", "window_end", "result_id"].contains(&name.as_str()) {
            return Err(bad(&here, "reserved for the window's own fields"));
        }
        let one: BTreeMap<String, Value> = serde_json::from_value(a.clone()).unwrap_or_default();
        let [(kind, field)] = one.iter().collect::<Vec<_>>()[..] else {
            return Err(bad(&here, "one aggregate, e.g. {\"mean\": \"temp\"}"));
        };
        let k = AggKind::parse(kind).ok_or_else(|| {
            bad(
                format!("{here}.{kind}"),
                format!(
                    "unknown aggregate; accepted: {}",
                    AggKind::ALL.map(AggKind::name).join(", ")
                ),
            )
        })?;
        let f = field.as_str().filter(|f| !f.is_empty()).ok_or_else(|| {
            bad(
                format!("{here}.{kind}"),
                "a field name (or \"*\" for count)",
            )
        })?;
        let field = match (k, f) {
            (AggKind::Count, "*") => None,
            (_, "*") => {
                return Err(bad(
                    format!("{here}.{kind}"),
                    "\"*\" only counts records; name a field",
                ))
            }
            (_, f) => Some(f.to_string()),
        };
        out.push(Aggregate {
            name: name.clone(),
            kind: k,
            field,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> SpecError {
        match pipeline(&v) {
            Err(e) => e,
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    #[test]
    fn the_api_example_compiles() {
        let p = pipeline(&json!([
            { "filter": "temp > -50.0" },
            { "map": { "temp_f": "temp * 1.8 + 32.0" } },
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 10000 },
              "aggregate": { "mean_temp": { "mean": "temp" }, "n": { "count": "*" }, "hi": { "max": "temp" } } }
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 4);
        match &p[3] {
            Step::Window {
                kind, aggregates, ..
            } => {
                assert_eq!(*kind, WindowKind::Tumbling { size_ms: 10_000 });
                assert_eq!(aggregates.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_mistake_names_its_field() {
        let e = err(json!([{ "filter": "temp > > 1.0" }]));
        assert_eq!(e.field, "pipeline[0].filter");
        assert!(e.message.contains("column"), "{e}");
        let e = err(
            json!([{ "window": { "type": "tumbling" }, "aggregate": { "n": { "count": "*" } } }]),
        );
        assert_eq!(e.field, "pipeline[0].window");
        assert!(e.message.contains("size_ms"), "{e}");
        let e = err(
            json!([{ "window": { "type": "tumbling", "size_ms": 0 }, "aggregate": { "n": { "count": "*" } } }]),
        );
        assert_eq!(e.field, "pipeline[0].window.size_ms");
        let e = err(
            json!([{ "window": { "type": "tumbling", "size_ms": 10 }, "aggregate": { "m": { "median": "x" } } }]),
        );
        assert_eq!(e.field, "pipeline[0].aggregate.m.median");
        assert!(e.message.contains("p50"), "{e}");
        let e = err(json!([{ "window": { "type": "tumbling", "size_ms": 10 } }]));
        assert_eq!(e.field, "pipeline[0].aggregate");
        let e = err(
            json!([{ "window": { "type": "sliding", "size_ms": 10, "slide_ms": 20 }, "aggregate": { "n": { "count": "*" } } }]),
        );
        assert_eq!(e.field, "pipeline[0].window.slide_ms");
        let e = err(
            json!([{ "window": { "type": "tumbling", "size_ms": 10 }, "aggregate": { "n": { "count": "*" } } }, { "key_by": "s" }]),
        );
        assert_eq!(e.field, "pipeline[1]");
        let e = err(json!([{ "filter": "a > 1.0", "map": {} }]));
        assert_eq!(e.field, "pipeline[0]");
        let e = err(json!([{ "flatten": "x" }]));
        assert!(e.message.contains("unknown step"), "{e}");
        let e = err(
            json!([{ "window": { "type": "tumbling", "size_ms": 10 }, "aggregate": { "key": { "count": "*" } } }]),
        );
        assert_eq!(e.field, "pipeline[0].aggregate.key");
        let e = err(json!({ "filter": "x" }));
        assert_eq!(e.field, "pipeline");
    }
}
