//! Stream checkpoints too big for the Raft log, kept by hash (tree `stream_checkpoints`).
//!
//! A runner whose checkpoint passes `streams.inline_checkpoint_bytes` stores it here, sends
//! it to other nodes (`AppRequest::PutCheckpoint`, each checks the hash before it stores),
//! and proposes only a reference: the hash, the size and the nodes that hold it. The next
//! runner of the job, wherever it is placed, reads it from this node's store or fetches it
//! from a holder (`AppRequest::FetchCheckpoint`) and checks the hash again.
//!
//! Key: stream id (8 bytes) · checkpoint seq (8) · SHA-256 (32), big-endian, so one job's
//! checkpoints are one ordered range. Value: when it was stored (ms, 8 bytes) · the bytes.
//! Every write is flushed before it is answered: a committed reference never points at a
//! checkpoint a crash lost on the nodes it names.

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
    tree: sled::Tree,
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
        db.open_tree("stream_checkpoints")
            .map(|tree| CheckpointStore { tree, flusher })
            .map_err(StoreError::db("opening the stream checkpoints tree"))
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
        let mut v = Vec::with_capacity(8 + data.len());
        v.extend_from_slice(&now_ms.to_be_bytes());
        v.extend_from_slice(data);
        self.tree
            .insert(key(stream, seq, hash), v)
            .map_err(StoreError::db(format!(
                "storing checkpoint {seq} of stream job {stream}"
            )))?;
        self.flusher.flush().await.map_err(StoreError::db(format!(
            "flushing checkpoint {seq} of stream job {stream}"
        )))
    }

    /// The checkpoint of `stream` with this hash, checked against it (a stored copy that no
    /// longer matches is reported, never returned).
    pub fn get(&self, stream: u64, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        for kv in self.tree.scan_prefix(stream.to_be_bytes()) {
            let (k, v) = kv.map_err(StoreError::db(format!(
                "reading the checkpoints of stream job {stream}"
            )))?;
            if k.get(16..48) != Some(&hash[..]) {
                continue;
            }
            let data = v.get(8..).unwrap_or_default();
            if &sha256(data) != hash {
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
        self.tree
            .iter()
            .filter_map(|kv| kv.ok())
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
        let _ = self.tree.remove(key(k.stream, k.seq, &k.sha256));
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
        let mut bad = 5u64.to_be_bytes().to_vec();
        bad.extend_from_slice(&data[1..]);
        let _ = store.tree.insert(key(1, 1, &h), bad);
        assert!(matches!(store.get(1, &h), Err(StoreError::Corrupt { .. })));
        store.remove(&keys[0]);
        assert_eq!(store.keys().len(), 1);
    }
}
