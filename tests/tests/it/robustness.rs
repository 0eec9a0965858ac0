//! Robustness under faults, in the spirit of etcd's robustness tests: concurrent clients run a
//! random read / write / compare-and-set workload against every node of a 3-voter cluster while a
//! nemesis kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and restarts (SIGTERM) nodes, the leader
//! included. The recorded history is then checked for linearizability per record
//! ([`rackd_tests::linearizability`]), for lost acknowledged writes (final linearizable reads on
//! every node are part of the checked history) and for replica convergence (every node's local
//! replica, read with `?stale=true`, ends in the same state).
//!
//! Network partitions: every node runs in its own network namespace on one bridge
//! ([`Cluster::new_in_netns`]); the nemesis cuts the leader off from both peers (it keeps
//! answering clients, which must never see a stale read or a write acknowledged without a
//! quorum) and cuts single links (a node that reaches only one of two peers), with blackhole
//! routes, then heals them.
//!
//! Everything stays on loopback. The history is written as JSON lines to
//! `<test dir>/history.jsonl` (with the nemesis actions interleaved as `{"nemesis": ...}` lines);
//! the harness keeps the directory and the node logs when the test fails. Environment knobs:
//! `RACKD_ROBUSTNESS_SEED` (replay a run's random choices; faults still land at different
//! moments), `RACKD_ROBUSTNESS_SECS` (workload duration, default 70),
//! `RACKD_ROBUSTNESS_STALE_READS=1` (negative control: the workload reads with `?stale=true`, so
//! the test should fail with a linearizability violation).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackd_tests::linearizability::{self, Input, Op, Output, State};
use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

const NODES: usize = 3;
const KEYS: usize = 4;
const CLIENTS: u64 = 5;
/// Per-request client timeout: longer than the nodes' write timeout (2 s), so most unconfirmed
/// writes come back as a 503 rather than a client-side timeout.
const REQ_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_FAULTS: usize = 24;
const T: Duration = Duration::from_secs(60);

/// xorshift64*: small, seedable, good enough to pick operations and faults.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        // The high bits: the low bits of xorshift64* are the weakest.
        (self.next() >> 32) % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone)]
struct Env {
    urls: Arc<Vec<String>>,
    /// The cluster CA: the nodes serve TLS (their addresses are not loopback).
    ca: Option<Arc<Vec<u8>>>,
    token: Arc<String>,
    keys: Arc<Vec<u64>>,
    t0: Instant,
    /// Negative control: the workload's reads use `?stale=true` (not linearizable), which the
    /// check is expected to catch under pauses and restarts.
    stale_reads: bool,
}

