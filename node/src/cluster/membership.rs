//! Membership: the leader's side of a join (add a learner, wait until it has caught up,
//! promote it), member removal, join tokens, and the two loops that keep addresses current
//! (the peer network's address book follows the replicated membership; a member that restarted
//! on new addresses re-advertises them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use rackd_raft::cmd::Command;
use rackd_raft::NodeInfo;
use rackd_types::{ApiError, CreatedJoinToken};

use super::contract::{check_removal, Cluster, MemberRole};
use super::secrets::{hash_secret, new_secret};
use super::write::membership_error;
use super::ClusterHandle;

/// The answer to a join of a node id the cluster removed.
pub fn removed_node(id: u64) -> ApiError {
    ApiError::new(
        rackd_types::ErrorCode::JoinRejected,
        format!(
            "node {id} was removed from this cluster and is never admitted again: start the \
             machine with an empty data directory and a new join token"
        ),
    )
}

fn journal_cmd(kind: &str, id: u64, message: String) -> Command {
    Command::Journal {
        kind: kind.to_string(),
        entity: "node".to_string(),
        entity_id: Some(id),
        message,
    }
}

/// Create a join token on the leader (`c` must be the leader).
pub async fn create_join_token(
    c: &dyn Cluster,
    actor: &str,
    idempotency_key: Option<String>,
    ttl_secs: u64,
    description: &str,
    location: Option<&str>,
) -> Result<CreatedJoinToken, ApiError> {
    let token = new_secret("rackd-join-");
    let hash = hash_secret(&token);
    let v = c
        .propose(
            actor,
            idempotency_key,
            Command::CreateJoinToken {
                token_hash: hash.clone(),
                ttl_ms: ttl_secs.saturating_mul(1000),
                description: description.to_string(),
                location: location.map(str::to_string),
            },
        )
        .await?;
    let view = v.into_join_token()?;
    let ours = c
        .state()
        .join_tokens
        .get(&view.id)
        .is_some_and(|t| t.hash == hash);
    if !ours {
        return Err(ApiError::conflict(format!(
            "join token {} was already created with this Idempotency-Key; its secret cannot be \
                 shown again (create a new one)",
            view.id
        )));
    }
    // The operator gets the secret with the CA's hash after it: the joiner checks the cluster
    // it reaches against it before it sends the secret.
    let pin = super::pki::ca_hash(&c.cluster_ca()?.cert_pem)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(CreatedJoinToken {
        id: view.id,
        token: super::pki::join_token_with_pin(&token, &pin),
        expires_at: view.expires_at,
    })
}

impl ClusterHandle {
    /// Phase 2 of a join, on the leader: add node `id` as a learner, wait until it has really
    /// replicated the log, then promote it to voter unless `learner`. Safe to retry. Returns
    /// the role the node ends up with.
    pub async fn add_node(
        &self,
        id: u64,
        info: NodeInfo,
        learner: bool,
    ) -> Result<MemberRole, ApiError> {
        let actor = "join";
        let peer = info.peer.clone();
        let (is_voter, is_member) = {
            let m = self.raft.metrics().borrow_watched().clone();
            let mem = m.membership_config.membership();
            let is_voter = mem.voter_ids().any(|v| v == id);
            (is_voter, mem.get_node(&id).is_some())
        };
        self.refuse_removed(id).await?;
        if is_voter {
            return Ok(MemberRole::Voter);
        }
        if !is_member {
            tokio::time::timeout(
                Duration::from_secs(240),
                self.raft.add_learner(id, info, true),
            )
            .await
            .map_err(|_| {
                ApiError::unavailable("new node did not catch up in time; retry the join")
            })?
            .map_err(|e| membership_error("addition of the new node as a learner", &e))?;
            let _ = self
                .propose(
                    actor,
                    None,
                    journal_cmd(
                        "cluster.learner_added",
                        id,
                        format!("node {id} added as learner"),
                    ),
                )
                .await;
        }
        // openraft's blocking add_learner only waits until the learner is within
        // replication_lag_threshold entries, which a node that never answered satisfies on a
        // small log. Wait until it has really replicated our log before promoting it.
        self.wait_caught_up(id, Duration::from_secs(240)).await?;
        // Removed while it was catching up: never promoted (and taken out again).
        self.refuse_removed(id).await?;
        if learner {
            return Ok(MemberRole::Learner);
        }
        // Every voter holds the CA key from the moment it is one, so whichever voter leads can
        // issue the next node's certificate: hand it over before the promotion.
        let ca = self.cluster_ca()?;
        self.net
            .store_ca_key(id, &peer, ca.key_pem(), Duration::from_secs(10))
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "handing node {id} the cluster CA key failed ({e}); retry the join"
                ))
            })?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(|e| membership_error("promotion to voter", &e))?;
        let _ = self
            .propose(
                actor,
                None,
                journal_cmd(
                    "cluster.voter_added",
                    id,
                    format!("node {id} promoted to voter"),
                ),
            )
            .await;
        Ok(MemberRole::Voter)
    }

    /// Wait until node `id` has replicated at least the leader's last log index as of now.
    async fn wait_caught_up(&self, id: u64, timeout: Duration) -> Result<(), ApiError> {
        let mut rx = self.raft.metrics();
        let target = rx.borrow_watched().last_log_index.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let m = rx.borrow_watched();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .flatten()
                    .map(|l| l.index());
                if matched.is_some_and(|i| i >= target) {
                    return Ok(());
                }
                if m.replication.is_none() {
                    return Err(ApiError::unavailable(
                        "leadership lost while the new node was catching up; retry",
                    ));
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::unavailable("raft stopped")),
                Err(_) => {
                    return Err(ApiError::unavailable(format!(
                        "node {id} did not catch up to index {target} in {}s; retry the join",
                        timeout.as_secs()
                    )))
                }
            }
        }
    }

    /// Remove member `id` (voter or learner) and journal it; never the last voter.
    pub async fn remove_member(&self, actor: &str, id: u64) -> Result<(), ApiError> {
        let change = if check_removal(&self.status(), id)? {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        // Recorded (and journaled) first: from this entry on, neither join phase admits the id,
        // so a join still in progress cannot bring it back after the membership change.
        self.propose(actor, None, Command::MarkNodeRemoved { node_id: id })
            .await?;
        tokio::time::timeout(
            self.write_timeout,
            self.raft.change_membership(change, false),
        )
        .await
        .map_err(|_| ApiError::unavailable("membership change not confirmed in time"))?
        .map_err(|e| membership_error("member removal", &e))?;
        Ok(())
    }

    /// Refuses node `id` when the cluster removed it; a learner that a join added after the
    /// removal's membership change is taken out again.
    async fn refuse_removed(&self, id: u64) -> Result<(), ApiError> {
        if !self.state().is_removed_node(id) {
            return Ok(());
        }
        let listed = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if listed {
            let _ = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await;
        }
        Err(removed_node(id))
    }
}

