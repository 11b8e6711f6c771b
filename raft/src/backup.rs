//! Backups of the replicated state, and seeding a data directory from one.
//!
//! A backup file is
//!
//! ```text
//! EDGERUN-BACKUP 1\n
//! {"format":5,"node":1,"created_ms":..,"last_index":..,"last_term":..,"tasks":..,"bytes":N,"sha256":"<hex>"}\n
//! <N bytes: the state machine snapshot (bincode SnapshotFile)>
//! ```
//!
//! It is the state as of one applied log entry (consistent: taken under the state machine's
//! read lock). [`verify`] checks the magic line, the header, the exact length, the SHA-256 and
//! that the snapshot decodes with this build's format; anything else is refused before
//! anything is written. [`restore`] seeds an empty data directory: the snapshot becomes the
//! node's current snapshot, its last log id the purged prefix of an empty log, and the vote
//! moves to the snapshot's term so that the next election starts above it. Every member
//! restored from the same file with its own `--id` starts a cluster with all of the state.
//! Results kept off-Raft (over `retention.inline_result_max_bytes`) are not in a backup.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgerun_model::FORMAT_VERSION;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state_machine::{SnapshotFile, StateView};
use crate::{LogId, NodeId, SnapshotMeta};

pub const MAGIC: &[u8] = b"EDGERUN-BACKUP 1\n";

/// Why a backup could not be taken, checked, restored or written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("encoding the state: {0}")]
    Encode(String),
    #[error("not an edgerun backup (it does not start with \"EDGERUN-BACKUP 1\")")]
    NotABackup,
    #[error("the header line is missing or cut off")]
    NoHeader,
    #[error("the header is not valid: {0}")]
    BadHeader(serde_json::Error),
    #[error("the file is truncated: the snapshot has {have} of its {want} bytes")]
    Truncated { have: u64, want: u64 },
    #[error("the file has {extra} bytes after the snapshot's {want}: not one backup")]
    TrailingBytes { extra: u64, want: u64 },
    #[error(
        "the checksum does not match (header {header}, content {content}): the file is damaged"
    )]
    Checksum { header: String, content: String },
    #[error("the {what} is data format {found}; this edgerun reads format {FORMAT_VERSION}")]
    Format { what: &'static str, found: u16 },
    #[error("the snapshot does not decode: {0}")]
    Decode(String),
    #[error("node {id} is not a member in this backup (members: {members}); restore each member with its own id")]
    NotAMember { id: NodeId, members: String },
    #[error(transparent)]
    DataDir(#[from] crate::DataDirError),
    #[error("writing {path}: {message}")]
    Restore { path: String, message: String },
    #[error("{0} already exists; a backup never replaces a file (choose a new name, or move the old one away first)")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl BackupError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
/// Largest header line accepted.
const MAX_HEADER: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupInfo {
    /// The data format of the snapshot (`edgerun_model::FORMAT_VERSION`).
    pub format: u16,
    /// The node that made it.
    pub node: NodeId,
    pub created_ms: u64,
    /// The last log entry the state includes.
    pub last_index: u64,
    pub last_term: u64,
    pub tasks: u64,
    /// Length of the snapshot after the header.
    pub bytes: u64,
    pub sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A backup of `view` as of now.
pub fn take(
    view: &StateView,
    node: NodeId,
    now_ms: u64,
) -> Result<(BackupInfo, Vec<u8>), BackupError> {
    let (payload, last, tasks) = view
        .encode_snapshot()
        .map_err(|e| BackupError::Encode(e.to_string()))?;
    let info = BackupInfo {
        format: FORMAT_VERSION,
        node,
        created_ms: now_ms,
        last_index: last.map_or(0, |l| l.index),
        last_term: last.map_or(0, |l| l.leader_id.term),
        tasks,
        bytes: payload.len() as u64,
        sha256: hex(&Sha256::digest(&payload)),
    };
    let header = serde_json::to_string(&info).map_err(|e| BackupError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(header.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&payload);
    Ok((info, out))
}

/// Check a whole backup file; its header and decoded snapshot.
pub fn verify(bytes: &[u8]) -> Result<(BackupInfo, SnapshotFile), BackupError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::NotABackup)?;
    let nl = rest
        .iter()
        .take(MAX_HEADER)
        .position(|b| *b == b'\n')
        .ok_or(BackupError::NoHeader)?;
    let info: BackupInfo = serde_json::from_slice(&rest[..nl]).map_err(BackupError::BadHeader)?;
    let payload = &rest[nl + 1..];
    let have = payload.len() as u64;
    if have < info.bytes {
        return Err(BackupError::Truncated {
            have,
            want: info.bytes,
        });
    }
    if have > info.bytes {
        return Err(BackupError::TrailingBytes {
            extra: have - info.bytes,
            want: info.bytes,
        });
    }
    let sum = hex(&Sha256::digest(payload));
    if sum != info.sha256 {
        return Err(BackupError::Checksum {
            header: info.sha256,
            content: sum,
        });
    }
    if !edgerun_model::applies_format(info.format) {
        return Err(BackupError::Format {
            what: "backup",
            found: info.format,
        });
    }
    let file = SnapshotFile::read(payload).map_err(BackupError::Decode)?;
    Ok((info, file))
}

/// Seed the data directory `data_dir` (which must not hold a database) from a verified
/// backup, as node `id`. Nothing is written unless the whole file checks out.
pub fn restore(bytes: &[u8], data_dir: &Path, id: NodeId) -> Result<BackupInfo, BackupError> {
    let (info, file) = verify(bytes)?;
    if !file.membership.membership().nodes().any(|(n, _)| *n == id) {
        let members: Vec<String> = file
            .membership
            .membership()
            .nodes()
            .map(|(n, _)| n.to_string())
            .collect();
        return Err(BackupError::NotAMember {
            id,
            members: members.join(", "),
        });
    }
    let data = crate::DataDir::create_empty(data_dir, 16)?;
    let last: Option<LogId> = file.last_applied;
    let meta = SnapshotMeta {
        last_log_id: last,
        last_membership: file.membership.clone(),
        snapshot_id: format!("restored-{}-{}", info.last_term, info.last_index),
    };
    let payload = &bytes[bytes.len() - info.bytes as usize..];
    let written = (|| -> Result<(), String> {
        crate::state_machine::write_current(&data.snapshot_dir(), &meta, payload)?;
        if let Some(l) = last {
            crate::log_store::seed(data.db(), l, openraft::Vote::new(l.leader_id.term, id))?;
        }
        data.db().flush().map_err(|e| e.to_string())?;
        Ok(())
    })();
    if let Err(e) = written {
        // The directory was empty: leave it so, not half restored.
        let (db_path, snapshot_dir) = (data.db_path(), data.snapshot_dir());
        drop(data);
        let _ = std::fs::remove_dir_all(&db_path);
        let _ = std::fs::remove_dir_all(&snapshot_dir);
        return Err(BackupError::Restore {
            path: db_path.display().to_string(),
            message: e,
        });
    }
    Ok(info)
}

/// Write `bytes` to a new file at `path`, 0600, atomically and never over anything: the bytes
/// go to a temporary file of a name no other writer uses (`O_EXCL`), are synced, and the file
/// is then hard-linked to `path`, which fails if `path` exists (an existing backup, or
/// anything else, is left as it is). A directory that has to be made is made 0700.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::private::create_dir(dir).map_err(|e| BackupError::io(dir, e))?;
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(BackupError::Exists(path.display().to_string()));
    }
    static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.partial",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup"),
        std::process::id(),
        UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let write_new = |p: &Path| -> std::io::Result<()> {
        let mut f = crate::private::create_new(p)?;
        f.write_all(bytes).and_then(|()| f.sync_all())
    };
    let linked = write_new(&tmp).and_then(|()| match std::fs::hard_link(&tmp, path) {
        // A filesystem without hard links (vfat on a USB stick, some network mounts): written
        // in place, still O_EXCL; a crash may leave a short file, which restore refuses.
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            write_new(path).inspect_err(|e| {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(path);
                }
            })
        }
        r => r,
    });
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // The new name is durable with its directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(path.display().to_string()))
        }
        Err(e) => Err(BackupError::io(path, e)),
    }
}

