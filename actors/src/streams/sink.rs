//! Sinks: where a runner's results go, and what each one guarantees across a restart or a
//! move (the runner resumes from its last checkpoint and makes the results after it again,
//! with the same `result_id`s):
//!
//! | sink | guarantee | how |
//! |---|---|---|
//! | `results` | exactly once | committed in the same Raft entry as the checkpoint |
//! | `redis` | exactly once | `SET NX` of a per-result marker and `XADD` in one script |
//! | `file` | exactly once | the checkpoint keeps the file's length; a restart truncates to it |
//! | `mqtt` | at least once | QoS 1, every PUBACK awaited before the checkpoint |
//! | `http` | at least once | batched POSTs, retried with backoff before the checkpoint |
//!
//! `flush` makes everything written so far durable at the sink; the runner calls it before it
//! proposes a checkpoint, so a committed checkpoint never runs ahead of the sink. A sink that
//! cannot take results fails the runner (it restarts from the checkpoint); `write` flushes
//! by itself past [`FLUSH_AT`] results, so a slow sink slows the runner and, through the
//! source queue, the source.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgerun_streams::{Output, SinkDef};
use serde::{Deserialize, Serialize};

/// Results buffered before a sink writes them out without waiting for the checkpoint.
pub const FLUSH_AT: usize = 2_000;
/// How long a flush may take before the runner gives up on the sink (and restarts).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `redis` sink's duplicate marker lives.
const MARKER_TTL_SECS: u64 = 7 * 86_400;

/// Where a sink resumes (part of the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkPos {
    #[default]
    None,
    /// The file's length at the checkpoint.
    File { len: u64 },
}

/// One result as JSON text, with its id inside.
pub fn render(o: &Output) -> String {
    let mut v = o.value.clone();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert(
            "result_id".into(),
            serde_json::Value::String(o.result_id.clone()),
        );
    }
    v.to_string()
}

pub enum Sink {
    Results(Vec<(String, String)>),
    Redis(RedisSink),
    Mqtt(MqttSink),
    Http(HttpSink),
    File(FileSink),
}

pub struct RedisSink {
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
    stream: String,
    pending: Vec<(String, String)>,
    script: redis::Script,
}

pub struct MqttSink {
    client: rumqttc::AsyncClient,
    topic: String,
    published: u64,
    acked: Arc<AtomicU64>,
    problem: tokio::sync::watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

pub struct HttpSink {
    url: String,
    pending: Vec<String>,
    allow: std::sync::Arc<Vec<edgerun_config::allow::Allowed>>,
}

/// The `host:port` part of an http(s) URL.
fn netloc(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let default = if scheme == "https" { 443 } else { 80 };
    match auth.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if let Ok(port) = p.parse::<u16>() {
                return Some((
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                ));
            }
            Some((auth.to_string(), default))
        }
        _ => Some((
            auth.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            default,
        )),
    }
}

/// `host:port`'s addresses that `streams.http_sink_allow` allows
/// ([`edgerun_config::allow::resolve`]).
fn allowed_addrs(
    allow: &[edgerun_config::allow::Allowed],
    netloc: &str,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    edgerun_config::allow::resolve(allow, netloc, "streams.http_sink_allow")
}

