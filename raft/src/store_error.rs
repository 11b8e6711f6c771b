//! [`StoreError`]: what went wrong in the node's own files and trees (snapshot files, the
//! results and outbox trees), and on which file or record.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to a stream (no file name to give).
    #[error("{what}: {source}")]
    Stream {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// sled failed while doing `what`.
    #[error("{what}: {source}")]
    Db {
        what: String,
        #[source]
        source: sled::Error,
    },
    /// A stored record does not decode or names something it may not (damage, or another
    /// format).
    #[error("{what} {detail}")]
    Corrupt { what: String, detail: String },
    /// A value could not be encoded.
    #[error("encoding {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}

impl StoreError {
    /// `map_err(StoreError::io(path))`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `map_err(StoreError::db("reading ..."))`.
    pub fn db(what: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Db { what, source }
    }
}

/// For the callers that still carry errors as text (openraft's storage adaptors, `start`).
impl From<StoreError> for String {
    fn from(e: StoreError) -> String {
        e.to_string()
    }
}
