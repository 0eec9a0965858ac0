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
//!   when they have not after [`TAKE_OVER`], any lacking voter does;
//! - on a location node, the blobs of the images its deploying machines boot are fetched
//!   ahead of the machines (so a site cut off after the deploy still boots them), and the
//!   copies it holds are bounded by the cache size: the least recently used copies no
//!   deploying machine needs are dropped first (a location node is a cache; voters never
//!   drop a copy);
//! - on the leader, a blob no image uses is forgotten once it is older than the GC age.
//!
//! A location node fetches from a holder at its own site first, then from the voters.
//! Copies not hashed by this process for `--blob-scrub-hours` (and those it never hashed:
//! after a restart, or changed on disk) are hashed again in the background, a bounded amount
//! per pass, since rot on a failing disk changes no file time; a damaged one is removed and
//! copied again. Copies being written are held in the store, so the sweep never removes
//! them.
//!
//! Layer: services; depends on `cluster` and `blobs`.

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
/// Bytes of copies hashed per pass by the scrub of copies not known good.
const SCRUB_BYTES_PER_PASS: u64 = 512 << 20;
/// How long a fresh copy waits for its record before it is used anyway.
const RECORD_WAIT: Duration = Duration::from_secs(2);
/// How long a transfer may go without a chunk before it is given up.
const IDLE: Duration = Duration::from_secs(30);

/// The keeper's memory between passes: since when each blob has been short of copies.
#[derive(Default)]
pub struct Keeper {
    short_since: HashMap<Digest, Instant>,
}

/// Run a pass every `cfg.check`; stops only when aborted. `location`: the site this node
/// serves, if any.
pub async fn run(
    node: Arc<dyn Cluster>,
    store: Arc<BlobStore>,
    cfg: BlobConfig,
    location: Option<String>,
) {
    let mut k = Keeper::default();
    loop {
        tokio::time::sleep(cfg.check).await;
        k.pass(node.as_ref(), &store, &cfg, location.as_deref())
            .await;
    }
}

