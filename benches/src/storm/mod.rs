//! Parts of the boot-storm benchmark (`storm_bench.rs`): the load clients ([`tftp`], [`http`]),
//! the latency probes beside them ([`probe`]) and the servers under test ([`servers`]).

pub mod http;
pub mod probe;
pub mod servers;
pub mod tftp;
