//! IPMI over LAN. [`wire`] and [`client`] are the sans-IO protocol (RMCP, IPMI 1.5 sessions,
//! RMCP+ with RAKP, integrity and AES), [`commands`] the chassis/app commands, [`driver`] the
//! tokio shell implementing [`crate::Bmc`].
//!
//! Written here rather than on `ipmi-rs` 0.6 (which DESIGN §2 named): that crate's IPMI 1.5
//! sessions fail against OpenIPMI's BMC (auth code mismatch), it never raises the session
//! privilege (so chassis control gets completion code 0xd4), fixes cipher suite 3, does not
//! retransmit and cannot close its sessions.

pub mod client;
pub mod commands;
pub mod driver;
pub mod wire;

pub use client::{Client, ClientConfig, ClientError, LanVersion, Step};
pub use driver::IpmiBmc;

#[cfg(test)]
mod tests;