impl Env {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// What a request produced: `(output, note)`. `unexpected` is set for answers the API contract
/// does not allow here (anything but 200/404/412/503 or a transport error).
struct Answer {
    output: Output,
    note: String,
    unexpected: bool,
}

fn location_state(v: &Value) -> Option<(u64, String)> {
    Some((
        v["version"].as_u64()?,
        v["description"].as_str()?.to_string(),
    ))
}

async fn perform(
    http: &reqwest::Client,
    env: &Env,
    node: usize,
    key: u64,
    input: &Input,
    timeout: Duration,
) -> Answer {
    let stale = if env.stale_reads && matches!(input, Input::Read) {
        "?stale=true"
    } else {
        ""
    };
    let url = format!("{}/v1/locations/{key}{stale}", env.urls[node]);
    let rb = match input {
        Input::Read => http.get(&url),
        Input::Write { value } => http
            .request(Method::PATCH, &url)
            .json(&json!({ "description": value })),
        Input::Cas { if_match, value } => http
            .request(Method::PATCH, &url)
            .header("If-Match", if_match.to_string())
            .json(&json!({ "description": value })),
    };
    let is_read = matches!(input, Input::Read);
    let res = async {
        let r = rb
            .bearer_auth(env.token.as_str())
            .timeout(timeout)
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    }
    .await;
    let (status, text) = match res {
        Ok(x) => x,
        Err(e) => {
            // A connection that was never opened carried nothing: the write was not applied.
            let output = if e.is_connect() && !is_read {
                Output::Failed
            } else {
                Output::Unknown
            };
            return Answer {
                output,
                note: format!("n{} transport: {e}", node + 1),
                unexpected: false,
            };
        }
    };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let note = format!("n{} {status}", node + 1);
    let msg = body["error"]["message"].as_str().unwrap_or("").to_string();
    match status {
        200 => match location_state(&body) {
            Some((version, value)) => Answer {
                output: Output::Value { version, value },
                note,
                unexpected: false,
            },
            None => Answer {
                output: Output::Unknown,
                note: format!("{note} unparseable body {text:?}"),
                unexpected: true,
            },
        },
        404 => Answer {
            output: Output::NotFound,
            note,
            unexpected: false,
        },
        412 if !is_read => Answer {
            output: Output::PreconditionFailed,
            note,
            unexpected: false,
        },
        503 => Answer {
            // The API says "not accepted" only for writes it never proposed (no leader, leader
            // unreachable, forwarded to a node that is no longer leader); anything else is
            // "not confirmed": unknown.
            output: if msg.contains("not accepted") && !is_read {
                Output::Failed
            } else {
                Output::Unknown
            },
            note: format!("{note} {msg}"),
            unexpected: false,
        },
        _ => Answer {
            output: Output::Unknown,
            note: format!("{note} {text}"),
            unexpected: true,
        },
    }
}

/// One client: random ops on random records through random nodes until `stop`.
async fn client(id: u64, env: Env, seed: u64, stop: Arc<AtomicBool>) -> (Vec<Op>, Vec<String>) {
    let http = rackd_tests::api_client_builder(env.ca.as_deref().map(|v| v.as_slice()))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let mut rng = Rng(seed | 1);
    let mut known: HashMap<u64, u64> = HashMap::new();
    let mut ops = Vec::new();
    let mut unexpected = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = env.keys[rng.below(env.keys.len() as u64) as usize];
        let node = rng.below(NODES as u64) as usize;
        seq += 1;
        let value = format!("c{id}-{seq}");
        let input = match rng.below(10) {
            0..=4 => Input::Read,
            5..=7 => Input::Write { value },
            _ => {
                let v = known.get(&key).copied().unwrap_or(1);
                // Mostly the last version seen, sometimes a neighbour, to get both outcomes.
                let if_match = match rng.below(6) {
                    0 => v + 1,
                    1 => v.saturating_sub(1).max(1),
                    _ => v,
                };
                Input::Cas { if_match, value }
            }
        };
        let call = env.now();
        let a = perform(&http, &env, node, key, &input, REQ_TIMEOUT).await;
        let ret = env.now();
        if let Output::Value { version, .. } = &a.output {
            known.insert(key, *version);
        }
        let op = Op {
            key: key.to_string(),
            client: id,
            input,
            output: a.output,
            call,
            ret,
            note: a.note,
        };
        if a.unexpected {
            unexpected.push(op.to_string());
        }
        ops.push(op);
        tokio::time::sleep(rng.millis(0, 5)).await;
    }
    (ops, unexpected)
}

#[allow(unsafe_code)]
fn signal(c: &Cluster, i: usize, sig: i32) {
    c.nodes[i].signal(sig);
}

/// (Re)start node `i`; the harness's start blocks, so leave the runtime worker to it.
fn restart(c: &mut Cluster, i: usize) -> Result<(), String> {
    tokio::task::block_in_place(|| c.nodes[i].start())
        .map_err(|e| format!("restarting n{} failed: {e:#}", i + 1))
}

/// A node that is not running although the nemesis did not stop it crashed by itself.
fn crashed(c: &mut Cluster) -> Option<String> {
    (0..NODES).find(|i| !c.nodes[*i].is_running()).map(|i| {
        format!(
            "n{} exited on its own (not stopped by the nemesis); see {}",
            i + 1,
            c.nodes[i].log.display()
        )
    })
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillNode,
    KillLeader,
    PauseNode,
    PauseLeader,
    TermLeader,
    KillMajority,
    PartitionLeader,
    PartitionLink,
}

