//! Cluster endpoints: health, membership, join, member removal, join/API tokens, the journal.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rackd_raft::cmd::Command;
use rackd_raft::NodeInfo;
use rackd_types::{
    ApiError, ApiTokenView, CertRenewal, ClusterInfo, CreateApiToken, CreateJoinToken,
    CreatedApiToken, CreatedJoinToken, ErrorCode, Health, JoinRequest, JoinResponse, JoinTokenView,
    ListQuery, Member, MemberProgress, Page, Ready,
};

use super::inventory::{collect_page, page_params, query, read_barrier};
use super::{parse_id, parse_json, Actor, AppState, HttpError, HttpResult};
use crate::cluster::secrets::{hash_secret, new_secret};
use crate::cluster::MemberRole;

pub async fn health(State(node): State<AppState>) -> Json<Health> {
    let m = node.status();
    let removed = node.is_removed();
    let failure = node.failure();
    let cert = node.cert_validity();
    let raft_state = match (removed, &failure) {
        (true, _) => "removed",
        (false, Some(_)) => "failed",
        (false, None) => m.role.as_str(),
    };
    Json(Health {
        node_id: node.id(),
        raft_state: raft_state.to_string(),
        failure,
        cluster_id: node.state().cluster_id().to_string(),
        members: m.members.keys().copied().collect(),
        removed,
        leader_id: m.leader_id,
        term: m.term,
        last_applied: m.last_applied,
        last_log_index: m.last_log_index,
        snapshot_index: m.snapshot_index,
        purged_index: m.purged_index,
        cert_issued_at_ms: cert.map(|c| c.0),
        cert_expires_at_ms: cert.map(|c| c.1),
    })
}

/// How long a readiness probe waits for this node to reach the leader's commit index.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /v1/ready`: 200 when this node can serve a linearizable read now — it is a member,
/// knows a leader, and has applied what the leader had committed (a ReadIndex round trip,
/// bounded by [`READY_WAIT`]); otherwise 503 saying why (removed, failed, no leader, catching
/// up). `/v1/health` stays the liveness answer.
pub async fn ready(State(node): State<AppState>) -> HttpResult<Json<Ready>> {
    let not_ready = |why: String| HttpError(ApiError::unavailable(format!("not ready: {why}")));
    if node.is_removed() {
        return Err(not_ready("this node was removed from the cluster".into()));
    }
    if let Some(f) = node.failure() {
        return Err(not_ready(format!("its storage failed ({f})")));
    }
    let Some(leader_id) = node.status().leader_id else {
        return Err(not_ready(
            "no leader known (no quorum of voters reachable?)".into(),
        ));
    };
    match tokio::time::timeout(READY_WAIT, node.linearize()).await {
        Err(_) => Err(not_ready(format!(
            "catching up: applied {:?}, the leader's commit index not reached within {}s",
            node.status().last_applied,
            READY_WAIT.as_secs()
        ))),
        Ok(Err(e)) => Err(not_ready(e.message)),
        Ok(Ok(())) => Ok(Json(Ready {
            node_id: node.id(),
            leader_id,
            last_applied: node.status().last_applied,
        })),
    }
}

/// Ask every node to renew its certificate (`RenewCerts`): each node sees the request in its
/// replica and renews within its next check.
pub async fn renew_certs(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
) -> HttpResult<(StatusCode, Json<CertRenewal>)> {
    node.propose(
        &actor.0,
        super::idempotency_key(&headers, &actor)?,
        Command::RenewCerts {},
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CertRenewal {
            renew_before_ms: node.state().meta.certs_renew_before_ms,
        }),
    ))
}

