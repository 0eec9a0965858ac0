//! Deploy workflow benchmark (the scheduler and the executors): `N` machines with simulated
//! BMCs at one location, served by `L` location nodes (learners of a 3-voter cluster), are
//! deployed at once. The bench plays the machines: once a machine's deploy waits for its boot
//! (its `wait_boot` step runs), it fetches its script from a location node and calls back
//! with the token the script carries, as an installer would.
//!
//! Measures, in one run:
//! - the wall time until every machine is deployed, and deploys per second;
//! - per machine, the time from its deploy request to its boot wait (claim, prepare, boot
//!   device, paced power-on: what rackd does before the machine can boot) and to `deployed`,
//!   p50/p99/max;
//! - Raft log entries per deploy (the leader's last log index before and after), including
//!   lease renewals and claims other nodes lost.
//!
//! No peer runs the same flow on this machine (MAAS and Ironic need their own stacks), so the
//! numbers stand alone. Results go to `benches/results/deploys.json` (or `--out PATH`). Uses
//! the `rackd` binary from `RACKD_BIN` (point it at a release build for meaningful numbers).
//!
//! Usage: `deploy-bench [--machines N] [--sites L] [--gap-ms G] [--out PATH]`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use rackd_benches::{create_machines, keep_logs, latency, log_index, unix_now, Args, Latency};
use rackd_tests::Cluster;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date_unix: u64,
    rackd_bin: String,
    machines: usize,
    location_nodes: usize,
    power_on_gap_ms: u64,
    total_secs: f64,
    deploys_per_sec: f64,
    to_boot_wait: Latency,
    to_deployed: Latency,
    log_entries: u64,
    log_entries_per_deploy: f64,
    executors: BTreeMap<u64, usize>,
    /// The slowest deploy's task, its steps' timings showing where the time went.
    slowest: Value,
}

fn mac(i: usize) -> String {
    format!("52:54:01:00:{:02x}:{:02x}", i / 256, i % 256)
}

