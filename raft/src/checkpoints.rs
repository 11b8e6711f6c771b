//! Stream checkpoints too big for the Raft log, kept by hash (tree `stream_checkpoints`).
//!
//! A runner whose checkpoint passes `streams.inline_checkpoint_bytes` stores it here, sends
//! it to other nodes (`AppRequest::PutCheckpoint`, each checks the hash before it stores),
//! and proposes only a reference: the hash, the size and the nodes that hold it. The next
//! runner of the job, wherever it is placed, reads it from this node's store or fetches it
//! from a holder (`AppRequest::FetchCheckpoint`) and checks the hash again.
//!
//! Key: stream id (8 bytes) · checkpoint seq (8) · SHA-256 (32), big-endian, so one job's
//! checkpoints are one ordered range. Two trees under that key: `stream_checkpoints` holds
//! when it was stored (ms, 8 bytes), `stream_checkpoint_bytes` the bytes, so that listing and
//! sweeping never read the bytes. Every write is flushed before it is answered: a committed
//! reference never points at a checkpoint a crash lost on the nodes it names.

use sha2::{Digest, Sha256};

use crate::store_error::StoreError;

/// One stored checkpoint's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointKey {
    pub stream: u64,
    pub seq: u64,
    pub sha256: [u8; 32],
    /// When this node stored it (ms since the epoch).
    pub stored_ms: u64,
}

#[derive(Clone)]
pub struct CheckpointStore {
    /// key → stored at (ms).
    tree: sled::Tree,
    /// key → the checkpoint's bytes.
    bytes: sled::Tree,
    flusher: crate::Flusher,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn key(stream: u64, seq: u64, hash: &[u8; 32]) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..8].copy_from_slice(&stream.to_be_bytes());
    k[8..16].copy_from_slice(&seq.to_be_bytes());
    k[16..].copy_from_slice(hash);
    k
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

impl CheckpointStore {
    pub fn open(db: &sled::Db, flusher: crate::Flusher) -> Result<CheckpointStore, StoreError> {
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(StoreError::db(format!("opening the tree {name}")))
        };
        Ok(CheckpointStore {
            tree: open("stream_checkpoints")?,
            bytes: open("stream_checkpoint_bytes")?,
            flusher,
        })
    }

    /// Store `data` as checkpoint `seq` of `stream` and flush; refused when `data` does not
    /// hash to `hash` (a damaged or confused sender).
    pub async fn put(
        &self,
        stream: u64,
        seq: u64,
        hash: &[u8; 32],
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if &sha256(data) != hash {
            return Err(StoreError::Corrupt {
                what: format!("checkpoint {seq} of stream job {stream}"),
                detail: "does not hash to the SHA-256 it came with".into(),
            });
        }
        let k = key(stream, seq, hash);
        let what = || format!("storing checkpoint {seq} of stream job {stream}");
        self.bytes.insert(k, data).map_err(StoreError::db(what()))?;
        self.tree
            .insert(k, &now_ms.to_be_bytes())
            .map_err(StoreError::db(what()))?;
        self.flusher.flush().await.map_err(StoreError::db(format!(
            "flushing checkpoint {seq} of stream job {stream}"
        )))
    }

    /// The checkpoint of `stream` with this hash, checked against it (a stored copy that no
    /// longer matches is reported, never returned).
    pub fn get(&self, stream: u64, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let what = || format!("reading the checkpoints of stream job {stream}");
        for kv in self.tree.scan_prefix(stream.to_be_bytes()) {
            let (k, _) = kv.map_err(StoreError::db(what()))?;
            if k.get(16..48) != Some(&hash[..]) {
                continue;
            }
            let Some(data) = self.bytes.get(&k).map_err(StoreError::db(what()))? else {
                continue;
            };
            if &sha256(&data) != hash {
                return Err(StoreError::Corrupt {
                    what: format!("a stored checkpoint of stream job {stream}"),
                    detail: "no longer hashes to its SHA-256 (damaged on disk)".into(),
                });
            }
            return Ok(Some(data.to_vec()));
        }
        Ok(None)
    }

    /// Every stored checkpoint's key.
    pub fn keys(&self) -> Vec<CheckpointKey> {
        self.keys_in(self.tree.iter())
    }

    /// The stored checkpoints of one job.
    pub fn keys_of(&self, stream: u64) -> Vec<CheckpointKey> {
        self.keys_in(self.tree.scan_prefix(stream.to_be_bytes()))
    }

    fn keys_in(&self, it: sled::Iter) -> Vec<CheckpointKey> {
        it.filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let sha256 = <[u8; 32]>::try_from(k.get(16..48)?).ok()?;
                Some(CheckpointKey {
                    stream: u64_at(&k, 0)?,
                    seq: u64_at(&k, 8)?,
                    sha256,
                    stored_ms: u64_at(&v, 0)?,
                })
            })
            .collect()
    }

    pub fn remove(&self, k: &CheckpointKey) {
        let k = key(k.stream, k.seq, &k.sha256);
        let _ = self.tree.remove(k);
        let _ = self.bytes.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stored_by_hash_checked_on_the_way_in_and_out() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = sled::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let store = CheckpointStore::open(&db, crate::Flusher::new(db.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let data = vec![7u8; 100_000];
        let h = sha256(&data);
        // A sender whose bytes do not match the hash is refused and nothing is stored.
        let wrong = store.put(1, 1, &h, &data[1..], 5).await;
        assert!(
            matches!(wrong, Err(StoreError::Corrupt { .. })),
            "{wrong:?}"
        );
        assert!(store.keys().is_empty());
        store
            .put(1, 1, &h, &data, 5)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let other = vec![8u8; 10];
        store
            .put(2, 3, &sha256(&other), &other, 6)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.get(1, &h).ok().flatten().as_deref(), Some(&data[..]));
        // Another job's checkpoint is not this one's, even with the same hash.
        assert_eq!(store.get(2, &h).ok().flatten(), None);
        let mut keys = store.keys();
        keys.sort_by_key(|k| k.stream);
        assert_eq!(
            keys.iter()
                .map(|k| (k.stream, k.seq, k.stored_ms))
                .collect::<Vec<_>>(),
            vec![(1, 1, 5), (2, 3, 6)]
        );
        // A stored copy damaged on disk is reported, not handed out.
        let _ = store.bytes.insert(key(1, 1, &h), &data[1..]);
        assert!(matches!(store.get(1, &h), Err(StoreError::Corrupt { .. })));
        store.remove(&keys[0]);
        assert_eq!(store.keys().len(), 1);
    }
}
