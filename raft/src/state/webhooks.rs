//! Webhook records: what each registered endpoint wants, its sealed signing secret, and how far
//! the leader's dispatcher delivered the journal to it ([`rackd_types::webhook`]).
//!
//! The secret reaches the log sealed for the voters (the leader's handler seals it; only
//! voters, which may lead, can open it). Apply checks it is there, never what it is.
//!
//! This module must not depend on storage or the node.

use rackd_types::payload::{CreateWebhook, UpdateWebhook};
use rackd_types::webhook::{MAX_KINDS, MAX_WEBHOOKS};
use rackd_types::{ApiError, Meta, Webhook, WebhookDelivery};
use serde::{Deserialize, Serialize};

use super::{precondition, State};
use crate::cmd::Applied;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest error text kept in a delivery record.
pub const MAX_ERROR_LEN: usize = 512;

/// A webhook with its signing secret (sealed; never returned or logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

impl std::fmt::Debug for StoredWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredWebhook")
            .field("webhook", &self.webhook)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "webhook name must be 1..=64 of [A-Za-z0-9-._]",
        ))
    }
}

/// An `http://` or `https://` URL with a host, no spaces or control characters.
pub fn check_url(url: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::invalid(format!("webhook url {url:?}: {why}")));
    if url.len() > MAX_URL_LEN {
        return bad(&format!("longer than {MAX_URL_LEN} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains spaces or control characters");
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return bad("must start with http:// or https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return bad("names no host");
    }
    Ok(())
}

/// The kinds, each a kind or a family of `[a-z0-9_]` words joined by dots, without repeats.
fn check_kinds(kinds: &[String]) -> Result<Vec<String>, ApiError> {
    if kinds.len() > MAX_KINDS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_KINDS} kinds per webhook"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for k in kinds {
        let ok = !k.is_empty()
            && k.len() <= 128
            && k.split('.').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !ok {
            return Err(ApiError::invalid(format!(
                "webhook kind {k:?}: expected an event kind (task.finished) or family \
                 (machine): words of [a-z0-9_] joined by dots"
            )));
        }
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    Ok(out)
}

fn check_secret(secret: Option<&rackd_types::SecretText>) -> Result<String, ApiError> {
    match secret {
        Some(s) if !s.0.is_empty() => Ok(s.0.clone()),
        _ => Err(ApiError::invalid("a webhook needs a signing secret")),
    }
}

impl State {
    pub fn webhook_by_name(&self, name: &str) -> Option<&StoredWebhook> {
        self.webhooks.values().find(|w| w.webhook.name == name)
    }

    pub(super) fn create_webhook(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateWebhook,
    ) -> Result<Applied, ApiError> {
        check_name(&c.name)?;
        check_url(&c.url)?;
        let kinds = check_kinds(&c.kinds)?;
        let secret = check_secret(c.secret.as_ref())?;
        if self.webhook_by_name(&c.name).is_some() {
            return Err(ApiError::conflict(format!(
                "webhook {:?} already exists",
                c.name
            )));
        }
        if self.webhooks.len() >= MAX_WEBHOOKS {
            return Err(ApiError::conflict(format!(
                "the cluster has {MAX_WEBHOOKS} webhooks, the most it keeps"
            )));
        }
        let id = self.alloc_id();
        let webhook = Webhook {
            meta: Meta {
                id,
                version: 1,
                created_at: now,
                updated_at: now,
            },
            name: c.name.clone(),
            url: c.url.clone(),
            kinds,
            enabled: c.enabled,
            // Its own `webhook.created` is the first event it can be sent.
            delivery: WebhookDelivery {
                delivered_through: self.meta.next_event_seq,
                ..WebhookDelivery::default()
            },
        };
        self.webhooks.insert(
            id,
            StoredWebhook {
                webhook: webhook.clone(),
                secret,
            },
        );
        self.journal(
            now,
            actor,
            "webhook.created",
            "webhook",
            Some(id),
            format!("webhook {} created for {}", c.name, c.url),
        );
        Ok(Applied::Webhook(webhook))
    }

