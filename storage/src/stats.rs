//! The storage's own instruments (prometheus-client), registered by the node's `/metrics`:
//! WAL fsyncs (how long each takes, and how many waiting writes each one made durable: the
//! group commit's batching) and snapshot builds (duration, size of the last one).
//!
//! Layer: bottom of the storage crate; depends on prometheus-client only.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The process's storage instruments.
#[derive(Debug)]
pub struct StorageStats {
    /// Seconds per WAL fsync.
    pub wal_sync: Histogram,
    /// Log appends and state-machine batches made durable (several per fsync).
    pub wal_sync_requests: Counter,
    /// Seconds per snapshot build (encode and write).
    pub snapshot_build: Histogram,
    /// Bytes of the last snapshot built or installed.
    pub snapshot_bytes: Gauge,
}

/// The storage instruments of this process.
pub fn stats() -> &'static StorageStats {
    static S: OnceLock<StorageStats> = OnceLock::new();
    S.get_or_init(|| StorageStats {
        // 50 µs to ~1.6 s.
        wal_sync: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        wal_sync_requests: Counter::default(),
        // 1 ms to ~65 s.
        snapshot_build: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        snapshot_bytes: Gauge::default(),
    })
}

impl StorageStats {
    /// Registers the instruments in `reg` (names under `storage_`).
    pub fn register(&self, reg: &mut Registry) {
        reg.register_with_unit(
            "storage_wal_sync_duration",
            "Time of each WAL fsync (log appends and applied batches share them)",
            Unit::Seconds,
            self.wal_sync.clone(),
        );
        reg.register(
            "storage_wal_sync_requests",
            "Writes made durable by WAL fsyncs (divide by the fsync count for the batching)",
            self.wal_sync_requests.clone(),
        );
        reg.register_with_unit(
            "storage_snapshot_build_duration",
            "Time to build a snapshot (encode and write its file)",
            Unit::Seconds,
            self.snapshot_build.clone(),
        );
        reg.register_with_unit(
            "storage_snapshot",
            "Size of the last snapshot this node built or installed",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
    }
}
