//! Write forwarding: a write (POST/PATCH/PUT/DELETE) that reaches a follower is sent to the
//! leader and the leader's answer is returned unchanged. A forwarded request is never forwarded
//! again (no loops); a connection that could not be opened is retried against the new leader
//! until the write timeout, anything else is answered 503 (outcome unknown, never "done").
//! Blob uploads are the exception: the receiving node stores them (`super::blobs`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rackd_types::{ApiError, ErrorCode, RETRY_SAME_KEY};

use super::{error_response, AppState, HttpError};

pub const FORWARDED_HEADER: &str = "x-rackd-forwarded-by";
const MAX_BODY: usize = 1024 * 1024;

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Writes the receiving node serves itself: a blob upload is stored where it arrives (its
/// record is proposed to the leader afterwards), never buffered to be forwarded.
fn stays_here(m: &Method, path: &str) -> bool {
    *m == Method::PUT && path.starts_with("/v1/blobs/")
}

pub async fn to_leader(State(node): State<AppState>, req: Request, next: Next) -> Response {
    if !is_write(req.method()) || node.is_leader() || stays_here(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let already_forwarded = req.headers().contains_key(FORWARDED_HEADER);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                ErrorCode::InvalidRequest,
                "request body too large or unreadable",
            )
        }
    };
    let is_join = parts.uri.path() == "/v1/cluster/join";
    let timeout = if is_join {
        Duration::from_secs(300)
    } else {
        node.write_timeout() + Duration::from_secs(5)
    };
    let deadline = tokio::time::Instant::now() + node.write_timeout();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((leader, info)) = node.wait_leader(remaining).await else {
            return HttpError(ApiError::no_leader()).into_response();
        };
        if leader == node.id() {
            let req = Request::from_parts(parts, Body::from(body));
            return next.run(req).await;
        }
        if already_forwarded {
            return error_response(
                ErrorCode::Unavailable,
                format!(
                    "this node is not the leader (leader is {leader}); write not accepted: \
                     {RETRY_SAME_KEY}"
                ),
            );
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{}", rackd_types::api_url(&info.api), path);
        let mut rb = node
            .http
            .request(parts.method.clone(), &url)
            .timeout(timeout)
            .header(FORWARDED_HEADER, node.id().to_string())
            .body(body.clone());
        for h in [
            "authorization",
            "content-type",
            "idempotency-key",
            "if-match",
        ] {
            if let Some(v) = parts.headers.get(h) {
                rb = rb.header(h, v.clone());
            }
        }
        match rb.send().await {
            Ok(resp) => {
                let status = resp.status();
                let passed: Vec<_> = ["content-type", "retry-after"]
                    .into_iter()
                    .filter_map(|h| Some((h, resp.headers().get(h)?.clone())))
                    .collect();
                let bytes = match resp.bytes().await {
                    Ok(b) => b,
                    // The leader answered (the write may be committed) but its body was lost:
                    // never pass on a success status with an empty body.
                    Err(e) => {
                        return error_response(
                            ErrorCode::Unavailable,
                            format!(
                                "leader {leader} answered {status} but its body was lost ({e}); \
                                 the outcome is unknown: {RETRY_SAME_KEY}"
                            ),
                        )
                    }
                };
                let mut out = Response::new(Body::from(bytes));
                *out.status_mut() = status;
                for (h, v) in passed {
                    out.headers_mut().insert(h, v);
                }
                out.headers_mut().insert(
                    "x-rackd-leader",
                    HeaderValue::from_str(&leader.to_string())
                        .unwrap_or(HeaderValue::from_static("?")),
                );
                return out;
            }
            Err(e) if e.is_connect() => {
                if tokio::time::Instant::now() >= deadline {
                    return error_response(
                        ErrorCode::Unavailable,
                        format!(
                            "leader {leader} unreachable; write not accepted: {RETRY_SAME_KEY}"
                        ),
                    );
                }
                tracing::debug!(leader, "leader unreachable; waiting for a new one");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return error_response(
                    ErrorCode::Unavailable,
                    format!(
                        "forwarding to leader {leader} failed ({e}); the write is not confirmed: \
                         {RETRY_SAME_KEY}"
                    ),
                );
            }
        }
    }
}
