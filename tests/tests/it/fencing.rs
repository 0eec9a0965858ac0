//! Fencing at process level (issue 21 R1): two location nodes serve one site and an `ipmi_sim`
//! BMC. The node running a power task is stopped (SIGSTOP) in the middle of it, while it can
//! still reach the BMC and its request is in flight; the other node takes the task over after
//! the lease and runs the next task too. When the stopped node resumes, the BMC hears nothing
//! more from it (its chassis log shows every call, reads included), and the machine stays in
//! the power state the last task recorded.

use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use serde_json::{json, Value};

use crate::ipmi_sim::IpmiSim;
use crate::lease::executor_args;
use crate::util::post_task;

const LEASE_SECS: u64 = 3;
/// How long the chassis takes to answer while the first task is in flight.
const STALL_SECS: u64 = 3;

async fn task(c: &Cluster, id: u64) -> Value {
    c.get_json(0, &format!("/v1/tasks/{id}")).await.unwrap()
}

async fn wait_for<F: Fn() -> bool>(what: &str, limit: Duration, f: F) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_executor_resumes_past_its_lease_and_sends_the_bmc_nothing_more() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(2, tmp.path());
    let mut c = Cluster::new("fencing");
    c.bootstrap().await.expect("bootstrap");
    c.join(0, false).await.expect("join n2");
    c.join(0, false).await.expect("join n3");
    // Two location nodes of dc1 (learners, as remote sites are). The IPMI timeout is longer
    // than the stall, so the in-flight request is waited for, not retransmitted.
    let lease = LEASE_SECS.to_string();
    let site = executor_args(&lease, "6000");
    let mut locs = vec![];
    for _ in 0..2 {
        locs.push(
            c.join_with(0, true, &site)
                .await
                .expect("join location node"),
        );
    }
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let machine = sim.add_machine(&c, "dc1", "fenced").await;
    let power_file = sim.dir.join("power");
    let power = || std::fs::read_to_string(&power_file).unwrap_or_default();
    assert_ne!(power().trim(), "1", "the machine starts off");

    // Task 1 (on): the chassis stalls on its first call; the assignee is stopped while its
    // request waits for the answer.
    std::fs::write(sim.dir.join("stall"), STALL_SECS.to_string()).unwrap();
    let (s, t1) = c
        .request(
            0,
            reqwest::Method::POST,
            &format!("/v1/machines/{machine}/power"),
            Some(json!({"action": "on"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{t1}");
    let t1 = t1["id"].as_u64().unwrap();
    wait_for("the first BMC call", Duration::from_secs(30), || {
        !sim.calls().is_empty()
    })
    .await;
    let running = task(&c, t1).await;
    assert_eq!(running["state"], "running", "{running}");
    let assignee = running["assignee"].as_u64().expect("assignee");
    let mut stopped = None;
    for &i in &locs {
        if c.health(i).await.unwrap().node_id == assignee {
            stopped = Some(i);
        }
    }
    let stopped = stopped.expect("the assignee is one of the location nodes");
    c.nodes[stopped].signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let in_flight = sim.calls();
    assert_eq!(in_flight.lines().count(), 1, "{in_flight}");
    assert!(in_flight.contains("get power"), "{in_flight}");
    std::fs::remove_file(sim.dir.join("stall")).unwrap();

    // The other node takes task 1 over once its lease expired, then runs task 2 (off).
    let limit = Duration::from_secs(LEASE_SECS + 30);
    let deadline = Instant::now() + limit;
    let taken = loop {
        let t = task(&c, t1).await;
        if t["state"] == "succeeded" || t["state"] == "failed" {
            break t;
        }
        assert!(Instant::now() < deadline, "task 1 not taken over: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken["state"], "succeeded", "{taken}");
    assert_eq!(taken["generation"], 2, "{taken}");
    assert_ne!(taken["assignee"].as_u64(), Some(assignee), "{taken}");
    assert!(stopped_at.elapsed() > Duration::from_secs(LEASE_SECS));
    let t2 = post_task(
        &c,
        0,
        1,
        &format!("/v1/machines/{machine}/power"),
        json!({"action": "off"}),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        (t2["state"].as_str(), t2["observed_power"].as_str()),
        (Some("succeeded"), Some("off")),
        "{t2}"
    );
    let before = sim.calls();
    assert!(before.contains("set power 1") && before.contains("set power 0"));
    assert_eq!(power().trim(), "0");

    // Resume the stopped node: the answer to its old request is waiting, its fence closed
    // long ago. Nothing more reaches the BMC, and the machine stays off.
    c.nodes[stopped].signal(libc::SIGCONT);
    let log = c.nodes[stopped].log.clone();
    let fenced = || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.contains("attempt fenced") || l.contains("lease lost; attempt abandoned")
    };
    wait_for(
        "the resumed node to drop its attempt",
        Duration::from_secs(30),
        fenced,
    )
    .await;
    // Give a wrongly unfenced attempt time to act (its next request would go out at once).
    tokio::time::sleep(Duration::from_secs(LEASE_SECS)).await;
    let after = sim.calls();
    assert_eq!(
        after,
        before,
        "the resumed node sent the BMC more (new calls: {:?})",
        &after[before.len().min(after.len())..]
    );
    assert_eq!(power().trim(), "0", "the machine was powered back on");
    let m: Value = c
        .get_json(0, &format!("/v1/machines/{machine}"))
        .await
        .unwrap();
    assert_eq!(m["power_state"], "off", "{m}");
    let t1_final = task(&c, t1).await;
    assert_eq!(
        (t1_final["generation"].as_u64(), t1_final["state"].as_str()),
        (Some(2), Some("succeeded")),
        "the late attempt recorded nothing: {t1_final}"
    );
}
