//! API contract on a live node: auth, JSON errors, If-Match, Idempotency-Key, pagination,
//! filters, write-only BMC passwords, and the CLI against the same server.

use std::process::Command;

use rackd_tests::{rackd_bin, Cluster};
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{create_machine, machine_body, setup_location};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_status_codes() {
    let c = Cluster::start("errors", 1, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    let url = c.url(0);
    // No token / wrong token.
    let r = c
        .http
        .get(format!("{url}/v1/machines"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Unauthorized");
    let r = c
        .http
        .get(format!("{url}/v1/machines"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health needs no token.
    assert_eq!(
        c.http
            .get(format!("{url}/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let cases: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (Method::GET, "/v1/machines/999", None, 404, "NotFound"),
        (Method::GET, "/v1/machines/abc", None, 400, "InvalidRequest"),
        (
            Method::GET,
            "/v1/machines?limit=0",
            None,
            400,
            "InvalidRequest",
        ),
        (
            Method::GET,
            "/v1/machines?cursor=zz",
            None,
            400,
            "InvalidRequest",
        ),
        (
            Method::GET,
            "/v1/machines?state=flying",
            None,
            400,
            "InvalidRequest",
        ),
        (Method::GET, "/v1/nope", None, 404, "NotFound"),
        (
            Method::POST,
            "/v1/machines",
            Some(json!({"hostname": "x"})),
            400,
            "InvalidRequest",
        ),
        (
            Method::POST,
            "/v1/machines",
            Some(json!({"hostname": "x", "location": "dc1", "extra": 1})),
            400,
            "InvalidRequest",
        ),
        (
            Method::POST,
            "/v1/machines",
            Some(json!({"hostname": "x", "location": "nowhere"})),
            400,
            "InvalidRequest",
        ),
        (
            Method::POST,
            "/v1/machines",
            Some(json!({"hostname": "x", "location": "dc1", "macs": ["zz"]})),
            400,
            "InvalidRequest",
        ),
        (
            Method::POST,
            "/v1/machines",
            Some(json!({"hostname": "bad name!", "location": "dc1"})),
            400,
            "InvalidRequest",
        ),
        (
            Method::POST,
            "/v1/subnets",
            Some(json!({"location": "dc1", "cidr": "10.20.1.0/24"})),
            409,
            "Conflict",
        ),
        (
            Method::POST,
            "/v1/locations",
            Some(json!({"name": "dc1"})),
            409,
            "Conflict",
        ),
        (Method::DELETE, "/v1/locations/1", None, 404, "NotFound"),
    ];
    for (m, path, body, status, code) in cases {
        let (s, v) = c.request(0, m.clone(), path, body, &[]).await.unwrap();
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{m} {path}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Malformed JSON body.
    let r = c
        .http
        .post(format!("{url}/v1/machines"))
        .bearer_auth(&c.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidRequest");
    // Wrong method.
    let (s, _) = c
        .request(0, Method::PUT, "/v1/machines", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_idempotency_uniqueness_and_pagination() {
    let c = Cluster::start("cas", 3, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    let id = create_machine(&c, 1, 1).await;

    // Compare-and-set: the right version wins, a stale one gets 412 and changes nothing.
    let p = |d: &str| Some(json!({"description": d}));
    let path = format!("/v1/machines/{id}");
    let (s, v) = c
        .request(2, Method::PATCH, &path, p("a"), &[("If-Match", "1")])
        .await
        .unwrap();
    assert_eq!((s, v["version"].as_u64()), (200, Some(2)), "{v}");
    let (s, v) = c
        .request(1, Method::PATCH, &path, p("b"), &[("If-Match", "1")])
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("PreconditionFailed"))
    );
    let m: Value = c.get_json(0, &path).await.unwrap();
    assert_eq!(
        (m["description"].as_str(), m["version"].as_u64()),
        (Some("a"), Some(2))
    );
    let (s, _) = c
        .request(0, Method::PATCH, &path, p("c"), &[("If-Match", "nope")])
        .await
        .unwrap();
    assert_eq!(s, 400);

    // Idempotency: the retried POST (even through another node) returns the first result.
    let hdr = [("Idempotency-Key", "create-host-7")];
    let (s1, v1) = c
        .request(1, Method::POST, "/v1/machines", Some(machine_body(7)), &hdr)
        .await
        .unwrap();
    let (s2, v2) = c
        .request(2, Method::POST, "/v1/machines", Some(machine_body(7)), &hdr)
        .await
        .unwrap();
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1["id"], v2["id"]);
    // The key answers only the request it was made for: a DELETE reusing it gets 422 with a
    // JSON error and deletes nothing.
    let (s, v) = c
        .request(
            0,
            Method::DELETE,
            &format!("/v1/machines/{}", v1["id"]),
            None,
            &hdr,
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("IdempotencyKeyReused")),
        "{v}"
    );
    let (s, _) = c
        .request(
            0,
            Method::GET,
            &format!("/v1/machines/{}", v1["id"]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "the machine is still there");
    // Token names are unique: a second "admin" is refused.
    let (s, v) = c
        .request(
            0,
            Method::POST,
            "/v1/tokens/api",
            Some(json!({"name": "admin"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("Conflict")),
        "{v}"
    );
    // Keys are scoped by token: a second admin token uses the same key for its own request.
    let other: Value = c
        .post_json(0, "/v1/tokens/api", &json!({"name": "admin-2"}))
        .await
        .unwrap();
    let (s3, v3) = {
        let r = c
            .http
            .post(format!("{}/v1/machines", c.url(2)))
            .bearer_auth(other["token"].as_str().unwrap())
            .header("Idempotency-Key", "create-host-7")
            .json(&machine_body(9))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s3, 201, "{v3}");
    assert_ne!(v3["id"], v1["id"]);
    let (s, _) = c
        .request(
            0,
            Method::DELETE,
            &format!("/v1/machines/{}", v3["id"]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204);
    // Token creation takes a key too: a retry does not mint a second live credential.
    let tk = [("Idempotency-Key", "token-1")];
    let (s, t1) = c
        .request(
            1,
            Method::POST,
            "/v1/tokens/api",
            Some(json!({"name": "ci"})),
            &tk,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{t1}");
    let (s, t2) = c
        .request(
            2,
            Method::POST,
            "/v1/tokens/api",
            Some(json!({"name": "ci"})),
            &tk,
        )
        .await
        .unwrap();
    assert_eq!(s, 409, "{t2}");
    assert!(t2["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("token {}", t1["id"])));
    let tokens: Value = c.get_json(0, "/v1/tokens/api").await.unwrap();
    let named_ci = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "ci")
        .count();
    assert_eq!(named_ci, 1);
    // Without the key the same body conflicts on the MAC (unique cluster-wide).
    let (s, v) = c
        .request(0, Method::POST, "/v1/machines", Some(machine_body(7)), &[])
        .await
        .unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("Conflict")));
    // The MAC is normalized before the uniqueness check.
    let mut upper = machine_body(8);
    upper["macs"] = json!([machine_body(7)["macs"][0]
        .as_str()
        .unwrap()
        .to_uppercase()
        .replace(':', "-")]);
    upper["ips"] = json!([]);
    let (s, _) = c
        .request(0, Method::POST, "/v1/machines", Some(upper), &[])
        .await
        .unwrap();
    assert_eq!(s, 409);
    // IP unique cluster-wide.
    let mut dup_ip = machine_body(9);
    dup_ip["ips"] = machine_body(7)["ips"].clone();
    let (s, _) = c
        .request(0, Method::POST, "/v1/machines", Some(dup_ip), &[])
        .await
        .unwrap();
    assert_eq!(s, 409);

    // Pagination walks every machine exactly once; filters apply.
    for i in 10..35 {
        create_machine(&c, (i % 3) as usize, i).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "/v1/machines?limit=7".to_string(),
            Some(cur) => format!("/v1/machines?limit=7&cursor={cur}"),
        };
        let page: Value = c.get_json(1, &q).await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|m| m["id"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    assert_eq!(seen.len(), 27);
    let page: Value = c
        .get_json(0, "/v1/machines?location=elsewhere")
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let page: Value = c
        .get_json(0, "/v1/machines?state=new&limit=1000")
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 27);

    // Delete, then 404.
    let (s, _) = c
        .request(2, Method::DELETE, &path, None, &[])
        .await
        .unwrap();
    assert_eq!(s, 204);
    let (s, _) = c.request(0, Method::GET, &path, None, &[]).await.unwrap();
    assert_eq!(s, 404);
    // The journal has who/what/when.
    let ev: Value = c
        .get_json(1, "/v1/events?after=0&limit=1000")
        .await
        .unwrap();
    let items = ev["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|e| e["kind"] == "machine.deleted" && e["actor"] == "admin"));
    assert!(items.iter().all(|e| e["time"].as_u64().unwrap() > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bmc_password_is_write_only_and_never_logged() {
    let c = Cluster::start("secret", 2, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    let secret = "S3cr3t-BMC-pa55";
    let mut body = machine_body(1);
    body["bmc"] =
        json!({"driver": "ipmi", "address": "10.99.0.5", "username": "admin", "password": secret});
    let (s, v) = c
        .request(1, Method::POST, "/v1/machines", Some(body), &[])
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(secret));
    assert_eq!(v["bmc"]["password_set"], true);
    let id = v["id"].as_u64().unwrap();
    for i in 0..2 {
        let m: Value = c.get_json(i, &format!("/v1/machines/{id}")).await.unwrap();
        assert!(!m.to_string().contains(secret));
        let ev: Value = c.get_json(i, "/v1/events?limit=1000").await.unwrap();
        assert!(!ev.to_string().contains(secret));
    }
    // Moving the BMC without a password forgets the old BMC's password on every node; a
    // username change at the same address keeps it.
    let patch = |bmc: Value| {
        let c = &c;
        async move {
            let (s, v) = c
                .request(
                    1,
                    Method::PATCH,
                    &format!("/v1/machines/{id}"),
                    Some(json!({ "bmc": bmc })),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let v = patch(json!({"driver": "ipmi", "address": "10.99.0.5", "username": "root"})).await;
    assert_eq!(v["bmc"]["password_set"], true, "same BMC: {v}");
    let v = patch(json!({"driver": "ipmi", "address": "10.99.0.6", "username": "root"})).await;
    assert_eq!(v["bmc"]["password_set"], false, "moved BMC: {v}");
    for i in 0..2 {
        let m: Value = c.get_json(i, &format!("/v1/machines/{id}")).await.unwrap();
        assert_eq!(m["bmc"]["password_set"], false, "node {i}: {m}");
    }
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap();
        assert!(!log.contains(secret), "BMC password in {}", n.log.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_talks_to_the_cluster() {
    let c = Cluster::start("cli", 2, &[]).await.expect("cluster");
    let run = |args: &[&str]| {
        let out = Command::new(rackd_bin())
            .args(args)
            .env("RACKD_SERVER", c.url(1))
            .env("RACKD_TOKEN", &c.token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(run(&["locations", "add", "dc-east"]).0);
    assert!(
        run(&[
            "subnets",
            "add",
            "--location",
            "dc-east",
            "--cidr",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.1"
        ])
        .0
    );
    let (ok, out, err) = run(&[
        "machines",
        "add",
        "--hostname",
        "web1",
        "--location",
        "dc-east",
        "--mac",
        "AA:BB:CC:00:00:01",
        "--ip",
        "10.5.0.10",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let m: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["macs"][0], "aa:bb:cc:00:00:01");
    let (ok, out, _) = run(&["machines", "list"]);
    assert!(ok);
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(out.contains("web1") && out.contains("10.5.0.10"));
    let id = m["id"].as_u64().unwrap().to_string();
    let (ok, _, err) = run(&[
        "machines",
        "update",
        &id,
        "--if-match",
        "9",
        "--description",
        "x",
    ]);
    assert!(!ok);
    assert!(err.contains("412"), "{err}");
    assert!(
        run(&[
            "machines",
            "update",
            &id,
            "--if-match",
            "1",
            "--state",
            "ready"
        ])
        .0
    );
    let (ok, out, _) = run(&["status"]);
    assert!(ok);
    assert!(out.contains("voter"), "{out}");
    let (ok, out, _) = run(&["members", "list", "-o", "json"]);
    assert!(ok);
    let members: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2);
    let (ok, out, _) = run(&["tokens", "create"]);
    assert!(ok && out.trim().starts_with("rackd-join-"));
    assert!(run(&["machines", "delete", &id]).0);
    let (ok, _, err) = run(&["machines", "show", &id]);
    assert!(!ok && err.contains("404"));
    // Without a token the CLI reports the 401 clearly.
    let out = Command::new(rackd_bin())
        .args(["machines", "list"])
        .env("RACKD_SERVER", c.url(0))
        .env_remove("RACKD_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// Every (method, path) in the checked-in OpenAPI file is served by a live node, and a route
/// missing from the file is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_serves_exactly_the_openapi_routes() {
    let c = Cluster::start("openapi", 1, &[]).await.expect("cluster");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../openapi/rackd.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, _) in ops.as_object().unwrap() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let p = path.replace("{id}", "424242");
            // Bodies are deliberately invalid: we only check that the route exists.
            let body = if m == Method::POST || m == Method::PATCH {
                Some(json!([]))
            } else {
                None
            };
            let (s, v) = c.request(0, m.clone(), &p, body, &[]).await.unwrap();
            assert_ne!(s, 405, "{method} {path} not allowed by the server");
            assert!(
                v["error"]["message"] != "no such route",
                "{method} {path} documented but not served"
            );
            n += 1;
        }
    }
    assert!(n >= 29);
    let (s, _) = c
        .request(0, Method::GET, "/v1/undocumented", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 404);
}
