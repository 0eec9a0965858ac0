//! rackd-net: the location node's network services (DESIGN §6) and the QUIC links (§1).
//!
//! Planned modules (issue 3 and later): `dhcp` (DHCPv4 with PXE, sans-IO core over dhcproto),
//! `tftp` (RFC 1350/2347/2348/2349/7440, sans-IO transfer state machine), `http_boot`
//! (per-machine iPXE scripts, artifacts, install callback) and `quic` (quinn links between
//! location nodes and voters). Protocol cores here must not depend on tokio or on storage.
//!
//! Nothing is implemented yet; this crate exists so the workspace layout matches the design.