    pub(super) fn update_webhook(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        p: &UpdateWebhook,
    ) -> Result<Applied, ApiError> {
        let mut w = self.webhooks.fetch(id, "webhook")?;
        precondition(w.webhook.meta.version, if_match)?;
        if let Some(u) = &p.url {
            check_url(u)?;
            w.webhook.url = u.clone();
        }
        if let Some(k) = &p.kinds {
            w.webhook.kinds = check_kinds(k)?;
        }
        if p.secret.is_some() {
            w.secret = check_secret(p.secret.as_ref())?;
        }
        if let Some(e) = p.enabled {
            w.webhook.enabled = e;
        }
        w.webhook.meta.version += 1;
        w.webhook.meta.updated_at = now;
        let view = w.webhook.clone();
        self.webhooks.insert(id, w);
        self.journal(
            now,
            actor,
            "webhook.updated",
            "webhook",
            Some(id),
            format!("webhook {} updated", view.name),
        );
        Ok(Applied::Webhook(view))
    }

    pub(super) fn delete_webhook(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let w = self.webhooks.fetch(id, "webhook")?;
        precondition(w.webhook.meta.version, if_match)?;
        self.webhooks.remove(&id);
        self.journal(
            now,
            actor,
            "webhook.deleted",
            "webhook",
            Some(id),
            format!("webhook {} deleted", w.webhook.name),
        );
        Ok(Applied::Done)
    }

