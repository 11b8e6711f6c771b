//! What is in a data directory, and whether it is whole: `edgerun doctor` prints the full
//! [`Report`]; a node checks the same at start ([`check`]) and stops with what is wrong and
//! how to recover instead of running on damaged state.

use std::path::Path;

use serde::Serialize;

use crate::log_files::{self, Depth};
use crate::start::{DIR_FORMAT, LEGACY_DIR_FORMAT};

use crate::state_machine::SnapshotFile;
use crate::{Entry, LogId, NodeId};

/// How to get a node with damaged state back.
pub const RECOVERY: &str = "to recover, restore the data directory from a backup \
(edgerun restore --from FILE --data-dir DIR --id N, into an empty directory), or move it away and \
join this node as a new member (a new node.id, added with edgerun cluster add-learner and then \
promoted): the other members still hold the state";

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Bytes of every file under the data directory.
    pub data_dir_bytes: u64,
    /// sled's files on disk.
    pub db_bytes: u64,
    /// Keys and values the database holds.
    pub live_bytes: u64,
    /// db_bytes / live_bytes.
    pub space_amplification: f64,
    pub format: Option<u16>,
    pub vote_term: Option<u64>,
    pub committed_index: Option<u64>,
    pub last_purged_index: Option<u64>,
    pub log_first_index: Option<u64>,
    pub log_last_index: Option<u64>,
    pub log_entries: u64,
    /// The Raft log's segment files.
    pub log_bytes: u64,
    pub snapshot_index: Option<u64>,
    pub snapshot_bytes: Option<u64>,
    pub tasks_in_snapshot: Option<u64>,
    /// What is wrong; empty when the state is whole.
    pub problems: Vec<String>,
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Look at `db`. `full` (doctor): sizes, every log entry and the snapshot's state decoded.
/// Otherwise (every start, which must stay quick at any size): the stamps, the first and last
/// log entries and the entry count, the snapshot's metadata; the state itself is decoded right
/// after by the state machine, whose error carries the same advice.
pub fn inspect(data: &crate::DataDir, full: bool) -> Report {
    let (db, data_dir) = (data.db(), data.root());
    let mut r = Report::default();
    let mut problems = Vec::new();
    let mut live = 0u64;
    if full {
        r.data_dir_bytes = dir_bytes(data_dir);
        r.db_bytes = db.size_on_disk().unwrap_or(0);
        for name in db.tree_names() {
            if let Ok(t) = db.open_tree(&name) {
                for (k, v) in t.iter().flatten() {
                    live += (k.len() + v.len()) as u64;
                }
            }
        }
    }
    match db.get(crate::start::FORMAT_KEY) {
        Ok(Some(v)) if v.len() == 2 => r.format = Some(u16::from_be_bytes([v[0], v[1]])),
        Ok(Some(v)) => problems.push(format!("the format stamp is {} bytes, not 2", v.len())),
        Ok(None) => problems.push("the database has no format stamp".into()),
        Err(e) => problems.push(format!("reading the format stamp: {e}")),
    }
    if let Some(f) = r
        .format
        .filter(|f| *f != DIR_FORMAT && *f != LEGACY_DIR_FORMAT)
    {
        problems.push(format!(
            "written in data format {f}; this edgerun reads {LEGACY_DIR_FORMAT} and {DIR_FORMAT}"
        ));
    }
    let meta = db.open_tree("raft_meta");
    let log = db.open_tree(crate::log_store::LEGACY_LOG_TREE);
    let snap = db.open_tree("snapshot");
    match (&meta, &log, &snap) {
        (Ok(meta), Ok(log), Ok(snap)) => {
            let get = |k: &[u8]| meta.get(k).map_err(|e| e.to_string());
            match get(b"vote") {
                Ok(Some(v)) => match edgerun_model::decode::<openraft::Vote<NodeId>>(&v) {
                    Ok(v) => r.vote_term = Some(v.leader_id.term),
                    Err(e) => problems.push(format!("the saved vote does not decode: {e}")),
                },
                Ok(None) => {}
                Err(e) => problems.push(format!("reading the vote: {e}")),
            }
            match get(b"committed") {
                Ok(Some(v)) => match edgerun_model::decode::<Option<LogId>>(&v) {
                    Ok(c) => r.committed_index = c.map(|c| c.index),
                    Err(e) => problems.push(format!("the committed index does not decode: {e}")),
                },
                Ok(None) => {}
                Err(e) => problems.push(format!("reading the committed index: {e}")),
            }
            match get(b"last_purged") {
                Ok(Some(v)) => match edgerun_model::decode::<LogId>(&v) {
                    Ok(c) => r.last_purged_index = Some(c.index),
                    Err(e) => problems.push(format!("the purged index does not decode: {e}")),
                },
                Ok(None) => {}
                Err(e) => problems.push(format!("reading the purged index: {e}")),
            }
            let files = log_files::scan(
                &data.log_dir(),
                if full { Depth::Decode } else { Depth::Headers },
            );
            if files.segments.is_empty() && !log.is_empty() {
                // Kept in sled by an earlier edgerun (moved to files at the next start).
                check_log(log, full, &mut r, &mut problems);
            } else {
                check_log_files(files, &mut r, &mut problems);
            }
            let dir = crate::snapshot_files::SnapshotDir::at(&data.snapshot_dir());
            match (dir.current(), snap.get(b"current")) {
                (Err(e), _) => problems.push(format!("reading the snapshot: {e}")),
                (Ok(Some((meta, path))), _) => {
                    check_snapshot_file(&meta, &path, full, &mut r, &mut problems)
                }
                // Kept in the database by an earlier edgerun (moved out at the next start).
                (Ok(None), Ok(Some(raw))) => check_snapshot(&raw, full, &mut r, &mut problems),
                (Ok(None), Ok(None)) => {}
                (Ok(None), Err(e)) => problems.push(format!("reading the snapshot: {e}")),
            }
        }
        _ => problems.push("the database's trees cannot be opened".into()),
    }
    // The pieces must fit together.
    if let (Some(p), Some(first)) = (r.last_purged_index, r.log_first_index) {
        if first != p + 1 {
            problems.push(format!(
                "the log starts at {first} but entries up to {p} were purged: entries are missing"
            ));
        }
    }
    let last = r.log_last_index.or(r.last_purged_index);
    if let (Some(p), s) = (r.last_purged_index, r.snapshot_index) {
        if s.is_none_or(|s| s < p) {
            problems.push(format!(
                "entries up to {p} were purged but the snapshot covers only up to {}: state is missing",
                s.map_or("nothing".into(), |s| s.to_string())
            ));
        }
    }
    if let (Some(c), Some(l)) = (r.committed_index, last) {
        if c > l {
            problems.push(format!(
                "the committed index {c} is past the last entry {l}"
            ));
        }
    }
    r.live_bytes = live;
    r.space_amplification = if live > 0 {
        r.db_bytes as f64 / live as f64
    } else {
        0.0
    };
    r.problems = problems;
    r
}

