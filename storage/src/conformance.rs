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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_behind_its_snapshot_is_restored_at_open() {
    use openraft::storage::RaftStateMachine;
    use rackd_raft::cmd::{Command, Request};
    use rackd_raft::state::{State, StateSnapshot, STATE_FORMAT_VERSION};
    use rackd_raft::typ::{SnapshotMeta, StoredMembership};

    let td = TempDir::new().unwrap();
    let mut state = State::default();
    let r = state.apply(&Request {
        time_ms: 1,
        actor: "t".into(),
        idempotency_key: None,
        cmd: Command::CreateLocation(rackd_types::CreateLocation {
            name: "dc9".into(),
            description: String::new(),
            discovery: false,
        }),
    });
    assert!(r.0.is_ok());
    let data = serde_json::to_vec(&StateSnapshot {
        format_version: STATE_FORMAT_VERSION,
        state,
    })
    .unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(openraft::testing::log_id::<TypeConfig>(1, 1, 10)),
        last_membership: StoredMembership::default(),
    };
    {
        let (_log, mut sm) = crate::open(td.path()).await.unwrap();
        sm.install_snapshot(&meta, std::io::Cursor::new(data))
            .await
            .unwrap();
        assert!(sm.read().state.location_by_name("dc9").is_some());
    }
    // Simulate a crash that lost the (unsynced) state-machine writes but kept the snapshot.
    {
        let db = crate::open_db(&td.path().join("db")).unwrap();
        let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
        db.delete_range_cf(data, [0u8].as_slice(), [0xffu8; 9].as_slice())
            .unwrap();
        let meta_cf = db.cf_handle(crate::CF_SM_META).unwrap();
        db.delete_cf(meta_cf, b"last_applied").unwrap();
        db.flush_wal(true).unwrap();
    }
    let (_log, sm) = crate::open(td.path()).await.unwrap();
    let a = sm.read();
    assert_eq!(a.last_applied.map(|l| l.index()), Some(10));
    assert!(
        a.state.location_by_name("dc9").is_some(),
        "state restored from the snapshot"
    );
}
