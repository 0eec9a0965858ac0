//! HTTP protocol rules the HTTP boot server needs beyond what hyper does: which part of a
//! static file a request asks for ([`file`]: validators, conditional requests, single ranges)
//! when a client that stopped reading is cut off ([`stall`]), and request/response heads for
//! our own HTTP/1.1 connection loop ([`head`]).
//!
//! Pure: no sockets, no files, no clock (callers pass `now`); the tokio shell is
//! `rackd::services::http_boot`.

pub mod file;
pub mod head;
pub mod stall;
