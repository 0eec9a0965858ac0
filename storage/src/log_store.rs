//! The Raft log on RocksDB (`logs` + `raft_meta` column families).
//!
//! `append` writes the batch into RocksDB (so the entries are readable at once) and hands the
//! flush callback to a group-commit thread that syncs the WAL once for every callback queued
//! meanwhile: many appends share one fsync, and none is reported flushed before its fsync.
//! The state machine waits on the same thread ([`WalSync`]) before it exposes an applied batch,
//! so its syncs coalesce with the log's.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rackd_raft::codec;
use rackd_raft::typ::{Entry, LogId, Vote};
use rackd_raft::TypeConfig;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, DB};

use crate::{io_err, CF_LOGS, CF_RAFT_META};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_NODE_ID: &[u8] = b"node_id";

/// Fault hook for tests of a failing disk (issue 21 R4): when this variable names a file and
/// that file exists, every WAL sync fails as a failing fsync would. Read once at open; costs
/// one `stat` per group commit when set, nothing otherwise.
pub const FAULT_WAL_SYNC_ENV: &str = "RACKD_FAULT_WAL_SYNC";

/// One request to the group-commit thread: openraft's flush callback, or a waiter.
enum FlushReq {
    Raft(IOFlushed<TypeConfig>),
    Wait(tokio::sync::oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<FlushReq>,
}

/// A handle on the group-commit thread: [`WalSync::sync`] returns once every write made before
/// the call is durable (one fsync shared with concurrent log appends).
#[derive(Clone)]
pub struct WalSync {
    tx: mpsc::Sender<FlushReq>,
}

impl WalSync {
    pub async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(FlushReq::Wait(tx))
            .map_err(|_| io_err("WAL sync thread is gone"))?;
        rx.await
            .map_err(|_| io_err("WAL sync thread is gone"))?
            .map_err(|e| io_err(format!("WAL sync: {e}")))
    }
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        assert!(db.cf_handle(CF_LOGS).is_some() && db.cf_handle(CF_RAFT_META).is_some());
        let (tx, rx) = mpsc::channel::<FlushReq>();
        let fdb = Arc::downgrade(&db);
        let fault = std::env::var_os(FAULT_WAL_SYNC_ENV).map(std::path::PathBuf::from);
        std::thread::Builder::new()
            .name("rackd-wal-sync".into())
            .spawn(move || group_commit(fdb, rx, fault))
            .expect("spawn WAL sync thread");
        Self { db, flusher: tx }
    }

    /// Record this database's node id on first use (synced); later, `Err(stored)` when the
    /// caller claims another id than the one stored.
    pub fn bind_node_id(&self, id: u64) -> io::Result<Result<(), u64>> {
        match self.get_meta::<u64>(KEY_NODE_ID)? {
            Some(stored) if stored != id => Ok(Err(stored)),
            Some(_) => Ok(Ok(())),
            None => {
                self.put_meta(KEY_NODE_ID, &id, true)?;
                Ok(Ok(()))
            }
        }
    }

    /// The handle the state machine uses to make an applied batch durable.
    pub fn wal_sync(&self) -> WalSync {
        WalSync {
            tx: self.flusher.clone(),
        }
    }

    fn cf_logs(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_LOGS).expect("checked in new")
    }

    fn cf_meta(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_RAFT_META).expect("checked in new")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(self.cf_meta(), key).map_err(io_err)? {
            None => Ok(None),
            Some(b) => codec::decode(&b).map(Some).map_err(io_err),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T, sync: bool) -> io::Result<()> {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(sync);
        self.db
            .put_cf_opt(self.cf_meta(), key, codec::encode(v), &w)
            .map_err(io_err)
    }
}

/// Holds only a weak reference so the database closes when the last store handle is dropped.
fn group_commit(
    db: std::sync::Weak<DB>,
    rx: mpsc::Receiver<FlushReq>,
    fault: Option<std::path::PathBuf>,
) {
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let started = std::time::Instant::now();
        let res = match db.upgrade() {
            Some(_) if fault.as_ref().is_some_and(|f| f.exists()) => {
                Err(format!("injected fsync failure ({FAULT_WAL_SYNC_ENV})"))
            }
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("database closed before the WAL was synced".to_string()),
        };
        let stats = crate::stats::stats();
        stats.wal_sync.observe(started.elapsed().as_secs_f64());
        stats.wal_sync_requests.inc_by(pending.len() as u64);
        for req in pending {
            match req {
                FlushReq::Raft(cb) => {
                    cb.io_completed(res.clone().map_err(|e| io_err(format!("WAL sync: {e}"))))
                }
                FlushReq::Wait(tx) => {
                    let _ = tx.send(res.clone());
                }
            }
        }
    }
}

fn start_of<RB: RangeBounds<u64>>(r: &RB) -> u64 {
    match r.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x + 1,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = start_of(&range).to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf_logs(),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item.map_err(io_err)?;
            let idx = u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&idx) {
                break;
            }
            let e: Entry = codec::decode(&v).map_err(io_err)?;
            if e.index() != idx {
                return Err(io_err(format!(
                    "log entry at key {idx} claims index {}",
                    e.index()
                )));
            }
            out.push(e);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = match self
            .db
            .iterator_cf(self.cf_logs(), IteratorMode::End)
            .next()
        {
            None => None,
            Some(r) => {
                let (_, v) = r.map_err(io_err)?;
                let e: Entry = codec::decode(&v).map_err(io_err)?;
                Some(e.log_id())
            }
        };
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = last.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let db = self.db.clone();
        let bytes = codec::encode(vote);
        tokio::task::spawn_blocking(move || {
            let cf = db.cf_handle(CF_RAFT_META).expect("cf exists");
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(true);
            db.put_cf_opt(cf, KEY_VOTE, bytes, &w).map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    /// Not synced on its own: the state machine makes every applied batch durable before it
    /// exposes it (see `sm_store`), so a replica never serves a state older than one it served;
    /// this key only lets a restart re-apply sooner and is covered by the next WAL sync.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put_cf(self.cf_logs(), e.index().to_be_bytes(), codec::encode(&e));
        }
        // Written (readable) when this returns, on a blocking thread (a RocksDB write can
        // stall); durable when the group-commit thread has synced the WAL.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write(batch))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        self.flusher
            .send(FlushReq::Raft(callback))
            .map_err(|_| io_err("WAL sync thread is gone"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index() + 1).unwrap_or(0);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.db
                .delete_range_cf(this.cf_logs(), from.to_be_bytes(), u64::MAX.to_be_bytes())
                .map_err(io_err)?;
            // delete_range excludes the end key; remove it explicitly.
            this.db
                .delete_cf(this.cf_logs(), u64::MAX.to_be_bytes())
                .map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // A synced write and a range delete: off the runtime's threads.
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.put_meta(KEY_LAST_PURGED, &log_id, true)?;
            this.db
                .delete_range_cf(
                    this.cf_logs(),
                    0u64.to_be_bytes(),
                    (log_id.index() + 1).to_be_bytes(),
                )
                .map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }
}
