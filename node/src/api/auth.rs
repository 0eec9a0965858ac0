//! Bearer-token authentication and roles. Tokens are stored hashed (SHA-256) in the replicated
//! state; the request's token is hashed and looked up, and its role must be at least the one
//! the endpoint table names for the route (403 otherwise). This runs on the node that receives
//! the request, before anything is forwarded to the leader or proposed. The endpoints the
//! table marks `Auth::Open` (health, and join, which checks its join token) need none. The authenticated token's name becomes the
//! request's [`super::Actor`] (recorded in the journal).
//!
//! A token unknown to this node's replica may be newer than the replica: the node catches up
//! (a ReadIndex round with the leader) once before refusing. Those catch-ups are rationed
//! ([`CatchUps`]: a burst of 20, then 20 a second per node), so a flood of made-up tokens costs
//! the leader a bounded number of rounds; beyond the ration an unknown token is refused from
//! the replica as it stands.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rackd_types::ErrorCode;

use super::{error_response, Actor, AppState};
use crate::cluster::secrets::hash_secret;

/// A token bucket for catch-ups on unknown tokens.
#[derive(Debug)]
pub struct CatchUps {
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

/// Catch-ups allowed at once, and per second after that.
pub const CATCH_UPS_PER_SEC: f64 = 20.0;

impl Default for CatchUps {
    fn default() -> Self {
        CatchUps {
            state: std::sync::Mutex::new((CATCH_UPS_PER_SEC, std::time::Instant::now())),
        }
    }
}

impl CatchUps {
    /// Take one catch-up if the ration allows it now.
    pub fn take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * CATCH_UPS_PER_SEC;
        s.0 = (s.0 + refill).min(CATCH_UPS_PER_SEC);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

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
            .map(|t| t.view.clone())
    };
    let mut found = lookup(&node);
    if found.is_none() && node.catch_ups.take() {
        // The token may be newer than our replica: catch up once before refusing.
        if node.linearize().await.is_ok() {
            found = lookup(&node);
        }
    }
    let Some(view) = found else {
        return error_response(ErrorCode::Unauthorized, "unknown API token");
    };
    let role = view.role;
    if view.expired(crate::cluster::now_ms()) {
        return error_response(ErrorCode::Unauthorized, "API token expired");
    }
    // The role the endpoint needs (from the endpoint table). An unknown route passes on to
    // the router's 404/405.
    let needed =
        super::endpoints::endpoint_for(req.method(), req.uri().path()).and_then(|e| e.auth.role());
    if let Some(needed) = needed.filter(|r| role < *r) {
        return error_response(
            ErrorCode::Forbidden,
            format!(
                "this {} token may not do this (needs {})",
                role.as_str(),
                needed.as_str()
            ),
        );
    }
    req.extensions_mut().insert(Actor(view.name, Some(view.id)));
    next.run(req).await
}
