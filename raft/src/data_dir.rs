//! The node's data directory: the one place that knows its layout and opens its database.
//!
//! ```text
//!  <data>/            0700, tightened at start when looser
//!    db/              sled: the vote, purge/commit markers, results, outbox, format stamp
//!    log/             the Raft log's segment files (log_files)
//!    snapshot/        the state machine's snapshots (snapshot_files)
//! ```
//!
//! The node ([`DataDir::open`]), `edgerun restore` ([`DataDir::create_empty`]), `edgerun
//! doctor` and the benchmarks ([`DataDir::open_stopped`]) all open it here, with the same sled
//! settings, so that a cache size or a flush setting cannot differ between them.

use std::path::{Path, PathBuf};

use crate::start::{DIR_FORMAT, FORMAT_KEY, LEGACY_DIR_FORMAT};

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {path}: {message}")]
    Prepare { path: String, message: String },
    #[error("{path} holds no database (no db/ in it)")]
    NoDatabase { path: String },
    #[error("{path} is locked by another process: is the node still running? stop it first")]
    Locked { path: String },
    #[error("opening the database at {path}: {message}")]
    Open { path: String, message: String },
    #[error("the database at {path} was written by an incompatible edgerun (format {found}, this build reads {expected})")]
    Format {
        path: String,
        found: String,
        expected: u16,
    },
    #[error("{path} already holds a database; restore into an empty data directory (move this one away first)")]
    NotEmpty { path: String },
}

/// What opening did to the directory itself, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    AsItWas,
    /// It had group or other bits (this mode); it is 0700 now.
    Tightened(u32),
}

/// An open data directory: its paths and its sled database (a cheap handle to clone).
#[derive(Clone)]
pub struct DataDir {
    root: PathBuf,
    db: sled::Db,
}

impl DataDir {
    /// The node's own open at start: the directory is created 0700 (or tightened to it), the
    /// database created when missing and stamped with this build's format, or refused when an
    /// incompatible build wrote it. `cache_capacity_mb`: sled's page cache (`raft.cache_capacity_mb`).
    pub fn open(root: &Path, cache_capacity_mb: u64) -> Result<(DataDir, Prepared), DataDirError> {
        let prepared = crate::private::prepare_data_dir(root)
            .map_err(|message| DataDirError::Prepare {
                path: root.display().to_string(),
                message,
            })?
            .map_or(Prepared::AsItWas, Prepared::Tightened);
        let d = Self::open_db(root, cache_capacity_mb)?;
        d.stamp()?;
        Ok((d, prepared))
    }

    /// A new node's directory for `edgerun restore`: nothing may be in `db/` or `snapshot/`.
    pub fn create_empty(root: &Path, cache_capacity_mb: u64) -> Result<DataDir, DataDirError> {
        let nonempty = |p: &Path| {
            std::fs::read_dir(p)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        };
        for p in [db_path(root), snapshot_dir(root)] {
            if nonempty(&p) {
                return Err(DataDirError::NotEmpty {
                    path: p.display().to_string(),
                });
            }
        }
        Ok(Self::open(root, cache_capacity_mb)?.0)
    }

    /// A stopped node's directory, to look at (doctor, benchmarks): never creates a database
    /// where there is none, and says so when the node still holds it.
    pub fn open_stopped(root: &Path, cache_capacity_mb: u64) -> Result<DataDir, DataDirError> {
        if !db_path(root).is_dir() {
            return Err(DataDirError::NoDatabase {
                path: root.display().to_string(),
            });
        }
        Self::open_db(root, cache_capacity_mb)
    }

