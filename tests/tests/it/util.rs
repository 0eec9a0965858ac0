//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use serde_json::{json, Value};

pub async fn setup_location(c: &Cluster, node: usize) {
    let _: Value = c
        .post_json(node, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .expect("create location");
    let _: Value = c
        .post_json(
            node,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": "10.20.0.0/16", "gateway": "10.20.0.1",
                    "dynamic_ranges": [{"start": "10.20.255.0", "end": "10.20.255.250"}]}),
        )
        .await
        .expect("create subnet");
}

pub fn machine_body(i: u32) -> Value {
    json!({
        "hostname": format!("host-{i}"),
        "location": "dc1",
        "macs": [format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)],
        "ips": [format!("10.20.{}.{}", (i / 250) % 250, i % 250 + 2)],
    })
}

pub async fn create_machine(c: &Cluster, node: usize, i: u32) -> u64 {
    let v: Value = c
        .post_json(node, "/v1/machines", &machine_body(i))
        .await
        .unwrap_or_else(|e| panic!("create machine {i} via node {node}: {e}"));
    v["id"].as_u64().expect("id")
}

pub async fn machine_count(c: &Cluster, node: usize, stale: bool) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/v1/machines?limit=1000&stale={stale}{}",
            if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            }
        );
        let page: Value = c.get_json(node, &path).await?;
        n += page["items"].as_array().map(|a| a.len()).unwrap_or(0);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return Ok(n),
        }
    }
}

/// Run a command; (success, stdout+stderr).
pub fn sh(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Creates a task with `POST path` through node `via`, then polls it on node `read` until it
/// has finished (or `timeout` passes).
pub async fn post_task(
    c: &Cluster,
    via: usize,
    read: usize,
    path: &str,
    body: Value,
    timeout: Duration,
) -> Value {
    let (s, t) = c
        .request(via, reqwest::Method::POST, path, Some(body), &[])
        .await
        .unwrap();
    assert_eq!(s, 202, "{t}");
    assert_eq!(t["state"], "pending");
    let id = t["id"].as_u64().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let t: Value = c.get_json(read, &format!("/v1/tasks/{id}")).await.unwrap();
        if t["state"] == "succeeded" || t["state"] == "failed" {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} stuck: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file under `dir` that holds `needle` (the Raft log, RocksDB's WAL and tables,
/// snapshots, anything else a node writes).
pub fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p);
            }
        }
    }
    found
}

/// The Debian linux-image .deb the VM tests boot: $RACKD_KERNEL_DEB, else the newest in
/// ~/.cache/rackd-kernel (.ci/run downloads it); `None`: the installed kernel.
pub fn kernel_deb() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("RACKD_KERNEL_DEB") {
        return Some(p.into());
    }
    let dir = std::path::Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".cache/rackd-kernel");
    let mut debs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    debs.pop()
}
