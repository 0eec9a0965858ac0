//! Deploy and release workflows end to end on real `rackd` processes: the location's
//! executors drive a (simulated) BMC step by step, the HTTP boot server reports the script
//! fetch, the install callback ends the last wait, and the machine becomes deployed; the
//! executing node is killed in the middle and another node resumes at the step where the
//! workflow stood, without powering the machine on again. A wait that times out fails the
//! machine with the step named; `rackd tasks retry` resumes it; `rackd machines release`
//! powers it off and makes it ready.

use std::time::Duration;

use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

const MAC: &str = "52:54:00:aa:dd:01";

async fn task(c: &Cluster, i: usize, id: u64) -> Value {
    c.get_json(i, &format!("/v1/tasks/{id}")).await.unwrap()
}

/// The state of step `kind` of task `t`.
fn step<'a>(t: &'a Value, kind: &str) -> &'a Value {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no step {kind} in {t}"))
}

/// Wait (via node `i`) until step `kind` of task `id` is `state`.
async fn wait_step(c: &Cluster, i: usize, id: u64, kind: &str, state: &str, secs: u64) {
    let what = format!("task {id} step {kind} {state}");
    let r = c
        .wait_until(Duration::from_secs(secs), &what, |c| async move {
            let t: Value = c
                .get_json(i, &format!("/v1/tasks/{id}"))
                .await
                .unwrap_or_default();
            t["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["kind"] == kind && s["state"] == state))
        })
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(c, i, id).await);
    }
}

