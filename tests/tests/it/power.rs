//! Power tasks end to end: created through the API, executed once by one of the location's
//! nodes (three race for it), verified, result and observed power state recorded.

use std::time::Duration;

use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::post_task;

/// Posted through node 1, followed on node 2.
async fn run_task(c: &Cluster, machine: u64, action: &str) -> Value {
    let path = format!("/v1/machines/{machine}/power");
    post_task(
        c,
        1,
        2,
        &path,
        json!({"action": action}),
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_tasks_run_once_are_verified_and_record_the_power_state() {
    let c = Cluster::start("power", 3, &["--location", "dc1"])
        .await
        .expect("cluster");
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let mk = |host: &str, bmc: Option<Value>| {
        let mut b = json!({"hostname": host, "location": "dc1"});
        if let Some(bmc) = bmc {
            b["bmc"] = bmc;
        }
        b
    };
    let sim: Value = c
        .post_json(
            0,
            "/v1/machines",
            &mk(
                "sim1",
                Some(json!({"driver": "sim", "address": "sim1", "password": "pw"})),
            ),
        )
        .await
        .unwrap();
    let ipmi: Value = c
        .post_json(
            0,
            "/v1/machines",
            &mk(
                "ipmi1",
                Some(json!({"driver": "ipmi", "address": "127.9.9.9"})),
            ),
        )
        .await
        .unwrap();
    let bare: Value = c
        .post_json(0, "/v1/machines", &mk("bare", None))
        .await
        .unwrap();
    let sim = sim["id"].as_u64().unwrap();

    let t = run_task(&c, sim, "on").await;
    assert_eq!(
        (t["state"].as_str(), t["observed_power"].as_str()),
        (Some("succeeded"), Some("on")),
        "{t}"
    );
    assert_eq!(t["attempt"], 1);
    assert!(t["assignee"].as_u64().is_some());
    let m: Value = c.get_json(0, &format!("/v1/machines/{sim}")).await.unwrap();
    assert_eq!(m["power_state"], "on");
    assert!(m["power_observed_at"].as_u64().is_some());

    assert_eq!(run_task(&c, sim, "status").await["observed_power"], "on");
    assert_eq!(run_task(&c, sim, "off").await["observed_power"], "off");
    // A cycle of a machine that is off is refused by the BMC, verbatim; it is not powered on.
    let t = run_task(&c, sim, "cycle").await;
    assert_eq!(t["state"], "failed");
    assert!(t["error"].as_str().unwrap().contains("0xD5"), "{t}");
    assert_eq!(run_task(&c, sim, "status").await["observed_power"], "off");
    // An IPMI BMC that never answers: the task fails with a timeout, it does not hang.
    let t = run_task(&c, ipmi["id"].as_u64().unwrap(), "status").await;
    assert_eq!(t["state"], "failed");
    assert!(
        t["error"].as_str().unwrap().contains("did not answer"),
        "{t}"
    );

    // Bad requests.
    let (s, _) = c
        .request(
            0,
            Method::POST,
            &format!("/v1/machines/{}/power", bare["id"]),
            Some(json!({"action": "on"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 409, "no BMC");
    let (s, _) = c
        .request(
            0,
            Method::POST,
            &format!("/v1/machines/{sim}/power"),
            Some(json!({"action": "explode"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 400);

    // Three executors raced for every task; each ran exactly once.
    let ev: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    let started = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "task.started")
        .count();
    let tasks: Value = c.get_json(0, "/v1/tasks?limit=1000").await.unwrap();
    assert_eq!(started, tasks["items"].as_array().unwrap().len());

    // `rackd tasks show ID --watch` follows a task to its end, a line per change; it fails
    // when the task failed.
    let watch = |id: u64| {
        let out = std::process::Command::new(rackd_tests::rackd_bin())
            .args(["-o", "json", "tasks", "show", &id.to_string(), "--watch"])
            .env("RACKD_SERVER", c.url(2))
            .env("RACKD_TOKEN", &c.token)
            .env("RACKD_LOGIN_FILE", c.dir.join("no-login.json"))
            .output()
            .unwrap();
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            out.status.success(),
            lines,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (machine, action, want) in [
        (sim, "off", "succeeded"),
        (ipmi["id"].as_u64().unwrap(), "status", "failed"),
    ] {
        let (s, t) = c
            .request(
                0,
                Method::POST,
                &format!("/v1/machines/{machine}/power"),
                Some(json!({"action": action})),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(s, 202, "{t}");
        let (ok, lines, err) = watch(t["id"].as_u64().unwrap());
        assert_eq!(ok, want == "succeeded", "{lines:?} {err}");
        let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
        assert_eq!(states.last(), Some(&want), "{states:?}");
        let changes: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l["state"].clone(),
                    l["attempt"].clone(),
                    l["assignee"].clone(),
                )
            })
            .collect();
        assert!(
            changes.windows(2).all(|w| w[0] != w[1]),
            "a line per change only: {changes:?}"
        );
        if want == "failed" {
            assert!(err.contains("task failed"), "{err}");
        }
    }
}
