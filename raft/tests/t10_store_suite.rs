#![allow(clippy::result_large_err)]
//! openraft's storage test suite against the log store (segment files, markers in sled) and
//! the state machine.

use edgerun_raft::{LogStore, StateMachineStore, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct FilesBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for FilesBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (data, _) =
            edgerun_raft::DataDir::open(dir.path(), 16).unwrap_or_else(|e| panic!("data dir: {e}"));
        let db = data.db();
        let log = LogStore::open(db, edgerun_raft::Flusher::new(db.clone()), &data.log_dir())
            .unwrap_or_else(|e| panic!("log store: {e}"));
        let sm = StateMachineStore::open(db, &data.snapshot_dir())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_the_log_store() -> Result<(), StorageError> {
    Suite::test_all(FilesBuilder)?;
    Ok(())
}
