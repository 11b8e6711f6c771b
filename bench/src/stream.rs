//! `edgerun bench stream`: stream jobs on one real node.
//!
//! - **http → window → results**: clients POST batches of records (1,000 keys, event time
//!   advancing 1 ms per 100 records) to a job with a 1 s tumbling window per key (count, mean,
//!   max); records/s counted from the answers, which come once the records are checkpointed.
//! - **mqtt → window → redis**: N messages wait in mosquitto for the job's session while the
//!   job is paused; from the resume until the job has taken all N: records/s. Beside it, in the
//!   same run, the rate at which `mosquitto_sub` drains the same N queued messages from the
//!   same broker (the ceiling for any consumer of that broker).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::cluster::{agent, edgerun_cluster, post_json, wait_cluster};

const T0: i64 = 1_700_000_000_000;

fn window_job(source: Value, sink: Value) -> Value {
    json!({
        "name": "bench",
        "source": source,
        "time": { "field": "ts", "max_delay_ms": 0 },
        "pipeline": [
            { "key_by": "k" },
            { "window": { "type": "tumbling", "size_ms": 1000 },
              "aggregate": { "n": { "count": "*" }, "mean": { "mean": "v" }, "hi": { "max": "v" } } }
        ],
        "sink": sink,
        "checkpoint_ms": 1000,
        "max_results": 1_000_000
    })
}

fn get(a: &ureq::Agent, url: &str) -> Option<Value> {
    a.get(url).call().ok()?.into_json().ok()
}

fn wait_running(a: &ureq::Agent, url: &str, id: u64) -> anyhow::Result<()> {
    crate::cluster::poll(
        "the stream job to run",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || get(a, &format!("{url}/v1/streams/{id}")).filter(|s| s["status"] == "running"),
    )
    .map(|_| ())
}

fn records_in(a: &ureq::Agent, url: &str, id: u64) -> u64 {
    get(a, &format!("{url}/v1/streams/{id}"))
        .and_then(|s| s["metrics"]["records_in"].as_u64())
        .unwrap_or(0)
}

