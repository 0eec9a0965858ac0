//! The node's handle on the replicated core: the Raft instance, the local replica of the state
//! machine and the peer network, behind [`ClusterHandle`]. Writes ([`write`]) are stamped with
//! the leader's time here and nowhere else; reads ([`read`]) are made linearizable here;
//! membership ([`membership`]), bootstrap and join ([`bootstrap`]), the node's identity file
//! ([`identity`]), the watcher that notices this node was removed ([`removal`]) and the
//! leader's move to this build's apply rules ([`rules`]) and the cluster's PKI ([`pki`]: the CA,
//! node certificates, the TLS configurations that enforce them; [`peer_auth`]: what the peer
//! transport asks of them; [`certs`]: renewing this node's certificate) live beside them.
//!
//! Layer: below `api`, `services` and `server`; must not import any of them (no axum here).

pub mod bootstrap;
pub mod certs;
pub mod contract;
#[cfg(test)]
pub mod fake;
pub mod identity;
pub mod leadership;
pub mod link;
pub mod location_keys;
pub mod membership;
pub mod peer_auth;
pub mod pki;
pub mod read;
pub mod removal;
pub mod restore;
pub mod rules;
pub mod sealing;
pub mod secrets;
pub mod write;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use rackd_raft::cmd::{Applied, Command};
use rackd_raft::network::PeerNetwork;
use rackd_raft::state::State;
use rackd_raft::NodeInfo;
use rackd_storage::StateMachineStore;
use rackd_types::ApiError;

pub use contract::{Cluster, Follower, MemberRole, RaftRole, RaftStatus};
pub use write::now_ms;

/// openraft instance of this node.
pub type Raft = openraft::Raft<rackd_raft::TypeConfig, rackd_storage::StateMachineStore>;

/// A running node's view of the cluster, shared by the API and the location services.
pub struct ClusterHandle {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub net: PeerNetwork,
    pub http: reqwest::Client,
    pub api_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    /// This node's certificate (live: renewal swaps it, [`certs`]).
    pub tls: pki::NodeTls,
    pub write_timeout: Duration,
    /// Set once this node learned that the cluster removed it (Raft is then shut down).
    pub removed: std::sync::atomic::AtomicBool,
    /// The QUIC link to other members (a location node fetches blobs over it).
    pub link: std::sync::Arc<link::Link>,
}

impl ClusterHandle {
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

    /// The other voters with their peer addresses, the leader first: whom to ask for what
    /// only voters hold (a renewed certificate, a location's key).
    pub fn other_voters_leader_first(&self) -> Vec<(u64, String)> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let mut voters: Vec<(u64, String)> = membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .filter_map(|id| Some((id, membership.get_node(&id)?.peer.clone())))
            .collect();
        voters.sort_by_key(|(id, _)| Some(*id) != m.current_leader);
        voters
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

