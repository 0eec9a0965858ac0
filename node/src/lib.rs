//! rackd: the node (server, HTTP API, location services) and the CLI.
//!
//! # Layers
//!
//! ```text
//!   cli        parse the command line; `up`/`join` start the server, the rest use `client`
//!    │
//!   server     wires storage, Raft, peer gRPC, the API and the services; owns every task and
//!    │         the one shutdown path
//!    ├──────────────┐
//!   api            services    HTTP handlers (one endpoint table) │ DHCP, TFTP, HTTP boot,
//!    │              │          IPMI proxy, task executor
//!    └──────┬───────┘
//!   cluster    the handle on the replicated core: propose, linearize, membership, bootstrap
//!    │         and join, identity; the `Cluster` trait and its in-memory `FakeCluster`
//!   config · client · abort · metrics    validated settings, the typed HTTP client, a task
//!              guard, the Prometheus instruments
//! ```
//!
//! The rule is that arrows point down: a module imports only modules of a lower layer, `api`
//! and `services` never import each other, and nothing imports `server` but the CLI that starts
//! it. `api` and `services` reach the replicated core only through the small
//! [`cluster::Cluster`] trait, so their rules are unit-tested against `FakeCluster` without
//! processes, sockets or RocksDB. `tests/layering.rs` reads every `crate::`/`super::` path in
//! `src/` and fails on an import that points up or on a cycle between sibling modules; a new
//! top-level module must be given a layer there.
//!
//! Below this crate: `rackd-raft` (log payloads, the deterministic state machine, the peer
//! network), `rackd-storage` (RocksDB), `rackd-net` (sans-IO DHCP/TFTP cores), `rackd-hwctl`
//! (BMC drivers and power rules) and `rackd-types` (the API's and the log's shared types).

pub mod abort;
pub mod api;
pub mod backup;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod server;
pub mod services;
