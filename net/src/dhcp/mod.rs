//! DHCPv4 server for PXE provisioning, answering from the inventory's reservations.
//!
//! - [`boot`]: PXE/iPXE/UEFI-HTTP boot-file policy (pure).
//! - [`core`]: the sans-IO request → reply decision over the `dhcproto` codec.
//! - [`server`]: the tokio shell (socket, broadcast, relay).
//!
//! Not done yet: the dynamic discovery pool (unknown MACs get no answer), recording
//! discovered machines in the inventory.

pub mod boot;
pub mod core;
pub mod server;

pub use self::core::{Config, Dest, DhcpCore, DhcpStats, Inventory, Reservation};
pub use boot::{BootMode, BootServers};
pub use server::{dhcp_socket, DhcpServer};

#[cfg(test)]
mod tests;