/// The deploy script for the machine from node `i`'s HTTP boot server (as iPXE fetches it):
/// the one-time token it carries.
async fn fetch_script(c: &Cluster, i: usize) -> String {
    let base = std::fs::read_to_string(c.nodes[i].data_dir.join("http-boot.addr")).unwrap();
    let url = format!("http://{}/boot/{MAC}.ipxe", base.trim());
    let script = c.http.get(url).send().await.unwrap().text().await.unwrap();
    script
        .split("rackd.token=")
        .nth(1)
        .unwrap_or_else(|| panic!("no deploy script: {script}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

async fn callback(c: &Cluster, i: usize, token: &str) -> u16 {
    let base = std::fs::read_to_string(c.nodes[i].data_dir.join("http-boot.addr")).unwrap();
    let url = format!("http://{}/boot/{MAC}/done?token={token}", base.trim());
    c.http.post(url).send().await.unwrap().status().as_u16()
}

async fn machine(c: &Cluster, i: usize, id: u64) -> Value {
    c.get_json(i, &format!("/v1/machines/{id}")).await.unwrap()
}

fn journal_count(ev: &Value, needle: &str) -> usize {
    ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
        .count()
}

/// Location dc1 (created through node 0) and a new location learner bound to it, serving
/// HTTP boot; the learner's index.
async fn site_learner(c: &mut Cluster) -> usize {
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    c.join_with(
        0,
        true,
        &["--location", "dc1", "--http-boot-listen", "{ip}:0"],
    )
    .await
    .expect("location learner")
}

/// Image `deb` and a ready machine `host` in dc1 (MAC, simulated BMC), created through node
/// `via` and deployed with the request body `deploy`: (machine id, deploy task id), once the
/// deploy waits for the machine's boot.
async fn deploy_until_boot_wait(c: &Cluster, via: usize, host: &str, deploy: Value) -> (u64, u64) {
    let _: Value = c
        .post_json(
            via,
            "/v1/images",
            &json!({"name": "deb", "kernel": "deb/vmlinuz", "initrd": "deb/initrd.img"}),
        )
        .await
        .unwrap();
    let m: Value = c
        .post_json(
            via,
            "/v1/machines",
            &json!({"hostname": host, "location": "dc1", "macs": [MAC], "state": "ready",
                    "bmc": {"driver": "sim", "address": host}}),
        )
        .await
        .unwrap();
    let id = m["id"].as_u64().unwrap();
    let m: Value = c
        .post_json(via, &format!("/v1/machines/{id}/deploy"), &deploy)
        .await
        .unwrap();
    assert_eq!(m["state"], "deploying", "{m}");
    let tid = m["workflow"].as_u64().expect("the deploy's task");
    wait_step(c, via, tid, "wait_boot", "running", 60).await;
    (id, tid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_survives_its_executor_and_a_release_returns_the_machine() {
    let c = Cluster::start(
        "workflow",
        3,
        &[
            "--location",
            "dc1",
            "--http-boot-listen",
            "{ip}:0",
            "--artifacts-dir",
            "{dir}/art",
            "--task-lease-secs",
            "2",
        ],
    )
    .await
    .expect("cluster");
    let mut c = c;
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    // Deploy: the executor sets PXE, powers the machine on, and waits for its boot.
    let (id, tid) = deploy_until_boot_wait(&c, 0, "wf1", json!({"image": "deb"})).await;
    let t = task(&c, 0, tid).await;
    for s in ["prepare", "boot_pxe", "power_on"] {
        assert_eq!(step(&t, s)["state"], "succeeded", "{t}");
        assert_eq!(step(&t, s)["attempts"], 1, "{t}");
    }
    assert_eq!(step(&t, "power_on")["note"], "was off: powered on", "{t}");
    assert_eq!(machine(&c, 0, id).await["power_state"], "on");

    // Kill the node running it: another one takes the workflow over after the lease and
    // resumes at the wait; the power-on is not repeated.
    let gone = t["assignee"].as_u64().unwrap() as usize - 1;
    c.nodes[gone].kill();
    let alive = (gone + 1) % 3;
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let r = c
        .wait_until(Duration::from_secs(60), "a takeover", |c| async move {
            let t: Value = c
                .get_json(alive, &format!("/v1/tasks/{tid}"))
                .await
                .unwrap_or_default();
            t["generation"].as_u64() > Some(1) && t["state"] == "running"
        })
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, alive, tid).await);
    }
    wait_step(&c, alive, tid, "wait_boot", "running", 30).await;
    let t = task(&c, alive, tid).await;
    assert_ne!(t["assignee"].as_u64(), Some(gone as u64 + 1), "{t}");
    assert_eq!(step(&t, "power_on")["attempts"], 1, "{t}");

    // The machine fetches its script (from a surviving node), then its installer calls back.
    let token = fetch_script(&c, alive).await;
    wait_step(&c, alive, tid, "wait_boot", "succeeded", 30).await;
    assert_eq!(callback(&c, alive, &token).await, 200);
    let r = c
        .wait_until(Duration::from_secs(60), "deployed", |c| async move {
            let m: Value = c
                .get_json(alive, &format!("/v1/machines/{id}"))
                .await
                .unwrap_or_default();
            m["state"] == "deployed"
        })
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, alive, tid).await);
    }
    let t = task(&c, alive, tid).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(step(&t, "boot_disk")["state"], "succeeded", "{t}");
    assert!(step(&t, "wait_install")["note"]
        .as_str()
        .unwrap()
        .contains("install callback"));
    let ev: Value = c.get_json(alive, "/v1/events?limit=1000").await.unwrap();
    assert_eq!(journal_count(&ev, "step power_on Succeeded"), 1, "{ev}");
    assert_eq!(journal_count(&ev, "deploying -> deployed"), 1, "{ev}");

    // The CLI shows the steps.
    let out = c.cli(alive, ["tasks", "show", &tid.to_string()]);
    assert!(out.ok, "{}", out.stderr);
    for s in ["prepare", "power_on", "wait_install", "boot_disk"] {
        assert!(out.stdout.contains(s), "{}", out.stdout);
    }

    // Release with the CLI: powered off, then ready.
    let out = c.cli(alive, ["machines", "release", &id.to_string(), "--wait"]);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stdout.trim_end().ends_with("is ready"),
        "{}",
        out.stdout
    );
    let m = machine(&c, alive, id).await;
    assert_eq!(
        (m["state"].as_str(), m["power_state"].as_str()),
        (Some("ready"), Some("off"))
    );

    // A boot that never comes: the wait times out, the machine fails with the step named.
    let m: Value = c
        .post_json(
            alive,
            &format!("/v1/machines/{id}/deploy"),
            &json!({"image": "deb", "boot_timeout_secs": 2}),
        )
        .await
        .unwrap();
    let tid = m["workflow"].as_u64().unwrap();
    wait_step(&c, alive, tid, "wait_boot", "failed", 60).await;
    let m = machine(&c, alive, id).await;
    assert_eq!(m["state"], "failed", "{m}");
    let cause = m["state_cause"].as_str().unwrap();
    assert!(
        cause.starts_with("deploy failed at step wait_boot: timed out after 2s"),
        "{cause}"
    );
    let t = task(&c, alive, tid).await;
    assert_eq!(t["state"], "failed");
    // A retry resumes at the wait; this time the machine boots and installs.
    let out = c.cli(alive, ["tasks", "retry", &tid.to_string()]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(machine(&c, alive, id).await["state"], "deploying");
    wait_step(&c, alive, tid, "wait_boot", "running", 30).await;
    let token = fetch_script(&c, alive).await;
    assert_eq!(callback(&c, alive, &token).await, 200);
    let r = c
        .wait_until(
            Duration::from_secs(60),
            "deployed after the retry",
            |c| async move {
                let m: Value = c
                    .get_json(alive, &format!("/v1/machines/{id}"))
                    .await
                    .unwrap_or_default();
                m["state"] == "deployed"
            },
        )
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, alive, tid).await);
    }
    let t = task(&c, alive, tid).await;
    assert_eq!(step(&t, "wait_boot")["attempts"], 2, "{t}");
    // A finished workflow is not retried; a finished task not cancelled.
    let (s, _) = c
        .request(
            alive,
            Method::POST,
            &format!("/v1/tasks/{tid}/retry"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 409);
}