const ALL_FAULTS: [Fault; 8] = [
    Fault::PartitionLeader,
    Fault::PartitionLink,
    Fault::KillNode,
    Fault::KillLeader,
    Fault::PauseNode,
    Fault::PauseLeader,
    Fault::TermLeader,
    Fault::KillMajority,
];

fn heal(c: &Cluster, env: &Env, say: &mut impl FnMut(&Env, String)) -> Result<(), String> {
    c.heal().map_err(|e| format!("heal: {e:#}"))?;
    say(env, "healed the network".into());
    Ok(())
}

/// Inject faults until `until` (or [`MAX_FAULTS`]); every fault is healed before the next one.
/// The kinds are drawn round by round, each round a shuffle of all of them, so that a run covers
/// every kind. Returns the number of faults, the log of what was done and, if the nemesis had to
/// give up, why (a node crashed by itself or could not be restarted).
async fn nemesis(
    c: &mut Cluster,
    env: &Env,
    rng: &mut Rng,
    until: Instant,
) -> (usize, Vec<(u64, String)>, Option<String>) {
    let mut log = Vec::new();
    let mut say = |env: &Env, s: String| {
        eprintln!("[nemesis {:>7.3}s] {s}", env.now() as f64 / 1e9);
        log.push((env.now(), s));
    };
    let mut n = 0;
    let mut round: Vec<Fault> = Vec::new();
    while Instant::now() < until && n < MAX_FAULTS {
        tokio::time::sleep(rng.millis(1000, 3000)).await;
        if let Some(e) = crashed(c) {
            return (n, log, Some(e));
        }
        n += 1;
        if round.is_empty() {
            round = ALL_FAULTS.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let fault = round.pop().expect("refilled");
        let random = rng.below(NODES as u64) as usize;
        let target = match fault {
            Fault::KillLeader
            | Fault::PauseLeader
            | Fault::TermLeader
            | Fault::PartitionLeader
            | Fault::PartitionLink => c.leader().await.unwrap_or(random),
            _ => random,
        };
        let res = match fault {
            Fault::KillNode | Fault::KillLeader => {
                say(env, format!("{fault:?}: SIGKILL n{}", target + 1));
                c.nodes[target].kill();
                tokio::time::sleep(rng.millis(500, 3000)).await;
                let r = restart(c, target);
                if r.is_ok() {
                    say(env, format!("restarted n{}", target + 1));
                }
                r
            }
            Fault::PauseNode | Fault::PauseLeader => {
                say(env, format!("{fault:?}: SIGSTOP n{}", target + 1));
                signal(c, target, libc::SIGSTOP);
                tokio::time::sleep(rng.millis(1000, 3000)).await;
                signal(c, target, libc::SIGCONT);
                say(env, format!("SIGCONT n{}", target + 1));
                Ok(())
            }
            Fault::TermLeader => {
                say(env, format!("{fault:?}: SIGTERM n{}", target + 1));
                tokio::task::block_in_place(|| c.nodes[target].stop());
                tokio::time::sleep(rng.millis(200, 1500)).await;
                let r = restart(c, target);
                if r.is_ok() {
                    say(env, format!("restarted n{}", target + 1));
                }
                r
            }
            Fault::PartitionLeader | Fault::PartitionLink => {
                // The leader cut off from both peers, or from one (it keeps a quorum through
                // the other).
                let cut: Vec<usize> = match fault {
                    Fault::PartitionLeader => (0..NODES).filter(|i| *i != target).collect(),
                    _ => vec![(target + 1 + rng.below(NODES as u64 - 1) as usize) % NODES],
                };
                let names: Vec<String> = cut.iter().map(|o| format!("n{}", o + 1)).collect();
                say(
                    env,
                    format!(
                        "{fault:?}: cut n{} off from {}",
                        target + 1,
                        names.join(", ")
                    ),
                );
                let r = cut
                    .iter()
                    .try_for_each(|o| c.partition(target, *o))
                    .map_err(|e| format!("partition: {e:#}"));
                tokio::time::sleep(rng.millis(1500, 4000)).await;
                let healed = heal(c, env, &mut say);
                r.and(healed)
            }
            Fault::KillMajority => {
                let other = (target + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
                say(
                    env,
                    format!("{fault:?}: SIGKILL n{} and n{}", target + 1, other + 1),
                );
                c.nodes[target].kill();
                c.nodes[other].kill();
                tokio::time::sleep(rng.millis(500, 2000)).await;
                let r = restart(c, target).and_then(|()| restart(c, other));
                if r.is_ok() {
                    say(env, format!("restarted n{} and n{}", target + 1, other + 1));
                }
                r
            }
        };
        if let Err(e) = res {
            return (n, log, Some(e));
        }
        // Let the cluster settle a little so faults do not pile up.
        tokio::time::sleep(rng.millis(500, 1500)).await;
    }
    (n, log, None)
}

/// A linearizable read of `key` on `node`, retried until it answers (cluster healed).
async fn final_read(
    http: &reqwest::Client,
    env: &Env,
    node: usize,
    key: u64,
) -> Result<Op, String> {
    let env = &Env {
        stale_reads: false,
        ..env.clone()
    };
    let deadline = Instant::now() + T;
    loop {
        let call = env.now();
        let a = perform(http, env, node, key, &Input::Read, Duration::from_secs(5)).await;
        let ret = env.now();
        if matches!(a.output, Output::Value { .. } | Output::NotFound) {
            return Ok(Op {
                key: key.to_string(),
                client: 100 + node as u64,
                input: Input::Read,
                output: a.output,
                call,
                ret,
                note: format!("final read; {}", a.note),
            });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "final linearizable read of record {key} on n{} did not answer within {T:?}: {}",
                node + 1,
                a.note
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stale_state(c: &Cluster, node: usize, key: u64) -> Option<State> {
    let (s, v) = c
        .request(
            node,
            Method::GET,
            &format!("/v1/locations/{key}?stale=true"),
            None,
            &[],
        )
        .await
        .ok()?;
    match s {
        200 => Some(Some(location_state(&v)?)),
        404 => Some(None),
        _ => None,
    }
}

/// The history as JSON lines in call order, with the nemesis actions interleaved.
fn write_history(path: &std::path::Path, history: &[Op], faults: &[(u64, String)]) {
    let mut lines: Vec<(u64, String)> = history
        .iter()
        .map(|o| (o.call, serde_json::to_string(o).unwrap()))
        .collect();
    for (t, f) in faults {
        lines.push((*t, json!({"nemesis": f, "t_ns": t}).to_string()));
    }
    lines.sort_by_key(|(t, _)| *t);
    let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
    std::fs::write(path, text).expect("write history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robustness_kills_pauses_partitions_linearizable() {
    let started = Instant::now();
    let seed = std::env::var("RACKD_ROBUSTNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let secs: u64 = std::env::var("RACKD_ROBUSTNESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(70);
    let stale_reads = std::env::var("RACKD_ROBUSTNESS_STALE_READS").is_ok_and(|v| v == "1");
    eprintln!(
        "robustness: seed {seed} (RACKD_ROBUSTNESS_SEED), workload {secs}s{}",
        if stale_reads {
            ", NEGATIVE CONTROL: workload reads are stale (expect a violation)"
        } else {
            ""
        }
    );
    let mut rng = Rng(seed | 1);

    // A small snapshot threshold so restarted nodes also catch up by snapshot and logs are
    // purged while faults happen.
    let mut c = Cluster::new_in_netns("robust").expect("network namespaces (needs root)");
    c.common_args = ["--write-timeout-secs", "2", "--snapshot-logs", "300"]
        .map(String::from)
        .to_vec();
    c.bootstrap().await.expect("bootstrap");
    for _ in 1..NODES {
        c.join(0, false).await.expect("join");
    }
    c.wait_leader(T).await.unwrap();

    let mut keys = Vec::new();
    let mut initial: BTreeMap<String, State> = BTreeMap::new();
    for k in 0..KEYS {
        let v: Value = c
            .post_json(
                k % NODES,
                "/v1/locations",
                &json!({"name": format!("robust-{k}"), "description": format!("init-{k}")}),
            )
            .await
            .expect("create location");
        let id = v["id"].as_u64().expect("id");
        keys.push(id);
        initial.insert(id.to_string(), Some(location_state(&v).expect("state")));
    }
    let history_path = c.dir.join("history.jsonl");
    eprintln!("robustness: history will be in {}", history_path.display());

    let env = Env {
        urls: Arc::new((0..NODES).map(|i| c.url(i)).collect()),
        ca: c.ca_pem.clone().map(Arc::new),
        token: Arc::new(c.token.clone()),
        keys: Arc::new(keys.clone()),
        t0: Instant::now(),
        stale_reads,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, env.clone(), rng.next(), Arc::clone(&stop))))
        .collect();

    // Faults during all but the last ~12 s; the clients keep going on the healed cluster
    // afterwards so the history ends with ordinary traffic.
    let workload_end = env.t0 + Duration::from_secs(secs);
    let nemesis_end = workload_end - Duration::from_secs(12.min(secs / 2));
    let (fault_count, faults, nemesis_error) = nemesis(&mut c, &env, &mut rng, nemesis_end).await;
    let mut problems: Vec<String> = Vec::new();
    problems.extend(nemesis_error);
    // Heal: every node resumed and running (a node that died by itself is restarted, and
    // reported).
    for i in 0..NODES {
        signal(&c, i, libc::SIGCONT);
    }
    if let Some(e) = crashed(&mut c) {
        problems.push(e);
    }
    for i in 0..NODES {
        if !c.nodes[i].is_running() {
            if let Err(e) = restart(&mut c, i) {
                problems.push(e);
            }
        }
    }
    tokio::time::sleep(workload_end.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Op> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    for h in clients {
        let (ops, u) = h.await.expect("client task");
        history.extend(ops);
        unexpected.extend(u);
    }
    let workload_ops = history.len();
    // Written now and again after the final reads, so a failure anywhere can be studied.
    write_history(&history_path, &history, &faults);
    if let Err(e) = c.wait_leader(T).await {
        problems.push(format!("after healing: {e}"));
    }

    // Final linearizable reads on every node: part of the checked history, so an acknowledged
    // write that is missing from the final state is a linearizability violation.
    let http = c.http_builder().build().expect("client");
    let mut finals: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    let mut live: Vec<bool> = (0..NODES).map(|i| c.nodes[i].is_running()).collect();
    for &key in &keys {
        for (node, up) in live.iter_mut().enumerate() {
            if !*up {
                continue;
            }
            match final_read(&http, &env, node, key).await {
                Ok(op) => {
                    finals.entry(key).or_default().push(op.clone());
                    history.push(op);
                }
                Err(e) => {
                    problems.push(e);
                    *up = false;
                }
            }
        }
    }

    write_history(&history_path, &history, &faults);

    if !unexpected.is_empty() {
        problems.push(format!(
            "{} answers outside the API contract:\n  {}",
            unexpected.len(),
            unexpected.join("\n  ")
        ));
    }

    // A node that panicked (even if it kept running or was restarted) is a bug.
    for n in &c.nodes {
        if let Ok(log) = std::fs::read_to_string(&n.log) {
            if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
                problems.push(format!(
                    "{} panicked (see {}): {line}",
                    n.name,
                    n.log.display()
                ));
            }
        }
    }

    // Cheap direct checks with clear messages: one value per version per record, and no
    // acknowledged version above the final one.
    let mut seen: BTreeMap<(String, u64), (String, String)> = BTreeMap::new();
    for o in &history {
        if let Output::Value { version, value } = &o.output {
            match seen.get(&(o.key.clone(), *version)) {
                Some((v, who)) if v != value => problems.push(format!(
                    "record {} has two values at version {version}: {v:?} ({who}) and {value:?} ({o})",
                    o.key
                )),
                Some(_) => {}
                None => {
                    seen.insert((o.key.clone(), *version), (value.clone(), o.to_string()));
                }
            }
        }
    }
    for (key, fin) in &finals {
        let states: Vec<&Output> = fin.iter().map(|o| &o.output).collect();
        if states.windows(2).any(|w| w[0] != w[1]) {
            problems.push(format!(
                "record {key}: final linearizable reads differ between nodes: {states:?}"
            ));
        }
        let Some(&Output::Value {
            version: final_version,
            ..
        }) = fin.first().map(|o| &o.output)
        else {
            problems.push(format!(
                "record {key} is gone at the end: {:?}",
                fin.first()
            ));
            continue;
        };
        for o in history.iter().filter(|o| o.key == key.to_string()) {
            if let (Input::Write { .. } | Input::Cas { .. }, Output::Value { version, .. }) =
                (&o.input, &o.output)
            {
                if *version > final_version {
                    problems.push(format!(
                        "record {key}: acknowledged write at v{version} lost (final v{final_version}): {o}"
                    ));
                }
            }
        }
    }

    // The linearizability check proper.
    let t_check = Instant::now();
    let report = linearizability::check(&history, &initial);
    let check_time = t_check.elapsed();
    if !report.is_linearizable() {
        problems.push(format!("linearizability: {report}"));
    }

    // The checker must be able to fail on this very history: a read after the end that sees a
    // record's initial state, although acknowledged writes to it completed, is a stale read.
    if let Some(key) = keys.iter().find(|k| {
        history.iter().any(|o| {
            o.key == k.to_string()
                && !matches!(o.input, Input::Read)
                && matches!(o.output, Output::Value { .. })
        })
    }) {
        let mut doctored: Vec<Op> = history
            .iter()
            .filter(|o| o.key == key.to_string())
            .cloned()
            .collect();
        let end = env.now();
        let (v, x) = initial[&key.to_string()].clone().unwrap();
        doctored.push(Op {
            key: key.to_string(),
            client: 999,
            input: Input::Read,
            output: Output::Value {
                version: v,
                value: x,
            },
            call: end + 1,
            ret: end + 2,
            note: "doctored stale read".into(),
        });
        let r = linearizability::check(&doctored, &initial);
        assert!(
            r.violations.iter().any(|v| v.key == key.to_string()),
            "the checker accepted a doctored stale read: {r}"
        );
    }

    // Convergence: every replica's local state (stale read) reaches the final state.
    let expected: BTreeMap<u64, State> = finals
        .iter()
        .map(|(k, ops)| {
            let st = match &ops[0].output {
                Output::Value { version, value } => Some((*version, value.clone())),
                _ => None,
            };
            (*k, st)
        })
        .collect();
    let converged = c
        .wait_until(Duration::from_secs(30), "replicas converge", |c| {
            let expected = expected.clone();
            async move {
                for (key, want) in &expected {
                    for node in 0..NODES {
                        if stale_state(c, node, *key).await.as_ref() != Some(want) {
                            return false;
                        }
                    }
                }
                true
            }
        })
        .await;
    if converged.is_err() {
        let mut diff = Vec::new();
        for (key, want) in &expected {
            for node in 0..NODES {
                let got = stale_state(&c, node, *key).await;
                if got.as_ref() != Some(want) {
                    diff.push(format!(
                        "record {key} on n{}: {got:?}, expected {want:?}",
                        node + 1
                    ));
                }
            }
        }
        problems.push(format!(
            "replicas did not converge in 30 s:\n  {}",
            diff.join("\n  ")
        ));
    }

    // Summary.
    let count = |f: &dyn Fn(&Op) -> bool| history.iter().filter(|o| f(o)).count();
    let is_write = |o: &Op| !matches!(o.input, Input::Read);
    eprintln!(
        "robustness: {fault_count} faults, {workload_ops} workload ops ({} reads answered, {} \
         writes/CAS acknowledged, {} refused with 412, {} unknown, {} certainly not applied), \
         check took {check_time:?}: {}",
        count(&|o| !is_write(o) && matches!(o.output, Output::Value { .. })),
        count(&|o| is_write(o) && matches!(o.output, Output::Value { .. })),
        count(&|o| o.output == Output::PreconditionFailed),
        count(&|o| is_write(o) && o.output == Output::Unknown),
        count(&|o| o.output == Output::Failed),
        report.to_string().lines().next().unwrap_or("")
    );
    for (key, st) in &expected {
        eprintln!("robustness: record {key} final state {st:?}");
    }
    eprintln!(
        "robustness: finished in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "robustness anomalies (seed {seed}); history in {}:\n{}",
        history_path.display(),
        problems.join("\n")
    );
}
