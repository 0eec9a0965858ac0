//! HTTP protocol rules the HTTP boot server needs beyond what hyper does: which part of a
//! static file a request asks for ([`file`]: validators, conditional requests, single ranges)
//! and when a client that stopped reading is cut off ([`stall`]).
//!
//! Pure: no sockets, no files, no clock (callers pass `now`); the tokio shell is
//! `rackd::services::http_boot`.

pub mod file;
pub mod stall;
