//! The `Bmc` trait every driver implements (IPMI, simulated, …).

use std::future::Future;

use serde::{Deserialize, Serialize};

/// Power states and boot devices are the workspace's one definition (`rackd-types`).
pub use rackd_types::{BootDevice, PowerState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcInfo {
    pub manufacturer_id: u32,
    pub product_id: u16,
    pub firmware: String,
    pub ipmi_version: String,
}

/// BMC failures. Messages from the BMC are kept verbatim; no variant carries a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {address} did not answer within {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u64 },
    #[error("BMC {address} rejected the credentials: {reason}")]
    Auth { address: String, reason: String },
    /// A non-idempotent command (cycle, reset) was sent but never acknowledged: it may or may
    /// not have happened, so it is not repeated.
    #[error("BMC {address}: {operation} was sent but not acknowledged within {timeout_ms} ms; its effect is unknown")]
    Unconfirmed {
        address: String,
        operation: String,
        timeout_ms: u64,
    },
    #[error("BMC {address} returned an error: {message}")]
    Bmc { address: String, message: String },
    #[error("BMC {address} does not support {operation}")]
    Unsupported { address: String, operation: String },
    /// Not sent: this node's lease on the work ran out by its own clock (it may have been taken
    /// over by another node). Never retried.
    #[error("BMC {address}: command not sent: this node's lease on the task has run out")]
    Fenced { address: String },
}

/// One baseboard management controller. Implementations do one round trip per call; retries,
/// verification and serialization live in [`crate::power`].
pub trait Bmc: Send + Sync {
    /// Address for logs and errors (never the password).
    fn address(&self) -> String;
    fn power_status(&self) -> impl Future<Output = Result<PowerState, BmcError>> + Send;
    fn power_on(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
    fn power_off(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
    fn power_cycle(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
    fn hard_reset(&self) -> impl Future<Output = Result<(), BmcError>> + Send;
    fn set_boot_device(
        &self,
        dev: BootDevice,
        persistent: bool,
    ) -> impl Future<Output = Result<(), BmcError>> + Send;
    fn info(&self) -> impl Future<Output = Result<BmcInfo, BmcError>> + Send;
}
