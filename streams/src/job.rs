//! A whole stream job's definition (API.md "Stream jobs"): source, event time, pipeline, sink
//! and checkpoint interval, checked without any I/O. Errors name the field, like the
//! pipeline's.
//!
//! File paths are relative to the node's stream file directory (`streams.files_dir`): a job
//! never names an absolute path or climbs out with `..`, so it cannot read or overwrite the
//! node's own files.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{pipeline, SpecError, Step, TimeSpec};

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceDef {
    /// Records POSTed to `/v1/streams/{id}/records` on any node.
    Http,
    /// An MQTT subscription (QoS 0 or 1).
    Mqtt {
        host: String,
        port: u16,
        topic: String,
        qos: u8,
    },
    /// A Redis stream read through a consumer group.
    Redis {
        url: String,
        stream: String,
        group: String,
    },
    /// JSON lines appended to a file, tailed.
    File { path: String },
}

impl SourceDef {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceDef::Http => "http",
            SourceDef::Mqtt { .. } => "mqtt",
            SourceDef::Redis { .. } => "redis",
            SourceDef::File { .. } => "file",
        }
    }
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkDef {
    /// Kept in the cluster's replicated state.
    Results,
    Mqtt {
        host: String,
        port: u16,
        topic: String,
    },
    /// XADD to a Redis stream.
    Redis { url: String, stream: String },
    /// Batched POSTs of JSON arrays.
    Http { url: String },
    /// JSON lines appended to a file.
    File { path: String },
}

impl SinkDef {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkDef::Results => "results",
            SinkDef::Mqtt { .. } => "mqtt",
            SinkDef::Redis { .. } => "redis",
            SinkDef::Http { .. } => "http",
            SinkDef::File { .. } => "file",
        }
    }
}

/// A checked job definition (the pipeline compiled separately: see [`JobDef::steps`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    pub name: String,
    pub source: SourceDef,
    pub time: TimeSpec,
    /// The pipeline's JSON, compiled again where the job runs.
    pub pipeline: Value,
    pub sink: SinkDef,
    pub checkpoint_ms: u64,
}

/// Top-level fields of a definition; `constraints`, `resources` and `max_results` are the
/// cluster's (read by the API), accepted here so that one document describes the job.
const FIELDS: [&str; 9] = [
    "name",
    "source",
    "time",
    "pipeline",
    "sink",
    "checkpoint_ms",
    "constraints",
    "resources",
    "max_results",
];

pub const MIN_CHECKPOINT_MS: u64 = 100;
pub const MAX_CHECKPOINT_MS: u64 = 3_600_000;
pub const DEFAULT_CHECKPOINT_MS: u64 = 1_000;
/// Longest job name.
pub const MAX_NAME: usize = 128;

fn bad(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

impl JobDef {
    /// Check a definition.
    pub fn parse(v: &Value) -> Result<JobDef, SpecError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad("(body)", "a stream job is a JSON object"))?;
        if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(
                k.as_str(),
                format!("unknown field; accepted: {}", FIELDS.join(", ")),
            ));
        }
        let name = match o.get("name") {
            None => return Err(bad("name", "missing")),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME => s.clone(),
            Some(_) => return Err(bad("name", format!("text of 1 to {MAX_NAME} bytes"))),
        };
        let source = source(o.get("source").ok_or_else(|| bad("source", "missing"))?)?;
        let time = match o.get("time") {
            None => TimeSpec::default(),
            Some(t) => serde_json::from_value::<TimeSpec>(t.clone())
                .map_err(|e| bad("time", e.to_string()))?,
        };
        if time.max_delay_ms > crate::spec::MAX_WINDOW_MS {
            return Err(bad(
                "time.max_delay_ms",
                format!("at most {}", crate::spec::MAX_WINDOW_MS),
            ));
        }
        if time
            .idle_ms
            .is_some_and(|i| i == 0 || i > crate::spec::MAX_WINDOW_MS)
        {
            return Err(bad(
                "time.idle_ms",
                format!("from 1 to {}", crate::spec::MAX_WINDOW_MS),
            ));
        }
        let pipeline_json = o
            .get("pipeline")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        pipeline(&pipeline_json)?;
        let sink = sink(o.get("sink").ok_or_else(|| bad("sink", "missing"))?)?;
        let checkpoint_ms = match o.get("checkpoint_ms") {
            None => DEFAULT_CHECKPOINT_MS,
            Some(v) => v
                .as_u64()
                .filter(|n| (MIN_CHECKPOINT_MS..=MAX_CHECKPOINT_MS).contains(n))
                .ok_or_else(|| {
                    bad(
                        "checkpoint_ms",
                        format!(
                            "whole milliseconds from {MIN_CHECKPOINT_MS} to {MAX_CHECKPOINT_MS}"
                        ),
                    )
                })?,
        };
        Ok(JobDef {
            name,
            source,
            time,
            pipeline: pipeline_json,
            sink,
            checkpoint_ms,
        })
    }

    /// The pipeline compiled (it was checked by [`JobDef::parse`]).
    pub fn steps(&self) -> Result<Vec<Step>, SpecError> {
        pipeline(&self.pipeline)
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, SpecError> {
    v.as_object()
        .ok_or_else(|| bad(at, "an object with a \"type\""))
}

fn only(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), SpecError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            format!("{at}.{k}"),
            format!("unknown field; accepted: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn text(o: &Map<String, Value>, key: &str, at: &str) -> Result<String, SpecError> {
    match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(s.clone()),
        Some(_) => Err(bad(
            format!("{at}.{key}"),
            "non-empty text (at most 1024 bytes)",
        )),
        None => Err(bad(format!("{at}.{key}"), "missing")),
    }
}

