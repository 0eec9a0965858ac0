//! A node that cannot write stops serving (issue 21 R4): a location node whose WAL syncs start
//! failing (the storage fault hook, as a failing disk would) stops its boot services and exits
//! non-zero with the cause in its log, instead of answering from a replica that no longer
//! follows the cluster. The rest of the cluster goes on, and once the disk is fixed the node
//! starts again, catches up and serves.

use std::time::{Duration, Instant};

use rackd_storage::FAULT_WAL_SYNC_ENV;
use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

const FAULT_FILE: &str = "fail-wal-sync";

async fn fetch(url: &str) -> Result<u16, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_node_whose_disk_fails_stops_serving_and_exits_with_the_cause() {
    let mut c = Cluster::new("failstop");
    c.common_env = vec![(FAULT_WAL_SYNC_ENV.into(), format!("{{dir}}/{FAULT_FILE}"))];
    c.bootstrap().await.expect("bootstrap");
    let loc = c
        .join_with(0, true, &crate::http_boot::BOOT_NODE_ARGS)
        .await
        .expect("join location node");
    let dir = c.nodes[loc].data_dir.clone();
    std::fs::create_dir_all(dir.join("artifacts")).unwrap();
    std::fs::write(dir.join("artifacts/vmlinuz"), b"a kernel").unwrap();
    let boot_url = || {
        format!(
            "http://{}/artifacts/vmlinuz",
            std::fs::read_to_string(dir.join("http-boot.addr"))
                .unwrap()
                .trim()
        )
    };
    let url = boot_url();
    assert_eq!(fetch(&url).await, Ok(200));

    // The disk fails; the next write replicated to the node cannot be made durable there.
    std::fs::write(dir.join(FAULT_FILE), b"").unwrap();
    let failed_at = Instant::now();
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .expect("the voters still write");
    // Until it exits, its health says why and nothing else is served (not even stale reads).
    let mut said_why = None;
    let mut stale_read = None;
    let status = loop {
        if let Some(s) = c.nodes[loc].exited() {
            break s;
        }
        if let Ok(h) = c.health(loc).await {
            if h.raft_state == "failed" && said_why.is_none() {
                said_why = h.failure;
                stale_read = c
                    .request(loc, Method::GET, "/v1/locations?stale=true", None, &[])
                    .await
                    .ok()
                    .map(|(s, _)| s);
            }
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(30),
            "the node kept running on a failed disk; boot server answers {:?}",
            fetch(&url).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "exit status {status}");
    assert!(
        said_why
            .as_deref()
            .is_some_and(|w| w.contains("injected fsync failure")),
        "health before the exit: {said_why:?}"
    );
    assert_eq!(stale_read, Some(503), "a failed node serves no reads");
    let log = std::fs::read_to_string(&c.nodes[loc].log).unwrap();
    assert!(
        log.contains("injected fsync failure"),
        "cause logged:\n{log}"
    );
    assert!(log.contains("can no longer write to its storage"), "{log}");
    assert!(fetch(&url).await.is_err(), "the boot server still answers");

    // The cluster goes on without it.
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc2"}))
        .await
        .expect("write after the failure");

    // Disk fixed: the node starts again, catches up (nothing it acknowledged is lost, and the
    // writes it could not make durable come again from the leader) and serves.
    std::fs::remove_file(dir.join(FAULT_FILE)).unwrap();
    c.nodes[loc].start().expect("restart");
    let t0 = Instant::now();
    loop {
        let got: Result<Value, _> = c.get_json(loc, "/v1/locations?stale=true").await;
        if let Ok(v) = got {
            let s = v.to_string();
            if s.contains("\"dc1\"") && s.contains("\"dc2\"") {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the restarted node did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fetch(&boot_url()).await, Ok(200));
}
