//! The node server: bind listeners, resolve the node's identity, open storage, start Raft, the
//! peer gRPC server, the HTTP API and the location services, then finish bootstrap or join in
//! the background. Runs until SIGTERM/SIGINT.
//!
//! This module wires everything and owns every task; nothing imports it but the CLI. There is
//! one shutdown path ([`Server::shutdown`]): the API and peer servers drain gracefully, the
//! location services ([`ServiceSet`]) and the cluster's background loops are aborted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::{Config, SnapshotPolicy};
use rackd_raft::network::{PeerNetwork, PeerService};
use rackd_raft::peer_tls::PeerAuth;
use rackd_storage::StateMachineStore;

use crate::abort::AbortOnDrop;
use crate::cluster::bootstrap::{self, JoinParams};
use crate::cluster::peer_auth::NodePeerAuth;
use crate::cluster::pki::{NodeTls, Pki};
use crate::cluster::{certs, leadership, membership, removal, rules, ClusterHandle, Raft};
use crate::config::NodeConfig;
use crate::services::{reaper, reseal, ServiceSet};

/// Start a node and run until a shutdown signal.
pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let (before, now) = raise_fd_limit();
    tracing::info!(before, now, "open file limit");
    let dir = cfg.data_dir.clone();
    private_data_dir(&dir)?;
    let api_listener = tokio::net::TcpListener::bind(&cfg.api_listen)
        .await
        .with_context(|| format!("bind API address {}", cfg.api_listen))?;
    let peer_listener = tokio::net::TcpListener::bind(&cfg.peer_listen)
        .await
        .with_context(|| format!("bind peer address {}", cfg.peer_listen))?;
    let api_host = cfg
        .advertise_api
        .clone()
        .unwrap_or(api_listener.local_addr()?.to_string());
    // A node serving TLS advertises its API as an https URL (members and clients pick the
    // scheme from it: `rackd_types::api_url`).
    let api_host = api_host
        .split_once("://")
        .map_or(api_host.as_str(), |(_, h)| h)
        .to_string();
    let api_addr = if cfg.api_tls {
        format!("https://{api_host}")
    } else {
        api_host
    };
    let peer_addr = cfg
        .advertise_peer
        .clone()
        .unwrap_or(peer_listener.local_addr()?.to_string());
    std::fs::write(dir.join("api.addr"), &api_addr)?;
    std::fs::write(dir.join("peer.addr"), &peer_addr)?;

    // Members talk to each other directly: an HTTP(S)_PROXY in the environment (meant for
    // webhooks and the CLI) must not carry forwarded writes.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .context("build HTTP client")?;

    let identity = bootstrap::resolve_identity(
        &dir,
        &http,
        JoinParams {
            join: cfg.join.as_deref(),
            token: cfg.token.as_deref(),
            learner: cfg.learner,
            api_addr: &api_addr,
            peer_addr: &peer_addr,
        },
    )
    .await?;
    tracing::info!(node_id = identity.node_id, %api_addr, %peer_addr, "starting node");

    let tls = node_tls(&dir, &identity)?;
    // From here on the node's own HTTP calls (forwarded writes, join phase 2, removal checks)
    // trust the cluster CA, and only it.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).context("cluster CA")?,
        )
        .build()
        .context("build HTTP client")?;
    let api_tls = if cfg.api_tls {
        let byo = match &cfg.api_cert {
            Some((cert, key)) => Some(
                crate::cluster::pki::byo::ByoCert::new(cert.clone(), key.clone())
                    .context("--api-cert/--api-key")?,
            ),
            None => None,
        };
        Some(
            tls.api_server_config_with(byo)
                .context("API TLS configuration")?,
        )
    } else {
        None
    };
    let blobs = crate::blobs::BlobStore::open(&dir.join("blobs"), cfg.blobs.max_bytes)
        .with_context(|| format!("open the blob store in {}", dir.join("blobs").display()))?;
    let (raft, net, sm, auth) = start_raft(&cfg, identity.node_id, tls.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The QUIC link listens on the UDP port of the peer address.
    let link = crate::cluster::link::Link::start(
        peer_listener.local_addr()?,
        auth.clone(),
        raft.clone(),
        blobs.clone(),
    )?;
    let grpc = serve_peers(&raft, auth, blobs.clone(), peer_listener, stop_rx.clone());

    let node = Arc::new(ClusterHandle {
        id: identity.node_id,
        raft: raft.clone(),
        sm,
        net,
        http: http.clone(),
        api_addr: api_addr.clone(),
        peer_addr: peer_addr.clone(),
        data_dir: dir.clone(),
        tls,
        write_timeout: cfg.write_timeout,
        removed: std::sync::atomic::AtomicBool::new(false),
        link,
    });
    let api = serve_api(
        crate::api::router(
            crate::api::AppState::new(node.clone(), http.clone(), blobs.clone())
                .with_stop(stop_rx.clone()),
        ),
        api_listener,
        cfg.api_limits.clone(),
        api_tls,
        stop_rx,
    );

    let services = ServiceSet::start(
        (cfg.location.as_ref(), cfg.ipmi_proxy.as_ref()),
        &dir,
        node.clone(),
        blobs.clone(),
        Some(node.link.clone()),
    )
    .await?;

    let mut background = vec![
        AbortOnDrop(tokio::spawn(membership::readvertise(node.clone()))),
        AbortOnDrop(tokio::spawn(membership::follow_addresses(node.clone()))),
        AbortOnDrop(tokio::spawn(removal::watch(node.clone()))),
        AbortOnDrop(tokio::spawn(leadership::watch(node.clone()))),
        AbortOnDrop(tokio::spawn(rules::run(
            node.clone(),
            Duration::from_secs(1),
        ))),
        AbortOnDrop(tokio::spawn(certs::run(node.clone(), cfg.cert_check))),
        AbortOnDrop(tokio::spawn(reseal::run(
            node.clone(),
            Duration::from_secs(5),
        ))),
        AbortOnDrop(tokio::spawn(crate::services::blobs::run(
            node.clone(),
            blobs.clone(),
            cfg.blobs.clone(),
            cfg.location.as_ref().map(|l| l.name.clone()),
        ))),
    ];
    {
        let cluster: Arc<dyn crate::cluster::Cluster> = node.clone();
        background.push(AbortOnDrop(tokio::spawn(crate::services::webhooks::run(
            cluster.clone(),
            crate::services::webhooks::http_client(),
        ))));
        background.push(AbortOnDrop(tokio::spawn(crate::services::node_watch::run(
            cluster,
            Duration::from_secs(1),
        ))));
    }
    if let Some(limit) = cfg.task_lost {
        let cluster: Arc<dyn crate::cluster::Cluster> = node.clone();
        background.push(AbortOnDrop(tokio::spawn(reaper::run(cluster, limit))));
    }
    if !identity.complete {
        let node = node.clone();
        let token = cfg.token.clone();
        background.push(AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = bootstrap::complete(&node, identity, token.as_deref()).await {
                tracing::error!(error = format!("{e:#}"), "bootstrap/join did not finish");
                eprintln!("rackd: bootstrap/join did not finish: {e:#}");
            }
        })));
    }

    let mut server = Server {
        raft,
        stop_tx,
        api,
        grpc,
        services,
        background,
    };
    // A removed member stops its location services at once (they would serve a replica that
    // no longer follows the cluster); its API stays up to report the removal. A node whose
    // Raft failed (its storage cannot write) stops them too, and exits non-zero with the cause
    // so that its supervisor restarts it: it never serves a frozen replica.
    let failed = tokio::select! {
        _ = shutdown_signal() => None,
        _ = node.wait_removed() => {
            server.stop_services();
            tracing::warn!("location services stopped: this node was removed from the cluster");
            shutdown_signal().await;
            None
        }
        cause = node.wait_failed() => {
            server.stop_services();
            tracing::error!(%cause, "Raft stopped on a failure; location services and the executor stopped, exiting");
            // The API answers only its health, which says why, for a moment before the exit.
            tokio::time::sleep(FAILED_LINGER).await;
            Some(cause)
        }
    };
    server.shutdown().await;
    match failed {
        None => Ok(()),
        Some(cause) => anyhow::bail!(
            "this node can no longer write to its storage ({cause}); it stopped serving and \
             exited: fix the disk, then start it again"
        ),
    }
}

