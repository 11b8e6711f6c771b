//! `edgerun bench` runs each scenario end to end at a small size and writes JSON with the
//! figures it promises (no time is asserted: these machines are shared; the numbers are for
//! people, see the README's Performance table).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(dir: &Path, args: &[&str]) -> Value {
    let out = dir.join(format!("{}.json", args[0]));
    let o = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--dir")
        .arg(dir.join(format!("work-{}", args[0])))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "edgerun bench {args:?}: {said}");
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["scenario"], args[0]);
    println!("{said}");
    v["results"].clone()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_scenario_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();

    let r = bench(d, &["startup", "--rounds", "1"]);
    assert!(num(&r["median_ms"]["one_node_ready"]) > 0.0);
    assert!(num(&r["median_ms"]["three_nodes_leader"]) > 0.0);

    let r = bench(
        d,
        &[
            "scheduler",
            "--nodes",
            "50",
            "--tasks",
            "200",
            "--rounds",
            "1",
        ],
    );
    assert_eq!(r["placed_per_plan"], 200, "{r}");

    let r = bench(
        d,
        &["submit", "--secs", "0.5", "--clients", "2", "--batch", "10"],
    );
    let rows = r["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 6, "edgerun and etcd, three modes each: {r}");
    for row in &rows {
        assert_eq!(row["errors"], 0, "{row}");
        assert!(num(&row["items_per_second"]) > 0.0, "{row}");
        assert!(num(&row["latency"]["p99_ms"]) > 0.0, "{row}");
    }
    assert!(num(&r["ratio_edgerun_to_etcd"]["batch10"]) > 0.0, "{r}");

    let r = bench(d, &["e2e", "--tasks", "300", "--isolation", "inproc"]);
    assert_eq!(r["rows"][0]["not_succeeded"], 0, "{r}");
    assert_eq!(r["rows"][0]["latency"]["n"], 300, "{r}");

    let r = bench(d, &["failover", "--rounds", "1"]);
    let round = &r["rounds"][0];
    assert_ne!(round["killed"], round["new_leader"], "{r}");
    for k in ["leader_ms", "first_placement_ms", "in_flight_done_ms"] {
        assert!(num(&round[k]) > 0.0, "{k}: {r}");
    }

    let r = bench(d, &["memory", "--tasks", "500"]);
    assert_eq!(r["idle_rss_kib"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["after_rss_kib"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(
        r["settled_rss_kib"].as_array().map(Vec::len),
        Some(3),
        "{r}"
    );
    for disk in r["disk"].as_array().into_iter().flatten() {
        assert!(
            num(&disk["db_bytes"]) > 0.0 && num(&disk["space_amplification"]) > 0.0,
            "{disk}"
        );
    }
}
