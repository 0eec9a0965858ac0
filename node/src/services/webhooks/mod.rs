//! The leader's webhook dispatcher: every enabled webhook gets the journal's events of its
//! kinds, one signed `POST` per event (the wire format is `rackd_types::webhook`), at least
//! once each and in order, retried with backoff ([`outbox`] decides; this shell sends).
//!
//! Only the leader sends: a node that is not the leader runs no worker, and a worker stops
//! at the first sign its node lost the lead (a record it cannot propose). A new leader
//! resumes each webhook from its replicated record, so a leader change repeats at most the
//! deliveries of the last second, under the same event ids, and loses none. A webhook that
//! changes (`version`) gets a new worker, resuming from its record.
//!
//! The signing secret is opened with the voters' key (the leader is a voter). The HTTP
//! client trusts the system's CA bundle, follows no redirect and gives up after
//! [`SEND_TIMEOUT`]. Errors never carry the URL (it may hold credentials).
//!
//! Layer: services; depends on `cluster` and `metrics` only.

pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_types::webhook::{
    signed_payload, EVENT_ID_HEADER, EVENT_KIND_HEADER, SIGNATURE_HEADER, WEBHOOK_HEADER,
};
use rackd_types::{Event, Webhook};
use tokio::time::Instant;

use crate::abort::AbortOnDrop;
use crate::cluster::sealing::{LocationKey, Purpose};
use crate::cluster::{now_ms, Cluster};
use outbox::{Next, Outbox};

/// How long one delivery may take (connect, send, answer).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian keeps the system's CA bundle.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client deliveries go out with: the system's CAs, no redirects, bounded time.
pub fn http_client() -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(SEND_TIMEOUT)
        .user_agent(concat!("rackd/", env!("CARGO_PKG_VERSION")))
        .tls_built_in_root_certs(false);
    match std::fs::read(SYSTEM_CAS).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
        Ok(Ok(cas)) => {
            for c in cas {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read {SYSTEM_CAS}: https webhooks fail"),
        Err(e) => tracing::warn!(error = %e, "no {SYSTEM_CAS}: https webhooks fail"),
    }
    b.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "webhook HTTP client");
        reqwest::Client::new()
    })
}

/// The `X-Rackd-Signature` value of `body` sent at `unix_secs`.
pub fn signature(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &signed_payload(unix_secs, body));
    format!("t={unix_secs},v1={}", hex::encode(tag.as_ref()))
}

/// An error's text with its causes, never the URL.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let e = e.without_url();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// POST one event; `Ok` when the receiver answered 2xx.
async fn send(
    client: &reqwest::Client,
    w: &Webhook,
    secret: &[u8],
    e: &Event,
) -> Result<(), String> {
    let body = serde_json::to_vec(e).map_err(|e| format!("encode the event: {e}"))?;
    let sig = signature(secret, now_ms() / 1000, &body);
    let resp = client
        .post(&w.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, e.seq.to_string())
        .header(EVENT_KIND_HEADER, &e.kind)
        .header(WEBHOOK_HEADER, w.meta.id.to_string())
        .header(SIGNATURE_HEADER, sig)
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {status}"))
    }
}

/// The plaintext secret of webhook `id`, opened with the voters' key.
fn open_secret(node: &dyn Cluster, id: u64) -> Result<Vec<u8>, String> {
    let sealed = node
        .state()
        .webhooks
        .get(&id)
        .map(|w| w.secret.clone())
        .ok_or("the webhook is gone")?;
    let ca = node.cluster_ca().map_err(|e| e.message)?;
    let key = LocationKey::voters_of_ca(&ca).map_err(|e| e.to_string())?;
    key.open(Purpose::WebhookSecret, &sealed)
        .map(String::into_bytes)
        .map_err(|e| format!("cannot open the webhook's secret: {e}"))
}

