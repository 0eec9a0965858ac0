//! Inventory entities as stored in the replicated state machine and returned by the API.
//!
//! Every entity carries `id`, `version` (optimistic concurrency) and leader-stamped
//! `created_at`/`updated_at` in milliseconds since the Unix epoch. Secrets (BMC password, token
//! hashes) live in separate stored types and are never part of an API view.

use crate::hw::{BmcDriver, BootDevice, PowerAction, PowerState};
use serde::{Deserialize, Serialize};

/// Common metadata of every entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Meta {
    pub id: u64,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A site with its own provisioning network, served by location nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Location {
    #[serde(flatten)]
    pub meta: Meta,
    /// Unique, immutable name (machines and racks refer to it).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Unknown MACs get an address from the dynamic ranges of this location's subnets and are
    /// recorded as `new` machines.
    #[serde(default)]
    pub discovery: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rack {
    #[serde(flatten)]
    pub meta: Meta,
    pub location: String,
    pub name: String,
    pub height_units: u32,
}

/// Machine lifecycle (DESIGN §3).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    New,
    Ready,
    Deploying,
    Deployed,
    Releasing,
    Failed,
    Broken,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::New => "new",
            MachineState::Ready => "ready",
            MachineState::Deploying => "deploying",
            MachineState::Deployed => "deployed",
            MachineState::Releasing => "releasing",
            MachineState::Failed => "failed",
            MachineState::Broken => "broken",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => MachineState::New,
            "ready" => MachineState::Ready,
            "deploying" => MachineState::Deploying,
            "deployed" => MachineState::Deployed,
            "releasing" => MachineState::Releasing,
            "failed" => MachineState::Failed,
            "broken" => MachineState::Broken,
            _ => return None,
        })
    }

    /// Whether an operator/API-driven transition `self -> to` is allowed.
    pub fn can_transition_to(self, to: MachineState) -> bool {
        use MachineState::*;
        if self == to {
            return true;
        }
        match (self, to) {
            // Operator may mark anything broken, and may recover broken/failed machines to ready.
            (_, Broken) => true,
            (Broken | Failed, Ready) => true,
            (New, Ready) => true,
            (Ready, Deploying) => true,
            (Deploying, Deployed) => true,
            (Deployed, Releasing) => true,
            (Releasing, Ready) => true,
            (Deploying | Releasing, Failed) => true,
            _ => false,
        }
    }
}

/// BMC connection details as shown by the API (the password is write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BmcView {
    pub driver: BmcDriver,
    pub address: String,
    pub port: u16,
    pub username: String,
    /// True when a password is stored; the password itself is never returned.
    pub password_set: bool,
    /// RMCP+ cipher suite for the `ipmi` driver (0–3; 3 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
}

/// BMC settings as submitted by an operator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BmcSpec {
    #[serde(default)]
    pub driver: BmcDriver,
    pub address: String,
    #[serde(default = "default_bmc_port")]
    pub port: u16,
    #[serde(default)]
    pub username: String,
    /// Write-only. Redacted in Debug.
    #[serde(default)]
    pub password: Option<String>,
    /// RMCP+ cipher suite for the `ipmi` driver (0–3; default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
}

impl std::fmt::Debug for BmcSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcSpec")
            .field("driver", &self.driver)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cipher_suite", &self.cipher_suite)
            .finish()
    }
}

fn default_bmc_port() -> u16 {
    623
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Machine {
    #[serde(flatten)]
    pub meta: Meta,
    pub hostname: String,
    pub location: String,
    pub rack_id: Option<u64>,
    pub rack_unit: Option<u32>,
    /// Normalized (lower-case, colon separated), unique cluster-wide.
    pub macs: Vec<String>,
    /// Assigned IPv4 addresses, unique cluster-wide, each inside a subnet of the location.
    pub ips: Vec<String>,
    pub bmc: Option<BmcView>,
    pub state: MachineState,
    /// Why the machine is in its current state (last transition cause).
    #[serde(default)]
    pub state_cause: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Image deployed (or being deployed) on the machine.
    #[serde(default)]
    pub image: Option<String>,
    /// The deploy or release task driving the machine, or the last one that did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<u64>,
    /// Power state as last observed through the BMC.
    #[serde(default)]
    pub power_state: Option<PowerState>,
    /// When `power_state` was observed (ms since the epoch, leader-stamped).
    #[serde(default)]
    pub power_observed_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    PowerOn,
    PowerOff,
    PowerCycle,
    PowerReset,
    PowerStatus,
    /// Next boot from the network (one time).
    BootPxe,
    /// Every boot from the network.
    BootPxePersistent,
    /// Next boot from the local disk (one time).
    BootDisk,
    /// Every boot from the local disk.
    BootDiskPersistent,
    /// The deploy workflow of a machine (created by `POST /v1/machines/{id}/deploy`; steps in
    /// [`Task::steps`]). Since apply rules 5.
    Deploy,
    /// The release workflow of a machine (created by `POST /v1/machines/{id}/release`).
    /// Since apply rules 5.
    Release,
}

/// What a task asks of the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskWork {
    Power(PowerAction),
    Boot {
        device: BootDevice,
        persistent: bool,
    },
}

