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

/// An encoded snapshot of a state holding one location per name.
fn snapshot_of_locations(names: impl Iterator<Item = String>, description: &str) -> Vec<u8> {
    use rackd_raft::cmd::{Command, Request};
    use rackd_raft::state::{State, StateSnapshot, STATE_FORMAT_VERSION};
    let mut state = State::default();
    for name in names {
        let r = state.apply(&Request {
            time_ms: 1,
            actor: "t".into(),
            idempotency_key: None,
            cmd: Command::CreateLocation(rackd_types::payload::CreateLocation {
                name,
                description: description.to_string(),
                discovery: false,
            }),
        });
        assert!(r.0.is_ok());
    }
    serde_json::to_vec(&StateSnapshot {
        format_version: STATE_FORMAT_VERSION,
        state,
    })
    .unwrap()
}

fn snapshot_meta(index: u64) -> rackd_raft::typ::SnapshotMeta {
    rackd_raft::typ::SnapshotMeta {
        last_log_id: Some(openraft::testing::log_id::<TypeConfig>(1, 1, index)),
        last_membership: rackd_raft::typ::StoredMembership::default(),
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

    let td = TempDir::new().unwrap();
    let data = snapshot_of_locations(std::iter::once("dc9".to_string()), "");
    let meta = snapshot_meta(10);
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

/// A format-1 directory holding the review's discovery-then-delete history (R2): format 1
/// answered the 2 h discovery retry from its record, so it ended with `db1` (id 4) alone and a
/// task on it. Its log (blank entry at 0, then the history), its `last_applied`, a snapshot
/// file, and the rows format 1 stored (no images, no tasks).
fn format_1_directory(td: &TempDir) -> u64 {
    use openraft::entry::RaftEntry;
    {
        let (_log, _sm) = crate::open(td.path()).await_blocking().unwrap();
    }
    let history = rackd_raft::state::rules::format1_discovery_history();
    let last = history.len() as u64;
    {
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let logs = db.cf_handle(crate::CF_LOGS).unwrap();
        let log_id = |i| openraft::testing::log_id::<TypeConfig>(1, 1, i);
        db.put_cf(
            logs,
            0u64.to_be_bytes(),
            rackd_raft::codec::encode(&rackd_raft::typ::Entry::new_blank(log_id(0))),
        )
        .unwrap();
        for (i, req) in (1..).zip(history) {
            let e = rackd_raft::typ::Entry::new_normal(log_id(i), req);
            db.put_cf(logs, i.to_be_bytes(), rackd_raft::codec::encode(&e))
                .unwrap();
        }
        let sm_meta = db.cf_handle(crate::CF_SM_META).unwrap();
        db.put_cf(
            sm_meta,
            b"last_applied",
            rackd_raft::codec::encode(&Some(log_id(last))),
        )
        .unwrap();
    }
    {
        // The rows format 1 stored for this history: written by the format-1 code itself
        // (commit 0d7a370, `State::apply` then `all_rows`, without images and tasks), not
        // derived from today's code.
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("testdata/format1_discovery_rows.json")).unwrap();
        for r in rows {
            let hex = r["key"].as_str().unwrap();
            let mut key = vec![r["table"].as_u64().unwrap() as u8];
            key.extend(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()),
            );
            db.put_cf(data, key, r["value"].as_str().unwrap()).unwrap();
        }
        let meta = db.cf_handle(crate::CF_RAFT_META).unwrap();
        db.put_cf(meta, b"format_version", 1u32.to_be_bytes())
            .unwrap();
    }
    std::fs::write(
        td.path().join("snapshots/00000000000000000005-0.snap"),
        b"old",
    )
    .unwrap();
    let (db, found) = crate::open_db_any(&td.path().join("db")).unwrap();
    assert_eq!(found, 1);
    for t in [
        rackd_raft::state::tables::IMAGES,
        rackd_raft::state::tables::TASKS,
    ] {
        assert_eq!(rows_of(&db, t), 0, "format 1 wrote no rows of table {t}");
    }
    last
}

/// Helper: block on an async open from a sync fn inside a multi-thread test runtime.
trait AwaitBlocking {
    type Out;
    fn await_blocking(self) -> Self::Out;
}

