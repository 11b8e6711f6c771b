//! Stream jobs on real nodes, a real MQTT broker (mosquitto) and a real Redis: results equal
//! a reference computed here, across a kill -9 of the node that runs the job.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{redis_cli, wait_until, Cluster, Mosquitto, Node, RedisServer, FAST_FAILOVER};
use serde_json::{json, Value};

/// Event times start here (2023-11-14): far in the past, so an idle source lets the watermark
/// run to the clock and every window closes.
const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Default, Clone, PartialEq)]
struct Window {
    n: u64,
    sum: f64,
    hi: f64,
}

/// The windows a list of (sensor, ts, temp) fall in, by (sensor, window start).
fn reference(records: &[(String, i64, f64)], size: i64) -> BTreeMap<(String, i64), Window> {
    let mut out: BTreeMap<(String, i64), Window> = BTreeMap::new();
    for (s, ts, temp) in records {
        let start = ts.div_euclid(size) * size;
        let w = out.entry((s.clone(), start)).or_insert(Window {
            n: 0,
            sum: 0.0,
            hi: f64::MIN,
        });
        w.n += 1;
        w.sum += temp;
        w.hi = w.hi.max(*temp);
    }
    out
}

fn record(sensor: &str, ts: i64, temp: f64) -> String {
    json!({ "sensor": sensor, "ts": ts, "temp": temp }).to_string()
}

fn temp_of(sensor: usize, i: i64) -> f64 {
    // Distinct, exactly representable values.
    (sensor as f64) * 10.0 + ((i * 7) % 13) as f64 * 0.25
}

