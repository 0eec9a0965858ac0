//! HTTP API request and response bodies (`/v1/...`).
//!
//! Update requests have all-optional fields (JSON merge-patch semantics): a field left out is not
//! changed. Every collection answers a [`Page`] with an opaque `next_cursor`.

use serde::{Deserialize, Serialize};

use crate::entity::{BmcSpec, IpRange, MachineState};

/// One page of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<usize>,
    pub location: Option<String>,
    pub state: Option<String>,
    pub rack: Option<u64>,
    pub stale: Option<bool>,
}

pub const DEFAULT_PAGE_LIMIT: usize = 100;
pub const MAX_PAGE_LIMIT: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocation {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Hand out dynamic addresses to unknown machines and record them (default off).
    #[serde(default)]
    pub discovery: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLocation {
    pub description: Option<String>,
    pub discovery: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRack {
    pub location: String,
    pub name: String,
    #[serde(default = "default_rack_height")]
    pub height_units: u32,
}

fn default_rack_height() -> u32 {
    42
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRack {
    pub name: Option<String>,
    pub height_units: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMachine {
    pub hostname: String,
    pub location: String,
    #[serde(default)]
    pub rack_id: Option<u64>,
    #[serde(default)]
    pub rack_unit: Option<u32>,
    #[serde(default)]
    pub macs: Vec<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub bmc: Option<BmcSpec>,
    #[serde(default)]
    pub state: Option<MachineState>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `PATCH /v1/machines/{id}`. `rack_id`/`rack_unit`/`bmc` use `Some(None)` to clear.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMachine {
    pub hostname: Option<String>,
    pub location: Option<String>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<u64>")]
    pub rack_id: Option<Option<u64>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<u32>")]
    pub rack_unit: Option<Option<u32>>,
    pub macs: Option<Vec<String>>,
    pub ips: Option<Vec<String>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<BmcSpec>")]
    pub bmc: Option<Option<BmcSpec>>,
    pub state: Option<MachineState>,
    pub state_cause: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    pub name: String,
    pub kernel: String,
    pub initrd: String,
    #[serde(default)]
    pub cmdline: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateImage {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

/// `POST /v1/machines/{id}/deploy`: deploy `image` on a ready machine.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployMachine {
    pub image: String,
}

/// `POST /v1/machines/{id}/power`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// on | off | cycle | reset | status
    pub action: String,
}

/// `POST /v1/machines/{id}/boot-device`: set the BMC's boot device (a task).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootDeviceRequest {
    /// pxe | disk
    pub device: String,
    /// Keep the setting for every boot (default: the next boot only).
    #[serde(default)]
    pub persistent: bool,
}

/// `POST /boot/{mac}/done?token=...` body-less callback answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployDone {
    pub machine_id: u64,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubnet {
    pub location: String,
    pub cidr: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dynamic_ranges: Vec<IpRange>,
    #[serde(default)]
    pub reserved_ranges: Vec<IpRange>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubnet {
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub gateway: Option<Option<String>>,
    pub dns: Option<Vec<String>>,
    pub dynamic_ranges: Option<Vec<IpRange>>,
    pub reserved_ranges: Option<Vec<IpRange>>,
}

/// `GET /v1/health` (no auth).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    pub node_id: u64,
    /// leader | follower | learner | candidate | shutdown | removed
    pub raft_state: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Last log index included in this node's current snapshot, if any.
    pub snapshot_index: Option<u64>,
    /// Log entries up to this index have been purged.
    pub purged_index: Option<u64>,
    #[serde(default)]
    pub cluster_id: String,
    /// Node ids of the membership this node applies (voters and learners).
    #[serde(default)]
    pub members: Vec<u64>,
    /// This node learned that the cluster removed it; Raft is stopped.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Member {
    pub id: u64,
    pub api_addr: String,
    pub peer_addr: String,
    /// voter | learner
    pub role: String,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub members: Vec<Member>,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Highest log index known committed by this node (its applied index on followers).
    pub commit_index: Option<u64>,
    pub last_applied: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedJoinToken {
    pub id: u64,
    /// The secret; shown only once.
    pub token: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedApiToken {
    pub id: u64,
    pub name: String,
    /// The secret; shown only once.
    pub token: String,
}

/// Join phase 1: exchange a join token for a fresh node id.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    pub api_addr: String,
    pub peer_addr: String,
    #[serde(default)]
    pub learner: bool,
    /// Set on phase 2 (and on retries): the id allocated in phase 1.
    #[serde(default)]
    pub node_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cluster_id: String,
    /// Phase 2 only: the role the node ended up with.
    pub role: Option<String>,
}

/// Serde helper for `Option<Option<T>>`: absent = no change, `null` = clear, value = set.
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}
