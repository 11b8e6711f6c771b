//! `edgerun dev`: a local node for trying edgerun out, with a demo.

use std::time::{Duration, Instant};

use anyhow::Context;
use edgerun_config::{NodeConfig, Sources};
use serde_json::json;

use crate::cli::{toml_string, DevArgs};
use crate::client::Client;

pub fn run(a: DevArgs) -> anyhow::Result<()> {
    if a.nodes != 1 {
        anyhow::bail!("invalid value for --nodes: {}; accepted in this build: 1 (multi-node clusters are not built yet)", a.nodes);
    }
    let (dir, _tmp) = match a.dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("edgerun-dev-")
                .tempdir()
                .context("creating a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let cfg: NodeConfig = edgerun_config::load(&Sources {
        file: None,
        env: Sources::process_env(),
        overrides: vec![
            (
                "node.data_dir".into(),
                toml_string(&dir.join("n1").display().to_string()),
            ),
            (
                "api.listen".into(),
                toml_string(&format!("127.0.0.1:{}", a.port)),
            ),
            (
                "cluster.listen".into(),
                toml_string(&format!("127.0.0.1:{}", a.port as u32 + 100)),
            ),
        ],
    })?;
    let url = format!("http://127.0.0.1:{}", a.port);
    let demo = !a.no_demo;
    let demo_url = url.clone();
    std::thread::spawn(move || {
        if let Err(e) = show(&demo_url, demo) {
            eprintln!("edgerun dev: {e:#}");
        }
    });
    crate::wiring::run(cfg)
}

/// Wait until the node is ready, print how to use it, and run a demo task.
fn show(url: &str, demo: bool) -> anyhow::Result<()> {
    let c = Client::new(url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.get("/readyz") {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("the node did not become ready in 30 s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    println!("\nedgerun is up at {url}  (Ctrl-C stops it)\n");
    println!("  submit:  curl -s -XPOST {url}/v1/tasks -d '{{\"kernel\":\"stats\",\"input\":{{\"values\":[3,1,4,1,5,9,2,6]}}}}'");
    println!("  wait:    curl -s '{url}/v1/tasks/1/wait?timeout=10s'");
    println!("  or:      edgerun task submit --kernel matmul --input '{{\"a\":[[1,2],[3,4]],\"b\":[[5,6],[7,8]]}}' --wait\n");
    if demo {
        let t = c.post(
            "/v1/tasks",
            &json!({"kernel": "matmul", "input": {"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, 8]]}}),
        )?;
        let id = t
            .get("id")
            .and_then(|v| v.as_u64())
            .context("no id in the answer")?;
        println!("demo: submitted matmul task {id} (status {})", t["status"]);
        let done = c.get(&format!("/v1/tasks/{id}/wait?timeout=30s"))?;
        println!(
            "demo: task {id} {} on node {} in {} ms: {}",
            done["status"].as_str().unwrap_or("?"),
            done["node"],
            done["finished_at"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(done["created_at"].as_u64().unwrap_or(0)),
            done["result"]
        );
    }
    Ok(())
}
