//! Migration of an on-disk format 1 directory to format 2, without re-deciding its history.
//!
//! Format 1 applied images and tasks in memory but never wrote their rows, while
//! `last_applied` moved past them; every other table it did write. The migration keeps what
//! format 1 stored (it is what format 1 acknowledged), and rebuilds only the two missing tables
//! by replaying the log up to `last_applied` into a scratch state under format 1's apply rules
//! ([`ApplyRules::Format1`]). It first checks that the replay is faithful: every table format 1
//! stored must come out of the replay the same (row for row; journal texts and the bodies of
//! idempotency answers may differ, as their wording and encoding changed). If one does not, or
//! the log was compacted, it refuses with the way out before changing anything.
//!
//! The migrated state still applies under format 1's rules; the leader moves the cluster to
//! today's rules with `AdoptRules`, at one log index for every node.
//!
//! Must not depend on the node runtime or the HTTP API.

use std::collections::BTreeMap;
use std::path::Path;

use rackd_raft::codec;
use rackd_raft::state::{tables, ApplyRules, State, TABLES};
use rackd_raft::typ::{Entry, EntryPayload, LogId, StoredMembership};
use rocksdb::DB;

use crate::sm_store::{load_applied, sm_key, Applied};
use crate::{
    rocks_err, OpenError, CF_LOGS, CF_RAFT_META, CF_SM_DATA, CF_SM_META, DISK_FORMAT_VERSION,
};

/// The tables format 1 never wrote: rebuilt from the log.
const NOT_IN_FORMAT_1: [u8; 3] = [tables::IMAGES, tables::TASKS, tables::BLOBS];

/// Format 1 → 2; see the module docs.
pub(crate) fn migrate_v1(db: &DB, dir: &Path, snapshot_dir: &Path) -> Result<(), OpenError> {
    let path = dir.display().to_string();
    if let Some(purged) = v1_compacted_up_to(db, &path)? {
        return Err(OpenError::UnrecoverableV1 { path, purged });
    }
    let stored = load_stored(db, &path)?;
    let upto = stored.last_applied.map(|l| l.index());
    let replayed = replay(db, &path, upto, ApplyRules::Format1)?;
    if let Some(difference) = first_difference(&stored, &replayed) {
        return Err(OpenError::V1Diverges { path, difference });
    }
    tracing::warn!(
        dir = %path,
        applied = ?upto,
        "data directory has on-disk format 1 (images and tasks were not persisted); \
         rebuilt them by replaying the Raft log under format 1's rules, which gives exactly \
         the tables format 1 stored"
    );
    remove_snapshots(snapshot_dir)?;
    let data = db.cf_handle(CF_SM_DATA).expect("cf exists");
    let meta = db.cf_handle(CF_RAFT_META).expect("cf exists");
    let mut batch = rocksdb::WriteBatch::default();
    let mut rebuilt = replayed.state;
    for row in rebuilt.all_rows() {
        if NOT_IN_FORMAT_1.contains(&row.table) {
            if let Some(v) = row.value {
                batch.put_cf(data, sm_key(row.table, &row.key), v);
            }
        }
    }
    let mut kept = stored.state.meta;
    kept.rules = ApplyRules::Format1;
    batch.put_cf(
        data,
        sm_key(tables::META, b"meta"),
        serde_json::to_vec(&kept).expect("meta serializes"),
    );
    batch.put_cf(meta, b"format_version", DISK_FORMAT_VERSION.to_be_bytes());
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    db.write_opt(batch, &w).map_err(rocks_err(&path))
}

fn load_err(path: &str, what: &str, e: impl std::fmt::Display) -> OpenError {
    OpenError::Load {
        path: path.to_string(),
        message: format!("{what}: {e}"),
    }
}

fn get_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    path: &str,
    cf: &str,
    key: &[u8],
) -> Result<Option<T>, OpenError> {
    let cf = db.cf_handle(cf).expect("cf exists");
    match db.get_cf(cf, key).map_err(rocks_err(path))? {
        None => Ok(None),
        Some(b) => codec::decode(&b)
            .map(Some)
            .map_err(|e| load_err(path, &String::from_utf8_lossy(key), e)),
    }
}

