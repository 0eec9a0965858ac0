//! Implementation of each CLI subcommand (the binary's edge: errors are `anyhow`).

use std::time::Duration;

use anyhow::{bail, Context};
use rackd_types::{
    ApiRole, ApiTokenView, BmcSpec, CertRenewal, ClusterInfo, CreateApiToken, CreateJoinToken,
    CreateLocation, CreateMachine, CreateRack, CreateSubnet, CreatedApiToken, CreatedJoinToken,
    Event, EventQuery, Health, IpRange, JoinTokenView, Location, Machine, MachineState, Rack,
    Subnet, UpdateMachine,
};

use crate::cli::output::{opt, table, time};
use crate::cli::watch::Changes;
use crate::cli::{
    CertCmd, Cmd, LocationCmd, MachineCmd, MemberCmd, Output, RackCmd, SubnetCmd, TaskCmd,
    TokenCmd, UpArgs,
};
use crate::client::Client;
use crate::config::NodeConfig;

/// What a node logs unless `RACKD_LOG` says otherwise. openraft's heartbeat worker warns
/// at every heartbeat a peer misses (ten a second); the leader logs one line per member that
/// stops or starts answering instead (`services::node_watch`).
pub const DEFAULT_LOG: &str = "info,openraft=warn,openraft::core::heartbeat=error";

pub async fn up(args: UpArgs, join: Option<String>) -> anyhow::Result<()> {
    let log = crate::cli::log::NonBlockingStderr::start();
    // Colour only for a person at a terminal: a journal, a file or a pipe gets plain text.
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RACKD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_ansi(colour)
        .with_writer(log.clone())
        .init();
    let result = match NodeConfig::from_args(args, join) {
        Ok(cfg) => crate::server::run(cfg).await,
        Err(e) => Err(e.into()),
    };
    log.flush(Duration::from_secs(3));
    result
}

fn json_out<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    crate::out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn parse_state(s: &Option<String>) -> anyhow::Result<Option<MachineState>> {
    match s {
        None => Ok(None),
        Some(s) => MachineState::parse(s).map(Some).with_context(|| {
            format!(
                "unknown state {s:?} (new, ready, deploying, deployed, releasing, failed, broken)"
            )
        }),
    }
}

fn machine_rows(ms: &[Machine]) {
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            vec![
                m.meta.id.to_string(),
                m.hostname.clone(),
                m.location.clone(),
                m.state.as_str().to_string(),
                m.macs.join(","),
                m.ips.join(","),
                m.meta.version.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "HOSTNAME", "LOCATION", "STATE", "MACS", "IPS", "VERSION",
        ],
        &rows,
    );
}

/// Waits for a task to finish (unless `no_wait`), prints it, and fails when the task failed.
async fn follow_task(
    c: &Client,
    mut t: rackd_types::Task,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut changes = match no_wait {
        true => None,
        false => Some(Changes::about(c, "task", t.meta.id).await),
    };
    if changes.is_some() {
        // Read again now that changes are followed: none since the answer is missed.
        t = c.get(&format!("/v1/tasks/{}", t.meta.id)).await?;
    }
    while !no_wait
        && matches!(
            t.state,
            rackd_types::TaskState::Pending | rackd_types::TaskState::Running
        )
        && std::time::Instant::now() < deadline
    {
        if let Some(ch) = changes.as_mut() {
            ch.wait().await;
        }
        t = c.get(&format!("/v1/tasks/{}", t.meta.id)).await?;
    }
    if json {
        return json_out(&t);
    }
    task_rows(std::slice::from_ref(&t));
    if t.state == rackd_types::TaskState::Failed {
        bail!("task failed: {}", t.error.unwrap_or_default());
    }
    Ok(())
}

/// `rackd tasks show ID --watch`: one line per change of the task until it ends.
async fn watch_task(c: &Client, id: u64, json: bool) -> anyhow::Result<()> {
    use rackd_types::TaskState;
    let mut changes = Changes::about(c, "task", id).await;
    let mut last = None;
    let mut steps: Vec<(rackd_types::StepState, u32)> = Vec::new();
    loop {
        let t: rackd_types::Task = c.get(&format!("/v1/tasks/{id}")).await?;
        let now = (t.state, t.attempt, t.assignee, t.generation);
        let now_steps: Vec<_> = t.steps.iter().map(|s| (s.state, s.attempts)).collect();
        if json && (last != Some(now) || steps != now_steps) {
            crate::out!("{}", serde_json::to_string(&t)?);
        }
        // A line per step that changed (workflows).
        if !json && steps != now_steps {
            for (i, s) in t.steps.iter().enumerate() {
                if steps.get(i) == Some(&(s.state, s.attempts)) {
                    continue;
                }
                let at = s.finished_at.or(s.started_at).unwrap_or(t.meta.updated_at);
                let said = s.error.as_deref().or(s.note.as_deref()).unwrap_or("");
                crate::out!(
                    "{}  task {id} step {} {:?} (attempt {}){}{said}",
                    time(at),
                    s.kind,
                    s.state,
                    s.attempts,
                    if said.is_empty() { "" } else { ": " }
                );
            }
        }
        steps = now_steps;
        if last != Some(now) {
            last = Some(now);
            if !json {
                crate::out!(
                    "{}  task {id} {:?} on machine {}: {:?} (attempt {}{})",
                    time(t.meta.updated_at),
                    t.kind,
                    t.machine_id,
                    t.state,
                    t.attempt,
                    t.assignee
                        .map(|n| format!(", node {n}"))
                        .unwrap_or_default()
                );
            }
        }
        match t.state {
            TaskState::Pending | TaskState::Running => changes.wait().await,
            TaskState::Failed => bail!("task failed: {}", t.error.unwrap_or_default()),
            _ => return Ok(()),
        }
    }
}

