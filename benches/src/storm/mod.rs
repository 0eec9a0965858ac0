//! Parts of the boot-storm benchmark (`storm_bench.rs`): the load clients ([`tftp`], [`http`])
//! and the servers under test ([`servers`]).

pub mod http;
pub mod servers;
pub mod tftp;
