//! `edgerun backup`, `edgerun restore` and `edgerun doctor` (see `edgerun_raft::backup` and
//! `edgerun_raft::doctor` for the file format and the checks; `edgerun_raft::private` for the
//! file modes doctor checks).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use edgerun_config::NodeConfig;
use serde_json::json;

use crate::client::{exit, fail, Client};
use crate::output::{short_ms, Output};

/// Paths with group/other bits that doctor names one by one; the rest are counted.
const LOOSE_SHOWN: usize = 20;

/// Download a backup to the new file `out` (0600; an existing file is refused before anything
/// is downloaded, and never replaced): checked, written beside it, then linked into place.
pub fn backup(c: &Client, out: &Path, o: Output) -> anyhow::Result<()> {
    let started = Instant::now();
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(fail(
            exit::INVALID,
            format!(
                "{} already exists; a backup never replaces a file (choose a new name, or move the old one away first)",
                out.display()
            ),
        ));
    }
    let mut bytes = Vec::new();
    c.download("/v1/admin/snapshot", &mut bytes)?;
    let (info, _) = edgerun_raft::backup::verify(&bytes).map_err(|e| {
        fail(
            exit::UNAVAILABLE,
            format!("the node's backup did not check out ({e}); nothing was written"),
        )
    })?;
    // A file made at `out` while downloading is not replaced either.
    edgerun_raft::backup::write_file(out, &bytes)
        .map_err(|e| fail(exit::INVALID, e.to_string()))?;
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
    let info = edgerun_raft::backup::restore(&bytes, data_dir, id)
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

/// Report on a stopped node's data directory; exit 1 when something is damaged. `cfg`: the
/// node's config, when given, for the secret files it keeps elsewhere.
pub fn doctor(data_dir: &Path, cfg: Option<&NodeConfig>, o: Output) -> anyhow::Result<()> {
    // Never creates a database where there is none; a running node holds its lock.
    let data = edgerun_raft::DataDir::open_stopped(data_dir, 16).map_err(|e| match e {
        edgerun_raft::DataDirError::Open { .. } => anyhow::anyhow!(
            "{e} (the files may be damaged; {})",
            edgerun_raft::doctor::RECOVERY
        ),
        e => anyhow::anyhow!("{e}"),
    })?;
    let r = edgerun_raft::doctor::inspect(&data, true);
    let warnings = loose_warnings(data_dir, cfg);
    match o {
        Output::Json => {
            let mut v = serde_json::to_value(&r)?;
            if let Some(m) = v.as_object_mut() {
                m.insert("warnings".into(), json!(warnings));
            }
            Client::print(&v)?
        }
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
            for w in &warnings {
                println!("WARNING         {w}");
            }
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

/// What group or others can read: everything under `data_dir`, and (with the config) the
/// secret files, TLS key and backup directory it names outside it. One line per path, up to
/// [`LOOSE_SHOWN`], each with the chmod that fixes it, then a count of the rest.
fn loose_warnings(data_dir: &Path, cfg: Option<&NodeConfig>) -> Vec<String> {
    use edgerun_raft::private::{loose_modes, Loose};
    // The secrets kept elsewhere first: they are few and they must be named.
    let mut roots = Vec::new();
    if let Some(c) = cfg {
        let mut more: Vec<PathBuf> = vec![c.cluster_secret_file()];
        more.extend(Some(c.auth.jwt_secret_file.clone()).filter(|p| !p.as_os_str().is_empty()));
        more.extend(c.auth.api_keys.iter().map(|k| k.key_file.clone()));
        more.extend(c.api.tls_key_file.clone());
        more.extend(Some(c.backup.dir.clone()).filter(|p| !p.as_os_str().is_empty()));
        for p in more {
            if !p.starts_with(data_dir) && !roots.contains(&p) {
                roots.push(p);
            }
        }
    }
    roots.push(data_dir.to_path_buf());
    let mut all = Loose::default();
    for root in &roots {
        let l = loose_modes(root, LOOSE_SHOWN.saturating_sub(all.paths.len()));
        all.total += l.total;
        all.paths.extend(l.paths);
    }
    let mut out: Vec<String> = all
        .paths
        .iter()
        .map(|(p, mode)| {
            let what = if p.is_dir() { "directory" } else { "file" };
            format!(
                "{what} {} is mode {mode:04o}: group or others can reach it; fix: chmod go= {}",
                p.display(),
                shell_quote(p)
            )
        })
        .collect();
    if all.total > all.paths.len() {
        out.push(format!(
            "and {} more paths like these; fix all under the data directory: chmod -R go= {}",
            all.total - all.paths.len(),
            shell_quote(data_dir)
        ));
    }
    out
}

/// `p` as one shell word.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
