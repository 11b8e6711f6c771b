//! Sources: where a runner's records come from. Each source reads in its own task into a
//! bounded queue (the runner only ever waits on the queue, which is cancel-safe), so a runner
//! that falls behind stops the reading: MQTT stops taking from the socket (the broker holds
//! what it cannot send), Redis is not asked for more, the file is not read further, and the
//! `http` source answers 429.
//!
//! Each batch carries what acknowledges it ([`Ack`]); the runner keeps them and acknowledges
//! after the checkpoint that covers the batch is committed: MQTT PUBACKs (unacknowledged QoS 1
//! messages are sent again by the broker to the job's next runner, which connects with the
//! same client id and a persistent session), Redis XACK (unacknowledged entries stay pending
//! for the job's consumer and are read again), the `http` caller's answer. A file's position
//! is its byte offset, kept in the checkpoint.

use std::path::PathBuf;
use std::time::Duration;

use edgerun_streams::SourceDef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, oneshot};

use crate::streams::ingress::Batch;

/// MQTT 5 for the source: its receive maximum (up to 65,535 unacknowledged messages) replaces
/// the broker's `max_inflight_messages` (mosquitto's default is 20), which would otherwise
/// cap a source that acknowledges only at checkpoints to 20 messages per checkpoint.
mod mqtt {
    pub use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
}

/// Unacknowledged QoS 1 messages the broker may send this source (the runner checkpoints
/// before it holds this many: `runner::HOLD_ACKS`).
pub const MQTT_RECEIVE_MAX: u16 = 20_000;

/// How long the broker keeps a job's MQTT session (and its unacknowledged messages) after its
/// runner went away: a week, then a deleted job's session is gone.
const MQTT_SESSION_SECS: u32 = 7 * 86_400;

/// Where a source resumes (part of the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourcePos {
    /// The source itself replays what was not acknowledged (MQTT, http).
    #[default]
    Replayed,
    /// The last Redis stream entry taken.
    Redis { last_id: Option<String> },
    /// Bytes of the file taken.
    File { offset: u64 },
}

/// What acknowledges a batch once it is checkpointed.
pub enum Ack {
    None,
    Mqtt(Vec<mqtt::Publish>),
    Redis(Vec<String>),
    Http { done: oneshot::Sender<u64>, n: u64 },
}

/// Records read, with the source position after them.
pub struct Polled {
    pub records: Vec<Value>,
    /// Records that are not JSON objects or are too long.
    pub malformed: u64,
    pub pos: SourcePos,
    pub ack: Ack,
    /// The http caller's batch id.
    pub batch_id: Option<String>,
}

/// A problem the source reports while it keeps trying (an unreachable broker).
pub type Problem = Option<String>;

