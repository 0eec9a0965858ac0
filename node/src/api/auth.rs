//! Bearer-token authentication. Tokens are stored hashed (SHA-256) in the replicated state; the
//! request's token is hashed and looked up. The endpoints the table marks `Auth::Open` (health,
//! and join, which checks its join token) need none. The authenticated token's name becomes the
//! request's [`super::Actor`] (recorded in the journal).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rackd_types::ErrorCode;

use super::{error_response, Actor, AppState};
use crate::cluster::secrets::hash_secret;

pub async fn require_token(State(node): State<AppState>, mut req: Request, next: Next) -> Response {
    if super::endpoints::is_open(req.method(), req.uri().path()) {
        req.extensions_mut().insert(Actor("anonymous".into(), None));
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let Some(token) = token else {
        return error_response(
            ErrorCode::Unauthorized,
            "missing bearer token (Authorization: Bearer ...)",
        );
    };
    let hash = hash_secret(&token);
    let lookup = |node: &AppState| {
        node.state()
            .api_token_by_hash(&hash)
            .map(|t| (t.view.name.clone(), t.view.id))
    };
    let mut name = lookup(&node);
    if name.is_none() {
        // The token may be newer than our replica: catch up once before refusing.
        if node.linearize().await.is_ok() {
            name = lookup(&node);
        }
    }
    match name {
        Some((n, id)) => {
            req.extensions_mut().insert(Actor(n, Some(id)));
            next.run(req).await
        }
        None => error_response(ErrorCode::Unauthorized, "unknown API token"),
    }
}
