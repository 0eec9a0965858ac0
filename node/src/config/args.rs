//! The command-line flags of `rackd up` / `rackd join` as clap parses them: the wire type of
//! the node's configuration. Nothing here is validated; [`super::NodeConfig::from_args`] does
//! that. Must not depend on anything in this crate.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// A TOML file of these flags (keys are the flag names: `data-dir = "/var/lib/rackd"`,
    /// `learner = true`, arrays for repeatable flags); flags on the command line win.
    #[arg(long, env = "RACKD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (RocksDB, snapshots, identity, admin token).
    #[arg(long, env = "RACKD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub api: String,
    /// Raft peer (gRPC) listen address.
    #[arg(long, default_value = "127.0.0.1:7081")]
    pub peer: String,
    /// API address other nodes and clients should use (default: the bound address).
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// Peer address other nodes should use (default: the bound address).
    #[arg(long)]
    pub advertise_peer: Option<String>,
    /// Join the cluster whose member answers at this API URL.
    #[arg(long)]
    pub join: Option<String>,
    /// Join token (from `rackd tokens create`).
    #[arg(long)]
    pub token: Option<String>,
    /// Stay a non-voting learner (remote sites).
    #[arg(long)]
    pub learner: bool,
    /// Serve the HTTP API over TLS with this node's certificate from the cluster CA (it names
    /// the advertised API host); the advertised API address becomes `https://HOST:PORT`. The
    /// default unless the API listens on a loopback address.
    #[arg(long, conflicts_with = "api_plain_http")]
    pub api_tls: bool,
    /// A serving certificate of your own for the API (PEM chain; with `--api-key`): presented
    /// to clients that dial the API by a DNS name; clients that dial an IP address (members)
    /// still get the node's certificate from the cluster CA. Read again when the file changes.
    /// Implies `--api-tls`.
    #[arg(long, requires = "api_key", conflicts_with = "api_plain_http")]
    pub api_cert: Option<PathBuf>,
    /// The key of `--api-cert` (PEM).
    #[arg(long, requires = "api_cert")]
    pub api_key: Option<PathBuf>,
    /// Serve the HTTP API over plain HTTP even on a non-loopback address (tokens then cross
    /// the network in clear: only for networks that are already private end to end).
    #[arg(long)]
    pub api_plain_http: bool,
    /// Snapshot every N applied entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// Raft heartbeat interval (ms).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout (ms); the maximum (and the leader lease) is 1.6 times this.
    #[arg(long, default_value_t = 500)]
    pub election_timeout_ms: u64,
    /// Serve the boot services of this location (site) from the local replica.
    #[arg(long)]
    pub location: Option<String>,
    /// TFTP listen address for the location services (e.g. 0.0.0.0:69); off when unset.
    #[arg(long)]
    pub tftp_listen: Option<String>,
    /// TFTP root directory (default DATA_DIR/tftp).
    #[arg(long)]
    pub tftp_root: Option<PathBuf>,
    /// TFTP transfers open at once; further requests are dropped and their clients retry.
    #[arg(long, default_value_t = 4096)]
    pub tftp_max_transfers: usize,
    /// TFTP transfers open at once for one client address (a PXE client needs one).
    #[arg(long, default_value_t = 64)]
    pub tftp_max_per_client: usize,
    /// Provisioning interface for DHCP (enables the DHCP server; needs --location and
    /// --dhcp-server-ip).
    #[arg(long)]
    pub dhcp_interface: Option<String>,
    /// This node's address on the provisioning network (DHCP server id, TFTP next-server).
    #[arg(long)]
    pub dhcp_server_ip: Option<std::net::Ipv4Addr>,
    /// DHCP listen address.
    #[arg(long, default_value = "0.0.0.0:67")]
    pub dhcp_listen: String,
    /// Proxy-DHCP mode: answer only PXE boot information (the site keeps its own DHCP server).
    #[arg(long)]
    pub dhcp_proxy: bool,
    /// Do not send IPv6 Router Advertisements on the DHCP interface (by default they are sent,
    /// with router lifetime 0, so iPXE does not wait ~13 s for IPv6 routers).
    #[arg(long)]
    pub no_router_advertisements: bool,
    /// Send iPXE clients to a first-stage `boot.ipxe` over TFTP (chaining their HTTP script)
    /// instead of straight to the HTTP script.
    #[arg(long)]
    pub ipxe_via_tftp: bool,
    /// This node's share of the location's dynamic (discovery) ranges, `K/N`: give each of the
    /// N location nodes of a site its own K, so two of them never offer one free address to
    /// two unknown machines. Default `1/1` (one location node hands out the whole range).
    #[arg(long, default_value = "1/1", value_parser = rackd_net::dhcp::PoolShare::parse)]
    pub dhcp_pool_share: rackd_net::dhcp::PoolShare,
    /// Unknown machines this node records per minute in a discovery location, after a burst
    /// of `--dhcp-discovery-burst`: beyond it they still get an address and are recorded
    /// when they come back, so one host inventing MAC addresses cannot fill the inventory.
    #[arg(long, default_value_t = 60)]
    pub dhcp_discovery_per_minute: u32,
    /// Unknown machines recorded at once before the per-minute rate applies (a rack powered
    /// on for discovery).
    #[arg(long, default_value_t = 200)]
    pub dhcp_discovery_burst: u32,
    /// Lease time handed out with reservations (seconds).
    #[arg(long, default_value_t = 3600)]
    pub dhcp_lease_secs: u32,
    /// Image artifacts (kernels, initrds) served by the HTTP boot server (default
    /// DATA_DIR/artifacts).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// HTTP boot server listen address (per-machine iPXE scripts, TFTP root over HTTP).
    #[arg(long)]
    pub http_boot_listen: Option<String>,
    /// Base URL of the HTTP boot server given to iPXE (default: the HTTP boot server's
    /// address, else http://SERVER_IP:8080).
    #[arg(long)]
    pub http_boot_base: Option<String>,
    /// Files (artifacts, TFTP root) the HTTP boot server sends at once; further requests
    /// wait their turn in arrival order. Each transfer holds about 300 KiB of buffers.
    #[arg(long, default_value_t = 64)]
    pub http_boot_max_transfers: usize,
    /// Cut an HTTP boot client that keeps the server's writes waiting this many seconds
    /// without reading 64 KiB (a stalled or trickling client frees its transfer slot).
    #[arg(long, default_value_t = 20)]
    pub http_boot_stall_secs: u64,
    /// Bound on concurrent BMC sessions of this node (power tasks and sync).
    #[arg(long, default_value_t = 32)]
    pub bmc_sessions: usize,
    /// Re-read each machine's power state through its BMC when the last observation is older
    /// than this many seconds (0 turns the sync off).
    #[arg(long, default_value_t = 60)]
    pub power_sync_secs: u64,
    /// At most this many power-sync polls started per second.
    #[arg(long, default_value_t = 50)]
    pub power_sync_rate: u32,
    /// IPMI datagram timeout (ms) before a retransmission.
    #[arg(long, default_value_t = 1000)]
    pub ipmi_timeout_ms: u64,
    /// Power-ons (and power cycles) this node's executor starts are at least this many ms
    /// apart, each shifted by a random part of it, so a location powering many machines at
    /// once (a mass deploy, machines back after a power loss) spreads their inrush current.
    /// 0 turns pacing off.
    #[arg(long, default_value_t = 250)]
    pub power_on_gap_ms: u64,
    /// Deploys and releases this node's executor runs at once; more wait for a slot (or for
    /// another node of the location).
    #[arg(long, default_value_t = 32)]
    pub max_workflows: usize,
    /// Lease (seconds) of a task this node's executor claims; renewed every third of it while
    /// the task runs. When an executor dies, its task is taken over once the lease expires.
    #[arg(long, default_value_t = 30)]
    pub task_lease_secs: u64,
    /// IPMI proxy: relay IPMI-over-LAN to BMCs on this address (machine N is reached on port
    /// --ipmi-proxy-base-port + N): this node's location's directly, other locations' through
    /// a BMC tunnel over the QUIC link to a node of theirs (any node may run one). Off when
    /// unset.
    #[arg(long)]
    pub ipmi_proxy_listen: Option<std::net::IpAddr>,
    /// IPMI proxy: machine N's BMC is reached on this port + N.
    #[arg(long, default_value_t = 20000)]
    pub ipmi_proxy_base_port: u16,
    /// Close an IPMI proxy flow after this many idle seconds.
    #[arg(long, default_value_t = 60)]
    pub ipmi_proxy_idle_secs: u64,
    /// Open API connections allowed from one client address; more are closed at once.
    #[arg(long, default_value_t = 256)]
    pub api_max_connections_per_source: usize,
    /// Open API connections in all; more wait in the listen backlog.
    #[arg(long, default_value_t = 4096)]
    pub api_max_connections: usize,
    /// Seconds an API client has to send a whole request head (also how long an idle
    /// keep-alive connection is kept).
    #[arg(long, default_value_t = 10)]
    pub api_header_timeout_secs: u64,
    /// Seconds a write waits for a quorum before answering 503.
    #[arg(long, default_value_t = 10)]
    pub write_timeout_secs: u64,
    /// While leader: fail a task that has waited this long for an executor (its lease expired
    /// and nobody took it over, or nobody started it), with the tasks queued behind it on its
    /// machine, as "executor lost". A few task leases; 0 turns it off.
    #[arg(long, default_value_t = 90)]
    pub task_lost_secs: u64,
    /// Seconds between checks whether this node's certificate is due for renewal (expiring,
    /// API address changed, or `rackd certs rotate`).
    #[arg(long, default_value_t = 30)]
    pub cert_check_secs: u64,
    /// Largest artifact (blob) this node accepts, in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    pub blob_max_bytes: u64,
    /// Seconds between passes of the blob keeper (copies to a second voter, lost copies,
    /// copies of forgotten blobs).
    #[arg(long, default_value_t = 5)]
    pub blob_check_secs: u64,
    /// A copy in this node's blob store that no record names (a forgotten blob, an upload
    /// whose record never came) is removed once it is this many seconds old.
    #[arg(long, default_value_t = 600)]
    pub blob_orphan_secs: u64,
    /// The leader forgets a blob that no image uses once it is this many seconds old.
    #[arg(long, default_value_t = 3600)]
    pub blob_gc_secs: u64,
    /// Bytes of blobs a location node (a learner) keeps cached; the least recently used are
    /// dropped beyond it. Voters keep every copy they hold.
    #[arg(long, default_value_t = 50 << 30)]
    pub blob_cache_bytes: u64,
    /// Hours after which a copy is hashed again (rot on disk changes no file time).
    #[arg(long, default_value_t = 24)]
    pub blob_scrub_hours: u64,
}