/// Raise this process's open-file limit; returns (soft limit before, soft limit now).
///
/// A boot storm holds two descriptors per TFTP transfer (its socket and its file) and one per
/// HTTP connection, so 1,000 machines booting at once need far more than the usual soft limit
/// of 1,024 (and a PID 1 without systemd hands out a hard limit of 4,096). The soft limit goes
/// up to the hard one and, when the process may (root, as on the appliance), both go up to the
/// kernel's per-process maximum (at most 2^20), as Go's runtime and nginx's
/// `worker_rlimit_nofile` do. Never lowers anything.
/// Everything a node writes is its own: files 0600 and directories 0700 from here on (umask
/// 077: RocksDB's tables and log, snapshots, keys, the admin token), and the data directory
/// 0700, also when it existed with wider rights (made by an older build, or by hand).
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make data dir {} private", dir.display()))?;
        tracing::warn!(
            dir = %dir.display(),
            was = format!("{:o}", mode & 0o777),
            "the data directory was readable by others; it is 0700 now"
        );
    }
    Ok(())
}

pub fn raise_fd_limit() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    let kernel_max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard)
        .min(1 << 20);
    for limit in [kernel_max, hard] {
        if limit <= soft {
            continue;
        }
        if setrlimit(Resource::RLIMIT_NOFILE, limit, limit.max(hard)).is_ok() {
            return (soft, limit);
        }
    }
    (soft, soft)
}

/// How long a node whose Raft failed keeps answering its health (with the cause) before it
/// exits; its supervisor restarts it after that.
const FAILED_LINGER: Duration = Duration::from_secs(3);

