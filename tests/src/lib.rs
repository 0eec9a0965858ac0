//! Test harness for multi-process rackd clusters.
//!
//! [`Cluster`] starts real `rackd` processes, each on its own loopback address
//! (`127.A.B.N`, unique per test and process, ports chosen by the kernel on first start and
//! reused on restart so the membership stays valid). Node output goes to `<dir>/<node>.log`;
//! when a test fails (the harness is dropped while panicking) the directory is kept and its path
//! printed, otherwise it is removed. Every process is killed on drop.

pub mod linearizability;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rackd::client::Client;
use rackd_types::{ClusterInfo, Health};
use serde::de::DeserializeOwned;
use serde::Serialize;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// Path of the `rackd` binary: `$RACKD_BIN`, or `rackd` next to the test executable's `deps/`.
pub fn rackd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RACKD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join("rackd");
    assert!(
        p.exists(),
        "rackd binary not found at {} (run `cargo build -p rackd` first or set RACKD_BIN)",
        p.display()
    );
    p
}

/// A client builder that trusts only the CA `ca_pem` (PEM) when given one.
pub fn api_client_builder(ca_pem: Option<&[u8]>) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder();
    match ca_pem.and_then(|p| reqwest::Certificate::from_pem(p).ok()) {
        Some(ca) => b.tls_built_in_root_certs(false).add_root_certificate(ca),
        None => b,
    }
}

/// Priority of the policy rules [`Cluster::cut_peer_port`] adds (and `heal` deletes).
const PEER_CUT_PRIORITY: &str = "100";