pub fn stream(
    dir: &Path,
    secs: f64,
    clients: usize,
    keys: usize,
    batch: usize,
    mqtt: usize,
) -> anyhow::Result<Value> {
    let mut procs = edgerun_cluster(dir, 1, &["streams.queue_batches=256".into()])?;
    let a = agent();
    wait_cluster(&a, &procs)?;
    let url = procs[0].url.clone();
    let pid = procs[0].pid();
    let idle_kib = pid.and_then(crate::cluster::rss_kib);
    let steady = steady_memory(&a, &url, keys, pid)?;
    let small = small_latencies(&a, &url)?;

    // ---- http → window → results
    let job = post_json(
        &a,
        &format!("{url}/v1/streams"),
        &window_job(json!({"type": "http"}), json!({"type": "results"})),
    )
    .map_err(|e| anyhow::anyhow!("creating the job: {e}"))?;
    let id = job["id"].as_u64().context("no job id")?;
    wait_running(&a, &url, id)?;
    eprintln!("bench stream: http ingest, {clients} clients, batches of {batch}, {secs} s");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (a, url, next) = (agent(), url.clone(), next.clone());
            std::thread::spawn(move || -> (u64, Vec<f64>, u64) {
                let (mut taken, mut lat, mut refused) = (0u64, Vec::new(), 0u64);
                while Instant::now() < stop {
                    let first = next.fetch_add(batch as u64, std::sync::atomic::Ordering::SeqCst);
                    let body: String = {
                        let mut s = String::with_capacity(batch * 48);
                        s.push('[');
                        for i in first..first + batch as u64 {
                            if i > first {
                                s.push(',');
                            }
                            s.push_str(&format!(
                                "{{\"k\":\"k{}\",\"ts\":{},\"v\":{}}}",
                                i % keys as u64,
                                T0 + (i / 100) as i64,
                                (i % 1000) as f64 * 0.5
                            ));
                        }
                        s.push(']');
                        s
                    };
                    let t = Instant::now();
                    match a
                        .post(&format!("{url}/v1/streams/{id}/records"))
                        .set("content-type", "application/json")
                        .send_string(&body)
                    {
                        Ok(r) => {
                            let v: Value = r.into_json().unwrap_or(Value::Null);
                            taken += v["accepted"].as_u64().unwrap_or(0);
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        Err(ureq::Error::Status(429, _)) => {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                (taken, lat, refused)
            })
        })
        .collect();
    let mut taken = 0;
    let mut lat = Vec::new();
    let mut refused = 0;
    for t in threads {
        let (n, l, r) = t.join().map_err(|_| anyhow::anyhow!("a client panicked"))?;
        taken += n;
        lat.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = taken as f64 / elapsed;
    let results = get(&a, &format!("{url}/v1/streams/{id}"))
        .and_then(|s| s["results"].as_u64())
        .unwrap_or(0);
    let post_ms = crate::cluster::percentiles(&mut lat);
    println!(
        "stream http→window(1 s, {keys} keys)→results: {taken} records in {elapsed:.1} s = {rate:.0} records/s; {results} window results; POST (until checkpointed) p50 {} ms p99 {} ms; 429s {refused}",
        crate::cluster::f(&post_ms, "p50_ms"),
        crate::cluster::f(&post_ms, "p99_ms")
    );
    // The node's memory with the 1,000-key job's windows open, beside the node idle.
    let job_kib = pid.and_then(crate::cluster::rss_kib);
    println!(
        "stream memory: node idle {} MiB, after the ingest run (its window results kept in the state) {} MiB",
        idle_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        job_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
    let mut report = json!({
        "http": { "records": taken, "secs": elapsed, "records_per_sec": rate,
                  "keys": keys, "clients": clients, "batch": batch, "window_results": results,
                  "post_until_checkpointed": post_ms, "refused_429": refused },
        "latency": small,
        "rss_kib": { "idle": idle_kib, "after_ingest": job_kib, "steady_job": steady },
    });

    // ---- mqtt → window → redis, beside mosquitto_sub
    if mqtt > 0 {
        match mqtt_vs_sub(dir, &a, &url, mqtt, keys) {
            Ok(v) => report["mqtt"] = v,
            Err(e) => {
                eprintln!("bench stream: the mqtt part did not run: {e:#}");
                report["mqtt"] = json!({ "error": format!("{e:#}") });
            }
        }
    }
    for p in procs.iter_mut() {
        p.kill();
    }
    Ok(report)
}

/// The node's RSS while a {keys}-key job runs in steady state: records at 10 per key per
/// second with event time = now (so 1 s windows close as they would on live sensors), every
/// window result to a file sink (not kept in the state), for 10 s; sampled each second.
fn steady_memory(
    a: &ureq::Agent,
    url: &str,
    keys: usize,
    pid: Option<u32>,
) -> anyhow::Result<Value> {
    let Some(pid) = pid else {
        return Ok(Value::Null);
    };
    let mut job = window_job(
        json!({"type": "http"}),
        json!({"type": "file", "path": "bench-steady.jsonl"}),
    );
    job["time"]["max_delay_ms"] = json!(200);
    let v = post_json(a, &format!("{url}/v1/streams"), &job)
        .map_err(|e| anyhow::anyhow!("creating the job: {e}"))?;
    let id = v["id"].as_u64().context("no job id")?;
    wait_running(a, url, id)?;
    let idle = crate::cluster::rss_kib(pid);
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut sent = 0u64;
    for tick in 0..100u64 {
        // Pacing: ten batches a second, each one record per key (a sensor fleet's rate).
        let due = started + Duration::from_millis(tick * 100);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let now = edgerun_actors::now_ms();
        let body: Vec<Value> = (0..keys)
            .map(|k| json!({"k": format!("k{k}"), "ts": now, "v": (k % 100) as f64}))
            .collect();
        if post_json(
            a,
            &format!("{url}/v1/streams/{id}/records"),
            &Value::from(body),
        )
        .is_ok()
        {
            sent += keys as u64;
        }
        if tick % 10 == 9 {
            samples.extend(crate::cluster::rss_kib(pid));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = samples.iter().copied().max();
    let last = samples.last().copied();
    let _ = a.delete(&format!("{url}/v1/streams/{id}")).call();
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!(
        "stream memory, steady {keys}-key job ({:.0} records/s, results to a file): node {} MiB before, {} MiB at the end, {} MiB at most",
        sent as f64 / secs,
        mib(idle),
        mib(last),
        mib(peak)
    );
    Ok(
        json!({ "keys": keys, "records_per_sec": sent as f64 / secs, "before": idle,
               "last": last, "peak": peak, "samples": samples }),
    )
}

/// Job create → first record taken, and record → window result after the window closes.
fn small_latencies(a: &ureq::Agent, url: &str) -> anyhow::Result<Value> {
    let job = window_job(json!({"type": "http"}), json!({"type": "results"}));
    let created = Instant::now();
    let v = post_json(a, &format!("{url}/v1/streams"), &job)
        .map_err(|e| anyhow::anyhow!("creating the job: {e}"))?;
    let id = v["id"].as_u64().context("no job id")?;
    // The first record is taken (checkpointed) as soon as the job runs: 503 until then.
    let base = edgerun_actors::now_ms() as i64 / 1000 * 1000;
    let first = json!([{ "k": "a", "ts": base, "v": 1.0 }]);
    let start_ms = crate::cluster::poll(
        "the first record to be taken",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || {
            post_json(a, &format!("{url}/v1/streams/{id}/records"), &first)
                .ok()
                .map(|_| created.elapsed().as_secs_f64() * 1000.0)
        },
    )?;
    // Each round: a record in window i, then one in window i + 1 (closing window i); from
    // sending the closing record until window i's result can be read.
    let mut lat = Vec::new();
    let mut after = 0u64;
    for i in 1..=50i64 {
        let w = base + i * 1000;
        post_json(
            a,
            &format!("{url}/v1/streams/{id}/records"),
            &json!([{ "k": "a", "ts": w + 1, "v": 1.0 }]),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        post_json(
            a,
            &format!("{url}/v1/streams/{id}/records"),
            &json!([{ "k": "a", "ts": w + 1000, "v": 2.0 }]),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let next = crate::cluster::poll(
            "the window's result",
            Duration::from_secs(30),
            Duration::from_millis(1),
            || {
                let r = get(a, &format!("{url}/v1/streams/{id}/results?after={after}"))?;
                let found = r["results"]
                    .as_array()?
                    .iter()
                    .any(|x| x["window_start"].as_i64() == Some(w));
                found.then(|| r["next"].as_u64()).flatten()
            },
        )?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        after = next;
    }
    let _ = a.delete(&format!("{url}/v1/streams/{id}")).call();
    let lat = crate::cluster::percentiles(&mut lat);
    println!(
        "stream latency: job create -> first record taken {start_ms:.0} ms; window closed -> its result readable p50 {} ms p99 {} ms",
        crate::cluster::f(&lat, "p50_ms"),
        crate::cluster::f(&lat, "p99_ms")
    );
    Ok(json!({ "create_to_first_record_ms": start_ms, "window_closed_to_result": lat }))
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish(port: u16, topic: &str, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("mosquitto_pub (./scripts/setup installs mosquitto-clients)")?;
    if let Some(mut stdin) = c.stdin.take() {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for l in lines {
            writeln!(w, "{l}")?;
        }
    }
    anyhow::ensure!(c.wait()?.success(), "mosquitto_pub failed");
    Ok(())
}

fn mqtt_vs_sub(
    dir: &Path,
    a: &ureq::Agent,
    url: &str,
    n: usize,
    keys: usize,
) -> anyhow::Result<Value> {
    // mosquitto_pub -l -q 1 loses messages past 65,535 in one run (2.0.11): publish in runs.
    const RUN: usize = 50_000;
    let d = dir.join("mqtt");
    std::fs::create_dir_all(&d)?;
    let port = edgerun_testkit::free_port();
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 1000\n"
        ),
    )?;
    let bin = if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let _broker = Child(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto (./scripts/setup installs it)")?,
    );
    crate::cluster::poll(
        "mosquitto to listen",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    )?;
    let rport = edgerun_testkit::free_port();
    let _redis = Child(
        Command::new("redis-server")
            .args([
                "--port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server")?,
    );
    crate::cluster::poll(
        "redis to listen",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || std::net::TcpStream::connect(("127.0.0.1", rport)).ok(),
    )?;
    let message = |i: usize| {
        format!(
            "{{\"k\":\"k{}\",\"ts\":{},\"v\":{}}}",
            i % keys,
            T0 + (i / 100) as i64,
            (i % 1000) as f64 * 0.5
        )
    };
    let publish_all = |topic: &str| -> anyhow::Result<()> {
        for start in (0..n).step_by(RUN) {
            publish(port, topic, (start..(start + RUN).min(n)).map(message))?;
        }
        Ok(())
    };

    // The ceiling: mosquitto_sub draining n queued messages from a persistent session.
    let sub = |extra: &[&str]| {
        let mut c = Command::new("mosquitto_sub");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-c",
            "-i",
            "drain",
            "-t",
            "sub/#",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    };
    // Make the session (subscribe once, then leave).
    anyhow::ensure!(sub(&["-E"]).status()?.success(), "mosquitto_sub -E failed");
    publish_all("sub/x")?;
    let t = Instant::now();
    let st = sub(&["-C", &n.to_string(), "-W", "300"]).status()?;
    let sub_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(st.success(), "mosquitto_sub did not get {n} messages");
    let sub_rate = n as f64 / sub_secs;

    // edgerun: the job's session made, the job paused, n messages queued, resumed.
    let job = post_json(
        a,
        &format!("{url}/v1/streams"),
        &window_job(
            json!({"type": "mqtt", "url": format!("mqtt://127.0.0.1:{port}"), "topic": "job/#", "qos": 1}),
            json!({"type": "redis", "url": format!("redis://127.0.0.1:{rport}"), "stream": "bench"}),
        ),
    )
    .map_err(|e| anyhow::anyhow!("creating the mqtt job: {e}"))?;
    let id = job["id"].as_u64().context("no job id")?;
    wait_running(a, url, id)?;
    post_json(a, &format!("{url}/v1/streams/{id}/pause"), &json!({}))
        .map_err(|e| anyhow::anyhow!("pausing: {e}"))?;
    crate::cluster::poll(
        "the runner to stop",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || get(a, &format!("{url}/v1/streams/{id}")).filter(|s| s["node"].is_null()),
    )?;
    publish_all("job/x")?;
    let t = Instant::now();
    post_json(a, &format!("{url}/v1/streams/{id}/resume"), &json!({}))
        .map_err(|e| anyhow::anyhow!("resuming: {e}"))?;
    crate::cluster::poll(
        "the job to take every message",
        Duration::from_secs(600),
        Duration::from_millis(20),
        || (records_in(a, url, id) >= n as u64).then_some(()),
    )?;
    let job_secs = t.elapsed().as_secs_f64();
    let job_rate = n as f64 / job_secs;
    println!(
        "stream mqtt→window→redis: {n} queued messages drained in {job_secs:.2} s = {job_rate:.0} records/s; mosquitto_sub alone {sub_secs:.2} s = {sub_rate:.0}/s; ratio {:.2}",
        job_rate / sub_rate
    );
    Ok(json!({
        "messages": n,
        "edgerun_secs": job_secs, "edgerun_records_per_sec": job_rate,
        "mosquitto_sub_secs": sub_secs, "mosquitto_sub_per_sec": sub_rate,
        "ratio": job_rate / sub_rate,
    }))
}
