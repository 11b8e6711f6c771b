//! Where a stream checkpoint's bytes live: in the Raft entry when small, by hash when large.
//!
//! A checkpoint up to `streams.inline_checkpoint_bytes` goes into the job's `StreamReport`
//! as it is. A larger one is stored on this node ([`edgerun_raft::CheckpointStore`], flushed)
//! and copied to up to [`COPIES`] other nodes that are up, each checking the SHA-256 before it
//! stores and flushes; only then is a [`ByHash`] reference proposed in its place. So a
//! committed reference names nodes that hold the bytes durably: losing the runner's node
//! leaves a copy for the job's next runner, which fetches it from a holder and checks the
//! hash again. If no other node takes the copy (all down, cut off), the checkpoint is not
//! proposed and is tried again at the next interval, as when there is no leader.
//!
//! The reference is told apart from the runner's own format by its leading version (both
//! start with a `u16`): runner format 1 is the state itself, 2 is a reference.
//!
//! The runner drops its own node's earlier copies as soon as a checkpoint commits; every
//! node also sweeps its store against the state every few seconds: a job's copies older than its committed
//! checkpoint go, except the one the committed reference names; copies of a job that no longer
//! exists go after [`ORPHAN_AFTER_MS`] (a node that applies the job's creation late must not
//! lose a copy sent to it meanwhile).

use std::time::Duration;

use edgerun_model::{NodeId, StreamId};
use edgerun_raft::checkpoints::sha256;
use serde::{Deserialize, Serialize};

use crate::streams::runner::RunnerCtx;

/// Other nodes a large checkpoint is copied to.
pub const COPIES: usize = 2;
/// Runner format of a reference to a checkpoint kept by hash.
pub const BY_HASH_VERSION: u16 = 2;
/// How long a copy of an unknown job's checkpoint stays.
pub const ORPHAN_AFTER_MS: u64 = 10 * 60 * 1000;
/// Time for one copy to reach a node and be flushed there (a 16 MiB copy over a slow link).
const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the log holds for a checkpoint kept by hash.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ByHash {
    pub version: u16,
    pub sha256: [u8; 32],
    pub bytes: u64,
    /// Nodes that stored it before the reference was proposed.
    pub holders: Vec<NodeId>,
}

#[derive(Deserialize)]
struct Peek {
    version: u16,
}

