//! Task leases: the executor renews the lease of a task while it runs, and a second location
//! node of the same site, alive and ready, does not take it over; when the executor is killed,
//! the task is taken over under a new generation once its lease expires, and the machine's
//! later tasks run. No task stays `running` without a live executor.

use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

const LEASE_SECS: u64 = 3;

async fn task(c: &Cluster, id: u64) -> Value {
    c.get_json(0, &format!("/v1/tasks/{id}")).await.unwrap()
}

async fn post_power(c: &Cluster, machine: u64, action: &str) -> u64 {
    let (s, t) = c
        .request(
            0,
            Method::POST,
            &format!("/v1/machines/{machine}/power"),
            Some(json!({ "action": action })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{t}");
    t["id"].as_u64().unwrap()
}

/// A location node for dc1 (no power sync) with the given lease and IPMI timeout.
fn executor_args<'a>(lease: &'a str, ipmi_timeout_ms: &'a str) -> [&'a str; 8] {
    [
        "--location",
        "dc1",
        "--task-lease-secs",
        lease,
        "--ipmi-timeout-ms",
        ipmi_timeout_ms,
        "--power-sync-secs",
        "0",
    ]
}

fn finished(t: &Value) -> bool {
    t["state"] == "succeeded" || t["state"] == "failed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executors_task_is_taken_over_after_its_lease_and_the_machine_is_not_wedged() {
    let mut c = Cluster::new("lease");
    c.bootstrap().await.expect("bootstrap");
    c.join(0, false).await.expect("join n2");
    // The location's only executor. Its IPMI timeouts are long, so a power task against a BMC
    // that never answers runs for about a minute.
    let lease = LEASE_SECS.to_string();
    let loc = c
        .join_with(0, false, &executor_args(&lease, "5000"))
        .await
        .expect("join location node");
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    // A loopback address nothing answers on (the harness uses 127.A.B.N with B >= 1).
    let m: Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "dead-bmc", "location": "dc1",
                    "bmc": {"driver": "ipmi", "address": "127.77.0.1", "password": "pw"}}),
        )
        .await
        .unwrap();
    let machine = m["id"].as_u64().unwrap();
    let t1 = post_power(&c, machine, "off").await;
    let t2 = post_power(&c, machine, "on").await;

    // The executor claims t1 and keeps renewing its lease while the BMC does not answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let t = task(&c, t1).await;
        if t["state"] == "running" {
            break t;
        }
        assert!(Instant::now() < deadline, "t1 never started: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (first["attempt"].as_u64(), first["generation"].as_u64()),
        (Some(1), Some(1))
    );
    // A second executor for dc1, with short IPMI timeouts: it would take t1 over (and fail it
    // fast) the moment the first executor stopped renewing. Joined now, so t1 started on the
    // first one.
    c.join_with(0, false, &executor_args(&lease, "100"))
        .await
        .expect("join a second location node");
    let second_up = Instant::now();
    tokio::time::sleep(Duration::from_millis(LEASE_SECS * 1000 + 1500)).await;
    let renewed = task(&c, t1).await;
    assert_eq!(renewed["state"], "running", "{renewed}");
    assert_eq!(
        renewed["generation"], 1,
        "no take-over of a live executor: {renewed}"
    );
    assert!(
        renewed["lease_expires_at"].as_u64() > first["lease_expires_at"].as_u64(),
        "lease renewed: {first} -> {renewed}"
    );
    assert_eq!(task(&c, t2).await["state"], "pending");
    assert!(
        second_up.elapsed() > Duration::from_secs(LEASE_SECS),
        "the second executor watched for longer than a lease"
    );

    // SIGKILL the executor mid-task; it comes back with short IPMI timeouts.
    c.nodes[loc].kill();
    for a in c.nodes[loc].args.iter_mut() {
        if a == "5000" {
            *a = "100".into();
        }
    }
    c.nodes[loc].start().expect("restart location node");
    let restarted = Instant::now();

    // Both tasks reach a terminal state within the lease plus a margin (restart, catch-up, and
    // two quick failures against the dead BMC).
    let limit = Duration::from_secs(LEASE_SECS + 25);
    loop {
        let (a, b) = (task(&c, t1).await, task(&c, t2).await);
        if finished(&a) && finished(&b) {
            break;
        }
        assert!(
            restarted.elapsed() < limit,
            "tasks wedged {:?} after the restart:\n{a}\n{b}",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "both tasks finished {:?} after the restart",
        restarted.elapsed()
    );
    let a = task(&c, t1).await;
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(
        (a["attempt"].as_u64(), a["generation"].as_u64()),
        (Some(2), Some(2)),
        "taken over under a new generation: {a}"
    );
    assert!(
        a["error"].as_str().unwrap().contains("did not answer"),
        "{a}"
    );
    let b = task(&c, t2).await;
    assert_eq!(b["state"], "failed", "{b}");
    assert_eq!(b["attempt"], 1, "{b}");
    let ev: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert!(
        ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "task.started"
                && e["entity_id"] == t1
                && e["message"].as_str().unwrap_or("").contains("expired")),
        "take-over journaled: {ev}"
    );
}