/// A running source: batches to take, problems to show in the job's status, and how to
/// acknowledge.
pub struct Source {
    pub batches: mpsc::Receiver<Polled>,
    pub problems: tokio::sync::watch::Receiver<Problem>,
    acker: Acker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Acker {
    None,
    Mqtt(rumqttc::v5::AsyncClient),
    Redis {
        conn: Option<redis::aio::MultiplexedConnection>,
        client: redis::Client,
        stream: String,
        group: String,
    },
}

/// What every source needs besides its definition.
pub struct Ctx {
    pub job: edgerun_model::StreamId,
    pub files_dir: PathBuf,
    pub max_record_bytes: usize,
    pub queue: usize,
    /// The `http` source's queue (from the node's ingress).
    pub ingress: Option<mpsc::Receiver<Batch>>,
}

/// Most entries per read (Redis) or lines per batch (file).
const BATCH: usize = 512;

/// Parse one record: a JSON object (other JSON, bad JSON or too long = malformed).
pub fn parse_record(bytes: &[u8], max: usize) -> Option<Value> {
    if bytes.len() > max {
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// A POSTed body: a JSON array of records, or JSON lines. Returns (records, malformed).
pub fn parse_body(body: &[u8], max: usize) -> (Vec<Value>, u64) {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        if let Ok(items) = serde_json::from_slice::<Vec<Value>>(body) {
            let n = items.len();
            let ok: Vec<Value> = items.into_iter().filter(|v| v.is_object()).collect();
            let bad = (n - ok.len()) as u64;
            return (ok, bad);
        }
    }
    let mut out = Vec::new();
    let mut bad = 0;
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match parse_record(line, max) {
            Some(v) => out.push(v),
            None => bad += 1,
        }
    }
    (out, bad)
}

impl Source {
    /// Start reading `def` from `pos`.
    pub async fn open(def: &SourceDef, pos: &SourcePos, mut ctx: Ctx) -> Result<Source, String> {
        // MQTT hands over one message per entry; the others a batch.
        let capacity = match def {
            SourceDef::Mqtt { .. } => ctx.queue.max(1) * 64,
            _ => ctx.queue.max(1),
        };
        let (tx, rx) = mpsc::channel(capacity);
        // Until the source is ready (connected, subscribed, opened) the job is `starting`
        // with this as its error; the http source is ready at once.
        let first = match def {
            SourceDef::Http => None,
            other => Some(format!("connecting the {} source", other.kind())),
        };
        let (problem_tx, problems) = tokio::sync::watch::channel(first);
        let max = ctx.max_record_bytes;
        let (tasks, acker) = match def {
            SourceDef::Http => {
                let mut ingress = ctx
                    .ingress
                    .take()
                    .ok_or("the http source has no ingress queue")?;
                let task = tokio::spawn(async move {
                    while let Some(b) = ingress.recv().await {
                        let (records, malformed) = parse_body(&b.body, max);
                        let n = records.len() as u64 + malformed;
                        let polled = Polled {
                            records,
                            malformed,
                            pos: SourcePos::Replayed,
                            ack: Ack::Http { done: b.done, n },
                            batch_id: b.batch_id,
                        };
                        if tx.send(polled).await.is_err() {
                            return;
                        }
                    }
                });
                (vec![task], Acker::None)
            }
            SourceDef::File { path } => {
                let path = ctx.files_dir.join(path);
                let offset = match pos {
                    SourcePos::File { offset } => *offset,
                    _ => 0,
                };
                let task = tokio::spawn(tail_file(path, offset, max, tx, problem_tx));
                (vec![task], Acker::None)
            }
            SourceDef::Redis { url, stream, group } => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| format!("source.url: {e}"))?;
                let last = match pos {
                    SourcePos::Redis { last_id } => last_id.clone(),
                    _ => None,
                };
                let consumer = format!("edgerun-stream-{}", ctx.job);
                let task = tokio::spawn(read_redis(
                    client.clone(),
                    stream.clone(),
                    group.clone(),
                    consumer,
                    last,
                    max,
                    tx,
                    problem_tx,
                ));
                (
                    vec![task],
                    Acker::Redis {
                        conn: None,
                        client,
                        stream: stream.clone(),
                        group: group.clone(),
                    },
                )
            }
            SourceDef::Mqtt {
                host,
                port,
                topic,
                qos,
            } => {
                let mut opts = mqtt::MqttOptions::new(
                    format!("edgerun-stream-{}", ctx.job),
                    host.clone(),
                    *port,
                );
                opts.set_keep_alive(Duration::from_secs(10));
                // A persistent session: what this runner did not acknowledge is sent again
                // to the job's next runner (same client id).
                opts.set_clean_start(false);
                opts.set_session_expiry_interval(Some(MQTT_SESSION_SECS));
                opts.set_receive_maximum(Some(MQTT_RECEIVE_MAX));
                opts.set_manual_acks(true);
                opts.set_max_packet_size(Some(
                    u32::try_from(max.saturating_add(1024)).unwrap_or(u32::MAX),
                ));
                // Acknowledgements go through this queue: room for a checkpoint's worth.
                let (client, eventloop) = mqtt::AsyncClient::new(opts, 10_000);
                let q = if *qos == 0 {
                    mqtt::QoS::AtMostOnce
                } else {
                    mqtt::QoS::AtLeastOnce
                };
                // The event loop is never kept waiting (it also answers the broker's pings
                // and sends acknowledgements; it is not cancel-safe, so it is not raced
                // against the queue): messages go through an unbounded hand-off, bounded in
                // fact by the receive maximum for QoS 1 (unacknowledged messages), and by
                // dropping past it for QoS 0 (at most once).
                let (utx, mut urx) = mpsc::unbounded_channel::<Polled>();
                let backlog = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let b = backlog.clone();
                let forward = tokio::spawn(async move {
                    while let Some(p) = urx.recv().await {
                        b.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        if tx.send(p).await.is_err() {
                            return;
                        }
                    }
                });
                let task = tokio::spawn(read_mqtt(
                    client.clone(),
                    eventloop,
                    topic.clone(),
                    q,
                    max,
                    utx,
                    backlog,
                    problem_tx,
                ));
                (vec![task, forward], Acker::Mqtt(client))
            }
        };
        Ok(Source {
            batches: rx,
            problems,
            acker,
            tasks,
        })
    }

    /// Acknowledge batches whose records are in a committed checkpoint.
    pub async fn acknowledge(&mut self, acks: Vec<Ack>) -> Result<(), String> {
        let mut redis_ids = Vec::new();
        for a in acks {
            match a {
                Ack::None => {}
                Ack::Http { done, n } => {
                    let _ = done.send(n);
                }
                Ack::Mqtt(ps) => {
                    if let Acker::Mqtt(c) = &self.acker {
                        for p in ps {
                            c.ack(&p).await.map_err(|e| format!("mqtt ack: {e}"))?;
                        }
                    }
                }
                Ack::Redis(ids) => redis_ids.extend(ids),
            }
        }
        if redis_ids.is_empty() {
            return Ok(());
        }
        if let Acker::Redis {
            conn,
            client,
            stream,
            group,
        } = &mut self.acker
        {
            if conn.is_none() {
                *conn = Some(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| format!("redis: {e}"))?,
                );
            }
            if let Some(c) = conn.as_mut() {
                for chunk in redis_ids.chunks(1000) {
                    let r: redis::RedisResult<u64> = redis::cmd("XACK")
                        .arg(stream.as_str())
                        .arg(group.as_str())
                        .arg(chunk)
                        .query_async(c)
                        .await;
                    if let Err(e) = r {
                        *conn = None;
                        // Not acknowledged: read again after a restart, skipped there by the
                        // checkpoint's position.
                        return Err(format!("redis XACK: {e}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Backoff between reconnects of a source that cannot reach its broker.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((200u64 << failures.min(6)).min(10_000))
}

async fn tail_file(
    path: PathBuf,
    mut offset: u64,
    max: usize,
    tx: mpsc::Sender<Polled>,
    problem: tokio::sync::watch::Sender<Problem>,
) {
    let mut failures = 0;
    loop {
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                problem.send_replace(Some(format!("file {}: {e}", path.display())));
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        problem.send_replace(None);
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len < offset {
            tracing::warn!(path = %path.display(), offset, len, "the file is shorter than the checkpoint's position (truncated or replaced); reading it from the start");
            offset = 0;
        }
        let mut r = tokio::io::BufReader::with_capacity(256 * 1024, file);
        if r.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            tokio::time::sleep(backoff(failures)).await;
            failures += 1;
            continue;
        }
        let mut line = Vec::new();
        loop {
            let mut records = Vec::new();
            let mut malformed = 0;
            let mut at_end = false;
            while records.len() < BATCH {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) => {
                        at_end = true;
                        break;
                    }
                    Ok(n) => {
                        if line.last() != Some(&b'\n') {
                            // A line still being written: read it whole later.
                            let back = -(n as i64);
                            let _ = r.seek(std::io::SeekFrom::Current(back)).await;
                            at_end = true;
                            break;
                        }
                        offset += n as u64;
                        let text = line.trim_ascii();
                        if text.is_empty() {
                            continue;
                        }
                        match parse_record(text, max) {
                            Some(v) => records.push(v),
                            None => malformed += 1,
                        }
                    }
                    Err(e) => {
                        problem.send_replace(Some(format!("file {}: {e}", path.display())));
                        at_end = true;
                        break;
                    }
                }
            }
            if !records.is_empty() || malformed > 0 {
                let polled = Polled {
                    records,
                    malformed,
                    pos: SourcePos::File { offset },
                    ack: Ack::None,
                    batch_id: None,
                };
                if tx.send(polled).await.is_err() {
                    return;
                }
            }
            if at_end {
                // Tailing: look again shortly (a file has no readiness to wait on).
                tokio::time::sleep(Duration::from_millis(100)).await;
                let len = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len < offset {
                    break; // truncated: reopen
                }
            }
        }
    }
}

/// A Redis stream entry as a record: a `json` field holding the record, or the fields as an
/// object (each value read as JSON when it is, such as a number, else as text).
fn redis_record(fields: &[(String, Vec<u8>)], max: usize) -> Option<Value> {
    if let Some((_, v)) = fields.iter().find(|(k, _)| k == "json") {
        return parse_record(v, max);
    }
    let mut m = Map::new();
    let mut size = 0;
    for (k, v) in fields {
        size += k.len() + v.len();
        let value = serde_json::from_slice::<Value>(v)
            .ok()
            .filter(|v| !v.is_object() && !v.is_array())
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(v).into_owned()));
        m.insert(k.clone(), value);
    }
    (size <= max).then_some(Value::Object(m))
}