fn kind<'a>(o: &'a Map<String, Value>, at: &str, kinds: &[&str]) -> Result<&'a str, SpecError> {
    let t = o.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad(
            format!("{at}.type"),
            format!("missing; one of {}", kinds.join(", ")),
        )
    })?;
    if !kinds.contains(&t) {
        return Err(bad(
            format!("{at}.type"),
            format!("unknown {t:?}; one of {}", kinds.join(", ")),
        ));
    }
    Ok(t)
}

/// `mqtt://host[:port]` → (host, port); 1883 by default.
fn mqtt_url(url: &str, at: &str) -> Result<(String, u16), SpecError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| bad(at, "an mqtt://host:port address"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(bad(at, "an mqtt://host:port address (no path, no user)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(at, format!("port {p:?} is not 1 to 65535")))?,
        ),
        _ => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad(at, "no host"));
    }
    Ok((host.to_string(), port))
}

fn url_with(url: &str, schemes: &[&str], at: &str) -> Result<String, SpecError> {
    if !schemes.iter().any(|s| url.starts_with(&format!("{s}://"))) {
        return Err(bad(
            at,
            format!(
                "an address starting with {}",
                schemes.join(":// or ") + "://"
            ),
        ));
    }
    Ok(url.to_string())
}

/// A file path under the node's stream directory: relative, no `..`, no empty parts.
pub fn relative_path(p: &str, at: &str) -> Result<String, SpecError> {
    let ok = !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(bad(
            at,
            "a relative path under the node's streams.files_dir (no leading /, no . or .. parts)",
        ));
    }
    Ok(p.to_string())
}

fn mqtt_topic(t: &str, at: &str, filter: bool) -> Result<(), SpecError> {
    let wild = t.contains('+') || t.contains('#');
    if wild && !filter {
        return Err(bad(at, "a topic to publish to has no wildcards (+, #)"));
    }
    // `#` only as the whole last level; `+` only as a whole level.
    let levels: Vec<&str> = t.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if (l.contains('#') && (*l != "#" || i + 1 != levels.len()))
            || (l.contains('+') && *l != "+")
        {
            return Err(bad(
                at,
                "wildcards are whole levels: + for one level, # as the last",
            ));
        }
    }
    Ok(())
}

fn source(v: &Value) -> Result<SourceDef, SpecError> {
    let at = "source";
    let o = object(v, at)?;
    Ok(match kind(o, at, &["http", "mqtt", "redis", "file"])? {
        "http" => {
            only(o, &["type"], at)?;
            SourceDef::Http
        }
        "mqtt" => {
            only(o, &["type", "url", "topic", "qos"], at)?;
            let (host, port) = mqtt_url(&text(o, "url", at)?, "source.url")?;
            let topic = text(o, "topic", at)?;
            mqtt_topic(&topic, "source.topic", true)?;
            let qos = match o.get("qos") {
                None => 1,
                Some(q) => q
                    .as_u64()
                    .filter(|q| *q <= 1)
                    .ok_or_else(|| bad("source.qos", "0 or 1"))? as u8,
            };
            SourceDef::Mqtt {
                host,
                port,
                topic,
                qos,
            }
        }
        "redis" => {
            only(o, &["type", "url", "stream", "group"], at)?;
            SourceDef::Redis {
                url: url_with(&text(o, "url", at)?, &["redis", "rediss"], "source.url")?,
                stream: text(o, "stream", at)?,
                group: text(o, "group", at)?,
            }
        }
        _ => {
            only(o, &["type", "path"], at)?;
            SourceDef::File {
                path: relative_path(&text(o, "path", at)?, "source.path")?,
            }
        }
    })
}

