//! The journal over HTTP: `GET /v1/events` answers one page, or with `follow=true` a stream
//! of server-sent events (`text/event-stream`) that any node serves from its replica and a
//! client resumes, on the same node or another, from the last sequence number it saw.
//!
//! The stream's wire format:
//! - first `event: open`, `id:` and `data:` an [`EventStreamOpen`]: where the stream starts
//!   (a client that reconnects before any event came resumes from there);
//! - each journal event is one message: `id:` its sequence number (what `Last-Event-ID` or
//!   `after` resume from), `data:` the [`Event`] as JSON;
//! - `event: gap`, `data:` an [`EventGap`]: events the client asked for left the journal
//!   (it keeps the newest `MAX_EVENTS`) before it read them;
//! - `event: end`, `data:` an [`ErrorBody`]: the server ends the stream (the node stops or
//!   left the cluster, the token was revoked or expired); a client reconnects elsewhere or
//!   gives up;
//! - a `:` comment every [`KEEPALIVE`] while nothing happens, so dead connections are noticed.
//!
//! The core is pure: [`Filter`] and [`scan`] read a journal after a cursor. The stream's shell
//! ([`Watch`]) reads the replica, waits on its applies (no polling), and checks each time
//! that the node still serves and the token still holds.
//!
//! Layer: part of `api`; depends on the [`crate::cluster::Cluster`] trait, the metrics and
//! `rackd_types`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rackd_raft::state::{State as Replica, Table};
use rackd_types::{
    ApiError, ErrorBody, ErrorCode, Event, EventGap, EventQuery, EventStreamOpen, ListQuery, Page,
};
use serde::Serialize;

use super::inventory::{collect_page, page_params, query, read_barrier};
use super::{Actor, AppState, HttpError, HttpResult};

/// Events sent per read of the replica at most.
pub const BATCH: usize = 256;
/// A comment line this often on a quiet stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Streams one node serves at once; beyond that a follow request answers 503.
pub const MAX_STREAMS: usize = 512;
/// A stream that nothing wakes checks its token and node this often.
const RECHECK: Duration = Duration::from_secs(5);
/// After a wake, wait this long before reading, so a burst of applies is read once (bounds
/// a stream's reads to 200 a second however busy the cluster is).
const COALESCE: Duration = Duration::from_millis(5);

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    kind: Option<String>,
    entity: Option<String>,
    entity_id: Option<u64>,
}

impl Filter {
    /// The filter a query asks for; empty values and an id without its entity are refused.
    pub fn from_query(q: &EventQuery) -> Result<Filter, ApiError> {
        for (name, v) in [("kind", &q.kind), ("entity", &q.entity)] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ApiError::invalid(format!("{name} must not be empty")));
            }
        }
        if q.entity_id.is_some() && q.entity.is_none() {
            return Err(ApiError::invalid(
                "entity_id needs entity (e.g. entity=machine&entity_id=7)",
            ));
        }
        Ok(Filter {
            kind: q.kind.clone(),
            entity: q.entity.clone(),
            entity_id: q.entity_id,
        })
    }

    pub fn matches(&self, e: &Event) -> bool {
        let kind = self
            .kind
            .as_deref()
            .is_none_or(|k| rackd_types::webhook::kind_matches(k, &e.kind));
        kind && self.entity.as_deref().is_none_or(|x| e.entity == x)
            && self.entity_id.is_none_or(|id| e.entity_id == Some(id))
    }
}

/// What one read of a journal found after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Events after the cursor that left the journal unread.
    pub gap: Option<EventGap>,
    /// The events that pass the filter, oldest first.
    pub events: Vec<Event>,
    /// The new cursor: past every event looked at, kept or not.
    pub cursor: u64,
}

/// Read `journal` after `cursor`: up to `max` events that pass `filter`, looking at no more
/// than `16 * max` (a narrow filter over a long journal is read in several scans; the
/// cursor says how far this one got).
pub fn scan(journal: &Table<u64, Event>, cursor: u64, filter: &Filter, max: usize) -> Scan {
    let gap = match journal.first_key() {
        Some(&oldest) if oldest > cursor.saturating_add(1) => Some(EventGap {
            after: cursor,
            oldest,
        }),
        _ => None,
    };
    let mut events = Vec::new();
    let mut at = cursor;
    for (looked, (seq, e)) in journal.range_after(Some(&cursor)).enumerate() {
        if events.len() == max || looked == 16 * max {
            break;
        }
        at = *seq;
        if filter.matches(e) {
            events.push(e.clone());
        }
    }
    Scan {
        gap,
        events,
        cursor: at,
    }
}

/// A page of `T`, or (`follow=true`) the stream of them.
pub enum Listing<T> {
    Page(Page<T>),
    Stream(Response),
}

