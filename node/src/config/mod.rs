//! The node's configuration: one validated [`NodeConfig`] built from the command line (or an
//! appliance seed, which becomes the same flags). Every default and every cross-flag rule
//! ("--dhcp-interface needs --location", "joining needs --token", lower bounds on timers) lives
//! here, so the server and the services receive settings that are already consistent.
//!
//! Bottom layer: must not depend on any other module of this crate.

pub mod args;
pub mod file;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use args::UpArgs;

/// Default lease of a running task (`--task-lease-secs`).
pub const DEFAULT_TASK_LEASE: Duration = Duration::from_secs(30);

/// A configuration the node refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} needs {needs}")]
    Needs {
        flag: &'static str,
        needs: &'static str,
    },
    #[error("{flag}: {value:?} is not an address (HOST:PORT with an IP literal)")]
    Address { flag: &'static str, value: String },
}

/// Everything `rackd up` needs, validated.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub api_listen: String,
    pub peer_listen: String,
    pub advertise_api: Option<String>,
    pub advertise_peer: Option<String>,
    pub join: Option<String>,
    pub token: Option<String>,
    pub learner: bool,
    /// Serve the API over TLS: `--api-tls`, or by default on any address but loopback
    /// (`--api-plain-http` turns it off).
    pub api_tls: bool,
    /// The operator's API certificate and key files (`--api-cert`, `--api-key`).
    pub api_cert: Option<(PathBuf, PathBuf)>,
    /// Build a snapshot every this many applied log entries (and keep as many in the log).
    pub snapshot_logs: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Connection limits of the HTTP API.
    pub api_limits: ApiLimits,
    /// How long a write waits for a quorum before it is answered 503.
    pub write_timeout: Duration,
    /// While leader, fail tasks that waited this long for an executor; `None`: never.
    pub task_lost: Option<Duration>,
    /// The location services of this node; `None` when it serves no location.
    pub location: Option<LocationConfig>,
    /// The IPMI proxy (UDP relay to BMCs: its own location's directly, other locations'
    /// through a BMC tunnel to a node of theirs); off when unset.
    pub ipmi_proxy: Option<ProxyConfig>,
    /// How often the node checks whether its certificate is due for renewal.
    pub cert_check: Duration,
    /// The blob store and its keeper.
    pub blobs: BlobConfig,
}

/// The blob store (`DATA_DIR/blobs`) and its keeper (`services::blobs`).
#[derive(Debug, Clone)]
pub struct BlobConfig {
    pub max_bytes: u64,
    pub check: Duration,
    pub orphan_after: Duration,
    /// Age after which the leader forgets a blob no image uses.
    pub gc_after: Duration,
    /// What a location node keeps cached.
    pub cache_bytes: u64,
    /// How often every copy is hashed again.
    pub scrub_every: Duration,
}

/// Connection limits of the HTTP API (see `api::listener`).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub per_source: usize,
    pub header_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 4096,
            per_source: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The location (site) whose boot services this node runs, and which of them it runs.
#[derive(Debug, Clone)]
pub struct LocationConfig {
    pub name: String,
    pub tftp_listen: Option<SocketAddr>,
    /// The TFTP root (also served over HTTP): `--tftp-root` or DATA_DIR/tftp.
    pub tftp_root: PathBuf,
    /// Option bounds and transfer caps of the TFTP server.
    pub tftp_limits: rackd_net::tftp::Limits,
    pub dhcp: Option<DhcpConfig>,
    pub http_boot: Option<HttpBootConfig>,
    /// Power tasks and the power-state sync.
    pub power: PowerConfig,
}

#[derive(Debug, Clone)]
pub struct HttpBootConfig {
    pub listen: String,
    /// Base URL machines use to reach the HTTP boot server (default: its bound address).
    pub base: Option<String>,
    /// Image artifacts served at /artifacts (default DATA_DIR/artifacts).
    pub artifacts_dir: PathBuf,
    /// Files sent at once; further requests queue for a slot.
    pub max_transfers: usize,
    /// A client that keeps the server's writes waiting this long without reading is cut.
    pub stall_window: Duration,
}

