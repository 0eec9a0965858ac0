//! The HA HTTP API under `/v1` (axum on hyper).
//!
//! Every route is one row of [`endpoints::ENDPOINTS`] (method, path, handler, auth, request
//! and response types); [`router`] serves that table, `openapi` documents it. Layers,
//! outermost first: a node whose Raft failed answers only its health, then [`auth`] checks the
//! bearer token and its role on the receiving node (nothing unauthenticated is forwarded or
//! proposed), then [`forward`] sends every write to the leader (the client need not know who
//! leads), then the handlers in [`inventory`], [`tasks`] and [`cluster`]. Handlers reach the replicated core only through the
//! [`Cluster`] trait (a `FakeCluster` in the unit tests). Every error is JSON
//! `{"error":{"code","message"}}` with its status code; malformed JSON, paths and queries
//! answer 400, unknown routes 404, wrong methods 405. [`listener`] owns the connections
//! (limits per source, header timeouts).
//!
//! Layer: above `cluster`; never imports `services`, `server` or `cli`.

pub mod auth;
pub mod backup;
pub mod blobs;
pub mod cluster;
pub mod endpoints;
pub mod events;
pub mod forward;
pub mod inventory;
pub mod listener;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod params;
pub mod sealing;
pub mod tasks;
pub mod webhooks;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum::Router;
use rackd_types::{ApiError, ErrorBody, ErrorCode};

use crate::cluster::Cluster;

/// What every handler gets: the cluster (through the [`Cluster`] trait only) and the HTTP
/// client that forwards writes to the leader. Derefs to the cluster.
#[derive(Clone)]
pub struct AppState {
    pub cluster: Arc<dyn Cluster>,
    pub http: reqwest::Client,
    /// This node's blob store (uploads land here; downloads are served from it).
    pub blobs: Arc<crate::blobs::BlobStore>,
    /// The ration of catch-ups on unknown bearer tokens ([`auth::CatchUps`]).
    pub catch_ups: Arc<auth::CatchUps>,
    /// Turns true when the node starts stopping: long answers (event streams) end then.
    pub stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl AppState {
    pub fn new(
        cluster: Arc<dyn Cluster>,
        http: reqwest::Client,
        blobs: Arc<crate::blobs::BlobStore>,
    ) -> Self {
        AppState {
            cluster,
            http,
            blobs,
            catch_ups: Arc::new(auth::CatchUps::default()),
            stopping: None,
        }
    }

    /// Long answers end when `stop` turns true.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stop);
        self
    }
}

impl std::ops::Deref for AppState {
    type Target = dyn Cluster;
    fn deref(&self) -> &Self::Target {
        &*self.cluster
    }
}

/// Who is making the request: the API token's name (recorded in the journal) and its id, which
/// scopes the request's `Idempotency-Key` (names are not unique; ids are never reused).
#[derive(Debug, Clone)]
pub struct Actor(pub String, pub Option<u64>);

/// An [`ApiError`] as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.0.code == ErrorCode::Unavailable;
        let mut resp = (status, Json(ErrorBody { error: self.0 })).into_response();
        if retry {
            // Elections take about a second; clients (ours included) wait this long and retry
            // with the same Idempotency-Key.
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    HttpError(ApiError::new(code, message)).into_response()
}

/// Parse a JSON body into `T`, answering 400 with the reason on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> HttpResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError(ApiError::invalid(format!("invalid JSON body: {e}"))))
}

pub fn parse_id(s: &str) -> HttpResult<u64> {
    s.parse().map_err(|_| {
        HttpError(ApiError::invalid(format!(
            "invalid id {s:?}: expected an integer"
        )))
    })
}

/// `If-Match: <version>` (quotes tolerated, `*` means no condition).
pub fn if_match(h: &HeaderMap) -> HttpResult<Option<u64>> {
    let Some(v) = h.get("if-match") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| HttpError(ApiError::invalid("If-Match is not ASCII")))?
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    if s == "*" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        HttpError(ApiError::invalid(format!(
            "If-Match {s:?} is not a version number"
        )))
    })
}

/// The request's `Idempotency-Key`, scoped by the caller's token id (`t{id}:{key}`): two
/// tokens never share a key space, whatever their names, and no API key can collide with the
/// keys nodes use for their own writes.
pub fn idempotency_key(h: &HeaderMap, actor: &Actor) -> HttpResult<Option<String>> {
    match h.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| HttpError(ApiError::invalid("Idempotency-Key is not ASCII")))?;
            if s.is_empty() || s.len() > 255 {
                return Err(HttpError(ApiError::invalid(
                    "Idempotency-Key must be 1..=255 characters",
                )));
            }
            Ok(Some(format!("t{}:{s}", actor.1.unwrap_or(0))))
        }
    }
}

/// The API router: every endpoint of the table, then (outermost first) write forwarding,
/// authentication and the body limit, all inside the request metrics; unknown routes answer 404 and wrong methods 405, both
/// as JSON errors.
pub fn router(node: AppState) -> Router {
    let mut r = Router::new();
    for e in endpoints::ENDPOINTS {
        r = r.route(e.path, (e.route)());
    }
    r.fallback(|| async { error_response(rackd_types::ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            let mut r =
                error_response(rackd_types::ErrorCode::InvalidRequest, "method not allowed");
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        })
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            forward::to_leader,
        ))
        .layer(axum::middleware::from_fn(params::known_only))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            refuse_when_failed,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(node)
}

/// Every error answer is a JSON error: a rejection the framework answers in plain text (a body
/// over the limit, one that cannot be read) is rewritten into `{"error":{"code","message"}}`
/// with the same status and its text as the message.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut r = (
        status,
        Json(ErrorBody {
            error: ApiError::new(code, message),
        }),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

/// A node whose Raft stopped on a failure answers only `/v1/health` (which says why) until it
/// exits: its replica is frozen, so reads (also `?stale=true`) would serve old data, and
/// writes cannot be made durable here.
async fn refuse_when_failed(
    axum::extract::State(node): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match node.failure() {
        Some(cause) if req.uri().path() != "/v1/health" => {
            HttpError(ApiError::unavailable(format!(
                "this node stopped serving: its storage cannot write ({cause}); it is exiting. \
                 Use another node"
            )))
            .into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod tests;
