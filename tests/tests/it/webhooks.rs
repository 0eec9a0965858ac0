//! Webhooks against a receiver in the test (axum), signatures checked with another HMAC
//! implementation (RustCrypto's, not the ring the node signs with), on three real nodes:
//! - registered through the CLI, one with its secret from a file and every kind, one with
//!   a generated secret and two families (`machine`, `node`);
//! - the receiver refuses the first attempts of one webhook (503): the same event comes
//!   again with backoff, later ones wait behind it, and the journal says it failed, then
//!   recovered;
//! - the leader is killed in the middle of a stream of writes: the new leader goes on from
//!   the replicated record, so every event of the journal reaches each webhook at least
//!   once, first receipts in journal order, repeats only the few around the change, and the
//!   old leader's silence arrives as a `node.unreachable` event;
//! - the delivery state the API shows matches what the receiver got; the CLI lists, disables
//!   and removes webhooks by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::Mac;
use rackd_tests::Cluster;
use rackd_types::{Event, Page, Webhook};
use serde_json::json;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    hook: String,
    id: u64,
    kind: String,
    signed: bool,
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Got>>,
    /// Requests to refuse (503) per webhook path, first come first refused.
    refuse: Mutex<BTreeMap<String, usize>>,
    secrets: Mutex<BTreeMap<String, String>>,
}

/// Whether `sig` (`t=<secs>,v1=<hex>`) is the HMAC-SHA256 of `t.body` under `secret`, from
/// within five minutes of now.
fn verify(secret: &str, sig: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = sig.split_once(',') else {
        return false;
    };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else {
        return false;
    };
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(secs) > 300 {
        return false;
    }
    let Ok(tag) = hex::decode(v1) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

impl Receiver {
    fn handle(&self, hook: &str, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let event: Option<Event> = serde_json::from_slice(body).ok();
        let id: u64 = header("x-rackd-event-id").parse().unwrap_or(0);
        let secret = self.secrets.lock().unwrap().get(hook).cloned();
        let signed = secret.is_some_and(|s| verify(&s, &header("x-rackd-signature"), body));
        let consistent = event
            .as_ref()
            .is_some_and(|e| e.seq == id && e.kind == header("x-rackd-event"));
        let status = {
            let mut r = self.refuse.lock().unwrap();
            match r.get_mut(hook) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ if !consistent => StatusCode::BAD_REQUEST,
                _ => StatusCode::NO_CONTENT,
            }
        };
        self.got.lock().unwrap().push(Got {
            hook: hook.to_string(),
            id,
            kind: event.map(|e| e.kind).unwrap_or_default(),
            signed,
            answered: status.as_u16(),
        });
        status
    }

    /// What webhook `hook` acknowledged, in order of arrival (with repeats).
    fn acked(&self, hook: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.hook == hook && g.answered == 204)
            .cloned()
            .collect()
    }
}