/// DHCP settings of a location node.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub interface: String,
    pub listen: SocketAddr,
    pub server_ip: Ipv4Addr,
    /// `--http-boot-base`; when unset the server fills in the HTTP boot server's own address.
    pub http_base: Option<String>,
    pub proxy: bool,
    pub lease_secs: u32,
    /// This node's share of the discovery pools (`--dhcp-pool-share`).
    pub pool_share: rackd_net::dhcp::PoolShare,
    /// How fast unknown machines are recorded (`--dhcp-discovery-*`).
    pub discovery: rackd_net::dhcp::DiscoveryLimit,
    /// Send IPv6 Router Advertisements (lifetime 0) so iPXE does not wait ~13 s for routers.
    pub router_advertisements: bool,
    /// iPXE clients load `boot.ipxe` over TFTP first (it chains their HTTP script).
    pub ipxe_via_tftp: bool,
}

impl DhcpConfig {
    /// Base URL of the HTTP boot server given to iPXE: `--http-boot-base`, else the HTTP boot
    /// server's own address (set by the server), else http://SERVER_IP:8080.
    pub fn http_base(&self) -> String {
        self.http_base
            .clone()
            .unwrap_or_else(|| format!("http://{}:8080", self.server_ip))
    }
}

/// Power control settings of a location node.
#[derive(Debug, Clone)]
pub struct PowerConfig {
    /// Global bound on concurrent BMC sessions of this node.
    pub max_sessions: usize,
    /// Poll machines whose observed power is older than this; `None` turns the sync off.
    pub sync_interval: Option<Duration>,
    /// At most this many sync polls started per second.
    pub sync_rate: u32,
    /// Per-datagram IPMI timeout and retransmissions.
    pub ipmi_timeout: Duration,
    pub ipmi_retries: u32,
    /// Lease of a claimed task; the executor renews it every third of it.
    pub task_lease: Duration,
    /// Power-ons this executor starts are at least this far apart (plus jitter).
    pub power_on_gap: Duration,
    /// Workflows (deploys, releases) this executor runs at once.
    pub max_workflows: usize,
}

impl Default for PowerConfig {
    fn default() -> Self {
        Self {
            max_sessions: 32,
            sync_interval: Some(Duration::from_secs(60)),
            sync_rate: 50,
            ipmi_timeout: Duration::from_millis(1000),
            ipmi_retries: 2,
            task_lease: DEFAULT_TASK_LEASE,
            power_on_gap: Duration::from_millis(250),
            max_workflows: 32,
        }
    }
}

/// The IPMI proxy of a location node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: IpAddr,
    pub base_port: u16,
    pub idle: Duration,
}

/// The default data directory: `$XDG_DATA_HOME/rackd`, `~/.local/share/rackd`, or
/// `/var/lib/rackd`.
pub fn default_data_dir() -> PathBuf {
    if let Ok(x) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(x).join("rackd");
    }
    match std::env::var("HOME") {
        Ok(h) if !h.is_empty() => PathBuf::from(h).join(".local/share/rackd"),
        _ => PathBuf::from("/var/lib/rackd"),
    }
}

fn addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Address {
        flag,
        value: value.to_string(),
    })
}