type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// XREADGROUP's answer for one stream: entries (id, fields).
fn entries(v: redis::Value) -> Entries {
    use redis::Value as V;
    let mut out = Vec::new();
    let streams = match v {
        V::Array(s) => s,
        V::Map(m) => m.into_iter().map(|(k, v)| V::Array(vec![k, v])).collect(),
        _ => return out,
    };
    for s in streams {
        let V::Array(mut parts) = s else { continue };
        if parts.len() != 2 {
            continue;
        }
        let Some(V::Array(items)) = parts.pop() else {
            continue;
        };
        for item in items {
            let V::Array(mut e) = item else { continue };
            if e.len() != 2 {
                continue;
            }
            let fields = e.pop();
            let id = match e.pop() {
                Some(V::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                Some(V::SimpleString(s)) => s,
                _ => continue,
            };
            let mut fs = Vec::new();
            if let Some(V::Array(kv)) = fields {
                let mut it = kv.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let k = match k {
                        V::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                        V::SimpleString(s) => s,
                        _ => continue,
                    };
                    let v = match v {
                        V::BulkString(b) => b,
                        V::SimpleString(s) => s.into_bytes(),
                        V::Int(i) => i.to_string().into_bytes(),
                        _ => continue,
                    };
                    fs.push((k, v));
                }
            }
            // A pending entry deleted from the stream reads as nil fields: skip it (acked).
            out.push((id, fs));
        }
    }
    out
}

