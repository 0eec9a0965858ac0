//! Watches who leads, as this node sees it: each change is logged once (the new leader and
//! the term, or that none is known) and counted in the metrics
//! (`rackd_raft_leader_changes_total`), instead of every request that meets an election
//! saying so.
//!
//! Layer: part of `cluster`; uses the bottom-layer `metrics` only.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;

use super::ClusterHandle;

/// Runs until Raft stops.
pub async fn watch(node: Arc<ClusterHandle>) {
    let mut rx = node.raft.metrics();
    let mut last: Option<Option<u64>> = None;
    loop {
        let (leader, term) = {
            let m = rx.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if last != Some(leader) {
            if last.is_some() {
                crate::metrics::global().leader_changes.inc();
            }
            match leader {
                Some(l) if l == node.id => tracing::info!(term, "this node is the leader"),
                Some(l) => tracing::info!(leader = l, term, "node {l} is the leader"),
                None => tracing::warn!(term, "no leader known"),
            }
            last = Some(leader);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
