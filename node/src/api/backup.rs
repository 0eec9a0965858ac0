//! `POST /v1/backup`: a consistent copy of the replicated state with the cluster CA sealed
//! under the caller's passphrase, as one file ([`crate::backup`] has the format). The node
//! first catches up with the leader (a ReadIndex round: the copy holds every acknowledged
//! write), then takes its replica and the index it stands at in one read, and encodes off the
//! async threads. Only a node that holds the CA key (a voter) can answer.
//!
//! Layer: part of `api`; depends on `backup` and the `Cluster` trait.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use rackd_types::{ApiError, CreateBackup};

use super::{parse_json, Actor, AppState, HttpResult};
use crate::backup::{self, CaPem, MIN_PASSPHRASE};

pub async fn create(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> HttpResult<Response> {
    let req: CreateBackup = parse_json(&body)?;
    if req.passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(ApiError::invalid(format!(
            "the passphrase must be at least {MIN_PASSPHRASE} characters"
        ))
        .into());
    }
    node.linearize().await?;
    let ca = node.cluster_ca().map_err(|_| {
        ApiError::unavailable(format!(
            "node {} does not hold the cluster CA key (learners never do): ask a voter",
            node.id()
        ))
    })?;
    let ca = CaPem {
        cert_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem().to_string(),
    };
    let (state, index) = node.applied_state();
    let node_id = node.id();
    let now = crate::cluster::now_ms();
    let file = tokio::task::spawn_blocking(move || {
        let cluster = state.cluster_id().to_string();
        backup::encode(&cluster, node_id, now, index, &state, &ca, &req.passphrase)
            .map(|b| (cluster, b))
    })
    .await
    .map_err(|e| ApiError::internal(format!("backup encoding stopped: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let (cluster, file) = file;
    tracing::info!(actor = %actor.0, index, bytes = file.len(), "backup taken");
    let name = format!("attachment; filename=\"rackd-{cluster}-{index}.backup\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        file,
    )
        .into_response())
}
