//! rackd-types: the one definition of every entity and every HTTP API request/response type.
//!
//! Shared by the server (`rackd` node), the state machine (`rackd-raft`), the CLI and the tests.
//! This crate must not depend on tokio, RocksDB, openraft or any HTTP stack: it is plain data,
//! validation helpers (MAC/CIDR normalization) and the stable API error codes.

pub mod api;
pub mod blob;
pub mod entity;
pub mod error;
pub mod hw;
pub mod net;
pub mod webhook;
pub mod write;

pub use api::*;
pub use blob::{Blob, Digest, Exposition, Octets};
pub use entity::*;
pub use error::{ApiError, ErrorBody, ErrorCode, RETRY_SAME_KEY};
pub use hw::*;
pub use webhook::{CreatedWebhook, SecretText, Webhook, WebhookDelivery};
pub use write::*;
