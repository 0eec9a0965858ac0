//! rackd-net: the location node's network services (DESIGN §6) and the QUIC links (§1).
//!
//! - [`dhcp`]: DHCPv4 with PXE from reservations (sans-IO core + tokio shell).
//! - [`tftp`]: read-only TFTP server (sans-IO transfer core + tokio shell).
//! - [`http`]: static-file rules of the HTTP boot server (ranges, validators, stalls), pure.
//! - [`pagecache`]: page-cache residency checks, so served files never block an async worker
//!   on the disk (TFTP reads, HTTP boot's sendfile).
//!
//! Planned (issue 3 and later): `dhcp` (DHCPv4 with PXE, sans-IO core over dhcproto),
//! `http_boot` (per-machine iPXE scripts, artifacts, install callback) and `quic` (quinn links
//! between location nodes and voters). Protocol cores (`proto`, `transfer`) must not depend on
//! tokio, storage or the clock; only the `server` shells do I/O.

pub mod dhcp;
pub mod http;
pub mod pagecache;
pub mod per_source;
pub mod ra;
pub mod sockbuf;
pub mod tftp;
