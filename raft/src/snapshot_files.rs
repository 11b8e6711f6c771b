//! The state machine's snapshots as plain files beside the database.
//!
//! ```text
//! <data>/snapshot/current             bincode (SnapshotMeta, data file name): the commit point
//! <data>/snapshot/snapshot-T-I-N.bin  the snapshot itself (bincode SnapshotFile)
//! ```
//!
//! A new snapshot is written to a temporary file, synced and renamed; then `current` is
//! replaced the same way and the directory synced; only then are older data files removed.
//! A crash at any point leaves the previous snapshot whole. Snapshots used to live in sled
//! (tree `snapshot`, key `current`); [`SnapshotDir::adopt_sled`] moves one found there.
//!
//! Why files: a snapshot of 100k tasks is ~45 MB. As a sled value it was built in memory,
//! copied into sled, copied again into sled's write path and kept in sled's page cache; the
//! copies pushed a node's peak heap past 250 MB and the allocator kept that. Written through
//! a buffered file it costs no more memory than the buffer.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::store_error::StoreError;
use crate::SnapshotMeta;

const CURRENT: &str = "current";
const TMP_PREFIX: &str = ".partial-";
const DATA_PREFIX: &str = "snapshot-";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// The commit record: which data file holds the current snapshot.
#[derive(Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    file: String,
}

/// A snapshot written to a temporary file, not yet current.
pub struct Written {
    path: PathBuf,
    pub bytes: u64,
}

impl Written {
    /// Remove a written snapshot that will not be committed.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The written data, to read back before it is committed.
    pub fn open(&self) -> Result<File, StoreError> {
        File::open(&self.path).map_err(StoreError::io(&self.path))
    }
}

