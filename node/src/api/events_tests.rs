//! The journal's stream (`GET /v1/events?follow=true`) against [`FakeCluster`]: the whole
//! router, the real SSE encoding read back with the client's decoder.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use rackd_raft::state::MAX_EVENTS;
use rackd_types::{ErrorBody, ErrorCode, Event, EventGap, EventStreamOpen};
use tower::ServiceExt;

use super::{router, AppState};
use crate::client::sse::{Decoder, Message};
use crate::cluster::fake::FakeCluster;
use rackd_raft::cmd::Command;

const TOKEN: &str = super::tests::TOKEN_FOR_TESTS;

fn cluster() -> Arc<FakeCluster> {
    super::tests::cluster_at(1_000)
}

fn app(c: &Arc<FakeCluster>, stop: Option<tokio::sync::watch::Receiver<bool>>) -> axum::Router {
    let mut s = AppState::new(
        c.clone(),
        reqwest::Client::new(),
        super::tests::test_store(),
    );
    if let Some(stop) = stop {
        s = s.with_stop(stop);
    }
    router(s)
}

/// An open stream, read message by message.
struct Stream {
    body: axum::body::BodyDataStream,
    decoder: Decoder,
    ready: VecDeque<Message>,
}

impl Stream {
    /// The next message, or `None` when the server closed the stream; fails after 5 s.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(m);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("a message within 5 s")?;
            self.ready
                .extend(self.decoder.push(&chunk.expect("body chunk")).unwrap());
        }
    }

    async fn event(&mut self) -> Event {
        let m = self.next().await.expect("an event");
        assert_eq!(m.event, None, "{m:?}");
        let e: Event = serde_json::from_str(&m.data).unwrap();
        assert_eq!(m.id, Some(e.seq.to_string()), "each event's id is its seq");
        e
    }

    async fn end(&mut self) -> ErrorCode {
        let m = self.next().await.expect("the end message");
        assert_eq!(m.event.as_deref(), Some("end"), "{m:?}");
        let b: ErrorBody = serde_json::from_str(&m.data).unwrap();
        assert!(
            self.next().await.is_none(),
            "the stream closes after its end"
        );
        b.error.code
    }
}

/// Open `path` with `token` (and extra headers): the stream, or the status and body of a
/// refusal.
async fn open(
    app: axum::Router,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> Result<(Stream, EventStreamOpen), (StatusCode, String)> {
    let mut rb = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = app.oneshot(rb.body(Body::empty()).unwrap()).await.unwrap();
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        return Err((status, String::from_utf8_lossy(&b).into_owned()));
    }
    let media = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(media.starts_with("text/event-stream"), "{media}");
    let mut s = Stream {
        body: resp.into_body().into_data_stream(),
        decoder: Decoder::default(),
        ready: VecDeque::new(),
    };
    let m = s.next().await.expect("the open message");
    assert_eq!(m.event.as_deref(), Some("open"), "{m:?}");
    let o: EventStreamOpen = serde_json::from_str(&m.data).unwrap();
    assert_eq!(m.id, Some(o.after.to_string()));
    Ok((s, o))
}

fn newest(c: &FakeCluster) -> u64 {
    crate::cluster::Cluster::state(c).meta.next_event_seq
}

#[tokio::test]
async fn a_follower_gets_every_new_event_once_in_order_and_resumes_where_it_left() {
    let c = cluster();
    let at_open = newest(&c);
    let (mut s, o) = open(app(&c, None), "/v1/events?follow=true", TOKEN, &[])
        .await
        .unwrap();
    assert_eq!(
        o.after, at_open,
        "without after, the stream starts from now"
    );
    let mut seen = Vec::new();
    for i in 0..5 {
        c.create_location(&format!("dc{i}"));
        let e = s.event().await;
        assert_eq!(e.kind, "location.created");
        seen.push(e.seq);
    }
    assert_eq!(seen, (at_open + 1..=at_open + 5).collect::<Vec<_>>());
    drop(s);

    // Resume after the second: the rest, then what comes next; Last-Event-ID wins over after.
    let resume = seen[1].to_string();
    let (mut s, o) = open(
        app(&c, None),
        "/v1/events?follow=true&after=0",
        TOKEN,
        &[("last-event-id", &resume)],
    )
    .await
    .unwrap();
    assert_eq!(o.after, seen[1]);
    for want in &seen[2..] {
        assert_eq!(s.event().await.seq, *want);
    }
    c.create_location("late");
    assert_eq!(s.event().await.seq, seen[4] + 1);

    // From the start of the journal: every event, oldest first.
    let (mut s, _) = open(app(&c, None), "/v1/events?follow=true&after=0", TOKEN, &[])
        .await
        .unwrap();
    for want in 1..=newest(&c) {
        assert_eq!(s.event().await.seq, want);
    }
}

