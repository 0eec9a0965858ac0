//! The node runtime: bind listeners, open storage, start Raft and the servers, then finish
//! bootstrap or join in the background. Runs until SIGTERM/SIGINT.
//!
//! Restart safety: the cluster is initialized only when `node.json` says this node bootstraps
//! *and* Raft's own persisted state says it is uninitialized; a data directory that holds state
//! is always resumed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, ReadPolicy, ServerState, SnapshotPolicy};
use rackd_raft::cmd::{Command, Request};
use rackd_raft::network::{PeerNetwork, PeerService};
use rackd_raft::NodeInfo;
use rackd_storage::StateMachineStore;
use rackd_types::{ApiError, CreatedJoinToken, ErrorCode, JoinRequest, JoinResponse};
use serde_json::Value;

use crate::identity::{Identity, Origin};
use crate::{hash_secret, new_secret, now_ms, Raft};

/// Everything `rackd up` needs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub api_listen: String,
    pub peer_listen: String,
    pub advertise_api: Option<String>,
    pub advertise_peer: Option<String>,
    pub join: Option<String>,
    pub token: Option<String>,
    pub learner: bool,
    /// Build a snapshot every this many applied log entries (and keep as many in the log).
    pub snapshot_logs: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// How long a write waits for a quorum before it is answered 503.
    pub write_timeout: Duration,
    /// The location (site) whose boot services this node runs.
    pub location: Option<String>,
    pub tftp_listen: Option<String>,
    pub tftp_root: Option<PathBuf>,
    pub dhcp: Option<crate::location::DhcpOptions>,
    pub http_boot_listen: Option<String>,
    /// Base URL machines use to reach the HTTP boot server (default: its bound address).
    pub http_boot_base: Option<String>,
    /// Image artifacts served at /artifacts (default DATA_DIR/artifacts).
    pub artifacts_dir: Option<PathBuf>,
    /// Power tasks and the power-state sync of a location node.
    pub power: crate::executor::PowerOptions,
    /// The IPMI proxy (UDP relay to the location's BMCs); off when unset.
    pub ipmi_proxy: Option<crate::ipmi_proxy::ProxyOptions>,
}

impl NodeOptions {
    /// The TFTP root (also served over HTTP): `--tftp-root` or DATA_DIR/tftp.
    pub fn tftp_root(&self) -> PathBuf {
        self.tftp_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tftp"))
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("rackd-data"),
            api_listen: "127.0.0.1:7080".into(),
            peer_listen: "127.0.0.1:7081".into(),
            advertise_api: None,
            advertise_peer: None,
            join: None,
            token: None,
            learner: false,
            snapshot_logs: 10_000,
            heartbeat_ms: 100,
            election_timeout_ms: 500,
            write_timeout: Duration::from_secs(10),
            location: None,
            tftp_listen: None,
            tftp_root: None,
            dhcp: None,
            http_boot_listen: None,
            http_boot_base: None,
            artifacts_dir: None,
            power: crate::executor::PowerOptions::default(),
            ipmi_proxy: None,
        }
    }
}

/// A running node, shared by the API handlers.
pub struct Node {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub net: PeerNetwork,
    pub http: reqwest::Client,
    pub api_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub write_timeout: Duration,
    /// Set once this node learned that the cluster removed it (Raft is then shut down).
    pub removed: std::sync::atomic::AtomicBool,
}

