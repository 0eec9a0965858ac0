//! Every collection of the API survives a restart, on every node, and replicas agree. The list
//! of collections comes from the API's own route table (every `GET` without a path parameter
//! except the status and metrics endpoints), so a collection added later is covered without editing
//! this test; the fixture must put at least one item in each or the test fails.
//! Also: data directories left by format 1 (images and tasks never written) keep their tables
//! and get images and tasks back from the log at start, and the cluster then adopts this
//! build's apply rules once.

use std::collections::BTreeMap;

use rackd_tests::Cluster;
use serde_json::{json, Value};

use crate::util::setup_location;

const T: std::time::Duration = std::time::Duration::from_secs(30);

/// Status endpoints that are not collections of replicated state.
const NOT_COLLECTIONS: &[&str] = &["/v1/health", "/v1/ready", "/v1/cluster", "/metrics"];

fn collections() -> Vec<&'static str> {
    use rackd::api::endpoints::{Verb, ENDPOINTS};
    ENDPOINTS
        .iter()
        .filter(|e| {
            e.verb == Verb::Get && !e.path.contains('{') && !NOT_COLLECTIONS.contains(&e.path)
        })
        .map(|e| e.path)
        .collect()
}

/// Every item of every collection as node `i` sees it (all pages).
async fn dump(
    c: &Cluster,
    i: usize,
    stale: bool,
) -> anyhow::Result<BTreeMap<&'static str, Vec<Value>>> {
    let mut out = BTreeMap::new();
    for coll in collections() {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!(
                "{coll}?limit=1000&stale={stale}{}",
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={cursor}")
                }
            );
            let page: Value = c.get_json(i, &path).await?;
            match &page {
                Value::Array(a) => {
                    items.extend(a.iter().cloned());
                    break;
                }
                _ => {
                    items.extend(page["items"].as_array().cloned().unwrap_or_default());
                    match page["next_cursor"].as_str() {
                        Some(n) => cursor = n.to_string(),
                        None => break,
                    }
                }
            }
        }
        out.insert(coll, items);
    }
    Ok(out)
}

/// Journal events may be added by the restart itself: the earlier ones must all be there.
fn same_state(before: &BTreeMap<&str, Vec<Value>>, after: &BTreeMap<&str, Vec<Value>>) -> bool {
    before.iter().all(|(k, b)| {
        let a = &after[k];
        if *k == "/v1/events" {
            a.len() >= b.len() && a[..b.len()] == b[..]
        } else {
            a == b
        }
    })
}

/// Wait until node `i`'s local replica (what DHCP, the executor and `?stale=true` read) holds
/// everything of `before`.
async fn replica_matches(
    c: &Cluster,
    i: usize,
    before: &BTreeMap<&'static str, Vec<Value>>,
    what: &str,
) {
    c.wait_until(T, what, |c| {
        let before = before.clone();
        async move {
            dump(c, i, true)
                .await
                .is_ok_and(|d| same_state(&before, &d))
        }
    })
    .await
    .unwrap();
}

async fn populate(c: &Cluster) {
    setup_location(c, 0).await;
    let rack: Value = c
        .post_json(
            0,
            "/v1/racks",
            &json!({"location": "dc1", "name": "r1", "height_units": 42}),
        )
        .await
        .unwrap();
    let m: Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "m1", "location": "dc1", "rack_id": rack["id"], "rack_unit": 3,
                    "macs": ["02:00:00:00:00:01"], "ips": ["10.20.0.5"],
                    "bmc": {"driver": "sim", "address": "sim-1", "username": "u", "password": "p"}}),
        )
        .await
        .unwrap();
    let _: Value = c
        .post_json(
            0,
            "/v1/images",
            &json!({"name": "debian", "kernel": "d/vmlinuz", "initrd": "d/initrd", "cmdline": "quiet"}),
        )
        .await
        .unwrap();
    let _: Value = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 600}))
        .await
        .unwrap();
    let blob = b"a kernel, say";
    let digest = rackd::blobs::store::digest_of(blob);
    let r = c
        .http
        .put(format!("{}/v1/blobs/{digest}", c.url(0)))
        .bearer_auth(&c.token)
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    let _: Value = c
        .post_json(0, "/v1/tokens/api", &json!({"name": "ops"}))
        .await
        .unwrap();
    // Disabled: its delivery state stays put across the restarts compared below.
    let _: Value = c
        .post_json(
            0,
            "/v1/webhooks",
            &json!({"name": "pager", "url": "http://127.0.0.1:9/hook", "kinds": ["machine"],
                    "enabled": false}),
        )
        .await
        .unwrap();
    let (s, t) = c
        .request(
            0,
            reqwest::Method::POST,
            &format!("/v1/machines/{}/power", m["id"]),
            Some(json!({"action": "on"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_collection_survives_restarts_on_every_node() {
    let mut c = Cluster::start("restart-all", 3, &[])
        .await
        .expect("cluster");
    populate(&c).await;
    let before = dump(&c, 0, false).await.unwrap();
    for (coll, items) in &before {
        assert!(
            !items.is_empty(),
            "the fixture must create at least one item in {coll} (add it to populate())"
        );
    }
    for i in 0..3 {
        replica_matches(&c, i, &before, "replica caught up").await;
    }

    // Node 0 alone (SIGTERM), then the whole cluster (one of them by SIGKILL).
    c.nodes[0].stop();
    c.nodes[0].start().unwrap();
    c.nodes[0].stop();
    c.nodes[1].kill();
    c.nodes[2].stop();
    for i in 0..3 {
        c.nodes[i].start().unwrap();
    }
    c.wait_leader(T).await.unwrap();
    for i in 0..3 {
        let after = dump(&c, i, false).await.unwrap();
        assert!(
            same_state(&before, &after),
            "node {i} lost data:\nbefore {before:#?}\nafter {after:#?}"
        );
        // The local replica too.
        replica_matches(&c, i, &before, "replica equal after restart").await;
    }

    // Data directories left by format 1 (images and tasks never written, rows decided by
    // format 1's rules), on every node as after a whole-cluster upgrade. Each node keeps its
    // tables, rebuilds images and tasks from its log, and the leader then moves the cluster
    // to this build's apply rules once (`AdoptRules`, one index for every node).
    for i in 0..3 {
        c.nodes[i].stop();
        rackd_storage::testing::make_v1(&c.nodes[i].data_dir).unwrap();
    }
    for i in 0..3 {
        c.nodes[i].start().unwrap();
    }
    c.wait_leader(T).await.unwrap();
    for i in 0..3 {
        replica_matches(&c, i, &before, "format-1 node migrated with everything").await;
        let log = std::fs::read_to_string(&c.nodes[i].log).unwrap();
        assert!(log.contains("on-disk format 1"), "the migration is logged");
    }
    let adopted = |d: &BTreeMap<&str, Vec<Value>>| {
        d["/v1/events"]
            .iter()
            .filter(|e| e["kind"] == "cluster.rules_adopted")
            .count()
    };
    c.wait_until(T, "rules adopted on every node", |c| async move {
        let mut n = Vec::new();
        for i in 0..3 {
            match dump(c, i, true).await {
                Ok(d) => n.push(adopted(&d)),
                Err(_) => return false,
            }
        }
        n == [1, 1, 1]
    })
    .await
    .unwrap();
}