/// One rackd process (possibly stopped).
pub struct NodeProc {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Bound API / peer addresses (known after the first start).
    pub api: Option<String>,
    pub peer: Option<String>,
    /// The node serves its API over TLS (it advertised an https URL).
    pub tls: bool,
    /// Extra `rackd up` arguments used at every start (e.g. `--join`, `--learner`).
    pub args: Vec<String>,
    /// The network namespace the process runs in ([`Cluster::new_in_netns`]), if any.
    pub netns: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl NodeProc {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api.as_deref().expect("node started"))
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Start (or restart) the process and wait until its API answers `/v1/health`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let api = self.api.clone().unwrap_or(format!("{}:0", self.ip));
        let peer = self.peer.clone().unwrap_or(format!("{}:0", self.ip));
        // Both files are rewritten at every start; remove them so that a stale or half-written
        // one (rackd truncates, then writes) is never read back as this start's address.
        let _ = std::fs::remove_file(self.data_dir.join("api.addr"));
        let _ = std::fs::remove_file(self.data_dir.join("peer.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("open node log")?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs rackd in place: the child's pid is rackd's, so signals
            // (SIGKILL, SIGSTOP) reach the node itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(rackd_bin());
                c
            }
            None => Command::new(rackd_bin()),
        };
        let child = cmd
            .arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api")
            .arg(&api)
            .arg("--peer")
            .arg(&peer)
            .args(&self.args)
            .env("RACKD_LOG", "info,openraft=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RACKD_SERVER")
            .env_remove("RACKD_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn rackd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let dir = self.data_dir.clone();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        loop {
            // rackd writes api.addr, then peer.addr: wait for both.
            if let (Some(a), Some(p)) = (read("api.addr"), read("peer.addr")) {
                // A node serving TLS advertises `https://HOST:PORT`; restarts bind HOST:PORT.
                self.tls = a.starts_with("https://");
                self.api = Some(a.trim_start_matches("https://").to_string());
                self.peer = Some(p);
                break;
            }
            if !self.is_running() {
                bail!(
                    "{} exited during startup; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not write api.addr in time", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Sends `sig` to the running process (SIGSTOP/SIGCONT pause and resume it); no-op when
    /// it is not running.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child process we own.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// The exit status, once the process has exited by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY-free: libc::kill with a pid we own.
            let pid = c.id() as i32;
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a CLI run ([`Cluster::cli`]) printed, and whether it succeeded.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A set of rackd processes plus an HTTP client holding the admin token.
pub struct Cluster {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub nodes: Vec<NodeProc>,
    pub http: reqwest::Client,
    pub token: String,
    /// The cluster CA (PEM) when the nodes serve their API over TLS.
    pub ca_pem: Option<Vec<u8>>,
    net: (u32, u32),
    pub common_args: Vec<String>,
    /// Environment of every node started from now on (`{dir}` is its data directory).
    pub common_env: Vec<(String, String)>,
    /// Per-node network namespaces on one bridge, when partitions are wanted.
    netns: Option<Netns>,
}

/// Network namespaces for the nodes of one cluster: node `i` runs in its own namespace with
/// address `10.A.B.(i+1)` on a veth whose other end is on a bridge in the root namespace
/// (`10.A.B.254`, so the test process reaches every node). A partition is a pair of blackhole
/// routes between two nodes' namespaces: their traffic is dropped both ways while clients keep
/// reaching both. Everything is deleted on drop, also when the test fails.
struct Netns {
    tag: String,
    prefix: String,
    bridge: String,
    spaces: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    fn new(net: (u32, u32)) -> anyhow::Result<Self> {
        let tag = format!("{}x{}", std::process::id() % 10_000, net.1);
        let prefix = format!("10.{}.{}", 150 + net.0 % 100, net.1);
        let bridge = format!("rkb{tag}");
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // From here on the bridge is deleted on drop, also if the rest fails.
        let me = Self {
            tag,
            prefix,
            bridge,
            spaces: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", me.prefix),
            "dev",
            &me.bridge,
        ])?;
        ip(&["link", "set", &me.bridge, "up"])?;
        Ok(me)
    }

    /// Namespace and address of node `i` (created here).
    fn add(&mut self, i: usize) -> anyhow::Result<(String, String)> {
        let ns = format!("rk{}-{}", self.tag, i + 1);
        let host = format!("rkh{}-{}", self.tag, i + 1);
        let addr = format!("{}.{}", self.prefix, i + 1);
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        self.spaces.push(ns.clone());
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &host, "master", &self.bridge, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok((ns, addr))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.spaces {
            let _ = ip(&["netns", "del", ns]); // its veth end goes with it
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Cluster {
    /// An empty cluster harness named after the test.
    pub fn new(test: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rackd-{test}-"))
            .tempdir()
            .expect("tempdir");
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // 127.A.B.x: A from the pid, B from a per-process counter: unique per test.
        let net = (20 + (pid % 200), (n % 250) + 1);
        Self {
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            nodes: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            token: String::new(),
            ca_pem: None,
            net,
            common_args: Vec::new(),
            common_env: Vec::new(),
            netns: None,
        }
    }

    /// Like [`Cluster::new`], but every node runs in its own network namespace, so that
    /// [`Cluster::partition`] can cut links between nodes (needs root and `ip`).
    pub fn new_in_netns(test: &str) -> anyhow::Result<Self> {
        let mut c = Self::new(test);
        c.netns = Some(Netns::new(c.net)?);
        Ok(c)
    }

    /// The network namespace of node `i` ([`Cluster::new_in_netns`] clusters only).
    fn netns_of(&self, i: usize) -> anyhow::Result<&str> {
        self.netns.as_ref().context("not a netns cluster")?;
        self.nodes[i].netns.as_deref().context("node without netns")
    }

    /// Cut the link between nodes `a` and `b` (both directions); clients still reach both.
    pub fn partition(&self, a: usize, b: usize) -> anyhow::Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            let ns = self.netns_of(x)?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "blackhole",
                &format!("{}/32", self.nodes[y].ip),
            ])?;
        }
        Ok(())
    }

    /// Cut only Raft between nodes `a` and `b` (TCP to each other's peer port, both ways):
    /// their HTTP APIs still reach each other. A policy rule at priority [`PEER_CUT_PRIORITY`].
    pub fn cut_peer_port(&self, a: usize, b: usize) -> anyhow::Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            let ns = self.netns_of(x)?;
            let peer = self.nodes[y].peer.as_deref().context("node not started")?;
            let port = peer.rsplit_once(':').context("peer address")?.1;
            ip(&[
                "-n",
                ns,
                "rule",
                "add",
                "priority",
                PEER_CUT_PRIORITY,
                "to",
                &self.nodes[y].ip,
                "ipproto",
                "tcp",
                "dport",
                port,
                "blackhole",
            ])?;
        }
        Ok(())
    }

