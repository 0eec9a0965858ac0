//! The state machine store: [`rackd_raft::state::State`] in memory, its rows in `sm_data`, and
//! `last_applied`/`last_membership` in `sm_meta`, always written in one `WriteBatch` that is
//! durable (WAL fsynced through the log's group-commit thread) before any of its results is
//! answered or read: entries are applied to an O(1) copy of the state, and the copy is
//! published only after the fsync, so a replica never goes back in time after a power loss.
//!
//! Snapshots are the whole state serialized ([`StateSnapshot`], versioned) and kept as one file
//! under `snapshots/` (the newest replaces older ones). One mutex owns every snapshot-file
//! operation (build, install, serve), and all of them run on blocking threads: the state is
//! cloned under the read lock in O(1) (persistent tables) and encoded outside it. Installing
//! writes and fsyncs the file first, then rewrites `sm_data` in one synced batch, so a crash in
//! between is repaired at open (`recover_from_snapshot`).
//!
//! Must not depend on the node runtime or the HTTP API.

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rackd_raft::cmd::Response;
use rackd_raft::codec;
use rackd_raft::state::{State, StateSnapshot, STATE_FORMAT_VERSION};
use rackd_raft::typ::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use rackd_raft::TypeConfig;
use rocksdb::{WriteBatch, DB};

use crate::log_store::WalSync;
use crate::{io_err, OpenError, CF_SM_DATA, CF_SM_META};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"last_membership";

/// The state plus what it covers; one lock so readers always see a consistent pair.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

struct Inner {
    db: Arc<DB>,
    applied: RwLock<Applied>,
    snapshot_dir: PathBuf,
    snapshot_seq: AtomicU64,
    /// Held by every operation on the files in `snapshot_dir` (they run on blocking threads).
    files: Mutex<()>,
    wal: WalSync,
    /// Notified after every applied batch (used by readers waiting for an index).
    applied_tx: tokio::sync::watch::Sender<u64>,
}

/// Cheap to clone: all clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

/// The persisted state machine: every row of `sm_data` (indexes rebuilt) with the log position
/// and membership it covers. Used at open and by the format-1 migration.
pub(crate) fn load_applied(db: &DB) -> Result<Applied, String> {
    let cf_data = db.cf_handle(CF_SM_DATA).ok_or("missing cf sm_data")?;
    let cf_meta = db.cf_handle(CF_SM_META).ok_or("missing cf sm_meta")?;
    let mut state = State::default();
    for item in db.iterator_cf(cf_data, rocksdb::IteratorMode::Start) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let Some((&table, key)) = k.split_first() else {
            return Err("empty state row key".into());
        };
        state
            .load_row(table, key, &v)
            .map_err(|e| format!("table {table}: {e}"))?;
    }
    state.rebuild_indexes();
    let meta = |key: &[u8]| db.get_cf(cf_meta, key).map_err(|e| e.to_string());
    let last_applied: Option<LogId> = match meta(KEY_LAST_APPLIED)? {
        None => None,
        Some(b) => codec::decode(&b).map_err(|e| e.to_string())?,
    };
    let membership: StoredMembership = match meta(KEY_MEMBERSHIP)? {
        None => StoredMembership::default(),
        Some(b) => codec::decode(&b).map_err(|e| e.to_string())?,
    };
    Ok(Applied {
        state,
        last_applied,
        membership,
    })
}

pub(crate) fn sm_key(table: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(table);
    k.extend_from_slice(key);
    k
}

