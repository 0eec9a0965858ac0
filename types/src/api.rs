//! HTTP API request and response bodies (`/v1/...`).
//!
//! Update requests have all-optional fields (JSON merge-patch semantics): a field left out is not
//! changed. Every collection answers a [`Page`] with an opaque `next_cursor`.

use serde::{Deserialize, Serialize};

use crate::hw::{BootDevice, PowerAction};

/// One page of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/backup`: the passphrase the cluster CA is sealed with in the backup (at least 12
/// characters; never logged, never stored).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    pub passphrase: String,
}

impl std::fmt::Debug for CreateBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateBackup").finish_non_exhaustive()
    }
}

/// `GET /v1/events`: which journal entries, as a page or (`follow=true`) as a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventQuery {
    /// Only events with a greater sequence number. A stream without it starts after the
    /// newest event (only what happens from now on); its `Last-Event-ID` header wins over it.
    pub after: Option<u64>,
    /// Page size (pages only).
    pub limit: Option<usize>,
    /// Serve from the local replica without a ReadIndex round trip.
    pub stale: Option<bool>,
    /// Stream the journal as server-sent events instead of answering one page.
    pub follow: Option<bool>,
    /// Only events of this kind (`machine.created`), or of this family (`machine`: every
    /// `machine.*` kind).
    pub kind: Option<String>,
    /// Only events about this kind of entity (`machine`, `task`, `location`, …).
    pub entity: Option<String>,
    /// Only events about the entity with this id (with `entity`).
    pub entity_id: Option<u64>,
}

/// Sent on a followed journal as `event: gap`: the events after `after` and before `oldest`
/// left the journal (it keeps the newest 10,000) before this client read them. The stream
/// goes on from `oldest`; a client that keeps a copy of something should read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventGap {
    pub after: u64,
    pub oldest: u64,
}

/// The first message of a followed journal (`event: open`, `id:` the same number): the
/// stream goes on with the events after `after`. A client that reconnects before any event
/// came resumes from here, so nothing between its two connections is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventStreamOpen {
    pub after: u64,
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

/// `POST /v1/machines/{id}/deploy`: deploy `image` on a ready machine.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployMachine {
    pub image: String,
    /// How long to wait for the machine to fetch its deploy script once it was powered on
    /// (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_timeout_secs: Option<u64>,
    /// How long to wait for the installer's callback once the script was fetched (default
    /// 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_timeout_secs: Option<u64>,
}

/// `POST /v1/machines/{id}/release`: a deployed (or failed) machine is powered off and
/// returns to `ready`; with `wipe_image`, it first boots that image (which erases its disks
/// and calls back like an installer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseMachine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_image: Option<String>,
    /// How long to wait for the machine to fetch the wipe image's script (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_timeout_secs: Option<u64>,
    /// How long to wait for the wipe image's callback (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_timeout_secs: Option<u64>,
}

/// `POST /v1/machines/{id}/power`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub action: PowerAction,
}

/// `POST /v1/machines/{id}/boot-device`: set the BMC's boot device (a task).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootDeviceRequest {
    pub device: BootDevice,
    /// Keep the setting for every boot (default: the next boot only).
    #[serde(default)]
    pub persistent: bool,
}

/// `POST /v1/machines/{id}/bmc-session`: let `source` reach the machine's BMC through the IPMI
/// proxies of its location until the grant expires (no other address gets through them).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcSessionRequest {
    /// The operator's address (an IP) the proxy accepts this machine's IPMI traffic from.
    pub source: String,
    /// How long the grant lasts, in seconds (default 3600, at most 28800).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Default and longest lifetime of a BMC session grant.
pub const BMC_SESSION_DEFAULT_TTL_SECS: u64 = 3600;
pub const BMC_SESSION_MAX_TTL_SECS: u64 = 8 * 3600;

/// A grant of the IPMI proxy: `source` may reach machine `machine_id`'s BMC at
/// `PROXY_IP:BASE_PORT+machine_id` on its location's nodes until `expires_at` (ms, leader time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BmcSession {
    pub machine_id: u64,
    pub source: String,
    pub expires_at: u64,
}