    /// Store how far delivery got. A record behind the stored one changes nothing; a webhook
    /// that starts failing, or recovers, is journalled (once per change, so the journal
    /// entry it makes cannot feed itself).
    pub(super) fn record_webhook_delivery(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        d: &WebhookDelivery,
    ) -> Result<Applied, ApiError> {
        let mut w = self.webhooks.fetch(id, "webhook")?;
        let old = &w.webhook.delivery;
        if d.delivered_through < old.delivered_through {
            return Ok(Applied::Webhook(w.webhook));
        }
        let (was_failing, failing) = (old.failures > 0, d.failures > 0);
        let mut d = d.clone();
        if let Some(e) = &mut d.last_error {
            if e.len() > MAX_ERROR_LEN {
                let mut cut = MAX_ERROR_LEN;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
            }
        }
        if *old == d {
            return Ok(Applied::Webhook(w.webhook));
        }
        w.webhook.delivery = d.clone();
        let view = w.webhook.clone();
        self.webhooks.insert(id, w);
        let change = match (was_failing, failing) {
            (false, true) => Some((
                "webhook.failing",
                format!(
                    "webhook {}: delivering event {} fails: {}",
                    view.name,
                    d.delivered_through + 1,
                    d.last_error.as_deref().unwrap_or("unknown error")
                ),
            )),
            (true, false) => Some((
                "webhook.recovered",
                format!(
                    "webhook {}: delivering again (through event {})",
                    view.name, d.delivered_through
                ),
            )),
            _ => None,
        };
        if let Some((kind, message)) = change {
            self.journal(now, actor, kind, "webhook", Some(id), message);
        }
        Ok(Applied::Webhook(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Command;
    use crate::state::test_apply as apply;

    fn record(s: &mut State, through: u64, failures: u64) -> Webhook {
        let d = WebhookDelivery {
            delivered_through: through,
            failures,
            last_error: (failures > 0).then(|| "HTTP 503".repeat(200)),
            ..WebhookDelivery::default()
        };
        apply(s, 9, Command::RecordWebhookDelivery { id: 1, delivery: d })
            .unwrap()
            .into_webhook()
            .unwrap()
    }

    #[test]
    fn delivery_never_moves_back_and_failing_is_journalled_once_per_change() {
        let mut s = State::default();
        let w = apply(
            &mut s,
            1,
            Command::CreateWebhook(CreateWebhook {
                name: "pager".into(),
                url: "http://127.0.0.1:9/h".into(),
                kinds: vec![],
                secret: Some(rackd_types::SecretText("sealed".into())),
                enabled: true,
            }),
        )
        .unwrap()
        .into_webhook()
        .unwrap();
        // Created after no event: its own `webhook.created` (event 1) is the first it gets.
        assert_eq!(w.delivery.delivered_through, 0);
        assert_eq!(s.events.get(&1).unwrap().kind, "webhook.created");
        let journal = |s: &State| {
            s.events
                .values()
                .map(|e| e.kind.clone())
                .collect::<Vec<_>>()
        };

        assert_eq!(record(&mut s, 1, 0).delivery.delivered_through, 1);
        let w = record(&mut s, 1, 1);
        assert_eq!(w.delivery.failures, 1);
        assert_eq!(w.delivery.last_error.unwrap().len(), MAX_ERROR_LEN);
        record(&mut s, 1, 2);
        record(&mut s, 1, 3);
        assert_eq!(journal(&s), ["webhook.created", "webhook.failing"]);
        let w = record(&mut s, 5, 0);
        assert_eq!(journal(&s).last().unwrap(), "webhook.recovered");
        assert_eq!((w.delivery.delivered_through, w.delivery.failures), (5, 0));
        // A deposed leader's late record is behind: nothing changes, nothing is journalled.
        let before = s.events.len();
        let w = record(&mut s, 2, 4);
        assert_eq!((w.delivery.delivered_through, w.delivery.failures), (5, 0));
        assert_eq!(s.events.len(), before);
        // Delivery records never bump the version (an If-Match update is not raced by them).
        assert_eq!(w.meta.version, 1);
        // A record for a deleted webhook is refused.
        apply(
            &mut s,
            10,
            Command::DeleteWebhook {
                id: 1,
                if_match: Some(1),
            },
        )
        .unwrap();
        assert!(apply(
            &mut s,
            11,
            Command::RecordWebhookDelivery {
                id: 1,
                delivery: WebhookDelivery::default()
            }
        )
        .is_err());
    }

    #[test]
    fn a_webhook_needs_a_secret_and_a_unique_name() {
        let mut s = State::default();
        let c = |name: &str, secret: Option<&str>| {
            Command::CreateWebhook(CreateWebhook {
                name: name.into(),
                url: "https://h.example/".into(),
                kinds: vec!["machine".into()],
                secret: secret.map(|x| rackd_types::SecretText(x.into())),
                enabled: true,
            })
        };
        assert!(apply(&mut s, 1, c("a", None)).is_err());
        assert!(apply(&mut s, 1, c("a", Some(""))).is_err());
        assert!(apply(&mut s, 1, c("a b", Some("x"))).is_err());
        apply(&mut s, 1, c("a", Some("x"))).unwrap();
        assert!(apply(&mut s, 1, c("a", Some("y"))).is_err());
        assert_eq!(s.webhooks.len(), 1);
        assert_eq!(s.webhook_by_name("a").unwrap().secret, "x");
        assert!(!format!("{:?}", s.webhook_by_name("a").unwrap()).contains("\"x\""));
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        for ok in [
            "http://127.0.0.1:9000/hook",
            "https://hooks.example.com",
            "https://u:p@h.example/x?y#z",
            "http://[::1]:80/",
        ] {
            check_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http:///path",
            "https://:80/",
            "http://a b/",
            "http://h/\n",
            "hooks.example.com",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_url(&format!("http://h/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn kinds_are_dot_words_kept_once() {
        let k = |v: &[&str]| check_kinds(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            k(&["machine", "task.finished", "machine"]).unwrap(),
            vec!["machine", "task.finished"]
        );
        for bad in [
            "",
            ".",
            "machine.",
            ".x",
            "a..b",
            "Machine",
            "task finished",
            "*",
        ] {
            assert!(k(&[bad]).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_KINDS).map(|i| format!("k{i}")).collect();
        assert!(check_kinds(&many).is_err());
    }
}
