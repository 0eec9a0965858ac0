//! The replicated command log: what is written to Raft and what applying it returns.
//!
//! A [`Request`] is stamped by the leader (`time_ms`, `actor`) before it is proposed; `apply`
//! uses that stamp and never the local clock. Fields added later must carry `#[serde(default)]`
//! so old log entries still decode.

use rackd_types::{
    ApiError, CreateLocation, CreateMachine, CreateRack, CreateSubnet, UpdateLocation,
    UpdateMachine, UpdateRack, UpdateSubnet,
};
use serde::{Deserialize, Serialize};

/// One log entry's application payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Milliseconds since the Unix epoch, stamped by the leader that proposed the entry.
    pub time_ms: u64,
    /// Who asked (API token name, `system`, or `node:<id>`).
    pub actor: String,
    /// Client-supplied `Idempotency-Key`; a repeated key returns the first success.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub cmd: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} by {}", self.cmd.name(), self.time_ms, self.actor)
    }
}

/// Every state change of the inventory and cluster metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// First write of a new cluster: its id and the admin API token (hashed).
    Bootstrap {
        cluster_id: String,
        admin_token_hash: String,
    },
    CreateLocation(CreateLocation),
    UpdateLocation {
        id: u64,
        if_match: Option<u64>,
        patch: UpdateLocation,
    },
    DeleteLocation {
        id: u64,
        if_match: Option<u64>,
    },
    CreateRack(CreateRack),
    UpdateRack {
        id: u64,
        if_match: Option<u64>,
        patch: UpdateRack,
    },
    DeleteRack {
        id: u64,
        if_match: Option<u64>,
    },
    CreateMachine(CreateMachine),
    UpdateMachine {
        id: u64,
        if_match: Option<u64>,
        patch: UpdateMachine,
    },
    DeleteMachine {
        id: u64,
        if_match: Option<u64>,
    },
    CreateSubnet(CreateSubnet),
    UpdateSubnet {
        id: u64,
        if_match: Option<u64>,
        patch: UpdateSubnet,
    },
    DeleteSubnet {
        id: u64,
        if_match: Option<u64>,
    },
    CreateJoinToken {
        token_hash: String,
        ttl_ms: u64,
        description: String,
    },
    /// Join phase 1: consume a join token and allocate a fresh node id (never reused).
    AllocateNodeId {
        token_hash: String,
        api: String,
        peer: String,
    },
    CreateApiToken {
        name: String,
        token_hash: String,
    },
    /// Record a cluster event that is not itself a state change here (membership changes are
    /// applied by openraft; the journal entry makes them visible in `/v1/events`).
    Journal {
        kind: String,
        entity: String,
        entity_id: Option<u64>,
        message: String,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Bootstrap { .. } => "bootstrap",
            Command::CreateLocation(_) => "create_location",
            Command::UpdateLocation { .. } => "update_location",
            Command::DeleteLocation { .. } => "delete_location",
            Command::CreateRack(_) => "create_rack",
            Command::UpdateRack { .. } => "update_rack",
            Command::DeleteRack { .. } => "delete_rack",
            Command::CreateMachine(_) => "create_machine",
            Command::UpdateMachine { .. } => "update_machine",
            Command::DeleteMachine { .. } => "delete_machine",
            Command::CreateSubnet(_) => "create_subnet",
            Command::UpdateSubnet { .. } => "update_subnet",
            Command::DeleteSubnet { .. } => "delete_subnet",
            Command::CreateJoinToken { .. } => "create_join_token",
            Command::AllocateNodeId { .. } => "allocate_node_id",
            Command::CreateApiToken { .. } => "create_api_token",
            Command::Journal { .. } => "journal",
        }
    }
}

/// What applying a [`Request`] produced: the JSON body of the API answer, or an API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response(pub Result<serde_json::Value, ApiError>);

impl Response {
    pub fn ok<T: Serialize>(v: &T) -> Self {
        match serde_json::to_value(v) {
            Ok(v) => Response(Ok(v)),
            Err(e) => Response(Err(ApiError::internal(format!("encode response: {e}")))),
        }
    }
    pub fn err(e: ApiError) -> Self {
        Response(Err(e))
    }
}