impl NodeConfig {
    /// Validate the flags of `rackd up` (`join` is the URL of `rackd join URL`, which wins over
    /// `--join`).
    pub fn from_args(args: UpArgs, join: Option<String>) -> Result<Self, ConfigError> {
        let join = join.or(args.join.clone());
        if join.is_some() && args.token.is_none() {
            return Err(ConfigError::Needs {
                flag: "joining",
                needs: "--token (create one with `rackd tokens create` on a member)",
            });
        }
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let location = match args.location.clone() {
            None => {
                for (set, flag) in [
                    (args.tftp_listen.is_some(), "--tftp-listen"),
                    (args.dhcp_interface.is_some(), "--dhcp-interface"),
                    (args.http_boot_listen.is_some(), "--http-boot-listen"),
                ] {
                    if set {
                        return Err(ConfigError::Needs {
                            flag,
                            needs: "--location",
                        });
                    }
                }
                None
            }
            Some(name) => Some(LocationConfig::from_args(name, &args, &data_dir)?),
        };
        let api_tls = api_tls(
            &args.api,
            args.api_tls || args.api_cert.is_some(),
            args.api_plain_http,
        );
        Ok(Self {
            data_dir,
            api_listen: args.api,
            peer_listen: args.peer,
            advertise_api: args.advertise_api,
            advertise_peer: args.advertise_peer,
            join,
            token: args.token,
            learner: args.learner,
            api_tls,
            api_cert: args.api_cert.clone().zip(args.api_key.clone()),
            snapshot_logs: args.snapshot_logs.max(2),
            heartbeat_ms: args.heartbeat_ms,
            election_timeout_ms: args.election_timeout_ms,
            api_limits: ApiLimits {
                max_connections: args.api_max_connections.max(1),
                per_source: args.api_max_connections_per_source.max(1),
                header_timeout: Duration::from_secs(args.api_header_timeout_secs.max(1)),
            },
            write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
            task_lost: (args.task_lost_secs > 0).then(|| Duration::from_secs(args.task_lost_secs)),
            cert_check: Duration::from_secs(args.cert_check_secs.max(1)),
            blobs: BlobConfig {
                max_bytes: args.blob_max_bytes,
                check: Duration::from_secs(args.blob_check_secs.max(1)),
                orphan_after: Duration::from_secs(args.blob_orphan_secs),
                gc_after: Duration::from_secs(args.blob_gc_secs),
                cache_bytes: args.blob_cache_bytes,
                scrub_every: Duration::from_secs(args.blob_scrub_hours.max(1) * 3600),
            },
            location,
            ipmi_proxy: args.ipmi_proxy_listen.map(|ip| ProxyConfig {
                listen: ip,
                base_port: args.ipmi_proxy_base_port,
                idle: Duration::from_secs(args.ipmi_proxy_idle_secs.max(1)),
            }),
        })
    }
}

/// Whether a listen address is a loopback one (only reachable from this host).
/// Whether a node serving its API on `listen` serves it over TLS: asked for (`tls`), or by
/// default unless it listens on a loopback address or plain HTTP was asked for.
pub fn api_tls(listen: &str, tls: bool, plain: bool) -> bool {
    tls || (!plain && !is_loopback(listen))
}

fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

