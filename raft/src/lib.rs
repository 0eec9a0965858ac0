//! rackd-raft: the replicated core's consensus layer.
//!
//! - [`TypeConfig`] and the [`typ`] aliases wrap openraft so an upgrade is a small edit.
//! - [`cmd`]: the [`cmd::Request`] written to the log (a [`cmd::Command`] plus the leader-stamped
//!   time, actor and idempotency key) and the [`cmd::Response`] apply returns.
//! - [`state`]: the deterministic state machine ([`state::State::apply`]) — pure, no clock, no
//!   randomness, no I/O. Persistence of its tables is the storage crate's job.
//! - [`network`]: Raft RPCs over tonic gRPC (client factory + server), plus the ReadIndex RPC
//!   followers use for linearizable reads.
//!
//! This crate must not depend on RocksDB or on the HTTP API.

pub mod cmd;
pub mod codec;
pub mod network;
pub mod peer_tls;
pub mod state;

#[cfg(test)]
mod compat_tests;

use serde::{Deserialize, Serialize};

/// Address book entry of a member, replicated in the membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// HTTP API address (`host:port`).
    pub api: String,
    /// Peer gRPC address (`host:port`).
    pub peer: String,
    /// The newest apply rules this member's build knows (a number, never decoded into
    /// [`state::ApplyRules`], so a member of an older build still reads a newer one's entry).
    /// 0: not reported (a build from before members reported it, which knows rules 2). The
    /// leader moves the cluster to newer rules, and proposes commands introduced with them,
    /// only once every member reports knowing them ([`NodeInfo::known_rules`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub apply_rules: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodeInfo {
    /// A member entry naming this build's apply rules.
    pub fn new(api: impl Into<String>, peer: impl Into<String>) -> NodeInfo {
        NodeInfo {
            api: api.into(),
            peer: peer.into(),
            apply_rules: state::ApplyRules::CURRENT.number(),
        }
    }

    /// The newest apply rules this member's build decodes and applies. Builds that did not
    /// report it know rules 2: a cluster of format-1 builds cannot take format-2 members
    /// (docs/architecture.md, "Upgrades"), and builds of format 2 reported nothing.
    pub fn known_rules(&self) -> u32 {
        self.apply_rules.max(state::ApplyRules::Format2.number())
    }
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "api={} peer={}", self.api, self.peer)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// rackd's openraft type configuration.
    pub TypeConfig:
        D = cmd::Request,
        R = cmd::Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// Concrete aliases of openraft's generic types for [`TypeConfig`].
pub mod typ {
    use super::TypeConfig;

    pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
    pub type Vote = openraft::alias::VoteOf<TypeConfig>;
    pub type Entry = openraft::alias::EntryOf<TypeConfig>;
    pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
    pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
    pub type Membership = openraft::Membership<crate::NodeId, crate::NodeInfo>;
    pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
    pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;
    pub type StorageError = openraft::StorageError<TypeConfig>;
    pub type RPCError = openraft::errors::RPCError<TypeConfig>;
    pub type RaftError<E = openraft::errors::Infallible> =
        openraft::errors::RaftError<TypeConfig, E>;
    pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
    pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
    pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
    pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
    pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
}