impl Node {
    /// The current leader's id and addresses, as this node knows them.
    pub fn leader(&self) -> Option<(u64, NodeInfo)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let info = m.membership_config.get_node(&id)?.clone();
        Some((id, info))
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.id)
    }

    /// Wait (bounded) until some leader is known.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<(u64, NodeInfo)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Propose a command on this node, which must be the leader. Time is stamped here.
    pub async fn propose(
        &self,
        actor: &str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> Result<Value, ApiError> {
        let req = Request {
            time_ms: now_ms(),
            actor: actor.to_string(),
            idempotency_key,
            cmd,
        };
        match tokio::time::timeout(self.write_timeout, self.raft.client_write(req)).await {
            Err(_) => Err(ApiError::unavailable(format!(
                "write not confirmed by a quorum within {}s; it is not reported as done",
                self.write_timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(ApiError::unavailable(format!("write not confirmed: {e}"))),
            Ok(Ok(resp)) => resp.data.0,
        }
    }

    /// Propose a command wherever the leader is (cluster-internal writes, e.g. discovery):
    /// locally when leading, else through the leader's `Propose` RPC. Retried until the write
    /// timeout; use an idempotency key so a retry is applied at most once.
    pub async fn propose_anywhere(
        &self,
        actor: &str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((leader, info)) = self.wait_leader(remaining).await else {
                return Err(ApiError::unavailable("no leader"));
            };
            let err = if leader == self.id {
                match self
                    .propose(actor, idempotency_key.clone(), cmd.clone())
                    .await
                {
                    Err(e) if e.code == ErrorCode::Unavailable => e.message,
                    other => return other,
                }
            } else {
                let req = rackd_raft::network::ProposeRequest {
                    actor: actor.to_string(),
                    idempotency_key: idempotency_key.clone(),
                    cmd: cmd.clone(),
                };
                match self.net.propose(leader, &info.peer, &req, remaining).await {
                    Ok(resp) => return resp.0,
                    Err(e) => e,
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::unavailable(format!("write not confirmed: {err}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Make the next local read linearizable: obtain a ReadIndex from the leader (or confirm
    /// our own leadership) and wait until the local state machine has applied it.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        let timeout = self.write_timeout;
        let (leader, info) = self.wait_leader(timeout).await.ok_or_else(|| {
            ApiError::unavailable("no leader: cannot serve a linearizable read (use ?stale=true)")
        })?;
        let index = if leader == self.id {
            let r = tokio::time::timeout(
                timeout,
                self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| ApiError::unavailable("leadership not confirmed in time"))?
            .map_err(|e| ApiError::unavailable(format!("leadership not confirmed: {e}")))?;
            r.log_id().index()
        } else {
            self.net
                .read_index(leader, &info.peer, timeout)
                .await
                .map_err(|e| {
                    ApiError::unavailable(format!("read index from leader {leader}: {e}"))
                })?
        };
        if !self.sm.wait_applied(index, timeout).await {
            return Err(ApiError::unavailable(format!(
                "local replica did not reach index {index} in time"
            )));
        }
        Ok(())
    }
}

/// Start a node and run until a shutdown signal.
pub async fn run(opts: NodeOptions) -> anyhow::Result<()> {
    let dir = opts.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("create data dir {}", dir.display()))?;
    let api_listener = tokio::net::TcpListener::bind(&opts.api_listen)
        .await
        .with_context(|| format!("bind API address {}", opts.api_listen))?;
    let peer_listener = tokio::net::TcpListener::bind(&opts.peer_listen)
        .await
        .with_context(|| format!("bind peer address {}", opts.peer_listen))?;
    let api_addr = opts
        .advertise_api
        .clone()
        .unwrap_or(api_listener.local_addr()?.to_string());
    let peer_addr = opts
        .advertise_peer
        .clone()
        .unwrap_or(peer_listener.local_addr()?.to_string());
    std::fs::write(dir.join("api.addr"), &api_addr)?;
    std::fs::write(dir.join("peer.addr"), &peer_addr)?;

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("build HTTP client")?;

    let identity = match Identity::load(&dir)? {
        Some(id) if id.removed => anyhow::bail!(
            "node {} was removed from cluster {}; it does not start again on this data \
             directory. To add this machine back, start it with an empty data directory and a \
             new join token",
            id.node_id,
            id.cluster_id.as_deref().unwrap_or("?")
        ),
        Some(id) => {
            if opts.join.is_some() && id.complete {
                tracing::warn!(
                    "data directory already belongs to node {}; ignoring --join",
                    id.node_id
                );
            }
            id
        }
        None if dir.join("db").exists() => anyhow::bail!(
            "{} holds a Raft database but no node.json: this node's identity is lost, and \
             starting it as a new node would reuse another member's vote and log. Restore \
             node.json from a backup, or remove this member from the cluster and start with an \
             empty data directory",
            dir.display()
        ),
        None => match &opts.join {
            None => {
                let id = Identity {
                    version: crate::identity::IDENTITY_VERSION,
                    node_id: rackd_raft::state::cluster::BOOTSTRAP_NODE_ID,
                    origin: Origin::Bootstrap,
                    complete: false,
                    cluster_id: None,
                    removed: false,
                };
                id.save(&dir)?;
                id
            }
            Some(url) => {
                let token = opts.token.clone().context("--join needs --token")?;
                // Transient failures (no leader yet, leader busy, connection refused) are
                // retried; a rejected token is final.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let resp = loop {
                    match join_call(
                        &http,
                        url,
                        &token,
                        &api_addr,
                        &peer_addr,
                        opts.learner,
                        None,
                    )
                    .await
                    {
                        Ok(r) => break r,
                        Err(e) if e.to_string().starts_with("join rejected") => return Err(e),
                        Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "join (phase 1) failed; retrying"
                            );
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                };
                let id = Identity {
                    version: crate::identity::IDENTITY_VERSION,
                    node_id: resp.node_id,
                    origin: Origin::Join {
                        join_url: url.clone(),
                        learner: opts.learner,
                    },
                    complete: false,
                    cluster_id: Some(resp.cluster_id),
                    removed: false,
                };
                id.save(&dir)?;
                eprintln!("rackd: allocated node id {} by the cluster", resp.node_id);
                id
            }
        },
    };
    tracing::info!(node_id = identity.node_id, %api_addr, %peer_addr, "starting node");

    let (log, sm) = rackd_storage::open(&dir).await.context("open storage")?;
    // The node id is also kept in the database: a node.json from another node (or a restored
    // old one) can never run this database under the wrong identity.
    if let Err(stored) = log
        .bind_node_id(identity.node_id)
        .context("node id in the database")?
    {
        anyhow::bail!(
            "the database in {} belongs to node {stored}, but node.json says node {}; restore \
             this node's own node.json",
            dir.display(),
            identity.node_id
        );
    }
    let config = Config {
        cluster_name: "rackd".into(),
        heartbeat_interval: opts.heartbeat_ms,
        election_timeout_min: opts.election_timeout_ms,
        // openraft's leader lease equals election_timeout_max: voters refuse to elect anyone
        // before it expires, so a narrow window keeps failover short (~lease + one timeout).
        election_timeout_max: opts.election_timeout_ms * 8 / 5,
        install_snapshot_timeout: 120_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_logs),
        max_in_snapshot_log_to_keep: opts.snapshot_logs.min(1000),
        max_payload_entries: 1000,
        ..Default::default()
    }
    .validate()
    .context("raft config")?;
    let net = PeerNetwork::new();
    let raft = Raft::new(
        identity.node_id,
        Arc::new(config),
        net.clone(),
        log,
        sm.clone(),
    )
    .await
    .context("start raft")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = {
        let svc = PeerService::new(raft.clone()).into_server();
        let mut rx = stop_rx.clone();
        let incoming =
            tonic::transport::server::TcpIncoming::from(peer_listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        })
    };

    let node = Arc::new(Node {
        id: identity.node_id,
        raft: raft.clone(),
        sm,
        net,
        http: http.clone(),
        api_addr: api_addr.clone(),
        peer_addr: peer_addr.clone(),
        data_dir: dir.clone(),
        write_timeout: opts.write_timeout,
        removed: std::sync::atomic::AtomicBool::new(false),
    });
    let api = {
        let app = crate::api::router(node.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(api_listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        })
    };

    let _tftp = match &opts.tftp_listen {
        None => None,
        Some(listen) => Some(start_tftp(&opts, listen).await?),
    };

    let mut http_base = None;
    let _http_boot = match &opts.http_boot_listen {
        None => None,
        Some(listen) => {
            let location = opts
                .location
                .clone()
                .context("--http-boot-listen needs --location")?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("bind HTTP boot {listen}"))?;
            let bound = listener.local_addr()?;
            std::fs::write(dir.join("http-boot.addr"), bound.to_string())?;
            http_base = Some(format!("http://{bound}"));
            let tftp_root = opts.tftp_root();
            std::fs::create_dir_all(&tftp_root)
                .with_context(|| format!("create {}", tftp_root.display()))?;
            let artifacts = opts
                .artifacts_dir
                .clone()
                .unwrap_or_else(|| dir.join("artifacts"));
            std::fs::create_dir_all(&artifacts)
                .with_context(|| format!("create {}", artifacts.display()))?;
            let app = crate::http_boot::router(Arc::new(crate::http_boot::BootState {
                sm: node.sm.clone(),
                node: node.clone(),
                location,
                tftp_root,
                artifacts,
                base: opts
                    .http_boot_base
                    .clone()
                    .unwrap_or_else(|| format!("http://{bound}")),
            }));
            tracing::info!(%bound, "HTTP boot server started");
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTP boot server stopped");
                }
            })))
        }
    };
    let _dhcp = match &opts.dhcp {
        None => None,
        Some(d) => {
            let location = opts
                .location
                .clone()
                .context("--dhcp-interface needs --location")?;
            let mut d = d.clone();
            if d.http_base.is_none() {
                d.http_base = http_base.clone();
            }
            if opts.tftp_listen.is_some() {
                // The first-stage script iPXE clients get over TFTP with --ipxe-via-tftp.
                std::fs::write(
                    opts.tftp_root()
                        .join(rackd_net::dhcp::boot::IPXE_TFTP_SCRIPT),
                    rackd_net::dhcp::boot::ipxe_tftp_script(&d.http_base()),
                )
                .context("write boot.ipxe into the TFTP root")?;
            }
            let ra = if d.router_advertisements {
                match rackd_net::ra::RaSender::start(&d.interface, Duration::from_secs(3)) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(interface = %d.interface, error = %e, "cannot send router advertisements");
                        None
                    }
                }
            } else {
                None
            };
            Some((
                AbortOnDrop(crate::location::start_dhcp(node.clone(), &location, &d)?),
                ra,
            ))
        }
    };

    let _executor = opts.location.clone().map(|loc| {
        AbortOnDrop(crate::executor::Executor::new(node.clone(), loc, opts.power.clone()).spawn())
    });
    let _ipmi_proxy = match (&opts.location, &opts.ipmi_proxy) {
        (Some(loc), Some(p)) => Some(AbortOnDrop(
            crate::ipmi_proxy::start(node.clone(), loc.clone(), p.clone()).await?,
        )),
        (None, Some(_)) => anyhow::bail!("--ipmi-proxy-listen needs --location"),
        _ => None,
    };

    let _readvertise = AbortOnDrop(tokio::spawn(readvertise(node.clone())));
    let _address_book = AbortOnDrop(tokio::spawn(follow_addresses(node.clone())));
    let _removal = AbortOnDrop(tokio::spawn(crate::removal::watch(node.clone())));

    if !identity.complete {
        let node = node.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let r = match identity.origin.clone() {
                Origin::Bootstrap => bootstrap(&node, identity.clone()).await,
                Origin::Join { join_url, learner } => {
                    finish_join(
                        &node,
                        identity.clone(),
                        &join_url,
                        opts.token.as_deref(),
                        learner,
                    )
                    .await
                }
            };
            if let Err(e) = r {
                tracing::error!(error = format!("{e:#}"), "bootstrap/join did not finish");
                eprintln!("rackd: bootstrap/join did not finish: {e:#}");
            }
        });
    }

    // A removed member stops its location services at once (they would serve a replica that
    // no longer follows the cluster); its API stays up to report the removal.
    let location_services = (_tftp, _http_boot, _dhcp, _executor, _ipmi_proxy);
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = wait_removed(&node) => {
            drop(location_services);
            tracing::warn!("location services stopped: this node was removed from the cluster");
            shutdown_signal().await;
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = raft.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    Ok(())
}

