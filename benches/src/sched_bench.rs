//! Scheduler benchmark (issue 12): `T` power tasks on machines with simulated BMCs spread over
//! `L` locations, each location served by its own location node (a learner of a 3-voter
//! cluster), are requested at once and drained. Two runs on one cluster:
//!
//! 1. `steady`: every machine is powered on;
//! 2. `leader_kill`: every machine is powered off, and the leader is killed (SIGKILL) once a
//!    third of the tasks have their result; the two remaining voters elect a new leader and
//!    the location nodes finish the rest through it.
//!
//! Measured per run: the wall time from the first request to the last result, tasks per
//! second, each task's latency from its request to its result and its queueing (request →
//! claimed), both by the leader's own stamps (`created_at`, `started_at`, `finished_at`),
//! p50/p99/max; the longest pause between two consecutive results (what a leader change
//! costs); tasks that ran more than one attempt (a lease taken over), tasks that failed (there
//! must be none); Raft entries per task; results per executor. The kill run adds which node
//! was killed, after how many results, and how long until a new leader answered.
//!
//! Requests go to, and results are read from, the first location node: it is never leader, so
//! the kill does not cut the bench off. The simulated BMCs answer in 1 ms; the power-on gap is
//! 0 unless `--gap-ms` says otherwise, so the numbers are the scheduler's (claims, lease
//! renewals, results through Raft), not a BMC's or the pacing's.
//!
//! Results go to `benches/results/scheduler.json` (or `--out PATH`). Uses the `rackd` binary
//! from `RACKD_BIN` (point it at a release build for meaningful numbers).
//!
//! Usage: `sched-bench [--tasks T] [--locations L] [--gap-ms G] [--out PATH]`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use rackd_benches::{create_machines, keep_logs, latency, log_index, unix_now, Args, Latency};
use rackd_tests::Cluster;
use rackd_types::{Page, Task, TaskState};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Serialize)]
struct Kill {
    /// Raft id of the killed leader.
    node_id: u64,
    /// Results recorded when it was killed.
    after_results: usize,
    /// From the kill until a surviving voter reported itself leader.
    new_leader_ms: f64,
}

#[derive(Serialize)]
struct Run {
    name: &'static str,
    action: &'static str,
    tasks: usize,
    /// Wall time from the first request to the last result seen.
    total_secs: f64,
    tasks_per_sec: f64,
    /// Request → result, by the leader's stamps.
    latency: Latency,
    /// Request → claimed by an executor (the last attempt's claim).
    queued: Latency,
    /// The longest time between two consecutive results.
    longest_pause_ms: f64,
    /// Tasks whose result came from a second or later attempt (a lease taken over).
    taken_over: usize,
    failed: usize,
    log_entries: u64,
    log_entries_per_task: f64,
    /// Results per executor (node id → tasks).
    executors: BTreeMap<u64, usize>,
    leader_kill: Option<Kill>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date_unix: u64,
    machine: &'static str,
    rackd_bin: String,
    locations: usize,
    voters: usize,
    power_on_gap_ms: u64,
    runs: Vec<Run>,
}

