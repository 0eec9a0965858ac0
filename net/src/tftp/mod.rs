//! Read-only TFTP server: RFC 1350 with option negotiation (RFC 2347 blksize/RFC 2348,
//! RFC 2349 timeout/tsize) and windowsize (RFC 7440).
//!
//! - [`proto`]: packet decode/encode (pure).
//! - [`transfer`]: the sans-IO read-transfer state machine.
//! - [`server`]: the tokio shell (sockets, files, path resolution).
//!
//! `netascii` requests are served byte-for-byte like `octet` (no CR/LF translation).

pub mod proto;
pub mod server;
pub mod transfer;

pub use server::{TftpServer, TftpStats};
pub use transfer::Limits;
