//! The blob keeper: keeps what the blob records say true of this node's store, and every blob
//! on enough voters ([`crate::blobs::copies_wanted`]). Each pass, on every node:
//!
//! - a verified copy here that its record does not name (the record was lost between the
//!   rename and the proposal, or this node copied it) is recorded; one that no record names
//!   (a forgotten blob) is removed once older than the orphan age;
//! - a record that names this node while its copy is gone (a lost disk) is corrected
//!   (`DropBlobHolder`), so another voter copies the blob again;
//! - on a voter, a blob held by too few voters is copied from a holder over the peer
//!   transport, verified while written. The lacking voters with the lowest ids copy first;
//!   when they have not after [`TAKE_OVER`], any lacking voter does.
//!
//! Copies being written are held in the store, so the sweep never removes them. Layer:
//! services; depends on `cluster` and `blobs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rackd_raft::cmd::Command;
use rackd_raft::state::ApplyRules;
use rackd_types::{Blob, Digest};

use crate::blobs::{copies_wanted, voter_copies, BlobStore};
use crate::cluster::Cluster;
use crate::config::BlobConfig;

/// How long a blob may stay short of copies before any lacking voter copies it.
pub const TAKE_OVER: Duration = Duration::from_secs(30);
/// How long a transfer may go without a chunk before it is given up.
const IDLE: Duration = Duration::from_secs(30);

/// The keeper's memory between passes: since when each blob has been short of copies.
#[derive(Default)]
pub struct Keeper {
    short_since: HashMap<Digest, Instant>,
}

/// Run a pass every `cfg.check`; stops only when aborted.
pub async fn run(node: Arc<dyn Cluster>, store: Arc<BlobStore>, cfg: BlobConfig) {
    let mut k = Keeper::default();
    loop {
        tokio::time::sleep(cfg.check).await;
        k.pass(node.as_ref(), &store, cfg.orphan_after).await;
    }
}

impl Keeper {
    /// One pass. Returns how many blobs this node copied.
    pub async fn pass(
        &mut self,
        node: &dyn Cluster,
        store: &Arc<BlobStore>,
        orphan_after: Duration,
    ) -> usize {
        let st = node.state();
        let me = node.id();
        let status = node.status();
        if st.meta.rules < ApplyRules::Rules4 || !status.members.contains_key(&me) {
            return 0;
        }
        let actor = format!("node:{me}");
        let s = store.clone();
        let local = match tokio::task::spawn_blocking(move || s.list()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the blob store");
                return 0;
            }
            Err(_) => return 0,
        };
        let mut here = std::collections::BTreeSet::new();
        for (d, size, modified) in local {
            here.insert(d.clone());
            if store.is_held(&d) {
                continue;
            }
            match st.blob(&d) {
                Some(b) if b.size == size && b.holders.contains(&me) => {}
                Some(b) if b.size == size => {
                    let cmd = Command::RecordBlob {
                        digest: d.clone(),
                        size,
                        node: me,
                    };
                    if let Err(e) = node.propose_anywhere(&actor, None, cmd).await {
                        tracing::warn!(digest = %d, error = %e.message, "cannot record a copy");
                    }
                    let _ = b;
                }
                _ => {
                    let age = SystemTime::now()
                        .duration_since(modified)
                        .unwrap_or_default();
                    if age >= orphan_after {
                        match store.remove(&d) {
                            Ok(()) => {
                                here.remove(&d);
                                tracing::info!(digest = %d, "removed a copy no blob record names");
                            }
                            Err(e) => tracing::warn!(digest = %d, error = %e, "cannot remove"),
                        }
                    }
                }
            }
        }
        for b in st.blobs.values() {
            if b.holders.contains(&me) && !here.contains(&b.digest) && !store.is_held(&b.digest) {
                tracing::warn!(digest = %b.digest, "this node's copy is gone; recording it");
                let cmd = Command::DropBlobHolder {
                    digest: b.digest.clone(),
                    node: me,
                };
                if let Err(e) = node.propose_anywhere(&actor, None, cmd).await {
                    tracing::warn!(digest = %b.digest, error = %e.message, "cannot record a lost copy");
                }
            }
        }
        if !status.voters.contains(&me) {
            return 0;
        }
        let want = copies_wanted(status.voters.len());
        let mut todo: Vec<Blob> = Vec::new();
        self.short_since.retain(|d, _| st.blob(d).is_some());
        for b in st.blobs.values() {
            let have = voter_copies(b, &status.voters);
            if have >= want {
                self.short_since.remove(&b.digest);
                continue;
            }
            if b.holders.contains(&me) || here.contains(&b.digest) || b.holders.is_empty() {
                continue;
            }
            let since = *self
                .short_since
                .entry(b.digest.clone())
                .or_insert_with(Instant::now);
            let rank = status
                .voters
                .iter()
                .filter(|v| !b.holders.contains(v))
                .position(|v| *v == me)
                .unwrap_or(usize::MAX);
            if rank < want - have || since.elapsed() >= TAKE_OVER {
                todo.push(b.clone());
            }
        }
        drop(st);
        let mut copied = 0;
        for b in todo {
            if copy(node, store, &b).await {
                copied += 1;
            }
        }
        copied
    }
}

/// Copy blob `b` from one of its holders (voters first) into this node's store and record
/// it. Whether it was copied.
pub async fn copy(node: &dyn Cluster, store: &Arc<BlobStore>, b: &Blob) -> bool {
    let me = node.id();
    let _hold = store.hold(&b.digest);
    let voters = node.status().voters;
    let mut from: Vec<u64> = b.holders.iter().copied().filter(|h| *h != me).collect();
    from.sort_by_key(|h| (!voters.contains(h), *h));
    for h in from {
        let chunks = match node.fetch_blob(h, &b.digest, 0, b.size).await {
            Ok(c) => crate::blobs::with_idle_timeout(c, IDLE),
            Err(e) => {
                tracing::warn!(digest = %b.digest, from = h, error = %e.message, "cannot copy a blob");
                continue;
            }
        };
        match store.receive(&b.digest, Some(b.size), chunks).await {
            Ok(_) if node.state().blob(&b.digest).is_none() => {
                // Forgotten while it was copied: the copy is an orphan, swept later.
                return false;
            }
            Ok(_) => {
                let cmd = Command::RecordBlob {
                    digest: b.digest.clone(),
                    size: b.size,
                    node: me,
                };
                if let Err(e) = node
                    .propose_anywhere(&format!("node:{me}"), None, cmd)
                    .await
                {
                    tracing::warn!(digest = %b.digest, error = %e.message, "cannot record a copy");
                }
                tracing::info!(digest = %b.digest, from = h, size = b.size, "copied a blob");
                return true;
            }
            Err(e) => {
                tracing::warn!(digest = %b.digest, from = h, error = %e, "a blob copy failed")
            }
        }
    }
    false
}
