//! `edgerun stream …`: stream jobs from the command line (a client of /v1/streams).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{exit, fail, Client};
use crate::output::{self, Output};

#[derive(Subcommand)]
pub enum StreamCmd {
    /// Create a stream job from its definition (JSON, API.md "Stream jobs"); - reads standard
    /// input.
    ///
    /// Example: edgerun stream create --file temps.json
    #[command(verbatim_doc_comment)]
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// List stream jobs with their status, node and counters.
    List,
    /// Show one stream job.
    Get { id: u64 },
    /// Pause a job (its runner stops; resume goes on from the last checkpoint).
    Pause { id: u64 },
    /// Resume a paused or failed job.
    Resume { id: u64 },
    /// Delete a job (what its sinks hold is kept).
    Delete { id: u64 },
    /// Send records to a job's http source: a file of JSON lines or a JSON array; - reads
    /// standard input. Returns once they are checkpointed.
    ///
    /// Example: edgerun stream send 1 --file readings.jsonl
    #[command(verbatim_doc_comment)]
    Send {
        id: u64,
        #[arg(long)]
        file: PathBuf,
    },
    /// Show results of a job's `results` sink, oldest first.
    Results {
        id: u64,
        /// Only results after this seq (the last page's `next`).
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
}

fn read_input(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// Records from a JSON array or JSON lines.
fn records(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| {
            fail(
                exit::INVALID,
                format!("the records are not a JSON array: {e}"),
            )
        });
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line)
                .map_err(|e| fail(exit::INVALID, format!("line {}: not JSON: {e}", i + 1)))?,
        );
    }
    Ok(out)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// How far the watermark is behind now, in seconds.
fn lag(v: &Value) -> String {
    match v["metrics"]["watermark_ms"].as_i64() {
        None => "-".into(),
        Some(w) => {
            let now = edgerun_actors::now_ms() as i64;
            output::short_ms(now.saturating_sub(w).max(0) as u64)
        }
    }
}

fn table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["streams"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|j| {
            vec![
                s(&j["id"]),
                s(&j["name"]),
                s(&j["status"]),
                s(&j["node"]),
                format!("{}→{}", s(&j["source"]), s(&j["sink"])),
                s(&j["metrics"]["records_in"]),
                s(&j["metrics"]["records_out"]),
                s(&j["metrics"]["late"]),
                s(&j["metrics"]["malformed"]),
                lag(j),
                s(&j["error"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no stream jobs (edgerun stream create --file JOB.json makes one)".into();
    }
    output::table(
        &[
            "ID",
            "NAME",
            "STATUS",
            "NODE",
            "FLOW",
            "IN",
            "OUT",
            "LATE",
            "MALFORMED",
            "LAG",
            "ERROR",
        ],
        &rows,
    )
}

fn text(j: &Value) -> String {
    let mut out = format!(
        "stream {} {:?}: {} on node {} ({} → {}), epoch {}, moved {} times\n",
        j["id"],
        s(&j["name"]),
        s(&j["status"]),
        s(&j["node"]),
        s(&j["source"]),
        s(&j["sink"]),
        s(&j["epoch"]),
        s(&j["moves"]),
    );
    let m = &j["metrics"];
    out.push_str(&format!(
        "  records in {}  out {}  filtered {}  late {}  malformed {}  watermark lag {}\n",
        s(&m["records_in"]),
        s(&m["records_out"]),
        s(&m["filtered"]),
        s(&m["late"]),
        s(&m["malformed"]),
        lag(j)
    ));
    if let Some(c) = j["checkpoint"].as_object() {
        out.push_str(&format!(
            "  checkpoint {} ({} bytes)\n",
            s(&c["seq"].clone()),
            s(&c["bytes"].clone())
        ));
    }
    if !j["error"].is_null() {
        out.push_str(&format!("  error: {}\n", s(&j["error"])));
    }
    out.trim_end().to_string()
}

fn results_table(v: &Value) -> String {
    let results = v["results"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default();
    if results.is_empty() {
        return "no results (yet)".into();
    }
    // The aggregates: every field but the window's own.
    let fixed = ["seq", "key", "window_start", "window_end", "result_id"];
    let mut names: Vec<String> = Vec::new();
    for r in results {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if !fixed.contains(&k.as_str()) && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    let mut headers = vec!["SEQ", "KEY", "WINDOW_START", "WINDOW_END"];
    headers.extend(names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                s(&r["seq"]),
                s(&r["key"]),
                s(&r["window_start"]),
                s(&r["window_end"]),
            ];
            row.extend(names.iter().map(|n| s(&r[n.as_str()])));
            row
        })
        .collect();
    let mut out = output::table(&headers, &rows);
    if let Some(n) = v["next"].as_u64() {
        out.push_str(&format!("(more: --after {n})"));
    }
    out.trim_end().to_string()
}

pub fn run(c: &Client, out: Output, cmd: StreamCmd) -> anyhow::Result<()> {
    let show = |v: &Value, f: fn(&Value) -> String| -> anyhow::Result<()> {
        match out {
            Output::Json => Client::print(v),
            Output::Text => {
                println!("{}", f(v));
                Ok(())
            }
        }
    };
    match cmd {
        StreamCmd::Create { file } => {
            let body: Value = serde_json::from_str(&read_input(&file)?).map_err(|e| {
                fail(
                    exit::INVALID,
                    format!("{}: not a JSON document: {e}", file.display()),
                )
            })?;
            let v = c.post("/v1/streams", &body)?;
            show(&v, text)
        }
        StreamCmd::List => show(&c.get("/v1/streams")?, table),
        StreamCmd::Get { id } => show(&c.get(&format!("/v1/streams/{id}"))?, text),
        StreamCmd::Pause { id } => show(
            &c.post(&format!("/v1/streams/{id}/pause"), &json!({}))?,
            text,
        ),
        StreamCmd::Resume { id } => show(
            &c.post(&format!("/v1/streams/{id}/resume"), &json!({}))?,
            text,
        ),
        StreamCmd::Delete { id } => show(&c.delete(&format!("/v1/streams/{id}"))?, |v| {
            format!("stream {} {}", v["id"], s(&v["status"]))
        }),
        StreamCmd::Send { id, file } => {
            let recs = records(&read_input(&file)?)?;
            if recs.is_empty() {
                return Err(fail(exit::INVALID, "no records to send"));
            }
            let mut sent = 0u64;
            // Batches of 10,000 records (well under the default 8 MiB body limit for small
            // records).
            for chunk in recs.chunks(10_000) {
                let body = Value::from(chunk.to_vec());
                // A job that is starting or moving (503) or behind (429) takes them a moment
                // later: try again for up to a minute.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let v = loop {
                    match c.post(&format!("/v1/streams/{id}/records"), &body) {
                        Ok(v) => break v,
                        Err(e)
                            if crate::client::exit_code(&e) == exit::UNAVAILABLE
                                && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(250));
                        }
                        Err(e) => return Err(e),
                    }
                };
                sent += v["accepted"].as_u64().unwrap_or(0);
            }
            show(&json!({ "accepted": sent }), |v| {
                format!("{} records taken (checkpointed)", v["accepted"])
            })
        }
        StreamCmd::Results { id, after, limit } => {
            let mut q = format!("/v1/streams/{id}/results?limit={limit}");
            if let Some(a) = after {
                q.push_str(&format!("&after={a}"));
            }
            show(&c.get(&q)?, results_table)
        }
    }
}
