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
//! - [`fence`]: self-fencing: a `Bmc` wrapper that sends nothing once this node's lease on
//!   the work has run out by its own monotonic clock.
//! - [`ipmi`]: the IPMI-over-LAN driver (RMCP+ and IPMI 1.5), sans-IO core plus tokio shell.
//! - [`relay`]: the sans-IO core of the IPMI proxy (UDP relay to a location's BMCs).
//! - [`any`]: one type over the drivers, picked at run time.
//!
//! Must not depend on storage, the replicated state or the HTTP API.

pub mod any;
pub mod bmc;
pub mod fence;
pub mod ipmi;
pub mod power;
pub mod relay;
pub mod sim;

pub use any::AnyBmc;
pub use bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};
pub use fence::{Fence, Fenced};
pub use ipmi::IpmiBmc;
pub use power::{PowerAction, PowerController, PowerError, PowerOutcome, VerifyPolicy};
pub use sim::SimBmc;