impl StateMachineStore {
    pub fn open(db: Arc<DB>, snapshot_dir: PathBuf, wal: WalSync) -> Result<Self, OpenError> {
        let load = |m: String| OpenError::Load {
            path: snapshot_dir.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| OpenError::Io {
            path: snapshot_dir.display().to_string(),
            source,
        })?;
        let Applied {
            state,
            last_applied,
            membership,
        } = load_applied(&db).map_err(load)?;
        let (applied_tx, _) =
            tokio::sync::watch::channel(last_applied.as_ref().map(|l| l.index()).unwrap_or(0));
        let store = Self {
            inner: Arc::new(Inner {
                db,
                applied: RwLock::new(Applied {
                    state,
                    last_applied,
                    membership,
                }),
                snapshot_dir,
                snapshot_seq: AtomicU64::new(0),
                files: Mutex::new(()),
                wal,
                applied_tx,
            }),
        };
        store.recover_from_snapshot().map_err(|e| OpenError::Load {
            path: store.inner.snapshot_dir.display().to_string(),
            message: format!("recover from snapshot: {e}"),
        })?;
        Ok(store)
    }

    /// If the newest snapshot file covers more than the persisted state (unsynced apply batches
    /// lost in a crash after the log was purged behind that snapshot), restore from it.
    fn recover_from_snapshot(&self) -> io::Result<()> {
        let _files = self.lock_files();
        let Some((meta, data)) = self.read_newest_snapshot_locked()? else {
            return Ok(());
        };
        let persisted = self.read().last_applied.map(|l| l.index());
        let snap = meta.last_log_id.map(|l| l.index());
        if snap <= persisted {
            return Ok(());
        }
        tracing::warn!(
            ?persisted,
            ?snap,
            "state machine behind its snapshot; restoring from the snapshot"
        );
        let state = self.write_state_from_snapshot(&meta, &data)?;
        self.replace_state(state, &meta);
        Ok(())
    }

    /// Swap in a state restored from a snapshot (already persisted) and publish its index.
    fn replace_state(&self, state: State, meta: &SnapshotMeta) {
        let idx = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        {
            let mut a = self.write_lock();
            a.state = state;
            a.last_applied = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        self.inner.applied_tx.send_replace(idx);
    }

    /// Decode a snapshot and rewrite `sm_data`/`sm_meta` from it in one synced batch.
    fn write_state_from_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<State> {
        let state = decode_snapshot(data)?;
        self.write_state(meta, state)
    }

    fn write_state(&self, meta: &SnapshotMeta, mut state: State) -> io::Result<State> {
        let rows = state.all_rows();
        let mut batch = WriteBatch::default();
        let cf = self
            .inner
            .db
            .cf_handle(CF_SM_DATA)
            .expect("cf checked at open");
        batch.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 9].as_slice());
        self.rows_to_batch(&mut batch, rows);
        self.meta_to_batch(&mut batch, &meta.last_log_id, &meta.last_membership);
        self.write_sync(batch)?;
        Ok(state)
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `.snap` files, oldest first (names sort by index, then sequence).
    fn snapshot_files_locked(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.inner.snapshot_dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Call with the file lock held.
    fn read_newest_snapshot_locked(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let Some(p) = self.snapshot_files_locked()?.pop() else {
            return Ok(None);
        };
        let buf = std::fs::read(&p)?;
        if buf.len() < 4 {
            return Err(io_err(format!("snapshot file {} truncated", p.display())));
        }
        let hlen = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if buf.len() < 4 + hlen {
            return Err(io_err(format!("snapshot file {} truncated", p.display())));
        }
        let meta: SnapshotMeta = codec::decode(&buf[4..4 + hlen]).map_err(io_err)?;
        Ok(Some((meta, buf[4 + hlen..].to_vec())))
    }

    /// Read access to the applied state (for API reads). Hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.inner.applied.read().unwrap_or_else(|_| poisoned())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.inner.applied.write().unwrap_or_else(|_| poisoned())
    }

    /// The last index the state machine applied (0 before any). Published after the state
    /// it names, so a state read after this call is at least this new.
    pub fn applied_index(&self) -> u64 {
        *self.inner.applied_tx.borrow()
    }

    /// Wait until the state machine has applied `index` (or the timeout passes).
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.inner.applied_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn write_sync(&self, batch: WriteBatch) -> io::Result<()> {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(true);
        self.inner.db.write_opt(batch, &w).map_err(io_err)
    }

