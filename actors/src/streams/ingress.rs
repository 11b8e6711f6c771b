//! The `http` source's door: records POSTed to this node for a job that runs here are handed
//! to its runner through a bounded queue; the caller is answered once the runner has
//! committed a checkpoint that covers them (so an acknowledged record is never lost, even
//! when the node dies right after: the job resumes elsewhere from that checkpoint).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgerun_model::StreamId;
use edgerun_raft::IngestRefusal;
use tokio::sync::{mpsc, oneshot};

/// Records for a runner, and where to say that they are checkpointed.
pub struct Batch {
    pub body: Vec<u8>,
    /// The caller's id for the batch (a retry of a batch already taken is not taken again).
    pub batch_id: Option<String>,
    /// Answered with the number of records taken once they are in a committed checkpoint;
    /// dropped (an error for the caller) when the runner stops first.
    pub done: oneshot::Sender<u64>,
}

/// A runner's queue, with the epoch it runs at.
type Door = (u64, mpsc::Sender<Batch>);

/// Runners of this node that take records, by job.
#[derive(Default, Clone)]
pub struct Ingress {
    runners: Arc<Mutex<HashMap<StreamId, Door>>>,
}

impl Ingress {
    /// A runner for `id` at `epoch` takes batches from the returned queue (replacing any
    /// earlier one of the job).
    pub(crate) fn register(
        &self,
        id: StreamId,
        epoch: u64,
        capacity: usize,
    ) -> mpsc::Receiver<Batch> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut m) = self.runners.lock() {
            m.insert(id, (epoch, tx));
        }
        rx
    }

    /// Forget the runner of `id` if it is still the one of `epoch`.
    pub(crate) fn unregister(&self, id: StreamId, epoch: u64) {
        if let Ok(mut m) = self.runners.lock() {
            if m.get(&id).is_some_and(|(e, _)| *e == epoch) {
                m.remove(&id);
            }
        }
    }

    /// Hand `body` to the job's runner here and wait (at most `wait`) until it is
    /// checkpointed.
    pub async fn offer(
        &self,
        id: StreamId,
        body: Vec<u8>,
        batch_id: Option<String>,
        wait: Duration,
    ) -> Result<u64, IngestRefusal> {
        let tx = self
            .runners
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|(_, tx)| tx.clone()))
            .ok_or(IngestRefusal::NotHere(id))?;
        let (done, answer) = oneshot::channel();
        match tx.try_send(Batch {
            body,
            batch_id,
            done,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(crate::metrics_names::STREAM_INGEST_REFUSED, "job" => id.to_string())
                    .increment(1);
                return Err(IngestRefusal::Full {
                    retry_after_ms: 1000,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(IngestRefusal::NotHere(id)),
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(_)) => Err(IngestRefusal::Failed(format!(
                "stream job {id}'s runner stopped before the records were checkpointed; send them again"
            ))),
            Err(_) => Err(IngestRefusal::Failed(format!(
                "stream job {id} did not checkpoint the records within {} ms; they may or may not be taken (send them again with the same contents: windows count them again)",
                wait.as_millis()
            ))),
        }
    }
}