pub struct FileSink {
    file: std::io::BufWriter<std::fs::File>,
    len: u64,
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Open the sink, back at `pos` (a file is truncated to the checkpoint's length).
    pub async fn open(
        def: &SinkDef,
        pos: &SinkPos,
        job: edgerun_model::StreamId,
        files_dir: &std::path::Path,
        allow: &std::sync::Arc<Vec<edgerun_config::allow::Allowed>>,
    ) -> Result<Sink, String> {
        Ok(match def {
            SinkDef::Results => Sink::Results(Vec::new()),
            SinkDef::Redis { url, stream } => Sink::Redis(RedisSink {
                client: redis::Client::open(url.as_str()).map_err(|e| format!("sink.url: {e}"))?,
                conn: None,
                stream: stream.clone(),
                pending: Vec::new(),
                // The marker and the entry together: a result made again after a restart
                // finds its marker and is not added twice.
                script: redis::Script::new(
                    "if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then \
                       return redis.call('XADD', KEYS[1], '*', 'result_id', ARGV[1], 'json', ARGV[2]) \
                     end \
                     return false",
                ),
            }),
            SinkDef::Mqtt { host, port, topic } => {
                let mut opts =
                    rumqttc::MqttOptions::new(format!("edgerun-sink-{job}"), host.clone(), *port);
                opts.set_keep_alive(Duration::from_secs(10));
                opts.set_inflight(1000);
                let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1024);
                let acked = Arc::new(AtomicU64::new(0));
                let (ptx, problem) = tokio::sync::watch::channel(None);
                let a = acked.clone();
                let task = tokio::spawn(async move {
                    use rumqttc::{Event, Packet};
                    let mut failures = 0u32;
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                a.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                failures = 0;
                                ptx.send_replace(None);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                ptx.send_replace(Some(format!("mqtt sink: {e}; retrying")));
                                tokio::time::sleep(Duration::from_millis(
                                    (200u64 << failures.min(6)).min(10_000),
                                ))
                                .await;
                                failures += 1;
                            }
                        }
                    }
                });
                Sink::Mqtt(MqttSink {
                    client,
                    topic: topic.clone(),
                    published: 0,
                    acked,
                    problem,
                    task,
                })
            }
            SinkDef::Http { url } => {
                let (host, port) = netloc(url).ok_or(format!("sink.url {url:?}: no host"))?;
                let (a, loc) = (allow.clone(), format!("{host}:{port}"));
                tokio::task::spawn_blocking(move || allowed_addrs(&a, &loc))
                    .await
                    .map_err(|e| format!("http sink: {e}"))?
                    .map_err(|e| format!("http sink: {e}"))?;
                Sink::Http(HttpSink {
                    url: url.clone(),
                    pending: Vec::new(),
                    allow: allow.clone(),
                })
            }
            SinkDef::File { path } => {
                let path: PathBuf = files_dir.join(path);
                let keep = match pos {
                    SinkPos::File { len } => *len,
                    SinkPos::None => 0,
                };
                let file = tokio::task::spawn_blocking(move || open_file(&path, keep))
                    .await
                    .map_err(|e| format!("sink file: {e}"))??;
                let len = keep;
                Sink::File(FileSink {
                    file: std::io::BufWriter::with_capacity(256 * 1024, file),
                    len,
                })
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Results(_) => "results",
            Sink::Redis(_) => "redis",
            Sink::Mqtt(_) => "mqtt",
            Sink::Http(_) => "http",
            Sink::File(_) => "file",
        }
    }

    /// A problem the sink reports while it retries.
    pub fn problem(&self) -> Option<String> {
        match self {
            Sink::Mqtt(m) => m.problem.borrow().clone(),
            _ => None,
        }
    }

    /// Take results; flushes by itself when many are buffered (see the module doc).
    pub async fn write(&mut self, outs: &[Output]) -> Result<(), String> {
        if outs.is_empty() {
            return Ok(());
        }
        let buffered = match self {
            Sink::Results(v) => {
                v.extend(outs.iter().map(|o| (o.result_id.clone(), render(o))));
                // Kept for the checkpoint's entry, however many (the runner checkpoints
                // early when they pile up).
                0
            }
            Sink::Redis(r) => {
                r.pending
                    .extend(outs.iter().map(|o| (o.result_id.clone(), render(o))));
                r.pending.len()
            }
            Sink::Mqtt(m) => {
                for o in outs {
                    let body = render(o);
                    m.client
                        .publish(m.topic.clone(), rumqttc::QoS::AtLeastOnce, false, body)
                        .await
                        .map_err(|e| format!("mqtt sink publish: {e}"))?;
                    m.published += 1;
                }
                0
            }
            Sink::Http(h) => {
                h.pending.extend(outs.iter().map(render));
                h.pending.len()
            }
            Sink::File(f) => {
                for o in outs {
                    let mut line = render(o);
                    line.push('\n');
                    f.file
                        .write_all(line.as_bytes())
                        .map_err(|e| format!("sink file: {e}"))?;
                    f.len += line.len() as u64;
                }
                0
            }
        };
        if buffered >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// How many results a `results` sink holds for the next checkpoint.
    pub fn held(&self) -> usize {
        match self {
            Sink::Results(v) => v.len(),
            _ => 0,
        }
    }

    /// A `results` sink's results for the checkpoint entry.
    pub fn take_results(&mut self) -> Vec<(String, String)> {
        match self {
            Sink::Results(v) => std::mem::take(v),
            _ => Vec::new(),
        }
    }

    /// Put results back after a checkpoint that did not commit.
    pub fn untake_results(&mut self, mut r: Vec<(String, String)>) {
        if let Sink::Results(v) = self {
            r.append(v);
            *v = r;
        }
    }

    pub fn position(&self) -> SinkPos {
        match self {
            Sink::File(f) => SinkPos::File { len: f.len },
            _ => SinkPos::None,
        }
    }

    /// Make everything written so far durable at the sink.
    pub async fn flush(&mut self) -> Result<(), String> {
        match tokio::time::timeout(FLUSH_TIMEOUT, self.flush_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the {} sink did not take the results within {} s",
                self.kind(),
                FLUSH_TIMEOUT.as_secs()
            )),
        }
    }

    async fn flush_inner(&mut self) -> Result<(), String> {
        match self {
            Sink::Results(_) => Ok(()),
            Sink::Redis(r) => r.flush().await,
            Sink::Mqtt(m) => {
                // Every publish acknowledged by the broker.
                let mut wait = Duration::from_millis(1);
                while m.acked.load(Ordering::SeqCst) < m.published {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(50));
                }
                Ok(())
            }
            Sink::Http(h) => h.flush().await,
            Sink::File(f) => {
                f.file.flush().map_err(|e| format!("sink file: {e}"))?;
                f.file
                    .get_ref()
                    .sync_data()
                    .map_err(|e| format!("sink file: {e}"))
            }
        }
    }
}