pub async fn cluster_info(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<ClusterInfo>> {
    let q = query(q)?;
    read_barrier(&node, q.stale).await?;
    let m = node.status();
    let members = m
        .members
        .iter()
        .map(|(id, info)| Member {
            id: *id,
            api_addr: info.api.clone(),
            peer_addr: info.peer.clone(),
            role: if m.voters.contains(id) {
                MemberRole::Voter
            } else {
                MemberRole::Learner
            }
            .as_str()
            .to_string(),
            apply_rules: info.known_rules(),
            progress: m.followers.get(id).map(|f| MemberProgress {
                matched_index: f.matched,
                lag: f.lag(m.last_log_index),
                last_contact_ms: f.last_ack_ms,
                reachable: f.reachable(),
            }),
        })
        .collect();
    Ok(Json(ClusterInfo {
        cluster_id: node.state().cluster_id().to_string(),
        members,
        leader_id: m.leader_id,
        term: m.term,
        commit_index: m.commit_index,
        last_applied: m.last_applied,
        apply_rules: node.state().meta.rules.number(),
    }))
}

/// Join (runs on the leader; followers forward). Phase 1 (`node_id` absent) trades the join
/// token and the node's CSR for a fresh node id and its certificate from the cluster CA. Phase 2 (`node_id` set) adds the node as a learner, waits until it
/// has caught up, then promotes it to voter unless it asked to stay a learner. Both phases are
/// safe to retry.
pub async fn join(State(node): State<AppState>, body: Bytes) -> HttpResult<Json<JoinResponse>> {
    let req: JoinRequest = parse_json(&body)?;
    if req.api_addr.trim().is_empty() || req.peer_addr.trim().is_empty() {
        return Err(ApiError::invalid("api_addr and peer_addr are required").into());
    }
    // A build that cannot decode the entries the cluster writes must not become a member.
    let knows = NodeInfo {
        apply_rules: req.apply_rules.unwrap_or(0),
        ..NodeInfo::default()
    }
    .known_rules();
    let decides = node.state().meta.rules;
    if knows < decides.number() {
        return Err(ApiError::new(
            ErrorCode::JoinRejected,
            format!(
                "this cluster decides entries by apply rules {decides}, and the joining \
                 node's build knows rules up to {knows}: install the cluster's release on it"
            ),
        )
        .into());
    }
    // Joiners send the secret alone; a whole token (with its CA pin) is accepted too.
    let hash = hash_secret(crate::cluster::pki::split_join_token(&req.token).0);
    let Some(id) = req.node_id else {
        // Phase 1 also issues the node's certificate: the CSR must be sound, and this leader
        // must hold the CA key, before the token is spent.
        let csr = req.csr.as_deref().unwrap_or_default();
        if csr.trim().is_empty() {
            return Err(ApiError::invalid(
                "csr is required in phase 1 (the joining node's certificate signing request)",
            )
            .into());
        }
        crate::cluster::pki::check_csr(csr).map_err(|e| ApiError::invalid(e.to_string()))?;
        // Only a token this cluster issued may cost a Raft entry: unknown tokens are refused
        // from the (linearized) replica, so junk join attempts never reach the log.
        // Used and expired tokens are refused the same way (apply would refuse them too).
        node.linearize().await?;
        node.state().join_token_admits(
            &hash,
            &req.api_addr,
            &req.peer_addr,
            crate::cluster::now_ms(),
        )?;
        let ca = node.cluster_ca()?;
        let v = node
            .propose(
                "join",
                None,
                Command::AllocateNodeId {
                    token_hash: hash,
                    api: req.api_addr.clone(),
                    peer: req.peer_addr.clone(),
                },
            )
            .await?;
        let (node_id, cluster_id) = v.into_node_allocated()?;
        let cert = ca
            .issue_for(
                csr,
                node_id,
                &cluster_id,
                Some(&req.api_addr),
                std::time::SystemTime::now(),
            )
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        return Ok(Json(JoinResponse {
            node_id,
            cluster_id,
            role: None,
            ca_pem: Some(ca.cert_pem.clone()),
            cert_pem: Some(cert),
        }));
    };

    // Phase 2: the token must be the one that allocated this id. The addresses may have
    // changed since phase 1 (a node on DHCP); the token binds the node id, not its addresses.
    // A removed id is never admitted again; a burnt token (its node completed the join) only
    // gets the member's current role back, whatever addresses it comes from.
    node.linearize().await?;
    let (cluster_id, burnt) = {
        let st = node.state();
        let tok = st
            .join_token_by_hash(&hash)
            .ok_or_else(|| ApiError::new(ErrorCode::JoinRejected, "unknown join token"))?;
        if tok.view.used_by_node != Some(id) {
            return Err(ApiError::new(
                ErrorCode::JoinRejected,
                "join token does not belong to this node",
            )
            .into());
        }
        if st.is_removed_node(id) {
            return Err(crate::cluster::membership::removed_node(id).into());
        }
        (st.cluster_id().to_string(), tok.joined)
    };
    let role = if burnt {
        let status = node.status();
        if !status.members.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::JoinRejected,
                format!("join token already used: node {id} completed its join and is no member"),
            )
            .into());
        }
        if status.voters.contains(&id) {
            MemberRole::Voter
        } else {
            MemberRole::Learner
        }
    } else {
        let info = NodeInfo {
            api: req.api_addr.clone(),
            peer: req.peer_addr.clone(),
            apply_rules: req.apply_rules.unwrap_or(0),
        };
        let role = node.add_node(id, info, req.learner).await?;
        node.propose(
            "join",
            None,
            Command::CompleteJoin {
                token_hash: hash,
                node_id: id,
            },
        )
        .await?;
        role
    };
    Ok(Json(JoinResponse {
        node_id: id,
        cluster_id,
        role: Some(role.as_str().to_string()),
        ca_pem: None,
        cert_pem: None,
    }))
}

