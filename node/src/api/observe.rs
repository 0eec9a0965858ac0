//! The outermost API layer: counts every request in the metrics by method, route template
//! (from the endpoint table, so labels stay few whatever the ids) and status, and observes
//! its latency.
//!
//! Layer: part of `api`; reads the endpoint table and the bottom-layer `metrics`.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::endpoints::endpoint_for;
use crate::metrics;

/// The route template of a request (`/v1/machines/{id}`) from the endpoint table, so labels
/// stay few whatever the ids; `unmatched` for any other path or method.
pub fn route_of(method: &axum::http::Method, path: &str) -> &'static str {
    endpoint_for(method, path).map_or("unmatched", |e| e.path)
}

/// Middleware (outermost): counts the request by method, route template and status, and
/// observes its latency.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = route_of(req.method(), req.uri().path());
    let resp = next.run(req).await;
    metrics::global().api_request(
        &method,
        route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::route_of;
    use crate::api::endpoints::ENDPOINTS;
    use axum::http::Method;

    #[test]
    fn every_endpoint_is_its_own_route_label() {
        for e in ENDPOINTS {
            let path: Vec<&str> = e
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "17" } else { s })
                .collect();
            assert_eq!(
                route_of(&e.verb.http(), &path.join("/")),
                e.path,
                "{}",
                e.path
            );
        }
        assert_eq!(
            route_of(&Method::GET, "/v1/machines/42"),
            "/v1/machines/{id}"
        );
        assert_eq!(route_of(&Method::GET, "/v1/nope"), "unmatched");
        assert_eq!(route_of(&Method::PUT, "/v1/machines/42"), "unmatched");
        assert_eq!(route_of(&Method::GET, "/metrics"), "/metrics");
    }
}