impl LocationConfig {
    fn from_args(
        name: String,
        args: &UpArgs,
        data_dir: &std::path::Path,
    ) -> Result<Self, ConfigError> {
        let dhcp = match &args.dhcp_interface {
            None => None,
            Some(interface) => Some(DhcpConfig {
                interface: interface.clone(),
                listen: addr("--dhcp-listen", &args.dhcp_listen)?,
                server_ip: args.dhcp_server_ip.ok_or(ConfigError::Needs {
                    flag: "--dhcp-interface",
                    needs: "--dhcp-server-ip (this node's provisioning address)",
                })?,
                http_base: args.http_boot_base.clone(),
                proxy: args.dhcp_proxy,
                lease_secs: args.dhcp_lease_secs,
                pool_share: args.dhcp_pool_share,
                discovery: rackd_net::dhcp::DiscoveryLimit {
                    per_minute: args.dhcp_discovery_per_minute,
                    burst: args.dhcp_discovery_burst.max(1),
                },
                router_advertisements: !args.no_router_advertisements,
                ipxe_via_tftp: args.ipxe_via_tftp,
            }),
        };
        let tftp_listen = match &args.tftp_listen {
            None => None,
            Some(l) => Some(addr("--tftp-listen", l)?),
        };
        Ok(Self {
            name,
            tftp_listen,
            tftp_root: args
                .tftp_root
                .clone()
                .unwrap_or_else(|| data_dir.join("tftp")),
            tftp_limits: rackd_net::tftp::Limits {
                max_transfers: args.tftp_max_transfers.max(1),
                max_per_client: args.tftp_max_per_client.max(1),
                ..rackd_net::tftp::Limits::default()
            },
            dhcp,
            http_boot: args.http_boot_listen.as_ref().map(|listen| HttpBootConfig {
                listen: listen.clone(),
                base: args.http_boot_base.clone(),
                artifacts_dir: args
                    .artifacts_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("artifacts")),
                max_transfers: args.http_boot_max_transfers.max(1),
                stall_window: Duration::from_secs(args.http_boot_stall_secs.max(1)),
            }),
            power: PowerConfig {
                max_sessions: args.bmc_sessions.max(1),
                sync_interval: (args.power_sync_secs > 0)
                    .then(|| Duration::from_secs(args.power_sync_secs)),
                sync_rate: args.power_sync_rate.max(1),
                ipmi_timeout: Duration::from_millis(args.ipmi_timeout_ms.max(10)),
                ipmi_retries: 2,
                task_lease: Duration::from_secs(args.task_lease_secs.max(1)),
                power_on_gap: Duration::from_millis(args.power_on_gap_ms),
                max_workflows: args.max_workflows.max(1),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        up: UpArgs,
    }

    fn parse(flags: &[&str]) -> Result<NodeConfig, ConfigError> {
        let mut argv = vec!["rackd"];
        argv.extend_from_slice(flags);
        NodeConfig::from_args(T::try_parse_from(argv).expect("flags parse").up, None)
    }

    #[test]
    fn every_location_service_needs_a_location_but_the_ipmi_proxy() {
        for flags in [
            &["--tftp-listen", "127.0.0.1:69"][..],
            &["--dhcp-interface", "eth1", "--dhcp-server-ip", "10.0.0.1"],
            &["--http-boot-listen", "127.0.0.1:8080"],
        ] {
            let e = parse(flags).expect_err("refused without --location");
            assert!(e.to_string().contains("needs --location"), "{e}");
        }
        // The IPMI proxy runs on any node (other locations' BMCs through tunnels).
        let c = parse(&["--ipmi-proxy-listen", "127.0.0.1"]).unwrap();
        assert!(c.location.is_none());
        assert_eq!(c.ipmi_proxy.unwrap().listen.to_string(), "127.0.0.1");
    }

    #[test]
    fn cross_flag_rules_and_defaults() {
        let e = parse(&["--join", "http://x", "--data-dir", "/tmp/x"]).unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");
        let e = parse(&["--location", "a", "--dhcp-interface", "eth1"]).unwrap_err();
        assert!(e.to_string().contains("--dhcp-server-ip"), "{e}");
        let e = parse(&["--location", "a", "--tftp-listen", "nope"]).unwrap_err();
        assert!(e.to_string().contains("--tftp-listen"), "{e}");

        let c = parse(&[
            "--data-dir",
            "/d",
            "--location",
            "a",
            "--http-boot-listen",
            "127.0.0.1:0",
            "--power-sync-secs",
            "0",
            "--snapshot-logs",
            "0",
        ])
        .unwrap();
        assert_eq!(c.snapshot_logs, 2);
        let l = c.location.unwrap();
        assert_eq!(l.tftp_root, PathBuf::from("/d/tftp"));
        assert_eq!(
            l.http_boot.unwrap().artifacts_dir,
            PathBuf::from("/d/artifacts")
        );
        assert_eq!(l.power.sync_interval, None);
        assert_eq!(l.power.task_lease, DEFAULT_TASK_LEASE);
    }

    /// TLS on the API unless it listens on loopback, or is explicitly asked to be plain.
    #[test]
    fn the_api_is_tls_on_any_address_but_loopback_unless_asked() {
        let tls = |flags: &[&str]| parse(flags).unwrap().api_tls;
        let d = ["--data-dir", "/tmp/x"];
        let with = |extra: &[&'static str]| [&d[..], extra].concat();
        assert!(!tls(&with(&[])), "the default API address is loopback");
        assert!(!tls(&with(&["--api", "127.0.0.5:7080"])));
        assert!(!tls(&with(&["--api", "[::1]:7080"])));
        assert!(!tls(&with(&["--api", "localhost:7080"])));
        assert!(tls(&with(&["--api", "0.0.0.0:7080"])));
        assert!(tls(&with(&["--api", "10.0.0.2:7080"])));
        assert!(tls(&with(&["--api", "[::]:7080"])));
        assert!(!tls(&with(&["--api", "0.0.0.0:7080", "--api-plain-http"])));
        assert!(tls(&with(&["--api-tls"])));
        let both = [
            "rackd",
            "--data-dir",
            "/tmp/x",
            "--api-tls",
            "--api-plain-http",
        ];
        assert!(T::try_parse_from(both).is_err());
    }
}
