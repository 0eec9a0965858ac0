//! rackd-storage: one RocksDB per node holding the Raft log and the state machine.
//!
//! Column families (big-endian keys):
//! - `logs`: `u64 index` → codec(Entry)
//! - `raft_meta`: `vote`, `last_purged`, `committed`, `format_version`, `node_id`
//! - `sm_data`: `[table id] ++ key` → JSON row of [`rackd_raft::state::State`]
//! - `sm_meta`: `last_applied`, `last_membership`
//!
//! Durability rules: log appends are WAL-synced before openraft is told they are flushed
//! ([`log_store`]); the vote is synced before `save_vote` returns; each apply batch writes its
//! rows together with `last_applied` in one `WriteBatch`, made durable (WAL fsync shared with
//! the log's group commit) before its results are answered or read ([`sm_store`]).
//!
//! This crate must not depend on the HTTP API or on the node runtime.

pub mod log_store;
mod migrate;
pub mod sm_store;
pub mod stats;

#[cfg(test)]
mod conformance;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use log_store::{LogStore, WalSync, FAULT_WAL_SYNC_ENV};
pub use sm_store::StateMachineStore;

/// On-disk layout version. Bump with a migration when the layout or an encoding changes.
///
/// - 1 (2026-11-22): initial layout described in the module docs.
/// - 2 (2026-11-29): same layout; every state table is persisted (format 1 never wrote the
///   `images` and `tasks` rows, which were lost at every restart). A format-1 directory whose
///   log was never compacted keeps its tables and gets the two missing ones rebuilt by
///   replaying the log under format 1's rules, if that replay gives exactly the tables it
///   stored ([`migrate`]); otherwise it is refused with recovery instructions.
pub const DISK_FORMAT_VERSION: u32 = 2;

pub const CF_LOGS: &str = "logs";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_SM_DATA: &str = "sm_data";
pub const CF_SM_META: &str = "sm_meta";

/// The way out of a format-1 directory that cannot be migrated.
const RECOVER_V1: &str = "Recover: if the cluster has other members, remove this one (`rackd \
    members remove ID`), move the data directory aside and join again with a new join token \
    (the leader sends a full snapshot); if this was the only node, list images and tasks with \
    the previous rackd (`GET /v1/images`, `GET /v1/tasks`), then bootstrap a new data \
    directory and recreate them";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open RocksDB at {path}")]
    Rocks {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("data directory {path} has on-disk format {found}, this rackd understands {expected}")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error(
        "data directory {path} was written by rackd with on-disk format 1, which kept images \
         and tasks only in memory (they were lost at every restart), and its Raft log was \
         compacted up to index {purged}, so they cannot be rebuilt from it. {}",
        RECOVER_V1
    )]
    UnrecoverableV1 { path: String, purged: u64 },
    #[error(
        "data directory {path} was written by rackd with on-disk format 1, which kept images \
         and tasks only in memory. Replaying its Raft log under format 1's rules to rebuild \
         them does not give the tables format 1 stored ({difference}), so they cannot be \
         rebuilt faithfully; nothing was changed. {}",
        RECOVER_V1
    )]
    V1Diverges { path: String, difference: String },
    #[error("data directory {path} holds a corrupt format marker")]
    BadMarker { path: String },
    #[error("cannot load the state machine from {path}: {message}")]
    Load { path: String, message: String },
    #[error("cannot prepare the snapshot directory {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Open (or create) the node's database with all column families and check its format version.
/// A format-1 directory is refused here; [`open`] migrates it.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, OpenError> {
    let (db, found) = open_db_any(dir)?;
    if found != DISK_FORMAT_VERSION {
        return Err(OpenError::Version {
            path: dir.display().to_string(),
            found,
            expected: DISK_FORMAT_VERSION,
        });
    }
    Ok(db)
}

fn rocks_err(path: &str) -> impl Fn(rocksdb::Error) -> OpenError + '_ {
    move |source| OpenError::Rocks {
        path: path.to_string(),
        source,
    }
}

/// Open the database and return it with the format it holds (a new one gets the current one).
fn open_db_any(dir: &Path) -> Result<(Arc<DB>, u32), OpenError> {
    let path = dir.display().to_string();
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    let cfs = [CF_LOGS, CF_RAFT_META, CF_SM_DATA, CF_SM_META]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(rocks_err(&path))?;
    let cf = db.cf_handle(CF_RAFT_META).expect("created above");
    let found = match db.get_cf(cf, b"format_version").map_err(rocks_err(&path))? {
        None => {
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(true);
            db.put_cf_opt(cf, b"format_version", DISK_FORMAT_VERSION.to_be_bytes(), &w)
                .map_err(rocks_err(&path))?;
            DISK_FORMAT_VERSION
        }
        Some(v) => u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| OpenError::BadMarker { path: path.clone() })?,
        ),
    };
    Ok((Arc::new(db), found))
}

/// Open both stores on `dir` (`dir/db` for RocksDB, `dir/snapshots` for snapshot files),
/// migrating an older on-disk format where that is safe.
pub async fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let db_dir = dir.join("db");
    let snapshot_dir = dir.join("snapshots");
    let (db, found) = open_db_any(&db_dir)?;
    match found {
        DISK_FORMAT_VERSION => {}
        1 => migrate::migrate_v1(&db, &db_dir, &snapshot_dir)?,
        _ => {
            return Err(OpenError::Version {
                path: db_dir.display().to_string(),
                found,
                expected: DISK_FORMAT_VERSION,
            })
        }
    }
    let log = LogStore::new(db.clone());
    let sm = StateMachineStore::open(db, snapshot_dir, log.wal_sync())?;
    Ok((log, sm))
}

/// Seed an empty data directory for node `node_id` with a state (snapshot bytes, as
/// [`sm_store::encode_state`] makes them) standing at `meta`'s log id and membership: what a
/// follower holds after it installed a snapshot and purged its log up to it, so Raft starts
/// from there (a restore from a backup). A directory that holds a database is refused.
pub async fn seed(
    dir: &Path,
    node_id: u64,
    state: Vec<u8>,
    meta: rackd_raft::typ::SnapshotMeta,
) -> std::io::Result<()> {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    if dir.join("db").exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} holds a database already", dir.display()),
        ));
    }
    let last = meta
        .last_log_id
        .ok_or_else(|| io_err("a seed needs the log id its state stands at"))?;
    let (mut log, mut sm) = open(dir).await.map_err(io_err)?;
    log.bind_node_id(node_id)?
        .map_err(|other| io_err(format!("database bound to node {other}")))?;
    sm.install_snapshot(&meta, std::io::Cursor::new(state))
        .await?;
    log.purge(last).await?;
    log.wal_sync().sync().await
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Test support.
#[doc(hidden)]
pub mod testing {
    pub use crate::migrate::make_v1;
}
