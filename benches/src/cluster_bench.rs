//! System benchmark of a 3-node rackd cluster over the HTTP API.
//!
//! Measures, for 1, 16 and 64 concurrent clients spread over all three nodes (followers
//! forward writes to the leader and serve linearizable reads via ReadIndex):
//! - machine updates (`PATCH /v1/machines/{id}`), and
//! - linearizable reads (`GET /v1/machines/{id}`),
//!
//! reporting throughput and p50/p99 latency; then failover time (leader SIGKILL → first
//! successful write through a surviving node), over several trials.
//!
//! Results go to `benches/results/cluster.json` (or `--out PATH`). Uses the `rackd` binary
//! from `RACKD_BIN` (point it at a release build for meaningful numbers).
//!
//! Usage: `cluster-bench [--secs N] [--out PATH]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rackd_tests::Cluster;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct LoadResult {
    op: &'static str,
    clients: usize,
    seconds: f64,
    ok: u64,
    errors: u64,
    throughput_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date_unix: u64,
    rackd_bin: String,
    machine: String,
    nodes: usize,
    machines_in_inventory: usize,
    load: Vec<LoadResult>,
    failover_ms: Vec<f64>,
    failover_median_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run_load(
    c: &Arc<Cluster>,
    op: &'static str,
    clients: usize,
    secs: u64,
    ids: &Arc<Vec<u64>>,
) -> LoadResult {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..clients {
        let c = c.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = t;
            while Instant::now() < deadline {
                let node = i % c.nodes.len();
                let id = ids[(i * 7919) % ids.len()];
                let path = format!("/v1/machines/{id}");
                let t0 = Instant::now();
                let r = match op {
                    "update" => {
                        c.request(
                            node,
                            Method::PATCH,
                            &path,
                            Some(json!({"description": format!("bench {i}")})),
                            &[],
                        )
                        .await
                    }
                    _ => c.request(node, Method::GET, &path, None, &[]).await,
                };
                match r {
                    Ok((200, _)) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    _ => errors += 1,
                }
                i += clients;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    LoadResult {
        op,
        clients,
        seconds: elapsed,
        ok: all.len() as u64,
        errors,
        throughput_per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().copied().unwrap_or(0.0),
    }
}

async fn failover_trial(c: &mut Cluster, n: u32) -> anyhow::Result<f64> {
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let survivor = (leader + 1) % c.nodes.len();
    let t0 = Instant::now();
    c.nodes[leader].kill();
    let mut attempt = 0;
    let ms = loop {
        attempt += 1;
        let body = json!({"name": format!("failover-{n}-{attempt}")});
        if let Ok((201, _)) = c
            .request(survivor, Method::POST, "/v1/locations", Some(body), &[])
            .await
        {
            break t0.elapsed().as_secs_f64() * 1000.0;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no write succeeded within 60s after leader kill");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.nodes[leader].start()?;
    // Let the restarted node rejoin and catch up before the next trial.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(ms)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: u64 = arg("--secs").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let out = arg("--out").unwrap_or_else(|| "benches/results/cluster.json".into());

    let mut c = Cluster::start("bench", 3, &[])
        .await
        .context("start cluster")?;
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await?;
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": "10.30.0.0/16"}),
        )
        .await?;
    let mut ids = Vec::new();
    for i in 0..500u32 {
        let v: serde_json::Value = c
            .post_json(
                (i % 3) as usize,
                "/v1/machines",
                &json!({"hostname": format!("bench-{i}"), "location": "dc1",
                        "macs": [format!("02:10:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)],
                        "ips": [format!("10.30.{}.{}", i / 200, i % 200 + 2)]}),
            )
            .await?;
        ids.push(v["id"].as_u64().context("id")?);
    }
    let ids = Arc::new(ids);
    let mut load = Vec::new();
    {
        let shared = Arc::new(std::mem::replace(&mut c, Cluster::new("placeholder")));
        for clients in [1usize, 16, 64] {
            for op in ["update", "read"] {
                let r = run_load(&shared, op, clients, secs, &ids).await;
                eprintln!(
                    "{op:>6} clients={clients:<3} {:>8.1}/s p50={:.2}ms p99={:.2}ms errors={}",
                    r.throughput_per_sec, r.p50_ms, r.p99_ms, r.errors
                );
                load.push(r);
            }
        }
        c = Arc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("cluster still shared"))?;
    }
    let mut failover = Vec::new();
    for n in 0..3 {
        let ms = failover_trial(&mut c, n).await?;
        eprintln!("failover trial {n}: {ms:.0} ms");
        failover.push(ms);
    }
    let mut sorted = failover.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let report = Report {
        benchmark: "cluster-http",
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        rackd_bin: rackd_tests::rackd_bin().display().to_string(),
        machine: format!(
            "{} cores, {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::env::consts::ARCH
        ),
        nodes: 3,
        machines_in_inventory: ids.len(),
        load,
        failover_median_ms: percentile(&sorted, 0.5),
        failover_ms: failover,
    };
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {out}");
    Ok(())
}
