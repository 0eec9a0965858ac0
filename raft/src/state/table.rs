//! `Table<K, V>`: one typed table of the state machine, kept in memory, with change tracking so
//! the storage layer persists only the rows an apply batch touched.
//!
//! Rows live in a persistent (copy-on-write) B-tree ([`imbl::OrdMap`]): cloning a table is
//! O(1), so a snapshot clones the whole state under the lock in microseconds and encodes the
//! clone elsewhere, never blocking apply or readers while it does.

use std::collections::BTreeSet;

use imbl::OrdMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Keys encode to bytes that sort like the keys (big-endian integers, UTF-8 strings).
pub trait TableKey: Ord + Clone {
    fn encode(&self) -> Vec<u8>;
    fn decode(b: &[u8]) -> Option<Self>;
}

impl TableKey for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(b.try_into().ok()?))
    }
}

impl TableKey for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Option<Self> {
        String::from_utf8(b.to_vec()).ok()
    }
}

/// A persisted row change: `None` value means delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    pub table: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize, V: Serialize"))]
#[serde(bound(deserialize = "K: DeserializeOwned, V: DeserializeOwned"))]
pub struct Table<K: TableKey, V: Clone> {
    rows: OrdMap<K, V>,
    #[serde(skip)]
    dirty: BTreeSet<K>,
}

impl<K: TableKey, V: Clone> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            rows: OrdMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<V: Serialize + DeserializeOwned + Clone> Table<u64, V> {
    /// A copy of row `id`, or the API's 404 naming the entity (`"{what} {id} not found"`).
    pub fn fetch(&self, id: u64, what: &str) -> Result<V, rackd_types::ApiError> {
        self.rows
            .get(&id)
            .cloned()
            .ok_or_else(|| rackd_types::ApiError::not_found(format!("{what} {id} not found")))
    }
}

impl<K: TableKey, V: Serialize + DeserializeOwned + Clone> Table<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        self.rows.get(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.dirty.insert(k.clone());
        self.rows.insert(k, v);
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.rows.remove(k);
        if v.is_some() {
            self.dirty.insert(k.clone());
        }
        v
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }

    pub fn range_after<'a>(
        &'a self,
        after: Option<&K>,
    ) -> Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a> {
        match after {
            None => Box::new(self.rows.iter()),
            Some(a) => Box::new(self.rows.range((
                std::ops::Bound::Excluded(a.clone()),
                std::ops::Bound::Unbounded,
            ))),
        }
    }

    pub fn first_key(&self) -> Option<&K> {
        self.rows.keys().next()
    }

    /// Load a persisted row (startup); not marked dirty.
    pub fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let k = K::decode(key).ok_or_else(|| "undecodable key".to_string())?;
        let v: V = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        self.rows.insert(k, v);
        Ok(())
    }

    /// Take the changes since the last drain.
    pub fn drain_changes(&mut self, table: u8, out: &mut Vec<RowChange>) {
        for k in std::mem::take(&mut self.dirty) {
            let value = self
                .rows
                .get(&k)
                .map(|v| serde_json::to_vec(v).expect("state rows always serialize"));
            out.push(RowChange {
                table,
                key: k.encode(),
                value,
            });
        }
    }

    /// Every row as a change (used after installing a snapshot to rewrite the table).
    pub fn all_rows(&self, table: u8, out: &mut Vec<RowChange>) {
        for (k, v) in &self.rows {
            out.push(RowChange {
                table,
                key: k.encode(),
                value: Some(serde_json::to_vec(v).expect("state rows always serialize")),
            });
        }
    }

    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }
}

/// What the storage layer needs of any table, whatever its key and row types: the one interface
/// through which persistence, snapshots and loading reach every table of [`super::State`] (see
/// `State::tables_mut`, the registry).
pub trait PersistedTable {
    /// Take the rows changed since the last drain as row changes of table `id`.
    fn drain_changes_dyn(&mut self, id: u8, out: &mut Vec<RowChange>);
    /// Every row as a change of table `id`, and forget pending changes (snapshot install).
    fn all_rows_dyn(&mut self, id: u8, out: &mut Vec<RowChange>);
    /// Load one persisted row (startup); not marked dirty.
    fn load_dyn(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    fn len_dyn(&self) -> usize;
}

impl<K: TableKey, V: Serialize + DeserializeOwned + Clone> PersistedTable for Table<K, V> {
    fn drain_changes_dyn(&mut self, id: u8, out: &mut Vec<RowChange>) {
        self.drain_changes(id, out);
    }
    fn all_rows_dyn(&mut self, id: u8, out: &mut Vec<RowChange>) {
        self.all_rows(id, out);
        self.clear_dirty();
    }
    fn load_dyn(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.load(key, value)
    }
    fn len_dyn(&self) -> usize {
        self.len()
    }
}
