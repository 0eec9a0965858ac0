//! A removed member learns that it was removed, stops campaigning and says so.
//!
//! A member removed while it was down (or cut off) never receives the membership entry that
//! removes it: left alone it would campaign forever with a rising term, and resume silently
//! when restarted. This watcher acts only on authoritative evidence:
//!
//! - its own replica applied (committed) a membership without this node, after one with it;
//! - or, when it has had no leader for a while (or its effective membership lacks it), a
//!   majority of the voters it knows answer `/v1/health` for this cluster with a membership
//!   without this node. One answer is never enough: a leader deposed by a partition keeps
//!   reporting the membership it last knew, which may predate this node.
//! - or, when its replica applied the joint membership that starts its removal (this node is in
//!   the old configuration only), a majority of the new configuration's voters report a
//!   membership without it. This covers a follower that never receives the final
//!   configuration, also in a cluster of two voters, where a majority of the old ones would
//!   need its own answer.
//!
//! It then records the removal in `node.json`, shuts Raft down and reports `removed` in its
//! health. A node whose `node.json` says removed refuses to start (see
//! `bootstrap::resolve_identity`).
//!
//! Depends on [`ClusterHandle`] only; nothing imports this module but the server.

use std::collections::BTreeSet;
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
    // Log index of the last applied membership that listed this node.
    let mut seen_self: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let complete = matches!(Identity::load(&node.data_dir), Ok(Some(i)) if i.complete);
        let (applied_at, applied_has_me, leaving) = {
            let a = node.sm.read();
            (
                a.membership.log_id().as_ref().map_or(0, |l| l.index),
                a.membership.membership().get_node(&node.id).is_some(),
                leaving_voters(node.id, a.membership.membership().get_joint_config()),
            )
        };
        if applied_has_me {
            seen_self = Some(applied_at);
        } else if complete && seen_self.is_some_and(|at| applied_at > at) {
            removed(
                &node,
                &format!(
                    "this node's replica applied a membership without it (log index {applied_at})"
                ),
            )
            .await;
            return;
        }
        let m = node.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        // Either the effective membership lacks this node, or there has been no leader for a
        // while: ask the others (only once this node had finished joining: a joiner is not
        // listed yet).
        let suspect = if mem.get_node(&node.id).is_none() {
            true
        } else if leaving.is_some() && m.current_leader != Some(node.id) {
            // A leader completes its own removal (and then applies it); a follower may never
            // receive the final configuration, so it asks its voters.
            true
        } else if m.current_leader.is_some() {
            leaderless_since = None;
            false
        } else {
            let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
            since.elapsed() >= LEADERLESS
        };
        if !suspect || !complete {
            continue;
        }
        let cluster_id = node.sm.read().state.cluster_id().to_string();
        if cluster_id.is_empty() {
            continue;
        }
        let voters: BTreeSet<u64> = leaving.clone().unwrap_or_else(|| mem.voter_ids().collect());
        let mut reports = Vec::new();
        for (_, info) in mem.nodes().filter(|(id, _)| **id != node.id) {
            let Ok(resp) = node
                .http
                .get(format!("{}/v1/health", rackd_types::api_url(&info.api)))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            else {
                continue;
            };
            if let Ok(h) = resp.json::<Health>().await {
                reports.push(h);
            }
        }
        if let Some(why) = majority_says_removed(node.id, &voters, &cluster_id, &reports) {
            removed(&node, &why).await;
            return;
        }
        // Ask again after another quiet period, not on every tick.
        leaderless_since = Some(tokio::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The voters whose word settles this node's removal once its replica applied (so the cluster
/// committed) a joint membership whose new configuration lacks it: the first step of its
/// removal. The old configuration's voters no longer decide anything then, and in a cluster of
/// two voters this node alone could never hear from a majority of them.
fn leaving_voters(me: u64, joint: &[BTreeSet<u64>]) -> Option<BTreeSet<u64>> {
    match joint {
        [.., old, new] if old.contains(&me) && !new.contains(&me) && !new.is_empty() => {
            Some(new.clone())
        }
        _ => None,
    }
}

/// The peers' evidence: `Some(why)` when more than half of `voters` (this node's view) answer
/// for this cluster with a membership that does not list `me`. Answers of non-voters, of
/// other clusters, of removed nodes and empty memberships do not count.
fn majority_says_removed(
    me: u64,
    voters: &BTreeSet<u64>,
    cluster_id: &str,
    reports: &[Health],
) -> Option<String> {
    let without_me: BTreeSet<u64> = reports
        .iter()
        .filter(|h| {
            h.cluster_id == cluster_id
                && h.node_id != me
                && voters.contains(&h.node_id)
                && !h.removed
                && !h.members.is_empty()
                && !h.members.contains(&me)
        })
        .map(|h| h.node_id)
        .collect();
    (without_me.len() * 2 > voters.len()).then(|| {
        format!(
            "voters {without_me:?} (a majority of {voters:?}) report a membership without this node"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node_id: u64, members: &[u64]) -> Health {
        Health {
            node_id,
            raft_state: "follower".into(),
            leader_id: Some(node_id),
            term: 1,
            last_applied: None,
            last_log_index: None,
            snapshot_index: None,
            purged_index: None,
            cluster_id: "c1".into(),
            members: members.to_vec(),
            removed: false,
            failure: None,
            cert_issued_at_ms: None,
            cert_expires_at_ms: None,
        }
    }

    #[test]
    fn one_stale_answer_is_not_a_removal_but_a_majority_is() {
        let voters: BTreeSet<u64> = [1, 2, 3, 4].into();
        // A deposed leader that never heard of node 4.
        let stale = report(1, &[1, 2, 3]);
        assert_eq!(
            majority_says_removed(4, &voters, "c1", std::slice::from_ref(&stale)),
            None
        );
        // Two of four is not a majority either.
        let two = [stale.clone(), report(2, &[1, 2, 3])];
        assert_eq!(majority_says_removed(4, &voters, "c1", &two), None);
        let three = [stale.clone(), report(2, &[1, 2, 3]), report(3, &[1, 2, 3])];
        assert!(majority_says_removed(4, &voters, "c1", &three).is_some());
        // The same node twice counts once; answers of others do not count.
        let twice = [stale.clone(), stale.clone(), stale.clone()];
        assert_eq!(majority_says_removed(4, &voters, "c1", &twice), None);
        let mut other = report(2, &[1, 2, 3]);
        other.cluster_id = "c2".into();
        let learner = report(9, &[1, 2, 3]);
        let mut gone = report(3, &[1, 2, 3]);
        gone.removed = true;
        let empty = report(2, &[]);
        for noise in [other, learner, gone, empty] {
            assert_eq!(
                majority_says_removed(4, &voters, "c1", &[stale.clone(), noise.clone()]),
                None,
                "{noise:?}"
            );
        }
        // A member removed while down: both remaining voters of three say so.
        let v3: BTreeSet<u64> = [1, 2, 3].into();
        let both = [report(1, &[1, 2]), report(2, &[1, 2])];
        assert!(majority_says_removed(3, &v3, "c1", &both).is_some());
        // Answers that still list the node are no evidence at all.
        let listed = [report(1, &[1, 2, 3]), report(2, &[1, 2, 3])];
        assert_eq!(majority_says_removed(3, &v3, "c1", &listed), None);
    }

    /// Two voters, node 2 removed: it applied the joint membership {1,2} → {1} but never
    /// received the final one. Node 1 alone is a majority of the new configuration, and the
    /// only voter that still decides; before, node 2 needed two answers out of {1, 2}.
    #[test]
    fn a_member_leaving_a_two_voter_cluster_asks_the_new_configuration() {
        let joint: Vec<BTreeSet<u64>> = vec![[1, 2].into(), [1].into()];
        let voters = leaving_voters(2, &joint).expect("node 2 is leaving");
        assert_eq!(voters, BTreeSet::from([1]));
        assert!(majority_says_removed(2, &voters, "c1", &[report(1, &[1])]).is_some());
        // Node 1 still listing node 2 (it is in the joint phase too) is no evidence.
        assert_eq!(
            majority_says_removed(2, &voters, "c1", &[report(1, &[1, 2])]),
            None
        );
        // Node 1 stays; a plain or a growing membership makes nobody leave.
        assert_eq!(leaving_voters(1, &joint), None);
        assert_eq!(leaving_voters(2, &[[1, 2].into()]), None);
        assert_eq!(leaving_voters(3, &[[1, 2].into(), [1, 2, 3].into()]), None);
        // Three voters, node 3 leaving: the new configuration {1, 2} needs both answers.
        let v = leaving_voters(3, &[[1, 2, 3].into(), [1, 2].into()]).unwrap();
        assert_eq!(
            majority_says_removed(3, &v, "c1", &[report(1, &[1, 2])]),
            None
        );
    }
}