/// [`ensure_local`], and the copy checked sound ([`BlobStore::check`]: hashed unless this
/// process wrote or hashed it as it is): a damaged copy is removed and fetched again, never
/// served.
pub async fn ensure_sound(
    node: &dyn Cluster,
    store: &Arc<BlobStore>,
    d: &Digest,
) -> Result<(), String> {
    for _ in 0..2 {
        ensure_local(node, store, d).await?;
        if store.is_known_good(d) {
            return Ok(());
        }
        let (s, d2) = (store.clone(), d.clone());
        match tokio::task::spawn_blocking(move || s.check(&d2)).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {
                tracing::warn!(digest = %d, "the local copy was damaged: removed, fetching it again")
            }
            Ok(Err(e)) => return Err(format!("check the local copy of {d}: {e}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("no sound copy of {d} could be fetched"))
}

/// Make sure this node has a verified copy of blob `d` (fetching it once, however many ask
/// at the same time). The blob must be recorded.
pub async fn ensure_local(
    node: &dyn Cluster,
    store: &Arc<BlobStore>,
    d: &Digest,
) -> Result<(), String> {
    if store.size(d).is_some() {
        return Ok(());
    }
    let lock = store.fetch_lock(d);
    let _one = lock.lock().await;
    if store.size(d).is_some() {
        return Ok(());
    }
    let Some(b) = node.state().blob(d).cloned() else {
        return Err(format!("blob {d} is not stored in the cluster"));
    };
    if copy(node, store, &b).await {
        Ok(())
    } else {
        Err(format!("no holder of blob {d} could send it"))
    }
}

impl Keeper {
    /// One pass. Returns how many blobs this node copied.
    pub async fn pass(
        &mut self,
        node: &dyn Cluster,
        store: &Arc<BlobStore>,
        cfg: &BlobConfig,
        location: Option<&str>,
    ) -> usize {
        let orphan_after = cfg.orphan_after;
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
        let mut budget = SCRUB_BYTES_PER_PASS;
        for (d, size, modified) in local {
            // Copies not written or hashed by this process (since a restart, or changed on
            // disk) are hashed, a bounded amount per pass; a damaged one is removed, and
            // counts as lost below.
            let stale = store.hashed_before(&d, cfg.scrub_every);
            if budget > 0 && !store.is_held(&d) && (stale || !store.is_known_good(&d)) {
                budget = budget.saturating_sub(size);
                let (s, d2) = (store.clone(), d.clone());
                let checked =
                    tokio::task::spawn_blocking(
                        move || {
                            if stale {
                                s.rehash(&d2)
                            } else {
                                s.check(&d2)
                            }
                        },
                    );
                if let Ok(Ok(false)) = checked.await {
                    tracing::warn!(digest = %d, "a damaged copy was found and removed");
                    continue;
                }
            }
            here.insert(d.clone());
            if store.is_held(&d) {
                continue;
            }
            match st.blob(&d) {
                Some(b) if b.size == size && b.holders.contains(&me) => {}
                Some(b) if b.size == size => {
                    // Verified when written: recorded (the record lost it, or this node
                    // copied it while the cluster could not be told).
                    let cmd = Command::RecordBlob {
                        digest: d.clone(),
                        size,
                        node: me,
                    };
                    if let Err(e) = node.propose_anywhere(&actor, None, cmd).await {
                        tracing::warn!(digest = %d, error = %e.message, "cannot record a copy");
                    }
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
        if node.is_leader() {
            collect_garbage(node, cfg.gc_after).await;
        }
        if !status.voters.contains(&me) {
            let Some(site) = location else { return 0 };
            let needed = needed_at(&st, site);
            drop(st);
            let mut copied = 0;
            for d in &needed {
                if store.size(d).is_none() && ensure_local(node, store, d).await.is_ok() {
                    copied += 1;
                }
            }
            evict(node, store, cfg.cache_bytes, &needed).await;
            return copied;
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

/// The blobs the images of `site`'s deploying machines are made of.
fn needed_at(st: &rackd_raft::state::State, site: &str) -> std::collections::BTreeSet<Digest> {
    st.machines
        .values()
        .map(|m| &m.machine)
        .filter(|m| m.location == site && m.state == rackd_types::MachineState::Deploying)
        .filter_map(|m| st.image_by_name(m.image.as_deref()?))
        .flat_map(|i| i.blobs().collect::<Vec<_>>())
        .collect()
}

/// Keep this (location) node's copies within `cap` bytes: drop the least recently used ones
/// that no deploying machine needs, saying so first so that nobody fetches them from here.
async fn evict(
    node: &dyn Cluster,
    store: &Arc<BlobStore>,
    cap: u64,
    needed: &std::collections::BTreeSet<Digest>,
) {
    let s = store.clone();
    let Ok(Ok(mut local)) = tokio::task::spawn_blocking(move || s.list()).await else {
        return;
    };
    let mut total: u64 = local.iter().map(|(_, n, _)| n).sum();
    if total <= cap {
        return;
    }
    local.sort_by_key(|(_, _, used)| *used);
    let me = node.id();
    for (d, size, _) in local {
        if total <= cap {
            break;
        }
        if needed.contains(&d) || store.is_held(&d) {
            continue;
        }
        if node
            .state()
            .blob(&d)
            .is_some_and(|b| b.holders.contains(&me))
        {
            let cmd = Command::DropBlobHolder {
                digest: d.clone(),
                node: me,
            };
            if let Err(e) = node
                .propose_anywhere(&format!("node:{me}"), None, cmd)
                .await
            {
                tracing::warn!(digest = %d, error = %e.message, "cannot drop a cached copy");
                continue;
            }
        }
        match store.remove(&d) {
            Ok(()) => {
                total -= size;
                tracing::info!(digest = %d, size, "evicted a cached copy");
            }
            Err(e) => tracing::warn!(digest = %d, error = %e, "cannot evict"),
        }
    }
}

/// On the leader: forget the blobs no image uses once they are older than `age` (time to
/// create the image an upload is for).
async fn collect_garbage(node: &dyn Cluster, age: Duration) {
    let st = node.state();
    let now = crate::cluster::now_ms();
    let old: Vec<Digest> = st
        .blobs
        .values()
        .filter(|b| now.saturating_sub(b.created_at) >= age.as_millis() as u64)
        .filter(|b| st.image_using_blob(&b.digest).is_none())
        .map(|b| b.digest.clone())
        .collect();
    drop(st);
    for d in old {
        let cmd = Command::ForgetBlob { digest: d.clone() };
        match node
            .propose(&format!("node:{}", node.id()), None, cmd)
            .await
        {
            Ok(_) => tracing::info!(digest = %d, "forgot a blob no image uses"),
            Err(e) => tracing::warn!(digest = %d, error = %e.message, "cannot forget a blob"),
        }
    }
}

/// Copy blob `b` from one of its holders into this node's store and record it: holders at
/// this node's site first, then voters, then the rest. Whether it was copied.
pub async fn copy(node: &dyn Cluster, store: &Arc<BlobStore>, b: &Blob) -> bool {
    let me = node.id();
    let _hold = store.hold(&b.digest);
    let voters = node.status().voters;
    let sites = node.state().meta.node_sites.clone();
    let site = sites.get(&me);
    let mut from: Vec<u64> = b.holders.iter().copied().filter(|h| *h != me).collect();
    from.sort_by_key(|h| {
        (
            site.is_none() || sites.get(h) != site,
            !voters.contains(h),
            *h,
        )
    });
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
                // Waited for briefly only: a site cut off from the voters serves the copy
                // now, and the keeper records it at a later pass.
                let recorded = tokio::time::timeout(
                    RECORD_WAIT,
                    node.propose_anywhere(&format!("node:{me}"), None, cmd),
                )
                .await;
                match recorded {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(digest = %b.digest, error = %e.message, "cannot record a copy yet")
                    }
                    Err(_) => {
                        tracing::warn!(digest = %b.digest, "cannot record a copy yet: no answer")
                    }
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
