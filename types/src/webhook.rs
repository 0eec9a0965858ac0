//! Webhooks: HTTP endpoints an operator registers to be sent the journal's events of chosen
//! kinds, signed, retried, at least once each and in order (DESIGN §9).
//!
//! A delivery is one `POST` of one [`Event`](crate::Event) as JSON with these headers:
//! - `X-Rackd-Event-Id`: the event's sequence number, the same on every node (a receiver
//!   drops a repeat it already has: delivery is at least once);
//! - `X-Rackd-Event`: the event's kind; `X-Rackd-Webhook`: the webhook's id;
//! - `X-Rackd-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 under the webhook's secret of
//!   `<t>.<body>` ([`signed_payload`]); a receiver recomputes it, compares in constant time
//!   and refuses a `t` too far from its clock (a replayed old delivery).
//!
//! A 2xx answer acknowledges the event; anything else (another status, a redirect, a refused
//! connection, no answer within the timeout) is retried with backoff, the same event until
//! it is acknowledged: later events wait behind it.
//!
//! Layer: plain data; depends on `entity` only.

use serde::{Deserialize, Serialize};

use crate::entity::Meta;

/// The header naming the event's sequence number.
pub const EVENT_ID_HEADER: &str = "X-Rackd-Event-Id";
/// The header naming the event's kind.
pub const EVENT_KIND_HEADER: &str = "X-Rackd-Event";
/// The header naming the webhook.
pub const WEBHOOK_HEADER: &str = "X-Rackd-Webhook";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Rackd-Signature";

/// Longest and shortest secret an operator may give (bytes).
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 256;
/// At most this many webhooks per cluster.
pub const MAX_WEBHOOKS: usize = 64;
/// At most this many kinds per webhook.
pub const MAX_KINDS: usize = 64;

/// The bytes the signature is computed over: `<unix seconds>.<body>`.
pub fn signed_payload(unix_secs: u64, body: &[u8]) -> Vec<u8> {
    let mut v = format!("{unix_secs}.").into_bytes();
    v.extend_from_slice(body);
    v
}

/// Whether an event of `kind` matches `pattern`: the kind itself (`task.finished`), or its
/// family (`machine` matches every `machine.*` kind).
pub fn kind_matches(pattern: &str, kind: &str) -> bool {
    kind == pattern
        || kind
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// A secret in a request (a webhook's signing key): write-only, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A registered webhook as the API shows it (its secret is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Webhook {
    #[serde(flatten)]
    pub meta: Meta,
    /// Unique name.
    pub name: String,
    /// Where events are `POST`ed (`http://` or `https://`).
    pub url: String,
    /// The kinds sent: each a kind (`task.finished`) or a family (`machine`); empty: every
    /// event.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// A disabled webhook is sent nothing; its place in the journal stays where it was.
    pub enabled: bool,
    /// How far delivery got (updated by the leader; does not change `version`).
    #[serde(default)]
    pub delivery: WebhookDelivery,
}

impl Webhook {
    /// Whether an event of `kind` is sent to this webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|p| kind_matches(p, kind))
    }
}

/// Where a webhook's delivery stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebhookDelivery {
    /// Every event up to this sequence number was delivered or is not wanted; delivery goes
    /// on with the next. Starts at the newest event when the webhook is created.
    pub delivered_through: u64,
    /// When the last event was acknowledged (leader time, ms).
    #[serde(default)]
    pub last_delivered_at: Option<u64>,
    /// Failed attempts at the event now being delivered (0: none failed).
    #[serde(default)]
    pub failures: u64,
    /// When the attempts at the event now being delivered started failing.
    #[serde(default)]
    pub failing_since: Option<u64>,
    /// Why the last attempt failed (the receiver's status, or the connection error).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Events that left the journal (it keeps the newest 10,000) before they were delivered.
    #[serde(default)]
    pub missed: u64,
}

/// The answer to a created webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    /// The signing secret rackd generated (shown once), when the request gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_themselves_and_their_family_only() {
        assert!(kind_matches("machine", "machine.created"));
        assert!(kind_matches("machine.created", "machine.created"));
        assert!(kind_matches("task.step", "task.step.x"));
        assert!(!kind_matches("machine", "machines.created"));
        assert!(!kind_matches("machine.created", "machine"));
        assert!(!kind_matches("task.step", "task.step_started"));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = SecretText("hunter2hunter2hunter2".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"hunter2hunter2hunter2\""
        );
    }
}
