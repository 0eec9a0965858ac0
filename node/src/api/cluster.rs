//! Cluster endpoints: health, membership, join, member removal, join/API tokens, the journal.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use rackd_raft::cmd::Command;
use rackd_raft::NodeInfo;
use rackd_types::{
    ApiError, ApiTokenView, ClusterInfo, CreateApiToken, CreateJoinToken, CreatedApiToken,
    CreatedJoinToken, ErrorCode, Event, Health, JoinRequest, JoinResponse, JoinTokenView,
    ListQuery, Member, Page,
};
use serde::Deserialize;

use super::auth::Actor;
use super::inventory::{collect_page, page_params, query, read_barrier};
use super::{parse_id, parse_json, AppState, HttpError, HttpResult};
use crate::{hash_secret, new_secret};

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

pub async fn health(State(node): State<AppState>) -> Json<Health> {
    let m = node.raft.metrics().borrow_watched().clone();
    let removed = node.removed.load(std::sync::atomic::Ordering::SeqCst);
    Json(Health {
        node_id: node.id,
        raft_state: if removed {
            "removed"
        } else {
            state_name(m.state)
        }
        .to_string(),
        cluster_id: node.sm.read().state.cluster_id().to_string(),
        members: m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect(),
        removed,
        leader_id: m.current_leader,
        term: m.current_term,
        last_applied: m.last_applied.as_ref().map(|l| l.index()),
        last_log_index: m.last_log_index,
        snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
        purged_index: m.purged.as_ref().map(|l| l.index()),
    })
}

pub async fn cluster_info(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<ClusterInfo>> {
    let q = query(q)?;
    read_barrier(&node, q.stale).await?;
    let m = node.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, info)| Member {
            id: *id,
            api_addr: info.api.clone(),
            peer_addr: info.peer.clone(),
            role: if voters.contains(id) {
                "voter"
            } else {
                "learner"
            }
            .to_string(),
        })
        .collect();
    Ok(Json(ClusterInfo {
        cluster_id: node.sm.read().state.cluster_id().to_string(),
        members,
        leader_id: m.current_leader,
        term: m.current_term,
        commit_index: m.local_committed.as_ref().map(|l| l.index()),
        last_applied: m.last_applied.as_ref().map(|l| l.index()),
    }))
}

fn journal_cmd(kind: &str, id: u64, message: String) -> Command {
    Command::Journal {
        kind: kind.to_string(),
        entity: "node".to_string(),
        entity_id: Some(id),
        message,
    }
}