/// This node's certificate and key: every node-to-node connection is mutual TLS, so a node
/// without them does not start.
fn node_tls(
    dir: &std::path::Path,
    identity: &crate::cluster::identity::Identity,
) -> anyhow::Result<NodeTls> {
    let cluster_id = identity
        .cluster_id
        .as_deref()
        .context("node.json names no cluster id")?;
    Pki::in_data_dir(dir)
        .load_node(cluster_id, identity.node_id)
        .context("load this node's certificate")?
        .with_context(|| {
            format!(
                "{} has no node certificate (pki/node.pem, pki/node.key): this data directory \
                 predates the cluster PKI, or its join stopped before the certificate was \
                 saved. Start this machine with an empty data directory and a new join token",
                dir.display()
            )
        })
}

/// Open this node's storage (refusing a database of another node) and start Raft on it.
async fn start_raft(
    cfg: &NodeConfig,
    node_id: u64,
    tls: NodeTls,
) -> anyhow::Result<(Raft, PeerNetwork, StateMachineStore, Arc<dyn PeerAuth>)> {
    let dir = &cfg.data_dir;
    let (log, sm) = rackd_storage::open(dir).await.context("open storage")?;
    // The node id is also kept in the database: a node.json from another node (or a restored
    // old one) can never run this database under the wrong identity.
    if let Err(stored) = log
        .bind_node_id(node_id)
        .context("node id in the database")?
    {
        anyhow::bail!(
            "the database in {} belongs to node {stored}, but node.json says node {node_id}; \
             restore this node's own node.json",
            dir.display(),
        );
    }
    let config = Config {
        cluster_name: "rackd".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_ms,
        // openraft's leader lease equals election_timeout_max: voters refuse to elect anyone
        // before it expires, so a narrow window keeps failover short (~lease + one timeout).
        election_timeout_max: cfg.election_timeout_ms * 8 / 5,
        install_snapshot_timeout: 120_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.snapshot_logs.min(1000),
        max_payload_entries: 1000,
        ..Default::default()
    }
    .validate()
    .context("raft config")?;
    let auth: Arc<dyn PeerAuth> = Arc::new(
        NodePeerAuth::new(tls, Pki::in_data_dir(&cfg.data_dir), sm.clone())
            .context("TLS configuration")?,
    );
    let net = PeerNetwork::new(auth.clone());
    let raft = Raft::new(node_id, Arc::new(config), net.clone(), log, sm.clone())
        .await
        .context("start raft")?;
    Ok((raft, net, sm, auth))
}

/// Concurrent RPCs one peer connection may carry (Raft replication uses a handful; forwarded
/// writes and ReadIndex rounds the rest).
const PEER_MAX_STREAMS: u32 = 1024;

/// Serve the peer gRPC service (Raft, forwarding, ReadIndex) over mutual TLS until `stop`
/// turns true.
fn serve_peers(
    raft: &Raft,
    auth: Arc<dyn PeerAuth>,
    blobs: Arc<crate::blobs::BlobStore>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let svc = PeerService::new(raft.clone(), auth.clone())
        .with_blobs(blobs)
        .into_server();
    let incoming = rackd_raft::peer_tls::incoming(listener, auth, Default::default());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(PEER_MAX_STREAMS))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
}

/// Serve the HTTP API (over TLS with `tls`) until `stop` turns true, then drain.
fn serve_api(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    limits: crate::api::listener::Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let stats = std::sync::Arc::new(crate::api::listener::Stats::default());
    tokio::spawn(crate::api::listener::serve(
        listener, app, limits, stats, tls, stop,
    ))
}

/// Every task of a running node.
struct Server {
    raft: Raft,
    stop_tx: tokio::sync::watch::Sender<bool>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    services: ServiceSet,
    background: Vec<AbortOnDrop>,
}

impl Server {
    fn stop_services(&mut self) {
        self.services = ServiceSet::default();
    }

    /// The one shutdown path: stop the location services and background loops, shut Raft
    /// down, then let the API and peer servers drain (bounded).
    async fn shutdown(self) {
        tracing::info!("shutting down");
        drop(self.services);
        drop(self.background);
        let _ = self.stop_tx.send(true);
        let _ = self.raft.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.api).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.grpc).await;
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

#[cfg(test)]
mod tests {
    /// However the process was started, its soft open-file limit ends at least at the hard
    /// limit it had (the storm bench shows what the common soft limit of 1,024 costs: half of
    /// 1,000 TFTP clients had to retransmit). Raising the hard limit needs CAP_SYS_RESOURCE,
    /// which this test may not have.
    #[test]
    fn the_open_file_limit_is_raised() {
        use nix::sys::resource::{getrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let (before, now) = super::raise_fd_limit();
        let (soft_after, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft_after, now);
        assert!(
            now >= hard && now >= before,
            "{before} -> {now}, hard {hard}"
        );
        // Calling it again changes nothing.
        assert_eq!(super::raise_fd_limit(), (now, now));
    }
}
