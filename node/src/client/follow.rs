//! Following the journal: `GET /v1/events?follow=true` as a typed stream ([`EventStream`])
//! that survives a broken or silent connection. It resumes where it was (`after` the last
//! sequence number it saw, or where the server said the stream opened), retrying for the
//! client's retry time; so a reader sees every event once, in order, or a gap the server
//! reports. The server ending the stream for a reason that will not pass (a revoked token)
//! is an error; a stopping node is reconnected to.
//!
//! Leaf module: no crate imports (the client's own `sse` decoder only).

use std::collections::VecDeque;
use std::time::Duration;

use rackd_types::{ApiError, ErrorBody, ErrorCode, Event, EventGap, EventQuery, EventStreamOpen};

use super::sse::{Decoder, Message};
use super::{Client, ClientError};

/// No byte for this long (three of the server's keep-alives) and the connection is taken
/// for dead.
pub const IDLE: Duration = Duration::from_secs(45);

/// What a followed journal yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    Event(Event),
    /// Events after `after` and before `oldest` left the journal unread.
    Gap(EventGap),
}

/// An open (or reopening) follow of the journal.
pub struct EventStream {
    client: Client,
    query: EventQuery,
    /// The sequence number to resume after (none until the server said where it opened).
    after: Option<u64>,
    body: Option<reqwest::Response>,
    decoder: Decoder,
    ready: VecDeque<Followed>,
    /// Since the connection was lost, until when reconnecting is tried (kept across calls:
    /// a caller that times `next` out and calls again does not restart the clock).
    retry_until: Option<tokio::time::Instant>,
}

impl Client {
    /// Follow the journal from `q.after` (none: from now), with `q`'s filters. Connects
    /// before returning, so a refused request (bad filter, bad token) is an error here.
    pub async fn follow_events(&self, q: &EventQuery) -> Result<EventStream, ClientError> {
        let mut s = EventStream {
            client: self.clone(),
            query: EventQuery {
                follow: Some(true),
                limit: None,
                ..q.clone()
            },
            after: q.after,
            body: None,
            decoder: Decoder::default(),
            ready: VecDeque::new(),
            retry_until: None,
        };
        s.connect().await?;
        // The open message says where the stream starts: position() is known from here on.
        while s.after.is_none() && s.ready.is_empty() && s.body.is_some() {
            s.read().await?;
        }
        Ok(s)
    }
}

impl EventStream {
    /// The sequence number the stream is past (what a new follow would resume after).
    pub fn position(&self) -> Option<u64> {
        self.after
    }

    /// The next event or gap, waiting as long as it takes; reconnects as needed.
    pub async fn next(&mut self) -> Result<Followed, ClientError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(f);
            }
            if self.body.is_none() {
                self.connect().await?;
            }
            self.read().await?;
        }
    }

    /// Read one chunk of the open stream and take its messages; a stream that ended, broke
    /// or went silent is dropped (the next read reopens it where it was).
    async fn read(&mut self) -> Result<(), ClientError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(());
        };
        let chunk = match tokio::time::timeout(IDLE, body.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                self.body = None;
                return Ok(());
            }
        };
        let messages = self
            .decoder
            .push(&chunk)
            .map_err(|e| ClientError::Local(format!("event stream: {e}")))?;
        for m in messages {
            self.take(m)?;
        }
        Ok(())
    }

    /// One message of the stream.
    fn take(&mut self, m: Message) -> Result<(), ClientError> {
        let bad = |what: &str, e: serde_json::Error| {
            ClientError::Local(format!("event stream: malformed {what}: {e}"))
        };
        match m.event.as_deref() {
            None | Some("message") => {
                let e: Event = serde_json::from_str(&m.data).map_err(|e| bad("event", e))?;
                self.after = Some(e.seq);
                self.ready.push_back(Followed::Event(e));
            }
            Some("open") => {
                let o: EventStreamOpen =
                    serde_json::from_str(&m.data).map_err(|e| bad("open", e))?;
                self.after.get_or_insert(o.after);
            }
            Some("gap") => {
                let g: EventGap = serde_json::from_str(&m.data).map_err(|e| bad("gap", e))?;
                self.ready.push_back(Followed::Gap(g));
            }
            Some("end") => {
                let b: ErrorBody = serde_json::from_str(&m.data).map_err(|e| bad("end", e))?;
                self.body = None;
                if b.error.code != ErrorCode::Unavailable {
                    return Err(ClientError::Api {
                        status: b.error.code.http_status(),
                        error: b.error,
                        retry_after: None,
                    });
                }
                // The node stops or left: reconnecting tells (a restarted node answers).
            }
            Some(_) => {} // a kind this client does not know: skipped
        }
        Ok(())
    }

    /// (Re)open the stream after `self.after`, retrying unreachable nodes and 503s for the
    /// client's retry time.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let retry_for = self.client.retry_for;
        let deadline = *self
            .retry_until
            .get_or_insert_with(|| tokio::time::Instant::now() + retry_for);
        let mut backoff = Duration::from_millis(200);
        loop {
            let e = match self.open().await {
                Ok(resp) => {
                    self.body = Some(resp);
                    self.decoder = Decoder::default();
                    self.retry_until = None;
                    return Ok(());
                }
                Err(e) if e.retryable(true) => e,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(e);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn open(&self) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}/v1/events", self.client.base);
        let q = EventQuery {
            after: self.after,
            ..self.query.clone()
        };
        let rb = self
            .client
            .http
            .get(&url)
            .query(&q)
            .header("accept", "text/event-stream");
        // The head must come in the client's time; the body is as long as the follow.
        let send = self.client.send_raw(rb, &url);
        let resp = match self.client.timeout {
            Some(d) => tokio::time::timeout(d, send).await.map_err(|_| {
                ClientError::Local(format!("{url}: no answer within {}s", d.as_secs()))
            })?,
            None => send.await,
        }?;
        let media = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !media.starts_with("text/event-stream") {
            return Err(ClientError::Api {
                status: resp.status().as_u16(),
                error: ApiError::new(
                    ErrorCode::Internal,
                    format!("{url} answered {media:?}, not an event stream (an older node?)"),
                ),
                retry_after: None,
            });
        }
        Ok(resp)
    }
}