fn sink(v: &Value) -> Result<SinkDef, SpecError> {
    let at = "sink";
    let o = object(v, at)?;
    Ok(
        match kind(o, at, &["results", "mqtt", "redis", "http", "file"])? {
            "results" => {
                only(o, &["type"], at)?;
                SinkDef::Results
            }
            "mqtt" => {
                only(o, &["type", "url", "topic"], at)?;
                let (host, port) = mqtt_url(&text(o, "url", at)?, "sink.url")?;
                let topic = text(o, "topic", at)?;
                mqtt_topic(&topic, "sink.topic", false)?;
                SinkDef::Mqtt { host, port, topic }
            }
            "redis" => {
                only(o, &["type", "url", "stream"], at)?;
                SinkDef::Redis {
                    url: url_with(&text(o, "url", at)?, &["redis", "rediss"], "sink.url")?,
                    stream: text(o, "stream", at)?,
                }
            }
            "http" => {
                only(o, &["type", "url"], at)?;
                SinkDef::Http {
                    url: url_with(&text(o, "url", at)?, &["http", "https"], "sink.url")?,
                }
            }
            _ => {
                only(o, &["type", "path"], at)?;
                SinkDef::File {
                    path: relative_path(&text(o, "path", at)?, "sink.path")?,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> SpecError {
        match JobDef::parse(&v) {
            Ok(j) => panic!("accepted {j:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_api_example_parses() {
        let j = JobDef::parse(&json!({
            "name": "temps",
            "source": { "type": "mqtt", "url": "mqtt://127.0.0.1:1884", "topic": "sensors/+/temp", "qos": 1 },
            "time": { "field": "ts", "max_delay_ms": 2000 },
            "pipeline": [
                { "filter": "temp > -50.0" },
                { "key_by": "sensor" },
                { "window": { "type": "tumbling", "size_ms": 10000 },
                  "aggregate": { "n": { "count": "*" } } }
            ],
            "sink": { "type": "redis", "url": "redis://127.0.0.1:6379", "stream": "out" },
            "checkpoint_ms": 500
        }))
        .expect("valid");
        assert_eq!(
            j.source,
            SourceDef::Mqtt {
                host: "127.0.0.1".into(),
                port: 1884,
                topic: "sensors/+/temp".into(),
                qos: 1
            }
        );
        assert_eq!(j.checkpoint_ms, 500);
        assert_eq!(j.steps().map(|s| s.len()), Ok(3));
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let base = || json!({"name": "x", "source": {"type": "http"}, "sink": {"type": "results"}});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        assert_eq!(err(json!([])).field, "(body)");
        assert_eq!(err(with("nmae", json!(1))).field, "nmae");
        assert_eq!(
            err(with("source", json!({"type": "kafka"}))).field,
            "source.type"
        );
        assert_eq!(
            err(with(
                "source",
                json!({"type": "mqtt", "url": "http://x", "topic": "a"})
            ))
            .field,
            "source.url"
        );
        assert_eq!(
            err(with(
                "source",
                json!({"type": "mqtt", "url": "mqtt://h:0", "topic": "a"})
            ))
            .field,
            "source.url"
        );
        assert_eq!(
            err(with(
                "source",
                json!({"type": "mqtt", "url": "mqtt://h", "topic": "a/#/b"})
            ))
            .field,
            "source.topic"
        );
        assert_eq!(
            err(with(
                "sink",
                json!({"type": "mqtt", "url": "mqtt://h", "topic": "a/+"})
            ))
            .field,
            "sink.topic"
        );
        for p in ["/etc/passwd", "../x", "a/../../x", "a//b", ""] {
            assert!(
                err(with("source", json!({"type": "file", "path": p})))
                    .field
                    .starts_with("source.path"),
                "{p}"
            );
        }
        assert_eq!(err(with("checkpoint_ms", json!(5))).field, "checkpoint_ms");
        assert_eq!(err(with("time", json!({"max_delay": 5}))).field, "time");
        assert!(err(with(
            "pipeline",
            json!([{"window": {"type": "tumbling"}, "aggregate": {}}])
        ))
        .field
        .starts_with("pipeline[0].window"));
        assert_eq!(
            err(with("sink", json!({"type": "redis", "url": "redis://h"}))).field,
            "sink.stream"
        );
        let mut no_sink = base();
        no_sink.as_object_mut().map(|o| o.remove("sink"));
        assert_eq!(err(no_sink).field, "sink");
    }
}
