//! Command-line interface: `rackd up|join` start a node; every other subcommand is a client of
//! the HTTP API at `--server` (env `RACKD_SERVER`) with `RACKD_TOKEN`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rackd",
    version,
    about = "rackd: a clustered bare-metal datacenter manager"
)]
pub struct Cli {
    /// API endpoint of any node.
    #[arg(
        long,
        global = true,
        env = "RACKD_SERVER",
        default_value = "http://127.0.0.1:7080"
    )]
    pub server: String,
    /// API bearer token.
    #[arg(
        long = "api-token",
        global = true,
        env = "RACKD_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start a node: bootstrap a new cluster (empty data dir), join one (--join), or resume.
    Up(UpArgs),
    /// Join an existing cluster (same as `up --join URL`).
    Join {
        /// API URL of any member.
        url: String,
        #[command(flatten)]
        up: UpArgs,
    },
    /// Cluster and node status.
    Status,
    /// The bootable appliance image: build, install to a disk, upgrade, write a node's seed.
    #[command(subcommand)]
    Image(ImageCmd),
    /// PID 1 of the appliance image (run by its /init; not for interactive use).
    #[command(hide = true)]
    ApplianceInit,
    /// Machines.
    #[command(subcommand)]
    Machines(MachineCmd),
    /// Locations (sites).
    #[command(subcommand)]
    Locations(LocationCmd),
    /// Racks.
    #[command(subcommand)]
    Racks(RackCmd),
    /// Subnets / IP pools.
    #[command(subcommand)]
    Subnets(SubnetCmd),
    /// Cluster members.
    #[command(subcommand)]
    Members(MemberCmd),
    /// Tasks (power actions).
    #[command(subcommand)]
    Tasks(TaskCmd),
    /// Join and API tokens.
    #[command(subcommand)]
    Tokens(TokenCmd),
    /// The journal of changes.
    Events {
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
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
    /// Lease (seconds) of a task this node's executor claims; renewed every third of it while
    /// the task runs. When an executor dies, its task is taken over once the lease expires.
    #[arg(long, default_value_t = 30)]
    pub task_lease_secs: u64,
    /// IPMI proxy: relay IPMI-over-LAN to the location's BMCs on this address (machine N is
    /// reached on port --ipmi-proxy-base-port + N). Off when unset.
    #[arg(long)]
    pub ipmi_proxy_listen: Option<std::net::IpAddr>,
    #[arg(long, default_value_t = 20000)]
    pub ipmi_proxy_base_port: u16,
    /// Close an IPMI proxy flow after this many idle seconds.
    #[arg(long, default_value_t = 60)]
    pub ipmi_proxy_idle_secs: u64,
    /// Seconds a write waits for a quorum before answering 503.
    #[arg(long, default_value_t = 10)]
    pub write_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    List {
        #[arg(long)]
        location: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        rack: Option<u64>,
        /// Serve from the local replica without a leader round trip.
        #[arg(long)]
        stale: bool,
    },
    Add(MachineArgs),
    Show {
        id: u64,
    },
    Update {
        id: u64,
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        fields: MachineUpdateArgs,
    },
    Delete {
        id: u64,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Power action (on, off, cycle, reset, status); waits for the task unless --no-wait.
    Power {
        id: u64,
        action: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Set the boot device through the BMC (pxe or disk; the next boot unless --persistent).
    BootDevice {
        id: u64,
        device: String,
        #[arg(long)]
        persistent: bool,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    List,
    Show { id: u64 },
}

#[derive(Debug, Args)]
pub struct MachineArgs {
    #[arg(long)]
    pub hostname: String,
    #[arg(long)]
    pub location: String,
    #[arg(long = "mac")]
    pub macs: Vec<String>,
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    #[arg(long)]
    pub rack: Option<u64>,
    #[arg(long)]
    pub unit: Option<u32>,
    #[arg(long)]
    pub bmc_address: Option<String>,
    #[arg(long, default_value = "ipmi")]
    pub bmc_driver: String,
    #[arg(long, default_value_t = 623)]
    pub bmc_port: u16,
    #[arg(long, default_value = "")]
    pub bmc_user: String,
    /// BMC password (or env RACKD_BMC_PASSWORD).
    #[arg(long, env = "RACKD_BMC_PASSWORD", hide_env_values = true)]
    pub bmc_password: Option<String>,
    /// RMCP+ cipher suite (0-3) for the ipmi driver; 3 when unset.
    #[arg(long)]
    pub bmc_cipher_suite: Option<u8>,
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MachineUpdateArgs {
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long)]
    pub location: Option<String>,
    #[arg(long = "mac")]
    pub macs: Option<Vec<String>>,
    #[arg(long = "ip")]
    pub ips: Option<Vec<String>>,
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub cause: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "tag")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum LocationCmd {
    List,
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Give unknown machines dynamic addresses and record them as `new`.
        #[arg(long)]
        discovery: bool,
    },
    Show {
        id: u64,
    },
    Delete {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RackCmd {
    List {
        #[arg(long)]
        location: Option<String>,
    },
    Add {
        #[arg(long)]
        location: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 42)]
        height: u32,
    },
    Delete {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubnetCmd {
    List {
        #[arg(long)]
        location: Option<String>,
    },
    Add {
        #[arg(long)]
        location: String,
        #[arg(long)]
        cidr: String,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Dynamic range START-END (repeatable).
        #[arg(long = "dynamic")]
        dynamic: Vec<String>,
    },
    Delete {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    List,
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token.
    Create {
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens.
    List,
    /// Create an API token.
    CreateApi { name: String },
    /// List API tokens.
    ListApi,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build rackd.raw and rackd.qcow2 (kernel, initramfs with this rackd, syslinux, seed and
    /// data partitions). Works offline from installed packages.
    Build {
        /// Output directory.
        #[arg(long, default_value = "rackd-image")]
        out: PathBuf,
        /// A linux-image-*.deb to take the kernel and modules from (default: the newest
        /// installed kernel under /boot and /lib/modules).
        #[arg(long)]
        kernel_deb: Option<PathBuf>,
        /// The rackd binary to put in the image (default: this one).
        #[arg(long)]
        rackd: Option<PathBuf>,
        /// Seed (rackd.toml) to put on the image's seed partition.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Disk image size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Extra kernel command line (e.g. rackd.bootstrap=1).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Skip the qcow2 conversion.
        #[arg(long)]
        no_qcow2: bool,
    },
    /// Write the appliance onto DISK (from the booted appliance's disk, or --from IMAGE).
    Install {
        #[arg(long)]
        disk: PathBuf,
        /// Source appliance disk or image (default: the disk holding the RACKDSYS partition).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Seed for the installed node.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Overwrite a disk that holds data.
        #[arg(long)]
        force: bool,
    },
    /// Replace the system part of an installed appliance disk with a newer image's; the seed
    /// and the data partition are kept.
    Upgrade {
        #[arg(long)]
        disk: PathBuf,
        #[arg(long)]
        image: PathBuf,
    },
    /// Write a node's seed (rackd.toml) onto an appliance disk or image.
    Seed {
        #[arg(long)]
        disk: PathBuf,
        #[arg(long)]
        seed: PathBuf,
    },
}