    fn rows_to_batch(&self, batch: &mut WriteBatch, rows: Vec<rackd_raft::state::RowChange>) {
        let cf = self
            .inner
            .db
            .cf_handle(CF_SM_DATA)
            .expect("cf checked at open");
        for r in rows {
            let k = sm_key(r.table, &r.key);
            match r.value {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
    }

    fn meta_to_batch(&self, batch: &mut WriteBatch, last: &Option<LogId>, m: &StoredMembership) {
        let cf = self
            .inner
            .db
            .cf_handle(CF_SM_META)
            .expect("cf checked at open");
        batch.put_cf(cf, KEY_LAST_APPLIED, codec::encode(last));
        batch.put_cf(cf, KEY_MEMBERSHIP, codec::encode(m));
    }

    fn snapshot_path(&self, meta: &SnapshotMeta) -> PathBuf {
        let idx = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        self.inner
            .snapshot_dir
            .join(format!("{idx:020}-{seq:010}.snap"))
    }

    /// Persist a snapshot file (header + data), durably (file and directory fsynced), and remove
    /// older ones. Call with the file lock held.
    fn save_snapshot_file_locked(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let header = codec::encode(meta);
        let mut buf = Vec::with_capacity(4 + header.len() + data.len());
        buf.extend_from_slice(&(header.len() as u32).to_be_bytes());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(data);
        let path = self.snapshot_path(meta);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &buf)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        crate::stats::stats().snapshot_bytes.set(buf.len() as i64);
        std::fs::File::open(&self.inner.snapshot_dir)?.sync_all()?;
        // Keep only the newest file. Under the lock no other writer has a `.tmp` in flight, so
        // any `.tmp` left is from a crash. A newer file (an install that finished first) stays.
        let mut files = self.snapshot_files_locked()?;
        files.pop();
        for p in files {
            let _ = std::fs::remove_file(p);
        }
        for e in std::fs::read_dir(&self.inner.snapshot_dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn encode_state(state: &State) -> io::Result<Vec<u8>> {
        #[derive(serde::Serialize)]
        struct Borrowed<'a> {
            format_version: u32,
            state: &'a State,
        }
        serde_json::to_vec(&Borrowed {
            format_version: STATE_FORMAT_VERSION,
            state,
        })
        .map_err(io_err)
    }
}

/// A thread panicked while holding the state lock, so the in-memory state may be half-written.
/// Serving it (DHCP, reads, the executor) would be wrong, so the process exits and restarts
/// from its durable state instead.
fn poisoned() -> ! {
    tracing::error!("state machine lock poisoned; exiting to restart from disk");
    eprintln!("rackd: state machine lock poisoned; exiting to restart from disk");
    std::process::abort()
}

/// Test hook: the next `State::apply` panics (the abort path has no other trigger).
#[cfg(test)]
pub(crate) static PANIC_IN_APPLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `State::apply` panicked: the batch was never persisted or published; restart from disk.
fn apply_panicked() -> ! {
    tracing::error!("state machine apply panicked; exiting to restart from disk");
    eprintln!("rackd: state machine apply panicked; exiting to restart from disk");
    std::process::abort()
}

/// A state encoded as a snapshot is (the bytes a backup carries).
pub fn encode_state(state: &State) -> io::Result<Vec<u8>> {
    StateMachineStore::encode_state(state)
}

/// Decode snapshot bytes into a state with its indexes rebuilt; refuses another format.
pub fn decode_state(data: &[u8]) -> io::Result<State> {
    decode_snapshot(data)
}

fn decode_snapshot(data: &[u8]) -> io::Result<State> {
    let snap: StateSnapshot = serde_json::from_slice(data)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot decode: {e}")))?;
    if snap.format_version != STATE_FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot format {} unsupported", snap.format_version),
        ));
    }
    let mut state = snap.state;
    state.rebuild_indexes();
    Ok(state)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // O(1) under the lock (persistent tables); encoding and file I/O on a blocking thread.
        let (state, meta) = {
            let a = self.read();
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.membership.clone(),
            };
            (a.state.clone(), meta)
        };
        let this = self.clone();
        let m2 = meta.clone();
        let started = std::time::Instant::now();
        let data = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let data = Self::encode_state(&state)?;
            let _files = this.lock_files();
            this.save_snapshot_file_locked(&m2, &data)?;
            Ok(data)
        })
        .await
        .map_err(io_err)??;
        crate::stats::stats()
            .snapshot_build
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            last = ?meta.last_log_id,
            bytes = data.len(),
            ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut items = Vec::new();
        while let Some(item) = entries.try_next().await? {
            items.push(item);
        }
        if items.is_empty() {
            return Ok(());
        }
        let mut responses = Vec::with_capacity(items.len());
        // Apply to a copy (O(1): persistent tables and indexes), outside the lock: readers keep
        // the published state until the new one is durable. Only the state machine worker
        // mutates the state (apply and install run one at a time), so the copy cannot race.
        let mut next = {
            let a = self.read();
            Applied {
                state: a.state.clone(),
                last_applied: a.last_applied,
                membership: a.membership.clone(),
            }
        };
        // A panic in apply leaves `next` half-applied; it is never published or persisted,
        // but the state machine worker would be gone while the process kept serving a frozen
        // replica, so the process exits and restarts from its durable state instead.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (entry, responder) in items {
                let resp = match &entry.payload {
                    EntryPayload::Blank => Response(Ok(rackd_raft::cmd::Applied::Done)),
                    EntryPayload::Normal(req) => {
                        #[cfg(test)]
                        if PANIC_IN_APPLY.load(Ordering::SeqCst) {
                            panic!("injected panic in apply");
                        }
                        next.state.apply(req)
                    }
                    EntryPayload::Membership(m) => {
                        next.membership = StoredMembership::new(Some(entry.log_id()), m.clone());
                        Response(Ok(rackd_raft::cmd::Applied::Done))
                    }
                };
                next.last_applied = Some(entry.log_id());
                if let Some(r) = responder {
                    responses.push((r, resp));
                }
            }
        }));
        if applied.is_err() {
            apply_panicked();
        }
        let mut batch = WriteBatch::default();
        let rows = next.state.drain_changes();
        self.rows_to_batch(&mut batch, rows);
        self.meta_to_batch(&mut batch, &next.last_applied, &next.membership);
        let last_index = next.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
        // Durable before anything is answered, waited on or read: the RocksDB write on a
        // blocking thread, then one fsync shared with the log's group commit. Only then is the
        // new state published, so nothing that reads the local replica (stale reads, DHCP,
        // the executor, auth) can see a state a power loss would take back.
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.write(batch))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        self.inner.wal.sync().await?;
        let old = std::mem::replace(&mut *self.write_lock(), next);
        drop(old); // outside the lock
        self.inner.applied_tx.send_replace(last_index);
        for (r, resp) in responses {
            r.send(resp);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let this = self.clone();
        let m2 = meta.clone();
        let state = tokio::task::spawn_blocking(move || -> io::Result<State> {
            let state = decode_snapshot(&data)?;
            // File first (fsynced), then the tables: a crash in between leaves a file ahead of
            // the tables, which `recover_from_snapshot` restores at open.
            let _files = this.lock_files();
            this.save_snapshot_file_locked(&m2, &data)?;
            this.write_state(&m2, state)
        })
        .await
        .map_err(io_err)??;
        self.replace_state(state, meta);
        tracing::info!(last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let this = self.clone();
        let newest = tokio::task::spawn_blocking(move || {
            let _files = this.lock_files();
            this.read_newest_snapshot_locked()
        })
        .await
        .map_err(io_err)??;
        Ok(newest.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Cursor::new(data),
        }))
    }
}
