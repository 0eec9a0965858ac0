//! Command-line interface: `rackd up|join` start a node; every other subcommand is a client of
//! the HTTP API at `--server` (env `RACKD_SERVER`) with `RACKD_TOKEN`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::config::args::UpArgs;

pub mod backup;
pub mod blobs;
pub mod commands;
pub mod complete;
#[cfg(test)]
mod help_tests;
pub mod image;
pub mod log;
pub mod login;
pub mod output;
pub mod resolve;
pub mod watch;
pub mod webhooks;

#[derive(Debug, Parser)]
#[command(
    name = "rackd",
    version,
    about = "rackd: a clustered bare-metal datacenter manager"
)]
pub struct Cli {
    /// API endpoint of any node (default: the one `rackd login` kept, else
    /// http://127.0.0.1:7080); several, comma-separated, are tried in turn while one refuses
    /// connections.
    #[arg(long, global = true, env = "RACKD_SERVER")]
    pub server: Option<String>,
    /// API bearer token.
    #[arg(
        long = "api-token",
        global = true,
        env = "RACKD_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// The cluster CA certificate (PEM, `DATA_DIR/pki/ca.pem` of any node) that an https
    /// server's certificate must chain to; nothing else is trusted.
    #[arg(long, global = true, env = "RACKD_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
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
    /// Remember a cluster (server, token, CA) for the commands after it. Over https the CA is
    /// learnt by its hash (`--ca-pin`) or given (`--ca-file`); the token (`--api-token` or
    /// RACKD_TOKEN) is checked against the cluster first.
    Login {
        /// API URL of any member.
        url: String,
        /// `sha256:<hex>` of the cluster CA (printed at bootstrap; join tokens carry it).
        #[arg(long)]
        ca_pin: Option<String>,
    },
    /// The bootable appliance image: build, install to a disk, upgrade, write a node's seed
    /// (`rackd image …` is the old name; OS images are `rackd images …`).
    #[command(subcommand, name = "appliance", alias = "image")]
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
    /// Node certificates.
    #[command(subcommand)]
    Certs(CertCmd),
    /// Content-addressed artifacts (kernels, initrds, root filesystems) stored by the cluster.
    #[command(subcommand)]
    Blobs(BlobCmd),
    /// OS images machines are deployed with (`rackd appliance` builds rackd's own image).
    #[command(subcommand)]
    Images(OsImageCmd),
    /// Print a shell completion script: `source <(rackd completion bash)`; for zsh, save it
    /// as `_rackd` on $fpath; for fish, in ~/.config/fish/completions/rackd.fish.
    Completion {
        /// bash, zsh or fish.
        shell: crate::cli::complete::Shell,
    },
    /// What may come next on a command line (the completion scripts ask this).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `rackd`, the last one being completed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Webhooks: HTTP endpoints the journal's events are sent to, signed, at least once.
    #[command(subcommand)]
    Webhooks(crate::cli::webhooks::WebhookCmd),
    /// Backups: the replicated state and the cluster CA (sealed with a passphrase) in one file.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The journal of changes, oldest first; with --follow, each change as it happens (from
    /// now, or after --after) until interrupted.
    Events {
        /// Only events with a greater sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// Events shown at most (without --follow), 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep printing events as they happen (resumes by itself if the connection breaks).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this kind (`machine.created`) or family (`machine`).
        #[arg(long)]
        kind: Option<String>,
        /// Only events about this kind of entity (`machine`, `task`, `location`, ...).
        #[arg(long)]
        entity: Option<String>,
        /// Only events about the entity with this id (needs --entity).
        #[arg(long, requires = "entity")]
        id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    /// List machines (every page), filtered by location, state or rack.
    List {
        /// Only machines of this location (its name).
        #[arg(long)]
        location: Option<String>,
        /// Only machines in this state (new, ready, deploying, deployed, releasing, failed,
        /// broken).
        #[arg(long)]
        state: Option<String>,
        /// Only machines in this rack (its id).
        #[arg(long)]
        rack: Option<u64>,
        /// Serve from the local replica without a leader round trip.
        #[arg(long)]
        stale: bool,
    },
    /// Add a machine to a location's inventory.
    Add(MachineArgs),
    /// Show a machine: addresses, rack, BMC (never its password), state, tags.
    Show {
        /// The machine's id or hostname.
        id: String,
    },
    /// Change a machine: only the fields given change.
    Update {
        /// The machine's id or hostname.
        id: String,
        /// Only if the machine is still at this version (else 412, nothing changes).
        #[arg(long)]
        if_match: Option<u64>,
        #[command(flatten)]
        fields: MachineUpdateArgs,
    },
    /// Delete a machine (its pending and running tasks are cancelled).
    Delete {
        /// The machine's id or hostname.
        id: String,
        /// Only if the machine is still at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Deploy IMAGE on a ready machine: a deploy task sets its boot device, powers it on (or
    /// cycles it), waits for its network boot and its installer, then sets the disk as its
    /// boot device (`rackd tasks show TASK --watch` follows the steps). With --wait, follow
    /// the machine until it is deployed (or fails), a line per change of state.
    Deploy {
        /// The machine's id or hostname.
        id: String,
        /// The OS image's name (`rackd images list`).
        #[arg(long)]
        image: String,
        /// Follow the machine until it is deployed or fails (exit 1 then).
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits at most.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Seconds the deploy waits for the machine to fetch its deploy script (900).
        #[arg(long)]
        boot_timeout: Option<u64>,
        /// Seconds the deploy waits for the installer's callback (3600).
        #[arg(long)]
        install_timeout: Option<u64>,
    },
    /// Release a deployed or failed machine: a release task powers it off and it becomes
    /// ready. With --wait, follow it until it is ready (or fails).
    Release {
        /// The machine's id or hostname.
        id: String,
        /// Boot this image first to erase the machine (it calls back like an installer).
        #[arg(long)]
        wipe_image: Option<String>,
        /// Follow the machine until it is ready or fails (exit 1 then).
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits at most.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Power action (on, off, cycle, reset, status); waits for the task unless --no-wait.
    Power {
        /// The machine's id or hostname.
        id: String,
        /// What to do.
        #[arg(value_parser = crate::cli::complete::one_of::<rackd_types::PowerAction>(
            &rackd_types::PowerAction::ALL.map(|a| a.as_str())))]
        action: rackd_types::PowerAction,
        /// Print the task and return at once instead of following it to its end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Set the boot device through the BMC (pxe or disk; the next boot unless --persistent).
    BootDevice {
        /// The machine's id or hostname.
        id: String,
        /// Where it boots from.
        #[arg(value_parser = crate::cli::complete::one_of::<rackd_types::BootDevice>(
            &rackd_types::BootDevice::ALL.map(|d| d.as_str())))]
        device: rackd_types::BootDevice,
        /// For every boot, not only the next one.
        #[arg(long)]
        persistent: bool,
        /// Print the task and return at once instead of following it to its end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Let SOURCE (an IP) reach the machine's BMC through its location's IPMI proxies
    /// (ipmitool -H PROXY_IP -p BASE_PORT+ID) for --ttl seconds.
    BmcSession {
        /// The machine's id or hostname.
        id: String,
        /// The IP address allowed through the proxies.
        #[arg(long)]
        source: String,
        /// Seconds the session lasts (default 3600).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// The machine's open BMC sessions.
    BmcSessions {
        /// The machine's id or hostname.
        id: String,
    },
    /// Close the machine's BMC session for --source, or all of them (the proxies drop the
    /// flows at their next datagram).
    BmcSessionClose {
        /// The machine's id or hostname.
        id: String,
        /// Close only this IP address's session.
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// List tasks: kind, machine, state, attempts, executor, error.
    List,
    /// A task; with --watch, a line for each change (state, attempt, executor) until it ends,
    /// failing when the task failed (JSON lines with -o json).
    Show {
        /// The task's id.
        id: u64,
        /// Follow the task until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Cancel a pending or running task (a running one is fenced: its executor stops within
    /// its lease). A cancelled deploy or release leaves its machine failed.
    Cancel {
        /// The task's id.
        id: u64,
    },
    /// Run a failed or cancelled deploy or release again from the step where it stopped.
    Retry {
        /// The task's id.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct MachineArgs {
    /// Host name (letters, digits, '-', '.', '_'; unique in its location, letter case aside).
    #[arg(long)]
    pub hostname: String,
    /// The location's name.
    #[arg(long)]
    pub location: String,
    /// A MAC address (repeatable; any common notation).
    #[arg(long = "mac")]
    pub macs: Vec<String>,
    /// An IPv4 address inside a subnet of the location (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    /// The rack's id.
    #[arg(long)]
    pub rack: Option<u64>,
    /// The rack unit it sits in (1 = bottom).
    #[arg(long)]
    pub unit: Option<u32>,
    /// BMC address (an IP address or host name; the port goes in --bmc-port).
    #[arg(long)]
    pub bmc_address: Option<String>,
    /// ipmi (IPMI 2.0), ipmi15 (IPMI 1.5) or sim.
    #[arg(long, default_value = "ipmi", value_parser = crate::cli::complete::one_of::<rackd_types::BmcDriver>(
        &rackd_types::BmcDriver::SUPPORTED.map(|d| d.as_str())))]
    pub bmc_driver: rackd_types::BmcDriver,
    /// BMC UDP port.
    #[arg(long, default_value_t = 623)]
    pub bmc_port: u16,
    /// BMC user name.
    #[arg(long, default_value = "")]
    pub bmc_user: String,
    /// BMC password (or env RACKD_BMC_PASSWORD).
    #[arg(long, env = "RACKD_BMC_PASSWORD", hide_env_values = true)]
    pub bmc_password: Option<String>,
    /// RMCP+ cipher suite (0-3) for the ipmi driver; 3 when unset.
    #[arg(long)]
    pub bmc_cipher_suite: Option<u8>,
    /// Initial state (default new; ready to deploy it at once).
    #[arg(long)]
    pub state: Option<String>,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// A tag (repeatable; 1..=64 characters without spaces).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MachineUpdateArgs {
    /// A new host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Move it to this location (its name).
    #[arg(long)]
    pub location: Option<String>,
    /// Replace its MAC addresses (repeatable).
    #[arg(long = "mac")]
    pub macs: Option<Vec<String>>,
    /// Replace its IP addresses (repeatable).
    #[arg(long = "ip")]
    pub ips: Option<Vec<String>>,
    /// A new state (new, ready, deployed, failed, broken; moves the lifecycle allows).
    #[arg(long)]
    pub state: Option<String>,
    /// Why the state changes (shown with the state and in the journal).
    #[arg(long)]
    pub cause: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Replace the tags (repeatable).
    #[arg(long = "tag")]
    pub tags: Option<Vec<String>>,
    /// Remove every IP address.
    #[arg(long, conflicts_with = "ips")]
    pub no_ips: bool,
    /// Remove every tag.
    #[arg(long, conflicts_with = "tags")]
    pub no_tags: bool,
    /// Put the machine in this rack (id or name).
    #[arg(long, conflicts_with = "no_rack")]
    pub rack: Option<String>,
    /// Its rack unit (1 = bottom).
    #[arg(long)]
    pub unit: Option<u32>,
    /// Take the machine out of its rack.
    #[arg(long)]
    pub no_rack: bool,
    /// BMC driver (ipmi, ipmi15, sim); the BMC flags not given keep their values.
    #[arg(long, value_parser = crate::cli::complete::one_of::<rackd_types::BmcDriver>(
        &rackd_types::BmcDriver::SUPPORTED.map(|d| d.as_str())))]
    pub bmc_driver: Option<rackd_types::BmcDriver>,
    /// BMC address (an IP address or host name). A new address, port or driver without a
    /// new password clears the stored one.
    #[arg(long)]
    pub bmc_address: Option<String>,
    /// BMC UDP port.
    #[arg(long)]
    pub bmc_port: Option<u16>,
    /// BMC user name.
    #[arg(long)]
    pub bmc_user: Option<String>,
    /// The BMC password (write-only; also $RACKD_BMC_PASSWORD).
    #[arg(long, env = "RACKD_BMC_PASSWORD", hide_env_values = true)]
    pub bmc_password: Option<String>,
    /// Forget the BMC (and its password).
    #[arg(long, conflicts_with_all = ["bmc_driver", "bmc_address", "bmc_port", "bmc_user", "bmc_password"])]
    pub no_bmc: bool,
}

