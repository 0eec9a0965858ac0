//! Handler tests against [`FakeCluster`]: the whole router (forwarding, auth, handlers) in one
//! process, no Raft, no sockets. Each test checks both the answer and what was (not) proposed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rackd_raft::cmd::Command;
use rackd_types::payload::CreateMachine;
use rackd_types::{Location, Machine, Page, Task};
use serde_json::Value;
use tower::ServiceExt;

use super::endpoints::{Auth, Endpoint, Media, Verb, ENDPOINTS};
use super::{router, AppState};
use crate::cluster::fake::{machine_spec, sim_bmc, FakeCluster};
use crate::cluster::secrets::hash_secret;
use crate::cluster::Cluster;

const TOKEN: &str = "rackd_admin_test_token";

pub(super) const TOKEN_FOR_TESTS: &str = TOKEN;

fn cluster() -> Arc<FakeCluster> {
    cluster_at(1_000)
}

/// A bootstrapped fake cluster whose leader's clock reads `now_ms`, with the admin [`TOKEN`].
pub(super) fn cluster_at(now_ms: u64) -> Arc<FakeCluster> {
    let c = FakeCluster::new(1, now_ms);
    c.apply_ok(
        "bootstrap",
        Command::Bootstrap {
            cluster_id: "c1".into(),
            admin_token_hash: hash_secret(TOKEN),
        },
    );
    c
}

struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<String>,
}

async fn call(
    c: &Arc<FakeCluster>,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut rb = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        rb = rb.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if !body.is_empty() {
        rb = rb.header("content-type", "application/json");
    }
    let req = rb.body(Body::from(body.to_string())).unwrap();
    let app = router(AppState::new(
        c.clone(),
        reqwest::Client::new(),
        test_store(),
    ));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    // Metrics are text; every other answer is JSON.
    let text = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/plain"));
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else if text {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"))
    };
    Answer {
        status,
        body,
        retry_after,
    }
}

async fn get(c: &Arc<FakeCluster>, path: &str) -> Answer {
    call(c, Method::GET, path, Some(TOKEN), &[], "").await
}

async fn post(c: &Arc<FakeCluster>, path: &str, body: &str) -> Answer {
    call(c, Method::POST, path, Some(TOKEN), &[], body).await
}

fn error_code(a: &Answer) -> &str {
    a.body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {}", a.body))
}

fn machine_with_bmc(c: &FakeCluster) -> u64 {
    c.create_location("dc1");
    c.create_machine(CreateMachine {
        macs: vec!["52:54:00:00:00:01".into()],
        bmc: Some(sim_bmc()),
        ..machine_spec("m1", "dc1")
    })
}