/// Stream ids compare as (ms, seq).
fn id_le(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) <= parse(b)
}

#[allow(clippy::too_many_arguments)]
async fn read_redis(
    client: redis::Client,
    stream: String,
    group: String,
    consumer: String,
    last: Option<String>,
    max: usize,
    tx: mpsc::Sender<Polled>,
    problem: tokio::sync::watch::Sender<Problem>,
) {
    let mut failures = 0;
    let mut last = last;
    'connect: loop {
        let mut conn = match client.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => {
                problem.send_replace(Some(format!("redis {stream}: {e}; retrying")));
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        // The group from the start of the stream unless it exists (BUSYGROUP).
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(&group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                problem.send_replace(Some(format!(
                    "redis {stream}: XGROUP CREATE: {e}; retrying"
                )));
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        }
        problem.send_replace(None);
        failures = 0;
        // First what this job's consumer was given and did not acknowledge (its history,
        // from id 0), then new entries (">").
        let mut history = true;
        let mut cursor = "0".to_string();
        loop {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&group)
                .arg(&consumer)
                .arg("COUNT")
                .arg(BATCH);
            if history {
                // The consumer's pending entries after `cursor` (never blocks).
                cmd.arg("STREAMS").arg(&stream).arg(&cursor);
            } else {
                cmd.arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">");
            }
            let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut conn).await;
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    problem
                        .send_replace(Some(format!("redis {stream}: XREADGROUP: {e}; retrying")));
                    tokio::time::sleep(backoff(failures)).await;
                    failures += 1;
                    continue 'connect;
                }
            };
            let got = entries(v);
            if history && got.is_empty() {
                history = false;
                continue;
            }
            let mut records = Vec::with_capacity(got.len());
            let mut malformed = 0;
            let mut ids = Vec::with_capacity(got.len());
            let mut skipped = Vec::new();
            for (id, fields) in got {
                if history {
                    cursor = id.clone();
                }
                // Taken before the checkpoint (its acknowledgement was lost): skip, acknowledge.
                if last.as_deref().is_some_and(|l| id_le(&id, l)) || fields.is_empty() {
                    skipped.push(id);
                    continue;
                }
                match redis_record(&fields, max) {
                    Some(v) => records.push(v),
                    None => malformed += 1,
                }
                last = Some(id.clone());
                ids.push(id);
            }
            ids.extend(skipped);
            if ids.is_empty() {
                continue;
            }
            let polled = Polled {
                records,
                malformed,
                pos: SourcePos::Redis {
                    last_id: last.clone(),
                },
                ack: Ack::Redis(ids),
                batch_id: None,
            };
            if tx.send(polled).await.is_err() {
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_mqtt(
    client: mqtt::AsyncClient,
    mut eventloop: mqtt::EventLoop,
    topic: String,
    qos: mqtt::QoS,
    max: usize,
    tx: mpsc::UnboundedSender<Polled>,
    backlog: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    problem: tokio::sync::watch::Sender<Problem>,
) {
    let mut dropped = 0u64;
    use mqtt::{Event, Packet};
    let mut failures = 0;
    let mut subscribed = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                // A new session (the broker kept none) needs the subscription; a kept one
                // has it, and is ready now.
                if !ack.session_present || !subscribed {
                    problem.send_replace(Some(format!("subscribing to {topic}")));
                    if let Err(e) = client.subscribe(topic.clone(), qos).await {
                        problem.send_replace(Some(format!("mqtt subscribe {topic}: {e}")));
                    }
                    subscribed = true;
                } else {
                    problem.send_replace(None);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                problem.send_replace(None);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let (records, malformed) = match parse_record(&p.payload, max) {
                    Some(mut v) => {
                        if let Value::Object(m) = &mut v {
                            m.entry("_topic").or_insert_with(|| {
                                Value::String(String::from_utf8_lossy(&p.topic).into_owned())
                            });
                        }
                        (vec![v], 0)
                    }
                    None => (Vec::new(), 1),
                };
                let at_most_once = p.qos == mqtt::QoS::AtMostOnce;
                if at_most_once
                    && backlog.load(std::sync::atomic::Ordering::SeqCst)
                        >= usize::from(MQTT_RECEIVE_MAX)
                {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(topic = %topic, dropped, "the stream job falls behind a QoS 0 source: messages dropped");
                    }
                    continue;
                }
                // One message per entry: the runner takes many at once (recv_many).
                let polled = Polled {
                    records,
                    malformed,
                    pos: SourcePos::Replayed,
                    ack: if at_most_once {
                        Ack::None
                    } else {
                        Ack::Mqtt(vec![p])
                    },
                    batch_id: None,
                };
                backlog.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if tx.send(polled).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                problem.send_replace(Some(format!("mqtt: {e}; retrying")));
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_arrays_or_json_lines_and_bad_records_are_counted() {
        let (r, bad) = parse_body(br#"[{"a":1},{"b":2},3]"#, 1024);
        assert_eq!((r.len(), bad), (2, 1));
        let (r, bad) = parse_body(b"{\"a\":1}\n\nnot json\n{\"b\":2}\n[1]\n", 1024);
        assert_eq!((r.len(), bad), (2, 2));
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        let (r, bad) = parse_body(long.as_bytes(), 50);
        assert_eq!((r.len(), bad), (0, 1));
        assert!(id_le("5-1", "5-2") && id_le("5-2", "5-2") && !id_le("10-0", "9-9"));
    }

    #[test]
    fn redis_entries_become_records() {
        let f = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
        let r = redis_record(&[f("sensor", "s1"), f("temp", "21.5")], 1024);
        assert_eq!(r, Some(serde_json::json!({"sensor": "s1", "temp": 21.5})));
        let r = redis_record(&[f("json", r#"{"t": 1}"#)], 1024);
        assert_eq!(r, Some(serde_json::json!({"t": 1})));
        assert_eq!(redis_record(&[f("json", "[1]")], 1024), None);
    }
}