#[tokio::test]
async fn filters_narrow_pages_and_streams_alike() {
    let c = cluster();
    let loc = c.create_location("dc1");
    let (mut s, _) = open(
        app(&c, None),
        &format!("/v1/events?follow=true&after=0&entity=location&entity_id={loc}"),
        TOKEN,
        &[],
    )
    .await
    .unwrap();
    let (mut fam, _) = open(
        app(&c, None),
        "/v1/events?follow=true&after=0&kind=location",
        TOKEN,
        &[],
    )
    .await
    .unwrap();
    let other = c.create_location("dc2");
    assert_eq!(s.event().await.entity_id, Some(loc));
    for want in [loc, other] {
        let e = fam.event().await;
        assert!(e.kind.starts_with("location."), "{e:?}");
        assert_eq!(e.entity_id, Some(want));
    }
    // The page answers the same filter.
    let resp = app(&c, None)
        .oneshot(
            Request::builder()
                .uri(format!("/v1/events?entity=location&entity_id={other}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let page: rackd_types::Page<Event> = serde_json::from_slice(&b).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].entity_id, Some(other));
    // Nothing about dc1 since: the filtered stream stays quiet (a keep-alive at most).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next())
            .await
            .is_err(),
        "an event about another location passed the filter"
    );
}

#[tokio::test]
async fn bad_follow_requests_are_refused_with_a_json_error() {
    let c = cluster();
    let beyond = format!("/v1/events?follow=true&after={}", newest(&c) + 1);
    for (path, headers) in [
        (beyond.as_str(), vec![]),
        ("/v1/events?follow=true&limit=5", vec![]),
        ("/v1/events?follow=true&entity_id=3", vec![]),
        ("/v1/events?follow=true&kind=", vec![]),
        ("/v1/events?follow=maybe", vec![]),
        ("/v1/events?follow=true", vec![("last-event-id", "x")]),
    ] {
        let Err((status, body)) = open(app(&c, None), path, TOKEN, &headers).await else {
            panic!("{path} {headers:?} was followed");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        let e: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    }
    let Err((status, _)) = open(app(&c, None), "/v1/events?follow=true", "nope", &[]).await else {
        panic!("an unknown token followed the journal");
    };
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Events dropped from the bounded journal before a client read them are reported once, as a
/// gap, and the stream goes on from the oldest kept.
#[tokio::test]
async fn events_that_left_the_journal_unread_are_reported_as_a_gap() {
    let c = cluster();
    for i in 0..MAX_EVENTS + 10 {
        c.create_location(&format!("l{i}"));
    }
    let oldest = *crate::cluster::Cluster::state(&*c)
        .events
        .first_key()
        .unwrap();
    assert!(oldest > 2);
    let (mut s, _) = open(app(&c, None), "/v1/events?follow=true&after=1", TOKEN, &[])
        .await
        .unwrap();
    let m = s.next().await.unwrap();
    assert_eq!(m.event.as_deref(), Some("gap"));
    let g: EventGap = serde_json::from_str(&m.data).unwrap();
    assert_eq!(g, EventGap { after: 1, oldest });
    assert_eq!(s.event().await.seq, oldest);
    assert_eq!(s.event().await.seq, oldest + 1);
}

#[tokio::test]
async fn a_revoked_token_ends_its_streams() {
    let c = cluster();
    let resp = app(&c, None)
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/v1/tokens/api")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"name":"watcher","role":"reader"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let (id, token) = (v["id"].as_u64().unwrap(), v["token"].as_str().unwrap());
    let (mut s, _) = open(app(&c, None), "/v1/events?follow=true", token, &[])
        .await
        .unwrap();
    c.apply_ok("admin", Command::RevokeApiToken { id });
    // The revocation is itself journalled; the stream may deliver it, then ends.
    loop {
        let m = s.next().await.expect("the end of the stream");
        if m.event.as_deref() == Some("end") {
            let b: ErrorBody = serde_json::from_str(&m.data).unwrap();
            assert_eq!(b.error.code, ErrorCode::Unauthorized);
            assert!(b.error.message.contains("revoked"), "{}", b.error.message);
            break;
        }
        let e: Event = serde_json::from_str(&m.data).unwrap();
        assert_eq!(e.kind, "token.api_revoked");
    }
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn a_stopping_node_ends_its_streams() {
    let c = cluster();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (mut s, _) = open(app(&c, Some(rx)), "/v1/events?follow=true", TOKEN, &[])
        .await
        .unwrap();
    tx.send(true).unwrap();
    assert_eq!(s.end().await, ErrorCode::Unavailable);
}