/// `DELETE /v1/machines/{id}/bmc-sessions?source=IP`: close one source's session, or all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcSessionQuery {
    pub source: Option<String>,
}

/// `POST /boot/{mac}/done?token=...` body-less callback answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployDone {
    pub machine_id: u64,
    pub state: String,
}

/// `GET /v1/health` (no auth).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    pub node_id: u64,
    /// leader | follower | learner | candidate | shutdown | removed | failed
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
    /// Why Raft stopped on a failure (`raft_state` is `failed`): the storage cannot write.
    /// The node has stopped its location services and executor, answers only this endpoint,
    /// and exits within seconds for its supervisor to restart it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When this node's certificate in use was issued (ms since the Unix epoch, the issuing
    /// voter's clock); a renewal changes it without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_issued_at_ms: Option<u64>,
    /// When this node's certificate expires (ms); it is renewed well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_at_ms: Option<u64>,
}

/// `POST /v1/cluster/certificates/renew`: every node renews a certificate issued before
/// `renew_before_ms` within a minute (each generates a new key; a voter signs it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct CertRenewal {
    pub renew_before_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Member {
    pub id: u64,
    pub api_addr: String,
    pub peer_addr: String,
    /// voter | learner
    pub role: String,
    /// The newest apply rules this member's build knows (2 for builds that do not report it).
    #[serde(default)]
    pub apply_rules: u32,
    /// How the leader sees this member: present only in the leader's answer, for members
    /// other than itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MemberProgress>,
}

/// The leader's view of one member's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberProgress {
    /// The highest log index the leader knows the member holds (none: not yet known).
    pub matched_index: Option<u64>,
    /// Entries the member is behind the leader's last log index.
    pub lag: u64,
    /// Milliseconds since the member last acknowledged the leader (none: never).
    pub last_contact_ms: Option<u64>,
    /// It acknowledged the leader within the last 5 seconds.
    pub reachable: bool,
}

/// `GET /v1/ready`: this node can serve linearizable reads and take writes now.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ready {
    pub node_id: u64,
    pub leader_id: u64,
    /// The index this node has applied (at least the leader's commit index when it answered).
    pub last_applied: Option<u64>,
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
    /// The apply rules the cluster decides entries by; it moves to newer ones once every
    /// member's `apply_rules` reaches them.
    #[serde(default)]
    pub apply_rules: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub description: String,
    /// The location (site) the joining node will serve: it is bound to it, and only its
    /// secrets' key is handed to it (a location learner's token should name its site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
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
    /// Default `admin` (what every token was before roles).
    #[serde(default)]
    pub role: crate::ApiRole,
    /// Seconds until the token expires; absent: it does not expire.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
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
    /// Phase 1: a PEM certificate signing request for the key this node generated; the
    /// cluster CA answers with the node's certificate. Required in phase 1.
    #[serde(default)]
    pub csr: Option<String>,
    /// The newest apply rules the joining node's build knows; absent: a build from before
    /// joiners sent it (which knows rules 2). A cluster refuses a joiner whose build does not
    /// know the rules it decides entries by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_rules: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cluster_id: String,
    /// Phase 2 only: the role the node ended up with.
    pub role: Option<String>,
    /// Phase 1 only: the cluster CA certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Phase 1 only: this node's certificate (PEM), issued from its CSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
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

/// The base URL of a member's advertised API address: `https://HOST:PORT` as advertised by a
/// node serving TLS, `http://HOST:PORT` for a bare `HOST:PORT` (a node serving plain HTTP).
pub fn api_url(addr: &str) -> String {
    if addr.starts_with("https://") || addr.starts_with("http://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod api_url_tests {
    #[test]
    fn bare_addresses_are_plain_http_and_urls_are_kept() {
        assert_eq!(super::api_url("10.0.0.1:7080"), "http://10.0.0.1:7080");
        assert_eq!(
            super::api_url("https://10.0.0.1:7080/"),
            "https://10.0.0.1:7080"
        );
        assert_eq!(super::api_url("http://[::1]:7080"), "http://[::1]:7080");
    }
}