/// A site cut off from the voters in the middle of a deploy: its node still serves the
/// machine its script, takes the installer's callback (checked against its replica, kept on
/// disk, answered 202), and the leader does not give the deploy up while the machine's wait
/// runs. When the link returns, the kept reports are delivered, the site's executor takes the
/// task over and finishes it: the machine is deployed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_cut_off_during_a_deploy_reports_it_when_the_link_returns() {
    let mut c = Cluster::new_in_netns("wfcut").expect("netns cluster");
    c.common_args = ["--task-lease-secs", "2", "--task-lost-secs", "4"]
        .map(String::from)
        .to_vec();
    c.bootstrap().await.expect("bootstrap");
    c.join(0, false).await.expect("join n2");
    c.join(0, false).await.expect("join n3");
    let site = site_learner(&mut c).await;
    let (id, tid) = deploy_until_boot_wait(&c, 0, "cut1", json!({"image": "deb"})).await;
    // The site holds its location's key (it opens deploy tokens with it) before the cut.
    let loc: Value = c.get_json(0, "/v1/locations").await.unwrap();
    let key = c.nodes[site]
        .data_dir
        .join(format!("pki/location-{}.key", loc["items"][0]["id"]));
    let t0 = std::time::Instant::now();
    while !key.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no location key at the site"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cut the site off from every voter.
    for v in 0..3 {
        c.partition(site, v).unwrap();
    }
    let token = fetch_script(&c, site).await;
    assert_eq!(callback(&c, site, &token).await, 202, "kept, not refused");
    // Longer than a lease and the reaper's limit: the deploy is still running.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let t = task(&c, 0, tid).await;
    assert_eq!(t["state"], "running", "{t}");
    assert_eq!(machine(&c, 0, id).await["state"], "deploying");
    assert!(
        !std::fs::read_dir(c.nodes[site].data_dir.join("outbox"))
            .unwrap()
            .collect::<Vec<_>>()
            .is_empty(),
        "the reports are kept on disk"
    );
    for n in &c.nodes {
        let found = crate::util::files_holding(&n.data_dir, token.as_bytes());
        assert!(found.is_empty(), "the deploy token in clear in {found:?}");
    }

    // The link returns: the reports are delivered, the task is taken over and finished.
    c.heal().unwrap();
    let r = c
        .wait_until(
            Duration::from_secs(60),
            "deployed after the heal",
            |c| async move {
                let m: Value = c
                    .get_json(0, &format!("/v1/machines/{id}"))
                    .await
                    .unwrap_or_default();
                m["state"] == "deployed"
            },
        )
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, 0, tid).await);
    }
    let t = task(&c, 0, tid).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert!(
        t["generation"].as_u64() > Some(1),
        "taken over after the cut: {t}"
    );
    assert_eq!(step(&t, "power_on")["attempts"], 1, "{t}");
    assert_eq!(
        step(&t, "wait_boot")["note"],
        format!("deploy script served by node {}", site + 1)
    );
    assert_eq!(step(&t, "wait_install")["note"], "install callback", "{t}");
    let ev: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert_eq!(journal_count(&ev, "deploying -> deployed"), 1, "{ev}");
    let log = std::fs::read_to_string(&c.nodes[site].log).unwrap();
    assert!(log.contains("install callback kept until the cluster is reachable"));
    assert!(log.contains("kept report delivered"));
}