/// The tasks with an id above `after` as node `api` sees them (its replica; the leader may be
/// gone).
async fn read_tasks(c: &Cluster, api: usize, after: u64) -> anyhow::Result<BTreeMap<u64, Task>> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(k) => format!("/v1/tasks?limit=1000&stale=true&cursor={k}"),
            None => "/v1/tasks?limit=1000&stale=true".to_string(),
        };
        let page: Page<Task> = c.get_json(api, &path).await?;
        out.extend(
            page.items
                .into_iter()
                .filter(|t| t.meta.id > after)
                .map(|t| (t.meta.id, t)),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

/// Requests `action` on every machine through node `api` (32 requests in flight) while
/// watching the tasks drain; with `kill_leader`, kills the leader once a third of them have
/// their result.
async fn run(
    c: &mut Cluster,
    api: usize,
    machines: &[u64],
    name: &'static str,
    action: &'static str,
    kill_leader: bool,
) -> anyhow::Result<Run> {
    // Tasks of earlier runs have lower ids.
    let after = read_tasks(c, api, 0)
        .await?
        .keys()
        .last()
        .copied()
        .unwrap_or(0);
    let log0 = log_index(c).await?;
    let t0 = Instant::now();
    let client = c.client(api);
    let total_wanted = machines.len();
    let machines = machines.to_vec();
    let submit = tokio::spawn(async move {
        futures::stream::iter(machines)
            .map(|m| {
                let client = client.clone();
                async move {
                    let t: Task = client
                        .post(
                            &format!("/v1/machines/{m}/power"),
                            &json!({ "action": action }),
                        )
                        .await?;
                    anyhow::Ok(t.meta.id)
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<BTreeSet<u64>>>()
    });
    let mut kill = None;
    let tasks = loop {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("{name}: tasks not drained after 600 s");
        }
        let tasks = read_tasks(c, api, after).await?;
        let done = tasks.values().filter(|t| t.state.is_terminal()).count();
        if done == total_wanted && tasks.len() == total_wanted {
            break tasks;
        }
        if kill_leader && kill.is_none() && done * 3 >= total_wanted {
            let l = c.wait_leader(Duration::from_secs(10)).await?;
            let node_id = c.health(l).await?.node_id;
            c.nodes[l].kill();
            let killed = Instant::now();
            c.wait_leader(Duration::from_secs(30)).await?;
            kill = Some(Kill {
                node_id,
                after_results: done,
                new_leader_ms: killed.elapsed().as_secs_f64() * 1e3,
            });
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids = submit.await??;
    if ids.len() != tasks.len() || ids.iter().any(|id| !tasks.contains_key(id)) {
        bail!("{name}: the tasks drained are not the tasks requested");
    }
    let total = t0.elapsed().as_secs_f64();
    let log1 = log_index(c).await?;
    let ms = |a: Option<u64>, b: u64| a.unwrap_or(b).saturating_sub(b) as f64;
    let mut finished: Vec<u64> = tasks.values().filter_map(|t| t.finished_at).collect();
    finished.sort_unstable();
    let longest_pause_ms = finished
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .fold(0.0, f64::max);
    let mut executors: BTreeMap<u64, usize> = BTreeMap::new();
    for t in tasks.values() {
        *executors.entry(t.assignee.unwrap_or(0)).or_default() += 1;
    }
    let failed: Vec<&Task> = tasks
        .values()
        .filter(|t| t.state != TaskState::Succeeded)
        .collect();
    if let Some(t) = failed.first() {
        eprintln!(
            "{name}: {} of {} tasks did not succeed, e.g. task {} {:?}: {:?}",
            failed.len(),
            tasks.len(),
            t.meta.id,
            t.state,
            t.error
        );
    }
    let entries = log1.saturating_sub(log0);
    Ok(Run {
        name,
        action,
        tasks: total_wanted,
        total_secs: total,
        tasks_per_sec: ids.len() as f64 / total,
        latency: latency(
            tasks
                .values()
                .map(|t| ms(t.finished_at, t.meta.created_at))
                .collect(),
        ),
        queued: latency(
            tasks
                .values()
                .map(|t| ms(t.started_at, t.meta.created_at))
                .collect(),
        ),
        longest_pause_ms,
        taken_over: tasks.values().filter(|t| t.attempt > 1).count(),
        failed: failed.len(),
        log_entries: entries,
        log_entries_per_task: entries as f64 / ids.len() as f64,
        executors,
        leader_kill: kill,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let n: usize = args.parse_or("--tasks", 1000)?;
    let locations: usize = args.parse_or("--locations", 10)?;
    let gap: u64 = args.parse_or("--gap-ms", 0)?;
    let out = args.out("scheduler.json");
    if locations == 0 || n == 0 {
        bail!("--tasks and --locations must be positive");
    }

    let mut c = Cluster::start("sched-bench", 3, &[]).await?;
    let gap_arg = gap.to_string();
    let mut sites = Vec::new();
    for l in 1..=locations {
        let name = format!("dc{l}");
        let _: Value = c
            .post_json(0, "/v1/locations", &json!({ "name": name }))
            .await?;
        let i = c
            .join_with(
                0,
                true,
                &[
                    "--location",
                    &name,
                    "--power-on-gap-ms",
                    &gap_arg,
                    "--power-sync-secs",
                    "0",
                ],
            )
            .await?;
        sites.push(i);
    }
    let api = sites[0];
    let machines = create_machines(
        &c,
        (0..n).map(|i| {
            json!({"hostname": format!("m{i}"), "location": format!("dc{}", i % locations + 1),
                   "state": "ready", "bmc": {"driver": "sim", "address": format!("m{i}")}})
        }),
    )
    .await?;
    // Every location node has every machine before the clock starts.
    let last = *machines.last().context("no machines")?;
    for &s in &sites {
        c.wait_until(
            Duration::from_secs(60),
            "machines replicated",
            |c| async move {
                c.get_json::<Value>(s, &format!("/v1/machines/{last}?stale=true"))
                    .await
                    .is_ok()
            },
        )
        .await?;
    }

    let steady = run(&mut c, api, &machines, "steady", "on", false).await;
    let killed = match &steady {
        Ok(_) => Some(run(&mut c, api, &machines, "leader_kill", "off", true).await),
        Err(_) => None,
    };
    keep_logs(&c)?;
    let mut runs = vec![steady?];
    if let Some(k) = killed {
        runs.push(k?);
    }
    let report = Report {
        benchmark: "scheduler: power tasks over simulated BMCs at many locations",
        date_unix: unix_now(),
        machine: "2 cores; 3 voters and every location node share them",
        rackd_bin: rackd_tests::rackd_bin().display().to_string(),
        locations,
        voters: 3,
        power_on_gap_ms: gap,
        runs,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    std::fs::write(&out, text + "\n").with_context(|| format!("write {out}"))?;
    if report.runs.iter().any(|r| r.failed > 0) {
        bail!("some tasks failed (see {out})");
    }
    Ok(())
}
