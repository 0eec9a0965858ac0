//! The write requests that become Raft log entries, declared once and generated twice.
//!
//! The API form (this module, re-exported as `rackd_types::CreateLocation` …) refuses unknown
//! fields, so a misspelt field in a request is a 400 instead of a silently ignored change.
//! The log form in [`payload`] (what `rackd_raft::cmd::Command` carries) accepts them: an
//! entry written by a newer node with a field this build does not know still decodes during
//! a rolling upgrade, and the state machine never stops on an entry it cannot read. Both forms
//! have the same fields and the same JSON; `From` turns an API request into its payload.
//!
//! Layer: plain data; depends on `entity` and `api` (for `double_option`) only.

use serde::{Deserialize, Serialize};

use crate::api::double_option;
use crate::entity::{BmcSpec, IpRange, MachineState};
use crate::webhook::SecretText;

fn default_true() -> bool {
    true
}

fn default_rack_height() -> u32 {
    42
}

/// Declares each request twice (strict here, lenient in [`payload`]) plus the conversion.
macro_rules! write_requests {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[serde(deny_unknown_fields)]
            pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }

            impl From<$name> for payload::$name {
                fn from(r: $name) -> Self {
                    payload::$name { $( $field: r.$field ),* }
                }
            }
        )*

        /// The log forms of the write requests: same fields, unknown fields ignored.
        pub mod payload {
            use super::*;
            $(
                $(#[$meta])*
                pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }
            )*
        }
    };
}

write_requests! {
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateLocation {
        pub name: String,
        #[serde(default)]
        pub description: String,
        /// Hand out dynamic addresses to unknown machines and record them (default off).
        #[serde(default)]
        pub discovery: bool,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateLocation {
        pub description: Option<String>,
        pub discovery: Option<bool>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateRack {
        pub location: String,
        pub name: String,
        #[serde(default = "default_rack_height")]
        pub height_units: u32,
    }


    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateRack {
        pub name: Option<String>,
        pub height_units: Option<u32>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateMachine {
        pub hostname: String,
        pub location: String,
        #[serde(default)]
        pub rack_id: Option<u64>,
        #[serde(default)]
        pub rack_unit: Option<u32>,
        #[serde(default)]
        pub macs: Vec<String>,
        #[serde(default)]
        pub ips: Vec<String>,
        #[serde(default)]
        pub bmc: Option<BmcSpec>,
        #[serde(default)]
        pub state: Option<MachineState>,
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub tags: Vec<String>,
    }

    /// `PATCH /v1/machines/{id}`. `rack_id`/`rack_unit`/`bmc` use `Some(None)` to clear.
    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateMachine {
        pub hostname: Option<String>,
        pub location: Option<String>,
        #[serde(
            default,
            with = "double_option",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<u64>")]
        pub rack_id: Option<Option<u64>>,
        #[serde(
            default,
            with = "double_option",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<u32>")]
        pub rack_unit: Option<Option<u32>>,
        pub macs: Option<Vec<String>>,
        pub ips: Option<Vec<String>>,
        #[serde(
            default,
            with = "double_option",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<BmcSpec>")]
        pub bmc: Option<Option<BmcSpec>>,
        pub state: Option<MachineState>,
        pub state_cause: Option<String>,
        pub description: Option<String>,
        pub tags: Option<Vec<String>>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateImage {
        pub name: String,
        /// A relative path under the location nodes' artifacts directory, or the digest
        /// (`sha256:<hex>`) of a stored blob.
        pub kernel: String,
        /// Like `kernel`.
        pub initrd: String,
        #[serde(default)]
        pub cmdline: String,
        /// The root filesystem's blob (`sha256:<hex>`), for installers that fetch one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rootfs: Option<String>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateImage {
        pub kernel: Option<String>,
        pub initrd: Option<String>,
        pub cmdline: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rootfs: Option<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateSubnet {
        pub location: String,
        pub cidr: String,
        #[serde(default)]
        pub gateway: Option<String>,
        #[serde(default)]
        pub dns: Vec<String>,
        #[serde(default)]
        pub dynamic_ranges: Vec<IpRange>,
        #[serde(default)]
        pub reserved_ranges: Vec<IpRange>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateSubnet {
        #[serde(
            default,
            with = "double_option",
            skip_serializing_if = "Option::is_none"
        )]
        #[schemars(with = "Option<String>")]
        pub gateway: Option<Option<String>>,
        pub dns: Option<Vec<String>>,
        pub dynamic_ranges: Option<Vec<IpRange>>,
        pub reserved_ranges: Option<Vec<IpRange>>,
    }

    /// `POST /v1/webhooks`. In the log, `secret` is sealed for the voters (the leader signs).
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct CreateWebhook {
        /// Unique: 1..=64 of `[A-Za-z0-9-._]`.
        pub name: String,
        /// `http://` or `https://` URL events are `POST`ed to.
        pub url: String,
        /// Event kinds (`task.finished`) or families (`machine`); empty or absent: every event.
        #[serde(default)]
        pub kinds: Vec<String>,
        /// The HMAC-SHA256 signing key (16..=256 bytes; write-only); absent: rackd generates
        /// one and answers it once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub secret: Option<SecretText>,
        /// Default true.
        #[serde(default = "default_true")]
        pub enabled: bool,
    }

    /// `PATCH /v1/webhooks/{id}`: the fields given change.
    #[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct UpdateWebhook {
        pub url: Option<String>,
        pub kinds: Option<Vec<String>>,
        /// A new signing key (write-only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub secret: Option<SecretText>,
        pub enabled: Option<bool>,
    }
}
