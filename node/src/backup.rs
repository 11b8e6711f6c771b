//! `edgerun backup`, `edgerun restore` and `edgerun doctor` (see `edgerun_raft::backup` and
//! `edgerun_raft::doctor` for the file format and the checks).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::client::{exit, fail, Client};
use crate::output::{short_ms, Output};

/// Download a backup to `out`: written beside it first, checked, then renamed over it.
pub fn backup(c: &Client, out: &Path, o: Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut bytes = Vec::new();
    c.download("/v1/admin/snapshot", &mut bytes)?;
    let (info, _) = edgerun_raft::backup::verify(&bytes).map_err(|e| {
        fail(
            exit::UNAVAILABLE,
            format!("the node's backup did not check out ({e}); nothing was written"),
        )
    })?;
    edgerun_raft::backup::write_file(out, &bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    match o {
        Output::Json => Client::print(&json!({
            "file": out.display().to_string(),
            "file_bytes": bytes.len(),
            "seconds": took.as_secs_f64(),
            "backup": info,
        })),
        Output::Text => {
            println!(
                "backup of {} tasks (log index {}, term {}) from node {}: {} ({} bytes, sha256 {}) in {}",
                info.tasks,
                info.last_index,
                info.last_term,
                info.node,
                out.display(),
                bytes.len(),
                &info.sha256[..16],
                short_ms(took.as_millis() as u64)
            );
            Ok(())
        }
    }
}

/// Seed `data_dir` from the backup in `from`, as node `id`.
pub fn restore(from: &Path, data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let db = data_dir.join("db");
    let info = edgerun_raft::backup::restore(&bytes, &db, id)
        .map_err(|e| anyhow::anyhow!("{}: {e}", from.display()))?;
    println!(
        "restored {} tasks (log index {}, term {}) into {} as node {id}; start the node on it (every member restored from the same file)",
        info.tasks,
        info.last_index,
        info.last_term,
        data_dir.display()
    );
    Ok(())
}

/// Report on a stopped node's data directory; exit 1 when something is damaged.
pub fn doctor(data_dir: &Path, o: Output) -> anyhow::Result<()> {
    let db_path = data_dir.join("db");
    anyhow::ensure!(
        db_path.is_dir(),
        "{} holds no database (no db/ in it)",
        data_dir.display()
    );
    // sled would create a database where there is none: checked above. A running node holds
    // its lock.
    let db = sled::Config::new()
        .path(&db_path)
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|e| {
            let hint = if e.to_string().contains("lock") {
                "is the node still running? stop it first".to_string()
            } else {
                format!(
                    "the files may be damaged; {}",
                    edgerun_raft::doctor::RECOVERY
                )
            };
            anyhow::anyhow!("opening {}: {e} ({hint})", db_path.display())
        })?;
    let r = edgerun_raft::doctor::inspect(&db, data_dir, true);
    match o {
        Output::Json => Client::print(&serde_json::to_value(&r)?)?,
        Output::Text => {
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "data directory  {} ({} bytes)",
                data_dir.display(),
                r.data_dir_bytes
            );
            println!(
                "database        {} bytes on disk, {} bytes live: space amplification {:.2}",
                r.db_bytes, r.live_bytes, r.space_amplification
            );
            println!(
                "format          {}",
                r.format.map_or("-".into(), |f| f.to_string())
            );
            println!(
                "raft log        entries {} ({}..{}), {} bytes, purged up to {}, committed {}, vote term {}",
                r.log_entries,
                opt(r.log_first_index),
                opt(r.log_last_index),
                r.log_bytes,
                opt(r.last_purged_index),
                opt(r.committed_index),
                opt(r.vote_term)
            );
            println!(
                "snapshot        index {}, {} bytes, {} tasks",
                opt(r.snapshot_index),
                opt(r.snapshot_bytes),
                opt(r.tasks_in_snapshot)
            );
            if r.problems.is_empty() {
                println!("state           whole");
            } else {
                for p in &r.problems {
                    println!("PROBLEM         {p}");
                }
            }
        }
    }
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(fail(
            1,
            format!(
                "{} is damaged: {}; {}",
                data_dir.display(),
                r.problems.join("; "),
                edgerun_raft::doctor::RECOVERY
            ),
        ))
    }
}