impl<T: Serialize> IntoResponse for Listing<T> {
    fn into_response(self) -> Response {
        match self {
            Listing::Page(p) => Json(p).into_response(),
            Listing::Stream(r) => r,
        }
    }
}

/// `GET /v1/events`.
pub async fn list(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> HttpResult<Listing<Event>> {
    let q = query(q)?;
    let filter = Filter::from_query(&q)?;
    if q.follow == Some(true) {
        if q.limit.is_some() {
            return Err(ApiError::invalid("limit is for pages, not a followed stream").into());
        }
        return follow(node, actor, &headers, &q, filter).await;
    }
    let (_, limit) = page_params(&ListQuery {
        limit: q.limit,
        ..Default::default()
    })?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let it = st
        .events
        .range_after(q.after.as_ref())
        .map(|(k, v)| (*k, v));
    Ok(Listing::Page(collect_page(it, limit, |e| {
        filter.matches(e)
    })))
}

/// The stream: its start, then [`Watch`] serves it.
async fn follow(
    node: AppState,
    actor: Actor,
    headers: &HeaderMap,
    q: &EventQuery,
    filter: Filter,
) -> HttpResult<Listing<Event>> {
    // `Last-Event-ID` is what a reconnecting EventSource sends: it wins over `after`.
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    HttpError(ApiError::invalid("Last-Event-ID is not a sequence number"))
                })?,
        ),
    };
    let slot = StreamSlot::take().ok_or_else(|| {
        HttpError(ApiError::unavailable(format!(
            "this node serves {MAX_STREAMS} event streams already; follow on another node"
        )))
    })?;
    read_barrier(&node, q.stale).await?;
    let newest = node.state().meta.next_event_seq;
    let cursor = match resume.or(q.after) {
        None => newest,
        // A linearizable read saw everything any node acknowledged: a later number is not
        // this cluster's (or its journal was restored from an older backup).
        Some(a) if a > newest && q.stale != Some(true) => {
            return Err(ApiError::invalid(format!(
                "after {a} is beyond this cluster's newest event ({newest})"
            ))
            .into());
        }
        Some(a) => a,
    };
    let stop = node.stopping.clone();
    let open = SseEvent::default()
        .event("open")
        .id(cursor.to_string())
        .data(to_json(&EventStreamOpen { after: cursor }));
    let watch = Watch {
        node,
        cursor,
        filter,
        token: actor.1,
        out: VecDeque::from([open]),
        done: false,
        stop,
        _slot: slot,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let e = w.next().await?;
        Some((Ok::<_, Infallible>(e), w))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE))
        .into_response();
    // Proxies (nginx) must pass each event on as it comes.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(Listing::Stream(resp))
}

/// Streams open on this node (a gauge in `/metrics`), bounded by [`MAX_STREAMS`].
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One of the node's [`MAX_STREAMS`], given back when the stream ends.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<StreamSlot> {
        let taken = STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        if taken {
            crate::metrics::global().event_streams.inc();
        }
        taken.then_some(StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::global().event_streams.dec();
    }
}

/// One client's followed journal.
struct Watch {
    node: AppState,
    cursor: u64,
    filter: Filter,
    /// The id of the token that opened the stream: it must hold for the stream to go on.
    token: Option<u64>,
    out: VecDeque<SseEvent>,
    done: bool,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    _slot: StreamSlot,
}

impl Watch {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            self.fill().await;
        }
    }

    /// Queue what comes next: events, a gap, or the end; waits while there is nothing.
    async fn fill(&mut self) {
        loop {
            // The applied index first, the replica second: no apply between them is missed.
            let seen = self.node.applied_index();
            let st = self.node.state();
            if let Some(why) = self.ended(&st) {
                let body = ErrorBody { error: why };
                self.out
                    .push_back(SseEvent::default().event("end").data(to_json(&body)));
                self.done = true;
                return;
            }
            let s = scan(&st.events, self.cursor, &self.filter, BATCH);
            let moved = s.cursor != self.cursor;
            self.cursor = s.cursor;
            if let Some(g) = s.gap {
                self.out
                    .push_back(SseEvent::default().event("gap").data(to_json(&g)));
            }
            for e in &s.events {
                self.out
                    .push_back(SseEvent::default().id(e.seq.to_string()).data(to_json(e)));
            }
            if !self.out.is_empty() {
                return;
            }
            if moved {
                continue;
            }
            tokio::select! {
                _ = self.node.applied_since(seen, RECHECK) => {}
                _ = stopped(&mut self.stop) => {}
            }
            tokio::time::sleep(COALESCE).await;
        }
    }

    /// Why the stream must end now, if it must.
    fn ended(&self, st: &Replica) -> Option<ApiError> {
        if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Some(ApiError::unavailable("this node is stopping"));
        }
        if self.node.is_removed() {
            return Some(ApiError::unavailable(
                "this node was removed from the cluster",
            ));
        }
        if let Some(f) = self.node.failure() {
            return Some(ApiError::unavailable(format!("this node failed: {f}")));
        }
        let id = self.token?;
        match st.api_tokens.get(&id) {
            None => Some(ApiError::new(
                ErrorCode::Unauthorized,
                "the API token was revoked",
            )),
            Some(t) if t.view.expired(crate::cluster::now_ms()) => Some(ApiError::new(
                ErrorCode::Unauthorized,
                "the API token expired",
            )),
            Some(_) => None,
        }
    }
}