/// Returns once this node learned that the cluster removed it.
async fn wait_removed(node: &Node) {
    while !node.removed.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start the TFTP server of the location services; returns its task (aborted on drop).
async fn start_tftp(opts: &NodeOptions, listen: &str) -> anyhow::Result<AbortOnDrop> {
    let root = opts.tftp_root();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("create TFTP root {}", root.display()))?;
    install_ipxe_binaries(&root, std::path::Path::new(IPXE_DIR));
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("TFTP address {listen}"))?;
    let server = rackd_net::tftp::TftpServer::bind(addr, &root, rackd_net::tftp::Limits::default())
        .await
        .with_context(|| format!("bind TFTP {listen}"))?;
    let bound = server.local_addr()?;
    std::fs::write(opts.data_dir.join("tftp.addr"), bound.to_string())?;
    tracing::info!(%bound, root = %root.display(), location = ?opts.location, "TFTP server started");
    Ok(AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "TFTP server stopped");
        }
    })))
}

/// Where Debian's `ipxe` package installs the iPXE first stages.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// First stages handed to PXE ROMs (see `rackd_net::dhcp::boot::first_stage`).
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe.pxe"];

/// Copy the iPXE first stages into the TFTP root where they are missing (copies, not
/// symlinks: the TFTP server refuses symlinks that leave its root). Files an operator put there
/// are never overwritten.
pub fn install_ipxe_binaries(root: &std::path::Path, from: &std::path::Path) {
    for f in IPXE_FILES {
        let (src, dst) = (from.join(f), root.join(f));
        if dst.exists() || !src.is_file() {
            continue;
        }
        match std::fs::copy(&src, &dst) {
            Ok(_) => {
                tracing::info!(file = %f, from = %src.display(), "installed iPXE first stage into the TFTP root")
            }
            Err(e) => tracing::warn!(file = %f, error = %e, "could not copy iPXE binary"),
        }
    }
    if !root.join("undionly.kpxe").exists() {
        tracing::warn!(root = %root.display(), "no undionly.kpxe in the TFTP root: BIOS PXE clients cannot chain to iPXE (apt-get install ipxe)");
    }
}