impl<F: std::future::Future> AwaitBlocking for F {
    type Out = F::Output;
    fn await_blocking(self) -> F::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self))
    }
}

/// Rows of state table `t` in `sm_data`.
fn rows_of(db: &rocksdb::DB, t: u8) -> usize {
    let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
    db.iterator_cf(
        data,
        rocksdb::IteratorMode::From(&[t], rocksdb::Direction::Forward),
    )
    .map(|r| r.unwrap())
    .take_while(|(k, _)| k.first() == Some(&t))
    .count()
}

fn machine_row(id: u64) -> Vec<u8> {
    let mut k = vec![rackd_raft::state::tables::MACHINES];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// R2: the migration keeps what format 1 acknowledged (machine ids and all) and rebuilds the
/// images and tasks it never stored, by replaying the log under format 1's rules. Replayed
/// under today's rules the retry would create a machine and the last delete would remove db1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_is_migrated_to_exactly_what_format_1_acknowledged() {
    use rackd_raft::state::ApplyRules;
    let td = TempDir::new().unwrap();
    let last = format_1_directory(&td);
    let (log, sm) = crate::open(td.path()).await.unwrap();
    {
        let a = sm.read();
        let hosts: Vec<(u64, String)> = a
            .state
            .machines
            .iter()
            .map(|(id, m)| (*id, m.machine.hostname.clone()))
            .collect();
        assert_eq!(hosts, [(4, "db1".to_string())]);
        assert_eq!(a.state.tasks.get(&7).map(|t| t.machine_id), Some(4));
        assert_eq!(a.state.images.len(), 1);
        assert_eq!(a.state.meta.next_id, 8);
        assert_eq!(
            a.state.meta.rules,
            ApplyRules::Format1,
            "entries after the migration are decided by format 1's rules until AdoptRules"
        );
        assert_eq!(
            a.last_applied.map(|l| l.index()),
            Some(last),
            "nothing re-applied"
        );
    }
    drop((log, sm));
    assert_eq!(
        std::fs::read_dir(td.path().join("snapshots"))
            .unwrap()
            .count(),
        0,
        "snapshots of a possibly incomplete state are dropped"
    );
    let (_, found) = crate::open_db_any(&td.path().join("db")).unwrap();
    assert_eq!(found, crate::DISK_FORMAT_VERSION);
    // Reopening the migrated directory loads the same rows.
    let (_log, sm) = crate::open(td.path()).await.unwrap();
    assert_eq!(sm.read().state.tasks.len(), 1);
}