/// The leader dies in the middle of a deploy: a new leader is elected, the site's executor
/// carries on (its writes go to whichever node leads), and the deploy finishes without any
/// step running twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_outlives_its_leader() {
    let mut c = Cluster::start("wflead", 3, &["--task-lease-secs", "2"])
        .await
        .expect("cluster");
    let site = site_learner(&mut c).await;
    let (id, tid) = deploy_until_boot_wait(&c, site, "lead1", json!({"image": "deb"})).await;

    let leader = c.leader().await.expect("a leader");
    c.nodes[leader].kill();
    let token = fetch_script(&c, site).await;
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let s = callback(&c, site, &token).await;
    assert!(s == 200 || s == 202, "callback answered {s}");
    let r = c
        .wait_until(
            Duration::from_secs(60),
            "deployed under the new leader",
            |c| async move {
                let m: Value = c
                    .get_json(site, &format!("/v1/machines/{id}"))
                    .await
                    .unwrap_or_default();
                m["state"] == "deployed"
            },
        )
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, site, tid).await);
    }
    let t = task(&c, site, tid).await;
    for s in t["steps"].as_array().unwrap() {
        assert_eq!(s["attempts"].as_u64().unwrap_or(1).max(1), 1, "{t}");
    }
    let ev: Value = c.get_json(site, "/v1/events?limit=1000").await.unwrap();
    assert_eq!(journal_count(&ev, "step power_on Succeeded"), 1, "{ev}");
    assert_eq!(journal_count(&ev, "deploying -> deployed"), 1, "{ev}");
}

/// The only node of a location dies while its machine's deploy waits: once the wait's
/// deadline has passed and no node of the location took the task over, the leader fails the
/// deploy, and the machine says which step and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_only_location_node_died_fails_with_the_cause() {
    let mut c = Cluster::start(
        "wflost",
        1,
        &["--task-lease-secs", "2", "--task-lost-secs", "2"],
    )
    .await
    .expect("cluster");
    let site = site_learner(&mut c).await;
    let (id, tid) = deploy_until_boot_wait(
        &c,
        0,
        "lost1",
        json!({"image": "deb", "boot_timeout_secs": 3}),
    )
    .await;
    c.nodes[site].kill();
    let r = c
        .wait_until(
            Duration::from_secs(60),
            "the deploy failed",
            |c| async move {
                let m: Value = c
                    .get_json(0, &format!("/v1/machines/{id}"))
                    .await
                    .unwrap_or_default();
                m["state"] == "failed"
            },
        )
        .await;
    if let Err(e) = r {
        panic!("{e}: {}", task(&c, 0, tid).await);
    }
    let m = machine(&c, 0, id).await;
    let cause = m["state_cause"].as_str().unwrap();
    assert!(
        cause.starts_with("deploy failed at step wait_boot: executor lost"),
        "{cause}"
    );
    assert!(cause.contains("location dc1"), "{cause}");
    let t = task(&c, 0, tid).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(step(&t, "wait_boot")["state"], "failed", "{t}");
}
