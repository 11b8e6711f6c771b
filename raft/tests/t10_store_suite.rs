#![allow(clippy::result_large_err)]
//! openraft's storage test suite against the sled log store and state machine.

use edgerun_raft::{LogStore, StateMachineStore, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let db = edgerun_raft::open_db(&dir.path().join("db"), 16)
            .unwrap_or_else(|e| panic!("open_db: {e}"));
        let log = LogStore::new(&db, edgerun_raft::Flusher::new(db.clone()))
            .unwrap_or_else(|e| panic!("log store: {e}"));
        let sm = StateMachineStore::open(&db, &dir.path().join("snapshot"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sled() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}
