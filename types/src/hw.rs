//! The words of hardware control, one definition each: what a BMC reports ([`PowerState`]),
//! what an operator asks for ([`PowerAction`], [`BootDevice`]) and how a BMC is spoken to
//! ([`BmcDriver`]). The API, the log, the state machine, the executor and `rackd-hwctl` all
//! use these enums, so the accepted strings are written down once (the JSON form is the
//! snake_case name).
//!
//! Layer: plain data; no dependencies inside the crate.

use serde::{Deserialize, Serialize};

/// Chassis power as reported by the BMC. `Unknown` means the BMC could not say; it is never
/// treated as `Off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power action an operator asks for (`POST /v1/machines/{id}/power`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    Off,
    Cycle,
    Reset,
    Status,
}

impl PowerAction {
    pub const ALL: [PowerAction; 5] = [
        PowerAction::On,
        PowerAction::Off,
        PowerAction::Cycle,
        PowerAction::Reset,
        PowerAction::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
            PowerAction::Status => "status",
        }
    }
}

/// Where a machine boots from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Pxe,
    Disk,
}

impl BootDevice {
    pub const ALL: [BootDevice; 2] = [BootDevice::Pxe, BootDevice::Disk];

    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
        }
    }
}

/// How rackd talks to a machine's BMC. `ipmi` is IPMI 2.0 (RMCP+, "lanplus"), `ipmi15` IPMI
/// 1.5 ("lan"), `sim` an in-process simulated BMC for tests and demos.
///
/// A name this build does not know decodes as [`BmcDriver::Unsupported`] (so a log entry
/// naming a driver from another version still decodes) and is refused by the state machine.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BmcDriver {
    #[default]
    Ipmi,
    Ipmi15,
    Sim,
    #[serde(other)]
    #[schemars(skip)]
    Unsupported,
}

/// The machine tag that allows IPMI 1.5 "straight password" authentication (the password in
/// clear on the wire) for its BMC, when the BMC offers nothing better. Without it rackd never
/// sends a BMC password in clear.
pub const TAG_IPMI15_CLEARTEXT: &str = "ipmi15-cleartext-password";

impl BmcDriver {
    /// The drivers a machine may be given.
    pub const SUPPORTED: [BmcDriver; 3] = [BmcDriver::Ipmi, BmcDriver::Ipmi15, BmcDriver::Sim];

    pub fn as_str(self) -> &'static str {
        match self {
            BmcDriver::Ipmi => "ipmi",
            BmcDriver::Ipmi15 => "ipmi15",
            BmcDriver::Sim => "sim",
            BmcDriver::Unsupported => "unsupported",
        }
    }

    /// Drivers that speak IPMI over the network (the IPMI proxy relays these).
    pub fn is_ipmi(self) -> bool {
        matches!(self, BmcDriver::Ipmi | BmcDriver::Ipmi15)
    }
}

impl std::fmt::Display for BmcDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse the JSON name (`"cycle"`), for the CLI and query strings: one spelling everywhere.
macro_rules! from_name {
    ($($t:ty),*) => {$(
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::String(s.to_string()))
                    .map_err(|e| e.to_string())
            }
        }
    )*};
}
from_name!(PowerState, PowerAction, BootDevice);

impl std::str::FromStr for BmcDriver {
    type Err = String;
    /// Unlike decoding, parsing refuses names this build does not support.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::SUPPORTED
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown BMC driver {s:?} (ipmi, ipmi15, sim)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_as_its_name() {
        for p in [PowerState::On, PowerState::Off, PowerState::Unknown] {
            let j = serde_json::to_string(&p).unwrap();
            assert_eq!(j, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<PowerState>(&j).unwrap(), p);
        }
        for a in PowerAction::ALL {
            let j = serde_json::to_string(&a).unwrap();
            assert_eq!(j, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<PowerAction>(&j).unwrap(), a);
        }
        for d in BmcDriver::SUPPORTED {
            let j = serde_json::to_string(&d).unwrap();
            assert_eq!(j, format!("\"{}\"", d.as_str()));
            assert_eq!(serde_json::from_str::<BmcDriver>(&j).unwrap(), d);
        }
    }

    #[test]
    fn every_power_action_and_boot_device_has_exactly_one_task_kind() {
        use crate::entity::{TaskKind, TaskWork};
        let mut works = Vec::new();
        for a in PowerAction::ALL {
            works.push(TaskWork::Power(a));
        }
        for device in [BootDevice::Pxe, BootDevice::Disk] {
            for persistent in [false, true] {
                works.push(TaskWork::Boot { device, persistent });
            }
        }
        let commands: Vec<TaskKind> = TaskKind::ALL
            .into_iter()
            .filter(|k| !k.is_workflow())
            .collect();
        assert_eq!(works.len(), commands.len());
        for w in works {
            assert_eq!(TaskKind::for_work(w).work(), Some(w));
        }
        for k in commands {
            assert_eq!(TaskKind::for_work(k.work().unwrap()), k);
        }
    }

    #[test]
    fn unknown_words_are_refused_or_marked_unsupported() {
        assert!(serde_json::from_str::<PowerState>("\"standby\"").is_err());
        assert!(serde_json::from_str::<PowerAction>("\"explode\"").is_err());
        assert_eq!(
            serde_json::from_str::<BmcDriver>("\"redfish\"").unwrap(),
            BmcDriver::Unsupported
        );
    }
}