#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// The snapshot directory of a data directory.
    pub fn of_data_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("snapshot")
    }

    /// Open (create) the directory and clear what an interrupted write left.
    pub fn open(dir: &Path) -> Result<SnapshotDir, StoreError> {
        crate::private::create_dir(dir).map_err(StoreError::io(dir))?;
        let s = SnapshotDir {
            dir: dir.to_path_buf(),
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(s)
    }

    /// Open without creating or cleaning anything (doctor, restore checks).
    pub fn at(dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn tmp_path(&self) -> PathBuf {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
    }

    /// Write a new snapshot's data through `fill` into a synced temporary file.
    pub fn write_data(
        &self,
        fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), StoreError>,
    ) -> Result<Written, StoreError> {
        let path = self.tmp_path();
        let res = (|| -> Result<u64, StoreError> {
            let f = crate::private::create(&path).map_err(StoreError::io(&path))?;
            {
                let mut w = BufWriter::with_capacity(256 * 1024, &f);
                fill(&mut w)?;
                w.flush().map_err(StoreError::io(&path))?;
            }
            f.sync_all().map_err(StoreError::io(&path))?;
            let len = f.metadata().map_err(StoreError::io(&path))?.len();
            Ok(len)
        })();
        match res {
            Ok(bytes) => Ok(Written { path, bytes }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Make a written snapshot the current one (durably), then drop the older ones.
    pub fn commit(&self, meta: &SnapshotMeta, w: Written) -> Result<PathBuf, StoreError> {
        let name = format!(
            "{DATA_PREFIX}{}-{}-{}.bin",
            meta.last_log_id.map_or(0, |l| l.leader_id.term),
            meta.last_log_id.map_or(0, |l| l.index),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        );
        let data = self.dir.join(&name);
        let res = (|| -> Result<(), StoreError> {
            std::fs::rename(&w.path, &data).map_err(StoreError::io(&data))?;
            let rec = edgerun_model::encode(&Current {
                meta: meta.clone(),
                file: name.clone(),
            })
            .map_err(|e| StoreError::Encode {
                what: "the snapshot's commit record",
                detail: e.to_string(),
            })?;
            let tmp = self.tmp_path();
            let write = (|| -> std::io::Result<()> {
                let mut f = crate::private::create(&tmp)?;
                f.write_all(&rec)?;
                f.sync_all()?;
                std::fs::rename(&tmp, self.dir.join(CURRENT))?;
                Ok(())
            })();
            if let Err(e) = write {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::io(&self.dir.join(CURRENT))(e));
            }
            sync_dir(&self.dir)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&w.path);
            // `current` still names the previous file, which is untouched.
            if self.current_name().as_deref() != Some(name.as_str()) {
                let _ = std::fs::remove_file(&data);
            }
            return Err(e);
        }
        // Older snapshots are garbage now.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with(DATA_PREFIX) && n != name {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(data)
    }

    fn read_current(&self) -> Result<Option<Current>, StoreError> {
        let p = self.dir.join(CURRENT);
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&p)(e)),
        };
        let c: Current = edgerun_model::decode(&raw).map_err(|e| StoreError::Corrupt {
            what: p.display().to_string(),
            detail: format!("does not decode: {e}"),
        })?;
        if c.file.contains('/') || !c.file.starts_with(DATA_PREFIX) {
            return Err(StoreError::Corrupt {
                what: p.display().to_string(),
                detail: format!("names {:?}, not a snapshot file", c.file),
            });
        }
        Ok(Some(c))
    }

    fn current_name(&self) -> Option<String> {
        self.read_current().ok().flatten().map(|c| c.file)
    }

    /// The current snapshot's meta and data file, if there is one.
    pub fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StoreError> {
        Ok(self.read_current()?.map(|c| {
            let p = self.dir.join(&c.file);
            (c.meta, p)
        }))
    }

    /// Open the current snapshot's data for reading.
    pub fn open_current(&self) -> Result<Option<(SnapshotMeta, File, u64)>, StoreError> {
        let Some((meta, path)) = self.current()? else {
            return Ok(None);
        };
        let f = File::open(&path).map_err(StoreError::io(&path))?;
        let len = f.metadata().map_err(StoreError::io(&path))?.len();
        Ok(Some((meta, f, len)))
    }

    /// An anonymous file in the directory to receive a snapshot into (gone when dropped).
    pub fn receiving_file(&self) -> Result<File, StoreError> {
        tempfile_in(&self.dir)
    }

    /// A snapshot kept in sled by an earlier edgerun (tree `snapshot`, key `current`): move it
    /// here (written and committed before it is removed from sled).
    pub fn adopt_sled(&self, db: &sled::Db) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Stored {
            meta: SnapshotMeta,
            data: Vec<u8>,
        }
        let tree = db
            .open_tree("snapshot")
            .map_err(StoreError::db("opening the tree snapshot"))?;
        let Some(raw) = tree
            .get(b"current")
            .map_err(StoreError::db("reading the snapshot kept in the database"))?
        else {
            return Ok(());
        };
        if self.read_current()?.is_none() {
            let stored: Stored = edgerun_model::decode(&raw).map_err(|e| StoreError::Corrupt {
                what: "the snapshot kept in the database".into(),
                detail: format!("does not decode: {e}"),
            })?;
            let w = self.write_data(|f| {
                f.write_all(&stored.data)
                    .map_err(|source| StoreError::Stream {
                        what: "writing the snapshot",
                        source,
                    })
            })?;
            self.commit(&stored.meta, w)?;
            tracing::info!(
                bytes = stored.data.len(),
                dir = %self.dir.display(),
                "moved the snapshot out of the database into its own file"
            );
        }
        tree.remove(b"current")
            .map_err(StoreError::db("removing the snapshot kept in the database"))?;
        db.flush()
            .map_err(StoreError::db("flushing the database"))?;
        Ok(())
    }
}

