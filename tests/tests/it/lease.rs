//! Task leases: the executor renews the lease of a task while it runs, and a second location
//! node of the same site, alive and ready, does not take it over; when the executor is killed,
//! the task is taken over under a new generation once its lease expires, and the machine's
//! later tasks run. No task stays `running` without a live executor. When the site's only
//! executor is gone for good, the leader fails its machine's tasks as "executor lost" after
//! `--task-lost-secs`, and a replacement node runs the next task.

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
pub(crate) fn executor_args<'a>(lease: &'a str, ipmi_timeout_ms: &'a str) -> [&'a str; 8] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_site_whose_only_executor_is_gone_end_and_a_replacement_runs_the_next() {
    use crate::ipmi_sim::IpmiSim;
    const LOST_SECS: u64 = 9;
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(3, tmp.path());
    let mut c = Cluster::new("lost");
    c.common_args = vec!["--task-lost-secs".into(), LOST_SECS.to_string()];
    c.bootstrap().await.expect("bootstrap");
    let lease = LEASE_SECS.to_string();
    let site = executor_args(&lease, "6000");
    let only = c
        .join_with(0, true, &site)
        .await
        .expect("join location node");
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let machine = sim.add_machine(&c, "dc1", "orphan").await;
    // The chassis stalls, so t1 is running when its executor dies; t2 waits behind it.
    std::fs::write(sim.dir.join("stall"), "3").unwrap();
    let t1 = post_power(&c, machine, "on").await;
    let t2 = post_power(&c, machine, "off").await;
    let t0 = Instant::now();
    while sim.calls().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "t1 never reached the BMC"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(task(&c, t1).await["state"], "running");
    c.nodes[only].kill();
    let killed = Instant::now();
    std::fs::remove_file(sim.dir.join("stall")).unwrap();

    // Both end within lease + limit (plus the reaper's tick and a commit), not never.
    let limit = Duration::from_secs(LEASE_SECS + LOST_SECS + 10);
    let (a, b) = loop {
        let (a, b) = (task(&c, t1).await, task(&c, t2).await);
        if finished(&a) && finished(&b) {
            break (a, b);
        }
        assert!(
            killed.elapsed() < limit,
            "tasks wedged without an executor:\n{a}\n{b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let waited = killed.elapsed();
    eprintln!("both tasks ended {waited:?} after their only executor died");
    assert!(
        waited >= Duration::from_secs(LOST_SECS),
        "not before the limit: {waited:?}"
    );
    for (t, what) in [(&a, "expired"), (&b, &format!("task {t1}"))] {
        assert_eq!(t["state"], "failed", "{t}");
        let e = t["error"].as_str().unwrap();
        assert!(e.starts_with("executor lost") && e.contains(what), "{t}");
    }

    // A replacement node for the site runs the machine's next task.
    c.join_with(0, true, &site)
        .await
        .expect("join a replacement location node");
    let t3 = post_power(&c, machine, "on").await;
    let t0 = Instant::now();
    let done = loop {
        let t = task(&c, t3).await;
        if finished(&t) {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "t3 did not run: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (done["state"].as_str(), done["observed_power"].as_str()),
        (Some("succeeded"), Some("on")),
        "{done}"
    );
    let ev: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    let lost = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["kind"] == "task.finished"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("executor lost")
        })
        .count();
    assert_eq!(lost, 2, "both journaled: {ev}");
}