impl MachineUpdateArgs {
    /// Whether any BMC flag but --no-bmc is given.
    pub fn touches_bmc(&self) -> bool {
        self.bmc_driver.is_some()
            || self.bmc_address.is_some()
            || self.bmc_port.is_some()
            || self.bmc_user.is_some()
            || self.bmc_password.is_some()
    }

    /// The BMC of the patch: the flags given over the machine's current BMC (`current`).
    pub fn bmc(
        &self,
        current: Option<&rackd_types::BmcView>,
    ) -> anyhow::Result<Option<Option<rackd_types::BmcSpec>>> {
        if self.no_bmc {
            return Ok(Some(None));
        }
        if !self.touches_bmc() {
            return Ok(None);
        }
        let address = match (&self.bmc_address, current) {
            (Some(a), _) => a.clone(),
            (None, Some(c)) => c.address.clone(),
            (None, None) => anyhow::bail!("the machine has no BMC yet: give --bmc-address"),
        };
        Ok(Some(Some(rackd_types::BmcSpec {
            driver: self
                .bmc_driver
                .or(current.map(|c| c.driver))
                .unwrap_or_default(),
            address,
            port: self.bmc_port.or(current.map(|c| c.port)).unwrap_or(623),
            username: self
                .bmc_user
                .clone()
                .or(current.map(|c| c.username.clone()))
                .unwrap_or_default(),
            password: self.bmc_password.clone(),
            cipher_suite: current.and_then(|c| c.cipher_suite),
        })))
    }
}

