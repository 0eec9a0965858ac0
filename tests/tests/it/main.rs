//! Integration tests: real `rackd` processes on loopback addresses.

mod api;
mod appliance;
mod cluster;
mod ipmi;
mod ipmi_sim;
mod location;
mod power;
mod pxe;
mod util;