/// Keeps the peer network's address book equal to the replicated membership, so existing
/// replication streams follow a member that moved.
pub async fn follow_addresses(node: Arc<ClusterHandle>) {
    let mut rx = node.raft.metrics();
    let mut seen = None;
    loop {
        // Metrics change with every applied entry; the book only when the membership does.
        let book: Option<Vec<(u64, String)>> = {
            let m = rx.borrow_watched();
            let at = *m.membership_config.log_id();
            (seen != Some(at)).then(|| {
                seen = Some(at);
                m.membership_config
                    .membership()
                    .nodes()
                    .map(|(id, i)| (*id, i.peer.clone()))
                    .collect()
            })
        };
        if let Some(book) = book {
            node.net.set_addresses(book);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A member that restarted on new addresses (a new DHCP lease, a moved VM) or a new build asks
/// the leader to record them, retrying until the replicated membership shows this node's
/// current addresses and apply rules (the leader adopts new rules only once every member
/// reports them: `rules`).
pub async fn readvertise(node: Arc<ClusterHandle>) {
    // The entry also names this build's apply rules: a restart on a new build reports them.
    let me = NodeInfo::new(node.api_addr.clone(), node.peer_addr.clone());
    // A leader of an older build accepts the entry but drops the field it does not know, so
    // the entry keeps differing: after an accepted update, wait longer before the next one.
    let mut pause = READVERTISE_PAUSE;
    loop {
        let m = node.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if let Some(old) = membership.get_node(&node.id).filter(|i| **i != me) {
            let done = if m.current_leader == Some(node.id) {
                node.raft
                    .change_membership(
                        openraft::ChangeMembers::SetNodes(BTreeMap::from([(node.id, me.clone())])),
                        false,
                    )
                    .await
                    .is_ok()
            } else {
                // The leader first (if known), then every other member: non-leaders refuse.
                let mut targets: Vec<(u64, String)> = m
                    .current_leader
                    .and_then(|l| membership.get_node(&l).map(|i| (l, i.peer.clone())))
                    .into_iter()
                    .collect();
                targets.extend(
                    membership
                        .nodes()
                        .filter(|(id, _)| **id != node.id)
                        .map(|(id, i)| (*id, i.peer.clone())),
                );
                let mut ok = false;
                for (target, addr) in targets {
                    let r = node
                        .net
                        .update_node(target, &addr, node.id, &me, Duration::from_secs(5))
                        .await;
                    if r.is_ok() {
                        ok = true;
                        break;
                    }
                }
                ok
            };
            if done {
                tracing::info!(
                    old_api = %old.api, old_peer = %old.peer, old_rules = old.apply_rules,
                    api = %me.api, peer = %me.peer, rules = me.apply_rules,
                    "re-advertised this node's addresses and build"
                );
                pause = pause.saturating_mul(2).min(Duration::from_secs(60));
            } else {
                pause = READVERTISE_PAUSE;
            }
        } else {
            pause = READVERTISE_PAUSE;
        }
        tokio::time::sleep(pause).await;
    }
}

const READVERTISE_PAUSE: Duration = Duration::from_secs(2);