/// Copy `src` (from its current position) into `w`.
pub fn copy_into(src: &mut impl Read, w: &mut impl Write) -> Result<u64, StoreError> {
    std::io::copy(src, w).map_err(|source| StoreError::Stream {
        what: "copying the snapshot",
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

/// An unnamed file in `dir`: O_TMPFILE where the filesystem has it, else a named one removed
/// at once (what `tempfile` does, without the dependency at run time).
fn tempfile_in(dir: &Path) -> Result<File, StoreError> {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let p = dir.join(format!("{TMP_PREFIX}recv-{}-{n}", std::process::id()));
    let f = crate::private::create_new(&p).map_err(StoreError::io(&p))?;
    // Unlinked: the data lives as long as the handle.
    let _ = std::fs::remove_file(&p);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(source: std::io::Error) -> StoreError {
        StoreError::Stream {
            what: "a test write",
            source,
        }
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(2, 1),
                index,
            )),
            last_membership: Default::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    #[test]
    fn a_committed_snapshot_is_current_and_replaces_the_old_one() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = SnapshotDir::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.current().unwrap_or_else(|e| panic!("{e}")).is_none());
        for i in [5u64, 9] {
            let w = d
                .write_data(|f| f.write_all(format!("data {i}").as_bytes()).map_err(stream))
                .unwrap_or_else(|e| panic!("{e}"));
            d.commit(&meta(i), w).unwrap_or_else(|e| panic!("{e}"));
        }
        let (m, p) = d
            .current()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no current"));
        assert_eq!(m.snapshot_id, "s9");
        assert_eq!(std::fs::read_to_string(p).unwrap_or_default(), "data 9");
        let files: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(files.len(), 2, "current + one data file: {files:?}");
    }

    #[test]
    fn an_uncommitted_write_leaves_the_current_one_and_is_cleared_at_open() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = SnapshotDir::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let w = d
            .write_data(|f| f.write_all(b"old").map_err(stream))
            .unwrap_or_else(|e| panic!("{e}"));
        d.commit(&meta(3), w).unwrap_or_else(|e| panic!("{e}"));
        // A write that fails part way, and one never committed (a crash).
        let failed = d.write_data(|f| {
            f.write_all(b"half").map_err(stream)?;
            Err(stream(std::io::Error::other("disk full")))
        });
        assert!(failed.is_err());
        let _never = d
            .write_data(|f| f.write_all(b"new").map_err(stream))
            .unwrap_or_else(|e| panic!("{e}"));
        let again = SnapshotDir::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let (m, p) = again
            .current()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no current"));
        assert_eq!(m.snapshot_id, "s3");
        assert_eq!(std::fs::read(p).unwrap_or_default(), b"old");
        let partial = std::fs::read_dir(tmp.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .count();
        assert_eq!(partial, 0);
    }

    #[test]
    fn a_snapshot_kept_in_sled_by_an_earlier_edgerun_moves_into_a_file() {
        #[derive(Serialize)]
        struct Stored<'a> {
            meta: &'a SnapshotMeta,
            data: &'a [u8],
        }
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (d, _) = crate::DataDir::open(tmp.path(), 8).unwrap_or_else(|e| panic!("{e}"));
        let db = d.db();
        let old = edgerun_model::encode(&Stored {
            meta: &meta(7),
            data: b"state at 7",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        db.open_tree("snapshot")
            .and_then(|t| t.insert(b"current", old))
            .unwrap_or_else(|e| panic!("{e}"));
        let d = SnapshotDir::open(&tmp.path().join("snapshot")).unwrap_or_else(|e| panic!("{e}"));
        d.adopt_sled(db).unwrap_or_else(|e| panic!("{e}"));
        let (m, p) = d
            .current()
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no current"));
        assert_eq!(m.snapshot_id, "s7");
        assert_eq!(std::fs::read(p).unwrap_or_default(), b"state at 7");
        let left = db
            .open_tree("snapshot")
            .and_then(|t| t.get(b"current"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(left.is_none(), "removed from sled once the file is current");
        // Idempotent: nothing more to move.
        d.adopt_sled(db).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_damaged_commit_record_is_an_error_not_a_missing_snapshot() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = SnapshotDir::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(tmp.path().join(CURRENT), b"\x01garbage").unwrap_or_else(|e| panic!("{e}"));
        assert!(d.current().is_err());
    }
}