impl MachineCmd {
    /// The machine the command names (an id or a hostname), if it names one.
    pub fn target(&self) -> Option<&str> {
        match self {
            MachineCmd::List { .. } | MachineCmd::Add(_) => None,
            MachineCmd::Show { id }
            | MachineCmd::Update { id, .. }
            | MachineCmd::Delete { id, .. }
            | MachineCmd::Deploy { id, .. }
            | MachineCmd::Release { id, .. }
            | MachineCmd::Power { id, .. }
            | MachineCmd::BootDevice { id, .. }
            | MachineCmd::BmcSession { id, .. }
            | MachineCmd::BmcSessions { id }
            | MachineCmd::BmcSessionClose { id, .. } => Some(id),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LocationCmd {
    /// List locations.
    List,
    /// Add a location (a site with its own provisioning network).
    Add {
        /// Unique name (letters, digits, '-', '.', '_'); machines and racks refer to it.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Give unknown machines dynamic addresses and record them as `new`.
        #[arg(long)]
        discovery: bool,
    },
    /// Show a location (by id or name).
    Show {
        /// The location's id or name.
        location: String,
    },
    /// Change a location's description or discovery (by id or name).
    Update {
        /// The location's id or name.
        location: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Give unknown machines dynamic addresses and record them (true or false).
        #[arg(long)]
        discovery: Option<bool>,
        /// Only if the location is still at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete a location without machines, racks or subnets (by id or name).
    Delete {
        /// The location's id or name.
        location: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RackCmd {
    /// List racks.
    List {
        /// Only racks of this location (its name).
        #[arg(long)]
        location: Option<String>,
    },
    /// Add a rack to a location.
    Add {
        /// The location's name.
        #[arg(long)]
        location: String,
        /// Its name (unique in the location).
        #[arg(long)]
        name: String,
        /// Height in rack units.
        #[arg(long, default_value_t = 42)]
        height: u32,
    },
    /// Show a rack (by id or name) and the machines in it, top unit first.
    Show {
        /// The rack's id or name.
        rack: String,
    },
    /// Rename a rack or change its height in units (by id or name).
    Update {
        /// The rack's id or name.
        rack: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new height in rack units.
        #[arg(long)]
        height: Option<u32>,
        /// Only if the rack is still at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete an empty rack (by id or name).
    Delete {
        /// The rack's id or name.
        rack: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubnetCmd {
    /// List subnets.
    List {
        /// Only subnets of this location (its name).
        #[arg(long)]
        location: Option<String>,
    },
    /// Add a subnet (an IPv4 pool) to a location.
    Add {
        /// The location's name.
        #[arg(long)]
        location: String,
        /// The network, e.g. 10.0.0.0/24 (no overlap with another subnet).
        #[arg(long)]
        cidr: String,
        /// The default gateway DHCP hands out.
        #[arg(long)]
        gateway: Option<String>,
        /// A DNS server DHCP hands out (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Dynamic range START-END (repeatable).
        #[arg(long = "dynamic")]
        dynamic: Vec<String>,
    },
    /// Show a subnet (by id or CIDR).
    Show {
        /// The subnet's id or CIDR.
        subnet: String,
    },
    /// Change a subnet (by id or CIDR): the lists given replace the stored ones.
    Update {
        /// The subnet's id or CIDR.
        subnet: String,
        /// A new default gateway.
        #[arg(long, conflicts_with = "no_gateway")]
        gateway: Option<String>,
        /// Remove the gateway.
        #[arg(long)]
        no_gateway: bool,
        /// DNS server (repeatable).
        #[arg(long = "dns")]
        dns: Option<Vec<String>>,
        /// Dynamic range START-END (repeatable).
        #[arg(long = "dynamic")]
        dynamic: Option<Vec<String>>,
        /// Reserved range START-END, never handed out (repeatable).
        #[arg(long = "reserved")]
        reserved: Option<Vec<String>>,
        /// Only if the subnet is still at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete a subnet without assigned addresses (by id or CIDR).
    Delete {
        /// The subnet's id or CIDR.
        subnet: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// List members: id, role, addresses (`rackd status` adds reachability and lag).
    List,
    /// Remove a member (never the last voter); its id is never admitted again.
    Remove {
        /// The member's node id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Every node renews its certificate (a new key, signed by a voter; no restart) within
    /// its next check (`--cert-check-secs`, 30 s by default). `rackd status` on a node shows
    /// when its certificate was issued.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum BlobCmd {
    /// Upload FILE (streamed, with progress on a terminal); prints its digest once two voters
    /// hold it.
    Put {
        /// The file to upload.
        file: PathBuf,
    },
    /// Download blob DIGEST into FILE (verified before it is renamed into place).
    Get {
        /// The blob's digest (sha256:<hex>).
        digest: String,
        /// Where to write it (it must not exist).
        file: PathBuf,
    },
    /// List blobs and the nodes holding them.
    List,
    /// Forget a blob: every node removes its copy.
    Remove {
        /// The blob's digest (sha256:<hex>).
        digest: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Take a backup from the node (a voter) into FILE, which must not exist: every write the
    /// cluster acknowledged so far, and the cluster CA sealed with the passphrase. FILE
    /// appears only once it was read back whole and its CA opened.
    Create {
        /// Where the backup is written (it must not exist).
        file: PathBuf,
        /// A file whose first line is the passphrase (at least 12 characters); default:
        /// $RACKD_BACKUP_PASSPHRASE.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Offline, from this stopped voter's data directory instead of a running cluster
        /// (a cluster that lost its quorum for good: back up a survivor, then restore).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Seed a new cluster from FILE into an empty data directory (offline): its first node,
    /// the only voter, with the backup's cluster id, CA and records, and a new admin token
    /// (printed). Then start it with `rackd up --data-dir DIR --api ADDR --peer ADDR` and join
    /// more nodes with join tokens. Blob contents are not in a backup: upload them again.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new node's data directory (empty or absent).
        #[arg(long)]
        data_dir: PathBuf,
        /// The API address the node will listen on and advertise (HOST:PORT), as `up --api`.
        #[arg(long)]
        api: String,
        /// The peer address (HOST:PORT), as `up --peer`.
        #[arg(long)]
        peer: String,
        /// The API will be served over TLS (the default unless --api is a loopback address).
        #[arg(long, conflicts_with = "api_plain_http")]
        api_tls: bool,
        /// The API will be served over plain HTTP.
        #[arg(long)]
        api_plain_http: bool,
        /// As for create.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Check a backup offline (format, checksums, records) and say what it holds; with a
    /// passphrase, also open its CA.
    Inspect {
        /// The backup file.
        file: PathBuf,
        /// As for create; without it (and without $RACKD_BACKUP_PASSPHRASE) the CA is not
        /// opened.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OsImageCmd {
    /// Upload an image's files as blobs (streamed, with progress on a terminal) and create
    /// image NAME from them, or point an existing NAME at them.
    Upload {
        /// The image's name (1..=128 of [A-Za-z0-9-._]).
        name: String,
        /// The kernel file.
        #[arg(long)]
        kernel: PathBuf,
        /// The initrd file.
        #[arg(long)]
        initrd: PathBuf,
        /// A root filesystem the installer fetches (passed as `rackd.rootfs=<url>`).
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// Kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
    },
    /// List images.
    List,
    /// Show an image (by id or name).
    Show {
        /// The image's id or name.
        image: String,
    },
    /// Delete an image no machine uses (its blobs are forgotten later, when unused).
    Delete {
        /// The image's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token.
    Create {
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Free text (what the token is for).
        #[arg(long, default_value = "")]
        description: String,
        /// The location (site) the joining node serves: it is bound to it and gets only
        /// its secrets' key. Give it for location learners.
        #[arg(long)]
        location: Option<String>,
    },
    /// List join tokens.
    List,
    /// Revoke a join token (a join in progress with it stops).
    Revoke {
        /// The join token's id (`rackd tokens list`).
        id: u64,
    },
    /// Create an API token with a role: reader (GET only), operator (inventory, power,
    /// deploy, tasks) or admin (everything, including tokens and members).
    CreateApi {
        /// A name no other token has ([A-Za-z0-9-._@]); the journal records it as the actor.
        name: String,
        /// reader, operator or admin.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Seconds until the token expires (default: it does not).
        #[arg(long)]
        expires: Option<u64>,
    },
    /// Revoke an API token, by id or name (every node refuses it from then on).
    RevokeApi {
        /// The API token's id or name.
        token: String,
    },
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
        /// The disk (or disk image file) to write; everything on it is replaced.
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
        /// The installed appliance disk (or disk image file).
        #[arg(long)]
        disk: PathBuf,
        /// The newer appliance image (rackd.raw from `rackd appliance build`).
        #[arg(long)]
        image: PathBuf,
    },
    /// Write a node's seed (rackd.toml) onto an appliance disk or image.
    Seed {
        /// The appliance disk or image file.
        #[arg(long)]
        disk: PathBuf,
        /// The node's seed (rackd.toml).
        #[arg(long)]
        seed: PathBuf,
    },
}
