//! openraft's storage conformance suite, run against the sled store on a real temp directory.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use raftgate_store::{LogStore, StateMachineStore, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| {
            StorageError::from(openraft::StorageIOError::write_logs(
                openraft::AnyError::new(&e),
            ))
        })?;
        let (log, sm) = raftgate_store::open(dir.path()).map_err(|e| {
            StorageError::from(openraft::StorageIOError::write_logs(
                openraft::AnyError::new(&e),
            ))
        })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("sled store fails openraft's storage suite: {e}");
    }
}