/// When the replay does not give back a table format 1 stored (a rule change that is not
/// versioned decided an entry otherwise), the directory is refused with the way out, the
/// difference is named without row values, and nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_whose_replay_differs_is_refused_and_left_as_it_was() {
    let td = TempDir::new().unwrap();
    format_1_directory(&td);
    let tampered = {
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
        let mut row: serde_json::Value =
            serde_json::from_slice(&db.get_cf(data, machine_row(4)).unwrap().unwrap()).unwrap();
        row["machine"]["hostname"] = "db1-renamed-secretly".into();
        let v = serde_json::to_vec(&row).unwrap();
        db.put_cf(data, machine_row(4), &v).unwrap();
        v
    };
    match crate::open(td.path()).await {
        Err(e @ crate::OpenError::V1Diverges { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("machines row 4"), "{msg}");
            assert!(msg.contains("machine.hostname"), "{msg}");
            assert!(!msg.contains("renamed-secretly"), "no row values: {msg}");
            assert!(msg.contains("rackd members remove"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("migrated a format-1 directory whose replay differs"),
    }
    let (db, found) = crate::open_db_any(&td.path().join("db")).unwrap();
    assert_eq!(found, 1, "still format 1");
    let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
    assert_eq!(db.get_cf(data, machine_row(4)).unwrap(), Some(tampered));
    assert_eq!(rows_of(&db, rackd_raft::state::tables::TASKS), 0);
    assert_eq!(
        std::fs::read_dir(td.path().join("snapshots"))
            .unwrap()
            .count(),
        1,
        "snapshot kept"
    );
}

/// A format-1 directory whose log was compacted cannot be rebuilt: refused, with the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_with_a_compacted_log_is_refused() {
    let td = TempDir::new().unwrap();
    format_1_directory(&td);
    {
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let meta = db.cf_handle(crate::CF_RAFT_META).unwrap();
        let purged = openraft::testing::log_id::<TypeConfig>(1, 1, 40);
        db.put_cf(meta, b"last_purged", rackd_raft::codec::encode(&purged))
            .unwrap();
    }
    match crate::open(td.path()).await {
        Err(e @ crate::OpenError::UnrecoverableV1 { purged: 40, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("rackd members remove"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a compacted format-1 directory"),
    }
}

/// R8: a format-1 follower that installed a snapshot and stopped before openraft purged the
/// log behind it has no `last_purged`, but its log does not start at index 0: that is
/// compacted too, refused with the way out before anything is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_log_that_does_not_start_at_zero_counts_as_compacted() {
    let td = TempDir::new().unwrap();
    {
        let (_log, _sm) = crate::open(td.path()).await.unwrap();
    }
    let row = [2u8, 0, 0, 0, 0, 0, 0, 0, 1];
    {
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let logs = db.cf_handle(crate::CF_LOGS).unwrap();
        for i in 100..105u64 {
            db.put_cf(logs, i.to_be_bytes(), b"entry").unwrap();
        }
        let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
        db.put_cf(data, row, b"{}").unwrap();
        let meta = db.cf_handle(crate::CF_RAFT_META).unwrap();
        db.put_cf(meta, b"format_version", 1u32.to_be_bytes())
            .unwrap();
    }
    match crate::open(td.path()).await {
        Err(e @ crate::OpenError::UnrecoverableV1 { purged: 99, .. }) => {
            assert!(e.to_string().contains("rackd members remove"), "{e}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a format-1 directory whose log starts at 100"),
    }
    let (db, found) = crate::open_db_any(&td.path().join("db")).unwrap();
    assert_eq!(found, 1, "still format 1");
    let data = db.cf_handle(crate::CF_SM_DATA).unwrap();
    assert!(db.get_cf(data, row).unwrap().is_some(), "nothing deleted");
    drop(db);

    // An empty log with an applied state machine was compacted as well.
    let td = TempDir::new().unwrap();
    {
        let (_log, _sm) = crate::open(td.path()).await.unwrap();
    }
    {
        let (db, _) = crate::open_db_any(&td.path().join("db")).unwrap();
        let sm_meta = db.cf_handle(crate::CF_SM_META).unwrap();
        let applied = openraft::testing::log_id::<TypeConfig>(1, 1, 30);
        db.put_cf(
            sm_meta,
            b"last_applied",
            rackd_raft::codec::encode(&applied),
        )
        .unwrap();
        let meta = db.cf_handle(crate::CF_RAFT_META).unwrap();
        db.put_cf(meta, b"format_version", 1u32.to_be_bytes())
            .unwrap();
    }
    assert!(matches!(
        crate::open(td.path()).await,
        Err(crate::OpenError::UnrecoverableV1 { purged: 30, .. })
    ));
}

/// Building, installing and serving snapshots at the same time never fails and never leaves
/// an older snapshot as the newest file (one owner of the snapshot files; F5 in the review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshot_build_install_and_serve_do_not_race() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    let td = TempDir::new().unwrap();
    let (_log, sm) = crate::open(td.path()).await.unwrap();
    let data = snapshot_of_locations((0..2000).map(|i| format!("dc{i}")), &"x".repeat(200));
    let mut installed = 0;
    for round in 1..=25u64 {
        let index = round * 100;
        let meta = snapshot_meta(index);
        let (mut b, mut i, mut g) = (sm.clone(), sm.clone(), sm.clone());
        let build = tokio::spawn(async move {
            let mut builder = b.get_snapshot_builder().await;
            builder.build_snapshot().await.map(|s| s.meta.last_log_id)
        });
        let d = data.clone();
        let install =
            tokio::spawn(async move { i.install_snapshot(&meta, std::io::Cursor::new(d)).await });
        let serve =
            tokio::spawn(async move { g.get_current_snapshot().await.map(|s| s.is_some()) });
        build.await.unwrap().expect("build");
        install.await.unwrap().expect("install");
        let served = serve.await.unwrap().expect("serve");
        assert!(served || round == 1);
        installed = index;
        let newest = sm
            .clone()
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot")
            .meta
            .last_log_id
            .map(|l| l.index());
        assert!(
            newest >= Some(installed),
            "round {round}: newest snapshot {newest:?} is older than the installed {installed}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(td.path().join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .collect();
    assert_eq!(files.len(), 1, "only the newest snapshot file is kept");
    assert_eq!(sm.read().last_applied.map(|l| l.index()), Some(installed));
}

/// A batch whose WAL sync fails is never published: readers keep the state of the last
/// durable batch (the `RACKD_FAULT_WAL_SYNC` hook fails the sync as a failing disk would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_sync_fails_is_never_visible() {
    use futures::stream;
    use openraft::storage::RaftStateMachine;

    let td = TempDir::new().unwrap();
    let fault = td.path().join("fail-wal-sync");
    // Read once when the store opens. Other tests opening stores meanwhile get the same path,
    // which only this test ever creates.
    std::env::set_var(crate::FAULT_WAL_SYNC_ENV, &fault);
    let opened = crate::open(td.path()).await;
    std::env::remove_var(crate::FAULT_WAL_SYNC_ENV);
    let (_log, mut sm) = opened.unwrap();
    sm.apply(stream::iter([Ok((location_entry(1, "durable"), None))]))
        .await
        .unwrap();
    assert_eq!(location_names(&sm), ["durable"]);

    std::fs::write(&fault, b"").unwrap();
    let r = sm
        .apply(stream::iter([Ok((location_entry(2, "not-synced"), None))]))
        .await;
    let e = r.expect_err("the sync failed, so apply fails");
    assert!(e.to_string().contains("injected fsync failure"), "{e}");
    assert_eq!(
        location_names(&sm),
        ["durable"],
        "published before its sync"
    );
    assert_eq!(sm.read().last_applied.map(|l| l.index), Some(1));
}

/// Log entry `index` creating location `name`.
fn location_entry(index: u64, name: &str) -> rackd_raft::typ::Entry {
    use openraft::entry::RaftEntry;
    use rackd_raft::cmd::{Command, Request};
    rackd_raft::typ::Entry::new_normal(
        openraft::testing::log_id::<TypeConfig>(1, 1, index),
        Request {
            time_ms: index,
            actor: "t".into(),
            idempotency_key: None,
            cmd: Command::CreateLocation(rackd_types::payload::CreateLocation {
                name: name.into(),
                description: String::new(),
                discovery: false,
            }),
        },
    )
}

fn location_names(sm: &StateMachineStore) -> Vec<String> {
    sm.read()
        .state
        .locations
        .values()
        .map(|l| l.name.clone())
        .collect()
}

const PANIC_CHILD_ENV: &str = "RACKD_TEST_APPLY_PANIC_DIR";
/// The signal `std::process::abort` raises (Linux).
const SIGABRT: i32 = 6;

/// A panic in apply aborts the process (a node must not go on serving with its state machine
/// worker gone), and the batch it was applying is neither published nor persisted. The
/// scenario runs in a child process (this test binary, this test alone); the parent checks
/// how it died and what is on disk.
#[test]
fn a_panic_in_apply_aborts_the_process_and_persists_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    if let Some(dir) = std::env::var_os(PANIC_CHILD_ENV) {
        rt().block_on(async move {
            use futures::stream;
            use openraft::storage::RaftStateMachine;
            let (_log, mut sm) = crate::open(std::path::Path::new(&dir)).await.unwrap();
            sm.apply(stream::iter([Ok((location_entry(1, "durable"), None))]))
                .await
                .unwrap();
            crate::sm_store::PANIC_IN_APPLY.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = sm
                .apply(stream::iter([Ok((
                    location_entry(2, "half-applied"),
                    None,
                ))]))
                .await;
        });
        // Reaching this line means the process did not abort.
        std::process::exit(0);
    }
    let td = TempDir::new().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conformance::a_panic_in_apply_aborts_the_process_and_persists_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD_ENV, td.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "the child was not aborted ({:?}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("state machine apply panicked"),
        "says why:\n{stderr}"
    );
    rt().block_on(async {
        let (_log, sm) = crate::open(td.path()).await.unwrap();
        assert_eq!(location_names(&sm), ["durable"]);
        assert_eq!(sm.read().last_applied.map(|l| l.index), Some(1));
    });
}
