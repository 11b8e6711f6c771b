//! How the client commands print: readable text (tables, one-line summaries) or, with
//! `--output json`, the API's JSON as it came.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and summaries for people.
    Text,
    /// The API's JSON (one document per command; one line per event or frame for streams).
    Json,
}

/// A text table: a header row, then rows, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds as a short duration: `850ms`, `3.2s`, `4m10s`.
pub fn short_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// One task in a few lines: status, where and how long, its trace, then the result or error.
pub fn task_text(t: &Value) -> String {
    let mut head = format!(
        "task {}: {} ({}",
        s(&t["id"]),
        s(&t["status"]),
        s(&t["kernel"])
    );
    if t["attempt"].as_u64().unwrap_or(0) > 0 {
        head.push_str(&format!(", attempt {}", s(&t["attempt"])));
    }
    if let Some(n) = t["node"].as_u64() {
        head.push_str(&format!(", node {n}"));
    }
    if let (Some(a), Some(b)) = (t["started_at"].as_u64(), t["finished_at"].as_u64()) {
        head.push_str(&format!(", ran {}", short_ms(b.saturating_sub(a))));
    }
    head.push(')');
    let mut out = vec![head];
    if let Some(r) = t["pending_reason"].as_str() {
        out.push(format!("waiting: {r}"));
    }
    if let Some(tr) = t["trace_id"].as_str().filter(|x| !x.is_empty()) {
        out.push(format!("trace: {tr}"));
    }
    if t["error"].is_object() {
        out.push(format!(
            "error: {}: {}",
            s(&t["error"]["code"]),
            s(&t["error"]["message"])
        ));
    }
    if !t["result"].is_null() {
        out.push(format!("result: {}", t["result"]));
    }
    out.join("\n")
}

/// `task list`: one row per task.
pub fn tasks_table(v: &Value) -> String {
    let now = edgerun_actors::now_ms();
    let rows: Vec<Vec<String>> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["id"]),
                s(&t["status"]),
                s(&t["kernel"]),
                s(&t["node"]),
                s(&t["attempt"]),
                t["created_at"]
                    .as_u64()
                    .map_or("-".into(), |c| short_ms(now.saturating_sub(c))),
            ]
        })
        .collect();
    let mut out = table(&["ID", "STATUS", "KERNEL", "NODE", "ATTEMPT", "AGE"], &rows);
    if let Some(next) = v["next"].as_u64() {
        out.push_str(&format!("more: --after {next}\n"));
    }
    out
}

/// `cluster status` and `top`: the members with their load, and the tasks by status.
pub fn cluster_text(c: &Value, nodes: Option<&Value>) -> String {
    let load = |id: u64| -> String {
        nodes
            .and_then(|n| n["nodes"].as_array())
            .and_then(|a| a.iter().find(|n| n["id"].as_u64() == Some(id)))
            .map_or("-".into(), |n| {
                format!("{}/{}", s(&n["load"]), s(&n["slots"]))
            })
    };
    let rows: Vec<Vec<String>> = c["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let id = m["id"].as_u64().unwrap_or(0);
            vec![
                if m["leader"] == true {
                    format!("{id} *")
                } else {
                    id.to_string()
                },
                s(&m["role"]),
                s(&m["tier"]),
                s(&m["state"]),
                load(id),
                s(&m["api"]),
            ]
        })
        .collect();
    let mut out = format!(
        "leader {}  term {}  applied {}  (answered by node {}; * = leader)\n",
        s(&c["leader"]),
        s(&c["term"]),
        s(&c["last_applied"]),
        s(&c["id"])
    );
    out.push_str(&table(
        &["NODE", "ROLE", "TIER", "STATE", "LOAD", "API"],
        &rows,
    ));
    if let Some(t) = c["tasks"].as_object() {
        let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k} {}", s(v))).collect();
        out.push_str(&format!("tasks: {}\n", parts.join(", ")));
    }
    out
}

/// `kernels`: name, version and what it does.
pub fn kernels_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["kernels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| vec![s(&k["name"]), s(&k["version"]), s(&k["description"])])
        .collect();
    table(&["KERNEL", "VERSION", "DESCRIPTION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let t = table(
            &["ID", "STATUS"],
            &[
                vec!["7".into(), "running".into()],
                vec!["1234".into(), "ok".into()],
            ],
        );
        assert_eq!(t, "ID    STATUS\n7     running\n1234  ok\n");
    }

    #[test]
    fn a_task_reads_in_a_few_lines() {
        let t = json!({"id": 7, "status": "failed", "kernel": "stats", "attempt": 2, "node": 3,
            "started_at": 1000, "finished_at": 1250, "trace_id": "ab",
            "error": {"code": "nonzero_exit", "message": "exited with 3"}, "result": null});
        assert_eq!(
            task_text(&t),
            "task 7: failed (stats, attempt 2, node 3, ran 250ms)\ntrace: ab\nerror: nonzero_exit: exited with 3"
        );
        assert_eq!(short_ms(61_500), "1m01s");
    }
}
