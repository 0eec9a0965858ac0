//! rackd-hwctl: hardware control behind one `Bmc` trait (DESIGN §5–§6).
//!
//! Planned (issue 4): an IPMI driver (RMCP+/lanplus and IPMI 1.5), a simulated BMC that can be
//! made slow, flaky or dead, safe power semantics (on/off/cycle distinct, verified by polling,
//! `unknown` never treated as `off`, one command per BMC) and the IPMI proxy relay. Secrets
//! never appear in logs or errors. Must not depend on storage or on the HTTP API.
//!
//! Nothing is implemented yet; this crate exists so the workspace layout matches the design.