/// The state machine as format 1 stored it.
fn load_stored(db: &DB, path: &str) -> Result<Applied, OpenError> {
    load_applied(db).map_err(|e| load_err(path, "state machine", e))
}

/// Apply the log from index 0 through `upto` to an empty state under `rules`.
fn replay(db: &DB, path: &str, upto: Option<u64>, rules: ApplyRules) -> Result<Applied, OpenError> {
    let mut m = Applied {
        state: State::default(),
        last_applied: None,
        membership: StoredMembership::default(),
    };
    m.state.meta.rules = rules;
    let Some(upto) = upto else {
        return Ok(m);
    };
    let logs = db.cf_handle(CF_LOGS).expect("cf exists");
    let mut expect = 0u64;
    for item in db.iterator_cf(logs, rocksdb::IteratorMode::Start) {
        let (k, v) = item.map_err(rocks_err(path))?;
        let index = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| load_err(path, "log key", format!("{} bytes", k.len())))?,
        );
        if index > upto {
            break;
        }
        if index != expect {
            return Err(load_err(path, "log", format!("entry {expect} is missing")));
        }
        let entry: Entry =
            codec::decode(&v).map_err(|e| load_err(path, &format!("log entry {index}"), e))?;
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(req) => {
                m.state.apply(req);
            }
            EntryPayload::Membership(mem) => {
                m.membership = StoredMembership::new(Some(entry.log_id), mem.clone());
            }
        }
        m.last_applied = Some(entry.log_id);
        expect = index + 1;
    }
    if expect != upto + 1 {
        return Err(load_err(
            path,
            "log",
            format!("entries {expect}..={upto} applied by format 1 are missing"),
        ));
    }
    Ok(m)
}

/// Where a replay differs from what format 1 stored: table, row and the fields that differ
/// (names only: rows hold secrets).
fn first_difference(stored: &Applied, replayed: &Applied) -> Option<String> {
    if stored.last_applied != replayed.last_applied || stored.membership != replayed.membership {
        return Some("the applied log position or the membership".into());
    }
    let compared = |m: &Applied| -> BTreeMap<(u8, Vec<u8>), serde_json::Value> {
        let mut state = m.state.clone();
        state.meta.rules = ApplyRules::Format1;
        state
            .all_rows()
            .into_iter()
            .filter(|r| !NOT_IN_FORMAT_1.contains(&r.table))
            .map(|r| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(r.value.as_deref().unwrap_or(b"null"))
                        .unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    let reworded: &[&str] = match r.table {
                        tables::EVENTS => &["message"],
                        tables::IDEMPOTENCY => &["response", "digest"],
                        _ => &[],
                    };
                    for f in reworded {
                        o.remove(*f);
                    }
                }
                ((r.table, r.key), v)
            })
            .collect()
    };
    let (a, b) = (compared(stored), compared(replayed));
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        let table = TABLES
            .iter()
            .find(|(id, _)| *id == k.0)
            .map_or("meta", |(_, name)| *name);
        let key = match <[u8; 8]>::try_from(k.1.as_slice()) {
            Ok(b) if k.0 != tables::IDEMPOTENCY => u64::from_be_bytes(b).to_string(),
            _ => String::from_utf8_lossy(&k.1).replace('\u{0}', " "),
        };
        let what = match (x, y) {
            (Some(_), None) => "stored by format 1, absent from the replay".to_string(),
            (None, Some(_)) => "made by the replay, absent from what format 1 stored".to_string(),
            (Some(x), Some(y)) => {
                let mut fields = Vec::new();
                differing_fields("", x, y, &mut fields);
                format!("fields differ: {}", fields.join(", "))
            }
            (None, None) => unreachable!("the key came from one side"),
        };
        return Some(format!("{table} row {key}: {what}"));
    }
    None
}