fn open_file(path: &std::path::Path, keep: u64) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("sink file {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("sink file {}: {e}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < keep {
        return Err(format!(
            "sink file {} is {len} bytes, shorter than its checkpoint's {keep}: it was changed outside the job",
            path.display()
        ));
    }
    // Results written after the checkpoint are made again: cut them off.
    file.set_len(keep)
        .map_err(|e| format!("sink file {}: {e}", path.display()))?;
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(keep))
        .map_err(|e| format!("sink file {}: {e}", path.display()))?;
    Ok(file)
}

impl RedisSink {
    async fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.conn.is_none() {
            self.conn = Some(
                self.client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis sink: {e}"))?,
            );
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("redis sink: no connection".into());
        };
        // EVALSHA in the pipeline needs the script on the server (after a Redis restart too).
        let loaded: redis::RedisResult<String> =
            self.script.prepare_invoke().load_async(conn).await;
        if let Err(e) = loaded {
            self.conn = None;
            return Err(format!("redis sink SCRIPT LOAD: {e}"));
        }
        for chunk in self.pending.chunks(500) {
            let mut pipe = redis::pipe();
            for (rid, json) in chunk {
                let marker = format!("edgerun:sink:{}:{rid}", self.stream);
                pipe.invoke_script(
                    self.script
                        .key(self.stream.as_str())
                        .key(marker)
                        .arg(rid.as_str())
                        .arg(json.as_str())
                        .arg(MARKER_TTL_SECS),
                );
            }
            let r: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(conn).await;
            if let Err(e) = r {
                self.conn = None;
                return Err(format!("redis sink XADD: {e}"));
            }
        }
        self.pending.clear();
        Ok(())
    }
}

impl HttpSink {
    async fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches: Vec<String> = self
            .pending
            .chunks(500)
            .map(|c| format!("[{}]", c.join(",")))
            .collect();
        let url = self.url.clone();
        let allow = self.allow.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .redirects(0)
                .resolver(move |netloc: &str| allowed_addrs(&allow, netloc))
                .build();
            for body in batches {
                let mut attempt = 0u32;
                loop {
                    let r = agent
                        .post(&url)
                        .set("content-type", "application/json")
                        .send_string(&body);
                    match r {
                        Ok(_) => break,
                        Err(ureq::Error::Status(code, _)) if code < 500 && code != 429 => {
                            return Err(format!("http sink {url}: answered {code}"));
                        }
                        Err(e) if e.to_string().contains("streams.http_sink_allow") => {
                            return Err(format!("http sink: {e}"));
                        }
                        Err(e) => {
                            attempt += 1;
                            if started.elapsed() > FLUSH_TIMEOUT / 2 {
                                return Err(format!(
                                    "http sink {url}: {e} (after {attempt} attempts)"
                                ));
                            }
                            std::thread::sleep(Duration::from_millis(
                                (100u64 << attempt.min(6)).min(5_000),
                            ));
                        }
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("http sink: {e}"))??;
        self.pending.clear();
        Ok(())
    }
}
