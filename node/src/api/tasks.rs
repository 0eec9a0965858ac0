//! Power actions and tasks: `POST /v1/machines/{id}/power` and `…/boot-device` create a
//! replicated task that a node serving the machine's location executes; `GET /v1/tasks[/{id}]`
//! shows its progress; `POST /v1/tasks/{id}/cancel` ends a pending or running one.
//! `POST /v1/machines/{id}/bmc-session` opens the location's IPMI proxies to the machine's BMC
//! for one operator address, for a while.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rackd_raft::cmd::Command;
use rackd_types::{
    ApiError, BmcSession, BmcSessionRequest, BootDeviceRequest, ListQuery, Page, PowerRequest,
    Task, TaskKind, TaskWork, BMC_SESSION_DEFAULT_TTL_SECS, BMC_SESSION_MAX_TTL_SECS,
};

use super::inventory::{collect_page, page_params, query, read_barrier};
use super::{idempotency_key, parse_id, parse_json, Actor, AppState, HttpError, HttpResult};

/// Proposes a task for a machine; 202 with the task record.
async fn create_task(
    node: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    machine_id: u64,
    kind: TaskKind,
) -> HttpResult<(StatusCode, Json<Task>)> {
    let v = node
        .propose(
            &actor.0,
            idempotency_key(headers, actor)?,
            Command::CreateTask { kind, machine_id },
        )
        .await?
        .into_task()?;
    Ok((StatusCode::ACCEPTED, Json(v)))
}

/// Open the IPMI proxies of the machine's location to its BMC for `source`; 201 with the grant.
pub async fn bmc_session(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<BmcSession>)> {
    let machine_id = parse_id(&id)?;
    let r: BmcSessionRequest = parse_json(&body)?;
    let ttl = r.ttl_secs.unwrap_or(BMC_SESSION_DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > BMC_SESSION_MAX_TTL_SECS {
        return Err(ApiError::invalid(format!(
            "ttl_secs must be from 1 to {BMC_SESSION_MAX_TTL_SECS}"
        ))
        .into());
    }
    if r.source.trim().parse::<std::net::IpAddr>().is_err() {
        return Err(
            ApiError::invalid(format!("source {:?} is not an IP address", r.source)).into(),
        );
    }
    let g = node
        .propose(
            &actor.0,
            idempotency_key(&headers, &actor)?,
            Command::GrantBmcSession {
                machine_id,
                source: r.source,
                ttl_ms: ttl * 1000,
            },
        )
        .await?
        .into_bmc_session()?;
    Ok((StatusCode::CREATED, Json(g)))
}

/// The machine's unexpired BMC sessions (by this node's clock).
pub async fn list_bmc_sessions(
    State(node): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Vec<BmcSession>>> {
    let id = parse_id(&id)?;
    let q = query(q)?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let m = st
        .machines
        .get(&id)
        .ok_or_else(|| HttpError(ApiError::not_found(format!("machine {id} not found"))))?;
    let now = crate::cluster::now_ms();
    Ok(Json(
        m.bmc_sessions
            .iter()
            .filter(|g| g.expires_at > now)
            .cloned()
            .collect(),
    ))
}

/// Close the machine's BMC session for one source, or all of them.
pub async fn revoke_bmc_sessions(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    q: Result<Query<rackd_types::BmcSessionQuery>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    let machine_id = parse_id(&id)?;
    let q = query(q)?;
    if let Some(s) = &q.source {
        if s.trim().parse::<std::net::IpAddr>().is_err() {
            return Err(ApiError::invalid(format!("source {s:?} is not an IP address")).into());
        }
    }
    node.propose(
        &actor.0,
        idempotency_key(&headers, &actor)?,
        Command::RevokeBmcSession {
            machine_id,
            source: q.source,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn power(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<Task>)> {
    let machine_id = parse_id(&id)?;
    let r: PowerRequest = parse_json(&body)?;
    let kind = TaskKind::for_work(TaskWork::Power(r.action));
    create_task(&node, &actor, &headers, machine_id, kind).await
}

pub async fn boot_device(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<Task>)> {
    let machine_id = parse_id(&id)?;
    let r: BootDeviceRequest = parse_json(&body)?;
    let kind = TaskKind::for_work(TaskWork::Boot {
        device: r.device,
        persistent: r.persistent,
    });
    create_task(&node, &actor, &headers, machine_id, kind).await
}

pub async fn list_tasks(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<Task>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params(&q)?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let it = st.tasks.range_after(cursor.as_ref()).map(|(k, v)| (*k, v));
    Ok(Json(collect_page(it, limit, |_| true)))
}

pub async fn get_task(
    State(node): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Task>> {
    let id = parse_id(&id)?;
    let q = query(q)?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    st.tasks
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| HttpError(ApiError::not_found(format!("task {id} not found"))))
}

/// `POST /v1/tasks/{id}/retry`: a failed or cancelled workflow runs again from its failed step.
pub async fn retry_task(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> HttpResult<Json<Task>> {
    task_action(&node, &actor, &id, &headers, |id| Command::RetryTask { id }).await
}

pub async fn cancel_task(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> HttpResult<Json<Task>> {
    task_action(&node, &actor, &id, &headers, |id| Command::CancelTask {
        id,
    })
    .await
}

/// Proposes the command `cmd` makes of the task id in the path; the task as it is after.
async fn task_action(
    node: &AppState,
    actor: &Actor,
    id: &str,
    headers: &HeaderMap,
    cmd: fn(u64) -> Command,
) -> HttpResult<Json<Task>> {
    let id = parse_id(id)?;
    let t = node
        .propose(&actor.0, idempotency_key(headers, actor)?, cmd(id))
        .await?
        .into_task()?;
    Ok(Json(t))
}
