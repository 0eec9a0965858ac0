//! The client against a scripted HTTP server on a real socket: which requests it repeats, with
//! which key, and when it gives up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{json, Value};

use super::{Client, ClientError};

/// What the server saw of each request: its method and `Idempotency-Key`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serve `script` (one status per request; the last one repeats) on a port of loopback. A 503
/// carries `Retry-After: 0` and an `Unavailable` error body, as rackd's does.
async fn server(script: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/{*path}",
        any(move |method: axum::http::Method, headers: HeaderMap| {
            let s = s.clone();
            let script = script.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_string());
                let n = {
                    let mut s = s.lock().unwrap();
                    s.push((method.to_string(), key));
                    s.len()
                };
                let status = script[(n - 1).min(script.len() - 1)];
                let code = StatusCode::from_u16(status).unwrap();
                match status {
                    503 => (
                        code,
                        [("retry-after", "0")],
                        axum::Json(
                            json!({"error": {"code": "Unavailable", "message": "no leader"}}),
                        ),
                    )
                        .into_response(),
                    409 => (
                        code,
                        axum::Json(json!({"error": {"code": "Conflict", "message": "taken"}})),
                    )
                        .into_response(),
                    _ => (code, axum::Json(json!({"attempt": n}))).into_response(),
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr.to_string(), seen)
}

fn requests(s: &Seen) -> Vec<(String, Option<String>)> {
    s.lock().unwrap().clone()
}

#[tokio::test]
async fn a_write_answered_503_is_retried_with_one_key_until_it_succeeds() {
    let (addr, s) = server(vec![503, 503, 201]).await;
    let c = Client::new(&addr, Some("t".into()));
    let v: Value = c
        .post("/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    assert_eq!(v["attempt"], 3);
    let seen = requests(&s);
    assert_eq!(seen.len(), 3);
    let key = seen[0]
        .1
        .clone()
        .expect("a write carries an Idempotency-Key");
    assert!(seen
        .iter()
        .all(|(m, k)| m == "POST" && k.as_deref() == Some(&key)));

    // Another write is another request: another key.
    let (addr, s) = server(vec![200]).await;
    let c = Client::new(&addr, None);
    let _: Value = c.patch("/v1/x", &json!({}), Some(1)).await.unwrap();
    c.delete("/v1/x", None).await.unwrap();
    let seen = requests(&s);
    assert_eq!(seen.len(), 2);
    assert!(seen[0].1.is_some() && seen[1].1.is_some());
    assert_ne!(seen[0].1, seen[1].1);
}

#[tokio::test]
async fn reads_are_retried_without_a_key() {
    let (addr, s) = server(vec![503, 200]).await;
    let v: Value = Client::new(&addr, None).get("/v1/machines").await.unwrap();
    assert_eq!(v["attempt"], 2);
    assert!(requests(&s).iter().all(|(_, k)| k.is_none()));
}

#[tokio::test]
async fn other_errors_and_once_requests_are_answered_at_once() {
    let (addr, s) = server(vec![409, 201]).await;
    let e = Client::new(&addr, None)
        .post::<_, Value>("/v1/machines", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(rackd_types::ErrorCode::Conflict));
    assert_eq!(requests(&s).len(), 1);

    let (addr, s) = server(vec![503, 200]).await;
    let e = Client::new(&addr, None)
        .post_once::<_, Value>("/v1/cluster/join", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(rackd_types::ErrorCode::Unavailable));
    let e = Client::new(&addr, None)
        .delete_once("/v1/cluster/members/2")
        .await;
    assert!(e.is_ok(), "the second request is answered 200");
    assert_eq!(
        requests(&s),
        vec![("POST".into(), None), ("DELETE".into(), None)]
    );
}

#[tokio::test]
async fn retries_end_at_their_bound_with_the_last_answer() {
    let (addr, s) = server(vec![503]).await;
    let c = Client::new(&addr, None).with_retry(Duration::from_millis(300));
    let t = Instant::now();
    let e = c.post::<_, Value>("/v1/x", &json!({})).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 503, .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(requests(&s).len() > 1, "it was retried");

    // A node that is not there is said at once, unless asked to wait for it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let t = Instant::now();
    let e = Client::new(&dead, None)
        .get::<Value>("/v1/health")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let t = Instant::now();
    let c = Client::new(&dead, None)
        .with_retry(Duration::from_millis(700))
        .retry_unreachable();
    assert!(c.get::<Value>("/v1/health").await.is_err());
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}