async fn serve(r: Arc<Receiver>) -> String {
    let app = axum::Router::new().route(
        "/{hook}",
        axum::routing::post(
            move |axum::extract::Path(hook): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: Bytes| {
                let r = r.clone();
                async move { r.handle(&hook, &headers, &body) }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// Every event of the journal after `after`, read through node `i`.
async fn journal(c: &Cluster, i: usize, after: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let p: Page<Event> = c
            .client(i)
            .get(&format!("/v1/events?after={cursor}&limit=1000"))
            .await
            .unwrap();
        let n = p.items.len();
        if let Some(last) = p.items.last() {
            cursor = last.seq;
        }
        out.extend(p.items);
        if n < 1000 {
            return out;
        }
    }
}

/// Check what `hook` acknowledged against the journal: every wanted event at least once,
/// first receipts in journal order, every request signed. Returns the number of repeats.
fn check(r: &Receiver, hook: &str, journal: &[Event], wants: impl Fn(&str) -> bool) -> usize {
    let acked = r.acked(hook);
    assert!(
        r.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.hook == hook)
            .all(|g| g.signed),
        "{hook}: every request carries a valid signature"
    );
    let mut first = Vec::new();
    let mut seen = BTreeSet::new();
    for g in &acked {
        if seen.insert(g.id) {
            first.push(g.id);
        }
    }
    let want: Vec<u64> = journal
        .iter()
        .filter(|e| wants(&e.kind))
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        first, want,
        "{hook}: each wanted event, first receipts in journal order"
    );
    for g in &acked {
        assert!(wants(&g.kind), "{hook} got an unwanted {}", g.kind);
    }
    acked.len() - first.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_event_signed_in_order_through_failures_and_a_leader_change() {
    let r = Arc::new(Receiver::default());
    let base = serve(r.clone()).await;
    // The nodes log as a node does by default (the harness otherwise asks for more).
    let mut c = Cluster::new("webhooks");
    c.common_env
        .push(("RACKD_LOG".into(), rackd::cli::commands::DEFAULT_LOG.into()));
    c.bootstrap().await.unwrap();
    for _ in 1..3 {
        c.join(0, false).await.unwrap();
    }
    let l = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let other = (l + 1) % 3;

    // "all": every event, secret from a file; its first three attempts are refused.
    let secret_file = c.dir.join("all.secret");
    std::fs::write(&secret_file, "a-secret-of-the-operator-s-choosing\n").unwrap();
    r.secrets
        .lock()
        .unwrap()
        .insert("all".into(), "a-secret-of-the-operator-s-choosing".into());
    r.refuse.lock().unwrap().insert("all".into(), 3);
    let out = c.cli(
        other,
        [
            "webhooks",
            "create",
            "all",
            &format!("{base}/all"),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("secret:"),
        "a given secret is not echoed"
    );
    let start: u64 = {
        let w: Vec<Webhook> = c.client(other).get_all("/v1/webhooks").await.unwrap();
        w[0].delivery.delivered_through
    };

    // "machines": two families, generated secret (shown once, JSON output).
    let out = c.cli(
        other,
        [
            "-o",
            "json",
            "webhooks",
            "create",
            "machines",
            &format!("{base}/machines"),
            "--kind",
            "machine",
            "--kind",
            "node",
        ],
    );
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let created: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let secret = created["secret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    assert!(secret.len() >= 32, "{secret}");
    r.secrets
        .lock()
        .unwrap()
        .insert("machines".into(), secret.clone());
    // The secret is never shown again, nor stored in clear in any answer.
    let listed = c.cli(other, ["-o", "json", "webhooks", "list"]);
    assert!(
        listed.ok && !listed.stdout.contains(&secret),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("a-secret-of-the-operator"));

    // Writes through the leader, then the leader is killed mid-stream, then more writes.
    c.post_json::<_, serde_json::Value>(l, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    for i in 0..15 {
        c.post_json::<_, serde_json::Value>(
            l,
            "/v1/machines",
            &json!({"hostname": format!("m{i}"), "location": "dc1"}),
        )
        .await
        .unwrap();
    }
    let old = c.health(l).await.unwrap().node_id;
    c.nodes[l].kill();
    let l2 = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    for i in 15..30 {
        c.post_json::<_, serde_json::Value>(
            l2,
            "/v1/machines",
            &json!({"hostname": format!("m{i}"), "location": "dc1"}),
        )
        .await
        .unwrap();
    }
    // The old leader's silence reaches the node family (after ten seconds of it).
    c.wait_until(
        Duration::from_secs(60),
        "node.unreachable delivered",
        |_| {
            let r = r.clone();
            async move {
                r.acked("machines")
                    .iter()
                    .any(|g| g.kind == "node.unreachable")
            }
        },
    )
    .await
    .unwrap();

    // Both webhooks catch up with the journal.
    let survivor = (0..3).find(|i| *i != l).unwrap();
    c.wait_until(Duration::from_secs(90), "every event delivered", |c| {
        let r = r.clone();
        async move {
            let j = journal(c, survivor, start).await;
            let last = j.last().map_or(0, |e| e.seq);
            let all = r.acked("all").iter().any(|g| g.id >= last);
            let m_last = j
                .iter()
                .filter(|e| e.kind.starts_with("machine.") || e.kind.starts_with("node."))
                .map(|e| e.seq)
                .max()
                .unwrap_or(0);
            let machines = r.acked("machines").iter().any(|g| g.id >= m_last);
            all && machines
        }
    })
    .await
    .unwrap();
    // The records that delivery made are events too: read the journal once more and
    // compare against what was delivered up to the last acknowledged event.
    let through = r.acked("all").iter().map(|g| g.id).max().unwrap();
    let j: Vec<Event> = journal(&c, survivor, start)
        .await
        .into_iter()
        .filter(|e| e.seq <= through)
        .collect();
    let repeats_all = check(&r, "all", &j, |_| true);
    let m_through = r.acked("machines").iter().map(|g| g.id).max().unwrap();
    let jm: Vec<Event> = j.iter().filter(|e| e.seq <= m_through).cloned().collect();
    let repeats_m = check(&r, "machines", &jm, |k| {
        k.starts_with("machine.") || k.starts_with("node.")
    });
    eprintln!(
        "webhooks: {} events, repeats after the leader change: all {repeats_all}, machines {repeats_m}",
        j.len()
    );
    assert!(
        repeats_all <= 20 && repeats_m <= 20,
        "repeats stay within the last second of deliveries: {repeats_all}, {repeats_m}"
    );
    let machine_events = jm.iter().filter(|e| e.kind == "machine.created").count();
    assert_eq!(machine_events, 30, "every machine created is announced");
    // The refused attempts were retried: the same event, three times refused, then taken.
    let got = r.got.lock().unwrap().clone();
    let refused: Vec<&Got> = got.iter().filter(|g| g.answered == 503).collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|g| g.id == refused[0].id));
    assert_eq!(
        r.acked("all")[0].id,
        refused[0].id,
        "the refused event came first"
    );
    let down: Vec<&Event> = j.iter().filter(|e| e.kind == "node.unreachable").collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(
        down[0].entity_id,
        Some(old),
        "the old leader is the one reported"
    );
    let kinds: Vec<&str> = j.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"webhook.failing") && kinds.contains(&"webhook.recovered"));

    // The API's delivery state: caught up, not failing.
    c.wait_until(
        Duration::from_secs(30),
        "delivery recorded",
        |c| async move {
            let w: Vec<Webhook> = c.client(survivor).get_all("/v1/webhooks").await.unwrap();
            w.iter()
                .all(|w| w.delivery.failures == 0 && w.delivery.delivered_through >= m_through)
        },
    )
    .await
    .unwrap();

    // The CLI by name: disable one, remove the other.
    let out = c.cli(survivor, ["webhooks", "update", "machines", "--disable"]);
    assert!(
        out.ok && out.stdout.contains("disabled"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = c.cli(survivor, ["webhooks", "remove", "all"]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let out = c.cli(survivor, ["webhooks", "list"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("machines") && !out.stdout.contains("/all"),
        "{}",
        out.stdout
    );
    let out = c.cli(survivor, ["webhooks", "show", "nope"]);
    assert!(
        !out.ok && out.stderr.contains("no webhook is named"),
        "{}",
        out.stderr
    );

    // Logs an operator can read: written to a file, they carry no colour codes, and the dead
    // node costs the new leader a line or two, not a warning per missed heartbeat.
    let log = std::fs::read_to_string(&c.nodes[l2].log).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    let noise = log.lines().filter(|l| l.contains("heartbeat")).count();
    let about = log
        .lines()
        .filter(|l| l.contains(&format!("node {old} does not answer the leader")))
        .count();
    assert!(
        noise == 0 && (1..=2).contains(&about),
        "{noise} heartbeat lines, {about} about node {old}"
    );
}