fn check_log_files(files: log_files::Scan, r: &mut Report, problems: &mut Vec<String>) {
    r.log_bytes = files.bytes;
    problems.extend(files.problems);
    // Entries up to the purge point may still be in a file (a purge cut short): not counted.
    let purged = r.last_purged_index;
    let kept = files
        .records
        .iter()
        .filter(|f| purged.is_none_or(|p| f.index > p));
    for f in kept {
        r.log_first_index.get_or_insert(f.index);
        r.log_last_index = Some(f.index);
        r.log_entries += 1;
    }
}

fn check_log(log: &sled::Tree, full: bool, r: &mut Report, problems: &mut Vec<String>) {
    let decode = |k: &[u8], v: &[u8]| -> Result<Entry, String> {
        let key = <[u8; 8]>::try_from(k)
            .map(u64::from_be_bytes)
            .map_err(|_| format!("a log key is {} bytes, not 8", k.len()))?;
        let e: Entry = edgerun_model::decode(v)
            .map_err(|e| format!("log entry {key} does not decode: {e}"))?;
        if e.log_id.index != key {
            return Err(format!("log entry {key} holds index {}", e.log_id.index));
        }
        Ok(e)
    };
    if full {
        let mut prev: Option<LogId> = None;
        for kv in log.iter() {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => {
                    problems.push(format!("reading the log: {e}"));
                    return;
                }
            };
            match decode(&k, &v) {
                Ok(e) => {
                    if let Some(p) = prev {
                        if e.log_id.index != p.index + 1 {
                            problems.push(format!(
                                "the log jumps from {} to {}",
                                p.index, e.log_id.index
                            ));
                        }
                        if e.log_id.leader_id.term < p.leader_id.term {
                            problems.push(format!(
                                "log entry {} has term {} after term {}",
                                e.log_id.index, e.log_id.leader_id.term, p.leader_id.term
                            ));
                        }
                    }
                    r.log_first_index.get_or_insert(e.log_id.index);
                    r.log_last_index = Some(e.log_id.index);
                    r.log_entries += 1;
                    prev = Some(e.log_id);
                }
                Err(e) => problems.push(e),
            }
        }
        return;
    }
    for (which, kv) in [("first", log.first()), ("last", log.last())] {
        match kv {
            Ok(Some((k, v))) => match decode(&k, &v) {
                Ok(e) if which == "first" => r.log_first_index = Some(e.log_id.index),
                Ok(e) => r.log_last_index = Some(e.log_id.index),
                Err(e) => problems.push(e),
            },
            Ok(None) => {}
            Err(e) => problems.push(format!("reading the {which} log entry: {e}")),
        }
    }
    if let (Some(a), Some(b)) = (r.log_first_index, r.log_last_index) {
        r.log_entries = b - a + 1;
        let n = log.len() as u64;
        if n != r.log_entries {
            problems.push(format!(
                "the log holds {n} entries between {a} and {b}, not {}: entries are missing",
                r.log_entries
            ));
        }
    }
}