fn differing_fields(at: &str, x: &serde_json::Value, y: &serde_json::Value, out: &mut Vec<String>) {
    match (x.as_object(), y.as_object()) {
        (Some(a), Some(b)) => {
            let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for n in names {
                let (p, q) = (&a.get(n), &b.get(n));
                if p != q {
                    let path = if at.is_empty() {
                        n.clone()
                    } else {
                        format!("{at}.{n}")
                    };
                    let null = serde_json::Value::Null;
                    differing_fields(&path, p.unwrap_or(&null), q.unwrap_or(&null), out);
                }
            }
        }
        _ if out.len() < 8 => out.push(if at.is_empty() {
            "(row)".into()
        } else {
            at.into()
        }),
        _ => {}
    }
}

fn remove_snapshots(snapshot_dir: &Path) -> Result<(), OpenError> {
    if !snapshot_dir.exists() {
        return Ok(());
    }
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| OpenError::Io { path, source }
    };
    for e in std::fs::read_dir(snapshot_dir)
        .map_err(io(snapshot_dir))?
        .flatten()
    {
        std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
    }
    Ok(())
}

/// Whether a format-1 log was compacted, and up to which index: `last_purged` is recorded, or
/// the log does not start at the initial index 0 (a follower that installed a snapshot and
/// stopped before openraft purged the log behind it has no `last_purged`), or the log is empty
/// while the state machine applied entries.
fn v1_compacted_up_to(db: &DB, path: &str) -> Result<Option<u64>, OpenError> {
    if let Some(purged) = get_meta::<LogId>(db, path, CF_RAFT_META, b"last_purged")? {
        return Ok(Some(purged.index()));
    }
    let logs = db.cf_handle(CF_LOGS).expect("cf exists");
    let first = match db.iterator_cf(logs, rocksdb::IteratorMode::Start).next() {
        None => None,
        Some(Err(e)) => return Err(rocks_err(path)(e)),
        Some(Ok((k, _))) => {
            Some(u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                load_err(path, "log key", format!("{} bytes", k.len()))
            })?))
        }
    };
    match first {
        Some(0) => Ok(None),
        Some(i) => Ok(Some(i - 1)),
        None => Ok(
            get_meta::<Option<LogId>>(db, path, CF_SM_META, b"last_applied")?
                .flatten()
                .map(|l| l.index()),
        ),
    }
}

/// Test support: turn a (stopped) node's data directory into what a format-1 build would have
/// left on disk after applying the same log: its tables decided by format 1's rules, the
/// `images` and `tasks` rows missing, the meta row without the fields format 1 did not know,
/// and the marker 1. The log must start at index 0.
pub fn make_v1(data_dir: &Path) -> Result<(), OpenError> {
    let (db, _) = crate::open_db_any(&data_dir.join("db"))?;
    let path = data_dir.display().to_string();
    let stored = load_stored(&db, &path)?;
    let upto = stored.last_applied.map(|l| l.index());
    let mut v1 = replay(&db, &path, upto, ApplyRules::Format1)?;
    let data = db.cf_handle(CF_SM_DATA).expect("cf exists");
    let meta = db.cf_handle(CF_RAFT_META).expect("cf exists");
    let mut batch = rocksdb::WriteBatch::default();
    batch.delete_range_cf(data, [0u8].as_slice(), [0xffu8; 9].as_slice());
    for row in v1.state.all_rows() {
        let Some(mut value) = row.value else { continue };
        if NOT_IN_FORMAT_1.contains(&row.table) {
            continue;
        }
        if row.table == tables::META {
            let mut m: serde_json::Value = serde_json::from_slice(&value).expect("meta is JSON");
            if let Some(o) = m.as_object_mut() {
                o.remove("rules");
                o.remove("removed_nodes");
            }
            value = serde_json::to_vec(&m).expect("JSON");
        }
        batch.put_cf(data, sm_key(row.table, &row.key), value);
    }
    batch.put_cf(meta, b"format_version", 1u32.to_be_bytes());
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    db.write_opt(batch, &w).map_err(rocks_err(&path))
}
