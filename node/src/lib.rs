//! rackd: the node runtime, the HTTP API and the CLI.
//!
//! - [`runtime`] starts a node: opens storage, binds listeners, builds Raft, then bootstraps,
//!   joins or resumes (never re-initializes a cluster that already exists).
//! - [`api`] is the HA HTTP API: every node answers; writes are forwarded to the leader; reads
//!   are linearizable (ReadIndex through the leader) unless `?stale=true`.
//! - [`client`] is the typed HTTP client the CLI and the tests use (shared types from
//!   `rackd-types`).
//! - [`cli`] parses the command line.

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod executor;
pub mod http_boot;
pub mod identity;
pub mod image;
pub mod ipmi_proxy;
pub mod location;
pub mod output;
pub mod removal;
pub mod runtime;

/// openraft instance of this node.
pub type Raft = openraft::Raft<rackd_raft::TypeConfig, rackd_storage::StateMachineStore>;

/// Milliseconds since the Unix epoch (used only to stamp proposals on the leader).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lower-case hex SHA-256 of a secret (tokens are stored only as this hash).
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A fresh random secret with the given prefix (256 bits of entropy).
pub fn new_secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}