/// Join (runs on the leader; followers forward). Phase 1 (`node_id` absent) trades the join
/// token for a fresh node id. Phase 2 (`node_id` set) adds the node as a learner, waits until it
/// has caught up, then promotes it to voter unless it asked to stay a learner. Both phases are
/// safe to retry.
pub async fn join(State(node): State<AppState>, body: Bytes) -> HttpResult<Json<JoinResponse>> {
    let req: JoinRequest = parse_json(&body)?;
    if req.api_addr.trim().is_empty() || req.peer_addr.trim().is_empty() {
        return Err(ApiError::invalid("api_addr and peer_addr are required").into());
    }
    let hash = hash_secret(&req.token);
    let actor = "join";
    let Some(id) = req.node_id else {
        // Only a token this cluster issued may cost a Raft entry: unknown tokens are refused
        // from the (linearized) replica, so junk join attempts never reach the log.
        // Used and expired tokens are refused the same way (apply would refuse them too).
        node.linearize().await?;
        {
            let a = node.sm.read();
            let reject = |m: &str| HttpError(ApiError::new(ErrorCode::JoinRejected, m));
            let tok = a
                .state
                .join_token_by_hash(&hash)
                .ok_or_else(|| reject("unknown join token"))?;
            match tok.view.used_by_node {
                Some(_)
                    if tok.joined_api.as_deref() != Some(req.api_addr.as_str())
                        || tok.joined_peer.as_deref() != Some(req.peer_addr.as_str()) =>
                {
                    return Err(reject("join token already used by another node"));
                }
                None if crate::now_ms() >= tok.view.expires_at => {
                    return Err(reject("join token expired"));
                }
                _ => {}
            }
        }
        let v = node
            .propose(
                actor,
                None,
                Command::AllocateNodeId {
                    token_hash: hash,
                    api: req.api_addr.clone(),
                    peer: req.peer_addr.clone(),
                },
            )
            .await?;
        #[derive(Deserialize)]
        struct Alloc {
            node_id: u64,
            cluster_id: String,
        }
        let a: Alloc = serde_json::from_value(v).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(Json(JoinResponse {
            node_id: a.node_id,
            cluster_id: a.cluster_id,
            role: None,
        }));
    };

    // Phase 2: the token must be the one that allocated this id. The addresses may have
    // changed since phase 1 (a node on DHCP); the token binds the node id, not its addresses.
    node.linearize().await?;
    let cluster_id = {
        let a = node.sm.read();
        let tok = a
            .state
            .join_token_by_hash(&hash)
            .ok_or_else(|| ApiError::new(ErrorCode::JoinRejected, "unknown join token"))?;
        if tok.view.used_by_node != Some(id) {
            return Err(ApiError::new(
                ErrorCode::JoinRejected,
                "join token does not belong to this node",
            )
            .into());
        }
        a.state.cluster_id().to_string()
    };
    let info = NodeInfo {
        api: req.api_addr.clone(),
        peer: req.peer_addr.clone(),
    };
    let (is_voter, is_member) = {
        let m = node.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        let is_voter = mem.voter_ids().any(|v| v == id);
        (is_voter, mem.get_node(&id).is_some())
    };
    let role = if is_voter {
        "voter"
    } else {
        if !is_member {
            tokio::time::timeout(
                Duration::from_secs(240),
                node.raft.add_learner(id, info, true),
            )
            .await
            .map_err(|_| {
                ApiError::unavailable("new node did not catch up in time; retry the join")
            })?
            .map_err(|e| ApiError::unavailable(format!("add learner: {e}")))?;
            let _ = node
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
        wait_caught_up(&node, id, Duration::from_secs(240)).await?;
        if req.learner {
            "learner"
        } else {
            node.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(|e| ApiError::unavailable(format!("promote to voter: {e}")))?;
            let _ = node
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
            "voter"
        }
    };
    Ok(Json(JoinResponse {
        node_id: id,
        cluster_id,
        role: Some(role.to_string()),
    }))
}

/// Wait until node `id` has replicated at least the leader's last log index as of now.
async fn wait_caught_up(node: &AppState, id: u64, timeout: Duration) -> Result<(), ApiError> {
    let mut rx = node.raft.metrics();
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

pub async fn remove_member(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    let id = parse_id(&id)?;
    let m = node.raft.metrics().borrow_watched().clone();
    let mem = m.membership_config.membership();
    let voters: BTreeSet<u64> = mem.voter_ids().collect();
    if mem.get_node(&id).is_none() {
        return Err(ApiError::not_found(format!("node {id} is not a member")).into());
    }
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(ApiError::conflict("cannot remove the last voter").into());
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    tokio::time::timeout(
        node.write_timeout,
        node.raft.change_membership(change, false),
    )
    .await
    .map_err(|_| ApiError::unavailable("membership change not confirmed in time"))?
    .map_err(|e| ApiError::unavailable(format!("membership change: {e}")))?;
    let _ = node
        .propose(
            &actor.0,
            None,
            journal_cmd("cluster.member_removed", id, format!("node {id} removed")),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub after: Option<u64>,
    pub limit: Option<usize>,
    pub stale: Option<bool>,
}

pub async fn events(
    State(node): State<AppState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> HttpResult<Json<Page<Event>>> {
    let q = query(q)?;
    let (_, limit) = page_params(&ListQuery {
        limit: q.limit,
        ..Default::default()
    })?;
    read_barrier(&node, q.stale).await?;
    let a = node.sm.read();
    let it = a
        .state
        .events
        .range_after(q.after.as_ref())
        .map(|(k, v)| (*k, v));
    Ok(Json(collect_page(it, limit, |_| true)))
}

pub async fn create_join_token(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<CreatedJoinToken>)> {
    let c: CreateJoinToken = if body.is_empty() {
        CreateJoinToken {
            ttl_secs: None,
            description: String::new(),
        }
    } else {
        parse_json(&body)?
    };
    let ttl = c.ttl_secs.unwrap_or(3600);
    if ttl == 0 || ttl > 30 * 24 * 3600 {
        return Err(ApiError::invalid("ttl_secs must be 1..=2592000").into());
    }
    let key = super::idempotency_key(&headers, &actor)?;
    let t = crate::runtime::create_join_token(&node, &actor.0, key, ttl, &c.description).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn list_join_tokens(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<JoinTokenView>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params(&q)?;
    read_barrier(&node, q.stale).await?;
    let a = node.sm.read();
    let it = a
        .state
        .join_tokens
        .range_after(cursor.as_ref())
        .map(|(k, v)| (*k, &v.view));
    Ok(Json(collect_page(it, limit, |_| true)))
}

pub async fn create_api_token(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<CreatedApiToken>)> {
    let c: CreateApiToken = parse_json(&body)?;
    let token = new_secret("rackd-api-");
    let hash = hash_secret(&token);
    let v = node
        .propose(
            &actor.0,
            super::idempotency_key(&headers, &actor)?,
            Command::CreateApiToken {
                name: c.name.clone(),
                token_hash: hash.clone(),
            },
        )
        .await?;
    let view: ApiTokenView =
        serde_json::from_value(v).map_err(|e| HttpError(ApiError::internal(e.to_string())))?;
    let ours = node
        .sm
        .read()
        .state
        .api_tokens
        .get(&view.id)
        .is_some_and(|t| t.hash == hash);
    if !ours {
        return Err(token_already_created("API", view.id));
    }
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiToken {
            id: view.id,
            name: view.name,
            token,
        }),
    ))
}

pub async fn list_api_tokens(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<ApiTokenView>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params(&q)?;
    read_barrier(&node, q.stale).await?;
    let a = node.sm.read();
    let it = a
        .state
        .api_tokens
        .range_after(cursor.as_ref())
        .map(|(k, v)| (*k, &v.view));
    Ok(Json(collect_page(it, limit, |_| true)))
}

/// A retried token creation whose first attempt committed: the token exists, but its secret was
/// only ever in the first answer (it is stored hashed), so it cannot be shown again.
fn token_already_created(what: &str, id: u64) -> HttpError {
    HttpError(ApiError::conflict(format!(
        "{what} token {id} was already created with this Idempotency-Key; its secret cannot \
         be shown again (create a new token and revoke {id} if the secret was lost)"
    )))
}