impl TaskKind {
    pub const ALL: [TaskKind; 11] = [
        TaskKind::PowerOn,
        TaskKind::PowerOff,
        TaskKind::PowerCycle,
        TaskKind::PowerReset,
        TaskKind::PowerStatus,
        TaskKind::BootPxe,
        TaskKind::BootPxePersistent,
        TaskKind::BootDisk,
        TaskKind::BootDiskPersistent,
        TaskKind::Deploy,
        TaskKind::Release,
    ];

    /// What this kind of task asks of the BMC in one command; `None` for workflows (their
    /// steps say what they do).
    pub fn work(self) -> Option<TaskWork> {
        use BootDevice::{Disk, Pxe};
        let boot = |device, persistent| Some(TaskWork::Boot { device, persistent });
        match self {
            TaskKind::PowerOn => Some(TaskWork::Power(PowerAction::On)),
            TaskKind::PowerOff => Some(TaskWork::Power(PowerAction::Off)),
            TaskKind::PowerCycle => Some(TaskWork::Power(PowerAction::Cycle)),
            TaskKind::PowerReset => Some(TaskWork::Power(PowerAction::Reset)),
            TaskKind::PowerStatus => Some(TaskWork::Power(PowerAction::Status)),
            TaskKind::BootPxe => boot(Pxe, false),
            TaskKind::BootPxePersistent => boot(Pxe, true),
            TaskKind::BootDisk => boot(Disk, false),
            TaskKind::BootDiskPersistent => boot(Disk, true),
            TaskKind::Deploy | TaskKind::Release => None,
        }
    }

    /// Whether tasks of this kind are workflows (steps, created with their machine's
    /// transition, never by `CreateTask`).
    pub fn is_workflow(self) -> bool {
        self.work().is_none()
    }

    /// The kind of task that does `w` (the inverse of [`TaskKind::work`]).
    pub fn for_work(w: TaskWork) -> TaskKind {
        Self::ALL
            .into_iter()
            .find(|k| k.work() == Some(w))
            .expect("every TaskWork has a TaskKind")
    }
}

/// What one step of a workflow does (DESIGN §5). A step needing a BMC is skipped, with a note,
/// on a machine without one (its operator powers it by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Check what the boot needs (the machine's MAC, its address, the image) and bring the
    /// image's blobs into the executing location node's cache.
    Prepare,
    /// Next boot from the network, once (BMC).
    BootPxe,
    /// Power on, or power cycle a machine that is on (BMC). An attempt after one that may have
    /// acted only checks the power: a machine found on is not cycled again. Skipped once the
    /// machine fetched its deploy script (it is booting already).
    PowerOn,
    /// Wait until the machine fetches its deploy script from a location node.
    WaitBoot,
    /// Wait for the installer's callback (`POST /boot/{mac}/done`).
    WaitInstall,
    /// Wait for the wipe image's callback (a release that wipes the machine).
    WaitWipe,
    /// Every boot from the local disk (BMC).
    BootDisk,
    /// Power off (BMC).
    PowerOff,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Prepare => "prepare",
            StepKind::BootPxe => "boot_pxe",
            StepKind::PowerOn => "power_on",
            StepKind::WaitBoot => "wait_boot",
            StepKind::WaitInstall => "wait_install",
            StepKind::WaitWipe => "wait_wipe",
            StepKind::BootDisk => "boot_disk",
            StepKind::PowerOff => "power_off",
        }
    }

    /// Steps that drive the BMC.
    pub fn needs_bmc(self) -> bool {
        matches!(
            self,
            StepKind::BootPxe | StepKind::PowerOn | StepKind::BootDisk | StepKind::PowerOff
        )
    }

    /// Steps that wait for the machine (ended by an event, or by their deadline).
    pub fn is_wait(self) -> bool {
        matches!(
            self,
            StepKind::WaitBoot | StepKind::WaitInstall | StepKind::WaitWipe
        )
    }

    /// What a wait step waits for (in timeout errors).
    pub fn waits_for(self) -> &'static str {
        match self {
            StepKind::WaitBoot => "the machine to fetch its deploy script",
            StepKind::WaitInstall => "the installer's callback",
            StepKind::WaitWipe => "the wipe image's callback",
            _ => "the step",
        }
    }

    /// How long the step may take unless the request says otherwise (ms).
    pub fn default_timeout_ms(self) -> u64 {
        const MIN: u64 = 60_000;
        match self {
            StepKind::Prepare => 30 * MIN,
            StepKind::BootPxe | StepKind::BootDisk | StepKind::PowerOff => 5 * MIN,
            StepKind::PowerOn => 5 * MIN,
            StepKind::WaitBoot => 15 * MIN,
            StepKind::WaitInstall | StepKind::WaitWipe => 60 * MIN,
        }
    }

    /// Attempts the executor makes of a step that failed (BMC errors are often transient),
    /// with backoff between them, before the step fails the workflow. Waits have one.
    pub fn max_attempts(self) -> u32 {
        if self.is_wait() {
            1
        } else {
            3
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Skipped,
    Failed,
    Cancelled,
}

impl StepState {
    /// Succeeded or skipped: the workflow has gone past the step.
    pub fn is_done(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Skipped)
    }
}