    /// Remove every cut made by [`Cluster::partition`] and [`Cluster::cut_peer_port`].
    pub fn heal(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            if let Some(ns) = &node.netns {
                ip(&["-n", ns, "route", "flush", "type", "blackhole"])?;
                while ip(&["-n", ns, "rule", "del", "priority", PEER_CUT_PRIORITY]).is_ok() {}
            }
        }
        Ok(())
    }

    /// Start a node on a data directory that `seed(dir, api, peer)` prepares first (a
    /// restore from a backup), on fixed free addresses of this cluster's network; `seed`
    /// answers the admin token, which becomes this harness's. Waits until the node leads.
    pub async fn start_seeded<F>(&mut self, seed: F) -> anyhow::Result<usize>
    where
        F: FnOnce(&Path, &str, &str) -> anyhow::Result<String>,
    {
        let i = self.add_node(vec![]);
        let ip = self.nodes[i].ip.clone();
        let free = || -> anyhow::Result<String> {
            let l = std::net::TcpListener::bind(format!("{ip}:0"))?;
            Ok(l.local_addr()?.to_string())
        };
        let (api, peer) = (free()?, free()?);
        self.token = seed(&self.nodes[i].data_dir, &api, &peer)?;
        self.nodes[i].api = Some(api);
        self.nodes[i].peer = Some(peer);
        self.nodes[i].start()?;
        self.wait_leader(Duration::from_secs(30)).await?;
        Ok(i)
    }

    fn add_node(&mut self, args: Vec<String>) -> usize {
        let i = self.nodes.len();
        let name = format!("n{}", i + 1);
        let (netns, ip) = match &mut self.netns {
            Some(n) => {
                let (ns, addr) = n.add(i).expect("create the node's network namespace");
                (Some(ns), addr)
            }
            None => (None, format!("127.{}.{}.{}", self.net.0, self.net.1, i + 1)),
        };
        let data_dir = self.dir.join(&name);
        let mut all: Vec<String> = self
            .common_args
            .iter()
            .map(|a| {
                a.replace("{ip}", &ip)
                    .replace("{dir}", &data_dir.display().to_string())
            })
            .collect();
        all.extend(args);
        let env = self
            .common_env
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.replace("{dir}", &data_dir.display().to_string()),
                )
            })
            .collect();
        self.nodes.push(NodeProc {
            env,
            ip,
            data_dir,
            log: self.dir.join(format!("{name}.log")),
            name,
            child: None,
            api: None,
            peer: None,
            tls: false,
            args: all,
            netns,
        });
        i
    }

    /// Start node 1 on an empty data dir (bootstrap) and read its admin token.
    pub async fn bootstrap(&mut self) -> anyhow::Result<()> {
        let i = self.add_node(vec![]);
        self.nodes[i].start()?;
        let path = self.nodes[i].data_dir.join("admin-token");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(t) = std::fs::read_to_string(&path) {
                if !t.trim().is_empty() {
                    self.token = t.trim().to_string();
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("no admin token written");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Over TLS, this client trusts the cluster CA (and nothing else) from now on.
        if self.nodes[i].tls {
            self.ca_pem = Some(std::fs::read(self.nodes[i].data_dir.join("pki/ca.pem"))?);
            self.http = self
                .http_builder()
                .timeout(Duration::from_secs(30))
                .build()?;
        }
        // Bootstrap is complete when the admin token authenticates.
        self.wait_until(
            Duration::from_secs(30),
            "bootstrap complete",
            |c| async move { c.get_json::<ClusterInfo>(0, "/v1/cluster").await.is_ok() },
        )
        .await
    }

    /// Create a join token and start a new node that joins through node `via`.
    pub async fn join(&mut self, via: usize, learner: bool) -> anyhow::Result<usize> {
        self.join_with(via, learner, &[]).await
    }

    /// [`Cluster::join`] with extra `rackd up` arguments for the new node; `{ip}` and `{dir}`
    /// in them are replaced by the node's loopback address and data directory.
    pub async fn join_with(
        &mut self,
        via: usize,
        learner: bool,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        // A location learner's token names its site (it is bound to it, and gets that
        // location's secrets' key only).
        let site = extra
            .windows(2)
            .find(|w| w[0] == "--location")
            .map(|w| w[1].to_string());
        let body = match (learner, site) {
            (true, Some(l)) => serde_json::json!({"ttl_secs": 600, "location": l}),
            _ => serde_json::json!({"ttl_secs": 600}),
        };
        let tok: rackd_types::CreatedJoinToken =
            self.post_json(via, "/v1/tokens/join", &body).await?;
        let mut args = vec![
            "--join".into(),
            self.nodes[via].url(),
            "--token".into(),
            tok.token,
        ];
        if learner {
            args.push("--learner".into());
        }
        let i = self.add_node(args);
        let (ip, dir) = (
            self.nodes[i].ip.clone(),
            self.nodes[i].data_dir.display().to_string(),
        );
        for e in extra {
            self.nodes[i]
                .args
                .push(e.replace("{ip}", &ip).replace("{dir}", &dir));
        }
        self.nodes[i].start()?;
        let want = if learner { "learner" } else { "voter" };
        let id_of = |dir: &Path| -> Option<u64> {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("node.json")).ok()?).ok()?;
            if v["complete"].as_bool() == Some(true) {
                v["node_id"].as_u64()
            } else {
                None
            }
        };
        let dir = self.nodes[i].data_dir.clone();
        self.wait_until(Duration::from_secs(60), "join complete", move |c| {
            let dir = dir.clone();
            async move {
                let Some(id) = id_of(&dir) else { return false };
                match c.get_json::<ClusterInfo>(via, "/v1/cluster").await {
                    Ok(ci) => ci.members.iter().any(|m| m.id == id && m.role == want),
                    Err(_) => false,
                }
            }
        })
        .await?;
        Ok(i)
    }

    /// Bootstrap one node and join `n - 1` voters.
    pub async fn start(test: &str, n: usize, common_args: &[&str]) -> anyhow::Result<Self> {
        let mut c = Self::new(test);
        c.common_args = common_args.iter().map(|s| s.to_string()).collect();
        c.bootstrap().await?;
        for _ in 1..n {
            c.join(0, false).await?;
        }
        Ok(c)
    }

    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// A client builder for this cluster's API: it trusts the cluster CA (and nothing else)
    /// when the nodes serve TLS.
    pub fn http_builder(&self) -> reqwest::ClientBuilder {
        api_client_builder(self.ca_pem.as_deref())
    }

    pub async fn health(&self, i: usize) -> anyhow::Result<Health> {
        let r = self
            .http
            .get(format!("{}/v1/health", self.url(i)))
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        Ok(r.json().await?)
    }

    /// Raw request with the admin token; returns (status, JSON body; a text body as a string).
    pub async fn request(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.url(i), path))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await?;
        let status = r.status().as_u16();
        // Metrics are text; every other answer is JSON.
        let plain = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/plain"));
        let text = r.text().await?;
        let v = if text.is_empty() {
            serde_json::Value::Null
        } else if plain {
            serde_json::Value::String(text)
        } else {
            serde_json::from_str(&text).with_context(|| format!("non-JSON body {text:?}"))?
        };
        Ok((status, v))
    }

    /// The typed API client (the CLI's, `rackd::client`) for node `i`, with the admin token,
    /// sharing this cluster's connection pool. Its writes carry one `Idempotency-Key` for all
    /// attempts and are retried through `503 Unavailable` (elections) and restarts for up to
    /// 20 s, so a retried write is applied at most once.
    pub fn client(&self, i: usize) -> Client {
        Client::with_http(&self.url(i), Some(self.token.clone()), self.http.clone())
            .with_retry(Duration::from_secs(20))
            .retry_unreachable()
    }

    /// Run the `rackd` CLI against node `i` with the admin token (blocking).
    pub fn cli<I, S>(&self, i: usize, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = Command::new(rackd_bin())
            .args(args)
            .env("RACKD_SERVER", self.url(i))
            .env("RACKD_TOKEN", &self.token)
            .output()
            .expect("run the rackd CLI");
        CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// GET once (no retry: tests measure and count failed reads).
    pub async fn get_json<T: DeserializeOwned>(&self, i: usize, path: &str) -> anyhow::Result<T> {
        self.client(i)
            .with_retry(Duration::ZERO)
            .get(path)
            .await
            .with_context(|| format!("GET {path} on node {i}"))
    }

    /// POST like a careful client (see [`Cluster::client`]).
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        i: usize,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.client(i)
            .post(path, body)
            .await
            .with_context(|| format!("POST {path} on node {i}"))
    }

    /// Index of the node that is leader according to the running nodes.
    pub async fn leader(&mut self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            if let Ok(h) = self.health(i).await {
                if h.raft_state == "leader" {
                    return Some(i);
                }
            }
        }
        None
    }

    pub async fn wait_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll `cond` until it holds or the timeout passes.
    pub async fn wait_until<'a, F, Fut>(
        &'a self,
        timeout: Duration,
        what: &str,
        mut cond: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut(&'a Cluster) -> Fut,
        Fut: std::future::Future<Output = bool> + 'a,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        // The namespaces go after their processes: the `netns` field is dropped after this.
        if std::thread::panicking() {
            if let Some(t) = self._tmp.take() {
                let p = t.keep();
                eprintln!("test failed: node data and logs kept in {}", p.display());
                for n in &self.nodes {
                    if let Ok(log) = std::fs::read_to_string(&n.log) {
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        eprintln!("--- last lines of {} ---", n.log.display());
                        for l in tail.iter().rev() {
                            eprintln!("{l}");
                        }
                    }
                }
            }
        }
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:` …) in KiB; `None` when the process
/// is gone or has no such field.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