/// Aborts a background task when dropped.
/// A task that is aborted when its handle is dropped.
pub(crate) struct AbortOnDrop<T = ()>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Initialize a new single-node cluster (once), apply the Bootstrap command, write the admin
/// token file and print the tokens.
async fn bootstrap(node: &Node, mut identity: Identity) -> anyhow::Result<()> {
    if !node.raft.is_initialized().await? {
        let mut members = BTreeMap::new();
        members.insert(
            node.id,
            NodeInfo {
                api: node.api_addr.clone(),
                peer: node.peer_addr.clone(),
            },
        );
        node.raft
            .initialize(members)
            .await
            .context("initialize cluster")?;
    }
    node.raft
        .wait(Some(Duration::from_secs(60)))
        .state(ServerState::Leader, "bootstrap leader")
        .await
        .context("become leader after bootstrap")?;

    let token_path = node.data_dir.join("admin-token");
    let admin = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = new_secret("rackd-admin-");
            write_secret_file(&token_path, &t)?;
            t
        }
    };
    // Read after a linearizable barrier: a Bootstrap entry committed before a crash may not be
    // re-applied yet, and proposing a second one would fail forever.
    node.linearize()
        .await
        .map_err(|e| anyhow::anyhow!("read barrier before bootstrap: {e}"))?;
    let existing = node.sm.read().state.cluster_id().to_string();
    let cluster_id = if existing.is_empty() {
        let cid = new_secret("")[..16].to_string();
        node.propose(
            "system",
            None,
            Command::Bootstrap {
                cluster_id: cid.clone(),
                admin_token_hash: hash_secret(&admin),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap command: {e}"))?;
        cid
    } else {
        existing
    };
    let join = create_join_token(node, "system", None, 3600, "created at bootstrap")
        .await
        .map_err(|e| anyhow::anyhow!("create join token: {e}"))?;
    identity.complete = true;
    identity.cluster_id = Some(cluster_id.clone());
    identity.save(&node.data_dir)?;
    println!(
        "rackd: bootstrapped new cluster {cluster_id} (node {})",
        node.id
    );
    println!("admin token: {admin}");
    println!(
        "  (saved to {}, mode 0600; export RACKD_TOKEN=$(cat {}))",
        token_path.display(),
        token_path.display()
    );
    println!("join token:  {} (one node, expires in 1h)", join.token);
    println!(
        "add a node:  rackd join http://{} --token {} --data-dir DIR --api HOST:PORT --peer HOST:PORT",
        node.api_addr, join.token
    );
    Ok(())
}

/// Keeps the peer network's address book equal to the replicated membership, so existing
/// replication streams follow a member that moved.
async fn follow_addresses(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut seen = None;
    loop {
        // Metrics change with every applied entry; the book only when the membership does.
        let book: Option<Vec<(u64, String)>> = {
            let m = rx.borrow_watched();
            let at = *m.membership_config.log_id();
            (seen != Some(at)).then(|| {
                seen = Some(at);
                m.membership_config
                    .membership()
                    .nodes()
                    .map(|(id, i)| (*id, i.peer.clone()))
                    .collect()
            })
        };
        if let Some(book) = book {
            node.net.set_addresses(book);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A member that restarted on new addresses (a new DHCP lease, a moved VM) asks the leader to
/// record them, retrying until the replicated membership shows this node's current addresses.
async fn readvertise(node: Arc<Node>) {
    let me = NodeInfo {
        api: node.api_addr.clone(),
        peer: node.peer_addr.clone(),
    };
    loop {
        let m = node.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if let Some(old) = membership.get_node(&node.id).filter(|i| **i != me) {
            let done = if m.current_leader == Some(node.id) {
                node.raft
                    .change_membership(
                        openraft::ChangeMembers::SetNodes(BTreeMap::from([(node.id, me.clone())])),
                        false,
                    )
                    .await
                    .is_ok()
            } else {
                // The leader first (if known), then every other member: non-leaders refuse.
                let mut targets: Vec<(u64, String)> = m
                    .current_leader
                    .and_then(|l| membership.get_node(&l).map(|i| (l, i.peer.clone())))
                    .into_iter()
                    .collect();
                targets.extend(
                    membership
                        .nodes()
                        .filter(|(id, _)| **id != node.id)
                        .map(|(id, i)| (*id, i.peer.clone())),
                );
                let mut ok = false;
                for (target, addr) in targets {
                    let r = node
                        .net
                        .update_node(target, &addr, node.id, &me, Duration::from_secs(5))
                        .await;
                    if r.is_ok() {
                        ok = true;
                        break;
                    }
                }
                ok
            };
            if done {
                tracing::info!(
                    old_api = %old.api, old_peer = %old.peer, api = %me.api, peer = %me.peer,
                    "re-advertised this node's new addresses"
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn write_secret_file(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Create a join token on the leader (this node must be the leader).
pub async fn create_join_token(
    node: &Node,
    actor: &str,
    idempotency_key: Option<String>,
    ttl_secs: u64,
    description: &str,
) -> Result<CreatedJoinToken, ApiError> {
    let token = new_secret("rackd-join-");
    let hash = hash_secret(&token);
    let v = node
        .propose(
            actor,
            idempotency_key,
            Command::CreateJoinToken {
                token_hash: hash.clone(),
                ttl_ms: ttl_secs.saturating_mul(1000),
                description: description.to_string(),
            },
        )
        .await?;
    let view: rackd_types::JoinTokenView =
        serde_json::from_value(v).map_err(|e| ApiError::internal(format!("decode: {e}")))?;
    let ours = node
        .sm
        .read()
        .state
        .join_tokens
        .get(&view.id)
        .is_some_and(|t| t.hash == hash);
    if !ours {
        return Err(ApiError::conflict(format!(
            "join token {} was already created with this Idempotency-Key; its secret cannot be \
             shown again (create a new one)",
            view.id
        )));
    }
    Ok(CreatedJoinToken {
        id: view.id,
        token,
        expires_at: view.expires_at,
    })
}

/// POST `{url}/v1/cluster/join`.
pub async fn join_call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    api: &str,
    peer: &str,
    learner: bool,
    node_id: Option<u64>,
) -> anyhow::Result<JoinResponse> {
    let body = JoinRequest {
        token: token.to_string(),
        api_addr: api.to_string(),
        peer_addr: peer.to_string(),
        learner,
        node_id,
    };
    let url = format!("{}/v1/cluster/join", url.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .timeout(Duration::from_secs(300))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = serde_json::from_str::<rackd_types::ErrorBody>(&text)
            .map(|b| format!("{:?}: {}", b.error.code, b.error.message))
            .unwrap_or(text);
        if status.as_u16() == ErrorCode::JoinRejected.http_status() {
            bail!("join rejected: {msg}");
        }
        bail!("join failed ({status}): {msg}");
    }
    serde_json::from_str(&text).context("decode join response")
}

/// Phase 2 of join: ask the leader to add us (learner, catch up, then voter). Retries until the
/// cluster accepts us or rejects the token.
async fn finish_join(
    node: &Node,
    mut identity: Identity,
    url: &str,
    token: Option<&str>,
    learner: bool,
) -> anyhow::Result<()> {
    let token = token.context("resuming an unfinished join needs --token")?;
    let mut delay = Duration::from_millis(200);
    loop {
        match join_call(
            &node.http,
            url,
            token,
            &node.api_addr,
            &node.peer_addr,
            learner,
            Some(node.id),
        )
        .await
        {
            Ok(resp) => {
                identity.complete = true;
                identity.cluster_id = Some(resp.cluster_id.clone());
                identity.save(&node.data_dir)?;
                println!(
                    "rackd: node {} joined cluster {} as {}",
                    node.id,
                    resp.cluster_id,
                    resp.role.unwrap_or_default()
                );
                return Ok(());
            }
            Err(e) if e.to_string().starts_with("join rejected") => return Err(e),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "join not finished yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipxe_binaries_are_copied_but_never_overwrite() {
        let from = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("undionly.kpxe"), b"debian").unwrap();
        std::fs::write(from.path().join("ipxe.efi"), b"debian-efi").unwrap();
        std::fs::write(root.path().join("ipxe.efi"), b"operator").unwrap();
        super::install_ipxe_binaries(root.path(), from.path());
        assert_eq!(
            std::fs::read(root.path().join("undionly.kpxe")).unwrap(),
            b"debian"
        );
        assert_eq!(
            std::fs::read(root.path().join("ipxe.efi")).unwrap(),
            b"operator"
        );
        assert!(!root.path().join("snponly.efi").exists());
    }
}