/// Resolves when the node starts stopping (never without a stop signal).
async fn stopped(stop: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(rx) = stop {
        if rx.wait_for(|s| *s).await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"unencodable\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: &str, entity: &str, id: Option<u64>) -> Event {
        Event {
            seq,
            time: seq,
            actor: "t".into(),
            kind: kind.into(),
            entity: entity.into(),
            entity_id: id,
            message: String::new(),
        }
    }

    fn journal(seqs: std::ops::RangeInclusive<u64>) -> Table<u64, Event> {
        let mut t = Table::default();
        for s in seqs {
            let (kind, entity) = if s % 2 == 0 {
                ("machine.created", "machine")
            } else {
                ("task.finished", "task")
            };
            t.insert(s, event(s, kind, entity, Some(s % 3)));
        }
        t
    }

    fn q(kind: Option<&str>, entity: Option<&str>, id: Option<u64>) -> EventQuery {
        EventQuery {
            kind: kind.map(String::from),
            entity: entity.map(String::from),
            entity_id: id,
            ..Default::default()
        }
    }

    #[test]
    fn a_kind_matches_itself_and_its_family_only() {
        let f = Filter::from_query(&q(Some("machine"), None, None)).unwrap();
        assert!(f.matches(&event(1, "machine.created", "machine", None)));
        assert!(f.matches(&event(1, "machine", "machine", None)));
        assert!(!f.matches(&event(1, "machines.created", "machine", None)));
        assert!(!f.matches(&event(1, "task.created", "task", None)));
        let f = Filter::from_query(&q(Some("machine.created"), None, None)).unwrap();
        assert!(!f.matches(&event(1, "machine.created_x", "machine", None)));
        let f = Filter::from_query(&q(None, Some("task"), Some(4))).unwrap();
        assert!(f.matches(&event(1, "task.started", "task", Some(4))));
        assert!(!f.matches(&event(1, "task.started", "task", Some(5))));
        assert!(!f.matches(&event(1, "machine.created", "machine", Some(4))));
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(Filter::from_query(&q(Some(" "), None, None)).is_err());
        assert!(Filter::from_query(&q(None, Some(""), None)).is_err());
        assert!(Filter::from_query(&q(None, None, Some(3))).is_err());
    }

    /// Reading a journal scan after scan, from any cursor and with any filter, yields every
    /// matching event once, in order, with a gap exactly when events were dropped unread.
    #[test]
    fn scans_deliver_every_match_once_in_order() {
        let j = journal(40..=400);
        for filter in [
            q(None, None, None),
            q(Some("task"), None, None),
            q(None, Some("machine"), Some(2)),
            q(Some("nothing"), None, None),
        ] {
            let f = Filter::from_query(&filter).unwrap();
            for start in [0, 38, 39, 40, 41, 200, 399, 400] {
                for max in [1, 3, 256] {
                    let mut cursor = start;
                    let mut got = Vec::new();
                    let mut gaps = Vec::new();
                    loop {
                        let s = scan(&j, cursor, &f, max);
                        assert!(s.events.len() <= max);
                        gaps.extend(s.gap);
                        got.extend(s.events.iter().map(|e| e.seq));
                        if s.cursor == cursor {
                            break;
                        }
                        cursor = s.cursor;
                    }
                    let want: Vec<u64> = j
                        .iter()
                        .filter(|(k, e)| **k > start && f.matches(e))
                        .map(|(k, _)| *k)
                        .collect();
                    assert_eq!(got, want, "filter {filter:?} from {start} by {max}");
                    let want_gap = (start + 1 < 40).then_some(EventGap {
                        after: start,
                        oldest: 40,
                    });
                    assert_eq!(gaps.first().copied(), want_gap);
                    assert!(gaps.len() <= 1, "a gap is told once: {gaps:?}");
                }
            }
        }
    }

    #[test]
    fn an_empty_journal_has_no_gap() {
        let j = Table::default();
        let s = scan(&j, 0, &Filter::default(), 10);
        assert_eq!(s.gap, None);
        assert_eq!(s.cursor, 0);
        let s = scan(&j, 7, &Filter::default(), 10);
        assert_eq!(s.gap, None);
    }
}
