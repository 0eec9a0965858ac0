//! Integration tests: real `rackd` processes on loopback addresses.

mod api;
mod cluster;
mod location;
mod pxe;
mod util;
