//! DHCPv4 server for PXE provisioning, answering from the inventory's reservations.
//!
//! - [`boot`]: PXE/iPXE/UEFI-HTTP boot-file policy (pure).
//! - [`core`]: the sans-IO request → reply decision over the `dhcproto` codec.
//! - [`server`]: the tokio shell (socket, broadcast, relay).
//!
//! Unknown MACs get an address from the location's dynamic ranges only when discovery is on
//! (see [`Inventory::discovery_pools`]); the shell reports each such MAC once so the node can
//! record the machine as `new`.

pub mod boot;
pub mod core;
pub mod server;

pub use self::core::{
    Config, Dest, DhcpCore, DhcpStats, DiscoveryLimit, Inventory, Pool, PoolShare, Reservation,
    OFFER_HOLD,
};
pub use boot::{BootMode, BootServers};
pub use server::{dhcp_socket, DhcpServer};

#[cfg(test)]
mod tests;
