//! rackd-storage: one RocksDB per node holding the Raft log and the state machine.
//!
//! Column families (big-endian keys):
//! - `logs`: `u64 index` → codec(Entry)
//! - `raft_meta`: `vote`, `last_purged`, `committed`, `format_version`
//! - `sm_data`: `[table id] ++ key` → JSON row of [`rackd_raft::state::State`]
//! - `sm_meta`: `last_applied`, `last_membership`
//!
//! Durability rules: log appends are WAL-synced before openraft is told they are flushed
//! ([`log_store`]); the vote is synced before `save_vote` returns; each apply batch writes its
//! rows together with `last_applied` in one synced `WriteBatch` ([`sm_store`]).
//!
//! This crate must not depend on the HTTP API or on the node runtime.

pub mod log_store;
pub mod sm_store;

#[cfg(test)]
mod conformance;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use log_store::LogStore;
pub use sm_store::StateMachineStore;

/// On-disk layout version. Bump with a migration when the layout or an encoding changes.
///
/// - 1 (2026-11-22): initial layout described in the module docs.
pub const DISK_FORMAT_VERSION: u32 = 1;

pub const CF_LOGS: &str = "logs";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_SM_DATA: &str = "sm_data";
pub const CF_SM_META: &str = "sm_meta";

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
pub fn open_db(dir: &Path) -> Result<Arc<DB>, OpenError> {
    let path = dir.display().to_string();
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    let cfs = [CF_LOGS, CF_RAFT_META, CF_SM_DATA, CF_SM_META]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| OpenError::Rocks {
        path: path.clone(),
        source,
    })?;
    let cf = db.cf_handle(CF_RAFT_META).expect("created above");
    match db
        .get_cf(cf, b"format_version")
        .map_err(|source| OpenError::Rocks {
            path: path.clone(),
            source,
        })? {
        None => {
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(true);
            db.put_cf_opt(cf, b"format_version", DISK_FORMAT_VERSION.to_be_bytes(), &w)
                .map_err(|source| OpenError::Rocks {
                    path: path.clone(),
                    source,
                })?;
        }
        Some(v) => {
            let found = u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| OpenError::BadMarker { path: path.clone() })?,
            );
            if found != DISK_FORMAT_VERSION {
                return Err(OpenError::Version {
                    path,
                    found,
                    expected: DISK_FORMAT_VERSION,
                });
            }
        }
    }
    Ok(Arc::new(db))
}

/// Open both stores on `dir` (`dir/db` for RocksDB, `dir/snapshots` for snapshot files).
pub async fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let db = open_db(&dir.join("db"))?;
    let log = LogStore::new(db.clone());
    let sm = StateMachineStore::open(db, dir.join("snapshots"))?;
    Ok((log, sm))
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
