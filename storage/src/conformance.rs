//! openraft's storage conformance suite against the RocksDB log store and state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use rackd_raft::TypeConfig;
use tempfile::TempDir;

use crate::{LogStore, StateMachineStore};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let td = TempDir::new().expect("tempdir");
        let (log, sm) = crate::open(td.path()).await.expect("open stores");
        Ok((td, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder).await.expect("conformance suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_state_and_refuses_other_format() {
    let td = TempDir::new().unwrap();
    {
        let _ = crate::open(td.path()).await.unwrap();
    }
    // Reopen works.
    let _ = crate::open(td.path()).await.unwrap();
    // A different on-disk format version is refused, not guessed at.
    {
        let db = crate::open_db(&td.path().join("db")).unwrap();
        let cf = db.cf_handle(crate::CF_RAFT_META).unwrap();
        db.put_cf(cf, b"format_version", 99u32.to_be_bytes())
            .unwrap();
    }
    match crate::open(td.path()).await {
        Err(crate::OpenError::Version { found: 99, .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a format-99 database"),
    }
}
