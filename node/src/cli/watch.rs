//! Commands that follow the cluster as it changes, on the journal's stream instead of polling:
//! `rackd events --follow`, and [`Changes`], which wakes `tasks show --watch`, `power --wait`
//! and `deploy --wait` when the thing they wait on changes.
//!
//! Layer: part of `cli`; depends on `client` and `rackd_types` only.

use std::time::Duration;

use rackd_types::{Event, EventQuery};

use super::output::{emit, stdout_closed, time};
use crate::client::{Client, EventStream, Followed};

/// How often a waiter re-reads what it waits on even when no event names it (what the
/// journal does not record, such as a lease renewal, still shows within this).
pub const REREAD: Duration = Duration::from_secs(5);
/// How often a waiter without a stream (the node refused or lost it) re-reads.
const POLL: Duration = Duration::from_secs(1);

/// Wakes a waiter when an event about one entity comes.
pub struct Changes {
    stream: Option<EventStream>,
}

impl Changes {
    /// Follow the events about `entity` `id` from now. Start it before reading the entity:
    /// a change between the read and the follow then still wakes the reader.
    pub async fn about(c: &Client, entity: &str, id: u64) -> Changes {
        let q = EventQuery {
            entity: Some(entity.to_string()),
            entity_id: Some(id),
            ..Default::default()
        };
        let stream = match c.follow_events(&q).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "cannot follow the journal; polling instead");
                None
            }
        };
        Changes { stream }
    }

    /// Resolves at the next event about the entity, or after [`REREAD`].
    pub async fn wait(&mut self) {
        let Some(s) = self.stream.as_mut() else {
            tokio::time::sleep(POLL).await;
            return;
        };
        match tokio::time::timeout(REREAD, s.next()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the journal's stream ended; polling instead");
                self.stream = None;
            }
        }
    }
}

/// `rackd events --follow`: each event as a line (JSON lines with `-o json`) until
/// interrupted or the reader goes away (`| head`).
pub async fn follow_events(c: &Client, q: EventQuery, json: bool) -> anyhow::Result<()> {
    let mut s = c.follow_events(&q).await?;
    if !json && !emit("SEQ  TIME  ACTOR  KIND  MESSAGE") {
        return Ok(());
    }
    loop {
        // Wait for the next event, looking every second whether the reader went away.
        let next = match tokio::time::timeout(Duration::from_secs(1), s.next()).await {
            Ok(n) => n?,
            Err(_) if stdout_closed() => return Ok(()),
            Err(_) => continue,
        };
        let line = match next {
            Followed::Event(e) if json => serde_json::to_string(&e)?,
            Followed::Event(e) => event_line(&e),
            Followed::Gap(g) => {
                eprintln!(
                    "warning: events {}..{} left the journal before they were read",
                    g.after + 1,
                    g.oldest - 1
                );
                continue;
            }
        };
        if !emit(&line) {
            return Ok(());
        }
    }
}

/// An event as one line of text.
pub fn event_line(e: &Event) -> String {
    format!(
        "{}  {}  {}  {}  {}",
        e.seq,
        time(e.time),
        e.actor,
        e.kind,
        e.message
    )
}
