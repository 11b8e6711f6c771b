//! `[streams]`: how this node runs stream jobs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{invalid, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// The directory `file` sources and sinks name their paths in (relative paths only);
    /// empty = `<node.data_dir>/stream-files`. Made 0700 when the node creates it.
    pub files_dir: PathBuf,
    /// Largest body of `POST /v1/streams/{id}/records` (413 beyond).
    pub max_body_bytes: usize,
    /// Largest single record from any source; a longer MQTT message, Redis entry or file line
    /// is counted `malformed` and skipped.
    pub max_record_bytes: usize,
    /// Batches of records a runner holds before the `http` source answers 429 (and the other
    /// sources stop reading): the bound between the source and the pipeline.
    pub queue_batches: usize,
    /// Results of a `results` sink kept per job when the job does not say (`max_results`).
    pub max_results: u32,
    /// A runner that fails more often than this within `window_secs` makes its job `failed`.
    pub max_restarts: u32,
    pub window_secs: u64,
    /// Where an `http` sink may POST: networks (`10.0.0.0/8`, `127.0.0.1/32`) and
    /// `host:port` pairs, checked on the address connected to. Empty (the default) allows
    /// none.
    pub http_sink_allow: Vec<String>,
    /// A checkpoint up to this size goes into the Raft log with the job's report; a larger
    /// one is kept by hash on this node and copied to up to two others before its reference
    /// is committed (0 = every checkpoint by hash).
    pub inline_checkpoint_bytes: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            files_dir: PathBuf::new(),
            max_body_bytes: 8 * 1024 * 1024,
            max_record_bytes: 1024 * 1024,
            queue_batches: 64,
            max_results: 10_000,
            max_restarts: 5,
            window_secs: 60,
            http_sink_allow: Vec::new(),
            inline_checkpoint_bytes: 256 * 1024,
        }
    }
}

impl StreamsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=256 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "streams.max_body_bytes",
                self.max_body_bytes.to_string(),
                "1024 to 268435456",
            ));
        }
        if !(16..=self.max_body_bytes).contains(&self.max_record_bytes) {
            return Err(invalid(
                "streams.max_record_bytes",
                self.max_record_bytes.to_string(),
                "16 to streams.max_body_bytes",
            ));
        }
        if !(1..=65_536).contains(&self.queue_batches) {
            return Err(invalid(
                "streams.queue_batches",
                self.queue_batches.to_string(),
                "1 to 65536",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_results) {
            return Err(invalid(
                "streams.max_results",
                self.max_results.to_string(),
                "1 to 1000000",
            ));
        }
        if self.window_secs == 0 {
            return Err(invalid("streams.window_secs", "0", "at least 1"));
        }
        if self.inline_checkpoint_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "streams.inline_checkpoint_bytes",
                self.inline_checkpoint_bytes.to_string(),
                "0 to 16777216 (larger checkpoints are kept by hash, off the log)",
            ));
        }
        if let Err(e) = crate::allow::parse(&self.http_sink_allow) {
            return Err(invalid(
                "streams.http_sink_allow",
                e,
                "networks (10.0.0.0/8) and host:port pairs",
            ));
        }
        Ok(())
    }

    /// Where file sources and sinks live on this node.
    pub fn files_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        if self.files_dir.as_os_str().is_empty() {
            data_dir.join("stream-files")
        } else {
            self.files_dir.clone()
        }
    }
}