    /// This node's Raft metrics as a typed [`RaftStatus`].
    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        RaftStatus {
            role: match m.state {
                ServerState::Leader => RaftRole::Leader,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Learner => RaftRole::Learner,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            leader_id: m.current_leader,
            term: m.current_term,
            members: mem.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            voters: mem.voter_ids().collect(),
            commit_index: m.local_committed.as_ref().map(|l| l.index()),
            last_applied: m.last_applied.as_ref().map(|l| l.index()),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            purged_index: m.purged.as_ref().map(|l| l.index()),
            followers: m
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, matched)| {
                    let last_ack_ms = m
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id))
                        .and_then(|t| t.as_ref())
                        .map(|t| openraft::Instant::elapsed(&**t).as_millis() as u64);
                    (
                        *id,
                        Follower {
                            matched: matched.as_ref().map(|l| l.index()),
                            last_ack_ms,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Why Raft stopped on a failure, if it did (a clean shutdown is not a failure).
    pub fn failure(&self) -> Option<String> {
        match &self.raft.metrics().borrow_watched().running_state {
            Err(openraft::errors::Fatal::Stopped) | Ok(()) => None,
            Err(f) => Some(f.to_string()),
        }
    }

    /// Whether this node learned that the cluster removed it.
    pub fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once this node learned that the cluster removed it.
    pub async fn wait_removed(&self) {
        while !self.is_removed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Resolves with the cause once Raft stopped on an error of its own (storage failed, or
    /// its core panicked): this node can no longer write, so its replica is frozen. A normal
    /// stop (shutdown, removal) is not a failure and never resolves this.
    pub async fn wait_failed(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(cause) = self.failure() {
                return cause;
            }
            if rx.changed().await.is_err() {
                // The metrics sender is gone with the core; nothing more will be reported.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Cluster for ClusterHandle {
    fn id(&self) -> u64 {
        self.id
    }
    fn write_timeout(&self) -> Duration {
        self.write_timeout
    }
    fn state(&self) -> State {
        self.sm.read().state.clone()
    }
    fn status(&self) -> RaftStatus {
        ClusterHandle::status(self)
    }
    fn is_removed(&self) -> bool {
        ClusterHandle::is_removed(self)
    }
    fn failure(&self) -> Option<String> {
        ClusterHandle::failure(self)
    }
    fn leader(&self) -> Option<(u64, NodeInfo)> {
        ClusterHandle::leader(self)
    }
    fn wait_leader(&self, timeout: Duration) -> BoxFuture<'_, Option<(u64, NodeInfo)>> {
        Box::pin(ClusterHandle::wait_leader(self, timeout))
    }
    fn applied_index(&self) -> u64 {
        self.sm.applied_index()
    }
    fn applied_state(&self) -> (State, u64) {
        let a = self.sm.read();
        (a.state.clone(), a.last_applied.map_or(0, |l| l.index))
    }
    fn applied_since(&self, seen: u64, at_most: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.sm.wait_applied(seen.saturating_add(1), at_most).await;
        })
    }
    fn propose<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>> {
        Box::pin(ClusterHandle::propose(self, actor, idempotency_key, cmd))
    }
    fn propose_anywhere<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>> {
        Box::pin(ClusterHandle::propose_anywhere(
            self,
            actor,
            idempotency_key,
            cmd,
        ))
    }
    fn linearize(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(ClusterHandle::linearize(self))
    }
    fn add_node(
        &self,
        id: u64,
        info: NodeInfo,
        learner: bool,
    ) -> BoxFuture<'_, Result<MemberRole, ApiError>> {
        Box::pin(ClusterHandle::add_node(self, id, info, learner))
    }
    fn remove_member<'a>(&'a self, actor: &'a str, id: u64) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(ClusterHandle::remove_member(self, actor, id))
    }
    fn cert_validity(&self) -> Option<(u64, u64)> {
        let (issued, expires) = self.tls.validity().ok()?;
        Some((write::epoch_ms(issued), write::epoch_ms(expires)))
    }
    fn location_key(
        &self,
        location_id: u64,
    ) -> BoxFuture<'_, Result<sealing::LocationKey, ApiError>> {
        Box::pin(ClusterHandle::location_key(self, location_id))
    }
    fn fetch_blob<'a>(
        &'a self,
        from: u64,
        digest: &'a rackd_types::Digest,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<crate::blobs::Chunks, ApiError>> {
        Box::pin(async move {
            let Some(info) = self.status().members.get(&from).cloned() else {
                return Err(ApiError::unavailable(format!(
                    "node {from} (holding blob {digest}) is no member"
                )));
            };
            let req = rackd_raft::network::FetchBlobRequest {
                digest: digest.to_string(),
                offset,
                len,
            };
            // Location nodes (learners) fetch over the QUIC link; voters copy among
            // themselves over the peer transport.
            if !self.status().voters.contains(&self.id) {
                return self
                    .link
                    .fetch_blob(from, &info.peer, &req)
                    .await
                    .map_err(ApiError::unavailable);
            }
            self.net
                .fetch_blob(from, &info.peer, &req, Duration::from_secs(10))
                .await
                .map_err(ApiError::unavailable)
        })
    }
    fn cluster_ca(&self) -> Result<pki::CaBundle, ApiError> {
        match pki::Pki::in_data_dir(&self.data_dir).load_ca() {
            Ok(Some(ca)) => Ok(ca),
            Ok(None) => Err(ApiError::unavailable(format!(
                "node {} (the leader) does not hold the cluster CA key yet; retry",
                self.id
            ))),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cluster CA");
                Err(ApiError::unavailable(
                    "the cluster CA cannot be read on the leader",
                ))
            }
        }
    }
}