/// Run until aborted: on the leader, one worker per enabled webhook.
pub async fn run(node: Arc<dyn Cluster>, client: reqwest::Client) {
    let mut workers: HashMap<u64, (u64, AbortOnDrop)> = HashMap::new();
    loop {
        if node.is_leader() {
            let st = node.state();
            workers.retain(|id, (version, h)| {
                !h.0.is_finished()
                    && st
                        .webhooks
                        .get(id)
                        .is_some_and(|w| w.webhook.enabled && w.webhook.meta.version == *version)
            });
            for (id, w) in st.webhooks.iter() {
                if w.webhook.enabled && !workers.contains_key(id) {
                    let version = w.webhook.meta.version;
                    let task = tokio::spawn(deliver(node.clone(), client.clone(), *id, version));
                    workers.insert(*id, (version, AbortOnDrop(task)));
                }
            }
        } else {
            workers.clear();
        }
        node.applied_changed(Duration::from_secs(1)).await;
    }
}

/// Deliver to webhook `id` at `version` while this node leads.
async fn deliver(node: Arc<dyn Cluster>, client: reqwest::Client, id: u64, version: u64) {
    let actor = format!("node:{}", node.id());
    let secret = loop {
        match open_secret(&*node, id) {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(webhook = id, error = %e, "webhook: nothing is sent");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    let Some(w) = node.state().webhooks.get(&id).map(|w| w.webhook.clone()) else {
        return;
    };
    let mut ob = Outbox::resume(&w);
    let metrics = crate::metrics::global();
    loop {
        if !node.is_leader() {
            return;
        }
        let st = node.state();
        let Some(w) = st.webhooks.get(&id).map(|w| w.webhook.clone()) else {
            return;
        };
        if w.meta.version != version || !w.enabled {
            return;
        }
        let now = Instant::now();
        let next = ob.next(&st.events, &w, now);
        drop(st);
        if let Some(d) = ob.record_due(now, next == Next::Idle) {
            let cmd = Command::RecordWebhookDelivery {
                id,
                delivery: d.clone(),
            };
            match node.propose(&actor, None, cmd).await {
                Ok(_) => ob.recorded(d, Instant::now()),
                Err(e) if !node.is_leader() => {
                    tracing::info!(webhook = %w.name, error = %e.message, "no longer the leader: webhook delivery stops here");
                    return;
                }
                Err(e) => {
                    tracing::warn!(webhook = %w.name, error = %e.message, "cannot record webhook delivery");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        match next {
            Next::Send(e) => match send(&client, &w, &secret, &e).await {
                Ok(()) => {
                    metrics.webhook_delivery(true);
                    ob.delivered(e.seq, now_ms());
                }
                Err(err) => {
                    metrics.webhook_delivery(false);
                    tracing::warn!(webhook = %w.name, event = e.seq, attempt = ob.delivery.failures + 1, error = %err, "webhook delivery failed");
                    let jitter = rand::random_range(0.8..=1.2);
                    ob.failed(err, now_ms(), Instant::now(), jitter);
                }
            },
            Next::RetryAt(t) => {
                let until = ob.record_deadline(now).map_or(t, |r| r.min(t));
                tokio::time::sleep_until(until).await;
            }
            Next::Idle => {
                let wait = ob
                    .record_deadline(now)
                    .map_or(Duration::from_secs(5), |r| r.saturating_duration_since(now));
                node.applied_changed(wait.max(Duration::from_millis(10)))
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is HMAC-SHA256 of `t.body`, checked with another implementation.
    #[test]
    fn signatures_are_hmac_sha256_of_the_time_and_body() {
        use hmac::Mac;
        let body = br#"{"seq":7}"#;
        let s = signature(b"whsec_test_secret", 1_700_000_000, body);
        let (t, v1) = s.split_once(',').unwrap();
        assert_eq!(t, "t=1700000000");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test_secret").unwrap();
        mac.update(b"1700000000.");
        mac.update(body);
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(v1, format!("v1={want}"));
        assert_ne!(signature(b"another secret", 1_700_000_000, body), s);
        assert_ne!(signature(b"whsec_test_secret", 1_700_000_001, body), s);
    }
}