    fn open_db(root: &Path, cache_capacity_mb: u64) -> Result<DataDir, DataDirError> {
        let path = db_path(root);
        let shown = path.display().to_string();
        crate::private::create_dir(&path).map_err(|e| DataDirError::Open {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_capacity_mb.saturating_mul(1024 * 1024))
            // We flush explicitly where durability matters; sled's timer flush is a fallback.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                // sled 0.34 reports a lock held by another process only as this text (an
                // io::Error of kind Other, its config.rs); a path that merely contains "lock"
                // must not read as a running node.
                sled::Error::Io(ref io)
                    if io.to_string().starts_with("could not acquire lock on") =>
                {
                    DataDirError::Locked {
                        path: shown.clone(),
                    }
                }
                e => DataDirError::Open {
                    path: shown.clone(),
                    message: e.to_string(),
                },
            })?;
        Ok(DataDir {
            root: root.to_path_buf(),
            db,
        })
    }

    /// Stamp a new database with this build's format; refuse one of a format it cannot read.
    fn stamp(&self) -> Result<(), DataDirError> {
        let shown = || self.db_path().display().to_string();
        let open_err = |e: sled::Error| DataDirError::Open {
            path: shown(),
            message: e.to_string(),
        };
        match self.db.get(FORMAT_KEY).map_err(open_err)? {
            None => {
                self.db
                    .insert(FORMAT_KEY, &DIR_FORMAT.to_be_bytes())
                    .map_err(open_err)?;
                self.db.flush().map_err(open_err)?;
                Ok(())
            }
            Some(v)
                if v.as_ref() == DIR_FORMAT.to_be_bytes()
                    || v.as_ref() == LEGACY_DIR_FORMAT.to_be_bytes() =>
            {
                Ok(())
            }
            Some(v) => Err(DataDirError::Format {
                path: shown(),
                found: format!("{:?}", v.as_ref()),
                expected: DIR_FORMAT,
            }),
        }
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_path(&self) -> PathBuf {
        db_path(&self.root)
    }

    pub fn log_dir(&self) -> PathBuf {
        crate::log_files::dir_of(&self.root)
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        snapshot_dir(&self.root)
    }

    /// Bytes on disk of the database and of the Raft log's files (the node's gauges).
    pub fn sizes(&self) -> (Option<u64>, u64) {
        let log: u64 = std::fs::read_dir(self.log_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .sum();
        (self.db.size_on_disk().ok(), log)
    }
}

fn db_path(root: &Path) -> PathBuf {
    root.join("db")
}

fn snapshot_dir(root: &Path) -> PathBuf {
    crate::snapshot_files::SnapshotDir::of_data_dir(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_is_private_stamped_and_reopens() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = t.path().join("data");
        let (d, prepared) = DataDir::open(&root, 8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepared, Prepared::AsItWas);
        assert_eq!(crate::start::dir_format(d.db()), Some(DIR_FORMAT));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(d);
        assert!(DataDir::open_stopped(&root, 8).is_ok());
    }

    #[test]
    fn a_looser_directory_is_tightened_and_said_so() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let (_d, prepared) = DataDir::open(t.path(), 8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepared, Prepared::Tightened(0o755));
    }

    #[test]
    fn a_stopped_open_creates_nothing_and_names_a_running_node() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        match DataDir::open_stopped(t.path(), 8) {
            Err(DataDirError::NoDatabase { .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a directory without a database"),
        }
        assert!(!t.path().join("db").exists(), "a database was created");
        let (_running, _) = DataDir::open(t.path(), 8).unwrap_or_else(|e| panic!("{e}"));
        match DataDir::open_stopped(t.path(), 8) {
            Err(DataDirError::Locked { .. }) => {}
            Err(e) => panic!("wrong error while the node holds it: {e}"),
            Ok(_) => panic!("opened a database another handle holds"),
        }
    }

    #[test]
    fn another_format_is_refused_and_restore_needs_an_empty_directory() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let (d, _) = DataDir::open(t.path(), 8).unwrap_or_else(|e| panic!("{e}"));
            d.db()
                .insert(FORMAT_KEY, &99u16.to_be_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            d.db().flush().unwrap_or_else(|e| panic!("{e}"));
        }
        match DataDir::open(t.path(), 8) {
            Err(DataDirError::Format { expected, .. }) => assert_eq!(expected, DIR_FORMAT),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a database of another format"),
        }
        match DataDir::create_empty(t.path(), 8) {
            Err(DataDirError::NotEmpty { .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("restore would write over a database"),
        }
    }
}
