//! Integration tests: real `rackd` processes on loopback addresses.

mod api;
mod api_tls;
mod appliance;
mod blobs;
mod certs;
mod cluster;
mod failstop;
mod fencing;
mod http_boot;
mod ipmi;
mod ipmi_sim;
mod lease;
mod limits;
mod location;
mod metrics;
mod peer_tls;
mod power;
mod pxe;
mod removed;
mod restart;
mod robustness;
mod schemathesis;
mod snapshot_scale;
mod util;
mod watch;
mod workflow;
