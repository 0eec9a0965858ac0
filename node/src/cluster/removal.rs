//! A removed member learns that it was removed, stops campaigning and says so.
//!
//! A member removed while it was down (or cut off) never receives the membership entry that
//! removes it: left alone it would campaign forever with a rising term, and resume silently
//! when restarted. This watcher notices when the node has had no leader for a while, asks the
//! other members it knows (their open `/v1/health`) and, when a leader of the same cluster
//! reports a membership without this node (or its own replica already shows one), records the
//! removal in `node.json`, shuts Raft down and reports `removed` in its health. A node whose
//! `node.json` says removed refuses to start (see `bootstrap::resolve_identity`).
//!
//! Depends on [`ClusterHandle`] only; nothing imports this module but the server.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use rackd_types::Health;

use super::identity::Identity;
use super::ClusterHandle;

/// How long without a leader before the node asks the others whether it is still a member.
const LEADERLESS: Duration = Duration::from_secs(3);

pub async fn watch(node: Arc<ClusterHandle>) {
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = node.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        // Either the replica already applies a membership without this node, or there has been
        // no leader for a while: ask the others. Only the answer of a leader of this cluster
        // counts, and only once this node had finished joining (a joiner is not yet listed).
        let suspect = if mem.get_node(&node.id).is_none() {
            true
        } else if m.current_leader.is_some() {
            leaderless_since = None;
            false
        } else {
            let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
            since.elapsed() >= LEADERLESS
        };
        if !suspect || !matches!(Identity::load(&node.data_dir), Ok(Some(i)) if i.complete) {
            continue;
        }
        let cluster_id = node.sm.read().state.cluster_id().to_string();
        if cluster_id.is_empty() {
            continue;
        }
        let peers: Vec<(u64, String)> = mem
            .nodes()
            .filter(|(id, _)| **id != node.id)
            .map(|(id, info)| (*id, info.api.clone()))
            .collect();
        for (peer, api) in peers {
            let Ok(resp) = node
                .http
                .get(format!("http://{api}/v1/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            let Ok(h) = resp.json::<Health>().await else {
                continue;
            };
            if h.cluster_id == cluster_id
                && h.leader_id == Some(h.node_id)
                && !h.members.is_empty()
                && !h.members.contains(&node.id)
            {
                removed(
                    &node,
                    &format!("leader {peer} reports a membership without this node"),
                )
                .await;
                return;
            }
        }
        // Ask again after another quiet period, not on every tick.
        leaderless_since = Some(tokio::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn removed(node: &ClusterHandle, why: &str) {
    tracing::error!(
        node_id = node.id,
        why,
        "this node was removed from the cluster; stopping Raft (it will not campaign or \
         rejoin). To add the machine again, start it with an empty data directory and a new \
         join token"
    );
    node.removed.store(true, Ordering::SeqCst);
    match Identity::load(&node.data_dir) {
        Ok(Some(mut id)) => {
            id.removed = true;
            if let Err(e) = id.save(&node.data_dir) {
                tracing::error!(error = %e, "cannot record the removal in node.json");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot read node.json to record the removal"),
    }
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown after removal");
    }
}