/// Play machine `i`: fetch its script from `boot` (a location node's HTTP boot server) and
/// call back with its token.
async fn boot_and_install(http: &reqwest::Client, boot: &str, i: usize) -> anyhow::Result<()> {
    let m = mac(i);
    // A node that cannot open deploy tokens yet (its location key is on its way) answers a
    // script that waits and fails; firmware boots again, and so does this machine.
    let started = Instant::now();
    let script = loop {
        let script = http
            .get(format!("{boot}/boot/{m}.ipxe"))
            .send()
            .await?
            .text()
            .await?;
        if script.contains("rackd.token=") || started.elapsed() > Duration::from_secs(60) {
            break script;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let token = script
        .split("rackd.token=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .with_context(|| format!("no token in the script of {m}: {script}"))?;
    let s = http
        .post(format!("{boot}/boot/{m}/done?token={token}"))
        .send()
        .await?
        .status();
    if !s.is_success() {
        bail!("callback of {m}: {s}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let n: usize = args.parse_or("--machines", 200)?;
    let sites: usize = args.parse_or("--sites", 2)?;
    let gap: u64 = args.parse_or("--gap-ms", 0)?;
    let out = args.out("deploys.json");

    let mut c = Cluster::start("deploy-bench", 3, &[]).await?;
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await?;
    let gap_arg = gap.to_string();
    let mut boots = Vec::new();
    for _ in 0..sites {
        let i = c
            .join_with(
                0,
                true,
                &[
                    "--location",
                    "dc1",
                    "--http-boot-listen",
                    "{ip}:0",
                    "--power-on-gap-ms",
                    &gap_arg,
                    "--max-workflows",
                    "100000",
                    "--power-sync-secs",
                    "0",
                ],
            )
            .await?;
        let addr = std::fs::read_to_string(c.nodes[i].data_dir.join("http-boot.addr"))?;
        boots.push(format!("http://{}", addr.trim()));
    }
    let _: Value = c
        .post_json(
            0,
            "/v1/images",
            &json!({"name": "deb", "kernel": "deb/vmlinuz", "initrd": "deb/initrd.img"}),
        )
        .await?;
    let ids = create_machines(
        &c,
        (0..n).map(|i| {
            json!({"hostname": format!("m{i}"), "location": "dc1", "macs": [mac(i)],
                   "state": "ready", "bmc": {"driver": "sim", "address": format!("m{i}")}})
        }),
    )
    .await?;
    let log0 = log_index(&mut c).await?;

    // Deploy every machine at once (32 requests in flight).
    let t0 = Instant::now();
    let cref = &c;
    let started: Vec<(u64, f64)> = futures::stream::iter(ids.iter().copied())
        .map(|id| async move {
            let m: Value = cref
                .post_json(
                    0,
                    &format!("/v1/machines/{id}/deploy"),
                    &json!({"image": "deb"}),
                )
                .await?;
            let task = m["workflow"].as_u64().context("the deploy's task")?;
            anyhow::Ok((task, t0.elapsed().as_secs_f64() * 1e3))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let asked: BTreeMap<u64, f64> = started.into_iter().collect();
    let index: BTreeMap<u64, usize> = {
        // Task → machine number (for its MAC), from the machines' workflows.
        let mut m = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let v: Value = c.get_json(0, &format!("/v1/machines/{id}")).await?;
            m.insert(v["workflow"].as_u64().context("workflow")?, i);
        }
        m
    };

    // Play the machines until every deploy is done.
    let http = c.http.clone();
    let mut booting: BTreeSet<u64> = BTreeSet::new();
    let mut to_boot = Vec::new();
    let mut done: BTreeMap<u64, f64> = BTreeMap::new();
    let mut executors: BTreeMap<u64, usize> = BTreeMap::new();
    let mut installs = tokio::task::JoinSet::new();
    while done.len() < n {
        if t0.elapsed() > Duration::from_secs(900) {
            bail!("{} of {n} deployed after 900 s", done.len());
        }
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(k) => format!("/v1/tasks?limit=1000&stale=true&cursor={k}"),
                None => "/v1/tasks?limit=1000&stale=true".to_string(),
            };
            let page: Value = c.get_json(0, &path).await?;
            for t in page["items"].as_array().into_iter().flatten() {
                let Some(id) = t["id"].as_u64() else { continue };
                let Some(&i) = index.get(&id) else { continue };
                let now = t0.elapsed().as_secs_f64() * 1e3;
                let waits = t["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["kind"] == "wait_boot" && s["state"] == "running");
                if waits && booting.insert(id) {
                    to_boot.push(now - asked[&id]);
                    let (http, boot) = (http.clone(), boots[i % boots.len()].clone());
                    installs.spawn(async move { boot_and_install(&http, &boot, i).await });
                }
                if t["state"] == "succeeded" && !done.contains_key(&id) {
                    done.insert(id, now - asked[&id]);
                    *executors
                        .entry(t["assignee"].as_u64().unwrap_or(0))
                        .or_default() += 1;
                }
                if t["state"] == "failed" || t["state"] == "cancelled" {
                    bail!("deploy task {id} ended {}: {}", t["state"], t["error"]);
                }
            }
            cursor = page["next_cursor"].as_str().map(String::from);
            if cursor.is_none() {
                break;
            }
        }
        while let Some(r) = installs.try_join_next() {
            r??;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = t0.elapsed().as_secs_f64();
    let slowest_id = done
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(id, _)| *id)
        .unwrap_or(0);
    let slowest: Value = c.get_json(0, &format!("/v1/tasks/{slowest_id}")).await?;
    keep_logs(&c)?;
    let log1 = log_index(&mut c).await?;
    let entries = log1.saturating_sub(log0);
    let report = Report {
        benchmark: "deploy workflows at one location",
        date_unix: unix_now(),
        rackd_bin: rackd_tests::rackd_bin().display().to_string(),
        machines: n,
        location_nodes: sites,
        power_on_gap_ms: gap,
        total_secs: total,
        deploys_per_sec: n as f64 / total,
        to_boot_wait: latency(to_boot),
        to_deployed: latency(done.values().copied().collect()),
        log_entries: entries,
        log_entries_per_deploy: entries as f64 / n as f64,
        executors,
        slowest,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    std::fs::write(&out, text + "\n").with_context(|| format!("write {out}"))?;
    Ok(())
}