fn stream(node: &Node, id: u64) -> Value {
    let a = node.must_get(&format!("/v1/streams/{id}"));
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn wait_running(node: &Node, id: u64) -> Value {
    wait_until(
        &format!("stream job {id} to run"),
        Duration::from_secs(30),
        || {
            let s = node
                .try_get(&format!("/v1/streams/{id}"))
                .map_err(|e| e.to_string())?;
            if s.body["status"] == "running" {
                Ok(s.body)
            } else {
                Err(s.body.to_string())
            }
        },
    )
}

/// The reference window `r` is (by its key and start), checked against it; panics on a
/// result the reference has no window for.
fn matches_reference(r: &Value, want: &BTreeMap<(String, i64), Window>) -> (i64, Window) {
    let key = r["key"].as_str().unwrap_or("").to_string();
    let start = r["window_start"].as_i64().unwrap_or(0);
    let w = want
        .get(&(key.clone(), start))
        .unwrap_or_else(|| panic!("unexpected result {r}"));
    check_window(&key, start, r, w);
    (start, w.clone())
}

/// Wait until the job's `results` sink holds at least `n` results; all of them.
fn wait_results(node: &Node, id: u64, n: usize, what: &str) -> Vec<Value> {
    wait_until(what, Duration::from_secs(60), || {
        let a = node
            .try_get(&format!("/v1/streams/{id}/results?limit=1000"))
            .map_err(|e| e.to_string())?;
        let r = a.body["results"].as_array().cloned().unwrap_or_default();
        if r.len() >= n {
            Ok(r)
        } else {
            Err(format!("{} of {n}; job {}", r.len(), stream(node, id)))
        }
    })
}

fn check_window(key: &str, start: i64, got: &Value, want: &Window) {
    assert_eq!(got["n"].as_u64(), Some(want.n), "{key}@{start}: {got}");
    let mean = got["mean"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (mean - want.sum / want.n as f64).abs() < 1e-9,
        "{key}@{start}: mean {mean} vs {}",
        want.sum / want.n as f64
    );
    assert_eq!(got["hi"].as_f64(), Some(want.hi), "{key}@{start}: {got}");
}

#[test]
fn mqtt_sensors_into_tumbling_windows_equal_a_reference_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Mosquitto::must_start(&dir.path().join("mqtt"));
    let node = Node::must_start(&dir.path().join("n1"), &[]);

    // Bad definitions: 400, naming the field.
    let good_source = json!({"type": "mqtt", "url": broker.url(), "topic": "sensors/+/temp"});
    for (body, field) in [
        (
            json!({"source": {"type": "http"}, "sink": {"type": "results"}}),
            "name",
        ),
        (
            json!({"name": "x", "source": {"type": "kafka"}, "sink": {"type": "results"}}),
            "source.type",
        ),
        (
            json!({"name": "x", "source": good_source, "sink": {"type": "results"},
                   "pipeline": [{"filter": "temp >"}]}),
            "pipeline[0].filter",
        ),
        (
            json!({"name": "x", "source": good_source, "sink": {"type": "results"},
                   "pipeline": [{"window": {"type": "tumbling", "size_ms": 1000},
                                 "aggregate": {"m": {"median": "temp"}}}]}),
            "pipeline[0].aggregate.m",
        ),
        (
            json!({"name": "x", "source": {"type": "file", "path": "/etc/passwd"},
                   "sink": {"type": "results"}}),
            "source.path",
        ),
        (
            json!({"name": "x", "source": good_source, "sink": {"type": "results"},
                   "max_results": 0}),
            "max_results",
        ),
    ] {
        let a = node.must_post("/v1/streams", &body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "invalid_stream", "{}", a.body);
        let f = a.body["error"]["details"]["field"].as_str().unwrap_or("");
        assert!(
            f.starts_with(field),
            "{body}: field {f:?}, wanted {field:?}"
        );
    }
    assert_eq!(node.must_get("/v1/streams/77").status, 404);
    assert_eq!(node.must_get("/v1/streams/0").status, 400);

    let job = json!({
        "name": "temps",
        "source": good_source,
        "time": { "field": "ts", "max_delay_ms": 2000 },
        "pipeline": [
            { "filter": "temp > -50.0" },
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 10000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } },
              "kernel": { "name": "stats", "field": "temp" } }
        ],
        "sink": { "type": "results" },
        "checkpoint_ms": 200
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    assert_eq!(a.body["status"], "starting", "{}", a.body);
    wait_running(&node, id);
    // Records go to an http source only.
    let a = node.must_post(&format!("/v1/streams/{id}/records"), &json!([{"a": 1}]));
    assert_eq!(a.status, 409, "{}", a.body);

    // 3 sensors, one reading a second for 35 s; each pair of seconds sent in reverse order
    // (out of order by 1 s, within max_delay_ms); one filtered, one malformed, and one late.
    let sensors = ["s1", "s2", "s3"];
    let mut kept = Vec::new();
    let mut lines = Vec::new();
    for pair in (0..35).step_by(2) {
        for i in [pair + 1, pair] {
            if i >= 35 {
                continue;
            }
            for (k, s) in sensors.iter().enumerate() {
                let ts = T0 + i * 1000 + k as i64;
                let t = temp_of(k, i);
                kept.push((s.to_string(), ts, t));
                lines.push(record(s, ts, t));
            }
        }
    }
    lines.push(record("s1", T0 + 20_500, -99.0)); // filtered
    lines.push("not json".to_string()); // malformed
    lines.push(record("s2", T0 + 500, 1000.0)); // late: its window closed long ago
    broker.must_publish("sensors/mix/temp", &lines);

    let want = reference(&kept, 10_000);
    assert_eq!(want.len(), 12);
    let results = wait_results(&node, id, want.len(), "every window's result");
    assert_eq!(results.len(), want.len(), "{results:?}");
    for r in &results {
        let (start, w) = matches_reference(r, &want);
        // The C++ stats kernel over the window's values agrees with the incremental ones.
        assert_eq!(r["stats"]["count"].as_u64(), Some(w.n), "{r}");
        assert_eq!(r["stats"]["max"].as_f64(), Some(w.hi), "{r}");
        assert!(
            (r["stats"]["mean"].as_f64().unwrap_or(f64::NAN) - w.sum / w.n as f64).abs() < 1e-9,
            "{r}"
        );
        assert_eq!(r["window_end"].as_i64(), Some(start + 10_000));
        assert_eq!(r["result_id"].as_str().map(str::len), Some(32), "{r}");
    }
    let s = wait_until("the counters", Duration::from_secs(30), || {
        let s = stream(&node, id);
        if s["metrics"]["late"] == 1 && s["checkpoint"]["seq"].as_u64() >= Some(1) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(s["metrics"]["malformed"], 1, "{s}");
    assert_eq!(s["metrics"]["filtered"], 1, "{s}");
    assert_eq!(s["node"], 1, "{s}");
    // Paging: after the 5th, the rest.
    let a = node.must_get(&format!("/v1/streams/{id}/results?after=5&limit=100"));
    assert_eq!(
        a.body["results"].as_array().map(Vec::len),
        Some(want.len() - 5),
        "{}",
        a.body
    );

    // Pause, resume, delete.
    let a = node.must_post(&format!("/v1/streams/{id}/pause"), &json!({}));
    assert_eq!(a.body["status"], "paused", "{}", a.body);
    let a = node.must_post(&format!("/v1/streams/{id}/resume"), &json!({}));
    assert_eq!(a.body["status"], "starting", "{}", a.body);
    wait_running(&node, id);
    let a = node.must_call("DELETE", &format!("/v1/streams/{id}"), None, None);
    assert_eq!(a.body["status"], "stopped", "{}", a.body);
    assert_eq!(node.must_get(&format!("/v1/streams/{id}")).status, 404);
}

/// The windows a Redis stream holds: result_id → the result.
fn redis_results(port: u16, stream: &str) -> Vec<Value> {
    let lines = redis_cli(port, &["XRANGE", stream, "-", "+"]);
    let mut out = Vec::new();
    let mut it = lines.iter();
    while let Some(l) = it.next() {
        if l == "json" {
            if let Some(j) = it.next() {
                out.push(serde_json::from_str(j).unwrap_or(Value::Null));
            }
        }
    }
    out
}

/// 40 seconds of event time from 3 sensors (5 readings each per second) published to
/// `plant/line1`, one second of readings at a time by a paced publisher thread; every
/// (sensor, ts, temp) published.
fn paced_sensors(port: u16) -> (Vec<(String, i64, f64)>, std::thread::JoinHandle<()>) {
    let mut all = Vec::new();
    let mut seconds = Vec::new();
    for sec in 0..40i64 {
        let mut lines = Vec::new();
        for j in 0..5 {
            for (k, s) in ["a", "b", "c"].iter().enumerate() {
                let ts = T0 + sec * 1000 + j * 200 + k as i64;
                let t = temp_of(k, sec * 5 + j);
                all.push((s.to_string(), ts, t));
                lines.push(record(s, ts, t));
            }
        }
        seconds.push(lines);
    }
    let publisher = std::thread::spawn(move || {
        let b = Mosquitto::at(port);
        for lines in seconds {
            b.must_publish("plant/line1", &lines);
            // Pacing the producer (a sensor's rate), not waiting for anything.
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (all, publisher)
}

#[test]
fn a_stream_job_moves_off_a_killed_node_and_redis_holds_each_window_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Mosquitto::must_start(&dir.path().join("mqtt"));
    let redis = RedisServer::must_start(&dir.path().join("redis"));
    let mut cluster = Cluster::must_start(dir.path(), 3, FAST_FAILOVER);
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let job = json!({
        "name": "failover",
        "source": { "type": "mqtt", "url": broker.url(), "topic": "plant/#", "qos": 1 },
        "time": { "field": "ts", "max_delay_ms": 500, "idle_ms": 2000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "redis", "url": redis.url(), "stream": "windows" },
        "checkpoint_ms": 200
    });
    let a = cluster.node(leader).must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    let s = wait_running(cluster.node(leader), id);
    let runner = s["node"].as_u64().unwrap_or(0);

    // 40 seconds of event time, 3 sensors, 5 readings each per second, published one second
    // at a time by a paced publisher while the runner's node is killed: the records the dead
    // runner took after its last checkpoint come back from the broker (unacknowledged QoS 1)
    // to the job's next runner, and the rest wait in the broker for the job's session.
    let (all, publisher) = paced_sensors(broker.port);
    let other = [1, 2, 3].into_iter().find(|n| *n != runner).unwrap_or(1);
    wait_until(
        "windows in Redis and a checkpoint",
        Duration::from_secs(30),
        || {
            let n = redis_results(redis.port, "windows").len();
            let s = stream(cluster.node(other), id);
            if n >= 15 && s["checkpoint"]["seq"].as_u64() >= Some(1) {
                Ok(())
            } else {
                Err(format!("{n} in redis; job {s}"))
            }
        },
    );
    cluster.node_mut(runner).kill9();
    let in_redis_at_kill = redis_results(redis.port, "windows").len();
    let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != runner).collect();
    let leader = cluster.wait_for_leader(&alive, Duration::from_secs(30));
    let moved = wait_until("the job on another node", Duration::from_secs(60), || {
        let s = stream(cluster.node(leader), id);
        match s["node"].as_u64() {
            Some(n) if n != runner && s["status"] == "running" => Ok(s),
            _ => Err(s.to_string()),
        }
    });
    assert!(moved["moves"].as_u64() >= Some(1), "{moved}");
    if publisher.join().is_err() {
        panic!("the publisher failed");
    }
    assert!(
        in_redis_at_kill < 120,
        "the kill came after the last window ({in_redis_at_kill}): not mid-stream"
    );

    let want = reference(&all, 1000);
    assert_eq!(want.len(), 120);
    let got = wait_until("every window in Redis", Duration::from_secs(90), || {
        let r = redis_results(redis.port, "windows");
        if r.len() >= want.len() {
            Ok(r)
        } else {
            Err(format!(
                "{} of {} windows; job {}",
                r.len(),
                want.len(),
                stream(cluster.node(leader), id)
            ))
        }
    });
    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in &got {
        *seen
            .entry(r["result_id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        matches_reference(r, &want);
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "windows written twice: {repeated:?}");
    assert_eq!(got.len(), want.len());
}

#[test]
fn http_batches_are_taken_once_per_batch_id_into_a_file_sink_and_bad_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(
        &dir.path().join("n1"),
        &[
            "streams.max_body_bytes=65536",
            "streams.max_record_bytes=4096",
        ],
    );
    let job = json!({
        "name": "to-file",
        "source": { "type": "http" },
        "time": { "field": "ts", "max_delay_ms": 0, "idle_ms": 1000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "file", "path": "out/windows.jsonl" },
        "checkpoint_ms": 1000
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    wait_running(&node, id);
    let path = format!("/v1/streams/{id}/records");

    let mut all = Vec::new();
    for b in 0..10i64 {
        let mut lines = String::new();
        for j in 0..20i64 {
            let (s, ts, t) = (
                format!("s{}", j % 2),
                T0 + b * 500 + j * 20,
                (b * 20 + j) as f64,
            );
            all.push((s.clone(), ts, t));
            lines.push_str(&record(&s, ts, t));
            lines.push('\n');
        }
        // JSON lines; each batch sent twice under its id (a retry after a lost answer).
        for _ in 0..2 {
            let a = node
                .try_post_raw(&format!("{path}?batch_id=b{b}"), lines.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            // Answered once checkpointed.
            assert_eq!(a.status, 202, "{}", a.body);
            assert_eq!(a.body["accepted"], 20, "{}", a.body);
        }
    }
    let s = stream(&node, id);
    assert_eq!(s["metrics"]["records_in"], 200, "each batch once: {s}");
    // Bad bodies: too large, empty, a bad batch id; nothing taken.
    let big = vec![b' '; 70_000];
    assert_eq!(node.try_post_raw(&path, &big).map(|a| a.status), Ok(413));
    assert_eq!(node.try_post_raw(&path, b"  ").map(|a| a.status), Ok(400));
    let long = "x".repeat(200);
    assert_eq!(
        node.try_post_raw(&format!("{path}?batch_id={long}"), b"{}")
            .map(|a| a.status),
        Ok(400)
    );
    assert_eq!(
        node.try_post_raw("/v1/streams/999/records", b"{}")
            .map(|a| a.status),
        Ok(404)
    );

    // Every window in the file once (the idle source closes the last ones), as the reference.
    let want = reference(&all, 1000);
    let file = dir.path().join("n1/data/stream-files/out/windows.jsonl");
    let got = wait_until("every window in the file", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        if lines.len() >= want.len() {
            Ok(lines)
        } else {
            Err(format!("{} of {} lines", lines.len(), want.len()))
        }
    });
    assert_eq!(got.len(), want.len(), "{got:?}");
    for r in &got {
        let key = r["key"].as_str().unwrap_or("").to_string();
        let start = r["window_start"].as_i64().unwrap_or(0);
        let w = want
            .get(&(key.clone(), start))
            .unwrap_or_else(|| panic!("unexpected line {r}"));
        check_window(&key, start, r, w);
    }
}

/// A slow HTTP endpoint: answers each POST after `delay`, keeping the JSON arrays it got.
struct SlowSink {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl SlowSink {
    fn start(delay: Duration) -> SlowSink {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(match conn.try_clone() {
                        Ok(c) => c,
                        Err(_) => return,
                    });
                    let mut w = conn;
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        // Request line and headers.
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        // The sink's pace: the point of the test.
                        std::thread::sleep(delay);
                        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) {
                            if let Ok(mut g) = g.lock() {
                                g.extend(items);
                            }
                        }
                        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        SlowSink { port, got }
    }
}

#[test]
fn a_slow_http_sink_slows_the_source_with_memory_bounded_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sink = SlowSink::start(Duration::from_millis(50));
    let node = Node::must_start(
        &dir.path().join("n1"),
        &[
            "streams.http_sink_allow=[\"127.0.0.1/32\"]",
            "streams.queue_batches=4",
        ],
    );
    // Not allowed: refused before anything is sent; the job fails with the reason.
    let denied = node.must_post(
        "/v1/streams",
        &json!({"name": "denied", "source": {"type": "http"},
                "sink": {"type": "http", "url": "http://192.0.2.1:9/x"}}),
    );
    assert_eq!(denied.status, 201, "{}", denied.body);
    let denied_id = denied.body["id"].as_u64().unwrap_or(0);

    let job = json!({
        "name": "slow",
        "source": { "type": "http" },
        "pipeline": [ { "map": { "j": "i * 2.0" } } ],
        "sink": { "type": "http", "url": format!("http://127.0.0.1:{}/in", sink.port) },
        "checkpoint_ms": 500
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    wait_running(&node, id);

    // The source: as fast as the job answers, 2,000 records a call, for 20 s (the 60 s:
    // T16_SLOW_SINK_SECS=60; CI keeps 20 for its time budget); the sink takes 500 results
    // per 50 ms (at most 10,000/s; the http source alone takes over 100,000/s).
    let secs = std::env::var("T16_SLOW_SINK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    let started = std::time::Instant::now();
    let stop = started + Duration::from_secs(secs);
    let mut acked = Vec::new();
    let mut rss = Vec::new();
    let mut next = 0u64;
    let mut busy = 0;
    while std::time::Instant::now() < stop {
        let body: Vec<Value> = (next..next + 2000).map(|i| json!({ "i": i })).collect();
        let a = node
            .try_post_raw(
                &format!("/v1/streams/{id}/records?batch_id=s{next}"),
                &serde_json::to_vec(&body).unwrap_or_default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        match a.status {
            202 => {
                acked.push(next);
                next += 2000;
            }
            429 | 503 => busy += 1,
            s => panic!("POST answered {s}: {}", a.body),
        }
        if let Some(k) = node.rss_kib() {
            rss.push(k);
        }
    }
    assert!(
        acked.len() > 5,
        "the job took almost nothing: {} batches",
        acked.len()
    );
    // Memory: what the node holds at the end is what it held a quarter of the way in, give or
    // take the allocator (a source that outran its sink would grow without end).
    let quarter = rss[rss.len() / 4];
    let last = *rss.last().unwrap_or(&0);
    let peak = rss.iter().copied().max().unwrap_or(0);
    assert!(
        last < quarter + 48 * 1024 && peak < quarter + 64 * 1024,
        "RSS grew: {quarter} KiB at a quarter, {last} KiB at the end, {peak} KiB at most"
    );
    // Nothing lost: every acknowledged record reaches the sink (at least once).
    let want: u64 = acked.len() as u64 * 2000;
    let seen = wait_until(
        "every acknowledged record at the sink",
        Duration::from_secs(60),
        || {
            let got = sink.got.lock().map(|g| g.clone()).unwrap_or_default();
            let ids: std::collections::BTreeSet<u64> =
                got.iter().filter_map(|r| r["i"].as_u64()).collect();
            let missing = acked
                .iter()
                .flat_map(|b| *b..*b + 2000)
                .filter(|i| !ids.contains(i))
                .count();
            if missing == 0 {
                Ok(ids.len())
            } else {
                Err(format!("{missing} of {want} missing"))
            }
        },
    );
    eprintln!(
        "slow sink, {secs} s: {want} records acknowledged ({:.0}/s; {busy} calls answered 429/503), {seen} at the sink; RSS {quarter} -> {last} KiB (peak {peak})",
        want as f64 / started.elapsed().as_secs_f64()
    );
    let d = wait_until("the denied job to fail", Duration::from_secs(60), || {
        let s = stream(&node, denied_id);
        if s["status"] == "failed" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert!(
        d["error"]
            .as_str()
            .unwrap_or("")
            .contains("streams.http_sink_allow"),
        "{d}"
    );
}

#[test]
fn a_redis_stream_source_through_a_consumer_group_into_windows_equal_a_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let redis = RedisServer::must_start(&dir.path().join("redis"));
    let node = Node::must_start(&dir.path().join("n1"), &[]);
    // Entries first, the job after: the group it makes starts at the stream's beginning.
    let mut all = Vec::new();
    for i in 0..60i64 {
        let (s, ts, t) = (format!("s{}", i % 3), T0 + i * 100, (i % 11) as f64);
        all.push((s.clone(), ts, t));
        let (ts_s, t_s) = (ts.to_string(), t.to_string());
        let out = redis_cli(
            redis.port,
            &[
                "XADD", "readings", "*", "sensor", &s, "ts", &ts_s, "temp", &t_s,
            ],
        );
        assert_eq!(out.len(), 1, "XADD: {out:?}");
    }
    let job = json!({
        "name": "from-redis",
        "source": { "type": "redis", "url": redis.url(), "stream": "readings", "group": "edgerun" },
        "time": { "field": "ts", "max_delay_ms": 0, "idle_ms": 1000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "results" },
        "checkpoint_ms": 200
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    let want = reference(&all, 1000);
    let got = wait_results(&node, id, want.len(), "every window from Redis");
    assert_eq!(got.len(), want.len());
    for r in &got {
        matches_reference(r, &want);
    }
    // Everything taken was acknowledged after its checkpoint: nothing pending in the group.
    let pending = wait_until(
        "the group's pending list to empty",
        Duration::from_secs(30),
        || {
            let p = redis_cli(redis.port, &["XPENDING", "readings", "edgerun"]);
            match p.first().map(String::as_str) {
                Some("0") => Ok(p),
                _ => Err(format!("{p:?}")),
            }
        },
    );
    assert_eq!(pending.first().map(String::as_str), Some("0"));
}

#[test]
fn a_file_source_is_tailed_into_windows_equal_a_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = Node::must_start(&dir.path().join("n1"), &[]);
    let files = dir.path().join("n1/data/stream-files");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&files)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o700,
        "the node's stream directory is private"
    );
    std::fs::create_dir_all(files.join("in")).unwrap_or_else(|e| panic!("{e}"));
    let path = files.join("in/readings.jsonl");
    let mut all = Vec::new();
    let lines = |from: i64, to: i64, all: &mut Vec<(String, i64, f64)>| -> String {
        let mut text = String::new();
        for i in from..to {
            let (s, ts, t) = (format!("s{}", i % 2), T0 + i * 100, (i % 7) as f64);
            all.push((s.clone(), ts, t));
            text.push_str(&record(&s, ts, t));
            text.push('\n');
        }
        text
    };
    std::fs::write(&path, lines(0, 30, &mut all)).unwrap_or_else(|e| panic!("{e}"));
    let job = json!({
        "name": "from-file",
        "source": { "type": "file", "path": "in/readings.jsonl" },
        "time": { "field": "ts", "max_delay_ms": 0, "idle_ms": 1000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "results" },
        "checkpoint_ms": 200
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    wait_until("the first lines taken", Duration::from_secs(30), || {
        let s = stream(&node, id);
        if s["metrics"]["records_in"].as_u64() >= Some(30) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    // Lines appended later are read too (tailed).
    let more = lines(30, 60, &mut all);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, more.as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"));
    let want = reference(&all, 1000);
    let got = wait_results(&node, id, want.len(), "every window from the file");
    assert_eq!(got.len(), want.len());
    for r in &got {
        matches_reference(r, &want);
    }
}

/// A subscriber writing `topic`'s messages to `out`, once it is subscribed: MQTT drops what
/// is published before a subscription exists, so it is probed until a probe arrives.
fn subscribed_to(broker: &Mosquitto, topic: &str, out: &std::path::Path) -> common::ChildGuard {
    let sub = broker.subscribe_to_file(topic, out);
    wait_until(
        "the subscriber to be subscribed",
        Duration::from_secs(30),
        || {
            broker.must_publish(topic, &["{\"probe\":true}".to_string()]);
            let text = std::fs::read_to_string(out).map_err(|e| e.to_string())?;
            if text.contains("probe") {
                Ok(())
            } else {
                Err("no probe yet".into())
            }
        },
    );
    sub
}

#[test]
fn an_mqtt_sink_publishes_each_window_at_least_once_with_its_result_id() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Mosquitto::must_start(&dir.path().join("mqtt"));
    let node = Node::must_start(&dir.path().join("n1"), &[]);
    let out = dir.path().join("sub.jsonl");
    let _sub = subscribed_to(&broker, "windows/out", &out);
    let job = json!({
        "name": "to-mqtt",
        "source": { "type": "http" },
        "time": { "field": "ts", "max_delay_ms": 0, "idle_ms": 1000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "mqtt", "url": broker.url(), "topic": "windows/out" },
        "checkpoint_ms": 200
    });
    let a = node.must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    wait_running(&node, id);
    let mut all = Vec::new();
    let mut body = Vec::new();
    for i in 0..40i64 {
        let (s, ts, t) = (format!("s{}", i % 2), T0 + i * 100, (i % 5) as f64);
        all.push((s.clone(), ts, t));
        body.push(json!({"sensor": s, "ts": ts, "temp": t}));
    }
    let a = node.must_post(&format!("/v1/streams/{id}/records"), &Value::from(body));
    assert_eq!(a.status, 202, "{}", a.body);
    let want = reference(&all, 1000);
    let got = wait_until(
        "every window on the MQTT topic",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
            let r: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v.get("result_id").is_some())
                .collect();
            let ids: std::collections::BTreeSet<&str> =
                r.iter().filter_map(|x| x["result_id"].as_str()).collect();
            if ids.len() >= want.len() {
                Ok(r)
            } else {
                Err(format!("{} of {} windows", ids.len(), want.len()))
            }
        },
    );
    // At least once: a repeat carries the same result_id and the same values.
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for r in &got {
        let rid = r["result_id"].as_str().unwrap_or("").to_string();
        if let Some(first) = by_id.get(&rid) {
            assert_eq!(first, r, "a repeat differs");
        }
        by_id.insert(rid, r.clone());
    }
    for r in by_id.values() {
        matches_reference(r, &want);
    }
    assert_eq!(by_id.len(), want.len());
}

/// The windows a subscriber wrote to `out` (one JSON object per line), probes left out.
fn subscribed(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("result_id").is_some())
        .collect()
}

#[test]
fn a_checkpoint_kept_by_hash_survives_a_kill_and_the_mqtt_sink_repeats_with_the_same_result_id() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Mosquitto::must_start(&dir.path().join("mqtt"));
    // Every checkpoint off the log: kept by hash on the runner's node and two others.
    let mut sets = FAST_FAILOVER.to_vec();
    sets.push("streams.inline_checkpoint_bytes=0");
    let mut cluster = Cluster::must_start(dir.path(), 3, &sets);
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(30));
    let out = dir.path().join("sub.jsonl");
    let _sub = subscribed_to(&broker, "windows/out", &out);
    let job = json!({
        "name": "by-hash",
        "source": { "type": "mqtt", "url": broker.url(), "topic": "plant/#", "qos": 1 },
        "time": { "field": "ts", "max_delay_ms": 500, "idle_ms": 2000 },
        "pipeline": [
            { "key_by": "sensor" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "temp" }, "hi": { "max": "temp" } } }
        ],
        "sink": { "type": "mqtt", "url": broker.url(), "topic": "windows/out" },
        "checkpoint_ms": 200
    });
    let a = cluster.node(leader).must_post("/v1/streams", &job);
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap_or(0);
    let s = wait_running(cluster.node(leader), id);
    let runner = s["node"].as_u64().unwrap_or(0);
    let by_hash = format!("edgerun_stream_checkpoints_total{{job=\"{id}\",kept=\"by_hash\"}}");

    // 40 s of event time from 3 sensors, published one second at a time while the runner's
    // node is killed (as in the Redis failover test above).
    let (all, publisher) = paced_sensors(broker.port);
    wait_until(
        "windows published and checkpoints kept by hash",
        Duration::from_secs(30),
        || {
            let n = subscribed(&out).len();
            let kept = cluster.node(runner).metric(&by_hash).unwrap_or(0.0);
            if n >= 15 && kept >= 2.0 {
                Ok(())
            } else {
                Err(format!("{n} windows published, {kept} checkpoints by hash"))
            }
        },
    );
    // The log holds references only: no checkpoint went into it.
    let in_log = format!("edgerun_stream_checkpoints_total{{job=\"{id}\",kept=\"log\"}}");
    assert_eq!(cluster.node(runner).metric(&in_log), None);
    cluster.node_mut(runner).kill9();
    let published_at_kill = subscribed(&out).len();
    let alive: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != runner).collect();
    let leader = cluster.wait_for_leader(&alive, Duration::from_secs(30));
    let moved = wait_until("the job on another node", Duration::from_secs(60), || {
        let s = stream(cluster.node(leader), id);
        match s["node"].as_u64() {
            Some(n) if n != runner && s["status"] == "running" => Ok(s),
            _ => Err(s.to_string()),
        }
    });
    let next = moved["node"].as_u64().unwrap_or(0);
    if publisher.join().is_err() {
        panic!("the publisher failed");
    }
    assert!(
        published_at_kill < 120,
        "the kill came after the last window ({published_at_kill}): not mid-stream"
    );
    let want = reference(&all, 1000);
    let got = wait_until(
        "every window on the MQTT topic",
        Duration::from_secs(90),
        || {
            let r = subscribed(&out);
            let ids: std::collections::BTreeSet<&str> =
                r.iter().filter_map(|x| x["result_id"].as_str()).collect();
            if ids.len() >= want.len() {
                Ok(r)
            } else {
                Err(format!(
                    "{} of {} windows; job {}",
                    ids.len(),
                    want.len(),
                    stream(cluster.node(leader), id)
                ))
            }
        },
    );
    // The next runner started from a checkpoint kept by hash and keeps its own that way.
    let kept = cluster.node(next).metric(&by_hash).unwrap_or(0.0);
    assert!(kept >= 1.0, "node {next}: {kept} checkpoints by hash");
    // At least once: a repeat carries the same result_id and the same values; every window
    // equals the reference (a runner that lost the open windows would publish partial ones).
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for r in &got {
        let rid = r["result_id"].as_str().unwrap_or("").to_string();
        if let Some(first) = by_id.get(&rid) {
            assert_eq!(first, r, "a repeat differs");
        }
        by_id.insert(rid, r.clone());
    }
    for r in by_id.values() {
        matches_reference(r, &want);
    }
    assert_eq!(by_id.len(), want.len());
    eprintln!(
        "published {} for {} windows ({} repeats after the kill)",
        got.len(),
        want.len(),
        got.len() - want.len()
    );
}