/// Scheduled backups in `dir`: `edgerun-<created_ms>.backup`, keeping the newest `keep`.
pub fn write_rotated(
    dir: &Path,
    info: &BackupInfo,
    bytes: &[u8],
    keep: usize,
) -> Result<PathBuf, BackupError> {
    let path = dir.join(format!("edgerun-{:013}.backup", info.created_ms));
    write_file(&path, bytes)?;
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BackupError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("edgerun-") && n.ends_with(".backup"))
        })
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep.max(1));
    for old in &all[..excess] {
        if let Err(e) = std::fs::remove_file(old) {
            tracing::warn!(file = %old.display(), error = %e, "removing an old backup failed");
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_of_a_store_verifies_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (d, _) = crate::DataDir::open(dir.path(), 8).unwrap_or_else(|e| panic!("{e}"));
        let sm = crate::StateMachineStore::open(d.db(), &d.snapshot_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        let (info, bytes) = take(&sm.view(), 1, 42).unwrap_or_else(|e| panic!("{e}"));
        // The borrowed encoding decodes as a SnapshotFile.
        let (again, file) = verify(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, info);
        assert_eq!(file.version, FORMAT_VERSION);
        match verify(&bytes[..bytes.len() - 1]) {
            Err(BackupError::Truncated { have, want }) => assert_eq!(have + 1, want),
            other => panic!("a cut file: {:?}", other.map(|(i, _)| i)),
        }
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        match verify(&bad) {
            Err(e @ BackupError::Checksum { .. }) => {
                assert!(e.to_string().contains("damaged"), "{e}")
            }
            other => panic!("a changed byte: {:?}", other.map(|(i, _)| i)),
        }
        assert!(matches!(
            verify(b"PK\x03\x04"),
            Err(BackupError::NotABackup)
        ));
    }

    #[test]
    fn a_backup_file_is_new_private_and_never_replaces_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("made").join("b.backup");
        write_file(&path, b"first").unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("made")), 0o700);
        match write_file(&path, b"second") {
            Err(e @ BackupError::Exists(_)) => {
                assert!(e.to_string().contains("never replaces"), "{e}")
            }
            other => panic!("a second write: {other:?}"),
        }
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"first"[..]));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("made"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(left, vec![std::ffi::OsString::from("b.backup")]);
    }
}