#[tokio::test]
async fn a_created_location_is_answered_typed_and_read_back() {
    let c = cluster();
    let a = post(&c, "/v1/locations", r#"{"name":"dc1","discovery":true}"#).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let created: Location = serde_json::from_value(a.body).unwrap();
    assert_eq!(created.name, "dc1");
    assert!(created.discovery);

    let a = get(&c, &format!("/v1/locations/{}", created.meta.id)).await;
    assert_eq!(a.status, StatusCode::OK);
    let read: Location = serde_json::from_value(a.body).unwrap();
    assert_eq!(read, created);

    let a = get(&c, "/v1/locations").await;
    let page: Page<Location> = serde_json::from_value(a.body).unwrap();
    assert_eq!(page.items, vec![created]);
    // Bootstrap plus exactly one create.
    assert_eq!(c.log().len(), 2);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_propose_nothing() {
    let c = cluster();
    for token in [None, Some("wrong")] {
        let a = call(
            &c,
            Method::POST,
            "/v1/locations",
            token,
            &[],
            r#"{"name":"dc1"}"#,
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&a), "Unauthorized");
    }
    let a = call(&c, Method::GET, "/v1/locations", None, &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.log().len(), 1, "only the bootstrap entry");
}

/// For every endpoint of the table and every role: a token whose role is below what the
/// endpoint needs gets 403 and proposes nothing; one at or above it is never refused for its
/// role (the request may still be refused for other reasons, here mostly its empty body).
#[tokio::test]
async fn every_endpoint_refuses_tokens_below_its_role_and_only_those() {
    use rackd_types::ApiRole;
    let c = cluster();
    let roles = [ApiRole::Reader, ApiRole::Operator, ApiRole::Admin];
    for r in roles {
        c.apply_ok(
            "t",
            Command::CreateApiToken {
                name: format!("{}-token", r.as_str()),
                token_hash: hash_secret(&format!("tok-{}", r.as_str())),
                role: r,
                ttl_ms: None,
            },
        );
    }
    let mut checked = 0;
    for e in ENDPOINTS {
        let Some(needed) = e.auth.role() else {
            continue;
        };
        let path = e.path.replace("{id}", "1");
        for r in roles {
            let before = c.log().len();
            let a = call(
                &c,
                e.verb.http(),
                &path,
                Some(&format!("tok-{}", r.as_str())),
                &[],
                "",
            )
            .await;
            let what = format!("{} {} as {}", e.verb.as_str(), e.path, r.as_str());
            if r < needed {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {:?}", a.body);
                assert_eq!(error_code(&a), "Forbidden", "{what}");
                assert_eq!(c.log().len(), before, "{what} proposed something");
            } else {
                assert!(
                    a.status != StatusCode::FORBIDDEN && a.status != StatusCode::UNAUTHORIZED,
                    "{what}: {} {:?}",
                    a.status,
                    a.body
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3 * 35, "{checked} checks: the table has shrunk?");
    // Readers read everything but the token lists and the webhooks (whose URLs may carry
    // credentials).
    for e in ENDPOINTS.iter().filter(|e| e.verb == Verb::Get) {
        let reader_ok = e.auth.role().is_none_or(|r| r == ApiRole::Reader);
        assert_eq!(
            reader_ok,
            !e.path.starts_with("/v1/tokens") && !e.path.starts_with("/v1/webhooks"),
            "GET {} needs {:?}",
            e.path,
            e.auth
        );
    }
}

/// A token's expiry is the leader's stamp plus its lifetime, checked against the receiving
/// node's clock: stamped now it works, stamped long ago it gets 401. A revoked token gets 401
/// and proposes nothing; the last admin token without an expiry cannot be revoked.
#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    // A cluster whose leader stamps the real time: a 60 s token works.
    let now = crate::cluster::now_ms();
    let c = cluster_at(now);
    let a = post(
        &c,
        "/v1/tokens/api",
        r#"{"name":"short","expires_in_secs":60}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let short = a.body["token"].as_str().unwrap().to_string();
    let ok = |c: &Arc<FakeCluster>, t: &str| {
        let (c, t) = (c.clone(), t.to_string());
        async move {
            call(&c, Method::GET, "/v1/machines", Some(&t), &[], "")
                .await
                .status
        }
    };
    assert_eq!(ok(&c, &short).await, StatusCode::OK);
    let listed = get(&c, "/v1/tokens/api").await;
    let item = |name: &str| {
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(item("short")["expires_at"], now + 60_000);
    assert_eq!(item("admin")["expires_at"], Value::Null);

    // A cluster whose leader stamped its tokens long ago (the fake's clock at 1 s after the
    // epoch): the same 60 s token is expired by this node's clock.
    let old = cluster();
    let a = post(
        &old,
        "/v1/tokens/api",
        r#"{"name":"short","expires_in_secs":60}"#,
    )
    .await;
    let stale = a.body["token"].as_str().unwrap().to_string();
    let before = old.log().len();
    let a = call(&old, Method::GET, "/v1/machines", Some(&stale), &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.to_string().contains("expired"), "{}", a.body);
    assert_eq!(old.log().len(), before);
    assert_eq!(
        post(&c, "/v1/tokens/api", r#"{"name":"x","expires_in_secs":0}"#)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Revocation.
    let a = post(&c, "/v1/tokens/api", r#"{"name":"ops","role":"operator"}"#).await;
    let (ops_id, ops) = (
        a.body["id"].as_u64().unwrap(),
        a.body["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(ok(&c, &ops).await, StatusCode::OK);
    let path = format!("/v1/tokens/api/{ops_id}");
    let a = call(&c, Method::DELETE, &path, Some(TOKEN), &[], "").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let before = c.log().len();
    assert_eq!(ok(&c, &ops).await, StatusCode::UNAUTHORIZED);
    assert_eq!(c.log().len(), before);
    // The bootstrap admin token is the last admin token without an expiry.
    let admin_id = item("admin")["id"].as_u64().unwrap();
    let path = format!("/v1/tokens/api/{admin_id}");
    let a = call(&c, Method::DELETE, &path, Some(TOKEN), &[], "").await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(ok(&c, TOKEN).await, StatusCode::OK);
}

/// A flood of made-up tokens costs the leader a bounded number of ReadIndex rounds (one
/// catch-up each, rationed per node), and every one of them is still refused; a real token
/// keeps working meanwhile.
#[tokio::test]
async fn made_up_tokens_cost_a_rationed_number_of_catch_ups() {
    let c = cluster();
    let app = router(AppState::new(
        c.clone(),
        reqwest::Client::new(),
        test_store(),
    ));
    let send = |token: String| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .uri("/v1/machines")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    let t0 = std::time::Instant::now();
    for i in 0..500 {
        assert_eq!(
            send(format!("rackd-api-guess-{i}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let allowed = super::auth::CATCH_UPS_PER_SEC * (1.0 + t0.elapsed().as_secs_f64());
    let rounds = c.linearizations();
    assert!(
        (rounds as f64) <= allowed.ceil(),
        "{rounds} catch-ups for 500 made-up tokens (allowed {allowed})"
    );
    assert!(
        rounds >= 1,
        "an unknown token is looked up after a catch-up"
    );
    assert_eq!(send(TOKEN.into()).await, StatusCode::OK);
    assert!(c.log().len() <= 1, "nothing but the bootstrap was proposed");
}

#[tokio::test]
async fn bad_input_gets_a_400_json_error_and_proposes_nothing() {
    let c = cluster();
    let cases: &[(Method, &str, &str)] = &[
        (Method::POST, "/v1/locations", "{not json"),
        (
            Method::POST,
            "/v1/locations",
            r#"{"name":"a","colour":"red"}"#,
        ),
        (Method::POST, "/v1/locations", r#"{"name":7}"#),
        (Method::POST, "/v1/machines/abc/power", r#"{"action":"on"}"#),
        (
            Method::POST,
            "/v1/machines/1/power",
            r#"{"action":"explode"}"#,
        ),
        (Method::GET, "/v1/locations?limit=0", ""),
        (Method::GET, "/v1/locations?cursor=x", ""),
        (Method::GET, "/v1/machines?state=melted", ""),
    ];
    for (m, path, body) in cases {
        let a = call(&c, m.clone(), path, Some(TOKEN), &[], body).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{m} {path} {body}: {}",
            a.body
        );
        assert_eq!(error_code(&a), "InvalidRequest", "{m} {path}");
    }
    assert_eq!(c.log().len(), 1, "only the bootstrap entry");
}

#[tokio::test]
async fn unknown_ids_get_404_and_stale_versions_conflict() {
    let c = cluster();
    let a = get(&c, "/v1/machines/42").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&a), "NotFound");

    let a = post(&c, "/v1/locations", r#"{"name":"dc1"}"#).await;
    let loc: Location = serde_json::from_value(a.body).unwrap();
    let path = format!("/v1/locations/{}", loc.meta.id);
    let stale = (loc.meta.version + 1).to_string();
    let a = call(
        &c,
        Method::PATCH,
        &path,
        Some(TOKEN),
        &[("if-match", &stale)],
        r#"{"description":"x"}"#,
    )
    .await;
    assert!(a.status.is_client_error(), "{}: {}", a.status, a.body);
    let current = loc.meta.version.to_string();
    let a = call(
        &c,
        Method::PATCH,
        &path,
        Some(TOKEN),
        &[("if-match", &current)],
        r#"{"description":"x"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let updated: Location = serde_json::from_value(a.body).unwrap();
    assert_eq!(updated.description, "x");
    assert!(updated.meta.version > loc.meta.version);
}

#[tokio::test]
async fn a_retried_write_with_the_same_idempotency_key_applies_once() {
    let c = cluster();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let a = call(
            &c,
            Method::POST,
            "/v1/locations",
            Some(TOKEN),
            &[("idempotency-key", "k1")],
            r#"{"name":"dc1"}"#,
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        answers.push(a.body);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(c.state().locations.len(), 1);
}

#[tokio::test]
async fn without_a_leader_writes_and_linearizable_reads_answer_503_stale_reads_work() {
    let c = cluster();
    post(&c, "/v1/locations", r#"{"name":"dc1"}"#).await;
    c.set_leading(false);
    let before = c.log().len();

    let a = post(&c, "/v1/locations", r#"{"name":"dc2"}"#).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(error_code(&a), "Unavailable");
    assert_eq!(c.log().len(), before, "nothing proposed");
    // An election is told in our words, with when and how to retry.
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no leader at the moment"), "{msg}");
    assert!(msg.contains(rackd_types::RETRY_SAME_KEY), "{msg}");
    assert_eq!(a.retry_after.as_deref(), Some("1"));

    let a = get(&c, "/v1/locations").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.retry_after.as_deref(), Some("1"));

    let a = get(&c, "/v1/locations?stale=true").await;
    assert_eq!(a.status, StatusCode::OK);
    let page: Page<Location> = serde_json::from_value(a.body).unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn a_power_request_creates_one_typed_task_for_the_machine() {
    let c = cluster();
    let m = machine_with_bmc(&c);
    let a = post(
        &c,
        &format!("/v1/machines/{m}/power"),
        r#"{"action":"cycle"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let task: Task = serde_json::from_value(a.body).unwrap();
    assert_eq!(task.machine_id, m);
    assert_eq!(task.kind, rackd_types::TaskKind::PowerCycle);

    let a = get(&c, &format!("/v1/tasks/{}", task.meta.id)).await;
    let read: Task = serde_json::from_value(a.body).unwrap();
    assert_eq!(read, task);

    // A machine without a BMC cannot take a power task: refused, nothing created.
    let a = post(
        &c,
        "/v1/machines",
        r#"{"hostname":"nobmc","location":"dc1"}"#,
    )
    .await;
    let bare: Machine = serde_json::from_value(a.body).unwrap();
    let a = post(
        &c,
        &format!("/v1/machines/{}/power", bare.meta.id),
        r#"{"action":"on"}"#,
    )
    .await;
    assert!(a.status.is_client_error(), "{}: {}", a.status, a.body);
    assert_eq!(c.state().tasks.len(), 1);
}

#[tokio::test]
async fn a_task_is_cancelled_once_and_a_finished_one_is_a_conflict() {
    let c = cluster();
    let m = machine_with_bmc(&c);
    let a = post(
        &c,
        &format!("/v1/machines/{m}/power"),
        r#"{"action":"off"}"#,
    )
    .await;
    let task: Task = serde_json::from_value(a.body).unwrap();
    let path = format!("/v1/tasks/{}/cancel", task.meta.id);

    let a = post(&c, &path, "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cancelled: Task = serde_json::from_value(a.body).unwrap();
    assert_eq!(cancelled.state, rackd_types::TaskState::Cancelled);
    assert_eq!(c.state().tasks.get(&task.meta.id), Some(&cancelled));

    // Again: 409 with a JSON error, and the task is not touched.
    let before = c.log().len();
    let a = post(&c, &path, "").await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(error_code(&a), "Conflict");
    assert_eq!(c.state().tasks.get(&task.meta.id), Some(&cancelled));
    assert_eq!(
        c.log().len(),
        before + 1,
        "one refused entry, nothing applied"
    );

    let a = post(&c, "/v1/tasks/999999/cancel", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let a = post(&c, "/v1/tasks/x/cancel", "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}

/// BMC passwords reach the log and the state only sealed for the machine's location, on
/// create and on update; the sealed value opens to the password with that location's key
/// only; a retry with the same Idempotency-Key is the same request; a password carrying
/// rackd's marker is refused; a cluster still on rules 2 proposes passwords as before.
#[tokio::test]
async fn bmc_passwords_are_sealed_for_the_machines_location() {
    use crate::cluster::sealing::{is_sealed, Purpose};
    let c = cluster();
    c.create_location("dc1");
    let other = c.create_location("dc2");
    let body = |pass: &str| {
        serde_json::json!({"hostname": "m1", "location": "dc1",
            "bmc": {"driver": "ipmi", "address": "10.9.0.1", "username": "admin", "password": pass}})
        .to_string()
    };
    let create = |pass: &'static str| {
        let c = c.clone();
        async move {
            call(
                &c,
                Method::POST,
                "/v1/machines",
                Some(TOKEN),
                &[("idempotency-key", "k1")],
                &body(pass),
            )
            .await
        }
    };
    let a = create("hunter2").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap();
    let again = create("hunter2").await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "a retry is the same request: {}",
        again.body
    );
    assert_eq!(again.body["id"].as_u64(), Some(id));
    let stored = |c: &FakeCluster| {
        c.state()
            .machines
            .get(&id)
            .unwrap()
            .bmc_password
            .clone()
            .unwrap()
    };
    let dc1 = c.state().location_by_name("dc1").unwrap().meta.id;
    let key = c.location_key(dc1).await.unwrap();
    assert!(is_sealed(&stored(&c)));
    assert_eq!(
        key.open(Purpose::BmcPassword, &stored(&c)).unwrap(),
        "hunter2"
    );
    assert!(c
        .location_key(other)
        .await
        .unwrap()
        .open(Purpose::BmcPassword, &stored(&c))
        .is_err());
    // Updated: sealed too.
    let p = call(&c, Method::PATCH, &format!("/v1/machines/{id}"), Some(TOKEN), &[],
        &serde_json::json!({"bmc": {"driver": "ipmi", "address": "10.9.0.1", "username": "admin", "password": "s3cond"}}).to_string()).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(
        key.open(Purpose::BmcPassword, &stored(&c)).unwrap(),
        "s3cond"
    );
    // As encoded in the log (Debug would redact it anyway).
    let log = serde_json::to_string(&c.log()).unwrap();
    assert!(log.contains("rackd-sealed:v1:bmc-password"), "{log}");
    assert!(
        !log.contains("hunter2") && !log.contains("s3cond"),
        "a password in the log"
    );
    // rackd's marker is not a password.
    let bad = call(
        &c,
        Method::POST,
        "/v1/machines",
        Some(TOKEN),
        &[],
        &body("rackd-sealed:v1:x"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    let old = cluster();
    old.set_apply_rules(rackd_raft::state::ApplyRules::Format2);
    old.create_location("dc1");
    let a = call(
        &old,
        Method::POST,
        "/v1/machines",
        Some(TOKEN),
        &[],
        &body("hunter2"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["id"].as_u64().unwrap();
    assert_eq!(
        old.state()
            .machines
            .get(&id)
            .unwrap()
            .bmc_password
            .as_deref(),
        Some("hunter2"),
        "older members could not open it"
    );
}

/// A node whose build cannot decode the rules the cluster decides entries by is refused at
/// join phase 1, before its token is spent (nothing reaches the log); the same request from
/// a build that knows them is admitted.
#[tokio::test]
async fn a_joiner_of_an_older_build_is_refused_before_its_token_is_spent() {
    // Join tokens expire by the wall clock of the node that admits them.
    let c = cluster_at(crate::cluster::now_ms());
    c.apply_ok(
        "t",
        Command::CreateJoinToken {
            token_hash: hash_secret(JOIN_SECRET),
            ttl_ms: 600_000,
            description: String::new(),
            location: None,
        },
    );
    let entries = c.log().len();
    let csr = crate::cluster::pki::NodeKey::generate().unwrap().csr_pem;
    let body = |rules: Option<u32>| {
        let mut v = serde_json::json!({
            "token": JOIN_SECRET,
            "api_addr": "127.0.0.1:1",
            "peer_addr": "127.0.0.1:2",
            "csr": csr,
        });
        if let Some(r) = rules {
            v["apply_rules"] = r.into();
        }
        v.to_string()
    };
    let current = rackd_raft::state::ApplyRules::CURRENT.number();
    for old in [None, Some(1), Some(2), Some(current - 1)] {
        let a = call(&c, Method::POST, "/v1/cluster/join", None, &[], &body(old)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{old:?}: {}", a.body);
        assert_eq!(error_code(&a), "JoinRejected");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("apply rules {current}")), "{msg}");
        assert_eq!(
            c.log().len(),
            entries,
            "{old:?}: a refused joiner wrote nothing"
        );
    }
    let a = call(
        &c,
        Method::POST,
        "/v1/cluster/join",
        None,
        &[],
        &body(Some(current)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(c.log().len(), entries + 1, "phase 1 allocated the id");
}

#[tokio::test]
async fn health_reports_the_cluster_role_without_a_token() {
    let c = cluster();
    let a = call(&c, Method::GET, "/v1/health", None, &[], "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["raft_state"], "leader", "{}", a.body);
    assert_eq!(a.body["cluster_id"], "c1");
}

/// Readiness, unlike health: 200 with a leader (no token needed), 503 saying why without one.
#[tokio::test]
async fn ready_needs_a_leader_and_says_why_not() {
    let c = cluster();
    let a = call(&c, Method::GET, "/v1/ready", None, &[], "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["leader_id"], 1, "{}", a.body);
    c.set_leading(false);
    let a = call(&c, Method::GET, "/v1/ready", None, &[], "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not ready: no leader")),
        "{}",
        a.body
    );
    // Health stays the liveness answer.
    let h = call(&c, Method::GET, "/v1/health", None, &[], "").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
}

/// R4: a node whose Raft stopped on a storage failure says why in its health and answers every
/// other endpoint of the table 503 (its replica is frozen), whatever the token or the body.
#[tokio::test]
async fn a_failed_node_answers_only_its_health_and_says_why() {
    let c = cluster();
    c.set_failed("injected fsync failure");
    let h = call(&c, Method::GET, "/v1/health", None, &[], "").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    assert_eq!(h.body["raft_state"], "failed", "{}", h.body);
    assert!(
        h.body["failure"]
            .as_str()
            .is_some_and(|f| f.contains("injected fsync failure")),
        "{}",
        h.body
    );
    for e in ENDPOINTS.iter().filter(|e| e.path != "/v1/health") {
        let path = e.path.replace("{id}", "1");
        let a = call(&c, e.verb.http(), &path, Some(TOKEN), &[], "{}").await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{} {path}: {}",
            e.verb.http(),
            a.body
        );
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("storage cannot write"), "{path}: {}", a.body);
    }
    // Healthy: no failure field at all.
    let h = call(&cluster(), Method::GET, "/v1/health", None, &[], "").await;
    assert!(h.body.get("failure").is_none(), "{}", h.body);
}

/// A request for one endpoint of the table, against the fixture of
/// [`every_endpoint_answers_its_declared_status_and_type`]: (path, body).
fn sample(e: &Endpoint, fx: &Fixture, created: &BTreeMap<&str, u64>) -> (String, String) {
    let with = |id: u64| e.path.replace("{id}", &id.to_string());
    let made = |coll: &str| {
        let id = *created
            .get(coll)
            .unwrap_or_else(|| panic!("{} needs POST {coll} to run first", e.path));
        with(id)
    };
    let body = |b: &str| b.to_string();
    match (e.verb, e.path) {
        (Verb::Get, "/v1/locations/{id}") => (with(fx.location), String::new()),
        (Verb::Get, "/v1/racks/{id}") => (with(fx.rack), String::new()),
        (Verb::Get, "/v1/machines/{id}") => (with(fx.machine), String::new()),
        (Verb::Get, "/v1/images/{id}") => (with(fx.image), String::new()),
        (Verb::Get, "/v1/subnets/{id}") => (with(fx.subnet), String::new()),
        (Verb::Get, "/v1/tasks/{id}") => (with(fx.task), String::new()),
        (Verb::Get, p) if !p.contains('{') => (p.to_string(), String::new()),
        (Verb::Post, "/v1/cluster/join") => (
            e.path.into(),
            serde_json::json!({
                "token": JOIN_SECRET,
                "api_addr": "127.0.0.1:1",
                "peer_addr": "127.0.0.1:2",
                "csr": crate::cluster::pki::NodeKey::generate().unwrap().csr_pem,
                "apply_rules": rackd_raft::state::ApplyRules::CURRENT.number(),
            })
            .to_string(),
        ),
        (Verb::Post, "/v1/tokens/join") => (e.path.into(), body(r#"{"ttl_secs":60}"#)),
        (Verb::Post, "/v1/cluster/certificates/renew") => (e.path.into(), String::new()),
        (Verb::Post, "/v1/backup") => (
            e.path.into(),
            body(r#"{"passphrase":"a long enough passphrase"}"#),
        ),
        (Verb::Post, "/v1/tokens/api") => (e.path.into(), body(r#"{"name":"ci"}"#)),
        (Verb::Post, "/v1/locations") => (e.path.into(), body(r#"{"name":"dc9"}"#)),
        (Verb::Post, "/v1/racks") => (e.path.into(), body(r#"{"location":"dc1","name":"r9"}"#)),
        (Verb::Post, "/v1/machines") => (
            e.path.into(),
            body(r#"{"hostname":"m9","location":"dc1","macs":["52:54:00:00:00:99"]}"#),
        ),
        (Verb::Post, "/v1/images") => (
            e.path.into(),
            body(r#"{"name":"img9","kernel":"vmlinuz","initrd":"initrd"}"#),
        ),
        (Verb::Post, "/v1/subnets") => (
            e.path.into(),
            body(r#"{"location":"dc1","cidr":"10.9.0.0/24"}"#),
        ),
        (Verb::Post, "/v1/machines/{id}/deploy") => (with(fx.machine), body(r#"{"image":"img"}"#)),
        (Verb::Post, "/v1/machines/{id}/power") => (with(fx.machine), body(r#"{"action":"on"}"#)),
        (Verb::Post, "/v1/tasks/{id}/cancel") => (with(fx.task), String::new()),
        (Verb::Post, "/v1/tasks/{id}/retry") => (with(fx.cancelled_deploy), String::new()),
        (Verb::Post, "/v1/machines/{id}/release") => (with(fx.deployed), body("{}")),
        (Verb::Post, "/v1/machines/{id}/bmc-session") => {
            (with(fx.ipmi_machine), body(r#"{"source":"192.0.2.7"}"#))
        }
        (Verb::Get, "/v1/machines/{id}/bmc-sessions") => (with(fx.ipmi_machine), String::new()),
        (Verb::Delete, "/v1/machines/{id}/bmc-sessions") => (
            format!("{}?source=192.0.2.7", with(fx.ipmi_machine)),
            String::new(),
        ),
        (Verb::Post, "/v1/machines/{id}/boot-device") => {
            (with(fx.machine), body(r#"{"device":"pxe"}"#))
        }
        (Verb::Patch, "/v1/locations/{id}") => (with(fx.location), body(r#"{"description":"d"}"#)),
        (Verb::Patch, "/v1/racks/{id}") => (with(fx.rack), body(r#"{"height_units":48}"#)),
        (Verb::Patch, "/v1/machines/{id}") => (with(fx.machine), body(r#"{"description":"d"}"#)),
        (Verb::Patch, "/v1/images/{id}") => (with(fx.image), body(r#"{"cmdline":"quiet"}"#)),
        (Verb::Patch, "/v1/subnets/{id}") => (with(fx.subnet), body(r#"{"dns":["192.0.2.1"]}"#)),
        (Verb::Delete, "/v1/cluster/members/{id}") => (with(fx.learner), String::new()),
        (Verb::Post, "/v1/webhooks") => (
            e.path.into(),
            body(r#"{"name":"pager","url":"http://127.0.0.1:9/hook","kinds":["machine"]}"#),
        ),
        (Verb::Get, "/v1/webhooks/{id}") => (made("/v1/webhooks"), String::new()),
        (Verb::Patch, "/v1/webhooks/{id}") => (made("/v1/webhooks"), body(r#"{"enabled":false}"#)),
        (Verb::Put, "/v1/blobs/{digest}") => (blob_path(e.path), body(BLOB)),
        (Verb::Get, "/v1/blobs/{digest}") | (Verb::Delete, "/v1/blobs/{digest}") => {
            (blob_path(e.path), String::new())
        }
        (Verb::Delete, p) => {
            let coll = p.trim_end_matches("/{id}");
            (made(coll), String::new())
        }
        (v, p) => panic!("no sample request for {v:?} {p}: add one to api/tests.rs"),
    }
}

const JOIN_SECRET: &str = "rackd_join_test_secret";

/// The blob the samples upload, download and forget.
const BLOB: &str = "an artifact's bytes";

fn blob_path(template: &str) -> String {
    let d = crate::blobs::store::digest_of(BLOB.as_bytes());
    template.replace("{digest}", d.as_str())
}

/// The blob store of the tests' routers: one per test process, in a directory removed when
/// the process ends... or left in the temporary directory if it is killed.
pub(super) fn test_store() -> Arc<crate::blobs::BlobStore> {
    static STORE: std::sync::OnceLock<(tempfile::TempDir, Arc<crate::blobs::BlobStore>)> =
        std::sync::OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let s = crate::blobs::BlobStore::open(dir.path(), 1 << 20).unwrap();
            (dir, s)
        })
        .1
        .clone()
}

struct Fixture {
    location: u64,
    rack: u64,
    machine: u64,
    /// A machine with an IPMI BMC (BMC sessions need one).
    ipmi_machine: u64,
    image: u64,
    subnet: u64,
    task: u64,
    learner: u64,
    /// A deployed machine (release).
    deployed: u64,
    /// A cancelled deploy task (retry).
    cancelled_deploy: u64,
}

async fn fixture(c: &Arc<FakeCluster>) -> Fixture {
    use rackd_types::payload::{CreateImage, CreateRack, CreateSubnet};
    use rackd_types::MachineState;
    let location = c.create_location("dc1");
    let rack = c
        .apply_ok(
            "t",
            Command::CreateRack(CreateRack {
                location: "dc1".into(),
                name: "r1".into(),
                height_units: 42,
            }),
        )
        .into_rack()
        .unwrap()
        .meta
        .id;
    let image = c
        .apply_ok(
            "t",
            Command::CreateImage(CreateImage {
                name: "img".into(),
                kernel: "vmlinuz".into(),
                initrd: "initrd".into(),
                cmdline: String::new(),
                rootfs: None,
            }),
        )
        .into_image()
        .unwrap()
        .meta
        .id;
    let subnet = c
        .apply_ok(
            "t",
            Command::CreateSubnet(CreateSubnet {
                location: "dc1".into(),
                cidr: "10.1.0.0/24".into(),
                gateway: None,
                dns: vec![],
                dynamic_ranges: vec![],
                reserved_ranges: vec![],
            }),
        )
        .into_subnet()
        .unwrap()
        .meta
        .id;
    let machine = c.create_machine(CreateMachine {
        rack_id: Some(rack),
        rack_unit: Some(1),
        macs: vec!["52:54:00:00:00:01".into()],
        bmc: Some(sim_bmc()),
        state: Some(MachineState::Ready),
        ..machine_spec("m1", "dc1")
    });
    let ipmi_machine = c.create_machine(CreateMachine {
        macs: vec!["52:54:00:00:00:02".into()],
        bmc: Some(rackd_types::BmcSpec {
            driver: rackd_types::BmcDriver::Ipmi,
            address: "10.1.0.50".into(),
            port: 623,
            username: "admin".into(),
            password: None,
            cipher_suite: None,
        }),
        ..machine_spec("m-ipmi", "dc1")
    });
    let task = c
        .apply_ok(
            "t",
            Command::CreateTask {
                kind: rackd_types::TaskKind::PowerStatus,
                machine_id: machine,
            },
        )
        .into_task()
        .unwrap()
        .meta
        .id;
    let deployed = c.create_machine(CreateMachine {
        macs: vec!["52:54:00:00:00:03".into()],
        state: Some(MachineState::Deployed),
        ..machine_spec("m-deployed", "dc1")
    });
    let redo = c.create_machine(CreateMachine {
        macs: vec!["52:54:00:00:00:04".into()],
        state: Some(MachineState::Ready),
        ..machine_spec("m-redo", "dc1")
    });
    let cancelled_deploy = c
        .apply_ok(
            "t",
            Command::Deploy {
                id: redo,
                if_match: None,
                image: "img".into(),
                token: rackd_raft::cmd::Secret("t".repeat(64)),
                sealed_token: None,
                boot_timeout_ms: None,
                install_timeout_ms: None,
            },
        )
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    c.apply_ok(
        "t",
        Command::CancelTask {
            id: cancelled_deploy,
        },
    );
    c.apply_ok(
        "t",
        Command::CreateJoinToken {
            token_hash: hash_secret(JOIN_SECRET),
            ttl_ms: 600_000,
            description: String::new(),
            location: None,
        },
    );
    let learner = 7;
    let info = rackd_raft::NodeInfo::new("127.0.0.1:8007", "127.0.0.1:9007");
    c.add_node(learner, info, true).await.unwrap();
    Fixture {
        location,
        rack,
        machine,
        ipmi_machine,
        image,
        subnet,
        task,
        learner,
        deployed,
        cancelled_deploy,
    }
}

/// Every endpoint of the table, called once through the router: it answers the status the
/// table declares, with a body that decodes as the declared response type (the OpenAPI
/// document is generated from the same declarations). Writes create what the deletes then
/// remove, so deletes run last, in reverse order.
#[tokio::test]
async fn every_endpoint_answers_its_declared_status_and_type() {
    let c = cluster_at(crate::cluster::now_ms());
    let fx = fixture(&c).await;
    let mut order: Vec<&Endpoint> = ENDPOINTS
        .iter()
        .filter(|e| e.verb != Verb::Delete)
        .collect();
    order.extend(ENDPOINTS.iter().rev().filter(|e| e.verb == Verb::Delete));
    let mut created: BTreeMap<&str, u64> = BTreeMap::new();
    let store = test_store();
    for e in order {
        let (path, body) = sample(e, &fx, &created);
        let token = (e.auth != Auth::Open).then_some(TOKEN);
        let mut rb = Request::builder().method(e.verb.http()).uri(&path);
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        let app = router(AppState::new(
            c.clone(),
            reqwest::Client::new(),
            store.clone(),
        ));
        let resp = app
            .oneshot(rb.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let what = format!("{} {path}", e.verb.as_str());
        assert_eq!(
            status,
            e.status,
            "{what}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if let Err(err) = (e.decode_response)(&bytes) {
            panic!(
                "{what}: body does not match the declared type: {err}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        if e.verb == Verb::Post && !e.path.contains('{') && e.response_media == Media::Json {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(id) = v["id"].as_u64().or(v["webhook"]["id"].as_u64()) {
                created.insert(e.path, id);
            }
        }
    }
    // Each collection's created entry is gone again.
    let st = c.state();
    assert_eq!(st.locations.len(), 1);
    assert_eq!(st.webhooks.len(), 0);
    assert!(!c.status().members.contains_key(&fx.learner));
}

/// The negative control of the check above: a body of another type is refused.
#[test]
fn a_response_of_another_type_fails_the_declared_type_check() {
    let get_location = ENDPOINTS
        .iter()
        .find(|e| e.verb == Verb::Get && e.path == "/v1/locations/{id}")
        .unwrap();
    let task_json = br#"{"meta":{"id":1},"kind":"power_on"}"#;
    assert!((get_location.decode_response)(task_json).is_err());
    assert!((get_location.decode_response)(b"").is_err());
    let delete = ENDPOINTS.iter().find(|e| e.verb == Verb::Delete).unwrap();
    assert!((delete.decode_response)(b"").is_ok());
    assert!((delete.decode_response)(b"{}").is_err());
}

/// Every endpoint, called as the sample above calls it but with a parameter it does not
/// take, answers 400 naming it, and nothing is proposed.
#[tokio::test]
async fn every_endpoint_refuses_a_query_parameter_it_does_not_take() {
    let c = cluster_at(crate::cluster::now_ms());
    let fx = fixture(&c).await;
    let created: BTreeMap<&str, u64> = ENDPOINTS
        .iter()
        .filter(|e| e.verb == Verb::Post && !e.path.contains('{'))
        .map(|e| (e.path, fx.location))
        .collect();
    for e in ENDPOINTS {
        let (path, body) = sample(e, &fx, &created);
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}locaton=dc1");
        let before = c.log().len();
        let token = (e.auth != Auth::Open).then_some(TOKEN);
        let a = call(&c, e.verb.http(), &path, token, &[], &body).await;
        let what = format!("{} {path}", e.verb.as_str());
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.body);
        assert_eq!(error_code(&a), "InvalidRequest", "{what}");
        assert!(a.body.to_string().contains("locaton"), "{what}: {}", a.body);
        assert_eq!(c.log().len(), before, "{what} proposed something");
    }
}

/// Every endpoint that takes a JSON body answers one over the node's limit (1 MiB) with 413
/// in the JSON error format, and proposes nothing.
#[tokio::test]
async fn an_oversized_body_gets_a_413_json_error_on_every_endpoint_that_takes_one() {
    let c = cluster();
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let mut checked = 0;
    for e in ENDPOINTS
        .iter()
        .filter(|e| e.request.is_some() && !e.raw_request)
    {
        let before = c.log().len();
        let path = e.path.replace("{id}", "1");
        let a = call(&c, e.verb.http(), &path, Some(TOKEN), &[], &big).await;
        assert_eq!(
            a.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{} {path}: {}",
            e.verb.as_str(),
            a.body
        );
        assert_eq!(
            error_code(&a),
            "TooLarge",
            "{} {path}: {}",
            e.verb.as_str(),
            a.body
        );
        assert_eq!(c.log().len(), before, "{path} proposed something");
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
}