fn short(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference in a checkpoint's log bytes, if it is one.
pub fn reference(data: &[u8]) -> Option<ByHash> {
    let v: Peek = edgerun_model::decode(data).ok()?;
    if v.version != BY_HASH_VERSION {
        return None;
    }
    edgerun_model::decode(data).ok()
}

/// The bytes to propose for checkpoint `seq` of `stream`: `data` itself when small, else a
/// reference once the bytes are kept here and on other nodes. `Ok(None)`: no other node took a
/// copy; try again later.
pub async fn keep(
    ctx: &RunnerCtx,
    stream: StreamId,
    seq: u64,
    data: Vec<u8>,
) -> Result<Option<(Vec<u8>, &'static str)>, String> {
    if data.len() <= ctx.inline_checkpoint_bytes {
        return Ok(Some((data, "log")));
    }
    let hash = sha256(&data);
    ctx.checkpoints
        .put(stream, seq, &hash, &data, crate::now_ms())
        .await
        .map_err(|e| format!("keeping checkpoint {seq} on this node: {e}"))?;
    let me = ctx.raft.id;
    // Up nodes first, then the rest (a node marked down may still answer).
    let mut peers: Vec<(bool, NodeId, String)> = ctx.raft.view.read(|s| {
        s.nodes
            .values()
            .filter(|n| n.id != me)
            .map(|n| (!n.up, n.id, n.rpc.clone()))
            .collect()
    });
    peers.sort();
    let mut holders = vec![me];
    let mut errors = Vec::new();
    for chunk in peers.chunks(COPIES) {
        let mut sends = tokio::task::JoinSet::new();
        for (_, id, rpc) in chunk {
            let (raft, data, id, rpc) = (ctx.raft.clone(), data.clone(), *id, rpc.clone());
            sends.spawn(async move {
                let r = raft
                    .peers
                    .put_checkpoint(&rpc, stream, seq, hash, data, COPY_TIMEOUT)
                    .await;
                (id, r)
            });
        }
        while let Some(done) = sends.join_next().await {
            match done {
                Ok((id, Ok(Ok(())))) => holders.push(id),
                Ok((id, Ok(Err(e)))) => errors.push(format!("node {id}: {e}")),
                Ok((id, Err(e))) => errors.push(format!("node {id}: {e}")),
                Err(e) => errors.push(format!("a copy failed: {e}")),
            }
        }
        if holders.len() > COPIES {
            break;
        }
    }
    if holders.len() == 1 && !peers.is_empty() {
        tracing::warn!(
            stream,
            seq,
            bytes = data.len(),
            errors = %errors.join("; "),
            "no other node took a copy of the checkpoint; it is not committed yet"
        );
        return Ok(None);
    }
    let r = ByHash {
        version: BY_HASH_VERSION,
        sha256: hash,
        bytes: data.len() as u64,
        holders,
    };
    edgerun_model::encode(&r)
        .map(|b| Some((b, "by_hash")))
        .map_err(|e| e.to_string())
}

/// The checkpoint's own bytes from what the log holds: itself, or fetched by its reference
/// (this node's store first, then each holder) and checked against the hash.
pub async fn load(
    ctx: &RunnerCtx,
    stream: StreamId,
    seq: u64,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let Some(r) = reference(data) else {
        return Ok(data.to_vec());
    };
    let what = format!(
        "checkpoint {seq} ({} bytes, sha256 {}…, on nodes {:?})",
        r.bytes,
        short(&r.sha256),
        r.holders
    );
    let mut errors = Vec::new();
    match ctx.checkpoints.get(stream, &r.sha256) {
        Ok(Some(d)) => return Ok(d),
        Ok(None) => {}
        Err(e) => errors.push(format!("this node: {e}")),
    }
    for h in r.holders.iter().filter(|h| **h != ctx.raft.id) {
        let rpc = ctx
            .raft
            .view
            .read(|s| s.nodes.get(h).map(|n| n.rpc.clone()));
        let Some(rpc) = rpc else {
            errors.push(format!("node {h}: no longer in the cluster"));
            continue;
        };
        match ctx
            .raft
            .peers
            .fetch_checkpoint(&rpc, stream, r.sha256, COPY_TIMEOUT)
            .await
        {
            Ok(Ok(Some(d))) if sha256(&d) == r.sha256 => {
                tracing::info!(
                    stream,
                    seq,
                    from = h,
                    bytes = d.len(),
                    "checkpoint fetched by hash"
                );
                return Ok(d);
            }
            Ok(Ok(Some(_))) => errors.push(format!("node {h}: bytes do not match the hash")),
            Ok(Ok(None)) => errors.push(format!("node {h}: does not have it")),
            Ok(Err(e)) => errors.push(format!("node {h}: {e}")),
            Err(e) => errors.push(format!("node {h}: {e}")),
        }
    }
    Err(format!("{what} could not be read: {}", errors.join("; ")))
}

/// Checkpoint `seq` of `stream` is committed: this node's copies of its earlier ones go.
pub fn committed(ctx: &RunnerCtx, stream: StreamId, seq: u64) {
    for k in ctx.checkpoints.keys_of(stream) {
        if k.seq < seq {
            ctx.checkpoints.remove(&k);
        }
    }
}

/// Remove this node's copies no committed checkpoint needs (see the module's text).
pub fn sweep(node: &edgerun_raft::RaftNode, store: &edgerun_raft::CheckpointStore) {
    let keys = store.keys();
    if keys.is_empty() {
        return;
    }
    let now = crate::now_ms();
    let mut removed = 0;
    for k in keys {
        let keep = node.view.read(|s| match s.streams.get(k.stream) {
            None => now.saturating_sub(k.stored_ms) < ORPHAN_AFTER_MS,
            Some(j) => match &j.checkpoint {
                None => true,
                Some(c) => {
                    k.seq > c.seq || reference(&c.data).is_some_and(|r| r.sha256 == k.sha256)
                }
            },
        });
        if !keep {
            store.remove(&k);
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::debug!(removed, "swept stream checkpoints no job needs");
    }
}