/// One step of a workflow task: its state, attempts and timings (leader time, ms since the
/// epoch), what it found or did (`note`) and its error text, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskStep {
    pub kind: StepKind,
    pub state: StepState,
    #[serde(default)]
    pub attempts: u32,
    /// How long one attempt may take (a wait step: how long it waits).
    pub timeout_ms: u64,
    /// The task's generation (its executor's attempt) that started the running attempt of
    /// this step (0: never started).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When the running attempt times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TaskStep {
    pub fn new(kind: StepKind, timeout_ms: u64) -> Self {
        Self {
            kind,
            state: StepState::Pending,
            attempts: 0,
            timeout_ms,
            generation: 0,
            started_at: None,
            deadline: None,
            finished_at: None,
            note: None,
            error: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    /// Succeeded, failed or cancelled: the task will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A replicated unit of work on one machine (DESIGN §5). `generation` fences executors: a
/// result is accepted only with the generation of the claim that started the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    #[serde(flatten)]
    pub meta: Meta,
    pub kind: TaskKind,
    pub machine_id: u64,
    pub state: TaskState,
    pub attempt: u32,
    pub assignee: Option<u64>,
    pub generation: u64,
    pub lease_expires_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// BMC error text, verbatim.
    pub error: Option<String>,
    /// Power state observed when the task finished.
    pub observed_power: Option<PowerState>,
    /// The image a deploy installs, or a release boots to wipe the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A workflow's steps, in order (empty for single BMC commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<TaskStep>,
}

impl Task {
    /// The index of the workflow step to run or wait on: the first one not done. `None` for
    /// single commands and for workflows past their last step.
    pub fn current_step(&self) -> Option<usize> {
        self.steps.iter().position(|s| !s.state.is_done())
    }

    /// The step of `kind`, if the workflow has one.
    pub fn step(&self, kind: StepKind) -> Option<&TaskStep> {
        self.steps.iter().find(|s| s.kind == kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IpRange {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subnet {
    #[serde(flatten)]
    pub meta: Meta,
    pub location: String,
    pub cidr: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    /// Ranges handed out dynamically (discovery); reservations should lie outside them.
    #[serde(default)]
    pub dynamic_ranges: Vec<IpRange>,
    /// Ranges never handed out (infrastructure).
    #[serde(default)]
    pub reserved_ranges: Vec<IpRange>,
}

/// An OS image (template) machines are deployed with. `kernel`/`initrd` are each a blob's
/// digest (`sha256:<hex>`: stored by the cluster, fetched and cached by the location) or an
/// artifact path under the location nodes' artifacts directory (copied there by hand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Image {
    #[serde(flatten)]
    pub meta: Meta,
    pub name: String,
    pub kernel: String,
    pub initrd: String,
    #[serde(default)]
    pub cmdline: String,
    /// The root filesystem's blob, for installers that fetch one (`rackd.rootfs=<url>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
}

impl Image {
    /// The blobs the image is made of (its artifacts given as digests).
    pub fn blobs(&self) -> impl Iterator<Item = crate::Digest> + '_ {
        [Some(&self.kernel), Some(&self.initrd), self.rootfs.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|a| crate::Digest::parse(a).ok())
    }
}

/// One journal record: who did what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub seq: u64,
    pub time: u64,
    pub actor: String,
    /// e.g. `machine.created`, `machine.updated`, `cluster.member_added`.
    pub kind: String,
    pub entity: String,
    pub entity_id: Option<u64>,
    pub message: String,
}

/// Public view of a join token (the secret is only shown once at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinTokenView {
    pub id: u64,
    pub created_at: u64,
    pub expires_at: u64,
    pub used_by_node: Option<u64>,
    pub description: String,
    /// The location the node joining with it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What an API token may do. Ordered: each role may do what the ones before it may.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Reads only (GET).
    Reader,
    /// Reads, inventory, power, deploy and tasks.
    Operator,
    /// Everything, including tokens and cluster membership. Tokens made before roles existed
    /// are admin tokens.
    #[default]
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Reader => "reader",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

/// Public view of an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiTokenView {
    pub id: u64,
    pub name: String,
    pub created_at: u64,
    #[serde(default)]
    pub role: ApiRole,
    /// When the token stops being accepted (leader time, ms); `None`: never.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl ApiTokenView {
    /// Whether the token is expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| now_ms >= t)
    }
}
