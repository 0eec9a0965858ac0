//! The [`Cluster`] trait: the small surface the API and the location services use to reach the
//! replicated core — propose a command (on the leader, or wherever the leader is), make a read
//! linearizable, read the local replica, read the Raft status, and change membership. The real
//! implementation is [`super::ClusterHandle`]; [`super::fake::FakeCluster`] applies commands to
//! an in-memory state so handlers and planning rules are unit-tested without processes.
//!
//! Layer: part of `cluster`; depends on `rackd_raft` types only (no axum, no services).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use rackd_raft::cmd::{Applied, Command};
use rackd_raft::state::State;
use rackd_raft::NodeInfo;
use rackd_types::ApiError;

/// This node's Raft role, as the health endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaftRole {
    Leader,
    #[default]
    Follower,
    Learner,
    Candidate,
    Shutdown,
}

impl RaftRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Learner => "learner",
            RaftRole::Candidate => "candidate",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

/// What a member ends up as after a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        }
    }
}

/// A typed view of this node's Raft metrics (what health and cluster info report).
#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    pub role: RaftRole,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Every member (voters and learners) with its addresses.
    pub members: BTreeMap<u64, NodeInfo>,
    pub voters: BTreeSet<u64>,
    pub commit_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader, every other member's replication: empty elsewhere.
    pub followers: BTreeMap<u64, Follower>,
}

/// A member that acknowledged the leader within this long counts as reachable.
pub const REACHABLE_MS: u64 = 5_000;

/// How far the leader has replicated to one member, and when it last heard from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Follower {
    /// The highest log index the member is known to hold.
    pub matched: Option<u64>,
    /// Milliseconds since the member last acknowledged a heartbeat or entries (none: never).
    pub last_ack_ms: Option<u64>,
}

impl Follower {
    /// Whether the member acknowledged the leader within [`REACHABLE_MS`].
    pub fn reachable(&self) -> bool {
        self.last_ack_ms.is_some_and(|ms| ms < REACHABLE_MS)
    }

    /// Entries behind the leader's `last_log_index`.
    pub fn lag(&self, last_log_index: Option<u64>) -> u64 {
        last_log_index
            .unwrap_or(0)
            .saturating_sub(self.matched.unwrap_or(0))
    }
}

/// The node's handle on the replicated core, as the API and the services see it.
/// Object-safe: used as `Arc<dyn Cluster>`.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn id(&self) -> u64;
    /// How long a write or a linearizable read may wait for a quorum.
    fn write_timeout(&self) -> Duration;
    /// The local replica's state (an O(1) copy-on-write clone; may be behind the leader
    /// unless [`Cluster::linearize`] returned first).
    fn state(&self) -> State;
    /// The local replica's state with the log index it stands at, read together.
    fn applied_state(&self) -> (State, u64) {
        let index = self.applied_index();
        (self.state(), index)
    }
    /// The Raft status of this node.
    fn status(&self) -> RaftStatus;
    /// Whether this node learned that the cluster removed it.
    fn is_removed(&self) -> bool;
    /// Why this node's Raft stopped on a failure (its storage cannot write), if it did: the
    /// node stops serving and exits.
    fn failure(&self) -> Option<String>;
    /// The current leader's id and addresses, as this node knows them.
    fn leader(&self) -> Option<(u64, NodeInfo)>;
    fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.id())
    }
    /// Wait (bounded) until some leader is known.
    fn wait_leader(&self, timeout: Duration) -> BoxFuture<'_, Option<(u64, NodeInfo)>>;
    /// Propose on this node, which must be the leader; the leader stamps the time.
    fn propose<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>>;
    /// Propose wherever the leader is (cluster-internal writes), retried until the write
    /// timeout; pass an idempotency key so a retry applies at most once.
    fn propose_anywhere<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>>;
    /// Make the next read of [`Cluster::state`] linearizable.
    fn linearize(&self) -> BoxFuture<'_, Result<(), ApiError>>;
    /// The last log index this node's replica applied (0 before any). A [`Cluster::state`]
    /// read after this call is at least that new.
    fn applied_index(&self) -> u64 {
        0
    }
    /// Resolves when this node's replica applied beyond index `seen`, or after `at_most`.
    /// Read [`Cluster::applied_index`] before the state to wait on and no apply is missed.
    fn applied_since(&self, seen: u64, at_most: Duration) -> BoxFuture<'_, ()> {
        let _ = seen;
        Box::pin(tokio::time::sleep(at_most))
    }
    /// Resolves when this node's replica applied something new, or after `at_most` (what
    /// waits on the replica, such as an executor, wakes at once when work arrives).
    fn applied_changed(&self, at_most: Duration) -> BoxFuture<'_, ()> {
        self.applied_since(self.applied_index(), at_most)
    }
    /// Join phase 2 on the leader: add `id` as a learner, wait until it caught up, promote it
    /// unless `learner`. Safe to retry.
    fn add_node(
        &self,
        id: u64,
        info: NodeInfo,
        learner: bool,
    ) -> BoxFuture<'_, Result<MemberRole, ApiError>>;
    /// Remove member `id` and journal it; never the last voter.
    fn remove_member<'a>(&'a self, actor: &'a str, id: u64) -> BoxFuture<'a, Result<(), ApiError>>;
    /// The cluster CA with its key, as this node holds it (voters do; learners never), to
    /// issue a joining node's certificate. Unavailable where the key is not held.
    fn cluster_ca(&self) -> Result<super::pki::CaBundle, ApiError>;
    /// When this node's certificate in use was issued and expires (ms since the epoch), if
    /// it has one.
    fn cert_validity(&self) -> Option<(u64, u64)> {
        None
    }
    /// The key secrets of location `location_id` are sealed with: derived where the CA key is
    /// held (voters), else this node's copy, else fetched from a voter and kept
    /// (`super::sealing`).
    fn location_key(
        &self,
        location_id: u64,
    ) -> BoxFuture<'_, Result<super::sealing::LocationKey, ApiError>>;
    /// Stream `len` bytes of blob `digest` from `offset` out of member `from`'s copy (over
    /// the peer transport). The bytes are not verified here: the receiver hashes them.
    fn fetch_blob<'a>(
        &'a self,
        from: u64,
        digest: &'a rackd_types::Digest,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<crate::blobs::Chunks, ApiError>>;
}

/// The rule for removing member `id`: it must be a member, and never the last voter. Returns
/// whether it is a voter (voters leave through a joint change, learners directly).
pub fn check_removal(status: &RaftStatus, id: u64) -> Result<bool, ApiError> {
    if !status.members.contains_key(&id) {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    }
    let is_voter = status.voters.contains(&id);
    if is_voter && status.voters.len() == 1 {
        return Err(ApiError::conflict("cannot remove the last voter"));
    }
    Ok(is_voter)
}
