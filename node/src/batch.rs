//! `task submit` of many tasks (--count, JSON lines): batches of up to 1,000 through
//! `POST /v1/tasks/batch`, then with --wait all of them waited for together through
//! `POST /v1/tasks/wait` (a call every few seconds, not one per task), with a progress
//! bar (indicatif, on stderr; hidden when stderr is not a terminal) and a summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{exit, fail, Client};
use crate::output::Output;

/// Tasks per batch call (the API takes up to 10,000; smaller batches show progress).
const CHUNK: usize = 1000;
/// Tasks per `POST /v1/tasks/wait` (the API's limit).
const WAIT_CHUNK: usize = 10_000;

/// What was done before a failure, for the error message: a script must not submit again.
fn progress(ids: &[u64], ended: &BTreeMap<String, Vec<u64>>) -> String {
    let done: usize = ended.values().map(Vec::len).sum();
    let ok = ended.get("succeeded").map_or(0, Vec::len);
    format!(
        "all {} tasks were submitted (ids {}); {done} had ended ({ok} succeeded) when waiting failed; do not submit them again: `edgerun task get ID` tells how each ends",
        ids.len(),
        ids_text(ids)
    )
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec:>12} eta {eta}")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_string());
    b
}

/// `1..5` for consecutive ids, else the first few.
fn ids_text(ids: &[u64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) if ids.windows(2).all(|w| w[1] == w[0] + 1) && ids.len() > 2 => {
            format!("{a}..{b}")
        }
        _ => {
            let shown: Vec<String> = ids.iter().take(10).map(u64::to_string).collect();
            let more = if ids.len() > 10 {
                format!(" and {} more", ids.len() - 10)
            } else {
                String::new()
            };
            format!("{}{more}", shown.join(", "))
        }
    }
}

pub fn submit_many(
    c: &Client,
    out: Output,
    tasks: Vec<Value>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let n = tasks.len();
    let started = Instant::now();
    let b = bar(n, "submitting");
    let mut ids: Vec<u64> = Vec::with_capacity(n);
    for chunk in tasks.chunks(CHUNK) {
        let v = c
            .post("/v1/tasks/batch", &json!({ "tasks": chunk }))
            .with_context(|| {
                format!(
                    "submitted {} of {n} tasks{} before this",
                    ids.len(),
                    if ids.is_empty() {
                        String::new()
                    } else {
                        format!(" (ids {})", ids_text(&ids))
                    }
                )
            })?;
        let got: Vec<u64> = v["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        anyhow::ensure!(
            got.len() == chunk.len(),
            "the batch answer has {} ids for {} tasks",
            got.len(),
            chunk.len()
        );
        ids.extend(got);
        b.inc(chunk.len() as u64);
    }
    b.finish_and_clear();
    let submitted_in = started.elapsed();
    if !wait {
        return match out {
            Output::Json => Client::print(&json!({
                "ids": ids,
                "submitted": n,
                "seconds": submitted_in.as_secs_f64(),
            })),
            Output::Text => {
                println!(
                    "submitted {n} tasks in {:.2}s: ids {}",
                    submitted_in.as_secs_f64(),
                    ids_text(&ids)
                );
                Ok(())
            }
        };
    }

    let deadline = Instant::now() + timeout;
    let b = bar(n, "running");
    let mut ended: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut not_ended: Vec<u64> = ids.clone();
    // Many tasks per call (POST /v1/tasks/wait), each call returning within a few seconds so
    // that the bar moves: a handful of calls a minute, far below any rate limit.
    while !not_ended.is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let secs = left.as_secs().clamp(1, 5);
        let mut still = Vec::with_capacity(not_ended.len());
        for chunk in not_ended.chunks(WAIT_CHUNK) {
            let v = c
                .post_read(
                    "/v1/tasks/wait",
                    &json!({ "ids": chunk, "timeout": format!("{secs}s") }),
                )
                .with_context(|| progress(&ids, &ended))?;
            for t in v["ended"].as_array().into_iter().flatten() {
                let (Some(id), Some(status)) = (t["id"].as_u64(), t["status"].as_str()) else {
                    continue;
                };
                ended.entry(status.to_string()).or_default().push(id);
                b.inc(1);
            }
            // A task collected by retention before we saw it end counts as not ended.
            still.extend(
                v["pending"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64),
            );
            let gone: Vec<u64> = v["not_found"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect();
            if !gone.is_empty() {
                ended
                    .entry("not_found".into())
                    .or_default()
                    .extend(gone.iter());
                b.inc(gone.len() as u64);
            }
        }
        not_ended = still;
        let bad: usize = ended
            .iter()
            .filter(|(s, _)| s.as_str() != "succeeded")
            .map(|(_, v)| v.len())
            .sum();
        if bad > 0 {
            b.set_message(format!("{bad} failed"));
        }
    }
    for v in ended.values_mut() {
        v.sort_unstable();
    }
    b.finish_and_clear();
    let took = started.elapsed().as_secs_f64();
    let ok = ended.get("succeeded").map_or(0, Vec::len);
    match out {
        Output::Json => Client::print(&json!({
            "ids": ids,
            "seconds": took,
            "tasks_per_second": n as f64 / took.max(1e-9),
            "ended": ended,
            "not_ended": not_ended,
        }))?,
        Output::Text => {
            let mut parts = vec![format!("{ok} succeeded")];
            for (s, v) in &ended {
                if s != "succeeded" {
                    parts.push(format!("{} {s} (ids {})", v.len(), ids_text(v)));
                }
            }
            if !not_ended.is_empty() {
                parts.push(format!(
                    "{} not ended within {}s (ids {})",
                    not_ended.len(),
                    timeout.as_secs(),
                    ids_text(&not_ended)
                ));
            }
            println!(
                "{n} tasks in {took:.2}s ({:.0}/s): {}",
                n as f64 / took.max(1e-9),
                parts.join(", ")
            );
        }
    }
    if ok == n {
        Ok(())
    } else {
        Err(fail(
            exit::TASK_FAILED,
            format!("{} of {n} tasks did not succeed", n - ok),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::ids_text;

    #[test]
    fn ids_read_as_ranges_or_lists() {
        assert_eq!(ids_text(&[4, 5, 6, 7]), "4..7");
        assert_eq!(ids_text(&[4, 9]), "4, 9");
        let many: Vec<u64> = (0..30).map(|i| i * 2).collect();
        assert_eq!(
            ids_text(&many),
            "0, 2, 4, 6, 8, 10, 12, 14, 16, 18 and 20 more"
        );
    }
}