fn check_snapshot_file(
    meta: &crate::SnapshotMeta,
    path: &Path,
    full: bool,
    r: &mut Report,
    problems: &mut Vec<String>,
) {
    r.snapshot_index = meta.last_log_id.map(|l| l.index);
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("the snapshot file {}: {e}", path.display()));
            return;
        }
    };
    r.snapshot_bytes = f.metadata().ok().map(|m| m.len());
    if !full {
        return;
    }
    match SnapshotFile::read(std::io::BufReader::new(&f)) {
        Ok(s) => snapshot_state(&s, r),
        Err(e) => problems.push(format!("the snapshot's state ({}): {e}", path.display())),
    }
}

fn snapshot_state(f: &SnapshotFile, r: &mut Report) {
    r.tasks_in_snapshot = Some(f.state.tasks.len() as u64);
}

fn check_snapshot(raw: &[u8], full: bool, r: &mut Report, problems: &mut Vec<String>) {
    #[derive(serde::Deserialize)]
    struct Stored {
        meta: crate::SnapshotMeta,
        data: Vec<u8>,
    }
    let stored: Stored = match edgerun_model::decode(raw) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("the snapshot does not decode: {e}"));
            return;
        }
    };
    r.snapshot_index = stored.meta.last_log_id.map(|l| l.index);
    r.snapshot_bytes = Some(stored.data.len() as u64);
    if !full {
        return;
    }
    match SnapshotFile::read(&stored.data[..]) {
        Ok(f) => snapshot_state(&f, r),
        Err(e) => problems.push(format!("the snapshot's state does not decode: {e}")),
    }
}

/// At start: the quick checks; an error says what is wrong and how to recover.
pub fn check(data: &crate::DataDir) -> Result<(), String> {
    let r = inspect(data, false);
    let data_dir = data.root();
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the data directory {} is damaged: {}; {RECOVERY}",
            data_dir.display(),
            r.problems.join("; ")
        ))
    }
}