/// The machine a deploy or release answered with: JSON (a line when more follow with
/// --wait), or a sentence naming its workflow task.
fn print_transition(m: &Machine, wait: bool, json: bool) -> anyhow::Result<()> {
    match (json, wait) {
        // With --wait, JSON lines: one per change.
        (true, true) => crate::out!("{}", serde_json::to_string(m)?),
        (true, false) => json_out(m)?,
        _ => crate::out!(
            "machine {} ({}) is {}{}",
            m.meta.id,
            m.hostname,
            m.state.as_str(),
            m.workflow
                .map(|t| format!(" (task {t})"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// Follow machine `id` from state `from` until it reaches `goal.1` (Ok) or leaves `goal.0`
/// for anything else (an error naming it and why), printing each change.
async fn wait_machine(
    c: &Client,
    id: u64,
    mut from: MachineState,
    goal: (MachineState, MachineState),
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (during, done) = goal;
    let mut cause = String::new();
    let mut changes = Changes::about(c, "machine", id).await;
    let mut first = true;
    loop {
        if from == done {
            return Ok(());
        }
        if from != during {
            bail!("machine {id} is {}: {cause}", from.as_str());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("machine {id} still {} after {timeout:?}", during.as_str());
        }
        // The first read follows at once (changes are followed from now); then each waits
        // for a change, bounded by the deadline.
        if !std::mem::take(&mut first) {
            let _ = tokio::time::timeout_at(deadline, changes.wait()).await;
        }
        let m: Machine = c.get(&format!("/v1/machines/{id}")).await?;
        cause = m.state_cause.clone();
        if m.state != from {
            if json {
                crate::out!("{}", serde_json::to_string(&m)?);
            } else {
                crate::out!("machine {id} ({}) is {}", m.hostname, m.state.as_str());
            }
            from = m.state;
        }
    }
}

/// A workflow's steps: state, attempts, timings, what each found or did, errors verbatim.
fn step_rows(t: &rackd_types::Task) {
    if t.steps.is_empty() {
        return;
    }
    crate::out!();
    let rows: Vec<Vec<String>> = t
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let took = match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => format!("{:.1}s", b.saturating_sub(a) as f64 / 1000.0),
                _ => String::new(),
            };
            let mark = if t.current_step() == Some(i) && !t.state.is_terminal() {
                "→"
            } else {
                ""
            };
            vec![
                format!("{mark}{}", s.kind),
                format!("{:?}", s.state),
                s.attempts.to_string(),
                s.started_at.map(time).unwrap_or_default(),
                took,
                s.error
                    .clone()
                    .or_else(|| s.note.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["STEP", "STATE", "ATTEMPTS", "STARTED", "TOOK", "NOTE"],
        &rows,
    );
}

fn task_rows(ts: &[rackd_types::Task]) {
    let rows: Vec<Vec<String>> = ts
        .iter()
        .map(|t| {
            vec![
                t.meta.id.to_string(),
                format!("{:?}", t.kind),
                t.machine_id.to_string(),
                format!("{:?}", t.state),
                t.attempt.to_string(),
                opt(&t.assignee),
                opt(&t.observed_power),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "MACHINE", "STATE", "ATTEMPT", "NODE", "POWER", "ERROR",
        ],
        &rows,
    );
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn client(
    server: Option<String>,
    token: Option<String>,
    ca_file: Option<&std::path::Path>,
    out: Output,
    cmd: Cmd,
) -> anyhow::Result<()> {
    // What `rackd login` kept fills in what was not given, for the server it names.
    let login = crate::cli::login::load()?.filter(|l| {
        server
            .as_deref()
            .is_none_or(|s| s.trim_end_matches('/') == l.server)
    });
    let server = server
        .or_else(|| login.as_ref().map(|l| l.server.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:7080".to_string());
    let server = server.as_str();
    let token = token.or_else(|| login.as_ref().and_then(|l| l.token.clone()));
    let kept_ca = login.as_ref().and_then(|l| l.ca_pem.clone());
    let c = match (ca_file, kept_ca) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("read the CA file {}", path.display()))?;
            Client::with_ca(server, token, &pem)?
        }
        (None, Some(pem)) => Client::with_ca(server, token, pem.as_bytes())?,
        (None, None) if server.starts_with("https://") => bail!(
            "{server} is served over TLS: give the cluster CA with --ca-file or RACKD_CA_FILE \
             (DATA_DIR/pki/ca.pem on any node), or run rackd login {server} --ca-pin sha256:…; \
             rackd never skips verifying the server"
        ),
        (None, None) => Client::new(server, token),
    };
    let json = out == Output::Json;
    match cmd {
        Cmd::Up(_)
        | Cmd::Join { .. }
        | Cmd::Image(_)
        | Cmd::ApplianceInit
        | Cmd::Login { .. }
        | Cmd::Completion { .. }
        | Cmd::Complete { .. } => {
            bail!("not a client command (the binary runs it itself)")
        }
        Cmd::Status => status(&c, json).await,
        Cmd::Machines(mc) => machines(&c, json, mc).await,
        Cmd::Tasks(tc) => tasks(&c, json, tc).await,
        Cmd::Locations(lc) => locations(&c, json, lc).await,
        Cmd::Racks(rc) => racks(&c, json, rc).await,
        Cmd::Subnets(sc) => subnets(&c, json, sc).await,
        Cmd::Members(mc) => members(&c, json, mc).await,
        Cmd::Tokens(tc) => tokens(&c, json, tc).await,
        Cmd::Certs(CertCmd::Rotate) => {
            let r: CertRenewal = c
                .post("/v1/cluster/certificates/renew", &serde_json::json!({}))
                .await?;
            if json {
                return json_out(&r);
            }
            crate::out!(
                "every node renews a certificate issued before {}",
                time(r.renew_before_ms)
            );
            Ok(())
        }
        Cmd::Blobs(bc) => crate::cli::blobs::run(&c, json, bc).await,
        Cmd::Backup(crate::cli::BackupCmd::Create {
            file,
            passphrase_file,
            data_dir,
        }) => {
            let from = match &data_dir {
                Some(d) => crate::cli::backup::From::DataDir(d),
                None => crate::cli::backup::From::Node(&c),
            };
            crate::cli::backup::create(from, json, &file, passphrase_file.as_deref()).await
        }
        Cmd::Backup(crate::cli::BackupCmd::Restore {
            file,
            data_dir,
            api,
            peer,
            api_tls,
            api_plain_http,
            passphrase_file,
        }) => {
            let tls = crate::config::api_tls(&api, api_tls, api_plain_http);
            crate::cli::backup::restore(
                json,
                &file,
                &data_dir,
                (&api, tls),
                &peer,
                passphrase_file.as_deref(),
            )
            .await
        }
        Cmd::Backup(crate::cli::BackupCmd::Inspect {
            file,
            passphrase_file,
        }) => crate::cli::backup::inspect(json, &file, passphrase_file.as_deref()),
        Cmd::Images(ic) => crate::cli::blobs::images(&c, json, ic).await,
        Cmd::Webhooks(wc) => crate::cli::webhooks::run(&c, json, wc).await,
        Cmd::Events {
            after,
            limit,
            follow,
            kind,
            entity,
            id,
        } => {
            let q = EventQuery {
                after,
                kind,
                entity,
                entity_id: id,
                ..Default::default()
            };
            if follow {
                return crate::cli::watch::follow_events(&c, q, json).await;
            }
            events(&c, json, q, limit).await
        }
    }
}

/// The leader's view of the members (reachability, lag, last contact), asked of the leader
/// itself when `ci` came from another node; `None` when it cannot be reached.
async fn leader_view(c: &Client, ci: &ClusterInfo, from: u64) -> Option<ClusterInfo> {
    let leader = ci.leader_id?;
    if leader == from {
        return Some(ci.clone());
    }
    let addr = &ci.members.iter().find(|m| m.id == leader)?.api_addr;
    c.at(addr)
        .with_retry(Duration::ZERO)
        .with_timeout(Duration::from_secs(3))
        .get("/v1/cluster?stale=true")
        .await
        .ok()
}

async fn status(c: &Client, json: bool) -> anyhow::Result<()> {
    let h: Health = c.get("/v1/health").await?;
    // Served from the node's replica so status works even without a quorum.
    let ci: ClusterInfo = c.get("/v1/cluster?stale=true").await?;
    let view = leader_view(c, &ci, h.node_id).await;
    let no_leader = ci.leader_id.is_none();
    // Whether this node would serve a current read now (no retry: the answer is the state).
    let ready: Result<rackd_types::Ready, String> =
        match c.clone().with_retry(Duration::ZERO).get("/v1/ready").await {
            Ok(r) => Ok(r),
            Err(crate::client::ClientError::Api { error, .. }) => Err(error.message),
            Err(e) => Err(e.to_string()),
        };
    if json {
        let ready_json = match &ready {
            Ok(r) => serde_json::json!({"ready": true, "answer": r}),
            Err(why) => serde_json::json!({"ready": false, "reason": why}),
        };
        json_out(
            &serde_json::json!({ "node": h, "cluster": ci, "leader_view": view, "ready": ready_json }),
        )?;
        if no_leader {
            anyhow::bail!("no leader: writes are refused until a majority of voters is reachable");
        }
        return Ok(());
    }
    crate::out!(
        "cluster {}  leader {}  term {}  commit {}",
        ci.cluster_id,
        opt(&ci.leader_id),
        ci.term,
        opt(&ci.commit_index)
    );
    crate::out!(
        "this node {} is {} (applied {})",
        h.node_id,
        h.raft_state,
        opt(&h.last_applied)
    );
    match &ready {
        Ok(_) => crate::out!("it is ready (it serves current reads)"),
        Err(why) => crate::out!("it is not ready: {why}"),
    }
    if let (Some(issued), Some(expires)) = (h.cert_issued_at_ms, h.cert_expires_at_ms) {
        crate::out!(
            "its certificate was issued {} and expires {}",
            time(issued),
            time(expires)
        );
    }
    let progress = |id: u64| {
        view.as_ref()
            .and_then(|v| v.members.iter().find(|m| m.id == id))
            .and_then(|m| m.progress)
    };
    let rows: Vec<Vec<String>> = ci
        .members
        .iter()
        .map(|m| {
            let lead = if Some(m.id) == ci.leader_id { "*" } else { "" };
            let (reachable, lag, contact) = match (Some(m.id) == ci.leader_id, progress(m.id)) {
                (true, _) => ("leader".to_string(), "0".to_string(), "-".to_string()),
                (false, Some(p)) => (
                    if p.reachable { "yes" } else { "NO" }.to_string(),
                    p.lag.to_string(),
                    p.last_contact_ms.map_or("never".to_string(), |ms| {
                        format!("{:.1}s ago", ms as f64 / 1e3)
                    }),
                ),
                (false, None) => ("?".to_string(), "?".to_string(), "?".to_string()),
            };
            vec![
                format!("{}{lead}", m.id),
                m.role.clone(),
                m.api_addr.clone(),
                m.peer_addr.clone(),
                m.apply_rules.to_string(),
                reachable,
                lag,
                contact,
            ]
        })
        .collect();
    crate::out!("entries decided by apply rules {}", ci.apply_rules);
    table(
        &[
            "ID",
            "ROLE",
            "API",
            "PEER",
            "RULES",
            "REACHABLE",
            "LAG",
            "LAST CONTACT",
        ],
        &rows,
    );
    if no_leader {
        anyhow::bail!("no leader: writes are refused until a majority of voters is reachable");
    }
    if view.is_none() {
        crate::out!("(the leader could not be asked for reachability and lag: ? columns)");
    }
    Ok(())
}

async fn machines(c: &Client, json: bool, mc: MachineCmd) -> anyhow::Result<()> {
    let rid = match mc.target() {
        Some(key) => crate::cli::resolve::machine(c, key).await?,
        None => 0,
    };
    match mc {
        MachineCmd::List {
            location,
            state,
            rack,
            stale,
        } => {
            let q = query(&[
                ("location", location),
                ("state", state),
                ("rack", rack.map(|r| r.to_string())),
                ("stale", stale.then(|| "true".to_string())),
            ]);
            let ms: Vec<Machine> = c.get_all(&format!("/v1/machines{q}")).await?;
            if json {
                return json_out(&ms);
            }
            machine_rows(&ms);
        }
        MachineCmd::Add(a) => {
            let bmc = a.bmc_address.map(|address| BmcSpec {
                driver: a.bmc_driver,
                address,
                port: a.bmc_port,
                username: a.bmc_user,
                password: a.bmc_password,
                cipher_suite: a.bmc_cipher_suite,
            });
            let body = CreateMachine {
                hostname: a.hostname,
                location: a.location,
                rack_id: a.rack,
                rack_unit: a.unit,
                macs: a.macs,
                ips: a.ips,
                bmc,
                state: parse_state(&a.state)?,
                description: a.description,
                tags: a.tags,
            };
            let m: Machine = c.post("/v1/machines", &body).await?;
            if json {
                return json_out(&m);
            }
            machine_rows(&[m]);
        }
        MachineCmd::Show { id: _ } => {
            let id = rid;
            let m: Machine = c.get(&format!("/v1/machines/{id}")).await?;
            if json {
                return json_out(&m);
            }
            crate::out!("id:          {}", m.meta.id);
            crate::out!("hostname:    {}", m.hostname);
            crate::out!("location:    {}", m.location);
            crate::out!("rack/unit:   {}/{}", opt(&m.rack_id), opt(&m.rack_unit));
            crate::out!("state:       {} ({})", m.state.as_str(), m.state_cause);
            crate::out!("macs:        {}", m.macs.join(", "));
            crate::out!("ips:         {}", m.ips.join(", "));
            if let Some(b) = &m.bmc {
                crate::out!(
                    "bmc:         {} {}:{} user={} password={}",
                    b.driver,
                    b.address,
                    b.port,
                    b.username,
                    if b.password_set { "set" } else { "unset" }
                );
            }
            crate::out!("tags:        {}", m.tags.join(", "));
            crate::out!("description: {}", m.description);
            crate::out!("version:     {}", m.meta.version);
            crate::out!("updated:     {}", time(m.meta.updated_at));
        }
        MachineCmd::Update {
            id: _,
            if_match,
            fields,
        } => {
            let id = rid;
            let bmc = if fields.no_bmc || !fields.touches_bmc() {
                fields.bmc(None)?
            } else {
                let current: Machine = c.get(&format!("/v1/machines/{id}")).await?;
                fields.bmc(current.bmc.as_ref())?
            };
            let rack_id = match (&fields.rack, fields.no_rack) {
                (_, true) => Some(None),
                (Some(r), false) => Some(Some(crate::cli::resolve::rack(c, r).await?)),
                (None, false) => None,
            };
            let patch = UpdateMachine {
                hostname: fields.hostname,
                location: fields.location,
                macs: fields.macs,
                ips: if fields.no_ips {
                    Some(Vec::new())
                } else {
                    fields.ips
                },
                state: parse_state(&fields.state)?,
                state_cause: fields.cause,
                description: fields.description,
                tags: if fields.no_tags {
                    Some(Vec::new())
                } else {
                    fields.tags
                },
                rack_id,
                rack_unit: fields.unit.map(Some),
                bmc,
            };
            let m: Machine = c
                .patch(&format!("/v1/machines/{id}"), &patch, if_match)
                .await?;
            if json {
                return json_out(&m);
            }
            machine_rows(&[m]);
        }
        MachineCmd::BmcSession { id: _, source, ttl } => {
            let id = rid;
            let g: rackd_types::BmcSession = c
                .post(
                    &format!("/v1/machines/{id}/bmc-session"),
                    &rackd_types::BmcSessionRequest {
                        source,
                        ttl_secs: ttl,
                    },
                )
                .await?;
            if json {
                return json_out(&g);
            }
            crate::out!(
                "{} may reach the BMC of machine {} through its location's IPMI proxies until {}",
                g.source,
                g.machine_id,
                time(g.expires_at)
            );
        }
        MachineCmd::BmcSessions { id: _ } => {
            let id = rid;
            let gs: Vec<rackd_types::BmcSession> =
                c.get(&format!("/v1/machines/{id}/bmc-sessions")).await?;
            if json {
                return json_out(&gs);
            }
            let rows: Vec<Vec<String>> = gs
                .iter()
                .map(|g| vec![g.source.clone(), time(g.expires_at)])
                .collect();
            table(&["SOURCE", "UNTIL"], &rows);
        }
        MachineCmd::BmcSessionClose { id: _, source } => {
            let id = rid;
            let q = query(&[("source", source)]);
            c.delete(&format!("/v1/machines/{id}/bmc-sessions{q}"), None)
                .await?;
        }
        MachineCmd::Deploy {
            id: _,
            image,
            wait,
            timeout,
            boot_timeout,
            install_timeout,
        } => {
            let id = rid;
            let m: Machine = c
                .post(
                    &format!("/v1/machines/{id}/deploy"),
                    &rackd_types::DeployMachine {
                        image,
                        boot_timeout_secs: boot_timeout,
                        install_timeout_secs: install_timeout,
                    },
                )
                .await?;
            print_transition(&m, wait, json)?;
            if wait {
                let goal = (MachineState::Deploying, MachineState::Deployed);
                wait_machine(c, id, m.state, goal, Duration::from_secs(timeout), json).await?;
            }
        }
        MachineCmd::Release {
            id: _,
            wipe_image,
            wait,
            timeout,
        } => {
            let id = rid;
            let m: Machine = c
                .post(
                    &format!("/v1/machines/{id}/release"),
                    &rackd_types::ReleaseMachine {
                        wipe_image,
                        ..Default::default()
                    },
                )
                .await?;
            print_transition(&m, wait, json)?;
            if wait {
                let goal = (MachineState::Releasing, MachineState::Ready);
                wait_machine(c, id, m.state, goal, Duration::from_secs(timeout), json).await?;
            }
        }
        MachineCmd::Power {
            id: _,
            action,
            no_wait,
        } => {
            let id = rid;
            let t: rackd_types::Task = c
                .post(
                    &format!("/v1/machines/{id}/power"),
                    &rackd_types::PowerRequest { action },
                )
                .await?;
            follow_task(c, t, no_wait, json).await?;
        }
        MachineCmd::BootDevice {
            id: _,
            device,
            persistent,
            no_wait,
        } => {
            let id = rid;
            let t: rackd_types::Task = c
                .post(
                    &format!("/v1/machines/{id}/boot-device"),
                    &rackd_types::BootDeviceRequest { device, persistent },
                )
                .await?;
            follow_task(c, t, no_wait, json).await?;
        }
        MachineCmd::Delete { id: _, if_match } => {
            let id = rid;
            c.delete(&format!("/v1/machines/{id}"), if_match).await?;
            if !json {
                crate::out!("machine {id} deleted");
            }
        }
    }
    Ok(())
}

async fn tasks(c: &Client, json: bool, tc: TaskCmd) -> anyhow::Result<()> {
    match tc {
        TaskCmd::List => {
            let ts: Vec<rackd_types::Task> = c.get_all("/v1/tasks").await?;
            if json {
                return json_out(&ts);
            }
            task_rows(&ts);
        }
        TaskCmd::Show { id, watch: false } => {
            let t: rackd_types::Task = c.get(&format!("/v1/tasks/{id}")).await?;
            if json {
                return json_out(&t);
            }
            task_rows(std::slice::from_ref(&t));
            step_rows(&t);
        }
        TaskCmd::Show { id, watch: true } => watch_task(c, id, json).await?,
        TaskCmd::Retry { id } => {
            let t: rackd_types::Task = c
                .post(&format!("/v1/tasks/{id}/retry"), &serde_json::json!({}))
                .await?;
            if json {
                return json_out(&t);
            }
            task_rows(std::slice::from_ref(&t));
            step_rows(&t);
        }
        TaskCmd::Cancel { id } => {
            let t: rackd_types::Task = c
                .post(&format!("/v1/tasks/{id}/cancel"), &serde_json::json!({}))
                .await?;
            if json {
                return json_out(&t);
            }
            task_rows(&[t]);
        }
    }
    Ok(())
}

async fn locations(c: &Client, json: bool, lc: LocationCmd) -> anyhow::Result<()> {
    match lc {
        LocationCmd::List => {
            let ls: Vec<Location> = c.get_all("/v1/locations").await?;
            if json {
                return json_out(&ls);
            }
            let rows: Vec<Vec<String>> = ls
                .iter()
                .map(|l| vec![l.meta.id.to_string(), l.name.clone(), l.description.clone()])
                .collect();
            table(&["ID", "NAME", "DESCRIPTION"], &rows);
        }
        LocationCmd::Add {
            name,
            description,
            discovery,
        } => {
            let l: Location = c
                .post(
                    "/v1/locations",
                    &CreateLocation {
                        name,
                        description,
                        discovery,
                    },
                )
                .await?;
            if json {
                return json_out(&l);
            }
            crate::out!("location {} created with id {}", l.name, l.meta.id);
        }
        LocationCmd::Show { location } => {
            let id = crate::cli::resolve::location(c, &location).await?;
            let l: Location = c.get(&format!("/v1/locations/{id}")).await?;
            if json {
                return json_out(&l);
            }
            crate::out!("id:          {}", l.meta.id);
            crate::out!("name:        {}", l.name);
            crate::out!("description: {}", l.description);
            crate::out!("discovery:   {}", if l.discovery { "on" } else { "off" });
            crate::out!("version:     {}", l.meta.version);
            crate::out!("updated:     {}", time(l.meta.updated_at));
        }
        LocationCmd::Update {
            location,
            description,
            discovery,
            if_match,
        } => {
            let id = crate::cli::resolve::location(c, &location).await?;
            let patch = rackd_types::UpdateLocation {
                description,
                discovery,
            };
            let l: Location = c
                .patch(&format!("/v1/locations/{id}"), &patch, if_match)
                .await?;
            if json {
                return json_out(&l);
            }
            crate::out!("location {} updated (version {})", l.name, l.meta.version);
        }
        LocationCmd::Delete { location } => {
            let id = crate::cli::resolve::location(c, &location).await?;
            c.delete(&format!("/v1/locations/{id}"), None).await?;
            if !json {
                crate::out!("location {id} deleted");
            }
        }
    }
    Ok(())
}

async fn racks(c: &Client, json: bool, rc: RackCmd) -> anyhow::Result<()> {
    match rc {
        RackCmd::List { location } => {
            let rs: Vec<Rack> = c
                .get_all(&format!("/v1/racks{}", query(&[("location", location)])))
                .await?;
            if json {
                return json_out(&rs);
            }
            let rows: Vec<Vec<String>> = rs
                .iter()
                .map(|r| {
                    vec![
                        r.meta.id.to_string(),
                        r.name.clone(),
                        r.location.clone(),
                        r.height_units.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "LOCATION", "UNITS"], &rows);
        }
        RackCmd::Add {
            location,
            name,
            height,
        } => {
            let r: Rack = c
                .post(
                    "/v1/racks",
                    &CreateRack {
                        location,
                        name,
                        height_units: height,
                    },
                )
                .await?;
            if json {
                return json_out(&r);
            }
            crate::out!("rack {} created with id {}", r.name, r.meta.id);
        }
        RackCmd::Show { rack } => {
            let id = crate::cli::resolve::rack(c, &rack).await?;
            let r: Rack = c.get(&format!("/v1/racks/{id}")).await?;
            let ms: Vec<Machine> = c.get_all(&format!("/v1/machines?rack={id}")).await?;
            if json {
                return json_out(&serde_json::json!({"rack": r, "machines": ms}));
            }
            crate::out!(
                "rack {} (id {}) in {}, {} units, version {}",
                r.name,
                r.meta.id,
                r.location,
                r.height_units,
                r.meta.version
            );
            let mut rows: Vec<(u32, Vec<String>)> = ms
                .iter()
                .map(|m| {
                    (
                        m.rack_unit.unwrap_or(0),
                        vec![
                            opt(&m.rack_unit),
                            m.meta.id.to_string(),
                            m.hostname.clone(),
                            m.state.as_str().to_string(),
                        ],
                    )
                })
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.0));
            let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
            table(&["UNIT", "ID", "HOSTNAME", "STATE"], &rows);
        }
        RackCmd::Update {
            rack,
            name,
            height,
            if_match,
        } => {
            let id = crate::cli::resolve::rack(c, &rack).await?;
            let patch = rackd_types::UpdateRack {
                name,
                height_units: height,
            };
            let r: Rack = c
                .patch(&format!("/v1/racks/{id}"), &patch, if_match)
                .await?;
            if json {
                return json_out(&r);
            }
            crate::out!("rack {} updated (version {})", r.name, r.meta.version);
        }
        RackCmd::Delete { rack } => {
            let id = crate::cli::resolve::rack(c, &rack).await?;
            c.delete(&format!("/v1/racks/{id}"), None).await?
        }
    }
    Ok(())
}

async fn subnets(c: &Client, json: bool, sc: SubnetCmd) -> anyhow::Result<()> {
    match sc {
        SubnetCmd::List { location } => {
            let ss: Vec<Subnet> = c
                .get_all(&format!("/v1/subnets{}", query(&[("location", location)])))
                .await?;
            if json {
                return json_out(&ss);
            }
            let rows: Vec<Vec<String>> = ss
                .iter()
                .map(|s| {
                    vec![
                        s.meta.id.to_string(),
                        s.cidr.clone(),
                        s.location.clone(),
                        opt(&s.gateway),
                        s.dns.join(","),
                        s.dynamic_ranges
                            .iter()
                            .map(|r| format!("{}-{}", r.start, r.end))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table(
                &["ID", "CIDR", "LOCATION", "GATEWAY", "DNS", "DYNAMIC"],
                &rows,
            );
        }
        SubnetCmd::Add {
            location,
            cidr,
            gateway,
            dns,
            dynamic,
        } => {
            let dynamic_ranges = parse_ranges(&dynamic)?;
            let s: Subnet = c
                .post(
                    "/v1/subnets",
                    &CreateSubnet {
                        location,
                        cidr,
                        gateway,
                        dns,
                        dynamic_ranges,
                        reserved_ranges: vec![],
                    },
                )
                .await?;
            if json {
                return json_out(&s);
            }
            crate::out!("subnet {} created with id {}", s.cidr, s.meta.id);
        }
        SubnetCmd::Show { subnet } => {
            let id = crate::cli::resolve::subnet(c, &subnet).await?;
            let s: Subnet = c.get(&format!("/v1/subnets/{id}")).await?;
            if json {
                return json_out(&s);
            }
            let ranges = |rs: &[IpRange]| {
                rs.iter()
                    .map(|r| format!("{}-{}", r.start, r.end))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            crate::out!("id:       {}", s.meta.id);
            crate::out!("cidr:     {}", s.cidr);
            crate::out!("location: {}", s.location);
            crate::out!("gateway:  {}", opt(&s.gateway));
            crate::out!("dns:      {}", s.dns.join(", "));
            crate::out!("dynamic:  {}", ranges(&s.dynamic_ranges));
            crate::out!("reserved: {}", ranges(&s.reserved_ranges));
            crate::out!("version:  {}", s.meta.version);
        }
        SubnetCmd::Update {
            subnet,
            gateway,
            no_gateway,
            dns,
            dynamic,
            reserved,
            if_match,
        } => {
            let id = crate::cli::resolve::subnet(c, &subnet).await?;
            let patch = rackd_types::UpdateSubnet {
                gateway: if no_gateway {
                    Some(None)
                } else {
                    gateway.map(Some)
                },
                dns,
                dynamic_ranges: dynamic.map(|d| parse_ranges(&d)).transpose()?,
                reserved_ranges: reserved.map(|r| parse_ranges(&r)).transpose()?,
            };
            let s: Subnet = c
                .patch(&format!("/v1/subnets/{id}"), &patch, if_match)
                .await?;
            if json {
                return json_out(&s);
            }
            crate::out!("subnet {} updated (version {})", s.cidr, s.meta.version);
        }
        SubnetCmd::Delete { subnet } => {
            let id = crate::cli::resolve::subnet(c, &subnet).await?;
            c.delete(&format!("/v1/subnets/{id}"), None).await?
        }
    }
    Ok(())
}

/// `START-END` ranges.
fn parse_ranges(rs: &[String]) -> anyhow::Result<Vec<IpRange>> {
    rs.iter()
        .map(|d| {
            let (s, e) = d
                .split_once('-')
                .with_context(|| format!("range {d:?} is not START-END"))?;
            Ok(IpRange {
                start: s.to_string(),
                end: e.to_string(),
            })
        })
        .collect()
}

async fn members(c: &Client, json: bool, mc: MemberCmd) -> anyhow::Result<()> {
    match mc {
        MemberCmd::List => {
            let ci: ClusterInfo = c.get("/v1/cluster").await?;
            if json {
                return json_out(&ci.members);
            }
            let rows: Vec<Vec<String>> = ci
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        m.role.clone(),
                        m.api_addr.clone(),
                        m.peer_addr.clone(),
                    ]
                })
                .collect();
            table(&["ID", "ROLE", "API", "PEER"], &rows);
        }
        MemberCmd::Remove { id } => {
            c.delete_once(&format!("/v1/cluster/members/{id}")).await?;
            if !json {
                crate::out!("node {id} removed from the cluster");
            }
        }
    }
    Ok(())
}

async fn tokens(c: &Client, json: bool, tc: TokenCmd) -> anyhow::Result<()> {
    match tc {
        TokenCmd::Create {
            ttl,
            description,
            location,
        } => {
            let t: CreatedJoinToken = c
                .post(
                    "/v1/tokens/join",
                    &CreateJoinToken {
                        ttl_secs: Some(ttl),
                        description,
                        location,
                    },
                )
                .await?;
            if json {
                return json_out(&t);
            }
            crate::out!("{}", t.token);
            eprintln!(
                "(join token {}, one node, expires {})",
                t.id,
                time(t.expires_at)
            );
        }
        TokenCmd::List => {
            let ts: Vec<JoinTokenView> = c.get_all("/v1/tokens/join").await?;
            if json {
                return json_out(&ts);
            }
            let rows: Vec<Vec<String>> = ts
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        time(t.expires_at),
                        opt(&t.used_by_node),
                        t.location.clone().unwrap_or_else(|| "-".into()),
                        t.description.clone(),
                    ]
                })
                .collect();
            table(
                &["ID", "EXPIRES", "USED_BY", "LOCATION", "DESCRIPTION"],
                &rows,
            );
        }
        TokenCmd::RevokeApi { token } => {
            let id = crate::cli::resolve::api_token(c, &token).await?;
            c.delete(&format!("/v1/tokens/api/{id}"), None).await?;
        }
        TokenCmd::Revoke { id } => {
            c.delete(&format!("/v1/tokens/join/{id}"), None).await?;
        }
        TokenCmd::CreateApi {
            name,
            role,
            expires,
        } => {
            let role: ApiRole = serde_json::from_value(serde_json::Value::String(role.clone()))
                .map_err(|_| anyhow::anyhow!("--role {role:?}: one of reader, operator, admin"))?;
            let t: CreatedApiToken = c
                .post(
                    "/v1/tokens/api",
                    &CreateApiToken {
                        name,
                        role,
                        expires_in_secs: expires,
                    },
                )
                .await?;
            if json {
                return json_out(&t);
            }
            crate::out!("{}", t.token);
        }
        TokenCmd::ListApi => {
            let ts: Vec<ApiTokenView> = c.get_all("/v1/tokens/api").await?;
            if json {
                return json_out(&ts);
            }
            let rows: Vec<Vec<String>> = ts
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.role.as_str().into(),
                        time(t.created_at),
                        t.expires_at.map(time).unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "ROLE", "CREATED", "EXPIRES"], &rows);
        }
    }
    Ok(())
}

async fn events(c: &Client, json: bool, q: EventQuery, limit: usize) -> anyhow::Result<()> {
    let q = query(&[
        ("after", q.after.map(|a| a.to_string())),
        ("limit", Some(limit.to_string())),
        ("kind", q.kind),
        ("entity", q.entity),
        ("entity_id", q.entity_id.map(|i| i.to_string())),
    ]);
    let page: rackd_types::Page<Event> = c.get(&format!("/v1/events{q}")).await?;
    if json {
        return json_out(&page.items);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time(e.time),
                e.actor.clone(),
                e.kind.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "KIND", "MESSAGE"], &rows);
    Ok(())
}
