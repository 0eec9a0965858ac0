//! rackd-hwctl: hardware control behind one [`Bmc`] trait (DESIGN §5–§6).
//!
//! - [`bmc`]: the `Bmc` trait, power states, boot devices and BMC errors (error text from a
//!   BMC is kept verbatim; secrets never appear in errors).
//! - [`sim`]: a simulated BMC for tests that need many, slow, flaky or dead BMCs.
//! - [`power`]: safe power semantics on top of any `Bmc`: `on` is a power-on (never a cycle),
//!   `off` a power-off, `cycle` only when asked; every action is verified by polling the status
//!   with backoff; a status the BMC cannot report is `unknown`, never `off`; one command at a
//!   time per BMC and a global bound on concurrent BMC sessions.
//!
//! Not done yet (issue 4): the IPMI driver (RMCP+/lanplus, IPMI 1.5), the IPMI proxy relay,
//! power tasks in the replicated state. Must not depend on storage or on the HTTP API.

pub mod bmc;
pub mod power;
pub mod sim;

pub use bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};
pub use power::{PowerAction, PowerController, PowerError, PowerOutcome, VerifyPolicy};
pub use sim::SimBmc;
