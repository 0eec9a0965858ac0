//! Webhook endpoints: register, list, show, change and remove the HTTP endpoints the leader
//! sends events to (`services::webhooks` delivers). Admin only: a webhook exports the journal
//! to an address of the caller's choosing, and its URL may carry credentials.
//!
//! A signing secret reaches the log sealed with the voters' key (only a voter, which may
//! lead, opens it); one the request does not give is generated here, on the leader, and
//! answered once.
//!
//! Layer: part of `api`; uses the [`Cluster`](crate::cluster::Cluster) contract and
//! `cluster::sealing`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rackd_raft::cmd::Command;
use rackd_types::webhook::{MAX_SECRET_LEN, MIN_SECRET_LEN};
use rackd_types::{
    ApiError, CreateWebhook, CreatedWebhook, ListQuery, Page, SecretText, UpdateWebhook, Webhook,
};

use super::inventory::{collect_page, page_params, query, read_barrier};
use super::{
    idempotency_key, if_match, parse_id, parse_json, Actor, AppState, HttpError, HttpResult,
};
use crate::cluster::sealing::{is_sealed, LocationKey, Purpose};
use crate::cluster::secrets::new_secret;
use crate::cluster::Cluster;

/// A secret as the operator gave it: its length, and not looking sealed.
fn check_secret(s: &SecretText) -> Result<(), ApiError> {
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.0.len()) {
        return Err(ApiError::invalid(format!(
            "secret must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes"
        )));
    }
    if is_sealed(&s.0) {
        return Err(ApiError::invalid(
            "secret may not start with rackd-sealed: (rackd's own marker)",
        ));
    }
    Ok(())
}

/// The URL as the HTTP client will read it (apply checks the same rules on every node).
fn check_url(u: &str) -> Result<(), ApiError> {
    rackd_raft::state::webhooks::check_url(u)?;
    reqwest::Url::parse(u)
        .map(|_| ())
        .map_err(|e| ApiError::invalid(format!("webhook url {u:?}: {e}")))
}

fn seal(node: &dyn Cluster, s: &SecretText) -> Result<SecretText, ApiError> {
    let ca = node.cluster_ca()?;
    let key = LocationKey::voters_of_ca(&ca).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(SecretText(key.seal(Purpose::WebhookSecret, &s.0)))
}

pub async fn create_webhook(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<(StatusCode, Json<CreatedWebhook>)> {
    let mut c: CreateWebhook = parse_json(&body)?;
    check_url(&c.url)?;
    let generated = match &c.secret {
        Some(s) => {
            check_secret(s)?;
            None
        }
        None => Some(new_secret("whsec_")),
    };
    let plain = c
        .secret
        .clone()
        .unwrap_or_else(|| SecretText(generated.clone().unwrap_or_default()));
    let sealed = seal(&*node.cluster, &plain)?;
    c.secret = Some(sealed.clone());
    let v = node
        .propose(
            &actor.0,
            idempotency_key(&headers, &actor)?,
            Command::CreateWebhook(c.into()),
        )
        .await?
        .into_webhook()?;
    let ours = node
        .state()
        .webhooks
        .get(&v.meta.id)
        .is_some_and(|w| w.secret == sealed.0);
    if !ours {
        return Err(ApiError::conflict(format!(
            "webhook {} was already created with this Idempotency-Key and a generated secret, \
             which cannot be shown again (give it a new one with PATCH)",
            v.meta.id
        ))
        .into());
    }
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: v,
            secret: generated,
        }),
    ))
}

pub async fn update_webhook(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Json<Webhook>> {
    let id = parse_id(&id)?;
    let mut patch: UpdateWebhook = parse_json(&body)?;
    if let Some(u) = &patch.url {
        check_url(u)?;
    }
    if let Some(s) = &patch.secret {
        check_secret(s)?;
        patch.secret = Some(seal(&*node.cluster, s)?);
    }
    let cmd = Command::UpdateWebhook {
        id,
        if_match: if_match(&headers)?,
        patch: patch.into(),
    };
    let v = node
        .propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
        .await?
        .into_webhook()?;
    Ok(Json(v))
}

pub async fn delete_webhook(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    let id = parse_id(&id)?;
    let cmd = Command::DeleteWebhook {
        id,
        if_match: if_match(&headers)?,
    };
    node.propose(&actor.0, idempotency_key(&headers, &actor)?, cmd)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

super::inventory::reads! {
    what: "webhook",
    table: webhooks,
    view: Webhook,
    extract: |w: &rackd_raft::state::webhooks::StoredWebhook| &w.webhook,
    filter: |_q, _v| Ok(true),
    list: list_webhooks,
    get: get_webhook,
}