pub async fn remove_member(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    let id = parse_id(&id)?;
    node.remove_member(&actor.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
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
            location: None,
        }
    } else {
        parse_json(&body)?
    };
    let ttl = c.ttl_secs.unwrap_or(3600);
    if ttl == 0 || ttl > 30 * 24 * 3600 {
        return Err(ApiError::invalid("ttl_secs must be 1..=2592000").into());
    }
    let key = super::idempotency_key(&headers, &actor)?;
    let t = crate::cluster::membership::create_join_token(
        &*node.cluster,
        &actor.0,
        key,
        ttl,
        &c.description,
        c.location.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn list_join_tokens(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<JoinTokenView>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params(&q)?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let it = st
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
    if c.expires_in_secs == Some(0) {
        return Err(ApiError::invalid("expires_in_secs must be at least 1").into());
    }
    let token = new_secret("rackd-api-");
    let hash = hash_secret(&token);
    let v = node
        .propose(
            &actor.0,
            super::idempotency_key(&headers, &actor)?,
            Command::CreateApiToken {
                name: c.name.clone(),
                token_hash: hash.clone(),
                role: c.role,
                ttl_ms: c.expires_in_secs.map(|s| s.saturating_mul(1000)),
            },
        )
        .await?;
    let view = v.into_api_token()?;
    let ours = node
        .state()
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

/// Revoke a join token: no join phase admits it from then on.
pub async fn revoke_join_token(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    revoke(&node, &actor, &headers, &id, |id| {
        Command::RevokeJoinToken { id }
    })
    .await
}

/// A revocation by id (`DELETE /v1/tokens/…/{id}`): 204 once applied.
async fn revoke(
    node: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
    cmd: impl FnOnce(u64) -> Command,
) -> HttpResult<StatusCode> {
    let id = parse_id(id)?;
    node.propose(&actor.0, super::idempotency_key(headers, actor)?, cmd(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke an API token: every node refuses it once the revocation is applied there.
pub async fn revoke_api_token(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult<StatusCode> {
    revoke(&node, &actor, &headers, &id, |id| Command::RevokeApiToken {
        id,
    })
    .await
}

pub async fn list_api_tokens(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<ApiTokenView>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params(&q)?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let it = st
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
